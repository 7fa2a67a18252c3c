"""Tests for deepsim_cli.encoders: layer taps, early stop, gradients, shipped weights, registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from deepsim_cli.encoders import (
    ALEXNET_CONV_LAYERS,
    EncoderSpec,
    build_encoder,
    encoder_names,
    weights_dir,
)
from deepsim_cli.errors import UsageError
from deepsim_cli.images import load_image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"

ALEXNET_SHAPES = {
    "conv1": (64, 55, 55), "conv2": (192, 27, 27), "conv3": (384, 13, 13), "conv4": (256, 13, 13),
    "conv5": (256, 13, 13), "pool5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
    "prob": (1000,),
}


@pytest.fixture(scope="module")
def alexnet():
    if not (weights_dir() / "alexnet-conv.safetensors").is_file():
        pytest.fail(f"no AlexNet weights in {weights_dir()}")
    return build_encoder("alexnet")


@pytest.fixture(scope="module")
def alexnet_random():
    return build_encoder("alexnet-random")


@pytest.fixture(scope="module")
def mobilenet():
    return build_encoder("mobilenet_v2")


def _x(n=2, size=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("size", [224, 128])
def test_alexnet_layer_shapes(alexnet_random, size):
    # random weights: the shapes are the architecture's; inputs of any size are resized to 224
    feats = alexnet_random(_x(2, size), list(ALEXNET_SHAPES))
    assert set(feats) == set(ALEXNET_SHAPES)
    for k, shape in ALEXNET_SHAPES.items():
        assert tuple(feats[k].shape) == (2, *shape), k
        assert torch.isfinite(feats[k]).all(), k
    torch.testing.assert_close(feats["prob"].sum(1), torch.ones(2))
    assert (feats["prob"] >= 0).all()
    torch.testing.assert_close(feats["prob"], feats["fc8"].softmax(1))
    assert (feats["conv1"] >= 0).all() and (feats["fc6"] >= 0).all()  # post-ReLU taps
    assert alexnet_random.layer_shapes(size) == ALEXNET_SHAPES


def test_shipped_alexnet_conv_shapes(alexnet):
    feats = alexnet(_x(1, 128), list(ALEXNET_CONV_LAYERS))
    for k in ALEXNET_CONV_LAYERS:
        assert tuple(feats[k].shape[1:]) == ALEXNET_SHAPES[k]
    assert alexnet.layer_shapes() == ALEXNET_SHAPES


def test_unknown_layer_lists_valid_names(alexnet_random):
    with pytest.raises(UsageError) as e:
        alexnet_random(_x(1), ["conv9"])
    msg = str(e.value)
    assert "conv9" in msg and "\n" not in msg
    for name in ALEXNET_SHAPES:
        assert name in msg


def test_shipped_alexnet_is_complete(alexnet):
    """The complete AlexNet ships (genuine convs in alexnet-conv.safetensors + the distilled head v1
    shards, joined by alexnet-head-v1.safetensors.index.json): every layer is usable."""
    full = weights_dir() / "alexnet-head-v1.safetensors.index.json"
    assert set(alexnet.trained_layers) == set(ALEXNET_SHAPES)
    assert alexnet.weights_path == full
    feats = alexnet(_x(1), ["fc6", "fc8", "prob"])
    assert feats["fc8"].shape == (1, 1000)
    assert alexnet(_x(1), ["pool5"])["pool5"].shape == (1, 256, 6, 6)


def test_fc_layers_need_trained_weights(tmp_path, monkeypatch):
    """With only the conv file (no distilled head), fc layers are refused with a clean error."""
    import shutil

    shutil.copy(weights_dir() / "alexnet-conv.safetensors", tmp_path)
    monkeypatch.setenv("DEEPSIM_WEIGHTS", str(tmp_path))
    conv_only = build_encoder("alexnet")
    assert tuple(conv_only.trained_layers) == ALEXNET_CONV_LAYERS
    assert conv_only.weights_path.name == "alexnet-conv.safetensors"
    for layer in ("fc6", "fc7", "fc8", "prob"):
        with pytest.raises(UsageError, match="no trained weights"):
            conv_only(_x(1), [layer])
    # explicitly asking for untrained layers is allowed (layer_shapes does it)
    assert conv_only(_x(1), ["fc6"], trained_only=False)["fc6"].shape == (1, 4096)
    assert conv_only(_x(1), ["pool5"])["pool5"].shape == (1, 256, 6, 6)


def test_shipped_alexnet_convs_are_not_random(alexnet, alexnet_random):
    w = alexnet.model.features[0].weight
    assert not torch.equal(w, alexnet_random.model.features[0].weight)
    # torchvision IMAGENET1K_V1 conv1: Gabor-like filters with a known scale
    assert 0.05 < float(w.std()) < 0.3
    assert len(alexnet.sha256) == 64


# ---------------------------------------------------------------------------------- forward


def test_one_forward_returns_several_layers(alexnet_random):
    calls = []
    h = alexnet_random.model.features.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        feats = alexnet_random(_x(2), ["conv2", "pool5", "conv1"])
    finally:
        h.remove()
    assert len(calls) == 1
    assert list(feats) == ["conv2", "pool5", "conv1"]  # in the order asked for
    # and each equals what a single-layer request gives
    torch.testing.assert_close(feats["conv2"], alexnet_random(_x(2), "conv2")["conv2"])


def test_early_stop(alexnet_random):
    called = {"classifier": 0, "conv2": 0, "features.0": 0}
    hs = [
        alexnet_random.model.classifier.register_forward_pre_hook(
            lambda *_: called.__setitem__("classifier", called["classifier"] + 1)),
        alexnet_random.model.features[3].register_forward_hook(
            lambda *_: called.__setitem__("conv2", called["conv2"] + 1)),
        alexnet_random.model.features[0].register_forward_hook(
            lambda *_: called.__setitem__("features.0", called["features.0"] + 1)),
    ]
    try:
        alexnet_random(_x(1), ["conv1"])
        assert called == {"classifier": 0, "conv2": 0, "features.0": 1}
        alexnet_random(_x(1), ["pool5"])
        assert called["classifier"] == 0 and called["conv2"] == 1
        alexnet_random(_x(1), ["fc6"])
        assert called["classifier"] == 1
    finally:
        for h in hs:
            h.remove()
    # no hooks of the encoder's own are left behind
    for m in alexnet_random.model.modules():
        assert not m._forward_hooks


def test_gradients_flow_to_input(alexnet_random):
    x = _x(2).requires_grad_(True)
    y = alexnet_random(x, ["pool5"])["pool5"]
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    # through the internal resize too
    x2 = _x(1, 96).requires_grad_(True)
    alexnet_random(x2, ["conv3"])["conv3"].sum().backward()
    assert x2.grad.abs().sum() > 0


def test_encoder_is_frozen(alexnet_random):
    assert not any(p.requires_grad for p in alexnet_random.parameters())
    alexnet_random.train()
    assert not alexnet_random.training and not alexnet_random.model.training


def test_input_range_normalisation_is_internal(alexnet_random):
    # a mid-grey [-1, 1] image is 0.5 before ImageNet normalisation
    x = torch.zeros(1, 3, 224, 224)
    pre = alexnet_random.preprocess(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(pre, ((0.5 - mean) / std).expand_as(pre))


def test_alexnet_random_is_deterministic_and_keeps_global_rng():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_encoder("alexnet-random")
    after = torch.rand(3)
    b = build_encoder("alexnet-random")
    assert torch.equal(before, after)  # building it does not consume the caller's RNG
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.sha256 == ""


# ---------------------------------------------------------------------------------- MobileNetV2 teacher


def test_mobilenet_classifies_sample_photos(mobilenet):
    x = torch.stack([load_image(EXAMPLES / "chelsea.jpg", 224), load_image(EXAMPLES / "coffee.jpg", 224)])
    with torch.no_grad():
        prob = mobilenet(x, ["prob"])["prob"]
    assert prob.shape == (2, 1000)
    top5 = prob.topk(5, dim=1).indices.tolist()
    assert int(prob[0].argmax()) in range(281, 286), top5[0]  # tabby / tiger cat / Persian / ... cats
    assert {967, 968} & set(top5[1]), top5[1]  # espresso / cup
    assert prob[0, 281:286].sum() > 0.5


def test_mobilenet_layers(mobilenet):
    shapes = mobilenet.layer_shapes()
    assert shapes["logits"] == (1000,) and shapes["prob"] == (1000,)
    assert shapes["conv18"] == (1280, 7, 7)
    assert shapes["stem"] == (32, 112, 112)
    assert len(mobilenet.sha256) == 64


# ---------------------------------------------------------------------------------- registry / torchvision


_BUILT: dict = {}


def _registered(name):
    if name not in _BUILT:
        _BUILT[name] = build_encoder(name)
    return _BUILT[name]


@pytest.mark.parametrize("name", encoder_names())
def test_every_registered_encoder_keeps_the_encoder_contract(name):
    # what every command relies on, for each encoder in the registry: the layers it declares come
    # back in the order asked, with the declared shapes, from one forward; frozen, in eval mode,
    # differentiable with respect to the image; deterministic
    enc = _registered(name)
    shapes = enc.layer_shapes()
    layers = list(shapes)
    x = _x(2, 160, seed=3).requires_grad_(True)
    feats = enc(x, layers[::-1])
    assert list(feats) == layers[::-1]
    for k in layers:
        assert tuple(feats[k].shape) == (2, *shapes[k]), (name, k)
        assert torch.isfinite(feats[k]).all(), (name, k)
    feats[layers[len(layers) // 2]].square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training
    with torch.no_grad():
        again = enc(x.detach(), [layers[-1]])[layers[-1]]
    torch.testing.assert_close(again, feats[layers[-1]].detach())
    with pytest.raises(UsageError):
        enc(x.detach(), ["no-such-layer"])


def test_registry_and_spec():
    names = encoder_names()
    for n in ("alexnet", "alexnet-random", "mobilenet_v2"):
        assert n in names
    assert EncoderSpec.parse("alexnet:pool5") == EncoderSpec("alexnet", "pool5")
    assert EncoderSpec.parse("alexnet") == EncoderSpec("alexnet", None)


def test_torchvision_resnet18_with_weights(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    enc = build_encoder("resnet18", weights=path)
    assert "logits" in enc.layer_names and "prob" in enc.layer_names
    assert "layer4" in enc.layer_names
    x = _x(2, 64)
    feats = enc(x, ["layer2", "logits", "prob"])
    assert feats["logits"].shape == (2, 1000)
    assert feats["layer2"].shape == (2, 128, 28, 28)
    model.eval()
    with torch.no_grad():
        want = model(enc.preprocess(x))
    torch.testing.assert_close(feats["logits"], want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(feats["prob"].sum(1), torch.ones(2))


def test_torchvision_encoder_needs_weights(tmp_path):
    with pytest.raises(UsageError, match="needs --encoder-weights"):
        build_encoder("resnet18")
    with pytest.raises(UsageError, match="not found"):
        build_encoder("resnet18", weights=tmp_path / "missing.pth")
    bad = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(10, 512)}, bad)
    with pytest.raises(UsageError, match="do not match"):
        build_encoder("resnet18", weights=bad)
    with pytest.raises(UsageError, match="unknown encoder"):
        build_encoder("no_such_net", weights=bad)
    notpickle = tmp_path / "text.pth"
    notpickle.write_text("not a state dict")
    with pytest.raises(UsageError, match="cannot read"):
        build_encoder("resnet18", weights=notpickle)


def test_alexnet_weights_override_and_mismatch(tmp_path, alexnet_random):
    # a user's own complete AlexNet (torchvision key names) loads, and then every layer is trained
    sd = {k: v + 0.01 for k, v in alexnet_random.model.state_dict().items()}
    good = tmp_path / "alex.pth"
    torch.save(sd, good)
    enc = build_encoder("alexnet", weights=good)
    assert set(enc.trained_layers) == set(ALEXNET_SHAPES)
    assert enc.weights_path == good
    assert torch.equal(enc.model.classifier[6].bias, sd["classifier.6.bias"])
    bad = tmp_path / "short.pth"
    torch.save({k: v for k, v in sd.items() if k.startswith("features.")}, bad)
    with pytest.raises(UsageError, match="do not match"):
        build_encoder("alexnet", weights=bad)


def test_sharded_index_loads_like_one_file_and_checks_shard_hashes(tmp_path):
    import json

    from safetensors.torch import save_file

    from deepsim_cli.checkpoint import sha256_file
    from deepsim_cli.encoders import load_sharded
    from deepsim_cli.errors import UsageError

    torch.manual_seed(0)
    full = {f"t{i}": torch.randn(3, 4) for i in range(5)}
    save_file({k: full[k] for k in ("t0", "t1")}, str(tmp_path / "a.safetensors"))
    save_file({k: full[k] for k in ("t2", "t3", "t4")}, str(tmp_path / "b.safetensors"))
    wm = {"t0": "a.safetensors", "t1": "a.safetensors", "t2": "b.safetensors", "t3": "b.safetensors",
          "t4": "b.safetensors"}
    index = tmp_path / "m.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"shard_sha256": {"b.safetensors": sha256_file(tmp_path / "b.safetensors")}},
                                 "weight_map": wm}))
    got = load_sharded(index)
    assert set(got) == set(full) and all(torch.equal(got[k], full[k]) for k in full)
    save_file({k: full[k] * 2 for k in ("t2", "t3", "t4")}, str(tmp_path / "b.safetensors"))  # replaced
    with pytest.raises(UsageError, match="b.safetensors does not match its sha256"):
        load_sharded(index)
    (tmp_path / "a.safetensors").unlink()
    with pytest.raises(UsageError, match="shard a.safetensors not found"):
        load_sharded(index)


def test_own_alexnet_is_torchvisions_module_for_module():
    """nets.AlexNet (so invert never imports torchvision) has torchvision's keys, shapes, seeded
    initialisation and outputs."""
    import torchvision

    from deepsim_cli.nets import alexnet
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ours = alexnet().eval()
        torch.manual_seed(0)
        theirs = torchvision.models.alexnet(weights=None).eval()
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_class_names_are_torchvisions():
    import torchvision

    from deepsim_cli.visualize import imagenet_classes
    assert imagenet_classes() == list(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def test_inverting_an_image_never_imports_torchvision(tmp_path):
    import subprocess
    import sys
    repo = Path(__file__).resolve().parent.parent
    code = ("import sys\n"
            "from deepsim_cli.cli import main\n"
            f"try:\n    main(['-q', 'invert', {str(repo / 'examples' / 'images' / 'chelsea.jpg')!r}, '--layer', 'fc7',"
            f" '-o', {str(tmp_path / 'x.png')!r}])\n"
            "except SystemExit as e:\n    code = e.code\n"
            "print('TV' if 'torchvision' in sys.modules else 'NO-TV', code, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.stderr.strip().splitlines()[-1] == "NO-TV 0", r.stderr
    assert (tmp_path / "x.png").is_file()
