"""Write the sample photos in examples/images/ from scikit-image's bundled test images.

The four pictures (astronaut, chelsea, coffee, rocket) ship inside scikit-image and are public
domain / CC0, so they can be redistributed with the repository. Each is centre-cropped to a
256×256 square and stored as a JPEG of at most 30 KB, small enough to keep the repository light.

Usage:
    python tools/make_example_images.py [--out examples/images] [--size 256]

Needs scikit-image (a dev dependency); the package itself never imports this script.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image

NAMES = ("astronaut", "chelsea", "coffee", "rocket")
MAX_BYTES = 30 * 1024


def square(img: Image.Image, size: int) -> Image.Image:
    """Centre square of `img`, resampled to size×size (bicubic, antialiased)."""
    w, h = img.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box)


def encode(img: Image.Image, quality: int = 85) -> bytes:
    """JPEG bytes at `quality`, lowered step by step until they fit in MAX_BYTES."""
    while True:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality, optimize=True)
        if buf.tell() <= MAX_BYTES or quality <= 50:
            return buf.getvalue()
        quality -= 5


def main() -> None:
    import skimage.data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples" / "images")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        img = square(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"), args.size)
        data = encode(img)
        if len(data) > MAX_BYTES:
            raise SystemExit(f"{name}: {len(data)} bytes even at the lowest quality; use a smaller --size")
        (args.out / f"{name}.jpg").write_bytes(data)
        print(f"{name}.jpg  {img.width}x{img.height}  {len(data) / 1024:.1f} KB")


if __name__ == "__main__":
    main()
