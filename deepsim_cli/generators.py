"""Generator architectures (DeePSiM Table 1 family). Networks only; training lives in training.py.

fc-input: fc stack → reshape (C, 4, 4) → [4×4 stride-2 transposed conv, 3×3 conv] per doubling,
leaky ReLU 0.3, linear output. conv-input (pool5 / conv5 features): 3×3 convs at 6×6, a 3×3
transposed conv to 8×8, then the same up-stack. Outputs are (B, 3, S, S) images in [-1, 1]
space (linear, not clamped); if the stack overshoots `out_size` the centre is cropped, as the
paper crops 256 → 227.

Bridged fc-input (`bridge=(256, 6, 6)`): an fc stack maps the vector to a (C/4, 6, 6) map, a 1×1
conv + ReLU lifts it to the (C, 6, 6) shape of a conv generator's input, and the conv
generator's stem and up-stack follow with the same parameter names, so an fc6/fc7/fc8 inverter
can start from a trained pool5 inverter (the bridge first learns to predict pool5 from the fc
code; then everything trains end to end).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of one generator.

    Attributes:
        kind: "fc" (vector input) or "conv" (C×H×W feature-map input).
        in_shape: shape of one input feature, e.g. (4096,) or (256, 6, 6).
        out_size: output side in pixels.
        width: channel multiplier of the up-stack (1.0 = 256,256,128,64,32).
        fc_dims: hidden widths of the fc stack (fc kind only).
        bridge: fc kind only: the (C, H, W) feature shape the fc stack maps to before a
            conv-kind stem (empty = the plain fc generator starting at 4×4).
        upsample: "deconv" (the paper's Table 1: 4×4 stride-2 transposed convs) or "resize"
            (nearest-neighbour ×2 then a 3×3 conv, Odena et al. 2016: no uneven kernel overlap,
            so no checkerboard pattern).
    """

    kind: str = "fc"
    in_shape: tuple[int, ...] = (4096,)
    out_size: int = 128
    width: float = 1.0
    fc_dims: tuple[int, ...] = (1024, 1024)
    bridge: tuple[int, ...] = ()
    upsample: str = "deconv"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        d = dict(d)
        d["in_shape"] = tuple(d["in_shape"])
        d["fc_dims"] = tuple(d.get("fc_dims", ()))
        d["bridge"] = tuple(d.get("bridge", ()))
        return cls(**d)


UPSAMPLES = ("deconv", "resize")


class ResizeConv(nn.Module):
    """×2 nearest-neighbour upsampling followed by a 3×3 conv (replaces a 4×4 stride-2 deconv)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C', 2H, 2W): nearest-neighbour ×2, then the conv."""
        return self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


BASE_CHANNELS = (256, 256, 128, 64, 32, 32, 32)


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.3, inplace=True)


def _mlp(dims: list[int]) -> list[nn.Module]:
    """Linear + leaky ReLU for each consecutive pair of widths."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), _lrelu()]
    return layers


class Generator(nn.Module):
    """Maps features y → image (B, 3, out_size, out_size)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        ch = [max(8, int(round(c * cfg.width))) for c in BASE_CHANNELS]
        self.bridge = None
        conv_in = cfg.in_shape
        if cfg.kind == "fc" and cfg.bridge:
            assert len(cfg.in_shape) == 1 and len(cfg.bridge) == 3, "bridge maps a vector to (C, H, W)"
            c_b, h_b, w_b = cfg.bridge
            c_mid = max(1, c_b // 4)
            self.bridge = nn.Sequential(*_mlp([cfg.in_shape[0], *cfg.fc_dims, c_mid * h_b * w_b]),
                                        nn.Unflatten(1, (c_mid, h_b, w_b)),
                                        nn.Conv2d(c_mid, c_b, 1), nn.ReLU(inplace=True))
            conv_in = cfg.bridge
        if cfg.kind == "fc" and not cfg.bridge:
            assert len(cfg.in_shape) == 1, "fc generator takes vector features"
            start = 4
            self.stem = nn.Sequential(*_mlp([cfg.in_shape[0], *cfg.fc_dims, ch[0] * start * start]))
        elif cfg.kind == "conv" or cfg.bridge:
            assert len(conv_in) == 3, "conv generator takes (C, H, W) features"
            c_in, h, w = conv_in
            start = h + 2
            self.stem = nn.Sequential(
                nn.Conv2d(c_in, ch[0], 3, padding=1), _lrelu(),
                nn.Conv2d(ch[0], ch[0], 3, padding=1), _lrelu(),
                nn.ConvTranspose2d(ch[0], ch[0], 3, stride=1), _lrelu(),  # h → h + 2 (6 → 8)
            )
        else:
            raise ValueError(f"unknown generator kind {cfg.kind!r}")
        self.start = start
        n_up = max(1, math.ceil(math.log2(cfg.out_size / start)))
        if n_up + 1 > len(ch):
            ch = ch + [ch[-1]] * (n_up + 1 - len(ch))
        blocks: list[nn.Module] = []
        if cfg.upsample not in UPSAMPLES:
            raise ValueError(f"unknown upsample {cfg.upsample!r}; valid: {', '.join(UPSAMPLES)}")
        for i in range(n_up):
            last = i == n_up - 1
            up = (nn.ConvTranspose2d(ch[i], ch[i + 1], 4, stride=2, padding=1) if cfg.upsample == "deconv"
                  else ResizeConv(ch[i], ch[i + 1]))
            blocks += [up, _lrelu()]
            if last:
                blocks += [nn.Conv2d(ch[i + 1], 3, 3, padding=1)]
            else:
                blocks += [nn.Conv2d(ch[i + 1], ch[i + 1], 3, padding=1), _lrelu()]
        self.up = nn.Sequential(*blocks)
        self.native_size = start * 2 ** n_up
        self.c0 = ch[0]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, *in_shape) → (B, 3, out_size, out_size) in [-1, 1] space (unclamped)."""
        if self.bridge is not None:
            h = self.stem(self.bridge(y.flatten(1)))
        else:
            h = self.stem(y.flatten(1) if self.cfg.kind == "fc" else y)
        if self.cfg.kind == "fc" and self.bridge is None:
            h = h.view(-1, self.c0, self.start, self.start)
        x = self.up(h)
        s, n = self.cfg.out_size, self.native_size
        if n != s:
            o = (n - s) // 2
            x = x[:, :, o:o + s, o:o + s]
        return x


def generator_for(in_shape: tuple[int, ...], out_size: int = 128, width: float = 1.0,
                  fc_dims: tuple[int, ...] = (1024, 1024), upsample: str = "deconv") -> Generator:
    """Pick the fc or conv variant from the feature shape."""
    kind = "fc" if len(in_shape) == 1 else "conv"
    return Generator(GeneratorConfig(kind=kind, in_shape=tuple(in_shape), out_size=out_size,
                                     width=width, fc_dims=tuple(fc_dims) if kind == "fc" else (),
                                     upsample=upsample))


class VAE(nn.Module):
    """DeePSiM VAE: encoder = AlexNet up to fc6 → (μ, log σ²); decoder = the fc generator.

    The encoder takes images (B, 3, H, W) in [-1, 1], resizes them to 224 and normalises as
    the AlexNet encoder does, so it can start from the shipped AlexNet's conv + fc6 weights.

    With `frozen_encoder`, conv1–fc6 are not part of this module: they are the shipped AlexNet
    encoder's (attach it with `attach_encoder`), kept fixed, so the trained parts are only the μ /
    log σ² heads and the decoder (a small checkpoint, and fc6 features can be cached for
    training). `bridge` makes the decoder a bridged fc generator (see Generator), e.g. to start
    it from the pool5 inverter.
    """

    def __init__(self, latent_dim: int = 1024, out_size: int = 128, width: float = 1.0,
                 fc_dims: tuple[int, ...] = (1024, 1024), bridge: tuple[int, ...] = (),
                 frozen_encoder: bool = False, upsample: str = "deconv"):
        super().__init__()
        from .nets import alexnet

        self.frozen_encoder = frozen_encoder
        self._attached: list = []  # the external Encoder (a list, so it is not a submodule)
        if not frozen_encoder:
            alex = alexnet()
            self.features = alex.features
            self.fc6 = alex.classifier[1]
        self.mu = nn.Linear(4096, latent_dim)
        self.logvar = nn.Linear(4096, latent_dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, -4.0)  # start near-deterministic, like an autoencoder
        self.decoder = Generator(GeneratorConfig("fc", (latent_dim,), out_size, width, tuple(fc_dims),
                                                 tuple(bridge), upsample))
        self.latent_dim = latent_dim
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1), persistent=False)

    def attach_encoder(self, encoder) -> None:
        """Frozen mode: the Encoder whose fc6 features the VAE encodes (not saved with the VAE)."""
        self._attached = [encoder]

    def init_from_alexnet(self, alexnet_state: dict[str, torch.Tensor]) -> None:
        """Copy conv1–conv5 and fc6 from an AlexNet state dict (torchvision key names)."""
        self.features.load_state_dict({k[len("features."):]: v.float() for k, v in alexnet_state.items()
                                       if k.startswith("features.")})
        if "classifier.1.weight" in alexnet_state:
            self.fc6.weight.data.copy_(alexnet_state["classifier.1.weight"].float())
            self.fc6.bias.data.copy_(alexnet_state["classifier.1.bias"].float())

    def encode_features(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(relu) fc6 features (B, 4096) → (μ, log σ²)."""
        return self.mu(h), self.logvar(h).clamp(-30, 20)

    def fc6_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [-1, 1] → AlexNet relu6 features (B, 4096): the attached frozen
        encoder's (no gradient), or this VAE's own conv1–fc6."""
        import torch.nn.functional as F

        if self.frozen_encoder:
            if not self._attached:
                raise RuntimeError("frozen-encoder VAE: attach_encoder() first")
            with torch.no_grad():
                return self._attached[0](x, ["fc6"])["fc6"].float()
        if x.shape[-1] != 224:
            x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        x = ((x + 1) * 0.5 - self.mean) / self.std
        h = torch.flatten(F.adaptive_avg_pool2d(self.features(x), 6), 1)
        return F.relu(self.fc6(h))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) in [-1, 1] → (μ, log σ²), each (B, latent_dim)."""
        return self.encode_features(self.fc6_features(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_dim) → images (B, 3, out_size, out_size) in [-1, 1] space (unclamped)."""
        return self.decoder(z)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """z = μ + σ·ε with ε ~ N(0, I) (drawn on the CPU from `generator` when given, so the
        draw does not depend on the device); μ, log σ² and z are (B, latent_dim)."""
        eps = torch.randn(mu.shape, generator=generator, device="cpu").to(mu) if generator is not None \
            else torch.randn_like(mu)
        return mu + (0.5 * logvar).exp() * eps

    def forward(self, x: torch.Tensor | None, generator: torch.Generator | None = None,
                h: torch.Tensor | None = None):
        """x → (decoded sample, μ, log σ²); with `h`, fc6 features given instead of x."""
        mu, logvar = self.encode_features(h) if h is not None else self.encode(x)
        z = self.reparameterize(mu, logvar, generator)
        return self.decode(z), mu, logvar
