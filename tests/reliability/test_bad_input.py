"""A hostile new user's inputs: each one a short line and the documented exit code, never a traceback."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_checks import invoke, one_line
from onnx import TensorProto, helper
from PIL import Image

from resnet_deploy.artifacts import manifest_path, read_manifest, write_manifest
from resnet_deploy.errors import UserError
from resnet_deploy.preprocess import load_image, to_rgb_pil


def png_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header claims width x height pixels (a few bytes on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def foreign_onnx(path: Path, shape=(1, 10), name: str = "x") -> Path:
    """Another model: a [1, 10] input named x, no resnet_deploy metadata."""
    graph = helper.make_graph([helper.make_node("Relu", [name], ["y"])], "foreign",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def photo(tmp_path) -> Path:
    import skimage.data

    p = tmp_path / "cat.jpg"
    Image.fromarray(skimage.data.chelsea()).save(p)
    return p


# ------------------------------------------------------------------------------------------ images


def test_a_decompression_bomb_is_refused_everywhere_images_are_read(tmp_path, exported):
    bomb = png_bomb(tmp_path / "huge.png")
    with pytest.raises(UserError, match="decompression bomb"):
        load_image(bomb)
    one_line(invoke("predict", bomb, "--depth", 18, "--out", exported.root), 2, "huge.png", "pixels")
    one_line(invoke("parity", "--depth", 18, "--image", bomb, "--out", exported.root), 2, "huge.png")


def test_16_bit_and_float_images_are_scaled_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 256 * 64, dtype=np.uint16).reshape(64, 256)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    img = load_image(tmp_path / "gray16.png")
    rgb = np.asarray(to_rgb_pil(img))
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 256, 3)
    assert (rgb == 255).mean() < 0.01 and abs(float(rgb.mean()) - 127.5) < 2  # a ramp stays a ramp
    rgb_f = np.asarray(to_rgb_pil(Image.fromarray((ramp / 65535.0).astype(np.float32))))
    assert abs(float(rgb_f.mean()) - 127.5) < 2 and (rgb_f == 255).mean() < 0.01
    # numpy arrays the same way (scikit-image's photographs, calibration arrays)
    assert abs(float(np.asarray(to_rgb_pil(ramp)).mean()) - 127.5) < 2


def test_predict_says_urls_are_not_supported(exported):
    one_line(invoke("predict", "https://example.com/cat.jpg", "--depth", 18, "--out", exported.root), 2,
             "URLs are not supported")


# ------------------------------------------------------------------------------------------ foreign models


def test_a_foreign_onnx_is_refused_before_it_runs(tmp_path, photo):
    other = foreign_onnx(tmp_path / "other.onnx")
    for args in (("parity", "--depth", 18, "--onnx", other), ("predict", photo, "--depth", 18, "--artifact", other)):
        line = one_line(invoke(*args), 2, "other.onnx", "[1, 10]")
        assert "not an image classifier" in line and "fixed batch" not in line
    (tmp_path / "data" / "cat").mkdir(parents=True)
    Image.open(photo).save(tmp_path / "data" / "cat" / "a.png")
    one_line(invoke("eval", "--depth", 18, "--onnx", other, "--data", tmp_path / "data"), 2, "not an image classifier")


def test_build_refuses_a_non_image_onnx_and_names_a_foreign_engine_after_its_file(tmp_path, exported):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")
    other = foreign_onnx(tmp_path / "other.onnx")
    one_line(invoke("build", "--engine", "trt-rtx", "--onnx", other, "--out", tmp_path / "e"), 2, "not an image classifier")
    assert not (tmp_path / "e" / "resnet18").exists()
    # an image model without toolkit metadata: its engine is named after the file, not after --depth's default
    plain = onnx.load(exported("resnet18")["path"])
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "mynet.onnx"))
    r = invoke("build", "--engine", "trt-rtx", "--onnx", tmp_path / "mynet.onnx", "--max-batch", 2, "--out",
               tmp_path / "e", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert Path(m["path"]) == tmp_path / "e" / "mynet" / "mynet.fp32.trt-rtx.engine"


def test_parity_and_predict_refuse_an_artifact_of_another_precision(exported, photo):
    fp32 = exported("resnet18")["path"]
    one_line(invoke("parity", "--depth", 18, "--onnx", fp32, "-p", "int8"), 2, "fp32", "int8")
    one_line(invoke("predict", photo, "--depth", 18, "--artifact", fp32, "-p", "int8"), 2, "fp32", "int8")
    assert invoke("parity", "--depth", 18, "--onnx", fp32).exit_code == 0  # no --precision: the artifact's


def test_predict_refuses_to_replace_an_export_made_from_other_weights(tmp_path, photo):
    import torch

    import resnet_deploy as rd

    out = tmp_path / "engines"
    rd.export(18, out_dir=out, seed=3)
    before = read_manifest(out / "resnet18" / "resnet18.fp32.onnx")["sha256"]
    torch.save(rd.create_model(18, seed=4).state_dict(), tmp_path / "other.pth")
    one_line(invoke("predict", photo, "--depth", 18, "--weights", tmp_path / "other.pth", "--out", out), 2,
             "other weights")
    assert read_manifest(out / "resnet18" / "resnet18.fp32.onnx")["sha256"] == before


# ------------------------------------------------------------------------------------------ options


def test_usage_errors_are_one_line():
    one_line(invoke("export", "--depth"), 2, "--depth")
    one_line(invoke("nonsense"), 2, "nonsense")
    one_line(invoke("export", "--batch", "zero"), 2, "--batch")


def test_errors_name_flags_not_parameters(tmp_path, exported):
    line = one_line(invoke("quantize", "--depth", 18, "-p", "int8", "--calib-samples", 0, "--out", exported.root), 2)
    assert "--calib-samples" in line and "calib_samples" not in line
    line = one_line(invoke("quantize", "--depth", 18, "-p", "int8", "--high-precision", "fp8", "--out", exported.root), 2)
    assert "--high-precision" in line


def test_info_with_an_absurd_image_size_is_one_line():
    one_line(invoke("info", "--depth", 18, "--image-size", 100000), 2, "--image-size")


def test_dynamo_refuses_an_opset_it_would_ignore(tmp_path):
    line = one_line(invoke("export", "--depth", 18, "--exporter", "dynamo", "--opset", 13, "--out", tmp_path), 2, "dynamo")
    assert "18" in line
    assert not (tmp_path / "resnet18").exists()


def test_a_failed_command_leaves_no_empty_folder(tmp_path):
    one_line(invoke("quantize", "--depth", 34, "-p", "int8", "--calib", tmp_path / "missing", "--out", tmp_path / "e"), 2)
    assert not (tmp_path / "e").exists()


def test_eval_says_when_folder_names_are_not_class_names(tmp_path, exported, photo):
    exported("resnet18")  # eval reads the export; it does not make one (this test ran after one that did, by chance)
    for name in ("apples", "pears"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.open(photo).save(tmp_path / "data" / name / "a.png")
    r = invoke("eval", "--depth", 18, "--data", tmp_path / "data", "--out", exported.root, "--json")
    assert r.exit_code == 0, r.output
    notes = json.loads(r.stdout)["notes"]
    assert any("not the model's class names" in n and "--labels" in n for n in notes), notes


# ------------------------------------------------------------------------------------------ bench, package


def test_bench_fails_when_nothing_was_measured(tmp_path):
    arts = tmp_path / "engines"
    (arts / "resnet18").mkdir(parents=True)
    foreign_onnx(arts / "resnet18" / "resnet18.fp32.onnx", shape=(1, 3, 224, 224), name="input")
    r = invoke("bench", "-e", "ort", "-d", 18, "-b", 1, "--min-time", 0, "--artifacts", arts, "--out", tmp_path / "b",
               "--json")
    assert r.exit_code == 1, r.output
    assert "nothing was measured" in r.stderr
    assert all(row["status"] != "ok" for row in json.loads(r.stdout)["rows"])


def test_package_checks_the_engine_against_its_manifest(tmp_path):
    engine = tmp_path / "x.fp16.trt.engine"
    engine.write_bytes(b"\0" * 1000)
    write_manifest(engine, {"kind": "engine", "flavour": "trt", "engine_bytes": 47_000_000, "engine_sha256": "0" * 64,
                            "precision": "fp16", "min_batch": 1, "opt_batch": 8, "max_batch": 32,
                            "input": {"name": "input", "shape": [-1, 3, 224, 224], "dtype": "float32"},
                            "outputs": [{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}]})
    assert manifest_path(engine).is_file()
    one_line(invoke("package", "--depth", 18, "--target", "triton", "--engine-file", engine, "--out", tmp_path / "repo"),
             2, "truncated")
    assert not (tmp_path / "repo").exists()


# ------------------------------------------------------------------------------------------ --json on failure


def test_json_stdout_stays_valid_or_empty_when_a_command_fails(tmp_path, exported, photo):
    """A script parsing stdout of a failed `--json` command gets nothing or one JSON object, never error text."""
    other = foreign_onnx(tmp_path / "other.onnx")
    failing = [
        ("export", "--depth", 18, "--num-classes", 0, "--out", tmp_path),
        ("info", "--depth", 18, "--image-size", 100000),
        ("parity", "--depth", 18, "--onnx", other),
        ("predict", "https://example.com/cat.jpg", "--depth", 18, "--out", exported.root),
        ("predict", photo, "--depth", 18, "--artifact", exported("resnet18")["path"], "-p", "int8"),
        ("quantize", "--depth", 18, "-p", "int8", "--calib", tmp_path / "missing", "--out", exported.root),
        ("eval", "--depth", 18, "--onnx", other, "--data", tmp_path),
        ("export", "--depth", 18, "--exporter", "dynamo", "--opset", 13, "--out", tmp_path),
    ]
    for args in failing:
        r = invoke(*args, "--json")
        assert r.exit_code == 2, (args, r.exit_code, r.output)
        assert "error" in r.stderr, args
        if r.stdout.strip():
            json.loads(r.stdout)  # one object, nothing else
