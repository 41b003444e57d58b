"""The ResNet family, state_dict-compatible with torchvision.

Variants are block classes and builder arguments, as in torchvision's ``models/resnet.py``:
:class:`BasicBlock` (ResNet-18/34) and :class:`Bottleneck` (ResNet-50/101/152, ResNeXt, Wide;
the stride in the 3x3 convolution, "v1.5", as torchvision), and their pre-activation
counterparts :class:`PreActBasicBlock` / :class:`PreActBottleneck` (BN-ReLU-conv, He et al.
2016). Each ``forward`` is a straight run of layers. Pre-activation models have no torchvision
counterpart, so their keys are our own: a projection without BatchNorm, and one BN-ReLU
(``final_bn``) closing the trunk.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1
    preact = False
    branch_end = "bn2"  # the last layer of the residual branch (its gain is what a trained network keeps small)

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(self.bn1_channels(inplanes, planes))
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    @staticmethod
    def bn1_channels(inplanes: int, planes: int) -> int:
        return planes

    @classmethod
    def projection(cls, inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
        """torchvision's projection shortcut: 1x1 conv + BN."""
        return nn.Sequential(conv1x1(inplanes, outplanes, stride), nn.BatchNorm2d(outplanes))

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class PreActBasicBlock(BasicBlock):
    """BN-ReLU-conv twice; the shortcut taps the normalised input where it projects."""

    preact = True
    branch_end = "conv2"

    @staticmethod
    def bn1_channels(inplanes: int, planes: int) -> int:
        return inplanes

    @classmethod
    def projection(cls, inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
        """The pre-activation projection sees a normalised input: a 1x1 conv alone."""
        return nn.Sequential(conv1x1(inplanes, outplanes, stride))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        identity = self.downsample(out) if self.downsample is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class Bottleneck(nn.Module):
    expansion = 4
    preact = False
    branch_end = "bn3"

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        c1, c3 = self.bn_channels(inplanes, width, planes * self.expansion)
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(c3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    @staticmethod
    def bn_channels(inplanes: int, width: int, outplanes: int) -> tuple[int, int]:
        """Channels of bn1 and bn3 (they normalise a conv's output here)."""
        return width, outplanes

    projection = BasicBlock.projection

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class PreActBottleneck(Bottleneck):
    preact = True
    branch_end = "conv3"

    @staticmethod
    def bn_channels(inplanes: int, width: int, outplanes: int) -> tuple[int, int]:
        """Channels of bn1 and bn3 (they normalise each conv's input here)."""
        return inplanes, width

    projection = PreActBasicBlock.projection

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        identity = self.downsample(out) if self.downsample is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + identity


Block = type[BasicBlock] | type[Bottleneck]


class CardedModule(nn.Module):
    """A network that carries what :func:`~resnet_deploy.model.create_model` knows of it in one
    record, ``self.card`` (a :class:`~resnet_deploy.model.card.ModelCard`); these properties read it."""

    @property
    def arch(self) -> str:
        return self.card.arch

    @property
    def num_classes(self) -> int:
        return self.card.num_classes

    @property
    def weights_info(self):
        return self.card.weights

    @property
    def head(self) -> nn.Linear:
        """The last Linear: the one that makes the logits from :meth:`forward_features`."""
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything before :attr:`head`: the features its logits are made from."""
        raise NotImplementedError


class ResNet(CardedModule):
    """The ImageNet ResNet: 7x7 stem, four stages of ``block``, global pool, linear classifier."""

    def __init__(self, block: Block, layers: list[int], num_classes: int = 1000, groups: int = 1,
                 width_per_group: int = 64):
        super().__init__()
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        # Pre-activation units leave the last residual sum un-normalised: one BN-ReLU closes the trunk.
        features = 512 * block.expansion
        self.final_bn = nn.BatchNorm2d(features) if block.preact else nn.Identity()
        self.final_relu = nn.ReLU(inplace=True) if block.preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(features, num_classes)

        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = block.projection(self.inplanes, planes * block.expansion, stride)
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.final_relu(self.final_bn(x))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def stages(self) -> dict[str, nn.Module]:
        """The modules whose outputs describe the network's stages (for ``info``)."""
        return {"conv1": self.conv1, "maxpool": self.maxpool, "layer1": self.layer1, "layer2": self.layer2,
                "layer3": self.layer3, "layer4": self.layer4, "fc": self.fc}
