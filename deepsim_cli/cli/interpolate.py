"""`deepsim interpolate`: decode features interpolated between two images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (check_suffix, claim_output, load_encoder, load_gen, output_path, precheck, progress_bar,
                      read_inputs, result_name, say, setup)
from ._options import (MAX_INTERP, EncoderOpt, EncoderWeightsOpt, GeneratorOpt, LayerOpt, NoClobberOpt, OutOpt,
                       RefineOpt, print_json, resolve)


def interpolate(
    ctx: typer.Context,
    image_a: Annotated[Path, typer.Argument(metavar="A", show_default=False, help="First image.")],
    image_b: Annotated[Path, typer.Argument(metavar="B", show_default=False, help="Second image.")],
    layer: LayerOpt = "pool5",
    encoder: EncoderOpt = "alexnet",
    encoder_weights: EncoderWeightsOpt = None,
    weights: GeneratorOpt = None,
    steps: Annotated[int, typer.Option("--steps", "-n", min=2, max=MAX_INTERP,
                                       help=f"Frames, both ends included (at most {MAX_INTERP}).")] = 10,
    use_slerp: Annotated[bool, typer.Option("--slerp", help="Spherical instead of linear interpolation.")] = False,
    pingpong: Annotated[bool, typer.Option("--pingpong", help="GIF plays forward then backward.")] = False,
    frame_ms: Annotated[int, typer.Option("--frame-ms", min=10, help="GIF frame duration.")] = 150,
    refine: RefineOpt = 0,
    out: OutOpt = None,
    no_clobber: NoClobberOpt = False,
) -> None:
    """Interpolate between two images in feature space and decode every step (paper Fig. 7).

    Writes a strip PNG (the two inputs at the ends) and a GIF beside it.

    [bold]Examples[/bold]

      deepsim interpolate examples/images/chelsea.jpg examples/images/coffee.jpg --steps 10

      deepsim interpolate a.jpg b.jpg --layer pool5 --slerp --pingpong -o morph.png
    """
    precheck([], encoder, [layer], single=[image_a, image_b])  # answers typos before torch loads
    from ..figures import make_grid, save_gif
    from ..images import save_image
    from ..inference import interpolate as lib_interpolate
    from ..utils import all_or_nothing

    opts = resolve(ctx, no_clobber=no_clobber)
    dev = setup(opts)
    enc = load_encoder(encoder, encoder_weights, dev)
    enc, gen = load_gen(enc, layer, weights, dev, follow=encoder_weights is None)
    xa, na = read_inputs([image_a], gen.image_size)
    xb, nb = read_inputs([image_b], gen.image_size)
    path = output_path(out, result_name(na[0], nb[0], layer, "slerp" if use_slerp else "",
                                        f"refine{refine}" if refine else "") + ".png", opts)
    check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    if str(path) != "-":
        claim_output(opts, path.with_suffix(".gif"))
    say(opts, f"interpolating {na[0]} → {nb[0]} in {encoder}:{layer}, {steps} steps")
    with progress_bar(opts, refine * steps, "refining frames") as advance:
        frames = lib_interpolate(xa, xb, enc, gen, steps, use_slerp, precision=opts.precision,
                                 refine_steps=refine, on_step=advance).cpu()
    cells = [xa[0]] + list(frames) + [xb[0]]
    caps = [na[0]] + [f"t={i / (steps - 1):.2f}" for i in range(steps)] + [nb[0]]
    outputs = {"strip": str(path)}
    with all_or_nothing():  # the strip and the GIF, or neither
        save_image(make_grid(cells, ncols=len(cells), captions=caps), path)
        if str(path) != "-":
            gpath = path.with_suffix(".gif")
            save_gif(list(frames), gpath, duration_ms=frame_ms, pingpong=pingpong)
            outputs["gif"] = str(gpath)
    if str(path) != "-":
        if opts.json:
            print_json({**outputs, "layer": layer, "steps": steps, "slerp": use_slerp, "refine": refine})
        else:
            for v in outputs.values():
                typer.echo(v)
