#!/usr/bin/env bash
# Run on a machine WITH network access, before the GPU machine's run (RUNBOOK.md).
#
# The GPU machine has no network. This downloads, for the GPU machine's Python (PY_VERSION, 3.12 by default;
# x86-64 manylinux), the wheels the plan needs that a CUDA build of torch does not bring:
#   ort    onnxruntime-gpu 1.31.1 (CUDA 13; the version of the H100 anchors)
#   mo     ModelOpt's FP16 path (AutoCast) and what it imports beyond onnx/onnxscript/onnx-ir/sympy/numpy:
#          nvidia-modelopt, onnx-graphsurgeon, onnxslim, polygraphy, lief
#   extra  pydantic and its own dependencies: installed on the GPU machine only if it cannot `import pydantic`
#          (newer typer releases import it)
# into STAGE (default .gpustage/, kept out of git by a .gitignore inside it), one folder per group, and writes
# every wheel's sha256 to benchmarks/gpu/staged.sha256 (sha256sum's format, paths relative to STAGE).
# Copy STAGE and the working tree to the GPU machine by whatever means it has; run.sh's env phase checks every
# wheel against staged.sha256 before it installs anything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"
stage=${STAGE:-$top/.gpustage}
py=${PYTHON:-python3}
py_version=${PY_VERSION:-3.12}
declare -A groups=(
  [ort]="onnxruntime-gpu==1.31.1"
  [mo]="nvidia-modelopt==0.47.0 onnx-graphsurgeon==0.6.1 onnxslim==0.1.98 polygraphy==0.53.6 lief==1.0.0"
  [extra]="pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.8.0 typing-inspection==0.4.5"
)
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)

mkdir -p "$stage"
printf '*\n' > "$stage/.gitignore"
for group in ort mo extra; do
  read -r -a reqs <<< "${groups[$group]}"
  echo "== $group: ${reqs[*]}"
  mkdir -p "$stage/$group"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$py_version" --implementation cp \
    "${platforms[@]}" -d "$stage/$group" "${reqs[@]}" 2>&1 | grep -v "is ignored: it is neither" || true
  n=$(find "$stage/$group" -name '*.whl' | wc -l)
  [ "$n" -eq "${#reqs[@]}" ] || { echo "stage.sh: $group: expected ${#reqs[@]} wheels in $stage/$group, found $n" >&2; exit 1; }
done

{
  echo "# resnet-deploy GPU plan wheels (benchmarks/gpu/stage.sh): python $py_version x86_64 manylinux; groups ort, mo, extra"
  (cd "$stage" && find ort mo extra -name '*.whl' | sort | xargs sha256sum)
} > "$here/staged.sha256"
du -sh "$stage"/* | sed 's/^/   /'
echo "wrote $here/staged.sha256 ($(grep -c '\.whl$' "$here/staged.sha256") wheels); copy $stage to the GPU machine (STAGE there)"
