"""Distillation view caching speed: augmented views per second (random resized crop to 224, flip,
colour jitter, CutMix/MixUp, AlexNet pool5 + the MobileNetV2 teacher's logits), fp32 and bf16
side by side in one run, at several teacher resolutions.

    python benchmarks/distill_speed.py [--chunk 64] [--iters 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepsim_cli.distill import DistillConfig, _teacher_and_features, teacher_student  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--teacher-sizes", default="160,192,224")
    a = ap.parse_args()
    dev = torch.device("cpu")
    teacher, student = teacher_student(dev)
    teacher = teacher.to(memory_format=torch.channels_last)
    arrays = [torch.from_numpy(np.random.default_rng(0).integers(0, 256, (500, 160, 160, 3), dtype=np.uint8))]
    sizes = torch.tensor([500.0])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, chunk {a.chunk}")
    for ts in (int(t) for t in a.teacher_sizes.split(",")):
        rates = {}
        for p in ("fp32", "bf16"):
            cfg = DistillConfig(teacher_size=ts, precision=p)
            g = torch.Generator().manual_seed(0)
            _teacher_and_features(cfg, arrays, sizes, teacher, student, g, a.chunk, dev)  # warm-up
            t = time.perf_counter()
            for _ in range(a.iters):
                _teacher_and_features(cfg, arrays, sizes, teacher, student, g, a.chunk, dev)
            rates[p] = a.chunk * a.iters / (time.perf_counter() - t)
        print(f"teacher at {ts} px: fp32 {rates['fp32']:.1f} views/s, bf16 {rates['bf16']:.1f} views/s, "
              f"ratio {rates['bf16'] / rates['fp32']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
