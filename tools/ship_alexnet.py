"""Copy a distilled AlexNet (written by `deepsim distill`) into weights/alexnet.safetensors with
its provenance and measured accuracy in the header.

    python benchmarks/distill_eval.py --student runs/alexnet-distilled.safetensors > eval.json
    python tools/ship_alexnet.py runs/alexnet-distilled.safetensors --eval eval.json \
        --data imagenette-160-train.tar --data tinyimagenet-64-train.tar --views 128814

The conv tensors are checked to be the genuine ones (bit-equal to weights/alexnet-conv.safetensors);
the head stays as distill wrote it (float16). Prints size and sha256 for weights/README.md.
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
    ap.add_argument("distilled", type=Path)
    ap.add_argument("--eval", type=Path, required=True, help="JSON printed by benchmarks/distill_eval.py")
    ap.add_argument("--data", action="append", default=[], help="training tar names (provenance)")
    ap.add_argument("--views", type=int, default=0, help="cached augmented views trained on")
    a = ap.parse_args()
    ck = load_checkpoint(a.distilled, kind="encoder")
    conv = load_checkpoint(weights_dir() / "alexnet-conv.safetensors").tensors
    for k, v in conv.items():
        if not torch.equal(ck.tensors[k], v):
            sys.exit(f"{k} differs from the genuine conv weights")
    metrics = json.loads(a.eval.read_text())
    extra = dict(ck.extra)
    extra.update({"fc_source": "distilled here from the MobileNetV2 teacher (not the original AlexNet fc layers)",
                  "conv_source": "torchvision AlexNet_Weights.IMAGENET1K_V1 conv1-conv5 (weights/alexnet-conv.safetensors)",
                  "train_data": ", ".join(a.data), "views": str(a.views),
                  "licence": "ImageNet-derived: non-commercial research use"})
    out = weights_dir() / "alexnet.safetensors"
    save_checkpoint(out, ck.tensors, kind="encoder", config=ck.config, encoder="alexnet", layer="fc8",
                    train_steps=ck.train_steps, metrics=metrics, extra=extra)
    print(f"{out}  {out.stat().st_size} bytes  sha256 {sha256_file(out)}  steps {ck.train_steps}")


if __name__ == "__main__":
    main()
