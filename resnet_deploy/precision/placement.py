"""Q/DQ placement passes after ModelOpt PTQ, for the patterns ResNet's relatives add.

ModelOpt places Q/DQ by TensorRT's rules (inputs of weighted layers, the residual input of an Add,
pooling), and two patterns of the toolkit's networks need more than its defaults give:

- **Concatenation** (DenseNet's dense blocks, GoogLeNet's Inception modules). ModelOpt quantizes a
  Concat's output (its consumers are convolutions or a BatchNorm) but not its inputs, which are
  convolution or ReLU outputs left in high precision. Every Concat then runs in high precision and
  re-quantizes, and in a dense block, where each layer's output feeds every later Concat, each with a
  scale of its own, no convolution can write INT8. :func:`share_concat_scales` gives every Concat of
  a connected group (one dense block, one Inception module) one scale, the widest of its outputs',
  and quantizes each input once with it: TensorRT then fuses the Q into the producing convolution
  (INT8 output written straight into the concatenation) and the Concat is a copy of INT8 data with
  one scale, which it eliminates. ``Q(concat(x...)) == concat(Q(x)...)`` for one scale, so the
  output Q/DQ is an exact no-op on the grid and is kept for readers of the graph.
- **Sigmoid gates** (SE-ResNet's squeeze-and-excitation). Calibration (entropy) clips the gate's
  range at whatever its histogram suggests (0.67 on the seeded SE-ResNet-50), so every channel gain
  above it saturates. A sigmoid's range is [0, 1] by definition: :func:`fix_sigmoid_scales` sets the
  gate's scale to 1/127, which represents it without clipping. Placement is unchanged: the gate's Q
  fuses into the Sigmoid, and the SE multiply and the residual Add take INT8 inputs.

Both passes only re-wire Q/DQ nodes and scale initializers of a ModelOpt INT8 graph: symmetric INT8,
per-tensor activation scales, zero points 0. Anything else is left as it is.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..onnx_meta import consumers_of

SIGMOID_SCALE = 1.0 / 127.0  # [0, 1] in symmetric INT8
# In every INT8 request (precision/artifact.py): an INT8 ONNX made before these passes is made again.
PLACEMENT_VERSION = "concat-shared-scales+sigmoid-1/127"


class _Graph:
    """Producers, consumers and scalar initializers of one ONNX graph, with helpers to add Q/DQ."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers = defaultdict(list, consumers_of(self.graph))
        self.names = {n.name for n in self.graph.node} | set(self.inits) | set(self.producer)

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def scalar(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def per_tensor_int8(self, q: onnx.NodeProto) -> float | None:
        """The scale of a per-tensor, symmetric INT8 QuantizeLinear/DequantizeLinear, else None."""
        if len(q.input) < 3:
            return None
        scale, zero = self.scalar(q.input[1]), self.scalar(q.input[2])
        if scale is None or zero is None or scale.size != 1 or zero.dtype != np.int8 or int(zero.ravel()[0]) != 0:
            return None
        return float(scale.ravel()[0])

    def add_scale(self, base: str, scale: float, like: onnx.NodeProto) -> tuple[str, str]:
        """A new scalar scale (of the dtype ``like``'s scale has: float16 graphs keep float16) and zero point."""
        s, z = self.unique(base + "_scale"), self.unique(base + "_zero_point")
        dtype = self.scalar(like.input[1]).dtype
        self.graph.initializer.extend([numpy_helper.from_array(np.array(scale, dtype=dtype), s),
                                       numpy_helper.from_array(np.array(0, dtype=np.int8), z)])
        return s, z

    def rescale(self, q: onnx.NodeProto, scale_name: str, zero_name: str) -> None:
        """Give ``q`` and every DequantizeLinear reading its output the new scale."""
        q.input[1], q.input[2] = scale_name, zero_name
        for dq in self.consumers[q.output[0]]:
            if dq.op_type == "DequantizeLinear":
                dq.input[1], dq.input[2] = scale_name, zero_name


def _quantized_concats(g: _Graph) -> list[onnx.NodeProto]:
    """Concats whose output goes only to per-tensor INT8 QuantizeLinear nodes (ModelOpt's pattern)."""
    found = []
    for n in g.graph.node:
        if n.op_type != "Concat":
            continue
        users = g.consumers[n.output[0]]
        if users and all(u.op_type == "QuantizeLinear" and g.per_tensor_int8(u) is not None for u in users):
            found.append(n)
    return found


def _groups(concats: list[onnx.NodeProto]) -> list[list[onnx.NodeProto]]:
    """Concats joined by a shared input (a dense block's Concats all read its first tensor)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for c in concats:
        for t in c.input:
            parent[find(f"node:{id(c)}")] = find("tensor:" + t)
    by_root: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for c in concats:
        by_root[find(f"node:{id(c)}")].append(c)
    return list(by_root.values())


def share_concat_scales(model: onnx.ModelProto) -> dict[str, Any]:
    """One INT8 scale per group of connected Concats, each input quantized once with it (in place).

    Returns ``{"concat_groups": g, "concats": c, "inputs_quantized": i}``.
    """
    g = _Graph(model)
    concats = _quantized_concats(g)
    if not concats:
        return {"concat_groups": 0, "concats": 0, "inputs_quantized": 0}
    # every Concat of a group reads its inputs through one Q/DQ pair per input tensor
    rewire: dict[int, dict[str, str]] = {}     # id(concat) -> {old input: dequantized input}
    emit_before: dict[int, list[onnx.NodeProto]] = defaultdict(list)  # id(concat) -> Q/DQ nodes to place first
    inputs_quantized = 0
    groups = _groups(concats)
    for group in groups:
        out_qs = [u for c in group for u in g.consumers[c.output[0]]]
        scale = max(g.per_tensor_int8(q) for q in out_qs)
        base = (group[0].name or group[0].output[0]).strip("/").replace("/", "_") or "concat"
        s_name, z_name = g.add_scale(base + "_shared", scale, out_qs[0])
        for q in out_qs:
            g.rescale(q, s_name, z_name)
        dequantized: dict[str, str] = {}
        for c in group:  # graph order: the first Concat reading a tensor gets its Q/DQ placed before it
            for t in c.input:
                src = g.producer.get(t)
                if src is not None and src.op_type == "DequantizeLinear" and g.per_tensor_int8(src) == scale:
                    dequantized.setdefault(t, t)  # already INT8 with the group's scale (the pass ran before)
                if t not in dequantized:
                    q_out, dq_out = g.unique(t + "_concat_q"), g.unique(t + "_concat_dq")
                    emit_before[id(c)].extend([
                        helper.make_node("QuantizeLinear", [t, s_name, z_name], [q_out], name=g.unique(t + "_QuantizeLinear_concat")),
                        helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                                         name=g.unique(t + "_DequantizeLinear_concat")),
                    ])
                    dequantized[t] = dq_out
                    inputs_quantized += 1
                rewire.setdefault(id(c), {})[t] = dequantized[t]
    nodes = []
    for n in g.graph.node:
        if id(n) in rewire:
            nodes.extend(emit_before.get(id(n), []))
            for k, t in enumerate(n.input):
                n.input[k] = rewire[id(n)][t]
        nodes.append(n)
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    return {"concat_groups": len(groups), "concats": len(concats), "inputs_quantized": inputs_quantized}


def fix_sigmoid_scales(model: onnx.ModelProto) -> int:
    """Give every per-tensor INT8 Q reading a Sigmoid the scale 1/127 (its whole range); returns how many."""
    g = _Graph(model)
    fixed = 0
    for n in list(g.graph.node):
        if n.op_type != "QuantizeLinear" or g.per_tensor_int8(n) is None:
            continue
        src = g.producer.get(n.input[0])
        if src is not None and src.op_type == "Sigmoid":
            s_name, z_name = g.add_scale(n.input[0].strip("/").replace("/", "_") + "_gate", SIGMOID_SCALE, n)
            g.rescale(n, s_name, z_name)
            fixed += 1
    return fixed


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def place_for_tensorrt(model: onnx.ModelProto) -> dict[str, Any]:
    """Both passes, in place (the scales they replace are dropped); the facts for the manifest."""
    facts = share_concat_scales(model)
    facts["sigmoid_gates"] = fix_sigmoid_scales(model)
    drop_unused_initializers(model)
    onnx.checker.check_model(model)
    return facts


__all__ = ["PLACEMENT_VERSION", "SIGMOID_SCALE", "fix_sigmoid_scales", "place_for_tensorrt", "share_concat_scales"]
