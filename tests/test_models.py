"""Tests for the networks: generators (fc / conv / VAE) and the discriminator, at tiny sizes."""

from __future__ import annotations

import pytest
import torch

from deepsim_cli.discriminator import Discriminator, DiscriminatorConfig
from deepsim_cli.generators import VAE, Generator, GeneratorConfig, generator_for

TINY = dict(width=0.125, fc_dims=(32,))


def _all_params_have_grad(module: torch.nn.Module) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def _gen(kind: str, out_size: int) -> Generator:
    torch.manual_seed(0)
    if kind == "fc":
        return Generator(GeneratorConfig("fc", (64,), out_size, 0.125, (32,)))
    return Generator(GeneratorConfig("conv", (16, 6, 6), out_size, 0.125, ()))


@pytest.mark.parametrize("kind, in_shape", [("fc", (64,)), ("conv", (16, 6, 6))])
@pytest.mark.parametrize("out_size", [32, 64])
def test_generator_shape_and_gradients(kind, in_shape, out_size):
    G = _gen(kind, out_size)
    y = torch.randn(3, *in_shape)
    x = G(y)
    assert x.shape == (3, 3, out_size, out_size)
    assert torch.isfinite(x).all()
    # the output is linear (not squashed): a random net's output is not confined to tanh's range
    assert x.std() > 0
    x.square().mean().backward()
    _all_params_have_grad(G)


def test_generator_centre_crops_overshoot():
    # conv: 6 → 8 → 16 → 32 → 64; asking for 48 crops the centre of the 64 px output
    G = _gen("conv", 48)
    assert G.native_size == 64
    y = torch.randn(2, 16, 6, 6)
    out = G(y)
    assert out.shape == (2, 3, 48, 48)
    full = Generator(GeneratorConfig("conv", (16, 6, 6), 64, 0.125, ()))
    full.load_state_dict(G.state_dict())
    torch.testing.assert_close(out, full(y)[:, :, 8:56, 8:56])


def test_generator_depends_on_each_input():
    G = _gen("fc", 32).eval()
    y = torch.randn(2, 64)
    a, b = G(y)
    assert not torch.allclose(a, b)  # different features → different images


def test_generator_width_sets_channels():
    small = Generator(GeneratorConfig("fc", (64,), 32, 0.125, (32,)))
    big = Generator(GeneratorConfig("fc", (64,), 32, 0.25, (32,)))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(big) > n(small)
    assert small.c0 == 32 and big.c0 == 64


def test_generator_config_round_trip():
    cfg = GeneratorConfig("fc", (64,), 32, 0.125, (32, 16))
    d = cfg.to_dict()
    import json
    d = json.loads(json.dumps(d))  # lists after JSON
    assert GeneratorConfig.from_dict(d) == cfg


def test_generator_rejects_bad_config():
    with pytest.raises(AssertionError):
        Generator(GeneratorConfig("fc", (16, 6, 6), 32, 0.125, (32,)))
    with pytest.raises(AssertionError):
        Generator(GeneratorConfig("conv", (64,), 32, 0.125, ()))
    with pytest.raises(ValueError):
        Generator(GeneratorConfig("mlp", (64,), 32, 0.125, ()))


def test_generator_for_picks_kind():
    g = generator_for((64,), 32, **TINY)
    assert g.cfg.kind == "fc" and g.cfg.fc_dims == (32,)
    g = generator_for((16, 6, 6), 32, **TINY)
    assert g.cfg.kind == "conv" and g.cfg.fc_dims == ()
    assert g(torch.randn(1, 16, 6, 6)).shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------------------- discriminator


@pytest.mark.parametrize("cond_dim", [0, 24])
@pytest.mark.parametrize("size", [32, 64])
def test_discriminator_shape_and_gradients(cond_dim, size):
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(width=0.125, cond_dim=cond_dim, cond_hidden=16))
    x = torch.randn(4, 3, size, size, requires_grad=True)
    y = torch.randn(4, 24) if cond_dim else None
    out = D(x, y)
    assert out.shape == (4,)
    assert torch.isfinite(out).all()
    out.sum().backward()
    _all_params_have_grad(D)
    assert x.grad.abs().sum() > 0  # G is trained through D's input gradient
    assert (D.cond is None) == (cond_dim == 0)


def test_conditional_discriminator_uses_y():
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(width=0.125, cond_dim=24, cond_hidden=16)).eval()
    x = torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)
    y = torch.randn(2, 24)
    out = D(x, y)
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(AssertionError):
        D(x)
    # feature maps are flattened for the conditioning branch
    D2 = Discriminator(DiscriminatorConfig(width=0.125, cond_dim=16 * 6 * 6, cond_hidden=16))
    assert D2(torch.randn(2, 3, 32, 32), torch.randn(2, 16, 6, 6)).shape == (2,)


def test_discriminator_dropout_only_in_training():
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(width=0.125))
    x = torch.randn(2, 3, 32, 32)
    D.eval()
    assert torch.equal(D(x), D(x))
    D.train()
    torch.manual_seed(1)
    a = D(x)
    torch.manual_seed(2)
    assert not torch.equal(a, D(x))


# ---------------------------------------------------------------------------------- VAE


def test_vae_shapes_and_gradients():
    torch.manual_seed(0)
    vae = VAE(latent_dim=16, out_size=32, width=0.125, fc_dims=(32,))
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    mu, logvar = vae.encode(x)
    assert mu.shape == (3, 16) and logvar.shape == (3, 16)
    assert torch.allclose(logvar, torch.full_like(logvar, -4.0))  # initialised near-deterministic
    out = vae.decode(mu)
    assert out.shape == (3, 3, 32, 32)
    fake, mu2, logvar2 = vae(x, generator=torch.Generator().manual_seed(0))
    assert fake.shape == (3, 3, 32, 32)
    torch.testing.assert_close(mu2, mu)
    (fake.square().mean() + mu2.square().mean() + logvar2.exp().mean()).backward()
    _all_params_have_grad(vae)


def test_vae_noise_is_seeded():
    torch.manual_seed(0)
    vae = VAE(latent_dim=16, out_size=32, width=0.125, fc_dims=(32,)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a = vae(x, generator=torch.Generator().manual_seed(5))[0]
    b = vae(x, generator=torch.Generator().manual_seed(5))[0]
    c = vae(x, generator=torch.Generator().manual_seed(6))[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_vae_init_from_alexnet():
    import torchvision

    torch.manual_seed(3)
    alex = torchvision.models.alexnet()
    vae = VAE(latent_dim=16, out_size=32, width=0.125, fc_dims=(32,))
    vae.init_from_alexnet({k: v.half() for k, v in alex.state_dict().items()})
    assert torch.equal(vae.features[0].weight, alex.features[0].weight.half().float())
    assert torch.equal(vae.fc6.weight, alex.classifier[1].weight.half().float())


def test_resize_upsampling_generator_has_no_transposed_convs_and_round_trips():
    from deepsim_cli.generators import Generator, GeneratorConfig
    cfg = GeneratorConfig("conv", (256, 6, 6), 32, 0.125, (), (), "resize")
    g = Generator(cfg)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.up.modules())
    y = torch.randn(2, 256, 6, 6)
    out = g(y)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None for p in g.parameters())
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    # old checkpoints have no upsample field: they are the paper's deconv layout
    d = cfg.to_dict()
    del d["upsample"]
    assert GeneratorConfig.from_dict(d).upsample == "deconv"
