"""Unreadable files inside a folder: skipped with one warning line each and a
count, an error only when nothing readable is left; `--strict` stops at the first one. A file named
on its own stays an error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from deepsim_cli.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"


@pytest.fixture(autouse=True)
def _tmp(in_tmp):
    """Every test in its own folder with its own image cache."""


@pytest.fixture
def mixed(tmp_path) -> Path:
    """3 good images, a corrupt .jpg and an empty .png."""
    d = tmp_path / "mixed"
    d.mkdir()
    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg"):
        shutil.copy(IMAGES / name, d / name)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10)
    (d / "empty.png").write_bytes(b"")
    return d


@pytest.fixture
def only_bad(tmp_path) -> Path:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "broken.jpg").write_bytes(b"not an image at all")
    (d / "empty.png").write_bytes(b"")
    return d


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("warning: skip")]


def _assert_skipped(stderr: str, folder: Path, total: int = 5) -> None:
    lines = _warnings(stderr)
    assert len(lines) == 3, stderr
    assert lines[0].startswith(f"warning: skipping {folder / 'broken.jpg'}: ") and len(lines[0]) > len(
        f"warning: skipping {folder / 'broken.jpg'}: "), stderr
    assert lines[1] == f"warning: skipping {folder / 'empty.png'}: file is empty (0 bytes)", stderr
    assert lines[2:] == [f"warning: skipped 2 unreadable files of {total}"], stderr
    assert "Traceback" not in stderr


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in ("cache", "mixed", "bad"))


def test_invert_skips_unreadable_files_in_a_folder(cli, tiny_gen_file, mixed, in_tmp):
    r = cli("invert", str(mixed), "--weights", str(tiny_gen_file), "-o", "grid.png")
    assert r.exit_code == 0, r.stderr
    _assert_skipped(r.stderr, mixed)
    assert _outputs(in_tmp) == ["grid.png"]


def test_eval_skips_unreadable_files_in_a_folder(cli, tiny_gen_file, mixed, in_tmp):
    args = ("eval", "--data", str(mixed), "--weights", str(tiny_gen_file), "--no-lpips", "--no-judge")
    r = cli(*args, "--csv", "per.csv")
    assert r.exit_code == 0, r.stderr
    _assert_skipped(r.stderr, mixed)
    rows = (in_tmp / "per.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and not any("broken" in r or "empty" in r for r in rows)
    # a second run reads the image cache: the same warnings, and strict mode still refuses
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    _assert_skipped(r.stderr, mixed)
    r = cli("--strict", *args, "--csv", "strict.csv")
    assert r.exit_code == 2 and not (in_tmp / "strict.csv").exists()


@pytest.mark.parametrize("cmd", ["invert", "eval"])
def test_strict_stops_at_the_first_unreadable_file(cli, error_line, tiny_gen_file, mixed, in_tmp, cmd):
    args = {"invert": ["invert", str(mixed), "-o", "grid.png"],
            "eval": ["eval", "--data", str(mixed), "--no-lpips", "--no-judge", "--csv", "per.csv"]}[cmd]
    r = cli("--strict", *args, "--weights", str(tiny_gen_file))
    assert r.exit_code == 2
    line = error_line(r)
    assert line.startswith(f"error: cannot read image {mixed / 'broken.jpg'}: "), line
    assert _outputs(in_tmp) == []


@pytest.mark.parametrize("cmd", ["invert", "eval"])
def test_a_folder_of_only_unreadable_files_is_one_error(cli, error_line, tiny_gen_file, only_bad, in_tmp, cmd):
    args = {"invert": ["invert", str(only_bad), "-o", "grid.png"],
            "eval": ["eval", "--data", str(only_bad), "--no-lpips", "--no-judge", "--csv", "per.csv"]}[cmd]
    r = cli(*args, "--weights", str(tiny_gen_file))
    assert r.exit_code == 2
    line = error_line(r)
    assert line.startswith(f"error: no readable images in {only_bad}: 2 files, none readable"), line
    assert str(only_bad / "broken.jpg") in line
    assert _outputs(in_tmp) == []


def test_a_file_named_on_its_own_stays_an_error(cli, error_line, tiny_gen_file, mixed, in_tmp):
    r = cli("invert", str(mixed / "chelsea.jpg"), str(mixed / "broken.jpg"), "--weights", str(tiny_gen_file),
            "-o", "grid.png")
    assert r.exit_code == 2
    assert str(mixed / "broken.jpg") in error_line(r)
    assert _outputs(in_tmp) == []


def test_global_options_are_accepted_after_the_command(mixed, tiny_gen_file):
    from deepsim_cli.cli import hoist_global_options as hoist

    assert hoist(["invert", str(mixed), "--strict", "--debug"]) == ["--strict", "--debug", "invert", str(mixed)]
    assert hoist(["invert", "--", "--strict"]) == ["invert", "--", "--strict"]
    assert hoist(["invert", "a.jpg", "--seed", "3", "-q", "--device=cpu", "--json", "-o", "x.png"]) == \
        ["--seed", "3", "-q", "--device=cpu", "--json", "invert", "a.jpg", "-o", "x.png"]
    assert hoist(["invert", "a.jpg", "--seed"]) == ["invert", "a.jpg", "--seed"]  # Click reports it
    assert hoist(["visualize", "--seeds", "0-3"]) == ["visualize", "--seeds", "0-3"]  # not --seed


def test_help_documents_strict(cli):
    r = cli("--help", env={"COLUMNS": "200"})
    assert "--strict" in r.stdout and "unreadable" in r.stdout


def test_load_array_skips_warns_caches_and_strict(mixed, capsys):
    from deepsim_cli.data import load_array
    from deepsim_cli.unreadable import set_strict

    arr, names = load_array([mixed], 16)
    assert names == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"] and arr.shape == (3, 16, 16, 3)
    _assert_skipped(capsys.readouterr().err, mixed)
    # the cache hit gives the same array and repeats the warnings
    arr2, names2 = load_array([mixed], 16)
    assert names2 == names and np.array_equal(arr, arr2)
    _assert_skipped(capsys.readouterr().err, mixed)
    # strictness is not part of the cached result: a strict load still fails, from cache or not
    for cache in (True, False):
        with pytest.raises(UsageError, match="cannot read image .*broken.jpg: "):
            load_array([mixed], 16, strict=True, cache=cache)
    set_strict(True)
    try:
        with pytest.raises(UsageError, match="broken.jpg"):
            load_array([mixed], 16)
    finally:
        set_strict(False)
    # a source that is itself an unreadable image file is an error, beside a good folder too
    with pytest.raises(UsageError, match="broken.jpg"):
        load_array([IMAGES, mixed / "broken.jpg"], 16, cache=False)


def test_load_array_lists_at_most_ten_files_then_counts(tmp_path, capsys):
    from deepsim_cli.data import load_array

    d = tmp_path / "many"
    d.mkdir()
    shutil.copy(IMAGES / "chelsea.jpg", d / "a-good.jpg")
    for i in range(12):
        (d / f"b{i:02d}.png").write_bytes(b"")
    arr, names = load_array([d], 16, cache=False)
    assert names == ["a-good.jpg"]
    lines = _warnings(capsys.readouterr().err)
    assert len(lines) == 11 and lines[-1] == "warning: skipped 12 unreadable files of 13 (2 more not listed)"


def test_unreadable_files_in_a_tar_are_skipped(tmp_path, mixed, capsys):
    import tarfile

    from deepsim_cli.data import load_array

    tar = tmp_path / "data.tar"
    with tarfile.open(tar, "w") as tf:
        for f in sorted(mixed.iterdir()):
            tf.add(f, arcname=f.name)
    arr, names = load_array([tar], 16, cache=False)
    assert len(arr) == 3 and all(n.startswith("data.tar/") for n in names)
    err = capsys.readouterr().err
    assert f"warning: skipping {tmp_path / 'data.tar' / 'broken.jpg'}: " in err
    assert "warning: skipped 2 unreadable files of 5" in err


# ------------------------------------------------------------------- truncated tars, hidden files

@pytest.fixture
def truncated_tar(tmp_path) -> Path:
    """A tar of the four example photos cut off inside its second member (a broken download)."""
    import tarfile
    full = tmp_path / "full.tar"
    with tarfile.open(full, "w") as tf:
        for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"):
            tf.add(IMAGES / name, arcname=f"photos/{name}")
    first = (IMAGES / "astronaut.jpg").stat().st_size
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full.read_bytes()[:512 + -(-first // 512) * 512 + 512 + 1000])
    return cut


def test_a_truncated_tar_gives_its_readable_images_and_one_warning(truncated_tar, capsys):
    from deepsim_cli.data import count_images, load_array
    arr, names = load_array(truncated_tar, 32, cache=False)
    assert names == ["cut.tar/photos/astronaut.jpg"] and len(arr) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"warning: {truncated_tar} is truncated or corrupt after 1 images" in err
    assert count_images(truncated_tar) == 1
    with pytest.raises(UsageError, match=r"cannot read tar .*cut.tar: ReadError"):
        load_array(truncated_tar, 32, cache=False, strict=True)


def test_a_truncated_tar_in_the_cli_warns_or_with_strict_is_one_error(cli, error_line, truncated_tar, in_tmp):
    args = ("neighbors", str(IMAGES / "chelsea.jpg"), "--data", str(truncated_tar), "--space", "image",
            "--size", "32", "--k", "1")
    r = cli(*args, "-o", "nn.png")
    assert r.exit_code == 0 and "is truncated or corrupt after 1 images" in r.stderr, r.stderr
    r = cli("--strict", *args, "-o", "strict.png")
    assert r.exit_code == 2 and "cannot read tar" in error_line(r) and not Path("strict.png").exists()
    head = in_tmp / "head.tar"  # not even the first member is whole
    head.write_bytes(truncated_tar.read_bytes()[:1200])
    r = cli(*args[:3], str(head), *args[4:], "-o", "none.png")
    assert r.exit_code == 2 and "cannot read tar" in error_line(r) and not Path("none.png").exists()


def test_hidden_files_are_not_data(tmp_path, capsys):
    """The temporary file of an interrupted write (.NAME.XXXXXX.tmp.png) or a macOS ._ file inside
    a data folder is neither an image nor an unreadable file."""
    from deepsim_cli.data import count_images, load_array
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(IMAGES / "chelsea.jpg", d / "chelsea.jpg")
    shutil.copy(IMAGES / "coffee.jpg", d / ".grid.png.k3j2h1aa.tmp.jpg")  # complete but hidden
    (d / "._chelsea.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    arr, names = load_array(d, 32, cache=False)
    assert names == ["chelsea.jpg"] and count_images(d) == 1
    assert "warning" not in capsys.readouterr().err


def test_a_checkpoint_write_killed_at_any_moment_leaves_only_our_temp_files(tmp_path):
    """SIGKILL during save_checkpoint: whatever is left is either the previous complete file or a
    temporary file of our own pattern, which clean_stale_temp_files removes (safetensors' own
    .tmpXXXXXX files used to be left behind, 78 MB each)."""
    import signal
    import subprocess
    import sys
    import time

    from deepsim_cli.checkpoint import load_checkpoint
    from deepsim_cli.utils import clean_stale_temp_files
    run = tmp_path / "run"
    run.mkdir()
    code = ("import sys, torch\nfrom deepsim_cli.checkpoint import save_checkpoint\n"
            "t = {'w': torch.zeros(24_000_000)}\nprint('ready', flush=True)\n"
            "while True:\n    save_checkpoint(sys.argv[1], t, kind='train-state')\n")
    for delay in (0.05, 0.2, 0.45):
        p = subprocess.Popen([sys.executable, "-c", code, str(run / "state.safetensors")], stdout=subprocess.PIPE,
                             cwd=REPO)
        assert p.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
    clean_stale_temp_files(run)
    assert sorted(f.name for f in run.iterdir()) in ([], ["state.safetensors"])
    if (run / "state.safetensors").exists():
        assert load_checkpoint(run / "state.safetensors").tensors["w"].shape == (24_000_000,)


def test_distill_cache_that_cannot_hold_the_views_is_one_line_before_any_work(cli, error_line, in_tmp):
    Path("afile").write_text("x")
    base = ("distill", "--data", str(IMAGES), "--steps", "1", "--rounds", "1", "-o", "h.safetensors")
    r = cli(*base, "--cache", "afile")
    assert r.exit_code == 2 and "--cache afile is a file, not a folder" in error_line(r)
    r = cli(*base, "--cache", "afile/sub")
    assert r.exit_code == 1 and "cannot write the --cache folder afile/sub" in error_line(r)
    assert not Path("h.safetensors").exists() and "training images" not in r.stderr


def test_eval_of_one_image_says_two_are_needed(cli, error_line, tiny_gen_file, in_tmp):
    one = in_tmp / "one"
    one.mkdir()
    shutil.copy(IMAGES / "chelsea.jpg", one / "chelsea.jpg")
    r = cli("eval", "--data", str(one), "--weights", str(tiny_gen_file), "--no-lpips", "--no-judge", "--csv", "e.csv")
    assert r.exit_code == 2 and "at least two images" in error_line(r)
    assert not Path("e.csv").exists()
