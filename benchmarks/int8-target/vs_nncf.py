"""The toolkit's ``quantize --accuracy-target`` vs NNCF's ``quantize_with_accuracy_control``, side by side.

    pip install nncf                                            # benchmarks only
    python benchmarks/int8-target/vs_nncf.py --depths 20 --targets 0.97,0.99     # the reduced grid (committed)
    python benchmarks/int8-target/vs_nncf.py --depths 20,56 --targets 0.97,0.98,0.99  # the full grid
    python benchmarks/int8-target/vs_nncf.py --replot benchmarks/int8-target/vs_nncf.json  # the trade-off plot again

Both start from the same FP32 ONNX (the toolkit's export of the trained CIFAR-10 ResNet-20/56 in
tests/data/cifar10-resnet), calibrate on the same 64 bundled photo views (the toolkit's default
calibration set), search on the same 240 photo crops and are checked on 240 other crops
(run.py's seeded crops; agreement with FP32's top-1 stands in for accuracy, so FP32 scores 100%
and target T is an absolute drop of 1 - T). Both score candidates on OpenVINO CPU (the toolkit's
default ``--score-engine``; NNCF's ``validation_fn`` compiles each model it is given with
OpenVINO), and every final model is scored here the same way. Reported: met or not (on the
search images), the share of convolutions whose data input is INT8, search and held-out scores,
wall time. Writes <name>.md, <name>.json and <name>.png (the trade-off: INT8 share vs held-out score per
tool, one point per target met) beside this file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import resnet_deploy as rd  # noqa: E402
from resnet_deploy.bench import git_revision  # noqa: E402
from resnet_deploy.errors import UserError  # noqa: E402
from resnet_deploy.onnx_meta import read_metadata  # noqa: E402
from resnet_deploy.precision import load_calibration  # noqa: E402
from resnet_deploy.preprocess import recipe_from_metadata  # noqa: E402
from resnet_deploy.tuning import Measure, int8_conv_share, load_eval_set  # noqa: E402

VIEWS = 240
CALIB = 64


def bench_module():
    spec = importlib.util.spec_from_file_location("int8_target_run", HERE / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def scores(measures: dict, path: Path) -> dict:
    model = onnx.load(str(path))
    int8, convs = int8_conv_share(model)
    return {**{k: m.score(path)["score"] for k, m in measures.items()}, "int8_convs": int8, "convs": convs}


def toolkit(depth: int, weights: Path, target: float, folders: dict, work: Path, measures: dict, max_excluded: int) -> dict:
    t0 = time.perf_counter()
    try:
        m = rd.quantize(depth, "int8", weights=weights, out_dir=work / "toolkit", calib_samples=CALIB, force=True,
                        accuracy_target=target, data=folders["search"], holdout=folders["heldout"],
                        max_excluded=max_excluded, score_engine="openvino", progress=lambda s: None)
    except UserError as e:
        return {"tool": "toolkit", "met": False, "error": str(e), "seconds": round(time.perf_counter() - t0, 1)}
    seconds = time.perf_counter() - t0
    t = m["tuning"]
    return {"tool": "toolkit", "met": True, "kept": t["kept"], "evaluations": t["evaluations"],
            "seconds": round(seconds, 1), **scores(measures, Path(m["path"]))}


def nncf_run(fp32: Path, target: float, calib: np.ndarray, search: np.ndarray, work: Path, measures: dict) -> dict:
    import nncf
    import openvino

    ref = measures["search"].fp32_logits.argmax(1)
    core = openvino.Core()

    def validate(model: onnx.ModelProto, items) -> tuple[float, list[float]]:
        """Agreement with FP32's top-1, and each image's 0/1 (NNCF ranks its groups by these)."""
        with tempfile.TemporaryDirectory(dir=work) as d:
            path = Path(d) / "m.onnx"
            onnx.save(model, str(path))
            compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            each = []
            for x, idx in items:
                top1 = np.asarray(compiled(x)[0]).argmax(1)
                each += [float(v) for v in (top1 == ref[idx])]
        return float(np.mean(each)) if each else 0.0, each

    model = onnx.load(str(fp32))
    name = model.graph.input[0].name
    calib_ds = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {name: x})
    val_ds = nncf.Dataset([(search[i:i + 1], np.array([i])) for i in range(len(search))])
    t0 = time.perf_counter()
    q = nncf.quantize_with_accuracy_control(model, calib_ds, val_ds, validation_fn=validate, max_drop=1 - target + 1e-9,
                                            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib))
    seconds = time.perf_counter() - t0
    path = work / f"nncf-{target:g}.onnx"
    onnx.save(q, str(path))
    s = scores(measures, path)
    return {"tool": "NNCF", "met": s["search"] >= target - 1e-12, "seconds": round(seconds, 1), **s}


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(r: dict, command: str) -> str:
    lines = ["# INT8 to an accuracy target: the toolkit vs NNCF's accuracy control", "",
             "Same FP32 ONNX, same 64 calibration views, same 240 search crops and 240 held-out crops (agreement with "
             "FP32's top-1; FP32 = 100% on both); every model scored here on OpenVINO CPU. Met: search score >= T. "
             "INT8 convs: convolutions whose data input comes from a DequantizeLinear.", "",
             "| network | T | tool | met? | convs still INT8 | search | held-out | wall time | kept / notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        for x in (row["plain"], row["toolkit"], row["nncf"]):
            if x is None:
                continue
            tool = x["tool"]
            if "error" in x:
                lines.append(f"| ResNet-{row['depth']} | {row['target']:g} | {tool} | no | - | - | - | {x['seconds']:.0f} s "
                             f"| {x['error'][:160]} |")
                continue
            met = "-" if tool == "plain INT8" else ("yes" if x["met"] else "no")
            notes = ", ".join(f"`{k}`" for k in x.get("kept", [])) if tool == "toolkit" else ""
            lines.append(f"| ResNet-{row['depth']} | {row['target']:g} | {tool} | {met} | {x['int8_convs']}/{x['convs']} "
                         f"({x['int8_convs'] / x['convs']:.0%}) | {pct(x['search'])} | {pct(x['heldout'])} "
                         f"| {x.get('seconds', 0):.0f} s | {notes} |")
    lines += ["", "## How it was made", "", "```", command, "```", "",
              f"Toolkit at git {r['git']}; nncf {r['nncf']}. {r['machine']}. The machine's 2 cores were shared with "
              "other jobs while this ran: wall times are indicative, compare them within one row pair.", ""]
    return "\n".join(lines)


def plot_tradeoff(r: dict, path: Path) -> None:
    """The trade-off each tool made: share of convolutions left INT8 (x) against the held-out score (y), one point per
    target it met (labelled with T), plain INT8 as the starting point; one panel per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({row["depth"] for row in r["rows"]})
    fig, axes = plt.subplots(1, len(depths), figsize=(6.5 * len(depths), 5), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        rows = [row for row in r["rows"] if row["depth"] == depth]
        for key, label, style in (("toolkit", "toolkit --accuracy-target", "o-"), ("nncf", "NNCF accuracy control", "s--")):
            pts = sorted((x["int8_convs"] / x["convs"], x["heldout"], row["target"]) for row in rows
                         for x in [row[key]] if x and "error" not in x and x.get("met"))
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, label=label)
                for share, held, target in pts:
                    ax.annotate(f"{target:g}", (share, 100 * held), textcoords="offset points", xytext=(4, 4), fontsize=8)
            missed = [row["target"] for row in rows if row[key] and ("error" in row[key] or not row[key].get("met"))]
            if missed:
                ax.plot([], [], " ", label=f"{label.split()[0]}: not met at {', '.join(f'{t:g}' for t in missed)}")
        plain = next((row["plain"] for row in rows if row["plain"]), None)
        if plain:
            ax.plot([plain["int8_convs"] / plain["convs"]], [100 * plain["heldout"]], "k*", markersize=12, label="plain INT8")
        ax.set_title(f"ResNet-{depth}: INT8 share vs held-out agreement with FP32")
        ax.set_xlabel("convolutions with INT8 input (share)")
        ax.set_ylabel("held-out top-1 agreement with FP32 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="20")
    ap.add_argument("--targets", default="0.97,0.99")
    ap.add_argument("--max-excluded", type=int, default=None, help="toolkit: default half the units")
    ap.add_argument("--work", type=Path, default=Path("/tmp/resnet-deploy-vs-nncf"))
    ap.add_argument("--name", default="vs_nncf", help="results file stem (<name>.md, <name>.json beside this file)")
    ap.add_argument("--no-results", action="store_true")
    ap.add_argument("--replot", type=Path, help="draw <name>.png from this results JSON, and stop")
    args = ap.parse_args(argv)
    if args.replot:
        plot_tradeoff(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return 0
    import nncf

    bench = bench_module()
    args.work.mkdir(parents=True, exist_ok=True)
    folders = {"search": args.work / "views-search", "heldout": args.work / "views-heldout"}
    bench.write_views(folders["search"], VIEWS, bench.SEARCH_SEED)
    bench.write_views(folders["heldout"], VIEWS, bench.HELDOUT_SEED)
    rows = []
    for depth in map(int, args.depths.split(",")):
        weights = bench.CHECKPOINTS[depth]
        work = args.work / f"resnet{depth}"
        fp32 = Path(rd.export(depth, weights=weights, out_dir=work)["path"])
        recipe = recipe_from_metadata(read_metadata(onnx.load(str(fp32), load_external_data=False)))
        sets = {k: load_eval_set(f, recipe) for k, f in folders.items()}
        measures = {k: Measure(fp32, s, work, backend="openvino") for k, s in sets.items()}
        calib = load_calibration(None, recipe, samples=CALIB).batch
        t0 = time.perf_counter()
        plain = rd.quantize(depth, "int8", weights=weights, out_dir=work / "plain", calib_samples=CALIB, force=True)
        plain_row = {"tool": "plain INT8", "seconds": round(time.perf_counter() - t0, 1), **scores(measures, Path(plain["path"]))}
        units = 3 * (depth - 2) // 6 + 2
        limit = args.max_excluded if args.max_excluded is not None else units // 2
        for i, target in enumerate(map(float, args.targets.split(","))):
            log(f"== ResNet-{depth} at {target:g}: toolkit")
            tk = toolkit(depth, weights, target, folders, work, measures, limit)
            log(f"   {tk}")
            log(f"== ResNet-{depth} at {target:g}: NNCF")
            nn = nncf_run(fp32, target, calib, sets["search"].batch, work, measures)
            log(f"   {nn}")
            rows.append({"depth": depth, "target": target, "plain": plain_row if i == 0 else None, "toolkit": tk,
                         "nncf": nn, "max_excluded": limit})
    digits = bench.digits_module()
    r = {"git": git_revision(HERE.parents[1]), "nncf": nncf.__version__, "machine": digits._machine(), "rows": rows}
    if not args.no_results:
        cmd = "python benchmarks/int8-target/vs_nncf.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        (HERE / f"{args.name}.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
        (HERE / f"{args.name}.md").write_text(markdown(r, cmd))
        plot_tradeoff(r, HERE / f"{args.name}.png")
        log(f"wrote {HERE / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
