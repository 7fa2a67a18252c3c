"""AlexNet with torchvision's exact architecture, parameter names, initialisation order and
forward pass, defined here so that the commands that only need AlexNet (invert, reencode,
interpolate, visualize, sample, train) never import torchvision: its import costs about a second
on a CPU, a third of a fresh `deepsim invert`. MobileNetV2 and other torchvision classifiers are
still built by torchvision (imported where they are)."""

from __future__ import annotations

import torch
import torch.nn as nn


class AlexNet(nn.Module):
    """torchvision.models.alexnet(weights=None), module for module: the same state-dict keys
    (features.0 … features.10, classifier.1/.4/.6), the same default initialisation drawn in the
    same order (so a seeded random AlexNet is the same network), the same outputs."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised images → (B, num_classes) logits."""
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


def alexnet() -> AlexNet:
    """A randomly initialised AlexNet (torchvision.models.alexnet(weights=None) without torchvision)."""
    return AlexNet()
