#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# End to end over UDP on loopback: kmsctl init/enroll, kmsd --io socket,
# kms-client playing UE-A, the mailbox AS and UE-B; then refusals a user
# would hit (replay, wrong B, revoked B, stale token, unknown AS) and a
# clean SIGTERM shutdown. Usage: test_e2e.sh BUILD_DIR
#
# The checks are the function e2e_checks, which the DPDK scripts source
# this file for (test_dpdk_*.sh): it runs against whatever kmsd start_kmsd
# starts (lib.sh: KMSD_WRAP, KMSD_ARGS, kmsd_pre_start...), with the client
# side wherever use_client_wrap put it. It needs setup_env done, and it
# ends with kmsd stopped. Knobs: E2E_GARBAGE_COUNTED, the regex that the
# garbage datagrams of section 9 must have left in kmsd's counters.

A=sip:alice@example.org B=sip:bob@example.org C=sip:carol@example.org
MB=mailbox.example.org

# deposit_gen TAG: a new deposit A -> B; prints its k_gen.
deposit_gen() {
  $CLIENT token --key "$W/a.key" --peer $B --out "$W/$1.tok" &&
  $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/$1.tok" \
    --params-out "$W/$1.params" --reply-out "$W/$1.reply" >/dev/null &&
  value "$W/$1.params" k_gen
}

# The live reuse policy: an override for B's domain changes the next
# deposit (a new K each time), is stored, audited, and refused when bad.
policy_checks() {
local g1 g2 g3 exp now out rc
"$KMSCTL" -c "$W/kms.conf" policy show > "$W/pol.txt" 2>&1
grep -q "^default .*reuse_max_deposits=100 " "$W/pol.txt" && pass "policy show: the default" \
  || fail "policy show: $(cat "$W/pol.txt")"
g1=$(deposit_gen pg1); g2=$(deposit_gen pg2)
[ -n "$g1" ] && [ "$g1" = "$g2" ] && pass "default policy: the pair's K re-used (k_gen $g1)" \
  || fail "re-use before the change: k_gen $g1 then $g2"
"$KMSCTL" -c "$W/kms.conf" policy set --domain example.org reuse_max_deposits=0 \
  deposit_lifetime_s=60 >/dev/null || fail "policy set"
g3=$(deposit_gen pg3)
now=$(date +%s%3N); exp=$(value "$W/pg3.params" expiry_ms)
[ "$g3" = $((g2 + 1)) ] && [ $((exp - now)) -le 61000 ] && [ $((exp - now)) -ge 50000 ] \
  && pass "override for @example.org applied live: new K (k_gen $g3), 60 s lifetime" \
  || fail "after the change: k_gen $g3 (was $g2), expiry in $((exp - now)) ms"
for bad in "bogus=1" "reuse_max_deposits=-1" "deposit_lifetime_s=0" "reuse_max_age_s=99999999999"; do
  rc=0; "$KMSCTL" -c "$W/kms.conf" policy set "$bad" > "$W/pol-bad.txt" 2>&1 || rc=$?
  [ "$rc" -eq 1 ] && grep -q "refused" "$W/pol-bad.txt" || { fail "policy set $bad: exit $rc $(cat "$W/pol-bad.txt")"; return; }
done
"$KMSCTL" -c "$W/kms.conf" policy show > "$W/pol2.txt"
grep -q "^default .*reuse_max_deposits=100 " "$W/pol2.txt" && [ "$(grep -c . "$W/pol2.txt")" = 2 ] \
  && pass "bad policy values refused, nothing changed" || fail "after refusals: $(cat "$W/pol2.txt")"
"$KMSCTL" -c "$W/kms.conf" audit | grep -q "policy actor=kmsctl a=example.org" \
  && pass "policy change audited" || fail "no policy audit record"
# A pair override (A -> C) wins over the default: a new K each deposit
# for that pair only.
"$KMSCTL" -c "$W/kms.conf" policy clear --domain example.org >/dev/null
"$KMSCTL" -c "$W/kms.conf" policy set --pair "$A,$C" reuse_max_deposits=0 >/dev/null \
  || fail "policy set --pair"
dep_c() {
  $CLIENT token --key "$W/a.key" --peer $C --out "$W/$1.tok" &&
  $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/$1.tok" \
    --params-out "$W/$1.params" --reply-out "$W/$1.reply" >/dev/null &&
  value "$W/$1.params" k_gen
}
c1=$(dep_c pc1); c2=$(dep_c pc2); b1=$(deposit_gen pb1); b2=$(deposit_gen pb2)
[ -n "$c1" ] && [ "$c2" = $((c1 + 1)) ] && [ -n "$b1" ] && [ "$b1" = "$b2" ] \
  && pass "pair override: A -> C gets a new K each deposit, A -> B still re-uses" \
  || fail "pair override: A->C k_gen $c1 then $c2, A->B $b1 then $b2"
"$KMSCTL" -c "$W/kms.conf" policy show | grep -q "^pair $A,$C " \
  && pass "policy show lists the pair" || fail "policy show: no pair line"
"$KMSCTL" -c "$W/kms.conf" policy clear --pair "$A,$C" >/dev/null || fail "policy clear --pair"

# Expiry: a 1 s lifetime; the background purge (every 1 s here) deletes
# the deposit; its RETRIEVE is refused, and the purge is counted.
"$KMSCTL" -c "$W/kms.conf" policy set --domain example.org deposit_lifetime_s=1 >/dev/null
deposit_gen pg4 >/dev/null
sleep 3.5
out=$($CLIENT retrieve --server "$SERVER" --key "$W/b.key" --params "$W/pg4.params" \
  --out "$W/kb-pg4.txt" 2>&1 || true)
"$KMSCTL" -c "$W/kms.conf" stats --json > "$W/stats2.json"
echo "$out" | grep -q "refused: UNKNOWN_KEY_ID" &&
  python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["store"]["purged_deposits"] >= 1' "$W/stats2.json" \
  && pass "expired deposit purged in the background (retrieve refused, purge counted)" \
  || fail "purge: $out; $(head -c 300 "$W/stats2.json")"
"$KMSCTL" -c "$W/kms.conf" policy clear --domain example.org >/dev/null &&
"$KMSCTL" -c "$W/kms.conf" policy set --domain persist.example max_retrievals=0 >/dev/null \
  || fail "policy clear / set"
}

ctl_checks() {
local sock=$W/store/kmsd.sock out
[ "$(stat -c %a "$sock" 2>/dev/null)" = 600 ] && pass "control socket mode 0600" \
  || fail "control socket: $(ls -l "$sock" 2>&1)"
"$KMSCTL" -c "$W/kms.conf" stats --json > "$W/stats.json" 2>&1 || true
python3 - "$W/stats.json" "${KMS_E2E_CRYPTO_MODE:-offload}" <<'PY' && pass "kmsctl stats --json: mode, per-worker sums, statuses" || fail "stats --json: $(head -c 600 "$W/stats.json")"
import json, sys
j = json.load(open(sys.argv[1]))
e = j["engine"]
assert j["crypto_mode"] == sys.argv[2], j["crypto_mode"]
assert len(j["per_worker"]) == j["workers"] >= 1
assert e["by_status"]["deposit"].get("OK", 0) >= 1 and e["by_status"]["retrieve"].get("OK", 0) >= 1, e["by_status"]
assert sum(w["requests"] for w in j["per_worker"] if w) == e["requests"] >= 2
assert 0 <= e["cache_hit_rate"] <= 1 and j["io_stats"]["rx"] >= 2
assert sum(e["commit_size_log2"]) == e["commits"] >= 1, e["commit_size_log2"]
assert sum(e["batch_us_log2"]) == e["batches"] >= 1 and e["batch_us_sum"] > 0
PY
"$KMSCTL" -c "$W/kms.conf" stats --prometheus > "$W/stats.prom" 2>&1 || true
python3 - "$W/stats.prom" <<'PY' && pass "kmsctl stats --prometheus: valid exposition lines" || fail "stats --prometheus: $(head -c 600 "$W/stats.prom")"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? (-?[0-9.]+(e[+-]?[0-9]+)?|[+-]Inf|NaN)$')
bad = [l for l in lines if not l.startswith("#") and not sample.match(l)]
assert not bad, bad[:3]
assert any(l.startswith('kms_requests_total{worker="') and 'status="OK"' in l for l in lines)
assert any(l.startswith("kms_info{crypto_mode=") for l in lines)
# histograms: cumulative buckets ending in +Inf == _count
for fam in ("kms_commit_requests", "kms_batch_seconds"):
    inf = [l for l in lines if l.startswith(fam + '_bucket{') and 'le="+Inf"' in l]
    cnt = [l for l in lines if l.startswith(fam + "_count{")]
    assert inf and len(inf) == len(cnt), fam
    assert all(a.split()[-1] == b.split()[-1] for a, b in zip(inf, cnt)), fam
PY
"$KMSCTL" -c "$W/kms.conf" stats | grep -q "crypto mode" && pass "kmsctl stats: summary" || fail "kmsctl stats summary"
python3 - "$sock" <<'PY' > "$W/ctl-bad.txt" 2>&1 && pass "malformed control commands refused with a reason" || fail "control refusals: $(cat "$W/ctl-bad.txt")"
import json, socket, sys
def call(data):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1]); s.sendall(data)
    buf = b""
    while True:
        c = s.recv(65536)
        if not c: break
        buf += c
    return json.loads(buf)
for data, want in ((b"bogus\n", "unknown command"), (b"\n", "empty request"),
                   (b"x" * 5000 + b"\n", "longer than"), (b"stats extra\n", "takes no arguments"),
                   (b"stats" + b" a" * 20 + b"\n", "more than")):
    r = call(data)
    assert r["ok"] is False and want in r["error"], (data[:20], r)
r = call(b"help\n")
assert r["ok"] and {c["name"] for c in r["commands"]} >= {"stats", "help"}, r
assert call(b"stats\n")["ok"] is True
PY
policy_checks
out=$(timeout 20 "$KMSD" -c "$W/kms.conf" --io socket 2>&1) && rc=0 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && echo "$out" | grep -q "another process serves it" \
  && pass "a second kmsd on the same control socket refuses to start" \
  || fail "second kmsd: exit $rc: $out"
}

e2e_checks() {
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
enroll user $A a; enroll user $B b; enroll user $C c; enroll as $MB mb
[ "$(stat -c %a "$W/a.key")" = 600 ] && pass "key file mode 0600" || fail "key file mode"
start_kmsd

# 1. The seed's flow: A's token, the mailbox deposits, A opens Ea(K); later
#    B retrieves Eb(K). Both hold the same K.
$CLIENT token --key "$W/a.key" --peer $B --out "$W/ea.tok"
$CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea.tok" \
  --params-out "$W/params.txt" --reply-out "$W/reply.txt" \
  --save-request "$W/deposit.req" >/dev/null
$CLIENT open --key "$W/a.key" --token "$W/ea.tok" --reply "$W/reply.txt" --out "$W/ka.txt"
$CLIENT retrieve --server "$SERVER" --key "$W/b.key" --params "$W/params.txt" \
  --out "$W/kb.txt" --save-request "$W/retrieve.req" >/dev/null
KA=$(value "$W/ka.txt" k); KB=$(value "$W/kb.txt" k)
[ ${#KA} -eq 64 ] && [ "$KA" = "$KB" ] && pass "B got exactly A's K" || fail "K_A=$KA K_B=$KB"
[ "$(value "$W/ka.txt" key_id)" = "$(value "$W/params.txt" key_id)" ] && pass "same key id" || fail "key id"

# 2. The mailbox never holds K: nothing it sent, received or kept has it.
if grep -qi "$KA" "$W/params.txt" "$W/reply.txt" "$W/deposit.req" "$W/retrieve.req"; then
  fail "K found in the mailbox's files"
else
  pass "K absent from everything the mailbox sent, received and kept"
fi
# The mailbox cannot open Ea(K) with its own key.
if $CLIENT open --key "$W/mb.key" --token "$W/ea.tok" --reply "$W/reply.txt" \
    --out "$W/kmb.txt" 2>/dev/null; then fail "mailbox opened Ea(K)"; else pass "Ea(K) does not open with Kas"; fi

# 2b. The control socket: `kmsctl stats` in its three formats, the
#     socket's mode, malformed commands refused with a reason, and a second
#     kmsd on the same socket refused.
ctl_checks

# 3. Replays of the exact datagrams are refused.
out=$($CLIENT send --server "$SERVER" --in "$W/deposit.req" 2>&1 || true)
echo "$out" | grep -q "status=REPLAY" && pass "replayed DEPOSIT refused" || fail "deposit replay: $out"
out=$($CLIENT send --server "$SERVER" --in "$W/retrieve.req" 2>&1 || true)
echo "$out" | grep -q "status=REPLAY" && pass "replayed RETRIEVE refused" || fail "retrieve replay: $out"

# 4. Carol cannot get the key of the Alice->Bob deposit.
out=$($CLIENT retrieve --server "$SERVER" --key "$W/c.key" --params "$W/params.txt" \
  --out "$W/kc.txt" --force-mismatch 2>&1 || true)
echo "$out" | grep -Eq "refused: (AUTH_FAILED|ID_MISMATCH|HANDLE_MISMATCH|NOT_RECIPIENT)" \
  && [ ! -s "$W/kc.txt" ] && pass "wrong B refused ($out)" || fail "wrong B: $out"

# 5. Stale tokens are refused (60 s old, skew 30 s).
$CLIENT token --key "$W/a.key" --peer $B --out "$W/ea2.tok"
out=$($CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea2.tok" \
  --params-out "$W/p2.txt" --reply-out "$W/r2.txt" --ts-offset-ms -60000 2>&1 || true)
echo "$out" | grep -q "refused: STALE" && pass "stale Eas refused" || fail "stale: $out"

# 6. Unknown AS: a key file nobody enrolled.
sed 's/^id = .*/id = rogue.example.org/' "$W/mb.key" > "$W/rogue.key"; chmod 600 "$W/rogue.key"
out=$($CLIENT deposit --server "$SERVER" --key "$W/rogue.key" --token "$W/ea2.tok" \
  --params-out "$W/p3.txt" --reply-out "$W/r3.txt" 2>&1 || true)
echo "$out" | grep -q "refused: UNKNOWN_PARTY" && pass "unknown AS refused" || fail "unknown AS: $out"

# 7. Revocation while kmsd runs: B's next RETRIEVE is refused.
$CLIENT token --key "$W/a.key" --peer $B --out "$W/ea4.tok"
$CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea4.tok" \
  --params-out "$W/p4.txt" --reply-out "$W/r4.txt" >/dev/null
"$KMSCTL" -c "$W/kms.conf" revoke --id $B >/dev/null
out=$($CLIENT retrieve --server "$SERVER" --key "$W/b.key" --params "$W/p4.txt" \
  --out "$W/kb4.txt" 2>&1 || true)
echo "$out" | grep -q "refused: PARTY_REVOKED" && pass "revoked B refused" || fail "revoked B: $out"

# 7b. One deposit revoked while kmsd serves: its next RETRIEVE is refused;
#     a second revoke and a malformed key id are refused by kmsctl.
$CLIENT token --key "$W/a.key" --peer $C --out "$W/e7.tok"
$CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/e7.tok" \
  --params-out "$W/p7.txt" --reply-out "$W/r7.txt" >/dev/null
KID7=$(value "$W/p7.txt" key_id)
"$KMSCTL" -c "$W/kms.conf" revoke --key-id "$KID7" >/dev/null || fail "revoke --key-id"
out=$($CLIENT retrieve --server "$SERVER" --key "$W/c.key" --params "$W/p7.txt" \
  --out "$W/kc7.txt" 2>&1 || true)
echo "$out" | grep -q "refused: DEPOSIT_REVOKED" && pass "revoked deposit refused" || fail "revoked deposit: $out"
rc=0; "$KMSCTL" -c "$W/kms.conf" revoke --key-id "$KID7" >"$W/rv.txt" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "already revoked" "$W/rv.txt" && pass "second revoke refused" \
  || fail "second revoke: exit $rc $(cat "$W/rv.txt")"
rc=0; "$KMSCTL" -c "$W/kms.conf" revoke --key-id 12zz >"$W/rv.txt" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && pass "malformed key id refused" || fail "malformed key id: exit $rc"

# 8. The audit names every issue of a key and never holds it.
"$KMSCTL" -c "$W/kms.conf" audit > "$W/audit.txt"
grep -q "revoke actor=kmsctl a=$A b=$C key_id=$KID7" "$W/audit.txt" \
  && pass "deposit revocation audited" || fail "no revoke record for $KID7"
grep -q "key-new actor=$MB a=$A b=$B" "$W/audit.txt" && grep -q "key-retrieve actor=$B" "$W/audit.txt" \
  && pass "deposit and retrieval audited" || fail "audit: $(cat "$W/audit.txt")"
grep -qi "$KA" "$W/audit.txt" && fail "K in the audit" || pass "K absent from the audit"
"$KMSCTL" -c "$W/kms.conf" audit verify > "$W/verify.txt" 2>&1 \
  && grep -q "audit chain intact: $(wc -l < "$W/audit.txt") records" "$W/verify.txt" \
  && pass "audit chain intact while kmsd serves" || fail "audit verify: $(cat "$W/verify.txt")"
"$KMSCTL" -c "$W/kms.conf" audit export > "$W/audit.jsonl"
python3 - "$W/audit.jsonl" <<'PY' && pass "audit export: JSON lines, seq 1..n, chain hashes" || fail "audit export: $(head -3 "$W/audit.jsonl")"
import json, re, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
assert rs and [r["seq"] for r in rs] == list(range(1, len(rs) + 1))
assert all(re.fullmatch(r"[0-9a-f]{64}", r["chain_hash"]) for r in rs)
assert len({r["chain_hash"] for r in rs}) == len(rs)
assert any(r["event"] == "key-retrieve" for r in rs)
PY

# 8b. At rest, keys exist only wrapped under the KEK: neither K nor any
#     party key appears in the LMDB store or the token's files.
AK=$(value "$W/a.key" key); BK=$(value "$W/b.key" key); MK=$(value "$W/mb.key" key)
if /usr/bin/python3 - "$W" "$KA" "$AK" "$BK" "$MK" <<'PY'
import glob, os, sys
w, keys = sys.argv[1], [bytes.fromhex(k) for k in sys.argv[2:]]
files = glob.glob(w + "/store/*") + glob.glob(w + "/tokens/**/*", recursive=True)
blobs = [open(f, "rb").read() for f in files if os.path.isfile(f)]
sys.exit(1 if any(k in b for k in keys for b in blobs) or len(blobs) < 3 else 0)
PY
then pass "no K and no party key in clear in the store or the token"; else fail "key bytes found at rest"; fi

# 8b. Key rotation while kmsd serves: R (a party of its own) gets generation 2; tokens of
#     generation 1 are accepted for the overlap (3 s), then AUTH_FAILED.
R=sip:rotor@example.org
enroll user $R r
rot_dep() { # NAME: A deposits for R
  $CLIENT token --key "$W/a.key" --peer $R --out "$W/$1.tok" &&
  $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/$1.tok" \
    --params-out "$W/$1.params" --reply-out "$W/$1.reply" >/dev/null
}
rot_ret() { # KEYFILE NAME
  $CLIENT retrieve --server "$SERVER" --key "$W/$1" --params "$W/$2.params" \
    --out "$W/$2.$1.k" 2>&1
}
rot_dep rd1 || fail "deposit for R"
"$KMSCTL" -c "$W/kms.conf" rotate --id $R --out "$W/r2.key" --overlap-s 3 \
  | grep -q "rotated $R to generation 2" && pass "R rotated to generation 2" || fail "rotate R"
grep -q "^gen = 2$" "$W/r2.key" && pass "new key file names generation 2" || fail "r2.key gen"
rot_ret r.key rd1 >/dev/null && rot_ret r2.key rd1 >/dev/null \
  && [ "$(value "$W/rd1.r.key.k" k)" = "$(value "$W/rd1.r2.key.k" k)" ] \
  && pass "within the overlap both generations retrieve the same K" \
  || fail "overlap: old or new generation refused"
"$KMSCTL" -c "$W/kms.conf" show --id $R > "$W/show-r.txt"
grep -q "gen=2 .*prev_gen=1 " "$W/show-r.txt" \
  && pass "show: gen 2, previous gen 1 in its overlap" || fail "show after rotate"
sleep 3.2
out=$(rot_ret r.key rd1) && fail "generation 1 after the overlap: $out" \
  || { echo "$out" | grep -q AUTH_FAILED && pass "generation 1 refused after the overlap" \
       || fail "after overlap: $out"; }
rot_ret r2.key rd1 >/dev/null && pass "generation 2 still served" || fail "gen 2 after overlap"
"$KMSCTL" -c "$W/kms.conf" audit > "$W/audit-rot.txt"
grep -q "rotate actor=kmsctl a=$R .*k_gen=2" "$W/audit-rot.txt" \
  && pass "rotation audited" || fail "rotation audit record"
"$KMSCTL" -c "$W/kms.conf" rotate --id sip:nobody@example.org --out "$W/x.key" >/dev/null 2>&1 \
  && fail "rotating an unknown party" || pass "rotating an unknown party refused"
# 8c. The pair A -> R revoked while kmsd serves: its deposits are refused
#     (DEPOSIT_REVOKED) and so is a new DEPOSIT (PAIR_REVOKED).
"$KMSCTL" -c "$W/kms.conf" revoke --pair "$A,$R" >/dev/null || fail "revoke --pair"
out=$(rot_ret r2.key rd1) && fail "deposit of a revoked pair retrieved" \
  || { echo "$out" | grep -q DEPOSIT_REVOKED && pass "revoked pair: its deposit refused" \
       || fail "revoked pair retrieve: $out"; }
out=$(rot_dep rd2 2>&1) && fail "deposit for a revoked pair accepted" \
  || { echo "$out" | grep -q PAIR_REVOKED && pass "revoked pair: new deposit refused" \
       || fail "revoked pair deposit: $out"; }
"$KMSCTL" -c "$W/kms.conf" revoke --pair "$A,$R" > "$W/rp2.txt" 2>&1 \
  && fail "second pair revoke accepted" \
  || { grep -q "already revoked" "$W/rp2.txt" && pass "second pair revoke refused" \
       || fail "second pair revoke: $(cat "$W/rp2.txt")"; }
"$KMSCTL" -c "$W/kms.conf" revoke --pair "$R,$A" >/dev/null 2>&1 \
  && fail "revoking a pair that never deposited" || pass "unknown pair refused"

# 9. Garbage is dropped or refused and kmsd keeps serving.
printf 'not a kms datagram' | send_udp "$(server_host)" "$(server_port)"
head -c 1472 /dev/urandom | send_udp "$(server_host)" "$(server_port)"
# Socket mode (kernel UDP on loopback, no MTU in the way) also gets a
# datagram longer than any request (KMS_DGRAM_MAX = 1472): a third drop.
# (KMSD_ARGS is set by the DPDK scripts' start, after they source this.)
e2e_socket=1
[[ " ${KMSD_ARGS[*]:-} " == *" dpdk "* ]] && e2e_socket=0
[ $e2e_socket = 0 ] || head -c 4000 /dev/urandom | send_udp "$(server_host)" "$(server_port)"
$CLIENT token --key "$W/a.key" --peer $C --out "$W/ea5.tok"
$CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea5.tok" \
  --params-out "$W/p5.txt" --reply-out "$W/r5.txt" --save-request "$W/deposit5.req" >/dev/null \
  && $CLIENT retrieve --server "$SERVER" --key "$W/c.key" --params "$W/p5.txt" \
  --out "$W/kc5.txt" --save-request "$W/retrieve5.req" >/dev/null \
  && pass "still serving after garbage" || fail "kmsd stopped answering"

# 10. SIGTERM: clean exit with the counters printed.
if stop_kmsd; then pass "SIGTERM: exit 0"; else fail "kmsd exit status on SIGTERM"; fi
grep -Eq "${E2E_GARBAGE_COUNTED:-drops_not_kms=$((2 + e2e_socket))}" "$W/kmsd.log" \
  && pass "garbage counted as drops" || fail "drop count: $(grep stats "$W/kmsd.log")"
grep -q "deposit REPLAY=1" "$W/kmsd.log" && pass "replay counted" || fail "replay count"
grep -q "crypto_mode=${KMS_E2E_CRYPTO_MODE:-offload} " "$W/kmsd.log" \
  && pass "served in crypto mode ${KMS_E2E_CRYPTO_MODE:-offload}" \
  || fail "crypto mode: $(grep crypto_mode "$W/kmsd.log")"

# 11. Replay protection survives a restart (and a SIGKILL): the single-use
#     nonces were committed with their requests and are reloaded.
start_kmsd
kill9_kmsd
start_kmsd
out=$($CLIENT send --server "$SERVER" --in "$W/deposit5.req" 2>&1 || true)
echo "$out" | grep -q "status=REPLAY" && pass "DEPOSIT replay refused after restart" || fail "after restart: $out"
out=$($CLIENT send --server "$SERVER" --in "$W/retrieve5.req" 2>&1 || true)
echo "$out" | grep -q "status=REPLAY" && pass "RETRIEVE replay refused after restart" || fail "after restart: $out"
"$KMSCTL" -c "$W/kms.conf" policy show | grep -q "^@persist.example " \
  && pass "the live policy survives a restart" || fail "policy after restart: $("$KMSCTL" -c "$W/kms.conf" policy show 2>&1)"
stop_kmsd || fail "second kmsd exit"
}

# The audit chain against an edit made with LMDB's own tools on a copy of
# the store (kmsd stopped): one byte of one record's value changed.
audit_tamper_check() {
  local copy=$W/store-tampered
  cp -r "$W/store" "$copy" && rm -f "$copy/kmsd.sock"
  sed "s|^path = .*|path = $copy|" "$W/kms.conf" > "$W/kms-tampered.conf"
  mdb_dump -s audit "$copy" > "$W/audit.dump"
  # hex dump: header, then key and value lines (" <hex>"); change the 2nd
  # record's time (byte 40, inside time_ms): it still decodes, only the
  # chain can tell.
  python3 - "$W/audit.dump" <<'PY'
import sys
lines = open(sys.argv[1]).read().split("\n")
start = lines.index("HEADER=END") + 1
i = start + 3                     # key 1, value 1, key 2, value 2
v, at = lines[i], 1 + 2 * 40
lines[i] = v[:at] + ("1" if v[at] != "1" else "2") + v[at + 1:]
open(sys.argv[1], "w").write("\n".join(lines))
PY
  mdb_load -s audit -f "$W/audit.dump" "$copy"
  local rc=0
  "$KMSCTL" -c "$W/kms-tampered.conf" audit verify > "$W/verify-t.txt" 2>&1 || rc=$?
  [ "$rc" -eq 1 ] && grep -q "audit chain BROKEN at record 3 .*altered" "$W/verify-t.txt" \
    && pass "an edited audit record is detected ($(cat "$W/verify-t.txt"))" \
    || fail "tampered audit: exit $rc: $(cat "$W/verify-t.txt")"
  "$KMSCTL" -c "$W/kms.conf" audit verify >/dev/null \
    && pass "the untouched store still verifies" || fail "original store no longer verifies"
}

# Run directly: the socket mode on loopback.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  BIN=$1
  # shellcheck source=lib.sh
  . "$(dirname "$0")/lib.sh"
  setup_env
  KMSD_ARGS=(--io socket)
  # With an OpenSSL engine (e2e_socket_engine): it must really have done
  # the AEAD (the test engine counts its finished operations into a file
  # at exit), and a broken engine must stop kmsd at start.
  if [ -n "${KMS_E2E_CRYPTO_ENGINE:-}" ]; then
    mkdir -p "$W/engine"
    export KMS_TEST_ENGINE_COUNTS=$W/engine/%p.txt
  fi
  # Through the counting PKCS#11 module (e2e_socket_hsm): every process
  # reports how it treated key values.
  if [ -n "${KMS_P11FWD_TARGET:-}" ]; then
    mkdir -p "$W/p11fwd"
    export KMS_P11FWD_REPORT=$W/p11fwd/%p.txt
  fi
  e2e_checks
  audit_tamper_check
  if [ -n "${KMS_P11FWD_TARGET:-}" ]; then
    nx=$(cat "$W"/p11fwd/*.txt 2>/dev/null | awk '$1 == "unwraps_nonextractable" { s += $2 } END { print s + 0 }')
    nxr=$(cat "$W"/p11fwd/*.txt 2>/dev/null | awk '$1 == "value_reads_nonextractable" { s += $2 } END { print s + 0 }')
    nrep=$(ls "$W"/p11fwd/*.txt 2>/dev/null | wc -l)
    [ "$nrep" -ge 3 ] && [ "$nx" -ge 4 ] && [ "$nxr" -eq 0 ] \
      && pass "HSM side ($nrep processes): $nx party keys loaded as non-extractable objects, 0 of their values read" \
      || fail "HSM side: $nrep reports, $nx non-extractable loads, $nxr value reads of them"
  fi
  if [ -n "${KMS_E2E_CRYPTO_ENGINE:-}" ]; then
    finals=$(cat "$W"/engine/*.txt 2>/dev/null | sed -n 's/.*finals=\([0-9]*\).*/\1/p' |
      awk '{ s += $1 } END { print s + 0 }')
    # every answered DEPOSIT opens 2 tokens and seals 1 box, a RETRIEVE 1 + 1
    [ "${finals:-0}" -ge 10 ] && pass "the AEAD went through the engine ($finals operations)" \
      || fail "engine operations: '${finals:-none}'"
    grep -q "AES-256-GCM through OpenSSL engine 'kmstest'" "$W/kmsd.log" \
      && pass "kmsd named the engine at start" || fail "no engine line in kmsd's log"
    # refused_engine SPEC [ENV=VALUE]: kmsd must exit non-zero, saying why
    refused_engine() {
      sed "s|^engine = .*|engine = $1|" "$W/kms.conf" > "$W/kms-bad.conf"
      local rc=0
      env ${2:+"$2"} timeout 20 "$KMSD" -c "$W/kms-bad.conf" --io socket \
        >"$W/kmsd-bad.log" 2>&1 || rc=$?
      [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "$3" "$W/kmsd-bad.log" \
        && pass "kmsd refuses $4 (exit $rc)" \
        || fail "kmsd with $4: exit $rc, log: $(cat "$W/kmsd-bad.log")"
    }
    refused_engine /nonexistent/engine.so "" "does not load" "an engine that does not load"
    refused_engine "$KMS_E2E_CRYPTO_ENGINE" KMS_TEST_ENGINE_NO_GCM=1 \
      "does not implement AES-256-GCM" "an engine without AES-256-GCM"
  fi
  finish
fi
