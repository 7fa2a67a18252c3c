"""Copy a trained generator into weights/ as float16 with its measured metrics in the header.

    python tools/ship_generator.py runs/pool5-128/generator.safetensors --metrics eval.json
Writes weights/<encoder>-<layer>-generator.safetensors and prints its sha256 and size for
weights/README.md. --metrics takes the JSON written by `deepsim eval --json` (the "generator"
rows become the checkpoint's metrics).
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepsim_cli.checkpoint import load_checkpoint, save_checkpoint, sha256_file  # noqa: E402
from deepsim_cli.encoders import weights_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("generator", type=Path)
    ap.add_argument("--metrics", type=Path)
    a = ap.parse_args()
    ck = load_checkpoint(a.generator, kind="generator")
    metrics = dict(ck.metrics)
    if a.metrics:
        rows = json.loads(a.metrics.read_text())["rows"]
        metrics["eval"] = [r for r in rows if r["method"] == "generator"]
        metrics["eval_data"] = json.loads(a.metrics.read_text())["data"]
    out = weights_dir() / f"{ck.encoder}-{ck.layer}-generator.safetensors"
    save_checkpoint(out, ck.tensors, kind="generator", config=ck.config, encoder=ck.encoder, layer=ck.layer,
                    encoder_sha256=ck.encoder_sha256, train_steps=ck.train_steps, metrics=metrics,
                    dtype=torch.float16)
    print(f"{out}  {out.stat().st_size} bytes  sha256 {sha256_file(out)}  steps {ck.train_steps}")


if __name__ == "__main__":
    main()
