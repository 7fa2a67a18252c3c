"""Small shared helpers: atomic file writes, device selection, seeding."""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import WriteError


#: The outputs written inside an `all_or_nothing()` block: (temporary file, final path) pairs
#: renamed into place only when the whole block succeeds.
_PENDING: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar(
    "deepsim_pending_outputs", default=None)

_OS_ERROR_RE = re.compile(r"os error (\d+)")


def write_error(path: str | os.PathLike, exc: BaseException) -> WriteError | None:
    """The one-line WriteError for a failed write of `path`, or None if `exc` is not an I/O failure.

    OSError (ENOSPC, EFBIG, EIO, …) and the errors of writers that wrap it: safetensors
    ("… (os error 28)") and torch.save ("PytorchStreamWriter failed writing file …")."""
    if isinstance(exc, WriteError):
        return exc
    if isinstance(exc, OSError):
        return WriteError(path, exc.strerror or str(exc) or type(exc).__name__)
    text = str(exc)
    m = _OS_ERROR_RE.search(text)
    if m and type(exc).__name__ == "SafetensorError":
        return WriteError(path, os.strerror(int(m.group(1))))
    if isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text):
        return WriteError(path, "write failed (disk full or file too large?)")
    return None


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash or an exception inside the block leaves no half-written file behind; a failed write
    (full disk, file too large, I/O error) becomes one WriteError line naming `path` (exit 1).
    Inside an `all_or_nothing()` block the rename waits until that block ends.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise WriteError(path, e.strerror or str(e)) from e
    tmp_path: Path | None = Path(tmp)
    try:
        try:
            yield tmp_path
        except Exception as e:
            err = write_error(path, e)
            if err is None or err is e:
                raise
            raise err from e
        try:
            # mkstemp creates 0600 files; give the result the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            if tmp_path.exists():
                os.chmod(tmp_path, 0o666 & ~umask)
            pending = _PENDING.get()
            if pending is not None:
                pending.append((tmp_path, path))
                tmp_path = None  # all_or_nothing renames it (or removes it)
            else:
                os.replace(tmp_path, path)
        except OSError as e:
            raise WriteError(path, e.strerror or str(e)) from e
    finally:
        _remove(tmp_path)


def _remove(p: Path | None) -> None:
    if p is None:
        return
    try:
        p.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # a stale temp file of our pattern; clean_stale_temp_files removes it later


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Outputs written with `atomic_output` (save_image, save_gif, …) inside this block appear
    together when it succeeds, and none of them if anything in it fails: a command writing a
    grid and a GIF leaves both or neither. Nested blocks join the outermost one."""
    if _PENDING.get() is not None:
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            _remove(tmp)
        raise
    finally:
        _PENDING.reset(token)
    done: list[Path] = []
    for i, (tmp, final) in enumerate(pending):
        try:
            os.replace(tmp, final)
        except OSError as e:
            for p in done:  # neither: take back the ones already in place
                _remove(p)
            for t, _ in pending[i:]:
                _remove(t)
            raise WriteError(final, e.strerror or str(e)) from e
        done.append(final)


class LineLog:
    """An append-only text log (stats.jsonl): each line goes out in one unbuffered write, and a
    failed write (full disk) is truncated away, so the file never ends in half a line; the failure
    is one WriteError naming the file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._f = open(self.path, "ab", buffering=0)
        except OSError as e:
            raise WriteError(self.path, e.strerror or str(e)) from e

    def write(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode("utf-8")
        fd = self._f.fileno()
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError as e:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise WriteError(self.path, e.strerror or str(e)) from e

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "LineLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_warned: set[str] = set()


def warn(message: str) -> None:
    """One `warning: …` line on stderr, once per message and process (a problem that does not stop
    the job, e.g. an unusable cache)."""
    msg = " ".join(str(message).split())
    if msg in _warned:
        return
    _warned.add(msg)
    try:
        sys.stderr.write(f"warning: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


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


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold off Ctrl-C (SIGINT) inside the block, e.g. while the state of an interrupted run is
    saved: a second Ctrl-C then neither aborts the save nor kills the process; the previous
    handler comes back afterwards. A no-op outside the main thread, where signals cannot be set."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def cosine_lr(lr: float, step: float, total: float = 1.0) -> float:
    """The cosine schedule every optimiser here uses: lr · ½(1 + cos(π · step / total)), from lr
    at step 0 down to 0 at `total` (step is clamped to it). `total=1` takes a progress in [0, 1]."""
    import math
    return lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def set_lr(optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of `optimizer`."""
    for pg in optimizer.param_groups:
        pg["lr"] = lr
