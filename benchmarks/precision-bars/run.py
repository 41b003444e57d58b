"""Where the parity bars come from: trained networks, correct and deliberately broken, measured.

    python benchmarks/precision-bars/run.py            # writes results.md and results.json here

For each trained network (the paper's CIFAR-10 ResNet-20 and ResNet-56 with their public
checkpoints, and the digits ResNet-18 that benchmarks/digits/run.py trains) the script makes the
FP16 ONNX (AutoCast) and the INT8 Q/DQ ONNX (ModelOpt PTQ with the CLI's default calibration),
runs them on ONNX Runtime CPU against PyTorch FP32 on the inputs `resnet-deploy parity` uses
(CIFAR: `compare.parity_batch` at 32x32, 64 photo crops + 4 Gaussian tensors; digits: its 540
held-out images), and measures relative L2, mean cosine and top-1 agreement. Then it breaks the
INT8 model on purpose (`resnet_deploy.precision.faults`): every activation scale x4 and x6, and
noise of the weights' own standard deviation on one convolution (the middle one; and, for the
spread, on every convolution of ResNet-20 in turn). BF16 cannot run on ONNX Runtime's CPU
provider (no BF16 Conv kernel), so its figure is PyTorch's own bfloat16 forward of the same
network (every layer BF16, more than AutoCast converts). The seeded random ImageNet ResNets are
measured too, and reported as what they are. The bars in `resnet_deploy.compare.THRESHOLDS` must
pass every correct trained model and fail every broken one: the script says whether they do.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from resnet_deploy import pipeline  # noqa: E402
from resnet_deploy.artifacts import Precision  # noqa: E402
from resnet_deploy.bench import git_revision  # noqa: E402
from resnet_deploy.compare import THRESHOLDS, compare, parity_batch  # noqa: E402
from resnet_deploy.datasets import labelled_folder  # noqa: E402
from resnet_deploy.model import ModelRef  # noqa: E402
from resnet_deploy.onnx_meta import as_model, read_metadata  # noqa: E402
from resnet_deploy.precision import (  # noqa: E402
    QuantizeOptions,
    coarsen_activation_scales,
    perturb_conv_weights,
    weight_quantizers,
)
from resnet_deploy.preprocess import load_image, preprocess_image, recipe_from_metadata  # noqa: E402
from resnet_deploy.runners import open_runner  # noqa: E402

CIFAR = ROOT / "tests" / "data" / "cifar10-resnet"
CHECKPOINTS = {20: CIFAR / "resnet20-12fca82f.th", 56: CIFAR / "resnet56-4bfd9763.th"}
METRICS = ("rel_l2", "cosine", "top1_agreement")


def logits_of(backend: str, target, x: np.ndarray) -> np.ndarray:
    with open_runner(backend, target, precision="fp32" if backend == "torch" else None) as r:
        return np.concatenate([r.infer(x[i:i + 32]) for i in range(0, len(x), 32)])


def row(name: str, kind: str, ref: np.ndarray, cand: np.ndarray, precision: str, real: int) -> dict:
    res = compare(ref, cand, precision)
    photos = compare(ref[:real], cand[:real], precision)
    return {"model": name, "kind": kind, "precision": precision, "n": res.n, "rel_l2": res.rel_l2,
            "cosine": res.cosine, "top1_agreement": res.top1_agreement, "passed": res.passed,
            "failures": res.failures, "real_only": {k: getattr(photos, k) for k in METRICS}, "real_n": real}


def bf16_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    import copy

    m = copy.deepcopy(model).to(torch.bfloat16).eval()
    with torch.inference_mode():
        return m(torch.from_numpy(x).to(torch.bfloat16)).float().numpy()


def measure(name: str, depth, weights, out: Path, x: np.ndarray, real: int, log, *, calib=None,
            conv_sweep: bool = False, trained: bool = True, int8_too: bool = True, recipe=None) -> list[dict]:
    kind = "trained" if trained else "seeded random"
    # recipe: a network trained at another input size than its architecture's (the digits ResNet-18 at 32x32)
    ref_model = ModelRef.of(depth, weights=weights, recipe=recipe)
    model = pipeline.load_model(ref_model)
    fp32 = pipeline.export_model(ref_model, out_dir=out, progress=log)
    ref = logits_of("torch", model, x)
    rows = [row(name, kind, ref, logits_of("ort", fp32["path"], x), "fp32", real)]
    fp16 = pipeline.ensure_precision(ref_model, Precision.FP16, out_dir=out, progress=log)
    rows.append(row(name, kind, ref, logits_of("ort", fp16["path"], x), "fp16", real))
    rows.append({**row(name, kind, ref, bf16_logits(model, x), "bf16", real), "note": "PyTorch bfloat16 forward"})
    if not int8_too:
        return rows
    int8 = pipeline.ensure_precision(ref_model, Precision.INT8, out_dir=out, options=QuantizeOptions(calib=calib),
                                     progress=log)
    rows.append({**row(name, kind, ref, logits_of("ort", int8["path"], x), "int8", real),
                 "note": f"{int8['calibration']['used']} calibration images from {Path(int8['calibration']['source']).name}"})
    if not trained:
        return rows
    broken = out / "broken"
    broken.mkdir(exist_ok=True)
    for factor in (4, 6):
        path = broken / f"{name}.scales_x{factor}.onnx"
        coarsen_activation_scales(int8["path"], path, factor)
        rows.append({**row(name, f"broken: activation scales x{factor}", ref, logits_of("ort", path, x), "int8", real)})
    path = broken / f"{name}.noisy.onnx"
    conv = perturb_conv_weights(int8["path"], path)
    rows.append({**row(name, "broken: one conv + noise (1 std)", ref, logits_of("ort", path, x), "int8", real),
                 "note": conv})
    if conv_sweep:
        names = [n for n, _ in weight_quantizers(as_model(int8["path"]))]
        sweep = []
        for w in names:
            perturb_conv_weights(int8["path"], path, weight=w)
            sweep.append({**row(name, "sweep", ref, logits_of("ort", path, x), "int8", real), "note": w})
        rows.append({"model": name, "kind": f"broken: noise on each of the {len(sweep)} convs in turn", "precision": "int8",
                     "sweep": sweep, **{k: [min(s[k] for s in sweep), max(s[k] for s in sweep)] for k in METRICS},
                     "passed": any(s["passed"] for s in sweep), "n": sweep[0]["n"], "real_n": real})
    return rows


def digits_model(work: Path, epochs: int, log):
    """The digits ResNet-18 (benchmarks/digits/run.py's training), its calibration folder and 540 held-out inputs."""
    spec = importlib.util.spec_from_file_location("digits_run", ROOT / "benchmarks" / "digits" / "run.py")
    digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from resnet_deploy.preprocess import Preprocess

    d = load_digits()
    idx_train, idx_test = train_test_split(np.arange(len(d.target)), test_size=0.3, stratify=d.target, random_state=0)
    for root, idx in ((work / "train", idx_train), (work / "test", idx_test)):
        if not root.is_dir():
            digits.write_split(d.images, d.target, root, idx)
    recipe = Preprocess(**digits.RECIPE_KW)
    weights = work / "digits_resnet18.pth"
    if not weights.is_file():
        x, y = digits.load_split(work / "train", recipe)
        torch.save(digits.train(x, y, epochs=epochs, seed=0, log=log).state_dict(), weights)
    test = labelled_folder(work / "test")
    return weights, work / "train", np.stack([preprocess_image(load_image(p), recipe) for p in test.files]), recipe


def verdicts(rows: list[dict]) -> list[str]:
    """What the bars must do: pass every correct trained model, fail every broken one."""
    problems = []
    for r in rows:
        if r["kind"] == "trained" and not r["passed"]:
            problems.append(f"{r['model']} {r['precision']} (correct) fails: {'; '.join(r['failures'])}")
        if r["kind"].startswith("broken") and r["passed"]:
            problems.append(f"{r['model']} {r['kind']} passes the INT8 bars")
    return problems


def fmt(v) -> str:
    if isinstance(v, list):
        return f"{fmt(v[0])} - {fmt(v[1])}"
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def markdown(rows: list[dict], problems: list[str], command: str, seconds: float, revision: str | None) -> str:
    th = {p: t for p, t in THRESHOLDS.items()}
    lines = ["# Parity bars, measured on trained networks", "",
             "The bars `resnet-deploy parity` applies (`resnet_deploy.compare.THRESHOLDS`; README and docs quote this "
             "table and a test fails when they drift):", "",
             "| precision | relative L2 at most | mean cosine at least | top-1 agreement at least |", "|---|---|---|---|"]
    for p, t in th.items():
        lines.append(f"| {p} | {t.rel_l2:g} | {t.cosine:g} | {t.top1:.0%} |")
    lines += ["", "Measured (ONNX Runtime CPU vs PyTorch FP32; CIFAR-10 models on `parity_batch` at 32x32: 8 photographs, "
              "56 crops of them and 4 Gaussian tensors = 68 inputs, the real ones alone in the last columns; digits on "
              "its 540 held-out images; ImageNet random models on `parity_batch` at 224):", "",
              "| network | weights | precision | rel. L2 | cosine | top-1 | verdict | real images only: rel. L2 / cosine / top-1 | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        real = r.get("real_only")
        real_cell = (f"{fmt(real['rel_l2'])} / {fmt(real['cosine'])} / {real['top1_agreement']:.1%}"
                     if real and r["real_n"] != r["n"] else "-")
        top1 = r["top1_agreement"]
        top1_cell = f"{top1[0]:.1%} - {top1[1]:.1%}" if isinstance(top1, list) else f"{top1:.1%}"
        verdict = ("pass" if r["passed"] else "FAIL") if "sweep" not in r else \
            f"{sum(not s['passed'] for s in r['sweep'])} of {len(r['sweep'])} fail"
        lines.append(f"| {r['model']} | {r['kind']} | {r['precision']} | {fmt(r['rel_l2'])} | {fmt(r['cosine'])} | "
                     f"{top1_cell} | {verdict} | {real_cell} | {r.get('note', '')} |")
    lines += ["", "Verdict: " + ("**the bars pass every correct trained model and fail every broken one.**" if not problems
                                 else "**" + "; ".join(problems) + "**"), "",
              "## How it was made", "", "```", command, "```", "",
              f"Toolkit at git {revision}; {seconds:.0f} s on {platform.processor() or platform.machine()} "
              f"({_cpu()}), torch threads "
              f"{torch.get_num_threads()}. Versions: " + ", ".join(
                  f"{d} {_version(d)}" for d in ("torch", "onnx", "onnxruntime", "nvidia-modelopt", "numpy")) + ".", ""]
    return "\n".join(lines)


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/resnet-deploy-bars"), help="scratch folder (not committed)")
    ap.add_argument("--digits-epochs", type=int, default=30)
    ap.add_argument("--no-random", action="store_true", help="skip the seeded random ImageNet ResNets")
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    t0 = time.perf_counter()
    revision = git_revision(ROOT)  # before this run writes its own results
    rows: list[dict] = []
    names, x32 = parity_batch(recipe_from_metadata({"image_size": "32", "resize": "32"}))
    real32 = sum(not n.startswith("random") for n in names)
    for depth, ckpt in CHECKPOINTS.items():
        log(f"CIFAR-10 ResNet-{depth}")
        rows += measure(f"CIFAR-10 ResNet-{depth}", depth, ckpt, args.work / "engines", x32, real32, log,
                        conv_sweep=depth == 20)
    log("digits ResNet-18")
    weights, calib, xd, recipe = digits_model(args.work / "digits", args.digits_epochs, log)
    rows += measure("digits ResNet-18", 18, weights, args.work / "digits" / "engines", xd, len(xd), log, calib=calib,
                    recipe=recipe)
    if not args.no_random:
        names, x224 = parity_batch()
        real224 = sum(not n.startswith("random") for n in names)
        for depth in (18, 50, 152):
            log(f"random ResNet-{depth}")
            rows += measure(f"ImageNet ResNet-{depth}", depth, None, args.work / "random", x224, real224, log,
                            trained=False, int8_too=depth != 152)
    problems = verdicts(rows)
    seconds = time.perf_counter() - t0
    meta = read_metadata(args.work / "engines" / "resnet20" / "resnet20.fp32.onnx")
    command = "python benchmarks/precision-bars/run.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    if not args.no_results:
        (HERE / "results.json").write_text(json.dumps({"rows": rows, "problems": problems, "command": command,
                                                       "toolkit": meta.get("toolkit_version"), "git": revision}, indent=1, default=str) + "\n")
        (HERE / "results.md").write_text(markdown(rows, problems, command, seconds, revision))
    for p in problems:
        log("problem: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
