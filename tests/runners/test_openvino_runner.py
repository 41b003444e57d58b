"""The OpenVINO runner: the toolkit's FP32, FP16 and INT8 ONNX of the trained CIFAR ResNets at the
precision bars, the settings it chooses and reports, a wrong-shape batch, BF16 where the CPU has
none, and a missing ``openvino`` (doctor, the runner and the CLI say it cannot run here, exit 3).

The checks that need OpenVINO skip without it (``pip install -e '.[openvino]'``); those about a
missing OpenVINO hide it (``sys.modules["openvino"] = None``) and run everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from resnet_deploy import api, doctor
from resnet_deploy.cli import app
from resnet_deploy.compare import THRESHOLDS
from resnet_deploy.errors import BackendUnavailable, UserError
from resnet_deploy.runners import make_runner, open_runner, unavailable
from resnet_deploy.runners import openvino as ov_runner

CIFAR = Path(__file__).resolve().parents[1] / "data" / "cifar10-resnet"
CHECKPOINTS = {20: CIFAR / "resnet20-12fca82f.th", 56: CIFAR / "resnet56-4bfd9763.th"}
INSTALL = "pip install 'resnet-deploy[openvino]'"


@pytest.fixture(scope="module")
def ov():
    return pytest.importorskip("openvino", reason="needs OpenVINO: pip install -e '.[openvino]'")


@pytest.fixture(scope="module")
def cifar20(ov, tmp_path_factory):
    """The out dir holding the trained CIFAR ResNet-20's FP32 export (no precision extra needed)."""
    out = tmp_path_factory.mktemp("cifar-openvino")
    api.export(20, out_dir=out, weights=CHECKPOINTS[20])
    return out


@pytest.fixture(scope="module")
def cifar(cifar20):
    """The out dir holding the trained CIFAR ResNets exported, with FP16 and INT8 as the CLI makes them."""
    pytest.importorskip("modelopt.onnx.quantization", reason="needs the precision extra: pip install -e '.[precision,cpu]'")
    for depth, ckpt in CHECKPOINTS.items():
        api.quantize(depth, "fp16", out_dir=cifar20, weights=ckpt)
        api.quantize(depth, "int8", out_dir=cifar20, weights=ckpt)
    return cifar20


def fp32_onnx(out: Path, depth: int) -> Path:
    return out / f"resnet{depth}" / f"resnet{depth}.fp32.onnx"


@pytest.fixture()
def no_openvino(monkeypatch):
    """``import openvino`` fails, as where it is not installed."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    ov_runner._core.cache_clear()
    yield
    ov_runner._core.cache_clear()


# ------------------------------------------------------------------------------------------
# parity at the precision bars (trained networks: the bars are set on them)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", sorted(CHECKPOINTS))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trained_cifar_resnets_pass_the_bars_on_openvino(cifar, depth, precision):
    r = api.parity(depth, precision=precision, backend="openvino", weights=CHECKPOINTS[depth], out_dir=cifar)
    assert r["passed"], r["failures"]
    assert r["rel_l2"] <= THRESHOLDS[precision].rel_l2
    c = r["candidate"]
    assert c["backend"] == "openvino" and c["device"] == "CPU" and c["precision"] == precision
    # FP32, FP16 and INT8 artifacts compute in fp32 outside the INT8 convolutions, whatever OpenVINO's default is
    assert c["inference_precision"] == "fp32"


def test_bf16_execution_of_the_fp32_onnx_passes_the_bf16_bars(cifar20):
    if "BF16" not in ov_runner.optimization_capabilities("CPU"):
        pytest.skip("this CPU has no BF16 (OpenVINO capabilities: "
                    f"{', '.join(ov_runner.optimization_capabilities('CPU'))})")
    path = fp32_onnx(cifar20, 20)
    r = api.parity(20, backend="openvino", artifact=path, weights=CHECKPOINTS[20], out_dir=cifar20,
                   inference_precision="bf16")
    assert r["candidate"]["precision"] == "fp32" and r["candidate"]["inference_precision"] == "bf16"
    assert r["rel_l2"] > THRESHOLDS["fp32"].rel_l2  # it really ran in BF16 ...
    assert r["rel_l2"] <= THRESHOLDS["bf16"].rel_l2 and r["cosine"] >= THRESHOLDS["bf16"].cosine  # ... well


# ------------------------------------------------------------------------------------------
# settings: chosen, applied, read back
# ------------------------------------------------------------------------------------------


def test_describe_reports_artifact_and_inference_precision_hint_threads_streams(cifar20):
    path = fp32_onnx(cifar20, 20)
    r = make_runner("openvino", path, threads=1)
    before = r.describe()
    assert before["precision"] is None and before["performance_hint"] == "LATENCY" and before["threads"] == 1
    with r:
        d = r.describe()
    keys = ("precision", "inference_precision", "performance_hint", "threads", "streams", "cpu_pinning", "batch")
    assert {k: d[k] for k in keys} == {
        "precision": "fp32", "inference_precision": "fp32", "performance_hint": "LATENCY", "threads": 1, "streams": 1,
        "cpu_pinning": False, "batch": "dynamic"}  # the precision is read from the artifact when the caller does not say it
    assert d["notes"][0] == "fp32 inference, latency hint, 1 threads, 1 stream"
    # properties reach compile_model by name, over the runner's own choices
    with open_runner("openvino", path, properties={"ENABLE_CPU_PINNING": True}, streams=1) as pinned:
        assert pinned.describe()["cpu_pinning"] is True


def test_the_fp32_hint_is_set_not_left_to_openvino(cifar20, ov):
    """OpenVINO computes in bf16 by default on CPUs with BF16; the runner must not (FP32 bars)."""
    path = fp32_onnx(cifar20, 20)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with open_runner("openvino", path) as r:
        y = r.infer(x)
        compiled = r.compiled.get_property(ov.properties.hint.inference_precision)
    assert compiled == ov.Type.f32
    ort = pytest.importorskip("onnxruntime", reason="the FP32 reference here is ONNX Runtime's: pip install -e '.[cpu]'")
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.linalg.norm(y - want) / np.linalg.norm(want) <= THRESHOLDS["fp32"].rel_l2


def test_one_compiled_model_serves_every_batch_and_the_throughput_split_keeps_the_order(cifar20):
    path = fp32_onnx(cifar20, 20)
    x = np.random.default_rng(1).standard_normal((7, 3, 32, 32)).astype(np.float32)
    with open_runner("openvino", path) as lat, open_runner("openvino", path, hint="throughput", streams=2) as tp:
        compiled = lat.compiled
        want = np.concatenate([lat.infer(x[i:i + 1]) for i in range(len(x))])
        np.testing.assert_allclose(lat.infer(x), want, rtol=1e-4, atol=1e-4)
        assert lat.compiled is compiled  # no recompile per batch size
        assert tp.describe()["performance_hint"] == "THROUGHPUT" and tp.describe()["streams"] == 2
        np.testing.assert_allclose(tp.infer(x), want, rtol=1e-4, atol=1e-4)  # split over requests, back in order
        np.testing.assert_allclose(tp.infer(x[:1]), want[:1], rtol=1e-4, atol=1e-4)


def test_results_are_the_callers_own_though_inputs_and_outputs_are_shared_with_openvino(cifar20):
    """The runner hands OpenVINO the caller's batch without a copy and reads the output tensor in place: the
    logits returned must survive the next call, and the batch must come back unchanged."""
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    keep = x.copy()
    with open_runner("openvino", fp32_onnx(cifar20, 20)) as r:
        first = r.infer(x[:1])
        saved = first.copy()
        second = r.infer(x[1:])
        assert not np.shares_memory(first, second) and np.array_equal(first, saved)
        assert not np.allclose(first, second)
    assert np.array_equal(x, keep)


def test_a_wrong_shape_batch_is_refused_in_one_line(cifar20):
    with open_runner("openvino", fp32_onnx(cifar20, 20)) as r:
        with pytest.raises(UserError) as e:
            r.infer(np.zeros((2, 3, 224, 224), np.float32))
    assert str(e.value) == "expected a batch of shape [N, 3, 32, 32], got [2, 3, 224, 224]"


def test_bf16_is_refused_on_a_cpu_without_it(cifar20, monkeypatch):
    monkeypatch.setattr(ov_runner, "optimization_capabilities", lambda device="CPU": ("FP32", "INT8"))
    r = make_runner("openvino", fp32_onnx(cifar20, 20), inference_precision="bf16")
    with pytest.raises(BackendUnavailable) as e:
        r.open()
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    assert "inference_precision='bf16' needs CPU BF16 support, which this CPU lacks" in str(e.value)
    # a BF16 artifact there runs in fp32, and says so
    with open_runner("openvino", fp32_onnx(cifar20, 20), precision="bf16") as r:
        d = r.describe()
    assert d["inference_precision"] == "fp32" and "this CPU has no BF16: the BF16 artifact runs in fp32" in d["notes"]


def test_unknown_settings_are_refused(tmp_path):
    with pytest.raises(UserError, match="unknown OpenVINO performance hint 'fast'"):
        make_runner("openvino", tmp_path / "m.onnx", hint="fast")
    with pytest.raises(UserError, match="inference_precision 'int4' is not one of fp32, bf16, fp16"):
        make_runner("openvino", tmp_path / "m.onnx", inference_precision="int4")


# ------------------------------------------------------------------------------------------
# a missing openvino: cannot run here, with the install command (exit 3)
# ------------------------------------------------------------------------------------------


def test_a_missing_openvino_is_reported_by_the_runner(no_openvino, tmp_path):
    why = unavailable("openvino", "fp32")
    assert why is not None and "cannot run here" in why and INSTALL in why
    assert not ov_runner.OpenVinoRunner.in_default_sweep("openvino", False)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    with pytest.raises(BackendUnavailable) as e:
        open_runner("openvino", path, precision="fp32")
    assert e.value.exit_code == 3 and "cannot run here" in str(e.value) and INSTALL in str(e.value)
    d = make_runner("openvino", path).describe()  # describe() works without it: settings only
    assert d["backend"] == "openvino" and d["inference_precision"] is None and d["notes"] == []


def test_a_missing_openvino_is_reported_by_doctor(no_openvino):
    report = doctor.check()
    row = next(b for b in report["backends"] if b["name"] == "OpenVINO")
    assert row["installed"] is False and row["runs"] is False
    assert "cannot run here" in row["why"] and INSTALL in row["why"]
    assert row["note"] == report["cpu"]["summary"]  # what the CPU offers is said even without OpenVINO


def test_a_missing_openvino_exits_3_through_the_cli(exported, no_openvino, tmp_path):
    path = exported("resnet18")["path"]
    r = CliRunner().invoke(app, ["parity", "--depth", "18", "--engine", "openvino", "--onnx", str(path),
                                 "--out", str(tmp_path)])
    assert r.exit_code == 3, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip().startswith("error:")]
    assert len(lines) == 1 and "openvino is unavailable" in lines[0] and INSTALL in lines[0]


# ------------------------------------------------------------------------------------------
# doctor: the CPU's low-precision units, said plainly
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, says", [
    ("avx2 avx512f avx512_vnni avx512_bf16", "no AMX: INT8 runs on AVX-512 VNNI, BF16 on AVX512-BF16"),
    ("avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16", "AMX: INT8 and BF16 run on AMX tiles"),
    ("avx2 avx_vnni", "no AMX: INT8 runs on AVX-VNNI, no BF16 instructions (BF16 runs as FP32 or emulated)"),
    ("avx2", "no AMX: INT8 runs on AVX2 without VNNI, no BF16 instructions (BF16 runs as FP32 or emulated)"),
])
def test_doctor_says_what_the_cpu_has_and_lacks(tmp_path, flags, says):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    cpu = doctor.cpu_features(str(info))
    assert cpu["model"] == "Some CPU" and cpu["summary"] == says
    assert all(cpu["flags"][f] == (f in flags.split()) for f in doctor.CPU_FLAGS)


def test_doctor_lists_openvino_with_its_capabilities(ov):
    row = next(b for b in doctor.check()["backends"] if b["name"] == "OpenVINO")
    assert row["installed"] and row["runs"] and row["version"]
    assert "FP32" in row["optimization_capabilities"] and "OpenVINO CPU capabilities: " in row["note"]
