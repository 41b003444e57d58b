#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE (H100), one phase per device call, from the repository root:
#
#   bash benchmarks/h100/device.sh PHASE
#
# PHASE: torch-a | torch-b | streams | stage | ort   (RUNBOOK.md says which call carries what)
#
# Every phase first collects the .devstage part it was carried with (benchmarks/h100/stage.sh),
# and installs the wheel bundle into /tmp/site once all parts are there. Results go under $OUT:
# one <run-id>.tgz per bench run (results.json/csv, report.md, plots) plus its report.md and a
# log, so a call's files come back even when it is cut off.
#
# QUICK=1 shrinks every sweep to ResNet-18, batch 1 and 0.1 s per row: a dry run of the
# script's logic on any machine (CPU included: GPU backends then give "unavailable" rows).
set -uo pipefail
phase=${1:?usage: device.sh torch-a|torch-b|streams|stage|ort}
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
out=${OUT:-/tmp/device-out}
mkdir -p "$out"
site=${SITE:-/tmp/site}
stage=${STAGE:-/tmp/devstage}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg COLUMNS=${COLUMNS:-160}
export PYTHONPATH="$top:$site${PYTHONPATH:+:$PYTHONPATH}"
date_tag=${DATE_TAG:-$(date -u +%Y-%m-%d)}
log="$out/$phase.log"

collect() {
  [ -d .devstage ] || return 0
  mkdir -p "$stage"
  for d in .devstage/*/; do
    for p in "$d"part.*; do
      [ -e "$p" ] && [ ! -e "$stage/${p##*/}" ] && cp "$p" "$stage"/ && echo "collected $p"
    done
    cp -f "$d"BUNDLE "$stage"/BUNDLE 2>/dev/null
  done
  true
}

install_bundle() {
  [ -f "$stage/BUNDLE" ] || { echo "no wheel bundle staged"; return 0; }
  [ -f "$site/.bundle-installed" ] && { echo "wheel bundle already installed in $site"; return 0; }
  read -r sha n < "$stage/BUNDLE"
  parts=("$stage"/part.*)
  have=0
  [ -e "${parts[0]}" ] && have=${#parts[@]}
  if [ "$have" -lt "$n" ]; then echo "wheel bundle: $have of $n parts here"; return 0; fi
  cat "$stage"/part.* > "$stage/bundle.tar"
  echo "$sha  $stage/bundle.tar" | sha256sum -c - || { echo "bundle checksum mismatch"; return 1; }
  mkdir -p "$stage/wheels" "$site"
  tar -xf "$stage/bundle.tar" -C "$stage/wheels" && rm -f "$stage/bundle.tar"
  wheels=("$stage"/wheels/*.whl)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "${wheels[@]}" && touch "$site/.bundle-installed" && echo "installed ${#wheels[@]} wheels into $site"
}

environment() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
  python3 - <<'PY'
import importlib
for m in ("torch", "torchvision", "onnx", "onnxruntime", "modelopt", "numpy"):
    try:
        mod = importlib.import_module(m)
        extra = ""
        if m == "onnxruntime":
            extra = f" providers={mod.get_available_providers()} from {mod.__file__}"
        if m == "torch":
            extra = f" cuda={mod.version.cuda} gpu={mod.cuda.is_available() and mod.cuda.get_device_name()}"
        print(f"{m} {getattr(mod, '__version__', '?')}{extra}")
    except Exception as e:  # noqa: BLE001
        print(f"{m}: {type(e).__name__}: {e}")
PY
}

bench() {  # bench RUN_ID ARGS...: one resnet-deploy bench run, packed into $out/RUN_ID.tgz
  local id=$1
  shift
  local args=("$@")
  if [ "${QUICK:-0}" = 1 ]; then
    args=("${args[@]/#--depth=*/--depth=18}")
    args=("${args[@]/#--batch=*/--batch=1}")
    args+=(--min-time 0.1 --min-iters 3)
  else
    args+=(--min-time "${MIN_TIME:-1}")
  fi
  echo "+ resnet-deploy bench ${args[*]} --run-id $id"
  python3 -m resnet_deploy bench "${args[@]}" --artifacts /tmp/artifacts --out /tmp/bench --run-id "$id"
  local rc=$?
  echo "bench $id exit $rc"
  if [ -d "/tmp/bench/$id" ]; then
    tar -czf "$out/$id.tgz" -C /tmp/bench "$id"
    cp "/tmp/bench/$id/report.md" "$out/$id.report.md" 2>/dev/null
  fi
  return 0
}

run_phase() {
  collect
  install_bundle || return 1
  environment

  case "$phase" in
    torch-a)  # GPU tests that need no onnxruntime-gpu; torch eager everywhere; torch.compile FP16 at 18 and 50
      python3 -m pytest -q -rs -p no:cacheprovider tests/gpu/test_gpu.py -k "torch and not bench" || true
      bench "h100-$date_tag-torch" --engine=torch --depth=18,50,152 --precision=fp32,fp16 --batch=1,32,256
      bench "h100-$date_tag-compile-a" --engine=torch-compile --depth=18,50 --precision=fp16 --batch=1,256
      ;;
    torch-b)  # torch.compile FP16 at 152 (the anchors' grid: batch 1 and 256), and FP32 at 50 beside it
      bench "h100-$date_tag-compile-b" --engine=torch-compile --depth=152 --precision=fp16 --batch=1,256
      bench "h100-$date_tag-compile-c" --engine=torch-compile --depth=50 --precision=fp32 --batch=1,256
      ;;
    stage)    # only carries a part of the wheel bundle
      ;;
    streams)  # carries a part, and uses the call: torch eager with several CUDA streams, FP16, 50 and 152
      bench "h100-$date_tag-torch-streams" --engine=torch --depth=50,152 --precision=fp16 --batch=32,256 --streams=2 --no-bare
      ;;
    ort)      # needs the bundle: every GPU test, ONNX Runtime CUDA at every depth, torchvision on the GPU
      python3 -m pytest -q -rs -p no:cacheprovider tests/gpu/test_gpu.py || true
      bench "h100-$date_tag-ort" --engine=ort-cuda --depth=18,50,152 --precision=fp32,fp16 --batch=1,32,256
      bench "h100-$date_tag-ort-streams" --engine=ort-cuda --depth=50 --precision=fp16 --batch=32,256 --streams=2 --no-bare
      if python3 -c "import torchvision" 2>/dev/null; then
        python3 benchmarks/torchvision-equivalence/check.py --device cuda --csv "$out/torchvision-h100-$date_tag.csv" || true
      fi
      ;;
    *)
      echo "unknown phase $phase (torch-a, torch-b, streams, stage, ort)"
      return 2
      ;;
  esac
  ls -la "$out"
}

run_phase 2>&1 | tee -a "$log"
exit "${PIPESTATUS[0]}"
