"""INT8 to an accuracy target: find the blocks that break it, keep only those in high precision.

A consumer of the pipeline's artifacts (FP32 ONNX + plain INT8 ONNX): :mod:`.blocks` names the
units by torch module, :mod:`.keep` takes a unit's Q/DQ out of the INT8 graph, :mod:`.measure`
scores candidates on a CPU runner (OpenVINO or ONNX Runtime), :mod:`.diagnose` reports errors and the sensitivity
ranking, :mod:`.search` finds the fewest units to keep, :mod:`.tune` runs it for the pipeline.
"""

from .blocks import Unit, find_units, units_of
from .diagnose import candidates, diagnose_int8, plot_diagnosis, rank, unit_errors
from .images import AGREEMENT, TOP1, EvalSet, load_eval_set, split_eval_set
from .keep import int8_conv_share, keep_high_precision
from .measure import Measure, pick_engine, with_outputs
from .options import SCORE_ENGINES, TuningOptions
from .search import default_max_excluded, resume, search
from .tune import acceptor, confirm, holdout_scores, keep_adds, modules_to_exclude, search_plain, search_units

__all__ = ["AGREEMENT", "EvalSet", "Measure", "SCORE_ENGINES", "TOP1", "TuningOptions", "Unit", "acceptor",
           "candidates", "confirm", "default_max_excluded", "diagnose_int8", "find_units", "holdout_scores",
           "int8_conv_share", "keep_adds", "keep_high_precision", "load_eval_set", "modules_to_exclude", "pick_engine",
           "plot_diagnosis", "rank", "resume", "search", "search_plain", "search_units", "split_eval_set",
           "unit_errors", "units_of", "with_outputs"]
