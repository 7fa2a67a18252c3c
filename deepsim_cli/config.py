"""Frozen configuration dataclasses; the resolved config is written beside every run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .loss_weights import DEFAULT_WEIGHTS


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded in run_dir/config.json).

    Loss weights multiply the normalised terms documented in losses.py.
    """

    model: str = "inverter"           # "inverter" (G: features → image) or "vae"
    encoder: str = "alexnet"          # network being inverted
    encoder_weights: str | None = None
    layer: str = "pool5"
    comparator: str = "alexnet:pool5"  # encoder:layer for L_feat
    comparator_size: int | None = None  # side the comparator sees (None: its native 224); CPU runs use image_size
    feature_cache: bool = False       # precompute E(x) once on fixed centre crops (no crop/flip augmentation)
    data: tuple[str, ...] = ()
    image_size: int = 128             # generator output = training crop size
    load_size: int = 144              # images are decoded once at this size, then randomly cropped
    crop_scale: tuple[float, float] = (0.6, 1.0)
    limit: int | None = None          # use only the first N images
    steps: int = 10_000
    batch: int = 64
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    loss: str = "full"                # img | img+adv | img+feat | feat+adv | full
    w_feat: float = DEFAULT_WEIGHTS.feat
    w_adv: float = DEFAULT_WEIGHTS.adv
    w_img: float = DEFAULT_WEIGHTS.img
    img_warmup: int = 0               # image-loss-only steps, then as many steps ramping feat/adv in
    w_kl: float = 3e-5                # VAE only: per nat of KL summed over latent units. With λ_img 2 on
                                      # the normalised image loss this is a Gaussian decoder of σ ≈ 0.3 (on
                                      # [-1, 1]); 0.002 collapsed the posterior (KL ~150 nats, every input
                                      # decoded to the same blur), 3e-5 keeps ~600–900 nats and the content
    latent_dim: int = 1024            # VAE only
    vae_encoder: str = "finetune"     # VAE only: "finetune" conv1–fc6 too, or keep the shipped AlexNet's "frozen"
    g_clip: float | None = None       # clip G's gradient norm at this multiple of its running mean
                                      # (None: 2.0 for the VAE, off for inverters; 0: off)
    g_width: float = 1.0
    upsample: str = "deconv"          # generator up-sampling: "deconv" (paper Table 1) or "resize" (no checkerboard)
    init_generator: str | None = None  # warm-start G from an exported generator file
    bridge_steps: int = 500           # fc run initialised from a conv-layer (pool5) generator: steps that
                                      # first fit the bridge (fc code → pool5) by regression
    fc_dims: tuple[int, ...] = (1024, 1024)
    d_width: float = 1.0
    d_cond: bool = True               # feed y to D (the paper does)
    d_shift: int = 0                  # translate D's inputs (real and fake) by a random -N..N px per image
                                      # (DiffAugment-style): G cannot lock a periodic pattern to the
                                      # phase D's stride-4 first conv samples (fc7 v2's stripes)
    d_pause_below: float = 0.1        # pause D while L_discr / L_adv < this
    d_resume_above: float = 0.5       # ... until it rises above this
    g_pause_above: float = 10.0       # skip G's update while L_discr / L_adv > this
    seed: int = 0
    precision: str = "auto"           # auto | bf16 | fp32: bf16 autocast on CUDA and bf16-capable CPUs
    log_every: int = 10
    grid_every: int = 500             # 0: no grids
    ckpt_every: int = 500
    time_limit: float | None = None   # seconds; stop cleanly (and checkpoint) when exceeded

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = True, what: str = "config") -> "TrainConfig":
        """The config a dict describes (run_dir/config.json, a checkpoint's header), after
        `migrate_config` brings an old run's keys up to date; lists become tuples.

        An unknown key is an error (UsageError naming it and `what`) unless `strict=False`, which
        drops it; the result is checked with `validate()`."""
        if not isinstance(d, dict):
            raise UsageError(f"{what}: expected a JSON object of training options, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {}
        for k, v in migrate_config(d).items():
            if k not in names:
                if strict:
                    import difflib
                    near = difflib.get_close_matches(k, names, n=1)
                    raise UsageError(f"{what}: unknown training option {k!r}"
                                     + (f" (did you mean {near[0]!r}?)" if near else "")
                                     + "; written by a newer deepsim, or edited by hand?")
                continue
            if isinstance(v, list):
                v = tuple(v)
            kw[k] = v
        try:
            cfg = cls(**kw)
        except TypeError as e:
            raise UsageError(f"{what}: {e}") from None
        return cfg.validate(what)

    def validate(self, what: str = "config") -> "TrainConfig":
        """Raise UsageError (one line naming the option) for a value no run can use; returns self."""
        import math

        from .loss_weights import LOSS_PRESETS

        def bad(name: str, why: str) -> UsageError:
            return UsageError(f"{what}: {name} = {getattr(self, name)!r}: {why}")

        choices = {"model": ("inverter", "vae"), "loss": tuple(LOSS_PRESETS), "upsample": ("deconv", "resize"),
                   "precision": ("auto", "bf16", "fp32"), "vae_encoder": ("finetune", "frozen")}
        for name, ok in choices.items():
            if getattr(self, name) not in ok:
                raise bad(name, f"expected one of {', '.join(ok)}")
        for name in ("encoder", "layer", "comparator"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise bad(name, "expected a non-empty name")
        if ":" not in self.comparator:
            raise bad("comparator", "expected ENCODER:LAYER, e.g. alexnet:pool5")
        if not (isinstance(self.data, tuple) and all(isinstance(x, str) for x in self.data)):
            raise bad("data", "expected a list of paths")
        ints = {"image_size": 8, "load_size": 8, "steps": 1, "batch": 1, "latent_dim": 1, "log_every": 1,
                "grid_every": 0, "ckpt_every": 1, "img_warmup": 0, "bridge_steps": 0, "seed": 0, "d_shift": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise bad(name, f"expected an integer >= {lo}")
        for name in ("limit", "comparator_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise bad(name, "expected a positive integer or null")
        if self.d_shift >= self.image_size // 2:
            raise bad("d_shift", f"expected less than half of image_size {self.image_size}")
        if self.load_size < self.image_size:
            raise bad("load_size", f"smaller than image_size {self.image_size} (images are cropped from it)")
        positive = ("lr", "g_width", "d_width")
        nonneg = ("w_feat", "w_adv", "w_img", "w_kl", "d_pause_below", "d_resume_above", "g_pause_above")
        for name in positive + nonneg:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0 or (name in positive and v == 0):
                raise bad(name, "expected a finite number " + ("> 0" if name in positive else ">= 0"))
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise bad(name, "expected a number in [0, 1)")
        cs = self.crop_scale
        if not (isinstance(cs, tuple) and len(cs) == 2 and all(isinstance(x, (int, float)) for x in cs)
                and 0 < cs[0] <= cs[1] <= 1):
            raise bad("crop_scale", "expected two numbers 0 < min <= max <= 1")
        for name in ("g_clip", "time_limit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
                raise bad(name, "expected a number >= 0 or null")
        if not (isinstance(self.fc_dims, tuple) and self.fc_dims and
                all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in self.fc_dims)):
            raise bad("fc_dims", "expected a list of positive integers")
        for name in ("feature_cache", "d_cond"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "expected true or false")
        return self

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


def migrate_config(d: dict[str, Any]) -> dict[str, Any]:
    """Old run configs in today's terms, one named step per change of the format (a run started
    with an older deepsim resumes with this one):

    - `amp` (bf16 autocast on CUDA only) became `precision` ("auto" / "fp32")."""
    d = dict(d)
    if "amp" in d:
        amp = d.pop("amp")
        d.setdefault("precision", "auto" if amp else "fp32")
    return d


def write_json(path: str | Path, obj: Any) -> None:
    """`obj` as sorted, indented JSON at `path`, written atomically (temp file + rename)."""
    from .utils import atomic_output
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
