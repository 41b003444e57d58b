"""Logits -> probabilities -> top-k, and running a batch through a runner within its batch limits.

Shared by ``resnet-deploy predict`` and the edge bundle's ``infer.py`` (which carries a copy of
this module), so both report the same numbers for the same logits. numpy only, torch-free.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import UserError


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise UserError(f"expected logits of shape [N, classes], got {list(x.shape)}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise UserError(f"the model produced NaN or Inf logits for {bad} of {len(x)} image(s); the artifact is broken "
                        "(check it with `resnet-deploy parity`)")
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def top_k(logits: np.ndarray, labels: Sequence[str], k: int = 5) -> list[list[dict[str, Any]]]:
    """For each row: the ``k`` most probable classes, ``[{rank, index, label, probability, logit}]``.

    Ties are broken by the lower class index (a stable sort), so the order is reproducible.
    """
    logits = np.asarray(logits)
    probs = softmax(logits)
    if probs.shape[1] != len(labels):
        raise UserError(f"the model returned {probs.shape[1]} classes but there are {len(labels)} labels")
    if k < 1:
        raise UserError(f"--top must be at least 1 (got {k})")
    k = min(k, probs.shape[1])
    rows = []
    for i in range(len(probs)):
        order = np.argsort(-probs[i], kind="stable")[:k]
        rows.append([{"rank": r + 1, "index": int(c), "label": labels[c], "probability": float(probs[i, c]),
                      "logit": float(logits[i, c])} for r, c in enumerate(order)])
    return rows


def infer_in_batches(runner, batch: np.ndarray, *, min_batch: int = 1, max_batch: int | None = None) -> np.ndarray:
    """Run ``batch`` through ``runner`` in chunks the artifact accepts.

    ``max_batch`` caps a chunk (an engine's profile maximum, or a fixed-batch ONNX's batch);
    a chunk smaller than ``min_batch`` is padded with zeros and the padding's outputs dropped.
    """
    n = len(batch)
    step = max(1, max_batch or n)
    outs = []
    for start in range(0, n, step):
        chunk = batch[start:start + step]
        real = len(chunk)
        if real < min_batch:
            pad = np.zeros((min_batch - real, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        logits = np.asarray(runner.infer(np.ascontiguousarray(chunk)), dtype=np.float32)
        outs.append(logits[:real])
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def infer_all(runner, batch: np.ndarray) -> np.ndarray:
    """Run any number of images through an open runner, in the chunks its input spec accepts."""
    spec = getattr(runner, "input_spec", None)
    if spec is None:
        return np.asarray(runner.infer(batch), dtype=np.float32)
    return infer_in_batches(runner, batch, min_batch=spec.min_batch, max_batch=spec.max_batch)


__all__ = ["infer_all", "infer_in_batches", "softmax", "top_k"]
