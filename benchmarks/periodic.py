"""Periodic artifacts (a checkerboard, stripes) that every reconstruction of a generator shares:
`deepsim_cli.metrics.periodic_peak` on the photos themselves and on each generator's outputs.

    python benchmarks/periodic.py --data ../shared/data/photos-eval.tar \\
        weights/alexnet-pool5-generator.safetensors weights/alexnet-fc6-generator.safetensors ... [--n 1000]

Each generator decodes the features of the photos in the encoder it was trained on (its recorded
AlexNet head). Prints one line per row: periodic (photos ~2) and the peak's frequency. With
--notch, also what the peak is worth to the losses: the pool5 comparator loss (at 128 px, the
training recipe's) and the image MSE of the outputs before and after the peak's frequency
(±1 bin in f_y, ±2 in f_x, and its mirror) is filtered out. With --discriminator RUN/state.safetensors
(one generator), also the run's discriminator's mean real-probability for the photos, the
outputs, the outputs with the peak removed and the outputs shifted down 1 and 2 px (the pattern's
phase moved): a pattern that fools D loses its effect when removed or shifted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepsim_cli.data import load_array, to_float  # noqa: E402
from deepsim_cli.encoders import build_encoder, encode_batched  # noqa: E402
from deepsim_cli.inference import decode, load_generator, trained_on  # noqa: E402
from deepsim_cli.losses import feat_loss  # noqa: E402
from deepsim_cli.metrics import periodic_peak  # noqa: E402


def notch(img: torch.Tensor, at: tuple[float, float]) -> torch.Tensor:
    """`img` (N, 3, S, S) with the frequency `at` (f_y, f_x) and its neighbours removed."""
    spec = torch.fft.fft2(img.double())
    size = img.shape[-1]
    ky, kx = round(at[0] * size), round(at[1] * size)
    for sy, sx in ((ky, kx), (-ky, -kx)):
        for dy in (-1, 0, 1):
            for dx in range(-2, 3):
                spec[..., (sy + dy) % size, (sx + dx) % size] = 0
    return torch.fft.ifft2(spec).real.float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="image folder or tar")
    ap.add_argument("generators", nargs="+", type=Path, help="generator .safetensors files")
    ap.add_argument("--n", type=int, default=1000, help="images (a stratified sample when fewer than the set)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--notch", action="store_true", help="also the losses with the peak filtered out")
    ap.add_argument("--discriminator", type=Path, help="a training run's state.safetensors: D's verdicts")
    a = ap.parse_args()
    base = build_encoder("alexnet")
    shown = False
    for path in a.generators:
        gen = load_generator(path, "cpu")
        enc = trained_on(gen, base)
        arr, _ = load_array(a.data, gen.image_size, sample=(a.n, 0))
        x = to_float(torch.from_numpy(arr))
        if not shown:
            peak, at = periodic_peak(x)
            print(f"{'photos':60s} periodic {peak:7.1f} at {at}  (n={len(x)}, {gen.image_size} px)")
            shown = True
        y = encode_batched(enc, x, gen.layer, a.batch)
        recon = torch.cat([decode(gen, y[i:i + a.batch]) for i in range(0, len(y), a.batch)])  # clamped
        peak, at = periodic_peak(recon)
        print(f"{str(path):60s} periodic {peak:7.1f} at {at}")
        if a.notch:
            comp = enc.with_input_size(128)
            with torch.no_grad():
                c_x = comp(x, ["pool5"])["pool5"]
                for name, im in (("outputs", recon), ("peak removed", notch(recon, at))):
                    print(f"    {name:14s} pool5 loss {float(feat_loss(comp(im, ['pool5'])['pool5'], c_x)):.4f}  "
                          f"image MSE {float((im - x).pow(2).mean()):.4f}  periodic {periodic_peak(im)[0]:.1f}")
        if a.discriminator:
            _judge(a.discriminator, x, y, recon, at)


def _judge(state: Path, x: torch.Tensor, y: torch.Tensor, recon: torch.Tensor, at: tuple[float, float]) -> None:
    from deepsim_cli.checkpoint import load_checkpoint, load_run_state_tensors
    from deepsim_cli.config import TrainConfig
    from deepsim_cli.discriminator import Discriminator, DiscriminatorConfig
    ck = load_checkpoint(state, kind="train-state", map_location="cpu")
    cfg = TrainConfig.from_dict(ck.config, what=str(state))
    D = Discriminator(DiscriminatorConfig(cfg.d_width, y[0].numel() if cfg.d_cond else 0))
    load_run_state_tensors({"D": D}, ck.tensors)
    D.eval()
    with torch.no_grad():
        for name, im in (("photos", x), ("outputs", recon), ("peak removed", notch(recon, at)),
                         ("shifted 1 px", recon.roll(1, dims=2)), ("shifted 2 px", recon.roll(2, dims=2))):
            p = torch.sigmoid(D(im, y))
            print(f"    D on {name:13s} real-probability mean {float(p.mean()):.3f}  median {float(p.median()):.3f}")


if __name__ == "__main__":
    main()
