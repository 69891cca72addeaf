#!/usr/bin/env bash
# Rebuild the embedded demo model from scratch with rsd-train, on the CPU (train/RESULTS.md has the
# measured time), then package it into rsd_deploy/assets/ and evaluate it:
#   bash train/scripts/rebuild_demo_model.sh [RUN_DIR=runs/demo] [extra key=value overrides for every stage]
# Environment: ASSETS=DIR packages somewhere else than rsd_deploy/assets/; PACKAGE=0 skips packaging.
# A stage whose export exists is skipped; an interrupted stage resumes from its last checkpoint.
# CI runs the same chain with tiny overrides (tests/train/test_demo_chain.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN="${1:-runs/demo}"
shift || true
stage() {  # stage NAME EXPORT [overrides...]
  local name="$1" export="$2"; shift 2
  if [[ -f "$RUN/$name/$export" ]]; then
    echo "== $name: $RUN/$name/$export exists, skipped"; return
  fi
  local resume=()
  [[ -d "$RUN/$name/checkpoints" ]] && resume=(--resume "$RUN/$name")
  echo "== $name ($(date -u +%H:%M:%S))"
  local start=$SECONDS
  rsd-train --config "train/configs/demo_$name.yaml" -o "$RUN/$name" ${resume[@]+"${resume[@]}"} "$@"
  echo "== $name took $((SECONDS - start)) s"
}
# the hr_photos validation crops the VQ stage monitors (train/configs/demo_vq.yaml val.gt_dir)
[[ -d runs/hr_photos_val/gt ]] || python train/scripts/make_val_crops.py --hr ../shared/data/hr_photos \
  --split train/configs/hr_photos_split.json -o runs/hr_photos_val
stage vq vq.safetensors "$@"
stage teacher teacher_ema.safetensors vq="$RUN/vq/vq.safetensors" "$@"
stage rsd rsd_ema.safetensors vq="$RUN/vq/vq.safetensors" teacher="$RUN/teacher/teacher_ema.safetensors" "$@"
if [[ "${PACKAGE:-1}" == 1 ]]; then
  python train/scripts/build_default_model.py --run "$RUN" ${ASSETS:+--assets "$ASSETS"}
fi
