"""`deepsim invert`'s own options, declared once here (the command is in invert.py; the options
it shares with other commands are in _options.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from ._common import batch_stem, check_suffix, claim_output, output_path, result_name, unique_stems
from ._options import MAX_STEPS

ImagesOpt = Annotated[Optional[list[Path]], typer.Argument(
        show_default=False,
        help="Image files or folders ('-' reads one image from stdin); none with --code.")]

LayerOpt = Annotated[str, typer.Option(
        "--layer", "-l", metavar="LAYER[,LAYER…]",
        help="Encoder layer(s) to invert; several give the paper's Fig. 3 grid.")]

MethodOpt = Annotated[Literal["generator", "optimize"], typer.Option(
        "--method", help="generator: one forward pass of G (DeePSiM); optimize: gradient descent "
                         "on the image with a TV prior (Mahendran & Vedaldi), no generator needed.")]

InitOpt = Annotated[Literal["noise", "generator"], typer.Option(
        "--init", help="Start of --method optimize: small noise, or the generator's reconstruction "
                       "(needs a generator for the layer).")]

SaveCodeOpt = Annotated[Optional[Path], typer.Option(
        "--save-code", metavar="FILE.safetensors", show_default=False,
        help="Also save the code each reconstruction was decoded from (the layer's features, or the "
             "refined code with --refine), one tensor per layer; `--code FILE` decodes it again.")]

CodeOpt = Annotated[Optional[Path], typer.Option(
        "--code", metavar="FILE.safetensors", show_default=False,
        help="Decode codes saved by --save-code (or by visualize --save-code) instead of encoding images; "
             "the layer comes from the file.")]

OutdirOpt = Annotated[Optional[Path], typer.Option(
        "--outdir", metavar="DIR", show_default=False,
        help="One file per input and layer in DIR (<name>-<layer>.png) instead of one grid; "
             "also what -o does when it names an existing folder or ends in '/'.")]

SizeOpt = Annotated[int, typer.Option("--size", min=16,
                                      help="Output side for --method optimize.")]

StepsOpt = Annotated[int, typer.Option("--steps", min=1, max=MAX_STEPS,
                                       help=f"Iterations for --method optimize (at most {MAX_STEPS}).")]


def plan_outdir(opts, outdir: Path, out: Optional[Path], names: list[str], layers: list[str],
                 how_tag: str) -> dict[tuple[str, int], Path]:
    """--outdir: one claimed file per (layer, image index)."""
    from ..errors import UsageError
    if out is not None:
        raise UsageError("give -o FILE (one grid) or --outdir DIR (one file per image), not both")
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"--outdir {outdir} is a file, not a folder")
    return {(l, i): claim_output(opts, outdir / f"{result_name(stem, l, how_tag)}.png")
            for l in layers for i, stem in enumerate(unique_stems(names))}


def check_combination(images: Optional[list[Path]], code: Optional[Path], method: str, refine: int,
                      save_code: Optional[Path]) -> None:
    """UsageError for options that do not go together: images and --code, --code or --save-code
    without a generator, --refine with --method optimize, neither images nor --code."""
    from ..errors import UsageError
    if code is not None:
        if images:
            raise UsageError("give images or --code FILE (saved codes), not both")
        if method != "generator":
            raise UsageError("--code decodes saved codes with a generator: use --method generator")
        return
    if not images:
        raise UsageError("no input images: give image files or folders (or --code FILE)")
    if save_code is not None and method != "generator":
        raise UsageError("--save-code saves a generator's input code: use it with --method generator")
    if method == "optimize" and refine:
        raise UsageError("--refine refines a generator's output: use it with --method generator "
                         "(or --method optimize --init generator)")


def grid_path(opts, out: Optional[Path], images: list[Path], names: list[str], layers: list[str],
              how_tag: str) -> Path:
    """The one output file (claimed): -o, else <name>-<layers>[-how].png for one image, else
    invert-<inputs>-<layers>[-how].png."""
    stem = names[0] if len(names) == 1 else batch_stem(images, names)
    path = output_path(out, f"{result_name(stem, *layers, how_tag)}.png" if len(names) == 1
                       else f"{result_name('invert', stem, *layers, how_tag)}.png", opts)
    check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    return path


def write_inversions(x, recons: dict, names: list[str], ncols: int, *, files: dict, path: Optional[Path],
                     outdir: Optional[Path], save_code: Optional[Path] = None, codes: Optional[dict] = None,
                     encs: Optional[dict] = None, refine: int = 0) -> list[str]:
    """Write every output of one invert, or none (a full disk, a non-finite result): one file per
    (layer, image) in `files`, else the single reconstruction or the grid (originals `x` on top,
    one row per layer of `recons`) at `path`; plus the codes file. Returns the image paths."""
    from ..codes import write_codes
    from ..figures import inversion_grid
    from ..images import save_image
    from ..utils import all_or_nothing

    layers = list(recons)
    with all_or_nothing():
        if files:
            outdir.mkdir(parents=True, exist_ok=True)
            for (l, i), f in files.items():
                save_image(recons[l][i], f)
        elif len(names) == 1 and len(layers) == 1:
            save_image(recons[layers[0]][0], path)
        else:
            save_image(inversion_grid(x, recons, names, ncols), path)
        if save_code is not None:
            write_codes(save_code, codes, encs, names, refine)
    return [str(f) for f in files.values()] if files else [str(path)]
