#!/usr/bin/env bash
# The served model under load, MLPerf's way and Triton's way, beside the same model in-process: the seeded CIFAR
# ResNet-20 (FP32 ONNX) served by a local Triton 2.51 (`resnet-deploy serve`, the tests' python stand-in for the ONNX
# Runtime backend, one instance, dynamic batching up to 8), then
#   1. `bench --engine triton --scenario server --find-peak`: LoadGen's server scenario through the server, the
#      highest QPS whose p99 stays within 15 ms, with NVIDIA perf_analyzer's concurrency sweep of the same model
#      (`--perf-analyzer`) in the same report;
#   2. the same LoadGen search in-process (ONNX Runtime, one intra-op thread: LoadGen's threads keep a core).
# Needs .ci/run's server venv (.venv-triton: tritonserver, perf_analyzer) and mlcommons-loadgen.
# Usage: bash benchmarks/triton-loadgen/run.sh   (about 5 minutes; writes benchmarks/triton-loadgen/results/)
set -euo pipefail
cd "$(dirname "$0")/../.."
FINAL=benchmarks/triton-loadgen/results
WORK=$(mktemp -d)
OUT=$WORK/results   # written aside and moved in at the end
ART=$WORK/engines
SERVER=${RESNET_DEPLOY_TRITONSERVER:-$PWD/.venv-triton}
HTTP=${HTTP_PORT:-18000}
GRPC=${GRPC_PORT:-18001}
resnet-deploy export --depth 20 --out "$ART" >/dev/null
resnet-deploy package --depth 20 --target triton --onnx "$ART/resnet20/resnet20.fp32.onnx" --name resnet20_seeded \
  --no-ensemble --max-batch 8 --instance-kind cpu --out "$WORK/repository" >/dev/null
resnet-deploy serve "$WORK/repository" --server "$SERVER" --http-port "$HTTP" --grpc-port "$GRPC" \
  --backend onnxruntime=tests/serving/standin/onnxruntime >"$WORK/serve.log" 2>&1 &
SERVE=$!
trap 'kill -TERM $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$HTTP/v2/health/ready" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$HTTP/v2/health/ready" >/dev/null || { cat "$WORK/serve.log"; exit 1; }
peak=(--scenario server --find-peak --latency-bound-ms 15 --duration 5 --min-queries 500 --peak-time 90)
resnet-deploy bench -e triton --url "grpc://127.0.0.1:$GRPC/v2/models/resnet20_seeded" -d 20 -p fp32 -b 1 \
  --artifacts "$ART" --out "$OUT" "${peak[@]}" --perf-analyzer --perf-analyzer-path "$SERVER" --pa-concurrency 1:4 \
  --run-id triton-find-peak
resnet-deploy bench -e ort --threads 1 -d 20 -p fp32 -b 1 --artifacts "$ART" --out "$OUT" "${peak[@]}" \
  --run-id in-process-find-peak
resnet-deploy bench-merge "$OUT"/triton-find-peak "$OUT"/in-process-find-peak -o "$OUT"/all --run-id triton-loadgen
find "$OUT" -name 'mlperf_log_*' ! -name 'mlperf_log_summary.txt' -delete
rm -rf "$FINAL" && cp -r "$OUT" "$FINAL"
echo "wrote $FINAL/all/report.md"
