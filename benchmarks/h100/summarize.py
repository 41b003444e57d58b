"""Run HERE after the device calls: merge their bench runs and check issue 5's GPU figures.

    python benchmarks/h100/summarize.py /work/.device/<call>/h100-*.tgz ... \
        --anchors ../shared/anchors/h100-2026-11-23.csv --out benchmarks/h100-2026-11-23

Writes into --out the merged results.json / results.csv / report.md / plots
(`resnet-deploy bench-merge`) and targets.md: each figure the issue asks of the H100 against its
bar, pass or miss, from the merged rows. GPU throughput is the compute-only figure (inputs
already on the device, as the anchors' standalone loop timed it); the end-to-end figure
(host copies included) stands beside it.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from resnet_deploy.bench import merge_results  # noqa: E402
from resnet_deploy.bench.report import throughput  # noqa: E402
from resnet_deploy.errors import UserError  # noqa: E402

OVERHEAD_BAR_PCT = 3.0


def unpack(sources: list[str], tmp: Path) -> list[Path]:
    runs = []
    for s in sources:
        p = Path(s)
        if p.suffix == ".tgz" or p.name.endswith(".tar.gz"):
            with tarfile.open(p) as t:
                t.extractall(tmp / p.stem, filter="data")
            runs += sorted(d.parent for d in (tmp / p.stem).rglob("results.json"))
        else:
            runs.append(p)
    return runs


def anchor_best(path: Path) -> dict[int, tuple[float, str]]:
    """Best images/s at batch 256, FP16, per depth, and which backend gave it."""
    best: dict[int, tuple[float, str]] = {}
    with open(path) as f:
        for r in csv.DictReader(line for line in f if not line.startswith("#")):
            if r["precision"] == "fp16" and r["batch"] == "256":
                d, ips = int(r["depth"]), float(r["images_per_s"])
                if ips > best.get(d, (0.0, ""))[0]:
                    best[d] = (ips, r["backend"])
    return best


def ips(row: dict | None) -> float | None:
    return None if row is None else throughput(row)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="bench .tgz files from the device, or result folders")
    ap.add_argument("--anchors", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    try:
        best = anchor_best(Path(args.anchors))
        with tempfile.TemporaryDirectory() as tmp:
            runs = unpack(args.runs, Path(tmp))
            merged = merge_results(runs, out, run_id=out.name)
    except (UserError, OSError, tarfile.TarError, KeyError, ValueError) as e:
        print(f"summarize.py: error: {e}", file=sys.stderr)
        return 2
    rows = [r for r in merged.rows if r["status"] in ("ok", "failed")]

    def get(backend: str, depth: int, precision: str, batch: int) -> dict | None:
        return next((r for r in rows if r["backend"] == backend and r["arch"] == f"resnet{depth}"
                     and r["precision"] == precision and r["batch"] == batch), None)

    checks: list[tuple[str, str, str, bool | None]] = []  # (what, measured, bar, passed)

    def at_least(what: str, row: dict | None, bar: float) -> None:
        v = ips(row)
        e2e = (row or {}).get("latency_throughput_ips")
        shown = "not measured" if v is None else f"{v:,.0f} img/s" + (f" (end to end {e2e:,.0f})" if e2e else "")
        checks.append((what, shown, f">= {bar:,.0f}",
                       None if v is None else v >= bar and row["status"] == "ok"))

    at_least("ResNet-50 FP16 b256, ONNX Runtime CUDA + I/O binding", get("ort-cuda", 50, "fp16", 256), 10_500)
    at_least("ResNet-50 FP16 b256, torch.compile", get("torch-compile", 50, "fp16", 256), 25_200)
    b1 = get("torch-compile", 50, "fp16", 1)
    v = b1 and (b1.get("compute_p50_ms") or b1.get("latency_p50_ms"))
    checks.append(("ResNet-50 FP16 b1, torch.compile latency p50",
                   "not measured" if not v else f"{v:.3f} ms (end to end {b1['latency_p50_ms']:.3f})", "<= 0.47 ms",
                   None if not v else v <= 0.47 and b1["status"] == "ok"))
    for depth, (bar, who) in sorted(best.items()):
        cands = [r for r in rows if r["arch"] == f"resnet{depth}" and r["precision"] == "fp16" and r["batch"] == 256
                 and r["status"] == "ok"]
        top = max(cands, key=lambda r: ips(r) or 0, default=None)
        at_least(f"ResNet-{depth} FP16 b256, best backend ({top['backend'] if top else '-'}; anchor: {who})", top, bar)
        # several streams (--streams): end to end, host copies included, so it only counts where it beats the bar
        several = max((r for r in cands if r.get("streams_throughput_ips")), key=lambda r: r["streams_throughput_ips"],
                      default=None)
        if several is not None:
            v = several["streams_throughput_ips"]
            checks.append((f"ResNet-{depth} FP16 b256, {several['streams']} streams at once ({several['backend']}, "
                           "end to end)", f"{v:,.0f} img/s ({several['streams_gain_pct']:+.0f}% over one stream end to end)",
                           f">= {bar:,.0f}", v >= bar))
    over = [r for r in rows if r.get("harness_overhead_pct") is not None]
    worst = max(over, key=lambda r: abs(r["harness_overhead_pct"]), default=None)
    n_out = sum(abs(r["harness_overhead_pct"]) > OVERHEAD_BAR_PCT for r in over)
    checks.append((f"harness vs bare loop, {len(over)} rows",
                   "-" if worst is None else f"{n_out} rows beyond; worst {worst['harness_overhead_pct']:+.1f}% "
                   f"({worst['arch']} {worst['precision']} {worst['backend']} b{worst['batch']})",
                   f"within ±{OVERHEAD_BAR_PCT:.0f}%", None if worst is None else n_out == 0))
    failed = [r for r in rows if r["status"] == "failed"]
    checks.append((f"parity of every measured row ({len(rows)})", f"{len(failed)} failed", "0 failed",
                   None if not rows else not failed))

    env = merged.environment
    lines = [f"# Issue 5 on the H100: targets ({out.name})", "",
             f"Device: {env.get('device')}; runs: {', '.join(env.get('merged_from') or [])}. "
             "Throughput is compute-only (device-resident inputs), end to end beside it. Full table: report.md.", "",
             "| figure | measured | bar | verdict |", "|---|---|---|---|"]
    for what, measured, bar, ok in checks:
        lines.append(f"| {what} | {measured} | {bar} | {'-' if ok is None else ('met' if ok else '**missed**')} |")
    text = "\n".join(lines) + "\n"
    (out / "targets.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
