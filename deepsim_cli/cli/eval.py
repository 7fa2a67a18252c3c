"""`deepsim eval`: reconstruction error of a generator on held-out images (paper, Table 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._options import (BatchOpt, DeviceOpt, EncoderOpt, GeneratorOpt, JsonOpt, LayerOpt, QuietOpt,
                       SeedOpt, not_available)


def eval_(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option(
        "--data", "-d", metavar="DIR|TAR", show_default=False, help="Evaluation images; repeatable.")],
    layer: LayerOpt = "pool5",
    encoder: EncoderOpt = "alexnet",
    weights: GeneratorOpt = None,
    metrics: Annotated[str, typer.Option(
        "--metrics", help="Comma-separated: error (normalised Euclidean, Table 2), psnr, ssim, lpips.")]
        = "error,psnr,ssim,lpips",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, show_default=False,
                                                 help="Use only the first N images.")] = None,
    batch: BatchOpt = 64,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure how well a generator reconstructs held-out images.

    [dim]Not available yet: the engine lands in a later release.[/dim]

    [bold]Examples[/bold]

      deepsim eval --data val/ --layer pool5

      deepsim eval --data val.tar --weights runs/pool5/generator.safetensors --json
    """
    not_available("eval")
