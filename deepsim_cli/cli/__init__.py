"""The `deepsim` command line: a thin Typer layer over the library.

Each command lives in its own module and only parses, validates, calls the library and
reports. Errors become one line on stderr and an exit code: 1 runtime error, 2 usage or bad
input, 130 interrupted (the full traceback only with --debug).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Annotated, Any, NoReturn, Optional

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import DeepsimError
from . import (distill, eval as eval_cmd, info, interpolate, invert, layers, neighbors, reencode, sample,
               train, visualize, weights)
from ._options import GlobalOptions, PrecisionChoice, check_device, err_console

# Typer and Click signal exits and usage errors with exceptions; they must pass through untouched
# so that `--help` and `typer.Exit` behave as usual. Click's own usage errors (a value out of range,
# an unknown option or command) are reported in our one-line style instead (see _usage_error).
_PASSTHROUGH: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort) + tuple(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_CLICK_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE


def _silence_broken_pipe() -> int:
    # `deepsim … | head`: the reader went away; Python would complain again at exit when it
    # flushes stdout, so point stdout at /dev/null (the recipe in Python's signal docs)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 0  # the reader had what it wanted (`| head`): not an error


_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _flush_stdout(debug: bool) -> int:
    """Flush stdout before exit: results still buffered there (stdout on a full disk) must fail with
    one line and exit 1, not Python's 'Exception ignored' text at shutdown."""
    try:
        sys.stdout.flush()
    except OSError as e:
        if _is_broken_pipe(e):
            return _silence_broken_pipe()
        code = report_error(e, debug)
        _silence_broken_pipe()  # nothing more can reach it; keep Python's exit flush quiet
        return code
    except ValueError:  # closed
        pass
    return 0


_AS_PROGRAM = False  # set by main(): the process ends with this command (not CliRunner in a test)


def _ignore_sigint() -> None:
    """Ignore further Ctrl-Cs while a `deepsim` process exits after an interrupt (130). Only as a
    program: a library caller or a test runner keeps its own SIGINT handling."""
    import signal
    import threading
    if _AS_PROGRAM and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def report_error(exc: BaseException, debug: bool) -> int:
    """Print the one-line diagnostic for `exc` (plus the traceback with --debug); return the exit code."""
    con = err_console()
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        _ignore_sigint()  # on the way out with 130: a second Ctrl-C must not kill it by signal
        con.print("error: interrupted", markup=False, soft_wrap=True)
        return 130
    if isinstance(exc, DeepsimError):
        msg = " ".join(str(exc).split()) or type(exc).__name__
        con.print(f"error: {msg}", markup=False, soft_wrap=True)
        return int(getattr(exc, "exit_code", 1))
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS and not exc.filename:
        # file outputs report their own name (WriteError); what is left is stdout on a full disk
        con.print(f"error: cannot write standard output: {exc.strerror}", markup=False, soft_wrap=True)
        return 1
    msg = " ".join(str(exc).split())
    hint = "" if debug else " (run with --debug for the traceback)"
    con.print(f"error: {type(exc).__name__}: {msg}{hint}", markup=False, soft_wrap=True)
    return 1


def _usage_error(exc: Exception) -> "typer.Exit":
    """Print Click's usage error (bad option value, unknown option or command) as our one line,
    `error: MESSAGE (see deepsim COMMAND --help)`, instead of Click's framed usage box; exit 2."""
    ctx = getattr(exc, "ctx", None)
    where = getattr(ctx, "command_path", "") or "deepsim"
    msg = " ".join(exc.format_message().split()) or type(exc).__name__
    err_console().print(f"error: {msg} (see {where} --help)", markup=False, soft_wrap=True)
    return typer.Exit(int(getattr(exc, "exit_code", 2) or 2))


def _is_help_request(exc: BaseException) -> bool:
    # `deepsim` alone shows the help (Click signals it with a UsageError subclass): keep it
    return type(exc).__name__ == "NoArgsIsHelpError"


class DeepsimGroup(TyperGroup):
    """Maps library exceptions to one-line errors and exit codes inside Click's own main loop,
    so `deepsim …`, `python -m deepsim_cli …` and Typer's CliRunner all behave the same."""

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        # usage errors in the global options (`deepsim --device tpu …`) surface here
        if parent is None:  # the whole command line, for the evidence record of every output
            from .. import provenance
            provenance.ARGV = list(args)
            args = hoist_global_options(list(args))
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _CLICK_USAGE_ERROR as e:
            if _is_help_request(e):
                raise
            raise _usage_error(e) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _CLICK_USAGE_ERROR as e:  # a command's options, or an unknown command
            if _is_help_request(e):
                raise
            raise _usage_error(e) from None
        except _PASSTHROUGH:
            raise
        except (Exception, KeyboardInterrupt) as e:
            if _is_broken_pipe(e):  # `deepsim layers | head`: quiet, exit 0
                raise typer.Exit(_silence_broken_pipe()) from None
            code = report_error(e, _debug_flag(ctx))
            raise typer.Exit(code) from None


def _debug_flag(ctx: Any) -> bool:
    obj = ctx.find_object(GlobalOptions)
    if obj is not None:
        return obj.debug
    return bool(ctx.params.get("debug"))


app = typer.Typer(
    name="deepsim",
    cls=DeepsimGroup,
    help="Invert and visualize what CNN layers encode (DeePSiM generators, DGN-AM).\n\n"
         "Results go to stdout, progress and diagnostics to stderr. Exit codes: 0 ok, "
         "1 runtime error, 2 usage or bad input, 130 interrupted.",
    epilog="Start with [bold]deepsim layers[/bold] to see the encoders and their layers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(ctx: typer.Context, value: bool) -> None:
    """--version: deepsim, torch, the device and precision `auto` resolves to, the weights folder
    (as JSON with `deepsim --json --version`)."""
    if not value:
        return
    import torch

    from ..encoders import weights_dir
    from ..precision import cpu_bf16_feature, describe
    from ..utils import resolve_device

    dev = resolve_device("auto")
    info = {"deepsim": __version__, "torch": torch.__version__, "device": str(dev),
            "precision": describe(dev), "cpu_bf16": cpu_bf16_feature(), "weights": str(weights_dir())}
    if ctx.params.get("json_out"):
        from ._options import print_json
        print_json(info)
    else:
        typer.echo(f"deepsim {__version__} (torch {torch.__version__}, device {dev}, "
                   f"precision {info['precision']}, weights {info['weights']})")
    raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(
        "--device", metavar="auto|cpu|cuda[:N]", callback=check_device,
        help="Compute device; auto = CUDA when present.")] = "auto",
    seed: Annotated[Optional[int], typer.Option(
        "--seed", show_default=False,
        help="Seed for everything random (recorded with results). [dim]\\[default: 0][/dim]")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")] = False,
    precision: Annotated[PrecisionChoice, typer.Option(
        "--precision", help="Model arithmetic: auto = bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16 "
                            "(several times faster there), fp32 elsewhere; `deepsim --version` says which.")] = "auto",
    no_clobber: Annotated[bool, typer.Option(
        "--no-clobber", help="Never replace an existing output file (every command).")] = False,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Stop at the first unreadable file in a folder or tar (default: skip it with a "
                         "warning line, then a count; fail only when none is readable). Also after the command.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, help="Print the version, torch, device and precision, and exit.")] = False,
) -> None:
    ctx.obj = GlobalOptions(device=device, seed=0 if seed is None else seed, seed_given=seed is not None,
                            json=json_out, debug=debug, quiet=quiet,
                            precision=precision, no_clobber=no_clobber, strict=strict)
    from ..unreadable import set_strict  # torch-free; every loader of many images reads it
    set_strict(strict)
    ctx.call_on_close(lambda: set_strict(False))
    from .. import provenance  # torch-free; the record of this command ends with it
    ctx.call_on_close(provenance.end)


def unwrap_help(text: str | None) -> str | None:
    """A docstring's hard-wrapped prose joined into one line per paragraph, so that Rich wraps the
    help to the terminal instead of breaking sentences where the source lines end. Indented lines
    (examples) and list items ("- ") stay lines of their own; blank lines still part paragraphs."""
    if not text:
        return text
    import inspect
    out: list[str] = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for ln in para.splitlines():
            keep = not lines or ln.startswith((" ", "\t", "- ", "* ", "[")) or lines[-1].startswith((" ", "\t"))
            if keep:
                lines.append(ln)
            else:
                lines[-1] = f"{lines[-1]} {ln.strip()}"
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _command(func):
    """Register-ready `func` with its help unwrapped (see unwrap_help)."""
    func.__doc__ = unwrap_help(func.__doc__)
    return func


GLOBAL_EPILOG = ("Global options may also follow the command: --device, --seed, --json, --quiet, --precision, "
                 "--strict, --debug (see deepsim --help).")
_MAIN = "Main commands"
_TOOLS = "Training and evaluation"
_INFO = "Information"

app.command("invert", rich_help_panel=_MAIN, epilog=GLOBAL_EPILOG)(_command(invert.invert))
app.command("reencode", rich_help_panel=_MAIN, epilog=GLOBAL_EPILOG)(_command(reencode.reencode))
app.command("interpolate", rich_help_panel=_MAIN, epilog=GLOBAL_EPILOG)(_command(interpolate.interpolate))
app.command("sample", rich_help_panel=_MAIN, epilog=GLOBAL_EPILOG)(_command(sample.sample))
app.command("visualize", rich_help_panel=_MAIN, epilog=GLOBAL_EPILOG)(_command(visualize.visualize))
app.command("train", rich_help_panel=_TOOLS, epilog=GLOBAL_EPILOG)(_command(train.train))
app.command("eval", rich_help_panel=_TOOLS, epilog=GLOBAL_EPILOG)(_command(eval_cmd.eval_))
app.command("neighbors", rich_help_panel=_TOOLS, epilog=GLOBAL_EPILOG)(_command(neighbors.neighbors))
app.command("distill", rich_help_panel=_TOOLS, epilog=GLOBAL_EPILOG)(_command(distill.distill))
app.command("layers", rich_help_panel=_INFO, epilog=GLOBAL_EPILOG)(_command(layers.layers))
app.command("info", rich_help_panel=_INFO, epilog=GLOBAL_EPILOG)(_command(info.info))
app.add_typer(weights.app, name="weights", rich_help_panel=_INFO)


_GLOBAL_FLAGS = ("--debug", "--strict", "--json", "--quiet", "-q")
_GLOBAL_VALUED = ("--device", "--seed", "--precision")  # global options that take a value


def hoist_global_options(args: list[str]) -> list[str]:
    """Global options are accepted anywhere on the line (`deepsim invert x.jpg --json --seed 3`):
    no command has them as its own, so they move before the command, in their order (the last
    of a repeated one wins, as Click does). `--seed 3` and `--seed=3` both work; a valued option
    left without its value stays where it is for Click to report. Arguments after `--` and
    anything before the first word that is not an option are left alone."""
    end = args.index("--") if "--" in args else len(args)
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if i < end and (a in _GLOBAL_FLAGS or a.split("=", 1)[0] in _GLOBAL_VALUED and "=" in a):
            moved.append(a)
        elif i < end and a in _GLOBAL_VALUED and i + 1 < end:
            moved += [a, args[i + 1]]
            i += 1
        else:
            rest.append(a)
        i += 1
    return moved + rest


def main(argv: Optional[list[str]] = None) -> NoReturn:
    """Console-script entry point (`deepsim`)."""
    global _AS_PROGRAM
    _AS_PROGRAM = True
    args = hoist_global_options(sys.argv[1:] if argv is None else list(argv))
    try:
        app(args=args, prog_name="deepsim")
    except SystemExit as e:
        if e.code in (0, None):
            code = _flush_stdout("--debug" in args)
            if code:
                sys.exit(code)
        raise
    except _PASSTHROUGH:
        raise
    except (Exception, KeyboardInterrupt) as e:  # anything raised outside a command's invoke
        if _is_broken_pipe(e):
            sys.exit(_silence_broken_pipe())
        sys.exit(report_error(e, "--debug" in args))
    sys.exit(0)


__all__ = ["app", "main", "report_error"]
