"""Small shared helpers: atomic file writes, device selection, seeding."""

from __future__ import annotations

import contextlib
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash or an exception inside the block leaves no half-written file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def clean_stale_temp_files(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Delete the temporary files `atomic_output` leaves when its process is killed mid-write
    (`.<name>.<random>.tmp<suffix>`); returns how many. A run folder calls this when it is
    opened again, so SIGKILLs during checkpoint writes do not pile up hundreds of MB."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in (folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")):
        if p.is_file() and _TEMP_RE.match(p.name):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp(\.[A-Za-z0-9]+)?$")


def resolve_device(name: str = "auto") -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda' | 'cuda:N' to a torch.device ('auto' = CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from .errors import UsageError

        raise UsageError("--device cuda was requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
