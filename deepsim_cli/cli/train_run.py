"""`deepsim train`'s run: the progress bar (or plain lines off a terminal) with our own ETA,
and the call of training.train with Ctrl-C turned into exit 130 and a resume hint."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from ..config import TrainConfig
from ._options import err_console


def _fmt_stats(stats: dict[str, Any]) -> str:
    parts = [f"{k} {stats[k]:.4g}" for k in ("total", "bridge", "feat", "adv", "img", "kl", "discr")
             if isinstance(stats.get(k), (int, float))]
    if stats.get("d_paused"):
        parts.append("D paused")
    if stats.get("g_paused"):
        parts.append("G paused")
    if isinstance(stats.get("img_s"), (int, float)):
        parts.append(f"{stats['img_s']:.3g} img/s")
    return " · ".join(parts)


def train_progress(console, *, disable: bool = False):
    """The training bar: description, a short bar, step/total, elapsed, our own ETA (steps left at
    the rate since this run started, capped by --time-limit), then the losses, which are the column
    cut short (…) on a narrow terminal rather than the bar and the ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    return Progress(
        TextColumn("{task.description}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=12), MofNCompleteColumn(table_column=Column(no_wrap=True)),
        TimeElapsedColumn(table_column=Column(no_wrap=True)),
        TextColumn("{task.fields[eta]}", table_column=Column(no_wrap=True)),
        TextColumn("{task.fields[losses]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
        console=console, disable=disable, transient=True, expand=True,
    )


def eta_text(step: int, start: int, total: int, elapsed: float, time_limit: float | None = None) -> str:
    """'eta H:MM:SS' from the steps done since this run started (a resumed run does not count the
    earlier ones), capped by the time left of --time-limit; 'eta –' before the first step."""
    done = step - start
    if done <= 0 or elapsed <= 0:
        return "eta –"
    left = max(0, total - step) * elapsed / done
    if time_limit is not None:
        left = min(left, max(0.0, time_limit - elapsed))
    s = int(round(left))
    return f"eta {s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def run_training(cfg: TrainConfig, run_dir: Path, *, resume: bool, device: str,
                 show_progress: bool) -> tuple[Path, dict[str, Any]]:
    """Call training.train with a Rich progress bar on stderr; Ctrl-C → exit 130 with a resume hint."""
    from ..checkpoint import read_metadata
    from ..training import train as train_run
    from ..utils import resolve_device, seed_everything

    dev = resolve_device(device)
    seed_everything(cfg.seed)
    start = 0
    state = run_dir / "state.safetensors"
    if resume and state.is_file():
        start = int(read_metadata(state).get("train_steps") or 0)
    last: dict[str, Any] = {}
    con = err_console()
    rank0 = int(os.environ.get("RANK", "0")) == 0
    show = show_progress and rank0
    live = show and con.is_terminal
    # transient: an error or Ctrl-C leaves only its one diagnostic line on screen
    progress = train_progress(con, disable=not live)
    t0 = time.time()

    def on_step(step: int, stats: dict[str, Any]) -> None:
        last.clear()
        last.update(stats)
        eta = eta_text(step, start, cfg.steps, time.time() - t0, cfg.time_limit)
        if live:
            progress.update(task, completed=step, description=f"train {cfg.layer}", losses=_fmt_stats(stats),
                            eta=eta)
        elif show:  # not a terminal (a log file, CI): plain lines instead of a redrawn bar
            con.print(f"step {step}/{cfg.steps} · {_fmt_stats(stats)} · {eta}", markup=False, soft_wrap=True)

    try:
        with progress:
            task = progress.add_task(f"preparing {cfg.layer}", total=cfg.steps,
                                     completed=min(start, cfg.steps), losses="", eta="eta –")
            gen = train_run(cfg, run_dir=run_dir, resume=resume, device=dev, on_step=on_step)
    except KeyboardInterrupt:
        from . import _ignore_sigint
        _ignore_sigint()  # the state is saved; a second Ctrl-C now must not kill the exit by signal
        if state.is_file():
            msg = (f"interrupted; state saved in {run_dir} (step {read_metadata(state).get('train_steps')}); "
                   f"continue with: deepsim train --out {run_dir} --resume")
        else:
            msg = "interrupted before the first checkpoint; nothing to resume"
        con.print(f"error: {msg}", markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if live:
        con.print(f"trained {cfg.layer}: step {last.get('step', '?')}/{cfg.steps} in "
                  f"{time.time() - t0:.0f} s · {_fmt_stats(last)}", markup=False, soft_wrap=True)
    return gen, last
