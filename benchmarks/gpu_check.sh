#!/usr/bin/env bash
# Everything in rsd-deploy that needs a GPU, in one run of at most ~9 minutes on an H100/H200:
#   1. python -m pytest tests/gpu -m "gpu or trt"   (TensorRT tests skip with their reason without it)
#   2. rsd-bench --recipe benchmarks/recipes/gpu-*.yaml   (each recipe)
#   3. python benchmarks/bench_models.py --device cuda --precision fp16 --fast
# Results go to benchmarks/results/gpu-<card>/ (card from nvidia-smi, else torch), with summary.md
# listing each step's status, time and command. Each step has its own timeout and the whole run a
# budget (GPU_CHECK_BUDGET_S, default 540 s); a step that no longer fits is skipped with that reason.
# Without a CUDA GPU every step is skipped with the reason and the script exits 0.
# Usage: bash benchmarks/gpu_check.sh        (from any folder; uses the `python` on PATH)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
BUDGET="${GPU_CHECK_BUDGET_S:-540}"
START=$(date +%s)
RECIPES=(benchmarks/recipes/gpu-*.yaml)

# step name | timeout s | command
STEPS=("pytest tests/gpu|200|$PY -m pytest tests/gpu -m 'gpu or trt' -q -rs -p no:cacheprovider")
for recipe in "${RECIPES[@]}"; do
  name=$(basename "$recipe" .yaml)
  STEPS+=("rsd-bench $name|120|$PY -m rsd_deploy.cli.bench --recipe $recipe --no-progress -o \"\$OUT/$name\"")
done
STEPS+=("bench_models fp16 fast|90|$PY benchmarks/bench_models.py --device cuda --precision fp16 --fast -o \"\$OUT/bench_models\"")

gpu_reason=$("$PY" - <<'PYEOF' 2>&1
import torch
print("" if torch.cuda.is_available() else "no CUDA GPU (torch.cuda.is_available() is False)")
PYEOF
) || gpu_reason="python/torch unusable: ${gpu_reason##*$'\n'}"
if [[ -n "$gpu_reason" ]]; then
  for entry in "${STEPS[@]}"; do
    echo "skipped: ${entry%%|*}: $gpu_reason"
  done
  echo "gpu_check: nothing run ($gpu_reason); run this script on a CUDA machine"
  exit 0
fi

card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
[[ -n "$card" ]] || card=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
slug=$(echo "$card" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g; s/^nvidia-//')
OUT="${GPU_CHECK_OUT:-benchmarks/results}/gpu-$slug"
mkdir -p "$OUT"
export OUT
SUMMARY="$OUT/summary.md"
{
  echo "# GPU check on $card"
  echo
  echo "Reproduce: \`bash benchmarks/gpu_check.sh\` (started $(date -u +%Y-%m-%dT%H:%M:%SZ))."
  echo
  "$PY" - <<'PYEOF'
import importlib, torch
def version(name):
    try:
        return importlib.import_module(name).__version__
    except Exception as exc:  # noqa: BLE001 - report, do not fail
        return f"absent ({type(exc).__name__})"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.device_count()} GPU(s); "
      f"tensorrt {version('tensorrt')}; onnxruntime {version('onnxruntime')}")
PYEOF
  echo
  echo "| step | status | seconds | log |"
  echo "|---|---|---|---|"
} > "$SUMMARY"

failed=0
for entry in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$entry"
  log="$OUT/$(echo "$name" | tr ' /' '__').log"
  left=$(( BUDGET - ($(date +%s) - START) ))
  if (( left < 20 )); then
    echo "| $name | skipped: the ${BUDGET} s budget is spent | 0 | |" >> "$SUMMARY"
    echo "skipped: $name: the ${BUDGET} s budget is spent"
    continue
  fi
  (( limit > left )) && limit=$left
  echo "running: $name (timeout ${limit} s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "$cmd" > "$log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) status="ok" ;;
    124|137) status="timed out after ${limit} s"; failed=1 ;;
    *) status="failed (exit $rc)"; failed=1 ;;
  esac
  echo "| $name | $status | $dt | $(basename "$log") |" >> "$SUMMARY"
  echo "$name: $status (${dt} s, log $log)"
done
echo "gpu_check: summary in $SUMMARY"
exit $failed
