"""Test doubles shared by the test folders: a tiny hand-made ONNX, TensorRT and cuda-python fakes.

The fakes model just enough of ``cuda.bindings.runtime`` and ``tensorrt`` for the torch-free
runner's data path (bindings, profile checks, copies, CUDA-graph capture and replay) and the
builder's DLA configuration to run on any machine.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from resnet_deploy.artifacts import sha256_file, write_manifest
from resnet_deploy.engine import BuildOptions

IMAGE = 16
CLASSES = 10


class FakeCudart:
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


def fake_trt(cudart: FakeCudart):
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


def install_fake_tensorrt(tmp_path: Path, monkeypatch):
    """Point the TensorRT runner at :class:`FakeCudart` and :func:`fake_trt`; return (module, engine path, cudart)."""
    import resnet_deploy.runners.tensorrt as rt

    cudart = FakeCudart()
    monkeypatch.setattr(rt, "load_cudart", lambda: cudart)
    monkeypatch.setattr(rt, "cuda_device_info", lambda i=0: ({"index": i, "name": "Fake A10", "compute_capability": "8.6"}, ""))
    fake = fake_trt(cudart)
    monkeypatch.setattr(rt, "import_flavour", lambda f: fake)
    path = tmp_path / "fake.fp32.trt.engine"
    path.write_bytes(b"fake-engine")
    write_manifest(path, {"flavour": "trt", "builder_version": "10.9.0.34", "precision": "fp32",
                          "engine_bytes": path.stat().st_size, "engine_sha256": sha256_file(path),
                          "target": {"compute_capability": "8.6", "hardware_compatibility": None}})
    return rt, path, cudart


def fake_builder_config(cores: int):
    flags = []
    trt = types.SimpleNamespace(__name__="tensorrt", __version__="10.3.0.30",
                                DeviceType=types.SimpleNamespace(GPU="GPU", DLA="DLA"),
                                BuilderFlag=types.SimpleNamespace(GPU_FALLBACK="GPU_FALLBACK", FP16="FP16", INT8="INT8"))
    builder = types.SimpleNamespace(num_DLA_cores=cores)
    config = types.SimpleNamespace(default_device_type="GPU", DLA_core=-1, set_flag=flags.append, flags=flags)
    return trt, builder, config


def rtx_opts(**kw) -> BuildOptions:
    return BuildOptions(flavour="trt-rtx", **kw)


def photo(i: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def image_folder(root: Path, n: int, *, classes: int = 1, start: int = 0) -> Path:
    for i in range(n):
        d = root / f"c{i % classes}" if classes > 1 else root
        d.mkdir(parents=True, exist_ok=True)
        photo(start + i).save(d / f"img{start + i:03d}.png")
    return root
