"""Class names for predictions: the 1000 ImageNet classes shipped with the package, or a user file.

A label file is UTF-8 text with one class name per line, in class-index order (line 1 is class 0).
Blank lines at the end are ignored; a blank line inside the file is an error, because it would
silently shift every class after it. Torch-free (the edge bundle's ``infer.py`` uses it too).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError
from .schema import read_regular_text

IMAGENET_LABELS_FILE = Path(__file__).resolve().parent / "data" / "imagenet_classes.txt"
IMAGENET_CLASSES = 1000
# CIFAR-10's classes in its label order (the order the trained CIFAR ResNets' logits use).
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
LABEL_SETS = ("imagenet", "cifar10")
MAX_LABELS_BYTES = 16 << 20  # ImageNet-21k's names are about 1 MB


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Read a label file: one name per line, class-index order. Any problem is a one-line :class:`UserError`."""
    p = Path(path)
    # a regular file of bounded size (a FIFO or a device would hang or read without end); a byte-order mark
    # (Windows editors) is not part of class 0's name
    text = read_regular_text(p, "label file", MAX_LABELS_BYTES)
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise UserError(f"label file {p} is empty")
    blank = [i + 1 for i, line in enumerate(lines) if not line]
    if blank:
        raise UserError(f"label file {p} has a blank line at line {blank[0]}; every class needs a name (one per line)")
    return lines


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision's order (index 0 = tench)."""
    if not IMAGENET_LABELS_FILE.is_file():
        raise UserError(f"the packaged ImageNet class names are missing ({IMAGENET_LABELS_FILE}); reinstall resnet-deploy")
    return read_labels(IMAGENET_LABELS_FILE)


def builtin_labels(label_set: str = "imagenet") -> list[str]:
    """The class names a model's own classifier uses (its metadata's ``label_set``)."""
    if label_set == "cifar10":
        return list(CIFAR10_LABELS)
    if label_set == "imagenet":
        return imagenet_labels()
    raise UserError(f"the model has its own classes (label set {label_set!r}): pass --labels FILE with one name per class")


def load_labels(path: str | os.PathLike[str] | None = None, num_classes: int | None = None,
                label_set: str = "imagenet") -> list[str]:
    """``path``'s labels (the built-in ``label_set``'s when ``None``), checked against the model's ``num_classes``."""
    if path is None:
        labels = builtin_labels(label_set)
        source = "the built-in CIFAR-10 class names" if label_set == "cifar10" else "the built-in ImageNet class names"
    else:
        labels = read_labels(path)
        source = f"label file {path}"
    if num_classes is not None and len(labels) != num_classes:
        hint = " (pass --labels FILE with one name per class)" if path is None else ""
        raise UserError(f"{source} has {len(labels)} names but the model has {num_classes} classes{hint}")
    return labels


__all__ = ["CIFAR10_LABELS", "IMAGENET_CLASSES", "IMAGENET_LABELS_FILE", "LABEL_SETS", "builtin_labels", "imagenet_labels",
           "load_labels", "read_labels"]
