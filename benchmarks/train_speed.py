"""Training speed on this machine: img/s of one full DeePSiM step (D update + G update) against
the bare forward+backward cost of G + comparator + D, at the shipped resolution, in fp32 and bf16
side by side (ratio), for the paper's comparator at 224, the comparator at the image size with
on-the-fly random crops + flips (the encoder runs on every batch), and the fixed-crop feature cache.

    python benchmarks/train_speed.py [--layer pool5] [--size 128] [--batch 32] [--iters 3]
Prints one line per configuration; figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepsim_cli.config import TrainConfig  # noqa: E402
from deepsim_cli.precision import autocast  # noqa: E402
from deepsim_cli.training import Trainer  # noqa: E402


def timed(fn, iters: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="pool5")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--g-width", type=float, default=0.5, help="0.5: the shipped pool5 recipe's generator")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    load = a.size + a.size // 8
    imgs = rng.integers(0, 256, (a.batch * 2, load, load, 3), dtype=np.uint8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, layer {a.layer}, "
          f"{a.size} px, batch {a.batch}, G width {a.g_width}")
    configs = (("comparator at 224 (paper), random crops", {}),
               ("comparator at image size, random crops", {"comparator_size": a.size}),
               ("comparator at image size, feature cache", {"comparator_size": a.size, "feature_cache": True}))
    for name, kw in configs:
        res = {}
        for p in ("fp32", "bf16"):
            cfg = TrainConfig(layer=a.layer, image_size=a.size, load_size=a.size + a.size // 8, batch=a.batch,
                              g_width=a.g_width, precision=p, **kw)
            with tempfile.TemporaryDirectory() as d:
                tr = Trainer(cfg, Path(d), torch.device("cpu"))
                if cfg.feature_cache:
                    crops = imgs[:, :a.size, :a.size]
                    y = tr.compute_features(np.ascontiguousarray(crops[:a.batch]))
                    x = tr.make_batch(np.ascontiguousarray(crops), 0)
                else:
                    y = None
                step_no = [0]

                def step():
                    # a new batch every step: crops, flips and (without the cache) the encoder included
                    xb = x if y is not None else tr.make_batch(imgs, step_no[0])
                    step_no[0] += 1
                    tr.train_step(xb, y)
                dt = timed(step, a.iters)
                xb = tr.make_batch(imgs, 0)
                with torch.no_grad(), autocast(tr.device, p):
                    yy = y.float() if y is not None else tr.encoder(xb[:, :, :a.size, :a.size], [a.layer])[a.layer]

                def bare():
                    with autocast(tr.device, p):
                        fake = tr.G(yy)
                        c = tr.comparator(fake, [tr.comp_layer])[tr.comp_layer]
                        d = tr.D(fake, yy) + tr.D(xb, yy)
                    (c.float().mean() + d.float().mean()).backward()
                db = timed(bare, a.iters)
            res[p] = (a.batch / dt, a.batch / db)
        (s32, b32), (s16, b16) = res["fp32"], res["bf16"]
        print(f"{name:<42} fp32 step {s32:6.1f} img/s (bare {b32:6.1f})   bf16 step {s16:6.1f} img/s "
              f"(bare {b16:6.1f}, step/bare {b16 / s16:.2f}x)   bf16/fp32 {s16 / s32:.2f}x", flush=True)


if __name__ == "__main__":
    main()
