"""Output-side faults and error style: a failed write (full disk,
file too large, I/O error) is exit 1 with one line naming the file and leaves nothing under the final
name; commands that write two files write both or neither; non-finite results are never written; a
broken $DEEPSIM_CACHE is a warning, not a failure; tampered weights metadata is one usage-error line;
Click's usage errors are one line like ours."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_runner as _runner  # tests/ is on sys.path (no __init__.py)

from deepsim_cli.cli import app

REPO = Path(__file__).resolve().parent.parent
CHELSEA = str(REPO / "examples" / "images" / "chelsea.jpg")
COFFEE = str(REPO / "examples" / "images" / "coffee.jpg")
POOL5 = REPO / "weights" / "alexnet-pool5-generator.safetensors"


def invoke(*args: str, env: dict | None = None):
    return _runner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def one_line(result, code: int, prefix: str = "error: ") -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


pytestmark = pytest.mark.usefixtures("work")  # every command in an empty folder (conftest.work)


def files(folder: Path) -> list[str]:
    """Every file under `folder`, hidden temporaries included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- 13. Click's usage errors

USAGE_CASES = [
    (["reencode", CHELSEA, "--iters", "1000000"], "--iters", "deepsim reencode --help"),
    (["layers", "--bogus"], "--bogus", "deepsim layers --help"),
    (["layers", "--size", "abc"], "--size", "deepsim layers --help"),
    (["--device", "tpu", "layers"], "--device", "deepsim --help"),
    (["no-such-command"], "no-such-command", "deepsim --help"),
    (["interpolate", CHELSEA], "B", "deepsim interpolate --help"),
]


@pytest.mark.parametrize("args,names,hint", USAGE_CASES, ids=[" ".join(a[:2]) for a, _, _ in USAGE_CASES])
def test_click_usage_errors_are_one_line_like_ours(work, args, names, hint):
    line = one_line(invoke(*args), 2)
    assert names in line and line.endswith(f"(see {hint})"), line
    assert "Usage:" not in line and "╭" not in line
    assert files(work) == []


def test_click_usage_error_in_a_real_process(tmp_path):
    p = subprocess.run([sys.executable, "-m", "deepsim_cli", "layers", "--size", "-5x"], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: "), p.stderr
    assert p.stderr.rstrip().endswith("(see deepsim layers --help)")


def test_no_arguments_still_show_the_help():
    r = invoke()
    assert "Usage" in r.stdout + r.stderr and "error:" not in r.stderr


# ---------------------------------------------------------------- fault injection

class _FailingFile:
    """A real file whose write() puts half the data on disk and then raises OSError(code), like a disk
    filling up mid-write. No fileno(), so Pillow writes through write() too."""

    def __init__(self, f, code: int) -> None:
        self._f, self._code = f, code

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        raise OSError(self._code, os.strerror(self._code))

    def fileno(self):
        import io
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def fail_writes(monkeypatch):
    """fail_writes(suffix, code=ENOSPC): every file opened for writing whose name ends with `suffix`
    (our temporary files keep the final suffix) fails on its first write."""
    import builtins
    import io
    real_open = builtins.open
    rules: list[tuple[str, int]] = []

    def fake_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            for suffix, code in rules:
                if os.fspath(file).endswith(suffix):
                    return _FailingFile(f, code)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)  # pathlib's write_text / write_bytes

    def add(suffix: str, code: int = errno.ENOSPC) -> None:
        rules.append((suffix, code))
    return add


def error_and_warnings(result, code: int = 1) -> tuple[str, list[str]]:
    """The one `error:` line (exit `code`) and the `warning:` lines; nothing else on stderr."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    warns = [ln for ln in lines if ln.startswith("warning: ")]
    assert len(errors) == 1 and len(errors) + len(warns) == len(lines), result.stderr
    assert "Traceback" not in result.stderr
    return errors[0], warns


@pytest.fixture
def data_dir(tmp_path) -> Path:
    from PIL import Image
    d = tmp_path / "data"
    d.mkdir()
    for i, c in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        im = Image.new("RGB", (48, 40), c)
        im.paste((255, 255, 255), (i * 10, 5, i * 10 + 12, 20))
        im.save(d / f"im{i}.png")
    return d


# ---------------------------------------------------------------- 1. failed writes

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EIO])
def test_save_image_and_gif_failures_leave_nothing(tmp_path, fail_writes, code):
    import torch

    from deepsim_cli.errors import WriteError
    from deepsim_cli.figures import save_gif
    from deepsim_cli.images import save_image
    fail_writes(".png", code)
    fail_writes(".gif", code)
    x = torch.zeros(3, 8, 8)
    for save, name in ((save_image, "a.png"), (save_gif, "a.gif")):
        with pytest.raises(WriteError) as e:
            save([x, x] if save is save_gif else x, tmp_path / name)
        assert str(e.value) == f"cannot write {tmp_path / name}: {os.strerror(code)}"
    assert files(tmp_path) == []


def test_csv_and_json_writers_leave_nothing(tmp_path, fail_writes):
    from deepsim_cli.config import write_json
    from deepsim_cli.errors import WriteError
    from deepsim_cli.utils import atomic_output
    fail_writes(".csv")
    fail_writes(".json", errno.EIO)
    with pytest.raises(WriteError, match="cannot write .*t.csv: No space left on device"):
        with atomic_output(tmp_path / "t.csv") as tmp:
            with open(tmp, "w") as f:
                f.write("a,b\n" * 1000)
    with pytest.raises(WriteError, match="config.json: Input/output error"):
        write_json(tmp_path / "config.json", {"a": 1})
    assert files(tmp_path) == []


def test_safetensors_checkpoint_on_a_full_disk_in_a_real_process(tmp_path):
    # RLIMIT_FSIZE: a write past 64 KiB fails with EFBIG (SIGXFSZ ignored), as on a full disk
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
import torch
from deepsim_cli.checkpoint import save_checkpoint
from deepsim_cli.errors import WriteError
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_checkpoint({str(tmp_path / 'state.safetensors')!r}, {{"w": torch.zeros(100_000)}}, kind="train-state")
except WriteError as e:
    print(e)
    sys.exit(1)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 1, p.stderr
    assert p.stdout.strip() == f"cannot write {tmp_path / 'state.safetensors'}: File too large", p.stdout
    assert p.stderr == ""
    assert files(tmp_path) == []


def test_stats_log_never_keeps_half_a_line(tmp_path, monkeypatch):
    from deepsim_cli import utils
    from deepsim_cli.errors import WriteError
    path = tmp_path / "stats.jsonl"
    log = utils.LineLog(path)
    log.write(json.dumps({"step": 1}))
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(utils.os, "write", half_then_full)
    with pytest.raises(WriteError, match="stats.jsonl: No space left on device"):
        log.write(json.dumps({"step": 2, "loss": 0.5}))
    monkeypatch.setattr(utils.os, "write", real_write)
    log.write(json.dumps({"step": 3}))
    log.close()
    assert path.read_text() == '{"step": 1}\n{"step": 3}\n'


def test_eval_csv_on_a_full_disk_is_one_line_and_no_file(work, tiny_gen_file, data_dir, fail_writes):
    fail_writes(".csv")
    r = invoke("-q", "eval", "--data", data_dir, "--n", "2", "--weights", tiny_gen_file, "--no-lpips", "--no-judge",
               "--csv", "per_image.csv")
    line, _ = error_and_warnings(r, 1)
    assert line == "error: cannot write per_image.csv: No space left on device", line
    assert files(work) == []


def test_stdout_on_a_full_disk_is_one_line(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "deepsim_cli", "--json", "--version"], stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 1
    assert p.stderr == "error: cannot write standard output: No space left on device\n", p.stderr


# ---------------------------------------------------------------- 4. two outputs: both or neither

@pytest.mark.parametrize("fails", [".gif", ".png"])
def test_reencode_writes_grid_and_gif_or_neither(work, tiny_gen_file, fail_writes, fails):
    fail_writes(fails)
    r = invoke("-q", "reencode", CHELSEA, "--weights", tiny_gen_file, "--iters", "2", "-o", "drift.png")
    line, _ = error_and_warnings(r, 1)
    assert line == f"error: cannot write drift{fails}: No space left on device", line
    assert files(work) == []


def test_interpolate_writes_strip_and_gif_or_neither(work, tiny_gen_file, fail_writes):
    fail_writes(".gif", errno.EFBIG)
    r = invoke("-q", "interpolate", CHELSEA, COFFEE, "--weights", tiny_gen_file, "--steps", "3", "-o", "morph.png")
    line, _ = error_and_warnings(r, 1)
    assert line == "error: cannot write morph.gif: File too large", line
    assert files(work) == []
    r = invoke("-q", "interpolate", CHELSEA, COFFEE, "--weights", tiny_gen_file, "--steps", "3", "-o", "ok.png")
    assert r.exit_code == 1  # the same fault injector still fails every .gif
    assert files(work) == []


def test_invert_outdir_writes_every_file_or_none(work, tiny_gen_file, monkeypatch):
    import deepsim_cli.images as images
    from deepsim_cli.errors import WriteError
    real = images.save_image
    calls = []

    def second_fails(img, path, **kw):  # the disk fills up at the second image
        calls.append(path)
        if len(calls) == 2:
            raise WriteError(path, os.strerror(errno.ENOSPC))
        real(img, path, **kw)

    monkeypatch.setattr(images, "save_image", second_fails)
    r = invoke("-q", "invert", CHELSEA, COFFEE, "--weights", tiny_gen_file, "--outdir", "rec")
    assert "No space left on device" in one_line(r, 1) and len(calls) == 2
    assert files(work) == []


def test_all_or_nothing_takes_back_renames(tmp_path, monkeypatch):
    from deepsim_cli import utils
    from deepsim_cli.errors import WriteError
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".gif"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(utils.os, "replace", replace)
    with pytest.raises(WriteError, match="b.gif: Input/output error"):
        with utils.all_or_nothing():
            for name in ("a.png", "b.gif"):
                with utils.atomic_output(tmp_path / name) as tmp:
                    tmp.write_bytes(b"x")
    assert files(tmp_path) == []
    with utils.all_or_nothing():  # an exception in the block: neither file appears
        with utils.atomic_output(tmp_path / "c.png") as tmp:
            tmp.write_bytes(b"x")
        assert files(tmp_path) != [] and not (tmp_path / "c.png").exists()  # only the temporary
    assert files(tmp_path) == ["c.png"]


# ---------------------------------------------------------------- 5. non-finite results are not written

def test_make_grid_and_save_refuse_non_finite_images(tmp_path):
    import torch

    from deepsim_cli.figures import make_grid, save_gif
    from deepsim_cli.images import NonFiniteImage, save_image
    good, bad = torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)
    bad[0, 0, 0] = float("nan")
    inf = torch.full((3, 8, 8), float("inf"))
    for call in (lambda: save_image(bad, tmp_path / "a.png"), lambda: make_grid([good, inf]),
                 lambda: save_gif([good, bad], tmp_path / "a.gif")):
        with pytest.raises(NonFiniteImage, match="non-finite"):
            call()
    assert files(tmp_path) == []


def test_generator_with_overflowing_output_writes_nothing(work, tmp_path):
    # finite weights (the load check passes) whose output overflows to inf and NaN
    import torch

    from deepsim_cli.checkpoint import save_checkpoint
    from deepsim_cli.encoders import build_encoder
    from deepsim_cli.generators import generator_for
    torch.manual_seed(0)
    G = generator_for((256, 6, 6), out_size=32, width=0.125)
    path = tmp_path / "overflow.safetensors"
    save_checkpoint(path, {k: v * 1e30 if v.is_floating_point() else v for k, v in G.state_dict().items()},
                    kind="generator", config={"generator": G.cfg.to_dict()}, encoder="alexnet", layer="pool5",
                    encoder_sha256=build_encoder("alexnet").sha256)
    r = invoke("-q", "invert", CHELSEA, "--weights", path, "-o", "out.png")
    line = one_line(r, 1)
    assert "non-finite" in line, line
    r = invoke("-q", "reencode", CHELSEA, "--weights", path, "--iters", "1", "-o", "drift.png")
    assert "non-finite" in one_line(r, 1)
    assert files(work) == []


def test_visualize_refuses_a_diverged_run(work, monkeypatch):
    import torch

    import deepsim_cli.visualize as vis
    from deepsim_cli.visualize import VisResult

    def diverged(G, target, layer, units, seeds, **kw):
        return [VisResult(image=torch.zeros(3, 8, 8), code=torch.zeros(1, 4096), activation=float("nan"))
                for _ in units]

    monkeypatch.setattr(vis, "visualize_many", diverged)
    r = invoke("-q", "visualize", "--unit", "1", "--iters", "1", "-o", "vis.png")
    assert "diverged" in one_line(r, 1)
    assert files(work) == []


# ---------------------------------------------------------------- 6. $DEEPSIM_CACHE is optional

def _only_cache_file(tmp_path) -> Path:
    found = list((tmp_path / "cache").glob("images-*.npz"))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong-shape"])
def test_corrupt_image_cache_is_rebuilt_with_one_warning(tmp_path, data_dir, capsys, damage):
    import numpy as np

    from deepsim_cli import utils
    from deepsim_cli.data import load_array
    utils._warned.clear()
    want, names = load_array(data_dir, 16)
    cfile = _only_cache_file(tmp_path)
    if damage == "garbage":
        cfile.write_bytes(b"not a zip file")
    elif damage == "truncated":
        cfile.write_bytes(cfile.read_bytes()[:200])
    else:
        np.savez(cfile, images=np.zeros((3, 8, 8, 3), np.uint8), names=np.array(names))
    capsys.readouterr()
    got, got_names = load_array(data_dir, 16)
    assert np.array_equal(got, want) and got_names == names
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ignoring unreadable cache file") and str(cfile) in err[0]
    again, _ = load_array(data_dir, 16)  # rebuilt: read back without a warning
    assert np.array_equal(again, want) and capsys.readouterr().err == ""


def test_unwritable_image_cache_is_skipped_with_one_warning(tmp_path, data_dir, capsys, monkeypatch,
                                                            fail_writes):
    import numpy as np

    from deepsim_cli import utils
    from deepsim_cli.data import load_array
    utils._warned.clear()
    fail_writes(".npz")
    a, _ = load_array(data_dir, 16)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: cannot write") and "No space left" in err[0], err
    assert a.shape == (3, 16, 16, 3) and files(tmp_path / "cache") == []
    (tmp_path / "not-a-folder").write_text("x")
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "not-a-folder"))
    b, _ = load_array(data_dir, 16)
    assert np.array_equal(a, b) and capsys.readouterr().err.startswith("warning: cannot write")


def test_feature_cache_is_optional(tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    import numpy as np
    import torch

    from deepsim_cli import utils
    from deepsim_cli.training import _cached_features
    utils._warned.clear()
    images = np.zeros((4, 8, 8, 3), np.uint8)
    calls = []
    trainer = SimpleNamespace(feat_layer="pool5", encoder=SimpleNamespace(sha256="ab"),
                              compute_features=lambda im: calls.append(1) or torch.ones(len(im), 5))
    cfg = SimpleNamespace(encoder="alexnet", image_size=8)
    assert _cached_features(trainer, images, cfg).shape == (4, 5)
    (path,) = (tmp_path / "cache").glob("features-*.pt")
    path.write_bytes(b"corrupt")
    assert _cached_features(trainer, images, cfg).shape == (4, 5) and len(calls) == 2
    assert capsys.readouterr().err.startswith("warning: ignoring unreadable cache file")
    (tmp_path / "file").write_text("x")  # torch.save writes in C++: make the cache unwritable instead
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "file"))
    assert _cached_features(trainer, images, cfg).shape == (4, 5) and len(calls) == 3
    assert capsys.readouterr().err.startswith("warning: cannot write")


def test_eval_with_a_corrupt_cache_finishes_with_one_warning(work, tmp_path, tiny_gen_file, data_dir):
    from deepsim_cli import utils
    args = ("-q", "eval", "--data", data_dir, "--n", "2", "--weights", tiny_gen_file, "--no-lpips", "--no-judge",
            "--json")
    assert invoke(*args).exit_code == 0
    _only_cache_file(tmp_path).write_bytes(b"\0" * 100)
    utils._warned.clear()
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ignoring unreadable cache file"), r.stderr
    assert json.loads(r.stdout)["rows"]


# ---------------------------------------------------------------- 10. tampered weights metadata

def _tampered(src: Path, dst: Path, **changes) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    save_file(tensors, str(dst), metadata=meta)
    return dst


def _gen_config(path: Path, **changes) -> str:
    from deepsim_cli.checkpoint import read_metadata
    cfg = json.loads(read_metadata(path)["config"])
    for k, v in changes.items():
        if v is None:
            cfg["generator"].pop(k)
        else:
            cfg["generator"][k] = v
    return json.dumps(cfg)


TAMPER = [
    ("config.generator", lambda g: {"config": json.dumps({"train": {}})}),
    ("train_steps", lambda g: {"train_steps": "12abc"}),
    ("config", lambda g: {"config": "{not json"}),
    ("config", lambda g: {"config": "[1, 2]"}),
    ("metrics", lambda g: {"metrics": "nan?"}),
    ("format_version", lambda g: {"format_version": "one"}),
    ("config.generator.in_shape", lambda g: {"config": _gen_config(g, in_shape=None)}),
    ("config.generator.in_shape[0]", lambda g: {"config": _gen_config(g, in_shape=["256", 6, 6])}),
    ("config.generator.out_size", lambda g: {"config": _gen_config(g, out_size=10**9)}),
    ("config.generator.width", lambda g: {"config": _gen_config(g, width="wide")}),
    ("config.generator.kind", lambda g: {"config": _gen_config(g, kind="rnn")}),
    ("config.generator.depth", lambda g: {"config": _gen_config(g, depth=3)}),
]


@pytest.mark.parametrize("field,change", TAMPER, ids=[f"{f}-{i}" for i, (f, _) in enumerate(TAMPER)])
def test_tampered_generator_metadata_is_one_usage_error(work, tmp_path, tiny_gen_file, field, change):
    bad = _tampered(tiny_gen_file, tmp_path / "bad.safetensors", **change(tiny_gen_file))
    r = invoke("-q", "invert", CHELSEA, "--weights", bad, "-o", "out.png")
    line = one_line(r, 2)
    assert line.startswith(f"error: {bad}: bad metadata field {field} ("), line
    assert files(work) == []


def test_tampered_train_state_is_one_usage_error(tmp_path, tiny_gen_file):
    from deepsim_cli.checkpoint import BadMetadata, read_metadata
    for key, value in (("train_steps", "-3"), ("prior_steps", "x"), ("g_norm_avg", "nan")):
        bad = _tampered(tiny_gen_file, tmp_path / f"{key}.safetensors", kind="train-state", **{key: value})
        with pytest.raises(BadMetadata, match=f"bad metadata field {key} "):
            read_metadata(bad)


def test_pickled_encoder_weights_are_one_line_without_torch_warnings(work, tmp_path):
    import argparse
    import pickle

    import torch
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")  # a whole pickled module
    with open(tmp_path / "raw.pth", "wb") as f:  # a plain pickle, protocol 4 (torch warns about it)
        pickle.dump({"a": argparse.Namespace(x=1)}, f, protocol=4)
    torch.save([torch.zeros(2)], tmp_path / "list.pth")  # weights-only, but not a state dict
    for name in ("model.pth", "raw.pth", "list.pth"):
        r = invoke("-q", "invert", CHELSEA, "--encoder-weights", tmp_path / name, "-o", "out.png")
        line = one_line(r, 2)
        assert str(tmp_path / name) in line and "Warning" not in r.stderr and "\x1b" not in line, line
    assert files(work) == []
