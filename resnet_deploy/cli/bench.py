"""`resnet-deploy bench` and `bench-merge`: thin layers over :func:`resnet_deploy.bench.run_bench`
and :func:`resnet_deploy.bench.merge_results`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..artifacts import DEFAULT_ROOT
from ..bench import (
    BENCH_PRECISIONS,
    CPU_WARMUP,
    DEFAULT_BOUND_MS,
    GPU_WARMUP,
    SCENARIOS,
    BenchConfig,
    BenchPlan,
    LoadgenSettings,
    PerfAnalyzerSettings,
    default_batches,
    defaults,
    make_plan,
    merge_results,
    parse_list,
    rank,
    run_bench,
    streams_cell,
)
from ..errors import UserError
from ..model import FAMILIES, select_archs
from ..runners import BACKENDS
from .common import JsonOpt, SeedOpt, emit, err, handled, out


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def results_table(rows: list[dict[str, Any]], title: str) -> Table:
    """Measured rows in a table; the compute-only column only where a GPU backend measured one."""
    gpu = any(r.get("compute_throughput_ips") for r in rows)
    streams = any(r.get("streams_throughput_ips") is not None for r in rows)
    t = Table(title=escape(title), title_justify="left")
    cols = ["model", "prec", "backend", "batch", "p50 ms", "p99 ms", "img/s"] + (["compute img/s"] if gpu else []) + (
        ["streams img/s"] if streams else []) + ["rel L2", "top-1", "overhead", "verdict"]
    for c in cols:
        t.add_column(c, justify="right" if c not in ("model", "prec", "backend", "verdict") else "left")
    for r in rows:
        st = r.get("status")
        if st in ("ok", "failed"):
            verdict = "[green]ok[/green]" if st == "ok" else "[red]FAILED[/red]"
            oh = r.get("harness_overhead_pct")
            cells = [r["arch"].replace("resnet", "r"), r["precision"], r["backend"], str(r["batch"]),
                     _fmt(r["latency_p50_ms"], ".2f"), _fmt(r["latency_p99_ms"], ".2f"),
                     _fmt(r["latency_throughput_ips"], ",.1f")]
            if gpu:
                cells.append(_fmt(r.get("compute_throughput_ips"), ",.1f"))
            if streams:
                cells.append(streams_cell(r))
            cells += [_fmt(r.get("parity_rel_l2"), ".1e"), _fmt(r.get("parity_top1"), ".0%"),
                      "-" if oh is None else f"{oh:+.1f}%", verdict]
            t.add_row(*cells)
        else:
            cells = [r["arch"].replace("resnet", "r"), r["precision"], r["backend"], str(r.get("batch") or "all")]
            t.add_row(*cells, *([""] * (len(cols) - len(cells) - 1)), f"[yellow]{st}[/yellow]")
    return t


def plan_table(plan: BenchPlan) -> Table:
    """The rows a run would measure, one line per (model, precision, backend) with its batch sizes."""
    t = Table(title=f"bench plan: {len(plan)} row(s), nothing measured", title_justify="left")
    for c in ("model", "prec", "backend", "batches"):
        t.add_column(c, justify="left")
    for g in plan:
        t.add_row(g.arch, g.precision, g.backend, ",".join(map(str, g.batches)))
    return t


def not_run_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{r['arch']} {r['precision']} {r['backend']}" + (f" b{r['batch']}" if r.get("batch") else "")
            + f": {r['status']}: {r.get('reason') or ''}" for r in rows if r.get("status") not in ("ok", "failed")] + [
        f"{r['arch']} {r['precision']} {r['backend']} b{r['batch']}: parity FAILED: {r.get('parity_failures')}"
        for r in rows if r.get("status") == "failed"]


def ranking_lines(ranking: Any) -> list[str]:
    """One line per model and batch: the fastest passing precision and backend; then the rows slower than FP32."""
    lines = []
    for b in ranking.overall:
        vs = "no FP32 baseline" if b.speedup_vs_fp32 is None else f"{b.speedup_vs_fp32:.2f}x FP32"
        lines.append(f"best {b.arch} b{b.batch}: {b.precision} {b.backend}, {b.throughput_ips:,.1f} img/s ({vs})")
    for f in ranking.flagged:
        lines.append(f"slower than FP32: {f.arch} b{f.batch} {f.precision} {f.backend} ({f.ratio:.2f}x)"
                     + (f": {f.reason}" if f.reason else ""))
    return lines


def loadgen_lines(rows: list[Any]) -> list[str]:
    """One line per row that MLPerf LoadGen measured: its verdict and figures."""
    lines = []
    for r in rows:
        if r.get("loadgen_validity") is None:
            continue
        peak = f", peak {r['loadgen_peak_qps']:g} QPS" if r.get("loadgen_peak_qps") is not None else ""
        lines.append(f"LoadGen {r['loadgen_scenario']} {r['arch']} {r['precision']} {r['backend']} b{r['batch']}{peak}: "
                     f"{_fmt(r.get('loadgen_samples_per_s'), ',.1f')} samples/s, p50/p90/p99 "
                     f"{_fmt(r.get('loadgen_p50_ms'), '.2f')}/{_fmt(r.get('loadgen_p90_ms'), '.2f')}/"
                     f"{_fmt(r.get('loadgen_p99_ms'), '.2f')} ms, {r['loadgen_validity']}"
                     + (f" ({r['loadgen_why']})" if r.get("loadgen_why") else ""))
    return lines


def _row_line(row: Any) -> str:
    if row.get("status") not in ("ok", "failed"):
        return escape(f"{row['arch']} {row['precision']} {row['backend']}: {row['status']}: {row.get('reason')}")
    if row.get("loadgen_validity") is not None:
        return loadgen_lines([row])[0] + f", rel L2 {row['parity_rel_l2']:.1e} [{row['status']}]"
    return (f"{row['arch']} {row['precision']} {row['backend']} b{row['batch']}: p50 {row['latency_p50_ms']:.2f} ms, "
            f"{row['latency_throughput_ips']:.1f} img/s, rel L2 {row['parity_rel_l2']:.1e} [{row['status']}]")


def bench(
    engine: Optional[str] = typer.Option(None, "--engine", "-e", help=f"Comma list of {', '.join(BACKENDS)}, or all. Default: "
                                         "the backends that run here on a CPU (torch, ort, and openvino where it is installed); "
                                         "every GPU backend on a GPU."),
    depth: Optional[str] = typer.Option(None, "--depth", "-d", help="Comma list of 18, 34, 50, 101, 152, architecture "
                                        "names (densenet121, seresnet50, vgg16, ...), all (the five ImageNet ResNets) or a "
                                        f"family ({', '.join(FAMILIES)}). Default: 18,50 on a CPU; 18,50,152 on a GPU."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="Comma list of fp32, fp16, bf16, int8. "
                                            "Default: fp32 on a CPU; fp32,fp16 on a GPU."),
    batch: Optional[str] = typer.Option(None, "--batch", "-b", help="Comma list of batch sizes. Default: 1,8 on a CPU; "
                                        "1,32,256 on a GPU."),
    min_time: float = typer.Option(1.0, "--min-time", help="Time each row at least this many seconds..."),
    min_iters: int = typer.Option(10, "--min-iters", help="...and at least this many calls."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help=f"Warm-up calls (default: {CPU_WARMUP} on CPU, {GPU_WARMUP} "
                                         "on GPU, +3 for torch-compile)."),
    buffers: int = typer.Option(4, "--buffers", help="Pre-made random input buffers rotated between calls."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch and ONNX Runtime (default: theirs)."),
    bare: bool = typer.Option(True, "--bare/--no-bare", help="Also time a bare loop and report the harness overhead."),
    streams: int = typer.Option(1, "--streams", help="Also time N instances of each backend at once, each in its own "
                                "thread (and CUDA stream): offline throughput with several streams. 1: off."),
    ort_cuda_graph: bool = typer.Option(True, "--ort-cuda-graph/--no-ort-cuda-graph", help="CUDA graphs for ort-cuda."),
    tf32: bool = typer.Option(False, "--tf32/--no-tf32", help="Let GPU FP32 use TF32 math (torch, ort-cuda): faster, "
                              "but FP32 rows then usually miss the FP32 parity bar."),
    out_dir: Path = typer.Option(Path("benchmarks/results"), "--out", "-o", help="Results go to <out>/<run-id>/."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Folder name of this run (default: <device>-<UTC time>)."),
    force: bool = typer.Option(False, "--force", help="Replace the results of an earlier run with this --run-id (they stay "
                               "until this run completes; an interrupted one goes to <run-id>.partial/)."),
    artifacts: Path = typer.Option(DEFAULT_ROOT, "--artifacts", help="Folder of ONNX models and engines (made if missing)."),
    seed: int = SeedOpt,
    scenario: Optional[str] = typer.Option(None, "--scenario", help=f"Measure with MLPerf LoadGen instead of the timing "
                                           f"loop: {', '.join(SCENARIOS)} (needs mlcommons-loadgen). Default batch: 1 "
                                           "(server, single-stream), --samples-per-query (multi-stream), 8 (offline)."),
    target_qps: Optional[float] = typer.Option(None, "--target-qps", help="LoadGen: the server's arrival rate (required "
                                               "without --find-peak); offline's expected QPS (default: measured)."),
    latency_bound_ms: float = typer.Option(DEFAULT_BOUND_MS, "--latency-bound-ms", help="LoadGen server: the bound on the "
                                           "99th percentile latency (MLPerf's ResNet-50 value by default)."),
    duration: float = typer.Option(10.0, "--duration", help="LoadGen: minimum duration of a run, seconds (MLPerf: 600)."),
    max_duration: Optional[float] = typer.Option(None, "--max-duration", help="LoadGen: stop issuing queries after this "
                                                 "many seconds (default: no limit)."),
    min_queries: int = typer.Option(100, "--min-queries", help="LoadGen: minimum query count of a run."),
    samples_per_query: int = typer.Option(8, "--samples-per-query", help="LoadGen multi-stream: samples per query."),
    find_peak: bool = typer.Option(False, "--find-peak", help="LoadGen server: search (bisection) the highest QPS whose "
                                   "p99 stays within --latency-bound-ms."),
    peak_time: float = typer.Option(60.0, "--peak-time", help="--find-peak's time budget in seconds, every probe included."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the rows this run would measure and exit (nothing is "
                                   "loaded, built or timed)."),
    url: Optional[str] = typer.Option(None, "--url", help="--engine triton: the served model, grpc://HOST:PORT/v2/models/NAME "
                                      "(or http://...); it must hold the --depth and --precision benched."),
    perf_analyzer: bool = typer.Option(False, "--perf-analyzer", help="--engine triton: after each row, also sweep the "
                                       "served model with NVIDIA perf_analyzer (its figures in the same report)."),
    pa_concurrency: str = typer.Option("1:4", "--pa-concurrency", help="--perf-analyzer: requests in flight, START:END."),
    pa_window_ms: int = typer.Option(2000, "--pa-window-ms", help="--perf-analyzer: its measurement window, ms."),
    pa_stability: int = typer.Option(10, "--pa-stability", help="--perf-analyzer: how far apart (%) its windows may be "
                                     "and still count as stable (its default, 10; a busy machine may need more)."),
    pa_path: Optional[Path] = typer.Option(None, "--perf-analyzer-path", help="--perf-analyzer: the binary, or a Python "
                                           "environment whose bin/ holds it (default: $RESNET_DEPLOY_PERF_ANALYZER, PATH, "
                                           "this environment, the Triton server's)."),
    as_json: bool = JsonOpt,
) -> None:
    """Latency, throughput and parity for every depth, precision and backend; writes report.md, CSV, JSON and plots."""
    result = None
    with handled(True):  # one-line errors and exit codes; the progress bar below replaces the spinner
        d = defaults()
        engines = parse_list(engine, all_values=BACKENDS, name="engine") or d["engines"]
        depths = select_archs(depth) if depth is not None else d["depths"]
        precisions = parse_list(precision, all_values=BENCH_PRECISIONS, name="precision") or d["precisions"]
        loadgen = None if scenario is None else LoadgenSettings(
            scenario=scenario, target_qps=target_qps, latency_bound_ms=latency_bound_ms, min_duration_s=duration,
            max_duration_s=max_duration, min_query_count=min_queries, samples_per_query=samples_per_query,
            find_peak=find_peak, peak_time_s=peak_time)
        pa = PerfAnalyzerSettings(concurrency=PerfAnalyzerSettings.parse_range(pa_concurrency), window_ms=pa_window_ms,
                                  stability_pct=pa_stability, path=str(pa_path) if pa_path else None) if perf_analyzer else None
        batches = parse_list(batch, all_values=[1, 8, 32, 128, 256], kind=int, name="batch") or (
            default_batches(scenario, samples_per_query) if scenario else d["batches"])
        if run_id is not None and (not run_id or "/" in run_id or run_id in (".", "..")):
            raise UserError(f"--run-id must be a plain folder name, got {run_id!r}")
        cfg = BenchConfig(engines=engines, depths=depths, precisions=precisions, batches=batches, min_time=min_time,
                          min_iters=min_iters, warmup=warmup, buffers=buffers, bare=bare, artifacts=str(artifacts),
                          seed=seed, ort_cuda_graph=ort_cuda_graph, threads=threads, tf32=tf32, streams=streams,
                          loadgen=loadgen, served_url=url, perf_analyzer=pa)
        cfg.validate()
        plan = make_plan(cfg)
        if plan_only:
            emit(as_json, {"rows": [r.to_dict() for r in plan.rows()], "planned_rows": len(plan)},
                 lambda: out.print(plan_table(plan)))
            return
        command = "resnet-deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if as_json:
            result = run_bench(cfg, out=out_dir, run_id=run_id, command=command, force=force)
        else:
            total = len(plan)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err, transient=False) as bar:
                task = bar.add_task("bench", total=total)

                def progress(msg: str) -> None:
                    bar.update(task, description=escape(msg[:70]))

                def on_row(row: dict[str, Any], done: int) -> None:
                    bar.update(task, completed=done)
                    bar.console.log(_row_line(row))

                result = run_bench(cfg, out=out_dir, run_id=run_id, progress=progress, on_row=on_row, command=command,
                                   force=force)

    rows = result.rows
    payload = {"run_id": result.run_id, "out_dir": str(result.out_dir), "files": result.files,
               "interrupted": result.interrupted, "environment": result.environment, "rows": [r.to_dict() for r in rows]}
    ranking = rank(rows)
    payload["ranking"] = ranking.to_dict()

    def render() -> None:
        out.print(results_table(rows, f"bench {result.run_id} on {result.environment.get('device')}"))
        for line in loadgen_lines(rows) + not_run_lines(rows) + ranking_lines(ranking):
            out.print(line, highlight=False, soft_wrap=True)
        out.print(escape(f"wrote {result.out_dir}/: " + ", ".join(Path(p).name for p in result.files.values())))

    emit(as_json, payload, render)
    _exit_for(result)


def _exit_for(result: Any) -> None:
    """130 after Ctrl-C, 143 after SIGTERM, 1 for a failed parity or nothing measured, 3 when every backend was unavailable."""
    rows = result.rows
    if result.interrupted:
        how = "terminated" if result.terminated else "interrupted"
        err.print(f"{how}: wrote what was measured so far to {escape(str(result.out_dir))}")
        raise typer.Exit(143 if result.terminated else 130)
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        err.print(f"[red]error:[/red] parity failed in {len(failed)} row(s): " + "; ".join(
            f"{r.arch} {r.precision} {r.backend} b{r.batch}" for r in failed[:5]))
        raise typer.Exit(1)
    if rows and all(r.status == "unavailable" for r in rows):
        err.print("[yellow]nothing could run here[/yellow]: every requested backend is unavailable (see the report)")
        raise typer.Exit(3)
    if not any(r.measured for r in rows):
        reasons = sorted({str(r.reason or r.status) for r in rows})
        err.print(f"[red]error:[/red] nothing was measured ({len(rows)} row(s), none ran): " + escape("; ".join(reasons[:3])),
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def bench_merge(
    runs: list[Path] = typer.Argument(..., help="Result folders (or their results.json) of runs on one device."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the merged results.json, CSV, report.md and plots."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Name in the merged report (default: the runs' ids)."),
    force: bool = typer.Option(False, "--force", help="Replace merged results already in --out (once the new ones are written)."),
    as_json: bool = JsonOpt,
) -> None:
    """One report from several bench runs on the same device (a sweep split across jobs)."""
    with handled(as_json):
        merged = merge_results(runs, out_dir, run_id=run_id, force=force)

    ranking = rank(merged.rows)

    def render() -> None:
        out.print(results_table(merged.rows, f"merged {len(runs)} runs into {out_dir}"))
        for line in ranking_lines(ranking):
            out.print(line, highlight=False, soft_wrap=True)
        out.print(escape(f"wrote {out_dir}/: " + ", ".join(Path(p).name for p in merged.files.values())))

    emit(as_json, {"out_dir": str(out_dir), "files": merged.files, "rows": [r.to_dict() for r in merged.rows],
                   "ranking": ranking.to_dict()}, render)
