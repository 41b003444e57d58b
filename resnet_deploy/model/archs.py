"""The architecture table: which blocks, how many, what width, for every name ``--depth`` takes."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import UserError
from ..preprocess import DEFAULT, Preprocess
from .cifar import CifarBasicBlock, CifarResNet
from .resnet import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNet

CIFAR10 = Preprocess(image_size=32, resize=32)  # bring an image to 32x32 (shorter side, centre crop), ImageNet mean/std


@dataclass(frozen=True)
class ArchSpec:
    name: str
    block: type
    layers: tuple[int, ...]
    groups: int = 1
    width_per_group: int = 64
    family: str = "imagenet"          # "imagenet": torchvision's ResNet; "cifar": the paper's 6n+2 CIFAR-10 ResNet
    recipe: Preprocess = DEFAULT      # the evaluation preprocessing its weights expect
    label_set: str = "imagenet"       # the class names of its default classifier
    default_classes: int = 1000

    @property
    def depth(self) -> int:
        """The weighted layers on the main path: 2 or 3 convs per block, the stem and the classifier."""
        return sum(self.layers) * (3 if self.block.expansion == 4 else 2) + 2

    @property
    def preact(self) -> bool:
        return bool(self.block.preact)

    def build(self, num_classes: int | None = None) -> nn.Module:
        n = self.default_classes if num_classes is None else num_classes
        if self.family == "cifar":
            return CifarResNet(tuple(self.layers), n)
        return ResNet(self.block, list(self.layers), n, self.groups, self.width_per_group)


_B, _K = BasicBlock, Bottleneck
# torchvision's names: state_dict-compatible with its models of the same name.
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
PREACT_PREFIX = "preact_"
PREACT_BLOCKS = {BasicBlock: PreActBasicBlock, Bottleneck: PreActBottleneck}
# Pre-activation units (He et al. 2016) of every architecture above: the same table, other blocks.
PREACT_ARCHS: dict[str, ArchSpec] = {
    PREACT_PREFIX + s.name: ArchSpec(PREACT_PREFIX + s.name, PREACT_BLOCKS[s.block], s.layers, s.groups, s.width_per_group)
    for s in ARCHS.values()
}
DEPTHS = (18, 34, 50, 101, 152)
# The paper's CIFAR-10 networks (section 4.2): 6n+2 layers, n basic blocks per stage.
CIFAR_ARCHS: dict[str, ArchSpec] = {
    f"resnet{6 * n + 2}": ArchSpec(f"resnet{6 * n + 2}", CifarBasicBlock, (n, n, n), family="cifar", recipe=CIFAR10,
                                   label_set="cifar10", default_classes=10)
    for n in (3, 5, 7, 9, 18)
}
CIFAR_DEPTHS = tuple(int(name[len("resnet"):]) for name in CIFAR_ARCHS)


def resolve_arch(depth: int | str, preact: bool = False) -> str:
    """Turn ``50``, ``"50"``, ``"resnet50"``, ``"resnext50_32x4d"`` or ``"preact_resnet50"`` into an arch name."""
    s = str(depth).strip().lower()
    if s.startswith(PREACT_PREFIX):
        preact, s = True, s[len(PREACT_PREFIX):]
    if s.isdigit():
        s = f"resnet{s}"
    if s in CIFAR_ARCHS:
        if preact:
            raise UserError(f"{s} is the paper's CIFAR-10 ResNet; it has no pre-activation variant here")
        return s
    if s not in ARCHS:
        valid = (", ".join(str(d) for d in DEPTHS) + " (ImageNet), " + ", ".join(str(d) for d in CIFAR_DEPTHS)
                 + " (CIFAR-10) or an architecture: " + ", ".join(ARCHS))
        raise UserError(f"unknown depth or architecture {depth!r}; valid: {valid}")
    return PREACT_PREFIX + s if preact else s


def arch_spec(arch: str) -> ArchSpec:
    """The table row of an arch name as :func:`resolve_arch` gives it."""
    spec = ARCHS.get(arch) or PREACT_ARCHS.get(arch) or CIFAR_ARCHS.get(arch)
    if spec is None:
        raise UserError(f"unknown architecture {arch!r}")
    return spec


def build_network(arch: str, num_classes: int | None = None) -> nn.Module:
    """An untrained network of ``arch`` (as :func:`resolve_arch` names it); ``None`` classes: the arch's default."""
    if num_classes is not None and num_classes < 1:
        raise UserError(f"--num-classes must be at least 1, got {num_classes}")
    return arch_spec(arch).build(num_classes)


__all__ = ["ARCHS", "ArchSpec", "CIFAR10", "CIFAR_ARCHS", "CIFAR_DEPTHS", "DEPTHS", "PREACT_ARCHS", "PREACT_PREFIX", "arch_spec", "build_network", "resolve_arch"]
