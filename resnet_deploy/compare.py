"""The comparator: candidate logits against the PyTorch FP32 reference, with per-precision bars.

NaN or Inf anywhere is always a failure, whatever the thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .classify import infer_all
from .preprocess import DEFAULT, Preprocess, augmented_photos, sample_photos


@dataclass(frozen=True)
class Thresholds:
    rel_l2: float
    top1: float          # minimum fraction of inputs whose top-1 class agrees
    cosine: float        # minimum mean cosine similarity


# The one table of bars (README and docs quote it; tests/test_bars.py fails when they drift). Set on
# trained networks and on deliberately broken INT8 models, measured by
# `python benchmarks/precision-bars/run.py` (benchmarks/precision-bars/results.md):
# - FP16 (AutoCast, ONNX Runtime CPU): trained CIFAR-10 ResNet-20/56 and the digits ResNet-18 give
#   rel. L2 7e-4..1e-3, cosine 0.9999995, top-1 100%; the seeded random ImageNet ResNets 1.1e-3..1.5e-3,
#   0.99997+, 98.5%. The bars leave 3-5x room.
# - BF16 (PyTorch's bfloat16 forward: ONNX Runtime's CPU provider has no BF16 Conv): trained 0.012-0.016,
#   cosine 0.9998-0.9999, top-1 100%.
# - INT8 (ModelOpt PTQ, the CLI's default calibration): trained rel. L2 0.056-0.17, cosine 0.995-0.998,
#   top-1 94-100%. Broken on purpose (every activation scale x4 or x6; one convolution with noise of its
#   weights' standard deviation, each of ResNet-20's 19 in turn): cosine 0.55-0.986 on all three trained
#   networks, so the cosine bar fails every broken model; rel. L2 and top-1 fail the CIFAR ones too
#   (0.21-0.98, 44-85%). Seeded random networks do not reach these bars (rel. L2 0.42-0.52, top-1 63-82%):
#   they are not trained networks, and parity says so rather than passing them.
THRESHOLDS = {
    "fp32": Thresholds(rel_l2=1e-4, top1=1.0, cosine=0.99999),
    "fp16": Thresholds(rel_l2=5e-3, top1=0.95, cosine=0.9999),
    "bf16": Thresholds(rel_l2=5e-2, top1=0.9, cosine=0.999),
    "int8": Thresholds(rel_l2=0.2, top1=0.85, cosine=0.99),
}


@dataclass
class ParityResult:
    precision: str
    n: int
    max_abs: float
    rel_l2: float
    cosine: float
    cosine_min: float
    top1_agreement: float
    top5_agreement: float
    finite: bool
    thresholds: Thresholds
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def compare(reference: np.ndarray, candidate: np.ndarray, precision: str = "fp32",
            thresholds: Thresholds | None = None) -> ParityResult:
    """Compare two [N, classes] logit arrays.

    top-1 agreement: fraction of inputs with the same arg-max. top-5 agreement: fraction of
    inputs whose five highest classes are the same set (order ignored) - a strict measure.
    """
    th = thresholds or THRESHOLDS[precision]
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    finite = bool(np.isfinite(cand).all() and np.isfinite(ref).all())
    failures: list[str] = []
    if not finite:
        failures.append("NaN or Inf in the output")
        bad = float("nan")
        return ParityResult(precision, len(ref), bad, bad, bad, bad, 0.0, 0.0, False, th, failures)
    diff = cand - ref
    max_abs = float(np.abs(diff).max())
    rel_l2 = float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30))
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-30)
    top1 = float(np.mean(ref.argmax(1) == cand.argmax(1)))
    top5 = float(np.mean([set(a) == set(b) for a, b in zip(_topk(ref, 5), _topk(cand, 5))]))
    if rel_l2 > th.rel_l2:
        failures.append(f"relative L2 {rel_l2:.3g} > {th.rel_l2:g}")
    if top1 < th.top1:
        failures.append(f"top-1 agreement {top1:.1%} < {th.top1:.0%}")
    if float(cos.mean()) < th.cosine:
        failures.append(f"cosine {cos.mean():.6f} < {th.cosine}")
    return ParityResult(precision, len(ref), max_abs, rel_l2, float(cos.mean()), float(cos.min()),
                        top1, top5, True, th, failures)


PARITY_VIEWS = 56          # photo crops besides the 8 whole photographs: 64 real images, top-1 in steps of 1.6%
PARITY_VIEW_SEED = 1_000_003  # other crops than calibration's and BatchNorm re-estimation's (seeds 0, 1, ...)


def parity_batch(recipe: Preprocess = DEFAULT, n_random: int = 4, seed: int = 0,
                 n_views: int = PARITY_VIEWS) -> tuple[list[str], np.ndarray]:
    """Real images, evaluation-preprocessed, plus seeded random tensors.

    scikit-image's 8 photographs whole, ``n_views`` seeded crops and flips of them (not the ones
    calibration and the random models' BatchNorm statistics use), and ``n_random`` Gaussian tensors.
    """
    photos = sample_photos(recipe)
    views = augmented_photos(n_views, recipe, seed=PARITY_VIEW_SEED + seed) if n_views else photos.batch[:0]
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_random, 3, recipe.image_size, recipe.image_size), dtype=np.float32)
    names = photos.names + [f"view{i}" for i in range(n_views)] + [f"random{i}" for i in range(n_random)]
    return names, np.concatenate([photos.batch, views, noise]).astype(np.float32)


def run_parity(reference, candidate, batch: np.ndarray, precision: str = "fp32") -> ParityResult:
    """Run ``batch`` through two open runners (each in the chunks it accepts) and compare."""
    return compare(infer_all(reference, batch), infer_all(candidate, batch), precision)
