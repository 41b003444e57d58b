"""The harness end to end on CIFAR ResNet-20 at 32x32 (torch, ort, trt-rtx where it runs: the depth
does not matter here, and a small network keeps these cheap), the GPU code paths of the ONNX
Runtime runner on its CPU provider, the TensorRT path on the fake TensorRT, and merging runs.
No figure here is compared with a wall-clock bound (tests/bench/test_timing.py tests the
overhead check's mechanism on a fake clock)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from resnet_deploy.bench import ROW_FIELDS, SCHEMA_VERSION, BenchConfig, run_bench
from resnet_deploy.bench.env import usable_cores
from resnet_deploy.bench.executor import Executor, OpenBackend, Reference
from resnet_deploy.bench.timed_calls import torch_cuda
from resnet_deploy.bench.timing import RssProbe, measure
from resnet_deploy.cli import app
from resnet_deploy.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory, exported):
    exported("resnet20")  # the session's FP32 export, reused by the harness
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(engines=["torch", "ort", "trt-rtx"], depths=[20], precisions=["fp32"], batches=[1, 2],
                      min_time=0.05, min_iters=3, warmup=1, bare_rounds=2, artifacts=str(exported.root))
    return run_bench(cfg, out=out, run_id="e2e", command="pytest")


def test_e2e_rows_have_speed_and_parity(e2e_run):
    rows = {(r["backend"], r["batch"]): r for r in e2e_run.rows}
    for backend in ("torch", "ort"):
        for batch in (1, 2):
            r = rows[(backend, batch)]
            assert r["status"] == "ok", r["reason"]
            assert 0 < r["latency_p50_ms"] <= r["latency_p90_ms"] <= r["latency_p99_ms"]
            assert r["latency_throughput_ips"] == pytest.approx(batch / r["latency_p50_ms"] * 1e3)
            assert r["iterations"] >= 3 and r["clock"] == "perf_counter"
            assert r["parity_passed"] is True and r["parity_rel_l2"] <= 1e-4 and r["parity_top1"] == 1.0
            assert r["parity_n"] == 68 and r["parity_bar_rel_l2"] == 1e-4
            if backend == "torch" and torch_cuda():  # on a GPU machine torch runs there (tests/test_gpu.py)
                assert r["compute_p50_ms"] > 0 and r["memory_kind"].startswith("GPU")
            else:
                assert r["compute_p50_ms"] is None and r["scope"].startswith("end-to-end = compute")
                assert r["memory_kind"].startswith("CPU: peak RSS") and r["memory_mib"] >= 0
            assert math.isfinite(r["harness_overhead_pct"]) and r["bare_mean_ms"] > 0 and r["harness_mean_ms"] > 0
    assert rows[("ort", 1)]["artifact"].endswith("resnet20.fp32.onnx") and rows[("ort", 1)]["artifact_reused"]
    # trt-rtx: unavailable here, saying why (the runner's own reason); where it can run, measured and right
    from resnet_deploy.runners.tensorrt import TensorRTRunner

    rtx = [r for r in e2e_run.rows if r["backend"] == "trt-rtx"]
    why = TensorRTRunner.unavailable("trt-rtx", "fp32")
    assert rtx, "no trt-rtx row"
    for r in rtx:
        if why is not None:
            assert r["status"] == "unavailable" and r["reason"] == why, (r["status"], r["reason"], why)
        else:
            assert r["status"] == "ok" and r["parity_passed"] is True, (r["status"], r["reason"])


def test_e2e_files_json_schema_csv(e2e_run):
    d = e2e_run.out_dir
    assert {p.name for p in d.iterdir()} >= {"results.json", "results.csv", "report.md"}
    data = json.loads((d / "results.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["run_id"] == "e2e" and data["interrupted"] is False
    assert data["row_fields"] == list(ROW_FIELDS)
    env = data["environment"]
    for key in ("cpu", "cpu_count", "load_average_start", "load_average_end", "cpu_pressure_start", "versions", "gpu",
                "command"):
        assert key in env
    assert env["versions"]["torch"] and env["versions"]["onnxruntime"] and env["command"] == "pytest"
    for row in data["rows"]:
        assert list(row) == list(ROW_FIELDS)
        assert row["status"] in ("ok", "failed", "unavailable", "error", "skipped")
        if row["status"] == "ok":
            assert isinstance(row["latency_p50_ms"], float) and isinstance(row["parity_rel_l2"], float)
            assert isinstance(row["batch"], int) and isinstance(row["parity_passed"], bool)
    sc = {(s["backend"]): s for s in data["scenarios"]}
    assert sc["ort"]["offline_batch"] == 2 and sc["ort"]["single_stream_p50_ms"] > 0
    with open(d / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(ROW_FIELDS) and len(rows) == len(data["rows"])
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4 and all(float(r["parity_rel_l2"]) <= 1e-4 and r["parity_top1"] == "1" for r in ok)


def test_e2e_report_and_plots(e2e_run):
    pytest.importorskip("matplotlib", reason="matplotlib draws the plots (a dependency of the bench)")
    d = e2e_run.out_dir
    assert {p.name for p in d.iterdir()} >= {"throughput_resnet20.png", "latency_resnet20.png"}
    md = (d / "report.md").read_text()
    for words in ("## Environment", "## Results", "## Scenarios", "rel L2", "top-1", "harness overhead", "load average",
                  "![throughput_resnet20.png](throughput_resnet20.png)", "= e2e"):
        assert words in md, words
    for name in ("throughput_resnet20.png", "latency_resnet20.png"):
        raw = (d / name).read_bytes()
        assert raw[:8] == PNG_SIGNATURE
        with Image.open(d / name) as im:
            im.verify()
        with Image.open(d / name) as im:
            im.load()
            assert im.size[0] > 200 and im.size[1] > 150
            assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something was drawn


def test_merge_runs_from_one_device(e2e_run, tmp_path):
    """A sweep split across calls merges into one report; a row measured twice keeps the later run's."""
    from resnet_deploy.bench import load_results, merge_results

    first = load_results(e2e_run.out_dir)
    second = json.loads(json.dumps(first))
    second["run_id"] = "e2e-later"
    second["started_utc"] = "2999-01-01T00:00:00Z"
    second["config"]["engines"] = ["ort-cuda"]
    second["config"]["min_time"] = 9.0
    redo = next(r for r in second["rows"] if r["backend"] == "ort" and r["batch"] == 2)
    second["config"]["newer_setting"] = 1  # a setting the first run's version did not have
    redo.update(run_id="e2e-later", latency_p50_ms=123.0, streams=2, streams_throughput_ips=99.0, streams_gain_pct=5.0)
    extra = dict(redo, backend="ort-cuda", status="unavailable", batch=None, reason="no CUDA provider")
    second["rows"] = [redo, extra]
    later = tmp_path / "later"
    later.mkdir()
    (later / "results.json").write_text(json.dumps(second))
    result = merge_results([later, e2e_run.out_dir / "results.json"], tmp_path / "merged")  # order given does not matter
    merged = load_results(tmp_path / "merged")
    assert [r["run_id"] for r in result.rows] == [r["run_id"] for r in merged["rows"]]
    rows = {(r["backend"], r["batch"]): r for r in merged["rows"]}
    assert rows[("ort", 2)]["latency_p50_ms"] == 123.0 and rows[("ort", 2)]["run_id"] == "e2e-later"
    assert rows[("ort", 1)]["run_id"] == "e2e" and rows[("ort-cuda", None)]["status"] == "unavailable"
    assert len(merged["rows"]) == len(first["rows"]) + 1
    assert merged["config"]["engines"] == ["torch", "ort", "trt-rtx", "ort-cuda"]
    assert merged["environment"]["merged_from"] == ["e2e", "e2e-later"]
    md = Path(result.files["report"]).read_text()
    assert "Merged from 2 runs" in md and "min_time" in md and "newer_setting" in md
    assert "Several streams (`--streams 2`)" in md and "| 2: 99.0 (+5%) |" in md  # from the rows, not the first config
    assert (tmp_path / "merged" / "throughput_resnet20.png").read_bytes()[:8] == PNG_SIGNATURE


def test_merge_refuses_other_devices_and_bad_files(e2e_run, tmp_path):
    from resnet_deploy.bench import load_results, merge_results

    other = load_results(e2e_run.out_dir)
    other["environment"]["gpu"] = {"present": True, "name": "NVIDIA H100 80GB HBM3"}
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "results.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match="different devices"):
        merge_results([e2e_run.out_dir, tmp_path / "gpu"], tmp_path / "m")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    r = CliRunner().invoke(app, ["bench-merge", str(tmp_path / "bad"), "-o", str(tmp_path / "m")])
    assert r.exit_code == 2 and "not a readable results.json" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["bench-merge", str(tmp_path / "missing"), "-o", str(tmp_path / "m")])
    assert r.exit_code == 2 and "no benchmark results" in r.output


def test_several_streams_end_to_end(exported, tmp_path):
    """Real backends, two instances at once: each passes parity alone and under load, the
    figures and the note are filled in, and torch's CPU thread count is put back afterwards."""
    exported("resnet20")
    threads = torch.get_num_threads()
    cfg = BenchConfig(engines=["torch", "ort"], depths=[20], precisions=["fp32"], batches=[1], min_time=0.05,
                      min_iters=2, warmup=1, bare=False, streams=2, artifacts=str(exported.root))
    r = run_bench(cfg, out=tmp_path, run_id="s", command="pytest")
    for row in r.rows:
        assert row["status"] == "ok", row["reason"]
        assert row["streams"] == 2 and row["streams_calls"] >= 4 and row["streams_throughput_ips"] > 0
        assert row["streams_note"].startswith("2 streams")
        if not (row["backend"] == "torch" and torch_cuda()):
            cores = usable_cores()
            assert f"and {max(1, cores // 2)} CPU thread" in row["streams_note"]
    assert torch.get_num_threads() == threads


def test_bench_times_the_ort_cuda_path_on_the_cpu_provider(exported):
    """What bench does with a device-resident runner (stage untimed, enqueue timed, padded parity),
    run on ONNX Runtime's CPU provider with I/O binding: same code as ort-cuda. CUDA graphs need a GPU."""
    from resnet_deploy.bench.timed_calls import prepare_timed_calls
    from resnet_deploy.runners import open_runner

    m = exported("resnet20")
    runner = open_runner("ort", m["path"], precision="fp32", io_binding=True)
    inputs = [np.random.default_rng(i).standard_normal((2, 3, 32, 32), dtype=np.float32) for i in range(3)]
    bound = prepare_timed_calls(runner, 2, inputs, device_resident=True)
    import onnxruntime as ort

    sess = ort.InferenceSession(m["path"], providers=["CPUExecutionProvider"])
    want = [sess.run(None, {"input": x})[0] for x in inputs]
    np.testing.assert_allclose(bound.e2e(1), want[1], rtol=1e-4, atol=1e-4)
    bound.compute_before(2)  # stage buffer 2, then the compute-only call works on it
    bound.compute(2)
    np.testing.assert_allclose(runner.fetch(), want[2], rtol=1e-4, atol=1e-4)
    staged = bound.infer(np.concatenate(inputs)[:5])  # 5 inputs through a batch-2 binding: padded chunks
    np.testing.assert_allclose(staged, np.concatenate(want)[:5], rtol=1e-4, atol=1e-4)
    t = measure(bound.compute, 3, warmup=1, min_time=0.0, min_iters=2, clock=bound.compute_clock,
                before=bound.compute_before)
    assert t.iterations == 2 and t.stats.p50 > 0
    assert t.clock == "perf_counter" and any("compute-only" in n for n in bound.notes)
    bound.close()
    runner.close()


def test_several_streams_with_io_binding_on_cpu(exported):
    """Two bound ONNX Runtime instances at once (the ort-cuda path, on the CPU provider): each
    instance's bound buffers are its own, so every stream's output under load matches."""
    import resnet_deploy as rd
    from resnet_deploy.bench import BenchRow
    from resnet_deploy.bench.timed_calls import MemoryProbe
    from resnet_deploy.compare import parity_batch
    from resnet_deploy.runners import open_runner

    m = exported("resnet20")
    model = rd.create_model(20)
    _, parity_inputs = parity_batch(model.card.recipe, n_random=1)
    with open_runner("torch", model) as t:
        reference = t.infer(parity_inputs)
    runners = [open_runner("ort", m["path"], precision="fp32", io_binding=True) for _ in range(2)]
    instances = [OpenBackend(r, MemoryProbe("host-rss", RssProbe()), 0.0) for r in runners]
    inputs = [np.random.default_rng(i).standard_normal((1, 3, 32, 32), dtype=np.float32) for i in range(3)]
    row = BenchRow(run_id="t", arch="resnet20", depth=20, precision="fp32", backend="ort-cuda", batch=1, status="ok",
                   latency_throughput_ips=50.0)
    cfg = BenchConfig(engines=["ort-cuda"], depths=[20], precisions=["fp32"], batches=[1], min_time=0.1, min_iters=3,
                      warmup=1)
    Executor(cfg, artifacts=None).streams_row(row, instances, inputs, Reference(reference, parity_inputs))
    assert row["status"] == "ok" and row["streams"] == 2 and row["streams_calls"] >= 6, row.get("parity_failures")
    assert row["streams_throughput_ips"] > 0 and row["streams_p50_ms"] > 0
    for inst in instances:
        inst.close()
        assert not inst.runner.is_open


def test_bench_trt_path_uses_public_runner_api(fake_runner_env, monkeypatch):
    """bench's TensorRT path (end-to-end, staged compute-only between CUDA events, padded parity) on the fake backend."""
    import resnet_deploy.bench.timed_calls as bb

    rt, path, cudart = fake_runner_env
    monkeypatch.setattr(bb, "load_cudart", lambda: cudart)
    monkeypatch.setattr(bb, "torch_cuda", lambda: False)
    runner = rt.TensorRTRunner(path, cuda_graph=True).open()
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(3)]
    bound = bb.prepare_timed_calls(runner, 2, inputs)
    np.testing.assert_allclose(bound.e2e(1), inputs[1].mean(axis=(2, 3)), rtol=1e-6)
    bound.compute_before(2)
    bound.compute(2)
    bound.compute_sync()
    dev_out = np.frombuffer(cudart.buffers[runner.buffers.device["logits"]], np.float32, count=6).reshape(2, 3)
    np.testing.assert_allclose(dev_out, inputs[2].mean(axis=(2, 3)), rtol=1e-6)
    x = np.concatenate(inputs)[:5]
    np.testing.assert_allclose(bound.infer(x), x.mean(axis=(2, 3)), rtol=1e-6)
    t = measure(bound.compute, 3, warmup=1, min_time=0.0, min_iters=2, clock=bound.compute_clock,
                before=bound.compute_before)
    assert t.iterations == 2 and t.clock == "cuda-events (cudart)"
    assert bb.MemoryProbe.for_runner(runner, RssProbe()).kind == "cuda-meminfo"
    bound.close()
    with pytest.raises(UserError, match="outside the engine's profile"):
        bb.prepare_timed_calls(runner, 8, [np.zeros((8, 3, 4, 4), np.float32)])
    runner.close()


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs g++")
def test_torch_compile_rows_record_one_graph_each_and_the_time_it_took(tmp_path):
    """Each (model, precision, batch) row compiles one static graph, which parity checks and the
    timing runs; the row says how many graphs and how long, and the report shows it."""
    cfg = BenchConfig(engines=["torch-compile"], depths=[20], precisions=["fp32"], batches=[1, 2], min_time=0.02,
                      min_iters=3, warmup=1, bare_rounds=1)
    run = run_bench(cfg, out=tmp_path, run_id="compile", command="pytest")
    rows = [r for r in run.rows if r["backend"] == "torch-compile"]
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["status"] == "ok", r["reason"]
        assert r["compile_graphs"] == 1 and r["compile_s"] > 0, (r["compile_graphs"], r["compile_s"])
        assert r["parity_passed"] is True
    assert "(1 graph)" in (run.out_dir / "report.md").read_text()
