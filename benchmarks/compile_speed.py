"""torch.compile on this CPU (issue: fast CPU path, item 5): eager vs compiled, in the same run, for
the batched inversion forward (AlexNet pool5 + the shipped pool5 generator) and one DeePSiM training
step (the shipped pool5 recipe: half-width G, resize upsampling, comparator at 128, batch 32), in
the default precision. The compile time is counted: a 1,000-step (or 1,000-batch) job is
first call + 999 steady calls.

    python benchmarks/compile_speed.py [--iters 5] [--batch 32]
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
from deepsim_cli.encoders import build_encoder  # noqa: E402
from deepsim_cli.inference import load_generator, shipped_generator_path  # noqa: E402
from deepsim_cli.precision import autocast, resolve_precision  # noqa: E402
from deepsim_cli.training import Trainer  # noqa: E402


def first_and_steady(fn, iters: int) -> tuple[float, float]:
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    fn()  # a second warm-up: some backends finish compiling on the second call
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return first, (time.perf_counter() - t) / iters


def report(name: str, eager: tuple[float, float], comp: tuple[float, float] | str, n: int = 1000) -> None:
    e_total = eager[0] + (n - 1) * eager[1]
    if isinstance(comp, str):
        print(f"{name:<34} eager {eager[1] * 1000:7.1f} ms/call   compiled: failed ({comp})", flush=True)
        return
    c_total = comp[0] + (n - 1) * comp[1]
    print(f"{name:<34} eager {eager[1] * 1000:7.1f} ms/call   compiled {comp[1] * 1000:7.1f} ms/call "
          f"(first call {comp[0]:.1f} s)   {n} calls: eager {e_total:.0f} s, compiled {c_total:.0f} s, "
          f"speed-up {e_total / c_total:.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    dev = torch.device("cpu")
    prec = resolve_precision("auto", dev)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision {prec}, batch {a.batch}")
    enc = build_encoder("alexnet")
    gen = load_generator(shipped_generator_path("pool5"), dev, encoder=enc)
    x = torch.rand(a.batch, 3, 128, 128) * 2 - 1

    def invert_with(G):
        def run():
            with torch.no_grad(), autocast(dev, prec):
                return G(enc(x, ["pool5"])["pool5"])
        return run

    eager = first_and_steady(invert_with(gen.G), a.iters)
    try:
        comp = first_and_steady(invert_with(torch.compile(gen.G)), a.iters)
    except Exception as e:  # no compiler toolchain, an unsupported op …
        comp = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    report("invert forward (pool5, G)", eager, comp)

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (a.batch * 4, 144, 144, 3), dtype=np.uint8)
    cfg = TrainConfig(layer="pool5", image_size=128, load_size=144, batch=a.batch, g_width=0.5, upsample="resize",
                      comparator_size=128, w_img=2.0, img_warmup=0, precision=prec)
    res = {}
    for mode in ("eager", "compiled"):
        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(cfg, Path(d), dev)
            if mode == "compiled":
                tr.loss.G_ddp = torch.compile(tr.loss.G_ddp)
                tr.loss.D_ddp = torch.compile(tr.loss.D_ddp)
            n = [0]

            def step():
                tr.train_step(tr.make_batch(imgs, n[0]))
                n[0] += 1
            try:
                res[mode] = first_and_steady(step, a.iters)
            except Exception as e:
                res[mode] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    report("training step (pool5 recipe)", res["eager"], res["compiled"])


if __name__ == "__main__":
    main()
