"""torchvision's and timm's own state_dicts, in every configuration their builders offer, load through --weights.

tests/data/state_dict_configs.json.gz holds the key order, shapes and dtypes that torchvision 0.29 / timm 1.0
give for each architecture the toolkit offers and each builder configuration (default, num_classes=10,
zero_init_residual, memory_efficient, dropout, GoogLeNet with and without aux_logits, DenseNet's legacy
checkpoint key names, ...), made by benchmarks/torchvision-equivalence/configs.py. Here each listing becomes a
state_dict of meta tensors (no memory) and goes through the loader's own fitting (key renames, optional
modules, strict fit) into the toolkit's network built on the meta device; one configuration goes through a
real file end to end.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
from pathlib import Path

import pytest
import torch

import resnet_deploy as rd
from resnet_deploy.model import ARCHS, OTHER_ARCHS, arch_spec, build_network
from resnet_deploy.model.weights import check_tensor, fit_state_dict

DOC = json.loads(gzip.decompress((Path(__file__).parents[1] / "data" / "state_dict_configs.json.gz").read_bytes()))
CONFIGS = DOC["configs"]


@functools.lru_cache(maxsize=None)
def meta_network(arch: str, num_classes: int) -> torch.nn.Module:
    with torch.device("meta"):
        return build_network(arch, num_classes)


def as_state(listing: list) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, shape, dtype in listing}


def test_every_architecture_is_covered_in_several_configurations():
    archs = [c["arch"] for c in CONFIGS.values()]
    assert set(archs) == set(ARCHS) | set(OTHER_ARCHS), set(ARCHS) | set(OTHER_ARCHS) ^ set(archs)
    assert all(archs.count(a) >= 3 for a in set(archs))
    assert "torchvision" in DOC["source"] and "timm" in DOC["source"]
    assert any("aux_logits=False" in n for n in CONFIGS) and any("legacy_keys" in n for n in CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_of_the_reference_builder_loads(name):
    c = CONFIGS[name]
    spec = arch_spec(c["arch"])
    state = as_state(c["keys"])
    # the class count --weights takes from a checkpoint (build_model reads the head's rows)
    head = spec.rename_keys(state)[f"{spec.head_key}.weight"]
    assert head.shape[0] == c["num_classes"]
    for key, shape, dtype in c["keys"]:  # every tensor passes the dtype/layout check (its values are not needed)
        check_tensor(key, torch.empty((0,), dtype=getattr(torch, dtype)), name)
    model = meta_network(c["arch"], c["num_classes"])  # shared: loading meta tensors into it changes nothing
    if getattr(model, "optional_modules", ()):
        model = copy.deepcopy(model)  # fitting may remove its optional modules
    fitted = fit_state_dict(model, state, name, spec.rename_keys)
    missing, unexpected = model.load_state_dict(fitted, strict=True, assign=True)
    assert not missing and not unexpected


def test_googlenet_without_aux_logits_loads_from_a_real_file(tmp_path):
    """torchvision's googlenet(aux_logits=False) (its pretrained checkpoint's layout): auxiliary classifiers absent."""
    c = CONFIGS["torchvision.googlenet(aux_logits=False, transform_input=True, init_weights=False, num_classes=10)"]
    torch.manual_seed(1)
    source = build_network("googlenet", 10).eval()  # torch's own init: no photographs needed
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("aux")}
    assert [[k, list(v.shape)] for k, v in state.items()] == [[k, s] for k, s, _ in c["keys"]]
    torch.save(state, tmp_path / "googlenet-noaux.pth")
    model = rd.create_model("googlenet", weights=tmp_path / "googlenet-noaux.pth")
    assert model.card.num_classes == 10 and model.aux1 is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
