"""The seeded default ImageNet ResNets pass the FP16 bars (trained-network bars): a basic-block net,
a bottleneck net and the deepest, where plain initialisation overflowed FP16 (34 and 101 share
ResNet-18's and ResNet-50's blocks at a depth in between; `resnet-deploy quantize --depth D -p fp16 &&
resnet-deploy parity --depth D -p fp16` checks them by hand)."""

from __future__ import annotations

import pytest

from resnet_deploy import api
from resnet_deploy.api import quantize as ensure_precision

pytest.importorskip("modelopt.onnx.autocast", reason="needs the precision extra: pip install -e '.[precision,cpu]'")


@pytest.mark.parametrize("depth", [18, pytest.param(50, marks=pytest.mark.xdist_group("resnet50")),
                                   pytest.param(152, marks=pytest.mark.xdist_group("resnet152"))])
def test_seeded_default_passes_the_fp16_bars(exported, depth):
    exported(f"resnet{depth}")  # the session's FP32 export
    ensure_precision(depth, "fp16", out_dir=exported.root)
    r = api.parity(depth, precision="fp16", out_dir=exported.root)
    assert r["passed"], (r["failures"], r["rel_l2"], r["cosine"], r["top1_agreement"])
    assert r["finite"] and r["n"] == 68
