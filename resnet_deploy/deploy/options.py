"""How a deployment serves its model: :class:`ServingOptions` (``resnet-deploy package``'s options)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ServingOptions:
    """``name``: the Triton model name (``None``: ``<arch>_<precision>``); ``labels``: class names, one
    per line (``None``: the model's label set); ``min_batch``/``opt_batch``/``max_batch``: the Jetson
    engine profile (``max_batch`` is Triton's ``max_batch_size`` too); ``instances`` and
    ``instance_kind``: Triton's instance group (``auto``: KIND_AUTO, GPU instances on a server with a GPU and
    CPU ones elsewhere; ``gpu``, ``cpu``; a TensorRT plan is always ``gpu``); ``ensemble``: also write the
    image-bytes ensemble (preprocess -> classifier -> top-``top``); ``force``: replace an existing,
    non-empty output folder; ``triton_backend``: what serves an ONNX model on Triton, ``onnxruntime``
    (platform ``onnxruntime_onnx``) or ``openvino`` (Triton's OpenVINO backend reading the same ONNX: the fast
    INT8 path on CPUs, docs/cpu.md; CPU instances)."""

    name: str | None = None
    labels: str | os.PathLike[str] | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    instances: int = 1
    instance_kind: str = "auto"
    force: bool = False
    ensemble: bool = True
    top: int = 5
    triton_backend: str = "onnxruntime"


__all__ = ["ServingOptions"]
