"""Unreadable files inside a folder or tar: skipped, or (strict mode) the end of the job.

Every loader of many images (``data.load_array``, the CLI's folder inputs) decodes what it can and
reports the files it could not read as one ``warning: skipping FILE: reason`` line each (at most
:data:`MAX_WARNINGS` of them) and one ``warning: skipped N unreadable files of M`` line; only when
nothing readable is left is it an error (one line, exit 2). In strict mode (``deepsim --strict``,
or ``strict=True``) the first unreadable file stops the job instead, as one error line. A file
named on its own (not found inside a folder or tar) is always an error when it cannot be read.

Torch-free, so the CLI sets the mode before torch loads.
"""

from __future__ import annotations

import re
import sys

from .errors import UsageError

__all__ = ["MAX_WARNINGS", "Unreadable", "is_strict", "reason", "set_strict"]

#: Skipped files listed one per line; more are only counted in the summary line.
MAX_WARNINGS = 10

_strict = False


def set_strict(on: bool) -> None:
    """The process-wide default of `strict` for loaders not told otherwise (the CLI's --strict)."""
    global _strict
    _strict = bool(on)


def is_strict(strict: bool | None = None) -> bool:
    """`strict` when given, else the process-wide default."""
    return _strict if strict is None else bool(strict)


_PREFIX = re.compile(r"^cannot (?:read|decode) (?:image|training image) (?:<[^>]*>|.*?): ")


def reason(exc: BaseException, name: str | None = None) -> str:
    """Why a file could not be read, in one line and without the 'cannot read image X:' prefix."""
    msg = " ".join(str(exc).split())
    if name is not None and msg.startswith(f"cannot read image {name}: "):
        return msg[len(f"cannot read image {name}: "):] or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _PREFIX.sub("", msg, count=1) or type(exc).__name__


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Unreadable:
    """The unreadable files met while loading many images, in load order."""

    def __init__(self, strict: bool | None = None) -> None:
        self.strict = is_strict(strict)
        self.files: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.files)

    def add(self, file: str, why: str, *, skippable: bool = True) -> None:
        """Record `file`; in strict mode, or for a file that was named on its own, raise instead."""
        if self.strict or not skippable:
            raise UsageError(f"cannot read image {file}: {why}")
        self.files.append((str(file), " ".join(str(why).split())))

    def report(self, total: int, where: str) -> None:
        """After loading `total` files from `where`: the warning lines, or the error when none of
        them could be read."""
        n = len(self.files)
        if not n:
            return
        first, why = self.files[0]
        if n >= total:
            raise UsageError(f"no readable images in {where}: {_plural(n, 'file')}, none readable "
                             f"(e.g. {first}: {why})")
        lines = [f"warning: skipping {f}: {r}" for f, r in self.files[:MAX_WARNINGS]]
        more = f" ({n - MAX_WARNINGS} more not listed)" if n > MAX_WARNINGS else ""
        lines.append(f"warning: skipped {_plural(n, 'unreadable file')} of {total}{more}")
        try:
            sys.stderr.write("".join(ln + "\n" for ln in lines))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
