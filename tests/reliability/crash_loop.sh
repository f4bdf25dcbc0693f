#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Crash loop (issue 9 item 1): kmsd under mixed kms-loadgen load (DEPOSITs
# on new and re-used pairs, RETRIEVEs) is killed with SIGKILL at a random
# moment, CYCLES times, and restarted. kms-loadgen appends every DEPOSIT it
# got an answer for, and verified as A, to an ack log (key id, K, Ea). At
# the end every acknowledged key id is retrieved as B and its K compared:
# nothing acknowledged may be lost or changed.
# Usage: crash_loop.sh BUILD_DIR [CYCLES] [LOAD_SECONDS]   (CI: 5 x 2 s)
#        crash_loop.sh BUILD_DIR --long                     (100 x 3 s)
BIN=$1
if [ "${2:-}" = --long ]; then CYCLES=100; LOAD_S=3; else CYCLES=${2:-5}; LOAD_S=${3:-2}; fi
. "$(dirname "$0")/../e2e/lib.sh"
LOADGEN=$BIN/perf/loadgen/kms-loadgen

setup_env
# The long version writes ~2 GiB of records: lib.sh's 64 MiB map is small.
sed -i 's/^map_size_mb = .*/map_size_mb = 4096/' "$W/kms.conf"
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 100 --as 2 --out "$W/pop.txt" >/dev/null
ACK=$W/ack.log
t0=$(date +%s)
for c in $(seq 1 "$CYCLES"); do
  start_kmsd
  "$LOADGEN" --population "$W/pop.txt" --server "$SERVER" --mix 2:1 \
    --new-pairs 30 --pairs 32 --seed-deposits 16 --outstanding 16 \
    --duration "$LOAD_S" --warmup 0.2 --timeout-ms 300 --quiet \
    --ack-log "$ACK" > "$W/lg.$c.txt" 2>&1 &
  lg=$!
  # Somewhere in the load (the seed phase included): 0.2 s .. LOAD_S s.
  sleep "$(awk -v s="$LOAD_S" -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.2 + (s - 0.2) * r / 32768 }')"
  kill9_kmsd
  rc=0; wait_exit "$lg" $((LOAD_S + 30)) || rc=$?
  # 0: all its answers verified; 3: nothing answered (killed in the seed);
  # anything else (a mismatch or bad tag among the answers) is a failure.
  [ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "cycle $c: kms-loadgen exit $rc: $(tail -3 "$W/lg.$c.txt")"
done
acked=$(grep -c '^ack ' "$ACK" || true)
start_kmsd
"$LOADGEN" --population "$W/pop.txt" --server "$SERVER" --verify-log "$ACK" \
  --timeout-ms 1000 > "$W/verify.txt" 2>&1 && ok=1 || ok=0
cat "$W/verify.txt"
[ "$ok" = 1 ] && [ "$acked" -gt 0 ] \
  && pass "crash loop: $CYCLES SIGKILL cycles, $acked acknowledged deposits, 0 lost, 0 mismatched ($(( $(date +%s) - t0 )) s)" \
  || fail "crash loop: $acked acknowledged; $(cat "$W/verify.txt")"
stop_kmsd || fail "kmsd exit"
finish
