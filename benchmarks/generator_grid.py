"""Several generators for one layer, side by side: the paper's loss ablation (Fig. 1: image loss /
+adversarial / +feature / full) and comparator grid (Fig. 6: which network the feature loss uses).
Writes a figure (originals on top, one labelled row per generator) and prints, per generator, the
normalized image / feature error (%), PSNR and SSIM on the first --n held-out images.

    python benchmarks/generator_grid.py --layer fc6 --data ../shared/data/imagenette-160-val.tar \
        --row "image loss=runs/t2/fc6-img/generator.safetensors" \
        --row "full=weights/alexnet-fc6-generator.safetensors" \
        --figure benchmarks/figures/ablation-fc6.png --out ablation.json [--n 500] [--show 8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepsim_cli.data import load_array, to_float  # noqa: E402
from deepsim_cli.encoders import build_encoder  # noqa: E402
from deepsim_cli.figures import save_grid  # noqa: E402
from deepsim_cli.inference import invert, load_generator, trained_on  # noqa: E402
from deepsim_cli.encoders import encode_batched  # noqa: E402
from deepsim_cli.metrics import mean_metrics, mean_pairwise_distance  # noqa: E402


def parse_row(s: str) -> tuple[str, Path]:
    name, sep, path = s.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--row must be NAME=PATH, got {s!r}")
    return name, Path(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--row", type=parse_row, action="append", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--show", type=int, default=8, help="images in the figure (spread over the whole --data)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    for _, p in a.row:
        if not p.exists():
            sys.exit(f"error: no generator at {p}")
    torch.manual_seed(0)
    enc = build_encoder("alexnet")
    arr, _ = load_array(a.data, a.size)
    x = to_float(torch.from_numpy(arr[:a.n]))
    pick = torch.linspace(0, len(arr) - 1, a.show).round().long()  # spread over all classes
    x_show = to_float(torch.from_numpy(arr[pick.numpy()]))
    s_img = mean_pairwise_distance(x)
    feats: dict[str, tuple] = {}  # per encoder weights: E(x) and its mean pairwise distance
    cells, labels, rows = [x_show], ["original"], []
    for name, path in a.row:
        gen = load_generator(path)
        if gen.layer != a.layer:
            sys.exit(f"error: {path} inverts {gen.layer}, not {a.layer}")
        genc = trained_on(gen, enc)  # a generator trained on another shipped head runs on that head
        if genc.sha256 not in feats:
            f = encode_batched(genc, x, a.layer)
            feats[genc.sha256] = (f, mean_pairwise_distance(f))
        f_x, s_feat = feats[genc.sha256]
        recon = invert(x, genc, gen)
        m = mean_metrics(recon, x, genc, a.layer, img_scale=s_img, feat_scale=s_feat, target_feats=f_x)
        r = {"name": name, "path": str(path), "steps": gen.ckpt.train_steps,
             "comparator": gen.ckpt.config.get("train", {}).get("comparator"),
             "loss": gen.ckpt.config.get("train", {}).get("loss"), "encoder_weights": str(genc.weights_path),
             **m}
        rows.append(r)
        print(f"{name:<28} img {r['img_err']:5.1f}%  feat {r['feat_err']:5.1f}%  PSNR {r['psnr']:5.2f}  "
              f"SSIM {r['ssim']:.3f}  (n={len(x)})", flush=True)
        cells.append(invert(x_show, genc, gen))
        labels.append(f"{name}\nimg {r['img_err']:.1f}%\nfeat {r['feat_err']:.1f}%")
    if a.figure:
        a.figure.parent.mkdir(parents=True, exist_ok=True)
        save_grid(torch.cat(cells), a.figure, ncols=a.show, row_labels=labels)
        print(f"figure: {a.figure}")
    if a.out:
        a.out.write_text(json.dumps({"layer": a.layer, "data": a.data, "n": len(x), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
