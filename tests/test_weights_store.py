"""The weights resolver (deepsim_cli.weights_store) and `deepsim weights download|path`: search order,
one-line errors, and downloads from a real HTTP server on 127.0.0.1 serving files from tmp_path."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from deepsim_cli import weights_store as store

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "weights"
SMALL = "lpips-alex-lin.safetensors"  # 6 KB, shipped


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty DEEPSIM_WEIGHTS folder (hides the checkout) and an empty user cache; returns the cache."""
    (tmp_path / "wdir").mkdir()
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(tmp_path / "wdir"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "deepsim" / "weights"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served; DEEPSIM_WEIGHTS_URL points at it and
    offline mode is lifted. Yields (folder, list of requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    monkeypatch.setenv("DEEPSIM_WEIGHTS_URL", f"http://127.0.0.1:{httpd.server_address[1]}/")
    monkeypatch.delenv("DEEPSIM_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        yield served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ------------------------------------------------------------------------------ search order

def test_search_order_explicit_env_checkout_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPSIM_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.checkout_dir() == WEIGHTS
    assert store.resolve(SMALL) == WEIGHTS / SMALL                       # the checkout
    assert store.resolve(SMALL, tmp_path / "given") == tmp_path / "given"  # explicit path wins, as given
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(env))
    assert store.search_dirs() == [env, tmp_path / "xdg" / "deepsim" / "weights"]  # replaces the checkout
    with pytest.raises(store.MissingWeights):
        store.resolve(SMALL)
    cache = store.cache_dir()
    cache.mkdir(parents=True)
    shutil.copy(WEIGHTS / SMALL, cache)
    assert store.resolve(SMALL) == cache / SMALL                         # then the cache
    shutil.copy(WEIGHTS / SMALL, env)
    assert store.resolve(SMALL) == env / SMALL                           # $DEEPSIM_WEIGHTS before the cache


def test_cache_default_is_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store.cache_dir() == tmp_path / ".cache" / "deepsim" / "weights"


def test_missing_file_is_one_line_naming_places_and_command(cache, cli, error_line):
    with pytest.raises(store.MissingWeights) as e:
        store.resolve("alexnet-fc6-generator.safetensors")
    msg = str(e.value)
    assert "\n" not in msg and "alexnet-fc6-generator.safetensors" in msg
    assert str(cache) in msg and "wdir" in msg
    assert "deepsim weights download alexnet-fc6-generator.safetensors" in msg
    r = cli("invert", str(REPO / "examples" / "images" / "chelsea.jpg"), "--layer", "fc6", "-o", str(cache / "x.png"))
    assert r.exit_code == 2
    assert "deepsim weights download" in error_line(r)
    r = cli("weights", "path", "alexnet-fc6-generator.safetensors")
    assert r.exit_code == 2 and "not found (searched" in error_line(r)


def test_weights_path_prints_the_resolved_file(cli, monkeypatch):
    monkeypatch.delenv("DEEPSIM_WEIGHTS", raising=False)
    r = cli("weights", "path", SMALL)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(WEIGHTS / SMALL)


def test_no_implicit_network_without_a_configured_url(cache, monkeypatch):
    """Not offline, but no DEEPSIM_WEIGHTS_URL: a missing file is an error, the network is not touched."""
    monkeypatch.delenv("DEEPSIM_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("DEEPSIM_WEIGHTS_URL", raising=False)

    def no_network(*a, **k):
        raise AssertionError("network contacted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(store.MissingWeights):
        store.resolve(SMALL)
    assert store.optional(SMALL) is None
    assert _left(cache) == []


def test_index_brings_its_shards():
    index = "alexnet-head-v2.safetensors.index.json"
    need = store.with_requirements([index])
    assert need[-1] == index
    assert set(need[:-1]) == {"alexnet-conv.safetensors", "alexnet-head-v2-00001-of-00002.safetensors",
                              "alexnet-head-v2-00002-of-00002.safetensors"}


# ------------------------------------------------------------------------------ downloads

def test_download_good_file_lands_in_cache_verified(cache, server, cli):
    served, requests = server
    shutil.copy(WEIGHTS / SMALL, served)
    r = cli("weights", "download", SMALL)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(cache / SMALL)
    assert requests == [f"/{SMALL}"]
    assert hashlib.sha256((cache / SMALL).read_bytes()).hexdigest() == store.entry(SMALL)["sha256"]
    assert _left(cache) == [SMALL]  # no temporary file left
    assert store.resolve(SMALL) == cache / SMALL
    r = cli("weights", "download", SMALL)  # already there and verified: not fetched again
    assert r.exit_code == 0 and len(requests) == 1


@pytest.mark.parametrize("fault", ["truncated", "wrong sha256", "not found"])
def test_bad_download_leaves_nothing(cache, server, cli, error_line, fault):
    served, requests = server
    data = (WEIGHTS / SMALL).read_bytes()
    if fault == "truncated":
        (served / SMALL).write_bytes(data[: len(data) // 2])
    elif fault == "wrong sha256":
        (served / SMALL).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit off
    r = cli("weights", "download", SMALL)
    assert r.exit_code == 1
    line = error_line(r)
    assert SMALL in line
    assert {"truncated": "incomplete", "wrong sha256": "does not match its sha256",
            "not found": "HTTP 404"}[fault] in line
    assert _left(cache) == []
    assert requests == [f"/{SMALL}"]


def test_offline_refuses_download_without_contacting_the_server(cache, server, cli, error_line, monkeypatch):
    served, requests = server
    shutil.copy(WEIGHTS / SMALL, served)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli("weights", "download", SMALL)
    assert r.exit_code == 1 and "offline" in error_line(r)
    with pytest.raises(store.MissingWeights):
        store.resolve(SMALL)  # no automatic download either
    assert requests == [] and _left(cache) == []


def test_configured_url_downloads_a_missing_file_on_first_use(cache, server):
    served, requests = server
    shutil.copy(WEIGHTS / SMALL, served)
    from deepsim_cli.checkpoint import load_checkpoint
    path = store.resolve(SMALL)
    assert path == cache / SMALL and requests == [f"/{SMALL}"]
    assert load_checkpoint(path).kind == "lpips_lin"


def test_unknown_name_is_a_usage_error(cache, cli, error_line):
    r = cli("weights", "download", "nope.safetensors")
    assert r.exit_code == 2 and "not a shipped weights file: nope.safetensors" in error_line(r)


def test_make_manifest_is_up_to_date():
    """The manifest is what tools/make_manifest.py writes from weights/ (sizes, sha256, kinds)."""
    p = subprocess.run([sys.executable, str(REPO / "tools" / "make_manifest.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_defaults_never_write_into_weights():
    """distill's default --out (and so its OUT.state.safetensors) is under runs/, not weights/
    (visualize --compute-bounds refusing shipped bounds: tests/test_visualize.py)."""
    import inspect

    from deepsim_cli.cli.distill import distill

    out = Path(inspect.signature(distill).parameters["out"].default)
    assert out.parts[0] == "runs" and "weights" not in out.parts


# ------------------------------------------------------------------------------ sharded AlexNet v1

V1 = "alexnet-head-v1.safetensors.index.json"


def _recorded_encoder_sha256() -> str:
    from deepsim_cli.checkpoint import read_metadata
    # the files still trained on head v1 (fc7 v2 is trained on head v2)
    shas = {read_metadata(WEIGHTS / f"alexnet-{l}-generator.safetensors")["encoder_sha256"] for l in ("fc6", "fc8")}
    shas |= {read_metadata(WEIGHTS / f"vae-{v}.safetensors")["encoder_sha256"] for v in ("deepsim", "se")}
    assert len(shas) == 1
    return shas.pop()


def test_every_shipped_generator_records_a_shipped_head():
    """What lets a command load the head a generator was trained on by itself (inference.trained_on)."""
    gens = {n: e for n, e in store.manifest()["files"].items() if e["kind"] in ("generator", "vae")}
    assert len(gens) >= 5, sorted(gens)
    for name, e in gens.items():
        assert store.encoder_file(e["encoder"], e["encoder_sha256"]) is not None, name


def test_no_shipped_file_over_95_mib():
    for name, e in store.manifest()["files"].items():
        assert e["bytes"] <= 95 * 2**20, name


def test_v1_shards_rebuild_the_single_alexnet_file_byte_for_byte(tmp_path):
    """alexnet-conv + the v1 head shards are exactly the former alexnet.safetensors: its sha256 (the one
    every fc generator and VAE records) comes back, and it is the identity the index declares."""
    out = store.rebuild_single_file(WEIGHTS / V1, tmp_path / "alexnet.safetensors")
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert sha == _recorded_encoder_sha256() == store.identity_sha256(WEIGHTS / V1)
    assert store.entry(V1)["identity_sha256"] == sha
    assert _left(tmp_path) == ["alexnet.safetensors"]


def test_default_alexnet_is_conv_plus_v1_head_and_keeps_its_identity():
    from deepsim_cli.encoders import build_encoder
    from deepsim_cli.inference import load_generator

    enc = build_encoder("alexnet")
    assert enc.weights_path == WEIGHTS / V1
    assert "fc8" in enc.trained_layers and enc.sha256 == _recorded_encoder_sha256()
    gen = load_generator(WEIGHTS / "alexnet-fc6-generator.safetensors", encoder=enc)  # the sha256 check passes
    assert gen.layer == "fc6"
    assert store.with_requirements([V1])[:-1] == sorted(store.entry(V1)["requires"])


def test_identity_needs_every_shard_hash(tmp_path):
    import json

    spec = json.loads((WEIGHTS / V1).read_text())
    del spec["metadata"]["shard_sha256"]["alexnet-head-v1-00002-of-00002.safetensors"]
    (tmp_path / V1).write_text(json.dumps(spec))
    assert store.identity_sha256(tmp_path / V1) is None
    assert store.identity_sha256(WEIGHTS / "alexnet-conv.safetensors") is None
