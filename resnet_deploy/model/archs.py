"""The architecture table: how to build every network ``--depth`` names, and what it is.

ResNets are rows of (block, layers, groups, width), as torchvision's builders; the other
families (SE-ResNet, DenseNet, VGG, AlexNet, GoogLeNet) carry their own builder. A family name
(``densenet``, ``vgg``, ...) selects all its networks where a command sweeps several (``bench``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor, nn

from ..errors import UserError
from ..limits import MAX_CLASSES
from ..preprocess import DEFAULT, Preprocess
from .cifar import CifarBasicBlock, CifarResNet
from .densenet import DENSENET_CONFIGS, DenseNet, rename_legacy_keys
from .googlenet import GoogLeNet
from .resnet import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNet
from .seresnet import SEBottleneck
from .vgg import VGG, VGG_CONFIGS, AlexNet

CIFAR10 = Preprocess(image_size=32, resize=32)  # bring an image to 32x32 (shorter side, centre crop), ImageNet mean/std


def _same_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return state


@dataclass(frozen=True)
class ArchSpec:
    name: str
    block: type | None = None         # ResNets: the residual unit
    layers: tuple[int, ...] = ()      # ResNets: units per stage
    groups: int = 1
    width_per_group: int = 64
    family: str = "imagenet"          # imagenet (torchvision's ResNets), cifar, seresnet, densenet, vgg, alexnet, googlenet
    recipe: Preprocess = DEFAULT      # the evaluation preprocessing its weights expect
    label_set: str = "imagenet"       # the class names of its default classifier
    default_classes: int = 1000
    builder: Callable[[int], nn.Module] | None = None  # other families: num_classes -> network
    nominal_depth: int | None = None  # other families: the depth its name gives (VGG-16: 16)
    head_key: str = "fc"              # the classifier's state_dict prefix (its weight's rows are the classes)
    rename_keys: Callable[[dict], dict] = field(default=_same_keys, compare=False)  # old checkpoints' key names

    @property
    def depth(self) -> int:
        """The weighted layers on the main path: 2 or 3 convs per block, the stem and the classifier."""
        if self.nominal_depth is not None:
            return self.nominal_depth
        return sum(self.layers) * (3 if self.block.expansion == 4 else 2) + 2

    @property
    def preact(self) -> bool:
        return bool(getattr(self.block, "preact", False))

    def build(self, num_classes: int | None = None) -> nn.Module:
        n = self.default_classes if num_classes is None else num_classes
        if self.builder is not None:
            return self.builder(n)
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
                                   label_set="cifar10", default_classes=10, head_key="linear")
    for n in (3, 5, 7, 9, 18)
}
CIFAR_DEPTHS = tuple(int(name[len("resnet"):]) for name in CIFAR_ARCHS)


def _vgg(depth: int, bn: bool) -> Callable[[int], nn.Module]:
    return lambda n: VGG(depth, bn, n)


def _densenet(depth: int) -> Callable[[int], nn.Module]:
    return lambda n: DenseNet(depth, n)


# ResNet's relatives (SE-ResNet: timm's names and keys) and predecessors (torchvision's names and keys).
OTHER_ARCHS: dict[str, ArchSpec] = {s.name: s for s in [
    ArchSpec("seresnet50", SEBottleneck, (3, 4, 6, 3), family="seresnet"),
    ArchSpec("seresnet101", SEBottleneck, (3, 4, 23, 3), family="seresnet"),
    *[ArchSpec(f"densenet{d}", family="densenet", builder=_densenet(d), nominal_depth=d, head_key="classifier",
               rename_keys=rename_legacy_keys) for d in DENSENET_CONFIGS],
    ArchSpec("alexnet", family="alexnet", builder=AlexNet, nominal_depth=8, head_key="classifier.6"),
    *[ArchSpec(f"vgg{d}{'_bn' if bn else ''}", family="vgg", builder=_vgg(d, bn), nominal_depth=d, head_key="classifier.6")
      for bn in (False, True) for d in VGG_CONFIGS],
    ArchSpec("googlenet", family="googlenet", builder=GoogLeNet, nominal_depth=22),
]}
# Names that select several networks where a command sweeps (bench --depth densenet).
FAMILIES: dict[str, tuple[str, ...]] = {
    "resnet": tuple(f"resnet{d}" for d in DEPTHS),
    "resnext": tuple(n for n in ARCHS if n.startswith("resnext")),
    "wide_resnet": tuple(n for n in ARCHS if n.startswith("wide_resnet")),
    "preact": tuple(f"{PREACT_PREFIX}resnet{d}" for d in DEPTHS),
    "cifar": tuple(CIFAR_ARCHS),
    **{f: tuple(n for n, s in OTHER_ARCHS.items() if s.family == f)
       for f in ("seresnet", "densenet", "vgg", "alexnet", "googlenet")},
}


def family_members(selector: str) -> tuple[str, ...] | None:
    """The arch names a family selector stands for (``densenet`` -> densenet121 ... densenet201), else ``None``.

    An architecture's own name wins: ``alexnet`` and ``googlenet`` are one network each, so either reading
    selects the same.
    """
    return FAMILIES.get(str(selector).strip().lower())


def select_archs(value: str, preact: bool = False) -> list[str]:
    """What a sweeping ``--depth`` names, as arch names in order, duplicates dropped.

    A comma-separated list of depths (``18``), architecture names (``seresnet50``), ``all`` (the five
    ImageNet ResNets, as always) and family names (``densenet``, ``vgg``, ``seresnet``, ...:
    :data:`FAMILIES`). Each item is checked here, so a typo fails before any work starts.
    """
    archs: list[str] = []
    for part in str(value).replace(" ", "").split(","):
        if not part:
            continue
        members = family_members("resnet" if part.lower() == "all" else part)
        # each member resolved as named: a family without pre-activation units refuses --preact in one line
        archs += [resolve_arch(a, preact) for a in members] if members else [resolve_arch(part, preact)]
    if not archs:
        raise UserError(f"--depth {value!r} names no network")
    return list(dict.fromkeys(archs))


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
    if s in OTHER_ARCHS:
        if preact:
            raise UserError(f"{s} has no pre-activation variant here")
        return s
    if s not in ARCHS:
        if s in FAMILIES:
            raise UserError(f"{depth!r} is a family ({', '.join(FAMILIES[s])}); name one of them here "
                            "(bench --depth sweeps a family)")
        valid = (", ".join(str(d) for d in DEPTHS) + " (ImageNet), " + ", ".join(str(d) for d in CIFAR_DEPTHS)
                 + " (CIFAR-10) or an architecture: " + ", ".join([*ARCHS, *OTHER_ARCHS]) + " (preact_ before a ResNet name); bench also sweeps all or a family: "
                 + ", ".join(FAMILIES))
        raise UserError(f"unknown depth or architecture {depth!r}; valid: {valid}")
    return PREACT_PREFIX + s if preact else s


def arch_spec(arch: str) -> ArchSpec:
    """The table row of an arch name as :func:`resolve_arch` gives it."""
    spec = ARCHS.get(arch) or PREACT_ARCHS.get(arch) or CIFAR_ARCHS.get(arch) or OTHER_ARCHS.get(arch)
    if spec is None:
        raise UserError(f"unknown architecture {arch!r}")
    return spec


def build_network(arch: str, num_classes: int | None = None) -> nn.Module:
    """An untrained network of ``arch`` (as :func:`resolve_arch` names it); ``None`` classes: the arch's default."""
    if num_classes is not None and num_classes < 1:
        raise UserError(f"--num-classes must be at least 1, got {num_classes}")
    if num_classes is not None and num_classes > MAX_CLASSES:
        raise UserError(f"--num-classes must be at most {MAX_CLASSES}, got {num_classes}")
    return arch_spec(arch).build(num_classes)


__all__ = ["ARCHS", "ArchSpec", "CIFAR10", "CIFAR_ARCHS", "CIFAR_DEPTHS", "DEPTHS", "FAMILIES", "OTHER_ARCHS", "PREACT_ARCHS",
           "family_members", "PREACT_PREFIX", "arch_spec", "build_network", "resolve_arch", "select_archs"]
