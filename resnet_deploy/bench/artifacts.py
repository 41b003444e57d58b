"""Where the bench gets what it runs: the one module of bench/ that calls the pipeline.

:class:`PipelineArtifacts` loads the seeded model of an architecture
(:func:`resnet_deploy.pipeline.load_model` of a :class:`~resnet_deploy.model.ModelRef`) and makes or reuses the artifact a backend loads,
chosen by the registry's artifact kind (:func:`resnet_deploy.runners.artifact_kind`): the model
itself for a backend that runs a torch module, the precision's ONNX
(:func:`~resnet_deploy.pipeline.precision_manifest`), or an engine with a profile up to the
largest batch (:func:`~resnet_deploy.pipeline.ensure_engine`). The executor receives one of
these; tests hand it a fake with the same two methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from ..artifacts import Precision
from ..engine import BuildOptions
from ..errors import BackendUnavailable, UserError
from ..model import ModelRef
from ..pipeline import ensure_engine, load_model, precision_manifest
from ..progress import Progress, quiet
from ..runners import ONNX_BACKENDS, SERVED_BACKENDS, TORCH_BACKENDS, artifact_kind, served_facts


@dataclass(frozen=True)
class Artifact:
    """What a backend opens: ``target`` (a path, or the model itself) and how it was come by."""

    target: Any
    path: str | None = None          # the file, where there is one
    build_s: float | None = None     # seconds spent making it in this run
    reused: bool | None = None


class ArtifactProvider(Protocol):
    def model(self, arch: str) -> Any:
        """The seeded PyTorch model of ``arch`` (the FP32 reference, and what torch backends run)."""

    def artifact(self, arch: str, precision: Precision, backend: str, model: Any) -> Artifact:
        """What ``backend`` opens for ``arch`` at ``precision``, made or reused."""


class PipelineArtifacts:
    """The pipeline's artifacts under ``out_dir``, made with ``seed``; engines get a profile 1..``max_batch``; a served
    backend's artifact is ``served_url`` (the server's model, which must hold the row's network and precision)."""

    def __init__(self, *, out_dir: str, seed: int, max_batch: int, progress: Progress = quiet, served_url: str | None = None):
        self.out_dir, self.seed, self.max_batch, self.progress = out_dir, seed, max_batch, progress
        self.served_url = served_url

    def ref(self, arch: str) -> ModelRef:
        return ModelRef.of(arch, seed=self.seed)

    def model(self, arch: str) -> Any:
        return load_model(self.ref(arch))

    def artifact(self, arch: str, precision: Precision, backend: str, model: Any) -> Artifact:
        if backend in TORCH_BACKENDS:
            return Artifact(target=model)
        if backend in SERVED_BACKENDS:
            if not self.served_url:
                raise BackendUnavailable(backend, "it measures a served model: give --url (e.g. grpc://127.0.0.1:8001/v2/models/NAME)")
            facts = served_facts(backend, self.served_url)
            if (facts.get("arch"), facts.get("precision")) != (arch, str(precision)):
                raise UserError(f"{self.served_url} serves {facts.get('arch')} {facts.get('precision')}, not {arch} {precision}")
            return Artifact(target=self.served_url, path=self.served_url, reused=True)
        t0 = time.perf_counter()
        if backend in ONNX_BACKENDS:
            self.progress(f"{arch} {precision}: ONNX for {backend}")
            m = precision_manifest(self.ref(arch), precision, out_dir=self.out_dir, progress=self.progress)
        else:
            self.progress(f"{arch} {precision}: engine for {backend}")
            opts = BuildOptions(flavour=artifact_kind(backend), min_batch=1, opt_batch=self.max_batch,
                                max_batch=self.max_batch)
            m = ensure_engine(self.ref(arch), precision, opts, out_dir=self.out_dir, progress=self.progress)
        return Artifact(target=str(m["path"]), path=str(m["path"]), build_s=time.perf_counter() - t0,
                        reused=bool(m.get("reused")))


__all__ = ["Artifact", "ArtifactProvider", "PipelineArtifacts"]
