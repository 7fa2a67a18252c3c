"""Checkpoints: safetensors tensors plus a string-only metadata header. Loading never unpickles.

Metadata keys (all strings): format_version, kind, config (JSON), encoder, layer,
encoder_sha256, deepsim_version, train_steps, metrics (JSON), and free-form extras.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import UsageError
from .utils import atomic_output

FORMAT_VERSION = "1"
_REQUIRED = ("format_version", "kind")


@dataclass
class Checkpoint:
    """Tensors and parsed metadata of one checkpoint file."""

    tensors: dict[str, torch.Tensor]
    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    encoder: str = ""
    layer: str = ""
    encoder_sha256: str = ""
    train_steps: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    config: Mapping[str, Any] | None = None,
    encoder: str = "",
    layer: str = "",
    encoder_sha256: str = "",
    train_steps: int = 0,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write tensors + metadata atomically. `dtype` casts floating tensors (e.g. float16 to ship)."""
    from . import __version__

    out: dict[str, torch.Tensor] = {}
    for k, t in tensors.items():
        t = t.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t.contiguous()
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": json.dumps(dict(config or {}), sort_keys=True),
        "encoder": encoder,
        "layer": layer,
        "encoder_sha256": encoder_sha256,
        "deepsim_version": __version__,
        "train_steps": str(int(train_steps)),
        "metrics": json.dumps(dict(metrics or {}), sort_keys=True),
    }
    for k, v in (extra or {}).items():
        if k in meta:
            raise ValueError(f"extra metadata key {k!r} clashes with a standard key")
        meta[k] = str(v)
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(out, str(tmp), metadata=meta)
        _canonicalize_header(tmp)
    return path


def _canonicalize_header(path: Path) -> None:
    """Rewrite a safetensors file's JSON header with sorted keys, so equal content gives equal bytes.

    safetensors writes the metadata map in hash order, which differs between runs; the format
    is an 8-byte little-endian header length, the JSON header (trailing spaces allowed, padded
    to 8 bytes) and the raw tensor bytes whose offsets are relative to the end of the header.
    """
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n).decode("utf-8"))
        new = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(new) <= n:  # the usual case: same keys, same length, rewrite in place
            f.seek(8)
            f.write(new + b" " * (n - len(new)))
            return
        data_start = 8 + n
    new += b" " * (-len(new) % 8)
    tmp = path.with_name(path.name + ".hdr")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            dst.write(len(new).to_bytes(8, "little"))
            dst.write(new)
            src.seek(data_start)
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def upgrade_metadata(meta: dict[str, str]) -> dict[str, str]:
    """Patch metadata written by older versions to the current format (the one place that does)."""
    meta = dict(meta)
    meta.setdefault("config", "{}")
    meta.setdefault("metrics", "{}")
    meta.setdefault("train_steps", "0")
    for k in ("encoder", "layer", "encoder_sha256", "deepsim_version"):
        meta.setdefault(k, "")
    return meta


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the raw (upgraded) metadata header without loading tensors."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"not a safetensors checkpoint: {path} ({str(e).splitlines()[0]})") from None
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise UsageError(f"{path}: not a deepsim checkpoint (metadata lacks {', '.join(missing)})")
    return upgrade_metadata(meta)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Load a checkpoint; with `kind`, refuse files of another kind."""
    path = Path(path)
    meta = read_metadata(path)
    if kind is not None and meta["kind"] != kind:
        raise UsageError(f"{path}: expected a {kind!r} checkpoint, found {meta['kind']!r}")
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"corrupt checkpoint {path}: {str(e).splitlines()[0]}") from None
    std = {"format_version", "kind", "config", "encoder", "layer", "encoder_sha256",
           "deepsim_version", "train_steps", "metrics"}
    try:
        config = json.loads(meta["config"])
        metrics = json.loads(meta["metrics"])
    except json.JSONDecodeError:
        raise UsageError(f"{path}: metadata 'config'/'metrics' is not valid JSON") from None
    return Checkpoint(
        tensors=tensors,
        kind=meta["kind"],
        config=config,
        encoder=meta["encoder"],
        layer=meta["layer"],
        encoder_sha256=meta["encoder_sha256"],
        train_steps=int(meta["train_steps"] or 0),
        metrics=metrics,
        extra={k: v for k, v in meta.items() if k not in std},
        path=path,
    )


def load_state_dict_strict(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], what: str, *,
                           assign: bool = False) -> None:
    """load_state_dict(strict=True) with dtype adaptation and a one-line error on mismatch.

    `assign=True` puts the (converted) tensors in place of the module's own, which is how a
    module built on the meta device (no random init, no memory) gets its weights."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise UsageError(
            f"{what}: weights do not match the architecture "
            f"(missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''})"
        )
    for k, v in tensors.items():
        if own[k].shape != v.shape:
            raise UsageError(f"{what}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        # a NaN or inf weight (bit flip, tampering, a diverged run) would give black or NaN output
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise UsageError(f"{what}: tensor {k} holds non-finite values (NaN or inf); the file is corrupt")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=True, assign=assign)
