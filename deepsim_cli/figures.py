"""Figures: several images laid out into one picture or animation.

Grids of cells with captions under them and labels left of their rows (:func:`make_grid`,
:func:`save_grid`), and animated GIFs with optional captions (:func:`save_gif`). Single images
are read, converted and written by :mod:`deepsim_cli.images`, which this module builds on.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .images import ImageError, ImageLike, _write_failed, save_image, to_pil
from .utils import atomic_output

__all__ = [
    "inversion_grid",
    "make_grid",
    "save_gif",
    "save_grid",
]

_MIN_FONT = 7
_ELLIPSIS = "..."  # ASCII: the bitmap fallback font has no "…"


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except Exception:
        # Without FreeType (or in old Pillow) only the fixed-size bitmap font exists; text
        # then gets truncated instead of shrunk.
        return ImageFont.load_default()


def _text_width(font, text: str) -> int:
    return int(math.ceil(font.getbbox(text)[2])) if text else 0


def _line_height(font) -> int:
    # Ascender to descender of tall and deep glyphs, plus a 2 px gap between lines.
    return int(math.ceil(font.getbbox("Agjy|")[3])) + 2


def _base_font_size(cell_w: int) -> int:
    # Readable on small cells, not shouting on large ones.
    return max(9, min(16, cell_w // 12))


def _truncate(font, line: str, avail: int) -> str:
    if _text_width(font, line) <= avail:
        return line
    while line and _text_width(font, line + _ELLIPSIS) > avail:
        line = line[:-1]
    return line + _ELLIPSIS if line else ""


def _fit_captions(captions: Sequence[str], cell_w: int) -> tuple[object, list[list[str]], int]:
    """Pick one font for all captions, shrinking until every line fits, else truncate.

    Returns (font, lines per caption, caption block height in px; 0 if all captions are empty).
    """
    avail = max(1, cell_w - 2)
    lines = [str(c).split("\n") if c else [] for c in captions]
    flat = [ln for ls in lines for ln in ls]
    font = _font(_base_font_size(cell_w))
    for size in range(_base_font_size(cell_w), _MIN_FONT - 1, -1):
        font = _font(size)
        if all(_text_width(font, ln) <= avail for ln in flat):
            break
    lines = [[_truncate(font, ln, avail) for ln in ls] for ls in lines]
    n_lines = max((len(ls) for ls in lines), default=0)
    height = n_lines * _line_height(font) + 2 if n_lines else 0
    return font, lines, height


def _text_color(bg: Sequence[int]) -> tuple[int, int, int]:
    r, g, b = bg[:3]
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 127 else (255, 255, 255)


def _draw_lines(draw: ImageDraw.ImageDraw, font, lines: Sequence[str], x0: int, y0: int,
                width: int, fill, center: bool = True) -> None:
    lh = _line_height(font)
    for i, ln in enumerate(lines):
        x = x0 + (width - _text_width(font, ln)) // 2 if center else x0
        draw.text((x, y0 + i * lh), ln, font=font, fill=fill)


def _as_pil_list(images, value_range: Sequence[float]) -> list[Image.Image]:
    if torch.is_tensor(images):
        if images.ndim == 3:
            images = images[None]
        images = list(images)  # (N, 3, H, W) -> N × (3, H, W)
    pils = [None if im is None else to_pil(im, value_range) for im in images]
    if not pils or pils[0] is None:
        raise ValueError("no images given")
    first = pils[0].size
    # None: an empty cell (the short last block of a wrapped grid)
    pils = [Image.new("RGB", first, (255, 255, 255)) if p is None else p for p in pils]
    # Mixed sizes (e.g. a 64 px reconstruction next to its 256 px original) share one cell size.
    return [p if p.size == first else p.resize(first, Image.Resampling.BICUBIC) for p in pils]


def make_grid(
    images: torch.Tensor | Sequence[ImageLike],
    *,
    ncols: int | None = None,
    captions: Sequence[str] | None = None,
    pad: int = 2,
    bg: Sequence[int] = (255, 255, 255),
    value_range: Sequence[float] = (-1.0, 1.0),
    row_labels: Sequence[str] | None = None,
) -> Image.Image:
    """Tile images into one picture, with optional captions under cells and labels left of rows.

    Args:
        images: Tensor ``(N, 3, H, W)`` in ``value_range``, or a list of tensors / PIL images /
            arrays (None: an empty white cell); all are resized to the first one's size.
        ncols: Columns; default ``ceil(N / len(row_labels))`` with row labels, else ``ceil(sqrt(N))``.
        captions: One string per image (may contain newlines), drawn with Pillow's default
            font under each cell; shrunk, then truncated, to fit the cell width.
        pad: Gap in pixels between cells and around the border.
        bg: Background RGB colour; text is black or white, whichever contrasts.
        value_range: Range of float inputs.
        row_labels: One string per row, drawn left of the row.

    Returns:
        An RGB ``PIL.Image.Image``.
    """
    pils = _as_pil_list(images, value_range)
    n = len(pils)
    if ncols is None:
        ncols = math.ceil(n / len(row_labels)) if row_labels else math.ceil(math.sqrt(n))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    if captions is not None and len(captions) != n:
        raise ValueError(f"got {len(captions)} captions for {n} images")
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"got {len(row_labels)} row labels for {nrows} rows")
    pad = max(0, int(pad))
    bg = tuple(int(c) for c in bg[:3])
    fg = _text_color(bg)
    cw, ch = pils[0].size

    font, cap_lines, cap_h = _fit_captions(captions or [], cw)

    label_w = 0
    if row_labels:
        lfont = _font(_base_font_size(cw))
        label_lines = [str(s).split("\n") if s else [] for s in row_labels]
        label_w = max((_text_width(lfont, ln) for ls in label_lines for ln in ls), default=0)
        label_w = label_w + 2 * max(pad, 2) if label_w else 0

    W = label_w + ncols * cw + (ncols + 1) * pad
    H = nrows * (ch + cap_h) + (nrows + 1) * pad
    canvas = Image.new("RGB", (W, H), bg)
    draw = ImageDraw.Draw(canvas)
    for i, im in enumerate(pils):
        r, c = divmod(i, ncols)
        x = label_w + pad + c * (cw + pad)
        y = pad + r * (ch + cap_h + pad)
        canvas.paste(im, (x, y))
        if cap_h and cap_lines[i]:
            _draw_lines(draw, font, cap_lines[i], x, y + ch + 1, cw, fg)
    if label_w:
        lh = _line_height(lfont)
        for r, ls in enumerate(label_lines):
            y = pad + r * (ch + cap_h + pad) + (ch - len(ls) * lh) // 2
            _draw_lines(draw, lfont, ls, max(pad, 2), y, label_w, fg, center=False)
    return canvas


def inversion_grid(inputs: Sequence[ImageLike], recons: dict[str, Sequence[ImageLike]], names: Sequence[str],
                   ncols: int = 8) -> Image.Image:
    """The paper's Fig. 3 layout: blocks of `ncols` inputs, each followed by one row of
    reconstructions per layer (``recons[layer][i]`` is image i's), captioned with the input
    names and layers; the last, shorter block is padded with empty cells.

    Args:
        inputs: N images ((3, H, W) tensors in [-1, 1], PIL images or arrays).
        recons: {layer: N reconstructions}, in row order.
        names: N captions for the inputs.
    """
    layers = list(recons)
    n, rows = len(names), len(layers) + 1
    cells: list = []
    caps: list = []
    labels: list[str] = []
    for b in range(0, n, ncols):
        block = range(b, min(b + ncols, n))
        cells += [inputs[i] for i in block] + [recons[l][i] for l in layers for i in block]
        caps += [names[i] for i in block] + [l for l in layers for _ in block]
        labels += ["input"] + layers
    return make_grid(_pad_blocks(cells, n, ncols, rows), ncols=min(ncols, n),
                     captions=_pad_blocks(caps, n, ncols, rows, fill=""), row_labels=labels)


def _pad_blocks(cells: list, n: int, ncols: int, rows: int, fill=None) -> list:
    """Cells of a wrapped grid of `rows`-row blocks with the last, shorter block padded to full rows."""
    if n <= ncols or n % ncols == 0:
        return cells
    full = (n // ncols) * ncols * rows
    last, short = cells[full:], n % ncols
    padded = []
    for r in range(rows):
        padded += last[r * short:(r + 1) * short] + [fill] * (ncols - short)
    return cells[:full] + padded


def save_grid(images: torch.Tensor | Sequence[ImageLike], path: str | os.PathLike, **kw) -> None:
    """:func:`make_grid` then :func:`save_image`.

    Args:
        images: As for :func:`make_grid`.
        path: Destination (suffix picks the format) or ``"-"``.
        **kw: :func:`make_grid` keywords, plus ``quality`` for :func:`save_image`.
    """
    quality = kw.pop("quality", 95)
    save_image(make_grid(images, **kw), path, quality=quality)


def save_gif(
    frames: torch.Tensor | Sequence[ImageLike],
    path: str | os.PathLike,
    *,
    duration_ms: int | Sequence[int] = 100,
    loop: int = 0,
    pingpong: bool = False,
    captions: Sequence[str] | None = None,
    value_range: Sequence[float] = (-1.0, 1.0),
) -> None:
    """Write an animated GIF (atomically) via imageio.

    GIF stores delays in 1/100 s, so durations are rounded down to 10 ms; many viewers also
    play delays under 20 ms slowly. Pillow merges consecutive identical frames into one
    (adding their durations), so the file can hold fewer frames than given.

    Args:
        frames: Tensor ``(N, 3, H, W)`` or a list of tensors / PIL images / arrays; all are
            resized to the first frame's size.
        path: Destination ``.gif`` file, or ``"-"`` for standard output.
        duration_ms: Delay per frame, one value or one per input frame.
        loop: Netscape loop count; 0 loops forever.
        pingpong: Play forwards then backwards: ``N`` frames become ``2N - 2`` (the end frames
            are not repeated, so the loop has no stutter).
        captions: One string per input frame, drawn under it.
        value_range: Range of float inputs.

    Raises:
        ImageError: The path does not end in ``.gif``.
        DeepsimError: The file could not be written.
    """
    import imageio.v3 as iio

    to_stdout = os.fspath(path) == "-"
    if not to_stdout and Path(path).suffix.lower() != ".gif":
        raise ImageError(f"cannot save {path}: an animation must be written to a .gif file")
    pils = _as_pil_list(frames, value_range)
    n = len(pils)
    if isinstance(duration_ms, (int, float)):
        durations = [int(duration_ms)] * n
    else:
        durations = [int(d) for d in duration_ms]
        if len(durations) != n:
            raise ValueError(f"got {len(durations)} durations for {n} frames")
    if any(d < 0 for d in durations):
        raise ValueError("frame durations must be >= 0 ms")
    if captions is not None:
        if len(captions) != n:
            raise ValueError(f"got {len(captions)} captions for {n} frames")
        # One layout for all frames so every frame has the same height.
        font, cap_lines, cap_h = _fit_captions(captions, pils[0].width)
        if cap_h:
            fg = _text_color((255, 255, 255))
            framed = []
            for im, ls in zip(pils, cap_lines):
                canvas = Image.new("RGB", (im.width, im.height + cap_h), (255, 255, 255))
                canvas.paste(im, (0, 0))
                _draw_lines(ImageDraw.Draw(canvas), font, ls, 0, im.height + 1, im.width, fg)
                framed.append(canvas)
            pils = framed
    if pingpong and n > 2:
        pils = pils + pils[-2:0:-1]
        durations = durations + durations[-2:0:-1]
    stack = np.stack([np.asarray(p, dtype=np.uint8) for p in pils])  # (N, H, W, 3)
    kwargs = {"extension": ".gif", "is_batch": True, "duration": durations, "loop": loop}
    # encoded in memory, then written by us: imageio's writer, failing on a full disk, reports the
    # error a second time from its finalizer (an "Exception ignored in" traceback on stderr)
    data = iio.imwrite("<bytes>", stack, **kwargs)
    if to_stdout:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from .provenance import current, sidecar_path, to_json
    rec = current()
    try:
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
        if rec is not None:  # GIF has no room for it: NAME.gif.json beside it (deepsim info NAME.gif)
            side = sidecar_path(path)
            with atomic_output(side) as tmp:
                with open(tmp, "w") as f:
                    f.write(to_json(rec))
    except OSError as e:
        raise _write_failed(path, e) from e
