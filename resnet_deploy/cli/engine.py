"""`resnet-deploy build` and `resnet-deploy doctor`: thin layers over
:func:`resnet_deploy.api.build` and :func:`resnet_deploy.doctor.check`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.errors import LiveError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import api
from ..doctor import check
from ..engine import BuildOptions
from ..errors import UserError
from .common import ClassesOpt, JsonOpt, OutOpt, PreactOpt, SeedOpt, WeightsOpt, emit, err, handled, kv_table, out


@contextlib.contextmanager
def _build_bar(enabled: bool) -> Iterator[Any]:
    """A rich progress bar fed by TensorRT's IProgressMonitor phases (one row per phase)."""
    if not enabled:
        yield None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True)
    try:
        bar.start()
    except LiveError:  # an older rich cannot nest it inside the status spinner: go without
        yield None
        return
    tasks: dict[str, Any] = {}

    def update(phase: str, step: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=max(total, 1))
        bar.update(tasks[phase], completed=min(step, max(total, 1)))

    try:
        yield update
    finally:
        bar.stop()


def _parse_ccs(cc: Optional[str]) -> Optional[list[str]]:
    if cc is None:
        return None
    items = [c.strip() for c in cc.split(",") if c.strip()]
    if not items:
        raise UserError("--cc needs at least one compute capability, like 8.6,8.9,12.0")
    return items


def build(
    depth: Optional[str] = typer.Option(None, "--depth", "-d", help="As for export (default 50; with --onnx: the "
                                        "architecture the file records, or its file name for a model made elsewhere)."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16, bf16 or int8: the precision's ONNX "
                                            "is compiled, made first if missing (default fp32; with --onnx: the file's)."),
    engine: str = typer.Option("trt", "--engine", "-e", help="trt (TensorRT 10/11: datacenter GPUs, Jetson) or trt-rtx "
                               "(TensorRT-RTX: RTX GPUs; builds without a GPU)."),
    min_batch: Optional[int] = typer.Option(None, "--min-batch", help="Smallest batch of the optimization profile (default 1)."),
    opt_batch: Optional[int] = typer.Option(None, "--opt-batch", help="Batch the builder tunes for (default 8)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Largest batch of the profile (default 32)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="One static batch (min = opt = max) instead of a profile: "
                                        "what DLA engines take (default 1 with --dla-core)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="Workspace memory pool limit in MiB (default: the library's)."),
    opt_level: int = typer.Option(3, "--opt-level", help="Builder optimization level 0-5 (3 is TensorRT's default)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file, loaded if present and saved "
                                                "after the build (TensorRT; a no-op on TensorRT-RTX)."),
    cc: Optional[str] = typer.Option(None, "--cc", help="trt-rtx: target compute capabilities, comma-separated "
                                     "(e.g. 8.6,8.9,12.0; 'current' = this GPU). Default: 8.0, 8.6, 8.9, 12.0 and later."),
    hardware_compat: Optional[str] = typer.Option(None, "--hardware-compat", help="trt: ampere+ (runs on any Ampere or newer "
                                                  "GPU) or same_cc (any GPU of this compute capability)."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="trt: engine runs on later TensorRT "
                                            "versions (lean runtime embedded)."),
    legacy_precision_flags: bool = typer.Option(False, "--legacy-precision-flags", help="trt on TensorRT 10 only: weak "
                                                "typing with the FP16/INT8 builder flags (removed in TensorRT 11)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="trt on a Jetson with DLA (AGX/NX Orin): run on this "
                                           "DLA core (0 or 1); FP16 or INT8 only; one static --batch (default 1)."),
    gpu_fallback: bool = typer.Option(True, "--gpu-fallback/--no-gpu-fallback", help="With --dla-core: layers DLA cannot "
                                      "run go to the GPU (default) instead of failing the build."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="Compile this ONNX instead of the precision's default one."),
    weights: Optional[Path] = WeightsOpt, num_classes: Optional[int] = ClassesOpt, out_dir: Path = OutOpt,
    preact: bool = PreactOpt, seed: int = SeedOpt,
    force: bool = typer.Option(False, "--force", help="Rebuild even if the engine's manifest matches; "
                       "also replaces an FP32 export in --out made from other weights, seed or class count (refused without it)."),
    as_json: bool = JsonOpt,
) -> None:
    """Compile the precision's ONNX into a TensorRT or TensorRT-RTX engine (reused when its manifest matches)."""
    with handled(as_json) as progress:
        opts = BuildOptions(flavour=engine, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, batch=batch,
                                workspace_mib=workspace, opt_level=opt_level, timing_cache=timing_cache,
                                compute_capabilities=_parse_ccs(cc), hardware_compatibility=hardware_compat,
                                version_compatible=version_compatible, legacy_precision_flags=legacy_precision_flags,
                                dla_core=dla_core, gpu_fallback=gpu_fallback)
        with _build_bar(not as_json) as bar:
            m = api.build(depth, precision=precision, options=opts, onnx=onnx, out_dir=out_dir, weights=weights,
                          num_classes=num_classes, preact=preact, seed=seed, force=force, progress=progress,
                          build_progress=bar)

    def render() -> None:
        target = m.get("target") or {}
        if m["flavour"] == "trt-rtx":
            tgt = "compute capability " + ", ".join(target.get("compute_capabilities") or [])
        else:
            tgt = (f"hardware compatibility {target['hardware_compatibility']}" if target.get("hardware_compatibility")
                   else f"{target.get('gpu')} (compute capability {target.get('compute_capability')})")
            if m.get("dla_core") is not None:
                tgt += f", DLA core {m['dla_core']}" + (" + GPU fallback" if m.get("gpu_fallback") else "")
        lp = m.get("layer_precision") or {}
        status = "reused (manifest matches)" if m["reused"] else f"built in {m['build_seconds']:.1f} s ({m['rebuild_reason']})"
        out.print(kv_table(f"{'reused' if m['reused'] else 'built'} {m['path']}", [
            ("builder", f"{m['builder']} {m['builder_version']}"),
            ("precision", f"{m['precision']} (layer outputs: {lp.get('output_dtypes')}, from {lp.get('source')})"),
            ("batch profile", f"min {m['min_batch']} / opt {m['opt_batch']} / max {m['max_batch']}"),
            ("target", tgt),
            ("source ONNX", f"{m['onnx']} ({m['onnx_status']}, sha256 {m['onnx_sha256'][:16]}…)"),
            ("engine", f"{m['engine_bytes'] / 1e6:.1f} MB, sha256 {m['engine_sha256'][:16]}…"),
            ("status", status),
            *[("note", n) for n in m.get("notes") or []],
        ]))

    emit(as_json, m, render)


def doctor(as_json: bool = JsonOpt) -> None:
    """Every backend with its version, whether it can run here, and if not, why."""
    with handled(as_json):
        report = check()

    def render() -> None:
        gpu = report["gpu"]
        dev = gpu["device"]
        out.print(f"toolkit {report['toolkit_version']}, Python {report['python']}, {report['platform']}")
        out.print(f"GPU: {dev['name']} (compute capability {dev['compute_capability']}, {dev['total_memory_mib']} MiB)"
                  if dev else f"GPU: none ({gpu['why']})", highlight=False)
        table = Table(title="backends", title_justify="left")
        for col in ("backend", "version", "runs here", "why not / notes"):
            table.add_column(col)
        for b in report["backends"]:
            notes = [b["why"]] if b["why"] else []
            if "builds" in b and b.get("builds") and not b["runs"]:
                notes.append("builds engines here: " + b.get("builds_why", "yes"))
            if b.get("note"):
                notes.append(b["note"])
            if b.get("providers"):
                notes.append("providers: " + ", ".join(b["providers"]))
            if b.get("devices"):
                notes.append("devices: " + ", ".join(b["devices"]))
            table.add_row(b["name"], b["version"] or "-", "[green]yes[/green]" if b["runs"] else "[red]no[/red]",
                          "; ".join(notes))
        out.print(table)

    emit(as_json, report, render)
