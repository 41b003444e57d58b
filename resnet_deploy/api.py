"""The public Python API, the one the CLI is a thin layer over.

    import resnet_deploy as rd
    model = rd.create_model(50)                      # seeded random, realistic statistics
    model = rd.create_model(50, weights="r50.pth")   # a torchvision checkpoint
    manifest = rd.export(50)                         # engines/resnet50/resnet50.fp32.onnx
    report = rd.parity(50)                           # ONNX Runtime vs PyTorch FP32

Each function names its model as the commands do (``depth``, ``weights=``, ``num_classes=``,
``preact=``, ``seed=``; or one :class:`~resnet_deploy.model.ModelRef` in place of ``depth``) and
its precision as a string; both are parsed here, once, into a :class:`~resnet_deploy.model.ModelRef`
and a :class:`~resnet_deploy.artifacts.Precision`, and handed to :mod:`resnet_deploy.pipeline`,
which resolves the artifacts; :mod:`resnet_deploy.runners` runs them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import deploy as deployment
from . import evaluate as evaluation
from . import pipeline
from .artifacts import DEFAULT_ROOT, Precision, artifact_path
from .compare import THRESHOLDS, parity_batch, run_parity
from .deploy import Ports, ServingOptions, TritonServer, find_server
from .engine import BuildOptions, ProgressCallback, engine_path_for
from .errors import BackendUnavailable, ParityError, UserError
from .evaluate import EvalOptions
from .labels import load_labels, read_labels
from .model import RANDOM_SEED, ModelRef, create_model, describe, resolve_arch
from .onnx_export import DEFAULT_OPSET, ExportOptions
from .onnx_meta import artifact_facts
from .precision import DEFAULT_CALIB_SAMPLES, MIN_CALIB_IMAGES, QuantizeOptions, read_fp32_source
from .predict import classify_images, decode_images
from .preprocess import recipe_from_metadata
from .progress import Progress, quiet
from .runners import ONNX_BACKENDS, artifact_kind, make_runner, open_runner, served_facts, unavailable
from .tuning import TuningOptions, diagnose_int8, load_eval_set, plot_diagnosis

PathLike = str | os.PathLike[str]


def export(depth: int | str | ModelRef, *, weights: PathLike | None = None, num_classes: int | None = None,
           out_dir: PathLike = DEFAULT_ROOT, batch: int | None = None, opset: int | None = None,
           exporter: str = "torchscript", preact: bool = False, seed: int = RANDOM_SEED,
           progress: Progress = quiet) -> dict[str, Any]:
    """Write ``<out_dir>/<arch>/<arch>.fp32.onnx`` and its manifest (``resnet-deploy export``); returns the manifest."""
    model = ModelRef.of(depth, weights=weights, num_classes=num_classes, preact=preact, seed=seed)
    return pipeline.export_model(model, out_dir=out_dir, options=ExportOptions(batch, opset or DEFAULT_OPSET, exporter),
                                 progress=progress)


def quantize(depth: int | str | ModelRef, precision: str, *, out_dir: PathLike = DEFAULT_ROOT,
             weights: PathLike | None = None, num_classes: int | None = None, preact: bool = False,
             seed: int = RANDOM_SEED, calib: PathLike | None = None, calib_samples: int = DEFAULT_CALIB_SAMPLES,
             method: str = "entropy", fp16_io: bool = False, high_precision: str = "fp32",
             source: PathLike | None = None, exclude: str | list[str] | None = None,
             min_calib_images: int = MIN_CALIB_IMAGES, force: bool = False, progress: Progress = quiet,
             progress_bar: bool = False, accuracy_target: float | None = None, data: PathLike | None = None,
             labels: PathLike | None = None, limit: int | None = None,
             max_excluded: int | None = None, holdout: float | PathLike | None = None,
             score_engine: str | None = None, search: str = "auto", int8_flavour: str = "trt") -> dict[str, Any]:
    """The precision ONNX (``resnet-deploy quantize``), made or reused; returns its manifest with ``"path"``.

    The keywords are the command's options (:class:`~resnet_deploy.precision.QuantizeOptions`,
    :class:`~resnet_deploy.tuning.TuningOptions`); see :func:`resnet_deploy.pipeline.ensure_precision`.
    """
    parsed = Precision.parse(precision)
    model = ModelRef.of(depth, weights=weights, num_classes=num_classes, preact=preact, seed=seed)
    options = QuantizeOptions(calib=calib, calib_samples=calib_samples, method=method, fp16_io=fp16_io,
                              high_precision=high_precision, exclude=exclude, min_calib_images=min_calib_images,
                              int8_flavour=int8_flavour)
    tuning = TuningOptions(accuracy_target=accuracy_target, data=data, labels=labels, limit=limit,
                           max_excluded=max_excluded, holdout=holdout, score_engine=score_engine, search=search)
    return pipeline.ensure_precision(model, parsed, out_dir=out_dir, options=options, tuning=tuning, source=source,
                                     force=force, progress=progress, progress_bar=progress_bar)


def refuse_other_precision(artifact, recorded: str, asked: str | None) -> None:
    """An explicit ``--precision`` must be the artifact's: an FP32 file is not run as INT8."""
    if asked is not None and recorded != asked:
        raise UserError(f"{artifact} is a {recorded} model, not {asked}: drop --precision to check it as {recorded}, "
                        f"or give the {asked} artifact")


def build(depth: int | str | ModelRef | None, *, precision: str | None = "fp32", options: BuildOptions | None = None,
          onnx: str | os.PathLike[str] | None = None, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
          weights: str | os.PathLike[str] | None = None, num_classes: int | None = None, preact: bool = False,
          seed: int = RANDOM_SEED, force: bool = False, progress: Progress = quiet,
          build_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """The engine for a model, made (with its precision ONNX) or reused: what ``resnet-deploy build`` does.

    ``depth`` ``None``: 50, or with ``onnx`` the architecture the file records (its file name for a
    model made elsewhere); ``precision`` ``None``: fp32, or with ``onnx`` the file's.
    """
    parsed = Precision.parse(precision) if precision is not None else None
    model = None if depth is None and onnx is not None else \
        ModelRef.of(50 if depth is None else depth, weights=weights, num_classes=num_classes, preact=preact, seed=seed)
    return pipeline.ensure_engine(model, parsed, options, onnx=onnx, out_dir=out_dir, force=force, progress=progress,
                                  build_progress=build_progress)


def parity(depth: int | str, *, precision: str | None = None, backend: str = "ort",
           artifact: str | os.PathLike[str] | None = None, onnx: str | os.PathLike[str] | None = None,
           weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
           out_dir: str | os.PathLike[str] = DEFAULT_ROOT, preact: bool = False, seed: int = RANDOM_SEED,
           n_random: int = 4, images: list[str | os.PathLike[str]] | None = None, raise_on_fail: bool = False,
           progress: Progress = quiet, **runner_options: Any) -> dict[str, Any]:
    """Compare an artifact on ``backend`` with PyTorch FP32 on photographs and random tensors.

    ``artifact`` (or its alias ``onnx``) defaults to the precision's artifact for the
    backend (``engines/resnet50/resnet50.fp16.onnx`` for ``ort``,
    ``engines/resnet50/resnet50.fp16.trt.engine`` for ``trt``); the FP32 ONNX is exported
    first if missing. The precision the artifact records sets the thresholds (``precision``, when
    given, must be it: an FP32 file is not checked at the INT8 bars). It must have
    been made from the same weights as the reference (its metadata records their sha256).
    ``images`` replaces the default batch (scikit-image's photographs plus ``n_random``
    seeded random tensors) with the user's own image files.
    """
    model = ModelRef.of(depth, weights=weights, num_classes=num_classes, preact=preact, seed=seed)
    arch = model.arch
    kind = artifact_kind(backend)
    if kind == "torch":
        raise UserError("parity compares an exported artifact with PyTorch; choose an ONNX or TensorRT engine")
    asked = Precision.parse(precision) if precision is not None else None
    precision = asked or Precision.FP32
    decoded = decode_images(images) if images else None  # a bad image fails before any slow work
    artifact = artifact if artifact is not None else onnx
    if artifact is None:
        artifact = _parity_default_artifact(model, depth, backend, precision, out_dir, progress)
    meta = facts_of(backend, artifact, runner_options)
    if meta.get("arch") not in (None, arch):
        raise UserError(f"{artifact} holds {meta['arch']}, not {arch}")
    if model.num_classes is None and meta.get("num_classes", "").isdigit():
        model = dataclasses.replace(model, num_classes=int(meta["num_classes"]))
    precision = meta.get("precision", precision)
    if precision not in THRESHOLDS:
        raise UserError(f"{artifact} records an unknown precision {precision!r}")
    refuse_other_precision(artifact, precision, asked)
    # Open the candidate first: a missing runtime or a bad engine fails in a second, not after the reference.
    with open_runner(backend, artifact, precision=precision, **runner_options) as candidate:
        progress(f"building the PyTorch FP32 reference {arch}")
        network = pipeline.load_model(model)
        if meta.get("weights_sha256") and meta["weights_sha256"] != network.card.weights.sha256:
            raise UserError(f"{artifact} was made from other weights ({meta.get('weights_source')}) than the "
                            f"reference ({network.card.weights.source}); pass the same --weights or re-export")
        if decoded:
            recipe = recipe_from_metadata(meta)
            names, batch = [Path(n).name for n, _ in decoded], np.stack([recipe(img) for _, img in decoded])
        else:
            names, batch = parity_batch(recipe_from_metadata(meta), n_random=n_random)
        progress(f"running {len(batch)} inputs through PyTorch and {backend}")
        with make_runner("torch", network, precision="fp32") as reference:
            result = run_parity(reference, candidate, batch, precision)
            ref_desc = reference.describe()
        cand_desc = candidate.describe()
    notes = []
    if not result.passed and precision != "fp32" and str(meta.get("weights_source", "")).startswith("random("):
        notes.append(f"{arch} has seeded random weights, not trained ones: the {precision.upper()} bars are set on trained "
                     "networks (benchmarks/precision-bars), and a random network does not reach them; "
                     "check a trained model (--weights)")
    report = {"arch": arch, "artifact": str(artifact), "inputs": names, "reference": ref_desc,
              "candidate": cand_desc, "weights_source": meta.get("weights_source"), "notes": notes, **result.to_dict()}
    if raise_on_fail and not result.passed:
        raise ParityError(f"parity failed for {artifact}: " + "; ".join(result.failures + notes))
    return report


def _parity_default_artifact(model: ModelRef, depth: int | str, backend: str, precision: Precision, out_dir: PathLike,
                             progress: Progress) -> Path:
    """The precision's artifact under ``out_dir`` (the FP32 ONNX is exported when missing)."""
    kind = artifact_kind(backend)
    if kind == "served":
        raise UserError(f"--engine {backend} runs a served model: give the server's --url (e.g. http://127.0.0.1:8000)")
    artifact = artifact_path(model.arch, precision, kind, out_dir)
    if not Path(artifact).exists():
        if kind != "onnx" or precision != "fp32":
            step = f"quantize --precision {precision}" if kind == "onnx" else \
                f"build --engine {backend} --precision {precision}"
            raise UserError(f"{artifact} does not exist; create it with `resnet-deploy {step} --depth {depth}`")
        progress(f"{artifact} does not exist yet: exporting it first")
        pipeline.export_model(model, out_dir=out_dir, progress=progress)
    return artifact


def evaluate(depth: int | str, *, precisions: Sequence[str] = ("fp32",), data: str | os.PathLike[str],
             backend: str = "ort", out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
             artifacts: dict[str, str | os.PathLike[str]] | None = None, batch: int = 32, limit: int | None = None,
             labels_file: str | os.PathLike[str] | None = None, preact: bool = False, progress: Progress = quiet,
             progress_bar_enabled: bool = False, **runner_options: Any) -> dict[str, Any]:
    """Top-1/top-5 of each precision's artifact on a labelled folder (see :func:`resnet_deploy.evaluate.evaluate`)."""
    arch = resolve_arch(depth, preact)
    options = EvalOptions(backend=backend, batch=batch, limit=limit, labels_file=labels_file,
                          runner_options=runner_options)
    options.check()  # (before a precision is parsed, as the command always has)
    parsed = list(dict.fromkeys(Precision.parse(p) for p in precisions))
    served = artifact_kind(backend) == "served"  # (its artifacts are server URLs)
    given = {Precision.parse(k): (str(v) if served else Path(v).expanduser()) for k, v in (artifacts or {}).items()}
    return evaluation.evaluate(arch, parsed, data, options, out_dir=out_dir, artifacts=given, progress=progress,
                               progress_bar_enabled=progress_bar_enabled)


def predict(images: Sequence[str | os.PathLike[str]], depth: int | str = 50, *,
            weights: str | os.PathLike[str] | None = None, backend: str = "ort", precision: str | None = None,
            artifact: str | os.PathLike[str] | None = None, labels: str | os.PathLike[str] | None = None, top: int = 5,
            num_classes: int | None = None, out_dir: str | os.PathLike[str] = DEFAULT_ROOT, preact: bool = False,
            seed: int = RANDOM_SEED, progress: Progress = quiet, **runner_options: Any) -> dict[str, Any]:
    """Top-``top`` classes with softmax probabilities for each image file.

    ``backend`` is any :data:`resnet_deploy.runners.BACKENDS` name: ``torch`` runs the model
    itself, ``ort``/``ort-cuda`` the precision's ONNX (made if missing), ``trt``/``trt-rtx`` a
    built engine (``artifact`` or the default path under ``out_dir``). ``labels`` is a file
    with one class name per line; without it the ImageNet names are used, which needs 1000
    classes.
    """
    if top < 1:
        raise UserError(f"--top must be at least 1 (got {top})")
    model = ModelRef.of(depth, weights=weights, num_classes=num_classes, preact=preact, seed=seed)
    kind = artifact_kind(backend)
    if any(str(p).startswith(("http:/", "https:/", "ftp:/")) for p in images):  # (a Path turns // into /)
        raise UserError("URLs are not supported: download the image first and give its file")
    asked = Precision.parse(precision) if precision is not None else None
    label_names = read_labels(labels) if labels is not None else None  # a bad label file fails before any slow work
    decoded = decode_images(images)  # an undecodable image fails before any slow work
    if kind == "torch":
        progress(f"building {model.arch}")
        network = pipeline.load_model(model)
        card = network.card
        target: Any = _Target(network, weights and str(weights) or card.weights.source, asked or Precision.FP32,
                              card.num_classes, card.recipe, card.label_set)
    else:
        if kind == "served" and artifact is None:
            raise UserError(f"--engine {backend} runs a served model: give the server's --url (e.g. http://127.0.0.1:8000)")
        if artifact is None:
            artifact = _default_artifact(model, depth, kind, asked or Precision.FP32, backend, out_dir, progress)
        artifact = artifact if kind == "served" else Path(artifact)
        target = _artifact_target(model, asked, artifact, facts_of(backend, artifact, runner_options))
    names = None
    if target.classes is not None:
        names = load_labels(labels, target.classes, target.label_set) if label_names is None else label_names
        if len(names) != target.classes:
            raise UserError(f"label file {labels} has {len(names)} names but the model has {target.classes} classes")
    progress(f"running {len(decoded)} image(s) on {backend}")
    with open_runner(backend, target.runnable, precision=target.precision, **runner_options) as runner:
        if names is None:  # a foreign artifact that records no class count: ask the model
            probe = runner.infer(target.recipe(decoded[0][1])[None])
            target = dataclasses.replace(target, classes=int(probe.shape[1]))
            names = load_labels(labels, target.classes, target.label_set) if label_names is None else label_names
        predictions = classify_images(runner, decoded, names, recipe=target.recipe, top=top)
        described = runner.describe()
    return {
        "arch": model.arch,
        "backend": backend,
        "precision": target.precision,
        "artifact": target.name,
        "runner": described,
        "num_classes": target.classes,
        "labels": str(labels) if labels is not None else target.label_set,
        "preprocess": target.recipe.to_dict(),
        "top": min(top, target.classes),
        "predictions": predictions,
    }


@dataclasses.dataclass(frozen=True)
class _Target:
    """What ``predict`` runs: the model or artifact, its name in the report, and what it records."""

    runnable: Any
    name: str
    precision: str
    classes: int | None
    recipe: Any
    label_set: str


def facts_of(backend: str, artifact: Any, runner_options: dict[str, Any]) -> dict[str, str]:
    """What ``artifact`` records (arch, precision, weights, preprocessing): a file's metadata or manifest, or the
    served model's parameters for a backend that runs a server's model (``artifact`` is then its URL)."""
    kind = artifact_kind(backend)
    if kind == "served":
        return served_facts(backend, str(artifact), **runner_options)
    return artifact_facts(artifact, kind)


def _artifact_target(model: ModelRef, asked: Precision | None, artifact: Any, meta: dict[str, str]) -> _Target:
    """The artifact ``predict`` runs on an ONNX, engine or served backend, checked against the model asked for."""
    if meta.get("arch") not in (None, model.arch):
        raise UserError(f"{artifact} holds {meta['arch']}, not {model.arch} (pass --depth to match)")
    pipeline.check_same_weights(artifact, meta, model)
    classes = int(meta["num_classes"]) if str(meta.get("num_classes", "")).isdigit() else model.num_classes
    if model.num_classes is not None and classes is not None and classes != model.num_classes:
        raise UserError(f"{artifact} has {classes} classes, not --num-classes {model.num_classes}")
    recorded = meta.get("precision", asked or Precision.FP32)
    refuse_other_precision(artifact, recorded, asked)
    return _Target(artifact, str(artifact), recorded, classes, recipe_from_metadata(meta),
                   meta.get("label_set", "imagenet"))


def _default_artifact(model: ModelRef, depth: int | str | ModelRef, kind: str, precision: Precision, backend: str,
                      out_dir: PathLike, progress: Progress) -> Path:
    """The precision's artifact under ``out_dir``: an ONNX is made when missing, an engine must exist."""
    if kind == "onnx":
        # an export made from other weights is refused, never replaced (docs/deploy.md)
        for existing in {artifact_path(model.arch, "fp32", "onnx", out_dir),
                         artifact_path(model.arch, precision, "onnx", out_dir)}:
            if existing.is_file():
                pipeline.check_same_weights(existing, artifact_facts(existing, "onnx"), model)
        return Path(pipeline.precision_manifest(model, precision, out_dir=out_dir, progress=progress)["path"])
    path = engine_path_for(model.arch, precision, kind, out_dir)
    if not path.is_file():
        raise UserError(f"{path} does not exist; build it with `resnet-deploy build --depth {depth} "
                        f"--precision {precision} --engine {backend}`")
    return path


def package(depth: int | str | ModelRef = 50, *, precision: str | None = None, target: str = "jetson",
            out: PathLike | None = None, onnx: PathLike | None = None, engine: PathLike | None = None,
            weights: PathLike | None = None, labels: PathLike | None = None, name: str | None = None,
            force: bool = False, artifacts_dir: PathLike = DEFAULT_ROOT, min_batch: int | None = None,
            opt_batch: int | None = None, max_batch: int | None = None, instances: int = 1,
            instance_kind: str = "auto", ensemble: bool = True, top: int = 5, preact: bool = False,
            triton_backend: str = "onnxruntime",
            progress: Progress = quiet) -> dict[str, Any]:
    """A Jetson / edge bundle or a Triton model (``resnet-deploy package``); see :func:`resnet_deploy.deploy.package`."""
    model = ModelRef.of(depth, weights=weights, preact=preact)
    options = ServingOptions(name=name, labels=labels, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                             instances=instances, instance_kind=instance_kind, force=force, ensemble=ensemble, top=top,
                             triton_backend=triton_backend)
    return deployment.package(model, target, out, precision=Precision.parse(precision) if precision is not None else None,
                              onnx=onnx, engine=engine, artifacts_dir=artifacts_dir, options=options, progress=progress)


def serve(repository: PathLike, *, server: PathLike | None = None, host: str = "127.0.0.1", http_port: int = 8000,
          grpc_port: int = 8001, metrics_port: int | None = None, backends: dict[str, PathLike] | None = None,
          ready_timeout_s: float = 120.0, progress: Progress = quiet) -> TritonServer:
    """Start a local Triton server on ``repository`` (``resnet-deploy serve``) and return it once every model is READY.

    ``server``: a tritonserver binary, install folder or PyTriton environment (default: the first of
    ``$RESNET_DEPLOY_TRITONSERVER``, ``tritonserver`` on PATH, /opt/tritonserver, PyTriton in this Python);
    ``backends``: extra backend folders by name (a folder with a ``model.py`` runs through the python backend).
    Stop it with ``stop()`` or use it in a ``with`` block.
    """
    install = find_server(server)
    progress(f"starting {install.binary} ({install.source}) on {repository}")
    ports = Ports(http=http_port, grpc=grpc_port, metrics=metrics_port)
    srv = TritonServer(Path(repository), install=install, host=host, ports=ports,
                       extra_backends={k: Path(v) for k, v in (backends or {}).items()}, ready_timeout_s=ready_timeout_s)
    return srv.start()


def check_diagnose_engine(engine: str) -> None:
    """Refuse, before any slow work, an engine that does not run ONNX graphs or cannot run INT8 here."""
    if artifact_kind(engine) != "onnx":
        raise UserError(f"diagnose scores ONNX graphs (each block kept out of INT8 in turn); --engine {engine} runs "
                        f"{artifact_kind(engine)} artifacts: choose one of {', '.join(ONNX_BACKENDS)}")
    why = unavailable(engine, "int8")
    if why is not None:
        raise BackendUnavailable(engine, why)


def diagnose(depth: int | str, *, data: str | os.PathLike[str] | None = None, labels: str | os.PathLike[str] | None = None,
             limit: int | None = None, onnx: str | os.PathLike[str] | None = None,
             plot: str | os.PathLike[str] | None = None, out_dir: str | os.PathLike[str] = DEFAULT_ROOT,
             weights: str | os.PathLike[str] | None = None, num_classes: int | None = None, preact: bool = False,
             seed: int = RANDOM_SEED, calib: str | os.PathLike[str] | None = None,
             calib_samples: int = DEFAULT_CALIB_SAMPLES, method: str = "entropy", progress: Progress = quiet,
             progress_bar: bool = False, engine: str = "ort") -> dict[str, Any]:
    """Where INT8 goes wrong: block-by-block errors against FP32 and the sensitivity ranking (``resnet-deploy diagnose``).

    ``engine``: the ONNX runner that scores every model (``ort``, ``ort-cuda``, ``openvino``); the report's
    ``engine`` says which ran (backend, version, device).

    The INT8 ONNX is ``onnx`` (made from this model's FP32 export) or the one ``quantize`` left
    (:func:`pipeline.precision_manifest`; made when missing, with the ``calib`` options). Images: ``data`` (labelled: top-1; flat:
    agreement with FP32's top-1) or the calibration images. ``plot`` writes the bar charts.
    """
    check_diagnose_engine(engine)
    model = ModelRef.of(depth, weights=weights, num_classes=num_classes, preact=preact, seed=seed)
    fp32 = pipeline.ensure_onnx(model, out_dir=out_dir, progress=progress)
    fp32_path = Path(fp32["path"])
    snap = pipeline.fp32_snapshot(fp32, model)  # read once: the INT8 is checked against, and compared with, these bytes
    src_meta = read_fp32_source(snap)
    images = load_eval_set(data, recipe_from_metadata(src_meta), label_set=src_meta.get("label_set", "imagenet"),
                           labels_file=labels, limit=limit, calib=calib, calib_samples=calib_samples, seed=model.seed,
                           progress=progress, progress_bar_enabled=progress_bar)  # bad images fail before slow work
    if onnx is not None:
        int8_path = Path(onnx).expanduser()
        if not int8_path.is_file():
            raise UserError(f"ONNX file not found: {int8_path}")
        facts = artifact_facts(int8_path, "onnx")
        if facts.get("precision") != "int8":
            raise UserError(f"{int8_path} is {facts.get('precision', 'not').upper()}, not an INT8 Q/DQ model; diagnose "
                            "compares INT8 with FP32")
        if facts.get("source_sha256") not in (None, snap.sha256):
            raise UserError(f"{int8_path} was not quantized from {fp32_path}; pass the --weights it was made from")
    else:
        options = QuantizeOptions(calib=calib, calib_samples=calib_samples, method=method)
        int8_path = Path(pipeline.precision_manifest(model, Precision.INT8, out_dir=out_dir, options=options,
                                                     progress=progress, progress_bar=progress_bar)["path"])
        facts = artifact_facts(int8_path, "onnx")
    if facts.get("high_precision") == "fp16" and engine == "ort":
        raise UserError(f"{int8_path} keeps its unquantized layers in FP16, which ONNX Runtime CPU mis-computes "
                        "(docs/precision.md): diagnose an INT8 ONNX made with --high-precision fp32")
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-diagnose-") as work:
        report = diagnose_int8(snap.write(Path(work) / fp32_path.name), int8_path, images, Path(work), progress=progress,
                               progress_bar_enabled=progress_bar, backend=engine)
    report.update(arch=model.arch, fp32_onnx=str(fp32_path))  # (the private copy it read is gone)
    if plot is not None:
        plot_diagnosis(report, plot)
        report["plot"] = str(plot)
    return report


__all__ = ["build", "create_model", "describe", "diagnose", "evaluate", "export", "package", "parity", "predict", "quantize"]
