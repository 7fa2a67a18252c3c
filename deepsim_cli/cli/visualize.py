"""`deepsim visualize`: DGN-AM preferred-input synthesis through the fc6 generator."""

from __future__ import annotations

import typer

from ._common import (check_suffix, claim_output, load_encoder, load_gen, output_path, precheck, progress_bar, read_inputs,
                      say, setup)
from ._options import EncoderWeightsOpt, GeneratorOpt, OutOpt, print_json, resolve
from .visualize_opts import (ClassNameOpt, CodeLayerOpt, ComputeBoundsOpt, DataOpt, DecayOpt, EncoderOpt, ForceOpt,
                             InitOpt, ItersOpt, JitterOpt, LayerOpt, LrEndOpt, LrStartOpt, NoBoundsOpt, ObjectiveOpt,
                             SaveCodeOpt, SaveEveryOpt, SeedsOpt, UnitOpt, ViewsOpt, XyOpt, chosen_units, parse_seeds,
                             parse_xy)


def visualize(
    ctx: typer.Context,
    unit: UnitOpt = None,
    class_name: ClassNameOpt = None,
    layer: LayerOpt = "fc8",
    encoder: EncoderOpt = "alexnet",
    encoder_weights: EncoderWeightsOpt = None,
    weights: GeneratorOpt = None,
    code_layer: CodeLayerOpt = "fc6",
    iters: ItersOpt = 200,
    lr_start: LrStartOpt = 1.0,
    lr_end: LrEndOpt = 1e-10,
    decay: DecayOpt = 0.01,
    objective: ObjectiveOpt = "activation",
    jitter: JitterOpt = 0,
    views: ViewsOpt = 1,
    xy: XyOpt = None,
    init: InitOpt = None,
    seeds: SeedsOpt = "0",
    save_every: SaveEveryOpt = 0,
    compute_bounds: ComputeBoundsOpt = False,
    data: DataOpt = None,
    no_bounds: NoBoundsOpt = False,
    force: ForceOpt = False,
    save_code: SaveCodeOpt = None,
    out: OutOpt = None,
) -> None:
    """Synthesize the preferred input of a unit through the generator prior (DGN-AM).

    Gradient ascent on the generator's code h (AlexNet fc6 space) to maximise one unit of the
    target network: step normalised by the mean |gradient|, linearly decaying step size, L2
    decay, per-unit clipping to [0, 3·std] of real images' codes. Several units or seeds → one
    labelled grid (class, final activation, probability).

    [bold]Examples[/bold]

      deepsim visualize --unit 945 --out bell-pepper.png

      deepsim visualize --class "bell pepper" --class goldfish --seeds 0,1,2

      deepsim visualize --class mushroom --objective logprob --jitter 4 --views 2

      deepsim visualize --encoder mobilenet_v2 --layer logits --unit 1 --save-every 10

      deepsim visualize --compute-bounds --data train.tar --weights my-fc6-generator.safetensors
    """
    precheck(data or [], encoder, [layer], single=[init])  # answers typos before torch loads
    seed_list = parse_seeds(seeds)
    from .. import provenance
    from ..encoders import encode_batched
    from ..errors import UsageError
    from ..visualize import (check_runs, describe_runs, generator_bounds_path, load_bounds, write_bounds,
                             save_visualization, visualize_many as lib_visualize_many)
    from .invert_codes import check_code_suffix

    opts = resolve(ctx)
    dev = setup(opts)
    alex = load_encoder("alexnet", None, dev)
    alex, gen = load_gen(alex, code_layer, weights, dev, follow=True)  # the encoder of its codes
    if gen.G.cfg.kind != "fc":
        raise UsageError(f"DGN-AM optimises a vector code; the {code_layer} generator takes feature maps")
    bpath = generator_bounds_path(weights, code_layer)
    if compute_bounds:
        if not data:
            raise UsageError("--compute-bounds needs --data DIR|TAR (real images)")
        n_images = write_bounds(alex, code_layer, data, gen.image_size, bpath, keep_existing=weights is None and not force,
                                precision=opts.precision)
        say(opts, f"bounds from {n_images} images → {bpath}")
        if not unit and not class_name:
            typer.echo(str(bpath))
            return
    units = chosen_units(unit, class_name, layer)
    bounds = None if no_bounds else load_bounds(bpath)
    target = load_encoder(encoder, encoder_weights, dev)
    init_code = None
    if init is not None:
        xi, _ = read_inputs([init], gen.image_size)
        init_code = encode_batched(alex, xi, code_layer, 1, precision=opts.precision).to(dev)
    pairs = [(u, s) for u in units for s in seed_list]
    say(opts, f"{len(units)} unit(s) of {encoder}:{layer} × {len(seed_list)} seed(s), {iters} steps, one batch")
    with progress_bar(opts, iters, f"DGN-AM {encoder}:{layer}") as advance:
        runs = lib_visualize_many(gen.G, target, layer, [u for u, _ in pairs], seeds=[s for _, s in pairs],
                                  code_shape=gen.G.cfg.in_shape, xy=parse_xy(xy), iters=iters,
                                  lr=(lr_start, lr_end), decay=decay, bounds=bounds, init=init_code,
                                  save_every=save_every, objective=objective, jitter=jitter, views=views,
                                  precision=opts.precision, on_step=lambda _i, _a: advance())
    warning = check_runs(runs, pairs, layer)
    if warning:
        say(opts, warning)
    results = describe_runs(runs, pairs, target, layer, precision=opts.precision)
    path = output_path(out, f"visualize-{layer}-{'-'.join(map(str, units))}.png", opts)
    if save_every and str(path) != "-":
        claim_output(opts, path.with_suffix(".gif"))
    check_suffix(path, (".png", ".jpg", ".jpeg", ".webp"), "output")
    if save_code is not None:
        check_code_suffix(save_code)
        claim_output(opts, save_code)
    provenance.note(results=results)
    outputs = save_visualization(runs, results, path, ncols=len(seed_list), save_every=save_every,
                                 code_file=save_code, code_layer=code_layer, encoder=alex)
    if opts.json:
        print_json({**outputs, "layer": layer, "encoder": encoder, "results": results})
    elif str(path) != "-":
        for r in results:
            typer.echo(f"{r['label']} (unit {r['unit']}, seed {r['seed']}): activation {r['activation']:.3f}"
                       + (f", p={r['prob']:.3f}" if r["prob"] is not None else ""))
        for v in outputs.values():
            typer.echo(v)
