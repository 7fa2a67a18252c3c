"""The precision setting: resolution, bf16 training and resume, what the fast path shares and
skips (one encoder instance, one pass when the comparator is the encoder, folded BatchNorm),
and a `--help` that never imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepsim_cli import precision as prec
from deepsim_cli.checkpoint import read_metadata
from deepsim_cli.config import TrainConfig, migrate_config
from deepsim_cli.encoders import build_encoder, fold_batchnorm
from deepsim_cli.training import Trainer, train

CPU = torch.device("cpu")
TINY = TrainConfig(
    encoder="alexnet-random", comparator="alexnet-random:pool5", layer="pool5", image_size=32,
    load_size=36, g_width=0.125, d_width=0.125, fc_dims=(32,), batch=4, steps=4, log_every=1,
    grid_every=0, ckpt_every=2,
)
# The training tests below run the comparator at 64 px: on a CPU without AVX512-BF16/AMX, bf16
# convolutions fall back to slow reference kernels, and the comparator's backward at its native
# 224 px made one tiny step ~8 s (2.2 s at 64 px, one thread).
SMALL_COMPARATOR = TINY.replace(comparator_size=64)


def _smooth_images(n: int = 16, size: int = 36) -> np.ndarray:
    small = torch.rand(n, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    big = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return (big * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()


@pytest.mark.parametrize("feature, cuda, want", [
    ("avx512_bf16", False, "bf16"), ("amx_bf16", False, "bf16"), (None, False, "fp32"), (None, True, "bf16"),
])
def test_auto_picks_bf16_only_where_supported(monkeypatch, feature, cuda, want):
    monkeypatch.setattr(prec, "cpu_bf16_feature", lambda: feature)
    assert prec.resolve_precision("auto", "cuda:0" if cuda else "cpu") == want
    assert prec.resolve_precision("fp32", "cuda" if cuda else "cpu") == "fp32"
    assert prec.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        prec.resolve_precision("fp16", "cpu")


def test_autocast_context_runs_convs_in_bf16_only_when_asked():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with prec.autocast(CPU, "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with prec.autocast(CPU, "fp32"):
        assert conv(x).dtype == torch.float32


def test_old_run_configs_migrate_amp_to_precision():
    assert TrainConfig.from_dict({"amp": False}).precision == "fp32"
    assert TrainConfig.from_dict({"amp": True}).precision == "auto"
    assert "amp" not in migrate_config({"amp": True, "layer": "fc6"})


def test_bf16_training_is_finite_loss_falls_and_is_recorded(tmp_path):
    images = _smooth_images()
    tr = Trainer(SMALL_COMPARATOR.replace(precision="bf16", lr=1e-3, w_img=0.08), tmp_path / "unused", CPU)
    x = tr.make_batch(images, 0)
    hist = []
    for _ in range(12):
        s = tr.train_step(x)
        tr.step += 1
        hist.append(s["total"])
    assert all(np.isfinite(hist))
    assert hist[-1] < 0.8 * hist[0], hist
    run = tmp_path / "run"
    train(SMALL_COMPARATOR.replace(precision="bf16", steps=2), run_dir=run, images=images)
    assert read_metadata(run / "state.safetensors")["precision"] == "bf16"
    assert read_metadata(run / "generator.safetensors")["precision"] == "bf16"
    assert '"precision": "bf16"' in (run / "config.json").read_text()


@pytest.mark.parametrize("p", ["bf16", "fp32"])
def test_resume_is_bit_exact_in_each_precision(tmp_path, p):
    from safetensors.torch import load_file
    images = _smooth_images()
    cfg = SMALL_COMPARATOR.replace(precision=p)
    train(cfg, run_dir=tmp_path / "full", images=images)
    train(cfg.replace(steps=2), run_dir=tmp_path / "part", images=images)
    train(cfg, run_dir=tmp_path / "part", resume=True, images=images)
    a = load_file(tmp_path / "full" / "state.safetensors")
    b = load_file(tmp_path / "part" / "state.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_one_encoder_instance_shared_and_resized_views_share_weights():
    a = build_encoder("alexnet-random")
    assert build_encoder("alexnet-random") is a
    b = a.with_input_size(128)
    assert b.input_size == 128 and a.input_size == 224
    assert b.model is a.model


def test_training_encodes_the_batch_once_when_the_comparator_is_the_encoder():
    images = _smooth_images()
    # fp32: in bf16 the frozen encoder runs a bf16 copy of itself, which this hook would not see
    tr = Trainer(TINY.replace(precision="fp32"), Path("unused"), CPU)
    assert tr.comparator is tr.encoder
    calls = []
    h = tr.encoder.model.features[0].register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        tr.train_step(tr.make_batch(images, 0))
    finally:
        h.remove()
    # real batch once (features + comparator), the fake once for L_feat: no second real pass
    assert calls == [4, 4], calls
    # --comparator-size: the same network at another size, not a second AlexNet
    tr2 = Trainer(TINY.replace(comparator_size=64), Path("unused"), CPU)
    assert tr2.comparator is not tr2.encoder and tr2.comparator.model is tr2.encoder.model


def test_folded_batchnorm_gives_the_same_outputs():
    import torchvision
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v2(weights=None).eval()
    for mod in m.modules():  # non-trivial running statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = m(x)
        folded = fold_batchnorm(m)
        assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in folded.modules())
        torch.testing.assert_close(folded(x), want, rtol=1e-4, atol=1e-4)


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv", [["--help"], ["invert", "--help"], ["train", "--help"],
                                  ["invert", "no-such.jpg", "--layer", "fc77"]])
def test_help_and_usage_errors_never_import_torch(argv):
    code = ("import sys\n"
            "from deepsim_cli.cli import main\n"
            f"try:\n    main({argv!r})\n"
            "except SystemExit as e:\n    code = e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("NO-TORCH"), r.stderr
    want = "2" if argv[0] == "invert" and "--help" not in argv else "0"
    assert last.split()[1] == want, r.stderr


def test_frozen_networks_run_a_bf16_copy_under_autocast_with_the_same_outputs():
    E = build_encoder("alexnet-random")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        want = E(x, ["fc8"])["fc8"]
        with prec.autocast(CPU, "bf16"):
            got = E(x, ["fc8"])["fc8"]
    copy = prec.frozen_copy(E.model, torch.bfloat16)
    assert copy is prec.frozen_copy(E.model, torch.bfloat16)  # built once
    assert copy.classifier[1].weight.dtype == torch.bfloat16 and E.model.classifier[1].weight.dtype == torch.float32
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05 * want.abs().max().item())
