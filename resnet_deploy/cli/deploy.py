"""`resnet-deploy package` and `resnet-deploy predict` (thin layers over :func:`resnet_deploy.deploy.package`
and :func:`resnet_deploy.api.predict`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import api
from ..artifacts import DEFAULT_ROOT
from ..errors import UserError
from ..runners import BACKENDS
from .common import DepthOpt, JsonOpt, OutOpt, PreactOpt, SeedOpt, ServedModelOpt, TimeoutOpt, UrlOpt, WeightsOpt, emit, handled, kv_table, out, served


def package(depth: str = DepthOpt,
            precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16, bf16 or int8 (default fp16, "
                                                    "or the precision of --onnx)."),
            target: str = typer.Option(..., "--target", "-t", help="jetson (edge bundle) or triton (model repository)."),
            out_dir: Path = typer.Option(..., "--out", "-o", help="Bundle folder (jetson) or model repository (triton)."),
            onnx: Optional[Path] = typer.Option(None, "--onnx", help="Package this ONNX instead of the precision's artifact."),
            engine_file: Optional[Path] = typer.Option(None, "--engine-file", help="Triton only: serve this TensorRT "
                                                       "engine (with its manifest) as tensorrt_plan."),
            weights: Optional[Path] = WeightsOpt,
            labels: Optional[Path] = typer.Option(None, "--labels", help="Class names, one per line (default ImageNet)."),
            name: Optional[str] = typer.Option(None, "--name", help="Triton model name (default <arch>_<precision>)."),
            min_batch: Optional[int] = typer.Option(None, "--min-batch", help="Jetson engine profile: smallest batch."),
            opt_batch: Optional[int] = typer.Option(None, "--opt-batch", help="Jetson engine profile: tuned batch."),
            max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Largest batch (jetson profile / Triton max_batch_size)."),
            instances: int = typer.Option(1, "--instances", help="Triton: model instances (per GPU on a GPU server)."),
            instance_kind: str = typer.Option("auto", "--instance-kind", help="Triton: auto (GPU instances where the server "
                                              "has a GPU, else CPU), gpu or cpu. A TensorRT plan is always gpu."),
            ensemble: bool = typer.Option(True, "--ensemble/--no-ensemble", help="Triton: also write the image-bytes "
                                          "ensemble <name>_images (preprocess -> model -> top-k)."),
            top: int = typer.Option(5, "--top", "-k", help="Triton ensemble: how many classes it returns."),
            triton_backend: str = typer.Option("onnxruntime", "--triton-backend", help="Triton: what serves the ONNX, "
                                               "onnxruntime or openvino (Triton's OpenVINO backend on the same model.onnx: "
                                               "the fast INT8 path on CPUs; CPU instances)."),
            artifacts_dir: Path = typer.Option(DEFAULT_ROOT, "--artifacts", help="Where the precision ONNX lives / is made."),
            force: bool = typer.Option(False, "--force", help="Replace an existing, non-empty output folder."),
            preact: bool = PreactOpt, as_json: bool = JsonOpt) -> None:
    """Package a model for a Jetson / edge device or an NVIDIA Triton model repository."""
    with handled(as_json) as progress:
        m = api.package(depth, precision=precision, target=target, out=out_dir, onnx=onnx, engine=engine_file, weights=weights,
                labels=labels, name=name, force=force, artifacts_dir=artifacts_dir, min_batch=min_batch, opt_batch=opt_batch,
                max_batch=max_batch, instances=instances, instance_kind=instance_kind, ensemble=ensemble, top=top, preact=preact,
                triton_backend=triton_backend, progress=progress)

    def render() -> None:
        if m["kind"] == "jetson-bundle":
            e = m["engine"]
            out.print(kv_table(f"edge bundle {m['path']}", [
                ("model", f"{m['model']['arch']} {m['model']['precision']} ({m['model']['file']})"),
                ("engine profile", f"batch {e['min_batch']}/{e['opt_batch']}/{e['max_batch']} (build on the device: ./build_engine.sh)"),
                ("preprocessing", f"resize {m['preprocess']['resize']}, crop {m['preprocess']['image_size']}, NCHW"),
                ("files", len(m["files"])),
                ("next", f"copy {m['path']} to the device, then ./build_engine.sh && python3 infer.py IMAGE"),
            ]))
        else:
            out.print(kv_table(f"Triton model {m['path']}", [
                ("platform", m["platform"]), ("model", f"{m['arch']} {m['precision']} -> {m['model_file']}"),
                ("max_batch_size", m["max_batch_size"]), ("preferred batch sizes", m["preferred_batch_size"] or "-"),
                ("instances", f"{m['instances']} x {m['instance_kind']}"),
                ("image ensemble", f"{m['ensemble']['name']} (image bytes -> top-{m['ensemble']['top']})" if m["ensemble"] else "-"),
                *(("note", n) for n in m["notes"]),
                ("next", f"resnet-deploy serve {Path(m['path']).parent}"),
            ]))

    emit(as_json, m, render)


def predict(images: list[Path] = typer.Argument(..., help="Image files to classify."),
            depth: str = DepthOpt, weights: Optional[Path] = WeightsOpt,
            engine: str = typer.Option("ort", "--engine", "-e", help=f"Backend: {', '.join(BACKENDS)}."),
            precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16, bf16 or int8 artifact "
                                                      "(default: the given artifact's; fp32 when none is given)."),
            artifact: Optional[Path] = typer.Option(None, "--artifact", help="ONNX model or engine (default: the precision's "
                                                    "artifact under --out)."),
            labels: Optional[Path] = typer.Option(None, "--labels", help="Class names, one per line (default ImageNet)."),
            top: int = typer.Option(5, "--top", "-k", help="How many classes to show."),
            num_classes: Optional[int] = typer.Option(None, "--num-classes", min=1, help="Classifier size (default: from "
                                                      "the weights / artifact)."),
            out_dir: Path = OutOpt, url: Optional[str] = UrlOpt, model: Optional[str] = ServedModelOpt,
            timeout: float = TimeoutOpt, preact: bool = PreactOpt, seed: int = SeedOpt, as_json: bool = JsonOpt) -> None:
    """Top-k ImageNet classes (or --labels) with softmax probabilities for image files."""
    with handled(as_json) as progress:
        served_url, served_options = served(engine, url, model, timeout)
        r = api.predict(images, depth, weights=weights, backend=engine, precision=precision, artifact=served_url or artifact,
                labels=labels, top=top, num_classes=num_classes, out_dir=out_dir, preact=preact, seed=seed, progress=progress,
                **served_options)

    def render() -> None:
        for p in r["predictions"]:
            table = Table(title=escape(f"{p['image']}  ({r['arch']} {r['precision']} on {r['backend']})"), title_justify="left")
            table.add_column("#", justify="right")
            table.add_column("class")
            table.add_column("index", justify="right")
            table.add_column("probability", justify="right")
            for item in p["top"]:
                table.add_row(str(item["rank"]), escape(item["label"]), str(item["index"]), f"{item['probability']:.4f}")
            out.print(table)

    emit(as_json, r, render)


def serve(repository: Path = typer.Argument(..., help="Triton model repository (from `package --target triton`)."),
          server: Optional[Path] = typer.Option(None, "--server", help="tritonserver binary, install folder, or a Python "
                                                "environment with nvidia-pytriton (default: $RESNET_DEPLOY_TRITONSERVER, PATH, "
                                                "/opt/tritonserver, PyTriton in this Python)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes the server to the network)."),
          http_port: int = typer.Option(8000, "--http-port", help="HTTP/REST port."),
          grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port."),
          metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Prometheus metrics port (default: metrics off)."),
          backend: Optional[list[str]] = typer.Option(None, "--backend", help="Extra backend NAME=FOLDER (a folder with a "
                                                      "model.py runs through the python backend); repeatable."),
          ready_timeout: float = typer.Option(120.0, "--ready-timeout", help="Seconds to wait for every model to be READY."),
          as_json: bool = JsonOpt) -> None:
    """Run a local Triton server on a model repository until Ctrl-C or SIGTERM (then stop it cleanly)."""
    with handled(as_json) as progress:
        extra = {}
        for item in backend or []:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise UserError(f"--backend takes NAME=FOLDER (got {item!r})")
            extra[name] = folder
        srv = api.serve(repository, server=server, host=host, http_port=http_port, grpc_port=grpc_port,
                        metrics_port=metrics_port, backends=extra, ready_timeout_s=ready_timeout, progress=progress)
        try:
            info = {"endpoints": srv.endpoints, "pid": srv.process.pid, "server": srv.install.describe(),
                    "repository": str(repository), "models": srv.models()}
            emit(as_json, info, lambda: out.print(kv_table(f"Triton serving {repository} (pid {srv.process.pid})", [
                *((k, v) for k, v in srv.endpoints.items()), ("server", f"{srv.install.binary} ({srv.install.source})"),
                *(("model", f"{m['name']} v{m.get('version', '?')}: {m.get('state')}") for m in info["models"]),
                ("stop", "Ctrl-C or SIGTERM")])))
            sys.stdout.flush()
            code = srv.wait()
            raise UserError(f"tritonserver exited with status {code}: {srv.log_tail()}")
        finally:
            srv.stop()
            progress("the Triton server has stopped")
