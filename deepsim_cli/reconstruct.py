"""One entry point for every way `deepsim invert` reconstructs images from a layer: the
generator's forward pass, the generator plus code refinement, and Mahendran & Vedaldi's
optimisation on the image (from noise or from the generator's output), batched, with one
progress callback; and decoding saved codes again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from .encoders import Encoder, encode_batched
from .inference import LoadedGenerator, decode, invert, optimize_invert
from .precision import model_device

Method = Literal["generator", "optimize"]


@dataclass
class Reconstruction:
    """What `reconstruct` returns: the images and, when asked for, the codes they came from."""
    images: torch.Tensor               # (B, 3, S, S) float32 in [-1, 1], on the CPU
    codes: torch.Tensor | None         # what the images were decoded from (want_codes / refine), else None


def work_per_image(method: Method, refine: int, steps: int) -> int:
    """Progress units per image of `reconstruct` (0: one quick pass, no progress to show)."""
    return steps if method == "optimize" else refine


def reconstruct(x: torch.Tensor, encoder: Encoder, layer: str, *, gen: LoadedGenerator | None = None,
                method: Method = "generator", refine: int = 0, init: Literal["noise", "generator"] = "noise",
                steps: int = 200, size: int = 128, batch: int = 32, seed: int = 0, precision: str = "auto",
                want_codes: bool = False, on_progress: Callable[[int], None] | None = None) -> Reconstruction:
    """Reconstruct images `x` ((B, 3, H, W) in [-1, 1]) from what `encoder`'s `layer` keeps.

    Args:
        gen: the generator for `layer` (needed by method "generator" and by init "generator").
        method: "generator": G(E(x)), refined for `refine` Adam steps on its code if > 0;
            "optimize": `steps` steps of gradient descent on a `size`² image with a TV prior,
            starting from small noise or (init "generator") from G(E(x)).
        want_codes: also return the features (or refined codes) the images were decoded from.
        on_progress: called with a number of images each time that many advanced one unit of
            `work_per_image` (refinement or optimisation steps).
    Returns:
        Reconstruction(images (B, 3, S, S) float32 on the CPU, codes or None).
    """
    if (method == "generator" or init == "generator") and gen is None:
        raise ValueError(f"method {method!r} with init {init!r} needs the generator for {layer}")
    if method == "generator" and refine:
        from .refine import refine as refine_codes
        res = refine_codes(x, encoder, gen, refine, batch=batch, precision=precision, on_step=on_progress)
        return Reconstruction(res.images.cpu(), res.codes)
    if method == "generator" and want_codes:
        codes = encode_batched(encoder, x, layer, batch, precision=precision)
        return Reconstruction(decode_codes(codes, gen, batch=batch, precision=precision).images, codes)
    if method == "generator":
        return Reconstruction(invert(x, encoder, gen, batch=batch, precision=precision).cpu(), None)
    target = encode_batched(encoder, x, layer, batch, precision=precision)
    start = invert(x, encoder, gen, batch=batch, precision=precision) if init == "generator" else None
    target = target.to(model_device(encoder))
    out = []
    for i in range(0, len(x), batch):
        chunk = target[i:i + batch]
        out.append(optimize_invert(chunk, encoder, layer, size, steps=steps, seed=seed, precision=precision,
                                   init=None if start is None else start[i:i + batch],
                                   on_step=(lambda _s, _l, n=len(chunk): on_progress(n)) if on_progress else None
                                   ).cpu())
    return Reconstruction(torch.cat(out), None)


def decode_codes(codes: torch.Tensor, gen: LoadedGenerator, *, refine: int = 0, encoder: Encoder | None = None,
                 batch: int = 32, precision: str = "auto",
                 on_progress: Callable[[int], None] | None = None) -> Reconstruction:
    """G(codes) for codes (B, *gen's input shape) of `gen.layer`, batched; with `refine` > 0 the
    codes are first refined towards themselves as features (needs `encoder`).

    Returns:
        Reconstruction(images (B, 3, S, S) float32 on the CPU, refined codes or None).
    """
    if refine:
        from .refine import refine as refine_codes
        if encoder is None:
            raise ValueError("refining codes needs the encoder they came from")
        res = refine_codes(codes, encoder, gen, refine, batch=batch, precision=precision, on_step=on_progress)
        return Reconstruction(res.images.cpu(), res.codes)
    return Reconstruction(torch.cat([decode(gen, codes[i:i + batch], precision=precision)
                                     for i in range(0, len(codes), batch)]).cpu(), None)
