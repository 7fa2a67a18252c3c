"""Shared test plumbing: the CLI runner, the one-error-line check, a tiny generator file, and a
clean working folder + image cache per test. Fixtures only (pytest injects them by name)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent

# No test ever reaches the network: the weights resolver is offline (the download tests serve files
# from 127.0.0.1 and lift this themselves), and its user cache is a private folder, so a cache on this
# machine neither hides nor supplies files. Set here so that subprocesses inherit it too.
os.environ["DEEPSIM_OFFLINE"] = "1"
os.environ.pop("DEEPSIM_WEIGHTS_URL", None)
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="deepsim-tests-xdg-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)
IMAGES = REPO / "examples" / "images"

# Under pytest-xdist (`-n 2`, the README's test command) each worker gets its share of the cores:
# two workers of two torch threads each on two cores spend their time switching.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def cli_runner() -> CliRunner:
    """A CliRunner that keeps stderr apart from stdout on every Click version (test files import it)."""
    try:  # Click < 8.2 mixes stderr into stdout unless told otherwise
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


@pytest.fixture
def cli() -> Callable:
    """cli(*args) runs `deepsim --device cpu ARGS` in-process; returns Click's Result
    (.exit_code, .stdout, .stderr)."""
    from deepsim_cli.cli import app

    def run(*args: str, **kw):
        return cli_runner().invoke(app, ["--device", "cpu", *args], **kw)
    return run


@pytest.fixture
def error_line() -> Callable:
    """error_line(result) → the single stderr line, asserting it is one `error: …` line and
    that no traceback was printed."""
    def check(result) -> str:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr
        return lines[0]
    return check


@pytest.fixture(scope="session")
def tiny_gen_file(tmp_path_factory) -> Path:
    """An untrained pool5 → 32 px generator (width 0.125) for the shipped AlexNet, saved in the
    shipped checkpoint format."""
    from deepsim_cli.checkpoint import save_checkpoint
    from deepsim_cli.encoders import build_encoder
    from deepsim_cli.generators import generator_for

    torch.manual_seed(0)
    enc = build_encoder("alexnet")
    G = generator_for((256, 6, 6), out_size=32, width=0.125)
    path = tmp_path_factory.mktemp("gen") / "tiny-pool5.safetensors"
    save_checkpoint(path, G.state_dict(), kind="generator", config={"generator": G.cfg.to_dict()},
                    encoder="alexnet", layer="pool5", encoder_sha256=enc.sha256)
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run the test in its own empty folder with its own image cache; returns the folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """Run the test in an empty folder (its image cache lives beside it, not in it), so "no output
    was written" is "the folder is still empty"; returns the folder."""
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))
    w = tmp_path / "work"
    w.mkdir()
    monkeypatch.chdir(w)
    return w
