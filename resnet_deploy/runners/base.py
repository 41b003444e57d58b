"""The one runner interface every backend implements.

A runner loads one model for one backend, infers a float32 NCHW batch and returns float32
logits as numpy, and says what it is. Parity, eval, predict and bench only ever talk to this
interface (the split Polygraphy makes between runners and a comparator).

This module imports numpy only, so the torch-free edge runner can build on it.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Runner(abc.ABC):
    """Load a model, infer batches, report what it is.

    Subclasses set :attr:`backend` (a short stable name such as ``"ort"``) and implement
    :meth:`infer` and :meth:`describe`. Use as a context manager to release resources.
    """

    backend: str = "?"

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one float32 NCHW batch; return float32 logits of shape [N, classes]."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Backend, version, device, precision and anything else that identifies the run."""

    def close(self) -> None:
        """Release device memory, sessions, streams. Safe to call twice."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
