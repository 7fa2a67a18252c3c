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


#: torch's generators take seeds in [-2**63, 2**64) (a negative one counts modulo 2**64).
_TORCH_SEED_RANGE = 2**64


def rng_seed(seed: int) -> int:
    """`seed` reduced to what torch.manual_seed / Generator.manual_seed accept, so any integer a user
    types works (torch raises "Overflow when unpacking long long" outside [-2**63, 2**64)). Every
    seed torch already accepted maps to one that draws the same numbers (torch reads a negative
    seed modulo 2**64 too), so earlier results stay reproducible."""
    return int(seed) % _TORCH_SEED_RANGE


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer (any size)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(rng_seed(seed))
