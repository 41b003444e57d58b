"""Precision ONNX from an FP32 ONNX: FP16/BF16 via ModelOpt AutoCast, INT8 via ModelOpt PTQ.

TensorRT 11 builds strongly typed networks only, so the precision has to be in the ONNX
itself: FP16/BF16 as typed tensors (``modelopt.onnx.autocast.convert_to_mixed_precision``)
and INT8 as explicit QuantizeLinear/DequantizeLinear pairs placed the way TensorRT fuses
them (``modelopt.onnx.quantization.quantize``: per-channel symmetric INT8 weights,
per-tensor symmetric INT8 activations, calibrated with ONNX Runtime on the CPU). The same
ONNX also builds on TensorRT 10 (Jetson), which honours explicit Q/DQ.

ModelOpt is imported lazily; without it these functions raise
:class:`~resnet_deploy.errors.BackendUnavailable`. Every output is written through
:func:`~resnet_deploy.artifacts.atomic_path`; ModelOpt's own intermediate files
(``*_opset19.onnx`` and the like, which it drops beside its output) live in a private
temporary folder that is removed whatever happens.

Torch-free.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .artifacts import atomic_path, ensure_writable_dir
from .errors import BackendUnavailable, UserError
from .versions import dist_version, onnxruntime_wheel

INSTALL_HINT = "pip install 'resnet-deploy[precision]'"
LOW_PRECISIONS = ("fp16", "bf16")
HIGH_PRECISIONS = ("fp16", "fp32")
# ModelOpt's INT8 PTQ offers exactly two calibrators; any other name it silently treats as
# "max", so anything else is refused here rather than passed through.
CALIBRATION_METHODS = {"entropy": "entropy", "max": "max", "minmax": "max", "percentile": "percentile"}
DEFAULT_PERCENTILE = 99.999  # ONNX Runtime's default for its percentile calibrator
DEFAULT_DATA_MAX = 512.0  # AutoCast default: nodes whose values exceed this stay FP32
FP16_MAX = 65504.0

_Q_OPS = ("QuantizeLinear", "DequantizeLinear")
_WEIGHT_OPS = ("Conv", "ConvTranspose")
_FALLBACK_WEIGHT_OPS = ("Gemm", "MatMul")
_MODELOPT_LOGGERS = ("modelopt", "modelopt.onnx", "modelopt.onnx.autocast", "modelopt.onnx.quantization")


# --------------------------------------------------------------------------- imports

def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise BackendUnavailable("onnx", f"{e}; {INSTALL_HINT}") from None
    return onnx


def _modelopt(module: str):
    """Import a ``modelopt.onnx`` submodule or raise :class:`BackendUnavailable`."""
    try:
        importlib.import_module("onnxruntime")  # ModelOpt calibrates and checks with it
    except ImportError as e:
        raise BackendUnavailable(
            "onnxruntime",
            f"{e}; ModelOpt needs ONNX Runtime: pip install 'resnet-deploy[precision,cpu]' "
            "(or [precision,gpu] for onnxruntime-gpu)",
        ) from None
    try:
        return importlib.import_module(module)
    except ImportError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BackendUnavailable("modelopt", f"cannot import {module} ({first}); {INSTALL_HINT}") from None


def modelopt_available() -> tuple[bool, str]:
    """``(True, version)`` if ModelOpt's ONNX tools import, else ``(False, reason)`` (for ``doctor``)."""
    try:
        _modelopt("modelopt.onnx.autocast")
        _modelopt("modelopt.onnx.quantization")
    except BackendUnavailable as e:
        return False, e.reason
    return True, dist_version("nvidia-modelopt") or "unknown"


# --------------------------------------------------------------------------- inspection

_DTYPE_NAMES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}


def _load(model_or_path: Any, load_external_data: bool = False):
    onnx = _onnx()
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise UserError(f"{path} is not a readable ONNX model: {e}") from None


def _quantized_types(model) -> set[int]:
    """Element types of the integer side of every Q/DQ node (zero points and DQ data)."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    types: set[int] = set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            types.add(inits[node.input[2]])
        elif node.op_type == "DequantizeLinear":
            for name in node.input[:1] + node.input[2:3]:
                if name in inits:
                    types.add(inits[name])
        if node.op_type == "QuantizeLinear":
            for a in node.attribute:
                if a.name == "output_dtype" and a.i:
                    types.add(a.i)
    return types


def _weight_dtypes(model, op_types: Sequence[str]) -> Counter:
    """Precision of the weight input of every ``op_types`` node (following Cast and Constant)."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    counts: Counter = Counter()
    for node in model.graph.node:
        if node.op_type not in op_types or len(node.input) < 2:
            continue
        name = node.input[1]
        dtype = None
        if name in inits:
            dtype = inits[name]
        elif name in producer:
            p = producer[name]
            attrs = {a.name: a for a in p.attribute}
            if p.op_type == "Cast" and "to" in attrs:
                dtype = attrs["to"].i
            elif p.op_type == "Constant" and "value" in attrs:
                dtype = attrs["value"].t.data_type
        if dtype is not None:
            counts[_DTYPE_NAMES.get(dtype, str(dtype))] += 1
    return counts


def detect_precision(onnx_path_or_model: Any) -> str:
    """``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"int8"``, read from the graph itself.

    Q/DQ nodes with INT8 data mean ``int8`` (whatever the high-precision type around them);
    otherwise the majority type of the convolution weights decides (Gemm/MatMul weights if
    there is no convolution, then all floating initializers by size). A Q/DQ model in another
    format (FP8, INT4) is a :class:`UserError`: this toolkit does not produce or build those.
    """
    model = _load(onnx_path_or_model)
    ops = {n.op_type for n in model.graph.node}
    if ops & set(_Q_OPS):
        qtypes = _quantized_types(model)
        if not qtypes or qtypes & {2, 3}:  # UINT8, INT8 (no zero point: INT8/UINT8 default)
            return "int8"
        raise UserError(f"the ONNX is quantized to element types {sorted(qtypes)}, not INT8; unsupported here")
    counts = _weight_dtypes(model, _WEIGHT_OPS) or _weight_dtypes(model, _FALLBACK_WEIGHT_OPS)
    if not counts:
        for t in model.graph.initializer:
            if t.data_type in _DTYPE_NAMES:
                counts[_DTYPE_NAMES[t.data_type]] += int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    if not counts:
        return "fp32"
    best = counts.most_common(1)[0][0]
    return best if best in ("fp16", "bf16") else "fp32"


def count_qdq(onnx_path_or_model: Any) -> dict[str, Any]:
    """Q/DQ node counts and the op types whose inputs are dequantized (for the manifest)."""
    model = _load(onnx_path_or_model)
    ops = Counter(n.op_type for n in model.graph.node)
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    consumers = Counter(
        n.op_type for n in model.graph.node
        if n.op_type not in _Q_OPS and any(i in dq_out for i in n.input)
    )
    return {
        "quantize_linear": ops.get("QuantizeLinear", 0),
        "dequantize_linear": ops.get("DequantizeLinear", 0),
        "quantized_ops": dict(sorted(consumers.items())),
    }


def _input_info(model) -> tuple[str, list[int | None]]:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError(f"expected an ONNX with one input, found {len(inputs)}: {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def _low_precision_nodes(model, low: str) -> tuple[int, int]:
    """(nodes computing in ``low``, all non-Cast nodes) of a converted model."""
    onnx = _onnx()
    elem = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[low]
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    nodes = [n for n in g.node if n.op_type != "Cast"]
    low_n = sum(1 for n in nodes if n.output and types.get(n.output[0]) == elem)
    return low_n, len(nodes)


# --------------------------------------------------------------------------- plumbing

@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[io.StringIO]:
    """Hold back ModelOpt's INFO logging, ORT's calibration prints and tqdm bars.

    ModelOpt (re)configures its loggers with a handler on ``sys.stdout`` inside the call; the
    loggers' levels and handlers are put back afterwards so nothing stays bound to the buffer.
    """
    buf = io.StringIO()
    if verbose:
        yield buf
        return
    loggers = [logging.getLogger(n) for n in _MODELOPT_LOGGERS]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    # ModelOpt's import-time handler holds the real sys.stdout; route its records to ``buf``.
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
            lg.handlers[:] = [handler] if lg.name == "modelopt" else []
            lg.propagate = lg.name != "modelopt"  # nothing reaches the application's root logger
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        for lg, level, handlers, propagate in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate


def _warnings_from(buf: io.StringIO, limit: int = 20) -> list[str]:
    lines = [ln.strip() for ln in buf.getvalue().splitlines() if ln.startswith(("WARNING: ", "ERROR: ", "CRITICAL: "))]
    return list(dict.fromkeys(lines))[:limit]


@contextlib.contextmanager
def _workdir(dst: Path) -> Iterator[Path]:
    """A private folder beside ``dst`` (same filesystem, so the result can be renamed)."""
    ensure_writable_dir(dst.parent)
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.", suffix=".work", dir=dst.parent) as d:
        yield Path(d)


def _self_contained_copy(model, work: Path) -> Path:
    """Save the source as one file in ``work``: ModelOpt writes beside its input and output."""
    onnx = _onnx()
    path = work / "source.onnx"
    onnx.save(model, str(path))
    return path


def _require_fp32(model, src: Path, action: str) -> None:
    precision = detect_precision(model)
    if precision != "fp32":
        raise UserError(f"{src} is already {precision.upper()}; {action} needs the FP32 ONNX as its source")


# --------------------------------------------------------------------------- FP16 / BF16

def convert_fp16(
    src_onnx: str | os.PathLike[str],
    dst_onnx: str | os.PathLike[str],
    *,
    low_precision: str = "fp16",
    keep_io_types: bool = True,
    calib: np.ndarray | None = None,
    data_max: float = DEFAULT_DATA_MAX,
    init_max: float = FP16_MAX,
    nodes_to_exclude: Sequence[str] | None = None,
    op_types_to_exclude: Sequence[str] | None = None,
    providers: Sequence[str] = ("cpu",),
    verbose: bool = False,
) -> dict[str, Any]:
    """FP32 ONNX -> FP16 (or BF16) ONNX with ModelOpt AutoCast; returns manifest facts.

    ``keep_io_types=True`` keeps the ``input``/``logits`` tensors FP32 (a Cast at each end),
    so callers feed and read float32 whatever the precision. AutoCast keeps a node in FP32
    when ONNX Runtime sees its values exceed ``data_max`` (reference run on ``calib`` images,
    random inputs in [-1, 1] if none) or its initializers exceed ``init_max``;
    ``nodes_to_exclude`` (regexes) and ``op_types_to_exclude`` force FP32 by hand.
    """
    src, dst = Path(src_onnx), Path(dst_onnx)
    if low_precision not in LOW_PRECISIONS:
        raise UserError(f"low_precision must be one of {', '.join(LOW_PRECISIONS)}, got {low_precision!r}")
    if not data_max > 0 or not init_max > 0:
        raise UserError("data_max and init_max must be positive")
    autocast = _modelopt("modelopt.onnx.autocast")
    onnx = _onnx()
    model = _load(src, load_external_data=True)
    _require_fp32(model, src, f"{low_precision.upper()} conversion")
    input_name, input_dims = _input_info(model)
    if calib is not None:
        calib = _check_calib(calib, input_dims, min_images=1)

    with _workdir(dst) as work:
        source = _self_contained_copy(model, work)
        calib_file = None
        if calib is not None:
            calib_file = work / "calib.npz"
            np.savez(calib_file, **{input_name: calib})
        t0 = time.perf_counter()
        with _quiet(verbose) as buf:
            converted = autocast.convert_to_mixed_precision(
                onnx_path=str(source),
                low_precision_type=low_precision,
                keep_io_types=keep_io_types,
                nodes_to_exclude=list(nodes_to_exclude) if nodes_to_exclude else None,
                op_types_to_exclude=list(op_types_to_exclude) if op_types_to_exclude else None,
                data_max=float(data_max),
                init_max=float(init_max),
                calibration_data=str(calib_file) if calib_file else None,
                providers=list(providers),
            )
        seconds = time.perf_counter() - t0
    low_n, total = _low_precision_nodes(converted, low_precision)
    with atomic_path(dst) as tmp:
        onnx.save(converted, str(tmp))
    return {
        "precision": low_precision,
        "source": str(src),
        "tool": "nvidia-modelopt",
        "tool_version": dist_version("nvidia-modelopt"),
        "tool_function": "modelopt.onnx.autocast.convert_to_mixed_precision",
        "onnx_version": dist_version("onnx"),
        "keep_io_types": keep_io_types,
        "data_max": float(data_max),
        "init_max": float(init_max),
        "reference_data": f"{len(calib)} calibration images" if calib is not None else "random [-1, 1]",
        "nodes_low_precision": low_n,
        "nodes_total": total,
        "nodes_excluded": list(nodes_to_exclude or []) + list(op_types_to_exclude or []),
        "opset": max((o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "seconds": round(seconds, 3),
        "tool_warnings": _warnings_from(buf),
    }


# --------------------------------------------------------------------------- INT8

def _check_calib(calib: Any, input_dims: list[int | None], min_images: int) -> np.ndarray:
    if not isinstance(calib, np.ndarray):
        raise UserError(f"calibration data must be a numpy array, got {type(calib).__name__}")
    if calib.ndim != 4 or (input_dims and len(input_dims) != 4):
        raise UserError(f"calibration data must be (N, 3, H, W); got shape {tuple(calib.shape)}")
    if len(calib) < min_images:
        raise UserError(f"need at least {min_images} calibration image(s), got {len(calib)}")
    for axis, (want, got) in enumerate(zip(input_dims, calib.shape)):
        if axis and want is not None and want != got:
            raise UserError(
                f"calibration images have shape {tuple(calib.shape[1:])}, the ONNX input expects "
                f"{tuple(input_dims[1:])}"
            )
    if not np.issubdtype(calib.dtype, np.floating):
        raise UserError(f"calibration data must be preprocessed float32 images, got dtype {calib.dtype}")
    calib = np.ascontiguousarray(calib, dtype=np.float32)
    if not np.isfinite(calib).all():
        raise UserError("calibration data contains NaN or Inf")
    return calib


def _percentile_cache(model_path: Path, input_name: str, calib: np.ndarray, batch: int, percentile: float,
                      work: Path) -> Path:
    """Per-tensor activation ranges at ``percentile`` (ONNX Runtime), as a TensorRT calibration cache.

    The cache format is the one ModelOpt reads (``calib_utils.import_scales_from_calib_cache``):
    a header line, then ``tensor: <big-endian float32 scale as hex>`` with scale = amax / 127.
    Data goes through the calibrator in chunks: it keeps every intermediate output of a
    ``collect_data`` call in memory, and histograms merge across calls.
    """
    import struct

    import onnx
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self, chunk: np.ndarray):
            self.items = iter([{input_name: chunk[i:i + batch]} for i in range(0, len(chunk), batch)])

        def get_next(self):
            return next(self.items, None)

    # Every node's op type and name: ONNX Runtime reads this list as op types, but ModelOpt, once its
    # quantize has run in this process, patches ORT to read it as node names. The union selects
    # every activation either way.
    graph = onnx.load(str(model_path), load_external_data=False).graph
    select = sorted({n.op_type for n in graph.node} | {n.name for n in graph.node if n.name})
    calibrator = create_calibrator(str(model_path), select, augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Percentile,
                                   extra_options={"percentile": percentile, "symmetric": True, "num_bins": 2048})
    step = max(batch, 8 - 8 % batch)
    for i in range(0, len(calib), step):
        calibrator.collect_data(Reader(calib[i:i + step]))
    lines = ["TRT-8600-EntropyCalibration2"]
    for name, data in calibrator.compute_data().data.items():
        amax = float(np.max(np.abs(np.asarray(data.range_value, dtype=np.float64))))
        if np.isfinite(amax) and amax > 0:
            lines.append(f"{name}: {struct.pack('!f', amax / 127.0).hex()}")
    cache = work / "percentile.cache"
    cache.write_text("\n".join(lines) + "\n")
    return cache


def quantize_int8(
    src_onnx: str | os.PathLike[str],
    dst_onnx: str | os.PathLike[str],
    calib: np.ndarray,
    *,
    method: str = "entropy",
    high_precision: str = "fp16",
    percentile: float = DEFAULT_PERCENTILE,
    calibration_batch: int = 1,
    calibration_eps: Sequence[str] = ("cpu",),
    op_types_to_exclude: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """FP32 ONNX -> explicit Q/DQ INT8 ONNX with ModelOpt PTQ; returns manifest facts.

    ``calib`` is ``(N, 3, H, W)`` float32, already preprocessed exactly as at inference.
    Weights are INT8 per output channel and activations INT8 per tensor, both symmetric,
    with Q/DQ placed by ModelOpt's TensorRT rules (Conv inputs, residual Add inputs, pooling;
    GEMV-shaped Gemm/MatMul such as a batch-1 classifier stay unquantized). ``method`` is the
    activation calibrator: ``"entropy"`` (KL divergence, ModelOpt's default), ``"max"``
    (alias ``"minmax"``) or ``"percentile"``. ModelOpt has no percentile calibrator, so for
    that one ONNX Runtime's histogram calibrator computes the ``percentile`` of each
    activation's absolute values, the ranges go to ModelOpt as a TensorRT calibration cache
    (its documented ``calibration_cache_path``), and ModelOpt places the Q/DQ nodes as usual. ``high_precision`` is the type of everything left unquantized:
    ``"fp16"`` (ModelOpt's default and what TensorRT runs fastest) or ``"fp32"``. Calibration
    runs on ONNX Runtime with ``calibration_eps`` (``"cpu"``, ``"cuda:0"``, ``"trt"``), in
    steps of ``calibration_batch`` images.
    """
    src, dst = Path(src_onnx), Path(dst_onnx)
    key = str(method).lower()
    if key not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {method!r}; choose entropy, max or percentile")
    if not 50.0 < percentile <= 100.0:
        raise UserError(f"percentile must be in (50, 100], got {percentile}")
    if high_precision not in HIGH_PRECISIONS:
        raise UserError(f"high_precision must be one of {', '.join(HIGH_PRECISIONS)}, got {high_precision!r}")
    if calibration_batch < 1:
        raise UserError("calibration_batch must be at least 1")
    quantization = _modelopt("modelopt.onnx.quantization")
    model = _load(src, load_external_data=True)
    _require_fp32(model, src, "INT8 quantization")
    input_name, input_dims = _input_info(model)
    calib = _check_calib(calib, input_dims, min_images=1)
    batch = min(calibration_batch, len(calib))
    if input_dims and input_dims[0] is not None:
        batch = input_dims[0]  # a static batch dimension fixes the calibration step
        if len(calib) % batch:
            raise UserError(f"the ONNX has a static batch of {batch}; give a multiple of {batch} calibration images")
    shape_spec = f"{input_name}:" + "x".join(str(d) for d in (batch, *calib.shape[1:]))

    with _workdir(dst) as work:
        source = _self_contained_copy(model, work)
        out = work / "quantized.onnx"
        t0 = time.perf_counter()
        with _quiet(verbose) as buf:
            cache = _percentile_cache(source, input_name, calib, batch, percentile, work) if key == "percentile" else None
            quantization.quantize(
                onnx_path=str(source),
                quantize_mode="int8",
                calibration_data=calib,
                calibration_method="max" if cache else CALIBRATION_METHODS[key],
                calibration_cache_path=str(cache) if cache else None,
                calibration_shapes=shape_spec,
                calibration_eps=list(calibration_eps),
                op_types_to_exclude=list(op_types_to_exclude) if op_types_to_exclude else None,
                nodes_to_exclude=list(nodes_to_exclude) if nodes_to_exclude else None,
                high_precision_dtype=high_precision,
                output_path=str(out),
                keep_intermediate_files=False,
                log_level="DEBUG" if verbose else "WARNING",
            )
        seconds = time.perf_counter() - t0
        if not out.is_file():
            raise RuntimeError(f"ModelOpt quantize wrote no output; its log:\n{buf.getvalue()[-4000:]}")
        qdq = count_qdq(out)
        if not qdq["dequantize_linear"]:
            raise UserError(f"{src} has no node ModelOpt INT8 PTQ can quantize")
        result = _load(out)
        opset = max((o.version for o in result.opset_import if o.domain in ("", "ai.onnx")), default=None)
        del result
        with atomic_path(dst) as tmp:
            os.replace(out, tmp)
    return {
        "precision": "int8",
        "source": str(src),
        "tool": "nvidia-modelopt",
        "tool_version": dist_version("nvidia-modelopt"),
        "tool_function": "modelopt.onnx.quantization.quantize",
        "onnx_version": dist_version("onnx"),
        "onnxruntime_version": onnxruntime_wheel()[0],
        "calibration_method": CALIBRATION_METHODS[key],
        **({"percentile": percentile, "calibrator": "onnxruntime HistogramCalibrater (percentile) -> TensorRT "
            "calibration cache -> ModelOpt"} if key == "percentile" else {}),
        "calibration_images": int(len(calib)),
        "calibration_shape": list(calib.shape[1:]),
        "calibration_batch": int(batch),
        "calibration_eps": list(calibration_eps),
        "weights": "int8 symmetric per output channel",
        "activations": "int8 symmetric per tensor",
        "high_precision": high_precision,
        "qdq": qdq,
        "opset": opset,
        "seconds": round(seconds, 3),
        "tool_warnings": _warnings_from(buf),
    }
