"""Our SSIM and PSNR against scikit-image's reference implementations (the published
definitions: Wang et al. 2004 with an 11x11 Gaussian window, sigma 1.5, population covariance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepsim_cli.metrics import psnr, ssim

skm = pytest.importorskip("skimage.metrics")


def _pairs():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 40, 48, generator=g) * 2 - 1
    smooth = torch.nn.functional.avg_pool2d(x, 5, 1, 2)        # photo-like: correlated neighbours
    noisy = (smooth + 0.2 * torch.randn(smooth.shape, generator=g)).clamp(-1, 1)
    return [(smooth, noisy), (x, smooth), (smooth, smooth.flip(-1))]


@pytest.mark.parametrize("k", range(3))
def test_ssim_matches_scikit_image(k):
    a, b = _pairs()[k]
    ours = ssim(b, a)
    for i in range(len(a)):
        ref = skm.structural_similarity(
            ((a[i] + 1) / 2).permute(1, 2, 0).double().numpy(), ((b[i] + 1) / 2).permute(1, 2, 0).double().numpy(),
            channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(ours[i]) == pytest.approx(ref, abs=2e-4), (k, i)


@pytest.mark.parametrize("k", range(3))
def test_psnr_matches_scikit_image(k):
    a, b = _pairs()[k]
    ours = psnr(b, a)
    for i in range(len(a)):
        ref = skm.peak_signal_noise_ratio(a[i].double().numpy(), b[i].double().numpy(), data_range=2.0)
        if np.isinf(ref):
            continue
        assert float(ours[i]) == pytest.approx(ref, abs=1e-3), (k, i)


# ------------------------------------------------------------------------------ LPIPS-alex
# torchmetrics ships the `lpips` package's network (LPIPS v0.1) and its linear weights
# (lpips_models/alex.pth, the same file as lpips' weights/v0.1/alex.pth). Its AlexNet backbone
# would come from a download, so it is built untrained and given the shipped conv weights.

def _reference_lpips():
    tm = pytest.importorskip("torchmetrics.functional.image.lpips")
    from deepsim_cli.checkpoint import load_checkpoint
    from deepsim_cli.weights_store import resolve

    ref = tm._LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()
    conv = load_checkpoint(resolve("alexnet-conv.safetensors")).tensors
    slices = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}   # torchvision features index -> LPIPS slice
    state = {f"net.slice{s}.{i}.{p}": conv[f"features.{i}.{p}"].float()
             for i, s in slices.items() for p in ("weight", "bias")}
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith("net.")]
    return ref


def test_lpips_linear_weights_are_the_lpips_packages():
    from deepsim_cli.checkpoint import load_checkpoint
    from deepsim_cli.weights_store import resolve

    ref = _reference_lpips()
    ours = load_checkpoint(resolve("lpips-alex-lin.safetensors")).tensors
    for i in range(5):
        assert torch.equal(ours[f"lin{i}.model.1.weight"].float(), ref.lins[i].model[1].weight), i


@pytest.mark.parametrize("size", [64, 97])
def test_lpips_alex_matches_the_reference_network(size):
    from deepsim_cli.metrics import LPIPSAlex

    ref = _reference_lpips()
    g = torch.Generator().manual_seed(size)
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 3, size, size, generator=g) * 2 - 1, 5, 1, 2)
    y = torch.stack([x[0] + 0.1 * torch.randn(x[0].shape, generator=g), x[1].flip(-1),
                     x[3], torch.rand(3, size, size, generator=g) * 2 - 1]).clamp(-1, 1)
    ours = LPIPSAlex(precision="fp32")(x, y)
    with torch.no_grad():
        want = ref(x, y).flatten()
    assert ours.shape == want.shape == (4,)
    assert torch.allclose(ours, want, rtol=1e-4, atol=1e-6), (ours, want)
    assert len(set(want.round(decimals=3).tolist())) == 4   # four different distances, not a constant
