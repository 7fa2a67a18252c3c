"""Refinement through the generator (deepsim_cli.refine, `--refine N`): it lowers the feature
loss, 0 steps is plain inversion, it is deterministic, and it reaches invert / reencode /
interpolate / eval. A tiny random generator on the real AlexNet keeps it fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepsim_cli.encoders import build_encoder
from deepsim_cli.images import load_image
from deepsim_cli.inference import interpolate, invert, load_generator, reencode
from deepsim_cli.refine import default_also, refine

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"
CHELSEA = str(IMAGES / "chelsea.jpg")
COFFEE = str(IMAGES / "coffee.jpg")


@pytest.fixture(scope="module")
def enc():
    return build_encoder("alexnet")


@pytest.fixture(scope="module")
def gen(tiny_gen_file, enc):
    return load_generator(tiny_gen_file, encoder=enc)


@pytest.fixture(scope="module")
def x():
    return torch.stack([load_image(CHELSEA, 32), load_image(COFFEE, 32)])


def _feature_loss(img, x, enc):
    with torch.no_grad():
        f, t = enc(img, ["pool5"])["pool5"], enc(x, ["pool5"])["pool5"]
    return ((f - t).flatten(1).pow(2).mean(1) / t.flatten(1).pow(2).mean(1)).mean().item()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_refinement_lowers_the_feature_loss_in_5_steps(enc, gen, x, precision):
    # this random generator draws nearly flat images (std 0.03): a large step shows the descent
    r = refine(x, enc, gen, 5, lr=5.0, also=(), precision=precision)
    assert len(r.losses) == 5 and r.losses[-1] < r.losses[0]
    before = _feature_loss(invert(x, enc, gen, precision="fp32"), x, enc)
    after = _feature_loss(r.images, x, enc)
    assert after < 0.97 * before, (before, after)
    assert r.images.shape == (2, 3, 32, 32) and r.images.abs().max() <= 1
    assert (r.codes >= 0).all()  # pool5 is a ReLU layer: the code stays non-negative


def test_zero_steps_is_plain_inversion_bit_for_bit(enc, gen, x):
    for p in ("fp32", "bf16"):
        assert torch.equal(refine(x, enc, gen, 0, precision=p).images, invert(x, enc, gen, precision=p))


def test_refinement_is_deterministic_and_independent_of_the_batch(enc, gen, x):
    a = refine(x, enc, gen, 3, precision="fp32")
    b = refine(x, enc, gen, 3, precision="fp32")
    assert torch.equal(a.images, b.images)
    one = refine(x[:1], enc, gen, 3, precision="fp32", batch=1)
    assert torch.allclose(one.images[0], a.images[0], atol=1e-4)


def test_features_in_images_out_and_further_layers(enc, gen, x):
    with torch.no_grad():
        y = enc(x, ["pool5"])["pool5"]
    r = refine(y, enc, gen, 2, precision="fp32")   # features: only pool5 can be matched
    assert r.images.shape == (2, 3, 32, 32)
    assert default_also(enc, "pool5") == ("conv3",) and default_also(enc, "conv2") == ()
    from deepsim_cli.errors import UsageError
    with pytest.raises(UsageError, match="needs the images"):
        refine(y, enc, gen, 2, also=["conv3"])
    with pytest.raises(UsageError):
        refine(x, enc, gen, 2, also=["conv9"])


def test_anchor_keeps_the_image_nearer_the_first_guess(enc, gen, x):
    first = invert(x, enc, gen, precision="fp32")
    free = refine(x, enc, gen, 5, lr=5.0, precision="fp32").images
    held = refine(x, enc, gen, 5, lr=5.0, anchor=100.0, precision="fp32").images
    assert (held - first).pow(2).mean() < (free - first).pow(2).mean()


def test_reencode_and_interpolate_take_refinement(enc, gen, x):
    plain = reencode(x[:1], enc, gen, 2, precision="fp32")
    refined = reencode(x[:1], enc, gen, 2, precision="fp32", refine_steps=3)
    assert len(refined.images) == 3 and not torch.equal(plain.images[1], refined.images[1])
    assert refined.feature_distance[1][0] < plain.feature_distance[1][0]
    frames = interpolate(x[:1], x[1:], enc, gen, steps=3, precision="fp32", refine_steps=2)
    assert frames.shape == (3, 3, 32, 32)


def test_cli_refine(cli, tiny_gen_file, in_tmp):
    gen_file = tiny_gen_file
    r = cli("invert", CHELSEA, "--weights", str(gen_file), "--refine", "3", "--json", "-o", "r.png")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["refine"] == 3 and Path("r.png").exists()
    r = cli("invert", CHELSEA, "--weights", str(gen_file), "--method", "optimize", "--init", "generator",
             "--steps", "3", "-o", "o.png")
    assert r.exit_code == 0, r.stderr
    r = cli("invert", CHELSEA, "--method", "optimize", "--refine", "3")
    assert r.exit_code == 2 and "--refine" in r.stderr
    r = cli("eval", "--data", str(IMAGES), "--weights", str(gen_file), "--n", "3", "--no-lpips", "--no-judge",
             "--refine", "2", "--json")
    assert r.exit_code == 0, r.stderr
    rows = {row["method"]: row for row in json.loads(r.stdout)["rows"]}
    assert rows["generator + refine 2"]["feat_err"] < rows["generator"]["feat_err"]
    r = cli("eval", "--data", str(IMAGES), "--weights", str(gen_file), "--refine", "ten")
    assert r.exit_code == 2 and "--refine" in r.stderr


def test_one_cosine_schedule_for_every_optimiser():
    import torch

    from deepsim_cli.utils import cosine_lr, set_lr
    assert cosine_lr(0.2, 0, 30) == 0.2 and cosine_lr(0.2, 30, 30) == 0.0 and cosine_lr(0.2, 45, 30) == 0.0
    assert abs(cosine_lr(1.0, 15, 30) - 0.5) < 1e-12 and abs(cosine_lr(1.0, 0.5) - 0.5) < 1e-12
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    set_lr(opt, 0.25)
    assert [pg["lr"] for pg in opt.param_groups] == [0.25]
