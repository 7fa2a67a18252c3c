"""Re-encode a training tar at a smaller size so it fits a device run's 64 MiB carry limit.

    python tools/pack_for_device.py SRC.tar OUT.tar --size 144 --quality 85
Short side resized to --size, centre-cropped square, JPEG re-encoded; member names kept.
"""

import argparse
import io
import tarfile

from PIL import Image, ImageOps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=144)
    ap.add_argument("--quality", type=int, default=85)
    a = ap.parse_args()
    n = 0
    with tarfile.open(a.src) as src, tarfile.open(a.out, "w") as dst:
        for m in src:
            if not m.isfile() or not m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            im = ImageOps.exif_transpose(Image.open(src.extractfile(m))).convert("RGB")
            w, h = im.size
            s = a.size / min(w, h)
            im = im.resize((max(a.size, round(w * s)), max(a.size, round(h * s))), Image.BICUBIC)
            l, t = (im.width - a.size) // 2, (im.height - a.size) // 2
            im = im.crop((l, t, l + a.size, t + a.size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=a.quality)
            info = tarfile.TarInfo(m.name)
            info.size = buf.tell()
            buf.seek(0)
            dst.addfile(info, buf)
            n += 1
    print(f"{n} images → {a.out}")


if __name__ == "__main__":
    main()
