"""Tests for deepsim_cli.metrics (hand-computed examples) and optimization-based inversion."""

from __future__ import annotations

import math

import pytest
import torch

from deepsim_cli.encoders import build_encoder
from deepsim_cli.inference import optimize_invert, total_variation
from deepsim_cli.encoders import encode_batched
from deepsim_cli.metrics import mean_metrics, mean_pairwise_distance, normalized_error, psnr, ssim


def _img(n=2, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------- normalized error


def test_normalized_error_identical_is_zero():
    x = _img(3)
    assert torch.equal(normalized_error(x, x.clone()), torch.zeros(3))


def test_normalized_error_by_hand():
    # three 2-d "images": pairwise distances |(0,0)-(3,4)| = 5, |(0,0)-(6,8)| = 10, |(3,4)-(6,8)| = 5
    target = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert mean_pairwise_distance(target) == pytest.approx((5 + 10 + 5) / 3)
    recon = target + torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, -2.0]])
    err = normalized_error(recon, target)
    scale = 20 / 3
    torch.testing.assert_close(err, torch.tensor([100 * 1 / scale, 0.0, 100 * 2 / scale]))
    # an explicit scale is used as given
    torch.testing.assert_close(normalized_error(recon, target, scale=2.0), torch.tensor([50.0, 0.0, 100.0]))


def test_normalized_error_of_a_shuffle_is_about_100_percent():
    # reconstructing each image by another random image of the set costs ~ the mean pairwise distance
    t = _img(16, 8)
    err = normalized_error(t.roll(1, 0), t)
    assert 90 < float(err.mean()) < 110


def test_normalized_error_checks_shapes():
    with pytest.raises(AssertionError):
        normalized_error(_img(2, 8), _img(2, 16))
    with pytest.raises(ValueError):
        mean_pairwise_distance(_img(1))


# ---------------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_identical_is_large_and_finite():
    x = _img()
    p = psnr(x, x)
    assert torch.isfinite(p).all() and (p > 100).all()


def test_psnr_known_mse():
    t = torch.zeros(1, 3, 8, 8)
    r = torch.full_like(t, 0.2)  # MSE 0.04, peak-to-peak 2 → 10 log10(4 / 0.04) = 20 dB
    assert float(psnr(r, t)) == pytest.approx(20.0, abs=1e-4)
    r = t.clone()
    r[..., ::2, :] = 0.4  # half the pixels off by 0.4 → MSE 0.08
    assert float(psnr(r, t)) == pytest.approx(10 * math.log10(4 / 0.08), abs=1e-4)
    # per image
    both = psnr(torch.cat([torch.full_like(t, 0.2), torch.full_like(t, 0.02)]), torch.cat([t, t]))
    torch.testing.assert_close(both, torch.tensor([20.0, 40.0]))


def test_psnr_clamps_reconstruction_to_range():
    t = torch.ones(1, 3, 8, 8)
    assert torch.equal(psnr(torch.full_like(t, 5.0), t), psnr(t, t))


def test_ssim_identical_is_one_and_drops_with_noise():
    x = _img(2, 32)
    torch.testing.assert_close(ssim(x, x), torch.ones(2), atol=1e-5, rtol=0)
    noisy = (x + 0.3 * _img(2, 32, seed=1)).clamp(-1, 1)
    s = ssim(noisy, x)
    assert (s < 0.99).all() and (s > -1).all()
    assert (ssim((x + 0.6 * _img(2, 32, seed=1)).clamp(-1, 1), x) < s).all()


def test_ssim_constant_images():
    a = torch.zeros(1, 3, 16, 16)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    # contrast 0 on both sides, different means: only the luminance term (2μxμy + c1)/(μx²+μy²+c1)
    b = torch.full_like(a, 1.0)  # intensity 1.0 vs 0.5 in [0, 1]
    c1 = 0.01 ** 2
    want = (2 * 0.5 * 1.0 + c1) / (0.25 + 1.0 + c1)
    assert float(ssim(b, a)) == pytest.approx(want, rel=1e-4)


# ---------------------------------------------------------------------------------- optimization inversion


def test_total_variation():
    assert float(total_variation(torch.zeros(1, 3, 8, 8))) == 0.0
    x = torch.zeros(1, 1, 4, 4)
    x[..., :, 2:] = 1.0  # one vertical edge
    assert float(total_variation(x)) > 0


def test_encode_batched_matches_one_pass_and_mean_metrics_rows():
    enc = build_encoder("alexnet-random")
    x = _img(5, 32, seed=4)
    with torch.no_grad():
        whole = enc(x, ["conv3"])["conv3"]
    f = encode_batched(enc, x, "conv3", batch=2, precision="fp32")  # 2 + 2 + 1
    assert f.device.type == "cpu" and f.dtype == torch.float32
    assert torch.allclose(f, whole, atol=1e-5)
    m = mean_metrics(x, x, enc, "conv3")
    assert set(m) == {"img_err", "feat_err", "psnr", "ssim"} and all(isinstance(v, float) for v in m.values())
    assert m["img_err"] == 0 and m["feat_err"] == 0 and m["ssim"] > 0.999
    noisy = mean_metrics((x + 0.3 * _img(5, 32, seed=5)).clamp(-1, 1), x, enc, "conv3")
    assert noisy["img_err"] > 1 and noisy["feat_err"] > 1 and noisy["psnr"] < m["psnr"]


def test_encode_batched_takes_uint8_nhwc_array_and_tensor():
    from deepsim_cli.data import to_float
    enc = build_encoder("alexnet-random")
    u8 = torch.randint(0, 256, (5, 32, 32, 3), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    with torch.no_grad():
        whole = enc(to_float(u8), ["conv3"])["conv3"]
        f_arr = encode_batched(enc, u8.numpy(), "conv3", batch=2, precision="fp32")
        f_t = encode_batched(enc, u8, "conv3", batch=3, precision="fp32")
    assert f_arr.shape == whole.shape and f_arr.dtype == torch.float32
    assert torch.allclose(f_arr, whole, atol=1e-5) and torch.allclose(f_t, whole, atol=1e-5)


def test_optimize_invert_reduces_feature_loss():
    enc = build_encoder("alexnet-random")
    target_img = _img(1, 32, seed=3)
    with torch.no_grad():
        target = enc(target_img, ["conv2"])["conv2"]
    g = torch.Generator().manual_seed(0)
    init = torch.randn(1, 3, 32, 32, generator=g) * 0.1

    def feat_err(img):
        with torch.no_grad():
            f = enc(img, ["conv2"])["conv2"]
        return float((f - target).pow(2).mean() / target.pow(2).mean())

    before = feat_err(init.clamp(-1, 1))
    losses = []
    out = optimize_invert(target, enc, "conv2", size=32, steps=10, lr=0.05, tv_weight=0.0, init=init,
                          on_step=lambda i, v: losses.append(v))
    after = feat_err(out)
    assert out.shape == (1, 3, 32, 32) and out.min() >= -1 and out.max() <= 1
    assert len(losses) == 10
    # measured: 0.62 → 0.29 in 10 steps
    assert after < 0.75 * before, (before, after)
    assert losses[-1] < losses[0]
    # deterministic for a seed
    again = optimize_invert(target, enc, "conv2", size=32, steps=10, lr=0.05, tv_weight=0.0, init=init)
    assert torch.equal(out, again)


def test_lpips_alex_zero_on_identity_and_grows_with_noise():
    from pathlib import Path

    from deepsim_cli.images import load_image
    from deepsim_cli.metrics import LPIPSAlex

    m = LPIPSAlex()
    x = load_image(Path(__file__).resolve().parent.parent / "examples" / "images" / "chelsea.jpg", 64)[None]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    d = [float(m(x, (x + s * noise).clamp(-1, 1))[0]) for s in (0.0, 0.05, 0.2, 0.5)]
    assert d[0] == 0.0
    assert d[1] < d[2] < d[3], d


def test_recognition_and_spread_catch_a_collapsed_reconstruction():
    from deepsim_cli.evaluation import downsample_32, judge_features, recognition, spread
    judge = build_encoder("alexnet-random")
    x = _img(6, 64, seed=8)
    jx = judge_features(judge, x, precision="fp32")
    assert recognition(jx, jx) == 1.0 and spread(jx, jx) == pytest.approx(1.0)
    collapsed = judge_features(judge, x[:1].expand_as(x), precision="fp32")  # one template for all
    assert spread(collapsed, jx) == pytest.approx(0.0, abs=1e-4)
    # recognition: the original's top-1 class among the reconstruction's top-5
    from deepsim_cli.evaluation import JudgeFeatures
    orig = JudgeFeatures(torch.eye(10)[:4] * 5, torch.zeros(4, 2))       # classes 0, 1, 2, 3
    rec = JudgeFeatures(torch.arange(10.0).flip(0).repeat(4, 1), torch.zeros(4, 2))  # top-5: 0..4
    assert recognition(rec, orig) == 1.0 and recognition(rec, orig, k=2) == 0.5
    thumb = downsample_32(x)
    assert thumb.shape == x.shape and 0.0 < spread(judge_features(judge, thumb, precision="fp32"), jx)


def _photos(size: int = 64) -> torch.Tensor:
    from pathlib import Path

    from deepsim_cli.images import load_images
    return load_images(Path(__file__).resolve().parent.parent / "examples" / "images", size)


def test_periodic_peak_finds_stripes_and_checkerboards_that_photos_lack():
    from deepsim_cli.metrics import periodic_peak
    x = _photos()
    clean, _ = periodic_peak(x)
    assert clean < 6, clean
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    stripes = 0.1 * torch.cos(2 * math.pi * yy / 4)   # horizontal lines 4 px apart
    checker = 0.1 * (-1.0) ** (yy + xx)               # a pixel checkerboard
    diagonal = 0.1 * torch.cos(2 * math.pi * (yy - xx) / 8)
    for pattern, at in ((stripes, (0.25, 0.0)), (checker, (0.5, 0.5)), (diagonal, (0.125, -0.125))):
        peak, where = periodic_peak(x + pattern)
        assert peak > 5 * clean and where == at, (peak, where, at)
    # fainter stripes, or stripes in a quarter of the set, make a lower peak
    assert clean < periodic_peak(x + stripes / 5)[0] < periodic_peak(x + stripes)[0]
    mixed = torch.cat([x + stripes * (i == 0) for i in range(4)])
    assert periodic_peak(mixed)[0] < periodic_peak(x + stripes)[0] / 2
    with pytest.raises(ValueError, match="square"):
        periodic_peak(x[..., :32])
