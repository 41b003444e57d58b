"""A model for NVIDIA Triton Inference Server's model repository.

    <repository>/<name>/config.pbtxt
    <repository>/<name>/labels.txt          (Triton's classification extension names the classes)
    <repository>/<name>/1/model.onnx        platform onnxruntime_onnx
    <repository>/<name>/1/model.plan        platform tensorrt_plan (an engine built with TensorRT, not -RTX)

``config.pbtxt`` is Triton's ``ModelConfig`` protobuf in text format: ``max_batch_size`` and the
input/output names, types and dims (without the batch dimension) come from the model (the ONNX
graph, or the engine's manifest), with dynamic batching (preferred batch sizes inside the
engine's profile) and an instance group; for a plan the instance group names optimization
profile 0, the one the engine was built with. The model folder is written beside the others in
the repository under a temporary name and renamed into place whole.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifacts import name_from_file, sha256_file, verified_manifest
from ..errors import UserError
from ..labels import load_labels
from ..progress import Progress, quiet
from .common import onnx_facts, staged_folder, write_json
from .options import ServingOptions

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
                "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
DEFAULT_MAX_BATCH = 32
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # \Z: `$` would match before a trailing newline


def _triton_type(dtype: str, what: str) -> str:
    if dtype not in TRITON_TYPES:
        raise UserError(f"{what} has type {dtype}, which Triton cannot serve")
    return TRITON_TYPES[dtype]


def preferred_sizes(max_batch: int, min_batch: int = 1, opt_batch: int | None = None) -> list[int]:
    """Powers of two from 4 up to ``max_batch``, plus the engine's opt batch and ``max_batch`` itself."""
    sizes = {b for b in (4, 8, 16, 32, 64, 128, 256) if min_batch <= b <= max_batch}
    sizes.add(max_batch)
    if opt_batch and min_batch <= opt_batch <= max_batch:
        sizes.add(opt_batch)
    return sorted(sizes)


def config_text(*, name: str, platform: str, max_batch_size: int, inp: dict[str, Any], out: dict[str, Any],
                label_file: str | None, preferred: list[int], queue_delay_us: int,
                instance_group: tuple[int, str, str | None], note: str) -> str:
    """``config.pbtxt`` text (protobuf text format of Triton's ModelConfig); ``instance_group`` is
    ``(count, kind, profile)`` (``KIND_GPU``/``KIND_CPU``; the engine profile or ``None``)."""
    instances, instance_kind, profile = instance_group

    def dims(d: list[int]) -> str:
        return "[ " + ", ".join(str(int(v)) for v in d) + " ]"

    lines = [f"# {note}", f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch_size}",
             "input [", "  {", f'    name: "{inp["name"]}"', f"    data_type: {inp['triton_type']}",
             f"    dims: {dims(inp['dims'])}", "  }", "]",
             "output [", "  {", f'    name: "{out["name"]}"', f"    data_type: {out['triton_type']}",
             f"    dims: {dims(out['dims'])}"]
    if label_file:
        lines.append(f'    label_filename: "{label_file}"')
    lines += ["  }", "]"]
    if max_batch_size > 0:
        lines += ["dynamic_batching {", f"  preferred_batch_size: {dims(preferred)}",
                  f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {instances}", f"    kind: {instance_kind}"]
    if profile is not None:
        lines.append(f'    profile: [ "{profile}" ]')
    lines += ["  }", "]", ""]
    return "\n".join(lines)


def _onnx_io(path: Path, max_batch: int | None) -> tuple[dict[str, Any], dict[str, Any], int, dict[str, Any], list[str]]:
    facts = onnx_facts(path)
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


def _plan_io(path: Path, max_batch: int | None) -> tuple[dict[str, Any], dict[str, Any], int, dict[str, Any], list[str]]:
    m = verified_manifest(path, what="engine", fix="rebuild it")
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


def write_triton_model(model: str | os.PathLike[str], repository: str | os.PathLike[str], *, name: str,
                       options: ServingOptions = ServingOptions(), queue_delay_us: int = 100, version: int = 1,
                       progress: Progress = quiet) -> dict[str, Any]:
    """Add ``model`` (an ONNX file, or an engine with its manifest) to a Triton repository as ``name``
    (``options``: labels, ``max_batch``, instances, ``force``; their ``name`` is not read)."""
    model, repository = Path(model), Path(repository)
    labels, max_batch, instances, instance_kind = options.labels, options.max_batch, options.instances, options.instance_kind
    if not NAME_RE.match(name):
        raise UserError(f"model name {name!r} must be letters, digits, '_', '-', '.' (it is a folder name)")
    if instances < 1:
        raise UserError(f"--instances must be at least 1 (got {instances})")
    if instance_kind not in INSTANCE_KINDS:
        raise UserError(f"instance kind must be one of {', '.join(INSTANCE_KINDS)} (got {instance_kind!r})")
    if version < 1:
        raise UserError(f"model version must be at least 1 (got {version})")
    if repository.exists() and not repository.is_dir():
        raise UserError(f"{repository} exists and is not a folder")
    if not model.is_file():
        raise UserError(f"model not found: {model}")
    is_plan = model.suffix in (".engine", ".plan")
    if is_plan:
        inp, out, mbs, facts, notes = _plan_io(model, max_batch)
        platform, filename, profile = "tensorrt_plan", "model.plan", "0"
        eng = facts["engine"]
        preferred = preferred_sizes(mbs, eng["min_batch"], eng["opt_batch"])
    else:
        inp, out, mbs, facts, notes = _onnx_io(model, max_batch)
        platform, filename, profile = "onnxruntime_onnx", "model.onnx", None
        preferred = preferred_sizes(mbs) if mbs else []
        if instance_kind == "cpu":
            notes.append("CPU instances: the ONNX Runtime backend runs on the CPU")
    inp["triton_type"] = _triton_type(inp["dtype"], f"input {inp['name']!r}")
    out["triton_type"] = _triton_type(out["dtype"], f"output {out['name']!r}")
    names = load_labels(labels, facts["num_classes"], facts["metadata"].get("label_set", "imagenet"))
    arch = facts["metadata"].get("arch") or name_from_file(model)
    note = f"{arch} {facts['precision']} written by resnet-deploy {__version__}"
    text = config_text(name=name, platform=platform, max_batch_size=mbs, inp=inp, out=out, label_file="labels.txt",
                       preferred=preferred, queue_delay_us=queue_delay_us,
                       instance_group=(instances, INSTANCE_KINDS[instance_kind], profile if instance_kind == "gpu" else None),
                       note=note)
    final = repository / name
    progress(f"writing Triton model {name} ({platform}) into {repository}")
    with staged_folder(final, options.force) as tmp:
        (tmp / str(version)).mkdir()
        shutil.copyfile(model, tmp / str(version) / filename)
        (tmp / "config.pbtxt").write_text(text)
        (tmp / "labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
        manifest = {
            "kind": "triton-model", "toolkit_version": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "name": name, "platform": platform, "version": version, "source": str(model),
            "model_file": f"{version}/{filename}", "sha256": sha256_file(tmp / str(version) / filename),
            "arch": arch, "precision": facts["precision"], "num_classes": facts["num_classes"],
            "max_batch_size": mbs, "preferred_batch_size": preferred, "instances": instances,
            "instance_kind": INSTANCE_KINDS[instance_kind], "input": inp, "output": out,
            "labels": {"file": "labels.txt", "count": len(names), "source": str(labels) if labels else facts["metadata"].get("label_set", "imagenet")},
            "engine": facts.get("engine"), "notes": notes,
        }
        write_json(tmp / "resnet_deploy.json", manifest)
    return {"path": str(final), "config": str(final / "config.pbtxt"), **manifest}


__all__ = ["config_text", "preferred_sizes", "write_triton_model", "TRITON_TYPES"]
