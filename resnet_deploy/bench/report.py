"""Writing a benchmark run: results.json, results.csv, report.md and PNG plots.

Every file is written atomically (:func:`resnet_deploy.artifacts.atomic_write_text` /
:func:`~resnet_deploy.artifacts.atomic_path`), so an interrupted run leaves whole files.
results.json and results.csv are rewritten after every row; report.md and the plots at the end
(Ctrl-C included).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable

from ..artifacts import atomic_write_text, ensure_writable_dir
from ..errors import UserError
from ..plots import pyplot, save_png
from ..runners import runner_class
from ..schema import read_json
from .env import TORCH_LIBRARY
from .loadgen import LoadgenSettings
from .ranking import BASELINE_PRECISION, RANKED_BY, Ranking, rank
from .results_folder import ResultsFolder, check_not_a_source
from .rows import ROW_FIELDS, BenchRow, as_row
from .timing import CPU_WARMUP, GPU_WARMUP

SCHEMA_VERSION = 1
"""results.json's layout; :data:`ROW_FIELDS` (the fields of :class:`~.rows.BenchRow`) are its rows' keys and
results.csv's header. Adding a field keeps version 1 readable: an older file's missing field reads ``None``."""


def _compile(r: BenchRow) -> str:
    """``12.3 (1 graph)``: what compiling or capturing this row cost; ``-`` where nothing is compiled."""
    if r.compile_graphs is None:
        return "-"
    n = r.compile_graphs
    return f"{_f(r.compile_s, '{:.2f}')} ({n} graph{'s' if n != 1 else ''})"


def default_run_id(env: dict[str, Any]) -> str:
    gpu = (env.get("gpu") or {})
    dev = gpu.get("name") if gpu.get("present") else "cpu"
    dev = re.sub(r"[^A-Za-z0-9]+", "-", str(dev)).strip("-").lower()[:24] or "cpu"
    return f"{dev}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def throughput(row: BenchRow | dict[str, Any]) -> float | None:
    """The row's headline images/s: compute-only where measured (GPU), else end to end."""
    r = as_row(row)
    return r.compute_throughput_ips or r.latency_throughput_ips


def scenarios(rows: Iterable[BenchRow | dict[str, Any]]) -> list[dict[str, Any]]:
    """MLPerf-style: single-stream (batch 1 latency) and offline (throughput at the largest batch that ran)."""
    groups: dict[tuple, list[BenchRow]] = {}
    for r in map(as_row, rows):
        if r.measured and r.batch and r.loadgen_scenario is None:  # LoadGen's rows have their own section
            groups.setdefault((r.arch, r.precision, r.backend), []).append(r)
    out = []
    for (arch, precision, backend), rs in groups.items():
        one = next((r for r in rs if r.batch == 1), None)
        big = max(rs, key=lambda r: r.batch)
        out.append({
            "arch": arch, "precision": precision, "backend": backend,
            "single_stream_p50_ms": one and one.latency_p50_ms, "single_stream_p99_ms": one and one.latency_p99_ms,
            "single_stream_compute_p50_ms": one and one.compute_p50_ms,
            "offline_batch": big.batch, "offline_ips": big.latency_throughput_ips,
            "offline_compute_ips": big.compute_throughput_ips,
            "offline_streams": big.streams if big.streams_throughput_ips else None,
            "offline_streams_ips": big.streams_throughput_ips,
            "parity_ok": all(r.status == "ok" for r in rs),
        })
    return out


def to_json(result) -> dict[str, Any]:
    return _clean({
        "schema_version": SCHEMA_VERSION,
        "run_id": result.run_id,
        "interrupted": result.interrupted,
        "started_utc": datetime.fromtimestamp(result.started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_utc": datetime.fromtimestamp(result.finished, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if result.finished else None,
        "environment": result.environment,
        "config": result.config,
        "row_fields": list(ROW_FIELDS),
        "rows": [as_row(r).to_dict() for r in result.rows],
        "scenarios": scenarios(result.rows),
        "ranking": rank(result.rows).to_dict(),
    })


def to_csv(rows: Iterable[BenchRow | dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ROW_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in map(as_row, rows):
        w.writerow({k: ("" if v is None else _csv_value(v)) for k, v in r.to_dict().items()})
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return v


# ------------------------------------------------------------------------------------------
# markdown
# ------------------------------------------------------------------------------------------


def _f(v: Any, fmt: str = "{:.2f}", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return fmt.format(v)


def _ms(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else (f"{v:.2f}" if v < 100 else f"{v:.1f}")


def _ips(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _load(r: BenchRow) -> str:
    """1-minute load average and CPU pressure (avg10 %) when the row started."""
    return f"{_f(r.load_avg_1m, '{:.2f}')} / {_f(r.cpu_pressure_pct, '{:.0f}%')}"


def _build(r: BenchRow) -> str:
    if r.artifact_reused is None:
        return "-"
    return "reused" if r.artifact_reused else _f(r.build_s, "{:.1f}")


def streams_cell(row: BenchRow | dict[str, Any]) -> str:
    """``"2: 61.2 (+13%)"``: streams, images/s of all of them together, gain over one stream end to end."""
    r = as_row(row)
    if r.streams_throughput_ips is None:
        return "-"
    return f"{r.streams}: {_ips(r.streams_throughput_ips)} ({_f(r.streams_gain_pct, '{:+.0f}%')})"


def _verdict(r: BenchRow) -> str:
    if r.status == "ok":
        return "ok"
    if r.status == "failed":
        return "**FAILED** (" + (r.parity_failures or "parity") + ")"
    return f"{r.status}: {r.reason or ''}".strip()


def _load_words(env: dict[str, Any]) -> str:
    start, end = env.get("load_average_start"), env.get("load_average_end")
    cores = env.get("cpu_affinity") or env.get("cpu_count") or 1
    if not start:
        return "load average not available on this system"
    parts = [f"1/5/15-minute load average {start[0]}/{start[1]}/{start[2]} at the start"]
    if end:
        parts.append(f"{end[0]}/{end[1]}/{end[2]} at the end")
    peak = max(start[0], end[0] if end else 0)
    ratio = peak / cores
    state = ("idle" if ratio < 0.25 else "lightly loaded" if ratio < 0.75 else "busy" if ratio < 1.25
             else "oversubscribed")
    text = ", ".join(parts) + f" on {cores} cores: the machine was {state} (highest 1-minute load / cores = {ratio:.2f})"
    p0, p1 = env.get("cpu_pressure_start"), env.get("cpu_pressure_end")
    if p0:
        text += (f"; CPU pressure (share of time some task waited for a CPU, 10 s / 60 s average): "
                 f"{p0.get('avg10')}% / {p0.get('avg60')}% at the start")
        if p1:
            text += f", {p1.get('avg10')}% / {p1.get('avg60')}% at the end"
    return text


def _environment_items(env: dict[str, Any]) -> list[tuple[str, Any]]:
    gpu = env.get("gpu") or {}
    v = env.get("versions") or {}
    return [
        ("time (UTC)", env.get("time_utc")), ("CPU", f"{env.get('cpu')}, {env.get('cpu_count')} logical cores "
                                             f"({env.get('cpu_affinity')} usable), {env.get('memory_gib')} GiB"),
        ("load", _load_words(env)),
        ("GPU", (f"{gpu.get('name')} (compute capability {gpu.get('compute_capability')}, "
                 f"{gpu.get('total_memory_mib')} MiB), driver {gpu.get('driver', '?')}, CUDA driver API "
                 f"{gpu.get('cuda_driver_api', '?')}, CUDA runtime {gpu.get('cuda_runtime', '?')}, torch CUDA "
                 f"{gpu.get('torch_cuda')}") if gpu.get("present") else f"none ({gpu.get('why', 'no CUDA device')})"),
        ("Python / OS", f"{env.get('python')} / {env.get('os')}"),
        (TORCH_LIBRARY, f"{v.get(TORCH_LIBRARY)} ({env.get('torch_threads')} threads)"),
        ("onnxruntime", v.get("onnxruntime")), ("onnx", v.get("onnx")),
        ("TensorRT", v.get("tensorrt") or "not installed"),
        ("TensorRT-RTX", v.get("tensorrt_rtx") or "not installed"), ("cuda-python", v.get("cuda_python")),
        ("numpy", v.get("numpy")), ("toolkit", f"resnet-deploy {v.get('resnet_deploy')} (git {env.get('git', '?')})"),
    ]


def _extra_warmups(rows: list[BenchRow]) -> str:
    """``", +3 for torch-compile"``: what the runner classes of these rows add to the default warm-up."""
    extra = []
    for b in dict.fromkeys(r.backend for r in rows):
        try:
            n = runner_class(b).extra_warmup(b)
        except (ImportError, UserError):  # a backend of an older run, or whose module cannot load here
            continue
        if n:
            extra.append(f", +{n} for {b}")
    return "".join(extra)


def warmup_words(cfg: dict[str, Any], rows: list[BenchRow]) -> str:
    """How many warm-up calls each row had, from the same constants the run uses."""
    if cfg.get("warmup") is not None:
        return str(cfg["warmup"])
    return f"auto ({CPU_WARMUP} CPU / {GPU_WARMUP} GPU{_extra_warmups(rows)})"


def method_text(cfg: dict[str, Any], rows: list[BenchRow]) -> str:
    return (
        f"Seeded random weights (seed {cfg.get('seed')}, BatchNorm statistics re-estimated on photographs), float32 "
        "NCHW inputs at each model's own input size (224x224 for the ImageNet networks). Each row: parity first, on "
        "the timed path and shape, against PyTorch FP32 on the same "
        f"{cfg.get('parity_random')} random tensors + scikit-image photographs (relative L2, top-1 agreement at the "
        f"precision's bars; NaN/Inf fails). Then {warmup_words(cfg, rows)} "
        f"warm-up calls, then timed calls until at least {cfg.get('min_time')} s and {cfg.get('min_iters')} calls, "
        f"rotating among {cfg.get('buffers')} pre-made random input buffers; each call waits for its result "
        "(single-stream discipline), latency percentiles are over the per-call times, throughput = batch / median "
        "latency. CPU backends: end-to-end and compute-only are the same figure (no host-device copy); GPU backends: "
        "end-to-end (host numpy in, host logits out, copies included) and compute-only (inputs already on the device, "
        "CUDA events or a synchronised clock). Memory: "
        + "; ".join(sorted({r.memory_kind for r in rows if r.memory_kind}) or ["-"]) + ".")


_BARE_TEXT = (
    "Harness overhead: after each row, the same calls on the same buffers run in {rounds} alternated pairs of blocks: "
    "a harness block (the timing loop itself: per-call clock, rotation, untimed staging) and a bare block (one clock "
    "pair around the calls, nothing else). Overhead = median over the pairs of (harness block mean / bare block mean "
    "- 1); negative means the harness figure is the lower one. Pairs run back to back so that slow changes of machine "
    "load cancel; on a shared machine a few percent either way is still load noise.")
_STREAMS_TEXT = (
    "Several streams (`--streams {n}`): after a backend's single-stream rows, {n} fresh instances of it run at once, "
    "each in its own thread (on a CPU each with an equal share of the cores unless `--threads` is given; on a GPU each "
    "with its own CUDA stream), end to end, every stream waiting for its own results, for the same minimum time. Each "
    "instance passes parity alone first, and each stream's last output under load must match the same input run "
    "alone. Streams img/s = the sum over streams of (calls x batch / that stream's own span); the gain is over the "
    "same backend's single-stream end-to-end img/s. Memory is not measured for this figure.")


@dataclass(frozen=True)
class Column:
    """One column of the Markdown results table: its header and the cell it makes of a measured row."""

    header: str
    cell: Callable[[BenchRow], str]
    streams_only: bool = False


def _same_or(fmt: Callable[[Any], str], name: str) -> Callable[[BenchRow], str]:
    """A compute-only cell: ``= e2e`` where the row has no compute-only figure (a CPU backend)."""
    return lambda r: "= e2e" if r.compute_p50_ms is None else fmt(getattr(r, name))


RESULT_COLUMNS: tuple[Column, ...] = (
    Column("depth", lambda r: str(r.arch)), Column("precision", lambda r: r.precision),
    Column("backend", lambda r: r.backend), Column("batch", lambda r: str(r.batch)),
    Column("p50 ms", lambda r: _ms(r.latency_p50_ms)), Column("p90 ms", lambda r: _ms(r.latency_p90_ms)),
    Column("p99 ms", lambda r: _ms(r.latency_p99_ms)), Column("img/s", lambda r: _ips(r.latency_throughput_ips)),
    Column("compute p50 ms", _same_or(_ms, "compute_p50_ms")),
    Column("compute img/s", _same_or(_ips, "compute_throughput_ips")),
    Column("streams: img/s (gain)", streams_cell, streams_only=True),
    Column("memory MiB", lambda r: _f(r.memory_mib, "{:.0f}")),
    Column("build / load / first call / compile s", lambda r: f"{_build(r)} / {_f(r.load_s, '{:.2f}')} / "
                                                              f"{_f(r.first_call_s, '{:.2f}')} / {_compile(r)}"),
    Column("rel L2", lambda r: _f(r.parity_rel_l2, "{:.2e}")), Column("top-1", lambda r: _f(r.parity_top1, "{:.0%}")),
    Column("harness overhead", lambda r: _f(r.harness_overhead_pct, "{:+.1f}%")),
    Column("calls", lambda r: _f(r.iterations, "{}")), Column("measured by", lambda r: r.measured_by or "timing loop"),
    Column("load / CPU wait", _load), Column("verdict", _verdict),
)


def _loadgen_result(r: BenchRow) -> str:
    if r.loadgen_validity is None:
        return _verdict(r)
    return f"**{r.loadgen_validity}**" + (f": {r.loadgen_why}" if r.loadgen_why else "")


def _mlperf_metric(r: BenchRow) -> str:
    """The figure MLPerf reports for the scenario: single-stream the 90th percentile (early-stopping estimate),
    multi-stream the 99th, server the QPS its p99 bound held at, offline samples per second."""
    if r.loadgen_scenario == "single-stream":
        return f"p90 {_ms(r.loadgen_early_stopping_ms or r.loadgen_p90_ms)} ms"
    if r.loadgen_scenario == "multi-stream":
        return f"p99 {_ms(r.loadgen_early_stopping_ms or r.loadgen_p99_ms)} ms"
    if r.loadgen_scenario == "server":
        bound = _f(r.loadgen_bound_ms, "{:g}")
        if r.loadgen_probes and r.loadgen_peak_qps is None:
            return f"no QPS tried kept p99 <= {bound} ms"
        if r.loadgen_p99_ms is None or r.loadgen_bound_ms is None or r.loadgen_p99_ms > r.loadgen_bound_ms:
            return f"p99 over {bound} ms at {_f(r.loadgen_target_qps, '{:g}')} QPS"
        return f"{_f(r.loadgen_target_qps, '{:g}')} QPS at p99 <= {bound} ms"
    return f"{_ips(r.loadgen_samples_per_s)} samples/s"


LOADGEN_COLUMNS: tuple[Column, ...] = (
    Column("run", lambda r: str(r.run_id)), Column("model", lambda r: str(r.arch)), Column("precision", lambda r: r.precision),
    Column("backend", lambda r: r.backend), Column("batch", lambda r: str(r.batch)),
    Column("scenario", lambda r: str(r.loadgen_scenario)),
    Column("target QPS", lambda r: _f(r.loadgen_target_qps, "{:g}")),
    Column("bound ms", lambda r: _f(r.loadgen_bound_ms, "{:g}")),
    Column("samples/s", lambda r: _ips(r.loadgen_samples_per_s)), Column("p50 ms", lambda r: _ms(r.loadgen_p50_ms)),
    Column("p90 ms", lambda r: _ms(r.loadgen_p90_ms)), Column("p99 ms", lambda r: _ms(r.loadgen_p99_ms)),
    Column("MLPerf metric", _mlperf_metric), Column("queries", lambda r: str(r.loadgen_queries)),
    Column("min duration s", lambda r: _f(r.loadgen_min_duration_s, "{:g}")),
    Column("LoadGen logs (in the run's folder)", lambda r: r.loadgen_log_dir or "-"), Column("result", _loadgen_result),
)
"""The LoadGen section's table: one column each, read from the row's ``loadgen_`` fields."""
_LOADGEN_TEXT = (
    "Rows measured by MLPerf LoadGen (`--scenario`) instead of the timing loop: after the same parity check, the "
    "row's timed path (host numpy in, logits out, every call padded to the row's batch) is LoadGen's system under "
    "test, the model running on the thread that opened it while LoadGen issues queries from its own thread; samples "
    "waiting together are run in calls of up to the row's batch (the server scenario's dynamic batching, offline's "
    "chunks). Its query sample library is {n} seeded random images. Latency is LoadGen's, from issue to completion "
    "(queueing included); single-stream samples/s is LoadGen's QPS with its overhead, server the completed samples/s, "
    "offline the samples/s, multi-stream samples per query / mean query latency. VALID/INVALID and the reasons are "
    "LoadGen's own (minimum duration and query count, early stopping, the server's p99 bound). Performance mode only: "
    "no accuracy-mode run and no MLPerf submission checker, and far shorter runs than MLPerf's 600 s minimum.")


def _table(cols: tuple[Column, ...], rows: list[BenchRow]) -> list[str]:
    return ["| " + " | ".join(c.header for c in cols) + " |", "|" + "---|" * len(cols), *("| " + " | ".join(c.cell(r) for c in cols) + " |" for r in rows)]


def _loadgen_section(rows: list[BenchRow], cfg: dict[str, Any]) -> list[str]:
    lg = [r for r in rows if r.loadgen_scenario is not None]
    if not lg:
        return []
    n = (cfg.get("loadgen") or {}).get("sample_count") or LoadgenSettings.sample_count  # a merged report: the default
    lines = ["", "## MLPerf LoadGen", "", _LOADGEN_TEXT.format(n=n), "", *_table(LOADGEN_COLUMNS, lg)]
    probes = [r for r in lg if r.loadgen_probes]
    if probes:
        lines += ["", "Server find-peak (bisection on the target QPS; the row shows the highest QPS whose p99 stayed "
                  "within the bound, each probe one LoadGen run):", ""]
        lines += [f"- {r.arch} {r.precision} {r.backend} b{r.batch}: {r.loadgen_probes}" for r in probes]
    return lines


PERF_ANALYZER_COLUMNS: tuple[Column, ...] = (
    Column("run", lambda r: str(r.run_id)), Column("model", lambda r: str(r.arch)), Column("precision", lambda r: r.precision),
    Column("backend", lambda r: r.backend), Column("batch", lambda r: str(r.batch)),
    Column("best concurrency", lambda r: str(r.perf_analyzer_concurrency)),
    Column("img/s", lambda r: _ips(r.perf_analyzer_ips)), Column("p50 ms", lambda r: _ms(r.perf_analyzer_p50_ms)),
    Column("p99 ms", lambda r: _ms(r.perf_analyzer_p99_ms)),
    Column("server queue / compute ms", lambda r: f"{_ms(r.perf_analyzer_queue_ms)} / {_ms(r.perf_analyzer_compute_ms)}"),
    Column("timing loop img/s (same row)", lambda r: _ips(r.latency_throughput_ips)), Column("tool", lambda r: r.perf_analyzer_version or "-"),
)
"""The perf_analyzer section's table, read from the row's ``perf_analyzer_`` fields."""
_PERF_ANALYZER_TEXT = (
    "NVIDIA perf_analyzer (`--perf-analyzer`) on the same served model after each row's own figures: per concurrency "
    "(requests in flight of the row's batch, random data) until throughput and the latency percentile are stable. img/s "
    "is its Inferences/Second (images), p50/p99 client latencies, queue/compute the server's averages; the row shows the "
    "concurrency with the highest throughput, every step follows.")


def _perf_analyzer_section(rows: list[BenchRow]) -> list[str]:
    swept = [r for r in rows if r.perf_analyzer_sweep is not None]  # measured, or failed saying why (no table row)
    measured = [r for r in swept if r.perf_analyzer_ips is not None]
    return ["", "## perf_analyzer (through the server)", "", _PERF_ANALYZER_TEXT, "", *_table(PERF_ANALYZER_COLUMNS, measured),
            "", *(f"- {r.arch} {r.precision} {r.backend} b{r.batch}: {r.perf_analyzer_sweep}" for r in swept)] if swept else []


_NOT_RUN_CELLS = {"depth", "precision", "backend", "batch", "load / CPU wait", "verdict"}


def _results_table(rows: list[BenchRow], streams: bool) -> list[str]:
    cols = [c for c in RESULT_COLUMNS if streams or not c.streams_only]
    lines = ["| " + " | ".join(c.header for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if r.measured:
            cells = [c.cell(r) for c in cols]
        else:  # one row for a backend that did not run: who, and why
            cells = [c.cell(r) if c.header in _NOT_RUN_CELLS else "" for c in cols]
            cells[3] = str(r.batch or "all")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _scenarios_section(rows: list[BenchRow], streams: bool) -> list[str]:
    sc = scenarios(rows)
    if not sc:
        return []
    lines = ["", "## Scenarios", "", "Single-stream: batch-1 latency. Offline: throughput at the largest batch that ran"
             + (", one stream and several at once (end to end)." if streams else "."), "",
             "| model | precision | backend | single-stream p50 ms | p99 ms | compute p50 ms | offline batch | "
             "offline img/s | compute img/s " + ("| several streams img/s " if streams else "") + "| parity |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if streams else "") + "---|"]
    for s in sc:
        several = (f"{s['offline_streams']}: {_ips(s['offline_streams_ips'])} | " if s.get("offline_streams_ips")
                   else "- | ") if streams else ""
        lines.append(f"| {s['arch']} | {s['precision']} | {s['backend']} | {_ms(s['single_stream_p50_ms'])} | "
                     f"{_ms(s['single_stream_p99_ms'])} | {_ms(s['single_stream_compute_p50_ms'])} | "
                     f"{s['offline_batch']} | {_ips(s['offline_ips'])} | {_ips(s['offline_compute_ips'])} | {several}"
                     f"{'ok' if s['parity_ok'] else '**FAILED**'} |")
    return lines


def _speedup(v: float | None) -> str:
    return "- (no FP32 baseline)" if v is None else f"{v:.2f}x"


def ranking_section(ranking: Ranking) -> list[str]:
    """The "Ranking" section of report.md: the fastest passing backend per model, batch and precision,
    its speedup over FP32, then the rows slower than FP32 with the reason where it is known."""
    if not ranking.best:
        return []
    overall = {(b.arch, b.batch, b.precision) for b in ranking.overall}
    lines = ["", "## Ranking", "", f"Per model, batch and precision: the fastest backend that passed parity, by end-to-end "
             f"img/s (`{RANKED_BY}`, the figure every backend has); speedup over the fastest {BASELINE_PRECISION.upper()} row "
             "that passed parity at the same model and batch. **Bold**: the fastest of all precisions at that model and "
             "batch. Rows that failed parity or did not run are never ranked.", "",
             "| model | batch | precision | best backend | img/s | speedup vs FP32 |", "|---|---|---|---|---|---|"]
    for b in ranking.best:
        if b.backend is None:
            lines.append(f"| {b.arch} | {b.batch} | {b.precision} | none: {b.note} | - | - |")
            continue
        name = f"**{b.backend}**" if (b.arch, b.batch, b.precision) in overall else b.backend
        lines.append(f"| {b.arch} | {b.batch} | {b.precision} | {name} | {_ips(b.throughput_ips)} | "
                     f"{_speedup(b.speedup_vs_fp32)} |")
    if ranking.flagged:
        lines += ["", "Slower than FP32 (fewer img/s than the FP32 baseline at the same model and batch):", ""]
        for f in ranking.flagged:
            verdict = "" if f.status == "ok" else ", parity FAILED"
            lines.append(f"- {f.arch} b{f.batch} {f.precision} {f.backend}: {_ips(f.throughput_ips)} img/s, "
                         f"{f.ratio:.2f}x FP32 ({f.baseline_backend}, {_ips(f.baseline_ips)} img/s){verdict}. "
                         + (f"Why: {f.reason}." if f.reason else "Reason not known."))
    return lines


def _notes_section(rows: list[BenchRow]) -> list[str]:
    notes = [(r, r.notes) for r in rows if r.notes] + [
        # a note on a figure that is missing (why) is per batch; on a measured one (how) per backend
        (r, "several streams" + ("" if r.streams_throughput_ips is not None else f", batch {r.batch}")
         + f": {r.streams_note}") for r in rows if r.streams_note]
    if not notes:
        return []
    lines = ["", "## Notes per backend", ""]
    for backend, n in dict.fromkeys((r.backend, n) for r, n in notes):
        lines.append(f"- {backend}: {n}")
    return lines


def _head(result) -> list[str]:
    env = result.environment
    lines = [f"# Benchmark {result.run_id}", ""]
    if result.interrupted:
        lines += ["**Interrupted (Ctrl-C): this report holds only the rows measured before the interruption.**", ""]
    lines += [f"Device: **{env.get('device')}**. Command: `{env.get('command')}`", ""]
    if env.get("merged_from"):
        lines += [f"Merged from {len(env['merged_from'])} runs on this device: {', '.join(map(str, env['merged_from']))} "
                  "(each row's run_id says which; the environment below is the first run's)."
                  + (f" {env['merge_note']}." if env.get("merge_note") else ""), ""]
    lines += ["## Environment", "", "| what | value |", "|---|---|"]
    lines += [f"| {k} | {val} |" for k, val in _environment_items(env)]
    return lines


def to_markdown(result, plots: list[str]) -> str:
    rows = [as_row(r) for r in result.rows]
    cfg = result.config
    lines = _head(result) + ["", "## Method", "", method_text(cfg, rows)]
    if cfg.get("bare"):
        lines += ["", _BARE_TEXT.format(rounds=cfg.get("bare_rounds"))]
    # from the rows, not the config: a merged report's config is its first run's
    n_streams = max([r.streams for r in rows if r.streams] or [cfg.get("streams") or 1])
    if n_streams > 1:
        lines += ["", _STREAMS_TEXT.format(n=n_streams)]
    streams = any(r.streams_throughput_ips is not None for r in rows)
    lines += ["", "## Results", "", *_results_table(rows, streams)]
    lines += _scenarios_section(rows, streams) + _loadgen_section(rows, cfg) + _perf_analyzer_section(rows)
    lines += ranking_section(rank(rows))
    lines += _notes_section(rows)
    if plots:
        lines += ["", "## Plots", ""]
        for p in plots:
            lines += [f"![{p}]({p})", ""]
    lines += ["", "Files: results.json (every field, schema_version " + str(SCHEMA_VERSION) + "), results.csv (one "
              "line per row)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------


_plt = pyplot


LATENCY_BARS = (("latency_p50_ms", "p50", "#4c72b0"), ("latency_p90_ms", "p90", "#dd8452"),
                ("latency_p99_ms", "p99", "#c44e52"))
"""The latency plot's bars: a row field, its label, its colour."""


def write_plots(rows: Iterable[BenchRow | dict[str, Any]], out_dir: Path) -> list[str]:
    """Throughput against batch (one figure per depth, a line per backend and precision) and
    latency percentiles (one figure per depth, p50/p90/p99 bars per row). Returns file names."""
    good = [r for r in map(as_row, rows) if r.measured and r.latency_p50_ms is not None]
    if not good:
        return []
    plt = _plt()
    names: list[str] = []
    for arch in dict.fromkeys(r.arch for r in good):
        rs = [r for r in good if r.arch == arch]
        names.append(_throughput_plot(plt, arch, rs, out_dir))
        names.append(_latency_plot(plt, arch, rs, out_dir))
    return names


def _throughput_plot(plt: Any, arch: str, rs: list[BenchRow], out_dir: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    series: dict[tuple, list[BenchRow]] = {}
    for r in rs:
        series.setdefault((r.backend, r.precision), []).append(r)
    for (backend, precision), pts in series.items():
        pts = sorted(pts, key=lambda r: r.batch)
        failed = any(p.status == "failed" for p in pts)
        label = f"{backend} {precision}" + (" (parity FAILED)" if failed else "")
        line, = ax.plot([p.batch for p in pts], [throughput(p) for p in pts], marker="o",
                        linestyle="--" if failed else "-", label=label)
        several = [p for p in pts if p.streams_throughput_ips is not None]
        if several:
            ax.plot([p.batch for p in several], [p.streams_throughput_ips for p in several], marker="s",
                    linestyle=":", color=line.get_color(),
                    label=f"{backend} {precision}, {several[0].streams} streams (end to end)")
    ax.set_xscale("log", base=2)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xticks(sorted({r.batch for r in rs}))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (compute-only on GPU, else end to end)")
    ax.set_title(f"{arch}: throughput against batch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    name = f"throughput_{arch}.png"
    save_png(fig, out_dir / name)
    return name


def _latency_plot(plt: Any, arch: str, rs: list[BenchRow], out_dir: Path) -> str:
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rs) + 2), 4.2))
    labels = [f"{r.backend}\n{r.precision} b{r.batch}" + ("\nFAILED" if r.status == "failed" else "") for r in rs]
    x = range(len(rs))
    width = 0.27
    for k, (field_name, label, colour) in enumerate(LATENCY_BARS):
        ax.bar([i + (k - 1) * width for i in x], [getattr(r, field_name) or 0 for r in rs], width, label=label,
               color=colour)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("latency per batch, ms (end to end, log scale)")
    ax.set_title(f"{arch}: latency percentiles")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    name = f"latency_{arch}.png"
    save_png(fig, out_dir / name)
    return name


# ------------------------------------------------------------------------------------------
# the writer
# ------------------------------------------------------------------------------------------


class ResultWriter:
    def __init__(self, out_dir: str | Path):
        self.dir = ensure_writable_dir(out_dir)

    def write_partial(self, result) -> None:
        atomic_write_text(self.dir / "results.json", json.dumps(to_json(result), indent=1, default=str) + "\n")
        atomic_write_text(self.dir / "results.csv", to_csv(result.rows))

    def write_final(self, result) -> dict[str, str]:
        self.write_partial(result)
        files = {"json": str(self.dir / "results.json"), "csv": str(self.dir / "results.csv")}
        try:
            plots = write_plots(result.rows, self.dir)
        except ImportError as e:
            plots = []
            result.environment["plots"] = f"not drawn: matplotlib is missing ({e})"
        atomic_write_text(self.dir / "report.md", to_markdown(result, plots))
        files["report"] = str(self.dir / "report.md")
        for p in plots:
            files[p] = str(self.dir / p)
        return files


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results.json (or the folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise UserError(f"no benchmark results at {p}")
    try:
        data = read_json(p, "results file")  # a regular file, bounded, sane nesting
    except UserError as e:
        raise UserError(f"{p} is not a readable results.json ({str(e).replace(f'results file {p} ', '')})") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or not isinstance(data.get("rows"), list):
        raise UserError(f"{p} is not a resnet-deploy results.json of schema version {SCHEMA_VERSION}")
    return data


def _device_key(env: dict[str, Any]) -> str:
    gpu = env.get("gpu") or {}
    return str(gpu.get("name")) if gpu.get("present") else f"cpu: {env.get('cpu')}"


def merge_results(sources: Iterable[str | Path], out_dir: str | Path, *, run_id: str | None = None,
                  force: bool = False) -> SimpleNamespace:
    """One report from several runs on the same device (a sweep split across calls or jobs).

    Rows keep their own ``run_id``; a (depth, precision, backend, batch) measured twice by the timing loop
    keeps the later run's row (every run's LoadGen rows are kept: their settings are their run's). Runs from different devices are refused: their figures do not compare.
    Writes results.json, results.csv, report.md and the plots into ``out_dir``. Returns the
    merged run like :func:`~resnet_deploy.bench.run_bench` does: ``.rows``, ``.environment``,
    ``.config``, ``.out_dir`` and ``.files`` (what was written). ``out_dir`` may not be one of the runs;
    one that holds results already is replaced (whole, once the merge is written) only with ``force``.
    """
    sources = list(sources)
    check_not_a_source(Path(out_dir), sources)
    runs = [load_results(s) for s in sources]
    if not runs:
        raise UserError("nothing to merge: name at least one results folder")
    devices = {_device_key(r.get("environment") or {}) for r in runs}
    if len(devices) > 1:
        raise UserError("these runs come from different devices (" + "; ".join(sorted(devices)) + "): not merged")
    runs.sort(key=lambda r: r.get("started_utc") or "")
    rows: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        for row in r["rows"]:
            checked = BenchRow.from_dict(row, strict=True)  # a hand-edited row ("batch": "abc") is one line
            # a LoadGen row stays (its settings are its run's: target QPS, bound, threads); a timing-loop row
            # measured again is replaced
            rows[(checked.arch, checked.precision, checked.backend, checked.batch,
                  checked.loadgen_scenario and checked.run_id)] = row
    env = dict(runs[0].get("environment") or {})
    env["command"] = " ; ".join(str((r.get("environment") or {}).get("command")) for r in runs)
    env["merged_from"] = [r.get("run_id") for r in runs]
    config = dict(runs[0].get("config") or {})
    for key in ("engines", "depths", "precisions", "batches"):
        seen: list[Any] = []
        for r in runs:
            for v in (r.get("config") or {}).get(key) or []:
                if v not in seen:
                    seen.append(v)
        config[key] = seen
    keys = {k for r in runs for k in (r.get("config") or {})}  # a newer run may have settings an older one lacks
    differing = sorted(k for k in keys if k not in ("engines", "depths", "precisions", "batches")
                       and any((r.get("config") or {}).get(k) != config.get(k) for r in runs))
    if differing:
        env["merge_note"] = "settings differ between the merged runs: " + ", ".join(differing) + " (first run's shown)"

    def stamp(text: str | None) -> float | None:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp() if text else None

    result = SimpleNamespace(run_id=run_id or "+".join(str(i) for i in env["merged_from"]), environment=env,
                             config=config, rows=[BenchRow.from_dict(r) for r in rows.values()], interrupted=any(r.get("interrupted") for r in runs),
                             started=stamp(runs[0].get("started_utc")) or 0.0,
                             finished=stamp(runs[-1].get("finished_utc")), out_dir=Path(out_dir))
    folder = ResultsFolder(out_dir, force=force, what="results",
                           fix="choose another --out, or pass --force to replace them")
    complete = False
    try:
        result.files = ResultWriter(folder.dir).write_final(result)
        complete = True
    finally:
        result.out_dir = folder.close(complete)
    result.files = {k: str(result.out_dir / Path(v).name) for k, v in result.files.items()}
    return result

