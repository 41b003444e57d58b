"""The greedy search for INT8 that meets an accuracy target.

Start from plain INT8 (with the user's own ``--exclude``); if its score is below
``target x FP32``, rank the units once (:func:`.diagnose.rank`), then keep them in high
precision in rank order, re-measuring after each (the first is the ranking's own measurement): a
unit whose addition does not improve the score (higher, or equal with a lower output error), or
that would leave fewer than half the convolutions with INT8 input (no longer an INT8 model), is
left in INT8 and the next one is tried. At the first set that meets the target, a final pass
splits the kept units into layers and residual Adds (:func:`.blocks.layer_units`) and puts each
back into INT8, last kept first, when the target still holds without it. It fails, saying how far
it got, when the target needs more than ``max_excluded`` units, or when the ranking runs out
first. :func:`resume` goes on from a real model (ModelOpt's re-quantization) that scored below the
goal. Greedy: the set it finds is small, not proven the smallest.
"""

from __future__ import annotations

from typing import Any

import onnx

from ..errors import UserError
from ..progress import Progress, quiet
from .blocks import Unit, layer_units
from .diagnose import candidates, rank
from .keep import int8_conv_share, keep_high_precision
from .measure import Measure


def default_max_excluded(n_candidates: int) -> int:
    """A quarter of the units that can be kept out of INT8 (at least one)."""
    return max(1, n_candidates // 4)


def _pct(x: float) -> str:
    return f"{x:.2%}"


def search(measure: Measure, int8: onnx.ModelProto, units: list[Unit], target: float, *,
           max_excluded: int | None = None, progress: Progress = quiet) -> dict[str, Any]:
    """Ranked units to keep in high precision, greedily, until the score reaches ``target x FP32``."""
    if not 0 < target <= 1:
        raise UserError(f"--accuracy-target is a fraction of FP32's score in (0, 1], got {target}")
    goal = target * measure.reference
    metric = measure.images.metric
    progress("scoring plain INT8")
    plain = measure.score(int8, "plain INT8")
    found = candidates(int8, units)
    limit = default_max_excluded(len(found)) if max_excluded is None else max_excluded
    if limit < 0:
        raise UserError(f"--max-excluded must be at least 0, got {max_excluded}")
    result: dict[str, Any] = {"target": target, "goal": goal, "metric": metric, "fp32": measure.reference,
                              "plain": plain, "max_excluded": limit, "candidates": len(found), "steps": [],
                              "ranking": [], "kept": []}
    if plain["score"] >= goal:
        progress(f"plain INT8 meets the target: {metric} {_pct(plain['score'])} >= {_pct(goal)}")
        return {**result, "met": True, "final": plain}
    ranking = rank(measure, int8, units, plain, progress=progress) if limit else []
    result["ranking"] = ranking
    return _greedy(measure, int8, units, ranking, [], plain, result, progress)


def resume(measure: Measure, real: onnx.ModelProto, units: list[Unit], result: dict[str, Any], score: dict[str, Any], *,
           progress: Progress = quiet) -> dict[str, Any]:
    """Go on from a real model (ModelOpt's re-quantization of ``result["kept"]``) that scored ``score``, below the goal.

    The units not kept yet are ranked again on the real model, and kept greedily on top of it, as
    :func:`search` does; the result's steps go on (marked ``"resumed"``), ``"final"`` is the new set's score.
    """
    by_name = {sub.name: sub for u in units for sub in [u, *layer_units(u, real)]}
    kept = [by_name[n] for n in result["kept"]]
    rest = [u for u in units if u.name not in set(result["kept"])]
    left = result["max_excluded"] - len(kept)
    ranking = rank(measure, real, rest, score, progress=progress) if left > 0 else []
    result = {**result, "met": False, "final": score, "steps": list(result["steps"]),
              "resumed": [*result.get("resumed", []), {"kept": [u.name for u in kept], "search": result["final"],
                                                         "real": score, "ranking": ranking}]}
    return _greedy(measure, real, units, ranking, kept, score, result, progress)


def _put_back(measure: Measure, base: onnx.ModelProto, kept: list[Unit], start: int, last: dict[str, Any],
              result: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The last pass: every layer of the units this search kept (``kept[start:]``), the last kept first, goes back
    into INT8 when the goal still holds without it. A unit keeps its name when all its layers stay out of INT8."""
    fixed, added = kept[:start], kept[start:]
    pieces = {u.name: layer_units(u, base) for u in added}
    current = [sub for u in added for sub in pieces[u.name]]
    steps = []
    for sub in [sub for u in reversed(added) for sub in pieces[u.name]]:
        trial = [x for x in current if x is not sub]
        progress(f"final pass: {sub.name} back into INT8?")
        now = measure.score(keep_high_precision(base, fixed + trial), f"{sub.name} back")
        ok = now["score"] >= result["goal"]
        steps.append({"back_to_int8": sub.name, **now, "accepted": ok})
        if ok:
            current, last = trial, now
    left = {x.name for x in current}
    names = [u.name for u in fixed]
    for u in added:
        mine = [x.name for x in pieces[u.name] if x.name in left]
        names += [u.name] if len(mine) == len(pieces[u.name]) else mine
    return {**result, "met": True, "kept": names, "final": last, "put_back": [*result.get("put_back", []), *steps]}


def _greedy(measure: Measure, base: onnx.ModelProto, units: list[Unit], ranking: list[dict[str, Any]], kept: list[Unit],
            last: dict[str, Any], result: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Keep ``ranking``'s units (each measured alone on top of ``base`` and ``kept``) while they improve the score."""
    by_name = {u.name: u for u in units}
    limit, goal, metric = result["max_excluded"], result["goal"], result["metric"]
    resumed = bool(result.get("resumed"))
    start = len(kept)
    if last["score"] >= goal:
        return {**result, "met": True, "kept": [u.name for u in kept], "final": last}
    for row in ranking:
        if len(kept) >= limit:
            break
        trial = kept + [by_name[row["unit"]]]
        model = keep_high_precision(base, trial)
        int8_convs, convs = int8_conv_share(model)
        if 2 * int8_convs < convs:
            result["stopped"] = f"keeping {row['unit']} would leave {int8_convs} of {convs} convolutions with INT8 input"
            continue
        if len(kept) > start:
            progress(f"trying {', '.join(u.name for u in trial)} in high precision")
            now = measure.score(model, f"{len(trial)} kept")
        else:  # nothing accepted since the ranking, which measured this very model (base with this unit kept)
            now = {k: row[k] for k in ("score", "agreement", "rel_l2", "cosine", "finite")}
        better = (now["score"], -now["rel_l2"]) > (last["score"], -last["rel_l2"])
        result["steps"].append({"kept": [u.name for u in trial], **now, "int8_convs": int8_convs, "convs": convs,
                                "accepted": better, **({"resumed": True} if resumed else {})})
        if not better:
            continue
        kept, last = trial, now
        if last["score"] >= goal:
            return _put_back(measure, base, kept, start, last, result, progress)
    names = ", ".join(u.name for u in kept) or "none"
    if len(kept) >= limit:
        why = f"--max-excluded {limit} reached: raise --max-excluded or lower the target"
    elif result.get("stopped"):
        why = f"{result['stopped']}: lower the target"
    else:
        why = "no further block improved it: lower the target or check the images"
    if resumed:
        why = ("ModelOpt's re-quantization scored below the search's own model and the search went on from it; "
               + why)
    target, plain = result["target"], result["plain"]
    raise UserError(f"--accuracy-target {target:g} not met: {metric} {_pct(last['score'])} with {len(kept)} unit(s) kept "
                    f"in high precision ({names}) is below {_pct(goal)} (= {target:g} x FP32 {_pct(measure.reference)}; "
                    f"plain INT8 {_pct(plain['score'])}); {why}")


__all__ = ["default_max_excluded", "resume", "search"]
