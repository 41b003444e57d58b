"""Run a TensorRT or TensorRT-RTX engine: numpy in, float32 logits out. No torch.

Dependencies: numpy, the engine's TensorRT module (``tensorrt`` or ``tensorrt_rtx``) and
cuda-python (``cuda.bindings.runtime``; the legacy ``cuda.cudart`` is used if that is all there is).

Three parts, as Polygraphy separates loading from running:

* :class:`~resnet_deploy.runners.tensorrt_loader.EngineLoader` checks the engine against its
  manifest, this library and this GPU, imports the flavour, deserializes and creates the execution
  context (:mod:`.tensorrt_loader` lists the checks, in order);
* :class:`~resnet_deploy.runners.device_buffers.DeviceBuffers` owns the CUDA memory (a device
  and a pinned host buffer per I/O tensor) and the stream;
* :class:`TensorRTRunner` (here) binds the buffers to the context and runs.

Execution follows the name-based TensorRT 10+/11/RTX API: ``num_io_tensors`` /
``get_tensor_name`` / ``get_tensor_mode`` / ``get_tensor_dtype``, ``get_tensor_profile_shape``,
``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3(stream)``. Device buffers are
allocated once for the profile's max batch, host staging buffers are pinned
(``cudaMallocHost``), so copies are truly asynchronous and can be captured into CUDA graphs.

Device-resident execution (for timing compute without host copies): :meth:`TensorRTRunner.stage`
copies a host batch to the input device buffer on the runner's :attr:`~TensorRTRunner.stream`
(and sets the input shape), :meth:`~TensorRTRunner.enqueue` is ``execute_async_v3`` alone on that
stream, and :meth:`~TensorRTRunner.synchronize` waits for it. :meth:`~TensorRTRunner.infer` is
stage + enqueue + device-to-host copy + synchronize (or the captured CUDA graph of the same).

CUDA graphs (``cuda_graph=True``):

* ``tensorrt``: one graph per batch size, captured on first use with
  ``cudaStreamBeginCapture`` -> H2D copy, ``execute_async_v3``, D2H copy -> ``cudaStreamEndCapture``
  -> ``cudaGraphInstantiate``; replayed with ``cudaGraphLaunch``. Before capturing, the context is
  enqueued once, uncaptured, and the stream synchronized, so one-time initialisation is not
  captured; an enqueue that fails under capture falls back to plain execution for that batch.
  This is the order of NVIDIA's trtexec (``samples/common/sampleInference.cpp``, TensorRT 11.1:
  "Avoid capturing initialization calls by executing the enqueue function at least once before
  starting CUDA graph capture"); TensorRT 8's header said the same for enqueueV2 after a shape
  change.
* ``tensorrt_rtx``: the runtime captures graphs itself when the execution context is created from
  an ``IRuntimeConfig`` with ``cuda_graph_strategy = CudaGraphStrategy.WHOLE_GRAPH_CAPTURE``
  (TensorRT-RTX "Working with RTX CUDA Graphs"). Manual stream capture on RTX would need engines
  built with ``BuilderFlag.REQUIRE_USER_ALLOCATION``, so it is not used.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .._native.cuda import cuda_check, cuda_device_info
from .._native.trt import RTX_DEFAULT_TARGETS, import_flavour, rtx_cc_supported
from ..artifacts import read_manifest
from ..errors import BackendUnavailable, UserError
from .base import InputSpec, Runner
from .device_buffers import DeviceBuffers
from .tensorrt_loader import EngineLoader, LoadedEngine, check_manifest_against_runtime, engine_io, same_release, verify_engine_file


class TensorRTRunner(Runner):
    """Infer float32 NCHW batches with a serialized TensorRT / TensorRT-RTX engine."""

    device_resident = True

    # ---- bench facts (see Runner.runs_on_gpu and the methods below it)
    @classmethod
    def runs_on_gpu(cls, backend: str) -> bool:
        return True

    @classmethod
    def in_default_sweep(cls, backend: str, gpu: bool) -> bool:
        return gpu

    @classmethod
    def stream_instance_text(cls, backend: str, gpu: bool) -> str:
        return "its own engine, execution context and CUDA stream"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        backend: str | None = None,
        precision: str | None = None,
        device: int = 0,
        cuda_graph: bool = False,
        verify: bool = True,
        dla_core: int | None = None,
    ):
        super().__init__()
        # ``precision`` is accepted for the registry's one constructor shape; the engine's manifest says it.
        self.loader = EngineLoader(Path(engine_path), flavour=backend, device=device, verify=verify, dla_core=dla_core,
                                   rtx_cuda_graph=bool(cuda_graph))
        self._cuda_graph = bool(cuda_graph)
        self._loaded: LoadedEngine | None = None
        self.buffers: DeviceBuffers | None = None
        self.profile: dict[str, list[int]] | None = None
        self.graph_notes: list[str] = []
        self._context = None
        self._reset_graphs()

    def _reset_graphs(self) -> None:
        self._graphs: dict[int, tuple[Any, Any]] = {}
        self._uncapturable: set[int] = set()
        self._staged_n = 0

    # ---------------------------------------------------------------------------------------
    # what the runner is: one flavour, read from the loaded engine (before open, the one asked for)
    @property
    def engine_path(self) -> Path:
        return self.loader.path

    @property
    def device_index(self) -> int:
        return self.loader.device

    @property
    def flavour(self) -> str | None:
        """``"trt"`` or ``"trt-rtx"``: the engine's once loaded; before that the one asked for (``None``: the manifest's)."""
        return self._loaded.flavour if self._loaded is not None else self.loader.flavour

    @property
    def backend(self) -> str:  # the registry's backend names are the flavours
        return self.flavour or "trt"

    @property
    def manifest(self) -> dict[str, Any]:
        return self._loaded.manifest if self._loaded is not None else {}

    @property
    def device(self) -> dict[str, Any] | None:
        return self._loaded.device if self._loaded is not None else None

    @property
    def dla_core(self) -> int | None:
        return self._loaded.dla_core if self._loaded is not None else None

    @property
    def _rtx_graphs(self) -> bool:
        return self._loaded is not None and self._loaded.rtx_graphs

    # ---------------------------------------------------------------------------------------
    def _open(self) -> InputSpec:
        self._loaded = self.loader()
        self._context = self._loaded.context
        self._threads = {threading.get_ident()}  # host threads whose current CUDA device is ours (the loader set it)
        return self._bind_io()

    def _check(self, result, what: str):
        return cuda_check(self._loaded.cudart, result, what, artifact=self.engine_path.name)

    def _bind_io(self) -> InputSpec:
        """Buffers for the profile's max batch, bound to the context; the input spec."""
        loaded, context = self._loaded, self._context
        io = engine_io(loaded.trt, loaded.engine, self.engine_path)
        self.input_name, self.output_name = io.input_name, io.output_name
        mn, opt, mx = io.profile
        self.profile = {"min": list(mn), "opt": list(opt), "max": list(mx)}
        self.min_batch, self.opt_batch, self.max_batch = mn[0], opt[0], mx[0]
        self._sample_shape = tuple(mx[1:])
        self.input_dtype = io.dtypes[self.input_name]  # what stage() / infer() cast the input to
        self.buffers = DeviceBuffers(loaded.cudart, artifact=self.engine_path.name)
        self.buffers.create_stream()
        if not context.set_input_shape(self.input_name, tuple(mx)):
            raise UserError(f"engine rejected its own max input shape {tuple(mx)}: {loaded.logger.last_error()}")
        self._current_batch = mx[0]
        for name in [self.input_name, *io.outputs]:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UserError(f"output {name!r} has a data-dependent shape {shape}; not supported by this runner")
            if not context.set_tensor_address(name, self.buffers.allocate(name, shape, io.dtypes[name])):
                raise RuntimeError(f"set_tensor_address({name}) failed: {loaded.logger.last_error()}")
        return InputSpec(name=self.input_name, dtype=self.input_dtype, sample_shape=self._sample_shape,
                         min_batch=self.min_batch, max_batch=self.max_batch, limit="profile",
                         source=self.engine_path.name)

    # ---------------------------------------------------------------------------------------
    def _set_batch(self, n: int) -> None:
        if n == self._current_batch:
            return
        if not self._context.set_input_shape(self.input_name, (n, *self._sample_shape)):
            raise UserError(f"engine rejected input shape {(n, *self._sample_shape)}: {self._loaded.logger.last_error()}")
        self._current_batch = n

    def _execute(self) -> None:
        if not self._context.execute_async_v3(int(self.buffers.stream)):
            raise RuntimeError(f"execute_async_v3 failed: {self._loaded.logger.last_error() or 'unknown error'}")

    def _run_all(self, n: int) -> None:
        self.buffers.to_device(self.input_name, n)
        self._execute()
        self.buffers.to_host(self.output_name, n)

    def _graph_for(self, n: int):
        """The instantiated graph for batch ``n``, captured on first use; ``None`` if it cannot be captured.

        The order is the one NVIDIA's trtexec uses (samples/common/sampleInference.cpp, TensorRT
        OSS 11.1): one ordinary enqueue and a synchronize first, so TensorRT's one-time work after
        a shape change is not captured; then capture on a non-default stream in thread-local mode;
        if the enqueue fails while capturing (the engine holds work that cannot be captured), end
        the capture, clear the CUDA error and run without a graph.
        """
        if n in self._graphs:
            return self._graphs[n][1]
        if n in self._uncapturable:
            return None
        cudart, stream = self._loaded.cudart, self.buffers.stream
        self._run_all(n)
        self.buffers.synchronize()
        self._check(
            cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
            "cudaStreamBeginCapture",
        )
        try:
            self._run_all(n)
        except RuntimeError as e:
            cudart.cudaStreamEndCapture(stream)  # ends the (invalidated) capture; its error is expected
            if hasattr(cudart, "cudaGetLastError"):
                cudart.cudaGetLastError()
            self._uncapturable.add(n)
            self.graph_notes.append(f"batch {n}: CUDA graph capture failed ({e}); running without a graph")
            return None
        except BaseException:
            cudart.cudaStreamEndCapture(stream)
            raise
        graph = self._check(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        exe = self._check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._graphs[n] = (graph, exe)
        return exe

    def _on_device(self) -> None:
        """CUDA's current device belongs to each host thread: in a thread that has not used this
        runner before (a server's worker, bench's several streams), make it this runner's device."""
        tid = threading.get_ident()
        if tid not in self._threads:
            self._check(self._loaded.cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
            self._threads.add(tid)

    def _load_host(self, batch: np.ndarray) -> int:
        """Copy a checked batch into the pinned input buffer and set the input shape; its size."""
        self._on_device()
        n = int(batch.shape[0])
        np.copyto(self.buffers.host[self.input_name][:n], batch)
        self._set_batch(n)
        return n

    def _output(self, n: int) -> np.ndarray:
        return np.array(self.buffers.host[self.output_name][:n], dtype=np.float32, copy=True)

    # ---------------------------------------------------------------------------------------
    # device-resident execution (public through Runner: stage / enqueue / synchronize / fetch)
    @property
    def stream(self):
        """The CUDA stream all of this runner's copies and enqueues go to (read-only)."""
        return self.buffers.stream if self.buffers is not None else None

    def _stage(self, batch: np.ndarray) -> None:
        """The copy comes from the runner's one pinned staging buffer: synchronize before the next stage or infer."""
        self._staged_n = self._load_host(batch)
        self.buffers.to_device(self.input_name, self._staged_n)

    def _enqueue(self) -> None:
        self._on_device()
        self._execute()

    def _synchronize(self) -> None:
        self._on_device()
        self.buffers.synchronize()

    def _fetch(self) -> np.ndarray:
        self._on_device()
        self.buffers.to_host(self.output_name, self._staged_n)
        self.buffers.synchronize()
        return self._output(self._staged_n)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        n = self._load_host(batch)
        exe = self._graph_for(n) if self._cuda_graph and not self._rtx_graphs else None
        if exe is not None:
            self._check(self._loaded.cudart.cudaGraphLaunch(exe, self.buffers.stream), "cudaGraphLaunch")
        else:
            self._run_all(n)
        self.buffers.synchronize()
        return self._output(n)

    def infer_torch(self, batch):
        """Like :meth:`infer`, for a torch tensor (any device) in and a CPU float32 torch tensor out.

        torch is imported only here: the runner itself never needs it.
        """
        import torch

        x = batch.detach().to("cpu", torch.float32).contiguous().numpy() if isinstance(batch, torch.Tensor) else batch
        return torch.from_numpy(self.infer(x))

    # ---------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        m = self.manifest
        if not m and self.engine_path.is_file():
            try:  # before open(): what the manifest says
                m = read_manifest(self.engine_path)
            except UserError:
                m = {}
        device = self.device or {}
        trt = self._loaded.trt if self._loaded is not None else None
        return {
            "backend": self.flavour or m.get("flavour") or self.backend,
            "flavour": self.flavour or m.get("flavour"),
            "library": getattr(trt, "__name__", None),
            "version": getattr(trt, "__version__", None),
            "engine": str(self.engine_path),
            "built_with": m.get("builder_version"),
            "device": device.get("name") or "cuda",
            "gpu": device.get("name"),
            "compute_capability": device.get("compute_capability"),
            "precision": m.get("precision"),
            "dla_core": self.dla_core,
            "profile": self.profile or {"min": m.get("min_batch"), "opt": m.get("opt_batch"), "max": m.get("max_batch")},
            "cuda_graph": ("rtx-whole-graph" if self._rtx_graphs else "per-batch-capture") if self._cuda_graph else False,
            "cuda_graph_notes": list(self.graph_notes),
            "notes": (["CUDA graph (end-to-end)"] if self._cuda_graph else []) + list(self.graph_notes),
        }

    def _close(self) -> None:
        """Graphs, then the context (it points into the buffers), then the buffers and the stream."""
        if self.buffers is not None and self.buffers.stream is not None:
            self.buffers.cudart.cudaStreamSynchronize(self.buffers.stream)
        cudart = self._loaded.cudart if self._loaded is not None else None
        for graph, exe in self._graphs.values():
            cudart.cudaGraphExecDestroy(exe)
            cudart.cudaGraphDestroy(graph)
        self._reset_graphs()
        self._context = None
        if self._loaded is not None:
            self._loaded.release()
        if self.buffers is not None:
            self.buffers.free()
            self.buffers = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @classmethod
    def unavailable(cls, backend: str, precision: str) -> str | None:
        try:
            import_flavour(backend)
        except BackendUnavailable as e:
            return e.reason
        info, why = cuda_device_info(0)
        if info is None:
            extra = "; TensorRT-RTX builds engines on this machine but nothing here can execute them" if backend == "trt-rtx" else ""
            return f"{why}{extra}"
        if backend == "trt-rtx" and not rtx_cc_supported(info["compute_capability"], RTX_DEFAULT_TARGETS):
            return (f"TensorRT-RTX does not run on compute capability {info['compute_capability']} "
                    f"({info['name']}); it supports {' '.join(RTX_DEFAULT_TARGETS)}")
        return None

    @classmethod
    def timing_options(cls, backend: str, *, threads: int | None = None, tf32: bool = False, cuda_graph: bool = True,
                       beside_others: bool = False) -> dict[str, Any]:
        return {"cuda_graph": True}


__all__ = ["TensorRTRunner", "check_manifest_against_runtime", "same_release", "verify_engine_file"]
