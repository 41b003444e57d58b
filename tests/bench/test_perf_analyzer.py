"""perf_analyzer's side of `bench --perf-analyzer`: finding a binary that starts, reading its CSV, refusing bad
settings in one line. The sweep against a live server is in tests/serving/test_triton_server.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cli_checks import invoke, one_line

from resnet_deploy.bench.perf_analyzer import PerfAnalyzerSettings, best, find_perf_analyzer, parse_csv
from resnet_deploy.errors import BackendUnavailable, UserError

# perf_analyzer 2.51.0's -f file from a run against the CIFAR ResNet-20 served here (batch 4, concurrency 1:2)
CSV_251 = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,\
request/response,response wait
1,981.083,9,339,56,21,3522,118,2,4004,4521,4670,5024,11,4036
2,1102.49,8,1115,2254,59,3637,171,1,7147,7867,8618,10906,9,7221
"""


def test_its_csv_is_read_in_milliseconds_per_concurrency():
    c1, c2 = parse_csv(CSV_251)
    assert (c1.concurrency, c1.throughput_ips, c1.p50_ms, c1.p99_ms) == (1, 981.083, 4.004, 5.024)
    assert (c2.server_queue_ms, c2.server_compute_ms, c2.p95_ms) == (2.254, 3.637, 8.618)
    assert best([c1, c2]) is c2 and "c2: 1102.5 img/s, p50 7.15 ms, p99 10.91 ms" in c2.text()


@pytest.mark.parametrize("text, words", [
    ("Concurrency,Inferences/Second\n1,3\n", "lacks the columns"),
    (CSV_251.splitlines()[0] + "\n", "no measurement"),
    (CSV_251.replace("981.083", "n/a"), "not numbers"),
    ("", "lacks the columns"),
])
def test_a_csv_it_cannot_read_is_one_error(text, words):
    with pytest.raises(UserError, match=words):
        parse_csv(text)


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_a_binary_that_cannot_start_says_which_library_it_lacks(tmp_path):
    bad = _script(tmp_path / "perf_analyzer", "echo 'perf_analyzer: error while loading shared libraries: libb64.so.0d: "
                  "cannot open shared object file: No such file or directory' >&2\nexit 127\n")
    with pytest.raises(BackendUnavailable) as e:
        find_perf_analyzer(bad)
    assert "lacks libb64.so.0d" in e.value.reason and "apt-get install libb64-0d" in e.value.reason
    with pytest.raises(BackendUnavailable, match="no executable"):
        find_perf_analyzer(tmp_path / "missing")


def test_a_path_given_is_the_one_used_and_an_environment_folder_is_searched_in_bin(tmp_path, monkeypatch):
    env = tmp_path / "venv"
    (env / "bin").mkdir(parents=True)
    _script(env / "bin" / "perf_analyzer", "echo 'Perf Analyzer Version 2.51.0 (commit unknown)'\n")
    assert find_perf_analyzer(env).version == "2.51.0"
    monkeypatch.setenv("RESNET_DEPLOY_PERF_ANALYZER", str(tmp_path / "elsewhere"))
    with pytest.raises(BackendUnavailable, match=r"\$RESNET_DEPLOY_PERF_ANALYZER: no executable"):
        find_perf_analyzer()  # the variable names one that is not there: no silent fallback to another


@pytest.mark.parametrize("text, want", [("1:4", (1, 4)), ("2", (2, 2)), (" 1 : 8 ", (1, 8))])
def test_concurrency_ranges(text, want):
    assert PerfAnalyzerSettings.parse_range(text) == want


@pytest.mark.parametrize("args, code, words", [
    (["--pa-concurrency", "4:1"], 2, ["--pa-concurrency must be START:END"]),
    (["--pa-concurrency", "a-b"], 2, ["--pa-concurrency takes START:END"]),
    (["--pa-window-ms", "5"], 2, ["--pa-window-ms must be within"]),
    (["--perf-analyzer-path", "/nonexistent/perf_analyzer"], 3, ["no perf_analyzer runs here", "libb64-0d"]),
])
def test_bench_refuses_bad_perf_analyzer_settings_in_one_line(args, code, words, tmp_path):
    r = invoke("bench", "-e", "triton", "--url", "grpc://127.0.0.1:1/v2/models/m", "-d", "20", "--perf-analyzer", *args,
               "--out", tmp_path, "--plan")
    one_line(r, code, *words)
    assert os.listdir(tmp_path) == []
