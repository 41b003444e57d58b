"""The seeded default ImageNet ResNets pass the FP16 bars at every depth (trained-network bars)."""

from __future__ import annotations

import pytest

from resnet_deploy import api
from resnet_deploy.api import quantize as ensure_precision
from resnet_deploy.model import DEPTHS

pytest.importorskip("modelopt.onnx.autocast", reason="needs the precision extra: pip install -e '.[precision,cpu]'")


@pytest.mark.parametrize("depth", DEPTHS)
def test_seeded_default_passes_the_fp16_bars(exported, depth):
    exported(f"resnet{depth}")  # the session's FP32 export
    ensure_precision(depth, "fp16", out_dir=exported.root)
    r = api.parity(depth, precision="fp16", out_dir=exported.root)
    assert r["passed"], (r["failures"], r["rel_l2"], r["cosine"], r["top1_agreement"])
    assert r["finite"] and r["n"] == 68
