"""NVIDIA's ``perf_analyzer`` against a served model: Triton's own load tool, its figures in the bench report.

``bench --engine triton --url ... --perf-analyzer`` runs it on every Triton row after the row's own
parity check and timing loop, over a concurrency sweep (``--pa-concurrency 1:4``: that many requests
in flight, each of the row's batch, random data of the served input's shape), and keeps what it
measured per concurrency: images/s (perf_analyzer's "Inferences/Second" counts images), client
p50/p90/p95/p99 and the server's queue and compute times. The row's ``perf_analyzer_*`` fields hold
the concurrency with the highest throughput; ``perf_analyzer_sweep`` every step.

Where it is found (:func:`find_perf_analyzer`): the path given (the binary, or a Python environment
whose ``bin/`` holds it), ``$RESNET_DEPLOY_PERF_ANALYZER``, ``perf_analyzer`` on ``PATH``, this
interpreter's ``bin/``, and the Triton server's environment (``$RESNET_DEPLOY_TRITONSERVER``). The
binary ``tritonclient==2.51.0`` bundles (``bin/perf_analyzer``) runs on glibc 2.36 with Debian's
``libb64-0d`` and ``libcudart.so.12`` from the ``nvidia-cuda-runtime-cu12`` wheel, which it finds
in the same environment (the ``perf-analyzer`` wheels need glibc 2.38). Torch-free.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailable, UserError

ENV_VAR = "RESNET_DEPLOY_PERF_ANALYZER"
SERVER_ENV_VAR = "RESNET_DEPLOY_TRITONSERVER"
INSTALL = ("install perf_analyzer: `pip install tritonclient==2.51.0 nvidia-cuda-runtime-cu12` (its bin/perf_analyzer) "
           "and `apt-get install libb64-0d`, or NVIDIA's Triton SDK container; point --perf-analyzer-path (or "
           f"${ENV_VAR}) at it")
MAX_CONCURRENCY = 64
CSV_COLUMNS = ("Concurrency", "Inferences/Second", "Server Queue", "Server Compute Infer", "p50 latency", "p90 latency",
               "p95 latency", "p99 latency")


@dataclass(frozen=True)
class PerfAnalyzerSettings:
    """What ``bench --perf-analyzer`` asks of perf_analyzer."""

    concurrency: tuple[int, int] = (1, 4)   # --concurrency-range start:end (step 1)
    window_ms: int = 2000                   # --measurement-interval: one stabilisation window
    percentile: int = 99                    # --percentile: stabilise on this latency percentile
    stability_pct: int = 10                 # --stability-percentage: how far apart the windows may be (its default: 10)
    max_trials: int = 10                    # --max-trials: windows tried per concurrency before it gives up
    path: str | None = None                 # the binary or an environment holding it (None: search)
    timeout_s: float = 300.0                # the whole sweep, per row

    @classmethod
    def parse_range(cls, text: str) -> tuple[int, int]:
        m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", text or "")
        if not m:
            raise UserError(f"--pa-concurrency takes START:END (e.g. 1:4) or one number, got {text!r}")
        start = int(m.group(1))
        return start, int(m.group(2) or start)

    def validate(self) -> None:
        start, end = self.concurrency
        if not 1 <= start <= end <= MAX_CONCURRENCY:
            raise UserError(f"--pa-concurrency must be START:END with 1 <= START <= END <= {MAX_CONCURRENCY}, "
                            f"got {start}:{end}")
        if not 100 <= self.window_ms <= 60_000:
            raise UserError(f"--pa-window-ms must be within 100..60000, got {self.window_ms}")
        if not 1 <= self.stability_pct <= 100:
            raise UserError(f"--pa-stability must be a percentage within 1..100, got {self.stability_pct}")
        if not 3 <= self.max_trials <= 100:
            raise UserError(f"the perf_analyzer trial count must be within 3..100, got {self.max_trials}")
        if not 1 <= self.percentile <= 99:
            raise UserError(f"the perf_analyzer percentile must be within 1..99, got {self.percentile}")

    @property
    def label(self) -> str:
        start, end = self.concurrency
        return f"concurrency {start}" + (f"..{end}" if end != start else "")


@dataclass(frozen=True)
class PerfAnalyzerInstall:
    binary: Path
    libs: tuple[Path, ...]    # prepended to LD_LIBRARY_PATH
    version: str

    def env(self) -> dict[str, str]:
        paths = [str(p) for p in self.libs] + [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        return {**os.environ, "LD_LIBRARY_PATH": ":".join(paths)}


@dataclass(frozen=True)
class ConcurrencyFigures:
    """perf_analyzer's figures at one concurrency (its CSV's microseconds in milliseconds)."""

    concurrency: int
    throughput_ips: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    server_queue_ms: float
    server_compute_ms: float

    def text(self) -> str:
        return (f"c{self.concurrency}: {self.throughput_ips:.1f} img/s, p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
                f"queue {self.server_queue_ms:.2f} ms, compute {self.server_compute_ms:.2f} ms")


def _candidates(path: str | os.PathLike[str] | None) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for given, source in ((path, "--perf-analyzer-path"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if given:
            p = Path(given)
            out.append((p / "bin" / "perf_analyzer" if p.is_dir() else p, source))
    if path or os.environ.get(ENV_VAR):
        return out  # a path the user gave is the one to use: no silent fallback to another install
    on_path = shutil.which("perf_analyzer")
    if on_path:
        out.append((Path(on_path), "PATH"))
    out.append((Path(sys.prefix) / "bin" / "perf_analyzer", "this Python environment"))
    server_env = os.environ.get(SERVER_ENV_VAR)
    if server_env:
        out.append((Path(server_env) / "bin" / "perf_analyzer", f"${SERVER_ENV_VAR}"))
    return out


def _cudart_dirs(binary: Path) -> tuple[Path, ...]:
    """``nvidia-cuda-runtime-cu12``'s library folder in the environment whose ``bin/`` holds ``binary``."""
    env = binary.resolve().parent.parent
    return tuple(sorted(env.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib")))


def find_perf_analyzer(path: str | os.PathLike[str] | None = None) -> PerfAnalyzerInstall:
    """The first perf_analyzer that starts here (``--version``), or :class:`BackendUnavailable` saying why."""
    tried = []
    for binary, source in _candidates(path):
        if not binary.is_file() or not os.access(binary, os.X_OK):
            tried.append(f"{source}: no executable {binary}")
            continue
        install = PerfAnalyzerInstall(binary, _cudart_dirs(binary), "?")
        try:
            probe = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, env=install.env())
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"{source}: {binary} did not start ({e})")
            continue
        text = (probe.stdout + probe.stderr).strip()
        m = re.search(r"Perf Analyzer Version (\S+)", text)
        if probe.returncode == 0 and m:
            return PerfAnalyzerInstall(binary, install.libs, m.group(1))
        missing = re.findall(r"(\S+\.so\S*): cannot open shared object file", text)
        tried.append(f"{source}: {binary} " + (f"lacks {', '.join(missing)}" if missing else f"failed: {text[-200:]}"))
    raise BackendUnavailable("perf_analyzer", f"no perf_analyzer runs here ({'; '.join(tried) or 'none found'}); {INSTALL}")


def parse_csv(text: str) -> list[ConcurrencyFigures]:
    """perf_analyzer's ``-f`` CSV (one line per concurrency; latencies in microseconds)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"perf_analyzer's CSV lacks the columns {', '.join(missing)} (got {reader.fieldnames})")
    out = []
    for line in reader:
        try:
            us = {c: float(line[c]) for c in CSV_COLUMNS[2:]}
            out.append(ConcurrencyFigures(
                concurrency=int(line["Concurrency"]), throughput_ips=float(line["Inferences/Second"]),
                p50_ms=us["p50 latency"] / 1e3, p90_ms=us["p90 latency"] / 1e3, p95_ms=us["p95 latency"] / 1e3,
                p99_ms=us["p99 latency"] / 1e3, server_queue_ms=us["Server Queue"] / 1e3,
                server_compute_ms=us["Server Compute Infer"] / 1e3))
        except (TypeError, ValueError):
            raise UserError(f"perf_analyzer's CSV has a line that is not numbers: {dict(line)}") from None
    if not out:
        raise UserError("perf_analyzer's CSV holds no measurement")
    return sorted(out, key=lambda f: f.concurrency)


def command(install: PerfAnalyzerInstall, *, address: str, protocol: str, model: str, version: str, batch: int,
            settings: PerfAnalyzerSettings, csv_path: Path) -> list[str]:
    start, end = settings.concurrency
    cmd = [str(install.binary), "-m", model, "-u", address, "-i", protocol, "-b", str(batch),
           "--concurrency-range", f"{start}:{end}:1", "--measurement-interval", str(settings.window_ms),
           "--percentile", str(settings.percentile), "--stability-percentage", str(settings.stability_pct),
           "--max-trials", str(settings.max_trials), "-f", str(csv_path)]
    return cmd + (["-x", version] if version else [])


def measure(install: PerfAnalyzerInstall, *, address: str, protocol: str, model: str, version: str = "", batch: int,
            settings: PerfAnalyzerSettings) -> list[ConcurrencyFigures]:
    """One perf_analyzer sweep against ``model`` at ``address`` (``host:port``); its figures per concurrency."""
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-pa-") as tmp:
        csv_path = Path(tmp) / "pa.csv"
        cmd = command(install, address=address, protocol=protocol, model=model, version=version, batch=batch,
                      settings=settings, csv_path=csv_path)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=settings.timeout_s, env=install.env(),
                                  cwd=tmp)
        except subprocess.TimeoutExpired:
            raise UserError(f"perf_analyzer did not finish within {settings.timeout_s:g} s against {model!r} at "
                            f"{address}") from None
        if done.returncode != 0 or not csv_path.is_file():
            lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
            why = next((ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()), lines[-1] if lines else "")
            raise UserError(f"perf_analyzer against {model!r} at {address} failed (exit {done.returncode}): {why[:300]}")
        return parse_csv(csv_path.read_text())


def best(figures: list[ConcurrencyFigures]) -> ConcurrencyFigures:
    """The concurrency with the highest throughput (the lowest concurrency among equals)."""
    return max(figures, key=lambda f: (f.throughput_ips, -f.concurrency))


__all__ = ["ConcurrencyFigures", "INSTALL", "PerfAnalyzerInstall", "PerfAnalyzerSettings", "best", "find_perf_analyzer",
           "measure", "parse_csv"]
