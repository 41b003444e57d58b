"""`resnet-deploy quantize` and `resnet-deploy eval`: thin layers over :func:`resnet_deploy.api.quantize`
(the pipeline's precision ONNX) and :func:`resnet_deploy.api.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import api
from ..artifacts import Precision
from ..errors import UserError
from ..precision import DEFAULT_CALIB_SAMPLES
from ..runners import BACKENDS
from .common import ClassesOpt, DepthOpt, JsonOpt, OutOpt, PreactOpt, SeedOpt, ServedModelOpt, TimeoutOpt, UrlOpt, WeightsOpt, emit, err, handled, kv_table, out, served


def quantize(
    depth: str = DepthOpt,
    precision: str = typer.Option(..., "--precision", "-p", help="fp16, bf16 or int8 (fp32 = the exported ONNX)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of calibration images (flat or one sub-folder "
                                         "per class). Default: scikit-image's bundled photographs."),
    calib_samples: int = typer.Option(DEFAULT_CALIB_SAMPLES, "--calib-samples", help="Images to calibrate on (a seeded sample if the "
                                      "folder has more). FP16/BF16 use at most 16 for AutoCast's reference run."),
    calib_method: str = typer.Option("entropy", "--calib-method", help="INT8 activation calibrator: entropy, "
                                     "minmax or percentile (99.999th)."),
    fp16_io: bool = typer.Option(False, "--fp16-io", help="FP16 model inputs/outputs (default: FP32 I/O)."),
    high_precision: str = typer.Option("fp32", "--high-precision", help="INT8: type of the layers left "
                                       "unquantized: fp32 (default; runs correctly on ONNX Runtime CPU too) or fp16 "
                                       "(ModelOpt's default, for TensorRT only: ONNX Runtime's CPU graph optimizer "
                                       "mis-computes it)."),
    exclude: Optional[str] = typer.Option(None, "--exclude", help="INT8: torch module paths kept out of INT8, "
                                          "comma-separated: residual blocks (layer4.2), stages (layer4) or layers "
                                          "(layer1.0.conv1, fc); they stay in --high-precision."),
    accuracy_target: Optional[float] = typer.Option(None, "--accuracy-target", help="INT8: keep the most sensitive "
                                                    "blocks in high precision until top-1 on --data is at least this "
                                                    "fraction of FP32's (e.g. 0.99); measured on --score-engine."),
    data: Optional[Path] = typer.Option(None, "--data", help="With --accuracy-target: images it is measured on "
                                        "(<data>/<class>/<image> for top-1; a flat folder measures agreement with "
                                        "FP32's top-1). Default: the calibration images."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="With --accuracy-target: class names, one per "
                                          "line, mapping --data's class folders."),
    limit: Optional[int] = typer.Option(None, "--limit", help="With --accuracy-target: measure an evenly spaced "
                                        "subset of this many images."),
    max_excluded: Optional[int] = typer.Option(None, "--max-excluded", help="With --accuracy-target: the most "
                                               "blocks and layers it may keep in high precision, residual Adds not "
                                               "counted (default: half the convolutions)."),
    holdout: Optional[str] = typer.Option(None, "--holdout", help="With --accuracy-target: a fraction in (0, 1) of "
                                          "the images kept from the search (e.g. 0.25), or a folder of other images; "
                                          "plain and tuned INT8 are scored on them too."),
    score_engine: Optional[str] = typer.Option(None, "--score-engine", help="With --accuracy-target: the runner that "
                                               "scores candidates: openvino or ort (default: the fastest installed), or trt / trt-rtx "
                                               "(an engine built from each candidate, on the GPU)."),
    search: str = typer.Option("auto", "--search", help="With --accuracy-target: error (layers ranked by the "
                               "logits' error they leave, kept in that order, then put back into INT8 where the "
                               "target holds), greedy (blocks, then layers, kept while they raise the score), or "
                               "auto (error, then greedy where it fails)."),
    int8_flavour: str = typer.Option("trt", "--int8-flavour", help="INT8: trt (ModelOpt PTQ, Q/DQ placed for "
                                     "TensorRT; also the openvino runner's fast path) or ort-cpu (ONNX Runtime's "
                                     "quantize_static QDQ for its CPU provider, written as <arch>.int8.ort-cpu.onnx)."),
    source: Optional[Path] = typer.Option(None, "--onnx", help="FP32 ONNX to convert (default: the exported "
                                          "<out>/<arch>/<arch>.fp32.onnx, exported first if missing)."),
    out_dir: Path = OutOpt, weights: Optional[Path] = WeightsOpt, num_classes: Optional[int] = ClassesOpt,
    preact: bool = PreactOpt, seed: int = SeedOpt,
    force: bool = typer.Option(False, "--force", help="Redo the conversion even if a matching artifact exists; "
                       "also replaces an FP32 export in --out made from other weights, seed or class count (refused without it)."),
    as_json: bool = JsonOpt,
) -> None:
    """Write the FP16/BF16 ONNX (AutoCast) or the INT8 Q/DQ ONNX (calibrated PTQ) for TensorRT."""
    with handled(as_json) as progress:
        m = api.quantize(depth, precision, out_dir=out_dir, weights=weights, num_classes=num_classes,
                                  preact=preact, seed=seed, calib=calib, calib_samples=calib_samples,
                                  method=calib_method, fp16_io=fp16_io, high_precision=high_precision, source=source,
                                  exclude=exclude, accuracy_target=accuracy_target, data=data, labels=labels,
                                  limit=limit, max_excluded=max_excluded, holdout=holdout, score_engine=score_engine,
                                  search=search, int8_flavour=int8_flavour,
                                  force=force, progress=progress, progress_bar=not as_json)

    def render() -> None:
        rows = [("precision", m["precision"])]
        if m.get("runtime"):
            rows.append(("INT8 for", f"{m['runtime']} (--int8-flavour {m['int8_flavour']})"))
        if "request" in m:
            c, conv = m.get("calibration", {}), m.get("conversion", {})
            rows += [("input / output", f"{m['input']['dtype']} / {m['output']['dtype']}"),
                     ("source", f"{m['source']['path']} (sha256 {m['source']['sha256'][:12]})")]
            if m["precision"] == "int8":
                qdq = conv.get("qdq", {})
                rows += [("calibration", f"{c.get('method', m['request']['method'])} on {c.get('used')} images "
                                         f"from {c.get('source')}"),
                         ("Q/DQ", f"{qdq.get('quantize_linear')} Q / {qdq.get('dequantize_linear')} DQ; quantized ops "
                                  + ", ".join(f"{k} {v}" for k, v in qdq.get("quantized_ops", {}).items())),
                         ("unquantized layers", m["request"]["high_precision"])]
                if m["request"].get("exclude"):
                    rows.append(("kept out of INT8", ", ".join(f"{k} ({len(v)} layers)"
                                                               for k, v in conv.get("excluded", {}).items())))
                t = m.get("tuning")
                if t:
                    rows += [("accuracy target", f"{t['accuracy_target']:g} x FP32 {t['metric']} on "
                                                 f"{t['images']['images']} images ({t['images']['source']})"),
                             (t["metric"], f"FP32 {t['fp32']:.2%}, plain INT8 {t['plain_int8']['score']:.2%}, "
                                           f"tuned INT8 {t['int8']['score']:.2%} (goal {t['goal']:.2%})"),
                             ("kept in high precision", ", ".join(t["kept"]) or "nothing (plain INT8 meets it)"),
                             ("search", f"{t.get('search') or 'greedy'}: {t['evaluations']} candidate evaluations, "
                                        f"{t['search_seconds']:.1f} s on {t.get('score_engine', 'ONNX Runtime CPU')}"
                                        + (" (the error-ranked search failed first)" if t.get("fallback") else ""))]
                    h = t.get("holdout")
                    if h:
                        rows += [(f"held-out {t['metric']}", f"FP32 {h['fp32']:.2%}, plain INT8 {h['plain_int8']['score']:.2%}, "
                                                             f"tuned INT8 {h['int8']['score']:.2%} on {h['images']['images']} "
                                                             "images the search never saw"),
                                 ("held-out verdict", h["verdict"])]
            else:
                rows += [("low-precision nodes", f"{conv.get('nodes_low_precision')} of {conv.get('nodes_total')}"),
                         ("reference data", f"{c.get('used')} images from {c.get('source')}")]
            for note in c.get("notes", []):
                rows.append(("note", note))
            rows.append(("time", "reused (cached)" if m.get("reused") else f"{m['timings_s']['total']:.1f} s"))
        rows += [("size", f"{m.get('bytes', 0) / 1e6:.1f} MB"), ("sha256", m.get("sha256", "?"))]
        out.print(kv_table(f"{'reused' if m.get('reused') else 'wrote'} {m['path']}", rows))

    emit(as_json, m, render)


def eval_(
    depth: str = DepthOpt,
    precision: str = typer.Option("fp32", "--precision", "-p", help="One or more, comma-separated: "
                                  "int8,fp16,fp32 prints them side by side."),
    data: Path = typer.Option(..., "--data", help="Labelled images: <data>/<class>/<image> (sorted folder index "
                              "= class index unless --labels maps them)."),
    engine: str = typer.Option("ort", "--engine", "-e", help=f"Backend: {', '.join(BACKENDS)}."),
    batch: int = typer.Option(32, "--batch", "-b", help="Images per inference call."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate an evenly spaced subset of this many images."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class names, one per line (line number = class "
                                          "index). Default: <out>/<arch>/labels.txt if present."),
    artifact: Optional[Path] = typer.Option(None, "--onnx", "--artifact", help="Artifact to evaluate (one "
                                            "precision only; default: the precision's artifact under --out)."),
    url: Optional[str] = UrlOpt, model: Optional[str] = ServedModelOpt, timeout: float = TimeoutOpt,
    out_dir: Path = OutOpt, preact: bool = PreactOpt, as_json: bool = JsonOpt,
) -> None:
    """Top-1 / top-5 accuracy on a labelled image folder, several precisions side by side."""
    with handled(as_json) as progress:
        precisions = [p for p in (s.strip() for s in precision.split(",")) if p]
        served_url, served_options = served(engine, url, model, timeout)
        artifact = served_url or artifact
        if artifact is not None and len(precisions) != 1:
            raise UserError("--onnx/--artifact/--url names one artifact; give exactly one --precision with it")
        artifacts = {Precision.parse(precisions[0]): artifact} if artifact is not None else None
        r = api.evaluate(depth, precisions=precisions, data=data, backend=engine, out_dir=out_dir, artifacts=artifacts,
                     batch=batch, limit=limit, labels_file=labels, preact=preact, progress=progress,
                     progress_bar_enabled=not as_json, **served_options)

    def render() -> None:
        table = Table(title=escape(f"{r['arch']} on {r['data']}: {r['images']} images, {r['classes']} classes "
                                   f"({r['backend']})"), title_justify="left")
        for col in ("precision", "top-1", "top-5", "Δ top-1 vs fp32", "images/s", "artifact"):
            table.add_column(col, justify="left" if col in ("precision", "artifact") else "right")
        for x in r["results"]:
            delta = f"{x['top1_delta_pp']:+.2f} pp" if "top1_delta_pp" in x else "-"
            top5 = f"{x['top5']:.2%}" + (f" (top-{x['top5_k']})" if x["top5_k"] != 5 else "")
            name = x["precision"] + ("" if x["finite"] else " [red](NaN/Inf!)[/red]")
            table.add_row(name, f"{x['top1']:.2%}", top5, delta, f"{x['images_per_s'] or 0:.0f}", escape(str(x["artifact"])))
        out.print(table)
        for note in r["notes"]:
            err.print(f"note: {escape(note)}", highlight=False)

    emit(as_json, r, render)
