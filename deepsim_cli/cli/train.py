"""`deepsim train`: train a DeePSiM generator (or VAE) for one encoder layer."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer

from ..config import TrainConfig
from ._options import EncoderWeightsOpt, parse_duration, print_json, resolve
from .train_opts import (BatchOpt, BridgeStepsOpt, CkptEveryOpt, ComparatorOpt, ComparatorSizeOpt, DShiftOpt, DWidthOpt,
                         DataOpt, EncoderOpt, FeatureCacheOpt, GClipOpt, GWidthOpt, GridEveryOpt, ImageSizeOpt,
                         ImgWarmupOpt, InitGeneratorOpt, LatentDimOpt, LayerOpt, LimitOpt, LoadSizeOpt,
                         LogEveryOpt, LossOpt, LrOpt, ModelOpt, NoAmpOpt, NoDCondOpt, OutOpt, ResumeOpt, StepsOpt,
                         TimeLimitOpt, UpsampleOpt, VaeEncoderOpt, WAdvOpt, WFeatOpt, WImgOpt, WKlOpt,
                         CONFIG_FIELDS, build_config)
from .train_run import run_training


def train(
    ctx: typer.Context,
    data: DataOpt = None,
    layer: LayerOpt = None,
    encoder: EncoderOpt = None,
    encoder_weights: EncoderWeightsOpt = None,
    comparator: ComparatorOpt = None,
    comparator_size: ComparatorSizeOpt = None,
    feature_cache: FeatureCacheOpt = False,
    out: OutOpt = None,
    resume: ResumeOpt = False,
    model: ModelOpt = None,
    steps: StepsOpt = None,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    loss: LossOpt = None,
    w_feat: WFeatOpt = None,
    w_adv: WAdvOpt = None,
    w_img: WImgOpt = None,
    img_warmup: ImgWarmupOpt = None,
    image_size: ImageSizeOpt = None,
    load_size: LoadSizeOpt = None,
    g_width: GWidthOpt = None,
    upsample: UpsampleOpt = None,
    d_width: DWidthOpt = None,
    d_shift: DShiftOpt = None,
    init_generator: InitGeneratorOpt = None,
    latent_dim: LatentDimOpt = None,
    w_kl: WKlOpt = None,
    g_clip: GClipOpt = None,
    vae_encoder: VaeEncoderOpt = None,
    bridge_steps: BridgeStepsOpt = None,
    no_d_cond: NoDCondOpt = False,
    limit: LimitOpt = None,
    grid_every: GridEveryOpt = None,
    ckpt_every: CkptEveryOpt = None,
    log_every: LogEveryOpt = None,
    time_limit: TimeLimitOpt = None,
    no_amp: NoAmpOpt = False,
) -> None:
    """Train a generator that inverts one encoder layer (DeePSiM: feature + adversarial + image loss).

    The run folder gets config.json, stats.jsonl, grids/, state.safetensors (to --resume) and generator.safetensors (what `deepsim invert --weights` will load); the generator's path is printed on stdout. With --resume, options you do not pass are taken from the run's config.json.

    [bold]Examples[/bold]

      deepsim train --layer pool5 --data imagenette/train --out runs/pool5 --steps 20000

      deepsim train --layer pool5 --data photos/ --loss img --steps 2000 --image-size 64

      deepsim train --out runs/pool5 --resume --steps 40000
    """
    params = dict(locals())  # first: the options as passed (None = not passed)
    from ..errors import UsageError

    opts = resolve(ctx)
    if resume and out is None:
        raise UsageError("--resume needs --out RUN_DIR (the run to continue)")

    given: dict[str, Any] = {k: v for k, v in params.items() if k in CONFIG_FIELDS}
    given.update(  # options whose value is converted, or that set another field
        encoder_weights=str(encoder_weights) if encoder_weights is not None else None,
        data=tuple(str(p) for p in data) if data else None,
        time_limit=parse_duration(time_limit) if time_limit is not None else None,
        d_cond=False if no_d_cond else None, feature_cache=True if feature_cache else None,
        init_generator=str(init_generator) if init_generator is not None else None,
        # the global --precision; `auto` (its default) keeps a resumed run's own setting
        precision="fp32" if no_amp else (opts.precision if opts.precision != "auto" else None),
        seed=opts.seed if opts.seed_given else None,
    )
    if resume and (out / "config.json").is_file():
        try:
            base = TrainConfig.from_dict(json.loads((out / "config.json").read_text()), what=str(out / "config.json"))
        except (json.JSONDecodeError, TypeError) as e:
            raise UsageError(f"cannot read {out / 'config.json'}: {e}") from None
    else:
        base = TrainConfig(seed=opts.seed)
    cfg = build_config(base, **given)
    run_dir = out if out is not None else Path("runs") / f"{cfg.layer}-{time.strftime('%Y%m%d-%H%M%S')}"
    gen_path, last = run_training(cfg, run_dir, resume=resume, device=opts.device,
                                  show_progress=not opts.quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if opts.json:
        print_json({"generator": str(gen_path), "run_dir": str(run_dir), "step": last.get("step"),
                    "steps": cfg.steps, "stats": last})
    else:
        typer.echo(str(gen_path))
