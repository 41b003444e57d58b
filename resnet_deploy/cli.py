"""`resnet-deploy`: a thin Typer layer over :mod:`resnet_deploy.api`.

Every command takes ``--json`` (one JSON object on stdout, human output suppressed). Bad
input is one line on stderr and a non-zero exit: 2 for input errors, 1 for a failed
parity check, 3 for a backend that cannot run here, 130 for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ResNets from PyTorch to verified ONNX and TensorRT engines.")
out = Console()
err = Console(stderr=True, log_path=False)

DepthOpt = typer.Option("50", "--depth", "-d", help="18, 34, 50, 101, 152, or an architecture name "
                        "(resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, wide_resnet50_2, wide_resnet101_2).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")
PreactOpt = typer.Option(False, "--preact", help="Pre-activation residual units (BN-ReLU-conv).")
WeightsOpt = typer.Option(None, "--weights", "-w", help="torchvision-format .pth/.pt or .safetensors checkpoint.")
ClassesOpt = typer.Option(None, "--num-classes", min=1, help="Classifier size (default: from --weights, else 1000).")
OutOpt = typer.Option(Path("engines"), "--out", "-o", help="Folder that holds <arch>/ artifact folders.")
SeedOpt = typer.Option(0, "--seed", help="Seed of the random weights used when no --weights is given.")


@contextlib.contextmanager
def handled(as_json: bool) -> Iterator[Callable[[str], None]]:
    """Turn expected failures into one line and an exit code; yield a progress callback."""
    status = None if as_json else err.status("working")
    try:
        if status:
            status.start()

        def progress(msg: str) -> None:
            if status:
                status.update(msg)
                err.log(msg)

        yield progress
    except UserError as e:
        if status:
            status.stop()
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        if status:
            status.stop()
        err.print("interrupted: nothing half-written was left behind")
        raise typer.Exit(130) from None
    finally:
        if status:
            status.stop()


def emit(as_json: bool, payload: dict[str, Any], render: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
    else:
        render()


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(k, str(v))
    return table


@app.command()
def info(depth: str = DepthOpt, num_classes: int = typer.Option(1000, "--num-classes", min=1),
         preact: bool = PreactOpt, image_size: int = typer.Option(224, "--image-size", min=32),
         as_json: bool = JsonOpt) -> None:
    """Parameters, multiply-accumulates, stage output shapes and layer count."""
    from .api import describe

    with handled(as_json):
        d = describe(depth, num_classes=num_classes, preact=preact, image_size=image_size)

    def render() -> None:
        out.print(kv_table(d["arch"], [
            ("parameters", f"{d['parameters']:,}"),
            ("multiply-accumulates", f"{d['gmacs']:.2f} G at {image_size}x{image_size}"),
            ("layers", f"{d['layers']} (conv + fc on the main path; {d['projection_convs']} projection convs besides)"),
            ("blocks per stage", d["blocks"]),
        ]))
        stages = Table(title="output shape per stage", title_justify="left")
        stages.add_column("stage")
        stages.add_column("shape")
        for name, shape in d["stages"].items():
            stages.add_row(name, str(shape))
        out.print(stages)

    emit(as_json, d, render)


@app.command()
def export(depth: str = DepthOpt, weights: Optional[Path] = WeightsOpt, num_classes: Optional[int] = ClassesOpt,
           out_dir: Path = OutOpt, batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Fixed batch (default: dynamic)."),
           opset: int = typer.Option(17, "--opset", help="ONNX opset (13-21)."),
           exporter: str = typer.Option("torchscript", "--exporter", help="torchscript (fast, default) or dynamo."),
           preact: bool = PreactOpt, seed: int = SeedOpt, as_json: bool = JsonOpt) -> None:
    """Export the FP32 ONNX model (BatchNorm folded, checked) and its manifest."""
    from . import api

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


@app.command()
def parity(depth: str = DepthOpt,
           engine: str = typer.Option("ort", "--engine", "-e", help="Backend: ort, ort-cuda, trt, trt-rtx."),
           precision: str = typer.Option("fp32", "--precision", "-p", help="fp32, fp16, bf16 or int8 artifact."),
           onnx: Optional[Path] = typer.Option(None, "--onnx", "--artifact", help="ONNX model or engine "
                                               "(default: the precision's artifact under --out)."),
           weights: Optional[Path] = WeightsOpt, num_classes: Optional[int] = ClassesOpt, out_dir: Path = OutOpt,
           images: Optional[list[Path]] = typer.Option(None, "--image", "-i", help="Image file(s) to compare on "
                                                       "(default: bundled photographs + random tensors)."),
           preact: bool = PreactOpt, seed: int = SeedOpt, as_json: bool = JsonOpt) -> None:
    """Compare an ONNX model or engine with PyTorch FP32 at the precision's bars; exit 1 if it fails."""
    from . import api

    with handled(as_json) as progress:
        r = api.parity(depth, precision=precision, backend=engine, artifact=onnx, weights=weights, num_classes=num_classes, out_dir=out_dir, preact=preact,
                       seed=seed, images=images, progress=progress)

    def render() -> None:
        th = r["thresholds"]
        verdict = "[green]PASS[/green]" if r["passed"] else "[red]FAIL[/red]: " + "; ".join(r["failures"])
        out.print(kv_table(f"parity {r['arch']} {r['precision']}: {r['candidate']['backend']} vs torch fp32", [
            ("inputs", f"{r['n']} ({', '.join(r['inputs'])})"),
            ("max abs error", f"{r['max_abs']:.3g}"),
            ("relative L2", f"{r['rel_l2']:.3g} (bar {th['rel_l2']:g})"),
            ("cosine (mean / min)", f"{r['cosine']:.8f} / {r['cosine_min']:.8f}"),
            ("top-1 agreement", f"{r['top1_agreement']:.1%} (bar {th['top1']:.0%})"),
            ("top-5 agreement (same set)", f"{r['top5_agreement']:.1%}"),
            ("verdict", verdict),
        ]))

    emit(as_json, r, render)
    if not r["passed"]:
        if not as_json:
            err.print("[red]error:[/red] parity failed: " + "; ".join(r["failures"]))
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the toolkit version."""
    out.print(__version__)


def main() -> None:
    app()


# Each pipeline stage registers its commands on `app` from a module of its own.
from . import cli_precision  # noqa: E402,F401
from . import cli_engine  # noqa: E402,F401
from . import cli_deploy  # noqa: E402,F401
from . import cli_bench  # noqa: E402,F401

if __name__ == "__main__":  # `python -m resnet_deploy.cli`: the stages registered on the imported module's app
    from resnet_deploy.cli import main as _main

    _main()
