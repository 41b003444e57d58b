"""PyTorch eager (and torch.compile) as a runner: the FP32 reference every parity check uses.

On a CUDA device the runner is device-resident: :meth:`~TorchRunner.stage` copies a batch into
a device tensor it keeps, :meth:`~TorchRunner.enqueue` runs the model on it, both on the
runner's stream (its own with ``own_stream=True``, else torch's current stream).

``compile=True`` wraps the model in ``torch.compile(mode="reduce-overhead", dynamic=False)``
(CUDA graphs through cudagraph trees on a GPU; inductor ``freezing`` there): one static graph per
batch size on every device, CPU included, as the anchors compiled them. Dynamo is reset when the
runner opens and closes (no guards, recompile counts or frozen weights of an earlier model), and a
hit recompile limit raises instead of falling back to eager under the torch-compile label. Every
input the runner feeds the compiled module is made the same way (an inference tensor of the
runner's dtype and memory format), so end-to-end calls, staged calls and parity share one graph;
:meth:`~TorchRunner.compile_stats` counts the graphs compiled and the seconds the compiling calls
took. ``torch.compiler.cudagraph_mark_step_begin()`` runs before each compiled call, since no output
is kept across calls.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import shutil
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BackendUnavailable, UserError
from .base import InputSpec, Runner

RECOMPILE_LIMIT = 64  # graphs per compiled model: batch sizes of one sweep, with room to spare
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CPU_AUTOCAST = "torch.autocast('cpu', dtype=torch.bfloat16): convolutions and matmuls in BF16, the rest FP32"


def cpu_bf16_units() -> str | None:
    """The CPU units PyTorch's BF16 kernels (oneDNN) run on here (``"AMX"``, ``"AVX512-BF16"``), or None."""
    cpu = getattr(torch, "cpu", None)
    if cpu is None:
        return None
    if getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16"
    return None


class _Autocast(nn.Module):
    """The model under CPU BF16 autocast (eager and, traced by dynamo, torch.compile); logits in FP32."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.model(x)
        return y.float()


def _graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (its own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


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
    _compiled_open = 0  # compiled runners open in this process

    # ---- bench facts (see Runner.runs_on_gpu and the methods below it)
    @classmethod
    def runs_on_gpu(cls, backend: str) -> bool:
        return cuda_available()  # bench opens torch on the GPU wherever torch sees one (timing_options)

    @classmethod
    def in_default_sweep(cls, backend: str, gpu: bool) -> bool:
        return gpu or backend != "torch-compile"

    @classmethod
    def extra_warmup(cls, backend: str) -> int:
        return 3 if backend == "torch-compile" else 0  # the calls that compile and capture

    @classmethod
    def streams_unsupported(cls, backend: str) -> str | None:
        if backend == "torch-compile":
            return ("not measured with several streams: torch.compile's CUDA graphs have not been checked from "
                    "several threads at once; single-stream only")
        return None

    @classmethod
    def stream_instance_text(cls, backend: str, gpu: bool) -> str:
        return "its own copy of the model" + (" on its own CUDA stream" if gpu else "")

    @classmethod
    def set_process_threads(cls, backend: str, threads: int) -> int | None:
        before = torch.get_num_threads()  # torch's CPU threads are the process's, not a runner's
        torch.set_num_threads(threads)
        return before

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
        self._graphs = 0
        self._compile_s = 0.0
        self._counted = False

    @property
    def device_resident(self) -> bool:  # type: ignore[override]
        return self.device.type == "cuda"

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> InputSpec:
        if self.device.type == "cuda" and not cuda_available():
            raise BackendUnavailable("torch (CUDA)", "no CUDA device")
        if self.precision not in DTYPES:
            raise BackendUnavailable(self.backend, f"PyTorch has no {self.precision} path in this toolkit")
        # BF16 on a CPU: the FP32 module under autocast (oneDNN's BF16 kernels), FP32 in and out;
        # elsewhere the module itself is cast to the precision's dtype
        autocast = self.precision == "bf16" and self.device.type == "cpu"
        self.dtype = torch.float32 if autocast else DTYPES[self.precision]
        self.notes = [f"{CPU_AUTOCAST} (on {cpu_bf16_units() or 'no BF16 unit'})"] if autocast else []
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        model = copy.deepcopy(self.model) if self.copy_model else self.model
        self._module = model.eval().to(self.device, self.dtype, memory_format=self.memory_format)
        if autocast:
            self._module = _Autocast(self._module).eval()
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
            self._fn = self._compile(self._module)
        else:
            self._fn = self._module
        return InputSpec(name="input", dtype=np.float32, sample_shape=(_input_channels(self._module), None, None),
                         source=type(self.model).__name__)

    def _compile(self, module: nn.Module):
        import torch._dynamo as dynamo

        if not TorchRunner._compiled_open:  # (instances open side by side, several streams, share dynamo)
            dynamo.reset()  # this model starts with no graphs, guards or recompile counts of an earlier one
        TorchRunner._compiled_open += 1
        config = dynamo.config
        # one graph per batch size: a sweep of many batch sizes recompiles once per size, which must not
        # reach dynamo's limit of 8 (it would then run eager while labelled torch-compile)
        for name in ("recompile_limit", "cache_size_limit"):  # torch >= 2.6 / older
            if hasattr(config, name):
                setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
                break
        for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):  # torch >= 2.6 / older
            if hasattr(config, name):
                setattr(config, name, True)  # a hit limit is an error, never a silent eager fallback
                break
        if self.device.type == "cuda":
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            self.notes.append("inductor freezing")
        self.notes.append('torch.compile(mode="reduce-overhead", dynamic=False): one static graph per batch size'
                          + (", CUDA graphs" if self.device.type == "cuda" else ""))
        self._graphs, self._compile_s, self._counted = 0, 0.0, True
        # dynamic=False: one static graph (and on a GPU one CUDA graph) per batch size, as the anchors
        # compiled them, never a dynamic-shape kernel after the second size; on the CPU as on the GPU
        return torch.compile(module, mode="reduce-overhead", dynamic=False)

    def compile_stats(self) -> dict[str, Any] | None:
        """``{"graphs": n, "seconds": s}``: graphs dynamo compiled for this runner so far, and the time of
        the calls that compiled them (compiling, plus on a GPU the CUDA-graph capture); None uncompiled."""
        if not self.compiled:
            return None
        return {"graphs": self._graphs, "seconds": self._compile_s}

    def _close(self) -> None:
        self._fn = self._x = self._y = None
        self._module = None
        if self.compiled and self._counted:
            import torch._dynamo as dynamo

            TorchRunner._compiled_open -= 1
            if not TorchRunner._compiled_open:
                dynamo.reset()  # frees the compiled graphs, their frozen weights and CUDA-graph pools
        self._counted = False
        gc.collect()
        if self.device.type == "cuda" and cuda_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ running
    def _on_stream(self):
        return torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if not self.compiled:
            return self._fn(x)
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        before = _graphs_compiled()
        t0 = time.perf_counter()
        y = self._fn(x)
        new = _graphs_compiled() - before
        if new:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._graphs += new
            self._compile_s += time.perf_counter() - t0
        return y

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        """The batch as the compiled graph expects every input: made here, under inference_mode."""
        x = torch.empty(tuple(batch.shape), device=self.device, dtype=self.dtype).contiguous(memory_format=self.memory_format)
        x.copy_(torch.from_numpy(batch), non_blocking=False)
        return x

    @torch.inference_mode()
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._on_stream():
            y = self._call(self._to_device(batch)).float().cpu()
        return y.numpy()

    @torch.inference_mode()
    def _stage(self, batch: np.ndarray) -> None:
        with self._on_stream():
            if self._x is None or tuple(self._x.shape) != tuple(batch.shape):
                self._x = self._to_device(batch)
            else:
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
        if precision == "fp16" and not gpu:
            return ("PyTorch FP16 on a CPU is not a deployment path (no fast kernels: ResNet-18 FP16 took 0.9 s per image "
                    "on the 2-core machine); it is measured on a GPU; BF16 is PyTorch's CPU low precision")
        if precision == "bf16" and not gpu and cpu_bf16_units() is None:
            return ("PyTorch BF16 on this CPU: it lacks AVX512-BF16 and AMX (oneDNN would emulate BF16, slower than FP32); "
                    "a CPU with them runs it under torch.autocast")
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


__all__ = ["CPU_AUTOCAST", "DTYPES", "TorchRunner", "cpu_bf16_units", "cuda_available"]
