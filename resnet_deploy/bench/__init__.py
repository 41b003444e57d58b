"""The benchmark: plan -> run -> report, for every depth, precision and backend.

    from resnet_deploy.bench import BenchConfig, make_plan, run_bench
    cfg = BenchConfig(engines=["torch", "ort"], depths=[50], precisions=["fp32"], batches=[1, 8])
    make_plan(cfg).rows()   # the rows it will measure, nothing loaded
    result = run_bench(cfg)
    result.rows        # one BenchRow per (depth, precision, backend, batch); fields: ROW_FIELDS
    result.files       # results.json, results.csv, report.md and the PNG plots it wrote

Modules: :mod:`.config` (the options), :mod:`.plan` (the rows to run), :mod:`.executor` (the run,
runner-agnostic), :mod:`.artifacts` (the one door to the pipeline), :mod:`.timed_calls` (an open
runner made ready to time), :mod:`.timing` (the timing core), :mod:`.rows` (the typed row),
:mod:`.ranking` (the fastest passing backend per network, precision and batch), :mod:`.loadgen` (MLPerf LoadGen
scenarios in place of the timing loop: ``BenchConfig(loadgen=LoadgenSettings("server", target_qps=200))``),
:mod:`.perf_analyzer` (NVIDIA perf_analyzer's sweep of a served model beside a row's own figures),
:mod:`.report` (files and plots), :mod:`.harness` (:func:`run_bench`: the three together), :mod:`.env` (the machine).

The names below load lazily: ``import resnet_deploy.bench.timing`` (or ``.rows``) pulls in neither
torch nor the pipeline.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ALL_DEPTHS": ".config", "BENCH_PRECISIONS": ".config", "BenchConfig": ".config", "defaults": ".config",
    "parse_list": ".config",
    "BenchPlan": ".plan", "PlanGroup": ".plan", "PlannedRow": ".plan", "make_plan": ".plan", "plan_size": ".plan",
    "Artifact": ".artifacts", "ArtifactProvider": ".artifacts", "PipelineArtifacts": ".artifacts",
    "Executor": ".executor", "OomSkip": ".executor", "OpenBackend": ".executor", "RegistryRunners": ".executor",
    "BenchResult": ".harness", "run_bench": ".harness",
    "BenchRow": ".rows", "ROW_FIELDS": ".rows", "TimingFigures": ".rows",
    "SCHEMA_VERSION": ".report", "load_results": ".report", "merge_results": ".report", "streams_cell": ".report",
    "throughput": ".report", "ranking_section": ".report",
    "Best": ".ranking", "RANKED_BY": ".ranking", "Ranking": ".ranking", "SlowerThanFp32": ".ranking", "rank": ".ranking",
    "CPU_WARMUP": ".timing", "GPU_WARMUP": ".timing", "Stats": ".timing", "Timing": ".timing", "bare_loop": ".timing",
    "measure": ".timing",
    "DEFAULT_BOUND_MS": ".loadgen", "LoadgenMissing": ".loadgen", "LoadgenSettings": ".loadgen",
    "LoadgenSummary": ".loadgen", "SCENARIOS": ".loadgen", "default_batches": ".loadgen", "search_peak": ".loadgen",
    "PerfAnalyzerSettings": ".perf_analyzer", "find_perf_analyzer": ".perf_analyzer",
    "device_label": ".env", "environment": ".env", "git_revision": ".env",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
