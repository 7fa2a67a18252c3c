"""`deepsim invert` speed on this machine: model load + one image (wall, as a user sees it, in a
fresh process) and batched throughput of E + G at the generator's resolution.

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="pool5")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    a = ap.parse_args()
    weights = a.weights or shipped_generator_path(a.layer)
    img = REPO / "examples" / "images" / "chelsea.jpg"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deepsim_cli", "--device", "cpu", "--quiet", "invert", str(img),
                    "--layer", a.layer, "--weights", str(weights), "-o", "/tmp/deepsim-invert-speed.png"],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    enc = build_encoder("alexnet")
    gen = load_generator(weights, encoder=enc)
    x = torch.rand(a.batch, 3, gen.image_size, gen.image_size) * 2 - 1
    invert(x, enc, gen, batch=a.batch)  # warm-up
    t = time.perf_counter()
    for _ in range(a.iters):
        invert(x, enc, gen, batch=a.batch)
    rate = a.batch * a.iters / (time.perf_counter() - t)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.layer} → {gen.image_size} px")
    print(f"`deepsim invert` one image, fresh process (import + load + invert + save): {wall:.2f} s")
    print(f"batched invert throughput (batch {a.batch}): {rate:.1f} img/s")


if __name__ == "__main__":
    main()
