#!/usr/bin/env bash
# MLPerf LoadGen scenarios through `resnet-deploy bench --scenario` on the trained CIFAR ResNet-20
# (FP32 ONNX, ONNX Runtime, one intra-op thread so that LoadGen's own threads keep a core), with the
# timing loop's figures for the same model beside them. Writes benchmarks/loadgen/results/<run>/ and
# the merged report benchmarks/loadgen/results/all/. Needs: pip install mlcommons-loadgen
# Usage: bash benchmarks/loadgen/run.sh   (about 3 minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
FINAL=benchmarks/loadgen/results
OUT=$(mktemp -d)/results  # written aside and moved in at the end: every run records the revision as committed
ART=${ARTIFACTS:-engines}
common=(-e ort -d 20 -p fp32 --threads 1 --artifacts "$ART" --out "$OUT")
resnet-deploy bench "${common[@]}" -b 1,8 --run-id timing-loop
resnet-deploy bench "${common[@]}" --scenario single-stream --duration 10 --run-id single-stream
resnet-deploy bench "${common[@]}" --scenario multi-stream --samples-per-query 8 --duration 10 --run-id multi-stream
resnet-deploy bench "${common[@]}" --scenario offline -b 8 --duration 10 --run-id offline
resnet-deploy bench "${common[@]}" --scenario server --target-qps 200 --latency-bound-ms 15 --duration 10 \
  --run-id server-200qps
# the same server run with ONNX Runtime's default threads (both cores), beside LoadGen's own threads
resnet-deploy bench -e ort -d 20 -p fp32 --artifacts "$ART" --out "$OUT" --scenario server --target-qps 200 \
  --latency-bound-ms 15 --duration 10 --run-id server-200qps-default-threads
resnet-deploy bench "${common[@]}" --scenario server --find-peak --latency-bound-ms 15 --duration 5 \
  --min-queries 500 --peak-time 90 --run-id server-find-peak
resnet-deploy bench-merge "$OUT"/timing-loop "$OUT"/single-stream "$OUT"/multi-stream "$OUT"/offline \
  "$OUT"/server-200qps "$OUT"/server-200qps-default-threads "$OUT"/server-find-peak -o "$OUT"/all --run-id loadgen-resnet20
# keep LoadGen's summaries; the detail/trace/accuracy logs are large or empty here
find "$OUT" -name 'mlperf_log_*' ! -name 'mlperf_log_summary.txt' -delete
rm -rf "$FINAL" && cp -r "$OUT" "$FINAL"
