"""The trained CIFAR-10 ResNet-20 through every stage from the command line: export, quantize,
parity, eval, build (TensorRT-RTX, on the CPU), bench, package and predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from resnet_deploy.cli import app
from resnet_deploy.labels import CIFAR10_LABELS

pytest.importorskip("modelopt.onnx.quantization", reason="needs the precision extra: pip install -e '.[precision,cpu]'")
WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "cifar10-resnet" / "resnet20-12fca82f.th"
cli = CliRunner()


def run(*args) -> dict:
    r = cli.invoke(app, [str(a) for a in args] + ["--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar-engines")
    m = run("export", "--depth", 20, "--weights", WEIGHTS, "--out", root)
    assert m["input"]["shape"] == ["batch", 3, 32, 32] and m["num_classes"] == 10 and m["label_set"] == "cifar10"
    assert m["image_size"] == 32 and m["resize"] == 32
    return root


@pytest.fixture(scope="module")
def cat(tmp_path_factory) -> Path:
    photo = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    return photo


def test_quantize_and_parity(out):
    q = run("quantize", "--depth", 20, "--weights", WEIGHTS, "-p", "int8", "--out", out)
    assert q["calibration"]["source"] == "scikit-image bundled photographs" and q["calibration"]["shape"] == [3, 32, 32]
    for p in ("fp32", "int8"):
        r = run("parity", "--depth", 20, "--weights", WEIGHTS, "-p", p, "--out", out)
        assert r["passed"] and r["n"] == 68 and r["precision"] == p


def test_eval_maps_folders_named_after_cifar_classes(out, cat, tmp_path):
    data = tmp_path / "data"
    img = Image.open(cat)
    for name, box in (("cat", (150, 50, 400, 300)), ("cat", (100, 0, 450, 300)), ("dog", (0, 0, 300, 300))):
        (data / name).mkdir(parents=True, exist_ok=True)
        img.crop(box).save(data / name / f"{box[0]}-{box[1]}.png")
    run("quantize", "--depth", 20, "--weights", WEIGHTS, "-p", "int8", "--out", out)
    r = run("eval", "--depth", 20, "-p", "fp32,int8", "--data", data, "--out", out)
    assert r["label_source"] == "the model's cifar10 class names" and r["images"] == 3 and r["classes"] == 2
    fp32 = next(x for x in r["results"] if x["precision"] == "fp32")
    assert fp32["correct1"] >= 2  # both crops of the cat are cats (the "dog" is the cat too)


def test_build_tensorrt_rtx_engine(out):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")
    m = run("build", "--depth", 20, "-p", "int8", "--engine", "trt-rtx", "--out", out, "--weights", WEIGHTS)
    assert m["input"]["shape"] == [-1, 3, 32, 32] and m["outputs"][0]["shape"] == [-1, 10]
    assert m["layer_precision"]["qdq_layers"] > 30 and m["source_metadata"]["label_set"] == "cifar10"


def test_bench_runs_the_cifar_depth(tmp_path):
    r = run("bench", "-e", "torch,ort", "-d", 20, "-b", "1,4", "--min-time", "0", "--min-iters", "3", "--warmup", "1",
            "--no-bare", "--out", tmp_path / "bench", "--artifacts", tmp_path / "engines")
    assert [row["status"] for row in r["rows"]] == ["ok"] * 4, [row["reason"] for row in r["rows"]]
    assert all(row["arch"] == "resnet20" and row["parity_n"] == 68 for row in r["rows"])


def test_package_writes_cifar_class_names(out, tmp_path):
    j = run("package", "--depth", 20, "-p", "int8", "--target", "jetson", "--out", tmp_path / "jetson",
            "--artifacts", out, "--weights", WEIGHTS)
    assert j["labels"]["source"] == "cifar10" and j["preprocess"]["image_size"] == 32
    assert (tmp_path / "jetson" / "labels.txt").read_text().split() == list(CIFAR10_LABELS)
    t = run("package", "--depth", 20, "-p", "int8", "--target", "triton", "--out", tmp_path / "triton",
            "--artifacts", out, "--weights", WEIGHTS)
    assert t["num_classes"] == 10 and t["input"]["dims"] == [3, 32, 32]


@pytest.mark.parametrize("engine", ["torch", "ort"])
def test_predict_a_cat(out, cat, engine):
    r = run("predict", cat, "--depth", 20, "--weights", WEIGHTS, "--engine", engine, "--out", out, "--top", 3)
    assert r["labels"] == "cifar10" and r["num_classes"] == 10
    assert r["predictions"][0]["top"][0]["label"] == "cat"
