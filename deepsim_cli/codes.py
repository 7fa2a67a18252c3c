"""Saved codes: what a generator decoded, kept so that it can be decoded (or refined) again.

A code file is a deepsim safetensors checkpoint of kind "code": one (N, *shape) float32 tensor per
layer (named by the layer), the encoder's name and sha256, the image names in order (JSON) and the
refinement steps. `deepsim invert --save-code` and `deepsim visualize --save-code` write it,
`deepsim invert --code FILE` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import all_finite, load_checkpoint, save_checkpoint
from .errors import UsageError

__all__ = ["write_codes", "read_codes"]


def write_codes(path: str | Path, codes: dict[str, torch.Tensor], enc, names: list[str], refine: int = 0,
                **extra: str) -> None:
    """Save `codes` ({layer: (N, *shape) tensor}) of encoder `enc` for the images `names` as a
    kind='code' checkpoint (atomic). `enc` may be {layer: encoder} when the layers' generators were
    trained on different weights of one encoder: the first layer's sha256 is the file's, and
    every layer's is kept in extra["layer_encoder_sha256"]."""
    encs = enc if isinstance(enc, dict) else {l: enc for l in codes}
    first = encs[next(iter(codes))]
    shas = {l: encs[l].sha256 for l in codes}
    if len(set(shas.values())) > 1:
        extra = {**extra, "layer_encoder_sha256": json.dumps(shas)}
    save_checkpoint(path, {l: c.float().contiguous() for l, c in codes.items()}, kind="code",
                    encoder=first.name, layer=",".join(codes), encoder_sha256=first.sha256,
                    extra={"names": json.dumps(names), "refine_steps": str(refine), **extra})


def read_codes(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str], str, dict[str, str]]:
    """({layer: (N, *shape) codes}, N image names, encoder name, {layer: encoder sha256}) of a file
    written by write_codes; UsageError (one line) for a file that is not one, or holds non-finite values."""
    ck = load_checkpoint(path, kind="code")
    n = {len(t) for t in ck.tensors.values()}
    try:
        names = json.loads(ck.extra.get("names", "[]"))
    except ValueError:
        names = []
    if not ck.tensors or len(n) != 1 or not all(t.is_floating_point() and all_finite(t)
                                                for t in ck.tensors.values()):
        raise UsageError(f"{path}: not a usable code file (expected finite float tensors of one batch size)")
    count = n.pop()
    if not (isinstance(names, list) and len(names) == count):
        names = [f"code{i}" for i in range(count)]
    shas = {l: ck.encoder_sha256 for l in ck.tensors}
    try:
        per_layer = json.loads(ck.extra.get("layer_encoder_sha256", "{}"))
    except ValueError:
        per_layer = {}
    if isinstance(per_layer, dict):
        shas.update({l: str(v) for l, v in per_layer.items() if l in shas})
    return dict(ck.tensors), [str(x) for x in names], ck.encoder, shas
