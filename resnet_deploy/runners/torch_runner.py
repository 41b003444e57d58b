"""PyTorch eager (and torch.compile) as a runner: the FP32 reference every parity check uses.

On a CUDA device the runner is device-resident: :meth:`~TorchRunner.stage` copies a batch into
a device tensor it keeps, :meth:`~TorchRunner.enqueue` runs the model on it, both on the
runner's stream (its own with ``own_stream=True``, else torch's current stream).

``compile=True`` wraps the model in ``torch.compile(mode="reduce-overhead")`` (CUDA graphs
through cudagraph trees on a GPU); on a GPU with inductor ``freezing`` and static shapes, one
graph per batch size as the anchors compiled them. ``torch.compiler.cudagraph_mark_step_begin()``
runs before each compiled call, since no output is kept across calls.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BackendUnavailable, UserError
from .base import InputSpec, Runner

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cuda_available() -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install is "no CUDA"
        return False


def _input_channels(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else None


class TorchRunner(Runner):
    backend = "torch"
    allocator = "torch"

    def __init__(self, model: nn.Module, *, backend: str = "torch", device: str = "cpu", precision: str | None = "fp32",
                 channels_last: bool = False, compile: bool | None = None, own_stream: bool = False,
                 tf32: bool | None = None, copy_model: bool = False):
        super().__init__()
        self.backend = backend
        self.model = model
        self.device = torch.device(device)
        self.precision = precision or "fp32"
        self.channels_last = channels_last
        self.compiled = backend == "torch-compile" if compile is None else bool(compile)
        if self.compiled:
            self.backend = "torch-compile"
        self.own_stream = own_stream
        self.tf32 = tf32
        self.copy_model = copy_model
        self.notes: list[str] = []
        self._fn: Any = None
        self._stream = None
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None

    @property
    def device_resident(self) -> bool:  # type: ignore[override]
        return self.device.type == "cuda"

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> InputSpec:
        if self.device.type == "cuda" and not cuda_available():
            raise BackendUnavailable("torch (CUDA)", "no CUDA device")
        if self.precision not in DTYPES:
            raise BackendUnavailable(self.backend, f"PyTorch has no {self.precision} path in this toolkit")
        self.dtype = DTYPES[self.precision]
        self.notes = []
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        model = copy.deepcopy(self.model) if self.copy_model else self.model
        self._module = model.eval().to(self.device, self.dtype, memory_format=self.memory_format)
        if self.device.type == "cuda":
            if self.tf32 is not None:
                # FP32 means FP32 unless asked: TF32 convolutions miss the FP32 parity bar (rel. L2 ~3e-4 > 1e-4).
                torch.backends.cuda.matmul.allow_tf32 = self.tf32
                torch.backends.cudnn.allow_tf32 = self.tf32
            self.notes.append("channels-last" if self.channels_last else "contiguous (NCHW)")
            self.notes.append("TF32 allowed" if self.tf32 else "TF32 off")
            if self.own_stream:
                self._stream = torch.cuda.Stream(self.device)
        if self.compiled:
            if self.device.type == "cuda":
                import torch._dynamo.config as dynamo_config
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True
                # One static graph (and one CUDA graph) per batch size, as the anchors compiled them,
                # rather than a dynamic-shape kernel after the second batch size.
                dynamo_config.automatic_dynamic_shapes = False
                self.notes.append("inductor freezing, static shapes")
            self._fn = torch.compile(self._module, mode="reduce-overhead")
            self.notes.append('torch.compile(mode="reduce-overhead")' + (" (CUDA graphs)" if self.device.type == "cuda" else ""))
        else:
            self._fn = self._module
        return InputSpec(name="input", dtype=np.float32, sample_shape=(_input_channels(self._module), None, None),
                         source=type(self.model).__name__)

    def _close(self) -> None:
        self._fn = self._x = self._y = None
        self._module = None
        if self.device.type == "cuda" and cuda_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ running
    def _on_stream(self):
        return torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        return self._fn(x)

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).to(self.device, self.dtype, non_blocking=True)
        return x.contiguous(memory_format=self.memory_format)

    @torch.inference_mode()
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._on_stream():
            y = self._call(self._to_device(batch)).float().cpu()
        return y.numpy()

    @torch.inference_mode()
    def _stage(self, batch: np.ndarray) -> None:
        with self._on_stream():
            shape = tuple(batch.shape)
            if self._x is None or tuple(self._x.shape) != shape:
                self._x = torch.empty(shape, device=self.device, dtype=self.dtype).contiguous(memory_format=self.memory_format)
            self._x.copy_(torch.from_numpy(batch), non_blocking=False)

    @torch.inference_mode()
    def _enqueue(self) -> None:
        if self._x is None:
            self._no_device_path_yet()
        with self._on_stream():
            self._y = self._call(self._x)

    def _synchronize(self) -> None:
        if self.device.type != "cuda":
            return
        (self._stream or torch.cuda.current_stream(self.device)).synchronize()

    @torch.inference_mode()
    def _fetch(self) -> np.ndarray:
        if self._y is None:
            self._no_device_path_yet()
        return self._y.float().cpu().numpy()

    def _no_device_path_yet(self) -> None:
        raise UserError("stage() a batch before enqueue() / fetch()")

    @property
    def stream(self) -> Any:
        if self.device.type != "cuda":
            return None
        return self._stream or torch.cuda.current_stream(self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run a tensor already on the runner's device, dtype and memory format."""
        self._require_open()
        with torch.inference_mode(), self._on_stream():
            return self._call(x)

    # ------------------------------------------------------------------ facts
    def describe(self) -> dict[str, Any]:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" and cuda_available() else "cpu"
        return {"backend": self.backend, "version": torch.__version__, "device": name, "precision": self.precision,
                "channels_last": self.channels_last, "notes": list(self.notes)}

    @classmethod
    def unavailable(cls, backend: str, precision: str) -> str | None:
        gpu = cuda_available()
        if precision == "int8":
            return "PyTorch has no INT8 path in this toolkit (INT8 is a Q/DQ ONNX for ort, ort-cuda, trt, trt-rtx)"
        if precision in ("fp16", "bf16") and not gpu:
            return (f"PyTorch {precision.upper()} on a CPU is not a deployment path (no fast kernels: ResNet-18 FP16 took "
                    "0.9 s per image on the 2-core machine); it is measured on a GPU")
        if backend == "torch-compile" and not gpu and not (shutil.which("g++") or shutil.which("c++")):
            return "torch.compile on CPU needs a C++ compiler (g++), and none is on PATH"
        return None

    @classmethod
    def timing_options(cls, backend: str, *, threads: int | None = None, tf32: bool = False, cuda_graph: bool = True,
                       beside_others: bool = False) -> dict[str, Any]:
        # TorchRunner converts its module in place (device, dtype, memory format): bench gives it a copy.
        if cuda_available():
            return {"device": "cuda", "channels_last": True, "tf32": tf32, "own_stream": beside_others,
                    "copy_model": True}
        return {"copy_model": True}


__all__ = ["DTYPES", "TorchRunner", "cuda_available"]
