"""Run the search on a plain INT8 artifact and check the artifact ModelOpt then makes.

:func:`search_plain` scores the plain INT8 ONNX and searches (:mod:`.search`); :func:`confirm`
has ModelOpt quantize again with the units found and measures that real model: when it scores
below the goal (the search's surgery and the re-quantization can differ by an image), the search
goes on from the real model (:func:`.search.resume`) and quantizes again. :func:`holdout_scores`
scores plain and tuned INT8 on images the search never saw. :func:`acceptor` returns the check the
precision stage runs on the tuned ONNX before it is published: measured again on the same images,
it must meet the goal, and its facts go to the manifest (``"tuning"``) and the ONNX metadata.
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
from .blocks import ADDS, Unit, residual_adds, units_of
from .error_ranked import search_by_error
from .images import EvalSet
from .keep import check_nodes, keep_high_precision
from .measure import Measure, pick_engine
from .search import resume, search

MAX_ROUNDS = 3      # ModelOpt re-quantizations a search may go on from before it gives up
Requantize = Callable[[list[str], int], tuple[Path, dict[str, Any]]]


def search_units(fp32_path: str | os.PathLike[str]) -> list[Unit]:
    """What the search keeps out of INT8: the stem, the blocks, the classifier (:func:`.blocks.units_of`) and one
    unit of every residual Add (:func:`.blocks.residual_adds`); the final pass splits them into layers and Adds."""
    units = units_of(fp32_path)
    adds = residual_adds(units)
    return units + ([adds] if adds else [])


def is_add(name: str) -> bool:
    """A kept name that is residual Adds (``residual-adds``, ``layer2.1.add``), not a torch module ModelOpt can exclude."""
    return name == ADDS or name.endswith(".add")


def modules_to_exclude(kept: list[str]) -> list[str]:
    """The kept names ModelOpt excludes (torch module paths); the Adds are kept by surgery on its output."""
    return [n for n in kept if not is_add(n)]


def keep_adds(path: Path, fp32_path: str | os.PathLike[str], kept: list[str]) -> list[str]:
    """Take the Q/DQ off the inputs of the kept residual Adds in the INT8 ONNX ``path``, in place; their nodes.

    ModelOpt cannot leave an Add unquantized while the convolution that reads the same tensor stays INT8 (it
    places one Q/DQ on the tensor for both), so the Adds are kept by the same surgery the search measured.
    """
    names = [n for n in kept if is_add(n)]
    if not names:
        return []
    adds = residual_adds(units_of(fp32_path))
    chosen = list(adds.parts) if ADDS in names else [u for u in adds.parts if u.name in names]
    onnx.save(keep_high_precision(onnx.load(str(path)), chosen), str(path))
    return [a for u in chosen for a in u.adds]


def search_plain(fp32_path: str | os.PathLike[str], plain_path: str | os.PathLike[str], images: EvalSet,
                 target: float, work: Path, *, max_excluded: int | None = None, engine: str | None = None,
                 strategy: str = "auto", progress: Progress = quiet,
                 progress_bar_enabled: bool = False) -> tuple[Measure, dict[str, Any]]:
    """(the measure, the search result) for the plain INT8 ONNX ``plain_path`` of ``fp32_path``, scored on ``engine``.

    ``strategy`` (``--search``): ``error`` (:func:`.error_ranked.search_by_error`), ``greedy``
    (:func:`.search.search`), or ``auto``: error-ranked, and the greedy search where it fails
    (``result["fallback"]`` says why)."""
    t0 = time.perf_counter()
    units = search_units(fp32_path)
    measure = Measure(fp32_path, images, work, backend=pick_engine(engine), progress_bar_enabled=progress_bar_enabled)
    progress(f"measured FP32 on {len(images.batch)} images ({images.metric}) on {measure.engine_name}")
    plain = onnx.load(str(plain_path))
    check_nodes(plain, units, Path(plain_path).name)
    fallback = None
    if strategy in ("auto", "error"):
        try:
            result = search_by_error(measure, plain, units, target, max_excluded=max_excluded, progress=progress)
        except UserError as e:
            if strategy == "error":
                raise
            fallback = str(e)
            progress(f"the error-ranked search did not meet it ({e}); trying the greedy search")
    if strategy == "greedy" or fallback is not None:
        try:
            result = search(measure, plain, units, target, max_excluded=max_excluded, progress=progress)
        except UserError as e:
            if fallback is None:
                raise
            first = fallback.split(" not met: ", 1)[-1]
            raise UserError(f"{e} (the error-ranked search did not meet it either: {first})") from None
        if fallback is not None:
            result["fallback"] = fallback
    result["search_seconds"] = round(time.perf_counter() - t0, 3)
    result["evaluations"] = measure.evaluations
    return measure, result


def confirm(measure: Measure, fp32_path: str | os.PathLike[str], result: dict[str, Any], requantize: Requantize, *,
            progress: Progress = quiet) -> tuple[tuple[Path, dict[str, Any]] | None, dict[str, Any]]:
    """(ModelOpt's INT8 with the units kept out and its conversion facts, or ``None`` when nothing is kept; the result).

    ``requantize(kept, round)`` quantizes again with ``kept`` excluded. Its model is measured; below the goal,
    the search goes on from it (:func:`.search.resume`, which raises :class:`UserError` when it cannot meet
    the goal), at most :data:`MAX_ROUNDS` times. ``result["rounds"]`` records each re-quantization's score.
    """
    t0 = time.perf_counter()
    units = search_units(fp32_path)
    rounds: list[dict[str, Any]] = []
    for i in range(MAX_ROUNDS):
        if not result["kept"]:
            return None, result
        made = requantize(list(result["kept"]), i)
        real = measure.score(made[0], "re-quantized INT8")
        rounds.append({"kept": list(result["kept"]), "search": result["final"]["score"], "real": real["score"]})
        result = {**result, "rounds": rounds,
                  "search_seconds": round(result["search_seconds"] + time.perf_counter() - t0, 3),
                  "evaluations": measure.evaluations}
        t0 = time.perf_counter()
        if real["score"] >= result["goal"]:
            return made, {**result, "final": real}
        progress(f"ModelOpt's re-quantization with {', '.join(result['kept'])} kept scores {real['score']:.2%}, below "
                 f"the goal {result['goal']:.2%} the search's own model reached ({result['final']['score']:.2%}): going "
                 "on from the real model")
        result = resume(measure, onnx.load(str(made[0])), units, result, real, progress=progress)
    raise UserError(f"--accuracy-target {result['target']:g} not met: ModelOpt's re-quantization scored below the goal "
                    f"{result['goal']:.2%} {MAX_ROUNDS} times after the search met it "
                    f"({', '.join(format(r['real'], '.2%') for r in rounds)}); nothing was written")


def holdout_scores(fp32_path: str | os.PathLike[str], held: EvalSet, plain: Path, tuned: Path, work: Path, *,
                   engine: str | None = None, progress: Progress = quiet) -> dict[str, Any]:
    """FP32, plain INT8 and tuned INT8 on the held-out images, and whether tuning helped there."""
    progress(f"scoring plain and tuned INT8 on {len(held.batch)} held-out images the search never saw")
    m = Measure(fp32_path, held, work, backend=pick_engine(engine))
    p, t = m.score(plain, "plain INT8, held-out"), m.score(tuned, "tuned INT8, held-out")
    better = t["score"] > p["score"]
    verdict = ("better than plain INT8 on the held-out images" if better else
               "NOT better than plain INT8 on the held-out images: the search fitted its own images "
               "(give it more or other images)")
    if tuned == plain:
        verdict = "plain INT8 as it is (nothing kept): the same model on the held-out images"
    progress(f"held-out {held.metric}: plain INT8 {p['score']:.2%}, tuned {t['score']:.2%}: {verdict}")
    return {"images": held.describe(), "fp32": m.reference, "plain_int8": p, "int8": t,
            "better_than_plain": better, "verdict": verdict}


def acceptor(measure: Measure, result: dict[str, Any],
             holdout: dict[str, Any] | None = None) -> Callable[[Path], dict[str, Any]]:
    """The precision stage's check of the tuned ONNX: re-measured, it meets the goal, or nothing is published."""
    def accept(path: Path) -> dict[str, Any]:
        final = measure.score(path, "tuned INT8")
        metric = measure.images.metric
        if final["score"] < result["goal"]:
            raise UserError(f"the tuned INT8 ONNX scores {metric} {final['score']:.2%} on {measure.engine_name}, below the "
                            f"goal {result['goal']:.2%} it scored before publishing; nothing was written")
        facts = {
            "accuracy_target": result["target"], "metric": metric, "images": measure.images.describe(),
            "fp32": measure.reference, "plain_int8": result["plain"], "int8": final, "goal": result["goal"],
            "kept": result["kept"], "max_excluded": result["max_excluded"], "candidates": result["candidates"],
            "steps": result["steps"], "ranking": result["ranking"], "evaluations": measure.evaluations,
            "search_seconds": result["search_seconds"], "score_engine": measure.engine_name,
            "rounds": result.get("rounds", []), "resumed": result.get("resumed", []),
            "put_back": result.get("put_back", []), "layer_steps": result.get("layer_steps", []),
            "search": result["search"], "fallback": result.get("fallback"),
        }
        if holdout is not None:
            facts["holdout"] = holdout
        facts["metadata"] = {"accuracy_target": result["target"], "accuracy_metric": metric,
                             "accuracy_fp32": f"{measure.reference:.6f}", "accuracy_plain_int8": f"{result['plain']['score']:.6f}",
                             "accuracy_int8": f"{final['score']:.6f}", "tuned_modules": ",".join(result["kept"]),
                             "accuracy_images": json.dumps(measure.images.describe()["images"]),
                             "accuracy_engine": measure.engine_name}
        if holdout is not None:
            facts["metadata"].update(accuracy_holdout_plain_int8=f"{holdout['plain_int8']['score']:.6f}",
                                     accuracy_holdout_int8=f"{holdout['int8']['score']:.6f}",
                                     accuracy_holdout_images=json.dumps(holdout["images"]["images"]))
        return facts
    return accept


__all__ = ["MAX_ROUNDS", "acceptor", "confirm", "holdout_scores", "is_add", "keep_adds", "modules_to_exclude", "search_plain", "search_units", "units_of"]
