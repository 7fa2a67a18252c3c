"""`deepsim train`'s options, declared once here (the command is in train.py). Every option
defaults to None = "not passed", so that a resumed run keeps its config.json's value; the help
shows TrainConfig's default."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from ..config import TrainConfig
from ._options import LossChoice, ModelChoice, lower_name, nonneg_float, positive_float

_D = TrainConfig()
CONFIG_FIELDS = frozenset(f.name for f in fields(TrainConfig))  # options named as a config field


def build_config(base: TrainConfig, **given: Any) -> TrainConfig:
    """`base` with every option the user actually passed (None = not passed) applied."""
    return base.replace(**{k: v for k, v in given.items() if v is not None})


def _with_default(text: str, default: Any) -> str:
    # Typer renders a string show_default as "(value)"; this keeps its usual look
    return f"{text} [dim]\\[default: {default}][/dim]"


DataOpt = Annotated[Optional[list[Path]], typer.Option(
        "--data", "-d", metavar="DIR|TAR", show_default=False,
        help="Training images: a folder (searched recursively), a tar file or an image; repeatable.")]

LayerOpt = Annotated[Optional[str], typer.Option(
        "--layer", "-l", metavar="LAYER", callback=lower_name, show_default=False,
        help=_with_default("Encoder layer whose features G inverts (see `deepsim layers`).", _D.layer))]

EncoderOpt = Annotated[Optional[str], typer.Option(
        "--encoder", "-e", metavar="NAME", show_default=False, help=_with_default("Encoder.", _D.encoder))]

ComparatorOpt = Annotated[Optional[str], typer.Option(
        "--comparator", metavar="ENCODER:LAYER", show_default=False,
        help=_with_default("Feature-loss network and layer.", _D.comparator))]

ComparatorSizeOpt = Annotated[Optional[int], typer.Option(
        "--comparator-size", min=16, show_default=False,
        help="Side the comparator sees (default: its native 224; the image size is ~5x cheaper on a CPU).")]

FeatureCacheOpt = Annotated[bool, typer.Option(
        "--feature-cache", help="Compute E(x) once on fixed centre crops (no crop/flip augmentation; "
                                "needs --load-size = --image-size).")]

OutOpt = Annotated[Optional[Path], typer.Option(
        "--out", "-o", metavar="RUN_DIR", show_default=False,
        help="Run folder [dim]\\[default: runs/<layer>-<timestamp>][/dim].")]

ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")]

ModelOpt = Annotated[Optional[ModelChoice], typer.Option(
        "--model", show_default=False, help=_with_default("inverter: G(features) → image; vae: the VAE baseline.", _D.model))]

StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, show_default=False,
                                                 help=_with_default("Total optimizer steps.", _D.steps))]

BatchOpt = Annotated[Optional[int], typer.Option("--batch", "-b", min=1, show_default=False,
                                                 help=_with_default("Batch size.", _D.batch))]

LrOpt = Annotated[Optional[float], typer.Option("--lr", metavar="LR>=0", callback=nonneg_float,
                                                show_default=False,
                                                help=_with_default("Adam learning rate (G and D).", _D.lr))]

LossOpt = Annotated[Optional[LossChoice], typer.Option(
        "--loss", show_default=False, help=_with_default("Which loss terms to use.", _D.loss))]

WFeatOpt = Annotated[Optional[float], typer.Option("--w-feat", metavar="W>=0", callback=nonneg_float,
                                                    show_default=False,
                                                    help=_with_default("Weight of the feature loss.", _D.w_feat))]

WAdvOpt = Annotated[Optional[float], typer.Option("--w-adv", metavar="W>=0", callback=nonneg_float,
                                                   show_default=False,
                                                   help=_with_default("Weight of the adversarial loss.", _D.w_adv))]

WImgOpt = Annotated[Optional[float], typer.Option("--w-img", metavar="W>=0", callback=nonneg_float,
                                                   show_default=False,
                                                   help=_with_default("Weight of the image loss.", _D.w_img))]

ImgWarmupOpt = Annotated[Optional[int], typer.Option(
        "--img-warmup", min=0, show_default=False,
        help=_with_default("Warm start: this many image-loss-only steps, then as many steps ramping the feature and adversarial terms in.", _D.img_warmup))]

ImageSizeOpt = Annotated[Optional[int], typer.Option(
        "--image-size", min=8, show_default=False, help=_with_default("Generator output / training crop size.", _D.image_size))]

LoadSizeOpt = Annotated[Optional[int], typer.Option(
        "--load-size", min=8, show_default=False,
        help=_with_default("Images are decoded once at this size, then randomly cropped.", _D.load_size))]

GWidthOpt = Annotated[Optional[float], typer.Option("--g-width", metavar="X>0", callback=positive_float,
                                                     show_default=False,
                                                     help=_with_default("Generator width multiplier.", _D.g_width))]

UpsampleOpt = Annotated[Optional[Literal["deconv", "resize"]], typer.Option(
        "--upsample", show_default=False,
        help=_with_default("Generator up-sampling: deconv (the paper's 4x4 stride-2 transposed convs) or resize "
                "(nearest x2 + 3x3 conv: no checkerboard pattern).", _D.upsample))]

DWidthOpt = Annotated[Optional[float], typer.Option("--d-width", metavar="X>0", callback=positive_float,
                                                     show_default=False,
                                                     help=_with_default("Discriminator width multiplier.", _D.d_width))]

DShiftOpt = Annotated[Optional[int], typer.Option(
        "--d-shift", metavar="N", min=0, show_default=False,
        help=_with_default("Shift D's inputs, real and fake alike, by a random -N..N pixels per image "
                           "(DiffAugment translation), so G cannot fool D with a pattern locked to the phase "
                           "D's strided first conv samples. 4 covers every phase of that stride.", _D.d_shift))]

InitGeneratorOpt = Annotated[Optional[Path], typer.Option(
        "--init-generator", metavar="FILE", show_default=False,
        help="Warm-start G from an exported generator (e.g. a shipped one); D and the optimizers start fresh. "
             "An fc6/fc7/fc8 run may start from a pool5 generator: its up-stack is reused behind a bridge "
             "that first learns to predict pool5 from the fc code (--bridge-steps).")]

LatentDimOpt = Annotated[Optional[int], typer.Option(
        "--latent-dim", min=1, show_default=False, help=_with_default("VAE: size of the latent code z.", _D.latent_dim))]

WKlOpt = Annotated[Optional[float], typer.Option(
        "--w-kl", metavar="W>=0", callback=nonneg_float, show_default=False, help=_with_default("VAE: weight of the KL term (per nat, summed over z).", _D.w_kl))]

GClipOpt = Annotated[Optional[float], typer.Option(
        "--g-clip", metavar="X>=0", callback=nonneg_float, show_default=False,
        help="Clip G's gradient norm at this multiple of its running mean (0: off). "
             "[default: 2 for --model vae, off for inverters]")]

VaeEncoderOpt = Annotated[Optional[str], typer.Option(
        "--vae-encoder", metavar="finetune|frozen", show_default=False,
        help=_with_default("VAE: train conv1–fc6 too (finetune) or keep the shipped AlexNet's fixed (frozen: small "
                "checkpoint, fc6 features cacheable with --feature-cache).", _D.vae_encoder))]

BridgeStepsOpt = Annotated[Optional[int], typer.Option(
        "--bridge-steps", min=0, show_default=False,
        help=_with_default("With an fc layer and a pool5 --init-generator: bridge-only regression steps before the DeePSiM loss.", _D.bridge_steps))]

NoDCondOpt = Annotated[bool, typer.Option("--no-d-cond", help="Do not feed the features to D.")]

LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, show_default=False,
                                                 help="Use only the first N images.")]

GridEveryOpt = Annotated[Optional[int], typer.Option(
        "--grid-every", min=0, show_default=False, help=_with_default("Write a reals/fakes grid every N steps (0 = never).", _D.grid_every))]

CkptEveryOpt = Annotated[Optional[int], typer.Option(
        "--ckpt-every", min=1, show_default=False, help=_with_default("Checkpoint every N steps.", _D.ckpt_every))]

LogEveryOpt = Annotated[Optional[int], typer.Option(
        "--log-every", min=1, show_default=False, help=_with_default("Log stats (and update progress) every N steps.", _D.log_every))]

TimeLimitOpt = Annotated[Optional[str], typer.Option(
        "--time-limit", metavar="DURATION", show_default=False,
        help="Stop cleanly (with a checkpoint) after this long: 3600, 90m, 2h.")]

NoAmpOpt = Annotated[bool, typer.Option("--no-amp", hidden=True,
                                         help="Deprecated: same as the global --precision fp32.")]
