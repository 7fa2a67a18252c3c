"""Layer names of the registered encoders (no torch: the CLI checks names before loading it)."""

from __future__ import annotations

from typing import Sequence

ALEXNET_TAPS = {
    "conv1": "features.1", "conv2": "features.4", "conv3": "features.7", "conv4": "features.9",
    "conv5": "features.11", "pool5": "features.12",
    "fc6": "classifier.2", "fc7": "classifier.5", "fc8": "classifier.6",
}
ALEXNET_CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5")


def mobilenet_taps() -> dict[str, str]:
    """Layer name → torchvision module path of MobileNetV2's taps (stem, block1…block17, conv18, logits)."""
    taps = {"stem": "features.0"}
    taps.update({f"block{i}": f"features.{i}" for i in range(1, 18)})
    taps["conv18"] = "features.18"
    taps["logits"] = "classifier.1"
    return taps


# every tap plus "prob" (the softmax of the last one); other torchvision encoders are known only
# once built
KNOWN_LAYERS = {
    "alexnet": tuple(ALEXNET_TAPS) + ("prob",),
    "alexnet-random": tuple(ALEXNET_TAPS) + ("prob",),
    "mobilenet_v2": tuple(mobilenet_taps()) + ("prob",),
}


def check_layer_names(encoder: str, layers: Sequence[str]) -> None:
    """UsageError for a layer name a registered encoder does not have (others pass unchecked)."""
    from .errors import UsageError

    valid = KNOWN_LAYERS.get(encoder)
    for layer in layers:
        if valid is not None and layer not in valid:
            raise UsageError(f"unknown layer {layer!r} for encoder {encoder!r}; valid: {', '.join(valid)}")
