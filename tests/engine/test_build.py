"""Engine builder tests.

Engines are really built with TensorRT-RTX, whose builder runs on the CPU (``pip install
tensorrt-rtx``); those tests skip when it is missing. The models are the project's own
(conftest's ``real_onnx`` / ``real_engine``); a tiny hand-made net remains only where a test
must edit the graph or needs an ONNX without metadata (``fakes.make_tiny_onnx``).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from fakes import fake_builder_config, make_tiny_onnx, rtx_opts

import resnet_deploy as rd
import resnet_deploy.engine.build as engine_build
from resnet_deploy import engine as eng
from resnet_deploy._native.cuda import cuda_device_info
from resnet_deploy._native.trt import RTX_DEFAULT_TARGETS
from resnet_deploy.artifacts import manifest_path, read_manifest, sha256_file, write_manifest
from resnet_deploy.engine.config import _apply_dla
from resnet_deploy.errors import BackendUnavailable, UserError
from resnet_deploy.onnx_meta import artifact_facts, load_onnx, read_metadata

# The tests that read the session's real ResNet-18/50 precision ONNX and TensorRT-RTX engines (conftest's real_onnx,
# real_engine) run on one xdist worker, with every other test of the session's ResNet-50 export (xdist group
# "resnet50"), so each artifact is made once (ResNet-50 INT8 is a minute), not once per worker.
REAL_ENGINES = pytest.mark.xdist_group("resnet50")


def test_manifest_fields(built, rtx, model_onnx):
    path, m, _ = built
    assert path.is_file() and manifest_path(path).is_file()
    assert read_manifest(path) == json.loads(json.dumps(m, default=str))
    assert m["flavour"] == "trt-rtx" and m["builder"] == "tensorrt_rtx"
    assert m["builder_version"] == rtx.__version__
    assert m["precision"] == "fp32" and m["strongly_typed"] is True
    assert (m["min_batch"], m["opt_batch"], m["max_batch"]) == eng.DEFAULT_PROFILE
    assert m["onnx_sha256"] == sha256_file(model_onnx)
    assert m["engine_sha256"] == sha256_file(path) and m["engine_bytes"] == path.stat().st_size
    assert m["input"] == {"name": "input", "shape": [-1, 3, 224, 224], "dtype": "float32"}
    assert m["outputs"] == [{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}]
    assert m["opt_level"] == 3 and m["workspace_mib"] is None and m["build_seconds"] > 0
    import resnet_deploy

    assert m["toolkit_version"] == getattr(resnet_deploy, "__version__", "unknown")
    assert m["target"] == {"compute_capabilities": list(RTX_DEFAULT_TARGETS), "explicit": False}
    lp = m["layer_precision"]
    assert lp["source"] in ("network", "engine_inspector") and lp["output_dtypes"]
    if m["build_gpu"] is None:  # no GPU: the inspector cannot run, and the manifest says so
        assert lp["source"] == "network" and lp["implied_precision"] == "fp32"
        assert "needs a CUDA GPU" in m["engine_inspector"]


def test_progress_callback_sees_phases(built):
    _, _, events = built
    assert events, "IProgressMonitor never called back"
    assert all(isinstance(p, str) and 0 <= s <= max(t, s) for p, s, t in events)


def test_compute_capability_targets(rtx, model_onnx, tmp_path):
    m = eng.build_engine(model_onnx, tmp_path / "a.engine", rtx_opts(compute_capabilities=["8.6", "sm89"], max_batch=4),
                         precision="fp32")
    assert m["target"] == {"compute_capabilities": ["8.6", "8.9"], "explicit": True}
    with pytest.raises(UserError, match=r"cannot target compute capability 9\.0"):
        eng.build_engine(model_onnx, tmp_path / "b.engine", rtx_opts(compute_capabilities=["9.0"]), precision="fp32")
    assert not (tmp_path / "b.engine").exists()
    with pytest.raises(UserError, match="compute capability"):
        eng.BuildOptions(flavour="trt-rtx", compute_capabilities=["eighty"]).validate()


def test_current_target_without_gpu_is_clear(rtx, model_onnx, tmp_path):
    if cuda_device_info()[0] is not None:
        pytest.skip("a CUDA GPU is present; 'current' is valid here")
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        eng.build_engine(model_onnx, tmp_path / "c.engine", rtx_opts(compute_capabilities=["current"]), precision="fp32")


@pytest.mark.parametrize("garbage", [b"garbage" * 100, b"this is not a protobuf" * 50, bytes(range(256)) * 4])
def test_garbage_onnx_is_one_line_user_error(rtx, tmp_path, garbage):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(garbage)
    with pytest.raises(UserError) as ei:
        eng.build_engine(bad, tmp_path / "bad.engine", rtx_opts(), precision="fp32")
    msg = str(ei.value)
    assert msg.startswith(f"cannot parse ONNX {bad}") and "\n" not in msg
    assert not (tmp_path / "bad.engine").exists() and not manifest_path(tmp_path / "bad.engine").exists()


def test_missing_onnx(tmp_path):
    with pytest.raises(UserError, match="ONNX file not found"):
        eng.build_engine(tmp_path / "nope.onnx", tmp_path / "x.engine", rtx_opts(), precision="fp32")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(min_batch=16, max_batch=4), r"min <= opt <= max"),
        (dict(min_batch=1, opt_batch=64, max_batch=32), r"min <= opt <= max"),
        (dict(min_batch=0), r"--min-batch must be an integer >= 1"),
        (dict(max_batch=-3), r"--max-batch must be an integer >= 1"),
    ],
)
def test_impossible_profiles(rtx, model_onnx, tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        eng.build_engine(model_onnx, tmp_path / "p.engine", rtx_opts(**kw), precision="fp32")


def test_fixed_batch_onnx(rtx, fixed_onnx, tmp_path):
    with pytest.raises(UserError, match=r"fixed batch of 4.*got max=2"):
        eng.build_engine(fixed_onnx, tmp_path / "f.engine", rtx_opts(max_batch=2), precision="fp32")
    with pytest.raises(UserError, match=r"fixed batch of 4"):
        eng.build_engine(fixed_onnx, tmp_path / "f.engine", rtx_opts(min_batch=1, opt_batch=8, max_batch=32), precision="fp32")
    m = eng.build_engine(fixed_onnx, tmp_path / "f.engine", rtx_opts(), precision="fp32")
    assert (m["min_batch"], m["opt_batch"], m["max_batch"], m["onnx_fixed_batch"]) == (4, 4, 4, 4)


def test_resolve_profile_defaults():
    assert eng.resolve_profile([None, None, None], None) == (1, 8, 32)
    assert eng.resolve_profile([None, None, 4], None) == (1, 4, 4)
    assert eng.resolve_profile([2, None, 64], None) == (2, 8, 64)
    assert eng.resolve_profile([None, None, None], 3) == (3, 3, 3)


def test_precision_comes_from_the_onnx(rtx, models_dir, tmp_path):
    """Hand-made ONNX without resnet_deploy metadata: the parsed graph's types decide."""
    tiny = make_tiny_onnx(models_dir / "tiny.fp32.onnx")
    with pytest.raises(UserError, match=r"is fp32 but fp16 was requested"):
        eng.build_engine(tiny, tmp_path / "x.engine", rtx_opts(), precision="fp16")
    fp16 = make_tiny_onnx(models_dir / "tiny.fp16.onnx", precision="fp16")
    m16 = eng.build_engine(fp16, tmp_path / "h.engine", rtx_opts(max_batch=4), precision="fp16")
    assert m16["layer_precision"]["output_dtypes"].get("HALF", 0) > 0 or m16["layer_precision"]["source"] == "engine_inspector"
    assert m16["input"]["dtype"] == "float32"  # keep_io_types style
    int8 = make_tiny_onnx(models_dir / "tiny.int8.onnx", precision="int8")
    m8 = eng.build_engine(int8, tmp_path / "q.engine", rtx_opts(max_batch=4), precision="int8")
    assert m8["precision"] == "int8"
    if m8["layer_precision"]["source"] == "network":
        assert m8["layer_precision"]["qdq_layers"] >= 2


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(flavour="trt-rtx", hardware_compatibility="ampere+"), "not supported by TensorRT-RTX"),
        (dict(flavour="trt-rtx", legacy_precision_flags=True), "no weak typing"),
        (dict(flavour="trt-rtx", version_compatible=True), "not compatible between releases"),
        (dict(flavour="trt", compute_capabilities=["8.6"]), "apply to trt-rtx"),
        (dict(flavour="trt", hardware_compatibility="turing+"), "hardware compatibility must be one of"),
        (dict(flavour="trt-rtx", opt_level=9), "--opt-level must be 0..5"),
        (dict(flavour="tensorflow"), "unknown engine flavour"),
        (dict(flavour="trt-rtx", compute_capabilities=["current", "8.6"]), "only target"),
        (dict(flavour="trt-rtx", dla_core=0), "TensorRT-RTX has no DLA"),
        (dict(flavour="trt", dla_core=-1), "DLA core must be an integer >= 0"),
        (dict(flavour="trt", dla_core=True), "DLA core must be an integer >= 0"),
        (dict(flavour="trt", gpu_fallback=False), "only applies to DLA builds"),
    ],
)
def test_option_validation(kw, match):
    with pytest.raises(UserError, match=match):
        eng.BuildOptions(**kw).validate()


def test_missing_flavour_is_backend_unavailable(model_onnx, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except Exception:  # noqa: BLE001 - tensorrt missing, or its libraries do not load
        pass
    with pytest.raises(BackendUnavailable) as ei:
        eng.build_engine(model_onnx, tmp_path / "t.engine", eng.BuildOptions(flavour="trt"), precision="fp32")
    assert ei.value.backend == "trt" and "tensorrt" in ei.value.reason


def test_engine_path_naming():
    p = eng.engine_path_for("resnet50", "fp16", "trt-rtx", root="engines")
    assert p == Path("engines/resnet50/resnet50.fp16.trt-rtx.engine")


def test_timing_cache_is_a_noop_note_on_rtx(rtx, model_onnx, tmp_path):
    m = eng.build_engine(model_onnx, tmp_path / "t.engine", rtx_opts(max_batch=2, timing_cache=tmp_path / "tc.bin"),
                         precision="fp32")
    assert any("no-ops in TensorRT-RTX" in n for n in m["notes"])
    assert not (tmp_path / "tc.bin").exists()


def test_engine_reuse(rtx, models_dir, tmp_path):
    src = make_tiny_onnx(tmp_path / "m.onnx")
    path = tmp_path / "m.fp32.trt-rtx.engine"
    opts = rtx_opts(max_batch=4)
    m, reason = eng.build_or_reuse_engine(src, path, opts, precision="fp32")
    assert reason == f"no engine at {path}"
    facts = eng.request_facts(src, opts, precision="fp32")
    assert eng.needs_rebuild(path, facts) is None
    m2, reason2 = eng.build_or_reuse_engine(src, path, opts, precision="fp32")
    assert reason2 is None and m2["engine_sha256"] == m["engine_sha256"]

    assert "requested profile changed" in eng.needs_rebuild(path, eng.request_facts(src, rtx_opts(max_batch=8), precision="fp32"))
    assert "target changed" in eng.needs_rebuild(path, eng.request_facts(src, rtx_opts(max_batch=4, compute_capabilities=["8.6"]), precision="fp32"))
    assert "opt level changed" in eng.needs_rebuild(path, eng.request_facts(src, rtx_opts(max_batch=4, opt_level=1), precision="fp32"))
    assert "precision changed" in eng.needs_rebuild(path, {**facts, "precision": "fp16"})

    make_tiny_onnx(src, seed=1)  # same name, new weights
    assert "onnx sha256 changed" in eng.needs_rebuild(path, eng.request_facts(src, opts, precision="fp32"))

    manifest = read_manifest(path)
    write_manifest(path, {**manifest, "builder_version": "0.9.0"})
    assert "builder version changed" in eng.needs_rebuild(path, facts)
    write_manifest(path, manifest)

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in eng.needs_rebuild(path, facts)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert "sha256" in eng.needs_rebuild(path, facts)
    manifest_path(path).unlink()
    assert "no manifest" in eng.needs_rebuild(path, facts)


@pytest.mark.parametrize("cc, expect", [("9.0", "does not target this GPU"), ("8.6", "engine inspector")])
def test_inspector_notes_when_a_gpu_is_reported(rtx, model_onnx, tmp_path, monkeypatch, cc, expect):
    """With a GPU reported, the builder tries the engine inspector and records honestly why it could not."""
    if cuda_device_info()[0] is not None:
        pytest.skip("a real CUDA device is present; this test fakes one")
    monkeypatch.setattr(engine_build, "cuda_device_info", lambda i=0: ({"index": 0, "name": "Fake GPU", "compute_capability": cc,
                                                               "total_memory_mib": 1024}, ""))
    m = eng.build_engine(model_onnx, tmp_path / "g.engine", rtx_opts(max_batch=2), precision="fp32")
    assert m["build_gpu"]["compute_capability"] == cc
    assert m["layer_precision"]["source"] == "network" and expect in m["engine_inspector"]


REAL = [(a, p) for a in ("resnet18", "resnet50") for p in ("fp32", "fp16", "int8")]


@REAL_ENGINES
@pytest.mark.parametrize("arch, precision", REAL)
def test_real_engine_manifest(real_engine, real_onnx, rtx, arch, precision):
    path, m = real_engine(arch, precision)
    src = real_onnx(arch, precision)
    assert path.name == f"{arch}.{precision}.trt-rtx.engine" and path.is_file()
    assert read_manifest(path)["engine_sha256"] == sha256_file(path) == m["engine_sha256"]
    assert m["engine_bytes"] == path.stat().st_size
    assert m["onnx_sha256"] == sha256_file(src) and m["onnx"] == str(src)
    assert m["builder_version"] == rtx.__version__ and m["precision"] == precision
    assert (m["min_batch"], m["opt_batch"], m["max_batch"]) == (1, 4, 4)
    # the engine carries its source's model facts (parity and eval read them from here)
    meta = read_metadata(load_onnx(src))
    fp32_meta = read_metadata(load_onnx(real_onnx(arch, "fp32")))
    sm = m["source_metadata"]
    assert sm == {**meta, "precision": precision}
    assert sm["arch"] == arch and sm["weights_sha256"] == fp32_meta["weights_sha256"] and sm["num_classes"] == "1000"
    facts = artifact_facts(path, "trt-rtx")
    assert facts["arch"] == arch and facts["precision"] == precision
    lp = m["layer_precision"]
    if lp["source"] == "network":
        assert lp["implied_precision"] == precision
    assert m["input"]["dtype"] == "float32" and m["outputs"][0]["shape"] == [-1, 1000]


@REAL_ENGINES
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_int8_engine_stores_8_bit_weights(real_engine, arch):
    """The engine file itself: INT8 weights take 1 byte instead of FP16's 2, so an INT8 plan is well
    below the FP16 one (an FP16 engine built in place of INT8 would be as large), FP16 below FP32."""
    _, m16 = real_engine(arch, "fp16")
    _, m8 = real_engine(arch, "int8")
    _, m32 = real_engine(arch, "fp32")
    assert m8["engine_bytes"] < 0.85 * m16["engine_bytes"], (m8["engine_bytes"], m16["engine_bytes"])
    assert m16["engine_bytes"] < 0.6 * m32["engine_bytes"], (m16["engine_bytes"], m32["engine_bytes"])


@REAL_ENGINES
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_int8_network_handed_to_the_builder_is_typed_int8(real_engine, arch):
    """What the strongly typed builder must honour: the parsed network's Q/DQ layers and INT8-typed
    outputs (from the ONNX; this is the network, not the engine), none in the FP16 network."""
    _, m16 = real_engine(arch, "fp16")
    _, m8 = real_engine(arch, "int8")
    net8 = m8["layer_precision"].get("network", m8["layer_precision"])
    net16 = m16["layer_precision"].get("network", m16["layer_precision"])
    assert net8["output_dtypes"].get("INT8", 0) >= 20 and net8["qdq_layers"] >= 40
    assert net16["output_dtypes"].get("INT8", 0) == 0 and net16["output_dtypes"].get("HALF", 0) >= 20


@REAL_ENGINES
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_int8_engine_runs_int8_layers_per_the_engine_inspector(real_engine, arch):
    """The built engine's own layers (IEngineInspector needs a deserialized engine, so a GPU it targets)."""
    _, m8 = real_engine(arch, "int8")
    if m8["layer_precision"]["source"] != "engine_inspector":
        pytest.skip(f"the engine inspector needs a GPU the engine targets: {m8['engine_inspector']}")
    assert m8["layer_precision"]["output_dtypes"].get("INT8", 0) >= 20


@REAL_ENGINES
def test_precision_mismatch_with_real_onnx(rtx, real_onnx, tmp_path):
    out = tmp_path / "x.engine"
    with pytest.raises(UserError, match=r"resnet18\.fp16\.onnx records precision fp16 .* but int8 was requested") as ei:
        eng.build_engine(real_onnx("resnet18", "fp16"), out, rtx_opts(), precision="int8")
    assert "\n" not in str(ei.value)
    with pytest.raises(UserError, match=r"records precision fp32 .* but fp16 was requested"):
        eng.build_engine(real_onnx("resnet18", "fp32"), out, rtx_opts(), precision="fp16")
    assert not out.exists() and not manifest_path(out).exists()


@REAL_ENGINES
def test_truncated_onnx_is_clear(rtx, real_onnx, tmp_path):
    bad = tmp_path / "cut.onnx"
    data = real_onnx("resnet18", "fp32").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError) as ei:
        eng.build_engine(bad, tmp_path / "cut.engine", rtx_opts(), precision="fp32")
    assert str(ei.value).startswith(f"cannot parse ONNX {bad}") and "\n" not in str(ei.value)
    assert not (tmp_path / "cut.engine").exists()


def test_unwritable_engine_folder_fails_before_building(rtx, model_onnx, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the engines folder should be")
    with pytest.raises(UserError, match="cannot create output folder"):
        eng.build_engine(model_onnx, blocker / "resnet18" / "x.engine", rtx_opts(), precision="fp32")


def test_ctrl_c_during_build_leaves_nothing(rtx, model_onnx, tmp_path):
    """SIGINT mid-build cancels the builder through IProgressMonitor; no engine, manifest or temp file remains."""
    import os
    import signal

    out = tmp_path / "engines" / "i.engine"
    sent = []

    def progress(phase, step, total):
        if not sent:
            sent.append(phase)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        eng.build_engine(model_onnx, out, rtx_opts(max_batch=2), precision="fp32", progress=progress)
    assert sent and list(out.parent.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_cancel_from_progress_callback(rtx, model_onnx, tmp_path):
    out = tmp_path / "c.engine"
    with pytest.raises(UserError, match="engine build cancelled: nothing was written"):
        eng.build_engine(model_onnx, out, rtx_opts(max_batch=2), precision="fp32", progress=lambda p, s, t: s < 1)
    assert list(tmp_path.iterdir()) == []


@REAL_ENGINES
def test_build_function_makes_onnx_and_reuses(rtx, exported, real_onnx, tmp_path):
    """engine.build: default ONNX path, engine name by flavour and precision, reuse and rebuild with reasons."""
    real_onnx("resnet18", "fp16")  # made once for the session under exported.root
    msgs: list[str] = []
    opts = rtx_opts(max_batch=2)
    m = rd.build(18, precision="fp16", options=opts, out_dir=exported.root, progress=msgs.append)
    assert Path(m["path"]) == exported.root / "resnet18" / "resnet18.fp16.trt-rtx.engine"
    assert m["onnx_status"] == "reused" and m["source_metadata"]["precision"] == "fp16"
    again = rd.build(18, precision="fp16", options=rtx_opts(max_batch=2), out_dir=exported.root, progress=msgs.append)
    assert again["reused"] and again["rebuild_reason"] is None and again["engine_sha256"] == m["engine_sha256"]
    wider = rd.build(18, precision="fp16", options=rtx_opts(max_batch=3), out_dir=exported.root)
    assert not wider["reused"] and "requested profile changed" in wider["rebuild_reason"]
    forced = rd.build(18, precision="fp16", options=rtx_opts(max_batch=3), out_dir=exported.root, force=True)
    assert not forced["reused"] and "forced" in forced["rebuild_reason"]
    assert any("reusing" in x for x in msgs)
    with pytest.raises(UserError, match="holds resnet18, not resnet50"):
        rd.build(50, precision="fp16", options=rtx_opts(), onnx=real_onnx("resnet18", "fp16"), out_dir=tmp_path)


def test_trt_preflight_without_tensorrt_or_gpu(model_onnx, tmp_path):
    """--engine trt here: one BackendUnavailable before any ONNX work (TensorRT missing, or no GPU)."""
    with pytest.raises(BackendUnavailable) as ei:
        eng.preflight(eng.BuildOptions(flavour="trt"))
    if cuda_device_info()[0] is not None:
        pytest.skip("a GPU is present; only the missing-TensorRT case can be checked")
    assert ei.value.backend == "trt" and ("tensorrt" in ei.value.reason or "CUDA GPU" in ei.value.reason)


def test_trt_target_records_gpu_for_reuse(monkeypatch):
    """TensorRT engines are reused only on the GPU model they were built on (unless hardware-compatible)."""
    fake = types.SimpleNamespace(__name__="tensorrt", __version__="10.9.0.34")
    a10 = {"name": "NVIDIA A10", "compute_capability": "8.6"}
    t = eng.target_facts(fake, eng.BuildOptions(flavour="trt"), a10)
    assert t == {"hardware_compatibility": None, "compute_capability": "8.6", "gpu": "NVIDIA A10"}
    t2 = eng.target_facts(fake, eng.BuildOptions(flavour="trt", hardware_compatibility="same_cc"), a10)
    assert t2["gpu"] is None and t2["hardware_compatibility"] == "same_cc"
    assert eng.target_facts(fake, eng.BuildOptions(flavour="trt", hardware_compatibility="ampere+"), a10)["compute_capability"] == "8.0+"


def test_dla_builder_configuration():
    trt, builder, config = fake_builder_config(cores=2)
    notes: list[str] = []
    _apply_dla(trt, builder, config, eng.BuildOptions(flavour="trt", dla_core=1), notes)
    assert (config.default_device_type, config.DLA_core, config.flags) == ("DLA", 1, ["GPU_FALLBACK"])
    assert "GPU fallback" in notes[0]
    trt, builder, config = fake_builder_config(cores=2)
    _apply_dla(trt, builder, config, eng.BuildOptions(flavour="trt", dla_core=0, gpu_fallback=False), notes)
    assert (config.DLA_core, config.flags) == (0, [])
    with pytest.raises(UserError, match=r"DLA core 2 does not exist: this device has 2 \(0..1\)"):
        _apply_dla(*fake_builder_config(cores=2), eng.BuildOptions(flavour="trt", dla_core=2), [])
    with pytest.raises(UserError, match="sees no DLA here"):
        _apply_dla(*fake_builder_config(cores=0), eng.BuildOptions(flavour="trt", dla_core=0), [])


def test_dla_precision_and_reuse_facts():
    opts = eng.BuildOptions(flavour="trt", dla_core=0)
    for p in ("fp16", "int8"):
        opts.check_precision(p)
    for p in ("fp32", "bf16"):
        with pytest.raises(UserError, match="DLA runs FP16 and INT8 only"):
            opts.check_precision(p)
    assert opts.dla_facts() == {"dla_core": 0, "gpu_fallback": True}
    assert eng.BuildOptions(flavour="trt").dla_facts() == {"dla_core": None, "gpu_fallback": None}
    assert {"dla_core", "gpu_fallback"} <= set(eng.REUSE_KEYS)


def test_dla_core_change_means_rebuild(tmp_path):
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"x" * 10)
    base = {"flavour": "trt", "precision": "fp16", "dla_core": None, "gpu_fallback": None}
    write_manifest(engine, {**base, "engine_bytes": 10, "engine_sha256": sha256_file(engine)})
    assert eng.needs_rebuild(engine, base) is None  # old manifests without DLA keys also compare equal
    assert "dla core changed" in eng.needs_rebuild(engine, {**base, "dla_core": 0, "gpu_fallback": True})


# ------------------------------------------------------------------------------------------ Jetson / TensorRT fixes


def test_dla_engines_take_one_static_batch():
    """DLA has no dynamic shapes: a DLA build is min = opt = max, batch 1 unless --batch says otherwise."""
    dla = eng.BuildOptions(flavour="trt", dla_core=0)
    assert dla.profile_for(None) == (1, 1, 1)
    assert eng.BuildOptions(flavour="trt", dla_core=0, batch=4).profile_for(None) == (4, 4, 4)
    assert eng.BuildOptions(flavour="trt", dla_core=0, max_batch=8, min_batch=8).profile_for(None) == (8, 8, 8)
    assert dla.profile_for(2) == (2, 2, 2)  # a fixed-batch ONNX keeps its batch
    with pytest.raises(UserError, match=r"DLA has no dynamic shapes.*--batch N .*not the profile 1/8/32"):
        eng.BuildOptions(flavour="trt", dla_core=0, max_batch=32).profile_for(None)
    assert eng.BuildOptions(flavour="trt").profile_for(None) == (1, 8, 32)  # GPU engines keep the range
    assert eng.BuildOptions(flavour="trt", batch=3).profile_for(None) == (3, 3, 3)
    with pytest.raises(UserError, match="--batch is one static batch"):
        eng.BuildOptions(flavour="trt", batch=3, max_batch=8).validate()
    with pytest.raises(UserError, match="--batch must be an integer >= 1"):
        eng.BuildOptions(flavour="trt", batch=0).validate()


def test_dla_placement_counts_what_fell_back_and_warns_when_most_did():
    from resnet_deploy.engine.config import dla_capability, dla_placement

    layers = [types.SimpleNamespace(kind=k) for k in ["conv"] * 6 + ["topk"] * 4]
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__)
    config = types.SimpleNamespace(can_run_on_DLA=lambda layer: layer.kind == "conv")
    cap = dla_capability(network, config)
    assert cap == {"network_layers": 10, "dla_capable": 6}
    notes: list[str] = []
    moved = ["Layer 'x' (SHUFFLE): Unsupported on DLA. Switching this layer's device type to GPU."] * 4
    p = dla_placement(cap, [*moved, "unrelated warning"], 0, notes)
    assert (p["dla_layers"], p["gpu_fallback_layers"], p["builder_moved"], p["mostly_gpu"]) == (6, 4, 4, False)
    assert "DLA core 0 runs 6 of 10 layers" in notes[-1]
    # the builder moved more than can_run_on_DLA predicted (format constraints, batch limits): its word counts
    old_style = ["Default DLA is enabled but layer conv3 is not supported on DLA, falling back to GPU."] * 7
    p = dla_placement(cap, old_style, 1, notes)
    assert p["gpu_fallback_layers"] == 7 and p["mostly_gpu"] is True and notes[-1].startswith("warning: most layers fell back")


def test_a_rejected_profile_shape_is_one_line(rtx, model_onnx, tmp_path, monkeypatch):
    """IOptimizationProfile.set_shape raises RuntimeError in the Python bindings (PY_ASSERT_RUNTIME_ERROR
    in pyCore.cpp), not ValueError: the builder must turn that into its one line."""
    real = rtx

    class Profile:
        def set_shape(self, *args):
            raise RuntimeError("Shape provided for min is inconsistent with other shapes.")

    class Builder:
        def __init__(self, logger):
            self._real = real.Builder(logger)

        def __getattr__(self, name):
            return getattr(self._real, name)

        def create_optimization_profile(self):
            return Profile()

    class Flavour:
        __name__ = real.__name__
        __version__ = real.__version__

        def __getattr__(self, name):
            return Builder if name == "Builder" else getattr(real, name)

    monkeypatch.setattr(engine_build, "import_flavour", lambda flavour: Flavour())
    with pytest.raises(UserError, match=r"invalid batch profile 1/8/32 for input 'input': Shape provided for min"):
        eng.build_engine(model_onnx, tmp_path / "p.engine", rtx_opts(), precision="fp32")
    assert not (tmp_path / "p.engine").exists()


def test_the_engine_inspector_allows_a_version_compatible_plans_host_code():
    """A version-compatible plan embeds its lean runtime: deserializing it for the inspector needs
    IRuntime.engine_host_code_allowed, as the runner sets it; without it the manifest fell back to
    the network's precision with a misleading note."""
    seen = []

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, blob):
            seen.append(self.engine_host_code_allowed)
            return None

    trt = types.SimpleNamespace(__name__="tensorrt", Runtime=Runtime)
    logger = types.SimpleNamespace(last_error=lambda: "")
    gpu = {"name": "Orin", "compute_capability": "8.7"}
    for vc in (True, False):
        engine_build.inspect_with_gpu(trt, logger, b"plan", gpu, {}, [], version_compatible=vc)
    assert seen == [True, False]
