"""Exception types the CLI maps to exit codes (1 runtime error, 2 usage or bad input)."""


class DeepsimError(Exception):
    """A runtime failure with a one-line, user-facing message (exit code 1)."""

    exit_code = 1


class UsageError(DeepsimError):
    """Bad input from the user: a missing file, an unknown layer, a bad value (exit code 2)."""

    exit_code = 2
