"""DGN-AM (Nguyen et al., NIPS 2016): synthesize a unit's preferred input by gradient ascent on
the code h of a generator G (the fc6 inverter), maximising a(E(G(h))) for one unit of a target
network, with G as a natural-image prior.

The optimiser is the paper's: the step is normalised by the mean |gradient|, the learning rate
decays linearly, the code is multiplied by (1 − decay) every step (L2 decay) and every unit is
clipped to bounds computed from the codes of real images ([0, 3·std] per unit, as in the
original act_range files).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .encoders import Encoder
from .errors import UsageError


@dataclass
class CodeBounds:
    """Per-unit lower and upper bounds of the generator's input code."""

    lo: torch.Tensor
    hi: torch.Tensor

    def clip(self, h: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(h, self.hi.to(h)), self.lo.to(h))

    def save(self, path: str | Path, *, source: str = "") -> None:
        save_checkpoint(path, {"lo": self.lo, "hi": self.hi}, kind="code-bounds", extra={"source": source})

    @classmethod
    def load(cls, path: str | Path) -> "CodeBounds":
        t = load_checkpoint(path, kind="code-bounds").tensors
        return cls(t["lo"].float(), t["hi"].float())


def bounds_path(generator_path: str | Path) -> Path:
    """Where the bounds of a generator are cached: beside it, <name>.bounds.safetensors."""
    p = Path(generator_path)
    return p.with_name(p.name.replace(".safetensors", "") + ".bounds.safetensors")


@torch.no_grad()
def compute_bounds(codes: torch.Tensor, n_std: float = 3.0) -> CodeBounds:
    """Bounds from real images' codes (N, D): [min(0, lowest code), n_std·std] per unit."""
    codes = codes.flatten(1).float()
    lo = torch.minimum(codes.min(0).values, torch.zeros(codes.shape[1]))
    hi = torch.maximum(n_std * codes.std(0), lo + 1e-3)
    return CodeBounds(lo, hi)


def imagenet_classes() -> list[str]:
    """ImageNet class names in index order (torchvision's metadata; no download)."""
    import torchvision

    return list(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def resolve_class(name: str) -> int:
    """Class index of an ImageNet class name: exact (case-insensitive), unique substring, or
    UsageError naming the closest matches."""
    classes = imagenet_classes()
    low = [c.lower() for c in classes]
    q = name.strip().lower()
    if q in low:
        return low.index(q)
    hits = [i for i, c in enumerate(low) if q in c]
    if len(hits) == 1:
        return hits[0]
    near = [classes[i] for i in hits[:5]] or difflib.get_close_matches(name, classes, n=5, cutoff=0.5)
    hint = f"; did you mean: {', '.join(repr(n) for n in near)}?" if near else ""
    raise UsageError(f"no unique ImageNet class matches {name!r}{hint}")


@dataclass
class VisResult:
    image: torch.Tensor            # (3, S, S) in [-1, 1]
    code: torch.Tensor             # the final code
    activation: float              # the unit's final activation
    history: list[float] = field(default_factory=list)
    frames: list[torch.Tensor] = field(default_factory=list)   # every save_every steps
    frame_acts: list[float] = field(default_factory=list)


def unit_activation(feats: torch.Tensor, unit: int, xy: tuple[int, int] | None = None) -> torch.Tensor:
    """Activation of `unit` in a (B, C) or (B, C, H, W) feature tensor (centre, or xy=(x, y))."""
    if not 0 <= unit < feats.shape[1]:
        raise UsageError(f"unit {unit} out of range: the layer has {feats.shape[1]} units")
    if feats.dim() == 2:
        return feats[:, unit]
    h, w = feats.shape[-2:]
    x, y = xy if xy is not None else (w // 2, h // 2)
    if not (0 <= x < w and 0 <= y < h):
        raise UsageError(f"--xy {x},{y} is outside the layer's {w}×{h} map")
    return feats[:, unit, y, x]


def visualize(G: torch.nn.Module, target: Encoder, layer: str, unit: int, *, code_shape: Sequence[int],
              xy: tuple[int, int] | None = None, iters: int = 200, lr: tuple[float, float] = (8.0, 1e-10),
              decay: float = 0.01, bounds: CodeBounds | None = None, init: torch.Tensor | None = None,
              seed: int = 0, save_every: int = 0,
              on_step: Callable[[int, float], None] | None = None) -> VisResult:
    """Maximise one unit of `target`'s `layer` over the code of generator G.

    Args:
        G: generator mapping codes (1, *code_shape) to images (1, 3, S, S).
        target: the network whose unit is maximised (any encoder).
        layer, unit, xy: which activation (for conv layers the centre unless xy is given).
        lr: (start, end) of the linearly decaying step size.
        decay: L2 decay: the code is multiplied by (1 − decay) each step.
        bounds: per-unit clip of the code; init: starting code (default: small random code).
    """
    target.check_layers([layer])
    dev = next(G.parameters()).device
    g = torch.Generator().manual_seed(seed)
    if init is not None:
        h = init.detach().clone().float().reshape(1, *code_shape).to(dev)
    else:
        h = (torch.randn(1, *code_shape, generator=g).abs() * 0.1).to(dev)  # codes are post-ReLU
    if bounds is not None:
        h = bounds.clip(h)
    res = VisResult(image=torch.empty(0), code=h, activation=float("nan"))
    for i in range(iters):
        h = h.detach().requires_grad_(True)
        x = G(h)
        act = unit_activation(target(x, [layer])[layer], unit, xy)[0]
        (grad,) = torch.autograd.grad(act, h)
        step = lr[0] + (lr[1] - lr[0]) * i / max(1, iters - 1)
        with torch.no_grad():
            h = h + step / grad.abs().mean().clamp_min(1e-12) * grad
            h = h * (1 - decay)
            if bounds is not None:
                h = bounds.clip(h)
        res.history.append(float(act.detach()))
        if on_step:
            on_step(i, float(act.detach()))
        if save_every and i % save_every == 0:
            res.frames.append(x[0].detach().clamp(-1, 1).cpu())
            res.frame_acts.append(float(act.detach()))
    with torch.no_grad():
        x = G(h)
        final = float(unit_activation(target(x, [layer])[layer], unit, xy)[0])
    res.image, res.code, res.activation = x[0].clamp(-1, 1).cpu(), h.detach().cpu(), final
    if save_every:
        res.frames.append(res.image)
        res.frame_acts.append(final)
    return res
