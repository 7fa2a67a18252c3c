"""Shared pieces of the CLI: the global-options context object, Annotated option aliases,
consoles and output helpers. Nothing here imports torch, so `deepsim --help` stays fast."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console

from ..loss_weights import LOSS_PRESETS
from ..precision import PRECISIONS

# choices straight from the torch-free registries, so `--help` never imports torch
LossChoice = Literal[tuple(LOSS_PRESETS)]  # type: ignore[valid-type]
PrecisionChoice = Literal[PRECISIONS]  # type: ignore[valid-type]
ModelChoice = Literal["inverter", "vae"]

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass
class GlobalOptions:
    """What the top-level callback parsed; commands read it through `resolve()`."""

    device: str = "auto"
    seed: int = 0
    seed_given: bool = False
    json: bool = False
    debug: bool = False
    quiet: bool = False
    precision: str = "auto"


def check_device(value: Optional[str]) -> Optional[str]:
    """Typer callback: accept auto | cpu | cuda | cuda:N (a Click usage error otherwise)."""
    if value is not None and not _DEVICE_RE.match(value):
        raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
    return value


# ------------------------------------------------------------------ option aliases
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", metavar="auto|cpu|cuda[:N]", callback=check_device, show_default=False,
    help="Compute device (overrides the global --device; default auto = CUDA when present).")]
SeedOpt = Annotated[Optional[int], typer.Option(
    "--seed", show_default=False, help="Random seed (overrides the global --seed; default 0).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]
EncoderOpt = Annotated[str, typer.Option(
    "--encoder", "-e", metavar="NAME", help="Encoder to invert (see `deepsim layers`).")]
EncoderWeightsOpt = Annotated[Optional[Path], typer.Option(
    "--encoder-weights", metavar="FILE", show_default=False,
    help="Encoder weights file (.safetensors or weights-only .pth) instead of the shipped ones.")]
LayerOpt = Annotated[str, typer.Option(
    "--layer", "-l", metavar="LAYER", help="Encoder layer (see `deepsim layers`).")]
GeneratorOpt = Annotated[Optional[Path], typer.Option(
    "--weights", "-w", metavar="FILE", show_default=False,
    help="Generator checkpoint (default: the shipped one for --encoder/--layer).")]
OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", "-o", metavar="PATH", show_default=False, help="Output file or folder.")]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", min=1, help="Batch size.")]


# ------------------------------------------------------------------ consoles
def err_console() -> Console:
    """Diagnostics console (stderr). Created per call so test runners that swap sys.stderr see it."""
    return Console(stderr=True, highlight=False)


def out_console() -> Console:
    """Results console (stdout)."""
    return Console(highlight=False)


def resolve(ctx: typer.Context, *, json_out: bool = False, device: Optional[str] = None,
            seed: Optional[int] = None, quiet: bool = False) -> GlobalOptions:
    """Merge a command's own --json/--device/--seed/--quiet with the global ones."""
    g = ctx.find_object(GlobalOptions) or GlobalOptions()
    return GlobalOptions(
        device=device if device is not None else g.device,
        seed=seed if seed is not None else g.seed,
        seed_given=seed is not None or g.seed_given,
        json=json_out or g.json,
        debug=g.debug,
        quiet=quiet or g.quiet,
        precision=g.precision,
    )


def print_json(obj: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
