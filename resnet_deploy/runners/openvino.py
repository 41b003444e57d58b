"""OpenVINO as a runner: the toolkit's ONNX (FP32, FP16, BF16, INT8 Q/DQ) read directly, CPU by default.

``Core().read_model(path)`` reads the ONNX file as it is (no conversion step), and
``Core().compile_model(model, device, properties)`` compiles it with settings chosen here and
recorded in :meth:`OpenVinoRunner.describe` (read back from the compiled model, so what is
reported is what ran):

* **inference precision** (``INFERENCE_PRECISION_HINT``): OpenVINO picks bf16 by itself on
  CPUs with BF16 (AMX, and also AVX512-BF16), which would put an FP32 artifact below the FP32
  bars. The runner sets it always: ``fp32`` for FP32, FP16 and INT8 artifacts (an INT8 Q/DQ
  model's quantized convolutions run in INT8 whatever the hint; the hint is the precision of the
  rest), ``bf16`` for a BF16 artifact where the CPU has BF16 (else ``fp32``, with a note).
  ``inference_precision="bf16"`` runs an FP32 ONNX in BF16; on a CPU without BF16 it is refused.
* **performance hint** (``PERFORMANCE_HINT``): ``latency`` (default: one infer request using
  every thread, what a single call wants) or ``throughput`` (OpenVINO's streams; each batch is
  split across the compiled model's optimal number of infer requests, run at once on an
  ``AsyncInferQueue``, and put back together in order).
* **threads** (``INFERENCE_NUM_THREADS``) and **streams** (``NUM_STREAMS``): OpenVINO's choice
  for the hint unless given.
* **CPU pinning** (``ENABLE_CPU_PINNING``): off. OpenVINO pins its threads to cores by default
  on Linux; on a CPU shared with other work (CI, a server with other processes) pinned threads
  wait on busy cores: unpinned measured 1.1-1.6x faster for ResNet-18 FP32 and INT8 (docs/cpu.md).
* **batch**: one compiled model with the ONNX's dynamic batch dimension serves every batch
  size. Reshaping to each batch seen (one compiled model per size) measured no faster for
  ResNet-18 at batch 1 and 8 (docs/cpu.md) and costs a compile per new size.

``properties`` passes any other OpenVINO property by name to ``compile_model``, over the runner's
own (``{"ENABLE_CPU_PINNING": True}`` for a dedicated machine). ``device`` is any OpenVINO
device name (``CPU``, ``GPU``, ``NPU``); only the CPU is tested here.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, UserError
from ..onnx_meta import artifact_facts
from ..versions import dist_version
from .base import InputSpec, Runner

INSTALL = "pip install 'resnet-deploy[openvino]' (or pip install openvino)"
BACKEND_DEVICES = {"openvino": "CPU"}   # the device each registered OpenVINO backend name runs on by default
HINTS = ("latency", "throughput")
# the toolkit's precision names -> OpenVINO's element type names, and the capability each needs
_OV_TYPES = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_TOOLKIT_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}


def import_openvino():
    """The ``openvino`` module, or :class:`BackendUnavailable` saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("openvino", f"the openvino package is not installed, so it cannot run here; {INSTALL}") from None
    return openvino


def installed() -> bool:
    """Is the ``openvino`` package importable here? (cheap: nothing is imported)"""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # sys.modules["openvino"] = None (how tests hide it) raises ValueError
        return False


@functools.cache
def _core():
    """One ``openvino.Core`` per process (OpenVINO recommends one per application)."""
    return import_openvino().Core()


def optimization_capabilities(device: str = "CPU") -> tuple[str, ...]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device`` (``("BF16", "FP32", "INT8", ...)``)."""
    ov = import_openvino()
    return tuple(_core().get_property(device, ov.properties.device.capabilities))


def _toolkit_precision(name: str | None) -> str | None:
    if name is None:
        return None
    key = str(name).lower()
    key = _TOOLKIT_NAMES.get(key, key)
    if key not in _OV_TYPES:
        raise UserError(f"inference_precision {name!r} is not one of {', '.join(_OV_TYPES)}")
    return key


class OpenVinoRunner(Runner):
    """One OpenVINO compiled model of one ONNX file; see the module docstring for the settings."""

    # ---- bench facts (see Runner.runs_on_gpu and the methods below it)
    @classmethod
    def runs_on_gpu(cls, backend: str) -> bool:
        return BACKEND_DEVICES.get(backend, "CPU").startswith("GPU")

    @classmethod
    def in_default_sweep(cls, backend: str, gpu: bool) -> bool:
        # the fastest CPU path where it is installed; a GPU machine's sweep is its GPU backends
        return not gpu and not cls.runs_on_gpu(backend) and installed()

    @classmethod
    def stream_instance_text(cls, backend: str, gpu: bool) -> str:
        return "its own OpenVINO compiled model and infer request (latency hint, threads not pinned)"

    def __init__(self, onnx_path: str | os.PathLike[str], *, backend: str = "openvino", precision: str | None = None,
                 threads: int | None = None, device: str | None = None, inference_precision: str | None = None,
                 hint: str = "latency", streams: int | None = None, properties: dict[str, Any] | None = None):
        super().__init__()
        if backend not in BACKEND_DEVICES:
            raise UserError(f"unknown OpenVINO backend {backend!r}; choose one of {', '.join(BACKEND_DEVICES)}")
        if hint not in HINTS:
            raise UserError(f"unknown OpenVINO performance hint {hint!r}; choose one of {', '.join(HINTS)}")
        self.backend = backend
        self.path = os.fspath(onnx_path)
        self.precision = precision
        self.threads = threads
        self.device = device or BACKEND_DEVICES[backend]
        self.requested_precision = _toolkit_precision(inference_precision)
        self.hint = hint
        self.streams = streams
        self.properties = dict(properties or {})
        self.compiled: Any = None
        self.notes: list[str] = []
        self._request: Any = None
        self._queue: Any = None
        self._settings: dict[str, Any] = {}

    # ------------------------------------------------------------------ open
    def _inference_precision(self, artifact: str) -> str:
        """What the runtime computes in: the option, else what the artifact's precision asks for."""
        caps = optimization_capabilities(self.device)
        want = self.requested_precision
        if want is not None:
            if _CAPABILITY[want] not in caps:
                raise BackendUnavailable(self.backend, f"inference_precision={want!r} needs {self.device} {_CAPABILITY[want]} "
                                                       f"support, which this {self.device} lacks (OpenVINO reports "
                                                       f"{', '.join(caps)})")
            return want
        if artifact == "bf16":
            if "BF16" in caps:
                return "bf16"
            self.notes.append(f"this {self.device} has no BF16: the BF16 artifact runs in fp32")
        return "fp32"

    def _compile_properties(self, ov: Any, inference: str) -> dict[str, Any]:
        """``compile_model``'s properties by name (``properties`` may override any of them)."""
        p, hints = ov.properties, ov.properties.hint
        props: dict[str, Any] = {
            hints.inference_precision(): getattr(ov.Type, _OV_TYPES[inference]),
            hints.performance_mode(): getattr(hints.PerformanceMode, self.hint.upper()),
        }
        if self.device == "CPU":
            props[hints.enable_cpu_pinning()] = False  # measured faster on a shared CPU (docs/cpu.md)
        if self.threads:
            props[p.inference_num_threads()] = int(self.threads)
        if self.streams is not None:
            props[p.streams.num()] = int(self.streams)
        props.update({str(k): v for k, v in self.properties.items()})
        return props

    def _open(self) -> InputSpec:
        ov = import_openvino()
        core = _core()
        if self.device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise BackendUnavailable(self.backend, f"OpenVINO has no {self.device} device here "
                                                   f"(available: {', '.join(core.available_devices)})")
        if not os.path.isfile(self.path):
            raise UserError(f"ONNX model not found: {self.path}")
        if self.precision is None:  # what the artifact records (or its graph says)
            self.precision = artifact_facts(self.path, "onnx").get("precision", "fp32")
        self.notes = []
        inference = self._inference_precision(self.precision)
        try:
            model = core.read_model(self.path)
            self.compiled = core.compile_model(model, self.device, self._compile_properties(ov, inference))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses for bad models and settings
            raise UserError(f"openvino cannot load {self.path}: {str(e).strip().splitlines()[0][:300]}") from None
        self._read_back(ov)
        if self.hint == "throughput":
            self._queue = ov.AsyncInferQueue(self.compiled, self._settings["requests"])
        self._request = self.compiled.create_infer_request()
        return self._spec(model)

    def _read_back(self, ov: Any) -> None:
        """The settings as the compiled model reports them (what describe() shows)."""
        c, p = self.compiled, ov.properties
        self._settings = {
            "inference_precision": _TOOLKIT_NAMES.get(c.get_property(p.hint.inference_precision).get_type_name(), "?"),
            "performance_hint": str(c.get_property(p.hint.performance_mode)).rsplit(".", 1)[-1],
            "threads": int(c.get_property(p.inference_num_threads)),
            "streams": int(c.get_property(p.streams.num)),
            "requests": int(c.get_property(p.optimal_number_of_infer_requests)),
            "cpu_pinning": bool(c.get_property(p.hint.enable_cpu_pinning)) if self.device == "CPU" else None,
        }

    def _spec(self, model: Any) -> InputSpec:
        if len(model.inputs) != 1 or not model.outputs:
            raise UserError(f"{self.path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                            "expected one image input")
        inp = model.inputs[0]
        dims = list(inp.get_partial_shape())
        fixed = dims[0].get_length() if dims and dims[0].is_static else None
        sample = tuple(d.get_length() if d.is_static else None for d in dims[1:])
        dtype = np.float16 if inp.get_element_type().get_type_name() == "f16" else np.float32
        return InputSpec(name=inp.get_any_name(), dtype=dtype, sample_shape=sample, min_batch=fixed or 1,
                         max_batch=fixed, limit="fixed" if fixed else "dynamic", source=self.path)

    def _close(self) -> None:
        self._request = self._queue = None
        self.compiled = None

    # ------------------------------------------------------------------ inference
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self._queue is None or len(batch) == 1:
            # zero-copy in (the batch outlives this synchronous call) and out (copied here before the next call
            # overwrites the request's tensor): 0.5 ms of a 5.7 ms ResNet-18 INT8 batch-1 call (benchmarks/cpu-peers)
            out = self._request.infer({0: batch}, share_inputs=True, share_outputs=True)[0]
            return np.array(out, dtype=np.float32)
        chunks = np.array_split(batch, min(len(batch), self._settings["requests"]))
        results: list[Any] = [None] * len(chunks)

        def done(request: Any, i: int) -> None:
            results[i] = np.array(request.get_output_tensor(0).data, dtype=np.float32)

        self._queue.set_callback(done)
        for i, chunk in enumerate(chunks):
            self._queue.start_async({0: chunk}, userdata=i, share_inputs=True)  # chunks live until wait_all
        self._queue.wait_all()
        return np.concatenate(results)

    def infer_outputs(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """The graph outputs ``names`` for one batch, float32 (diagnosis makes intermediate tensors outputs)."""
        x = self._require_open().check(batch)
        result = self._request.infer({0: x})
        ports = {n: port for port in self.compiled.outputs for n in port.get_names()}
        missing = [n for n in names if n not in ports]
        if missing:
            raise UserError(f"{self.path} has no output {missing[0]!r}")
        return [np.asarray(result[ports[n]], dtype=np.float32) for n in names]

    # ------------------------------------------------------------------ facts
    def describe(self) -> dict[str, Any]:
        version = dist_version("openvino")
        s = self._settings if self.compiled is not None else {}
        return {"backend": self.backend, "version": version, "device": self.device, "model": self.path,
                "precision": self.precision,
                "inference_precision": s.get("inference_precision", self.requested_precision),
                "performance_hint": s.get("performance_hint", self.hint.upper()),
                "threads": s.get("threads", self.threads), "streams": s.get("streams", self.streams),
                "cpu_pinning": s.get("cpu_pinning"),
                "batch": "dynamic" if self.input_spec is None or self.input_spec.limit != "fixed"
                else self.input_spec.min_batch,
                "notes": self._summary(s) + list(self.notes)}

    def _summary(self, s: dict[str, Any]) -> list[str]:
        if not s:
            return []
        return [f"{s['inference_precision']} inference, {s['performance_hint'].lower()} hint, {s['threads']} threads, "
                f"{s['streams']} stream{'s' if s['streams'] != 1 else ''}"]

    @classmethod
    def unavailable(cls, backend: str, precision: str) -> str | None:
        if not installed():
            return f"the openvino package is not installed, so {backend} cannot run here; {INSTALL}"
        try:
            import_openvino()
        except BackendUnavailable as e:
            return e.reason
        return None

    @classmethod
    def timing_options(cls, backend: str, *, threads: int | None = None, tf32: bool = False, cuda_graph: bool = True,
                       beside_others: bool = False) -> dict[str, Any]:
        # One request with every thread (latency hint) measured as fast as the throughput hint's
        # streams for ResNet-18 at 224x224 batch 8 (docs/cpu.md). Threads are not pinned (the
        # runner's default), so instances beside each other (several streams) do not pin to the same cores.
        return {"threads": threads, "hint": "latency"}


__all__ = ["BACKEND_DEVICES", "HINTS", "INSTALL", "OpenVinoRunner", "import_openvino", "installed",
           "optimization_capabilities"]
