"""``quantize --exclude``: torch module paths -> ONNX nodes INT8 PTQ leaves in high precision."""

from __future__ import annotations

import json

import onnx
import pytest
from typer.testing import CliRunner

import resnet_deploy as rd
from resnet_deploy.cli import app
from resnet_deploy.errors import UserError
from resnet_deploy.onnx_meta import read_metadata
from resnet_deploy.precision import modelopt_available
from resnet_deploy.precision.exclude import excluded_nodes, parse_exclude

needs_modelopt = pytest.mark.skipif(not modelopt_available()[0], reason="needs the precision extra (ModelOpt)")


def modules_of(path) -> dict[str, str]:
    return json.loads(read_metadata(onnx.load(str(path), load_external_data=False))["modules"])


def conv_inputs_quantized(model: onnx.ModelProto) -> dict[str, bool]:
    """Conv/Gemm node name -> whether its data input comes from a DequantizeLinear (INT8 input)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return {n.name: getattr(producer.get(n.input[0]), "op_type", None) == "DequantizeLinear"
            for n in model.graph.node if n.op_type in ("Conv", "Gemm")}


def test_the_export_names_every_layer_by_its_torch_module(exported):
    modules = modules_of(exported("resnet18")["path"])
    paths = set(modules.values())
    assert len(modules) == 21 and {"conv1", "layer1.0.conv1", "layer2.0.downsample.0", "layer4.1.conv2", "fc"} <= paths
    groups = excluded_nodes(["layer4.1", "fc", "layer1.0.conv1"], modules)
    assert len(groups["layer4.1"]) == 2 and len(groups["fc"]) == 1 and len(groups["layer1.0.conv1"]) == 1
    assert len(excluded_nodes(["layer2"], modules)["layer2"]) == 5  # 2 blocks x 2 convs + the downsample conv
    with pytest.raises(UserError, match=r"no module 'layer4\.7'.*did you mean .*layer4\.1"):
        excluded_nodes(["layer4.7"], modules)
    assert parse_exclude(" layer4.1, fc ,,layer4.1") == ["fc", "layer4.1"]


@needs_modelopt
def test_excluded_layers_keep_high_precision_inputs_and_the_rest_stays_int8(exported, tmp_path):
    src = exported("resnet18")["path"]
    plain = rd.quantize(18, "int8", out_dir=tmp_path / "a", source=src, calib_samples=8)
    kept = rd.quantize(18, "int8", out_dir=tmp_path / "b", source=src, calib_samples=8, exclude="layer4.1,layer1.0.conv1")
    q_plain = conv_inputs_quantized(onnx.load(plain["path"]))
    q_kept = conv_inputs_quantized(onnx.load(kept["path"]))
    modules = modules_of(src)
    off = {n for n, p in modules.items() if p.startswith("layer4.1.") or p == "layer1.0.conv1"}
    assert len(off) == 3 and all(q_plain[n] for n in off)  # plain INT8 quantizes them
    assert not any(q_kept[n] for n in off)  # excluded: high-precision input
    convs = [n for n in q_kept if modules.get(n, "fc") != "fc"]
    assert sum(q_kept[n] for n in convs) == sum(q_plain[n] for n in convs) - 3  # every other conv stays INT8
    assert kept["request"]["exclude"] == ["layer1.0.conv1", "layer4.1"]
    assert read_metadata(onnx.load(kept["path"]))["excluded_modules"] == "layer1.0.conv1,layer4.1"
    # the exclusions are part of the request: another set is made again, the same one reused
    again = rd.quantize(18, "int8", out_dir=tmp_path / "b", source=src, calib_samples=8, exclude="layer4.1,layer1.0.conv1")
    assert again["reused"] is True
    other = rd.quantize(18, "int8", out_dir=tmp_path / "b", source=src, calib_samples=8, exclude="layer4.1")
    assert other["reused"] is False and other["request"]["exclude"] == ["layer4.1"]


def test_exclude_errors_are_one_line(exported):
    runner = CliRunner()
    r = runner.invoke(app, ["quantize", "--depth", "18", "-p", "int8", "--exclude", "layer9.0", "--out",
                            str(exported.root), "--calib-samples", "8"])
    assert r.exit_code == 2 and "no module 'layer9.0'" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(app, ["quantize", "--depth", "18", "-p", "fp16", "--exclude", "fc", "--out", str(exported.root)])
    assert r.exit_code == 2 and "applies to --precision int8" in r.stderr
