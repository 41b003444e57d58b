"""nn.Module -> FP32 ONNX: BatchNorm folded, checked, shape-inferred, with metadata and manifest.

The first stage after the model. It knows nothing of the stages after it: they read the file
and its ``resnet_deploy.*`` metadata (:mod:`resnet_deploy.onnx_meta`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.fx.experimental.optimization import fuse

from . import __version__
from .artifacts import publish_manifest, replacing, sha256_file
from .errors import UserError
from .limits import MAX_BATCH
from .onnx_meta import INPUT_NAME, OUTPUT_NAME, count_ops, opset_of, set_metadata
from .preprocess import DEFAULT, Preprocess

DEFAULT_OPSET = 17
OPSETS = range(13, 22)
EXPORTERS = ("torchscript", "dynamo")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every conv->BN pair fused into one conv (torch.fx's fuse).

    Pre-activation BNs follow a ReLU or a sum, not a conv, and stay (TensorRT turns them into
    a scale layer).
    """
    return fuse(model.eval(), inplace=False)


def module_map(module: nn.Module, proto: onnx.ModelProto) -> dict[str, str]:
    """ONNX Conv/Gemm/MatMul node name -> the torch module it computes (``layer3.4.conv2``, ``fc``).

    The exporters name nodes after scopes that the BatchNorm fold flattens (``/conv1_1/Conv``), so
    the map matches each node's weight initializer with the (folded) module weights, exactly.
    """
    def key(a: np.ndarray) -> str:
        a = np.ascontiguousarray(a, dtype=np.float32)
        return f"{a.shape}:{hashlib.sha256(a.tobytes()).hexdigest()}"

    weights: dict[str, str] = {}
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().cpu().numpy()
            weights[key(w)] = name
            if w.ndim == 2:
                weights.setdefault(key(w.T), name)  # a MatMul holds the transposed Linear weight
    inits = {i.name: i for i in proto.graph.initializer}
    found: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in inits:
            name = weights.get(key(numpy_helper.to_array(inits[node.input[1]])))
            if name is not None:
                found[node.name] = name
    return found


DYNAMO_MIN_OPSET = 18  # torch's dynamo exporter writes nothing older (it falls back to 18, saying so at length)
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo", "torch.fx")


@contextlib.contextmanager
def _quiet_dynamo():
    """The dynamo exporter prints progress on stdout (which would break --json) and logs warnings and
    tracebacks of its fallbacks on stderr: held back, as every other stage's tools are."""
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    buf = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR + 10)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_proto(model: nn.Module, sample: torch.Tensor, opset: int, dynamic: bool, exporter: str) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dyn = {"x": {0: torch.export.Dim("batch", min=1)}} if dynamic else None
            with _quiet_dynamo():
                program = torch.onnx.export(model, (sample,), dynamo=True, input_names=[INPUT_NAME],
                                            output_names=[OUTPUT_NAME], dynamic_shapes=dyn, verbose=False,
                                            opset_version=opset, external_data=False)
            return program.model_proto
        buf = io.BytesIO()
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
        torch.onnx.export(model, (sample,), buf, dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)
        return onnx.load_from_string(buf.getvalue())


def check_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """Full checker plus strict shape inference; return the shape-inferred model."""
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)


def validate_options(opset: int, exporter: str, batch: int | None) -> None:
    """Check export options before any slow work."""
    if opset not in OPSETS:
        raise UserError(f"--opset {opset} is not supported; choose {OPSETS.start}..{OPSETS.stop - 1}")
    if exporter not in EXPORTERS:
        raise UserError(f"unknown --exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise UserError(f"--exporter dynamo writes opset {DYNAMO_MIN_OPSET} or newer, not --opset {opset}: ask "
                        f"--opset {DYNAMO_MIN_OPSET}..{OPSETS.stop - 1}, or use the torchscript exporter for opset {opset}")
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    if batch is not None and batch > MAX_BATCH:
        raise UserError(f"--batch must be at most {MAX_BATCH}, got {batch}")


@dataclass(frozen=True)
class ExportOptions:
    """How to export (``resnet-deploy export``'s options): ``batch`` fixed (``None``: dynamic), the
    ONNX ``opset``, and the ``exporter`` (``torchscript`` or ``dynamo``)."""

    batch: int | None = None
    opset: int = DEFAULT_OPSET
    exporter: str = "torchscript"

    def check(self) -> None:
        """Refuse options that cannot be exported, before the model is built."""
        validate_options(self.opset, self.exporter, self.batch)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    options: ExportOptions = ExportOptions(),
    *,
    facts: dict[str, Any],
    image_size: int = 224,
    recipe: Preprocess = DEFAULT,
    timings: dict[str, float] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ``path`` atomically with ``options``; return the manifest written beside it.

    ``facts`` carries what the caller knows about the model (arch, depth, classes, weights
    source and sha256); they go into the ONNX metadata and the manifest. ``timings`` (seconds
    the caller spent before, e.g. ``{"model": 6.1}``) join the manifest's ``timings_s``, whose
    ``total`` counts from ``started`` (a ``time.perf_counter()`` value) when given.
    """
    options.check()
    batch, opset, exporter = options.batch, options.opset, options.exporter
    t0 = time.perf_counter()
    folded = fold_batchnorm(model)
    t_fold = time.perf_counter()
    sample = torch.zeros(batch or 1, 3, image_size, image_size)
    with torch.no_grad():
        proto = _export_proto(folded, sample, opset, batch is None, exporter)
    t_export = time.perf_counter()
    meta = {
        **facts,
        "image_size": image_size,
        "resize": recipe.resize,
        "mean": list(recipe.mean),
        "std": list(recipe.std),
        "preprocess": recipe.to_dict(),
        "precision": "fp32",
        "opset": opset_of(proto),  # what the file holds (asked for: validate_options refuses what cannot be)
        "exporter": exporter,
        "batch": batch if batch is not None else "dynamic",
        "batchnorm_folded": count_ops(proto, "BatchNormalization") == 0,
        "toolkit_version": __version__,
        "torch_version": torch.__version__,
    }
    modules = module_map(folded, proto)
    set_metadata(proto, {**{k: v for k, v in meta.items() if k != "preprocess"},
                         "modules": json.dumps(modules, separators=(",", ":"))})
    proto.producer_name, proto.producer_version = "resnet-deploy", __version__
    try:
        inferred = check_onnx(proto)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise RuntimeError(f"exported ONNX failed its check: {e}") from e
    t_check = time.perf_counter()
    path = Path(path)
    # the file, then its manifest (artifacts.replacing): stopped between, the previous pair comes back
    with replacing(path) as tmp:
        onnx.save(inferred, str(tmp))
    t_save = time.perf_counter()
    manifest = {
        "artifact": path.name,
        "kind": "onnx",
        **meta,
        "input": {"name": INPUT_NAME, "shape": [batch or "batch", 3, image_size, image_size], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": [batch or "batch", facts.get("num_classes")], "dtype": "float32"},
        "nodes": len(inferred.graph.node),
        "batchnorm_nodes": count_ops(inferred, "BatchNormalization"),
        "onnx_version": onnx.__version__,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "timings_s": {**{k: round(v, 3) for k, v in (timings or {}).items()},
                      "fold": round(t_fold - t0, 3), "export": round(t_export - t_fold, 3),
                      "check": round(t_check - t_export, 3), "save": round(t_save - t_check, 3),
                      "total": round(time.perf_counter() - (t0 if started is None else started), 3)},
    }
    publish_manifest(path, manifest)
    return manifest


__all__ = ["DEFAULT_OPSET", "EXPORTERS", "OPSETS", "ExportOptions", "check_onnx", "export_onnx", "fold_batchnorm", "validate_options"]
