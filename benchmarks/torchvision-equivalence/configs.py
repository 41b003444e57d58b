"""The state_dict listings (keys in order, shapes, dtypes) of torchvision's and timm's own model builders, in
every configuration that keeps the network the toolkit offers, for the CI test that they load through --weights.

    pip install --no-deps --target DIR torchvision timm
    PYTHONPATH=DIR python benchmarks/torchvision-equivalence/configs.py --no-ops

Models are built on the meta device (no memory, no init), so every configuration of every architecture
takes seconds. Writes tests/data/state_dict_configs.json.gz; tests/model/test_foreign_state_dicts.py
turns each listing back into a state_dict and loads it the way ``--weights`` does.
Configurations: the default; num_classes=10; the options that change no computation the toolkit runs
(zero_init_residual, memory_efficient, dropout, init_weights, transform_input where the toolkit's network
has it); GoogLeNet with and without aux_logits; DenseNet as its official checkpoint files store it (the
legacy ``norm.1`` key names); timm's SE-ResNets with drop_rate / num_classes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "state_dict_configs.json.gz"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from reference import import_references, reference_archs  # noqa: E402

RESNETS = ("resnet", "resnext", "wide_resnet")


def configs(arch: str) -> list[dict]:
    """Builder keyword sets for ``arch`` (each one a configuration the builder offers)."""
    base: list[dict] = [{}, {"num_classes": 10}]
    if arch.startswith(RESNETS):
        base += [{"zero_init_residual": True}]
    elif arch.startswith("densenet"):
        base += [{"memory_efficient": True}, {"drop_rate": 0.1, "num_classes": 10}]
    elif arch.startswith("vgg"):
        base += [{"init_weights": False}, {"dropout": 0.0, "num_classes": 10}]
    elif arch == "alexnet":
        base += [{"dropout": 0.0}]
    elif arch == "googlenet":
        base = [{"aux_logits": a, "transform_input": True, "init_weights": False, **extra}
                for a in (True, False) for extra in ({}, {"num_classes": 10})]
    elif arch.startswith("seresnet"):
        base += [{"drop_rate": 0.2}]
    return base


def legacy_densenet_keys(state: dict) -> dict:
    """DenseNet keys as torchvision's downloadable .pth files store them (``norm.1.weight``, not ``norm1.weight``)."""
    out = {}
    for k, v in state.items():
        m = re.match(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12])\.(weight|bias|running_mean|running_var)\Z", k)
        out[f"{m[1]}.{m[2]}.{m[3]}" if m else k] = v
    return out


def build(arch: str, kwargs: dict, tvm, timm) -> torch.nn.Module:
    with torch.device("meta"):
        if arch.startswith("seresnet"):
            return timm.create_model(arch, pretrained=False, **kwargs)
        return getattr(tvm, arch)(**kwargs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-ops", action="store_true", help="skip torchvision's compiled operators (see reference.py)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    tvm, timm = import_references(args.no_ops)
    import torchvision

    listings = {}
    for arch in reference_archs():
        for kwargs in configs(arch):
            state = build(arch, kwargs, tvm, timm).state_dict()
            variants = [("", state)]
            if arch.startswith("densenet") and not kwargs:
                variants.append(("legacy_keys", legacy_densenet_keys(state)))
            for tag, sd in variants:
                lib = "timm" if arch.startswith("seresnet") else "torchvision"
                name = f"{lib}.{arch}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" + (f" {tag}" if tag else "")
                listings[name] = {"arch": arch, "num_classes": kwargs.get("num_classes", 1000),
                                  "keys": [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]}
                print(f"{name}: {len(sd)} keys")
    doc = {"source": f"torchvision {torchvision.__version__}, timm {timm.__version__}, torch {torch.__version__}; "
                     "command: python benchmarks/torchvision-equivalence/configs.py" + (" --no-ops" if args.no_ops else ""),
           "configs": listings}
    OUT.write_bytes(gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(listings)} configurations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
