"""ResNet's relatives through the commands: every command's --depth takes their names, bench sweeps a family.

GoogLeNet (13 M parameters, 1.5 GMACs) carries the pipeline here: export, parity, predict, bench and a
Jetson bundle; it has the concatenations, the in-graph input transform and the auxiliary classifiers
that are in the state_dict but not in the graph. The other families' engines are built in
tests/engine/test_family_engines.py and their INT8 placement is checked in tests/precision/test_placement.py.
"""

import json

import pytest
import skimage.data
from PIL import Image
from test_cli import invoke, one_line_error


@pytest.mark.parametrize("arch, params", [("seresnet101", 49_326_872), ("densenet201", 20_013_928),
                                          ("vgg19_bn", 143_678_248), ("alexnet", 61_100_840)])
def test_info_json_for_each_family(arch, params):
    r = invoke("info", "--depth", arch, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["arch"] == arch and d["parameters"] == params and d["stages"]["classifier" if arch[0] in "dva" else "fc"][-1] == 1000


def test_googlenet_through_the_pipeline(exported, tmp_path):
    root = exported.root
    m = exported("googlenet")
    assert m["batchnorm_nodes"] == 0 and m["batch"] == "dynamic"
    r = invoke("parity", "--depth", "googlenet", "--out", root, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["passed"]
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    r = invoke("predict", photo, "--depth", "googlenet", "--out", root, "--json")
    assert r.exit_code == 0, r.output
    top = json.loads(r.stdout)
    assert top
    # bench --depth takes a family name (googlenet's has one member) and writes its report
    r = invoke("bench", "--depth", "googlenet", "--engine", "ort", "--batch", "1", "--min-time", "0.2", "--min-iters", "2",
               "--no-bare", "--artifacts", root, "--out", tmp_path / "bench", "--run-id", "fam", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert [(row["arch"], row["status"]) for row in rows] == [("googlenet", "ok")] and rows[0]["parity_passed"]
    r = invoke("package", "--target", "jetson", "--depth", "googlenet", "--precision", "fp32", "--artifacts", root,
               "--out", tmp_path / "bundle", "--json")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "bundle" / "googlenet.fp32.onnx").is_file()


def test_a_family_or_a_typo_is_one_line_where_one_network_is_meant():
    assert "'densenet' is a family" in one_line_error(invoke("export", "--depth", "densenet"))
    assert "unknown depth or architecture 'vgg17'" in one_line_error(invoke("bench", "--depth", "vgg,vgg17"))
