"""Hostile input (issue 31, items 9 and 10): hand-edited manifests, FIFOs and devices where files should be,
absurd flags, markup in names, byte-order marks, numeric class folders, SIGTERM during bench. Each is one line
on stderr and the documented exit code: no traceback, no hang. Made on the CIFAR ResNet-20 (32x32, cheap)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_checks import invoke, one_line
from PIL import Image

from resnet_deploy import api
from resnet_deploy.artifacts import manifest_path, read_manifest, sha256_file, write_manifest
from resnet_deploy.datasets import labelled_folder
from resnet_deploy.errors import UserError
from resnet_deploy.labels import CIFAR10_LABELS, read_labels
from resnet_deploy.model import ModelRef

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def r20(exported) -> Path:
    return Path(exported("resnet20")["path"])


@pytest.fixture()
def photo(tmp_path) -> Path:
    p = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
    return p


@pytest.fixture()
def engine(tmp_path) -> Path:
    """A file with an engine manifest that matches it byte for byte (no TensorRT needed to read manifests)."""
    e = tmp_path / "resnet20.fp16.trt.engine"
    e.write_bytes(os.urandom(4096))
    write_manifest(e, {"kind": "engine", "flavour": "trt", "engine_bytes": 4096, "engine_sha256": sha256_file(e),
                       "precision": "fp16", "min_batch": 1, "opt_batch": 8, "max_batch": 32,
                       "input": {"name": "input", "shape": [-1, 3, 32, 32], "dtype": "float32"},
                       "outputs": [{"name": "logits", "shape": [-1, 10], "dtype": "float32"}],
                       "source_metadata": {"arch": "resnet20", "precision": "fp16", "num_classes": "10"}})
    return e


def edit_manifest(artifact: Path, change) -> None:
    m = json.loads(manifest_path(artifact).read_text())
    change(m)
    manifest_path(artifact).write_text(json.dumps(m))


EDITS = {
    "min_batch deleted": (lambda m: m.pop("min_batch"), "min_batch"),
    "min_batch abc": (lambda m: m.update(min_batch="abc"), "min_batch"),
    "input a string": (lambda m: m.update(input="x"), "input"),
    "source_metadata a list": (lambda m: m.update(source_metadata=[1, 2]), "source_metadata"),
    "outputs empty": (lambda m: m.update(outputs=[]), "outputs"),
    "profile upside down": (lambda m: m.update(min_batch=64), "batch profile"),
    "arch traversing": (lambda m: m["source_metadata"].update(arch="../../x"), "arch"),
}


# ------------------------------------------------------------------------------------------ manifests

@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_hand_edited_engine_manifest_is_one_line_wherever_it_is_read(tmp_path, engine, photo, edit):
    change, word = EDITS[edit]
    edit_manifest(engine, change)
    with pytest.raises(UserError, match=word):
        read_manifest(engine)
    one_line(invoke("package", "--depth", 20, "--target", "triton", "--engine-file", engine, "--out", tmp_path / "repo"),
             2, word)
    one_line(invoke("parity", "--depth", 20, "--engine", "trt", "--onnx", engine), 2, word)
    one_line(invoke("predict", photo, "--depth", 20, "--engine", "trt", "--artifact", engine), 2, word)
    assert not (tmp_path / "repo").exists()


def test_a_hand_edited_onnx_manifest_is_no_manifest_to_the_pipeline(tmp_path, r20, photo):
    """The default artifact's manifest edited by hand: not trusted (no traceback); the export is made again."""
    out = tmp_path / "engines"
    (out / "resnet20").mkdir(parents=True)
    onnx = out / "resnet20" / r20.name
    shutil.copyfile(r20, onnx)
    for change, word in ((lambda m: m.update(input="x"), "input"), (lambda m: m.update(num_classes="ten"), "num_classes")):
        shutil.copyfile(manifest_path(r20), manifest_path(onnx))
        edit_manifest(onnx, change)
        with pytest.raises(UserError, match=word):
            read_manifest(onnx)
        r = invoke("predict", photo, "--depth", 20, "--out", out)
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output
        assert read_manifest(onnx)["num_classes"] == 10  # made again, whole


def test_absurdly_nested_json_is_one_line(tmp_path, engine):
    manifest_path(engine).write_text("[" * 200_000 + "]" * 200_000)
    one_line(invoke("package", "--depth", 20, "--target", "triton", "--engine-file", engine, "--out", tmp_path / "r"),
             2, "nested")
    results = tmp_path / "run" / "results.json"
    results.parent.mkdir()
    results.write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    one_line(invoke("bench-merge", results.parent, "--out", tmp_path / "m"), 2, "nested")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_or_a_device_in_place_of_a_manifest_or_labels_does_not_hang(tmp_path, engine, r20, photo):
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    one_line(invoke("predict", photo, "--depth", 20, "--artifact", r20, "--labels", fifo), 2, "FIFO")
    one_line(invoke("predict", photo, "--depth", 20, "--artifact", r20, "--labels", "/dev/zero"), 2, "device")
    manifest_path(engine).unlink()
    os.mkfifo(manifest_path(engine))
    one_line(invoke("package", "--depth", 20, "--target", "triton", "--engine-file", engine, "--out", tmp_path / "r"),
             2, "FIFO")
    manifest_path(engine).unlink()
    manifest_path(engine).symlink_to("/dev/zero")
    one_line(invoke("parity", "--depth", 20, "--engine", "trt", "--onnx", engine), 2, "device")
    assert time.monotonic() - t0 < 60  # nothing blocked on the FIFO or read /dev/zero until memory ran out


def test_a_huge_manifest_is_refused_without_reading_it_all(tmp_path, engine, monkeypatch):
    import resnet_deploy.schema as schema

    monkeypatch.setattr(schema, "MAX_JSON_BYTES", 1000)
    manifest_path(engine).write_text(json.dumps({"kind": "engine", "notes": ["x" * 2000]}))
    with pytest.raises(UserError, match="larger than"):
        schema.read_json(manifest_path(engine), "manifest", schema.MAX_JSON_BYTES)


def test_bench_merge_refuses_a_row_with_a_non_numeric_batch(tmp_path):
    from resnet_deploy.bench.report import SCHEMA_VERSION

    run = tmp_path / "run"
    run.mkdir()
    row = {"run_id": "r", "arch": "resnet20", "depth": 20, "precision": "fp32", "backend": "ort", "batch": "abc",
           "status": "ok", "latency_p50_ms": 1.0}
    (run / "results.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "rows": [row], "environment": {}}))
    one_line(invoke("bench-merge", run, "--out", tmp_path / "m"), 2, "batch", "abc")
    row.update(batch=1, latency_p50_ms="fast")
    (run / "results.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "rows": [row], "environment": {}}))
    one_line(invoke("bench-merge", run, "--out", tmp_path / "m"), 2, "latency_p50_ms")
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------ flags, memory

def test_absurd_sizes_are_bounded_before_anything_is_allocated(tmp_path, r20):
    one_line(invoke("export", "--depth", 20, "--batch", 1_000_000_000, "--out", tmp_path), 2, "--batch", "4096")
    one_line(invoke("export", "--depth", 20, "--num-classes", 100_000_000, "--out", tmp_path), 2, "--num-classes")
    one_line(invoke("info", "--depth", 50, "--num-classes", 100_000_000), 2, "--num-classes")
    one_line(invoke("bench", "-e", "ort", "-d", 20, "-b", 1_000_000_000, "--out", tmp_path / "b", "--artifacts",
                    tmp_path / "e"), 2, "batch", "4096")
    one_line(invoke("package", "--depth", 20, "--target", "jetson", "--onnx", r20, "--max-batch", 1_000_000_000,
                    "--out", tmp_path / "j"), 2, "4096")
    with pytest.raises(UserError, match="--num-classes"):
        api.create_model(20, num_classes=100_000_000)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64 + 1])
def test_odd_seeds_are_one_line(tmp_path, seed):
    one_line(invoke("export", "--depth", 20, "--seed", seed, "--out", tmp_path), 2, "--seed")
    one_line(invoke("bench", "-e", "ort", "-d", 20, "-b", 1, "--seed", seed, "--out", tmp_path / "b", "--artifacts",
                    tmp_path / "e"), 2, "--seed")
    with pytest.raises(UserError, match="--seed"):
        ModelRef.of(20, seed=seed)
    assert ModelRef.of(20, seed=2**63 - 1).seed == 2**63 - 1


@pytest.mark.parametrize("fault", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. "
                                                               "DefaultCPUAllocator: can't allocate memory: you tried "
                                                               "to allocate 25600000000 bytes")])
def test_an_allocation_failure_is_one_line_at_the_cli_edge(monkeypatch, fault):
    def fail(*args, **kwargs):
        raise fault

    monkeypatch.setattr(api, "describe", fail)
    one_line(invoke("info", "--depth", 20), 2, "out of memory")
    monkeypatch.setattr(api, "describe", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    r = invoke("info", "--depth", 20)
    assert r.exit_code != 0 and isinstance(r.exception, RuntimeError)  # a real bug keeps its traceback


# ------------------------------------------------------------------------------------------ names, labels, folders

def test_markup_in_labels_and_paths_prints_literally(tmp_path, r20):
    names = ["[bold]cat[/bold]", "[/]", "[red]x", *CIFAR10_LABELS[3:]]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    img = tmp_path / "[bold]photo[red].png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(img)
    r = invoke("predict", img, "--depth", 20, "--artifact", r20, "--labels", tmp_path / "labels.txt", "--top", 10)
    assert r.exit_code == 0, r.output
    for text in (*names[:3], "[bold]photo[red].png"):
        assert text in r.stdout, (text, r.stdout)
    r = invoke("predict", tmp_path / "[/]missing.png", "--depth", 20, "--artifact", r20)
    one_line(r, 2, "[/]missing.png")


def test_a_labels_file_with_a_byte_order_mark_matches_its_first_class(tmp_path):
    (tmp_path / "labels.txt").write_bytes("\n".join(CIFAR10_LABELS).encode("utf-8-sig"))
    assert read_labels(tmp_path / "labels.txt")[0] == "airplane"
    for name in ("airplane", "truck"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / name / "a.png")
    folder = labelled_folder(tmp_path / "data", tmp_path / "labels.txt")
    assert list(folder.labels) == [0, 9]


def test_numeric_class_folders_are_class_indices_not_sorted_positions(tmp_path, r20, photo):
    for name in ("3", "7", "10"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.open(photo).save(tmp_path / "data" / name / "a.png")
    folder = labelled_folder(tmp_path / "data", None, list(CIFAR10_LABELS) + ["x"])
    assert sorted(zip(folder.classes, folder.labels.tolist())) == [("10", 10), ("3", 3), ("7", 7)]
    assert "class index" in folder.label_source
    shutil.rmtree(tmp_path / "data" / "10")
    r = invoke("eval", "--depth", 20, "--onnx", r20, "--data", tmp_path / "data", "--json")
    assert r.exit_code == 0, r.output
    assert "class index" in json.loads(r.stdout)["label_source"]
    (tmp_path / "data" / "12").mkdir()  # no class 12 in a 10-class model: refused, saying why
    Image.open(photo).save(tmp_path / "data" / "12" / "a.png")
    one_line(invoke("eval", "--depth", 20, "--onnx", r20, "--data", tmp_path / "data"), 2, "10 classes")
    (tmp_path / "data" / "012").mkdir()
    Image.open(photo).save(tmp_path / "data" / "012" / "a.png")
    with pytest.raises(UserError, match="same class index"):
        labelled_folder(tmp_path / "data")


# ------------------------------------------------------------------------------------------ signals

def test_sigterm_during_bench_exits_143(tmp_path, r20):
    arts = tmp_path / "engines"
    (arts / "resnet20").mkdir(parents=True)
    shutil.copyfile(r20, arts / "resnet20" / r20.name)
    shutil.copyfile(manifest_path(r20), manifest_path(arts / "resnet20" / r20.name))
    proc = subprocess.Popen([sys.executable, str(HERE / "signals_driver.py"), "resnet_deploy.bench.executor:measure", "--",
                             "bench", "-e", "ort", "-d", "20", "-p", "fp32", "-b", "1", "--min-time", "0", "--no-bare",
                             "--artifacts", str(arts), "--out", str(tmp_path / "b"), "--run-id", "r"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline, line = time.time() + 240, ""
    while "READY" not in line and time.time() < deadline and proc.poll() is None:
        line = proc.stderr.readline()
    assert "READY" in line, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err[-2000:])
    assert "terminated" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ memory of --data

def test_diagnose_data_is_bounded_in_memory_and_says_so(tmp_path, monkeypatch):
    """diagnose / --accuracy-target hold the preprocessed --data images in memory: at most MAX_EVAL_BYTES of them."""
    import resnet_deploy.tuning.images as images
    from resnet_deploy.preprocess import Preprocess

    recipe = Preprocess(image_size=32, resize=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    rng = np.random.default_rng(0)
    for cls in ("airplane", "truck"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "data" / cls / f"{i}.png")
    monkeypatch.setattr(images, "MAX_EVAL_BYTES", 12 * 3 * 32 * 32 * 4)  # room for 12 images
    got = images.load_eval_set(tmp_path / "data", recipe, label_set="cifar10")
    assert len(got.batch) == 12 and sorted(set(got.labels.tolist())) == [0, 9]  # spread over both classes
    assert any("40 images" in n and "12 of them" in n and "memory" in n for n in got.notes), got.notes
    got = images.load_eval_set(tmp_path / "data", recipe, label_set="cifar10", limit=30)
    assert len(got.batch) == 12 and any("--limit 30" in n for n in got.notes)
    monkeypatch.setattr(images, "MAX_EVAL_BYTES", 1 << 30)
    assert len(images.load_eval_set(tmp_path / "data", recipe, label_set="cifar10").batch) == 40
