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
    """Enough of cuda.bindings.runtime to catch data-path bugs, not only to run the data path.

    * Device memory is apart from host memory: ``cudaMalloc`` returns addresses in a fake device
      range backed by ``buffers[addr]`` (bytearrays no host pointer reaches); ``cudaMallocHost``
      returns real pinned-host stand-ins (ctypes buffers) the runner views with numpy.
    * ``cudaMemcpyAsync`` honours ``cudaMemcpyKind``: a host-to-device copy needs a host source and a
      device destination, a device-to-host copy the reverse; anything else is
      ``cudaErrorInvalidValue`` (1), as CUDA answers.
    * Work is asynchronous: copies, kernels (``execute_async_v3``), event records and graph launches
      are queued on their stream and happen only at ``cudaStreamSynchronize`` (or
      ``cudaEventSynchronize`` of an event recorded after them). A missing synchronize reads stale data.
    * Stream capture records the stream's work into a graph instead of queueing it.
    """

    cudaStreamNonBlocking = 1
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToHost=0, cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2,
                                           cudaMemcpyDeviceToDevice=3)
    cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)
    DEVICE_BASE = 1 << 60  # beyond any user-space host address (x86-64 and arm64 use 47-48 bits)
    INVALID_VALUE = 1

    def __init__(self):
        self.buffers: dict[int, bytearray] = {}  # device allocations
        self.host: dict[int, object] = {}  # pinned host allocations (kept alive)
        self.queues: dict[int, list] = {}  # stream -> pending work
        self.capture, self.launches, self.freed = None, 0, []
        self.freed_device, self.freed_host, self.streams, self.destroyed_streams = [], [], [], []
        self._next_device, self._next_stream = self.DEVICE_BASE, 77

    # ---- memory
    def cudaMalloc(self, n):
        addr, self._next_device = self._next_device, self._next_device + ((n + 0xFFF) & ~0xFFF) + 0x1000
        self.buffers[addr] = bytearray(n)
        return 0, addr

    def cudaMallocHost(self, n):
        import ctypes

        buf = ctypes.create_string_buffer(n)
        self.host[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def device_view(self, addr: int, n: int) -> memoryview:
        """The ``n`` bytes of device memory at ``addr`` (which may point inside an allocation)."""
        for base, buf in self.buffers.items():
            if base <= addr and addr + n <= base + len(buf):
                return memoryview(buf)[addr - base:addr - base + n]
        raise ValueError(f"{addr:#x}+{n} is not device memory")

    def is_device(self, addr: int) -> bool:
        return any(base <= addr < base + len(buf) for base, buf in self.buffers.items())

    # ---- streams and asynchronous work
    def cudaStreamCreateWithFlags(self, flags):
        s, self._next_stream = self._next_stream, self._next_stream + 1
        self.queues[s] = []
        self.streams.append(s)
        return 0, s

    def enqueue(self, stream, op):
        """Queue ``op`` on ``stream`` (or record it into the graph being captured there)."""
        if self.capture is not None and self.capture[0] == stream:
            self.capture[1].append(op)
        else:
            self.queues.setdefault(int(stream), []).append(op)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        import ctypes

        k = self.cudaMemcpyKind
        if kind == k.cudaMemcpyHostToDevice and not self.is_device(src) and self.is_device(dst):
            def op():
                self.device_view(dst, n)[:] = ctypes.string_at(src, n)
        elif kind == k.cudaMemcpyDeviceToHost and self.is_device(src) and not self.is_device(dst):
            def op():
                ctypes.memmove(dst, bytes(self.device_view(src, n)), n)
        else:
            return (self.INVALID_VALUE,)
        self.enqueue(stream, op)
        return (0,)

    def cudaStreamSynchronize(self, s):
        queue = self.queues.setdefault(int(s), [])
        while queue:
            queue.pop(0)()
        return (0,)

    def cudaSetDevice(self, i):
        return (0,)

    def cudaGetLastError(self):
        return (0,)

    # ---- graphs
    def cudaStreamBeginCapture(self, s, mode):
        self.capture = (int(s), [])
        return (0,)

    def cudaStreamEndCapture(self, s):
        graph, self.capture = self.capture[1], None
        return 0, graph

    def cudaGraphInstantiate(self, graph, flags):
        return 0, list(graph)

    def cudaGraphLaunch(self, exe, s):
        self.launches += 1
        for op in exe:
            self.enqueue(s, op)
        return (0,)

    def _free(self, *a):
        self.freed.append(a)
        return (0,)

    def cudaFree(self, ptr):
        self.freed_device.append(ptr)
        return self._free(ptr)

    def cudaFreeHost(self, ptr):
        self.freed_host.append(ptr)
        return self._free(ptr)

    def cudaStreamDestroy(self, s):
        self.destroyed_streams.append(int(s))
        return self._free(s)

    def live(self) -> dict[str, list[int]]:
        """What was allocated or created and not yet released (a double release shows as a negative count)."""
        def left(made, released):
            out = [x for x in made if x not in released]
            return out + [-1] * (len(released) - len(set(released)))
        return {"device": left(list(self.buffers), self.freed_device), "host": left(list(self.host), self.freed_host),
                "streams": left(self.streams, self.destroyed_streams)}

    # ---- events (bench's CudartEventClock) and memory info (bench's memory probe)
    def cudaEventCreate(self):
        return 0, {"t": None}

    def cudaEventRecord(self, ev, stream):
        import time

        ev["stream"] = int(stream)
        ev["t"] = None
        self.enqueue(stream, lambda: ev.__setitem__("t", time.perf_counter()))
        return (0,)

    def cudaEventSynchronize(self, ev):
        queue = self.queues.setdefault(ev.get("stream", 77), [])
        while ev["t"] is None and queue:
            queue.pop(0)()
        return (0,)

    def cudaEventElapsedTime(self, a, b):
        if a["t"] is None or b["t"] is None:
            return 600, 0.0  # cudaErrorNotReady: an event not yet reached
        return 0, (b["t"] - a["t"]) * 1e3

    def cudaEventDestroy(self, ev):
        return (0,)

    def cudaMemGetInfo(self):
        return 0, 1 << 30, 2 << 30

    cudaGraphDestroy = cudaGraphExecDestroy = _free


def fake_trt(cudart: FakeCudart, flavour: str = "trt"):
    """A 'TensorRT' (or, ``flavour="trt-rtx"``, a 'TensorRT-RTX') whose engine maps input [N,3,4,4]
    to per-channel means [N,3], computed on the fake device: it reads and writes device buffers only,
    queued on the stream ``execute_async_v3`` is given."""
    runtimes = []
    rtx = flavour == "trt-rtx"

    profile = [(1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)]

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            pass

    class Context:
        def __init__(self, runtime_config=None):
            self.shape, self.addr, self.runtime_config = None, {}, runtime_config

        def set_input_shape(self, name, shape):
            if not all(lo <= s <= hi for lo, s, hi in zip(profile[0], shape, profile[2])):
                return False
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shape if name == "input" else (self.shape[0], 3)

        def set_tensor_address(self, name, ptr):
            if not cudart.is_device(ptr):
                return False  # TensorRT takes device addresses
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream):
            n, shape = self.shape[0], self.shape
            src, dst = self.addr["input"], self.addr["logits"]

            def kernel():
                size = int(np.prod(shape))
                x = np.frombuffer(cudart.device_view(src, size * 4), np.float32).reshape(shape)
                y = np.frombuffer(cudart.device_view(dst, n * 3 * 4), np.float32).reshape(n, 3)
                y[:] = x.mean(axis=(2, 3))

            cudart.enqueue(stream, kernel)
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

        def create_execution_context(self, runtime_config=None):
            return Context(runtime_config)

        if rtx:
            def create_runtime_config(self):
                return types.SimpleNamespace(cuda_graph_strategy=None)

    class Runtime:
        num_DLA_cores = 0 if rtx else 2  # a Jetson AGX Orin

        def __init__(self, logger):
            self.DLA_core = -1
            self.engine_host_code_allowed = False
            runtimes.append(self)

        def deserialize_cuda_engine(self, blob):
            self.core_at_deserialize = self.DLA_core  # IRuntime.DLA_core must be set before this
            self.host_code_at_deserialize = self.engine_host_code_allowed
            return Engine() if blob == b"fake-engine" else None

    module = types.SimpleNamespace(
        __name__="tensorrt_rtx" if rtx else "tensorrt", __version__="1.7.1.116" if rtx else "10.9.0.34",
        ILogger=ILogger, Runtime=Runtime, runtimes=runtimes,
        TensorIOMode=types.SimpleNamespace(INPUT="IN", OUTPUT="OUT"), nptype=lambda dt: dt,
    )
    if rtx:
        module.CudaGraphStrategy = types.SimpleNamespace(DISABLED=0, WHOLE_GRAPH_CAPTURE=1)
    return module


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


def install_fake_tensorrt(tmp_path: Path, monkeypatch, flavour: str = "trt"):
    """Point the TensorRT runner at :class:`FakeCudart` and :func:`fake_trt`; return (module, engine path, cudart)."""
    import resnet_deploy.runners.tensorrt as rt
    import resnet_deploy.runners.tensorrt_loader as loader

    cudart = FakeCudart()
    fake = fake_trt(cudart, flavour)
    for module in (loader, rt):  # the loader loads; the runner's unavailable() asks the same questions
        monkeypatch.setattr(module, "cuda_device_info",
                            lambda i=0: ({"index": i, "name": "Fake A10", "compute_capability": "8.6"}, ""))
        monkeypatch.setattr(module, "import_flavour", lambda f: fake)
    monkeypatch.setattr(loader, "load_cudart", lambda: cudart)
    path = tmp_path / f"fake.fp32.{flavour}.engine"
    path.write_bytes(b"fake-engine")
    target = ({"compute_capabilities": ["8.6"]} if flavour == "trt-rtx"
              else {"compute_capability": "8.6", "hardware_compatibility": None})
    write_manifest(path, {"flavour": flavour, "builder_version": fake.__version__, "precision": "fp32",
                          "engine_bytes": path.stat().st_size, "engine_sha256": sha256_file(path), "target": target})
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
