#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# kms-loadgen end to end: against the real kmsd (socket mode, real SoftHSM2
# token, real LMDB) every reply verifies, in a closed and an open loop; and
# against rogue_kms.py, a KMS that lies on command, each kind of lie is
# caught and counted in its own class, as many times as the rogue told it.
#   test_loadgen.sh BUILD_DIR
BIN=${1:?usage: test_loadgen.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../e2e/lib.sh
. "$HERE/../e2e/lib.sh"
LG=$BIN/perf/loadgen/kms-loadgen
ROGUE_PID=""

extra_cleanup() {
  [ -z "$ROGUE_PID" ] || kill -9 "$ROGUE_PID" 2>/dev/null || true
}

# jv FILE EXPR: a value from a JSON report (python3 expression on j)
jv() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

setup_env
"$KMSCTL" -c "$W/kms.conf" init >/dev/null 2>&1
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 24 --as 2 --out "$W/pop" >/dev/null

# ---- the real kmsd ----
start_kmsd
rc=0
"$LG" --population "$W/pop" --server "$SERVER" --pairs 40 --new-pairs 20 \
  --mix 1:1 --outstanding 16 --duration 1.5 --warmup 0.3 --quiet \
  --json "$W/closed.json" --plot "$W/closed" > "$W/closed.txt" 2>&1 || rc=$?
cat "$W/closed.txt"
[ "$rc" -eq 0 ] && pass "closed loop: exit 0" || fail "closed loop: exit $rc"
ok=$(jv "$W/closed.json" 'j["ok"]')
[ "$ok" -gt 100 ] && pass "closed loop: $ok verified" || fail "closed loop: only $ok verified"
[ "$(jv "$W/closed.json" 'j["verify"]["mismatch"] + j["verify"]["bad_tag"] + j["verify"]["bad_reply"] + j["verify"]["unexpected_status"]')" = 0 ] &&
  pass "closed loop: no mismatch, bad tag, bad reply or error status" ||
  fail "closed loop: verification failures: $(jv "$W/closed.json" 'j["verify"]')"
[ "$(jv "$W/closed.json" 'j["deposit"]["ok"] > 0 and j["retrieve"]["ok"] > 0')" = True ] &&
  pass "closed loop: both DEPOSIT and RETRIEVE verified" || fail "closed loop: a type is missing"
kc=$(jv "$W/closed.json" 'j["verify"]["keys_checked"]')
for f in closed-throughput.png closed-latency.png; do
  [ -s "$W/$f" ] && pass "plot $f written" || fail "plot $f missing"
done

rc=0
"$LG" --population "$W/pop" --server "$SERVER" --pairs 40 --mix 1:3 \
  --rate 1500 --duration 1 --warmup 0.2 --quiet --json "$W/open.json" \
  > "$W/open.txt" 2>&1 || rc=$?
cat "$W/open.txt"
[ "$rc" -eq 0 ] && pass "open loop: exit 0" || fail "open loop: exit $rc"
[ "$(jv "$W/open.json" 'j["shape"] == "open" and j["sent"] == 1500 and j["lost"] == 0 and j["ok"] == 1500')" = True ] &&
  pass "open loop: 1500 sent in the measured second, all verified" ||
  fail "open loop: $(jv "$W/open.json" '(j["sent"], j["ok"], j["lost"])')"

[ "$kc" -ge "$ok" ] && pass "$kc keys checked in the closed loop (warm-up included)" ||
  fail "only $kc keys checked for $ok verified"

# The reuse policy swapped 20 times under load (RCU: no worker stops):
# every request still verifies, none fails.
rc=0
"$LG" --population "$W/pop" --server "$SERVER" --pairs 40 --mix 1:1 \
  --outstanding 16 --duration 2 --warmup 0.2 --quiet --json "$W/swap.json" \
  > "$W/swap.txt" 2>&1 &
LGP=$!
swaps=0
sleep 0.3
for i in $(seq 1 20); do
  "$KMSCTL" -c "$W/kms.conf" policy set reuse_max_deposits=$(( i % 2 ? 0 : 100 )) \
    >/dev/null 2>&1 && swaps=$((swaps + 1))
  sleep 0.05
done
wait "$LGP" || rc=$?
[ "$rc" -eq 0 ] && [ "$swaps" = 20 ] &&
  [ "$(jv "$W/swap.json" 'j["ok"] > 100 and j["verify"]["mismatch"] + j["verify"]["bad_tag"] + j["verify"]["bad_reply"] + j["verify"]["unexpected_status"] == 0 and j["lost"] == 0')" = True ] &&
  pass "20 policy swaps under load: $(jv "$W/swap.json" 'j["ok"]') requests verified, 0 failed" ||
  { fail "policy swaps under load: exit $rc, swaps $swaps, $(jv "$W/swap.json" '(j["ok"], j["lost"], j["verify"])')"; cat "$W/swap.txt"; }
[ "$("$KMSCTL" -c "$W/kms.conf" audit | grep -c ' policy actor=kmsctl')" = 20 ] &&
  pass "each swap audited" || fail "policy audit records: $("$KMSCTL" -c "$W/kms.conf" audit | grep -c ' policy ')"
kill -TERM "$KMSD_PID"; wait_exit "$KMSD_PID" 30 || true; KMSD_PID=""

# A population the KMS does not know: a clear error, exit 2.
start_kmsd
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 4 --as 1 --domain other.example \
  --out "$W/pop2" >/dev/null
# same ids, other keys: rewrite the keys of pop2 with random ones
python3 - "$W/pop2" "$W/pop3" <<'PY'
import os, sys
out = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 4 and f[0] in ("user", "as"):
        f[3] = os.urandom(32).hex()
        line = " ".join(f) + "\n"
    out.append(line)
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, "".join(out).encode())
os.close(fd)
PY
rc=0
"$LG" --population "$W/pop3" --server "$SERVER" --pairs 4 --duration 0.5 \
  --warmup 0 --quiet > "$W/wrongkeys.txt" 2>&1 || rc=$?
cat "$W/wrongkeys.txt"
[ "$rc" -eq 2 ] && grep -q "AUTH_FAILED" "$W/wrongkeys.txt" &&
  pass "wrong party keys: seed refused (AUTH_FAILED), exit 2" ||
  fail "wrong party keys: exit $rc"
kill -TERM "$KMSD_PID"; wait_exit "$KMSD_PID" 30 || true; KMSD_PID=""

# ---- a lying KMS ----
# rogue MODE EVERY CLASS: run a closed loop against rogue_kms.py; CLASS is
# the verify counter that must equal the rogue's tamper count (or "none").
rogue() {
  local mode=$1 every=$2 class=$3 rc=0 tampered got
  rm -f "$W/rogue.port"
  python3 "$HERE/rogue_kms.py" --population "$W/pop" --port 0 \
    --port-file "$W/rogue.port" --mode "$mode" --every "$every" \
    > "$W/rogue.out" 2>&1 &
  ROGUE_PID=$!
  for _ in $(seq 100); do [ -s "$W/rogue.port" ] && break; sleep 0.05; done
  "$LG" --population "$W/pop" --server "127.0.0.1:$(cat "$W/rogue.port")" \
    --pairs 16 --mix 1:1 --outstanding 4 --count 400 --duration 20 \
    --warmup 0 --quiet --timeout-ms 2000 --json "$W/rogue-$mode.json" \
    > "$W/rogue-$mode.txt" 2>&1 || rc=$?
  kill -TERM "$ROGUE_PID"; wait "$ROGUE_PID" || true; ROGUE_PID=""
  tampered=$(sed -n 's/.*tampered=\([0-9]*\).*/\1/p' "$W/rogue.out")
  if [ "$class" = none ]; then
    got=$(jv "$W/rogue-$mode.json" 'j["verify"]["mismatch"] + j["verify"]["bad_tag"] + j["verify"]["bad_reply"] + j["verify"]["unexpected_status"]')
    [ "$rc" -eq 0 ] && [ "$got" = 0 ] && [ "${tampered:-x}" = 0 ] &&
      pass "rogue $mode: exit 0, nothing flagged" ||
      { fail "rogue $mode: exit $rc, flagged $got, tampered $tampered"; cat "$W/rogue-$mode.txt"; }
    return
  fi
  got=$(jv "$W/rogue-$mode.json" "j['verify']['$class']")
  if [ -n "$tampered" ] && [ "$tampered" -gt 0 ] && [ "$got" = "$tampered" ]; then
    pass "rogue $mode (every $every): $got of $got lies counted as $class"
  else
    fail "rogue $mode: rogue tampered ${tampered:-?}, loadgen counted $class=$got"
    cat "$W/rogue-$mode.txt"
  fi
  if [ "$class" = unexpected_status ]; then
    [ "$rc" -eq 0 ] && pass "rogue $mode: exit 0 (statuses are reported, not failures)" ||
      fail "rogue $mode: exit $rc"
  else
    [ "$rc" -eq 1 ] && pass "rogue $mode: exit 1" || fail "rogue $mode: exit $rc, want 1"
  fi
}

rogue honest 1 none
rogue wrong-k 1 mismatch
rogue wrong-k 7 mismatch
rogue bad-tag 3 bad_tag
rogue wrong-key-id 1 bad_reply
rogue wrong-status 5 unexpected_status

# Lost DEPOSIT replies (in the seed too): counted lost, never a mismatch;
# the pair each verified seed deposit belongs to is its own, not its slot's.
rm -f "$W/rogue.port"
python3 "$HERE/rogue_kms.py" --population "$W/pop" --port 0 \
  --port-file "$W/rogue.port" --mode drop-deposit --every 3 > "$W/rogue.out" 2>&1 &
ROGUE_PID=$!
for _ in $(seq 100); do [ -s "$W/rogue.port" ] && break; sleep 0.05; done
rc=0
"$LG" --population "$W/pop" --server "127.0.0.1:$(cat "$W/rogue.port")" \
  --pairs 16 --mix 1:1 --outstanding 4 --count 300 --duration 20 --warmup 0 \
  --quiet --timeout-ms 200 --json "$W/rogue-drop.json" > "$W/rogue-drop.txt" 2>&1 || rc=$?
kill -TERM "$ROGUE_PID"; wait "$ROGUE_PID" || true; ROGUE_PID=""
tampered=$(sed -n 's/.*tampered=\([0-9]*\).*/\1/p' "$W/rogue.out")
if [ "$rc" -eq 0 ] && [ "${tampered:-0}" -gt 0 ] &&
   [ "$(jv "$W/rogue-drop.json" 'j["verify"]["mismatch"] + j["verify"]["bad_tag"] + j["verify"]["bad_reply"]')" = 0 ] &&
   [ "$(jv "$W/rogue-drop.json" 'j["lost"] > 0 and j["deposit"]["ok"] > 0 and j["retrieve"]["ok"] > 0')" = True ]; then
  pass "rogue drop-deposit: $tampered replies dropped, counted lost, 0 mismatches"
else
  fail "rogue drop-deposit: exit $rc, tampered ${tampered:-?}"; cat "$W/rogue-drop.txt"
fi
finish
