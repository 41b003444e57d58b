"""Engine builder and TensorRT runner tests.

Engines are really built with TensorRT-RTX, whose builder runs on the CPU (``pip install
tensorrt-rtx``); those tests skip when it is missing. The models are the project's own: ResNet-18
and ResNet-50 exported with ``api.export`` and converted to FP16/INT8 with
``quantize.ensure_precision_onnx`` once per session (a tiny hand-made net remains only where a
test must edit the graph or needs an ONNX without metadata). Executing an engine needs a CUDA GPU that the
engine's flavour supports: such tests skip with the reason (run ``pytest -rs`` to see it). The
runner's data path (bindings, profile checks, copies, CUDA-graph capture and replay) is also
exercised against a small fake of the TensorRT and cuda-python APIs, so it is covered everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from resnet_deploy import engine as eng
from resnet_deploy.artifacts import manifest_path, read_manifest, sha256_file, write_manifest
from resnet_deploy.errors import BackendUnavailable, UserError

onnx = pytest.importorskip("onnx", reason="onnx is needed to make test models")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

IMAGE = 16
CLASSES = 10


# ------------------------------------------------------------------------------------------
# Test models
# ------------------------------------------------------------------------------------------


def make_tiny_onnx(path: Path, *, batch: int | str = "N", precision: str = "fp32", seed: int = 0) -> Path:
    """A conv -> relu -> pool -> gemm net with input ``input`` [N,3,16,16] and output ``logits``.

    ``fp16``: FP16 weights and compute with FP32 I/O (what AutoCast keep_io_types produces);
    ``int8``: explicit Q/DQ on the activation and the conv weight (what a Q/DQ ONNX looks like).
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    fw = (rng.standard_normal((8, CLASSES)) * 0.2).astype(np.float32)
    fb = np.zeros(CLASSES, np.float32)
    inits, nodes = [], []
    x = "input"
    if precision == "fp16":
        w, b, fw, fb = (a.astype(np.float16) for a in (w, b, fw, fb))
        nodes.append(helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16))
        x = "x16"
    if precision == "int8":
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s_x"),
                  numpy_helper.from_array(np.array(0, np.int8), "z_x"),
                  numpy_helper.from_array(np.full(8, 0.01, np.float32), "s_w"),
                  numpy_helper.from_array(np.zeros(8, np.int8), "z_w")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s_x", "z_x"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s_x", "z_x"], ["xdq"]),
                  helper.make_node("QuantizeLinear", ["W", "s_w", "z_w"], ["wq"], axis=0),
                  helper.make_node("DequantizeLinear", ["wq", "s_w", "z_w"], ["wdq"], axis=0)]
        x, wname = "xdq", "wdq"
    else:
        wname = "W"
    nodes += [
        helper.make_node("Conv", [x, wname, "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "FW", "FB"], ["l16" if precision == "fp16" else "logits"]),
    ]
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["l16"], ["logits"], to=TensorProto.FLOAT))
    inits += [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (b, "B"), (fw, "FW"), (fb, "FB"))]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, IMAGE, IMAGE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


# Real models ----------------------------------------------------------------------------------
# The project's own artifacts: FP32 from api.export (shared with the other test files through
# conftest's session-scoped `exported`), FP16/INT8 from quantize.ensure_precision_onnx (ModelOpt
# AutoCast / PTQ on 16 bundled-photo views), each made once per session.
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
                quantize = pytest.importorskip("resnet_deploy.quantize", reason="resnet_deploy.quantize not available")
                ok, why = __import__("resnet_deploy.precision", fromlist=["x"]).modelopt_available()
                if not ok:
                    pytest.skip(f"ModelOpt is needed to make the {precision} ONNX: {why}")
                m = quantize.ensure_precision_onnx(arch, precision, out_dir=exported.root, calib_samples=CALIB_SAMPLES)
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
            path = eng.engine_path_for(arch, precision, "trt-rtx", root)
            m = eng.build_engine(real_onnx(arch, precision), path, eng.BuildOptions(flavour="trt-rtx", max_batch=4),
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
    manifest = eng.build_engine(model_onnx, out, eng.BuildOptions(flavour="trt-rtx"), precision="fp32",
                                progress=lambda phase, step, total: events.append((phase, step, total)))
    return out, manifest, events


def rtx_opts(**kw) -> eng.BuildOptions:
    return eng.BuildOptions(flavour="trt-rtx", **kw)


# ------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------


def test_manifest_fields(built, rtx, model_onnx):
    path, m, _ = built
    assert path.is_file() and manifest_path(path).is_file()
    assert read_manifest(path) == json.loads(json.dumps(m, default=str))
    assert m["flavour"] == "trt-rtx" and m["builder"] == "tensorrt_rtx"
    assert m["builder_version"] == rtx.__version__
    assert m["precision"] == "fp32" and m["strongly_typed"] is True
    assert (m["min_batch"], m["opt_batch"], m["max_batch"]) == eng.DEFAULT_PROFILE
    assert m["onnx_sha256"] == sha256_file(model_onnx)
    assert m["engine_sha256"] == sha256_file(path) and m["engine_bytes"] == path.stat().st_size
    assert m["input"] == {"name": "input", "shape": [-1, 3, 224, 224], "dtype": "float32"}
    assert m["outputs"] == [{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}]
    assert m["opt_level"] == 3 and m["workspace_mib"] is None and m["build_seconds"] > 0
    import resnet_deploy

    assert m["toolkit_version"] == getattr(resnet_deploy, "__version__", "unknown")
    assert m["target"] == {"compute_capabilities": list(eng.RTX_DEFAULT_TARGETS), "explicit": False}
    lp = m["layer_precision"]
    assert lp["source"] in ("network", "engine_inspector") and lp["output_dtypes"]
    if m["build_gpu"] is None:  # no GPU: the inspector cannot run, and the manifest says so
        assert lp["source"] == "network" and lp["implied_precision"] == "fp32"
        assert "needs a CUDA GPU" in m["engine_inspector"]


def test_progress_callback_sees_phases(built):
    _, _, events = built
    assert events, "IProgressMonitor never called back"
    assert all(isinstance(p, str) and 0 <= s <= max(t, s) for p, s, t in events)


def test_compute_capability_targets(rtx, model_onnx, tmp_path):
    m = eng.build_engine(model_onnx, tmp_path / "a.engine", rtx_opts(compute_capabilities=["8.6", "sm89"], max_batch=4),
                         precision="fp32")
    assert m["target"] == {"compute_capabilities": ["8.6", "8.9"], "explicit": True}
    with pytest.raises(UserError, match=r"cannot target compute capability 9\.0"):
        eng.build_engine(model_onnx, tmp_path / "b.engine", rtx_opts(compute_capabilities=["9.0"]), precision="fp32")
    assert not (tmp_path / "b.engine").exists()
    with pytest.raises(UserError, match="compute capability"):
        eng.BuildOptions(flavour="trt-rtx", compute_capabilities=["eighty"]).validate()


def test_current_target_without_gpu_is_clear(rtx, model_onnx, tmp_path):
    if eng.cuda_device_info()[0] is not None:
        pytest.skip("a CUDA GPU is present; 'current' is valid here")
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        eng.build_engine(model_onnx, tmp_path / "c.engine", rtx_opts(compute_capabilities=["current"]), precision="fp32")


@pytest.mark.parametrize("garbage", [b"garbage" * 100, b"this is not a protobuf" * 50, bytes(range(256)) * 4])
def test_garbage_onnx_is_one_line_user_error(rtx, tmp_path, garbage):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(garbage)
    with pytest.raises(UserError) as ei:
        eng.build_engine(bad, tmp_path / "bad.engine", rtx_opts(), precision="fp32")
    msg = str(ei.value)
    assert msg.startswith(f"cannot parse ONNX {bad}") and "\n" not in msg
    assert not (tmp_path / "bad.engine").exists() and not manifest_path(tmp_path / "bad.engine").exists()


def test_missing_onnx(tmp_path):
    with pytest.raises(UserError, match="ONNX file not found"):
        eng.build_engine(tmp_path / "nope.onnx", tmp_path / "x.engine", rtx_opts(), precision="fp32")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(min_batch=16, max_batch=4), r"min <= opt <= max"),
        (dict(min_batch=1, opt_batch=64, max_batch=32), r"min <= opt <= max"),
        (dict(min_batch=0), r"min batch must be an integer >= 1"),
        (dict(max_batch=-3), r"max batch must be an integer >= 1"),
    ],
)
def test_impossible_profiles(rtx, model_onnx, tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        eng.build_engine(model_onnx, tmp_path / "p.engine", rtx_opts(**kw), precision="fp32")


def test_fixed_batch_onnx(rtx, fixed_onnx, tmp_path):
    with pytest.raises(UserError, match=r"fixed batch of 4.*got max=2"):
        eng.build_engine(fixed_onnx, tmp_path / "f.engine", rtx_opts(max_batch=2), precision="fp32")
    with pytest.raises(UserError, match=r"fixed batch of 4"):
        eng.build_engine(fixed_onnx, tmp_path / "f.engine", rtx_opts(min_batch=1, opt_batch=8, max_batch=32), precision="fp32")
    m = eng.build_engine(fixed_onnx, tmp_path / "f.engine", rtx_opts(), precision="fp32")
    assert (m["min_batch"], m["opt_batch"], m["max_batch"], m["onnx_fixed_batch"]) == (4, 4, 4, 4)


def test_resolve_profile_defaults():
    assert eng.resolve_profile([None, None, None], None) == (1, 8, 32)
    assert eng.resolve_profile([None, None, 4], None) == (1, 4, 4)
    assert eng.resolve_profile([2, None, 64], None) == (2, 8, 64)
    assert eng.resolve_profile([None, None, None], 3) == (3, 3, 3)


def test_precision_comes_from_the_onnx(rtx, models_dir, tmp_path):
    """Hand-made ONNX without resnet_deploy metadata: the parsed graph's types decide."""
    tiny = make_tiny_onnx(models_dir / "tiny.fp32.onnx")
    with pytest.raises(UserError, match=r"is fp32 but fp16 was requested"):
        eng.build_engine(tiny, tmp_path / "x.engine", rtx_opts(), precision="fp16")
    fp16 = make_tiny_onnx(models_dir / "tiny.fp16.onnx", precision="fp16")
    m16 = eng.build_engine(fp16, tmp_path / "h.engine", rtx_opts(max_batch=4), precision="fp16")
    assert m16["layer_precision"]["output_dtypes"].get("HALF", 0) > 0 or m16["layer_precision"]["source"] == "engine_inspector"
    assert m16["input"]["dtype"] == "float32"  # keep_io_types style
    int8 = make_tiny_onnx(models_dir / "tiny.int8.onnx", precision="int8")
    m8 = eng.build_engine(int8, tmp_path / "q.engine", rtx_opts(max_batch=4), precision="int8")
    assert m8["precision"] == "int8"
    if m8["layer_precision"]["source"] == "network":
        assert m8["layer_precision"]["qdq_layers"] >= 2


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(flavour="trt-rtx", hardware_compatibility="ampere+"), "not supported by TensorRT-RTX"),
        (dict(flavour="trt-rtx", legacy_precision_flags=True), "no weak typing"),
        (dict(flavour="trt-rtx", version_compatible=True), "not compatible between releases"),
        (dict(flavour="trt", compute_capabilities=["8.6"]), "apply to trt-rtx"),
        (dict(flavour="trt", hardware_compatibility="turing+"), "hardware compatibility must be one of"),
        (dict(flavour="trt-rtx", opt_level=9), "optimization level must be 0..5"),
        (dict(flavour="tensorflow"), "unknown engine flavour"),
        (dict(flavour="trt-rtx", compute_capabilities=["current", "8.6"]), "only target"),
        (dict(flavour="trt-rtx", dla_core=0), "TensorRT-RTX has no DLA"),
        (dict(flavour="trt", dla_core=-1), "DLA core must be an integer >= 0"),
        (dict(flavour="trt", dla_core=True), "DLA core must be an integer >= 0"),
        (dict(flavour="trt", gpu_fallback=False), "only applies to DLA builds"),
    ],
)
def test_option_validation(kw, match):
    with pytest.raises(UserError, match=match):
        eng.BuildOptions(**kw).validate()


def test_missing_flavour_is_backend_unavailable(model_onnx, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except Exception:
        pass
    with pytest.raises(BackendUnavailable) as ei:
        eng.build_engine(model_onnx, tmp_path / "t.engine", eng.BuildOptions(flavour="trt"), precision="fp32")
    assert ei.value.backend == "trt" and "tensorrt" in ei.value.reason


def test_engine_path_naming():
    p = eng.engine_path_for("resnet50", "fp16", "trt-rtx", root="engines")
    assert p == Path("engines/resnet50/resnet50.fp16.trt-rtx.engine")


def test_timing_cache_is_a_noop_note_on_rtx(rtx, model_onnx, tmp_path):
    m = eng.build_engine(model_onnx, tmp_path / "t.engine", rtx_opts(max_batch=2, timing_cache=tmp_path / "tc.bin"),
                         precision="fp32")
    assert any("no-ops in TensorRT-RTX" in n for n in m["notes"])
    assert not (tmp_path / "tc.bin").exists()


# ------------------------------------------------------------------------------------------
# Reuse
# ------------------------------------------------------------------------------------------


def test_engine_reuse(rtx, models_dir, tmp_path):
    src = make_tiny_onnx(tmp_path / "m.onnx")
    path = tmp_path / "m.fp32.trt-rtx.engine"
    opts = rtx_opts(max_batch=4)
    m, reason = eng.ensure_engine(src, path, opts, precision="fp32")
    assert reason == f"no engine at {path}"
    facts = eng.request_facts(src, opts, precision="fp32")
    assert eng.needs_rebuild(path, facts) is None
    m2, reason2 = eng.ensure_engine(src, path, opts, precision="fp32")
    assert reason2 is None and m2["engine_sha256"] == m["engine_sha256"]

    assert "requested profile changed" in eng.needs_rebuild(path, eng.request_facts(src, rtx_opts(max_batch=8), precision="fp32"))
    assert "target changed" in eng.needs_rebuild(path, eng.request_facts(src, rtx_opts(max_batch=4, compute_capabilities=["8.6"]), precision="fp32"))
    assert "opt level changed" in eng.needs_rebuild(path, eng.request_facts(src, rtx_opts(max_batch=4, opt_level=1), precision="fp32"))
    assert "precision changed" in eng.needs_rebuild(path, {**facts, "precision": "fp16"})

    make_tiny_onnx(src, seed=1)  # same name, new weights
    assert "onnx sha256 changed" in eng.needs_rebuild(path, eng.request_facts(src, opts, precision="fp32"))

    manifest = read_manifest(path)
    write_manifest(path, {**manifest, "builder_version": "0.9.0"})
    assert "builder version changed" in eng.needs_rebuild(path, facts)
    write_manifest(path, manifest)

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in eng.needs_rebuild(path, facts)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert "sha256" in eng.needs_rebuild(path, facts)
    manifest_path(path).unlink()
    assert "no manifest" in eng.needs_rebuild(path, facts)


# ------------------------------------------------------------------------------------------
# Runner: honest failures without a GPU, checks before deserializing
# ------------------------------------------------------------------------------------------


def test_runner_module_is_torch_free():
    code = "import sys, resnet_deploy.runners.tensorrt as m; assert 'torch' not in sys.modules, sorted(k for k in sys.modules if k.startswith('torch'))"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_runner_without_gpu_is_backend_unavailable(built):
    from resnet_deploy.runners.tensorrt import TensorRTRunner

    if eng.cuda_device_info()[0] is not None:
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendUnavailable) as ei:
        TensorRTRunner(built[0])
    assert ei.value.backend == "trt-rtx"
    assert "CUDA" in ei.value.reason or "cuda-python" in ei.value.reason


def test_runner_rejects_corrupt_engine_before_touching_tensorrt(built, tmp_path):
    from resnet_deploy.runners.tensorrt import TensorRTRunner

    src, _, _ = built
    path = tmp_path / src.name
    data = src.read_bytes()
    path.write_bytes(data[:1000])
    manifest_path(path).write_text(manifest_path(src).read_text())
    with pytest.raises(UserError) as ei:
        TensorRTRunner(path)
    assert "truncated" in str(ei.value) and "\n" not in str(ei.value) and not isinstance(ei.value, BackendUnavailable)
    path.write_bytes(bytes(len(data)))
    with pytest.raises(UserError, match="sha256 differs"):
        TensorRTRunner(path)
    manifest_path(path).unlink()
    with pytest.raises(UserError, match="no manifest"):
        TensorRTRunner(path)
    with pytest.raises(UserError, match="engine not found"):
        TensorRTRunner(tmp_path / "missing.engine")


def test_runner_rejects_wrong_flavour_and_version(built, tmp_path, rtx):
    from resnet_deploy.runners.tensorrt import TensorRTRunner

    src, manifest, _ = built
    with pytest.raises(UserError, match="is a trt-rtx engine, not trt"):
        TensorRTRunner(src, flavour="trt")
    path = tmp_path / src.name
    path.write_bytes(src.read_bytes())
    write_manifest(path, {**manifest, "builder_version": "1.0.0.1"})
    with pytest.raises(UserError, match=r"built with tensorrt_rtx 1\.0\.0\.1 but .* is installed"):
        TensorRTRunner(path)


def test_compute_capability_checks():
    from resnet_deploy.runners.tensorrt import check_manifest_against_runtime

    rtx = types.SimpleNamespace(__name__="tensorrt_rtx", __version__="1.7.1.116")
    trt = types.SimpleNamespace(__name__="tensorrt", __version__="10.9.0.34")
    p = Path("m.engine")
    default = {"builder_version": "1.7.1.116", "target": {"compute_capabilities": list(eng.RTX_DEFAULT_TARGETS)}}
    h100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    with pytest.raises(UserError, match=r"targets compute capability 8\.0 8\.6 8\.9 12\.0\+; this GPU \(NVIDIA H100 80GB HBM3, 9\.0\)"):
        check_manifest_against_runtime(default, rtx, h100, p)
    for ok in ("8.6", "8.9", "12.0", "12.1"):
        check_manifest_against_runtime(default, rtx, {"name": "x", "compute_capability": ok}, p)
    with pytest.raises(UserError, match="7.5"):
        check_manifest_against_runtime(default, rtx, {"name": "T4", "compute_capability": "7.5"}, p)

    built_here = {"builder_version": "10.9.0.34", "target": {"compute_capability": "8.6", "hardware_compatibility": None}}
    check_manifest_against_runtime(built_here, trt, {"name": "A10", "compute_capability": "8.6"}, p)
    with pytest.raises(UserError, match="built for compute capability 8.6"):
        check_manifest_against_runtime(built_here, trt, h100, p)
    ampere = {"builder_version": "10.9.0.34", "target": {"compute_capability": "8.0+", "hardware_compatibility": "ampere+"}}
    check_manifest_against_runtime(ampere, trt, h100, p)
    newer = {**built_here, "builder_version": "10.12.0.36"}
    with pytest.raises(UserError, match="rebuild it"):
        check_manifest_against_runtime(newer, trt, None, p)
    vc = {**built_here, "builder_version": "10.3.0.26", "version_compatible": True}
    check_manifest_against_runtime(vc, trt, None, p)
    with pytest.raises(UserError, match="older"):
        check_manifest_against_runtime({**vc, "builder_version": "10.12.0.36"}, trt, None, p)


# ------------------------------------------------------------------------------------------
# Runner data path against a fake TensorRT + cuda-python (runs everywhere)
# ------------------------------------------------------------------------------------------


class _FakeCudart:
    """Enough of cuda.bindings.runtime: host 'device' memory, async copies, stream capture."""

    cudaStreamNonBlocking = 1
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def __init__(self):
        self.buffers, self.capture, self.launches, self.freed = {}, None, 0, []

    def _alloc(self, n):
        import ctypes

        buf = ctypes.create_string_buffer(n)
        self.buffers[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    cudaMalloc = cudaMallocHost = _alloc

    def run(self, op):
        if self.capture is not None:
            self.capture.append(op)
        else:
            op()

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        import ctypes

        self.run(lambda: ctypes.memmove(dst, src, n))
        return (0,)

    def cudaSetDevice(self, i):
        return (0,)

    def cudaStreamCreateWithFlags(self, flags):
        return 0, 77

    def cudaStreamSynchronize(self, s):
        return (0,)

    def cudaStreamBeginCapture(self, s, mode):
        self.capture = []
        return (0,)

    def cudaStreamEndCapture(self, s):
        graph, self.capture = self.capture, None
        return 0, graph

    def cudaGraphInstantiate(self, graph, flags):
        return 0, list(graph)

    def cudaGraphLaunch(self, exe, s):
        self.launches += 1
        for op in exe:
            op()
        return (0,)

    def _free(self, *a):
        self.freed.append(a)
        return (0,)

    # events (bench's CudartEventClock) and memory info (bench's memory probe)
    def cudaEventCreate(self):
        import time

        return 0, {"t": time.perf_counter()}

    def cudaEventRecord(self, ev, stream):
        import time

        self.run(lambda: ev.__setitem__("t", time.perf_counter()))
        return (0,)

    def cudaEventSynchronize(self, ev):
        return (0,)

    def cudaEventElapsedTime(self, a, b):
        return 0, (b["t"] - a["t"]) * 1e3

    def cudaEventDestroy(self, ev):
        return (0,)

    def cudaMemGetInfo(self):
        return 0, 1 << 30, 2 << 30

    cudaFree = cudaFreeHost = cudaStreamDestroy = cudaGraphDestroy = cudaGraphExecDestroy = _free


def _fake_trt(cudart: _FakeCudart):
    """A 'TensorRT' whose engine maps input [N,3,4,4] to per-channel means [N,3]."""
    import ctypes

    runtimes = []

    profile = [(1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)]

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            pass

    class Context:
        def __init__(self):
            self.shape, self.addr = None, {}

        def set_input_shape(self, name, shape):
            if not all(lo <= s <= hi for lo, s, hi in zip(profile[0], shape, profile[2])):
                return False
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shape if name == "input" else (self.shape[0], 3)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream):
            n, shape = self.shape[0], self.shape

            def op():
                size = int(np.prod(shape))
                x = np.frombuffer((ctypes.c_float * size).from_address(self.addr["input"]), np.float32).reshape(shape)
                y = np.frombuffer((ctypes.c_float * (n * 3)).from_address(self.addr["logits"]), np.float32).reshape(n, 3)
                y[:] = x.mean(axis=(2, 3))

            cudart.run(op)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return "IN" if name == "input" else "OUT"

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_profile_shape(self, name, index):
            return profile

        def create_execution_context(self):
            return Context()

    class Runtime:
        num_DLA_cores = 2  # a Jetson AGX Orin

        def __init__(self, logger):
            self.DLA_core = -1
            runtimes.append(self)

        def deserialize_cuda_engine(self, blob):
            self.core_at_deserialize = self.DLA_core  # IRuntime.DLA_core must be set before this
            return Engine() if blob == b"fake-engine" else None

    return types.SimpleNamespace(
        __name__="tensorrt", __version__="10.9.0.34", ILogger=ILogger, Runtime=Runtime, runtimes=runtimes,
        TensorIOMode=types.SimpleNamespace(INPUT="IN", OUTPUT="OUT"), nptype=lambda dt: dt,
    )


@pytest.fixture()
def fake_runner_env(tmp_path, monkeypatch):
    import resnet_deploy.runners.tensorrt as rt

    cudart = _FakeCudart()
    monkeypatch.setattr(rt, "load_cudart", lambda: cudart)
    monkeypatch.setattr(rt, "cuda_device_info", lambda i=0: ({"index": i, "name": "Fake A10", "compute_capability": "8.6"}, ""))
    fake = _fake_trt(cudart)
    monkeypatch.setattr(rt, "import_flavour", lambda f: fake)
    path = tmp_path / "fake.fp32.trt.engine"
    path.write_bytes(b"fake-engine")
    write_manifest(path, {"flavour": "trt", "builder_version": "10.9.0.34", "precision": "fp32",
                          "engine_bytes": path.stat().st_size, "engine_sha256": sha256_file(path),
                          "target": {"compute_capability": "8.6", "hardware_compatibility": None}})
    return rt, path, cudart


@pytest.mark.parametrize("graph", [False, True])
def test_runner_data_path_with_fake_backend(fake_runner_env, graph):
    rt, path, cudart = fake_runner_env
    rng = np.random.default_rng(0)
    with rt.TensorRTRunner(path, cuda_graph=graph) as r:
        assert (r.min_batch, r.opt_batch, r.max_batch) == (1, 2, 4)
        for n in (3, 1, 3, 4):
            x = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
            y = r.infer(x)
            assert y.dtype == np.float32 and y.shape == (n, 3)
            np.testing.assert_allclose(y, x.mean(axis=(2, 3)), rtol=1e-6)
        y64 = r.infer(rng.standard_normal((2, 3, 4, 4)))  # float64 in -> cast, float32 out
        assert y64.dtype == np.float32
        if graph:
            assert set(r._graphs) == {1, 2, 3, 4} and cudart.launches == 5
        with pytest.raises(UserError, match=r"batch 5 is outside the engine's profile 1\.\.4"):
            r.infer(np.zeros((5, 3, 4, 4), np.float32))
        with pytest.raises(UserError, match=r"expected a batch of shape \[N, 3, 4, 4\]"):
            r.infer(np.zeros((2, 3, 5, 5), np.float32))
        d = r.describe()
        assert d["backend"] == "trt" and d["precision"] == "fp32" and d["gpu"] == "Fake A10"
        assert d["profile"]["max"] == [4, 3, 4, 4] and d["cuda_graph"] == ("per-batch-capture" if graph else False)
    assert cudart.freed  # buffers and stream released
    r.close()  # twice is fine
    with pytest.raises(UserError, match="closed"):
        r.infer(np.zeros((1, 3, 4, 4), np.float32))


def test_runner_makes_its_device_current_in_each_new_thread(fake_runner_env):
    """CUDA's current device is per host thread: a runner used from a worker thread (a server,
    bench --streams) sets its device there once, and not on every call."""
    import threading

    rt, path, cudart = fake_runner_env
    calls = []
    cudart.cudaSetDevice = lambda i: calls.append((threading.get_ident(), i)) or (0,)
    x = np.ones((2, 3, 4, 4), np.float32)
    with rt.TensorRTRunner(path, device=1) as r:
        r.infer(x)
        r.infer(x)
        assert calls == [(threading.get_ident(), 1)]
        errors = []

        def work():
            try:
                for _ in range(2):
                    np.testing.assert_allclose(r.infer(x), np.ones((2, 3)), rtol=1e-6)
                r.stage(x)
                r.enqueue()
                r.synchronize()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=work)
        t.start()
        t.join()
        assert not errors, errors
        assert len(calls) == 2 and calls[1][0] != calls[0][0] and calls[1][1] == 1


def test_runner_undeserializable_engine_with_fake_backend(fake_runner_env):
    rt, path, _ = fake_runner_env
    path.write_bytes(b"other-bytes")
    m = read_manifest(path)
    write_manifest(path, {**m, "engine_bytes": path.stat().st_size, "engine_sha256": sha256_file(path)})
    with pytest.raises(UserError, match="cannot deserialize"):
        rt.TensorRTRunner(path)


# ------------------------------------------------------------------------------------------
# Real execution: needs a CUDA GPU that the flavour supports
# ------------------------------------------------------------------------------------------


def test_rtx_engine_matches_onnxruntime_on_gpu(rtx, model_onnx, tmp_path):
    device, why = eng.cuda_device_info()
    if device is None:
        pytest.skip(f"executing an engine needs a CUDA GPU: {why}")
    if not eng.rtx_cc_supported(device["compute_capability"], eng.RTX_DEFAULT_TARGETS):
        pytest.skip(f"TensorRT-RTX cannot run on {device['name']} (compute capability {device['compute_capability']})")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference")
    from resnet_deploy.runners.tensorrt import TensorRTRunner

    path = tmp_path / "gpu.engine"
    eng.build_engine(model_onnx, path, rtx_opts(max_batch=8), precision="fp32")
    sess = ort.InferenceSession(str(model_onnx), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    x = np.random.default_rng(0).standard_normal((5, 3, shape[2], shape[3])).astype(np.float32)
    ref = sess.run(None, {"input": x})[0]
    for graph in (False, True):
        with TensorRTRunner(path, cuda_graph=graph) as r:
            y = r.infer(x)
            assert np.isfinite(y).all()
            np.testing.assert_allclose(y, ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("cc, expect", [("9.0", "does not target this GPU"), ("8.6", "engine inspector")])
def test_inspector_notes_when_a_gpu_is_reported(rtx, model_onnx, tmp_path, monkeypatch, cc, expect):
    """With a GPU reported, the builder tries the engine inspector and records honestly why it could not."""
    if eng.cuda_device_info()[0] is not None:
        pytest.skip("a real CUDA device is present; this test fakes one")
    monkeypatch.setattr(eng, "cuda_device_info", lambda i=0: ({"index": 0, "name": "Fake GPU", "compute_capability": cc,
                                                               "total_memory_mib": 1024}, ""))
    m = eng.build_engine(model_onnx, tmp_path / "g.engine", rtx_opts(max_batch=2), precision="fp32")
    assert m["build_gpu"]["compute_capability"] == cc
    assert m["layer_precision"]["source"] == "network" and expect in m["engine_inspector"]


# ------------------------------------------------------------------------------------------
# The project's real models: ResNet-18 and ResNet-50 at FP32, FP16 and INT8 (TensorRT-RTX, CPU)
# ------------------------------------------------------------------------------------------

REAL = [(a, p) for a in ("resnet18", "resnet50") for p in ("fp32", "fp16", "int8")]


@pytest.mark.parametrize("arch, precision", REAL)
def test_real_engine_manifest(real_engine, real_onnx, rtx, arch, precision):
    from resnet_deploy.onnx_export import load_onnx, read_metadata

    path, m = real_engine(arch, precision)
    src = real_onnx(arch, precision)
    assert path.name == f"{arch}.{precision}.trt-rtx.engine" and path.is_file()
    assert read_manifest(path)["engine_sha256"] == sha256_file(path) == m["engine_sha256"]
    assert m["engine_bytes"] == path.stat().st_size
    assert m["onnx_sha256"] == sha256_file(src) and m["onnx"] == str(src)
    assert m["builder_version"] == rtx.__version__ and m["precision"] == precision
    assert (m["min_batch"], m["opt_batch"], m["max_batch"]) == (1, 4, 4)
    # the engine carries its source's model facts (parity and eval read them from here)
    meta = read_metadata(load_onnx(src))
    fp32_meta = read_metadata(load_onnx(real_onnx(arch, "fp32")))
    sm = m["source_metadata"]
    assert sm == {**meta, "precision": precision}
    assert sm["arch"] == arch and sm["weights_sha256"] == fp32_meta["weights_sha256"] and sm["num_classes"] == "1000"
    from resnet_deploy.api import artifact_facts

    facts = artifact_facts(path, "trt-rtx")
    assert facts["arch"] == arch and facts["precision"] == precision
    lp = m["layer_precision"]
    if lp["source"] == "network":
        assert lp["implied_precision"] == precision
    assert m["input"]["dtype"] == "float32" and m["outputs"][0]["shape"] == [-1, 1000]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_int8_engine_really_is_int8(real_engine, arch):
    """INT8 Q/DQ really became INT8: layers typed INT8, and the engine is much smaller than FP16."""
    _, m16 = real_engine(arch, "fp16")
    _, m8 = real_engine(arch, "int8")
    _, m32 = real_engine(arch, "fp32")
    lp8, lp16 = m8["layer_precision"], m16["layer_precision"]
    if lp8["source"] == "engine_inspector":
        assert lp8["output_dtypes"].get("INT8", 0) > 0
    else:
        assert lp8["output_dtypes"].get("INT8", 0) >= 20 and lp8["qdq_layers"] >= 40
        assert lp16["output_dtypes"].get("INT8", 0) == 0 and lp16["output_dtypes"].get("HALF", 0) >= 20
    # INT8 weights take 1 byte instead of 2: the plan shrinks well below the FP16 one, FP16 below FP32
    assert m8["engine_bytes"] < 0.85 * m16["engine_bytes"], (m8["engine_bytes"], m16["engine_bytes"])
    assert m16["engine_bytes"] < 0.6 * m32["engine_bytes"], (m16["engine_bytes"], m32["engine_bytes"])


def test_precision_mismatch_with_real_onnx(rtx, real_onnx, tmp_path):
    out = tmp_path / "x.engine"
    with pytest.raises(UserError, match=r"resnet18\.fp16\.onnx records precision fp16 .* but int8 was requested") as ei:
        eng.build_engine(real_onnx("resnet18", "fp16"), out, rtx_opts(), precision="int8")
    assert "\n" not in str(ei.value)
    with pytest.raises(UserError, match=r"records precision fp32 .* but fp16 was requested"):
        eng.build_engine(real_onnx("resnet18", "fp32"), out, rtx_opts(), precision="fp16")
    assert not out.exists() and not manifest_path(out).exists()


def test_truncated_onnx_is_clear(rtx, real_onnx, tmp_path):
    bad = tmp_path / "cut.onnx"
    data = real_onnx("resnet18", "fp32").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError) as ei:
        eng.build_engine(bad, tmp_path / "cut.engine", rtx_opts(), precision="fp32")
    assert str(ei.value).startswith(f"cannot parse ONNX {bad}") and "\n" not in str(ei.value)
    assert not (tmp_path / "cut.engine").exists()


def test_unwritable_engine_folder_fails_before_building(rtx, model_onnx, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the engines folder should be")
    with pytest.raises(UserError, match="cannot create output folder"):
        eng.build_engine(model_onnx, blocker / "resnet18" / "x.engine", rtx_opts(), precision="fp32")


def test_ctrl_c_during_build_leaves_nothing(rtx, model_onnx, tmp_path):
    """SIGINT mid-build cancels the builder through IProgressMonitor; no engine, manifest or temp file remains."""
    import os
    import signal

    out = tmp_path / "engines" / "i.engine"
    sent = []

    def progress(phase, step, total):
        if not sent:
            sent.append(phase)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        eng.build_engine(model_onnx, out, rtx_opts(max_batch=2), precision="fp32", progress=progress)
    assert sent and list(out.parent.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_cancel_from_progress_callback(rtx, model_onnx, tmp_path):
    out = tmp_path / "c.engine"
    with pytest.raises(UserError, match="engine build cancelled: nothing was written"):
        eng.build_engine(model_onnx, out, rtx_opts(max_batch=2), precision="fp32", progress=lambda p, s, t: s < 1)
    assert list(tmp_path.iterdir()) == []


def test_build_function_makes_onnx_and_reuses(rtx, exported, real_onnx, tmp_path):
    """engine.build: default ONNX path, engine name by flavour and precision, reuse and rebuild with reasons."""
    real_onnx("resnet18", "fp16")  # made once for the session under exported.root
    msgs: list[str] = []
    opts = rtx_opts(max_batch=2)
    m = eng.build(18, precision="fp16", options=opts, out_dir=exported.root, progress=msgs.append)
    assert Path(m["path"]) == exported.root / "resnet18" / "resnet18.fp16.trt-rtx.engine"
    assert m["onnx_status"] == "reused" and m["source_metadata"]["precision"] == "fp16"
    again = eng.build(18, precision="fp16", options=rtx_opts(max_batch=2), out_dir=exported.root, progress=msgs.append)
    assert again["reused"] and again["rebuild_reason"] is None and again["engine_sha256"] == m["engine_sha256"]
    wider = eng.build(18, precision="fp16", options=rtx_opts(max_batch=3), out_dir=exported.root)
    assert not wider["reused"] and "requested profile changed" in wider["rebuild_reason"]
    forced = eng.build(18, precision="fp16", options=rtx_opts(max_batch=3), out_dir=exported.root, force=True)
    assert not forced["reused"] and "forced" in forced["rebuild_reason"]
    assert any("reusing" in x for x in msgs)
    with pytest.raises(UserError, match="holds resnet18, not resnet50"):
        eng.build(50, precision="fp16", options=rtx_opts(), onnx=real_onnx("resnet18", "fp16"), out_dir=tmp_path)


def test_trt_preflight_without_tensorrt_or_gpu(model_onnx, tmp_path):
    """--engine trt here: one BackendUnavailable before any ONNX work (TensorRT missing, or no GPU)."""
    with pytest.raises(BackendUnavailable) as ei:
        eng.preflight(eng.BuildOptions(flavour="trt"))
    if eng.cuda_device_info()[0] is not None:
        pytest.skip("a GPU is present; only the missing-TensorRT case can be checked")
    assert ei.value.backend == "trt" and ("tensorrt" in ei.value.reason or "CUDA GPU" in ei.value.reason)


def test_trt_target_records_gpu_for_reuse(monkeypatch):
    """TensorRT engines are reused only on the GPU model they were built on (unless hardware-compatible)."""
    fake = types.SimpleNamespace(__name__="tensorrt", __version__="10.9.0.34")
    a10 = {"name": "NVIDIA A10", "compute_capability": "8.6"}
    t = eng._target(fake, eng.BuildOptions(flavour="trt"), a10)
    assert t == {"hardware_compatibility": None, "compute_capability": "8.6", "gpu": "NVIDIA A10"}
    t2 = eng._target(fake, eng.BuildOptions(flavour="trt", hardware_compatibility="same_cc"), a10)
    assert t2["gpu"] is None and t2["hardware_compatibility"] == "same_cc"
    assert eng._target(fake, eng.BuildOptions(flavour="trt", hardware_compatibility="ampere+"), a10)["compute_capability"] == "8.0+"


def test_cuda_graph_capture_failure_falls_back(fake_runner_env):
    """An enqueue that fails under capture (as trtexec handles it): end capture, run without a graph, keep working."""
    rt, path, cudart = fake_runner_env
    with rt.TensorRTRunner(path, cuda_graph=True) as r:
        ctx = r._context
        original = ctx.execute_async_v3

        def flaky(stream):
            return False if cudart.capture is not None else original(stream)

        ctx.execute_async_v3 = flaky
        x = np.ones((2, 3, 4, 4), np.float32)
        np.testing.assert_allclose(r.infer(x), np.ones((2, 3)))
        assert r._graphs == {} and 2 in r._uncapturable and "capture failed" in r.graph_notes[0]
        assert cudart.capture is None  # the capture was ended
        np.testing.assert_allclose(r.infer(2 * x), 2 * np.ones((2, 3)))


def test_runner_torch_output(fake_runner_env):
    torch = pytest.importorskip("torch")
    rt, path, _ = fake_runner_env
    with rt.TensorRTRunner(path) as r:
        y = r.infer_torch(torch.ones(2, 3, 4, 4))
        assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (2, 3)


def test_runner_device_resident_api_with_fake_backend(fake_runner_env):
    """stage (H2D + shape) / enqueue (execute only) / synchronize / stream: what bench times as compute-only."""
    rt, path, cudart = fake_runner_env
    with rt.TensorRTRunner(path, cuda_graph=True) as r:
        assert r.stream == 77 and r.input_dtype == np.float32
        with pytest.raises(AttributeError):
            r.stream = 5  # read-only
        x = np.arange(2 * 3 * 16, dtype=np.float32).reshape(2, 3, 4, 4)
        r.stage(x)
        r.synchronize()
        dev_in = np.frombuffer(cudart.buffers[r._dev["input"]], np.float32, count=x.size).reshape(x.shape)
        np.testing.assert_array_equal(dev_in, x)  # copied to the device buffer
        assert r._context.shape == (2, 3, 4, 4)  # shape set
        copies = []
        original = cudart.cudaMemcpyAsync
        cudart.cudaMemcpyAsync = lambda *a: copies.append(a) or original(*a)
        r.enqueue()
        r.synchronize()
        assert copies == []  # enqueue copies nothing
        cudart.cudaMemcpyAsync = original
        dev_out = np.frombuffer(cudart.buffers[r._dev["logits"]], np.float32, count=6).reshape(2, 3)
        np.testing.assert_allclose(dev_out, x.mean(axis=(2, 3)), rtol=1e-6)
        assert not np.allclose(r._host["logits"][:2], dev_out)  # output stays on the device
        with pytest.raises(UserError, match="outside the engine's profile"):
            r.stage(np.zeros((5, 3, 4, 4), np.float32))
        # infer still works after (and between) staged runs, graphs included
        np.testing.assert_allclose(r.infer(2 * x), 2 * x.mean(axis=(2, 3)), rtol=1e-6)
        r.stage(x[:1])
        r.enqueue()
        r.synchronize()
        np.testing.assert_allclose(r.infer(x), x.mean(axis=(2, 3)), rtol=1e-6)
    with pytest.raises(UserError, match="closed"):
        r.enqueue()
    with pytest.raises(UserError, match="closed"):
        r.stage(x)


def test_bench_trt_path_uses_public_runner_api(fake_runner_env, monkeypatch):
    """bench's TensorRT backend (end-to-end, staged compute-only, padded parity) on the fake backend."""
    import resnet_deploy.bench.backends as bb
    from resnet_deploy.bench.timing import RssProbe, measure

    rt, path, cudart = fake_runner_env
    monkeypatch.setattr(bb, "_cudart", lambda: cudart)
    monkeypatch.setattr(bb, "torch_cuda", lambda: False)
    prep = bb.TensorRTPrepared("trt", str(path), "fp32", RssProbe())
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(3)]
    bound = prep.bind(2, inputs)
    np.testing.assert_allclose(bound.e2e(1), inputs[1].mean(axis=(2, 3)), rtol=1e-6)
    bound.compute_before(2)
    bound.compute(2)
    bound.compute_sync()
    dev_out = np.frombuffer(cudart.buffers[prep.runner._dev["logits"]], np.float32, count=6).reshape(2, 3)
    np.testing.assert_allclose(dev_out, inputs[2].mean(axis=(2, 3)), rtol=1e-6)
    x = np.concatenate(inputs)[:5]
    np.testing.assert_allclose(bound.infer(x), x.mean(axis=(2, 3)), rtol=1e-6)
    t = measure(bound.compute, 3, warmup=1, min_time=0.0, min_iters=2, clock=bound.compute_clock,
                before=bound.compute_before)
    assert t.iterations == 2
    bound.close()
    prep.close()
    with pytest.raises(UserError, match="outside the engine's profile"):
        bb.TensorRTPrepared("trt", str(path), "fp32", RssProbe()).bind(8, inputs)


# ------------------------------------------------------------------------------------------
# DLA (Jetson AGX/NX Orin): builder configuration and runtime core, against fakes
# ------------------------------------------------------------------------------------------


def _fake_builder_config(cores: int):
    flags = []
    trt = types.SimpleNamespace(__name__="tensorrt", __version__="10.3.0.30",
                                DeviceType=types.SimpleNamespace(GPU="GPU", DLA="DLA"),
                                BuilderFlag=types.SimpleNamespace(GPU_FALLBACK="GPU_FALLBACK", FP16="FP16", INT8="INT8"))
    builder = types.SimpleNamespace(num_DLA_cores=cores)
    config = types.SimpleNamespace(default_device_type="GPU", DLA_core=-1, set_flag=flags.append, flags=flags)
    return trt, builder, config


def test_dla_builder_configuration():
    trt, builder, config = _fake_builder_config(cores=2)
    notes: list[str] = []
    eng._apply_dla(trt, builder, config, eng.BuildOptions(flavour="trt", dla_core=1), notes)
    assert (config.default_device_type, config.DLA_core, config.flags) == ("DLA", 1, ["GPU_FALLBACK"])
    assert "GPU fallback" in notes[0]
    trt, builder, config = _fake_builder_config(cores=2)
    eng._apply_dla(trt, builder, config, eng.BuildOptions(flavour="trt", dla_core=0, gpu_fallback=False), notes)
    assert (config.DLA_core, config.flags) == (0, [])
    with pytest.raises(UserError, match=r"DLA core 2 does not exist: this device has 2 \(0..1\)"):
        eng._apply_dla(*_fake_builder_config(cores=2), eng.BuildOptions(flavour="trt", dla_core=2), [])
    with pytest.raises(UserError, match="sees no DLA here"):
        eng._apply_dla(*_fake_builder_config(cores=0), eng.BuildOptions(flavour="trt", dla_core=0), [])


def test_dla_precision_and_reuse_facts():
    opts = eng.BuildOptions(flavour="trt", dla_core=0)
    for p in ("fp16", "int8"):
        opts.check_precision(p)
    for p in ("fp32", "bf16"):
        with pytest.raises(UserError, match="DLA runs FP16 and INT8 only"):
            opts.check_precision(p)
    assert opts.dla_facts() == {"dla_core": 0, "gpu_fallback": True}
    assert eng.BuildOptions(flavour="trt").dla_facts() == {"dla_core": None, "gpu_fallback": None}
    assert {"dla_core", "gpu_fallback"} <= set(eng.REUSE_KEYS)


def test_dla_core_change_means_rebuild(tmp_path):
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"x" * 10)
    base = {"flavour": "trt", "precision": "fp16", "dla_core": None, "gpu_fallback": None}
    write_manifest(engine, {**base, "engine_bytes": 10, "engine_sha256": sha256_file(engine)})
    assert eng.needs_rebuild(engine, base) is None  # old manifests without DLA keys also compare equal
    assert "dla core changed" in eng.needs_rebuild(engine, {**base, "dla_core": 0, "gpu_fallback": True})


def test_runner_sets_the_dla_core_before_deserializing(fake_runner_env):
    rt, path, _ = fake_runner_env
    manifest = read_manifest(path)
    with pytest.raises(UserError, match="built for the GPU, not a DLA"):
        rt.TensorRTRunner(path, dla_core=0)
    write_manifest(path, {**manifest, "dla_core": 1, "precision": "fp16"})
    fake = rt.import_flavour("trt")
    r = rt.TensorRTRunner(path)
    assert r.dla_core == 1 and fake.runtimes[-1].core_at_deserialize == 1 and r.describe()["dla_core"] == 1
    r.close()
    r = rt.TensorRTRunner(path, dla_core=0)  # the other core of the same Orin
    assert fake.runtimes[-1].core_at_deserialize == 0
    r.close()
    with pytest.raises(UserError, match=r"runs on DLA core 2, but this device's DLA cores: 2 \(0..1\)"):
        rt.TensorRTRunner(path, dla_core=2)
