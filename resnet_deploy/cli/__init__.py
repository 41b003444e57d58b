"""`resnet-deploy`: a thin Typer layer over :mod:`resnet_deploy.api`, one module per stage.

Every command takes ``--json`` (one JSON object on stdout, human output suppressed). Bad
input is one line on stderr and a non-zero exit: 2 for input errors, 1 for a failed
parity check, 3 for a backend that cannot run here, 130 for Ctrl-C.

The command modules define plain functions and import only :mod:`.common`; this module is the
one place they are registered, so no command module imports another.
"""

from __future__ import annotations

import signal
import sys

import typer
from typer.core import TyperGroup

from ..errors import Terminated
from . import bench, deploy, diagnose, engine, model, precision


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a missing value, a value of the wrong type) as one line and exit 2,
    instead of click's usage text in a box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                **extra)
        except typer.Abort:
            print("interrupted", file=sys.stderr)
            code = 130
        except Exception as e:
            if not (hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)):
                raise
            ctx = getattr(e, "ctx", None)
            command = ctx.command_path if ctx is not None else "resnet-deploy"
            if e.format_message():  # (no arguments at all: the help was printed, nothing to add)
                print(f"error: {e.format_message()} (see `{command} --help`)", file=sys.stderr)
            code = e.exit_code
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ResNets from PyTorch to verified ONNX and TensorRT engines.")

for command, name in [
    (model.info, None), (model.export, None), (model.parity, None),
    (precision.quantize, None), (diagnose.diagnose, None), (precision.eval_, "eval"),
    (engine.build, None), (engine.doctor, None),
    (bench.bench, None), (bench.bench_merge, "bench-merge"),
    (deploy.package, None), (deploy.predict, None), (deploy.serve, None),
    (model.version, None),
]:
    app.command(name)(command)


def _terminate(signum, frame):
    raise Terminated()


_terminate.cancels_builds = True  # the engine builder may take it over to cancel TensorRT cleanly


def main() -> None:
    """The console script: SIGTERM unwinds like Ctrl-C (cleaning up), then ``app``."""
    signal.signal(signal.SIGTERM, _terminate)
    app()


__all__ = ["app", "main"]
