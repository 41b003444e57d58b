"""Every backend in the registry through the one runner contract.

Construction stores settings; ``describe()`` works before ``open()``; ``infer`` refuses a closed
runner and a batch that does not fit, and returns float32 logits [N, classes]; ``close()`` twice
is fine. A backend that cannot run here is skipped with the reason the registry gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from resnet_deploy.errors import UserError
from resnet_deploy.runners import BACKENDS, REGISTRY, artifact_kind, make_runner, unavailable

DESCRIBE_KEYS = {"backend", "version", "device", "precision", "notes"}


class TinyNet(nn.Module):
    """Small enough that torch.compile on a CPU takes seconds."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 7)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def artifacts(exported):
    return {"torch": TinyNet().eval(), "onnx": exported("resnet18")["path"]}


def test_the_registry_names_every_backend():
    assert set(BACKENDS) == {"torch", "torch-compile", "ort", "ort-cuda", "openvino", "trt", "trt-rtx", "triton"}
    for name, entry in REGISTRY.items():
        assert entry.load().__name__ == entry.cls and artifact_kind(name) == entry.artifact
    with pytest.raises(UserError, match="unknown engine 'tensorflow'"):
        artifact_kind("tensorflow")


@pytest.mark.parametrize("backend", BACKENDS)
def test_runner_contract(backend, artifacts, tmp_path):
    why = unavailable(backend, "fp32")
    if why is not None:
        pytest.skip(f"{backend} cannot run here: {why}")
    kind = artifact_kind(backend)
    if kind == "served":
        pytest.skip(f"{backend} runs a served model: tests/serving checks its contract against a live Triton server")
    if kind not in artifacts:
        pytest.skip(f"{backend} needs a {kind} engine, which only a GPU with {backend} can build and run")
    check_contract(make_runner(backend, artifacts[kind], precision="fp32"), backend, 32 if kind == "torch" else 224)


def test_runner_contract_on_the_fake_tensorrt(fake_runner_env):
    """The TensorRT runner cannot execute here; its contract is checked against the fake TensorRT and cudart."""
    rt, path, _ = fake_runner_env
    check_contract(make_runner("trt", path, precision="fp32"), "trt", 4)


def check_contract(runner, backend: str, size: int) -> None:
    before = runner.describe()  # before open: settings only, nothing loaded
    assert DESCRIBE_KEYS <= set(before) and before["backend"] == backend and not runner.is_open
    with pytest.raises(UserError, match="not open"):
        runner.infer(np.zeros((1, 3, 32, 32), np.float32))
    with runner:
        assert runner.is_open and runner.input_spec is not None
        x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
        y = runner.infer(x)
        assert y.dtype == np.float32 and y.ndim == 2 and y.shape[0] == 2 and np.isfinite(y).all()
        np.testing.assert_allclose(runner.infer(x), y, rtol=1e-5, atol=1e-5)  # deterministic
        np.testing.assert_allclose(runner.infer(x[:1].astype(np.float64)), y[:1], rtol=1e-4, atol=1e-4)  # cast in
        for bad in (np.zeros((2, 3, size), np.float32), np.zeros((2, 3, size, size), np.int64),
                    np.zeros((0, 3, size, size), np.float32)):
            with pytest.raises(UserError):
                runner.infer(bad)
        if runner.input_spec.sample_shape[1] is not None:
            with pytest.raises(UserError, match="expected a batch of shape"):
                runner.infer(np.zeros((1, 3, size + 1, size), np.float32))
        after = runner.describe()
        assert DESCRIBE_KEYS <= set(after) and after["precision"] == "fp32"
    runner.close()  # twice is fine
    assert not runner.is_open
    with pytest.raises(UserError, match="not open"):
        runner.infer(x)


# ------------------------------------------------------------------------------------------
# what bench asks a runner class (bench names no backend: tests/bench/test_bench_design.py)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_declares_its_bench_facts(backend):
    from resnet_deploy.runners import runner_class

    cls = runner_class(backend)
    assert isinstance(cls.runs_on_gpu(backend), bool)
    assert isinstance(cls.in_default_sweep(backend, True), bool) and isinstance(cls.in_default_sweep(backend, False), bool)
    assert isinstance(cls.extra_warmup(backend), int) and cls.extra_warmup(backend) >= 0
    why = cls.streams_unsupported(backend)
    assert why is None or (isinstance(why, str) and why)
    for gpu in (False, True):
        assert cls.stream_instance_text(backend, gpu).startswith("its own ")


def test_the_bench_facts_of_the_backends_here():
    """What the bench used to know by name, now said by each runner class."""
    from resnet_deploy.runners import runner_class
    from resnet_deploy.runners.openvino import installed as openvino_installed
    from resnet_deploy.runners.torch_runner import cuda_available

    gpu_here = {b: runner_class(b).runs_on_gpu(b) for b in BACKENDS}
    assert gpu_here == {"torch": cuda_available(), "torch-compile": cuda_available(), "ort": False, "ort-cuda": True,
                        "openvino": False, "trt": True, "trt-rtx": True, "triton": False}  # (triton: the server computes)
    # OpenVINO, the fastest CPU path, joins the CPU sweep where it is installed
    assert [b for b in BACKENDS if runner_class(b).in_default_sweep(b, False)] == ["torch", "ort"] + (
        ["openvino"] if openvino_installed() else [])
    assert [b for b in BACKENDS if runner_class(b).in_default_sweep(b, True)] == [
        "torch", "torch-compile", "ort-cuda", "trt", "trt-rtx"]
    assert {b: runner_class(b).extra_warmup(b) for b in BACKENDS if runner_class(b).extra_warmup(b)} == {"torch-compile": 3}
    assert [b for b in BACKENDS if runner_class(b).streams_unsupported(b)] == ["torch-compile"]
    assert runner_class("ort-cuda").stream_instance_text("ort-cuda", True).startswith("its own InferenceSession (")


def test_set_process_threads_returns_what_to_restore():
    from resnet_deploy.runners import runner_class

    before = torch.get_num_threads()
    try:
        assert runner_class("torch").set_process_threads("torch", 1) == before and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert runner_class("ort").set_process_threads("ort", 1) is None  # ONNX Runtime takes threads per session
    assert runner_class("openvino").set_process_threads("openvino", 1) is None  # OpenVINO: per compiled model
