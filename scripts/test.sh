#!/usr/bin/env bash
# Install what is missing, build, and run the whole test suite: the Release build's tests, the unit tests again
# under AddressSanitizer + UndefinedBehaviorSanitizer, then a short run of every fuzz target (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
JOBS=$(nproc)

echo "== Release build"
BUILD_DIR=build scripts/build.sh
echo "== Tests (Release)"
ctest --test-dir build --output-on-failure -j "$JOBS" --timeout 600

echo "== Sanitizer build (ASan + UBSan)"
BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo scripts/build.sh -DLOWBIT_SANITIZE=ON -DLOWBIT_BUILD_BENCH=OFF
echo "== Tests (ASan + UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS" --timeout 900
echo "== Fuzzing (libFuzzer, 12 s per target; scripts/fuzz.sh 600 for the long runs)"
scripts/fuzz.sh 12
echo "== All tests passed"
