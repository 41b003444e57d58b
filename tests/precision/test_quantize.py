"""Precision artifacts (quantize), calibration data, eval, and the digits accuracy proof.

Needs the ``precision`` extra (ModelOpt) and ONNX Runtime; the digits proof also needs
scikit-learn. Everything runs on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="needs the precision extra: pip install -e '.[precision,cpu]'")
pytest.importorskip("onnxruntime", reason="needs ONNX Runtime: pip install -e '.[cpu]'")

from fakes import image_folder as _folder
from fakes import photo as _photo
from PIL import Image
from typer.testing import CliRunner

import resnet_deploy as rd
from resnet_deploy import api
from resnet_deploy.api import quantize as ensure_precision_onnx
from resnet_deploy.cli import app
from resnet_deploy.compare import THRESHOLDS, compare, run_parity
from resnet_deploy.errors import UserError
from resnet_deploy.onnx_meta import detect_precision, load_onnx, read_metadata
from resnet_deploy.precision.calib import DEFAULT_CALIB_SAMPLES, calibration_digest, load_calibration
from resnet_deploy.preprocess import Preprocess, recipe_from_metadata

evaluate = api.evaluate

SMALL = Preprocess(image_size=32, resize=32)


# --------------------------------------------------------------------------- calibration loader

def test_empty_calibration_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="holds no image files.*1 other file"):
        load_calibration(tmp_path, SMALL)


def test_missing_calibration_folder(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_calibration(tmp_path / "nope", SMALL)


def test_too_few_images_stop_below_the_minimum(tmp_path):
    _folder(tmp_path, 3)
    with pytest.raises(UserError, match=r"only 3 readable calibration image\(s\).*at least 8"):
        load_calibration(tmp_path, SMALL, samples=512)


def test_fewer_images_than_samples_uses_all_and_says_so(tmp_path):
    _folder(tmp_path, 10, classes=2)
    said = []
    c = load_calibration(tmp_path, SMALL, samples=512, progress=said.append)
    assert c.used == c.found == 10 and c.batch.shape == (10, 3, 32, 32) and c.batch.dtype == np.float32
    assert any("found 10 image file(s)" in m and "512" in m for m in said)
    assert any("found 10" in n for n in c.notes)


def test_corrupt_and_non_image_files_are_skipped_and_counted(tmp_path):
    _folder(tmp_path, 12)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    good = tmp_path / "img000.png"
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:40])
    (tmp_path / "readme.txt").write_text("x")
    c = load_calibration(tmp_path, SMALL, samples=100)
    assert c.used == 12 and len(c.skipped) == 3 and c.not_images == 1
    assert {s.split(":")[0] for s in c.skipped} == {"broken.jpg", "empty.png", "truncated.png"}
    assert np.isfinite(c.batch).all()


def test_undecodable_files_are_replaced_by_further_candidates(tmp_path):
    _folder(tmp_path, 20)
    for i in range(5):
        (tmp_path / f"bad{i}.png").write_bytes(b"junk")
    c = load_calibration(tmp_path, SMALL, samples=18, seed=3)
    assert c.used == 18  # 25 files, some of the seeded 18 are junk: the next candidates fill in


def test_grayscale_palette_and_rgba_are_converted(tmp_path):
    _folder(tmp_path, 8)
    base = _photo(99)
    base.convert("L").save(tmp_path / "gray.png")
    base.convert("P").save(tmp_path / "palette.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "rgba.png")
    Image.fromarray(np.zeros((30, 40), dtype=np.uint16) + 3000).save(tmp_path / "gray16.png")
    c = load_calibration(tmp_path, SMALL, samples=100)
    assert c.used == 12 and c.converted == 4 and c.batch.shape == (12, 3, 32, 32)
    gray = c.batch[[p.name for p in sorted(tmp_path.glob("*.png"))].index("gray.png")]
    assert np.allclose(gray[0] * SMALL.std[0] + SMALL.mean[0], gray[1] * SMALL.std[1] + SMALL.mean[1], atol=1e-5)


def test_sampling_is_seeded_and_digest_tracks_data(tmp_path):
    _folder(tmp_path, 30, classes=3)
    a = load_calibration(tmp_path, SMALL, samples=10, seed=0)
    b = load_calibration(tmp_path, SMALL, samples=10, seed=0)
    c = load_calibration(tmp_path, SMALL, samples=10, seed=1)
    assert np.array_equal(a.batch, b.batch) and a.digest == b.digest
    assert a.digest != c.digest and not np.array_equal(a.batch, c.batch)
    assert a.digest == calibration_digest(tmp_path, SMALL, 10, 0)
    assert calibration_digest(tmp_path, Preprocess(image_size=32, resize=36), 10, 0) != a.digest


def test_changed_image_changes_the_digest(tmp_path):
    _folder(tmp_path, 9)
    before = calibration_digest(tmp_path, SMALL, 512, 0)
    _photo(500).save(sorted(tmp_path.glob("*.png"))[4])
    assert calibration_digest(tmp_path, SMALL, 512, 0) != before


def test_bundled_photographs_are_the_default_and_announced():
    said = []
    c = load_calibration(None, SMALL, samples=20, progress=said.append)
    assert c.used == 20 and c.source == "scikit-image bundled photographs"
    assert any("scikit-image" in m for m in said)
    assert load_calibration(None, SMALL, samples=20).digest == c.digest


def test_recipe_from_metadata_round_trip():
    meta = {"image_size": "32", "resize": "36", "mean": "[0.3, 0.3, 0.3]", "std": "(0.37, 0.37, 0.37)"}
    r = recipe_from_metadata(meta)
    assert (r.image_size, r.resize, r.mean, r.std) == (32, 36, (0.3, 0.3, 0.3), (0.37, 0.37, 0.37))
    assert recipe_from_metadata({}) == Preprocess()
    with pytest.raises(UserError, match="mean"):
        recipe_from_metadata({"mean": "[1, 2]"})


# --------------------------------------------------------------------------- quantize (ResNet-18, 224)


def test_artifacts_are_named_and_typed(r18):
    root, fp16, int8 = r18
    assert fp16["path"] == str(root / "resnet18" / "resnet18.fp16.onnx")
    assert int8["path"] == str(root / "resnet18" / "resnet18.int8.onnx")
    assert detect_precision(fp16["path"]) == "fp16" and detect_precision(int8["path"]) == "int8"
    assert fp16["input"]["dtype"] == fp16["output"]["dtype"] == "float32"
    assert int8["input"]["dtype"] == "float32"
    qdq = int8["conversion"]["qdq"]
    assert qdq["quantized_ops"]["Conv"] == 20 and qdq["quantized_ops"]["Add"] == 8  # every conv and residual add
    assert int8["calibration"]["source"] == "scikit-image bundled photographs" and int8["calibration"]["used"] == 32
    assert Path(int8["path"] + ".json").is_file() and not list((root / "resnet18").glob(".*"))


def test_precision_onnx_carries_the_source_metadata(r18):
    root, fp16, int8 = r18
    src = read_metadata(load_onnx(root / "resnet18" / "resnet18.fp32.onnx"))
    for m, p in ((fp16, "fp16"), (int8, "int8")):
        meta = read_metadata(load_onnx(m["path"]))
        assert meta["precision"] == p
        for key in ("arch", "weights_sha256", "num_classes", "image_size", "mean", "std"):
            assert meta[key] == src[key]


def test_second_run_reuses_the_calibration_and_force_redoes_it(r18):
    root, fp16, int8 = r18
    said = []
    again = ensure_precision_onnx(18, "int8", out_dir=root, calib_samples=32, progress=said.append)
    assert again["reused"] and again["sha256"] == int8["sha256"] and any("reusing" in s for s in said)
    assert ensure_precision_onnx(18, "fp16", out_dir=root)["reused"]
    fp16_io = ensure_precision_onnx(18, "fp16", out_dir=root, fp16_io=True)  # another request: redone
    assert not fp16_io["reused"] and fp16_io["input"]["dtype"] == "float16"
    redo = ensure_precision_onnx(18, "fp16", out_dir=root, force=True)
    assert not redo["reused"] and redo["input"]["dtype"] == "float32"


def test_fp16_parity_passes_and_int8_on_random_weights_is_called_what_it_is(r18):
    """The seeded random ResNet-18 passes the FP16 bars; INT8 on random weights does not reach bars set on
    trained networks, and parity fails it with a note saying why rather than passing it."""
    root, *_ = r18
    r = rd.parity(18, precision="fp16", out_dir=root)
    assert r["precision"] == "fp16" and r["thresholds"] == THRESHOLDS["fp16"].__dict__
    assert r["passed"], r["failures"]
    r = rd.parity(18, precision="int8", out_dir=root)
    assert r["thresholds"] == THRESHOLDS["int8"].__dict__ and not r["passed"]
    assert r["notes"] and "seeded random weights, not trained ones" in r["notes"][0]
    with pytest.raises(UserError, match="seeded random weights"):
        rd.parity(18, precision="int8", out_dir=root, raise_on_fail=True)


def test_nan_still_fails_parity():
    ref = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    for p in ("fp16", "bf16", "int8"):
        bad = ref.copy()
        bad[1, 3] = np.nan
        assert not compare(ref, bad, p).passed
        bad[1, 3] = np.inf
        assert "NaN or Inf" in compare(ref, bad, p).failures[0]

    class _Fixed:
        def __init__(self, out):
            self.out = out

        def infer(self, batch):
            return self.out

    nan = ref.copy()
    nan[0, 0] = np.nan
    assert not run_parity(_Fixed(ref), _Fixed(nan), np.zeros((4, 3, 8, 8), np.float32), "int8").passed


def test_already_quantized_source_is_refused(r18, tmp_path):
    root, fp16, int8 = r18
    for m, word in ((int8, "already quantized to INT8"), (fp16, "already FP16")):
        with pytest.raises(UserError, match=word):
            ensure_precision_onnx(18, "int8", out_dir=tmp_path, source=m["path"])
    # an INT8 file where the FP32 export should be
    fake = tmp_path / "resnet18"
    fake.mkdir()
    shutil.copy(int8["path"], fake / "resnet18.fp32.onnx")
    with pytest.raises(UserError, match="already quantized"):
        ensure_precision_onnx(18, "fp16", out_dir=tmp_path)


def test_bad_arguments_are_user_errors(r18, tmp_path):
    root, *_ = r18
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        ensure_precision_onnx(18, "fp8", out_dir=root)
    with pytest.raises(UserError, match="unknown calibration method"):
        ensure_precision_onnx(18, "int8", out_dir=root, method="mse")
    with pytest.raises(UserError, match="fp16 only"):
        ensure_precision_onnx(18, "int8", out_dir=root, fp16_io=True)
    with pytest.raises(UserError, match="not found"):
        ensure_precision_onnx(18, "int8", out_dir=root, calib=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no image files"):
        ensure_precision_onnx(18, "int8", out_dir=root, calib=tmp_path / "empty", force=True)
    assert Path(root / "resnet18" / "resnet18.int8.onnx").is_file()  # a failed run leaves the old artifact


def test_cli_quantize_errors_are_one_line(r18, tmp_path):
    root, *_ = r18
    runner = CliRunner()
    r = runner.invoke(app, ["quantize", "--depth", "18", "--precision", "int4", "--out", str(root), "--json"])
    assert r.exit_code == 2 and "unknown precision 'int4'" in r.output and "Traceback" not in r.output
    (tmp_path / "e").mkdir()
    r = runner.invoke(app, ["quantize", "--depth", "18", "--precision", "int8", "--calib", str(tmp_path / "e"),
                            "--out", str(root), "--force", "--json"])
    assert r.exit_code == 2 and "holds no image files" in r.output


def test_cli_quantize_json_reuses(r18):
    root, _, int8 = r18
    r = CliRunner().invoke(app, ["quantize", "--depth", "18", "--precision", "int8", "--calib-samples", "32",
                                 "--out", str(root), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["reused"] and m["path"] == int8["path"]


# --------------------------------------------------------------------------- digits proof (real data)

def _digits_module():
    pytest.importorskip("sklearn", reason="the digits proof needs scikit-learn: pip install scikit-learn")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "digits" / "run.py"
    spec = importlib.util.spec_from_file_location("digits_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TEST_EPOCHS = 6  # the committed table uses the full 30-epoch run; 6 (1 thread, as an xdist worker runs it) gave FP32 98.3%, FP16 98.3%, INT8 98.0%: inside every bar


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    mod = _digits_module()
    work = tmp_path_factory.mktemp("digits")
    # the CLI's calibration defaults (512 images, entropy): the gate must hold as a user runs it
    # threads=None: the worker keeps its share of the cores (conftest), the run does not take both
    return work, mod.run(work, epochs=TEST_EPOCHS, threads=None, log=lambda m: None)


def test_digits_fp32_fp16_int8_meet_the_bars(digits):
    work, r = digits
    res = r["results"]
    assert not r["failures"], (r["failures"], {p: x["top1"] for p, x in res.items()})
    assert res["fp32"]["top1"] >= 0.95
    assert abs(res["fp16"]["top1"] - res["fp32"]["top1"]) <= 0.002 + 1e-9
    assert res["int8"]["top1"] >= 0.99 * res["fp32"]["top1"]
    assert r["int8"]["method"] == "entropy" and r["int8"]["calibration"]["used"] == DEFAULT_CALIB_SAMPLES == 512
    assert r["train_images"] == 1257 and r["int8"]["calibration"]["source"] == str(work / "train")
    assert res["int8"]["n"] == r["test_images"] == 540


def test_digits_eval_cli_matches_the_api(digits):
    work, r = digits
    out = CliRunner().invoke(app, ["eval", "--depth", "18", "--precision", "int8,fp32", "--data", str(work / "test"),
                                   "--out", str(work / "engines"), "--json"])
    assert out.exit_code == 0, out.output
    cli = {x["precision"]: x for x in json.loads(out.stdout)["results"]}
    assert cli["int8"]["correct1"] == r["results"]["int8"]["correct1"]
    assert cli["fp32"]["correct1"] == r["results"]["fp32"]["correct1"]
    assert cli["int8"]["preprocess"]["image_size"] == 32
