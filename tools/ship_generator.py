"""Copy a trained generator or VAE into weights/ as float16 with its measured metrics in the header.

    python tools/ship_generator.py runs/pool5-128/generator.safetensors --metrics eval.json
    python tools/ship_generator.py runs/vae-deepsim/generator.safetensors --metrics sharpness.json
A generator goes to weights/<encoder>-<layer>-generator.safetensors; --metrics takes the JSON written
by `deepsim eval --json` (its "generator" rows become the checkpoint's metrics). A VAE goes to
weights/vae-deepsim.safetensors (full DeePSiM loss) or weights/vae-se.safetensors (`--loss img`, the
squared-error baseline), or --name; --metrics takes benchmarks/vae_sharpness.py's JSON, stored as is.
Prints the file's sha256 and size for weights/README.md.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepsim_cli.checkpoint import load_checkpoint, save_checkpoint, sha256_file  # noqa: E402
from deepsim_cli.encoders import weights_dir  # noqa: E402

VAE_NAMES = {"full": "vae-deepsim", "img": "vae-se"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--metrics", type=Path)
    ap.add_argument("--name", help="file name in weights/ without .safetensors (default: from kind/loss)")
    a = ap.parse_args()
    ck = load_checkpoint(a.checkpoint)
    if ck.kind not in ("generator", "vae"):
        sys.exit(f"error: {a.checkpoint} is a {ck.kind!r} checkpoint, not a generator or VAE")
    metrics = dict(ck.metrics)
    if a.metrics:
        doc = json.loads(a.metrics.read_text())
        if ck.kind == "generator":
            metrics["eval"] = [r for r in doc["rows"] if r["method"] == "generator"]
            metrics["eval_data"] = doc["data"]
        else:
            metrics["benchmark"] = doc
    if a.name:
        name = a.name
    elif ck.kind == "generator":
        name = f"{ck.encoder}-{ck.layer}-generator"
    else:
        loss = ck.config.get("train", {}).get("loss", "full")
        if loss not in VAE_NAMES:
            sys.exit(f"error: no default name for a VAE trained with --loss {loss}; pass --name")
        name = VAE_NAMES[loss]
    out = weights_dir() / f"{name}.safetensors"
    save_checkpoint(out, ck.tensors, kind=ck.kind, config=ck.config, encoder=ck.encoder, layer=ck.layer,
                    encoder_sha256=ck.encoder_sha256, train_steps=ck.train_steps, metrics=metrics,
                    extra=ck.extra, dtype=torch.float16)
    print(f"{out}  {out.stat().st_size} bytes  sha256 {sha256_file(out)}  steps {ck.train_steps}")


if __name__ == "__main__":
    main()
