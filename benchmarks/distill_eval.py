"""Distilled AlexNet vs its MobileNetV2 teacher (top-1/top-5 and agreement).

Top-1 / top-5 of the teacher and the student on the 1000 labelled photos of
imagenet-sample-256 (one per class, label = the wnid in the file name; resize 256, centre crop
224), and their top-1 agreement there and on the Imagenette / Tiny ImageNet validation sets.

    python benchmarks/distill_eval.py [--student weights/alexnet.safetensors | --teacher-only]
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepsim_cli.distill import evaluate_against_teacher  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--student", default=None, help="AlexNet file (default: the shipped one)")
    ap.add_argument("--teacher-only", action="store_true")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    res = evaluate_against_teacher(
        "" if a.teacher_only else a.student, a.data / "imagenet-sample-256.tar",
        [] if a.teacher_only else [("imagenette-160-val", a.data / "imagenette-160-val.tar", 144),
                                   ("tinyimagenet-64-val", a.data / "tinyimagenet-64-val.tar", 64)],
        device=a.device)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
