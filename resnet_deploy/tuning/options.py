"""What an accuracy-target search is asked: :class:`TuningOptions` (``quantize --accuracy-target`` and its options)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class TuningOptions:
    """``accuracy_target``: the fraction of FP32's top-1 the INT8 ONNX must keep (``None``: no search);
    ``data``: the images it is measured on (``None``: the calibration images); ``labels``: class
    names mapping ``data``'s folders; ``limit``: an evenly spaced subset of this many images;
    ``max_excluded``: the most blocks the search may keep in high precision (``None``: a quarter)."""

    accuracy_target: float | None = None
    data: str | os.PathLike[str] | None = None
    labels: str | os.PathLike[str] | None = None
    limit: int | None = None
    max_excluded: int | None = None

    def given_without_target(self) -> list[str]:
        """The options set although they only mean something with ``--accuracy-target`` (CLI spellings)."""
        return [flag for flag, value in (("--data", self.data), ("--labels", self.labels), ("--limit", self.limit),
                                         ("--max-excluded", self.max_excluded)) if value is not None]

    def check(self) -> None:
        """Refuse a target or a bound that cannot be met, before any slow work."""
        if self.accuracy_target is None:
            given = self.given_without_target()
            if given:
                raise UserError(f"{', '.join(given)} set(s) what --accuracy-target is measured on; give "
                                "--accuracy-target too")
            return
        if not 0 < self.accuracy_target <= 1:
            raise UserError(f"--accuracy-target is a fraction of FP32's top-1 in (0, 1], e.g. 0.99; got "
                            f"{self.accuracy_target}")
        if self.max_excluded is not None and self.max_excluded < 0:
            raise UserError(f"--max-excluded must be at least 0, got {self.max_excluded}")


__all__ = ["TuningOptions"]
