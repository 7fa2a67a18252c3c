"""`deepsim train`: train a DeePSiM generator (or VAE) for one encoder layer."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from ..config import TrainConfig
from .train_run import run_training
from ._options import (EncoderWeightsOpt, LossChoice, lower_name, ModelChoice, nonneg_float, parse_duration,
                       positive_float, print_json, resolve)

_D = TrainConfig()
def build_config(base: TrainConfig, **given: Any) -> TrainConfig:
    """`base` with every option the user actually passed (None = not passed) applied."""
    return base.replace(**{k: v for k, v in given.items() if v is not None})


def _with_default(text: str, default: Any) -> str:
    # Typer renders a string show_default as "(value)"; this keeps its usual look
    return f"{text} [dim]\\[default: {default}][/dim]"


def train(
    ctx: typer.Context,
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", "-d", metavar="DIR|TAR", show_default=False,
        help="Training images: a folder (searched recursively), a tar file or an image; repeatable.")] = None,
    layer: Annotated[Optional[str], typer.Option(
        "--layer", "-l", metavar="LAYER", callback=lower_name, show_default=False,
        help=_with_default("Encoder layer whose features G inverts (see `deepsim layers`).", _D.layer))] = None,
    encoder: Annotated[Optional[str], typer.Option(
        "--encoder", "-e", metavar="NAME", show_default=False, help=_with_default("Encoder.", _D.encoder))] = None,
    encoder_weights: EncoderWeightsOpt = None,
    comparator: Annotated[Optional[str], typer.Option(
        "--comparator", metavar="ENCODER:LAYER", show_default=False,
        help=_with_default("Feature-loss network and layer.", _D.comparator))] = None,
    comparator_size: Annotated[Optional[int], typer.Option(
        "--comparator-size", min=16, show_default=False,
        help="Side the comparator sees (default: its native 224; the image size is ~5x cheaper on a CPU).")] = None,
    feature_cache: Annotated[bool, typer.Option(
        "--feature-cache", help="Compute E(x) once on fixed centre crops (no crop/flip augmentation; "
                                "needs --load-size = --image-size).")] = False,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", metavar="RUN_DIR", show_default=False,
        help="Run folder [dim]\\[default: runs/<layer>-<timestamp>][/dim].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    model: Annotated[Optional[ModelChoice], typer.Option(
        "--model", show_default=False, help=_with_default("inverter: G(features) → image; vae: the VAE baseline.", _D.model))] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, show_default=False,
                                                 help=_with_default("Total optimizer steps.", _D.steps))] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", "-b", min=1, show_default=False,
                                                 help=_with_default("Batch size.", _D.batch))] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", metavar="LR>=0", callback=nonneg_float,
                                                show_default=False,
                                                help=_with_default("Adam learning rate (G and D).", _D.lr))] = None,
    loss: Annotated[Optional[LossChoice], typer.Option(
        "--loss", show_default=False, help=_with_default("Which loss terms to use.", _D.loss))] = None,
    w_feat: Annotated[Optional[float], typer.Option("--w-feat", metavar="W>=0", callback=nonneg_float,
                                                    show_default=False,
                                                    help=_with_default("Weight of the feature loss.", _D.w_feat))] = None,
    w_adv: Annotated[Optional[float], typer.Option("--w-adv", metavar="W>=0", callback=nonneg_float,
                                                   show_default=False,
                                                   help=_with_default("Weight of the adversarial loss.", _D.w_adv))] = None,
    w_img: Annotated[Optional[float], typer.Option("--w-img", metavar="W>=0", callback=nonneg_float,
                                                   show_default=False,
                                                   help=_with_default("Weight of the image loss.", _D.w_img))] = None,
    img_warmup: Annotated[Optional[int], typer.Option(
        "--img-warmup", min=0, show_default=False,
        help=_with_default("Warm start: this many image-loss-only steps, then as many steps ramping the feature and adversarial terms in.", _D.img_warmup))] = None,
    image_size: Annotated[Optional[int], typer.Option(
        "--image-size", min=8, show_default=False, help=_with_default("Generator output / training crop size.", _D.image_size))] = None,
    load_size: Annotated[Optional[int], typer.Option(
        "--load-size", min=8, show_default=False,
        help=_with_default("Images are decoded once at this size, then randomly cropped.", _D.load_size))] = None,
    g_width: Annotated[Optional[float], typer.Option("--g-width", metavar="X>0", callback=positive_float,
                                                     show_default=False,
                                                     help=_with_default("Generator width multiplier.", _D.g_width))] = None,
    upsample: Annotated[Optional[Literal["deconv", "resize"]], typer.Option(
        "--upsample", show_default=False,
        help=_with_default("Generator up-sampling: deconv (the paper's 4x4 stride-2 transposed convs) or resize "
                "(nearest x2 + 3x3 conv: no checkerboard pattern).", _D.upsample))] = None,
    d_width: Annotated[Optional[float], typer.Option("--d-width", metavar="X>0", callback=positive_float,
                                                     show_default=False,
                                                     help=_with_default("Discriminator width multiplier.", _D.d_width))] = None,
    init_generator: Annotated[Optional[Path], typer.Option(
        "--init-generator", metavar="FILE", show_default=False,
        help="Warm-start G from an exported generator (e.g. a shipped one); D and the optimizers start fresh. "
             "An fc6/fc7/fc8 run may start from a pool5 generator: its up-stack is reused behind a bridge "
             "that first learns to predict pool5 from the fc code (--bridge-steps).")] = None,
    latent_dim: Annotated[Optional[int], typer.Option(
        "--latent-dim", min=1, show_default=False, help=_with_default("VAE: size of the latent code z.", _D.latent_dim))] = None,
    w_kl: Annotated[Optional[float], typer.Option(
        "--w-kl", metavar="W>=0", callback=nonneg_float, show_default=False, help=_with_default("VAE: weight of the KL term (per nat, summed over z).", _D.w_kl))] = None,
    g_clip: Annotated[Optional[float], typer.Option(
        "--g-clip", metavar="X>=0", callback=nonneg_float, show_default=False,
        help="Clip G's gradient norm at this multiple of its running mean (0: off). "
             "[default: 2 for --model vae, off for inverters]")] = None,
    vae_encoder: Annotated[Optional[str], typer.Option(
        "--vae-encoder", metavar="finetune|frozen", show_default=False,
        help=_with_default("VAE: train conv1–fc6 too (finetune) or keep the shipped AlexNet's fixed (frozen: small "
                "checkpoint, fc6 features cacheable with --feature-cache).", _D.vae_encoder))] = None,
    bridge_steps: Annotated[Optional[int], typer.Option(
        "--bridge-steps", min=0, show_default=False,
        help=_with_default("With an fc layer and a pool5 --init-generator: bridge-only regression steps before the DeePSiM loss.", _D.bridge_steps))] = None,
    no_d_cond: Annotated[bool, typer.Option("--no-d-cond", help="Do not feed the features to D.")] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, show_default=False,
                                                 help="Use only the first N images.")] = None,
    grid_every: Annotated[Optional[int], typer.Option(
        "--grid-every", min=0, show_default=False, help=_with_default("Write a reals/fakes grid every N steps (0 = never).", _D.grid_every))] = None,
    ckpt_every: Annotated[Optional[int], typer.Option(
        "--ckpt-every", min=1, show_default=False, help=_with_default("Checkpoint every N steps.", _D.ckpt_every))] = None,
    log_every: Annotated[Optional[int], typer.Option(
        "--log-every", min=1, show_default=False, help=_with_default("Log stats (and update progress) every N steps.", _D.log_every))] = None,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time-limit", metavar="DURATION", show_default=False,
        help="Stop cleanly (with a checkpoint) after this long: 3600, 90m, 2h.")] = None,
    no_amp: Annotated[bool, typer.Option("--no-amp", hidden=True,
                                         help="Deprecated: same as the global --precision fp32.")] = False,
) -> None:
    """Train a generator that inverts one encoder layer (DeePSiM: feature + adversarial + image loss).

    The run folder gets config.json, stats.jsonl, grids/, state.safetensors (to --resume) and generator.safetensors (what `deepsim invert --weights` will load); the generator's path is printed on stdout. With --resume, options you do not pass are taken from the run's config.json.

    [bold]Examples[/bold]

      deepsim train --layer pool5 --data imagenette/train --out runs/pool5 --steps 20000

      deepsim train --layer pool5 --data photos/ --loss img --steps 2000 --image-size 64

      deepsim train --out runs/pool5 --resume --steps 40000
    """
    from ..errors import UsageError

    opts = resolve(ctx)
    if resume and out is None:
        raise UsageError("--resume needs --out RUN_DIR (the run to continue)")

    given: dict[str, Any] = dict(
        layer=layer, encoder=encoder, comparator=comparator, model=model, steps=steps, batch=batch,
        lr=lr, loss=loss, w_feat=w_feat, w_adv=w_adv, w_img=w_img, img_warmup=img_warmup,
        image_size=image_size, load_size=load_size, g_width=g_width, upsample=upsample, d_width=d_width, limit=limit,
        grid_every=grid_every, ckpt_every=ckpt_every, log_every=log_every,
        encoder_weights=str(encoder_weights) if encoder_weights is not None else None,
        data=tuple(str(p) for p in data) if data else None,
        time_limit=parse_duration(time_limit) if time_limit is not None else None,
        d_cond=False if no_d_cond else None,
        comparator_size=comparator_size, feature_cache=True if feature_cache else None,
        init_generator=str(init_generator) if init_generator is not None else None,
        bridge_steps=bridge_steps, vae_encoder=vae_encoder, latent_dim=latent_dim, w_kl=w_kl,
        g_clip=g_clip,
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
