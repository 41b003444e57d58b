"""AlexNet and VGG, the plain convolution stacks ResNet was measured against, state_dict-compatible
with torchvision's ``alexnet``, ``vgg11`` ... ``vgg19`` and ``vgg11_bn`` ... ``vgg19_bn``.

Both are ``features`` (convs, ReLUs, max pools; VGG's ``_bn`` variants with a BatchNorm after each
conv), an adaptive average pool to a fixed grid, and ``classifier``: three Linear layers with
ReLU and dropout. The keys are torchvision's Sequential indices (``features.0``, ``classifier.6``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .resnet import CardedModule

# torchvision's configurations: output channels of each 3x3 conv, "M" a 2x2 max pool.
VGG_CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class PlainConvNet(CardedModule):
    """``features`` -> adaptive average pool -> flatten -> ``classifier``; the last Linear is the head."""

    features: nn.Sequential
    avgpool: nn.AdaptiveAvgPool2d
    classifier: nn.Sequential

    def forward_features(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        for layer in list(self.classifier)[:-1]:  # each one a registered submodule (torch.fx traces it)
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier[-1](self.forward_features(x))

    @property
    def head(self) -> nn.Linear:
        return self.classifier[-1]

    def stages(self) -> dict[str, nn.Module]:
        """The output of each max pool (a resolution), and the classifier's."""
        pools = [(i, m) for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        return {**{f"features.{i}": m for i, m in pools}, "classifier": self.head}


class AlexNet(PlainConvNet):
    """torchvision's AlexNet (the one-GPU variant of Krizhevsky's "one weird trick" paper)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                                        nn.Linear(4096, num_classes))


class VGG(PlainConvNet):
    """Simonyan and Zisserman's configurations A, B, D, E (VGG-11/13/16/19), optionally with BatchNorm."""

    def __init__(self, depth: int, batch_norm: bool = False, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in VGG_CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(channels, int(v), kernel_size=3, padding=1))
            layers += [nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
            channels = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        # torchvision's order (dropout after each ReLU), so the Linear layers are classifier.0, .3, .6
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(4096, num_classes))


__all__ = ["AlexNet", "PlainConvNet", "VGG", "VGG_CONFIGS"]
