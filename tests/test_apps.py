"""The inference commands end to end (invert, reencode, interpolate, eval, neighbors) with a tiny
untrained generator saved in the shipped checkpoint format."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import cli_runner as _runner  # tests/ is on sys.path (no __init__.py)

from deepsim_cli.checkpoint import save_checkpoint
from deepsim_cli.cli import app
from deepsim_cli.encoders import build_encoder
from deepsim_cli.generators import generator_for

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"
CHELSEA = str(IMAGES / "chelsea.jpg")
COFFEE = str(IMAGES / "coffee.jpg")


def run(*args: str, **kw):
    return _runner().invoke(app, ["--device", "cpu", *args], **kw)


def error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def gen_file(tmp_path_factory) -> Path:
    """A tiny pool5 generator (32 px) for the alexnet encoder, in the shipped format."""
    torch.manual_seed(0)
    enc = build_encoder("alexnet")
    G = generator_for((256, 6, 6), out_size=32, width=0.125)
    path = tmp_path_factory.mktemp("gen") / "tiny-pool5.safetensors"
    save_checkpoint(path, G.state_dict(), kind="generator",
                    config={"generator": G.cfg.to_dict()}, encoder="alexnet", layer="pool5",
                    encoder_sha256=enc.sha256)
    return path


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))


def test_invert_one_image(gen_file, tmp_path):
    r = run("invert", CHELSEA, "--weights", str(gen_file))
    assert r.exit_code == 0, r.stderr
    out = Path(r.stdout.strip())
    assert out.name == "chelsea-pool5.png"
    assert Image.open(out).size == (32, 32)


def test_invert_folder_grid_json(gen_file, tmp_path):
    r = run("invert", str(IMAGES), "--weights", str(gen_file), "-o", "grid.png", "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["images"] == ["astronaut", "chelsea", "coffee", "rocket"]
    w, h = Image.open("grid.png").size
    assert w > 4 * 32 and h > 2 * 32  # 4 columns, input row + one reconstruction row


def test_invert_to_stdout_is_png(gen_file):
    r = run("invert", CHELSEA, "--weights", str(gen_file), "-o", "-")
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes.startswith(b"\x89PNG")


def test_invert_optimize_needs_no_generator(tmp_path):
    r = run("invert", CHELSEA, "--layer", "conv3", "--method", "optimize", "--steps", "2", "--size", "32",
            "-o", "opt.png")
    assert r.exit_code == 0, r.stderr
    assert Image.open("opt.png").size == (32, 32)


@pytest.mark.parametrize("args, needle", [
    (["invert", "missing.jpg"], "not found"),
    (["invert", CHELSEA, "--layer", "nope"], "unknown layer"),
    (["invert", CHELSEA, "--layer", "conv3"], "no shipped generator"),
    (["invert", CHELSEA, "-o", "out.bmpx"], "unsupported extension"),
])
def test_invert_bad_input_is_one_line_exit_2(gen_file, tmp_path, args, needle):
    if "--layer" not in args:
        args = args + ["--weights", str(gen_file)]
    r = run(*args)
    assert r.exit_code == 2
    assert needle in error_line(r)
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".png", ".bmpx")]


def test_generator_for_another_layer_is_refused(gen_file):
    r = run("invert", CHELSEA, "--layer", "conv5", "--weights", str(gen_file))
    assert r.exit_code == 2
    assert "inverts layer 'pool5'" in error_line(r)


def test_reencode_grid_gif_and_distances(gen_file):
    r = run("reencode", CHELSEA, "--weights", str(gen_file), "--iters", "3", "-o", "re.png", "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    d = info["feature_distance"][0]
    assert len(d) == 4 and d[0] == 0.0 and all(v > 0 for v in d[1:])
    frames = iio.imread(info["gif"], index=None)
    assert frames.shape[0] == 4  # input + 3 iterations
    assert Path("re.png").is_file()


def test_interpolate_strip_and_gif(gen_file):
    r = run("interpolate", CHELSEA, COFFEE, "--weights", str(gen_file), "--steps", "3", "-o", "mix.png",
            "--json")
    assert r.exit_code == 0, r.stderr
    frames = iio.imread(json.loads(r.stdout)["gif"], index=None)
    assert frames.shape[0] == 3
    assert frames.shape[1:3] == (32, 32)


def test_interpolate_endpoints_decode_the_endpoints(gen_file):
    from deepsim_cli.images import load_image
    from deepsim_cli.inference import interpolate, invert, load_generator

    enc = build_encoder("alexnet")
    gen = load_generator(gen_file, encoder=enc)
    a, b = load_image(CHELSEA, 32)[None], load_image(COFFEE, 32)[None]
    frames = interpolate(a, b, enc, gen, steps=4)
    assert torch.allclose(frames[0], invert(a, enc, gen)[0], atol=1e-5)
    assert torch.allclose(frames[-1], invert(b, enc, gen)[0], atol=1e-5)


def test_eval_table_json_and_csv(gen_file):
    r = run("eval", "--data", str(IMAGES), "--weights", str(gen_file), "--n", "4", "--csv", "per.csv",
            "--json", "--no-lpips")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [row["method"] for row in rows] == ["generator", "mean image", "32 px"]
    for row in rows:
        assert row["n"] == 4 and row["img_err"] >= 0 and 0 <= row["recognition"] <= 1
        assert row["method"] == "32 px" or np.isfinite(row["feat_err"])
    assert rows[1]["spread"] == pytest.approx(0.0, abs=1e-3)  # the mean image: one image for all
    assert rows[0]["img_err"] > 0
    # this test generator makes 32 px images: the 32 px reference is the original itself
    assert rows[2]["recognition"] == 1.0 and rows[2]["spread"] == pytest.approx(1.0, abs=1e-3)
    assert rows[0]["periodic"] > 0 and len(rows[0]["periodic_at"]) == 2 and rows[0]["periodic_photos"] > 0
    assert "periodic" not in rows[1]  # one image repeated: no set spectrum to speak of
    assert rows[2]["periodic"] == pytest.approx(rows[0]["periodic_photos"])  # the 32 px row is the original here
    lines = Path("per.csv").read_text().strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("image,layer,img_err,feat_err")


def test_neighbors_finds_the_image_itself(tmp_path):
    r = run("neighbors", CHELSEA, "--data", str(IMAGES), "--space", "image", "--k", "2", "--size", "32",
            "--json", "-o", "nn.png")
    assert r.exit_code == 0, r.stderr
    nn = json.loads(r.stdout)["results"][0]["neighbors"]
    assert len(nn) == 2
    assert nn[0]["image"].endswith("chelsea.jpg") and nn[0]["distance"] < 1e-3
    assert nn[1]["distance"] > nn[0]["distance"]
    assert Path("nn.png").is_file()


def test_neighbors_missing_data_exit_2():
    r = run("neighbors", CHELSEA, "--data", "nowhere/")
    assert r.exit_code == 2
    assert "not found" in error_line(r)


def _fc_generator_file(path: Path, layer: str, encoder_sha256: str) -> Path:
    g = generator_for((4096,) if layer != "fc8" else (1000,), 32, width=0.125, fc_dims=(16,))
    save_checkpoint(path, g.state_dict(), kind="generator", config={"generator": g.cfg.to_dict()},
                    encoder="alexnet", layer=layer, encoder_sha256=encoder_sha256)
    return path


def test_generator_trained_on_another_shipped_head_gets_that_head(tmp_path):
    """Without --encoder-weights, a generator trained on other shipped AlexNet weights (head v2
    while v1 is the default) is run with those weights: its codes record head v2's sha256. Naming
    other weights, or a generator whose weights do not ship, is one usage error."""
    from deepsim_cli import weights_store
    from deepsim_cli.codes import read_codes

    v2 = weights_store.entry("alexnet-head-v2.safetensors.index.json")["sha256"]
    v1_index = str(REPO / "weights" / "alexnet-head-v1.safetensors.index.json")
    gen = _fc_generator_file(tmp_path / "fc7-v2.safetensors", "fc7", v2)
    out, codes = tmp_path / "r.png", tmp_path / "c.safetensors"
    r = run("invert", CHELSEA, "--layer", "fc7", "--weights", str(gen), "-o", str(out), "--save-code", str(codes))
    assert r.exit_code == 0, r.stderr
    assert out.is_file() and read_codes(codes)[3] == {"fc7": v2}
    r = run("invert", CHELSEA, "--layer", "fc7", "--weights", str(gen), "--encoder-weights", v1_index,
            "-o", str(tmp_path / "r1.png"))
    assert r.exit_code == 2 and "trained on different alexnet weights" in error_line(r)
    other = _fc_generator_file(tmp_path / "fc7-x.safetensors", "fc7", "0" * 64)
    r = run("invert", CHELSEA, "--layer", "fc7", "--weights", str(other), "-o", str(tmp_path / "r2.png"))
    assert r.exit_code == 2 and "trained on different alexnet weights" in error_line(r)
    assert not (tmp_path / "r1.png").exists() and not (tmp_path / "r2.png").exists()


def test_codes_of_layers_from_different_heads_keep_each_sha(tmp_path):
    from types import SimpleNamespace

    from deepsim_cli.codes import read_codes, write_codes

    a, b = SimpleNamespace(name="alexnet", sha256="a" * 64), SimpleNamespace(name="alexnet", sha256="b" * 64)
    codes = {"fc6": torch.zeros(2, 4), "fc7": torch.ones(2, 4)}
    write_codes(tmp_path / "mixed.safetensors", codes, {"fc6": a, "fc7": b}, ["x", "y"])
    write_codes(tmp_path / "one.safetensors", codes, a, ["x", "y"])
    assert read_codes(tmp_path / "mixed.safetensors")[3] == {"fc6": "a" * 64, "fc7": "b" * 64}
    assert read_codes(tmp_path / "one.safetensors")[3] == {"fc6": "a" * 64, "fc7": "a" * 64}


def test_generator_for_other_encoder_weights_is_refused(tmp_path):
    """An fc generator records its encoder file's sha256; other weights are refused (fc layers
    differ between AlexNet heads), while a pool5 generator stays usable (the convs are shared)."""
    from deepsim_cli.errors import UsageError
    from deepsim_cli.inference import load_generator

    enc = build_encoder("alexnet")
    for layer, shape, refused in (("fc6", (4096,), True), ("pool5", (256, 6, 6), False)):
        g = generator_for(shape, 32, width=0.125, fc_dims=(16,))
        path = tmp_path / f"{layer}.safetensors"
        save_checkpoint(path, g.state_dict(), kind="generator", config={"generator": g.cfg.to_dict()},
                        encoder="alexnet", layer=layer, encoder_sha256="0" * 64)
        if refused:
            with pytest.raises(UsageError, match="trained on different alexnet weights"):
                load_generator(path, encoder=enc)
        else:
            assert load_generator(path, encoder=enc).layer == "pool5"


def test_one_grid_mixes_generators_of_two_heads_and_their_codes_decode(tmp_path, monkeypatch):
    """fc6 trained on head v1 (the default) and fc7 on head v2 in one `invert --layer fc6,fc7`:
    each layer runs on its own head, the code file records both, and decoding it warns of nothing."""
    from deepsim_cli import weights_store
    from deepsim_cli.codes import read_codes

    folder = tmp_path / "weights"
    folder.mkdir()
    for name in weights_store.with_requirements(["alexnet-head-v1.safetensors.index.json",
                                                 "alexnet-head-v2.safetensors.index.json"]):
        (folder / name).symlink_to(REPO / "weights" / name)
    v1 = weights_store.entry("alexnet-head-v1.safetensors.index.json")["identity_sha256"]
    v2 = weights_store.entry("alexnet-head-v2.safetensors.index.json")["sha256"]
    _fc_generator_file(folder / "alexnet-fc6-generator.safetensors", "fc6", v1)
    _fc_generator_file(folder / "alexnet-fc7-generator.safetensors", "fc7", v2)
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(folder))
    codes = tmp_path / "c.safetensors"
    r = run("invert", CHELSEA, COFFEE, "--layer", "fc6,fc7", "-o", str(tmp_path / "g.png"), "--save-code", str(codes))
    assert r.exit_code == 0, r.stderr
    assert read_codes(codes)[3] == {"fc6": v1, "fc7": v2}
    r = run("invert", "--code", str(codes), "-o", str(tmp_path / "again.png"))
    assert r.exit_code == 0 and "warning" not in r.stderr.lower(), r.stderr
