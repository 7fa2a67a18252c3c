"""`deepsim distill`: train AlexNet's fc6–fc8 head from the MobileNetV2 teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import precheck, progress_bar, say, setup
from ._options import BatchOpt, nonneg_float, positive_float, print_json, resolve


def distill(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option(
        "--data", "-d", metavar="DIR|TAR", show_default=False, help="Training images; repeatable.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE",
                                      help="Where to write the complete AlexNet (never the shipped weights/ by "
                                           "default; ship with tools/ship_alexnet.py).")] = Path("runs/alexnet-distilled.safetensors"),
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps.")] = 6000,
    batch: BatchOpt = 256,
    lr: Annotated[float, typer.Option("--lr", metavar="LR>=0", callback=nonneg_float,
                                      help="AdamW learning rate.")] = 5e-4,
    temperature: Annotated[float, typer.Option("--temperature", metavar="T>0", callback=positive_float,
                                               help="Softening of the teacher's logits.")] = 2.0,
    load_size: Annotated[int, typer.Option("--load-size", min=32,
                                           help="Images are decoded once at this size, then randomly cropped to 224.")] = 144,
    synthetic: Annotated[int, typer.Option(
        "--synthetic", min=0, help="DeepInversion images per class the data lacks (0 = real images only).")] = 0,
    di_iters: Annotated[int, typer.Option("--di-iters", min=1, help="DeepInversion iterations per image.")] = 300,
    cache: Annotated[Optional[Path], typer.Option(
        "--cache", metavar="DIR", show_default=False,
        help="CPU path: precompute features + teacher logits of augmented views into DIR once "
             "(resumable), then train the head on them.")] = None,
    extra_cache: Annotated[Optional[list[Path]], typer.Option(
        "--extra-cache", metavar="DIR", show_default=False,
        help="With --cache: also train on the views an earlier --cache run left in DIR (repeatable), "
             "e.g. more views of the images that cover rare classes.")] = None,
    init: Annotated[Optional[Path], typer.Option(
        "--init", metavar="FILE", show_default=False,
        help="Start the head from this AlexNet's fc6-fc8 (e.g. weights/alexnet-head-v2.safetensors.index.json) "
             "instead of at random.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1,
                                        help="With --cache: views per training image (one round each).")] = 4,
    teacher_size: Annotated[int, typer.Option(
        "--teacher-size", min=96, max=512,
        help="Resolution of the teacher's view of each crop (the student always sees 224; 160 is ~2.5x "
             "cheaper on a CPU).")] = 224,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time-limit", metavar="DURATION", show_default=False,
        help="Stop cleanly after this long (e.g. 3600, 90m, 2h); the LR schedule follows the clock.")] = None,
) -> None:
    """Distil AlexNet's classifier head from MobileNetV2 on top of the genuine conv layers.

    KL divergence between the student's and the teacher's softened class distributions on
    augmented views (random resized crops, flips, colour jitter, CutMix/MixUp) of the given
    images; optionally plus DeepInversion images the teacher synthesizes for the ImageNet
    classes the data lacks. Resumes from OUT.state.safetensors after an interruption. A GPU
    is strongly advised (tools/device_job.py is the recipe used for the shipped head).

    [bold]Examples[/bold]

      deepsim distill --data imagenette-160-train.tar --data tinyimagenet-64-train.tar --time-limit 2h

      deepsim distill --data train/ --synthetic 8 --out runs/alexnet.safetensors --steps 20000

      deepsim distill --data train.tar --cache scratch/views --rounds 10 --steps 20000   # CPU

      deepsim distill --data rare.tar --cache scratch/rare --extra-cache scratch/views --init runs/alexnet.safetensors
    """
    precheck(data + list(extra_cache or []) + ([init] if init else []))  # answers typos before torch loads
    if extra_cache and cache is None:
        from ..errors import UsageError
        raise UsageError("--extra-cache needs --cache (the views of --data are cached there first)")

    from ..distill import DistillConfig, distill as lib_distill, extract_views, training_images
    from ._options import parse_duration

    opts = resolve(ctx)
    if cache is not None:  # before hours of work: a cache that cannot hold the views is one line now
        _check_cache_folder(cache)
    dev = setup(opts)
    arrays, n_synth = training_images(data, load_size, synthetic=synthetic, di_iters=di_iters, seed=opts.seed,
                                      device=dev, precision=opts.precision, log=lambda m: say(opts, m))
    cfg = DistillConfig(steps=steps, batch=batch, lr=lr, temperature=temperature, seed=opts.seed,
                        teacher_size=teacher_size, precision=opts.precision,
                        time_limit=parse_duration(time_limit) if time_limit else None)
    if cache is not None:
        n_images = sum(len(a) for a in arrays)
        with progress_bar(opts, rounds * n_images, "caching views") as advance:
            n_views = extract_views(cfg, arrays, cache, rounds, device=dev, log=lambda m: say(opts, m),
                                    on_views=advance)
        say(opts, f"{n_views} cached views in {cache}")
        stats = lib_distill(cfg, out=out, device=dev, log=lambda m: say(opts, m),
                            cache_dir=[cache, *(extra_cache or [])], init=init)
    else:
        stats = lib_distill(cfg, arrays, out=out, device=dev, log=lambda m: say(opts, m), init=init)
    stats.update(out=str(out), n_real=int(sum(len(a) for a in arrays[:len(data)])), n_synth=n_synth)
    if opts.json:
        print_json(stats)
    else:
        typer.echo(str(out))


def _check_cache_folder(cache: Path) -> None:
    """--cache must be (or become) a folder this process can write: a file there is exit 2, a
    folder that cannot be created or written is exit 1, each one line naming it."""
    import os

    from ..errors import UsageError, WriteError
    if cache.exists() and not cache.is_dir():
        raise UsageError(f"--cache {cache} is a file, not a folder")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"the --cache folder {cache}", e.strerror or str(e)) from None
    if not os.access(cache, os.W_OK | os.X_OK):
        raise WriteError(f"into the --cache folder {cache}", "permission denied")
