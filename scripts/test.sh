#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite, as CI runs it: install dependencies, build twice
# (release with -Werror, then AddressSanitizer + UBSan) from clean build
# directories and run every ctest test in both; then the libFuzzer
# harnesses (clang, ASan + UBSan): their corpora replayed, and a short run
# of each (KMS_FUZZ_SECONDS, default 60; tests/fuzz/run_fuzz.sh for long
# runs).
#   scripts/test.sh            everything
#   KMS_TEST_FAST=1 scripts/test.sh   release configuration only
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)

scripts/install-deps.sh

run_config() {
  local dir=$1; shift
  rm -rf "$dir"
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$JOBS"
  (cd "$dir" && ctest --output-on-failure -j"$JOBS" --timeout 600)
}

echo "=== release build (-Wall -Wextra -Werror) ==="
run_config build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo

echo "=== the demo, both variants (on the release build) ==="
out=$(mktemp -d /tmp/kms-demo-out-XXXXXX)
KMS_DEMO_BUILD=build-test KMS_DEMO_OUT=$out timeout 600 scripts/demo.sh
KMS_DEMO_BUILD=build-test KMS_DEMO_OUT=$out timeout 600 scripts/demo.sh ibake
ls "$out"/load-latency.png "$out"/load-throughput.png "$out"/bob-received.wav >/dev/null
rm -rf "$out"

if [ "${KMS_TEST_FAST:-0}" != 1 ]; then
  echo "=== AddressSanitizer + UBSan build ==="
  # LeakSanitizer stays on: kmsd's clean SIGTERM exit is checked too.
  ASAN_OPTIONS=abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_config build-test-asan -DCMAKE_BUILD_TYPE=Debug -DKMS_SANITIZE=ON

  echo "=== libFuzzer harnesses (clang, ASan + UBSan) ==="
  rm -rf build-test-fuzz
  CC=clang cmake -S . -B build-test-fuzz -DCMAKE_BUILD_TYPE=Debug \
    -DKMS_FUZZ=ON -DKMS_SANITIZE=ON -DKMS_WITH_DPDK=OFF >/dev/null
  cmake --build build-test-fuzz -j"$JOBS" --target kms_fuzz
  (cd build-test-fuzz && ctest --output-on-failure -L fuzz --timeout 600)
  tests/fuzz/run_fuzz.sh build-test-fuzz "${KMS_FUZZ_SECONDS:-60}"
fi
echo "=== all tests passed ==="
