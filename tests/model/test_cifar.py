"""The paper's CIFAR-10 ResNets (20/32/44/56/110) and the public trained checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import resnet_deploy as rd
from resnet_deploy.errors import UserError
from resnet_deploy.labels import CIFAR10_LABELS
from resnet_deploy.model import CIFAR_DEPTHS, build_network, clear_seeded_cache, resolve_arch
from resnet_deploy.model.weights import read_state_dict
from resnet_deploy.preprocess import sample_photos

DATA = Path(__file__).resolve().parents[1] / "data" / "cifar10-resnet"
CHECKPOINTS = {20: DATA / "resnet20-12fca82f.th", 56: DATA / "resnet56-4bfd9763.th"}
# the paper's (and the checkpoints' repository's) parameter counts: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M
PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_depth_parameters_and_shapes(depth):
    d = rd.describe(depth)
    assert resolve_arch(depth) == f"resnet{depth}" and d["family"] == "cifar"
    assert d["parameters"] == PARAMS[depth] and d["layers"] == depth and d["projection_convs"] == 0
    assert d["image_size"] == 32 and d["num_classes"] == 10
    assert d["stages"]["layer1"] == [16, 32, 32] and d["stages"]["layer3"] == [64, 8, 8]
    assert d["blocks"] == [(depth - 2) // 6] * 3


def test_option_a_shortcut_has_no_weights_and_pads_channels():
    net = build_network("resnet20").eval()
    assert not [k for k in net.state_dict() if "shortcut" in k or "downsample" in k]
    block = net.layer2[0]
    x = torch.randn(1, 16, 32, 32)
    y = block.shortcut(x)
    assert y.shape == (1, 32, 16, 16)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and not y[:, :8].any() and not y[:, 24:].any()


def test_no_preact_variant():
    with pytest.raises(UserError, match="no pre-activation variant"):
        resolve_arch("preact_resnet20")


@pytest.mark.parametrize("depth", sorted(CHECKPOINTS))
def test_checkpoints_load_strict_as_they_are(depth):
    raw = torch.load(CHECKPOINTS[depth], map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "best_prec1"} and all(k.startswith("module.") for k in raw["state_dict"])
    model = rd.create_model(depth, weights=CHECKPOINTS[depth])  # the class count comes from the checkpoint
    assert model.card.num_classes == 10 and model.card.label_set == "cifar10" and model.card.recipe.image_size == 32
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = read_state_dict(CHECKPOINTS[depth])
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_trained_network_sees_the_cat():
    """A real trained network on a real photograph at 32x32: chelsea is a cat, and predictions vary."""
    model = rd.create_model(56, weights=CHECKPOINTS[56])
    photos = sample_photos(model.card.recipe)
    with torch.no_grad():
        top = model(torch.from_numpy(photos.batch)).argmax(1).tolist()
    assert CIFAR10_LABELS[top[photos.names.index("chelsea")]] == "cat"
    assert len(set(top)) >= 4


def test_seeded_random_cifar_model_is_conditioned():
    a = rd.create_model(20)
    x = torch.from_numpy(sample_photos(a.card.recipe).batch)
    with torch.no_grad():
        y = a(x).numpy()
    assert np.isfinite(y).all() and len(set(y.argmax(1).tolist())) >= 3
    clear_seeded_cache()  # the second construction re-estimates, as a new process would
    assert a.card.weights.source.startswith("random(seed=0") and a.card.weights.sha256 == rd.create_model(20).card.weights.sha256
