"""FP32 ONNX -> FP16 / BF16 / INT8 ONNX: precision inside the file, for strongly typed TensorRT.

TensorRT 11 builds strongly typed networks only, so the precision has to be in the ONNX
itself: FP16/BF16 as typed tensors (ModelOpt AutoCast, :mod:`.autocast`) and INT8 as explicit
QuantizeLinear/DequantizeLinear pairs placed the way TensorRT fuses them (ModelOpt PTQ,
:mod:`.ptq`), calibrated on real images (:mod:`.calib`). :func:`make_precision_onnx`
(:mod:`.artifact`) is the stage: FP32 ONNX file in, precision ONNX file and manifest out,
reused while its request matches. Torch-free.
"""

from .artifact import FP16_REFERENCE_IMAGES, calibration_batch, make_precision_onnx, precision_request, read_fp32_source, reusable
from .autocast import LOW_PRECISIONS, convert_fp16
from .calib import DEFAULT_CALIB_SAMPLES, MIN_CALIB_IMAGES, calibration_digest, load_calibration
from .exclude import check_exclude, module_paths
from .faults import coarsen_activation_scales, perturb_conv_weights, weight_quantizers
from .modelopt import modelopt_available
from .options import QuantizeOptions, TunedInt8
from .ptq import CALIBRATION_METHODS, HIGH_PRECISIONS, normalize_method, quantize_int8

__all__ = [
    "CALIBRATION_METHODS", "DEFAULT_CALIB_SAMPLES", "FP16_REFERENCE_IMAGES", "HIGH_PRECISIONS", "LOW_PRECISIONS",
    "MIN_CALIB_IMAGES", "QuantizeOptions", "TunedInt8", "calibration_batch", "calibration_digest", "check_exclude",
    "coarsen_activation_scales", "convert_fp16", "load_calibration", "make_precision_onnx", "modelopt_available",
    "module_paths", "normalize_method", "perturb_conv_weights", "precision_request", "quantize_int8",
    "read_fp32_source", "reusable", "weight_quantizers"
]
