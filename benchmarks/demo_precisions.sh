#!/usr/bin/env bash
# Quality of every CPU precision path of the embedded demo model against the HR references, through
# rsd-upscale itself (what users run): torch fp32 / bf16 / auto, OpenVINO bf16 / int8, ONNX Runtime int8
# (rsd-export --int8: int8 encoder + decoder, calibrated on hr_photos LR crops).
#   bash benchmarks/demo_precisions.sh [WORK=/tmp/demo_precisions]
# Writes benchmarks/results/demo-precisions/imagenet_val_sr.{json,md}; train/RESULTS.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-/tmp/demo_precisions}"
LR=../shared/data/imagenet_val_sr/lq
GT=../shared/data/imagenet_val_sr/gt
mkdir -p "$WORK"
[[ -f "$WORK/onnx/manifest.json" ]] || rsd-export --int8 -o "$WORK/onnx"
rows=()
run() {  # run NAME [rsd-upscale options...]
  local name="$1"; shift
  rm -rf "$WORK/sr_$name"
  local start=$SECONDS
  rsd-upscale "$LR" -o "$WORK/sr_$name" --threads 2 -q "$@"
  echo "== $name: $((SECONDS - start)) s"
  rows+=("$name=$WORK/sr_$name")
}
run torch-fp32 --precision fp32
run auto
run torch-bf16 --precision bf16
run ov-bf16 --onnx "$WORK/onnx" --runtime openvino --precision bf16
run ov-int8 --onnx "$WORK/onnx" --runtime openvino --precision int8
run ort-int8 --onnx "$WORK/onnx" --precision int8
python benchmarks/score_sr.py --gt "$GT" --json benchmarks/results/demo-precisions/imagenet_val_sr.json "${rows[@]}"
