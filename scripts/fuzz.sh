#!/usr/bin/env bash
# Build the libFuzzer targets (fuzz/fuzz_*.cpp: clang, ASan + UBSan, coverage) into build-fuzz/ and run each for
# SECONDS (default 600), seeded from ../shared and from files made here. Prints executions and coverage per target;
# exits non-zero on the first crash, leaving the input in build-fuzz/crashes/. Corpora grow in build-fuzz/corpus/.
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
shift || true
B=build-fuzz
SHARED=../shared
SEP=$'\n--lowbit-part--\n'
# FUZZ_REUSE=1: reuse the build and seeds of an earlier run (to run targets in parallel from two shells).
if [ "${FUZZ_REUSE:-0}" != 1 ]; then
scripts/setup.sh >/dev/null
CC=clang CXX=clang++ BUILD_DIR=build-fuzz BUILD_TYPE=RelWithDebInfo \
  scripts/build.sh -DLOWBIT_FUZZ=ON -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_BENCH=OFF >/dev/null
rm -rf "$B/seeds"
mkdir -p "$B/seeds"/{gguf,hf,llama2c,tokenizer,packed,imatrix} "$B/corpus" "$B/crashes"

# GGUF: a tiny synthetic model, the same quantized to 4 and 3 bits (packed tensors), the fixtures.
"$B/lowbit" synth --arch tiny --layers 1 --dtype f16 -o "$B/seeds/gguf/tiny-f16.gguf" >/dev/null
"$B/lowbit" quantize -m "$B/seeds/gguf/tiny-f16.gguf" -o "$B/seeds/gguf/tiny-int4.gguf" --bits 4 --group 32 >/dev/null
"$B/lowbit" quantize -m "$B/seeds/gguf/tiny-f16.gguf" -o "$B/seeds/gguf/tiny-int3.gguf" --bits 3 --group 64 \
  --keep output >/dev/null
# ... and into llama.cpp's block types (K types where rows allow, their fallbacks elsewhere; 32-value types).
"$B/lowbit" quantize -m "$B/seeds/gguf/tiny-f16.gguf" -o "$B/seeds/gguf/tiny-q4km.gguf" --format gguf:Q4_K_M >/dev/null
"$B/lowbit" quantize -m "$B/seeds/gguf/tiny-f16.gguf" -o "$B/seeds/gguf/tiny-q8_0.gguf" --format q8_0 >/dev/null
"$B/lowbit" quantize -m "$B/seeds/gguf/tiny-f16.gguf" -o "$B/seeds/gguf/tiny-iq4xs.gguf" --format gguf:IQ4_XS >/dev/null
for f in "$SHARED"/models/*/*.gguf; do [ -f "$f" ] && cp "$f" "$B/seeds/gguf/"; done
# Hugging Face: config.json, tokenizer.json, model.safetensors [and model.safetensors.index.json] as parts of one input.
if [ -d "$SHARED/models/TinyStories-656K" ]; then
  d="$SHARED/models/TinyStories-656K"
  { cat "$d/config.json"; printf '%s' "$SEP"; cat "$d/tokenizer.json"; printf '%s' "$SEP"; cat "$d/model.safetensors"; } \
    > "$B/seeds/hf/tinystories-656k"
  # The sharded form: the same with an index naming model.safetensors for every tensor of its header (its
  # embedding is stored as lm_head.weight, model.embed_tokens.weight being only an alias in __metadata__).
  { cat "$d/config.json"; printf '%s' "$SEP"; cat "$d/tokenizer.json"; printf '%s' "$SEP"; cat "$d/model.safetensors"
    printf '%s{"metadata": {}, "weight_map": {' "$SEP"
    head -c 65536 "$d/model.safetensors" | grep -ao '"[a-z_.0-9]*weight"' | grep -v embed_tokens | sort -u \
      | sed 's/$/: "model.safetensors"/' \
      | paste -sd, | tr -d '\n'
    printf '}}'; } > "$B/seeds/hf/tinystories-656k-index"
fi
# llama2.c: a tiny checkpoint (dim 8, hidden 16, 1 layer, 2 heads, vocab 512, seq 16; zero weights) with tok512.bin.
if [ -f "$SHARED/models/stories260K/tok512.bin" ]; then
  { printf '\x08\x00\x00\x00\x10\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x00\x02\x00\x00\x10\x00\x00\x00'
    head -c $((4824 * 4)) /dev/zero; printf '%s' "$SEP"; cat "$SHARED/models/stories260K/tok512.bin"; } \
    > "$B/seeds/llama2c/tiny"
  { head -c 4096 "$SHARED/models/stories260K/stories260K.bin"; printf '%s' "$SEP"; cat "$SHARED/models/stories260K/tok512.bin"; } \
    > "$B/seeds/llama2c/stories260k-cut"
fi
# Tokenizers: text from the evaluation data, and bytes that are not UTF-8.
for f in "$SHARED"/data/*/*.raw; do [ -f "$f" ] && head -c 2000 "$f" > "$B/seeds/tokenizer/$(basename "$f").head"; done
printf 'caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x98\x80 <s></s><unk> \xff\xfe\xc3' > "$B/seeds/tokenizer/mixed"
# Importance matrices: llama-imatrix's two formats.
for f in "$SHARED"/reference/imatrix/*.imatrix "$SHARED"/reference/imatrix/*.imatrix.gguf; do
  [ -f "$f" ] && cp "$f" "$B/seeds/imatrix/"
done
# Packed decoders: byte runs taken from the quantized seed.
for i in 0 1 2 3; do
  dd if="$B/seeds/gguf/tiny-int4.gguf" of="$B/seeds/packed/run$i" iflag=skip_bytes,count_bytes \
    skip=$((4096 + i * 997)) count=$((200 + i * 150)) status=none
done
fi

declare -A MAXLEN=([gguf]=300000 [hf]=400000 [llama2c]=40000 [tokenizer]=8192 [packed]=4096 [imatrix]=65536)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(gguf hf llama2c tokenizer packed imatrix)
printf '%-10s %12s %10s %10s %8s\n' target executions exec/s coverage features
for t in "${targets[@]}"; do
  mkdir -p "$B/corpus/$t"
  log="$B/fuzz_$t.log"
  # Committed regression inputs (crashes found and fixed) run first, then the fuzzing itself.
  regress=()
  [ -d "fuzz/regressions/$t" ] && regress=("fuzz/regressions/$t")
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$B/fuzz_$t" -max_total_time="$SECS" -max_len="${MAXLEN[$t]}" -timeout=20 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$B/crashes/$t-" "$B/corpus/$t" "$B/seeds/$t" "${regress[@]}" \
      >"$log" 2>&1; then
    echo "fuzz: $t found a failure; see $log and $B/crashes/" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  field() { grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | grep -o "$1: [0-9]*" | grep -o '[0-9]*$' || true; }
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || true)
  cov=$(field cov)
  ft=$(field ft)
  eps=$(field exec/s)
  printf '%-10s %12s %10s %10s %8s\n' "$t" "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}"
done
