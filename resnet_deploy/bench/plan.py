"""The plan of a benchmark run: the rows it will measure, from the options alone.

Nothing is loaded, built or opened: ``resnet-deploy bench --plan`` prints it, and the run
(:mod:`.executor`) walks it. A :class:`PlanGroup` is what opens one backend once: one
(architecture, precision, backend) and its batch sizes; :meth:`BenchPlan.rows` flattens the
groups into one :class:`PlannedRow` per (depth, precision, backend, batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterator

from ..model import resolve_arch
from .config import BenchConfig


@dataclass(frozen=True)
class PlannedRow:
    arch: str
    depth: Any
    precision: str
    backend: str
    batch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PlanGroup:
    """One backend opened once for one (architecture, precision), then timed at each batch size."""

    arch: str
    depth: Any
    precision: str
    backend: str
    batches: tuple[int, ...]

    def rows(self) -> list[PlannedRow]:
        return [PlannedRow(self.arch, self.depth, self.precision, self.backend, b) for b in self.batches]


@dataclass(frozen=True)
class BenchPlan:
    groups: tuple[PlanGroup, ...]

    def __len__(self) -> int:
        return sum(len(g.batches) for g in self.groups)

    def __iter__(self) -> Iterator[PlanGroup]:
        return iter(self.groups)

    def rows(self) -> list[PlannedRow]:
        return [r for g in self.groups for r in g.rows()]

    def archs(self) -> list[tuple[Any, str]]:
        """``(depth, arch)`` in plan order, once each: the models the run loads."""
        return list(dict.fromkeys((g.depth, g.arch) for g in self.groups))


def make_plan(cfg: BenchConfig) -> BenchPlan:
    """depths x precisions x engines, each with every batch size, in the order the run measures them."""
    groups = []
    for depth in cfg.depths:
        arch = resolve_arch(depth, False)
        for precision in cfg.precisions:
            for backend in cfg.engines:
                groups.append(PlanGroup(arch, depth, precision, backend, tuple(cfg.batches)))
    return BenchPlan(tuple(groups))


def plan_size(cfg: BenchConfig) -> int:
    """How many rows a run of ``cfg`` plans (the CLI's progress bar total)."""
    return len(make_plan(cfg))


__all__ = ["BenchPlan", "PlanGroup", "PlannedRow", "make_plan", "plan_size"]
