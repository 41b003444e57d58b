"""The toolkit's best CPU rows against the peers, in one interleaved run on one machine, parity beside every figure.

    pip install -e '.[cpu,openvino,cpu-peers]'          # cpu-peers: NNCF (benchmarks only)
    python benchmarks/cpu-peers/run.py --depths 18,50,152 --batches 1,8,32 --seconds 3 --rounds 2 --compile-depths 18,50

Rows (each at every depth x batch; the seeded ImageNet ResNets at 224x224; 2 threads where a row takes a count):

- toolkit: the ``openvino`` runner on the toolkit's INT8 ONNX (ModelOpt Q/DQ; the runner's defaults: rest in
  FP32, latency hint, unpinned), the same with ``inference_precision="bf16"`` and with ``hint="throughput"``; the ``openvino`` runner on the
  FP32 ONNX in FP32 and with BF16 inference; the ``ort`` runner on the FP32 ONNX; the ``torch`` runner in FP32 and
  BF16 (``torch.autocast('cpu')``).
- bare OpenVINO: ``benchmark_app`` (the openvino wheel's) with its defaults and ``-hint throughput`` / ``-hint
  latency`` on the same FP32 ONNX, the same INT8 ONNX, and an NNCF ``quantize`` (default preset, the same
  calibration views) of the same FP32 model.
- bare ONNX Runtime: an ``InferenceSession`` of the FP32 ONNX with ``intra_op_num_threads``.
- bare PyTorch: eager and ``torch.compile`` (default mode), FP32 and BF16 autocast.

Timing: per round, every row of a (depth, batch) runs for ``--seconds`` in turn (benchmark_app with ``-t``); the
figure is the median over rounds of each round's p50 latency (throughput: batch / p50; benchmark_app: its own FPS
and median). Parity: each row's configuration on ``compare.parity_batch`` (64 photo views + 4 Gaussian tensors)
against PyTorch FP32 at the row's precision bars (seeded random weights do not reach the INT8 bars: the figures
say how close). benchmark_app's parity is the same artifact compiled with the properties it reports.

Writes results.json, results.md and throughput.png to --out. On a shared machine read ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from resnet_deploy import pipeline  # noqa: E402
from resnet_deploy.artifacts import Precision  # noqa: E402
from resnet_deploy.bench import git_revision  # noqa: E402
from resnet_deploy.compare import compare, parity_batch  # noqa: E402
from resnet_deploy.doctor import cpu_features  # noqa: E402
from resnet_deploy.model import ModelRef  # noqa: E402
from resnet_deploy.precision import QuantizeOptions, load_calibration  # noqa: E402
from resnet_deploy.runners import open_runner  # noqa: E402

CALIB = 64  # calibration views for both INT8 models (the toolkit's ModelOpt PTQ and NNCF)
AMX_TARGETS = ("ResNet-50 INT8 >= 450 img/s at batch >= 8 and batch-1 p50 <= 4 ms; BF16 >= 4x FP32 "
               "(issue 29's targets for a 2-core AMX Xeon)")


def versions() -> dict[str, str]:
    out = {}
    for d in ("openvino", "onnxruntime", "torch", "nncf"):
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "not installed"
    return out


# ------------------------------------------------------------------------------------------ row kinds
class InProcess:
    """A callable timed here: ``fn(x) -> logits``; ``close`` releases it."""

    def __init__(self, fn, close=lambda: None):
        self.fn, self.close = fn, close

    def time(self, x: np.ndarray, seconds: float) -> tuple[float, float]:
        for _ in range(2):
            self.fn(x)
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 3:
            t = time.perf_counter()
            self.fn(x)
            times.append(time.perf_counter() - t)
        p50 = float(np.median(times))
        return p50, len(x) / p50


def runner_row(backend: str, target, **kw) -> InProcess:
    r = open_runner(backend, target, **kw)
    return InProcess(r.infer, r.close)


def bare_ort(path: Path, threads: int) -> InProcess:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return InProcess(lambda x: s.run(None, {name: x})[0])


def bare_torch(model: torch.nn.Module, bf16: bool, compiled: bool) -> InProcess:
    fn = torch.compile(model) if compiled else model

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return fn(torch.from_numpy(x)).float().numpy()

    def close() -> None:
        if compiled:
            torch._dynamo.reset()

    return InProcess(run, close)


class BenchmarkApp:
    """OpenVINO's own ``benchmark_app`` on an ONNX file with one hint; parity from the same compiled settings."""

    def __init__(self, path: Path, hint: str):
        self.path, self.hint = path, hint
        self.properties: dict[str, str] = {}

    def time(self, x: np.ndarray, seconds: float) -> tuple[float, float]:
        cmd = ["benchmark_app", "-m", str(self.path), "-d", "CPU", "-hint", self.hint,
               "-shape", f"[{','.join(map(str, x.shape))}]", "-t", str(max(1, round(seconds)))]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600 + 4 * seconds).stdout
        fps = re.search(r"Throughput:\s+([\d.]+) FPS", out)
        med = re.search(r"Median:\s+([\d.]+) ms", out)
        if not fps or not med:
            raise RuntimeError(f"benchmark_app printed no figures: {out[-500:]}")
        for key in ("INFERENCE_PRECISION_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "ENABLE_CPU_PINNING"):
            m = re.search(rf"{key}: (.+)", out)
            if m:
                self.properties[key] = m.group(1).strip()
        return float(med.group(1)) / 1e3, float(fps.group(1))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The artifact compiled as benchmark_app compiles it (its hint, OpenVINO's default inference precision)."""
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(self.path)), "CPU", {"PERFORMANCE_HINT": self.hint.upper()})
        req = compiled.create_infer_request()
        return np.concatenate([np.asarray(req.infer({0: x[i:i + 16]})[0]) for i in range(0, len(x), 16)])

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ artifacts
def nncf_int8(fp32: Path, calib: np.ndarray, dst: Path) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    q = nncf.quantize(model, nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]), subset_size=len(calib))
    ov.save_model(q, str(dst))
    return dst


def artifacts(depth: int, work: Path) -> dict:
    ref = ModelRef.of(depth)
    fp32 = Path(pipeline.export_model(ref, out_dir=work)["path"])
    int8 = Path(pipeline.ensure_precision(ref, Precision.INT8, out_dir=work,
                                          options=QuantizeOptions(calib_samples=CALIB))["path"])
    model = pipeline.load_model(ref)
    calib = load_calibration(None, model.card.recipe, samples=CALIB).batch
    nncf_path = nncf_int8(fp32, calib, work / f"resnet{depth}.nncf-int8.xml")
    _, x = parity_batch(model.card.recipe)
    return {"fp32": fp32, "int8": int8, "nncf": nncf_path, "model": model, "parity_x": x}


def rows_for(a: dict, threads: int, compiled: bool) -> dict[str, tuple[str, str, object]]:
    """``{row: (group, precision, maker)}``: each maker opens the row when called."""
    m = a["model"]
    rows = {
        "toolkit openvino, INT8 ONNX": ("toolkit", "int8", lambda: runner_row("openvino", a["int8"])),
        "toolkit openvino, INT8 ONNX, rest bf16": ("toolkit", "int8", lambda: runner_row("openvino", a["int8"],
                                                                                          inference_precision="bf16")),
        "toolkit openvino, INT8 ONNX, throughput hint": ("toolkit", "int8", lambda: runner_row("openvino", a["int8"],
                                                                                                hint="throughput")),
        "toolkit openvino, FP32 ONNX": ("toolkit", "fp32", lambda: runner_row("openvino", a["fp32"])),
        "toolkit openvino, FP32 ONNX, bf16 inference": ("toolkit", "bf16", lambda: runner_row(
            "openvino", a["fp32"], inference_precision="bf16")),
        "toolkit ort, FP32 ONNX": ("toolkit", "fp32", lambda: runner_row("ort", a["fp32"], threads=threads)),
        "toolkit torch, FP32": ("toolkit", "fp32", lambda: runner_row("torch", m, precision="fp32", copy_model=True)),
        "toolkit torch, BF16 autocast": ("toolkit", "bf16", lambda: runner_row("torch", m, precision="bf16",
                                                                                copy_model=True)),
        "bare ONNX Runtime, FP32 ONNX": ("peer", "fp32", lambda: bare_ort(a["fp32"], threads)),
        "bare PyTorch eager, FP32": ("peer", "fp32", lambda: bare_torch(m, False, False)),
        "bare PyTorch eager, BF16 autocast": ("peer", "bf16", lambda: bare_torch(m, True, False)),
    }
    if compiled:
        rows["bare PyTorch compile, FP32"] = ("peer", "fp32", lambda: bare_torch(m, False, True))
        rows["bare PyTorch compile, BF16 autocast"] = ("peer", "bf16", lambda: bare_torch(m, True, True))
    for hint in ("throughput", "latency"):
        for label, key, precision in (("FP32 ONNX (OpenVINO's default precision)", "fp32", "bf16"),
                                      ("INT8 ONNX", "int8", "int8"), ("NNCF INT8", "nncf", "int8")):
            rows[f"bare benchmark_app -hint {hint}, {label}"] = (
                "peer", precision, lambda k=key, h=hint: BenchmarkApp(a[k], h))
    return rows


def parity_of(row, x: np.ndarray) -> np.ndarray:
    if isinstance(row, BenchmarkApp):
        return row.logits(x)
    return np.concatenate([row.fn(x[i:i + 16]) for i in range(0, len(x), 16)])


def measure_depth(depth: int, a: dict, args, log) -> list[dict]:
    x_par = a["parity_x"]
    with open_runner("torch", a["model"], precision="fp32", copy_model=True) as r:
        ref = np.concatenate([r.infer(x_par[i:i + 16]) for i in range(0, len(x_par), 16)])
    out = []
    makers = rows_for(a, args.threads, depth in args.compile_depths)
    parity = {}
    for batch in args.batches:
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        figures: dict[str, list[tuple[float, float]]] = {n: [] for n in makers}
        props: dict[str, dict] = {}
        opened = {}
        try:
            for name, (_, precision, make) in makers.items():  # every row open at once: rounds interleave them
                log(f"resnet{depth} b{batch}: opening {name}")
                opened[name] = row = make()
                if name not in parity:
                    res = compare(ref, parity_of(row, x_par), precision)
                    parity[name] = {"precision": precision, "rel_l2": res.rel_l2, "cosine": res.cosine,
                                    "top1": res.top1_agreement, "passed": res.passed}
            for rnd in range(args.rounds):
                for name, row in opened.items():
                    log(f"resnet{depth} b{batch} round {rnd + 1}: {name}")
                    figures[name].append(row.time(x, args.seconds))
                    if isinstance(row, BenchmarkApp):
                        props[name] = dict(row.properties)
        finally:
            for row in opened.values():
                row.close()
        for name, (group, precision, _) in makers.items():
            p50 = float(np.median([f[0] for f in figures[name]]))
            ips = float(np.median([f[1] for f in figures[name]]))
            out.append({"depth": depth, "batch": batch, "row": name, "group": group, "precision": precision,
                        "p50_ms": p50 * 1e3, "img_s": ips, "parity": parity[name], "properties": props.get(name, {})})
    return out


# ------------------------------------------------------------------------------------------ report
def key_ratio(rows: list[dict]) -> list[str]:
    lines = []
    for (d, b) in sorted({(r["depth"], r["batch"]) for r in rows}):
        at = {r["row"]: r for r in rows if r["depth"] == d and r["batch"] == b}
        ours = at["toolkit openvino, INT8 ONNX"]["img_s"]
        bare = max(at[f"bare benchmark_app -hint {h}, INT8 ONNX"]["img_s"] for h in ("throughput", "latency"))
        best = max(r["img_s"] for n, r in at.items() if n.startswith("toolkit openvino, INT8 ONNX"))
        lines.append(f"| resnet{d} | {b} | {ours:.1f} | {best:.1f} | {bare:.1f} | {ours / bare:.2f}x | {best / bare:.2f}x |")
    return lines


def write_report(res: dict, out: Path) -> None:
    rows = res["rows"]
    md = ["# CPU peers", "", f"Command: `{res['command']}` (git {res.get('git')})", "",
          f"Machine: {res['cpu']['model']}, {res['cores']} cores; {res['cpu']['summary']}. Versions: "
          + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + f". {res['started']} UTC, {res['seconds']:.0f} s.",
          "", f"**Shared machine**: {res['load']}. Read ratios within this run, not absolute figures.", "",
          f"Not measurable here (no AMX): {AMX_TARGETS}.", "",
          f"torch.compile rows at ResNet-{', '.join(map(str, res['compile_depths'])) or '(none)'}.", "",
          "## Key ratio: the toolkit's openvino runner vs bare benchmark_app on the same INT8 ONNX (img/s)", "",
          "| network | batch | toolkit (runner defaults) | toolkit best (rest bf16, or throughput hint) | benchmark_app best hint | "
          "ratio (defaults) | ratio (best) |", "|---|---|---|---|---|---|---|", *key_ratio(rows), "",
          "## Every row", "",
          "| network | batch | row | precision | p50 ms | img/s | parity rel L2 | cosine | top-1 | bars |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["parity"]
        md.append(f"| resnet{r['depth']} | {r['batch']} | {r['row']} | {r['precision']} | {r['p50_ms']:.2f} | "
                  f"{r['img_s']:.1f} | {p['rel_l2']:.2e} | {p['cosine']:.5f} | {p['top1']:.0%} | "
                  f"{'pass' if p['passed'] else 'FAIL'} |")
    md += ["", "Seeded random weights do not reach the INT8 bars (they are set on trained networks: "
           "benchmarks/precision-bars); the INT8 rows' parity says how close each artifact is to FP32.",
           "benchmark_app rows run OpenVINO's defaults: on a CPU with BF16 its inference precision is bf16 "
           "(the FP32 ONNX row is a BF16 row; the INT8 rows compute the rest in bf16); properties in results.json."]
    (out / "results.md").write_text("\n".join(md) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({r["depth"] for r in rows})
    fig, axes = plt.subplots(1, len(depths), figsize=(7 * len(depths), 5.5), squeeze=False)
    for ax, d in zip(axes[0], depths):
        for i, name in enumerate(dict.fromkeys(r["row"] for r in rows)):
            pts = sorted((r["batch"], r["img_s"]) for r in rows if r["depth"] == d and r["row"] == name)
            ax.plot(*zip(*pts), marker="o", linestyle="-" if name.startswith("toolkit") else "--", label=name,
                    color=plt.get_cmap("tab20")(i % 20))
        ax.set_title(f"ResNet-{d}, 224x224")
        ax.set_xlabel("batch")
        ax.set_ylabel("images/s")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replot", type=Path, help="redraw throughput.png beside this results.json, and stop")
    ap.add_argument("--depths", default="18,50,152")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile-depths", default="18,50,152",
                    help="depths that get the torch.compile rows ('' for none: each compiles once per batch size)")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    revision = git_revision(HERE)  # before this run writes its own results
    if args.replot:
        plot(json.loads(args.replot.read_text())["rows"], args.replot.with_name("throughput.png"))
        return
    args.batches = [int(b) for b in args.batches.split(",")]
    args.compile_depths = {int(d) for d in args.compile_depths.split(",") if d.strip()}
    torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    t0 = time.time()
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    rows: list[dict] = []

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for depth in map(int, args.depths.split(",")):
            a = artifacts(depth, Path(tmp))
            rows += measure_depth(depth, a, args, log)
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    import os

    res = {"command": "python benchmarks/cpu-peers/run.py " + " ".join(sys.argv[1:]), "git": revision, "started": started,
           "seconds": time.time() - t0, "cpu": cpu_features(), "cores": os.cpu_count(), "machine": platform.machine(),
           "versions": versions(), "threads": args.threads, "compile_depths": sorted(args.compile_depths),
           "load": f"load average {' / '.join(load0)} at the start, {' / '.join(load1)} at the end (1/5/15 min) "
                   "from other jobs on the same 2 cores",
           "amx_targets_not_measurable": AMX_TARGETS if not res_has_amx() else None, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    write_report(res, args.out)
    plot(rows, args.out / "throughput.png")
    print((args.out / "results.md").read_text())


def res_has_amx() -> bool:
    flags = cpu_features()["flags"]
    return bool(flags.get("amx_int8") and flags.get("amx_bf16"))


if __name__ == "__main__":
    main()
