"""DeePSiM loss terms and their composer.

Scaling. The paper's weights (λ_feat 0.01, λ_adv 100, λ_img 2e-6) multiply *sums* over Caffe
AlexNet features of 0–255 BGR images and over 0–255 pixels; copied onto means over [-1, 1]
images and torchvision features they are meaningless. Here both squared-error terms are
made dimensionless by dividing by the mean squared magnitude of the *real* batch's values
(detached), so 1.0 means "as wrong as predicting zeros" whatever the comparator or resolution:

    L_feat = mean((C(G(y)) − C(x))²) / mean(C(x)²)
    L_img  = mean((G(y) − x)²)        / mean(x²)
    L_adv  = −log σ(D(G(y)))             (per image, averaged)

DEFAULT_WEIGHTS transfer the paper's balance onto these terms: benchmarks/loss_balance.py
measures, on blurred real images, the ratio of the image-term to the feature-term gradient on
G's output under the paper's λ (λ_img/λ_feat) and the ratio of the adversarial to the feature
loss value (λ_adv/λ_feat), with torchvision's AlexNet standing in for Caffe's. Caffe's feature
scale is bracketed by two assumptions that differ by 57² (see the script): λ_img/λ_feat from
0.003 (A) to 1.93 (B), λ_adv/λ_feat from 0.0007 to 0.41, geometric middle 0.078 and 0.017.
λ_adv = 0.02 is the middle; λ_img = 2.0 is the (B) end, chosen by measurement: in a short
pool5 run (benchmarks/RESULTS.md) it beat λ_img = 0.08 on both image and feature error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .loss_weights import DEFAULT_WEIGHTS, LOSS_PRESETS, LossWeights  # noqa: F401  (re-exported)


def _energy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().pow(2).mean().clamp_min(1e-8)


def feat_loss(c_fake: torch.Tensor, c_real: torch.Tensor) -> torch.Tensor:
    """Normalised squared error between comparator features (see module docstring)."""
    return (c_fake.float() - c_real.float()).pow(2).mean() / _energy(c_real)


def img_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Normalised squared error in image space; images (B, 3, H, W) in [-1, 1]."""
    return (fake.float() - real.float()).pow(2).mean() / _energy(real)


def adv_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial loss −log D(G(y)), from D's logits."""
    return F.softplus(-d_fake.float()).mean()


def discr_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss −log D(x) − log(1 − D(G(y))), from logits."""
    return F.softplus(-d_real.float()).mean() + F.softplus(d_fake.float()).mean()


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, I)) summed over latent units, averaged over the batch."""
    return 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).sum(1).mean()


def generator_loss(
    weights: LossWeights,
    *,
    fake: torch.Tensor,
    real: torch.Tensor,
    c_fake: torch.Tensor | None = None,
    c_real: torch.Tensor | None = None,
    d_fake: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Compose λ_feat·L_feat + λ_adv·L_adv + λ_img·L_img; terms with zero weight are skipped.

    Returns:
        (total, {"feat": …, "adv": …, "img": …}) with the unweighted term values as floats.
    """
    total = fake.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    if weights.feat:
        assert c_fake is not None and c_real is not None
        v = feat_loss(c_fake, c_real)
        total = total + weights.feat * v
        parts["feat"] = float(v.detach())
    if weights.adv:
        assert d_fake is not None
        v = adv_loss(d_fake)
        total = total + weights.adv * v
        parts["adv"] = float(v.detach())
    if weights.img:
        v = img_loss(fake, real)
        total = total + weights.img * v
        parts["img"] = float(v.detach())
    return total, parts
