"""The one place that knows the order: model -> FP32 ONNX -> precision ONNX -> engine.

Each stage makes one artifact from the file before it and never calls another stage
(:mod:`.export`, :mod:`.precision`, :mod:`.engine`); this module chains them, making what is
missing or stale. Every function takes the model as one :class:`~resnet_deploy.model.ModelRef`
and the precision as a parsed :class:`~resnet_deploy.artifacts.Precision`, both made where the
user named them (the CLI, :mod:`resnet_deploy.api`)::

    model = ModelRef.of(50)
    ensure_onnx(model)                          # the FP32 ONNX: exported when missing or from other weights
    ensure_precision(model, Precision.INT8)     # + the INT8 Q/DQ ONNX, reused while its request matches
    ensure_engine(model, Precision.INT8, BuildOptions(flavour="trt-rtx"))   # + the engine, reused while its manifest matches

Consumers (the API, bench, packaging) ask for an artifact here and get its manifest (with
``"path"``); stages meet only through files and their manifests, in the way Triton Model
Navigator's pipeline builders do (no command calls another).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from .artifacts import DEFAULT_ROOT, Precision, Snapshot, artifact_path, ensure_writable_dir, name_from_file, verified_manifest, work_folder
from .engine import BuildOptions, ProgressCallback, build_or_reuse_engine, engine_path_for, preflight
from .errors import UserError
from .model import ModelRef, build_model, read_state_dict, state_dict_sha256
from .onnx_export import ExportOptions, export_onnx
from .onnx_meta import artifact_facts
from .precision import QuantizeOptions, TunedInt8, check_exclude, make_precision_onnx, precision_request, read_fp32_source, reusable
from .preprocess import recipe_from_metadata
from .progress import Progress, quiet
from .tuning import EvalSet, TuningOptions, acceptor, confirm, holdout_scores, keep_adds, load_eval_set, modules_to_exclude, search_plain, split_eval_set


def load_model(model: ModelRef) -> nn.Module:
    """The PyTorch model (the FP32 reference of every parity check)."""
    return build_model(model)


def export_model(model: ModelRef, *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                 options: ExportOptions = ExportOptions(), progress: Progress = quiet) -> dict[str, Any]:
    """Build the model and write ``<out_dir>/<arch>/<arch>.fp32.onnx`` plus its manifest (always)."""
    options.check()
    path = artifact_path(model.arch, Precision.FP32, "onnx", out_dir)
    ensure_writable_dir(path.parent)
    t0 = time.perf_counter()
    progress(f"building {model.arch} "
             f"({'weights ' + str(model.weights) if model.weights else 'seeded random weights scaled on photos'})")
    network = load_model(model)
    t_model = time.perf_counter() - t0
    progress(f"exporting {path}")
    recipe = model.recipe or network.card.recipe
    manifest = export_onnx(network, path, options, facts=network.card.facts(), image_size=recipe.image_size,
                           recipe=recipe, timings={"model": t_model}, started=t0)
    return {"path": str(path), **manifest}


def stale_reason(meta: dict[str, str], model: ModelRef) -> str | None:
    """Why an existing FP32 ONNX is not what ``model`` asks for (other weights, seed or classes), or None.

    Without weights a user's own export (made from a weights file) is used whatever it was made
    from: its manifest says which weights. Seeded random weights must be the seed asked for.
    """
    source = meta.get("weights_source", "")
    if model.weights is not None and meta.get("weights_file_sha256") != model.weights_sha256:
        return f"it was exported from {source or 'other weights'}, not {model.weights}"
    if model.weights is None and source.startswith("random(") and source != model.weights_source:
        return f"it has the seeded random weights {source}, not {model.weights_source}"
    if model.num_classes is not None and meta.get("num_classes") != str(model.num_classes):
        return f"it has {meta.get('num_classes')} classes, not {model.num_classes}"
    return None


def ensure_onnx(model: ModelRef, *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT, force: bool = False,
                replace: bool = False, progress: Progress = quiet) -> dict[str, Any]:
    """The FP32 ONNX's manifest (with ``"path"``), exported first when missing or forced.

    An export made from other weights, another seed or another class count than ``model`` asks for
    is never replaced silently: it is a :class:`UserError` saying what is there, unless ``replace``
    (a command's ``--force``) or ``force`` (re-export whatever is there).
    """
    path = artifact_path(model.arch, Precision.FP32, "onnx", out_dir)
    reason = "it does not exist yet" if not path.is_file() else ("--force" if force else None)
    manifest: dict[str, Any] = {}
    if reason is None:
        meta = read_fp32_source(path)
        if not meta.get("weights_source"):
            raise UserError(f"{path} was not made by resnet-deploy (it records no weights): move it away, or "
                            "convert it with --onnx FILE")
        other = stale_reason(meta, model)
        if other is not None and not replace:
            raise UserError(f"{path} was exported from {meta['weights_source']} with {meta.get('num_classes', '?')} "
                            f"classes, not what this command asks for ({other}): choose another --out, or replace it "
                            "on purpose with --force (quantize, build) or `resnet-deploy export`")
        reason = other and f"replacing it: {other}"
    if reason is None:
        try:  # no reader trusts a manifest that does not describe its file (an interrupted write, a copy)
            manifest = verified_manifest(path, what="ONNX model", fix="re-export it")
        except UserError as e:
            source = meta.get("weights_source", "")
            if model.weights is None and source and not source.startswith("random("):
                raise UserError(f"{e}; it was made from {source}: re-export it with those --weights") from None
            reason = f"no manifest matches it: {e}"
    if reason:
        progress(f"exporting {path} first ({reason})")
        return {**export_model(model, out_dir=out_dir, progress=progress), "reused": False}
    progress(f"source: {path} (weights {meta.get('weights_source', 'unknown')})")
    return {**manifest, "path": str(path), "precision": "fp32", "reused": True}


def fp32_snapshot(fp32: dict[str, Any], model: ModelRef | None = None) -> Snapshot:
    """The FP32 ONNX's bytes, read once, refused unless they are the ones its manifest (``fp32``) vouched
    for and (given ``model``) still what ``model`` asks for: :func:`ensure_onnx` read the file before."""
    snap = Snapshot.pinned(fp32["path"], fp32.get("sha256"), what="FP32 ONNX")
    if model is not None and stale_reason(read_fp32_source(snap), model) is not None:
        raise UserError(f"{snap.path} changed while this command was reading it (another command writing it?); "
                        "run it again once that one is done")
    return snap


def ensure_precision(model: ModelRef, precision: Precision, *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                     options: QuantizeOptions = QuantizeOptions(), tuning: TuningOptions = TuningOptions(),
                     source: str | os.PathLike[str] | Snapshot | None = None, force: bool = False,
                     progress: Progress = quiet, progress_bar: bool = False) -> dict[str, Any]:
    """The ``precision`` ONNX's manifest (with ``"path"`` and ``"reused"``), making what is missing.

    ``fp32`` is the exported ONNX itself. ``source`` converts a given FP32 ONNX (a path or a
    :class:`Snapshot`) instead of the default export (made first when missing; one made from other
    weights, seed or classes is replaced only with ``force``).
    ``tuning.accuracy_target`` (INT8) tunes it to that fraction of FP32's top-1 on ``tuning.data``
    (:func:`ensure_tuned_int8`).
    """
    if tuning.accuracy_target is not None:
        if precision != Precision.INT8:
            raise UserError(f"--accuracy-target tunes INT8 quantization: use it with --precision int8, not {precision}")
        if options.fp16_io:
            raise UserError("--fp16-io applies to --precision fp16 only (INT8 models keep FP32 inputs/outputs)")
        if options.int8_flavour != "trt":
            raise UserError("--accuracy-target keeps blocks out of the TensorRT flavour's INT8; it does not tune "
                            f"--int8-flavour {options.int8_flavour}")
        return ensure_tuned_int8(model, tuning, out_dir=out_dir, options=options, source=source, force=force,
                                 progress=progress, progress_bar=progress_bar)
    tuning.check()
    if precision == Precision.FP32:
        check_exclude(precision, options.exclude)
        if source is not None:
            raise UserError("precision fp32 is the exported ONNX itself; there is nothing to convert")
        return ensure_onnx(model, out_dir=out_dir, force=force, progress=progress)
    options = options.checked(precision)  # a request that cannot be made fails before any export
    if source is None:
        source = fp32_snapshot(ensure_onnx(model, out_dir=out_dir, replace=force, progress=progress), model)
    return make_precision_onnx(source, precision, options, out_dir=out_dir, seed=model.seed, force=force,
                               progress=progress, progress_bar=progress_bar)


def ensure_tuned_int8(model: ModelRef, tuning: TuningOptions, *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                      options: QuantizeOptions = QuantizeOptions(), source: str | os.PathLike[str] | Snapshot | None = None,
                      force: bool = False, progress: Progress = quiet, progress_bar: bool = False) -> dict[str, Any]:
    """The INT8 ONNX that meets ``tuning.accuracy_target x`` FP32's top-1 on ``tuning.data`` (``quantize --accuracy-target``).

    Plain INT8 first (with ``options.exclude`` as the fixed start), then :mod:`resnet_deploy.tuning`'s
    greedy search (on ``tuning.score_engine``, default the fastest CPU runner) keeps the most sensitive
    units in high precision until the target holds, and a final pass puts back what is not needed;
    ModelOpt then quantizes with those exclusions (the search goes on from that real model when it
    scores below the goal), ``tuning.holdout`` scores plain and tuned on images the search never saw,
    and the result is measured again before it is published. Reused while the request (tuning part
    included) matches.
    """
    if tuning.accuracy_target is None:
        raise ValueError("ensure_tuned_int8 needs tuning.accuracy_target")
    tuning.check()
    if options.high_precision != "fp32":
        raise UserError("--accuracy-target measures candidates on ONNX Runtime CPU, which mis-computes "
                        "--high-precision fp16 graphs: tune with fp32, then quantize --high-precision fp16 "
                        "--exclude <the modules it kept>")
    options = options.checked(Precision.INT8)
    if source is None:
        source = fp32_snapshot(ensure_onnx(model, out_dir=out_dir, replace=force, progress=progress), model)
    # one read of the source: every step below (plain INT8, the search's FP32 reference, the final
    # quantization) computes from these bytes, and the manifest records their sha256
    snap = source if isinstance(source, Snapshot) else Snapshot.take(source, what="source ONNX")
    src = snap.path
    src_meta = read_fp32_source(snap)
    images, held = tuning_images(tuning, src_meta, options, seed=model.seed, progress=progress, progress_bar=progress_bar)
    record = {"accuracy_target": tuning.accuracy_target, "data_digest": images.digest,
              "max_excluded": tuning.max_excluded}
    if held is not None:
        record["holdout_digest"] = held.digest
    if tuning.score_engine is not None:
        record["score_engine"] = tuning.score_engine
    if tuning.search != "auto":
        record["search"] = tuning.search
    dst = artifact_path(src_meta.get("arch") or model.arch, Precision.INT8, "onnx", out_dir)
    plain = None
    if not force:  # one request (the source and calibration data hashed once): plain, and tuned = plain + tuning
        plain_request = precision_request(snap, Precision.INT8, src_meta, options, seed=model.seed)
        cached = reusable(dst, {**plain_request, "tuning": record})
        if cached is not None:
            progress(f"reusing {dst}: tuned for the same target, images and settings (--force redoes it)")
            return {**cached, "path": str(dst), "reused": True}
        # plain INT8 to start from: the published one when it is exactly that, else made in the work folder, so
        # that whatever <arch>.int8.onnx holds (an earlier tuned INT8) stays until the tuned result replaces it
        plain = reusable(dst, plain_request)
    with work_folder(dst) as work:
        start = work / "plain.int8.onnx"
        fp32_copy = snap.write(work / f"source-{src.name}")
        if plain is None:
            plain = make_precision_onnx(snap, Precision.INT8, options, out_dir=work / "plain", seed=model.seed,
                                        progress=progress, progress_bar=progress_bar)
            shutil.copyfile(plain["path"], start)
        else:
            progress(f"starting from {dst}: plain INT8 of the same source, calibration data and settings")
            shutil.copyfile(dst, start)
        measure, found = search_plain(fp32_copy, start, images, tuning.accuracy_target, work,
                                      max_excluded=tuning.max_excluded, engine=tuning.score_engine, strategy=tuning.search,
                                      progress=progress, progress_bar_enabled=progress_bar)

        def requantize(kept: list[str], round_: int) -> tuple[Path, dict[str, Any]]:
            modules, path = modules_to_exclude(kept), work / f"tuned{round_}.int8.onnx"
            facts = dict(plain["conversion"])
            if modules:
                progress(f"quantizing again with {', '.join(modules)} kept out of INT8, then measuring the result")
                made = make_precision_onnx(snap, Precision.INT8, options, out_dir=work / f"tuned{round_}", seed=model.seed,
                                           force=True, tuned=TunedInt8(keep=tuple(modules)), progress=progress,
                                           progress_bar=progress_bar)
                shutil.copyfile(made["path"], path)
                facts = made["conversion"]
            else:
                shutil.copyfile(start, path)
            adds = keep_adds(path, fp32_copy, kept)
            return path, {**facts, **({"residual_adds_kept": adds} if adds else {})}

        made, found = confirm(measure, fp32_copy, found, requantize, progress=progress)
        quantized = made or (start, plain["conversion"])
        checked = None if held is None else holdout_scores(fp32_copy, held, start, quantized[0], work, engine=measure.backend,
                                                           progress=progress)
        tuned = TunedInt8(tuning=record, keep=tuple(modules_to_exclude(found["kept"])),
                          accept=acceptor(measure, found, checked), quantized=quantized)
        return make_precision_onnx(snap, Precision.INT8, options, out_dir=out_dir, seed=model.seed, force=True,
                                   tuned=tuned, progress=progress, progress_bar=progress_bar)


def tuning_images(tuning: TuningOptions, src_meta: dict[str, str], options: QuantizeOptions, *, seed: int,
                  progress: Progress = quiet, progress_bar: bool = False) -> tuple[EvalSet, EvalSet | None]:
    """(the images the search scores on, the held-out images or ``None``) for ``quantize --accuracy-target``."""
    def load(data: Any, limit: int | None) -> EvalSet:
        return load_eval_set(data, recipe_from_metadata(src_meta), label_set=src_meta.get("label_set", "imagenet"),
                             labels_file=tuning.labels, limit=limit, calib=options.calib,
                             calib_samples=options.calib_samples, seed=seed, progress=progress,
                             progress_bar_enabled=progress_bar)

    images = load(tuning.data, tuning.limit)
    if tuning.holdout is None:
        return images, None
    if tuning.holdout_fraction is not None:
        return split_eval_set(images, tuning.holdout_fraction)
    if tuning.data is not None and Path(tuning.holdout).expanduser().resolve() == Path(tuning.data).expanduser().resolve():
        raise UserError(f"--holdout {tuning.holdout} is the --data folder itself: held-out images must be others "
                        "(or give a fraction, e.g. --holdout 0.25)")
    held = load(tuning.holdout, None)
    if (held.labels is None) != (images.labels is None):
        raise UserError(f"--holdout {tuning.holdout} is {'un' if held.labels is None else ''}labelled and the search "
                        f"images are {'un' if images.labels is None else ''}labelled: their scores would not compare "
                        "(one sub-folder per class in both, or flat folders in both)")
    return images, held


def precision_manifest(model: ModelRef, precision: Precision, *, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
                       options: QuantizeOptions = QuantizeOptions(), replace: bool = False, progress: Progress = quiet,
                       progress_bar: bool = False) -> dict[str, Any]:
    """The manifest (with ``"path"``) of the precision ONNX the later stages (build, parity, eval, bench,
    package, diagnose) use.

    The one ``quantize`` left at the artifact path is used as it is, whatever settings made it
    (``--calib``, ``--exclude``, ``--accuracy-target``), while its file matches its manifest and
    it was made from the current FP32 export; only when there is none (or it is stale) is one
    made, with ``options`` (defaults when not given). An FP32 export made from other weights, seed or
    classes is refused (:func:`ensure_onnx`), replaced only with ``replace``.
    """
    fp32 = ensure_onnx(model, out_dir=out_dir, replace=replace, progress=progress)
    if precision == Precision.FP32:
        return fp32
    dst = artifact_path(model.arch, precision, "onnx", out_dir)
    if dst.is_file():
        try:
            manifest = verified_manifest(dst)
        except UserError:
            manifest = {}
        if manifest.get("precision") == precision and manifest.get("source", {}).get("sha256") == fp32.get("sha256"):
            progress(f"using {dst} as quantize made it")
            return {**manifest, "path": str(dst), "reused": True}
    return ensure_precision(model, precision, out_dir=out_dir, options=options, source=fp32_snapshot(fp32, model),
                            progress=progress, progress_bar=progress_bar)


def given_onnx(model: ModelRef | None, onnx: str | os.PathLike[str], precision: Precision | None,
               options: BuildOptions) -> tuple[str, Precision, Path]:
    """``(arch, precision, path)`` of an ONNX given to compile: checked to be a classifier of ``model``'s architecture."""
    onnx_path = Path(onnx)
    if not onnx_path.is_file():
        raise UserError(f"ONNX file not found: {onnx_path}")
    facts = artifact_facts(onnx_path, "onnx")  # an image classifier, or one line saying why not
    precision = precision if precision is not None else Precision.parse(facts["precision"])
    preflight(options, precision)
    recorded = facts.get("arch")
    if model is None:
        # a model not made here has no architecture name: its engine is named after its file
        return recorded or name_from_file(onnx_path), precision, onnx_path
    if recorded and recorded != model.arch:
        raise UserError(f"{onnx_path} holds {recorded}, not {model.arch}; pass --depth to match it")
    return model.arch, precision, onnx_path


def ensure_engine(model: ModelRef | None, precision: Precision | None = Precision.FP32,
                  options: BuildOptions | None = None, *, onnx: str | os.PathLike[str] | None = None,
                  out_dir: str | os.PathLike[str] = DEFAULT_ROOT, force: bool = False, progress: Progress = quiet,
                  build_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """``<out_dir>/<arch>/<arch>.<precision>.<flavour>.engine`` for a model: what ``resnet-deploy build`` does.

    The precision's ONNX (``onnx``, or the one :func:`precision_manifest` names, made when missing)
    is compiled; the engine is reused when its manifest matches the request and rebuilt otherwise.
    The result says which (``reused``) and why (``rebuild_reason``). A missing TensorRT or GPU is
    reported before any ONNX work. ``model`` may be ``None`` with ``onnx`` (a model made
    elsewhere), ``precision`` ``None`` with ``onnx`` (the file's).
    """
    opts = options if options is not None else BuildOptions()
    if onnx is not None:
        arch, precision, onnx_path = given_onnx(model, onnx, precision, opts)
        onnx_status = "given"
    else:
        precision = precision or Precision.FP32
        preflight(opts, precision)
        model = model or ModelRef.of(50)
        arch = model.arch
        made = precision_manifest(model, precision, out_dir=out_dir, replace=force, progress=progress)
        onnx_path = Path(made["path"])
        onnx_status = "reused" if made.get("reused", True) else "made"
    engine_path = engine_path_for(arch, precision, opts.flavour, out_dir)
    ensure_writable_dir(engine_path.parent)
    manifest, reason = build_or_reuse_engine(onnx_path, engine_path, opts, precision=precision, force=force,
                                             progress=build_progress, say=progress)
    return {**manifest, "path": str(engine_path), "reused": reason is None, "rebuild_reason": reason,
            "onnx_status": onnx_status}


def check_same_weights(artifact: Path, meta: dict[str, str], model: ModelRef) -> None:
    """Refuse an artifact made from other weights than the model's (cheap checks, no model build)."""
    source = meta.get("weights_source")
    if not source:
        return  # not made by this toolkit: nothing recorded to compare
    if model.weights is None:
        want = model.weights_source
        if source != want:
            raise UserError(f"{artifact} was made from {source}, not the seeded random weights {want}; "
                            "pass the same --weights (or --artifact another file)")
        return
    if meta.get("weights_file_sha256") and meta["weights_file_sha256"] == model.weights_sha256:
        return
    if meta.get("weights_sha256") and state_dict_sha256(read_state_dict(model.weights)) == meta["weights_sha256"]:
        return
    raise UserError(f"{artifact} was made from other weights ({source}) than {model.weights}; re-export it or pass "
                    "the matching --weights")


__all__ = ["check_same_weights", "ensure_engine", "ensure_onnx", "fp32_snapshot", "ensure_precision", "ensure_tuned_int8", "export_model",
           "load_model", "precision_manifest", "stale_reason"]
