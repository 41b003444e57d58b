#!/usr/bin/env bash
# The GPU benchmark plan, for any GPU machine without network access (RUNBOOK.md). From the repository root:
#
#   bash benchmarks/gpu/run.sh --plan          # print the phases, their budgets and commands; run nothing
#   bash benchmarks/gpu/run.sh                 # every phase, in order
#   bash benchmarks/gpu/run.sh torch ort       # some phases (env first if it has not run on this machine)
#
# Phases, each under `timeout` with its budget in seconds (BUDGET_<PHASE>=S to change one):
#   env        the machine (GPU, driver, Python), the staged wheels checked against staged.sha256, then unpacked
#   torch      torch eager (channels-last) and torch.compile (reduce-overhead, freezing, CUDA graphs), FP16,
#              ResNet-50/18/152 x batch 256/1; torch.compile's cache artifacts saved
#   streams    torch eager on CUDA against CPU FP32 (tests); torch eager FP16 with two CUDA streams, ResNet-50/152 b256
#   warm       torch.compile ResNet-50 FP16 b256/b1 from an empty inductor/Triton cache with the torch phase's
#              cache artifacts loaded (compile_s as a fresh machine sees it); the torch.compile GPU tests
#   artifacts  FP32 export and FP16 AutoCast (ModelOpt) of ResNet-50/18/152, for the ort phase
#   ort        ONNX Runtime CUDA (I/O binding, CUDA graphs, prefer_nhwc) FP16 at ResNet-50/18/152 x b256/b1; the
#              other GPU tests; `resnet-deploy parity --engine ort-cuda -p fp16` per depth; two streams at ResNet-50 b256
# When a phase ends (done, failed or cut off by its budget) its folder is packed into
# $RESULTS/<run-id>-<phase>.tar.gz at once, so a machine lost mid-run still leaves every finished phase.
# Bench run ids are gpu-<device>-<UTC date>-<name>; the device tag comes from nvidia-smi.
#
# Settings (environment): STAGE (the staged wheels, default .gpustage), WORK (scratch: unpacked wheels,
# exported models, compile caches; default /tmp/resnet-deploy-gpu), RESULTS (default $WORK/results), PYTHON.
# QUICK=1: a dry run on any machine (benchmarks/gpu/dry-run.sh): ResNet-18, batch 1, --min-time 0, FP32 for
# torch (no FP16 on a CPU), ONNX Runtime CPU for ort-cuda; steps that need a GPU say so and are skipped.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top" || exit 1
rel=benchmarks/gpu
quick=${QUICK:-0}
py=${PYTHON:-python3}
stage=${STAGE:-$top/.gpustage}
work=${WORK:-/tmp/resnet-deploy-gpu}
results=${RESULTS:-$work/results}
PHASES=(env torch streams warm artifacts ort)
declare -A BUDGET=([env]=300 [torch]=1200 [streams]=300 [warm]=300 [artifacts]=900 [ort]=600)
for p in "${PHASES[@]}"; do
  v="BUDGET_${p^^}"
  [ -n "${!v:-}" ] && BUDGET[$p]=${!v}
done
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg COLUMNS=${COLUMNS:-150} TERM=dumb
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$work/inductor} TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$work/triton}
art=$work/artifacts
cache=$work/phases/torch/torch-compile-cache.bin.gz

if [ "$quick" = 1 ]; then
  depths=18; batches=1; tprec=fp32; oprec=fp16; gpu_ort=ort; sdepths=18; sbatch=1; wdepth=18
  timing=(--min-time 0 --min-iters 3 --warmup 1)
else
  depths=50,18,152; batches=256,1; tprec=fp16; oprec=fp16; gpu_ort=ort-cuda; sdepths=50,152; sbatch=256; wdepth=50
  timing=(--min-time "${MIN_TIME:-0.5}")
fi

# ------------------------------------------------------------------------------------------ helpers

run_id_prefix() {  # gpu-<device>-<UTC date>, fixed for this machine once the env phase has run
  if [ ! -f "$work/id" ]; then
    local dev
    dev=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z' 'a-z' \
          | grep -oE '[a-z]+[0-9]+[a-z0-9]*' | head -1)
    mkdir -p "$work"
    echo "${dev:-cpu} $(date -u +%Y-%m-%d)" > "$work/id"
  fi
  local dev_tag date_tag
  read -r dev_tag date_tag < "$work/id"
  echo "gpu-$dev_tag-$date_tag"
}

no_gpu() {  # why there is no CUDA GPU here ("" when there is one)
  if ! command -v nvidia-smi >/dev/null; then echo "no nvidia-smi"; return; fi
  nvidia-smi -L >/dev/null 2>&1 || echo "nvidia-smi lists no GPU"
}

python_paths() {  # PYTHONPATH: the working tree, then the unpacked wheels (onnxruntime-gpu ahead of a CPU build)
  local p=$top g
  for g in ort mo; do
    [ -f "$work/site-$g/.done" ] && p="$p:$work/site-$g"
  done
  if [ -f "$work/site-extra/.done" ] && ! "$py" -c 'import pydantic' 2>/dev/null; then p="$p:$work/site-extra"; fi
  export PYTHONPATH=$p
}

# ------------------------------------------------------------------------------------------ env: machine and wheels

check_wheels() {  # every staged wheel against staged.sha256; a group is unpacked only if all of its wheels match
  local sums=$here/staged.sha256 want
  want=$(awk '/^# /{for (i = 1; i <= NF; i++) if ($i == "python") print $(i + 1)}' "$sums" | head -1)
  if [ ! -d "$stage" ]; then
    echo "wheels: no staged wheels at $stage (run benchmarks/gpu/stage.sh where there is network, copy it here)"
    return 0
  fi
  local g bad have
  have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  for g in ort mo extra; do
    bad=$(cd "$stage" && grep " $g/" "$sums" | sha256sum -c --strict - 2>&1 | grep -v ': OK$')
    if [ -n "$bad" ] || ! grep -q " $g/" "$sums"; then
      echo "wheels: $g: NOT installed, sha256 check failed:"
      echo "${bad:-  no $g wheels listed}" | sed 's/^/  /'
      continue
    fi
    echo "wheels: $g: every sha256 matches"
    if [ "$have" != "$want" ]; then
      echo "wheels: $g: not unpacked: staged for Python $want, this is $have (the machine's own packages are used)"
    elif [ ! -f "$work/site-$g/.done" ]; then
      unpack_group "$g"
    fi
  done
}

unpack_group() {  # extract a group's wheels into $work/site-<group> (what pip --target lays out; no pip needed)
  local g=$1 w
  rm -rf "$work/site-$g" && mkdir -p "$work/site-$g"
  for w in "$stage/$g"/*.whl; do
    "$py" -m zipfile -e "$w" "$work/site-$g" || { echo "wheels: $g: cannot unpack $w"; return 1; }
  done
  if compgen -G "$work/site-$g/*.data" >/dev/null; then
    echo "wheels: $g has .data folders, which this plan does not lay out: not used"
    return 1
  fi
  touch "$work/site-$g/.done" && echo "wheels: $g: unpacked into $work/site-$g"
}

phase_env() {
  echo "machine: $(uname -srm), $(nproc) cores, $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}'), python $("$py" -V 2>&1)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null \
    || echo "GPU: none ($(no_gpu))"
  check_wheels
  python_paths
  echo "PYTHONPATH=$PYTHONPATH"
  "$py" - <<'PY'
import importlib
for m in ("torch", "torchvision", "onnx", "onnxruntime", "modelopt.onnx.autocast", "numpy", "typer"):
    try:
        mod = importlib.import_module(m)
        extra = ""
        if m == "onnxruntime":
            extra = f" providers={mod.get_available_providers()} from {mod.__file__}"
        if m == "torch":
            extra = f" cuda={mod.version.cuda} gpu={mod.cuda.is_available() and mod.cuda.get_device_name()}"
        print(f"{m} {getattr(mod, '__version__', '')}{extra}")
    except Exception as e:  # noqa: BLE001
        print(f"{m}: {type(e).__name__}: {e}")
PY
}

# ------------------------------------------------------------------------------------------ the measuring phases

bench() {  # bench NAME [--cache-save | --cache-load FILE] ARGS...: one bench run into this phase's folder
  local id
  id="$(run_id_prefix)-$1"
  shift
  local wrap=("$py" -m resnet_deploy)
  if [ "${1:-}" = --cache-save ]; then  # load the committed cache (a later run compiles faster), save this run's
    shift
    wrap=("$py" "$rel/compile_cache.py" --load "$rel/compile-cache/torch-compile-cache.bin.gz" --save "$cache" --)
  elif [ "${1:-}" = --cache-load ]; then
    wrap=("$py" "$rel/compile_cache.py" --load "$2" --)
    shift 2
  fi
  echo "== bench $id"
  "${wrap[@]}" bench "$@" "${timing[@]}" --artifacts "$art" --out "$dir/bench" --run-id "$id"
  echo "== bench $id: exit $?"
}

gpu_tests() {  # gpu_tests -k EXPR: the GPU test file (its tests skip themselves without a GPU)
  echo "== tests/gpu/test_gpu.py $*"
  "$py" -m pytest -q -rs -p no:cacheprovider tests/gpu/test_gpu.py "$@"
  echo "== tests/gpu/test_gpu.py: exit $?"
}

needs_gpu() {  # needs_gpu WHAT: true if a GPU is here; else says why WHAT is skipped
  local why
  why=$(no_gpu)
  [ -z "$why" ] && return 0
  echo "== $1: skipped: needs a CUDA GPU ($why)"
  return 1
}

phase_torch() {
  bench torch --cache-save --engine torch,torch-compile --depth "$depths" --precision "$tprec" --batch "$batches"
}

phase_streams() {
  gpu_tests -k channels_last
  bench torch-streams --engine torch --depth "$sdepths" --precision "$tprec" --batch "$sbatch" --streams 2 --no-bare
}

phase_warm() {
  rm -rf "$work/inductor-warm" "$work/triton-warm"
  TORCHINDUCTOR_CACHE_DIR=$work/inductor-warm TRITON_CACHE_DIR=$work/triton-warm \
    bench compile-warm --cache-load "$cache" --engine torch-compile --depth "$wdepth" --precision "$tprec" \
    --batch "$batches" --no-bare
  gpu_tests -k torch_compile
}

phase_artifacts() {  # FP32 export + FP16 AutoCast per depth (quantize exports first when the FP32 ONNX is missing)
  local d
  for d in ${depths//,/ }; do
    echo "== quantize resnet$d fp16"
    "$py" -m resnet_deploy quantize --depth "$d" --precision fp16 --out "$art"
    echo "== quantize resnet$d: exit $?"
  done
}

phase_ort() {
  bench ort --engine "$gpu_ort" --depth "$depths" --precision "$oprec" --batch "$batches"
  gpu_tests -k "not channels_last and not torch_compile"
  local d
  for d in ${depths//,/ }; do  # GPU parity of the FP16 ONNX on ONNX Runtime CUDA against PyTorch FP32, one JSON line each
    echo "== parity resnet$d $oprec $gpu_ort"
    "$py" -m resnet_deploy parity --engine "$gpu_ort" --precision "$oprec" --depth "$d" --out "$art" --json \
      | "$py" -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))' >> "$dir/parity.jsonl"
    echo "== parity resnet$d: exit ${PIPESTATUS[0]}"
  done
  bench ort-streams --engine "$gpu_ort" --depth "${sdepths%%,*}" --precision "$oprec" --batch "$sbatch" --streams 2 --no-bare
}

# ------------------------------------------------------------------------------------------ the plan

body() {  # the phase itself (run under timeout by run_phase)
  local phase=$1
  dir=$work/phases/$phase
  mkdir -p "$dir" "$art"
  python_paths
  if [ "$phase" != env ] && [ "$phase" != artifacts ] && [ "$quick" != 1 ]; then
    needs_gpu "phase $phase" || return 0
  fi
  "phase_$phase"
}

run_phase() {  # run_phase PHASE: the body under its budget, then pack the phase's folder
  local phase=$1 budget=${BUDGET[$1]} t0=$SECONDS rc
  local dir=$work/phases/$phase
  rm -rf "$dir" && mkdir -p "$dir" "$results"
  echo "=== $phase (budget ${budget}s) at $(date -u +%H:%M:%SZ)"
  timeout -k 30 "$budget" bash "$here/run.sh" --body "$phase" > "$dir/$phase.log" 2>&1
  rc=$?
  [ "$rc" = 124 ] && echo "=== $phase: cut off at its budget of ${budget}s" >> "$dir/$phase.log"
  local packed
  packed="$results/$(run_id_prefix)-$phase.tar.gz"
  tar -czf "$packed.tmp" -C "$work/phases" "$phase" && mv "$packed.tmp" "$packed"
  echo "=== $phase: exit $rc after $((SECONDS - t0))s; packed $packed"
  grep -E "^== .*(exit [1-9]|skipped)|^wheels: .*(NOT|not )|MISMATCH|FAILED|Traceback|cut off" "$dir/$phase.log" \
    | sed 's/^/    /' | head -20
  return 0
}

plan() {
  local -A what=(
    [env]="the machine; every staged wheel against staged.sha256, then unpacked into \$WORK/site-{ort,mo,extra}; versions, ORT providers"
    [torch]="bench --engine torch,torch-compile --depth $depths --precision $tprec --batch $batches (torch.compile cache saved)"
    [streams]="tests/gpu -k channels_last; bench --engine torch --depth $sdepths --precision $tprec --batch $sbatch --streams 2"
    [warm]="bench --engine torch-compile --depth $wdepth --precision $tprec --batch $batches, empty inductor cache + torch's artifacts; tests/gpu -k torch_compile"
    [artifacts]="quantize --depth {${depths}} --precision fp16 (FP32 export first)"
    [ort]="bench --engine $gpu_ort --depth $depths --precision $oprec --batch $batches; tests/gpu (the rest); parity per depth; --streams 2 at the first depth"
  )
  local total=0 p why
  why=$(no_gpu)
  echo "GPU plan: STAGE=$stage WORK=$work RESULTS=$results QUICK=$quick"
  for p in "${PHASES[@]}"; do
    total=$((total + BUDGET[$p]))
    local note=""
    if [ -n "$why" ] && [ "$quick" != 1 ] && [ "$p" != env ] && [ "$p" != artifacts ]; then note=" [skipped here: needs a CUDA GPU, $why]"; fi
    printf '  %-10s %5ss  %s%s\n' "$p" "${BUDGET[$p]}" "${what[$p]}" "$note"
  done
  echo "  at most ${total}s in all ($((total / 60)) min); each phase packed into $results/<run-id>-<phase>.tar.gz as it ends"
}

if [ "${1:-}" = --body ]; then
  body "$2"
  exit $?
fi
if [ "${1:-}" = --plan ]; then
  plan
  exit 0
fi
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=("${PHASES[@]}")
for p in "${wanted[@]}"; do
  [ -n "${BUDGET[$p]:-}" ] || { echo "unknown phase $p (${PHASES[*]})"; exit 2; }
done
if [ "${wanted[0]}" != env ] && [ ! -f "$work/phases/env/env.log" ]; then wanted=(env "${wanted[@]}"); fi
plan
for p in "${wanted[@]}"; do
  run_phase "$p"
done
echo "results: $(ls "$results"/*.tar.gz 2>/dev/null | tr '\n' ' ')"
