"""`deepsim reencode`: feed reconstructions back through encoder and generator, repeatedly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import (DeviceOpt, EncoderOpt, GeneratorOpt, JsonOpt, LayerOpt, OutOpt, QuietOpt,
                       SeedOpt, not_available)


def reencode(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(show_default=False,
                                                 help="Image files or folders.")],
    layer: LayerOpt = "pool5",
    encoder: EncoderOpt = "alexnet",
    weights: GeneratorOpt = None,
    iterations: Annotated[int, typer.Option("--iterations", "-n", min=1,
                                            help="How many times to apply x → G(E(x)).")] = 8,
    out: OutOpt = None,
    gif: Annotated[bool, typer.Option("--gif", help="Write an animation instead of a grid.")] = False,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Apply x → G(E(x)) repeatedly and show how the images drift.

    [dim]Not available yet: the engine lands in a later release.[/dim]

    [bold]Examples[/bold]

      deepsim reencode examples/images/coffee.jpg --layer fc6 --iterations 10 --out drift.png

      deepsim reencode chelsea.jpg --layer pool5 --gif --out drift.gif
    """
    not_available("reencode")
