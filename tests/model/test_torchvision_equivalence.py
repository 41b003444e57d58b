"""Every ImageNet architecture computes what torchvision's (SE-ResNet: timm's) own model code computes.

The reference logits were made once with torchvision's models (benchmarks/torchvision-equivalence/
reference.py, which says how) from a seeded state_dict on fixed inputs; here the same state_dict
goes into resnet_deploy's network, strict, and the logits must match. Removing any op of a block
(a ReLU, a BatchNorm, the residual sum, the projection) moves them far beyond the tolerance.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_deploy.model import ARCHS, OTHER_ARCHS, build_network

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = np.load(ROOT / "tests" / "data" / "torchvision_reference.npz")
_spec = importlib.util.spec_from_file_location("tv_reference", ROOT / "benchmarks" / "torchvision-equivalence" / "reference.py")
tv_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tv_reference)


def logits(arch: str) -> np.ndarray:
    model = build_network(arch).eval()
    model.load_state_dict(tv_reference.seeded_state_dict(model.state_dict()), strict=True)
    with torch.no_grad():
        return model(torch.from_numpy(tv_reference.reference_inputs())).numpy()


def test_the_reference_covers_every_architecture():
    assert set(ARCHS) | set(OTHER_ARCHS) <= set(REFERENCE.files) and "torchvision" in str(REFERENCE["__source__"])
    assert "timm" in str(REFERENCE["__source__"])


@pytest.mark.parametrize("arch", [*ARCHS, *OTHER_ARCHS])
def test_outputs_equal_torchvision(arch):
    want = REFERENCE[arch]
    got = logits(arch)
    assert got.shape == want.shape
    # float32 on another CPU may round differently; a missing op moves the logits by O(1)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), np.abs(got - want).max()
