"""Builder configuration: optimization level, workspace, targets, compatibility, DLA, timing cache."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .._native.trt import cc_tuple, is_rtx
from ..artifacts import atomic_path
from ..errors import UserError
from .options import HARDWARE_COMPAT, BuildOptions


def apply_config(trt, builder, config, opts: BuildOptions, precision: str, device, notes: list[str]) -> None:
    config.builder_optimization_level = opts.opt_level
    if opts.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    # DETAILED keeps layer parameters for IEngineInspector (default is LAYER_NAMES_ONLY).
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if opts.compute_capabilities:
        _apply_compute_capabilities(trt, config, opts.compute_capabilities)
    if opts.hardware_compatibility:
        _apply_hardware_compatibility(trt, config, opts.hardware_compatibility, device)
    if opts.version_compatible:
        flag = getattr(trt.BuilderFlag, "VERSION_COMPATIBLE", None)
        if flag is None:
            raise UserError(f"{trt.__name__} {trt.__version__} has no version-compatible builds")
        config.set_flag(flag)
    if opts.dla_core is not None:
        _apply_dla(trt, builder, config, opts, notes)
    if opts.legacy_precision_flags:
        _apply_legacy_precision_flags(trt, config, precision, notes)


def _apply_compute_capabilities(trt, config, capabilities: list[str]) -> None:
    """TensorRT-RTX's targets (``IBuilderConfig.set_compute_capability``); ``["current"]``: this GPU."""
    if not hasattr(config, "set_compute_capability"):
        raise UserError(f"{trt.__name__} {trt.__version__} cannot target compute capabilities")
    enum = trt.ComputeCapability
    names = ["CURRENT"] if capabilities == ["current"] else ["SM" + cc.replace(".", "") for cc in capabilities]
    missing = [cc for cc, n in zip(capabilities, names) if not hasattr(enum, n)]
    if missing:
        known = sorted((int(v) // 10, int(v) % 10) for k, v in enum.__members__.items() if k.startswith("SM"))
        raise UserError(
            f"{trt.__name__} {trt.__version__} cannot target compute capability {', '.join(missing)}; "
            f"it can target {', '.join(f'{a}.{b}' for a, b in known)}"
        )
    config.num_compute_capabilities = len(names)
    for i, n in enumerate(names):
        if not config.set_compute_capability(getattr(enum, n), i):
            raise UserError(f"{trt.__name__} rejected compute capability target {n}")


def _apply_hardware_compatibility(trt, config, compatibility: str, device) -> None:
    level = getattr(getattr(trt, "HardwareCompatibilityLevel", None), HARDWARE_COMPAT[compatibility], None)
    if level is None:
        raise UserError(f"{trt.__name__} {trt.__version__} has no hardware compatibility level {compatibility!r}")
    if compatibility == "ampere+" and device and cc_tuple(device["compute_capability"]) < (8, 0):
        raise UserError("hardware compatibility ampere+ can only be built on an Ampere or newer GPU")
    config.hardware_compatibility_level = level


def _apply_legacy_precision_flags(trt, config, precision: str, notes: list[str]) -> None:
    """TensorRT 10's weak-typing flags (``--legacy-precision-flags``); refused where the library lacks them."""
    wanted = {"fp16": ["FP16"], "bf16": ["BF16"], "int8": ["INT8", "FP16"], "fp32": []}[precision]
    for name in wanted:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise UserError(
                f"{trt.__name__} {trt.__version__} has no BuilderFlag.{name} (weak typing was removed in TensorRT 11); "
                "put the precision in the ONNX instead"
            )
        config.set_flag(flag)
    if precision == "int8":
        notes.append("legacy INT8 flag set without a calibrator: the ONNX must carry Q/DQ scales")


def _apply_dla(trt, builder, config, opts: BuildOptions, notes: list[str]) -> None:
    """Default device DLA on core ``opts.dla_core`` (IBuilderConfig.default_device_type / DLA_core)."""
    cores = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if cores == 0:
        raise UserError(
            f"{trt.__name__} {trt.__version__} sees no DLA here: DLA cores are on Jetson AGX Orin and Orin NX "
            "(not Orin Nano, Thor or discrete GPUs); TensorRT 10.7 was the last 10.x release with DLA"
        )
    if opts.dla_core >= cores:
        raise UserError(f"DLA core {opts.dla_core} does not exist: this device has {cores} (0..{cores - 1})")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = opts.dla_core
    if opts.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        notes.append(f"DLA core {opts.dla_core} with GPU fallback: layers DLA cannot run (or batches beyond its "
                     "limit) run on the GPU; the engine inspector's layer list shows which")
    else:
        notes.append(f"DLA core {opts.dla_core} without GPU fallback: every layer runs on the DLA")


# TensorRT's builder warns once per layer it moves off the DLA: "Layer 'x' (TYPE): Unsupported on DLA.
# Switching this layer's device type to GPU." (TensorRT 8.6-10), "... is not supported on DLA, falling
# back to GPU." (before).
_FELL_BACK = re.compile(r"Unsupported on DLA|not (?:supported|running) on DLA, falling back to GPU")


def dla_capability(network, config) -> dict[str, int]:
    """How many of the network's layers DLA can run (``IBuilderConfig.can_run_on_DLA``), before building."""
    n = int(network.num_layers)
    capable = sum(1 for i in range(n) if config.can_run_on_DLA(network.get_layer(i)))
    return {"network_layers": n, "dla_capable": capable}


def dla_placement(capability: dict[str, int], builder_warnings: list[str], core: int, notes: list[str]) -> dict[str, Any]:
    """Where a DLA build put the layers: what DLA could take, what the builder says it moved to the GPU."""
    n, capable = capability["network_layers"], capability["dla_capable"]
    moved = sum(1 for w in builder_warnings if _FELL_BACK.search(w))
    on_gpu = max(n - capable, moved)
    placement = {"source": "IBuilderConfig.can_run_on_DLA and the builder's warnings", "network_layers": n,
                 "dla_layers": n - on_gpu, "gpu_fallback_layers": on_gpu, "builder_moved": moved,
                 "mostly_gpu": on_gpu > n / 2}
    if placement["mostly_gpu"]:
        notes.append(f"warning: most layers fell back to the GPU: {on_gpu} of {n} run there, {n - on_gpu} on DLA core {core}")
    else:
        notes.append(f"DLA core {core} runs {n - on_gpu} of {n} layers; {on_gpu} fell back to the GPU")
    return placement


def load_timing_cache(trt, config, opts: BuildOptions, notes: list[str]):
    if opts.timing_cache is None:
        return None
    if is_rtx(trt):
        # tensorrt_rtx 1.7: "Timing cache operations are no-ops in TensorRT-RTX" (DeprecationWarning, since 1.2).
        notes.append("timing cache ignored: timing cache operations are no-ops in TensorRT-RTX")
        return None
    path = Path(opts.timing_cache)
    blob = b""
    if path.is_file():
        blob = path.read_bytes()
    cache = config.create_timing_cache(blob)
    if cache is None or not config.set_timing_cache(cache, False):
        if blob:
            notes.append(f"timing cache {path} does not match this TensorRT/GPU; starting a new one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
        else:
            raise UserError(f"could not create a timing cache at {path}")
    elif blob:
        notes.append(f"timing cache loaded from {path} ({len(blob)} bytes)")
    return cache


def save_timing_cache(config, path: Path, notes: list[str]) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    data = cache.serialize()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(memoryview(data))
    notes.append(f"timing cache saved to {path}")


