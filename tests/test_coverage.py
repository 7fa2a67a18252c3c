"""Paths no other test ran: neighbors in its default pool5 space, eval with LPIPS, multi-layer
invert, an image on stdin, CLI training of a VAE, a real --time-limit stop, and training with two
processes (gloo, CPU) under DistributedDataParallel."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"
CHELSEA = str(IMAGES / "chelsea.jpg")
TINY_TRAIN = ["--layer", "pool5", "--batch", "4", "--image-size", "32", "--load-size", "36", "--g-width", "0.125",
              "--d-width", "0.125", "--grid-every", "0", "--ckpt-every", "2", "--encoder", "alexnet-random",
              "--comparator", "alexnet-random:pool5"]


def test_neighbors_default_space_is_pool5_and_finds_the_image(cli, in_tmp):
    r = cli("neighbors", CHELSEA, "--data", str(IMAGES), "--k", "3", "--json", "-o", "nn.png", "--no-cache")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out.get("space", "pool5") == "pool5"
    nn = out["results"][0]["neighbors"]
    assert nn[0]["image"].endswith("chelsea.jpg") and nn[0]["distance"] < 1e-2 * nn[1]["distance"]
    assert [n["distance"] for n in nn] == sorted(n["distance"] for n in nn)


def test_eval_reports_lpips(cli, in_tmp, tiny_gen_file):
    r = cli("eval", "--data", str(IMAGES), "--weights", str(tiny_gen_file), "--n", "4", "--json")
    assert r.exit_code == 0, r.stderr
    rows = {row["method"]: row for row in json.loads(r.stdout)["rows"]}
    assert 0.05 < rows["generator"]["lpips"] < 1.5  # an untrained generator is far from the photos
    r = cli("eval", "--data", str(IMAGES), "--weights", str(tiny_gen_file), "--n", "4", "--json", "--no-lpips")
    assert r.exit_code == 0, r.stderr
    assert "lpips" not in json.loads(r.stdout)["rows"][0]


def test_multi_layer_invert_grid_and_outdir(cli, in_tmp):
    r = cli("invert", CHELSEA, str(IMAGES / "coffee.jpg"), "--layer", "pool5,fc6", "-o", "grid.png", "--json")
    assert r.exit_code == 0, r.stderr
    w, h = Image.open("grid.png").size
    assert h > 3 * 128 and 2 * 128 < w < 3 * 128  # input row + one row per layer, two columns
    r = cli("invert", CHELSEA, "--layer", "pool5,fc6", "--outdir", "out", "--json")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in Path("out").iterdir()) == ["chelsea-fc6.png", "chelsea-pool5.png"]
    a, b = (np.asarray(Image.open(f"out/chelsea-{l}.png")) for l in ("pool5", "fc6"))
    assert a.shape == b.shape == (128, 128, 3) and not np.array_equal(a, b)


def test_invert_reads_one_image_from_stdin(cli, in_tmp, tiny_gen_file):
    data = Path(CHELSEA).read_bytes()
    r = cli("invert", "-", "--weights", str(tiny_gen_file), "-o", "from-stdin.png", input=data)
    assert r.exit_code == 0, r.stderr
    r2 = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "-o", "from-file.png")
    assert r2.exit_code == 0, r2.stderr
    assert np.array_equal(np.asarray(Image.open("from-stdin.png")), np.asarray(Image.open("from-file.png")))


def test_cli_trains_a_vae(cli, in_tmp):
    r = cli("train", "--model", "vae", "--data", str(IMAGES), "--out", "vae", "--steps", "2", "--json",
            "--latent-dim", "16", *TINY_TRAIN)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    from deepsim_cli.checkpoint import load_checkpoint
    ck = load_checkpoint(out["generator"], kind="vae")
    assert ck.train_steps == 2 and "kl" in out["stats"]


def test_time_limit_stops_a_run_with_a_checkpoint(cli, in_tmp):
    r = cli("train", "--data", str(IMAGES), "--out", "run", "--steps", "100000", "--time-limit", "2s", "--json",
            "--log-every", "1", *TINY_TRAIN)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert 1 <= out["step"] < 100000
    from deepsim_cli.checkpoint import read_metadata
    assert int(read_metadata(Path("run/state.safetensors"))["train_steps"]) == out["step"]
    r = cli("train", "--out", "run", "--resume", "--steps", str(out["step"] + 1), "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["step"] == out["step"] + 1  # and it resumes from there


_DDP_SCRIPT = r'''
import os, sys, numpy as np, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[2])
from deepsim_cli.config import TrainConfig
from deepsim_cli.training import train
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
rng = np.random.default_rng(0)
images = np.repeat(np.repeat(rng.integers(0, 256, (16, 3, 3, 3), dtype=np.uint8), 12, 1), 12, 2)
cfg = TrainConfig(encoder="alexnet-random", comparator="alexnet-random:pool5", layer="pool5", image_size=32,
                  load_size=36, g_width=0.125, d_width=0.125, fc_dims=(32,), batch=4, steps=3, log_every=1,
                  grid_every=0, ckpt_every=3, precision="fp32")
from deepsim_cli.training import Trainer
tr = Trainer(cfg, os.path.join(sys.argv[1], "steps"), torch.device("cpu"))
for _ in range(3):
    tr.train_step(tr.make_batch(images, tr.step))
    tr.step += 1
torch.save({k: v.detach().clone() for k, v in tr.G.state_dict().items()},
           os.path.join(sys.argv[1], f"G-rank{rank}.pt"))
train(cfg, run_dir=os.path.join(sys.argv[1], "run"), images=images)
dist.destroy_process_group()
'''


def test_two_process_gloo_training_keeps_the_ranks_in_step(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), str(tmp_path), str(REPO)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    g0, g1 = (torch.load(tmp_path / f"G-rank{k}.pt") for k in (0, 1))
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k  # DDP: same start, all-reduced gradients
    run = tmp_path / "run"  # and through train(): rank 0 alone writes the run folder
    assert (run / "generator.safetensors").is_file()
    stats = [json.loads(l) for l in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [1, 2, 3]  # rank 0 alone logs
