"""The Python API the CLI is a thin layer over.

    import resnet_deploy as rd
    model = rd.create_model(50)                      # seeded random, realistic statistics
    model = rd.create_model(50, weights="r50.pth")   # a torchvision checkpoint
    manifest = rd.export(50)                         # engines/resnet50/resnet50.fp32.onnx
    report = rd.parity(50)                           # ONNX Runtime vs PyTorch FP32
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .artifacts import DEFAULT_ROOT, artifact_path, ensure_writable_dir
from .errors import ParityError, UserError
from .models import ARCHS, PREACT_PREFIX, build_network, resolve_arch
from .weights import RANDOM_SEED, WeightsInfo, load_weights, randomize, read_state_dict

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def create_model(depth: int | str, *, num_classes: int | None = 1000, weights: str | os.PathLike[str] | None = None,
                 preact: bool = False, seed: int = RANDOM_SEED) -> nn.Module:
    """A ResNet in eval mode.

    ``depth`` is 18/34/50/101/152 or an architecture name (``"resnext50_32x4d"``,
    ``"wide_resnet50_2"``, ``"preact_resnet50"``). ``weights`` is a torchvision-format
    ``.pth``/``.pt`` or ``.safetensors`` file; without it the model is seeded-random with
    BatchNorm statistics re-estimated on real photographs (so it behaves like a trained
    network numerically). ``num_classes=None`` takes the count from the checkpoint.
    The returned module carries ``.arch`` and ``.weights_info``.
    """
    arch = resolve_arch(depth, preact)
    if num_classes is None:
        num_classes = 1000
        if weights is not None:
            fc = read_state_dict(weights).get("fc.weight")
            num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 1000
    model = build_network(arch, num_classes)
    info: WeightsInfo = load_weights(model, weights) if weights is not None else randomize(model, seed)
    model.eval()
    model.arch = arch
    model.num_classes = num_classes
    model.weights_info = info
    return model


def describe(depth: int | str, *, num_classes: int = 1000, preact: bool = False, image_size: int = 224) -> dict[str, Any]:
    """Parameters, MACs, stage shapes and layer count of an architecture (no weights needed)."""
    from .info import describe_network

    arch = resolve_arch(depth, preact)
    return {"arch": arch, "num_classes": num_classes, **describe_network(build_network(arch, num_classes), image_size)}


def model_facts(model: nn.Module) -> dict[str, Any]:
    arch = model.arch
    base = arch[len(PREACT_PREFIX):] if arch.startswith(PREACT_PREFIX) else arch
    spec = ARCHS[base]
    info: WeightsInfo = model.weights_info
    return {"arch": arch, "depth": sum(spec.layers) * (3 if spec.block.expansion == 4 else 2) + 2,
            "preact": arch.startswith(PREACT_PREFIX), "groups": spec.groups, "width_per_group": spec.width_per_group,
            "num_classes": model.num_classes, "weights_source": info.source, "weights_sha256": info.sha256,
            "weights_file_sha256": info.file_sha256}


def export(depth: int | str, *, weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
           out_dir: str | os.PathLike[str] = DEFAULT_ROOT, batch: int | None = None, opset: int | None = None,
           exporter: str = "torchscript", preact: bool = False, seed: int = RANDOM_SEED,
           progress: Progress = _quiet) -> dict[str, Any]:
    """Build the model and write ``<out_dir>/<arch>/<arch>.fp32.onnx`` plus its manifest."""
    from .onnx_export import DEFAULT_OPSET, export_onnx, validate_options

    arch = resolve_arch(depth, preact)
    validate_options(opset or DEFAULT_OPSET, exporter, batch)
    path = artifact_path(arch, "fp32", "onnx", out_dir)
    ensure_writable_dir(path.parent)
    t0 = time.perf_counter()
    progress(f"building {arch} ({'weights ' + str(weights) if weights else 'seeded random weights, BN stats from photos'})")
    model = create_model(arch, num_classes=num_classes, weights=weights, seed=seed)
    t_model = time.perf_counter() - t0
    progress(f"exporting {path}")
    manifest = export_onnx(model, path, facts=model_facts(model), batch=batch, opset=opset or DEFAULT_OPSET,
                           exporter=exporter, timings={"model": t_model}, started=t0)
    return {"path": str(path), **manifest}


def artifact_facts(artifact: str | os.PathLike[str], kind: str) -> dict[str, str]:
    """The model facts (arch, weights sha256, precision, batch) an artifact records.

    ONNX files carry them as ``resnet_deploy.*`` metadata; an engine's manifest copies its
    source ONNX's metadata under ``source_metadata`` (the engine format has no room for them).
    """
    from .onnx_export import load_onnx, read_metadata

    if kind == "onnx":
        return read_metadata(load_onnx(artifact))
    from .artifacts import read_manifest

    if not Path(artifact).is_file():
        raise UserError(f"engine not found: {artifact} (create it with `resnet-deploy build`)")
    manifest = read_manifest(artifact)
    facts = {k: str(v) for k, v in manifest.get("source_metadata", {}).items()}
    facts.setdefault("precision", str(manifest.get("precision", "fp32")))
    return facts


def parity(depth: int | str, *, precision: str = "fp32", backend: str = "ort",
           artifact: str | os.PathLike[str] | None = None, onnx: str | os.PathLike[str] | None = None,
           weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
           out_dir: str | os.PathLike[str] = DEFAULT_ROOT, preact: bool = False, seed: int = RANDOM_SEED,
           n_random: int = 4, images: list[str | os.PathLike[str]] | None = None, raise_on_fail: bool = False,
           progress: Progress = _quiet, **runner_options: Any) -> dict[str, Any]:
    """Compare an artifact on ``backend`` with PyTorch FP32 on photographs and random tensors.

    ``artifact`` (or its alias ``onnx``) defaults to the precision's artifact for the
    backend (``engines/resnet50/resnet50.fp16.onnx`` for ``ort``,
    ``engines/resnet50/resnet50.fp16.trt.engine`` for ``trt``); the FP32 ONNX is exported
    first if missing. The precision the artifact records sets the thresholds. It must have
    been made from the same weights as the reference (its metadata records their sha256).
    ``images`` replaces the default batch (scikit-image's photographs plus ``n_random``
    seeded random tensors) with the user's own image files.
    """
    from .compare import THRESHOLDS, parity_batch, run_parity
    from .runners import artifact_kind, open_runner
    from .runners.torch_runner import TorchRunner

    arch = resolve_arch(depth, preact)
    kind = artifact_kind(backend)
    if kind == "torch":
        raise UserError("parity compares an exported artifact with PyTorch; choose an ONNX or TensorRT engine")
    artifact = artifact if artifact is not None else onnx
    if artifact is None:
        artifact = artifact_path(arch, precision, kind, out_dir)
        if not Path(artifact).exists():
            if kind != "onnx" or precision != "fp32":
                step = f"quantize --precision {precision}" if kind == "onnx" else \
                    f"build --engine {backend} --precision {precision}"
                raise UserError(f"{artifact} does not exist; create it with `resnet-deploy {step} --depth {depth}`")
            progress(f"{artifact} does not exist yet: exporting it first")
            export(arch, weights=weights, num_classes=num_classes, out_dir=out_dir, seed=seed, progress=progress)
    meta = artifact_facts(artifact, kind)
    if meta.get("arch") not in (None, arch):
        raise UserError(f"{artifact} holds {meta['arch']}, not {arch}")
    if num_classes is None and meta.get("num_classes", "").isdigit():
        num_classes = int(meta["num_classes"])
    precision = meta.get("precision", precision)
    if precision not in THRESHOLDS:
        raise UserError(f"{artifact} records an unknown precision {precision!r}")
    # Open the candidate first: a missing runtime or a bad engine fails in a second, not after the reference.
    with open_runner(backend, artifact, precision=precision, **runner_options) as candidate:
        progress(f"building the PyTorch FP32 reference {arch}")
        model = create_model(arch, num_classes=num_classes, weights=weights, seed=seed)
        if meta.get("weights_sha256") and meta["weights_sha256"] != model.weights_info.sha256:
            raise UserError(f"{artifact} was made from other weights ({meta.get('weights_source')}) than the "
                            f"reference ({model.weights_info.source}); pass the same --weights or re-export")
        if images:
            from .preprocess import preprocess_files

            names, batch = [Path(p).name for p in images], preprocess_files(images)
        else:
            names, batch = parity_batch(n_random=n_random)
        fixed = meta.get("batch", "dynamic")
        chunk = int(fixed) if fixed.isdigit() else None
        progress(f"running {len(batch)} inputs through PyTorch and {backend}")
        reference = TorchRunner(model)
        result = run_parity(reference, candidate, batch, precision, chunk=chunk)
        cand_desc = candidate.describe()
    report = {"arch": arch, "artifact": str(artifact), "inputs": names, "reference": reference.describe(),
              "candidate": cand_desc, **result.to_dict()}
    if raise_on_fail and not result.passed:
        raise ParityError(f"parity failed for {artifact}: " + "; ".join(result.failures))
    return report
