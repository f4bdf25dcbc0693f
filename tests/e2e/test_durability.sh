#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Durability: ROUNDS times, kmsd answers DEPOSITs and is killed with SIGKILL
# right after the last answer, then restarts. Every key id that was ever
# answered must then be retrievable by B with the very K that A opened.
# Usage: test_durability.sh BUILD_DIR [ROUNDS] [DEPOSITS_PER_ROUND]
BIN=$1; ROUNDS=${2:-20}; PER=${3:-5}
. "$(dirname "$0")/lib.sh"
KMS_E2E_POLICY="reuse_max_deposits = 3"
setup_env

B=sip:bob@example.org MB=mailbox.example.org
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
enroll user $B b; enroll as $MB mb
for u in 1 2 3; do enroll user "sip:user$u@example.org" "u$u"; done

acked=0
for r in $(seq 1 "$ROUNDS"); do
  start_kmsd
  for d in $(seq 1 "$PER"); do
    u=$(( (r + d) % 3 + 1 ))
    n="r${r}d${d}"
    $CLIENT token --key "$W/u$u.key" --peer $B --out "$W/$n.tok"
    if $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/$n.tok" \
        --params-out "$W/$n.params" --reply-out "$W/$n.reply" >/dev/null 2>&1; then
      $CLIENT open --key "$W/u$u.key" --token "$W/$n.tok" --reply "$W/$n.reply" --out "$W/$n.ka"
      acked=$((acked + 1))
    fi
  done
  kill9_kmsd   # no chance to flush anything after the answers
done

start_kmsd
lost=0; mismatched=0; checked=0
for p in "$W"/*.params; do
  n=$(basename "$p" .params)
  checked=$((checked + 1))
  if ! $CLIENT retrieve --server "$SERVER" --key "$W/b.key" --params "$p" --out "$W/$n.kb" >/dev/null 2>&1; then
    lost=$((lost + 1)); echo "lost: $n"; continue
  fi
  [ "$(value "$W/$n.ka" k)" = "$(value "$W/$n.kb" k)" ] || { mismatched=$((mismatched + 1)); echo "mismatch: $n"; }
done
stop_kmsd || fail "final kmsd exit"
echo "rounds=$ROUNDS acknowledged=$acked checked=$checked lost=$lost mismatched=$mismatched"
[ "$acked" -eq $((ROUNDS * PER)) ] || fail "only $acked of $((ROUNDS * PER)) deposits acknowledged"
[ "$lost" -eq 0 ] && [ "$mismatched" -eq 0 ] && [ "$checked" -eq "$acked" ] \
  && pass "every acknowledged key survived SIGKILL" || fail "lost=$lost mismatched=$mismatched"
finish
