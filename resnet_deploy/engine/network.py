"""The parsed network: create it (strongly typed), parse the ONNX, read its I/O and layer precisions."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._native.trt import flavour_of
from ..errors import BackendUnavailable, UserError


def dtype_name(trt, dt) -> str:
    try:
        return np.dtype(trt.nptype(dt)).name
    except Exception:  # noqa: BLE001 - BF16, FP8, INT4... have no numpy equivalent
        return str(getattr(dt, "name", dt)).lower()


def create_network(trt, builder, *, strongly_typed: bool):
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


def parser_error_line(errors: list[str], limit: int = 4) -> str:
    shown = "; ".join(e.replace("\n", " ").strip() for e in errors[:limit])
    return shown + (f" (+{len(errors) - limit} more)" if len(errors) > limit else "")


def parse_onnx(trt, network, logger, onnx_bytes: bytes, onnx_path: Path):
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(onnx_bytes, str(onnx_path))
    if not ok:
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            where = ""
            try:
                node = err.node()
                if node >= 0:
                    op, nm = err.node_operator(), err.node_name()
                    where = f"node {node}" + (f" {op}" if op else "") + (f" '{nm}'" if nm else "") + ": "
            except Exception:  # noqa: BLE001 - a binding without this accessor or dtype
                pass
            try:
                desc = f"{err.code().name}: {err.desc()}"
            except Exception:  # noqa: BLE001 - a binding without this accessor or dtype
                desc = str(err)
            errors.append(where + desc)
        raise UserError(f"cannot parse ONNX {onnx_path}: {parser_error_line(errors or ['unknown parser error'])}")
    return parser


def io_facts(trt, tensors) -> list[dict[str, Any]]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": dtype_name(trt, t.dtype)} for t in tensors]


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
    for entry in layers:
        if not isinstance(entry, dict):
            continue
        for out in entry.get("Outputs", []) or []:
            if not isinstance(out, dict):
                continue
            # TRT 10: "Format/Datatype": "Row major linear FP16"; TRT 11 splits Format and DataType.
            raw = " ".join(str(v) for k, v in out.items() if "type" in k.lower())
            m = _DTYPE_TOKEN.search(raw)
            tok = m.group(1).upper() if m else "UNKNOWN"
            by_dtype[tok] = by_dtype.get(tok, 0) + 1
    return {"source": "engine_inspector", "num_layers": len(layers), "output_dtypes": dict(sorted(by_dtype.items()))}


