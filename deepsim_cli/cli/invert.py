"""`deepsim invert`: reconstruct images from their features with a trained generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from ._options import (BatchOpt, DeviceOpt, EncoderOpt, GeneratorOpt, JsonOpt, LayerOpt, OutOpt,
                       QuietOpt, SeedOpt, not_available)


def invert(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(
        show_default=False,
        help="Image files or folders ('-' reads one image from stdin).")],
    layer: LayerOpt = "pool5",
    encoder: EncoderOpt = "alexnet",
    weights: GeneratorOpt = None,
    method: Annotated[Literal["generator", "optimize"], typer.Option(
        "--method", help="generator: one forward pass of G (DeePSiM); optimize: gradient descent "
                         "on the image with a TV prior (Mahendran & Vedaldi), no generator needed.")] = "generator",
    out: OutOpt = None,
    grid: Annotated[Optional[Path], typer.Option(
        "--grid", metavar="FILE", show_default=False,
        help="Also write a grid: originals above reconstructions.")] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Iterations for --method optimize.")] = 200,
    batch: BatchOpt = 32,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Reconstruct images from what an encoder layer keeps of them.

    [dim]Not available yet: the engine lands in a later release.[/dim]

    [bold]Examples[/bold]

      deepsim invert examples/images/chelsea.jpg --layer pool5

      deepsim invert photos/ --layer fc6 --out recon/ --grid recon.png

      deepsim invert chelsea.jpg --layer conv3 --method optimize --steps 300
    """
    not_available("invert")
