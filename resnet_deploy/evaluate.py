"""Top-1 / top-5 accuracy on a labelled image folder, with any runner from :func:`open_runner`.

    from resnet_deploy.api import evaluate
    r = evaluate(50, precisions=["fp32", "fp16", "int8"], data="~/imagenet/val")
    [(x["precision"], x["top1"], x["top5"]) for x in r["results"]]

The folder has one sub-folder per class (torchvision ImageFolder convention): the label of a
class folder is its index in the sorted list of folder names, unless a labels file (one
class name per line, line number = class index) maps folder names to indices. Each image is
decoded once and preprocessed with the recipe the artifact records, then fed to every
requested precision, so the columns of the side-by-side table see identical inputs.
Undecodable files are skipped and counted.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .artifacts import DEFAULT_ROOT, Precision, artifact_path
from .classify import infer_all
from .datasets import labelled_folder, read_image
from .errors import UserError
from .labels import LABEL_SETS, builtin_labels
from .onnx_meta import artifact_facts
from .preprocess import Preprocess, preprocess_image, recipe_from_metadata
from .progress import Progress, progress_bar, quiet
from .runners import artifact_kind, open_runner, served_facts

LABELS_FILE = "labels.txt"   # optional, beside the artifacts (<out>/<arch>/labels.txt)


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (top-1 correct, top-k correct) booleans; ties break towards the lower class index."""
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return order[:, 0] == labels, (order == labels[:, None]).any(axis=1)


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate (``resnet-deploy eval``'s options): the ``backend``, images per inference call
    (``batch``), an evenly spaced subset of ``limit`` images, the ``labels_file`` mapping class
    folders to class indices, and the runner's own options (``runner_options``)."""

    backend: str = "ort"
    batch: int = 32
    limit: int | None = None
    labels_file: str | os.PathLike[str] | None = None
    runner_options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> str:
        """Refuse what cannot be evaluated, before any slow work; the backend's artifact kind."""
        if self.batch < 1:
            raise UserError(f"--batch must be at least 1, got {self.batch}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        kind = artifact_kind(self.backend)
        if kind == "torch":
            raise UserError("eval runs exported artifacts; choose --engine ort, ort-cuda, trt or trt-rtx")
        return kind


@dataclass
class _Column:
    precision: str
    artifact: Path
    recipe: Preprocess
    runner: Any
    num_classes: int | None
    correct1: int = 0
    correct5: int = 0
    finite: bool = True
    seconds: float = 0.0

    def score(self, inputs: np.ndarray, labels: np.ndarray) -> None:
        t = time.perf_counter()
        logits = infer_all(self.runner, inputs)
        self.seconds += time.perf_counter() - t
        if not np.isfinite(logits).all():
            self.finite = False
        c1, c5 = topk_correct(logits, labels, 5)
        self.correct1 += int(c1.sum())
        self.correct5 += int(c5.sum())

    def result(self, used: int) -> dict[str, Any]:
        return {"precision": self.precision, "artifact": str(self.artifact), "n": used,
                "top1": self.correct1 / used if used else None, "top5": self.correct5 / used if used else None,
                "correct1": self.correct1, "correct5": self.correct5,
                "top5_k": min(5, self.num_classes) if self.num_classes else 5,
                "finite": self.finite, "infer_seconds": round(self.seconds, 3),
                "images_per_s": round(used / self.seconds, 1) if self.seconds else None,
                "preprocess": self.recipe.to_dict(), "runner": self.runner.describe()}


@dataclass
class _Tally:
    """What the pass over the files saw: images used, files skipped (with why), images converted to RGB."""

    used: int = 0
    converted: int = 0
    skipped: list[str] = field(default_factory=list)


def artifact_paths(arch: str, precisions: Sequence[Precision], kind: str, backend: str, out_dir: str | os.PathLike[str],
                   artifacts: dict[Precision, Path]) -> dict[Precision, Path]:
    """Each precision's artifact (given, or the default path for the backend's kind); a missing one says how to make it."""
    if kind == "served":
        missing = [str(p) for p in precisions if p not in artifacts]
        if missing:
            raise UserError(f"--engine {backend} evaluates a served model: give the server's --url (one precision: {', '.join(missing)})")
        return {p: artifacts[p] for p in precisions}
    paths = {p: artifacts.get(p, artifact_path(arch, p, kind, out_dir)) for p in precisions}
    for p, path in paths.items():
        if not path.is_file():
            step = ("export" if p == "fp32" else f"quantize --precision {p}") if kind == "onnx" \
                else f"build --engine {backend} --precision {p}"
            raise UserError(f"{path} does not exist; create it with `resnet-deploy {step} --depth {arch}`")
    return paths


def _facts(artifact: Any, kind: str, options: EvalOptions) -> dict[str, str]:
    """An artifact's recorded facts; a served model's from its server (``artifact`` is the URL)."""
    if kind == "served":
        return served_facts(options.backend, str(artifact), **options.runner_options)
    return artifact_facts(artifact, kind)


def open_column(stack: contextlib.ExitStack, arch: str, precision: Precision, path: Path, kind: str, folder: Any,
                options: EvalOptions, progress: Progress) -> _Column:
    """The artifact checked against the request and the data, its runner opened on ``stack``."""
    facts = _facts(path, kind, options)
    recorded = facts.get("precision")
    if recorded and recorded != precision:
        raise UserError(f"{path} records precision {recorded}, not {precision}")
    if facts.get("arch") not in (None, arch):
        raise UserError(f"{path} holds {facts['arch']}, not {arch}")
    n_cls = int(facts["num_classes"]) if facts.get("num_classes", "").isdigit() else None
    top_label = int(folder.labels.max())
    if n_cls is not None and top_label >= n_cls:
        raise UserError(f"{folder.root} has {len(folder.classes)} class folders (label up to {top_label}) but "
                        f"{getattr(path, 'name', path)} has {n_cls} classes; give a --labels file that maps folders to classes")
    progress(f"loading {path} on {options.backend}")
    runner = stack.enter_context(open_runner(options.backend, path, precision=precision, **options.runner_options))
    return _Column(precision, path, recipe_from_metadata(facts), runner, n_cls)


def score_chunk(columns: list[_Column], chunk: list[Path], chunk_labels: np.ndarray, root: Path, tally: _Tally) -> None:
    """Decode one chunk of files once and score every column on it (each column's recipe preprocessed once)."""
    images, keep = [], []
    for i, path in enumerate(chunk):
        img, reason = read_image(path)
        if img is None:
            tally.skipped.append(f"{path.relative_to(root).as_posix()}: {reason}")
            continue
        tally.converted += img.mode != "RGB"
        images.append(img)
        keep.append(i)
    if not images:
        return
    y = chunk_labels[keep]
    cache: dict[Preprocess, np.ndarray] = {}
    for col in columns:
        if col.recipe not in cache:
            cache[col.recipe] = np.stack([preprocess_image(im, col.recipe) for im in images])
        col.score(cache[col.recipe], y)
    tally.used += len(images)


def compare_to_fp32(results: list[dict[str, Any]], progress: Progress) -> None:
    """Add each result's top-1 difference from and ratio to FP32's (when FP32 was evaluated); flag NaN/Inf."""
    ref = next((r for r in results if r["precision"] == "fp32"), None)
    for r in results:
        if ref is not None:
            r["top1_delta_pp"] = round(100 * (r["top1"] - ref["top1"]), 4)
            r["top1_ratio"] = r["top1"] / ref["top1"] if ref["top1"] else None
        if not r["finite"]:
            progress(f"{r['precision']}: NaN or Inf in the logits")


def evaluate(arch: str, precisions: Sequence[Precision], data: str | os.PathLike[str],
             options: EvalOptions = EvalOptions(), *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
             artifacts: dict[Precision, Path] | None = None, progress: Progress = quiet,
             progress_bar_enabled: bool = False) -> dict[str, Any]:
    """Top-1/top-5 of each precision's artifact on ``data`` (``<data>/<class>/<image>``).

    Artifacts default to ``artifact_path(arch, precision, kind, out_dir)`` for the backend's
    kind (``engines/resnet50/resnet50.int8.onnx`` for ``ort``); ``artifacts`` overrides them
    per precision. ``options.limit`` evaluates an evenly spaced subset of that many images.
    ``options.labels_file`` (default: ``<out_dir>/<arch>/labels.txt`` if it exists) maps class
    folder names to model class indices.
    """
    kind = options.check()
    if not precisions:
        raise UserError("give at least one precision")
    paths = artifact_paths(arch, precisions, kind, options.backend, out_dir, artifacts or {})
    labels_file = options.labels_file
    if labels_file is None and (Path(out_dir) / arch / LABELS_FILE).is_file():
        labels_file = Path(out_dir) / arch / LABELS_FILE
    label_set = _facts(paths[precisions[0]], kind, options).get("label_set", "imagenet")
    builtin = builtin_labels(label_set) if label_set in LABEL_SETS else None
    folder = labelled_folder(data, labels_file, builtin, f"the model's {label_set} class names")
    files, labels = folder.files, folder.labels
    if options.limit is not None and options.limit < len(files):
        keep = np.linspace(0, len(files) - 1, options.limit).round().astype(int)
        files, labels = [files[i] for i in keep], labels[keep]

    t0 = time.perf_counter()
    tally = _Tally()
    with contextlib.ExitStack() as stack:
        columns = [open_column(stack, arch, p, paths[p], kind, folder, options, progress) for p in precisions]
        if len({c.recipe for c in columns}) > 1:
            progress("the artifacts record different preprocessing; each gets its own")
        progress(f"evaluating {len(files)} images of {len(folder.classes)} classes from {folder.root}")
        with progress_bar(len(files), "evaluating", progress_bar_enabled) as advance:
            for start in range(0, len(files), options.batch):
                chunk = files[start:start + options.batch]
                score_chunk(columns, chunk, labels[start:start + options.batch], folder.root, tally)
                advance(len(chunk))
        results = [c.result(tally.used) for c in columns]
    if not tally.used:
        raise UserError(f"none of the {len(files)} image files in {folder.root} could be decoded")
    compare_to_fp32(results, progress)
    notes = list(folder.notes)
    if tally.skipped:
        notes.append(f"skipped {len(tally.skipped)} file(s) that are not readable images")
    if tally.converted:
        notes.append(f"converted {tally.converted} grayscale/palette/RGBA image(s) to RGB")
    return {"arch": arch, "data": str(folder.root), "backend": options.backend, "images": tally.used,
            "image_files": len(files), "classes": len(folder.classes), "label_source": folder.label_source,
            "skipped": len(tally.skipped), "skipped_files": tally.skipped[:20], "converted": tally.converted,
            "notes": notes, "seconds": round(time.perf_counter() - t0, 3), "results": results}


__all__ = ["EvalOptions", "LABELS_FILE", "evaluate", "topk_correct"]
