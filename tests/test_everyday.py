"""Everyday use: progress on long jobs, an unbiased `eval --n`."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepsim_cli.data import count_images, stratified_sample

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"
CHELSEA = str(IMAGES / "chelsea.jpg")


@pytest.fixture(autouse=True)
def _tmp(in_tmp):
    """Every test in its own folder (outputs land in the working directory)."""


def test_long_jobs_report_progress_as_plain_lines_off_a_terminal(cli, tiny_gen_file):
    r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "--refine", "3", "-o", "a.png")
    assert r.exit_code == 0, r.stderr
    assert "refining pool5: 3/3" in r.stderr  # CliRunner's stderr is no terminal: plain lines
    r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "--method", "optimize", "--steps", "4", "-o", "b.png")
    assert r.exit_code == 0 and "optimising pool5: 4/4" in r.stderr, r.stderr
    r = cli("eval", "--data", str(IMAGES), "--weights", str(tiny_gen_file), "--n", "3", "--no-lpips", "--no-judge")
    assert r.exit_code == 0 and "eval pool5: 2/2" in r.stderr, r.stderr
    for quiet in (["-q"], ["--json"]):
        r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "--refine", "2", "-o", "c.png", *quiet)
        assert r.exit_code == 0 and "refining" not in r.stderr, r.stderr


def test_stratified_sample_covers_every_folder_and_follows_the_seed():
    names = [f"data.tar/class{c}/img{i:02d}.jpg" for c in range(5) for i in range(20)]
    pick = stratified_sample(names, 10, seed=0)
    assert pick == sorted(pick) and len(set(pick)) == 10
    assert sorted({names[i].split("/")[1] for i in pick}) == [f"class{c}" for c in range(5)]
    assert all(sum(names[i].split("/")[1] == f"class{c}" for i in pick) == 2 for c in range(5))
    assert stratified_sample(names, 10, seed=0) == pick and stratified_sample(names, 10, seed=1) != pick
    assert stratified_sample(names, 500, seed=0) == list(range(100))
    assert pick != list(range(10))  # not the first N by name


def test_eval_says_how_many_of_how_many(cli, tiny_gen_file):
    total = count_images(IMAGES)
    r = cli("eval", "--data", str(IMAGES), "--weights", str(tiny_gen_file), "--n", "2", "--no-lpips", "--no-judge",
            "--seed", "3")
    assert r.exit_code == 0, r.stderr
    assert f"on 2 of {total} images" in r.stderr


def test_outdir_writes_one_file_per_image_and_layer(cli, tiny_gen_file):
    r = cli("invert", str(IMAGES), "--weights", str(tiny_gen_file), "--outdir", "rec")
    assert r.exit_code == 0, r.stderr
    n = count_images(IMAGES)
    files = sorted(Path("rec").glob("*.png"))
    assert len(files) == n and all(f.name.endswith("-pool5.png") for f in files)
    assert r.stdout.split() == [str(Path("rec") / f"{p.stem}-pool5.png")
                                for p in sorted(IMAGES.iterdir()) if p.suffix.lower() in (".jpg", ".png")]
    Path("dir2").mkdir()
    r = cli("invert", CHELSEA, CHELSEA, "--weights", str(tiny_gen_file), "-o", "dir2")  # -o an existing folder
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in Path("dir2").iterdir()) == ["chelsea-2-pool5.png", "chelsea-pool5.png"]


def test_grids_wrap_every_ncols_images(cli, tiny_gen_file):
    from PIL import Image
    n = count_images(IMAGES)
    r = cli("invert", str(IMAGES), "--weights", str(tiny_gen_file), "--ncols", "2", "-o", "two.png")
    assert r.exit_code == 0, r.stderr
    r = cli("invert", str(IMAGES), "--weights", str(tiny_gen_file), "--ncols", "100", "-o", "all.png")
    assert r.exit_code == 0, r.stderr
    two, wide = Image.open("two.png").size, Image.open("all.png").size
    assert two[0] < wide[0] and two[1] > wide[1]
    blocks = -(-n // 2)
    assert two[1] == pytest.approx(blocks * wide[1], rel=0.05)


def test_default_names_carry_what_changes_the_result_and_clobbering_is_announced(cli, tiny_gen_file):
    r = cli("invert", str(IMAGES), "--weights", str(tiny_gen_file))
    assert r.exit_code == 0 and r.stdout.strip() == "invert-images-pool5.png", (r.stdout, r.stderr)
    r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "--refine", "1")
    assert r.stdout.strip() == "chelsea-pool5-refine1.png"
    r = cli("interpolate", CHELSEA, str(IMAGES / "coffee.jpg"), "--weights", str(tiny_gen_file), "--steps", "2", "--slerp")
    assert r.exit_code == 0 and r.stdout.split()[0] == "chelsea-coffee-pool5-slerp.png", r.stderr
    before = Path("chelsea-pool5-refine1.png").read_bytes()
    r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "--refine", "1")
    assert r.exit_code == 0 and "warning: replacing chelsea-pool5-refine1.png" in r.stderr
    Path("chelsea-pool5-refine1.png").write_bytes(b"keep me")
    for cmd in (["invert", CHELSEA, "--weights", str(tiny_gen_file), "--refine", "1", "--no-clobber"],
                ["--no-clobber", "invert", CHELSEA, "--weights", str(tiny_gen_file), "--refine", "1"]):
        r = cli(*cmd)
        assert r.exit_code == 2 and "--no-clobber" in r.stderr, r.stderr
        assert Path("chelsea-pool5-refine1.png").read_bytes() == b"keep me"
    assert before != b"keep me"


def test_help_shows_no_bool_metavar_for_flags(cli):
    r = cli("invert", "--help")
    assert r.exit_code == 0 and "--no-clobber" in r.stdout and "--refine" in r.stdout
    assert "<bool>" not in r.stdout


def test_layer_names_are_case_insensitive(cli, tiny_gen_file):
    r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "--layer", "POOL5", "-o", "a.png")
    assert r.exit_code == 0, r.stderr


def test_conv5_points_to_pool5_and_to_optimize(cli, error_line):
    r = cli("invert", CHELSEA, "--layer", "conv5")
    assert r.exit_code == 2
    line = error_line(r)
    assert "pool5" in line and "--method optimize" in line and "shipped: pool5" in line


def test_layers_marks_the_layers_with_a_shipped_generator(cli):
    import json
    r = cli("layers", "--encoder", "alexnet", "--json")
    assert r.exit_code == 0, r.stderr
    shipped = json.loads(r.stdout)["encoders"]["alexnet"]["shipped_generators"]
    assert "pool5" in shipped and "conv3" not in shipped
    assert "shipped generator" in cli("layers", "--encoder", "alexnet").stdout


def test_debug_works_anywhere_on_the_line(capsys):
    from deepsim_cli.cli import main
    with pytest.raises(SystemExit) as e:
        main(["invert", "missing.jpg", "--debug"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "input not found" in err and "No such option" not in err


def test_a_closed_pipe_ends_quietly_with_exit_0():
    import subprocess
    import sys
    p = subprocess.run(f"{sys.executable} -m deepsim_cli layers | head -c 1 > /dev/null; echo ${{PIPESTATUS[0]}}",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "0" and p.stderr == "", p.stderr


def test_every_output_carries_a_record_that_reproduces_it(cli, tiny_gen_file, error_line):
    import json

    import numpy as np
    from PIL import Image

    from deepsim_cli import provenance
    r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "--refine", "2", "-o", "first.png")
    assert r.exit_code == 0, r.stderr
    rec = provenance.read("first.png")
    assert rec["command"].endswith("invert") and rec["options"]["refine"] == 2 and rec["seed"] == 0
    assert rec["weights"]["generator alexnet:pool5"]["sha256"] and "torch" in rec["versions"]
    assert rec["argv"][:2] == ["deepsim", "--device"] and "first.png" in rec["argv"]
    argv = [a if a != "first.png" else "again.png" for a in rec["argv"][1:]]
    r = cli(*argv[2:])  # our cli fixture adds --device cpu itself
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open("first.png")), np.asarray(Image.open("again.png")))
    r = cli("info", "first.png", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["options"]["refine"] == 2
    r = cli("reencode", CHELSEA, "--weights", str(tiny_gen_file), "--iters", "2", "-o", "re.png")
    assert r.exit_code == 0, r.stderr
    gif_rec = provenance.read("re.gif")  # from re.gif.json
    assert gif_rec["command"].endswith("reencode") and len(gif_rec["results"]["feature_distance"][0]) == 3
    assert "feature_distance" in cli("info", "re.png").stdout
    Image.new("RGB", (4, 4)).save("plain.png")
    r = cli("info", "plain.png")
    assert r.exit_code == 2 and "no deepsim record" in error_line(r)


def test_neighbors_caches_the_bank_features_and_notices_changed_data(cli, in_tmp):
    import json
    import shutil

    bank = in_tmp / "bank"
    shutil.copytree(IMAGES, bank)
    args = ("neighbors", CHELSEA, "--data", str(bank), "--space", "pool5", "--size", "64", "--k", "2", "--json")
    first = cli(*args, "-o", "a.png")
    assert first.exit_code == 0, first.stderr
    assert "from the cache" not in first.stderr
    assert len(list((in_tmp / "cache").glob("bank-*.safetensors"))) == 1
    again = cli(*args, "-o", "b.png")
    assert again.exit_code == 0 and "from the cache" in again.stderr, again.stderr
    assert json.loads(again.stdout)["results"] == json.loads(first.stdout)["results"]
    for f in bank.iterdir():  # a changed file list is a new bank
        if f.name != "chelsea.jpg":
            f.unlink()
            break
    changed = cli(*args, "-o", "c.png")
    assert changed.exit_code == 0 and "from the cache" not in changed.stderr, changed.stderr
    assert len(list((in_tmp / "cache").glob("bank-*.safetensors"))) == 2
    off = cli(*args, "--no-cache", "-o", "d.png")
    assert off.exit_code == 0 and "from the cache" not in off.stderr


def test_save_code_and_decode_it_again(cli, tiny_gen_file, error_line):
    import numpy as np
    from PIL import Image

    from deepsim_cli.checkpoint import load_checkpoint
    r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "-o", "a.png", "--save-code", "a.safetensors")
    assert r.exit_code == 0, r.stderr
    ck = load_checkpoint("a.safetensors", kind="code")
    assert ck.layer == "pool5" and tuple(ck.tensors["pool5"].shape) == (1, 256, 6, 6) and ck.encoder == "alexnet"
    r = cli("invert", "--code", "a.safetensors", "--weights", str(tiny_gen_file), "-o", "b.png")
    assert r.exit_code == 0, r.stderr
    a, b = (np.asarray(Image.open(f), dtype=np.int16) for f in ("a.png", "b.png"))
    assert a.shape == b.shape and np.abs(a - b).max() <= 1  # the same code decodes to the same image
    # refined codes are saved too, and differ from the plain features
    r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "--refine", "3", "-o", "c.png",
            "--save-code", "c.safetensors")
    assert r.exit_code == 0, r.stderr
    refined = load_checkpoint("c.safetensors", kind="code")
    assert refined.extra["refine_steps"] == "3" and not np.allclose(refined.tensors["pool5"], ck.tensors["pool5"])
    r = cli("invert", "--code", "c.safetensors", "--weights", str(tiny_gen_file), "-o", "d.png")
    assert r.exit_code == 0, r.stderr
    c, d = (np.asarray(Image.open(f), dtype=np.int16) for f in ("c.png", "d.png"))
    assert np.abs(c - d).max() <= 1
    # bad uses: one line, exit 2, nothing written
    assert error_line(cli("invert", CHELSEA, "--code", "a.safetensors", "-o", "e.png")).count("not both")
    assert "safetensors" in error_line(cli("invert", CHELSEA, "--save-code", "x.pt", "-o", "e.png"))
    r = cli("invert", "--code", "a.png", "-o", "e.png")
    assert r.exit_code == 2 and not Path("e.png").exists()
    r = cli("invert", "-o", "e.png")
    assert r.exit_code == 2 and "no input images" in error_line(r)


def test_sample_outdir_feeds_neighbors_the_papers_memorisation_check(cli, error_line):
    import json

    r = cli("sample", "--n", "3", "--seed", "2", "--outdir", "samples")
    assert r.exit_code == 0, r.stderr
    files = sorted(Path("samples").iterdir())
    assert [f.name for f in files] == [f"samples-seed2-{i:03d}.png" for i in range(3)]
    assert r.stdout.split() == [str(f) for f in files]
    r = cli("neighbors", "samples", "--data", str(IMAGES), "--space", "image", "--size", "32", "--k", "1",
            "-o", "nn.png", "--json")
    assert r.exit_code == 0, r.stderr
    assert [q["query"] for q in json.loads(r.stdout)["results"]] == [f.stem for f in files]
    r = cli("sample", "--n", "9", "--ncols", "3", "-o", "grid.png")
    assert r.exit_code == 0, r.stderr
    from PIL import Image
    w, h = Image.open("grid.png").size
    assert abs(w - h) < 0.3 * w  # 3 × 3, not one row of 9
    assert "not both" in error_line(cli("sample", "--n", "2", "--outdir", "s2", "-o", "x.png"))
    assert not Path("s2").exists()


def test_readme_examples_use_only_files_that_ship():
    """README code blocks name no data outside the repository, and every examples/ path exists."""
    import re

    text = (REPO / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```(?:bash|python)\n(.*?)```", text, flags=re.S))
    assert blocks and "../shared" not in blocks
    paths = set(re.findall(r"(examples/[\w./-]+)", blocks))
    assert {"examples/kodak24", "examples/images/chelsea.jpg"} <= {p.rstrip("/") for p in paths}
    for p in paths:
        assert (REPO / p.rstrip("/")).exists(), p
    assert len(list((REPO / "examples" / "kodak24").glob("*.jpg"))) == 24


def test_train_progress_fits_80_columns_with_a_real_eta():
    import io

    from rich.console import Console

    from deepsim_cli.cli.train_run import eta_text, train_progress
    assert eta_text(0, 0, 100, 0.0) == "eta –"
    assert eta_text(10, 0, 100, 30.0) == "eta 0:04:30"              # 90 steps left at 3 s/step
    assert eta_text(510, 500, 600, 10.0) == "eta 0:01:30"           # resumed at 500: only this run's rate
    assert eta_text(10, 0, 100, 30.0, time_limit=60.0) == "eta 0:00:30"  # --time-limit stops it sooner
    buf = io.StringIO()
    con = Console(file=buf, width=80, force_terminal=True, color_system=None)
    losses = "total 1.575 · feat 0.7576 · adv 2.393 · img 0.3847 · discr 0.5527 · D paused · 25.7 img/s"
    p = train_progress(con)
    t = p.add_task("train pool5", total=100000, completed=1150, losses=losses, eta=eta_text(1150, 0, 100000, 600))
    with con.capture() as cap:
        con.print(p.make_tasks_table([p.tasks[t]]))
    (line,) = [ln for ln in cap.get().splitlines() if ln.strip()]
    assert len(line) <= 80 and "train pool5" in line and "1150/100000" in line
    assert "eta 14:19:34" in line and "total 1.5" in line and line.rstrip().endswith("…")


def test_o_with_a_trailing_slash_is_a_new_folder(cli, tiny_gen_file):
    r = cli("invert", str(IMAGES), "--weights", str(tiny_gen_file), "-o", "fresh/")
    assert r.exit_code == 0, r.stderr
    assert len(list(Path("fresh").glob("*-pool5.png"))) == count_images(IMAGES)
    r = cli("sample", "--n", "2", "-o", "s/")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in Path("s").iterdir()) == ["samples-seed0-000.png", "samples-seed0-001.png"]
    r = cli("invert", CHELSEA, "--weights", str(tiny_gen_file), "-o", "one.png")  # a file stays a file
    assert r.exit_code == 0 and Path("one.png").is_file()


@pytest.mark.parametrize("command", ["invert", "eval", "train", "visualize", "neighbors", "sample", "distill"])
def test_help_prose_is_wrapped_by_rich_not_by_the_source_lines(command):
    """Docstrings are hard-wrapped at ~100 columns; the help joins each paragraph, so at any width a
    sentence is never broken where a source line ended, and examples stay one per line."""
    import inspect

    from deepsim_cli.cli import app, unwrap_help
    cmd = next(c for c in app.registered_commands if c.name == command)
    doc = inspect.cleandoc(cmd.callback.__doc__)
    assert doc == unwrap_help(doc)  # registered already unwrapped
    for para in doc.split("\n\n"):
        lines = para.splitlines()
        prose = [ln for ln in lines if not ln.startswith((" ", "-", "["))]
        assert len(prose) <= 1 or any(ln.startswith((" ", "- ", "[")) for ln in lines), para
    assert "../shared" not in doc
    assert unwrap_help("One line\ncontinues here.\n\n  deepsim x\n  deepsim y") == \
        "One line continues here.\n\n  deepsim x\n  deepsim y"


def test_shell_completion_is_offered_and_the_train_hint_names_the_encoder(cli, error_line):
    r = cli("--help")
    assert r.exit_code == 0 and "--install-completion" in r.stdout and "--show-completion" in r.stdout
    r = cli("invert", CHELSEA, "--encoder", "mobilenet_v2", "--layer", "block5")
    line = error_line(r)
    assert r.exit_code == 2 and "deepsim train --encoder mobilenet_v2 --layer block5 --data DIR" in line
