"""Tests for deepsim_cli.images: every odd input format is generated here with Pillow."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from deepsim_cli.errors import UsageError
from deepsim_cli.images import (
    ImageError,
    from_uint8,
    list_images,
    load_image,
    load_images,
    save_image,
    to_pil,
    to_uint8,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _photo(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth but asymmetric RGB test picture (gradients, so lossy codecs do well)."""
    y, x = np.mgrid[0:h, 0:w]
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)
    return np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8)


def _solid(color, h=8, w=8, mode="RGB") -> Image.Image:
    return Image.new(mode, (w, h), color)


def _u8(t: torch.Tensor) -> np.ndarray:
    return to_uint8(t, (-1.0, 1.0)).astype(int)


# ---------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "suffix, fmt, tol",
    [(".png", "PNG", 0), (".bmp", "BMP", 0), (".tiff", "TIFF", 0), (".jpg", "JPEG", 6), (".webp", "WEBP", 8)],
)
def test_load_common_formats(tmp_path, suffix, fmt, tol):
    arr = _photo()
    path = tmp_path / f"img{suffix}"
    kw = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(arr).save(path, format=fmt, **kw)

    x = load_image(path)
    assert x.dtype == torch.float32 and x.shape == (3, 48, 64)
    assert x.min() >= -1.0 and x.max() <= 1.0
    err = np.abs(_u8(x) - arr.astype(int)).mean()
    assert err <= tol, f"{fmt}: mean abs error {err}"


def test_load_str_path_bytes_and_stream_agree(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_photo()).save(path)
    data = path.read_bytes()
    a = load_image(str(path))
    assert torch.equal(a, load_image(path))
    assert torch.equal(a, load_image(data))
    with open(path, "rb") as f:
        assert torch.equal(a, load_image(f))


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [_solid(c, 16, 16) for c in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 3
    x = _u8(load_image(path))
    assert x.shape == (16, 16, 3)
    assert (np.abs(x - np.array(RED)) <= 2).all()


def test_grayscale_is_repeated_to_rgb(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (10, 6), 100).save(path)
    x = load_image(path)
    assert x.shape == (3, 6, 10)
    assert (_u8(x) == 100).all()


def test_palette_image(tmp_path):
    src = Image.fromarray(_photo()).quantize(colors=16)
    assert src.mode == "P"
    path = tmp_path / "pal.png"
    src.save(path)
    expected = np.asarray(src.convert("RGB")).astype(int)
    assert (_u8(load_image(path)) == expected).all()


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    # Pure cyan-free, magenta+yellow ink = red.
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    x = _u8(load_image(path))
    assert x[..., 0].min() > 240 and x[..., 1].max() < 15 and x[..., 2].max() < 15


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((8, 12, 4), np.uint8)
    arr[:, :4] = (255, 0, 0, 255)  # opaque red
    arr[:, 4:8] = (0, 0, 0, 0)  # fully transparent black: must become white, not black
    arr[:, 8:] = (0, 0, 255, 128)  # half-transparent blue
    path = tmp_path / "rgba.png"
    Image.fromarray(arr).save(path)
    x = _u8(load_image(path))
    assert (x[:, :4] == RED).all()
    assert (x[:, 4:8] == WHITE).all()
    assert (np.abs(x[:, 8:] - np.array([127, 127, 255])) <= 1).all()


def test_palette_with_transparency_composited_on_white(tmp_path):
    im = Image.new("P", (6, 6), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (3 * 254))
    im.paste(1, (0, 0, 3, 6))
    im.info["transparency"] = 0
    path = tmp_path / "ptrans.png"
    im.save(path, transparency=0)
    x = _u8(load_image(path))
    assert (x[:, :3] == RED).all() and (x[:, 3:] == WHITE).all()


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 128 * 257, 65535, 32768]], dtype=np.uint16).repeat(4, 0)
    path = tmp_path / "gray16.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    x = _u8(load_image(path))
    assert x.shape == (4, 4, 3)
    assert (x[:, 0] == 0).all()
    assert (x[:, 1] == 128).all()  # clipping would give 255 here
    assert (x[:, 2] == 255).all()
    assert (np.abs(x[:, 3] - 128) <= 1).all()


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((40, 60, 3), np.uint8)  # H=40, W=60 as stored
    arr[:20, :30] = RED  # stored top-left quadrant
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rot.jpg"
    im.save(path, quality=95, exif=exif.tobytes())

    x = _u8(load_image(path))
    assert x.shape == (60, 40, 3)  # dimensions swapped
    # After a clockwise turn the stored top-left corner is displayed at the top right.
    assert np.abs(x[5, -5] - np.array(RED)).max() < 30
    assert np.abs(x[5, 5]).max() < 30


def test_resize_center_crop_and_stretch(tmp_path):
    arr = np.zeros((48, 144, 3), np.uint8)
    arr[:, :48], arr[:, 48:96], arr[:, 96:] = RED, GREEN, BLUE
    path = tmp_path / "wide.png"
    Image.fromarray(arr).save(path)

    crop = _u8(load_image(path, 32))
    assert crop.shape == (32, 32, 3)
    # The centre square is exactly the green third (edges may pick up filter bleed).
    assert (np.abs(crop[:, 2:-2] - np.array(GREEN)) <= 3).all()

    stretch = _u8(load_image(path, 32, crop=False))
    assert stretch.shape == (32, 32, 3)
    assert (np.abs(stretch[:, 2] - np.array(RED)) <= 3).all()
    assert (np.abs(stretch[:, -3] - np.array(BLUE)) <= 3).all()

    tall = _u8(load_image(path, 16))
    assert tall.shape == (16, 16, 3)


def test_bad_size_is_usage_error(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_photo()).save(path)
    with pytest.raises(UsageError):
        load_image(path, 0)


# ----------------------------------------------------------------------------------- errors


def _make_bad(kind: str, tmp_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "nope.jpg"
    if kind == "empty":
        p = tmp_path / "empty.png"
        p.write_bytes(b"")
        return p
    if kind == "truncated":
        p = tmp_path / "trunc.jpg"
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, "JPEG", quality=95)
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        return p
    if kind == "text":
        p = tmp_path / "notes.jpg"
        p.write_text("this is not a picture\nat all\n")
        return p
    if kind == "directory":
        p = tmp_path / "adir.png"
        p.mkdir()
        return p
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "text", "directory"])
def test_unreadable_inputs_raise_one_line_image_error(tmp_path, monkeypatch, kind):
    # Another test or plugin flipping this global would make truncated files "load".
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    path = _make_bad(kind, tmp_path)
    with pytest.raises(ImageError) as info:
        load_image(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg
    assert path.name in msg
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_truncated_message_mentions_truncation(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    with pytest.raises(ImageError, match="truncated"):
        load_image(_make_bad("truncated", tmp_path))


def test_empty_bytes_and_empty_stdin(monkeypatch):
    with pytest.raises(ImageError):
        load_image(b"")
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(b"")))
    with pytest.raises(ImageError, match="stdin"):
        load_image("-")


def test_stdin(monkeypatch):
    buf = io.BytesIO()
    arr = _photo(20, 30)
    Image.fromarray(arr).save(buf, "PNG")
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(buf.getvalue())))
    x = load_image("-")
    assert (_u8(x) == arr).all()


# ------------------------------------------------------------------------- listing / batches


def test_list_images_expands_directories(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for name in ["b.png", "a.JPG", "sub/c.webp"]:
        Image.new("RGB", (8, 8)).save(d / name, format="PNG")
    (d / "readme.txt").write_text("x")
    (d / ".hidden.png").write_bytes(b"")
    single = tmp_path / "z.png"
    Image.new("RGB", (8, 8)).save(single)

    got = list_images([single, d])
    assert got == [single, d / "a.JPG", d / "b.png", d / "sub" / "c.webp"]
    assert list_images(str(single)) == [single]


def test_list_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        list_images([tmp_path / "empty"])
    with pytest.raises(ImageError, match="not found"):
        list_images([tmp_path / "missing.png"])


def test_load_images_batches(tmp_path):
    for i, size in enumerate([(30, 20), (20, 40), (16, 16)]):
        Image.fromarray(_photo(*size)).save(tmp_path / f"{i}.png")
    x = load_images([tmp_path], 16)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    with pytest.raises(ImageError, match="differ in size"):
        load_images([tmp_path], None)


# ------------------------------------------------------------------------ conversion / save


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, float("nan")]).view(1, 1, 6).expand(3, 1, 6)
    out = to_uint8(x, (-1.0, 1.0))
    assert out.dtype == np.uint8 and out.shape == (1, 6, 3)
    assert out[0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]
    # Explicit range: the same numbers mean something else in [0, 1].
    assert to_uint8(torch.full((3, 1, 1), 0.5), (0.0, 1.0))[0, 0, 0] == 128
    batch = to_uint8(torch.zeros(2, 3, 4, 5), (-1, 1))
    assert batch.shape == (2, 4, 5, 3)


def test_uint8_float_round_trip_is_exact():
    arr = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    for rng in [(-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)]:
        t = from_uint8(arr, rng)
        assert t.shape == (2, 3, 5, 7) and t.dtype == torch.float32
        assert t.min() >= rng[0] and t.max() <= rng[1]
        assert (to_uint8(t, rng) == arr).all()
    with pytest.raises(TypeError):
        from_uint8(arr.astype(np.float32))


def test_save_image_png_round_trip_exact(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    path = tmp_path / "out" / "x.png"
    save_image(from_uint8(arr), path)
    assert (to_uint8(load_image(path)) == arr).all()
    # Same bytes from a PIL image, an array, and a [0, 1] tensor with its range stated.
    for img, rng in [(Image.fromarray(arr), (-1, 1)), (arr, (-1, 1)), (from_uint8(arr, (0, 1)), (0, 1))]:
        save_image(img, path, value_range=rng)
        assert (to_uint8(load_image(path)) == arr).all()
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temp files left


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp", ".PNG"])
def test_save_image_other_formats(tmp_path, suffix):
    arr = _photo()
    path = tmp_path / f"x{suffix}"
    save_image(arr, path, quality=95)
    expected = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".PNG": "PNG"}[suffix]
    with Image.open(path) as im:
        assert im.format == expected
    assert np.abs(_u8(load_image(path)) - arr.astype(int)).mean() < 8


def test_save_image_to_stdout(monkeypatch):
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(buffer=out))
    arr = _photo(10, 12)
    save_image(arr, "-")
    assert out.getvalue().startswith(b"\x89PNG")
    assert (np.asarray(Image.open(io.BytesIO(out.getvalue()))) == arr).all()


def test_unknown_suffix_writes_nothing(tmp_path):
    with pytest.raises(ImageError, match="unknown image format"):
        save_image(_photo(), tmp_path / "x.xyz")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    save_image(_photo(), path)
    before = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")  # a partial file, then the failure
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError):
        save_image(np.zeros((4, 4, 3), np.uint8), path)
    with pytest.raises(RuntimeError):
        save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / "new.png")
    assert path.read_bytes() == before  # old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]  # no new/temp files


def test_to_pil():
    t = from_uint8(np.full((4, 5, 3), 7, np.uint8))
    im = to_pil(t)
    assert im.mode == "RGB" and im.size == (5, 4)
    assert to_pil(t[None]).size == (5, 4)
    with pytest.raises(ValueError):
        to_pil(torch.zeros(2, 3, 4, 4))
