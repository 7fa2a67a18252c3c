"""`deepsim visualize`: DGN-AM, images that maximally activate a unit."""

from __future__ import annotations

from typing import Annotated

import typer

from ._options import (DeviceOpt, EncoderOpt, GeneratorOpt, JsonOpt, OutOpt, QuietOpt, SeedOpt,
                       not_available)


def visualize(
    ctx: typer.Context,
    unit: Annotated[list[int], typer.Option(
        "--unit", "-u", show_default=False,
        help="Unit (channel or class index) to maximise; repeat for several.")],
    layer: Annotated[str, typer.Option("--layer", "-l", metavar="LAYER",
                                       help="Layer whose unit is maximised.")] = "fc8",
    code_layer: Annotated[str, typer.Option("--code-layer", metavar="LAYER",
                                            help="Layer the generator decodes (the optimised code).")] = "fc6",
    encoder: EncoderOpt = "alexnet",
    weights: GeneratorOpt = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps.")] = 200,
    lr: Annotated[float, typer.Option("--lr", help="Step size on the code.")] = 1.0,
    out: OutOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Activation maximisation through a generator prior (DGN-AM, Nguyen et al. 2016).

    [dim]Not available yet: the engine lands in a later release.[/dim]

    [bold]Examples[/bold]

      deepsim visualize --layer fc8 --unit 945 --out bell-pepper.png

      deepsim visualize --layer conv5 --unit 12 --unit 40 --steps 300 --out units.png
    """
    not_available("visualize")
