"""The CUDA memory of a runner's named tensors: one device buffer and one pinned host buffer each,
and the stream their copies go on. numpy and cuda-python only (no torch, no TensorRT).

:class:`DeviceBuffers` owns every allocation it makes and frees all of them in :meth:`~DeviceBuffers.free`
(safe to call twice, and after an allocation that failed half-way), or on leaving a ``with`` block.
Host buffers are pinned (``cudaMallocHost``), so the copies are truly asynchronous and can be
captured into CUDA graphs; the host side is a numpy view of the pinned memory.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .._native.cuda import cuda_check


class DeviceBuffers:
    """Device and pinned host buffers by tensor name, and one non-blocking stream.

    ``device[name]`` is the device address (what TensorRT's ``set_tensor_address`` takes),
    ``host[name]`` a numpy array over the pinned host buffer of the same size.
    """

    def __init__(self, cudart, *, artifact: str = ""):
        self.cudart = cudart
        self.artifact = artifact  # named in out-of-memory messages
        self.device: dict[str, int] = {}
        self.host: dict[str, np.ndarray] = {}
        self._pinned: dict[str, int] = {}
        self.stream: Any = None

    def _check(self, result, what: str):
        return cuda_check(self.cudart, result, what, artifact=self.artifact)

    def create_stream(self) -> Any:
        """The stream the copies go on (created once)."""
        if self.stream is None:
            cudart = self.cudart
            self.stream = self._check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        return self.stream

    def allocate(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
        """A device buffer and a pinned host buffer for ``name`` of ``shape`` and ``dtype``; the device address."""
        if name in self.device:
            raise ValueError(f"{name!r} already has buffers")
        count = int(np.prod(shape))
        nbytes = max(1, count * np.dtype(dtype).itemsize)
        self.device[name] = int(self._check(self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
        pinned = self._pinned[name] = int(self._check(self.cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        view = (ctypes.c_byte * nbytes).from_address(pinned)
        self.host[name] = np.frombuffer(view, dtype=dtype, count=count).reshape(shape)
        return self.device[name]

    def _nbytes(self, name: str, rows: int) -> int:
        host = self.host[name]
        return rows * int(np.prod(host.shape[1:])) * host.dtype.itemsize

    def to_device(self, name: str, rows: int) -> None:
        """Queue the copy of the first ``rows`` of ``host[name]`` to ``device[name]`` on :attr:`stream`."""
        cudart = self.cudart
        self._check(cudart.cudaMemcpyAsync(self.device[name], self.host[name].ctypes.data, self._nbytes(name, rows),
                                           cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), "cudaMemcpyAsync H2D")

    def to_host(self, name: str, rows: int) -> None:
        """Queue the copy of the first ``rows`` of ``device[name]`` to ``host[name]`` on :attr:`stream`."""
        cudart = self.cudart
        self._check(cudart.cudaMemcpyAsync(self.host[name].ctypes.data, self.device[name], self._nbytes(name, rows),
                                           cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), "cudaMemcpyAsync D2H")

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def free(self) -> None:
        """Wait for the stream, free every buffer, destroy the stream. A second call does nothing."""
        cudart = self.cudart
        if self.stream is not None:
            cudart.cudaStreamSynchronize(self.stream)
        self.host.clear()  # the views go before the memory they look at
        for ptr in self.device.values():
            cudart.cudaFree(ptr)
        for ptr in self._pinned.values():
            cudart.cudaFreeHost(ptr)
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
        self.device.clear()
        self._pinned.clear()
        self.stream = None

    def __enter__(self) -> DeviceBuffers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    def __repr__(self) -> str:
        return f"<DeviceBuffers {sorted(self.device)} stream={self.stream!r}>"


__all__ = ["DeviceBuffers"]
