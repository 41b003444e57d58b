#!/usr/bin/env bash
# Run HERE (the CPU machine, which can reach PyPI) before the device calls of RUNBOOK.md.
#
# The device machine has no network and no onnxruntime-gpu or ModelOpt. This downloads the
# wheels the GPU benchmark needs (onnxruntime-gpu 1.31.1 for CUDA 13 / Python 3.12, and
# ModelOpt with the modules its ONNX path imports, for the FP16 ONNX), packs them in one tar,
# and splits it into parts small enough to travel with the working tree (64 MiB per call):
# .devstage/1, .devstage/2, ... (git-excluded). Each device call carries one part;
# benchmarks/h100/device.sh collects them under /tmp/devstage and installs the set into
# /tmp/site once the last part has arrived.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
part_mb=${PART_MB:-56}
dl=${DOWNLOAD_DIR:-/tmp/resnet-deploy-devwheels}
mkdir -p "$dl"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
# Versions as measured on the CPU machine; the device already has torch, onnx, numpy, scipy,
# rich, typer, ml-dtypes, sympy, colorama, tqdm, regex, pyyaml, ninja, nvidia-ml-py, safetensors.
wheels=(onnxruntime-gpu==1.31.1 nvidia-modelopt==0.47.0 onnx-graphsurgeon==0.6.1 onnxslim==0.1.98
        polygraphy==0.53.6 lief==1.0.0 pulp==3.3.2 pydantic==2.13.4 pydantic-core==2.50.4
        annotated-types==0.8.0 typing-inspection==0.4.5)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dl" "${wheels[@]}"
grep -qxF '/.devstage/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.devstage/' >> .git/info/exclude; }
rm -rf .devstage
mkdir -p .devstage
# Everything in the download folder travels: keep it to this set (the default folder is this script's own).
(cd "$dl" && shopt -s nullglob && whl=(*.whl) && tar -cf "$top/.devstage/bundle.tar" "${whl[@]}")
sha=$(sha256sum .devstage/bundle.tar | cut -d' ' -f1)
split -b "${part_mb}M" -d -a 1 .devstage/bundle.tar .devstage/part.
rm .devstage/bundle.tar
n=0
for p in .devstage/part.*; do
  n=$((n + 1))
  mkdir -p ".devstage/$n"
  mv "$p" ".devstage/$n/"
done
printf '%s %s\n' "$sha" "$n" > .devstage/BUNDLE
for i in $(seq 1 "$n"); do cp .devstage/BUNDLE ".devstage/$i/BUNDLE"; done
echo "bundle sha256 $sha in $n parts: $(du -sh .devstage | cut -f1) under .devstage/1 .. .devstage/$n"
echo "carry one part per device call: carry=[\".devstage/K\"] (see benchmarks/h100/RUNBOOK.md)"
