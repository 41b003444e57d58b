"""Hostile artifacts (issue 31, item 4): names read from an ONNX or a manifest never become a path outside
``--out``, a shell word or a config line. Each case is a real file made from the CIFAR ResNet-20's export."""

from __future__ import annotations

import subprocess
from pathlib import Path

import onnx
import pytest
from cli_checks import invoke, one_line

from resnet_deploy.artifacts import artifact_path
from resnet_deploy.errors import UserError
from resnet_deploy.schema import SAFE_NAME, safe_name

PAYLOAD = "x$(touch pwned)"


@pytest.fixture(scope="module")
def resnet20(exported) -> Path:
    return Path(exported("resnet20")["path"])


def hostile(src: Path, dst: Path, *, arch: str | None = None, input_name: str | None = None,
            drop_arch: bool = False) -> Path:
    """A copy of ``src`` whose metadata arch and/or graph input name are replaced (the graph still valid)."""
    model = onnx.load(str(src))
    if drop_arch:
        kept = [p for p in model.metadata_props if p.key != "resnet_deploy.arch"]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
    if arch is not None:
        for p in model.metadata_props:
            if p.key == "resnet_deploy.arch":
                p.value = arch
    if input_name is not None:
        old = model.graph.input[0].name
        model.graph.input[0].name = input_name
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = input_name
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def everything(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_jetson_package_refuses_a_traversing_arch_and_a_shell_input_name(tmp_path, resnet20, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where `touch pwned` would land
    evil = hostile(resnet20, tmp_path / "in" / "evil.onnx", arch="../../evil_arch", input_name=PAYLOAD)
    before = everything(tmp_path)
    one_line(invoke("package", "--target", "jetson", "--onnx", evil, "--out", "jet/bundle"), 2, "refused")
    assert everything(tmp_path) == before  # nothing written anywhere (not outside --out, not in it)
    assert not list(tmp_path.parent.glob("evil_arch*")) and not list(tmp_path.rglob("pwned"))
    # each on its own is refused too, naming what
    arch_only = hostile(resnet20, tmp_path / "in" / "arch.onnx", arch="../../evil_arch")
    one_line(invoke("package", "--target", "jetson", "--onnx", arch_only, "--out", "jet/b1"), 2, "architecture")
    name_only = hostile(resnet20, tmp_path / "in" / "name.onnx", input_name=PAYLOAD)
    one_line(invoke("package", "--target", "jetson", "--onnx", name_only, "--out", "jet/b2"), 2, "input name", PAYLOAD)
    assert not (tmp_path / "jet").exists()


def test_a_hostile_file_name_makes_a_safe_bundle_whose_script_runs_nothing(tmp_path, resnet20, monkeypatch):
    """No arch in the metadata: the names come from the file's name, which is made plain before it reaches the script."""
    monkeypatch.chdir(tmp_path)
    evil = hostile(resnet20, tmp_path / "in" / f"{PAYLOAD}.onnx", drop_arch=True)
    r = invoke("package", "--target", "jetson", "--onnx", evil, "--out", "jet/bundle")
    assert r.exit_code == 0, r.output
    bundle = tmp_path / "jet" / "bundle"
    assert all(SAFE_NAME.fullmatch(p.name) or p.name.startswith(".") for p in bundle.iterdir()), sorted(bundle.iterdir())
    script = (bundle / "build_engine.sh").read_text()
    assert "$(touch" not in script
    for argv in (["--help"], ["--max-batch", "2", "--trtexec", "/bin/false"]):
        subprocess.run(["bash", str(bundle / "build_engine.sh"), *argv], cwd=tmp_path, capture_output=True, timeout=60,
                       check=False)
    assert not list(tmp_path.rglob("pwned"))
    assert {p.name for p in tmp_path.iterdir()} == {"in", "jet"}


def test_triton_refuses_names_that_would_inject_config_lines(tmp_path, resnet20):
    newline = hostile(resnet20, tmp_path / "nl.onnx", arch='resnet20\nplatform: "evil"')
    one_line(invoke("package", "--target", "triton", "--onnx", newline, "--out", tmp_path / "repo"), 2, "architecture")
    quote = hostile(resnet20, tmp_path / "q.onnx", input_name='in"put')
    one_line(invoke("package", "--target", "triton", "--onnx", quote, "--out", tmp_path / "repo"), 2, "input name")
    # --name with a trailing newline: `$` in a regular expression matches before it, fullmatch/\Z does not
    one_line(invoke("package", "--depth", 20, "--target", "triton", "--onnx", resnet20, "--name", "ok\n",
                    "--out", tmp_path / "repo"), 2, "model name")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_build_and_quantize_never_write_outside_out_for_a_hostile_arch(tmp_path, resnet20):
    evil = hostile(resnet20, tmp_path / "in" / "evil.onnx", arch="../../../evil_arch")
    out = tmp_path / "a" / "b" / "engines"
    one_line(invoke("build", "--engine", "trt-rtx", "--onnx", evil, "--out", out), 2, "architecture")
    one_line(invoke("parity", "--depth", 20, "--onnx", evil), 2, "architecture")
    assert not list(tmp_path.rglob("evil_arch*")) and not out.exists()
    # the one place artifact paths are made refuses anything but a plain name, whoever asks
    for bad in ("../x", "a/b", "x\n", "", ".hidden", "-rf", "x" * 129, "a b", "$(id)"):
        with pytest.raises(UserError):
            artifact_path(bad, "fp32", "onnx", tmp_path)
    assert safe_name("resnext101_32x8d", "arch") == "resnext101_32x8d"


def test_regular_expressions_that_check_names_anchor_at_the_very_end():
    """Every name-checking pattern in the package rejects a trailing newline (``$`` would not)."""
    from resnet_deploy.artifacts import _TEMP
    from resnet_deploy.deploy.triton import NAME_RE
    from resnet_deploy.model.densenet import _LEGACY_KEY

    assert NAME_RE.match("ok") and not NAME_RE.match("ok\n")
    assert _TEMP.match(".a.onnx.12.ab.tmp") and not _TEMP.match(".a.onnx.12.ab.tmp\n")
    assert _LEGACY_KEY.match("features.denseblock1.denselayer1.norm.1.weight")
    assert not _LEGACY_KEY.match("features.denseblock1.denselayer1.norm.1.weight\n")
    root = Path(__file__).resolve().parents[2] / "resnet_deploy"
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "re." in line and ('$"' in line or "$'" in line)]
    assert not offenders, offenders
