"""Which model: :class:`ModelRef`, made once where a user names a model (the CLI and the API) and
passed to every stage and consumer instead of ``depth, weights, num_classes, preact, seed``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from ..artifacts import sha256_file
from ..errors import UserError
from ..limits import MAX_CLASSES, MAX_SEED
from ..preprocess import Preprocess
from .archs import ArchSpec, arch_spec, resolve_arch
from .weights import RANDOM_SEED, random_source


@dataclass(frozen=True)
class ModelRef:
    """A network and its weights, as a request: nothing is built or read until a stage needs it.

    ``arch`` is the resolved architecture name (``--preact`` folded in: ``preact_resnet50``);
    ``weights`` a torchvision-format checkpoint, or ``None`` for the seeded random weights of
    ``seed``; ``num_classes`` the classifier size, ``None`` for the checkpoint's (else the
    architecture's); ``recipe`` the preprocessing the weights were trained with when it is not the
    architecture's (a digits ResNet-18 trained on 32x32 images): the export records it and takes
    its image size. The weights file's digest is read once, when first asked for.
    """

    arch: str
    weights: str | os.PathLike[str] | None = None
    num_classes: int | None = None
    seed: int = RANDOM_SEED
    recipe: Preprocess | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"--seed must be a whole number within 0..{MAX_SEED}, got {self.seed!r}")
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int)
                                             or not 1 <= self.num_classes <= MAX_CLASSES):
            raise UserError(f"--num-classes must be within 1..{MAX_CLASSES}, got {self.num_classes!r}")

    @classmethod
    def of(cls, depth: int | str | ModelRef, *, weights: str | os.PathLike[str] | None = None,
           num_classes: int | None = None, preact: bool = False, seed: int = RANDOM_SEED,
           recipe: Preprocess | None = None) -> ModelRef:
        """The reference for what a command or API call names: ``ModelRef.of(50, weights="r50.pth")``.

        ``depth`` is 18/34/50/101/152, 20..110 (CIFAR-10) or an architecture name; a ``ModelRef``
        is returned as it is (then the other arguments must be left at their defaults).
        """
        if isinstance(depth, ModelRef):
            if (weights, num_classes, preact, seed, recipe) != (None, None, False, RANDOM_SEED, None):
                raise TypeError("a ModelRef already says which weights, classes and seed: pass it alone")
            return depth
        return cls(resolve_arch(depth, preact), weights, num_classes, seed, recipe)

    @property
    def spec(self) -> ArchSpec:
        """The architecture's table entry (family, default classes, preprocessing recipe)."""
        return arch_spec(self.arch)

    @property
    def preprocess(self) -> Preprocess:
        """The evaluation preprocessing: ``recipe``, else the architecture's."""
        return self.recipe or self.spec.recipe

    @property
    def image_size(self) -> int:
        """The input side length the model is evaluated at (224 ImageNet, 32 CIFAR-10)."""
        return self.preprocess.image_size

    @property
    def weights_source(self) -> str:
        """What manifests record as ``weights_source`` for seeded random weights, else the file as given."""
        return random_source(self.seed) if self.weights is None else str(self.weights)

    @cached_property
    def weights_sha256(self) -> str | None:
        """The sha256 of the weights file (``None`` for random weights); a missing file is a :class:`UserError`."""
        if self.weights is None:
            return None
        path = os.path.expanduser(os.fspath(self.weights))
        if not os.path.isfile(path):
            raise UserError(f"weights file not found: {self.weights}")
        return sha256_file(path)


__all__ = ["ModelRef"]
