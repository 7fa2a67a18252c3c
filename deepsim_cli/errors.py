"""Exception types the CLI maps to exit codes (1 runtime error, 2 usage or bad input)."""


class DeepsimError(Exception):
    """A runtime failure with a one-line, user-facing message (exit code 1)."""

    exit_code = 1


class UsageError(DeepsimError):
    """Bad input from the user: a missing file, an unknown layer, a bad value (exit code 2)."""

    exit_code = 2


class WriteError(DeepsimError):
    """An output file could not be written (full disk, file too large, I/O error); exit code 1.
    Nothing is left under the file's final name."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.reason = reason
