"""What machine and software a benchmark ran on. Every probe is best-effort: a missing tool
or library is recorded as ``None`` (or its reason), never an exception."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

from .._native.cuda import cuda_device_info, driver_and_runtime, load_cudart
from ..versions import dist_version, onnxruntime_wheel
from .timing import cpu_pressure, load_average


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


TORCH_LIBRARY = "torch"
"""PyTorch's key in ``environment()["versions"]`` (a library, whatever the backends are called)."""

_DISTS = {"tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
          "tensorrt_rtx": ("tensorrt-rtx",), "cuda": ("cuda-python", "cuda-bindings")}


def _version(module: str) -> str | None:
    """Installed distribution version; for onnxruntime also which wheel (CPU or -gpu) the import loads."""
    if module == "onnxruntime":
        v, dist = onnxruntime_wheel()
        return f"{v} ({dist})" if v else None
    return dist_version(*_DISTS.get(module, (module,)))


def _nvidia_smi() -> list[dict[str, str]] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2],
                         "max_sm_clock": parts[3] if len(parts) > 3 else "", "power_limit": parts[4] if len(parts) > 4 else ""})
    return gpus or None


def gpu_facts() -> dict[str, Any]:
    """GPU, driver and CUDA versions where present; ``{"present": False, "why": ...}`` otherwise."""
    facts: dict[str, Any] = {"present": False}
    smi = _nvidia_smi()
    if smi:
        facts["nvidia_smi"] = smi
    try:
        info, why = cuda_device_info(0)
        if info is not None:
            facts.update(present=True, **info)
            drv, rt = driver_and_runtime(load_cudart())
            if drv:
                facts["cuda_driver_api"] = drv
            if rt:
                facts["cuda_runtime"] = rt
        else:
            facts["why"] = why
    except Exception as e:  # noqa: BLE001
        facts["why"] = f"cuda-python probe failed: {e}"
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        try:
            import torch

            facts["torch_cuda"] = torch.version.cuda
            if torch.cuda.is_available():
                facts["present"] = True
                facts.setdefault("name", torch.cuda.get_device_name(0))
                facts["torch_cudnn"] = torch.backends.cudnn.version()
        except Exception:  # noqa: BLE001
            pass
    if smi and facts.get("present"):
        facts.setdefault("driver", smi[0]["driver"])
        facts["driver"] = smi[0]["driver"]
    return facts


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def environment(command: str | None = None) -> dict[str, Any]:
    """CPU, cores, memory, load, GPU/driver/CUDA and library versions, for every report."""
    affinity = usable_cores()
    env: dict[str, Any] = {
        "time_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "memory_gib": _mem_total_gib(),
        "load_average_start": load_average(),
        "cpu_pressure_start": cpu_pressure(),
        "gpu": gpu_facts(),
        "versions": {
            "resnet_deploy": _version("resnet-deploy"),
            TORCH_LIBRARY: _version("torch"),
            "onnxruntime": _version("onnxruntime"),
            "onnx": _version("onnx"),
            "numpy": _version("numpy"),
            "tensorrt": _version("tensorrt"),
            "tensorrt_rtx": _version("tensorrt_rtx"),
            "cuda_python": _version("cuda"),
        },
        "command": command or " ".join(sys.argv),
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    rev = git_revision()
    if rev:
        env["git"] = rev
    return env


def git_revision(where: str | os.PathLike[str] | None = None) -> str | None:
    """``"1bbefc4"``, or ``"1bbefc4+dirty"`` when tracked files differ from the commit; ``None`` outside git."""
    cwd = os.fspath(where) if where is not None else os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device_label(env: dict[str, Any]) -> str:
    """``"NVIDIA H100 80GB HBM3"`` or ``"cpu: AMD EPYC (2 cores)"`` - the one-line device of a run."""
    gpu = env.get("gpu") or {}
    if gpu.get("present"):
        return str(gpu.get("name"))
    return f"cpu: {env.get('cpu')} ({env.get('cpu_affinity')} cores)"
