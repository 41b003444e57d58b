"""Reference outputs of torchvision's (and, for SE-ResNet, timm's) own model code, for the CI equivalence test.

    PYTHONPATH=<folder with torchvision and timm> python benchmarks/torchvision-equivalence/reference.py [--no-ops]

For every ImageNet architecture and every relative (DenseNet, VGG, AlexNet, GoogLeNet as
torchvision's pretrained one runs, SE-ResNet from timm), the reference library's model of the same name is loaded with a seeded,
numpy-generated state_dict (:func:`seeded_state_dict`: realistic BatchNorm statistics, so every
op of every block moves the output) and run on fixed inputs (:func:`reference_inputs`); the
logits go to tests/data/torchvision_reference.npz. ``tests/model/test_torchvision_equivalence.py``
loads the same state_dict into resnet_deploy's network and must reproduce them: removing any op
of a block fails it. Only this script needs torchvision and timm (``--no-ops`` as for check.py, where
torchvision has no build matching the installed torch: its model code is pure Python).
"""

from __future__ import annotations

import argparse
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "torchvision_reference.npz"
SIZE = 64          # small enough for CI, large enough that layer4 still sees 2x2
SEED = 0


def reference_inputs() -> np.ndarray:
    return np.random.default_rng(SEED + 1).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)


def seeded_state_dict(template: dict[str, torch.Tensor], seed: int = SEED) -> dict[str, torch.Tensor]:
    """A state_dict of the same keys and shapes, from numpy's seeded generator in key order.

    Convolutions and the classifier He-normal, BatchNorm gains 0.3-0.7, biases and running
    means small, running variances 0.5-1.5: the activations stay finite through 101 layers and
    every BN, ReLU, sum and projection changes the logits.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, torch.Tensor] = {}
    for key, value in template.items():
        shape = tuple(value.shape)
        if key.endswith("num_batches_tracked"):
            out[key] = value.clone()
            continue
        if key.endswith("running_var"):
            a = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("running_mean") or key.endswith("bias"):
            a = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:  # BatchNorm weight
            a = rng.uniform(0.3, 0.7, shape)
        else:
            a = rng.normal(0.0, np.sqrt(2.0 / int(np.prod(shape[1:]))), shape)
        out[key] = torch.from_numpy(a.astype(np.float32))
    return out


def reference_model(arch: str, tvm, timm) -> torch.nn.Module:
    """The reference library's network of the same name, as its pretrained checkpoint runs (eval mode)."""
    if arch.startswith("seresnet"):
        return timm.create_model(arch, pretrained=False).eval()
    if arch == "googlenet":  # torchvision's pretrained GoogLeNet: aux classifiers in the state_dict, transformed input
        return tvm.googlenet(aux_logits=True, transform_input=True, init_weights=False).eval()
    return getattr(tvm, arch)().eval()


def reference_archs() -> list[str]:
    from resnet_deploy.model import ARCHS, OTHER_ARCHS
    return [*ARCHS, *OTHER_ARCHS]


def import_references(no_ops: bool):
    """torchvision.models and timm; ``no_ops``: without torchvision's compiled operators (none of these nets uses them)."""
    if no_ops:
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("stub")
    import timm
    import torchvision.models as tvm
    return tvm, timm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-ops", action="store_true", help="skip torchvision's compiled operators (not used by ResNets)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(ROOT))
    tvm, timm = import_references(args.no_ops)
    import torchvision

    torch.set_num_threads(2)
    x = torch.from_numpy(reference_inputs())
    arrays = {}
    for arch in reference_archs():
        model = reference_model(arch, tvm, timm)
        model.load_state_dict(seeded_state_dict(model.state_dict()), strict=True)
        with torch.no_grad():
            arrays[arch] = model(x).numpy()
        assert np.isfinite(arrays[arch]).all(), arch
        print(f"{arch}: max |logit| {np.abs(arrays[arch]).max():.3g}")
    arrays["__source__"] = np.array(f"torchvision {torchvision.__version__}, timm {timm.__version__}, torch {torch.__version__}; "
                                    f"command: python benchmarks/torchvision-equivalence/reference.py "
                                    f"{' '.join(argv if argv is not None else sys.argv[1:])}".strip())
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
