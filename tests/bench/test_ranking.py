"""bench ranks what it measured: the fastest backend that passed parity per network, precision and
batch, its speedup over the FP32 baseline, and the rows slower than FP32 with the runner's reason.
Hand-made rows only: nothing is measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from resnet_deploy.bench import BENCH_PRECISIONS, BenchRow, Ranking, load_results, merge_results, rank
from resnet_deploy.bench import report as R
from resnet_deploy.bench.ranking import RANKED_BY
from resnet_deploy.cli import app
from resnet_deploy.cli import bench as bench_cli
from resnet_deploy.runners import BACKENDS, runner_class

ROOT = Path(__file__).resolve().parents[2]


def row(backend: str, precision: str, ips: float | None, *, batch: int | None = 8, status: str = "ok",
        arch: str = "resnet50", run_id: str = "r") -> BenchRow:
    return BenchRow(run_id=run_id, arch=arch, depth=int(arch[6:]), precision=precision, backend=backend, batch=batch,
                    status=status, latency_throughput_ips=ips, latency_p50_ms=batch / ips * 1e3 if ips and batch else None,
                    parity_passed=status == "ok" if status in ("ok", "failed") else None)


def best_of(ranking: Ranking, precision: str, batch: int = 8, arch: str = "resnet50"):
    (b,) = [b for b in ranking.best if (b.arch, b.precision, b.batch) == (arch, precision, batch)]
    return b


def result_of(rows: list[BenchRow], run_id: str = "x", started: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(run_id=run_id, interrupted=False, started=started, finished=started + 1.0,
                           environment={"cpu": "test cpu", "command": "bench"}, config={"bare": False}, rows=rows)


def test_the_fastest_passing_backend_wins_and_its_speedup_is_over_the_fastest_passing_fp32():
    rows = [row("torch", "fp32", 40.0), row("ort", "fp32", 50.0), row("openvino", "fp32", 45.0),
            row("ort", "fp32", 500.0, batch=1),                    # another batch: not this batch's baseline
            row("ort", "fp32", 900.0, arch="resnet18"),            # another network: not this one's baseline
            row("openvino", "int8", 450.0), row("ort", "int8", 30.0)]
    r = rank(rows)
    fp32, int8 = best_of(r, "fp32"), best_of(r, "int8")
    assert (fp32.backend, fp32.throughput_ips, fp32.speedup_vs_fp32) == ("ort", 50.0, 1.0)
    assert (int8.backend, int8.throughput_ips, int8.baseline_backend, int8.baseline_ips) == ("openvino", 450.0, "ort", 50.0)
    assert int8.speedup_vs_fp32 == pytest.approx(9.0)
    overall = {(b.arch, b.batch): (b.precision, b.backend) for b in r.overall}
    assert overall == {("resnet50", 8): ("int8", "openvino"), ("resnet50", 1): ("fp32", "ort"),
                       ("resnet18", 8): ("fp32", "ort")}
    assert r.ranked_by == RANKED_BY == "latency_throughput_ips"


def test_a_faster_row_that_failed_parity_never_wins_nor_is_the_baseline():
    rows = [row("ort", "fp32", 50.0), row("torch", "fp32", 80.0, status="failed"),
            row("openvino", "int8", 900.0, status="failed"), row("ort", "int8", 60.0),
            row("torch", "int8", None, status="unavailable", batch=None), row("trt", "int8", None, status="error")]
    r = rank(rows)
    assert (best_of(r, "fp32").backend, best_of(r, "fp32").throughput_ips) == ("ort", 50.0)
    int8 = best_of(r, "int8")
    assert (int8.backend, int8.baseline_backend) == ("ort", "ort") and int8.speedup_vs_fp32 == pytest.approx(1.2)
    assert [b.backend for b in r.overall] == ["ort"] and r.overall[0].precision == "int8"


def test_a_precision_with_no_passing_row_says_so():
    rows = [row("ort", "fp32", 50.0), row("openvino", "int8", 900.0, status="failed"),
            row("ort", "int8", None, status="error"), row("torch", "bf16", None, status="unavailable", batch=None)]
    r = rank(rows)
    int8, bf16 = best_of(r, "int8"), best_of(r, "bf16")
    assert int8.backend is None and int8.speedup_vs_fp32 is None
    assert int8.note == "no row passed parity (openvino: failed parity; ort: error)"
    assert bf16.backend is None and bf16.note == "no row passed parity (torch: unavailable)"  # a row for all batches
    md = "\n".join(R.ranking_section(r))
    assert "| resnet50 | 8 | int8 | none: no row passed parity (openvino: failed parity; ort: error) | - | - |" in md


def test_no_fp32_baseline_gives_no_speedup_and_says_so():
    rows = [row("ort", "fp32", 50.0, status="failed"), row("openvino", "int8", 400.0), row("ort", "fp16", 30.0, batch=1)]
    r = rank(rows)
    int8 = best_of(r, "int8")
    assert int8.backend == "openvino" and int8.speedup_vs_fp32 is None and int8.baseline_backend is None
    assert int8.note == "no fp32 row passed parity at this batch: no speedup"
    assert best_of(r, "fp16", batch=1).speedup_vs_fp32 is None and r.flagged == []
    assert "| resnet50 | 8 | int8 | **openvino** | 400 | - (no FP32 baseline) |" in R.ranking_section(r)


def test_a_low_precision_row_slower_than_fp32_is_flagged_with_the_runners_reason():
    rows = [row("ort", "fp32", 42.6), row("openvino", "fp32", 40.0), row("ort", "int8", 27.5),
            row("openvino", "bf16", 41.0), row("openvino", "int8", 456.0), row("torch", "fp16", 20.0, status="failed")]
    r = rank(rows)
    flags = {(f.backend, f.precision): f for f in r.flagged}
    assert set(flags) == {("ort", "int8"), ("openvino", "bf16"), ("torch", "fp16")}  # not fp32, not the faster int8
    slow = flags[("ort", "int8")]
    assert slow.reason == runner_class("ort").known_slowdown("ort", "int8")
    assert "cannot fuse the TensorRT-style Q/DQ placement" in slow.reason and "openvino" in slow.reason
    assert (slow.baseline_backend, slow.baseline_ips, slow.status) == ("ort", 42.6, "ok")
    assert slow.ratio == pytest.approx(27.5 / 42.6)
    assert flags[("openvino", "bf16")].reason is None and flags[("torch", "fp16")].status == "failed"
    md = "\n".join(R.ranking_section(r))
    assert "- resnet50 b8 int8 ort: 27.5 img/s, 0.65x FP32 (ort, 42.6 img/s). Why: ONNX Runtime's CPU provider" in md
    assert "- resnet50 b8 bf16 openvino: 41.0 img/s, 0.96x FP32 (ort, 42.6 img/s). Reason not known." in md
    assert "- resnet50 b8 fp16 torch: 20.0 img/s, 0.47x FP32 (ort, 42.6 img/s), parity FAILED. Reason not known." in md


def test_the_reasons_come_from_the_runner_classes():
    """Only what a runner class knows: ONNX Runtime's CPU provider at INT8; the table is the classes'."""
    known = {(b, p): runner_class(b).known_slowdown(b, p) for b in BACKENDS for p in BENCH_PRECISIONS}
    assert {k for k, v in known.items() if v is not None} == {("ort", "int8")}
    assert all(v is None or (isinstance(v, str) and v) for v in known.values())
    seen = []
    r = rank([row("ort", "fp32", 50.0), row("ort", "int8", 20.0)], reasons=lambda b, p: seen.append((b, p)) or "told")
    assert seen == [("ort", "int8")] and r.flagged[0].reason == "told"
    gone = rank([row("ort", "fp32", 50.0), row("retired-backend", "int8", 20.0)])  # an older run's backend
    assert gone.flagged[0].reason is None


def test_report_md_and_results_json_hold_the_ranking(tmp_path):
    rows = [row("ort", "fp32", 42.6), row("ort", "int8", 27.5), row("openvino", "int8", 456.0)]
    data = R.to_json(result_of(rows))
    assert data["ranking"] == rank(rows).to_dict()
    assert data["ranking"]["ranked_by"] == "latency_throughput_ips" and data["ranking"]["baseline_precision"] == "fp32"
    assert [(b["precision"], b["backend"], b["speedup_vs_fp32"]) for b in data["ranking"]["overall"]] == [
        ("int8", "openvino", pytest.approx(456.0 / 42.6))]
    assert [(f["backend"], f["precision"]) for f in data["ranking"]["flagged"]] == [("ort", "int8")]
    md = R.to_markdown(result_of(rows), [])
    assert "## Ranking" in md and "| model | batch | precision | best backend | img/s | speedup vs FP32 |" in md
    assert "| resnet50 | 8 | int8 | **openvino** | 456 | 10.70x |" in md and "| resnet50 | 8 | fp32 | ort | 42.6 | 1.00x |" in md
    assert md.index("## Ranking") > md.index("## Results")
    # a results.json written before the ranking existed still loads
    old = {k: v for k, v in data.items() if k != "ranking"}
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert load_results(tmp_path)["rows"][0]["backend"] == "ort"
    assert R.ranking_section(rank([])) == []


def test_bench_merge_ranks_the_merged_rows(tmp_path):
    """FP32 measured in one run, INT8 in another: the merged report ranks them against each other."""
    a, b = tmp_path / "a", tmp_path / "b"
    R.ResultWriter(a).write_partial(result_of([row("ort", "fp32", 40.0, run_id="a"), row("ort", "int8", 10.0, run_id="a")],
                                              run_id="a"))
    R.ResultWriter(b).write_partial(result_of([row("openvino", "int8", 400.0, run_id="b"),
                                               row("ort", "int8", 30.0, run_id="b")], run_id="b", started=10.0))
    res = CliRunner().invoke(app, ["bench-merge", str(a), str(b), "-o", str(tmp_path / "m"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    (best,) = [x for x in out["ranking"]["best"] if x["precision"] == "int8"]
    assert (best["backend"], best["baseline_backend"], best["speedup_vs_fp32"]) == ("openvino", "ort", 10.0)
    # the later run's ort int8 row replaced the earlier one: flagged at 30, not 10
    assert [(f["backend"], f["throughput_ips"]) for f in out["ranking"]["flagged"]] == [("ort", 30.0)]
    merged = load_results(tmp_path / "m")
    assert merged["ranking"] == out["ranking"]
    assert "| resnet50 | 8 | int8 | **openvino** | 400 | 10.00x |" in (tmp_path / "m" / "report.md").read_text()
    again = merge_results([a, b], tmp_path / "m2")
    assert rank(again.rows).to_dict() == out["ranking"]


def test_cli_json_carries_the_ranking(tmp_path, monkeypatch):
    rows = [row("ort", "fp32", 42.6), row("ort", "int8", 27.5), row("openvino", "int8", 456.0)]

    def fake_run(cfg, **kw):
        return SimpleNamespace(run_id="x", out_dir=tmp_path, files={}, interrupted=False, environment={}, rows=rows)

    monkeypatch.setattr(bench_cli, "run_bench", fake_run)
    cli = CliRunner()
    res = cli.invoke(app, ["bench", "-e", "ort", "-d", "50", "-p", "fp32,int8", "-b", "8", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ranking"] == json.loads(json.dumps(rank(rows).to_dict()))
    res = cli.invoke(app, ["bench", "-e", "ort", "-d", "50", "-p", "fp32,int8", "-b", "8", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert "best resnet50 b8: int8 openvino, 456.0 img/s (10.70x FP32)" in text
    assert "slower than FP32: resnet50 b8 int8 ort (0.65x): ONNX Runtime's CPU provider cannot fuse" in text


def test_the_ranking_module_loads_no_torch():
    code = "import sys, resnet_deploy.bench.ranking; print(any(k.split('.')[0] == 'torch' for k in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT / "tests",
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr[-2000:]
