"""Through a Triton server vs in-process: same ONNX, same machine, one interleaved run.

    python benchmarks/triton-serving/run.py [--server .venv-triton] [--depth 18] [--seconds 5]

Writes ``results.md`` and ``results.json`` beside this script. What is measured:

* **throughput at the best concurrency**: C clients (threads) each send one image per request in a
  closed loop for ``--seconds``; in-process they call one ONNX Runtime session (``OrtRunner``,
  ``--threads`` intra-op threads), through Triton each client has its own gRPC connection and the
  server's dynamic batcher groups their requests. C in ``--concurrency``; in-process and Triton
  alternate at each C.
* **p99 at the same QPS**: open-loop arrivals (Poisson, seeded) at one rate for both, chosen as
  ``--load`` x the lower of the two peaks; latency is completion minus the scheduled arrival.

**Which backend serves**: the ONNX model runs in Triton through the python stand-in for the ONNX
Runtime backend (``tests/serving/standin/onnxruntime/model.py``: onnxruntime in Triton's python
backend stub, ``--threads`` intra-op threads), because NVIDIA's C++ onnxruntime backend is not on
PyPI. Its cost beyond NVIDIA's backend: each batch crosses the stub's shared-memory IPC twice and
runs Python per request, on the same cores the model computes on.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from resnet_deploy import api
from resnet_deploy.bench import git_revision
from resnet_deploy.deploy import Ports, TritonServer, find_server
from resnet_deploy.model import build_network
from resnet_deploy.runners import open_runner
from resnet_deploy.versions import dist_version

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STANDIN = REPO / "tests" / "serving" / "standin" / "onnxruntime"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def closed_loop(make_call, clients: int, seconds: float, image: np.ndarray) -> dict:
    """``clients`` threads, each with its own call (``make_call()``), one image per request, for ``seconds``."""
    stop = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def worker(i: int) -> None:
        call = make_call()
        call(image)  # connection / first-call warm-up, not counted
        barrier.wait()
        while time.perf_counter() < stop:
            t = time.perf_counter()
            call(image)
            latencies[i].append(time.perf_counter() - t)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1e3
    n = len(lat)
    return {"clients": clients, "requests": n, "img_per_s": round(n / min(wall, seconds + lat.max() / 1e3), 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2)}


def open_loop(make_call, qps: float, seconds: float, image: np.ndarray, pool: int = 32, seed: int = 0) -> dict:
    """Poisson arrivals at ``qps`` for ``seconds``; latency from each scheduled arrival to its completion."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / qps, size=int(qps * seconds * 1.5) + 10))
    arrivals = arrivals[arrivals < seconds]
    local = threading.local()

    def call(img):
        if not hasattr(local, "call"):
            local.call = make_call()
        local.call(img)

    with cf.ThreadPoolExecutor(pool) as ex:
        list(ex.map(lambda _: call(image), range(pool)))  # every worker's connection made before the clock starts
        t0 = time.perf_counter()
        futures = []
        for at in arrivals:
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

            def job(at=at):
                call(image)
                return time.perf_counter() - (t0 + at)
            futures.append(ex.submit(job))
        lat = np.asarray([f.result() for f in futures]) * 1e3
    return {"qps": round(qps, 1), "requests": len(lat), "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p90_ms": round(float(np.percentile(lat, 90)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default=str(REPO / ".venv-triton"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, in-process and in the server")
    ap.add_argument("--load", type=float, default=0.7, help="p99 is measured at this fraction of the lower peak")
    ap.add_argument("--work", default="/tmp/triton-serving-bench")
    args = ap.parse_args()
    revision = git_revision(HERE)  # before this run writes its own results
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    weights = work / "resnet18-plain.pth"
    torch.save(build_network("resnet18").state_dict(), weights)  # timing only: plainly initialised weights
    onnx = api.export(18, weights=weights, out_dir=work / "engines")["path"]
    repo = work / "repository"
    api.package(18, target="triton", out=repo, onnx=onnx, name="resnet18", ensemble=False, max_batch=16, force=True)
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    os.environ["STANDIN_ORT_THREADS"] = str(args.threads)
    http, grpc = free_ports(2)
    server = TritonServer(repo, install=find_server(args.server), ports=Ports(http=http, grpc=grpc),
                          extra_backends={"onnxruntime": STANDIN})
    local = open_runner("ort", onnx, threads=args.threads)
    rows = []
    with server:
        url = server.endpoints["grpc"]

        def served_call():
            r = open_runner("triton", url, model="resnet18")
            return r.infer

        def local_call():
            return local.infer
        load_before = os.getloadavg()
        for c in (int(x) for x in args.concurrency.split(",")):
            for where, make in (("in-process", local_call), ("triton", served_call)):
                row = {"where": where, **closed_loop(make, c, args.seconds, image)}
                print(row, flush=True)
                rows.append(row)
        peak = {w: max((r for r in rows if r["where"] == w), key=lambda r: r["img_per_s"]) for w in ("in-process", "triton")}
        qps = args.load * min(p["img_per_s"] for p in peak.values())
        at_qps = {w: open_loop(make, qps, 2 * args.seconds, image)
                  for w, make in (("in-process", local_call), ("triton", served_call))}
        print(at_qps, flush=True)
        load_after = os.getloadavg()
    local.close()
    ratio = peak["triton"]["img_per_s"] / peak["in-process"]["img_per_s"]
    result = {"command": "python " + " ".join([str(Path(sys.argv[0]).relative_to(REPO)) if Path(sys.argv[0]).is_absolute() else sys.argv[0], *sys.argv[1:]]),
              "git": revision, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(), "cores": os.cpu_count(),
              "load_avg_before": load_before, "load_avg_after": load_after, "model": "resnet18 fp32 224x224 (plain init weights)",
              "triton": "tritonserver 2.51 (nvidia-pytriton 0.7.0), python stand-in for the onnxruntime backend",
              "versions": {"onnxruntime": dist_version("onnxruntime"), "tritonclient": dist_version("tritonclient")},
              "threads": args.threads, "closed_loop": rows, "peak": peak, "served_over_in_process": round(ratio, 3),
              "at_same_qps": at_qps}
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Through Triton vs in-process: ResNet-18 FP32, batch-1 requests\n",
             f"`{result['command']}` (git {result['git']}) on {result['date']}: {result['cpu']}, {result['cores']} cores "
             f"(load average {load_before[0]:.1f} before, {load_after[0]:.1f} after); in-process and Triton "
             "alternate at each concurrency, so the ratios are what to read.\n",
             f"Served by {result['triton']}, ONNX Runtime {result['versions']['onnxruntime']} with {args.threads} "
             "intra-op threads on both sides; client: tritonclient gRPC, one connection per client thread.\n",
             "| concurrency | in-process img/s | in-process p99 ms | Triton img/s | Triton p99 ms |", "|---|---|---|---|---|"]
    for c in sorted({r["clients"] for r in rows}):
        a = next(r for r in rows if r["clients"] == c and r["where"] == "in-process")
        b = next(r for r in rows if r["clients"] == c and r["where"] == "triton")
        lines.append(f"| {c} | {a['img_per_s']} | {a['p99_ms']} | {b['img_per_s']} | {b['p99_ms']} |")
    lines += ["", f"Best: in-process {peak['in-process']['img_per_s']} img/s at {peak['in-process']['clients']} clients, "
              f"Triton {peak['triton']['img_per_s']} img/s at {peak['triton']['clients']} clients: **{ratio:.2f}x**.", "",
              f"At the same {qps:.1f} QPS (open loop, Poisson, {2 * args.seconds:g} s): "
              f"in-process p50/p90/p99 {at_qps['in-process']['p50_ms']}/{at_qps['in-process']['p90_ms']}/{at_qps['in-process']['p99_ms']} ms, "
              f"Triton {at_qps['triton']['p50_ms']}/{at_qps['triton']['p90_ms']}/{at_qps['triton']['p99_ms']} ms.", ""]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
