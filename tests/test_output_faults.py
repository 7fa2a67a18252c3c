"""Output-side faults and error style (issue 19, items 1, 4, 5, 6, 10, 13): a failed write (full disk,
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
from typer.testing import CliRunner

from deepsim_cli.cli import app

REPO = Path(__file__).resolve().parent.parent
CHELSEA = str(REPO / "examples" / "images" / "chelsea.jpg")
COFFEE = str(REPO / "examples" / "images" / "coffee.jpg")
POOL5 = REPO / "weights" / "alexnet-pool5-generator.safetensors"


def _runner() -> CliRunner:
    try:  # Click < 8.2 mixes stderr into stdout unless told otherwise
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def invoke(*args: str, env: dict | None = None):
    return _runner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def one_line(result, code: int, prefix: str = "error: ") -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(autouse=True)
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))
    w = tmp_path / "work"
    w.mkdir()
    monkeypatch.chdir(w)
    return w


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
