#!/usr/bin/env bash
# Install what is missing, build, and run the main job on the default model (TinyStories-656K from ../shared):
# the model summary, a generated story and its perplexity on WikiText-2.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=build scripts/build.sh
SHARED=${LOWBIT_SHARED:-../shared}
MODEL=${1:-$SHARED/models/TinyStories-656K}
if [ ! -e "$MODEL" ]; then
  echo "demo: $MODEL not found (expected ../shared beside the checkout, or pass a model path)" >&2
  exit 1
fi
echo "== lowbit inspect $MODEL"
build/lowbit inspect "$MODEL"
echo
echo "== lowbit run (greedy story from BOS)"
build/lowbit run -m "$MODEL" -n 120 --temp 0
echo
echo "== lowbit perplexity (WikiText-2 test, ctx 512, 50 chunks)"
TEXT=$SHARED/data/wikitext-2-raw/wiki.test.raw.656K-charset
build/lowbit perplexity -m "$MODEL" -f "$TEXT" --ctx 512 --chunks 50
echo "(llama.cpp on the GGUF conversion of this model: PPL = 466.8581 +/- 13.55465, ../shared/reference/perplexity.md)"
echo
echo "== lowbit quantize into llama.cpp's Q4_K_M mixture with GPTQ, then eval against the original"
GGUF=$SHARED/models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf
OUT=$(mktemp -d)/TinyStories-656K-Q4_K_M.gguf
build/lowbit quantize -m "$GGUF" -o "$OUT" --format gguf:Q4_K_M --method gptq \
  --calib "$SHARED/data/wikitext-2/valid.txt" --calib-samples 32 --calib-len 256
build/lowbit eval -m "$OUT" --base "$GGUF" -f "$TEXT" --ctx 512 --chunks 20
rm -rf "$(dirname "$OUT")"
