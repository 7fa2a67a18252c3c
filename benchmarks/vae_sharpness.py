"""DeePSiM VAE vs squared-error VAE (paper Fig. 8): samples side by side, and sharpness
as numbers: mean gradient magnitude (finite differences, per pixel, on [0, 1] images), the share
of spectral energy above a quarter of the sampling frequency, and the share in the 1/16–1/5 band
(edges and texture, below the up-sampling checkerboard frequencies that inflate the other two), for
prior samples of each VAE, their reconstructions of held-out images, and the real images.

    python benchmarks/vae_sharpness.py --deepsim runs/vae-deepsim/generator.safetensors \
        --se runs/vae-se/generator.safetensors [--n 64] [--figure benchmarks/figures/vae_samples.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepsim_cli.data import load_array, to_float  # noqa: E402
from deepsim_cli.figures import make_grid  # noqa: E402
from deepsim_cli.images import save_image  # noqa: E402
from deepsim_cli.inference import load_vae, sample  # noqa: E402


def gradient_magnitude(x: torch.Tensor) -> float:
    """Mean |∇| of the luminance of (B, 3, H, W) images in [-1, 1], measured on the [0, 1] scale."""
    y = ((x + 1) / 2).mean(1)
    gx = y[:, :, 1:] - y[:, :, :-1]
    gy = y[:, 1:, :] - y[:, :-1, :]
    return float((gx[:, :-1, :].pow(2) + gy[:, :, :-1].pow(2)).sqrt().mean())


def band_share(x: torch.Tensor, lo: float, hi: float = 1.0) -> float:
    """Fraction of the (mean-removed) luminance power at radial frequency in (lo, hi] cycles/pixel."""
    y = ((x + 1) / 2).mean(1)
    y = y - y.mean((1, 2), keepdim=True)
    p = torch.fft.fft2(y).abs().pow(2)
    h, w = y.shape[-2:]
    fy = torch.fft.fftfreq(h).abs()[:, None]
    fx = torch.fft.fftfreq(w).abs()[None, :]
    r = (fx ** 2 + fy ** 2).sqrt()
    return float((p * ((r > lo) & (r <= hi))).sum() / p.sum().clamp_min(1e-12))


def high_frequency_share(x: torch.Tensor, cutoff: float = 0.25) -> float:
    """Fraction of the (mean-removed) luminance power above `cutoff` cycles/pixel. Periodic
    up-sampling artifacts (checkerboards at 1/4 and 1/2 cycles/pixel) count here too."""
    return band_share(x, cutoff)


def mid_frequency_share(x: torch.Tensor) -> float:
    """Power share at 1/16–1/5 cycles/pixel: edges and texture, below the checkerboard frequencies
    of stride-2 up-sampling, so blur lowers it and artifacts barely raise it."""
    return band_share(x, 1 / 16, 1 / 5)


def stats(x: torch.Tensor) -> dict:
    return {"grad_mag": round(gradient_magnitude(x), 4), "hf_share": round(high_frequency_share(x), 5),
            "mid_share": round(mid_frequency_share(x), 5)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deepsim", type=Path, required=True)
    ap.add_argument("--se", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "imagenette-160-val.tar")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", type=Path, default=None)
    a = ap.parse_args()
    vaes = {"deepsim": load_vae(a.deepsim), "se": load_vae(a.se)}
    size = vaes["deepsim"].decoder.cfg.out_size
    arr, _ = load_array(str(a.data), size)
    pick = torch.linspace(0, len(arr) - 1, a.n).long().numpy()  # spread over the classes
    real = to_float(torch.from_numpy(arr[pick]))
    out = {"n": a.n, "size": size, "real": stats(real)}
    samples, recons = {}, {}
    with torch.no_grad():
        for name, vae in vaes.items():
            samples[name] = sample(vae, a.n, seed=a.seed)
            mu, _ = vae.encode(real)
            recons[name] = vae.decode(mu).clamp(-1, 1)
            out[name] = {"samples": stats(samples[name]), "reconstructions": stats(recons[name]),
                         "recon_mse": round(float(F.mse_loss(recons[name], real)), 4)}
    if a.figure:
        k = min(8, a.n)
        sel = torch.linspace(0, a.n - 1, k).round().long()  # held-out images of different classes
        cells = [real[sel], recons["se"][sel], recons["deepsim"][sel], samples["se"][:k], samples["deepsim"][:k]]
        labels = ["real (held out)", "SE VAE\nreconstruction", "DeePSiM VAE\nreconstruction",
                  "SE VAE\nsamples", "DeePSiM VAE\nsamples"]
        save_image(make_grid(torch.cat(cells), ncols=k, row_labels=labels), a.figure)
        out["figure"] = str(a.figure)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
