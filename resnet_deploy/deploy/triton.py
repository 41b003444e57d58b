"""A model for NVIDIA Triton Inference Server's model repository, and the ensemble that serves images.

    <repository>/<name>/config.pbtxt
    <repository>/<name>/labels.txt          (Triton's classification extension names the classes)
    <repository>/<name>/1/model.onnx        platform onnxruntime_onnx, or backend openvino (--triton-backend openvino)
    <repository>/<name>/1/model.plan        platform tensorrt_plan (an engine built with TensorRT, not -RTX)
    <repository>/<name>_preprocess/         python backend: encoded image bytes -> the input tensor
    <repository>/<name>_topk/               python backend: logits -> top-k labels, indices, probabilities
    <repository>/<name>_images/             the ensemble of the three: image bytes in, logits and top-k out

``config.pbtxt`` is Triton's ``ModelConfig`` protobuf, built as a message and printed in text format
(:mod:`.triton_config`): ``max_batch_size`` and the input/output names, types and dims (without the
batch dimension) come from the model (the ONNX graph, or the engine's manifest), with dynamic
batching (preferred batch sizes inside the engine's profile) and an instance group; the model's
``resnet_deploy.*`` metadata travels in ``parameters``. Instance kind: ``auto`` (KIND_AUTO) for an
ONNX by default, so one repository loads on a CPU-only server (CPU instances) and on a GPU server
(GPU instances); a plan is KIND_GPU with optimization profile 0, the one the engine was built with.
``--triton-backend openvino`` serves the same ``model.onnx`` through Triton's OpenVINO backend
(``backend: "openvino"``, ``default_model_filename: "model.onnx"``, CPU instances, one stream with the
latency hint: with dynamic batching one instance gets whole batches, measured as fast as OpenVINO's
streams for batch 8 in docs/cpu.md); the toolkit's INT8 Q/DQ ONNX runs in integer kernels there.
A fixed-batch export (``max_batch_size: 0``, dims with the batch) is served as it is; for a batch
above 1 the classifier's output carries no ``label_filename`` (Triton's classification extension
would rank all N x classes values as one vector), and per-image top-k comes from the ensemble. Each
model folder is written beside the others under a temporary name and renamed into place whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifacts import Snapshot, name_from_file, read_manifest, verify
from ..errors import UserError
from ..labels import load_labels
from ..progress import Progress, quiet
from .common import TEMPLATES, check_output_folder, check_sources, onnx_facts, recipe_dict, staged_folder, write_json
from .options import ServingOptions
from .triton_config import (
    ENSEMBLE_OUTPUTS,
    IMAGE_INPUT,
    INSTANCE_KINDS,
    ONNX_BACKENDS,
    OPENVINO_PARAMETERS,
    TRITON_TYPES,
    Classifier,
    Tensor,
    classifier_config,
    config_text,
    ensemble_config,
    preprocess_config,
    topk_config,
    triton_type,
)

DEFAULT_MAX_BATCH = 32
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # \Z: `$` would match before a trailing newline
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SERVING_PACKAGE = "resnet_deploy_serving"
# the toolkit's own numpy/Pillow modules the python-backend models run, copied verbatim
VENDORED = ("errors.py", "preprocess.py", "classify.py")


def preferred_sizes(max_batch: int, min_batch: int = 1, opt_batch: int | None = None) -> list[int]:
    """Powers of two from 4 up to ``max_batch``, plus the engine's opt batch and ``max_batch`` itself."""
    sizes = {b for b in (4, 8, 16, 32, 64, 128, 256) if min_batch <= b <= max_batch}
    sizes.add(max_batch)
    if opt_batch and min_batch <= opt_batch <= max_batch:
        sizes.add(opt_batch)
    return sorted(sizes)


def _onnx_io(snap: Snapshot, max_batch: int | None) -> tuple[dict[str, Any], dict[str, Any], int, dict[str, Any], list[str]]:
    path = snap.path
    facts = onnx_facts(snap)
    notes = []
    inp, out = dict(facts["input"]), dict(facts["output"])
    if facts["fixed_batch"] is not None:
        # Triton batches along a dimension it adds itself; a fixed-batch model keeps its full shape.
        if max_batch not in (None, 0):
            raise UserError(f"{path} has a fixed batch of {facts['fixed_batch']}; re-export with a dynamic batch to let Triton batch requests")
        mbs = 0
        inp["dims"], out["dims"] = list(inp["shape"]), list(out["shape"])
        notes.append(f"fixed batch {facts['fixed_batch']}: max_batch_size 0, no dynamic batching")
    else:
        mbs = DEFAULT_MAX_BATCH if max_batch is None else max_batch
        if mbs < 1:
            raise UserError(f"--max-batch must be at least 1 for a dynamic-batch model (got {mbs})")
        inp["dims"], out["dims"] = list(inp["shape"][1:]), list(out["shape"][1:])
    return inp, out, mbs, facts, notes


def _plan_io(snap: Snapshot, max_batch: int | None) -> tuple[dict[str, Any], dict[str, Any], int, dict[str, Any], list[str]]:
    path = snap.path
    m = read_manifest(path)
    verify(snap, m, what="engine", fix="rebuild it")  # the bytes that will be copied, not the file read again
    if m.get("kind") != "engine":
        raise UserError(f"manifest of {path} does not describe an engine")
    if m.get("flavour") != "trt":
        raise UserError(f"{path} is a {m.get('flavour')} engine; Triton's tensorrt_plan backend runs TensorRT engines "
                        "(build one with --engine trt on the serving GPU), not TensorRT-RTX")
    mn, mx = int(m["min_batch"]), int(m["max_batch"])
    if mn > 1:
        raise UserError(f"{path} accepts batches {mn}..{mx}; Triton sends batches from 1, so rebuild with min batch 1")
    if max_batch not in (None, mx):
        raise UserError(f"{path} was built for batches up to {mx}; max_batch_size must match the engine profile (got {max_batch})")
    inp = dict(m["input"])
    outputs = m.get("outputs") or []
    out = next((o for o in outputs if o.get("name") == "logits"), outputs[0] if outputs else None)
    if out is None:
        raise UserError(f"manifest of {path} lists no outputs")
    out = dict(out)
    inp["dims"], out["dims"] = list(inp["shape"][1:]), list(out["shape"][1:])
    if any(int(d) < 0 for d in inp["dims"] + out["dims"]):
        raise UserError(f"{path} has dynamic non-batch dimensions; Triton needs them fixed")
    facts = {"num_classes": int(out["dims"][-1]), "precision": m.get("precision"),
             "metadata": m.get("source_metadata", {}), "engine": {k: m.get(k) for k in (
                 "builder", "builder_version", "min_batch", "opt_batch", "max_batch", "target", "engine_sha256")}}
    notes = [f"needs a Triton release whose TensorRT is {m.get('builder_version')} on the GPU the engine was built for "
             f"({(m.get('target') or {}).get('compute_capability') or 'see manifest'})"]
    return inp, out, mx, facts, notes



def _check_request(name: str, repository: Path, model: Path, options: ServingOptions, version: int) -> None:
    if not NAME_RE.match(name):
        raise UserError(f"model name {name!r} must be letters, digits, '_', '-', '.' (it is a folder name)")
    if options.instances < 1:
        raise UserError(f"--instances must be at least 1 (got {options.instances})")
    if options.instance_kind not in INSTANCE_KINDS:
        raise UserError(f"instance kind must be one of {', '.join(INSTANCE_KINDS)} (got {options.instance_kind!r})")
    if options.triton_backend not in ONNX_BACKENDS:
        raise UserError(f"--triton-backend must be one of {', '.join(ONNX_BACKENDS)} (got {options.triton_backend!r})")
    if options.triton_backend == "openvino" and options.instance_kind == "gpu":
        raise UserError("--triton-backend openvino serves on CPU instances (Triton's OpenVINO backend); use --instance-kind "
                        "cpu or auto, or the onnxruntime backend for GPU instances")
    if options.top < 1:
        raise UserError(f"--top must be at least 1 (got {options.top})")
    if version < 1:
        raise UserError(f"model version must be at least 1 (got {version})")
    if repository.exists() and not repository.is_dir():
        raise UserError(f"{repository} exists and is not a folder")
    if not model.is_file():
        raise UserError(f"model not found: {model}")


def _tensor(d: dict[str, Any], what: str) -> Tensor:
    return Tensor(d["name"], triton_type(d["dtype"], f"{what} {d['name']!r}"), tuple(int(v) for v in d["dims"]))


def _classifier(snap: Snapshot, name: str, options: ServingOptions, queue_delay_us: int) -> tuple[Classifier, dict[str, Any], list[str]]:
    """The classifier's config facts, the model facts, and notes for the manifest."""
    model = snap.path
    if model.suffix in (".engine", ".plan"):
        if options.instance_kind == "cpu":
            raise UserError(f"{model} is a TensorRT engine: it runs on a GPU only (--instance-kind gpu or auto)")
        if options.triton_backend != "onnxruntime":
            raise UserError(f"{model} is a TensorRT engine: Triton serves it as tensorrt_plan, not through "
                            f"--triton-backend {options.triton_backend}")
        inp, out, mbs, facts, notes = _plan_io(snap, options.max_batch)
        eng = facts["engine"]
        preferred, platform, kind, profile = preferred_sizes(mbs, eng["min_batch"], eng["opt_batch"]), "tensorrt_plan", "KIND_GPU", "0"
        backend, extra = "", ()
    else:
        inp, out, mbs, facts, notes = _onnx_io(snap, options.max_batch)
        preferred, profile = (preferred_sizes(mbs) if mbs else []), None
        if options.triton_backend == "openvino":
            platform, backend, kind, extra = "", "openvino", "KIND_CPU", OPENVINO_PARAMETERS
            notes.append("Triton's OpenVINO backend on model.onnx: CPU instances, " +
                         ", ".join(f"{k} {v}" for k, v in OPENVINO_PARAMETERS))
        else:
            platform, backend, kind, extra = "onnxruntime_onnx", "", INSTANCE_KINDS[options.instance_kind], ()
            notes.append({"KIND_AUTO": "instances KIND_AUTO: GPU instances where the server has a GPU, CPU instances elsewhere",
                          "KIND_CPU": "CPU instances: the ONNX Runtime backend runs on the CPU",
                          "KIND_GPU": "GPU instances: a server without a GPU refuses this model"}[kind])
    fixed = facts.get("fixed_batch")
    label_file = "labels.txt"
    if fixed is not None and fixed > 1:
        label_file = None
        notes.append(f"fixed batch {fixed}: no label_filename on {out['name']!r} (Triton's classification extension would rank "
                     f"all {fixed} x {facts['num_classes']} values as one vector); per-image top-k from {name}_images")
    params = tuple((f"resnet_deploy.{k}", str(v)) for k, v in sorted(facts["metadata"].items()))
    params += (("resnet_deploy.precision", str(facts["precision"])), ("resnet_deploy.num_classes", str(facts["num_classes"])))
    clf = Classifier(name=name, platform=platform, max_batch_size=mbs, input=_tensor(inp, "input"),
                        output=_tensor(out, "output"), preferred=tuple(preferred), queue_delay_us=queue_delay_us,
                        instances=options.instances, kind=kind, profile=profile, label_file=label_file,
                        parameters=tuple({**dict(params), **dict(extra)}.items()), backend=backend,
                        model_filename="model.onnx" if backend == "openvino" else "")
    return clf, {**facts, "inp": inp, "out": out}, notes


def write_triton_model(model: str | os.PathLike[str] | Snapshot, repository: str | os.PathLike[str], *, name: str,
                       options: ServingOptions = ServingOptions(), queue_delay_us: int = 100, version: int = 1,
                       progress: Progress = quiet) -> dict[str, Any]:
    """Add ``model`` (an ONNX file, or an engine with its manifest; or a :class:`Snapshot` of one) to a Triton
    repository as ``name`` and, with ``options.ensemble``, its image-bytes ensemble ``name_images``
    (``options``: labels, ``max_batch``, instances and their kind, ``top``, ``force``; their ``name`` is not read)."""
    given = model if isinstance(model, Snapshot) else None
    model, repository = (given.path if given is not None else Path(model)), Path(repository)
    _check_request(name, repository, model, options, version)
    check_sources(repository / name, [model])
    snap = given or Snapshot.take(model, what="model")  # read once: what the config describes is what is copied
    clf, facts, notes = _classifier(snap, name, options, queue_delay_us)
    is_plan = clf.platform == "tensorrt_plan"
    filename = "model.plan" if is_plan else "model.onnx"
    names = load_labels(options.labels, facts["num_classes"], facts["metadata"].get("label_set", "imagenet"))
    arch = facts["metadata"].get("arch") or name_from_file(model)
    note = f"{arch} {facts['precision']} written by resnet-deploy {__version__}"
    top = min(options.top, int(facts["num_classes"]))
    ensemble = _ensemble_configs(clf, facts, top) if options.ensemble else {}
    final = repository / name
    for other in ensemble:
        check_output_folder(repository / other, options.force)
    progress(f"writing Triton model {name} ({clf.serves_with}) into {repository}")
    labels_text = "\n".join(names) + "\n"
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(staged_folder(final, options.force))
        (tmp / str(version)).mkdir()
        snap.write(tmp / str(version) / filename)
        (tmp / "config.pbtxt").write_text(config_text(classifier_config(clf), note))
        (tmp / "labels.txt").write_text(labels_text, encoding="utf-8")
        for folder_name, (config, template) in ensemble.items():
            folder = stack.enter_context(staged_folder(repository / folder_name, options.force))
            _write_ensemble_member(folder, config, template, note, labels_text)
        manifest = {
            "kind": "triton-model", "toolkit_version": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "name": name, "platform": clf.serves_with, "version": version, "source": str(model),
            "model_file": f"{version}/{filename}", "sha256": snap.sha256,
            "arch": arch, "precision": facts["precision"], "num_classes": facts["num_classes"],
            "max_batch_size": clf.max_batch_size, "preferred_batch_size": list(clf.preferred), "instances": clf.instances,
            "instance_kind": clf.kind, "input": facts["inp"], "output": facts["out"],
            "labels": {"file": "labels.txt", "count": len(names),
                       "source": str(options.labels) if options.labels else facts["metadata"].get("label_set", "imagenet")},
            "ensemble": ({"name": f"{name}_images", "models": list(ensemble), "input": IMAGE_INPUT,
                          "outputs": list(ENSEMBLE_OUTPUTS), "top": top} if ensemble else None),
            "engine": facts.get("engine"), "notes": notes,
        }
        write_json(tmp / "resnet_deploy.json", manifest)
    return {"path": str(final), "config": str(final / "config.pbtxt"), **manifest}


def _ensemble_configs(clf: Classifier, facts: dict[str, Any], top: int) -> dict[str, tuple[Any, str | None]]:
    """``{folder: (ModelConfig, python template or None)}`` of the preprocess, top-k and ensemble models."""
    if clf.input.name == IMAGE_INPUT or clf.output.name in ENSEMBLE_OUTPUTS[1:]:
        raise UserError(f"the model's tensors are named {clf.input.name!r} and {clf.output.name!r}; the image ensemble "
                        f"uses {IMAGE_INPUT!r} and {', '.join(map(repr, ENSEMBLE_OUTPUTS[1:]))} itself: pass --no-ensemble")
    size = [int(v) for v in facts["inp"]["dims"][-2:]]
    # a model that records no recipe (not made here) is fed ImageNet's, scaled to its square input
    recipe = recipe_dict({**({"image_size": str(size[0])} if size[0] == size[1] else {}), **facts["metadata"]})
    if size != [recipe["image_size"], recipe["image_size"]]:
        raise UserError(f"the model's input is {size[0]}x{size[1]} but its recipe crops {recipe['image_size']}; "
                        "the image ensemble cannot feed it (pass --no-ensemble)")
    return {f"{clf.name}_preprocess": (preprocess_config(clf, json.dumps(recipe, sort_keys=True)), "preprocess.py"),
            f"{clf.name}_topk": (topk_config(clf, top), "topk.py"),
            f"{clf.name}_images": (ensemble_config(clf, top), None)}


def _write_ensemble_member(folder: Path, config: Any, template: str | None, note: str, labels_text: str) -> None:
    (folder / "1").mkdir()
    (folder / "config.pbtxt").write_text(config_text(config, note))
    if template is None:
        return
    shutil.copyfile(TEMPLATES / "triton" / template, folder / "1" / "model.py")
    pkg = folder / "1" / SERVING_PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f'"""Copied verbatim from resnet-deploy {__version__} by `package --target triton`."""\n')
    for rel in VENDORED:
        shutil.copyfile(PACKAGE_ROOT / rel, pkg / rel)
    if template == "topk.py":
        (folder / "labels.txt").write_text(labels_text, encoding="utf-8")


__all__ = ["INSTANCE_KINDS", "TRITON_TYPES", "preferred_sizes", "write_triton_model"]
