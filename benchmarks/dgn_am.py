"""DGN-AM targets: is the synthesized image the class for AlexNet, and is it
recognisable to an independent network?

For N random ImageNet classes (fixed by --pick-seed) × seeds 0..S-1, maximise AlexNet's fc8 unit
of the class through the fc6 generator (the paper's optimiser, shipped code bounds), and, as the
baseline, by plain gradient ascent on the pixels with the same number of steps (normalised step,
L2 decay, clamp to the image range). Reports for each method: the fraction of runs where the class
is AlexNet's top-1, and where the MobileNetV2 teacher (never used in the optimisation) ranks it in
its top-5. Also the wall time of 200 iterations for one unit (batch of one, as `deepsim visualize
--unit U` runs it). Writes a grid of the first seed's images to --figure.

    python benchmarks/dgn_am.py [--classes 20] [--seeds 3] [--pixel-seeds 1] [--iters 200] [--figure benchmarks/figures/dgn_am.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepsim_cli.data import load_array  # noqa: E402
from deepsim_cli.encoders import build_encoder  # noqa: E402
from deepsim_cli.figures import make_grid  # noqa: E402
from deepsim_cli.images import save_image  # noqa: E402
from deepsim_cli.inference import load_generator, shipped_generator_path  # noqa: E402
from deepsim_cli.encoders import encode_batched  # noqa: E402
from deepsim_cli.visualize import (CodeBounds, PixelParam, ascend, bounds_path, imagenet_classes,  # noqa: E402
                                  unit_objective, visualize_many)


def pixel_am(target, units: list[int], size: int, iters: int, seeds: list[int],
             lr: tuple[float, float] = (0.05, 1e-4), decay: float = 0.01) -> torch.Tensor:
    """Activation maximisation on the pixels: DGN-AM's optimiser (deepsim_cli.visualize.ascend)
    with the pixels as parameters instead of the generator's code."""
    x = torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(s)) * 0.05
                     for s in seeds])
    return ascend(PixelParam(x), target, "fc8", unit_objective(units), iters=iters, lr=lr, decay=decay,
                  precision="fp32").images


@torch.no_grad()
def score(images: torch.Tensor, units: list[int], alex, teacher) -> dict:
    a = alex(images, ["fc8"])["fc8"]
    t = teacher(images, ["logits"])["logits"]
    u = torch.tensor(units)
    return {"alexnet_top1": float((a.argmax(1) == u).float().mean()),
            "alexnet_prob": float(a.softmax(1)[torch.arange(len(u)), u].mean()),
            "teacher_top5": float((t.topk(5, 1).indices == u[:, None]).any(1).float().mean()),
            "teacher_top1": float((t.argmax(1) == u).float().mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pixel-seeds", type=int, default=None,
                    help="seeds for the pixel baseline (default: --seeds; 0 skips it)")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--pick-seed", type=int, default=0)
    ap.add_argument("--weights", type=Path, default=None, help="fc6 generator (default: the shipped one)")
    ap.add_argument("--figure", type=Path, default=None)
    ap.add_argument("--lr-start", type=float, default=1.0)
    ap.add_argument("--objective", default="activation", choices=["activation", "logprob"])
    ap.add_argument("--jitter", type=int, default=0, help="random shift (px) per view and step")
    ap.add_argument("--views", type=int, default=1, help="jittered views averaged per step")
    ap.add_argument("--init-mean", type=Path, default=None,
                    help="start every run from the mean fc6 code of 2,000 images of this DIR|TAR")
    ap.add_argument("--chunk", type=int, default=20, help="runs per batch")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--timing-only", action="store_true",
                    help="only time 200 iterations for one unit in fp32 and bf16 side by side")
    a = ap.parse_args()
    torch.set_grad_enabled(True)
    gpath = a.weights or shipped_generator_path("fc6")
    alex = build_encoder("alexnet")
    teacher = build_encoder("mobilenet_v2")
    gen = load_generator(gpath, encoder=alex)
    bounds = CodeBounds.load(bounds_path(gpath))
    init = None
    if a.init_mean:  # 2,000 images picked with seed 0, at the generator's resolution
        arr, _ = load_array(str(a.init_mean), gen.image_size)
        arr = arr[torch.randperm(len(arr), generator=torch.Generator().manual_seed(0))[:2000].numpy()]
        with torch.no_grad():
            init = encode_batched(alex, arr, "fc6", 64).mean(0)
    classes = torch.randperm(1000, generator=torch.Generator().manual_seed(a.pick_seed))[:a.classes].tolist()
    names = imagenet_classes()
    pairs = [(c, s) for c in classes for s in range(a.seeds)]
    units, seeds = [c for c, _ in pairs], [s for _, s in pairs]

    def dgn_am(units: list[int], seeds: list[int], iters: int):
        return visualize_many(gen.G, alex, "fc8", units, seeds=seeds, code_shape=gen.G.cfg.in_shape, iters=iters,
                              bounds=bounds, lr=(a.lr_start, 1e-10), objective=a.objective,
                              jitter=a.jitter, views=a.views, init=init, precision=precision)

    if a.timing_only:
        times = {}
        for precision in ("fp32", "bf16"):
            dgn_am([classes[0]], [0], 5)  # warm-up
            t = time.perf_counter()
            dgn_am([classes[0]], [0], 200)
            times[precision] = time.perf_counter() - t
        print(f"DGN-AM 200 iterations, one unit (objective {a.objective}, jitter {a.jitter}, views {a.views}): "
              f"fp32 {times['fp32']:.1f} s, bf16 {times['bf16']:.1f} s, ratio {times['fp32'] / times['bf16']:.2f}x")
        return
    precision = a.precision
    t = time.perf_counter()
    dgn_am([classes[0]], [0], 200)
    one_unit_200 = time.perf_counter() - t

    out: dict = {"lr_start": a.lr_start, "objective": a.objective, "jitter": a.jitter, "views": a.views,
                 "init_mean": str(a.init_mean) if a.init_mean else None, "classes": [names[c] for c in classes], "seeds": a.seeds, "iters": a.iters,
                 "one_unit_200_iters_s": round(one_unit_200, 2), "generator": str(gpath)}
    imgs = {}
    n_pix = a.seeds if a.pixel_seeds is None else a.pixel_seeds
    runs_of = {"dgn_am": pairs, "pixel": [(c, s) for c in classes for s in range(n_pix)]}
    for method in ("dgn_am", "pixel") if n_pix else ("dgn_am",):
        t = time.perf_counter()
        chunks = []
        m_units, m_seeds = [c for c, _ in runs_of[method]], [s for _, s in runs_of[method]]
        for i in range(0, len(m_units), a.chunk):
            u, s = m_units[i:i + a.chunk], m_seeds[i:i + a.chunk]
            if method == "dgn_am":
                chunks.append(torch.stack([r.image for r in dgn_am(u, s, a.iters)]))
            else:
                chunks.append(pixel_am(alex, u, gen.image_size, a.iters, s))
        imgs[method] = torch.cat(chunks)
        out[method] = score(imgs[method], m_units, alex, teacher)
        out[method]["runs"] = len(m_units)
        out[method]["wall_s"] = round(time.perf_counter() - t, 1)
        print(method, json.dumps(out[method]), flush=True)
    if a.figure:
        cells, caps = [], []
        for m, label in (("dgn_am", "DGN-AM"), ("pixel", "pixel AM")) if n_pix else (("dgn_am", "DGN-AM"),):
            for i, (c, s) in enumerate(runs_of[m]):
                if s == 0:
                    cells.append(imgs[m][i])
                    caps.append(f"{label}\n{names[c][:18]}")
        save_image(make_grid(cells, ncols=len(classes), captions=caps), a.figure)
        out["figure"] = str(a.figure)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
