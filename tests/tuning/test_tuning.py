"""INT8 to an accuracy target, on the trained CIFAR-10 ResNet-20: units named by torch module,
the keep-in-high-precision surgery, the sensitivity ranking, the greedy search, and the
``diagnose`` / ``quantize --accuracy-target`` commands."""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import skimage.data
from cli_checks import run
from onnx import numpy_helper
from PIL import Image

import resnet_deploy as rd
from resnet_deploy.artifacts import Precision, read_manifest, sha256_file
from resnet_deploy.engine import BuildOptions
from resnet_deploy.errors import UserError
from resnet_deploy.onnx_meta import read_metadata
from resnet_deploy.precision import QuantizeOptions, TunedInt8
from resnet_deploy.precision import artifact as artifact_module
from resnet_deploy.preprocess import recipe_from_metadata
from resnet_deploy.runners import unavailable
from resnet_deploy.runners.ort import OrtRunner
from resnet_deploy.tuning import Measure, int8_conv_share, keep_adds, keep_high_precision, load_eval_set, rank, search, search_units, units_of
from resnet_deploy.tuning.blocks import layer_units
from resnet_deploy.tuning.error_ranked import search_by_error

search_module = importlib.import_module("resnet_deploy.tuning.search")   # the package exports the function
pytest.importorskip("modelopt.onnx.quantization", reason="needs the precision extra: pip install -e '.[precision,cpu]'")
WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "cifar10-resnet" / "resnet20-12fca82f.th"
BLOCKS = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
CALIB = 32


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict:
    """The trained ResNet-20 exported, and its plain INT8 (entropy PTQ on 32 bundled-photo views)."""
    root = tmp_path_factory.mktemp("tuning")
    fp32 = rd.export(20, weights=WEIGHTS, out_dir=root)
    int8 = rd.quantize(20, "int8", weights=WEIGHTS, out_dir=root, calib_samples=CALIB)
    return {"root": root, "fp32": Path(fp32["path"]), "int8": Path(int8["path"])}


@pytest.fixture(scope="module")
def measure(plain, tmp_path_factory) -> Measure:
    meta = read_metadata(onnx.load(str(plain["fp32"]), load_external_data=False))
    images = load_eval_set(None, recipe_from_metadata(meta), calib_samples=CALIB)
    return Measure(plain["fp32"], images, tmp_path_factory.mktemp("measure"))


def break_block(model: onnx.ModelProto, units: list, block: str, factor: float = 40.0) -> onnx.ModelProto:
    """A copy whose activation quantizers in front of ``block``'s convolutions are ``factor`` x too coarse."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    unit = next(u for u in units if u.name == block)
    producer = {o: n for n in broken.graph.node for o in n.output}
    inits = {i.name: i for i in broken.graph.initializer}
    scales = {producer[n.input[0]].input[1] for n in broken.graph.node
              if n.name in unit.layers and producer[n.input[0]].op_type == "DequantizeLinear"}
    assert scales
    for name in scales:
        arr = numpy_helper.to_array(inits[name]) * np.float32(factor)
        inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), name))
    return broken


def test_units_are_the_stem_the_residual_blocks_and_the_classifier(plain):
    units = units_of(plain["fp32"])
    assert [u.name for u in units] == ["conv1", *BLOCKS, "linear"]
    assert [u.kind for u in units] == ["stem"] + ["block"] * 9 + ["classifier"]
    block = next(u for u in units if u.name == "layer2.0")
    assert sorted(block.layers.values()) == ["layer2.0.conv1", "layer2.0.conv2"] and len(block.adds) == 1


def test_keeping_blocks_in_high_precision_matches_modelopt_exclude(plain, measure, tmp_path):
    """The search's fast surgery gives the same network ModelOpt makes with ``--exclude`` (the artifact)."""
    surgery = keep_high_precision(onnx.load(str(plain["int8"])), [u for u in units_of(plain["fp32"])
                                                                   if u.name in ("layer2.1", "conv1")])
    onnx.save(surgery, str(tmp_path / "surgery.onnx"))
    excluded = rd.quantize(20, "int8", weights=WEIGHTS, out_dir=tmp_path / "x", source=plain["fp32"],
                           calib_samples=CALIB, exclude="layer2.1,conv1")
    x = measure.images.batch[:16]
    with OrtRunner(tmp_path / "surgery.onnx") as a, OrtRunner(excluded["path"]) as b:
        assert np.abs(a.infer(x) - b.infer(x)).max() < 1e-5
    plain_int8, convs = int8_conv_share(onnx.load(str(plain["int8"])))
    assert int8_conv_share(surgery) == (plain_int8 - 3, convs)  # the stem conv and the block's two convs


@pytest.mark.parametrize("layer", ["layer3.0.conv1", "layer3.0.conv2"])
def test_surgery_matches_modelopt_exclude_on_one_layer_of_a_block_with_a_padded_shortcut(plain, measure, tmp_path, layer):
    """``layer3.0``'s shortcut is ``Slice -> Pad``, re-quantized after its Pad at another scale than the block's input:
    with conv1 kept, ModelOpt leaves the block's input unquantized for the shortcut too; with conv2 kept, it leaves the
    Add's shortcut input unquantized (it quantizes it only to fuse the Add with an INT8 convolution)."""
    int8 = onnx.load(str(plain["int8"]))
    unit = next(sub for u in units_of(plain["fp32"]) for sub in layer_units(u, int8) if sub.name == layer)
    onnx.save(keep_high_precision(int8, [unit]), str(tmp_path / "surgery.onnx"))
    excluded = rd.quantize(20, "int8", weights=WEIGHTS, out_dir=tmp_path / "x", source=plain["fp32"],
                           calib_samples=CALIB, exclude=layer)
    x = measure.images.batch[:16]
    with OrtRunner(tmp_path / "surgery.onnx") as a, OrtRunner(excluded["path"]) as b:
        assert np.abs(a.infer(x) - b.infer(x)).max() < 1e-5


def test_surgery_matches_modelopt_exclude_on_a_block_with_a_downsample_conv(tmp_path):
    """ImageNet ResNet-18: ``layer2.0`` has a projection shortcut (``layer2.0.downsample.0``) the CIFAR nets lack."""
    fp32 = rd.export(18, out_dir=tmp_path)
    int8 = rd.quantize(18, "int8", out_dir=tmp_path, calib_samples=8, min_calib_images=1)
    block = next(u for u in units_of(fp32["path"]) if u.name == "layer2.0")
    assert "layer2.0.downsample.0" in block.layers.values()
    onnx.save(keep_high_precision(onnx.load(int8["path"]), [block]), str(tmp_path / "surgery.onnx"))
    excluded = rd.quantize(18, "int8", out_dir=tmp_path / "x", source=fp32["path"], calib_samples=8,
                           min_calib_images=1, exclude="layer2.0")
    meta = read_metadata(onnx.load(fp32["path"], load_external_data=False))
    x = load_eval_set(None, recipe_from_metadata(meta), calib_samples=4).batch
    with OrtRunner(tmp_path / "surgery.onnx") as a, OrtRunner(excluded["path"]) as b:
        assert np.abs(a.infer(x) - b.infer(x)).max() < 1e-4
    assert int8_conv_share(onnx.load(str(tmp_path / "surgery.onnx"))) == int8_conv_share(onnx.load(excluded["path"]))


def test_ranking_names_module_paths_and_a_broken_block_comes_first(plain, measure):
    int8 = onnx.load(str(plain["int8"]))
    units = units_of(plain["fp32"])
    plain_score = measure.score(int8, "plain")
    before = rank(measure, int8, units, plain_score)
    assert {r["unit"] for r in before} <= {"conv1", *BLOCKS, "linear"} and len(before) >= 10
    target = next(b for b in BLOCKS if b != before[0]["unit"])
    broken = break_block(int8, units, target)
    broken_score = measure.score(broken, "broken")
    assert broken_score["score"] < plain_score["score"]
    after = rank(measure, broken, units, broken_score)
    assert after[0]["unit"] == target, [(r["unit"], r["score"]) for r in after]
    assert after[0]["score"] > max(r["score"] for r in after[1:])


def test_search_stops_as_soon_as_the_target_holds(plain, measure):
    int8 = onnx.load(str(plain["int8"]))
    units = units_of(plain["fp32"])
    broken = break_block(int8, units, "layer2.2")
    n0 = measure.evaluations
    result = search(measure, broken, units, 0.9, max_excluded=5)
    assert result["met"] and result["kept"] == ["layer2.2"] and len(result["steps"]) == 1
    # both its convolutions' inputs are broken: the final pass tries each back in INT8 and keeps both out
    assert [(s["back_to_int8"], s["accepted"]) for s in result["put_back"]] == [("layer2.2.conv1", False),
                                                                               ("layer2.2.conv2", False)]
    # plain, one per candidate in the ranking (the first step is the ranking's own), the final pass: nothing more
    assert measure.evaluations - n0 == 1 + len(result["ranking"]) + 2
    assert result["final"]["score"] >= 0.9 * measure.reference
    # already met by plain INT8: no ranking at all
    n0 = measure.evaluations
    easy = search(measure, int8, units, 0.5)
    assert easy["met"] and easy["kept"] == [] and easy["ranking"] == [] and measure.evaluations - n0 == 1


def test_the_final_pass_puts_back_into_int8_the_layers_the_goal_does_not_need(plain, measure):
    """Only ``layer2.2.conv2``'s input quantizer broken: the search keeps the block, the final pass gives conv1 back."""
    int8 = onnx.load(str(plain["int8"]))
    units = units_of(plain["fp32"])
    block = next(u for u in units if u.name == "layer2.2")
    conv2 = next(n for n, p in block.layers.items() if p.endswith("conv2"))
    broken = break_block(int8, [replace(block, name="only-conv2", layers={conv2: block.layers[conv2]})], "only-conv2")
    result = search(measure, broken, units, 0.9, max_excluded=5)
    assert result["met"] and result["steps"][-1]["kept"] == ["layer2.2"] and result["kept"] == ["layer2.2.conv2"]
    assert [(s["back_to_int8"], s["accepted"]) for s in result["put_back"]] == [("layer2.2.conv1", True),
                                                                               ("layer2.2.conv2", False)]
    assert result["final"]["score"] >= 0.9 * measure.reference


def test_where_whole_blocks_run_out_the_layer_pass_keeps_single_layers(plain, measure, monkeypatch):
    """Only ``layer2.2.conv2``'s input broken, and no block in the ranking (as when every block was tried and none
    improved the score): the layer pass tries each layer and Add, keeps the broken layer, and meets the goal."""
    int8 = onnx.load(str(plain["int8"]))
    units = units_of(plain["fp32"])
    block = next(u for u in units if u.name == "layer2.2")
    conv2 = next(n for n, p in block.layers.items() if p.endswith("conv2"))
    broken = break_block(int8, [replace(block, name="only-conv2", layers={conv2: block.layers[conv2]})], "only-conv2")
    monkeypatch.setattr(search_module, "rank", lambda *a, **k: [])
    n0 = measure.evaluations
    result = search(measure, broken, units, 0.9, max_excluded=5)
    assert result["met"] and result["ranking"] == [] and result["steps"] == []
    assert [s["kept"] for s in result["layer_steps"]] == [["layer2.2.conv2"]]
    assert result["kept"] == ["layer2.2.conv2"] and result["final"]["score"] >= 0.9 * measure.reference
    # plain, one evaluation per layer of the network (19 convolutions; the classifier is not quantized), the final pass
    assert result["layer_steps"][0]["tried"] == 19 and measure.evaluations - n0 == 1 + 19 + 1
    # none may be kept: the layer pass does not run, not even for the residual Adds (which do not count against it)
    with pytest.raises(UserError, match=r"0 unit\(s\) kept .*--max-excluded 0 reached"):
        search(measure, broken, search_units(plain["fp32"]), 0.9, max_excluded=0)


def test_the_error_ranked_search_keeps_the_layer_that_carries_the_error(plain, measure):
    """Only ``layer2.2.conv2``'s input broken: ranked by the logits' error each layer leaves, it comes first, is kept
    first, and meets the goal alone; the final pass tries it back in INT8 and keeps it out."""
    int8 = onnx.load(str(plain["int8"]))
    units = units_of(plain["fp32"])
    block = next(u for u in units if u.name == "layer2.2")
    conv2 = next(n for n, p in block.layers.items() if p.endswith("conv2"))
    broken = break_block(int8, [replace(block, name="only-conv2", layers={conv2: block.layers[conv2]})], "only-conv2")
    n0 = measure.evaluations
    result = search_by_error(measure, broken, units, 0.9)
    assert result["search"] == "error-ranked" and result["ranking"][0]["unit"] == "layer2.2.conv2"
    assert [r["rel_l2"] for r in result["ranking"]] == sorted(r["rel_l2"] for r in result["ranking"])
    assert result["met"] and result["kept"] == ["layer2.2.conv2"] and [s["kept"] for s in result["steps"]] == [["layer2.2.conv2"]]
    assert [(s["back_to_int8"], s["accepted"]) for s in result["put_back"]] == [("layer2.2.conv2", False)]
    # plain, one per layer (19 convolutions), none more to keep (the ranking measured it), the final pass
    assert len(result["ranking"]) == 19 and measure.evaluations - n0 == 1 + 19 + 1


def test_the_error_ranked_search_refuses_a_result_with_under_half_the_convolutions_int8(plain, measure):
    int8 = onnx.load(str(plain["int8"]))
    units = units_of(plain["fp32"])
    broken = int8
    for b in BLOCKS:
        broken = break_block(broken, units, b)
    with pytest.raises(UserError, match=r"error-ranked search meets it only with \d+ of 19 convolutions left INT8 .*under half"):
        search_by_error(measure, broken, units, 0.9, max_excluded=99)


def test_kept_residual_adds_read_fp32_while_every_convolution_stays_int8(plain, tmp_path):
    path = tmp_path / "adds.int8.onnx"
    path.write_bytes(plain["int8"].read_bytes())
    nodes = keep_adds(path, plain["fp32"], ["conv1", "layer2.1.add"])
    model = onnx.load(str(path))
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    add = next(n for n in model.graph.node if n.name in nodes)
    assert len(nodes) == 1 and "DequantizeLinear" not in [producer.get(i) for i in add.input]
    assert int8_conv_share(model) == int8_conv_share(onnx.load(str(plain["int8"])))   # no conv lost its INT8 input
    others = [n for n in model.graph.node if n.op_type == "Add" and n.name not in nodes]
    assert all("DequantizeLinear" in [producer.get(i) for i in n.input] for n in others)


def test_int8_with_every_residual_add_kept_builds_with_tensorrt_rtx(plain, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")
    path = tmp_path / "resnet20.int8.onnx"
    path.write_bytes(plain["int8"].read_bytes())
    assert len(keep_adds(path, plain["fp32"], ["residual-adds"])) == 9
    e = rd.build(None, onnx=path, precision="int8", out_dir=tmp_path, options=BuildOptions())
    net = e["layer_precision"].get("network", e["layer_precision"])
    assert net["implied_precision"] == "int8" and net["output_dtypes"].get("INT8", 0) >= 15 and net["qdq_layers"] >= 30


def test_a_target_that_cannot_be_met_fails_saying_how_far_it_got(plain, measure):
    units = units_of(plain["fp32"])
    broken = break_block(onnx.load(str(plain["int8"])), units, "layer2.2")
    with pytest.raises(UserError, match=r"--accuracy-target 1 not met: .* 0 unit\(s\) kept .*--max-excluded 0 reached"):
        search(measure, broken, units, 1.0, max_excluded=0)
    # two blocks broken, one may be kept: it keeps exactly one, and says the limit stopped it
    twice = break_block(broken, units, "layer1.1")
    with pytest.raises(UserError, match=r"with 1 unit\(s\) kept in high precision \((layer2\.2|layer1\.1)\) .*"
                                        r"--max-excluded 1 reached: raise --max-excluded"):
        search(measure, twice, units, 1.0, max_excluded=1)
    with pytest.raises(UserError, match=r"in \(0, 1\]"):
        search(measure, broken, units, 1.5)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A small labelled folder named after CIFAR-10 classes: crops of the cat photograph, and of the rocket."""
    root = tmp_path_factory.mktemp("labelled")
    for name, img, n in (("cat", skimage.data.chelsea(), 6), ("airplane", skimage.data.rocket(), 4)):
        (root / name).mkdir()
        h, w = img.shape[:2]
        for i in range(n):
            s = min(h, w) * (0.6 + 0.08 * i)
            x, y = int((w - s) * i / max(n - 1, 1)), int((h - s) / 2)
            Image.fromarray(img).crop((x, y, x + int(s), y + int(s))).save(root / name / f"{i}.png")
    return root


def test_diagnose_reports_every_block_by_module_path_with_a_plot(plain, photos, tmp_path):
    png = tmp_path / "diag.png"
    r = run("diagnose", "--depth", 20, "--weights", WEIGHTS, "--out", plain["root"], "--calib-samples", CALIB,
            "--data", photos, "--plot", png, "--json")
    d = json.loads(r.stdout)
    assert d["metric"] == "top-1" and d["images"]["images"] == 10 and d["images"]["labelled"]
    assert [b["unit"] for b in d["blocks"]] == ["conv1", *BLOCKS, "linear"]
    assert all(0 <= b["rel_l2"] < 1 and 0 < b["cosine"] <= 1 + 1e-6 for b in d["blocks"])
    assert {"layer2.0.conv1", "layer2.0.conv2", "layer3.2.conv2", "linear"} <= {x["layer"] for x in d["layers"]}
    assert {x["unit"] for x in d["ranking"]} <= {"conv1", *BLOCKS} and len(d["ranking"]) >= 9
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no labels: agreement with FP32 stands in, and the table says so
    r = run("diagnose", "--depth", 20, "--weights", WEIGHTS, "--out", plain["root"], "--calib-samples", CALIB)
    assert "no labels, so agreement with FP32 top-1 stands in for accuracy" in " ".join(r.output.split())


def test_quantize_to_a_target_records_it_and_reuses_the_result(plain, tmp_path):
    args = ["quantize", "--depth", 20, "--weights", WEIGHTS, "-p", "int8", "--calib-samples", CALIB,
            "--out", tmp_path, "--accuracy-target", 0.99, "--max-excluded", 4, "--score-engine", "ort", "--search", "greedy",
            "--json"]
    m = json.loads(run(*args).stdout)
    t = m["tuning"]
    assert t["plain_int8"]["score"] < t["goal"] <= t["int8"]["score"], t  # plain INT8 misses, the tuned one meets
    # what the greedy kept (units), then the final pass put back what the goal no longer needs (layers, Adds)
    units = [s for s in t["steps"] if s["accepted"]][-1]["kept"]
    assert 1 <= len(units) <= 4 and set(units) <= {"conv1", *BLOCKS, "residual-adds"}
    parts = {u: [k for k in t["kept"] if k == u or k.startswith(u + ".") or (u == "residual-adds" and k.endswith(".add"))]
             for u in units}
    assert sorted(sum(parts.values(), [])) == sorted(t["kept"]) and all(parts.values())
    assert len(t["put_back"]) >= len(units) and t["layer_steps"] == []   # whole blocks sufficed: no layer pass
    assert t["search"] == "greedy" and t["fallback"] is None and m["request"]["tuning"]["search"] == "greedy"
    modules = [k for k in t["kept"] if not k.endswith(".add") and k != "residual-adds"]
    assert sorted(m["conversion"].get("excluded", {})) == sorted(modules) and m["request"]["tuning"]["accuracy_target"] == 0.99
    meta = read_metadata(onnx.load(m["path"]))
    assert meta["tuned_modules"] == ",".join(t["kept"]) and meta["accuracy_target"] == "0.99"
    assert float(meta["accuracy_int8"]) == pytest.approx(t["int8"]["score"], abs=1e-6)
    int8_convs, convs = int8_conv_share(onnx.load(m["path"]))
    assert 2 * int8_convs >= convs  # still an INT8 model
    again = json.loads(run(*args).stdout)
    assert again["reused"] and again["sha256"] == m["sha256"]
    # a later target that fails leaves this tuned INT8 (and its manifest) as it was
    run("quantize", "--depth", 20, "--weights", WEIGHTS, "-p", "int8", "--calib-samples", CALIB, "--out", tmp_path,
        "--accuracy-target", 1.0, "--max-excluded", 0, code=2)
    assert sha256_file(Path(m["path"])) == m["sha256"] and read_manifest(Path(m["path"]))["tuning"]["kept"] == t["kept"]
    # other images (a subset of them) are another request: measured again, not reused
    other = json.loads(run(*args, "--limit", 16).stdout)
    assert not other["reused"] and other["request"]["tuning"]["data_digest"] != m["request"]["tuning"]["data_digest"]
    assert other["tuning"]["images"]["images"] == 16


def test_a_target_plain_int8_meets_publishes_it_without_quantizing_again(plain, tmp_path, monkeypatch):
    calls = []
    real = artifact_module.quantize_int8
    monkeypatch.setattr(artifact_module, "quantize_int8", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = rd.quantize(20, "int8", weights=WEIGHTS, out_dir=tmp_path, calib_samples=CALIB, accuracy_target=0.5)
    t = m["tuning"]
    assert t["plain_int8"]["score"] >= t["goal"] and t["kept"] == [] and t["ranking"] == []
    assert len(calls) == 1 and t["evaluations"] == 2  # one ModelOpt run; scored as plain, then checked once published
    tuned, first = onnx.load(m["path"]), onnx.load(str(plain["int8"]))
    assert tuned.graph.SerializeToString() == first.graph.SerializeToString()  # the plain network, as made
    meta = read_metadata(tuned)
    assert meta["tuned_modules"] == "" and meta["accuracy_target"] == "0.5"
    # the method as the user spells it: the same request, reused
    spelled = [rd.quantize(20, "int8", weights=WEIGHTS, out_dir=tmp_path / "m", calib_samples=CALIB, method="MAX",
                           accuracy_target=0.5) for _ in range(2)]
    assert not spelled[0]["reused"] and spelled[1]["reused"] and spelled[1]["request"]["method"] == "minmax"


def test_a_rejected_tuned_onnx_is_not_published(plain, tmp_path):
    def reject(path):
        raise UserError("below the goal")

    with pytest.raises(UserError, match="below the goal"):
        artifact_module.make_precision_onnx(plain["fp32"], Precision.INT8, QuantizeOptions(calib_samples=CALIB),
                                            out_dir=tmp_path, tuned=TunedInt8(accept=reject))
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("*.json"))


def test_diagnose_works_on_a_fixed_batch_export(tmp_path):
    rd.export(20, weights=WEIGHTS, out_dir=tmp_path, batch=3)  # 3 does not divide the 8-image chunks or the 10 images
    r = run("diagnose", "--depth", 20, "--weights", WEIGHTS, "--out", tmp_path, "--calib-samples", 12, "--limit", 10,
            "--json")
    d = json.loads(r.stdout)
    assert d["images"]["images"] == 10 and len(d["blocks"]) == 11 and all(np.isfinite(b["rel_l2"]) for b in d["blocks"])


def test_diagnose_refuses_an_int8_onnx_not_made_from_this_export(plain, tmp_path):
    foreign = onnx.load(str(plain["int8"]))
    next(n for n in foreign.graph.node if n.op_type == "Conv").name = "/other/Conv"
    onnx.save(foreign, str(tmp_path / "foreign.int8.onnx"))
    r = run("diagnose", "--depth", 20, "--weights", WEIGHTS, "--out", plain["root"], "--calib-samples", CALIB,
            "--onnx", tmp_path / "foreign.int8.onnx", code=2)
    line = r.output.strip().splitlines()[-1]
    assert "not quantized from it" in line and "Traceback" not in r.output


def test_a_target_out_of_reach_exits_2_with_one_line(plain, tmp_path):
    r = run("quantize", "--depth", 20, "--weights", WEIGHTS, "-p", "int8", "--calib-samples", CALIB, "--out", tmp_path,
            "--accuracy-target", 1.0, "--max-excluded", 0, code=2)
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: --accuracy-target 1 not met") and "plain INT8" in line and "Traceback" not in r.output
    r = run("quantize", "--depth", 20, "--weights", WEIGHTS, "-p", "int8", "--out", tmp_path, "--data", tmp_path, code=2)
    assert "--accuracy-target" in r.output.strip().splitlines()[-1]
    r = run("quantize", "--depth", 20, "--weights", WEIGHTS, "-p", "fp16", "--out", tmp_path, "--accuracy-target", 0.9,
            code=2)
    assert "int8" in r.output.strip().splitlines()[-1]


@pytest.mark.parametrize("target, search, found", [(0.99, "auto", "greedy"), (0.95, "error", "error-ranked")])
def test_the_tuned_int8_onnx_builds_with_tensorrt_rtx_and_keeps_int8_layers(plain, tmp_path, target, search, found):
    """Both searches' results build; at 0.99 on these 32 images the error-ranked search runs out of --max-excluded
    and auto goes on with the greedy search, saying so."""
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx)")
    m = json.loads(run("quantize", "--depth", 20, "--weights", WEIGHTS, "-p", "int8", "--calib-samples", CALIB,
                       "--out", tmp_path, "--accuracy-target", target, "--max-excluded", 4, "--score-engine", "ort",
                       "--search", search, "--json").stdout)
    t = m["tuning"]
    assert t["search"] == found and t["kept"] and bool(t["fallback"]) == (search == "auto"), t.get("fallback")
    e = json.loads(run("build", "--depth", 20, "-p", "int8", "--engine", "trt-rtx", "--out", tmp_path,
                       "--weights", WEIGHTS, "--json").stdout)
    assert e["source_metadata"]["tuned_modules"] == ",".join(m["tuning"]["kept"])
    net = e["layer_precision"].get("network", e["layer_precision"])
    assert net["implied_precision"] == "int8" and net["output_dtypes"].get("INT8", 0) >= 15 and net["qdq_layers"] >= 30


@pytest.mark.parametrize("flavour", ["trt", "trt-rtx"])
def test_candidates_score_on_tensorrt_engines_built_from_them(plain, measure, tmp_path, flavour):
    why = unavailable(flavour, "int8")
    if why is not None:
        pytest.skip(f"{flavour} cannot run here: {why}")
    trt = Measure(plain["fp32"], measure.images, tmp_path, backend=flavour)
    s = trt.score(plain["int8"], "plain INT8")
    assert trt.engine["backend"] == flavour and trt.reference == 1.0 and s["finite"]
    assert abs(s["score"] - measure.score(plain["int8"])["score"]) <= 0.1   # another runtime: a few images may flip
    assert sorted(p.suffix for p in tmp_path.glob(f"*.{flavour}.engine")) == [".engine", ".engine"]   # FP32 and the candidate


def test_diagnose_scores_on_the_engine_named_and_says_which(plain, photos):
    pytest.importorskip("openvino", reason="needs OpenVINO: pip install -e '.[openvino]'")
    kw = {"weights": WEIGHTS, "out_dir": plain["root"], "calib_samples": CALIB, "data": photos}
    ov = rd.api.diagnose(20, engine="openvino", **kw)
    assert ov["engine"]["backend"] == "openvino" and ov["engine"]["device"] == "CPU" and ov["engine"]["version"]
    assert ov["engine"]["inference_precision"] == "fp32"  # INT8 kernels, the rest FP32 (docs/cpu.md)
    assert [b["unit"] for b in ov["blocks"]] == ["conv1", *BLOCKS, "linear"] and len(ov["ranking"]) >= 9
    ort = Measure(plain["fp32"], load_eval_set(photos, recipe_from_metadata(read_metadata(plain["fp32"]))),
                  plain["root"] / "m-ort")
    assert ort.engine["backend"] == "ort"
    # the same INT8 model scored on two runtimes: close errors, not the same numbers
    assert ov["int8"]["rel_l2"] == pytest.approx(ort.score(plain["int8"])["rel_l2"], rel=0.3)
    assert ov["int8"]["rel_l2"] != ort.score(plain["int8"])["rel_l2"]


def test_diagnose_refuses_an_engine_that_cannot_score_onnx_here(plain, monkeypatch):
    r = run("diagnose", "--depth", 20, "--weights", WEIGHTS, "--out", plain["root"], "--engine", "torch", code=2)
    assert "diagnose scores ONNX graphs" in r.output and "ort, ort-cuda, openvino" in r.output
    monkeypatch.setitem(sys.modules, "openvino", None)  # as where it is not installed
    r = run("diagnose", "--depth", 20, "--weights", WEIGHTS, "--out", plain["root"], "--engine", "openvino", code=3)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "openvino is unavailable" in lines[0] and "resnet-deploy[openvino]" in lines[0]
