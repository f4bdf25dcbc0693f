#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Crash loop of the second system (issue 9 item 1, "same for kms-mailbox"):
# UE-A (kms-ibake send) leaves messages in B's mailbox one after another
# while kms-mailbox is killed with SIGKILL at a random moment, CYCLES
# times, and restarted. Every message whose deposit was acknowledged
# (kms-ibake printed its msg_id) is recorded with its bytes. At the end B
# fetches everything: every acknowledged message must be delivered, byte
# for byte, from A.
# Usage: mailbox_crash_loop.sh BUILD_DIR [CYCLES] [SECONDS]  (CI: 5 x 2 s)
#        mailbox_crash_loop.sh BUILD_DIR --long               (100 x 2 s)
BIN=$1
if [ "${2:-}" = --long ]; then CYCLES=100; SECS=2; else CYCLES=${2:-5}; SECS=${3:-2}; fi
. "$(dirname "$0")/../e2e/lib.sh"
MAILBOX=$BIN/dataplane/kms-mailbox
IBAKE=$BIN/proto/client/kms-ibake
A=sip:alice@ims.example B=sip:bob@ims.example MB=mailbox.ims.example
MB_PID=""
extra_cleanup() {
  [ -z "$MB_PID" ] || kill -9 "$MB_PID" 2>/dev/null || true
  [ -z "$MB_PID" ] || wait "$MB_PID" 2>/dev/null || true
}

setup_env
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
"$KMSCTL" -c "$W/kms.conf" ibe init --out "$W/ibe.params" >/dev/null
enroll user $A a; enroll user $B b; enroll as $MB mb
start_kmsd
for n in a b mb; do
  "$IBAKE" keys --server "$SERVER" --key "$W/$n.key" --params "$W/ibe.params" \
    --out "$W/$n.ibe" >/dev/null || fail "keys for $n"
done
stop_kmsd || fail "kmsd exit"

start_mailbox() {
  : > "$W/mailbox.log"
  "$MAILBOX" --listen 127.0.0.1:0 --store "$W/mbox" --keys "$W/mb.ibe" \
    --params "$W/ibe.params" >>"$W/mailbox.log" 2>&1 &
  MB_PID=$!
  local n=200
  while [ $n -gt 0 ] && ! grep -q "ready on" "$W/mailbox.log"; do sleep 0.05; n=$((n - 1)); done
  MBOX=$(sed -n 's/.*ready on \([0-9.]*:[0-9]*\) .*/\1/p' "$W/mailbox.log" | tail -1)
  [ -n "$MBOX" ] || { echo "kms-mailbox did not start"; cat "$W/mailbox.log"; exit 1; }
}

mkdir -p "$W/sent"
i=0
t0=$(date +%s)
for c in $(seq 1 "$CYCLES"); do
  start_mailbox
  # A sends one message after another until the mailbox is killed.
  ( j=0
    while :; do
      j=$((j + 1)); f=$W/sent/c$c-m$j.bin
      head -c $((1000 + RANDOM % 20000)) /dev/urandom > "$f"
      out=$("$IBAKE" send --mailbox "$MBOX" --mailbox-id $MB --to $B \
            --keys "$W/a.ibe" --params "$W/ibe.params" --in "$f" \
            --timeout-ms 3000 2>/dev/null) || { rm -f "$f"; exit 0; }
      id=$(echo "$out" | sed -n 's/.*msg_id=\([0-9a-f]*\) .*/\1/p')
      [ -n "$id" ] && mv "$f" "$W/sent/$id.bin"
    done ) &
  sender=$!
  sleep "$(awk -v s="$SECS" -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.3 + (s - 0.3) * r / 32768 }')"
  kill -9 "$MB_PID"; wait "$MB_PID" 2>/dev/null || true; MB_PID=""
  wait "$sender" 2>/dev/null || true
done
rm -f "$W"/sent/c*-m*.bin   # sends that got no acknowledgement
acked=$(ls "$W/sent" | wc -l)

start_mailbox
mkdir -p "$W/inbox"
"$IBAKE" fetch --mailbox "$MBOX" --mailbox-id $MB --keys "$W/b.ibe" \
  --params "$W/ibe.params" --out-dir "$W/inbox" > "$W/fetch.txt" 2>&1 \
  || fail "fetch: $(tail -2 "$W/fetch.txt")"
lost=0 bad=0
for f in "$W"/sent/*.bin; do
  [ -e "$f" ] || continue
  id=$(basename "$f" .bin)
  if [ ! -e "$W/inbox/$id.msg" ]; then lost=$((lost + 1))
  elif ! cmp -s "$f" "$W/inbox/$id.msg"; then bad=$((bad + 1)); fi
done
grep -c "from=$A " "$W/fetch.txt" > "$W/from.txt" || true
[ "$acked" -gt 0 ] && [ $lost = 0 ] && [ $bad = 0 ] \
  && pass "mailbox crash loop: $CYCLES SIGKILL cycles, $acked acknowledged messages, 0 lost, 0 altered, all from $A ($(( $(date +%s) - t0 )) s)" \
  || fail "mailbox crash loop: $acked acknowledged, $lost lost, $bad altered"
kill -TERM "$MB_PID"; wait_exit "$MB_PID" 10 || fail "mailbox exit"; MB_PID=""
finish
