"""The ``ort-cpu`` INT8 flavour: ONNX Runtime's own static quantization, for ONNX Runtime's CPU provider.

The toolkit's default INT8 ONNX places Q/DQ for TensorRT (inputs of a layer quantized, its output not),
which ONNX Runtime's CPU provider cannot fuse into its integer kernels: it runs slower than FP32 there.
``quantize --int8-flavour ort-cpu`` writes instead what ONNX Runtime documents for its CPU kernels:
``quant_pre_process`` (shape inference, graph optimisation), then ``quantize_static`` in QDQ format with
per-channel S8 weights and U8 activations, calibrated on the same images (``benchmarks/ort-int8-cpu``:
2.44x and 2.86x ORT FP32 at batch 8 on ResNet-18 and ResNet-50, and inside the INT8 bars on the trained CIFAR ResNets).

ModelOpt replaces ONNX Runtime's calibrator methods process-wide once it has quantized anything
(``modelopt.onnx.quantization.ort_patching``), after which ``quantize_static`` fails; so the quantization
runs in a fresh interpreter (``python -m resnet_deploy.precision.ort_cpu``), fed through files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..onnx_meta import count_qdq
from ..versions import dist_version

FLAVOURS = ("trt", "ort-cpu")  # the INT8 Q/DQ ONNX quantize writes: TensorRT's placement (default), ORT CPU's
RUNTIME = {"trt": "TensorRT (strongly typed; also the openvino runner on a CPU)", "ort-cpu": "ONNX Runtime CPU"}
CALIBRATORS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def flavour_name(dst: Path, flavour: str) -> Path:
    """The ort-cpu flavour's file beside the default INT8 ONNX (``resnet50.int8.ort-cpu.onnx``), which it leaves alone."""
    return dst if flavour == "trt" else dst.with_name(dst.name[: -len(".onnx")] + f".{flavour}.onnx")


def quantize_ort_cpu(src: Path, tmp: Path, calib: np.ndarray, method: str) -> dict[str, Any]:
    """Write ORT's static QDQ INT8 of ``src`` to ``tmp`` (in a fresh interpreter); its conversion facts."""
    images = tmp.with_name(tmp.name + ".calib.npy")
    np.save(images, np.ascontiguousarray(calib, dtype=np.float32))
    cmd = [sys.executable, "-m", __name__, str(src), str(tmp), str(images), method]
    root = str(Path(__file__).resolve().parents[2])  # this package, whatever the child's sys.path would find
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    finally:
        images.unlink(missing_ok=True)
    if done.returncode != 0 or not tmp.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"ONNX Runtime's quantize_static failed on {src.name}: {last[:300]}")
    qdq = count_qdq(tmp)
    if not qdq["dequantize_linear"]:
        raise UserError(f"{src} has no node ONNX Runtime's quantize_static can quantize")
    return {"precision": "int8", "source": str(src), "qdq": qdq, "tool": "onnxruntime.quantization.quantize_static", "onnxruntime": dist_version("onnxruntime"),
            "int8_flavour": "ort-cpu", "runtime": RUNTIME["ort-cpu"], "format": "QDQ", "per_channel": True,
            "activations": "uint8", "weights": "int8", "calibrator": CALIBRATORS[method], "pre_process": True}


def _quantize(src: str, dst: str, images: str, method: str) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = np.load(images)
    name = onnx.load(src, load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calib[i:i + 8]} for i in range(0, len(calib), 8)])

        def get_next(self):
            return next(self.items, None)

    pre = dst + ".pre.onnx"
    try:
        quant_pre_process(src, pre)
        quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, CALIBRATORS[method]))
    finally:
        Path(pre).unlink(missing_ok=True)


if __name__ == "__main__":
    _quantize(*sys.argv[1:5])


__all__ = ["CALIBRATORS", "FLAVOURS", "RUNTIME", "flavour_name", "quantize_ort_cpu"]
