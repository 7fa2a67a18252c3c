"""`deepsim layers`: the registered encoders, their layers and output shapes."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ._options import out_console, print_json, resolve


def describe_encoder(name: str, size: int | None = None) -> dict[str, Any]:
    """{"description", "weights", "layers": {layer: [shape]}, "trained_layers", "note"} for one encoder.

    An encoder whose weights file is missing is still described, with a note instead of layers.
    """
    from ..encoders import build_encoder, encoder_description
    from ..errors import UsageError

    info: dict[str, Any] = {"description": encoder_description(name), "weights": None,
                            "layers": {}, "trained_layers": [], "note": None}
    try:
        enc = build_encoder(name, None, "cpu")
    except UsageError as e:
        info["note"] = f"weights missing: {e}"
        return info
    info["weights"] = str(enc.weights_path) if enc.weights_path else None
    info["layers"] = {k: list(v) for k, v in enc.layer_shapes(size).items()}
    info["trained_layers"] = list(enc.trained_layers)
    info["shipped_generators"] = shipped_generator_layers(name, list(enc.layer_names))
    info["generator_weights"] = generator_encoder_files(name, info["shipped_generators"], enc.sha256)
    untrained = [k for k in enc.layer_names if k not in enc.trained_layers]
    if untrained:
        info["note"] = f"untrained here: {', '.join(untrained)} (random weights; no weights file holds them)"
    return info


def shipped_generator_layers(encoder: str, layer_names: list[str]) -> list[str]:
    """The layers of `encoder` that have a shipped generator in weights/ (invert/reencode/… work
    out of the box for them)."""
    from ..inference import shipped_generator_path
    return [l for l in layer_names if shipped_generator_path(l, encoder).is_file()]


def generator_encoder_files(encoder: str, layers: list[str], default_sha256: str) -> dict[str, str]:
    """{layer: shipped encoder file} for the shipped generators of `layers` trained on other weights
    of `encoder` than the default (those commands load by themselves), from the manifest."""
    from .. import weights_store

    out = {}
    for l in layers:
        sha = (weights_store.entry(f"{encoder}-{l}-generator.safetensors") or {}).get("encoder_sha256")
        if sha and default_sha256 and sha != default_sha256:
            out[l] = weights_store.encoder_file(encoder, sha) or f"sha256 {sha[:12]}…"
    return out


def layers(
    ctx: typer.Context,
    encoder: Annotated[Optional[str], typer.Option(
        "--encoder", "-e", metavar="NAME", show_default=False,
        help="Only this encoder (default: every registered one).")] = None,
    size: Annotated[int, typer.Option(
        "--size", min=1, help="Input image size in pixels. Encoders resize every input to their "
                              "native size (224) first, so shapes are those of the native size.")] = 224,
) -> None:
    """List the encoders, each layer you can invert, and its output shape.

    Layers marked [italic]shipped generator[/italic] have a trained generator in weights/ (invert, reencode and interpolate work on them out of the box; any layer can be inverted with `deepsim invert --method optimize`). Layers marked [italic]untrained here[/italic] exist in the architecture but have no trained weights in weights/.

    [bold]Examples[/bold]

      deepsim layers

      deepsim layers --encoder alexnet

      deepsim layers --json
    """
    from ..encoders import encoder_names
    from ..errors import UsageError

    opts = resolve(ctx)
    names = encoder_names()
    if encoder is not None:
        if encoder not in names:
            raise UsageError(f"unknown encoder {encoder!r}; registered: {', '.join(names)}")
        names = [encoder]
    result = {n: describe_encoder(n, size) for n in names}

    if opts.json:
        print_json({"encoders": result})
        return
    con = out_console()
    for n, info in result.items():
        con.print(f"[bold]{n}[/bold] — {escape(info['description'])}", soft_wrap=True)
        con.print(f"weights: {info['weights'] or '—'}", soft_wrap=True, markup=False, style="dim")
        if info["layers"]:
            table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
            table.add_column("layer")
            table.add_column("output shape", justify="right")
            table.add_column("")
            for layer, shape in info["layers"].items():
                mark = ("[yellow]untrained here[/yellow]" if layer not in info["trained_layers"] else
                        "[green]shipped generator[/green]" if layer in info["shipped_generators"] else "")
                if layer in info.get("generator_weights", {}):
                    mark += f" [dim](on {escape(info['generator_weights'][layer])})[/dim]"
                table.add_row(layer, " × ".join(map(str, shape)), mark)
            con.print(table)
        else:
            con.print(f"[yellow]{escape(info['note'] or 'no layers')}[/yellow]", soft_wrap=True)
            con.print()
