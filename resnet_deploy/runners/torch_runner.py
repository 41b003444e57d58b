"""PyTorch eager (and torch.compile) as a runner: the FP32 reference every parity check uses."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BackendUnavailable
from .base import Runner

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: nn.Module, *, device: str = "cpu", precision: str = "fp32",
                 channels_last: bool = False, compile: bool = False):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch (CUDA)", "no CUDA device")
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, self.dtype, memory_format=self.memory_format)
        self.compiled = compile
        self._fn = torch.compile(self.model, mode="reduce-overhead") if compile else self.model
        if compile:
            self.backend = "torch-compile"

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=self.memory_format)
        return self._fn(x).float().cpu().numpy()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run a tensor already on the runner's device, dtype and memory format (compute-only timing)."""
        return self._fn(x)

    def describe(self) -> dict[str, Any]:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"backend": self.backend, "version": torch.__version__, "device": name,
                "precision": self.precision, "channels_last": self.channels_last}
