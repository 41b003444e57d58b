"""FP16/BF16 (ModelOpt AutoCast) and INT8 (ModelOpt PTQ) conversion of a small ResNet ONNX.

Needs the ``precision`` extra (``pip install -e '.[precision,cpu]'``); CI installs it, so
these tests run there. Everything runs on the CPU with ONNX Runtime's CPU provider.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="needs the precision extra: pip install -e '.[precision,cpu]'")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from resnet_deploy import precision  # noqa: E402
from resnet_deploy.errors import BackendUnavailable, UserError  # noqa: E402
from resnet_deploy.onnx_meta import detect_precision  # noqa: E402

HW = 32


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + identity)


class _TinyResNet(nn.Module):
    def __init__(self, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = _Block(width, width, 1)
        self.layer2 = _Block(width, 2 * width, 2)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randn(n, 3, HW, HW).astype(np.float32)


def _run(path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ORT warns about FP16 constants it cannot fold on the CPU
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    assert np.isfinite(b).all(), "NaN/Inf in the converted model's output"
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("precision")


@pytest.fixture(scope="module")
def fp32_onnx(work):
    torch.manual_seed(0)
    model = _TinyResNet()
    model.train()  # realistic BatchNorm statistics (random init alone lets activations grow)
    with torch.no_grad():
        for i in range(4):
            model(torch.from_numpy(_images(16, 100 + i)))
    model.eval()
    path = work / "tiny.fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is deprecated, still supported
        torch.onnx.export(model, torch.from_numpy(_images(1, 0)), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def calib():
    return _images(16, 1)


@pytest.fixture(scope="module")
def test_x():
    return _images(8, 2)


@pytest.fixture(scope="module")
def fp16(work, fp32_onnx):
    dst = work / "out" / "tiny.fp16.onnx"
    return dst, precision.convert_fp16(fp32_onnx, dst)


@pytest.fixture(scope="module")
def int8(work, fp32_onnx, calib):
    dst = work / "out" / "tiny.int8.onnx"
    return dst, precision.quantize_int8(fp32_onnx, dst, calib, method="entropy", high_precision="fp32")


def test_fp16_agrees_with_fp32(fp32_onnx, fp16, test_x):
    dst, facts = fp16
    ref, out = _run(fp32_onnx, test_x), _run(dst, test_x)
    assert out.dtype == np.float32  # keep_io_types: float32 in and out
    assert _rel_l2(ref, out) < 1e-2
    assert facts["tool"] == "nvidia-modelopt" and facts["tool_version"]
    assert facts["precision"] == "fp16" and facts["seconds"] >= 0
    assert facts["nodes_low_precision"] == facts["nodes_total"] > 0
    model = onnx.load(str(dst))
    assert {i.name for i in model.graph.input} == {"input"}
    assert {o.name for o in model.graph.output} == {"logits"}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def test_bf16_agrees_with_fp32(work, fp32_onnx, test_x):
    dst = work / "out" / "tiny.bf16.onnx"
    facts = precision.convert_fp16(fp32_onnx, dst, low_precision="bf16")
    assert facts["precision"] == "bf16" and detect_precision(dst) == "bf16"
    # ORT's CPU provider has no BF16 Conv; ONNX's reference evaluator runs it (slowly, so 2 images).
    from onnx.reference import ReferenceEvaluator
    out = ReferenceEvaluator(str(dst)).run(None, {"input": test_x[:2]})[0]
    assert _rel_l2(_run(fp32_onnx, test_x[:2]), out) < 3e-2


def test_int8_has_qdq_and_agrees_roughly(fp32_onnx, int8, test_x):
    dst, facts = int8
    model = onnx.load(str(dst))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") > 0
    assert facts["qdq"]["quantize_linear"] == ops.count("QuantizeLinear")
    assert facts["qdq"]["quantized_ops"]["Conv"] == ops.count("Conv")  # every Conv reads dequantized data

    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        scale, zero_point = inits[dq.input[1]], inits[dq.input[2]]
        # weights: FP32 initializer -> QuantizeLinear -> DequantizeLinear (or INT8 initializer -> DQ)
        weight = producer[dq.input[0]].input[0] if dq.input[0] in producer else dq.input[0]
        out_channels = inits[weight].shape[0]
        assert scale.shape == (out_channels,)  # per output channel
        assert zero_point.dtype == np.int8 and not zero_point.any()  # symmetric INT8
        act = producer[conv.input[0]]
        assert act.op_type == "DequantizeLinear" and inits[act.input[1]].size == 1  # per-tensor activations

    ref, out = _run(fp32_onnx, test_x), _run(dst, test_x)
    assert _rel_l2(ref, out) < 0.1
    assert (ref.argmax(1) == out.argmax(1)).mean() >= 0.75
    assert facts["calibration_method"] == "entropy" and facts["calibration_images"] == 16


def test_int8_with_fp16_high_precision_runs_quietly(work, fp32_onnx, calib, test_x, capfd):
    dst = work / "out" / "tiny.int8-fp16.onnx"
    facts = precision.quantize_int8(fp32_onnx, dst, calib[:4], method="max")
    assert capfd.readouterr() == ("", "")  # ModelOpt logging, ORT prints and tqdm bars held back
    assert facts["high_precision"] == "fp16" and facts["calibration_method"] == "max"
    assert detect_precision(dst) == "int8"
    assert _rel_l2(_run(fp32_onnx, test_x), _run(dst, test_x)) < 0.1


def test_detect_precision(fp32_onnx, fp16, int8):
    assert detect_precision(fp32_onnx) == "fp32"
    assert detect_precision(fp16[0]) == "fp16"
    assert detect_precision(int8[0]) == "int8"
    assert detect_precision(onnx.load(str(int8[0]))) == "int8"


def test_refuses_sources_that_are_not_fp32(work, fp16, int8, calib):
    dst = work / "refused" / "x.onnx"
    with pytest.raises(UserError, match="already INT8"):
        precision.quantize_int8(int8[0], dst, calib)
    with pytest.raises(UserError, match="already FP16"):
        precision.quantize_int8(fp16[0], dst, calib)
    with pytest.raises(UserError, match="already INT8"):
        precision.convert_fp16(int8[0], dst)
    assert not dst.exists()


def test_rejects_bad_arguments(work, fp32_onnx, calib):
    dst = work / "bad" / "x.onnx"
    with pytest.raises(UserError, match="unknown calibration method"):
        precision.quantize_int8(fp32_onnx, dst, calib, method="mse")
    with pytest.raises(UserError, match="percentile must be"):
        precision.quantize_int8(fp32_onnx, dst, calib, method="percentile", percentile=30)
    with pytest.raises(UserError, match="expects"):
        precision.quantize_int8(fp32_onnx, dst, np.zeros((4, 3, HW + 1, HW), np.float32))
    with pytest.raises(UserError, match="NaN"):
        precision.quantize_int8(fp32_onnx, dst, np.full((2, 3, HW, HW), np.nan, np.float32))
    with pytest.raises(UserError, match="low_precision"):
        precision.convert_fp16(fp32_onnx, dst, low_precision="fp8")
    with pytest.raises(UserError, match="not found"):
        precision.convert_fp16(work / "missing.onnx", dst)
    assert not dst.exists()


def test_failed_quantization_leaves_nothing_behind(work, fp32_onnx, calib, monkeypatch):
    import modelopt.onnx.quantization as mq

    dst = work / "atomic" / "tiny.int8.onnx"
    dst.parent.mkdir()
    dst.write_bytes(b"previous artifact")

    def boom(*, output_path, **kwargs):
        with open(output_path, "wb") as f:
            f.write(b"half-written")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(mq, "quantize", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        precision.quantize_int8(fp32_onnx, dst, calib)
    assert dst.read_bytes() == b"previous artifact"
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]


def test_outputs_leave_no_temporary_files(fp16, int8):
    folder = fp16[0].parent
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_missing_modelopt_is_backend_unavailable(monkeypatch, fp32_onnx, work):
    monkeypatch.setitem(sys.modules, "modelopt.onnx.autocast", None)  # makes the import fail
    with pytest.raises(BackendUnavailable, match=r"resnet-deploy\[precision\]"):
        precision.convert_fp16(fp32_onnx, work / "none.onnx")
    ok, reason = precision.modelopt_available()
    assert not ok and "precision" in reason


def _activation_scales(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {i.name: float(numpy_helper.to_array(i)) for i in model.graph.initializer
            if i.name.endswith("_scale") and numpy_helper.to_array(i).size == 1}


def test_percentile_calibration_clips_below_minmax(work, fp32_onnx, calib):
    """Percentile ranges (ONNX Runtime) reach ModelOpt's Q/DQ model: each activation scale is at
    most min-max's, some strictly below, and the model still computes the FP32 function."""
    pct = precision.quantize_int8(fp32_onnx, work / "pct.onnx", calib, method="percentile", percentile=99.0,
                                  high_precision="fp32")
    precision.quantize_int8(fp32_onnx, work / "max.onnx", calib, method="max", high_precision="fp32")
    assert pct["calibration_method"] == "percentile" and pct["percentile"] == 99.0
    a, b = _activation_scales(work / "pct.onnx"), _activation_scales(work / "max.onnx")
    assert a.keys() == b.keys() and a
    assert all(a[k] <= b[k] * (1 + 1e-6) for k in a)
    assert any(a[k] < b[k] * 0.99 for k in a), "percentile gave the min-max ranges"
    assert detect_precision(work / "pct.onnx") == "int8"
