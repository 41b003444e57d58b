"""The GPU branches of the runners and the bench, run where a CUDA device is.

On a CPU machine (CI) every test here skips with the reason. On the device machine they are
the first thing to run (``python -m pytest -q -rs tests/test_gpu.py``): they exercise the code
paths CPU tests can only fake (torch on CUDA with channels-last, ONNX Runtime's CUDA provider
with I/O binding and CUDA graphs, torch.compile with CUDA graphs, CUDA-event timing).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from resnet_deploy.compare import compare, parity_batch  # noqa: E402
from resnet_deploy.runners import open_runner  # noqa: E402


def _ort_cuda_reason() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")
needs_ort_cuda = pytest.mark.skipif(not torch.cuda.is_available() or _ort_cuda_reason() is not None,
                                    reason="needs a CUDA GPU and onnxruntime-gpu: "
                                           + (_ort_cuda_reason() or "no CUDA GPU visible to torch"))


@pytest.fixture(scope="module")
def model18():
    import resnet_deploy as rd

    return rd.create_model(18)


@pytest.fixture(scope="module")
def inputs():
    return parity_batch()[1]


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_cuda_channels_last_matches_cpu_fp32(model18, inputs, precision):
    import copy

    ref = open_runner("torch", copy.deepcopy(model18)).infer(inputs)
    torch.backends.cudnn.allow_tf32 = False  # FP32 means FP32 (bench does the same unless --tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    gpu = open_runner("torch", copy.deepcopy(model18), precision=precision, device="cuda", channels_last=True)
    res = compare(ref, gpu.infer(inputs), precision)
    assert res.passed, res.failures
    assert gpu.describe()["device"] != "cpu"


@needs_ort_cuda
@pytest.mark.parametrize("graph", [False, True])
def test_ort_cuda_io_binding_and_cuda_graph(exported, inputs, graph):
    """Staging a new input into the bound buffer changes the output, with and without a CUDA graph."""
    m = exported("resnet18")
    cpu = open_runner("ort", m["path"], precision="fp32")
    opts = {"device_id": "0", "use_tf32": "0", "prefer_nhwc": "1"}  # cuda_graph= sets enable_cuda_graph itself
    r = open_runner("ort-cuda", m["path"], precision="fp32", provider_options=opts, cuda_graph=graph)
    assert r.session.get_providers()[0] == "CUDAExecutionProvider"
    assert r.describe()["cuda_graph"] is graph, r.notes  # a refused capture would say so and drop the graph
    batches = [np.ascontiguousarray(inputs[i:i + 4]) for i in (0, 4, 8)]
    for _ in range(2):  # the second pass replays the captured graph on newly staged inputs
        for x in batches:
            r.stage(x)
            r.enqueue()
            r.synchronize()
            got = r.fetch()
            res = compare(cpu.infer(x), got, "fp32")
            assert res.passed, res.failures
    r.close()


@needs_cuda
def test_torch_compile_cuda_graphs(model18, inputs):
    import copy

    ref = open_runner("torch", copy.deepcopy(model18)).infer(inputs[:4])
    r = open_runner("torch-compile", copy.deepcopy(model18), precision="fp16", device="cuda", channels_last=True)
    for _ in range(3):  # the runner marks each cudagraph step itself
        out = r.infer(inputs[:4])
    res = compare(ref, out, "fp16")
    assert res.passed, res.failures
    # the compute-only path (staged input, enqueue) runs the very graph end-to-end and parity ran
    r.stage(inputs[:4])
    r.enqueue()
    r.synchronize()
    np.testing.assert_allclose(r.fetch(), out, rtol=1e-3, atol=1e-3)
    assert r.compile_stats()["graphs"] == 1, r.compile_stats()
    r.close()


@needs_cuda
def test_bench_torch_compile_rows_compile_one_graph_each(exported, tmp_path):
    """More rows than dynamo's default recompile limit would allow with two graphs a row, all compiled."""
    from resnet_deploy.bench import BenchConfig, run_bench

    cfg = BenchConfig(engines=["torch-compile"], depths=[18], precisions=["fp16"], batches=[1, 2, 4, 8, 16],
                      min_time=0.05, min_iters=3, warmup=2, bare_rounds=1)
    rows = run_bench(cfg, out=tmp_path, run_id="compile", command="pytest").rows
    assert [r["status"] for r in rows] == ["ok"] * 5, [(r["batch"], r["reason"]) for r in rows]
    assert [r["compile_graphs"] for r in rows] == [1] * 5 and all(r["compile_s"] > 0 for r in rows)


@needs_cuda
def test_bench_gpu_rows(exported, tmp_path):
    """The GPU sweep end to end: compute-only columns, CUDA-event / synchronised clocks, device memory."""
    from resnet_deploy.bench import BenchConfig, run_bench

    exported("resnet18")
    engines = ["torch"] + (["ort-cuda"] if _ort_cuda_reason() is None else [])
    cfg = BenchConfig(engines=engines, depths=[18], precisions=["fp32", "fp16"], batches=[1, 8], min_time=0.2,
                      min_iters=5, warmup=3, bare_rounds=2, artifacts=str(exported.root))
    result = run_bench(cfg, out=tmp_path, run_id="gpu", command="pytest")
    rows = [r for r in result.rows if r["backend"] in engines]
    assert len(rows) == len(engines) * 2 * 2, [(r["backend"], r["status"], r["reason"]) for r in result.rows]
    for r in rows:
        assert r["status"] == "ok", (r["backend"], r["precision"], r["batch"], r["reason"])
        assert r["compute_p50_ms"] > 0 and r["latency_p50_ms"] > 0
        assert r["scope"] == "end-to-end + compute-only"
        assert r["memory_kind"].startswith("GPU") and r["memory_mib"] > 0
        assert math.isfinite(r["harness_overhead_pct"])
        assert r["parity_passed"] is True
    torch_rows = [r for r in rows if r["backend"] == "torch"]
    assert all(r["compute_clock"] == "cuda-events (torch)" for r in torch_rows), {r["compute_clock"] for r in torch_rows}
    assert result.environment["gpu"]["present"] is True, result.environment["gpu"]


@needs_cuda
def test_bench_several_streams_on_the_gpu(exported, tmp_path):
    """Two instances at once, each on its own CUDA stream (torch) or session (ort-cuda): parity
    alone and under load, and the aggregate figure."""
    from resnet_deploy.bench import BenchConfig, run_bench

    exported("resnet18")
    engines = ["torch"] + (["ort-cuda"] if _ort_cuda_reason() is None else [])
    cfg = BenchConfig(engines=engines, depths=[18], precisions=["fp16"], batches=[8], min_time=0.3, min_iters=5,
                      warmup=3, bare=False, streams=2, artifacts=str(exported.root))
    result = run_bench(cfg, out=tmp_path, run_id="gpu-streams", command="pytest")
    rows = [r for r in result.rows if r["backend"] in engines]
    assert len(rows) == len(engines), [(r["backend"], r["status"], r["reason"]) for r in result.rows]
    for r in rows:
        assert r["status"] == "ok", (r["backend"], r["reason"], r["streams_note"])
        assert r["streams"] == 2 and r["streams_throughput_ips"] > 0, r["streams_note"]
        assert "CUDA stream" in r["streams_note"]
