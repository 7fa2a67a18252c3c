"""`deepsim neighbors`: nearest training images of an image in an encoder's feature space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import (DeviceOpt, EncoderOpt, JsonOpt, LayerOpt, OutOpt, QuietOpt, SeedOpt,
                       not_available)


def neighbors(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(show_default=False,
                                                 help="Query images (e.g. generated samples).")],
    data: Annotated[list[Path], typer.Option(
        "--data", "-d", metavar="DIR|TAR", show_default=False, help="Images to search; repeatable.")],
    layer: LayerOpt = "pool5",
    encoder: EncoderOpt = "alexnet",
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Neighbours per query.")] = 5,
    out: OutOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Find the training images closest to each query in feature space (a memorisation check).

    [dim]Not available yet: the engine lands in a later release.[/dim]

    [bold]Examples[/bold]

      deepsim neighbors samples/*.png --data train/ --layer pool5 --k 5 --out nn.png

      deepsim neighbors sample.png --data train.tar --json
    """
    not_available("neighbors")
