"""Weights: torchvision-format checkpoints from disk, or a seeded random model that behaves.

Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors, never by
unpickling arbitrary objects. A checkpoint that does not fit names the first missing,
unexpected and mis-shaped keys.

Without a checkpoint the model is seeded-random, but plain random initialisation (BN weight
1, running stats 0/1) lets activations grow block after block until FP16 overflows
(ResNet-152 gave NaN on every output). So the random model's BatchNorm running statistics
are re-estimated on views of real photographs, as a trained network's would have been: every
BN then sees unit-variance inputs, activations stay in a trained network's range at any depth.

Networks without BatchNorm (AlexNet, VGG without ``_bn``) have no statistics to re-estimate.
They get layer-sequential unit variance instead (Mishkin and Matas 2016, "All you need is a good
init"): in one pass over the same photographs, every conv and hidden Linear layer's weight and
bias are divided by the standard deviation of its output, so each layer hands the next
unit-variance pre-activations, as BatchNorm would have.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..artifacts import sha256_file
from ..errors import UserError
from ..preprocess import DEFAULT, Preprocess, augmented_photos

RANDOM_SEED = 0
BN_CALIBRATION_IMAGES = 32
LOGIT_STD = 2.0
# Trained ResNets (and zero-init-residual training) end with small gains on the last layer of each
# residual branch: the sum then grows slowly with depth instead of doubling its variance per block.
RESIDUAL_GAIN = 0.2


def random_source(seed: int = RANDOM_SEED) -> str:
    """How a seeded random model records its weights (the manifests' ``weights_source``)."""
    return f"random(seed={seed},bn=photos{BN_CALIBRATION_IMAGES},gain={RESIDUAL_GAIN:g})"


@dataclass(frozen=True)
class WeightsInfo:
    source: str           # a file path, or "random(seed=0,bn=photos32)"
    sha256: str           # of the state_dict's tensors (same whatever file format carried them)
    file_sha256: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "file_sha256": self.file_sha256}


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of names, dtypes, shapes and bytes, independent of the container format."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt`` (weights_only) or ``.safetensors`` file into a flat state_dict."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - every failure to read is the user's file, reported in one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e):
            msg = _pickled_objects(p) or ("not a plain tensor checkpoint, or corrupt (read with torch.load(weights_only=True); "
                                          "this toolkit never unpickles arbitrary objects)")
        raise UserError(f"cannot read weights {p}: {msg[:300]}") from None
    # Common wrappers: {"state_dict": ...}, {"model": ...}; DataParallel's "module." prefix.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights {p} do not hold a state_dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    for name, t in state.items():
        check_tensor(name, t, p)
    return state


def _pickled_objects(path: Path) -> str | None:
    """What a checkpoint torch refused to read holds, listed from its pickle's opcodes (nothing is executed)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - not a torch zip/pickle at all: the caller's generic line
        return None
    if not names:
        return None
    shown = ", ".join(sorted(names)[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")
    if any(n.startswith("torch.nn.modules.") for n in names):
        return (f"it holds a pickled model (torch.save(model): {shown}), not a state_dict; save "
                "torch.save(model.state_dict(), PATH) instead (this toolkit never unpickles objects)")
    return f"it holds pickled Python objects ({shown}), not only tensors; a state_dict of tensors is needed"


def check_tensor(name: str, t: torch.Tensor, source: str | os.PathLike[str]) -> None:
    """One line for a tensor a network cannot take as weights: not dense, no data, or not floating point
    (BatchNorm's integer step counter ``num_batches_tracked`` excepted). Casting would hide garbage."""
    where = f"weights {source}: tensor {name!r}"
    if t.is_meta:
        raise UserError(f"{where} is a meta tensor (a shape without data); save the weights after loading them")
    if t.is_quantized:
        raise UserError(f"{where} is quantized ({t.dtype}); pass the floating-point weights (quantize then makes INT8)")
    if t.layout != torch.strided:
        raise UserError(f"{where} is {str(t.layout).replace('torch.', '')}, not dense; save it with .to_dense()")
    if name.endswith("num_batches_tracked") and t.dtype in (torch.int64, torch.int32):
        return
    if not t.dtype.is_floating_point:
        raise UserError(f"{where} has dtype {str(t.dtype).replace('torch.', '')}; weights must be floating point "
                        "(float32, float16, bfloat16, float64)")


def check_fit(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one clear line naming the first missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    # BatchNorm's step counter: checkpoints from torch < 0.4.1 have none, and load_state_dict fills it in
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
        raise UserError(f"weights {source} do not fit {type(model).__name__}: " + "; ".join(parts))


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, rename=None) -> dict[str, torch.Tensor]:
    """``state`` made ready for ``model.load_state_dict(strict=True)``: old key names mapped (``rename``),
    the model's optional submodules the checkpoint has no keys for removed (GoogLeNet's auxiliary
    classifiers: torchvision's ``aux_logits=False``), then checked to fit (:func:`check_fit`)."""
    state = rename(state) if rename is not None else state
    for name in getattr(model, "optional_modules", ()):
        if getattr(model, name, None) is not None and not any(k.startswith(name + ".") for k in state):
            setattr(model, name, None)
    check_fit(model, state, source)
    return state


def load_weights(model: nn.Module, path: str | os.PathLike[str], rename=None) -> WeightsInfo:
    """Load a checkpoint strict; ``rename`` maps an architecture's old key names (DenseNet's ``norm.1``)."""
    state = fit_state_dict(model, read_state_dict(path), str(path), rename)
    model.load_state_dict(state, strict=True)
    return WeightsInfo(str(path), state_dict_sha256(model.state_dict()), sha256_file(path))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: np.ndarray, batch_size: int = 16) -> None:
    """Re-estimate every BatchNorm's running mean/var from ``images`` (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all calibration batches
        m.train()
    x = torch.from_numpy(images)
    for i in range(0, len(x), batch_size):
        model(x[i:i + batch_size])
    for m, (momentum, training) in zip(bns, saved):
        m.momentum = momentum
        m.train(training)
    model.train(was_training)


@torch.no_grad()
def scale_to_unit_variance(model: nn.Module, images: np.ndarray) -> None:
    """Layer-sequential unit variance in one pass: each conv / hidden Linear output divided by its std on ``images``.

    The forward hooks run in execution order and hand the rescaled output on, so every layer is
    scaled on the inputs the already-scaled layers before it give (what LSUV's layer-by-layer
    passes compute). The classifier is left to :func:`center_classifier`.
    """
    head = getattr(model, "head", None)

    def rescale(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        std = output.float().std().clamp_min(1e-6)
        module.weight.div_(std)
        if module.bias is not None:
            module.bias.div_(std)
        return output / std

    hooks = [m.register_forward_hook(rescale) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head]
    was_training = model.training
    model.eval()
    try:
        model(torch.from_numpy(images))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def center_classifier(model: nn.Module, images: np.ndarray) -> None:
    """Centre the classifier on ``images`` (mean logit 0 for every class), logit spread ``LOGIT_STD``.

    Post-ReLU features share a large positive mean; through a random classifier it becomes
    one logit vector common to every image (all photos then get the same top-1). A trained
    classifier has no such shared component; removing it makes logits differ between images.
    """
    fc = getattr(model, "head", None)
    if not isinstance(fc, nn.Linear):
        return
    features = model.forward_features(torch.from_numpy(images))
    centred = (features - features.mean(0)) @ fc.weight.T
    fc.weight.mul_(LOGIT_STD / centred.std(dim=1).mean().clamp_min(1e-6))  # a trained classifier's logit spread
    fc.bias.copy_(-fc.weight @ features.mean(0))


# Seeded models already made in this process: ``{(arch, classes, seed, recipe): (state_dict copy, WeightsInfo)}``,
# the most recent last. Re-estimating the statistics is most of a seeded model's cost (about 35 s for
# ResNet-152 on one core), and one process often asks for the same model twice (``api.export`` then
# ``api.parity``, whose reference is the same network). The weights are a function of the key, so a hit
# equals a fresh construction (tests/model/test_networks.py checks it).
SEEDED_CACHE_BYTES = 1 << 30
_seeded_cache: OrderedDict[tuple, tuple[dict[str, torch.Tensor], WeightsInfo]] = OrderedDict()


def clear_seeded_cache() -> None:
    """Forget the seeded models made so far in this process (the next construction re-estimates)."""
    _seeded_cache.clear()


def seeded(model: nn.Module, key: tuple, seed: int = RANDOM_SEED, recipe: Preprocess = DEFAULT) -> WeightsInfo:
    """:func:`randomize` ``model``, or load the weights an earlier call with the same ``key`` made.

    ``key`` names the network (architecture and classes); ``seed`` and ``recipe`` are added to it. The
    model gets its own copy of the tensors either way, so changing it (``.half()``) changes nothing else.
    """
    full = (*key, seed, recipe)
    hit = _seeded_cache.get(full)
    if hit is not None:
        _seeded_cache.move_to_end(full)
        model.load_state_dict(hit[0])
        model.eval()
        return hit[1]
    info = randomize(model, seed, recipe)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _seeded_cache[full] = (state, info)
    while len(_seeded_cache) > 1 and sum(t.nbytes for s, _ in _seeded_cache.values() for t in s.values()) > SEEDED_CACHE_BYTES:
        _seeded_cache.popitem(last=False)
    return info


@torch.no_grad()
def randomize(model: nn.Module, seed: int = RANDOM_SEED, recipe: Preprocess = DEFAULT) -> WeightsInfo:
    """Seeded random weights conditioned like a trained network (see module doc): small gains at the
    end of every residual branch, BatchNorm statistics (without BatchNorm: per-layer unit variance)
    and the classifier's centre from views of real photographs preprocessed with ``recipe``."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # VGG/AlexNet convs and SE-ResNet's gate convs: seeded like the rest
                    nn.init.normal_(m.bias, 0.0, 0.01)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                # A trained network's BN affine parameters are not all 1/0; spread them a little.
                nn.init.uniform_(m.weight, 0.5, 1.0)
                nn.init.normal_(m.bias, 0.0, 0.1)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0 / m.in_features ** 0.5)
                nn.init.zeros_(m.bias)
        for m in model.modules():
            end = getattr(m, "branch_end", None)  # the last BN (or, pre-activation, conv) of a residual branch
            if end is not None:
                getattr(m, end).weight.mul_(RESIDUAL_GAIN)
    finally:
        torch.random.set_rng_state(gen_state)
    images = augmented_photos(BN_CALIBRATION_IMAGES, recipe, seed=seed)
    if has_batchnorm(model):
        recalibrate_batchnorm(model, images)
    else:
        scale_to_unit_variance(model, images)
    model.eval()
    center_classifier(model, images)
    return WeightsInfo(random_source(seed), state_dict_sha256(model.state_dict()))
