"""A benchmark run: plan -> run -> report.

:func:`run_bench` makes the plan (:func:`.plan.make_plan`: the rows, from the options alone), runs it
with an :class:`~.executor.Executor` (which names no backend; what each backend opens comes from an
artifact provider, :class:`~.artifacts.PipelineArtifacts` unless one is given) and writes the
report (:class:`~.report.ResultWriter`: results.json and results.csv after every row, report.md and
the plots at the end). Ctrl-C stops the run; what was measured is written all the same.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import Terminated
from ..progress import Progress, quiet
from .artifacts import ArtifactProvider, PipelineArtifacts
from .config import BenchConfig
from .env import device_label, environment
from .executor import Executor, RegistryRunners
from .plan import BenchPlan, make_plan
from .report import ResultWriter, default_run_id
from .results_folder import ResultsFolder
from .rows import BenchRow
from .timing import RssProbe, cpu_pressure, load_average


@dataclass
class BenchResult:
    run_id: str
    out_dir: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[BenchRow] = field(default_factory=list)
    interrupted: bool = False
    terminated: bool = False          # the interruption was SIGTERM (exit 143), not Ctrl-C (130)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    files: dict[str, str] = field(default_factory=dict)


class _Recorder:
    """Takes each finished row: into the result, to disk, to the caller's ``on_row``."""

    def __init__(self, result: BenchResult, writer: ResultWriter | None,
                 on_row: Callable[[BenchRow, int], None] | None):
        self.result, self.writer, self.on_row, self.done = result, writer, on_row, 0

    def __call__(self, row: BenchRow, count: int) -> None:
        self.result.rows.append(row)
        self.done += count
        self.save()
        if self.on_row is not None:
            self.on_row(row, self.done)

    def save(self) -> None:
        if self.writer is not None:
            self.writer.write_partial(self.result)


def execute_plan(plan: BenchPlan, executor: Executor, run_id: str, record: _Recorder,
                 progress: Progress = quiet) -> None:
    """Every group of ``plan``, one architecture's model and reference at a time."""
    cfg = executor.cfg
    for depth, arch in plan.archs():
        progress(f"{arch}: building the PyTorch FP32 reference (seed {cfg.seed})")
        model = executor.artifacts.model(arch)
        ref = executor.reference(arch, model)
        for group in plan:
            if group.arch == arch and group.depth == depth:
                executor.run_group(run_id, group, model, ref, record)
                if cfg.streams > 1:
                    record.save()  # the several-streams figures, added after the rows were written
        del model
        gc.collect()


def run_bench(cfg: BenchConfig, *, out: str | os.PathLike[str] = "benchmarks/results", run_id: str | None = None,
              progress: Progress = quiet, on_row: Callable[[BenchRow, int], None] | None = None,
              command: str | None = None, write: bool = True, artifacts: ArtifactProvider | None = None,
              runners: RegistryRunners | None = None, force: bool = False) -> BenchResult:
    """Run the sweep and write ``<out>/<run_id>/`` (results.json, results.csv, report.md, plots).

    ``on_row(row, n_planned_rows_done)`` is called after every row (the CLI's progress bar).
    ``artifacts`` (default: the pipeline's, :class:`PipelineArtifacts`) gives the models and
    artifacts; ``runners`` (default: the registry's) makes the runners. On Ctrl-C the sweep
    stops, everything measured so far is written, and the result has ``interrupted=True``.

    A ``run_id`` whose folder already holds results is refused unless ``force``; a forced run replaces
    them only once it is complete (stopped before, its rows go to ``<run_id>.partial/`` and the earlier
    results stay: :class:`~.results_folder.ResultsFolder`).
    """
    cfg.validate()
    plan = make_plan(cfg)
    artifacts = artifacts or PipelineArtifacts(out_dir=cfg.artifacts, seed=cfg.seed, max_batch=max(cfg.batches),
                                               progress=progress, served_url=cfg.served_url)
    rss = RssProbe()
    executor = Executor(cfg, artifacts, runners=runners, progress=progress, rss=rss)
    if cfg.threads:
        executor.limit_threads(list(cfg.engines), cfg.threads)
    env = environment(command)
    run_id = run_id or default_run_id(env)
    folder = ResultsFolder(Path(out) / run_id, force=force, what=f"the results of run {run_id}",
                           fix="choose another --run-id, or pass --force to replace them") if write else None
    executor.log_dir = folder.dir if folder is not None else None  # LoadGen's logs go into the run's folder
    writer = ResultWriter(folder.dir) if folder is not None else None
    result = BenchResult(run_id=run_id, out_dir=Path(out) / run_id, config=asdict(cfg), environment=env)
    result.environment["host_memory_probe"] = rss.method
    complete = False
    try:
        execute_plan(plan, executor, run_id, _Recorder(result, writer, on_row), progress)
        complete = True
    except KeyboardInterrupt as e:
        result.interrupted, result.terminated = True, isinstance(e, Terminated)
        progress("interrupted: writing what was measured so far")
    finally:
        result.finished = time.time()
        result.environment["load_average_end"] = load_average()
        result.environment["cpu_pressure_end"] = cpu_pressure()
        result.environment["device"] = device_label(result.environment)
        if folder is not None and writer is not None:
            try:
                result.files = writer.write_final(result)
            finally:
                result.out_dir = folder.close(complete)
                result.files = {k: str(result.out_dir / Path(v).name) for k, v in result.files.items()}
            if folder.replacing and not complete:
                progress(f"the earlier results of {run_id} stay in {folder.final}; this run's are in {result.out_dir}")
    return result


__all__ = ["BenchResult", "execute_plan", "run_bench"]
