#!/usr/bin/env bash
# Quality table: RTN vs GPTQ at 2/3/4/8 bits, groups 32/64/128, on one model, as markdown rows.
#   scripts/quant_table.sh MODEL EVAL_TEXT CALIB_TEXT [CHUNKS] [CALIB_SAMPLES] [CALIB_LEN]
# Every run is `lowbit quantize` then `lowbit eval` against the source model (build/lowbit; BUILD_DIR overrides).
set -euo pipefail
model=$1 text=$2 calib=$3 chunks=${4:-50} samples=${5:-64} len=${6:-256}
bin=${BUILD_DIR:-build}/lowbit
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| bits | group | method | bpw (linears) | PPL | ΔPPL | mean KLD | p99 KLD | RMS Δp | same top-1 |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for bits in 2 3 4 8; do
  for group in 32 64 128; do
    for method in rtn gptq; do
      "$bin" quantize -m "$model" -o "$tmp/q.gguf" --method "$method" --bits "$bits" --group "$group" \
        --calib "$calib" --calib-samples "$samples" --calib-len "$len" > "$tmp/quant.txt"
      # bits per weight over the packed (quantized) tensors, weighted by their sizes; a row line reads
      # "name [d0, d1] format bpw ..."
      bpw=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^int[0-9]+g[0-9]+[as]$/) {
                     shape = $0; sub(/^[^[]*\[/, "", shape); sub(/\].*$/, "", shape); split(shape, d, ", ")
                     n = d[1] * d[2]; w += n; s += n * $(i + 1) } }
                 END { if (w) printf "%.3f", s / w }' "$tmp/quant.txt")
      "$bin" eval -m "$tmp/q.gguf" --base "$model" -f "$text" --chunks "$chunks" > "$tmp/eval.txt" 2>/dev/null
      awk -v b="$bits" -v g="$group" -v m="$method" -v bpw="$bpw" '
        /^Mean PPL\(Q\) / { ppl = $4 }
        /^Mean PPL\(Q\)-PPL\(base\)/ { d = $4 }
        /^Mean    KLD/ { kld = $3 }
        /^99.0%   KLD/ { p99 = $3 }
        /^RMS/ { rms = $4 }
        /^Same top p/ { top = $4 }
        END { printf "| %s | %s | %s | %s | %.4f | %+.4f | %.5f | %.4f | %.3f%% | %.2f%% |\n", b, g, m, bpw, ppl, d, kld, p99, rms, top }
      ' "$tmp/eval.txt"
    done
  done
done
