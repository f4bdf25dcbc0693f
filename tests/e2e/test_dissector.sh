#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Wireshark dissector (proto/wireshark/kms.lua) against REAL traffic:
# dumpcap captures kmsd's UDP port and kms-mailbox's TCP port on loopback
# while the real binaries exchange every message type of docs/PROTOCOL.md:
#   part I  DEPOSIT_REQ/RESP, RETRIEVE_REQ/RESP (kms-client), ERROR with
#           REPLAY, AUTH_FAILED, UNKNOWN_PARTY, STALE, BAD_PERIOD (real
#           refusals), a short kms-loadgen run, IBE_KEY_REQ/RESP
#           (kms-ibake keys);
#   part II I1 R1 I2 R2 DEPOSIT DEPOSIT_ACK (kms-ibake send, a message
#           spread over many TCP segments), F1 F2 F3 MSG NEXT END and
#           F1 F2 F3 MSG DELETE END (kms-ibake fetch --keep, then fetch),
#           an ERROR frame (a spoofed --as).
# Then tshark with the Lua plugin decodes the capture and a checker asserts:
# every KMS datagram and every TCP segment of the mailbox decodes as our
# protocols; every message type was seen; every field of each type is
# present in every message of that type; no packet is "[Malformed
# Packet]", has a Lua error, or carries an expert info of severity warning
# or error from kms/kmsmb. Negative controls in the same capture: a few
# deliberately malformed datagrams (txid 0xbad000NN; kmsd refuses or drops
# them) must each carry the expected expert info, so the checker is known
# to see one. Also: section 12's status names (parsed from PROTOCOL.md)
# equal the dissector's; the heuristics alone (no port given) find every
# well-formed datagram and every mailbox frame; the test vectors of section
# 15 decode to their documented values on the default port 7430.
# Exit 77 (skip) without tshark/dumpcap or capture rights.
# Usage: test_dissector.sh BUILD_DIR
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
LUA=$SRC/proto/wireshark/kms.lua

for t in tshark dumpcap; do
  if ! command -v "$t" >/dev/null 2>&1; then
    echo "SKIP: $t not found (Debian: DEBIAN_FRONTEND=noninteractive apt-get install tshark)"
    exit 77
  fi
done
if [ "$(id -u)" -ne 0 ] && ! getcap "$(command -v dumpcap)" 2>/dev/null | grep -q cap_net_raw; then
  echo "SKIP: capturing on lo needs root or dumpcap with cap_net_raw"
  exit 77
fi
if ! tshark -G protocols -X "lua_script:$LUA" 2>/dev/null | grep -qP '\tkmsmb$'; then
  echo "SKIP: this tshark has no Lua support (or the plugin failed to load):"
  tshark -G protocols -X "lua_script:$LUA" 2>&1 | grep -iv '^P' | head -5
  exit 77
fi

# shellcheck source=lib.sh
. "$HERE/lib.sh"
MAILBOX=$BIN/dataplane/kms-mailbox
IBAKE=$BIN/proto/client/kms-ibake
LOADGEN=$BIN/perf/loadgen/kms-loadgen
MB_PID="" CAP_PID=""

extra_cleanup() {
  local p
  for p in "$CAP_PID" "$MB_PID"; do
    [ -z "$p" ] || kill -9 "$p" 2>/dev/null || true
    [ -z "$p" ] || wait "$p" 2>/dev/null || true
  done
}

A=sip:alice@ims.example
B=sip:bob@ims.example
C=sip:carol@ims.example
MB=mailbox.ims.example

T0=$(date +%s)
setup_env
K="$KMSCTL -c $W/kms.conf"
$K init >/dev/null
$K ibe init --out "$W/ibe.params" >/dev/null
enroll user "$A" a; enroll user "$B" b; enroll user "$C" c; enroll as "$MB" mb
$K enroll-bulk --users 16 --as 1 --out "$W/pop.txt" >/dev/null
start_kmsd
PORT=$(server_port)

# The mailbox needs its IBE keys before it starts (this exchange is not
# captured; every other party's is).
keys() { # NAME [extra]: X's IBE keys into $W/NAME.ibe
  local n=$1; shift
  "$IBAKE" keys --server "$SERVER" --key "$W/$n.key" --params "$W/ibe.params" \
    --out "$W/$n.ibe" --timeout-ms 5000 "$@"
}
keys mb >/dev/null || { echo "mailbox keys"; exit 1; }
"$MAILBOX" --listen 127.0.0.1:0 --store "$W/mbox" --keys "$W/mb.ibe" \
  --params "$W/ibe.params" > "$W/mailbox.log" 2>&1 &
MB_PID=$!
for _ in $(seq 200); do
  grep -q "ready on" "$W/mailbox.log" && break
  kill -0 "$MB_PID" 2>/dev/null || break
  sleep 0.05
done
MBOX=$(sed -n 's/.*ready on \([0-9.]*:[0-9]*\) .*/\1/p' "$W/mailbox.log" | tail -1)
[ -n "$MBOX" ] || { echo "kms-mailbox did not start:"; cat "$W/mailbox.log"; exit 1; }
MBPORT=${MBOX##*:}

# ---- capture
CAP=$W/kms.pcapng
dumpcap -q -i lo -f "udp port $PORT or tcp port $MBPORT" -w "$CAP" > "$W/dumpcap.log" 2>&1 &
CAP_PID=$!
for _ in $(seq 200); do
  grep -q "^File:" "$W/dumpcap.log" && break
  kill -0 "$CAP_PID" 2>/dev/null || break
  sleep 0.05
done
grep -q "^File:" "$W/dumpcap.log" || { echo "dumpcap did not start:"; cat "$W/dumpcap.log"; exit 1; }
sleep 0.3
pass "capturing udp port $PORT and tcp port $MBPORT on lo"

# ---- part I: the core exchange
$CLIENT token --key "$W/a.key" --peer "$B" --out "$W/ea.tok"
$CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea.tok" \
  --params-out "$W/params.txt" --reply-out "$W/reply.txt" \
  --save-request "$W/deposit.req" >/dev/null || fail "deposit"
$CLIENT retrieve --server "$SERVER" --key "$W/b.key" --params "$W/params.txt" \
  --out "$W/kb.txt" --save-request "$W/retrieve.req" >/dev/null || fail "retrieve"

# refusals: each must come back as the ERROR it names
refused() { # STATUS CMD...: CMD must be refused with STATUS
  local want=$1 out; shift
  out=$("$@" 2>&1) && { fail "$want expected, accepted: $out"; return; }
  echo "$out" | grep -q "$want" && pass "refused $want" || fail "$want expected: $out"
}
refused REPLAY "$KMS_CLIENT_BIN" send --server "$SERVER" --in "$W/deposit.req" --timeout-ms 1000
refused REPLAY "$KMS_CLIENT_BIN" send --server "$SERVER" --in "$W/retrieve.req" --timeout-ms 1000
sed -e "s/^id = .*/id = $MB/" -e "s/^kind = .*/kind = as/" "$W/c.key" > "$W/fake-mb.key"; chmod 600 "$W/fake-mb.key"
$CLIENT token --key "$W/a.key" --peer "$B" --out "$W/ea2.tok"
refused AUTH_FAILED $CLIENT deposit --server "$SERVER" --key "$W/fake-mb.key" \
  --token "$W/ea2.tok" --params-out "$W/p2.txt" --reply-out "$W/r2.txt"
sed "s/^id = .*/id = rogue.ims.example/" "$W/mb.key" > "$W/rogue.key"; chmod 600 "$W/rogue.key"
refused UNKNOWN_PARTY $CLIENT deposit --server "$SERVER" --key "$W/rogue.key" \
  --token "$W/ea2.tok" --params-out "$W/p3.txt" --reply-out "$W/r3.txt"
refused STALE $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea2.tok" \
  --params-out "$W/p4.txt" --reply-out "$W/r4.txt" --ts-offset-ms -60000

# ---- IBE_KEY_REQ/RESP (section 17)
for n in a b c; do
  keys $n --save-request "$W/$n.ibereq" >/dev/null && pass "IBE keys for $n" || fail "IBE keys for $n"
done
refused REPLAY "$KMS_CLIENT_BIN" send --server "$SERVER" --in "$W/a.ibereq" --timeout-ms 1000
refused BAD_PERIOD keys a --period 2001-01 --out "$W/x.ibe"
next=$(date -u -d "$(date -u +%Y-%m-01) +1 month" +%Y-%m)
keys a --period "$next" --out "$W/a-next.ibe" >/dev/null && pass "IBE keys for $next" \
  || fail "next period keys"

# ---- negative controls: malformed datagrams, txid 0xbad000NN; the
# checker requires the named expert info on each (and on nothing else).
python3 - "$W/deposit.req" "$W" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
d = bytearray.fromhex(re.sub(r"\s", "", text.split("=")[-1]))
def hdr(b, n, body_len=None):
    b[4:8] = (0xbad00000 + n).to_bytes(4, "big")
    b[8:10] = ((len(b) - 12) if body_len is None else body_len).to_bytes(2, "big")
    return b
ida = d[12]; idb = d[13 + ida]; ids = d[14 + ida + idb]
ea = 15 + ida + idb + ids                     # offset of the Ea token
c = {}
b = bytearray(d); b[2] = 2; c[1] = hdr(b, 1)                 # version 2: BAD_VERSION
b = bytearray(d); b[3] = 0x09; c[2] = hdr(b, 2)              # type 0x09: BAD_TYPE
b = bytearray(d) + b"\0"; c[3] = hdr(b, 3)                   # trailing byte: MALFORMED
b = bytearray(d); c[4] = hdr(b, 4, len(d) - 12 + 5)          # body_len wrong: dropped
b = bytearray(d); b[1] = 0x58; c[5] = hdr(b, 5)              # magic "KX": dropped
b = bytearray(d); b[ea] = 3; c[6] = hdr(b, 6)                # Ea role B: WRONG_ROLE
b = bytearray(d); b[ea + 25:ea + 27] = (1).to_bytes(2, "big"); c[7] = hdr(b, 7)  # ct_len 1
b = bytearray(d); b[13] = 0x20; c[8] = hdr(b, 8)             # space in ID-A: MALFORMED
for n, v in c.items():
    open("%s/bad%d.req" % (sys.argv[2], n), "w").write(v.hex() + "\n")
PY
for n in 1 2 3 4 5 6 7 8; do
  "$KMS_CLIENT_BIN" send --server "$SERVER" --in "$W/bad$n.req" --timeout-ms 300 \
    > "$W/bad$n.out" 2>&1 || true
done
grep -q "status=BAD_VERSION" "$W/bad1.out" && grep -q "status=BAD_TYPE" "$W/bad2.out" \
  && grep -q "status=MALFORMED" "$W/bad3.out" && grep -q "status=WRONG_ROLE" "$W/bad6.out" \
  && pass "malformed datagrams sent (kmsd: BAD_VERSION, BAD_TYPE, MALFORMED, WRONG_ROLE)" \
  || fail "negative controls: $(cat "$W"/bad[1236].out)"

# ---- kms-loadgen, bounded
"$LOADGEN" --population "$W/pop.txt" --server "$SERVER" --mix 1:1 --pairs 4 \
  --seed-deposits 4 --rate 100 --duration 2 --warmup 0 --quiet > "$W/load.txt" 2>&1 \
  && pass "kms-loadgen 2 s" || fail "kms-loadgen: $(tail -5 "$W/load.txt")"

# ---- part II: the mailbox
head -c 300000 /dev/urandom > "$W/voice.bin"
"$IBAKE" send --mailbox "$MBOX" --mailbox-id "$MB" --to "$B" --keys "$W/a.ibe" \
  --params "$W/ibe.params" --in "$W/voice.bin" > "$W/send.out" 2>&1 \
  && pass "A deposited 300 kB" || fail "send: $(cat "$W/send.out")"
fetch() { # DIR [extra]
  local d=$1; shift
  mkdir -p "$d"
  "$IBAKE" fetch --mailbox "$MBOX" --mailbox-id "$MB" --keys "$W/b.ibe" \
    --params "$W/ibe.params" --out-dir "$d" "$@"
}
fetch "$W/in1" --keep | grep -q "fetched: 1 message" && pass "B fetched with --keep (NEXT)" \
  || fail "fetch --keep"
fetch "$W/in2" | grep -q "fetched: 1 message" && pass "B fetched (DELETE)" || fail "fetch"
cmp -s "$W"/in2/*.msg "$W/voice.bin" && pass "B got A's bytes" || fail "message bytes"
out=$("$IBAKE" send --mailbox "$MBOX" --mailbox-id "$MB" --to "$B" --keys "$W/c.ibe" \
  --params "$W/ibe.params" --in "$W/voice.bin" --as "$A" 2>&1) \
  && fail "spoofed --as accepted" || pass "C claiming A refused: ${out##*: }"
# The mailbox's own ERROR frame: A with next month's keys (I1 names a
# period the mailbox's keys are not for: BAD_PERIOD).
out=$("$IBAKE" send --mailbox "$MBOX" --mailbox-id "$MB" --to "$B" --keys "$W/a-next.ibe" \
  --params "$W/ibe.params" --in "$W/voice.bin" 2>&1) \
  && fail "next period accepted by the mailbox" \
  || { echo "$out" | grep -q BAD_PERIOD && pass "mailbox ERROR BAD_PERIOD" || fail "next period: $out"; }

# ---- stop the capture
sleep 0.3
kill -INT "$CAP_PID"
wait_exit "$CAP_PID" 10 || fail "dumpcap exit status"
CAP_PID=""
kill -TERM "$MB_PID"; wait_exit "$MB_PID" 10 || fail "mailbox exit status"; MB_PID=""
stop_kmsd || fail "kmsd exit status"
T1=$(date +%s)

# ---- decode and check
TS=(tshark -n -r "$CAP" -X "lua_script:$LUA" -d "udp.port==$PORT,kms" -d "tcp.port==$MBPORT,kmsmb")
"${TS[@]}" -2 -T pdml > "$W/cap.pdml" 2> "$W/tshark.err" || fail "tshark -T pdml: $(cat "$W/tshark.err")"
tshark -G values -X "lua_script:$LUA" 2>/dev/null > "$W/values.txt"
tshark -G fields -X "lua_script:$LUA" 2>/dev/null > "$W/fields.txt"
# the heuristics alone (no port given; kmsmb's is off by default): what
# they claim
tshark -n -r "$CAP" -X "lua_script:$LUA" -o udp.try_heuristic_first:TRUE \
  -o tcp.try_heuristic_first:TRUE -o kmsmb.heuristic:TRUE -Y "kms or kmsmb" -T fields \
  -E occurrence=a -E aggregator=, -e frame.number -e kms.txid -e kms.type -e kmsmb.type \
  > "$W/heur.txt" 2>>"$W/tshark.err" || fail "tshark (heuristic)"

python3 - "$W/cap.pdml" "$PORT" "$MBPORT" "$SRC/docs/PROTOCOL.md" "$W/values.txt" \
  "$W/fields.txt" "$W/heur.txt" <<'PY' && pass "every message decodes with every field, no malformed packet, no warning" \
  || fail "dissector checks (above)"
import re, sys
import xml.etree.ElementTree as ET

pdml, port, mbport, protocol_md, values, fields, heur = sys.argv[1:]
port, mbport = int(port), int(mbport)
errors = []
def err(msg):
    """Print the first 30 per-frame errors, and every other one."""
    nframe = sum(1 for e in errors if e.startswith("frame "))
    if not msg.startswith("frame ") or nframe < 30:
        print("  " + msg)
    elif nframe == 30:
        print("  ... (further frame errors not shown)")
    errors.append(msg)

HDR = ["kms.magic", "kms.version", "kms.type", "kms.txid", "kms.body_len", "kms.reserved"]
TOKEN = ["kms.token", "kms.token.role", "kms.token.gen", "kms.token.ts_ms", "kms.token.nonce",
         "kms.token.ct_len", "kms.token.ct", "kms.token.tag"]
KEY_ID = ["kms.key_id", "kms.key_id.time_ms", "kms.key_id.worker", "kms.key_id.seq",
          "kms.key_id.random"]
REPLY = ["kms.request_in", "kms.time"]
# Each type: the fields of docs/PROTOCOL.md sections 3, 5, 6, 17.
KMS = {
    0x01: ("DEPOSIT_REQ", HDR + ["kms.id_a.len", "kms.id_a", "kms.id_b.len", "kms.id_b",
                                 "kms.id_as.len", "kms.id_as"] + TOKEN, {"token": 2}),
    0x02: ("DEPOSIT_RESP", HDR + KEY_ID + REPLY + ["kms.k_gen", "kms.expiry_ms", "kms.keybox",
           "kms.keybox.nonce", "kms.keybox.ct", "kms.keybox.tag"], {}),
    0x03: ("RETRIEVE_REQ", HDR + ["kms.id_a.len", "kms.id_a", "kms.id_b.len", "kms.id_b"]
           + KEY_ID + TOKEN, {"token": 2}),
    0x04: ("RETRIEVE_RESP", HDR + KEY_ID + REPLY + ["kms.k_gen", "kms.expiry_ms", "kms.keybox",
           "kms.keybox.nonce", "kms.keybox.ct", "kms.keybox.tag"], {}),
    0x05: ("IBE_KEY_REQ", HDR + ["kms.id_x.len", "kms.id_x", "kms.period.len", "kms.period"]
           + TOKEN, {"token": 1}),
    0x06: ("IBE_KEY_RESP", HDR + REPLY + ["kms.ibe.kgc_id", "kms.ibe.nonce", "kms.ibe.ct",
           "kms.ibe.tag"], {}),
    0x7f: ("ERROR", HDR + REPLY + ["kms.status"], {}),
}
BLOB = ["kmsmb.blob", "kmsmb.blob.len", "kmsmb.blob.sakke_r", "kmsmb.blob.sakke_h",
        "kmsmb.blob.ct", "kmsmb.blob.tag"]
MHDR = ["kmsmb.len", "kmsmb.version", "kmsmb.type"]
SEALED = MHDR + ["kmsmb.sealed", "kmsmb.sealed.ct_len", "kmsmb.sealed.ct", "kmsmb.sealed.tag"]
MB = {
    0x11: ("I1", MHDR + ["kmsmb.id_a.len", "kmsmb.id_a", "kmsmb.id_b.len", "kmsmb.id_b",
                         "kmsmb.period"] + BLOB, {"blob": 1}),
    0x12: ("R1", MHDR + ["kmsmb.id_mb.len", "kmsmb.id_mb"] + BLOB, {"blob": 1}),
    0x13: ("I2", MHDR + BLOB, {"blob": 2}),
    0x14: ("R2", MHDR + BLOB, {"blob": 1}),
    0x15: ("DEPOSIT", SEALED, {}),
    0x16: ("DEPOSIT_ACK", SEALED, {}),
    0x21: ("F1", MHDR + ["kmsmb.id_b.len", "kmsmb.id_b", "kmsmb.period"] + BLOB, {"blob": 1}),
    0x22: ("F2", MHDR + BLOB, {"blob": 1}),
    0x23: ("F3", SEALED, {}),
    0x24: ("MSG", SEALED, {}),
    0x25: ("END", SEALED, {}),
    0x26: ("DELETE", SEALED, {}),
    0x27: ("NEXT", SEALED, {}),
    0x7f: ("ERROR", MHDR + ["kmsmb.status"], {}),
}
# Negative controls (txid -> the expert each request must carry).
BAD = {0xbad00001: "kms.bad_version", 0xbad00002: "kms.bad_type",
       0xbad00003: "kms.trailing_bytes", 0xbad00004: "kms.body_len_mismatch",
       0xbad00005: "kms.bad_magic", 0xbad00006: "kms.wrong_role",
       0xbad00007: "kms.ct_len_range", 0xbad00008: "kms.id_bad_char"}
WANT_STATUS = {"REPLAY", "AUTH_FAILED", "UNKNOWN_PARTY", "STALE", "BAD_PERIOD",
               "BAD_VERSION", "BAD_TYPE", "MALFORMED", "WRONG_ROLE"}
WARN = 0x00600000          # PI_WARN; PI_ERROR is 0x00800000

def walk(e):
    yield e
    for c in e:
        yield from walk(c)

def experts(proto_el):
    """(expert field name, severity) of every expert item under proto_el."""
    out = []
    for f in walk(proto_el):
        if f.get("name") != "_ws.expert":
            continue
        sev, name = 0, None
        for c in f:
            n = c.get("name", "")
            if n == "_ws.expert.severity":
                sev = int(c.get("show"), 0)
            elif n not in ("_ws.expert.message", "_ws.expert.group"):
                name = n
        out.append((name, sev))
    return out

def names(proto_el):
    return {f.get("name") for f in walk(proto_el)}

def count(proto_el, field):
    return sum(1 for f in walk(proto_el) if f.get("name") == field)

def field(proto_el, name):
    for f in walk(proto_el):
        if f.get("name") == name:
            return f
    return None

seen_kms, seen_mb, statuses = {}, {}, set()
bad_seen, n_udp, n_tcp, n_pdu, n_retrans = {}, 0, 0, 0, 0
udp_frames = set()
for _, pkt in ET.iterparse(pdml, events=("end",)):
    if pkt.tag != "packet":
        continue
    protos = {p.get("name"): p for p in pkt.findall("proto")}
    num = int(field(protos["frame"], "frame.number").get("show"))
    kms_els = [p for p in pkt.findall("proto") if p.get("name") == "kms"]
    control = any(int(field(p, "kms.txid").get("show"), 0) in BAD and
                  int(field(p, "kms.type").get("show"), 0) != 0x7f
                  for p in kms_els if field(p, "kms.txid") is not None)
    # An exception in any dissector shows as a visible "[Malformed Packet]";
    # an expert of group Malformed adds a hidden one (allowed only on the
    # negative controls); a Lua error is an expert "Lua Error: ...".
    lua_err = None
    for f in walk(pkt):
        if f.get("name") == "_ws.malformed" and (f.get("hide") != "yes" or not control):
            err("frame %d: %s" % (num, f.get("showname")))
        text = f.get("showname") or f.get("show") or ""
        if "Lua Error" in text and lua_err is None:
            lua_err = text
            err("frame %d: %s" % (num, text))
    mb_els = [p for p in pkt.findall("proto") if p.get("name") == "kmsmb"]
    if "udp" in protos:
        u = protos["udp"]
        sp = int(field(u, "udp.srcport").get("show")); dp = int(field(u, "udp.dstport").get("show"))
        if port in (sp, dp):
            n_udp += 1
            udp_frames.add(num)
            if len(kms_els) != 1:
                err("frame %d: UDP datagram on port %d not decoded as kms" % (num, port))
    if "tcp" in protos:
        t = protos["tcp"]
        tl = int(field(t, "tcp.len").get("show"))
        if tl > 0:
            n_tcp += 1
            # a retransmission (loopback has zero-window ones) repeats bytes
            # already dissected: TCP leaves it alone, rightly
            retrans = any(field(t, "tcp.analysis." + a) is not None for a in
                          ("retransmission", "spurious_retransmission", "fast_retransmission"))
            n_retrans += retrans
            if not mb_els and field(t, "tcp.reassembled_in") is None and not retrans:
                err("frame %d: TCP segment (%d bytes) neither kmsmb nor part of a reassembled frame"
                    % (num, tl))
    for p in kms_els:
        ty = int(field(p, "kms.type").get("show"), 0)
        txid = int(field(p, "kms.txid").get("show"), 0)
        exps = experts(p)
        bad = [(n, s) for n, s in exps if s >= WARN]
        if txid in BAD and ty != 0x7f:
            bad_seen[txid] = [n for n, _ in bad]
            if BAD[txid] not in bad_seen[txid]:
                err("frame %d: negative control 0x%08x lacks expert %s (has %s)"
                    % (num, txid, BAD[txid], bad_seen[txid]))
            continue
        for n, s in bad:
            err("frame %d: %s has expert %s (severity 0x%x)" % (num, KMS.get(ty, ("?",))[0], n, s))
        if ty not in KMS:
            err("frame %d: unknown kms type 0x%02x" % (num, ty)); continue
        name, want, counts = KMS[ty]
        seen_kms[name] = seen_kms.get(name, 0) + 1
        have = names(p)
        miss = [f for f in want if f not in have]
        if miss:
            err("frame %d: %s lacks %s" % (num, name, miss))
        for f, n in counts.items():
            if count(p, "kms." + f) != n:
                err("frame %d: %s has %d kms.%s, not %d" % (num, name, count(p, "kms." + f), f, n))
        if ty == 0x7f:
            s = field(p, "kms.status").get("showname", "")
            m = re.search(r"Status: (\w+) \(\d+\)", s)
            if not m:
                err("frame %d: ERROR status without a name: %s" % (num, s))
            else:
                statuses.add(m.group(1))
    for p in mb_els:
        n_pdu += 1
        ty = int(field(p, "kmsmb.type").get("show"), 0)
        for n, s in experts(p):
            if s >= WARN:
                err("frame %d: kmsmb %s has expert %s (severity 0x%x)"
                    % (num, MB.get(ty, ("?",))[0], n, s))
        if ty not in MB:
            err("frame %d: unknown kmsmb type 0x%02x" % (num, ty)); continue
        name, want, counts = MB[ty]
        seen_mb[name] = seen_mb.get(name, 0) + 1
        have = names(p)
        miss = [f for f in want if f not in have]
        if miss:
            err("frame %d: %s lacks %s" % (num, name, miss))
        for f, n in counts.items():
            if count(p, "kmsmb." + f) != n:
                err("frame %d: %s has %d kmsmb.%s, not %d" % (num, name, count(p, "kmsmb." + f), f, n))
        if ty == 0x7f and not re.search(r"Status: \w+ \(\d+\)",
                                        field(p, "kmsmb.status").get("showname", "")):
            err("frame %d: mailbox ERROR status without a name" % num)
    pkt.clear()

for name, _, _ in KMS.values():
    if name not in seen_kms:
        err("kms %s never seen" % name)
for name, _, _ in MB.values():
    if name not in seen_mb:
        err("kmsmb %s never seen" % name)
for txid, e in BAD.items():
    if txid not in bad_seen:
        err("negative control 0x%08x not in the capture" % txid)
if not WANT_STATUS <= statuses:
    err("ERROR statuses seen %s, missing %s" % (sorted(statuses), sorted(WANT_STATUS - statuses)))

# Section 12's table against the dissector's value strings (both protocols).
doc = open(protocol_md).read()
sec = doc[doc.index("## 12. Status codes"):doc.index("## 13.")]
table = {int(v): n for v, n in re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", sec, re.M)}
for abbr in ("kms.status", "kmsmb.status"):
    vs = {int(v): n for f, v, n in re.findall(r"^V\t(\S+)\t(\d+)\t(\S+)$",
                                              open(values).read(), re.M) if f == abbr}
    if not table or vs != table:
        err("%s names differ from PROTOCOL.md section 12: doc %s, dissector %s"
            % (abbr, table, vs))
# Every field the checker names exists in the dissector (no typo hides a check).
declared = set(re.findall(r"^F\t[^\t]*\t(\S+)\t", open(fields).read(), re.M))
for _, want, _ in list(KMS.values()) + list(MB.values()):
    for f in want:
        if f not in declared:
            err("checker field %s is not declared by the dissector" % f)
# The heuristics alone claim every well-formed datagram (the controls with a
# bad header or type are rightly left alone) and every mailbox frame.
claimed, heur_mb = {}, 0
for line in open(heur):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 4:
        continue
    if parts[1]:
        claimed[int(parts[0])] = (int(parts[1], 0), int(parts[2], 0))
    heur_mb += len([t for t in parts[3].split(",") if t])
if heur_mb != n_pdu:
    err("kmsmb heuristic found %d mailbox frames, the port %d" % (heur_mb, n_pdu))
left = sorted(udp_frames - set(claimed))
ctl = sorted(n for n, (x, t) in claimed.items()
             if x in (0xbad00002, 0xbad00004, 0xbad00005) and t != 0x7f)
if len(left) != 3 or ctl:
    err("heuristic: %d datagrams unclaimed (want the 3 bad-header controls): %s; claimed controls %s"
        % (len(left), left[:10], ctl))

print("  udp datagrams %d, tcp segments with data %d (%d retransmitted), mailbox frames %d"
      % (n_udp, n_tcp, n_retrans, n_pdu))
print("  kms: " + ", ".join("%s %d" % kv for kv in sorted(seen_kms.items())))
print("  kmsmb: " + ", ".join("%s %d" % kv for kv in sorted(seen_mb.items())))
print("  statuses: " + " ".join(sorted(statuses)))
if errors:
    print("  %d error(s)" % len(errors))
sys.exit(1 if errors else 0)
PY
# ---- the test vectors of PROTOCOL.md section 15, on the default port
# 7430 (no -d): every field decodes to the documented inputs.
python3 - "$SRC/docs/PROTOCOL.md" "$W/vectors.pcap" "$LUA" <<'PY' \
  && pass "section 15 vectors decode to their documented values on port 7430" \
  || fail "section 15 vectors (above)"
import re, struct, subprocess, sys
doc, pcap, lua = sys.argv[1:]
text = open(doc).read()
def vec(title):
    m = re.search(re.escape(title) + r"[^\n]*:\n\n```\n([0-9a-f\n]+)```", text)
    return bytes.fromhex(m.group(1).replace("\n", ""))
order = [("DEPOSIT_REQ datagram", 1), ("DEPOSIT_RESP datagram", 0),
         ("RETRIEVE_REQ datagram", 1), ("RETRIEVE_RESP datagram", 0),
         ("ERROR datagram", 0)]
with open(pcap, "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for i, (title, up) in enumerate(order):
        d = vec(title)
        sp, dp = (40000, 7430) if up else (7430, 40000)
        udp = struct.pack(">HHHH", sp, dp, 8 + len(d), 0) + d
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 2])) + udp
        eth = b"\x00" * 12 + b"\x08\x00" + ip
        f.write(struct.pack("<IIII", 1795000000 + i, 0, len(eth), len(eth)) + eth)
fields = ["kms.type", "kms.txid", "kms.body_len", "kms.id_a", "kms.id_b", "kms.id_as",
          "kms.token.role", "kms.token.gen", "kms.token.ts_ms", "kms.token.nonce",
          "kms.token.ct_len", "kms.key_id", "kms.key_id.time_ms", "kms.key_id.worker",
          "kms.key_id.seq", "kms.key_id.random", "kms.k_gen", "kms.expiry_ms",
          "kms.keybox.nonce", "kms.status", "_ws.expert.severity", "_ws.malformed"]
cmd = ["tshark", "-n", "-r", pcap, "-X", "lua_script:" + lua, "-T", "fields",
       "-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=|"]
for x in fields:
    cmd += ["-e", x]
out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
got = [dict(zip(fields, l.split("|"))) for l in out]
A, B, AS = "sip:alice@example.org", "sip:bob@example.org", "mailbox.example.org"
KID = "000001a1ee565f2c00020001deadbeef"
want = [
    {"kms.type": "0x01", "kms.txid": "0x11223344", "kms.body_len": "232", "kms.id_a": A,
     "kms.id_b": B, "kms.id_as": AS, "kms.token.role": "0x01,0x02", "kms.token.gen": "1,1",
     "kms.token.ts_ms": "1795000000000,1795000000250",
     "kms.token.nonce": "a0a1a2a3a4a5a6a7a8a9aaab,b0b1b2b3b4b5b6b7b8b9babb",
     "kms.token.ct_len": "42,42"},
    {"kms.type": "0x02", "kms.txid": "0x11223344", "kms.body_len": "88", "kms.key_id": KID,
     "kms.key_id.time_ms": "1795000000300", "kms.key_id.worker": "2", "kms.key_id.seq": "1",
     "kms.key_id.random": "0xdeadbeef", "kms.k_gen": "1", "kms.expiry_ms": "1795604800300",
     "kms.keybox.nonce": "d0d1d2d3d4d5d6d7d8d9dadb"},
    {"kms.type": "0x03", "kms.txid": "0x55667788", "kms.body_len": "228", "kms.id_a": A,
     "kms.id_b": B, "kms.key_id": KID, "kms.token.role": "0x01,0x03",
     "kms.token.ts_ms": "1795000000000,1795003600000",
     "kms.token.nonce": "a0a1a2a3a4a5a6a7a8a9aaab,c0c1c2c3c4c5c6c7c8c9cacb"},
    {"kms.type": "0x04", "kms.txid": "0x55667788", "kms.key_id": KID, "kms.k_gen": "1",
     "kms.expiry_ms": "1795604800300", "kms.keybox.nonce": "e0e1e2e3e4e5e6e7e8e9eaeb"},
    {"kms.type": "0x7f", "kms.txid": "0x55667788", "kms.body_len": "2", "kms.status": "10"},
]
bad = 0
if len(got) != len(want):
    print("  %d packets decoded, want %d" % (len(got), len(want))); sys.exit(1)
for i, (g, w) in enumerate(zip(got, want)):
    for k, v in w.items():
        if g.get(k) != v:
            print("  vector %d: %s = %r, want %r" % (i + 1, k, g.get(k), v)); bad += 1
    sev = [int(x, 0) for x in g["_ws.expert.severity"].split(",") if x]
    if any(x >= 0x00600000 for x in sev) or g["_ws.malformed"]:
        print("  vector %d: expert warning/error or malformed" % (i + 1)); bad += 1
sys.exit(1 if bad else 0)
PY

echo "traffic ${T1:+$((T1 - T0))} s, total $(( $(date +%s) - T0 )) s"
finish
