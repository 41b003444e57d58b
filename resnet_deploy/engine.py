"""Build TensorRT / TensorRT-RTX engines from ONNX, record what was built, decide reuse.

One module serves both flavours:

* ``trt``     -> the ``tensorrt`` module (TensorRT 10.x incl. JetPack, 11.x). Needs a GPU to build.
* ``trt-rtx`` -> the ``tensorrt_rtx`` module (TensorRT for RTX). Builds ahead of time on the
  CPU, no GPU needed; the engine then runs on the compute capabilities it targets.

Precision is *strongly typed*: it comes from the ONNX (FP16 from an AutoCast'ed ONNX, INT8 from
explicit Q/DQ nodes). TensorRT 11 and TensorRT-RTX have no other way; on TensorRT 10 the old
weak-typing builder flags (``BuilderFlag.FP16`` / ``INT8`` / ``BF16``) can still be requested with
``BuildOptions(legacy_precision_flags=True)``, and are refused where the library lacks them.
Differences between versions are handled by looking at what the imported module has
(``getattr``), never by branching on version strings.

Every write goes through :mod:`resnet_deploy.artifacts` (atomic rename), and every engine gets a
JSON manifest beside it (``x.engine.json``) that :func:`needs_rebuild` and the runner read.

Layer precisions: TensorRT's ``IEngineInspector`` needs a *deserialized* engine, and
deserializing needs a CUDA device. So the manifest's ``layer_precision`` comes from the engine
inspector when a usable GPU is present, and otherwise from the parsed network (the per-layer
output types of the strongly typed network, which is what the builder must honour); its
``source`` field says which, and ``engine_inspector`` says why the inspector was not used.

This module does not import torch.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import signal
import threading
import time
import warnings
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .artifacts import (
    PRECISIONS,
    artifact_path,
    atomic_path,
    ensure_writable_dir,
    manifest_path,
    read_manifest,
    sha256_file,
    write_manifest,
)
from .errors import BackendUnavailable, UserError

log = logging.getLogger(__name__)

FLAVOURS: dict[str, str] = {"trt": "tensorrt", "trt-rtx": "tensorrt_rtx"}
_PIP_HINT = {
    "trt": "install TensorRT for your CUDA/JetPack (pip `tensorrt` needs NVIDIA's package index; Jetson ships it with JetPack)",
    "trt-rtx": "pip install tensorrt-rtx",
}

DEFAULT_PROFILE = (1, 8, 32)  # min / opt / max batch for a dynamic-batch ONNX
MAX_OPT_LEVEL = 5  # IBuilderConfig.builder_optimization_level: 0..5, default 3 (API reference)

# TensorRT-RTX engines built with no explicit target run on these (TensorRT-RTX docs,
# "CPU-Only AOT and TensorRT-RTX Engines": "compute capability 8.0, 8.6, 8.9, 12.0, and later";
# the runtime's own error on an H100 lists "8.0 8.6 8.9 12.0 12.1 >12.0").
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0+")

HARDWARE_COMPAT = {"ampere+": "AMPERE_PLUS", "same_cc": "SAME_COMPUTE_CAPABILITY"}

# Keys compared by needs_rebuild(); request_facts() produces exactly these.
REUSE_KEYS = (
    "flavour",
    "builder_version",
    "onnx_sha256",
    "precision",
    "requested_profile",
    "target",
    "opt_level",
    "workspace_mib",
    "hardware_compatibility",
    "version_compatible",
    "legacy_precision_flags",
    "dla_core",
    "gpu_fallback",
)
DLA_PRECISIONS = ("fp16", "int8")


def check_dla_core(core: Any) -> None:
    """A DLA core number is an integer >= 0 (what the builder and the runtime both take)."""
    if isinstance(core, bool) or not isinstance(core, int) or core < 0:
        raise UserError(f"DLA core must be an integer >= 0 (got {core!r})")

ProgressCallback = Callable[[str, int, int], Any]
"""``progress(phase, step, total)``; called when a phase starts (step 0) and after each step.
Returning ``False`` asks the builder to cancel (``IProgressMonitor.step_complete``)."""


# --------------------------------------------------------------------------------------------
# Importing a flavour, CUDA device facts
# --------------------------------------------------------------------------------------------


def import_flavour(flavour: str):
    """Import and return the TensorRT module for ``flavour`` (``trt`` or ``trt-rtx``)."""
    if flavour not in FLAVOURS:
        raise UserError(f"unknown engine flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    module = FLAVOURS[flavour]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(flavour, f"Python module `{module}` cannot be imported ({e}); {_PIP_HINT[flavour]}") from None
    except Exception as e:  # e.g. bindings present but libnvinfer missing raises OSError/RuntimeError
        raise BackendUnavailable(flavour, f"`{module}` failed to load: {type(e).__name__}: {e}") from None


def is_rtx(trt) -> bool:
    return getattr(trt, "__name__", "").startswith("tensorrt_rtx")


def flavour_of(trt) -> str:
    return "trt-rtx" if is_rtx(trt) else "trt"


def load_cudart():
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (>= 12.6), else legacy ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore

        return cudart
    except ImportError:
        return None


def cuda_error_name(cudart, err) -> str:
    try:
        res = cudart.cudaGetErrorName(err)
        name = res[1] if isinstance(res, tuple) else res
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return str(err)


def cuda_device_info(index: int = 0) -> tuple[dict[str, Any] | None, str]:
    """``({name, compute_capability, index, total_memory_mib}, "")`` or ``(None, why not)``."""
    cudart = load_cudart()
    if cudart is None:
        return None, "cuda-python is not installed (pip install cuda-python)"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:
        return None, f"no CUDA device ({cuda_error_name(cudart, err)})"
    if count < 1:
        return None, "no CUDA device"
    if index >= count:
        return None, f"CUDA device {index} does not exist ({count} present)"
    err, prop = cudart.cudaGetDeviceProperties(index)
    if int(err) != 0:
        return None, f"cannot read CUDA device {index} properties ({cuda_error_name(cudart, err)})"
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return {
        "index": index,
        "name": str(name).strip(),
        "compute_capability": f"{prop.major}.{prop.minor}",
        "total_memory_mib": int(prop.totalGlobalMem) >> 20,
    }, ""


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, minor = cc.rstrip("+").split(".")
    return int(major), int(minor)


def normalize_compute_capability(value: str) -> str:
    """``"8.6"``, ``"86"``, ``"sm86"``, ``"sm_86"``, ``"SM86"`` -> ``"8.6"``; ``"current"`` stays."""
    s = str(value).strip().lower()
    if s == "current":
        return "current"
    m = re.fullmatch(r"(?:sm_?)?(\d+)\.(\d)", s) or re.fullmatch(r"(?:sm_?)?(\d+)(\d)", s)
    if not m:
        raise UserError(f"cannot read compute capability {value!r}; write it like 8.6 or sm86")
    return f"{int(m.group(1))}.{int(m.group(2))}"


def rtx_cc_supported(device_cc: str, targets: Sequence[str]) -> bool:
    """Is a device of ``device_cc`` among the engine's TensorRT-RTX ``targets``?"""
    dev = _cc_tuple(device_cc)
    for t in targets:
        if t.endswith("+"):
            if dev >= _cc_tuple(t):
                return True
        elif dev == _cc_tuple(t):
            return True
    return False


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@dataclass
class BuildOptions:
    """What to build. ``None`` batch values mean: 1/8/32 for a dynamic-batch ONNX, N for a fixed one."""

    flavour: str = "trt-rtx"
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_mib: int | None = None  # None: the library's default (all device memory)
    opt_level: int = 3  # IBuilderConfig.builder_optimization_level
    timing_cache: Path | None = None  # loaded if present, saved after the build (trt only)
    compute_capabilities: list[str] | None = None  # trt-rtx targets, e.g. ["8.6", "8.9", "12.0"]
    hardware_compatibility: str | None = None  # trt only: "ampere+" or "same_cc"
    version_compatible: bool = False  # trt only: BuilderFlag.VERSION_COMPATIBLE
    legacy_precision_flags: bool = False  # TRT 10 only: weak typing with FP16/INT8/BF16 flags
    dla_core: int | None = None  # trt only: run on this DLA core (Jetson AGX/NX Orin); FP16/INT8 only
    gpu_fallback: bool = True  # with dla_core: layers DLA cannot run go to the GPU (else the build fails)

    def requested_profile(self) -> list[int | None]:
        return [self.min_batch, self.opt_batch, self.max_batch]

    def check_precision(self, precision: str) -> None:
        """The precision is one this module builds, and one these options can build (DLA: FP16, INT8)."""
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.dla_core is not None and precision not in DLA_PRECISIONS:
            raise UserError(f"DLA runs FP16 and INT8 only, not {precision}: build --precision fp16 or int8 for --dla-core")

    def dla_facts(self) -> dict[str, Any]:
        """What a manifest and a reuse check record of DLA (``None`` for GPU engines)."""
        dla = self.dla_core is not None
        return {"dla_core": self.dla_core, "gpu_fallback": self.gpu_fallback if dla else None}

    def validate(self) -> None:
        if self.flavour not in FLAVOURS:
            raise UserError(f"unknown engine flavour {self.flavour!r}; choose one of {', '.join(FLAVOURS)}")
        for name in ("min_batch", "opt_batch", "max_batch"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise UserError(f"{name.replace('_', ' ')} must be an integer >= 1 (got {v!r})")
        if not isinstance(self.opt_level, int) or not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise UserError(f"builder optimization level must be 0..{MAX_OPT_LEVEL} (got {self.opt_level!r})")
        if self.workspace_mib is not None and (not isinstance(self.workspace_mib, int) or self.workspace_mib < 1):
            raise UserError(f"workspace must be a positive number of MiB (got {self.workspace_mib!r})")
        if self.dla_core is not None:
            check_dla_core(self.dla_core)
        if self.dla_core is None and not self.gpu_fallback:
            raise UserError("GPU fallback only applies to DLA builds: add --dla-core N, or drop --no-gpu-fallback")
        if self.flavour == "trt":
            if self.compute_capabilities:
                raise UserError("compute capability targets apply to trt-rtx engines; for trt use hardware compatibility (ampere+ / same_cc)")
        else:
            if self.hardware_compatibility:
                raise UserError("hardware compatibility levels are not supported by TensorRT-RTX; choose compute capability targets instead")
            if self.version_compatible:
                raise UserError("TensorRT-RTX engines are not compatible between releases, so version-compatible builds are not offered for trt-rtx")
            if self.legacy_precision_flags:
                raise UserError("TensorRT-RTX has no weak typing: precision must be in the ONNX (legacy precision flags are TensorRT 10 only)")
            if self.dla_core is not None:
                raise UserError("TensorRT-RTX has no DLA: DLA engines are TensorRT (--engine trt) built on a Jetson with DLA cores")
        if self.hardware_compatibility is not None and self.hardware_compatibility not in HARDWARE_COMPAT:
            raise UserError(f"hardware compatibility must be one of {', '.join(HARDWARE_COMPAT)} (got {self.hardware_compatibility!r})")
        if self.compute_capabilities is not None:
            ccs = [normalize_compute_capability(c) for c in self.compute_capabilities]
            if "current" in ccs and len(ccs) > 1:
                raise UserError("compute capability 'current' must be the only target")
            self.compute_capabilities = ccs or None


def resolve_profile(requested: Sequence[int | None], fixed_batch: int | None) -> tuple[int, int, int]:
    """Fill unset values and check ``1 <= min <= opt <= max``; a fixed-batch ONNX pins all three."""
    mn, opt, mx = requested
    if fixed_batch is not None:
        given = {k: v for k, v in zip(("min", "opt", "max"), requested) if v is not None}
        wrong = {k: v for k, v in given.items() if v != fixed_batch}
        if wrong:
            got = ", ".join(f"{k}={v}" for k, v in wrong.items())
            raise UserError(
                f"the ONNX has a fixed batch of {fixed_batch}, so the profile must be min=opt=max={fixed_batch} "
                f"(got {got}); re-export with a dynamic batch to build a range"
            )
        return fixed_batch, fixed_batch, fixed_batch
    dmin, dopt, dmax = DEFAULT_PROFILE
    if mn is None:
        mn = min([dmin] + [v for v in (opt, mx) if v is not None])
    if mx is None:
        mx = max([dmax, mn] + ([opt] if opt is not None else []))
    if opt is None:
        opt = min(max(dopt, mn), mx)
    for name, v in (("min", mn), ("opt", opt), ("max", mx)):
        if v < 1:
            raise UserError(f"{name} batch must be >= 1 (got {v})")
    if not mn <= opt <= mx:
        raise UserError(f"batch profile must satisfy min <= opt <= max (got min={mn}, opt={opt}, max={mx})")
    return mn, opt, mx


def engine_path_for(arch: str, precision: str, flavour: str, root: str | os.PathLike[str] | None = None) -> Path:
    """``engines/resnet50/resnet50.fp16.trt-rtx.engine`` (names come from :func:`artifact_path`)."""
    if flavour not in FLAVOURS:
        raise UserError(f"unknown engine flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    return artifact_path(arch, precision, kind=flavour) if root is None else artifact_path(arch, precision, kind=flavour, root=root)


# --------------------------------------------------------------------------------------------
# Logger / progress adapters
# --------------------------------------------------------------------------------------------


_LOGGERS: dict[str, Any] = {}


def _make_logger(trt, min_severity: str = "WARNING"):
    """The process's one ILogger for this flavour: keeps errors/warnings (to quote in UserErrors).

    One instance per flavour lives as long as the process. TensorRT holds on to the logger it
    was first given beyond the life of the builder or runtime; a fresh Python logger per build
    gets garbage-collected while TensorRT may still call it, which hung a later
    ``trt.Builder(logger)`` in our tests. Each call clears the kept messages, so
    ``last_error()`` speaks of the current build or load.
    """
    key = getattr(trt, "__name__", "tensorrt")
    logger = _LOGGERS.get(key)
    if logger is None:
        sev = trt.ILogger.Severity

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []
                self.warnings: list[str] = []
                self.threshold = int(sev.WARNING)

            def log(self, severity, msg):  # called from TensorRT threads; keep it simple
                level = int(severity)
                if level <= int(sev.ERROR):
                    self.errors.append(msg)
                    log.debug("TensorRT error: %s", msg)
                elif level == int(sev.WARNING):
                    self.warnings.append(msg)
                    if level <= self.threshold:
                        log.debug("TensorRT warning: %s", msg)
                elif level <= self.threshold:
                    log.debug("TensorRT: %s", msg)

            def last_error(self) -> str:
                return self.errors[-1] if self.errors else ""

        logger = _LOGGERS[key] = _Logger()
    logger.threshold = int(getattr(trt.ILogger.Severity, min_severity))
    logger.errors.clear()
    logger.warnings.clear()
    return logger


def _make_progress_monitor(trt, callback: ProgressCallback | None, cancel: threading.Event | None = None):
    """An ``IProgressMonitor`` forwarding to ``callback`` and cancelling the build once ``cancel`` is set.

    TensorRT's Python trampoline swallows exceptions raised in these methods (it prints them and
    cancels), so nothing here may raise: a failing callback is logged and ignored.
    """
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self):
            base.__init__(self)
            self.totals: dict[str, int] = {}
            self.cancelled = False

        def _call(self, phase, step, total):
            if callback is None:
                return None
            try:
                return callback(phase, step, total)
            except Exception:  # a broken callback must not kill the build
                log.debug("progress callback failed", exc_info=True)
                return None

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.totals[phase_name] = int(num_steps)
            self._call(phase_name, 0, int(num_steps))

        def step_complete(self, phase_name, step):
            keep_going = self._call(phase_name, int(step) + 1, self.totals.get(phase_name, 0))
            if keep_going is False or (cancel is not None and cancel.is_set()):
                self.cancelled = True
                return False
            return True

        def phase_finish(self, phase_name):
            self.totals.pop(phase_name, None)

    return _Monitor()


@contextlib.contextmanager
def _sigint_cancels(cancel: threading.Event):
    """While building, Ctrl-C sets ``cancel`` (the progress monitor then stops the builder)
    instead of raising inside a TensorRT callback, where the bindings would swallow it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:  # someone else owns SIGINT (or it is ignored)
        yield
        return

    def handler(signum, frame):
        cancel.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------------------
# Network helpers
# --------------------------------------------------------------------------------------------


def _dtype_name(trt, dt) -> str:
    try:
        import numpy as np

        return np.dtype(trt.nptype(dt)).name
    except Exception:  # BF16, FP8, INT4... have no numpy equivalent
        return str(getattr(dt, "name", dt)).lower()


def _create_network(trt, builder, *, strongly_typed: bool):
    """Create a network; strongly typed unless asked otherwise. Returns (network, strongly_typed)."""
    flag_enum = trt.NetworkDefinitionCreationFlag
    st = getattr(flag_enum, "STRONGLY_TYPED", None)
    with warnings.catch_warnings():
        # TensorRT 11 / TensorRT-RTX keep STRONGLY_TYPED only for compatibility and warn about it.
        warnings.simplefilter("ignore", DeprecationWarning)
        network = builder.create_network(0)
        is_st = bool(network.get_flag(st)) if st is not None and hasattr(network, "get_flag") else st is None
        if strongly_typed and not is_st:
            if st is None:
                raise BackendUnavailable(flavour_of(trt), "this TensorRT has no strongly typed networks; use TensorRT >= 9")
            network = builder.create_network(1 << int(st))
            is_st = bool(network.get_flag(st))
    if not strongly_typed and is_st:
        raise UserError(
            f"{trt.__name__} {trt.__version__} builds only strongly typed networks (no weak typing): "
            "put the precision in the ONNX instead of using legacy precision flags"
        )
    return network, is_st


def _parser_error_line(errors: list[str], limit: int = 4) -> str:
    shown = "; ".join(e.replace("\n", " ").strip() for e in errors[:limit])
    return shown + (f" (+{len(errors) - limit} more)" if len(errors) > limit else "")


def _parse_onnx(trt, network, logger, onnx_bytes: bytes, onnx_path: Path):
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(onnx_bytes, str(onnx_path))
    if not ok:
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            where = ""
            try:
                node = e.node()
                if node >= 0:
                    op, nm = e.node_operator(), e.node_name()
                    where = f"node {node}" + (f" {op}" if op else "") + (f" '{nm}'" if nm else "") + ": "
            except Exception:
                pass
            try:
                desc = f"{e.code().name}: {e.desc()}"
            except Exception:
                desc = str(e)
            errors.append(where + desc)
        raise UserError(f"cannot parse ONNX {onnx_path}: {_parser_error_line(errors or ['unknown parser error'])}")
    return parser


def _io_facts(trt, tensors) -> list[dict[str, Any]]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": _dtype_name(trt, t.dtype)} for t in tensors]


def network_precision(trt, network) -> dict[str, Any]:
    """Per-layer output types of the parsed (strongly typed) network, and the precision they imply."""
    by_dtype: dict[str, int] = {}
    by_layer_type: dict[str, dict[str, int]] = {}
    qdq = 0
    lt = trt.LayerType
    qdq_types = {getattr(lt, n) for n in ("QUANTIZE", "DEQUANTIZE", "DYNAMIC_QUANTIZE") if hasattr(lt, n)}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in qdq_types:
            qdq += 1
        if layer.type == getattr(lt, "CONSTANT", None):
            continue
        for j in range(layer.num_outputs):
            name = layer.get_output(j).dtype.name
            by_dtype[name] = by_dtype.get(name, 0) + 1
            per = by_layer_type.setdefault(layer.type.name, {})
            per[name] = per.get(name, 0) + 1
    if qdq:
        implied = "int8"
    elif by_dtype.get("BF16"):
        implied = "bf16"
    elif by_dtype.get("HALF"):
        implied = "fp16"
    else:
        implied = "fp32"
    return {
        "source": "network",
        "num_layers": network.num_layers,
        "qdq_layers": qdq,
        "output_dtypes": dict(sorted(by_dtype.items())),
        "by_layer_type": {k: dict(sorted(v.items())) for k, v in sorted(by_layer_type.items())},
        "implied_precision": implied,
    }


_DTYPE_TOKEN = re.compile(r"\b(FP32|FP16|BF16|FP8|FP4|Int8|INT8|Int32|INT32|Int64|INT64|Bool|BOOL|UInt8|UINT8|Int4|INT4|Half|Float)\b")


def inspector_precision(trt, engine) -> dict[str, Any]:
    """Summarise ``IEngineInspector`` JSON (needs a deserialized engine, i.e. a GPU)."""
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    info = json.loads(text)
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    by_dtype: dict[str, int] = {}
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        for out in layer.get("Outputs", []) or []:
            if not isinstance(out, dict):
                continue
            # TRT 10: "Format/Datatype": "Row major linear FP16"; TRT 11 splits Format and DataType.
            raw = " ".join(str(v) for k, v in out.items() if "type" in k.lower())
            m = _DTYPE_TOKEN.search(raw)
            tok = m.group(1).upper() if m else "UNKNOWN"
            by_dtype[tok] = by_dtype.get(tok, 0) + 1
    return {"source": "engine_inspector", "num_layers": len(layers), "output_dtypes": dict(sorted(by_dtype.items()))}


# --------------------------------------------------------------------------------------------
# Facts, reuse
# --------------------------------------------------------------------------------------------


def toolkit_version() -> str:
    try:
        pkg = importlib.import_module("resnet_deploy")
        v = getattr(pkg, "__version__", None)
        if v:
            return str(v)
    except Exception:
        pass
    try:
        from importlib.metadata import version

        return version("resnet-deploy")
    except Exception:
        return "unknown"


def _target(trt, opts: BuildOptions, device: dict[str, Any] | None) -> dict[str, Any]:
    if is_rtx(trt):
        ccs = opts.compute_capabilities
        if not ccs:
            return {"compute_capabilities": list(RTX_DEFAULT_TARGETS), "explicit": False}
        if ccs == ["current"]:
            if device is None:
                raise UserError("compute capability 'current' needs a CUDA GPU on this machine; name the targets instead (e.g. 8.6)")
            return {"compute_capabilities": [device["compute_capability"]], "explicit": True, "current": True}
        return {"compute_capabilities": list(ccs), "explicit": True}
    if opts.hardware_compatibility == "ampere+":
        return {"hardware_compatibility": "ampere+", "compute_capability": "8.0+"}
    # Without a hardware-compatibility level a TensorRT engine belongs to the GPU model it was
    # built on (same compute capability is not enough for reuse: tactics were timed on that GPU).
    return {
        "hardware_compatibility": opts.hardware_compatibility,
        "compute_capability": device["compute_capability"] if device else None,
        "gpu": device["name"] if device and not opts.hardware_compatibility else None,
    }


def request_facts(onnx_path: str | os.PathLike[str], opts: BuildOptions, *, precision: str) -> dict[str, Any]:
    """What a build of ``onnx_path`` with ``opts`` would record; feed it to :func:`needs_rebuild`."""
    opts.validate()
    opts.check_precision(precision)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX file not found: {onnx_path}")
    trt = import_flavour(opts.flavour)
    device, _ = cuda_device_info()
    return {
        "flavour": opts.flavour,
        "builder_version": trt.__version__,
        "onnx_sha256": sha256_file(onnx_path),
        "precision": precision,
        "requested_profile": opts.requested_profile(),
        "target": _target(trt, opts, device),
        "opt_level": opts.opt_level,
        "workspace_mib": opts.workspace_mib,
        "hardware_compatibility": opts.hardware_compatibility,
        "version_compatible": opts.version_compatible,
        "legacy_precision_flags": opts.legacy_precision_flags,
        **opts.dla_facts(),
    }


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s[:12] + "…" if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) else s


def needs_rebuild(engine_path: str | os.PathLike[str], request: dict[str, Any]) -> str | None:
    """Why the engine at ``engine_path`` cannot be reused for ``request`` (``None``: reuse it)."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return f"no engine at {engine_path}"
    try:
        manifest = read_manifest(engine_path)
    except UserError as e:
        return str(e)
    size = engine_path.stat().st_size
    if manifest.get("engine_bytes") != size:
        return f"engine file size {size} differs from its manifest ({manifest.get('engine_bytes')}): truncated or replaced"
    if manifest.get("engine_sha256") != sha256_file(engine_path):
        return "engine file content differs from its manifest (sha256): replaced or corrupted"
    for key in REUSE_KEYS:
        if key not in request:
            continue
        old, new = manifest.get(key), request[key]
        if old != new:
            label = key.replace("_", " ")
            return f"{label} changed: engine built with {_short(old)}, requested {_short(new)}"
    return None


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------


def _apply_config(trt, builder, config, opts: BuildOptions, precision: str, device, notes: list[str]) -> None:
    config.builder_optimization_level = opts.opt_level
    if opts.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    # DETAILED keeps layer parameters for IEngineInspector (default is LAYER_NAMES_ONLY).
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED

    if opts.compute_capabilities:
        if not hasattr(config, "set_compute_capability"):
            raise UserError(f"{trt.__name__} {trt.__version__} cannot target compute capabilities")
        enum = trt.ComputeCapability
        names = ["CURRENT"] if opts.compute_capabilities == ["current"] else [
            "SM" + cc.replace(".", "") for cc in opts.compute_capabilities
        ]
        missing = [cc for cc, n in zip(opts.compute_capabilities, names) if not hasattr(enum, n)]
        if missing:
            known = sorted(
                (int(v) // 10, int(v) % 10) for k, v in enum.__members__.items() if k.startswith("SM")
            )
            raise UserError(
                f"{trt.__name__} {trt.__version__} cannot target compute capability {', '.join(missing)}; "
                f"it can target {', '.join(f'{a}.{b}' for a, b in known)}"
            )
        config.num_compute_capabilities = len(names)
        for i, n in enumerate(names):
            if not config.set_compute_capability(getattr(enum, n), i):
                raise UserError(f"{trt.__name__} rejected compute capability target {n}")

    if opts.hardware_compatibility:
        level = getattr(getattr(trt, "HardwareCompatibilityLevel", None), HARDWARE_COMPAT[opts.hardware_compatibility], None)
        if level is None:
            raise UserError(f"{trt.__name__} {trt.__version__} has no hardware compatibility level {opts.hardware_compatibility!r}")
        if opts.hardware_compatibility == "ampere+" and device and _cc_tuple(device["compute_capability"]) < (8, 0):
            raise UserError("hardware compatibility ampere+ can only be built on an Ampere or newer GPU")
        config.hardware_compatibility_level = level

    if opts.version_compatible:
        flag = getattr(trt.BuilderFlag, "VERSION_COMPATIBLE", None)
        if flag is None:
            raise UserError(f"{trt.__name__} {trt.__version__} has no version-compatible builds")
        config.set_flag(flag)

    if opts.dla_core is not None:
        _apply_dla(trt, builder, config, opts, notes)

    if opts.legacy_precision_flags:
        wanted = {"fp16": ["FP16"], "bf16": ["BF16"], "int8": ["INT8", "FP16"], "fp32": []}[precision]
        for name in wanted:
            flag = getattr(trt.BuilderFlag, name, None)
            if flag is None:
                raise UserError(
                    f"{trt.__name__} {trt.__version__} has no BuilderFlag.{name} (weak typing was removed in TensorRT 11); "
                    "put the precision in the ONNX instead"
                )
            config.set_flag(flag)
        if precision == "int8":
            notes.append("legacy INT8 flag set without a calibrator: the ONNX must carry Q/DQ scales")


def _apply_dla(trt, builder, config, opts: BuildOptions, notes: list[str]) -> None:
    """Default device DLA on core ``opts.dla_core`` (IBuilderConfig.default_device_type / DLA_core)."""
    cores = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if cores == 0:
        raise UserError(
            f"{trt.__name__} {trt.__version__} sees no DLA here: DLA cores are on Jetson AGX Orin and Orin NX "
            "(not Orin Nano, Thor or discrete GPUs); TensorRT 10.7 was the last 10.x release with DLA"
        )
    if opts.dla_core >= cores:
        raise UserError(f"DLA core {opts.dla_core} does not exist: this device has {cores} (0..{cores - 1})")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = opts.dla_core
    if opts.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        notes.append(f"DLA core {opts.dla_core} with GPU fallback: layers DLA cannot run (or batches beyond its "
                     "limit) run on the GPU; the engine inspector's layer list shows which")
    else:
        notes.append(f"DLA core {opts.dla_core} without GPU fallback: every layer runs on the DLA")


def _load_timing_cache(trt, config, opts: BuildOptions, notes: list[str]):
    if opts.timing_cache is None:
        return None
    if is_rtx(trt):
        # tensorrt_rtx 1.7: "Timing cache operations are no-ops in TensorRT-RTX" (DeprecationWarning, since 1.2).
        notes.append("timing cache ignored: timing cache operations are no-ops in TensorRT-RTX")
        return None
    path = Path(opts.timing_cache)
    blob = b""
    if path.is_file():
        blob = path.read_bytes()
    cache = config.create_timing_cache(blob)
    if cache is None or not config.set_timing_cache(cache, False):
        if blob:
            notes.append(f"timing cache {path} does not match this TensorRT/GPU; starting a new one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
        else:
            raise UserError(f"could not create a timing cache at {path}")
    elif blob:
        notes.append(f"timing cache loaded from {path} ({len(blob)} bytes)")
    return cache


def _save_timing_cache(config, path: Path, notes: list[str]) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    data = cache.serialize()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(memoryview(data))
    notes.append(f"timing cache saved to {path}")


def _inspect_with_gpu(trt, logger, engine_bytes, device, target: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    """Deserialize once to run the engine inspector; None (with a note) where that is impossible."""
    if device is None:
        return None
    if is_rtx(trt) and not rtx_cc_supported(device["compute_capability"], target.get("compute_capabilities") or []):
        notes.append(
            f"engine inspector unavailable: the engine does not target this GPU ({device['name']}, "
            f"compute capability {device['compute_capability']}), so it cannot be deserialized here"
        )
        return None
    try:
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            notes.append(f"engine inspector unavailable: cannot deserialize on {device['name']} ({logger.last_error() or 'no reason given'})")
            return None
        return inspector_precision(trt, engine)
    except Exception as e:  # the build itself succeeded; inspection is best effort
        notes.append(f"engine inspector failed: {type(e).__name__}: {e}")
        return None


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    opts: BuildOptions,
    *,
    precision: str,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Build ``onnx_path`` into ``engine_path`` and write its manifest; return the manifest."""
    opts.validate()
    opts.check_precision(precision)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX file not found: {onnx_path}")
    trt = import_flavour(opts.flavour)
    rtx = is_rtx(trt)
    device, no_device_reason = cuda_device_info()
    if not rtx and device is None and load_cudart() is not None:
        raise BackendUnavailable(opts.flavour, f"building TensorRT engines needs a CUDA GPU: {no_device_reason}")

    target = _target(trt, opts, device)  # raises early for 'current' without a GPU
    ensure_writable_dir(engine_path.parent)  # fail before a long build, not after it
    notes: list[str] = []
    onnx_bytes = onnx_path.read_bytes()
    onnx_sha = hashlib.sha256(onnx_bytes).hexdigest()
    source_metadata = _source_metadata(onnx_bytes, notes)
    recorded = source_metadata.get("precision")
    if recorded and recorded != precision:
        raise UserError(
            f"{onnx_path.name} records precision {recorded} (resnet_deploy metadata) but {precision} was requested; "
            f"build it with --precision {recorded}, or make the {precision} ONNX first"
        )
    logger = _make_logger(trt)

    builder = trt.Builder(logger)
    if builder is None:
        raise BackendUnavailable(opts.flavour, f"cannot create a TensorRT builder: {logger.last_error() or 'unknown error'}")
    network, strongly_typed = _create_network(trt, builder, strongly_typed=not opts.legacy_precision_flags)
    parser = _parse_onnx(trt, network, logger, onnx_bytes, onnx_path)

    if network.num_inputs == 0 or network.num_outputs == 0:
        # protobuf decoding is lenient: some non-ONNX bytes "parse" into an empty model
        raise UserError(f"cannot parse ONNX {onnx_path}: it defines no graph inputs or outputs (is it an ONNX model?)")
    if network.num_inputs != 1:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise UserError(f"expected an ONNX with one input [N,3,H,W]; {onnx_path} has {len(names)}: {', '.join(names)}")
    inp = network.get_input(0)
    shape = list(inp.shape)
    if len(shape) != 4:
        raise UserError(f"ONNX input {inp.name!r} has shape {shape}; expected [N,3,H,W]")
    if any(d < 0 for d in shape[1:]):
        raise UserError(f"ONNX input {inp.name!r} has dynamic non-batch dimensions {shape}; only the batch may be dynamic")
    fixed_batch = shape[0] if shape[0] >= 1 else None
    mn, opt, mx = resolve_profile(opts.requested_profile(), fixed_batch)

    net_precision = network_precision(trt, network)
    if strongly_typed and net_precision["implied_precision"] != precision:
        raise UserError(
            f"{onnx_path.name} is {net_precision['implied_precision']} but {precision} was requested; strongly typed engines "
            f"take their precision from the ONNX (convert it first: FP16/BF16 with ModelOpt AutoCast, INT8 with Q/DQ nodes)"
        )

    config = builder.create_builder_config()
    _apply_config(trt, builder, config, opts, precision, device, notes)
    profile = builder.create_optimization_profile()
    try:
        profile.set_shape(inp.name, [mn, *shape[1:]], [opt, *shape[1:]], [mx, *shape[1:]])
    except ValueError as e:
        raise UserError(f"invalid batch profile {mn}/{opt}/{mx} for input {inp.name!r}: {e}") from None
    if config.add_optimization_profile(profile) < 0:
        raise UserError(f"TensorRT rejected the batch profile {mn}/{opt}/{mx}: {logger.last_error()}")

    timing_cache = _load_timing_cache(trt, config, opts, notes)
    cancel = threading.Event()
    monitor = _make_progress_monitor(trt, progress, cancel)
    if monitor is not None:
        config.progress_monitor = monitor
    elif progress is not None:
        notes.append("progress reporting unavailable: this TensorRT has no IProgressMonitor")

    t0 = time.perf_counter()
    with _sigint_cancels(cancel):
        serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t0
    if cancel.is_set():  # Ctrl-C: nothing was written; let the caller report the interruption
        raise KeyboardInterrupt
    if serialized is None or serialized.nbytes == 0:
        if monitor is not None and monitor.cancelled:
            raise UserError(f"engine build cancelled: nothing was written to {engine_path}")
        detail = _parser_error_line(logger.errors, limit=2) or "no reason given"
        hint = ""
        if opts.dla_core is not None and strongly_typed and not is_rtx(trt):
            hint = ("; if this TensorRT 10 refuses a strongly typed DLA build, add --legacy-precision-flags "
                    "(TensorRT 10's FP16/INT8 flags; INT8 scales still come from the Q/DQ nodes)")
        raise UserError(f"TensorRT could not build {engine_path.name}: {detail}{hint}")

    view = memoryview(serialized)
    engine_sha = hashlib.sha256(view).hexdigest()
    # Drop the old manifest first: if we die between the two writes, the engine has no manifest
    # (runner and needs_rebuild then say so) rather than a stale one.
    manifest_path(engine_path).unlink(missing_ok=True)
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(view)
    if timing_cache is not None and opts.timing_cache is not None:
        _save_timing_cache(config, Path(opts.timing_cache), notes)

    layer_precision = _inspect_with_gpu(trt, logger, serialized, device, target, notes)
    if layer_precision is None:
        layer_precision = net_precision
        why = notes[-1] if notes and notes[-1].startswith("engine inspector") else (
            f"engine inspector unavailable: deserializing an engine needs a CUDA GPU ({no_device_reason})"
        )
        inspector_note = why
    else:
        layer_precision["network"] = {k: net_precision[k] for k in ("output_dtypes", "qdq_layers", "implied_precision")}
        inspector_note = "used"

    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    manifest: dict[str, Any] = {
        "kind": "engine",
        "flavour": opts.flavour,
        "builder": trt.__name__,
        "builder_version": trt.__version__,
        "onnx_parser_version": _call_or_none(getattr(trt, "get_nv_onnx_parser_version", None)),
        "toolkit_version": toolkit_version(),
        "onnx": str(onnx_path),
        "onnx_sha256": onnx_sha,
        "source_metadata": {**source_metadata, "precision": precision},
        "engine_sha256": engine_sha,
        "engine_bytes": len(view),
        "precision": precision,
        "strongly_typed": strongly_typed,
        "legacy_precision_flags": opts.legacy_precision_flags,
        "requested_profile": opts.requested_profile(),
        "min_batch": mn,
        "opt_batch": opt,
        "max_batch": mx,
        "onnx_fixed_batch": fixed_batch,
        "input": _io_facts(trt, [inp])[0],
        "outputs": _io_facts(trt, outputs),
        "workspace_mib": opts.workspace_mib,
        "opt_level": opts.opt_level,
        "hardware_compatibility": opts.hardware_compatibility,
        "version_compatible": opts.version_compatible,
        **opts.dla_facts(),
        "target": target,
        "build_gpu": device,
        "build_seconds": round(build_seconds, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "layer_precision": layer_precision,
        "engine_inspector": inspector_note,
        "notes": notes,
    }
    del parser
    write_manifest(engine_path, manifest)
    return manifest


def _source_metadata(onnx_bytes: bytes, notes: list[str]) -> dict[str, str]:
    """The source ONNX's ``resnet_deploy.*`` metadata (arch, weights sha256, precision, ...).

    Read with :func:`resnet_deploy.onnx_export.read_metadata` where that imports (it needs
    torch); a torch-free machine (a Jetson building its own engines) reads the same properties
    with ``onnx`` alone. Without ``onnx`` the engine records no model facts, and says so.
    """
    try:
        import onnx
    except ImportError:
        notes.append("source metadata not recorded: the onnx package is not installed")
        return {}
    try:
        model = onnx.load_model_from_string(onnx_bytes)
    except Exception:  # not an ONNX at all: the parser says so with more detail
        return {}
    try:
        from .onnx_export import read_metadata
    except ImportError:
        prefix = "resnet_deploy."
        return {p.key[len(prefix):]: p.value for p in model.metadata_props if p.key.startswith(prefix)}
    return read_metadata(model)


def _call_or_none(fn):
    try:
        return fn() if fn else None
    except Exception:
        return None


def ensure_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    opts: BuildOptions,
    *,
    precision: str,
    force: bool = False,
    progress: ProgressCallback | None = None,
    say: Callable[[str], Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Reuse the engine if its manifest matches, else build. Returns ``(manifest, rebuild reason or None)``.

    ``say`` gets one line per decision (checking, reusing, or building and why) before the
    work starts; ``progress(phase, step, total)`` TensorRT's build phases.
    """
    say = say or (lambda _msg: None)
    say(f"checking {engine_path} against the request")
    reason = "forced (--force)" if force else needs_rebuild(engine_path, request_facts(onnx_path, opts, precision=precision))
    if reason is None:
        say(f"reusing {engine_path}: its manifest matches (same ONNX, precision, profile, builder, target)")
        return read_manifest(engine_path), None
    say(f"building {engine_path} with {FLAVOURS[opts.flavour]} ({reason})")
    return build_engine(onnx_path, engine_path, opts, precision=precision, progress=progress), reason


def preflight(opts: BuildOptions, precision: str | None = None) -> Any:
    """Fail fast (before any ONNX is made) when ``opts`` cannot be built here; return the module."""
    opts.validate()
    if precision is not None:
        opts.check_precision(precision)
    trt = import_flavour(opts.flavour)
    if not is_rtx(trt):
        device, why = cuda_device_info()
        if device is None:
            raise BackendUnavailable(opts.flavour, f"building TensorRT engines needs a CUDA GPU: {why}")
    return trt


def build(
    depth: int | str,
    *,
    precision: str = "fp32",
    options: BuildOptions | None = None,
    onnx: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] = "engines",
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    preact: bool = False,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[str], Any] = lambda _msg: None,
    build_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """``engines/<arch>/<arch>.<precision>.<flavour>.engine`` for a model: what ``resnet-deploy build`` does.

    The precision's ONNX (``onnx`` or ``<out_dir>/<arch>/<arch>.<precision>.onnx``) is made first
    when missing (:func:`resnet_deploy.quantize.ensure_precision_onnx`: export, AutoCast, PTQ).
    The engine is reused when its manifest matches the request and rebuilt otherwise; the result
    says which (``reused``) and why (``rebuild_reason``). ``progress`` gets one-line messages,
    ``build_progress(phase, step, total)`` TensorRT's build phases.
    """
    opts = options if options is not None else BuildOptions()
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    preflight(opts, precision)  # a missing TensorRT or GPU is reported before minutes of ONNX work
    from .models import resolve_arch

    arch = resolve_arch(depth, preact)
    if onnx is not None:
        onnx_path = Path(onnx)
        if not onnx_path.is_file():
            raise UserError(f"ONNX file not found: {onnx_path}")
        recorded = _source_metadata(onnx_path.read_bytes(), []).get("arch")
        if recorded and recorded != arch:
            raise UserError(f"{onnx_path} holds {recorded}, not {arch}; pass --depth to match it")
        onnx_status = "given"
    else:
        from .quantize import ensure_precision_onnx

        existed = artifact_path(arch, precision, "onnx", out_dir).is_file()
        made = ensure_precision_onnx(arch, precision, out_dir=out_dir, weights=weights, num_classes=num_classes,
                                     preact=False, seed=seed, progress=progress)
        onnx_path = Path(made["path"])
        onnx_status = "reused" if existed and made.get("reused", True) else "made"
    engine_path = engine_path_for(arch, precision, opts.flavour, out_dir)
    ensure_writable_dir(engine_path.parent)
    manifest, reason = ensure_engine(onnx_path, engine_path, opts, precision=precision, force=force,
                                     progress=build_progress, say=progress)
    return {**manifest, "path": str(engine_path), "reused": reason is None, "rebuild_reason": reason,
            "onnx_status": onnx_status}


__all__ = [
    "build",
    "preflight",
    "FLAVOURS",
    "BuildOptions",
    "DEFAULT_PROFILE",
    "RTX_DEFAULT_TARGETS",
    "build_engine",
    "cuda_device_info",
    "engine_path_for",
    "ensure_engine",
    "import_flavour",
    "load_cudart",
    "needs_rebuild",
    "normalize_compute_capability",
    "request_facts",
    "resolve_profile",
    "rtx_cc_supported",
]
