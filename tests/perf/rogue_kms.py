#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""rogue_kms.py: a KMS (wire protocol v1) that lies on command.

A test peer for kms-loadgen (perf/README.md), never for production:
it answers DEPOSIT_REQ and RETRIEVE_REQ as docs/PROTOCOL.md says, from the
keys of a population file (perf/loadgen/lg_pop.h), and can be told to
tamper with its RETRIEVE replies so that a test can show the load
generator catches each kind of lie.

    rogue_kms.py --population FILE --port P [--bind 127.0.0.1]
                 --mode MODE [--every K] [--port-file F]

MODE
  honest        every reply correct
  wrong-k       RETRIEVE_RESP seals another, random K for B (the keybox
                opens: only a comparison with A's K shows the lie)
  bad-tag       RETRIEVE_RESP with one bit of the keybox tag flipped
  wrong-key-id  RETRIEVE_RESP names another (random) key id than the one
                asked for, its keybox sealed consistently with that id
                (it opens, and holds the right K)
  wrong-status  RETRIEVE answered with ERROR INTERNAL
  drop-deposit  a DEPOSIT is recorded but not answered (a lost reply: the
                generator must neither count nor mix up its K)

Only RETRIEVEs the honest server would have answered with a key are
tampered with, and with --every K only every K-th of those (the K-th, 2K-th,
...; default 1: all). DEPOSITs are always answered honestly.

Written from docs/PROTOCOL.md with struct and the `cryptography` package
(no code shared with proto/). Implemented: header checks and silent drops
(section 10 steps 1-2), BAD_VERSION, BAD_TYPE, MALFORMED (body structure
and IDs), WRONG_ROLE (token roles, party kinds), UNKNOWN_PARTY, AUTH_FAILED
(tag or key generation), ID_MISMATCH, UNKNOWN_KEY_ID, HANDLE_MISMATCH,
NOT_RECIPIENT. Not implemented: timestamps (STALE), replay (REPLAY),
expiry, revocation, policies, persistence. Each pair keeps its first K
(k_gen 1) for ever; every deposit gets a fresh random 16-byte key id and
expires 7 days after it was made.

On SIGTERM or SIGINT it prints, on stdout,
    rogue_kms: tampered=<n> deposits=<n> retrieves=<n>
(deposits/retrieves: DEPOSIT_REQ/RETRIEVE_REQ datagrams answered, whatever
the answer) and exits 0; a second line on stderr details the answers.
Single-threaded: a select/recvfrom loop, a few thousand requests/s.
"""
import argparse
import hmac
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# ---- constants (PROTOCOL.md) ---------------------------------------------
HDR_LEN = 12
DGRAM_MAX = 1472
ID_MAX = 128
NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32
KEY_ID_LEN = 16
CT_MIN, CT_MAX = 2, 2 + 2 * ID_MAX
EXPIRY_MS = 7 * 24 * 3600 * 1000

DEPOSIT_REQ, DEPOSIT_RESP, RETRIEVE_REQ, RETRIEVE_RESP, ERROR = 1, 2, 3, 4, 0x7F
ROLE_A, ROLE_AS, ROLE_B = 1, 2, 3

STATUS = {
    "MALFORMED": 1, "BAD_VERSION": 2, "BAD_TYPE": 3, "UNKNOWN_PARTY": 4,
    "PARTY_REVOKED": 5, "WRONG_ROLE": 6, "AUTH_FAILED": 7, "ID_MISMATCH": 8,
    "STALE": 9, "REPLAY": 10, "UNKNOWN_KEY_ID": 11, "DEPOSIT_EXPIRED": 12,
    "DEPOSIT_REVOKED": 13, "NOT_RECIPIENT": 14, "HANDLE_MISMATCH": 15,
    "POLICY_DENIED": 16, "STORE_FULL": 17, "STORE_FAILED": 18,
    "HSM_FAILED": 19, "BUSY": 20, "INTERNAL": 21,
}
STATUS_NAME = {v: k for k, v in STATUS.items()}

MODES = ("honest", "wrong-k", "bad-tag", "wrong-key-id", "wrong-status",
         "drop-deposit")


class Refuse(Exception):
    """Answer the request with an ERROR of this status."""

    def __init__(self, name):
        super().__init__(name)
        self.status = STATUS[name]


# ---- encoding --------------------------------------------------------------
def lid(i):
    return bytes([len(i)]) + i


def hdr(typ, txid, body):
    return b"KM" + struct.pack(">BBIHH", 1, typ, txid, len(body), 0) + body


def error_dgram(txid, status):
    return hdr(ERROR, txid, struct.pack(">H", status))


def token_ad(role, party, gen, ts):
    return b"KMS1-TOK" + bytes([role]) + lid(party) + struct.pack(">IQ", gen, ts)


def keybox_ad(rtype, role, rgen, a, b, key_id, k_gen, expiry, req_nonce):
    return (b"KMS1-KEY" + bytes([rtype, role]) + struct.pack(">I", rgen) +
            lid(a) + lid(b) + key_id + struct.pack(">IQ", k_gen, expiry) +
            req_nonce)


# ---- parsing -----------------------------------------------------------------
class Token:
    __slots__ = ("role", "gen", "ts", "nonce", "ct", "tag", "raw")


class Reader:
    """Bounds-checked reads from a request body; MALFORMED past the end."""

    def __init__(self, d, pos):
        self.d, self.pos = d, pos

    def take(self, n):
        if self.pos + n > len(self.d):
            raise Refuse("MALFORMED")
        v = self.d[self.pos:self.pos + n]
        self.pos += n
        return v

    def u8(self):
        return self.take(1)[0]

    def ident(self):
        n = self.u8()
        if not 1 <= n <= ID_MAX:
            raise Refuse("MALFORMED")
        v = self.take(n)
        if any(c < 0x21 or c > 0x7E for c in v):
            raise Refuse("MALFORMED")
        return v

    def token(self):
        start = self.pos
        t = Token()
        t.role, t.gen, t.ts = struct.unpack(">BIQ", self.take(13))
        t.nonce = self.take(NONCE_LEN)
        (n,) = struct.unpack(">H", self.take(2))
        if not CT_MIN <= n <= CT_MAX:
            raise Refuse("MALFORMED")
        t.ct = self.take(n)
        t.tag = self.take(TAG_LEN)
        t.raw = self.d[start:self.pos]
        return t

    def end(self):
        if self.pos != len(self.d):
            raise Refuse("MALFORMED")


class Req:
    __slots__ = ("typ", "txid", "a", "b", "as_", "key_id", "ea", "ex")


def parse(d):
    """None: drop silently. Otherwise (txid, Req or Refuse)."""
    if len(d) < HDR_LEN or d[0:2] != b"KM":
        return None
    ver, typ, txid, blen, rsv = struct.unpack(">BBIHH", d[2:HDR_LEN])
    if rsv != 0 or blen != len(d) - HDR_LEN:
        return None
    if typ in (DEPOSIT_RESP, RETRIEVE_RESP, ERROR):
        return None
    try:
        if ver != 1:
            raise Refuse("BAD_VERSION")
        if typ not in (DEPOSIT_REQ, RETRIEVE_REQ):
            raise Refuse("BAD_TYPE")
        if len(d) > DGRAM_MAX:
            raise Refuse("MALFORMED")
        r = Req()
        r.typ, r.txid = typ, txid
        rd = Reader(d, HDR_LEN)
        r.a = rd.ident()
        r.b = rd.ident()
        if typ == DEPOSIT_REQ:
            r.as_ = rd.ident()
            r.key_id = None
        else:
            r.as_ = None
            r.key_id = rd.take(KEY_ID_LEN)
        r.ea = rd.token()
        r.ex = rd.token()
        rd.end()
        want = ROLE_AS if typ == DEPOSIT_REQ else ROLE_B
        if r.ea.role != ROLE_A or r.ex.role != want:
            raise Refuse("WRONG_ROLE")
        return txid, r
    except Refuse as e:
        return txid, e


# ---- the population ------------------------------------------------------------
class Party:
    __slots__ = ("kind", "gen", "key", "_aead")

    def __init__(self, kind, gen, key):
        self.kind, self.gen, self.key, self._aead = kind, gen, key, None

    @property
    def aead(self):
        if self._aead is None:
            self._aead = AESGCM(self.key)
        return self._aead


def read_population(path):
    parties = {}
    st = os.stat(path)
    if st.st_mode & 0o077:
        print("rogue_kms: warning: %s is readable by group or others "
              "(mode %03o)" % (path, st.st_mode & 0o777), file=sys.stderr)
    with open(path, "rb") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip(b"\n")
            if not line.strip() or line.startswith(b"#"):
                continue
            fields = line.split()
            try:
                kind, pid, gen, key = fields
                kind = kind.decode()
                gen = int(gen)
                key = bytes.fromhex(key.decode())
                if (kind not in ("user", "as") or not 1 <= len(pid) <= ID_MAX
                        or any(c < 0x21 or c > 0x7E for c in pid)
                        or not 1 <= gen <= 0xFFFFFFFF or len(key) != KEY_LEN):
                    raise ValueError
            except ValueError:
                raise ValueError("%s:%d: expected \"user|as ID GEN HEXKEY\""
                                 % (path, no))
            if pid in parties:
                raise ValueError("%s:%d: identity %s appears twice"
                                 % (path, no, pid.decode()))
            parties[pid] = Party(kind, gen, key)
    if not parties:
        raise ValueError("%s: no parties" % path)
    return parties


# ---- the server ------------------------------------------------------------------
class Deposit:
    __slots__ = ("k", "a", "b", "ea", "k_gen", "expiry")


class RogueKMS:
    def __init__(self, parties, mode, every):
        self.parties = parties
        self.mode = mode
        self.every = every
        self.pair_k = {}        # (ID-A, ID-B) -> K
        self.deposits = {}      # key_id -> Deposit
        self.n_deposits = 0     # DEPOSIT_REQs answered (any answer)
        self.n_retrieves = 0    # RETRIEVE_REQs answered (any answer)
        self.n_eligible = 0     # RETRIEVEs that earned a key reply
        self.tampered = 0
        self.n_dep_eligible = 0
        self.dep_ok = 0
        self.ret_ok = 0
        self.errors = {}        # status name -> count
        self.dropped = 0

    # -- checks (PROTOCOL.md section 10, steps 9 and 10) --
    def party(self, pid, kind):
        p = self.parties.get(pid)
        if p is None:
            raise Refuse("UNKNOWN_PARTY")
        if p.kind != kind:
            raise Refuse("WRONG_ROLE")
        return p

    @staticmethod
    def open_token(tok, party_id, party, a, b):
        if tok.gen != party.gen:
            raise Refuse("AUTH_FAILED")
        try:
            pt = party.aead.decrypt(tok.nonce, tok.ct + tok.tag,
                                    token_ad(tok.role, party_id, tok.gen, tok.ts))
        except InvalidTag:
            raise Refuse("AUTH_FAILED")
        if not hmac.compare_digest(pt, lid(a) + lid(b)):
            raise Refuse("ID_MISMATCH")

    @staticmethod
    def seal(party, rtype, role, rgen, a, b, key_id, k_gen, expiry,
             req_nonce, k):
        nonce = os.urandom(NONCE_LEN)
        ad = keybox_ad(rtype, role, rgen, a, b, key_id, k_gen, expiry,
                       req_nonce)
        return nonce + party.aead.encrypt(nonce, k, ad)

    # -- requests --
    def deposit(self, r):
        pa = self.party(r.a, "user")
        self.party(r.b, "user")
        pas = self.party(r.as_, "as")
        if r.ea.gen != pa.gen or r.ex.gen != pas.gen:
            raise Refuse("AUTH_FAILED")
        self.open_token(r.ea, r.a, pa, r.a, r.b)
        self.open_token(r.ex, r.as_, pas, r.a, r.b)
        k = self.pair_k.get((r.a, r.b))
        if k is None:
            k = self.pair_k[(r.a, r.b)] = os.urandom(KEY_LEN)
        key_id = os.urandom(KEY_ID_LEN)
        while key_id in self.deposits:
            key_id = os.urandom(KEY_ID_LEN)
        d = Deposit()
        d.k, d.a, d.b, d.ea = k, r.a, r.b, bytes(r.ea.raw)
        d.k_gen = 1
        d.expiry = int(time.time() * 1000) + EXPIRY_MS
        self.deposits[key_id] = d
        box = self.seal(pa, DEPOSIT_RESP, ROLE_A, r.ea.gen, r.a, r.b, key_id,
                        d.k_gen, d.expiry, r.ea.nonce, k)
        if self.mode == "drop-deposit":
            self.n_dep_eligible += 1
            if self.n_dep_eligible % self.every == 0:
                self.tampered += 1
                return None
        self.dep_ok += 1
        return hdr(DEPOSIT_RESP, r.txid, key_id +
                   struct.pack(">IQ", d.k_gen, d.expiry) + box)

    def retrieve(self, r):
        self.party(r.a, "user")
        pb = self.party(r.b, "user")
        if r.ex.gen != pb.gen:
            raise Refuse("AUTH_FAILED")
        self.open_token(r.ex, r.b, pb, r.a, r.b)
        d = self.deposits.get(bytes(r.key_id))
        if d is None:
            raise Refuse("UNKNOWN_KEY_ID")
        if not hmac.compare_digest(bytes(r.ea.raw), d.ea):
            raise Refuse("HANDLE_MISMATCH")
        if r.a != d.a or r.b != d.b:
            raise Refuse("NOT_RECIPIENT")

        # The honest answer is a key reply: this one may be a lie.
        self.n_eligible += 1
        lie = self.mode != "honest" and self.n_eligible % self.every == 0
        key_id, k = bytes(r.key_id), d.k
        if lie:
            self.tampered += 1
            if self.mode == "wrong-status":
                self.count_error("INTERNAL")
                return error_dgram(r.txid, STATUS["INTERNAL"])
            if self.mode == "wrong-k":
                k = os.urandom(KEY_LEN)
                while k == d.k:
                    k = os.urandom(KEY_LEN)
            elif self.mode == "wrong-key-id":
                key_id = os.urandom(KEY_ID_LEN)
                while key_id == bytes(r.key_id):
                    key_id = os.urandom(KEY_ID_LEN)
        box = self.seal(pb, RETRIEVE_RESP, ROLE_B, r.ex.gen, r.a, r.b, key_id,
                        d.k_gen, d.expiry, r.ex.nonce, k)
        if lie and self.mode == "bad-tag":
            bit = int.from_bytes(os.urandom(1), "big") & 0x7F   # 0..127
            box = bytearray(box)
            box[len(box) - TAG_LEN + bit // 8] ^= 1 << (bit % 8)
            box = bytes(box)
        if not lie:
            self.ret_ok += 1
        return hdr(RETRIEVE_RESP, r.txid, key_id +
                   struct.pack(">IQ", d.k_gen, d.expiry) + box)

    def count_error(self, name):
        self.errors[name] = self.errors.get(name, 0) + 1

    def handle(self, d):
        """The reply datagram, or None for a silent drop."""
        p = parse(d)
        if p is None:
            self.dropped += 1
            return None
        txid, r = p
        typ = d[3]
        if typ == DEPOSIT_REQ:
            self.n_deposits += 1
        elif typ == RETRIEVE_REQ:
            self.n_retrieves += 1
        try:
            if isinstance(r, Refuse):
                raise r
            return self.deposit(r) if r.typ == DEPOSIT_REQ else self.retrieve(r)
        except Refuse as e:
            self.count_error(STATUS_NAME[e.status])
            return error_dgram(txid, e.status)

    def summary(self):
        return "rogue_kms: tampered=%d deposits=%d retrieves=%d" % (
            self.tampered, self.n_deposits, self.n_retrieves)

    def details(self):
        errs = " ".join("%s=%d" % kv for kv in sorted(self.errors.items()))
        return ("rogue_kms: mode=%s every=%d deposit_ok=%d retrieve_ok=%d "
                "dropped=%d errors: %s" % (self.mode, self.every, self.dep_ok,
                                           self.ret_ok, self.dropped,
                                           errs or "none"))


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)       # readers never see a partial file


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="rogue_kms.py",
        description="A KMS (wire protocol v1) that lies on command; a test "
                    "peer for kms-loadgen.")
    ap.add_argument("--population", required=True, help="lg_pop.h format")
    ap.add_argument("--port", type=int, required=True, help="0: any free one")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--every", type=int, default=1,
                    help="tamper with every K-th key reply to RETRIEVE "
                         "(default 1: all)")
    ap.add_argument("--port-file", help="write the bound port here")
    o = ap.parse_args(argv)
    if o.every < 1:
        ap.error("--every must be >= 1")
    if not 0 <= o.port <= 65535:
        ap.error("--port must be 0..65535")

    try:
        parties = read_population(o.population)
    except OSError as e:
        print("rogue_kms: %s: %s" % (o.population, e.strerror), file=sys.stderr)
        return 2
    except ValueError as e:
        print("rogue_kms: %s" % e, file=sys.stderr)
        return 2
    srv = RogueKMS(parties, o.mode, o.every)

    fam = socket.AF_INET6 if ":" in o.bind else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    except OSError:
        pass
    try:
        sock.bind((o.bind, o.port))
    except OSError as e:
        print("rogue_kms: bind %s:%d: %s" % (o.bind, o.port, e.strerror),
              file=sys.stderr)
        return 2
    port = sock.getsockname()[1]

    # SIGTERM/SIGINT stop the server between requests, never half-way
    # through one (a reply counted as tampered is always sent). The handler
    # only notes the stop; the signal's byte on the wakeup socket ends the
    # select() however the signal falls relative to it (no lost wake-up).
    stop = []
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)

    def on_signal(signum, frame):
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sock.setblocking(False)

    if o.port_file:
        write_port_file(o.port_file, port)
    print("rogue_kms: listening on %s port %d mode=%s every=%d parties=%d"
          % (o.bind, port, o.mode, o.every, len(parties)),
          file=sys.stderr, flush=True)
    while not stop:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in ready:
            try:
                wake_r.recv(256)
            except BlockingIOError:
                pass
        if sock not in ready:
            continue
        for _ in range(64):             # a batch, then look at signals again
            if stop:
                break
            try:
                # whole datagrams: one above DGRAM_MAX is answered
                # MALFORMED, not cut short
                d, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:        # e.g. ICMP-reported errors
                print("rogue_kms: recvfrom: %s" % e, file=sys.stderr)
                continue
            try:
                rep = srv.handle(d)
            except Exception:           # a bug here: say so, keep serving
                traceback.print_exc()
                continue
            if rep is not None:
                try:
                    sock.sendto(rep, peer)
                except OSError as e:
                    print("rogue_kms: sendto %s: %s" % (peer, e),
                          file=sys.stderr)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock.close()
    signal.set_wakeup_fd(-1)
    wake_r.close()
    wake_w.close()
    print(srv.details(), file=sys.stderr, flush=True)
    print(srv.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
