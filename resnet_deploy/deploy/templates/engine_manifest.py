#!/usr/bin/env python3
"""Write the manifest beside an engine built by build_engine.sh (called by it; torch-free).

infer.py's runner reads this manifest before it deserializes anything: it checks the engine file
is the one that was built (size, sha256), that the installed TensorRT is the version that built
it, and which batch profile it accepts.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from resnet_deploy_edge._native.cuda import cuda_device_info  # noqa: E402
from resnet_deploy_edge.artifacts import sha256_file, write_manifest  # noqa: E402


def tensorrt_version(fallback: str) -> tuple[str, str]:
    """The TensorRT release, as infer.py's runner will compare it: the Python module's 4-part version
    ("10.3.0.30"), else JetPack's libnvinfer package version (the same 4 parts), else what trtexec
    printed (3 parts, "10.3.0", which the runner compares by those 3)."""
    try:
        import tensorrt

        return str(tensorrt.__version__), "python tensorrt module"
    except Exception:  # noqa: BLE001 - not installed / libnvinfer missing: the C++ example can still use the engine
        pass
    for package in ("libnvinfer10", "libnvinfer11", "tensorrt"):
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            break
        m = re.match(r"(\d+\.\d+\.\d+(?:\.\d+)?)", out.stdout.strip()) if out.returncode == 0 else None
        if m:
            return m.group(1), f"dpkg {package}"
    return fallback, "trtexec log"


def dla_placement(subgraphs: int | None, fell_back: int | None, nodes: int | None) -> dict:
    """Where a DLA build put the network, as trtexec's log says (layers moved to the GPU, DLA subgraphs)."""
    mostly_gpu = None
    if subgraphs is not None and fell_back is not None:
        mostly_gpu = subgraphs == 0 or (nodes is not None and fell_back > nodes / 2)
    return {"source": "trtexec build log", "onnx_nodes": nodes, "fell_back_to_gpu": fell_back,
            "dla_subgraphs": subgraphs, "mostly_gpu": mostly_gpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", required=True, type=Path)
    ap.add_argument("--onnx", required=True, type=Path)
    ap.add_argument("--precision", required=True)
    ap.add_argument("--min-batch", type=int, required=True)
    ap.add_argument("--opt-batch", type=int, required=True)
    ap.add_argument("--max-batch", type=int, required=True)
    ap.add_argument("--trtexec-version", default="unknown")
    ap.add_argument("--dla", type=int, default=None)
    ap.add_argument("--dla-subgraphs", type=int, default=None, help="DLA subgraphs the build log listed ([DlaLayer])")
    ap.add_argument("--fell-back", type=int, default=None, help="layers the build log moved from the DLA to the GPU")
    ap.add_argument("--weak-typing", action="store_true")
    a = ap.parse_args(argv)

    bundle = json.loads((HERE / "manifest.json").read_text())
    version, version_source = tensorrt_version(a.trtexec_version)
    device, why = cuda_device_info()
    model = bundle["model"]
    manifest = {
        "kind": "engine",
        "flavour": "trt",
        "builder": "trtexec",
        "builder_version": version,
        "builder_version_source": version_source,
        "onnx": a.onnx.name,
        "onnx_sha256": sha256_file(a.onnx),
        "engine_sha256": sha256_file(a.engine),
        "engine_bytes": a.engine.stat().st_size,
        "precision": a.precision,
        "strongly_typed": not a.weak_typing,
        "min_batch": a.min_batch,
        "opt_batch": a.opt_batch,
        "max_batch": a.max_batch,
        "input": model["input"],
        "outputs": [model["output"]],
        "dla_core": a.dla,
        "gpu_fallback": True if a.dla is not None else None,
        "dla_placement": None if a.dla is None else dla_placement(a.dla_subgraphs, a.fell_back, model.get("nodes")),
        "target": {"hardware_compatibility": None,
                   "compute_capability": device["compute_capability"] if device else None},
        "build_gpu": device if device else f"unknown ({why})",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_metadata": model.get("metadata", {}),
    }
    write_manifest(a.engine, manifest)
    print(f"wrote {a.engine.name}.json (TensorRT {version}, batch {a.min_batch}/{a.opt_batch}/{a.max_batch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
