"""The sweep: depths x precisions x backends x batch sizes, one result row each.

For every (depth, precision, backend) the artifact is made or reused by the pipeline
(:func:`resnet_deploy.pipeline.current_precision`, :func:`~resnet_deploy.pipeline.ensure_engine`),
the backend is opened once through :func:`resnet_deploy.runners.make_runner` with its
:func:`~resnet_deploy.runners.timing_options`, and for each batch size:

1. parity first: the photographs, crops and random tensors of :func:`resnet_deploy.compare.parity_batch`
   through the timed path, against PyTorch FP32 on the same inputs, at the precision's bars
   (a row gets no speed figure without its correctness figure; a failing row is kept and
   marked ``failed``);
2. warm-up, then the timed loop over several rotating input buffers until ``min_time`` and
   ``min_iters`` (end-to-end; plus compute-only on GPU backends);
3. optionally the bare loop on the same call and inputs, for the harness-overhead figure.

With ``streams > 1`` (:func:`streams_pass`), after a backend's single-stream rows, that many
fresh instances of it run at once, one thread each, and each row gains the ``streams_*``
figures (aggregate images/s, latency under load) after the same parity checks, plus one more:
each stream's output under load must match the same input run alone.

A backend that cannot run here gives one ``unavailable`` row with the reason; an error or an
out-of-memory at one batch is recorded and the sweep goes on (after an out-of-memory the
larger batches of that backend are ``skipped``). Ctrl-C stops the sweep; what was measured is
written all the same.
"""

from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._native.cuda import cuda_device_info
from ..artifacts import DEFAULT_ROOT, PRECISIONS
from ..compare import compare, parity_batch
from ..engine import BuildOptions
from ..errors import BackendUnavailable, UserError
from ..model import resolve_arch
from ..pipeline import current_precision, ensure_engine, load_model
from ..progress import Progress, quiet
from ..runners import BACKENDS, ENGINE_BACKENDS, ONNX_BACKENDS, Runner, make_runner, timing_options, unavailable
from ..runners.torch_runner import TorchRunner
from .bound import MemoryProbe, bind, is_oom, torch_cuda
from .env import device_label, environment, usable_cores
from .report import ROW_FIELDS, ResultWriter, default_run_id
from .timing import RssProbe, cpu_pressure, load_average, measure, measure_concurrent, paired_overhead

ALL_DEPTHS = (18, 34, 50, 101, 152)
BENCH_PRECISIONS = PRECISIONS
MAX_STREAMS = 16
STREAMS_UNSUPPORTED = {
    "torch-compile": ("not measured with several streams: torch.compile's CUDA graphs have not been checked from "
                      "several threads at once; single-stream only"),
}
def gpu_present() -> bool:
    return torch_cuda() or cuda_device_info(0)[0] is not None


def is_gpu(backend: str) -> bool:
    """Does this backend run on a GPU here? (torch / torch-compile follow torch.cuda.is_available())."""
    return backend in ("ort-cuda", *ENGINE_BACKENDS) or (backend in ("torch", "torch-compile") and torch_cuda())


def defaults(gpu: bool | None = None) -> dict[str, Any]:
    """The quick default sweep: small and sure to work on a CPU; the anchors' grid on a GPU."""
    gpu = gpu_present() if gpu is None else gpu
    if gpu:
        return {"engines": ["torch", "torch-compile", "ort-cuda", "trt", "trt-rtx"], "depths": [18, 50, 152],
                "precisions": ["fp32", "fp16"], "batches": [1, 32, 256]}
    return {"engines": ["torch", "ort"], "depths": [18, 50], "precisions": ["fp32"], "batches": [1, 8]}


@dataclass
class BenchConfig:
    engines: list[str]
    depths: list[int | str]
    precisions: list[str]
    batches: list[int]
    min_time: float = 1.0
    min_iters: int = 10
    max_iters: int | None = None
    warmup: int | None = None          # None: 3 on CPU, 20 on GPU (+3 for torch-compile)
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

    def validate(self) -> None:
        if not self.engines:
            raise UserError("no engine chosen")
        for e in self.engines:
            if e not in BACKENDS:
                raise UserError(f"unknown engine {e!r}; choose from {', '.join(BACKENDS)} or all")
        for p in self.precisions:
            if p not in BENCH_PRECISIONS:
                raise UserError(f"unknown precision {p!r}; choose from {', '.join(BENCH_PRECISIONS)}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise UserError("batch sizes must be integers >= 1")
        if not self.depths:
            raise UserError("no depth chosen")
        for d in self.depths:
            resolve_arch(d, False)
        if not (self.min_time >= 0 and math.isfinite(self.min_time)):
            raise UserError(f"--min-time must be a number of seconds >= 0, got {self.min_time}")
        if self.min_iters < 1:
            raise UserError("--min-iters must be at least 1")
        if self.warmup is not None and self.warmup < 0:
            raise UserError("--warmup must be >= 0")
        if self.buffers < 1:
            raise UserError("--buffers must be at least 1")
        if self.bare_rounds < 1:
            raise UserError("bare rounds must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")
        if not 1 <= self.streams <= MAX_STREAMS:
            raise UserError(f"--streams must be within 1..{MAX_STREAMS}, got {self.streams}")

    def warmup_for(self, backend: str) -> int:
        if self.warmup is not None:
            return max(self.warmup, 3 if backend == "torch-compile" else 0)
        return (20 if is_gpu(backend) else 3) + (3 if backend == "torch-compile" else 0)


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
            continue
        if kind is int:
            try:
                v: Any = int(part)
            except ValueError:
                if name == "depth":
                    v = part  # an architecture name such as resnext50_32x4d
                else:
                    raise UserError(f"--{name} takes integers separated by commas, got {part!r}") from None
        else:
            v = part.lower()
        items.append(v)
    seen, out = set(), []
    for v in items:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


# ------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------


def new_row(run_id: str, arch: str, depth: Any, precision: str, backend: str, batch: int | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(run_id=run_id, arch=arch, depth=depth, precision=precision, backend=backend, batch=batch,
               status="pending", reason="", notes="", load_avg_1m=(load_average() or [None])[0],
               cpu_pressure_pct=(cpu_pressure() or {}).get("avg10"))
    return row


def _fmt_exc(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:300]}" if not isinstance(e, UserError) else text[:300]


# ------------------------------------------------------------------------------------------
# artifacts
# ------------------------------------------------------------------------------------------


def make_onnx(arch: str, precision: str, cfg: BenchConfig, progress: Progress) -> tuple[str, float, bool]:
    """The precision's ONNX: ``(path, seconds spent making it in this run, reused)``."""
    t0 = time.perf_counter()
    m = current_precision(arch, precision, out_dir=cfg.artifacts, seed=cfg.seed, progress=progress)
    return str(m["path"]), time.perf_counter() - t0, bool(m.get("reused"))


def make_engine(arch: str, precision: str, flavour: str, cfg: BenchConfig, progress: Progress) -> tuple[str, float, bool]:
    """The engine, with a profile up to the largest batch: ``(path, seconds spent making it, reused)``."""
    t0 = time.perf_counter()
    opts = BuildOptions(flavour=flavour, min_batch=1, opt_batch=max(cfg.batches), max_batch=max(cfg.batches))
    m = ensure_engine(arch, precision, opts, out_dir=cfg.artifacts, seed=cfg.seed, progress=progress)
    return str(m["path"]), time.perf_counter() - t0, bool(m["reused"])


@dataclass
class Opened:
    """One backend instance for one (depth, precision): the open runner and its memory probe."""

    runner: Runner
    memory: MemoryProbe
    load_s: float

    @property
    def notes(self) -> list[str]:
        return list(self.runner.describe().get("notes") or [])

    @property
    def device(self) -> str:
        d = self.runner.describe()
        return str(d.get("gpu") or d.get("device") or "cpu")

    def close(self) -> None:
        self.runner.close()


def open_backend(backend: str, *, model: Any, artifact: str | None, precision: str, cfg: BenchConfig, rss: RssProbe,
                 threads: int | None = None, beside_others: bool = False) -> Opened:
    """Open ``backend`` with its timing options; the memory baseline is taken before it loads."""
    options = timing_options(backend, threads=threads if threads is not None else cfg.threads, tf32=cfg.tf32,
                             cuda_graph=cfg.ort_cuda_graph, beside_others=beside_others)
    runner = make_runner(backend, model if backend in ("torch", "torch-compile") else artifact, precision=precision,
                         **options)
    memory = MemoryProbe.for_runner(runner, rss)
    memory.baseline()
    t0 = time.perf_counter()
    runner.open()
    return Opened(runner, memory, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------
# one row
# ------------------------------------------------------------------------------------------


def _inputs(batch: int, n: int, seed: int, size: int = 224) -> list[np.ndarray]:
    """``n`` different random buffers (never zeros), at most about 2 GiB together."""
    per = batch * 3 * size * size * 4
    n = max(1, min(n, (2 << 30) // max(per, 1)))
    rng = np.random.default_rng(seed + batch)
    return [rng.standard_normal((batch, 3, size, size), dtype=np.float32) for _ in range(n)]


def _put_timing(row: dict[str, Any], prefix: str, t, batch: int) -> None:
    s = t.stats
    row[f"{prefix}p50_ms"] = s.p50
    row[f"{prefix}p90_ms"] = s.p90
    row[f"{prefix}p99_ms"] = s.p99
    row[f"{prefix}mean_ms"] = s.mean
    row[f"{prefix}throughput_ips"] = batch / (s.p50 / 1e3) if s.p50 > 0 else None


def bench_row(row: dict[str, Any], opened: Opened, batch: int, inputs: list[np.ndarray], reference: np.ndarray,
              parity_inputs: np.ndarray, cfg: BenchConfig) -> dict[str, Any]:
    compiled_before = opened.runner.compile_stats()
    bound = bind(opened.runner, batch, inputs)  # (a graph backend captures here)
    try:
        opened.memory.row_start()
        # 1. correctness on the timed path and shape
        cand = bound.infer(parity_inputs)
        res = compare(reference, cand, row["precision"])
        row.update(parity_rel_l2=res.rel_l2, parity_max_abs=res.max_abs, parity_top1=res.top1_agreement,
                   parity_top5=res.top5_agreement, parity_cosine=res.cosine, parity_n=res.n,
                   parity_passed=res.passed, parity_failures="; ".join(res.failures),
                   parity_bar_rel_l2=res.thresholds.rel_l2, parity_bar_top1=res.thresholds.top1)
        # 2. speed, end to end (host numpy in, host logits out)
        warm = cfg.warmup_for(row["backend"])
        t = measure(bound.e2e, len(inputs), warmup=warm, min_time=cfg.min_time, min_iters=cfg.min_iters,
                    max_iters=cfg.max_iters, clock=bound.e2e_clock, sync=bound.e2e_sync)
        opened.memory.sample()
        _put_timing(row, "latency_", t, batch)
        row.update(latency_min_ms=t.stats.min, latency_std_ms=t.stats.std, iterations=t.iterations,
                   timed_s=t.timed_wall_s, warmup=t.warmup, first_call_s=t.first_call_s, clock=t.clock)
        primary, primary_t, primary_sync = bound.e2e, t, bound.e2e_sync
        before = None
        # 3. compute only (device-resident inputs) where the backend is on a GPU
        if bound.compute is not None:
            tc = measure(bound.compute, len(inputs), warmup=warm, min_time=cfg.min_time, min_iters=cfg.min_iters,
                         max_iters=cfg.max_iters, clock=bound.compute_clock, before=bound.compute_before,
                         sync=bound.compute_sync)
            opened.memory.sample()
            _put_timing(row, "compute_", tc, batch)
            row.update(compute_clock=tc.clock, compute_iterations=tc.iterations, scope="end-to-end + compute-only")
            primary, primary_t, primary_sync = bound.compute, tc, bound.compute_sync
            before = bound.compute_before
        else:
            row.update(scope="end-to-end = compute (CPU: no host-device copy)")
        # 4. the bare loop on the same call and inputs, alternated with harness blocks
        if cfg.bare:
            # about as many calls as the timed loop made, split into alternated harness/bare pairs
            rounds = max(1, min(cfg.bare_rounds, primary_t.iterations // 2))
            m = max(1, primary_t.iterations // (2 * rounds))
            chk = paired_overhead(primary, len(inputs), calls_per_block=m, rounds=rounds,
                                  clock=bound.compute_clock if bound.compute is not None else bound.e2e_clock,
                                  before=before, sync=primary_sync)
            row.update(bare_mean_ms=chk.bare_mean_ms, harness_mean_ms=chk.harness_mean_ms,
                       harness_overhead_pct=chk.overhead_pct)
        row["memory_mib"] = opened.memory.peak_mib()
        row["memory_kind"] = opened.memory.label
        compiled = opened.runner.compile_stats()
        if compiled is not None:
            graphs = compiled["graphs"] - (compiled_before or {}).get("graphs", 0)
            row.update(compile_graphs=graphs,
                       compile_s=round(compiled["seconds"] - (compiled_before or {}).get("seconds", 0.0), 3))
            if graphs > 1:
                bound.notes.append(f"{graphs} graphs compiled for one batch size: parity and timing may not share one")
        row["notes"] = "; ".join([*opened.notes, *bound.notes])
        row["status"] = "ok" if res.passed else "failed"
        if not res.passed:
            row["reason"] = "parity failed: " + "; ".join(res.failures)
    finally:
        bound.close()
    return row


# ------------------------------------------------------------------------------------------
# several streams (offline throughput with concurrent instances)
# ------------------------------------------------------------------------------------------


def streams_row(row: dict[str, Any], instances: list[Opened], inputs: list[np.ndarray], reference: np.ndarray,
                parity_inputs: np.ndarray, cfg: BenchConfig) -> dict[str, Any]:
    """Time ``len(instances)`` instances of one backend at once on one batch size; add the
    ``streams_*`` figures to ``row`` (whose single-stream figures are already measured).

    Correctness comes first here too: every instance passes parity on its own, and after the
    concurrent run each stream's last output is compared with the same input run alone, so
    that streams which corrupt each other's buffers fail the row instead of flattering it.
    """
    batch, precision = row["batch"], row["precision"]
    bounds = []
    try:
        for inst in instances:
            bounds.append(bind(inst.runner, batch, inputs, device_resident=False))
        failures = []
        for k, b in enumerate(bounds):
            res = compare(reference, b.infer(parity_inputs), precision)
            if not res.passed:
                failures.append(f"stream {k} alone: " + "; ".join(res.failures))
        alone = [bounds[0].infer(x) for x in inputs]
        ct = measure_concurrent([b.e2e for b in bounds], len(inputs), warmup=cfg.warmup_for(row["backend"]),
                                min_time=cfg.min_time, min_iters=cfg.min_iters)
        for k, (idx, out) in enumerate(ct.last):
            res = compare(alone[idx], np.asarray(out, dtype=np.float32), precision)
            if not res.passed:
                failures.append(f"stream {k} under load differs from the same input run alone: "
                                + "; ".join(res.failures))
        ips = ct.throughput(batch)
        single = row.get("latency_throughput_ips")
        row.update(streams=len(instances), streams_throughput_ips=ips, streams_p50_ms=ct.stats.p50,
                   streams_p99_ms=ct.stats.p99, streams_calls=ct.total_calls,
                   streams_gain_pct=(ips / single - 1) * 100 if single else None)
        if failures:
            row["status"] = "failed"
            row["parity_passed"] = False
            row["parity_failures"] = "; ".join(f for f in [row.get("parity_failures"), *failures] if f)
            row["reason"] = "parity failed: " + row["parity_failures"]
    finally:
        for b in bounds:
            b.close()
    return row


def _streams_how(n: int, backend: str, gpu: bool, threads: int | None) -> str:
    each = {"torch": "its own copy of the model" + (" on its own CUDA stream" if gpu else ""),
            "ort": "its own InferenceSession", "ort-cuda": "its own InferenceSession (its own CUDA stream, I/O binding, no CUDA graph)",
            "trt": "its own engine, execution context and CUDA stream",
            "trt-rtx": "its own engine, execution context and CUDA stream"}.get(backend, "its own instance")
    cpu = f" and {threads} CPU thread{'s' if threads != 1 else ''}" if threads else ""
    return f"{n} streams, each a Python thread with {each}{cpu}, timed end to end"


def streams_pass(rows: list[dict[str, Any]], *, backend: str, model: Any, artifact: str | None, precision: str,
                 reference: np.ndarray, parity_inputs: np.ndarray, cfg: BenchConfig, progress: Progress) -> None:
    """The several-streams figure for every measured row of one (depth, precision, backend).

    Runs after the single-stream rows (whose memory figures it must not disturb) and after
    their instance is closed: ``cfg.streams`` fresh instances, on a CPU each with an equal
    share of the cores (or ``--threads`` each). A failure here is recorded in ``streams_note``;
    the single-stream figures stand.
    """
    if not rows:
        return
    why = STREAMS_UNSUPPORTED.get(backend)
    if why is not None:
        for r in rows:
            r["streams_note"] = why
        return
    n = cfg.streams
    gpu = is_gpu(backend)
    per = None if gpu else (cfg.threads or max(1, usable_cores() // n))
    torch_threads = None
    instances: list[Opened] = []
    arch = rows[0]["arch"]
    try:
        if backend == "torch" and not gpu:
            import torch

            torch_threads = torch.get_num_threads()
            torch.set_num_threads(per)
        scratch = RssProbe()  # the rows' memory figures are taken; these instances are not measured for memory
        for k in range(n):
            progress(f"{arch} {precision} {backend}: opening instance {k + 1} of {n} for several streams")
            instances.append(open_backend(backend, model=model, artifact=artifact, precision=precision, cfg=cfg,
                                          rss=scratch, threads=per, beside_others=True))
        how = _streams_how(n, backend, gpu, per)
        oom_at = None
        for row in rows:
            if oom_at is not None:
                row["streams_note"] = f"skipped: out of memory with {n} streams at batch {oom_at}"
                continue
            progress(f"{arch} {precision} {backend} batch {row['batch']}: {n} streams")
            try:
                streams_row(row, instances, _inputs(row["batch"], cfg.buffers, cfg.seed, parity_inputs.shape[-1]),
                            reference, parity_inputs, cfg)
                row["streams_note"] = how
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - recorded; the single-stream figures stand
                oom = is_oom(e)
                if oom:
                    oom_at = row["batch"]
                row["streams_note"] = ("out of memory: " if oom else "error: ") + _fmt_exc(e)
                gc.collect()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - could not open the instances
        text = e.reason if isinstance(e, BackendUnavailable) else _fmt_exc(e)
        for r in rows:
            if not r.get("streams_note"):
                r["streams_note"] = f"could not open {n} instances: " + ("out of memory: " if is_oom(e) else "") + text
    finally:
        for inst in instances:
            inst.close()
        instances.clear()
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        gc.collect()


# ------------------------------------------------------------------------------------------
# the sweep
# ------------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    run_id: str
    out_dir: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    started: float = field(default_factory=time.time)
    finished: float | None = None
    files: dict[str, str] = field(default_factory=dict)


def plan_size(cfg: BenchConfig) -> int:
    return len(cfg.depths) * len(cfg.precisions) * len(cfg.engines) * len(cfg.batches)


def run_bench(cfg: BenchConfig, *, out: str | os.PathLike[str] = "benchmarks/results", run_id: str | None = None,
              progress: Progress = quiet, on_row: Callable[[dict[str, Any], int], None] | None = None,
              command: str | None = None, write: bool = True) -> BenchResult:
    """Run the sweep and write ``<out>/<run_id>/`` (results.json, results.csv, report.md, plots).

    ``on_row(row, n_planned_rows_done)`` is called after every row (the CLI's progress bar).
    On Ctrl-C the sweep stops, everything measured so far is written, and the result has
    ``interrupted=True``.
    """
    cfg.validate()
    if cfg.threads:
        import torch  # the torch CPU threads are the process's (every backend's reference runs on torch)

        torch.set_num_threads(cfg.threads)
    env = environment(command)
    run_id = run_id or default_run_id(env)
    writer = ResultWriter(Path(out) / run_id) if write else None
    result = BenchResult(run_id=run_id, out_dir=Path(out) / run_id, config=asdict(cfg), environment=env)
    rss = RssProbe()
    result.environment["host_memory_probe"] = rss.method
    done = 0

    def emit(row: dict[str, Any], count: int = 1) -> None:
        nonlocal done
        result.rows.append(row)
        done += count
        if writer is not None:
            writer.write_partial(result)
        if on_row is not None:
            on_row(row, done)

    input_cache: dict[tuple[int, int], list[np.ndarray]] = {}
    try:
        for depth in cfg.depths:
            arch = resolve_arch(depth, False)
            progress(f"{arch}: building the PyTorch FP32 reference (seed {cfg.seed})")
            model = load_model(arch, seed=cfg.seed)
            with TorchRunner(model) as ref_runner:
                _, parity_inputs = parity_batch(model.card.recipe, n_random=cfg.parity_random, seed=cfg.seed)
                reference = ref_runner.infer(parity_inputs)
            for precision in cfg.precisions:
                for backend in cfg.engines:
                    n_b = len(cfg.batches)
                    why = unavailable(backend, precision)
                    if why is not None:
                        row = new_row(run_id, arch, depth, precision, backend, None)
                        row.update(status="unavailable", reason=why)
                        emit(row, n_b)
                        continue
                    opened = None
                    artifact, build_s, reused = None, None, None
                    try:
                        if backend in ONNX_BACKENDS:
                            progress(f"{arch} {precision}: ONNX for {backend}")
                            artifact, build_s, reused = make_onnx(arch, precision, cfg, progress)
                        elif backend in ENGINE_BACKENDS:
                            progress(f"{arch} {precision}: engine for {backend}")
                            artifact, build_s, reused = make_engine(arch, precision, backend, cfg, progress)
                        progress(f"{arch} {precision}: opening {backend}")
                        opened = open_backend(backend, model=model, artifact=artifact, precision=precision, cfg=cfg,
                                              rss=rss)
                    except (BackendUnavailable, UserError) as e:
                        # a backend that cannot run here is unavailable; an artifact that cannot be made or
                        # opened (a foreign model, a full disk) is an error of this run
                        row = new_row(run_id, arch, depth, precision, backend, None)
                        unavailable_here = isinstance(e, BackendUnavailable)
                        row.update(status="unavailable" if unavailable_here else "error",
                                   reason=e.reason if unavailable_here else str(e),
                                   artifact=str(artifact) if artifact else None)
                        emit(row, n_b)
                        continue
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
                        row = new_row(run_id, arch, depth, precision, backend, None)
                        row.update(status="error", reason=("out of memory: " if is_oom(e) else "") + _fmt_exc(e))
                        emit(row, n_b)
                        continue
                    oom_at = None
                    measured: list[dict[str, Any]] = []
                    try:
                        for batch in cfg.batches:
                            row = new_row(run_id, arch, depth, precision, backend, batch)
                            row.update(artifact=artifact, build_s=build_s, artifact_reused=reused, load_s=opened.load_s,
                                       device=opened.device)
                            if oom_at is not None:
                                row.update(status="skipped", reason=f"out of memory at batch {oom_at}")
                                emit(row)
                                continue
                            progress(f"{arch} {precision} {backend} batch {batch}")
                            size = parity_inputs.shape[-1]
                            if (batch, size) not in input_cache:
                                input_cache.clear()
                                input_cache[batch, size] = _inputs(batch, cfg.buffers, cfg.seed, size)
                            try:
                                bench_row(row, opened, batch, input_cache[batch, size], reference, parity_inputs, cfg)
                            except KeyboardInterrupt:
                                raise
                            except Exception as e:  # noqa: BLE001
                                oom = is_oom(e)
                                if oom:
                                    oom_at = batch
                                row.update(status="error", reason=("out of memory: " if oom else "") + _fmt_exc(e))
                                _clear_numbers(row)
                                gc.collect()
                            if row["status"] == "ok":
                                measured.append(row)
                            emit(row)
                    finally:
                        opened.close()
                        del opened
                        gc.collect()
                    if cfg.streams > 1 and measured:
                        streams_pass(measured, backend=backend, model=model, artifact=artifact, precision=precision,
                                     reference=reference, parity_inputs=parity_inputs, cfg=cfg, progress=progress)
                        if writer is not None:
                            writer.write_partial(result)
            del model
            gc.collect()
    except KeyboardInterrupt:
        result.interrupted = True
        progress("interrupted: writing what was measured so far")
    finally:
        result.finished = time.time()
        result.environment["load_average_end"] = load_average()
        result.environment["cpu_pressure_end"] = cpu_pressure()
        result.environment["device"] = device_label(result.environment)
        if writer is not None:
            result.files = writer.write_final(result)
    return result


def _clear_numbers(row: dict[str, Any]) -> None:
    """An errored row shows no speed figure (it may lack its correctness figure)."""
    for k in list(row):
        if k.startswith(("latency_", "compute_", "bare_", "harness_")) or k in ("iterations", "timed_s", "memory_mib"):
            row[k] = None
