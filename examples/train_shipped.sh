#!/usr/bin/env bash
# How the shipped generators in weights/ were trained: the exact commands, from the repository root.
# Wall times are the ones measured for the shipped files (see weights/README.md); rerunning
# reproduces them up to thread scheduling (batches and noise are a function of --seed and step).
set -euo pipefail
DATA=${DATA:-../shared/data}

# AlexNet pool5 (the paper's CONV5) → 128 px, full DeePSiM loss (feature + adversarial + image),
# on Imagenette train. CPU budget (2 cores): half-width generator, comparator at 128 px,
# image-loss warm start, E(x) cached once (fixed centre crops); --time-limit stops cleanly with a checkpoint, --resume continues.
deepsim train --layer pool5 --data "$DATA/imagenette-160-train.tar" --out runs/pool5-128 \
    --image-size 128 --g-width 0.5 --comparator-size 128 --batch 32 \
    --w-img 2.0 --feature-cache --load-size 128 --img-warmup 300 --steps 100000 --time-limit "${TIME_LIMIT:-68m}" --grid-every 250 --ckpt-every 250
deepsim eval --data "$DATA/imagenette-160-val.tar" --weights runs/pool5-128/generator.safetensors --n 500 --json > runs/pool5-128-eval.json
python tools/ship_generator.py runs/pool5-128/generator.safetensors --metrics runs/pool5-128-eval.json

# With a GPU: tools/device_job.py trains the distilled AlexNet head, the pool5/fc6/fc7/fc8
# generators (full loss and image-loss baselines) and evaluates Table 2 in one ~20-minute job.
