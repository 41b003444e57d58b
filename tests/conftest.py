import os
from pathlib import Path

import pytest
import torch
from fakes import install_fake_tensorrt, make_tiny_onnx

from resnet_deploy.api import export as export_model
from resnet_deploy.api import quantize as ensure_precision
from resnet_deploy.engine import BuildOptions, build_engine, engine_path_for
from resnet_deploy.precision import modelopt_available

# The README's test command runs the suite in parallel (pytest-xdist, one worker per core). Each worker
# then computes with its share of the cores: torch and ONNX Runtime sessions (the toolkit's runners and
# ModelOpt's calibration alike) default to every core and spin-wait, and two workers each spinning on both
# cores of the 2-core CI machine ran the suite no faster than one worker. A runner given explicit threads
# (bench --threads, timing_options) still gets them.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
torch.set_num_threads(THREADS)
if WORKERS > 1:
    import onnxruntime as _ort

    class _WorkerSessionOptions(_ort.SessionOptions):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.intra_op_num_threads = THREADS
            self.inter_op_num_threads = 1
            self.add_session_config_entry("session.intra_op.allow_spinning", "0")

    _ort.SessionOptions = _WorkerSessionOptions


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export each architecture once per session: {arch: manifest}."""
    import resnet_deploy as rd

    root = tmp_path_factory.mktemp("engines")
    cache: dict[str, dict] = {}

    def get(arch: str) -> dict:
        if arch not in cache:
            cache[arch] = rd.export(arch, out_dir=root)
        return cache[arch]

    get.root = root
    return get


# The project's own models as engines: FP32 from the session's `exported`, FP16/INT8 from the pipeline's
# precision stage (ModelOpt AutoCast / PTQ on 16 bundled-photo views), each made once per session;
# TensorRT-RTX builds them on the CPU.

@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


CALIB_SAMPLES = 16


@pytest.fixture(scope="session")
def real_onnx(exported):
    """``real_onnx("resnet50", "int8") -> Path`` of the project's own precision ONNX."""
    cache: dict[tuple[str, str], Path] = {}

    def get(arch: str, precision: str) -> Path:
        if (arch, precision) not in cache:
            exported(arch)  # the FP32 export, shared with the rest of the suite
            if precision == "fp32":
                cache[arch, precision] = Path(exported(arch)["path"])
            else:
                ok, why = modelopt_available()
                if not ok:
                    pytest.skip(f"ModelOpt is needed to make the {precision} ONNX: {why}")
                m = ensure_precision(arch, precision, out_dir=exported.root, calib_samples=CALIB_SAMPLES)
                cache[arch, precision] = Path(m["path"])
        return cache[arch, precision]

    return get


@pytest.fixture(scope="session")
def real_engine(rtx, real_onnx, tmp_path_factory):
    """``real_engine("resnet18", "fp16") -> (path, manifest)``: a TensorRT-RTX engine built on the CPU, once."""
    root = tmp_path_factory.mktemp("real-engines")
    cache: dict[tuple[str, str], tuple[Path, dict]] = {}

    def get(arch: str, precision: str):
        if (arch, precision) not in cache:
            path = engine_path_for(arch, precision, "trt-rtx", root)
            m = build_engine(real_onnx(arch, precision), path, BuildOptions(flavour="trt-rtx", max_batch=4),
                                 precision=precision)
            cache[arch, precision] = (path, m)
        return cache[arch, precision]

    return get


@pytest.fixture(scope="session")
def resnet18_onnx(real_onnx) -> Path:
    return real_onnx("resnet18", "fp32")


@pytest.fixture(scope="session")
def model_onnx(resnet18_onnx) -> Path:
    """The dynamic-batch FP32 model most builder tests compile: the project's real ResNet-18 export."""
    return resnet18_onnx


@pytest.fixture(scope="session")
def fixed_onnx(models_dir) -> Path:
    return make_tiny_onnx(models_dir / "tiny_b4.fp32.onnx", batch=4)


@pytest.fixture(scope="session")
def rtx():
    return pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx); its builder runs on CPU")


@pytest.fixture(scope="session")
def built(rtx, model_onnx, tmp_path_factory):
    """One RTX engine built once for the tests that only read it."""
    out = tmp_path_factory.mktemp("engines") / "resnet18.fp32.trt-rtx.engine"
    events = []
    manifest = build_engine(model_onnx, out, BuildOptions(flavour="trt-rtx"), precision="fp32",
                                progress=lambda phase, step, total: events.append((phase, step, total)))
    return out, manifest, events


@pytest.fixture()
def fake_runner_env(tmp_path, monkeypatch):
    """The TensorRT runner over the fake cudart / TensorRT: ``(runner module, engine path, cudart)``."""
    return install_fake_tensorrt(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def r18(tmp_path_factory):
    """ResNet-18 FP32/FP16/INT8 artifacts in one engines folder (INT8 calibrated on bundled photos)."""
    root = tmp_path_factory.mktemp("qengines")
    export_model(18, out_dir=root)
    fp16 = ensure_precision(18, "fp16", out_dir=root)
    int8 = ensure_precision(18, "int8", out_dir=root, calib_samples=32)
    return root, fp16, int8
