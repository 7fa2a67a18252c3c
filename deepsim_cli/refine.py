"""Inversion refined through the generator: start at the generator's first guess G(E(x)) and take
a few gradient steps on G's input code h (h₀ = E(x)) that pull the features of G(h) toward the
target, ||E(G(h)) − E(x)||² / ||E(x)||², so the image stays on what the generator can draw
(GAN-inversion style: encoder initialisation, then optimisation; DGN-AM does the same for units).

Options, each measured in benchmarks/RESULTS.md ("Refinement"):
- optimiser: Adam on h, with the step size relative to the mean |h₀| of each image and a cosine
  decay to 0 over `steps`;
- code constraint: a code that is non-negative to start with (the ReLU layers pool5, fc6, fc7)
  is kept non-negative;
- `also`: lower conv layers of the same encoder matched as well (needs the image, not only its
  features), each term normalised by its own energy;
- `anchor`: a weight on ||G(h) − G(h₀)||² that keeps the picture near the first guess.

Each image's loss is its own term of a sum, so an image's result does not depend on the others in
its batch (up to reduced-precision rounding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from .encoders import Encoder
from .errors import UsageError
from .precision import autocast, frozen_copy, model_device, resolve_precision
from .utils import cosine_lr, set_lr


class LoadedGenerator(Protocol):
    """What refinement needs of a loaded generator (`inference.LoadedGenerator` is one): G and the
    encoder layer it inverts. A protocol, so this module does not import inference, which calls it."""

    G: torch.nn.Module
    layer: str

#: defaults chosen by measurement (benchmarks/refine.py; RESULTS.md "Refinement")
DEFAULT_STEPS = 30
DEFAULT_LR = 0.2
MAX_REFINE_STEPS = 10_000


#: lower layers matched by default besides the inverted one (measured: RESULTS.md "Refinement")
DEFAULT_ALSO = {"alexnet": ("conv3",)}


def default_also(encoder: Encoder, layer: str) -> tuple[str, ...]:
    """The default further layers for `layer`: those of DEFAULT_ALSO that lie below it."""
    order = list(encoder.taps)
    if layer not in order:
        return ()
    return tuple(l for l in DEFAULT_ALSO.get(encoder.name, ()) if l in order and order.index(l) < order.index(layer))


@dataclass
class RefineResult:
    """What `refine` returns: refined images and codes, and the feature loss per step."""
    images: torch.Tensor                       # (B, 3, S, S) float32 in [-1, 1], on the CPU
    codes: torch.Tensor                        # (B, *code shape) float32, the refined h
    losses: list[float] = field(default_factory=list)  # mean feature loss per step (before it)


def _per_image_energy(t: torch.Tensor) -> torch.Tensor:
    return t.float().flatten(1).pow(2).mean(1).clamp_min(1e-8)


def _per_image_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).flatten(1).pow(2).mean(1)


def refine(x_or_features: torch.Tensor, encoder: Encoder, gen: LoadedGenerator, steps: int = DEFAULT_STEPS, *,
           lr: float = DEFAULT_LR, also: Sequence[str] | None = None, anchor: float = 0.0,
           init: torch.Tensor | None = None, batch: int = 32, precision: str = "auto",
           on_step: Callable[[int], None] | None = None) -> RefineResult:
    """Refine the generator's reconstruction by gradient descent on its input code.

    Args:
        x_or_features: images (B, 3, H, W) in [-1, 1], or features (B, *shape) of `gen.layer`.
        encoder: the encoder `gen` inverts (the target features come from it).
        steps: Adam steps per image (0: the generator's output G(h₀) unchanged).
        lr: step size relative to the mean |h₀| of each image.
        also: further layers of `encoder` to match (e.g. conv3), each normalised by its own energy;
            needs images, not features. None: `default_also` when images are given, else none.
        anchor: weight of ||G(h) − G(h₀)||² / ||G(h₀)||² (0: off).
        init: a start code h₀ instead of the target features (e.g. interpolated codes).
        on_step: called once per finished step of each batch with the number of images in it.
    Returns:
        RefineResult with the refined images, codes and the mean feature loss per step.
    """
    if steps < 0 or steps > MAX_REFINE_STEPS:
        raise UsageError(f"refinement steps must be between 0 and {MAX_REFINE_STEPS}, not {steps}")
    layer = gen.layer
    is_image = x_or_features.dim() == 4 and x_or_features.shape[1] == 3  # no layer has 3 channels
    if also is None:
        also = default_also(encoder, layer) if is_image else ()
    also = [l for l in also if l != layer]
    if also and not is_image:
        raise UsageError("matching further layers (--refine-also) needs the images, not only their features")
    if also:
        encoder.check_layers(also)
    dev = model_device(gen.G)
    images, codes, losses = [], [], []
    for i in range(0, x_or_features.shape[0], batch):
        chunk = x_or_features[i:i + batch].to(dev)
        r = _refine_batch(chunk, is_image, encoder, gen, steps, lr, also, anchor,
                          None if init is None else init[i:i + batch].to(dev), precision, on_step)
        images.append(r.images)
        codes.append(r.codes)
        losses.append(torch.tensor(r.losses) * len(chunk))
    n = x_or_features.shape[0]
    mean_losses = (torch.stack(losses).sum(0) / n).tolist() if losses and steps else []
    return RefineResult(torch.cat(images), torch.cat(codes), mean_losses)


def _step_loss(G, encoder, u, scale, layer, also, targets, energies, anchor, first, first_energy, dev,
               precision) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image loss (B,) to minimise, and the per-image feature loss of `layer` alone (detached)."""
    with autocast(dev, precision):
        img = G(u * scale)
        feats = encoder(img.clamp(-1, 1), [layer, *also])
    per = _per_image_mse(feats[layer], targets[layer]) / energies[layer]
    feat_loss = per.detach()
    for k in also:
        per = per + _per_image_mse(feats[k], targets[k]) / energies[k]
    if first is not None:
        per = per + anchor * _per_image_mse(img, first) / first_energy
    return per, feat_loss


def _refine_batch(chunk, is_image, encoder, gen, steps, lr, also, anchor, init, precision, on_step) -> RefineResult:
    dev = chunk.device
    layer = gen.layer
    bf16 = resolve_precision(precision, dev) == "bf16"
    G = frozen_copy(gen.G, torch.bfloat16) if bf16 else gen.G
    with torch.no_grad(), autocast(dev, precision):
        if is_image:
            targets = {k: v.float() for k, v in encoder(chunk, [layer, *also]).items()}
        else:
            targets = {layer: chunk.float()}
    energies = {k: _per_image_energy(v) for k, v in targets.items()}
    h0 = (init if init is not None else targets[layer]).float()
    nonneg = bool((h0 >= 0).all())
    scale = h0.flatten(1).abs().mean(1).clamp_min(1e-6).view(-1, *([1] * (h0.dim() - 1)))
    first = None
    if anchor > 0:
        with torch.no_grad(), autocast(dev, precision):
            first = G(h0).float()
        first_energy = _per_image_energy(first)
    # optimise u = h / scale so one Adam step size fits every image's code magnitude
    u = (h0 / scale).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    losses: list[float] = []
    for s in range(steps):
        with torch.enable_grad():  # also under a caller's no_grad
            per, feat_loss = _step_loss(G, encoder, u, scale, layer, also, targets, energies, anchor, first,
                                        first_energy if first is not None else None, dev, precision)
            opt.zero_grad(set_to_none=True)
            per.sum().backward()
        set_lr(opt, cosine_lr(lr, s, steps))
        opt.step()
        if nonneg:
            with torch.no_grad():
                u.clamp_(min=0)
        losses.append(float(feat_loss.mean()))
        if on_step:
            on_step(len(chunk))
    with torch.no_grad(), autocast(dev, precision):
        h = (u * scale).detach() if steps else h0  # 0 steps: exactly the generator's G(E(x))
        out = G(h).float().clamp(-1, 1)
    return RefineResult(out.cpu(), h.float().cpu(), losses)
