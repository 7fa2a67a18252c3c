"""`deepsim distill`: train AlexNet's fc6–fc8 head from the MobileNetV2 teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._options import BatchOpt, DeviceOpt, JsonOpt, QuietOpt, SeedOpt, not_available


def distill(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option(
        "--data", "-d", metavar="DIR|TAR", show_default=False, help="Training images; repeatable.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE",
                                      help="Where to write the complete AlexNet.")] = Path("weights/alexnet.safetensors"),
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps.")] = 6000,
    batch: BatchOpt = 256,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 5e-4,
    temperature: Annotated[float, typer.Option("--temperature", help="Softening of the teacher's logits.")] = 2.0,
    synthetic: Annotated[int, typer.Option(
        "--synthetic", min=0, help="DeepInversion images per class the data lacks (0 = real images only).")] = 0,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time-limit", metavar="DURATION", show_default=False,
        help="Stop cleanly after this long (e.g. 3600, 90m, 2h).")] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Distil AlexNet's classifier head from MobileNetV2 on top of the genuine conv layers.

    [dim]Not available yet: the engine lands in a later release.[/dim]

    [bold]Examples[/bold]

      deepsim distill --data train/ --out weights/alexnet.safetensors --steps 6000

      deepsim distill --data a.tar --data b.tar --synthetic 8 --time-limit 2h
    """
    not_available("distill")
