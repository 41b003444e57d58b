"""TensorRT-RTX builds one network of each of ResNet's relatives and predecessors, on the CPU.

INT8 where the family brings a Q/DQ pattern of its own (SE-ResNet's gates, DenseNet's and GoogLeNet's
concatenations), FP16 for the plain stacks (AlexNet, VGG with BatchNorm folded). The parsed network
is what the strongly typed builder must honour; the engine's size shows the weights' storage.

Each network goes through the toolkit's pipeline with 10 classes; the convolutional families at 64x64
(their layers and Q/DQ patterns are those of the 224x224 network, calibration a tenth of the work).
AlexNet and VGG stay at 224x224: their adaptive pooling to 6x6 / 7x7 exports to ONNX only from a
feature map it divides, and their cost is their weights, not the image. The 224x224 ResNet engines
are in tests/engine/test_build.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resnet_deploy.artifacts import Precision, read_manifest, sha256_file
from resnet_deploy.engine import BuildOptions, build_engine, engine_path_for
from resnet_deploy.model import ModelRef
from resnet_deploy.pipeline import ensure_precision, export_model
from resnet_deploy.precision import QuantizeOptions, modelopt_available
from resnet_deploy.preprocess import Preprocess

SMALL = Preprocess(image_size=64, resize=64)
CLASSES = 10
FAMILY_ENGINES = [("seresnet50", "int8"), ("densenet121", "int8"), ("googlenet", "int8"), ("alexnet", "fp16"),
                  ("vgg11_bn", "fp16")]


@pytest.fixture(scope="module")
def small_engine(rtx, tmp_path_factory):
    """``small_engine(arch, precision) -> (engine path, manifest, fp32 ONNX path)``, each made once."""
    root = tmp_path_factory.mktemp("family-engines")

    def get(arch: str, precision: str):
        ok, why = modelopt_available()
        if not ok:
            pytest.skip(f"ModelOpt is needed to make the {precision} ONNX: {why}")
        ref = ModelRef.of(arch, num_classes=CLASSES, recipe=SMALL if precision == "int8" else None)
        fp32 = export_model(ref, out_dir=root)["path"]
        onnx = ensure_precision(ref, Precision.parse(precision), out_dir=root, options=QuantizeOptions(calib_samples=16))
        path = engine_path_for(arch, precision, "trt-rtx", root)
        m = build_engine(Path(onnx["path"]), path, BuildOptions(flavour="trt-rtx", max_batch=4), precision=precision)
        return path, m, Path(fp32)

    return get


@pytest.mark.parametrize("arch, precision", FAMILY_ENGINES)
def test_each_family_builds(small_engine, arch, precision):
    path, m, fp32 = small_engine(arch, precision)
    assert path.is_file() and read_manifest(path)["engine_sha256"] == sha256_file(path)
    assert m["precision"] == precision and m["source_metadata"]["arch"] == arch
    assert m["outputs"][0]["shape"] == [-1, CLASSES]
    assert m["input"]["shape"][-1] == (SMALL.image_size if precision == "int8" else 224)
    net = m["layer_precision"].get("network", m["layer_precision"])
    fp32_bytes = fp32.stat().st_size
    if precision == "int8":
        assert net["output_dtypes"].get("INT8", 0) >= 20 and net["qdq_layers"] >= 40, net
        # below the FP32 weights (TensorRT-RTX's INT8 plans of the many-small-layer networks carry more than
        # their 8-bit weights: DenseNet-121's is no smaller than its FP16 plan, benchmarks/architectures)
        assert m["engine_bytes"] < 0.9 * fp32_bytes, (m["engine_bytes"], fp32_bytes)
    else:
        assert net["output_dtypes"].get("INT8", 0) == 0 and net["output_dtypes"].get("HALF", 0) >= 5, net
        assert m["engine_bytes"] < 0.6 * fp32_bytes, (m["engine_bytes"], fp32_bytes)
