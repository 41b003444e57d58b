"""What can run here: every backend with its version, and if it cannot run, why.

    import resnet_deploy.doctor as d
    report = d.check()            # {"gpu": ..., "backends": [{"name", "installed", "version", "runs", "why", ...}]}

Each check imports its library lazily and never raises: a backend that fails to import is
reported with the import error. :class:`~resnet_deploy.errors.BackendUnavailable` messages
everywhere else point here (``resnet-deploy doctor``).

A backend ``runs`` when it can execute a model on this machine now. TensorRT-RTX additionally
reports ``builds``: its builder compiles engines ahead of time without a GPU. ``cpu`` holds the
CPU's model and the instruction sets low-precision CPU inference uses (AMX, AVX-512 VNNI,
AVX512-BF16, read from ``/proc/cpuinfo``), with a sentence saying what the CPU lacks; the
OpenVINO row adds OpenVINO's own ``OPTIMIZATION_CAPABILITIES``.
"""

from __future__ import annotations

import importlib
import platform
import shutil
import sys
from typing import Any, Callable

from . import __version__
from ._native.cuda import cuda_device_info, driver_and_runtime, load_cudart
from ._native.trt import RTX_DEFAULT_TARGETS, cc_tuple, rtx_cc_supported
from .precision import modelopt_available
from .versions import dist_version, onnxruntime_wheel


def _row(name: str, *, installed: bool, version: str | None, runs: bool, why: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "installed": installed, "version": version, "runs": runs, "why": "" if runs else why, **extra}


def _import(module: str):
    """(module, None) or (None, why it does not import)."""
    try:
        return importlib.import_module(module), None
    except ImportError as e:
        return None, f"not installed ({e})"
    except Exception as e:  # noqa: BLE001 - bindings present but a shared library missing, and the like
        return None, f"fails to load: {type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------------ checks


def _gpu() -> dict[str, Any]:
    device, why = cuda_device_info()
    cudart = load_cudart()
    driver = None
    if cudart is not None:
        version = driver_and_runtime(cudart)[0]
        driver = f"CUDA {version}" if version else None
    return {"device": device, "why": why if device is None else "", "driver_supports": driver}


def _cuda_python(gpu: dict[str, Any]) -> dict[str, Any]:
    version = dist_version("cuda-python", "cuda-bindings")
    cudart = load_cudart()
    if cudart is None:
        return _row("cuda-python", installed=False, version=version, runs=False,
                    why="not installed (pip install cuda-python): the TensorRT runner drives CUDA with it")
    why = gpu["why"]
    mismatch = driver_mismatch(version, driver_and_runtime(cudart)[0])
    if mismatch:
        why = f"{mismatch}; {why}" if why else mismatch
    return _row("cuda-python", installed=True, version=version, runs=gpu["device"] is not None, why=why,
                module=getattr(cudart, "__name__", "?"))


def driver_mismatch(cuda_python: str | None, driver_cuda: str | None) -> str:
    """Why this cuda-python cannot run on this driver ("" when it can, or when either is unknown).

    cuda-python's major version is the CUDA major it needs: 13.x needs a CUDA 13 driver (580+), and on
    a CUDA 12 driver (JetPack 6's 540 series) fails with cudaErrorInsufficientDriver."""
    try:
        have, need = int(str(driver_cuda).split(".")[0]), int(str(cuda_python).split(".")[0])
    except ValueError:
        return ""
    if need > have:
        return (f"cuda-python {cuda_python} needs a CUDA {need} driver, this driver supports CUDA {driver_cuda}: "
                f"pip install 'cuda-python>={have},<{have + 1}'")
    return ""


def _torch_rows() -> list[dict[str, Any]]:
    torch, why = _import("torch")
    if torch is None:
        return [_row("PyTorch CPU", installed=False, version=None, runs=False, why=why),
                _row("PyTorch CUDA", installed=False, version=None, runs=False, why=why)]
    v = torch.__version__
    rows = [_row("PyTorch CPU", installed=True, version=v, runs=True, threads=torch.get_num_threads())]
    cuda_build = getattr(torch.version, "cuda", None)
    if not cuda_build:
        rows.append(_row("PyTorch CUDA", installed=True, version=v, runs=False,
                         why=f"torch {v} is a CPU-only build (install a CUDA build of torch)"))
    else:
        try:
            ok = bool(torch.cuda.is_available())
            reason = "" if ok else "no CUDA device visible to torch"
            name = torch.cuda.get_device_name(0) if ok else None
        except Exception as e:  # noqa: BLE001 - doctor reports every failure, it never raises
            ok, reason, name = False, f"CUDA initialisation failed: {e}", None
        rows.append(_row("PyTorch CUDA", installed=True, version=v, runs=ok, why=reason, cuda=cuda_build, device=name))
    return rows


def _torch_compile(gpu: dict[str, Any]) -> dict[str, Any]:
    torch, why = _import("torch")
    if torch is None:
        return _row("torch.compile", installed=False, version=None, runs=False, why=why)
    v = torch.__version__
    if not hasattr(torch, "compile"):
        return _row("torch.compile", installed=True, version=v, runs=False, why=f"torch {v} has no torch.compile (needs >= 2.0)")
    compiler = next((c for c in ("cc", "gcc", "clang", "c++", "g++") if shutil.which(c)), None)
    triton = dist_version("triton", "pytorch-triton")
    cuda_ok = bool(getattr(torch.version, "cuda", None)) and _safe(lambda: torch.cuda.is_available())
    devices = []
    if compiler:
        devices.append("cpu")
    if cuda_ok and triton:
        devices.append("cuda")
    if not devices:
        why = "no C++ compiler on PATH (inductor compiles CPU kernels with one)"
        return _row("torch.compile", installed=True, version=v, runs=False, why=why, triton=triton)
    notes = []
    if cuda_ok and not triton:
        notes.append("CUDA present but triton missing: GPU kernels cannot be compiled")
    return _row("torch.compile", installed=True, version=v, runs=True, devices=devices, compiler=compiler,
                triton=triton, notes=notes)


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - doctor reports every failure, it never raises
        return False


def _onnxruntime(gpu: dict[str, Any]) -> list[dict[str, Any]]:
    ort, why = _import("onnxruntime")
    if ort is None:
        return [_row("ONNX Runtime", installed=False, version=None, runs=False, why=why)]
    v = ort.__version__
    dist = onnxruntime_wheel()[1] or "onnxruntime"
    providers = list(_safe(ort.get_available_providers) or [])
    rows = [_row("ONNX Runtime", installed=True, version=v, runs="CPUExecutionProvider" in providers,
                 why="CPUExecutionProvider missing", package=dist, providers=providers)]
    for ep, label in (("CUDAExecutionProvider", "ONNX Runtime CUDA EP"), ("TensorrtExecutionProvider", "ONNX Runtime TensorRT EP")):
        if ep not in providers:
            hint = "install onnxruntime-gpu instead of onnxruntime; never both" if dist == "onnxruntime" else "not in this build"
            rows.append(_row(label, installed=False, version=v, runs=False, why=f"{ep} not available ({hint})"))
        elif gpu["device"] is None:
            rows.append(_row(label, installed=True, version=v, runs=False, why=gpu["why"] or "no CUDA device"))
        else:
            rows.append(_row(label, installed=True, version=v, runs=True))
    return rows


def rtx_supported_ccs(trt) -> list[str]:
    """Compute capabilities this TensorRT-RTX can target (its ``ComputeCapability`` enum)."""
    enum = getattr(trt, "ComputeCapability", None)
    out = []
    for k, val in (enum.__members__.items() if enum is not None else []):
        if k.startswith("SM"):
            n = int(val)
            out.append(f"{n // 10}.{n % 10}")
    return sorted(out, key=cc_tuple)


def _tensorrt(gpu: dict[str, Any]) -> dict[str, Any]:
    trt, why = _import("tensorrt")
    if trt is None:
        return _row("TensorRT", installed=False, version=None, runs=False,
                    why=why + "; TensorRT comes from NVIDIA's package index (pip install tensorrt) or JetPack on Jetson")
    v = trt.__version__
    extra = {"major": int(v.split(".")[0]) if v.split(".")[0].isdigit() else None,
             "weak_typing_flags": hasattr(trt.BuilderFlag, "FP16"),
             "version_compatible": hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"),
             "hardware_compatibility": hasattr(trt, "HardwareCompatibilityLevel")}
    if gpu["device"] is None:
        return _row("TensorRT", installed=True, version=v, runs=False, builds=False,
                    why=f"TensorRT builds and runs engines on a CUDA GPU: {gpu['why'] or 'no CUDA device'}", **extra)
    return _row("TensorRT", installed=True, version=v, runs=True, builds=True, **extra)


def _tensorrt_rtx(gpu: dict[str, Any]) -> dict[str, Any]:
    trt, why = _import("tensorrt_rtx")
    if trt is None:
        return _row("TensorRT-RTX", installed=False, version=None, runs=False, builds=False, why=why + "; pip install tensorrt-rtx")
    v = trt.__version__
    ccs = rtx_supported_ccs(trt)
    extra = {"builds": True, "builds_why": "ahead-of-time builder, no GPU needed", "targets": ccs,
             "default_targets": list(RTX_DEFAULT_TARGETS)}
    dev = gpu["device"]
    if dev is None:
        return _row("TensorRT-RTX", installed=True, version=v, runs=False,
                    why=f"running an engine needs a CUDA GPU: {gpu['why'] or 'no CUDA device'}", **extra)
    cc = dev["compute_capability"]
    newest = max((cc_tuple(c) for c in ccs), default=(12, 0))
    if not (cc in ccs or cc_tuple(cc) > newest):
        return _row("TensorRT-RTX", installed=True, version=v, runs=False,
                    why=f"compute capability {cc} ({dev['name']}) is not supported by TensorRT-RTX "
                        f"(it targets {', '.join(ccs)} and later than {ccs[-1] if ccs else '12.0'})", **extra)
    if not rtx_cc_supported(cc, RTX_DEFAULT_TARGETS):
        extra["note"] = f"engines built with default targets do not run on {cc}; build with --cc {cc}"
    return _row("TensorRT-RTX", installed=True, version=v, runs=True, **extra)


def _modelopt() -> dict[str, Any]:
    ok, detail = modelopt_available()
    version = dist_version("nvidia-modelopt")
    return _row("ModelOpt", installed=version is not None, version=version, runs=bool(ok), why=str(detail),
                role="FP16/BF16 AutoCast and INT8 Q/DQ PTQ on ONNX (runs on the CPU)")


# flags in /proc/cpuinfo that decide how fast INT8 and BF16 run on an x86 CPU
CPU_FLAGS = ("amx_int8", "amx_bf16", "amx_tile", "avx512_vnni", "avx512_bf16", "avx512f", "avx_vnni", "avx2")


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """``{"model", "flags": {flag: bool}, "summary"}``: the CPU's low-precision instruction sets, and what it lacks."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError as e:
        return {"model": platform.processor() or None, "flags": {}, "summary": f"CPU flags unknown ({e.strerror})"}
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    have = set(info.get("flags", "").split())
    flags = {f: f in have for f in CPU_FLAGS}
    return {"model": info.get("model name") or None, "flags": flags,
            "summary": cpu_summary(flags) if have else "CPU flags unknown (no x86 flags line in /proc/cpuinfo)"}


def cpu_summary(flags: dict[str, bool]) -> str:
    """One sentence: which units INT8 and BF16 run on here, and what the CPU lacks."""
    if flags.get("amx_int8") and flags.get("amx_bf16"):
        return "AMX: INT8 and BF16 run on AMX tiles"
    int8 = ("AVX-512 VNNI" if flags.get("avx512_vnni") else "AVX-VNNI" if flags.get("avx_vnni")
            else "AVX-512 without VNNI" if flags.get("avx512f") else "AVX2 without VNNI" if flags.get("avx2") else "no SIMD int8")
    bf16 = "BF16 on AVX512-BF16" if flags.get("avx512_bf16") else "no BF16 instructions (BF16 runs as FP32 or emulated)"
    return f"no AMX: INT8 runs on {int8}, {bf16}"


def _openvino(cpu: dict[str, Any]) -> dict[str, Any]:
    ov, why = _import("openvino")
    if ov is None:
        return _row("OpenVINO", installed=False, version=None, runs=False,
                    why=f"{why}; cannot run here: pip install 'resnet-deploy[openvino]' (or pip install openvino)",
                    note=cpu["summary"])
    v = dist_version("openvino") or getattr(ov, "__version__", None)
    try:
        core = ov.Core()
        devices = list(core.available_devices)
        caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")) if "CPU" in devices else []
    except Exception as e:  # noqa: BLE001 - doctor reports every failure, it never raises
        return _row("OpenVINO", installed=True, version=v, runs=False, why=f"OpenVINO fails to start: {e}",
                    note=cpu["summary"])
    note = cpu["summary"] + (f"; OpenVINO CPU capabilities: {', '.join(caps)}" if caps else "")
    return _row("OpenVINO", installed=True, version=v, runs="CPU" in devices, devices=devices,
                why=f"OpenVINO sees no CPU device (devices: {', '.join(devices) or 'none'})",
                optimization_capabilities=caps, note=note)


# ------------------------------------------------------------------------------------------ report


def check() -> dict[str, Any]:
    """Everything ``resnet-deploy doctor`` shows, as a dict."""
    gpu = _gpu()
    cpu = cpu_features()
    backends: list[dict[str, Any]] = []
    backends += _torch_rows()
    backends.append(_torch_compile(gpu))
    backends += _onnxruntime(gpu)
    backends.append(_openvino(cpu))
    backends.append(_tensorrt(gpu))
    backends.append(_tensorrt_rtx(gpu))
    backends.append(_modelopt())
    backends.append(_cuda_python(gpu))
    return {
        "toolkit_version": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "gpu": gpu,
        "cpu": cpu,
        "backends": backends,
    }


__all__ = ["CPU_FLAGS", "check", "cpu_features", "cpu_summary", "rtx_supported_ccs"]
