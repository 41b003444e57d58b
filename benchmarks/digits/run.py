"""Proof on real labelled data: scikit-learn's digits through FP32 -> FP16 / INT8 -> eval.

    python benchmarks/digits/run.py                      # full run, writes results.md here
    python benchmarks/digits/run.py --epochs 4 --no-results

1. Split the 1,797 8x8 digit images (10 classes) 70/30, stratified and seeded, and write both
   splits as 8-bit grayscale PNGs in class folders (``train/3/0042.png``): the calibration
   loader and ``eval`` read them like any user's image folder (and convert gray to RGB).
2. Train ``create_model(18, num_classes=10)`` on CPU on the training split, preprocessed by
   the very recipe the ONNX records (8x8 -> bilinear 32x32, 3 channels, normalised). The
   torchvision stem downsamples 4x (32 -> 8), so layer4 sees 1x1: fine for digits, and it
   keeps the network exactly the ResNet-18 that is deployed.
3. Export the FP32 ONNX with the 32x32 recipe, convert FP16 (AutoCast) and INT8 (ModelOpt PTQ,
   entropy, calibrated on training images) with ``pipeline.ensure_precision``, and evaluate all
   three on the held-out split with ``evaluate`` (what ``resnet-deploy eval`` runs).
4. Check the bars: FP32 top-1 >= 95 %, FP16 within 0.2 pp of FP32, INT8 >= 99 % of FP32.

Deterministic: seeded split, seeded initialisation and shuffling, deterministic torch
algorithms, fixed thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RECIPE_KW = dict(image_size=32, resize=32, mean=(0.3, 0.3, 0.3), std=(0.37, 0.37, 0.37))
BARS = {"fp32_top1_min": 0.95, "fp16_delta_pp_max": 0.2, "int8_ratio_min": 0.99}


def write_split(images: np.ndarray, labels: np.ndarray, root: Path, indices: np.ndarray) -> None:
    from PIL import Image

    for i in indices:
        d = root / str(int(labels[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(images[i] * (255.0 / 16.0)).astype(np.uint8), mode="L").save(d / f"{i:04d}.png")


def load_split(root: Path, recipe) -> tuple[np.ndarray, np.ndarray]:
    """Read a split back exactly as eval does (file -> RGB -> recipe), for training."""
    from resnet_deploy.datasets import labelled_folder
    from resnet_deploy.preprocess import load_image, preprocess_image

    folder = labelled_folder(root)
    x = np.stack([preprocess_image(load_image(p), recipe) for p in folder.files])
    return x, folder.labels


def train(x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int, batch: int = 64, lr: float = 0.05,
          log=print):
    from dataclasses import replace

    import torch
    from torch import nn

    import resnet_deploy as rd
    from resnet_deploy.model import WeightsInfo, state_dict_sha256

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    model = rd.create_model(18, num_classes=10, seed=seed)
    model.train()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        t0, total, correct, seen = time.perf_counter(), 0.0, 0, 0
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            xb, yb = xt[idx], yt[idx]
            # random shifts of up to 2 pixels (the digit is 32 px wide after upscaling)
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            seen += len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / seen:.4f}, train top-1 {correct / seen:.2%} "
            f"({time.perf_counter() - t0:.1f} s)")
    model.eval()
    model.card = replace(model.card, weights=WeightsInfo(f"digits-trained(seed={seed},epochs={epochs})",
                                                         state_dict_sha256(model.state_dict())))
    return model


def check_bars(results: dict[str, dict]) -> list[str]:
    fp32, fp16, int8 = results["fp32"]["top1"], results["fp16"]["top1"], results["int8"]["top1"]
    failures = []
    if not all(r["finite"] for r in results.values()):
        failures.append("NaN/Inf in some logits")
    if fp32 < BARS["fp32_top1_min"]:
        failures.append(f"FP32 top-1 {fp32:.2%} < {BARS['fp32_top1_min']:.0%}")
    if abs(fp16 - fp32) * 100 > BARS["fp16_delta_pp_max"] + 1e-9:
        failures.append(f"FP16 top-1 {fp16:.2%} is {abs(fp16 - fp32) * 100:.2f} pp from FP32 {fp32:.2%} "
                        f"(bar {BARS['fp16_delta_pp_max']} pp)")
    if int8 < BARS["int8_ratio_min"] * fp32 - 1e-12:
        failures.append(f"INT8 top-1 {int8:.2%} < 99% of FP32 ({BARS['int8_ratio_min'] * fp32:.2%})")
    return failures


def run(work: Path, *, epochs: int = 30, seed: int = 0, test_size: float = 0.3, calib_samples: int = 512,
        method: str = "entropy", threads: int | None = 2, log=print) -> dict:
    """The whole proof; returns a dict with results, bars and the failures (empty = passed)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from resnet_deploy import api, pipeline
    from resnet_deploy.artifacts import Precision
    from resnet_deploy.model import ModelRef
    from resnet_deploy.precision import QuantizeOptions
    from resnet_deploy.preprocess import Preprocess

    evaluate = api.evaluate

    if threads:
        torch.set_num_threads(threads)
    t_start = time.perf_counter()
    revision = git_revision(HERE.parents[1])  # before this run writes its own results
    work = Path(work)
    digits = load_digits()
    idx_train, idx_test = train_test_split(np.arange(len(digits.target)), test_size=test_size,
                                           stratify=digits.target, random_state=seed)
    train_dir, test_dir, engines = work / "train", work / "test", work / "engines"
    for root, idx in ((train_dir, idx_train), (test_dir, idx_test)):
        if not root.is_dir():
            write_split(digits.images, digits.target, root, idx)
    recipe = Preprocess(**RECIPE_KW)
    x, y = load_split(train_dir, recipe)
    log(f"training ResNet-18 on {len(x)} digit images ({epochs} epochs, seed {seed})")
    t0 = time.perf_counter()
    model = train(x, y, epochs=epochs, seed=seed, log=log)
    t_train = time.perf_counter() - t0
    torch.save(model.state_dict(), work / "digits_resnet18.pth")
    weights_sha256 = model.card.weights.sha256

    # the trained file, exported at the 32x32 recipe it was trained with (the pipeline records both)
    trained = ModelRef.of(18, weights=work / "digits_resnet18.pth", num_classes=10, seed=seed, recipe=recipe)
    pipeline.export_model(trained, out_dir=engines, progress=log)
    timings = {"train": round(t_train, 1)}
    manifests = {}
    options = QuantizeOptions(calib=train_dir, calib_samples=calib_samples, method=method)
    for precision in (Precision.FP16, Precision.INT8):
        t0 = time.perf_counter()
        manifests[precision] = pipeline.ensure_precision(trained, precision, out_dir=engines, options=options,
                                                         force=True, progress=log)
        timings[precision] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    report = evaluate(18, precisions=["fp32", "fp16", "int8"], data=test_dir, out_dir=engines, batch=64,
                      progress=log)
    timings["eval"] = round(time.perf_counter() - t0, 1)
    timings["total"] = round(time.perf_counter() - t_start, 1)
    results = {r["precision"]: r for r in report["results"]}
    failures = check_bars(results)
    return {"git": revision, "weights_sha256": weights_sha256, "results": results, "report": report, "failures": failures, "timings_s": timings, "epochs": epochs,
            "seed": seed, "train_images": len(idx_train), "test_images": len(idx_test),
            "int8": {"method": method, "calibration": manifests["int8"]["calibration"],
                     "qdq": manifests["int8"]["conversion"]["qdq"],
                     "high_precision": manifests["int8"]["request"]["high_precision"]},
            "fp16": {"nodes_low_precision": manifests["fp16"]["conversion"]["nodes_low_precision"],
                     "nodes_total": manifests["fp16"]["conversion"]["nodes_total"]}}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime", "nvidia-modelopt", "scikit-learn", "numpy", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} logical CPUs visible, torch threads {__import__('torch').get_num_threads()}; " \
           f"{platform.system()} {platform.release()}; no GPU (ONNX Runtime CPUExecutionProvider)"


def git_revision(path: Path) -> str | None:
    sys.path.insert(0, str(path))
    from resnet_deploy.bench import git_revision as rev

    return rev(path)


def results_markdown(r: dict, command: str) -> str:
    res = r["results"]
    fp32 = res["fp32"]["top1"]
    rows = []
    for p in ("fp32", "fp16", "int8"):
        x = res[p]
        bar = {"fp32": f">= 95% : {'pass' if x['top1'] >= 0.95 else 'FAIL'}",
               "fp16": f"within 0.2 pp of FP32: {'pass' if abs(x['top1'] - fp32) * 100 <= 0.2 + 1e-9 else 'FAIL'}",
               "int8": f">= 99% of FP32 ({0.99 * fp32:.2%}): {'pass' if x['top1'] >= 0.99 * fp32 - 1e-12 else 'FAIL'}"}[p]
        rows.append(f"| {p.upper()} | {x['top1']:.2%} ({x['correct1']}/{x['n']}) | {x['top5']:.2%} | "
                    f"{x.get('top1_delta_pp', 0):+.2f} pp | {bar} | `{Path(x['artifact']).name}` |")
    v = _versions()
    cal = r["int8"]["calibration"]
    qdq = r["int8"]["qdq"]
    lines = [
        "# Digits proof: FP32 / FP16 / INT8 accuracy on real labelled images",
        "",
        "scikit-learn's `load_digits` (1,797 real 8x8 handwritten digits, 10 classes), split 70/30 stratified "
        f"(seed {r['seed']}): {r['train_images']} training images, {r['test_images']} held-out images, both written "
        "as grayscale PNGs in class folders. ResNet-18 (`create_model(18, num_classes=10)`, torchvision layout) "
        f"trained on CPU for {r['epochs']} epochs on 32x32 upscaled 3-channel inputs; exported with a 32x32 recipe; "
        "FP16 by ModelOpt AutoCast (FP32 I/O); INT8 by ModelOpt PTQ "
        f"({r['int8']['method']} calibration on {cal['used']} training images, per-channel symmetric INT8 weights, "
        f"per-tensor symmetric INT8 activations, {qdq['quantize_linear']} Q / {qdq['dequantize_linear']} DQ nodes, "
        f"unquantized layers in {r['int8']['high_precision'].upper()}). All three evaluated on the held-out "
        "split through `resnet_deploy.api.evaluate` (what `resnet-deploy eval` runs), ONNX Runtime CPU.",
        "",
        "| precision | top-1 | top-5 | top-1 vs FP32 | bar | artifact |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Verdict: **{'all bars pass' if not r['failures'] else 'FAILED: ' + '; '.join(r['failures'])}**.",
        "",
        f"Note on the FP16 bar: one held-out image is {100 / r['test_images']:.3f} pp, so \"within 0.2 pp\" "
        "allows FP16 to classify at most one image differently from FP32 (here: "
        f"{abs(res['fp16']['correct1'] - res['fp32']['correct1'])} net difference). The INT8 bar allows "
        f"{int(res['fp32']['correct1'] - np.ceil(0.99 * res['fp32']['correct1'] - 1e-9))} net images fewer than FP32.",
        "",
        "## How it was made",
        "",
        "```",
        command,
        "```",
        "",
        "The same evaluation from the command line, on the folders the script writes:",
        "",
        "```",
        "resnet-deploy quantize --depth 18 --precision int8 --out <work>/engines --calib <work>/train",
        "resnet-deploy eval --depth 18 --precision fp32,fp16,int8 --data <work>/test --out <work>/engines",
        "```",
        "",
        f"Timings (s): {', '.join(f'{k} {v}' for k, v in r['timings_s'].items())}.",
        "",
        f"Trained weights: state_dict sha256 `{r['weights_sha256'][:16]}...`. A rerun on the same machine type "
        "reproduces every figure exactly (seeded split, initialisation and shuffling, deterministic torch "
        "algorithms, 2 threads); on a CPU with other vector units the float rounding of training, and so the "
        "weights, may differ (the digest says whether they did).",
        "",
        f"Toolkit at git {r['git']}.",
        "",
        f"Machine: {_machine()}.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-samples", type=int, default=512)
    ap.add_argument("--method", default="entropy")
    ap.add_argument("--work", type=Path, default=Path("/tmp/resnet-deploy-digits"),
                    help="scratch folder for the PNG splits, checkpoint and engines (not committed)")
    ap.add_argument("--results", type=Path, default=HERE / "results.md")
    ap.add_argument("--no-results", action="store_true", help="do not write the results table")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)
    r = run(args.work, epochs=args.epochs, seed=args.seed, calib_samples=args.calib_samples, method=args.method,
            log=(lambda m: print(m, file=sys.stderr)))
    for p, x in r["results"].items():
        print(f"{p}: top-1 {x['top1']:.2%} top-5 {x['top5']:.2%} ({x['correct1']}/{x['n']})", file=sys.stderr)
    print("bars: " + ("pass" if not r["failures"] else "FAIL: " + "; ".join(r["failures"])), file=sys.stderr)
    if not args.no_results:
        cmd = "python benchmarks/digits/run.py" + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        args.results.write_text(results_markdown(r, cmd))
        print(f"wrote {args.results}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "report"}, default=str))
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
