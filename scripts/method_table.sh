#!/usr/bin/env bash
# Quality of quantization methods at equal formats (issue 12's table): for each --format and each --method, one
# `lowbit quantize` with calibration, then `lowbit eval --json` against the source; markdown rows with the file
# size (a rotated model's untied head counted), mean KLD ± its standard error, top-1 agreement and PPL.
#   scripts/method_table.sh MODEL EVAL_TEXT CALIB_TEXT "FORMATS" "METHODS" [CHUNKS] [CTX] [CALIB_SAMPLES] [CALIB_LEN]
# METHODS: --method values ("rtn gptq gptaq awq+rtn awq+gptq rotate+gptq"); "default" runs without --method (the
# measured default for the format). build/lowbit (BUILD_DIR overrides); KEEP_DIR=dir keeps the quantized files.
set -euo pipefail
model=$1 text=$2 calib=$3 formats=$4 methods=$5 chunks=${6:-50} ctx=${7:-512} samples=${8:-100} len=${9:-512}
bin=${BUILD_DIR:-build}/lowbit
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| format | method | file MiB | mean KLD ± stderr | same top-1 | PPL (base) |"
echo "|---|---|---|---|---|---|"
for fmt in $formats; do
  for method in $methods; do
    args=(--format "$fmt" --calib "$calib" --calib-samples "$samples" --calib-len "$len")
    [ "$method" = default ] || args+=(--method "$method")
    out="$tmp/q.gguf"
    [ -z "${KEEP_DIR:-}" ] || out="$KEEP_DIR/$(basename "$model" .gguf)-${fmt//:/-}-${method}.gguf"
    "$bin" quantize -m "$model" -o "$out" "${args[@]}" --json > "$tmp/q.json"
    "$bin" eval -m "$out" --base "$model" -f "$text" -c "$ctx" --chunks "$chunks" --json > "$tmp/e.json" 2>/dev/null
    python3 - "$fmt" "$method" "$tmp/q.json" "$tmp/e.json" "$out" <<'PY'
import json, os, sys
fmt, method, qj, ej, qf = sys.argv[1:6]
q = json.load(open(qj)); e = json.load(open(ej))
ran = q["method"] if method != "default" else "default: " + q["method"]
print("| %s | %s | %.4f | %.5f ± %.5f | %.2f%% | %.4f (%.4f) |" % (
    fmt, ran, os.path.getsize(qf) / 2**20, e["kld_mean"], e["kld_stderr"], 100 * e["same_top"],
    e["ppl_quant"], e["ppl_base"]))
PY
  done
done
