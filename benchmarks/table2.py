"""The paper's Table 2 on held-out images: normalized Euclidean error (%) in image space and in
the inverted layer's feature space, for each layer: ours (full DeePSiM), the image-loss-only
generator (same architecture and budget), optimisation-based inversion (Mahendran & Vedaldi,
TV prior), the mean image and the original at 32 px. Also PSNR / SSIM, and the collapse checks of
`deepsim eval` (recognition and spread, judged by MobileNetV2; --no-judge skips them): the rows
come from deepsim_cli.evaluation.evaluate_layer, the library behind `deepsim eval`.

    python benchmarks/table2.py --runs RUNS_DIR --data ../shared/data/imagenette-160-val.tar \
        --out table2.json [--n 500] [--opt-n 100] [--opt-steps 200] [--device cuda]
--n images are drawn with --seed, stratified by class folder (as `deepsim eval --n`); the
optimisation rows use --opt-n of them evenly spaced; every other row uses all --n.
RUNS_DIR holds <layer>-full/ and <layer>-img/ run folders (generator.safetensors inside), or
pass --shipped to use weights/ for "ours".
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
from deepsim_cli.evaluation import evaluate_layer, judge_features, recognition, spread  # noqa: E402
from deepsim_cli.inference import load_generator, optimize_invert, shipped_generator_path  # noqa: E402
from deepsim_cli.encoders import encode_batched  # noqa: E402
from deepsim_cli.metrics import mean_metrics, mean_pairwise_distance  # noqa: E402


def row(name, recon, x, enc, layer, f_x, s_img, s_feat):
    m = mean_metrics(recon, x, enc, layer, img_scale=s_img, feat_scale=s_feat, target_feats=f_x)
    return {"method": name, "layer": layer, "n": len(x), **m}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path)
    ap.add_argument("--shipped", action="store_true")
    ap.add_argument("--data", required=True)
    ap.add_argument("--encoder-weights")
    ap.add_argument("--layers", default="pool5,fc6,fc7,fc8")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--opt-n", type=int, default=100)
    ap.add_argument("--opt-steps", type=int, default=200)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--no-judge", action="store_true", help="skip recognition/spread (MobileNetV2 judge)")
    ap.add_argument("--seed", type=int, default=0, help="which --n images (stratified by class folder)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    dev = torch.device(a.device)
    enc = build_encoder("alexnet", a.encoder_weights, dev)
    judge = None if a.no_judge else build_encoder("mobilenet_v2", None, dev)
    arr, _ = load_array(a.data, a.size, sample=(a.n, a.seed))
    x = to_float(torch.from_numpy(arr))
    s_img = mean_pairwise_distance(x)
    rows = []
    for layer in a.layers.split(","):
        t0 = time.time()
        cands = {"DeePSiM (ours)": shipped_generator_path(layer) if a.shipped else a.runs / f"{layer}-full" / "generator.safetensors",
                 "image loss only": a.runs / f"{layer}-img" / "generator.safetensors" if a.runs else None,
                 "DeePSiM, 4x image loss": a.runs / f"{layer}-imgx4" / "generator.safetensors" if a.runs else None}
        refs_done = False
        for name, path in cands.items():
            if path is None or not Path(path).exists():
                continue
            gen = load_generator(path, dev, encoder=enc)
            res = evaluate_layer(x, enc, gen, judge=judge, precision=a.precision)  # the library `deepsim eval` uses
            for r in res.rows:
                if r["method"] == "generator":
                    rows.append({**r, "method": name})
                elif not refs_done:  # the mean-image and 32 px references, once per layer
                    rows.append(r)
            refs_done = True
        if a.opt_n:
            f_x = encode_batched(enc, x, layer, precision=a.precision)
            s_feat = mean_pairwise_distance(f_x)
            k = min(a.opt_n, len(x))
            sub = torch.linspace(0, len(x) - 1, k).round().long()  # spread over the classes
            recon = torch.cat([optimize_invert(f_x[sub[i:i + 100]].to(dev), enc, layer, a.size, steps=a.opt_steps,
                                               precision=a.precision).cpu()
                               for i in range(0, k, 100)])
            r = row("optimization (M&V, TV)", recon, x[sub], enc, layer, f_x[sub], s_img, s_feat)
            if judge is not None:
                jr, jx = judge_features(judge, recon), judge_features(judge, x[sub])
                r.update(recognition=recognition(jr, jx), spread=spread(jr, jx))
            rows.append(r)
        print(f"{layer} done in {time.time() - t0:.0f}s", flush=True)
        for r in rows:
            if r["layer"] == layer:
                extra = (f"  recog {100 * r['recognition']:5.1f}%  spread {100 * r['spread']:5.1f}%"
                         if "recognition" in r else "")
                print(f"  {r['method']:<26} img {r.get('img_err', float('nan')):6.1f}%  "
                      f"feat {r.get('feat_err', float('nan')):6.1f}%  "
                      f"PSNR {r['psnr']:5.2f}  SSIM {r['ssim']:.3f}{extra}  (n={r['n']})", flush=True)
    a.out.write_text(json.dumps({"data": a.data, "n": a.n, "seed": a.seed, "size": a.size, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
