"""Classify image files with any runnable backend and report the top-k classes.

    from resnet_deploy.predict import predict
    result = predict(["cat.jpg"], 50, weights="resnet50.pth", backend="ort")
    result["predictions"][0]["top"][0]   # {"rank": 1, "index": 281, "label": "tabby", "probability": ...}

The images are preprocessed by :mod:`resnet_deploy.preprocess` with the recipe the artifact
records (the same code the parity check, the INT8 calibrator and the edge bundle's ``infer.py``
use), run through :func:`resnet_deploy.runners.open_runner`, and the logits turned into
probabilities with a softmax (:mod:`resnet_deploy.classify`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .artifacts import DEFAULT_ROOT, artifact_path, sha256_file
from .errors import UserError
from .preprocess import DEFAULT, Preprocess

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def recipe_from_metadata(meta: dict[str, Any]) -> Preprocess:
    """The preprocessing an artifact records (ONNX ``resnet_deploy.*`` metadata); the default if it records none."""
    try:
        kwargs: dict[str, Any] = {}
        if "image_size" in meta:
            kwargs["image_size"] = int(meta["image_size"])
        if "resize" in meta:
            kwargs["resize"] = int(meta["resize"])
        for key in ("mean", "std"):
            if key in meta:
                value = meta[key]
                value = json.loads(value) if isinstance(value, str) else value
                if len(value) != 3:
                    raise ValueError(f"{key} must have 3 values")
                kwargs[key] = tuple(float(v) for v in value)
        return Preprocess(**kwargs) if kwargs else DEFAULT
    except (ValueError, TypeError) as e:
        raise UserError(f"the artifact records unreadable preprocessing metadata: {e}") from None


def precision_onnx(arch: str, precision: str, *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                   weights: str | os.PathLike[str] | None = None, num_classes: int | None = None, seed: int = 0,
                   progress: Progress = _quiet) -> Path:
    """The precision's ONNX under ``out_dir``: reused when up to date, else made (by the quantize stage)."""
    try:
        from .quantize import ensure_precision_onnx
    except ImportError:  # toolkit without the quantize stage: only FP32 can be made here
        path = artifact_path(arch, precision, "onnx", out_dir)
        if path.is_file():
            return path
        if precision != "fp32":
            raise UserError(f"{path} does not exist; create it with `resnet-deploy quantize --depth {arch} --precision {precision}`") from None
        from .api import export

        progress(f"{path} does not exist yet: exporting it")
        return Path(export(arch, weights=weights, num_classes=num_classes, out_dir=out_dir, seed=seed,
                           progress=progress)["path"])
    manifest = ensure_precision_onnx(arch, precision, out_dir=out_dir, weights=weights, num_classes=num_classes,
                                     seed=seed, progress=progress)
    return Path(manifest["path"])


def check_same_weights(artifact: Path, meta: dict[str, str], weights: str | os.PathLike[str] | None, seed: int) -> None:
    """Refuse an artifact made from other weights than the ones asked for (cheap checks, no model build)."""
    source = meta.get("weights_source")
    if not source:
        return  # not made by this toolkit: nothing recorded to compare
    if weights is None:
        from .weights import BN_CALIBRATION_IMAGES

        want = f"random(seed={seed},bn=photos{BN_CALIBRATION_IMAGES})"
        if source != want:
            raise UserError(f"{artifact} was made from {source}, not the seeded random weights {want}; "
                            "pass the same --weights (or --artifact another file)")
        return
    if meta.get("weights_file_sha256") and meta["weights_file_sha256"] == sha256_file(weights):
        return
    if meta.get("weights_sha256"):
        from .weights import read_state_dict, state_dict_sha256

        if state_dict_sha256(read_state_dict(weights)) == meta["weights_sha256"]:
            return
    raise UserError(f"{artifact} was made from other weights ({source}) than {weights}; re-export it or pass the matching --weights")


def predict(images: Sequence[str | os.PathLike[str]], depth: int | str = 50, *, weights: str | os.PathLike[str] | None = None,
            backend: str = "ort", precision: str = "fp32", artifact: str | os.PathLike[str] | None = None,
            labels: str | os.PathLike[str] | None = None, top: int = 5, num_classes: int | None = None,
            out_dir: str | os.PathLike[str] = DEFAULT_ROOT, preact: bool = False, seed: int = 0,
            progress: Progress = _quiet, **runner_options: Any) -> dict[str, Any]:
    """Top-``top`` classes with softmax probabilities for each image file.

    ``backend`` is any :data:`resnet_deploy.runners.BACKENDS` name: ``torch`` runs the model
    itself, ``ort``/``ort-cuda`` the precision's ONNX (made if missing), ``trt``/``trt-rtx`` a
    built engine (``artifact`` or the default path under ``out_dir``). ``labels`` is a file
    with one class name per line; without it the ImageNet names are used, which needs 1000
    classes.
    """
    from .classify import infer_in_batches, top_k
    from .labels import load_labels, read_labels
    from .models import resolve_arch
    from .preprocess import load_image, preprocess_image
    from .runners import artifact_kind, open_runner

    if not images:
        raise UserError("no images given")
    if top < 1:
        raise UserError(f"--top must be at least 1 (got {top})")
    arch = resolve_arch(depth, preact)
    kind = artifact_kind(backend)
    label_names = read_labels(labels) if labels is not None else None  # a bad label file fails before any slow work
    decoded = [(str(p), load_image(p)) for p in images]  # an undecodable image fails before any slow work

    meta: dict[str, str] = {}
    min_batch, max_batch = 1, None
    if kind == "torch":
        from .api import create_model

        progress(f"building {arch}")
        model = create_model(arch, num_classes=num_classes, weights=weights, seed=seed)
        classes = model.num_classes
        target: Any = model
        artifact_name = weights and str(weights) or model.weights_info.source
    else:
        if artifact is None:
            if kind == "onnx":
                artifact = precision_onnx(arch, precision, out_dir=out_dir, weights=weights, num_classes=num_classes,
                                          seed=seed, progress=progress)
            else:
                from .engine import engine_path_for

                artifact = engine_path_for(arch, precision, kind, out_dir)
                if not Path(artifact).is_file():
                    raise UserError(f"{artifact} does not exist; build it with `resnet-deploy build --depth {depth} "
                                    f"--precision {precision} --engine {backend}`")
        artifact = Path(artifact)
        from .api import artifact_facts

        meta = artifact_facts(artifact, kind)
        if meta.get("arch") not in (None, arch):
            raise UserError(f"{artifact} holds {meta['arch']}, not {arch} (pass --depth to match)")
        check_same_weights(artifact, meta, weights, seed)
        classes = int(meta["num_classes"]) if str(meta.get("num_classes", "")).isdigit() else num_classes
        if num_classes is not None and classes is not None and classes != num_classes:
            raise UserError(f"{artifact} has {classes} classes, not --num-classes {num_classes}")
        fixed = str(meta.get("batch", "dynamic"))
        if fixed.isdigit():
            min_batch = max_batch = int(fixed)
        target = artifact
        artifact_name = str(artifact)

    recipe = recipe_from_metadata(meta)
    if classes is not None:
        names = load_labels(labels, classes) if label_names is None else label_names
        if len(names) != classes:
            raise UserError(f"label file {labels} has {len(names)} names but the model has {classes} classes")
    progress(f"preprocessing {len(decoded)} image(s)")
    import numpy as np

    batch = np.stack([preprocess_image(img, recipe) for _, img in decoded])
    progress(f"running {len(batch)} image(s) on {backend}")
    with open_runner(backend, target, precision=precision if kind == "torch" else meta.get("precision", precision),
                     **runner_options) as runner:
        if kind in ("trt", "trt-rtx"):
            min_batch, max_batch = getattr(runner, "min_batch", 1), getattr(runner, "max_batch", None)
        logits = infer_in_batches(runner, batch, min_batch=min_batch, max_batch=max_batch)
        described = runner.describe()
    if classes is None:
        classes = int(logits.shape[1])
        names = load_labels(labels, classes) if label_names is None else label_names
    if logits.shape[1] != classes or len(names) != logits.shape[1]:
        raise UserError(f"the model returned {logits.shape[1]} classes but there are {len(names)} labels")
    rows = top_k(logits, names, top)
    return {
        "arch": arch,
        "backend": backend,
        "precision": precision if kind == "torch" else meta.get("precision", precision),
        "artifact": artifact_name,
        "runner": described,
        "num_classes": classes,
        "labels": str(labels) if labels is not None else "imagenet",
        "preprocess": recipe.to_dict(),
        "top": min(top, classes),
        "predictions": [{"image": name, "top": row} for (name, _), row in zip(decoded, rows)],
    }


__all__ = ["predict", "precision_onnx", "recipe_from_metadata", "check_same_weights"]
