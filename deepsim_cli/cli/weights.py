"""`deepsim weights`: the shipped weight files, their provenance and sha256 checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ._options import JsonOpt, err_console, out_console, print_json, resolve

_HEX64 = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")


def _names_token(name: str) -> re.Pattern[str]:
    # the file name as a whole token, so "alexnet.safetensors" never matches inside another name
    return re.compile(r"(?<![\w.-])" + re.escape(name) + r"(?![\w.-])")


def readme_hashes(readme: Path) -> dict[str, str]:
    """{file name: sha256} from weights/README.md.

    Table rows whose first cell is a file name win; otherwise any line that names a
    `*.safetensors` file and holds exactly one 64-hex string counts.
    """
    if not readme.is_file():
        return {}
    rows: dict[str, str] = {}
    loose: dict[str, str] = {}
    lines = readme.read_text(encoding="utf-8").splitlines()
    for line in lines:
        hexes = _HEX64.findall(line)
        if not hexes:
            continue
        s = line.strip()
        if s.startswith("|"):
            first = s.strip("|").split("|")[0].strip().strip("`").strip()
            if first.endswith(".safetensors") and first not in rows:
                rows[first] = hexes[0].lower()
                continue
        if len(hexes) == 1:
            for name in re.findall(r"[\w.-]+?\.safetensors(?![\w.-])", line):  # not NAME.safetensors.index.json
                loose.setdefault(name, hexes[0].lower())
    return {**loose, **rows}


def _provenance(meta: dict[str, str]) -> str:
    parts = []
    if meta.get("origin"):
        parts.append(meta["origin"])
    if meta.get("source_package"):
        parts.append(f"via {meta['source_package']}")
    if meta.get("teacher"):
        parts.append(f"distilled from {meta['teacher']}")
    if meta.get("conv_source"):
        parts.append(f"convs via {meta['conv_source']}")
    return "; ".join(parts)


def inventory(folder: Path | None = None) -> dict[str, Any]:
    """Describe every weights/*.safetensors: bytes, sha256 (computed), README sha256, kind, provenance.

    Files the README records a sha256 for but that are absent are listed with status "missing".
    """
    from ..checkpoint import read_metadata, sha256_file
    from ..encoders import weights_dir
    from ..errors import UsageError

    folder = Path(folder) if folder is not None else weights_dir()
    recorded = readme_hashes(folder / "README.md")
    files = []
    for path in sorted(folder.glob("*.safetensors")):
        entry: dict[str, Any] = {"file": path.name, "path": str(path), "bytes": path.stat().st_size,
                                 "sha256": sha256_file(path), "readme_sha256": recorded.get(path.name),
                                 "kind": None, "encoder": None, "provenance": "", "licence": None}
        try:
            meta = read_metadata(path)
            entry.update(kind=meta.get("kind"), encoder=meta.get("encoder") or None,
                         provenance=_provenance(meta), licence=meta.get("licence"))
        except UsageError as e:
            entry["provenance"] = f"unreadable header: {e}"
        if entry["readme_sha256"] is None:
            entry["status"] = "not in README"
        elif entry["readme_sha256"] == entry["sha256"]:
            entry["status"] = "ok"
        else:
            entry["status"] = "mismatch"
        files.append(entry)
    present = {f["file"] for f in files}
    for name, sha in sorted(recorded.items()):
        if name not in present:
            files.append({"file": name, "path": str(folder / name), "bytes": None, "sha256": None,
                          "readme_sha256": sha, "kind": None, "encoder": None, "provenance": "",
                          "licence": None, "status": "missing"})
    return {"weights_dir": str(folder), "readme": str(folder / "README.md"), "files": files}


def problems(inv: dict[str, Any]) -> list[str]:
    """One line per file that fails verification (empty when everything matches the README).
    A folder with no recorded file present (empty, or someone else's) fails as a whole."""
    out = []
    if not any(f["status"] in ("ok", "mismatch") for f in inv["files"]):
        out.append(f"{inv['weights_dir']}: none of the weight files {inv['readme']} records is here "
                   "(an empty or foreign folder?)" if any(f["status"] == "missing" for f in inv["files"])
                   else f"{inv['weights_dir']}: no recorded weight files (no {inv['readme']} with sha256 "
                   "entries, or no *.safetensors files)")
    for f in inv["files"]:
        if f["status"] == "mismatch":
            out.append(f"{f['path']}: sha256 {f['sha256']} does not match README {f['readme_sha256']}")
        elif f["status"] == "not in README":
            out.append(f"{f['path']}: no sha256 recorded for it in {inv['readme']}")
        elif f["status"] == "missing":
            out.append(f"{f['path']}: listed in {inv['readme']} (sha256 {f['readme_sha256'][:12]}…) "
                       "but the file is missing")
    return out


def weights(
    ctx: typer.Context,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Fail (exit 1) unless every file's sha256 matches weights/README.md.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List the weight files with size, sha256, kind and provenance.

    The folder is the repository's weights/ ([bold]DEEPSIM_WEIGHTS[/bold] overrides it). The sha256 of every file is computed and compared with the one recorded in weights/README.md; with --verify any difference, unrecorded file or missing file is an error (exit 1).

    [bold]Examples[/bold]

      deepsim weights

      deepsim weights --verify

      deepsim weights --json
    """
    from ..errors import DeepsimError, UsageError

    from ..encoders import weights_dir

    opts = resolve(ctx, json_out=json_out)
    folder = weights_dir()
    if not folder.is_dir():
        raise UsageError(f"weights folder not found: {folder} (set DEEPSIM_WEIGHTS to another folder)")
    inv = inventory(folder)
    bad = problems(inv) if verify else []
    if opts.json:
        print_json({**inv, "verified": (not bad) if verify else None})
    else:
        con = out_console()
        con.print(f"[bold]weights in {escape(inv['weights_dir'])}[/bold]", soft_wrap=True)
        for f in inv["files"]:
            status = {"ok": "[green]sha256 matches README[/green]",
                      "mismatch": "[red]sha256 differs from README[/red]",
                      "not in README": "[yellow]sha256 not recorded in README[/yellow]",
                      "missing": "[red]listed in README, file missing[/red]"}[f["status"]]
            size = f"{f['bytes']:,} bytes" if f["bytes"] is not None else "—"
            con.print()
            con.print(f"[bold]{escape(f['file'])}[/bold]  {escape(f['kind'] or '—')} · {size} · {status}",
                      soft_wrap=True)
            con.print(f"  sha256      {f['sha256'] or '—'}", soft_wrap=True, markup=False)
            if f["status"] == "mismatch":
                con.print(f"  README      {f['readme_sha256']}", soft_wrap=True, markup=False)
            if f["provenance"]:
                con.print(f"  provenance  {f['provenance']}", soft_wrap=True, markup=False)
    if bad:
        con = err_console()
        for line in bad:
            con.print(line, markup=False, soft_wrap=True)
        raise DeepsimError(f"{len(bad)} weight file(s) failed verification against {inv['readme']}")
    if verify and not opts.json:
        err_console().print(f"all {len(inv['files'])} weight files match {inv['readme']}",
                            markup=False, soft_wrap=True)
