"""`deepsim invert`: reconstruct images from their features with a trained generator."""

from __future__ import annotations

import typer

from ._common import (claim_output, load_encoder, load_gens, parse_layers, precheck, progress_bar, read_inputs,
                      result_name, say, setup)
from .invert_codes import check_code_suffix, invert_codes
from ._options import (names_a_folder, BatchOpt, EncoderOpt, EncoderWeightsOpt, GeneratorOpt, NcolsOpt, NoClobberOpt,
                       OutOpt, RefineOpt, print_json, resolve)
from .invert_opts import (CodeOpt, ImagesOpt, InitOpt, LayerOpt, MethodOpt, OutdirOpt, SaveCodeOpt, SizeOpt, StepsOpt,
                          check_combination, grid_path, plan_outdir, write_inversions)


def invert(
    ctx: typer.Context,
    images: ImagesOpt = None,
    layer: LayerOpt = "pool5",
    encoder: EncoderOpt = "alexnet",
    encoder_weights: EncoderWeightsOpt = None,
    weights: GeneratorOpt = None,
    method: MethodOpt = "generator",
    refine: RefineOpt = 0,
    init: InitOpt = "noise",
    save_code: SaveCodeOpt = None,
    code: CodeOpt = None,
    out: OutOpt = None,
    outdir: OutdirOpt = None,
    ncols: NcolsOpt = 8,
    no_clobber: NoClobberOpt = False,
    size: SizeOpt = 128,
    steps: StepsOpt = 200,
    batch: BatchOpt = 32,
) -> None:
    """Reconstruct images from what an encoder layer keeps of them.

    One image and one layer → the reconstruction (default <name>-<layer>.png); several images
    or layers → a grid with the originals on top and one row of reconstructions per layer,
    wrapping every --ncols images (default name from the inputs, layers, method and
    refinement); --outdir DIR → one file per image and layer. The output paths are printed on
    stdout ('-o -' writes the PNG to stdout instead).

    [bold]Examples[/bold]

      deepsim invert examples/images/chelsea.jpg --layer pool5

      deepsim invert examples/images/ --layer pool5 -o recon.png

      deepsim invert examples/images/chelsea.jpg --layer fc6 --refine 30

      deepsim invert photos/ --layer fc6 --outdir recon/

      deepsim invert chelsea.jpg --layer conv3 --method optimize --steps 300

      deepsim invert chelsea.jpg --layer fc6 --refine 30 --save-code chelsea-fc6.safetensors

      deepsim invert --code chelsea-fc6.safetensors -o again.png
    """
    check_combination(images, code, method, refine, save_code)
    check_code_suffix(save_code)
    if code is not None:
        precheck([code], encoder)
        return invert_codes(ctx, code, encoder, encoder_weights, weights, refine, out, ncols, no_clobber,
                            batch, save_code)
    layers = parse_layers(layer, weights)
    precheck(images, encoder, layers)  # answers typos before torch loads

    from ..reconstruct import reconstruct, work_per_image

    opts = resolve(ctx, no_clobber=no_clobber)
    dev = setup(opts)
    enc = load_encoder(encoder, encoder_weights, dev)
    enc.check_layers(layers)
    pairs = (load_gens(enc, layers, weights, dev, follow=encoder_weights is None)
             if method == "generator" or init == "generator" else {})
    encs = {l: pairs[l][0] if l in pairs else enc for l in layers}  # a generator's own encoder
    gens = {l: g for l, (_, g) in pairs.items()}
    out_size = next(iter(gens.values())).image_size if gens else size
    x, names = read_inputs(images, out_size)
    from_gen = method == "optimize" and init == "generator"
    how_tag = result_name("optimize" if method == "optimize" else "", "from-generator" if from_gen else "",
                          f"refine{refine}" if refine else "")
    if outdir is None and names_a_folder(out):
        outdir, out = out, None
    files = plan_outdir(opts, outdir, out, names, layers, how_tag) if outdir is not None else {}
    path = grid_path(opts, out, images, names, layers, how_tag) if outdir is None else None
    if save_code is not None:
        claim_output(opts, save_code)
    recons, codes = {}, {}
    work = work_per_image(method, refine, steps)
    for l in layers:
        say(opts, f"inverting {len(names)} image(s) from {encoder}:{l} ({method}"
                  f"{' from the generator' if from_gen else ''}{f', refined {refine} steps' if refine else ''})")
        with progress_bar(opts, work * len(x), f"{'refining' if refine else 'optimising'} {l}") \
                as advance:
            r = reconstruct(x, encs[l], l, gen=gens.get(l), method=method, refine=refine, init=init, steps=steps,
                            size=size, batch=batch, seed=opts.seed, precision=opts.precision,
                            want_codes=save_code is not None, on_progress=advance if work else None)
        recons[l], codes[l] = r.images, r.codes
    written = write_inversions(x, recons, names, ncols, files=files, path=path, outdir=outdir,
                               save_code=save_code, codes=codes, encs=encs, refine=refine)
    if save_code is not None:
        say(opts, f"codes: {save_code}")
    if not files and str(path) == "-":
        return
    if opts.json:
        print_json({"output": str(outdir) if files else written[0], "outputs": written, "images": names,
                    "layers": layers, "method": method, "refine": refine,
                    **({"code": str(save_code)} if save_code is not None else {}),
                    **({"init": init} if method == "optimize" else {})})
    else:
        for w in written:
            typer.echo(w)
