"""INT8 to an accuracy target on trained networks: plain INT8 vs the tuned INT8, on images the search never saw.

    python benchmarks/int8-target/run.py                 # writes results.md and results.json here
    python benchmarks/int8-target/run.py --quick --no-results

What it runs is what ``resnet-deploy quantize --precision int8 --accuracy-target T --data DIR``
runs (``pipeline.ensure_tuned_int8``), on networks where plain INT8 loses accuracy:

- the digits ResNet-18 (benchmarks/digits/run.py's training, 30 epochs, seed 0), calibrated the
  cheap way: no ``--calib``, so ModelOpt fits its ranges on the 64 bundled photo views instead of
  digits. The 540 held-out digits are split in two, stratified and seeded: 270 for the search
  (``--data``, labelled: top-1) and 270 that only the final check sees.
- the paper's CIFAR-10 ResNet-20 and ResNet-56 (their public checkpoints in tests/data/), also
  calibrated on the bundled photo views. No CIFAR-10 images are on this machine, so the search
  and the check use two sets of differently seeded 32x32 crops of the 8 bundled photographs (other
  crops of the same photographs: less independent than a real held-out split), written as PNGs in a
  flat folder (unlabelled), and the score is agreement with FP32's top-1, as ``diagnose`` reports it.

For each: FP32, plain INT8 and tuned INT8 scores on the search images and on the held-out
images, the blocks kept in high precision, how many convolutions keep INT8 input, and the search's
time and number of candidate evaluations (ONNX Runtime CPU, this machine's 2 cores). Then the
cost of a full sensitivity ranking (``resnet-deploy diagnose``, one candidate per unit) on the
seeded ImageNet ResNet-18 and ResNet-50 at 224x224, which bounds what a search costs there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from resnet_deploy import api, pipeline  # noqa: E402
from resnet_deploy.artifacts import Precision  # noqa: E402
from resnet_deploy.bench import git_revision  # noqa: E402
from resnet_deploy.errors import UserError  # noqa: E402
from resnet_deploy.model import ModelRef  # noqa: E402
from resnet_deploy.onnx_meta import read_metadata  # noqa: E402
from resnet_deploy.precision import QuantizeOptions  # noqa: E402
from resnet_deploy.preprocess import SAMPLE_IMAGES, Preprocess, recipe_from_metadata, to_rgb_pil  # noqa: E402
from resnet_deploy.tuning import Measure, TuningOptions, int8_conv_share, load_eval_set  # noqa: E402

CIFAR = ROOT / "tests" / "data" / "cifar10-resnet"
CHECKPOINTS = {20: CIFAR / "resnet20-12fca82f.th", 56: CIFAR / "resnet56-4bfd9763.th"}
SEARCH_SEED, HELDOUT_SEED = 303, 404


def digits_module():
    spec = importlib.util.spec_from_file_location("digits_run", ROOT / "benchmarks" / "digits" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def digits_case(work: Path, epochs: int, target: float, log) -> dict:
    """The trained digits ResNet-18, its FP32 export, and the search / held-out folders (labelled)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = digits_module()
    d = load_digits()
    idx_train, idx_test = train_test_split(np.arange(len(d.target)), test_size=0.3, stratify=d.target, random_state=0)
    idx_search, idx_held = train_test_split(idx_test, test_size=0.5, stratify=d.target[idx_test], random_state=0)
    for name, idx in (("train", idx_train), ("search", idx_search), ("heldout", idx_held)):
        if not (work / name).is_dir():
            digits.write_split(d.images, d.target, work / name, idx)
    recipe = Preprocess(**digits.RECIPE_KW)
    weights = work / "digits_resnet18.pth"
    if not weights.is_file():
        x, y = digits.load_split(work / "train", recipe)
        log(f"training the digits ResNet-18 ({epochs} epochs)")
        torch.save(digits.train(x, y, epochs=epochs, seed=0, log=log).state_dict(), weights)
    engines = work / "engines"
    # the trained file, exported at the 32x32 recipe it was trained with (reused while it matches)
    model = ModelRef.of(18, weights=weights, num_classes=10, recipe=recipe)
    fp32 = Path(pipeline.ensure_onnx(model, out_dir=engines, progress=log)["path"])
    return {"name": "digits ResNet-18", "depth": 18, "fp32": fp32, "engines": engines, "search": work / "search",
            "heldout": work / "heldout", "images": f"{len(idx_search)} / {len(idx_held)} held-out digits (labelled)",
            "weights": f"trained on {len(idx_train)} digits, {epochs} epochs (benchmarks/digits/run.py)",
            "model": model, "target": target}


def write_views(folder: Path, n: int, seed: int, size: int = 32) -> None:
    """``n`` seeded crops (random scale, position, flip) of the bundled photographs, as size x size PNGs."""
    import skimage.data
    from PIL import Image

    if folder.is_dir() and len(list(folder.glob("*.png"))) == n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = [to_rgb_pil(getattr(skimage.data, name)()) for name in SAMPLE_IMAGES]
    for i in range(n):
        img = sources[i % len(sources)]
        w, h = img.size
        frac = rng.uniform(0.2, 1.0)
        cw, ch = max(32, int(w * frac)), max(32, int(h * frac))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        view = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            view = view.transpose(Image.FLIP_LEFT_RIGHT)
        view.save(folder / f"{i:04d}.png")


def cifar_case(depth: int, work: Path, views: int, target: float, log, max_excluded: int | None = None) -> dict:
    engines = work / f"cifar{depth}"
    weights = CHECKPOINTS[depth]
    model = ModelRef.of(depth, weights=weights)
    fp32 = pipeline.ensure_onnx(model, out_dir=engines, progress=log)["path"]
    write_views(work / f"views{views}-search", views, SEARCH_SEED)
    write_views(work / f"views{views}-heldout", views, HELDOUT_SEED)
    name = f"CIFAR-10 ResNet-{depth}" + (f" (--max-excluded {max_excluded})" if max_excluded is not None else "")
    name += f" at {target:g}"
    return {"name": name, "max_excluded": max_excluded, "depth": f"resnet{depth}", "fp32": Path(fp32), "engines": engines,
            "search": work / f"views{views}-search", "heldout": work / f"views{views}-heldout",
            "images": f"{views} / {views} held-out photo crops (unlabelled: agreement with FP32)",
            "weights": f"{weights.name} (akamaster/pytorch_resnet_cifar10)", "model": model, "target": target}


def tune(case: dict, log) -> dict:
    """Plain INT8 and tuned INT8 for one case, both scored on the search and the held-out images."""
    target = case["target"]
    fp32 = case["fp32"]
    meta = read_metadata(fp32)
    recipe = recipe_from_metadata(meta)
    sets = {k: load_eval_set(case[k], recipe, label_set=meta.get("label_set", "imagenet")) for k in ("search", "heldout")}
    work = case["engines"] / "scratch"
    work.mkdir(parents=True, exist_ok=True)
    measures = {k: Measure(fp32, s, work) for k, s in sets.items()}
    plain = pipeline.ensure_precision(case["model"], Precision.INT8, out_dir=case["engines"], source=fp32, force=True,
                                      progress=log)
    plain_copy = work / "plain.int8.onnx"
    shutil.copyfile(plain["path"], plain_copy)
    t0 = time.perf_counter()
    try:
        tuning = TuningOptions(accuracy_target=target, data=case["search"], max_excluded=case.get("max_excluded"))
        tuned = pipeline.ensure_tuned_int8(case["model"], tuning, out_dir=case["engines"], source=fp32, force=True,
                                           progress=log)
    except UserError as e:  # the target is out of reach: what quantize prints, recorded as the result
        log(f"error: {e}")
        return {"name": case["name"], "weights": case["weights"], "images": case["images"], "target": target,
                "n": {k: len(v.batch) for k, v in sets.items()},
                "metric": sets["search"].metric, "fp32": {k: m.reference for k, m in measures.items()},
                "plain": {k: m.score(plain_copy, "plain") for k, m in measures.items()}, "error": str(e),
                "quantize_seconds": round(time.perf_counter() - t0, 1)}
    seconds = time.perf_counter() - t0
    scores = {}
    for label, path in (("plain", plain_copy), ("tuned", Path(tuned["path"]))):
        model = onnx.load(str(path))
        int8_convs, convs = int8_conv_share(model)
        scores[label] = {k: m.score(path, label) for k, m in measures.items()}
        scores[label]["int8_convs"], scores[label]["convs"] = int8_convs, convs
    t = tuned["tuning"]
    return {"name": case["name"], "weights": case["weights"], "images": case["images"], "metric": sets["search"].metric,
            "n": {k: len(v.batch) for k, v in sets.items()},
            "target": target, "fp32": {k: m.reference for k, m in measures.items()},
            "plain": scores["plain"], "tuned": scores["tuned"], "kept": t["kept"], "candidates": t["candidates"],
            "max_excluded": t["max_excluded"], "ranking": [r["unit"] for r in t["ranking"]],
            "steps": [{"kept": s["kept"], "score": s["score"], "accepted": s["accepted"]} for s in t["steps"]],
            "evaluations": t["evaluations"], "search_seconds": t["search_seconds"],
            "quantize_seconds": round(seconds, 1), "calibration": tuned["calibration"]["source"],
            "excluded_nodes": len(tuned["conversion"].get("excluded") or [])}


CHEAP_CALIBRATIONS = ((None, 1, "minmax"), (None, 4, "minmax"), (None, 8, "entropy"), (None, 64, "entropy"),
                      (None, 64, "minmax"), ("train", 1, "minmax"), ("train", 2, "entropy"), ("train", 8, "minmax"))


def calibration_sweep(case: dict, log) -> list[dict]:
    """Plain INT8 of the digits ResNet-18 under cheap calibrations: does any of them lose top-1?"""
    meta = read_metadata(case["fp32"])
    recipe = recipe_from_metadata(meta)
    work = case["engines"] / "scratch"
    measures = {k: Measure(case["fp32"], load_eval_set(case[k], recipe, label_set=meta.get("label_set", "imagenet")), work)
                for k in ("search", "heldout")}
    rows = []
    for folder, samples, method in CHEAP_CALIBRATIONS:
        calib = None if folder is None else case["search"].parent / folder
        options = QuantizeOptions(calib=calib, calib_samples=samples, method=method, min_calib_images=1)
        made = pipeline.ensure_precision(case["model"], Precision.INT8, out_dir=case["engines"], source=case["fp32"],
                                         options=options, force=True, progress=log)
        rows.append({"calibration": f"{samples} {'bundled photo view(s)' if folder is None else 'training digit(s)'}",
                     "method": method, **{k: m.score(made["path"], "plain")["score"] for k, m in measures.items()},
                     "fp32": {k: m.reference for k, m in measures.items()}, "n": {k: len(m.images.batch) for k, m in measures.items()}})
    return rows


def ranking_cost(depth: int, work: Path, images: int, log) -> dict:
    """Time of a full sensitivity ranking (diagnose) on the seeded ImageNet ResNet at 224x224."""
    t0 = time.perf_counter()
    report = api.diagnose(depth, out_dir=work / f"imagenet{depth}", limit=images, calib_samples=images, progress=log)
    seconds = time.perf_counter() - t0
    return {"depth": depth, "images": report["images"]["images"], "units": len(report["blocks"]),
            "evaluations": report["evaluations"], "diagnose_seconds": round(seconds, 1),
            "ranking_seconds": report["seconds"],
            "seconds_per_evaluation": round(report["seconds"] / max(1, report["evaluations"]), 2),
            "int8_agreement": report["int8"]["score"]}


def log(message: str) -> None:
    print(message, file=sys.stderr)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def both(c: dict, scores: dict) -> str:
    """``search / held-out`` scores with the image counts behind them."""
    return " / ".join(f"{pct(scores[k])} ({round(scores[k] * c['n'][k])})" for k in ("search", "heldout"))


def markdown(r: dict, command: str) -> str:
    lines = [
        "# INT8 to an accuracy target: plain INT8 vs tuned INT8 on trained networks",
        "",
        "Target: INT8 score >= T x FP32's on the search images "
        "(`resnet-deploy quantize --precision int8 --accuracy-target T --data DIR`, i.e. "
        "`pipeline.ensure_tuned_int8`). Every network is calibrated the cheap way "
        "(no `--calib`: 64 views of the bundled photographs, not images of its task). The CIFAR ResNets lose "
        "agreement under plain INT8 this way; the digits ResNet-18 does not (it keeps its top-1 with every cheap "
        "calibration tried), so its row shows the search stopping at once. Scores come from ONNX "
        "Runtime CPU; \"held-out\" images were never seen by the search; in brackets, the images behind each "
        "score (agreeing with FP32, or correctly classified). Convs with INT8 input: of all Conv/Gemm "
        "layers, how many still read a DequantizeLinear.",
        "",
        "| network | images (search / held-out) | metric | T | FP32 search / held-out | plain INT8 search / held-out "
        "| tuned INT8 search / held-out | kept in high precision | convs with INT8 input (plain -> tuned) "
        "| search: evaluations, seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["cases"]:
        if "tuned" not in c:
            lines.append(f"| {c['name']} | {c['images']} | {c['metric']} | {c['target']:g} "
                         f"| {both(c, c['fp32'])} | {both(c, {k: c['plain'][k]['score'] for k in c['n']})} "
                         f"| not met (see below) | - | - | - |")
            continue
        lines.append(
            f"| {c['name']} | {c['images']} | {c['metric']} | {c['target']:g} "
            f"| {both(c, c['fp32'])} | {both(c, {k: c['plain'][k]['score'] for k in c['n']})} "
            f"| {both(c, {k: c['tuned'][k]['score'] for k in c['n']})} "
            f"| {len(c['kept'])} of {c['candidates']}: {', '.join(f'`{k}`' for k in c['kept']) or 'none'} "
            f"| {c['plain']['int8_convs']}/{c['plain']['convs']} -> {c['tuned']['int8_convs']}/{c['tuned']['convs']} "
            f"| {c['evaluations']}, {c['search_seconds']:.1f} s |")
    lines += ["", "Search order (sensitivity ranking, best first) and the steps it took:", ""]
    for c in r["cases"]:
        if "tuned" not in c:
            lines.append(f"- {c['name']}: quantize failed after {c['quantize_seconds']:.1f} s with `{c['error']}`")
            continue
        steps = "; ".join(f"+{s['kept'][-1]} -> {pct(s['score'])}{'' if s['accepted'] else ' (no gain: left in INT8)'}"
                          for s in c["steps"]) or "none"
        order = ", ".join(c["ranking"][:6]) + (", ..." if len(c["ranking"]) > 6 else "")
        gain = {k: 100 * (c["tuned"][k]["score"] - c["plain"][k]["score"]) for k in c["n"]}
        lines.append(f"- {c['name']}: gain over plain INT8 {gain['search']:+.2f} pp on the search images, "
                     f"{gain['heldout']:+.2f} pp held-out; ranking {order or 'not needed (plain INT8 met the target)'}; "
                     f"steps: {steps}; whole quantize (ModelOpt, search, ModelOpt again unless nothing was kept, final check) "
                     f"{c['quantize_seconds']:.1f} s; --max-excluded {c['max_excluded']}.")
    if r["calibration_sweep"]:
        lines += ["", "## Does a cheap calibration cost the digits ResNet-18 top-1?", "",
                  "Plain INT8 (no search) of the digits ResNet-18 under cheap calibrations, top-1 on the same two "
                  "image sets; FP32 for comparison:", "",
                  "| calibration | method | top-1 search | top-1 held-out |", "|---|---|---|---|"]
        first = r["calibration_sweep"][0]
        lines.append(f"| FP32 | - | {both(first, first['fp32']).replace(' / ', ' | ')} |")
        for row in r["calibration_sweep"]:
            lines.append(f"| {row['calibration']} | {row['method']} | "
                         f"{both(row, row).replace(' / ', ' | ')} |")
    searched = [c for c in r["cases"] if c.get("steps")]
    example = max(searched, key=lambda c: c["evaluations"]) if searched else None
    breakdown = (f" ({example['name']} above: 1 + {example['candidates']} + {len(example['steps']) - 1} + 1 = "
                 f"{example['evaluations']})" if example else "")
    lines += [
        "",
        "## Cost of the search on ImageNet-size ResNets",
        "",
        "A search that cannot stop at plain INT8 scores plain INT8, ranks every unit once, tries units in rank order "
        "(the first is the ranking's own measurement; a unit that does not improve the score is left in INT8 and the "
        "next is tried) and checks the final file: from units + 2 to 2 x units + 1 candidate evaluations, plus two "
        f"ModelOpt quantizations{breakdown}. `resnet-deploy diagnose` runs the full ranking; its ranking time on the "
        "seeded ResNets at 224x224, on this machine's 2 cores:",
        "",
        "| network | images | units | evaluations | ranking (s) | s per evaluation |",
        "|---|---|---|---|---|---|",
    ]
    for c in r["ranking_cost"]:
        lines.append(f"| ResNet-{c['depth']} (seeded) | {c['images']} | {c['units']} | {c['evaluations']} "
                     f"| {c['ranking_seconds']:.1f} | {c['seconds_per_evaluation']:.2f} |")
    lines += [
        "",
        "Evaluation time grows with images x network cost: 500 ImageNet validation images on ResNet-50 would take about "
        "500/N times the per-evaluation figure above, per candidate (use `--limit` to cap the images).",
        "",
        "## How it was made",
        "",
        "```",
        command,
        "```",
        "",
        f"Toolkit at git {r['git']}. Machine: {r['machine']}. Total run time {r['seconds']:.0f} s.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=0.99, help="for the digits (top-1 on labelled images)")
    ap.add_argument("--agreement-target", type=float, default=0.97,
                    help="for the CIFAR ResNets (agreement with FP32 on unlabelled photo crops)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--views", type=int, default=768, help="photo crops in each CIFAR image set")
    ap.add_argument("--ranking-images", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="digits and ResNet-20 only, no ImageNet ranking cost")
    ap.add_argument("--work", type=Path, default=Path("/tmp/resnet-deploy-int8-target"))
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    revision = git_revision(ROOT)
    args.work.mkdir(parents=True, exist_ok=True)
    cases = [digits_case(args.work / "digits", args.epochs, args.target, log),
             cifar_case(20, args.work, args.views, args.agreement_target, log)]
    if not args.quick:
        cases += [cifar_case(20, args.work, args.views, args.agreement_target - 0.01, log, max_excluded=4),
                  cifar_case(56, args.work, args.views, args.agreement_target, log)]
    results = []
    for case in cases:
        log(f"== {case['name']}")
        results.append(tune(case, log))
        c = results[-1]
        log(f"{c['name']}: FP32 {pct(c['fp32']['heldout'])}, plain {pct(c['plain']['heldout']['score'])}, "
            + (f"tuned {pct(c['tuned']['heldout']['score'])} held-out; kept {c['kept']}" if "tuned" in c else c["error"]))
    sweep = [] if args.quick else calibration_sweep(cases[0], log)
    costs = [] if args.quick else [ranking_cost(d, args.work, args.ranking_images, log) for d in (18, 50)]
    digits = digits_module()
    r = {"git": revision, "cases": results, "calibration_sweep": sweep, "ranking_cost": costs,
         "versions": digits._versions(), "machine": digits._machine(), "seconds": time.perf_counter() - t0}
    if not args.no_results:
        cmd = "python benchmarks/int8-target/run.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        (HERE / "results.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
        (HERE / "results.md").write_text(markdown(r, cmd))
        log(f"wrote {HERE / 'results.md'}")
    failed = [c["name"] for c in results
              if "tuned" in c and c["tuned"]["search"]["score"] < c["target"] * c["fp32"]["search"] - 1e-12]
    if failed:  # the acceptance check inside quantize makes this impossible; the benchmark checks it anyway
        log(f"tuned INT8 below the target on its own search images: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
