#!/usr/bin/env bash
# Prefill / decode speed against llama.cpp in one run (issue 14's table): for each "LABEL=FILE[=COMPETITOR_FILE]",
# lowbit bench and every competitor's llama-bench run the same tests (-p 512 -n 128, threads 1 and 2, the same
# repetitions), one after the other on the same machine; markdown rows with each engine's mean ± stddev and the
# ratio lowbit / first competitor. COMPETITOR_FILE (default FILE) lets a lowbit-format file be compared with a
# llama.cpp one (lowbit int4g128a against llama.cpp Q4_0).
#
#   LLAMA_BENCH="llama.cpp=/path/llama-bench;ik_llama.cpp=/path/llama-bench -rtr 1" \
#     scripts/speed_table.sh Q4_0=tl-Q4_0.gguf int4g128a=tl-int4.gguf=tl-Q4_0.gguf
#
# The competitors are built outside this repository (see DEVELOPERS.md: which commits, which commands); this script
# only runs them. REPS (default 3), THREADS (default 1,2), PROMPT (512), GEN (128) set the tests.
set -euo pipefail
B="${BUILD_DIR:-build}"
REPS="${REPS:-3}"
THREADS="${THREADS:-1,2}"
PROMPT="${PROMPT:-512}"
GEN="${GEN:-128}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
IFS=';' read -r -a engines <<< "${LLAMA_BENCH:-}"
names=()
for e in "${engines[@]}"; do names+=("${e%%=*}"); done
header="| file | threads | test | lowbit t/s |"
sep="|---|---:|---|---:|"
for n in "${names[@]}"; do header+=" $n t/s | lowbit / $n |"; sep+="---:|---:|"; done
echo "$header"
echo "$sep"
for spec in "$@"; do
  IFS='=' read -r label file other <<< "$spec"
  other="${other:-$file}"
  "$B/lowbit" bench -m "$file" -p "$PROMPT" -n "$GEN" -t "$THREADS" -r "$REPS" --no-roofline --json > "$tmp/lowbit.json"
  i=0
  for e in "${engines[@]}"; do
    cmd="${e#*=}"
    # shellcheck disable=SC2086
    $cmd -m "$other" -p "$PROMPT" -n "$GEN" -t "$THREADS" -r "$REPS" -o json > "$tmp/engine$i.json" 2> "$tmp/engine$i.err"
    i=$((i + 1))
  done
  python3 - "$label" "$tmp" "${#engines[@]}" <<'PY'
import json, sys
label, tmp, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
doc = json.load(open(f"{tmp}/lowbit.json"))
ours = {(r["threads"], r["test"]): r for r in doc["results"]}
ld = doc.get("load", {})  # to stderr: decode speed depends on the repacked copy being in huge pages
print(f"{label}: repacked {ld.get('repacked_bytes', 0) / 2**20:.1f} MiB in {ld.get('repack_s', 0):.2f} s, resident "
      f"{ld.get('resident_bytes', 0) / 2**20:.1f} MiB, {ld.get('huge_page_bytes', 0) / 2**20:.1f} MiB in huge pages",
      file=sys.stderr)
theirs = []
for i in range(n):
    rows = {}
    for r in json.load(open(f"{tmp}/engine{i}.json")):
        test = f"pp{r['n_prompt']}" if r["n_prompt"] > 0 else f"tg{r['n_gen']}"
        rows[(r["n_threads"], test)] = r
    theirs.append(rows)
for key in sorted(ours, key=lambda k: (k[1][:2] != "pp", k[0])):
    o = ours[key]
    line = f"| {label} | {key[0]} | {key[1]} | {o['avg_ts']:.1f} ± {o['stddev_ts']:.1f} |"
    for rows in theirs:
        t = rows.get(key)
        line += f" {t['avg_ts']:.1f} ± {t['stddev_ts']:.1f} | {o['avg_ts'] / t['avg_ts']:.2f}x |" if t else " - | - |"
    print(line)
PY
done
