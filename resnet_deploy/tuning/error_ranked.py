"""The error-ranked search for INT8 that meets an accuracy target (``--search error``).

Every layer and every block's residual Add (:func:`.blocks.layer_units`) is scored once alone in
high precision, and ranked by the logits' relative L2 against FP32 that leaves (lowest first):
how much of INT8's error it carries, a measure of every image's logits rather than of the few
that flip. They are kept in that order, re-measuring after each, until the score reaches
``target x FP32``; then the final pass of the greedy search (:func:`.search.put_back`) puts each
back into INT8, last kept first, while the goal holds. The result must still leave at least half
the convolutions with INT8 input. Cost: 1 (plain) + one per layer (ranking) + up to one per layer
(keeping) + one per kept layer (final pass) evaluations.

Why beside the greedy search (:func:`.search.search`), which keeps whatever raises the count of
agreeing images most: on the trained CIFAR ResNets (benchmarks/int8-target/grid.md) the greedy
choice fits the images it counts (held-out below plain INT8 at some targets), while the error
ranking lowers the error on every image and carries over to images the search never saw.
"""

from __future__ import annotations

from typing import Any

import onnx

from ..errors import UserError
from ..progress import Progress, quiet
from .blocks import Unit, layer_units
from .diagnose import candidates
from .keep import int8_conv_share, keep_high_precision
from .measure import Measure
from .search import SCORE_KEYS, counted, fail, put_back, start


def search_by_error(measure: Measure, int8: onnx.ModelProto, units: list[Unit], target: float, *,
                    max_excluded: int | None = None, progress: Progress = quiet) -> dict[str, Any]:
    """Layers ranked by the logits' error they leave, kept in that order until the score reaches ``target x FP32``."""
    result, plain = start(measure, int8, units, target, max_excluded, progress)
    result["search"] = "error-ranked"
    if result.get("met") or not result["max_excluded"]:
        return result if result.get("met") else fail(measure, [], plain, result)
    layers = candidates(int8, [sub for u in units for sub in layer_units(u, int8)])
    rows = []
    for i, sub in enumerate(layers, 1):
        progress(f"error ranking {i}/{len(layers)}: INT8 with {sub.name} in high precision")
        rows.append({"unit": sub.name, "kind": sub.kind, **measure.score(keep_high_precision(int8, [sub]), f"{sub.name} kept")})
    result["ranking"] = sorted(rows, key=lambda r: (r["rel_l2"], -r["score"], r["unit"]))
    by_name = {sub.name: sub for sub in layers}
    kept: list[Unit] = []
    last = plain
    for row in result["ranking"]:
        trial = kept + [by_name[row["unit"]]]
        if counted(trial) > result["max_excluded"]:
            continue
        progress(f"keeping {row['unit']} too ({len(trial)} kept)")
        now = row if not kept else measure.score(keep_high_precision(int8, trial), f"{len(trial)} kept")
        now = {k: now[k] for k in SCORE_KEYS}
        kept, last = trial, now
        result["steps"].append({"kept": [u.name for u in kept], **now, "accepted": True})
        if last["score"] >= result["goal"]:
            break
    else:
        fail(measure, kept, last, result)
    found = put_back(measure, int8, kept, 0, last, result, progress)
    names = set(found["kept"])
    int8_convs, convs = int8_conv_share(keep_high_precision(int8, [u for u in kept if u.name in names]))
    if 2 * int8_convs < convs:
        raise UserError(f"--accuracy-target {target:g}: the error-ranked search meets it only with {int8_convs} of {convs} "
                        f"convolutions left INT8 ({len(names)} layer(s) and Add(s) kept: {', '.join(found['kept'])}), "
                        "under half: no longer an INT8 model")
    return found


__all__ = ["search_by_error"]
