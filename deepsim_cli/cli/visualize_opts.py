"""`deepsim visualize`'s options (declared once here; the command in visualize.py) and their
torch-free parsers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from ._options import MAX_SEEDS, MAX_STEPS, lower_name, nonneg_float, unit_float


def parse_xy(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    from ..errors import UsageError
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--xy takes X,Y (two integers), got {text!r}") from None
    return x, y


def chosen_units(unit: Optional[list[int]], class_name: Optional[list[str]], layer: str) -> list[int]:
    """--unit indices, then --class names resolved to ImageNet class indices (only for a classifier
    layer); UsageError when neither is given."""
    from ..errors import UsageError
    from ..visualize import resolve_class

    if class_name and layer not in ("fc8", "prob", "logits"):
        raise UsageError(f"--class names an ImageNet class, a unit of a classifier layer (fc8, prob, "
                         f"logits), not of {layer!r}; use --unit N for {layer}")
    units = list(unit or []) + [resolve_class(c) for c in (class_name or [])]
    if not units:
        raise UsageError("give --unit N or --class NAME (or --compute-bounds --data DIR)")
    return units


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


UnitOpt = Annotated[Optional[list[int]], typer.Option(
        "--unit", "-u", show_default=False, help="Unit (channel or class index) to maximise; repeatable.")]

ClassNameOpt = Annotated[Optional[list[str]], typer.Option(
        "--class", show_default=False, help="ImageNet class name instead of --unit (fuzzy); repeatable.")]

LayerOpt = Annotated[str, typer.Option("--layer", "-l", metavar="LAYER", callback=lower_name,
                                       help="Layer of the target network whose unit is maximised.")]

EncoderOpt = Annotated[str, typer.Option("--encoder", "-e", metavar="NAME",
                                         help="Target network (any encoder; the generator stays the "
                                              "AlexNet-fc6 prior).")]

CodeLayerOpt = Annotated[str, typer.Option("--code-layer", metavar="LAYER",
                                            help="AlexNet layer the generator decodes (the optimised code).")]

ItersOpt = Annotated[int, typer.Option("--iters", "--steps", min=1, max=MAX_STEPS,
                                       help=f"Optimisation steps (at most {MAX_STEPS}).")]

LrStartOpt = Annotated[float, typer.Option(
        "--lr-start", metavar="LR>=0", callback=nonneg_float,
        help="Initial step size (decays linearly). The paper's 8.0 is for Caffe's AlexNet, whose "
             "fc6 codes are much larger than this (normalised-input) AlexNet's.")]

LrEndOpt = Annotated[float, typer.Option("--lr-end", metavar="LR>=0", callback=nonneg_float,
                                          help="Final step size.")]

DecayOpt = Annotated[float, typer.Option("--decay", metavar="0..1", callback=unit_float,
                                         help="L2 decay of the code per step.")]

ObjectiveOpt = Annotated[Literal["activation", "logprob"], typer.Option(
        "--objective",
        help="Maximise the unit's raw activation (the paper) or, for a classifier layer, its log-softmax "
             "(pushes the other classes down too).")]

JitterOpt = Annotated[int, typer.Option(
        "--jitter", min=0, metavar="PX",
        help="Each step, shift the image by up to ±PX pixels (and flip it) before the target sees it "
             "(not in the paper; makes the result less specific to one pixel grid).")]

ViewsOpt = Annotated[int, typer.Option("--views", min=1,
                                       help="Randomly jittered copies averaged per step.")]

XyOpt = Annotated[Optional[str], typer.Option("--xy", metavar="X,Y", show_default=False,
                                              help="Spatial position for conv units (default: centre).")]

InitOpt = Annotated[Optional[Path], typer.Option("--init", metavar="IMG", show_default=False,
                                                 help="Start from this image's code instead of a random one.")]

SeedsOpt = Annotated[str, typer.Option(
        "--seeds", metavar="S[,S…]|A-B",
        help=f"Random starts (one grid cell each): a list 0,1,2 or a range 0-3 (at most {MAX_SEEDS}).")]

SaveEveryOpt = Annotated[int, typer.Option("--save-every", min=0,
                                            help="Write a GIF of the optimisation, a frame every K steps.")]

ComputeBoundsOpt = Annotated[bool, typer.Option(
        "--compute-bounds", help="Compute the code bounds from --data and cache them beside the generator.")]

DataOpt = Annotated[Optional[list[Path]], typer.Option(
        "--data", metavar="DIR|TAR", show_default=False,
        help="Real images for --compute-bounds (repeatable: the generator's training sets).")]

NoBoundsOpt = Annotated[bool, typer.Option("--no-bounds", help="Do not clip the code.")]

ForceOpt = Annotated[bool, typer.Option(
        "--force", help="With --compute-bounds: replace the shipped generator's bounds file.")]

SaveCodeOpt = Annotated[Optional[Path], typer.Option(
        "--save-code", metavar="FILE.safetensors", show_default=False,
        help="Also save the optimised codes (one per unit and seed); `deepsim invert --code FILE` "
             "decodes them again.")]
