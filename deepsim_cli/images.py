"""Image files in and out: loading, colour conversion, resize/crop, listing and saving single images.

Models work on float tensors ``(3, H, W)`` in ``[-1, 1]`` RGB; files are 8-bit. Every
conversion between the two goes through :func:`to_uint8` / :func:`from_uint8`, which take the
value range explicitly so a caller can never silently mix up ``[0, 1]`` and ``[-1, 1]``.
Figures that lay out several images (grids with captions, GIFs) are in :mod:`deepsim_cli.figures`.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import DeepsimError, UsageError
from .paths import check_input
from .utils import atomic_output

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageError",
    "MAX_PIXELS",
    "NonFiniteImage",
    "check_finite",
    "from_uint8",
    "list_images",
    "load_image",
    "load_images",
    "save_image",
    "to_pil",
    "to_uint8",
]

#: Suffixes that :func:`list_images` picks up when it expands a directory.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif",
     ".ppm", ".pgm", ".pbm", ".pnm"}
)

#: Largest image (width × height) :func:`load_image` decodes: 100 megapixels (300 MB as 8-bit RGB).
#: Bigger ones are refused from their header, before decoding: a 12,000 × 12,000 PNG of one colour
#: is a few KB on disk and 430 MB decoded (a "decompression bomb"). A module attribute, so a library
#: user can raise it.
MAX_PIXELS = 100_000_000

# Image.open warns (DecompressionBombWarning, on stderr) above Pillow's own MAX_IMAGE_PIXELS and raises
# above twice that; load_image makes its own check instead, so the warning is silenced around
# Image.open. warnings.catch_warnings swaps process-wide state, hence one opener at a time (opening
# reads only the header; decoding runs outside the lock, in parallel).
_OPEN_LOCK = threading.Lock()

# What save_image can write, keyed by lower-case suffix.
_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")

ValueRange = tuple[float, float]
ImageLike = Union[torch.Tensor, Image.Image, np.ndarray]


class ImageError(UsageError):
    """An image that cannot be read or written; the message is one line and names the file."""

    def __init__(self, message: str) -> None:
        # The CLI prints this verbatim after "error:"; decoder messages sometimes carry
        # newlines, which would break one-line diagnostics and log parsing.
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------------------------
# uint8 <-> float conversion (the single place where the value range is applied)
# --------------------------------------------------------------------------------------------


def _check_range(value_range: Sequence[float]) -> ValueRange:
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    return lo, hi


def to_uint8(x: torch.Tensor, value_range: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    """Convert float image tensors to uint8 arrays, channels last.

    Args:
        x: ``(3, H, W)`` or ``(N, 3, H, W)`` (a single channel is repeated to RGB), any float
            dtype and device.
        value_range: The ``(low, high)`` values of ``x`` that map to 0 and 255.

    Returns:
        ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 array; values are rounded and clamped, NaN → 0.
    """
    lo, hi = _check_range(value_range)
    if not torch.is_tensor(x):
        raise TypeError(f"to_uint8 expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"expected (3, H, W) or (N, 3, H, W), got {tuple(x.shape)}")
    y = x.detach().to("cpu", torch.float32)
    y = (y - lo) * (255.0 / (hi - lo))
    # Round rather than truncate so uint8 -> float -> uint8 is exact despite float error.
    y = torch.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0).round_().clamp_(0, 255)
    y = y.to(torch.uint8)
    if y.shape[-3] == 1:
        y = y.expand(*y.shape[:-3], 3, *y.shape[-2:])
    return y.movedim(-3, -1).contiguous().numpy()


def from_uint8(arr: np.ndarray, value_range: Sequence[float] = (-1.0, 1.0)) -> torch.Tensor:
    """Convert uint8 arrays (channels last) to float32 tensors (channels first).

    Args:
        arr: ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` uint8 with C in {1, 3}; grayscale is
            repeated to RGB. A uint8 torch tensor in the same layout is accepted too.
        value_range: The ``(low, high)`` values that 0 and 255 map to.

    Returns:
        float32 ``(3, H, W)`` or ``(N, 3, H, W)`` tensor in ``value_range``.
    """
    lo, hi = _check_range(value_range)
    if torch.is_tensor(arr):
        arr = arr.detach().cpu().numpy()
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise TypeError(f"from_uint8 expects uint8 data, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim not in (3, 4) or arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected (H, W, 3) or (N, H, W, 3), got {arr.shape}")
    if not arr.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only memory
        arr = arr.copy()
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32)
    t = t.movedim(-1, -3)
    if t.shape[-3] == 1:
        t = t.expand(*t.shape[:-3], 3, *t.shape[-2:])
    return (t * ((hi - lo) / 255.0) + lo).contiguous()


def to_pil(x: ImageLike, value_range: Sequence[float] = (-1.0, 1.0)) -> Image.Image:
    """Convert one image to an RGB PIL image.

    Args:
        x: A ``(3, H, W)`` or ``(1, 3, H, W)`` tensor in ``value_range``; a PIL image (converted
            to RGB, alpha composited on white); or an ``(H, W[, C])`` array, uint8 as-is or float
            in ``value_range``.
        value_range: Range of float inputs.

    Returns:
        An RGB ``PIL.Image.Image``.
    """
    if isinstance(x, Image.Image):
        return _to_rgb8(x)
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8:
            if x.ndim == 3 and x.shape[-1] == 1:
                x = x[:, :, 0]
            return _to_rgb8(Image.fromarray(np.ascontiguousarray(x)))
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        x = x[None] if x.ndim == 2 else x.movedim(-1, -3)
    if not torch.is_tensor(x):
        raise TypeError(f"expected a Tensor, PIL image or ndarray, got {type(x).__name__}")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {x.shape[0]} (use make_grid)")
        x = x[0]
    check_finite(x)
    return Image.fromarray(to_uint8(x, value_range))


class NonFiniteImage(DeepsimError):
    """An image to be written holds NaN or inf (a diverged optimisation, broken weights): writing it
    would give a black or garbage file, so nothing is written (exit code 1)."""


def check_finite(x: torch.Tensor) -> None:
    """NonFiniteImage if the float tensor `x` holds NaN or inf (before it becomes an 8-bit file)."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NonFiniteImage("the result holds non-finite values (NaN or inf), e.g. from a diverged "
                             "optimisation or broken weights; no image was written")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _read_source(src: str | os.PathLike | bytes | BinaryIO) -> tuple[str, str | io.BytesIO]:
    """Return (display name, something Image.open accepts), validating what can be checked early."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise ImageError("cannot read image <bytes>: no data (0 bytes)")
        return "<bytes>", io.BytesIO(data)
    if isinstance(src, (str, os.PathLike)):
        if os.fspath(src) == "-":
            # Read everything up front: stdin is not seekable and Pillow needs to seek.
            data = sys.stdin.buffer.read()
            if not data:
                raise ImageError("cannot read image from stdin: no data (0 bytes)")
            return "<stdin>", io.BytesIO(data)
        path = Path(src)
        # missing, a folder, a symbolic-link loop, a FIFO or device (reading one would block): one line
        check_input(path, what="image file", folder_ok=False, error=ImageError)
        try:
            empty = path.stat().st_size == 0
        except OSError as e:
            raise ImageError(f"cannot read image {path}: {e.strerror or e}") from e
        if empty:
            raise ImageError(f"cannot read image {path}: file is empty (0 bytes)")
        return str(path), str(path)
    if hasattr(src, "read"):
        name = str(getattr(src, "name", "<stream>"))
        data = src.read()
        if isinstance(data, str):
            raise ImageError(f"cannot read image {name}: stream is opened in text mode")
        if not data:
            raise ImageError(f"cannot read image {name}: no data (0 bytes)")
        return name, io.BytesIO(data)
    raise TypeError(f"load_image expects a path, '-', bytes or a binary file, got {type(src).__name__}")


def _to_rgb8(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit sRGB, compositing transparency onto white."""
    if im.mode in _16BIT_MODES:
        arr = np.asarray(im).astype(np.float64)
        # 16-bit PNG/TIFF decode to I;16 (or I in older Pillow) with 0..65535; Pillow's own
        # convert("L") clips at 255 instead of scaling, which turns most photos white.
        arr = np.clip(arr, 0, 65535) / 257.0
        im = Image.fromarray(np.round(arr).astype(np.uint8))
    elif im.mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        # Float TIFFs are usually normalised to [0, 1]; anything larger is taken as 0..255.
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        im = Image.fromarray(np.round(np.clip(arr, 0, 255)).astype(np.uint8))

    icc = im.info.get("icc_profile")
    if icc and im.mode in ("RGB", "RGBA", "CMYK"):
        # Phones and cameras embed Display P3 / Adobe RGB; the networks were trained on sRGB,
        # and ignoring the profile shifts colours noticeably. A broken profile is not fatal.
        try:
            from PIL import ImageCms  # needs LittleCMS, which some Pillow builds lack

            out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
            im = ImageCms.profileToProfile(
                im, io.BytesIO(icc), ImageCms.createProfile("sRGB"), outputMode=out_mode
            )
        except Exception:
            pass

    has_alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        # White, not black: transparent logos and icons are meant to sit on a light page.
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def _resize(im: Image.Image, size: int, crop: bool) -> Image.Image:
    w, h = im.size
    if crop:
        # Resample the centred square straight to size×size (Pillow's `box`): one resampling
        # step, no rounding of an intermediate short-side size.
        s = min(w, h)
        box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    else:
        box = (0, 0, w, h)
    if (w, h) == (size, size):
        return im
    # Pillow widens the bicubic kernel by the reduction factor, i.e. downscaling is antialiased.
    return im.resize((size, size), Image.Resampling.BICUBIC, box=box)


def load_image(
    src: str | os.PathLike | bytes | BinaryIO,
    size: int | None = None,
    *,
    crop: bool = True,
) -> torch.Tensor:
    """Load an image file as a float tensor.

    Reads anything Pillow reads (JPEG, PNG, WebP, BMP, TIFF, the first frame of a GIF, ...),
    applies the EXIF orientation, converts grayscale / palette / CMYK / 16-bit / alpha images to
    8-bit RGB (alpha composited on white) and optionally resizes.

    Args:
        src: A path, ``"-"`` for standard input, the encoded bytes, or a binary file object.
        size: If given, the output is ``size × size``.
        crop: With ``size``: scale the short side to ``size`` and take the centre square
            (keeps the aspect ratio). If False, stretch the whole image to ``size × size``.

    Returns:
        float32 tensor ``(3, H, W)`` in ``[-1, 1]``.

    Raises:
        ImageError: The file is missing, empty, a directory, not an image, truncated or corrupt.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise UsageError(f"image size must be a positive integer, got {size!r}")
    name, source = _read_source(src)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(source)
        with opened as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise _TooLarge(f"{w}×{h} pixels is over the limit of {_megapixels(MAX_PIXELS)}")
            # Decode fully here: Pillow is lazy, and a truncated file would otherwise only fail
            # later, outside this try, with a confusing traceback.
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_rgb8(im)
            if size is not None:
                im = _resize(im, size, crop)
            arr = np.asarray(im, dtype=np.uint8)
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"cannot read image {name}: not a recognised image format") from e
    except _TooLarge as e:
        raise ImageError(f"cannot read image {name}: {e}") from None
    except Image.DecompressionBombError:  # Pillow's own limit (twice its MAX_IMAGE_PIXELS), met in open
        raise ImageError(f"cannot read image {name}: over the limit of {_megapixels(MAX_PIXELS)}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure means the input is bad
        reason = str(e) or type(e).__name__
        raise ImageError(f"cannot read image {name}: {reason}") from e
    return from_uint8(arr, (-1.0, 1.0))  # (3, H, W) in [-1, 1]


class _TooLarge(Exception):
    pass


def _megapixels(n: int) -> str:
    return f"{n / 1e6:g} megapixels"


def list_images(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and directories into a list of image files.

    Files named explicitly are kept as given (even with an unusual suffix) so that a bad file
    is reported by :func:`load_image` rather than silently skipped. Directories are searched
    recursively for :data:`IMAGE_EXTENSIONS` (case-insensitive), sorted, skipping hidden files.
    ``"-"`` (standard input) is passed through.

    Args:
        paths: One path or a sequence of paths.

    Returns:
        The image paths, in argument order with each directory's contents sorted.

    Raises:
        ImageError: A path does not exist, is a symbolic-link loop or a FIFO / socket / device,
            or nothing was found at all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        # missing, a symbolic-link loop, a FIFO or device (reading one would block) → one line
        kind = check_input(p, what="image file", error=ImageError)
        if kind != "folder":
            out.append(path)
        else:
            found = sorted(
                f
                for f in path.rglob("*")
                # Hidden files include macOS "._x.jpg" forks and our own atomic-write temps.
                if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file()
            )
            if not found:
                raise ImageError(f"no image files found in directory {path}")
            out.extend(found)
    if not out:
        raise ImageError("no image files given")
    return out


def load_images(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    size: int | None,
    crop: bool = True,
) -> torch.Tensor:
    """Load several images (directories expanded by :func:`list_images`) into one batch.

    Args:
        paths: Files and/or directories.
        size: Output side length; if None all images must already share one size.
        crop: See :func:`load_image`.

    Returns:
        float32 tensor ``(N, 3, size, size)`` in ``[-1, 1]``.
    """
    files = list_images(paths)
    images = [load_image(f, size, crop=crop) for f in files]
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise ImageError(f"images differ in size ({len(shapes)} sizes among {len(files)} files); pass a size")
    return torch.stack(images)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _write_failed(path: object, e: OSError) -> DeepsimError:
    return DeepsimError(f"cannot write {path}: {e.strerror or e}")


def save_image(
    img: ImageLike,
    path: str | os.PathLike,
    *,
    value_range: Sequence[float] = (-1.0, 1.0),
    quality: int = 95,
) -> None:
    """Save one image; the format comes from the suffix (.png, .jpg/.jpeg, .webp). A PNG
    carries the evidence record of the CLI command that made it (deepsim_cli.provenance).

    The file is written atomically (temporary file + rename), so a failure never leaves a
    half-written image. ``path == "-"`` writes PNG bytes to standard output.

    Args:
        img: Tensor ``(3, H, W)`` in ``value_range``, a PIL image, or an array (see :func:`to_pil`).
        path: Destination, or ``"-"``.
        value_range: Range of float inputs.
        quality: JPEG / WebP quality (1-100); ignored for PNG.

    Raises:
        ImageError: Unknown suffix.
        DeepsimError: The file could not be written.
    """
    from .provenance import png_info

    pil = to_pil(img, value_range)
    if os.fspath(path) == "-":
        buf = io.BytesIO()
        pil.save(buf, format="PNG", pnginfo=png_info())
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(
            f"cannot save {path}: unknown image format {path.suffix!r} (use .png, .jpg, .jpeg or .webp)"
        )
    kwargs: dict = {}
    if fmt == "JPEG":
        # At high quality keep full-resolution chroma: 4:2:0 smears the fine colour detail that
        # feature inversions are judged on.
        kwargs = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
    elif fmt == "WEBP":
        kwargs = {"quality": quality}
    elif fmt == "PNG":
        kwargs = {"pnginfo": png_info()}  # the evidence record of a CLI command (deepsim info FILE)
    try:
        with atomic_output(path) as tmp:
            pil.save(tmp, format=fmt, **kwargs)
    except OSError as e:
        raise _write_failed(path, e) from e
