#!/usr/bin/env bash
# Quality of llama.cpp types filled three ways: plain (llama-quantize's own quantizer, byte for byte), importance-
# weighted from calibration statistics (llama.cpp's imatrix idea) and GPTQ inside the block format; markdown rows.
#   scripts/gguf_quant_table.sh MODEL EVAL_TEXT CALIB_TEXT "TYPES" [CHUNKS] [CTX] [CALIB_SAMPLES] [CALIB_LEN]
# TYPES: --format values, e.g. "q4_K q3_K gguf:Q4_K_M". Every run is `lowbit quantize` then `lowbit eval --json`
# against the source (build/lowbit; BUILD_DIR overrides). Embedding and head stay f16 for plain types (all three
# methods of a type then have the same file size); presets choose them as llama.cpp does.
set -euo pipefail
model=$1 text=$2 calib=$3 types=$4 chunks=${5:-20} ctx=${6:-128} samples=${7:-64} len=${8:-128}
bin=${BUILD_DIR:-build}/lowbit
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| format | method | linears bpw | file MiB | PPL | ΔPPL % | mean KLD | p99 KLD | same top-1 |"
echo "|---|---|---|---|---|---|---|---|---|"
base_ppl=""
for fmt in $types; do
  for method in plain imatrix gptq; do
    args=(--format "$fmt")
    case $method in
      plain) args+=(--method rtn) ;;
      imatrix) args+=(--method rtn --importance --calib "$calib" --calib-samples "$samples" --calib-len "$len") ;;
      gptq) args+=(--method gptq --calib "$calib" --calib-samples "$samples" --calib-len "$len") ;;
    esac
    "$bin" quantize -m "$model" -o "$tmp/q.gguf" "${args[@]}" --json > "$tmp/q.json"
    "$bin" eval -m "$tmp/q.gguf" --base "$model" -f "$text" -c "$ctx" --chunks "$chunks" --json > "$tmp/e.json" 2>/dev/null
    python3 - "$fmt" "$method" "$tmp/q.json" "$tmp/e.json" "$tmp/q.gguf" <<'PY'
import json, os, sys
fmt, method, qj, ej, qf = sys.argv[1:6]
q = json.load(open(qj)); e = json.load(open(ej))
lin = [t for t in q["tensors"] if t["name"].startswith("blk.") and len(t["shape"]) == 2]
n = sum(t["shape"][0] * t["shape"][1] for t in lin)
bpw = sum(t["shape"][0] * t["shape"][1] * t["bits_per_weight"] for t in lin) / n
print("| %s | %s | %.3f | %.3f | %.4f | %+.3f | %.5f | %.4f | %.2f%% |" % (
    fmt, method, bpw, os.path.getsize(qf) / 2**20, e["ppl_quant"], 100 * (e["ppl_quant"] / e["ppl_base"] - 1),
    e["kld_mean"], e["kld_p99"], 100 * e["same_top"]))
PY
  done
done
