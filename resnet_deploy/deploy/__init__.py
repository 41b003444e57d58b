"""Deployment targets: a Jetson / edge bundle and an NVIDIA Triton model repository.

    from resnet_deploy.api import package          # (the keyword face; deploy.package takes a ModelRef)
    package(50, precision="int8", target="jetson", out="deploy/r50-jetson")
    package(50, precision="fp16", target="triton", out="model_repository")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..artifacts import DEFAULT_ROOT, Precision, Snapshot, verified_manifest
from ..errors import UserError
from ..limits import MAX_BATCH
from ..model import ModelRef
from ..pipeline import precision_manifest
from ..progress import Progress, quiet
from .common import check_output_folder, check_sources, onnx_facts
from .jetson import write_jetson_bundle
from .options import ServingOptions
from .server import Ports, ServerInstall, TritonServer, find_server
from .triton import write_triton_model
from .triton_config import parse as parse_triton_config

TARGETS = ("jetson", "triton")


def package(model: ModelRef, target: str, out: str | os.PathLike[str] | None, *, precision: Precision | None = None,
            onnx: str | os.PathLike[str] | None = None, engine: str | os.PathLike[str] | None = None,
            artifacts_dir: str | os.PathLike[str] = DEFAULT_ROOT, options: ServingOptions = ServingOptions(),
            progress: Progress = quiet) -> dict[str, Any]:
    """Write a deployment of ``model`` for ``target``; returns its manifest (``"path"`` is where it went).

    The model is ``onnx`` if given, else the precision's ONNX under ``artifacts_dir`` (made if
    missing; ``precision`` defaults to fp16, and must match ``onnx`` when both are given). For Triton,
    ``engine`` (a TensorRT engine with its manifest) is served as a ``tensorrt_plan`` instead of the
    ONNX. ``options`` (:class:`ServingOptions`): name, labels, batch profile, instances, force.
    """
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if out is None:
        raise UserError("--out is required: the bundle folder (jetson) or the model repository (triton)")
    if engine is not None and target != "triton":
        raise UserError("--engine-file is for Triton (tensorrt_plan); a Jetson bundle builds its engine on the device")
    for flag, v in (("--min-batch", options.min_batch), ("--opt-batch", options.opt_batch), ("--max-batch", options.max_batch)):
        if v is not None and v > MAX_BATCH:  # before any (possibly minutes long) quantization
            raise UserError(f"{flag} must be at most {MAX_BATCH}, got {v}")
    arch, name, force = model.arch, options.name, options.force
    explicit_precision = precision is not None
    precision = precision if precision is not None else Precision.FP16
    if target == "triton" and engine is not None:
        if not Path(engine).is_file():
            raise UserError(f"engine not found: {engine}")
        built = verified_manifest(engine, what="engine", fix="rebuild it").get("precision", precision)
        if explicit_precision and built != precision:
            raise UserError(f"{engine} is a {built} engine but --precision {precision} was asked for")
        return write_triton_model(engine, out, name=name or f"{arch}_{built}_trt", options=options, progress=progress)
    if onnx is None:
        # fail on an occupied output before the (possibly minutes long) quantization; and no command replaces
        # the folder it reads from: the output is not, does not hold and is not inside --artifacts
        final = Path(out) / (name or f"{arch}_{precision}") if target == "triton" else Path(out)
        check_sources(final, [artifacts_dir])
        check_output_folder(final, force)
        made = precision_manifest(model, precision, out_dir=artifacts_dir, progress=progress)
        onnx = Snapshot.pinned(made["path"], made.get("sha256"), what="ONNX model")  # the bytes its manifest vouched for
    else:
        found = onnx_facts(onnx)["precision"]
        if explicit_precision and found != precision:
            raise UserError(f"{onnx} is a {found} model but --precision {precision} was asked for")
        precision = found
    if target == "jetson":
        return write_jetson_bundle(onnx, out, labels=options.labels, min_batch=options.min_batch,
                                   opt_batch=options.opt_batch, max_batch=options.max_batch, force=force,
                                   progress=progress)
    return write_triton_model(onnx, out, name=name or f"{arch}_{precision}", options=options, progress=progress)


__all__ = ["Ports", "ServerInstall", "TARGETS", "ServingOptions", "TritonServer", "find_server", "package", "parse_triton_config",
           "write_jetson_bundle", "write_triton_model"]
