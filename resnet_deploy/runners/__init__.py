"""One runner per backend, one interface (:class:`Runner`). Torch-free at import time.

:func:`open_runner` is the one place a backend name becomes a runner, so parity, eval,
predict and bench accept the same ``--engine`` names.
"""

from __future__ import annotations

import os
from typing import Any

from .base import Runner

ONNX_BACKENDS = ("ort", "ort-cuda")
ENGINE_BACKENDS = ("trt", "trt-rtx")
TORCH_BACKENDS = ("torch", "torch-compile")
BACKENDS = TORCH_BACKENDS + ONNX_BACKENDS + ENGINE_BACKENDS


def artifact_kind(backend: str) -> str:
    """What a backend loads: ``"onnx"``, an engine flavour (``"trt"``, ``"trt-rtx"``) or ``"torch"``."""
    from ..errors import UserError

    if backend not in BACKENDS:
        raise UserError(f"unknown engine {backend!r}; choose one of {', '.join(BACKENDS)}")
    return "onnx" if backend in ONNX_BACKENDS else ("torch" if backend in TORCH_BACKENDS else backend)


def open_runner(backend: str, artifact: Any, *, precision: str | None = None, **options: Any) -> Runner:
    """A runner for ``backend``: ``artifact`` is an ONNX path, an engine path, or a torch module."""
    kind = artifact_kind(backend)
    if kind == "onnx":
        from .ort import OrtRunner

        return OrtRunner(os.fspath(artifact), backend=backend, precision=precision, **options)
    if kind == "torch":
        from .torch_runner import TorchRunner

        return TorchRunner(artifact, precision=precision or "fp32", compile=backend == "torch-compile", **options)
    from .tensorrt import TensorRTRunner

    return TensorRTRunner(os.fspath(artifact), flavour=backend, **options)


__all__ = ["Runner", "open_runner", "artifact_kind", "BACKENDS", "ONNX_BACKENDS", "ENGINE_BACKENDS", "TORCH_BACKENDS"]
