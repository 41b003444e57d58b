"""The TensorRT / TensorRT-RTX runner: checks before deserializing, the data path against fakes,
device-resident execution, DLA cores, and real execution where a supported GPU exists."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from fakes import rtx_opts

from resnet_deploy._native.cuda import cuda_device_info
from resnet_deploy._native.trt import RTX_DEFAULT_TARGETS, rtx_cc_supported
from resnet_deploy.artifacts import manifest_path, read_manifest, sha256_file, write_manifest
from resnet_deploy.engine import build_engine
from resnet_deploy.errors import BackendUnavailable, UserError


def test_runner_module_is_torch_free():
    code = "import sys, resnet_deploy.runners.tensorrt as m; assert 'torch' not in sys.modules, sorted(k for k in sys.modules if k.startswith('torch'))"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_runner_without_gpu_is_backend_unavailable(built):
    from resnet_deploy.runners.tensorrt import TensorRTRunner

    if cuda_device_info()[0] is not None:
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendUnavailable) as ei:
        TensorRTRunner(built[0]).open()
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
        TensorRTRunner(path).open()
    assert "truncated" in str(ei.value) and "\n" not in str(ei.value) and not isinstance(ei.value, BackendUnavailable)
    path.write_bytes(bytes(len(data)))
    with pytest.raises(UserError, match="sha256 differs"):
        TensorRTRunner(path).open()
    manifest_path(path).unlink()
    with pytest.raises(UserError, match="no manifest"):
        TensorRTRunner(path).open()
    with pytest.raises(UserError, match="engine not found"):
        TensorRTRunner(tmp_path / "missing.engine").open()


def test_runner_rejects_wrong_flavour_and_version(built, tmp_path, rtx):
    from resnet_deploy.runners.tensorrt import TensorRTRunner

    src, manifest, _ = built
    with pytest.raises(UserError, match="is a trt-rtx engine, not trt"):
        TensorRTRunner(src, backend="trt").open()
    path = tmp_path / src.name
    path.write_bytes(src.read_bytes())
    write_manifest(path, {**manifest, "builder_version": "1.0.0.1"})
    with pytest.raises(UserError, match=r"built with tensorrt_rtx 1\.0\.0\.1 but .* is installed"):
        TensorRTRunner(path).open()


def test_compute_capability_checks():
    from resnet_deploy.runners.tensorrt_loader import check_manifest_against_runtime

    rtx = types.SimpleNamespace(__name__="tensorrt_rtx", __version__="1.7.1.116")
    trt = types.SimpleNamespace(__name__="tensorrt", __version__="10.9.0.34")
    p = Path("m.engine")
    default = {"builder_version": "1.7.1.116", "target": {"compute_capabilities": list(RTX_DEFAULT_TARGETS)}}
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
    with pytest.raises(UserError, match="not open"):
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
        rt.TensorRTRunner(path).open()


def test_rtx_engine_matches_onnxruntime_on_gpu(rtx, model_onnx, tmp_path):
    device, why = cuda_device_info()
    if device is None:
        pytest.skip(f"executing an engine needs a CUDA GPU: {why}")
    if not rtx_cc_supported(device["compute_capability"], RTX_DEFAULT_TARGETS):
        pytest.skip(f"TensorRT-RTX cannot run on {device['name']} (compute capability {device['compute_capability']})")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference")
    from resnet_deploy.runners.tensorrt import TensorRTRunner

    path = tmp_path / "gpu.engine"
    build_engine(model_onnx, path, rtx_opts(max_batch=8), precision="fp32")
    sess = ort.InferenceSession(str(model_onnx), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    x = np.random.default_rng(0).standard_normal((5, 3, shape[2], shape[3])).astype(np.float32)
    ref = sess.run(None, {"input": x})[0]
    for graph in (False, True):
        with TensorRTRunner(path, cuda_graph=graph) as r:
            y = r.infer(x)
            assert np.isfinite(y).all()
            np.testing.assert_allclose(y, ref, rtol=1e-2, atol=1e-2)


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
        dev_in = np.frombuffer(cudart.buffers[r.buffers.device["input"]], np.float32, count=x.size).reshape(x.shape)
        np.testing.assert_array_equal(dev_in, x)  # copied to the device buffer
        assert r._context.shape == (2, 3, 4, 4)  # shape set
        copies = []
        original = cudart.cudaMemcpyAsync
        cudart.cudaMemcpyAsync = lambda *a: copies.append(a) or original(*a)
        r.enqueue()
        r.synchronize()
        assert copies == []  # enqueue copies nothing
        cudart.cudaMemcpyAsync = original
        dev_out = np.frombuffer(cudart.buffers[r.buffers.device["logits"]], np.float32, count=6).reshape(2, 3)
        np.testing.assert_allclose(dev_out, x.mean(axis=(2, 3)), rtol=1e-6)
        assert not np.allclose(r.buffers.host["logits"][:2], dev_out)  # output stays on the device
        with pytest.raises(UserError, match="outside the engine's profile"):
            r.stage(np.zeros((5, 3, 4, 4), np.float32))
        # infer still works after (and between) staged runs, graphs included
        np.testing.assert_allclose(r.infer(2 * x), 2 * x.mean(axis=(2, 3)), rtol=1e-6)
        r.stage(x[:1])
        r.enqueue()
        r.synchronize()
        np.testing.assert_allclose(r.infer(x), x.mean(axis=(2, 3)), rtol=1e-6)
    with pytest.raises(UserError, match="not open"):
        r.enqueue()
    with pytest.raises(UserError, match="not open"):
        r.stage(x)


def test_runner_sets_the_dla_core_before_deserializing(fake_runner_env):
    rt, path, _ = fake_runner_env
    manifest = read_manifest(path)
    with pytest.raises(UserError, match="built for the GPU, not a DLA"):
        rt.TensorRTRunner(path, dla_core=0).open()
    write_manifest(path, {**manifest, "dla_core": 1, "precision": "fp16"})
    fake = rt.import_flavour("trt")
    r = rt.TensorRTRunner(path).open()
    assert r.dla_core == 1 and fake.runtimes[-1].core_at_deserialize == 1 and r.describe()["dla_core"] == 1
    r.close()
    r = rt.TensorRTRunner(path, dla_core=0).open()  # the other core of the same Orin
    assert fake.runtimes[-1].core_at_deserialize == 0
    r.close()
    with pytest.raises(UserError, match=r"runs on DLA core 2, but this device's DLA cores: 2 \(0..1\)"):
        rt.TensorRTRunner(path, dla_core=2).open()


# ------------------------------------------------------------------------------------------ fakes that can fail


def test_the_fake_device_keeps_host_and_device_apart_and_works_asynchronously():
    """What makes the fake-backed tests able to fail: a copy in the wrong direction is refused, and
    nothing happens on a stream until it is synchronized."""
    from fakes import FakeCudart

    cu = FakeCudart()
    k = cu.cudaMemcpyKind
    _, dev = cu.cudaMalloc(16)
    _, host = cu.cudaMallocHost(16)
    _, s = cu.cudaStreamCreateWithFlags(cu.cudaStreamNonBlocking)
    view = np.frombuffer((np.ctypeslib.as_ctypes_type(np.uint8) * 16).from_address(host), np.uint8)
    view[:] = 7
    assert cu.cudaMemcpyAsync(host, dev, 16, k.cudaMemcpyHostToDevice, s) == (1,)  # a device source: invalid
    assert cu.cudaMemcpyAsync(dev, host, 16, k.cudaMemcpyDeviceToHost, s) == (1,)
    assert cu.cudaMemcpyAsync(dev, host, 16, k.cudaMemcpyHostToDevice, s) == (0,)
    assert bytes(cu.buffers[dev]) == bytes(16)  # not yet: queued on the stream
    cu.cudaStreamSynchronize(s)
    assert bytes(cu.buffers[dev]) == bytes([7] * 16)


@pytest.mark.parametrize("graph", [False, True], ids=["plain", "cuda-graph"])
def test_rtx_runner_data_path_with_fake_backend(tmp_path, monkeypatch, graph):
    """TensorRT-RTX: the same data path; CUDA graphs are the runtime's own (IRuntimeConfig's
    WHOLE_GRAPH_CAPTURE strategy), never a manual stream capture."""
    from fakes import install_fake_tensorrt

    rt, path, cudart = install_fake_tensorrt(tmp_path, monkeypatch, flavour="trt-rtx")
    x = np.random.default_rng(1).standard_normal((3, 3, 4, 4)).astype(np.float32)
    with rt.TensorRTRunner(path, cuda_graph=graph) as r:
        np.testing.assert_allclose(r.infer(x), x.mean(axis=(2, 3)), rtol=1e-6)
        config = r._context.runtime_config
        assert r.describe()["backend"] == "trt-rtx" and cudart.launches == 0 and r._graphs == {}
        if graph:
            assert config.cuda_graph_strategy == rt.import_flavour("trt-rtx").CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            assert r.describe()["cuda_graph"] == "rtx-whole-graph"
        else:
            assert config is None


def test_version_compatible_engines_allow_their_embedded_runtime_and_one_major_forward(fake_runner_env):
    rt, path, _ = fake_runner_env
    manifest = read_manifest(path)
    fake = rt.import_flavour("trt")
    write_manifest(path, {**manifest, "builder_version": "10.3.0.26", "version_compatible": True})
    with rt.TensorRTRunner(path) as r:
        r.infer(np.ones((1, 3, 4, 4), np.float32))
    assert fake.runtimes[-1].host_code_at_deserialize is True  # the lean runtime inside the plan may run

    from resnet_deploy.runners.tensorrt_loader import check_manifest_against_runtime

    def runtime(version):
        return types.SimpleNamespace(__name__="tensorrt", __version__=version)

    vc = {"builder_version": "10.3.0.26", "version_compatible": True}
    check_manifest_against_runtime(vc, runtime("11.4.0.106"), None, path)  # one major forward: supported
    with pytest.raises(UserError, match=r"10\.3\.0\.26, but 12\.0\.0\.1 is installed.*one major version forward"):
        check_manifest_against_runtime(vc, runtime("12.0.0.1"), None, path)
    with pytest.raises(UserError, match="one major version forward"):
        check_manifest_against_runtime({**vc, "builder_version": "8.6.1.6"}, runtime("11.4.0.106"), None, path)
    check_manifest_against_runtime({**vc, "builder_version": "8.6.1.6"}, runtime("10.3.0.30"), None, path)


def test_an_engine_whose_manifest_has_trtexecs_three_part_version_runs_on_that_release(fake_runner_env):
    """build_engine.sh without the Python module records trtexec's "10.3.0"; pip and JetPack's module
    say "10.3.0.30": the same release, not a mismatch. Another release still is."""
    from resnet_deploy.runners.tensorrt_loader import check_manifest_against_runtime

    rt, path, _ = fake_runner_env
    trt = types.SimpleNamespace(__name__="tensorrt", __version__="10.3.0.30")
    check_manifest_against_runtime({"builder_version": "10.3.0"}, trt, None, path)
    with pytest.raises(UserError, match="rebuild it"):
        check_manifest_against_runtime({"builder_version": "10.3.1"}, trt, None, path)
    with pytest.raises(UserError, match="rebuild it"):
        check_manifest_against_runtime({"builder_version": "10.3.0.26"}, trt, None, path)


# ------------------------------------------------------------------------------------------ the CUDA buffers


def test_device_buffers_free_every_allocation_once():
    from fakes import FakeCudart

    from resnet_deploy.runners.device_buffers import DeviceBuffers

    cu = FakeCudart()
    with DeviceBuffers(cu, artifact="m.engine") as buffers:
        stream = buffers.create_stream()
        assert buffers.create_stream() == stream  # one stream
        ptr = buffers.allocate("input", (2, 3), np.float32)
        buffers.allocate("logits", (2, 5), np.float16)
        assert buffers.device["input"] == ptr and cu.is_device(ptr)
        assert buffers.host["logits"].shape == (2, 5) and buffers.host["logits"].dtype == np.float16
        with pytest.raises(ValueError, match="already has buffers"):
            buffers.allocate("input", (1,), np.float32)
        buffers.host["input"][:] = 1.5
        buffers.to_device("input", 1)
        buffers.synchronize()
        assert np.frombuffer(cu.buffers[ptr], np.float32)[:3].tolist() == [1.5] * 3
        assert np.frombuffer(cu.buffers[ptr], np.float32)[3:].tolist() == [0.0] * 3  # one row only
        assert any(cu.live().values())
    assert cu.live() == {"device": [], "host": [], "streams": []}
    assert buffers.device == {} and buffers.host == {} and buffers.stream is None
    buffers.free()  # twice is fine: nothing is freed again
    assert cu.live() == {"device": [], "host": [], "streams": []}


def test_runner_frees_its_buffers_on_close(fake_runner_env):
    rt, path, cudart = fake_runner_env
    r = rt.TensorRTRunner(path, cuda_graph=True).open()
    r.infer(np.ones((2, 3, 4, 4), np.float32))
    assert len(r.buffers.device) == 2 and r.stream in cudart.streams
    r.close()
    assert cudart.live() == {"device": [], "host": [], "streams": []} and r.buffers is None and r.stream is None
    r.close()
    assert cudart.live() == {"device": [], "host": [], "streams": []}
    assert r.describe()["flavour"] == "trt"  # what was loaded is still described


@pytest.mark.parametrize("failure", ["pinned-memory", "tensor-address"])
def test_runner_frees_what_it_allocated_when_open_fails_half_way(fake_runner_env, failure):
    rt, path, cudart = fake_runner_env
    if failure == "pinned-memory":  # the output's pinned buffer: the input's buffers and the stream exist by then
        calls = []
        original = cudart.cudaMallocHost
        cudart.cudaMallocHost = lambda n: (2, 0) if calls.append(n) or len(calls) == 2 else original(n)
        cudart.cudaGetErrorName = lambda err: (0, b"cudaErrorMemoryAllocation")
        expected = (UserError, r"out of GPU memory in cudaMallocHost\(48\) \(engine fake\.fp32\.trt\.engine\)")
    else:
        fake = rt.import_flavour("trt")
        engine = fake.Runtime(None).deserialize_cuda_engine(b"fake-engine")
        context_class = type(engine.create_execution_context())
        original = context_class.set_tensor_address
        context_class.set_tensor_address = lambda self, name, ptr: name != "logits" and original(self, name, ptr)
        expected = (RuntimeError, r"set_tensor_address\(logits\) failed")
    r = rt.TensorRTRunner(path)
    try:
        with pytest.raises(expected[0], match=expected[1]):
            r.open()
    finally:
        if failure == "tensor-address":
            context_class.set_tensor_address = original
    assert cudart.streams and cudart.freed_device  # it got that far
    assert cudart.live() == {"device": [], "host": [], "streams": []} and not r.is_open
