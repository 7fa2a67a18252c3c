"""`deepsim invert`: reconstruct images from their features with a trained generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ._common import (check_suffix, load_encoder, load_gen, output_path, parse_layers, precheck, progress_bar,
                      read_inputs, say, setup)
from ._options import (MAX_STEPS, BatchOpt, DeviceOpt, EncoderOpt, EncoderWeightsOpt, GeneratorOpt, JsonOpt,
                       OutOpt, QuietOpt, RefineOpt, SeedOpt, print_json, resolve)


def invert(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(
        show_default=False,
        help="Image files or folders ('-' reads one image from stdin).")],
    layer: Annotated[str, typer.Option(
        "--layer", "-l", metavar="LAYER[,LAYER…]",
        help="Encoder layer(s) to invert; several give the paper's Fig. 3 grid.")] = "pool5",
    encoder: EncoderOpt = "alexnet",
    encoder_weights: EncoderWeightsOpt = None,
    weights: GeneratorOpt = None,
    method: Annotated[Literal["generator", "optimize"], typer.Option(
        "--method", help="generator: one forward pass of G (DeePSiM); optimize: gradient descent "
                         "on the image with a TV prior (Mahendran & Vedaldi), no generator needed.")] = "generator",
    refine: RefineOpt = 0,
    init: Annotated[Literal["noise", "generator"], typer.Option(
        "--init", help="Start of --method optimize: small noise, or the generator's reconstruction "
                       "(needs a generator for the layer).")] = "noise",
    out: OutOpt = None,
    size: Annotated[int, typer.Option("--size", min=16,
                                      help="Output side for --method optimize.")] = 128,
    steps: Annotated[int, typer.Option("--steps", min=1, max=MAX_STEPS,
                                       help=f"Iterations for --method optimize (at most {MAX_STEPS}).")] = 200,
    batch: BatchOpt = 32,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Reconstruct images from what an encoder layer keeps of them.

    One image and one layer → the reconstruction (default <name>-<layer>.png); several images
    or layers → a grid with the originals on top and one row of reconstructions per layer.
    The output path is printed on stdout ('-o -' writes the PNG to stdout instead).

    [bold]Examples[/bold]

      deepsim invert examples/images/chelsea.jpg --layer pool5

      deepsim invert examples/images/ --layer pool5 -o recon.png

      deepsim invert examples/images/chelsea.jpg --layer fc6 --refine 30

      deepsim invert chelsea.jpg --layer conv3 --method optimize --steps 300
    """
    precheck(images, encoder, parse_layers(layer))  # answers typos before torch loads
    import torch

    from ..images import make_grid, save_image
    from ..inference import invert as lib_invert
    from ..inference import optimize_invert
    from ..metrics import encode_batched

    opts = resolve(ctx, json_out=json_out, device=device, seed=seed, quiet=quiet)
    layers = parse_layers(layer)
    dev = setup(opts)
    enc = load_encoder(encoder, encoder_weights, dev)
    enc.check_layers(layers)
    if weights is not None and len(layers) > 1:
        from ..errors import UsageError
        raise UsageError("--weights names one generator: pass a single --layer with it")
    if method == "optimize" and refine:
        from ..errors import UsageError
        raise UsageError("--refine refines a generator's output: use it with --method generator "
                         "(or --method optimize --init generator)")
    need_gen = method == "generator" or init == "generator"
    gens = {l: load_gen(enc, l, weights, dev) for l in layers} if need_gen else {}
    out_size = next(iter(gens.values())).image_size if gens else size
    x, names = read_inputs(images, out_size)
    single = len(names) == 1 and len(layers) == 1
    path = output_path(out, f"{names[0]}-{layers[0]}.png" if single else f"invert-{'-'.join(layers)}.png")
    check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    recons = {}
    for l in layers:
        how = method + (f" from the generator" if method == "optimize" and init == "generator" else "")
        say(opts, f"inverting {len(names)} image(s) from {encoder}:{l} ({how}"
                  f"{f', refined {refine} steps' if refine else ''})")
        if method == "generator" and refine:
            from ..refine import refine as lib_refine
            with progress_bar(opts, refine * len(x), f"refining {l}") as advance:
                recons[l] = lib_refine(x, enc, gens[l], refine, batch=batch, precision=opts.precision,
                                       on_step=advance).images
        elif method == "generator":
            recons[l] = lib_invert(x, enc, gens[l], batch=batch, precision=opts.precision).cpu()
        else:
            target = encode_batched(enc, x, l, batch, precision=opts.precision).to(dev)
            start = (lib_invert(x, enc, gens[l], batch=batch, precision=opts.precision)
                     if init == "generator" else None)
            with progress_bar(opts, steps * len(x), f"optimising {l}") as advance:
                recons[l] = torch.cat([
                    optimize_invert(target[i:i + batch], enc, l, out_size, steps=steps, seed=opts.seed,
                                    precision=opts.precision,
                                    init=None if start is None else start[i:i + batch],
                                    on_step=lambda _s, _l, n=len(target[i:i + batch]): advance(n))
                    for i in range(0, len(x), batch)]).cpu()
    if single:
        save_image(recons[layers[0]][0], path)
    else:
        cells = list(x) + [r for l in layers for r in recons[l]]
        grid = make_grid(cells, ncols=len(names), captions=names + [l for l in layers for _ in names],
                         row_labels=["input"] + layers)
        save_image(grid, path)
    if str(path) == "-":
        return
    if opts.json:
        print_json({"output": str(path), "images": names, "layers": layers, "method": method,
                    "refine": refine, **({"init": init} if method == "optimize" else {})})
    else:
        typer.echo(str(path))
