"""Frozen networks being inverted, cut into named layers.

`encoder(x, layers)` takes images (B, 3, H, W) in [-1, 1] at any size, resizes them to the
network's input size and applies its normalisation internally, and returns {layer: Tensor}
from one forward pass that stops after the deepest requested layer.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import load_checkpoint, load_state_dict_strict, sha256_file
from .errors import UsageError
from .nets import alexnet as _alexnet_arch
from .taps import ALEXNET_CONV_LAYERS, ALEXNET_TAPS, mobilenet_taps  # noqa: F401  (re-exported)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def weights_dir() -> Path:
    """The main folder of the shipped weights: $DEEPSIM_WEIGHTS, else the source checkout's weights/,
    else the user cache. Loaders find files with `weights_store.resolve(name)`, which searches them all."""
    from . import weights_store

    return weights_store.weights_dir()


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, mtime: float, size: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached on (path, mtime, size) so repeated loads stay cheap."""
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_mtime, st.st_size)


class _Stop(Exception):
    """Raised by a hook once the deepest requested layer is captured (saves the rest of the pass)."""


class Encoder(nn.Module):
    """A frozen classifier with named layer taps.

    Args:
        name: registry name.
        model: the torchvision module.
        taps: ordered {layer name: dotted module path}; the tap is that module's output.
        input_size: side length the network expects; inputs are resized to it.
        weights_path: file the weights came from (its sha256 identifies the encoder).
    """

    def __init__(self, name: str, model: nn.Module, taps: dict[str, str], input_size: int = 224,
                 weights_path: Path | None = None, trained_layers: Sequence[str] | None = None):
        super().__init__()
        self.name = name
        self.model = model.eval()
        self.taps = dict(taps)
        self.layer_names = tuple(self.taps) + ("prob",)
        self.input_size = input_size
        self.weights_path = weights_path
        self.trained_layers = tuple(trained_layers) if trained_layers is not None else self.layer_names
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        # NHWC: MobileNetV2 runs 1.7-1.9x faster in it on a CPU (fp32 and bf16), AlexNet ~5 % in bf16
        self.model.to(memory_format=torch.channels_last)
        modules = dict(self.model.named_modules())
        self._modules_by_tap = {k: modules[v] for k, v in self.taps.items()}

    def with_input_size(self, size: int) -> "Encoder":
        """The same network (shared weights, no copy) seeing its inputs resized to `size`, e.g.
        a comparator at the training resolution, or LPIPS at the images' own resolution."""
        if size == self.input_size:
            return self
        return Encoder(self.name, self.model, self.taps, size, self.weights_path,
                       self.trained_layers).to(self.mean.device)

    @property
    def sha256(self) -> str:
        """The weights' identity: the file's sha256, or for a sharded index the sha256 of the single
        file it replaces (weights_store.identity_sha256), so checkpoints trained on it still match."""
        if not self.weights_path:
            return ""
        from .weights_store import identity_sha256
        return identity_sha256(self.weights_path) or file_sha256(self.weights_path)

    def train(self, mode: bool = True):  # frozen: dropout/BN always in eval mode
        return super().train(False)

    def check_layers(self, layers: Sequence[str], trained_only: bool = True) -> list[str]:
        """Validate layer names; unknown (or untrained) → UsageError listing the valid ones."""
        out = []
        for layer in layers:
            if layer not in self.layer_names:
                raise UsageError(f"unknown layer {layer!r} for encoder {self.name!r}; "
                                 f"valid: {', '.join(self.layer_names)}")
            if trained_only and layer not in self.trained_layers:
                raise UsageError(f"layer {layer!r} of encoder {self.name!r} has no trained weights here "
                                 f"(loaded: {self.weights_path}); trained: {', '.join(self.trained_layers)}")
            out.append(layer)
        return out

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → resized to input_size and ImageNet-normalised."""
        assert x.dim() == 4 and x.shape[1] == 3, f"expected (B, 3, H, W), got {tuple(x.shape)}"
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        return ((x + 1) * 0.5 - self.mean) / self.std

    def forward(self, x: torch.Tensor, layers: Sequence[str] | str,
                trained_only: bool = True, pre_activation: bool = False) -> dict[str, torch.Tensor]:
        """{layer: features} of images x (B, 3, H, W) in [-1, 1], from one forward pass.

        With `pre_activation`, a layer whose tap is a ReLU returns the ReLU's input instead (its
        pre-activation, of the same shape): what activation maximisation needs, since a unit
        that is off has zero gradient after the ReLU. Other layers are unaffected.
        """
        if isinstance(layers, str):
            layers = [layers]
        layers = self.check_layers(layers, trained_only)
        need = {("fc8" if layer == "prob" and "fc8" in self.taps else
                 "logits" if layer == "prob" else layer) for layer in layers}
        order = list(self.taps)
        last = max(order.index(n) for n in need)
        captured: dict[str, torch.Tensor] = {}
        handles = []

        def make_hook(tap: str, is_last: bool) -> Callable:
            def hook(_m, _inp, out):
                captured[tap] = out
                if is_last:
                    raise _Stop
            return hook

        def make_pre_hook(tap: str, is_last: bool) -> Callable:
            def hook(_m, inp):
                captured[tap] = inp[0].clone()  # before an in-place ReLU overwrites it
                if is_last:
                    raise _Stop
            return hook

        model, by_tap = self._model_for_autocast(x.device.type)
        for tap in need:
            mod = by_tap[tap]
            is_last = order.index(tap) == last
            if pre_activation and isinstance(mod, nn.ReLU):
                handles.append(mod.register_forward_pre_hook(make_pre_hook(tap, is_last)))
            else:
                handles.append(mod.register_forward_hook(make_hook(tap, is_last)))
        try:
            model(self.preprocess(x).contiguous(memory_format=torch.channels_last))
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        out = {}
        for layer in layers:
            if layer == "prob":
                out[layer] = captured["fc8" if "fc8" in self.taps else "logits"].softmax(dim=1)
            else:
                out[layer] = captured[layer]
        return out

    def _model_for_autocast(self, device_type: str) -> tuple[nn.Module, dict[str, nn.Module]]:
        """The network to run: under bf16 autocast a bf16 copy of it (no per-call weight casts;
        see precision.frozen_copy), else the model itself; with its {tap: module} map."""
        from .precision import autocast_dtype, frozen_copy

        dtype = autocast_dtype(device_type)
        if dtype is None or dtype == torch.float32:
            return self.model, self._modules_by_tap
        model = frozen_copy(self.model, dtype)
        by_tap = self.__dict__.setdefault("_taps_by_dtype", {})
        if dtype not in by_tap:  # built once per dtype, not on every forward of a DGN-AM loop
            modules = dict(model.named_modules())
            by_tap[dtype] = {k: modules[v] for k, v in self.taps.items()}
        return model, by_tap[dtype]

    @torch.no_grad()
    def layer_shapes(self, size: int | None = None) -> dict[str, tuple[int, ...]]:
        """{layer: shape without batch}. Inputs are resized to `input_size` first, so the
        shapes depend only on `input_size` (`size` only sets the dummy input's side)."""
        size = size or self.input_size
        feats = self.forward(torch.zeros(1, 3, size, size, device=self.mean.device), list(self.layer_names),
                             trained_only=False)
        return {k: tuple(v.shape[1:]) for k, v in feats.items()}


# ---------------------------------------------------------------- registry

EncoderFactory = Callable[[Path | None], Encoder]
_REGISTRY: dict[str, tuple[EncoderFactory, str]] = {}


def register_encoder(name: str, description: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Register an encoder factory under `name` (Typer choices come from this registry)."""
    def deco(fn: EncoderFactory) -> EncoderFactory:
        _REGISTRY[name] = (fn, description)
        return fn
    return deco


def encoder_names() -> list[str]:
    """Registered encoder names (`register_encoder`), in registration order."""
    return list(_REGISTRY)


def encoder_description(name: str) -> str:
    """The one-line description an encoder was registered with."""
    return _REGISTRY[name][1]




def _on_meta(ctor: Callable[[], nn.Module]) -> nn.Module:
    """Build a torchvision model on the meta device: no random init (a second per AlexNet on a
    CPU), no memory; it must then be loaded completely with `_load_weights(..., assign=True)`."""
    with torch.device("meta"):
        return ctor()


def _load_weights(model: nn.Module, path: Path, what: str, prefix: str = "", assign: bool = False) -> None:
    if path.suffix == ".pth" or path.suffix == ".pt":
        sd = _load_pth(path)
    elif path.name.endswith(".safetensors.index.json"):
        sd = load_sharded(path)
    else:
        sd = _load_safetensors(path)
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    load_state_dict_strict(model, sd, f"{what} weights {path}", assign=assign)


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    """A weights-only .pth/.pt state dict (never unpickles code); anything else is one usage-error line
    (torch's own warnings about pickle protocols and its multi-line advice are not shown)."""
    import re
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad pickles
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        why = (f"it pickles Python objects ({m.group(1)}), which deepsim never unpickles" if m else
               "not a weights-only PyTorch state dict")
        raise UsageError(f"cannot read {path}: {why}; save model.state_dict() or convert it to .safetensors") \
            from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise UsageError(f"cannot read {path}: not a state dict (a mapping of names to tensors)")
    return sd


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).tensors if _is_deepsim(path) else _load_plain_safetensors(path)


def load_sharded(index: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a sharded checkpoint in the Hugging Face layout: NAME.safetensors.index.json
    with {"weight_map": {tensor: shard file}, "metadata": {...}}, shards beside it. A shard may be
    shared with another index (the AlexNet conv layers live once, in alexnet-conv.safetensors).
    With "metadata": {"shard_sha256": {file: sha256}} every shard is checked before it is read.

    Returns:
        {tensor name: tensor} over all shards (UsageError naming the file on any problem).
    """
    import json

    index = Path(index)
    try:
        spec = json.loads(index.read_text())
        weight_map = dict(spec["weight_map"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
    hashes = (spec.get("metadata") or {}).get("shard_sha256", {})
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = index.parent / shard
        if not path.is_file():
            raise UsageError(f"{index}: shard {shard} not found beside it")
        if shard in hashes and file_sha256(path) != hashes[shard]:
            raise UsageError(f"{index}: shard {shard} does not match its sha256 (corrupt or replaced)")
        tensors = _load_safetensors(path)
        wanted = [k for k, v in weight_map.items() if v == shard]
        missing = [k for k in wanted if k not in tensors]
        if missing:
            raise UsageError(f"{index}: shard {shard} lacks {missing[:3]}")
        out.update({k: tensors[k] for k in wanted})
    return out


def _is_deepsim(path: Path) -> bool:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return "kind" in (f.metadata() or {})
    except Exception:
        raise UsageError(f"not a safetensors file: {path}") from None


def _load_plain_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))


ALEXNET_DEFAULT = "alexnet-head-v1.safetensors.index.json"  # alexnet-conv + the v1 head shards


@register_encoder("alexnet", "AlexNet (torchvision architecture): genuine IMAGENET1K_V1 conv1-conv5; "
                             "fc6-fc8 distilled from MobileNetV2 (head v1: "
                             "weights/alexnet-head-v1.safetensors.index.json) when present")
def _alexnet(weights: Path | None) -> Encoder:
    from . import weights_store

    # the complete network: a single file where one is given or lies in the weights folder (the
    # layout before the head was sharded), else alexnet-conv + the v1 head shards, else conv only
    full = weights if weights is not None else (weights_store.find("alexnet.safetensors")
                                                or weights_store.optional(ALEXNET_DEFAULT))
    if full is not None and full.is_file():
        model = _on_meta(lambda: _alexnet_arch())
        _load_weights(model, full, "alexnet", assign=True)
        return Encoder("alexnet", model, ALEXNET_TAPS, 224, full)
    model = _alexnet_arch()  # fc layers stay random (and untrained_layers)
    conv = weights_store.resolve("alexnet-conv.safetensors")  # one line naming the fetch command if missing
    _load_weights(model.features, conv, "alexnet conv layers", prefix="features.")
    return Encoder("alexnet", model, ALEXNET_TAPS, 224, conv, trained_layers=ALEXNET_CONV_LAYERS)


@register_encoder("alexnet-random", "AlexNet with random weights (seed 0): the paper's random comparator")
def _alexnet_random(weights: Path | None) -> Encoder:
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(0)
        model = _alexnet_arch()
    return Encoder("alexnet-random", model, ALEXNET_TAPS, 224, None)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d in a Sequential into that
    conv (the BN becomes Identity). The outputs are the same up to rounding; in bf16 on a CPU the
    separate BN passes cost about a third of MobileNetV2's forward. Only for frozen networks:
    the running statistics are gone afterwards (DeepInversion needs them: see distill.py)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for mod in model.modules():
        if not isinstance(mod, nn.Sequential):
            continue
        names = list(mod._modules)
        for a, b in zip(names[:-1], names[1:]):
            conv, bn = mod._modules[a], mod._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                mod._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                mod._modules[b] = nn.Identity()
    return model




@register_encoder("mobilenet_v2", "MobileNetV2 IMAGENET1K_V1 (71.9% top-1), torchvision's weights")
def _mobilenet_v2(weights: Path | None) -> Encoder:
    from . import weights_store

    path = weights_store.resolve("mobilenet_v2.safetensors", weights)
    if not path.is_file():
        raise UsageError(f"no MobileNetV2 weights at {path}")
    import torchvision

    model = _on_meta(lambda: torchvision.models.mobilenet_v2(weights=None))
    _load_weights(model, path, "mobilenet_v2", assign=True)
    return Encoder("mobilenet_v2", fold_batchnorm(model.eval()), mobilenet_taps(), 224, path)


def _torchvision_encoder(arch: str, weights: Path | None) -> Encoder:
    """Any torchvision classifier by name; taps are its top-level children plus 'logits'."""
    if weights is None:
        raise UsageError(f"encoder {arch!r} needs --encoder-weights FILE (no weights ship for it)")
    import torchvision

    try:
        model = torchvision.models.get_model(arch, weights=None)
    except ValueError:
        raise UsageError(f"unknown encoder {arch!r}; registered: {', '.join(encoder_names())}, "
                         "or any torchvision classifier name with --encoder-weights") from None
    _load_weights(model, weights, arch)
    children = [n for n, _ in model.named_children()]
    taps = {n: n for n in children[:-1]}
    taps["logits"] = children[-1]
    return Encoder(arch, model, taps, 224, weights)


@dataclass(frozen=True)
class EncoderSpec:
    """'name' or 'name:layer' as typed on the command line."""

    name: str
    layer: str | None

    @classmethod
    def parse(cls, text: str) -> "EncoderSpec":
        """"NAME" or "NAME:LAYER" → EncoderSpec(name, layer or None); names are checked when built."""
        name, _, layer = text.partition(":")
        return cls(name, layer or None)


def build_encoder(name: str = "alexnet", weights: str | os.PathLike | None = None,
                  device: torch.device | str = "cpu") -> Encoder:
    """A frozen encoder by registry name (or any torchvision classifier with `weights`).

    One instance per (name, weights file, device) per process: the encoder, the comparator, the
    DGN-AM code network and LPIPS share it (encoders are frozen; use `with_input_size` for
    another input resolution instead of changing `input_size`). A weights file that changed on
    disk (size or mtime) is loaded afresh; `clear_encoder_cache()` forgets them all.
    """
    wpath = Path(weights) if weights is not None else None
    if wpath is not None and not wpath.is_file():
        raise UsageError(f"encoder weights not found: {wpath}")
    key = (name, str(wpath.resolve()) if wpath else None, str(weights_dir().resolve()), str(torch.device(device)))
    enc = _ENCODERS.get(key)
    if enc is None or (enc.weights_path is not None and _file_stamp(enc.weights_path) != enc._stamp):
        if name in _REGISTRY:
            enc = _REGISTRY[name][0](wpath)
        else:
            enc = _torchvision_encoder(name, wpath)
        enc._stamp = _file_stamp(enc.weights_path) if enc.weights_path is not None else None
        enc = enc.to(device)
        _ENCODERS[key] = enc
    return enc


_ENCODERS: dict[tuple, Encoder] = {}


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def clear_encoder_cache() -> None:
    """Forget the encoders build_encoder() has built (the next call loads from disk)."""
    _ENCODERS.clear()


@torch.no_grad()
def encode_batched(encoder, x, layer: str, batch: int = 100, *, precision: str = "auto") -> torch.Tensor:
    """`layer` features of `x` as one float CPU tensor, encoded `batch` images at a time on the
    encoder's device (x may live anywhere).

    `x` is an (N, 3, H, W) float tensor in [-1, 1], or a uint8 (N, H, W, 3) array / tensor as
    `data.load_array` returns it, converted one batch at a time (so a large image set never
    exists as float in memory).
    """
    from .data import to_float
    from .precision import autocast, model_device
    dev = model_device(encoder)
    x = x if torch.is_tensor(x) else torch.from_numpy(x)
    feats = []
    for i in range(0, len(x), batch):
        b = x[i:i + batch]
        b = to_float(b) if b.dtype == torch.uint8 else b
        with autocast(dev, precision):
            feats.append(encoder(b.to(dev), [layer])[layer].float().cpu())
    return torch.cat(feats)
