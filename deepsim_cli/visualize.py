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
from .precision import autocast, frozen_copy, model_device, resolve_precision
from .utils import rng_seed


@dataclass
class CodeBounds:
    """Per-unit lower and upper bounds of the generator's input code."""

    lo: torch.Tensor
    hi: torch.Tensor

    def clip(self, h: torch.Tensor) -> torch.Tensor:
        """Codes (B, D) clamped elementwise into [lo, hi] (each (D,))."""
        return torch.maximum(torch.minimum(h, self.hi.to(h)), self.lo.to(h))

    def save(self, path: str | Path, *, source: str = "") -> None:
        """Write lo/hi as a kind='code-bounds' safetensors file (atomic); `source` names the data."""
        save_checkpoint(path, {"lo": self.lo, "hi": self.hi}, kind="code-bounds", extra={"source": source})

    @classmethod
    def load(cls, path: str | Path) -> "CodeBounds":
        """Bounds from a `kind=code-bounds` safetensors file (tensors `lo`, `hi`, each of the code's shape)."""
        t = load_checkpoint(path, kind="code-bounds").tensors
        return cls(t["lo"].float(), t["hi"].float())


def bounds_path(generator_path: str | Path) -> Path:
    """Where the bounds of a generator are cached: beside it, <name>.bounds.safetensors."""
    p = Path(generator_path)
    return p.with_name(p.name.replace(".safetensors", "") + ".bounds.safetensors")


def shipped_bounds_path(generator_path: str | Path) -> Path:
    """The bounds of a shipped generator: the shipped file wherever the weights resolver finds it,
    else (none shipped, or not fetched) the path beside the generator."""
    from . import weights_store

    beside = bounds_path(generator_path)
    if weights_store.entry(beside.name) is None:
        return beside
    return weights_store.optional(beside.name) or beside


def generator_bounds_path(weights: str | Path | None, code_layer: str) -> Path:
    """The bounds file of a generator: beside a user's `weights` file, or (None: the shipped
    generator of `code_layer`) the shipped bounds wherever they are found."""
    if weights is not None:
        return bounds_path(weights)
    from .inference import shipped_generator_path
    return shipped_bounds_path(shipped_generator_path(code_layer))


def load_bounds(path: str | Path) -> CodeBounds:
    """CodeBounds.load, or a UsageError saying how to make the file when it is missing."""
    if not Path(path).is_file():
        raise UsageError(f"no code bounds at {path}; run `deepsim visualize --compute-bounds --data DIR` "
                         "or pass --no-bounds")
    return CodeBounds.load(path)


@torch.no_grad()
def compute_bounds(codes: torch.Tensor, n_std: float = 3.0) -> CodeBounds:
    """Bounds from real images' codes (N, D): [min(0, lowest code), n_std·std] per unit."""
    codes = codes.flatten(1).float()
    lo = torch.minimum(codes.min(0).values, torch.zeros(codes.shape[1]))
    hi = torch.maximum(n_std * codes.std(0), lo + 1e-3)
    return CodeBounds(lo, hi)


def bounds_from_data(encoder: Encoder, layer: str, data: Sequence[str | Path], image_size: int, *,
                     precision: str = "auto", batch: int = 64) -> tuple[CodeBounds, int]:
    """Code bounds from real images: every image of `data` (folders / tars) decoded at
    `image_size`, encoded to `layer` by `encoder`, then compute_bounds. Returns (bounds, images)."""
    from .data import load_array
    from .encoders import encode_batched

    arr, _ = load_array([str(d) for d in data], image_size)
    with torch.no_grad():
        codes = encode_batched(encoder, arr, layer, batch, precision=precision)
    return compute_bounds(codes), len(arr)


def write_bounds(encoder: Encoder, layer: str, data: Sequence[str | Path], image_size: int, path: str | Path, *,
                 keep_existing: bool = False, precision: str = "auto") -> int:
    """bounds_from_data saved to `path` (with the data as its source); `keep_existing`: refuse
    (UsageError) to replace a file already there, e.g. the shipped generator's bounds. Returns the
    number of images used."""
    if keep_existing and Path(path).is_file():
        raise UsageError(f"{path} ships with deepsim; --compute-bounds will not replace it without "
                         "--force (to use bounds of your own, pass --weights with your generator)")
    found, n_images = bounds_from_data(encoder, layer, data, image_size, precision=precision)
    found.save(path, source=", ".join(str(d) for d in data))
    return n_images


def imagenet_classes() -> list[str]:
    """ImageNet class names in index order (torchvision's metadata, copied into
    resources/imagenet_classes.txt so that torchvision need not be imported)."""
    path = Path(__file__).resolve().parent / "resources" / "imagenet_classes.txt"
    return path.read_text().splitlines()


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
    """One visualisation run of `visualize`: the image, its code, the unit's activation and its history."""
    image: torch.Tensor            # (3, S, S) in [-1, 1]
    code: torch.Tensor             # the final code
    activation: float              # the unit's final activation
    history: list[float] = field(default_factory=list)
    frames: list[torch.Tensor] = field(default_factory=list)   # every save_every steps
    frame_acts: list[float] = field(default_factory=list)


OBJECTIVES = ("activation", "logprob")


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


Objective = Callable[[torch.Tensor], torch.Tensor]
"""Features of the target layer for a batch of runs (B, ...) → one score per run (B,)."""


def unit_objective(units: Sequence[int], xy: tuple[int, int] | None = None, *, logprob: bool = False) -> Objective:
    """Run k's score is unit `units[k]` of the features (for conv maps at the centre, or xy);
    with `logprob` the log-softmax of a classifier layer's unit (the other classes pushed down)."""
    units = list(units)

    def score(feats: torch.Tensor) -> torch.Tensor:
        if logprob:
            if feats.dim() != 2:
                raise UsageError("--objective logprob needs a classifier layer (a vector of class scores)")
            feats = feats.log_softmax(1)
        for u in set(units):
            unit_activation(feats[:1], u, xy)  # range checks with the clean error
        idx = torch.arange(len(units), device=feats.device)
        unit_t = torch.tensor(units, device=feats.device)
        if feats.dim() == 2:
            return feats[idx, unit_t]
        hh, ww = feats.shape[-2:]
        x, y = xy if xy is not None else (ww // 2, hh // 2)
        return feats[idx, unit_t, y, x]

    return score


Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""A random, differentiable image transform (B, 3, H, W) → (B, 3, H, W) drawn from the generator."""


def jitter(pixels: int) -> Transform:
    """Shift each image by up to ±`pixels` in x and y (reflect padding; one draw per image)."""
    def shift(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        b, _, hh, ww = x.shape
        j = min(pixels, hh - 1, ww - 1)
        off = torch.randint(0, 2 * j + 1, (b, 2), generator=rng).tolist()
        xp = torch.nn.functional.pad(x, (j, j, j, j), mode="reflect") if j else x
        return torch.cat([xp[k:k + 1, :, o[0]:o[0] + hh, o[1]:o[1] + ww] for k, o in enumerate(off)])
    return shift


def random_flip(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=rng) < 0.5).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def apply_views(x: torch.Tensor, views: int, transforms: Sequence[Transform], rng: torch.Generator) -> torch.Tensor:
    """`views` copies of a batch, each through `transforms` in order, stacked view-major:
    (views·B, C, H, W), copy v of image k at row v·B + k (no copy when views is 1 and there are
    no transforms)."""
    if views == 1 and not transforms:
        return x
    out = []
    for _ in range(views):
        v = x
        for t in transforms:
            v = t(v, rng)
        out.append(v)
    return torch.cat(out)


def jitter_views(x: torch.Tensor, views: int, jitter_px: int, rng: torch.Generator) -> torch.Tensor:
    """`views` randomly shifted (±jitter_px, reflect padding) and flipped copies of a batch,
    stacked view-major (apply_views with [jitter(jitter_px), random_flip])."""
    return apply_views(x, views, default_transforms(jitter_px, views), rng)


def default_transforms(jitter_px: int, views: int) -> list[Transform]:
    """The CLI's --jitter/--views: none for the paper's plain ascent, else shift then flip."""
    return [] if views == 1 and jitter_px == 0 else [jitter(jitter_px), random_flip]


class CodeParam:
    """Images parameterised through a generator: image = G(h), h clipped to per-unit bounds."""

    def __init__(self, G: torch.nn.Module, h: torch.Tensor, bounds: CodeBounds | None = None):
        self.G, self.bounds = G, bounds
        self.start = self.project(h)

    def render(self, h: torch.Tensor) -> torch.Tensor:
        """Codes (B, *code shape) → images (B, 3, S, S) in [-1, 1] space through G."""
        return self.G(h)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The codes clipped into the bounds (unchanged without bounds)."""
        return self.bounds.clip(h) if self.bounds is not None else h


class PixelParam:
    """Images as their own parameters (the pixel baseline): image = x, kept in [-1, 1]."""

    def __init__(self, x: torch.Tensor):
        self.start = x

    def render(self, x: torch.Tensor) -> torch.Tensor:
        """The parameters are the images (B, 3, S, S)."""
        return x

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The images clamped to [-1, 1]."""
        return x.clamp(-1, 1)


@dataclass
class Ascent:
    """What `ascend` returns for a batch of runs."""
    images: torch.Tensor           # (B, 3, S, S) float32 in [-1, 1], the final parameters rendered
    raw: torch.Tensor              # the same render before clamping to [-1, 1]
    params: torch.Tensor           # (B, ...) the final parameters (codes or pixels)
    history: list[list[float]]     # per step, each run's score (mean over views) before the step
    frames: list[torch.Tensor]     # every save_every steps: (B, 3, S, S) renders


def ascend(param: CodeParam | PixelParam, target: Callable, layer: str, objective: Objective, *,
           iters: int = 200, lr: tuple[float, float] = (1.0, 1e-10), decay: float = 0.01,
           transforms: Sequence[Transform] = (), views: int = 1, rng: torch.Generator | None = None,
           pre_activation: bool = False, precision: str = "auto", save_every: int = 0,
           on_step: Callable[[int, list[float]], None] | None = None,
           report: Objective | None = None) -> Ascent:
    """The DGN-AM optimiser for any parameterisation: each step renders the images, scores them
    with `objective` on `target`'s `layer` (averaged over `views` transformed copies), moves every
    run's parameters by step(i)/mean|gradient| along its gradient (step decaying linearly over
    `lr`), multiplies them by (1 − decay) and projects them (bounds or pixel range).

    `report` (default `objective`) is what `history`/`on_step` record, from the same forward pass.
    `target` is called as target(images, [layer], pre_activation=True) when `pre_activation`.
    """
    dev = param.start.device
    rng = rng if rng is not None else torch.Generator().manual_seed(0)
    p = param.start
    red = tuple(range(1, p.dim()))
    pre = {"pre_activation": True} if pre_activation else {}
    history: list[list[float]] = []
    frames: list[torch.Tensor] = []
    n = p.shape[0]
    for i in range(iters):
        p = p.detach().requires_grad_(True)
        with autocast(dev, precision):
            x = param.render(p)
            feats = target(apply_views(x, views, transforms, rng), [layer], **pre)[layer].float()
        # views are stacked view-major: view v of run k is row v·n + k
        obj = torch.stack([objective(feats[v * n:(v + 1) * n]) for v in range(views)]).mean(0)
        shown = obj if report is None else torch.stack(
            [report(feats[v * n:(v + 1) * n]) for v in range(views)]).mean(0)
        (grad,) = torch.autograd.grad(obj.sum(), p)
        step = lr[0] + (lr[1] - lr[0]) * i / max(1, iters - 1)
        with torch.no_grad():
            norm = grad.abs().mean(dim=red, keepdim=True).clamp_min(1e-12)
            p = param.project((p + step / norm * grad) * (1 - decay))
        a = shown.detach().cpu().tolist()
        history.append(a)
        if on_step:
            on_step(i, a)
        if save_every and i % save_every == 0:
            frames.append(x.detach().float().clamp(-1, 1).cpu())
    with torch.no_grad(), autocast(dev, precision):
        x = param.render(p).float()
    return Ascent(x.clamp(-1, 1), x, p.detach(), history, frames)


def visualize(G: torch.nn.Module, target: Encoder, layer: str, unit: int, *, code_shape: Sequence[int],
              xy: tuple[int, int] | None = None, iters: int = 200, lr: tuple[float, float] = (1.0, 1e-10),
              decay: float = 0.01, bounds: CodeBounds | None = None, init: torch.Tensor | None = None,
              seed: int = 0, save_every: int = 0, objective: str = "activation",
              jitter: int = 0, views: int = 1, precision: str = "auto",
              on_step: Callable[[int, float], None] | None = None) -> VisResult:
    """Maximise one unit of `target`'s `layer` over the code of generator G.

    Args:
        G: generator mapping codes (1, *code_shape) to images (1, 3, S, S).
        target: the network whose unit is maximised (any encoder).
        layer, unit, xy: which activation (for conv layers the centre unless xy is given).
        lr: (start, end) of the linearly decaying step size. The paper starts at 8 for Caffe's
            AlexNet; this AlexNet (normalised inputs) has fc6 codes with upper bounds ~4, and 8
            makes the early steps jump between the bounds (benchmarks/RESULTS.md): 1.0 here.
        decay: L2 decay: the code is multiplied by (1 − decay) each step.
        bounds: per-unit clip of the code; init: starting code (default: small random code).
        objective: "activation" (the paper: the unit's raw value) or "logprob" (log-softmax of a
            classifier layer's unit: the other classes are pushed down too).
        jitter, views: robustness to small shifts (not in the paper): each step the objective is
            averaged over `views` copies of G(h), each shifted by up to ±`jitter` pixels (reflect
            padding) and flipped at random; jitter 0 and views 1 is the paper's plain ascent.
        precision: auto | bf16 | fp32 for G and the target (the objective and step in float32).
    """
    cb = (lambda i, acts: on_step(i, acts[0])) if on_step else None
    return visualize_many(G, target, layer, [unit], code_shape=code_shape, xy=xy, iters=iters, lr=lr,
                          decay=decay, bounds=bounds, init=init, seeds=[seed], save_every=save_every,
                          objective=objective, jitter=jitter, views=views, precision=precision,
                          on_step=cb)[0]


def visualize_many(G: torch.nn.Module, target: Encoder, layer: str, units: Sequence[int], *,
                   code_shape: Sequence[int], seeds: Sequence[int] | None = None,
                   xy: tuple[int, int] | None = None, iters: int = 200,
                   lr: tuple[float, float] = (1.0, 1e-10), decay: float = 0.01,
                   bounds: CodeBounds | None = None, init: torch.Tensor | None = None, save_every: int = 0,
                   objective: str = "activation", jitter: int = 0, views: int = 1, precision: str = "auto",
                   on_step: Callable[[int, list[float]], None] | None = None) -> list[VisResult]:
    """visualize() for several (unit, seed) pairs at once, as one batch: every code has its own
    step normalisation, so each run is the same as alone (the networks have no batch coupling).

    `units` and `seeds` pair up (a single seed or unit is repeated); `init` is one code shared
    by all runs. With `jitter`/`views` the random shifts are drawn for the whole batch (seeded by
    the first seed), so a run's shifts then depend on the batch it is in. The activation reported
    per step (`history`, `on_step`) is then the mean over the views (no extra forward pass for the
    unshifted image); the final `activation` is always the unshifted image's. For a layer whose
    tap is a ReLU (conv1–conv5, fc6, fc7 of AlexNet) the objective, and so `history`, is the
    unit's pre-activation; the final `activation` is the post-ReLU value.
    """
    target.check_layers([layer])
    if jitter < 0 or views < 1:
        raise UsageError(f"jitter must be >= 0 and views >= 1, got {jitter} and {views}")
    if objective not in OBJECTIVES:
        raise UsageError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    seeds = list(seeds) if seeds is not None else [0]
    n = max(len(units), len(seeds))
    if len(units) not in (1, n) or len(seeds) not in (1, n):
        raise UsageError(f"{len(units)} units and {len(seeds)} seeds do not pair up")
    units = list(units) * (n // len(units))
    seeds = seeds * (n // len(seeds))
    dev = model_device(G)
    if resolve_precision(precision, dev) == "bf16":
        G = frozen_copy(G, torch.bfloat16)  # G is fixed here: no per-step weight casts
    if init is not None:
        h = init.detach().clone().float().reshape(1, *code_shape).repeat(n, *[1] * len(code_shape)).to(dev)
    else:  # codes are post-ReLU: small positive random start, one generator per run
        h = torch.stack([torch.randn(*code_shape, generator=torch.Generator().manual_seed(rng_seed(s))).abs() * 0.1
                         for s in seeds]).to(dev)
    score = unit_objective(units, xy, logprob=objective == "logprob")
    # the unit's pre-activation where its tap is a ReLU: a unit that is off at the start has no
    # gradient after it (hidden units stayed at 0 from the default start); any callable target
    # works, only an Encoder knows its ReLU taps
    pre = objective == "activation" and isinstance(target, Encoder)
    run = ascend(CodeParam(G, h, bounds), target, layer, score, iters=iters, lr=lr, decay=decay,
                 transforms=default_transforms(jitter, views), views=views,
                 rng=torch.Generator().manual_seed(rng_seed(seeds[0])), pre_activation=pre, precision=precision,
                 save_every=save_every, on_step=on_step,
                 report=None if objective == "activation" else unit_objective(units, xy))
    with torch.no_grad(), autocast(dev, precision):
        final = unit_objective(units, xy)(target(run.raw, [layer])[layer].float()).cpu().tolist()  # post-ReLU
    results = []
    for k in range(n):
        r = VisResult(image=run.images[k].cpu(), code=run.params[k:k + 1].cpu(), activation=final[k],
                      history=[a[k] for a in run.history])
        if save_every:
            r.frames = [f[k] for f in run.frames] + [r.image]
            r.frame_acts = [run.history[j][k] for j in range(0, iters, save_every)] + [final[k]]
        results.append(r)
    return results


def check_runs(runs: Sequence[VisResult], pairs: Sequence[tuple[int, int]], layer: str) -> str | None:
    """DeepsimError when any run diverged (activation NaN or inf: nothing should be written);
    else a warning line when hidden units (not fc8/logits, whose scores may be negative) ended
    off (activation <= 0), or None. `pairs`: the (unit, seed) of each run, in order."""
    import math

    from .errors import DeepsimError

    if not all(math.isfinite(r.activation) for r in runs):
        raise DeepsimError("the optimisation diverged (activation NaN or inf); nothing was written: "
                           "try a smaller --lr-start")
    dead = [(u, s) for (u, s), r in zip(pairs, runs) if not r.activation > 0]
    if not dead or layer in ("fc8", "logits"):
        return None
    return (f"warning: {len(dead)} run(s) ended with the unit off (activation <= 0), e.g. unit "
            f"{dead[0][0]} seed {dead[0][1]}: try more --iters, another --seeds or --init IMG")


def describe_runs(runs: Sequence[VisResult], pairs: Sequence[tuple[int, int]], target: Encoder, layer: str, *,
                  precision: str = "auto") -> list[dict]:
    """One record per run: unit, label (the ImageNet class for fc8/logits, else "unit N"), seed,
    final activation and, for a classifier layer, the softmax probability of the unit's class.

    Args:
        runs: visualize_many's results; pairs: the (unit, seed) of each run, in order.
    """
    from .encoders import encode_batched

    names = imagenet_classes() if layer in ("fc8", "logits") else None
    probs = (encode_batched(target, torch.stack([r.image for r in runs]), layer, 64, precision=precision).softmax(1)
             if names is not None else None)
    out = []
    for k, ((u, s), r) in enumerate(zip(pairs, runs)):
        out.append({"unit": u, "label": names[u] if names is not None and u < len(names) else f"unit {u}",
                    "seed": s, "activation": r.activation, "prob": float(probs[k, u]) if probs is not None else None})
    return out


def save_visualization(runs: Sequence[VisResult], results: Sequence[dict], path: str | Path, *, ncols: int,
                       save_every: int = 0, code_file: str | Path | None = None, code_layer: str = "fc6",
                       encoder: Encoder | None = None) -> dict[str, str]:
    """Write the labelled grid of `runs` (captions from describe_runs' `results`: class, final
    activation, probability) to `path` ('-': stdout), with save_every > 0 the optimisation GIF
    beside it (<path>.gif, a frame every save_every steps), and with `code_file` the optimised
    codes (kind='code', layer `code_layer` of `encoder`) — all of them or none. Returns
    {"grid", "gif", "code"} paths of what was written."""
    from .codes import write_codes
    from .figures import make_grid, save_gif
    from .images import save_image
    from .utils import all_or_nothing

    caps = [f"{d['label']}\na={d['activation']:.2f}" + (f" p={d['prob']:.2f}" if d["prob"] is not None else "")
            for d in results]
    outputs = {"grid": str(path)}
    with all_or_nothing():
        save_image(make_grid([r.image for r in runs], ncols=ncols, captions=caps), path)
        if save_every and str(path) != "-":
            gif_path = Path(path).with_suffix(".gif")
            frames = [f for r in runs for f in r.frames]
            fcaps = [f"{d['label']} step {k * save_every}\na={a:.2f}" for d, r in zip(results, runs)
                     for k, a in enumerate(r.frame_acts)]
            save_gif(frames, gif_path, duration_ms=120, captions=fcaps)
            outputs["gif"] = str(gif_path)
        if code_file is not None:
            write_codes(code_file, {code_layer: torch.cat([r.code for r in runs])}, encoder,
                        [f"{r['label']} seed {r['seed']}" for r in results])
            outputs["code"] = str(code_file)
    return outputs
