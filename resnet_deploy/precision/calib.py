"""Calibration images: a folder of real images (or scikit-image's photographs), preprocessed
exactly as at evaluation time, sampled deterministically, with a digest for the cache.

A folder is flat or has one sub-folder per class (:func:`resnet_deploy.datasets.image_files`).
Files that are not images or cannot be decoded are skipped and counted, never a crash;
grayscale, palette and RGBA images are converted to RGB by the shared preprocessing
(:func:`resnet_deploy.preprocess.preprocess_image`). Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..datasets import image_files, read_image
from ..errors import UserError
from ..preprocess import SAMPLE_IMAGES, Preprocess, augmented_photos, preprocess_image
from ..progress import Progress, progress_bar, quiet

MIN_CALIB_IMAGES = 8          # below this many decodable images, calibration stops with an error
DEFAULT_CALIB_SAMPLES = 512
BUNDLED_MAX_VIEWS = 64        # views of the 8 bundled photographs: more adds nothing new
BUNDLED = "scikit-image bundled photographs"


@dataclass
class CalibSet:
    """Preprocessed calibration images and where they came from."""

    batch: np.ndarray                     # float32 (N, 3, H, W)
    source: str                           # the folder, or BUNDLED
    digest: str                           # identifies the data + preprocessing + sampling (the cache key)
    found: int                            # image files found (bundled: views made)
    used: int                             # images in ``batch``
    skipped: list[str] = field(default_factory=list)   # "path: reason" of undecodable files
    converted: int = 0                    # grayscale / palette / RGBA / CMYK images converted to RGB
    not_images: int = 0                   # files without an image extension (ignored, counted)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "digest": self.digest, "found": self.found, "used": self.used,
                "skipped": len(self.skipped), "skipped_files": self.skipped[:20], "converted": self.converted,
                "not_images": self.not_images, "shape": list(self.batch.shape[1:]), "notes": self.notes}


def _needs_conversion(img) -> bool:
    return getattr(img, "mode", "RGB") != "RGB"


def select(files: list[Path], samples: int, seed: int) -> list[Path]:
    """All files if there are at most ``samples``, else a seeded random subset (in sorted order)."""
    if len(files) <= samples:
        return list(files)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(files), size=samples, replace=False))
    return [files[i] for i in keep]


def _digest(parts: list[Any]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def calibration_digest(folder: str | os.PathLike[str] | None, recipe: Preprocess, samples: int,
                       seed: int = 0) -> str:
    """The cache key of :func:`load_calibration` without decoding any image (hashes file bytes)."""
    if folder is None:
        return _bundled_digest(recipe, min(samples, BUNDLED_MAX_VIEWS), seed)
    root = Path(folder).expanduser()
    files, _ = image_files(root)
    chosen = _candidates(files, samples, seed)
    return _folder_digest(root, chosen, recipe, samples, seed)


def _candidates(files: list[Path], samples: int, seed: int) -> list[Path]:
    # Deterministic order in which files are tried: the seeded sample first, then the rest (so
    # undecodable files are replaced by the next candidates in a reproducible way).
    first = select(files, samples, seed)
    chosen = set(first)
    return first + [f for f in files if f not in chosen]


def _folder_digest(root: Path, candidates: list[Path], recipe: Preprocess, samples: int, seed: int) -> str:
    h = hashlib.sha256()
    for p in candidates[: samples + max(16, samples // 4)]:  # what can possibly be read for this request
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        try:
            h.update(hashlib.sha256(p.read_bytes()).digest())
        except OSError:
            h.update(b"unreadable")
    return _digest(["folder", h.hexdigest(), recipe.to_dict(), samples, seed])


def _bundled_digest(recipe: Preprocess, views: int, seed: int) -> str:
    try:
        skimage_version = metadata.version("scikit-image")
    except metadata.PackageNotFoundError:
        skimage_version = "unknown"
    return _digest(["bundled", skimage_version, list(SAMPLE_IMAGES), recipe.to_dict(), views, seed])


def load_calibration(folder: str | os.PathLike[str] | None, recipe: Preprocess, *, samples: int = DEFAULT_CALIB_SAMPLES,
                     seed: int = 0, min_images: int = MIN_CALIB_IMAGES, progress: Progress = quiet,
                     progress_bar_enabled: bool = False) -> CalibSet:
    """Read, convert and preprocess up to ``samples`` calibration images.

    ``folder=None`` uses seeded views (crops, flips) of scikit-image's bundled photographs and
    says so through ``progress``. With a folder: more image files than ``samples`` -> a seeded
    random subset; fewer -> all of them (reported); fewer decodable images than ``min_images``
    -> :class:`UserError`. Undecodable files are skipped, counted and replaced by further
    candidates when there are any.
    """
    if samples < 1:
        raise UserError(f"--calib-samples must be at least 1, got {samples}")
    if folder is None:
        return _bundled_calibration(recipe, samples, seed, progress)
    root = Path(folder).expanduser()
    files, others = image_files(root)
    if not files:
        extra = f" ({others} other file(s) without an image extension)" if others else ""
        raise UserError(f"calibration folder {root} holds no image files{extra}; "
                        "give a folder of .jpg/.png/... images (flat or one sub-folder per class)")
    candidates = _candidates(files, samples, seed)
    digest = _folder_digest(root, candidates, recipe, samples, seed)
    want = min(samples, len(files))
    notes: list[str] = []
    if len(files) < samples:
        notes.append(f"found {len(files)} image file(s) in {root}, fewer than the {samples} asked for: using all of them")
        progress(notes[-1])
    else:
        progress(f"calibrating on {samples} of {len(files)} images in {root} (seeded sample, seed {seed})")

    with progress_bar(want, "calibration images", progress_bar_enabled) as advance:
        arrays, skipped, converted = _read_images(root, candidates, want, recipe, advance)
    if skipped:
        notes.append(f"skipped {len(skipped)} file(s) that are not readable images")
        progress(notes[-1] + " (first: " + skipped[0] + ")")
    if converted:
        notes.append(f"converted {converted} grayscale/palette/RGBA image(s) to RGB")
    if len(arrays) < min_images:
        raise UserError(f"only {len(arrays)} readable calibration image(s) in {root} "
                        f"({len(files)} image file(s) found, {len(skipped)} unreadable); at least {min_images} needed")
    return CalibSet(np.stack(arrays).astype(np.float32, copy=False), str(root), digest, len(files), len(arrays),
                    skipped, converted, others, notes)


def _bundled_calibration(recipe: Preprocess, samples: int, seed: int, progress: Progress) -> CalibSet:
    """Seeded views of scikit-image's photographs (at most :data:`BUNDLED_MAX_VIEWS`), said through ``progress``."""
    views = min(samples, BUNDLED_MAX_VIEWS)
    progress(f"no calibration folder given: calibrating on {views} views of scikit-image's "
             f"{len(SAMPLE_IMAGES)} bundled photographs (pass --calib DIR for your own data)")
    batch = augmented_photos(views, recipe, seed=seed)
    notes = [f"no --calib folder: {views} seeded views of the {len(SAMPLE_IMAGES)} photographs scikit-image ships"]
    if samples > views:
        notes.append(f"capped at {BUNDLED_MAX_VIEWS} views (asked for {samples})")
    return CalibSet(batch, BUNDLED, _bundled_digest(recipe, views, seed), views, views, notes=notes)


def _read_images(root: Path, candidates: list[Path], want: int, recipe: Preprocess,
                 advance: Callable[[int], Any]) -> tuple[list[np.ndarray], list[str], int]:
    """Up to ``want`` preprocessed images from ``candidates`` in order; (arrays, skipped with why, converted to RGB)."""
    arrays: list[np.ndarray] = []
    skipped: list[str] = []
    converted = 0
    for path in candidates:
        if len(arrays) >= want:
            break
        img, reason = read_image(path)
        if img is None:
            skipped.append(f"{path.relative_to(root).as_posix()}: {reason}")
            continue
        converted += _needs_conversion(img)
        try:
            arrays.append(preprocess_image(img, recipe))
        except Exception as e:  # noqa: BLE001 - e.g. a 0-pixel image or an exotic mode
            skipped.append(f"{path.relative_to(root).as_posix()}: cannot convert ({type(e).__name__}: {e})")
            continue
        advance(1)
    return arrays, skipped, converted


__all__ = ["BUNDLED", "BUNDLED_MAX_VIEWS", "CalibSet", "DEFAULT_CALIB_SAMPLES", "MIN_CALIB_IMAGES", "calibration_digest",
           "load_calibration", "select"]
