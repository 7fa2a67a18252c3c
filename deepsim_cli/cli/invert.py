"""`deepsim invert`: reconstruct images from their features with a trained generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from ._common import (batch_stem, check_suffix, claim_output, load_encoder, load_gen, output_path, parse_layers,
                      precheck, progress_bar, read_inputs, result_name, say, setup, unique_stems)
from .invert_codes import check_code_suffix, invert_codes
from ._options import (names_a_folder, MAX_STEPS, BatchOpt, EncoderOpt, EncoderWeightsOpt, GeneratorOpt, NcolsOpt,
                       NoClobberOpt, OutOpt, RefineOpt, print_json, resolve)


def invert(
    ctx: typer.Context,
    images: Annotated[Optional[list[Path]], typer.Argument(
        show_default=False,
        help="Image files or folders ('-' reads one image from stdin); none with --code.")] = None,
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
    save_code: Annotated[Optional[Path], typer.Option(
        "--save-code", metavar="FILE.safetensors", show_default=False,
        help="Also save the code each reconstruction was decoded from (the layer's features, or the "
             "refined code with --refine), one tensor per layer; `--code FILE` decodes it again.")] = None,
    code: Annotated[Optional[Path], typer.Option(
        "--code", metavar="FILE.safetensors", show_default=False,
        help="Decode codes saved by --save-code (or by visualize --save-code) instead of encoding images; "
             "the layer comes from the file.")] = None,
    out: OutOpt = None,
    outdir: Annotated[Optional[Path], typer.Option(
        "--outdir", metavar="DIR", show_default=False,
        help="One file per input and layer in DIR (<name>-<layer>.png) instead of one grid; "
             "also what -o does when it names an existing folder or ends in '/'.")] = None,
    ncols: NcolsOpt = 8,
    no_clobber: NoClobberOpt = False,
    size: Annotated[int, typer.Option("--size", min=16,
                                      help="Output side for --method optimize.")] = 128,
    steps: Annotated[int, typer.Option("--steps", min=1, max=MAX_STEPS,
                                       help=f"Iterations for --method optimize (at most {MAX_STEPS}).")] = 200,
    batch: BatchOpt = 32,
) -> None:
    """Reconstruct images from what an encoder layer keeps of them.

    One image and one layer → the reconstruction (default <name>-<layer>.png); several images
    or layers → a grid with the originals on top and one row of reconstructions per layer,
    wrapping every --ncols images (default name from the inputs, layers, method and
    refinement); --outdir DIR → one file per image and layer. The output paths are printed on
    stdout ('-o -' writes the PNG to stdout instead).

    [bold]Examples[/bold]

      deepsim invert examples/images/chelsea.jpg --layer pool5

      deepsim invert examples/images/ --layer pool5 -o recon.png

      deepsim invert examples/images/chelsea.jpg --layer fc6 --refine 30

      deepsim invert photos/ --layer fc6 --outdir recon/

      deepsim invert chelsea.jpg --layer conv3 --method optimize --steps 300

      deepsim invert chelsea.jpg --layer fc6 --refine 30 --save-code chelsea-fc6.safetensors

      deepsim invert --code chelsea-fc6.safetensors -o again.png
    """
    from ..errors import UsageError
    if code is not None:
        if images:
            raise UsageError("give images or --code FILE (saved codes), not both")
        if method != "generator":
            raise UsageError("--code decodes saved codes with a generator: use --method generator")
        precheck([code], encoder)
        check_code_suffix(save_code)
        return invert_codes(ctx, code, encoder, encoder_weights, weights, refine, out, ncols, no_clobber,
                            batch, save_code)
    if not images:
        raise UsageError("no input images: give image files or folders (or --code FILE)")
    if save_code is not None and method != "generator":
        raise UsageError("--save-code saves a generator's input code: use it with --method generator")
    if method == "optimize" and refine:
        raise UsageError("--refine refines a generator's output: use it with --method generator "
                         "(or --method optimize --init generator)")
    check_code_suffix(save_code)
    layers = parse_layers(layer)
    if weights is not None and len(layers) > 1:
        raise UsageError("--weights names one generator: pass a single --layer with it")
    precheck(images, encoder, layers)  # answers typos before torch loads

    from ..codes import write_codes
    from ..figures import inversion_grid
    from ..images import save_image
    from ..reconstruct import reconstruct, work_per_image
    from ..utils import all_or_nothing

    opts = resolve(ctx, no_clobber=no_clobber)
    dev = setup(opts)
    enc = load_encoder(encoder, encoder_weights, dev)
    enc.check_layers(layers)
    gens = ({l: load_gen(enc, l, weights, dev) for l in layers}
            if method == "generator" or init == "generator" else {})
    out_size = next(iter(gens.values())).image_size if gens else size
    x, names = read_inputs(images, out_size)
    single = len(names) == 1 and len(layers) == 1
    from_gen = method == "optimize" and init == "generator"
    how_tag = result_name("optimize" if method == "optimize" else "", "from-generator" if from_gen else "",
                          f"refine{refine}" if refine else "")
    if outdir is None and names_a_folder(out):
        outdir, out = out, None
    files = _plan_outdir(opts, outdir, out, names, layers, how_tag) if outdir is not None else {}
    if outdir is None:
        stem = names[0] if len(names) == 1 else batch_stem(images, names)
        path = output_path(out, f"{result_name(stem, *layers, how_tag)}.png" if len(names) == 1
                           else f"{result_name('invert', stem, *layers, how_tag)}.png", opts)
        check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    if save_code is not None:
        claim_output(opts, save_code)
    recons, codes = {}, {}
    work = work_per_image(method, refine, steps)
    for l in layers:
        say(opts, f"inverting {len(names)} image(s) from {encoder}:{l} ({method}"
                  f"{' from the generator' if from_gen else ''}{f', refined {refine} steps' if refine else ''})")
        with progress_bar(opts, work * len(x), f"{'refining' if refine else 'optimising'} {l}") \
                as advance:
            r = reconstruct(x, enc, l, gen=gens.get(l), method=method, refine=refine, init=init, steps=steps,
                            size=size, batch=batch, seed=opts.seed, precision=opts.precision,
                            want_codes=save_code is not None, on_progress=advance if work else None)
        recons[l], codes[l] = r.images, r.codes
    with all_or_nothing():  # every file, or none (a full disk, a non-finite result)
        if files:
            outdir.mkdir(parents=True, exist_ok=True)
            for (l, i), f in files.items():
                save_image(recons[l][i], f)
        else:
            save_image(recons[layers[0]][0] if single else inversion_grid(x, recons, names, ncols), path)
        if save_code is not None:
            write_codes(save_code, codes, enc, names, refine)
    written = [str(f) for f in files.values()] if files else [str(path)]
    if save_code is not None:
        say(opts, f"codes: {save_code}")
    if not files and str(path) == "-":
        return
    if opts.json:
        print_json({"output": str(outdir) if files else written[0], "outputs": written, "images": names,
                    "layers": layers, "method": method, "refine": refine,
                    **({"code": str(save_code)} if save_code is not None else {}),
                    **({"init": init} if method == "optimize" else {})})
    else:
        for w in written:
            typer.echo(w)


def _plan_outdir(opts, outdir: Path, out: Optional[Path], names: list[str], layers: list[str],
                 how_tag: str) -> dict[tuple[str, int], Path]:
    """--outdir: one claimed file per (layer, image index)."""
    from ..errors import UsageError
    if out is not None:
        raise UsageError("give -o FILE (one grid) or --outdir DIR (one file per image), not both")
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"--outdir {outdir} is a file, not a folder")
    return {(l, i): claim_output(opts, outdir / f"{result_name(stem, l, how_tag)}.png")
            for l in layers for i, stem in enumerate(unique_stems(names))}
