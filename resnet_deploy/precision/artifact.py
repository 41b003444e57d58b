"""The precision artifact: ``<out>/<arch>/<arch>.{fp16,bf16,int8}.onnx`` + manifest, from an FP32 ONNX file.

The stage reads the FP32 ONNX and its ``resnet_deploy.*`` metadata and writes the precision
ONNX beside it; it never exports (making the FP32 ONNX when missing is the pipeline's job).

The result is cached: an existing artifact whose manifest records the same request (source
ONNX sha256, calibration data digest, method, samples, options) and whose file matches the
manifest is reused without recalibrating; ``force=True`` redoes it. The precision ONNX keeps the
source's metadata (arch, weights sha256, preprocessing) with ``precision`` updated, so
``parity``, ``eval`` and ``build`` know what it is.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import onnx

from ..artifacts import (
    DEFAULT_ROOT,
    Precision,
    Snapshot,
    artifact_path,
    ensure_writable_dir,
    publish_manifest,
    read_manifest,
    replacing,
    sha256_file,
    verify,
    work_folder,
)
from ..errors import UserError
from ..onnx_meta import detect_precision, graph_io, load_onnx, load_onnx_bytes, read_metadata, set_metadata
from ..preprocess import recipe_from_metadata
from ..progress import Progress, quiet
from .autocast import LOW_PRECISIONS, convert_fp16
from .calib import CalibSet, calibration_digest, load_calibration
from .exclude import excluded_nodes, module_paths, node_patterns, parse_exclude
from .options import QuantizeOptions, TunedInt8
from .ort_cpu import RUNTIME, flavour_name, quantize_ort_cpu
from .placement import PLACEMENT_VERSION
from .ptq import quantize_int8

FP16_REFERENCE_IMAGES = 16   # AutoCast's reference run: enough to see which activations exceed FP16
MAX_CALIBRATION_BATCH = 16


def calibration_batch(n: int) -> int:
    """The largest step <= MAX_CALIBRATION_BATCH that divides ``n`` (ModelOpt feeds whole steps)."""
    for b in range(min(MAX_CALIBRATION_BATCH, n), 0, -1):
        if n % b == 0:
            return b
    return 1


def read_fp32_source(source: str | os.PathLike[str] | Snapshot) -> dict[str, str]:
    """The metadata of an FP32 ONNX to convert (a path, or the bytes of a :class:`Snapshot`); anything
    already converted is a :class:`UserError`."""
    if isinstance(source, Snapshot):
        path, model = source.path, load_onnx_bytes(source.data, source.path)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"source ONNX not found: {path}")
        model = load_onnx(path)
    found = detect_precision(model)
    if found != "fp32":
        what = "quantized to INT8 (it has QuantizeLinear/DequantizeLinear nodes)" if found == "int8" else found.upper()
        raise UserError(f"{path} is already {what}; quantize needs the FP32 ONNX as its source "
                        f"(`resnet-deploy export` writes it)")
    return read_metadata(model)


def reusable(dst: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an existing artifact made for exactly ``request`` (and still matching its file), else None."""
    if not dst.is_file():
        return None
    try:
        manifest = read_manifest(dst)
        if manifest.get("request") != request:
            return None
        verify(dst, manifest)
    except UserError:
        return None
    return manifest


def _io(tensors: list[dict[str, Any]]) -> dict[str, Any]:
    return tensors[0] if tensors else {}


def precision_request(src: Path | Snapshot, precision: Precision, src_meta: dict[str, str],
                      options: QuantizeOptions = QuantizeOptions(), *, seed: int = 0,
                      tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """What an artifact is made from and how: the manifest's ``request``, compared for reuse.

    ``options`` as :meth:`QuantizeOptions.checked` returns them (method normalised). ``src``: the source
    file, or better the :class:`Snapshot` that will be converted (its bytes are what is hashed).
    """
    samples = min(options.calib_samples, FP16_REFERENCE_IMAGES) if precision in LOW_PRECISIONS else options.calib_samples
    request: dict[str, Any] = {
        "precision": precision,
        "source_sha256": src.sha256 if isinstance(src, Snapshot) else sha256_file(src),
        "calib_digest": calibration_digest(options.calib, recipe_from_metadata(src_meta), samples, seed),
        "calib_samples": samples,
        "seed": seed,
    }
    if precision == "int8":
        request.update(method=options.method, high_precision=options.high_precision, placement=PLACEMENT_VERSION)
        if options.int8_flavour != "trt":  # (absent for the default: earlier manifests stay valid)
            request.update(int8_flavour=options.int8_flavour)
        exclude = options.excluded
        if exclude:  # (absent when empty: earlier calibration caches stay valid)
            request.update(exclude=exclude)
        if tuning:
            request.update(tuning=tuning)
    else:
        request.update(fp16_io=options.fp16_io)
    return request


def make_precision_onnx(
    source: str | os.PathLike[str] | Snapshot,
    precision: Precision,
    options: QuantizeOptions = QuantizeOptions(),
    *,
    out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
    seed: int = 0,
    force: bool = False,
    tuned: TunedInt8 | None = None,
    progress: Progress = quiet,
    progress_bar: bool = False,
) -> dict[str, Any]:
    """Write (or reuse) the ``precision`` ONNX of the FP32 ONNX ``source``; return its manifest with ``"path"``.

    ``precision``: ``fp16``/``bf16`` (ModelOpt AutoCast; FP32 inputs/outputs unless ``fp16_io``)
    or ``int8`` (ModelOpt PTQ: per-channel symmetric INT8 weights, per-tensor symmetric INT8
    activations, Q/DQ placed for TensorRT fusion; everything unquantized runs in
    ``high_precision``). ``options`` (:class:`QuantizeOptions`): ``calib`` is a folder of images
    (flat or one sub-folder per class) preprocessed exactly as the model's recorded evaluation
    recipe; ``None`` uses scikit-image's bundled photographs and says so through ``progress``.
    ``method``: ``entropy`` (default), ``minmax`` or ``percentile``. ``exclude`` (INT8): torch
    module paths (``layer4.2``, ``layer1.0.conv1``) whose layers stay in ``high_precision``
    (:mod:`resnet_deploy.precision.exclude`). ``seed`` picks the calibration sample.
    ``progress_bar`` shows rich bars on stderr.

    An accuracy-tuned INT8 artifact (made by the pipeline's search) passes ``tuned``
    (:class:`TunedInt8`: its part of the request, the modules it kept, the acceptance check,
    the plain INT8 it may publish as it is).

    The source is read once (a :class:`Snapshot`, or ``source`` itself when it is one): its metadata,
    the sha256 the manifest records and the private copy ModelOpt converts all come from those bytes,
    so a source rewritten meanwhile by another command cannot give an artifact that records other bytes.
    """
    options = options.checked(precision)
    tuned = tuned or TunedInt8()
    t0 = time.perf_counter()
    snap = source if isinstance(source, Snapshot) else Snapshot.take(source, what="source ONNX")
    src = snap.path
    src_meta = read_fp32_source(snap)
    arch = src_meta.get("arch") or src.name.split(".")[0]
    dst = flavour_name(artifact_path(arch, precision, "onnx", out_dir), options.int8_flavour)
    if src.resolve() == dst.resolve():
        raise UserError(f"the source and the output are the same file: {dst}")
    ensure_writable_dir(dst.parent)
    recipe = recipe_from_metadata(src_meta)
    excluded_names = parse_exclude(options.excluded + list(tuned.keep))
    excluded = excluded_nodes(excluded_names, module_paths(src_meta, src)) if excluded_names else {}
    progress(f"hashing {src.name} and the calibration data")
    request = precision_request(snap, precision, src_meta, options, seed=seed, tuning=tuned.tuning)
    samples = request["calib_samples"]
    if not force:
        cached = reusable(dst, request)
        if cached is not None:
            progress(f"reusing {dst}: same source model, calibration data and settings (--force redoes it)")
            return {**cached, "path": str(dst), "reused": True}

    calibration = load_calibration(options.calib, recipe, samples=samples, seed=seed,
                                   min_images=min(options.min_calib_images, samples), progress=progress,
                                   progress_bar_enabled=progress_bar)
    if calibration.digest != request["calib_digest"]:  # the folder changed between hashing and reading
        request["calib_digest"] = calibration.digest
    t_calib = time.perf_counter()

    with work_folder(dst) as work:
        tmp = work / dst.name
        private = snap.write(work / f"source-{src.name}")  # what ModelOpt reads: the bytes hashed above, not the path again
        if precision in LOW_PRECISIONS:
            progress(f"converting {src.name} to {precision.upper()} with ModelOpt AutoCast "
                     f"(reference run on {calibration.used} images)")
            facts = convert_fp16(private, tmp, low_precision=str(precision), keep_io_types=not options.fp16_io,
                                 calib=calibration.batch)
        else:
            fit_fixed_batch(src, src_meta, calibration)
            if options.int8_flavour == "ort-cpu":
                progress(f"quantizing {src.name} to INT8 for ONNX Runtime CPU with its quantize_static "
                         f"({options.method} calibration on {calibration.used} images)")
            facts = quantize_ort_cpu(private, tmp, calibration.batch, options.method) if options.int8_flavour == "ort-cpu" \
                else int8_conversion(private, tmp, calibration, options, excluded, tuned, progress)
        t_convert = time.perf_counter()
        model = load_onnx(tmp)
        meta = {**src_meta, "precision": precision, "source_sha256": request["source_sha256"]}
        if precision == "int8":
            meta.update(calibration_method=options.method, calibration_images=calibration.used,
                        calibration_source=calibration.source, high_precision=options.high_precision)
            if excluded_names:
                meta.update(excluded_modules=",".join(excluded_names))
            if options.int8_flavour != "trt":
                meta.update(int8_flavour=options.int8_flavour, runtime=RUNTIME[options.int8_flavour])
        else:
            meta.update(io_dtype="fp16" if options.fp16_io else "fp32")
        accepted = tuned.accept(tmp) if tuned.accept is not None else None  # raises to publish nothing
        if accepted is not None:
            meta.update(accepted.get("metadata", {}))
        set_metadata(model, meta)
        with replacing(dst) as out:
            onnx.save(model, str(out))
        inputs, outputs = graph_io(model)
        del model
    manifest = {
        "artifact": dst.name,
        "kind": "onnx",
        **{k: v for k, v in src_meta.items() if k != "precision"},
        "precision": precision,
        **({"int8_flavour": options.int8_flavour, "runtime": RUNTIME[options.int8_flavour]}
           if precision == "int8" else {}),
        "preprocess": recipe.to_dict(),
        "source": {"path": str(src), "sha256": request["source_sha256"]},
        "request": request,
        "calibration": {**calibration.describe(), "role": "activation ranges" if precision == "int8"
                        else "AutoCast reference run (keeps nodes whose values exceed FP16 in FP32)"},
        "conversion": facts,
        "input": _io(inputs),
        "output": _io(outputs),
        "sha256": sha256_file(dst),
        "bytes": dst.stat().st_size,
        **({"tuning": {k: v for k, v in accepted.items() if k != "metadata"}} if accepted is not None else {}),
        "timings_s": {"calibration_data": round(t_calib - t0, 3), "convert": round(t_convert - t_calib, 3),
                      "total": round(time.perf_counter() - t0, 3)},
    }
    publish_manifest(dst, manifest)
    progress(f"wrote {dst}")
    return {**manifest, "path": str(dst), "reused": False}


def fit_fixed_batch(src: Path, src_meta: dict[str, str], calibration: CalibSet) -> None:
    """A fixed-batch ONNX calibrates on a multiple of its batch: drop the images past the last whole batch."""
    fixed = src_meta.get("batch", "dynamic")
    if fixed.isdigit() and calibration.used % int(fixed):
        usable = calibration.used - calibration.used % int(fixed)
        if usable < 1:
            raise UserError(f"{src} has a fixed batch of {fixed}; give at least {fixed} calibration images")
        calibration.batch = calibration.batch[:usable]
        calibration.notes.append(f"used {usable} images: a multiple of the model's fixed batch {fixed}")
        calibration.used = usable


def int8_conversion(src: Path, tmp: Path, calibration: CalibSet, options: QuantizeOptions,
                    excluded: dict[str, list[str]], tuned: TunedInt8, progress: Progress) -> dict[str, Any]:
    """Write the INT8 Q/DQ ONNX to ``tmp`` (or copy the search's plain INT8 there); its conversion facts."""
    if tuned.quantized is not None:
        progress("publishing the INT8 ONNX the search measured (" + (f"ModelOpt's, with {', '.join(tuned.keep)} kept out "
                 "of INT8" if tuned.keep else "the plain INT8 it started from") + "): no further quantization")
        shutil.copyfile(tuned.quantized[0], tmp)
        return dict(tuned.quantized[1])
    progress(f"quantizing {src.name} to INT8 with ModelOpt PTQ ({options.method} calibration on "
             f"{calibration.used} images; this takes a while on a CPU)")
    if excluded:
        progress(f"keeping {', '.join(excluded)} out of INT8 ({sum(map(len, excluded.values()))} layers)")
    facts = quantize_int8(src, tmp, calibration.batch, method=options.method, high_precision=options.high_precision,
                          calibration_batch=calibration_batch(calibration.used),
                          nodes_to_exclude=node_patterns(excluded) or None)
    if excluded:
        facts["excluded"] = excluded
    return facts


__all__ = ["FP16_REFERENCE_IMAGES", "calibration_batch", "make_precision_onnx", "precision_request", "read_fp32_source", "reusable"]
