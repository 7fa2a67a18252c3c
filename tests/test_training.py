"""Tests for deepsim_cli.training on CPU with a tiny config and the random AlexNet.

Every run here is a few steps of a 32 px generator of width 0.125; the encoder still sees
224 px (it resizes internally), which is what most of the time goes into.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image

from deepsim_cli import deepsim_loss, training
from deepsim_cli.checkpoint import load_checkpoint, read_metadata
from deepsim_cli.config import TrainConfig
from deepsim_cli.encoders import build_encoder
from deepsim_cli.errors import UsageError
from deepsim_cli.inference import invert, load_generator
from deepsim_cli.training import NonFiniteLoss, Trainer, train

CPU = torch.device("cpu")

TINY = TrainConfig(
    encoder="alexnet-random", comparator="alexnet-random:pool5", layer="pool5", image_size=32,
    load_size=36, g_width=0.125, d_width=0.125, fc_dims=(32,), batch=4, steps=6, log_every=1,
    grid_every=3, ckpt_every=3, precision="fp32",
)


def _smooth_images(n: int = 16, size: int = 36, seed: int = 0) -> np.ndarray:
    """(N, S, S, 3) uint8: random 3×3 colour fields upsampled (learnable, unlike white noise)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 3, 3, generator=g)
    big = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return (big * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return _smooth_images()


_ENCODERS: dict = {}


@pytest.fixture(autouse=True)
def _shared_encoders(monkeypatch):
    """Build each frozen encoder once per module: they hold no state between forwards, and
    building AlexNet (58 M fc weights initialised) is a good part of a tiny run's time."""
    real = training.build_encoder

    def cached(name="alexnet", weights=None, device="cpu"):
        key = (name, str(weights), str(device))
        if key not in _ENCODERS:
            _ENCODERS[key] = real(name, weights, device)
        return _ENCODERS[key]

    monkeypatch.setattr(training, "build_encoder", cached)


def _read_stats(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def _g_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).tensors


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, images):
    """One uninterrupted 6-step run with every loss term (shared by several tests)."""
    run = tmp_path_factory.mktemp("full") / "run"
    seen: list[tuple[int, dict]] = []
    cfg = TINY.replace(steps=6, grid_every=3, ckpt_every=3)
    out = train(cfg, run_dir=run, images=images, on_step=lambda s, st: seen.append((s, dict(st))))
    return cfg, run, out, seen


# ---------------------------------------------------------------------------------- (a) run dir


def test_run_writes_everything(full_run):
    cfg, run, out, seen = full_run
    assert out == run / "generator.safetensors" and out.is_file()
    # the resolved config, readable back into the same TrainConfig
    saved = json.loads((run / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == cfg
    # one stats line per step (log_every 1) with every loss term
    stats = _read_stats(run)
    assert [s["step"] for s in stats] == list(range(1, 7))
    for s in stats:
        for key in ("feat", "adv", "img", "discr", "total", "d_paused", "g_paused", "img_s", "time", "w_img"):
            assert key in s, key
        assert isinstance(s["d_paused"], bool)
        assert s["img_s"] > 0
        for key in ("feat", "adv", "img", "discr", "total"):
            assert np.isfinite(s[key]), key
    # the callback saw the same steps and values
    assert [s for s, _ in seen] == list(range(1, 7))
    assert seen[-1][1]["total"] == stats[-1]["total"]
    # grids at steps 3 and 6
    grids = sorted(p.name for p in (run / "grids").iterdir())
    assert grids == ["step-0000003.png", "step-0000006.png"]
    with Image.open(run / "grids" / grids[0]) as im:
        im.load()
        assert im.width > im.height > 32
    # checkpoints
    meta = read_metadata(run / "state.safetensors")
    assert meta["kind"] == "train-state" and meta["train_steps"] == "6"
    assert meta["d_paused"] in ("0", "1")
    ck = load_checkpoint(out, kind="generator")
    assert ck.train_steps == 6 and ck.encoder == "alexnet-random" and ck.layer == "pool5"
    assert ck.config["generator"]["kind"] == "conv"
    assert tuple(ck.config["generator"]["in_shape"]) == (256, 6, 6)
    assert ck.config["generator"]["out_size"] == 32
    # no temp files left behind by the atomic writes
    assert not [p for p in run.rglob("*") if p.name.startswith(".")]


def test_run_dir_is_not_overwritten_and_resume_needs_state(full_run, tmp_path, images):
    cfg, run, _, _ = full_run
    with pytest.raises(UsageError, match="already holds a run"):
        train(cfg, run_dir=run, images=images)
    with pytest.raises(UsageError, match="nothing to resume"):
        train(cfg, run_dir=tmp_path / "empty", resume=True, images=images)
    # a resume with a different architecture is refused, and the refusal changes nothing on disk
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UsageError, match="config differs in .*batch"):
        train(cfg.replace(batch=2, steps=7), run_dir=run, resume=True, images=images)
    with pytest.raises(UsageError, match="config differs in .*g_width"):
        train(cfg.replace(g_width=0.25, steps=7), run_dir=run, resume=True, images=images)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_after_a_refused_resume_and_stale_temp_files_are_cleaned(tmp_path, images):
    cfg = TINY.replace(steps=3, grid_every=0)
    run = tmp_path / "run"
    train(cfg, run_dir=run, images=images)
    with pytest.raises(UsageError, match="config differs"):
        train(cfg.replace(batch=2, steps=4), run_dir=run, resume=True, images=images)
    # what SIGKILLs inside atomic writes leave behind (names as atomic_output makes them)
    stale = [run / ".state.safetensors.k3j2h1aa.tmp.safetensors", run / "grids" / ".step-0000003.png.abcdefgh.tmp.png"]
    for p in stale:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x" * 1000)
    train(cfg.replace(steps=4), run_dir=run, resume=True, images=images)  # the run still continues
    assert read_metadata(run / "state.safetensors")["train_steps"] == "4"
    assert not any(p.exists() for p in stale)


def test_bad_config_values(tmp_path, images):
    with pytest.raises(UsageError, match="unknown --loss"):
        Trainer(TINY.replace(loss="perceptual"), tmp_path, CPU)
    with pytest.raises(UsageError, match="unknown --model"):
        Trainer(TINY.replace(model="gan"), tmp_path, CPU)
    with pytest.raises(UsageError, match="ENCODER:LAYER"):
        Trainer(TINY.replace(comparator="alexnet-random"), tmp_path, CPU)
    with pytest.raises(UsageError, match="unknown layer"):
        Trainer(TINY.replace(layer="conv9"), tmp_path, CPU)
    with pytest.raises(UsageError, match="no training data"):
        train(TINY, run_dir=tmp_path / "r")


# ---------------------------------------------------------------------------------- (b) learning


def test_loss_falls_on_a_repeated_batch(images):
    # measured: total 0.50 → 0.24 (×0.47), feat 0.41 → 0.15 after 15 steps at lr 1e-3 with
    # λ_img 0.08 (the feature term leads, as in the paper's balance); at the default lr 2e-4 only
    # ×0.90, which this test rejects. λ_img is pinned so the test does not follow the default.
    tr = Trainer(TINY.replace(loss="full", lr=1e-3, w_img=0.08), Path("unused"), CPU)
    x = tr.make_batch(images, 0)
    hist, feat = [], []
    for _ in range(15):
        s = tr.train_step(x)
        tr.step += 1
        hist.append(s["total"])
        feat.append(s["feat"])
    assert all(np.isfinite(hist))
    assert hist[-1] < 0.7 * hist[0], hist
    assert feat[-1] < 0.6 * feat[0], feat


# ---------------------------------------------------------------------------------- (c) resume


def _check_resume_equals_uninterrupted(cfg: TrainConfig, run_full: Path, run: Path, images, first: int):
    train(cfg.replace(steps=first), run_dir=run, images=images)
    assert read_metadata(run / "state.safetensors")["train_steps"] == str(first)
    train(cfg, run_dir=run, resume=True, images=images)

    a, b = _g_tensors(run / "generator.safetensors"), _g_tensors(run_full / "generator.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # D and both optimizers too
    sa, sb = _g_tensors(run / "state.safetensors"), _g_tensors(run_full / "state.safetensors")
    assert set(sa) == set(sb)
    assert any(k.startswith("optD.") for k in sa) and any(k.startswith("D.") for k in sa)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # the resumed run's log continues where it stopped, with the uninterrupted run's values
    ra, rb = _read_stats(run), _read_stats(run_full)
    assert [s["step"] for s in ra] == list(range(1, cfg.steps + 1))
    for x, y in zip(ra, rb):
        for key in ("feat", "adv", "img", "discr", "total", "d_paused"):
            assert x[key] == y[key], (x["step"], key)


def test_resume_equals_uninterrupted(full_run, tmp_path, images):
    cfg, run_full, _, _ = full_run  # 6 steps, checkpoints at 3 and 6
    _check_resume_equals_uninterrupted(cfg, run_full, tmp_path / "resumed", images, first=3)


@pytest.mark.slow
def test_resume_equals_uninterrupted_20_steps(tmp_path, images):
    cfg = TINY.replace(steps=20, grid_every=0, ckpt_every=10)
    train(cfg, run_dir=tmp_path / "full", images=images)
    _check_resume_equals_uninterrupted(cfg, tmp_path / "full", tmp_path / "resumed", images, first=10)


# ---------------------------------------------------------------------------------- (d) export


def test_export_loads_and_inverts(full_run, images):
    cfg, run, out, _ = full_run
    enc = build_encoder("alexnet-random")
    gen = load_generator(out, encoder=enc)
    assert gen.layer == "pool5" and gen.encoder_name == "alexnet-random" and gen.image_size == 32
    x = training.to_float(torch.from_numpy(images[:3]))
    rec = invert(x, enc, gen, batch=2)
    assert rec.shape == (3, 3, 32, 32)
    assert torch.isfinite(rec).all() and rec.min() >= -1 and rec.max() <= 1
    # the exported weights are the trained G: compare with G rebuilt from the training state
    st = _g_tensors(run / "state.safetensors")
    for k, v in gen.G.state_dict().items():
        assert torch.equal(v, st[f"G.{k}"]), k
    # a generator for another encoder is refused
    other = build_encoder("alexnet")
    with pytest.raises(UsageError, match="inverts encoder 'alexnet-random'"):
        load_generator(out, encoder=other)
    with pytest.raises(UsageError, match="expected a 'generator'"):
        load_generator(run / "state.safetensors")


# ---------------------------------------------------------------------------------- (e) NaN


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, images, monkeypatch):
    cfg = TINY.replace(loss="img", steps=6, ckpt_every=2, grid_every=0)
    real = deepsim_loss.generator_loss
    calls = {"n": 0}

    def poisoned(*args, **kw):
        calls["n"] += 1
        total, parts = real(*args, **kw)
        if calls["n"] == 4:  # the 4th step (index 3): one step after the step-2 checkpoint
            total = total * float("nan")
        return total, parts

    monkeypatch.setattr(deepsim_loss, "generator_loss", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(NonFiniteLoss) as e:
        train(cfg, run_dir=run, images=images)
    assert "step 3" in str(e.value) and "state.safetensors" in str(e.value)
    assert read_metadata(run / "state.safetensors")["train_steps"] == "2"
    g = load_checkpoint(run / "generator.safetensors")
    assert g.train_steps == 2
    for v in g.tensors.values():
        assert torch.isfinite(v).all()
    # steps 1-3 completed and were logged; the 4th (index 3) produced the NaN
    assert [s["step"] for s in _read_stats(run)] == [1, 2, 3]
    monkeypatch.undo()

    # the kept checkpoint is exactly that of a clean two-step run, and resuming from it works
    clean = tmp_path / "clean"
    train(cfg.replace(steps=2), run_dir=clean, images=images)
    a, b = _g_tensors(run / "generator.safetensors"), _g_tensors(clean / "generator.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    train(cfg.replace(steps=3), run_dir=run, resume=True, images=images)
    assert read_metadata(run / "state.safetensors")["train_steps"] == "3"


def test_keyboard_interrupt_saves_state(tmp_path, images):
    cfg = TINY.replace(loss="img", steps=50, ckpt_every=100, grid_every=0)

    def stop(step, _stats):
        if step == 2:
            raise KeyboardInterrupt

    run = tmp_path / "int"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=run, images=images, on_step=stop)
    assert read_metadata(run / "state.safetensors")["train_steps"] == "2"
    assert load_checkpoint(run / "generator.safetensors").train_steps == 2


def test_a_second_ctrl_c_during_the_save_does_not_cut_it_short(tmp_path, images, monkeypatch):
    """Ctrl-C, then another one while the state is being written: the save completes (the second
    SIGINT is held off), train() raises KeyboardInterrupt once, and the run resumes."""
    import os
    import signal

    from deepsim_cli import checkpoint

    cfg = TINY.replace(loss="img", steps=50, ckpt_every=100, grid_every=0)
    real_save = checkpoint.save_checkpoint
    hits = []

    def save_then_ctrl_c(path, *a, **kw):
        if Path(path).name == "state.safetensors":
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again mid-save
            hits.append(path)
        return real_save(path, *a, **kw)

    import deepsim_cli.training as training
    monkeypatch.setattr(training, "save_checkpoint", save_then_ctrl_c)

    def stop(step, _stats):
        if step == 2:
            raise KeyboardInterrupt

    run = tmp_path / "twice"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=run, images=images, on_step=stop)
    assert hits and read_metadata(run / "state.safetensors")["train_steps"] == "2"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored afterwards
    monkeypatch.undo()
    train(cfg.replace(steps=3), run_dir=run, resume=True, images=images)
    assert read_metadata(run / "state.safetensors")["train_steps"] == "3"


# ---------------------------------------------------------------------------------- (f) DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_world_size_one_matches_single_process(tmp_path, images, monkeypatch):
    from torch.nn.parallel import DistributedDataParallel as DDP

    cfg = TINY.replace(steps=2)

    def run_steps(tr: Trainer) -> dict[str, torch.Tensor]:
        for _ in range(2):
            tr.train_step(tr.make_batch(images, tr.step))
            tr.step += 1
        return {k: v.detach().clone() for k, v in tr.G.state_dict().items()}

    plain = Trainer(cfg, tmp_path / "plain", CPU)
    assert plain.loss.G_ddp is plain.G
    want = run_steps(plain)

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        tr = Trainer(cfg, tmp_path / "ddp", CPU)
        assert isinstance(tr.loss.G_ddp, DDP) and isinstance(tr.loss.D_ddp, DDP)
        assert (tr.rank, tr.world) == (0, 1)
        got = run_steps(tr)
        # and through the public entry point (rank 0 writes the run directory)
        out = train(cfg.replace(steps=1, grid_every=0, loss="img"), run_dir=tmp_path / "ddp-run", images=images)
        assert out.is_file()
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


# ---------------------------------------------------------------------------------- (g) no D for --loss img


def test_img_loss_trains_no_discriminator(tmp_path, images):
    tr = Trainer(TINY.replace(loss="img"), tmp_path, CPU)
    assert tr.comparator is None
    d0 = {k: v.clone() for k, v in tr.D.state_dict().items()}
    g0 = {k: v.clone() for k, v in tr.G.state_dict().items()}
    for _ in range(3):
        s = tr.train_step(tr.make_batch(images, tr.step))
        tr.step += 1
        assert set(s) >= {"img", "total"} and not {"adv", "feat", "discr"} & set(s)
    for k, v in tr.D.state_dict().items():
        assert torch.equal(v, d0[k]), k
    assert not tr.optD.state_dict()["state"]
    assert any(not torch.equal(v, g0[k]) for k, v in tr.G.state_dict().items())


# ---------------------------------------------------------------------------------- (h) VAE


def test_vae_runs_and_logs_kl(tmp_path, images):
    cfg = TINY.replace(model="vae", latent_dim=16, steps=2, grid_every=2, ckpt_every=2)
    run = tmp_path / "vae"
    out = train(cfg, run_dir=run, images=images)
    stats = _read_stats(run)
    assert [s["step"] for s in stats] == [1, 2]
    for s in stats:
        assert "kl" in s and np.isfinite(s["kl"]) and s["kl"] >= 0
        assert {"feat", "adv", "img"} <= set(s)
    ck = load_checkpoint(out, kind="vae")
    assert ck.layer == "z" and ck.train_steps == 2
    assert any(k.startswith("decoder.") for k in ck.tensors)
    assert (run / "grids" / "step-0000002.png").is_file()


def test_init_generator_warm_starts_g(full_run, tmp_path, images):
    """--init-generator: the new run starts from the exported G (checked before any step)."""
    from deepsim_cli.training import Trainer

    cfg, _, out, _ = full_run
    tr = Trainer(cfg.replace(init_generator=str(out)), tmp_path / "warm", torch.device("cpu"))
    exported = _g_tensors(out)
    for k, v in tr.G.state_dict().items():
        assert torch.equal(v, exported[k]), k
    with pytest.raises(UsageError, match="another architecture"):
        Trainer(cfg.replace(init_generator=str(out), g_width=0.25), tmp_path / "w2", torch.device("cpu"))
    with pytest.raises(UsageError, match="inverts"):
        Trainer(cfg.replace(init_generator=str(out), layer="conv5"), tmp_path / "w3", torch.device("cpu"))


def test_fc_run_bridges_from_a_pool5_generator(full_run, tmp_path, images):
    """An fc7 run started from the pool5 generator copies its stem/up-stack, fits only the
    bridge first (the regression loss falls, the copied layers stay put), then trains with the
    DeePSiM loss; the export loads and inverts fc7 features."""
    cfg, _, out, _ = full_run
    pool5 = _g_tensors(out)
    fc = cfg.replace(layer="fc7", init_generator=str(out), bridge_steps=8, steps=8, lr=1e-3,
                     grid_every=0, ckpt_every=100)
    seen: list[dict] = []
    run = tmp_path / "fc7"
    gen = train(fc, run_dir=run, images=images, on_step=lambda s, st: seen.append(dict(st)))
    bridge = [s["bridge"] for s in seen]
    assert len(bridge) == 8 and bridge[-1] < bridge[0]
    after = _g_tensors(gen)
    for k, v in pool5.items():  # only the bridge trained
        assert torch.equal(after[k], v), k
    assert not torch.equal(after["bridge.0.weight"], Trainer(fc, tmp_path / "p", CPU).G.state_dict()["bridge.0.weight"])
    train(fc.replace(steps=10), run_dir=run, images=images, resume=True,
          on_step=lambda s, st: seen.append(dict(st)))
    assert "img" in seen[-1] and "bridge" not in seen[-1]
    ck = load_checkpoint(gen, kind="generator")
    assert ck.layer == "fc7" and ck.train_steps == 10 and ck.config["generator"]["bridge"] == [256, 6, 6]
    assert not torch.equal(ck.tensors["up.0.weight"], pool5["up.0.weight"])
    enc = build_encoder("alexnet-random")
    x = training.to_float(torch.from_numpy(images[:2]))
    assert invert(x, enc, load_generator(gen)).shape == (2, 3, 32, 32)
    with pytest.raises(UsageError, match="--image-size"):
        Trainer(fc.replace(image_size=64), tmp_path / "bad", CPU)
    # continuing the bridged fc7 generator in a new run keeps its bridge and all its weights
    cont = Trainer(fc.replace(init_generator=str(gen), bridge_steps=0), tmp_path / "more", CPU)
    assert cont.bridge_layer is None and cont.gcfg.bridge == (256, 6, 6)
    for k, v in cont.G.state_dict().items():
        assert torch.equal(v, ck.tensors[k]), k
    more = load_checkpoint(train(fc.replace(init_generator=str(gen), bridge_steps=0, steps=2, img_warmup=0),
                                 run_dir=tmp_path / "more2", images=images), kind="generator")
    assert more.train_steps == 12 and more.extra["prior_steps"] == "10"  # 10 before + 2 here
    # shipping the export over the init file must not change the count a resume reports
    shutil.copy(tmp_path / "more2" / "generator.safetensors", gen)
    resumed = load_checkpoint(train(fc.replace(init_generator=str(gen), bridge_steps=0, steps=3, img_warmup=0),
                                    run_dir=tmp_path / "more2", images=images, resume=True), kind="generator")
    assert resumed.train_steps == 13 and resumed.extra["prior_steps"] == "10"


def test_frozen_encoder_vae_from_pool5_generator(full_run, tmp_path):
    """--vae-encoder frozen: only the μ/log σ² heads and the decoder are trained and saved; the
    decoder starts from the pool5 generator behind a bridge (fitted with the KL term first);
    fc6 features come from the feature cache; load_vae reattaches the encoder for posteriors."""
    from deepsim_cli.inference import load_vae, posterior_samples, sample

    _, _, out, _ = full_run
    imgs = _smooth_images(16, 32)
    cfg = TINY.replace(model="vae", vae_encoder="frozen", latent_dim=16, init_generator=str(out),
                       bridge_steps=3, steps=5, feature_cache=True, load_size=32, grid_every=0)
    seen: list[dict] = []
    gen = train(cfg, run_dir=tmp_path / "vae", images=imgs, on_step=lambda s, st: seen.append(dict(st)))
    assert all("bridge" in s and "kl" in s for s in seen[:3])
    assert "img" in seen[-1] and "kl" in seen[-1] and "bridge" not in seen[-1]
    ck = load_checkpoint(gen, kind="vae")
    assert not any(k.startswith(("features.", "fc6.")) for k in ck.tensors)
    assert "decoder.bridge.0.weight" in ck.tensors and "mu.weight" in ck.tensors
    assert not torch.equal(ck.tensors["decoder.stem.0.weight"], _g_tensors(out)["stem.0.weight"])
    vae = load_vae(gen)
    assert sample(vae, 2, seed=0).shape == (2, 3, 32, 32)
    x = training.to_float(torch.from_numpy(imgs[:1]))
    a = posterior_samples(vae, x, 3, seed=1)
    assert a.shape == (3, 3, 32, 32) and torch.equal(a, posterior_samples(vae, x, 3, seed=1))
    with pytest.raises(UsageError, match="vae-encoder"):
        Trainer(cfg.replace(vae_encoder="thawed"), tmp_path / "bad", CPU)


def test_vae_clips_an_outlier_gradient_at_twice_the_running_norm(tmp_path):
    """g_clip (VAE default 2): after 20 steps of measuring, a gradient 50× the usual norm is
    scaled down to 2× the running mean; ordinary gradients pass untouched; inverters are unclipped."""
    tr = Trainer(TINY.replace(model="vae", latent_dim=16), tmp_path / "v", CPU)
    assert tr.loss.g_clip == 2.0
    params = [p for p in tr.G.parameters()]
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(p.shape, generator=g) for p in params]
    unit = torch.sqrt(sum(b.pow(2).sum() for b in base))

    def step(scale: float) -> float:
        for p, b in zip(params, base):
            p.grad = b * scale / unit
        st: dict = {}
        tr.loss.clip_g_gradient(st)
        return float(torch.sqrt(sum(p.grad.pow(2).sum() for p in params)))

    for _ in range(25):
        assert step(1.0) == pytest.approx(1.0, rel=1e-4)
    assert step(50.0) == pytest.approx(2.0, rel=1e-3)
    assert step(1.5) == pytest.approx(1.5, rel=1e-4)
    assert Trainer(TINY, tmp_path / "i", CPU).loss.g_clip == 0.0


def test_should_stop_ends_the_run_cleanly_and_it_resumes(tmp_path, images):
    cfg = TINY.replace(loss="img", steps=50, ckpt_every=100, grid_every=0)
    run = tmp_path / "stopped"
    train(cfg, run_dir=run, images=images, should_stop=lambda step: step == 3)
    assert read_metadata(run / "state.safetensors")["train_steps"] == "3"
    assert load_checkpoint(run / "generator.safetensors").train_steps == 3
    train(cfg.replace(steps=5), run_dir=run, resume=True, images=images)
    assert read_metadata(run / "state.safetensors")["train_steps"] == "5"


# ---------------------------------------------------------------------------------- (k) D's shifted view


def _shift_of(out: torch.Tensor, x: torch.Tensor, n: int) -> list[tuple[int, int]]:
    """The (dy, dx) translations that make out's interior equal x's (one per image when it is one)."""
    h, w = x.shape[-2:]
    found = []
    for dy in range(-n, n + 1):
        for dx in range(-n, n + 1):
            if torch.equal(out[:, n:h - n, n:w - n], x[:, n + dy:h - n + dy, n + dx:w - n + dx]):
                found.append((dy, dx))
    return found


def test_random_shift_translates_each_image_with_reflected_borders():
    from deepsim_cli.discriminator import random_shift
    x = torch.randn(300, 3, 12, 12, requires_grad=True)
    assert random_shift(x, 0) is x
    torch.manual_seed(5)
    out = random_shift(x, 2)
    assert out.shape == x.shape
    shifts = [_shift_of(o, i, 2) for o, i in zip(out.detach(), x.detach())]
    assert all(len(s) == 1 for s in shifts)
    shifts = [s[0] for s in shifts]
    assert set(shifts) == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # every shift is drawn
    # the border is the reflection of the image, not zeros: a shift of (-2, 0) puts row 2, 1 above row 0
    i = shifts.index((-2, 0))
    assert torch.equal(out[i, :, 0], x[i, :, 2]) and torch.equal(out[i, :, 1], x[i, :, 1])
    # the same seed draws the same shifts (a run seeds torch per step: resume stays bit-exact)
    torch.manual_seed(5)
    assert torch.equal(random_shift(x, 2), out)
    out.sum().backward()  # differentiable: every output pixel sends its gradient to one input pixel
    assert x.grad.sum().item() == pytest.approx(out.numel())


def test_d_shift_translates_what_d_sees_real_and_fake(tmp_path, images):
    seen: list[torch.Tensor] = []
    for shift in (0, 2):
        tr = Trainer(TINY.replace(d_shift=shift), tmp_path / str(shift), CPU)
        hooks = [tr.D.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone())),
                 tr.G.register_forward_hook(lambda m, args, out: seen.append(out.detach().clone()))]
        x = tr.make_batch(images, 0)
        tr.train_step(x)
        for h in hooks:
            h.remove()
        fake = seen.pop(0)  # G's output, then D's inputs
        real = seen[0]  # d_step's first call: the real batch
        assert len(seen) == 3  # D on real and fake (its update), D on fake (G's adversarial loss)
        if shift == 0:
            assert torch.equal(real, x)
            assert torch.equal(seen[1], seen[2])  # both see the same fake
        else:
            for seen_fake in seen[1:]:  # each draws its own translation of the fake
                assert all(len(_shift_of(a, b, 2)) >= 1 for a, b in zip(seen_fake, fake))
                assert not torch.equal(seen_fake, fake)
            per_image = [_shift_of(r, i, 2) for r, i in zip(real, x)]
            assert all(len(s) >= 1 for s in per_image)  # a translation of x ...
            assert not torch.equal(real, x)  # ... and not the identity for every image
        seen.clear()


def test_d_shift_run_resumes_bit_exact(tmp_path, images):
    cfg = TINY.replace(d_shift=2, steps=2, grid_every=0, ckpt_every=1)
    train(cfg, run_dir=tmp_path / "full", images=images)
    _check_resume_equals_uninterrupted(cfg, tmp_path / "full", tmp_path / "resumed", images, first=1)
    assert json.loads((tmp_path / "full" / "config.json").read_text())["d_shift"] == 2


def test_d_shift_values_are_checked(tmp_path):
    for bad in (-1, 16, 1.5, True):
        with pytest.raises(UsageError, match="d_shift"):
            TINY.replace(d_shift=bad).validate()
    assert TrainConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "d_shift"}).d_shift == 0


def test_pause_hysteresis_of_the_original_code(tmp_path):
    """DeePSiMLoss.update_pauses on r = L_discr / L_adv: D pauses below d_pause_below (0.1) and
    stays paused until r rises above d_resume_above (0.5); G skips its update while r > 10."""
    loss = Trainer(TINY, tmp_path / "p", CPU).loss
    cfg = loss.cfg
    assert (cfg.d_pause_below, cfg.d_resume_above, cfg.g_pause_above) == (0.1, 0.5, 10.0)

    def at(ratio: float) -> tuple[bool, bool]:
        stats: dict = {}
        g_skips = loss.update_pauses(torch.tensor(ratio * 2.0), {"adv": 2.0}, stats)
        assert stats["discr"] == pytest.approx(ratio * 2.0)
        return loss.d_paused, g_skips

    assert at(0.3) == (False, False)      # between the thresholds: D keeps training
    assert at(0.05) == (True, False)      # D too strong: paused
    assert at(0.3) == (True, False)       # ... and stays paused in the band
    assert at(0.6) == (False, False)      # resumes above 0.5
    assert at(0.3) == (False, False)      # ... and keeps training in the band
    assert at(12.0) == (False, True)      # G losing badly: its update is skipped
    assert loss.pause_state()["d_paused"] == "0"
    at(0.05)
    restored = Trainer(TINY, tmp_path / "q", CPU).loss
    restored.load_pause_state(loss.pause_state())
    assert restored.d_paused is True
