"""SE-ResNet (Hu et al. 2018), state_dict-compatible with timm's ``seresnet50`` / ``seresnet101``.

A squeeze-and-excitation module (global average pool, 1x1 conv down by 16, ReLU, 1x1 conv up,
sigmoid gate) rescales the channels of every bottleneck's residual branch, after ``bn3`` and
before the residual sum. timm's keys: ``layerN.M.se.fc1`` / ``se.fc2`` (1x1 convs with bias) on
torchvision's ResNet layout.
"""

from __future__ import annotations

from torch import Tensor, nn

from .resnet import Bottleneck

SE_REDUCTION = 16


class SqueezeExcite(nn.Module):
    """``x * sigmoid(fc2(relu(fc1(mean(x)))))``: channel gains from the whole feature map."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class SEBottleneck(Bottleneck):
    """torchvision's bottleneck with a squeeze-and-excitation module on the branch, before the sum."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__(inplanes, planes, stride, None, groups, base_width)
        self.se = SqueezeExcite(planes * self.expansion)
        self.downsample = downsample  # registered after se: timm's key order

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


__all__ = ["SEBottleneck", "SE_REDUCTION", "SqueezeExcite"]
