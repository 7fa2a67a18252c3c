"""One precision setting for every model call: `auto`, `bf16` or `fp32`.

`bf16` runs the networks under torch.autocast with bfloat16 (parameters, optimizer state,
loss reductions, softmax/KL and metrics stay float32: the callers cast what they reduce).
`auto` picks bf16 on CUDA and on CPUs with native bf16 matrix units (Intel AMX-BF16 or
AVX512-BF16, where autocast runs AlexNet ~5x and a DeePSiM step ~3x faster than fp32;
benchmarks/RESULTS.md), fp32 elsewhere, where emulated bf16 is slower than fp32.

Detection reads the CPU flags once (/proc/cpuinfo on Linux, torch's own capability string
otherwise); nothing here imports torch at module level, so the CLI can resolve and print the
setting cheaply.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, ContextManager

PRECISIONS = ("auto", "bf16", "fp32")
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_feature() -> str | None:
    """The CPU feature that makes bf16 fast here ('amx_bf16' or 'avx512_bf16'), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return next((fl for fl in _BF16_FLAGS if fl in flags), None)
    except OSError:
        pass
    try:  # not Linux: torch's dispatch level (AMX or AVX512-BF16 show up as these strings)
        import torch
        cap = torch.backends.cpu.get_cpu_capability().upper()
        return "amx_bf16" if "AMX" in cap else "avx512_bf16" if "BF16" in cap else None
    except Exception:
        return None


def check_precision(value: str) -> str:
    """Validate a precision name (ValueError listing the valid ones)."""
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def resolve_precision(precision: str = "auto", device: Any = "cpu") -> str:
    """'auto' | 'bf16' | 'fp32' on `device` (a torch.device or its name) → 'bf16' or 'fp32'."""
    check_precision(precision)
    if precision != "auto":
        return precision
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        return "bf16"
    if kind == "cpu":
        return "bf16" if cpu_bf16_feature() else "fp32"
    return "fp32"


def describe(device: Any = "cpu", precision: str = "auto") -> str:
    """One line for --version / logs, e.g. 'bf16 (auto: CPU has amx_bf16)'."""
    p = resolve_precision(precision, device)
    if precision != "auto":
        return f"{p} (forced)"
    kind = getattr(device, "type", str(device).split(":")[0])
    why = "CUDA" if kind == "cuda" else (f"CPU has {cpu_bf16_feature()}" if p == "bf16"
                                         else "CPU has no native bf16")
    return f"{p} (auto: {why})"


def autocast(device: Any, precision: str = "auto") -> ContextManager:
    """torch.autocast for `precision` on `device` (a no-op context for fp32)."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if resolve_precision(precision, dev) != "bf16" or dev.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16)


def model_device(module: Any):
    """The device of a module's first parameter or buffer (CPU for a parameterless one)."""
    import torch

    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def frozen_copy(module: Any, dtype: Any) -> Any:
    """A copy of a frozen module with its floating parameters and buffers in `dtype`, kept on the
    module (built once). Under autocast a frozen network's float32 weights are cast again on every
    call (autocast caches casts only of weights that require grad): for AlexNet's 58 M fc weights
    that copy was 40 % of a DGN-AM step. Only for modules whose weights never change."""
    import copy

    import torch

    cache = module.__dict__.setdefault("_deepsim_dtype_copies", {})
    if dtype not in cache:
        # deepcopy with every float tensor pre-cast in the memo: the float32 weights are never copied
        memo: dict[int, Any] = {id(cache): {}}
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                cast = t.detach().to(dtype)
                memo[id(t)] = torch.nn.Parameter(cast, requires_grad=False) if isinstance(t, torch.nn.Parameter) else cast
        cache[dtype] = copy.deepcopy(module, memo).requires_grad_(False)
    return cache[dtype]


def autocast_dtype(device_type: str):
    """The dtype autocast is running with on `device_type` now, or None when it is off."""
    import torch

    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)
