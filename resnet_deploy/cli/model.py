"""`resnet-deploy info`, `export`, `parity` and `version`: the model and its FP32 ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .. import __version__, api
from ..onnx_export import DEFAULT_OPSET
from ..runners import BACKENDS
from .common import ClassesOpt, DepthOpt, JsonOpt, OutOpt, PreactOpt, SeedOpt, ServedModelOpt, TimeoutOpt, UrlOpt, WeightsOpt, emit, err, handled, kv_table, out, served


def info(depth: str = DepthOpt,
         num_classes: Optional[int] = typer.Option(None, "--num-classes", min=1, help="Default: the architecture's (1000, CIFAR 10)."),
         preact: bool = PreactOpt,
         image_size: Optional[int] = typer.Option(None, "--image-size", help="Default: the architecture's (224, CIFAR 32)."),
         as_json: bool = JsonOpt) -> None:
    """Parameters, multiply-accumulates, stage output shapes and layer count."""
    with handled(as_json):
        d = api.describe(depth, num_classes=num_classes, preact=preact, image_size=image_size)

    def render() -> None:
        params = f"{d['parameters']:,}"
        if d["inference_parameters"] != d["parameters"]:
            params += f" ({d['inference_parameters']:,} at inference; the rest train only)"
        besides = [f"{d[k]} {what}" for k, what in (("projection_convs", "projection convs"), ("se_convs", "SE convs")) if d[k]]
        rows = [
            ("family", f"{d['family']}, nominal depth {d['depth']}"),
            ("parameters", params),
            ("multiply-accumulates", f"{d['gmacs']:.2f} G at {d['image_size']}x{d['image_size']}"),
            ("layers", f"{d['layers']} (conv + Linear on the main path"
                       + (f"; {', '.join(besides)} besides)" if besides else ")")),
        ]
        out.print(kv_table(d["arch"], rows + ([("blocks per stage", d["blocks"])] if d["blocks"] else [])))
        stages = Table(title="output shape per stage", title_justify="left")
        stages.add_column("stage")
        stages.add_column("shape")
        for name, shape in d["stages"].items():
            stages.add_row(escape(name), str(shape))
        out.print(stages)

    emit(as_json, d, render)


def export(depth: str = DepthOpt, weights: Optional[Path] = WeightsOpt, num_classes: Optional[int] = ClassesOpt,
           out_dir: Path = OutOpt, batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Fixed batch (default: dynamic)."),
           opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset (13-21)."),
           exporter: str = typer.Option("torchscript", "--exporter", help="torchscript (fast, default) or dynamo."),
           preact: bool = PreactOpt, seed: int = SeedOpt, as_json: bool = JsonOpt) -> None:
    """Export the FP32 ONNX model (BatchNorm folded, checked) and its manifest."""
    with handled(as_json) as progress:
        m = api.export(depth, weights=weights, num_classes=num_classes, out_dir=out_dir, batch=batch, opset=opset,
                       exporter=exporter, preact=preact, seed=seed, progress=progress)

    def render() -> None:
        out.print(kv_table(f"exported {m['path']}", [
            ("architecture", m["arch"]), ("classes", m["num_classes"]), ("batch", m["batch"]), ("opset", m["opset"]),
            ("nodes", f"{m['nodes']} ({m['batchnorm_nodes']} BatchNormalization left)"),
            ("size", f"{m['bytes'] / 1e6:.1f} MB"), ("weights", m["weights_source"]),
            ("sha256", m["sha256"]), ("time", f"{m['timings_s']['total']:.1f} s"),
        ]))

    emit(as_json, m, render)


def parity(depth: str = DepthOpt,
           engine: str = typer.Option("ort", "--engine", "-e", help=f"Backend: {', '.join(BACKENDS)}."),
           precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16, bf16 or int8 artifact "
                                                      "(default: the given artifact's; fp32 when none is given)."),
           onnx: Optional[Path] = typer.Option(None, "--onnx", "--artifact", help="ONNX model or engine "
                                               "(default: the precision's artifact under --out)."),
           weights: Optional[Path] = WeightsOpt, num_classes: Optional[int] = ClassesOpt, out_dir: Path = OutOpt,
           images: Optional[list[Path]] = typer.Option(None, "--image", "-i", help="Image file(s) to compare on "
                                                       "(default: 8 bundled photographs, 56 crops of them, 4 random tensors)."),
           url: Optional[str] = UrlOpt, model: Optional[str] = ServedModelOpt, timeout: float = TimeoutOpt,
           preact: bool = PreactOpt, seed: int = SeedOpt, as_json: bool = JsonOpt) -> None:
    """Compare an ONNX model, engine or served model with PyTorch FP32 at the precision's bars; exit 1 if it fails."""
    with handled(as_json) as progress:
        served_url, served_options = served(engine, url, model, timeout)
        r = api.parity(depth, precision=precision, backend=engine, artifact=served_url or onnx, weights=weights, num_classes=num_classes,
                       out_dir=out_dir, preact=preact, seed=seed, images=images, progress=progress, **served_options)

    def render() -> None:
        th = r["thresholds"]
        verdict = Text("PASS", style="green") if r["passed"] else Text.assemble(("FAIL", "red"), ": " + "; ".join(r["failures"]))
        out.print(kv_table(f"parity {r['arch']} {r['precision']}: {r['candidate']['backend']} vs torch fp32", [
            ("inputs", f"{r['n']} ({_inputs_summary(r['inputs'])})"),
            ("max abs error", f"{r['max_abs']:.3g}"),
            ("relative L2", f"{r['rel_l2']:.3g} (bar {th['rel_l2']:g})"),
            ("cosine (mean / min)", f"{r['cosine']:.8f} / {r['cosine_min']:.8f} (bar {th['cosine']:g})"),
            ("top-1 agreement", f"{r['top1_agreement']:.1%} (bar {th['top1']:.0%})"),
            ("top-5 agreement (same set)", f"{r['top5_agreement']:.1%}"),
            ("verdict", verdict),
            *[("note", n) for n in r.get("notes", [])],
        ]))

    emit(as_json, r, render)
    if not r["passed"]:
        if not as_json:
            err.print("[red]error:[/red] parity failed: " + escape("; ".join(r["failures"])), highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _inputs_summary(names: list[str]) -> str:
    views = sum(n.startswith("view") for n in names)
    noise = sum(n.startswith("random") for n in names)
    photos = [n for n in names if not n.startswith(("view", "random"))]
    parts = [", ".join(photos[:8]) + (f" +{len(photos) - 8} more" if len(photos) > 8 else "")] if photos else []
    if views:
        parts.append(f"{views} crops of the photographs")
    if noise:
        parts.append(f"{noise} Gaussian tensors")
    return "; ".join(parts)


def version() -> None:
    """Print the toolkit version."""
    out.print(__version__)
