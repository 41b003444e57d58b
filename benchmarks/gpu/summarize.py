"""Run after the GPU plan (benchmarks/gpu/run.sh): merge its bench runs and check the issue's GPU figures.

    python benchmarks/gpu/summarize.py RESULTS/gpu-*.tar.gz \\
        --anchors ../shared/anchors/h100-2026-11-23.csv --out benchmarks/gpu-<device>-<date> \\
        [--compile-cache WORK/phases/torch/torch-compile-cache.bin.gz]

The inputs are the plan's packed phases (each holds its bench runs), bench .tgz files or result
folders; a phase cut off by its budget contributes what it finished. Writes into --out:
  - results.json / results.csv / report.md / plots: the single-stream runs merged
    (what `resnet-deploy bench-merge` does; a row measured twice keeps the later run's);
  - streams/: the `--streams 2` runs merged (their rows repeat single-stream keys, so they are
    kept apart from the main merge); compile-warm/: the torch.compile run made with the torch
    phase's cache artifacts loaded;
  - targets.md: each figure against its bar, met or missed, plus torch.compile's compile
    figures (compile_graphs / compile_s, where the rows have them).
--compile-cache copies the torch phase's cache artifacts to
benchmarks/gpu/compile-cache/torch-compile-cache.bin.gz, which run.sh's torch phase loads in a later run.

GPU throughput is the compute-only figure (inputs already on the device, as the anchors'
standalone loop timed it); the end-to-end figure (host copies included) stands beside it.
The bars are the H100 anchors' figures, whatever GPU ran the plan: a bar missed is missed plainly.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from resnet_deploy.bench import merge_results, throughput  # noqa: E402
from resnet_deploy.errors import UserError  # noqa: E402

sys.path.insert(0, str(HERE))
from compile_cache import read_packed  # noqa: E402

OVERHEAD_BAR_PCT = 3.0
# The issue's bars (H100 anchors, ../shared/anchors/h100-2026-11-23.csv), ResNet FP16, images/s compute-only
BAR_ORT_R50_B256 = 10_500
BAR_COMPILE_R50_B256 = 25_200
BAR_COMPILE_R50_B1_MS = 0.47
BAR_BEST_B256 = {18: 69_800, 50: 25_200, 152: 11_800}
CACHE_DEST = HERE / "compile-cache" / "torch-compile-cache.bin.gz"


def unpack(sources: list[str], tmp: Path) -> list[Path]:
    """Result folders (each holding results.json) from .tgz files, folders or results.json paths."""
    runs: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.name.endswith((".tgz", ".tar.gz")):
            dest = tmp / p.name.split(".")[0]
            with tarfile.open(p) as t:
                t.extractall(dest, filter="data")
            runs += sorted(d.parent for d in dest.rglob("results.json"))
        elif p.is_dir():
            runs += sorted(d.parent for d in p.rglob("results.json")) or [p]
        else:
            runs.append(p.parent if p.name == "results.json" else p)
    return runs


def kind(run: Path) -> str:
    """main (single-stream sweep), streams (--streams > 1) or warm (torch.compile with a loaded cache)."""
    data = json.loads((run / "results.json").read_text())
    if ((data.get("config") or {}).get("streams") or 1) > 1:
        return "streams"
    if str(data.get("run_id", run.name)).endswith("-compile-warm"):
        return "warm"
    return "main"


def anchors(path: Path) -> dict[tuple[str, int, int], tuple[float, float, str]]:
    """(family, depth, batch) -> (images/s, ms per batch, anchor backend), FP16; family: best | torch-compile | ort-cuda."""
    out: dict[tuple[str, int, int], tuple[float, float, str]] = {}
    with open(path) as f:
        for r in csv.DictReader(line for line in f if not line.startswith("#")):
            if r["precision"] != "fp16":
                continue
            d, b, ips, ms = int(r["depth"]), int(r["batch"]), float(r["images_per_s"]), float(r["ms_per_batch"])
            fams = ["best"] + [f for f in ("torch-compile", "ort-cuda") if r["backend"].startswith(f)]
            for fam in fams:
                if ips > out.get((fam, d, b), (0.0, 0.0, ""))[0]:
                    out[fam, d, b] = (ips, ms, r["backend"])
    return out


def _k(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


Check = tuple[str, str, str, "bool | None"]  # (what, measured, bar, met: None where not measured)


class Figures:
    """The merged single-stream rows, looked up by backend, depth, batch and precision."""

    def __init__(self, rows: list[dict], anchor: dict[tuple[str, int, int], tuple[float, float, str]]):
        self.rows = [r for r in rows if r["status"] in ("ok", "failed")]
        self.anchor = anchor

    def get(self, backend: str, depth: int, batch: int, precision: str = "fp16", pool: list | None = None) -> dict | None:
        return next((r for r in (self.rows if pool is None else pool) if r["backend"] == backend
                     and r["arch"] == f"resnet{depth}" and r["precision"] == precision and r["batch"] == batch), None)

    def anchor_note(self, fam: str, depth: int, batch: int, ms: bool = False) -> str:
        a = self.anchor.get((fam, depth, batch))
        if a is None:
            return ""
        return f" (H100 anchor {a[2]}: " + (f"{a[1]:.3f} ms)" if ms else f"{a[0]:,.0f})")


def at_least(what: str, row: dict | None, bar: float, note: str = "") -> Check:
    v = None if row is None else throughput(row)
    e2e = (row or {}).get("latency_throughput_ips")
    shown = "not measured" if v is None else f"{v:,.0f} img/s" + (f" (end to end {e2e:,.0f})" if e2e and e2e != v else "")
    if row is not None and row["status"] != "ok":
        shown += f", parity {row['status']}"
    return what, shown, f">= {bar:,.0f}{note}", None if v is None else v >= bar and row["status"] == "ok"


def throughput_checks(f: Figures) -> list[Check]:
    checks = [
        at_least("ResNet-50 FP16 b256, ONNX Runtime CUDA (I/O binding, CUDA graph)", f.get("ort-cuda", 50, 256),
                 BAR_ORT_R50_B256, f.anchor_note("ort-cuda", 50, 256)),
        at_least("ResNet-50 FP16 b256, torch.compile", f.get("torch-compile", 50, 256), BAR_COMPILE_R50_B256,
                 f.anchor_note("torch-compile", 50, 256)),
    ]
    b1 = f.get("torch-compile", 50, 1)
    v = b1 and (b1.get("compute_p50_ms") or b1.get("latency_p50_ms"))
    checks.append(("ResNet-50 FP16 b1, torch.compile latency p50",
                   "not measured" if not v else f"{v:.3f} ms (end to end {b1['latency_p50_ms']:.3f})",
                   f"<= {BAR_COMPILE_R50_B1_MS} ms{f.anchor_note('torch-compile', 50, 1, ms=True)}",
                   None if not v else v <= BAR_COMPILE_R50_B1_MS and b1["status"] == "ok"))
    for depth, bar in sorted(BAR_BEST_B256.items()):
        cands = [r for r in f.rows if r["arch"] == f"resnet{depth}" and r["precision"] == "fp16" and r["batch"] == 256
                 and r["status"] == "ok"]
        top = max(cands, key=lambda r: throughput(r) or 0, default=None)
        checks.append(at_least(f"ResNet-{depth} FP16 b256, best backend ({top['backend'] if top else '-'})", top, bar,
                               f.anchor_note("best", depth, 256)))
    return checks


def harness_checks(rows: list[dict]) -> list[Check]:
    over = [r for r in rows if r.get("harness_overhead_pct") is not None]
    worst = max(over, key=lambda r: abs(r["harness_overhead_pct"]), default=None)
    n_out = sum(abs(r["harness_overhead_pct"]) > OVERHEAD_BAR_PCT for r in over)
    failed = [r for r in rows if r["status"] == "failed"]
    return [(f"harness vs bare loop, {len(over)} rows",
             "not measured" if worst is None else f"{n_out} rows beyond; worst {worst['harness_overhead_pct']:+.1f}% "
             f"({worst['arch']} {worst['precision']} {worst['backend']} b{worst['batch']})",
             f"within ±{OVERHEAD_BAR_PCT:.0f}%", None if worst is None else n_out == 0),
            (f"parity of every measured row ({len(rows)})",
             f"{len(failed)} failed" + (": " + ", ".join(f"{r['arch']} {r['backend']} b{r['batch']}" for r in failed[:4])
                                        if failed else ""),
             "0 failed", None if not rows else not failed)]


def targets_lines(name: str, env: dict, checks: list[Check]) -> list[str]:
    met = sum(ok is True for *_, ok in checks)
    missed = sum(ok is False for *_, ok in checks)
    lines = [f"# GPU targets ({name})", "",
             f"Device: {env.get('device')}; runs: {', '.join(env.get('merged_from') or [])}. "
             "Throughput is compute-only (device-resident inputs), end to end beside it; bars are the issue's "
             "H100 figures (a Hopper H200 has the same compute and 1.4x the memory bandwidth). Full table: report.md.",
             "", f"**{met} met, {missed} missed, {len(checks) - met - missed} not measured.**", "",
             "| figure | measured | bar | verdict |", "|---|---|---|---|"]
    for what, measured, bar, ok in checks:
        lines.append(f"| {what} | {measured} | {bar} | {'not measured' if ok is None else ('met' if ok else '**missed**')} |")
    return lines


def streams_lines(side: dict[str, object]) -> list[str]:
    """Several streams: end to end (host copies included), beside the single-stream figure of the same run."""
    srows = [r for r in getattr(side.get("streams"), "rows", []) if r.get("streams_throughput_ips")]
    if not srows:
        if "streams" not in side:
            return []
        notes = sorted({str(r.get("streams_note") or r.get("reason")) for r in side["streams"].rows})
        return ["", "## Several streams", "", "No streams figure: " + "; ".join(notes[:3])]
    lines = ["", "## Several streams (`--streams`, end to end, host copies included)", "",
             "| depth | precision | backend | batch | streams | img/s | one stream, end to end | gain | parity |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in srows:
        gain = r.get("streams_gain_pct")
        lines.append(f"| {r['arch']} | {r['precision']} | {r['backend']} | {r['batch']} | {r['streams']} | "
                     f"{_k(r['streams_throughput_ips'])} | {_k(r.get('latency_throughput_ips'))} | "
                     f"{'-' if gain is None else f'{gain:+.0f}%'} | {r['status']} |")
    return lines


def _cell(v, fmt: str = "") -> str:
    return "-" if v is None else format(v, fmt)


def compile_lines(f: Figures, all_rows: list[dict], side: dict[str, object]) -> list[str]:
    """torch.compile: what compiling cost (compile_graphs / compile_s, where the rows carry them)."""
    crows = [r for r in all_rows if r["backend"] == "torch-compile" and r.get("batch")]
    wrows = [r for r in getattr(side.get("warm"), "rows", []) if r.get("batch")]
    if not crows:
        return []
    lines = ["", "## torch.compile: compiling", ""]
    if not any(r.get("compile_graphs") is not None or r.get("compile_s") is not None for r in crows + wrows):
        lines += ["These rows carry no compile_graphs / compile_s (a bench before those fields); first call s only.", ""]
    lines += ["| depth | precision | batch | graphs | compile s | first call s | with the torch phase's cache: graphs / compile s |",
              "|---|---|---|---|---|---|---|"]
    for r in crows:
        w = f.get("torch-compile", int(r["arch"].removeprefix("resnet")), r["batch"], r["precision"], wrows)
        warm = "-" if w is None else f"{_cell(w.get('compile_graphs'))} / {_cell(w.get('compile_s'), '.1f')}"
        lines.append(f"| {r['arch']} | {r['precision']} | {r['batch']} | {_cell(r.get('compile_graphs'))} | "
                     f"{_cell(r.get('compile_s'), '.1f')} | {_cell(r.get('first_call_s'), '.1f')} | {warm} |")
    return lines


def cache_lines(src: Path, dest: Path) -> list[str]:
    """Copy the torch phase's compile cache to ``dest`` (which run.sh loads next time)."""
    packed = read_packed(src)
    if packed is None:
        return ["", f"torch.compile cache artifacts: {src} not found (not copied)."]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(packed)
    mib = len(packed) / 2**20
    shown = dest.resolve().relative_to(ROOT) if dest.resolve().is_relative_to(ROOT) else dest
    return ["", f"torch.compile cache artifacts: {shown} ({mib:.1f} MiB), loaded by benchmarks/gpu/run.sh's torch phase "
            "in a later run" + (" (over 8 MiB: commit it only if the faster compile is worth the repository's size)"
                               if mib > 8 else "") + "."]


def merge_groups(sources: list[str], out: Path):
    """Merge the single-stream runs into ``out``, the streams and cache-loaded runs beside it; (main, side)."""
    side: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        groups: dict[str, list[Path]] = {"main": [], "streams": [], "warm": []}
        for run in unpack(sources, Path(tmp)):
            groups[kind(run)].append(run)
        if not groups["main"]:
            raise UserError("no single-stream run among the inputs")
        merged = merge_results(groups["main"], out, run_id=out.name)
        for name, sub in (("streams", "streams"), ("warm", "compile-warm")):
            if groups[name]:
                side[name] = merge_results(groups[name], out / sub, run_id=f"{out.name}-{sub}")
    return merged, side


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="the plan's packed phases (.tar.gz), bench .tgz files, or result folders")
    ap.add_argument("--anchors", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--compile-cache", help="the torch phase's torch-compile-cache.bin.gz: copied to --cache-dest")
    ap.add_argument("--cache-dest", default=str(CACHE_DEST), help="where run.sh looks for it (default: %(default)s)")
    args = ap.parse_args()
    out = Path(args.out)
    try:
        anchor = anchors(Path(args.anchors))
        merged, side = merge_groups(args.runs, out)
    except (UserError, OSError, tarfile.TarError, KeyError, ValueError) as e:
        print(f"summarize.py: error: {e}", file=sys.stderr)
        return 2
    figures = Figures(merged.rows, anchor)
    lines = targets_lines(out.name, merged.environment, throughput_checks(figures) + harness_checks(figures.rows))
    lines += streams_lines(side) + compile_lines(figures, merged.rows, side)
    if args.compile_cache:
        lines += cache_lines(Path(args.compile_cache), Path(args.cache_dest))
    text = "\n".join(lines) + "\n"
    (out / "targets.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
