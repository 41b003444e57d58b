"""Where plain INT8 loses, and what the field's fixes for the starting point buy, on the trained CIFAR ResNets.

    python benchmarks/int8-target/starting_points.py                 # writes starting_points.md/.json here
    python benchmarks/int8-target/starting_points.py --depths 20 --no-results

The issue asks to try what the field does before keeping layers out of INT8: the calibration per
tensor, bias correction, per-channel choices. Global calibration methods are measured by
calibrations.py; this measures the rest on the same plain INT8 (ModelOpt entropy PTQ, 64 bundled
photo views) and the same 240 search / 240 held-out photo crops as vs_nncf.py, every model scored
on OpenVINO CPU (agreement with FP32's top-1, and the logits' relative L2 against FP32):

- where the error comes from: only the weights quantized (every activation Q/DQ removed), and only
  the activations quantized;
- weight scales per output channel chosen to minimise each channel's rounding error (MSE) instead
  of ModelOpt's max;
- every activation scale chosen per tensor (x 0.5 ... x 1.5 of the calibrated one, one pass in
  graph order) to minimise the logits' squared error against FP32: on the calibration views only
  (a starting point that never sees the search images), and on the calibration views plus the
  search crops (then only the held-out column is fair);
- empirical bias correction (NNCF's BiasCorrection, Nagel et al. 2019): layer by layer in graph
  order, each convolution's bias shifted by the mean (per output channel) of its INT8 output minus
  its FP32 output, on the calibration views, or on them plus the search crops.

The scale and bias searches run the Q/DQ graph in ONNX Runtime with the scales or biases fed as
inputs (emulated INT8, one session); the results are then written as ordinary Q/DQ ONNX files and
scored like every other model here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import resnet_deploy as rd  # noqa: E402
from resnet_deploy.bench import git_revision  # noqa: E402
from resnet_deploy.onnx_meta import read_metadata  # noqa: E402
from resnet_deploy.precision import load_calibration  # noqa: E402
from resnet_deploy.preprocess import recipe_from_metadata  # noqa: E402
from resnet_deploy.tuning import Measure, load_eval_set, with_outputs  # noqa: E402

VIEWS, CALIB, CHUNK = 240, 64, 64
FACTORS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.15, 1.3, 1.5)


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, x: np.ndarray, names: list[str] | None = None, feeds: dict | None = None) -> list:
    name = sess.get_inputs()[0].name
    parts = [sess.run(names, {name: x[i:i + CHUNK], **(feeds or {})}) for i in range(0, len(x), CHUNK)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def strip(model: onnx.ModelProto, which: str) -> onnx.ModelProto:
    """A copy whose weight (``which="weights"``) or activation (``"activations"``) Q/DQ pairs are bypassed."""
    out = copy(model)
    inits = {t.name for t in out.graph.initializer}
    producer = {o: n for n in out.graph.node for o in n.output}
    for node in out.graph.node:
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                continue
            if (q.input[0] in inits) == (which == "weights"):
                node.input[k] = q.input[0]
    return out


def weight_mse_scales(model: onnx.ModelProto) -> onnx.ModelProto:
    """Per-channel weight scales minimising each output channel's squared rounding error (amax x 0.50 ... 1.00)."""
    out = copy(model)
    inits = {t.name: t for t in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
        flat = w.reshape(w.shape[0], -1)
        amax = np.abs(flat).max(1)
        best, err = None, None
        for f in np.linspace(0.5, 1.0, 51):
            scale = np.maximum(amax * f / 127, 1e-12)
            e = ((np.clip(np.round(flat / scale[:, None]), -127, 127) * scale[:, None] - flat) ** 2).sum(1)
            best = scale if best is None else np.where(e < err, scale, best)
            err = e if err is None else np.minimum(e, err)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(best.astype(np.float32), node.input[1]))
    return out


def activation_scales(model: onnx.ModelProto, fp32: onnx.ModelProto, x: np.ndarray) -> tuple[onnx.ModelProto, dict]:
    """Each activation scale x one of FACTORS, chosen in graph order to minimise the logits' squared error."""
    inits = {t.name: t for t in model.graph.initializer}
    names = [n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    fed = copy(model)
    keep = [t for t in fed.graph.initializer if t.name not in names]
    del fed.graph.initializer[:]
    fed.graph.initializer.extend(keep)
    fed.graph.input.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, []) for n in names)
    sess = session(fed)
    ref = run(session(fp32), x)[0]
    start = {n: numpy_helper.to_array(inits[n]).astype(np.float32) for n in names}

    def loss(scales: dict) -> float:
        return float(((run(sess, x, feeds=scales)[0] - ref) ** 2).sum() / (ref ** 2).sum())

    current = dict(start)
    best = loss(current)
    for name in names:
        for f in FACTORS:
            trial = {**current, name: np.asarray(start[name] * f, dtype=np.float32)}
            value = loss(trial)
            if value < best:
                best, current = value, trial
    out = copy(model)
    for t in out.graph.initializer:
        if t.name in current:
            t.CopyFrom(numpy_helper.from_array(current[t.name], t.name))
    return out, {n: round(float(current[n] / start[n]), 3) for n in names if current[n] != start[n]}


def bias_correction(model: onnx.ModelProto, fp32: onnx.ModelProto, x: np.ndarray) -> onnx.ModelProto:
    """Layer by layer in graph order: bias -= mean over (images, positions) of (INT8 output - FP32 output)."""
    out = copy(model)
    inits = {t.name: t for t in out.graph.initializer}
    layers = [n for n in out.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits]
    names = [n.output[0] for n in layers]
    ref = dict(zip(names, run(session(with_outputs(fp32, names)), x, names)))
    for node in layers:
        got = run(session(with_outputs(out, [node.output[0]])), x, [node.output[0]])[0]
        axes = (0, 2, 3) if got.ndim == 4 else (0,)
        shift = got.mean(axis=axes) - ref[node.output[0]].mean(axis=axes)
        b = inits[node.input[2]]
        b.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(b) - shift).astype(np.float32), b.name))
    return out


def variants(plain: onnx.ModelProto, fp32: onnx.ModelProto, calib: np.ndarray, search: np.ndarray):
    both = np.concatenate([calib, search])
    yield "plain INT8 (ModelOpt entropy)", plain, {}
    yield "weights INT8 only (activations FP32)", strip(plain, "activations"), {}
    yield "activations INT8 only (weights FP32)", strip(plain, "weights"), {}
    yield "weight scales per channel by MSE", weight_mse_scales(plain), {}
    for label, x in (("calibration views", calib), ("calibration views + search crops", both)):
        model, changed = activation_scales(plain, fp32, x)
        yield f"activation scales per tensor, on {label}", model, {"changed": changed}
        yield f"bias correction, on {label}", bias_correction(plain, fp32, x), {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="20,56")
    ap.add_argument("--work", type=Path, default=Path("/tmp/resnet-deploy-starting-points"))
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    bench = load_module("run")
    args.work.mkdir(parents=True, exist_ok=True)
    folders = {"search": args.work / "views-search", "heldout": args.work / "views-heldout"}
    bench.write_views(folders["search"], VIEWS, bench.SEARCH_SEED)
    bench.write_views(folders["heldout"], VIEWS, bench.HELDOUT_SEED)
    rows = []
    for depth in map(int, args.depths.split(",")):
        work = args.work / f"resnet{depth}"
        weights = bench.CHECKPOINTS[depth]
        fp32_path = Path(rd.export(depth, weights=weights, out_dir=work)["path"])
        recipe = recipe_from_metadata(read_metadata(onnx.load(str(fp32_path), load_external_data=False)))
        sets = {k: load_eval_set(f, recipe) for k, f in folders.items()}
        measures = {k: Measure(fp32_path, s, work, backend="openvino") for k, s in sets.items()}
        calib = load_calibration(None, recipe, samples=CALIB).batch
        plain = onnx.load(rd.quantize(depth, "int8", weights=weights, out_dir=work, calib_samples=CALIB)["path"])
        fp32 = onnx.load(str(fp32_path))
        t0 = time.perf_counter()
        for label, model, extra in variants(plain, fp32, calib, sets["search"].batch):
            s = {k: m.score(model, label) for k, m in measures.items()}
            row = {"depth": depth, "variant": label, "seconds": round(time.perf_counter() - t0, 1), **extra,
                   **{f"{k}_{f}": s[k][f] for k in s for f in ("score", "rel_l2")}}
            log(f"ResNet-{depth} {label}: search {row['search_score']:.2%} held-out {row['heldout_score']:.2%} "
                f"rel L2 {row['search_rel_l2']:.4f} / {row['heldout_rel_l2']:.4f}")
            rows.append(row)
            t0 = time.perf_counter()
    r = {"git": git_revision(HERE.parents[1]), "machine": bench.digits_module()._machine(), "rows": rows}
    if not args.no_results:
        cmd = "python benchmarks/int8-target/starting_points.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
        (HERE / "starting_points.json").write_text(json.dumps(r, indent=1) + "\n")
        (HERE / "starting_points.md").write_text(markdown(r, cmd))
    return 0


def markdown(r: dict, cmd: str) -> str:
    lines = ["# INT8 starting points on the trained CIFAR ResNets", "",
             "Agreement with FP32's top-1 on 240 search and 240 held-out photo crops (FP32 = 100%), and the logits' "
             "relative L2 against FP32; every model scored on OpenVINO CPU. One image is 0.42 points.", "",
             "| network | variant | search | held-out | rel L2 search / held-out | time |", "|---|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| ResNet-{x['depth']} | {x['variant']} | {x['search_score']:.2%} | {x['heldout_score']:.2%} | "
                     f"{x['search_rel_l2']:.4f} / {x['heldout_rel_l2']:.4f} | {x['seconds']:.0f} s |")
    lines += ["", "## How it was made", "", "```", cmd, "```", "", f"Toolkit at git {r['git']}. {r['machine']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
