"""Where INT8 goes wrong: per-unit errors against FP32, and a sensitivity ranking by task score.

For every residual block, the stem and the classifier (:mod:`.blocks`), and every layer, the
relative L2 and cosine of its output tensor against FP32 on the same images. Then, for each
unit that has INT8 inputs, the score (top-1, or agreement with FP32 when unlabelled) of the
plain INT8 model with that one unit kept in high precision (:func:`.keep.keep_high_precision`):
the units whose exclusion recovers the most come first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import onnx

from ..plots import pyplot, save_png
from ..progress import Progress, quiet
from .blocks import Unit, units_of
from .images import EvalSet
from .keep import check_nodes, keep_high_precision, quantized_inputs
from .measure import Measure


def candidates(int8: onnx.ModelProto, units: list[Unit]) -> list[Unit]:
    """The units with something left to keep out of INT8 (a classifier ModelOpt left in FP32 is not one)."""
    return [u for u in units if quantized_inputs(int8, list(u.layers) + u.adds)]


def rank(measure: Measure, int8: onnx.ModelProto, units: list[Unit], plain: dict[str, Any], *,
         progress: Progress = quiet) -> list[dict[str, Any]]:
    """Each candidate unit kept alone in high precision, best score first (then lowest logits error)."""
    found = candidates(int8, units)
    rows = []
    for i, u in enumerate(found, 1):
        progress(f"sensitivity {i}/{len(found)}: INT8 with {u.name} in high precision")
        r = measure.score(keep_high_precision(int8, [u]), f"{u.name} kept")
        rows.append({"unit": u.name, "kind": u.kind, **r, "gain": r["score"] - plain["score"]})
    return sorted(rows, key=lambda r: (-r["score"], r["rel_l2"], r["unit"]))


def unit_errors(measure: Measure, int8: onnx.ModelProto, units: list[Unit]) -> tuple[list[dict], list[dict]]:
    """(per-unit rows, per-layer rows): each output tensor's relative L2 and cosine vs FP32."""
    layer_outputs = {}
    nodes = {n.name: n for n in int8.graph.node}
    for u in units:
        for node, path in u.layers.items():
            layer_outputs[path] = nodes[node].output[0]
    tensors = list(dict.fromkeys([u.output for u in units] + list(layer_outputs.values())))
    errors = measure.tensor_errors(int8, tensors)
    blocks = [{"unit": u.name, "kind": u.kind, "tensor": u.output, **errors[u.output]} for u in units]
    layers = [{"layer": path, "tensor": t, **errors[t]} for path, t in layer_outputs.items()]
    return blocks, layers


def diagnose_int8(fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str], images: EvalSet, work: Path, *,
                  progress: Progress = quiet, progress_bar_enabled: bool = False, backend: str = "ort") -> dict[str, Any]:
    """Per-unit and per-layer errors of the INT8 ONNX against its FP32 source, and the sensitivity ranking, each
    model run on the ONNX runner ``backend`` (``engine`` in the report: what scored them)."""
    t0 = time.perf_counter()
    units = units_of(fp32_path)
    int8 = onnx.load(str(int8_path))
    check_nodes(int8, units, Path(int8_path).name)
    progress(f"measuring FP32 on {len(images.batch)} images ({images.metric}) on {backend}")
    measure = Measure(fp32_path, images, work, progress_bar_enabled=progress_bar_enabled, backend=backend)
    plain = measure.score(int8, "INT8")
    progress("comparing every block's output with FP32")
    blocks, layers = unit_errors(measure, int8, units)
    ranking = rank(measure, int8, units, plain, progress=progress)
    return {"fp32_onnx": str(fp32_path), "int8_onnx": str(int8_path), "images": images.describe(),
            "metric": images.metric, "fp32": measure.reference, "int8": plain, "blocks": blocks, "layers": layers,
            "ranking": ranking, "engine": measure.engine, "evaluations": measure.evaluations, "seconds": round(time.perf_counter() - t0, 3)}


def plot_diagnosis(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Two bar charts: each unit's output error vs FP32, and the score with each unit alone kept out of INT8."""
    plt = pyplot()
    blocks, ranking = report["blocks"], report["ranking"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 0.42 * len(blocks) + 2), 7.5))
    top.bar([b["unit"] for b in blocks], [b["rel_l2"] for b in blocks], color="#4c72b0")
    top.set_ylabel("output relative L2 vs FP32")
    top.set_title(f"INT8 vs FP32, block by block ({report['images']['images']} images)")
    order = sorted(ranking, key=lambda r: [b["unit"] for b in blocks].index(r["unit"]))
    bottom.bar([r["unit"] for r in order], [100 * r["score"] for r in order], color="#55a868",
               label="this unit alone in high precision")
    bottom.axhline(100 * report["int8"]["score"], color="#c44e52", linestyle="--", label="plain INT8")
    bottom.axhline(100 * report["fp32"], color="black", linestyle=":", label="FP32")
    low = min([r["score"] for r in ranking] + [report["int8"]["score"], report["fp32"]])
    high = 100 * max(report["fp32"], 1e-9)
    bottom.set_ylim(max(0.0, 100 * low - 2), high + 0.35 * (high - max(0.0, 100 * low - 2)))  # room for the legend
    bottom.set_ylabel(f"{report['metric']} (%)")
    bottom.legend(loc="upper center", ncol=3, fontsize=8)
    for ax in (top, bottom):
        ax.tick_params(axis="x", rotation=60, labelsize=8)
    fig.tight_layout()
    save_png(fig, path)


__all__ = ["candidates", "diagnose_int8", "plot_diagnosis", "rank", "unit_errors"]
