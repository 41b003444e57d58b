"""``--exclude layer4.2,layer1.0.conv1``: torch module paths -> the ONNX nodes INT8 PTQ leaves alone.

The FP32 export records which torch module each Conv/Gemm node computes (metadata
``resnet_deploy.modules``, matched by weights: see :func:`resnet_deploy.onnx_export.module_map`). A
name is a layer (``layer1.0.conv1``, ``fc``) or any module above layers (a residual block
``layer4.2``, a stage ``layer4``, ``layer2.0.downsample``): it excludes every layer inside it. Excluded
nodes keep ``high_precision`` inputs; ModelOpt quantizes the rest.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from ..errors import UserError


def module_paths(metadata: dict[str, str], source: Any) -> dict[str, str]:
    """The ``{node name: module path}`` map an FP32 ONNX made by this toolkit records."""
    raw = metadata.get("modules")
    if not raw:
        raise UserError(f"{source} records no torch module names (exported by an older resnet-deploy or another "
                        "tool): export it again to use --exclude")
    return json.loads(raw)


def check_exclude(precision: str, exclude: list[str] | str | None) -> None:
    """Exclusions keep layers out of INT8: any other precision refuses them."""
    if exclude and precision != "int8":
        raise UserError(f"--exclude keeps layers out of INT8 quantization: it applies to --precision int8, not {precision}")


def parse_exclude(value: str | list[str] | None) -> list[str]:
    """``"layer4.2, fc"`` or ``["layer4.2", "fc"]`` -> ``["fc", "layer4.2"]`` (sorted, unique)."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return sorted({i.strip() for i in items if i and i.strip()})


def excluded_nodes(names: list[str], modules: dict[str, str]) -> dict[str, list[str]]:
    """``{module name: [ONNX node names]}`` for each name; an unknown one is a :class:`UserError`
    naming the closest module paths."""
    known = set(modules.values())
    parents = {".".join(p.split(".")[:i]) for p in known for i in range(1, p.count(".") + 1)}
    out: dict[str, list[str]] = {}
    for name in names:
        nodes = sorted(node for node, path in modules.items() if path == name or path.startswith(name + "."))
        if not nodes:
            near = difflib.get_close_matches(name, sorted(known | parents), n=4, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else f"; layers look like {sorted(known)[0]}"
            raise UserError(f"--exclude: the model has no module {name!r}{hint}")
        out[name] = nodes
    return out


def node_patterns(nodes: dict[str, list[str]]) -> list[str]:
    """ModelOpt's ``nodes_to_exclude`` takes regular expressions: each node name, matched whole."""
    return sorted({f"^{re.escape(n)}\\Z" for group in nodes.values() for n in group})


__all__ = ["check_exclude", "excluded_nodes", "module_paths", "node_patterns", "parse_exclude"]
