"""Deliberately broken INT8 models: what a correct-looking Q/DQ ONNX with a real fault gives.

The parity bars and the INT8 diagnosis must tell a correct INT8 model from a moderately broken
one; these make the broken ones from a correct Q/DQ ONNX written by :mod:`.ptq`:

* :func:`coarsen_activation_scales`: every activation's (or some modules') INT8 scale made
  ``factor`` times too coarse, as a calibration on the wrong data or a unit slip would;
* :func:`perturb_conv_weights`: one convolution's FP32 weights (before their Q/DQ) with added
  Gaussian noise of ``rel_std`` times their own standard deviation, as a corrupted checkpoint would.

Weights and activations are told apart the way ModelOpt writes them: a QuantizeLinear whose
input is an initializer quantizes a weight; any other quantizes an activation, and its scale
initializer is shared with the DequantizeLinear that follows it. Torch-free.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import UserError
from ..onnx_meta import as_model


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _replace(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    inits = _initializers(model)
    inits[name].CopyFrom(numpy_helper.from_array(array.astype(numpy_helper.to_array(inits[name]).dtype), name))


def weight_quantizers(model: onnx.ModelProto) -> list[tuple[str, onnx.NodeProto]]:
    """``[(weight initializer name, its QuantizeLinear)]`` in graph order (``layer2.0.conv1.weight``, ...)."""
    inits = _initializers(model)
    return [(n.input[0], n) for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]


def activation_quantizers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    inits = _initializers(model)
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]


def coarsen_activation_scales(src, dst: str | os.PathLike[str], factor: float,
                              only: Callable[[onnx.NodeProto], bool] | None = None) -> int:
    """Write ``src`` with activation scales multiplied by ``factor`` (all, or those ``only`` selects); how many."""
    model = as_model(src)
    inits = _initializers(model)
    scales = {q.input[1] for q in activation_quantizers(model) if only is None or only(q)}
    if not scales:
        raise UserError("no activation QuantizeLinear matched: is this a Q/DQ INT8 model?")
    for name in scales:
        _replace(model, name, numpy_helper.to_array(inits[name]) * factor)
    onnx.save(model, os.fspath(dst))
    return len(scales)


def perturb_conv_weights(src, dst: str | os.PathLike[str], weight: str | None = None, rel_std: float = 1.0,
                         seed: int = 0) -> str:
    """Write ``src`` with noise of ``rel_std`` x std added to one quantized weight (default: the middle one); its name."""
    model = as_model(src)
    quantized = weight_quantizers(model)
    if not quantized:
        raise UserError("no quantized weight found: is this a Q/DQ INT8 model?")
    names = [name for name, _ in quantized]
    name = weight if weight is not None else names[len(names) // 2]
    if name not in names:
        raise UserError(f"{name!r} is not a quantized weight; they are: {', '.join(names[:8])} ...")
    inits = _initializers(model)
    w = numpy_helper.to_array(inits[name]).astype(np.float64)
    noisy = w + np.random.default_rng(seed).standard_normal(w.shape) * rel_std * w.std()
    _replace(model, name, noisy)
    # as if the corrupted checkpoint had been quantized: per-output-channel scale = amax / 127
    scale_name = dict(quantized)[name].input[1]
    scale = numpy_helper.to_array(inits[scale_name])
    amax = np.abs(noisy).reshape(noisy.shape[0], -1).max(axis=1) if scale.ndim == 1 else np.abs(noisy).max()
    _replace(model, scale_name, np.maximum(amax, 1e-12) / 127.0)
    onnx.save(model, os.fspath(dst))
    return name


__all__ = ["activation_quantizers", "coarsen_activation_scales", "perturb_conv_weights", "weight_quantizers"]
