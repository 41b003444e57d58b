"""ONNX -> engine: the build itself, the reuse decision around it, and the preflight check.

Precision is *strongly typed*: it comes from the ONNX (FP16 from an AutoCast'ed ONNX, INT8 from
explicit Q/DQ nodes). TensorRT 11 and TensorRT-RTX have no other way; on TensorRT 10 the old
weak-typing builder flags (``BuilderFlag.FP16`` / ``INT8`` / ``BF16``) can still be requested with
``BuildOptions(legacy_precision_flags=True)``, and are refused where the library lacks them.

Every write goes through :mod:`resnet_deploy.artifacts` (atomic rename), and every engine gets a
JSON manifest beside it (``x.engine.json``) that :func:`~.reuse.needs_rebuild` and the runner read.

Layer precisions: TensorRT's ``IEngineInspector`` needs a *deserialized* engine, and
deserializing needs a CUDA device. So the manifest's ``layer_precision`` comes from the engine
inspector when a usable GPU is present, and otherwise from the parsed network (the per-layer
output types of the strongly typed network, which is what the builder must honour); its
``source`` field says which, and ``engine_inspector`` says why the inspector was not used.

Torch-free.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import onnx

from .. import __version__
from .._native.cuda import cuda_device_info, load_cudart
from .._native.trt import FLAVOURS, import_flavour, is_rtx, make_logger, rtx_cc_supported
from ..artifacts import abandon, ensure_writable_dir, publish_manifest, read_manifest, replacing
from ..errors import BackendUnavailable, UserError
from ..onnx_meta import read_metadata
from .config import apply_config, dla_capability, dla_placement, load_timing_cache, save_timing_cache
from .monitor import Cancel, make_progress_monitor, raise_if_cancelled, sigint_cancels
from .network import create_network, inspector_precision, io_facts, network_precision, parse_onnx, parser_error_line
from .options import BuildOptions, ProgressCallback
from .reuse import needs_rebuild, request_facts, target_facts


def inspect_with_gpu(trt, logger, engine_bytes, device, target: dict[str, Any], notes: list[str], *,
                     version_compatible: bool = False) -> dict[str, Any] | None:
    """Deserialize once to run the engine inspector; None (with a note) where that is impossible.

    A version-compatible plan embeds its lean runtime (host code), which IRuntime refuses to run
    unless ``engine_host_code_allowed`` is set; we built it, so it is trusted here as in the runner."""
    if device is None:
        return None
    if is_rtx(trt) and not rtx_cc_supported(device["compute_capability"], target.get("compute_capabilities") or []):
        notes.append(
            f"engine inspector unavailable: the engine does not target this GPU ({device['name']}, "
            f"compute capability {device['compute_capability']}), so it cannot be deserialized here"
        )
        return None
    try:
        runtime = trt.Runtime(logger)
        if version_compatible and hasattr(runtime, "engine_host_code_allowed"):
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            notes.append(f"engine inspector unavailable: cannot deserialize on {device['name']} ({logger.last_error() or 'no reason given'})")
            return None
        return inspector_precision(trt, engine)
    except Exception as e:  # noqa: BLE001 - the build itself succeeded; inspection is best effort
        notes.append(f"engine inspector failed: {type(e).__name__}: {e}")
        return None


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    opts: BuildOptions,
    *,
    precision: str,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Build ``onnx_path`` into ``engine_path`` and write its manifest; return the manifest."""
    opts.validate()
    opts.check_precision(precision)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX file not found: {onnx_path}")
    trt = import_flavour(opts.flavour)
    device, no_device_reason = cuda_device_info()
    if not is_rtx(trt) and device is None and load_cudart() is not None:
        raise BackendUnavailable(opts.flavour, f"building TensorRT engines needs a CUDA GPU: {no_device_reason}")

    target = target_facts(trt, opts, device)  # raises early for 'current' without a GPU
    ensure_writable_dir(engine_path.parent)  # fail before a long build, not after it
    notes: list[str] = []
    onnx_bytes = onnx_path.read_bytes()
    source_metadata = source_metadata_of(onnx_bytes)
    check_recorded_precision(source_metadata, precision, onnx_path)
    logger = make_logger(trt)

    builder = trt.Builder(logger)
    if builder is None:
        raise BackendUnavailable(opts.flavour, f"cannot create a TensorRT builder: {logger.last_error() or 'unknown error'}")
    network, strongly_typed = create_network(trt, builder, strongly_typed=not opts.legacy_precision_flags)
    parser = parse_onnx(trt, network, logger, onnx_bytes, onnx_path)
    inp, shape = image_input(network, onnx_path)
    fixed_batch = shape[0] if shape[0] >= 1 else None
    mn, opt, mx = opts.profile_for(fixed_batch)

    net_precision = network_precision(trt, network)
    if strongly_typed and net_precision["implied_precision"] != precision:
        raise UserError(
            f"{onnx_path.name} is {net_precision['implied_precision']} but {precision} was requested; strongly typed engines "
            f"take their precision from the ONNX (convert it first: FP16/BF16 with ModelOpt AutoCast, INT8 with Q/DQ nodes)"
        )

    config = builder.create_builder_config()
    apply_config(trt, builder, config, opts, precision, device, notes)
    capability = dla_capability(network, config) if opts.dla_core is not None else None
    add_batch_profile(builder, config, inp, (mn, opt, mx), logger)

    timing_cache = load_timing_cache(trt, config, opts, notes)
    cancel = Cancel()
    monitor = make_progress_monitor(trt, progress, cancel)
    if monitor is not None:
        config.progress_monitor = monitor
    elif progress is not None:
        notes.append("progress reporting unavailable: this TensorRT has no IProgressMonitor")

    t0 = time.perf_counter()
    with sigint_cancels(cancel):
        serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t0
    raise_if_cancelled(cancel)  # Ctrl-C or SIGTERM: nothing was written; let the caller report the interruption
    if serialized is None or serialized.nbytes == 0:
        raise build_failure(trt, logger, opts, engine_path, cancelled=monitor is not None and monitor.cancelled,
                            strongly_typed=strongly_typed)

    view = memoryview(serialized)
    # The engine, then its manifest (artifacts.replacing): stopped between, the previous pair comes back;
    # killed between, the engine has no manifest (runner and needs_rebuild then say so), never a stale one.
    with replacing(engine_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(view)
    try:  # until its manifest is written, the new engine is not done: interrupted, the previous one returns
        if timing_cache is not None and opts.timing_cache is not None:
            save_timing_cache(config, Path(opts.timing_cache), notes)

        layer_precision = inspect_with_gpu(trt, logger, serialized, device, target, notes,
                                           version_compatible=opts.version_compatible)
        inspector_note = inspector_outcome(layer_precision, net_precision, notes, no_device_reason)
        placement = (dla_placement(capability, logger.warnings, opts.dla_core, notes)
                     if capability is not None else None)
        outputs = [network.get_output(i) for i in range(network.num_outputs)]
        manifest: dict[str, Any] = {
            "kind": "engine",
            "flavour": opts.flavour,
            "builder": trt.__name__,
            "builder_version": trt.__version__,
            "onnx_parser_version": _call_or_none(getattr(trt, "get_nv_onnx_parser_version", None)),
            "toolkit_version": __version__,
            "onnx": str(onnx_path),
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "source_metadata": {**source_metadata, "precision": precision},
            "engine_sha256": hashlib.sha256(view).hexdigest(),
            "engine_bytes": len(view),
            "precision": precision,
            "strongly_typed": strongly_typed,
            "legacy_precision_flags": opts.legacy_precision_flags,
            "requested_profile": opts.requested_profile(),
            "min_batch": mn,
            "opt_batch": opt,
            "max_batch": mx,
            "onnx_fixed_batch": fixed_batch,
            "input": io_facts(trt, [inp])[0],
            "outputs": io_facts(trt, outputs),
            "workspace_mib": opts.workspace_mib,
            "opt_level": opts.opt_level,
            "hardware_compatibility": opts.hardware_compatibility,
            "version_compatible": opts.version_compatible,
            **opts.dla_facts(),
            "dla_placement": placement,
            "target": target,
            "build_gpu": device,
            "build_seconds": round(build_seconds, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "layer_precision": layer_precision if layer_precision is not None else net_precision,
            "engine_inspector": inspector_note,
            "notes": notes,
        }
        del parser
        publish_manifest(engine_path, manifest)
    except BaseException:
        abandon(engine_path)
        raise
    return manifest


def check_recorded_precision(source_metadata: dict[str, str], precision: str, onnx_path: Path) -> None:
    """An ONNX whose resnet_deploy metadata records a precision builds only at that precision."""
    recorded = source_metadata.get("precision")
    if recorded and recorded != precision:
        raise UserError(
            f"{onnx_path.name} records precision {recorded} (resnet_deploy metadata) but {precision} was requested; "
            f"build it with --precision {recorded}, or make the {precision} ONNX first"
        )


def image_input(network, onnx_path: Path) -> tuple[Any, list[int]]:
    """The parsed network's one [N,3,H,W] input (only the batch may be dynamic) and its shape."""
    if network.num_inputs == 0 or network.num_outputs == 0:
        # protobuf decoding is lenient: some non-ONNX bytes "parse" into an empty model
        raise UserError(f"cannot parse ONNX {onnx_path}: it defines no graph inputs or outputs (is it an ONNX model?)")
    if network.num_inputs != 1:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise UserError(f"expected an ONNX with one input [N,3,H,W]; {onnx_path} has {len(names)}: {', '.join(names)}")
    inp = network.get_input(0)
    shape = list(inp.shape)
    if len(shape) != 4:
        raise UserError(f"ONNX input {inp.name!r} has shape {shape}; expected [N,3,H,W]")
    if any(d < 0 for d in shape[1:]):
        raise UserError(f"ONNX input {inp.name!r} has dynamic non-batch dimensions {shape}; only the batch may be dynamic")
    return inp, shape


def add_batch_profile(builder, config, inp, batches: tuple[int, int, int], logger) -> None:
    """One optimization profile: the input's min / opt / max batch, its other dimensions fixed."""
    mn, opt, mx = batches
    rest = list(inp.shape)[1:]
    profile = builder.create_optimization_profile()
    try:
        profile.set_shape(inp.name, [mn, *rest], [opt, *rest], [mx, *rest])
    except (RuntimeError, ValueError) as e:  # the bindings raise RuntimeError (PY_ASSERT_RUNTIME_ERROR in pyCore.cpp)
        raise UserError(f"invalid batch profile {mn}/{opt}/{mx} for input {inp.name!r}: {e}") from None
    if config.add_optimization_profile(profile) < 0:
        raise UserError(f"TensorRT rejected the batch profile {mn}/{opt}/{mx}: {logger.last_error()}")


def build_failure(trt, logger, opts: BuildOptions, engine_path: Path, *, cancelled: bool, strongly_typed: bool) -> UserError:
    """What to say when the builder returned no engine."""
    if cancelled:
        return UserError(f"engine build cancelled: nothing was written to {engine_path}")
    detail = parser_error_line(logger.errors, limit=2) or "no reason given"
    hint = ""
    if opts.dla_core is not None and strongly_typed and not is_rtx(trt):
        hint = ("; if this TensorRT 10 refuses a strongly typed DLA build, add --legacy-precision-flags "
                "(TensorRT 10's FP16/INT8 flags; INT8 scales still come from the Q/DQ nodes)")
    return UserError(f"TensorRT could not build {engine_path.name}: {detail}{hint}")


def inspector_outcome(layer_precision: dict[str, Any] | None, net_precision: dict[str, Any], notes: list[str],
                      no_device_reason: str) -> str:
    """The manifest's ``engine_inspector``: "used" (the network's view added to the inspector's), or why not."""
    if layer_precision is None:
        if notes and notes[-1].startswith("engine inspector"):
            return notes[-1]
        return f"engine inspector unavailable: deserializing an engine needs a CUDA GPU ({no_device_reason})"
    layer_precision["network"] = {k: net_precision[k] for k in ("output_dtypes", "qdq_layers", "implied_precision")}
    return "used"


def source_metadata_of(onnx_bytes: bytes) -> dict[str, str]:
    """The source ONNX's ``resnet_deploy.*`` metadata (arch, weights sha256, precision, ...); ``{}`` if it has none."""
    try:
        model = onnx.load_model_from_string(onnx_bytes)
    except Exception:  # noqa: BLE001 - not an ONNX at all: the parser says so with more detail
        return {}
    return read_metadata(model)


def _call_or_none(fn):
    try:
        return fn() if fn else None
    except Exception:  # noqa: BLE001 - best effort: the build itself succeeded
        return None


def build_or_reuse_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    opts: BuildOptions,
    *,
    precision: str,
    force: bool = False,
    progress: ProgressCallback | None = None,
    say: Callable[[str], Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Reuse the engine if its manifest matches, else build. Returns ``(manifest, rebuild reason or None)``.

    ``say`` gets one line per decision (checking, reusing, or building and why) before the
    work starts; ``progress(phase, step, total)`` TensorRT's build phases.
    """
    say = say or (lambda _msg: None)
    say(f"checking {engine_path} against the request")
    reason = "forced (--force)" if force else needs_rebuild(engine_path, request_facts(onnx_path, opts, precision=precision))
    if reason is None:
        say(f"reusing {engine_path}: its manifest matches (same ONNX, precision, profile, builder, target)")
        return read_manifest(engine_path), None
    say(f"building {engine_path} with {FLAVOURS[opts.flavour]} ({reason})")
    return build_engine(onnx_path, engine_path, opts, precision=precision, progress=progress), reason


def preflight(opts: BuildOptions, precision: str | None = None) -> Any:
    """Fail fast (before any ONNX is made) when ``opts`` cannot be built here; return the module."""
    opts.validate()
    if precision is not None:
        opts.check_precision(precision)
    trt = import_flavour(opts.flavour)
    if not is_rtx(trt):
        device, why = cuda_device_info()
        if device is None:
            raise BackendUnavailable(opts.flavour, f"building TensorRT engines needs a CUDA GPU: {why}")
    return trt


