"""One runner per backend, one interface (:class:`Runner`), one registry. Torch-free at import time.

:data:`REGISTRY` is the one place a backend name becomes a runner class: parity, eval, predict
and bench accept the same ``--engine`` names, and a backend's own module is imported only
when it is used (the TensorRT runner needs no torch, the torch runner no TensorRT).

    from resnet_deploy.runners import open_runner
    with open_runner("ort", "engines/resnet50/resnet50.fp16.onnx") as r:
        logits = r.infer(batch)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .base import TORCH_ALLOCATOR, InputSpec, Runner


@dataclass(frozen=True)
class Backend:
    name: str
    artifact: str          # what it loads: "torch" (an nn.Module), "onnx", or an engine flavour ("trt", "trt-rtx")
    module: str
    cls: str

    def load(self) -> type[Runner]:
        return getattr(importlib.import_module(self.module, __name__), self.cls)


REGISTRY: dict[str, Backend] = {b.name: b for b in [
    Backend("torch", "torch", ".torch_runner", "TorchRunner"),
    Backend("torch-compile", "torch", ".torch_runner", "TorchRunner"),
    Backend("ort", "onnx", ".ort", "OrtRunner"),
    Backend("ort-cuda", "onnx", ".ort", "OrtRunner"),
    Backend("openvino", "onnx", ".openvino", "OpenVinoRunner"),
    Backend("trt", "trt", ".tensorrt", "TensorRTRunner"),
    Backend("trt-rtx", "trt-rtx", ".tensorrt", "TensorRTRunner"),
    Backend("triton", "served", ".triton", "TritonRunner"),   # a live Triton server: the artifact is its URL
]}
BACKENDS = tuple(REGISTRY)
TORCH_BACKENDS = tuple(n for n, b in REGISTRY.items() if b.artifact == "torch")
ONNX_BACKENDS = tuple(n for n, b in REGISTRY.items() if b.artifact == "onnx")
ENGINE_BACKENDS = tuple(n for n, b in REGISTRY.items() if b.artifact not in ("torch", "onnx", "served"))
SERVED_BACKENDS = tuple(n for n, b in REGISTRY.items() if b.artifact == "served")


def backend(name: str) -> Backend:
    if name not in REGISTRY:
        raise UserError(f"unknown engine {name!r}; choose one of {', '.join(BACKENDS)}")
    return REGISTRY[name]


def artifact_kind(name: str) -> str:
    """What a backend loads: ``"onnx"``, an engine flavour (``"trt"``, ``"trt-rtx"``), ``"torch"``, or ``"served"``
    (a model on a server: the artifact is its URL)."""
    return backend(name).artifact


def runner_class(name: str) -> type[Runner]:
    return backend(name).load()


def make_runner(name: str, artifact: Any, *, precision: str | None = None, **options: Any) -> Runner:
    """A runner for backend ``name``, not yet open: ``artifact`` is an ONNX path, an engine path or a torch module."""
    return runner_class(name)(artifact, backend=name, precision=precision, **options)


def open_runner(name: str, artifact: Any, *, precision: str | None = None, **options: Any) -> Runner:
    """:func:`make_runner`, opened (load and allocate). Use it in a ``with`` block, or ``close()`` it."""
    return make_runner(name, artifact, precision=precision, **options).open()


def served_facts(name: str, url: str, **options: Any) -> dict[str, str]:
    """The ``resnet_deploy.*`` facts (arch, precision, weights, preprocessing) of the model a served backend
    reaches at ``url`` (``options``: the runner's, e.g. ``model``), as an artifact's metadata reads."""
    if artifact_kind(name) != "served":
        raise UserError(f"{name} runs files, not a server URL")
    return runner_class(name).served_facts(url, **options)


def unavailable(name: str, precision: str) -> str | None:
    """``None`` if backend ``name`` can run ``precision`` here, else why not (cheap checks, nothing loaded)."""
    try:
        return runner_class(name).unavailable(name, precision)
    except ImportError as e:  # the backend's own module needs a library that is missing (torch)
        return f"{name} cannot be imported here: {e}"


def timing_options(name: str, **kw: Any) -> dict[str, Any]:
    """The backend's constructor options for its fastest correct run here (see :meth:`Runner.timing_options`)."""
    return runner_class(name).timing_options(name, **kw)


__all__ = ["BACKENDS", "Backend", "ENGINE_BACKENDS", "InputSpec", "ONNX_BACKENDS", "REGISTRY", "Runner", "SERVED_BACKENDS", "TORCH_ALLOCATOR",
           "TORCH_BACKENDS", "artifact_kind", "backend", "make_runner", "open_runner", "runner_class", "served_facts", "timing_options",
           "unavailable"]
