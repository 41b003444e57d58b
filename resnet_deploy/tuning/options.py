"""What an accuracy-target search is asked: :class:`TuningOptions` (``quantize --accuracy-target`` and its options)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

DEFAULT_SCORE_ENGINES = ("openvino", "ort")   # ONNX runners that run an INT8 Q/DQ ONNX on the CPU, fastest first
SCORE_ENGINES = (*DEFAULT_SCORE_ENGINES, "trt", "trt-rtx")   # TensorRT: an engine built from each candidate, on a GPU
SEARCHES = ("auto", "error", "greedy")  # --search: error-ranked, greedy, or error-ranked then greedy


@dataclass(frozen=True)
class TuningOptions:
    """``accuracy_target``: the fraction of FP32's top-1 the INT8 ONNX must keep (``None``: no search);
    ``data``: the images it is measured on (``None``: the calibration images); ``labels``: class
    names mapping ``data``'s folders; ``limit``: an evenly spaced subset of this many images;
    ``max_excluded``: the most blocks and layers the search may keep in high precision, residual Adds
    not counted (``None``: half the convolutions);
    ``holdout``: images the search never sees, to check the tuned model on: a fraction in (0, 1) of
    ``data``'s images (split off deterministically) or a second folder (``None``: no check);
    ``score_engine``: the runner the search scores candidates on (``None``: the fastest available);
    ``search``: ``error`` (layers ranked by the logits' error they leave, kept in that order, then put back),
    ``greedy`` (blocks, then layers, kept while they raise the score), or ``auto`` (error, then greedy where it
    fails)."""

    accuracy_target: float | None = None
    data: str | os.PathLike[str] | None = None
    labels: str | os.PathLike[str] | None = None
    limit: int | None = None
    max_excluded: int | None = None
    holdout: float | str | os.PathLike[str] | None = None
    score_engine: str | None = None
    search: str = "auto"

    @property
    def holdout_fraction(self) -> float | None:
        """``--holdout 0.25`` -> 0.25; ``None`` when it is not given or names a folder."""
        return _fraction(self.holdout)

    def given_without_target(self) -> list[str]:
        """The options set although they only mean something with ``--accuracy-target`` (CLI spellings)."""
        return [flag for flag, value in (("--data", self.data), ("--labels", self.labels), ("--limit", self.limit),
                                         ("--max-excluded", self.max_excluded), ("--holdout", self.holdout),
                                         ("--score-engine", self.score_engine),
                                         ("--search", None if self.search == "auto" else self.search))
                if value is not None]

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
        if self.holdout is not None:
            fraction = self.holdout_fraction
            if fraction is not None and not 0 < fraction < 1:
                raise UserError(f"--holdout is the fraction of the images kept from the search, in (0, 1) (e.g. 0.25), "
                                f"or a folder of other images; got {self.holdout}")
            if fraction is None and not Path(self.holdout).expanduser().is_dir():
                raise UserError(f"--holdout is a fraction in (0, 1) or a folder of images; {self.holdout} is neither")
        if self.search not in SEARCHES:
            raise UserError(f"--search is one of {', '.join(SEARCHES)}, got {self.search!r}")
        if self.score_engine is not None and self.score_engine not in SCORE_ENGINES:
            raise UserError(f"--score-engine runs the search's candidates: one of {', '.join(SCORE_ENGINES)}, "
                            f"got {self.score_engine!r}")


def _fraction(value: float | str | os.PathLike[str] | None) -> float | None:
    if value is None or isinstance(value, os.PathLike):
        return None
    try:
        return float(value)
    except ValueError:
        return None


__all__ = ["DEFAULT_SCORE_ENGINES", "SCORE_ENGINES", "SEARCHES", "TuningOptions"]
