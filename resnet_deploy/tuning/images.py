"""The images a diagnosis or an accuracy target is measured on, decoded and preprocessed once.

``--data DIR`` with one sub-folder per class is labelled (folder names mapped through the
model's class names or ``--labels``, as ``eval`` does): the score is top-1 accuracy. A flat
folder, or no ``--data`` (the calibration images), has no labels: the score is agreement with
the FP32 model's top-1, and every report says so. ``limit`` keeps an evenly spaced subset.
The digest (relative paths, file hashes, labels, preprocessing) keys tuned artifacts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import sha256_file
from ..datasets import image_files, labelled_folder, read_image
from ..errors import UserError
from ..labels import LABEL_SETS, builtin_labels
from ..precision import DEFAULT_CALIB_SAMPLES, load_calibration
from ..preprocess import Preprocess, preprocess_image
from ..progress import Progress, progress_bar, quiet

MIN_IMAGES = 8
# Every candidate is measured on the same preprocessed images, so they are held in memory: at most this many
# bytes of them (2 GiB: about 3,500 images at 224x224, 174,000 at 32x32). A larger --data is measured on an
# evenly spaced subset, and the report says so (ImageNet's 50,000 validation images would need 30 GB).
MAX_EVAL_BYTES = 2 << 30
TOP1 = "top-1"
AGREEMENT = "agreement with FP32 top-1"


@dataclass
class EvalSet:
    batch: np.ndarray                  # preprocessed images, N x C x H x W float32
    labels: np.ndarray | None          # class index per image, None when unlabelled
    source: str
    digest: str
    notes: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return TOP1 if self.labels is not None else AGREEMENT

    def describe(self) -> dict:
        return {"source": self.source, "images": len(self.batch), "labelled": self.labels is not None,
                "metric": self.metric, "digest": self.digest, "notes": self.notes}


def _spaced(items: list, limit: int | None) -> list[int]:
    if limit is None or limit >= len(items):
        return list(range(len(items)))
    return sorted(set(np.linspace(0, len(items) - 1, limit).round().astype(int).tolist()))


def load_eval_set(data: str | os.PathLike[str] | None, recipe: Preprocess, *, label_set: str = "imagenet",
                  labels_file: str | os.PathLike[str] | None = None, limit: int | None = None,
                  calib: str | os.PathLike[str] | None = None, calib_samples: int = DEFAULT_CALIB_SAMPLES,
                  seed: int = 0, progress: Progress = quiet, progress_bar_enabled: bool = False) -> EvalSet:
    """The measurement images: ``data`` (labelled or flat folder) or, without it, the calibration images."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if data is None:
        cal = load_calibration(calib, recipe, samples=min(calib_samples, limit or calib_samples), seed=seed,
                               progress=progress, progress_bar_enabled=progress_bar_enabled)
        return EvalSet(cal.batch, None, f"the calibration images ({cal.source})", "calib:" + cal.digest,
                       [*cal.notes, "no --data: measured on the calibration images, which the INT8 ranges were "
                                    "fitted to (pass --data DIR for a fair figure)"])
    root = Path(data).expanduser()
    if not root.is_dir():
        raise UserError(f"--data folder not found: {root}" if not root.exists() else f"--data must be a folder, got the file {root}")
    has_classes = any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())
    notes: list[str] = []
    if has_classes:
        builtin = builtin_labels(label_set) if label_set in LABEL_SETS else None
        folder = labelled_folder(root, labels_file, builtin, f"the model's {label_set} class names")
        files, labels, notes = folder.files, folder.labels, list(folder.notes)
        source = f"{root} ({len(folder.classes)} classes, labels from {folder.label_source})"
    else:
        files, _ = image_files(root)
        labels = None
        source = f"{root} (no class sub-folders: unlabelled)"
        if labels_file is not None:
            raise UserError(f"--labels maps class sub-folders, and {root} has none")
    per_image = 3 * recipe.image_size * recipe.image_size * 4
    fits = max(MIN_IMAGES, MAX_EVAL_BYTES // per_image)
    if min(limit or len(files), len(files)) > fits:
        notes.append(f"{root} has {len(files)} images{f' (--limit {limit})' if limit else ''}; measured on an evenly "
                     f"spaced {fits} of them: the preprocessed images are held in memory, at most "
                     f"{MAX_EVAL_BYTES / (1 << 30):g} GiB")
        limit = fits
    keep = _spaced(files, limit)
    files = [files[i] for i in keep]
    labels = labels[keep] if labels is not None else None
    batch = np.empty((len(files), 3, recipe.image_size, recipe.image_size), dtype=np.float32)  # no second copy
    kept, skipped = [], 0
    h = hashlib.sha256(repr(recipe.to_dict()).encode())
    with progress_bar(len(files), "reading images", progress_bar_enabled) as advance:
        for i, path in enumerate(files):
            img, _reason = read_image(path)
            advance(1)
            if img is None:
                skipped += 1
                continue
            batch[len(kept)] = preprocess_image(img, recipe)
            kept.append(i)
            h.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\0"
                     f"{'' if labels is None else int(labels[i])}\n".encode())
    if skipped:
        notes.append(f"skipped {skipped} file(s) that are not readable images")
    if len(kept) < MIN_IMAGES:
        raise UserError(f"only {len(kept)} readable image(s) in {root}; measuring needs at least {MIN_IMAGES}")
    return EvalSet(batch[:len(kept)], None if labels is None else labels[kept], source, "data:" + h.hexdigest(), notes)


def split_eval_set(images: EvalSet, fraction: float) -> tuple[EvalSet, EvalSet]:
    """(search part, held-out part): an evenly spaced ``fraction`` of the images held out, the same every run.

    Evenly spaced over the set's order (class folder by class folder for a labelled set), so each class
    gives about its share. Each part needs :data:`MIN_IMAGES` images.
    """
    n = len(images.batch)
    held = _spaced(list(range(n)), max(1, round(fraction * n))) if 0 < fraction < 1 else []
    rest = sorted(set(range(n)) - set(held))
    if len(held) < MIN_IMAGES or len(rest) < MIN_IMAGES:
        raise UserError(f"--holdout {fraction:g} of {n} images leaves {len(rest)} to search and {len(held)} held out; "
                        f"each part needs at least {MIN_IMAGES}: give more images or another fraction")

    def part(idx: list[int], name: str) -> EvalSet:
        digest = hashlib.sha256(f"{images.digest}\0{name}\0{fraction!r}".encode()).hexdigest()
        return EvalSet(images.batch[idx], None if images.labels is None else images.labels[idx],
                       f"{images.source}, {name} part ({len(idx)} of {n}, --holdout {fraction:g})", digest,
                       list(images.notes))

    return part(rest, "search"), part(held, "held-out")


__all__ = ["AGREEMENT", "EvalSet", "MIN_IMAGES", "TOP1", "load_eval_set", "split_eval_set"]
