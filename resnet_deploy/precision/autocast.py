"""FP32 ONNX -> FP16 / BF16 ONNX with ModelOpt AutoCast (``convert_to_mixed_precision``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from ..artifacts import atomic_path
from ..errors import UserError
from ..onnx_meta import as_model, opset_of
from ..versions import dist_version
from .modelopt import import_modelopt, input_info, quiet_tool, require_fp32, self_contained_copy, warnings_from, workdir
from .ptq import check_calib

LOW_PRECISIONS = ("fp16", "bf16")
DEFAULT_DATA_MAX = 512.0  # AutoCast default: nodes whose values exceed this stay FP32
FP16_MAX = 65504.0


def low_precision_nodes(model, low: str) -> tuple[int, int]:
    """(nodes computing in ``low``, all non-Cast nodes) of a converted model."""
    elem = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[low]
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is only for counting
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    nodes = [n for n in g.node if n.op_type != "Cast"]
    low_n = sum(1 for n in nodes if n.output and types.get(n.output[0]) == elem)
    return low_n, len(nodes)


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
    autocast = import_modelopt("modelopt.onnx.autocast")
    model = as_model(src)
    require_fp32(model, src, f"{low_precision.upper()} conversion")
    input_name, input_dims = input_info(model)
    if calib is not None:
        calib = check_calib(calib, input_dims, min_images=1)

    with workdir(dst) as work:
        source = self_contained_copy(model, work)
        calib_file = None
        if calib is not None:
            calib_file = work / "calib.npz"
            np.savez(calib_file, **{input_name: calib})
        t0 = time.perf_counter()
        with quiet_tool() as buf:
            converted = autocast.convert_to_mixed_precision(
                onnx_path=str(source),
                low_precision_type=low_precision,
                keep_io_types=keep_io_types,
                nodes_to_exclude=list(nodes_to_exclude) if nodes_to_exclude else None,
                op_types_to_exclude=list(op_types_to_exclude) if op_types_to_exclude else None,
                data_max=float(data_max),
                init_max=float(init_max),
                calibration_data=str(calib_file) if calib_file else None,
                providers=["cpu"],
            )
        seconds = time.perf_counter() - t0
    low_n, total = low_precision_nodes(converted, low_precision)
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
        "opset": opset_of(converted),
        "seconds": round(seconds, 3),
        "tool_warnings": warnings_from(buf),
    }




__all__ = ["DEFAULT_DATA_MAX", "FP16_MAX", "LOW_PRECISIONS", "convert_fp16", "low_precision_nodes"]
