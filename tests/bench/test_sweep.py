"""The sweep's bookkeeping (parity failures, out-of-memory, several streams, Ctrl-C, the CLI) on a
tiny fake runner: no ResNet, fast. The fakes are handed to ``run_bench`` (its ``artifacts`` and
``runners`` parameters): nothing inside the bench is patched."""

from __future__ import annotations

import functools
import json
import threading
import time
import types

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from resnet_deploy.bench import Artifact, BenchConfig, RegistryRunners, run_bench
from resnet_deploy.cli import app
from resnet_deploy.cli import bench as bench_cli
from resnet_deploy.errors import UserError
from resnet_deploy.preprocess import Preprocess
from resnet_deploy.runners import InputSpec, Runner

cli = CliRunner()


class Tiny(nn.Module):
    card = types.SimpleNamespace(recipe=Preprocess(image_size=8, resize=8))  # what the sweep reads of a model

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


class FakeRunner(Runner):
    """A backend that behaves as told: correct, wrong, out of memory, interrupted, or (``clash``)
    correct alone but wrong whenever two of its instances run at once."""

    in_flight = 0
    lock = threading.Lock()

    def __init__(self, model, *, backend, mode, precision=None, **_options):
        super().__init__()
        self.backend, self.model, self.mode, self.closed = backend, model, mode, False

    def _open(self):
        return InputSpec("input", np.float32, (3, None, None))

    def _close(self):
        self.closed = True

    def run(self, x):
        with torch.inference_mode():
            y = self.model(torch.from_numpy(x)).numpy()
        return y + 1.0 if self.mode == "wrong" else y

    def _infer(self, x):
        if self.mode == "oom" and len(x) >= 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 9 GiB")
        if self.mode == "interrupt" and len(x) >= 2 or self.mode == "interrupt-any":
            raise KeyboardInterrupt
        if self.mode != "clash":
            time.sleep(0.001)
            return self.run(x)
        with FakeRunner.lock:
            FakeRunner.in_flight += 1
            crowd = FakeRunner.in_flight
        time.sleep(0.003)
        with FakeRunner.lock:
            crowd = max(crowd, FakeRunner.in_flight)
            FakeRunner.in_flight -= 1
        y = self.run(x)
        return y * 0.0 if crowd > 1 else y  # e.g. an output buffer the instances share

    def describe(self):
        return {"backend": self.backend, "notes": ["fake"]}


class FakeArtifacts:
    """The artifact provider: the tiny model for every architecture, and it as every backend's artifact."""

    def __init__(self, model):
        self.tiny = model

    def model(self, arch):
        return self.tiny

    def artifact(self, arch, precision, backend, model):
        return Artifact(target=model, path="fake.onnx", build_s=0.0, reused=True)


class FakeRunners(RegistryRunners):
    """Runners as told by ``modes`` (backend name -> mode); a backend without a mode is unavailable.
    ``fail_after`` makes every runner after that many fail to open; ``interrupt_after`` makes every
    runner after that many raise Ctrl-C when it infers."""

    def __init__(self, tiny):
        self.tiny, self.modes, self.opened = tiny, {}, []
        self.fail_after = self.interrupt_after = None

    def unavailable(self, backend, precision):
        return None if backend in self.modes else "not here"

    def make(self, backend, target, precision, options):
        if self.fail_after is not None and len(self.opened) >= self.fail_after:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        late = self.interrupt_after is not None and len(self.opened) >= self.interrupt_after
        r = FakeRunner(self.tiny, backend=backend, mode="interrupt-any" if late else self.modes[backend])
        self.opened.append(r)
        return r


@pytest.fixture
def fake_sweep():
    """``fake_sweep.run(cfg, ...)``: run_bench with a tiny model and fake runners (``fake_sweep.modes``)."""
    tiny = Tiny().eval()
    runners = FakeRunners(tiny)
    runners.run = functools.partial(run_bench, artifacts=FakeArtifacts(tiny), runners=runners)
    return runners


def quick_cfg(engines, batches=(1, 2, 4), **kw):
    kw = {"min_time": 0.0, "min_iters": 3, "warmup": 1, "bare_rounds": 2, **kw}
    return BenchConfig(engines=list(engines), depths=[18], precisions=["fp32"], batches=list(batches), **kw)


def test_sweep_marks_parity_failures_oom_and_goes_on(fake_sweep, tmp_path):
    fake_sweep.modes.update({"torch": "good", "torch-compile": "wrong", "ort": "oom"})
    r = fake_sweep.run(quick_cfg(["torch", "torch-compile", "ort", "trt"]), out=tmp_path, run_id="fake")
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
    fake_sweep.modes.update({"torch": "good", "ort": "clash", "torch-compile": "good"})
    r = fake_sweep.run(quick_cfg(["torch", "ort", "torch-compile"], batches=(1, 2), streams=3, min_time=0.05), out=tmp_path,
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


def test_several_streams_that_cannot_open_are_noted(fake_sweep, tmp_path):
    fake_sweep.modes.update({"torch": "good"})
    fake_sweep.fail_after = 2  # the single-stream runner and one of the two streams open; the second does not
    r = fake_sweep.run(quick_cfg(["torch"], batches=(1,), streams=2), out=tmp_path, run_id="no")
    row = r.rows[0]
    assert row["status"] == "ok" and row["streams"] is None
    assert row["streams_note"].startswith("could not open 2 instances: out of memory")
    assert all(p.closed for p in fake_sweep.opened)


def test_ctrl_c_during_several_streams_keeps_the_rows(fake_sweep, tmp_path):
    fake_sweep.modes.update({"torch": "good"})
    fake_sweep.interrupt_after = 1  # the streams' instances (not the single-stream one) are interrupted
    r = fake_sweep.run(quick_cfg(["torch"], batches=(1, 2), streams=2), out=tmp_path, run_id="sc")
    assert r.interrupted and [row["status"] for row in r.rows] == ["ok", "ok"]
    d = json.loads((tmp_path / "sc" / "results.json").read_text())
    assert d["interrupted"] is True and all(row["latency_p50_ms"] > 0 for row in d["rows"])
    assert all(p.closed for p in fake_sweep.opened) and len(fake_sweep.opened) == 3


def test_ctrl_c_writes_what_was_measured(fake_sweep, tmp_path):
    fake_sweep.modes.update({"torch": "interrupt"})
    r = fake_sweep.run(quick_cfg(["torch"]), out=tmp_path, run_id="int")
    assert r.interrupted and [row["batch"] for row in r.rows] == [1]
    d = json.loads((tmp_path / "int" / "results.json").read_text())
    assert d["interrupted"] is True and len(d["rows"]) == 1 and d["rows"][0]["status"] == "ok"
    assert "Interrupted" in (tmp_path / "int" / "report.md").read_text()
    assert fake_sweep.opened[0].closed


def test_cli_json_and_exit_codes(fake_sweep, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_cli, "run_bench", fake_sweep.run)  # the command's one call into the bench
    fake_sweep.modes.update({"torch": "good"})
    res = cli.invoke(app, ["bench", "-e", "torch", "-d", "18", "-b", "1,2", "--min-time", "0", "--min-iters", "2",
                           "--warmup", "1", "--out", str(tmp_path), "--run-id", "c", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["run_id"] == "c" and [r["status"] for r in d["rows"]] == ["ok", "ok"]
    assert set(d["files"]) >= {"json", "csv", "report"}
    fake_sweep.modes.update({"torch": "wrong"})
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




# ------------------------------------------------------------------------------------------ earlier results (issue 31)


def test_a_second_run_with_the_same_id_is_refused_and_force_replaces_it_whole(fake_sweep, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_cli, "run_bench", fake_sweep.run)
    fake_sweep.modes.update({"torch": "good", "ort": "good"})
    args = ["bench", "-d", "18", "-b", "1,2", "--min-time", "0", "--min-iters", "2", "--warmup", "1", "--out",
            str(tmp_path), "--run-id", "r1", "--json"]
    assert cli.invoke(app, [*args, "-e", "torch,ort"]).exit_code == 0
    first = (tmp_path / "r1" / "results.json").read_text()
    assert len(json.loads(first)["rows"]) == 4
    res = cli.invoke(app, [*args, "-e", "torch"])
    assert res.exit_code == 2 and res.stdout == "", res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "already holds the results of run r1" in lines[0] and "--force" in lines[0]
    assert (tmp_path / "r1" / "results.json").read_text() == first  # 4 rows, untouched
    res = cli.invoke(app, [*args, "-e", "torch", "--force"])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "r1" / "results.json").read_text())["rows"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1"]  # no temporary, no .partial


def test_an_interrupted_forced_rerun_leaves_the_complete_results_in_place(fake_sweep, tmp_path):
    fake_sweep.modes.update({"torch": "good"})
    fake_sweep.run(quick_cfg(["torch"]), out=tmp_path, run_id="r1")
    before = {p.name: p.read_bytes() for p in (tmp_path / "r1").iterdir()}
    fake_sweep.modes.update({"torch": "interrupt"})  # Ctrl-C at batch 2
    r = fake_sweep.run(quick_cfg(["torch"]), out=tmp_path, run_id="r1", force=True)
    assert r.interrupted and r.out_dir == tmp_path / "r1.partial"
    assert {p.name: p.read_bytes() for p in (tmp_path / "r1").iterdir()} == before  # the complete run, byte for byte
    partial = json.loads((tmp_path / "r1.partial" / "results.json").read_text())
    assert partial["interrupted"] is True and len(partial["rows"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1", "r1.partial"]


def test_bench_merge_never_writes_over_a_run_it_merges_or_earlier_results(fake_sweep, tmp_path):
    from resnet_deploy.bench import merge_results
    fake_sweep.modes.update({"torch": "good"})
    fake_sweep.run(quick_cfg(["torch"], batches=(1,)), out=tmp_path, run_id="a")
    fake_sweep.run(quick_cfg(["torch"], batches=(2,)), out=tmp_path, run_id="b")
    a = (tmp_path / "a" / "results.json").read_text()
    for out in (tmp_path / "a", tmp_path / "a" / "."):
        with pytest.raises(UserError, match="one of the runs being merged"):
            merge_results([tmp_path / "a" / "results.json", tmp_path / "b"], out, force=True)
    assert (tmp_path / "a" / "results.json").read_text() == a
    merge_results([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    res = cli.invoke(app, ["bench-merge", str(tmp_path / "a"), "-o", str(tmp_path / "m")])
    assert res.exit_code == 2 and "already holds results" in res.stderr and "--force" in res.stderr, res.output
    assert len(json.loads((tmp_path / "m" / "results.json").read_text())["rows"]) == 2
    res = cli.invoke(app, ["bench-merge", str(tmp_path / "a"), "-o", str(tmp_path / "m"), "--force"])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "m" / "results.json").read_text())["rows"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "m"]
