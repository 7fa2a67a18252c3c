"""Checks of input paths before anything opens them (torch-free, so the CLI can run them before
torch loads): only regular files, folders and standard input ('-') are inputs. A FIFO, socket or
device would block a reader forever (or stream without end), and a symbolic-link loop would
surface as an OSError or RuntimeError deep inside pathlib; each gets one usage-error line."""

from __future__ import annotations

import errno
import os
import stat
from typing import Literal

from .errors import UsageError

__all__ = ["check_input"]

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_input(path: str | os.PathLike, *, what: str = "input", folder_ok: bool = True,
                error: type[UsageError] = UsageError) -> Literal["stdin", "file", "folder"]:
    """Classify an input path, refusing anything but a regular file, a folder (if `folder_ok`) or '-'.

    Args:
        path: The path as the user gave it.
        what: How the not-found message names it ("input" → "input not found: PATH").
        folder_ok: False where one image file is expected.
        error: The UsageError subclass to raise (e.g. images.ImageError).

    Returns:
        "stdin", "file" or "folder".

    Raises:
        error: Missing (or a dangling symbolic link), a symbolic-link loop, a folder where a file is
            expected, a FIFO / socket / device, or unreadable metadata; always one line.
    """
    s = os.fspath(path)
    if s == "-":
        return "stdin"
    try:
        st = os.stat(s)  # follows symbolic links: a link to a FIFO is a FIFO
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise error(f"cannot read {what} {s}: symbolic link loop") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            broken = " (a symbolic link to a missing target)" if os.path.lexists(s) else ""
            raise error(f"{what} not found: {s}{broken}") from None
        raise error(f"cannot read {what} {s}: {e.strerror or e}") from None
    except ValueError as e:  # an embedded NUL byte
        raise error(f"{what} {s!r}: {e}") from None
    if stat.S_ISDIR(st.st_mode):
        if not folder_ok:
            raise error(f"{s} is a directory, not an image file; give one image")
        return "folder"
    if stat.S_ISREG(st.st_mode):
        return "file"
    kind = next((k for test, k in _SPECIAL if test(st.st_mode)), "a special file")
    wanted = "an image file, a folder or a tar file" if folder_ok else "an image file"
    raise error(f"cannot read {what} {s}: it is {kind}, not a regular file; give {wanted}")
