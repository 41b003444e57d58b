#!/usr/bin/env bash
# Run HERE (the CPU machine, which reaches PyPI) before the device calls of RUNBOOK.md.
#
# The device machine has no network, no onnxruntime-gpu and no ModelOpt. This downloads
#   - onnxruntime-gpu 1.31.1 (CUDA 13, cp312; the version of the H100 anchors) and repacks it:
#     the CUDA provider library (284 MB) alone with xz (~186 MB), the rest of the wheel as one
#     tar.xz (~17 MB); the TensorRT provider library is dropped (no TensorRT on the device);
#   - the modules ModelOpt's FP16 path (AutoCast) imports that the device lacks: nvidia-modelopt,
#     lief, polygraphy, onnxslim, onnx-graphsurgeon (onnx, onnxscript, onnx-ir, sympy, numpy are there);
#   - a fallback used only if the device cannot `import pydantic` (newer typer releases import it):
#     pydantic 2.13.4 with its own pydantic-core 2.46.4, annotated-types, typing-inspection;
# unpacks the wheels here (nothing is pip-installed on the device: device.sh extracts these trees
# into folders it puts on PYTHONPATH), and splits everything into equal parts of at most
# PART_MIB (58) MiB, small enough to travel with the working tree (64 MiB per call):
#   .devstage/1 .. .devstage/N   (one per device call; N is 4), each with MANIFEST (sha256 of every file)
# and writes the same manifest to benchmarks/gpu/staged.sha256 (travels with the tree), which the
# device checks every part against.
#
# .devstage/ is kept out of git by a .gitignore inside it (`*`), as pytest and ruff do with their caches.
# Downloads and the xz of the CUDA library (~2.5 min on one core) are cached in WORK_DIR.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
part_mib=${PART_MIB:-58}
work=${WORK_DIR:-/tmp/resnet-deploy-gpustage}
py=${PYTHON:-python3}
xz_level=${XZ_LEVEL:-6}
xz_threads=${XZ_THREADS:-1}
ort_req=onnxruntime-gpu==1.31.1
mo_reqs=(nvidia-modelopt==0.47.0 onnx-graphsurgeon==0.6.1 onnxslim==0.1.98 polygraphy==0.53.6 lief==1.0.0)
extra_reqs=(pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.8.0 typing-inspection==0.4.5)
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)

download() {  # download GROUP REQ...: wheels for CPython 3.12 x86-64 into $work/wheels/GROUP
  local group=$1
  shift
  mkdir -p "$work/wheels/$group"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$work/wheels/$group" "$@" 2>&1 | grep -v "is ignored: it is neither" || true
  local n
  n=$(find "$work/wheels/$group" -name '*.whl' | wc -l)
  [ "$n" -eq "$#" ] || { echo "stage.sh: $group: expected $# wheels in $work/wheels/$group, found $n" >&2; exit 1; }
}

unpack() {  # unpack GROUP DEST: every wheel of GROUP extracted into DEST (what pip --target would lay out)
  rm -rf "$2"
  mkdir -p "$2"
  for w in "$work/wheels/$1"/*.whl; do
    "$py" -m zipfile -e "$w" "$2"
  done
  if compgen -G "$2/*.data" >/dev/null; then
    echo "stage.sh: $1 has .data folders, which this script does not lay out" >&2
    exit 1
  fi
}

txz() {  # txz DIR FILE: a reproducible tar.xz of DIR's contents
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf - . \
    | xz -T"$xz_threads" -"$xz_level" -c > "$2.tmp"
  mv "$2.tmp" "$2"
}

echo "== downloading (cached in $work/wheels)"
download ort "$ort_req"
download mo "${mo_reqs[@]}"
download extra "${extra_reqs[@]}"
du -sh "$work"/wheels/* | sed 's/^/   /'

echo "== repacking"
mkdir -p "$work/out"
unpack mo "$work/tree/site-mo"
txz "$work/tree/site-mo" "$work/out/site-mo.tar.xz"
unpack extra "$work/tree/site-extra"
txz "$work/tree/site-extra" "$work/out/site-extra.tar.xz"
unpack ort "$work/tree/site-ort"
capi="$work/tree/site-ort/onnxruntime/capi"
[ -f "$capi/libonnxruntime_providers_cuda.so" ] || { echo "stage.sh: no CUDA provider in the wheel" >&2; exit 1; }
rm -f "$capi/libonnxruntime_providers_tensorrt.so"
mv "$capi/libonnxruntime_providers_cuda.so" "$work/out/libonnxruntime_providers_cuda.so"
lib_sha=$(sha256sum "$work/out/libonnxruntime_providers_cuda.so" | cut -d' ' -f1)
lib_size=$(stat -c %s "$work/out/libonnxruntime_providers_cuda.so")
txz "$work/tree/site-ort" "$work/out/ort-base.tar.xz"
if [ -f "$work/out/providers_cuda.so.xz" ] && [ "$(cat "$work/out/providers_cuda.so.xz.of" 2>/dev/null)" = "$lib_sha $xz_level" ]; then
  echo "   providers_cuda.so.xz: reused (same library, xz -$xz_level)"
else
  echo "   xz -$xz_level of the CUDA provider library ($((lib_size >> 20)) MiB, ~2.5 min on one core) ..."
  xz -T"$xz_threads" -"$xz_level" -c "$work/out/libonnxruntime_providers_cuda.so" > "$work/out/providers_cuda.so.xz.tmp"
  mv "$work/out/providers_cuda.so.xz.tmp" "$work/out/providers_cuda.so.xz"
  echo "$lib_sha $xz_level" > "$work/out/providers_cuda.so.xz.of"
fi
rm -f "$work/out/libonnxruntime_providers_cuda.so"
ls -l "$work/out"/*.xz | awk '{printf "   %-28s %6.1f MiB\n", $NF, $5 / 1048576}' | sed "s|$work/out/||"

echo "== splitting into parts of at most $part_mib MiB"
# The working tree travels with every part: keep part + tree under 64 MiB (1 MiB to spare).
rm -rf .devstage
mkdir -p .devstage
printf '*\n' > .devstage/.gitignore
tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
"$py" - "$work/out" .devstage "$part_mib" "$tree_bytes" "$lib_sha" "$lib_size" <<'PY'
import hashlib, math, os, shutil, sys
src, dst, part_mib, tree, lib_sha, lib_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
MiB = 1 << 20
cap = min(part_mib * MiB, 64 * MiB - tree - MiB)
whole = ["site-mo.tar.xz", "site-extra.tar.xz", "ort-base.tar.xz"]   # part 1: ModelOpt can run from the first call
big = os.path.join(src, "providers_cuda.so.xz")
sizes = {n: os.path.getsize(os.path.join(src, n)) for n in whole}
total = sum(sizes.values()) + os.path.getsize(big)
n = math.ceil(total / cap)
per = math.ceil(total / n)
if sum(sizes.values()) >= per:
    sys.exit("stage.sh: the small files alone fill part 1")
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
lines = []
os.makedirs(f"{dst}/1")
for name in whole:
    shutil.copyfile(os.path.join(src, name), f"{dst}/1/{name}")
    lines.append(f"part 1 {name} {sha(f'{dst}/1/{name}')} {sizes[name]}")
with open(big, "rb") as f:
    k, room = 1, per - sum(sizes.values())
    while True:
        data = f.read(room)
        if not data:
            break
        os.makedirs(f"{dst}/{k}", exist_ok=True)
        name = f"providers_cuda.so.xz.{k - 1:02d}"
        with open(f"{dst}/{k}/{name}", "wb") as g:
            g.write(data)
        lines.append(f"part {k} {name} {hashlib.sha256(data).hexdigest()} {len(data)}")
        k, room = k + 1, per
lines.append(f"joined providers_cuda.so.xz {sha(big)} {os.path.getsize(big)}")
lines.append(f"lib onnxruntime/capi/libonnxruntime_providers_cuda.so {lib_sha} {lib_size}")
parts = k - 1
text = (f"# resnet-deploy GPU stage (benchmarks/gpu/stage.sh): onnxruntime-gpu 1.31.1 CUDA 13 cp312 without its TensorRT "
        f"provider, ModelOpt 0.47 FP16 path; {parts} parts\n" + "\n".join(lines) + "\n")
for i in range(1, parts + 1):
    open(f"{dst}/{i}/MANIFEST", "w").write(text)
open("benchmarks/gpu/staged.sha256", "w").write(text)
for i in range(1, parts + 1):
    b = sum(os.path.getsize(os.path.join(dst, str(i), x)) for x in os.listdir(os.path.join(dst, str(i))))
    print(f"   .devstage/{i}: {b / MiB:5.1f} MiB ({', '.join(sorted(x for x in os.listdir(os.path.join(dst, str(i))) if x != 'MANIFEST'))})"
          f"; with the working tree ({tree / MiB:.1f} MiB): {(b + tree) / MiB:.1f} MiB")
print(f"{parts} parts, {total / MiB:.1f} MiB in all; manifest: benchmarks/gpu/staged.sha256")
PY
git check-ignore -q .devstage/1/MANIFEST || { echo "stage.sh: .devstage/ is not ignored by git: it would travel whole" >&2; exit 1; }
echo "carry one part per device call, in order: carry=[\".devstage/K\"] (benchmarks/gpu/RUNBOOK.md)"
