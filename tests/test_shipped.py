"""Golden tests on the shipped weights: a broken checkpoint, a changed preprocessing or a changed
generator architecture moves these numbers and fails CI."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from deepsim_cli.cli import app
from deepsim_cli.encoders import build_encoder
from deepsim_cli.images import load_images
from deepsim_cli.inference import invert, load_generator, shipped_generator_path
from deepsim_cli.metrics import mean_pairwise_distance, normalized_error

REPO = Path(__file__).resolve().parent.parent
IMAGES = sorted((REPO / "examples" / "images").glob("*.jpg"))

# Measured once with the shipped weights/alexnet-pool5-generator.safetensors (see weights/README.md):
# mean normalized image error of the four example photos (normalised by their mean pairwise
# distance), and the mean pixel value of the reconstructions.
GOLDEN_IMG_ERR = 51.17  # pool5 generator v2 (v1: 52.55)
GOLDEN_MEAN = -0.2208  # v1: -0.2002


def _reconstruct():
    enc = build_encoder("alexnet")
    gen = load_generator(shipped_generator_path("pool5"), encoder=enc)
    x = load_images([str(p) for p in IMAGES], gen.image_size)
    return x, invert(x, enc, gen), gen


def test_shipped_pool5_generator_reconstructs_the_examples():
    x, recon, gen = _reconstruct()
    assert gen.image_size == 128 and recon.shape == (4, 3, 128, 128)
    err = float(normalized_error(recon, x, mean_pairwise_distance(x)).mean())
    assert abs(err - GOLDEN_IMG_ERR) < 0.5, err
    assert abs(float(recon.mean()) - GOLDEN_MEAN) < 0.01, float(recon.mean())


def test_quick_start_command(tmp_path, monkeypatch):
    """The README's quick start: `deepsim invert examples/images/chelsea.jpg --layer pool5`."""
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["invert", str(REPO / "examples" / "images" / "chelsea.jpg"), "--layer", "pool5"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "chelsea-pool5.png"
    assert out.is_file() and Image.open(out).size == (128, 128)


def test_shipped_alexnet_classifies_the_examples():
    """The distilled head (v1, weights/alexnet-head-v1.safetensors.index.json): chelsea is a cat, coffee an espresso or
    cup, within the top-5, and the conv layers are the genuine ones."""
    import torch

    from deepsim_cli.checkpoint import load_checkpoint
    from deepsim_cli.encoders import weights_dir
    from deepsim_cli.visualize import imagenet_classes

    enc = build_encoder("alexnet")
    assert enc.weights_path.name == "alexnet-head-v1.safetensors.index.json"
    conv = load_checkpoint(weights_dir() / "alexnet-conv.safetensors").tensors
    for k, v in conv.items():
        assert torch.equal(enc.model.state_dict()[k], v), k
    names = imagenet_classes()
    # the ImageNet evaluation protocol, as in benchmarks/distill_eval.py: short side 256, centre crop 224
    x = load_images([str(REPO / "examples" / "images" / f) for f in ("chelsea.jpg", "coffee.jpg")], 256)
    x = x[:, :, 16:-16, 16:-16]
    top5 = enc(x, ["fc8"])["fc8"].topk(5, 1).indices
    assert set(top5[0].tolist()) & set(range(281, 286)), [names[i] for i in top5[0]]
    assert set(top5[1].tolist()) & {967, 968, 504}, [names[i] for i in top5[1]]


def test_shipped_vae_keeps_each_image_and_samples_deterministically(tmp_path, monkeypatch):
    """weights/vae-deepsim.safetensors: in the shipped AlexNet's fc6 space (cosine), the
    decoded posterior mean of each example photo is nearest to that photo, and nearer than any of
    32 prior samples (a collapsed posterior fails both: measured on a run that blew up); and
    `deepsim sample` with the default weights writes the same grid twice for one seed."""
    import torch
    import torch.nn.functional as F

    from deepsim_cli.encoders import weights_dir
    from deepsim_cli.inference import load_vae, sample

    vae = load_vae(weights_dir() / "vae-deepsim.safetensors")
    size = vae.decoder.cfg.out_size
    enc = build_encoder("alexnet")
    x = load_images([str(p) for p in IMAGES], size)
    with torch.no_grad():
        mu, _ = vae.encode(x)
        recon = vae.decode(mu).clamp(-1, 1)
        f_r, f_x, f_s = (F.normalize(enc(t, ["fc6"])["fc6"].flatten(1), dim=1)
                         for t in (recon, x, sample(vae, 32, seed=0)))
    sim = f_r @ f_x.T                       # sim[i, j]: reconstruction i vs photo j
    assert torch.equal(sim.argmax(1), torch.arange(len(x))), sim
    assert (sim.diag() > (f_s @ f_x.T).max(0).values).all(), (sim.diag(), (f_s @ f_x.T).max(0).values)
    outs = []
    for k in range(2):  # the same command line in two folders: the same bytes, evidence record included
        (tmp_path / f"run{k}").mkdir()
        monkeypatch.chdir(tmp_path / f"run{k}")
        r = CliRunner().invoke(app, ["sample", "--n", "4", "--seed", "3", "-o", "s.png"])
        assert r.exit_code == 0, r.output
        outs.append((tmp_path / f"run{k}" / "s.png").read_bytes())
    assert outs[0] == outs[1]
    assert Image.open(tmp_path / "run0" / "s.png").size[0] >= 2 * size
