"""`deepsim visualize`: DGN-AM preferred-input synthesis through the fc6 generator."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from ._common import (check_suffix, claim_output, load_encoder, load_gen, output_path, precheck, progress_bar, read_inputs,
                      say, setup)
from ._options import (MAX_SEEDS, MAX_STEPS, EncoderWeightsOpt, GeneratorOpt, OutOpt, nonneg_float, print_json,
                       resolve, unit_float, lower_name)


def _xy(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    from ..errors import UsageError
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--xy takes X,Y (two integers), got {text!r}") from None
    return x, y


def parse_seeds(text: str) -> list[int]:
    """--seeds: integers and inclusive ranges, comma-separated ("0,1,2", "0-3", "0-3,10", "-1");
    at most MAX_SEEDS in all. Torch-free: a typo is answered before torch loads."""
    import re

    from ..errors import UsageError

    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(-?\d+)(?:\s*-\s*(-?\d+))?", part)
        if m is None:
            raise UsageError(f"--seeds takes integers or ranges, e.g. 0,1,2 or 0-3; got {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UsageError(f"--seeds range {part!r} ends before it starts")
        if len(seeds) + (hi - lo + 1) > MAX_SEEDS:
            raise UsageError(f"--seeds {text!r}: more than {MAX_SEEDS} seeds (they run as one batch)")
        seeds += range(lo, hi + 1)
    if not seeds:
        raise UsageError(f"--seeds needs at least one seed (e.g. 0,1,2 or 0-3); got {text!r}")
    return seeds


def visualize(
    ctx: typer.Context,
    unit: Annotated[Optional[list[int]], typer.Option(
        "--unit", "-u", show_default=False, help="Unit (channel or class index) to maximise; repeatable.")] = None,
    class_name: Annotated[Optional[list[str]], typer.Option(
        "--class", show_default=False, help="ImageNet class name instead of --unit (fuzzy); repeatable.")] = None,
    layer: Annotated[str, typer.Option("--layer", "-l", metavar="LAYER", callback=lower_name,
                                       help="Layer of the target network whose unit is maximised.")] = "fc8",
    encoder: Annotated[str, typer.Option("--encoder", "-e", metavar="NAME",
                                         help="Target network (any encoder; the generator stays the "
                                              "AlexNet-fc6 prior).")] = "alexnet",
    encoder_weights: EncoderWeightsOpt = None,
    weights: GeneratorOpt = None,
    code_layer: Annotated[str, typer.Option("--code-layer", metavar="LAYER",
                                            help="AlexNet layer the generator decodes (the optimised code).")] = "fc6",
    iters: Annotated[int, typer.Option("--iters", "--steps", min=1, max=MAX_STEPS,
                                       help=f"Optimisation steps (at most {MAX_STEPS}).")] = 200,
    lr_start: Annotated[float, typer.Option(
        "--lr-start", metavar="LR>=0", callback=nonneg_float,
        help="Initial step size (decays linearly). The paper's 8.0 is for Caffe's AlexNet, whose "
             "fc6 codes are much larger than this (normalised-input) AlexNet's.")] = 1.0,
    lr_end: Annotated[float, typer.Option("--lr-end", metavar="LR>=0", callback=nonneg_float,
                                          help="Final step size.")] = 1e-10,
    decay: Annotated[float, typer.Option("--decay", metavar="0..1", callback=unit_float,
                                         help="L2 decay of the code per step.")] = 0.01,
    objective: Annotated[Literal["activation", "logprob"], typer.Option(
        "--objective",
        help="Maximise the unit's raw activation (the paper) or, for a classifier layer, its log-softmax "
             "(pushes the other classes down too).")] = "activation",
    jitter: Annotated[int, typer.Option(
        "--jitter", min=0, metavar="PX",
        help="Each step, shift the image by up to ±PX pixels (and flip it) before the target sees it "
             "(not in the paper; makes the result less specific to one pixel grid).")] = 0,
    views: Annotated[int, typer.Option("--views", min=1,
                                       help="Randomly jittered copies averaged per step.")] = 1,
    xy: Annotated[Optional[str], typer.Option("--xy", metavar="X,Y", show_default=False,
                                              help="Spatial position for conv units (default: centre).")] = None,
    init: Annotated[Optional[Path], typer.Option("--init", metavar="IMG", show_default=False,
                                                 help="Start from this image's code instead of a random one.")] = None,
    seeds: Annotated[str, typer.Option(
        "--seeds", metavar="S[,S…]|A-B",
        help=f"Random starts (one grid cell each): a list 0,1,2 or a range 0-3 (at most {MAX_SEEDS}).")] = "0",
    save_every: Annotated[int, typer.Option("--save-every", min=0,
                                            help="Write a GIF of the optimisation, a frame every K steps.")] = 0,
    compute_bounds: Annotated[bool, typer.Option(
        "--compute-bounds", help="Compute the code bounds from --data and cache them beside the generator.")] = False,
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", metavar="DIR|TAR", show_default=False,
        help="Real images for --compute-bounds (repeatable: the generator's training sets).")] = None,
    no_bounds: Annotated[bool, typer.Option("--no-bounds", help="Do not clip the code.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="With --compute-bounds: replace the shipped generator's bounds file.")] = False,
    save_code: Annotated[Optional[Path], typer.Option(
        "--save-code", metavar="FILE.safetensors", show_default=False,
        help="Also save the optimised codes (one per unit and seed); `deepsim invert --code FILE` "
             "decodes them again.")] = None,
    out: OutOpt = None,
) -> None:
    """Synthesize the preferred input of a unit through the generator prior (DGN-AM).

    Gradient ascent on the generator's code h (AlexNet fc6 space) to maximise one unit of the
    target network: step normalised by the mean |gradient|, linearly decaying step size, L2
    decay, per-unit clipping to [0, 3·std] of real images' codes. Several units or seeds → one
    labelled grid (class, final activation, probability).

    [bold]Examples[/bold]

      deepsim visualize --unit 945 --out bell-pepper.png

      deepsim visualize --class "bell pepper" --class goldfish --seeds 0,1,2

      deepsim visualize --class mushroom --objective logprob --jitter 4 --views 2

      deepsim visualize --encoder mobilenet_v2 --layer logits --unit 1 --save-every 10

      deepsim visualize --compute-bounds --data train.tar --weights my-fc6-generator.safetensors
    """
    precheck(data or [], encoder, [layer], single=[init])  # answers typos before torch loads
    seed_list = parse_seeds(seeds)
    import torch

    from ..errors import UsageError
    from ..figures import make_grid, save_gif
    from ..images import save_image
    from ..inference import shipped_generator_path
    from ..utils import all_or_nothing
    from ..encoders import encode_batched
    from ..visualize import (CodeBounds, bounds_from_data, bounds_path, describe_runs, resolve_class,
                             shipped_bounds_path, visualize_many as lib_visualize_many)

    opts = resolve(ctx)
    dev = setup(opts)
    alex = load_encoder("alexnet", None, dev)
    gen = load_gen(alex, code_layer, weights, dev)
    if gen.G.cfg.kind != "fc":
        raise UsageError(f"DGN-AM optimises a vector code; the {code_layer} generator takes feature maps")
    gpath = weights if weights is not None else shipped_generator_path(code_layer)
    bpath = bounds_path(gpath) if weights is not None else shipped_bounds_path(gpath)
    if compute_bounds:
        if not data:
            raise UsageError("--compute-bounds needs --data DIR|TAR (real images)")
        if weights is None and bpath.is_file() and not force:
            raise UsageError(f"{bpath} ships with deepsim; --compute-bounds will not replace it without "
                             "--force (to use bounds of your own, pass --weights with your generator)")
        found, n_images = bounds_from_data(alex, code_layer, data, gen.image_size, precision=opts.precision)
        found.save(bpath, source=", ".join(str(d) for d in data))
        say(opts, f"bounds from {n_images} images → {bpath}")
        if not unit and not class_name:
            typer.echo(str(bpath))
            return
    if class_name and layer not in ("fc8", "prob", "logits"):
        raise UsageError(f"--class names an ImageNet class, a unit of a classifier layer (fc8, prob, "
                         f"logits), not of {layer!r}; use --unit N for {layer}")
    units = list(unit or []) + [resolve_class(c) for c in (class_name or [])]
    if not units:
        raise UsageError("give --unit N or --class NAME (or --compute-bounds --data DIR)")
    bounds = None
    if not no_bounds:
        if not bpath.is_file():
            raise UsageError(f"no code bounds at {bpath}; run `deepsim visualize --compute-bounds --data DIR` "
                             "or pass --no-bounds")
        bounds = CodeBounds.load(bpath)
    target = load_encoder(encoder, encoder_weights, dev)
    init_code = None
    if init is not None:
        xi, _ = read_inputs([init], gen.image_size)
        init_code = encode_batched(alex, xi, code_layer, 1, precision=opts.precision).to(dev)
    pairs = [(u, s) for u in units for s in seed_list]
    say(opts, f"{len(units)} unit(s) of {encoder}:{layer} × {len(seed_list)} seed(s), {iters} steps, one batch")
    with progress_bar(opts, iters, f"DGN-AM {encoder}:{layer}") as advance:
        runs = lib_visualize_many(gen.G, target, layer, [u for u, _ in pairs], seeds=[s for _, s in pairs],
                                  code_shape=gen.G.cfg.in_shape, xy=_xy(xy), iters=iters,
                                  lr=(lr_start, lr_end), decay=decay, bounds=bounds, init=init_code,
                                  save_every=save_every, objective=objective, jitter=jitter, views=views,
                                  precision=opts.precision, on_step=lambda _i, _a: advance())
    if not all(math.isfinite(r.activation) for r in runs):
        from ..errors import DeepsimError
        raise DeepsimError("the optimisation diverged (activation NaN or inf); nothing was written: "
                           "try a smaller --lr-start")
    dead = [(u, s) for (u, s), r in zip(pairs, runs) if not r.activation > 0]
    if dead and layer not in ("fc8", "logits"):
        say(opts, f"warning: {len(dead)} run(s) ended with the unit off (activation <= 0), e.g. unit "
                  f"{dead[0][0]} seed {dead[0][1]}: try more --iters, another --seeds or --init IMG")
    results = describe_runs(runs, pairs, target, layer, precision=opts.precision)
    caps = [f"{d['label']}\na={d['activation']:.2f}" + (f" p={d['prob']:.2f}" if d["prob"] is not None else "")
            for d in results]
    frames = [f for r in runs for f in r.frames]
    fcaps = [f"{d['label']} step {k * save_every}\na={a:.2f}" for d, r in zip(results, runs)
             for k, a in enumerate(r.frame_acts)]
    path = output_path(out, f"visualize-{layer}-{'-'.join(map(str, units))}.png", opts)
    if save_every and str(path) != "-":
        claim_output(opts, path.with_suffix(".gif"))
    check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    if save_code is not None:
        from .invert_codes import check_code_suffix
        check_code_suffix(save_code)
        claim_output(opts, save_code)
    outputs = {"grid": str(path)}
    from .. import provenance
    provenance.note(results=results)
    with all_or_nothing():  # the grid and the GIF, or neither
        save_image(make_grid([r.image for r in runs], ncols=len(seed_list), captions=caps), path)
        if save_every and str(path) != "-":
            gif_path = path.with_suffix(".gif")
            save_gif(frames, gif_path, duration_ms=120, captions=fcaps)
            outputs["gif"] = str(gif_path)
        if save_code is not None:
            from ..codes import write_codes
            write_codes(save_code, {code_layer: torch.cat([r.code for r in runs])}, alex,
                        [f"{r['label']} seed {r['seed']}" for r in results])
            outputs["code"] = str(save_code)
    if opts.json:
        print_json({**outputs, "layer": layer, "encoder": encoder, "results": results})
    elif str(path) != "-":
        for r in results:
            typer.echo(f"{r['label']} (unit {r['unit']}, seed {r['seed']}): activation {r['activation']:.3f}"
                       + (f", p={r['prob']:.3f}" if r["prob"] is not None else ""))
        for v in outputs.values():
            typer.echo(v)
