"""Reconstruction metrics: the paper's normalized Euclidean error (Table 2), PSNR, SSIM and
LPIPS-alex. Images are (B, 3, H, W) in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .encoders import encode_batched


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


class LPIPSAlex(torch.nn.Module):
    """LPIPS v0.1 with AlexNet (Zhang et al. 2018), from the shipped conv weights and lin layers.

    Both images (B, 3, H, W) in [-1, 1] at their own resolution; returns (B,) distances.
    LPIPS's input scaling (shift −.030/−.088/−.188, scale .458/.448/.450) is exactly the
    ImageNet normalisation of the encoder applied to [-1, 1] images, so the encoder's
    preprocessing is reused with resizing disabled.
    """

    TAPS = ("conv1", "conv2", "conv3", "conv4", "conv5")

    def __init__(self, device: torch.device | str = "cpu", precision: str = "auto"):
        super().__init__()
        self.precision = precision  # the conv features; the normalisation and distances in float32
        from .checkpoint import load_checkpoint
        from .encoders import build_encoder
        from .weights_store import resolve

        self.enc = build_encoder("alexnet", None, device)  # conv1-conv5 are the genuine weights either way
        lin = load_checkpoint(resolve("lpips-alex-lin.safetensors")).tensors
        self.lins = [lin[f"lin{i}.model.1.weight"].float().to(device) for i in range(5)]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS-alex distance of two (B, 3, S, S) batches in [-1, 1] → (B,) float32, ≥ 0
        (0 for identical images; about 0.1–0.7 for reconstructions)."""
        from .precision import autocast
        enc = self.enc.with_input_size(x.shape[-1])  # LPIPS runs at the images' own resolution
        with autocast(x.device, self.precision):
            f = enc(torch.cat([x, y]), list(self.TAPS), trained_only=False)
        fx = {k: v[:len(x)].float() for k, v in f.items()}
        fy = {k: v[len(x):].float() for k, v in f.items()}
        d = torch.zeros(x.shape[0], device=x.device)
        for tap, w in zip(self.TAPS, self.lins):
            a = fx[tap] / (fx[tap].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = fy[tap] / (fy[tap].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = d + F.conv2d((a - b).pow(2), w).mean((1, 2, 3))
        return d


@torch.no_grad()
def periodic_peak(x: torch.Tensor, *, min_freq: float = 1 / 16, ring: int = 3) -> tuple[float, tuple[float, float]]:
    """How strongly a set of images carries one periodic pattern (a checkerboard, stripes).

    The grey levels of every image (mean removed, Hann-windowed) give a power spectrum; the
    spectra are averaged over the set, and each frequency of at least `min_freq` cycles/pixel is
    compared with the mean of its 8 neighbours `ring` bins away. Natural photos are smooth there
    (ratio ~2); an artifact every generator output shares is a sharp peak (≫ 10).

    Args:
        x: (N, 3, H, W) images in [-1, 1], N ≥ 1, square.
    Returns:
        (the largest ratio, its frequency (f_y, f_x) in cycles/pixel, f_y in [0, 0.5], f_x in
        [-0.5, 0.5]): (0.25, 0) are horizontal stripes 4 px apart, (0.5, 0.5) a pixel checkerboard;
        f_x < 0 is a diagonal pattern running the other way.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"periodic_peak needs square images, got {tuple(x.shape[-2:])}")
    x = x.detach().cpu().double().clamp(-1, 1)
    g = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    g = g - g.mean((1, 2), keepdim=True)
    size = g.shape[-1]
    w = torch.hann_window(size, periodic=True, dtype=torch.float64)
    power = torch.fft.fft2(g * w[:, None] * w[None, :]).abs().pow(2).mean(0)
    offsets = [(a * ring, b * ring) for a in (-1, 0, 1) for b in (-1, 0, 1) if a or b]
    around = sum(torch.roll(power, o, dims=(0, 1)) for o in offsets) / len(offsets)
    ratio = power / around.clamp_min(1e-30)
    k = torch.arange(size)
    f = torch.where(k <= size // 2, k, k - size).double() / size  # signed frequency of each bin
    ok = (f[:, None] ** 2 + f[None, :] ** 2).sqrt() >= min_freq
    ok &= (k <= size // 2)[:, None]  # power(-f) = power(f): the half-plane f_y ≥ 0 names each pattern
    ratio = torch.where(ok, ratio, torch.zeros_like(ratio))
    i = int(ratio.argmax())
    ky, kx = divmod(i, size)
    return float(ratio.flatten()[i]), (abs(float(f[ky])), float(f[kx]))


@torch.no_grad()
def reconstruction_metrics(recon: torch.Tensor, x: torch.Tensor, encoder, layer: str, *,
                           img_scale: float | None = None, feat_scale: float | None = None,
                           target_feats: torch.Tensor | None = None, lpips: LPIPSAlex | None = None,
                           batch: int = 100, precision: str = "auto") -> dict[str, torch.Tensor]:
    """Per-image metrics of reconstructions `recon` of images `x` (both (N, 3, H, W), [-1, 1]).

    Returns {"img_err", "feat_err" (normalized Euclidean error, % — paper Table 2), "psnr",
    "ssim", and "lpips" when an LPIPSAlex is given}, each an (N,) CPU tensor. The normalising
    distances default to the mean pairwise distances of `x` and of its features.
    """
    f_x = (target_feats.float().cpu() if target_feats is not None
           else encode_batched(encoder, x, layer, batch, precision=precision))
    f_r = encode_batched(encoder, recon, layer, batch, precision=precision)
    out = {
        "img_err": normalized_error(recon.cpu(), x.cpu(), img_scale),
        "feat_err": normalized_error(f_r, f_x, feat_scale),
        "psnr": psnr(recon.cpu(), x.cpu()),
        "ssim": ssim(recon.cpu(), x.cpu()),
    }
    if lpips is not None:
        dev = lpips.lins[0].device
        out["lpips"] = torch.cat([lpips(recon[i:i + batch].to(dev), x[i:i + batch].to(dev)).cpu()
                                  for i in range(0, len(x), batch)])
    return out


def mean_metrics(recon: torch.Tensor, x: torch.Tensor, encoder, layer: str, **kw) -> dict[str, float]:
    """reconstruction_metrics averaged over the images: one float per metric (a table row)."""
    return {k: float(v.mean()) for k, v in reconstruction_metrics(recon, x, encoder, layer, **kw).items()}
