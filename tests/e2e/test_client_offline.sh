#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# kms-client without kmsd.
#   test_client_offline.sh path/to/kms-client
# Part 1 (always): command line validation, `token` output, `open` on a
# reply that does not verify, timeouts against a port nobody serves.
# Part 2 (when python3 with the `cryptography` module is present): a tiny
# independent KMS written from docs (kms_proto.h layout) answers DEPOSIT and
# RETRIEVE, so the whole UE-A / mailbox / UE-B flow, retries, replay and a
# wrong B run here too. kmsd itself is tested by the other e2e scripts.
set -u

CLIENT=${1:?usage: test_client_offline.sh path/to/kms-client}
T=$(mktemp -d /tmp/kms-client-test.XXXXXX)
FAKE_PID=
cleanup() {
	[ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
cd "$T" || exit 1

fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_rc RC cmd...: run, keep stdout/stderr in out/err, check the code
expect_rc() {
	local want=$1 rc
	shift
	"$@" >out 2>err
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		cat out err >&2
		fail "exit $rc, expected $want: $*"
	fi
}
has() { grep -q -- "$2" "$1" || { cat "$1" >&2; fail "$1 lacks '$2'"; }; }
kv() { sed -n "s/^$2 = //p" "$1"; }
mode() { stat -c %a "$1"; }
hex32() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
mkkey() {  # path id kind gen
	printf '# test key\nid = %s\nkind = %s\ngen = %s\nkey = %s\n' \
		"$2" "$3" "$4" "$(hex32)" >"$1"
	chmod 600 "$1"
}

A=sip:alice@example.org
B=sip:bob@example.org
AS=mailbox.example.org
mkkey A.key "$A" user 3
mkkey B.key "$B" user 1
mkkey M.key sip:mallory@example.org user 1
mkkey AS.key "$AS" as 2

# ---- command line ----
expect_rc 0 "$CLIENT" --help
has out "kms-client token"
expect_rc 0 "$CLIENT" token --help
expect_rc 1 "$CLIENT"
expect_rc 1 "$CLIENT" frobnicate
expect_rc 1 "$CLIENT" token --key A.key --out ea.tok
has err "peer is required"
expect_rc 1 "$CLIENT" token --key A.key --peer "$B" --out ea.tok --server h:1
has err "does not apply"
expect_rc 1 "$CLIENT" token --key A.key --peer "$B" --out x --out y
expect_rc 1 "$CLIENT" token --key A.key --peer "$B" --out ea.tok extra
expect_rc 1 "$CLIENT" token --key A.key --peer "$B" --out x --ts-offset-ms 1x
expect_rc 1 "$CLIENT" send --server h:1 --in x --timeout-ms 0
expect_rc 1 "$CLIENT" deposit --server h:1 --key AS.key --token x \
	--params-out p --reply-out r --txid 4294967296
[ ! -e ea.tok ] && [ ! -e x ] || fail "a failed command left a file"

# ---- token ----
before=$(date +%s%3N)
expect_rc 0 "$CLIENT" token --key A.key --peer "$B" --out ea.tok \
	--ts-offset-ms -60000
after=$(date +%s%3N)
[ "$(kv ea.tok id_a)" = "$A" ] || fail "id_a"
[ "$(kv ea.tok id_b)" = "$B" ] || fail "id_b"
tok=$(kv ea.tok token)
# role A (01), gen 3, ts, nonce, ct_len = 2 + |A| + |B|, ct, tag
ctlen=$((2 + ${#A} + ${#B}))
[ ${#tok} -eq $((2 * (43 + ctlen))) ] || fail "token length ${#tok}"
[ "${tok:0:10}" = 0100000003 ] || fail "role/gen ${tok:0:10}"
[ "${tok:50:4}" = "$(printf %04x $ctlen)" ] || fail "ct_len ${tok:50:4}"
ts=$((16#${tok:10:16}))
[ "$ts" -ge $((before - 60000)) ] && [ "$ts" -le $((after - 60000)) ] ||
	fail "timestamp $ts not in [$before, $after] - 60 s"
grep -q "$(kv A.key key)" ea.tok && fail "ea.tok holds Ka"
expect_rc 0 "$CLIENT" token --key A.key --peer "$B" --out ea2.tok
[ "$(kv ea2.tok token | cut -c27-50)" != "${tok:26:24}" ] || fail "nonce reused"

# bad key files and identities
printf 'id = %s\nkind = user\ngen = 1\nkey = abcd\n' "$A" >short.key
printf 'id = %s\nkind = user\nkey = %s\n' "$A" "$(hex32)" >nogen.key
head -c 300 /dev/urandom >junk.key
for k in short.key nogen.key junk.key missing.key; do
	expect_rc 1 "$CLIENT" token --key $k --peer "$B" --out x
	has err "cannot read key file"
done
expect_rc 1 "$CLIENT" token --key AS.key --peer "$B" --out x
has err "needs 'user'"
expect_rc 0 "$CLIENT" token --key AS.key --peer "$B" --out x --force-mismatch
for p in "" "has space" "$(printf 'x%.0s' $(seq 129))"; do
	expect_rc 1 "$CLIENT" token --key A.key --peer "$p" --out x
done

# ---- open: replies that must not give a key ----
body=$(od -An -tx1 -N88 /dev/urandom | tr -d ' \n')
echo "reply = 4b4d01020000000100590000$body" >r0   # body_len 89, body 88
echo "reply = 4b4d01020000000100580000$body" >fake.reply
expect_rc 2 "$CLIENT" open --key A.key --token ea.tok --reply fake.reply \
	--out ka.txt
has err "open failed: bad keybox"
[ ! -e ka.txt ] || fail "ka.txt written for a bad keybox"
echo "reply = 4b4d01020000000100580000${body:0:100}" >short.reply
echo "reply = 4b4d017f00000001000200000007" >error.reply
echo "reply = zz" >hex.reply
printf 'id_a = %s\nid_b = %s\ntoken = %s\n' "$A" "$B" "${tok:0:99}" >odd.tok
for r in short.reply error.reply hex.reply r0 missing.reply; do
	expect_rc 1 "$CLIENT" open --key A.key --token ea.tok --reply $r \
		--out ka.txt
done
expect_rc 1 "$CLIENT" open --key A.key --token odd.tok --reply fake.reply \
	--out ka.txt
expect_rc 1 "$CLIENT" open --key B.key --token ea.tok --reply fake.reply \
	--out ka.txt
has err "the token is from"
[ ! -e ka.txt ] || fail "ka.txt written"

# ---- network paths with nobody answering ----
DEAD=127.0.0.1:9
expect_rc 3 "$CLIENT" deposit --server $DEAD --key AS.key --token ea.tok \
	--params-out params.txt --reply-out reply.txt --timeout-ms 100 \
	--txid 0x1234abcd --save-request dep.req
has err "no reply"
[ ! -e params.txt ] && [ ! -e reply.txt ] || fail "outputs without a reply"
req=$(cat dep.req)
[ "${req:0:16}" = 4b4d01011234abcd ] || fail "saved request header ${req:0:16}"
expect_rc 3 "$CLIENT" send --server $DEAD --in dep.req --timeout-ms 100
expect_rc 1 "$CLIENT" deposit --server $DEAD --key A.key --token ea.tok \
	--params-out p --reply-out r
has err "needs 'as'"
for s in nocolon "[::1" "[::1]" ":9" "127.0.0.1:" "no.such.host.invalid:9"; do
	expect_rc 1 "$CLIENT" send --server "$s" --in dep.req --timeout-ms 50
done
printf 'id_a = %s\nid_b = %s\ntoken = %s\nkey_id = %s\n' "$A" "$B" "$tok" \
	00112233445566778899aabbccddeeff >p0.txt
expect_rc 1 "$CLIENT" retrieve --server $DEAD --key M.key --params p0.txt \
	--out kb.txt
has err "force-mismatch"
expect_rc 3 "$CLIENT" retrieve --server $DEAD --key M.key --params p0.txt \
	--out kb.txt --force-mismatch --timeout-ms 50
sed 's/^key_id = .*/key_id = 0011/' p0.txt >p1.txt
expect_rc 1 "$CLIENT" retrieve --server $DEAD --key B.key --params p1.txt \
	--out kb.txt
[ ! -e kb.txt ] || fail "kb.txt written"

# ---- part 2: against a small independent KMS ----
if ! python3 -c 'import cryptography.hazmat.primitives.ciphers.aead' \
	2>/dev/null; then
	echo "client_offline: part 1 ok; part 2 skipped (no python3 cryptography)"
	exit 0
fi
cat >fake_kms.py <<'EOF'
import os, socket, struct, sys, time
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

family, portfile, logfile, kfile, drop = sys.argv[1:6]
drop = int(drop)
parties = {}
for path in sys.argv[6:]:
    d = dict(l.split('=', 1) for l in open(path) if '=' in l and l[0] != '#')
    d = {k.strip(): v.strip() for k, v in d.items()}
    parties[d['id'].encode()] = (int(d['gen']), bytes.fromhex(d['key']))
fam = socket.AF_INET6 if family == '6' else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind(('::1' if family == '6' else '127.0.0.1', 0))
open(portfile + '.tmp', 'w').write(str(s.getsockname()[1]))
os.rename(portfile + '.tmp', portfile)
seen, deposits = set(), {}

class Refuse(Exception):
    pass

def take(m, n):
    if len(m[0]) < n:
        raise Refuse(1)
    v, m[0] = m[0][:n], m[0][n:]
    return v

def rd_id(m):
    return take(m, take(m, 1)[0])

def rd_tok(m):
    fixed = take(m, 27)
    role, gen, ts = struct.unpack('>BIQ', fixed[:13])
    ct = take(m, struct.unpack('>H', fixed[25:27])[0])
    tag = take(m, 16)
    return dict(role=role, gen=gen, ts=ts, nonce=fixed[13:25], ct=ct,
                tag=tag, raw=fixed + ct + tag)

def check(tok, role, party, a, b, once):
    if party not in parties:
        raise Refuse(4)
    gen, key = parties[party]
    if tok['role'] != role:
        raise Refuse(6)
    ad = (b'KMS1-TOK' + bytes([role, len(party)]) + party +
          struct.pack('>IQ', tok['gen'], tok['ts']))
    try:
        pt = AESGCM(key).decrypt(tok['nonce'], tok['ct'] + tok['tag'], ad)
    except Exception:
        raise Refuse(7)
    if tok['gen'] != gen:
        raise Refuse(7)
    if pt != bytes([len(a)]) + a + bytes([len(b)]) + b:
        raise Refuse(8)
    if abs(tok['ts'] - time.time() * 1000) > 300000:
        raise Refuse(9)
    if once:
        if tok['nonce'] in seen:
            raise Refuse(10)
        seen.add(tok['nonce'])

def key_reply(rtype, txid, role, party, a, b, key_id, k, exp, req_nonce):
    gen, key = parties[party]
    ad = (b'KMS1-KEY' + bytes([rtype, role]) + struct.pack('>I', gen) +
          bytes([len(a)]) + a + bytes([len(b)]) + b + key_id +
          struct.pack('>IQ', 1, exp) + req_nonce)
    n = os.urandom(12)
    body = key_id + struct.pack('>IQ', 1, exp) + n + AESGCM(key).encrypt(n, k, ad)
    return struct.pack('>2sBBIHH', b'KM', 1, rtype, txid, len(body), 0) + body

while True:
    data, peer = s.recvfrom(4096)
    with open(logfile, 'a') as f:
        f.write(data.hex() + '\n')
    if drop > 0:
        drop -= 1
        continue
    if len(data) < 12 or data[:2] != b'KM':
        continue
    _, ver, typ, txid, blen, _ = struct.unpack('>2sBBIHH', data[:12])
    m = [data[12:]]
    try:
        if blen != len(m[0]) or ver != 1:
            raise Refuse(1)
        if typ == 1:
            a, b, asid = rd_id(m), rd_id(m), rd_id(m)
            ea, eas = rd_tok(m), rd_tok(m)
            check(ea, 1, a, a, b, False)
            check(eas, 2, asid, a, b, True)
            k, key_id = os.urandom(32), os.urandom(16)
            exp = int(time.time() * 1000) + 3600000
            deposits[key_id] = (k, a, b, ea['raw'], exp)
            open(kfile, 'a').write(k.hex() + '\n')
            out = key_reply(2, txid, 1, a, a, b, key_id, k, exp, ea['nonce'])
        elif typ == 3:
            a, b, key_id = rd_id(m), rd_id(m), take(m, 16)
            ea, eb = rd_tok(m), rd_tok(m)
            if key_id not in deposits:
                raise Refuse(11)
            k, da, db, handle, exp = deposits[key_id]
            if ea['raw'] != handle or (a, b) != (da, db):
                raise Refuse(15)
            check(eb, 3, b, a, b, True)
            out = key_reply(4, txid, 3, b, a, b, key_id, k, exp, eb['nonce'])
        else:
            raise Refuse(3)
        if m[0]:
            raise Refuse(1)
    except Refuse as e:
        out = struct.pack('>2sBBIHHH', b'KM', 1, 0x7f, txid, 2, 0, e.args[0])
    s.sendto(out, peer)
EOF

# start_fake FAMILY DROP: background fake KMS, sets SRV
start_fake() {
	[ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null
	rm -f port log
	python3 fake_kms.py "$1" port log kms.k "$2" A.key B.key AS.key &
	FAKE_PID=$!
	for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
	[ -s port ] || fail "fake KMS did not start"
	if [ "$1" = 6 ]; then SRV="[::1]:$(cat port)"; else SRV="127.0.0.1:$(cat port)"; fi
}

start_fake 4 0
expect_rc 0 "$CLIENT" token --key A.key --peer "$B" --out ea.tok
expect_rc 0 "$CLIENT" deposit --server "$SRV" --key AS.key --token ea.tok \
	--params-out params.txt --reply-out reply.txt --save-request dep.req
has out "^deposit ok key_id=$(kv params.txt key_id) expiry_ms=$(kv params.txt expiry_ms)$"
[ "$(kv params.txt token)" = "$(kv ea.tok token)" ] || fail "params token"
[ "$(kv params.txt id_b)" = "$B" ] || fail "params id_b"
K=$(tail -n1 kms.k)
grep -qi "$K" params.txt reply.txt dep.req && fail "the mailbox's files hold K"
expect_rc 0 "$CLIENT" open --key A.key --token ea.tok --reply reply.txt \
	--out ka.txt
[ "$(mode ka.txt)" = 600 ] || fail "ka.txt mode $(mode ka.txt)"
[ "$(kv ka.txt k)" = "$K" ] || fail "A's K differs from the KMS's"
[ "$(kv ka.txt key_id)" = "$(kv params.txt key_id)" ] || fail "ka key_id"
expect_rc 2 "$CLIENT" open --key A.key --token ea2.tok --reply reply.txt \
	--out ka2.txt
has err "bad keybox"     # the reply is bound to the nonce of A's own token
touch kb.txt && chmod 644 kb.txt
expect_rc 0 "$CLIENT" retrieve --server "$SRV" --key B.key --params params.txt \
	--out kb.txt --save-request ret.req
has out "^retrieve ok key_id=$(kv params.txt key_id)$"
[ "$(mode kb.txt)" = 600 ] || fail "kb.txt mode $(mode kb.txt)"
cmp -s ka.txt kb.txt || fail "A and B hold different keys"

# replays of the mailbox's and B's requests, wrong B, stale token
expect_rc 2 "$CLIENT" send --server "$SRV" --in dep.req
has out "^reply: ERROR status=REPLAY$"
expect_rc 2 "$CLIENT" send --server "$SRV" --in ret.req
has out "^reply: ERROR status=REPLAY$"
expect_rc 2 "$CLIENT" retrieve --server "$SRV" --key M.key --params params.txt \
	--out km.txt --force-mismatch
has err "^retrieve refused: AUTH_FAILED$"
[ ! -e km.txt ] || fail "km.txt written"
expect_rc 0 "$CLIENT" token --key A.key --peer "$B" --out old.tok \
	--ts-offset-ms -600000
expect_rc 2 "$CLIENT" deposit --server "$SRV" --key AS.key --token old.tok \
	--params-out p2 --reply-out r2
has err "^deposit refused: STALE$"
[ ! -e p2 ] && [ ! -e r2 ] || fail "outputs after a refusal"

# a retry after a timeout reseals Eas (a repeated Eas is a replay); IPv6
start_fake 4 2
expect_rc 0 "$CLIENT" token --key A.key --peer "$B" --out ea3.tok
expect_rc 0 "$CLIENT" deposit --server "$SRV" --key AS.key --token ea3.tok \
	--params-out p3 --reply-out r3 --timeout-ms 200
[ "$(wc -l <log)" -eq 3 ] && [ "$(sort -u log | wc -l)" -eq 3 ] ||
	fail "expected 3 distinct sends, log: $(wc -l <log) lines"
if python3 -c 'import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))' 2>/dev/null; then
	start_fake 6 0
	expect_rc 0 "$CLIENT" deposit --server "$SRV" --key AS.key \
		--token ea3.tok --params-out p6 --reply-out r6
	expect_rc 0 "$CLIENT" retrieve --server "$SRV" --key B.key --params p6 \
		--out kb6.txt
	expect_rc 0 "$CLIENT" open --key A.key --token ea3.tok --reply r6 \
		--out ka6.txt
	cmp -s ka6.txt kb6.txt || fail "IPv6: A and B hold different keys"
fi
# encrypt/decrypt: the media under K; a changed byte, another key id or
# another K is refused and writes nothing.
head -c 70000 /dev/urandom > media.bin
printf 'key_id = %s\nk = %s\n' 00112233445566778899aabbccddeeff \
	"$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > mk.txt
printf 'key_id = %s\nk = %s\n' 00112233445566778899aabbccddeeff \
	"$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > mk2.txt
printf 'key_id = %s\nk = %s\n' ffffffffffffffffffffffffffffffff \
	"$(sed -n 's/^k = //p' mk.txt)" > mk3.txt
expect_rc 0 "$CLIENT" encrypt --media-key mk.txt --in media.bin --out media.enc
[ "$(stat -c %s media.enc)" -eq $((70000 + 4 + 16 + 12 + 16)) ] || fail "encrypted size"
expect_rc 0 "$CLIENT" decrypt --media-key mk.txt --in media.enc --out media.out
cmp -s media.bin media.out || fail "decrypt does not give the plaintext back"
expect_rc 2 "$CLIENT" decrypt --media-key mk2.txt --in media.enc --out bad.out
has err "does not decrypt"
expect_rc 2 "$CLIENT" decrypt --media-key mk3.txt --in media.enc --out bad.out
has err "another key id"
printf '\x01' | dd of=media.enc bs=1 seek=40000 conv=notrunc 2>/dev/null
expect_rc 2 "$CLIENT" decrypt --media-key mk.txt --in media.enc --out bad.out
[ ! -e bad.out ] || fail "bad.out written for a refused decrypt"
echo "client_offline: all ok"
