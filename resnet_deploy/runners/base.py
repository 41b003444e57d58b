"""The one runner interface every backend implements, with its lifecycle.

Modelled on Polygraphy's ``backend/base/runner.py``:

* construction only stores settings; :meth:`Runner.open` (or entering the ``with`` block)
  loads the model and allocates; :meth:`Runner.close` releases and is safe to call twice;
  :meth:`Runner.describe` works before :meth:`~Runner.open`;
* :meth:`Runner.infer` checks the batch once, here, against the runner's :class:`InputSpec`
  (dtype, rank, sample shape, batch within the artifact's limits) and then calls the
  subclass's ``_infer``: no runner repeats those checks;
* GPU runners also offer device-resident execution, the same way each:
  :meth:`~Runner.stage` (host batch -> the runner's device input, asynchronously, on
  :attr:`~Runner.stream`), :meth:`~Runner.enqueue` (run on the staged input: no host copies, no
  wait), :meth:`~Runner.synchronize` and :meth:`~Runner.fetch` (the last output, on the host).
  ``device_resident`` says whether a runner's stage/enqueue work on device memory.

Parity, eval, predict and bench only ever talk to this interface (the split Polygraphy makes
between runners and a comparator). numpy only: the torch-free edge runner builds on it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError

TORCH_ALLOCATOR = "torch"
""":attr:`Runner.allocator` of a runner whose device memory comes from torch's caching allocator."""


@dataclass(frozen=True)
class InputSpec:
    """What a runner accepts: one float NCHW input of ``sample_shape`` (``None``: any size)."""

    name: str
    dtype: Any                                   # numpy dtype the model is fed (float32 or float16)
    sample_shape: tuple[int | None, ...]         # (C, H, W)
    min_batch: int = 1
    max_batch: int | None = None                 # None: no upper limit
    limit: str = "dynamic"                       # "fixed" (a fixed-batch model) or "profile" (an engine's range)
    source: str = ""                             # the artifact, for messages

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": np.dtype(self.dtype).name, "sample_shape": list(self.sample_shape),
                "min_batch": self.min_batch, "max_batch": self.max_batch, "limit": self.limit}

    def check(self, batch: Any) -> np.ndarray:
        """``batch`` as a contiguous array of :attr:`dtype`, or one :class:`UserError` saying what is wrong."""
        x = np.asarray(batch)
        shape = "[N, " + ", ".join("?" if d is None else str(d) for d in self.sample_shape) + "]"
        if x.dtype.kind != "f":
            raise UserError(f"expected a floating-point image batch of shape {shape}, got dtype {x.dtype}")
        if x.ndim != 1 + len(self.sample_shape) or any(
                want is not None and want != got for want, got in zip(self.sample_shape, x.shape[1:])):
            raise UserError(f"expected a batch of shape {shape}, got {list(x.shape)}")
        n = int(x.shape[0])
        if n < 1:
            raise UserError("the batch is empty")
        if self.limit == "fixed" and n != self.min_batch:
            raise UserError(f"{self.source} has a fixed batch of {self.min_batch}; got {n} images")
        if n < self.min_batch or (self.max_batch is not None and n > self.max_batch):
            raise UserError(f"batch {n} is outside the engine's profile {self.min_batch}..{self.max_batch} "
                            f"({self.source}); split the batch or rebuild with a wider profile")
        return np.ascontiguousarray(x, dtype=self.dtype)


class Runner(abc.ABC):
    """Load a model, infer batches, report what it is.

    Subclasses set :attr:`backend`, store their settings in ``__init__`` (calling
    ``super().__init__()``), and implement ``_open`` (load, allocate, return the
    :class:`InputSpec`), ``_infer`` (an already checked batch -> float32 logits), ``_close``
    (release; must cope with a half-finished ``_open``) and :meth:`describe`.
    """

    backend: str = "?"
    device_resident: bool = False    # stage/enqueue/synchronize/fetch work on device memory
    allocator: str | None = None     # "torch" (TORCH_ALLOCATOR) where device memory comes from torch's caching allocator

    # ------------------------------------------------------------------ what bench asks (it names no backend)
    @classmethod
    def runs_on_gpu(cls, backend: str) -> bool:
        """Does ``backend`` run on a GPU on this machine (GPU warm-up, no CPU thread share)? Cheap, loads nothing."""
        return False

    @classmethod
    def in_default_sweep(cls, backend: str, gpu: bool) -> bool:
        """Is ``backend`` in ``resnet-deploy bench``'s default sweep on a machine with (``gpu``) or without a GPU?"""
        return False

    @classmethod
    def extra_warmup(cls, backend: str) -> int:
        """Warm-up calls ``backend`` needs beyond bench's CPU/GPU default (compilation, graph capture);
        also the least it gets when ``--warmup`` is given."""
        return 0

    @classmethod
    def streams_unsupported(cls, backend: str) -> str | None:
        """Why bench does not time several instances of ``backend`` at once, or ``None`` where it does."""
        return None

    @classmethod
    def stream_instance_text(cls, backend: str, gpu: bool) -> str:
        """What each of several streams holds, for the report: ``"its own InferenceSession"``."""
        return "its own instance"

    @classmethod
    def known_slowdown(cls, backend: str, precision: str) -> str | None:
        """Why ``backend`` is known to run ``precision`` slower than FP32 (bench's ranking quotes it beside
        such a row), or ``None`` where no reason is known."""
        return None

    @classmethod
    def set_process_threads(cls, backend: str, threads: int) -> int | None:
        """Set the process-wide CPU thread count ``backend`` computes with; return the previous count (to
        restore), or ``None`` where the backend takes its threads per instance (``timing_options(threads=)``)."""
        return None

    def __init__(self) -> None:
        self._active = False
        self.input_spec: InputSpec | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "Runner":
        """Load and allocate (once; a second call is a no-op). Returns the runner."""
        if self._active:
            return self
        try:
            self.input_spec = self._open()
        except BaseException:
            self._close()
            raise
        self._active = True
        return self

    def close(self) -> None:
        """Release device memory, sessions, streams. Safe to call twice, and before :meth:`open`."""
        if not self._active:
            return
        self._active = False
        self._close()

    @property
    def is_open(self) -> bool:
        return self._active

    def __enter__(self) -> "Runner":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_open(self) -> InputSpec:
        if not self._active or self.input_spec is None:
            raise UserError(f"this {self.backend} runner is not open (call open() or use it in a with block)")
        return self.input_spec

    # ------------------------------------------------------------------ inference
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one float NCHW batch; return float32 logits of shape [N, classes]."""
        x = self._require_open().check(batch)
        return self._infer(x)

    def stage(self, batch: np.ndarray) -> None:
        """Copy a host batch to the runner's device input (asynchronously, on :attr:`stream`)."""
        x = self._require_open().check(batch)
        self._stage(x)

    def enqueue(self) -> None:
        """Run on the staged input, on :attr:`stream`: no host copies, no waiting."""
        self._require_open()
        self._enqueue()

    def synchronize(self) -> None:
        """Wait until everything queued on :attr:`stream` has finished."""
        self._require_open()
        self._synchronize()

    def fetch(self) -> np.ndarray:
        """The output of the last :meth:`enqueue`, copied to the host as float32 (call :meth:`synchronize` first)."""
        self._require_open()
        return self._fetch()

    @property
    def stream(self) -> Any:
        """The stream stage/enqueue use: a ``torch.cuda.Stream``, a CUDA stream handle, or ``None`` (synchronous)."""
        return None

    # ------------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def _open(self) -> InputSpec:
        """Load and allocate; return the input spec."""

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """A checked batch (contiguous, of the spec's dtype) -> float32 logits."""

    def _close(self) -> None:
        """Release what ``_open`` allocated (possibly only part of it)."""

    def _no_device_path(self) -> None:
        raise UserError(f"the {self.backend} runner has no device-resident execution (stage/enqueue)")

    def _stage(self, batch: np.ndarray) -> None:
        self._no_device_path()

    def _enqueue(self) -> None:
        self._no_device_path()

    def _synchronize(self) -> None:
        self._no_device_path()

    def _fetch(self) -> np.ndarray:
        self._no_device_path()
        raise AssertionError  # unreachable

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Backend, version, device, precision and anything else that identifies the run (works before open)."""

    def served_endpoint(self) -> dict[str, str] | None:
        """Where a served model answers, for tools that send it load themselves (``bench --perf-analyzer``):
        ``{"address": "host:port", "protocol": "grpc"|"http", "model": name, "version": ""}``; ``None`` in-process."""
        return None

    def compile_stats(self) -> dict[str, Any] | None:
        """``{"graphs": n, "seconds": s}``: graphs this runner compiled or captured so far and the time the
        calls that did it took (torch.compile, CUDA-graph capture); ``None`` where nothing is compiled."""
        return None

    @classmethod
    def unavailable(cls, backend: str, precision: str) -> str | None:
        """``None`` if ``backend`` can run ``precision`` on this machine, else why not (cheap checks)."""
        return None

    @classmethod
    def timing_options(cls, backend: str, *, threads: int | None = None, tf32: bool = False, cuda_graph: bool = True,
                       beside_others: bool = False) -> dict[str, Any]:
        """Constructor options for the fastest correct run of ``backend`` here (what bench opens).

        ``beside_others``: this instance runs at the same time as others (several streams).
        """
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


__all__ = ["InputSpec", "Runner", "TORCH_ALLOCATOR"]
