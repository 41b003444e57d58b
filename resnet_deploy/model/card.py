"""What a model is, in one record: architecture, table row, classes, weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..preprocess import Preprocess
from .archs import ArchSpec
from .weights import WeightsInfo


@dataclass(frozen=True)
class ModelCard:
    """The facts :func:`~resnet_deploy.model.create_model` knows about the module it returns
    (``model.card``): what export records in the ONNX metadata and the manifest."""

    arch: str
    spec: ArchSpec
    num_classes: int
    weights: WeightsInfo

    @property
    def recipe(self) -> Preprocess:
        """The evaluation preprocessing the architecture's weights expect (224 ImageNet, 32x32 CIFAR-10)."""
        return self.spec.recipe

    @property
    def label_set(self) -> str:
        """``imagenet`` / ``cifar10`` where the classifier is the architecture's own, else ``custom`` (give --labels)."""
        return self.spec.label_set if self.num_classes == self.spec.default_classes else "custom"

    def facts(self) -> dict[str, Any]:
        return {"arch": self.arch, "family": self.spec.family, "depth": self.spec.depth, "preact": self.spec.preact,
                "groups": self.spec.groups, "width_per_group": self.spec.width_per_group,
                "num_classes": self.num_classes, "label_set": self.label_set,
                "weights_source": self.weights.source, "weights_sha256": self.weights.sha256,
                "weights_file_sha256": self.weights.file_sha256}
