"""Run a TensorRT or TensorRT-RTX engine: numpy in, float32 logits out. No torch.

Dependencies: numpy, the engine's TensorRT module (``tensorrt`` or ``tensorrt_rtx``) and
cuda-python (``cuda.bindings.runtime``; the legacy ``cuda.cudart`` is used if that is all there is).

Before anything is deserialized the runner checks, in this order, and says exactly what is wrong:

1. the engine file and its manifest exist, and the file matches the manifest (size, sha256), so a
   truncated or replaced engine is a one-line :class:`UserError`, not a crash inside TensorRT;
2. the flavour's Python module imports (else :class:`BackendUnavailable`);
3. the installed library version can run the engine (TensorRT: same version, or newer if the engine
   was built version-compatible; TensorRT-RTX: same release, engines are not portable across them);
4. a CUDA device exists (else ``BackendUnavailable(flavour, "no CUDA device ...")``);
5. the device's compute capability is one the engine was built for;
6. a DLA engine (manifest ``dla_core``) has its DLA core on this device; ``IRuntime.DLA_core`` is
   set to it (or to the ``dla_core`` asked for) before the engine is deserialized.

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

import ctypes
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .._native.cuda import cuda_device_info, cuda_error_name, load_cudart
from .._native.trt import FLAVOURS, RTX_DEFAULT_TARGETS, cc_tuple, check_dla_core, import_flavour, is_rtx, make_logger, rtx_cc_supported, version_tuple
from ..artifacts import read_manifest, verify
from ..errors import BackendUnavailable, UserError
from .base import InputSpec, Runner


def check_manifest_against_runtime(manifest: dict[str, Any], trt, device: dict[str, Any] | None, engine_path: Path) -> None:
    """Raise :class:`UserError` if this library / GPU cannot run the engine the manifest describes."""
    built, installed = str(manifest.get("builder_version", "?")), str(trt.__version__)
    name = trt.__name__
    if not same_release(built, installed):
        if is_rtx(trt):
            raise UserError(
                f"{engine_path.name} was built with {name} {built} but {installed} is installed; "
                "TensorRT-RTX engines only run on the release that built them: rebuild it"
            )
        if not manifest.get("version_compatible"):
            raise UserError(
                f"{engine_path.name} was built with {name} {built} but {installed} is installed; "
                "rebuild it (or build with version compatibility)"
            )
        if version_tuple(installed) < version_tuple(built):
            raise UserError(
                f"{engine_path.name} is version-compatible from {name} {built} onwards but the older {installed} is installed"
            )
        major = version_tuple(built)[0]
        if version_tuple(installed)[0] > NEXT_MAJOR.get(major, major + 1):
            raise UserError(
                f"{engine_path.name} was built version-compatible with {name} {built}, but {installed} is installed: "
                "TensorRT runs version-compatible engines at most one major version forward (8 -> 10, 10 -> 11); rebuild it"
            )
    if device is None:
        return
    cc = device["compute_capability"]
    target = manifest.get("target") or {}
    if is_rtx(trt):
        targets = target.get("compute_capabilities") or []
        if targets and not rtx_cc_supported(cc, targets):
            raise UserError(
                f"{engine_path.name} targets compute capability {' '.join(targets)}; this GPU ({device['name']}, {cc}) "
                "is not among them: rebuild with --compute-capability " + cc
            )
    else:
        hw = target.get("hardware_compatibility")
        built_cc = target.get("compute_capability")
        if hw == "ampere+":
            if cc_tuple(cc) < (8, 0):
                raise UserError(f"{engine_path.name} needs an Ampere or newer GPU; {device['name']} is {cc}")
        elif built_cc and built_cc != cc:
            raise UserError(
                f"{engine_path.name} was built for compute capability {built_cc}; this GPU ({device['name']}) is {cc}: "
                "rebuild it here (or build with hardware compatibility ampere+)"
            )


# TensorRT's support matrix: a version-compatible engine runs on later releases of its major version and
# of the next one (8.6 -> 10.x: there was no public 9; 10.x -> 11.x), no further.
NEXT_MAJOR = {8: 10}


def same_release(built: str, installed: str) -> bool:
    """Is ``built`` the release ``installed`` is? trtexec prints 3 parts ("10.3.0"), the Python module
    4 ("10.3.0.30"): a 3-part record matches by those 3, two 4-part ones must be equal."""
    a, b = version_tuple(built), version_tuple(installed)
    if len(a) == 3 and len(b) >= 3 or len(b) == 3 and len(a) >= 3:
        return a[:3] == b[:3]
    return a == b


def verify_engine_file(engine_path: Path, manifest: dict[str, Any]) -> None:
    """The engine file must be the one its manifest describes (catches truncation and replacement)."""
    verify(engine_path, {**manifest, "kind": "engine"}, what="engine", fix="rebuild it")


class TensorRTRunner(Runner):
    """Infer float32 NCHW batches with a serialized TensorRT / TensorRT-RTX engine."""

    backend = "trt"
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
        self.engine_path = Path(engine_path)
        self.requested_flavour = backend
        self.flavour = backend
        if backend is not None:
            self.backend = backend
        self.requested_precision = precision
        self.device_index = device
        self._cuda_graph = bool(cuda_graph)
        self._verify = verify
        self._requested_dla = dla_core
        self.manifest: dict[str, Any] = {}
        self.device: dict[str, Any] | None = None
        self.dla_core: int | None = None
        self.profile: dict[str, list[int]] | None = None
        self.graph_notes: list[str] = []
        self._trt = self._cudart = self._runtime = self._engine = self._context = None
        self._rtx_graphs = False
        self._reset_buffers()

    def _reset_buffers(self) -> None:
        self._dev_ptrs: list[int] = []
        self._host_ptrs: list[int] = []
        self._graphs: dict[int, tuple[Any, Any]] = {}
        self._uncapturable: set[int] = set()
        self._stream = None
        self._dev: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._staged_n = 0

    # ---------------------------------------------------------------------------------------
    def _read_manifest(self) -> dict[str, Any]:
        if not self.engine_path.is_file():
            raise UserError(f"engine not found: {self.engine_path}")
        manifest = read_manifest(self.engine_path)
        built_flavour = manifest.get("flavour")
        flavour = self.requested_flavour
        if flavour is not None and built_flavour is not None and flavour != built_flavour:
            raise UserError(f"{self.engine_path.name} is a {built_flavour} engine, not {flavour}")
        self.flavour = flavour or built_flavour
        if self.flavour not in FLAVOURS:
            raise UserError(f"manifest of {self.engine_path.name} names unknown flavour {self.flavour!r}")
        self.backend = self.flavour
        return manifest

    def _open(self) -> InputSpec:
        self.manifest = self._read_manifest()
        if self._verify:
            verify_engine_file(self.engine_path, self.manifest)
        trt = import_flavour(self.flavour)
        self._trt = trt
        check_manifest_against_runtime(self.manifest, trt, None, self.engine_path)  # version only
        cudart = load_cudart()
        if cudart is None:
            raise BackendUnavailable(self.flavour, "cuda-python is not installed (pip install cuda-python)")
        self._cudart = cudart
        info, why = cuda_device_info(self.device_index)
        if info is None:
            raise BackendUnavailable(self.flavour, why)
        self.device = info
        check_manifest_against_runtime(self.manifest, trt, info, self.engine_path)
        self._check(cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
        self._threads = {threading.get_ident()}  # host threads whose current CUDA device is ours

        self._logger = make_logger(trt)  # shared ILogger adapter that keeps error text
        self._runtime = trt.Runtime(self._logger)
        self.dla_core = self._select_dla_core(self._requested_dla)
        if self.manifest.get("version_compatible") and hasattr(self._runtime, "engine_host_code_allowed"):
            # version-compatible plans embed the lean runtime (host code); we built it, so trust it.
            self._runtime.engine_host_code_allowed = True
        blob = self.engine_path.read_bytes()
        validity = getattr(self._runtime, "get_engine_validity", None)
        if validity is not None:  # TensorRT-RTX (and newer TensorRT): diagnose before deserializing
            try:
                state, diag = validity(blob)
                if getattr(state, "name", str(state)) == "INVALID":
                    raise UserError(f"{self.engine_path.name} cannot run here: {self._diagnostics(diag)}")
            except UserError:
                raise
            except Exception:  # noqa: BLE001 - the check is advisory; deserializing decides
                pass
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        del blob
        if self._engine is None:
            raise UserError(
                f"cannot deserialize {self.engine_path.name}: {self._logger.last_error() or 'unknown reason'}"
            )

        self._rtx_graphs = False
        if self._cuda_graph and is_rtx(trt) and hasattr(self._engine, "create_runtime_config"):
            rc = self._engine.create_runtime_config()
            rc.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            self._context = self._engine.create_execution_context(rc)
            self._rtx_graphs = True
        else:
            self._context = self._engine.create_execution_context()
        if self._context is None:
            raise UserError(f"cannot create an execution context for {self.engine_path.name}: {self._logger.last_error()}")
        return self._bind_io()

    def _select_dla_core(self, requested: int | None) -> int | None:
        """The DLA core a DLA engine runs on (``IRuntime.DLA_core``, set before deserializing).

        Default: the core its manifest says it was built for (``build --dla-core`` or the Jetson
        bundle's ``build_engine.sh --dla``). Another core may be asked for; a GPU engine takes none.
        """
        built = self.manifest.get("dla_core")
        if built is None:
            if requested is not None:
                raise UserError(f"{self.engine_path.name} was built for the GPU, not a DLA: rebuild it with --dla-core")
            return None
        core = built if requested is None else requested
        check_dla_core(core)
        cores = int(getattr(self._runtime, "num_DLA_cores", 0) or 0)
        if core >= cores:
            have = f"{cores} (0..{cores - 1})" if cores else "none"
            raise UserError(f"{self.engine_path.name} runs on DLA core {core}, but this device's DLA cores: {have}")
        self._runtime.DLA_core = core
        return core

    # ---------------------------------------------------------------------------------------
    def _diagnostics(self, diag) -> str:
        enum = getattr(self._trt, "EngineInvalidityDiagnostics", None)
        value = int(diag)
        if enum is None or value == 0:
            return f"engine validity check failed (diagnostics {value})"
        reasons = [k.lower().replace("_", " ") for k, v in enum.__members__.items() if value & int(v)]
        return ", ".join(reasons) or f"diagnostics {value}"

    def _check(self, result, what: str):
        """cuda-python returns ``(err, *values)``; raise on error, return the values."""
        if isinstance(result, tuple):
            err, rest = result[0], result[1:]
        else:
            err, rest = result, ()
        if int(err) != 0:
            name = cuda_error_name(self._cudart, err)
            if "MemoryAllocation" in name:
                raise UserError(f"out of GPU memory in {what} (engine {self.engine_path.name}); try a smaller max batch")
            raise RuntimeError(f"{what} failed: {name}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    def _bind_io(self) -> InputSpec:
        trt, eng, cudart = self._trt, self._engine, self._cudart
        inputs, outputs = [], []
        for i in range(eng.num_io_tensors):
            name = eng.get_tensor_name(i)
            mode = eng.get_tensor_mode(name)
            (inputs if mode == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or not outputs:
            raise UserError(f"{self.engine_path.name} has inputs {inputs} and outputs {outputs}; expected one image input and logits")
        self.input_name = inputs[0]
        self.output_name = "logits" if "logits" in outputs else outputs[0]
        self._extra_outputs = [o for o in outputs if o != self.output_name]

        mn, opt, mx = (tuple(d) for d in eng.get_tensor_profile_shape(self.input_name, 0))
        self.profile = {"min": list(mn), "opt": list(opt), "max": list(mx)}
        self.min_batch, self.opt_batch, self.max_batch = mn[0], opt[0], mx[0]
        self._sample_shape = tuple(mx[1:])

        self._dtypes = {}
        for n in [self.input_name, *outputs]:
            dt = eng.get_tensor_dtype(n)
            try:
                self._dtypes[n] = np.dtype(trt.nptype(dt))
            except Exception:  # noqa: BLE001 - BF16/FP8/INT4 have no numpy dtype
                raise UserError(f"I/O tensor {n!r} of {self.engine_path.name} is {getattr(dt, 'name', dt)}, which numpy cannot hold; "
                                "export the ONNX with float32 (or float16) inputs and outputs") from None
        self.input_dtype = self._dtypes[self.input_name]  # what stage() / infer() cast the input to
        self._stream = self._check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

        if not self._context.set_input_shape(self.input_name, tuple(mx)):
            raise UserError(f"engine rejected its own max input shape {tuple(mx)}: {self._logger.last_error()}")
        self._current_batch = mx[0]
        for name in [self.input_name, *outputs]:
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UserError(f"output {name!r} has a data-dependent shape {shape}; not supported by this runner")
            nbytes = max(1, int(np.prod(shape)) * self._dtypes[name].itemsize)
            dptr = int(self._check(cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
            self._dev_ptrs.append(dptr)
            self._dev[name] = dptr
            hptr = int(self._check(cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
            self._host_ptrs.append(hptr)
            buf = (ctypes.c_byte * nbytes).from_address(hptr)
            self._host[name] = np.frombuffer(buf, dtype=self._dtypes[name], count=int(np.prod(shape))).reshape(shape)
            if not self._context.set_tensor_address(name, dptr):
                raise RuntimeError(f"set_tensor_address({name}) failed: {self._logger.last_error()}")
        return InputSpec(name=self.input_name, dtype=self.input_dtype, sample_shape=self._sample_shape,
                         min_batch=self.min_batch, max_batch=self.max_batch, limit="profile",
                         source=self.engine_path.name)

    # ---------------------------------------------------------------------------------------
    def _set_batch(self, n: int) -> None:
        if n == self._current_batch:
            return
        if not self._context.set_input_shape(self.input_name, (n, *self._sample_shape)):
            raise UserError(f"engine rejected input shape {(n, *self._sample_shape)}: {self._logger.last_error()}")
        self._current_batch = n

    def _copy_in(self, n: int) -> None:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        in_bytes = n * int(np.prod(self._sample_shape)) * self._dtypes[self.input_name].itemsize
        self._check(cudart.cudaMemcpyAsync(self._dev[self.input_name], self._host[self.input_name].ctypes.data, in_bytes, h2d, self._stream), "cudaMemcpyAsync H2D")

    def _copy_out(self, n: int) -> None:
        cudart = self._cudart
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        out = self._host[self.output_name]
        out_bytes = n * int(np.prod(out.shape[1:])) * out.dtype.itemsize
        self._check(cudart.cudaMemcpyAsync(out.ctypes.data, self._dev[self.output_name], out_bytes, d2h, self._stream), "cudaMemcpyAsync D2H")

    def _execute(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"execute_async_v3 failed: {self._logger.last_error() or 'unknown error'}")

    def _run_all(self, n: int) -> None:
        self._copy_in(n)
        self._execute()
        self._copy_out(n)

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
        cudart, stream = self._cudart, self._stream
        self._run_all(n)
        self._check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
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
            self._check(self._cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
            self._threads.add(tid)

    def _load_host(self, batch: np.ndarray) -> int:
        """Copy a checked batch into the pinned input buffer and set the input shape; its size."""
        self._on_device()
        n = int(batch.shape[0])
        np.copyto(self._host[self.input_name][:n], batch)
        self._set_batch(n)
        return n

    # ---------------------------------------------------------------------------------------
    # device-resident execution (public through Runner: stage / enqueue / synchronize / fetch)
    @property
    def stream(self):
        """The CUDA stream all of this runner's copies and enqueues go to (read-only)."""
        return self._stream

    def _stage(self, batch: np.ndarray) -> None:
        """The copy comes from the runner's one pinned staging buffer: synchronize before the next stage or infer."""
        self._staged_n = self._load_host(batch)
        self._copy_in(self._staged_n)

    def _enqueue(self) -> None:
        self._on_device()
        self._execute()

    def _synchronize(self) -> None:
        self._on_device()
        self._check(self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _fetch(self) -> np.ndarray:
        self._on_device()
        self._copy_out(self._staged_n)
        self._synchronize()
        return np.array(self._host[self.output_name][:self._staged_n], dtype=np.float32, copy=True)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        n = self._load_host(batch)
        exe = self._graph_for(n) if self._cuda_graph and not self._rtx_graphs else None
        if exe is not None:
            self._check(self._cudart.cudaGraphLaunch(exe, self._stream), "cudaGraphLaunch")
        else:
            self._run_all(n)
        self._check(self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return np.array(self._host[self.output_name][:n], dtype=np.float32, copy=True)

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
        return {
            "backend": self.backend if self.flavour else (m.get("flavour") or self.backend),
            "flavour": self.flavour or m.get("flavour"),
            "library": getattr(self._trt, "__name__", None),
            "version": getattr(self._trt, "__version__", None),
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
        cudart = self._cudart
        if cudart is not None:
            if self._stream is not None:
                cudart.cudaStreamSynchronize(self._stream)
            for graph, exe in self._graphs.values():
                cudart.cudaGraphExecDestroy(exe)
                cudart.cudaGraphDestroy(graph)
            self._context = None  # the context must go before the memory it points to
            for p in self._dev_ptrs:
                cudart.cudaFree(p)
            for p in self._host_ptrs:
                cudart.cudaFreeHost(p)
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        self._reset_buffers()
        self._context = self._engine = self._runtime = None

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
