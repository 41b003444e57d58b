"""What to build: :class:`BuildOptions`, the batch profile, where an engine goes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .._native.trt import DLA_PRECISIONS, check_dla_core, check_flavour, normalize_compute_capability
from ..artifacts import DEFAULT_ROOT, Precision, artifact_path
from ..errors import UserError
from ..limits import MAX_BATCH

DEFAULT_PROFILE = (1, 8, 32)  # min / opt / max batch for a dynamic-batch ONNX
DLA_DEFAULT_BATCH = 1  # DLA engines are static-shape (TensorRT's DLA restrictions)
MAX_OPT_LEVEL = 5  # IBuilderConfig.builder_optimization_level: 0..5, default 3 (API reference)
HARDWARE_COMPAT = {"ampere+": "AMPERE_PLUS", "same_cc": "SAME_COMPUTE_CAPABILITY"}

ProgressCallback = Callable[[str, int, int], Any]
"""``progress(phase, step, total)``; called when a phase starts (step 0) and after each step.
Returning ``False`` asks the builder to cancel (``IProgressMonitor.step_complete``)."""


@dataclass
class BuildOptions:
    """What to build. ``None`` batch values mean: 1/8/32 for a dynamic-batch ONNX, N for a fixed one."""

    flavour: str = "trt-rtx"
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    batch: int | None = None  # one static batch (min = opt = max); what DLA builds take (default 1)
    workspace_mib: int | None = None  # None: the library's default (all device memory)
    opt_level: int = 3  # IBuilderConfig.builder_optimization_level
    timing_cache: Path | None = None  # loaded if present, saved after the build (trt only)
    compute_capabilities: list[str] | None = None  # trt-rtx targets, e.g. ["8.6", "8.9", "12.0"]
    hardware_compatibility: str | None = None  # trt only: "ampere+" or "same_cc"
    version_compatible: bool = False  # trt only: BuilderFlag.VERSION_COMPATIBLE
    legacy_precision_flags: bool = False  # TRT 10 only: weak typing with FP16/INT8/BF16 flags
    dla_core: int | None = None  # trt only: run on this DLA core (Jetson AGX/NX Orin); FP16/INT8 only
    gpu_fallback: bool = True  # with dla_core: layers DLA cannot run go to the GPU (else the build fails)

    def requested_profile(self) -> list[int | None]:
        if self.batch is not None:
            return [self.batch] * 3
        return [self.min_batch, self.opt_batch, self.max_batch]

    def profile_for(self, fixed_batch: int | None) -> tuple[int, int, int]:
        """The (min, opt, max) batch to build; DLA: one static batch (default 1), never a range."""
        requested = self.requested_profile()
        if self.dla_core is not None and fixed_batch is None and requested == [None, None, None]:
            requested = [DLA_DEFAULT_BATCH] * 3
        mn, opt, mx = resolve_profile(requested, fixed_batch)
        if self.dla_core is not None and not mn == opt == mx:
            raise UserError(f"DLA has no dynamic shapes (min = opt = max), so a DLA engine takes one static batch: "
                            f"--batch N (default {DLA_DEFAULT_BATCH}), not the profile {mn}/{opt}/{mx}")
        return mn, opt, mx

    def check_precision(self, precision: Precision) -> None:
        """The (parsed) precision is one these options can build (DLA: FP16, INT8)."""
        if self.dla_core is not None and precision not in DLA_PRECISIONS:
            raise UserError(f"DLA runs FP16 and INT8 only, not {precision}: build --precision fp16 or int8 for --dla-core")

    def dla_facts(self) -> dict[str, Any]:
        """What a manifest and a reuse check record of DLA (``None`` for GPU engines)."""
        dla = self.dla_core is not None
        return {"dla_core": self.dla_core, "gpu_fallback": self.gpu_fallback if dla else None}

    def validate(self) -> None:
        """Refuse options that cannot be built, before any work (each message names the flag)."""
        check_flavour(self.flavour)
        self._check_numbers()
        if self.dla_core is not None:
            check_dla_core(self.dla_core)
        if self.dla_core is None and not self.gpu_fallback:
            raise UserError("GPU fallback only applies to DLA builds: add --dla-core N, or drop --no-gpu-fallback")
        if self.flavour == "trt":
            if self.compute_capabilities:
                raise UserError("compute capability targets apply to trt-rtx engines; for trt use hardware compatibility (ampere+ / same_cc)")
        else:
            self._check_rtx()
        if self.hardware_compatibility is not None and self.hardware_compatibility not in HARDWARE_COMPAT:
            raise UserError(f"hardware compatibility must be one of {', '.join(HARDWARE_COMPAT)} (got {self.hardware_compatibility!r})")
        if self.compute_capabilities is not None:
            ccs = [normalize_compute_capability(c) for c in self.compute_capabilities]
            if "current" in ccs and len(ccs) > 1:
                raise UserError("compute capability 'current' must be the only target")
            self.compute_capabilities = ccs or None

    def _check_numbers(self) -> None:
        """Batches, optimization level and workspace are in range."""
        for name in ("min_batch", "opt_batch", "max_batch", "batch"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise UserError(f"--{name.replace('_', '-')} must be an integer >= 1 (got {v!r})")
            if v is not None and v > MAX_BATCH:
                raise UserError(f"--{name.replace('_', '-')} must be at most {MAX_BATCH} (got {v})")
        if self.batch is not None and any(v is not None for v in (self.min_batch, self.opt_batch, self.max_batch)):
            raise UserError("--batch is one static batch (min = opt = max): give it or --min-batch/--opt-batch/--max-batch, not both")
        if not isinstance(self.opt_level, int) or not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise UserError(f"--opt-level must be 0..{MAX_OPT_LEVEL} (got {self.opt_level!r})")
        if self.workspace_mib is not None and (not isinstance(self.workspace_mib, int) or self.workspace_mib < 1):
            raise UserError(f"--workspace must be a positive number of MiB (got {self.workspace_mib!r})")

    def _check_rtx(self) -> None:
        """What TensorRT-RTX does not have: hardware compatibility, version compatibility, weak typing, DLA."""
        if self.hardware_compatibility:
            raise UserError("hardware compatibility levels are not supported by TensorRT-RTX; choose compute capability targets instead")
        if self.version_compatible:
            raise UserError("TensorRT-RTX engines are not compatible between releases, so version-compatible builds are not offered for trt-rtx")
        if self.legacy_precision_flags:
            raise UserError("TensorRT-RTX has no weak typing: precision must be in the ONNX (legacy precision flags are TensorRT 10 only)")
        if self.dla_core is not None:
            raise UserError("TensorRT-RTX has no DLA: DLA engines are TensorRT (--engine trt) built on a Jetson with DLA cores")


def resolve_profile(requested: Sequence[int | None], fixed_batch: int | None) -> tuple[int, int, int]:
    """Fill unset values and check ``1 <= min <= opt <= max``; a fixed-batch ONNX pins all three."""
    mn, opt, mx = requested
    if fixed_batch is not None:
        given = {k: v for k, v in zip(("min", "opt", "max"), requested) if v is not None}
        wrong = {k: v for k, v in given.items() if v != fixed_batch}
        if wrong:
            got = ", ".join(f"{k}={v}" for k, v in wrong.items())
            raise UserError(
                f"the ONNX has a fixed batch of {fixed_batch}, so the profile must be min=opt=max={fixed_batch} "
                f"(got {got}); re-export with a dynamic batch to build a range"
            )
        return fixed_batch, fixed_batch, fixed_batch
    dmin, dopt, dmax = DEFAULT_PROFILE
    if mn is None:
        mn = min([dmin] + [v for v in (opt, mx) if v is not None])
    if mx is None:
        mx = max([dmax, mn] + ([opt] if opt is not None else []))
    if opt is None:
        opt = min(max(dopt, mn), mx)
    for name, v in (("min", mn), ("opt", opt), ("max", mx)):
        if v < 1:
            raise UserError(f"{name} batch must be >= 1 (got {v})")
        if v > MAX_BATCH:
            raise UserError(f"{name} batch must be at most {MAX_BATCH} (got {v})")
    if not mn <= opt <= mx:
        raise UserError(f"batch profile must satisfy min <= opt <= max (got min={mn}, opt={opt}, max={mx})")
    return mn, opt, mx


def engine_path_for(arch: str, precision: str, flavour: str, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """``engines/resnet50/resnet50.fp16.trt-rtx.engine`` (names come from :func:`artifact_path`)."""
    return artifact_path(arch, precision, kind=check_flavour(flavour), root=root)


__all__ = ["BuildOptions", "DEFAULT_PROFILE", "DLA_DEFAULT_BATCH", "HARDWARE_COMPAT", "MAX_OPT_LEVEL", "ProgressCallback", "engine_path_for",
           "resolve_profile"]
