"""Training speed on this machine: img/s of one full DeePSiM step (D update + G update) against
the bare forward+backward cost of G + comparator + D, at the shipped resolution.

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
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (a.batch * 2, a.size, a.size, 3), dtype=np.uint8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, layer {a.layer}, "
          f"{a.size} px, batch {a.batch}")
    for name, kw in (("comparator at 224 (paper)", {}),
                     ("comparator at image size", {"comparator_size": a.size}),
                     ("comparator at image size + feature cache", {"comparator_size": a.size,
                                                                    "feature_cache": True})):
        cfg = TrainConfig(layer=a.layer, image_size=a.size, load_size=a.size, batch=a.batch, **kw)
        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(cfg, Path(d), torch.device("cpu"))
            x = tr.make_batch(imgs, 0)
            y = tr.compute_features(imgs[:a.batch]) if cfg.feature_cache else None

            def step():
                tr.train_step(x, y)
            dt = timed(step, a.iters)
            # bare cost: one forward+backward of G, C (on the fake) and D (real + fake), nothing else
            with torch.no_grad():
                yy = y.float() if y is not None else tr.encoder(x, [a.layer])[a.layer]

            def bare():
                fake = tr.G(yy)
                c = tr.comparator(fake, [tr.comp_layer])[tr.comp_layer]
                d = tr.D(fake, yy) + tr.D(x, yy)
                (c.float().mean() + d.float().mean()).backward()
            db = timed(bare, a.iters)
        print(f"{name:<45} step {a.batch / dt:6.1f} img/s   bare G+C+D fwd+bwd {a.batch / db:6.1f} img/s   "
              f"ratio {dt / db:.2f}x")


if __name__ == "__main__":
    main()
