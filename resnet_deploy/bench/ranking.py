"""What a run measured, ranked: per network, precision and batch the fastest backend that passed
parity, its speedup over the FP32 baseline, and the rows that lose to FP32 (with the reason where a
runner class knows it). Triton Model Navigator's "best format" choice is the model.

:func:`rank` is a pure function of the rows (no file, no clock, no model). The figure it ranks by is
:data:`RANKED_BY`, ``latency_throughput_ips``: end-to-end images/s (host numpy in, host logits out),
the one figure every backend has (compute-only exists on GPU backends alone, so ranking by it would
compare unlike things).

- **FP32 baseline** of an (arch, batch): the fastest row at ``fp32`` that passed parity (``ok``).
- **Best** of an (arch, precision, batch): the fastest row that passed parity; ``speedup`` = its
  images/s over the FP32 baseline's, ``None`` where no FP32 row passed at that arch and batch.
  A precision whose rows all failed parity or did not run has a best with no backend and a note
  saying so. Rows that failed parity or did not run are never ranked.
- **Overall** best of an (arch, batch): the fastest of the bests across precisions.
- **Flagged**: every measured row at a precision below FP32 whose images/s are under the FP32
  baseline of its (arch, batch), with the reason its runner class gives
  (:meth:`~resnet_deploy.runners.base.Runner.known_slowdown`), where it knows one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..errors import UserError
from ..runners import runner_class
from .rows import BenchRow, as_row

RANKED_BY = "latency_throughput_ips"
"""The row field rows are ranked by: end-to-end images/s, which every backend measures."""
BASELINE_PRECISION = "fp32"

SlowdownReasons = Callable[[str, str], "str | None"]
"""``(backend, precision) -> why that backend is known to be slower than FP32 at that precision, or None``."""


def registry_slowdown(backend: str, precision: str) -> str | None:
    """The reason the backend's runner class gives (:meth:`Runner.known_slowdown`); ``None`` for a backend
    whose module cannot load here or that an older run measured and the registry no longer has."""
    try:
        return runner_class(backend).known_slowdown(backend, precision)
    except (ImportError, UserError):
        return None


@dataclass(frozen=True)
class Best:
    """The fastest passing row of an (arch, precision, batch), against the FP32 baseline of its (arch, batch)."""

    arch: str
    batch: int
    precision: str
    backend: str | None                 # None: no row of this precision passed parity
    throughput_ips: float | None
    speedup_vs_fp32: float | None       # None: no FP32 baseline (or no best)
    baseline_backend: str | None
    baseline_ips: float | None
    note: str = ""


@dataclass(frozen=True)
class SlowerThanFp32:
    """A measured row below FP32 precision that is slower than the FP32 baseline of its (arch, batch)."""

    arch: str
    batch: int
    precision: str
    backend: str
    status: str                         # ok, or failed (parity): flagged either way, ranked only when ok
    throughput_ips: float
    baseline_backend: str
    baseline_ips: float
    ratio: float                        # throughput / baseline (< 1)
    reason: str | None                  # the runner class's known reason, None where none is known


@dataclass(frozen=True)
class Ranking:
    """:func:`rank`'s answer; :meth:`to_dict` is results.json's and ``--json``'s ``"ranking"``."""

    best: list[Best] = field(default_factory=list)
    overall: list[Best] = field(default_factory=list)
    flagged: list[SlowerThanFp32] = field(default_factory=list)
    ranked_by: str = RANKED_BY

    def to_dict(self) -> dict[str, Any]:
        return {"ranked_by": self.ranked_by, "baseline_precision": BASELINE_PRECISION,
                "best": [asdict(b) for b in self.best], "overall": [asdict(b) for b in self.overall],
                "flagged": [asdict(f) for f in self.flagged]}


def _ips(r: BenchRow) -> float | None:
    v = getattr(r, RANKED_BY)
    return v if v is not None and v > 0 else None


def _passing(r: BenchRow) -> bool:
    return r.status == "ok" and r.batch is not None and _ips(r) is not None


def _fastest(rows: Iterable[BenchRow]) -> BenchRow | None:
    return max(rows, key=lambda r: _ips(r) or 0.0, default=None)


def _keys(rows: list[BenchRow]) -> list[tuple[str, str, int]]:
    """Every (arch, precision, batch) the run planned, in row order; a row for all batches (a backend that
    could not open) stands for each batch its arch was measured at."""
    batches: dict[str, list[int]] = {}
    for r in rows:
        if r.batch is not None and r.batch not in batches.setdefault(r.arch, []):
            batches[r.arch].append(r.batch)
    keys: dict[tuple[str, str, int], None] = {}
    for r in rows:
        for b in ([r.batch] if r.batch is not None else batches.get(r.arch, [])):
            keys[(r.arch, r.precision, b)] = None
    return list(keys)


def _why_none(rows: list[BenchRow]) -> str:
    """``"no row passed parity (ort: failed; trt: unavailable)"``."""
    seen = dict.fromkeys(f"{r.backend}: {'failed parity' if r.status == 'failed' else r.status}" for r in rows)
    return "no row passed parity (" + "; ".join(seen) + ")" if seen else "no row passed parity"


def _best(key: tuple[str, str, int], rows: list[BenchRow], baseline: BenchRow | None) -> Best:
    arch, precision, batch = key
    mine = [r for r in rows if r.arch == arch and r.precision == precision and r.batch in (batch, None)]
    top = _fastest(r for r in mine if _passing(r) and r.batch == batch)
    base_ips = _ips(baseline) if baseline is not None else None
    if top is None:
        return Best(arch, batch, precision, None, None, None, baseline and baseline.backend, base_ips, _why_none(mine))
    ips = _ips(top)
    speedup = ips / base_ips if base_ips else None
    note = "" if base_ips else f"no {BASELINE_PRECISION} row passed parity at this batch: no speedup"
    return Best(arch, batch, precision, top.backend, ips, speedup, baseline and baseline.backend, base_ips, note)


def _flags(rows: list[BenchRow], baselines: Mapping[tuple[str, int], BenchRow], reasons: SlowdownReasons) -> list[SlowerThanFp32]:
    out = []
    for r in rows:
        base = baselines.get((r.arch, r.batch))
        ips = _ips(r)
        if base is None or ips is None or not r.measured or r.precision == BASELINE_PRECISION:
            continue
        base_ips = _ips(base) or 0.0
        if ips < base_ips:
            out.append(SlowerThanFp32(r.arch, r.batch, r.precision, r.backend, r.status, ips, base.backend, base_ips,
                                      ips / base_ips, reasons(r.backend, r.precision)))
    return out


def rank(rows: Iterable[BenchRow | Mapping[str, Any]], *, reasons: SlowdownReasons = registry_slowdown) -> Ranking:
    """The ranking of a run's rows (``BenchRow`` s or results.json rows). ``reasons`` gives the known
    reason a (backend, precision) is slower than FP32 (default: the runner classes')."""
    rs = [r for r in map(as_row, rows) if r.loadgen_scenario is None]  # LoadGen's rows are not the timing loop's
    baselines: dict[tuple[str, int], BenchRow] = {}
    for r in rs:
        if r.precision == BASELINE_PRECISION and _passing(r):
            held = baselines.get((r.arch, r.batch))
            if held is None or (_ips(r) or 0.0) > (_ips(held) or 0.0):
                baselines[(r.arch, r.batch)] = r
    best = [_best(k, rs, baselines.get((k[0], k[2]))) for k in _keys(rs)]
    overall: dict[tuple[str, int], Best] = {}
    for b in best:
        held = overall.get((b.arch, b.batch))
        if b.backend is not None and (held is None or (b.throughput_ips or 0.0) > (held.throughput_ips or 0.0)):
            overall[(b.arch, b.batch)] = b
    return Ranking(best=best, overall=list(overall.values()), flagged=_flags(rs, baselines, reasons))


__all__ = ["BASELINE_PRECISION", "Best", "RANKED_BY", "Ranking", "SlowdownReasons", "SlowerThanFp32", "rank",
           "registry_slowdown"]
