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
