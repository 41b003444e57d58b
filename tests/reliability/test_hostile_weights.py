"""Garbage weights (issue 31, items 7 and 10): tensors a network cannot take are refused in one line naming the
tensor and what is wrong, never cast silently, never a traceback; a pickled nn.Module is told to save a state_dict."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import resnet_deploy as rd
from resnet_deploy.cli import app
from resnet_deploy.errors import UserError
from resnet_deploy.model import build_network
from resnet_deploy.model.weights import read_state_dict

runner = CliRunner()
KEY = "conv1.weight"  # a ResNet-20 tensor [16, 3, 3, 3]


@pytest.fixture(scope="module")
def good() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_network("resnet20").state_dict()


def with_tensor(good, t: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**good, KEY: t}


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool, torch.complex64])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_non_floating_tensors_are_refused_naming_tensor_and_dtype(tmp_path, good, dtype, fmt):
    state = with_tensor(good, torch.ones(16, 3, 3, 3, dtype=dtype))
    path = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        try:
            save_file(state, str(path))
        except Exception as e:  # noqa: BLE001 - a dtype safetensors cannot hold at all
            pytest.skip(f"safetensors cannot store {dtype}: {e}")
    with pytest.raises(UserError, match=rf"'{KEY}' has dtype {str(dtype).replace('torch.', '')}") as e:
        read_state_dict(path)
    assert "\n" not in str(e.value)


def test_every_floating_dtype_and_the_bn_step_counter_still_load(tmp_path, good):
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in good.items()}, tmp_path / "w.pth")
        rd.create_model(20, weights=tmp_path / "w.pth")
    assert any(k.endswith("num_batches_tracked") and v.dtype == torch.int64 for k, v in good.items())


def test_sparse_quantized_and_meta_tensors_are_one_line(tmp_path, good):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_tensor(torch.randn(16, 3, 3, 3), 0.1, 0, torch.qint8)
    cases = {"sparse_coo": torch.randn(16, 3, 3, 3).to_sparse(), "sparse_csr": torch.randn(48, 9).to_sparse_csr(),
             "quantized": quantized, "meta": torch.empty(16, 3, 3, 3, device="meta")}
    for what, t in cases.items():
        torch.save(with_tensor(good, t), tmp_path / f"{what}.pth")
        with pytest.raises(UserError, match=rf"'{KEY}' is .*{what.split('_')[0]}") as e:
            read_state_dict(tmp_path / f"{what}.pth")
        assert "\n" not in str(e.value)
    # through the command line: one line, exit 2, no traceback
    r = runner.invoke(app, ["export", "--depth", "20", "--weights", str(tmp_path / "sparse_coo.pth"), "--out",
                            str(tmp_path / "e")])
    assert r.exit_code == 2 and "Traceback" not in r.output and "sparse" in r.stderr, r.output
    assert not (tmp_path / "e").exists()


def test_a_pickled_module_is_told_to_save_a_state_dict(tmp_path):
    torch.save(build_network("resnet20"), tmp_path / "model.pth")  # torch.save(model), not model.state_dict()
    with pytest.raises(UserError, match=r"pickled model.*state_dict") as e:
        read_state_dict(tmp_path / "model.pth")
    assert "\n" not in str(e.value)
    # and other pickled objects: named, not executed
    torch.save({"conv1.weight": torch.zeros(1), "extra": UserError("x")}, tmp_path / "obj.pth")
    with pytest.raises(UserError, match=r"pickled Python objects \(resnet_deploy.errors.UserError\)"):
        read_state_dict(tmp_path / "obj.pth")
    r = runner.invoke(app, ["export", "--depth", "20", "--weights", str(tmp_path / "model.pth"), "--out",
                            str(tmp_path / "e")])
    assert r.exit_code == 2 and "state_dict" in r.stderr and "Traceback" not in r.output, r.output
