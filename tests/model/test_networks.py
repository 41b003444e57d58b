"""The networks: torchvision state_dict compatibility, parameter counts, info, weights."""

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import resnet_deploy as rd
from resnet_deploy.errors import UserError
from resnet_deploy.model import ARCHS, OTHER_ARCHS, build_network, clear_seeded_cache, resolve_arch
from resnet_deploy.model.weights import recalibrate_batchnorm

DATA = Path(__file__).parents[1] / "data"
TV = json.loads((DATA / "torchvision_state_dict.json").read_text())

PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
GMACS = {18: 1.8, 34: 3.7, 50: 4.1, 101: 7.8, 152: 11.5}


@pytest.mark.parametrize("arch", [*ARCHS, *OTHER_ARCHS])
def test_state_dict_keys_and_shapes_equal_torchvision(arch):
    """Keys, order and shapes hash to what torchvision 0.29's (SE-ResNet: timm 1.0's) model of the same name gives."""
    listing = [[k, list(v.shape)] for k, v in build_network(arch).state_dict().items()]
    assert len(listing) == TV["archs"][arch]["keys"]
    assert hashlib.sha256(json.dumps(listing).encode()).hexdigest() == TV["archs"][arch]["sha256"]
    assert sum(p.numel() for p in build_network(arch).parameters()) == TV["archs"][arch]["params"]


@pytest.mark.parametrize("depth", sorted(PARAMS))
def test_parameter_counts_and_info(depth):
    d = rd.describe(depth)
    assert d["parameters"] == PARAMS[depth]
    assert d["layers"] == depth
    assert d["gmacs"] == pytest.approx(GMACS[depth], rel=0.03)


def test_info_stage_shapes_resnet50():
    s = rd.describe(50)["stages"]
    assert s["conv1"] == [64, 112, 112] and s["maxpool"] == [64, 56, 56]
    assert [s[f"layer{i}"] for i in range(1, 5)] == [[256, 56, 56], [512, 28, 28], [1024, 14, 14], [2048, 7, 7]]


@pytest.mark.parametrize("name,expected", [(50, "resnet50"), ("18", "resnet18"), ("resnext50_32x4d", "resnext50_32x4d"),
                                           ("preact_resnet34", "preact_resnet34")])
def test_resolve_arch(name, expected):
    assert resolve_arch(name) == expected


def test_unknown_depth_lists_valid_ones():
    with pytest.raises(UserError, match="18, 34, 50, 101, 152"):
        resolve_arch(42)


def test_preact_unit_order():
    """Pre-activation: BN sees the block input (inplanes channels), no BN in the projection."""
    m = build_network("preact_resnet50")
    block = m.layer2[0]
    assert block.bn1.num_features == 256 and block.conv1.in_channels == 256
    assert len(block.downsample) == 1 and isinstance(block.downsample[0], torch.nn.Conv2d)
    assert m.final_bn is not None
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.fixture()
def trained_like_resnet18(tmp_path):
    net = build_network("resnet18", num_classes=10)
    torch.manual_seed(1)
    recalibrate_batchnorm(net, np.random.default_rng(0).standard_normal((4, 3, 64, 64), dtype=np.float32))
    return net.eval()


@pytest.mark.parametrize("fmt", ["pth", "pt", "safetensors", "wrapped"])
def test_checkpoint_roundtrip(trained_like_resnet18, tmp_path, fmt):
    state = trained_like_resnet18.state_dict()
    path = tmp_path / f"w.{'pth' if fmt == 'wrapped' else fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state} if fmt == "wrapped" else state, path)
    model = rd.create_model(18, num_classes=None, weights=path)
    assert model.num_classes == 10  # taken from the checkpoint
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), trained_like_resnet18(x))
    assert model.weights_info.file_sha256 is not None


def test_checkpoint_that_does_not_fit_names_keys(trained_like_resnet18, tmp_path):
    state = trained_like_resnet18.state_dict()
    state.pop("layer1.0.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    state["fc.weight"] = torch.zeros(10, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(UserError) as e:
        rd.create_model(18, num_classes=10, weights=tmp_path / "bad.pth")
    msg = str(e.value)
    assert "1 missing: layer1.0.conv1.weight" in msg
    assert "1 unexpected: extra.weight" in msg
    assert "mis-shaped: fc.weight (10, 3) != (10, 512)" in msg


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(_Evil.target),))


def test_checkpoint_is_never_unpickled(tmp_path):
    _Evil.target = str(tmp_path / "pwned")
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"fc.weight": _Evil()}))
    with pytest.raises(UserError, match="never unpickles"):
        rd.create_model(18, weights=tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated"])
def test_corrupt_checkpoint(tmp_path, content):
    (tmp_path / "c.pth").write_bytes(content)
    with pytest.raises(UserError, match="cannot read weights"):
        rd.create_model(18, weights=tmp_path / "c.pth")


@pytest.mark.xdist_group("resnet152")
def test_random_resnet152_behaves_like_a_trained_network():
    """Plain init overflows FP16 at depth 152; the default random model must not, and its
    logits must differ between different photographs."""
    from resnet_deploy.preprocess import sample_photos

    x = torch.from_numpy(sample_photos().batch)
    plain = build_network("resnet152").eval()
    with torch.no_grad():
        assert plain(x[:1]).abs().max() > 65504  # the trap: beyond FP16's range
    model = rd.create_model(152)
    peak = []
    hooks = [m.register_forward_hook(lambda m, i, o: peak.append(o.abs().max().item()))
             for m in model.modules() if len(list(m.children())) == 0]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    assert max(peak) < 1000, "an activation is within 65x of FP16's limit"
    with torch.no_grad():
        half = model.half()(x[:2].half())
    assert torch.isfinite(half).all()
    corr = np.corrcoef(logits.numpy())[np.triu_indices(len(x), 1)]
    assert corr.mean() < 0.5, f"logits nearly the same for every image (mean correlation {corr.mean():.2f})"
    assert len(set(logits.argmax(1).tolist())) >= 4, "most photographs share one top-1 class"


def test_random_model_is_seeded():
    clear_seeded_cache()  # each construction re-estimates its statistics
    a = rd.create_model(18)
    clear_seeded_cache()
    b, c = rd.create_model(18), rd.create_model(18, seed=1)
    assert a.weights_info.sha256 == b.weights_info.sha256 != c.weights_info.sha256


def test_a_seeded_model_made_again_in_the_process_equals_a_fresh_one_and_is_its_own_copy():
    """build_model keeps the seeded models it made (the statistics are most of their cost): a second
    construction must equal a fresh one tensor for tensor, and changing one model must not change the next."""
    clear_seeded_cache()
    fresh = rd.create_model(20)
    again = rd.create_model(20)  # from the cache
    assert again is not fresh and again.card.weights == fresh.card.weights and not again.training
    for (k, v), w in zip(fresh.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w) and v.data_ptr() != w.data_ptr(), k
    with torch.no_grad():
        again.head.weight.add_(1.0)
    again.half()
    third = rd.create_model(20)
    assert all(torch.equal(v, w) for v, w in zip(fresh.state_dict().values(), third.state_dict().values()))
    other = rd.create_model(20, num_classes=7)  # another key: another network
    assert other.head.out_features == 7 and other.card.weights.sha256 != fresh.card.weights.sha256
