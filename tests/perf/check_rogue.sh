#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks rogue_kms.py (the lying KMS kms-loadgen is tested against) with the
# project's own kms-client, which shares no code with it: honest mode gives
# A and B the same K and refuses what a KMS must refuse; each lie is seen
# by the client as it should be (wrong-k: a K other than A's; bad-tag: the
# keybox does not open; wrong-key-id: a reply for another key id;
# wrong-status: refused INTERNAL); --every K lies exactly every K-th time;
# the SIGTERM summary counts what was done. Exits non-zero on any failure.
#   check_rogue.sh BUILD_DIR       (needs BUILD_DIR/proto/client/kms-client)
# KMS_TEST_KEEP=1 keeps the work directory.
# shellcheck disable=SC2015  # "COND && pass || fail": pass never fails
set -euo pipefail
BIN=${1:?usage: check_rogue.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
ROGUE=$HERE/rogue_kms.py
VECTORS=$HERE/../proto/gen_vectors.py
KC=$BIN/proto/client/kms-client
export PYTHONDONTWRITEBYTECODE=1          # no __pycache__ in the source tree
[ -x "$KC" ] || { echo "no kms-client at $KC (build the kms-client target)"; exit 2; }

W=$(mktemp -d /tmp/rogue-check-XXXXXX)
ROGUE_PID=""
FAILS=0
cleanup() {
  local rc=$?
  if [ -n "$ROGUE_PID" ]; then kill -9 "$ROGUE_PID" 2>/dev/null || true; wait "$ROGUE_PID" 2>/dev/null || true; fi
  [ -n "${KMS_TEST_KEEP:-}" ] && echo "kept $W" || rm -rf "$W"
  return $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }
# value FILE KEY: a value of kms-client's files ("" if the file is missing)
value() { sed -n "s/^$2 = //p" "$1" 2>/dev/null || true; }
kc() {                                   # kms-client, one short wait per try
  local sub=$1; shift
  case $sub in
    deposit|retrieve|send) "$KC" "$sub" --timeout-ms 500 "$@" ;;
    *) "$KC" "$sub" "$@" ;;
  esac
}

A=sip:alice@rogue.test B=sip:bob@rogue.test C=sip:carol@rogue.test
MB=mailbox.rogue.test

# ---- parties: a population (lg_pop.h) and kms-client key files
#      (kms_keyfile.h), random keys, mode 0600; plus the PROTOCOL.md
#      section 15 parties with their fixed keys.
umask 077
python3 - "$W" "$A" "$B" "$C" "$MB" <<'PY'
import os, sys
w, a, b, c, mb = sys.argv[1:]
vec = [("user", "sip:alice@example.org", bytes(range(0x00, 0x20)), "va"),
       ("as", "mailbox.example.org", bytes(range(0x20, 0x40)), "vmb"),
       ("user", "sip:bob@example.org", bytes(range(0x40, 0x60)), "vb")]
parties = [("user", a, os.urandom(32), "a"), ("user", b, os.urandom(32), "b"),
           ("user", c, os.urandom(32), "c"), ("as", mb, os.urandom(32), "mb")]
parties += vec

def write(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, text.encode())
    os.close(fd)

write(w + "/pop", "# IMS KMS load-generator population. Secret: keep mode 0600.\n" +
      "".join("%s %s 1 %s\n" % (k, i, key.hex()) for k, i, key, _ in parties))
for kind, pid, key, name in parties:
    write("%s/%s.key" % (w, name), "# IMS KMS party key. Secret: keep mode 0600.\n"
          "id = %s\nkind = %s\ngen = 1\nkey = %s\n" % (pid, kind, key.hex()))
# an AS nobody enrolled, and the real AS's id with a wrong key
write(w + "/stranger.key", "id = stranger.rogue.test\nkind = as\ngen = 1\nkey = %s\n"
      % os.urandom(32).hex())
write(w + "/fakemb.key", "id = %s\nkind = as\ngen = 1\nkey = %s\n" % (mb, os.urandom(32).hex()))
PY
[ "$(stat -c %a "$W/pop")" = 600 ] && pass "population written, mode 0600" || fail "population mode"

# start_rogue MODE [EVERY]: sets ROGUE_PID and SERVER
start_rogue() {
  rm -f "$W/port"
  python3 "$ROGUE" --population "$W/pop" --port 0 --port-file "$W/port" \
    --mode "$1" --every "${2:-1}" > "$W/rogue.out" 2> "$W/rogue.err" &
  ROGUE_PID=$!
  for _ in $(seq 200); do [ -s "$W/port" ] && break; sleep 0.025; done
  [ -s "$W/port" ] || { cat "$W/rogue.err"; echo "rogue_kms did not start"; exit 1; }
  SERVER=127.0.0.1:$(cat "$W/port")
}

# stop_rogue WANT: SIGTERM; exit 0 and the summary line equal to WANT
# ("tampered=N deposits=N retrieves=N")
stop_rogue() {
  local rc=0 got
  kill -TERM "$ROGUE_PID"; wait "$ROGUE_PID" || rc=$?; ROGUE_PID=""
  got=$(cat "$W/rogue.out")
  sed -n 's/^rogue_kms: mode=/  details: mode=/p' "$W/rogue.err"
  [ "$rc" -eq 0 ] && [ "$got" = "rogue_kms: $1" ] && pass "SIGTERM: exit 0, '$got'" ||
    fail "SIGTERM: exit $rc, printed '$got', want 'rogue_kms: $1'"
}

# deposit N: A's token, the mailbox deposits, A opens: $W/eaN.tok,
# $W/pN.txt (the security parameters), $W/kaN.txt (A's key_id and K)
deposit() {
  kc token --key "$W/a.key" --peer "$B" --out "$W/ea$1.tok"
  kc deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea$1.tok" \
    --params-out "$W/p$1.txt" --reply-out "$W/r$1.txt" > /dev/null
  kc open --key "$W/a.key" --token "$W/ea$1.tok" --reply "$W/r$1.txt" --out "$W/ka$1.txt"
}

# retrieve N OUT: B retrieves deposit N into $W/OUT.txt; sets RC and ERR
retrieve() {
  RC=0
  kc retrieve --server "$SERVER" --key "$W/b.key" --params "$W/p$1.txt" \
    --out "$W/$2.txt" > /dev/null 2> "$W/$2.err" || RC=$?
  ERR=$(cat "$W/$2.err")
}

# refused WHAT WANT CMD...: CMD must exit 2 printing "WHAT refused: WANT"
refused() {
  local what=$1 want=$2 rc=0 out; shift 2
  out=$("$@" 2>&1 > /dev/null) || rc=$?
  [ "$rc" -eq 2 ] && [ "$out" = "$what refused: $want" ] && pass "$want: $what refused" ||
    fail "want $what refused: $want, got exit $rc: $out"
}

# ---- honest ----
echo "== honest"
start_rogue honest
deposit 1
retrieve 1 kb1
KA=$(value "$W/ka1.txt" k); KB=$(value "$W/kb1.txt" k)
[ "$RC" -eq 0 ] && [ ${#KA} -eq 64 ] && [ "$KA" = "$KB" ] &&
  pass "honest: B got A's K ($KA)" || fail "honest: rc $RC '$ERR' K_A=$KA K_B=$KB"
[ "$(value "$W/ka1.txt" key_id)" = "$(value "$W/p1.txt" key_id)" ] &&
  [ "$(value "$W/kb1.txt" key_id)" = "$(value "$W/p1.txt" key_id)" ] &&
  pass "honest: same key id for A and B" || fail "honest: key ids differ"
[ "$(value "$W/p1.txt" k_gen)" = 1 ] && pass "honest: k_gen 1" || fail "k_gen $(value "$W/p1.txt" k_gen)"
# The pair keeps its K; every deposit has its own key id; any retrieve of it
# gets the same K.
deposit 2
retrieve 2 kb2
[ "$RC" -eq 0 ] && [ "$(value "$W/ka2.txt" k)" = "$KA" ] && [ "$(value "$W/kb2.txt" k)" = "$KA" ] &&
  [ "$(value "$W/p2.txt" key_id)" != "$(value "$W/p1.txt" key_id)" ] &&
  pass "honest: second deposit of the pair: same K, new key id" || fail "honest: second deposit"
retrieve 1 kb1b
[ "$RC" -eq 0 ] && [ "$(value "$W/kb1b.txt" k)" = "$KA" ] && pass "honest: deposit 1 retrieved again" ||
  fail "honest: second retrieve: $ERR"
# Refusals (section 10 / 12).
refused deposit UNKNOWN_PARTY kc deposit --server "$SERVER" --key "$W/stranger.key" \
  --token "$W/ea1.tok" --params-out "$W/x.txt" --reply-out "$W/x.txt"
refused deposit AUTH_FAILED kc deposit --server "$SERVER" --key "$W/fakemb.key" \
  --token "$W/ea1.tok" --params-out "$W/x.txt" --reply-out "$W/x.txt"
refused deposit WRONG_ROLE kc deposit --server "$SERVER" --key "$W/c.key" --force-mismatch \
  --token "$W/ea1.tok" --params-out "$W/x.txt" --reply-out "$W/x.txt"
sed "s/^id_b = .*/id_b = $C/" "$W/ea1.tok" > "$W/ea-swapped.tok"    # Ea sealed for (A,B)
refused deposit ID_MISMATCH kc deposit --server "$SERVER" --key "$W/mb.key" \
  --token "$W/ea-swapped.tok" --params-out "$W/x.txt" --reply-out "$W/x.txt"
# deposit 1's parameters with one bit of the key id flipped
python3 - "$W/p1.txt" "$W/p-badkid.txt" <<'PY'
import sys
t = open(sys.argv[1]).read().splitlines()
out = []
for l in t:
    if l.startswith("key_id = "):
        kid = bytearray.fromhex(l[9:]); kid[0] ^= 0x80; l = "key_id = " + kid.hex()
    out.append(l)
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
refused retrieve UNKNOWN_KEY_ID kc retrieve --server "$SERVER" --key "$W/b.key" \
  --params "$W/p-badkid.txt" --out "$W/x.txt"
# deposit 1's key id with deposit 2's Ea: not the deposited handle
{ grep -v '^token = ' "$W/p1.txt"; grep '^token = ' "$W/p2.txt"; } > "$W/p-otherea.txt"
refused retrieve HANDLE_MISMATCH kc retrieve --server "$SERVER" --key "$W/b.key" \
  --params "$W/p-otherea.txt" --out "$W/x.txt"
# Carol seals Eb for Bob's deposit with her own key
refused retrieve AUTH_FAILED kc retrieve --server "$SERVER" --key "$W/c.key" \
  --force-mismatch --params "$W/p1.txt" --out "$W/x.txt"
# The PROTOCOL.md section 15 DEPOSIT_REQ, byte for byte: the reply opens
# for A with kms-client (Ea's nonce binds it); then garbage and a reply
# type get no answer, a version 2 header gets BAD_VERSION.
if python3 - "$VECTORS" "$SERVER" "$W" <<'PY'
import importlib.util, socket, struct, sys
spec = importlib.util.spec_from_file_location("gv", sys.argv[1])
gv = importlib.util.module_from_spec(spec); spec.loader.exec_module(gv)
host, port = sys.argv[2].rsplit(":", 1); w = sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
s.connect((host, int(port)))
def ask(d, want_reply=True):
    s.send(d)
    try:
        r = s.recv(2048)
    except socket.timeout:
        r = None
    if want_reply != (r is not None):
        sys.exit("%s reply to %s" % ("no" if want_reply else "a", d[:16].hex()))
    return r
r = ask(gv.DEP_REQ)
assert len(r) == 100 and r[:4] == b"KM\x01\x02" and r[4:8] == gv.DEP_REQ[4:8], r.hex()
assert r[28:32] == b"\x00\x00\x00\x01"
open(w + "/vreply.txt", "w").write("reply = %s\n" % r.hex())
open(w + "/vea.tok", "w").write("id_a = %s\nid_b = %s\ntoken = %s\n" %
                                (gv.ID_A.decode(), gv.ID_B.decode(), gv.EA.hex()))
ask(b"not a kms datagram", False)
ask(gv.DEP_RESP, False)
r = ask(gv.DEP_REQ[:2] + b"\x02" + gv.DEP_REQ[3:])
assert r == b"KM\x01\x7f" + gv.DEP_REQ[4:8] + b"\x00\x02\x00\x00\x00\x02", r.hex()
i = len(gv.DEP_REQ) - len(gv.EAS)          # Eas claiming role B
r = ask(gv.DEP_REQ[:i] + b"\x03" + gv.DEP_REQ[i + 1:])
assert r == b"KM\x01\x7f" + gv.DEP_REQ[4:8] + b"\x00\x02\x00\x00\x00\x06", r.hex()
r = ask(gv.RET_REQ)      # the vector key id was never issued here
assert r == b"KM\x01\x7f" + gv.RET_REQ[4:8] + b"\x00\x02\x00\x00\x00\x0b", r.hex()
PY
then
  pass "vector DEPOSIT_REQ answered; garbage and a reply dropped; BAD_VERSION, WRONG_ROLE, UNKNOWN_KEY_ID"
  if kc open --key "$W/va.key" --token "$W/vea.tok" --reply "$W/vreply.txt" --out "$W/vka.txt"; then
    pass "vector deposit: the keybox opens for A with kms-client"
  else
    fail "vector deposit: kms-client cannot open the keybox"
  fi
else
  fail "vector exchange"
fi
# deposits: 2 + 4 refused + the vector, BAD_VERSION, WRONG_ROLE; retrieves:
# 3 + 3 refused + the vector
stop_rogue "tampered=0 deposits=9 retrieves=7"
grep -q "dropped=2 " "$W/rogue.err" && pass "the two unanswerable datagrams counted as dropped" ||
  fail "drop count: $(cat "$W/rogue.err")"

# ---- the lies ----
echo "== wrong-k"
start_rogue wrong-k
deposit 1
retrieve 1 kb1
KA=$(value "$W/ka1.txt" k); KB=$(value "$W/kb1.txt" k)
[ "$RC" -eq 0 ] && [ ${#KB} -eq 64 ] && [ "$KA" != "$KB" ] &&
  pass "wrong-k: retrieve succeeds (keybox opens) but K_B != K_A" ||
  fail "wrong-k: rc $RC '$ERR' K_A=$KA K_B=$KB"
stop_rogue "tampered=1 deposits=1 retrieves=1"

echo "== bad-tag"
start_rogue bad-tag
deposit 1
rm -f "$W/kb1.txt"
retrieve 1 kb1
[ "$RC" -ne 0 ] && [ ! -e "$W/kb1.txt" ] && echo "$ERR" | grep -q "keybox does not open" &&
  pass "bad-tag: kms-client fails to open ($ERR)" || fail "bad-tag: rc $RC '$ERR'"
stop_rogue "tampered=1 deposits=1 retrieves=1"

echo "== wrong-key-id"
start_rogue wrong-key-id
deposit 1
rm -f "$W/kb1.txt"
retrieve 1 kb1
[ "$RC" -ne 0 ] && [ ! -e "$W/kb1.txt" ] && echo "$ERR" | grep -q "another key id" &&
  pass "wrong-key-id: kms-client rejects the reply ($ERR)" || fail "wrong-key-id: rc $RC '$ERR'"
stop_rogue "tampered=1 deposits=1 retrieves=1"

echo "== wrong-status"
start_rogue wrong-status
deposit 1
retrieve 1 kb1
[ "$RC" -eq 2 ] && [ "$ERR" = "retrieve refused: INTERNAL" ] &&
  pass "wrong-status: $ERR" || fail "wrong-status: rc $RC '$ERR'"
stop_rogue "tampered=1 deposits=1 retrieves=1"

echo "== wrong-k --every 3"
start_rogue wrong-k 3
deposit 1
KA=$(value "$W/ka1.txt" k)
pattern=""
for i in 1 2 3 4 5 6 7; do
  retrieve 1 "kbe$i"
  [ "$RC" -eq 0 ] || fail "every 3: retrieve $i: rc $RC '$ERR'"
  [ "$(value "$W/kbe$i.txt" k)" = "$KA" ] && pattern+="=" || pattern+="x"
done
# a refused RETRIEVE is not a key reply: it neither counts nor is tampered
refused retrieve UNKNOWN_KEY_ID kc retrieve --server "$SERVER" --key "$W/b.key" \
  --params "$W/p-badkid.txt" --out "$W/x.txt"
retrieve 1 kbe8; [ "$(value "$W/kbe8.txt" k)" = "$KA" ] && pattern+="=" || pattern+="x"
retrieve 1 kbe9; [ "$(value "$W/kbe9.txt" k)" = "$KA" ] && pattern+="=" || pattern+="x"
[ "$pattern" = "==x==x==x" ] && pass "every 3: lies exactly on the 3rd, 6th, 9th key reply ($pattern)" ||
  fail "every 3: pattern $pattern, want ==x==x==x"
stop_rogue "tampered=3 deposits=1 retrieves=10"

# ---- usage errors ----
rc=0; python3 "$ROGUE" --population "$W/pop" --port 0 --mode lie >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] && pass "unknown mode: exit 2" || fail "unknown mode: exit $rc"
printf 'user x 1 zz\n' > "$W/badpop"
rc=0; python3 "$ROGUE" --population "$W/badpop" --port 0 --mode honest >/dev/null 2>"$W/badpop.err" || rc=$?
[ "$rc" -eq 2 ] && pass "bad population: exit 2 ($(cat "$W/badpop.err"))" || fail "bad population: exit $rc"

if [ "$FAILS" -eq 0 ]; then echo "check_rogue: all passed"; else echo "check_rogue: $FAILS failed"; exit 1; fi
