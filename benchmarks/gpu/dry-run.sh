#!/usr/bin/env bash
# Dry run of the whole device plan HERE (any machine, no GPU): the four phases of RUNBOOK.md in
# order with QUICK=1 (ResNet-18, batch 1, --min-time 0, FP32 torch, ONNX Runtime CPU for ort-cuda),
# each with its own fake $OUT under /tmp/gpu-dry/out/<phase> and only its own .devstage part,
# then summarize.py on what came back. Needs benchmarks/gpu/stage.sh run first (for the parts).
#
#   bash benchmarks/gpu/dry-run.sh          # ~3 min on the 2-core machine
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top" || exit 1
root=${GPU_ROOT:-/tmp/gpu-dry}
py=${PYTHON:-python3}
rm -rf "$root"
start=$(date +%s)
rc=0
for phase in torch streams warm ort; do
  t0=$(date +%s)
  QUICK=1 GPU_ROOT=$root PYTHON=$py OUT=$root/out/$phase bash "$here/device.sh" "$phase" > "$root.$phase.log" 2>&1 || rc=1
  n=$(find "$root/out/$phase" -type f | wc -l)
  echo "phase $phase: $(( $(date +%s) - t0 )) s, $n files in \$OUT: $(cd "$root/out/$phase" && ls | tr '\n' ' ')"
  [ "$n" -le 8 ] || { echo "  more than 8 files: the device would not return them all"; rc=1; }
  grep -E "^== .*(exit [1-9]|skipped)|MISMATCH|Traceback|error:" "$root/out/$phase/$phase.log" | sed 's/^/  /' | head -20
done
sleep 1
echo "background job: $(cat "$root/artifacts.done" 2>/dev/null || echo 'not done')"
"$py" "$here/summarize.py" "$root"/out/*/gpu-*.tgz --anchors "${ANCHORS:-$top/../shared/anchors/h100-2026-11-23.csv}" \
  --out "$root/summary/gpu-dry" --compile-cache "$root/out/torch/torch-compile-cache.bin.gz" \
  --cache-dest "$root/summary/compile-cache/torch-compile-cache.bin.gz" > "$root.summary.log" 2>&1 || rc=1
cat "$root.summary.log"
echo "dry run: $(( $(date +%s) - start )) s wall, exit $rc; logs $root.*.log, summary $root/summary/gpu-dry"
exit $rc
