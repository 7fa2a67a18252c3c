"""`deepsim neighbors`: nearest training images of an image, in pixel or feature space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import check_suffix, load_encoder, output_path, precheck, progress_bar, read_inputs, say, setup
from ._options import EncoderOpt, EncoderWeightsOpt, OutOpt, print_json, resolve


def neighbors(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(show_default=False,
                                                 help="Query images (e.g. generated samples).")],
    data: Annotated[list[Path], typer.Option(
        "--data", "-d", metavar="DIR|TAR", show_default=False, help="Images to search; repeatable.")],
    space: Annotated[str, typer.Option(
        "--space", metavar="image|LAYER",
        help="Distance space: 'image' (pixels) or an encoder layer such as pool5 or fc6.")] = "pool5",
    encoder: EncoderOpt = "alexnet",
    encoder_weights: EncoderWeightsOpt = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Neighbours per query.")] = 5,
    size: Annotated[int, typer.Option("--size", min=16, help="Side images are compared at.")] = 128,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Search at most this many images.")] = 100_000,
    cache: Annotated[bool, typer.Option(
        "--cache/--no-cache", help="Keep the bank's features in $DEEPSIM_CACHE (keyed by the data's files, "
                                   "encoder sha256, layer, size, precision) so the next search starts at once.")] = True,
    out: OutOpt = None,
) -> None:
    """Find the images of --data closest to each query (the paper's memorisation check).

    Writes a grid (one row per query: the query, then its k neighbours with distances) and
    prints the neighbours' names and distances.

    [bold]Examples[/bold]

      deepsim neighbors samples/ --data examples/kodak24 --space pool5

      deepsim neighbors samples/ --data train/ --space image --k 3 -o nn.png --json
    """
    precheck([*images, *data], encoder, [space] if space != "image" else [])  # answers typos before torch loads
    import torch

    from ..data import load_array, to_float
    from ..figures import make_grid
    from ..images import save_image
    from ..inference import nearest_neighbors

    opts = resolve(ctx)
    dev = setup(opts)
    q, qnames = read_inputs(images, size)
    stem = qnames[0] if len(qnames) == 1 else f"{qnames[0]}+{len(qnames) - 1}"
    path = output_path(out, f"neighbors-{stem}-{space}.png", opts)
    check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    enc = None
    if space != "image":
        enc = load_encoder(encoder, encoder_weights, dev)
        enc.check_layers([space])
    arr, names = load_array([str(d) for d in data], size, limit=limit)
    say(opts, f"searching {len(arr)} images in {space} space")

    from ..neighbor_bank import bank_features, embed
    from ..precision import resolve_precision
    with progress_bar(opts, len(arr), f"encoding the {space} bank") as advance:
        bank, cached = bank_features(arr, names, data, size, space, enc, resolve_precision(opts.precision, dev),
                                     use_cache=cache, on_progress=advance)
    if cached:
        say(opts, f"{space} features of the {len(arr)} images from the cache")
    dist, idx = nearest_neighbors(embed(q, enc, space, opts.precision), bank, k)
    cells, caps = [], []
    for qi, qn in enumerate(qnames):
        cells.append(q[qi])
        caps.append(f"query\n{qn}")
        for d, j in zip(dist[qi].tolist(), idx[qi].tolist()):
            cells.append(to_float(torch.from_numpy(arr[j:j + 1]))[0])
            caps.append(f"{Path(names[j]).stem}\nd={d:.3g}")
    save_image(make_grid(cells, ncols=idx.shape[1] + 1, captions=caps), path)
    result = [{"query": qn, "neighbors": [{"image": names[j], "distance": d}
                                          for d, j in zip(dist[qi].tolist(), idx[qi].tolist())]}
              for qi, qn in enumerate(qnames)]
    if opts.json:
        print_json({"space": space, "grid": str(path), "results": result})
    elif str(path) != "-":
        for r in result:
            typer.echo(r["query"] + ": " + ", ".join(f"{Path(n['image']).name} ({n['distance']:.3g})"
                                                     for n in r["neighbors"]))
        typer.echo(str(path))
