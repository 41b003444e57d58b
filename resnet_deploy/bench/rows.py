"""One typed result row: :class:`BenchRow`, whose field list is the JSON keys, the CSV header and
what the Markdown table and the plots read. Units stand in the names (``_ms``, ``_ips``, ``_mib``,
``_s``, ``_pct``). Torch-free.

A timing group (end to end, compute-only) is a :class:`TimingFigures` value written into its
named fields by :meth:`BenchRow.put_latency` / :meth:`BenchRow.put_compute`; a new percentile is
a field here, one in :class:`TimingFigures`, and a line in each ``put_*``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..errors import UserError


@dataclass(frozen=True)
class TimingFigures:
    """One timing group of a row: percentiles of per-call latency and the throughput they give."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_ips: float | None     # batch / median latency

    @classmethod
    def of(cls, stats: Any, batch: int) -> "TimingFigures":
        """From a :class:`~resnet_deploy.bench.timing.Stats` of per-call milliseconds at ``batch``."""
        return cls(p50_ms=stats.p50, p90_ms=stats.p90, p99_ms=stats.p99, mean_ms=stats.mean,
                   throughput_ips=batch / (stats.p50 / 1e3) if stats.p50 > 0 else None)


@dataclass
class BenchRow:
    """What one (depth, precision, backend, batch) measured; ``batch`` is ``None`` for a backend
    that could not be opened (one row for all its batch sizes)."""

    run_id: str
    arch: str
    depth: Any
    precision: str
    backend: str
    batch: int | None
    status: str = "pending"          # ok, failed (parity), unavailable, error, skipped
    reason: str = ""
    device: str | None = None
    scope: str | None = None
    # end to end (host numpy in, host logits out)
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_min_ms: float | None = None
    latency_std_ms: float | None = None
    latency_throughput_ips: float | None = None
    iterations: int | None = None
    timed_s: float | None = None
    warmup: int | None = None
    first_call_s: float | None = None
    clock: str | None = None
    # compute only (GPU backends; inputs already on the device)
    compute_p50_ms: float | None = None
    compute_p90_ms: float | None = None
    compute_p99_ms: float | None = None
    compute_mean_ms: float | None = None
    compute_throughput_ips: float | None = None
    compute_iterations: int | None = None
    compute_clock: str | None = None
    # memory, build
    memory_mib: float | None = None
    memory_kind: str | None = None
    build_s: float | None = None
    artifact_reused: bool | None = None
    load_s: float | None = None
    artifact: str | None = None
    # graphs compiled or captured for this row (torch.compile, CUDA graphs) and the seconds it took
    compile_graphs: int | None = None
    compile_s: float | None = None
    # correctness against PyTorch FP32 on the same inputs
    parity_rel_l2: float | None = None
    parity_max_abs: float | None = None
    parity_top1: float | None = None
    parity_top5: float | None = None
    parity_cosine: float | None = None
    parity_n: int | None = None
    parity_passed: bool | None = None
    parity_failures: str | None = None
    parity_bar_rel_l2: float | None = None
    parity_bar_top1: float | None = None
    # does the harness cost speed?
    bare_mean_ms: float | None = None
    harness_mean_ms: float | None = None
    harness_overhead_pct: float | None = None
    # several streams at once (offline; end to end; --streams N)
    streams: int | None = None
    streams_throughput_ips: float | None = None
    streams_p50_ms: float | None = None
    streams_p99_ms: float | None = None
    streams_calls: int | None = None
    streams_gain_pct: float | None = None
    streams_note: str | None = None
    # what measured the speed figures: "timing loop" (the latency_ fields) or MLPerf LoadGen (the loadgen_ fields)
    measured_by: str | None = None
    # MLPerf LoadGen (--scenario): its verdict and figures (end to end, queueing included)
    loadgen_scenario: str | None = None
    loadgen_validity: str | None = None
    loadgen_why: str | None = None
    loadgen_samples_per_s: float | None = None
    loadgen_p50_ms: float | None = None
    loadgen_p90_ms: float | None = None
    loadgen_p99_ms: float | None = None
    loadgen_early_stopping_ms: float | None = None
    loadgen_queries: int | None = None
    loadgen_overlatency: int | None = None
    loadgen_target_qps: float | None = None
    loadgen_bound_ms: float | None = None
    loadgen_min_duration_s: float | None = None
    loadgen_peak_qps: float | None = None
    loadgen_probes: str | None = None
    loadgen_log_dir: str | None = None
    # NVIDIA perf_analyzer through the server (--perf-analyzer; served rows): its concurrency sweep, and the step with
    # the highest throughput (images/s, client latency percentiles, the server's queue and compute times)
    perf_analyzer_version: str | None = None
    perf_analyzer_concurrency: int | None = None
    perf_analyzer_ips: float | None = None
    perf_analyzer_p50_ms: float | None = None
    perf_analyzer_p99_ms: float | None = None
    perf_analyzer_queue_ms: float | None = None
    perf_analyzer_compute_ms: float | None = None
    perf_analyzer_sweep: str | None = None
    load_avg_1m: float | None = None
    cpu_pressure_pct: float | None = None
    notes: str = ""

    # ------------------------------------------------------------------ timing groups
    def put_latency(self, t: TimingFigures) -> None:
        self.latency_p50_ms, self.latency_p90_ms, self.latency_p99_ms = t.p50_ms, t.p90_ms, t.p99_ms
        self.latency_mean_ms, self.latency_throughput_ips = t.mean_ms, t.throughput_ips

    def put_compute(self, t: TimingFigures) -> None:
        self.compute_p50_ms, self.compute_p90_ms, self.compute_p99_ms = t.p50_ms, t.p90_ms, t.p99_ms
        self.compute_mean_ms, self.compute_throughput_ips = t.mean_ms, t.throughput_ips

    def put_loadgen(self, s: Any, min_duration_s: float, log_dir: str | None) -> None:
        """A :class:`~resnet_deploy.bench.loadgen.LoadgenSummary` into the ``loadgen_`` fields."""
        self.loadgen_scenario, self.loadgen_validity, self.loadgen_why = s.scenario, s.validity, s.why
        self.loadgen_samples_per_s, self.loadgen_p50_ms, self.loadgen_p90_ms = s.samples_per_s, s.p50_ms, s.p90_ms
        self.loadgen_p99_ms, self.loadgen_early_stopping_ms, self.loadgen_queries = s.p99_ms, s.early_stopping_ms, s.queries
        self.loadgen_overlatency, self.loadgen_target_qps, self.loadgen_bound_ms = s.overlatency, s.target_qps, s.bound_ms
        self.loadgen_min_duration_s, self.loadgen_peak_qps, self.loadgen_log_dir = min_duration_s, s.peak_qps, log_dir
        self.loadgen_probes = "; ".join(p.text() for p in s.probes) or None

    def put_perf_analyzer(self, sweep: Any, best: Any, version: str) -> None:
        """perf_analyzer's :class:`~resnet_deploy.bench.perf_analyzer.ConcurrencyFigures` (every step; ``best`` the row's)."""
        self.perf_analyzer_version, self.perf_analyzer_concurrency = version, best.concurrency
        self.perf_analyzer_ips, self.perf_analyzer_p50_ms, self.perf_analyzer_p99_ms = best.throughput_ips, best.p50_ms, best.p99_ms
        self.perf_analyzer_queue_ms, self.perf_analyzer_compute_ms = best.server_queue_ms, best.server_compute_ms
        self.perf_analyzer_sweep = "; ".join(f.text() for f in sweep)

    def clear_speed(self) -> None:
        """An errored row shows no speed figure (it may lack its correctness figure)."""
        for name in SPEED_FIELDS:
            setattr(self, name, None)

    @property
    def measured(self) -> bool:
        """Did this row run (its figures stand, whether parity passed or not)?"""
        return self.status in ("ok", "failed")

    # ------------------------------------------------------------------ as data
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strict: bool = False) -> "BenchRow":
        """A row of a results.json (any schema-1 file: a field it lacks is ``None``, one it has extra is dropped);
        ``strict``: a field of the wrong type (``"batch": "abc"``) is one :class:`UserError`."""
        if strict:
            check_row(data)
        known = {k: data.get(k) for k in ROW_FIELDS if k in data}
        for k in ("run_id", "arch", "depth", "precision", "backend", "batch"):
            known.setdefault(k, None)
        return cls(**known)

    # read access by name, as the rows were dicts before (the CLI's JSON, scripts that read result.rows)
    def __getitem__(self, name: str) -> Any:
        if name not in _FIELD_SET:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in _FIELD_SET else default

    def keys(self) -> tuple[str, ...]:
        return ROW_FIELDS


ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(BenchRow))
"""Every field of a row, in order: results.json's ``row_fields`` and keys, results.csv's header."""
_FIELD_SET = frozenset(ROW_FIELDS)
SPEED_FIELDS: tuple[str, ...] = tuple(
    n for n in ROW_FIELDS if n.startswith(("latency_", "compute_", "bare_", "harness_", "loadgen_", "perf_analyzer_"))
    and n != "loadgen_scenario" or n in ("iterations", "timed_s", "memory_mib"))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)  # NaN stays: a backend's NaN output is recorded


def check_row(data: Any) -> None:
    """A results.json row whose fields have their declared types, else one :class:`UserError`."""
    if not isinstance(data, Mapping):
        raise UserError(f"a results row is {type(data).__name__}, not an object")
    for f in fields(BenchRow):
        v = data.get(f.name)
        if v is None or f.type == "Any":
            continue
        t = str(f.type)
        ok = (isinstance(v, int) and not isinstance(v, bool) if t.startswith("int") else _is_number(v)
              if t.startswith("float") else isinstance(v, bool) if t.startswith("bool")
              else isinstance(v, str) if t.startswith("str") else True)
        if not ok:
            label = f"{data.get('arch')} {data.get('precision')} {data.get('backend')}"
            raise UserError(f"results row {label}: {f.name} is {v!r}, not {t.split(' |')[0]}; the file was edited or "
                            "is not one of ours")


def as_row(r: BenchRow | Mapping[str, Any]) -> BenchRow:
    """A :class:`BenchRow` from a row or a results.json row."""
    return r if isinstance(r, BenchRow) else BenchRow.from_dict(r)


__all__ = ["BenchRow", "ROW_FIELDS", "SPEED_FIELDS", "TimingFigures", "as_row"]
