"""`deepsim interpolate`: decode a path between the features of two images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import (DeviceOpt, EncoderOpt, GeneratorOpt, JsonOpt, LayerOpt, OutOpt, QuietOpt,
                       SeedOpt, not_available)


def interpolate(
    ctx: typer.Context,
    image_a: Annotated[Path, typer.Argument(metavar="IMAGE_A", show_default=False, help="Start image.")],
    image_b: Annotated[Path, typer.Argument(metavar="IMAGE_B", show_default=False, help="End image.")],
    layer: LayerOpt = "fc6",
    encoder: EncoderOpt = "alexnet",
    weights: GeneratorOpt = None,
    frames: Annotated[int, typer.Option("--frames", "-n", min=2,
                                        help="Number of images along the path, ends included.")] = 8,
    out: OutOpt = None,
    gif: Annotated[bool, typer.Option("--gif", help="Write an animation instead of a strip.")] = False,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Interpolate linearly between two images' features and decode every step.

    [dim]Not available yet: the engine lands in a later release.[/dim]

    [bold]Examples[/bold]

      deepsim interpolate examples/images/chelsea.jpg examples/images/coffee.jpg --layer fc6

      deepsim interpolate a.jpg b.jpg --layer pool5 --frames 16 --gif --out morph.gif
    """
    not_available("interpolate")
