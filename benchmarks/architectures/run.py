"""ResNet beside its relatives and predecessors on this machine's CPU: size, cost, speed, parity.

    python benchmarks/architectures/run.py             # writes results.md, results.json, latency_vs_macs.png here
    python benchmarks/architectures/run.py --quick     # resnet18 and alexnet only, into a temporary folder (a dry run)
    python benchmarks/architectures/run.py --plot-only # redraw latency_vs_macs.png from results.json

For each network (ResNet-18/50/152, DenseNet-121, SE-ResNet-50, AlexNet, VGG-16, GoogLeNet), with the
toolkit's seeded default weights and everything made by the pipeline the CLI uses:

1. parameters (those the deployed graph holds), multiply-accumulates at 224x224 and weighted layers
   (``resnet-deploy info``), and the FP32 ONNX's size (``resnet-deploy export``);
2. ONNX Runtime CPU latency at batch 1 and throughput at batch 8 (``resnet-deploy bench --engine ort
   --precision fp32 --batch 1,8``), each row with its FP32 parity against PyTorch beside it;
3. FP16 (ModelOpt AutoCast) and INT8 (ModelOpt PTQ, the CLI's default calibration) parity
   (``resnet-deploy quantize`` then ``resnet-deploy parity``) at the toolkit's bars, and the size of the
   TensorRT-RTX engine each precision gives (``resnet-deploy build --engine trt-rtx``: it builds without a
   GPU; no engine can run here);
4. what the seeded weights do on the 64 photograph inputs of ``parity`` (the 8 bundled photographs
   and 56 crops): the largest activation anywhere, the logits' spread across images, and how many
   distinct top-1 classes they give, so a reader can see the seeded networks are not degenerate.

A plot of latency against MACs goes beside the table. Timings are for this 2-core machine only:
compare them within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import resnet_deploy as rd  # noqa: E402
from resnet_deploy import pipeline  # noqa: E402
from resnet_deploy.bench import BenchConfig, device_label, environment, run_bench  # noqa: E402  # noqa: E402
from resnet_deploy.compare import parity_batch  # noqa: E402
from resnet_deploy.engine import BuildOptions  # noqa: E402
from resnet_deploy.model import ModelRef, arch_spec  # noqa: E402
from resnet_deploy.versions import dist_version  # noqa: E402

NETWORKS = ("resnet18", "resnet50", "resnet152", "densenet121", "seresnet50", "alexnet", "vgg16", "googlenet")
QUICK = ("resnet18", "alexnet")
THREADS = 2


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@torch.no_grad()
def seeded_behaviour(arch: str) -> dict:
    """The seeded default network on the parity photographs: activation peak, logit spread, distinct top-1."""
    model = rd.create_model(arch)
    names, batch = parity_batch(model.card.recipe, n_random=0)
    peak = [0.0]

    def watch(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            peak[0] = max(peak[0], float(output.abs().max()))

    hooks = [m.register_forward_hook(watch) for m in model.modules() if not list(m.children())]
    try:
        logits = model(torch.from_numpy(batch)).numpy()
    finally:
        for h in hooks:
            h.remove()
    return {"images": len(names), "largest_activation": peak[0],
            "logit_std_across_images": float(logits.std(axis=0).mean()),
            "distinct_top1": int(len(set(logits.argmax(1).tolist()))), "weights": model.card.weights.source}


def engine_bytes(arch: str, precision: str, out_dir: Path) -> int:
    """The TensorRT-RTX engine of this precision (batch 1..8), built on this CPU."""
    m = rd.build(arch, precision=precision, options=BuildOptions(flavour="trt-rtx", max_batch=8), out_dir=out_dir)
    return int(m["engine_bytes"])


def parity_of(arch: str, precision: str, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    made = rd.quantize(arch, precision, out_dir=out_dir)
    seconds = time.perf_counter() - t0
    r = rd.parity(arch, precision=precision, out_dir=out_dir)
    return {"rel_l2": r["rel_l2"], "cosine": r["cosine"], "top1": r["top1_agreement"], "finite": r["finite"],
            "passed": r["passed"], "failures": r["failures"], "make_s": round(seconds, 1),
            "placement": made.get("conversion", {}).get("placement"),
            "engine_bytes": engine_bytes(arch, precision, out_dir)}


def bench_rows(arch: str, out_dir: Path, min_time: float) -> dict[int, dict]:
    cfg = BenchConfig(engines=["ort"], depths=[arch], precisions=["fp32"], batches=[1, 8], min_time=min_time,
                      min_iters=5, bare=False, threads=THREADS, artifacts=str(out_dir))
    result = run_bench(cfg, out=out_dir / "bench", run_id=arch, write=False)
    rows = {r["batch"]: r for r in result.rows if r.get("batch")}
    for b in (1, 8):
        if b not in rows or rows[b]["status"] not in ("ok", "failed"):
            raise RuntimeError(f"{arch} batch {b}: {rows.get(b, {}).get('status')} {rows.get(b, {}).get('reason')}")
    return rows


def measure(arch: str, out_dir: Path, min_time: float) -> dict:
    log(f"{arch}: facts")
    d = rd.describe(arch)
    t0 = time.perf_counter()
    fp32 = pipeline.ensure_onnx(ModelRef.of(arch), out_dir=out_dir)
    export_s = time.perf_counter() - t0
    log(f"{arch}: ONNX Runtime CPU latency and throughput")
    rows = bench_rows(arch, out_dir, min_time)
    b1, b8 = rows[1], rows[8]
    result = {
        "arch": arch, "family": d["family"], "depth": d["depth"], "parameters": d["inference_parameters"],
        "gmacs": d["gmacs"], "layers": d["layers"], "onnx_bytes": Path(fp32["path"]).stat().st_size,
        "export_s": round(export_s, 1),
        "batchnorm_left": fp32.get("batchnorm_nodes"),
        "latency_b1_ms": b1["latency_p50_ms"], "latency_b1_p99_ms": b1["latency_p99_ms"],
        "throughput_b8_ips": b8["latency_throughput_ips"],
        "parity_b1": {"rel_l2": b1["parity_rel_l2"], "passed": b1["parity_passed"]},
        "parity_b8": {"rel_l2": b8["parity_rel_l2"], "passed": b8["parity_passed"]},
        "load_average_1m": [b1.get("load_avg_1m"), b8.get("load_avg_1m")],
        "engine_bytes_fp32": engine_bytes(arch, "fp32", out_dir),
    }
    for precision in ("fp16", "int8"):
        log(f"{arch}: {precision} conversion and parity")
        result[precision] = parity_of(arch, precision, out_dir)
    log(f"{arch}: seeded weights on the photographs")
    result["seeded"] = seeded_behaviour(arch)
    return result


def verdict(p: dict) -> str:
    return "pass" if p["passed"] else "FAIL"


def markdown(results: list[dict], env: dict, command: str, seconds: float) -> str:
    lines = ["# ResNet, its relatives and its predecessors on one CPU", "",
             f"Device: {device_label(env)}; ONNX Runtime {dist_version('onnxruntime')} "
             f"(CPU provider, {THREADS} threads), torch {torch.__version__}, nvidia-modelopt {dist_version('nvidia-modelopt')}, "
             f"tensorrt-rtx {dist_version('tensorrt-rtx') or dist_version('tensorrt_rtx')}; "
             f"seeded default weights; {len(results)} networks in {seconds / 60:.0f} min.", "",
             f"Made by `{command}` at {env.get('git') or 'an unknown revision'}.", "",
             "## Size, cost and speed (FP32, ONNX Runtime CPU)", "",
             "Parameters are those the deployed graph holds (GoogLeNet's auxiliary classifiers are in its "
             "state_dict only); MACs at 224x224; layers are the weighted layers on the main path. Latency is the "
             "median at batch 1, throughput at batch 8; parity is the same timed call's output against PyTorch "
             "FP32 (relative L2, FP32 bar 1e-4).", "",
             "| network | parameters | MACs | layers | FP32 ONNX | latency b1 | throughput b8 | parity b1 / b8 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['arch']} | {r['parameters'] / 1e6:.1f} M | {r['gmacs']:.2f} G | {r['layers']} | "
            f"{r['onnx_bytes'] / 1e6:.0f} MB | {r['latency_b1_ms']:.1f} ms | {r['throughput_b8_ips']:.1f} img/s | "
            f"{r['parity_b1']['rel_l2']:.1e} {verdict(r['parity_b1'])} / {r['parity_b8']['rel_l2']:.1e} "
            f"{verdict(r['parity_b8'])} |")
    lines += ["", "![latency against MACs](latency_vs_macs.png)", "",
              "## Reduced precision in the ONNX (ONNX Runtime CPU against PyTorch FP32)", "",
              "FP16: ModelOpt AutoCast; INT8: ModelOpt PTQ with explicit Q/DQ (entropy calibration on the 64 "
              "bundled photograph views, the CLI's default) and the toolkit's placement passes (concatenations, "
              "sigmoid gates). Bars: FP16 rel. L2 <= 5e-3, cosine >= 0.9999, top-1 >= 95%; INT8 rel. L2 <= 0.2, "
              "cosine >= 0.99, top-1 >= 85%. They were set on trained networks (docs/precision.md): seeded random "
              "networks have small logit margins and no redundancy, and most miss the INT8 bars, as the seeded "
              "ResNets always have. The engines are TensorRT-RTX plans built on this CPU (batch 1-8): their size "
              "shows the weights' storage (INT8 weights take one byte).", "",
              "| network | FP16 rel. L2 | FP16 cosine | FP16 top-1 | FP16 | INT8 rel. L2 | INT8 cosine | INT8 top-1 | INT8 | "
              "engine FP32 / FP16 / INT8 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        h, q = r["fp16"], r["int8"]
        lines.append(f"| {r['arch']} | {h['rel_l2']:.1e} | {h['cosine']:.6f} | {h['top1']:.0%} | {verdict(h)} | "
                     f"{q['rel_l2']:.2f} | {q['cosine']:.4f} | {q['top1']:.0%} | {verdict(q)} | "
                     f"{r['engine_bytes_fp32'] / 1e6:.0f} / {h['engine_bytes'] / 1e6:.0f} / {q['engine_bytes'] / 1e6:.0f} MB |")
    lines += ["", "## What the seeded weights do on the photographs", "",
              "The 64 photograph inputs of `parity` through the seeded default network in PyTorch FP32: the largest "
              "activation of any layer (FP16 overflows at 65504), the logits' standard deviation across images "
              "(averaged over classes) and the number of distinct top-1 classes among the 64.", "",
              "| network | weights | largest activation | logit std across images | distinct top-1 of 64 | FP16 ONNX finite |",
              "|---|---|---|---|---|---|"]
    for r in results:
        s = r["seeded"]
        scaling = "BatchNorm statistics from photos" if arch_spec(r["arch"]).family not in ("alexnet", "vgg") else \
            "layer-sequential unit variance (no BatchNorm)"
        lines.append(f"| {r['arch']} | {scaling} | {s['largest_activation']:.3g} | {s['logit_std_across_images']:.2f} | "
                     f"{s['distinct_top1']} | {'yes' if r['fp16']['finite'] else 'NO'} |")
    lines.append("")
    return "\n".join(lines)


def family_label(family: str) -> str:
    return "resnet" if family == "imagenet" else family


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    families = sorted({family_label(r["family"]) for r in results})
    colours = {f: plt.cm.tab10(i) for i, f in enumerate(families)}
    for ax, key, label in ((axes[0], "latency_b1_ms", "latency at batch 1 (ms, median)"),
                           (axes[1], "throughput_b8_ips", "throughput at batch 8 (images/s)")):
        placed: list[tuple[float, float]] = []
        for r in results:
            x, y = r["gmacs"], r[key]
            near = any(abs(x / px - 1) < 0.15 and abs(y / py - 1) < 0.15 for px, py in placed)
            placed.append((x, y))
            ax.scatter(r["gmacs"], r[key], s=30 + r["parameters"] / 1e6 * 2, color=colours[family_label(r["family"])], alpha=0.8,
                       edgecolors="black", linewidths=0.5)
            ax.annotate(r["arch"], (x, y), textcoords="offset points", xytext=(6, -12 if near else 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.set_xlabel("multiply-accumulates per image at 224x224 (G)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[f], label=f) for f in families]
    axes[0].legend(handles=handles, title="family (area: parameters)", fontsize=8)
    fig.suptitle("ONNX Runtime CPU, FP32, seeded default weights")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two small networks into a temporary folder (a dry run)")
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds each timed loop runs at least")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from the committed results.json, measuring nothing")
    args = ap.parse_args(argv)
    if args.plot_only:
        plot(json.loads((HERE / "results.json").read_text())["results"], HERE / "latency_vs_macs.png")
        return 0
    torch.set_num_threads(THREADS)
    command = "python benchmarks/architectures/run.py" + (" --quick" if args.quick else "") + \
        (f" --min-time {args.min_time:g}" if args.min_time != 3.0 else "")
    networks = QUICK if args.quick else NETWORKS
    dest = Path(tempfile.mkdtemp(prefix="architectures-")) if args.quick else HERE
    env = environment(command)
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="architectures-") as work:
        for arch in networks:
            results.append(measure(arch, Path(work), args.min_time))
            # the ONNX files of one network are not needed for the next (VGG-16's FP32 ONNX is 553 MB)
            for f in Path(work, arch).glob("*.onnx"):
                f.unlink()
    seconds = time.perf_counter() - t0
    (dest / "results.json").write_text(json.dumps({"command": command, "revision": env.get("git"),
                                                    "environment": env, "seconds": round(seconds),
                                                    "results": results}, indent=1, default=str) + "\n")
    plot(results, dest / "latency_vs_macs.png")
    text = markdown(results, env, command, seconds)
    (dest / "results.md").write_text(text)
    print(text)
    log(f"wrote {dest / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
