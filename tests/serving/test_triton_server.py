"""A real Triton Inference Server on 127.0.0.1 serving repositories `package --target triton` wrote.

The server is nvidia-pytriton's bundled tritonserver 2.51 (python backend only), from the environment
`.ci/run` makes (``$RESNET_DEPLOY_TRITONSERVER``, default ``<repo>/.venv-triton``); without it every
test here skips, saying why. **Which backend serves:** NVIDIA's ONNX Runtime backend library is not
on PyPI, so the ``onnxruntime_onnx`` models run through ``tests/serving/standin/onnxruntime/model.py``,
a TEST FIXTURE: a python-backend stand-in that runs each batch Triton forms in an onnxruntime
session. The repositories are loaded unchanged (strict model config); the image ensemble's
preprocess and top-k models are the toolkit's own python-backend models.

One server (module scope) holds: the trained CIFAR ResNet-20 at FP32 and INT8 (dynamic batch), the
same FP32 exported with a fixed batch of 4, and a seeded ResNet-18 exported at 64x64 (dynamic). The
finalizer stops it whatever happens; every request goes to 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_deploy import api, pipeline
from resnet_deploy.compare import THRESHOLDS, compare
from resnet_deploy.deploy import Ports, TritonServer, find_server
from resnet_deploy.errors import BackendUnavailable, UserError
from resnet_deploy.model import ModelRef, build_network
from resnet_deploy.preprocess import Preprocess, recipe_from_metadata, sample_photos
from resnet_deploy.runners import make_runner, open_runner

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "tests" / "data" / "cifar10-resnet" / "resnet20-12fca82f.th"
STANDIN = Path(__file__).resolve().parent / "standin" / "onnxruntime"
STANDIN_OV = Path(__file__).resolve().parent / "standin" / "openvino"
OV_MODEL = "resnet20_int8_openvino"  # the INT8 ONNX through `package --triton-backend openvino`
SERVER_ENV = Path(os.environ.get("RESNET_DEPLOY_TRITONSERVER", REPO / ".venv-triton"))
MODELS = {  # served name -> (precision, fixed batch)
    "resnet20_fp32": ("fp32", None),
    "resnet20_int8": ("int8", None),
    "resnet20_fp32_b4": ("fp32", 4),
    "resnet18_fp32_64px": ("fp32", None),
}

pytestmark = pytest.mark.xdist_group("triton-server")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def install():
    try:
        found = find_server(SERVER_ENV)
    except UserError as e:
        pytest.skip(f"no Triton server to test with ({e}); `.ci/run` installs nvidia-pytriton into {SERVER_ENV}")
    python = found.python_bin / "python" if found.python_bin else None
    if python is not None:
        probe = subprocess.run([str(python), "-c", "import onnxruntime, PIL"], capture_output=True, text=True, timeout=60)
        if probe.returncode:
            pytest.skip(f"the server's Python ({python}) lacks onnxruntime or Pillow for the stand-in backend / preprocessing")
    return found


def server_has_openvino(found) -> str | None:
    """Why the server's Python cannot run the OpenVINO stand-in, or None."""
    if found.python_bin is None:
        return "the server has no Python environment of its own"
    probe = subprocess.run([str(found.python_bin / "python"), "-c", "import openvino"], capture_output=True, text=True, timeout=60)
    return None if probe.returncode == 0 else f"the server's Python lacks openvino (`.ci/run` installs it): {probe.stderr[-200:]}"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """{served name: ONNX path} made by the toolkit, and the photographs as files."""
    root = tmp_path_factory.mktemp("serving")
    fp32 = api.export(20, weights=WEIGHTS, out_dir=root / "dyn")["path"]
    int8 = api.quantize(20, "int8", weights=WEIGHTS, out_dir=root / "dyn", calib_samples=32)["path"]
    b4 = api.export(20, weights=WEIGHTS, out_dir=root / "b4", batch=4)["path"]
    seeded = api.export(20, out_dir=root / "seeded")["path"]  # the seeded ResNet-20 bench compares with (32x32: cheap)
    # ResNet-18 from a plainly initialised state_dict (the seeded default conditions BatchNorm on photographs at
    # 224x224, 20 s here), exported at 64x64 with the recipe recorded
    torch.manual_seed(0)
    torch.save(build_network("resnet18").state_dict(), root / "r18.pth")
    small = dataclasses.replace(ModelRef.of(18, weights=root / "r18.pth"), recipe=Preprocess(image_size=64, resize=73))
    r18 = pipeline.export_model(small, out_dir=root / "r18")["path"]
    photos = []
    import skimage.data
    from PIL import Image

    for i, name in enumerate(("chelsea", "astronaut", "coffee", "camera")):  # camera is grayscale
        p = root / f"{name}.{'jpg' if i % 2 == 0 else 'png'}"
        Image.fromarray(getattr(skimage.data, name)()).save(p)
        photos.append(p)
    return {"resnet20_fp32": fp32, "resnet20_int8": int8, "resnet20_fp32_b4": b4, "resnet18_fp32_64px": r18, "seeded": seeded,
            "root": root, "photos": photos}


@pytest.fixture(scope="module")
def server(install, artifacts):
    repo = artifacts["root"] / "repository"
    for name in MODELS:
        api.package(20 if name.startswith("resnet20") else 18, target="triton", out=repo, onnx=artifacts[name], name=name,
                    max_batch=8 if MODELS[name][1] is None else None, instance_kind="cpu" if name.endswith("int8") else "auto")
    api.package(20, target="triton", out=repo, onnx=artifacts["seeded"], name="resnet20_seeded", ensemble=False, max_batch=8)
    backends = {"onnxruntime": STANDIN}
    if server_has_openvino(install) is None:
        api.package(20, target="triton", out=repo, onnx=artifacts["resnet20_int8"], name=OV_MODEL, max_batch=8,
                    triton_backend="openvino")
        backends["openvino"] = STANDIN_OV
    http, grpc = free_ports(2)
    srv = TritonServer(repo, install=install, ports=Ports(http=http, grpc=grpc), extra_backends=backends,
                       ready_timeout_s=120)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        assert srv.process is None


def _photos_batch(recipe: Preprocess, n: int) -> np.ndarray:
    return sample_photos(recipe).batch[:n]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", list(MODELS))
def test_served_logits_equal_the_in_process_runner(server, artifacts, name, protocol):
    precision, fixed = MODELS[name]
    url = server.endpoints[protocol]
    with open_runner("triton", url, model=name) as served, open_runner("ort", artifacts[name]) as local:
        facts = served.facts()
        assert facts["precision"] == precision and facts["arch"] == ("resnet20" if name.startswith("resnet20") else "resnet18")
        recipe = recipe_from_metadata(facts)
        batch = _photos_batch(recipe, fixed or 6)
        assert served.input_spec.limit == ("fixed" if fixed else "dynamic")
        got, want = served.infer(batch), local.infer(batch)
    result = compare(want, got, precision)
    assert result.passed, result.failures
    assert result.rel_l2 <= THRESHOLDS[precision].rel_l2
    assert (got.argmax(1) == want.argmax(1)).all()  # the label of every image, not only most of them
    assert served.describe()["server"]["version"] and served.describe()["platform"] == "onnxruntime_onnx"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_int8_onnx_served_by_the_openvino_backend_equals_openvino_in_process(server, artifacts, install, protocol):
    """`package --triton-backend openvino`: Triton's OpenVINO backend config (backend "openvino", model.onnx, CPU
    instances, OpenVINO's settings as parameters) loads under strict config and serves the toolkit's INT8 Q/DQ ONNX
    with the numerics of the in-process openvino runner (TEST FIXTURE stand-in around OpenVINO: see its docstring)."""
    why = server_has_openvino(install)
    if why is not None:
        pytest.skip(why)
    import openvino as ov

    # the backend leaves OpenVINO's default precision for the rest of the graph (bf16 on a CPU with AVX512-BF16 or AMX)
    rest = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    with open_runner("triton", server.endpoints[protocol], model=OV_MODEL) as served, \
            open_runner("openvino", artifacts["resnet20_int8"], inference_precision=rest) as local:
        assert served.describe()["platform"] == "openvino" and served.describe()["instance_kinds"] == ["KIND_CPU"]
        assert served.facts()["precision"] == "int8"
        batch = _photos_batch(Preprocess(image_size=32, resize=32), 6)
        got, want = served.infer(batch), local.infer(batch)
    assert compare(want, got, "int8").passed and (got.argmax(1) == want.argmax(1)).all()
    assert np.abs(got - want).max() < 1e-3, np.abs(got - want).max()  # the same OpenVINO CPU kernels on the same artifact


def test_classification_extension_ranks_each_image(server, artifacts):
    """Triton's class_count on the dynamic-batch classifier: per image, with the CIFAR names of labels.txt."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.endpoints["http"].removeprefix("http://"))
    batch = _photos_batch(Preprocess(image_size=32, resize=32), 3)
    x = httpclient.InferInput("input", list(batch.shape), "FP32")
    x.set_data_from_numpy(batch)
    result = client.infer("resnet20_fp32", [x], outputs=[httpclient.InferRequestedOutput("logits", class_count=2)])
    ranked = result.as_numpy("logits")
    with open_runner("ort", artifacts["resnet20_fp32"]) as local:
        want = np.argsort(-local.infer(batch), axis=1, kind="stable")[:, :2]
    assert ranked.shape == (3, 2)
    got = [[int(entry.decode().split(":")[1]) for entry in row] for row in ranked]
    assert got == want.tolist()
    names = (artifacts["root"] / "repository" / "resnet20_fp32" / "labels.txt").read_text().splitlines()
    assert [row[0].decode().split(":")[2] for row in ranked] == [names[i] for i in want[:, 0]]


def _ensemble(url: str, model: str, files: list[Path], protocol: str = "grpc"):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    mod = grpcclient if protocol == "grpc" else httpclient
    client = mod.InferenceServerClient(url.split("://", 1)[1])
    data = np.array([[f.read_bytes()] for f in files], dtype=np.object_)
    x = mod.InferInput("image", list(data.shape), "BYTES")
    x.set_data_from_numpy(data)
    r = client.infer(model, [x])
    return r.as_numpy("labels"), r.as_numpy("indices"), r.as_numpy("probabilities"), r.as_numpy("logits")


@pytest.mark.parametrize("name", ["resnet20_int8", "resnet18_fp32_64px"])
def test_image_ensemble_gives_what_predict_gives(server, artifacts, name):
    """One request with encoded JPEG/PNG photos -> the same top-5 (labels, order, probabilities) as `predict`."""
    files = artifacts["photos"]
    labels, indices, probs, logits = _ensemble(server.endpoints["grpc"], f"{name}_images", files)
    depth = 20 if name.startswith("resnet20") else 18
    weights = WEIGHTS if depth == 20 else artifacts["root"] / "r18.pth"
    want = api.predict(files, depth, weights=weights, backend="ort", artifact=artifacts[name])
    for row_labels, row_idx, row_p, pred in zip(labels, indices, probs, want["predictions"]):
        assert [x.decode() for x in row_labels] == [t["label"] for t in pred["top"]]
        assert row_idx.tolist() == [t["index"] for t in pred["top"]]
        assert np.allclose(row_p, [t["probability"] for t in pred["top"]], atol=1e-4)
    assert logits.shape == (len(files), 10 if depth == 20 else 1000)


def test_fixed_batch_ensemble_ranks_each_image(server, artifacts):
    """The batch-4 export: its ensemble takes exactly 4 images and returns top-5 per image (not over 4 x 10 values)."""
    files = artifacts["photos"]
    labels, indices, _, logits = _ensemble(server.endpoints["http"], "resnet20_fp32_b4_images", files, protocol="http")
    assert indices.shape == (4, 5) and logits.shape == (4, 10)
    want = api.predict(files, 20, weights=WEIGHTS, backend="ort", artifact=artifacts["resnet20_fp32_b4"])
    assert indices.tolist() == [[t["index"] for t in p["top"]] for p in want["predictions"]]


def test_undecodable_image_is_one_line_from_the_server(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.endpoints["grpc"].removeprefix("grpc://"))
    x = grpcclient.InferInput("image", [1, 1], "BYTES")
    x.set_data_from_numpy(np.array([[b"not an image at all"]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="cannot decode image 0 of the request") as e:
        client.infer("resnet20_fp32_images", [x], client_timeout=30)
    assert "\n" not in e.value.message()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_parity_through_the_server_passes(server, protocol):
    r = api.parity(20, weights=WEIGHTS, backend="triton", artifact=server.endpoints[protocol], model="resnet20_int8")
    assert r["passed"], r["failures"]
    assert r["n"] == 68 and r["candidate"]["backend"] == "triton" and r["precision"] == "int8"


def test_parity_cli_through_the_server(server):
    from typer.testing import CliRunner

    from resnet_deploy.cli import app

    res = CliRunner().invoke(app, ["parity", "--depth", "20", "--weights", str(WEIGHTS), "--engine", "triton",
                                   "--url", server.endpoints["http"], "--model", "resnet20_fp32", "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["parity", "--depth", "20", "--weights", str(WEIGHTS), "--engine", "triton",
                                   "--url", server.endpoints["http"], "--model", "nope"])
    assert res.exit_code == 2 and "no model named 'nope'" in res.output and "resnet20_fp32" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_runner_faults_are_one_line_and_bounded(server, artifacts):
    # several classifiers and no --model: the runner names them instead of guessing
    classifiers = len(MODELS) + 1 + (server_has_openvino(server.install) is None)  # + resnet20_seeded (+ the OpenVINO one)
    with pytest.raises(UserError, match=f"serves {classifiers} ready classifiers.*pass --model"):
        open_runner("triton", server.endpoints["grpc"])
    # the ensemble is not a tensor model
    with pytest.raises(UserError, match="takes encoded images"):
        open_runner("triton", server.endpoints["http"], model="resnet20_fp32_images")
    # a timeout far below one inference: one line, well before the default timeout
    with open_runner("triton", server.endpoints["grpc"], model="resnet18_fp32_64px", timeout_s=30) as r:
        r.timeout_s = 1e-4
        t0 = time.perf_counter()
        with pytest.raises(UserError, match="did not answer inference .* within"):
            r.infer(_photos_batch(Preprocess(image_size=64, resize=73), 8))
        assert time.perf_counter() - t0 < 5
    # nothing listens: BackendUnavailable (exit 3) at once
    (closed,) = free_ports(1)
    for scheme in ("http", "grpc"):
        t0 = time.perf_counter()
        with pytest.raises(BackendUnavailable, match="no Triton server answers"):
            open_runner("triton", f"{scheme}://127.0.0.1:{closed}", model="resnet20_fp32", timeout_s=5)
        assert time.perf_counter() - t0 < 6
    with pytest.raises(UserError, match="scheme must be http:// or grpc://"):
        open_runner("triton", "https://127.0.0.1:1")


def test_a_model_that_is_not_ready_is_named(server, monkeypatch):
    from resnet_deploy.runners.triton import TritonRunner

    r = TritonRunner(server.endpoints["http"], model="resnet20_fp32")
    index = [{"name": "resnet20_fp32", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]
    with pytest.raises(UserError, match="'resnet20_fp32' on Triton at .* is not ready \\(UNAVAILABLE: unloaded\\)"):
        r._choose_model(index)


def test_a_model_that_fails_to_load_stops_the_start_with_its_name(install, artifacts, tmp_path):
    repo = tmp_path / "repo"
    api.package(20, target="triton", out=repo, onnx=artifacts["resnet20_fp32"], name="broken", ensemble=False)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    http, grpc = free_ports(2)
    srv = TritonServer(repo, install=install, ports=Ports(http=http, grpc=grpc), extra_backends={"onnxruntime": STANDIN},
                       ready_timeout_s=60)
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="Triton could not load broken: "):
        srv.start()
    assert srv.process is None and time.perf_counter() - t0 < 60


def test_serve_command_stops_cleanly_on_sigterm(install, artifacts, tmp_path):
    """`resnet-deploy serve` in its own process: endpoints on stdout once ready, SIGTERM -> server stopped, exit 143."""
    repo = tmp_path / "repo"
    api.package(20, target="triton", out=repo, onnx=artifacts["resnet20_fp32"], ensemble=False)
    http, grpc = free_ports(2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "resnet_deploy", "serve", str(repo), "--server", str(SERVER_ENV),
           "--http-port", str(http), "--grpc-port", str(grpc), "--backend", f"onnxruntime={STANDIN}", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        import json

        info = json.loads(line)
        assert info["endpoints"]["http"] == f"http://127.0.0.1:{http}"
        assert {m["state"] for m in info["models"]} == {"READY"}
        child = info["pid"]
        with open_runner("triton", info["endpoints"]["grpc"], model="resnet20_fp32") as r:
            assert r.infer(_photos_batch(Preprocess(image_size=32, resize=32), 2)).shape == (2, 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        assert "terminated" in proc.stderr.read()
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bench_times_the_served_model_with_parity_beside(server, tmp_path):
    """`bench --engine triton --url .../v2/models/NAME`: the row is timed through the server, parity vs the seeded
    PyTorch FP32 reference beside it; a served model of another network or precision is refused for the row."""
    from resnet_deploy.artifacts import Precision
    from resnet_deploy.bench import BenchConfig, PipelineArtifacts, run_bench

    url = f"{server.endpoints['grpc']}/v2/models/resnet20_seeded"
    cfg = BenchConfig(engines=["triton"], depths=["resnet20"], precisions=["fp32"], batches=[4], min_time=0.1,
                      min_iters=5, bare=False, artifacts=str(tmp_path / "a"), served_url=url)
    (row,) = run_bench(cfg, out=tmp_path / "runs", write=False).rows
    assert row.status == "ok", (row.status, row.reason)
    assert row.backend == "triton" and row.parity_passed and row.latency_p50_ms > 0
    provider = PipelineArtifacts(out_dir=str(tmp_path / "a"), seed=0, max_batch=4, served_url=url)
    with pytest.raises(UserError, match="serves resnet20 fp32, not resnet20 int8"):
        provider.artifact("resnet20", Precision.INT8, "triton", None)
    with pytest.raises(BackendUnavailable, match="give --url"):
        PipelineArtifacts(out_dir=str(tmp_path / "a"), seed=0, max_batch=4).artifact("resnet20", Precision.FP32, "triton", None)


def test_a_loadgen_server_run_through_the_server_is_valid(server, tmp_path):
    """MLPerf LoadGen's server scenario driving the served model (`bench --engine triton --scenario server`): parity
    first on the same path, then LoadGen's own verdict; a modest rate and a bound a busy CI machine cannot break."""
    pytest.importorskip("mlperf_loadgen", reason="needs MLPerf LoadGen: pip install mlcommons-loadgen")
    from resnet_deploy.bench import BenchConfig, LoadgenSettings, run_bench

    url = f"{server.endpoints['grpc']}/v2/models/resnet20_seeded"
    settings = LoadgenSettings("server", target_qps=100, latency_bound_ms=1000, min_duration_s=1.0, min_query_count=500)
    cfg = BenchConfig(engines=["triton"], depths=["resnet20"], precisions=["fp32"], batches=[1], warmup=1, bare=False,
                      artifacts=str(tmp_path / "a"), served_url=url, loadgen=settings)
    (row,) = run_bench(cfg, out=tmp_path / "runs", run_id="lg").rows
    assert row.status == "ok" and row.backend == "triton" and row.parity_passed, (row.status, row.reason)
    assert row.measured_by.startswith("MLPerf LoadGen") and row.loadgen_scenario == "server"
    assert row.loadgen_validity == "VALID", row.loadgen_why
    assert row.loadgen_queries >= 500 and row.loadgen_p99_ms <= 1000


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_perf_analyzer_sweeps_the_served_model_beside_the_rows_own_figures(server, tmp_path, protocol):
    """`bench --engine triton --perf-analyzer`: after the row's parity check and timing loop, NVIDIA perf_analyzer
    (tritonclient 2.51's, which `.ci/run` installs into the server's environment) sweeps the same served model; its
    figures go into the row and report.md's own section."""
    from resnet_deploy.bench import BenchConfig, PerfAnalyzerSettings, find_perf_analyzer, run_bench

    try:
        find_perf_analyzer(SERVER_ENV)
    except BackendUnavailable as e:
        pytest.skip(f"no perf_analyzer to test with: {e.reason}")
    url = f"{server.endpoints[protocol]}/v2/models/resnet20_seeded"
    # windows up to 100 % apart still count as stable: the server, perf_analyzer and the other tests share 2 cores here,
    # and at 50 % perf_analyzer found no stable window at concurrency 1 in one fresh-clone CI run (the row said so)
    pa = PerfAnalyzerSettings(concurrency=(1, 2), window_ms=500, stability_pct=100, path=str(SERVER_ENV))
    cfg = BenchConfig(engines=["triton"], depths=["resnet20"], precisions=["fp32"], batches=[2], min_time=0.1, min_iters=5,
                      bare=False, artifacts=str(tmp_path / "a"), served_url=url, perf_analyzer=pa)
    result = run_bench(cfg, out=tmp_path / "runs", run_id="pa")
    (row,) = result.rows
    assert row.status == "ok" and row.parity_passed and row.latency_p50_ms > 0, (row.status, row.reason)
    assert row.perf_analyzer_version == "perf_analyzer 2.51.0" and row.perf_analyzer_concurrency in (1, 2)
    steps = row.perf_analyzer_sweep.split("; ")
    assert [s.split(":")[0] for s in steps] == ["c1", "c2"]
    assert row.perf_analyzer_ips > 0 and 0 < row.perf_analyzer_p50_ms <= row.perf_analyzer_p99_ms
    assert row.perf_analyzer_compute_ms > 0 and row.perf_analyzer_queue_ms >= 0
    report = Path(result.files["report"]).read_text()
    assert "## perf_analyzer (through the server)" in report and f"resnet20 fp32 triton b2: {row.perf_analyzer_sweep}" in report


def test_a_perf_analyzer_that_fails_leaves_the_rows_own_figures_and_says_why(server, tmp_path):
    from resnet_deploy.bench import BenchConfig, PerfAnalyzerSettings, run_bench

    fake = tmp_path / "perf_analyzer"
    fake.write_text("#!/bin/sh\ncase \"$1\" in --version) echo 'Perf Analyzer Version 2.51.0';; *) "
                    "echo 'Failed to obtain stable measurement within 10 measurement windows' >&2; exit 2;; esac\n")
    fake.chmod(0o755)
    cfg = BenchConfig(engines=["triton"], depths=["resnet20"], precisions=["fp32"], batches=[1], min_time=0.1, min_iters=5,
                      bare=False, artifacts=str(tmp_path / "a"), served_url=f"{server.endpoints['grpc']}/v2/models/resnet20_seeded",
                      perf_analyzer=PerfAnalyzerSettings(path=str(fake)))
    result = run_bench(cfg, out=tmp_path / "runs", run_id="pa-fails")
    (row,) = result.rows
    assert row.status == "ok" and row.latency_p50_ms > 0 and row.perf_analyzer_ips is None
    assert "perf_analyzer: perf_analyzer against 'resnet20_seeded'" in row.notes and "exit 2" in row.notes
    assert "stable measurement" in row.perf_analyzer_sweep
    assert row.perf_analyzer_sweep.startswith("not measured") and row.perf_analyzer_sweep in Path(result.files["report"]).read_text()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_runner_contract_through_the_server(server, protocol):
    """tests/runners' contract (describe before open, refusals, float32 logits, close twice) on the live server."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("runner_contract", REPO / "tests" / "runners" / "test_runner_contract.py")
    contract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(contract)
    contract.check_contract(make_runner("triton", server.endpoints[protocol], model="resnet20_fp32", precision="fp32"), "triton", 32)


def test_eval_through_the_server_equals_in_process(server, artifacts, tmp_path):
    """`eval --engine triton`: the same per-class accuracy as ONNX Runtime in-process on the same folder."""
    import shutil

    data = tmp_path / "data"
    for cls, photo in (("cat", 0), ("airplane", 1), ("truck", 2), ("ship", 3)):
        (data / cls).mkdir(parents=True)
        shutil.copy(artifacts["photos"][photo], data / cls / artifacts["photos"][photo].name)
    served = api.evaluate(20, precisions=["fp32"], data=data, backend="triton", artifacts={"fp32": server.endpoints["http"]},
                          model="resnet20_fp32")
    local = api.evaluate(20, precisions=["fp32"], data=data, backend="ort", artifacts={"fp32": artifacts["resnet20_fp32"]})
    (s,), (loc,) = served["results"], local["results"]
    assert served["images"] == 4 and (s["correct1"], s["correct5"]) == (loc["correct1"], loc["correct5"])
    assert s["runner"]["backend"] == "triton" and s["runner"]["model"] == "resnet20_fp32"
