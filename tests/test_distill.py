"""Distillation of AlexNet's head: the CLI end to end on a tiny budget, resume, DeepInversion,
class bookkeeping and the teacher/student evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import cli_runner as _runner  # tests/ is on sys.path (no __init__.py)

from deepsim_cli.checkpoint import load_checkpoint
from deepsim_cli.cli import app
from deepsim_cli.distill import (classes_in, deep_inversion, evaluate_against_teacher, imagenet_wnids,
                                 teacher_student)
from deepsim_cli.encoders import build_encoder

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))


def test_wnids_are_the_1000_sorted_classes():
    w = imagenet_wnids()
    assert len(w) == 1000 and w == sorted(w) and len(set(w)) == 1000
    assert w[0] == "n01440764"  # tench, class 0


def test_classes_in_reads_folders_and_prefixes():
    names = ["train/n01440764/x.JPEG", "a/n01443537_goldfish.jpg", "other/thing.jpg"]
    assert classes_in(names) == {0, 1}


def test_distill_cli_writes_a_complete_alexnet_and_resumes(tmp_path):
    out = tmp_path / "alexnet.safetensors"
    args = ["--device", "cpu", "distill", "--data", str(IMAGES), "--out", str(out), "--batch", "4",
            "--load-size", "64", "--teacher-size", "96", "--json"]
    r = _runner().invoke(app, args + ["--steps", "2"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 2
    ck = load_checkpoint(out, kind="encoder")
    assert ck.train_steps == 2 and ck.extra["teacher"].startswith("mobilenet_v2")
    assert ck.tensors["classifier.1.weight"].dtype == torch.float16  # the head ships in float16
    conv = load_checkpoint(REPO / "weights" / "alexnet-conv.safetensors").tensors
    assert torch.equal(ck.tensors["features.0.weight"], conv["features.0.weight"])  # convs untouched
    enc = build_encoder("alexnet", out)
    assert "fc8" in enc.trained_layers
    r = _runner().invoke(app, args + ["--steps", "3"])  # continues from the saved state
    assert r.exit_code == 0, r.stderr
    assert "resumed distillation at step 2" in r.stderr
    assert load_checkpoint(out).train_steps == 3


def test_distill_head_learns_on_a_fixed_batch():
    """A few steps on one image set move the student towards the teacher (KL falls)."""
    from deepsim_cli.distill import DistillConfig, distill

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    logs: list[str] = []
    cfg = DistillConfig(steps=6, batch=8, lr=2e-3, warmup=1, log_every=1, cutmix=0.0, mixup=0.0,
                        crop_scale=(1.0, 1.0), teacher_size=96)
    out = Path(pytest.importorskip("tempfile").mkdtemp()) / "a.safetensors"
    distill(cfg, [arr], out=out, device=torch.device("cpu"), log=logs.append)
    losses = [json.loads(m)["loss"] for m in logs if m.startswith("{")]
    assert losses[-1] < 0.8 * losses[0], losses


def test_deep_inversion_shapes_and_range():
    teacher, _ = teacher_student(torch.device("cpu"), fold_bn=False)
    out = deep_inversion(teacher, [1, 2], size=32, iters=2, batch=2, device=torch.device("cpu"),
                         log=lambda m: None)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    assert out.std() > 0


def test_evaluate_against_teacher_on_named_photos(tmp_path):
    """Labels come from the wnid prefix; the teacher must get skimage's photos right."""
    wn = imagenet_wnids()
    d = tmp_path / "labelled"
    d.mkdir()
    # chelsea is a cat (285 Egyptian cat), coffee is espresso (967)
    Image.open(IMAGES / "chelsea.jpg").save(d / f"{wn[285]}_egyptian_cat.jpg")
    Image.open(IMAGES / "coffee.jpg").save(d / f"{wn[967]}_espresso.jpg")
    res = evaluate_against_teacher(None if (REPO / "weights" / "alexnet-head-v1.safetensors.index.json").exists() else
                                   _tiny_student(tmp_path), d)
    r = res["labelled"]
    assert r["n"] == 2
    assert r["teacher_top5"] == 1.0
    assert 0.0 <= r["student_top1"] <= 1.0 and 0.0 <= r["top1_agreement"] <= 1.0


def _tiny_student(tmp_path: Path) -> Path:
    """A complete AlexNet file with an untrained head (the shipped convs + a random head)."""
    import torchvision

    from deepsim_cli.checkpoint import save_checkpoint
    m = torchvision.models.alexnet(weights=None)
    conv = load_checkpoint(REPO / "weights" / "alexnet-conv.safetensors").tensors
    sd = m.state_dict()
    sd.update(conv)
    p = tmp_path / "student.safetensors"
    save_checkpoint(p, sd, kind="encoder", encoder="alexnet")
    return p


def test_view_cache_extracts_resumes_and_trains(tmp_path):
    from deepsim_cli.distill import DistillConfig, distill, extract_views, load_view_cache

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    cfg = DistillConfig(steps=3, batch=4, warmup=1, log_every=1, teacher_size=96)
    cache = tmp_path / "views"
    n = extract_views(cfg, [arr], cache, 2, device=torch.device("cpu"), chunk=4, log=lambda m: None)
    assert n == 12
    feats, logits = load_view_cache(cache)
    assert feats.shape == (12, 9216) and logits.shape == (12, 1000) and feats.dtype == np.float16
    assert np.isfinite(feats.astype(np.float32)).all() and (feats >= 0).all()  # post-ReLU pool5
    first = (cache / "round-000.feats.npy").stat().st_mtime_ns
    logs: list[str] = []
    done: list[int] = []  # progress: every view of the 3 rounds, the 2 skipped ones included
    assert extract_views(cfg, [arr], cache, 3, device=torch.device("cpu"), chunk=4, log=logs.append,
                         on_views=done.append) == 18
    assert sum(done) == 18 and done[:2] == [6, 6] and done[2:] == [4, 2]
    assert (cache / "round-000.feats.npy").stat().st_mtime_ns == first  # done rounds are skipped
    assert len(logs) == 1
    out = tmp_path / "a.safetensors"
    stats = distill(cfg, out=out, device=torch.device("cpu"), log=lambda m: None, cache_dir=cache)
    assert stats["steps"] == 3 and out.is_file()
    assert "fc8" in build_encoder("alexnet", out).trained_layers


def test_two_view_caches_train_together_from_an_initial_head(tmp_path):
    """Views of several caches are concatenated; --init starts the head from another AlexNet's
    fc6-fc8 (with lr 0 the written head is exactly the initial one)."""
    from deepsim_cli.distill import DistillConfig, distill, extract_views, load_view_cache

    rng = np.random.default_rng(1)
    cfg = DistillConfig(steps=2, batch=4, warmup=1, log_every=1, lr=0.0, teacher_size=96)
    a, b = tmp_path / "a", tmp_path / "b"
    extract_views(cfg, [rng.integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)], a, 1,
                  device=torch.device("cpu"), chunk=4, log=lambda m: None)
    extract_views(cfg, [rng.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)], b, 1,
                  device=torch.device("cpu"), chunk=4, log=lambda m: None)
    feats, logits = load_view_cache([a, b])
    assert feats.shape == (9, 9216) and logits.shape == (9, 1000)
    assert np.array_equal(feats[6:], load_view_cache(b)[0])
    init = REPO / "weights" / "alexnet-head-v2.safetensors.index.json"
    out = tmp_path / "s.safetensors"
    logs: list[str] = []
    distill(cfg, out=out, device=torch.device("cpu"), log=logs.append, cache_dir=[a, b], init=init)
    assert any("9 cached views" in m for m in logs)
    from deepsim_cli.encoders import load_sharded
    want = load_sharded(init)
    got = load_checkpoint(out).tensors
    for k in ("classifier.1.weight", "classifier.6.bias"):
        assert torch.equal(got[k], want[k].half()), k
    assert load_checkpoint(out).extra["init"] == init.name


def test_distill_extra_cache_needs_cache(tmp_path):
    r = _runner().invoke(app, ["distill", "--data", str(IMAGES), "--extra-cache", str(tmp_path)])
    assert r.exit_code == 2 and "--extra-cache needs --cache" in r.stderr


def test_training_images_asks_deep_inversion_for_the_missing_classes(tmp_path, monkeypatch):
    """training_images decodes every source at load_size and asks DeepInversion for `synthetic`
    images of exactly the classes the file names lack (stubbed: the real one is 1000-class work)."""
    import deepsim_cli.distill as distill_mod

    wnids = imagenet_wnids()
    for i, w in enumerate(wnids[:3]):
        (tmp_path / w).mkdir()
        Image.fromarray(np.full((40, 50, 3), 40 * i, np.uint8)).save(tmp_path / w / f"{w}_{i}.png")
    asked = {}

    def fake_di(teacher, classes, *, size, iters, seed, device, precision, log):
        asked.update(classes=list(classes), size=size, iters=iters)
        return np.zeros((len(classes), size, size, 3), np.uint8)

    monkeypatch.setattr(distill_mod, "deep_inversion", fake_di)
    monkeypatch.setattr(distill_mod, "teacher_student", lambda device, fold_bn: (None, None))
    arrays, n = distill_mod.training_images([tmp_path], 32, log=lambda m: None)
    assert n == 0 and [a.shape for a in arrays] == [(3, 32, 32, 3)] and not asked
    arrays, n = distill_mod.training_images([tmp_path], 32, synthetic=2, di_iters=7, log=lambda m: None)
    assert n == 2 * 997 and len(arrays) == 2 and arrays[1].shape == (n, 112, 112, 3)
    assert sorted(asked["classes"]) == sorted(list(range(3, 1000)) * 2) and asked["iters"] == 7
