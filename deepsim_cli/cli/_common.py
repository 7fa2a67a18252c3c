"""Shared plumbing of the inference commands: inputs, encoder + generator, output paths."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional, Sequence

from ._options import GlobalOptions, err_console


def precheck(inputs: Sequence[Optional[Path]] = (), encoder: Optional[str] = None,
             layers: Sequence[str] = (), *, single: Sequence[Optional[Path]] = ()) -> None:
    """Usage errors that need no torch, reported before it loads (a second or more): input
    paths that do not exist, are symbolic-link loops or FIFOs / devices (which would block a
    reader), folders given where one image is expected (`single`), layer names the encoder
    does not have."""
    from ..paths import check_input
    from ..taps import check_layer_names

    for p in inputs:
        if p is not None:
            check_input(p)
    for p in single:
        if p is not None:
            check_input(p, folder_ok=False)
    if encoder is not None:
        check_layer_names(encoder, layers)


def setup(opts: GlobalOptions):
    """Seed everything, open the evidence record of this command's outputs, return the torch device."""
    from .. import provenance
    from ..precision import resolve_precision
    from ..utils import resolve_device, seed_everything

    seed_everything(opts.seed)
    dev = resolve_device(opts.device)
    provenance.begin(provenance.ARGV, command=opts.command, params=opts.params,
                     seed=opts.seed, device=str(dev), precision=resolve_precision(opts.precision, dev))
    return dev


def load_encoder(name: str, weights: Optional[Path], device):
    from .. import provenance
    from ..encoders import build_encoder

    enc = build_encoder(name, weights, device)
    provenance.add_weights(f"encoder {name}", enc.weights_path, enc.sha256)
    return enc


def load_gen(encoder, layer: str, weights: Optional[Path], device, *, follow: bool = False):
    """(encoder, generator) for encoder:layer: --weights FILE or the shipped generator, and the
    encoder it inverts. With `follow` (the user named no --encoder-weights), a generator trained on
    other shipped weights of that encoder than `encoder`'s (an fc7 generator trained on AlexNet head
    v2, say) gets those, built once per process; otherwise other weights are a usage error."""
    from ..errors import UsageError
    from ..inference import load_generator, shipped_generator_path, trained_on

    encoder.check_layers([layer])
    path = weights if weights is not None else shipped_generator_path(layer, encoder.name)
    if not Path(path).is_file():
        if weights is not None:
            raise UsageError(f"generator file not found: {path}")
        from ..weights_store import entry, not_found_message
        if entry(Path(path).name) is not None:  # shipped, but not here: say how to fetch it
            raise UsageError(not_found_message(Path(path).name))
        from .layers import shipped_generator_layers
        shipped = shipped_generator_layers(encoder.name, list(encoder.layer_names))
        hint = " (the paper's CONV5 is pool5 here: conv5 after max-pooling)" if layer == "conv5" else ""
        raise UsageError(f"no shipped generator for {encoder.name}:{layer}{hint}; shipped: "
                         f"{', '.join(shipped) or 'none'}; `deepsim invert --method optimize` inverts any layer "
                         f"without one, or pass --weights FILE (train one with `deepsim train "
                         f"{'' if encoder.name == 'alexnet' else f'--encoder {encoder.name} '}--layer {layer} --data DIR`)")
    from .. import provenance
    if follow:
        gen = load_generator(path, device)
        key = (gen.encoder_name, gen.encoder_sha256, str(device))
        own = _ENCODERS.get(key) or trained_on(gen, encoder, device)
        if own is not encoder:
            _ENCODERS[key] = encoder = own
            provenance.add_weights(f"encoder {encoder.name} for {layer}", encoder.weights_path, encoder.sha256)
    else:
        gen = load_generator(path, device, encoder=encoder)
    from ..encoders import file_sha256
    provenance.add_weights(f"generator {encoder.name}:{layer}", path, file_sha256(path))
    if gen.layer != layer:
        raise UsageError(f"{path} inverts layer {gen.layer!r}, not {layer!r}")
    return encoder, gen


def load_gens(encoder, layers: list[str], weights: Optional[Path], device, *, follow: bool = False) -> dict:
    """{layer: (encoder, generator)} for each layer, as load_gen (parse_layers(text, weights) has
    checked that --weights comes with one layer)."""
    return {l: load_gen(encoder, l, weights, device, follow=follow) for l in layers}


def load_vae_file(weights: Optional[Path], device):
    """--weights FILE, else the shipped VAE (with the head it records); a missing file is a
    UsageError that says how to get one."""
    from ..errors import UsageError
    from ..inference import load_vae
    from ..weights_store import MissingWeights

    if weights is not None and not weights.is_file():
        raise UsageError(f"no VAE at {weights}; pass --weights FILE (train one with `deepsim train --model vae`)")
    try:
        return load_vae(weights, device)
    except MissingWeights as e:
        raise UsageError(f"no VAE: {e}; or pass --weights FILE") from None


_ENCODERS: dict = {}  # (encoder, weights sha256, device) → an Encoder load_gen(follow=True) built


def parse_layers(text: str, weights: Optional[Path] = None) -> list[str]:
    """'pool5,fc6' → ['pool5', 'fc6'] (lower case, repeats dropped); UsageError for none, or for several with
    --weights (which names one generator)."""
    from ..errors import UsageError

    layers = list(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))  # lower case, once each
    if not layers:
        raise UsageError("--layer needs at least one layer name")
    if weights is not None and len(layers) > 1:
        raise UsageError("--weights names one generator: pass a single --layer with it")
    return layers


def read_inputs(paths: Sequence[Path], size: int, *, strict: Optional[bool] = None):
    """(N, 3, size, size) in [-1, 1] and display names; directories expand, '-' is stdin.

    An unreadable file found in a folder is skipped with a warning line (then a count); it is an
    error only when no image is left, or in strict mode (`deepsim --strict`: the first one). A file
    named on the command line is always an error when it cannot be read."""
    from ..images import ImageError, list_images, load_image
    from ..paths import check_input
    from ..unreadable import Unreadable, reason

    import torch

    files: list[tuple[Path, bool]] = []  # (file, found in a folder)
    for p in paths:
        in_folder = os.fspath(p) != "-" and check_input(p, what="image file", error=ImageError) == "folder"
        files += [(f, in_folder) for f in list_images([os.fspath(p)])]
    bad = Unreadable(strict)
    xs, names = [], []
    for f, in_folder in files:
        try:
            xs.append(load_image(f, size))
        except ImageError as e:
            if not in_folder:
                raise
            bad.add(os.fspath(f), reason(e, os.fspath(f)))
            continue
        names.append("stdin" if os.fspath(f) == "-" else Path(f).stem)
    bad.report(len(files), ", ".join(os.fspath(p) for p in paths))
    return torch.stack(xs), names


def output_path(out: Optional[Path], default: str, opts: Optional[GlobalOptions] = None) -> Path:
    """--out as given, or `default` in the current directory; with `opts`, `claim_output` it."""
    path = Path(out) if out is not None else Path(default)
    return claim_output(opts, path) if opts is not None else path


def claim_output(opts: GlobalOptions, path: Path) -> Path:
    """An output about to be written: with --no-clobber an existing file is a usage error (nothing
    is computed or written), otherwise its replacement is announced with a warning line."""
    from ..errors import UsageError

    if os.fspath(path) == "-" or not path.exists():
        return path
    if path.is_dir():
        raise UsageError(f"output {path} is a folder; give a file name (or --outdir where offered)")
    if opts.no_clobber:
        raise UsageError(f"{path} exists and --no-clobber keeps it; choose another -o/--out")
    say(opts, f"warning: replacing {path}")
    return path


def result_name(*parts: object) -> str:
    """A default file stem from what changes the result: parts joined with '-', empty ones skipped."""
    return "-".join(str(p) for p in parts if p not in (None, "", False))


def check_suffix(path: Path, allowed: Sequence[str], what: str) -> None:
    from ..errors import UsageError

    if os.fspath(path) != "-" and path.suffix.lower() not in allowed:
        raise UsageError(f"{what} {path}: unsupported extension {path.suffix or '(none)'}; "
                         f"use one of {', '.join(allowed)}")


def say(opts: GlobalOptions, msg: str) -> None:
    if not opts.quiet:
        err_console().print(msg, markup=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(opts: GlobalOptions, total: int, description: str, *, plain_every: float = 10.0):
    """Progress on stderr for a long job: yields advance(n=1).

    A Rich bar (done/total, rate, ETA) on a terminal; when stderr is not a terminal (a log
    file, CI), a plain line at most every `plain_every` seconds and one at the end. Nothing
    with --quiet or --json (stdout stays the result, stderr stays clean for scripts).
    """
    if opts.quiet or opts.json or total <= 0:
        yield lambda n=1: None
        return
    console = err_console()
    if not console.is_terminal:
        import time
        state = {"done": 0, "last": time.monotonic(), "t0": time.monotonic()}

        def advance(n: int = 1) -> None:
            state["done"] += n
            now = time.monotonic()
            if now - state["last"] >= plain_every or state["done"] >= total:
                state["last"] = now
                rate = state["done"] / max(now - state["t0"], 1e-9)
                eta = (total - state["done"]) / rate if rate > 0 else float("inf")
                console.print(f"{description}: {min(state['done'], total)}/{total} "
                              f"({rate:.1f}/s, {eta:.0f} s left)", markup=False, soft_wrap=True)
        yield advance
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)


def unique_stems(stems: Sequence[str]) -> list[str]:
    """File stems made unique by a -2, -3 … suffix (two inputs may share a name in different folders)."""
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def batch_stem(paths: Sequence[Path], names: Sequence[str]) -> str:
    """A grid's default stem: the folder's name for one folder, else the first image and a count."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0]).resolve().name
    return f"{names[0]}+{len(names) - 1}"
