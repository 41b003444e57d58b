"""`resnet-deploy build` and `resnet-deploy doctor`: JSON output, reuse, one clear line per bad input.

Engines are built with TensorRT-RTX on the CPU (skipped without ``tensorrt-rtx``). The FP32 and
FP16 ONNX files come from the session-wide exports (conftest ``exported``), so ResNet-18 is
exported and converted once for the whole suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resnet_deploy._native.cuda import cuda_device_info
from resnet_deploy._native.trt import RTX_DEFAULT_TARGETS
from resnet_deploy.artifacts import manifest_path, read_manifest, sha256_file
from resnet_deploy.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(r, code):
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip().startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture(scope="module")
def rtx():
    return pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")


@pytest.fixture(scope="module")
def built18(rtx, exported):
    """`build --depth 18 --precision fp16 --engine trt-rtx` once; the FP16 ONNX is made if missing."""
    exported("resnet18")
    root = exported.root
    r = invoke("build", "--depth", 18, "--precision", "fp16", "--engine", "trt-rtx", "--max-batch", 4, "--out", root, "--json")
    assert r.exit_code == 0, r.output
    return root, json.loads(r.stdout)


def test_build_json_and_files(built18, rtx):
    root, d = built18
    path = Path(d["path"])
    assert path == root / "resnet18" / "resnet18.fp16.trt-rtx.engine" and path.is_file()
    assert d["flavour"] == "trt-rtx" and d["builder_version"] == rtx.__version__ and d["precision"] == "fp16"
    assert (d["min_batch"], d["opt_batch"], d["max_batch"]) == (1, 4, 4)
    assert d["onnx"] == str(root / "resnet18" / "resnet18.fp16.onnx") and d["onnx_sha256"] == sha256_file(d["onnx"])
    assert d["engine_sha256"] == sha256_file(path) and read_manifest(path)["engine_sha256"] == d["engine_sha256"]
    assert d["source_metadata"]["arch"] == "resnet18" and d["source_metadata"]["precision"] == "fp16"
    assert d["target"]["compute_capabilities"] == list(RTX_DEFAULT_TARGETS)


def test_build_reuses_then_rebuilds_with_reason(built18):
    root, first = built18
    base = ("build", "--depth", 18, "--precision", "fp16", "--engine", "trt-rtx", "--out", root, "--json")
    r = invoke(*base, "--max-batch", 4)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["reused"] is True and d["rebuild_reason"] is None and d["engine_sha256"] == first["engine_sha256"]
    r = invoke(*base, "--max-batch", 4, "--cc", "8.6,8.9")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["reused"] is False and d["rebuild_reason"].startswith("target changed")
    assert d["target"] == {"compute_capabilities": ["8.6", "8.9"], "explicit": True}
    r = invoke(*base, "--max-batch", 4, "--cc", "8.6,8.9", "--force")
    assert r.exit_code == 0 and json.loads(r.stdout)["rebuild_reason"] == "forced (--force)"


def test_build_human_output(built18):
    root, _ = built18
    r = invoke("build", "--depth", 18, "--precision", "fp16", "--engine", "trt-rtx", "--max-batch", 4, "--cc", "8.6,8.9", "--out", root)
    assert r.exit_code == 0, r.output
    assert "reused" in r.stdout and "tensorrt_rtx" in r.stdout and "min 1 / opt 4 / max 4" in r.stdout


def test_parity_on_engine_without_gpu_is_one_line(built18):
    if cuda_device_info()[0] is not None:
        pytest.skip("a CUDA device is present: parity on the engine can really run here")
    root, _ = built18
    r = invoke("parity", "--depth", 18, "--precision", "fp16", "--engine", "trt-rtx", "--out", root)
    line = one_line_error(r, 3)
    assert "trt-rtx is unavailable: no CUDA device" in line and "resnet-deploy doctor" in line


def test_parity_on_truncated_engine_is_one_line(built18, tmp_path):
    root, d = built18
    src = Path(d["path"])
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[:4096])
    manifest_path(bad).write_text(manifest_path(src).read_text())
    r = invoke("parity", "--depth", 18, "--engine", "trt-rtx", "--onnx", bad, "--out", root)
    assert "truncated or replaced, rebuild it" in one_line_error(r, 2)


def test_precision_mismatch_is_one_line(built18, tmp_path):
    root, _ = built18
    r = invoke("build", "--depth", 18, "--precision", "int8", "--engine", "trt-rtx", "--onnx",
               root / "resnet18" / "resnet18.fp16.onnx", "--out", tmp_path)
    assert "records precision fp16" in one_line_error(r, 2) and not list(tmp_path.rglob("*.engine"))


def test_unwritable_out_is_one_line(built18, tmp_path):
    root, _ = built18
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = invoke("build", "--depth", 18, "--precision", "fp16", "--engine", "trt-rtx", "--onnx",
               root / "resnet18" / "resnet18.fp16.onnx", "--out", blocker)
    assert "cannot create output folder" in one_line_error(r, 2)


@pytest.mark.parametrize("args, code, text", [
    (("--engine", "trt-rtx", "--cc", "9.0"), 2, "cannot target compute capability 9.0"),
    (("--engine", "trt-rtx", "--hardware-compat", "ampere+"), 2, "not supported by TensorRT-RTX"),
    (("--engine", "trt", "--cc", "8.6"), 2, "apply to trt-rtx"),
    (("--engine", "trt-rtx", "--min-batch", 8, "--max-batch", 2), 2, "min <= opt <= max"),
    (("--engine", "trt-rtx", "--opt-level", 7), 2, "--opt-level must be 0..5"),
    (("--engine", "onnxruntime"), 2, "unknown engine flavour"),
    (("--engine", "trt-rtx", "--precision", "fp8"), 2, "unknown precision"),
    (("--engine", "trt-rtx", "--dla-core", 0), 2, "TensorRT-RTX has no DLA"),
    (("--engine", "trt", "--dla-core", 0, "--precision", "fp32"), 2, "DLA runs FP16 and INT8 only"),
    (("--engine", "trt", "--no-gpu-fallback"), 2, "only applies to DLA builds"),
    (("--engine", "trt-rtx", "--legacy-precision-flags"), 2, "no weak typing"),
])
def test_bad_build_options_are_one_line(built18, tmp_path, args, code, text):
    root, _ = built18
    r = invoke("build", "--depth", 18, "--onnx", root / "resnet18" / "resnet18.fp16.onnx", "--precision", "fp16",
               "--out", tmp_path, *args)
    assert text in one_line_error(r, code)
    assert not list(tmp_path.rglob("*.engine"))


def test_trt_flavour_here_points_to_doctor(tmp_path):
    try:
        import tensorrt  # noqa: F401

        if cuda_device_info()[0] is not None:
            pytest.skip("TensorRT and a GPU are present: building with trt works here")
    except Exception:  # noqa: BLE001 - tensorrt missing, or its libraries do not load
        pass
    r = invoke("build", "--depth", 18, "--precision", "fp16", "--engine", "trt", "--out", tmp_path)
    line = one_line_error(r, 3)
    assert line.startswith("error: trt is unavailable") and "resnet-deploy doctor" in line
    assert not any(tmp_path.rglob("*.onnx")), "a missing TensorRT must be reported before any ONNX work"


def test_doctor_json():
    r = invoke("doctor", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    names = [b["name"] for b in d["backends"]]
    for want in ("PyTorch CPU", "PyTorch CUDA", "torch.compile", "ONNX Runtime", "ONNX Runtime CUDA EP",
                 "TensorRT", "TensorRT-RTX", "ModelOpt", "cuda-python"):
        assert want in names
    for b in d["backends"]:
        assert isinstance(b["runs"], bool) and (b["runs"] or b["why"]), b
    by = {b["name"]: b for b in d["backends"]}
    torch = pytest.importorskip("torch")
    assert by["PyTorch CPU"]["runs"] and by["PyTorch CPU"]["version"] == torch.__version__
    ort = pytest.importorskip("onnxruntime")
    assert by["ONNX Runtime"]["version"] == ort.__version__ and "CPUExecutionProvider" in by["ONNX Runtime"]["providers"]
    if d["gpu"]["device"] is None:
        assert d["gpu"]["why"].startswith(("no CUDA device", "cuda-python is not installed"))
        assert not by["PyTorch CUDA"]["runs"] and not by["TensorRT"]["runs"]
    try:
        import tensorrt_rtx
    except ImportError:
        return
    rtx = by["TensorRT-RTX"]
    assert rtx["installed"] and rtx["version"] == tensorrt_rtx.__version__ and rtx["builds"] is True
    assert "9.0" not in rtx["targets"] and "8.6" in rtx["targets"]
    if d["gpu"]["device"] is None:
        assert not rtx["runs"] and "no CUDA device" in rtx["why"]


def test_doctor_says_rtx_refuses_hopper(monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    import resnet_deploy.doctor as doctor

    h100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "total_memory_mib": 81559}
    monkeypatch.setattr(doctor, "cuda_device_info", lambda i=0: (h100, ""))
    rtx = next(b for b in doctor.check()["backends"] if b["name"] == "TensorRT-RTX")
    assert not rtx["runs"] and "compute capability 9.0" in rtx["why"] and "not supported by TensorRT-RTX" in rtx["why"]
    ada = {**h100, "name": "NVIDIA L4", "compute_capability": "8.9"}
    monkeypatch.setattr(doctor, "cuda_device_info", lambda i=0: (ada, ""))
    assert next(b for b in doctor.check()["backends"] if b["name"] == "TensorRT-RTX")["runs"]


def test_doctor_table():
    r = invoke("doctor")
    assert r.exit_code == 0, r.output
    assert "TensorRT-RTX" in r.stdout and "ONNX Runtime" in r.stdout and "runs here" in r.stdout


def test_doctor_says_when_cuda_python_is_newer_than_the_driver():
    """cuda-python 13 on JetPack 6's CUDA 12 driver fails with cudaErrorInsufficientDriver: say which to install."""
    from resnet_deploy.doctor import driver_mismatch

    assert driver_mismatch("13.4.4", "12.6") == ("cuda-python 13.4.4 needs a CUDA 13 driver, this driver supports CUDA "
                                                 "12.6: pip install 'cuda-python>=12,<13'")
    assert driver_mismatch("12.9.0", "13.0") == "" and driver_mismatch("13.0.1", "13.0") == ""
    assert driver_mismatch("13.4.4", None) == "" and driver_mismatch(None, "12.6") == ""
