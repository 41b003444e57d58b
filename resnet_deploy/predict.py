"""Classify decoded images with an open runner and report the top-k classes.

The images are preprocessed by :mod:`resnet_deploy.preprocess` with the recipe the artifact
records (the same code the parity check, the INT8 calibrator and the edge bundle's ``infer.py``
use), run through the runner in the chunks it accepts, and the logits turned into
probabilities with a softmax (:mod:`resnet_deploy.classify`). Finding or making the artifact
is the caller's (:func:`resnet_deploy.api.predict`).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .classify import infer_all, top_k
from .errors import UserError
from .preprocess import DEFAULT, Preprocess, load_image, preprocess_image


def decode_images(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[str, Any]]:
    """``[(name, PIL image)]``: every file decoded up front, so a bad one fails before any slow work."""
    if not paths:
        raise UserError("no images given")
    return [(str(p), load_image(p)) for p in paths]


def classify_images(runner, images: list[tuple[str, Any]], labels: Sequence[str], *, recipe: Preprocess = DEFAULT,
                    top: int = 5) -> list[dict[str, Any]]:
    """``[{"image": name, "top": [{rank, index, label, probability, logit}, ...]}]`` for each image."""
    if top < 1:
        raise UserError(f"--top must be at least 1 (got {top})")
    batch = np.stack([preprocess_image(img, recipe) for _, img in images])
    logits = infer_all(runner, batch)
    if logits.shape[1] != len(labels):
        raise UserError(f"the model returned {logits.shape[1]} classes but there are {len(labels)} labels")
    return [{"image": name, "top": row} for (name, _), row in zip(images, top_k(logits, labels, top))]


__all__ = ["classify_images", "decode_images"]
