"""FP32 ONNX -> explicit Q/DQ INT8 ONNX with ModelOpt PTQ (``modelopt.onnx.quantization.quantize``).

Per-channel symmetric INT8 weights, per-tensor symmetric INT8 activations, calibrated with ONNX
Runtime on the CPU, Q/DQ placed the way TensorRT fuses them. The same ONNX builds on TensorRT
10 (Jetson) and 11 (strongly typed only).
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from ..artifacts import atomic_path
from ..errors import UserError
from ..onnx_meta import as_model, count_qdq, opset_of
from ..versions import dist_version, onnxruntime_wheel
from .modelopt import import_modelopt, input_info, quiet_tool, require_fp32, self_contained_copy, warnings_from, workdir
from .placement import PLACEMENT_VERSION, place_for_tensorrt

HIGH_PRECISIONS = ("fp16", "fp32")
# Calibration methods as users name them (the one list), and what ModelOpt's INT8 PTQ is told. ModelOpt
# 0.47 offers exactly two calibrators (entropy = KL divergence, and max = min-max for symmetric
# activations) and silently treats any other name as "max", so anything else is refused here;
# percentile ranges come from ONNX Runtime's histogram calibrator and reach ModelOpt as a calibration
# cache (:func:`percentile_cache`).
CALIBRATION_METHODS = ("entropy", "minmax", "percentile")
_METHOD_ALIASES = {"max": "minmax", "min-max": "minmax"}
MODELOPT_METHODS = {"entropy": "entropy", "minmax": "max", "percentile": "percentile"}


def normalize_method(method: str) -> str:
    """``"MAX"`` -> ``"minmax"``; an unknown calibration method is a :class:`UserError`."""
    m = str(method).strip().lower()
    m = _METHOD_ALIASES.get(m, m)
    if m not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    return m
DEFAULT_PERCENTILE = 99.999  # ONNX Runtime's default for its percentile calibrator


def check_calib(calib: Any, input_dims: list[int | None], min_images: int) -> np.ndarray:
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


def percentile_cache(model_path: Path, input_name: str, calib: np.ndarray, batch: int, percentile: float,
                      work: Path) -> Path:
    """Per-tensor activation ranges at ``percentile`` (ONNX Runtime), as a TensorRT calibration cache.

    The cache format is the one ModelOpt reads (``calib_utils.import_scales_from_calib_cache``):
    a header line, then ``tensor: <big-endian float32 scale as hex>`` with scale = amax / 127.
    Data goes through the calibrator in chunks: it keeps every intermediate output of a
    ``collect_data`` call in memory, and histograms merge across calls.
    """
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
    nodes_to_exclude: Sequence[str] | None = None,
    placement: bool = True,
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
    steps of ``calibration_batch`` images. ``placement`` runs the toolkit's Q/DQ passes for
    concatenations and sigmoid gates after ModelOpt (:mod:`.placement`); ``False`` leaves ModelOpt's
    graph as it is (for comparisons; the pipeline always places).
    """
    src, dst = Path(src_onnx), Path(dst_onnx)
    key = normalize_method(method)
    if not 50.0 < percentile <= 100.0:
        raise UserError(f"percentile must be in (50, 100], got {percentile}")
    if high_precision not in HIGH_PRECISIONS:
        raise UserError(f"high_precision must be one of {', '.join(HIGH_PRECISIONS)}, got {high_precision!r}")
    if calibration_batch < 1:
        raise UserError("calibration_batch must be at least 1")
    quantization = import_modelopt("modelopt.onnx.quantization")
    model = as_model(src)
    require_fp32(model, src, "INT8 quantization")
    input_name, input_dims = input_info(model)
    calib = check_calib(calib, input_dims, min_images=1)
    batch = min(calibration_batch, len(calib))
    if input_dims and input_dims[0] is not None:
        batch = input_dims[0]  # a static batch dimension fixes the calibration step
        if len(calib) % batch:
            raise UserError(f"the ONNX has a static batch of {batch}; give a multiple of {batch} calibration images")
    shape_spec = f"{input_name}:" + "x".join(str(d) for d in (batch, *calib.shape[1:]))

    with workdir(dst) as work:
        source = self_contained_copy(model, work)
        out = work / "quantized.onnx"
        t0 = time.perf_counter()
        with quiet_tool() as buf:
            cache = percentile_cache(source, input_name, calib, batch, percentile, work) if key == "percentile" else None
            quantization.quantize(
                onnx_path=str(source),
                quantize_mode="int8",
                calibration_data=calib,
                calibration_method="max" if cache else MODELOPT_METHODS[key],
                calibration_cache_path=str(cache) if cache else None,
                calibration_shapes=shape_spec,
                calibration_eps=list(calibration_eps),
                op_types_to_exclude=None,
                nodes_to_exclude=list(nodes_to_exclude) if nodes_to_exclude else None,
                high_precision_dtype=high_precision,
                output_path=str(out),
                keep_intermediate_files=False,
                log_level="WARNING",
            )
        seconds = time.perf_counter() - t0
        if not out.is_file():
            raise RuntimeError(f"ModelOpt quantize wrote no output; its log:\n{buf.getvalue()[-4000:]}")
        placed: dict[str, Any] = {"version": None}
        if placement:  # concatenations and sigmoid gates (precision/placement.py)
            quantized = onnx.load(str(out))
            placed = {"version": PLACEMENT_VERSION, **place_for_tensorrt(quantized)}
            onnx.save(quantized, str(out))
            del quantized
        qdq = count_qdq(out)
        if not qdq["dequantize_linear"]:
            raise UserError(f"{src} has no node ModelOpt INT8 PTQ can quantize")
        result = as_model(out)
        opset = opset_of(result)
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
        "calibration_method": MODELOPT_METHODS[key],
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
        "placement": placed,
        "opset": opset,
        "seconds": round(seconds, 3),
        "tool_warnings": warnings_from(buf),
    }




__all__ = ["CALIBRATION_METHODS", "DEFAULT_PERCENTILE", "HIGH_PRECISIONS", "MODELOPT_METHODS", "normalize_method", "check_calib", "percentile_cache", "quantize_int8"]
