"""Tests for deepsim_cli.figures: grids (captions, row labels) and animated GIFs."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

from deepsim_cli.figures import make_grid, save_gif, save_grid
from deepsim_cli.images import ImageError, from_uint8

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _solid(color, h=8, w=8, mode="RGB") -> Image.Image:
    return Image.new(mode, (w, h), color)


# ------------------------------------------------------------------------------------- grid

COLORS = [RED, GREEN, BLUE, (255, 255, 0), (0, 255, 255)]


def _cells(h=10, w=12):
    return torch.stack([from_uint8(np.full((h, w, 3), c, np.uint8)) for c in COLORS])


def test_grid_layout_without_captions():
    g = make_grid(_cells(), ncols=3, pad=2)
    assert g.size == (3 * 12 + 4 * 2, 2 * 10 + 3 * 2)
    a = np.asarray(g)
    for i, c in enumerate(COLORS):
        r, col = divmod(i, 3)
        y, x = 2 + r * 12 + 5, 2 + col * 14 + 6
        assert tuple(a[y, x]) == c, i
    assert tuple(a[2 + 12 + 5, 2 + 2 * 14 + 6]) == WHITE  # 6th cell is empty
    assert tuple(a[0, 0]) == WHITE  # padding is background
    # Default column count: ceil(sqrt(5)) = 3.
    assert make_grid(_cells()).size == g.size


def test_grid_captions_add_height_and_draw_text():
    cells = _cells(32, 40)
    plain = make_grid(cells, ncols=3, pad=2)
    cap = make_grid(cells, ncols=3, pad=2, captions=[f"img {i}" for i in range(5)])
    assert cap.width == plain.width
    extra = cap.height - plain.height
    assert extra > 0 and extra % 2 == 0  # two rows, each gains the same caption height
    cap_h = extra // 2
    a = np.asarray(cap).astype(int)
    strip = a[2 + 32 : 2 + 32 + cap_h, 2 : 2 + 40]  # caption area under the first cell
    assert (strip.sum(-1) < 300).any(), "no dark text pixels in the caption strip"
    empty = a[2 + 2 * (32 + cap_h) - cap_h + 2 : 2 + 2 * (32 + cap_h) + 2, 2 + 2 * 42 : 2 + 2 * 42 + 40]
    assert (empty == 255).all()  # missing 6th cell: no caption drawn

    two_lines = make_grid(cells, ncols=3, pad=2, captions=["a\nb"] + ["x"] * 4)
    assert two_lines.height > cap.height
    long = make_grid(cells, ncols=3, pad=2, captions=["a very long caption " * 10] * 5)
    assert long.width == plain.width  # text shrinks / truncates, never widens cells


def test_grid_mixed_inputs_and_row_labels():
    big = Image.new("RGB", (24, 20), BLUE)
    small = from_uint8(np.full((10, 12, 3), RED, np.uint8))
    g = make_grid([small, big, np.full((10, 12, 3), 0, np.uint8), small], ncols=2, pad=1)
    assert g.size == (2 * 12 + 3, 2 * 10 + 3)  # all resized to the first image's size
    labelled = make_grid([small, big, small, big], ncols=2, pad=1, row_labels=["real", "fake"])
    assert labelled.height == g.height and labelled.width > g.width
    assert (np.asarray(labelled)[:, :5].astype(int).sum(-1) < 300).any()  # label text drawn
    # With row labels the column count follows from the number of rows.
    assert make_grid([small] * 6, row_labels=["a", "b"]).height == make_grid([small] * 6, ncols=3).height
    with pytest.raises(ValueError):
        make_grid([small] * 4, ncols=2, captions=["only one"])


def test_save_grid(tmp_path):
    path = tmp_path / "grid.png"
    save_grid(_cells(), path, ncols=5, pad=0)
    with Image.open(path) as im:
        a = np.asarray(im)
    assert a.shape == (10, 60, 3) and tuple(a[5, 5]) == RED and tuple(a[5, 55]) == COLORS[4]


# -------------------------------------------------------------------------------------- GIF


def _gif_info(path):
    """(image header, frames as int arrays, per-frame durations) of a GIF file."""
    with Image.open(path) as im:
        frames, durations = [], []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
            frames.append(np.asarray(im.convert("RGB")).astype(int))
        im.seek(0)
        header = types.SimpleNamespace(n_frames=im.n_frames, size=im.size, width=im.width,
                                       height=im.height, info=dict(im.info))
    return header, frames, durations


def test_gif_round_trip(tmp_path):
    frames = [from_uint8(np.full((16, 20, 3), c, np.uint8)) for c in COLORS[:4]]
    path = tmp_path / "a.gif"
    save_gif(frames, path, duration_ms=[50, 100, 150, 200])
    im, got, durations = _gif_info(path)
    assert im.n_frames == 4 and im.size == (20, 16)
    assert durations == [50, 100, 150, 200]
    assert im.info.get("loop") == 0
    for g, c in zip(got, COLORS):
        assert (np.abs(g - np.array(c)) <= 4).all()
    assert [p.name for p in tmp_path.iterdir()] == ["a.gif"]


def test_gif_pingpong(tmp_path):
    frames = torch.stack([from_uint8(np.full((16, 20, 3), c, np.uint8)) for c in COLORS[:4]])
    path = tmp_path / "pp.gif"
    save_gif(frames, path, duration_ms=[50, 100, 150, 200], pingpong=True, loop=0)
    im, got, durations = _gif_info(path)
    assert im.n_frames == 2 * 4 - 2
    assert durations == [50, 100, 150, 200, 150, 100]
    order = [0, 1, 2, 3, 2, 1]
    for g, k in zip(got, order):
        assert (np.abs(g - np.array(COLORS[k])) <= 4).all()


def test_gif_constant_duration_and_captions(tmp_path):
    frames = [Image.new("RGB", (40, 32), c) for c in COLORS[:3]]
    path = tmp_path / "c.gif"
    save_gif(frames, path, duration_ms=80, captions=["one", "two", "three"])
    im, got, durations = _gif_info(path)
    assert im.n_frames == 3 and durations == [80, 80, 80]
    assert im.width == 40 and im.height > 32
    assert (got[0][32:].sum(-1) < 300).any()  # caption text under the frame


def test_gif_wrong_suffix(tmp_path):
    with pytest.raises(ImageError):
        save_gif([_solid(RED)] * 2, tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []
