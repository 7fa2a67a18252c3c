"""`deepsim sample`: decode random features (or VAE latents) into new images."""

from __future__ import annotations

from typing import Annotated, Optional
from pathlib import Path

import typer

from ._options import (DeviceOpt, EncoderOpt, GeneratorOpt, JsonOpt, LayerOpt, OutOpt, QuietOpt,
                       SeedOpt, not_available)


def sample(
    ctx: typer.Context,
    layer: LayerOpt = "fc6",
    encoder: EncoderOpt = "alexnet",
    weights: GeneratorOpt = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="How many images.")] = 16,
    stats_from: Annotated[Optional[Path], typer.Option(
        "--stats-from", metavar="DIR", show_default=False,
        help="Fit the feature distribution on these images (default: statistics stored with the generator).")] = None,
    out: OutOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw features from a fitted Gaussian (or a VAE's prior) and decode them.

    [dim]Not available yet: the engine lands in a later release.[/dim]

    [bold]Examples[/bold]

      deepsim sample --layer fc6 --n 16 --out samples.png --seed 3

      deepsim sample --weights runs/vae/generator.safetensors --n 64 --out vae.png
    """
    not_available("sample")
