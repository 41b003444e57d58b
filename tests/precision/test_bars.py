"""The parity bars: one table in code, quoted by README and docs, set on trained networks.

On the trained CIFAR-10 ResNets (tests/data/cifar10-resnet/) a correct FP16 and INT8 model must
pass, and the moderately broken INT8 models of the precision issue must fail: every activation
scale six times too coarse, and one convolution carrying noise as large as its weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resnet_deploy import api
from resnet_deploy.api import quantize as ensure_precision
from resnet_deploy.compare import THRESHOLDS
from resnet_deploy.precision import faults

pytest.importorskip("modelopt.onnx.quantization", reason="needs the precision extra: pip install -e '.[precision,cpu]'")
ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "tests" / "data" / "cifar10-resnet"
CHECKPOINTS = {20: CIFAR / "resnet20-12fca82f.th", 56: CIFAR / "resnet56-4bfd9763.th"}


def quoted_bars(path: Path) -> dict[str, tuple[float, float, float]]:
    """``{precision: (rel L2, top-1, cosine)}`` from the first bars table of a Markdown file."""
    text = path.read_text()
    i = text.index("| precision | relative L2 at most | top-1 agreement at least | mean cosine at least |")
    rows = {}
    for line in text[i:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = (float(cells[1]), float(cells[2].rstrip("%")) / 100, float(cells[3]))
    return rows


@pytest.mark.parametrize("doc", ["README.md", "docs/precision.md"])
def test_the_documents_quote_the_bars_in_code(doc):
    want = {p: (t.rel_l2, t.top1, t.cosine) for p, t in THRESHOLDS.items()}
    assert quoted_bars(ROOT / doc) == want


def test_the_measured_table_is_the_one_for_these_bars():
    """benchmarks/precision-bars/results.md was made with the bars in code (rerun it after changing them)."""
    text = (ROOT / "benchmarks" / "precision-bars" / "results.md").read_text()
    i = text.index("| precision | relative L2 at most | mean cosine at least | top-1 agreement at least |")
    rows = {}
    for line in text[i:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        p, rel, cos, top1 = (c.strip() for c in line.strip("|").split("|"))
        rows[p] = (float(rel), float(top1.rstrip("%")) / 100, float(cos))
    assert rows == {p: (t.rel_l2, t.top1, t.cosine) for p, t in THRESHOLDS.items()}
    assert "the bars pass every correct trained model and fail every broken one" in text
    assert not re.search(r"\+dirty", text)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """``{depth: (out_dir, int8 manifest)}``: the trained CIFAR ResNets exported, FP16 and INT8 as the CLI makes them."""
    out = tmp_path_factory.mktemp("cifar")
    made = {}
    for depth, ckpt in CHECKPOINTS.items():
        ensure_precision(depth, "fp16", out_dir=out, weights=ckpt)
        made[depth] = (out, ensure_precision(depth, "int8", out_dir=out, weights=ckpt))
    return made


@pytest.mark.parametrize("depth", sorted(CHECKPOINTS))
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_correct_models_of_trained_networks_pass(cifar, depth, precision):
    out, _ = cifar[depth]
    r = api.parity(depth, precision=precision, weights=CHECKPOINTS[depth], out_dir=out)
    assert r["passed"], r["failures"]
    assert r["n"] == 68 and r["notes"] == []


@pytest.mark.parametrize("depth", sorted(CHECKPOINTS))
@pytest.mark.parametrize("fault", ["scales x6", "noisy conv"])
def test_moderately_broken_int8_models_fail(cifar, depth, fault, tmp_path):
    out, int8 = cifar[depth]
    broken = tmp_path / f"resnet{depth}.int8.onnx"
    if fault == "scales x6":
        assert faults.coarsen_activation_scales(int8["path"], broken, 6.0) > 10
    else:
        faults.perturb_conv_weights(int8["path"], broken, rel_std=1.0)
    r = api.parity(depth, precision="int8", weights=CHECKPOINTS[depth], artifact=broken)
    assert not r["passed"], (fault, r["rel_l2"], r["cosine"], r["top1_agreement"])
    assert any(f.startswith("cosine") for f in r["failures"]), r["failures"]
