"""Compare every architecture with torchvision's (SE-ResNet: timm's) model of the same name.

Writes the state_dict listing digests (tests/data/torchvision_state_dict.json) and a CSV of
output differences with a torchvision state_dict loaded into both (strict=True).

Where torchvision imports normally (e.g. a GPU machine):  python benchmarks/torchvision-equivalence/check.py
On the CPU machine, where torchvision has no matching build, its pure-Python model code
still runs: pip install --no-deps --target DIR torchvision timm, then run this with PYTHONPATH=DIR
and --no-ops, which skips registering torchvision's compiled operators (none of these networks uses them).
"""

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

parser = argparse.ArgumentParser()
parser.add_argument("--no-ops", action="store_true")
parser.add_argument("--device", default="cpu")
parser.add_argument("--csv", default=str(Path(__file__).parent / "cpu-2026-12-03.csv"))
args = parser.parse_args()
warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).parent))
from reference import import_references, reference_archs, reference_model  # noqa: E402

tvm, timm = import_references(args.no_ops)
import torchvision  # noqa: E402

from resnet_deploy.model import build_network  # noqa: E402

torch.manual_seed(0)
x = torch.randn(2, 3, 224, 224, device=args.device)
digests, rows = {}, []
for arch in reference_archs():
    tv = reference_model(arch, tvm, timm).to(args.device)
    ours = build_network(arch).eval().to(args.device)
    listing = [[k, list(v.shape)] for k, v in tv.state_dict().items()]
    assert listing == [[k, list(v.shape)] for k, v in ours.state_dict().items()], arch
    ours.load_state_dict(tv.state_dict(), strict=True)
    with torch.no_grad():
        diff = (tv(x) - ours(x)).abs().max().item()
    digests[arch] = {"keys": len(listing), "params": sum(p.numel() for p in tv.parameters()),
                     "sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}
    rows.append(f"{arch},{len(listing)},{digests[arch]['params']},{diff}")
    print(rows[-1])
(ROOT / "tests/data/torchvision_state_dict.json").write_text(json.dumps(
    {"source": f"torchvision {torchvision.__version__} models (seresnet: timm {timm.__version__}), key order and shapes "
               "of state_dict()", "archs": digests},
    indent=1))
device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
Path(args.csv).write_text(
    f"# {device}, torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}; "
    f"the reference library's random init loaded "
    f"into resnet_deploy with strict=True; input randn(2,3,224,224) seed 0; command: python {' '.join(sys.argv)}\n"
    "arch,state_dict_keys,params,max_abs_diff_fp32\n" + "\n".join(rows) + "\n")

# Preprocessing: ours (Pillow + numpy, torch-free) against torchvision's evaluation transforms.
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from resnet_deploy.preprocess import SAMPLE_IMAGES, preprocess_image, to_rgb_pil  # noqa: E402

tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
lines = []
for name in SAMPLE_IMAGES:
    image = to_rgb_pil(getattr(skimage.data, name)())
    lines.append(f"{name},{float(np.abs(preprocess_image(image) - tf(image).numpy()).max())}")
    print(lines[-1])
Path(args.csv).with_name(Path(args.csv).stem + "-preprocess.csv").write_text(
    f"# {device}, torchvision {torchvision.__version__} Resize(256)+CenterCrop(224)+ToTensor+Normalize vs "
    f"resnet_deploy.preprocess on scikit-image photographs; command: python {' '.join(sys.argv)}\n"
    "image,max_abs_diff\n" + "\n".join(lines) + "\n")
