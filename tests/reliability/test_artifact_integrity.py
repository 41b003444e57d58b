"""No wrong artifact recorded as right (issue 31): a source rewritten while a stage reads it, an export
made from other weights, seed or classes, a package over the folder it reads, a manifest stripped of its
integrity fields, a sweep from another pid namespace. Each case is injected for real, in-process on the
trained CIFAR ResNet-20 (the claims are about files, not processes), with the CLI's exit code checked
through Typer's in-process runner."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from typer.testing import CliRunner

from resnet_deploy import api, artifacts
from resnet_deploy.artifacts import (
    Lease,
    Snapshot,
    manifest_path,
    read_manifest,
    sha256_file,
    sweep_stale_temporaries,
    verify,
    work_folder,
)
from resnet_deploy.cli import app
from resnet_deploy.errors import UserError

pytest.importorskip("modelopt.onnx.autocast", reason="needs the precision extra: pip install -e '.[precision,cpu]'")
WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "cifar10-resnet" / "resnet20-12fca82f.th"
FP32 = Path("resnet20") / "resnet20.fp32.onnx"
cli = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder holding the trained ResNet-20's FP32 export (copy it before changing anything)."""
    root = tmp_path_factory.mktemp("trained")
    api.export(20, weights=WEIGHTS, out_dir=root)
    return root


@pytest.fixture(scope="module")
def seed7(tmp_path_factory) -> Path:
    """A folder holding a seeded-random (seed 7) ResNet-20 FP32 export: other weights."""
    root = tmp_path_factory.mktemp("seed7")
    api.export(20, seed=7, out_dir=root)
    return root


def copy_of(folder: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "engines"
    shutil.copytree(folder, dest)
    return dest


def logits(model: str | Path | bytes, x: np.ndarray) -> np.ndarray:
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def swap_after_reading(monkeypatch, target: Path, other: Path, *, before: bool = False) -> list[Path]:
    """Make the one reading step (Snapshot.take) rewrite ``target`` with ``other``'s bytes right after it
    read it (or right before, with ``before``): a concurrent writer, deterministic."""
    real, seen = Snapshot.take.__func__, []

    def take(cls, path, **kw):
        hit = Path(path).expanduser().resolve() == target.resolve() and not seen
        if hit:
            seen.append(Path(path))
            if before:
                shutil.copyfile(other, target)
        snap = real(cls, path, **kw)
        if hit and not before:
            shutil.copyfile(other, target)
        return snap

    monkeypatch.setattr(Snapshot, "take", classmethod(take))
    return seen


# ------------------------------------------------------------------------------------------ 1. one read


def test_quantize_converts_the_very_bytes_its_manifest_records(trained, seed7, tmp_path, monkeypatch):
    out = copy_of(trained, tmp_path)
    src, original = out / FP32, (out / FP32).read_bytes()
    seen = swap_after_reading(monkeypatch, src, seed7 / FP32)
    m = api.quantize(20, "fp16", weights=WEIGHTS, out_dir=out, calib_samples=4, min_calib_images=1)
    assert seen, "the source was not read through Snapshot.take"
    assert src.read_bytes() != original  # the source did change under the quantization
    fp16 = Path(m["path"])
    assert m["source"]["sha256"] == m["request"]["source_sha256"] == hashlib.sha256(original).hexdigest()
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    got, want, other = logits(fp16, x), logits(original, x), logits(seed7 / FP32, x)
    # computed from the trained bytes it records, not from the seed-7 file now at the path
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    assert np.abs(got - other).max() > 0.5 * np.abs(other).max()


def test_a_source_changed_after_its_manifest_was_checked_is_refused(trained, seed7, tmp_path, monkeypatch):
    out = copy_of(trained, tmp_path)
    swap_after_reading(monkeypatch, out / FP32, seed7 / FP32, before=True)
    with pytest.raises(UserError, match="changed while this command was reading it"):
        api.quantize(20, "fp16", weights=WEIGHTS, out_dir=out, calib_samples=4, min_calib_images=1)
    assert not (out / "resnet20" / "resnet20.fp16.onnx").exists()


def test_an_export_replaced_with_its_manifest_mid_check_is_refused(trained, seed7, tmp_path, monkeypatch):
    """Another export (file and manifest) lands between the weights check and the manifest check: the
    bytes read then match their manifest, but not the request; nothing is made from them."""
    out = copy_of(trained, tmp_path)
    from resnet_deploy import pipeline
    real = pipeline.read_fp32_source

    def read_then_swap(source):
        meta = real(source)
        if not isinstance(source, Snapshot):
            shutil.copyfile(seed7 / FP32, out / FP32)
            shutil.copyfile(manifest_path(seed7 / FP32), manifest_path(out / FP32))
        return meta

    monkeypatch.setattr(pipeline, "read_fp32_source", read_then_swap)
    with pytest.raises(UserError, match="changed while this command was reading it"):
        api.quantize(20, "fp16", weights=WEIGHTS, out_dir=out, calib_samples=4, min_calib_images=1)
    assert not (out / "resnet20" / "resnet20.fp16.onnx").exists()


@pytest.mark.parametrize("target", ["jetson", "triton"])
def test_package_copies_the_bytes_it_describes(trained, seed7, tmp_path, monkeypatch, target):
    src = copy_of(trained, tmp_path) / FP32
    original = src.read_bytes()
    swap_after_reading(monkeypatch, src, seed7 / FP32)
    m = api.package(20, target=target, onnx=src, out=tmp_path / "out", precision="fp32")
    copied = Path(m["path"]) / ("resnet20.fp32.onnx" if target == "jetson" else "1/model.onnx")
    recorded = m["model"]["sha256"] if target == "jetson" else m["sha256"]
    assert copied.read_bytes() == original and recorded == sha256_file(copied)


# ------------------------------------------------------------------------------------------ 2. other weights


def refused_and_kept(out: Path, call, *words: str) -> str:
    before = (out / FP32).read_bytes(), manifest_path(out / FP32).read_text()
    with pytest.raises(UserError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message and "--force" in message and "another --out" in message, message
    for w in words:
        assert w in message, (w, message)
    assert ((out / FP32).read_bytes(), manifest_path(out / FP32).read_text()) == before  # nothing replaced
    return message


@pytest.mark.parametrize("command", ["quantize", "diagnose", "predict"])
def test_a_trained_export_is_not_replaced_by_another_class_count(trained, tmp_path, command):
    out = copy_of(trained, tmp_path)
    img = tmp_path / "grey.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(img)
    calls = {  # the commands: no --weights (the trained export is used as it is), --num-classes 5
        "quantize": lambda: api.quantize(20, "fp16", num_classes=5, out_dir=out),
        "diagnose": lambda: api.diagnose(20, num_classes=5, out_dir=out),
        # (predict without --weights refuses a trained export anyway: check_same_weights)
        "predict": lambda: api.predict([img], 20, weights=WEIGHTS, num_classes=5, out_dir=out),
    }
    refused_and_kept(out, calls[command], "resnet20-12fca82f.th", "10 classes", "not 5")


def test_build_refuses_too(trained, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")
    out = copy_of(trained, tmp_path)
    refused_and_kept(out, lambda: api.build(20, precision="fp16", num_classes=5, out_dir=out), "10 classes")


def test_other_weights_or_seed_are_refused(trained, seed7, tmp_path):
    out = copy_of(seed7, tmp_path)
    refused_and_kept(out, lambda: api.quantize(20, "fp16", weights=WEIGHTS, out_dir=out), "random(seed=7")
    refused_and_kept(out, lambda: api.quantize(20, "fp16", seed=3, out_dir=out), "random(seed=7", "random(seed=3")
    # without --weights a user's own (trained) export is what is used, whatever the seed
    trained_out = copy_of(trained, tmp_path / "t")
    m = api.quantize(20, "fp16", seed=3, out_dir=trained_out, calib_samples=4, min_calib_images=1)
    assert m["weights_source"].endswith("resnet20-12fca82f.th")


def test_the_cli_says_so_in_one_line_with_exit_2_and_force_replaces(trained, tmp_path):
    out = copy_of(trained, tmp_path)
    r = cli.invoke(app, ["quantize", "--depth", "20", "-p", "fp16", "--num-classes", "5", "--out", str(out), "--json"])
    assert r.exit_code == 2 and r.stdout == "", (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "10 classes" in lines[0] and "--force" in lines[0], r.stderr
    r = cli.invoke(app, ["quantize", "--depth", "20", "-p", "fp16", "--num-classes", "5", "--out", str(out), "--force",
                         "--calib-samples", "4", "--json"])
    assert r.exit_code == 0, r.output
    assert str(read_manifest(out / FP32)["num_classes"]) == str(json.loads(r.stdout)["num_classes"]) == "5"


# ------------------------------------------------------------------------------------------ 3. the folder read


@pytest.mark.parametrize("where", ["same", "inside", "above"])
def test_package_never_replaces_the_folder_it_reads(trained, tmp_path, where):
    out = copy_of(trained, tmp_path)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    target = {"same": out, "inside": out / "resnet20", "above": tmp_path}[where]
    # (Triton writes <out>/<name>: an --out above the artifacts replaces nothing of them)
    for target_kind in ("jetson", "triton") if where != "above" else ("jetson",):
        r = cli.invoke(app, ["package", "--depth", "20", "--weights", str(WEIGHTS), "--target", target_kind,
                             "--precision", "fp32", "--artifacts", str(out), "--out", str(target), "--force"])
        assert r.exit_code == 2, r.output
        assert "refusing to write" in r.stderr and "reads from" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli.invoke(app, ["package", "--target", "jetson", "--onnx", str(out / FP32), "--out", str(out / "resnet20"),
                         "--force"])
    assert r.exit_code == 2 and "reads from" in r.stderr, r.output
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_triton_never_replaces_the_folder_of_its_engine(tmp_path):
    engine = tmp_path / "repo" / "m" / "1" / "model.plan"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match="reads from"):
        api.deployment.write_triton_model(engine, tmp_path / "repo", name="m",
                                          options=api.ServingOptions(force=True))
    assert engine.read_bytes() == b"plan"


# ------------------------------------------------------------------------------------------ 5. manifests


@pytest.mark.parametrize("edit", [
    {"sha256": None}, {"bytes": None}, {"sha256": None, "bytes": None}, {"bytes": "12"}, {"bytes": True},
    {"sha256": 0}, {"sha256": "abc"},
])
def test_verify_refuses_a_manifest_without_its_integrity_fields(tmp_path, edit):
    f = tmp_path / "a.onnx"
    f.write_bytes(b"model")
    good = {"sha256": sha256_file(f), "bytes": 5}
    verify(f, good)
    bad = {k: v for k, v in {**good, **edit}.items() if v is not None}
    with pytest.raises(UserError, match="cannot vouch"):
        verify(f, bad)
    with pytest.raises(UserError, match="cannot vouch"):  # engines: engine_bytes / engine_sha256
        verify(f, {"kind": "engine", **{("engine_" + k): v for k, v in bad.items()}})


def test_a_stripped_manifest_beside_a_swapped_artifact_is_not_reused(trained, tmp_path):
    out = copy_of(trained, tmp_path)
    kw = {"weights": WEIGHTS, "out_dir": out, "calib_samples": 4, "min_calib_images": 1}
    first = api.quantize(20, "fp16", **kw)
    fp16 = Path(first["path"])
    m = read_manifest(fp16)
    del m["sha256"], m["bytes"]
    manifest_path(fp16).write_text(json.dumps(m))
    fp16.write_bytes(fp16.read_bytes() + b"\0")  # another file in its place (here: one byte more)
    again = api.quantize(20, "fp16", **kw)
    assert again["reused"] is False and read_manifest(fp16)["sha256"] == sha256_file(fp16)
    # the stage after quantize (package's precision_manifest) does not take it as quantize made it either
    m = read_manifest(fp16)
    del m["sha256"]
    manifest_path(fp16).write_text(json.dumps(m))
    package = api.package(20, weights=WEIGHTS, precision="fp16", target="jetson", artifacts_dir=out, out=tmp_path / "b")
    assert read_manifest(fp16)["sha256"] == sha256_file(fp16) == package["model"]["sha256"]


# ------------------------------------------------------------------------------------------ 6. the sweep


def test_a_live_work_folder_survives_a_sweep_from_another_pid_namespace(tmp_path, monkeypatch):
    final = tmp_path / "m.int8.onnx"
    with work_folder(final) as work:
        (work / "half.onnx").write_bytes(b"in progress")
        monkeypatch.setattr(artifacts, "_alive", lambda pid: False)  # our pid means nothing over there
        assert sweep_stale_temporaries(tmp_path) == [] and (work / "half.onnx").exists()
    assert list(tmp_path.iterdir()) == []


HOLDER = """
import sys, time
from pathlib import Path
from resnet_deploy.artifacts import Lease
lease = Lease(Path(sys.argv[1]))
lease.path("work").mkdir()
print(lease.path("work"), flush=True)
time.sleep(600)
"""


def test_a_lease_held_by_another_process_keeps_its_work_folder_and_dies_with_it(tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "m.int8.onnx")], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        work = Path(holder.stdout.readline().strip())
        assert work.is_dir()
        old = tmp_path / f".m.fp16.onnx.{holder.pid}.abcd.work"  # an older version's: no lease, pid "dead"
        old.mkdir()
        monkeypatch.setattr(artifacts, "_alive", lambda pid: False)  # the holder's pid looks dead here
        assert sweep_stale_temporaries(tmp_path) == [old]
        assert work.is_dir()
    finally:
        holder.kill()
        holder.wait()
    swept = sweep_stale_temporaries(tmp_path)  # its lease went with it: its work folder and lock file go
    assert work in swept and sorted(tmp_path.iterdir()) == []


def test_where_nothing_can_lock_only_an_age_bound_removes(tmp_path, monkeypatch):
    lease = Lease(tmp_path / "m.onnx")
    tmp = lease.path("tmp")
    tmp.write_bytes(b"x")
    monkeypatch.setattr(artifacts, "_alive", lambda pid: False)
    monkeypatch.setattr(artifacts, "fcntl", None)  # a filesystem (or platform) without locks
    assert sweep_stale_temporaries(tmp_path) == [] and tmp.exists()
    later = time.time() + artifacts.STALE_AFTER_S + 60  # (a file's ctime cannot be set back: the clock goes on)
    monkeypatch.setattr(artifacts, "time", types.SimpleNamespace(time=lambda: later))
    assert tmp in sweep_stale_temporaries(tmp_path)
    lease.release()


def test_quantize_survives_a_sweep_from_another_namespace_mid_conversion(trained, tmp_path, monkeypatch):
    out = copy_of(trained, tmp_path)
    from resnet_deploy.precision import artifact as stage
    real = stage.convert_fp16

    def swept_first(src, dst, **kw):
        with monkeypatch.context() as m:
            m.setattr(artifacts, "_alive", lambda pid: False)
            sweep_stale_temporaries(Path(dst).parent.parent)  # the folder of <arch>.fp16.onnx and its work folder
        return real(src, dst, **kw)

    monkeypatch.setattr(stage, "convert_fp16", swept_first)
    m = api.quantize(20, "fp16", weights=WEIGHTS, out_dir=out, calib_samples=4, min_calib_images=1)
    assert m["reused"] is False and read_manifest(m["path"])["sha256"] == sha256_file(m["path"])
