"""Write deepsim_cli/resources/weights.json, the manifest of the shipped weight files, from weights/.

For every file in weights/ (the *.safetensors files and the sharded indexes *.safetensors.index.json;
README.md is documentation) it records name, bytes, sha256, kind, encoder, layer, licence, the files
it needs (an index's shards) and where it can be fetched from: the pinned Hugging Face Hub repo and
revision below (https://huggingface.co/REPO/resolve/REVISION/NAME). Reads the safetensors headers
directly (no torch). Idempotent: the same weights/ gives the same bytes.

    python tools/make_manifest.py            # rewrite the manifest
    python tools/make_manifest.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = REPO_ROOT / "weights"
OUT = REPO_ROOT / "deepsim_cli" / "resources" / "weights.json"

HUB_REPO = "deepsim/weights"   # intended location; the files are uploaded there at this revision
HUB_REVISION = "v1"
DEFAULT_LICENCE = "ImageNet-derived (training images and encoder features): non-commercial research use"


from deepsim_cli.weights_store import sha256_file as sha256  # noqa: E402


def safetensors_metadata(path: Path) -> dict[str, str]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header.get("__metadata__") or {}


def describe(path: Path) -> dict:
    if path.name.endswith(".safetensors.index.json"):
        spec = json.loads(path.read_text(encoding="utf-8"))
        meta = spec.get("metadata") or {}
        e = {"kind": "encoder-index", "encoder": meta.get("encoder") or None, "layer": "fc8",
             "licence": meta.get("licence") or DEFAULT_LICENCE,
             "requires": sorted(set(spec["weight_map"].values()))}
        if meta.get("identity_sha256"):
            e["identity_sha256"] = meta["identity_sha256"]
        return e
    meta = safetensors_metadata(path)
    e = {"kind": meta.get("kind") or None, "encoder": meta.get("encoder") or None,
         "layer": meta.get("layer") or None, "licence": meta.get("licence") or DEFAULT_LICENCE}
    m = re.fullmatch(r"(.+)-(\w+)-generator\.bounds\.safetensors", path.name)
    if e["kind"] == "code-bounds" and m:  # the DGN-AM bounds of a generator's code layer
        e.update(encoder=e["encoder"] or m.group(1), layer=e["layer"] or m.group(2))
    if meta.get("encoder_sha256"):
        e["encoder_sha256"] = meta["encoder_sha256"]
    return e


def build() -> dict:
    base = f"https://huggingface.co/{HUB_REPO}/resolve/{HUB_REVISION}/"
    files = {}
    for path in sorted(WEIGHTS.iterdir()):
        if not path.is_file() or not (path.name.endswith(".safetensors") or path.name.endswith(".index.json")):
            continue
        files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256(path), **describe(path),
                            "url": base + path.name}
    return {"format": "deepsim weights manifest", "format_version": 1,
            "generated_by": "tools/make_manifest.py",
            "remote": {"type": "huggingface", "repo": HUB_REPO, "revision": HUB_REVISION, "base_url": base},
            "files": files}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the manifest is out of date")
    args = ap.parse_args()
    text = json.dumps(build(), indent=2) + "\n"
    if args.check:
        ok = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT}: {'up to date' if ok else 'OUT OF DATE (run tools/make_manifest.py)'}")
        return 0 if ok else 1
    if OUT.is_file() and OUT.read_text(encoding="utf-8") == text:
        print(f"{OUT}: unchanged")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(OUT)
    print(f"{OUT}: {len(json.loads(text)['files'])} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
