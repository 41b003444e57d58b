"""The one place that knows the order: model -> FP32 ONNX -> precision ONNX -> engine.

Each stage makes one artifact from the file before it and never calls another stage
(:mod:`.export`, :mod:`.precision`, :mod:`.engine`); this module chains them, making what is
missing or stale:

    ensure_onnx(50)                          # the FP32 ONNX: exported when missing or from other weights
    ensure_precision(50, "int8")             # + the INT8 Q/DQ ONNX, reused while its request matches
    ensure_engine(50, "int8", BuildOptions(flavour="trt-rtx"))   # + the engine, reused while its manifest matches

Consumers (the API, bench, packaging) ask for an artifact here and get its manifest (with
``"path"``); stages meet only through files and their manifests, in the way Triton Model
Navigator's pipeline builders do (no command calls another).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from .artifacts import DEFAULT_ROOT, artifact_path, check_precision, ensure_writable_dir, sha256_file, verified_manifest, work_folder
from .engine import BuildOptions, ProgressCallback, engine_path_for, preflight
from .engine import ensure_engine as build_or_reuse
from .errors import UserError
from .model import RANDOM_SEED, create_model, random_source, read_state_dict, resolve_arch
from .model.weights import state_dict_sha256
from .onnx_export import DEFAULT_OPSET, export_onnx, validate_options
from .onnx_meta import artifact_facts
from .precision import DEFAULT_CALIB_SAMPLES, MIN_CALIB_IMAGES, make_precision_onnx, read_fp32_source
from .precision.artifact import check_request, precision_request, reusable
from .precision.exclude import check_exclude, parse_exclude
from .preprocess import recipe_from_metadata
from .progress import Progress, quiet
from .tuning import acceptor, load_eval_set, search_plain


def load_model(depth: int | str, *, weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
               preact: bool = False, seed: int = RANDOM_SEED) -> nn.Module:
    """The PyTorch model (the FP32 reference of every parity check)."""
    return create_model(depth, num_classes=num_classes, weights=weights, preact=preact, seed=seed)


def export_model(depth: int | str, *, weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
                 out_dir: str | os.PathLike[str] = DEFAULT_ROOT, batch: int | None = None, opset: int | None = None,
                 exporter: str = "torchscript", preact: bool = False, seed: int = RANDOM_SEED,
                 progress: Progress = quiet) -> dict[str, Any]:
    """Build the model and write ``<out_dir>/<arch>/<arch>.fp32.onnx`` plus its manifest (always)."""
    arch = resolve_arch(depth, preact)
    validate_options(opset or DEFAULT_OPSET, exporter, batch)
    path = artifact_path(arch, "fp32", "onnx", out_dir)
    ensure_writable_dir(path.parent)
    t0 = time.perf_counter()
    progress(f"building {arch} ({'weights ' + str(weights) if weights else 'seeded random weights scaled on photos'})")
    model = load_model(arch, num_classes=num_classes, weights=weights, seed=seed)
    t_model = time.perf_counter() - t0
    progress(f"exporting {path}")
    recipe = model.card.recipe
    manifest = export_onnx(model, path, facts=model.card.facts(), batch=batch, opset=opset or DEFAULT_OPSET,
                           image_size=recipe.image_size, exporter=exporter, recipe=recipe, timings={"model": t_model},
                           started=t0)
    return {"path": str(path), **manifest}


def stale_reason(meta: dict[str, str], weights: str | os.PathLike[str] | None, num_classes: int | None) -> str | None:
    """Why an existing FP32 ONNX does not match explicitly requested weights/classes, or None.

    Without ``weights`` the existing export is used whatever it was made from (a user's own
    export must never be replaced by random weights); its manifest says which weights.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"weights file not found: {weights}")
        if meta.get("weights_file_sha256") != sha256_file(path):
            return f"it was exported from {meta.get('weights_source', 'other weights')}, not {weights}"
    if num_classes is not None and meta.get("num_classes") != str(num_classes):
        return f"it has {meta.get('num_classes')} classes, not {num_classes}"
    return None


def ensure_onnx(depth: int | str, *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                weights: str | os.PathLike[str] | None = None, num_classes: int | None = None, preact: bool = False,
                seed: int = RANDOM_SEED, force: bool = False, progress: Progress = quiet) -> dict[str, Any]:
    """The FP32 ONNX's manifest (with ``"path"``), exported first when missing, stale or forced."""
    arch = resolve_arch(depth, preact)
    path = artifact_path(arch, "fp32", "onnx", out_dir)
    reason = "it does not exist yet" if not path.is_file() else ("--force" if force else None)
    manifest: dict[str, Any] = {}
    if reason is None:
        meta = read_fp32_source(path)
        if not meta.get("weights_source"):
            raise UserError(f"{path} was not made by resnet-deploy (it records no weights): move it away, or "
                            "convert it with --onnx FILE")
        reason = stale_reason(meta, weights, num_classes)
    if reason is None:
        try:  # no reader trusts a manifest that does not describe its file (an interrupted write, a copy)
            manifest = verified_manifest(path, what="ONNX model", fix="re-export it")
        except UserError as e:
            source = meta.get("weights_source", "")
            if weights is None and source and not source.startswith("random("):
                raise UserError(f"{e}; it was made from {source}: re-export it with those --weights") from None
            reason = f"no manifest matches it: {e}"
    if reason:
        progress(f"exporting {path} first ({reason})")
        return {**export_model(arch, weights=weights, num_classes=num_classes, out_dir=out_dir, seed=seed,
                               progress=progress), "reused": False}
    progress(f"source: {path} (weights {meta.get('weights_source', 'unknown')})")
    return {**manifest, "path": str(path), "precision": "fp32", "reused": True}


def ensure_precision(depth: int | str, precision: str, *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                     weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
                     preact: bool = False, seed: int = RANDOM_SEED, calib: str | os.PathLike[str] | None = None,
                     calib_samples: int = DEFAULT_CALIB_SAMPLES, method: str = "entropy", fp16_io: bool = False,
                     high_precision: str = "fp32", source: str | os.PathLike[str] | None = None,
                     exclude: str | list[str] | None = None, min_calib_images: int = MIN_CALIB_IMAGES, force: bool = False, progress: Progress = quiet,
                     progress_bar: bool = False, accuracy_target: float | None = None,
                     data: str | os.PathLike[str] | None = None, labels: str | os.PathLike[str] | None = None,
                     limit: int | None = None, max_excluded: int | None = None) -> dict[str, Any]:
    """The ``precision`` ONNX's manifest (with ``"path"`` and ``"reused"``), making what is missing.

    ``fp32`` is the exported ONNX itself. ``source`` converts a given FP32 ONNX instead of the
    default export (which is made first when missing or made from other ``weights``).
    ``accuracy_target`` (INT8) tunes it to that fraction of FP32's top-1 on ``data``
    (:func:`ensure_tuned_int8`, which ``labels``, ``limit`` and ``max_excluded`` belong to).
    """
    precision = check_precision(precision)
    arch = resolve_arch(depth, preact)
    if accuracy_target is not None:
        if precision != "int8":
            raise UserError(f"--accuracy-target tunes INT8 quantization: use it with --precision int8, not {precision}")
        if fp16_io:
            raise UserError("--fp16-io applies to --precision fp16 only (INT8 models keep FP32 inputs/outputs)")
        return ensure_tuned_int8(arch, accuracy_target, data=data, labels=labels, limit=limit, max_excluded=max_excluded,
                                 out_dir=out_dir, weights=weights, num_classes=num_classes, seed=seed, calib=calib,
                                 calib_samples=calib_samples, method=method, high_precision=high_precision,
                                 source=source, exclude=exclude, min_calib_images=min_calib_images, force=force,
                                 progress=progress, progress_bar=progress_bar)
    given = [f for f, v in (("--data", data), ("--labels", labels), ("--limit", limit), ("--max-excluded", max_excluded))
             if v is not None]
    if given:
        raise UserError(f"{', '.join(given)} set(s) what --accuracy-target is measured on; give --accuracy-target too")
    if precision != "fp32":  # a request that cannot be made fails before any export
        check_request(precision, calib=calib, calib_samples=calib_samples, method=method, fp16_io=fp16_io,
                      high_precision=high_precision, exclude=exclude)
    if precision == "fp32":
        check_exclude(precision, exclude)
        if source is not None:
            raise UserError("precision fp32 is the exported ONNX itself; there is nothing to convert")
        return ensure_onnx(arch, out_dir=out_dir, weights=weights, num_classes=num_classes, seed=seed, force=force,
                           progress=progress)
    if source is None:
        source = ensure_onnx(arch, out_dir=out_dir, weights=weights, num_classes=num_classes, seed=seed,
                             progress=progress)["path"]
    return make_precision_onnx(source, precision, out_dir=out_dir, calib=calib, calib_samples=calib_samples,
                               method=method, fp16_io=fp16_io, high_precision=high_precision, exclude=exclude, seed=seed,
                               min_calib_images=min_calib_images, force=force, progress=progress,
                               progress_bar=progress_bar)


def ensure_tuned_int8(depth: int | str, accuracy_target: float, *, data: str | os.PathLike[str] | None = None,
                      labels: str | os.PathLike[str] | None = None, limit: int | None = None,
                      max_excluded: int | None = None, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                      weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
                      preact: bool = False, seed: int = RANDOM_SEED, calib: str | os.PathLike[str] | None = None,
                      calib_samples: int = DEFAULT_CALIB_SAMPLES, method: str = "entropy", high_precision: str = "fp32",
                      source: str | os.PathLike[str] | None = None, exclude: str | list[str] | None = None,
                      min_calib_images: int = MIN_CALIB_IMAGES, force: bool = False, progress: Progress = quiet,
                      progress_bar: bool = False) -> dict[str, Any]:
    """The INT8 ONNX that meets ``accuracy_target x`` FP32's top-1 on ``data`` (``quantize --accuracy-target``).

    Plain INT8 first (with ``exclude`` as the fixed start), then :mod:`resnet_deploy.tuning`'s
    greedy search on ONNX Runtime CPU keeps the most sensitive blocks in high precision until the
    target holds; ModelOpt then quantizes with those exclusions, and the result is measured again
    before it is published. Reused while the request (tuning part included) matches.
    """
    if not 0 < accuracy_target <= 1:
        raise UserError(f"--accuracy-target is a fraction of FP32's top-1 in (0, 1], e.g. 0.99; got {accuracy_target}")
    if max_excluded is not None and max_excluded < 0:
        raise UserError(f"--max-excluded must be at least 0, got {max_excluded}")
    if high_precision != "fp32":
        raise UserError("--accuracy-target measures candidates on ONNX Runtime CPU, which mis-computes "
                        "--high-precision fp16 graphs: tune with fp32, then quantize --high-precision fp16 "
                        "--exclude <the modules it kept>")
    exclude = parse_exclude(exclude)
    _, method = check_request("int8", calib=calib, calib_samples=calib_samples, method=method,
                              high_precision=high_precision, exclude=exclude)
    arch = resolve_arch(depth, preact)
    if source is None:
        source = ensure_onnx(arch, out_dir=out_dir, weights=weights, num_classes=num_classes, seed=seed,
                             progress=progress)["path"]
    src = Path(source).expanduser()
    src_meta = read_fp32_source(src)
    images = load_eval_set(data, recipe_from_metadata(src_meta), label_set=src_meta.get("label_set", "imagenet"),
                           labels_file=labels, limit=limit, calib=calib, calib_samples=calib_samples, seed=seed,
                           progress=progress, progress_bar_enabled=progress_bar)
    tuning = {"accuracy_target": accuracy_target, "data_digest": images.digest, "max_excluded": max_excluded}
    options = dict(calib=calib, calib_samples=calib_samples, method=method, high_precision=high_precision,
                   exclude=exclude, seed=seed)
    dst = artifact_path(src_meta.get("arch") or arch, "int8", "onnx", out_dir)
    plain = None
    if not force:  # one request (the source and calibration data hashed once): plain, and tuned = plain + tuning
        plain_request = precision_request(src, "int8", src_meta, **options)
        cached = reusable(dst, {**plain_request, "tuning": tuning})
        if cached is not None:
            progress(f"reusing {dst}: tuned for the same target, images and settings (--force redoes it)")
            return {**cached, "path": str(dst), "reused": True}
        # plain INT8 to start from: the published one when it is exactly that, else made in the work folder, so
        # that whatever <arch>.int8.onnx holds (an earlier tuned INT8) stays until the tuned result replaces it
        plain = reusable(dst, plain_request)
    with work_folder(dst) as work:
        start = work / "plain.int8.onnx"
        if plain is None:
            plain = make_precision_onnx(src, "int8", out_dir=work / "plain", min_calib_images=min_calib_images,
                                        progress=progress, progress_bar=progress_bar, **options)
            shutil.copyfile(plain["path"], start)
        else:
            progress(f"starting from {dst}: plain INT8 of the same source, calibration data and settings")
            shutil.copyfile(dst, start)
        measure, found = search_plain(src, start, images, accuracy_target, work, max_excluded=max_excluded,
                                      progress=progress, progress_bar_enabled=progress_bar)
        if found["kept"]:
            progress(f"quantizing again with {', '.join(found['kept'])} kept out of INT8, then measuring the result")
        quantized = None if found["kept"] else (start, plain["conversion"])
        return make_precision_onnx(src, "int8", out_dir=out_dir, min_calib_images=min_calib_images, force=True,
                                   tuning=tuning, keep=found["kept"], accept=acceptor(measure, found),
                                   quantized=quantized, progress=progress, progress_bar=progress_bar, **options)


def current_precision(depth: int | str, precision: str, *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                      weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
                      preact: bool = False, seed: int = RANDOM_SEED, progress: Progress = quiet,
                      **make: Any) -> dict[str, Any]:
    """The precision ONNX the later stages (build, parity, eval, bench, package, diagnose) use.

    The one ``quantize`` left at the artifact path is used as it is, whatever settings made it
    (``--calib``, ``--exclude``, ``--accuracy-target``), while its file matches its manifest and
    it was made from the current FP32 export; only when there is none (or it is stale) is one
    made, with ``make``'s settings (:func:`ensure_precision`'s keywords; defaults when empty).
    """
    precision = check_precision(precision)
    arch = resolve_arch(depth, preact)
    fp32 = ensure_onnx(arch, out_dir=out_dir, weights=weights, num_classes=num_classes, seed=seed, progress=progress)
    if precision == "fp32":
        return fp32
    dst = artifact_path(arch, precision, "onnx", out_dir)
    if dst.is_file():
        try:
            manifest = verified_manifest(dst)
        except UserError:
            manifest = {}
        if manifest.get("precision") == precision and manifest.get("source", {}).get("sha256") == fp32.get("sha256"):
            progress(f"using {dst} as quantize made it")
            return {**manifest, "path": str(dst), "reused": True}
    return ensure_precision(arch, precision, out_dir=out_dir, weights=weights, num_classes=num_classes, seed=seed,
                            source=fp32["path"], progress=progress, **make)


def ensure_engine(depth: int | str | None, precision: str | None = "fp32", options: BuildOptions | None = None, *,
                  onnx: str | os.PathLike[str] | None = None, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                  weights: str | os.PathLike[str] | None = None, num_classes: int | None = None, preact: bool = False,
                  seed: int = RANDOM_SEED, force: bool = False, progress: Progress = quiet,
                  build_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """``<out_dir>/<arch>/<arch>.<precision>.<flavour>.engine`` for a model: what ``resnet-deploy build`` does.

    The precision's ONNX (``onnx``, or the one :func:`ensure_precision` makes) is compiled; the
    engine is reused when its manifest matches the request and rebuilt otherwise. The result
    says which (``reused``) and why (``rebuild_reason``). A missing TensorRT or GPU is reported
    before any ONNX work.
    """
    opts = options if options is not None else BuildOptions()
    if onnx is not None:
        onnx_path = Path(onnx)
        if not onnx_path.is_file():
            raise UserError(f"ONNX file not found: {onnx_path}")
        facts = artifact_facts(onnx_path, "onnx")  # an image classifier, or one line saying why not
        precision = check_precision(precision) if precision is not None else facts["precision"]
        preflight(opts, precision)
        recorded = facts.get("arch")
        if depth is None:
            # a model not made here has no architecture name: its engine is named after its file
            arch = recorded or re.sub(r"[^A-Za-z0-9_-]+", "_", onnx_path.name.split(".")[0]) or "model"
        else:
            arch = resolve_arch(depth, preact)
            if recorded and recorded != arch:
                raise UserError(f"{onnx_path} holds {recorded}, not {arch}; pass --depth to match it")
        onnx_status = "given"
    else:
        precision = check_precision(precision or "fp32")
        preflight(opts, precision)
        arch = resolve_arch(50 if depth is None else depth, preact)
        made = current_precision(arch, precision, out_dir=out_dir, weights=weights, num_classes=num_classes, seed=seed,
                                 progress=progress)
        onnx_path = Path(made["path"])
        onnx_status = "reused" if made.get("reused", True) else "made"
    engine_path = engine_path_for(arch, precision, opts.flavour, out_dir)
    ensure_writable_dir(engine_path.parent)
    manifest, reason = build_or_reuse(onnx_path, engine_path, opts, precision=precision, force=force,
                                      progress=build_progress, say=progress)
    return {**manifest, "path": str(engine_path), "reused": reason is None, "rebuild_reason": reason,
            "onnx_status": onnx_status}


def check_same_weights(artifact: Path, meta: dict[str, str], weights: str | os.PathLike[str] | None, seed: int) -> None:
    """Refuse an artifact made from other weights than the ones asked for (cheap checks, no model build)."""
    source = meta.get("weights_source")
    if not source:
        return  # not made by this toolkit: nothing recorded to compare
    if weights is None:
        want = random_source(seed)
        if source != want:
            raise UserError(f"{artifact} was made from {source}, not the seeded random weights {want}; "
                            "pass the same --weights (or --artifact another file)")
        return
    if meta.get("weights_file_sha256") and meta["weights_file_sha256"] == sha256_file(weights):
        return
    if meta.get("weights_sha256") and state_dict_sha256(read_state_dict(weights)) == meta["weights_sha256"]:
        return
    raise UserError(f"{artifact} was made from other weights ({source}) than {weights}; re-export it or pass the matching --weights")


__all__ = ["check_same_weights", "current_precision", "ensure_engine", "ensure_onnx", "ensure_precision", "ensure_tuned_int8", "export_model", "load_model",
           "stale_reason"]
