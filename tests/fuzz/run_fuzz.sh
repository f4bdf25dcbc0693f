#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run the libFuzzer harnesses for a while each and report.
#
#   tests/fuzz/run_fuzz.sh [--merge] [--targets "fuzz_proto fuzz_ctl"] \
#       BUILD_DIR [SECONDS_PER_TARGET]
#
# BUILD_DIR: a clang build with -DKMS_FUZZ=ON (tests/fuzz/README.md); the
# harnesses are in BUILD_DIR/tests/fuzz (built here if missing). Each
# target runs SECONDS_PER_TARGET (default 60) on its checked-in corpus
# (tests/fuzz/corpus/<target>, read only) plus past findings
# (tests/fuzz/findings/<target>); new inputs go to a scratch directory,
# so the checked-in corpus never grows, unless --merge: then the inputs
# that add coverage are merged into it (libFuzzer -merge=1) at the end.
#
# Prints per target: executions, exec/s, coverage at start and end (new
# edges), new corpus units, findings. Findings (crash-*, leak-*,
# timeout-*, oom-* files) are copied to BUILD_DIR/fuzz-findings/<target>/;
# the exit status is 1 if there is any, 2 on a usage or setup error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
merge=0
targets="fuzz_proto fuzz_engine fuzz_ctl fuzz_ibake"
while [ $# -gt 0 ]; do
  case "$1" in
    --merge) merge=1; shift ;;
    --targets) targets="$2"; shift 2 ;;
    -h|--help) sed -n '3,19p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  sed -n '3,19p' "$0" >&2
  exit 2
fi
build="$(cd "$1" && pwd)"
secs="${2:-60}"
bindir="$build/tests/fuzz"
# A build dir that adds tests/fuzz from elsewhere keeps it under fuzz/.
[ -d "$bindir" ] || bindir="$build/fuzz"

for t in $targets; do
  if [ ! -x "$bindir/$t" ]; then
    echo "run_fuzz: building $t"
    cmake --build "$build" --target "$t" -j"$(nproc)" >/dev/null || {
      echo "run_fuzz: cannot build $t in $build (configured with CC=clang -DKMS_FUZZ=ON?)" >&2
      exit 2
    }
    [ -x "$bindir/$t" ] || bindir="$(dirname "$(find "$build" -name "$t" -type f -perm -u+x | head -1)")"
  fi
done

# Readable stacks: the symbolizer of the clang in use.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
  for s in llvm-symbolizer llvm-symbolizer-14 llvm-symbolizer-15 llvm-symbolizer-16; do
    if command -v "$s" >/dev/null; then
      export ASAN_SYMBOLIZER_PATH="$(command -v "$s")"
      break
    fi
  done
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# Per target: the longest input worth trying, and the time one input may
# take (SAKKE costs ~10-25 ms per operation; a whole IBAKE session ~0.1 s).
max_len() {
  case "$1" in
    fuzz_ctl) echo 8192 ;;
    fuzz_ibake) echo 4096 ;;
    *) echo 2048 ;;
  esac
}

work="$(mktemp -d "${TMPDIR:-/tmp}/kms-run-fuzz-XXXXXX")"
trap 'rm -rf "$work"' EXIT
total_findings=0
summary=()
start_all=$(date +%s)

for t in $targets; do
  corpus="$here/corpus/$t"
  found="$here/findings/$t"
  out="$work/$t"
  mkdir -p "$out/new" "$out/artifacts"
  dirs=("$out/new" "$corpus")
  [ -d "$found" ] && dirs+=("$found")
  echo "== $t: ${secs}s (corpus $(ls "$corpus" | wc -l) seeds)"
  set +e
  "$bindir/$t" -max_total_time="$secs" -max_len="$(max_len "$t")" \
    -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/" "${dirs[@]}" >"$out/log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log" | tail -1)
  units=$(sed -n 's/^stat::new_units_added: *//p' "$out/log" | tail -1)
  cov0=$(sed -n 's/.*INITED cov: \([0-9]*\).*/\1/p' "$out/log" | head -1)
  cov1=$(grep -oE '(cov: [0-9]+)' "$out/log" | tail -1 | sed 's/cov: //')
  nfind=$(find "$out/artifacts" -type f | wc -l)
  if [ "$nfind" -gt 0 ] || { [ "$rc" -ne 0 ] && [ -z "$execs" ]; }; then
    mkdir -p "$build/fuzz-findings/$t"
    cp "$out/log" "$build/fuzz-findings/$t/log.txt"
    find "$out/artifacts" -type f -exec cp {} "$build/fuzz-findings/$t/" \;
    [ "$nfind" -gt 0 ] || nfind=1   # died without an artifact: count it
    grep -m1 -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|fuzz: " \
      "$out/log" | sed "s/^/   /" || true
    echo "   log and inputs: $build/fuzz-findings/$t/"
  fi
  total_findings=$((total_findings + nfind))
  line=$(printf '%-11s execs %9s  exec/s %6s  cov %5s -> %-5s (+%s)  new units %4s  findings %s' \
    "$t" "${execs:-?}" "${eps:-?}" "${cov0:-?}" "${cov1:-?}" \
    "$(( ${cov1:-0} - ${cov0:-0} ))" "${units:-?}" "$nfind")
  echo "   $line"
  summary+=("$line")
  if [ "$merge" -eq 1 ] && [ -n "$(ls -A "$out/new")" ]; then
    before=$(ls "$corpus" | wc -l)
    "$bindir/$t" -merge=1 -max_len="$(max_len "$t")" -timeout=30 \
      "$corpus" "$out/new" >"$out/merge.log" 2>&1 || true
    echo "   merged: $before -> $(ls "$corpus" | wc -l) files in $corpus"
  fi
done

echo "== summary ($(( $(date +%s) - start_all )) s)"
printf '   %s\n' "${summary[@]}"
if [ "$total_findings" -gt 0 ]; then
  echo "run_fuzz: $total_findings finding(s): see $build/fuzz-findings/" >&2
  exit 1
fi
echo "run_fuzz: no findings"
