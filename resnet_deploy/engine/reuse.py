"""Reuse: what a build request records, and why an existing engine cannot serve it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .._native.cuda import cuda_device_info
from .._native.trt import RTX_DEFAULT_TARGETS, import_flavour, is_rtx
from ..artifacts import read_manifest, sha256_file
from ..errors import UserError
from .options import BuildOptions

# Keys compared by needs_rebuild(); request_facts() produces exactly these.
REUSE_KEYS = (
    "flavour",
    "builder_version",
    "onnx_sha256",
    "precision",
    "requested_profile",
    "target",
    "opt_level",
    "workspace_mib",
    "hardware_compatibility",
    "version_compatible",
    "legacy_precision_flags",
    "dla_core",
    "gpu_fallback",
)


def target_facts(trt, opts: BuildOptions, device: dict[str, Any] | None) -> dict[str, Any]:
    if is_rtx(trt):
        ccs = opts.compute_capabilities
        if not ccs:
            return {"compute_capabilities": list(RTX_DEFAULT_TARGETS), "explicit": False}
        if ccs == ["current"]:
            if device is None:
                raise UserError("compute capability 'current' needs a CUDA GPU on this machine; name the targets instead (e.g. 8.6)")
            return {"compute_capabilities": [device["compute_capability"]], "explicit": True, "current": True}
        return {"compute_capabilities": list(ccs), "explicit": True}
    if opts.hardware_compatibility == "ampere+":
        return {"hardware_compatibility": "ampere+", "compute_capability": "8.0+"}
    # Without a hardware-compatibility level a TensorRT engine belongs to the GPU model it was
    # built on (same compute capability is not enough for reuse: tactics were timed on that GPU).
    return {
        "hardware_compatibility": opts.hardware_compatibility,
        "compute_capability": device["compute_capability"] if device else None,
        "gpu": device["name"] if device and not opts.hardware_compatibility else None,
    }


def request_facts(onnx_path: str | os.PathLike[str], opts: BuildOptions, *, precision: str) -> dict[str, Any]:
    """What a build of ``onnx_path`` with ``opts`` would record; feed it to :func:`needs_rebuild`."""
    opts.validate()
    opts.check_precision(precision)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX file not found: {onnx_path}")
    trt = import_flavour(opts.flavour)
    device, _ = cuda_device_info()
    return {
        "flavour": opts.flavour,
        "builder_version": trt.__version__,
        "onnx_sha256": sha256_file(onnx_path),
        "precision": precision,
        "requested_profile": opts.requested_profile(),
        "target": target_facts(trt, opts, device),
        "opt_level": opts.opt_level,
        "workspace_mib": opts.workspace_mib,
        "hardware_compatibility": opts.hardware_compatibility,
        "version_compatible": opts.version_compatible,
        "legacy_precision_flags": opts.legacy_precision_flags,
        **opts.dla_facts(),
    }


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s[:12] + "…" if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) else s


def needs_rebuild(engine_path: str | os.PathLike[str], request: dict[str, Any]) -> str | None:
    """Why the engine at ``engine_path`` cannot be reused for ``request`` (``None``: reuse it)."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return f"no engine at {engine_path}"
    try:
        manifest = read_manifest(engine_path)
    except UserError as e:
        return str(e)
    size = engine_path.stat().st_size
    if manifest.get("engine_bytes") != size:
        return f"engine file size {size} differs from its manifest ({manifest.get('engine_bytes')}): truncated or replaced"
    if manifest.get("engine_sha256") != sha256_file(engine_path):
        return "engine file content differs from its manifest (sha256): replaced or corrupted"
    for key in REUSE_KEYS:
        if key not in request:
            continue
        old, new = manifest.get(key), request[key]
        if old != new:
            label = key.replace("_", " ")
            return f"{label} changed: engine built with {_short(old)}, requested {_short(new)}"
    return None


