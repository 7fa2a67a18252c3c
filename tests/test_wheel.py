"""A built wheel installed outside the checkout works: the manifest travels as
package data, the weights come from $DEEPSIM_WEIGHTS or from the user cache filled by
`deepsim weights download` (from a local HTTP server), and `deepsim invert` runs from another folder."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHELSEA = REPO / "examples" / "images" / "chelsea.jpg"


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.mark.slow
def test_wheel_outside_the_checkout_runs_invert(tmp_path):
    # build from a copy of the sources, so the working tree gets no build/ folder
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src)
    shutil.copytree(REPO / "deepsim_cli", src / "deepsim_cli", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, src])
    (wheel,) = wheels.glob("deepsim_cli-*.whl")

    # a fresh venv that sees this environment's packages (torch …) but installs deepsim-cli itself
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    vpy = venv / "bin" / "python"
    site = Path(_run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "outer-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # .venv's packages, after ours
    _run([sys.executable, "-m", "pip", "--python", vpy, "install", "-q", "--no-deps", "--no-index", wheel]
         if _pip_has_python_option() else [vpy, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    deepsim = venv / "bin" / "deepsim"
    assert deepsim.is_file()

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPSIM_WEIGHTS", "PYTHONPATH", "DEEPSIM_WEIGHTS_URL")}
    env.update(DEEPSIM_CACHE=str(tmp_path / "imgcache"), XDG_CACHE_HOME=str(tmp_path / "xdg"), DEEPSIM_OFFLINE="1")
    where = _run([vpy, "-c", "import deepsim_cli, deepsim_cli.weights_store as s; "
                             "print(deepsim_cli.__file__); print(s.checkout_dir()); print(len(s.names()))"],
                 cwd=work, env=env).stdout.split()
    assert where[0].startswith(str(site)), where  # the wheel's copy, not the checkout's
    assert where[1] == "None" and int(where[2]) >= 10  # no checkout; the manifest is package data

    # no weights anywhere: one line that says how to fetch them
    p = subprocess.run([deepsim, "--device", "cpu", "invert", CHELSEA, "--layer", "pool5"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "deepsim weights download" in p.stderr, p.stderr

    # 1. DEEPSIM_WEIGHTS pointing at the checkout's weights/
    _run([deepsim, "--device", "cpu", "invert", CHELSEA, "--layer", "pool5", "-o", "a.png"], cwd=work,
         env={**env, "DEEPSIM_WEIGHTS": str(REPO / "weights")})
    assert (work / "a.png").stat().st_size > 1000

    # 2. the user cache filled by `deepsim weights download` from a local server
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(REPO / "weights")))
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        online = {**env, "DEEPSIM_WEIGHTS_URL": f"http://127.0.0.1:{httpd.server_address[1]}/"}
        online.pop("DEEPSIM_OFFLINE")
        got = _run([deepsim, "weights", "download", "alexnet-conv.safetensors", "alexnet-pool5-generator.safetensors"],
                   cwd=work, env=online).stdout.split()
    finally:
        httpd.shutdown()
        httpd.server_close()
    cache = tmp_path / "xdg" / "deepsim" / "weights"
    assert got == [str(cache / "alexnet-conv.safetensors"), str(cache / "alexnet-pool5-generator.safetensors")]
    _run([deepsim, "--device", "cpu", "invert", CHELSEA, "--layer", "pool5", "-o", "b.png"], cwd=work, env=env)
    assert (work / "b.png").stat().st_size > 1000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@functools.lru_cache(maxsize=1)
def _pip_has_python_option() -> bool:  # pip >= 22.3: install into another environment without its own pip
    p = subprocess.run([sys.executable, "-m", "pip", "--python", sys.executable, "--version"],
                       capture_output=True, text=True)
    return p.returncode == 0
