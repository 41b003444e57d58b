"""Run the search on a plain INT8 artifact and check the artifact ModelOpt then makes.

:func:`search_plain` scores the plain INT8 ONNX and searches (:mod:`.search`);
:func:`acceptor` returns the check the precision stage runs on the tuned ONNX before it is
published: measured again on the same images, it must meet the goal, and its facts go to the
manifest (``"tuning"``) and the ONNX metadata.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import onnx

from ..errors import UserError
from ..progress import Progress, quiet
from .blocks import units_of
from .images import EvalSet
from .keep import check_nodes
from .measure import Measure
from .search import search


def search_plain(fp32_path: str | os.PathLike[str], plain_path: str | os.PathLike[str], images: EvalSet,
                 target: float, work: Path, *, max_excluded: int | None = None, progress: Progress = quiet,
                 progress_bar_enabled: bool = False) -> tuple[Measure, dict[str, Any]]:
    """(the measure, the search result) for the plain INT8 ONNX ``plain_path`` of ``fp32_path``."""
    t0 = time.perf_counter()
    units = units_of(fp32_path)
    progress(f"measuring FP32 on {len(images.batch)} images ({images.metric}) on ONNX Runtime CPU")
    measure = Measure(fp32_path, images, work, progress_bar_enabled=progress_bar_enabled)
    plain = onnx.load(str(plain_path))
    check_nodes(plain, units, Path(plain_path).name)
    result = search(measure, plain, units, target, max_excluded=max_excluded, progress=progress)
    result["search_seconds"] = round(time.perf_counter() - t0, 3)
    result["evaluations"] = measure.evaluations
    return measure, result


def acceptor(measure: Measure, result: dict[str, Any]) -> Callable[[Path], dict[str, Any]]:
    """The precision stage's check of the tuned ONNX: re-measured, it meets the goal, or nothing is published."""
    def accept(path: Path) -> dict[str, Any]:
        final = measure.score(path, "tuned INT8")
        metric = measure.images.metric
        if final["score"] < result["goal"]:
            raise UserError(f"the tuned INT8 ONNX scores {metric} {final['score']:.2%} on ONNX Runtime, below the "
                            f"goal {result['goal']:.2%} the search reached with the same exclusions; nothing was written")
        facts = {
            "accuracy_target": result["target"], "metric": metric, "images": measure.images.describe(),
            "fp32": measure.reference, "plain_int8": result["plain"], "int8": final, "goal": result["goal"],
            "kept": result["kept"], "max_excluded": result["max_excluded"], "candidates": result["candidates"],
            "steps": result["steps"], "ranking": result["ranking"], "evaluations": measure.evaluations,
            "search_seconds": result["search_seconds"],
        }
        facts["metadata"] = {"accuracy_target": result["target"], "accuracy_metric": metric,
                             "accuracy_fp32": f"{measure.reference:.6f}", "accuracy_plain_int8": f"{result['plain']['score']:.6f}",
                             "accuracy_int8": f"{final['score']:.6f}", "tuned_modules": ",".join(result["kept"]),
                             "accuracy_images": json.dumps(measure.images.describe()["images"])}
        return facts
    return accept


__all__ = ["acceptor", "search_plain", "units_of"]
