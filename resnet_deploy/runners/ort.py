"""ONNX Runtime as a runner (CPU, or the CUDA provider when onnxruntime-gpu is installed).

Besides :meth:`OrtRunner.infer` (host numpy in, host float32 logits out) the runner offers
device-resident execution for timing: :meth:`OrtRunner.bind_device_io` binds the input and
output once to ``OrtValue`` buffers on the backend's device with I/O binding (CUDA graphs need
fixed addresses) and returns a :class:`DeviceIO`; :meth:`DeviceIO.stage` copies a host batch into
the bound input (``OrtValue.update_inplace``), :meth:`OrtRunner.run_bound` runs on the bound
buffers only (``run_with_iobinding``) and :meth:`DeviceIO.fetch` copies the logits back.
:meth:`OrtRunner.infer` does not use the binding. It works
on the CPU provider too (the buffers are then host memory).
"""

from __future__ import annotations

import contextlib
import functools
import io as _io
import os
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, UserError
from .base import Runner

PROVIDERS = {"ort": ["CPUExecutionProvider"], "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("ort", "onnxruntime is not installed (pip install onnxruntime)") from None
    return onnxruntime


@functools.cache
def preload_cuda_libraries(ort) -> tuple[str, ...]:
    """``onnxruntime.preload_dlls()`` once per process; returns the lines it printed.

    onnxruntime-gpu loads CUDA and cuDNN lazily when a CUDA session starts; from pip-installed
    ``nvidia-*`` packages (PyTorch's CUDA wheels bring them) they are only found after
    ``preload_dlls`` (onnxruntime >= 1.21). It prints its failures on stdout, which would corrupt
    ``--json`` output, so they are captured here and quoted if the CUDA provider then fails.
    """
    out = _io.StringIO()
    fn = getattr(ort, "preload_dlls", None)
    if fn is not None:
        try:
            with contextlib.redirect_stdout(out):
                fn()
        except Exception as e:  # noqa: BLE001 - best effort: the provider check below decides
            out.write(f"preload_dlls failed: {e}\n")
    return tuple(line.strip() for line in out.getvalue().splitlines() if line.strip())


class OrtRunner(Runner):
    """ONNX Runtime session for one model.

    ``provider_options`` apply to the backend's first provider (``CUDAExecutionProvider`` for
    ``ort-cuda``, e.g. ``{"enable_cuda_graph": "1", "prefer_nhwc": "1", "use_tf32": "0"}``).
    ``session_options``: each key that is an attribute of ``onnxruntime.SessionOptions`` is set
    on it; any other key is added with ``add_session_config_entry`` (string values).
    """

    def __init__(self, onnx_path: str | os.PathLike[str], *, backend: str = "ort", threads: int | None = None,
                 precision: str | None = None, provider_options: dict[str, Any] | None = None,
                 session_options: dict[str, Any] | None = None):
        ort = import_ort()
        self.backend = backend
        self.path = str(onnx_path)
        self.precision = precision
        wanted = PROVIDERS[backend]
        if wanted[0] not in ort.get_available_providers():
            raise BackendUnavailable(backend, f"{wanted[0]} is not in this onnxruntime build "
                                              f"(available: {', '.join(ort.get_available_providers())})")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        for key, value in (session_options or {}).items():
            if hasattr(options, key):
                setattr(options, key, value)
            else:
                options.add_session_config_entry(str(key), str(value))
        self.provider_options = dict(provider_options or {})
        providers: list[Any] = list(wanted)
        if provider_options:
            providers[0] = (wanted[0], {str(k): str(v) for k, v in provider_options.items()})
        self.device_type = "cpu" if backend == "ort" else "cuda"
        self._io: DeviceIO | None = None
        if not os.path.isfile(self.path):
            raise UserError(f"ONNX model not found: {self.path}")
        preload = preload_cuda_libraries(ort) if self.device_type == "cuda" else ()
        try:
            self.session = ort.InferenceSession(self.path, options, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad models
            raise UserError(f"onnxruntime cannot load {self.path}: {str(e).splitlines()[0][:300]}") from None
        active = self.session.get_providers()
        if wanted[0] not in active:
            # ORT falls back to the next provider with only a log line when a provider's libraries
            # do not load: a CPU figure must never be reported as ort-cuda.
            failed = next((line for line in preload if "failed" in line.lower()), None)
            raise BackendUnavailable(
                backend,
                f"onnxruntime has {wanted[0]} but could not start it (session fell back to {', '.join(active)})"
                + (f": {failed}" if failed else ": its CUDA 13 / cuDNN 9 libraries did not load")
                + "; install them (e.g. the nvidia-* wheels of a CUDA build of torch) or put them on LD_LIBRARY_PATH",
            )
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0].name
        self.input_dtype = np.float16 if self.input.type == "tensor(float16)" else np.float32
        out_type = self.session.get_outputs()[0].type
        self.output_dtype = np.float16 if out_type == "tensor(float16)" else np.float32

    def infer(self, batch: np.ndarray) -> np.ndarray:
        fixed = self.input.shape[0]
        if isinstance(fixed, int) and batch.shape[0] != fixed:
            raise UserError(f"{self.path} has a fixed batch of {fixed}; got {batch.shape[0]} images")
        out = self.session.run([self.output], {self.input.name: batch.astype(self.input_dtype, copy=False)})[0]
        return out.astype(np.float32, copy=False)

    def bind_device_io(self, batch_shape: tuple[int, ...] | list[int], *, device_id: int = 0) -> "DeviceIO":
        """Bind input and output once to ``OrtValue`` buffers of ``batch_shape`` on the backend's device.

        Returns the :class:`DeviceIO` that :meth:`run_bound` then runs on (the last one bound,
        unless another is passed). The input starts as zeros; :meth:`DeviceIO.stage` fills it.
        """
        ort = import_ort()
        shape = [int(d) for d in batch_shape]
        fixed = self.input.shape[0]
        if isinstance(fixed, int) and shape[0] != fixed:
            raise UserError(f"{self.path} has a fixed batch of {fixed}; got {shape[0]} images")
        # Its own buffer (on the CPU provider ortvalue_from_numpy would alias the caller's array).
        x_dev = ort.OrtValue.ortvalue_from_shape_and_type(shape, self.input_dtype, self.device_type, device_id)
        x_dev.update_inplace(np.zeros(shape, self.input_dtype))
        classes = self.session.get_outputs()[0].shape[-1]
        classes = classes if isinstance(classes, int) else 1000
        y_dev = ort.OrtValue.ortvalue_from_shape_and_type([shape[0], classes], self.output_dtype, self.device_type, device_id)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input.name, x_dev)
        binding.bind_ortvalue_output(self.output, y_dev)
        self._io = DeviceIO(binding, x_dev, y_dev, self.input_dtype)
        return self._io

    def run_bound(self, io: "DeviceIO | None" = None) -> None:
        """One ``run_with_iobinding`` on bound device buffers: no host copies (ORT waits for its stream)."""
        io = io or self._io
        if io is None:
            raise UserError("run_bound() needs bind_device_io() first")
        self.session.run_with_iobinding(io.binding)

    def close(self) -> None:
        self._io = None

    def describe(self) -> dict[str, Any]:
        ort = import_ort()
        return {"backend": self.backend, "version": ort.__version__, "device": "cpu" if self.backend == "ort" else "cuda",
                "providers": self.session.get_providers(), "model": self.path, "precision": self.precision}


class DeviceIO:
    """Input and output ``OrtValue`` s bound once to a session (see :meth:`OrtRunner.bind_device_io`)."""

    def __init__(self, binding: Any, input: Any, output: Any, input_dtype: Any):
        self.binding, self.input, self.output, self.input_dtype = binding, input, output, input_dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.input.shape())

    def stage(self, batch: np.ndarray) -> None:
        """Copy a host batch (of the bound shape) into the bound input buffer."""
        x = np.ascontiguousarray(np.asarray(batch).astype(self.input_dtype, copy=False))
        if tuple(x.shape) != self.shape:
            raise UserError(f"bound input is {list(self.shape)}, got {list(x.shape)}")
        self.input.update_inplace(x)

    def fetch(self) -> np.ndarray:
        """The bound output copied to the host, in the model's output dtype (float32 or float16)."""
        return self.binding.copy_outputs_to_cpu()[0]

    def synchronize(self) -> None:
        """Wait for the bound outputs (``IOBinding.synchronize_outputs``)."""
        self.binding.synchronize_outputs()
