#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Operator changes while kmsd serves (issue 7), real SoftHSM2 and LMDB:
#   1. a store with parties, a deposit, the IBE master seed;
#   2. kms-loadgen drives mixed DEPOSIT/RETRIEVE load (new and re-used
#      pairs, every key verified) while the operator swaps the reuse policy
#      twice (each visibly applied to the next deposits), rotates the key of
#      a party the load is using, and rotates the KEK (every blob re-wrapped
#      through kmsd); the load counts 0 failed, late or mismatched requests;
#   3. afterwards one KEK remains, under the original label; the deposit
#      made before the rotation still gives its K; kmsd restarts and loads
#      the re-wrapped IBE seed; the audit chain holds start and done;
#   4. an offline rotation (kmsd stopped) does the same.
# Usage: test_live_ops.sh BUILD_DIR [LOAD_SECONDS]
BIN=$1
LOAD_S=${2:-8}
. "$(dirname "$0")/lib.sh"
LOADGEN=$BIN/perf/loadgen/kms-loadgen
A=sip:alice@example.org
B=sip:bob@example.org
MB=mailbox.example.org

setup_env
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
"$KMSCTL" -c "$W/kms.conf" ibe init --out "$W/ibe.params" >/dev/null
enroll user $A a; enroll user $B b; enroll as $MB mb
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 200 --as 2 --out "$W/pop.txt" >/dev/null
start_kmsd

deposit_before() {
  $CLIENT token --key "$W/a.key" --peer $B --out "$W/ea.tok" &&
  $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea.tok" \
    --params-out "$W/params.txt" --reply-out "$W/reply.txt" >/dev/null &&
  $CLIENT open --key "$W/a.key" --token "$W/ea.tok" --reply "$W/reply.txt" \
    --out "$W/ka.txt"
}
retrieve_k() { # OUT: B's K of the deposit made before the rotations
  $CLIENT retrieve --server "$SERVER" --key "$W/b.key" --params "$W/params.txt" \
    --out "$W/$1" >/dev/null && value "$W/$1" k
}
deposit_before || fail "deposit before the rotation"
KA=$(value "$W/ka.txt" k)

# ---- live rotation under load
# A request counts as failed if it is refused, lost, or answered later
# than 5 s (the rotation's write steps delay commits by a few ms each; an
# AddressSanitizer build is several times slower).
"$LOADGEN" --population "$W/pop.txt" --server "$SERVER" --mix 1:1 \
  --new-pairs 30 --pairs 64 --outstanding 16 --duration "$LOAD_S" --warmup 1 \
  --timeout-ms 5000 --quiet --json "$W/load.json" > "$W/load.txt" 2>&1 &
LG=$!
sleep 1.5
# Policy swaps under load: never re-use (each deposit a new K), then re-use
# again (the last K kept); each shows on the next two deposits of a pair
# outside the load.
dep_gen() {
  $CLIENT token --key "$W/a.key" --peer $B --out "$W/$1.tok" &&
  $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/$1.tok" \
    --params-out "$W/$1.params" --reply-out "$W/$1.reply" >/dev/null &&
  value "$W/$1.params" k_gen
}
"$KMSCTL" -c "$W/kms.conf" policy set reuse_max_deposits=0 >/dev/null || fail "policy set"
g1=$(dep_gen pg1); g2=$(dep_gen pg2)
"$KMSCTL" -c "$W/kms.conf" policy set reuse_max_deposits=100 >/dev/null || fail "policy set back"
g3=$(dep_gen pg3); g4=$(dep_gen pg4)
[ -n "$g1" ] && [ "$g2" = $((g1 + 1)) ] && [ "$g3" = "$g2" ] && [ "$g4" = "$g3" ] \
  && pass "two policy swaps under load, each applied to the next deposit (k_gen $g1 $g2 $g3 $g4)" \
  || fail "policy swaps under load: k_gen $g1 $g2 $g3 $g4"
# A party the load uses gets a new key; the load keeps its old one (overlap).
U1=$(awk '$1 == "user" { print $2; exit }' "$W/pop.txt")
"$KMSCTL" -c "$W/kms.conf" rotate --id "$U1" --out "$W/u1-2.key" --overlap-s 600 >/dev/null \
  && pass "rotated $U1 under load" || fail "rotate $U1"
"$KMSCTL" -c "$W/kms.conf" kek-rotate > "$W/rot.txt" 2>&1 \
  && pass "kek-rotate through kmsd: $(cat "$W/rot.txt")" \
  || fail "kek-rotate: $(cat "$W/rot.txt")"
lg_rc=0; wait_exit "$LG" $((LOAD_S + 60)) || lg_rc=$?
python3 - "$W/load.json" "$lg_rc" <<'PY' && pass "load during the rotation: 0 failures, 0 mismatches" || fail "load: $(cat "$W/load.txt")"
import json, sys
r = json.load(open(sys.argv[1]))
v = r["verify"]
ok = (int(sys.argv[2]) == 0 and not r["errors_by_status"] and v["mismatch"] == 0
      and v["bad_tag"] == 0 and v["bad_reply"] == 0 and v["unexpected_status"] == 0
      and v["late"] == 0 and v["busy"] == 0 and r["lost"] == 0
      and v["keys_checked"] > 100)
print("load: %d keys checked, lost %d, errors %s, verify %s" % (v["keys_checked"], r["lost"], r["errors_by_status"], v))
sys.exit(0 if ok else 1)
PY
grep -q "done" "$W/rot.txt" && [ "$(sed -n 's/.* \([0-9]*\) blob(s) re-wrapped.*/\1/p' "$W/rot.txt")" -gt 200 ] \
  && pass "every blob re-wrapped (parties, pairs, deposits, IBE seed)" \
  || fail "re-wrapped count: $(cat "$W/rot.txt")"
[ "$(retrieve_k k1.txt)" = "$KA" ] && pass "the deposit made before still gives its K" \
  || fail "old deposit after the live rotation"
"$KMSCTL" -c "$W/kms.conf" kek-status | grep -q "done" && pass "kek-status: done" \
  || fail "kek-status"
stop_kmsd || fail "kmsd exit after the live rotation"
"$KMSCTL" -c "$W/kms.conf" kek-status > "$W/state.txt"
grep -q "holds 1 KEK(s) labelled 'kms-kek' and 0 being rotated in" "$W/state.txt" \
  && pass "one KEK left, under its label" || fail "KEKs: $(cat "$W/state.txt")"

# ---- restart: everything opens under the new KEK
start_kmsd
grep -q "IBE master secret loaded" "$W/kmsd.log" && pass "re-wrapped IBE seed loads" \
  || fail "IBE seed after rotation"
[ "$(retrieve_k k2.txt)" = "$KA" ] && pass "old deposit after restart" || fail "old deposit after restart"
stop_kmsd || fail "kmsd exit"

# ---- offline rotation
"$KMSCTL" -c "$W/kms.conf" kek-rotate > "$W/rot2.txt" 2>&1 \
  && grep -q "offline): done" "$W/rot2.txt" && pass "offline kek-rotate: $(cat "$W/rot2.txt")" \
  || fail "offline kek-rotate: $(cat "$W/rot2.txt")"
start_kmsd
[ "$(retrieve_k k3.txt)" = "$KA" ] && grep -q "IBE master secret loaded" "$W/kmsd.log" \
  && pass "after the offline rotation: old deposit and IBE seed open" || fail "after offline rotation"
"$KMSCTL" -c "$W/kms.conf" audit > "$W/audit.txt"
[ "$(grep -c "kek-rotate actor=kmsd a=start" "$W/audit.txt")" = 1 ] &&
  [ "$(grep -c "kek-rotate actor=kmsd a=done" "$W/audit.txt")" = 1 ] &&
  [ "$(grep -c "kek-rotate actor=kmsctl a=done" "$W/audit.txt")" = 1 ] \
  && pass "rotations audited (start, done)" || fail "audit records"
"$KMSCTL" -c "$W/kms.conf" audit verify >/dev/null && pass "audit chain verifies" \
  || fail "audit verify"
stop_kmsd || fail "kmsd exit"
finish
