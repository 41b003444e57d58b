#!/usr/bin/env bash
# Build the TensorRT engine for this bundle ON the device that will run it (Jetson / JetPack,
# TensorRT 10.x; TensorRT 11 trtexec too): engines only run on the GPU and TensorRT version that built them.
#
#   ./build_engine.sh                      # GPU engine, batch profile @@MIN@@/@@OPT@@/@@MAX@@
#   ./build_engine.sh --dla 0              # DLA core 0, static batch 1; layers DLA cannot run fall back to the GPU
#   ./build_engine.sh --dla 0 --batch 4    # the same with a static batch of 4
#   ./build_engine.sh --help
#
# Written by resnet-deploy @@TOOLKIT_VERSION@@ for @@ARCH@@ (@@PRECISION@@).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ONNX="$HERE/@@ONNX_FILE@@"
ENGINE="$HERE/@@ENGINE_FILE@@"
INPUT_NAME="@@INPUT_NAME@@"
SAMPLE_SHAPE="@@SAMPLE_SHAPE@@"       # CxHxW of one image
PRECISION="@@PRECISION@@"
FIXED_BATCH="@@FIXED_BATCH@@"         # empty: the ONNX has a dynamic batch
MIN_BATCH=@@MIN@@
OPT_BATCH=@@OPT@@
MAX_BATCH=@@MAX@@
ONNX_NODES=@@ONNX_NODES@@
DLA_CORE=""
BATCH=""                              # DLA: one static batch (DLA has no dynamic shapes)
PROFILE_GIVEN=0
WEAK_TYPING=0
TIMING_CACHE="$HERE/timing.cache"
TRTEXEC="${TRTEXEC:-}"

die() { echo "build_engine.sh: error: $*" >&2; exit 1; }

usage() {
    cat <<USAGE
Usage: ./build_engine.sh [options]

Builds $(basename "$ENGINE") from $(basename "$ONNX") with trtexec (TensorRT 10.x on JetPack 6; 11.x).
Precision comes from the ONNX itself (strongly typed GPU build: FP16 tensors / INT8 Q/DQ nodes).
DLA builds on TensorRT 10 use the precision flags instead (--int8 --fp16 or --fp16, no --stronglyTyped):
trtexec 10.x sets the FP16 builder flag for every DLA build, which a strongly typed network refuses.

Options:
  --min-batch N        smallest batch the engine accepts   (default $MIN_BATCH)
  --opt-batch N        batch the kernels are tuned for     (default $OPT_BATCH)
  --max-batch N        largest batch the engine accepts    (default $MAX_BATCH)
  --dla N              run on DLA core N (Jetson AGX/NX Orin); unsupported layers fall back to the GPU
  --batch N            the one static batch of a DLA engine (DLA has no dynamic shapes; default 1)
  --weak-typing        GPU build with the TensorRT 10 precision flags (--fp16 / --int8) instead of
                       --stronglyTyped (TensorRT 11's trtexec has no such flags)
  --engine FILE        where to write the engine           (default $(basename "$ENGINE"))
  --timing-cache FILE  timing cache to reuse and update    (default $(basename "$TIMING_CACHE"))
  --trtexec PATH       the trtexec binary (default: \$TRTEXEC, trtexec on PATH, /usr/src/tensorrt/bin/trtexec)
  -h, --help           show this help
USAGE
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --min-batch) [[ $# -ge 2 ]] || die "--min-batch needs a value"; MIN_BATCH="$2"; PROFILE_GIVEN=1; shift 2 ;;
        --opt-batch) [[ $# -ge 2 ]] || die "--opt-batch needs a value"; OPT_BATCH="$2"; PROFILE_GIVEN=1; shift 2 ;;
        --max-batch) [[ $# -ge 2 ]] || die "--max-batch needs a value"; MAX_BATCH="$2"; PROFILE_GIVEN=1; shift 2 ;;
        --batch) [[ $# -ge 2 ]] || die "--batch needs a value"; BATCH="$2"; shift 2 ;;
        --dla) [[ $# -ge 2 ]] || die "--dla needs a core number (0 or 1)"; DLA_CORE="$2"; shift 2 ;;
        --weak-typing) WEAK_TYPING=1; shift ;;
        --engine) [[ $# -ge 2 ]] || die "--engine needs a file name"; ENGINE="$2"; shift 2 ;;
        --timing-cache) [[ $# -ge 2 ]] || die "--timing-cache needs a file name"; TIMING_CACHE="$2"; shift 2 ;;
        --trtexec) [[ $# -ge 2 ]] || die "--trtexec needs a path"; TRTEXEC="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

# ---- check the inputs before anything slow -------------------------------------------------
[[ -f "$ONNX" ]] || die "model not found: $ONNX (copy the whole bundle folder to the device)"
[[ -r "$ONNX" ]] || die "model is not readable: $ONNX"
for pair in "min-batch:$MIN_BATCH" "opt-batch:$OPT_BATCH" "max-batch:$MAX_BATCH"; do
    name="${pair%%:*}"; value="${pair#*:}"
    if ! is_uint "$value" || [[ "$value" -lt 1 ]]; then die "--$name must be a whole number >= 1 (got '$value')"; fi
done
[[ "$MIN_BATCH" -le "$OPT_BATCH" && "$OPT_BATCH" -le "$MAX_BATCH" ]] \
    || die "the batch profile must satisfy min <= opt <= max (got $MIN_BATCH/$OPT_BATCH/$MAX_BATCH)"
if [[ -n "$FIXED_BATCH" ]] && [[ "$MIN_BATCH" != "$FIXED_BATCH" || "$MAX_BATCH" != "$FIXED_BATCH" || "$OPT_BATCH" != "$FIXED_BATCH" ]]; then
    die "the ONNX has a fixed batch of $FIXED_BATCH, so min/opt/max must all be $FIXED_BATCH"
fi
if [[ -n "$BATCH" && -z "$DLA_CORE" ]]; then
    die "--batch is the static batch of a DLA engine (with --dla); GPU engines take --min-batch/--opt-batch/--max-batch"
fi
if [[ -n "$DLA_CORE" ]]; then
    is_uint "$DLA_CORE" || die "--dla must be a DLA core number such as 0 or 1 (got '$DLA_CORE')"
    [[ "$PRECISION" != "fp32" ]] || die "DLA runs FP16 or INT8 only; package an fp16 or int8 bundle for DLA"
    [[ "$PROFILE_GIVEN" -eq 0 ]] || die "DLA has no dynamic shapes: give one static batch with --batch N, not a min/opt/max profile"
    [[ "$WEAK_TYPING" -eq 0 ]] || die "--weak-typing is for GPU builds; DLA builds already use the precision flags where trtexec needs them"
    BATCH="${BATCH:-${FIXED_BATCH:-1}}"
    if ! is_uint "$BATCH" || [[ "$BATCH" -lt 1 ]]; then die "--batch must be a whole number >= 1 (got '$BATCH')"; fi
    if [[ -n "$FIXED_BATCH" && "$BATCH" != "$FIXED_BATCH" ]]; then die "the ONNX has a fixed batch of $FIXED_BATCH, so --batch must be $FIXED_BATCH"; fi
    MIN_BATCH="$BATCH"; OPT_BATCH="$BATCH"; MAX_BATCH="$BATCH"
fi
if [[ -z "$TRTEXEC" ]]; then
    if command -v trtexec >/dev/null 2>&1; then
        TRTEXEC="$(command -v trtexec)"
    elif [[ -x /usr/src/tensorrt/bin/trtexec ]]; then
        TRTEXEC=/usr/src/tensorrt/bin/trtexec
    else
        die "trtexec not found: install TensorRT (JetPack ships it in /usr/src/tensorrt/bin) or pass --trtexec PATH"
    fi
fi
[[ -x "$TRTEXEC" ]] || die "trtexec is not an executable file: $TRTEXEC"
ENGINE_DIR="$(dirname "$ENGINE")"
[[ -d "$ENGINE_DIR" && -w "$ENGINE_DIR" ]] || die "cannot write the engine into $ENGINE_DIR"
# trtexec's banner says its TensorRT: "&&&& RUNNING TensorRT.trtexec [TensorRT v100300]" (major*10000 + minor*100 + patch)
TRT_NUMBER="$("$TRTEXEC" --help 2>&1 | sed -n 's/.*\[TensorRT v\([0-9][0-9]*\)\].*/\1/p' | head -n 1 || true)"
TRT_MAJOR=10
if [[ -n "$TRT_NUMBER" ]]; then TRT_MAJOR=$((TRT_NUMBER / 10000)); fi
if [[ "$TRT_MAJOR" -ge 11 && "$WEAK_TYPING" -eq 1 ]]; then
    die "--weak-typing needs TensorRT 10: trtexec $TRT_MAJOR.x has no --fp16/--int8 (weak typing was removed in TensorRT 11)"
fi

# ---- build ---------------------------------------------------------------------------------
ARGS=(
    "--onnx=$ONNX"
    "--saveEngine=$ENGINE.tmp"
    "--minShapes=$INPUT_NAME:${MIN_BATCH}x$SAMPLE_SHAPE"
    "--optShapes=$INPUT_NAME:${OPT_BATCH}x$SAMPLE_SHAPE"
    "--maxShapes=$INPUT_NAME:${MAX_BATCH}x$SAMPLE_SHAPE"
    "--timingCacheFile=$TIMING_CACHE"
    "--skipInference"
)
if [[ -n "$FIXED_BATCH" ]]; then
    # a static-shape ONNX takes no shape flags
    ARGS=("--onnx=$ONNX" "--saveEngine=$ENGINE.tmp" "--timingCacheFile=$TIMING_CACHE" "--skipInference")
fi
precision_flags() {
    case "$PRECISION" in
        fp16) ARGS+=("--fp16") ;;
        int8) ARGS+=("--int8" "--fp16") ;;   # explicit Q/DQ scales from the ONNX, FP16 elsewhere
        bf16) ARGS+=("--bf16") ;;
        *) ;;
    esac
}
if [[ -n "$DLA_CORE" && "$TRT_MAJOR" -lt 11 ]]; then
    # trtexec 10.x sets BuilderFlag::kFP16 for every DLA build (samples/common/sampleEngines.cpp), and a
    # strongly typed network refuses that flag: DLA builds take the precision flags instead
    precision_flags
elif [[ "$WEAK_TYPING" -eq 1 ]]; then
    precision_flags
else
    ARGS+=("--stronglyTyped")
fi
if [[ -n "$DLA_CORE" ]]; then
    ARGS+=("--useDLACore=$DLA_CORE" "--allowGPUFallback")
fi

LOG="$ENGINE.build.log"
echo "building $(basename "$ENGINE") with $TRTEXEC (log: $LOG)"
echo "  $TRTEXEC ${ARGS[*]}"
rm -f "$ENGINE.tmp"
if ! "$TRTEXEC" "${ARGS[@]}" >"$LOG" 2>&1; then
    rm -f "$ENGINE.tmp"
    echo "---- last lines of $LOG ----" >&2
    tail -n 20 "$LOG" >&2 || true
    die "trtexec failed (full log: $LOG)"
fi
[[ -s "$ENGINE.tmp" ]] || die "trtexec reported success but wrote no engine (see $LOG)"
mv -f "$ENGINE.tmp" "$ENGINE"
if [[ -n "$DLA_CORE" ]]; then
    # Where the layers went, from the builder's log: one warning per layer DLA cannot run ("Layer 'x' (TYPE):
    # Unsupported on DLA. Switching this layer's device type to GPU." in TensorRT 10; "... falling back to
    # GPU." before), and one "[DlaLayer] {ForeignNode[...]}" line per DLA subgraph.
    FELL_BACK="$(grep -c -E "Unsupported on DLA|not (supported|running) on DLA, falling back to GPU" "$LOG" || true)"
    DLA_SUBGRAPHS="$(grep -c '\[DlaLayer\]' "$LOG" || true)"
    if [[ "$DLA_SUBGRAPHS" -eq 0 ]]; then
        echo "warning: the build log names no DLA subgraph: the engine may run entirely on the GPU (see $LOG)" >&2
    elif [[ "$FELL_BACK" -gt $((ONNX_NODES / 2)) ]]; then
        echo "warning: most layers fell back to the GPU: $FELL_BACK of the ONNX's $ONNX_NODES nodes (see $LOG)" >&2
    fi
fi

# ---- the manifest beside the engine (read by infer.py's runner) ----------------------------
TRT_VERSION="$(sed -n 's/.*TensorRT version: *\([0-9][0-9.]*\).*/\1/p' "$LOG" | head -n 1)"
EXTRA=()
if [[ -n "$DLA_CORE" ]]; then EXTRA+=("--dla" "$DLA_CORE" "--dla-subgraphs" "$DLA_SUBGRAPHS" "--fell-back" "$FELL_BACK"); fi
if [[ "$WEAK_TYPING" -eq 1 || ( -n "$DLA_CORE" && "$TRT_MAJOR" -lt 11 ) ]]; then EXTRA+=("--weak-typing"); fi
if command -v python3 >/dev/null 2>&1; then
    python3 "$HERE/engine_manifest.py" --engine "$ENGINE" --onnx "$ONNX" --precision "$PRECISION" \
        --min-batch "$MIN_BATCH" --opt-batch "$OPT_BATCH" --max-batch "$MAX_BATCH" \
        --trtexec-version "${TRT_VERSION:-unknown}" "${EXTRA[@]}" \
        || die "the engine was built but its manifest could not be written"
else
    echo "warning: python3 not found: no manifest written (infer.py needs one; the C++ example does not)" >&2
fi
echo "wrote $ENGINE"
echo "next: python3 $HERE/infer.py --engine $ENGINE IMAGE.jpg"
