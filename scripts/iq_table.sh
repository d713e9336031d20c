#!/usr/bin/env bash
# llama.cpp's own files against lowbit's of the same preset (issue 15's quality table): for each "PRESET=REF_FILE",
# lowbit quantizes MODEL with --format gguf:PRESET and METHOD (default rotate+gptaq) on calibration text, then
# `lowbit eval` judges both files against MODEL on the same windows; markdown rows with whole-file bytes, mean KLD
# ± stderr, same top-1 and the KLD ratio lowbit / llama.cpp. A "budget:BYTES[:FAMILY]=REF_FILE" entry quantizes to a
# size budget instead (--target-size BYTES --format FAMILY, default gguf: llama.cpp types only) and compares with
# REF_FILE.
#   scripts/iq_table.sh MODEL EVAL_TEXT CALIB_TEXT "IQ2_XS=ref/synth256-imat-IQ2_XS.gguf ..." [CHUNKS] [CTX] [SAMPLES] [LEN]
set -euo pipefail
model=$1 text=$2 calib=$3 specs=$4 chunks=${5:-20} ctx=${6:-128} samples=${7:-64} len=${8:-128}
bin=${BUILD_DIR:-build}/lowbit
method=${METHOD:-rotate+gptaq}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
judge() {  # FILE -> "bytes kld stderr top1"
  "$bin" eval -m "$1" --base "$model" -f "$text" -c "$ctx" --chunks "$chunks" --json 2>/dev/null > "$tmp/e.json"
  python3 - "$1" "$tmp/e.json" <<'PY'
import json, os, sys
e = json.load(open(sys.argv[2]))
def get(d, key):
    if key in d: return d[key]
    for v in d.values():
        if isinstance(v, dict):
            r = get(v, key)
            if r is not None: return r
    return None
print(os.path.getsize(sys.argv[1]), get(e, "kld_mean"), get(e, "kld_mean_stderr") or get(e, "kld_stderr") or 0,
      get(e, "same_top"))
PY
}
echo "| lowbit file | method | bytes | mean KLD ± stderr | same top-1 | llama.cpp file | bytes | mean KLD ± stderr | same top-1 | KLD ratio |"
echo "|---|---|---:|---|---:|---|---:|---|---:|---:|"
for spec in $specs; do
  what=${spec%%=*} ref=${spec#*=}
  if [[ $what == budget:* ]]; then
    IFS=: read -r _ bytes family <<< "$what"
    family=${family:-gguf}
    args=(--target-size "$bytes" --format "$family")
    label="--target-size $bytes --format $family"
  else
    args=(--format "gguf:$what")
    label="gguf:$what"
  fi
  "$bin" quantize -m "$model" -o "$tmp/q.gguf" "${args[@]}" --method "$method" --importance --calib "$calib" \
    --calib-samples "$samples" --calib-len "$len" > "$tmp/q.log" 2>&1 || { tail -3 "$tmp/q.log" >&2; exit 1; }
  read -r mb mk ms mt <<< "$(judge "$tmp/q.gguf")"
  read -r rb rk rs rt <<< "$(judge "$ref")"
  python3 - "$label" "$method" "$mb" "$mk" "$ms" "$mt" "$(basename "$ref")" "$rb" "$rk" "$rs" "$rt" <<'PY'
import sys
l, m, mb, mk, ms, mt, r, rb, rk, rs, rt = sys.argv[1:12]
f = float
print(f"| {l} | {m} | {mb} | {f(mk):.4f} ± {f(ms):.4f} | {100*f(mt):.1f}% | {r} | {rb} | {f(rk):.4f} ± {f(rs):.4f} | "
      f"{100*f(rt):.1f}% | {f(mk)/f(rk):.2f} |")
PY
done
