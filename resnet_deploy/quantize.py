"""Precision ONNX artifacts: ``engines/<arch>/<arch>.{fp16,bf16,int8}.onnx`` from the FP32 ONNX.

    import resnet_deploy.quantize as q
    m = q.ensure_precision_onnx(50, "fp16")                          # FP16 inside, FP32 I/O
    m = q.ensure_precision_onnx(50, "int8", calib="~/imagenet/val")  # explicit Q/DQ, entropy
    m["path"]  # engines/resnet50/resnet50.int8.onnx; the manifest sits beside it

TensorRT 11 is strongly typed only, so precision is a property of the ONNX file: FP16/BF16
tensors written by ModelOpt AutoCast, INT8 as explicit QuantizeLinear/DequantizeLinear
pairs written by ModelOpt PTQ (see :mod:`resnet_deploy.precision`). Engine building is then
a pure compile step.

The result is cached: an existing artifact whose manifest records the same request (source
ONNX sha256, calibration data digest, method, samples, options) is reused without
recalibrating; ``force=True`` redoes it. The precision ONNX keeps the source's
``resnet_deploy.*`` metadata (arch, weights sha256, preprocessing) with ``precision``
updated, so ``parity``, ``eval`` and ``build`` know what it is.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .artifacts import (DEFAULT_ROOT, PRECISIONS, artifact_path, atomic_path, ensure_writable_dir, read_manifest,
                        sha256_file, write_manifest)
from .calib import (DEFAULT_CALIB_SAMPLES, MIN_CALIB_IMAGES, calibration_digest, load_calibration,
                    recipe_from_metadata)
from .errors import UserError

Progress = Callable[[str], None]

LOW_PRECISIONS = ("fp16", "bf16")
# Calibration methods as the user names them. ModelOpt 0.47's INT8 ONNX PTQ offers entropy (KL
# divergence) and max (= min-max for symmetric activations); percentile ranges come from ONNX
# Runtime's histogram calibrator and reach ModelOpt as a calibration cache (precision.py).
CALIBRATION_METHODS = ("entropy", "minmax", "percentile")
_METHOD_ALIASES = {"entropy": "entropy", "minmax": "minmax", "max": "minmax", "min-max": "minmax",
                   "percentile": "percentile"}
FP16_REFERENCE_IMAGES = 16   # AutoCast's reference run: enough to see which activations exceed FP16
MAX_CALIBRATION_BATCH = 16


def _quiet(_: str) -> None:
    pass


def normalize_precision(precision: str) -> str:
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return p


def normalize_method(method: str) -> str:
    m = str(method).strip().lower()
    if m not in _METHOD_ALIASES:
        raise UserError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    return _METHOD_ALIASES[m]


def _calibration_batch(n: int) -> int:
    """The largest step <= MAX_CALIBRATION_BATCH that divides ``n`` (ModelOpt feeds whole steps)."""
    for b in range(min(MAX_CALIBRATION_BATCH, n), 0, -1):
        if n % b == 0:
            return b
    return 1


def _source_onnx(arch: str, *, source: str | os.PathLike[str] | None, out_dir, weights, num_classes, seed,
                 force_export: bool, progress: Progress) -> tuple[Path, dict[str, str]]:
    """The FP32 ONNX to convert (exported when missing or made from other weights) and its metadata."""
    from . import api
    from .onnx_export import load_onnx, read_metadata
    from .precision import detect_precision

    if source is not None:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"source ONNX not found: {path}")
    else:
        path = artifact_path(arch, "fp32", "onnx", out_dir)
        reason = "it does not exist yet" if not path.is_file() else ("--force" if force_export else None)
        if reason is None:
            meta = read_metadata(load_onnx(path))
            reason = _stale_reason(meta, weights, num_classes, seed)
        if reason:
            progress(f"exporting {path} first ({reason})")
            api.export(arch, weights=weights, num_classes=num_classes, out_dir=out_dir, seed=seed, progress=progress)
        else:
            progress(f"source: {path} (weights {meta.get('weights_source', 'unknown')})")
    model = load_onnx(path)
    found = detect_precision(model)
    if found != "fp32":
        what = "quantized to INT8 (it has QuantizeLinear/DequantizeLinear nodes)" if found == "int8" else found.upper()
        raise UserError(f"{path} is already {what}; quantize needs the FP32 ONNX as its source "
                        f"(`resnet-deploy export` writes it)")
    return path, read_metadata(model)


def _stale_reason(meta: dict[str, str], weights, num_classes, seed) -> str | None:
    """Why an existing FP32 ONNX does not match explicitly requested weights/classes, or None.

    Without ``weights`` the existing export is used whatever it was made from (a user's own
    export must never be replaced by random weights); its manifest says which weights.
    """
    if weights is not None:
        want = sha256_file(Path(weights).expanduser()) if Path(weights).expanduser().is_file() else None
        if want is None:
            raise UserError(f"weights file not found: {weights}")
        if meta.get("weights_file_sha256") != want:
            return f"it was exported from {meta.get('weights_source', 'other weights')}, not {weights}"
    if num_classes is not None and meta.get("num_classes") != str(num_classes):
        return f"it has {meta.get('num_classes')} classes, not {num_classes}"
    return None


def _reusable(dst: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    if not dst.is_file():
        return None
    try:
        manifest = read_manifest(dst)
    except UserError:
        return None
    if manifest.get("request") != request or manifest.get("sha256") != sha256_file(dst):
        return None
    return manifest


def ensure_precision_onnx(
    depth: int | str,
    precision: str,
    *,
    out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    preact: bool = False,
    seed: int = 0,
    calib: str | os.PathLike[str] | None = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    method: str = "entropy",
    fp16_io: bool = False,
    high_precision: str = "fp32",
    source: str | os.PathLike[str] | None = None,
    min_calib_images: int = MIN_CALIB_IMAGES,
    force: bool = False,
    progress: Progress = _quiet,
    progress_bar: bool = False,
) -> dict[str, Any]:
    """Write (or reuse) ``<out_dir>/<arch>/<arch>.<precision>.onnx``; return its manifest with ``"path"``.

    ``precision``: ``fp32`` (the exported ONNX, exported if missing), ``fp16``/``bf16``
    (ModelOpt AutoCast; FP32 inputs/outputs unless ``fp16_io``) or ``int8`` (ModelOpt PTQ:
    per-channel symmetric INT8 weights, per-tensor symmetric INT8 activations, Q/DQ placed
    for TensorRT fusion; everything unquantized runs in ``high_precision``, FP16 by default).
    ``calib`` is a folder of images (flat or one sub-folder per class) preprocessed exactly
    as the model's recorded evaluation recipe; ``None`` uses scikit-image's bundled
    photographs and says so through ``progress``. ``method``: ``entropy`` (default),
    ``minmax`` or ``percentile`` (99.999th percentile of absolute activations). ``source`` converts a
    given FP32 ONNX instead of the default export. ``progress_bar`` shows rich bars on stderr.
    """
    from .models import resolve_arch
    from .onnx_export import load_onnx

    precision = normalize_precision(precision)
    method = normalize_method(method)
    if calib_samples < 1:
        raise UserError(f"calib_samples must be at least 1, got {calib_samples}")
    if fp16_io and precision != "fp16":
        raise UserError("--fp16-io applies to --precision fp16 only (INT8 and BF16 models keep FP32 inputs/outputs)")
    if high_precision not in ("fp16", "fp32"):
        raise UserError(f"high_precision must be fp16 or fp32, got {high_precision!r}")
    if calib is not None and not Path(calib).expanduser().is_dir():
        raise UserError(f"calibration folder not found: {calib}" if not Path(calib).expanduser().exists()
                        else f"--calib must be a folder of images, got the file {calib}")
    arch = resolve_arch(depth, preact)
    t0 = time.perf_counter()

    if precision == "fp32":
        if source is not None:
            raise UserError("precision fp32 is the exported ONNX itself; there is nothing to convert")
        path, _ = _source_onnx(arch, source=None, out_dir=out_dir, weights=weights, num_classes=num_classes, seed=seed,
                               force_export=force, progress=progress)
        try:
            manifest = read_manifest(path)
        except UserError:
            manifest = {}
        return {**manifest, "path": str(path), "precision": "fp32"}

    src, src_meta = _source_onnx(arch, source=source, out_dir=out_dir, weights=weights, num_classes=num_classes,
                                 seed=seed, force_export=False, progress=progress)
    arch = src_meta.get("arch", arch)
    dst = artifact_path(arch, precision, "onnx", out_dir)
    if source is not None and Path(source).expanduser().resolve() == dst.resolve():
        raise UserError(f"the source and the output are the same file: {dst}")
    ensure_writable_dir(dst.parent)
    recipe = recipe_from_metadata(src_meta)
    samples = min(calib_samples, FP16_REFERENCE_IMAGES) if precision in LOW_PRECISIONS else calib_samples
    progress(f"hashing {src.name} and the calibration data")
    request: dict[str, Any] = {
        "precision": precision,
        "source_sha256": sha256_file(src),
        "calib_digest": calibration_digest(calib, recipe, samples, seed),
        "calib_samples": samples,
        "seed": seed,
    }
    if precision == "int8":
        request.update(method=method, high_precision=high_precision)
    else:
        request.update(fp16_io=fp16_io)
    if not force:
        cached = _reusable(dst, request)
        if cached is not None:
            progress(f"reusing {dst}: same source model, calibration data and settings (--force redoes it)")
            return {**cached, "path": str(dst), "reused": True}

    calibration = load_calibration(calib, recipe, samples=samples, seed=seed, min_images=min(min_calib_images, samples),
                                   progress=progress, progress_bar_enabled=progress_bar)
    if calibration.digest != request["calib_digest"]:  # the folder changed between hashing and reading
        request["calib_digest"] = calibration.digest
    t_calib = time.perf_counter()

    from . import precision as prec

    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.", suffix=".work", dir=dst.parent) as work:
        tmp = Path(work) / dst.name
        if precision in LOW_PRECISIONS:
            progress(f"converting {src.name} to {precision.upper()} with ModelOpt AutoCast "
                     f"(reference run on {calibration.used} images)")
            facts = prec.convert_fp16(src, tmp, low_precision=precision, keep_io_types=not fp16_io,
                                      calib=calibration.batch)
        else:
            batch = _calibration_batch(calibration.used)
            fixed = src_meta.get("batch", "dynamic")
            if fixed.isdigit() and calibration.used % int(fixed):
                keep = calibration.used - calibration.used % int(fixed)
                if keep < 1:
                    raise UserError(f"{src} has a fixed batch of {fixed}; give at least {fixed} calibration images")
                calibration.batch = calibration.batch[:keep]
                calibration.notes.append(f"used {keep} images: a multiple of the model's fixed batch {fixed}")
                calibration.used = keep
            progress(f"quantizing {src.name} to INT8 with ModelOpt PTQ ({method} calibration on "
                     f"{calibration.used} images; this takes a while on a CPU)")
            facts = prec.quantize_int8(src, tmp, calibration.batch, method=method, high_precision=high_precision,
                                       calibration_batch=batch)
        t_convert = time.perf_counter()
        model = load_onnx(tmp)
        from .onnx_export import set_metadata

        meta = {**src_meta, "precision": precision, "source_sha256": request["source_sha256"]}
        if precision == "int8":
            meta.update(calibration_method=method, calibration_images=calibration.used,
                        calibration_source=calibration.source, high_precision=high_precision)
        else:
            meta.update(io_dtype="fp16" if fp16_io else "fp32")
        set_metadata(model, meta)
        import onnx

        with atomic_path(dst) as out:
            onnx.save(model, str(out))
        io = {"input": _io(model.graph.input, model), "output": _io(model.graph.output, model)}
        del model
    manifest = {
        "artifact": dst.name,
        "kind": "onnx",
        **{k: v for k, v in src_meta.items() if k not in ("precision",)},
        "precision": precision,
        "preprocess": recipe.to_dict(),
        "source": {"path": str(src), "sha256": request["source_sha256"]},
        "request": request,
        "calibration": {**calibration.describe(), "role": "activation ranges" if precision == "int8"
                        else "AutoCast reference run (keeps nodes whose values exceed FP16 in FP32)"},
        "conversion": facts,
        **io,
        "sha256": sha256_file(dst),
        "bytes": dst.stat().st_size,
        "timings_s": {"calibration_data": round(t_calib - t0, 3), "convert": round(t_convert - t_calib, 3),
                      "total": round(time.perf_counter() - t0, 3)},
    }
    write_manifest(dst, manifest)
    progress(f"wrote {dst}")
    return {**manifest, "path": str(dst), "reused": False}


def _io(values, model) -> dict[str, Any]:
    inits = {t.name for t in model.graph.initializer}
    names = {1: "float32", 10: "float16", 16: "bfloat16"}
    v = [x for x in values if x.name not in inits][0]
    t = v.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": v.name, "dtype": names.get(t.elem_type, str(t.elem_type)), "shape": shape}


__all__ = ["ensure_precision_onnx", "normalize_precision", "normalize_method", "CALIBRATION_METHODS",
           "FP16_REFERENCE_IMAGES"]
