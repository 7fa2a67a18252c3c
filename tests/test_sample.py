"""VAE sampling: determinism per seed and per item, posterior draws, the great-circle GIF, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from conftest import cli_runner as _runner  # tests/ is on sys.path (no __init__.py)

from deepsim_cli.checkpoint import save_checkpoint
from deepsim_cli.cli import app
from deepsim_cli.generators import VAE
from deepsim_cli.images import load_image
from deepsim_cli.inference import great_circle, load_vae, posterior_samples, sample

REPO = Path(__file__).resolve().parent.parent
CHELSEA = str(REPO / "examples" / "images" / "chelsea.jpg")


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    vae = VAE(latent_dim=16, out_size=32, width=0.125, fc_dims=(16,))
    path = tmp_path_factory.mktemp("vae") / "vae.safetensors"
    save_checkpoint(path, vae.state_dict(), kind="vae", config={"generator": vae.decoder.cfg.to_dict()},
                    encoder="alexnet", layer="z", dtype=torch.float16)
    return path


def test_sampling_is_deterministic_and_per_item(vae_file):
    vae = load_vae(vae_file)
    a = sample(vae, 4, seed=3)
    assert a.shape == (4, 3, 32, 32)
    assert torch.equal(a, sample(vae, 4, seed=3))
    # sample i does not depend on n (up to float rounding: BLAS may block a batch of 2 and of 4
    # differently, so bit-equality across batch sizes is not guaranteed)
    assert torch.allclose(a[:2], sample(vae, 2, seed=3), atol=1e-5)
    assert not torch.equal(a, sample(vae, 4, seed=4))
    assert torch.equal(sample(vae, 2, seed=3, temperature=0.0)[0], sample(vae, 2, seed=5, temperature=0.0)[1])


def test_posterior_and_great_circle(vae_file):
    vae = load_vae(vae_file)
    x = load_image(CHELSEA, 32)[None]
    p = posterior_samples(vae, x, 3, seed=0)
    assert p.shape == (3, 3, 32, 32) and torch.equal(p, posterior_samples(vae, x, 3, seed=0))
    loop = great_circle(vae, 6, seed=0)
    assert loop.shape == (6, 3, 32, 32)


def test_cli_sample_grid_gif_json(vae_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _runner().invoke(app, ["--device", "cpu", "--seed", "1", "sample", "--weights", str(vae_file), "--n", "4",
                               "--gif", "--frames", "5", "--json"])
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["grid"] == "samples-seed1.png" and Path(info["grid"]).is_file()
    assert iio.imread(info["gif"], index=None).shape[0] == 5


def test_cli_sample_from_image(vae_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _runner().invoke(app, ["--device", "cpu", "sample", "--weights", str(vae_file), "--from", CHELSEA,
                               "--n", "3"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == "chelsea-posterior.png"


def test_cli_sample_without_vae_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(tmp_path))
    r = _runner().invoke(app, ["--device", "cpu", "sample"])
    assert r.exit_code == 2 and "no VAE" in r.stderr and "Traceback" not in r.stderr


def test_cli_sample_refuses_a_generator_checkpoint(tmp_path):
    from deepsim_cli.generators import generator_for
    G = generator_for((8,), 32, width=0.125, fc_dims=(8,))
    p = tmp_path / "g.safetensors"
    save_checkpoint(p, G.state_dict(), kind="generator", config={"generator": G.cfg.to_dict()})
    r = _runner().invoke(app, ["--device", "cpu", "sample", "--weights", str(p)])
    assert r.exit_code == 2 and "expected a 'vae' checkpoint" in r.stderr


def test_frozen_vae_runs_on_the_head_it_records(tmp_path):
    """A frozen-encoder VAE reads the shipped head whose sha256 it records (v2 here, not the default
    v1), and one recording weights that do not ship is refused in one line."""
    from deepsim_cli import weights_store
    from deepsim_cli.errors import UsageError

    v2 = weights_store.entry("alexnet-head-v2.safetensors.index.json")["sha256"]
    vae = VAE(latent_dim=16, out_size=32, width=0.125, fc_dims=(16,), frozen_encoder=True)
    for sha, ok in ((v2, True), ("0" * 64, False)):
        path = tmp_path / f"vae-{sha[:4]}.safetensors"
        save_checkpoint(path, vae.state_dict(), kind="vae", encoder="alexnet", layer="z", encoder_sha256=sha,
                        config={"generator": vae.decoder.cfg.to_dict(), "train": {"vae_encoder": "frozen"}})
        if ok:
            assert load_vae(path)._attached[0].sha256 == v2
        else:
            with pytest.raises(UsageError, match="trained on different alexnet weights"):
                load_vae(path)
