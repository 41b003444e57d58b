"""The greedy search for INT8 that meets an accuracy target.

Start from plain INT8 (with the user's own ``--exclude``); if its score is below
``target x FP32``, rank the units once (:func:`.diagnose.rank`), then keep them in high
precision in rank order, re-measuring after each (the first is the ranking's own measurement): a
unit whose addition does not improve the score (higher, or equal with a lower output error), or
that would leave fewer than half the convolutions with INT8 input (no longer an INT8 model), is
left in INT8 and the next one is tried. When the ranking runs out below the target, the layer pass
goes on one layer or residual Add at a time (:func:`.blocks.layer_units`): each step tries every one
not kept yet and keeps the best (one evaluation per layer left), as long as it improves the score.
At the first set that meets the target, a final pass splits the kept units into layers and residual
Adds and puts each back into INT8, last kept first, when the target still holds without it. It
fails, saying how far it got, when the target needs more than ``max_excluded`` blocks and layers
(residual Adds do not count: they cost no convolution its INT8 input), or when no layer improves
the score any more. :func:`resume` goes on from a real model (ModelOpt's re-quantization) that scored below the
goal. Greedy: the set it finds is small, not proven the smallest.
"""

from __future__ import annotations

from typing import Any, NoReturn

import onnx

from ..errors import UserError
from ..progress import Progress, quiet
from .blocks import Unit, layer_units
from .diagnose import candidates, rank
from .keep import int8_conv_share, keep_high_precision
from .measure import Measure


def default_max_excluded(convs: int) -> int:
    """Half the convolutions (at least one): the most blocks and layers a search could keep out of INT8 while the
    model stays INT8 (fewer than half the convolutions with INT8 input is refused anyway)."""
    return max(1, convs // 2)


def _pct(x: float) -> str:
    return f"{x:.2%}"


def start(measure: Measure, int8: onnx.ModelProto, units: list[Unit], target: float, max_excluded: int | None,
          progress: Progress) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the result so far, plain INT8's score): checks the target and the bound, scores plain INT8; the result is
    already ``met`` when plain INT8 meets the goal."""
    if not 0 < target <= 1:
        raise UserError(f"--accuracy-target is a fraction of FP32's score in (0, 1], got {target}")
    goal = target * measure.reference
    metric = measure.images.metric
    progress("scoring plain INT8")
    plain = measure.score(int8, "plain INT8")
    found = candidates(int8, units)
    limit = default_max_excluded(int8_conv_share(int8)[1]) if max_excluded is None else max_excluded
    if limit < 0:
        raise UserError(f"--max-excluded must be at least 0, got {max_excluded}")
    result: dict[str, Any] = {"target": target, "goal": goal, "metric": metric, "fp32": measure.reference,
                              "plain": plain, "max_excluded": limit, "candidates": len(found), "steps": [],
                              "ranking": [], "kept": []}
    if plain["score"] >= goal:
        progress(f"plain INT8 meets the target: {metric} {_pct(plain['score'])} >= {_pct(goal)}")
        result.update(met=True, final=plain)
    return result, plain


def search(measure: Measure, int8: onnx.ModelProto, units: list[Unit], target: float, *,
           max_excluded: int | None = None, progress: Progress = quiet) -> dict[str, Any]:
    """Ranked units to keep in high precision, greedily, until the score reaches ``target x FP32``."""
    result, plain = start(measure, int8, units, target, max_excluded, progress)
    result["search"] = "greedy"
    if result.get("met"):
        return result
    ranking = rank(measure, int8, units, plain, progress=progress) if result["max_excluded"] else []
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
    left = result["max_excluded"] - counted(kept)
    ranking = rank(measure, real, rest, score, progress=progress) if left > 0 else []
    resumed = {"kept": [u.name for u in kept], "search": result["final"], "real": score, "ranking": ranking}
    result = {**result, "met": False, "final": score, "steps": list(result["steps"]),
              "layer_steps": list(result.get("layer_steps", [])), "resumed": [*result.get("resumed", []), resumed]}
    return _greedy(measure, real, units, ranking, kept, score, result, progress)


def put_back(measure: Measure, base: onnx.ModelProto, kept: list[Unit], first: int, last: dict[str, Any],
              result: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The last pass: every layer of the units this search kept (``kept[first:]``), the last kept first, goes back
    into INT8 when the goal still holds without it. A unit keeps its name when all its layers stay out of INT8."""
    fixed, added = kept[:first], kept[first:]
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


def counted(kept: list[Unit]) -> int:
    """How many of ``kept`` count against ``--max-excluded``: residual Adds do not (no convolution loses INT8 input)."""
    return sum(u.kind not in ("add", "adds") for u in kept)


SCORE_KEYS = ("score", "agreement", "rel_l2", "cosine", "finite")   # what Measure.score returns


def _try(measure: Measure, base: onnx.ModelProto, trial: list[Unit], desc: str,
         known: dict[str, Any] | None = None) -> dict[str, Any] | str:
    """The score of ``base`` with ``trial`` kept (``known``: already measured, the ranking's row), or why it may not be
    tried (fewer than half the convolutions INT8)."""
    model = keep_high_precision(base, trial)
    int8_convs, convs = int8_conv_share(model)
    if 2 * int8_convs < convs:
        return f"keeping {trial[-1].name} would leave {int8_convs} of {convs} convolutions with INT8 input"
    now = measure.score(model, desc) if known is None else {k: known[k] for k in SCORE_KEYS}
    return {**now, "int8_convs": int8_convs, "convs": convs}


def _better(now: dict[str, Any], last: dict[str, Any]) -> bool:
    """A higher score, or the same score with a lower logits error."""
    return (now["score"], -now["rel_l2"]) > (last["score"], -last["rel_l2"])


def _greedy(measure: Measure, base: onnx.ModelProto, units: list[Unit], ranking: list[dict[str, Any]], kept: list[Unit],
            last: dict[str, Any], result: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Keep ``ranking``'s units (each measured alone on top of ``base`` and ``kept``) while they improve the score;
    when the ranking runs out below the goal, go on layer by layer (:func:`_layer_pass`)."""
    by_name = {u.name: u for u in units}
    limit, goal = result["max_excluded"], result["goal"]
    resumed = bool(result.get("resumed"))
    start = len(kept)
    if last["score"] >= goal:
        return {**result, "met": True, "kept": [u.name for u in kept], "final": last}
    for row in ranking:
        if counted(kept) >= limit:
            break
        unit = by_name[row["unit"]]
        trial = kept + [unit]
        if counted(trial) > limit:
            continue
        if len(kept) > start:
            progress(f"trying {', '.join(u.name for u in trial)} in high precision")
        # nothing accepted since the ranking: it measured this very model (base with this unit kept)
        now = _try(measure, base, trial, f"{len(trial)} kept", known=None if len(kept) > start else row)
        if isinstance(now, str):
            result["stopped"] = now
            continue
        better = _better(now, last)
        result["steps"].append({"kept": [u.name for u in trial], **now, "accepted": better,
                                **({"resumed": True} if resumed else {})})
        if not better:
            continue
        kept, last = trial, now
        if last["score"] >= goal:
            return put_back(measure, base, kept, start, last, result, progress)
    kept, last = _layer_pass(measure, base, units, kept, last, result, progress)
    if last["score"] >= goal:
        return put_back(measure, base, kept, start, last, result, progress)
    fail(measure, kept, last, result)


def _layer_pass(measure: Measure, base: onnx.ModelProto, units: list[Unit], kept: list[Unit], last: dict[str, Any],
                result: dict[str, Any], progress: Progress) -> tuple[list[Unit], dict[str, Any]]:
    """Where whole blocks run out below the goal: every layer and residual Add not kept yet (:func:`.blocks.layer_units`)
    is tried on top of ``kept``, and the best (:func:`_better`) is kept, step after step, until the goal holds, no
    layer improves the score, or ``--max-excluded`` is reached. Each step costs one evaluation per layer left."""
    limit, goal = result["max_excluded"], result["goal"]
    if limit == 0:
        return kept, last
    taken = {x.name for u in kept for x in [u, *layer_units(u, base)]}
    pool = [sub for u in units if u.name not in taken for sub in layer_units(u, base) if sub.name not in taken]
    pool = candidates(base, pool)
    while last["score"] < goal and pool:
        best: tuple[Unit, dict[str, Any]] | None = None
        for i, sub in enumerate(pool, 1):
            if counted(kept + [sub]) > limit:
                continue
            progress(f"layer pass {len(result.get('layer_steps', [])) + 1}: {sub.name} in high precision ({i}/{len(pool)})")
            now = _try(measure, base, kept + [sub], f"{sub.name} kept")
            if isinstance(now, str):
                result["stopped"] = now
            elif best is None or _better(now, best[1]):
                best = (sub, now)
        if best is None or not _better(best[1], last):
            break
        kept, last = kept + [best[0]], best[1]
        pool = [x for x in pool if x is not best[0]]
        result.setdefault("layer_steps", []).append({"kept": [u.name for u in kept], **last, "tried": len(pool) + 1})
    return kept, last


def fail(measure: Measure, kept: list[Unit], last: dict[str, Any], result: dict[str, Any]) -> NoReturn:
    """Raise the one line that says how far the search got, and why it stopped."""
    limit, goal, metric = result["max_excluded"], result["goal"], result["metric"]
    names = ", ".join(u.name for u in kept) or "none"
    if counted(kept) >= limit:
        why = f"--max-excluded {limit} reached: raise --max-excluded or lower the target"
    elif result.get("stopped"):
        why = f"{result['stopped']}: lower the target"
    else:
        why = "no further block or layer improved it: lower the target or check the images"
    if result.get("resumed"):
        why = ("ModelOpt's re-quantization scored below the search's own model and the search went on from it; "
               + why)
    target, plain = result["target"], result["plain"]
    raise UserError(f"--accuracy-target {target:g} not met: {metric} {_pct(last['score'])} with {len(kept)} unit(s) kept "
                    f"in high precision ({names}) is below {_pct(goal)} (= {target:g} x FP32 {_pct(measure.reference)}; "
                    f"plain INT8 {_pct(plain['score'])}); {why}")


__all__ = ["SCORE_KEYS", "counted", "default_max_excluded", "fail", "put_back", "resume", "search", "start"]
