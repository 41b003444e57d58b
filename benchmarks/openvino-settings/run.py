"""The measurements behind the OpenVINO runner's settings (docs/cpu.md), each interleaved call by call.

1. batch: one dynamic-batch compiled model vs one reshaped (static) compiled model per batch size;
2. CPU pinning: OpenVINO's default (pinned) vs unpinned vs one thread, beside ONNX Runtime;
3. hint: one LATENCY request vs the batch split over THROUGHPUT streams (the runner's hint="throughput");
4. the artifact and inference precision: ONNX Runtime and OpenVINO on the FP32 and INT8 ONNX, and BF16 execution.

    resnet-deploy export --depth 18 --out /tmp/ov18
    resnet-deploy quantize --depth 18 --out /tmp/ov18 --precision int8 --calib-samples 32
    python benchmarks/openvino-settings/run.py /tmp/ov18/resnet18/resnet18 --seconds 20 > benchmarks/openvino-settings/results.txt

Timings on a shared machine: read the ratios within one block, not the absolute figures.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import openvino as ov

from resnet_deploy.doctor import cpu_features
from resnet_deploy.runners import open_runner


def interleaved(calls: dict[str, object], x: np.ndarray, seconds: float) -> dict[str, float]:
    """``{name: p50 seconds}``, the callables run one after another in rounds for ``seconds``."""
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


def show(title: str, batch: int, p50: dict[str, float], base: str) -> None:
    print(f"\n{title}, batch {batch}")
    for n, s in p50.items():
        print(f"  {n:44s} p50 {s * 1e3:8.2f} ms {batch / s:8.1f} img/s  {p50[base] / s:5.2f}x {base}")


def batch_handling(path: str, x: np.ndarray, seconds: float) -> None:
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": ov.Type.f32, "PERFORMANCE_HINT": "LATENCY"}
    dynamic = core.compile_model(core.read_model(path), "CPU", cfg).create_infer_request()
    model = core.read_model(path)
    model.reshape(list(x.shape))
    static = core.compile_model(model, "CPU", cfg).create_infer_request()
    p50 = interleaved({"dynamic batch": lambda a: dynamic.infer({0: a}),
                       "reshaped to this batch": lambda a: static.infer({0: a})}, x, seconds)
    show(f"batch handling, {path}", len(x), p50, "dynamic batch")


def runners(title: str, rows: dict[str, tuple[str, str, dict]], x: np.ndarray, seconds: float, base: str) -> None:
    opened = {n: open_runner(backend, path, **kw) for n, (backend, path, kw) in rows.items()}
    try:
        show(title, len(x), interleaved({n: r.infer for n, r in opened.items()}, x, seconds), base)
    finally:
        for r in opened.values():
            r.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stem", help="path without .fp32.onnx / .int8.onnx")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    cpu = cpu_features()
    print(f"CPU: {cpu['model']} ({platform.machine()}); {cpu['summary']}; OpenVINO {ov.__version__}")
    fp32, int8 = a.stem + ".fp32.onnx", a.stem + ".int8.onnx"
    pinned = {"properties": {"ENABLE_CPU_PINNING": True}}
    for batch in (1, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 3, a.size, a.size)).astype(np.float32)
        for path in (fp32, int8):
            batch_handling(path, x, a.seconds)
            runners(f"CPU pinning, {path}", {"ort": ("ort", path, {}), "openvino pinned": ("openvino", path, pinned),
                                             "openvino unpinned (runner default)": ("openvino", path, {}),
                                             "openvino 1 thread": ("openvino", path, {"threads": 1})},
                    x, a.seconds, "ort")
        if batch > 1:
            runners(f"hint, {fp32}", {"latency": ("openvino", fp32, {}),
                                      "throughput, batch split": ("openvino", fp32, {"hint": "throughput"})},
                    x, a.seconds, "latency")
        rows = {"ort fp32": ("ort", fp32, {}), "ort int8": ("ort", int8, {}), "openvino fp32": ("openvino", fp32, {}),
                "openvino int8 (fp32 rest)": ("openvino", int8, {})}
        if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            rows["openvino fp32 artifact, bf16 inference"] = ("openvino", fp32, {"inference_precision": "bf16"})
            rows["openvino int8 (bf16 rest)"] = ("openvino", int8, {"inference_precision": "bf16"})
        runners("artifact and inference precision", rows, x, a.seconds, "ort fp32")


if __name__ == "__main__":
    main()
