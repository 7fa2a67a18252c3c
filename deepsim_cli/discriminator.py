"""The DeePSiM discriminator: 5 convs with occasional stride, global average pooling, dropout,
two fc layers, one real/fake logit (a 2-way softmax with cross-entropy is the same thing).
Optionally conditioned on the features y the image should match (the paper feeds y to D)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class DiscriminatorConfig:
    """D's size: channel `width` multiplier; y (`cond_dim` values, 0: unconditional) enters through two fc layers of `cond_hidden` units."""
    width: float = 1.0
    cond_dim: int = 0  # flattened size of y; 0 = unconditional
    cond_hidden: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


class Discriminator(nn.Module):
    """(B, 3, H, W) images [+ features y] → (B,) logits of 'real'."""

    def __init__(self, cfg: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.cfg = cfg
        c = [max(8, int(round(k * cfg.width))) for k in (32, 64, 128, 256, 256)]
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(3, c[0], 7, stride=4, padding=3), act(),
            nn.Conv2d(c[0], c[1], 5, stride=1, padding=2), act(),
            nn.Conv2d(c[1], c[2], 3, stride=2, padding=1), act(),
            nn.Conv2d(c[2], c[3], 3, stride=1, padding=1), act(),
            nn.Conv2d(c[3], c[4], 3, stride=2, padding=1), act(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        feat = c[4]
        if cfg.cond_dim:
            self.cond = nn.Sequential(nn.Linear(cfg.cond_dim, cfg.cond_hidden), act(),
                                      nn.Linear(cfg.cond_hidden, cfg.cond_hidden), act())
            feat += cfg.cond_hidden
        else:
            self.cond = None
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(feat, 512), act(), nn.Dropout(0.5),
                                  nn.Linear(512, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, 3, S, S) in [-1, 1] (and, when conditional, the features y (B, *feature shape))
        → (B,) logits: > 0 says "real"."""
        h = self.features(x)
        if self.cond is not None:
            assert y is not None, "conditional discriminator needs y"
            h = torch.cat([h, self.cond(y.flatten(1))], dim=1)
        return self.head(h).squeeze(1)


def random_shift(x: torch.Tensor, n: int) -> torch.Tensor:
    """x (B, C, H, W) with each image translated by its own random (dy, dx) in -n..n pixels, the
    border filled by reflection (DiffAugment's translation; differentiable). The shifts come from
    torch's global CPU generator, so a run that seeds it per step stays reproducible. n = 0: x."""
    if n <= 0:
        return x
    b, _, h, w = x.shape
    d = torch.randint(-n, n + 1, (2, b)).to(x.device)
    padded = F.pad(x, (n, n, n, n), mode="reflect")
    rows = torch.arange(h, device=x.device)[None, :] + n + d[0][:, None]  # (B, H)
    cols = torch.arange(w, device=x.device)[None, :] + n + d[1][:, None]  # (B, W)
    out = padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows[:, :, None],
                                     cols[:, None, :]]
    return out.permute(0, 3, 1, 2)
