#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# MIKEY-IBAKE deferred delivery end to end (TR 33.828 7.6.2.5), real
# processes on loopback: kmsd as the key generation centre (real SoftHSM2
# token, real LMDB), kms-mailbox with its own LMDB store, kms-ibake as
# UE-A and UE-B.
#   1. kmsctl ibe init; parties enrolled; each fetches its IBE keys from
#      kmsd (IBE_KEY_REQ), audited; refusals: unknown party, wrong key,
#      replayed request, a period the KGC does not issue.
#   2. A leaves a 1.5 MB message; the mailbox is killed with SIGKILL right
#      after acknowledging it; after a restart B fetches the exact bytes.
#   3. The mailbox's store and the frames it received never contain aP,
#      the message key or the plaintext.
#   4. A claiming another identity is refused; C cannot fetch as B.
# Usage: test_ibake.sh BUILD_DIR
BIN=$1
. "$(dirname "$0")/lib.sh"
MAILBOX=$BIN/dataplane/kms-mailbox
IBAKE=$BIN/proto/client/kms-ibake
MB_PID=""

extra_cleanup() {
  [ -z "$MB_PID" ] || kill -9 "$MB_PID" 2>/dev/null || true
  [ -z "$MB_PID" ] || wait "$MB_PID" 2>/dev/null || true
}

A=sip:alice@ims.example
B=sip:bob@ims.example
C=sip:carol@ims.example
MB=mailbox.ims.example

setup_env
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
"$KMSCTL" -c "$W/kms.conf" ibe init --out "$W/ibe.params" > "$W/ibe.show"
grep -q '^kgc_id = [0-9a-f]\{16\}$' "$W/ibe.show" && pass "ibe init" || fail "ibe init"
if "$KMSCTL" -c "$W/kms.conf" ibe init >/dev/null 2>&1; then
  fail "a second ibe init must be refused"
else
  pass "second ibe init refused"
fi
"$KMSCTL" -c "$W/kms.conf" ibe show | cmp -s - "$W/ibe.show" \
  && pass "ibe show matches init" || fail "ibe show differs from init"
enroll user "$A" a
enroll user "$B" b
enroll user "$C" c
enroll as "$MB" mb
start_kmsd
grep -q "IBE master secret loaded" "$W/kmsd.log" && pass "kmsd loaded the KGC" \
  || fail "kmsd did not load the KGC"

keys() { # NAME [extra args]: X's IBE keys into $W/NAME.ibe
  local n=$1; shift
  "$IBAKE" keys --server "$SERVER" --key "$W/$n.key" --params "$W/ibe.params" \
    --out "$W/$n.ibe" --timeout-ms 5000 "$@"
}
for n in a b c mb; do
  keys $n >/dev/null && pass "keys for $n" || fail "keys for $n"
done
grep -q "^period = $(date -u +%Y-%m)$" "$W/a.ibe" && pass "keys carry this month" \
  || fail "period in a.ibe"
[ "$(stat -c %a "$W/a.ibe")" = 600 ] && pass "key file mode 0600" || fail "a.ibe mode"
# Next month's keys may be fetched ahead; other periods are refused.
next=$(date -u -d "$(date -u +%Y-%m-01) +1 month" +%Y-%m)
keys a --period "$next" --out "$W/a-next.ibe" >/dev/null \
  && pass "next period issued" || fail "next period"
out=$(keys a --period 2001-01 --out "$W/x.ibe" 2>&1) && fail "old period issued" \
  || { echo "$out" | grep -q BAD_PERIOD && pass "old period refused BAD_PERIOD" \
       || fail "old period: $out"; }
# A key file of another party under a claimed name: AUTH_FAILED.
sed "s/^id = .*/id = $A/" "$W/c.key" > "$W/fake.key"; chmod 600 "$W/fake.key"
out=$(keys fake --out "$W/x.ibe" 2>&1) && fail "wrong key issued" \
  || { echo "$out" | grep -q AUTH_FAILED && pass "wrong key refused AUTH_FAILED" \
       || fail "wrong key: $out"; }
sed "s/^id = .*/id = sip:nobody@ims.example/" "$W/c.key" > "$W/nobody.key"; chmod 600 "$W/nobody.key"
out=$(keys nobody --out "$W/x.ibe" 2>&1) && fail "unknown party issued" \
  || { echo "$out" | grep -q UNKNOWN_PARTY && pass "unknown party refused" \
       || fail "unknown party: $out"; }
"$KMSCTL" -c "$W/kms.conf" audit > "$W/audit.txt"
[ "$(grep -c "ibe-issue actor=" "$W/audit.txt")" -ge 5 ] \
  && pass "issues audited" || { fail "ibe-issue audit records"; cat "$W/audit.txt"; }
"$KMSCTL" -c "$W/kms.conf" audit verify >/dev/null && pass "audit chain verifies" \
  || fail "audit verify"

# ---- the mailbox
start_mailbox() {
  : > "$W/mailbox.log"
  "$MAILBOX" --listen 127.0.0.1:0 --store "$W/mbox" --keys "$W/mb.ibe" \
    --params "$W/ibe.params" >>"$W/mailbox.log" 2>&1 &
  MB_PID=$!
  local n=200
  while [ $n -gt 0 ] && ! grep -q "ready on" "$W/mailbox.log"; do
    kill -0 "$MB_PID" 2>/dev/null || break
    sleep 0.05; n=$((n - 1))
  done
  MBOX=$(sed -n 's/.*ready on \([0-9.]*:[0-9]*\) .*/\1/p' "$W/mailbox.log" | tail -1)
  [ -n "$MBOX" ] || { echo "kms-mailbox did not start:"; cat "$W/mailbox.log"; exit 1; }
}
start_mailbox
send() { # KEYS FILE [extra]
  local k=$1 f=$2; shift 2
  "$IBAKE" send --mailbox "$MBOX" --mailbox-id "$MB" --to "$B" \
    --keys "$W/$k.ibe" --params "$W/ibe.params" --in "$f" "$@"
}
fetch() { # KEYS DIR [extra]
  local k=$1 d=$2; shift 2
  mkdir -p "$d"
  "$IBAKE" fetch --mailbox "$MBOX" --mailbox-id "$MB" --keys "$W/$k.ibe" \
    --params "$W/ibe.params" --out-dir "$d" "$@"
}

head -c 1500000 /dev/urandom > "$W/voice.bin"
KMS_IBAKE_SECRETS_OUT=$W/secrets.txt send a "$W/voice.bin" > "$W/send.out" \
  && pass "A deposited 1.5 MB" || fail "deposit: $(cat "$W/send.out")"
# Acknowledged means durable: SIGKILL now, restart, then B fetches.
kill -9 "$MB_PID"; wait "$MB_PID" 2>/dev/null || true; MB_PID=""
start_mailbox
fetch b "$W/inbox" > "$W/fetch.out" && pass "B fetched" || fail "fetch: $(cat "$W/fetch.out")"
got=$(ls "$W/inbox"/*.msg 2>/dev/null | head -1)
[ -n "$got" ] && cmp -s "$got" "$W/voice.bin" \
  && pass "B's bytes are A's bytes (after SIGKILL + restart)" || fail "message bytes differ"
grep -q "from=$A " "$W/fetch.out" && pass "sender verified as A" || fail "sender"
fetch b "$W/inbox2" | grep -q "fetched: 0 message" && pass "deleted after delivery" \
  || fail "message still there"

# ---- what the mailbox holds: never aP, the message key, the plaintext
ap=$(value "$W/secrets.txt" ap); mk=$(value "$W/secrets.txt" mk)
[ ${#ap} -eq 130 ] && [ ${#mk} -eq 64 ] || fail "secrets file"
KMS_IBAKE_SECRETS_OUT=$W/secrets2.txt send a "$W/voice.bin" >/dev/null || fail "second deposit"
ap2=$(value "$W/secrets2.txt" ap); mk2=$(value "$W/secrets2.txt" mk)
hexdump_store() { od -An -v -tx1 "$W/mbox/data.mdb" | tr -d ' \n'; }
hexdump_store > "$W/store.hex"
for s in "${ap2:2:64}" "$mk2" "$(od -An -v -tx1 -j 100000 -N 48 "$W/voice.bin" | tr -d ' \n')"; do
  grep -q "$s" "$W/store.hex" && fail "mailbox store holds a secret or plaintext"
done
grep -q "$(printf '%s' "$A" | od -An -tx1 | tr -d ' \n')" "$W/store.hex" \
  && pass "store scan works (sender id found) and holds no aP, key or plaintext" \
  || fail "store scan: sender id not found"

# ---- refusals
out=$(send c "$W/voice.bin" --as "$A" 2>&1) && fail "A spoofed by C accepted" \
  || pass "C claiming A refused: ${out##*: }"
out=$(fetch c "$W/x" --keys "$W/c.ibe" 2>&1; true)
sed "s/^id = .*/id = $B/" "$W/c.ibe" > "$W/cb.ibe"; chmod 600 "$W/cb.ibe"
out=$(fetch cb "$W/x" 2>&1) && fail "C fetched B's mail" \
  || pass "C claiming B refused"
fetch b "$W/inbox3" | grep -q "fetched: 1 message" && pass "B still gets its message" \
  || fail "B's second message"

kill -TERM "$MB_PID"; wait_exit "$MB_PID" 10 || fail "mailbox exit status"; MB_PID=""
grep -q "kms-mailbox: stats: .*deposits=1 " "$W/mailbox.log" && pass "mailbox counters" \
  || { fail "mailbox counters"; cat "$W/mailbox.log"; }
stop_kmsd || fail "kmsd exit status"
[ "$(stat_value ibe_keys_issued)" -ge 5 ] 2>/dev/null && pass "kmsd counted issues" \
  || fail "ibe_keys_issued"
finish
