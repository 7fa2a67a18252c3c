"""DGN-AM: the optimiser on tiny random networks, class-name resolution, bounds, and the CLI
with a complete (random-head) AlexNet and a tiny fc6 generator in a temporary weights folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
import torchvision
from conftest import cli_runner as _runner  # tests/ is on sys.path (no __init__.py)

from deepsim_cli.checkpoint import load_checkpoint, save_checkpoint
from deepsim_cli.cli import app
from deepsim_cli.encoders import build_encoder
from deepsim_cli.errors import UsageError
from deepsim_cli.generators import generator_for
from deepsim_cli.visualize import (CodeBounds, compute_bounds, resolve_class, unit_activation,
                                   visualize)

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return generator_for((64,), 32, width=0.125, fc_dims=(32,)), build_encoder("alexnet-random")


def test_activation_rises(tiny):
    G, E = tiny
    # fp32: this random network's activations move by ~1e-6, below bf16's resolution
    r = visualize(G, E, "fc8", 3, code_shape=(64,), iters=5, lr=(8.0, 1e-10), precision="fp32")
    assert r.activation > r.history[0]
    assert r.image.shape == (3, 32, 32) and r.image.abs().max() <= 1


def test_bounds_clip_the_code(tiny):
    G, E = tiny
    b = CodeBounds(torch.zeros(64), torch.full((64,), 0.05))
    r = visualize(G, E, "fc8", 3, code_shape=(64,), iters=3, bounds=b)
    assert (r.code >= 0).all() and (r.code <= 0.05 + 1e-7).all()
    # the ascent pushes units to the bound; the last step (lr ≈ 0) only applies the L2 decay
    assert r.code.max() == pytest.approx(0.05 * 0.99, abs=1e-6)


def test_compute_bounds_is_zero_to_three_std():
    codes = torch.rand(200, 8) * torch.arange(1, 9)
    b = compute_bounds(codes)
    assert torch.equal(b.lo, torch.zeros(8))
    assert torch.allclose(b.hi, 3 * codes.std(0))


def test_conv_unit_at_centre_or_xy():
    f = torch.zeros(1, 4, 5, 7)
    f[0, 2, 2, 3] = 1.0
    f[0, 2, 0, 6] = 2.0
    assert float(unit_activation(f, 2)[0]) == 1.0
    assert float(unit_activation(f, 2, (6, 0))[0]) == 2.0
    with pytest.raises(UsageError):
        unit_activation(f, 9)
    with pytest.raises(UsageError):
        unit_activation(f, 1, (7, 0))


def test_resolve_class():
    assert resolve_class("bell pepper") == 945
    assert resolve_class("Bell Pepper") == 945
    assert resolve_class("goldfish") == 1
    with pytest.raises(UsageError, match="did you mean"):
        resolve_class("goldfsh")
    with pytest.raises(UsageError):
        resolve_class("zzzq")


# ---------------------------------------------------------------- CLI


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """A weights folder with a complete AlexNet (genuine convs, random head) and a tiny fc6 generator."""
    d = tmp_path / "weights"
    d.mkdir()
    for f in ("alexnet-conv.safetensors", "mobilenet_v2.safetensors", "lpips-alex-lin.safetensors"):
        shutil.copy(REPO / "weights" / f, d / f)
    torch.manual_seed(0)
    sd = torchvision.models.alexnet(weights=None).state_dict()
    sd.update(load_checkpoint(d / "alexnet-conv.safetensors").tensors)
    save_checkpoint(d / "alexnet.safetensors", sd, kind="encoder", encoder="alexnet")
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(d))
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    enc = build_encoder("alexnet")
    G = generator_for((4096,), 32, width=0.125, fc_dims=(16,))
    save_checkpoint(d / "alexnet-fc6-generator.safetensors", G.state_dict(), kind="generator",
                    config={"generator": G.cfg.to_dict()}, encoder="alexnet", layer="fc6",
                    encoder_sha256=enc.sha256)
    return d


def test_cli_needs_bounds_then_computes_them(weights_dir):
    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--unit", "1", "--iters", "2"])
    assert r.exit_code == 2 and "compute-bounds" in r.stderr
    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--compute-bounds", "--force", "--data", str(IMAGES)])
    assert r.exit_code == 0, r.stderr
    assert Path(r.stdout.strip()) == weights_dir / "alexnet-fc6-generator.bounds.safetensors"


def test_cli_bounds_from_several_sources_cover_them_all(weights_dir, tmp_path):
    """Repeated --data: the bounds are those of the union of the sources' codes."""
    from deepsim_cli.data import load_array, to_float

    extra = tmp_path / "extra"
    extra.mkdir()
    src = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".png"))[0]
    iio.imwrite(extra / "noise.png", torch.randint(0, 256, (96, 96, 3), dtype=torch.uint8,
                                                     generator=torch.Generator().manual_seed(0)).numpy())
    shutil.copy(src, extra / src.name)
    r = _runner().invoke(app, ["--device", "cpu", "--precision", "fp32", "visualize", "--compute-bounds", "--force", "--force",
                               "--data", str(IMAGES), "--data", str(extra)])
    assert r.exit_code == 0, r.stderr
    got = CodeBounds.load(weights_dir / "alexnet-fc6-generator.bounds.safetensors")
    arr, _ = load_array([str(IMAGES), str(extra)], 32)
    assert len(arr) == len(load_array(str(IMAGES), 32)[0]) + 2
    with torch.no_grad():
        want = compute_bounds(build_encoder("alexnet")(to_float(torch.from_numpy(arr)), ["fc6"])["fc6"])
    torch.testing.assert_close(got.hi, want.hi)
    torch.testing.assert_close(got.lo, want.lo)


def test_cli_grid_gif_and_json(weights_dir):
    _runner().invoke(app, ["--device", "cpu", "visualize", "--compute-bounds", "--force", "--data", str(IMAGES)])
    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--class", "bell pepper", "--unit", "1",
                               "--iters", "3", "--seeds", "0,1", "--save-every", "1", "-o", "v.png", "--json"])
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert [(x["unit"], x["seed"]) for x in info["results"]] == [(1, 0), (1, 1), (945, 0), (945, 1)]
    assert all(0 <= x["prob"] <= 1 for x in info["results"])
    assert Path("v.png").is_file()
    assert iio.imread(info["gif"], index=None).shape[0] >= 4
    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--unit", "1", "--iters", "2", "--jitter", "3",
                               "--views", "2", "-o", "j.png", "--json"])
    assert r.exit_code == 0, r.stderr
    assert Path("j.png").is_file() and len(json.loads(r.stdout)["results"]) == 1
    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--unit", "1", "--views", "0", "-o", "bad.png"])
    assert r.exit_code == 2 and not Path("bad.png").exists()


def test_cli_bad_class_is_one_line(weights_dir):
    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--class", "zzzq", "--no-bounds"])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "zzzq" in lines[0]


def test_cli_without_fc6_generator_says_so(tmp_path, monkeypatch):
    """A weights folder without the fc6 generator (the shipped one has it): one clean line."""
    from deepsim_cli.encoders import weights_dir as shipped

    w = tmp_path / "weights"
    w.mkdir()
    for f in ("alexnet-head-v1.safetensors.index.json", "alexnet-head-v1-00001-of-00002.safetensors",
              "alexnet-head-v1-00002-of-00002.safetensors", "alexnet-conv.safetensors", "mobilenet_v2.safetensors"):
        (w / f).symlink_to(shipped() / f)
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(w))
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))
    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--unit", "1"])
    assert r.exit_code == 2
    assert "fc6" in r.stderr and "Traceback" not in r.stderr


class _LinearTarget:
    """A well-conditioned stand-in target (the random AlexNet's fc8 gradients are ~1e-8, so float
    rounding alone changes the normalised steps and a batch-vs-single comparison is meaningless)."""

    def __init__(self):
        self.w = torch.nn.Linear(3 * 32 * 32, 10)

    def check_layers(self, layers):
        pass

    def __call__(self, x, layers):
        return {"fc8": self.w(x.flatten(1))}


def test_batched_runs_match_single_runs(tiny):
    """visualize_many: each (unit, seed) run in the batch behaves as if alone."""
    from deepsim_cli.visualize import visualize_many

    G, _ = tiny
    E = _LinearTarget()
    many = visualize_many(G, E, "fc8", [3, 7], seeds=[0, 1], code_shape=(64,), iters=4)
    for (u, s), r in zip([(3, 0), (7, 1)], many):
        alone = visualize(G, E, "fc8", u, code_shape=(64,), iters=4, seed=s)
        assert torch.allclose(r.code, alone.code, rtol=1e-3, atol=1e-4)
        assert r.activation == pytest.approx(alone.activation, rel=1e-3)
    assert not torch.allclose(many[0].code, many[1].code)
    with pytest.raises(UsageError, match="pair up"):
        visualize_many(G, E, "fc8", [1, 2, 3], seeds=[0, 1], code_shape=(64,), iters=1)


def test_logprob_objective_raises_the_class_probability(tiny):
    """--objective logprob: the unit's softmax probability rises over a few steps (the raw
    activation objective is not asked to do that); a conv map or an unknown objective is refused."""
    G, _ = tiny
    E = _LinearTarget()
    r = visualize(G, E, "fc8", 3, code_shape=(64,), iters=6, objective="logprob")
    with torch.no_grad():
        p0 = E(G(visualize(G, E, "fc8", 3, code_shape=(64,), iters=0).code), ["fc8"])["fc8"].softmax(1)[0, 3]
        p1 = E(G(r.code), ["fc8"])["fc8"].softmax(1)[0, 3]
    assert p1 > p0
    with pytest.raises(UsageError, match="objective"):
        visualize(G, E, "fc8", 3, code_shape=(64,), iters=1, objective="prob")
    _, conv = tiny
    with pytest.raises(UsageError, match="classifier layer"):
        visualize(G, conv, "conv5", 3, code_shape=(64,), iters=1, objective="logprob")


def test_jitter_views_are_shifted_flipped_copies():
    """jitter_views: view-major stack of copies, each a ±J shift (reflect padded) of its own
    image, possibly mirrored; no jitter and one view is the input itself."""
    from deepsim_cli.visualize import jitter_views

    x = torch.rand(2, 3, 16, 16)
    assert jitter_views(x, 1, 0, torch.Generator()) is x
    v = jitter_views(x, 3, 2, torch.Generator().manual_seed(0))
    assert v.shape == (6, 3, 16, 16)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for row in range(6):
        k = row % 2
        cands = [c for dy in range(5) for dx in range(5)
                 for c in (xp[k, :, dy:dy + 16, dx:dx + 16], xp[k, :, dy:dy + 16, dx:dx + 16].flip(-1))]
        assert any(torch.equal(v[row], c) for c in cands)
    assert not all(torch.equal(v[r], x[r % 2]) for r in range(6))


def test_jittered_ascent_raises_the_activation_and_refuses_bad_options(tiny):
    G, _ = tiny
    E = _LinearTarget()
    r = visualize(G, E, "fc8", 3, code_shape=(64,), iters=6, jitter=3, views=4)
    assert len(r.history) == 6 and r.activation > r.history[0]
    with pytest.raises(UsageError, match="views"):
        visualize(G, E, "fc8", 3, code_shape=(64,), iters=1, views=0)


def test_pre_activation_is_the_relu_input():
    E = build_encoder("alexnet-random")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        pre = E(x, ["conv2", "fc8"], pre_activation=True)
        post = E(x, ["conv2", "fc8"])
    assert (pre["conv2"] < 0).any() and torch.equal(pre["conv2"].clamp_min(0), post["conv2"])
    assert torch.equal(pre["fc8"], post["fc8"])  # fc8 has no ReLU


def test_a_hidden_unit_that_is_off_at_the_start_still_gets_a_gradient(tiny):
    G, E = tiny
    h0 = torch.randn(64, generator=torch.Generator().manual_seed(0)).abs() * 0.1
    with torch.no_grad():
        pre = E(G(h0[None]), ["conv3"], pre_activation=True)["conv3"][0, :, 6, 6]
    unit = int(pre.argmin())  # off at the start: post-ReLU 0, no gradient through the ReLU
    assert pre[unit] < 0
    r = visualize(G, E, "conv3", unit, code_shape=(64,), iters=10, lr=(8.0, 1e-10), precision="fp32")
    assert r.history[-1] > r.history[0]  # the pre-activation rises from the default start


def test_cli_class_needs_a_classifier_layer(weights_dir):
    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--layer", "fc7", "--class", "bell pepper"])
    assert r.exit_code == 2 and "--class names an ImageNet class" in r.stderr


def test_compute_bounds_does_not_replace_shipped_bounds_without_force(weights_dir):
    bounds = weights_dir / "alexnet-fc6-generator.bounds.safetensors"
    _runner().invoke(app, ["--device", "cpu", "visualize", "--compute-bounds", "--force", "--data", str(IMAGES)])
    before = bounds.read_bytes()
    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--compute-bounds", "--data", str(IMAGES)])
    assert r.exit_code == 2 and "--force" in r.stderr
    assert bounds.read_bytes() == before


def test_cli_save_code_then_invert_decodes_it(weights_dir):
    """visualize --save-code keeps the optimised codes; invert --code turns them back into the images."""
    import numpy as np
    from PIL import Image

    r = _runner().invoke(app, ["--device", "cpu", "visualize", "--unit", "1", "--iters", "3", "--seeds", "0,1",
                               "--no-bounds", "-o", "v.png", "--save-code", "v.safetensors", "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["code"] == "v.safetensors"
    ck = load_checkpoint("v.safetensors", kind="code")
    assert ck.layer == "fc6" and tuple(ck.tensors["fc6"].shape) == (2, 4096)
    r = _runner().invoke(app, ["--device", "cpu", "invert", "--code", "v.safetensors", "-o", "again.png"])
    assert r.exit_code == 0, r.stderr
    grid, again = np.asarray(Image.open("v.png")), np.asarray(Image.open("again.png"))
    assert grid.shape[1] == again.shape[1]  # two cells side by side: the same codes, the same images
    assert np.abs(grid[:32].astype(int) - again[:32].astype(int)).mean() < 2


def test_one_optimiser_for_codes_and_pixels():
    """ascend() is DGN-AM's optimiser for any parameterisation: through G (CodeParam, bounds
    projected) and on the pixels (PixelParam, kept in [-1, 1]); custom objectives and transform
    lists plug in; the score it reports rises for both."""
    from deepsim_cli.visualize import (CodeParam, PixelParam, apply_views, ascend, jitter, random_flip,
                                       unit_objective)

    torch.manual_seed(0)
    E = _LinearTarget()
    x0 = torch.rand(2, 3, 32, 32) * 0.1
    px = ascend(PixelParam(x0), E, "fc8", unit_objective([3, 5]), iters=8, lr=(0.05, 1e-4), precision="fp32")
    assert px.images.shape == (2, 3, 32, 32) and px.images.abs().max() <= 1
    assert all(px.history[-1][k] > px.history[0][k] for k in range(2))
    G = torch.nn.Sequential(torch.nn.Linear(64, 3 * 32 * 32), torch.nn.Unflatten(1, (3, 32, 32)))  # well-conditioned
    b = CodeBounds(torch.zeros(64), torch.full((64,), 0.5))
    param = CodeParam(G, torch.rand(2, 64) * 0.1, b)
    code = ascend(param, E, "fc8", unit_objective([3, 3]), iters=8, precision="fp32")
    assert (code.params >= 0).all() and (code.params <= 0.5).all()
    with torch.no_grad():
        before, after = (E(G(h), ["fc8"])["fc8"][:, 3] for h in (param.start, code.params))
    assert (after > before).all()
    # with a transform list each step scores `views` transformed copies (a random linear target
    # has no shift invariance, so only the mechanics are checked here)
    seen = []
    jit = ascend(param, lambda x, layers: (seen.append(x.shape[0]), E(x, layers))[1], "fc8", unit_objective([3, 3]),
                 iters=3, transforms=[jitter(2), random_flip], views=3, precision="fp32")
    assert seen == [6, 6, 6] and len(jit.history) == 3 and (jit.params <= 0.5).all()
    # a custom objective: minimise unit 3 (its negation rises)
    down = ascend(PixelParam(x0), E, "fc8", lambda f: -f[:, 3], iters=8, lr=(0.05, 1e-4), precision="fp32")
    assert down.history[-1][0] > down.history[0][0]
    # transforms compose in order, view-major
    v = apply_views(torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 4, 4), 3, [lambda t, g: t + 10],
                    torch.Generator())
    assert v.shape == (6, 3, 4, 4) and v[:, 0, 0, 0].tolist() == [10, 11, 10, 11, 10, 11]


def test_unit_objective_logprob_and_range():
    from deepsim_cli.visualize import unit_objective
    f = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert unit_objective([2, 0])(f).tolist() == [3.0, 0.0]
    assert torch.allclose(unit_objective([2, 0], logprob=True)(f), torch.stack([f[0].log_softmax(0)[2],
                                                                                f[1].log_softmax(0)[0]]))
    with pytest.raises(UsageError, match="out of range"):
        unit_objective([7])(f[:1])
    with pytest.raises(UsageError, match="classifier layer"):
        unit_objective([0], logprob=True)(torch.zeros(1, 3, 2, 2))


def test_check_runs_refuses_divergence_and_warns_on_dead_hidden_units():
    from deepsim_cli.errors import DeepsimError
    from deepsim_cli.visualize import VisResult, check_runs

    def run(a):
        return VisResult(image=torch.zeros(3, 4, 4), code=torch.zeros(4), activation=a)

    pairs = [(3, 0), (7, 1)]
    assert check_runs([run(1.0), run(0.5)], pairs, "fc6") is None
    w = check_runs([run(1.0), run(0.0)], pairs, "conv5")
    assert w.startswith("warning: 1 run(s) ended with the unit off") and "unit 7 seed 1" in w
    assert check_runs([run(-2.0), run(-1.0)], pairs, "fc8") is None  # class scores may be negative
    assert check_runs([run(-2.0), run(-1.0)], pairs, "logits") is None
    for bad in (float("nan"), float("inf")):
        with pytest.raises(DeepsimError, match="diverged"):
            check_runs([run(1.0), run(bad)], pairs, "fc8")


def test_parse_layers_drops_repeats_and_refuses_several_with_weights():
    from deepsim_cli.cli._common import parse_layers

    assert parse_layers("pool5, FC6,pool5") == ["pool5", "fc6"]
    assert parse_layers("fc6", Path("g.safetensors")) == ["fc6"]
    with pytest.raises(UsageError, match="names one generator"):
        parse_layers("pool5,fc6", Path("g.safetensors"))
    with pytest.raises(UsageError, match="at least one"):
        parse_layers(" , ")
