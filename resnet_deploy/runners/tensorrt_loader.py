"""Load a TensorRT / TensorRT-RTX engine for running: check it, deserialize it, make its context. No torch.

The loading half of the TensorRT runner (as Polygraphy keeps ``backend/trt/loader.py`` beside
``runner.py``): :class:`EngineLoader` holds what to load and how, and calling it returns a
:class:`LoadedEngine`; :class:`~resnet_deploy.runners.tensorrt.TensorRTRunner` only runs what it gets.

Before anything is deserialized the loader checks, in this order, and says exactly what is wrong:

1. the engine file and its manifest exist, and the file matches the manifest (size, sha256), so a
   truncated or replaced engine is a one-line :class:`UserError`, not a crash inside TensorRT;
2. the flavour's Python module imports (else :class:`BackendUnavailable`);
3. the installed library version can run the engine (TensorRT: same version, or newer if the engine
   was built version-compatible; TensorRT-RTX: same release, engines are not portable across them);
4. a CUDA device exists (else ``BackendUnavailable(flavour, "no CUDA device ...")``);
5. the device's compute capability is one the engine was built for;
6. a DLA engine (manifest ``dla_core``) has its DLA core on this device; ``IRuntime.DLA_core`` is
   set to it (or to the ``dla_core`` asked for) before the engine is deserialized.

Dependencies: numpy, the engine's TensorRT module (``tensorrt`` or ``tensorrt_rtx``) and cuda-python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._native.cuda import cuda_check, cuda_device_info, load_cudart
from .._native.trt import FLAVOURS, cc_tuple, check_dla_core, import_flavour, is_rtx, make_logger, rtx_cc_supported, version_tuple
from ..artifacts import read_manifest, verify
from ..errors import BackendUnavailable, UserError

# TensorRT's support matrix: a version-compatible engine runs on later releases of its major version and
# of the next one (8.6 -> 10.x: there was no public 9; 10.x -> 11.x), no further.
NEXT_MAJOR = {8: 10}


def same_release(built: str, installed: str) -> bool:
    """Is ``built`` the release ``installed`` is? trtexec prints 3 parts ("10.3.0"), the Python module
    4 ("10.3.0.30"): a 3-part record matches by those 3, two 4-part ones must be equal."""
    a, b = version_tuple(built), version_tuple(installed)
    if len(a) == 3 and len(b) >= 3 or len(b) == 3 and len(a) >= 3:
        return a[:3] == b[:3]
    return a == b


def check_version(manifest: dict[str, Any], trt, engine_path: Path) -> None:
    """Raise :class:`UserError` if the installed ``trt`` cannot run an engine built by the manifest's version."""
    built, installed = str(manifest.get("builder_version", "?")), str(trt.__version__)
    if same_release(built, installed):
        return
    said = f"{engine_path.name} was built with {trt.__name__} {built} but {installed} is installed"
    if is_rtx(trt):
        raise UserError(f"{said}; TensorRT-RTX engines only run on the release that built them: rebuild it")
    if not manifest.get("version_compatible"):
        raise UserError(f"{said}; rebuild it (or build with version compatibility)")
    if version_tuple(installed) < version_tuple(built):
        raise UserError(f"{engine_path.name} is version-compatible from {trt.__name__} {built} onwards but the older {installed} is installed")
    major = version_tuple(built)[0]
    if version_tuple(installed)[0] > NEXT_MAJOR.get(major, major + 1):
        raise UserError(
            f"{engine_path.name} was built version-compatible with {trt.__name__} {built}, but {installed} is installed: "
            "TensorRT runs version-compatible engines at most one major version forward (8 -> 10, 10 -> 11); rebuild it"
        )


def check_compute_capability(manifest: dict[str, Any], trt, device: dict[str, Any], engine_path: Path) -> None:
    """Raise :class:`UserError` if ``device`` is not a GPU the engine was built for."""
    cc = device["compute_capability"]
    target = manifest.get("target") or {}
    if is_rtx(trt):
        targets = target.get("compute_capabilities") or []
        if targets and not rtx_cc_supported(cc, targets):
            raise UserError(
                f"{engine_path.name} targets compute capability {' '.join(targets)}; this GPU ({device['name']}, {cc}) "
                "is not among them: rebuild with --compute-capability " + cc
            )
        return
    built_cc = target.get("compute_capability")
    if target.get("hardware_compatibility") == "ampere+":
        if cc_tuple(cc) < (8, 0):
            raise UserError(f"{engine_path.name} needs an Ampere or newer GPU; {device['name']} is {cc}")
    elif built_cc and built_cc != cc:
        raise UserError(
            f"{engine_path.name} was built for compute capability {built_cc}; this GPU ({device['name']}) is {cc}: "
            "rebuild it here (or build with hardware compatibility ampere+)"
        )


def check_manifest_against_runtime(manifest: dict[str, Any], trt, device: dict[str, Any] | None, engine_path: Path) -> None:
    """Raise :class:`UserError` if this library / GPU cannot run the engine the manifest describes
    (``device=None``: the library version only)."""
    check_version(manifest, trt, engine_path)
    if device is not None:
        check_compute_capability(manifest, trt, device, engine_path)


def verify_engine_file(engine_path: Path, manifest: dict[str, Any]) -> None:
    """The engine file must be the one its manifest describes (catches truncation and replacement)."""
    verify(engine_path, {**manifest, "kind": "engine"}, what="engine", fix="rebuild it")


# ------------------------------------------------------------------------------------------ what loading gives


@dataclass
class LoadedEngine:
    """A deserialized engine and its execution context, with the facts checked to get them.

    The facts (``flavour``, ``manifest``, ``device``, ``dla_core``, the modules) stay after
    :meth:`release`, which drops the TensorRT objects (the context first: it is used by the engine).
    """

    flavour: str                         # "trt" or "trt-rtx": what the engine is
    manifest: dict[str, Any]
    trt: Any                             # the flavour's Python module
    cudart: Any                          # cuda-python's runtime module
    device: dict[str, Any]               # cuda_device_info() of the device it runs on
    logger: Any                          # the flavour's ILogger (last_error() for messages)
    runtime: Any = None
    engine: Any = None
    context: Any = None
    dla_core: int | None = None
    rtx_graphs: bool = False             # the context captures CUDA graphs itself (TensorRT-RTX)

    def release(self) -> None:
        self.context = None
        self.engine = None
        self.runtime = None


@dataclass(frozen=True)
class EngineIO:
    """An engine's one image input and its outputs: names, numpy dtypes, the input's profile (min, opt, max)."""

    input_name: str
    output_name: str                     # the logits ("logits" if present, else the first output)
    outputs: tuple[str, ...]
    dtypes: dict[str, np.dtype]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def engine_io(trt, engine, engine_path: Path) -> EngineIO:
    """Read the I/O tensors of ``engine`` (name-based TensorRT 10+ API); refuse what the runner cannot feed."""
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
    if len(inputs) != 1 or not outputs:
        raise UserError(f"{engine_path.name} has inputs {inputs} and outputs {outputs}; expected one image input and logits")
    dtypes = {}
    for name in [inputs[0], *outputs]:
        dt = engine.get_tensor_dtype(name)
        try:
            dtypes[name] = np.dtype(trt.nptype(dt))
        except Exception:  # noqa: BLE001 - BF16/FP8/INT4 have no numpy dtype
            raise UserError(f"I/O tensor {name!r} of {engine_path.name} is {getattr(dt, 'name', dt)}, which numpy cannot hold; "
                            "export the ONNX with float32 (or float16) inputs and outputs") from None
    mn, opt, mx = (tuple(d) for d in engine.get_tensor_profile_shape(inputs[0], 0))
    return EngineIO(input_name=inputs[0], output_name="logits" if "logits" in outputs else outputs[0],
                    outputs=tuple(outputs), dtypes=dtypes, profile=(mn, opt, mx))


# ------------------------------------------------------------------------------------------ the loader


@dataclass(frozen=True)
class EngineLoader:
    """What to load and how; calling it checks, deserializes and creates the context.

    ``flavour``: the one asked for (``None``: the manifest's); ``dla_core``: the DLA core asked for
    (``None``: the one the engine was built for); ``rtx_cuda_graph``: a TensorRT-RTX context that
    captures CUDA graphs itself (``CudaGraphStrategy.WHOLE_GRAPH_CAPTURE``).
    """

    path: Path
    flavour: str | None = None
    device: int = 0
    verify: bool = True
    dla_core: int | None = None
    rtx_cuda_graph: bool = False

    def read_manifest(self) -> tuple[dict[str, Any], str]:
        """The engine's manifest and its flavour (refusing a flavour other than the one asked for)."""
        if not self.path.is_file():
            raise UserError(f"engine not found: {self.path}")
        manifest = read_manifest(self.path)
        built = manifest.get("flavour")
        if self.flavour is not None and built is not None and self.flavour != built:
            raise UserError(f"{self.path.name} is a {built} engine, not {self.flavour}")
        flavour = self.flavour or built
        if flavour not in FLAVOURS:
            raise UserError(f"manifest of {self.path.name} names unknown flavour {flavour!r}")
        return manifest, flavour

    def __call__(self) -> LoadedEngine:
        manifest, flavour = self.read_manifest()
        if self.verify:
            verify_engine_file(self.path, manifest)
        trt = import_flavour(flavour)
        check_manifest_against_runtime(manifest, trt, None, self.path)  # version only
        cudart = load_cudart()
        if cudart is None:
            raise BackendUnavailable(flavour, "cuda-python is not installed (pip install cuda-python)")
        info, why = cuda_device_info(self.device)
        if info is None:
            raise BackendUnavailable(flavour, why)
        check_manifest_against_runtime(manifest, trt, info, self.path)
        cuda_check(cudart, cudart.cudaSetDevice(self.device), "cudaSetDevice")
        loaded = LoadedEngine(flavour=flavour, manifest=manifest, trt=trt, cudart=cudart, device=info,
                              logger=make_logger(trt))  # shared ILogger adapter that keeps error text
        self._deserialize(loaded)
        self._create_context(loaded)
        return loaded

    def _deserialize(self, loaded: LoadedEngine) -> None:
        trt = loaded.trt
        runtime = loaded.runtime = trt.Runtime(loaded.logger)
        loaded.dla_core = self._select_dla_core(runtime, loaded.manifest)
        if loaded.manifest.get("version_compatible") and hasattr(runtime, "engine_host_code_allowed"):
            # version-compatible plans embed the lean runtime (host code); we built it, so trust it.
            runtime.engine_host_code_allowed = True
        blob = self.path.read_bytes()
        self._check_validity(runtime, trt, blob)
        loaded.engine = runtime.deserialize_cuda_engine(blob)
        del blob
        if loaded.engine is None:
            raise UserError(f"cannot deserialize {self.path.name}: {loaded.logger.last_error() or 'unknown reason'}")

    def _check_validity(self, runtime, trt, blob: bytes) -> None:
        """TensorRT-RTX (and newer TensorRT): diagnose an engine that cannot run here before deserializing it."""
        validity = getattr(runtime, "get_engine_validity", None)
        if validity is None:
            return
        try:
            state, diag = validity(blob)
        except Exception:  # noqa: BLE001 - the check is advisory; deserializing decides
            return
        if getattr(state, "name", str(state)) == "INVALID":
            raise UserError(f"{self.path.name} cannot run here: {diagnostics(trt, diag)}")

    def _create_context(self, loaded: LoadedEngine) -> None:
        trt, engine = loaded.trt, loaded.engine
        if self.rtx_cuda_graph and is_rtx(trt) and hasattr(engine, "create_runtime_config"):
            rc = engine.create_runtime_config()
            rc.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            loaded.context = engine.create_execution_context(rc)
            loaded.rtx_graphs = True
        else:
            loaded.context = engine.create_execution_context()
        if loaded.context is None:
            raise UserError(f"cannot create an execution context for {self.path.name}: {loaded.logger.last_error()}")

    def _select_dla_core(self, runtime, manifest: dict[str, Any]) -> int | None:
        """The DLA core a DLA engine runs on (``IRuntime.DLA_core``, set before deserializing).

        Default: the core its manifest says it was built for (``build --dla-core`` or the Jetson
        bundle's ``build_engine.sh --dla``). Another core may be asked for; a GPU engine takes none.
        """
        built = manifest.get("dla_core")
        if built is None:
            if self.dla_core is not None:
                raise UserError(f"{self.path.name} was built for the GPU, not a DLA: rebuild it with --dla-core")
            return None
        core = built if self.dla_core is None else self.dla_core
        check_dla_core(core)
        cores = int(getattr(runtime, "num_DLA_cores", 0) or 0)
        if core >= cores:
            have = f"{cores} (0..{cores - 1})" if cores else "none"
            raise UserError(f"{self.path.name} runs on DLA core {core}, but this device's DLA cores: {have}")
        runtime.DLA_core = core
        return core


def diagnostics(trt, diag) -> str:
    """``EngineInvalidityDiagnostics`` bits in words."""
    enum = getattr(trt, "EngineInvalidityDiagnostics", None)
    value = int(diag)
    if enum is None or value == 0:
        return f"engine validity check failed (diagnostics {value})"
    reasons = [k.lower().replace("_", " ") for k, v in enum.__members__.items() if value & int(v)]
    return ", ".join(reasons) or f"diagnostics {value}"


__all__ = ["EngineIO", "EngineLoader", "LoadedEngine", "check_compute_capability", "check_manifest_against_runtime",
           "check_version", "engine_io", "same_release", "verify_engine_file"]
