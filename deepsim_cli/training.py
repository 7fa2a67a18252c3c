"""DeePSiM training loop. Knows nothing about the terminal: it reports through `on_step`.

A run directory holds config.json, stats.jsonl, grids/step-XXXXXXX.png, state.safetensors
(everything needed to resume: G, D, optimizers, step, pause flags) and generator.safetensors
(the exported generator in the shipped format). Batches and noise are functions of
(seed, step), so a resumed run is identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import generator_config, load_checkpoint, load_run_state_tensors, run_state_tensors, save_checkpoint
from .config import TrainConfig, write_json
from .data import batch_indices, load_array, random_resized_crop, step_generator, to_float
from .deepsim_loss import DeePSiMLoss, NonFiniteLoss
from .discriminator import Discriminator, DiscriminatorConfig
from .encoders import EncoderSpec, build_encoder
from .errors import UsageError
from .generators import VAE, Generator, GeneratorConfig
from .losses import LOSS_PRESETS, LossWeights
from .precision import resolve_precision
from .utils import LineLog, clean_stale_temp_files, rng_seed

StepCallback = Callable[[int, dict[str, Any]], None]
__all__ = ["NonFiniteLoss", "Trainer", "build_comparator", "build_networks", "train"]


def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def maybe_init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE set)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
    return device


@dataclass
class Networks:
    """What `build_networks` makes for a run: G (generator or VAE) and what D needs to match it."""

    G: torch.nn.Module
    gcfg: GeneratorConfig
    cond_dim: int                 # size of the features D is conditioned on (0: unconditional)
    bridge_layer: str | None      # set when an fc G starts from a conv-layer G (fc7 from pool5)
    prior_steps: int              # steps of the generator this run continues (same layer), else 0
    init: Any = None              # the --init-generator checkpoint, if any


def build_networks(cfg: TrainConfig, encoder, vae_frozen: bool, device: torch.device) -> Networks:
    """The run's generator (or VAE) on `device`, from the config and an optional --init-generator
    (whose weights Trainer._init_generator loads). A generator continuing one of the same layer
    keeps its architecture, its bridge included, and its steps count towards the exported total;
    an fc generator started from a conv-layer one gets a bridge from the fc code to that map."""
    init = load_checkpoint(cfg.init_generator, kind="generator") if cfg.init_generator else None
    if cfg.model == "inverter":
        encoder.check_layers([cfg.layer])
        shape = tuple(encoder.layer_shapes()[cfg.layer])
    else:
        shape = (cfg.latent_dim,)
        if vae_frozen:
            encoder.check_layers(["fc6"])
    kind = "fc" if len(shape) == 1 else "conv"
    bridge: tuple[int, ...] = ()
    bridge_layer = None
    init_gcfg = generator_config(init) if init is not None else None
    continuing = init is not None and cfg.model == "inverter" and init.layer == cfg.layer
    if continuing:
        bridge = tuple(init_gcfg.bridge)
    elif init is not None and kind == "fc":
        if init.encoder == cfg.encoder and init_gcfg.kind == "conv":
            bridge, bridge_layer = init_gcfg.in_shape, init.layer
        elif cfg.model == "vae":
            raise UsageError(f"--init-generator {cfg.init_generator}: a VAE decoder starts "
                             f"from a conv-layer (pool5) generator of {cfg.encoder}")
    upsample = init_gcfg.upsample if init_gcfg is not None and (continuing or bridge) else cfg.upsample
    gcfg = GeneratorConfig(kind, shape, cfg.image_size, cfg.g_width,
                           tuple(cfg.fc_dims) if kind == "fc" else (), bridge, upsample)
    if cfg.model == "inverter":
        G: torch.nn.Module = Generator(gcfg).to(device)
        cond_dim = int(np.prod(shape)) if cfg.d_cond else 0
    else:
        vae = VAE(cfg.latent_dim, cfg.image_size, cfg.g_width, tuple(cfg.fc_dims), bridge,
                  frozen_encoder=vae_frozen, upsample=gcfg.upsample)
        if vae_frozen:
            vae.attach_encoder(encoder)
        elif cfg.encoder == "alexnet" and encoder.weights_path is not None:
            vae.init_from_alexnet(encoder.model.state_dict())
        G, cond_dim = vae.to(device), 0
    return Networks(G, gcfg, cond_dim, bridge_layer, init.train_steps if continuing else 0, init)


def _check_choices(cfg: TrainConfig) -> None:
    for name, valid in (("loss", tuple(LOSS_PRESETS)), ("model", ("inverter", "vae")),
                        ("vae_encoder", ("finetune", "frozen"))):
        if getattr(cfg, name) not in valid:
            raise UsageError(f"unknown --{name.replace('_', '-')} {getattr(cfg, name)!r}; valid: {', '.join(valid)}")


def build_comparator(cfg: TrainConfig, encoder, device: torch.device):
    """(comparator C, its layer) for L_feat: the encoder itself (shared, not a second copy) unless
    another network or other weights are asked for; at --comparator-size when given."""
    comp = EncoderSpec.parse(cfg.comparator)
    if comp.layer is None:
        raise UsageError(f"--comparator must be ENCODER:LAYER, got {cfg.comparator!r}")
    same = comp.name == cfg.encoder and cfg.encoder_weights is None
    comparator = encoder if same else build_encoder(comp.name, None, device)
    if cfg.comparator_size:
        comparator = comparator.with_input_size(cfg.comparator_size)
    comparator.check_layers([comp.layer])
    return comparator, comp.layer


class Trainer:
    """One run: builds the networks (`build_networks`, `build_comparator`), owns their state on
    disk (resume, export, grids) and hands each step to its `DeePSiMLoss` (`self.loss`), whose
    phases are the bridge, D and G steps; `train()` below is the public entry point."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, device: torch.device):
        _check_choices(cfg)
        self.cfg = cfg
        self.run_dir = run_dir
        self.device = device
        self.rank, self.world, _ = _dist_info()
        weights = LossWeights(cfg.w_feat, cfg.w_adv, cfg.w_img).select(cfg.loss)
        self.precision = resolve_precision(cfg.precision, device)
        self.encoder = build_encoder(cfg.encoder, cfg.encoder_weights, device)
        self.comparator, self.comp_layer = (build_comparator(cfg, self.encoder, device) if weights.feat
                                            else (None, EncoderSpec.parse(cfg.comparator).layer))
        if self.comp_layer is None:
            raise UsageError(f"--comparator must be ENCODER:LAYER, got {cfg.comparator!r}")
        torch.manual_seed(rng_seed(cfg.seed))
        self.vae_frozen = cfg.model == "vae" and cfg.vae_encoder == "frozen"
        # the features G (or the frozen VAE's heads) read: cached with --feature-cache
        self.feat_layer = "fc6" if self.vae_frozen else cfg.layer
        nets = build_networks(cfg, self.encoder, self.vae_frozen, device)
        self.G, self.gcfg, self.bridge_layer, self.prior_steps = nets.G, nets.gcfg, nets.bridge_layer, nets.prior_steps
        if nets.init is not None:
            self._init_generator(cfg.init_generator, nets.init)
        self.D = Discriminator(DiscriminatorConfig(cfg.d_width, nets.cond_dim)).to(device)
        self.optG = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.optD = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.step = 0
        self.loss = DeePSiMLoss(cfg, G=self.G, D=self.D, optG=self.optG, optD=self.optD, encoder=self.encoder,
                                comparator=self.comparator, comp_layer=self.comp_layer, feat_layer=self.feat_layer,
                                bridge_layer=self.bridge_layer, weights=weights, vae_frozen=self.vae_frozen,
                                device=device, precision=self.precision, world=self.world)

    def _init_generator(self, path: str, ck) -> None:
        """Warm start: G's weights from an exported generator (D and the optimizers start fresh),
        e.g. to continue a shipped generator's training in a new session. An fc-layer run may start
        from a conv-layer generator of the same encoder (fc7 from pool5): its stem and up-stack are
        copied and the bridge is fitted first (`bridge_steps`)."""
        from .checkpoint import load_state_dict_strict
        init_gcfg = generator_config(ck)
        if self.bridge_layer is not None:
            if (init_gcfg.out_size, init_gcfg.width) != (self.gcfg.out_size, self.gcfg.width):
                raise UsageError(f"--init-generator {path} makes {init_gcfg.out_size} px images at width "
                                 f"{init_gcfg.width}; set --image-size {init_gcfg.out_size} --g-width {init_gcfg.width}")
            G = self.G.decoder if self.cfg.model == "vae" else self.G
            own = G.state_dict()
            tensors = {k: v for k, v in ck.tensors.items() if not k.startswith("bridge.")}
            tensors.update({k: v for k, v in own.items() if k.startswith("bridge.")})
            load_state_dict_strict(G, tensors, f"generator {path}")
            return
        if ck.layer != self.cfg.layer or ck.encoder != self.cfg.encoder:
            raise UsageError(f"--init-generator {path} inverts {ck.encoder}:{ck.layer}, "
                             f"not {self.cfg.encoder}:{self.cfg.layer}")
        if init_gcfg != self.gcfg:
            raise UsageError(f"--init-generator {path} has another architecture than this run "
                             f"(check --image-size, --g-width, --fc-dims)")
        load_state_dict_strict(self.G, ck.tensors, f"generator {path}")

    # ------------------------------------------------------------------ state
    def state_path(self) -> Path:
        """RUN_DIR/state.safetensors: G, D, both optimizers, the step and the pause state."""
        return self.run_dir / "state.safetensors"

    def _state_parts(self) -> dict:
        return {"G": self.G, "D": self.D, "optG": self.optG, "optD": self.optD}

    def save_state(self) -> None:
        """Write state.safetensors (rank 0 only; atomic), what `--resume` continues from."""
        if self.rank != 0:
            return
        save_checkpoint(self.state_path(), run_state_tensors(self._state_parts()), kind="train-state", config=self.cfg.to_dict(),
                        encoder=self.cfg.encoder, layer=self.cfg.layer, train_steps=self.step,
                        extra={**self.loss.pause_state(), "prior_steps": str(self.prior_steps),
                               "precision": self.precision})

    def load_state(self) -> None:
        """Resume from state.safetensors; UsageError when a setting that must not change has changed."""
        ck = load_checkpoint(self.state_path(), kind="train-state", map_location=self.device)
        saved = TrainConfig.from_dict(ck.config, what=str(self.state_path()))
        fixed = ("model", "encoder", "layer", "comparator", "image_size", "g_width", "upsample", "fc_dims", "vae_encoder",
                 "d_width", "d_cond", "seed", "batch", "latent_dim")
        diff = [k for k in fixed if getattr(saved, k) != getattr(self.cfg, k)]
        if diff:
            raise UsageError(f"cannot resume {self.run_dir}: config differs in {', '.join(diff)}")
        load_run_state_tensors(self._state_parts(), ck.tensors)
        self.step = ck.train_steps
        self.loss.load_pause_state(ck.extra)
        # the steps of the --init-generator file as they were when the run began (that file may
        # since have been overwritten, e.g. by shipping this very run's export)
        if "prior_steps" in ck.extra:
            self.prior_steps = int(ck.extra["prior_steps"])

    def export_generator(self, path: Path | None = None, metrics: dict | None = None) -> Path:
        """Write the generator in the shipped format (what `deepsim invert --weights` loads)."""
        path = path or self.run_dir / "generator.safetensors"
        kind, layer = ("vae", "z") if self.cfg.model == "vae" else ("generator", self.cfg.layer)
        save_checkpoint(path, self.G.state_dict(), kind=kind,
                        config={"generator": self.gcfg.to_dict(), "train": self.cfg.to_dict()},
                        encoder=self.cfg.encoder, layer=layer, encoder_sha256=self.encoder.sha256,
                        train_steps=self.prior_steps + self.step, metrics=metrics or {},
                        extra={"precision": self.precision,
                               **({"prior_steps": str(self.prior_steps)} if self.prior_steps else {})})
        return path

    # ------------------------------------------------------------------ step
    def batch_index(self, n: int, step: int) -> torch.Tensor:
        """This rank's indices (batch,) into `n` images for `step`: a function of seed and step only."""
        idx = batch_indices(n, self.cfg.batch * self.world, step, self.cfg.seed)
        return idx[self.rank::self.world]

    def make_batch(self, images: np.ndarray | torch.Tensor, step: int) -> torch.Tensor:
        """Batch `step` as (B, 3, S, S) in [-1, 1]: random resized crops + flips, or, with the
        feature cache, the stored centre crops as they are."""
        cfg = self.cfg
        idx = self.batch_index(len(images), step)
        if isinstance(images, torch.Tensor):
            u8 = images[idx.to(images.device)]
        else:
            u8 = torch.from_numpy(images[idx.numpy()])
        x = to_float(u8.to(self.device, non_blocking=True))
        if cfg.feature_cache:
            return x
        return random_resized_crop(x, cfg.image_size, step_generator(cfg.seed, step),
                                   scale=cfg.crop_scale)

    @torch.no_grad()
    def compute_features(self, images: np.ndarray, batch: int = 64) -> torch.Tensor:
        """E(x) of every (centre-cropped) image, float16 on the CPU, for the feature cache."""
        out = []
        for i in range(0, len(images), batch):
            x = to_float(torch.from_numpy(images[i:i + batch]).to(self.device))
            out.append(self.encoder(x, [self.feat_layer])[self.feat_layer].half().cpu())
        return torch.cat(out)

    def train_step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, Any]:
        """One optimisation step (`DeePSiMLoss.step`) on images x (and cached features y) at self.step."""
        try:
            return self.loss.step(x, y, self.step)
        except NonFiniteLoss as e:
            raise NonFiniteLoss(f"{e}; last good checkpoint: {self.state_path()}") from None

    def save_grid(self, x: torch.Tensor, path: Path) -> None:
        """A PNG of the fixed images x (B, 3, S, S) in [-1, 1] over G's reconstructions of them."""
        from .figures import make_grid
        from .images import save_image
        self.G.eval()
        with torch.no_grad():
            if self.cfg.model == "inverter":
                y = self.encoder(x, [self.cfg.layer])[self.cfg.layer]
                fake = self.G(y)
            else:
                mu, _ = self.G.encode(x)
                fake = self.G.decode(mu)
        self.G.train()
        n = x.shape[0]
        cells = [t.float().clamp(-1, 1).cpu() for t in torch.cat([x, fake])]
        caps = ["real"] * n + [f"G step {self.step}"] * n
        save_image(make_grid(cells, ncols=n, captions=caps), path)  # atomic; creates the folder


def _cached_features(trainer: Trainer, images: np.ndarray, cfg: TrainConfig) -> torch.Tensor:
    """E(x) for every training image, computed once and kept in $DEEPSIM_CACHE across runs."""
    import hashlib

    from .data import cache_dir
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images[:: max(1, len(images) // 64)]).tobytes())
    layer = trainer.feat_layer
    h.update(f"{len(images)}|{cfg.encoder}|{trainer.encoder.sha256}|{layer}|{cfg.image_size}".encode())
    path = cache_dir() / f"features-{cfg.encoder}-{layer}-{h.hexdigest()[:16]}.pt"
    from .errors import WriteError
    from .utils import atomic_output, warn
    if path.is_file():  # optional: an unreadable file is computed again, an unwritable cache skipped
        try:
            feats = torch.load(path, weights_only=True)
            if not (torch.is_tensor(feats) and feats.dim() >= 2 and len(feats) == len(images)
                    and bool(torch.isfinite(feats).all())):
                raise ValueError("unexpected contents")
            return feats
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file raises many types
            warn(f"ignoring unreadable cache file {path} (corrupt: {type(e).__name__}); "
                 "computing the features again")
            try:
                path.unlink()
            except OSError:
                pass
    feats = trainer.compute_features(images)
    try:
        with atomic_output(path) as tmp:
            torch.save(feats, tmp)
    except (WriteError, OSError) as e:
        warn(f"{e}; continuing without the feature cache ($DEEPSIM_CACHE)")
    return feats


def train(cfg: TrainConfig, *, run_dir: str | os.PathLike, resume: bool = False,
          device: torch.device | str = "cpu", on_step: StepCallback | None = None,
          images: np.ndarray | torch.Tensor | None = None,
          should_stop: Callable[[int], bool] | None = None) -> Path:
    """Train a DeePSiM generator (or VAE) and export it; returns the generator checkpoint path.

    Args:
        cfg: the run's configuration.
        run_dir: output folder (created); with `resume`, the run in it continues.
        device: torch device.
        on_step: called as on_step(step, stats) after every logged step.
        images: optional preloaded (N, S, S, 3) uint8 images (skips decoding cfg.data).
        should_stop: called as should_stop(step) after every step; True ends the run there
            cleanly (state saved, generator exported, resumable), as --time-limit does.
    """
    cfg.validate()
    device = maybe_init_distributed(torch.device(device))
    run_dir = Path(run_dir)
    if not resume and (run_dir / "state.safetensors").exists():
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or pick another --out")
    if resume and not (run_dir / "state.safetensors").exists():
        raise UsageError(f"nothing to resume in {run_dir} (no state.safetensors)")
    if images is None and not cfg.data:
        raise UsageError("no training data: pass --data DIR|TAR")
    trainer = Trainer(cfg, run_dir, device)  # validates layers/comparator before the data is decoded
    images = _training_images(cfg, images)
    if resume:
        trainer.load_state()  # refuses a changed config before anything on disk is touched
    if trainer.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_files(run_dir)
        write_json(run_dir / "config.json", cfg.to_dict())
    features = _feature_cache(trainer, images, cfg) if cfg.feature_cache else None
    if device.type == "cuda" and isinstance(images, np.ndarray):
        images = torch.from_numpy(images).to(device)  # whole set on the GPU: no loader bottleneck
    try:
        _loop(trainer, images, features, on_step, should_stop)
    except KeyboardInterrupt:
        from .utils import sigint_deferred
        with sigint_deferred():  # a second Ctrl-C must not cut the save short
            _checkpoint(trainer)
        raise
    return run_dir / "generator.safetensors"


def _training_images(cfg: TrainConfig, images):
    """The preloaded images, or cfg.data decoded (rank 0 first, so the others hit its cache)."""
    if images is not None:
        return images
    rank, world, _ = _dist_info()
    if rank == 0:
        images, _ = load_array(cfg.data, cfg.load_size, limit=cfg.limit)
    if world > 1:
        dist.barrier()
        if rank != 0:
            images, _ = load_array(cfg.data, cfg.load_size, limit=cfg.limit)
    return images


def _feature_cache(trainer: Trainer, images, cfg: TrainConfig) -> torch.Tensor:
    if cfg.model != "inverter" and not trainer.vae_frozen:
        raise UsageError("--feature-cache applies to inverters and the --vae-encoder frozen VAE")
    if images.shape[1] != cfg.image_size:
        raise UsageError(f"--feature-cache needs images decoded at --image-size "
                         f"({cfg.image_size}), got {images.shape[1]} (set --load-size {cfg.image_size})")
    return _cached_features(trainer, images, cfg)


def _checkpoint(trainer: Trainer) -> None:
    """state.safetensors (every rank's view is the same; rank 0 exports) + generator.safetensors."""
    trainer.save_state()
    if trainer.rank == 0:
        trainer.export_generator()


def _loop(trainer: Trainer, images, features, on_step: StepCallback | None,
          should_stop: Callable[[int], bool] | None) -> None:
    """Steps until cfg.steps, --time-limit or should_stop: log every log_every steps (stats.jsonl
    and on_step), a grid every grid_every, a checkpoint every ckpt_every and at the end."""
    cfg, rank = trainer.cfg, trainer.rank
    fixed = trainer.make_batch(images, 0)[:8].detach().clone()
    stats_f = LineLog(trainer.run_dir / "stats.jsonl") if rank == 0 else None  # a full disk: one line
    t0, seen, t_start = time.time(), 0, time.time()
    try:
        while trainer.step < cfg.steps:
            x = trainer.make_batch(images, trainer.step)
            y = features[trainer.batch_index(len(images), trainer.step)] if features is not None else None
            stats = trainer.train_step(x, y)
            trainer.step += 1
            seen += x.shape[0] * trainer.world
            s = trainer.step
            if s % cfg.log_every == 0 or s == cfg.steps:
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()
                stats.update(step=s, img_s=seen / max(time.time() - t0, 1e-9), time=time.time() - t_start)
                t0, seen = time.time(), 0
                if stats_f:
                    stats_f.write(json.dumps(stats))
                if on_step:
                    on_step(s, stats)
            if rank == 0 and cfg.grid_every and s % cfg.grid_every == 0:
                trainer.save_grid(fixed, trainer.run_dir / "grids" / f"step-{s:07d}.png")
            stop = (cfg.time_limit is not None and time.time() - t_start > cfg.time_limit) or \
                bool(should_stop and should_stop(s))
            if s % cfg.ckpt_every == 0 or s == cfg.steps or stop:
                _checkpoint(trainer)
            if stop:
                break
    finally:
        if stats_f:
            stats_f.close()
