"""The engine figures docs/engines.md quotes: TensorRT-RTX engines of ResNet-18 and ResNet-50 built here.

    python benchmarks/engine-sizes/run.py        # writes results.md here (about 4 minutes on 2 cores)

What `resnet-deploy build --depth D --precision P --engine trt-rtx --max-batch 8` makes from the
seeded default weights, with the CLI's default INT8 calibration (entropy, 512 bundled-photo views):
engine size, build time, and the precision of the network handed to the strongly typed builder
(layers whose outputs are INT8 / FP16, Q/DQ layers). TensorRT-RTX builds on the CPU; the engine
inspector's view of the built engine needs a GPU and is not here.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import resnet_deploy as rd  # noqa: E402
from resnet_deploy.bench import git_revision  # noqa: E402
from resnet_deploy.engine import BuildOptions  # noqa: E402

ARCHS = ("resnet18", "resnet50")
PRECISIONS = ("fp32", "fp16", "int8")


def main() -> int:
    import tensorrt_rtx

    revision = git_revision(HERE)
    t0 = time.perf_counter()
    lines = ["# TensorRT-RTX engines built here (max batch 8)", "",
             "| network | precision | engine | vs FP16 | build | INT8-typed layers | FP16-typed layers | Q/DQ layers |",
             "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as out:
        for arch in ARCHS:
            sizes = {}
            for precision in PRECISIONS:
                m = rd.build(arch, precision=precision, options=BuildOptions(flavour="trt-rtx", max_batch=8), out_dir=out)
                net = m["layer_precision"].get("network", m["layer_precision"])
                dtypes = net["output_dtypes"]
                sizes[precision] = m["engine_bytes"]
                ratio = f"{m['engine_bytes'] / sizes['fp16']:.2f}x" if "fp16" in sizes else ""
                lines.append(f"| {arch} | {precision} | {m['engine_bytes'] / 1e6:.1f} MB | {ratio} | "
                             f"{m['build_seconds']:.1f} s | {dtypes.get('INT8', 0)} | {dtypes.get('HALF', 0)} | "
                             f"{net['qdq_layers']} |")
    lines += ["", f"Made by `python benchmarks/engine-sizes/run.py` at git {revision} "
              f"({time.perf_counter() - t0:.0f} s; {tensorrt_rtx.__name__} {tensorrt_rtx.__version__}; "
              "seeded default weights; INT8 calibrated with entropy on 512 bundled-photo views).", ""]
    (HERE / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
