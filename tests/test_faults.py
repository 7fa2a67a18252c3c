"""Bad input that used to crash, hang, run forever or print Python's own text: every case is
a one-line `error: …` on stderr with exit 2 (Click's own range errors: exit 2, no traceback) and no
output file. CLI through Typer's CliRunner, as in test_cli.py; library checks beside them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import cli_runner as _runner  # tests/ is on sys.path (no __init__.py)

from deepsim_cli.cli import app
from deepsim_cli.cli._options import (MAX_FRAMES, MAX_INTERP, MAX_REENCODE, MAX_SAMPLES, MAX_SEEDS, MAX_STEPS,
                                      finite_float, nonneg_float, positive_float, unit_float)
from deepsim_cli.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
CHELSEA = str(REPO / "examples" / "images" / "chelsea.jpg")
COFFEE = str(REPO / "examples" / "images" / "coffee.jpg")


def invoke(*args: str):
    return _runner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


pytestmark = pytest.mark.usefixtures("work")  # every command in an empty folder (conftest.work)


def written(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def alarm():
    """Fail (instead of hanging the suite) if the test body blocks for more than 60 s."""
    def on_alarm(signum, frame):
        raise TimeoutError("blocked for 60 s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def special(tmp_path) -> dict[str, Path]:
    """A symbolic-link loop, a FIFO and a folder holding one image, outside the work folder."""
    d = tmp_path / "inputs"
    d.mkdir()
    (d / "loop").symlink_to(d / "loop")
    os.mkfifo(d / "fifo")
    (d / "folder").mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(d / "folder" / "red.png")
    return {"loop": d / "loop", "fifo": d / "fifo", "folder": d / "folder"}


# ---------------------------------------------------------------- 1. float options

FLOAT_CASES = [
    ("sample", "--temperature", "inf"), ("sample", "--temperature", "nan"), ("sample", "--temperature", "-1"),
    ("sample", "-t", "-inf"),
    ("visualize", "--lr-start", "nan"), ("visualize", "--lr-start", "-1"), ("visualize", "--lr-end", "inf"),
    ("visualize", "--decay", "nan"), ("visualize", "--decay", "1.5"),
    ("train", "--lr", "inf"), ("train", "--lr", "-0.1"), ("train", "--w-feat", "nan"), ("train", "--w-adv", "-1"),
    ("train", "--w-img", "inf"), ("train", "--g-width", "0"), ("train", "--d-width", "nan"),
    ("train", "--w-kl", "1e999"), ("train", "--g-clip", "-inf"),
    ("distill", "--lr", "nan"), ("distill", "--temperature", "0"), ("distill", "--temperature", "inf"),
]


@pytest.mark.parametrize("cmd,opt,value", FLOAT_CASES, ids=[f"{c}{o}={v}" for c, o, v in FLOAT_CASES])
def test_float_options_refuse_nan_inf_and_meaningless_values(work, cmd, opt, value):
    # the other arguments fail too (a missing generator or data folder), but only later: the value must be
    # refused first, while the command line is parsed (and no run can start if it were not)
    extra = {"sample": ["-n", "1", "--weights", "missing.safetensors", "-o", "out.png"],
             "visualize": ["--unit", "1", "--iters", "1", "--weights", "missing.safetensors", "-o", "out.png"],
             "train": ["--data", "missing-dir", "--out", "run", "--steps", "1"],
             "distill": ["--data", "missing-dir", "--out", "head.safetensors", "--steps", "1"]}[cmd]
    r = invoke(cmd, *extra, opt, value)
    line = one_error_line(r)
    assert opt in line and ("finite" in line or ">" in line or "<" in line), line
    assert written(work) == []


def test_float_callbacks():
    assert finite_float(None, None, -3.5) == -3.5
    assert nonneg_float(None, None, 0.0) == 0.0 and positive_float(None, None, 1e-9) == 1e-9
    assert unit_float(None, None, 1.0) == 1.0 and nonneg_float(None, None, None) is None
    for check, bad in ((finite_float, float("nan")), (finite_float, float("-inf")), (nonneg_float, -1e-12),
                       (positive_float, 0.0), (unit_float, 1.0001), (unit_float, float("inf"))):
        with pytest.raises(UsageError):
            check(None, None, bad)


def test_option_checks_need_no_torch():
    code = ("import sys; import deepsim_cli.cli._options, deepsim_cli.paths; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- 2. iteration counts

COUNT_CASES = [
    ("reencode", [CHELSEA], "--iters", MAX_REENCODE), ("interpolate", [CHELSEA, COFFEE], "--steps", MAX_INTERP),
    ("visualize", ["--unit", "1"], "--iters", MAX_STEPS), ("invert", [CHELSEA], "--steps", MAX_STEPS),
    ("sample", [], "-n", MAX_SAMPLES), ("sample", ["--gif"], "--frames", MAX_FRAMES),
]


@pytest.mark.parametrize("cmd,args,opt,maximum", COUNT_CASES, ids=[f"{c}{o}" for c, _, o, _ in COUNT_CASES])
def test_iteration_counts_are_bounded(work, cmd, args, opt, maximum):
    # --weights names a missing file: without the bound the command fails on that instead (quickly)
    # rather than running 10**12 iterations
    r = invoke(cmd, *args, "--weights", "missing.safetensors", opt, str(10**12), "-o", "out.png")
    assert r.exit_code == 2, r.stderr
    assert opt in r.stderr and str(maximum) in r.stderr and "Traceback" not in r.stderr
    assert written(work) == []
    assert invoke(cmd, opt, str(maximum + 1), *args, "--weights", "missing.safetensors").exit_code == 2
    helptext = " ".join(invoke(cmd, "--help").stdout.replace("│", " ").split())
    assert f"at most {maximum}" in helptext


# ---------------------------------------------------------------- 3. seeds

def test_rng_seed_accepts_any_integer_and_keeps_valid_seeds():
    import torch

    from deepsim_cli.data import batch_indices
    from deepsim_cli.inference import per_item_normal
    from deepsim_cli.utils import rng_seed, seed_everything

    for s in (0, 7, -1, -2**63, 2**63 - 1, 2**63 + 5, 2**64 - 1):  # seeds torch took before: same draws
        a = torch.randn(3, generator=torch.Generator().manual_seed(s))
        assert torch.equal(a, torch.randn(3, generator=torch.Generator().manual_seed(rng_seed(s))))
    for s in (2**64, 10**30, -10**30):
        seed_everything(s)
        torch.Generator().manual_seed(rng_seed(s))
        assert per_item_normal(2, 4, seed=s).shape == (2, 4)
        assert len(batch_indices(10, 2, 3, seed=s)) == 2
    assert torch.equal(per_item_normal(1, 4, seed=2**64 + 3), per_item_normal(1, 4, seed=3))


@pytest.mark.parametrize("where", ["global", "command"])
def test_huge_seed_samples(work, where):
    seed = "99999999999999999999999" if where == "global" else str(-(2**80))
    args = ["--seed", seed, "sample"] if where == "global" else ["sample", "--seed", seed]
    r = invoke(*args, "-n", "1", "-o", "s.png", "--json")
    assert r.exit_code == 0, r.stderr
    assert (work / "s.png").is_file()
    assert "Traceback" not in r.stderr and "error" not in r.stderr


# ---------------------------------------------------------------- 4. visualize --seeds

@pytest.mark.parametrize("value", ["abc", "", ",,", "1,x", "0-", "3-1", f"0-{MAX_SEEDS}", "0-99999999999999999999"])
def test_visualize_bad_seeds(work, value):
    line = one_error_line(invoke("visualize", "--unit", "1", "--iters", "1", "--seeds", value,
                                 "--weights", "missing.safetensors", "-o", "v.png"))
    assert "--seeds" in line
    assert written(work) == []


def test_parse_seeds_lists_and_ranges():
    from deepsim_cli.cli.visualize_opts import parse_seeds

    assert parse_seeds("0") == [0]
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds(" 0-2, 7 ,") == [0, 1, 2, 7]
    assert parse_seeds("-1") == [-1] and parse_seeds("-3--1") == [-3, -2, -1]
    assert parse_seeds("5-5") == [5]
    assert len(parse_seeds(f"0-{MAX_SEEDS - 1}")) == MAX_SEEDS


# ---------------------------------------------------------------- 5. a folder where one image is expected

@pytest.mark.parametrize("case", ["visualize --init", "sample --from", "interpolate A", "interpolate B"])
def test_folder_where_one_image_is_expected(work, special, case):
    folder = special["folder"]
    args = {"visualize --init": ["visualize", "--unit", "1", "--iters", "1", "--init", folder],
            "sample --from": ["sample", "-n", "1", "--from", folder],
            "interpolate A": ["interpolate", folder, CHELSEA, "--steps", "2"],
            "interpolate B": ["interpolate", CHELSEA, folder, "--steps", "2"]}[case]
    line = one_error_line(invoke(*args, "--weights", "missing.safetensors", "-o", "out.png"))
    assert str(folder) in line and "directory" in line
    assert written(work) == []


# ---------------------------------------------------------------- 6. symbolic-link loops

@pytest.mark.parametrize("args", [["invert", "{loop}", "-o", "out.png"],
                                  ["neighbors", CHELSEA, "--data", "{loop}", "--space", "image", "-o", "out.png"],
                                  ["eval", "--data", "{loop}", "--csv", "out.csv"],
                                  ["visualize", "--unit", "1", "--iters", "1", "--init", "{loop}", "-o", "out.png"],
                                  ["train", "--data", "{loop}", "--out", "run", "--steps", "1"]],
                         ids=["invert", "neighbors", "eval", "visualize", "train"])
def test_symlink_loop_is_one_line_exit_2(work, special, args):
    line = one_error_line(invoke(*[a.format(**special) for a in args]))
    assert "symbolic link loop" in line and str(special["loop"]) in line
    assert written(work) == []


def test_symlink_loop_in_the_library(special, tmp_path):
    from deepsim_cli.data import load_array
    from deepsim_cli.images import ImageError, list_images, load_image

    for call in (lambda: list_images([special["loop"]]), lambda: load_image(special["loop"]),
                 lambda: load_array([special["loop"]], 16, cache=False)):
        with pytest.raises(UsageError, match="symbolic link loop"):
            call()
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    # a loop (or a FIFO) inside a folder is not an image file: skipped like any other non-image
    (special["folder"] / "loop.png").symlink_to(special["folder"] / "loop.png")
    os.mkfifo(special["folder"] / "pipe.png")
    assert [p.name for p in list_images([special["folder"]])] == ["red.png"]
    arr, names = load_array([special["folder"]], 16, cache=False)
    assert arr.shape == (1, 16, 16, 3) and names == ["red.png"]


# ---------------------------------------------------------------- 7. FIFOs and other special files

@pytest.mark.parametrize("args", [["eval", "--data", "{fifo}", "--csv", "out.csv"],
                                  ["neighbors", CHELSEA, "--data", "{fifo}", "-o", "out.png"],
                                  ["neighbors", "{fifo}", "--data", CHELSEA, "-o", "out.png"],
                                  ["invert", "{fifo}", "-o", "out.png"],
                                  ["sample", "--from", "{fifo}", "-o", "out.png"],
                                  ["train", "--data", "{fifo}", "--out", "run", "--steps", "1"]],
                         ids=["eval", "neighbors-data", "neighbors-query", "invert", "sample", "train"])
def test_fifo_input_is_refused_not_read(work, special, alarm, args):
    line = one_error_line(invoke(*[a.format(**special) for a in args]))
    assert "FIFO" in line and str(special["fifo"]) in line
    assert written(work) == []


def test_special_files_in_the_library(special, alarm):
    from deepsim_cli.data import load_array
    from deepsim_cli.images import list_images, load_image
    from deepsim_cli.paths import check_input

    for call in (lambda: list_images([special["fifo"]]), lambda: load_image(special["fifo"]),
                 lambda: load_array([special["fifo"]], 16, cache=False), lambda: load_array([os.devnull], 16)):
        with pytest.raises(UsageError, match="not a regular file"):
            call()
    assert check_input(special["folder"]) == "folder" and check_input("-") == "stdin"
    assert check_input(special["folder"] / "red.png", folder_ok=False) == "file"
    with pytest.raises(UsageError, match="directory"):
        check_input(special["folder"], folder_ok=False)


# ---------------------------------------------------------------- 8. decompression bombs

@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """12,000 × 12,000 pixels (144 MP, above Pillow's 89 MP warning threshold) in 17 KB."""
    p = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (12000, 12000)).save(p)
    assert p.stat().st_size < 100_000
    return p


def test_decompression_bomb_is_refused_without_a_warning(work, bomb):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = invoke("neighbors", bomb, "--data", CHELSEA, "--space", "image", "--size", "16", "-o", "nn.png")
    line = one_error_line(r)
    assert "bomb.png" in line and "12000×12000" in line and "100 megapixels" in line
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)], caught
    assert "Warning" not in r.stderr
    assert written(work) == []


def test_pixel_limit_in_the_library(bomb, tmp_path, monkeypatch):
    import deepsim_cli.images as images
    from deepsim_cli.data import load_array

    with pytest.raises(images.ImageError, match="over the limit"):
        images.load_image(bomb)
    with pytest.raises(UsageError, match="over the limit"):
        load_array([bomb], 16, cache=False)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 40)).save(small)
    monkeypatch.setattr(images, "MAX_PIXELS", 1599)  # the limit is ours, checked before decoding
    with pytest.raises(images.ImageError, match="40×40 pixels is over the limit"):
        images.load_image(small)
    monkeypatch.setattr(images, "MAX_PIXELS", 1600)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over Pillow's threshold, within ours: no warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert images.load_image(small, 8).shape == (3, 8, 8)
    assert not caught
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow's own error (2x its limit): the same one line
    with pytest.raises(images.ImageError, match="over the limit"):
        images.load_image(small)


@pytest.mark.slow
def test_decompression_bomb_stderr_in_a_real_process(tmp_path, bomb):
    p = subprocess.run([sys.executable, "-m", "deepsim_cli", "neighbors", str(bomb), "--data", str(bomb),
                        "--space", "image", "--size", "16", "-o", str(tmp_path / "nn.png")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "DEEPSIM_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error: cannot read image"), p.stderr
    assert not (tmp_path / "nn.png").exists()


@pytest.mark.parametrize("foreign", [False, True])
def test_weights_verify_fails_on_an_empty_or_foreign_folder(tmp_path, monkeypatch, foreign):
    from typer.testing import CliRunner

    from deepsim_cli.cli import app
    if foreign:
        import torch
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(tmp_path))
    r = CliRunner().invoke(app, ["weights", "--verify"])
    assert r.exit_code == 1
    assert "all 0 weight files match" not in r.stderr


def test_non_finite_weights_are_refused_at_load_naming_the_file(tmp_path):
    import torch
    from typer.testing import CliRunner

    from deepsim_cli.checkpoint import load_checkpoint, save_checkpoint
    from deepsim_cli.cli import app
    src = Path(__file__).resolve().parent.parent / "weights" / "alexnet-pool5-generator.safetensors"
    ck = load_checkpoint(src)
    t = dict(ck.tensors)
    k = next(k for k, v in t.items() if v.is_floating_point())
    t[k] = t[k].clone()
    t[k].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_checkpoint(bad, t, kind="generator", config=ck.config, encoder=ck.encoder, layer=ck.layer,
                    encoder_sha256=ck.encoder_sha256, train_steps=ck.train_steps)
    img = Path(__file__).resolve().parent.parent / "examples" / "images" / "chelsea.jpg"
    out = tmp_path / "out.png"
    r = CliRunner().invoke(app, ["invert", str(img), "--layer", "pool5", "--weights", str(bad), "-o", str(out)])
    assert r.exit_code == 2, r.stderr
    assert "non-finite" in r.stderr and str(bad) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
