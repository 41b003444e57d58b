"""ONNX Runtime as a runner (CPU, or the CUDA provider when onnxruntime-gpu is installed)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, UserError
from .base import Runner

PROVIDERS = {"ort": ["CPUExecutionProvider"], "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("ort", "onnxruntime is not installed (pip install onnxruntime)") from None
    return onnxruntime


class OrtRunner(Runner):
    def __init__(self, onnx_path: str | os.PathLike[str], *, backend: str = "ort", threads: int | None = None,
                 precision: str | None = None):
        ort = import_ort()
        self.backend = backend
        self.path = str(onnx_path)
        self.precision = precision
        wanted = PROVIDERS[backend]
        if wanted[0] not in ort.get_available_providers():
            raise BackendUnavailable(backend, f"{wanted[0]} is not in this onnxruntime build "
                                              f"(available: {', '.join(ort.get_available_providers())})")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        if not os.path.isfile(self.path):
            raise UserError(f"ONNX model not found: {self.path}")
        try:
            self.session = ort.InferenceSession(self.path, options, providers=wanted)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad models
            raise UserError(f"onnxruntime cannot load {self.path}: {str(e).splitlines()[0][:300]}") from None
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0].name
        self.input_dtype = np.float16 if self.input.type == "tensor(float16)" else np.float32

    def infer(self, batch: np.ndarray) -> np.ndarray:
        fixed = self.input.shape[0]
        if isinstance(fixed, int) and batch.shape[0] != fixed:
            raise UserError(f"{self.path} has a fixed batch of {fixed}; got {batch.shape[0]} images")
        out = self.session.run([self.output], {self.input.name: batch.astype(self.input_dtype, copy=False)})[0]
        return out.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        ort = import_ort()
        return {"backend": self.backend, "version": ort.__version__, "device": "cpu" if self.backend == "ort" else "cuda",
                "providers": self.session.get_providers(), "model": self.path, "precision": self.precision}
