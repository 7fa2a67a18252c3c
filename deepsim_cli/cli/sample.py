"""`deepsim sample`: draw images from a DeePSiM VAE."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import check_suffix, claim_output, load_vae_file, output_path, precheck, read_inputs, result_name, say, setup
from ._options import (names_a_folder, MAX_FRAMES, MAX_SAMPLES, GeneratorOpt, NcolsOpt, NoClobberOpt, OutOpt,
                       nonneg_float, print_json, resolve)


def sample(
    ctx: typer.Context,
    weights: GeneratorOpt = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=MAX_SAMPLES,
                                   help=f"How many images (at most {MAX_SAMPLES}).")] = 16,
    temperature: Annotated[float, typer.Option("--temperature", "-t", metavar="T>=0", callback=nonneg_float,
                                               help="Scale of z ~ N(0, t² I).")] = 1.0,
    from_image: Annotated[Optional[Path], typer.Option(
        "--from", metavar="IMG", show_default=False,
        help="Decode n draws from this image's posterior q(z|x) instead of the prior.")] = None,
    gif: Annotated[bool, typer.Option("--gif", help="Also write a GIF walking a random great circle in z.")] = False,
    frames: Annotated[int, typer.Option("--frames", min=2, max=MAX_FRAMES,
                                        help=f"GIF frames (at most {MAX_FRAMES}).")] = 32,
    out: OutOpt = None,
    outdir: Annotated[Optional[Path], typer.Option(
        "--outdir", metavar="DIR", show_default=False,
        help="One file per sample in DIR (samples-seed<S>-<i>.png) instead of one grid, e.g. as the "
             "queries of `deepsim neighbors DIR --data TRAIN` (the paper's memorisation check); "
             "also what -o does when it names an existing folder or ends in '/'.")] = None,
    ncols: NcolsOpt = 8,
    no_clobber: NoClobberOpt = False,
) -> None:
    """Draw new images from a DeePSiM VAE (trained with `deepsim train --model vae`).

    Samples are reproducible: sample i depends only on --seed and i.

    [bold]Examples[/bold]

      deepsim sample --weights runs/vae/generator.safetensors --n 16 --seed 0 -o grid.png

      deepsim sample --weights vae.safetensors --from examples/images/chelsea.jpg --n 8

      deepsim sample --weights vae.safetensors --gif --frames 48 --temperature 0.8

      deepsim sample --n 8 --outdir samples/ && deepsim neighbors samples/ --data train/ --space pool5
    """
    precheck(single=[from_image])  # answers typos (and a folder for --from) before torch loads
    from ..errors import UsageError
    from ..figures import make_grid, save_gif
    from ..images import save_image
    from ..inference import great_circle, posterior_samples, sample as lib_sample
    from ..utils import all_or_nothing

    if outdir is None and names_a_folder(out):
        outdir, out = out, None
    if outdir is not None:  # before any work
        if out is not None:
            raise UsageError("give -o FILE (one grid) or --outdir DIR (one file per sample), not both")
        if gif:
            raise UsageError("--gif writes one animation: use it with -o FILE, not --outdir")
        if outdir.exists() and not outdir.is_dir():
            raise UsageError(f"--outdir {outdir} is a file, not a folder")
    opts = resolve(ctx, no_clobber=no_clobber)
    dev = setup(opts)
    vae = load_vae_file(weights, dev)
    size = vae.decoder.cfg.out_size
    if from_image is not None:
        x, names = read_inputs([from_image], size)
        say(opts, f"{n} draws from the posterior of {names[0]}")
        imgs = posterior_samples(vae, x, n, seed=opts.seed, precision=opts.precision)
        cells, caps = [x[0]] + list(imgs), [names[0]] + [f"q(z|x) #{i}" for i in range(n)]
        default = f"{names[0]}-posterior.png"
    else:
        say(opts, f"{n} samples, temperature {temperature}, seed {opts.seed}")
        imgs = lib_sample(vae, n, seed=opts.seed, temperature=temperature, precision=opts.precision)
        cells, caps = list(imgs), [f"seed {opts.seed} #{i}" for i in range(n)]
        default = result_name("samples", f"seed{opts.seed}", f"t{temperature:g}" if temperature != 1 else "") + ".png"
    if outdir is not None:
        return _write_each(opts, outdir, imgs, Path(default).stem, n, temperature)
    p = output_path(out, default, opts)
    check_suffix(p, (".png", ".jpg", ".jpeg", ".webp"), "output")
    if gif and str(p) != "-":
        claim_output(opts, p.with_suffix(".gif"))
    outputs = {"grid": str(p)}
    with all_or_nothing():  # the grid and the GIF, or neither
        save_image(make_grid(cells, ncols=min(ncols, len(cells)), captions=caps), p)
        if gif and str(p) != "-":
            gp = p.with_suffix(".gif")
            save_gif(list(great_circle(vae, frames, seed=opts.seed, temperature=temperature,
                                       precision=opts.precision)), gp, duration_ms=80)
            outputs["gif"] = str(gp)
    if opts.json:
        print_json({**outputs, "n": n, "seed": opts.seed, "temperature": temperature})
    elif str(p) != "-":
        for v in outputs.values():
            typer.echo(v)


def _write_each(opts, outdir: Path, imgs, stem: str, n: int, temperature: float) -> None:
    """--outdir: every sample (or posterior draw) as its own PNG, all of them or none."""
    from ..images import save_image
    from ..utils import all_or_nothing

    width = max(3, len(str(n - 1)))
    files = [claim_output(opts, outdir / f"{stem}-{i:0{width}d}.png") for i in range(len(imgs))]
    outdir.mkdir(parents=True, exist_ok=True)
    with all_or_nothing():
        for img, f in zip(imgs, files):
            save_image(img, f)
    if opts.json:
        print_json({"outdir": str(outdir), "outputs": [str(f) for f in files], "n": n, "seed": opts.seed,
                    "temperature": temperature})
    else:
        for f in files:
            typer.echo(str(f))
