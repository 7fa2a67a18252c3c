"""`deepsim weights`: the shipped weight files (the package's manifest), where they are found, their
provenance and sha256 checks, and `download` / `path` subcommands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from ..weights_inventory import inventory, inventory_lines, problems, readme_hashes  # noqa: F401  (readme_hashes: tests)
from ._options import err_console, out_console, print_json, resolve

app = typer.Typer(name="weights", invoke_without_command=True, no_args_is_help=False,
                  rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def weights(
    ctx: typer.Context,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Fail (exit 1) unless every shipped file is present and its sha256 matches the manifest.")] = False,
) -> None:
    """List the weight files with size, sha256, kind and provenance; fetch them; show where they are.

    Files are looked for in [bold]DEEPSIM_WEIGHTS[/bold] (a folder that replaces the source checkout's weights/), else the checkout's weights/, then the user cache ($XDG_CACHE_HOME/deepsim/weights, default ~/.cache/deepsim/weights). Every sha256 is computed and compared with the package's manifest; with --verify any difference, unknown file or missing file is an error (exit 1).

    deepsim never downloads on its own: `deepsim weights download` fetches files into the cache (from the pinned Hugging Face repo, or [bold]DEEPSIM_WEIGHTS_URL[/bold]); with DEEPSIM_WEIGHTS_URL set, a missing file is fetched when a command needs it. DEEPSIM_OFFLINE=1 (or HF_HUB_OFFLINE=1) forbids any download.

    [bold]Examples[/bold]

      deepsim weights

      deepsim weights --verify

      deepsim weights download alexnet-pool5-generator.safetensors

      deepsim weights path alexnet-fc6-generator.safetensors
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..errors import DeepsimError

    opts = resolve(ctx)
    inv = inventory()
    bad = problems(inv) if verify else []
    if opts.json:
        print_json({**inv, "verified": (not bad) if verify else None})
    else:
        con = out_console()
        for line, markup in inventory_lines(inv):
            con.print(line, soft_wrap=True, markup=markup)
    if bad:
        con = err_console()
        for line in bad:
            con.print(line, markup=False, soft_wrap=True)
        raise DeepsimError(f"{len(bad)} weight file(s) failed verification against the manifest {inv['manifest']}")
    if verify and not opts.json:
        err_console().print(f"all {len(inv['files'])} weight files match the manifest", markup=False, soft_wrap=True)


NamesArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="[NAME]...", help="Shipped file names (see `deepsim weights`); none = every shipped file.",
    show_default=False)]


@app.command("download")
def download(ctx: typer.Context, names: NamesArg = None) -> None:
    """Fetch shipped weight files into the user cache (sha256-checked; an index brings its shards).

    Files already found (in DEEPSIM_WEIGHTS, the checkout's weights/ or the cache) with the right sha256 are not fetched again. The source is the manifest's pinned Hugging Face repo and revision, or [bold]DEEPSIM_WEIGHTS_URL[/bold] (any HTTP(S) folder that serves the files by name). Prints each file's path on stdout.

    [bold]Examples[/bold]

      deepsim weights download

      deepsim weights download alexnet-fc6-generator.safetensors alexnet-fc6-generator.bounds.safetensors
    """
    from .. import weights_store as store

    opts = resolve(ctx)

    def fetched(name: str, _path: Path) -> None:
        if not opts.quiet and not opts.json:
            err_console().print(f"{name}: {store.entry(name)['bytes']:,} bytes from {store.url_for(name)}, "
                                "sha256 verified", markup=False, soft_wrap=True)

    results = store.download(names or None, on_fetched=fetched)
    if opts.json:
        print_json({"cache": str(store.cache_dir()), "files": results})
    else:
        for r in results:
            typer.echo(r["path"])


@app.command("path")
def path(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME", help="A shipped file name.")]) -> None:
    """Print where a shipped weights file is found (exit 2 with the fetch command if it is nowhere).

    [bold]Example[/bold]

      deepsim weights path alexnet-fc6-generator.safetensors
    """
    from .. import weights_store as store

    opts = resolve(ctx)
    p = store.resolve(name)
    if opts.json:
        print_json({"file": name, "path": str(p)})
    else:
        typer.echo(str(p))
