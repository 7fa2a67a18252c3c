"""Evidence records: how an output was made, written into every PNG (a text chunk named
`deepsim`) and beside every GIF (`NAME.gif.json`), and printed by `deepsim info FILE`.

A record holds the command line (argv) and every resolved option of the command, the seed,
device and precision, the deepsim / torch / torchvision / Python versions, each weight file used
(path and sha256), and the figures the command printed (`note()`). Running the recorded argv again
reproduces the image (same pixels; tests/test_everyday.py checks it).

The CLI opens a record per command (`begin`); the library writers (images.save_image / figures.save_gif)
embed the current one, so library users get none unless they call `begin` themselves. No torch at
import.
"""

from __future__ import annotations

import contextvars
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

KEY = "deepsim"        # PNG text-chunk keyword
SIDECAR = ".json"      # GIF record: NAME.gif.json

#: the command line of this process's deepsim command (set by the CLI's root group)
ARGV: list[str] = []

_CURRENT: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("deepsim_record", default=None)


def begin(argv: list[str], command: str, params: dict[str, Any], **fields: Any) -> dict:
    """Open the record of one command run (replacing any previous one) and return it."""
    from . import __version__
    versions = {"deepsim": __version__, "python": platform.python_version()}
    for mod in ("torch", "torchvision"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = getattr(m, "__version__", "?")
    rec = {"argv": ["deepsim", *argv], "command": command,
           "options": {k: _plain(v) for k, v in params.items()}, **{k: _plain(v) for k, v in fields.items()},
           "versions": versions, "weights": {}, "results": {}}
    _CURRENT.set(rec)
    return rec


def current() -> Optional[dict]:
    """The open record (None outside a CLI command)."""
    rec = _CURRENT.get()
    if rec is not None:  # torch is imported after begin() in most commands
        for mod in ("torch", "torchvision"):
            m = sys.modules.get(mod)
            if m is not None:
                rec["versions"].setdefault(mod, getattr(m, "__version__", "?"))
    return rec


def end() -> None:
    """Close the current command's record (outputs written after this carry none)."""
    _CURRENT.set(None)


def add_weights(role: str, path: os.PathLike | str | None, sha256: str | None) -> None:
    """Note a weight file the command used (role: e.g. 'encoder alexnet', 'generator pool5')."""
    rec = _CURRENT.get()
    if rec is not None and path:
        rec["weights"][role] = {"path": str(path), "sha256": sha256 or ""}


def set_fields(**fields: Any) -> None:
    """Top-level fields (e.g. device, precision actually used)."""
    rec = _CURRENT.get()
    if rec is not None:
        rec.update({k: _plain(v) for k, v in fields.items()})


def note(**results: Any) -> None:
    """Figures the command reports (activations, distances, metrics) for the record."""
    rec = _CURRENT.get()
    if rec is not None:
        rec["results"].update({k: _plain(v) for k, v in results.items()})


def to_json(rec: dict) -> str:
    """The record as one JSON string (keys in insertion order; unknown types as str)."""
    return json.dumps(rec, sort_keys=False, default=str)


def png_info():
    """A PIL PngInfo with the current record, or None."""
    rec = current()
    if rec is None:
        return None
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_itxt(KEY, to_json(rec))
    return info


def sidecar_path(path: os.PathLike | str) -> Path:
    """The JSON record beside an output that cannot hold one itself (a GIF): NAME.gif.json."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR)


def read(path: os.PathLike | str) -> Optional[dict]:
    """The record of an output: a PNG's `deepsim` text chunk, or a GIF's sidecar JSON. None if
    the file carries none."""
    p = Path(path)
    side = sidecar_path(p)
    if side.is_file():
        return json.loads(side.read_text())
    from PIL import Image
    with Image.open(p) as im:
        text = getattr(im, "text", None) or im.info
        raw = text.get(KEY) if hasattr(text, "get") else None
    return json.loads(raw) if raw else None


def _plain(v: Any) -> Any:
    """JSON-friendly values: paths → str, tuples → lists, everything else str() if unknown."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v)
