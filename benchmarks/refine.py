"""Refinement through the generator (`deepsim invert --refine N`, deepsim_cli.refine) against the
generator alone and Mahendran & Vedaldi optimisation, on held-out photos: Table-2 image/feature
error, PSNR/SSIM/LPIPS, MobileNetV2 recognition and spread, and seconds per image on this machine.

    python benchmarks/refine.py --data ../shared/data/photos-eval.tar --layer pool5 \\
        [--n 92] [--seed 0] [--steps 10,30,100] [--lr 0.2] [--also conv3|none] [--anchor 0] [--mv-steps 0] [--json out.json]
    python benchmarks/refine.py ... --figure benchmarks/figures/refine_pool5.png   # 8 photos: original / G / refined
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepsim_cli.data import load_array, to_float  # noqa: E402
from deepsim_cli.encoders import build_encoder  # noqa: E402
from deepsim_cli.evaluation import evaluate_layer  # noqa: E402
from deepsim_cli.inference import invert, load_generator, optimize_invert, shipped_generator_path  # noqa: E402
from deepsim_cli.encoders import encode_batched  # noqa: E402
from deepsim_cli.metrics import LPIPSAlex  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--layer", default="pool5")
    ap.add_argument("--weights", help="generator file (default: the shipped one for --layer)")
    ap.add_argument("--n", type=int, default=92)
    ap.add_argument("--steps", default="10,30,100")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--also", default=None, help="comma-separated further layers to match ('none': only "
                                                 "the inverted layer; default: refine.default_also)")
    ap.add_argument("--anchor", type=float, default=0.0)
    ap.add_argument("--mv-steps", type=int, default=0, help="also a Mahendran & Vedaldi row (0: none)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--no-lpips", action="store_true")
    ap.add_argument("--figure", type=Path, help="write original / generator / refined rows for 8 photos")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="which --n images (a random sample stratified by class)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device("cpu")
    enc = build_encoder("alexnet", None, dev)
    gen = load_generator(a.weights or shipped_generator_path(a.layer), dev, encoder=enc)
    judge = build_encoder("mobilenet_v2", None, dev)
    lp = None if a.no_lpips else LPIPSAlex(dev, precision=a.precision)
    arr, names = load_array(a.data, gen.image_size, sample=(a.n, a.seed))  # stratified by class, as deepsim eval --n
    x = to_float(torch.from_numpy(arr))
    kw = {"anchor": a.anchor}
    if a.also is not None:
        kw["also"] = [l for l in a.also.split(",") if l and l != "none"]
    if a.lr is not None:
        kw["lr"] = a.lr
    steps = [int(s) for s in a.steps.split(",") if s]
    res = evaluate_layer(x, enc, gen, batch=a.batch, lpips=lp, judge=judge, precision=a.precision,
                         refine_steps=steps, refine_kw=kw)
    rows = res.rows
    if a.mv_steps:
        from deepsim_cli.evaluation import judge_features, recognition, spread
        from deepsim_cli.metrics import mean_metrics, mean_pairwise_distance
        f_x = encode_batched(enc, x, gen.layer, a.batch, precision=a.precision)
        t0 = time.perf_counter()
        mv = torch.cat([optimize_invert(f_x[i:i + a.batch], enc, gen.layer, gen.image_size, steps=a.mv_steps,
                                        precision=a.precision) for i in range(0, len(x), a.batch)])
        dt = (time.perf_counter() - t0) / len(x)
        m = mean_metrics(mv, x, enc, gen.layer, img_scale=mean_pairwise_distance(x),
                         feat_scale=mean_pairwise_distance(f_x), target_feats=f_x, lpips=lp, batch=a.batch,
                         precision=a.precision)
        jx, jr = judge_features(judge, x), judge_features(judge, mv)
        rows.append({"layer": gen.layer, "method": f"M&V optimisation {a.mv_steps}", "n": len(x), **m,
                     "recognition": recognition(jr, jx), "spread": spread(jr, jx), "sec_per_image": dt})
    print(f"{a.data} · {gen.layer} · n={len(x)} · refine {kw} · {torch.get_num_threads()} threads")
    for r in rows:
        print(f"  {r['method']:<24} img {r.get('img_err', float('nan')):5.1f}  feat {r.get('feat_err', float('nan')):5.1f}"
              f"  PSNR {r['psnr']:5.2f}  SSIM {r['ssim']:.3f}  LPIPS {r.get('lpips', float('nan')):.3f}"
              f"  recog {100 * r.get('recognition', float('nan')):5.1f}  spread {100 * r.get('spread', float('nan')):5.1f}"
              f"  {r.get('sec_per_image', float('nan')):.3f} s/img", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"data": a.data, "layer": gen.layer, "refine": kw, "rows": rows}, indent=1))
    if a.figure:
        from deepsim_cli.figures import make_grid
        from deepsim_cli.images import save_image
        from deepsim_cli.refine import refine
        idx = torch.linspace(0, len(x) - 1, 8).long()
        xs = x[idx]
        g = invert(xs, enc, gen, precision=a.precision)
        r = refine(xs, enc, gen, max(steps), precision=a.precision, **kw).images
        save_image(make_grid(list(xs) + list(g) + list(r), ncols=8,
                             row_labels=["original", "generator", f"refine {max(steps)}"]), a.figure)


if __name__ == "__main__":
    main()
