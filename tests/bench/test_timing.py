"""The timing core on functions of known duration, and the small helpers of the harness."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from resnet_deploy.bench import parse_list
from resnet_deploy.bench.timed_calls import is_oom, padded_infer
from resnet_deploy.bench.timing import RssProbe, Stats, bare_loop, measure, measure_concurrent, overhead_pct, paired_overhead, percentile
from resnet_deploy.errors import UserError

# ------------------------------------------------------------------------------------------
# timing core: functions whose duration is known
# ------------------------------------------------------------------------------------------


def sleeper(seconds: float, log: list[int] | None = None):
    def call(i: int) -> None:
        if log is not None:
            log.append(i)
        time.sleep(seconds)

    return call


def test_measure_median_of_a_known_sleep():
    log: list[int] = []
    t = measure(sleeper(0.02, log), 3, warmup=2, min_time=0.2, min_iters=5)
    # A sleep never returns early (load can only lengthen it, so no upper bound is asserted).
    assert t.stats.p50 >= 20.0
    assert t.stats.min >= 20.0 and t.stats.p50 <= t.stats.p90 <= t.stats.p99 <= t.stats.max
    assert t.iterations >= 5 and t.timed_wall_s >= 0.2 and len(t.samples_ms) == t.iterations
    assert len(log) == 2 + t.iterations and t.warmup == 2
    # the inputs rotate: every buffer index is used, in order
    assert log[2:8] == [0, 1, 2, 0, 1, 2][: len(log[2:8])] and set(log) == {0, 1, 2}


def test_measure_min_iters_wins_over_min_time():
    t = measure(sleeper(0.001), 2, warmup=0, min_time=0.0, min_iters=7)
    assert t.iterations == 7 and t.first_call_s == 0.0


def test_measure_stops_at_max_iters():
    t = measure(sleeper(0.001), 1, warmup=0, min_time=60.0, min_iters=1, max_iters=4)
    assert t.iterations == 4 and t.stopped_by == "max_iters"


def test_before_is_not_timed():
    staged: list[int] = []
    ft = FakeTime()

    def before(i: int) -> None:  # slow staging, outside the timed region
        staged.append(i)
        ft.t += 0.05

    t = measure(ft.call(0.005), 2, warmup=0, min_time=0.0, min_iters=4, before=before, now=ft.now)
    assert staged == [0, 1, 0, 1]
    assert t.samples_ms == pytest.approx([5.0] * 4)  # the 50 ms of staging is not in the figure


def test_custom_clock_is_used():
    class FixedClock:
        name = "fixed"

        def time(self, call, i):
            call(i)
            return 0.004  # 4 ms, whatever the call took

    t = measure(lambda i: None, 1, warmup=0, min_time=0.0, min_iters=3, clock=FixedClock())
    assert t.clock == "fixed" and t.samples_ms == pytest.approx([4.0, 4.0, 4.0])


def test_bare_loop_and_paired_overhead_on_a_known_sleep():
    b = bare_loop(sleeper(0.01), 2, 6, rounds=2)
    assert b.iterations == 6 and b.rounds == 2 and b.mean_ms >= 10.0
    chk = paired_overhead(sleeper(0.01), 2, calls_per_block=3, rounds=2)
    assert chk.rounds == 2 and len(chk.round_overheads_pct) == 2
    assert chk.harness_mean_ms >= 10.0 and chk.bare_mean_ms >= 10.0
    assert math.isfinite(chk.overhead_pct)
    assert overhead_pct(11.0, 10.0) == pytest.approx(10.0) and math.isnan(overhead_pct(1.0, 0.0))


class FakeTime:
    """A clock that moves only when told: calls of known duration, with no machine load in the figures."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def call(self, seconds: float):
        def run(i: int) -> None:
            self.t += seconds

        return run


class HeavyBookkeepingClock:
    """A harness whose per-call clock is right but which then spends half a call more on bookkeeping,
    outside the timed region: the samples look perfect, every call costs 1.5x."""

    name = "perf_counter"

    def __init__(self, ft: FakeTime, extra: float = 0.5):
        self.ft, self.extra = ft, extra

    def time(self, call, i: int) -> float:
        t0 = self.ft.now()
        call(i)
        dt = self.ft.now() - t0
        self.ft.t += dt * self.extra  # the bookkeeping
        return dt


def test_measure_on_a_fake_clock_runs_until_min_time():
    ft = FakeTime()
    t = measure(ft.call(0.002), 2, warmup=1, min_time=0.01, min_iters=1, now=ft.now)
    assert t.iterations == 5 and t.samples_ms == pytest.approx([2.0] * 5) and t.timed_wall_s == pytest.approx(0.01)
    assert t.first_call_s == pytest.approx(0.002)


@pytest.mark.parametrize("extra", [0.5, 0.25, 0.0])
def test_the_overhead_check_reads_the_delay_a_harness_adds(extra):
    """Both sides on the same clock (block wall time per call): the harness's own samples would hide this.
    A harness that adds ``extra`` of each call outside its timed region reads exactly that overhead."""
    ft = FakeTime()
    chk = paired_overhead(ft.call(0.002), 2, calls_per_block=20, rounds=5, clock=HeavyBookkeepingClock(ft, extra),
                          now=ft.now)
    assert chk.overhead_pct == pytest.approx(extra * 100)
    assert chk.bare_mean_ms == pytest.approx(2.0) and chk.harness_mean_ms == pytest.approx(2.0 * (1 + extra))


def test_the_overhead_check_of_the_plain_harness_is_zero_on_a_fake_clock():
    ft = FakeTime()
    chk = paired_overhead(ft.call(0.002), 2, calls_per_block=20, rounds=5, now=ft.now)
    assert chk.overhead_pct == pytest.approx(0.0) and chk.round_overheads_pct == pytest.approx([0.0] * 5)


def test_the_overhead_check_leaves_untimed_staging_out():
    """Staging (``before``) is the harness's job outside the timed call; the bare block stages once."""
    ft = FakeTime()
    chk = paired_overhead(ft.call(0.002), 2, calls_per_block=10, rounds=3, before=ft.call(0.004), now=ft.now)
    assert chk.overhead_pct == pytest.approx(0.0), chk
    assert chk.harness_mean_ms == pytest.approx(2.0)


def test_concurrent_sleepers_overlap():
    """Two streams that sleep 10 ms per call really run at once: some call of one stream starts
    while a call of the other is still sleeping (a fact of the schedule, not a rate that load moves)."""
    import threading

    where: list[int] = []
    spans: dict[int, list[tuple[float, float]]] = {}

    def ctx():
        where.append(threading.get_ident())
        import contextlib

        return contextlib.nullcontext()

    def call(i):
        t0 = time.perf_counter()
        time.sleep(0.01)
        spans.setdefault(threading.get_ident(), []).append((t0, time.perf_counter()))
        return np.full((1, 2), i, dtype=np.float32)

    t = measure_concurrent([call, call], 3, warmup=1, min_time=0.3, min_iters=5, contexts=[ctx, ctx])
    assert t.streams == 2 and all(c >= 5 for c in t.calls) and t.total_calls == len(t.samples_ms)
    assert all(ms >= 10.0 for ms in t.samples_ms)
    a, b = spans.values()
    assert any(s0 < e1 and s1 < e0 for s0, e0 in a for s1, e1 in b)  # intervals of the two streams overlap
    assert t.throughput(1) <= 200  # a sleep never returns early: two 10 ms streams cannot exceed 200 calls/s
    assert t.throughput(4) == pytest.approx(4 * t.throughput(1))
    # each context was entered inside its own stream's thread, not the caller's
    assert len(set(where)) == 2 and threading.get_ident() not in where
    # each stream's last output is kept with the buffer it came from
    for idx, out in t.last:
        assert 0 <= idx < 3 and out[0, 0] == idx


@pytest.mark.parametrize("when", ["warm-up", "timed"])
def test_concurrent_failure_in_one_stream_is_raised_without_a_hang(when):
    calls = {"n": 0}

    def bad(i):
        calls["n"] += 1
        if when == "warm-up" or calls["n"] > 3:
            raise RuntimeError("stream broke")
        time.sleep(0.001)

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="stream broke"):
        measure_concurrent([sleeper(0.001), bad], 2, warmup=1, min_time=3600.0, min_iters=2)
    assert time.perf_counter() - t0 < 60  # the other stream and the timer stopped at once, not after the hour asked for


def test_concurrent_ctrl_c_stops_every_stream():
    import _thread
    import threading

    n = {"calls": 0}

    def call(i):
        n["calls"] += 1
        if n["calls"] == 5:
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        time.sleep(0.002)

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        measure_concurrent([call, sleeper(0.002)], 2, warmup=0, min_time=3600.0, min_iters=1)
    assert time.perf_counter() - t0 < 60  # not the hour asked for
    assert not [t for t in threading.enumerate() if t.name.startswith("stream-")]


def test_percentiles_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=101).tolist()
    s = sorted(x)
    for q in (0, 50, 90, 99, 100):
        assert percentile(s, q) == pytest.approx(float(np.percentile(x, q)))
    st = Stats.of([4.0, 1.0, 3.0, 2.0])
    assert (st.n, st.p50, st.min, st.max, st.mean) == (4, 2.5, 1.0, 4.0, 2.5)
    assert math.isnan(Stats.of([]).p50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_rss_probe_sees_an_allocation():
    import mmap

    probe = RssProbe()
    probe.set_baseline()
    probe.reset_peak()
    # 64 MiB of fresh anonymous pages, every page touched. (Not np.ones: after earlier tests freed
    # memory, the allocator may hand back pages that are already resident, and RSS need not grow:
    # the caveat docs/bench.md states for CPU rows.)
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"\x01" * len(block))
    peak = probe.peak_delta_mib()
    block.close()
    assert peak >= 48.0, (peak, probe.method)


def test_padded_infer_pads_to_the_bound_batch():
    seen = []

    def run(x):
        seen.append(len(x))
        return x.reshape(len(x), -1)[:, :2] * 2

    x = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    y = padded_infer(run, 4)(x)
    assert seen == [4, 4] and y.shape == (5, 2) and np.array_equal(y, x[:, :2] * 2)


def test_is_oom():
    assert is_oom(MemoryError()) and is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_oom(RuntimeError("shape mismatch"))


def test_parse_list():
    assert parse_list("18,50,18", all_values=(), kind=int, name="depth") == [18, 50]
    assert parse_list("all", all_values=(18, 34), kind=int, name="depth") == [18, 34]
    assert parse_list("resnext50_32x4d", all_values=(), kind=int, name="depth") == ["resnext50_32x4d"]
    with pytest.raises(UserError):
        parse_list("1,x", all_values=(), kind=int, name="batch")
