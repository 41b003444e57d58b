"""The ONNX Runtime runner: provider and session options, the bound (device-resident) path on the
CPU provider, and the CUDA provider's failure modes (a silent CPU fallback, a refused CUDA graph)."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy.errors import BackendUnavailable, UserError
from resnet_deploy.runners import make_runner, open_runner
from resnet_deploy.runners import ort as ort_runner

ort = pytest.importorskip("onnxruntime", reason="needs ONNX Runtime: pip install -e '.[cpu]'")


def test_provider_and_session_options_and_the_bound_path(exported, monkeypatch):
    """The public hooks: provider/session options, stage + enqueue + synchronize + fetch on bound buffers."""
    m = exported("resnet18")
    seen = []
    real = ort.InferenceSession

    def spy(path, options, providers):
        seen.append(providers)
        return real(path, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    r = open_runner("ort", m["path"], precision="fp32", provider_options={"arena_extend_strategy": "kSameAsRequested"},
                    session_options={"enable_mem_pattern": False, "session.intra_op.allow_spinning": "0"})
    monkeypatch.setattr(ort, "InferenceSession", real)
    # provider options go to the backend's first provider (the CPU one does not report them back)
    assert seen == [[("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})]]
    opts = r.session.get_session_options()
    assert opts.enable_mem_pattern is False
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    x = [np.random.default_rng(i).standard_normal((2, 3, 224, 224), dtype=np.float32) for i in range(2)]
    want = [r.infer(xi) for xi in x]
    with pytest.raises(UserError, match="stage"):
        r.enqueue()
    for i in (1, 0):
        r.stage(x[i])
        x[i] += 1.0  # the bound input is its own buffer, not a view of the staged array
        r.enqueue()
        r.synchronize()
        np.testing.assert_allclose(r.fetch(), want[i], rtol=1e-4, atol=1e-4)
    r.stage(x[0][:1] - 1.0)  # another batch size binds anew
    r.enqueue()
    np.testing.assert_allclose(r.fetch(), want[0][:1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r.infer(x[0] - 1.0), want[0], rtol=1e-4, atol=1e-4)  # infer unchanged
    r.close()
    r.close()
    with pytest.raises(UserError, match="not open"):
        r.infer(x[0])


def test_ort_cuda_that_falls_back_to_cpu_is_unavailable(exported, monkeypatch):
    """onnxruntime silently falls back to the CPU provider when CUDA's libraries do not load: the
    runner must refuse, or a CPU figure would be reported as ort-cuda."""
    m = exported("resnet18")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ort_runner.preload_cuda_libraries.cache_clear()
    monkeypatch.setattr(ort, "preload_dlls", lambda: print("Failed to load libcudnn.so.9: cannot open shared object file"),
                        raising=False)
    with pytest.raises(BackendUnavailable, match=r"has CUDAExecutionProvider but could not start it.*fell back to CPUExecutionProvider.*libcudnn"):
        open_runner("ort-cuda", m["path"], precision="fp32")
    ort_runner.preload_cuda_libraries.cache_clear()


def test_a_refused_cuda_graph_falls_back_and_says_so(exported):
    """ONNX Runtime refuses enable_cuda_graph when the graph is not wholly on the CUDA provider,
    already when the session is made: the runner then runs without graphs and says so."""
    m = exported("resnet18")
    r = make_runner("ort", m["path"], precision="fp32", io_binding=True)
    r.cuda_graph = True  # as ort-cuda would ask; the CPU provider has no graphs, so the refusal is staged
    real = r._new_session

    def new_session(graph):
        if graph:
            raise UserError("onnxruntime cannot load x.onnx: This session cannot use the CUDA Graph feature as requested")
        return real(graph)

    r._new_session = new_session
    with r:
        assert r.infer(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 1000)
        d = r.describe()
    assert d["cuda_graph"] is False and d["notes"][0] == "I/O binding"
    assert d["notes"][1].startswith("CUDA graph capture failed (onnxruntime cannot load")


def test_a_failed_capture_reruns_without_a_graph(exported):
    """A capture that fails on the first bound run: the runner reopens without a graph, re-stages, and answers."""
    m = exported("resnet18")
    r = make_runner("ort", m["path"], precision="fp32", io_binding=True)
    r.cuda_graph = True
    real = r._new_session

    class Refusing:
        def __init__(self, session):
            self.session = session

        def run_with_iobinding(self, binding):
            raise RuntimeError("cudaErrorStreamCaptureUnsupported")

        def __getattr__(self, name):
            return getattr(self.session, name)

    r._new_session = lambda graph: Refusing(real(False)) if graph else real(False)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    with r:
        y = r.infer(x)
        assert r.describe()["cuda_graph"] is False and "cudaErrorStreamCaptureUnsupported" in r.notes[0]
    with open_runner("ort", m["path"]) as plain:
        np.testing.assert_allclose(y, plain.infer(x), rtol=1e-4, atol=1e-4)


def test_sessions_beside_each_other_run_without_cuda_graphs():
    """ONNX Runtime captures CUDA graphs in global capture mode, which another thread's synchronous
    update_inplace copy breaks (CUDA forbids it): several-streams sessions are opened without graphs."""
    from resnet_deploy.runners.ort import OrtRunner

    assert OrtRunner.timing_options("ort-cuda")["cuda_graph"] is True
    assert OrtRunner.timing_options("ort-cuda", beside_others=True)["cuda_graph"] is False
