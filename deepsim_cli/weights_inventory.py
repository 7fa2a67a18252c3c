"""What weight files there are: every file of the package's manifest and every other weights
file in the resolver's folders, with path, bytes, computed sha256, kind, provenance and status
(`deepsim weights`), the verification problems (`deepsim weights --verify`), and the sha256
column of weights/README.md. Torch-free until a file's header is read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


def _is_weights_file(p: Path) -> bool:
    return p.is_file() and (p.name.endswith(".safetensors") or p.name.endswith(".safetensors.index.json"))


def inventory(folder: Path | None = None) -> dict[str, Any]:
    """Describe every shipped file (the manifest) and every other weights file found: where it is,
    bytes, sha256 (computed), the manifest's sha256, kind, provenance, status.

    Args:
        folder: look only there; default: the resolver's folders ($DEEPSIM_WEIGHTS or the
            checkout's weights/, then the user cache).

    Status: "ok", "mismatch", "not in manifest" (a file deepsim does not ship) or "missing".
    """
    from . import weights_store as store
    from .checkpoint import read_metadata, sha256_file
    from .errors import UsageError

    dirs = [Path(folder)] if folder is not None else store.search_dirs()
    man = store.manifest()["files"]
    found: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if _is_weights_file(p):
                    found.setdefault(p.name, p)
    files = []
    for name in list(man) + sorted(n for n in found if n not in man):
        rec = man.get(name)
        path = found.get(name)
        entry: dict[str, Any] = {"file": name, "path": str(path if path else dirs[0] / name),
                                 "bytes": None, "sha256": None,
                                 "manifest_sha256": rec["sha256"] if rec else None,
                                 "kind": rec.get("kind") if rec else None,
                                 "encoder": rec.get("encoder") if rec else None, "provenance": "",
                                 "licence": rec.get("licence") if rec else None,
                                 "url": store.url_for(name) if rec else None}
        if path is None:
            entry["status"] = "missing"
            files.append(entry)
            continue
        entry.update(bytes=path.stat().st_size, sha256=sha256_file(path))
        if name.endswith(".safetensors"):
            try:
                meta = read_metadata(path)
                entry.update(kind=meta.get("kind") or entry["kind"], encoder=meta.get("encoder") or entry["encoder"],
                             provenance=_provenance(meta), licence=meta.get("licence") or entry["licence"])
            except UsageError as e:
                entry["provenance"] = f"unreadable header: {e}"
        if rec is None:
            entry["status"] = "not in manifest"
        elif rec["sha256"] == entry["sha256"]:
            entry["status"] = "ok"
        else:
            entry["status"] = "mismatch"
        files.append(entry)
    return {"weights_dir": str(dirs[0]), "searched": [str(d) for d in dirs], "manifest": str(store.MANIFEST_PATH),
            "files": files}


def problems(inv: dict[str, Any]) -> list[str]:
    """One line per file that fails verification (empty when everything matches the manifest).
    A folder with none of the shipped files (empty, or someone else's) fails as a whole."""
    out = []
    where = ", ".join(inv["searched"])
    if not any(f["status"] in ("ok", "mismatch") for f in inv["files"]):
        out.append(f"{where}: none of the shipped weight files is here (an empty or foreign folder? "
                   "`deepsim weights download` fetches them)")
    for f in inv["files"]:
        if f["status"] == "mismatch":
            out.append(f"{f['path']}: sha256 {f['sha256']} does not match the manifest's {f['manifest_sha256']}")
        elif f["status"] == "not in manifest":
            out.append(f"{f['path']}: no sha256 recorded for it in the manifest (not a file deepsim ships)")
        elif f["status"] == "missing":
            out.append(f"{f['file']}: missing (searched {where}; `deepsim weights download {f['file']}` fetches it)")
    return out


_STATUS = {"ok": "[green]sha256 matches the manifest[/green]",
           "mismatch": "[red]sha256 differs from the manifest[/red]",
           "not in manifest": "[yellow]not a shipped file (no sha256 recorded)[/yellow]",
           "missing": "[red]missing[/red]"}


def inventory_lines(inv: dict[str, Any]) -> list[tuple[str, bool]]:
    """`deepsim weights`' listing of an inventory(): (line, is Rich markup) pairs, one block per file
    (name, kind, size, status; then sha256, the manifest's sha256 when it differs, the path when
    it is not in the weights folder, provenance; or the fetch command of a missing file)."""
    from rich.markup import escape

    lines = [(f"[bold]weights in {escape(', '.join(inv['searched']))}[/bold]", True)]
    for f in inv["files"]:
        size = f"{f['bytes']:,} bytes" if f["bytes"] is not None else "—"
        lines += [("", False),
                  (f"[bold]{escape(f['file'])}[/bold]  {escape(f['kind'] or '—')} · {size} · {_STATUS[f['status']]}", True)]
        if f["status"] == "missing":
            lines.append((f"  fetch       deepsim weights download {f['file']}", False))
            continue
        lines.append((f"  sha256      {f['sha256']}", False))
        if f["status"] == "mismatch":
            lines.append((f"  manifest    {f['manifest_sha256']}", False))
        if Path(f["path"]).parent != Path(inv["weights_dir"]):
            lines.append((f"  path        {f['path']}", False))
        if f["provenance"]:
            lines.append((f"  provenance  {f['provenance']}", False))
    return lines
