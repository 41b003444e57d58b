"""Image folders: the files below a folder, decoding them without raising, labelled class folders.

A folder is flat or has one sub-folder per class (any depth; every image file below it
counts). Files that are not images or cannot be decoded are reported, never a crash. The
labelled layout is torchvision's ImageFolder: ``<data>/<class>/<image>``. Torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserError
from .labels import read_labels
from .preprocess import IMAGE_EXTENSIONS


def read_image(path: Path) -> tuple[Any | None, str | None]:
    """``(PIL image, None)`` or ``(None, reason)``: a bad file is reported, never raised."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy(), None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, reason[:200]
    except Exception as e:  # noqa: BLE001 - Pillow plugins raise odd types on damaged files
        return None, f"{type(e).__name__}: {str(e)[:160]}"


def image_files(folder: str | os.PathLike[str]) -> tuple[list[Path], int]:
    """(image files below ``folder`` sorted by relative path, number of other files).

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are ignored.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise UserError(f"image folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    images, others = [], 0
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(p)
        else:
            others += 1
    images.sort(key=lambda p: p.relative_to(root).as_posix())
    return images, others


MAX_CLASS_INDEX = 1 << 24


def numeric_class_folders(class_dirs: list[Path]) -> tuple[dict[str, int], str]:
    """Folders named ``3``, ``7``, ``10``: each is the class index it names, not its sorted position (which
    would put ``10`` before ``3`` and score ``7`` against class 1)."""
    index = {d.name: int(d.name) for d in class_dirs}
    too_big = [d.name for d in class_dirs if index[d.name] >= MAX_CLASS_INDEX]
    if too_big:
        raise UserError(f"class folder {too_big[0]!r} is a number but no class index (at most {MAX_CLASS_INDEX - 1})")
    same = len(set(index.values())) != len(index)
    if same:
        raise UserError("two class folders name the same class index (such as '7' and '07'); merge them")
    return index, "numeric folder names, each the class index it names"


@dataclass
class LabelledFolder:
    root: Path
    classes: list[str]                 # class folder names, sorted
    files: list[Path]
    labels: np.ndarray                 # model class index of each file
    label_source: str                  # "sorted folder names" or the labels file
    notes: list[str] = field(default_factory=list)


def labelled_folder(folder: str | os.PathLike[str], labels_file: str | os.PathLike[str] | None = None,
                    class_names: list[str] | None = None, class_names_source: str = "the model's class names") -> LabelledFolder:
    """Find the class sub-folders and their images; map each folder to a class index.

    By the labels file when one is given; else by ``class_names`` (the model's own, e.g. CIFAR-10's)
    when every folder is named after one of them; else by the sorted folder names.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise UserError(f"data folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"--data must be a folder with one sub-folder per class, got the file {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose, _ = image_files(root)
        hint = f" (it holds {len(loose)} loose image(s): labels come from sub-folder names)" if loose else ""
        raise UserError(f"{root} has no class sub-folders{hint}; eval needs <data>/<class>/<image>")
    index: dict[str, int]
    early_notes: list[str] = []
    source = "sorted folder names (ImageFolder convention)"
    if labels_file is not None:
        names = read_labels(Path(labels_file).expanduser())
        index = {n: i for i, n in reversed(list(enumerate(names)))}
        missing = [d.name for d in class_dirs if d.name not in index]
        if missing:
            raise UserError(f"{len(missing)} class folder(s) are not in the labels file {labels_file}: "
                            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        source = f"labels file {labels_file}"
    elif class_names and all(d.name in class_names for d in class_dirs):
        index = {n: i for i, n in enumerate(class_names)}
        source = class_names_source
    elif all(d.name.isascii() and d.name.isdigit() for d in class_dirs):
        index, source = numeric_class_folders(class_dirs)
    else:
        index = {d.name: i for i, d in enumerate(class_dirs)}
        if class_names:
            early_notes.append(f"the class folder names are not the model's class names (e.g. {class_dirs[0].name!r}): "
                               "mapped by sorted folder order, the ImageFolder convention (right for ImageNet's wnid "
                               "folders); pass --labels FILE to map them by name")
    files, labels = [], []
    empty = []
    for d in class_dirs:
        found, _ = image_files(d)
        if not found:
            empty.append(d.name)
        files += found
        labels += [index[d.name]] * len(found)
    if not files:
        raise UserError(f"no image files in the class folders of {root}")
    notes = early_notes + ([f"{len(empty)} class folder(s) hold no images: {', '.join(empty[:5])}"] if empty else [])
    return LabelledFolder(root, [d.name for d in class_dirs], files, np.asarray(labels, dtype=np.int64), source,
                          notes)


__all__ = ["LabelledFolder", "image_files", "labelled_folder", "read_image"]
