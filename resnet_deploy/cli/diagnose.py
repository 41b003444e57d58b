"""`resnet-deploy diagnose`: a thin layer over :func:`resnet_deploy.api.diagnose` (where INT8 goes wrong)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import api
from ..precision import DEFAULT_CALIB_SAMPLES
from ..runners import ONNX_BACKENDS
from .common import ClassesOpt, DepthOpt, JsonOpt, OutOpt, PreactOpt, SeedOpt, WeightsOpt, emit, err, handled, out


def diagnose(
    depth: str = DepthOpt,
    data: Optional[Path] = typer.Option(None, "--data", help="Images to measure on: <data>/<class>/<image> for top-1 "
                                        "(names mapped through the model's class names or --labels); a flat folder "
                                        "measures agreement with FP32's top-1. Default: the calibration images."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class names, one per line (line number = class index)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Measure an evenly spaced subset of this many images."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration images for the INT8 ONNX when it is made "
                                         "here (default: scikit-image's bundled photographs)."),
    calib_samples: int = typer.Option(DEFAULT_CALIB_SAMPLES, "--calib-samples", help="Calibration images to use."),
    calib_method: str = typer.Option("entropy", "--calib-method", help="entropy, minmax or percentile."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="INT8 ONNX to diagnose (default: <out>/<arch>/<arch>.int8.onnx, "
                                        "quantized first if missing)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the bar charts to this PNG."),
    layers: bool = typer.Option(False, "--layers", help="Also list every layer's output error (always in --json)."),
    engine: str = typer.Option("ort", "--engine", "-e", help=f"ONNX runner that scores every model: "
                               f"{', '.join(ONNX_BACKENDS)} (openvino: INT8 as a CPU deploys it)."),
    out_dir: Path = OutOpt, weights: Optional[Path] = WeightsOpt, num_classes: Optional[int] = ClassesOpt,
    preact: bool = PreactOpt, seed: int = SeedOpt, as_json: bool = JsonOpt,
) -> None:
    """Where INT8 goes wrong: each block's error against FP32, and which blocks to keep in high precision."""
    with handled(as_json) as progress:
        r = api.diagnose(depth, data=data, labels=labels, limit=limit, onnx=onnx, plot=plot, out_dir=out_dir,
                         weights=weights, num_classes=num_classes, preact=preact, seed=seed, calib=calib,
                         calib_samples=calib_samples, method=calib_method, progress=progress,
                         progress_bar=not as_json, engine=engine)

    def render() -> None:
        metric = r["metric"]
        eng = r["engine"]
        on = f"{eng.get('backend')} {eng.get('version') or ''} ({eng.get('device')})".replace("  ", " ")
        table = Table(title=escape(f"{r['arch']}: INT8 vs FP32 on {r['images']['images']} images ({r['images']['source']}), "
                            f"scored on {on}"),
                      title_justify="left")
        for col in ("unit", "output rel. L2", "output cosine", f"{metric} with it kept", "gain"):
            table.add_column(col, justify="left" if col == "unit" else "right")
        ranked = {x["unit"]: x for x in r["ranking"]}
        for b in r["blocks"]:
            x = ranked.get(b["unit"])
            table.add_row(b["unit"], f"{b['rel_l2']:.4f}", f"{b['cosine']:.5f}",
                          f"{x['score']:.2%}" if x else "- (not quantized)",
                          f"{100 * x['gain']:+.2f} pp" if x else "")
        out.print(table)
        if layers:
            lt = Table(title="layers", title_justify="left")
            for col in ("layer", "output rel. L2", "output cosine"):
                lt.add_column(col, justify="left" if col == "layer" else "right")
            for x in r["layers"]:
                lt.add_row(x["layer"], f"{x['rel_l2']:.4f}", f"{x['cosine']:.5f}")
            out.print(lt)
        order = ", ".join(f"{x['unit']} ({x['score']:.2%})" for x in r["ranking"][:5])
        out.print(f"{metric}: FP32 {r['fp32']:.2%}, INT8 {r['int8']['score']:.2%}; most sensitive first: {order}")
        if r["images"]["labelled"] is False:
            err.print(f"note: no labels, so {metric} stands in for accuracy", highlight=False)
        for note in r["images"]["notes"]:
            err.print(f"note: {escape(note)}", highlight=False)
        if r.get("plot"):
            out.print(f"plot: {escape(str(r['plot']))}")

    emit(as_json, r, render)
