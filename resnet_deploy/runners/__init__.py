"""One runner per backend, one interface (:class:`Runner`). Torch-free at import time."""

from .base import Runner

__all__ = ["Runner"]
