#!/usr/bin/env bash
# Size-budget plans against llama.cpp's files (issue 13's table): for each "LABEL=BYTES=KLD" (a llama.cpp file's
# size and its KLD), `lowbit quantize --target-size BYTES` with calibration, then `lowbit eval --json` against the
# source; markdown rows with the file's bytes, the fill of the budget, lowbit's mean KLD ± stderr, llama.cpp's KLD,
# the ratio, the plan's predicted and probe-measured KLD, and the measurement pass's and the re-plan's seconds.
#   scripts/budget_table.sh MODEL EVAL_TEXT CALIB_TEXT "LABEL=BYTES=KLD ..." [CHUNKS] [CTX] [CALIB_SAMPLES] [CALIB_LEN]
# EXTRA="--format lowbit ..." adds quantize options. build/lowbit (BUILD_DIR overrides); KEEP_DIR=dir keeps the
# files. The measurement cache goes to a temporary LOWBIT_CACHE_DIR: the first size measures, the others re-plan.
set -euo pipefail
model=$1 text=$2 calib=$3 targets=$4 chunks=${5:-50} ctx=${6:-512} samples=${7:-100} len=${8:-512}
bin=${BUILD_DIR:-build}/lowbit
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export LOWBIT_CACHE_DIR=$tmp/cache
echo "| llama.cpp file | budget bytes | lowbit bytes (fill) | lowbit KLD ± stderr | same top-1 | llama.cpp KLD | ratio | predicted / probe KLD | measure s / plan s |"
echo "|---|---|---|---|---|---|---|---|---|"
for t in $targets; do
  label=${t%%=*} rest=${t#*=}
  bytes=${rest%%=*} ref=${rest#*=}
  out="$tmp/q.gguf"
  [ -z "${KEEP_DIR:-}" ] || out="$KEEP_DIR/$(basename "$model" .gguf)-budget-$label.gguf"
  # shellcheck disable=SC2086
  "$bin" quantize -m "$model" -o "$out" --target-size "$bytes" --calib "$calib" --calib-samples "$samples" \
    --calib-len "$len" ${EXTRA:-} --json > "$tmp/q.json"
  "$bin" eval -m "$out" --base "$model" -f "$text" -c "$ctx" --chunks "$chunks" --json > "$tmp/e.json" 2>/dev/null
  python3 - "$label" "$bytes" "$ref" "$tmp/q.json" "$tmp/e.json" "$out" <<'PY'
import json, os, sys
label, budget, ref, qj, ej, qf = sys.argv[1:7]
q = json.load(open(qj)); e = json.load(open(ej)); b = q["budget"]
size = os.path.getsize(qf); budget = int(budget); ref = float(ref)
print("| %s | %d | %d (%.2f%%) | %.6f ± %.6f | %.2f%% | %.6f | %.2f | %.6f / %.6f | %.1f / %.2f%s |" % (
    label, budget, size, 100.0 * size / budget, e["kld_mean"], e["kld_stderr"], 100 * e["same_top"], ref,
    e["kld_mean"] / ref, b["predicted_kld"], b["measured_kld"], b["measure_seconds"], b["plan_seconds"],
    " (cached)" if b["cache_hit"] else ""))
PY
done
