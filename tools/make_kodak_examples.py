"""Write examples/kodak24/: the 24 Kodak photos, reduced to 256×256, a small evaluation set that
ships with the repository (so `deepsim eval --data examples/kodak24` runs on a fresh clone).

The Kodak PhotoCD set (kodim01–kodim24) is widely described as released for unrestricted use. The
source is photos-eval.tar (photos-eval/kodak24/*.jpg, JPEG quality 95, short side ≤ 384; see the
project's shared data README); each photo is centre-cropped to a square, resized to 256×256
(bicubic, antialiased) and stored as JPEG quality 85 (at most 30 KB, as examples/images/).
Deterministic: rerunning it gives the same bytes.

Usage:
    python tools/make_kodak_examples.py ../shared/data/photos-eval.tar [--out examples/kodak24]
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_example_images import encode, square  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tar", type=Path, help="photos-eval.tar")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples" / "kodak24")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(args.tar) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if not (m.isfile() and "/kodak24/" in m.name and m.name.endswith(".jpg")):
                continue
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            data = encode(square(img, args.size))
            (args.out / Path(m.name).name).write_bytes(data)
            n += 1
    print(f"{n} photos → {args.out}")


if __name__ == "__main__":
    main()
