"""Keep units of an INT8 Q/DQ graph in high precision without calibrating again.

ModelOpt's entropy/minmax calibration is deterministic, and excluding nodes does not change
the scales of the tensors that stay quantized; so the model ``quantize --exclude layer2.1``
writes is the plain INT8 graph with the block's Q/DQ pairs taken out: its layers and its
residual ``Add`` read their inputs (activations and weights) in high precision, Q/DQ pairs
ModelOpt would no longer place go too (:func:`_unshare`), and Q/DQ pairs nothing reads any
more are dropped. That is what :func:`keep_high_precision` does, in
milliseconds, so the search can score dozens of candidates; the tuned artifact itself is
made by ModelOpt with the found exclusions (tests check the two agree).
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from ..errors import UserError
from .blocks import Unit


def _dequantized(dq: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> onnx.TensorProto:
    """The float tensor a DequantizeLinear of constant INT8 data computes (weights stored as INT8)."""
    q = numpy_helper.to_array(inits[dq.input[0]]).astype("float32")
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype("float32")
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype("float32") if len(dq.input) > 2 and dq.input[2] else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if getattr(scale, "ndim", 0) == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = zero.reshape(shape) if getattr(zero, "ndim", 0) == 1 else zero
    return numpy_helper.from_array(((q - zero) * scale).astype("float32"), dq.output[0] + "_float")


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing reads, then initializers nothing reads."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(t)


def _missing_nodes(model: onnx.ModelProto, units: list[Unit]) -> list[str]:
    """The units' layer and Add nodes the graph lacks (sorted)."""
    return sorted({n for u in units for n in list(u.layers) + u.adds} - {n.name for n in model.graph.node})


def check_nodes(model: onnx.ModelProto, units: list[Unit], name: str) -> None:
    """Refuse an INT8 graph that lacks the FP32 export's layer nodes (not quantized from it by this toolkit)."""
    missing = _missing_nodes(model, units)
    if missing:
        raise UserError(f"{name} has no node {missing[0]!r} of the FP32 export: it was not quantized from it by "
                        "resnet-deploy (make it with `resnet-deploy quantize --precision int8`)")


def keep_high_precision(model: onnx.ModelProto, units: list[Unit]) -> onnx.ModelProto:
    """A copy of the INT8 ``model`` with ``units``' layers and residual Adds reading high-precision inputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {t.name: t for t in graph.initializer}
    targets = {n for u in units for n in list(u.layers) + u.adds}
    missing = _missing_nodes(out, units)
    if missing:
        raise ValueError(f"the INT8 graph has no node {missing[0]!r}: it was not quantized from this FP32 export")
    added: dict[str, str] = {}
    detached: dict[str, str] = {}       # activation DQ output -> the float tensor its Q reads
    for node in graph.node:
        if node.name not in targets:
            continue
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
                detached[name] = q.input[0]
            elif dq.input[0] in inits:   # INT8 weights stored as constants
                if name not in added:
                    t = _dequantized(dq, inits)
                    graph.initializer.append(t)
                    added[name] = t.name
                node.input[k] = added[name]
    _unshare(graph, detached, targets)
    _prune(graph)
    return out


MOVES = ("Slice", "Pad", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Split", "Identity")


def _unshare(graph: onnx.GraphProto, detached: dict[str, str], targets: set[str]) -> None:
    """Take out the Q/DQ pairs ModelOpt does not place once the kept layers are excluded (``--exclude``):

    - a pair the kept nodes no longer read, left only for data movement (the CIFAR shortcut's ``Slice -> Pad``,
      re-quantized after its ``Pad``): its other readers read the float tensor (else it is rounded twice, at two
      scales);
    - a pair in front of a residual ``Add`` that a kept layer's output feeds, when the Add is its only reader
      (ModelOpt quantizes an Add's other input only to fuse it with an INT8 convolution).
    """
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for name, source in detached.items():
        rest = readers.get(name, [])
        if rest and all(n.op_type in MOVES for n in rest):
            for node in rest:
                node.input[:] = [source if i == name else i for i in node.input]
    producer = {o: n for n in graph.node for o in n.output}
    kept = {o for n in graph.node if n.name in targets and n.op_type in ("Conv", "Gemm") for o in n.output}
    for node in graph.node:
        if node.op_type != "Add" or not kept & set(node.input):
            continue
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and len(readers.get(name, [])) == 1:
                node.input[k] = q.input[0]


def quantized_inputs(model: onnx.ModelProto, nodes: set[str] | list[str]) -> int:
    """How many inputs of ``nodes`` come from a DequantizeLinear (0: nothing left to keep out of INT8)."""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    return sum(producer.get(i) == "DequantizeLinear" for n in model.graph.node if n.name in set(nodes) for i in n.input)


def int8_conv_share(model: onnx.ModelProto) -> tuple[int, int]:
    """(convolutions whose data input is INT8, all convolutions): is it still an INT8 model?"""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return sum(producer.get(n.input[0]) == "DequantizeLinear" for n in convs), len(convs)


__all__ = ["int8_conv_share", "keep_high_precision", "quantized_inputs"]
