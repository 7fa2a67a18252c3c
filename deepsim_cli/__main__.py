"""`python -m deepsim_cli` runs the `deepsim` command line."""

from .cli import main

if __name__ == "__main__":
    main()
