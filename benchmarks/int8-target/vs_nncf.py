"""The toolkit's ``quantize --accuracy-target`` vs NNCF's ``quantize_with_accuracy_control``, side by side.

    pip install nncf                                            # benchmarks only
    python benchmarks/int8-target/vs_nncf.py --depths 20 --targets 0.97,0.99 --no-results   # a quick look
    python benchmarks/int8-target/vs_nncf.py --depths 20,56,digits --targets 0.97,0.98,0.99 --name grid  # the grid
    python benchmarks/int8-target/vs_nncf.py ... --nncf-from benchmarks/int8-target/tradeoff.json  # NNCF rows reused
    python benchmarks/int8-target/vs_nncf.py --replot benchmarks/int8-target/grid.json  # the trade-off plot again

grid.md/json/png is the committed grid (the toolkit's default search; NNCF's CIFAR rows reused from
tradeoff.json); tradeoff.md/json/png is the previous round's run, the greedy search alone, at 0.96-0.99.

Both start from the same FP32 ONNX (the toolkit's export of the trained CIFAR-10 ResNet-20/56 in
tests/data/cifar10-resnet), calibrate on the same 64 bundled photo views (the toolkit's default
calibration set), search on the same 240 photo crops and are checked on 240 other crops
(run.py's seeded crops; agreement with FP32's top-1 stands in for accuracy, so FP32 scores 100%
and target T is an absolute drop of 1 - T). The digits ResNet-18 (``--depths digits``: run.py's
training, 30 epochs, also calibrated on the photo views) is searched on 270 labelled digits and
checked on 270 others, by top-1 (target T: a drop of at most (1 - T) x FP32's top-1). Both score candidates on OpenVINO CPU (the toolkit's
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
import os
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
from resnet_deploy.model import ModelRef  # noqa: E402
from resnet_deploy.onnx_meta import read_metadata  # noqa: E402
from resnet_deploy.precision import load_calibration  # noqa: E402
from resnet_deploy.preprocess import recipe_from_metadata  # noqa: E402
from resnet_deploy.tuning import Measure, int8_conv_share, load_eval_set  # noqa: E402

VIEWS = 240
CALIB = 64
LOAD_UNKNOWN = "The load on the machine while this ran was not recorded: compare wall times within one row pair."


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


def toolkit(model, target: float, folders: dict, work: Path, measures: dict, max_excluded: int | None) -> dict:
    t0 = time.perf_counter()
    try:
        m = rd.quantize(model, "int8", out_dir=work / "toolkit", calib_samples=CALIB, force=True,
                        accuracy_target=target, data=folders["search"], holdout=folders["heldout"],
                        max_excluded=max_excluded, score_engine="openvino", progress=lambda s: None)
    except UserError as e:
        return {"tool": "toolkit", "met": False, "error": str(e), "seconds": round(time.perf_counter() - t0, 1)}
    seconds = time.perf_counter() - t0
    t = m["tuning"]
    return {"tool": "toolkit", "met": True, "kept": t["kept"], "evaluations": t["evaluations"], "strategy": t.get("search"),
            "fallback": t.get("fallback"),
            "seconds": round(seconds, 1), **scores(measures, Path(m["path"]))}


def nncf_run(fp32: Path, target: float, calib: np.ndarray, search: np.ndarray, work: Path, measures: dict) -> dict:
    import nncf
    import openvino

    m = measures["search"]
    ref = m.images.labels if m.images.labels is not None else m.fp32_logits.argmax(1)
    core = openvino.Core()

    def validate(model: onnx.ModelProto, items) -> tuple[float, list[float]]:
        """The set's metric (top-1 on labelled images, else agreement with FP32's top-1), and each image's 0/1
        (NNCF ranks its groups by these)."""
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
    q = nncf.quantize_with_accuracy_control(model, calib_ds, val_ds, validation_fn=validate,
                                            max_drop=(1 - target) * m.reference + 1e-9,
                                            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib))
    seconds = time.perf_counter() - t0
    path = work / f"nncf-{target:g}.onnx"
    onnx.save(q, str(path))
    s = scores(measures, path)
    return {"tool": "NNCF", "met": s["search"] >= target * m.reference - 1e-12, "seconds": round(seconds, 1), **s}


def network(row: dict) -> str:
    """The row's network (files written before the digits case name it by depth only)."""
    return row.get("network") or f"ResNet-{row['depth']}"


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(r: dict, command: str) -> str:
    lines = ["# INT8 to an accuracy target: the toolkit vs NNCF's accuracy control", "",
             "Same FP32 ONNX, same 64 calibration views, same 240 search crops and 240 held-out crops (agreement with "
             "FP32's top-1; FP32 = 100% on both); every model scored here on OpenVINO CPU. Met: search score >= T x FP32's. "
             "INT8 convs: convolutions whose data input comes from a DequantizeLinear.", "",
             *([f"The digits ResNet-18 rows: {r['digits']}.", ""] if r.get("digits") else []),
             *([f"NNCF rows marked (reused): {r['nncf_from']}.", ""] if r.get("nncf_from") else []),
             "| network | T | tool | met? | convs still INT8 | search | held-out | wall time | kept / notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        for x in (row["plain"], row["toolkit"], row["nncf"]):
            if x is None:
                continue
            tool = x["tool"]
            if "error" in x:
                lines.append(f"| {network(row)} | {row['target']:g} | {tool} | no | - | - | - | {x['seconds']:.0f} s "
                             f"| {x['error'][:160]} |")
                continue
            met = "-" if tool == "plain INT8" else ("yes" if x["met"] else "no")
            notes = ", ".join(f"`{k}`" for k in x.get("kept", [])) if tool == "toolkit" else ""
            if tool == "toolkit" and x.get("strategy"):
                notes = f"{x['strategy']}{' (after error-ranked failed)' if x.get('fallback') else ''}: {notes or 'nothing kept'}"
            if x.get("reused"):
                tool += " (reused)"
            lines.append(f"| {network(row)} | {row['target']:g} | {tool} | {met} | {x['int8_convs']}/{x['convs']} "
                         f"({x['int8_convs'] / x['convs']:.0%}) | {pct(x['search'])} | {pct(x['heldout'])} "
                         f"| {x.get('seconds', 0):.0f} s | {notes} |")
    lines += ["", "## How it was made", "", "```", command, "```", "",
              f"Toolkit at git {r['git']}; nncf {r['nncf']}. {r['machine']}. {r.get('load', LOAD_UNKNOWN)}", ""]
    return "\n".join(lines)


def plot_tradeoff(r: dict, path: Path) -> None:
    """The trade-off each tool made: share of convolutions left INT8 (x) against the held-out score (y), one point per
    target it met (labelled with T), plain INT8 as the starting point; one panel per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(network(row) for row in r["rows"]))
    fig, axes = plt.subplots(1, len(nets), figsize=(6.5 * len(nets), 5), squeeze=False)
    for ax, net in zip(axes[0], nets):
        rows = [row for row in r["rows"] if network(row) == net]
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
        ax.set_title(f"{net}: INT8 share vs held-out score")
        ax.set_xlabel("convolutions with INT8 input (share)")
        ax.set_ylabel("held-out score (%): top-1 (digits) or agreement with FP32")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cases(depths: str, work: Path, folders: dict) -> list[dict]:
    """The networks: ``20``/``56`` (the trained CIFAR ResNets on the photo crops, agreement with FP32) and ``digits``
    (run.py's trained digits ResNet-18 on its 270 search / 270 held-out digits, top-1)."""
    bench = bench_module()
    out = []
    for name in depths.split(","):
        if name == "digits":
            case = bench.digits_case(work / "digits", 30, 0.99, log)
            out.append({"network": "digits ResNet-18", "model": case["model"], "fp32": case["fp32"], "work": work / "digits",
                        "folders": {"search": case["search"], "heldout": case["heldout"]}, "about": case["weights"]})
            continue
        depth = int(name)
        net_work = work / f"resnet{depth}"
        model = ModelRef.of(depth, weights=bench.CHECKPOINTS[depth])
        fp32 = Path(rd.export(model, out_dir=net_work)["path"])
        out.append({"network": f"ResNet-{depth}", "model": model, "fp32": fp32, "work": net_work, "folders": folders})
    return out


def reused_nncf(path: Path | None) -> tuple[dict, str | None]:
    """{(network, target): NNCF row} from an earlier results file (same FP32 ONNX, images and calibration), and
    where it came from."""
    if path is None:
        return {}, None
    old = json.loads(path.read_text())
    rows = {(network(row), row["target"]): {**row["nncf"], "reused": True} for row in old["rows"] if row.get("nncf")}
    return rows, f"NNCF {old['nncf']} results from {path.name}, made at toolkit git {old['git']} on the same FP32 ONNX, " \
                 "calibration views and images (NNCF's side does not run the toolkit's search)"


def load_line(start: tuple[float, ...], end: tuple[float, ...]) -> str:
    return (f"Load average (1, 5, 15 min) {start[0]:.2f} / {start[1]:.2f} / {start[2]:.2f} when it started and "
            f"{end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f} when it ended, on {os.cpu_count()} logical CPUs (this run's "
            "own threads included): compare wall times within one row pair.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="20", help="comma-separated: 20, 56 (CIFAR ResNets), digits (the digits ResNet-18)")
    ap.add_argument("--targets", default="0.97,0.99")
    ap.add_argument("--max-excluded", type=int, default=None, help="toolkit: default the command's (half the convolutions)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/resnet-deploy-vs-nncf"))
    ap.add_argument("--name", default="vs_nncf", help="results file stem (<name>.md, <name>.json beside this file)")
    ap.add_argument("--nncf-from", type=Path, help="take NNCF's rows from this earlier results JSON where it has the "
                                                   "network and target (NNCF takes minutes a run; its side is unchanged)")
    ap.add_argument("--no-results", action="store_true")
    ap.add_argument("--replot", type=Path, help="draw <name>.png from this results JSON, and stop")
    args = ap.parse_args(argv)
    if args.replot:
        plot_tradeoff(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return 0
    import nncf

    load0 = os.getloadavg()
    bench = bench_module()
    args.work.mkdir(parents=True, exist_ok=True)
    folders = {"search": args.work / "views-search", "heldout": args.work / "views-heldout"}
    bench.write_views(folders["search"], VIEWS, bench.SEARCH_SEED)
    bench.write_views(folders["heldout"], VIEWS, bench.HELDOUT_SEED)
    reuse, reuse_from = reused_nncf(args.nncf_from)
    rows, digits_about = [], None
    for case in cases(args.depths, args.work, folders):
        net, fp32, work = case["network"], case["fp32"], case["work"]
        digits_about = case.get("about", digits_about)
        recipe = recipe_from_metadata(read_metadata(onnx.load(str(fp32), load_external_data=False)))
        sets = {k: load_eval_set(f, recipe) for k, f in case["folders"].items()}
        measures = {k: Measure(fp32, s, work, backend="openvino") for k, s in sets.items()}
        calib = load_calibration(None, recipe, samples=CALIB).batch
        t0 = time.perf_counter()
        plain = rd.quantize(case["model"], "int8", out_dir=work / "plain", calib_samples=CALIB, force=True)
        plain_row = {"tool": "plain INT8", "seconds": round(time.perf_counter() - t0, 1), **scores(measures, Path(plain["path"]))}
        for i, target in enumerate(map(float, args.targets.split(","))):
            log(f"== {net} at {target:g}: toolkit")
            tk = toolkit(case["model"], target, case["folders"], work, measures, args.max_excluded)
            log(f"   {tk}")
            nn = reuse.get((net, target))
            if nn is None:
                log(f"== {net} at {target:g}: NNCF")
                nn = nncf_run(fp32, target, calib, sets["search"].batch, work, measures)
            log(f"   {nn}")
            rows.append({"network": net, "target": target, "plain": plain_row if i == 0 else None, "toolkit": tk,
                         "nncf": nn, "max_excluded": args.max_excluded})
    r = {"git": git_revision(HERE.parents[1]), "nncf": nncf.__version__, "machine": bench.digits_module()._machine(),
         "rows": rows, "load": load_line(load0, os.getloadavg()), "digits": digits_about, "nncf_from": reuse_from}
    if not args.no_results:
        cmd = "python benchmarks/int8-target/vs_nncf.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        (HERE / f"{args.name}.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
        (HERE / f"{args.name}.md").write_text(markdown(r, cmd))
        plot_tradeoff(r, HERE / f"{args.name}.png")
        log(f"wrote {HERE / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
