"""What the INT8 placement passes change: ModelOpt's graph against the toolkit's, on the networks that have the patterns.

    python benchmarks/int8-placement/run.py        # writes results.md here (about 6 minutes on 2 cores)

For SE-ResNet-50 (sigmoid gates), DenseNet-121 and GoogLeNet (concatenations), with the seeded default
weights: the FP32 export is quantized twice with the CLI's default calibration (entropy, the 64 bundled
photograph views), once as ModelOpt leaves it and once with ``resnet_deploy.precision.placement``, and
both are compared with PyTorch FP32 by ``parity`` on ONNX Runtime CPU. The graph facts say what moved:
Concats whose inputs arrive in INT8 with the output's scale, and the gates' scale.

ONNX Runtime is not TensorRT: it runs the Q/DQ graph with its own kernels and fusions. The figures show
what the passes cost or gain in accuracy on these (random) networks, not the speed TensorRT gains.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import resnet_deploy as rd  # noqa: E402
from resnet_deploy import pipeline  # noqa: E402
from resnet_deploy.artifacts import Precision  # noqa: E402
from resnet_deploy.bench import git_revision  # noqa: E402
from resnet_deploy.model import ModelRef  # noqa: E402
from resnet_deploy.onnx_meta import consumers_of, load_onnx, read_metadata, set_metadata  # noqa: E402
from resnet_deploy.precision import DEFAULT_CALIB_SAMPLES, calibration_batch, load_calibration, quantize_int8  # noqa: E402
from resnet_deploy.preprocess import recipe_from_metadata  # noqa: E402
from resnet_deploy.versions import dist_version  # noqa: E402

NETWORKS = ("seresnet50", "densenet121", "googlenet")


def graph_facts(path: Path) -> dict:
    m = onnx.load(str(path), load_external_data=False)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = consumers_of(g)

    def scale(node) -> float | None:
        t = inits.get(node.input[1])
        return float(numpy_helper.to_array(t).ravel()[0]) if t is not None else None

    concats = [n for n in g.node if n.op_type == "Concat"]
    int8_in = 0
    for c in concats:
        qs = [u for u in consumers.get(c.output[0], []) if u.op_type == "QuantizeLinear"]
        srcs = [producer.get(t) for t in c.input]
        if qs and all(s is not None and s.op_type == "DequantizeLinear" and scale(s) == scale(qs[0]) for s in srcs):
            int8_in += 1
    gates = [scale(u) for n in g.node if n.op_type == "Sigmoid" for u in consumers.get(n.output[0], [])
             if u.op_type == "QuantizeLinear"]
    return {"concats": len(concats), "concats_int8_one_scale": int8_in,
            "gate_scale": (min(gates), max(gates)) if gates else None}


def main() -> int:
    torch.set_num_threads(2)
    t0, revision = time.perf_counter(), git_revision(HERE)
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-placement-") as work:
        work = Path(work)
        for arch in NETWORKS:
            fp32 = Path(pipeline.ensure_onnx(ModelRef.of(arch), out_dir=work)["path"])
            # the toolkit's INT8, as `resnet-deploy quantize --precision int8` makes it
            tq = time.perf_counter()
            placed = Path(pipeline.ensure_precision(ModelRef.of(arch), Precision.INT8, out_dir=work)["path"])
            seconds = {True: time.perf_counter() - tq}
            # the same request without the passes: the CLI's calibration set and steps, ModelOpt's graph as it is
            calib = load_calibration(None, recipe_from_metadata(read_metadata(fp32)), samples=DEFAULT_CALIB_SAMPLES, seed=0)
            plain = work / arch / f"{arch}.int8.modelopt.onnx"
            tq = time.perf_counter()
            quantize_int8(fp32, plain, calib.batch, high_precision="fp32", calibration_batch=calibration_batch(calib.used),
                          placement=False)
            seconds[False] = time.perf_counter() - tq
            model = load_onnx(plain)
            set_metadata(model, read_metadata(placed))  # the same source facts, so parity accepts it
            onnx.save(model, str(plain))
            for is_placed, path in ((False, plain), (True, placed)):
                r = rd.parity(arch, precision="int8", artifact=path, out_dir=work)
                rows.append({"arch": arch, "placed": is_placed, "seconds": seconds[is_placed], **graph_facts(path),
                             "rel_l2": r["rel_l2"], "cosine": r["cosine"], "top1": r["top1_agreement"], "n": r["n"]})
                print(rows[-1], file=sys.stderr, flush=True)
    lines = ["# INT8 placement: ModelOpt's graph and the toolkit's passes", "",
             f"Made by `python benchmarks/int8-placement/run.py` at {revision} in "
             f"{(time.perf_counter() - t0) / 60:.0f} min (2-core CPU; torch {torch.__version__}, nvidia-modelopt "
             f"{dist_version('nvidia-modelopt')}, onnxruntime {dist_version('onnxruntime')}). Seeded default weights; "
             "entropy calibration on the 64 bundled photograph views; `parity` on its 68 inputs, ONNX Runtime CPU "
             "against PyTorch FP32.", "",
             "| network | graph | Concats with INT8 inputs of the output's scale | sigmoid-gate scale | rel. L2 | cosine | top-1 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        gate = "-" if r["gate_scale"] is None else (
            f"{r['gate_scale'][0]:.4f}" if r["gate_scale"][0] == r["gate_scale"][1]
            else f"{r['gate_scale'][0]:.4f}-{r['gate_scale'][1]:.4f}")
        lines.append(f"| {r['arch']} | {'ModelOpt + placement' if r['placed'] else 'ModelOpt'} | "
                     f"{r['concats_int8_one_scale']} of {r['concats']} | {gate} | {r['rel_l2']:.3f} | {r['cosine']:.4f} | "
                     f"{r['top1']:.1%} |")
    lines += ["", "1/127 = 0.0079 is the scale that represents a sigmoid's whole range [0, 1].", ""]
    (HERE / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
