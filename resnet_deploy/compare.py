"""The comparator: candidate logits against the PyTorch FP32 reference, with per-precision bars.

NaN or Inf anywhere is always a failure, whatever the thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .classify import infer_all
from .preprocess import DEFAULT, Preprocess, sample_photos


@dataclass(frozen=True)
class Thresholds:
    rel_l2: float
    top1: float          # minimum fraction of inputs whose top-1 class agrees
    cosine: float        # minimum mean cosine similarity


THRESHOLDS = {
    "fp32": Thresholds(rel_l2=1e-4, top1=1.0, cosine=0.99999),
    "fp16": Thresholds(rel_l2=1e-2, top1=0.9, cosine=0.999),
    "bf16": Thresholds(rel_l2=5e-2, top1=0.8, cosine=0.995),
    # INT8 logits of a *random-weight* ResNet calibrated on the 8 bundled photographs move a lot
    # (measured, ORT CPU, entropy: ResNet-18 rel-L2 0.72 / cosine 0.943 / top-1 75%; ResNet-50
    # 0.79 / 0.857 / 50%; ONNX Runtime's own quantizer does no better), and even a trained
    # digits ResNet-18 (99.1% top-1 agreement, no accuracy lost) has rel-L2 0.45 / cosine 0.956.
    # These bars catch broken quantization (wrong scales or placement: rel-L2 > 1, agreement ~0)
    # and NaN/Inf; accuracy on labelled data (`eval`, benchmarks/digits) is the real INT8 gate.
    "int8": Thresholds(rel_l2=1.0, top1=0.4, cosine=0.8),
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


def parity_batch(recipe: Preprocess = DEFAULT, n_random: int = 4, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Real photographs (scikit-image's), evaluation-preprocessed, plus seeded random tensors."""
    photos = sample_photos(recipe)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_random, 3, recipe.image_size, recipe.image_size), dtype=np.float32)
    names = photos.names + [f"random{i}" for i in range(n_random)]
    return names, np.concatenate([photos.batch, noise]).astype(np.float32)


def run_parity(reference, candidate, batch: np.ndarray, precision: str = "fp32") -> ParityResult:
    """Run ``batch`` through two open runners (each in the chunks it accepts) and compare."""
    return compare(infer_all(reference, batch), infer_all(candidate, batch), precision)
