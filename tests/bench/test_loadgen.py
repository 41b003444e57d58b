"""MLPerf LoadGen scenarios (``bench --scenario``): every scenario on CIFAR ResNet-20 through ONNX Runtime
(1-3 s runs), LoadGen's verdicts (VALID at a modest QPS, INVALID under an impossible bound, reported, not an
error), the server's peak search and its time budget, and the one-line errors. Where a claim needs a known
speed, a fake runner with a fixed delay stands in; no wall-clock figure of the real model is asserted."""

from __future__ import annotations

import functools
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from resnet_deploy.bench import Artifact, BenchConfig, LoadgenSettings, RegistryRunners, run_bench, search_peak
from resnet_deploy.bench import loadgen as LG
from resnet_deploy.cli import app
from resnet_deploy.cli import bench as bench_cli
from resnet_deploy.preprocess import Preprocess
from resnet_deploy.runners import InputSpec, Runner

pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed (pip install mlcommons-loadgen)")

cli = CliRunner()
LOG_FILES = {"mlperf_log_summary.txt", "mlperf_log_detail.txt"}


# ------------------------------------------------------------------------------------------
# a runner with a known delay
# ------------------------------------------------------------------------------------------


class Tiny(nn.Module):
    card = types.SimpleNamespace(recipe=Preprocess(image_size=8, resize=8))

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


class SlowRunner(Runner):
    """The tiny model, ``delay`` seconds a call; it raises after ``fail_after`` calls where one is set."""

    def __init__(self, model, *, backend, delay=0.002, fail_after=None, precision=None, **_options):
        super().__init__()
        self.backend, self.model, self.delay, self.fail_after, self.calls = backend, model, delay, fail_after, 0

    def _open(self):
        return InputSpec("input", np.float32, (3, None, None))

    def _close(self):
        pass

    def _infer(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("the device fell off the bus")
        time.sleep(self.delay)
        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).numpy()

    def describe(self):
        return {"backend": self.backend, "notes": []}


class SlowRunners(RegistryRunners):
    def __init__(self, **options):
        self.options = options

    def unavailable(self, backend, precision):
        return None

    def make(self, backend, target, precision, options):
        return SlowRunner(target, backend=backend, **self.options)


class TinyArtifacts:
    def __init__(self):
        self.tiny = Tiny().eval()

    def model(self, arch):
        return self.tiny

    def artifact(self, arch, precision, backend, model):
        return Artifact(target=model, path="tiny", build_s=0.0, reused=True)


def slow_bench(**runner_options):
    return functools.partial(run_bench, artifacts=TinyArtifacts(), runners=SlowRunners(**runner_options))


def lg_cfg(settings, batches=(1,), engines=("ort",), depth=18, **kw):
    return BenchConfig(engines=list(engines), depths=[depth], precisions=["fp32"], batches=list(batches), warmup=1,
                       loadgen=settings, **kw)


# ------------------------------------------------------------------------------------------
# every scenario on ResNet-20 through ONNX Runtime
# ------------------------------------------------------------------------------------------

SHORT = {"min_duration_s": 1.0, "min_query_count": 20}
SCENARIO_RUNS = {
    "single-stream": (LoadgenSettings("single-stream", **SHORT), [1]),
    "multi-stream": (LoadgenSettings("multi-stream", samples_per_query=4, **SHORT), [4]),
    "offline": (LoadgenSettings("offline", **SHORT), [8]),
    # a modest rate (ResNet-20 takes about 1 ms a call) with a bound a busy CI machine cannot break: a 100 ms bound
    # went INVALID once while other jobs loaded both cores; 500 queries is what LoadGen's early stopping needs for p99
    "server": (LoadgenSettings("server", target_qps=200, latency_bound_ms=1000, min_duration_s=1.0,
                               min_query_count=500), [1]),
}


@pytest.fixture(scope="module")
def resnet20_runs(tmp_path_factory, exported):
    exported("resnet20")
    out = tmp_path_factory.mktemp("loadgen")
    runs = {}
    for name, (settings, batches) in SCENARIO_RUNS.items():
        # one ONNX Runtime thread: on a 2-core machine LoadGen's own threads need the other core
        cfg = lg_cfg(settings, batches, depth=20, threads=1, artifacts=str(exported.root))
        runs[name] = run_bench(cfg, out=out, run_id=name, command="pytest")
    return runs


@pytest.mark.parametrize("scenario", list(SCENARIO_RUNS))
def test_each_scenario_runs_and_reports(resnet20_runs, scenario):
    result = resnet20_runs[scenario]
    (row,) = result.rows
    assert row.status == "ok", row.reason
    assert row.parity_passed is True and row.parity_top1 == 1.0  # parity first, on the timed path
    assert row.measured_by.startswith("MLPerf LoadGen 6.") and scenario in row.measured_by
    assert row.latency_p50_ms is None and row.iterations is None  # the timing loop did not run
    assert row.loadgen_scenario == scenario and row.loadgen_validity in ("VALID", "INVALID")
    assert (row.loadgen_why == "") == (row.loadgen_validity == "VALID")
    assert row.loadgen_samples_per_s > 0 and row.loadgen_queries >= 1
    assert 0 < row.loadgen_p50_ms <= row.loadgen_p90_ms <= row.loadgen_p99_ms
    # LoadGen's logs are in the run's folder (the tests run from the repository root: none may land there)
    logs = result.out_dir / row.loadgen_log_dir
    assert {p.name for p in logs.iterdir()} >= LOG_FILES
    assert "Result is : " + row.loadgen_validity in (logs / "mlperf_log_summary.txt").read_text()
    data = json.loads((result.out_dir / "results.json").read_text())
    assert data["rows"][0]["loadgen_validity"] == row.loadgen_validity and data["scenarios"] == []
    md = (result.out_dir / "report.md").read_text()
    assert "## MLPerf LoadGen" in md and f"| {scenario} |" in md and f"**{row.loadgen_validity}**" in md
    assert "| MLPerf LoadGen 6." in md  # the results table says which tool measured the row


def test_no_loadgen_log_in_the_working_directory(resnet20_runs):
    assert not list(Path.cwd().glob("mlperf_log_*"))


def test_a_server_run_at_a_modest_qps_is_valid(resnet20_runs):
    (row,) = resnet20_runs["server"].rows
    assert row.loadgen_validity == "VALID", row.loadgen_why
    assert row.loadgen_target_qps == 200 and row.loadgen_bound_ms == 1000 and row.loadgen_queries >= 500
    assert row.loadgen_p99_ms <= 1000 and row.loadgen_overlatency == 0
    assert "| 200 QPS at p99 <= 1000 ms |" in (resnet20_runs["server"].out_dir / "report.md").read_text()


# ------------------------------------------------------------------------------------------
# verdicts, the peak search and failures, on the runner with a known delay
# ------------------------------------------------------------------------------------------


def test_an_impossible_bound_is_invalid_and_reported_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_cli, "run_bench", slow_bench(delay=0.002))
    res = cli.invoke(app, ["bench", "-e", "ort", "-d", "18", "--warmup", "1", "--scenario", "server", "--target-qps",
                           "100", "--latency-bound-ms", "0.01", "--duration", "0.5", "--min-queries", "20",
                           "--out", str(tmp_path), "--run-id", "imp", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["rows"]
    assert row["status"] == "ok" and row["loadgen_validity"] == "INVALID"
    assert "over the 0.01 ms bound" in row["loadgen_why"] and row["loadgen_overlatency"] == row["loadgen_queries"]
    assert row["loadgen_p99_ms"] > 0.01
    md = (tmp_path / "imp" / "report.md").read_text()
    assert "**INVALID**: the 99th percentile latency" in md and "| p99 over 0.01 ms at 100 QPS |" in md


def test_find_peak_keeps_p99_within_the_bound_and_its_time_budget(tmp_path):
    """2 ms a call, batch 1: about 500 samples/s at most. A 20 ms bound is met well below that."""
    settings = LoadgenSettings("server", latency_bound_ms=20, min_duration_s=0.5, min_query_count=10, find_peak=True,
                               peak_time_s=6)
    settings.validate()
    runner = SlowRunner(Tiny().eval(), backend="ort", delay=0.002).open()
    run = LG.ScenarioRun(settings, runner.infer, LG.sample_pool(16, 8, 0), 1, tmp_path / "peak", warmup=1)
    t0 = time.monotonic()
    summary = run.measure()
    took = time.monotonic() - t0
    assert summary.peak_qps is not None and summary.p99_ms <= 20 and summary.target_qps == summary.peak_qps
    assert len(summary.probes) >= 2 and all(p.passed == (p.p99_ms <= 20) for p in summary.probes)
    assert summary.peak_qps == max(p.qps for p in summary.probes if p.passed)
    assert summary.peak_qps < 2 * 500  # it cannot pass far above what the runner can do
    # the budget: a probe starts only while the longest so far still fits, so at most one probe runs over
    assert sum(p.wall_s for p in summary.probes) <= settings.peak_time_s + max(p.wall_s for p in summary.probes)
    assert took < settings.peak_time_s + 2 * max(p.wall_s for p in summary.probes) + 2.0  # + the calibration
    assert {p.name for p in (tmp_path / "peak").iterdir()} == {f"probe-{k + 1:02d}-{p.qps:g}qps"
                                                             for k, p in enumerate(summary.probes)}


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.mark.parametrize("capacity", [37.0, 733.0, 5000.0])
def test_search_peak_bisects_to_the_highest_passing_qps(capacity):
    clock = FakeClock()

    def probe(qps):
        clock.t += 1.0
        return qps <= capacity

    best, tried = search_peak(probe, 100.0, 60.0, clock=clock)
    assert best is not None and capacity * (1 - LG.PEAK_TOLERANCE) <= best <= capacity
    assert len(tried) <= 60 and clock.t <= 60
    assert all(ok == (q <= capacity) for q, ok, _ in tried)


def test_search_peak_stops_within_its_budget():
    clock = FakeClock()

    def probe(qps):
        clock.t += 1.0
        return qps <= 733

    best, tried = search_peak(probe, 100.0, 3.0, clock=clock)
    assert len(tried) == 3 and clock.t == 3.0 and best == 400.0  # 100, 200, 400: the fourth would not fit
    best, tried = search_peak(lambda q: False, 100.0, 1000.0, clock=clock)
    assert best is None and min(q for q, _, _ in tried) < 1  # halved towards a trickle, then gave up


def test_a_runner_error_mid_run_ends_the_row_not_the_process(tmp_path):
    settings = LoadgenSettings("single-stream", min_duration_s=0.5, min_query_count=10)
    # parity and calibration take about 75 calls; the error comes while LoadGen runs
    r = slow_bench(delay=0.001, fail_after=120)(lg_cfg(settings), out=tmp_path, run_id="err")
    (row,) = r.rows
    assert row.status == "error" and "fell off the bus" in row.reason
    assert row.loadgen_validity is None and row.loadgen_scenario == "single-stream"


def test_summary_reads_what_loadgen_says(tmp_path):
    """The detail log's own flags become the reasons, in words."""
    lines = [{"key": "result_validity", "value": "INVALID"}, {"key": "result_min_duration_met", "value": False},
             {"key": "effective_min_duration_ms", "value": 1000}, {"key": "early_stopping_met", "value": True},
             {"key": "result_invalid_reason", "value": "Increase expected QPS so the loadgen pre-generates a larger "
                                                       "(coalesced) query. "},
             {"key": "result_samples_per_second", "value": 1234.5},
             {"key": "result_50.00_percentile_latency_ns", "value": 2_000_000},
             {"key": "num_errors", "value": 1, "metadata": {"is_error": True}}]
    (tmp_path / LG.DETAIL_LOG).write_text("".join(":::MLLOG " + json.dumps(x) + "\n" for x in lines) + "junk\n")
    s = LG.summary_from_log(LG.read_detail_log(tmp_path / LG.DETAIL_LOG), LoadgenSettings("offline"), str(tmp_path))
    assert s.validity == "INVALID" and s.samples_per_s == 1234.5 and s.p50_ms == 2.0
    assert s.why.startswith("shorter than the minimum duration (1000 ms); Increase expected QPS")
    assert "LoadGen errors: num_errors: 1" in s.why


# ------------------------------------------------------------------------------------------
# one line and an exit code
# ------------------------------------------------------------------------------------------


def test_missing_loadgen_is_one_line_and_exit_3(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # import mlperf_loadgen -> ImportError
    res = cli.invoke(app, ["bench", "-e", "ort", "-d", "20", "--scenario", "offline", "--out", str(tmp_path)])
    assert res.exit_code == 3, res.output
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install mlcommons-loadgen" in lines[0] and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["--scenario", "server", "--target-qps", "-5"], "--target-qps must be a number > 0"),
    (["--scenario", "offline", "--duration", "0"], "--duration must be a number > 0"),
    (["--scenario", "server", "--target-qps", "10", "--latency-bound-ms", "0"], "--latency-bound-ms"),
    (["--scenario", "server"], "needs --target-qps"),
    (["--scenario", "offline", "--find-peak"], "use it with --scenario server"),
    (["--scenario", "multi-stream", "--samples-per-query", "0"], "--samples-per-query"),
    (["--scenario", "single-stream", "-b", "8"], "one sample per query"),
    (["--scenario", "burst"], "unknown scenario"),
    (["--scenario", "server", "--find-peak", "--duration", "5", "--peak-time", "6"], "at least twice --duration"),
    (["--scenario", "offline", "--streams", "2"], "choose one"),
])
def test_bad_loadgen_settings_are_one_line_and_exit_2(args, words, tmp_path):
    res = cli.invoke(app, ["bench", "-e", "ort", "-d", "20", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in res.output


def test_merge_keeps_every_runs_loadgen_rows(tmp_path):
    """Two server runs at different rates are two measurements; a timing-loop row measured twice keeps the later."""
    from types import SimpleNamespace

    from resnet_deploy.bench import BenchRow, merge_results
    from resnet_deploy.bench.report import ResultWriter

    for k, (run, qps) in enumerate((("a", 100.0), ("b", 200.0))):
        key = {"arch": "resnet20", "depth": 20, "precision": "fp32", "backend": "ort", "batch": 1, "status": "ok"}
        rows = [BenchRow(run_id=run, **key, loadgen_scenario="server", loadgen_validity="VALID", loadgen_target_qps=qps),
                BenchRow(run_id=run, **key, latency_p50_ms=1.0 + k)]
        ResultWriter(tmp_path / run).write_partial(SimpleNamespace(
            run_id=run, interrupted=False, started=1e9 + k, finished=1e9 + k + 1, environment={"cpu": "x"},
            config={}, rows=rows))
    m = merge_results([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert sorted(r.loadgen_target_qps for r in m.rows if r.loadgen_scenario) == [100.0, 200.0]
    assert [(r.run_id, r.latency_p50_ms) for r in m.rows if r.loadgen_scenario is None] == [("b", 2.0)]
