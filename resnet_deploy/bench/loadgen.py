"""MLPerf LoadGen scenarios for any runner: single-stream, multi-stream, offline and server.

``bench --scenario NAME`` hands the timed path of an open runner (a callable ``infer(batch) ->
logits``, the same one parity ran through) to MLPerf's own load generator (``mlperf_loadgen``,
``pip install mlcommons-loadgen``), which issues the queries, times them and judges the run
(VALID or INVALID, and why) by MLPerf's rules. Nothing here knows a backend.

* :class:`LoadgenSettings`: the scenario and LoadGen's settings (target QPS, latency bound,
  minimum duration and query count, samples per query), checked once (:meth:`~LoadgenSettings.validate`).
* :func:`measure_scenario`: warm-up, a short calibration (LoadGen's expected QPS / latency where
  the user gave none), then one LoadGen run, or with ``find_peak`` the search of
  :func:`search_peak`; LoadGen's logs (``mlperf_log_summary.txt``, ``mlperf_log_detail.txt``)
  go into the folder it is given.
* :class:`LoadgenSummary`: what LoadGen's detail log says, read back (:func:`read_detail_log`).

The system under test runs the model on the calling thread (the one that opened the runner: a
CUDA context or session stays on its thread); LoadGen runs in a helper thread and its queries
reach the caller through a queue. Samples waiting in the queue are batched up to ``batch`` per
call (the server scenario's dynamic batching; offline's chunks), and every call is padded to
exactly ``batch`` rows by the caller's ``infer`` so that no compiled or captured shape changes.

Torch-free; ``mlperf_loadgen`` is imported only when a scenario runs (:func:`require_loadgen`).
"""

from __future__ import annotations

import json
import math
import queue
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UserError

SCENARIOS = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "offline": "Offline",
             "server": "Server"}
"""The ``--scenario`` names and LoadGen's own."""
INSTALL_HINT = "pip install mlcommons-loadgen (or pip install 'resnet-deploy[loadgen]')"
DEFAULT_BOUND_MS = 15.0
"""MLPerf Inference's server latency bound for ResNet-50 (99th percentile)."""
PEAK_TOLERANCE = 0.05
"""find-peak stops when the highest passing and lowest failing QPS are this close (relative)."""
MIN_PEAK_QPS = 0.1
CALIBRATION_CALLS = 5

Infer = Callable[[np.ndarray], Any]


class LoadgenMissing(UserError):
    """``mlperf_loadgen`` is not installed (exit 3, like a backend that cannot run here)."""

    exit_code = 3


def require_loadgen() -> Any:
    """The ``mlperf_loadgen`` module, or one line that says how to install it."""
    try:
        import mlperf_loadgen
    except ImportError:
        raise LoadgenMissing(f"--scenario needs MLPerf LoadGen (module mlperf_loadgen), which is not installed: "
                             f"{INSTALL_HINT}") from None
    return mlperf_loadgen


def loadgen_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlcommons-loadgen")
    except Exception:  # noqa: BLE001 - installed some other way
        return "?"


def _positive(value: float | None, what: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{what} must be a number > 0, got {value}")


@dataclass(frozen=True)
class LoadgenSettings:
    """One LoadGen scenario and its settings (the ``bench --scenario`` options)."""

    scenario: str
    target_qps: float | None = None          # server: the arrival rate; offline: the expected QPS (default: measured)
    latency_bound_ms: float = DEFAULT_BOUND_MS  # server: the bound on the 99th percentile
    min_duration_s: float = 10.0
    max_duration_s: float | None = None      # None: LoadGen's (no limit)
    min_query_count: int = 100
    samples_per_query: int = 8               # multi-stream (MLPerf's ResNet-50 value)
    sample_count: int = 64                   # distinct samples in the query sample library
    find_peak: bool = False                  # server: the highest QPS whose p99 stays within the bound
    peak_time_s: float = 60.0                # find-peak's time budget, every probe included

    def validate(self) -> None:
        """Bad settings -> one :class:`UserError` line (exit 2); a missing LoadGen -> :class:`LoadgenMissing` (exit 3)."""
        if self.scenario not in SCENARIOS:
            raise UserError(f"unknown scenario {self.scenario!r}; choose from {', '.join(SCENARIOS)}")
        _positive(self.target_qps, "--target-qps", optional=True)
        _positive(self.latency_bound_ms, "--latency-bound-ms")
        _positive(self.min_duration_s, "--duration")
        _positive(self.max_duration_s, "--max-duration", optional=True)
        if self.max_duration_s is not None and self.max_duration_s < self.min_duration_s:
            raise UserError(f"--max-duration ({self.max_duration_s} s) is shorter than --duration ({self.min_duration_s} s)")
        for value, what in ((self.min_query_count, "--min-queries"), (self.samples_per_query, "--samples-per-query"),
                            (self.sample_count, "sample count")):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{what} must be an integer >= 1, got {value}")
        if self.find_peak and self.scenario != "server":
            raise UserError("--find-peak searches the server scenario's QPS: use it with --scenario server")
        if self.scenario == "server" and self.target_qps is None and not self.find_peak:
            raise UserError("--scenario server needs --target-qps QPS (the arrival rate), or --find-peak")
        if self.find_peak:
            _positive(self.peak_time_s, "--peak-time")
            if self.peak_time_s < 2 * self.min_duration_s:
                raise UserError(f"--peak-time ({self.peak_time_s} s) must be at least twice --duration "
                                f"({self.min_duration_s} s): every probe runs at least --duration")
        require_loadgen()

    @property
    def label(self) -> str:
        return f"{self.scenario}, find-peak" if self.find_peak else self.scenario


@dataclass(frozen=True)
class LoadgenSummary:
    """LoadGen's verdict and figures for one run, read from its detail log."""

    scenario: str
    validity: str                   # VALID or INVALID
    why: str                        # "" when VALID
    samples_per_s: float | None     # the scenario's throughput figure (see :func:`summary_from_log`)
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    early_stopping_ms: float | None  # single-/multi-stream: LoadGen's early-stopping latency estimate
    queries: int | None
    overlatency: int | None         # server: queries over the bound
    latency_met: bool | None        # server: LoadGen's "performance constraints satisfied"
    target_qps: float | None
    bound_ms: float | None
    log_dir: str
    wall_s: float = 0.0
    probes: tuple["Probe", ...] = ()
    peak_qps: float | None = None

    @property
    def valid(self) -> bool:
        return self.validity == "VALID"

    def within_bound(self) -> bool:
        """Did the 99th percentile stay within the latency bound (LoadGen's check and the figure agree)?"""
        return (self.latency_met is not False and self.p99_ms is not None and self.bound_ms is not None
                and self.p99_ms <= self.bound_ms)


@dataclass(frozen=True)
class Probe:
    """One server run of a find-peak search."""

    qps: float
    passed: bool
    p99_ms: float | None
    validity: str
    wall_s: float

    def text(self) -> str:
        p99 = "-" if self.p99_ms is None else f"{self.p99_ms:.2f}"
        return f"{self.qps:g} QPS: p99 {p99} ms {'within' if self.passed else 'over'} the bound ({self.validity})"


# ------------------------------------------------------------------------------------------
# LoadGen's logs
# ------------------------------------------------------------------------------------------

DETAIL_LOG = "mlperf_log_detail.txt"
_MLLOG = ":::MLLOG "


def read_detail_log(path: str | Path) -> dict[str, Any]:
    """``key -> value`` of LoadGen's detail log (``:::MLLOG {json}`` lines; the last of a key wins), plus
    ``"errors"``: the texts of the entries LoadGen marked as errors."""
    p = Path(path)
    try:
        lines = p.read_text(errors="replace").splitlines()
    except OSError as e:
        raise UserError(f"LoadGen wrote no readable detail log at {p} ({type(e).__name__})") from None
    out: dict[str, Any] = {"errors": []}
    for line in lines:
        if not line.startswith(_MLLOG):
            continue
        try:
            entry = json.loads(line[len(_MLLOG):])
        except json.JSONDecodeError:
            continue
        out[entry.get("key")] = entry.get("value")
        if (entry.get("metadata") or {}).get("is_error"):
            out["errors"].append(f"{entry.get('key')}: {entry.get('value')}")
    return out


def _ms(ns: Any) -> float | None:
    return None if ns is None else float(ns) / 1e6


def _words(text: Any) -> str:
    return " ".join(str(text or "").replace("*", " ").split())


def _why(log: dict[str, Any], p99_ms: float | None) -> str:
    """Why LoadGen judged the run INVALID, from its own flags, in words."""
    reasons = []
    if log.get("result_perf_constraints_met") is False:
        pct = float(log.get("effective_target_latency_percentile") or 0.99) * 100
        reasons.append(f"the {pct:g}th percentile latency ({_f(p99_ms)} ms) is over the "
                       f"{_f(_ms(log.get('effective_target_latency_ns')))} ms bound "
                       f"({log.get('result_overlatency_query_count')} of {log.get('result_query_count')} queries over)")
    if log.get("result_min_duration_met") is False:
        reasons.append(f"shorter than the minimum duration ({log.get('effective_min_duration_ms')} ms)")
    if log.get("result_min_queries_met") is False:
        reasons.append(f"fewer queries than the minimum ({log.get('effective_min_query_count')})")
    if log.get("early_stopping_met") is False:
        reasons.append("early stopping not satisfied: " + _words(log.get("early_stopping_result")))
    if _words(log.get("result_invalid_reason")):
        reasons.append(_words(log.get("result_invalid_reason")))
    if log.get("errors"):
        reasons.append("LoadGen errors: " + "; ".join(map(str, log["errors"]))[:300])
    return "; ".join(reasons)


def default_batches(scenario: str, samples_per_query: int) -> list[int]:
    """The batch sizes a scenario measures when none are asked for: single-stream and server one sample per
    call, multi-stream a query's samples in one call, offline calls of 8."""
    return {"single-stream": [1], "multi-stream": [samples_per_query], "offline": [8]}.get(scenario, [1])


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _throughput(log: dict[str, Any], scenario: str, samples_per_query: int) -> float | None:
    """The scenario's samples per second: server completed, offline samples/s, single-stream QPS (with
    LoadGen's overhead), multi-stream samples per query / mean query latency (queries run back to back)."""
    if scenario == "server":
        v = log.get("result_completed_samples_per_sec")
    elif scenario == "offline":
        v = log.get("result_samples_per_second")
    elif scenario == "single-stream":
        v = log.get("result_qps_with_loadgen_overhead")
    else:
        mean = log.get("result_mean_query_latency_ns") or log.get("result_mean_latency_ns")
        v = samples_per_query * 1e9 / float(mean) if mean else None
    return None if v is None else float(v)


def summary_from_log(log: dict[str, Any], settings: LoadgenSettings, log_dir: str, wall_s: float = 0.0) -> LoadgenSummary:
    scenario = settings.scenario
    if "result_validity" not in log:
        raise UserError(f"LoadGen did not finish the {scenario} run: no result in {Path(log_dir) / DETAIL_LOG}")
    p99 = _ms(log.get("result_99.00_percentile_latency_ns"))
    validity = str(log["result_validity"])
    early = log.get("early_stopping_latency_ss") if scenario == "single-stream" else log.get("early_stopping_latency_ms")
    server = scenario == "server"
    return LoadgenSummary(
        scenario=scenario, validity=validity, why="" if validity == "VALID" else (_why(log, p99) or "LoadGen gave no reason"),
        samples_per_s=_throughput(log, scenario, settings.samples_per_query),
        p50_ms=_ms(log.get("result_50.00_percentile_latency_ns")), p90_ms=_ms(log.get("result_90.00_percentile_latency_ns")),
        p99_ms=p99, early_stopping_ms=_ms(early) if early else None, queries=log.get("result_query_count"),
        overlatency=log.get("result_overlatency_query_count") if server else None,
        latency_met=log.get("result_perf_constraints_met") if server else None,
        target_qps=float(log["effective_target_qps"]) if server and log.get("effective_target_qps") is not None
        else settings.target_qps,
        bound_ms=_ms(log.get("effective_target_latency_ns")) if server else None, log_dir=log_dir, wall_s=wall_s)


# ------------------------------------------------------------------------------------------
# the system under test
# ------------------------------------------------------------------------------------------


class SystemUnderTest:
    """LoadGen's SUT: LoadGen's thread queues the samples of each query; :meth:`serve` (on the caller's thread)
    runs them in calls of up to ``batch`` samples and tells LoadGen each one is complete."""

    def __init__(self, lg: Any, infer: Infer, pool: np.ndarray, batch: int):
        self.lg, self.infer, self.pool, self.batch = lg, infer, pool, batch
        self.waiting: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.calls = 0

    def issue(self, samples: list[Any]) -> None:   # LoadGen's thread
        for s in samples:
            self.waiting.put((s.id, s.index))

    def flush(self) -> None:
        pass

    def serve(self, finished: threading.Event) -> None:
        """Run queued samples until LoadGen's test has finished and nothing waits."""
        while True:
            try:
                items = [self.waiting.get(timeout=0.005)]
            except queue.Empty:
                if finished.is_set():
                    return
                continue
            while len(items) < self.batch:
                try:
                    items.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            self._run(items)

    def _run(self, items: list[tuple[int, int]]) -> None:
        if self.error is None:  # after an error (or Ctrl-C) queries are only completed, so that LoadGen can end
            try:
                self.infer(self.pool[[index for _, index in items]])
                self.calls += 1
            except BaseException as e:  # noqa: BLE001 - re-raised once LoadGen has ended
                self.error = e
        self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(qid, 0, 0) for qid, _ in items])


def make_test_settings(lg: Any, s: LoadgenSettings, *, expected_s: float, batch: int, qps: float | None = None,
                  max_duration_s: float | None = None) -> Any:
    """LoadGen's ``TestSettings`` (performance only) for ``s``; ``expected_s``: one call's measured seconds."""
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, SCENARIOS[s.scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = max(1, round(s.min_duration_s * 1e3))
    limit = max_duration_s if max_duration_s is not None else s.max_duration_s
    ts.max_duration_ms = 0 if limit is None else max(ts.min_duration_ms, round(limit * 1e3))
    ts.min_query_count = s.min_query_count
    capacity = batch / max(expected_s, 1e-6)        # samples per second at this batch, measured
    ts.server_target_qps = float(qps or s.target_qps or capacity / 2)
    ts.server_target_latency_ns = round(s.latency_bound_ms * 1e6)
    ts.offline_expected_qps = float(s.target_qps or capacity)
    ts.single_stream_expected_latency_ns = max(1, round(expected_s * 1e9))
    ts.multi_stream_samples_per_query = s.samples_per_query
    ts.multi_stream_expected_latency_ns = max(1, round(expected_s * 1e9 * math.ceil(s.samples_per_query / batch)))
    return ts


def run_once(lg: Any, sut: SystemUnderTest, ts: Any, out_dir: Path, n_samples: int) -> float:
    """One LoadGen test, its logs into ``out_dir``; the model runs on this thread. Returns its wall seconds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_out = lg.LogOutputSettings()
    log_out.outdir = str(out_dir)
    log_out.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_out
    log_settings.enable_trace = False
    handle = lg.ConstructSUT(sut.issue, sut.flush)
    qsl = lg.ConstructQSL(n_samples, n_samples, lambda _: None, lambda _: None)  # the pool is in memory already
    finished = threading.Event()

    def test() -> None:
        try:
            lg.StartTestWithLogSettings(handle, qsl, ts, log_settings)
        finally:
            finished.set()

    t0 = time.perf_counter()
    runner = threading.Thread(target=test, name="mlperf-loadgen", daemon=True)
    runner.start()
    try:
        sut.serve(finished)
    except BaseException as e:  # noqa: BLE001 - Ctrl-C while serving: LoadGen still needs every query completed
        sut.error = sut.error or e
        sut.serve(finished)
    runner.join()
    wall = time.perf_counter() - t0
    lg.DestroyQSL(qsl)
    lg.DestroySUT(handle)
    if sut.error is not None:
        raise sut.error
    return wall


# ------------------------------------------------------------------------------------------
# one scenario, or the peak search
# ------------------------------------------------------------------------------------------


def calibrate(infer: Infer, pool: np.ndarray, batch: int, warmup: int) -> float:
    """Warm-up calls, then the median seconds of a few calls of ``batch`` samples (LoadGen's expected latency / QPS)."""
    x = pool[np.arange(batch) % len(pool)]
    for _ in range(warmup):
        infer(x)
    times = []
    for _ in range(CALIBRATION_CALLS):
        t0 = time.perf_counter()
        infer(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class ScenarioRun:
    """What one row's LoadGen measurement needs: the settings, the timed path, the samples and where the logs go."""

    settings: LoadgenSettings
    infer: Infer
    pool: np.ndarray
    batch: int
    log_dir: Path
    warmup: int = 0
    progress: Callable[[str], None] = lambda _msg: None
    expected_s: float = field(default=0.0, init=False)

    def once(self, sub: str = "", qps: float | None = None, max_duration_s: float | None = None) -> LoadgenSummary:
        lg = require_loadgen()
        ts = make_test_settings(lg, self.settings, expected_s=self.expected_s, batch=self.batch, qps=qps,
                           max_duration_s=max_duration_s)
        out = self.log_dir / sub if sub else self.log_dir
        wall = run_once(lg, SystemUnderTest(lg, self.infer, self.pool, self.batch), ts, out, len(self.pool))
        return summary_from_log(read_detail_log(out / DETAIL_LOG), self.settings, str(out), wall)

    def measure(self) -> LoadgenSummary:
        self.expected_s = calibrate(self.infer, self.pool, self.batch, self.warmup)
        if not self.settings.find_peak:
            self.progress(f"LoadGen {self.settings.scenario}")
            return self.once()
        return self.peak()

    def peak(self) -> LoadgenSummary:
        s = self.settings
        start = s.target_qps or round(self.batch / max(self.expected_s, 1e-6) / 2, 1)
        deadline = time.monotonic() + s.peak_time_s
        runs: dict[float, LoadgenSummary] = {}

        def probe(qps: float) -> bool:
            self.progress(f"LoadGen server find-peak: {qps:g} QPS")
            left = deadline - time.monotonic()
            summary = self.once(f"probe-{len(runs) + 1:02d}-{qps:g}qps", qps=qps,
                                max_duration_s=max(s.min_duration_s, min(left, s.max_duration_s or left)))
            runs[qps] = summary
            return summary.within_bound()

        best, probes = search_peak(probe, start, s.peak_time_s, clock=time.monotonic)
        probes_out = tuple(Probe(q, ok, runs[q].p99_ms, runs[q].validity, w) for q, ok, w in probes)
        if best is not None:
            return replace(runs[best], probes=probes_out, peak_qps=best)
        lowest = runs[min(runs)]
        why = f"no QPS tried kept p99 within the {s.latency_bound_ms:g} ms bound (lowest tried {min(runs):g})"
        return replace(lowest, validity="INVALID", why="; ".join(w for w in (why, lowest.why) if w), probes=probes_out)


def search_peak(probe: Callable[[float], bool], start: float, budget_s: float, *,
                clock: Callable[[], float] = time.monotonic,
                tolerance: float = PEAK_TOLERANCE) -> tuple[float | None, list[tuple[float, bool, float]]]:
    """The highest QPS for which ``probe(qps)`` passes, within ``budget_s`` seconds of ``clock``.

    Doubles from ``start`` until a probe fails (halves while none has passed), then bisects between
    the highest pass and the lowest failure until they are within ``tolerance`` of each other. The
    first probe always runs; another starts only if the longest probe so far still fits in what is
    left of the budget. Returns ``(highest passing QPS or None, [(qps, passed, seconds), ...])``.
    """
    deadline = clock() + budget_s
    tried: list[tuple[float, bool, float]] = []
    lo: float | None = None
    hi: float | None = None
    qps, longest = float(start), 0.0
    while True:
        t0 = clock()
        passed = probe(qps)
        took = clock() - t0
        longest = max(longest, took)
        tried.append((qps, passed, took))
        if passed:
            lo = qps if lo is None else max(lo, qps)
        else:
            hi = qps if hi is None else min(hi, qps)
        if hi is None:
            nxt = round(qps * 2, 1)
        elif lo is None:
            nxt = round(qps / 2, 1)
        elif (hi - lo) <= tolerance * lo:
            break
        else:
            nxt = round((lo + hi) / 2, 1)
        if clock() + longest > deadline or nxt < MIN_PEAK_QPS or nxt in (lo, hi):
            break
        qps = nxt
    return lo, tried


def sample_pool(n: int, size: int, seed: int, dtype: Any = np.float32) -> np.ndarray:
    """``n`` seeded random images (never zeros) of ``size`` x ``size``: the query sample library."""
    rng = np.random.default_rng(seed + 7919)
    return rng.standard_normal((n, 3, size, size), dtype=np.float32).astype(dtype, copy=False)


__all__ = ["DEFAULT_BOUND_MS", "INSTALL_HINT", "LoadgenMissing", "LoadgenSettings", "LoadgenSummary", "Probe",
           "SCENARIOS", "ScenarioRun", "SystemUnderTest", "calibrate", "default_batches", "read_detail_log", "require_loadgen",
           "run_once", "sample_pool", "search_peak", "summary_from_log", "make_test_settings"]
