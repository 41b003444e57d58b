"""The networks (torch): the ResNet family and its relatives, the architecture table, weights, and what a network is.

    from resnet_deploy.model import create_model
    model = create_model(50)                      # seeded random, realistic statistics
    model = create_model(50, weights="r50.pth")   # a torchvision checkpoint
    model.card                                    # ModelCard: arch, spec, classes, weights
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..errors import UserError
from .archs import (
    ARCHS,
    CIFAR_ARCHS,
    CIFAR_DEPTHS,
    DEPTHS,
    FAMILIES,
    OTHER_ARCHS,
    PREACT_ARCHS,
    PREACT_PREFIX,
    ArchSpec,
    arch_spec,
    build_network,
    family_members,
    resolve_arch,
    select_archs,
)
from .card import ModelCard
from .info import describe_network
from .ref import ModelRef
from .resnet import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNet
from .weights import (
    RANDOM_SEED,
    WeightsInfo,
    clear_seeded_cache,
    load_weights,
    random_source,
    read_state_dict,
    seeded,
    state_dict_sha256,
)

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024  # describe() runs the network once at this size on the CPU


def create_model(depth: int | str, *, num_classes: int | None = None, weights: str | os.PathLike[str] | None = None,
                 preact: bool = False, seed: int = RANDOM_SEED) -> nn.Module:
    """A network in eval mode, carrying its :class:`ModelCard` as ``.card`` (the public face of :func:`build_model`).

    ``depth`` is 18/34/50/101/152 or an architecture name (``"resnext50_32x4d"``,
    ``"wide_resnet50_2"``, ``"preact_resnet50"``, ``"seresnet50"``, ``"densenet121"``, ``"vgg16_bn"``,
    ``"alexnet"``, ``"googlenet"``), or 20/32/44/56/110 for the paper's CIFAR-10
    ResNets (32x32 input, 10 classes). ``weights`` is a torchvision-format
    ``.pth``/``.pt`` or ``.safetensors`` file; without it the model is seeded-random with
    BatchNorm statistics re-estimated on real photographs (so it behaves like a trained
    network numerically). ``num_classes=None`` takes the count from the checkpoint, else the
    architecture's (1000 ImageNet, 10 CIFAR-10).
    """
    return build_model(ModelRef.of(depth, weights=weights, num_classes=num_classes, preact=preact, seed=seed))


def build_model(ref: ModelRef) -> nn.Module:
    """The network ``ref`` names, with its weights loaded (or seeded random), in eval mode, with ``.card``."""
    spec = ref.spec
    num_classes = ref.num_classes
    if num_classes is None:
        num_classes = spec.default_classes
        if ref.weights is not None:
            state = read_state_dict(ref.weights)
            head = spec.rename_keys(state).get(f"{spec.head_key}.weight")
            num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else num_classes
    model = build_network(ref.arch, num_classes)
    info = (load_weights(model, ref.weights, spec.rename_keys) if ref.weights is not None
            else seeded(model, (ref.arch, num_classes), ref.seed, ref.preprocess))  # statistics at the size it will see
    model.eval()
    model.card = ModelCard(ref.arch, spec, num_classes, info)
    return model


def describe(depth: int | str, *, num_classes: int | None = None, preact: bool = False,
             image_size: int | None = None) -> dict[str, Any]:
    """Parameters, MACs, stage shapes and layer count of an architecture (no weights needed); ``None``: its own."""
    arch = resolve_arch(depth, preact)
    spec = arch_spec(arch)
    n = spec.default_classes if num_classes is None else num_classes
    size = spec.recipe.image_size if image_size is None else image_size
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise UserError(f"--image-size must be within {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} (got {size})")
    return {"arch": arch, "family": spec.family, "depth": spec.depth, "num_classes": n,
            **describe_network(build_network(arch, n), size)}


__all__ = ["ARCHS", "ArchSpec", "BasicBlock", "Bottleneck", "CIFAR_ARCHS", "CIFAR_DEPTHS", "DEPTHS", "FAMILIES", "ModelCard",
           "clear_seeded_cache",
           "ModelRef", "OTHER_ARCHS", "build_model", "family_members",
           "PREACT_ARCHS", "PREACT_PREFIX", "PreActBasicBlock", "PreActBottleneck", "RANDOM_SEED", "ResNet",
           "WeightsInfo", "arch_spec", "build_network", "create_model", "describe", "describe_network", "random_source",
           "read_state_dict",
           "resolve_arch", "select_archs", "state_dict_sha256"]
