"""The torch-free claims, tested: each module whose docstring says it imports no torch is imported
in a fresh interpreter, and ``torch`` must not be in ``sys.modules`` afterwards.

The README says the TensorRT runner imports no torch, so edge applications embed it; the edge
bundle (``deploy/templates/infer.py`` with its vendored copies) is checked with torch blocked by
``tests/deploy/test_deploy.py::test_bundle_imports_without_torch``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "resnet_deploy"

# Module -> where the claim is made.
CLAIMS = {
    "resnet_deploy": "__init__: 'imported lazily so torch-free parts ... work on machines without torch'",
    "resnet_deploy.runners": "'Torch-free at import time'",
    "resnet_deploy.runners.base": "'numpy only: the torch-free edge runner builds on it'",
    "resnet_deploy.runners.tensorrt": "'No torch.' (README: 'the TensorRT runner imports no torch')",
    "resnet_deploy.runners.tensorrt_loader": "'No torch.'",
    "resnet_deploy.runners.device_buffers": "'no torch, no TensorRT'",
    "resnet_deploy.runners.openvino": "the OpenVINO runner reads the toolkit's ONNX on CPU servers without torch",
    "resnet_deploy.runners.ort": "the runner registry loads it for ONNX artifacts without torch (README: edge and CPU servers)",
    "resnet_deploy.runners.triton": "the Triton client runner: a served model reached without torch",
    "resnet_deploy._native": "'torch-free and builder-free'",
    "resnet_deploy._native.cuda": "the _native package's claim",
    "resnet_deploy._native.trt": "the _native package's claim",
    "resnet_deploy._native.trt_api": "the _native package's claim",
    "resnet_deploy.artifacts": "'Torch-free and onnx-free: the edge bundle vendors this module'",
    "resnet_deploy.schema": "'Torch-free, standard library only (the edge bundle vendors it)'",
    "resnet_deploy.limits": "'Torch-free' (the bounds flags are checked against)",
    "resnet_deploy.onnx_meta": "'Torch-free'",
    "resnet_deploy.preprocess": "'Pillow and numpy only (no torch)'",
    "resnet_deploy.classify": "'numpy only, torch-free'",
    "resnet_deploy.labels": "'Torch-free (the edge bundle's infer.py uses it too)'",
    "resnet_deploy.datasets": "'Torch-free'",
    "resnet_deploy.versions": "'the torch-free runner and the Jetson bundle's tools may use it'",
    "resnet_deploy.engine": "'Torch-free'",
    "resnet_deploy.engine.build": "'Torch-free'",
    "resnet_deploy.precision": "'Torch-free'",
    "resnet_deploy.precision.faults": "'Torch-free'",
    "resnet_deploy.precision.calib": "'Torch-free'",
    "resnet_deploy.bench.timing": "'Torch-free and GPU-free at import time' (bench/__init__ loads the harness lazily)",
    "resnet_deploy.bench.rows": "'torch-free' (the typed rows the report and bench-merge read)",
    "resnet_deploy.bench.loadgen": "'Torch-free' (MLPerf LoadGen's SUT around any runner's timed path)",
    "resnet_deploy.bench.perf_analyzer": "'Torch-free' (NVIDIA perf_analyzer's sweep of a served model)",
}
# Docstrings that use the words about something else, or whose claim another test guards.
NOT_CLAIMS = {
    "resnet_deploy.deploy.jetson": "speaks of the runner it vendors (tests/deploy checks the bundle)",
}
CLAIM = re.compile(r"torch-free|\bno torch\b|\bwithout torch\b", re.IGNORECASE)


def imports_torch(module: str) -> list[str]:
    """The torch modules a fresh interpreter holds after ``import module`` (run from an empty folder)."""
    code = (f"import sys, {module}; "
            "print(' '.join(sorted(k for k in sys.modules if k.split('.')[0] == 'torch')))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT / "tests",
                         timeout=300)
    assert res.returncode == 0, f"import {module} failed:\n{res.stderr[-2000:]}"
    return res.stdout.split()


@pytest.mark.parametrize("module", sorted(CLAIMS))
def test_claimed_torch_free_module_imports_without_torch(module):
    loaded = imports_torch(module)
    assert not loaded, f"{module} claims to be torch-free ({CLAIMS[module]}) but importing it loads {loaded[:5]}"


def docstring_claims() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if "templates" in path.parts:
            continue  # the edge bundle's files are not modules of the package
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if CLAIM.search(doc):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found.add(".".join(parts))
    return found


def test_every_docstring_claim_is_tested():
    untested = docstring_claims() - set(CLAIMS) - set(NOT_CLAIMS)
    assert not untested, f"these modules say they are torch-free; add them to CLAIMS: {sorted(untested)}"


def test_the_check_sees_torch():
    """The checker itself: a module that does import torch is caught (else every test above passes vacuously)."""
    pytest.importorskip("torch")
    assert "torch" in imports_torch("resnet_deploy.runners.torch_runner")
    assert {"resnet_deploy.runners.tensorrt", "resnet_deploy.preprocess"} <= docstring_claims()
