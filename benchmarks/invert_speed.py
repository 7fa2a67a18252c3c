"""`deepsim invert` speed on this machine: model load + one image (wall, as a user sees it, in a
fresh process), batched throughput of E + G at the generator's resolution, and AlexNet feature
extraction at 224 px, each in fp32 and bf16 side by side (ratio) in one run.

    python benchmarks/invert_speed.py [--layer pool5] [--weights FILE] [--batch 32] [--iters 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepsim_cli.encoders import build_encoder  # noqa: E402
from deepsim_cli.inference import invert, load_generator, shipped_generator_path  # noqa: E402
from deepsim_cli.encoders import encode_batched  # noqa: E402


def _rate(fn, n: int, iters: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return n * iters / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="pool5")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    a = ap.parse_args()
    weights = a.weights or shipped_generator_path(a.layer)
    img = REPO / "examples" / "images" / "chelsea.jpg"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.layer}")
    for cmd in (["--help"], ["invert", str(img), "--layer", a.layer, "--weights", str(weights),
                             "-o", "/tmp/deepsim-invert-speed.png"]):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "deepsim_cli", "--device", "cpu", "--quiet", *cmd], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"`deepsim {cmd[0]}` fresh process: {time.perf_counter() - t:.2f} s wall")
    enc = build_encoder("alexnet")
    gen = load_generator(weights, encoder=enc)
    x = torch.rand(a.batch, 3, gen.image_size, gen.image_size) * 2 - 1
    x224 = torch.rand(64, 3, 224, 224) * 2 - 1
    rates = {}
    for p in ("fp32", "bf16"):
        inv = _rate(lambda: invert(x, enc, gen, batch=a.batch, precision=p), a.batch, a.iters)
        feats = _rate(lambda: encode_batched(enc, x224, "pool5", 64, precision=p), 64, a.iters)
        rates[p] = (inv, feats)
    (i32, f32), (i16, f16) = rates["fp32"], rates["bf16"]
    print(f"batched invert {a.layer} (batch {a.batch}): fp32 {i32:.1f} img/s, bf16 {i16:.1f} img/s, "
          f"ratio {i16 / i32:.2f}x")
    print(f"AlexNet pool5 features at 224 px (batch 64): fp32 {f32:.1f} img/s, bf16 {f16:.1f} img/s, "
          f"ratio {f16 / f32:.2f}x")


if __name__ == "__main__":
    main()
