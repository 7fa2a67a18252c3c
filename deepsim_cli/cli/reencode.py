"""`deepsim reencode`: feed reconstructions back through encoder and generator, repeatedly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (check_suffix, claim_output, load_encoder, load_gen, output_path, precheck, progress_bar,
                      read_inputs, result_name, say, setup)
from ._options import (MAX_REENCODE, EncoderOpt, EncoderWeightsOpt, GeneratorOpt, LayerOpt, NoClobberOpt, OutOpt,
                       RefineOpt, print_json, resolve)


def reencode(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(show_default=False,
                                                 help="Image files or folders.")],
    layer: LayerOpt = "pool5",
    encoder: EncoderOpt = "alexnet",
    encoder_weights: EncoderWeightsOpt = None,
    weights: GeneratorOpt = None,
    iterations: Annotated[int, typer.Option("--iters", "--iterations", "-n", min=1, max=MAX_REENCODE,
                                            help=f"How many times to apply x → G(E(x)) (at most "
                                                 f"{MAX_REENCODE}).")] = 8,
    refine: RefineOpt = 0,
    out: OutOpt = None,
    no_clobber: NoClobberOpt = False,
    gif: Annotated[bool, typer.Option("--gif/--no-gif", help="Also write a GIF of every iteration "
                                                              "beside the grid.")] = True,
    frame_ms: Annotated[int, typer.Option("--frame-ms", min=10, help="GIF frame duration.")] = 400,
) -> None:
    """Apply x → G(E(x)) repeatedly and show how the images drift (paper Fig. 5).

    Writes a grid (columns: the input, then iterations 1, 2, 4, 8, … up to --iters; one row
    per image) and a GIF of every iteration; prints the relative feature-space distance
    ||E(x_i) − E(x_0)|| / ||E(x_0)|| per iteration.

    [bold]Examples[/bold]

      deepsim reencode examples/images/coffee.jpg --layer pool5 --iters 8 -o drift.png

      deepsim reencode chelsea.jpg --layer pool5 --iters 16 --json
    """
    precheck(images, encoder, [layer])  # answers typos before torch loads
    import torch

    from ..figures import make_grid, save_gif
    from ..images import save_image
    from ..inference import reencode as lib_reencode
    from ..utils import all_or_nothing

    opts = resolve(ctx, no_clobber=no_clobber)
    dev = setup(opts)
    enc = load_encoder(encoder, encoder_weights, dev)
    enc, gen = load_gen(enc, layer, weights, dev, follow=encoder_weights is None)
    x, names = read_inputs(images, gen.image_size)
    stem = names[0] if len(names) == 1 else f"{names[0]}+{len(names) - 1}"
    path = output_path(out, result_name(stem, layer, "reencode", f"refine{refine}" if refine else "") + ".png", opts)
    check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    if gif and str(path) != "-":
        claim_output(opts, path.with_suffix(".gif"))
    say(opts, f"re-encoding {len(names)} image(s) through {encoder}:{layer}, {iterations} iterations")
    with progress_bar(opts, refine * iterations * len(names), "re-encoding with refinement") as advance:
        res = lib_reencode(x, enc, gen, iterations, precision=opts.precision, refine_steps=refine, on_step=advance)
    shown = [0] + [i for i in range(1, iterations + 1) if i & (i - 1) == 0 or i == iterations]
    cells, caps = [], []
    for b in range(len(names)):
        for i in shown:
            cells.append(res.images[i][b].cpu())
            caps.append("input" if i == 0 else f"iter {i}\nd={float(res.feature_distance[i][b]):.2f}")
    outputs = {"grid": str(path)}
    from .. import provenance
    provenance.note(images=names, feature_distance=[[round(float(d[b]), 6) for d in res.feature_distance]
                                                    for b in range(len(names))])
    with all_or_nothing():  # the grid and the GIF, or neither
        save_image(make_grid(cells, ncols=len(shown), captions=caps), path)
        if gif and str(path) != "-":
            gpath = path.with_suffix(".gif")
            frames = [torch.cat(list(img.cpu()), dim=2) for img in res.images]  # images side by side
            save_gif(frames, gpath, duration_ms=frame_ms,
                     captions=["input"] + [f"iter {i}" for i in range(1, iterations + 1)])
            outputs["gif"] = str(gpath)
    dist = [[float(d[b]) for d in res.feature_distance] for b in range(len(names))]
    if opts.json:
        print_json({**outputs, "layer": layer, "images": names, "refine": refine, "feature_distance": dist})
    elif str(path) != "-":
        for n, d in zip(names, dist):
            typer.echo(f"{n}: " + " ".join(f"{v:.3f}" for v in d[1:]))
        for v in outputs.values():
            typer.echo(v)
