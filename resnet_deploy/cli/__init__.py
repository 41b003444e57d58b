"""`resnet-deploy`: a thin Typer layer over :mod:`resnet_deploy.api`, one module per stage.

Every command takes ``--json`` (one JSON object on stdout, human output suppressed). Bad
input is one line on stderr and a non-zero exit: 2 for input errors, 1 for a failed
parity check, 3 for a backend that cannot run here, 130 for Ctrl-C.

The command modules define plain functions and import only :mod:`.common`; this module is the
one place they are registered, so no command module imports another.
"""

from __future__ import annotations

import typer

from . import bench, deploy, engine, model, precision

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ResNets from PyTorch to verified ONNX and TensorRT engines.")

for command, name in [
    (model.info, None), (model.export, None), (model.parity, None),
    (precision.quantize, None), (precision.eval_, "eval"),
    (engine.build, None), (engine.doctor, None),
    (bench.bench, None), (bench.bench_merge, "bench-merge"),
    (deploy.package, None), (deploy.predict, None),
    (model.version, None),
]:
    app.command(name)(command)


def main() -> None:
    app()


__all__ = ["app", "main"]
