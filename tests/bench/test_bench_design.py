"""What the bench's design promises: the plan needs nothing loaded, the bench names no backend, one
field list makes every file, the method text follows the constants, one error policy, and the
timing core imports without torch."""

from __future__ import annotations

import ast
import csv
import io
import json
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import resnet_deploy.bench as bench_pkg
from resnet_deploy.bench import ROW_FIELDS, SCHEMA_VERSION, BenchConfig, BenchRow, TimingFigures, make_plan, plan_size
from resnet_deploy.bench import report as R
from resnet_deploy.bench.executor import OomSkip
from resnet_deploy.bench.timing import Stats
from resnet_deploy.cli import app
from resnet_deploy.cli import bench as bench_cli
from resnet_deploy.runners import BACKENDS

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "resnet_deploy" / "bench"
MACHINE_FACTS = {"env.py"}  # library versions (a library may share a backend's name, e.g. torch)


def _code_strings(path: Path) -> set[str]:
    """String constants in code: docstrings (a bare string statement) left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings}


def _names_backends(path: Path) -> set[str]:
    """Backend names used as values in code (a comparison, a dict key, a tuple): prose that mentions the
    torch library in a message is not a backend check."""
    return _code_strings(path) & set(BACKENDS)


def test_the_bench_names_no_backend():
    """Adding a backend is a runner class and a registry line: no string in bench/'s code names one."""
    sources = sorted(p for p in BENCH_DIR.glob("*.py") if p.name not in MACHINE_FACTS)
    assert len(sources) >= 8
    offenders = {p.name: hits for p in sources if (hits := _names_backends(p))}
    assert offenders == {}, offenders


def test_the_backend_name_check_sees_a_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""torch is fine in a docstring."""\n# and ort in a comment\nX = backend in ("torch", "trt-rtx")\n'
                   'Y = {"ort-cuda": "its own session"}\n')
    assert _names_backends(bad) == {"torch", "trt-rtx", "ort-cuda"}


# ------------------------------------------------------------------------------------------
# the plan
# ------------------------------------------------------------------------------------------


def test_the_plan_is_every_row_in_run_order():
    cfg = BenchConfig(engines=["ort", "torch"], depths=[20, "resnet32"], precisions=["fp32", "int8"], batches=[1, 4])
    plan = make_plan(cfg)
    assert len(plan) == plan_size(cfg) == 2 * 2 * 2 * 2
    rows = plan.rows()
    assert [(r.arch, r.precision, r.backend, r.batch) for r in rows[:5]] == [
        ("resnet20", "fp32", "ort", 1), ("resnet20", "fp32", "ort", 4), ("resnet20", "fp32", "torch", 1),
        ("resnet20", "fp32", "torch", 4), ("resnet20", "int8", "ort", 1)]
    assert plan.archs() == [(20, "resnet20"), ("resnet32", "resnet32")]


def test_cli_plan_prints_the_rows_and_measures_nothing(tmp_path, monkeypatch):
    def no_run(*a, **kw):
        raise AssertionError("--plan must not run the bench")

    monkeypatch.setattr(bench_cli, "run_bench", no_run)
    cli = CliRunner()
    res = cli.invoke(app, ["bench", "-e", "torch,ort", "-d", "20", "-b", "1,2", "--plan", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["planned_rows"] == 4 and [(r["backend"], r["batch"]) for r in d["rows"]] == [
        ("torch", 1), ("torch", 2), ("ort", 1), ("ort", 2)]
    res = cli.invoke(app, ["bench", "-e", "ort", "-d", "20", "-b", "8", "--plan", "--out", str(tmp_path)])
    assert res.exit_code == 0 and "resnet20" in res.stdout and "1 row(s)" in res.stdout
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# the typed row
# ------------------------------------------------------------------------------------------


def _row(**kw) -> BenchRow:
    r = BenchRow(run_id="r", arch="resnet20", depth=20, precision="fp32", backend="ort", batch=2, status="ok")
    r.put_latency(TimingFigures.of(Stats.of([1.0, 2.0, 3.0]), 2))
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_one_field_list_makes_csv_json_and_markdown():
    assert ROW_FIELDS == tuple(f.name for f in fields(BenchRow))
    row = _row(parity_rel_l2=1.5e-6, memory_mib=321.0, harness_overhead_pct=2.5, iterations=7)
    result = SimpleNamespace(run_id="x", interrupted=False, started=0.0, finished=1.0, environment={},
                             config={"bare": False}, rows=[row])
    header = next(csv.reader(io.StringIO(R.to_csv([row]))))
    data = R.to_json(result)
    assert header == list(ROW_FIELDS) and list(data["rows"][0]) == list(ROW_FIELDS) == data["row_fields"]
    assert data["rows"][0]["latency_p50_ms"] == 2.0 and data["rows"][0]["latency_throughput_ips"] == 1000.0
    md = R.to_markdown(result, [])
    table = [ln for ln in md.splitlines() if ln.startswith("| resnet20 | fp32 | ort | 2 |")]
    assert len(table) == 1
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    columns = [c for c in R.RESULT_COLUMNS if not c.streams_only]
    assert len(cells) == len(columns)
    by = dict(zip((c.header for c in columns), cells))
    assert by["p50 ms"] == "2.00" and by["img/s"] == "1,000" and by["rel L2"] == "1.50e-06"
    assert by["memory MiB"] == "321" and by["harness overhead"] == "+2.5%" and by["calls"] == "7"


def test_a_new_column_is_one_edit(monkeypatch):
    """A column added to the Markdown table's list shows in the table, read from the typed row."""
    monkeypatch.setattr(R, "RESULT_COLUMNS", (*R.RESULT_COLUMNS, R.Column("p90 again", lambda r: f"{r.latency_p90_ms:.1f}")))
    result = SimpleNamespace(run_id="x", interrupted=False, started=0.0, finished=1.0, environment={}, config={},
                             rows=[_row()])
    md = R.to_markdown(result, [])
    assert "| p90 again |" in md and md.count("| 2.8 |") == 1


def test_rows_of_older_files_read_as_typed_rows():
    old = {"run_id": "a", "arch": "resnet18", "depth": 18, "precision": "fp32", "backend": "ort", "batch": 1,
           "status": "ok", "latency_p50_ms": 3.0, "latency_throughput_ips": 333.0, "retired_field": 1}  # no compile_*, no streams_*, one field since gone
    row = BenchRow.from_dict(old)
    assert row.latency_p50_ms == 3.0 and row.compile_graphs is None and row["status"] == "ok" and row.get("nope") is None
    assert R.throughput(old) == 333.0 and R.scenarios([old])[0]["single_stream_p50_ms"] == 3.0
    assert SCHEMA_VERSION == 1


def test_clear_speed_leaves_identity_and_parity():
    row = _row(parity_rel_l2=1e-6, memory_mib=3.0, iterations=4)
    row.clear_speed()
    assert row.latency_p50_ms is None and row.memory_mib is None and row.iterations is None
    assert row.parity_rel_l2 == 1e-6 and row.batch == 2


# ------------------------------------------------------------------------------------------
# method text, error policy, public names
# ------------------------------------------------------------------------------------------


def test_the_method_text_follows_the_warmup_constants(monkeypatch):
    rows = [_row(backend="torch-compile")]
    text = R.method_text({"warmup": None}, rows)
    assert f"auto ({R.CPU_WARMUP} CPU / {R.GPU_WARMUP} GPU, +3 for torch-compile)" in text
    monkeypatch.setattr(R, "CPU_WARMUP", 7)
    monkeypatch.setattr(R, "GPU_WARMUP", 40)
    assert "auto (7 CPU / 40 GPU, +3 for torch-compile)" in R.method_text({"warmup": None}, rows)
    assert "Then 5 warm-up calls" in R.method_text({"warmup": 5}, rows)


def test_the_config_uses_the_same_warmup_constants(monkeypatch):
    import resnet_deploy.bench.config as C

    cfg = BenchConfig(engines=["ort"], depths=[20], precisions=["fp32"], batches=[1])
    assert cfg.warmup_for("ort") == C.CPU_WARMUP
    monkeypatch.setattr(C, "CPU_WARMUP", 9)
    assert cfg.warmup_for("ort") == 9 and BenchConfig(**{**cfg.__dict__, "warmup": 0}).warmup_for("torch-compile") == 3


def test_one_error_policy_skips_after_out_of_memory():
    policy = OomSkip()
    assert policy.attempt(1, lambda: None) is None and policy.skip_reason() is None

    def fail():
        raise ValueError("bad shape")

    err = policy.attempt(2, fail)
    assert err.text == "ValueError: bad shape" and not err.oom and policy.skip_reason() is None

    def oom():
        raise RuntimeError("CUDA out of memory. Tried to allocate 9 GiB")

    err = policy.attempt(4, oom)
    assert err.oom and policy.skip_reason() == "out of memory at batch 4"

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        policy.attempt(8, stop)


def test_the_cli_imports_the_bench_through_its_public_names():
    tree = ast.parse((ROOT / "resnet_deploy" / "cli" / "bench.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in modules if m.startswith("bench.")}, modules
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "bench" for a in n.names}
    assert imported <= set(bench_pkg.__all__)
