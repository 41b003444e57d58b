"""What a benchmark run is asked to do (:class:`BenchConfig`), its defaults and its checks.

The backend facts it needs (which run on a GPU, which are in the default sweep, how many
warm-up calls a backend adds) come from the runner classes through the registry
(:func:`resnet_deploy.runners.runner_class`): no backend is named here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from .._native.cuda import cuda_device_info
from ..artifacts import DEFAULT_ROOT, PRECISIONS, Precision
from ..errors import UserError
from ..limits import MAX_BATCH, MAX_SEED
from ..model import resolve_arch
from ..runners import BACKENDS, runner_class
from .loadgen import LoadgenSettings
from .perf_analyzer import PerfAnalyzerSettings, find_perf_analyzer
from .timed_calls import torch_cuda
from .timing import CPU_WARMUP, GPU_WARMUP

ALL_DEPTHS = (18, 34, 50, 101, 152)
BENCH_PRECISIONS = PRECISIONS
MAX_STREAMS = 16
DEFAULT_BATCHES = {False: [1, 8], True: [1, 32, 256]}
DEFAULT_DEPTHS = {False: [18, 50], True: [18, 50, 152]}
DEFAULT_PRECISIONS = {False: ["fp32"], True: ["fp32", "fp16"]}


def gpu_present() -> bool:
    return torch_cuda() or cuda_device_info(0)[0] is not None


def runs_on_gpu(backend: str) -> bool:
    """Does this backend run on a GPU here? (the runner class says)."""
    return runner_class(backend).runs_on_gpu(backend)


def defaults(gpu: bool | None = None) -> dict[str, Any]:
    """The quick default sweep: small and sure to work on a CPU; the anchors' grid on a GPU."""
    gpu = gpu_present() if gpu is None else gpu
    return {"engines": [b for b in BACKENDS if runner_class(b).in_default_sweep(b, gpu)],
            "depths": list(DEFAULT_DEPTHS[gpu]), "precisions": list(DEFAULT_PRECISIONS[gpu]),
            "batches": list(DEFAULT_BATCHES[gpu])}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


@dataclass
class BenchConfig:
    engines: list[str]
    depths: list[int | str]
    precisions: list[str]
    batches: list[int]
    min_time: float = 1.0
    min_iters: int = 10
    max_iters: int | None = None
    warmup: int | None = None          # None: CPU_WARMUP / GPU_WARMUP, plus the runner's extra_warmup
    buffers: int = 4                   # rotating input buffers per batch size
    bare: bool = True                  # also time a bare loop: harness overhead %
    bare_rounds: int = 5               # alternated (harness block, bare block) pairs
    threads: int | None = None         # CPU threads for torch and ONNX Runtime (None: their defaults)
    artifacts: str = str(DEFAULT_ROOT)
    seed: int = 0
    ort_cuda_graph: bool = True
    tf32: bool = False                 # GPU FP32 with TF32 math (faster; misses the FP32 parity bar)
    parity_random: int = 4
    streams: int = 1                   # > 1: also time this many instances at once (offline, several streams)
    loadgen: LoadgenSettings | None = None  # an MLPerf LoadGen scenario measures the rows instead of the timing loop
    served_url: str | None = None      # --engine triton: the server (and model: .../v2/models/NAME) the rows run on
    perf_analyzer: PerfAnalyzerSettings | None = None  # also sweep each served row with NVIDIA perf_analyzer

    def validate(self) -> None:
        if self.loadgen is not None:  # first: a scenario's settings decide the default batch sizes
            self._validate_loadgen()
        self._validate_grid()
        self._validate_loop()
        if self.perf_analyzer is not None:
            self.perf_analyzer.validate()
            find_perf_analyzer(self.perf_analyzer.path)  # cannot run here: one line, before anything is measured

    def _validate_loadgen(self) -> None:
        lg = self.loadgen
        lg.validate()
        _require(self.streams == 1, "--streams times the timing loop; with --scenario, LoadGen sets the load: choose one")
        _require(lg.scenario != "single-stream" or self.batches == [1],
                 f"single-stream sends one sample per query: use --batch 1, got {self.batches}")

    def _validate_grid(self) -> None:
        _require(bool(self.engines), "no engine chosen")
        for e in self.engines:
            _require(e in BACKENDS, f"unknown engine {e!r}; choose from {', '.join(BACKENDS)} or all")
        for p in self.precisions:
            _require(p in BENCH_PRECISIONS, f"unknown precision {p!r}; choose from {', '.join(BENCH_PRECISIONS)}")
        self.precisions = [Precision.parse(p) for p in self.precisions]  # parsed once: the plan carries the type
        _require(bool(self.batches) and all(b >= 1 for b in self.batches), "batch sizes must be integers >= 1")
        _require(all(b <= MAX_BATCH for b in self.batches), f"batch sizes must be at most {MAX_BATCH}, got "
                 f"{', '.join(map(str, self.batches))}")
        _require(bool(self.depths), "no depth chosen")
        for d in self.depths:
            resolve_arch(d, False)

    def _validate_loop(self) -> None:
        _require(self.min_time >= 0 and math.isfinite(self.min_time),
                 f"--min-time must be a number of seconds >= 0, got {self.min_time}")
        _require(self.min_iters >= 1, "--min-iters must be at least 1")
        _require(0 <= self.seed <= MAX_SEED, f"--seed must be within 0..{MAX_SEED}, got {self.seed}")
        _require(self.warmup is None or self.warmup >= 0, "--warmup must be >= 0")
        _require(self.buffers >= 1, "--buffers must be at least 1")
        _require(self.bare_rounds >= 1, "bare rounds must be at least 1")
        _require(self.threads is None or self.threads >= 1, "--threads must be at least 1")
        _require(1 <= self.streams <= MAX_STREAMS, f"--streams must be within 1..{MAX_STREAMS}, got {self.streams}")

    def warmup_for(self, backend: str) -> int:
        extra = runner_class(backend).extra_warmup(backend)
        if self.warmup is not None:
            return max(self.warmup, extra)
        return (GPU_WARMUP if runs_on_gpu(backend) else CPU_WARMUP) + extra


def _parse_item(part: str, kind: type, name: str) -> Any:
    if kind is not int:
        return part.lower()
    try:
        return int(part)
    except ValueError:
        if name == "depth":
            return part  # an architecture name such as resnext50_32x4d
        raise UserError(f"--{name} takes integers separated by commas, got {part!r}") from None


def parse_list(value: str | None, *, all_values: Sequence[Any], kind: type = str, name: str = "value") -> list[Any]:
    """``"18,50"`` -> ``[18, 50]``; ``"all"`` -> ``all_values``; duplicates dropped, order kept."""
    if value is None:
        return []
    items: list[Any] = []
    for part in str(value).replace(" ", "").split(","):
        if not part:
            continue
        if part.lower() == "all":
            items.extend(all_values)
        else:
            items.append(_parse_item(part, kind, name))
    return list(dict.fromkeys(items))


__all__ = ["ALL_DEPTHS", "BENCH_PRECISIONS", "BenchConfig", "CPU_WARMUP", "GPU_WARMUP", "MAX_STREAMS", "defaults",
           "gpu_present", "parse_list", "runs_on_gpu"]
