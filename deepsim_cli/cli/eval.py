"""`deepsim eval`: the paper's normalized reconstruction errors (Table 2) and perceptual metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import check_suffix, load_encoder, load_gens, parse_layers, precheck, progress_bar, say, setup
from ._options import (MAX_REFINE, EncoderOpt, EncoderWeightsOpt, GeneratorOpt, out_console, print_json, resolve)


def eval_(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", "-d", metavar="DIR|TAR", show_default=False,
                                       help="Held-out images: a folder, a tar file or one image.")],
    layer: Annotated[str, typer.Option("--layer", "-l", metavar="LAYER[,LAYER…]",
                                       help="Layer(s) whose generators to evaluate.")] = "pool5",
    encoder: EncoderOpt = "alexnet",
    encoder_weights: EncoderWeightsOpt = None,
    weights: GeneratorOpt = None,
    n: Annotated[int, typer.Option(
        "--n", min=2, help="Evaluate N images drawn at random with --seed, spread evenly over the "
                           "data's folders (classes); all of them when there are fewer.")] = 500,
    csv: Annotated[Optional[Path], typer.Option("--csv", metavar="FILE", show_default=False,
                                                help="Write per-image metrics to this CSV.")] = None,
    no_lpips: Annotated[bool, typer.Option("--no-lpips", help="Skip LPIPS-alex.")] = False,
    no_judge: Annotated[bool, typer.Option(
        "--no-judge", help="Skip recognition and spread (MobileNetV2 as an independent judge).")] = False,
    refine: Annotated[str, typer.Option(
        "--refine", metavar="N[,N…]", show_default=False,
        help="Also rows 'generator + refine N' (deepsim invert --refine) on the same images, with "
             "seconds per image.")] = "",
    batch: Annotated[int, typer.Option("--batch", "-b", min=1, help="Batch size.")] = 50,
) -> None:
    """Measure how well generators reconstruct held-out images.

    Normalized Euclidean error (paper Table 2): ||G(E(x)) − x|| divided by the mean distance
    between all pairs of different test images, in %, in image space and in the inverted
    layer's feature space; plus PSNR, SSIM and LPIPS-alex. Recognition (share of images whose
    MobileNetV2 top-1 class of the original is in its top-5 for the reconstruction) and spread
    (mean pairwise distance of reconstructions / of originals in MobileNetV2's pooled features)
    catch a generator that returns one template for every photo. Reference rows: the mean image
    (a method worse than it has learnt nothing useful) and the original at 32 px.

    [bold]Examples[/bold]

      deepsim eval --data examples/kodak24 --layer pool5

      deepsim eval --data val/ --layer pool5 --weights runs/pool5/generator.safetensors --csv per_image.csv --json
    """
    layers = parse_layers(layer, weights)
    precheck([data], encoder, layers)  # answers typos before torch loads
    refine_steps = _parse_refine(refine)
    import torch

    from ..data import count_images, load_array, to_float
    from ..evaluation import eval_stages, evaluate_layer, write_per_image_csv
    from ..metrics import LPIPSAlex

    opts = resolve(ctx)
    if csv is not None:
        check_suffix(csv, (".csv",), "--csv")
    dev = setup(opts)
    enc = load_encoder(encoder, encoder_weights, dev)
    pairs = load_gens(enc, layers, weights, dev, follow=encoder_weights is None)
    lp = None if no_lpips else LPIPSAlex(dev, precision=opts.precision)
    judge = None if no_judge else load_encoder("mobilenet_v2", None, dev)
    rows, per_image = [], {}
    names: list[str] = []
    for l, (enc, gen) in pairs.items():
        arr, names = load_array(data, gen.image_size, sample=(n, opts.seed))
        total = count_images(data)
        x = to_float(torch.from_numpy(arr))
        if len(x) < 2:
            from ..errors import UsageError
            raise UsageError(f"evaluation needs at least two images, {data} holds {len(x)} (errors are normalised by their mean pairwise distance)")
        say(opts, f"evaluating {encoder}:{l} on {len(x)} of {total} images at {gen.image_size} px "
                  f"(seed {opts.seed})")
        with progress_bar(opts, eval_stages(refine_steps, judge is not None), f"eval {l}") as advance:
            res = evaluate_layer(x, enc, gen, batch=batch, lpips=lp, judge=judge, precision=opts.precision,
                                 refine_steps=refine_steps, on_stage=lambda _s: advance())
        rows += res.rows
        per_image[l] = res.per_image
    if csv is not None:
        write_per_image_csv(csv, per_image, names)
    if opts.json:
        print_json({"data": str(data), "rows": rows, "csv": str(csv) if csv else None})
        return
    from rich.table import Table
    t = Table(title=f"reconstruction of {data.name} (normalized errors in %, lower is better)")
    cols = ("layer", "method", "n", "image err %", "feature err %", "PSNR dB", "SSIM", "LPIPS",
            "recognition %", "spread %", "periodic")
    for c in cols:
        t.add_column(c, justify="left" if c in ("layer", "method") else "right")

    def cell(r: dict, key: str, fmt: str, scale: float = 1.0) -> str:
        return format(r[key] * scale, fmt) if key in r else "–"
    for r in rows:
        t.add_row(r["layer"], r["method"], str(r["n"]), cell(r, "img_err", ".1f"), cell(r, "feat_err", ".1f"),
                  cell(r, "psnr", ".2f"), cell(r, "ssim", ".3f"), cell(r, "lpips", ".3f"),
                  cell(r, "recognition", ".1f", 100), cell(r, "spread", ".1f", 100), cell(r, "periodic", ".1f"))
    photos = max((r["periodic_photos"] for r in rows if "periodic_photos" in r), default=float("nan"))
    t.caption = f"periodic: sharpest spectral peak over its neighbours (these photos {photos:.1f}; stripes or a checkerboard ≫ 10)"
    out_console().print(t)


def _parse_refine(text: str) -> list[int]:
    """'10,30' → [10, 30]; UsageError for anything but integers in 1…MAX_REFINE."""
    from ..errors import UsageError

    out = []
    for t in (t.strip() for t in text.split(",")):
        if not t:
            continue
        if not t.isdigit() or not 1 <= int(t) <= MAX_REFINE:
            raise UsageError(f"--refine {text!r}: expected step counts between 1 and {MAX_REFINE}, e.g. 10,30")
        out.append(int(t))
    return out
