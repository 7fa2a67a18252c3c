"""`deepsim invert --code FILE`: decode codes saved by `--save-code` (or `visualize --save-code`)
again, optionally refining them further."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import check_suffix, claim_output, load_encoder, load_gen, output_path, progress_bar, result_name, setup
from ._options import print_json, resolve


def check_code_suffix(path: Optional[Path]) -> None:
    """Codes are written as safetensors: any other suffix is a usage error before any work."""
    if path is not None and path.suffix.lower() != ".safetensors":
        from ..errors import UsageError
        raise UsageError(f"codes are saved as safetensors: name the file *.safetensors, not {path.name}")


def invert_codes(ctx, code: Path, encoder: str, encoder_weights: Optional[Path], weights: Optional[Path],
                 refine: int, out: Optional[Path], ncols: int, no_clobber: bool, batch: int,
                 save_code: Optional[Path]) -> None:
    """Decode the codes in `code` (one tensor per layer) with the layer's generator; one image
    and layer → that image, else a grid with one row per layer."""
    from ..codes import read_codes, write_codes
    from ..errors import UsageError
    from ..figures import make_grid
    from ..images import save_image
    from ..reconstruct import decode_codes
    from ..utils import all_or_nothing, warn

    opts = resolve(ctx, no_clobber=no_clobber)
    dev = setup(opts)
    codes, names, code_encoder, code_shas = read_codes(code)
    default = load_encoder(code_encoder or encoder, encoder_weights, dev)
    layers = list(codes)
    default.check_layers(layers)
    if weights is not None and len(layers) > 1:
        raise UsageError("--weights names one generator, but the code file holds several layers")
    recons, refined, encs = {}, {}, {}
    for l in layers:
        enc, gen = load_gen(default, l, weights, dev, follow=encoder_weights is None)
        encs[l] = enc
        if code_shas[l] and enc.sha256 and code_shas[l] != enc.sha256:
            warn(f"{code} was saved with other {enc.name} weights (sha256 {code_shas[l][:12]}…, these are "
                 f"{enc.sha256[:12]}…): the {l} codes may not decode as they did")
        want = tuple(gen.G.cfg.in_shape)
        if tuple(codes[l].shape[1:]) != want:
            raise UsageError(f"{code}: the {l} codes have shape {tuple(codes[l].shape[1:])}, "
                             f"the generator takes {want}")
        with progress_bar(opts, refine * len(names), f"refining {l}") as advance:
            r = decode_codes(codes[l], gen, refine=refine, encoder=enc, batch=batch, precision=opts.precision,
                             on_progress=advance)
        recons[l], refined[l] = r.images, r.codes
    path = output_path(out, f"{result_name(Path(code).stem, *layers, f'refine{refine}' if refine else '')}.png",
                       opts)
    check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    if save_code is not None:
        claim_output(opts, save_code)
    if len(names) == 1 and len(layers) == 1:
        img = recons[layers[0]][0]
    else:
        img = make_grid([recons[l][i] for l in layers for i in range(len(names))], ncols=min(ncols, len(names)),
                        captions=[f"{names[i]}\n{l}" for l in layers for i in range(len(names))])
    with all_or_nothing():
        save_image(img, path)
        if save_code is not None:
            write_codes(save_code, refined if refine else codes, encs, names, refine)
    if str(path) == "-":
        return
    if opts.json:
        print_json({"output": str(path), "outputs": [str(path)], "images": names, "layers": layers,
                    "code": str(code), "refine": refine})
    else:
        typer.echo(str(path))
