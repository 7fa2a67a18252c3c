"""Split weights/alexnet.safetensors (127 MB: over the 100 MB per-file limit of the usual git hosts)
into the Hugging Face sharded layout: the conv tensors stay in alexnet-conv.safetensors (stored
once, checked bit-equal here), the v1 fc head goes to alexnet-head-v1-0000K-of-0000N.safetensors shards
(via tools/ship_alexnet.py's ship_sharded), and alexnet-head-v1.safetensors.index.json maps every
tensor to its file.

The index also records the identity of the single file it replaces: "identity_sha256" (the sha256
every generator and VAE trained on it records as encoder_sha256, so they still load) and
"identity_header" (that file's safetensors header, verbatim), from which
`deepsim_cli.weights_store.rebuild_single_file` rebuilds alexnet.safetensors byte for byte out of the
shards: the identity is checked, not just claimed (tests/test_weights_store.py).

    python tools/shard_alexnet_v1.py     # then: python tools/make_manifest.py; git rm weights/alexnet.safetensors
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deepsim_cli.checkpoint import load_checkpoint, sha256_file  # noqa: E402
from deepsim_cli.weights_store import rebuild_single_file  # noqa: E402
from ship_alexnet import ship_sharded  # noqa: E402

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
NAME = "alexnet-head-v1"


def main() -> None:
    single = WEIGHTS / "alexnet.safetensors"
    ck = load_checkpoint(single, kind="encoder")
    conv = load_checkpoint(WEIGHTS / "alexnet-conv.safetensors").tensors
    for k, v in conv.items():
        if not (torch.equal(ck.tensors[k], v) and ck.tensors[k].dtype == v.dtype):
            sys.exit(f"{k} differs from alexnet-conv.safetensors")
    ship_sharded(NAME, ck, ck.metrics, dict(ck.extra), int(90 * 2**20))
    index = WEIGHTS / f"{NAME}.safetensors.index.json"
    spec = json.loads(index.read_text())
    with open(single, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = f.read(n).decode("utf-8")
    spec["metadata"].update({"identity_file": single.name, "identity_sha256": sha256_file(single),
                             "identity_header": header})
    index.write_text(json.dumps(spec, indent=2) + "\n")
    with tempfile.TemporaryDirectory() as tmp:  # the shards give back the very same file
        again = rebuild_single_file(index, Path(tmp) / single.name)
        assert sha256_file(again) == sha256_file(single)
    print(f"{index}  sha256 {sha256_file(index)}; rebuilds {single.name} byte for byte")


if __name__ == "__main__":
    main()
