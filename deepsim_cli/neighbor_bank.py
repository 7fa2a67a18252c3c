"""The image bank of `deepsim neighbors`: every bank image embedded in the search space (an
encoder layer, flattened, or the pixels), with the features kept in $DEEPSIM_CACHE.

Encoding a large bank is most of a search (minutes for a training set); the features depend only
on the files, the encoder weights, the layer, the size and the precision, so they are kept as
bank-KEY.safetensors. Like the image cache it is optional: a cache that cannot be read is rebuilt,
one that cannot be written is skipped, each with one warning line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch


def embed(x: torch.Tensor, enc, space: str, precision: str = "auto") -> torch.Tensor:
    """(N, 3, S, S) images in [-1, 1] → (N, D) search vectors: the flattened `space` features of
    `enc`, or the pixels themselves when `enc` is None (space "image")."""
    if enc is None:
        return x.flatten(1)
    from .encoders import encode_batched
    return encode_batched(enc, x, space, 64, precision=precision).flatten(1)


def bank_features(arr: np.ndarray, names: Sequence[str], data: Sequence, size: int, space: str, enc,
                  precision: str, *, use_cache: bool = True, chunk: int = 512,
                  on_progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, bool]:
    """(N, D) search vectors of the bank `arr` (uint8 (N, S, S, 3) decoded from `data`), from the
    cache when it holds them; returns (features, came from the cache)."""
    from .data import to_float

    key = _bank_key(data, names, size, space, enc, precision)
    bank = _read_bank(key, len(arr)) if use_cache else None
    if bank is not None:
        return bank, True
    chunks = []
    for i in range(0, len(arr), chunk):
        chunks.append(embed(to_float(torch.from_numpy(arr[i:i + chunk])), enc, space, precision))
        if on_progress:
            on_progress(len(chunks[-1]))
    bank = torch.cat(chunks)
    if use_cache and enc is not None:  # pixels need no cache: they are the (cached) images
        _write_bank(key, bank)
    return bank, False


def _bank_key(data, names, size: int, space: str, enc, precision: str) -> str:
    import hashlib

    from .data import source_key
    parts = [source_key([str(d) for d in data]), names, size, space, precision,
             enc.name if enc is not None else "", enc.sha256 if enc is not None else ""]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def _bank_file(key: str) -> Path:
    from .data import cache_dir
    return cache_dir() / f"bank-{key}.safetensors"


def _read_bank(key: str, n: int):
    f = _bank_file(key)
    if not f.is_file():
        return None
    try:
        from safetensors.torch import load_file

        from .checkpoint import all_finite
        bank = load_file(str(f))["bank"]
        if bank.ndim != 2 or len(bank) != n or not all_finite(bank):
            raise ValueError(f"unexpected contents {tuple(bank.shape)}")
        return bank
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, unreadable: rebuilt
        from .utils import warn
        warn(f"ignoring the unusable bank cache {f} ({type(e).__name__}); encoding again")
        return None


def _write_bank(key: str, bank) -> None:
    from safetensors.torch import save_file

    from .errors import WriteError
    from .utils import atomic_output, warn
    f = _bank_file(key)
    try:
        with atomic_output(f) as tmp:
            save_file({"bank": bank.contiguous()}, str(tmp))
    except (WriteError, OSError) as e:
        warn(f"{e}; continuing without the bank cache ($DEEPSIM_CACHE)")
