"""A runner made ready to time one batch size: the calls, the clocks, and the memory probe.

Every backend is opened through :func:`resnet_deploy.runners.open_runner`; bench does not know
backends apart. :func:`prepare_timed_calls` gives the :class:`TimedCalls` of one batch size:

* ``e2e(i)``: host numpy buffer ``i`` in, host logits out, synchronous (:meth:`Runner.infer`).
  On a CPU backend this is the whole computation, so compute-only and end-to-end are the same.
* ``compute(i)``, where the runner is device-resident (a GPU): :meth:`Runner.enqueue` alone on
  the staged input, timed with CUDA events on the runner's stream (torch streams or cuda-python
  streams) or, for a runner without a stream of its own, a clock around the call and a
  synchronize; ``compute_before(i)`` stages buffer ``i`` (:meth:`Runner.stage` +
  :meth:`Runner.synchronize`) outside the timed region, so the inputs still rotate.
* ``infer(x)``: what parity runs, on exactly the timed path and shape (inputs are padded to
  the prepared batch, so a compiled or graph-captured shape is never changed by parity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .._native.cuda import load_cudart
from ..runners import TORCH_ALLOCATOR, Runner
from .timing import CudartEventClock, HostClock, RssProbe, TorchEventClock


def _torch():
    import torch  # bench's torch-free paths (ort, trt) never get here

    return torch


def torch_cuda() -> bool:
    try:
        return bool(_torch().cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, or a broken CUDA install
        return False


def device_used_bytes() -> int | None:
    """Device memory in use on GPU 0 (all processes), from ``cudaMemGetInfo``."""
    if torch_cuda():
        free, total = _torch().cuda.mem_get_info()
        return int(total - free)
    cudart = load_cudart()
    if cudart is None:
        return None
    res = cudart.cudaMemGetInfo()
    if int(res[0]) != 0:
        return None
    return int(res[2] - res[1])


class MemoryProbe:
    """Peak memory of one row: torch allocator peak, device use above baseline, or host RSS."""

    def __init__(self, kind: str, rss: RssProbe):
        self.kind = kind  # "torch-cuda", "cuda-meminfo", "host-rss"
        self.rss = rss
        self.base_device = 0
        self.peak_device = 0

    @classmethod
    def for_runner(cls, runner: Runner, rss: RssProbe) -> "MemoryProbe":
        if not runner.device_resident:
            return cls("host-rss", rss)
        return cls("torch-cuda" if runner.allocator == TORCH_ALLOCATOR else "cuda-meminfo", rss)

    @property
    def label(self) -> str:
        return {"torch-cuda": "GPU: torch allocator peak of this row (max_memory_allocated: weights, activations, "
                              "torch.compile's CUDA-graph pool; earlier rows' models are freed)",
                "cuda-meminfo": "GPU: device memory in use above the pre-load baseline (cudaMemGetInfo, sampled; "
                                "includes the library's memory arena and cuDNN's algorithm-search workspace)",
                "host-rss": f"CPU: peak RSS above the pre-load baseline ({self.rss.method})"}[self.kind]

    def baseline(self) -> None:
        if self.kind == "host-rss":
            self.rss.set_baseline()
        elif self.kind == "cuda-meminfo":
            self.base_device = device_used_bytes() or 0

    def row_start(self) -> None:
        if self.kind == "torch-cuda":
            _torch().cuda.reset_peak_memory_stats()
        elif self.kind == "host-rss":
            self.rss.reset_peak()
        self.peak_device = 0

    def sample(self) -> None:
        if self.kind == "cuda-meminfo":
            used = device_used_bytes() or 0
            self.peak_device = max(self.peak_device, used - self.base_device)

    def peak_mib(self) -> float | None:
        if self.kind == "torch-cuda":
            return _torch().cuda.max_memory_allocated() / 2**20
        if self.kind == "cuda-meminfo":
            self.sample()
            return self.peak_device / 2**20
        return self.rss.peak_delta_mib()


def is_oom(exc: BaseException) -> bool:
    """Out of memory on the device or the host, whatever library raised it."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc).lower()
    return ("OutOfMemory" in name or "out of memory" in text or "cudaerrormemoryallocation" in text
            or "failed to allocate memory" in text or "bfcarena" in text and "allocate" in text)


@dataclass
class TimedCalls:
    """The calls that time one batch size on one open runner, the clocks that read them, and how to close them."""

    batch: int
    e2e: Callable[[int], Any]
    infer: Callable[[np.ndarray], np.ndarray]
    e2e_clock: Any = None
    e2e_sync: Callable[[], None] | None = None
    compute: Callable[[int], Any] | None = None
    compute_clock: Any = None
    compute_before: Callable[[int], Any] | None = None
    compute_sync: Callable[[], None] | None = None
    notes: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


def padded_infer(run: Callable[[np.ndarray], np.ndarray], batch: int) -> Callable[[np.ndarray], np.ndarray]:
    """Infer any number of inputs in chunks of exactly ``batch`` (the last one padded by repetition)."""

    def infer(x: np.ndarray) -> np.ndarray:
        outs = []
        for s in range(0, len(x), batch):
            chunk = x[s:s + batch]
            k = len(chunk)
            if k < batch:
                reps = -(-batch // k)
                chunk = np.concatenate([chunk] * reps)[:batch]
            # copy: a runner may hand back a view of its own output buffer, which the next chunk overwrites
            outs.append(np.array(run(np.ascontiguousarray(chunk))[:k], dtype=np.float32, copy=True))
        return np.concatenate(outs)

    return infer


def event_clock(runner: Runner):
    """CUDA events on the runner's stream; a host clock around call + synchronize where it has none."""
    stream = runner.stream
    if stream is None:
        return HostClock(runner.synchronize)
    if hasattr(stream, "record_event"):  # a torch.cuda.Stream
        return TorchEventClock(_torch(), stream)
    return CudartEventClock(load_cudart(), stream)


def prepare_timed_calls(runner: Runner, batch: int, inputs: list[np.ndarray], *,
                        device_resident: bool | None = None) -> TimedCalls:
    """Ready ``runner`` (open) for timing ``batch``-sized calls on ``inputs``.

    ``device_resident`` (default: the runner's own) adds the compute-only call; the tests force
    it on a CPU ONNX Runtime session to run the GPU code path.
    """
    spec = runner.input_spec
    staged = [np.ascontiguousarray(x.astype(spec.dtype, copy=False)) for x in inputs]  # no cast inside a timed call
    calls = TimedCalls(batch=batch, e2e=lambda i: runner.infer(staged[i]), infer=padded_infer(runner.infer, batch))
    if not (runner.device_resident if device_resident is None else device_resident):
        return calls

    def before(i: int) -> None:
        runner.stage(staged[i])
        runner.synchronize()

    before(0)
    runner.enqueue()  # first runs outside any timing: lazy initialisation, graph capture
    runner.synchronize()
    clock = event_clock(runner)
    calls.compute = lambda i: runner.enqueue()
    calls.compute_before = before
    calls.compute_clock = clock
    calls.compute_sync = runner.synchronize
    calls.notes.append("compute-only: enqueue between " + ("CUDA events" if not isinstance(clock, HostClock)
                                                           else "a clock and a synchronize"))
    calls.close = getattr(clock, "close", lambda: None)
    return calls


__all__ = ["MemoryProbe", "TimedCalls", "prepare_timed_calls", "device_used_bytes", "event_clock", "is_oom", "padded_infer", "torch_cuda"]
