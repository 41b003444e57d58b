"""The benchmark harness: the timing core on functions of known duration, the sweep's
bookkeeping (parity failures, out-of-memory, Ctrl-C) on a tiny fake backend, and the real
thing end to end on ResNet-18 with torch and ort at two batch sizes."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from resnet_deploy.bench import ROW_FIELDS, SCHEMA_VERSION, BenchConfig, parse_list, run_bench
from resnet_deploy.bench import harness as H
from resnet_deploy.bench.backends import Bound, MemoryProbe, is_oom, padded_infer, torch_cuda
from resnet_deploy.bench.timing import (RssProbe, Stats, bare_loop, measure, measure_concurrent, overhead_pct,
                                        paired_overhead, percentile)
from resnet_deploy.cli import app
from resnet_deploy.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
cli = CliRunner()


# ------------------------------------------------------------------------------------------
# timing core: functions whose duration is known
# ------------------------------------------------------------------------------------------


def sleeper(seconds: float, log: list[int] | None = None):
    def call(i: int) -> None:
        if log is not None:
            log.append(i)
        time.sleep(seconds)

    return call


def test_measure_median_of_a_known_sleep():
    log: list[int] = []
    t = measure(sleeper(0.02, log), 3, warmup=2, min_time=0.2, min_iters=5)
    # A sleep never returns early, and 20 ms cannot take 10x longer at the median, even on a busy machine.
    assert 20.0 <= t.stats.p50 < 200.0
    assert t.stats.min >= 20.0 and t.stats.p50 <= t.stats.p90 <= t.stats.p99 <= t.stats.max
    assert t.iterations >= 5 and t.timed_wall_s >= 0.2 and len(t.samples_ms) == t.iterations
    assert len(log) == 2 + t.iterations and t.warmup == 2
    # the inputs rotate: every buffer index is used, in order
    assert log[2:8] == [0, 1, 2, 0, 1, 2][: len(log[2:8])] and set(log) == {0, 1, 2}


def test_measure_min_iters_wins_over_min_time():
    t = measure(sleeper(0.001), 2, warmup=0, min_time=0.0, min_iters=7)
    assert t.iterations == 7 and t.first_call_s == 0.0


def test_measure_stops_at_max_iters():
    t = measure(sleeper(0.001), 1, warmup=0, min_time=60.0, min_iters=1, max_iters=4)
    assert t.iterations == 4 and t.stopped_by == "max_iters"


def test_before_is_not_timed():
    staged: list[int] = []

    def before(i: int) -> None:  # slow staging, outside the timed region
        staged.append(i)
        time.sleep(0.05)

    t = measure(sleeper(0.005), 2, warmup=0, min_time=0.0, min_iters=4, before=before)
    assert staged == [0, 1, 0, 1]
    assert 5.0 <= t.stats.p50 < 45.0  # the 50 ms of staging is not in the figure


def test_custom_clock_is_used():
    class FixedClock:
        name = "fixed"

        def time(self, call, i):
            call(i)
            return 0.004  # 4 ms, whatever the call took

    t = measure(lambda i: None, 1, warmup=0, min_time=0.0, min_iters=3, clock=FixedClock())
    assert t.clock == "fixed" and t.samples_ms == pytest.approx([4.0, 4.0, 4.0])


def test_bare_loop_and_paired_overhead_on_a_known_sleep():
    b = bare_loop(sleeper(0.01), 2, 6, rounds=2)
    assert b.iterations == 6 and b.rounds == 2 and 10.0 <= b.mean_ms < 100.0
    chk = paired_overhead(sleeper(0.01), 2, calls_per_block=3, rounds=2)
    assert chk.rounds == 2 and len(chk.round_overheads_pct) == 2
    assert 10.0 <= chk.harness_mean_ms < 100.0 and 10.0 <= chk.bare_mean_ms < 100.0
    assert math.isfinite(chk.overhead_pct)
    assert overhead_pct(11.0, 10.0) == pytest.approx(10.0) and math.isnan(overhead_pct(1.0, 0.0))


def test_concurrent_sleepers_overlap():
    """Two streams that sleep 10 ms per call: one stream can never exceed 100 calls/s (a sleep
    never returns early), so a total above that shows they really ran at once."""
    import threading

    where: list[int] = []

    def ctx():
        where.append(threading.get_ident())
        import contextlib

        return contextlib.nullcontext()

    def call(i):
        time.sleep(0.01)
        return np.full((1, 2), i, dtype=np.float32)

    t = measure_concurrent([call, call], 3, warmup=1, min_time=0.3, min_iters=5, contexts=[ctx, ctx])
    assert t.streams == 2 and all(c >= 5 for c in t.calls) and t.total_calls == len(t.samples_ms)
    assert all(ms >= 10.0 for ms in t.samples_ms)
    assert 100 < t.throughput(1) <= 200
    assert t.throughput(4) == pytest.approx(4 * t.throughput(1))
    # each context was entered inside its own stream's thread, not the caller's
    assert len(set(where)) == 2 and threading.get_ident() not in where
    # each stream's last output is kept with the buffer it came from
    for idx, out in t.last:
        assert 0 <= idx < 3 and out[0, 0] == idx


@pytest.mark.parametrize("when", ["warm-up", "timed"])
def test_concurrent_failure_in_one_stream_is_raised_without_a_hang(when):
    calls = {"n": 0}

    def bad(i):
        calls["n"] += 1
        if when == "warm-up" or calls["n"] > 3:
            raise RuntimeError("stream broke")
        time.sleep(0.001)

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="stream broke"):
        measure_concurrent([sleeper(0.001), bad], 2, warmup=1, min_time=30.0, min_iters=2)
    assert time.perf_counter() - t0 < 10  # the other stream and the timer stopped at once


def test_concurrent_ctrl_c_stops_every_stream():
    import _thread
    import threading

    n = {"calls": 0}

    def call(i):
        n["calls"] += 1
        if n["calls"] == 5:
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        time.sleep(0.002)

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        measure_concurrent([call, sleeper(0.002)], 2, warmup=0, min_time=30.0, min_iters=1)
    assert time.perf_counter() - t0 < 10  # not the 30 s asked for
    assert not [t for t in threading.enumerate() if t.name.startswith("stream-")]


def test_percentiles_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=101).tolist()
    s = sorted(x)
    for q in (0, 50, 90, 99, 100):
        assert percentile(s, q) == pytest.approx(float(np.percentile(x, q)))
    st = Stats.of([4.0, 1.0, 3.0, 2.0])
    assert (st.n, st.p50, st.min, st.max, st.mean) == (4, 2.5, 1.0, 4.0, 2.5)
    assert math.isnan(Stats.of([]).p50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_rss_probe_sees_an_allocation():
    import mmap

    probe = RssProbe()
    probe.set_baseline()
    probe.reset_peak()
    # 64 MiB of fresh anonymous pages, every page touched. (Not np.ones: after earlier tests freed
    # memory, the allocator may hand back pages that are already resident, and RSS need not grow:
    # the caveat docs/bench.md states for CPU rows.)
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"\x01" * len(block))
    peak = probe.peak_delta_mib()
    block.close()
    assert peak >= 48.0, (peak, probe.method)


def test_padded_infer_pads_to_the_bound_batch():
    seen = []

    def run(x):
        seen.append(len(x))
        return x.reshape(len(x), -1)[:, :2] * 2

    x = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    y = padded_infer(run, 4)(x)
    assert seen == [4, 4] and y.shape == (5, 2) and np.array_equal(y, x[:, :2] * 2)


def test_is_oom():
    assert is_oom(MemoryError()) and is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_oom(RuntimeError("shape mismatch"))


def test_parse_list():
    assert parse_list("18,50,18", all_values=(), kind=int, name="depth") == [18, 50]
    assert parse_list("all", all_values=(18, 34), kind=int, name="depth") == [18, 34]
    assert parse_list("resnext50_32x4d", all_values=(), kind=int, name="depth") == ["resnext50_32x4d"]
    with pytest.raises(UserError):
        parse_list("1,x", all_values=(), kind=int, name="batch")


# ------------------------------------------------------------------------------------------
# the sweep's bookkeeping on a tiny fake backend (no ResNet, fast)
# ------------------------------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)
        self.arch = "resnet18"
        self.num_classes = 10

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


class FakePrep:
    """A backend that behaves as told: correct, wrong, out of memory, interrupted, or (``clash``)
    correct alone but wrong whenever two of its instances run at once."""

    in_flight = 0
    lock = __import__("threading").Lock()

    def __init__(self, model, mode, rss):
        self.backend, self.device, self.load_s, self.notes = "fake", "cpu", 0.0, ["fake"]
        self.memory = MemoryProbe("host-rss", rss)
        self.model, self.mode, self.closed = model, mode, False

    def context(self):
        return torch.inference_mode()

    def run(self, x):
        with torch.inference_mode():
            y = self.model(torch.from_numpy(x)).numpy()
        return y + 1.0 if self.mode == "wrong" else y

    def bind(self, batch, inputs):
        if self.mode == "oom" and batch >= 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 9 GiB")
        if self.mode == "interrupt" and batch >= 2:
            raise KeyboardInterrupt

        def e2e(i):
            if self.mode != "clash":
                time.sleep(0.001)
                return self.run(inputs[i])
            with FakePrep.lock:
                FakePrep.in_flight += 1
                crowd = FakePrep.in_flight
            time.sleep(0.003)
            with FakePrep.lock:
                crowd = max(crowd, FakePrep.in_flight)
                FakePrep.in_flight -= 1
            y = self.run(inputs[i])
            return y * 0.0 if crowd > 1 else y  # e.g. an output buffer the instances share

        return Bound(batch=batch, e2e=e2e, infer=padded_infer(self.run, batch))

    def describe(self):
        return {}

    def close(self):
        self.closed = True


@pytest.fixture
def fake_sweep(monkeypatch):
    """run_bench with a tiny model and a fake backend: ``modes`` maps backend name -> mode."""
    import resnet_deploy.api as api

    class Modes(dict):
        opened: list[FakePrep]

    modes = Modes()
    opened: list[FakePrep] = []
    tiny = Tiny().eval()
    monkeypatch.setattr(api, "create_model", lambda arch, **kw: tiny)
    monkeypatch.setattr(H, "availability", lambda backend, precision: None if backend in modes else "not here")

    def prepare(backend, *, model, artifact, precision, rss, **kw):
        p = FakePrep(model, modes[backend], rss)
        opened.append(p)
        return p

    monkeypatch.setattr(H, "prepare", prepare)
    monkeypatch.setattr(H, "make_onnx", lambda arch, precision, cfg, progress: ("fake.onnx", 0.0, True))
    monkeypatch.setattr(H, "_inputs", lambda batch, n, seed: [np.random.default_rng(i).standard_normal(
        (batch, 3, 4, 4), dtype=np.float32) for i in range(n)])
    modes.opened = opened
    return modes


def quick_cfg(engines, batches=(1, 2, 4), **kw):
    kw = {"min_time": 0.0, "min_iters": 3, "warmup": 1, "bare_rounds": 2, **kw}
    return BenchConfig(engines=list(engines), depths=[18], precisions=["fp32"], batches=list(batches), **kw)


def test_sweep_marks_parity_failures_oom_and_goes_on(fake_sweep, tmp_path):
    fake_sweep.update({"torch": "good", "torch-compile": "wrong", "ort": "oom"})
    r = run_bench(quick_cfg(["torch", "torch-compile", "ort", "trt"]), out=tmp_path, run_id="fake")
    by = {(row["backend"], row["batch"]): row for row in r.rows}
    assert [by[("torch", b)]["status"] for b in (1, 2, 4)] == ["ok"] * 3
    # a failed parity row keeps its figures and is marked failed, with the reason
    bad = by[("torch-compile", 2)]
    assert bad["status"] == "failed" and bad["parity_passed"] is False and bad["latency_p50_ms"] > 0
    assert "relative L2" in bad["reason"] and bad["parity_rel_l2"] > 1e-4
    # out of memory at batch 2: recorded, larger batches skipped, the sweep went on to trt
    assert by[("ort", 1)]["status"] == "ok"
    assert by[("ort", 2)]["status"] == "error" and by[("ort", 2)]["reason"].startswith("out of memory")
    assert by[("ort", 2)]["latency_p50_ms"] is None
    assert by[("ort", 4)]["status"] == "skipped" and "batch 2" in by[("ort", 4)]["reason"]
    assert by[("trt", None)]["status"] == "unavailable" and by[("trt", None)]["reason"] == "not here"
    assert all(p.closed for p in fake_sweep.opened)
    # every measured row has its correctness figure
    for row in r.rows:
        if row["latency_p50_ms"] is not None:
            assert row["parity_rel_l2"] is not None and row["parity_top1"] is not None
    report = (tmp_path / "fake" / "report.md").read_text()
    assert "**FAILED**" in report and "unavailable: not here" in report and "skipped: out of memory" in report


def test_several_streams_figures_and_what_they_check(fake_sweep, tmp_path):
    fake_sweep.update({"torch": "good", "ort": "clash", "torch-compile": "good"})
    r = run_bench(quick_cfg(["torch", "ort", "torch-compile"], batches=(1, 2), streams=3, min_time=0.05), out=tmp_path,
                  run_id="st")
    by = {(row["backend"], row["batch"]): row for row in r.rows}
    for b in (1, 2):
        good = by[("torch", b)]
        assert good["status"] == "ok" and good["streams"] == 3 and good["streams_calls"] >= 9
        assert good["streams_throughput_ips"] > 0 and good["streams_p50_ms"] > 0
        assert good["streams_gain_pct"] == pytest.approx(
            (good["streams_throughput_ips"] / good["latency_throughput_ips"] - 1) * 100)
        assert good["streams_note"].startswith("3 streams, each a Python thread")
        # instances that are right alone but corrupt each other under load fail the row
        bad = by[("ort", b)]
        assert bad["status"] == "failed" and bad["parity_passed"] is False
        assert "under load differs from the same input run alone" in bad["parity_failures"]
        assert bad["latency_p50_ms"] > 0 and bad["streams_throughput_ips"] > 0  # figures kept, marked failed
        # not measured where it is not known to work, and the row says why
        tc = by[("torch-compile", b)]
        assert tc["status"] == "ok" and tc["streams"] is None and "single-stream only" in tc["streams_note"]
    # the single-stream instance plus three fresh ones per backend, all closed
    assert len(fake_sweep.opened) == 3 * 4 - 3 and all(p.closed for p in fake_sweep.opened)
    md = (tmp_path / "st" / "report.md").read_text()
    assert "streams: img/s (gain)" in md and "several streams img/s" in md and "--streams 3" in md
    assert "| 3: " in md and "**FAILED**" in md and "single-stream only" in md
    data = json.loads((tmp_path / "st" / "results.json").read_text())
    assert {"streams", "streams_throughput_ips", "streams_gain_pct", "streams_note"} <= set(data["row_fields"])
    assert {s["backend"]: s["offline_streams"] for s in data["scenarios"]} == {"torch": 3, "ort": 3, "torch-compile": None}


def test_several_streams_that_cannot_open_are_noted(fake_sweep, tmp_path, monkeypatch):
    fake_sweep.update({"torch": "good"})
    real = H.prepare
    n = {"opened": 0}

    def prepare(backend, **kw):
        n["opened"] += 1
        if n["opened"] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(backend, **kw)

    monkeypatch.setattr(H, "prepare", prepare)
    r = run_bench(quick_cfg(["torch"], batches=(1,), streams=2), out=tmp_path, run_id="no")
    row = r.rows[0]
    assert row["status"] == "ok" and row["streams"] is None
    assert row["streams_note"].startswith("could not open 2 instances: out of memory")
    assert all(p.closed for p in fake_sweep.opened)


def test_ctrl_c_during_several_streams_keeps_the_rows(fake_sweep, tmp_path, monkeypatch):
    fake_sweep.update({"torch": "good"})

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(H, "streams_row", interrupted)
    r = run_bench(quick_cfg(["torch"], batches=(1, 2), streams=2), out=tmp_path, run_id="sc")
    assert r.interrupted and [row["status"] for row in r.rows] == ["ok", "ok"]
    d = json.loads((tmp_path / "sc" / "results.json").read_text())
    assert d["interrupted"] is True and all(row["latency_p50_ms"] > 0 for row in d["rows"])
    assert all(p.closed for p in fake_sweep.opened) and len(fake_sweep.opened) == 3


def test_ctrl_c_writes_what_was_measured(fake_sweep, tmp_path):
    fake_sweep.update({"torch": "interrupt"})
    r = run_bench(quick_cfg(["torch"]), out=tmp_path, run_id="int")
    assert r.interrupted and [row["batch"] for row in r.rows] == [1]
    d = json.loads((tmp_path / "int" / "results.json").read_text())
    assert d["interrupted"] is True and len(d["rows"]) == 1 and d["rows"][0]["status"] == "ok"
    assert "Interrupted" in (tmp_path / "int" / "report.md").read_text()
    assert fake_sweep.opened[0].closed


def test_cli_json_and_exit_codes(fake_sweep, tmp_path):
    fake_sweep.update({"torch": "good"})
    res = cli.invoke(app, ["bench", "-e", "torch", "-d", "18", "-b", "1,2", "--min-time", "0", "--min-iters", "2",
                           "--warmup", "1", "--out", str(tmp_path), "--run-id", "c", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["run_id"] == "c" and [r["status"] for r in d["rows"]] == ["ok", "ok"]
    assert set(d["files"]) >= {"json", "csv", "report"}
    fake_sweep.update({"torch": "wrong"})
    res = cli.invoke(app, ["bench", "-e", "torch", "-b", "1", "--min-time", "0", "--min-iters", "2", "--out",
                           str(tmp_path), "--run-id", "w", "--json"])
    assert res.exit_code == 1 and "parity failed" in res.stderr


@pytest.mark.parametrize("args, words", [
    (["-e", "nope"], "unknown engine"),
    (["-b", "0"], "batch"),
    (["-b", "1,x"], "integers"),
    (["-p", "fp8"], "unknown precision"),
    (["-d", "17"], "17"),
    (["--min-time", "-1"], "min-time"),
    (["--run-id", "../x"], "run-id"),
    (["--streams", "0"], "streams"),
])
def test_cli_bad_input_is_one_line(args, words, tmp_path):
    res = cli.invoke(app, ["bench", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in res.output


# ------------------------------------------------------------------------------------------
# end to end: ResNet-18, torch and ort, two batch sizes
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory, exported):
    exported("resnet18")  # the session's FP32 export, reused by the harness
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(engines=["torch", "ort", "trt-rtx"], depths=[18], precisions=["fp32"], batches=[1, 2],
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
            assert r["parity_n"] == 12 and r["parity_bar_rel_l2"] == 1e-4
            if backend == "torch" and torch_cuda():  # on a GPU machine torch runs there (tests/test_gpu.py)
                assert r["compute_p50_ms"] > 0 and r["memory_kind"].startswith("GPU")
            else:
                assert r["compute_p50_ms"] is None and r["scope"].startswith("end-to-end = compute")
                assert r["memory_kind"].startswith("CPU: peak RSS") and r["memory_mib"] >= 0
            assert math.isfinite(r["harness_overhead_pct"]) and r["bare_mean_ms"] > 0
    assert rows[("ort", 1)]["artifact"].endswith("resnet18.fp32.onnx") and rows[("ort", 1)]["artifact_reused"]
    # trt-rtx cannot execute here; on a GPU machine it may run, so only check the shape of the row
    rtx = [r for r in e2e_run.rows if r["backend"] == "trt-rtx"]
    assert rtx and all(r["status"] in ("unavailable", "ok", "failed", "error") for r in rtx)


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
    assert {p.name for p in d.iterdir()} >= {"throughput_resnet18.png", "latency_resnet18.png"}
    md = (d / "report.md").read_text()
    for words in ("## Environment", "## Results", "## Scenarios", "rel L2", "top-1", "harness overhead", "load average",
                  "![throughput_resnet18.png](throughput_resnet18.png)", "= e2e"):
        assert words in md, words
    for name in ("throughput_resnet18.png", "latency_resnet18.png"):
        raw = (d / name).read_bytes()
        assert raw[:8] == PNG_SIGNATURE
        with Image.open(d / name) as im:
            im.verify()
        with Image.open(d / name) as im:
            im.load()
            assert im.size[0] > 200 and im.size[1] > 150
            assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something was drawn


def test_ort_io_binding_path_on_cpu(exported):
    """The ort-cuda path (I/O binding, update_inplace staging, padded parity, compute vs end to end),
    run on the CPU provider: same code, device_type="cpu". CUDA graphs themselves need a GPU."""
    from resnet_deploy.bench.backends import OrtCudaPrepared

    m = exported("resnet18")
    prep = OrtCudaPrepared(m["path"], "fp32", RssProbe(), cuda_graph=False, device_type="cpu")
    inputs = [np.random.default_rng(i).standard_normal((2, 3, 224, 224), dtype=np.float32) for i in range(3)]
    bound = prep.bind(2, inputs)
    import onnxruntime as ort

    sess = ort.InferenceSession(m["path"], providers=["CPUExecutionProvider"])
    want = [sess.run(None, {"input": x})[0] for x in inputs]
    np.testing.assert_allclose(bound.e2e(1), want[1], rtol=1e-4, atol=1e-4)
    bound.compute_before(2)  # stage buffer 2, then the compute-only call works on it
    bound.compute(2)
    staged = bound.infer(np.concatenate(inputs)[:5])  # 5 inputs through a batch-2 binding: padded chunks
    np.testing.assert_allclose(staged, np.concatenate(want)[:5], rtol=1e-4, atol=1e-4)
    t = measure(bound.compute, 3, warmup=1, min_time=0.0, min_iters=2, clock=bound.compute_clock,
                before=bound.compute_before)
    assert t.iterations == 2 and t.stats.p50 > 0
    assert any("I/O binding" in n for n in bound.notes)
    bound.close()


def test_ort_io_binding_path_with_several_streams_on_cpu(exported):
    """The ort-cuda I/O-binding path with two instances at once (on the CPU provider): each
    instance's bound buffers are its own, so every stream's output under load matches."""
    import resnet_deploy as rd
    from resnet_deploy.bench.backends import OrtCudaPrepared
    from resnet_deploy.compare import parity_batch
    from resnet_deploy.runners.torch_runner import TorchRunner

    m = exported("resnet18")
    _, parity_inputs = parity_batch(n_random=1)
    reference = TorchRunner(rd.create_model(18)).infer(parity_inputs)
    preps = [OrtCudaPrepared(m["path"], "fp32", RssProbe(), cuda_graph=False, device_type="cpu") for _ in range(2)]
    inputs = [np.random.default_rng(i).standard_normal((1, 3, 224, 224), dtype=np.float32) for i in range(3)]
    row = {"batch": 1, "precision": "fp32", "backend": "ort-cuda", "status": "ok", "latency_throughput_ips": 50.0}
    cfg = BenchConfig(engines=["ort-cuda"], depths=[18], precisions=["fp32"], batches=[1], min_time=0.1, min_iters=3,
                      warmup=1)
    H.streams_row(row, preps, inputs, reference, parity_inputs, cfg)
    assert row["status"] == "ok" and row["streams"] == 2 and row["streams_calls"] >= 6, row.get("parity_failures")
    assert row["streams_throughput_ips"] > 0 and row["streams_p50_ms"] > 0
    assert all(p._runner is None for p in preps)  # every bound session closed


def test_ort_runner_options_and_device_io_on_cpu(exported, monkeypatch):
    """OrtRunner's public hooks bench uses: provider/session options, bind_device_io + run_bound."""
    from resnet_deploy.runners import open_runner

    import onnxruntime as ort

    m = exported("resnet18")
    seen = []
    real = ort.InferenceSession

    def spy(path, options, providers):
        seen.append(providers)
        return real(path, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    r = open_runner("ort", m["path"], precision="fp32", provider_options={"arena_extend_strategy": "kSameAsRequested"},
                    session_options={"enable_mem_pattern": False, "session.intra_op.allow_spinning": "0"})
    monkeypatch.setattr(ort, "InferenceSession", real)
    # provider options go to the backend's first provider (the CPU one does not report them back)
    assert seen == [[("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})]]
    opts = r.session.get_session_options()
    assert opts.enable_mem_pattern is False
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    x = [np.random.default_rng(i).standard_normal((2, 3, 224, 224), dtype=np.float32) for i in range(2)]
    want = [r.infer(xi) for xi in x]
    with pytest.raises(UserError, match="bind_device_io"):
        r.run_bound()
    io = r.bind_device_io((2, 3, 224, 224))
    for i in (1, 0):
        io.stage(x[i])
        x[i] += 1.0  # the bound input is its own buffer, not a view of the staged array
        r.run_bound()
        io.synchronize()
        np.testing.assert_allclose(io.fetch(), want[i], rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="bound input"):
        io.stage(x[0][:1])
    np.testing.assert_allclose(r.infer(x[0] - 1.0), want[0], rtol=1e-4, atol=1e-4)  # infer unchanged
    r.close()


def test_ort_cuda_that_falls_back_to_cpu_is_unavailable(exported, monkeypatch):
    """onnxruntime silently falls back to the CPU provider when CUDA's libraries do not load: the
    runner must refuse, or a CPU figure would be reported as ort-cuda."""
    import onnxruntime as ort

    from resnet_deploy.errors import BackendUnavailable
    from resnet_deploy.runners import open_runner
    from resnet_deploy.runners import ort as ort_runner

    m = exported("resnet18")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ort_runner.preload_cuda_libraries.cache_clear()
    monkeypatch.setattr(ort, "preload_dlls", lambda: print("Failed to load libcudnn.so.9: cannot open shared object file"),
                        raising=False)
    with pytest.raises(BackendUnavailable, match=r"has CUDAExecutionProvider but could not start it.*fell back to CPUExecutionProvider.*libcudnn"):
        open_runner("ort-cuda", m["path"], precision="fp32")
    ort_runner.preload_cuda_libraries.cache_clear()


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
    assert (tmp_path / "merged" / "throughput_resnet18.png").read_bytes()[:8] == PNG_SIGNATURE


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


def test_ort_cuda_graph_refused_at_session_creation_falls_back(exported):
    """ONNX Runtime refuses enable_cuda_graph when the graph is not wholly on the CUDA provider,
    already when the session is made: the row is then timed without graphs and says so."""
    from resnet_deploy.bench.backends import OrtCudaPrepared

    m = exported("resnet18")
    prep = OrtCudaPrepared(m["path"], "fp32", RssProbe(), cuda_graph=True, device_type="cpu")
    real_open = prep._open

    def open_(graph):
        if graph:
            raise UserError("onnxruntime cannot load x.onnx: This session cannot use the CUDA Graph feature as requested")
        return real_open(graph)

    prep._open = open_
    x = [np.random.default_rng(i).standard_normal((1, 3, 224, 224), dtype=np.float32) for i in range(2)]
    bound = prep.bind(1, x)
    assert bound.e2e(0).shape == (1, 1000)
    assert any(n.startswith("CUDA graph capture failed (onnxruntime cannot load") for n in bound.notes)
    assert any(n.startswith("I/O binding,") and "CUDA graph" not in n for n in bound.notes)
    bound.close()


def test_several_streams_end_to_end(exported, tmp_path):
    """Real backends, two instances at once: each passes parity alone and under load, the
    figures and the note are filled in, and torch's CPU thread count is put back afterwards."""
    exported("resnet18")
    threads = torch.get_num_threads()
    cfg = BenchConfig(engines=["torch", "ort"], depths=[18], precisions=["fp32"], batches=[1], min_time=0.05,
                      min_iters=2, warmup=1, bare=False, streams=2, artifacts=str(exported.root))
    r = run_bench(cfg, out=tmp_path, run_id="s", command="pytest")
    for row in r.rows:
        assert row["status"] == "ok", row["reason"]
        assert row["streams"] == 2 and row["streams_calls"] >= 4 and row["streams_throughput_ips"] > 0
        assert row["streams_note"].startswith("2 streams")
        if not (row["backend"] == "torch" and torch_cuda()):
            cores = H.usable_cores()
            assert f"and {max(1, cores // 2)} CPU thread" in row["streams_note"]
    assert torch.get_num_threads() == threads
