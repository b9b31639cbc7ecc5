#!/usr/bin/env bash
# Runs the whole test suite: a release build under ctest, then the same
# tests again built with AddressSanitizer + UndefinedBehaviorSanitizer.
# A test that cannot run (data, a tool or a CPU feature absent) is reported
# skipped; with CI=true a skipped test fails the run, so nothing is silently
# left out in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run_ctest() { # ctest arguments
  ctest --output-on-failure -j2 "$@" | tee "$log"
  if [ "${CI:-}" = true ] && grep -q '(Skipped)' "$log"; then
    echo "FAIL: CI=true and ctest skipped: $(grep '(Skipped)' "$log" | awk '{print $3}' | tr '\n' ' ')"
    exit 1
  fi
}
scripts/install-deps.sh --test
python3 scripts/check_layers.py --quiet # include edges between folders run one way (docs/ARCHITECTURE.md)
scripts/build.sh build
run_ctest --test-dir build
scripts/build.sh build-asan -DKF_SANITIZE=ON
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_ctest --test-dir build-asan -LE slow
