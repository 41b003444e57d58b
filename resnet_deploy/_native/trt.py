"""The TensorRT flavours as Python modules: import, logger, compute capabilities, DLA cores.

* ``trt``     -> the ``tensorrt`` module (TensorRT 10.x incl. JetPack, 11.x);
* ``trt-rtx`` -> the ``tensorrt_rtx`` module (TensorRT for RTX; builds ahead of time on a CPU).

Differences between versions are handled by looking at what the imported module has
(``getattr``), never by branching on version strings. Shared by the builder and the runner;
nothing here builds.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Any, Sequence

from ..errors import BackendUnavailable, UserError

log = logging.getLogger("resnet_deploy.tensorrt")

FLAVOURS: dict[str, str] = {"trt": "tensorrt", "trt-rtx": "tensorrt_rtx"}
PIP_HINT = {
    "trt": "install TensorRT for your CUDA/JetPack (pip `tensorrt` needs NVIDIA's package index; Jetson ships it with JetPack)",
    "trt-rtx": "pip install tensorrt-rtx",
}
# TensorRT-RTX engines built with no explicit target run on these (TensorRT-RTX docs,
# "CPU-Only AOT and TensorRT-RTX Engines": "compute capability 8.0, 8.6, 8.9, 12.0, and later";
# the runtime's own error on an H100 lists "8.0 8.6 8.9 12.0 12.1 >12.0").
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0+")
DLA_PRECISIONS = ("fp16", "int8")


def check_flavour(flavour: str) -> str:
    if flavour not in FLAVOURS:
        raise UserError(f"unknown engine flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    return flavour


def import_flavour(flavour: str):
    """Import and return the TensorRT module for ``flavour`` (``trt`` or ``trt-rtx``)."""
    module = FLAVOURS[check_flavour(flavour)]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(flavour, f"Python module `{module}` cannot be imported ({e}); {PIP_HINT[flavour]}") from None
    except Exception as e:  # noqa: BLE001 - bindings present but libnvinfer missing raises OSError/RuntimeError
        raise BackendUnavailable(flavour, f"`{module}` failed to load: {type(e).__name__}: {e}") from None


def is_rtx(trt) -> bool:
    return getattr(trt, "__name__", "").startswith("tensorrt_rtx")


def flavour_of(trt) -> str:
    return "trt-rtx" if is_rtx(trt) else "trt"


def check_dla_core(core: Any) -> None:
    """A DLA core number is an integer >= 0 (what the builder and the runtime both take)."""
    if isinstance(core, bool) or not isinstance(core, int) or core < 0:
        raise UserError(f"DLA core must be an integer >= 0 (got {core!r})")


# ------------------------------------------------------------------------------------------ versions, CCs


def version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in str(v).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def cc_tuple(cc: str) -> tuple[int, int]:
    major, minor = cc.rstrip("+").split(".")
    return int(major), int(minor)


def normalize_compute_capability(value: str) -> str:
    """``"8.6"``, ``"86"``, ``"sm86"``, ``"sm_86"``, ``"SM86"`` -> ``"8.6"``; ``"current"`` stays."""
    s = str(value).strip().lower()
    if s == "current":
        return "current"
    m = re.fullmatch(r"(?:sm_?)?(\d+)\.(\d)", s) or re.fullmatch(r"(?:sm_?)?(\d+)(\d)", s)
    if not m:
        raise UserError(f"cannot read compute capability {value!r}; write it like 8.6 or sm86")
    return f"{int(m.group(1))}.{int(m.group(2))}"


def rtx_cc_supported(device_cc: str, targets: Sequence[str]) -> bool:
    """Is a device of ``device_cc`` among the engine's TensorRT-RTX ``targets``?"""
    dev = cc_tuple(device_cc)
    for t in targets:
        if t.endswith("+"):
            if dev >= cc_tuple(t):
                return True
        elif dev == cc_tuple(t):
            return True
    return False


# ------------------------------------------------------------------------------------------ the logger


_LOGGERS: dict[str, Any] = {}


def make_logger(trt, min_severity: str = "WARNING"):
    """The process's one ILogger for this flavour: keeps errors/warnings (to quote in UserErrors).

    One instance per flavour lives as long as the process. TensorRT holds on to the logger it
    was first given beyond the life of the builder or runtime; a fresh Python logger per build
    gets garbage-collected while TensorRT may still call it, which hung a later
    ``trt.Builder(logger)`` in our tests. Each call clears the kept messages, so
    ``last_error()`` speaks of the current build or load.
    """
    key = getattr(trt, "__name__", "tensorrt")
    logger = _LOGGERS.get(key)
    if logger is None:
        sev = trt.ILogger.Severity

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []
                self.warnings: list[str] = []
                self.threshold = int(sev.WARNING)

            def log(self, severity, msg):  # called from TensorRT threads; keep it simple
                level = int(severity)
                if level <= int(sev.ERROR):
                    self.errors.append(msg)
                    log.debug("TensorRT error: %s", msg)
                elif level == int(sev.WARNING):
                    self.warnings.append(msg)
                    if level <= self.threshold:
                        log.debug("TensorRT warning: %s", msg)
                elif level <= self.threshold:
                    log.debug("TensorRT: %s", msg)

            def last_error(self) -> str:
                return self.errors[-1] if self.errors else ""

        logger = _LOGGERS[key] = _Logger()
    logger.threshold = int(getattr(trt.ILogger.Severity, min_severity))
    logger.errors.clear()
    logger.warnings.clear()
    return logger


__all__ = ["FLAVOURS", "PIP_HINT", "RTX_DEFAULT_TARGETS", "DLA_PRECISIONS", "check_flavour", "import_flavour",
           "is_rtx", "flavour_of", "check_dla_core", "version_tuple", "cc_tuple", "normalize_compute_capability",
           "rtx_cc_supported", "make_logger"]
