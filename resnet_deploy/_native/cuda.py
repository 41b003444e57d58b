"""CUDA through cuda-python: load the runtime bindings, name errors, describe a device.

``cuda.bindings.runtime`` (cuda-python >= 12.6) is used, else the legacy ``cuda.cudart``.
The look-ups here answer without raising when cuda-python or a GPU is missing, so callers can
say why not; :func:`cuda_check` turns a failed call's status into an exception.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError


def load_cudart():
    """cuda-python's runtime module, or ``None`` when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore

        return cudart
    except ImportError:
        return None


def cuda_error_name(cudart, err) -> str:
    try:
        res = cudart.cudaGetErrorName(err)
        name = res[1] if isinstance(res, tuple) else res
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - naming an error must never raise another
        return str(err)


def cuda_check(cudart, result, what: str, *, artifact: str = ""):
    """cuda-python returns ``(err, *values)``: raise on an error, else return the value (a tuple of
    several, ``None`` for none). Out of memory is a :class:`UserError` that names ``artifact``."""
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    if int(err) != 0:
        name = cuda_error_name(cudart, err)
        if "MemoryAllocation" in name:
            raise UserError(f"out of GPU memory in {what} (engine {artifact}); try a smaller max batch")
        raise RuntimeError(f"{what} failed: {name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def cuda_device_info(index: int = 0) -> tuple[dict[str, Any] | None, str]:
    """``({name, compute_capability, index, total_memory_mib}, "")`` or ``(None, why not)``."""
    cudart = load_cudart()
    if cudart is None:
        return None, "cuda-python is not installed (pip install cuda-python)"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:
        return None, f"no CUDA device ({cuda_error_name(cudart, err)})"
    if count < 1:
        return None, "no CUDA device"
    if index >= count:
        return None, f"CUDA device {index} does not exist ({count} present)"
    err, prop = cudart.cudaGetDeviceProperties(index)
    if int(err) != 0:
        return None, f"cannot read CUDA device {index} properties ({cuda_error_name(cudart, err)})"
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return {
        "index": index,
        "name": str(name).strip(),
        "compute_capability": f"{prop.major}.{prop.minor}",
        "total_memory_mib": int(prop.totalGlobalMem) >> 20,
    }, ""


def driver_and_runtime(cudart) -> tuple[str | None, str | None]:
    """``("13.0", "13.0")``: the CUDA versions the driver supports and cuda-python's runtime is, where readable."""
    out: list[str | None] = []
    for fn in ("cudaDriverGetVersion", "cudaRuntimeGetVersion"):
        try:
            err, v = getattr(cudart, fn)()
            out.append(f"{v // 1000}.{v % 1000 // 10}" if int(err) == 0 and v else None)
        except Exception:  # noqa: BLE001
            out.append(None)
    return out[0], out[1]


__all__ = ["cuda_check", "cuda_device_info", "cuda_error_name", "driver_and_runtime", "load_cudart"]
