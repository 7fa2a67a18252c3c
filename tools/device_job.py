"""The GPU recipe for the shipped weights, as run on a lent H100 (see examples/train_shipped.sh).

Phases (each a subprocess so they share the GPU):
  1. distillation of AlexNet's fc head from MobileNetV2: DeepInversion images for the ImageNet
     classes the training data lacks, then KL distillation on real + synthetic views; an
     ablation student on real views only; both evaluated on imagenet-sample-256.
     In parallel: pool5 generators (full DeePSiM, a stronger-image-loss variant, image loss only).
  2. fc6 / fc7 / fc8 generators (full DeePSiM and image loss only) on the distilled AlexNet.
  3. Table 2 evaluation on imagenette-160-val (ours / image-loss / optimisation).

    python tools/device_job.py --data DIR --work DIR --minutes 17
DIR must hold inette144-part*.tar, tinyimagenet-64-train.tar, imagenet-sample-256.tar,
imagenette-160-val.tar, tinyimagenet-64-val.tar.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEVICE = os.environ.get("DEEPSIM_JOB_DEVICE", "cuda")
sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def phase_distill(args) -> None:
    """Subprocess: [DeepInversion] + distillation + evaluation of one student."""
    import numpy as np
    import torch

    from deepsim_cli.data import load_array
    from deepsim_cli.distill import DistillConfig, classes_in, deep_inversion, distill, teacher_student
    data, work = Path(args.data), Path(args.work)
    dev = torch.device(DEVICE)
    torch.backends.cudnn.benchmark = True
    inette, n1 = load_array(sorted(data.glob("inette144-part*.tar")), 144)
    tiny, n2 = load_array(data / "tinyimagenet-64-train.tar", 64)
    arrays = [inette, tiny]
    t0 = time.time()
    n_synth = 0
    if args.synth_seconds > 0:
        have = classes_in(n1 + n2)
        missing = [c for c in range(1000) if c not in have][:args.di_classes]
        log(f"{len(missing)} classes missing from the training data; DeepInversion for {args.synth_seconds}s")
        teacher, _ = teacher_student(dev, fold_bn=False)
        synth = []
        r = 0
        while not synth or time.time() - t0 < args.synth_seconds:
            synth.append(deep_inversion(teacher, missing, size=112, iters=args.di_iters, batch=800,
                                        seed=r, device=dev, log=log))
            r += 1
        synth = np.concatenate(synth)
        n_synth = len(synth)
        np.save(work / "synth.npy", synth)
        arrays.append(synth)
        del teacher
        torch.cuda.empty_cache()
    cfg = DistillConfig(steps=args.distill_steps, batch=args.distill_batch, time_limit=args.distill_seconds, log_every=100,
                        ckpt_every=100000)
    stats = distill(cfg, arrays, out=work / f"{args.name}.safetensors", device=dev, log=log)
    stats.update(n_real=len(inette) + len(tiny), n_synth=n_synth, wall=time.time() - t0)
    stats["eval"] = evaluate_student(work / f"{args.name}.safetensors", data, dev)
    (work / f"{args.name}.json").write_text(json.dumps(stats, indent=2))
    log(f"{args.name}: {json.dumps(stats)}")


def evaluate_student(path: Path, data: Path, dev) -> dict:
    from deepsim_cli.distill import evaluate_against_teacher
    return evaluate_against_teacher(path, data / "imagenet-sample-256.tar",
                                    [("imagenette-160-val", data / "imagenette-160-val.tar", 144),
                                     ("tinyimagenet-64-val", data / "tinyimagenet-64-val.tar", 64)],
                                    device=dev)


def gen_cmd(args, name: str, layer: str, loss: str, seconds: float, encoder_weights: str | None, **kw) -> list[str]:
    data = Path(args.data)
    code = (
        "import sys, json; sys.path.insert(0, %r)\n"
        "from deepsim_cli.config import TrainConfig\n"
        "from deepsim_cli.training import train\n"
        "import torch; torch.backends.cudnn.benchmark = True\n"
        "cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))\n"
        "train(cfg, run_dir=sys.argv[2], device=%r, resume=False,\n"
        "      on_step=lambda s, st: print(json.dumps(st), flush=True) if s %% 500 == 0 else None)\n"
    ) % (str(REPO), DEVICE)
    cfg = dict(layer=layer, loss=loss, data=[str(p) for p in sorted(data.glob("inette144-part*.tar"))],
               steps=10**7, batch=args.gen_batch, time_limit=seconds, log_every=50, grid_every=2000, ckpt_every=2000,
               img_warmup=500, encoder_weights=encoder_weights, load_size=144, image_size=128)
    cfg.update(kw)
    return [sys.executable, "-c", code, json.dumps(cfg), str(Path(args.work) / "runs" / name)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--minutes", type=float, default=17)
    ap.add_argument("--phase", default="all")
    ap.add_argument("--name", default="alexnet")
    ap.add_argument("--synth-seconds", type=float, default=0)
    ap.add_argument("--di-iters", type=int, default=300)
    ap.add_argument("--di-classes", type=int, default=1000)
    ap.add_argument("--distill-batch", type=int, default=256)
    ap.add_argument("--gen-batch", type=int, default=64)
    ap.add_argument("--table-n", type=int, default=500)
    ap.add_argument("--distill-steps", type=int, default=20000)
    ap.add_argument("--distill-seconds", type=float, default=300)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.phase == "distill":
        phase_distill(args)
        return

    t_start = time.time()
    deadline = t_start + args.minutes * 60
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    # decode every data set once (cached as .npz) before the processes start
    from deepsim_cli.data import load_array
    data = Path(args.data)
    load_array(sorted(data.glob("inette144-part*.tar")), 144)
    load_array(data / "tinyimagenet-64-train.tar", 64)
    load_array(data / "imagenet-sample-256.tar", 256)
    load_array(data / "imagenette-160-val.tar", 144)
    load_array(data / "imagenette-160-val.tar", 128)
    load_array(data / "tinyimagenet-64-val.tar", 64)
    log(f"data decoded in {time.time() - t_start:.0f}s")

    def spawn(name, cmd):
        f = open(logs / f"{name}.log", "w")
        log(f"start {name}")
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    me = [sys.executable, __file__, "--data", args.data, "--work", args.work, "--phase", "distill",
          "--distill-seconds", str(args.distill_seconds), "--distill-steps", str(args.distill_steps),
          "--di-iters", str(args.di_iters), "--di-classes", str(args.di_classes),
          "--distill-batch", str(args.distill_batch)]
    procs = {
        "distill-main": spawn("distill-main", me + ["--name", "alexnet", "--synth-seconds", str(args.synth_seconds)]),
        "distill-real": spawn("distill-real", me + ["--name", "alexnet-realonly"]),
    }
    gen_seconds_p5 = deadline - time.time() - 90
    procs["pool5-full"] = spawn("pool5-full", gen_cmd(args, "pool5-full", "pool5", "full", gen_seconds_p5, None))
    procs["pool5-img"] = spawn("pool5-img", gen_cmd(args, "pool5-img", "pool5", "img", gen_seconds_p5, None))
    procs["pool5-imgx4"] = spawn("pool5-imgx4", gen_cmd(args, "pool5-imgx4", "pool5", "full", gen_seconds_p5, None,
                                                       w_img=0.2))
    procs["distill-main"].wait()
    log(f"distillation finished: rc {procs['distill-main'].returncode}")
    head = work / "alexnet.safetensors"
    if head.exists():
        rem = deadline - time.time() - 90
        for layer in ("fc6", "fc7", "fc8"):
            procs[f"{layer}-full"] = spawn(f"{layer}-full", gen_cmd(args, f"{layer}-full", layer, "full", rem, str(head)))
            procs[f"{layer}-img"] = spawn(f"{layer}-img", gen_cmd(args, f"{layer}-img", layer, "img", rem, str(head)))
    for name, p in procs.items():
        p.wait()
        log(f"{name}: rc {p.returncode}")
    log(f"all training done at {time.time() - t_start:.0f}s")
    extra = ["--encoder-weights", str(head)] if head.exists() else ["--layers", "pool5"]
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "table2.py"), "--device", DEVICE,
                    "--runs", str(work / "runs"), "--data", str(data / "imagenette-160-val.tar"), *extra,
                    "--out", str(work / "table2.json"), "--n", str(args.table_n),
                    "--opt-n", str(min(args.table_n, 200))],
                   stdout=open(logs / "table2.log", "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)
    log(f"job done at {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
