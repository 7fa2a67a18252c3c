"""Tests for deepsim_cli.losses: each term against its closed form, presets, the composer."""

from __future__ import annotations

import math

import pytest
import torch

from deepsim_cli.losses import (
    DEFAULT_WEIGHTS,
    LOSS_PRESETS,
    LossWeights,
    adv_loss,
    discr_loss,
    feat_loss,
    generator_loss,
    img_loss,
    kl_loss,
)


def _r(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.mark.parametrize("fn, shape", [(feat_loss, (4, 16, 6, 6)), (feat_loss, (4, 4096)), (img_loss, (4, 3, 8, 8))])
def test_squared_terms_zero_for_identical_one_for_zeros(fn, shape):
    real = _r(*shape)
    assert float(fn(real.clone(), real)) == 0.0
    assert float(fn(torch.zeros_like(real), real)) == pytest.approx(1.0, rel=1e-6)
    # scale-free: both scaled by 10 give the same value
    fake = _r(*shape, seed=1)
    assert float(fn(10 * fake, 10 * real)) == pytest.approx(float(fn(fake, real)), rel=1e-5)
    # by hand
    want = ((fake - real) ** 2).mean() / (real ** 2).mean()
    assert float(fn(fake, real)) == pytest.approx(float(want), rel=1e-5)


def test_squared_terms_gradients_go_to_fake_only():
    real = _r(2, 3, 4, 4).requires_grad_(True)
    fake = _r(2, 3, 4, 4, seed=1).requires_grad_(True)
    img_loss(fake, real).backward()
    assert fake.grad.abs().sum() > 0
    # the normaliser is detached; the only path to `real` is through (fake − real)
    torch.testing.assert_close(real.grad, -fake.grad)


def test_all_zero_real_is_finite():
    z = torch.zeros(2, 3, 4, 4)
    assert torch.isfinite(img_loss(z + 0.1, z))
    assert torch.isfinite(feat_loss(z, z)) and float(feat_loss(z, z)) == 0.0


def test_adv_and_discr_closed_forms():
    d_fake = torch.tensor([-2.0, 0.0, 3.0])
    d_real = torch.tensor([1.0, -1.0, 4.0])
    want_adv = sum(_softplus(-v) for v in d_fake.tolist()) / 3  # −log σ(d)
    assert float(adv_loss(d_fake)) == pytest.approx(want_adv, rel=1e-6)
    want_d = (sum(_softplus(-v) for v in d_real.tolist()) / 3
              + sum(_softplus(v) for v in d_fake.tolist()) / 3)  # −log σ(r) − log(1 − σ(f))
    assert float(discr_loss(d_real, d_fake)) == pytest.approx(want_d, rel=1e-6)
    # at logit 0 (D undecided) both sides cost log 2
    assert float(adv_loss(torch.zeros(5))) == pytest.approx(math.log(2))
    assert float(discr_loss(torch.zeros(5), torch.zeros(5))) == pytest.approx(2 * math.log(2))
    # equal to binary cross-entropy on probabilities
    s = torch.sigmoid
    bce = -(torch.log(s(d_real)).mean() + torch.log(1 - s(d_fake)).mean())
    assert float(discr_loss(d_real, d_fake)) == pytest.approx(float(bce), rel=1e-5)


def test_adv_loss_is_stable_for_large_logits():
    v = adv_loss(torch.tensor([-200.0, 200.0]))
    assert torch.isfinite(v) and float(v) == pytest.approx(100.0, rel=1e-6)
    assert torch.isfinite(discr_loss(torch.tensor([-300.0]), torch.tensor([300.0])))


def test_kl_closed_form():
    mu = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]])
    logvar = torch.tensor([[0.0, -1.0, 0.7], [1.2, -0.2, 0.0]])
    # KL(N(m, s²) || N(0, 1)) = log(1/s) + (s² + m²)/2 − 1/2 per unit; summed, batch-averaged
    rows = []
    for m_row, lv_row in zip(mu.tolist(), logvar.tolist()):
        total = 0.0
        for m, lv in zip(m_row, lv_row):
            s = math.exp(0.5 * lv)
            total += math.log(1 / s) + (s * s + m * m) / 2 - 0.5
        rows.append(total)
    assert float(kl_loss(mu, logvar)) == pytest.approx(sum(rows) / 2, rel=1e-6)
    assert float(kl_loss(torch.zeros(4, 8), torch.zeros(4, 8))) == 0.0
    assert float(kl_loss(mu, logvar)) > 0


def test_kl_matches_torch_distributions():
    mu, logvar = _r(5, 7), _r(5, 7, seed=1)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    want = torch.distributions.kl_divergence(q, p).sum(1).mean()
    torch.testing.assert_close(kl_loss(mu, logvar), want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("preset", list(LOSS_PRESETS))
def test_select_zeros_the_right_terms(preset):
    w = LossWeights(feat=0.7, adv=0.03, img=0.2).select(preset)
    on = set(LOSS_PRESETS[preset])
    assert (w.feat != 0) == ("feat" in on)
    assert (w.adv != 0) == ("adv" in on)
    assert (w.img != 0) == ("img" in on)
    if "feat" in on:
        assert w.feat == 0.7
    if "adv" in on:
        assert w.adv == 0.03
    if "img" in on:
        # without the feature loss the image loss carries the reconstruction: unit weight
        assert w.img == (0.2 if "feat" in on else 1.0)


def test_select_expected_table():
    w = DEFAULT_WEIGHTS
    assert w.select("full") == w
    assert w.select("img") == LossWeights(0.0, 0.0, 1.0)
    assert w.select("img+adv") == LossWeights(0.0, w.adv, 1.0)
    assert w.select("img+feat") == LossWeights(w.feat, 0.0, w.img)
    assert w.select("feat+adv") == LossWeights(w.feat, w.adv, 0.0)
    with pytest.raises(ValueError, match="unknown loss preset"):
        w.select("perceptual")


# ---------------------------------------------------------------------------------- composer


def test_generator_loss_parts_match_terms():
    fake, real = _r(2, 3, 8, 8), _r(2, 3, 8, 8, seed=1)
    c_fake, c_real = _r(2, 10, seed=2), _r(2, 10, seed=3)
    d_fake = _r(2, seed=4)
    w = LossWeights(feat=0.5, adv=0.1, img=0.25)
    total, parts = generator_loss(w, fake=fake, real=real, c_fake=c_fake, c_real=c_real, d_fake=d_fake)
    assert set(parts) == {"feat", "adv", "img"}
    assert parts["feat"] == pytest.approx(float(feat_loss(c_fake, c_real)), rel=1e-6)
    assert parts["adv"] == pytest.approx(float(adv_loss(d_fake)), rel=1e-6)
    assert parts["img"] == pytest.approx(float(img_loss(fake, real)), rel=1e-6)
    want = 0.5 * parts["feat"] + 0.1 * parts["adv"] + 0.25 * parts["img"]
    assert float(total) == pytest.approx(want, rel=1e-5)
    assert all(isinstance(v, float) for v in parts.values())


def test_generator_loss_skips_zero_weight_terms():
    fake, real = _r(2, 3, 8, 8).requires_grad_(True), _r(2, 3, 8, 8, seed=1)
    # feat and adv are off, so their inputs may be absent
    total, parts = generator_loss(LossWeights(0.0, 0.0, 1.0), fake=fake, real=real)
    assert set(parts) == {"img"}
    assert float(total.detach()) == pytest.approx(parts["img"], rel=1e-6)
    total.backward()
    assert fake.grad.abs().sum() > 0
    total, parts = generator_loss(LossWeights(1.0, 0.0, 0.0), fake=fake, real=real,
                                  c_fake=_r(2, 5), c_real=_r(2, 5, seed=9))
    assert set(parts) == {"feat"}
    total, parts = generator_loss(LossWeights(0.0, 0.0, 0.0), fake=fake, real=real)
    assert parts == {} and float(total) == 0.0
    with pytest.raises(AssertionError):  # a weighted term without its input is a bug, not a zero
        generator_loss(LossWeights(0.0, 1.0, 0.0), fake=fake, real=real)


def test_generator_loss_gradient_reaches_fake_through_every_term():
    fake = _r(2, 3, 8, 8).requires_grad_(True)
    real = _r(2, 3, 8, 8, seed=1)
    w_proj = _r(3 * 8 * 8, 6, seed=2)
    c_fake = fake.flatten(1) @ w_proj
    c_real = real.flatten(1) @ w_proj
    d_fake = fake.flatten(1).sum(1)
    for w in (LossWeights(1, 0, 0), LossWeights(0, 1, 0), LossWeights(0, 0, 1)):
        fake.grad = None
        total, _ = generator_loss(w, fake=fake, real=real, c_fake=c_fake, c_real=c_real, d_fake=d_fake)
        total.backward(retain_graph=True)
        assert fake.grad is not None and fake.grad.abs().sum() > 0, w
