"""`deepsim info`: the evidence record of an output (how it was made)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import out_console, print_json, resolve


def info(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(show_default=False, help="PNG or GIF files written by deepsim.")],
) -> None:
    """Show how an output was made: the command line and every option, seed, device, precision,
    versions, the weight files used (with sha256) and the figures the command printed.

    Every PNG deepsim writes carries this record in a text chunk; a GIF has it beside it as
    NAME.gif.json. Running the recorded command again reproduces the image.

    [bold]Examples[/bold]

      deepsim info chelsea-pool5.png

      deepsim info morph.gif --json
    """
    from .. import provenance
    from ..errors import UsageError
    from ..paths import check_input

    opts = resolve(ctx)
    records = {}
    for f in files:
        check_input(f, what="file")
        try:
            rec = provenance.read(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"{f}: cannot read it as an image or a record ({e})") from None
        if rec is None:
            raise UsageError(f"{f} carries no deepsim record (not written by deepsim, or re-saved by "
                             "another program)")
        records[str(f)] = rec
    if opts.json:
        print_json(records if len(records) > 1 else next(iter(records.values())))
        return
    import shlex
    con = out_console()
    for f, rec in records.items():
        con.print(f"[bold]{f}[/bold]", soft_wrap=True)
        con.print(f"  command   {shlex.join(rec.get('argv', []))}", markup=False, soft_wrap=True)
        con.print(f"  seed {rec.get('seed')} · device {rec.get('device')} · precision {rec.get('precision')}",
                  markup=False)
        con.print("  versions  " + ", ".join(f"{k} {v}" for k, v in rec.get("versions", {}).items()), markup=False,
                  soft_wrap=True)
        for role, w in rec.get("weights", {}).items():
            con.print(f"  {role}: {w['path']} (sha256 {w['sha256'][:16]}…)", markup=False, soft_wrap=True)
        for k, v in rec.get("results", {}).items():
            con.print(f"  {k}: {v}", markup=False, soft_wrap=True)
