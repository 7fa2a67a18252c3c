"""Reconstruction metrics: the paper's normalized Euclidean error (Table 2), PSNR, SSIM and
LPIPS-alex. Images are (B, 3, H, W) in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean Euclidean distance between all pairs of different samples (rows flattened)."""
    f = x.flatten(1).double()
    n = f.shape[0]
    if n < 2:
        raise ValueError("need at least two samples for the normalisation")
    d = torch.cdist(f, f)
    return float(d.sum() / (n * (n - 1)))


def normalized_error(recon: torch.Tensor, target: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Per-sample ||recon − target|| / mean pairwise distance of `target`, in percent (paper Table 2).

    Args:
        recon, target: (N, ...) tensors of the same shape.
        scale: the normalising distance; computed from `target` when None.
    """
    assert recon.shape == target.shape, f"{tuple(recon.shape)} vs {tuple(target.shape)}"
    scale = scale if scale is not None else mean_pairwise_distance(target)
    err = (recon.flatten(1).double() - target.flatten(1).double()).norm(dim=1)
    return (100.0 * err / scale).float()


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for [-1, 1] images (peak-to-peak 2)."""
    mse = (recon.clamp(-1, 1) - target).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def _gauss(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004; 11×11 Gaussian σ 1.5, on [0, 1] intensities, RGB mean)."""
    x = (recon.clamp(-1, 1) + 1) / 2
    y = (target + 1) / 2
    w = _gauss(device=x.device)
    mu_x = F.conv2d(x, w, groups=3)
    mu_y = F.conv2d(y, w, groups=3)
    sxx = F.conv2d(x * x, w, groups=3) - mu_x ** 2
    syy = F.conv2d(y * y, w, groups=3) - mu_y ** 2
    sxy = F.conv2d(x * y, w, groups=3) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return m.flatten(1).mean(1)
