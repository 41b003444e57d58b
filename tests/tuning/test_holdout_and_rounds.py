"""``quantize --accuracy-target`` with a held-out split, on a chosen scoring runner, going on when ModelOpt's
re-quantization disagrees with the search, and leaving the previous artifact when interrupted (trained ResNet-20)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_checks import run
from onnx import numpy_helper

import resnet_deploy as rd
from resnet_deploy import pipeline as pipeline_module
from resnet_deploy.artifacts import read_manifest, sha256_file
from resnet_deploy.errors import UserError
from resnet_deploy.onnx_meta import read_metadata
from resnet_deploy.preprocess import recipe_from_metadata
from resnet_deploy.runners import unavailable
from resnet_deploy.tuning import EvalSet, Measure, keep_high_precision, load_eval_set, pick_engine, split_eval_set, units_of

pytest.importorskip("modelopt.onnx.quantization", reason="needs the precision extra: pip install -e '.[precision,cpu]'")
ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "tests" / "data" / "cifar10-resnet" / "resnet20-12fca82f.th"
CALIB = 32
TARGET = 0.95      # 48 photo crops, half held out: plain INT8 misses it on the 24 search images, one block meets it


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """ResNet-20 exported, 48 photo crops (the benchmark's), and the tuned INT8 with half of them held out."""
    root = tmp_path_factory.mktemp("holdout")
    spec = importlib.util.spec_from_file_location("int8_target_run", ROOT / "benchmarks" / "int8-target" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    views = root / "views"
    bench.write_views(views, 48, bench.SEARCH_SEED)
    fp32 = rd.export(20, weights=WEIGHTS, out_dir=root)
    tuned = rd.quantize(20, "int8", weights=WEIGHTS, out_dir=root, calib_samples=CALIB, accuracy_target=TARGET,
                        data=views, holdout=0.5, max_excluded=5)
    return {"root": root, "views": views, "fp32": Path(fp32["path"]), "tuned": tuned}


def quantize_args(setup, *extra):
    return ["quantize", "--depth", 20, "--weights", WEIGHTS, "-p", "int8", "--calib-samples", CALIB,
            "--out", setup["root"], *extra]


def test_holdout_scores_plain_and_tuned_on_both_parts_and_says_when_tuning_did_not_help(setup):
    m = setup["tuned"]
    t, h = m["tuning"], m["tuning"]["holdout"]
    assert t["images"]["images"] == 24 and h["images"]["images"] == 24
    assert "search part" in t["images"]["source"] and "held-out part" in h["images"]["source"]
    assert t["plain_int8"]["score"] < t["goal"] <= t["int8"]["score"] and t["kept"]
    assert h["better_than_plain"] == (h["int8"]["score"] > h["plain_int8"]["score"])
    assert ("NOT better" in h["verdict"]) == (not h["better_than_plain"])
    assert m["request"]["tuning"]["holdout_digest"] == h["images"]["digest"] != t["images"]["digest"]
    meta = read_metadata(onnx.load(m["path"], load_external_data=False))
    assert float(meta["accuracy_holdout_int8"]) == pytest.approx(h["int8"]["score"], abs=1e-6)
    assert float(meta["accuracy_holdout_plain_int8"]) == pytest.approx(h["plain_int8"]["score"], abs=1e-6)
    # the held-out scores are the published file's: measured again here on the same held-out images
    assert Measure(setup["fp32"], _split(setup)[1], setup["root"], backend="ort").score(m["path"])["score"] \
        == pytest.approx(h["int8"]["score"], abs=1 / 24 + 1e-9)   # one image at most between OpenVINO and ORT
    assert len(t["rounds"]) == 1 and t["rounds"][0]["real"] >= t["goal"]   # ModelOpt's model agreed: no second round


def _split(setup) -> tuple[EvalSet, EvalSet]:
    meta = read_metadata(onnx.load(str(setup["fp32"]), load_external_data=False))
    return split_eval_set(load_eval_set(setup["views"], recipe_from_metadata(meta)), 0.5)


def test_the_split_is_deterministic_evenly_spaced_and_refuses_parts_too_small():
    images = EvalSet(np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1), np.arange(40) % 4, "x", "d")
    search, held = split_eval_set(images, 0.25)
    again = split_eval_set(images, 0.25)
    assert len(held.batch) == 10 and len(search.batch) == 30
    assert np.array_equal(held.batch, again[1].batch) and held.digest == again[1].digest != search.digest
    assert sorted(np.concatenate([search.batch, held.batch]).ravel().tolist()) == list(range(40))
    assert sorted(np.bincount(held.labels, minlength=4).tolist()) == [2, 2, 3, 3]   # every class gives its share
    with pytest.raises(UserError, match=r"--holdout 0.1 of 40 images leaves 36 to search and 4 held out"):
        split_eval_set(images, 0.1)


@pytest.mark.parametrize("value, message", [
    ("0", "--holdout is the fraction of the images kept from the search, in (0, 1)"),
    ("1.5", "--holdout is the fraction of the images kept from the search, in (0, 1)"),
    ("no-such-folder", "--holdout is a fraction in (0, 1) or a folder of images; no-such-folder is neither"),
])
def test_a_bad_holdout_is_one_line_and_exit_2(setup, value, message):
    r = run(*quantize_args(setup, "--accuracy-target", 0.9, "--holdout", value), code=2)
    assert message in r.output.strip().splitlines()[-1] and "Traceback" not in r.output


def test_a_folder_too_small_to_split_or_a_holdout_that_cannot_compare_is_one_line_and_exit_2(setup, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    for i, f in enumerate(sorted(setup["views"].glob("*.png"))[:12]):
        (small / f"{i}.png").write_bytes(f.read_bytes())
    labelled = tmp_path / "labelled" / "cat"
    labelled.mkdir(parents=True)
    for f in sorted(setup["views"].glob("*.png"))[:8]:
        (labelled / f.name).write_bytes(f.read_bytes())
    cases = [(["--data", small, "--holdout", 0.5], "--holdout 0.5 of 12 images leaves 6 to search and 6 held out"),
             (["--data", setup["views"], "--holdout", setup["views"]], "is the --data folder itself"),
             (["--data", setup["views"], "--holdout", labelled.parent], "their scores would not compare"),
             (["--search", "best"], "--search is one of auto, error, greedy, got 'best'")]
    for extra, message in cases:
        r = run(*quantize_args(setup, "--accuracy-target", 0.9, *extra), code=2)
        assert message in r.output.strip().splitlines()[-1] and "Traceback" not in r.output
    for extra in (["--holdout", 0.25], ["--search", "error"]):   # without a target
        r = run(*quantize_args(setup, *extra), code=2)
        assert "--accuracy-target" in r.output.strip().splitlines()[-1] and extra[0] in r.output


def test_the_scoring_runner_is_chosen_and_recorded(setup):
    fastest = "openvino" if unavailable("openvino", "int8") is None else "ort"
    assert pick_engine(None) == fastest and pick_engine("ort") == "ort"
    assert setup["tuned"]["tuning"]["score_engine"] == {"openvino": "OpenVINO CPU", "ort": "ONNX Runtime CPU"}[fastest]
    with pytest.raises(UserError, match="--score-engine runs the search's candidates: one of openvino, ort, trt, trt-rtx"):
        pick_engine("torch")
    for name in ("trt", "trt-rtx"):   # named only, never the default; where it cannot run, the line says why
        why = unavailable(name, "int8")
        if why is not None:
            with pytest.raises(UserError, match=f"^--score-engine {name}: "):
                pick_engine(name)
    r = run(*quantize_args(setup, "--accuracy-target", 0.5, "--score-engine", "ort", "--json"))
    assert '"score_engine": "ONNX Runtime CPU"' in r.stdout


def _coarsen(path: Path, block: str, fp32: Path, factor: float = 40.0) -> None:
    """Make the activation quantizers in front of ``block``'s convolutions ``factor`` x too coarse, in place."""
    model = onnx.load(str(path))
    unit = next(u for u in units_of(fp32) if u.name == block)
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.name in unit.layers and producer[n.input[0]].op_type == "DequantizeLinear":
            name = producer[n.input[0]].input[1]
            inits[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[name]) * np.float32(factor), name))
    onnx.save(model, str(path))


def test_when_modelopts_requantization_disagrees_the_search_goes_on_from_the_real_model(setup, tmp_path, monkeypatch):
    """The first re-quantized model comes out with one more broken block than the search saw."""
    t0 = setup["tuned"]["tuning"]
    search_set = _split(setup)[0]
    measure = Measure(setup["fp32"], search_set, tmp_path, backend=pick_engine(None))
    tuned = onnx.load(setup["tuned"]["path"])
    # a block that the search's model may keep in high precision and still meet the goal: broken, keeping it repairs
    victim = next(u.name for u in units_of(setup["fp32"]) if u.kind == "block" and u.name not in t0["kept"]
                  and not any(k.startswith(u.name + ".") for k in t0["kept"])
                  and measure.score(keep_high_precision(tuned, [u]))["score"] >= t0["goal"])
    real = pipeline_module.keep_adds
    calls = []

    def disagreeing(path, fp32, kept):
        calls.append(list(kept))
        if len(calls) == 1:
            _coarsen(Path(path), victim, setup["fp32"])
        return real(path, fp32, kept)

    monkeypatch.setattr(pipeline_module, "keep_adds", disagreeing)
    m = rd.quantize(20, "int8", weights=WEIGHTS, out_dir=tmp_path, source=setup["fp32"], calib_samples=CALIB,
                    accuracy_target=TARGET, data=setup["views"], holdout=0.5, max_excluded=5)
    t = m["tuning"]
    assert len(t["rounds"]) == 2 and t["rounds"][0]["real"] < t["goal"] <= t["rounds"][1]["real"], t["rounds"]
    assert any(k == victim or k.startswith(victim + ".") for k in t["kept"]), t["kept"]
    assert t["resumed"] and any(s.get("resumed") for s in t["steps"])
    assert len(calls) == 2 and t["int8"]["score"] >= t["goal"]
    modules = [k for k in t["kept"] if not k.endswith(".add") and k != "residual-adds"]
    assert sorted(m["conversion"].get("excluded", {})) == sorted(modules)


def test_an_interrupted_search_leaves_the_previous_artifact_in_place(setup, monkeypatch):
    published = Path(setup["tuned"]["path"])
    before = sha256_file(published), read_manifest(published)
    real = Measure.score
    seen = []

    def interrupted(self, *a, **k):
        seen.append(1)
        if len(seen) == 4:   # in the middle of the ranking
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Measure, "score", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rd.quantize(20, "int8", weights=WEIGHTS, out_dir=setup["root"], calib_samples=CALIB, accuracy_target=0.99,
                    data=setup["views"], holdout=0.25, max_excluded=5, force=True)
    assert len(seen) == 4 and (sha256_file(published), read_manifest(published)) == before
    assert not [p for p in published.parent.iterdir() if p.name.endswith(".work")]
