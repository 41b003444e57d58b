"""Measuring an INT8 candidate against FP32 on one runner: ONNX Runtime CPU (the toolkit's reference for
ONNX numerics) unless another backend of the registry is named (``openvino``: INT8 as a CPU deploys it;
``trt`` / ``trt-rtx``: each model built into a TensorRT engine in the work folder and run on the GPU, INT8 as
TensorRT deploys it).

:class:`Measure` runs the FP32 model once on the :class:`~.images.EvalSet`, then scores each
candidate (a file or an in-memory graph, written to the work folder): top-1 accuracy on a
labelled set, agreement with FP32's top-1 otherwise, plus the logits' relative L2 and cosine
(:func:`resnet_deploy.compare.compare`). :meth:`Measure.tensor_errors` compares intermediate
tensors (block outputs, layer outputs) by making them graph outputs of both models.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..classify import infer_all
from ..compare import compare
from ..engine import BuildOptions, build_engine
from ..errors import UserError
from ..progress import progress_bar
from ..runners import ENGINE_BACKENDS, make_runner, unavailable
from .images import EvalSet
from .options import DEFAULT_SCORE_ENGINES, SCORE_ENGINES

TENSOR_BATCH = 8       # images per run when intermediate tensors come back (they are large)


def with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``tensors`` (float32 activations)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for t in tensors:
        if t not in present:
            out.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    return out


ENGINE_NAMES = {"openvino": "OpenVINO CPU", "ort": "ONNX Runtime CPU", "trt": "TensorRT", "trt-rtx": "TensorRT-RTX"}


def pick_engine(engine: str | None = None) -> str:
    """The runner the search scores on: ``engine`` when it can run here, else (``None``) the first of
    :data:`~.options.DEFAULT_SCORE_ENGINES` that can (OpenVINO runs the INT8 Q/DQ ONNX several times faster than ORT
    CPU). TensorRT is only used when named: each candidate is an engine build, seconds to minutes, where OpenVINO
    compiles in under a second, so on a few hundred images the CPU runners score a candidate sooner."""
    if engine is not None:
        if engine not in SCORE_ENGINES:
            raise UserError(f"--score-engine runs the search's candidates: one of {', '.join(SCORE_ENGINES)}, got {engine!r}")
        why = unavailable(engine, "int8")
        if why:
            raise UserError(f"--score-engine {engine}: {why}")
        return engine
    for name in DEFAULT_SCORE_ENGINES:
        if unavailable(name, "int8") is None:
            return name
    raise UserError(f"no runner here can score INT8 candidates: install one of {', '.join(DEFAULT_SCORE_ENGINES)}")


class Measure:
    """Scores of INT8 candidates on one image set, each against the same FP32 logits, on one ONNX runner.

    ``backend``: a registry name the caller has checked (the search: :func:`pick_engine`'s choice; diagnose:
    any ONNX backend that runs here).
    """

    def __init__(self, fp32: str | os.PathLike[str], images: EvalSet, work: str | os.PathLike[str], *,
                 threads: int | None = None, progress_bar_enabled: bool = False, backend: str = "ort"):
        self.backend = backend
        self.engine: dict[str, Any] = {}  # what scored: the runner's backend, version, device (set by the first run)
        self.fp32_path = Path(fp32)
        self.images = images
        self.work = Path(work)
        self.threads = threads
        self.bar = progress_bar_enabled
        self.evaluations = 0            # candidate scorings (the search's cost)
        self.seconds = 0.0
        self.fp32_logits = self._run(self.fp32_path, "FP32 reference", "fp32")
        self.reference = self._score_of(self.fp32_logits)

    def _file(self, model: onnx.ModelProto | str | os.PathLike[str], name: str) -> Path:
        if isinstance(model, onnx.ModelProto):
            path = self.work / f"{name}.onnx"
            onnx.save(model, str(path))
            return path
        return Path(model)

    def _artifact(self, path: Path, precision: str) -> Path:
        """What the runner loads: the ONNX itself, or (TensorRT) an engine built from it in the work folder."""
        if self.backend not in ENGINE_BACKENDS:
            return path
        engine = self.work / f"{path.stem}.{self.backend}.engine"
        build_engine(path, engine, BuildOptions(flavour=self.backend), precision=precision)
        return engine

    def _run(self, path: Path, desc: str, precision: str = "int8") -> np.ndarray:
        t = time.perf_counter()
        chunks = []
        step = 32
        options = {} if self.backend in ENGINE_BACKENDS else {"threads": self.threads}
        with make_runner(self.backend, self._artifact(path, precision), **options) as runner, \
                progress_bar(len(self.images.batch), desc, self.bar) as advance:
            for start in range(0, len(self.images.batch), step):
                chunks.append(infer_all(runner, self.images.batch[start:start + step]))
                advance(len(chunks[-1]))
            if not self.engine:
                d = runner.describe()
                self.engine = {k: d[k] for k in ("backend", "version", "device", "inference_precision") if k in d}
        self.seconds += time.perf_counter() - t
        return np.concatenate(chunks)

    def _score_of(self, logits: np.ndarray) -> float:
        if not np.isfinite(logits).all():
            return 0.0
        top1 = logits.argmax(1)
        truth = self.images.labels if self.images.labels is not None else self.fp32_logits.argmax(1)
        return float(np.mean(top1 == truth))

    def score(self, model: onnx.ModelProto | str | os.PathLike[str], desc: str = "candidate") -> dict[str, Any]:
        """``{score, agreement, rel_l2, cosine, finite}`` of one candidate (``score``: the set's metric)."""
        path = self._file(model, "candidate")
        logits = self._run(path, desc)
        self.evaluations += 1
        c = compare(self.fp32_logits, logits, "int8")
        return {"score": self._score_of(logits), "agreement": c.top1_agreement if c.finite else 0.0,
                "rel_l2": c.rel_l2, "cosine": c.cosine, "finite": c.finite}

    def tensor_errors(self, model: onnx.ModelProto | str | os.PathLike[str], tensors: list[str]) -> dict[str, dict[str, float]]:
        """``{tensor: {rel_l2, cosine}}``: global relative L2 and mean per-image cosine of each tensor vs FP32."""
        if self.backend in ENGINE_BACKENDS:
            raise UserError(f"per-tensor errors are measured on an ONNX runner (ort, openvino), not {self.backend}")
        fp32 = self._file(with_outputs(onnx.load(str(self.fp32_path)), tensors), "fp32_tensors")
        cand_model = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        cand = self._file(with_outputs(cand_model, tensors), "int8_tensors")
        sq = {t: [0.0, 0.0, 0.0] for t in tensors}      # sum |d|^2, sum |ref|^2, sum cosine
        n = len(self.images.batch)
        with make_runner(self.backend, fp32, threads=self.threads) as ref, \
                make_runner(self.backend, cand, threads=self.threads) as run, \
                progress_bar(n, "block errors", self.bar) as advance:
            spec = ref.input_spec
            fixed = spec.min_batch if spec.limit == "fixed" else None   # an export --batch N model takes N at a time
            step = fixed or TENSOR_BATCH
            for start in range(0, n, step):
                x = self.images.batch[start:start + step]
                real = len(x)
                if fixed and real < fixed:  # pad the last chunk with its last image; the padding is not counted
                    x = np.concatenate([x, np.repeat(x[-1:], fixed - real, axis=0)])
                for t, a, b in zip(tensors, ref.infer_outputs(x, tensors), run.infer_outputs(x, tensors)):
                    a = a[:real].reshape(real, -1).astype(np.float64)
                    b = b[:real].reshape(real, -1).astype(np.float64)
                    d = b - a
                    sq[t][0] += float((d * d).sum())
                    sq[t][1] += float((a * a).sum())
                    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
                    sq[t][2] += float(np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-30), 1.0).sum())
                advance(real)
        return {t: {"rel_l2": (s[0] / s[1]) ** 0.5 if s[1] > 0 else 0.0, "cosine": s[2] / n} for t, s in sq.items()}

    @property
    def engine_name(self) -> str:
        return ENGINE_NAMES.get(self.backend, self.backend)


__all__ = ["ENGINE_NAMES", "Measure", "pick_engine", "with_outputs"]
