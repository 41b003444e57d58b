"""Top-1 / top-5 accuracy on a labelled image folder, with any runner from :func:`open_runner`.

    from resnet_deploy.evaluate import evaluate
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .artifacts import DEFAULT_ROOT, artifact_path, check_precision
from .classify import infer_all
from .datasets import labelled_folder, read_image
from .errors import UserError
from .labels import LABEL_SETS, builtin_labels
from .onnx_meta import artifact_facts
from .preprocess import Preprocess, preprocess_image, recipe_from_metadata
from .progress import Progress, progress_bar, quiet
from .runners import artifact_kind, open_runner

LABELS_FILE = "labels.txt"   # optional, beside the artifacts (<out>/<arch>/labels.txt)


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (top-1 correct, top-k correct) booleans; ties break towards the lower class index."""
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return order[:, 0] == labels, (order == labels[:, None]).any(axis=1)


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


def evaluate(arch: str, *, precisions: Sequence[str] = ("fp32",), data: str | os.PathLike[str],
             backend: str = "ort", out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
             artifacts: dict[str, str | os.PathLike[str]] | None = None, batch: int = 32, limit: int | None = None,
             labels_file: str | os.PathLike[str] | None = None, progress: Progress = quiet,
             progress_bar_enabled: bool = False, **runner_options: Any) -> dict[str, Any]:
    """Top-1/top-5 of each precision's artifact on ``data`` (``<data>/<class>/<image>``).

    Artifacts default to ``artifact_path(arch, precision, kind, out_dir)`` for the backend's
    kind (``engines/resnet50/resnet50.int8.onnx`` for ``ort``); ``artifacts`` overrides them
    per precision. ``limit`` evaluates an evenly spaced subset of that many images.
    ``labels_file`` (default: ``<out_dir>/<arch>/labels.txt`` if it exists) maps class folder
    names to model class indices.
    """
    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    precisions = list(dict.fromkeys(check_precision(p) for p in precisions))
    if not precisions:
        raise UserError("give at least one precision")
    kind = artifact_kind(backend)
    if kind == "torch":
        raise UserError("eval runs exported artifacts; choose --engine ort, ort-cuda, trt or trt-rtx")
    artifacts = {check_precision(k): Path(v).expanduser() for k, v in (artifacts or {}).items()}
    paths = {p: artifacts.get(p, artifact_path(arch, p, kind, out_dir)) for p in precisions}
    for p, path in paths.items():
        if not path.is_file():
            step = ("export" if p == "fp32" else f"quantize --precision {p}") if kind == "onnx" \
                else f"build --engine {backend} --precision {p}"
            raise UserError(f"{path} does not exist; create it with `resnet-deploy {step} --depth {arch}`")
    if labels_file is None and (Path(out_dir) / arch / LABELS_FILE).is_file():
        labels_file = Path(out_dir) / arch / LABELS_FILE
    first = artifact_facts(paths[precisions[0]], kind)
    label_set = first.get("label_set", "imagenet")
    builtin = builtin_labels(label_set) if label_set in LABEL_SETS else None
    folder = labelled_folder(data, labels_file, builtin, f"the model's {label_set} class names")
    files, labels = folder.files, folder.labels
    if limit is not None and limit < len(files):
        keep = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files, labels = [files[i] for i in keep], labels[keep]

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        columns: list[_Column] = []
        for p in precisions:
            facts = artifact_facts(paths[p], kind)
            recorded = facts.get("precision")
            if recorded and recorded != p:
                raise UserError(f"{paths[p]} records precision {recorded}, not {p}")
            if facts.get("arch") not in (None, arch):
                raise UserError(f"{paths[p]} holds {facts['arch']}, not {arch}")
            n_cls = int(facts["num_classes"]) if facts.get("num_classes", "").isdigit() else None
            top_label = int(labels.max())
            if n_cls is not None and top_label >= n_cls:
                raise UserError(f"{folder.root} has {len(folder.classes)} class folders (label up to {top_label}) but "
                                f"{paths[p].name} has {n_cls} classes; give a --labels file that maps folders to classes")
            progress(f"loading {paths[p]} on {backend}")
            runner = stack.enter_context(open_runner(backend, paths[p], precision=p, **runner_options))
            columns.append(_Column(p, paths[p], recipe_from_metadata(facts), runner, n_cls))
        if len({c.recipe for c in columns}) > 1:
            progress("the artifacts record different preprocessing; each gets its own")
        progress(f"evaluating {len(files)} images of {len(folder.classes)} classes from {folder.root}")
        skipped: list[str] = []
        converted = used = 0
        with progress_bar(len(files), "evaluating", progress_bar_enabled) as advance:
            for start in range(0, len(files), batch):
                chunk, chunk_labels = files[start:start + batch], labels[start:start + batch]
                images, keep = [], []
                for i, path in enumerate(chunk):
                    img, reason = read_image(path)
                    if img is None:
                        skipped.append(f"{path.relative_to(folder.root).as_posix()}: {reason}")
                        continue
                    converted += img.mode != "RGB"
                    images.append(img)
                    keep.append(i)
                if images:
                    y = chunk_labels[keep]
                    cache: dict[Preprocess, np.ndarray] = {}
                    for col in columns:
                        if col.recipe not in cache:
                            cache[col.recipe] = np.stack([preprocess_image(im, col.recipe) for im in images])
                        t = time.perf_counter()
                        logits = infer_all(col.runner, cache[col.recipe])
                        col.seconds += time.perf_counter() - t
                        if not np.isfinite(logits).all():
                            col.finite = False
                        c1, c5 = topk_correct(logits, y, 5)
                        col.correct1 += int(c1.sum())
                        col.correct5 += int(c5.sum())
                    used += len(images)
                advance(len(chunk))
        results = [{"precision": c.precision, "artifact": str(c.artifact), "n": used,
                    "top1": c.correct1 / used if used else None, "top5": c.correct5 / used if used else None,
                    "correct1": c.correct1, "correct5": c.correct5,
                    "top5_k": min(5, c.num_classes) if c.num_classes else 5,
                    "finite": c.finite, "infer_seconds": round(c.seconds, 3),
                    "images_per_s": round(used / c.seconds, 1) if c.seconds else None,
                    "preprocess": c.recipe.to_dict(), "runner": c.runner.describe()} for c in columns]
    if not used:
        raise UserError(f"none of the {len(files)} image files in {folder.root} could be decoded")
    ref = next((r for r in results if r["precision"] == "fp32"), None)
    for r in results:
        if ref is not None:
            r["top1_delta_pp"] = round(100 * (r["top1"] - ref["top1"]), 4)
            r["top1_ratio"] = r["top1"] / ref["top1"] if ref["top1"] else None
        if not r["finite"]:
            progress(f"{r['precision']}: NaN or Inf in the logits")
    notes = list(folder.notes)
    if skipped:
        notes.append(f"skipped {len(skipped)} file(s) that are not readable images")
    if converted:
        notes.append(f"converted {converted} grayscale/palette/RGBA image(s) to RGB")
    return {"arch": arch, "data": str(folder.root), "backend": backend, "images": used, "image_files": len(files),
            "classes": len(folder.classes), "label_source": folder.label_source, "skipped": len(skipped),
            "skipped_files": skipped[:20], "converted": converted, "notes": notes,
            "seconds": round(time.perf_counter() - t0, 3), "results": results}


__all__ = ["LABELS_FILE", "evaluate", "topk_correct"]
