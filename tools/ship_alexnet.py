"""Copy a distilled AlexNet (written by `deepsim distill`) into weights/alexnet.safetensors with
its provenance and measured accuracy in the header.

    python benchmarks/distill_eval.py --student runs/alexnet-distilled.safetensors > eval.json
    python tools/ship_alexnet.py runs/alexnet-distilled.safetensors --eval eval.json \
        --data imagenette-160-train.tar --data tinyimagenet-64-train.tar --views 128814

The conv tensors are checked to be the genuine ones (bit-equal to weights/alexnet-conv.safetensors);
the head stays as distill wrote it (float16). Prints size and sha256 for weights/README.md.

With `--name NAME` the head is written in the Hugging Face sharded layout instead, beside the
shipped files and without replacing alexnet.safetensors: NAME-0000K-of-0000N.safetensors shards of
at most --max-shard-mib (the usual git hosts refuse files over 100 MB) and NAME.safetensors.index.json,
whose weight_map points the conv tensors at alexnet-conv.safetensors (stored once) and records every
shard's sha256. `--encoder-weights weights/NAME.safetensors.index.json` loads it.
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
    ap.add_argument("--name", help="write NAME.safetensors.index.json + head shards instead of alexnet.safetensors")
    ap.add_argument("--max-shard-mib", type=float, default=90.0)
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
    if a.name:
        return ship_sharded(a.name, ck, metrics, extra, int(a.max_shard_mib * 2**20))
    out = weights_dir() / "alexnet.safetensors"
    save_checkpoint(out, ck.tensors, kind="encoder", config=ck.config, encoder="alexnet", layer="fc8",
                    train_steps=ck.train_steps, metrics=metrics, extra=extra)
    print(f"{out}  {out.stat().st_size} bytes  sha256 {sha256_file(out)}  steps {ck.train_steps}")


def ship_sharded(name: str, ck, metrics: dict, extra: dict, max_bytes: int) -> None:
    head = {k: v for k, v in ck.tensors.items() if not k.startswith("features.")}
    shards: list[dict] = [{}]
    for k in sorted(head, key=lambda k: -head[k].numel()):  # largest first, first fit
        size = head[k].numel() * head[k].element_size()
        for sh in shards:
            if sum(v.numel() * v.element_size() for v in sh.values()) + size <= max_bytes:
                sh[k] = head[k]
                break
        else:
            shards.append({k: head[k]})
    wd = weights_dir()
    weight_map = {k: "alexnet-conv.safetensors" for k in ck.tensors if k.startswith("features.")}
    hashes = {"alexnet-conv.safetensors": sha256_file(wd / "alexnet-conv.safetensors")}
    for i, sh in enumerate(shards, 1):
        fname = f"{name}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_checkpoint(wd / fname, sh, kind="encoder-shard", config=ck.config, encoder="alexnet",
                        train_steps=ck.train_steps, extra=extra)
        hashes[fname] = sha256_file(wd / fname)
        weight_map.update({k: fname for k in sh})
        print(f"{wd / fname}  {(wd / fname).stat().st_size} bytes  sha256 {hashes[fname]}")
    index = wd / f"{name}.safetensors.index.json"
    meta = {"format": "deepsim sharded encoder", "encoder": "alexnet", "train_steps": ck.train_steps,
            "shard_sha256": hashes, "metrics": metrics, **extra}
    index.write_text(json.dumps({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))},
                                indent=2) + "\n")
    print(f"{index}  sha256 {sha256_file(index)}")


if __name__ == "__main__":
    main()
