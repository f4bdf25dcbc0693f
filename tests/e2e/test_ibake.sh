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
enroll user "$A" a
enroll user "$B" b
enroll user "$C" c
enroll as "$MB" mb
# kmsd without a KGC serves the core system and refuses IBE requests.
start_kmsd
grep -q "no IBE master secret" "$W/kmsd.log" && pass "kmsd starts without a KGC" \
  || fail "kmsd without KGC"
"$KMSCTL" -c "$W/kms.conf" ibe init --out "$W/ibe.params" > "$W/ibe.show"
grep -q '^kgc_id = [0-9a-f]\{16\}$' "$W/ibe.show" && pass "ibe init" || fail "ibe init"
out=$("$IBAKE" keys --server "$SERVER" --key "$W/a.key" --params "$W/ibe.params" \
      --out "$W/x.ibe" --timeout-ms 5000 2>&1) && fail "keys without a loaded KGC" \
  || { echo "$out" | grep -q IBE_UNAVAILABLE && pass "IBE_UNAVAILABLE until kmsd restarts" \
       || fail "no KGC: $out"; }
if "$KMSCTL" -c "$W/kms.conf" ibe init >/dev/null 2>&1; then
  fail "a second ibe init must be refused"
else
  pass "second ibe init refused"
fi
"$KMSCTL" -c "$W/kms.conf" ibe show | cmp -s - "$W/ibe.show" \
  && pass "ibe show matches init" || fail "ibe show differs from init"
stop_kmsd || fail "kmsd exit status"
start_kmsd
grep -q "IBE master secret loaded" "$W/kmsd.log" && pass "kmsd loaded the KGC" \
  || fail "kmsd did not load the KGC"

keys() { # NAME [extra args]: X's IBE keys into $W/NAME.ibe
  local n=$1; shift
  "$IBAKE" keys --server "$SERVER" --key "$W/$n.key" --params "$W/ibe.params" \
    --out "$W/$n.ibe" --timeout-ms 5000 "$@"
}
for n in a b c mb; do
  keys $n --save-request "$W/$n.req" >/dev/null && pass "keys for $n" || fail "keys for $n"
done
# The same request again: its token is single use.
out=$("$KMS_CLIENT_BIN" send --server "$SERVER" --in "$W/a.req" 2>&1) \
  && fail "replayed IBE_KEY_REQ answered: $out" \
  || { echo "$out" | grep -q "status=REPLAY" && pass "replayed IBE_KEY_REQ refused REPLAY" \
       || fail "replay: $out"; }
# Every byte of the request flipped in turn: never keys, never a crash.
req=$(cat "$W/b.req"); n=$(( ${#req} / 2 )); ok=1
for ((i = 0; i < n; i += 7)); do
  b=$(( 16#${req:2*i:2} ^ 0x41 ))
  printf '%s%02x%s\n' "${req:0:2*i}" "$b" "${req:2*i+2}" > "$W/flip.req"
  out=$("$KMS_CLIENT_BIN" send --server "$SERVER" --in "$W/flip.req" --timeout-ms 300 2>&1) \
    && { ok=0; echo "flip $i answered: $out"; }
done
[ $ok = 1 ] && kmsd_alive && pass "flipped IBE_KEY_REQs refused or dropped" || fail "flipped requests"

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
"$KMSCTL" -c "$W/kms.conf" revoke --id "$C" >/dev/null
out=$(keys c --out "$W/x.ibe" 2>&1) && fail "revoked party issued" \
  || { echo "$out" | grep -q PARTY_REVOKED && pass "revoked party refused" \
       || fail "revoked: $out"; }
"$KMSCTL" -c "$W/kms.conf" audit > "$W/audit.txt"
[ "$(grep -c "ibe-issue actor=" "$W/audit.txt")" -ge 5 ] \
  && pass "issues audited" || { fail "ibe-issue audit records"; cat "$W/audit.txt"; }
"$KMSCTL" -c "$W/kms.conf" audit verify >/dev/null && pass "audit chain verifies" \
  || fail "audit verify"

# ---- the mailbox
# The shipped example with this test's paths: the config file is tested too.
sed -e "s|^listen = .*|listen = 127.0.0.1:0|" -e "s|^store = .*|store = $W/mbox|" \
    -e "s|^keys =.*|keys = $W/mb.ibe|" -e "s|^params =.*|params = $W/ibe.params|" \
    "$(dirname "$0")/../../config/kms-mailbox.conf.example" > "$W/mailbox.conf"
printf '[mailbox]\nlisten = 127.0.0.1:0\nbogus = 1\n' > "$W/bad.conf"
out=$("$MAILBOX" --config "$W/bad.conf" 2>&1) && fail "unknown key accepted" \
  || { echo "$out" | grep -q "bad.conf:3: unknown key 'bogus'" \
       && pass "config errors name file:line" || fail "bad config: $out"; }
"$MAILBOX" --config "$W/mailbox.conf" --check-config | grep -q "configuration ok" \
  && pass "kms-mailbox --check-config" || fail "kms-mailbox --check-config"
# One file for both daemons: kmsd's configuration plus the [mailbox]
# section; each checks its own sections and leaves the other's.
cat "$W/kms.conf" "$W/mailbox.conf" > "$W/both.conf"
"$KMSD" -c "$W/both.conf" --check-config > /dev/null 2>&1 \
  && "$MAILBOX" --config "$W/both.conf" --check-config | grep -q "configuration ok" \
  && pass "one file for kmsd and kms-mailbox (both --check-config)" \
  || fail "shared file: kmsd: $("$KMSD" -c "$W/both.conf" --check-config 2>&1 | tail -1)"
printf '[mailbx]\nlisten = 127.0.0.1:0\n' >> "$W/both.conf"
line=$(wc -l < "$W/both.conf")
out=$("$MAILBOX" --config "$W/both.conf" --check-config 2>&1) && fail "mailbox: [mailbx] accepted" \
  || { echo "$out" | grep -q "both.conf:$line: unknown section \[mailbx\]" \
       && pass "kms-mailbox: a misspelt section is refused at file:line" || fail "mailbox: $out"; }
out=$("$KMSD" -c "$W/both.conf" --check-config 2>&1) && fail "kmsd: [mailbx] accepted" \
  || { echo "$out" | grep -q "both.conf:$line: unknown key 'listen' in section \[mailbx\]" \
       && pass "kmsd: a misspelt section is refused at file:line" || fail "kmsd: $out"; }
start_mailbox() {
  : > "$W/mailbox.log"
  "$MAILBOX" --config "$W/mailbox.conf" >>"$W/mailbox.log" 2>&1 &
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

# Hostile bytes at the mailbox: an oversized length, a short frame, noise,
# a peer that connects and says nothing: each connection is refused or
# closed, the mailbox keeps serving.
mb_host=${MBOX%:*}; mb_port=${MBOX##*:}
# (a 1 MiB length before any authentication is refused before a byte of
# body is read or a buffer is made)
for junk in '\xff\xff\xff\xff\x01\x11' '\x00\x10\x00\x00\x01\x11' '\x00\x00\x00\x01\x01' \
            '\x00\x00\x00\x08\x01\x11abcdef' "$(head -c 300 /dev/urandom | tr -d '\000')"; do
  timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"; printf "%b" "$3" >&3; cat <&3 >/dev/null 2>&1' \
    junk "$mb_host" "$mb_port" "$junk" || true
done
timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"; sleep 0.2' idle "$mb_host" "$mb_port" || true
kill -0 "$MB_PID" && fetch b "$W/inbox4" --keep | grep -q "fetched: 0 message" \
  && pass "mailbox survives hostile input" || fail "mailbox after hostile input"
kill -TERM "$MB_PID"; wait_exit "$MB_PID" 10 || fail "mailbox exit status"; MB_PID=""
grep -q "kms-mailbox: stats: refused MALFORMED=" "$W/mailbox.log" \
  && pass "hostile frames counted MALFORMED" || fail "MALFORMED not counted"
grep -q "kms-mailbox: stats: .*deposits=1 " "$W/mailbox.log" && pass "mailbox counters" \
  || { fail "mailbox counters"; cat "$W/mailbox.log"; }
stop_kmsd || fail "kmsd exit status"
[ "$(stat_value ibe_keys_issued)" -ge 5 ] 2>/dev/null && pass "kmsd counted issues" \
  || fail "ibe_keys_issued"
finish
