"""Each backend, opened through :func:`resnet_deploy.runners.open_runner` and made ready to time.

A :class:`Prepared` backend holds one runner (one model, one precision) for the whole batch
sweep; :meth:`Prepared.bind` readies it for one batch size and returns a :class:`Bound`:

* ``e2e(i)``: host numpy buffer ``i`` in, host logits out, synchronous. On a CPU backend this
  is the whole computation, so compute-only and end-to-end are the same figure.
* ``compute(i)`` (GPU only): the same work on device-resident data, timed with CUDA events
  (torch, TensorRT) or a synchronised clock (ONNX Runtime, whose Run waits for its stream);
  ``before(i)`` stages buffer ``i`` on the device outside the timed region so the inputs
  still rotate.
* ``infer(x)``: what parity runs, on exactly the timed path and shape (inputs are padded to
  the bound batch, so a compiled or graph-captured shape is never changed by parity).

GPU paths, written to the documented APIs (they cannot run on the CPU machine):

* ``torch``: eager, channels-last, FP16/BF16 by ``.to(dtype)``, CUDA events.
* ``torch-compile``: ``torch.compile(mode="reduce-overhead")`` (CUDA graphs through
  cudagraph trees) with inductor ``freezing``; ``torch.compiler.cudagraph_mark_step_begin()``
  before each call since no output is kept across calls.
* ``ort-cuda``: an :class:`~resnet_deploy.runners.ort.OrtRunner` per batch with the CUDA
  provider options ``enable_cuda_graph=1`` (ONNX Runtime captures the graph on the first Run
  and replays it) and ``prefer_nhwc=1``; ``OrtRunner.bind_device_io`` binds input and output
  once to device ``OrtValue`` s (CUDA graphs need fixed addresses), ``DeviceIO.stage``
  (``OrtValue.update_inplace``) copies the next host buffer in and ``OrtRunner.run_bound`` is
  the compute-only call. If capture fails the runner is reopened without graphs and the row
  says so.
* ``trt`` / ``trt-rtx``: :class:`~resnet_deploy.runners.tensorrt.TensorRTRunner` with
  ``cuda_graph=True`` for the end-to-end figure; compute-only is ``TensorRTRunner.enqueue``
  (``execute_async_v3`` alone) on ``TensorRTRunner.stream`` between two ``cudaEventRecord`` s,
  the input staged beforehand with ``TensorRTRunner.stage`` + ``synchronize``.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import BackendUnavailable, UserError
from .timing import CudartEventClock, HostClock, RssProbe, TorchEventClock

GPU_BACKENDS = ("ort-cuda", "trt", "trt-rtx")


def _torch():
    import torch

    return torch


def torch_cuda() -> bool:
    try:
        return bool(_torch().cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def is_gpu(backend: str) -> bool:
    """Does this backend run on a GPU here? (torch / torch-compile follow torch.cuda.is_available())."""
    if backend in GPU_BACKENDS:
        return True
    if backend in ("torch", "torch-compile"):
        return torch_cuda()
    return False


def availability(backend: str, precision: str) -> str | None:
    """``None`` if ``backend`` can run ``precision`` here, else the reason it cannot (cheap checks)."""
    import shutil

    if backend in ("torch", "torch-compile"):
        if precision == "int8":
            return "PyTorch has no INT8 path in this toolkit (INT8 is a Q/DQ ONNX for ort, ort-cuda, trt, trt-rtx)"
        if precision in ("fp16", "bf16") and not torch_cuda():
            return (f"PyTorch {precision.upper()} on a CPU is not a deployment path (no fast kernels: ResNet-18 FP16 took "
                    "0.9 s per image on the 2-core machine); it is measured on a GPU")
        if backend == "torch-compile" and not torch_cuda() and not (shutil.which("g++") or shutil.which("c++")):
            return "torch.compile on CPU needs a C++ compiler (g++), and none is on PATH"
        return None
    if backend in ("ort", "ort-cuda"):
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for ort-cuda)"
        want = "CPUExecutionProvider" if backend == "ort" else "CUDAExecutionProvider"
        have = ort.get_available_providers()
        if want not in have:
            return f"{want} is not in this onnxruntime build (available: {', '.join(have)})"
        return None
    if backend in ("trt", "trt-rtx"):
        from ..engine import cuda_device_info, import_flavour

        try:
            import_flavour(backend)
        except BackendUnavailable as e:
            return e.reason
        info, why = cuda_device_info(0)
        if info is None:
            extra = "; TensorRT-RTX builds engines on this machine but nothing here can execute them" if backend == "trt-rtx" else ""
            return f"{why}{extra}"
        if backend == "trt-rtx":
            from ..engine import RTX_DEFAULT_TARGETS, rtx_cc_supported

            if not rtx_cc_supported(info["compute_capability"], RTX_DEFAULT_TARGETS):
                return (f"TensorRT-RTX does not run on compute capability {info['compute_capability']} "
                        f"({info['name']}); it supports {' '.join(RTX_DEFAULT_TARGETS)}")
        return None
    return f"unknown backend {backend!r}"


# ------------------------------------------------------------------------------------------
# device memory probes
# ------------------------------------------------------------------------------------------


def _cudart():
    from ..engine import load_cudart

    return load_cudart()


def device_used_bytes() -> int | None:
    """Device memory in use on GPU 0 (all processes), from ``cudaMemGetInfo``."""
    if torch_cuda():
        free, total = _torch().cuda.mem_get_info()
        return int(total - free)
    cudart = _cudart()
    if cudart is None:
        return None
    res = cudart.cudaMemGetInfo()
    if int(res[0]) != 0:
        return None
    return int(res[2] - res[1])


class MemoryProbe:
    """Peak memory of one row: torch allocator peak, device use above baseline, or host RSS."""

    def __init__(self, kind: str, rss: RssProbe):
        self.kind = kind  # "torch-cuda", "cuda-meminfo", "host-rss"
        self.rss = rss
        self.base_device = 0
        self.peak_device = 0

    @property
    def label(self) -> str:
        return {"torch-cuda": "GPU: torch allocator peak (max_memory_allocated)",
                "cuda-meminfo": "GPU: device memory in use above the pre-load baseline (cudaMemGetInfo, sampled)",
                "host-rss": f"CPU: peak RSS above the pre-load baseline ({self.rss.method})"}[self.kind]

    def baseline(self) -> None:
        if self.kind == "host-rss":
            self.rss.set_baseline()
        elif self.kind == "cuda-meminfo":
            self.base_device = device_used_bytes() or 0

    def row_start(self) -> None:
        if self.kind == "torch-cuda":
            _torch().cuda.reset_peak_memory_stats()
        elif self.kind == "host-rss":
            self.rss.reset_peak()
        self.peak_device = 0

    def sample(self) -> None:
        if self.kind == "cuda-meminfo":
            used = device_used_bytes() or 0
            self.peak_device = max(self.peak_device, used - self.base_device)

    def peak_mib(self) -> float | None:
        if self.kind == "torch-cuda":
            return _torch().cuda.max_memory_allocated() / 2**20
        if self.kind == "cuda-meminfo":
            self.sample()
            return self.peak_device / 2**20
        return self.rss.peak_delta_mib()


def is_oom(exc: BaseException) -> bool:
    """Out of memory on the device or the host, whatever library raised it."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc).lower()
    return ("OutOfMemory" in name or "out of memory" in text or "cudaerrormemoryallocation" in text
            or "failed to allocate memory" in text or "bfcarena" in text and "allocate" in text)


# ------------------------------------------------------------------------------------------
# bound (one batch size)
# ------------------------------------------------------------------------------------------


@dataclass
class Bound:
    batch: int
    e2e: Callable[[int], Any]
    infer: Callable[[np.ndarray], np.ndarray]
    e2e_clock: Any = None
    e2e_sync: Callable[[], None] | None = None
    compute: Callable[[int], Any] | None = None
    compute_clock: Any = None
    compute_before: Callable[[int], Any] | None = None
    compute_sync: Callable[[], None] | None = None
    notes: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


def padded_infer(run: Callable[[np.ndarray], np.ndarray], batch: int) -> Callable[[np.ndarray], np.ndarray]:
    """Infer any number of inputs in chunks of exactly ``batch`` (the last one padded by repetition)."""

    def infer(x: np.ndarray) -> np.ndarray:
        outs = []
        for s in range(0, len(x), batch):
            chunk = x[s:s + batch]
            k = len(chunk)
            if k < batch:
                reps = -(-batch // k)
                chunk = np.concatenate([chunk] * reps)[:batch]
            # copy: a runner may hand back a view of its own output buffer, which the next chunk overwrites
            outs.append(np.array(run(np.ascontiguousarray(chunk))[:k], dtype=np.float32, copy=True))
        return np.concatenate(outs)

    return infer


# ------------------------------------------------------------------------------------------
# prepared backends
# ------------------------------------------------------------------------------------------


class Prepared:
    """A backend opened for one (depth, precision); :meth:`bind` per batch size."""

    backend: str
    device: str = "cpu"
    load_s: float = 0.0
    notes: list[str]
    memory: MemoryProbe

    def bind(self, batch: int, inputs: list[np.ndarray]) -> Bound:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {}

    def context(self):
        import contextlib

        return contextlib.nullcontext()

    def close(self) -> None:
        pass


class TorchPrepared(Prepared):
    def __init__(self, backend: str, model: Any, precision: str, rss: RssProbe, *, tf32: bool = False):
        from ..runners import open_runner

        torch = _torch()
        self.backend = backend
        self.gpu = torch.cuda.is_available()
        self.notes = []
        self.memory = MemoryProbe("torch-cuda" if self.gpu else "host-rss", rss)
        self.memory.baseline()
        options: dict[str, Any] = {}
        if self.gpu:
            options.update(device="cuda", channels_last=True)
            # FP32 means FP32: TF32 convolutions miss the FP32 parity bar (rel. L2 ~3e-4 > 1e-4).
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            self.notes.append("channels-last" + (", TF32 allowed" if tf32 else ", TF32 off"))
            if backend == "torch-compile":
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True
                # One static graph (and one CUDA graph) per batch size, as the anchors compiled them,
                # rather than a dynamic-shape kernel after the second batch size.
                import torch._dynamo.config as dynamo_config

                dynamo_config.automatic_dynamic_shapes = False
                self.notes.append("inductor freezing, static shapes")
        if backend == "torch-compile":
            self.notes.append('torch.compile(mode="reduce-overhead")' + (" (CUDA graphs)" if self.gpu else ""))
        t0 = time.perf_counter()
        # TorchRunner converts the module in place (device, dtype, memory format): give it a copy.
        self.runner = open_runner(backend, copy.deepcopy(model), precision=precision, **options)
        self.load_s = time.perf_counter() - t0
        self.device = self.runner.describe().get("device", "cpu")

    stream = None  # a CUDA stream of its own (several streams); None: torch's default stream

    def use_own_stream(self) -> None:
        """Run on a CUDA stream of this instance's own (several-streams timing), not the default."""
        if self.gpu:
            self.stream = _torch().cuda.Stream()

    def context(self):
        """Entered in the thread that runs this instance: inference mode and, if it has one, its stream."""
        import contextlib

        torch = _torch()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.stream is not None:
            stack.enter_context(torch.cuda.stream(self.stream))
        return stack

    def bind(self, batch: int, inputs: list[np.ndarray]) -> Bound:
        torch = _torch()
        runner = self.runner
        compiled_gpu = self.gpu and runner.compiled
        mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None) if compiled_gpu else None

        def run(x: np.ndarray) -> np.ndarray:
            if mark is not None:
                mark()
            return runner.infer(x)  # TorchRunner.infer runs under torch.inference_mode

        def e2e(i: int) -> Any:
            return run(inputs[i])

        bound = Bound(batch=batch, e2e=e2e, infer=padded_infer(run, batch))

        if not self.gpu:
            return bound
        dev = [torch.from_numpy(x).to(runner.device, runner.dtype).contiguous(memory_format=runner.memory_format)
               for x in inputs]
        fn = runner.forward

        def compute(i: int) -> Any:
            if mark is not None:
                mark()
            return fn(dev[i])

        bound.compute = compute
        bound.compute_clock = TorchEventClock(torch)
        bound.compute_sync = torch.cuda.synchronize
        bound.close = lambda: dev.clear()
        return bound

    def describe(self) -> dict[str, Any]:
        return self.runner.describe()

    def close(self) -> None:
        self.runner.close()
        self.runner = None
        if self.gpu:
            _torch().cuda.empty_cache()


class OrtCpuPrepared(Prepared):
    def __init__(self, onnx_path: str, precision: str, rss: RssProbe, *, threads: int | None = None):
        from ..runners import open_runner

        self.backend = "ort"
        self.notes = []
        self.memory = MemoryProbe("host-rss", rss)
        self.memory.baseline()
        t0 = time.perf_counter()
        self.runner = open_runner("ort", onnx_path, precision=precision, threads=threads)
        self.load_s = time.perf_counter() - t0
        self.device = "cpu"
        opts = self.runner.session.get_session_options()
        self.notes.append(f"intra-op threads {opts.intra_op_num_threads or 'default (one per physical core)'}")

    def bind(self, batch: int, inputs: list[np.ndarray]) -> Bound:
        runner = self.runner
        # Pre-cast once: an FP16-input model would otherwise pay a cast inside every timed call.
        staged = [x.astype(runner.input_dtype, copy=False) for x in inputs]
        return Bound(batch=batch, e2e=lambda i: runner.infer(staged[i]), infer=padded_infer(runner.infer, batch))

    def describe(self) -> dict[str, Any]:
        return self.runner.describe()

    def close(self) -> None:
        self.runner = None


class OrtCudaPrepared(Prepared):
    """ONNX Runtime CUDA with I/O binding and CUDA graphs; one :class:`OrtRunner` per batch size."""

    def __init__(self, onnx_path: str, precision: str, rss: RssProbe, *, cuda_graph: bool = True, nhwc: bool = True,
                 device_type: str = "cuda", tf32: bool = False):
        from ..runners import open_runner

        self.backend = "ort-cuda"
        self.notes = []
        # device_type="cpu" runs this exact I/O-binding path on the CPU provider: how the tests check it.
        self.device_type = device_type
        self.runner_backend = "ort-cuda" if device_type == "cuda" else "ort"
        self.tf32 = tf32
        self.path = onnx_path
        self.precision = precision
        self.cuda_graph = cuda_graph
        self.nhwc = nhwc
        self.memory = MemoryProbe("cuda-meminfo" if device_type == "cuda" else "host-rss", rss)
        self.memory.baseline()
        t0 = time.perf_counter()
        # The project's runner first: it checks the provider exists and reads the I/O names and types.
        probe = open_runner(self.runner_backend, onnx_path, precision=precision)
        self.input_dtype = probe.input_dtype
        self._describe = probe.describe()
        del probe
        self.load_s = time.perf_counter() - t0
        self.device = device_type
        self._runner = None

    def _open(self, graph: bool):
        from ..runners import open_runner

        if self.device_type != "cuda":
            return open_runner(self.runner_backend, self.path, precision=self.precision)
        cuda_opts = {"device_id": "0", "use_tf32": "1" if self.tf32 else "0"}
        if graph:
            cuda_opts["enable_cuda_graph"] = "1"
        if self.nhwc:
            cuda_opts["prefer_nhwc"] = "1"
        return open_runner(self.runner_backend, self.path, precision=self.precision, provider_options=cuda_opts)

    def bind(self, batch: int, inputs: list[np.ndarray]) -> Bound:
        staged = [np.ascontiguousarray(x.astype(self.input_dtype, copy=False)) for x in inputs]
        notes = []
        graph = self.cuda_graph
        for attempt in (graph, False) if graph else (False,):
            try:
                # With enable_cuda_graph the session itself refuses a graph that is not wholly on
                # the CUDA provider, and the first bound Runs capture it: either failure falls back.
                runner = self._open(attempt)
                io = runner.bind_device_io(staged[0].shape)
                io.stage(staged[0])
                runner.run_bound(io)  # with enable_cuda_graph: this Run captures the graph
                runner.run_bound(io)  # and this one replays it
                break
            except Exception as e:  # noqa: BLE001
                if not attempt or isinstance(e, BackendUnavailable):
                    raise
                notes.append(f"CUDA graph capture failed ({str(e).splitlines()[0][:160]}); timed without graphs")
        notes.append("I/O binding" + (", CUDA graph" if attempt else "") + (", prefer_nhwc" if self.nhwc else "")
                     + (", TF32 allowed" if self.tf32 else ", TF32 off"))
        self._runner = runner

        def before(i: int) -> None:
            io.stage(staged[i])  # host -> the bound device buffer, outside the timed region

        def compute(i: int) -> None:
            runner.run_bound(io)

        def e2e(i: int) -> np.ndarray:
            io.stage(staged[i])
            runner.run_bound(io)
            return io.fetch()

        def run(x: np.ndarray) -> np.ndarray:
            io.stage(x)
            runner.run_bound(io)
            return np.asarray(io.fetch(), dtype=np.float32)

        def close() -> None:
            runner.close()
            self._runner = None

        return Bound(batch=batch, e2e=e2e, infer=padded_infer(run, batch), compute=compute, compute_before=before,
                     compute_clock=HostClock(io.synchronize), compute_sync=io.synchronize,
                     e2e_clock=HostClock(), notes=notes, close=close)

    def describe(self) -> dict[str, Any]:
        return {**self._describe, "cuda_graph": self.cuda_graph, "prefer_nhwc": self.nhwc, "io_binding": True}


class TensorRTPrepared(Prepared):
    def __init__(self, backend: str, engine_path: str, precision: str, rss: RssProbe):
        from ..runners import open_runner

        self.backend = backend
        self.notes = ["CUDA graph (end-to-end)"]
        self.memory = MemoryProbe("cuda-meminfo", rss)
        self.memory.baseline()
        t0 = time.perf_counter()
        self.runner = open_runner(backend, engine_path, precision=None, cuda_graph=True)
        self.load_s = time.perf_counter() - t0
        self.device = self.runner.describe().get("gpu") or "cuda"

    def bind(self, batch: int, inputs: list[np.ndarray]) -> Bound:
        r = self.runner
        if not r.min_batch <= batch <= r.max_batch:
            raise UserError(f"batch {batch} is outside the engine's profile {r.min_batch}..{r.max_batch}")
        staged = [np.ascontiguousarray(x.astype(r.input_dtype, copy=False)) for x in inputs]

        def e2e(i: int) -> np.ndarray:
            return r.infer(staged[i])

        def before(i: int) -> None:
            r.stage(staged[i])  # host -> device on the runner's stream, input shape set
            r.synchronize()

        def compute(i: int) -> None:
            r.enqueue()  # execute_async_v3 only, on r.stream

        clock = CudartEventClock(_cudart(), r.stream)
        return Bound(batch=batch, e2e=e2e, infer=padded_infer(r.infer, batch), compute=compute, compute_before=before,
                     compute_clock=clock, compute_sync=r.synchronize,
                     notes=["compute-only: execute_async_v3 between CUDA events"], close=clock.close)

    def describe(self) -> dict[str, Any]:
        return self.runner.describe()

    def close(self) -> None:
        self.runner.close()


def prepare(backend: str, *, model: Any, artifact: str | os.PathLike[str] | None, precision: str, rss: RssProbe,
            ort_cuda_graph: bool = True, threads: int | None = None, tf32: bool = False) -> Prepared:
    """Open ``backend`` for one (depth, precision)."""
    if backend in ("torch", "torch-compile"):
        return TorchPrepared(backend, model, precision, rss, tf32=tf32)
    if backend == "ort":
        return OrtCpuPrepared(os.fspath(artifact), precision, rss, threads=threads)
    if backend == "ort-cuda":
        return OrtCudaPrepared(os.fspath(artifact), precision, rss, cuda_graph=ort_cuda_graph, tf32=tf32)
    if backend in ("trt", "trt-rtx"):
        return TensorRTPrepared(backend, os.fspath(artifact), precision, rss)
    raise UserError(f"unknown engine {backend!r}")
