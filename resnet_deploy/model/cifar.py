"""The paper's CIFAR-10 ResNets (He et al. 2015, section 4.2): depth 6n+2 = 20, 32, 44, 56, 110.

A 3x3 convolution with 16 channels, BN, ReLU; three stages of n basic blocks with 16, 32 and 64
channels, the first block of stages 2 and 3 with stride 2; global average pooling; a linear
classifier named ``linear``. Where a block changes shape the shortcut is "option A": the
identity subsampled (every second pixel) and zero-padded with planes/4 channels on each side,
so it has no weights. State_dict keys follow the public trained checkpoints
(``conv1``, ``layer1.0.bn2``, ``linear``; see tests/data/cifar10-resnet/).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import CardedModule, conv3x3


class ShortcutA(nn.Module):
    """Option A: subsample the identity by ``stride`` and zero-pad ``pad`` channels on each side."""

    def __init__(self, stride: int, pad: int):
        super().__init__()
        self.stride, self.pad = stride, pad

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad, self.pad))


class CifarBasicBlock(nn.Module):
    expansion = 1
    preact = False
    branch_end = "bn2"

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        changes = stride != 1 or inplanes != planes
        self.shortcut = ShortcutA(stride, (planes - inplanes) // 2) if changes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(CardedModule):
    def __init__(self, layers: tuple[int, int, int], num_classes: int = 10):
        super().__init__()
        self.inplanes = 16
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, layers[0], stride=1)
        self.layer2 = self._make_layer(32, layers[1], stride=2)
        self.layer3 = self._make_layer(64, layers[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():  # the checkpoints' training script initialised convs and the classifier with Kaiming normal
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(CifarBasicBlock(self.inplanes, planes, s))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.forward_features(x))

    @property
    def head(self) -> nn.Linear:
        return self.linear

    def stages(self) -> dict[str, nn.Module]:
        return {"conv1": self.conv1, "layer1": self.layer1, "layer2": self.layer2, "layer3": self.layer3,
                "linear": self.linear}


__all__ = ["CifarBasicBlock", "CifarResNet", "ShortcutA"]
