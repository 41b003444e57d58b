"""The timing core: warm-up, a timed loop that covers a minimum time and a minimum count,
percentiles, a bare loop to check the harness costs nothing, and memory probes.

Torch-free and GPU-free at import time. A *clock* turns one call into seconds:

* :class:`HostClock` - ``time.perf_counter`` around a call that is synchronous when it returns
  (every CPU backend, and GPU runners whose ``infer`` synchronises before returning numpy);
* :class:`TorchEventClock` - ``torch.cuda.Event(enable_timing=True)`` recorded on the current
  stream around the call, then ``end.synchronize()`` and ``start.elapsed_time(end)``;
* :class:`CudartEventClock` - the same with cuda-python's ``cudaEventRecord`` /
  ``cudaEventElapsedTime`` on a given stream (TensorRT runners, which own their stream).

Each timed iteration waits for its own result before the next starts (MLPerf single-stream
discipline), so a per-iteration sample is a latency, and batch / median latency is the
throughput at that batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

Call = Callable[[int], Any]
"""``call(i)`` runs one inference on pre-made input buffer ``i`` (the caller rotates)."""
CPU_WARMUP = 3      # warm-up calls before timing a CPU backend (when --warmup is not given)
GPU_WARMUP = 20     # ... a GPU backend (clocks ramp up, lazy allocations, autotuning)

Now = Callable[[], float]
"""A monotonic clock in seconds: ``time.perf_counter``, or a fake one in tests."""


# ------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


@dataclass
class Stats:
    """Summary of per-iteration latencies, in milliseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    std: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> "Stats":
        s = sorted(float(x) for x in samples_ms)
        if not s:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan, nan)
        mean = sum(s) / len(s)
        var = sum((x - mean) ** 2 for x in s) / max(1, len(s) - 1)
        return cls(len(s), percentile(s, 50), percentile(s, 90), percentile(s, 99), mean, s[0], s[-1], math.sqrt(var))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Timing:
    """What one :func:`measure` call saw."""

    clock: str
    warmup: int
    first_call_s: float          # the first warm-up call alone (compilation, graph capture, lazy init)
    warmup_s: float              # all warm-up calls
    iterations: int
    timed_wall_s: float          # wall time of the timed loop, bookkeeping included
    samples_ms: list[float] = field(repr=False)
    stats: Stats | None = None
    stopped_by: str = "min_time+min_iters"

    def __post_init__(self) -> None:
        if self.stats is None:
            self.stats = Stats.of(self.samples_ms)


# ------------------------------------------------------------------------------------------
# clocks
# ------------------------------------------------------------------------------------------


class HostClock:
    """``perf_counter`` around a call that has finished its work when it returns."""

    name = "perf_counter"

    def __init__(self, sync: Callable[[], None] | None = None, now: Now = time.perf_counter):
        self.sync = sync  # called after the call, inside the timed region, for asynchronous calls
        self.now = now

    def time(self, call: Call, i: int) -> float:
        sync, now = self.sync, self.now
        t0 = now()
        call(i)
        if sync is not None:
            sync()
        return now() - t0


class TorchEventClock:
    """CUDA events on a torch stream (torch's current one by default): compute-only timing of device-resident calls."""

    name = "cuda-events (torch)"

    def __init__(self, torch_module: Any, stream: Any = None):
        self.torch = torch_module
        self.stream = stream
        self.start = torch_module.cuda.Event(enable_timing=True)
        self.end = torch_module.cuda.Event(enable_timing=True)

    def time(self, call: Call, i: int) -> float:
        self.start.record(self.stream)
        call(i)
        self.end.record(self.stream)
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3


class CudartEventClock:
    """CUDA events through cuda-python on an explicit stream (``cudaEventRecord``)."""

    name = "cuda-events (cudart)"

    def __init__(self, cudart: Any, stream: Any):
        self.cudart, self.stream = cudart, stream
        err, self.start = cudart.cudaEventCreate()
        _check(err, "cudaEventCreate")
        err, self.end = cudart.cudaEventCreate()
        _check(err, "cudaEventCreate")

    def time(self, call: Call, i: int) -> float:
        cudart = self.cudart
        _check(cudart.cudaEventRecord(self.start, self.stream)[0], "cudaEventRecord")
        call(i)
        _check(cudart.cudaEventRecord(self.end, self.stream)[0], "cudaEventRecord")
        _check(cudart.cudaEventSynchronize(self.end)[0], "cudaEventSynchronize")
        err, ms = cudart.cudaEventElapsedTime(self.start, self.end)
        _check(err, "cudaEventElapsedTime")
        return float(ms) / 1e3

    def close(self) -> None:
        for ev in (getattr(self, "start", None), getattr(self, "end", None)):
            if ev is not None:
                self.cudart.cudaEventDestroy(ev)
        self.start = self.end = None


def _check(err: Any, what: str) -> None:
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {err}")


# ------------------------------------------------------------------------------------------
# the loops
# ------------------------------------------------------------------------------------------


def measure(call: Call, n_inputs: int, *, warmup: int = 3, min_time: float = 1.0, min_iters: int = 10,
            max_iters: int | None = None, clock: Any = None, before: Call | None = None,
            sync: Callable[[], None] | None = None, now: Now = time.perf_counter) -> Timing:
    """Warm up, then time ``call(i % n_inputs)`` until ``min_time`` seconds AND ``min_iters`` runs.

    ``before(i)`` runs untimed before each timed call (staging input ``i`` on the device for a
    compute-only figure). ``max_iters`` bounds the loop for slow backends. ``clock`` defaults to
    :class:`HostClock` on ``now`` (with ``sync`` inside the timed region). Every sample is one call.
    """
    if n_inputs < 1:
        raise ValueError("need at least one input buffer")
    if min_iters < 1:
        raise ValueError("min_iters must be >= 1")
    clock = clock or HostClock(sync, now)
    t_w = now()
    first = 0.0
    for k in range(max(0, warmup)):
        if before is not None:
            before(k % n_inputs)
        t0 = now()
        call(k % n_inputs)
        if sync is not None:
            sync()
        if k == 0:
            first = now() - t0
    warmup_s = now() - t_w

    samples: list[float] = []
    append = samples.append
    timer = clock.time
    stopped = "min_time+min_iters"
    t_start = now()
    i = 0
    while True:
        idx = i % n_inputs
        if before is not None:
            before(idx)
        append(timer(call, idx) * 1e3)
        i += 1
        if i >= min_iters and now() - t_start >= min_time:
            break
        if max_iters is not None and i >= max_iters:
            stopped = "max_iters"
            break
    wall = now() - t_start
    return Timing(clock=clock.name, warmup=max(0, warmup), first_call_s=first, warmup_s=warmup_s, iterations=i,
                  timed_wall_s=wall, samples_ms=samples, stopped_by=stopped)


@dataclass
class ConcurrentTiming:
    """What :func:`measure_concurrent` saw: ``streams`` callers running at once."""

    streams: int
    calls: list[int]                 # timed calls per stream
    wall_s: list[float]              # per stream: from the start line to its last completion
    samples_ms: list[float] = field(repr=False)   # every timed call of every stream
    last: list[tuple[int, Any]] = field(repr=False, default_factory=list)  # per stream: (buffer, last output)
    stats: Stats | None = None

    def __post_init__(self) -> None:
        if self.stats is None:
            self.stats = Stats.of(self.samples_ms)

    @property
    def total_calls(self) -> int:
        return sum(self.calls)

    def throughput(self, batch: int) -> float:
        """Images per second of all streams together: the sum of each stream's own rate over its
        own span from the start line, so that no stream's figure includes time it spent waiting
        for the others to finish."""
        return sum(n * batch / w for n, w in zip(self.calls, self.wall_s) if w > 0)


class _Streams:
    """The shared state of :func:`measure_concurrent`'s threads: a start line, a stop flag, and each stream's figures."""

    def __init__(self, calls: Sequence[Call], n_inputs: int, warmup: int, min_iters: int,
                 contexts: Sequence[Callable[[], Any]]):
        n = len(calls)
        self.calls, self.n_inputs, self.warmup, self.min_iters, self.contexts = calls, n_inputs, warmup, min_iters, contexts
        self.start_line = threading.Barrier(n + 1)
        self.stop = threading.Event()
        self.errors: list[BaseException | None] = [None] * n
        self.samples: list[list[float]] = [[] for _ in range(n)]
        self.spans = [0.0] * n
        self.last: list[tuple[int, Any]] = [(0, None)] * n

    def worker(self, k: int) -> None:
        try:
            with self.contexts[k]():
                self._run(k)
        except threading.BrokenBarrierError:
            pass  # another thread failed before the start
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.errors[k] = e
            self.stop.set()
            self.start_line.abort()

    def _run(self, k: int) -> None:
        call, n_inputs = self.calls[k], self.n_inputs
        for j in range(max(0, self.warmup)):
            call((k + j) % n_inputs)
        self.start_line.wait()
        t_start = time.perf_counter()
        mine = self.samples[k]
        i = 0
        while True:
            idx = (k + i) % n_inputs
            t0 = time.perf_counter()
            out = call(idx)
            t1 = time.perf_counter()
            mine.append((t1 - t0) * 1e3)
            i += 1
            if i >= self.min_iters and self.stop.is_set():
                break
        self.spans[k] = t1 - t_start
        self.last[k] = (idx, out)

    def hold_for(self, min_time: float) -> None:
        """Release the threads at once, let them run ``min_time`` seconds, then stop them and wait."""
        try:
            self.start_line.wait()
            deadline = time.perf_counter() + max(0.0, min_time)
            # short waits: the main thread stays responsive to Ctrl-C however long min_time is
            while not self.stop.is_set() and (left := deadline - time.perf_counter()) > 0:
                self.stop.wait(min(left, 0.1))
        except threading.BrokenBarrierError:
            pass
        self.stop.set()


def measure_concurrent(calls: Sequence[Call], n_inputs: int, *, warmup: int = 3, min_time: float = 1.0,
                       min_iters: int = 10, contexts: Sequence[Callable[[], Any]] | None = None) -> ConcurrentTiming:
    """Run every ``calls[k]`` in its own thread at once (one stream each) and time them together.

    Each thread warms up on its own, then all start on a barrier and call back to back,
    rotating the input buffers from a different offset, until ``min_time`` seconds have passed
    on the common clock and the thread has made ``min_iters`` calls. ``contexts[k]()`` is
    entered inside thread ``k`` (thread-local state: ``torch.inference_mode``, a CUDA stream).
    The backends must release the GIL while they compute (ONNX Runtime, PyTorch and TensorRT
    do), or the figure shows that they do not. An exception in any thread stops all of them
    and is raised here; so is Ctrl-C.
    """
    n = len(calls)
    if n < 1:
        raise ValueError("need at least one call")
    if n_inputs < 1:
        raise ValueError("need at least one input buffer")
    if min_iters < 1:
        raise ValueError("min_iters must be >= 1")
    st = _Streams(calls, n_inputs, warmup, min_iters,
                  list(contexts) if contexts is not None else [contextlib.nullcontext] * n)
    threads = [threading.Thread(target=st.worker, args=(k,), name=f"stream-{k}", daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    try:
        st.hold_for(min_time)
    except BaseException:
        st.stop.set()
        st.start_line.abort()
        raise
    finally:
        for t in threads:
            t.join()
    for e in st.errors:
        if e is not None:
            raise e
    return ConcurrentTiming(streams=n, calls=[len(s) for s in st.samples], wall_s=st.spans,
                            samples_ms=[x for s in st.samples for x in s], last=st.last)


@dataclass
class BareResult:
    """A bare loop: one clock pair around ``rounds`` blocks of ``iters`` calls each."""

    iterations: int
    rounds: int
    mean_ms: float                      # total time / total calls

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bare_loop(call: Call, n_inputs: int, iters: int, *, sync: Callable[[], None] | None = None,
              rounds: int = 1, now: Now = time.perf_counter) -> BareResult:
    """The least code that can time ``call``: no per-call clocks, no bookkeeping.

    ``sync`` (a device synchronise) runs after each call, as a minimal script would before
    reading a host clock. Same inputs, same rotation as the harness.
    """
    iters = max(1, int(iters))
    rounds = max(1, int(rounds))
    per_round = max(1, iters // rounds)
    total_t = 0.0
    total_n = 0
    for _ in range(rounds):
        t0 = now()
        if sync is None:
            for k in range(per_round):
                call(k % n_inputs)
        else:
            for k in range(per_round):
                call(k % n_inputs)
                sync()
        total_t += now() - t0
        total_n += per_round
    return BareResult(iterations=total_n, rounds=rounds, mean_ms=total_t / total_n * 1e3)


@dataclass
class OverheadCheck:
    """Harness blocks and bare blocks, alternated so that both see the same machine load."""

    rounds: int
    calls_per_block: int
    harness_mean_ms: float          # mean per-call time as the harness records it, over all harness blocks
    bare_mean_ms: float             # total / calls over all bare blocks
    overhead_pct: float             # median over rounds of (harness block mean / bare block mean - 1)
    round_overheads_pct: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_overhead(call: Call, n_inputs: int, *, calls_per_block: int, rounds: int = 5, clock: Any = None,
                    before: Call | None = None, sync: Callable[[], None] | None = None,
                    now: Now = time.perf_counter) -> OverheadCheck:
    """Does the harness cost speed? Alternate ``rounds`` x (harness block, bare block) of the same calls.

    A harness block is :func:`measure` itself (per-call clock, rotation, bookkeeping); a bare block
    is :func:`bare_loop`. Both are read on the same clock: the wall time of the whole block per
    call, with a synchronize after each call on both sides (the harness's own per-call clock, CUDA
    events on a GPU, would not see what the harness adds between calls). ``before`` staging is the
    one thing taken out of the harness block's time: the bare block re-uses the staged buffer 0.
    Each round's ratio compares two blocks run back to back, so slow drifts of machine load cancel;
    the median over rounds resists a burst. ``now`` is the block clock (and the default per-call one).
    """
    m = max(1, int(calls_per_block))
    rounds = max(1, int(rounds))
    ratios, h_ms, b_ms = [], [], []
    staging = [0.0]

    def staged(i: int) -> None:
        t0 = now()
        before(i)
        staging[0] += now() - t0

    for _ in range(rounds):
        staging[0] = 0.0
        t0 = now()
        measure(call, n_inputs, warmup=0, min_time=0.0, min_iters=m, max_iters=m, clock=clock,
                before=staged if before is not None else None, sync=sync, now=now)
        if sync is not None:
            sync()
        h = (now() - t0 - staging[0]) / m * 1e3
        if before is not None:
            before(0)
        b = bare_loop(call, 1 if before is not None else n_inputs, m, sync=sync, now=now)
        h_ms.append(h)
        b_ms.append(b.mean_ms)
        ratios.append(overhead_pct(h, b.mean_ms))
    ratios_sorted = sorted(r for r in ratios if math.isfinite(r))
    med = percentile(ratios_sorted, 50) if ratios_sorted else float("nan")
    return OverheadCheck(rounds=rounds, calls_per_block=m, harness_mean_ms=sum(h_ms) / len(h_ms),
                         bare_mean_ms=sum(b_ms) / len(b_ms), overhead_pct=med, round_overheads_pct=ratios)


def overhead_pct(harness_mean_ms: float, bare_mean_ms: float) -> float:
    """How much slower the harness's mean per call is than the bare loop's (negative: faster)."""
    if not (bare_mean_ms > 0) or not math.isfinite(harness_mean_ms):
        return float("nan")
    return (harness_mean_ms - bare_mean_ms) / bare_mean_ms * 100.0


# ------------------------------------------------------------------------------------------
# host memory
# ------------------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssProbe:
    """Peak resident set size of this process above a baseline, in MiB.

    On Linux the kernel's high-water mark (``VmHWM``) is reset to the current RSS by writing
    ``5`` to ``/proc/self/clear_refs``, so each row gets its own peak. Elsewhere
    ``ru_maxrss`` is used: a lifetime peak, so later rows can only report growth.
    """

    def __init__(self) -> None:
        self.method = "VmHWM (reset per row)" if self._can_reset() else "ru_maxrss (process lifetime)"
        self.baseline_kib = self.current_kib()

    @staticmethod
    def _can_reset() -> bool:
        if _status_kib("VmHWM") is None:
            return False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def current_kib() -> int:
        v = _status_kib("VmRSS")
        if v is not None:
            return v
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    def set_baseline(self) -> None:
        self.baseline_kib = self.current_kib()

    def reset_peak(self) -> None:
        if self.method.startswith("VmHWM"):
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass

    def peak_kib(self) -> int:
        if self.method.startswith("VmHWM"):
            v = _status_kib("VmHWM")
            if v is not None:
                return v
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    def peak_delta_mib(self) -> float:
        return max(0, self.peak_kib() - self.baseline_kib) / 1024.0


def cpu_pressure() -> dict[str, float] | None:
    """Linux pressure stall information for the CPU: the share of time (%) some task waited for a
    CPU over the last 10 s / 60 s / 300 s. A better "was the machine busy" figure than the load."""
    try:
        with open("/proc/pressure/cpu") as f:
            for line in f:
                if line.startswith("some "):
                    fields = dict(kv.split("=") for kv in line.split()[1:])
                    return {k: float(fields[k]) for k in ("avg10", "avg60", "avg300") if k in fields}
    except (OSError, ValueError):
        return None
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


__all__ = ["CPU_WARMUP", "GPU_WARMUP", "Stats", "Timing", "ConcurrentTiming", "measure_concurrent", "HostClock",
           "TorchEventClock", "CudartEventClock", "measure", "bare_loop", "BareResult", "OverheadCheck",
           "paired_overhead", "overhead_pct", "percentile", "RssProbe", "load_average", "cpu_pressure"]
