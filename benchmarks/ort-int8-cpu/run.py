"""Is ONNX Runtime's own INT8 (``quantize_static`` Q/DQ) a CPU INT8 path for the toolkit? Speed and accuracy.

    python benchmarks/ort-int8-cpu/run.py --seconds 20 > benchmarks/ort-int8-cpu/results.txt

1. Speed (seeded ResNet-18 and ResNet-50, 224x224, ONNX Runtime CPU, 2 threads): the toolkit's FP32 ONNX,
   the toolkit's INT8 ONNX (ModelOpt PTQ, TensorRT placement) and ORT's ``quantize_static`` of the same FP32
   ONNX (``quant_pre_process``, then QDQ, per-channel, U8 activations, S8 weights, MinMax on 32 calibration views), interleaved call by
   call at batch 1 and 8 in one run. The issue's target: ORT INT8 >= 2.5x ORT FP32 at batch 8.
2. Accuracy: the trained CIFAR ResNet-20/56 (and the digits ResNet-18 with --digits WORK), ORT's
   ``quantize_static`` with the CLI's default calibration (the bundled photographs' views), through parity's
   inputs against PyTorch FP32 at the INT8 bars (``resnet_deploy.compare.THRESHOLDS``), beside the toolkit's
   ModelOpt INT8 of the same network; and the ORT model broken on purpose (activation scales x4,
   one convolution's weights + noise), which must fail the bars.

Timings on a shared machine: read the ratios within one block, not the absolute figures.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from resnet_deploy import pipeline  # noqa: E402
from resnet_deploy.artifacts import Precision  # noqa: E402
from resnet_deploy.bench import git_revision  # noqa: E402
from resnet_deploy.compare import THRESHOLDS, compare, parity_batch  # noqa: E402
from resnet_deploy.doctor import cpu_features  # noqa: E402
from resnet_deploy.model import ModelRef  # noqa: E402
from resnet_deploy.onnx_meta import read_metadata  # noqa: E402
from resnet_deploy.precision import (  # noqa: E402
    DEFAULT_CALIB_SAMPLES,
    QuantizeOptions,
    coarsen_activation_scales,
    load_calibration,
)
from resnet_deploy.preprocess import recipe_from_metadata  # noqa: E402
from resnet_deploy.runners import open_runner  # noqa: E402

CIFAR = ROOT / "tests" / "data" / "cifar10-resnet"
CHECKPOINTS = {20: CIFAR / "resnet20-12fca82f.th", 56: CIFAR / "resnet56-4bfd9763.th"}


class _Reader(CalibrationDataReader):
    def __init__(self, name: str, images: np.ndarray, batch: int = 8):
        self.items = iter([{name: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self.items, None)


def ort_int8(fp32: Path, dst: Path, samples: int, folder: Path | None = None) -> Path:
    """:func:`quantize_with_ort` in a fresh process: ModelOpt, once imported, changes ORT's calibration
    (``quantize_static`` then finds no parameters for the graph input)."""
    subprocess.run([sys.executable, __file__, "--ort-quantize", str(fp32), str(dst), str(samples),
                    *([str(folder)] if folder else [])], check=True)
    return dst


def quantize_with_ort(fp32: Path, dst: Path, samples: int, folder: Path | None = None) -> Path:
    """ORT's own static INT8 of the toolkit's FP32 ONNX, as ORT documents it: ``quant_pre_process`` (shape
    inference, graph optimisation), then ``quantize_static``: QDQ, per-channel weights, U8 activations, S8 weights."""
    recipe = recipe_from_metadata(read_metadata(fp32))
    calib = load_calibration(folder, recipe, samples=samples).batch
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(dst), _Reader(name, calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def perturb_int8_conv_weights(src: Path, dst: Path) -> str:
    """``resnet_deploy.precision.perturb_conv_weights`` for ORT's layout (weights stored as int8 initializers
    feeding a DequantizeLinear, not FP32 weights through a QuantizeLinear): noise of the weights' own standard
    deviation on the middle convolution's int8 weight; returns its name."""
    model = onnx.load(str(src))
    inits = {t.name: t for t in model.graph.initializer}
    weights = [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and len(inits[n.input[0]].dims) == 4]
    name = weights[len(weights) // 2]
    w = numpy_helper.to_array(inits[name]).astype(np.float32)
    noisy = w + np.random.default_rng(0).standard_normal(w.shape) * w.std()
    inits[name].CopyFrom(numpy_helper.from_array(np.clip(np.round(noisy), -127, 127).astype(np.int8), name))
    onnx.save(model, str(dst))
    return name


def interleaved(calls: dict, x: np.ndarray, seconds: float) -> dict[str, float]:
    for fn in calls.values():
        for _ in range(3):
            fn(x)
    times: dict[str, list[float]] = {n: [] for n in calls}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or min(map(len, times.values())) < 5:
        for n, fn in calls.items():
            t = time.perf_counter()
            fn(x)
            times[n].append(time.perf_counter() - t)
    return {n: float(np.median(v)) for n, v in times.items()}


def speed(depth: int, work: Path, seconds: float, threads: int) -> None:
    ref = ModelRef.of(depth)
    fp32 = Path(pipeline.export_model(ref, out_dir=work)["path"])
    mo = Path(pipeline.ensure_precision(ref, Precision.INT8, out_dir=work,
                                        options=QuantizeOptions(calib_samples=32))["path"])
    own = ort_int8(fp32, work / f"resnet{depth}.ort-int8.onnx", 32)
    rows = {"ort fp32 (toolkit FP32 ONNX)": fp32, "ort int8 (toolkit ModelOpt Q/DQ)": mo,
            "ort int8 (ORT quantize_static QDQ)": own}
    opened = {n: open_runner("ort", p, threads=threads) for n, p in rows.items()}
    try:
        for batch in (1, 8):
            x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            p50 = interleaved({n: r.infer for n, r in opened.items()}, x, seconds)
            base = p50["ort fp32 (toolkit FP32 ONNX)"]
            print(f"\nResNet-{depth}, batch {batch}, {threads} threads")
            for n, s in p50.items():
                print(f"  {n:38s} p50 {s * 1e3:8.2f} ms {batch / s:8.1f} img/s  {base / s:5.2f}x ort fp32")
    finally:
        for r in opened.values():
            r.close()


def logits(backend: str, target, x: np.ndarray) -> np.ndarray:
    with open_runner(backend, target, precision="fp32" if backend == "torch" else None) as r:
        return np.concatenate([r.infer(x[i:i + 32]) for i in range(0, len(x), 32)])


def show(name: str, kind: str, ref: np.ndarray, cand: np.ndarray) -> None:
    r = compare(ref, cand, "int8")
    print(f"  {name:18s} {kind:40s} rel L2 {r.rel_l2:7.4f}  cosine {r.cosine:7.5f}  top-1 {r.top1_agreement:6.1%}  "
          f"{'PASS' if r.passed else 'FAIL'}")


def accuracy(name: str, ref_model: ModelRef, work: Path, x: np.ndarray, calib: Path | None = None) -> None:
    fp32 = Path(pipeline.export_model(ref_model, out_dir=work)["path"])
    mo = pipeline.ensure_precision(ref_model, Precision.INT8, out_dir=work, options=QuantizeOptions(calib=calib))["path"]
    own = ort_int8(fp32, work / f"{name}.ort-int8.onnx", DEFAULT_CALIB_SAMPLES, calib)
    ref = logits("torch", pipeline.load_model(ref_model), x)
    show(name, "toolkit ModelOpt INT8 on ort", ref, logits("ort", mo, x))
    show(name, "ORT quantize_static INT8 on ort", ref, logits("ort", own, x))
    show(name, "ORT quantize_static INT8 on openvino", ref, logits("openvino", own, x))
    broken = work / f"{name}.ort-int8.scales_x4.onnx"
    coarsen_activation_scales(own, broken, 4)
    show(name, "broken: ORT INT8, activation scales x4", ref, logits("ort", broken, x))
    noisy = work / f"{name}.ort-int8.noisy.onnx"
    conv = perturb_int8_conv_weights(own, noisy)
    show(name, f"broken: ORT INT8, {conv} + noise", ref, logits("ort", noisy, x))


def digits_model(work: Path, epochs: int):
    """benchmarks/precision-bars/run.py's digits ResNet-18: (weights, training folder, held-out inputs, recipe)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("precision_bars", ROOT / "benchmarks" / "precision-bars" / "run.py")
    bars = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bars)
    work.mkdir(parents=True, exist_ok=True)
    return bars.digits_model(work, epochs, lambda m: print(m, file=sys.stderr))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depths", default="18,50")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--digits", type=Path, metavar="WORK", help="also the digits ResNet-18 (trained here by "
                    "benchmarks/precision-bars' digits_model, kept in WORK), calibrated on its training images")
    ap.add_argument("--digits-epochs", type=int, default=30)
    ap.add_argument("--ort-quantize", nargs="+", help=argparse.SUPPRESS)  # FP32 DST SAMPLES [FOLDER]
    a = ap.parse_args()
    if a.ort_quantize:
        q = a.ort_quantize
        quantize_with_ort(Path(q[0]), Path(q[1]), int(q[2]), Path(q[3]) if len(q) > 3 else None)
        return
    cpu = cpu_features()
    print(f"git {git_revision(HERE)}; load average {' / '.join(Path('/proc/loadavg').read_text().split()[:3])} at the start")
    print(f"CPU: {cpu['model']} ({platform.machine()}); {cpu['summary']}; ONNX Runtime {ort.__version__}")
    print(f"INT8 bars: {THRESHOLDS['int8']}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not a.skip_speed:
            for depth in map(int, a.depths.split(",")):
                speed(depth, work, a.seconds, a.threads)
        if not a.skip_accuracy:
            print("\nAccuracy at the INT8 bars (parity's inputs: 64 photo views + 4 Gaussian tensors, 32x32)")
            for depth, ckpt in CHECKPOINTS.items():
                ref_model = ModelRef.of(depth, weights=ckpt)
                recipe = recipe_from_metadata(read_metadata(pipeline.export_model(ref_model, out_dir=work)["path"]))
                _, x = parity_batch(recipe)
                accuracy(f"cifar resnet{depth}", ref_model, work, x)
            if a.digits:
                print("\nDigits ResNet-18 (its 540 held-out images; calibrated on its training images)")
                weights, train, x, recipe = digits_model(a.digits, a.digits_epochs)
                accuracy("digits resnet18", ModelRef.of(18, weights=weights, recipe=recipe), work, x, calib=train)


if __name__ == "__main__":
    main()
