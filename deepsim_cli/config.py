"""Frozen configuration dataclasses; the resolved config is written beside every run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    d_pause_below: float = 0.1        # pause D while L_discr / L_adv < this
    d_resume_above: float = 0.5       # ... until it rises above this
    g_pause_above: float = 10.0       # skip G's update while L_discr / L_adv > this
    seed: int = 0
    precision: str = "auto"           # auto | bf16 | fp32: bf16 autocast on CUDA and bf16-capable CPUs
    log_every: int = 10
    grid_every: int = 500
    ckpt_every: int = 500
    time_limit: float | None = None   # seconds; stop cleanly (and checkpoint) when exceeded

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name: f for f in dataclasses.fields(cls)}
        kw = {}
        for k, v in migrate_config(d).items():
            if k not in names:
                continue
            if isinstance(v, list):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


def migrate_config(d: dict[str, Any]) -> dict[str, Any]:
    """Old run configs in today's terms: `amp` (bf16 on CUDA only) became `precision`."""
    d = dict(d)
    if "amp" in d:
        amp = d.pop("amp")
        d.setdefault("precision", "auto" if amp else "fp32")
    return d


def write_json(path: str | Path, obj: Any) -> None:
    from .utils import atomic_output
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
