"""ModelOpt's ONNX tools, imported on demand and kept quiet, and the private folder they work in.

ModelOpt is imported lazily; without it the precision stage raises
:class:`~resnet_deploy.errors.BackendUnavailable`. ModelOpt's own intermediate files
(``*_opset19.onnx`` and the like, which it drops beside its output) live in a private
temporary folder that is removed whatever happens.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Iterator

import onnx

from ..artifacts import disk_is_full, work_folder, write_error
from ..errors import BackendUnavailable, UserError
from ..onnx_meta import detect_precision
from ..versions import dist_version

INSTALL_HINT = "pip install 'resnet-deploy[precision]'"
_MODELOPT_LOGGERS = ("modelopt", "modelopt.onnx", "modelopt.onnx.autocast", "modelopt.onnx.quantization")


def import_modelopt(module: str):
    """Import a ``modelopt.onnx`` submodule or raise :class:`BackendUnavailable`."""
    try:
        importlib.import_module("onnxruntime")  # ModelOpt calibrates and checks with it
    except ImportError as e:
        raise BackendUnavailable(
            "onnxruntime",
            f"{e}; ModelOpt needs ONNX Runtime: pip install 'resnet-deploy[precision,cpu]' "
            "(or [precision,gpu] for onnxruntime-gpu)",
        ) from None
    try:
        return importlib.import_module(module)
    except ImportError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BackendUnavailable("modelopt", f"cannot import {module} ({first}); {INSTALL_HINT}") from None


def modelopt_available() -> tuple[bool, str]:
    """``(True, version)`` if ModelOpt's ONNX tools import, else ``(False, reason)`` (for ``doctor``)."""
    try:
        import_modelopt("modelopt.onnx.autocast")
        import_modelopt("modelopt.onnx.quantization")
    except BackendUnavailable as e:
        return False, e.reason
    return True, dist_version("nvidia-modelopt") or "unknown"


def input_info(model) -> tuple[str, list[int | None]]:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError(f"expected an ONNX with one input, found {len(inputs)}: {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


@contextlib.contextmanager
def quiet_tool() -> Iterator[io.StringIO]:
    """Hold back ModelOpt's INFO logging, ORT's calibration prints and tqdm bars.

    ModelOpt (re)configures its loggers with a handler on ``sys.stdout`` inside the call; the
    loggers' levels and handlers are put back afterwards so nothing stays bound to the buffer.
    """
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in _MODELOPT_LOGGERS]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    # ModelOpt's import-time handler holds the real sys.stdout; route its records to ``buf``.
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
            lg.handlers[:] = [handler] if lg.name == "modelopt" else []
            lg.propagate = lg.name != "modelopt"  # nothing reaches the application's root logger
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        for lg, level, handlers, propagate in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate


def warnings_from(buf: io.StringIO, limit: int = 20) -> list[str]:
    lines = [ln.strip() for ln in buf.getvalue().splitlines() if ln.startswith(("WARNING: ", "ERROR: ", "CRITICAL: "))]
    return list(dict.fromkeys(lines))[:limit]


@contextlib.contextmanager
def workdir(dst: Path) -> Iterator[Path]:
    """A private folder beside ``dst`` (same filesystem, so the result can be renamed), removed whatever happens.

    ModelOpt also makes ``tmp*.onnx`` files of its own in the temporary directory (and leaves an
    empty one at every Ctrl-C): while it works, Python's temporary directory is this folder, so
    they go with it. A failure on a full disk, whatever type ModelOpt raises it as, is one line.
    """
    with work_folder(dst) as work:
        saved = tempfile.tempdir
        tempfile.tempdir = str(work)
        try:
            yield work
        except (OSError, UserError, KeyboardInterrupt):
            raise
        except Exception:
            if disk_is_full(work):
                raise write_error(dst, OSError(errno.ENOSPC, "no space left on device")) from None
            raise
        finally:
            tempfile.tempdir = saved


def self_contained_copy(model, work: Path) -> Path:
    """Save the source as one file in ``work``: ModelOpt writes beside its input and output."""
    path = work / "source.onnx"
    onnx.save(model, str(path))
    return path


def require_fp32(model, src: Path, action: str) -> None:
    precision = detect_precision(model)
    if precision != "fp32":
        raise UserError(f"{src} is already {precision.upper()}; {action} needs the FP32 ONNX as its source")



__all__ = ["INSTALL_HINT", "import_modelopt", "input_info", "modelopt_available", "quiet_tool", "require_fp32",
           "self_contained_copy", "warnings_from", "workdir"]
