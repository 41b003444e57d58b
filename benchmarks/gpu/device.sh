#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE, one phase per device call, from the repository root (RUNBOOK.md):
#
#   bash benchmarks/gpu/device.sh torch     # call 1, carries .devstage/1
#   bash benchmarks/gpu/device.sh streams   # call 2, carries .devstage/2
#   bash benchmarks/gpu/device.sh warm      # call 3, carries .devstage/3
#   bash benchmarks/gpu/device.sh ort       # call 4, carries .devstage/4
#
# Every phase first checks the staged part it was carried with against benchmarks/gpu/staged.sha256
# (benchmarks/gpu/stage.sh) and unpacks what is complete into folders under $GPU_ROOT that go on
# PYTHONPATH after the working tree (the project runs from it: PYTHONPATH=., nothing is pip-installed):
#   site-ort    onnxruntime-gpu (ahead of the device's CPU-only onnxruntime), once all parts are in
#   site-mo     ModelOpt's FP16 path (part 1)
#   site-extra  pydantic & co., only if the device cannot import pydantic
# The first phase that has site-mo starts, in the background (setsid; it outlives the call, on 4 of
# the 16 cores, GPU hidden), the FP32 export and FP16 AutoCast of ResNet-18/50/152 into
# $GPU_ROOT/artifacts, which the ort phase uses. Each step runs under `timeout` so that the phase
# ends within BUDGET_S seconds (default per phase below; keep the device call's timeout_s above it);
# each bench run is packed into $OUT/<run-id>.tgz as soon as it ends. At most 8 files per call.
#
# QUICK=1: a dry run of all of it on any machine (the CPU one): ResNet-18, batch 1, --min-time 0,
# FP32 for torch (no FP16 on a CPU), ONNX Runtime CPU for ort-cuda, GPU_ROOT=/tmp/gpu-dry and a fake
# $OUT under it; each phase collects only its own part; staged cp312 trees go on PYTHONPATH only
# where python3 is 3.12.
set -uo pipefail
phase=${1:?usage: device.sh torch|streams|warm|ort}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top" || exit 1
rel=benchmarks/gpu
quick=${QUICK:-0}
py=${PYTHON:-python3}
if [ "$quick" = 1 ]; then root=${GPU_ROOT:-/tmp/gpu-dry}; else root=${GPU_ROOT:-/tmp/gpu}; fi
out=${OUT:-$root/out/$phase}
mkdir -p "$out" "$root"
case "$phase" in
  torch) budget=${BUDGET_S:-390}; part=1 ;;
  streams) budget=${BUDGET_S:-100}; part=2 ;;
  warm) budget=${BUDGET_S:-120}; part=3 ;;
  ort) budget=${BUDGET_S:-240}; part=4 ;;
  artifacts) budget=${BUDGET_S:-1200}; part=0 ;;  # internal: the background job
  *) echo "unknown phase $phase (torch, streams, warm, ort)"; exit 2 ;;
esac
[ "$quick" = 1 ] && budget=${BUDGET_S:-600}  # the 2-core CPU is slower than the device at everything
reserve=15  # seconds kept for packing after the last step
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg COLUMNS=${COLUMNS:-150} TERM=dumb
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$root/inductor} TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$root/triton}
art=$root/artifacts
stage=$root/stage
log=$out/$phase.log

if [ "$quick" = 1 ]; then
  depths=18; batches=1; tprec=fp32; oprec=fp16; gpu_ort=ort; sdepths=18; sbatch=1; wdepth=18
  timing=(--min-time 0 --min-iters 3 --warmup 1)
else
  depths=50,18,152; batches=256,1; tprec=fp16; oprec=fp16; gpu_ort=ort-cuda; sdepths=50,152; sbatch=256; wdepth=50
  timing=(--min-time "${MIN_TIME:-0.5}")
fi

left() { echo $((budget - SECONDS)); }

step() {  # step NAME NEED_S CMD...: run CMD under a deadline that ends the phase in time; skip if NEED_S is not left
  local name=$1 need=$2
  shift 2
  local t=$(($(left) - reserve))
  if [ "$t" -lt "$need" ]; then
    echo "== $name: skipped (${t}s left of the phase's ${budget}s, needs ~${need}s)"
    return 0
  fi
  echo "== $name (deadline ${t}s, at ${SECONDS}s)"
  timeout -s INT -k 20 "$t" "$@"
  local rc=$?
  echo "== $name: exit $rc at ${SECONDS}s"
  return 0
}

ids() {  # one device tag and date for every call of this session: run ids gpu-<device>-<date>-<phase>
  if [ ! -f "$root/id" ]; then
    local dev
    dev=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z' 'a-z' \
          | grep -oE '[a-z]+[0-9]+[a-z0-9]*' | head -1)
    echo "${dev:-cpu} $(date -u +%Y-%m-%d)" > "$root/id"
  fi
  read -r dev_tag date_tag < "$root/id"
  prefix="gpu-$dev_tag-$date_tag"
}

manifest() {  # the checksums: the tracked copy that travels with the tree, else a part's own
  if [ -f "$rel/staged.sha256" ]; then echo "$rel/staged.sha256"; else ls .devstage/*/MANIFEST 2>/dev/null | head -1; fi
}

collect() {  # copy the carried part(s) to $stage, each file checked against its sha256
  local m
  m=$(manifest)
  [ -n "$m" ] || { echo "stage: no manifest (benchmarks/gpu/stage.sh not run?): nothing staged"; return 0; }
  mkdir -p "$stage"
  local dirs=(.devstage/*/)
  if [ "$quick" = 1 ] && [ "$part" -gt 0 ]; then dirs=(".devstage/$part/"); fi
  [ -d "${dirs[0]}" ] || { echo "stage: no .devstage part here (carry=[\".devstage/$part\"])"; return 0; }
  [ "$part" -gt 0 ] && [ ! -d ".devstage/$part" ] && echo "stage: warning: this phase should carry .devstage/$part"
  local kind k name sha size got
  while read -r kind k name sha size; do
    [ "$kind" = part ] || continue
    [ -f "$stage/$name.ok" ] && continue
    for d in "${dirs[@]}"; do
      [ -f "$d$name" ] || continue
      got=$(sha256sum "$d$name" | cut -d' ' -f1)
      if [ "$got" = "$sha" ]; then
        cp "$d$name" "$stage/$name" && touch "$stage/$name.ok" && echo "stage: part $k $name ok (sha256 ${sha:0:12}..)"
      else
        echo "stage: part $k $name: sha256 MISMATCH (got ${got:0:12}.., want ${sha:0:12}..): not used"
      fi
    done
  done < "$m"
  local have want
  have=$(ls "$stage"/*.ok 2>/dev/null | wc -l)
  want=$(grep -c '^part ' "$m")
  echo "stage: $have of $want staged files here"
}

untar() {  # untar FILE.tar.xz DIR (python: no xz binary needed)
  "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$1" "$2"
}

unpack() {  # unpack what is complete: site-mo, site-extra, and site-ort once every part is in
  local m
  m=$(manifest)
  [ -n "$m" ] || return 0
  local t
  for t in mo extra; do
    if [ -f "$stage/site-$t.tar.xz.ok" ] && [ ! -f "$root/site-$t/.done" ]; then
      rm -rf "$root/site-$t" && mkdir -p "$root/site-$t" && untar "$stage/site-$t.tar.xz" "$root/site-$t" \
        && touch "$root/site-$t/.done" && echo "stage: unpacked site-$t"
    fi
  done
  [ -f "$root/site-ort/.done" ] && return 0
  local chunks=() missing=0 name
  while read -r name; do
    chunks+=("$stage/$name")
    [ -f "$stage/$name.ok" ] || missing=$((missing + 1))
  done < <(awk '$1 == "part" && $3 ~ /^providers_cuda/ {print $3}' "$m")
  if [ "$missing" -gt 0 ] || [ ! -f "$stage/ort-base.tar.xz.ok" ]; then
    echo "stage: onnxruntime-gpu not complete yet ($missing CUDA-provider chunks to come)"
    return 0
  fi
  local jsha lsha lib
  jsha=$(awk '$1 == "joined" {print $3}' "$m")
  lsha=$(awk '$1 == "lib" {print $3}' "$m")
  lib=$(awk '$1 == "lib" {print $2}' "$m")
  cat "${chunks[@]}" > "$stage/providers_cuda.so.xz"
  [ "$(sha256sum "$stage/providers_cuda.so.xz" | cut -d' ' -f1)" = "$jsha" ] \
    || { echo "stage: joined CUDA provider: sha256 MISMATCH"; return 1; }
  rm -rf "$root/site-ort" && mkdir -p "$root/site-ort" && untar "$stage/ort-base.tar.xz" "$root/site-ort" || return 1
  "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"), 1 << 22)' \
    "$stage/providers_cuda.so.xz" "$root/site-ort/$lib" || return 1
  [ "$(sha256sum "$root/site-ort/$lib" | cut -d' ' -f1)" = "$lsha" ] || { echo "stage: $lib: sha256 MISMATCH"; return 1; }
  chmod 755 "$root/site-ort/$lib"
  rm -f "$stage/providers_cuda.so.xz"
  touch "$root/site-ort/.done" && echo "stage: unpacked onnxruntime-gpu into $root/site-ort (every sha256 matched)"
}

paths() {  # PYTHONPATH: the working tree, then the staged trees (cp312 builds: only where python3 is 3.12)
  local p=$top
  if "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    [ -f "$root/site-ort/.done" ] && p="$p:$root/site-ort"
    [ -f "$root/site-mo/.done" ] && p="$p:$root/site-mo"
    if [ -f "$root/site-extra/.done" ] && ! "$py" -c 'import pydantic' 2>/dev/null; then p="$p:$root/site-extra"; fi
  elif [ -f "$root/site-mo/.done" ]; then
    echo "stage: $("$py" -V) is not 3.12: the staged cp312 trees stay off PYTHONPATH (this environment's packages are used)"
  fi
  export PYTHONPATH="$p"
  echo "PYTHONPATH=$PYTHONPATH"
}

environment() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: none"
  "$py" - <<'PY'
import importlib
for m in ("torch", "torchvision", "onnx", "onnxruntime", "modelopt", "numpy", "typer"):
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

start_artifacts() {  # the background export + FP16 AutoCast, started once per machine
  [ -f "$root/artifacts.started" ] && { echo "artifacts: background job started earlier: $(tail -n 1 "$root/artifacts.log" 2>/dev/null)"; return 0; }
  if ! "$py" -c 'import modelopt.onnx.autocast' >/dev/null 2>&1; then
    echo "artifacts: ModelOpt does not import yet: background job not started"
    return 0
  fi
  local cores=12-15 threads=4
  if [ "$quick" = 1 ]; then cores=$(($(nproc) - 1)); threads=1; fi
  touch "$root/artifacts.started"
  local pin=()
  command -v taskset >/dev/null && pin=(taskset -c "$cores")
  # setsid: a process left running outlives the call only in its own session
  QUICK=$quick GPU_ROOT=$root PYTHON=$py CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=$threads BUDGET_S=1200 \
    setsid nohup nice -n 10 "${pin[@]}" bash "$rel/device.sh" artifacts > "$root/artifacts.log" 2>&1 < /dev/null &
  echo "artifacts: background job started (pid $!, cores $cores, log $root/artifacts.log)"
}

wait_artifacts() {  # wait_artifacts MAX_S
  local waited=0
  while [ ! -f "$root/artifacts.done" ] && [ "$waited" -lt "$1" ] && [ -f "$root/artifacts.started" ]; do
    sleep 5
    waited=$((waited + 5))
  done
  if [ -f "$root/artifacts.done" ]; then echo "artifacts: $(cat "$root/artifacts.done") (waited ${waited}s)"
  else echo "artifacts: not done after ${waited}s: bench makes what is missing itself"; fi
}

bench() {  # bench SUFFIX NEED_S [--cache-save | --cache-load FILE] ARGS...: one bench run, packed into $out/<run-id>.tgz
  local id="$prefix-$1" need=$2
  shift 2
  local wrap=("$py" -m resnet_deploy)
  if [ "${1:-}" = --cache-save ]; then  # load the committed cache (a later run compiles faster), save this run's
    shift
    wrap=("$py" "$rel/compile_cache.py" --load "$rel/compile-cache/torch-compile-cache.bin.gz"
          --save "$out/torch-compile-cache.bin.gz" --save "$root/torch-compile-cache.bin.gz" --)
  elif [ "${1:-}" = --cache-load ]; then  # load FILE only
    wrap=("$py" "$rel/compile_cache.py" --load "$2" --)
    shift 2
  fi
  step "bench $id" "$need" "${wrap[@]}" bench "$@" "${timing[@]}" --artifacts "$art" --out "$root/bench" --run-id "$id"
  if [ -d "$root/bench/$id" ]; then
    tar -czf "$out/$id.tgz" -C "$root/bench" "$id" && echo "packed $out/$id.tgz"
  fi
}

snapshot_artifacts_log() {
  [ -f "$root/artifacts.log" ] && cp "$root/artifacts.log" "$out/artifacts.log"
  return 0
}

pytest_gpu() {  # pytest_gpu NEED_S -k EXPR
  local need=$1
  shift
  step "tests/gpu/test_gpu.py $*" "$need" "$py" -m pytest -q -rs -p no:cacheprovider tests/gpu/test_gpu.py "$@"
}

parity() {  # GPU parity of the FP16 ONNX on ONNX Runtime CUDA against PyTorch FP32, one JSON line per depth
  local d
  for d in ${depths//,/ }; do
    step "parity resnet$d $oprec $gpu_ort" 10 bash -c \
      "'$py' -m resnet_deploy parity --engine $gpu_ort --precision $oprec --depth $d --out '$art' --json \
         | '$py' -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))' >> '$out/parity.jsonl'"
  done
}

run_phase() {
  echo "device.sh $phase (QUICK=$quick) at $(date -u +%H:%M:%SZ), budget ${budget}s, OUT=$out"
  ids
  if [ "$phase" != artifacts ]; then  # (the background job leaves the staged parts to the calls)
    collect
    unpack || echo "stage: unpacking failed"
  fi
  paths
  case "$phase" in
    artifacts)  # background: FP32 export + FP16 AutoCast per depth (quantize exports first when missing)
      local d rc summary=""
      for d in ${depths//,/ }; do
        echo "== quantize resnet$d fp16 at ${SECONDS}s"
        "$py" -m resnet_deploy quantize --depth "$d" --precision fp16 --out "$art"
        rc=$?
        summary="$summary resnet$d:$rc"
        echo "== resnet$d: exit $rc at ${SECONDS}s"
      done
      echo "fp16 ONNX exit codes:$summary, ${SECONDS}s" > "$root/artifacts.done"
      cat "$root/artifacts.done"
      return 0
      ;;
  esac
  environment
  start_artifacts
  case "$phase" in
    torch)  # torch eager (channels-last) and torch.compile (reduce-overhead, freezing, CUDA graphs)
      bench torch 60 --cache-save --engine torch,torch-compile --depth "$depths" --precision "$tprec" --batch "$batches"
      ;;
    streams)  # torch eager on CUDA against CPU FP32 (tests); torch eager with two CUDA streams at once
      pytest_gpu 20 -k "channels_last"
      bench torch-streams 30 --engine torch --depth "$sdepths" --precision "$tprec" --batch "$sbatch" --streams 2 --no-bare
      ;;
    warm)  # torch.compile again from an empty inductor/Triton cache with call 1's artifacts loaded (compile_s with
           # the cache, as a fresh machine would see it); the torch.compile GPU tests
      rm -rf "$root/inductor-warm" "$root/triton-warm"
      TORCHINDUCTOR_CACHE_DIR=$root/inductor-warm TRITON_CACHE_DIR=$root/triton-warm \
        bench compile-warm 30 --cache-load "$root/torch-compile-cache.bin.gz" --engine torch-compile --depth "$wdepth" \
        --precision "$tprec" --batch "$batches" --no-bare
      pytest_gpu 40 -k "torch_compile"
      ;;
    ort)  # ONNX Runtime CUDA (I/O binding, CUDA graphs, prefer_nhwc) on the FP16 ONNX made in the background
      local w=$(($(left) - reserve - 120))  # wait for the background's FP16 ONNX at most 60 s, less when time is short
      [ "$w" -gt 60 ] && w=60
      [ "$w" -lt 0 ] && w=0
      wait_artifacts "$w"
      bench ort 45 --engine "$gpu_ort" --depth "$depths" --precision "$oprec" --batch "$batches"
      pytest_gpu 40 -k "not channels_last and not torch_compile"
      parity
      bench ort-streams 25 --engine "$gpu_ort" --depth "${sdepths%%,*}" --precision "$oprec" --batch "$sbatch" --streams 2 --no-bare
      ;;
  esac
  snapshot_artifacts_log
  echo "== $phase done at ${SECONDS}s of ${budget}s; \$OUT:"
  ls -l "$out"
  local n
  n=$(find "$out" -type f | wc -l)
  [ "$n" -le 8 ] || echo "WARNING: $n files under \$OUT: only 8 come back"
}

if [ "$phase" = artifacts ]; then
  run_phase
else
  run_phase 2>&1 | tee -a "$log"
fi
