"""How to convert: :class:`QuantizeOptions` (the calibration and INT8 settings ``quantize`` takes) and
:class:`TunedInt8` (what the accuracy-target search hands the stage)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ..artifacts import Precision
from ..errors import UserError
from .calib import DEFAULT_CALIB_SAMPLES, MIN_CALIB_IMAGES
from .exclude import check_exclude, parse_exclude
from .ort_cpu import FLAVOURS
from .ptq import HIGH_PRECISIONS, normalize_method


@dataclass(frozen=True)
class QuantizeOptions:
    """The settings of a precision conversion (``resnet-deploy quantize``'s options).

    ``calib``: a folder of images (``None``: scikit-image's photographs); ``calib_samples`` of them
    are used; ``method``: ``entropy``, ``minmax`` or ``percentile``; ``fp16_io``: FP16 inputs and
    outputs (FP16 only); ``high_precision``: the type of the layers left out of INT8;
    ``exclude``: torch module paths kept out of INT8 (``"layer4.2,fc"`` or a list);
    ``min_calib_images``: fewer usable images than this is an error; ``int8_flavour``: ``trt`` (ModelOpt PTQ,
    Q/DQ placed for TensorRT: the default) or ``ort-cpu`` (ONNX Runtime's own ``quantize_static`` QDQ for its
    CPU provider, written beside the default as ``<arch>.int8.ort-cpu.onnx``; :mod:`.ort_cpu`).
    """

    calib: str | os.PathLike[str] | None = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    method: str = "entropy"
    fp16_io: bool = False
    high_precision: str = "fp32"
    exclude: str | Sequence[str] | None = None
    min_calib_images: int = MIN_CALIB_IMAGES
    int8_flavour: str = "trt"

    @property
    def excluded(self) -> list[str]:
        """The exclusions, sorted and unique (``[]`` for none)."""
        return parse_exclude(self.exclude)

    def checked(self, precision: Precision) -> QuantizeOptions:
        """Refuse a request that cannot be made, before any slow work; the method and exclusions normalised."""
        if precision == Precision.FP32:
            raise UserError("precision fp32 is the exported ONNX itself; there is nothing to convert")
        method = normalize_method(self.method)
        if self.calib_samples < 1:
            raise UserError(f"--calib-samples must be at least 1, got {self.calib_samples}")
        check_exclude(precision, self.exclude)
        if self.fp16_io and precision != Precision.FP16:
            raise UserError("--fp16-io applies to --precision fp16 only (INT8 and BF16 models keep FP32 inputs/outputs)")
        if self.high_precision not in HIGH_PRECISIONS:
            raise UserError(f"--high-precision must be fp16 or fp32, got {self.high_precision!r}")
        self._check_flavour(precision)
        calib = self.calib
        if calib is not None and not Path(calib).expanduser().is_dir():
            raise UserError(f"calibration folder not found: {calib}" if not Path(calib).expanduser().exists()
                            else f"--calib must be a folder of images, got the file {calib}")
        return replace(self, method=method, exclude=tuple(self.excluded))

    def _check_flavour(self, precision: Precision) -> None:
        if self.int8_flavour not in FLAVOURS:
            raise UserError(f"--int8-flavour must be one of {', '.join(FLAVOURS)}, got {self.int8_flavour!r}")
        if self.int8_flavour == "trt":
            return
        if precision != Precision.INT8:
            raise UserError(f"--int8-flavour {self.int8_flavour} applies to --precision int8 only")
        if self.excluded or self.high_precision != "fp32":
            raise UserError(f"--exclude and --high-precision fp16 are for the TensorRT flavour; --int8-flavour "
                            f"{self.int8_flavour} quantizes every layer ONNX Runtime's CPU kernels take")


@dataclass(frozen=True)
class TunedInt8:
    """What the accuracy-target search gives the INT8 conversion it publishes.

    ``tuning``: its part of the request (target, images digest, limit); ``keep``: the modules the
    search kept out of INT8, on top of the options' ``exclude``; ``accept``: called on the new ONNX
    before it is published, returns the facts the manifest records under ``"tuning"`` or raises
    :class:`UserError` to publish nothing; ``quantized``: ``(INT8 ONNX, its conversion facts)`` made
    from this very request with ``keep`` excluded (the plain INT8 when ``keep`` is empty; the search's
    measured re-quantization otherwise), published with the tuning facts instead of being quantized again.
    """

    tuning: dict[str, Any] | None = None
    keep: Sequence[str] = ()
    accept: Callable[[Path], dict[str, Any]] | None = None
    quantized: tuple[Path, dict[str, Any]] | None = None


__all__ = ["QuantizeOptions", "TunedInt8"]
