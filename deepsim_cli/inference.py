"""Inference: invert(), reencode(), interpolate(), optimize_invert(): tensors in, tensors out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint, generator_config, load_checkpoint, load_state_dict_strict
from .encoders import Encoder, weights_dir
from .errors import UsageError
from .generators import Generator
from .precision import autocast, frozen_copy, model_device, resolve_precision
from .utils import cosine_lr, rng_seed, set_lr


@dataclass
class LoadedGenerator:
    """A generator with the metadata that says which encoder layer it inverts."""

    G: Generator
    encoder_name: str
    layer: str
    encoder_sha256: str
    ckpt: Checkpoint

    @property
    def image_size(self) -> int:
        """Side of G's square output images, in pixels."""
        return self.G.cfg.out_size


def shipped_generator_path(layer: str, encoder: str = "alexnet") -> Path:
    """<encoder>-<layer>-generator.safetensors, found by the weights resolver (weights_store.resolve).

    A generator that is not found (or not shipped at all) gives the path it would have in the
    weights folder, for the caller to check and report."""
    from . import weights_store

    name = f"{encoder}-{layer}-generator.safetensors"
    found = weights_store.optional(name) if weights_store.entry(name) is not None else None
    return found or weights_dir() / name


def _refuse_other_encoder_weights(path: str | Path, ck: Checkpoint, encoder: Encoder) -> None:
    """UsageError if `ck` records the sha256 of other encoder weights than `encoder` has."""
    if ck.encoder_sha256 and encoder.sha256 and ck.encoder_sha256 != encoder.sha256:
        raise UsageError(f"{path} was trained on different {ck.encoder} weights "
                         f"(sha256 {ck.encoder_sha256[:12]}…, loaded {encoder.sha256[:12]}…)")


def _same_encoder(path: str | Path, ck: Checkpoint, encoder: Encoder) -> bool:
    """Whether the generator in `ck` inverts `encoder` as loaded: UsageError for another encoder
    name; True for a conv layer (every shipped AlexNet file shares them), when either side has no
    sha256, or when they match; False for other weights of that encoder."""
    if ck.encoder != encoder.name:
        raise UsageError(f"{path} inverts encoder {ck.encoder!r}, not {encoder.name!r}")
    return (ck.layer in _conv_layers_shared(encoder) or not ck.encoder_sha256 or not encoder.sha256
            or ck.encoder_sha256 == encoder.sha256)


def load_generator(path: str | Path, device: torch.device | str = "cpu",
                   encoder: Encoder | None = None) -> LoadedGenerator:
    """Load a generator checkpoint; with `encoder`, refuse one trained on a different encoder."""
    ck = load_checkpoint(path, kind="generator", map_location="cpu")
    cfg = generator_config(ck)  # validated: a tampered header is one usage error
    with torch.device("meta"):  # no random init: every tensor comes from the file
        G = Generator(cfg)
    load_state_dict_strict(G, ck.tensors, f"generator {path}", assign=True)
    G.eval().requires_grad_(False).to(device)
    if encoder is not None and not _same_encoder(path, ck, encoder):
        _refuse_other_encoder_weights(path, ck, encoder)
    return LoadedGenerator(G, ck.encoder, ck.layer, ck.encoder_sha256, ck)


def trained_on(gen: LoadedGenerator, default: Encoder, device: torch.device | str = "cpu") -> Encoder:
    """The encoder `gen` was trained on: `default` when it is that one (the same weights, or a conv
    layer, which every shipped AlexNet file shares), else the shipped weights file with the sha256
    the generator records, built on `device` (e.g. a generator trained on AlexNet head v2 while the
    default head is v1). UsageError when that encoder does not ship or the names differ."""
    from . import weights_store
    from .encoders import build_encoder

    path = gen.ckpt.path or "generator"
    if _same_encoder(path, gen.ckpt, default):
        return default
    name = weights_store.encoder_file(default.name, gen.encoder_sha256)
    if name is None:
        _refuse_other_encoder_weights(path, gen.ckpt, default)
    enc = build_encoder(default.name, weights_store.resolve(name), device)
    _refuse_other_encoder_weights(path, gen.ckpt, enc)  # a local copy that is not the shipped file
    return enc


def _conv_layers_shared(encoder: Encoder) -> tuple[str, ...]:
    # the conv layers of the conv-only and the complete AlexNet files are the same genuine weights
    from .encoders import ALEXNET_CONV_LAYERS
    return ALEXNET_CONV_LAYERS if encoder.name == "alexnet" else ()


@torch.no_grad()
def invert(x: torch.Tensor, encoder: Encoder, gen: LoadedGenerator, batch: int = 32, *,
           precision: str = "auto") -> torch.Tensor:
    """Reconstruct images from their features: G(E(x)).

    Args:
        x: (B, 3, H, W) in [-1, 1].
        precision: auto | bf16 | fp32 (deepsim_cli.precision).
    Returns:
        (B, 3, S, S) float32 in [-1, 1] (clamped), S = the generator's output size.
    """
    assert x.dim() == 4 and x.shape[1] == 3
    dev = model_device(gen.G)
    outs = []
    for i in range(0, x.shape[0], batch):
        with autocast(dev, precision):
            y = encoder(x[i:i + batch].to(dev), [gen.layer])[gen.layer]
        outs.append(decode(gen, y, precision=precision))
    return torch.cat(outs)


@torch.no_grad()
def decode(gen: LoadedGenerator, y: torch.Tensor, *, precision: str = "auto") -> torch.Tensor:
    """G(y) for features y of the generator's layer: (B, 3, S, S) float32 in [-1, 1] (clamped)."""
    dev = model_device(gen.G)
    G = frozen_copy(gen.G, torch.bfloat16) if resolve_precision(precision, dev) == "bf16" else gen.G
    with autocast(dev, precision):
        out = G(y.to(dev))
    return out.float().clamp(-1, 1)


def total_variation(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """TV^β prior of Mahendran & Vedaldi, per image mean."""
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return ((dx[..., :-1, :] ** 2 + dy[..., :, :-1] ** 2) ** (beta / 2)).mean()


def optimize_invert(target: torch.Tensor, encoder: Encoder, layer: str, size: int = 128, *,
                    steps: int = 200, lr: float = 0.05, tv_weight: float = 0.5,
                    init: torch.Tensor | None = None, seed: int = 0, precision: str = "auto",
                    on_step: Callable[[int, float], None] | None = None) -> torch.Tensor:
    """Optimization-based inversion (Mahendran & Vedaldi 2015): gradient descent on the image
    to match `target` features of `layer`, with a TV prior. Needs no trained generator.

    Args:
        target: (B, *feature shape) features to match.
    Returns:
        (B, 3, size, size) images in [-1, 1].
    """
    dev = target.device
    g = torch.Generator().manual_seed(rng_seed(seed))
    x = (init.clone() if init is not None else torch.randn(target.shape[0], 3, size, size, generator=g) * 0.1)
    x = x.to(dev).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    energy = target.float().pow(2).mean().clamp_min(1e-8)
    for i in range(steps):
        set_lr(opt, cosine_lr(lr, i, steps))
        with autocast(dev, precision):
            f = encoder(x.clamp(-1, 1), [layer])[layer]
        loss = (f.float() - target.float()).pow(2).mean() / energy + tv_weight * total_variation(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step:
            on_step(i, float(loss.detach()))
    return x.detach().clamp(-1, 1)


@dataclass
class ReencodeResult:
    """Images x_0 … x_n (x_0 the input) and ||E(x_i) − E(x_0)|| / ||E(x_0)|| per iteration."""

    images: list[torch.Tensor]       # each (B, 3, S, S) in [-1, 1]
    feature_distance: list[torch.Tensor]  # each (B,), relative L2 distance to the original features


@torch.no_grad()
def reencode(x: torch.Tensor, encoder: Encoder, gen: LoadedGenerator, iters: int = 8, *,
             precision: str = "auto", refine_steps: int = 0,
             on_step: Callable[[int], None] | None = None) -> ReencodeResult:
    """The paper's re-encoding chain x → E → G → E → G … (Fig. 5).

    Args:
        x: (B, 3, H, W) in [-1, 1].
        iters: number of G(E(·)) applications.
        precision: auto | bf16 | fp32 for the networks (distances are float32).
        refine_steps: each G(E(x_i)) refined by this many steps toward x_i's features
            (deepsim_cli.refine; 0: the plain chain).
        on_step: with refine_steps, called per refinement step with the batch size.
    """
    if iters < 1:
        raise UsageError("--iters must be at least 1")
    dev = model_device(gen.G)
    x = x.to(dev)

    def enc(img: torch.Tensor) -> torch.Tensor:
        with autocast(dev, precision):
            return encoder(img, [gen.layer])[gen.layer].float()

    y0 = enc(x)
    n0 = y0.flatten(1).norm(dim=1).clamp_min(1e-8)
    images = [F.interpolate(x, size=(gen.image_size,) * 2, mode="bilinear", align_corners=False,
                            antialias=True) if x.shape[-1] != gen.image_size else x]
    dists = [torch.zeros(x.shape[0], device=dev)]
    y = y0
    prev = x
    for _ in range(iters):
        if refine_steps:
            from .refine import refine
            xi = refine(prev, encoder, gen, refine_steps, precision=precision, on_step=on_step).images.to(dev)
        else:
            xi = decode(gen, y, precision=precision)
        y = enc(xi)
        prev = xi
        images.append(xi)
        dists.append((y - y0).flatten(1).norm(dim=1) / n0)
    return ReencodeResult(images, dists)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of flattened vectors (norms interpolated linearly)."""
    af, bf = a.flatten(1), b.flatten(1)
    na, nb = af.norm(dim=1, keepdim=True), bf.norm(dim=1, keepdim=True)
    ua, ub = af / na.clamp_min(1e-8), bf / nb.clamp_min(1e-8)
    omega = torch.acos((ua * ub).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    d = (torch.sin((1 - t) * omega) / so) * ua + (torch.sin(t * omega) / so) * ub
    return (d * ((1 - t) * na + t * nb)).view_as(a)


@torch.no_grad()
def interpolate(xa: torch.Tensor, xb: torch.Tensor, encoder: Encoder, gen: LoadedGenerator,
                steps: int = 10, use_slerp: bool = False, *, precision: str = "auto", refine_steps: int = 0,
                on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Decode features interpolated between two images (paper Fig. 7).

    Args:
        xa, xb: (1, 3, H, W) in [-1, 1].
        steps: number of frames including both ends (≥ 2).
        refine_steps: refine each frame's code toward its interpolated features by this many
            steps (deepsim_cli.refine; 0: decode the interpolated features directly).
    Returns:
        (steps, 3, S, S) in [-1, 1].
    """
    if steps < 2:
        raise UsageError("--steps must be at least 2")
    dev = model_device(gen.G)
    with autocast(dev, precision):
        ya, yb = encoder(torch.cat([xa, xb]).to(dev), [gen.layer])[gen.layer].float().split(1)
    ts = [i / (steps - 1) for i in range(steps)]
    ys = torch.cat([slerp(ya, yb, t) if use_slerp else (1 - t) * ya + t * yb for t in ts])
    if refine_steps:
        from .refine import refine
        return refine(ys, encoder, gen, refine_steps, precision=precision, on_step=on_step).images
    return decode(gen, ys, precision=precision)  # one batch: frames do not depend on each other


@torch.no_grad()
def nearest_neighbors(query: torch.Tensor, bank: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest rows of `bank` (N, D) for each row of `query` (Q, D) by Euclidean distance.

    Returns:
        (distances (Q, k), indices (Q, k)).
    """
    d = torch.cdist(query.flatten(1).float(), bank.flatten(1).float())
    dist, idx = d.topk(min(k, bank.shape[0]), dim=1, largest=False)
    return dist, idx


# ---------------------------------------------------------------- VAE sampling

DEFAULT_VAE = "vae-deepsim.safetensors"


def load_vae(path: str | Path | None = None, device: torch.device | str = "cpu"):
    """Load a VAE checkpoint written by `deepsim train --model vae` (default: the shipped
    vae-deepsim.safetensors, found by the weights resolver)."""
    from .generators import VAE
    from .weights_store import resolve

    path = resolve(DEFAULT_VAE, path)
    ck = load_checkpoint(path, kind="vae", map_location="cpu")
    gcfg = generator_config(ck)
    frozen = ck.config.get("train", {}).get("vae_encoder") == "frozen"
    vae = VAE(gcfg.in_shape[0], gcfg.out_size, gcfg.width, gcfg.fc_dims, gcfg.bridge, frozen_encoder=frozen,
              upsample=gcfg.upsample)
    load_state_dict_strict(vae, ck.tensors, f"VAE {path}")
    vae = vae.eval().requires_grad_(False).to(device)
    if frozen:  # its encoder is a shipped encoder's conv1–fc6 (the one it records): attach it, and check it
        from .encoders import build_encoder
        from .weights_store import encoder_file
        own = encoder_file(ck.encoder, ck.encoder_sha256) if ck.encoder_sha256 else None
        enc = build_encoder(ck.encoder, resolve(own) if own else None, device)
        _refuse_other_encoder_weights(path, ck, enc)
        vae.attach_encoder(enc)
    return vae


def per_item_normal(n: int, dim: int, seed: int, offset: int = 0) -> torch.Tensor:
    """(n, dim) standard normal rows, row i drawn from its own generator seeded by (seed, offset + i),
    so a sample does not depend on how many others are drawn with it."""
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(rng_seed(seed * 100_003 + offset + i)))
            for i in range(n)]
    return torch.stack(rows)


@torch.no_grad()
def sample(vae, n: int = 16, *, seed: int = 0, temperature: float = 1.0, batch: int = 64,
           precision: str = "auto") -> torch.Tensor:
    """Decode n latent codes z ~ N(0, temperature² I). Returns (n, 3, S, S) float32 in [-1, 1]."""
    z = per_item_normal(n, vae.latent_dim, seed) * temperature
    return torch.cat([_vae_decode(vae, z[i:i + batch], precision) for i in range(0, n, batch)])


def _vae_decode(vae, z: torch.Tensor, precision: str) -> torch.Tensor:
    dev = model_device(vae)
    with autocast(dev, precision):
        out = vae.decode(z.to(dev))
    return out.float().clamp(-1, 1).cpu()


@torch.no_grad()
def great_circle(vae, frames: int = 32, *, seed: int = 0, temperature: float = 1.0,
                 precision: str = "auto") -> torch.Tensor:
    """Decode a loop along a random great circle of radius √dim·temperature in z space."""
    a, b = per_item_normal(2, vae.latent_dim, seed)
    a = a / a.norm()
    b = b - (b @ a) * a
    b = b / b.norm()
    r = math.sqrt(vae.latent_dim) * temperature
    t = torch.arange(frames) * (2 * math.pi / frames)
    z = r * (torch.cos(t)[:, None] * a + torch.sin(t)[:, None] * b)
    return _vae_decode(vae, z, precision)


@torch.no_grad()
def posterior_samples(vae, x: torch.Tensor, n: int = 8, *, seed: int = 0,
                      precision: str = "auto") -> torch.Tensor:
    """n decodings of z ~ q(z | x) for one image x (1, 3, H, W). Returns (n, 3, S, S)."""
    dev = model_device(vae)
    with autocast(dev, precision):
        mu, logvar = vae.encode(x.to(dev))
    eps = per_item_normal(n, vae.latent_dim, seed).to(dev)
    return _vae_decode(vae, mu.float() + (0.5 * logvar.float()).exp() * eps, precision)
