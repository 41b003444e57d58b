"""ONNX Runtime as a runner (CPU, or the CUDA provider when onnxruntime-gpu is installed).

Besides :meth:`~OrtRunner.infer` the runner offers the device-resident path of every runner
(:class:`~resnet_deploy.runners.base.Runner`): :meth:`~OrtRunner.stage` binds the input and
output once per batch shape to ``OrtValue`` buffers on the provider's device with I/O binding
(CUDA graphs need fixed addresses) and copies the host batch in (``OrtValue.update_inplace``,
then ``IOBinding.synchronize_inputs``, so the copy has landed before anything runs on it);
:meth:`~OrtRunner.enqueue` is ``run_with_iobinding`` alone; :meth:`~OrtRunner.fetch` copies
the logits back. On ``ort-cuda`` :meth:`~OrtRunner.infer` itself goes through that binding
(stage, run, fetch), so what parity checks is what bench times; on the CPU provider it is a
plain ``InferenceSession.run`` (the binding works there too: that is how the tests run it).

``io_binding=True`` makes :meth:`~OrtRunner.infer` take the bound path on the CPU provider too.
``cuda_graph=True`` (ort-cuda) sets the CUDA provider's ``enable_cuda_graph``: ONNX Runtime
captures the graph on the first bound run and replays it after. A captured graph belongs to one
shape, so staging another batch size opens a new session. If the session refuses a graph, or the
capture fails, the runner reopens without one and says so in ``describe()["notes"]``.
"""

from __future__ import annotations

import contextlib
import functools
import io as _io
import os
import time
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, UserError
from .base import InputSpec, Runner

PROVIDERS = {"ort": ["CPUExecutionProvider"], "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("ort", "onnxruntime is not installed (pip install onnxruntime)") from None
    return onnxruntime


@functools.cache
def preload_cuda_libraries(ort) -> tuple[str, ...]:
    """``onnxruntime.preload_dlls()`` once per process; returns the lines it printed.

    onnxruntime-gpu loads CUDA and cuDNN lazily when a CUDA session starts; from pip-installed
    ``nvidia-*`` packages (PyTorch's CUDA wheels bring them) they are only found after
    ``preload_dlls`` (onnxruntime >= 1.21). It prints its failures on stdout, which would corrupt
    ``--json`` output, so they are captured here and quoted if the CUDA provider then fails.
    """
    out = _io.StringIO()
    fn = getattr(ort, "preload_dlls", None)
    if fn is not None:
        try:
            with contextlib.redirect_stdout(out):
                fn()
        except Exception as e:  # noqa: BLE001 - best effort: the provider check below decides
            out.write(f"preload_dlls failed: {e}\n")
    return tuple(line.strip() for line in out.getvalue().splitlines() if line.strip())


def _dtype(onnx_type: str):
    return np.float16 if onnx_type == "tensor(float16)" else np.float32


class _Binding:
    """Input and output ``OrtValue`` s bound once, for one batch shape, to one session."""

    def __init__(self, binding: Any, input: Any, output: Any, shape: tuple[int, ...]):
        self.binding, self.input, self.output, self.shape = binding, input, output, shape


class OrtRunner(Runner):
    """ONNX Runtime session for one model.

    ``provider_options`` apply to the backend's first provider (``CUDAExecutionProvider`` for
    ``ort-cuda``, e.g. ``{"prefer_nhwc": "1", "use_tf32": "0"}``). ``session_options``: each key
    that is an attribute of ``onnxruntime.SessionOptions`` is set on it; any other key is added
    with ``add_session_config_entry`` (string values).
    """

    # ---- bench facts (see Runner.runs_on_gpu and the methods below it)
    @classmethod
    def runs_on_gpu(cls, backend: str) -> bool:
        return PROVIDERS.get(backend, [""])[0] == "CUDAExecutionProvider"

    @classmethod
    def in_default_sweep(cls, backend: str, gpu: bool) -> bool:
        return cls.runs_on_gpu(backend) == gpu

    @classmethod
    def known_slowdown(cls, backend: str, precision: str) -> str | None:
        if precision == "int8" and not cls.runs_on_gpu(backend):
            return ("ONNX Runtime's CPU provider cannot fuse the TensorRT-style Q/DQ placement (inputs quantized, outputs "
                    "not) into its integer kernels, so it dequantizes and runs FP32 convolutions plus the extra Q/DQ nodes; "
                    "on a CPU the INT8 path is the openvino runner, which reads the same ONNX, or for ONNX Runtime "
                    "`quantize --int8-flavour ort-cpu` (its own QDQ, 2.4-2.9x its FP32 at batch 8: docs/cpu.md)")
        return None

    @classmethod
    def stream_instance_text(cls, backend: str, gpu: bool) -> str:
        if cls.runs_on_gpu(backend):
            return "its own InferenceSession (its own CUDA stream, I/O binding, no CUDA graph)"
        return "its own InferenceSession"

    def __init__(self, onnx_path: str | os.PathLike[str], *, backend: str = "ort", threads: int | None = None,
                 precision: str | None = None, provider_options: dict[str, Any] | None = None,
                 session_options: dict[str, Any] | None = None, cuda_graph: bool = False, device_id: int = 0,
                 io_binding: bool | None = None):
        super().__init__()
        if backend not in PROVIDERS:
            raise UserError(f"unknown ONNX Runtime backend {backend!r}; choose one of {', '.join(PROVIDERS)}")
        self.backend = backend
        self.path = os.fspath(onnx_path)
        self.precision = precision
        self.threads = threads
        self.provider_options = dict(provider_options or {})
        self.session_options = dict(session_options or {})
        self.device_type = "cpu" if backend == "ort" else "cuda"
        self.device_id = device_id
        self.cuda_graph = bool(cuda_graph) and self.device_type == "cuda"
        # infer() through the bound buffers: always on ort-cuda; on the CPU provider when asked (tests)
        self.io_binding = self.device_type == "cuda" if io_binding is None else bool(io_binding)
        self.session: Any = None
        self.notes: list[str] = []
        self._bound: _Binding | None = None
        self._staged: np.ndarray | None = None
        self._graph_runs = 0
        self._captures, self._capture_s = 0, 0.0

    @property
    def device_resident(self) -> bool:  # type: ignore[override]
        return self.device_type == "cuda"

    # ------------------------------------------------------------------ sessions
    def _new_session(self, graph: bool):
        ort = self._ort
        wanted = PROVIDERS[self.backend]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        for key, value in self.session_options.items():
            if hasattr(options, key):
                setattr(options, key, value)
            else:
                options.add_session_config_entry(str(key), str(value))
        provider_options = dict(self.provider_options)
        if graph:
            provider_options["enable_cuda_graph"] = "1"
        providers: list[Any] = list(wanted)
        if provider_options:
            providers[0] = (wanted[0], {str(k): str(v) for k, v in provider_options.items()})
        preload = preload_cuda_libraries(ort) if self.device_type == "cuda" else ()
        try:
            session = ort.InferenceSession(self.path, options, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad models
            raise UserError(f"onnxruntime cannot load {self.path}: {str(e).splitlines()[0][:300]}") from None
        active = session.get_providers()
        if wanted[0] not in active:
            # ORT falls back to the next provider with only a log line when a provider's libraries
            # do not load: a CPU figure must never be reported as ort-cuda.
            failed = next((line for line in preload if "failed" in line.lower()), None)
            raise BackendUnavailable(
                self.backend,
                f"onnxruntime has {wanted[0]} but could not start it (session fell back to {', '.join(active)})"
                + (f": {failed}" if failed else ": its CUDA 13 / cuDNN 9 libraries did not load")
                + "; install them (e.g. the nvidia-* wheels of a CUDA build of torch) or put them on LD_LIBRARY_PATH",
            )
        return session

    def _open(self) -> InputSpec:
        self._ort = ort = import_ort()
        wanted = PROVIDERS[self.backend]
        if wanted[0] not in ort.get_available_providers():
            raise BackendUnavailable(self.backend, f"{wanted[0]} is not in this onnxruntime build "
                                                   f"(available: {', '.join(ort.get_available_providers())})")
        if not os.path.isfile(self.path):
            raise UserError(f"ONNX model not found: {self.path}")
        self.notes = []
        self._graph = self.cuda_graph
        if self._graph:
            try:
                self.session = self._new_session(True)
            except BackendUnavailable:
                raise
            except UserError as e:  # the session itself refuses a graph not wholly on the CUDA provider
                self._graph_refused(e)
        if self.session is None:
            self.session = self._new_session(False)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise UserError(f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; expected one image input")
        inp = inputs[0]
        self.input_name, self.output_name = inp.name, outputs[0].name
        self.input_dtype, self.output_dtype = _dtype(inp.type), _dtype(outputs[0].type)
        classes = outputs[0].shape[-1] if outputs[0].shape else None
        self._classes = classes if isinstance(classes, int) else None
        dims = list(inp.shape)
        fixed = dims[0] if dims and isinstance(dims[0], int) else None
        sample = tuple(d if isinstance(d, int) else None for d in dims[1:])
        return InputSpec(name=inp.name, dtype=self.input_dtype, sample_shape=sample, min_batch=fixed or 1,
                         max_batch=fixed, limit="fixed" if fixed else "dynamic", source=self.path)

    def _graph_refused(self, e: Exception) -> None:
        self._graph = False
        self.notes.append(f"CUDA graph capture failed ({str(e).splitlines()[0][:160]}); timed without graphs")

    def _close(self) -> None:
        self._bound = self._staged = None
        self.session = None

    # ------------------------------------------------------------------ binding
    def _bind(self, shape: tuple[int, ...]) -> _Binding:
        ort = self._ort
        if self._bound is not None and self._graph and self._graph_runs:
            # a captured CUDA graph is fixed to its shape: a new shape needs a fresh session
            self.session = self._new_session(True)
            self._graph_runs = 0
        x_dev = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), self.input_dtype, self.device_type, self.device_id)
        classes = self._classes or 1000
        y_dev = ort.OrtValue.ortvalue_from_shape_and_type([shape[0], classes], self.output_dtype, self.device_type,
                                                          self.device_id)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, x_dev)
        binding.bind_ortvalue_output(self.output_name, y_dev)
        return _Binding(binding, x_dev, y_dev, shape)

    def _stage(self, batch: np.ndarray) -> None:
        shape = tuple(batch.shape)
        if self._bound is None or self._bound.shape != shape:
            self._bound = self._bind(shape)
        # its own buffer: on the CPU provider ortvalue_from_numpy would alias the caller's array
        self._bound.input.update_inplace(batch)
        self._staged = batch
        # update_inplace from pageable memory may return before the copy lands on ORT's stream
        self._bound.binding.synchronize_inputs()

    def _enqueue(self) -> None:
        if self._bound is None:
            raise UserError("stage() a batch before enqueue()")
        try:
            self._run_bound()
        except Exception as e:
            if not self._graph:
                raise
            self._graph_refused(e)
            self.session = self._new_session(False)
            self._bound = self._bind(self._bound.shape)
            self._bound.input.update_inplace(self._staged)
            self._bound.binding.synchronize_inputs()
            self._run_bound()
        if self._graph:
            self._graph_runs += 1

    def _run_bound(self) -> None:
        """One run on the bound buffers; the first on a graph session captures the CUDA graph (timed)."""
        if not (self._graph and self._graph_runs == 0):
            self.session.run_with_iobinding(self._bound.binding)
            return
        t0 = time.perf_counter()
        self.session.run_with_iobinding(self._bound.binding)
        self._bound.binding.synchronize_outputs()
        self._captures += 1
        self._capture_s += time.perf_counter() - t0

    def compile_stats(self) -> dict[str, Any] | None:
        if not self.cuda_graph:
            return None
        return {"graphs": self._captures, "seconds": self._capture_s}

    def _synchronize(self) -> None:
        if self._bound is not None:
            self._bound.binding.synchronize_outputs()

    def _fetch(self) -> np.ndarray:
        if self._bound is None:
            raise UserError("stage() a batch before fetch()")
        return np.asarray(self._bound.binding.copy_outputs_to_cpu()[0], dtype=np.float32)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self.io_binding or self._graph:
            self._stage(batch)
            self._enqueue()
            self._synchronize()
            return self._fetch()
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return out.astype(np.float32, copy=False)

    def infer_outputs(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """The graph outputs ``names`` for one batch, float32 (diagnosis makes intermediate tensors outputs)."""
        x = self._require_open().check(batch)
        return [np.asarray(o, dtype=np.float32) for o in self.session.run(list(names), {self.input_name: x})]

    # ------------------------------------------------------------------ facts
    def describe(self) -> dict[str, Any]:
        try:
            version = import_ort().__version__
        except BackendUnavailable:
            version = None
        return {"backend": self.backend, "version": version, "device": self.device_type,
                "providers": self.session.get_providers() if self.session is not None else PROVIDERS[self.backend],
                "model": self.path, "precision": self.precision,
                "cuda_graph": bool(getattr(self, "_graph", self.cuda_graph)),
                "io_binding": self.io_binding, "notes": self._summary() + list(self.notes)}

    def _summary(self) -> list[str]:
        if not self.io_binding:
            return []
        po = self.provider_options
        tf32 = "" if self.device_type != "cuda" else (", TF32 allowed" if str(po.get("use_tf32", "1")) == "1" else ", TF32 off")
        graph = ", CUDA graph" if getattr(self, "_graph", self.cuda_graph) else ""
        return ["I/O binding" + graph + (", prefer_nhwc" if str(po.get("prefer_nhwc")) == "1" else "") + tf32]

    @classmethod
    def unavailable(cls, backend: str, precision: str) -> str | None:
        try:
            ort = import_ort()
        except BackendUnavailable:
            return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for ort-cuda)"
        want = PROVIDERS.get(backend, ["?"])[0]
        have = ort.get_available_providers()
        if want not in have:
            return f"{want} is not in this onnxruntime build (available: {', '.join(have)})"
        return None

    @classmethod
    def timing_options(cls, backend: str, *, threads: int | None = None, tf32: bool = False, cuda_graph: bool = True,
                       beside_others: bool = False) -> dict[str, Any]:
        if backend == "ort":
            return {"threads": threads}
        # Several sessions beside each other run without graphs: ONNX Runtime captures in global
        # capture mode, which another thread's synchronous copy (update_inplace) would break.
        return {"cuda_graph": cuda_graph and not beside_others,
                "provider_options": {"device_id": "0", "use_tf32": "1" if tf32 else "0", "prefer_nhwc": "1"}}


__all__ = ["OrtRunner", "PROVIDERS", "import_ort", "preload_cuda_libraries"]
