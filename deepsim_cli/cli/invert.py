"""`deepsim invert`: reconstruct images from their features with a trained generator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from ._common import (check_suffix, claim_output, load_encoder, load_gen, output_path, parse_layers, precheck,
                      progress_bar, read_inputs, result_name, say, setup)
from ._options import (names_a_folder, MAX_STEPS, BatchOpt, DeviceOpt, EncoderOpt, EncoderWeightsOpt, GeneratorOpt, JsonOpt,
                       NcolsOpt, NoClobberOpt, OutOpt, QuietOpt, RefineOpt, SeedOpt, print_json, resolve)


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
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
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
        _check_code_suffix(save_code)
        return _invert_codes(ctx, code, encoder, encoder_weights, weights, refine, out, ncols, no_clobber,
                             batch, device, seed, json_out, quiet, save_code)
    if not images:
        raise UsageError("no input images: give image files or folders (or --code FILE)")
    if save_code is not None and method != "generator":
        raise UsageError("--save-code saves a generator's input code: use it with --method generator")
    _check_code_suffix(save_code)
    precheck(images, encoder, parse_layers(layer))  # answers typos before torch loads
    import torch

    from ..codes import write_codes
    from ..figures import make_grid
    from ..images import save_image
    from ..inference import invert as lib_invert
    from ..inference import optimize_invert
    from ..encoders import encode_batched

    opts = resolve(ctx, json_out=json_out, device=device, seed=seed, quiet=quiet, no_clobber=no_clobber)
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
    how_tag = result_name("optimize" if method == "optimize" else "",
                          "from-generator" if method == "optimize" and init == "generator" else "",
                          f"refine{refine}" if refine else "")
    if outdir is None and names_a_folder(out):
        outdir, out = out, None
    files: dict[tuple[str, int], Path] = {}
    if outdir is not None:
        if out is not None:
            from ..errors import UsageError
            raise UsageError("give -o FILE (one grid) or --outdir DIR (one file per image), not both")
        if outdir.exists() and not outdir.is_dir():
            from ..errors import UsageError
            raise UsageError(f"--outdir {outdir} is a file, not a folder")
        stems = _unique(names)
        files = {(l, i): claim_output(opts, outdir / f"{result_name(stem, l, how_tag)}.png")
                 for l in layers for i, stem in enumerate(stems)}
        path = outdir
    else:
        stem = names[0] if len(names) == 1 else _batch_name(images, names)
        path = output_path(out, f"{result_name(stem, *layers, how_tag)}.png" if single or len(names) == 1
                           else f"{result_name('invert', stem, *layers, how_tag)}.png", opts)
        check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    if save_code is not None:
        claim_output(opts, save_code)
    recons, codes = {}, {}
    for l in layers:
        how = method + (f" from the generator" if method == "optimize" and init == "generator" else "")
        say(opts, f"inverting {len(names)} image(s) from {encoder}:{l} ({how}"
                  f"{f', refined {refine} steps' if refine else ''})")
        if method == "generator" and refine:
            from ..refine import refine as lib_refine
            with progress_bar(opts, refine * len(x), f"refining {l}") as advance:
                res = lib_refine(x, enc, gens[l], refine, batch=batch, precision=opts.precision,
                                 on_step=advance)
            recons[l], codes[l] = res.images, res.codes
        elif method == "generator" and save_code is not None:
            from ..inference import decode
            codes[l] = encode_batched(enc, x, l, batch, precision=opts.precision)
            recons[l] = torch.cat([decode(gens[l], codes[l][i:i + batch], precision=opts.precision)
                                   for i in range(0, len(x), batch)]).cpu()
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
    from ..utils import all_or_nothing
    if files:
        outdir.mkdir(parents=True, exist_ok=True)
        with all_or_nothing():  # every file, or none (a full disk, a non-finite result)
            for (l, i), f in files.items():
                save_image(recons[l][i], f)
            if save_code is not None:
                write_codes(save_code, codes, enc, names, refine)
        written = [str(f) for f in files.values()]
    elif single:
        with all_or_nothing():
            save_image(recons[layers[0]][0], path)
            if save_code is not None:
                write_codes(save_code, codes, enc, names, refine)
        written = [str(path)]
    else:
        cells, caps, row_labels = [], [], []
        for b in range(0, len(names), ncols):  # blocks of ncols images: inputs, then one row per layer
            block = range(b, min(b + ncols, len(names)))
            cells += [x[i] for i in block] + [recons[l][i] for l in layers for i in block]
            caps += [names[i] for i in block] + [l for l in layers for _ in block]
            row_labels += ["input"] + layers
        grid = make_grid(_pad_blocks(cells, len(names), ncols, len(layers) + 1), ncols=min(ncols, len(names)),
                         captions=_pad_blocks(caps, len(names), ncols, len(layers) + 1, fill=""),
                         row_labels=row_labels)
        with all_or_nothing():
            save_image(grid, path)
            if save_code is not None:
                write_codes(save_code, codes, enc, names, refine)
        written = [str(path)]
    if save_code is not None:
        say(opts, f"codes: {save_code}")
    if str(path) == "-":
        return
    if opts.json:
        print_json({"output": written[0] if not files else str(outdir), "outputs": written, "images": names,
                    "layers": layers, "method": method, "refine": refine,
                    **({"code": str(save_code)} if save_code is not None else {}),
                    **({"init": init} if method == "optimize" else {})})
    else:
        for w in written:
            typer.echo(w)


def _unique(stems: list[str]) -> list[str]:
    """File stems made unique by a -2, -3 … suffix (two inputs may share a name in different folders)."""
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def _batch_name(paths: list[Path], names: list[str]) -> str:
    """A grid's default stem: the folder's name for one folder, else the first image and a count."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0]).resolve().name
    return f"{names[0]}+{len(names) - 1}"


def _pad_blocks(cells: list, n: int, ncols: int, rows: int, fill=None) -> list:
    """Cells of the wrapped grid with the last, shorter block padded to full rows."""
    if n <= ncols or n % ncols == 0:
        return cells
    full = (n // ncols) * ncols * rows
    last, short = cells[full:], n % ncols
    padded = []
    for r in range(rows):
        padded += last[r * short:(r + 1) * short] + [fill] * (ncols - short)
    return cells[:full] + padded


# ----------------------------------------------------------------------------- saved codes
# (the file format: deepsim_cli.codes)

def _check_code_suffix(path: Optional[Path]) -> None:
    if path is not None and path.suffix.lower() != ".safetensors":
        from ..errors import UsageError
        raise UsageError(f"codes are saved as safetensors: name the file *.safetensors, not {path.name}")


def _invert_codes(ctx, code, encoder, encoder_weights, weights, refine, out, ncols, no_clobber, batch, device,
                  seed, json_out, quiet, save_code) -> None:
    """`deepsim invert --code FILE`: decode saved codes (refined further with --refine)."""
    import torch

    from ..codes import read_codes, write_codes
    from ..errors import UsageError
    from ..figures import make_grid
    from ..images import save_image
    from ..inference import decode
    from ..utils import all_or_nothing

    opts = resolve(ctx, json_out=json_out, device=device, seed=seed, quiet=quiet, no_clobber=no_clobber)
    dev = setup(opts)
    codes, names, code_encoder, code_sha = read_codes(code)
    enc = load_encoder(code_encoder or encoder, encoder_weights, dev)
    if code_sha and enc.sha256 and code_sha != enc.sha256:
        from ..utils import warn
        warn(f"{code} was saved with other {enc.name} weights (sha256 {code_sha[:12]}…, these are "
             f"{enc.sha256[:12]}…): the codes may not decode as they did")
    layers = list(codes)
    enc.check_layers(layers)
    if weights is not None and len(layers) > 1:
        raise UsageError("--weights names one generator, but the code file holds several layers")
    recons, refined = {}, {}
    for l in layers:
        gen = load_gen(enc, l, weights, dev)
        want = tuple(gen.G.cfg.in_shape)
        if tuple(codes[l].shape[1:]) != want:
            raise UsageError(f"{code}: the {l} codes have shape {tuple(codes[l].shape[1:])}, "
                             f"the generator takes {want}")
        if refine:
            from ..refine import refine as lib_refine
            with progress_bar(opts, refine * len(names), f"refining {l}") as advance:
                res = lib_refine(codes[l], enc, gen, refine, batch=batch, precision=opts.precision, on_step=advance)
            recons[l], refined[l] = res.images, res.codes
        else:
            recons[l] = torch.cat([decode(gen, codes[l][i:i + batch], precision=opts.precision)
                                   for i in range(0, len(names), batch)]).cpu()
    stem = Path(code).stem
    how = f"refine{refine}" if refine else ""
    path = output_path(out, f"{result_name(stem, *layers, how)}.png", opts)
    check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    if save_code is not None:
        claim_output(opts, save_code)
    if len(names) == 1 and len(layers) == 1:
        img = recons[layers[0]][0]
    else:
        cells = [recons[l][i] for l in layers for i in range(len(names))]
        caps = [f"{names[i]}\n{l}" for l in layers for i in range(len(names))]
        cols = min(ncols, len(names))
        img = make_grid(cells, ncols=cols, captions=caps)
    with all_or_nothing():
        save_image(img, path)
        if save_code is not None:
            write_codes(save_code, refined if refine else codes, enc, names, refine)
    if str(path) == "-":
        return
    if opts.json:
        print_json({"output": str(path), "outputs": [str(path)], "images": names, "layers": layers,
                    "code": str(code), "refine": refine})
    else:
        typer.echo(str(path))
