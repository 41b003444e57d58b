"""The run: walk a :class:`~.plan.BenchPlan` and fill one :class:`~.rows.BenchRow` per planned row.

The executor names no backend. What it needs to know of one it asks the runner class
(:meth:`Runner.runs_on_gpu`, :meth:`~Runner.extra_warmup`, :meth:`~Runner.streams_unsupported`,
:meth:`~Runner.stream_instance_text`, :meth:`~Runner.set_process_threads`, and on the open
runner ``device_resident`` / ``allocator`` / ``stream`` for the clocks and the memory probe);
what a backend opens comes from an artifact provider (:mod:`.artifacts`); runners come from
:class:`RegistryRunners` (the registry; tests pass their own).

For every planned group (one backend opened once for one architecture and precision), and each
batch size:

1. parity first: the photographs, crops and random tensors of :func:`resnet_deploy.compare.parity_batch`
   through the timed path, against PyTorch FP32 on the same inputs, at the precision's bars
   (a row gets no speed figure without its correctness figure; a failing row is kept and
   marked ``failed``);
2. warm-up, then the timed loop over several rotating input buffers until ``min_time`` and
   ``min_iters`` (end-to-end; plus compute-only on GPU backends);
3. optionally the bare loop on the same call and inputs, for the harness-overhead figure.

With ``streams > 1`` (:meth:`Executor.streams_pass`), after a backend's single-stream rows, that many
fresh instances of it run at once, one thread each, and each row gains the ``streams_*``
figures after the same parity checks, plus one more: each stream's output under load must
match the same input run alone.

A backend that cannot run here gives one ``unavailable`` row with the reason; errors follow
one policy (:class:`OomSkip`): recorded on the row, the sweep goes on, and after an
out-of-memory the larger batches of that backend are ``skipped``.
"""

from __future__ import annotations

import gc
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..compare import compare, parity_batch
from ..errors import BackendUnavailable, UserError
from ..progress import Progress, quiet
from ..runners import TORCH_BACKENDS, Runner, make_runner, open_runner, runner_class, unavailable
from .artifacts import Artifact, ArtifactProvider
from .config import BenchConfig
from .env import usable_cores
from .loadgen import ScenarioRun, loadgen_version, sample_pool
from .perf_analyzer import PerfAnalyzerInstall, best, find_perf_analyzer
from .perf_analyzer import measure as perf_analyzer_sweep
from .plan import PlanGroup
from .rows import BenchRow, TimingFigures
from .timed_calls import MemoryProbe, TimedCalls, is_oom, prepare_timed_calls
from .timing import RssProbe, cpu_pressure, load_average, measure, measure_concurrent, paired_overhead

REFERENCE_BACKEND = TORCH_BACKENDS[0]
"""The FP32 reference every row is compared with: the registry's first backend that runs the torch module itself
(PyTorch eager), on the CPU."""

Emit = Callable[[BenchRow, int], None]
"""``emit(row, planned_rows_it_stands_for)``: the run hands each finished row on (results, progress)."""


def fmt_exc(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:300]}" if not isinstance(e, UserError) else text[:300]


def new_row(run_id: str, group: PlanGroup, batch: int | None) -> BenchRow:
    return BenchRow(run_id=run_id, arch=group.arch, depth=group.depth, precision=group.precision,
                    backend=group.backend, batch=batch, load_avg_1m=(load_average() or [None])[0],
                    cpu_pressure_pct=(cpu_pressure() or {}).get("avg10"))


def random_inputs(batch: int, n: int, seed: int, size: int = 224) -> list[np.ndarray]:
    """``n`` different random buffers (never zeros), at most about 2 GiB together."""
    per = batch * 3 * size * size * 4
    n = max(1, min(n, (2 << 30) // max(per, 1)))
    rng = np.random.default_rng(seed + batch)
    return [rng.standard_normal((batch, 3, size, size), dtype=np.float32) for _ in range(n)]


@dataclass(frozen=True)
class Failure:
    oom: bool
    text: str


class OomSkip:
    """The one error policy of a run of batch sizes: an error is recorded on its row and the run
    goes on; after an out-of-memory at one batch size the larger ones are skipped."""

    def __init__(self, skip_text: str = "out of memory at batch {batch}"):
        self.skip_text = skip_text
        self.oom_at: int | None = None

    def skip_reason(self) -> str | None:
        """Why the next batch is skipped, or ``None`` to run it."""
        return None if self.oom_at is None else self.skip_text.format(batch=self.oom_at)

    def attempt(self, batch: int, step: Callable[[], Any]) -> Failure | None:
        """Run ``step``; ``None`` if it finished, else what went wrong (Ctrl-C is not caught)."""
        try:
            step()
            return None
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            failure = Failure(is_oom(e), fmt_exc(e))
            if failure.oom:
                self.oom_at = batch
            gc.collect()
            return failure


class RegistryRunners:
    """Where the executor gets runners and their facts: the registry (tests pass a subclass)."""

    def unavailable(self, backend: str, precision: str) -> str | None:
        return unavailable(backend, precision)

    def facts(self, backend: str) -> type[Runner]:
        return runner_class(backend)

    def make(self, backend: str, target: Any, precision: str, options: dict[str, Any]) -> Runner:
        return make_runner(backend, target, precision=precision, **options)


@dataclass
class OpenBackend:
    """One backend instance for one (architecture, precision): the open runner, its memory probe, its load time."""

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


@dataclass
class Reference:
    """PyTorch FP32's logits on the parity inputs of one architecture."""

    logits: np.ndarray
    inputs: np.ndarray

    @property
    def size(self) -> int:
        return int(self.inputs.shape[-1])


class Executor:
    """Measures planned groups; ``artifacts`` says what each backend opens, ``runners`` makes the runners."""

    def __init__(self, cfg: BenchConfig, artifacts: ArtifactProvider, *, runners: RegistryRunners | None = None,
                 progress: Progress = quiet, rss: RssProbe | None = None, log_dir: Path | None = None):
        self.cfg, self.artifacts, self.progress = cfg, artifacts, progress
        self.runners = runners or RegistryRunners()
        self.rss = rss or RssProbe()
        self.log_dir = log_dir  # the run's folder: LoadGen's logs go under <log_dir>/loadgen/ (None: a scratch folder)
        self._inputs: dict[tuple[int, int], list[np.ndarray]] = {}
        self._pa: PerfAnalyzerInstall | None = None

    # ------------------------------------------------------------------ facts
    def runs_on_gpu(self, backend: str) -> bool:
        return self.runners.facts(backend).runs_on_gpu(backend)

    def limit_threads(self, backends: list[str], threads: int) -> None:
        """``--threads`` for every backend class whose CPU threads are the process's (the reference's included)."""
        for b in dict.fromkeys([REFERENCE_BACKEND, *backends]):
            self.runners.facts(b).set_process_threads(b, threads)

    def inputs(self, batch: int, size: int) -> list[np.ndarray]:
        if (batch, size) not in self._inputs:
            self._inputs.clear()  # one batch size's buffers at a time
            self._inputs[batch, size] = random_inputs(batch, self.cfg.buffers, self.cfg.seed, size)
        return self._inputs[batch, size]

    # ------------------------------------------------------------------ opening
    def reference(self, arch: str, model: Any) -> Reference:
        self.progress(f"{arch}: PyTorch FP32 reference on the parity inputs")
        with open_runner(REFERENCE_BACKEND, model) as ref:
            _, parity_inputs = parity_batch(model.card.recipe, n_random=self.cfg.parity_random, seed=self.cfg.seed)
            return Reference(ref.infer(parity_inputs), parity_inputs)

    def open_backend(self, backend: str, target: Any, precision: str, *, rss: RssProbe, threads: int | None = None,
                     beside_others: bool = False) -> OpenBackend:
        """Open ``backend`` with its timing options; the memory baseline is taken before it loads."""
        cfg = self.cfg
        options = self.runners.facts(backend).timing_options(
            backend, threads=threads if threads is not None else cfg.threads, tf32=cfg.tf32,
            cuda_graph=cfg.ort_cuda_graph, beside_others=beside_others)
        runner = self.runners.make(backend, target, precision, options)
        memory = MemoryProbe.for_runner(runner, rss)
        memory.baseline()
        t0 = time.perf_counter()
        runner.open()
        return OpenBackend(runner, memory, time.perf_counter() - t0)

    def _open_group(self, group: PlanGroup, model: Any) -> tuple[Artifact | None, OpenBackend | None, str, str]:
        """The artifact and the open backend; or ``(artifact, None, status, reason)`` where it cannot be opened."""
        artifact = None
        try:
            artifact = self.artifacts.artifact(group.arch, group.precision, group.backend, model)
            self.progress(f"{group.arch} {group.precision}: opening {group.backend}")
            return artifact, self.open_backend(group.backend, artifact.target, group.precision, rss=self.rss), "", ""
        except BackendUnavailable as e:  # a backend that cannot run here
            return artifact, None, "unavailable", e.reason
        except UserError as e:  # an artifact that cannot be made or opened (a foreign model, a full disk)
            return artifact, None, "error", str(e)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
            return None, None, "error", ("out of memory: " if is_oom(e) else "") + fmt_exc(e)

    # ------------------------------------------------------------------ one group
    def run_group(self, run_id: str, group: PlanGroup, model: Any, ref: Reference, emit: Emit) -> None:
        """Every batch size of one group, then (``--streams``) the several-streams figures of its measured rows."""
        n_b = len(group.batches)
        why = self.runners.unavailable(group.backend, group.precision)
        if why is not None:
            row = new_row(run_id, group, None)
            row.status, row.reason = "unavailable", why
            emit(row, n_b)
            return
        artifact, opened, status, reason = self._open_group(group, model)
        if opened is None:
            row = new_row(run_id, group, None)
            row.status, row.reason = status, reason
            row.artifact = artifact.path if artifact is not None else None
            emit(row, n_b)
            return
        try:
            measured = self._batches(run_id, group, artifact, opened, ref, emit)
        finally:
            opened.close()
            del opened
            gc.collect()
        if self.cfg.streams > 1 and measured:
            self.streams_pass(measured, artifact.target, ref)

    def _batches(self, run_id: str, group: PlanGroup, artifact: Artifact, opened: OpenBackend, ref: Reference,
                 emit: Emit) -> list[BenchRow]:
        policy = OomSkip()
        measured = []
        for batch in group.batches:
            row = new_row(run_id, group, batch)
            row.artifact, row.build_s, row.artifact_reused = artifact.path, artifact.build_s, artifact.reused
            row.load_s, row.device = opened.load_s, opened.device
            skip = policy.skip_reason()
            if skip is not None:
                row.status, row.reason = "skipped", skip
                emit(row, 1)
                continue
            self.progress(f"{group.arch} {group.precision} {group.backend} batch {batch}")
            error = policy.attempt(batch, lambda: self.measure_row(row, opened, self.inputs(batch, ref.size), ref))
            if error is not None:
                row.status, row.reason = "error", ("out of memory: " if error.oom else "") + error.text
                row.clear_speed()
            if row.status == "ok":
                measured.append(row)
            emit(row, 1)
        return measured

    # ------------------------------------------------------------------ one row
    def measure_row(self, row: BenchRow, opened: OpenBackend, inputs: list[np.ndarray], ref: Reference) -> BenchRow:
        """Parity, then the timed loops, of one batch size on one open backend."""
        compiled_before = opened.runner.compile_stats()
        calls = prepare_timed_calls(opened.runner, row.batch, inputs)  # (a graph backend captures here)
        try:
            opened.memory.row_start()
            res = self._parity(row, calls, ref)
            if self.cfg.loadgen is None:
                self._timings(row, calls, opened.memory, len(inputs))
            else:
                self._loadgen(row, calls, opened, ref.size)
            pa_note = self._perf_analyzer(row, opened.runner) if self.cfg.perf_analyzer is not None else None
            row.memory_mib, row.memory_kind = opened.memory.peak_mib(), opened.memory.label
            self._compile_figures(row, opened.runner, compiled_before, calls)
            row.notes = "; ".join([*opened.notes, *calls.notes, *([pa_note] if pa_note else [])])
            row.status = "ok" if res.passed else "failed"
            if not res.passed:
                row.reason = "parity failed: " + "; ".join(res.failures)
        finally:
            calls.close()
        return row

    @staticmethod
    def _parity(row: BenchRow, calls: TimedCalls, ref: Reference):
        res = compare(ref.logits, calls.infer(ref.inputs), row.precision)
        row.parity_rel_l2, row.parity_max_abs, row.parity_top1 = res.rel_l2, res.max_abs, res.top1_agreement
        row.parity_top5, row.parity_cosine, row.parity_n = res.top5_agreement, res.cosine, res.n
        row.parity_passed, row.parity_failures = res.passed, "; ".join(res.failures)
        row.parity_bar_rel_l2, row.parity_bar_top1 = res.thresholds.rel_l2, res.thresholds.top1
        return res

    def _timings(self, row: BenchRow, calls: TimedCalls, memory: MemoryProbe, n_inputs: int) -> None:
        """End to end; compute only where the calls are device-resident; then the bare-loop check."""
        cfg = self.cfg
        warm = cfg.warmup_for(row.backend)
        t = measure(calls.e2e, n_inputs, warmup=warm, min_time=cfg.min_time, min_iters=cfg.min_iters,
                    max_iters=cfg.max_iters, clock=calls.e2e_clock, sync=calls.e2e_sync)
        memory.sample()
        row.put_latency(TimingFigures.of(t.stats, row.batch))
        row.latency_min_ms, row.latency_std_ms, row.iterations = t.stats.min, t.stats.std, t.iterations
        row.timed_s, row.warmup, row.first_call_s, row.clock = t.timed_wall_s, t.warmup, t.first_call_s, t.clock
        primary, primary_t, sync, clock, before = calls.e2e, t, calls.e2e_sync, calls.e2e_clock, None
        if calls.compute is not None:
            tc = measure(calls.compute, n_inputs, warmup=warm, min_time=cfg.min_time, min_iters=cfg.min_iters,
                         max_iters=cfg.max_iters, clock=calls.compute_clock, before=calls.compute_before,
                         sync=calls.compute_sync)
            memory.sample()
            row.put_compute(TimingFigures.of(tc.stats, row.batch))
            row.compute_clock, row.compute_iterations, row.scope = tc.clock, tc.iterations, "end-to-end + compute-only"
            primary, primary_t, sync = calls.compute, tc, calls.compute_sync
            clock, before = calls.compute_clock, calls.compute_before
        else:
            row.scope = "end-to-end = compute (CPU: no host-device copy)"
        row.measured_by = "timing loop"
        if cfg.bare:
            # about as many calls as the timed loop made, split into alternated harness/bare pairs
            rounds = max(1, min(cfg.bare_rounds, primary_t.iterations // 2))
            m = max(1, primary_t.iterations // (2 * rounds))
            chk = paired_overhead(primary, n_inputs, calls_per_block=m, rounds=rounds, clock=clock, before=before,
                                  sync=sync)
            row.bare_mean_ms, row.harness_mean_ms = chk.bare_mean_ms, chk.harness_mean_ms
            row.harness_overhead_pct = chk.overhead_pct

    def _loadgen(self, row: BenchRow, calls: TimedCalls, opened: OpenBackend, size: int) -> None:
        """The row's speed from an MLPerf LoadGen scenario, through the timed path parity just ran."""
        settings = self.cfg.loadgen
        name = f"loadgen/{row.arch}-{row.precision}-{row.backend}-b{row.batch}"
        row.loadgen_scenario, row.measured_by = settings.scenario, f"MLPerf LoadGen {loadgen_version()} ({settings.label})"
        with ExitStack() as stack:
            root = self.log_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="resnet-deploy-loadgen-")))
            pool = sample_pool(max(settings.sample_count, row.batch), size, self.cfg.seed, opened.runner.input_spec.dtype)
            run = ScenarioRun(settings, calls.infer, pool, row.batch, root / name, warmup=self.cfg.warmup_for(row.backend),
                              progress=lambda msg: self.progress(f"{row.arch} {row.backend} b{row.batch}: {msg}"))
            summary = run.measure()
            opened.memory.sample()
        row.put_loadgen(summary, settings.min_duration_s, name if self.log_dir else None)
        row.warmup, row.scope = self.cfg.warmup_for(row.backend), "end to end, LoadGen's clock (queueing included)"

    def _perf_analyzer(self, row: BenchRow, runner: Runner) -> str | None:
        """NVIDIA perf_analyzer's concurrency sweep against the row's served model, after the row's own figures;
        a note instead where the runner serves nothing (an in-process backend)."""
        endpoint = runner.served_endpoint()
        if endpoint is None:
            return f"perf_analyzer measures a served model; {row.backend} runs in this process"
        settings = self.cfg.perf_analyzer
        if self._pa is None:
            self._pa = find_perf_analyzer(settings.path)
        self.progress(f"{row.arch} {row.backend} b{row.batch}: perf_analyzer, {settings.label}")
        row.perf_analyzer_version = f"perf_analyzer {self._pa.version}"
        try:
            sweep = perf_analyzer_sweep(self._pa, batch=row.batch, settings=settings, **endpoint)
        except UserError as e:  # the row's own figures stand; perf_analyzer's failure is said beside them
            row.perf_analyzer_sweep = f"not measured: {e}"
            return f"perf_analyzer: {e}"
        row.put_perf_analyzer(sweep, best(sweep), row.perf_analyzer_version)
        return None

    @staticmethod
    def _compile_figures(row: BenchRow, runner: Runner, before: dict[str, Any] | None, calls: TimedCalls) -> None:
        compiled = runner.compile_stats()
        if compiled is None:
            return
        graphs = compiled["graphs"] - (before or {}).get("graphs", 0)
        row.compile_graphs = graphs
        row.compile_s = round(compiled["seconds"] - (before or {}).get("seconds", 0.0), 3)
        if graphs > 1:
            calls.notes.append(f"{graphs} graphs compiled for one batch size: parity and timing may not share one")

    # ------------------------------------------------------------------ several streams
    def streams_row(self, row: BenchRow, instances: list[OpenBackend], inputs: list[np.ndarray],
                    ref: Reference) -> BenchRow:
        """Time ``len(instances)`` instances of one backend at once on one batch size; add the
        ``streams_*`` figures to ``row`` (whose single-stream figures are already measured).

        Correctness comes first here too: every instance passes parity on its own, and after the
        concurrent run each stream's last output is compared with the same input run alone, so
        that streams which corrupt each other's buffers fail the row instead of flattering it.
        """
        calls: list[TimedCalls] = []
        try:
            for inst in instances:
                calls.append(prepare_timed_calls(inst.runner, row.batch, inputs, device_resident=False))
            failures = [f"stream {k} alone: " + "; ".join(res.failures) for k, c in enumerate(calls)
                        if not (res := compare(ref.logits, c.infer(ref.inputs), row.precision)).passed]
            alone = [calls[0].infer(x) for x in inputs]
            ct = measure_concurrent([c.e2e for c in calls], len(inputs), warmup=self.cfg.warmup_for(row.backend),
                                    min_time=self.cfg.min_time, min_iters=self.cfg.min_iters)
            failures += ["stream {} under load differs from the same input run alone: ".format(k) + "; ".join(res.failures)
                         for k, (idx, out) in enumerate(ct.last)
                         if not (res := compare(alone[idx], np.asarray(out, dtype=np.float32), row.precision)).passed]
            ips = ct.throughput(row.batch)
            single = row.latency_throughput_ips
            row.streams, row.streams_throughput_ips, row.streams_calls = len(instances), ips, ct.total_calls
            row.streams_p50_ms, row.streams_p99_ms = ct.stats.p50, ct.stats.p99
            row.streams_gain_pct = (ips / single - 1) * 100 if single else None
            if failures:
                row.status, row.parity_passed = "failed", False
                row.parity_failures = "; ".join(f for f in [row.parity_failures, *failures] if f)
                row.reason = "parity failed: " + row.parity_failures
        finally:
            for c in calls:
                c.close()
        return row

    def streams_how(self, n: int, backend: str, gpu: bool, threads: int | None) -> str:
        each = self.runners.facts(backend).stream_instance_text(backend, gpu)
        cpu = f" and {threads} CPU thread{'s' if threads != 1 else ''}" if threads else ""
        return f"{n} streams, each a Python thread with {each}{cpu}, timed end to end"

    def streams_pass(self, rows: list[BenchRow], target: Any, ref: Reference) -> None:
        """The several-streams figure for every measured row of one (architecture, precision, backend).

        Runs after the single-stream rows (whose memory figures it must not disturb) and after
        their instance is closed: ``cfg.streams`` fresh instances, on a CPU each with an equal
        share of the cores (or ``--threads`` each). A failure here is recorded in ``streams_note``;
        the single-stream figures stand.
        """
        backend, n = rows[0].backend, self.cfg.streams
        facts = self.runners.facts(backend)
        why = facts.streams_unsupported(backend)
        if why is not None:
            for r in rows:
                r.streams_note = why
            return
        gpu = self.runs_on_gpu(backend)
        per = None if gpu else (self.cfg.threads or max(1, usable_cores() // n))
        threads_before = None if per is None else facts.set_process_threads(backend, per)
        instances: list[OpenBackend] = []
        try:
            self._open_instances(rows[0], target, per, instances)
            self._streams_rows(rows, instances, ref, self.streams_how(n, backend, gpu, per))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - could not open the instances
            text = e.reason if isinstance(e, BackendUnavailable) else fmt_exc(e)
            for r in rows:
                if not r.streams_note:
                    r.streams_note = f"could not open {n} instances: " + ("out of memory: " if is_oom(e) else "") + text
        finally:
            for inst in instances:
                inst.close()
            instances.clear()
            if threads_before is not None:
                facts.set_process_threads(backend, threads_before)
            gc.collect()

    def _open_instances(self, first: BenchRow, target: Any, per: int | None, instances: list[OpenBackend]) -> None:
        n = self.cfg.streams
        scratch = RssProbe()  # the rows' memory figures are taken; these instances are not measured for memory
        for k in range(n):
            self.progress(f"{first.arch} {first.precision} {first.backend}: opening instance {k + 1} of {n} "
                          "for several streams")
            instances.append(self.open_backend(first.backend, target, first.precision, rss=scratch, threads=per,
                                               beside_others=True))

    def _streams_rows(self, rows: list[BenchRow], instances: list[OpenBackend], ref: Reference, how: str) -> None:
        n = len(instances)
        policy = OomSkip(skip_text=f"skipped: out of memory with {n} streams at batch {{batch}}")
        for row in rows:
            skip = policy.skip_reason()
            if skip is not None:
                row.streams_note = skip
                continue
            self.progress(f"{row.arch} {row.precision} {row.backend} batch {row.batch}: {n} streams")
            error = policy.attempt(row.batch, lambda: self.streams_row(row, instances, self.inputs(row.batch, ref.size),
                                                                       ref))
            row.streams_note = how if error is None else ("out of memory: " if error.oom else "error: ") + error.text


__all__ = ["Executor", "Failure", "OomSkip", "OpenBackend", "REFERENCE_BACKEND", "Reference", "RegistryRunners", "fmt_exc",
           "new_row", "random_inputs"]
