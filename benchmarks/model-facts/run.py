"""The figures the README quotes about the networks: size, MACs, the seeded random models' scale, FP32 parity.

    python benchmarks/model-facts/run.py          # writes results.md here (about 3 minutes on 2 cores)

1. Parameters and multiply-accumulates of every depth at its own input size (`resnet-deploy info`).
2. Why the random models are conditioned: ResNet-152 with plain torchvision initialisation
   (BatchNorm running statistics 0/1) against the seeded default (residual-branch gain 0.2,
   statistics re-estimated on photographs, centred classifier): the largest activation and logit
   on the 8 bundled photographs.
3. `resnet-deploy parity` (FP32 ONNX on ONNX Runtime CPU vs PyTorch) at every depth.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import resnet_deploy as rd  # noqa: E402
from resnet_deploy.model import CIFAR_DEPTHS, DEPTHS, build_network  # noqa: E402
from resnet_deploy.preprocess import sample_photos  # noqa: E402


@torch.no_grad()
def peaks(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(largest |activation| of any leaf module, largest |logit|)."""
    seen: list[float] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(float(o.abs().max())))
             for m in model.modules() if not list(m.children())]
    logits = model(x)
    for h in hooks:
        h.remove()
    return max(seen), float(logits.abs().max())


def main() -> int:
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    lines = ["# Network facts quoted by the README", "",
             "| depth | family | input | parameters | MACs |", "|---|---|---|---|---|"]
    for depth in (*DEPTHS, *CIFAR_DEPTHS):
        d = rd.describe(depth)
        lines.append(f"| {depth} | {d['family']} | {d['image_size']}x{d['image_size']} | {d['parameters']:,} | "
                     f"{d['gmacs']:.2f} G |")
    x = torch.from_numpy(sample_photos().batch)
    plain = build_network("resnet152").eval()
    seeded = rd.create_model(152)
    (pa, pl), (sa, sl) = peaks(plain, x), peaks(seeded, x)
    with torch.no_grad():
        half = torch.isfinite(seeded.half()(x.half())).all().item()
    lines += ["", "ResNet-152 on the 8 bundled photographs:", "",
              "| weights | largest activation | largest logit |", "|---|---|---|",
              f"| plain torchvision initialisation (BN statistics 0/1) | {pa:.3g} | {pl:.3g} |",
              f"| seeded default (`{seeded.card.weights.source}`) | {sa:.3g} | {sl:.3g} |", "",
              f"The seeded default in FP16 (PyTorch) is {'finite' if half else 'NOT finite'} on all of them.", "",
              "`resnet-deploy parity --depth D` (FP32 ONNX, ONNX Runtime CPU vs PyTorch FP32, seeded default weights):", "",
              "| depth | inputs | relative L2 | max abs | cosine | top-1 | top-5 |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as out:
        for depth in DEPTHS:
            r = rd.parity(depth, out_dir=out)
            lines.append(f"| {depth} | {r['n']} | {r['rel_l2']:.1e} | {r['max_abs']:.1e} | {r['cosine']:.7f} | "
                         f"{r['top1_agreement']:.0%} | {r['top5_agreement']:.0%} |")
    lines += ["", "Made by `python benchmarks/model-facts/run.py` "
              f"({time.perf_counter() - t0:.0f} s, torch {torch.__version__}, 2 threads).", ""]
    (HERE / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
