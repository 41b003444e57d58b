"""PyTorch's own BF16 on the CPU (``torch.autocast('cpu', dtype=torch.bfloat16)``), a peer of OpenVINO's BF16:
the trained CIFAR ResNet-20 at the BF16 bars, eager and through torch.compile, and a CPU without BF16 units
told what it lacks instead of "not a deployment path".
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnet_deploy import pipeline
from resnet_deploy.compare import compare, parity_batch
from resnet_deploy.model import ModelRef
from resnet_deploy.runners import open_runner, torch_runner, unavailable

CKPT = Path(__file__).resolve().parents[1] / "data" / "cifar10-resnet" / "resnet20-12fca82f.th"
needs_bf16 = pytest.mark.skipif(torch_runner.cpu_bf16_units() is None, reason="this CPU has no AVX512-BF16 or AMX")


@pytest.fixture(scope="module")
def cifar20():
    model = pipeline.load_model(ModelRef.of(20, weights=CKPT))
    _, x = parity_batch(model.card.recipe)
    with open_runner("torch", model, precision="fp32", copy_model=True) as r:
        return model, x, r.infer(x)


def run_bf16(backend: str, model, x):
    with open_runner(backend, model, precision="bf16", copy_model=True) as r:
        return r.infer(x), r.describe()


@needs_bf16
def test_cpu_bf16_autocast_passes_the_bf16_bars_and_is_bf16(cifar20):
    model, x, want = cifar20
    got, d = run_bf16("torch", model, x)
    res = compare(want, got, "bf16")
    assert res.passed, res.failures
    assert res.rel_l2 > 1e-4  # it computed in BF16, not FP32 under a BF16 label
    assert d["precision"] == "bf16" and d["notes"][0].startswith(torch_runner.CPU_AUTOCAST)
    assert next(model.parameters()).dtype.is_floating_point and str(next(model.parameters()).dtype) == "torch.float32"


@needs_bf16
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs g++")
def test_cpu_bf16_through_torch_compile_is_bf16_inside_the_graph():
    """A tiny seeded net (compiling ResNet-20 takes ~20 s here): the compiled graph computes what eager autocast does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with open_runner("torch", model, precision="fp32", copy_model=True) as r:
        want = r.infer(x)
    eager, _ = run_bf16("torch", model, x)
    got, d = run_bf16("torch-compile", model, x)
    assert compare(want, got, "bf16").passed and compare(want, got, "bf16").rel_l2 > 1e-4  # BF16, not FP32
    np.testing.assert_allclose(got, eager, rtol=0.05, atol=0.02 * np.abs(eager).max())
    assert d["notes"][0].startswith(torch_runner.CPU_AUTOCAST) and any("torch.compile" in n for n in d["notes"])


def test_bf16_is_offered_where_the_cpu_has_it_and_says_what_it_lacks_elsewhere(monkeypatch):
    monkeypatch.setattr(torch_runner, "cuda_available", lambda: False)
    monkeypatch.setattr(torch_runner, "cpu_bf16_units", lambda: "AMX")
    assert unavailable("torch", "bf16") is None and unavailable("torch-compile", "bf16") is None
    monkeypatch.setattr(torch_runner, "cpu_bf16_units", lambda: None)
    why = unavailable("torch", "bf16")
    assert why is not None and "lacks AVX512-BF16 and AMX" in why and "not a deployment path" not in why
    assert "not a deployment path" in unavailable("torch", "fp16")  # FP16: no CPU kernels at all
