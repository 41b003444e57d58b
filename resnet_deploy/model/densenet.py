"""DenseNet (Huang et al. 2017), state_dict-compatible with torchvision's ``densenet121/161/169/201``.

A 7x7 stem, four dense blocks joined by transitions (BN-ReLU-1x1 conv-2x2 average pool), a
final BN, ReLU, global pool and ``classifier``. Every dense layer is BN-ReLU-1x1 conv (to
``bn_size * growth`` channels)-BN-ReLU-3x3 conv (``growth`` channels) on the concatenation of all
earlier outputs of its block, and a block returns that concatenation. The BN in front of each
layer normalises a concatenation, not a conv's output, so it cannot fold into a conv (TensorRT
makes it a scale layer); the BN between the two convs does fold. torchvision's memory-efficient
checkpointing only matters in training and is left out.

Old checkpoints (torchvision's own downloads among them) name layers ``norm.1``/``conv.2``;
:func:`rename_legacy_keys` maps them as torchvision's loader does.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import CardedModule

# depth -> (growth rate, layers per block, stem channels)
DENSENET_CONFIGS: dict[int, tuple[int, tuple[int, int, int, int], int]] = {
    121: (32, (6, 12, 24, 16), 64),
    161: (48, (6, 12, 36, 24), 96),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
}
BN_SIZE = 4
_LEGACY_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))\Z")


def rename_legacy_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``...denselayer1.norm.1.weight`` -> ``...denselayer1.norm1.weight`` (pre-0.4 torchvision checkpoints)."""
    out = {}
    for key, value in state.items():
        m = _LEGACY_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int = BN_SIZE):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    """``denselayer1`` ... ``denselayerN``; each sees the concatenation of the block input and every earlier output."""

    def __init__(self, layers: int, cin: int, growth: int):
        super().__init__({f"denselayer{i + 1}": DenseLayer(cin + i * growth, growth) for i in range(layers)})

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(CardedModule):
    def __init__(self, depth: int, num_classes: int = 1000):
        super().__init__()
        growth, blocks, channels = DENSENET_CONFIGS[depth]
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, channels, kernel_size=7, stride=2, padding=3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(channels))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        for i, n in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, channels, growth))
            channels += n * growth
            if i != len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.features(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_features(x))

    @property
    def head(self) -> nn.Linear:
        return self.classifier

    def stages(self) -> dict[str, nn.Module]:
        f = self.features
        return {"pool0": f.pool0, **{n: m for n, m in f.named_children() if n.startswith(("denseblock", "transition"))},
                "classifier": self.classifier}


__all__ = ["DENSENET_CONFIGS", "DenseBlock", "DenseLayer", "DenseNet", "Transition", "rename_legacy_keys"]
