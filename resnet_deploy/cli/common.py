"""What every command shares: the consoles, the options several commands take, the error
handling that turns a :class:`~resnet_deploy.errors.UserError` into one line and an exit code,
and ``--json`` output."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..artifacts import DEFAULT_ROOT, cleanup_created_dirs, os_reason
from ..errors import Terminated, UserError
from ..limits import MAX_CLASSES, MAX_SEED

out = Console()
err = Console(stderr=True, log_path=False)

DepthOpt = typer.Option("50", "--depth", "-d", help="18, 34, 50, 101, 152 (ImageNet), 20, 32, 44, 56, 110 (the paper's "
                        "CIFAR-10 ResNets), or an architecture name: resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, "
                        "wide_resnet50_2, wide_resnet101_2, preact_resnet50 (any ResNet), seresnet50, seresnet101, "
                        "densenet121/161/169/201, alexnet, vgg11/13/16/19 (+ _bn), googlenet.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")
PreactOpt = typer.Option(False, "--preact", help="Pre-activation residual units (BN-ReLU-conv).")
WeightsOpt = typer.Option(None, "--weights", "-w", help="torchvision-format .pth/.pt or .safetensors checkpoint.")
ClassesOpt = typer.Option(None, "--num-classes", min=1, max=MAX_CLASSES, help="Classifier size (default: from --weights, else 1000).")
OutOpt = typer.Option(DEFAULT_ROOT, "--out", "-o", help="Folder that holds <arch>/ artifact folders.")
SeedOpt = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Seed of the random weights used when no --weights is given.")


@contextlib.contextmanager
def handled(as_json: bool) -> Iterator[Callable[[str], None]]:
    """Turn expected failures into one line and an exit code; yield a progress callback."""
    status = None if as_json else err.status("working")
    try:
        if status:
            status.start()

        def progress(msg: str) -> None:
            if status:  # paths and names in the message print as they are: "[bold]" is not markup here
                status.update(escape(msg))
                err.log(escape(msg))

        yield progress
    except UserError as e:
        fail(status)
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except OSError as e:  # a read or write the stages did not wrap: still one line, naming the file
        fail(status)
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"[red]error:[/red] {escape(where + os_reason(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (MemoryError, RuntimeError) as e:  # an allocation that failed (torch says RuntimeError), not a bug
        if not isinstance(e, MemoryError) and not _allocation_failed(e):
            raise
        fail(status)
        err.print(f"[red]error:[/red] out of memory: {escape(_first_line(e))}; try a smaller --batch or model",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except Terminated:
        fail(status)
        err.print("terminated: nothing half-written was left behind")
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        fail(status)
        err.print("interrupted: nothing half-written was left behind")
        raise typer.Exit(130) from None
    finally:
        if status:
            status.stop()


def _allocation_failed(e: BaseException) -> bool:
    text = str(e).lower()
    return "can't allocate memory" in text or "cannot allocate memory" in text or "out of memory" in text


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:300] if text else "") or type(e).__name__


def fail(status) -> None:
    """After a failed command: stop the spinner, remove the output folders it made and left empty."""
    if status:
        status.stop()
    cleanup_created_dirs()


def emit(as_json: bool, payload: dict[str, Any], render: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
    else:
        render()


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """Key/value rows printed literally (a path or label with ``[bold]`` or ``[/]`` in it is text, not markup);
    a :class:`rich.text.Text` value keeps its own styling."""
    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(escape(str(k)), v if isinstance(v, Text) else escape(str(v)))
    return table


UrlOpt = typer.Option(None, "--url", help="--engine triton: the server, http://HOST:PORT or grpc://HOST:PORT.")
ServedModelOpt = typer.Option(None, "--model", help="--engine triton: the served classifier's name (default: the one "
                              "classifier the server has ready).")
TimeoutOpt = typer.Option(30.0, "--timeout", help="--engine triton: seconds each call to the server may take.")


def served(engine: str, url: str | None, model: str | None, timeout: float) -> tuple[str | None, dict[str, Any]]:
    """``(artifact, runner options)`` for a backend that runs a served model (the URL is its artifact); ``(None, {})``
    for the others, which refuse the served-only options."""
    from ..runners import artifact_kind

    if artifact_kind(engine) == "served":
        return url, {"model": model, "timeout_s": timeout}
    if url is not None or model is not None:
        raise UserError(f"--url and --model are for a served backend (--engine triton), not --engine {engine}")
    return None, {}
