"""The architecture table: which blocks, how many, what width, for every name ``--depth`` takes."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .resnet import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNet


@dataclass(frozen=True)
class ArchSpec:
    name: str
    block: type
    layers: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64

    @property
    def depth(self) -> int:
        """The weighted layers on the main path: 2 or 3 convs per block, the stem and the classifier."""
        return sum(self.layers) * (3 if self.block.expansion == 4 else 2) + 2

    @property
    def preact(self) -> bool:
        return bool(self.block.preact)

    def build(self, num_classes: int = 1000) -> ResNet:
        return ResNet(self.block, list(self.layers), num_classes, self.groups, self.width_per_group)


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


def arch_spec(arch: str) -> ArchSpec:
    """The table row of an arch name as :func:`resolve_arch` gives it."""
    spec = ARCHS.get(arch) or PREACT_ARCHS.get(arch)
    if spec is None:
        raise UserError(f"unknown architecture {arch!r}")
    return spec


def build_network(arch: str, num_classes: int = 1000) -> ResNet:
    """An untrained network of ``arch`` (as :func:`resolve_arch` names it), torchvision initialisation."""
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    return arch_spec(arch).build(num_classes)


__all__ = ["ARCHS", "ArchSpec", "DEPTHS", "PREACT_ARCHS", "PREACT_PREFIX", "arch_spec", "build_network", "resolve_arch"]
