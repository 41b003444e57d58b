"""Reading ONNX files: load, the ``resnet_deploy.*`` metadata, graph inputs/outputs, precision.

The one reader every stage uses: export writes the metadata (:func:`set_metadata`), the
precision stage, the engine builder, evaluation, prediction and packaging read it back
(:func:`read_metadata`, :func:`artifact_facts`). Torch-free.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from .artifacts import PRECISIONS, read_manifest, safe_name
from .errors import UserError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
METADATA_PREFIX = "resnet_deploy."

DTYPE_NAMES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64", 6: "int32", 7: "int64", 3: "int8",
               2: "uint8", 9: "bool"}
_PRECISION_OF = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}
_Q_OPS = ("QuantizeLinear", "DequantizeLinear")
_WEIGHT_OPS = ("Conv", "ConvTranspose")
_FALLBACK_WEIGHT_OPS = ("Gemm", "MatMul")


def load_onnx(path: str | os.PathLike[str], *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file; a missing or corrupt file is a one-line :class:`UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"ONNX model not found: {p} (create it with `resnet-deploy export`)")
    try:
        return onnx.load(str(p), load_external_data=load_external_data)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a damaged file
        raise UserError(f"cannot read ONNX model {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def load_onnx_bytes(data: bytes, name: str | os.PathLike[str]) -> onnx.ModelProto:
    """An ONNX model from bytes already read (a :class:`~resnet_deploy.artifacts.Snapshot`'s); ``name`` for messages."""
    try:
        return onnx.load_model_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a damaged file
        raise UserError(f"cannot read ONNX model {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def as_model(model_or_path: Any) -> onnx.ModelProto:
    return model_or_path if isinstance(model_or_path, onnx.ModelProto) else load_onnx(model_or_path)


def read_metadata(model_or_path: Any) -> dict[str, str]:
    """The ``resnet_deploy.*`` metadata properties, prefix removed (strings, as stored), checked by :func:`check_metadata`."""
    model = as_model(model_or_path)
    where = model_or_path if not isinstance(model_or_path, onnx.ModelProto) else "the ONNX"
    return check_metadata({p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props
                           if p.key.startswith(METADATA_PREFIX)}, where)


def check_metadata(meta: dict[str, Any], source: Any) -> dict[str, Any]:
    """Refuse metadata whose names would become paths, script words or config strings unescaped: ``arch``
    must be a plain name (``../../x`` or a newline is a :class:`UserError`), ``precision`` one of
    :data:`~resnet_deploy.artifacts.PRECISIONS`, ``num_classes``/``batch``/``image_size`` ASCII digits."""
    if meta.get("arch") not in (None, ""):
        safe_name(meta["arch"], f"{source}: its metadata's architecture")
    if meta.get("precision") not in (None, "") and meta["precision"] not in PRECISIONS:
        raise UserError(f"{source}: its metadata's precision {meta['precision']!r} is not one of {', '.join(PRECISIONS)}")
    for key in ("num_classes", "batch", "image_size", "resize"):
        value = meta.get(key)
        if value not in (None, "", "None", "dynamic") and not (str(value).isascii() and str(value).isdigit()):
            raise UserError(f"{source}: its metadata's {key} {value!r} is not a whole number")
    return meta


def set_metadata(model: onnx.ModelProto, facts: dict[str, Any]) -> None:
    """Record facts as ``resnet_deploy.*`` metadata properties (strings), replacing old ones."""
    keep = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in facts.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, str(value)


def artifact_facts(artifact: str | os.PathLike[str], kind: str) -> dict[str, str]:
    """The model facts (arch, weights sha256, precision, batch, preprocessing) an artifact records.

    ONNX files carry them as ``resnet_deploy.*`` metadata; an engine's manifest copies its
    source ONNX's metadata under ``source_metadata`` (the engine format has no room for them).
    An ONNX must be an image classifier (:func:`check_image_classifier`); for one not made here,
    what the graph says stands in: its precision, class count and fixed batch.
    """
    if kind == "onnx":
        model = load_onnx(artifact, load_external_data=False)
        io = check_image_classifier(model, artifact)
        facts = read_metadata(model)
        facts.setdefault("precision", detect_precision(model))
        classes, batch = io["output"]["shape"][-1], io["input"]["shape"][0]
        if isinstance(classes, int):
            facts.setdefault("num_classes", str(classes))
        if isinstance(batch, int) and batch > 0:
            facts.setdefault("batch", str(batch))
        if io["input"]["shape"][2] == io["input"]["shape"][3]:
            facts.setdefault("image_size", str(io["input"]["shape"][2]))
        return facts
    if not Path(artifact).is_file():
        raise UserError(f"engine not found: {artifact} (create it with `resnet-deploy build`)")
    manifest = read_manifest(artifact)
    facts = {k: str(v) for k, v in manifest.get("source_metadata", {}).items()}
    facts.setdefault("precision", str(manifest.get("precision", "fp32")))
    return facts


def opset_of(model: onnx.ModelProto) -> int | None:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)


def consumers_of(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """``{tensor: the nodes that read it}`` in graph order."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def count_ops(model: onnx.ModelProto, op_type: str) -> int:
    return sum(1 for n in model.graph.node if n.op_type == op_type)


def tensor_facts(value_info) -> dict[str, Any]:
    """``{name, shape, dtype}`` of a graph input/output; symbolic dimensions by name (or ``"?"``)."""
    t = value_info.type.tensor_type
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": value_info.name, "shape": dims, "dtype": DTYPE_NAMES.get(t.elem_type, f"onnx-type-{t.elem_type}")}


def graph_io(model: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph's real inputs (initializers excluded) and outputs, as :func:`tensor_facts`."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [tensor_facts(i) for i in model.graph.input if i.name not in inits]
    return inputs, [tensor_facts(o) for o in model.graph.output]


def check_image_classifier(model_or_path: Any, source: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The one input and output of an image classifier this toolkit can feed, or one :class:`UserError`.

    An input [N, C, H, W] of float32/float16 with fixed C, H, W, and logits [N, classes]; anything
    else (another model's [1, 10] input, two inputs, integer images) is refused before it runs,
    saying what was expected. Returns ``{"input": ..., "output": ...}`` as :func:`tensor_facts`.
    """
    model = as_model(model_or_path)
    where = source if source is not None else (model_or_path if not isinstance(model_or_path, onnx.ModelProto) else "the ONNX")
    inputs, outputs = graph_io(model)

    def shown(t: dict[str, Any]) -> str:
        return f"{t['name']!r} {t['shape']} {t['dtype']}"

    expected = "this toolkit feeds one float32 [N, 3, H, W] image batch and reads [N, classes] logits"
    if len(inputs) != 1 or not outputs:
        got = ", ".join(shown(t) for t in inputs) or "no input"
        raise UserError(f"{where} is not an image classifier this toolkit can feed: it takes {got}; {expected}")
    inp, out = inputs[0], outputs[0]
    dims = inp["shape"]
    if (len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:])
            or inp["dtype"] not in ("float32", "float16")):
        raise UserError(f"{where} is not an image classifier this toolkit can feed: its input is {shown(inp)}; {expected}")
    if len(out["shape"]) != 2:
        raise UserError(f"{where} is not an image classifier this toolkit can feed: its output is {shown(out)}; {expected}")
    return {"input": inp, "output": out}


# ------------------------------------------------------------------------------------------ precision


def _quantized_types(model: onnx.ModelProto) -> set[int]:
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


def _weight_dtypes(model: onnx.ModelProto, op_types: Sequence[str]) -> Counter:
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
            counts[_PRECISION_OF.get(dtype, str(dtype))] += 1
    return counts


def detect_precision(model_or_path: Any) -> str:
    """``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"int8"``, read from the graph itself.

    Q/DQ nodes with INT8 data mean ``int8`` (whatever the high-precision type around them);
    otherwise the majority type of the convolution weights decides (Gemm/MatMul weights if
    there is no convolution, then all floating initializers by size). A Q/DQ model in another
    format (FP8, INT4) is a :class:`UserError`: this toolkit does not produce or build those.
    """
    model = as_model(model_or_path)
    ops = {n.op_type for n in model.graph.node}
    if ops & set(_Q_OPS):
        qtypes = _quantized_types(model)
        if not qtypes or qtypes & {2, 3}:  # UINT8, INT8 (no zero point: INT8/UINT8 default)
            return "int8"
        raise UserError(f"the ONNX is quantized to element types {sorted(qtypes)}, not INT8; unsupported here")
    counts = _weight_dtypes(model, _WEIGHT_OPS) or _weight_dtypes(model, _FALLBACK_WEIGHT_OPS)
    if not counts:
        for t in model.graph.initializer:
            if t.data_type in _PRECISION_OF:
                counts[_PRECISION_OF[t.data_type]] += int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    if not counts:
        return "fp32"
    best = counts.most_common(1)[0][0]
    return best if best in ("fp16", "bf16") else "fp32"


def count_qdq(model_or_path: Any) -> dict[str, Any]:
    """Q/DQ node counts and the op types whose inputs are dequantized (for the manifest)."""
    model = as_model(model_or_path)
    ops = Counter(n.op_type for n in model.graph.node)
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    consumers = Counter(n.op_type for n in model.graph.node
                        if n.op_type not in _Q_OPS and any(i in dq_out for i in n.input))
    return {
        "quantize_linear": ops.get("QuantizeLinear", 0),
        "dequantize_linear": ops.get("DequantizeLinear", 0),
        "quantized_ops": dict(sorted(consumers.items())),
    }


__all__ = ["consumers_of", "INPUT_NAME", "OUTPUT_NAME", "METADATA_PREFIX", "DTYPE_NAMES", "load_onnx", "as_model", "read_metadata",
           "set_metadata", "artifact_facts", "check_image_classifier", "opset_of", "count_ops", "tensor_facts", "graph_io", "detect_precision",
           "count_qdq"]
