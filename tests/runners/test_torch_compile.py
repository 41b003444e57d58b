"""torch.compile as bench runs it: one static graph per batch size on every device, counted and
timed, never a silent fall-back to eager, nothing of one model left for the next.

On the CPU (inductor with the C++ compiler); the GPU path is the same code plus CUDA graphs.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from resnet_deploy.runners.torch_runner import TorchRunner

pytestmark = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                reason="torch.compile on the CPU needs a C++ compiler (g++)")


def tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5)).eval()


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def test_one_static_graph_per_batch_size_counted_and_timed():
    model = tiny(0)
    with TorchRunner(model, backend="torch-compile", copy_model=True) as r:
        assert r.compile_stats() == {"graphs": 0, "seconds": 0.0}
        for n in (1, 1, 2, 2, 1):
            x = batch(n)
            with torch.no_grad():
                np.testing.assert_allclose(r.infer(x), model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
        stats = r.compile_stats()
        assert stats["graphs"] == 2 and stats["seconds"] > 0  # batch 1 and batch 2, each once: static shapes
        assert any("dynamic=False" in n for n in r.describe()["notes"])
    assert TorchRunner(model).compile_stats() is None  # eager: nothing compiled


def test_a_sweep_of_many_batch_sizes_stays_compiled_and_the_next_model_starts_fresh():
    """Dynamo's default limit is 8 recompiles per code object, across instances: a sweep of more
    batch sizes (or models) would silently run eager while labelled torch-compile."""
    import torch._dynamo as dynamo

    with TorchRunner(tiny(1), backend="torch-compile") as r:
        for n in range(1, 11):  # ten batch sizes, ten graphs
            r.infer(batch(n))
        assert r.compile_stats()["graphs"] == 10
        assert dynamo.config.fail_on_recompile_limit_hit is True  # a hit limit raises, never falls back
    with TorchRunner(tiny(2), backend="torch-compile") as r2:  # another model: dynamo was reset between them
        r2.infer(batch(3))
        assert r2.compile_stats()["graphs"] == 1


def test_the_recompile_limit_is_an_error_not_an_eager_fallback():
    import torch._dynamo as dynamo

    with TorchRunner(tiny(3), backend="torch-compile") as r:
        r.infer(batch(1))
        old = dynamo.config.recompile_limit
        dynamo.config.recompile_limit = 1
        try:
            with pytest.raises(Exception, match="(?i)recompile|limit"):
                r.infer(batch(2))
        finally:
            dynamo.config.recompile_limit = old
