"""The benchmark harness: latency, throughput and parity for every depth, precision and backend.

    from resnet_deploy.bench import BenchConfig, run_bench
    result = run_bench(BenchConfig(engines=["torch", "ort"], depths=[50], precisions=["fp32"], batches=[1, 8]))
    result.rows        # one dict per (depth, precision, backend, batch); see report.ROW_FIELDS
    result.files       # results.json, results.csv, report.md and the PNG plots it wrote

Modules: :mod:`.timing` (the timing core), :mod:`.bound` (an open runner made ready to time),
:mod:`.harness` (the sweep), :mod:`.report` (files and plots), :mod:`.env` (the machine).
"""

from __future__ import annotations

from .harness import ALL_DEPTHS, BENCH_PRECISIONS, BenchConfig, BenchResult, defaults, parse_list, plan_size, run_bench
from .report import ROW_FIELDS, SCHEMA_VERSION, load_results, merge_results
from .timing import Stats, Timing, bare_loop, measure

__all__ = ["ALL_DEPTHS", "BENCH_PRECISIONS", "plan_size", "BenchConfig", "BenchResult", "defaults", "parse_list", "run_bench", "ROW_FIELDS",
           "SCHEMA_VERSION", "load_results", "merge_results", "Stats", "Timing", "bare_loop", "measure"]
