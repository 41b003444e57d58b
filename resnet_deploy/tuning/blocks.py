"""The units INT8 diagnosis and tuning work in: residual blocks, the stem and the classifier.

The FP32 export names every Conv/Gemm node by its torch module (``layer3.4.conv2``,
``layer2.0.downsample.0``, ``fc``). A unit is a residual block (``layerN.M``: every layer below
it) or a top-level layer of its own (the stem ``conv1``, the classifier ``fc`` / ``linear``).
Its output tensor is what the rest of the network sees of it: for a block the residual ``Add``
fed by one of its layers (through the ``Relu`` after it, when that is its only consumer;
pre-activation blocks end at the ``Add``), for a stem or classifier its layer's output
through any single-consumer ``Relu``/``MaxPool``/``BatchNormalization`` after it. Node and
tensor names are the FP32 export's; ModelOpt's INT8 graph keeps them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import onnx

from ..onnx_meta import consumers_of, read_metadata
from ..precision import module_paths

BLOCK = re.compile(r"^(layer\d+\.\d+)\.")
FOLLOW = ("Relu", "MaxPool", "BatchNormalization", "Clip")


@dataclass
class Unit:
    name: str                           # torch module path: layer3.4, conv1, fc
    kind: str                           # "block", "stem" or "classifier"
    layers: dict[str, str]              # {ONNX node: module path} of its Conv/Gemm layers
    output: str                         # the tensor the rest of the network sees
    adds: list[str] = field(default_factory=list)   # its residual Add node(s)
    parts: list[Unit] = field(default_factory=list)  # for the search's residual-adds unit: one unit per block's Add


def unit_name(path: str) -> str:
    """``layer3.4.conv2 -> layer3.4``; a layer outside blocks is its own unit (``conv1``, ``fc``)."""
    m = BLOCK.match(path)
    return m.group(1) if m else path


def _follow(tensor: str, consumers: dict[str, list[onnx.NodeProto]], ops: tuple[str, ...] = FOLLOW) -> str:
    while len(consumers.get(tensor, [])) == 1 and consumers[tensor][0].op_type in ops:
        tensor = consumers[tensor][0].output[0]
    return tensor


def find_units(model: onnx.ModelProto, modules: dict[str, str]) -> list[Unit]:
    """The units of an FP32 (or INT8) graph, in graph order, from the export's module map."""
    graph = model.graph
    consumers = consumers_of(graph)
    nodes = {n.name: n for n in graph.node}
    grouped: dict[str, dict[str, str]] = {}
    order = [n.name for n in graph.node if n.name in modules]
    for node in order:
        grouped.setdefault(unit_name(modules[node]), {})[node] = modules[node]
    units = []
    for name, layers in grouped.items():
        outputs = {nodes[n].output[0] for n in layers}
        adds = [n for n in graph.node if n.op_type == "Add" and outputs & set(n.input)]
        if BLOCK.match(next(iter(layers.values()))) and adds:
            add = adds[-1]
            out = add.output[0]
            after = consumers.get(out, [])
            if len(after) == 1 and after[0].op_type == "Relu":
                out = after[0].output[0]
            units.append(Unit(name, "block", layers, out, [a.name for a in adds]))
        else:
            last = nodes[list(layers)[-1]]
            kind = "classifier" if last.op_type in ("Gemm", "MatMul") or last.output[0] in {o.name for o in graph.output} \
                else "stem"
            units.append(Unit(name, kind, layers, _follow(last.output[0], consumers)))
    return units


ADDS = "residual-adds"      # the search's unit of every residual Add (its inputs in high precision, no conv's)


def residual_adds(units: list[Unit]) -> Unit | None:
    """One unit of every block's residual Add (its parts: each block's, ``layer2.1.add``): kept in high
    precision, the Adds read FP32 inputs and no convolution loses its INT8 input."""
    parts = [Unit(f"{u.name}.add", "add", {}, "", list(u.adds)) for u in units if u.kind == "block" and u.adds]
    return Unit(ADDS, "adds", {}, "", [a for p in parts for a in p.adds], parts) if parts else None


def layer_units(unit: Unit, int8: onnx.ModelProto) -> list[Unit]:
    """``unit``'s layers as units of their own (``layer2.0.conv1``), as ModelOpt excludes them one by one.

    A residual Add whose quantized input is the same tensor a layer's quantized input is (the block's
    input, read by its first convolution and by the shortcut) loses that Q/DQ when ModelOpt excludes the
    layer, so the Add goes with that layer's unit. A stem or classifier is its one layer already.
    """
    if unit.kind == "adds":
        return list(unit.parts)
    if unit.kind != "block":
        return [unit]
    producer = {o: n for n in int8.graph.node for o in n.output}
    nodes = {n.name: n for n in int8.graph.node}

    def quantized(node: onnx.NodeProto) -> set[str]:
        """The float tensors behind ``node``'s Q/DQ inputs."""
        out = set()
        for i in node.input:
            dq = producer.get(i)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                out.add(q.input[0])
        return out

    subs = []
    for node, path in unit.layers.items():
        mine = quantized(nodes[node]) if node in nodes else set()
        adds = [a for a in unit.adds if a in nodes and mine & quantized(nodes[a])]
        subs.append(Unit(path, "layer", {node: path}, nodes[node].output[0] if node in nodes else "", adds))
    return subs


def units_of(fp32_path: str | os.PathLike[str]) -> list[Unit]:
    """The units of an FP32 ONNX this toolkit exported (its metadata names the modules)."""
    model = onnx.load(str(fp32_path), load_external_data=False)
    return find_units(model, module_paths(read_metadata(model), fp32_path))


__all__ = ["ADDS", "BLOCK", "Unit", "residual_adds", "find_units", "layer_units", "unit_name", "units_of"]
