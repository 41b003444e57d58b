"""The networks (torch): the ResNet family, its architecture table, weights, and what a network is.

    from resnet_deploy.model import create_model
    model = create_model(50)                      # seeded random, realistic statistics
    model = create_model(50, weights="r50.pth")   # a torchvision checkpoint
    model.card                                    # ModelCard: arch, spec, classes, weights
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .archs import ARCHS, DEPTHS, PREACT_ARCHS, PREACT_PREFIX, ArchSpec, arch_spec, build_network, resolve_arch
from .card import ModelCard
from .info import describe_network
from .resnet import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNet
from .weights import BN_CALIBRATION_IMAGES, RANDOM_SEED, WeightsInfo, load_weights, randomize, read_state_dict


def create_model(depth: int | str, *, num_classes: int | None = 1000, weights: str | os.PathLike[str] | None = None,
                 preact: bool = False, seed: int = RANDOM_SEED) -> nn.Module:
    """A ResNet in eval mode, carrying its :class:`ModelCard` as ``.card``.

    ``depth`` is 18/34/50/101/152 or an architecture name (``"resnext50_32x4d"``,
    ``"wide_resnet50_2"``, ``"preact_resnet50"``). ``weights`` is a torchvision-format
    ``.pth``/``.pt`` or ``.safetensors`` file; without it the model is seeded-random with
    BatchNorm statistics re-estimated on real photographs (so it behaves like a trained
    network numerically). ``num_classes=None`` takes the count from the checkpoint.
    """
    arch = resolve_arch(depth, preact)
    if num_classes is None:
        num_classes = 1000
        if weights is not None:
            fc = read_state_dict(weights).get("fc.weight")
            num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 1000
    model = build_network(arch, num_classes)
    info = load_weights(model, weights) if weights is not None else randomize(model, seed)
    model.eval()
    model.card = ModelCard(arch, arch_spec(arch), num_classes, info)
    return model


def describe(depth: int | str, *, num_classes: int = 1000, preact: bool = False, image_size: int = 224) -> dict[str, Any]:
    """Parameters, MACs, stage shapes and layer count of an architecture (no weights needed)."""
    arch = resolve_arch(depth, preact)
    return {"arch": arch, "num_classes": num_classes, **describe_network(build_network(arch, num_classes), image_size)}


__all__ = ["ARCHS", "ArchSpec", "BN_CALIBRATION_IMAGES", "BasicBlock", "Bottleneck", "DEPTHS", "ModelCard",
           "PREACT_ARCHS", "PREACT_PREFIX", "PreActBasicBlock", "PreActBottleneck", "RANDOM_SEED", "ResNet",
           "WeightsInfo", "arch_spec", "build_network", "create_model", "describe", "describe_network", "read_state_dict",
           "resolve_arch"]
