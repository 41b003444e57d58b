"""The ResNet family, state_dict-compatible with torchvision.

ResNet-18/34 use :class:`BasicBlock`, ResNet-50/101/152 and the ResNeXt / Wide variants use
:class:`Bottleneck` with the stride in the 3x3 convolution ("v1.5", as torchvision).
``preact=True`` switches to the pre-activation unit (BN-ReLU-conv, He et al. 2016); those
models have no torchvision counterpart, so their keys are our own.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import Tensor, nn

from .errors import UserError


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, preact: bool = False):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.preact = preact
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(inplanes if preact else planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.preact:
            out = self.relu(self.bn1(x))
            identity = self.downsample(out) if self.downsample is not None else x
            out = self.conv1(out)
            out = self.conv2(self.relu(self.bn2(out)))
            return out + identity
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, preact: bool = False):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.preact = preact
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(inplanes if preact else width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(width if preact else planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.preact:
            out = self.relu(self.bn1(x))
            identity = self.downsample(out) if self.downsample is not None else x
            out = self.conv1(out)
            out = self.conv2(self.relu(self.bn2(out)))
            out = self.conv3(self.relu(self.bn3(out)))
            return out + identity
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000,
                 groups: int = 1, width_per_group: int = 64, preact: bool = False):
        super().__init__()
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.preact = preact
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        # Pre-activation units leave the last residual sum un-normalised: one BN-ReLU closes the trunk.
        self.final_bn = nn.BatchNorm2d(512 * block.expansion) if preact else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            proj = conv1x1(self.inplanes, planes * block.expansion, stride)
            # torchvision's projection is conv+BN; the pre-activation projection sees a normalised input.
            downsample = nn.Sequential(proj) if self.preact else nn.Sequential(proj, nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, self.preact)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width, preact=self.preact)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.final_bn is not None:
            x = self.relu(self.final_bn(x))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


@dataclass(frozen=True)
class ArchSpec:
    name: str
    block: type
    layers: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64


_B, _K = BasicBlock, Bottleneck
ARCHS: dict[str, ArchSpec] = {s.name: s for s in [
    ArchSpec("resnet18", _B, (2, 2, 2, 2)),
    ArchSpec("resnet34", _B, (3, 4, 6, 3)),
    ArchSpec("resnet50", _K, (3, 4, 6, 3)),
    ArchSpec("resnet101", _K, (3, 4, 23, 3)),
    ArchSpec("resnet152", _K, (3, 8, 36, 3)),
    ArchSpec("resnext50_32x4d", _K, (3, 4, 6, 3), groups=32, width_per_group=4),
    ArchSpec("resnext101_32x8d", _K, (3, 4, 23, 3), groups=32, width_per_group=8),
    ArchSpec("resnext101_64x4d", _K, (3, 4, 23, 3), groups=64, width_per_group=4),
    ArchSpec("wide_resnet50_2", _K, (3, 4, 6, 3), width_per_group=128),
    ArchSpec("wide_resnet101_2", _K, (3, 4, 23, 3), width_per_group=128),
]}
DEPTHS = (18, 34, 50, 101, 152)
PREACT_PREFIX = "preact_"


def resolve_arch(depth: int | str, preact: bool = False) -> str:
    """Turn ``50``, ``"50"``, ``"resnet50"``, ``"resnext50_32x4d"`` or ``"preact_resnet50"`` into an arch name."""
    s = str(depth).strip().lower()
    if s.startswith(PREACT_PREFIX):
        preact, s = True, s[len(PREACT_PREFIX):]
    if s.isdigit():
        s = f"resnet{s}"
    if s not in ARCHS:
        valid = ", ".join(str(d) for d in DEPTHS) + " or an architecture: " + ", ".join(ARCHS)
        raise UserError(f"unknown depth or architecture {depth!r}; valid: {valid}")
    return PREACT_PREFIX + s if preact else s


def build_network(arch: str, num_classes: int = 1000) -> ResNet:
    """An untrained network of ``arch`` (as :func:`resolve_arch` names it), torchvision initialisation."""
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    preact = arch.startswith(PREACT_PREFIX)
    spec = ARCHS[arch[len(PREACT_PREFIX):] if preact else arch]
    return ResNet(spec.block, list(spec.layers), num_classes, spec.groups, spec.width_per_group, preact)


def stage_modules(model: ResNet) -> dict[str, nn.Module]:
    """The modules whose outputs describe the network's stages (for ``info``)."""
    return {"conv1": model.conv1, "maxpool": model.maxpool, "layer1": model.layer1, "layer2": model.layer2,
            "layer3": model.layer3, "layer4": model.layer4, "fc": model.fc}

