"""``quantize --int8-flavour ort-cpu``: ONNX Runtime's own static QDQ INT8 for its CPU provider, written beside the
TensorRT-placed INT8 ONNX, recorded as such, inside the INT8 bars on the trained CIFAR ResNet-20, and a broken copy
fails them. (Its speed, 2.4-2.9x ORT FP32 at batch 8, is measured in benchmarks/ort-int8-cpu, not asserted here.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from resnet_deploy import api
from resnet_deploy.compare import compare, parity_batch
from resnet_deploy.errors import UserError
from resnet_deploy.onnx_meta import read_metadata
from resnet_deploy.precision import coarsen_activation_scales
from resnet_deploy.preprocess import recipe_from_metadata
from resnet_deploy.runners import open_runner

pytest.importorskip("onnxruntime.quantization", reason="needs ONNX Runtime: pip install -e '.[cpu]'")
WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "cifar10-resnet" / "resnet20-12fca82f.th"


@pytest.fixture(scope="module")
def flavour(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ort-cpu")
    fp32 = api.export(20, weights=WEIGHTS, out_dir=out)
    return {"out": out, "fp32": Path(fp32["path"]),
            "int8": api.quantize(20, "int8", weights=WEIGHTS, out_dir=out, calib_samples=32, method="minmax",
                                  int8_flavour="ort-cpu")}


def test_written_beside_the_tensorrt_int8_and_recorded_for_its_runtime(flavour):
    m, path = flavour["int8"], Path(flavour["int8"]["path"])
    assert path.name == "resnet20.int8.ort-cpu.onnx" and not (path.parent / "resnet20.int8.onnx").exists()
    assert m["int8_flavour"] == "ort-cpu" and m["runtime"] == "ONNX Runtime CPU"
    assert m["request"]["int8_flavour"] == "ort-cpu" and m["conversion"]["per_channel"] is True
    meta = read_metadata(path)
    assert meta["precision"] == "int8" and meta["int8_flavour"] == "ort-cpu"
    # what ORT's CPU kernels take: U8 activations, S8 per-channel weights stored quantized
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    act_zp = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    weights = [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and inits[n.input[0]].ndim == 4]
    assert act_zp and all(z.dtype == np.uint8 for z in act_zp)
    assert weights and all(w.dtype == np.int8 for w in weights)
    assert all(inits[n.input[1]].size > 1 for n in model.graph.node if n.op_type == "DequantizeLinear"
               and n.input[0] in inits and inits[n.input[0]].ndim == 4)  # per-channel scales
    # asked again: reused, not re-quantized
    again = api.quantize(20, "int8", weights=WEIGHTS, out_dir=flavour["out"], calib_samples=32, method="minmax",
                         int8_flavour="ort-cpu")
    assert again["reused"] and again["sha256"] == m["sha256"]


def test_it_passes_the_int8_bars_on_ort_and_a_broken_copy_fails_them(flavour, tmp_path):
    path = Path(flavour["int8"]["path"])
    r = api.parity(20, weights=WEIGHTS, artifact=path, backend="ort", out_dir=flavour["out"])
    assert r["passed"] and r["precision"] == "int8", r["failures"]
    assert r["rel_l2"] > 1e-3  # INT8 numerics, not FP32 under an INT8 label
    broken = tmp_path / "scales_x4.onnx"
    coarsen_activation_scales(path, broken, 4)
    _, x = parity_batch(recipe_from_metadata(read_metadata(flavour["fp32"])))
    with open_runner("ort", flavour["fp32"]) as ref, open_runner("ort", broken) as bad:
        assert not compare(ref.infer(x), bad.infer(x), "int8").passed


@pytest.mark.parametrize("kw, says", [
    ({"precision": "int8", "int8_flavour": "tensorrt"}, "--int8-flavour must be one of trt, ort-cpu"),
    ({"precision": "fp16", "int8_flavour": "ort-cpu"}, "--int8-flavour ort-cpu applies to --precision int8 only"),
    ({"precision": "int8", "int8_flavour": "ort-cpu", "exclude": "layer3"}, "are for the TensorRT flavour"),
    ({"precision": "int8", "int8_flavour": "ort-cpu", "accuracy_target": 0.99}, "does not tune --int8-flavour ort-cpu"),
])
def test_requests_it_cannot_make_are_refused_before_any_work(kw, says, tmp_path):
    precision = kw.pop("precision")
    with pytest.raises(UserError, match=says):
        api.quantize(20, precision, weights=WEIGHTS, out_dir=tmp_path, **kw)
    assert not any(tmp_path.iterdir())
