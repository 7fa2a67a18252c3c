"""Shared pieces of the CLI: the global-options context object, Annotated option aliases,
consoles and output helpers. Nothing here imports torch, so `deepsim --help` stays fast."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console

from ..errors import UsageError
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
    no_clobber: bool = False
    strict: bool = False     # stop at the first unreadable file in a folder or tar (default: skip it)
    command: str = ""                                 # e.g. "deepsim invert", for the evidence record
    params: dict = field(default_factory=dict)        # the command's resolved options, likewise


def check_device(value: Optional[str]) -> Optional[str]:
    """Typer callback: accept auto | cpu | cuda | cuda:N (a Click usage error otherwise)."""
    if value is not None and not _DEVICE_RE.match(value):
        raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
    return value


def float_check(*, low: Optional[float] = None, high: Optional[float] = None,
                low_open: bool = False) -> Any:
    """A Typer callback for a float option: NaN, ±inf and values outside [low, high] (or (low, high]
    with low_open) are refused with a one-line usage error (exit 2), which Click's own range check
    (min=/max=) does not give (it prints a framed box and lets inf through). Torch-free."""

    def check(ctx: Any, param: Any, value: Optional[float]) -> Optional[float]:
        if value is None or (ctx is not None and getattr(ctx, "resilient_parsing", False)):
            return value
        name = param.opts[0] if param is not None and getattr(param, "opts", None) else "value"
        v = float(value)
        if not math.isfinite(v):
            raise UsageError(f"{name} must be a finite number, got {value}")
        if low is not None and (v <= low if low_open else v < low):
            raise UsageError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
        if high is not None and v > high:
            raise UsageError(f"{name} must be <= {high:g}, got {value:g}")
        return value

    return check


#: Callbacks for float options (torch-free): any finite number, >= 0, > 0, in [0, 1].
finite_float = float_check()
nonneg_float = float_check(low=0.0)
positive_float = float_check(low=0.0, low_open=True)
unit_float = float_check(low=0.0, high=1.0)

#: Upper bounds of iteration and image counts, so a typo (`--iters 1000000000000`) is a usage
#: error instead of a run that never ends; each option's help states its bound.
MAX_STEPS = 10_000        # optimisation steps: visualize --iters, invert --steps
MAX_REENCODE = 256        # reencode --iters (every iteration is kept in memory for the GIF)
MAX_FRAMES = 512          # sample --frames (GIF frames)
MAX_INTERP = 100          # interpolate --steps (one strip PNG holds every frame)
MAX_SAMPLES = 1024        # sample -n
MAX_SEEDS = 64            # visualize --seeds (all starts run as one batch)


# ------------------------------------------------------------------ option aliases
EncoderOpt = Annotated[str, typer.Option(
    "--encoder", "-e", metavar="NAME", help="Encoder to invert (see `deepsim layers`).")]
EncoderWeightsOpt = Annotated[Optional[Path], typer.Option(
    "--encoder-weights", metavar="FILE", show_default=False,
    help="Encoder weights file (.safetensors or weights-only .pth) instead of the shipped ones.")]
def lower_name(value: Optional[str]) -> Optional[str]:
    """Layer names are lower case; accept POOL5 / Pool5 as well."""
    return value.strip().lower() if isinstance(value, str) else value


LayerOpt = Annotated[str, typer.Option(
    "--layer", "-l", metavar="LAYER", callback=lower_name, help="Encoder layer (see `deepsim layers`).")]
GeneratorOpt = Annotated[Optional[Path], typer.Option(
    "--weights", "-w", metavar="FILE", show_default=False,
    help="Generator checkpoint (default: the shipped one for --encoder/--layer).")]
class _OutPath(type(Path())):  # a Path that remembers whether it was typed with a trailing '/'
    typed_as_folder = False


def _parse_out(value: str) -> Path:
    """-o PATH as a Path, except that `out/` (a folder that may not exist yet) keeps the knowledge
    of its trailing slash, which pathlib drops."""
    if isinstance(value, Path):
        return value
    p = _OutPath(value)
    p.typed_as_folder = str(value).endswith(("/", os.sep)) and str(value) != "/"
    return p


def names_a_folder(out: Optional[Path]) -> bool:
    """Whether -o names a folder: an existing one, or one typed with a trailing '/'."""
    return out is not None and (out.is_dir() or bool(getattr(out, "typed_as_folder", False)))


OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", "-o", metavar="PATH", show_default=False, parser=_parse_out,
    help="Output file or folder.")]
NoClobberOpt = Annotated[bool, typer.Option(
    "--no-clobber", help="Refuse to replace an existing output file (default: replace it, with a warning).")]
NcolsOpt = Annotated[int, typer.Option(
    "--ncols", min=1, help="Grid columns: longer rows wrap into blocks of this many images.")]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", min=1, help="Batch size.")]
MAX_REFINE = 10_000       # --refine steps (deepsim_cli.refine.MAX_REFINE_STEPS)
RefineOpt = Annotated[int, typer.Option(
    "--refine", metavar="N", min=0, max=MAX_REFINE,
    help="Refine through the generator: N gradient steps on G's input code toward the target "
         "features (plus conv3 for AlexNet), sharper and closer in features; 0 = off, 30 is a good "
         f"start (at most {MAX_REFINE}).")]


# ------------------------------------------------------------------ consoles
def err_console() -> Console:
    """Diagnostics console (stderr). Created per call so test runners that swap sys.stderr see it."""
    return Console(stderr=True, highlight=False)


class _ResultsConsole(Console):
    def on_broken_pipe(self) -> None:
        """`deepsim layers | head`: the reader has what it wanted. Rich would exit 1; point
        stdout at /dev/null (so the exit flush stays quiet) and exit 0."""
        import os
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        raise SystemExit(0)


def out_console() -> Console:
    """Results console (stdout); a closed pipe ends the command quietly with exit 0."""
    return _ResultsConsole(highlight=False)


def resolve(ctx: typer.Context, *, no_clobber: bool = False) -> GlobalOptions:
    """The global options (--device, --seed, --json, --quiet … given anywhere on the line: they
    are moved before the command, see cli.hoist_global_options) merged with a command's own
    --no-clobber, and the command's path and parameters for the evidence record."""
    g = ctx.find_object(GlobalOptions) or GlobalOptions()
    return GlobalOptions(
        device=g.device, seed=g.seed, seed_given=g.seed_given, json=g.json, debug=g.debug, quiet=g.quiet,
        precision=g.precision, no_clobber=no_clobber or g.no_clobber, strict=g.strict,
        command=ctx.command_path if ctx is not None else "",
        params=dict(ctx.params) if ctx is not None else {},
    )


def print_json(obj: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def _flags_without_type() -> None:
    """Typer's Rich help prints `<bool>` beside every on/off flag (even --help), as if it took a
    value; flags take none, so they show no type (options with an explicit metavar keep it)."""
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "_deepsim", False):
        return

    def display_type_rich(self, ctx):
        if self.is_flag and self.metavar is None:
            return None
        return original(self, ctx)
    display_type_rich._deepsim = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$", re.I)


def parse_duration(text: str) -> float:
    """'3600' | '90s' | '90m' | '1.5h' | '1d' → seconds (UsageError naming --time-limit otherwise)."""
    import math

    from ..errors import UsageError

    m = _DURATION.match(text)
    if not m:
        raise UsageError(f"--time-limit {text!r} is not a duration (e.g. 3600, 90m, 2h)")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()]
    if not math.isfinite(seconds):  # 400 digits parse as inf
        raise UsageError(f"--time-limit {text!r} is too long")
    return seconds
