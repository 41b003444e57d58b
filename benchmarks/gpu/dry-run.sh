#!/usr/bin/env bash
# Dry run of the GPU plan HERE (any machine, no GPU needed):
#   1. the plan as a GPU machine would run it (run.sh --plan): phases, budgets, commands, and what this
#      machine would skip and why;
#   2. every phase with QUICK=1 (ResNet-18, batch 1, --min-time 0, FP32 torch, ONNX Runtime CPU for ort-cuda):
#      the env phase checks the staged wheels against staged.sha256 if STAGE holds them (stage.sh), and unpacks
#      them only where this Python is the one they were staged for; each phase is packed as it ends;
#   3. summarize.py on the packed phases.
#
#   bash benchmarks/gpu/dry-run.sh          # a few minutes on a 2-core machine
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top" || exit 1
work=${WORK:-/tmp/gpu-dry}
py=${PYTHON:-python3}
rm -rf "$work"
start=$(date +%s)
rc=0
echo "## 1. the plan on a GPU machine"
WORK=$work bash "$here/run.sh" --plan
echo
echo "## 2. every phase, QUICK=1"
QUICK=1 WORK=$work PYTHON=$py bash "$here/run.sh" || rc=1
for phase in env torch streams warm artifacts ort; do
  [ -f "$work/results/"*"-$phase.tar.gz" ] || { echo "phase $phase: not packed"; rc=1; }
done
echo
echo "## 3. summarize.py"
"$py" "$here/summarize.py" "$work"/results/*.tar.gz --anchors "${ANCHORS:-$top/../shared/anchors/h100-2026-11-23.csv}" \
  --out "$work/summary/gpu-dry" --compile-cache "$work/phases/torch/torch-compile-cache.bin.gz" \
  --cache-dest "$work/summary/compile-cache/torch-compile-cache.bin.gz" > "$work.summary.log" 2>&1 || rc=1
cat "$work.summary.log"
echo "dry run: $(( $(date +%s) - start )) s wall, exit $rc; phase logs $work/phases/*/*.log, summary $work/summary/gpu-dry"
exit $rc
