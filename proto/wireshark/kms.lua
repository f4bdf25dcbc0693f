-- SPDX-License-Identifier: Apache-2.0
--
-- Wireshark/tshark dissector for the IMS KMS wire format, version 1
-- (docs/PROTOCOL.md is normative; section numbers below refer to it):
--
--   kms    part I:  the KMS UDP protocol (kmsd, default port 7430):
--                   DEPOSIT_REQ/RESP, RETRIEVE_REQ/RESP, IBE_KEY_REQ/RESP,
--                   ERROR; every header and body field, tokens, keyboxes.
--   kmsmb  part II: the MIKEY-IBAKE mailbox protocol (kms-mailbox, TCP,
--                   default port 7440): u32-length frames reassembled
--                   over TCP; I1..NEXT and ERROR with their clear fields;
--                   sealed frames as ct | tag.
--
-- Install: see proto/wireshark/README.md. Works with Wireshark/tshark
-- 3.6 and later (Lua 5.2 to 5.4). Nothing here decrypts anything: tokens,
-- keyboxes, IBE blobs and sealed frames are shown as their parts.
--
-- Malformed values are flagged as expert info (Analyze > Expert Info;
-- tshark: -z expert), never by throwing: group "Malformed" at severity
-- error for structure (lengths, truncation, trailing bytes), group
-- "Protocol" at severity warning for values the server would refuse
-- (version, type, roles, ID characters, status 0 or unknown).

local VERSION = "1.0"

-- ---------------------------------------------------------------- tables

local MSG_TYPES = {
    [0x01] = "DEPOSIT_REQ",
    [0x02] = "DEPOSIT_RESP",
    [0x03] = "RETRIEVE_REQ",
    [0x04] = "RETRIEVE_RESP",
    [0x05] = "IBE_KEY_REQ",
    [0x06] = "IBE_KEY_RESP",
    [0x7f] = "ERROR",
}
local REQUEST_TYPES = { [0x01] = true, [0x03] = true, [0x05] = true }
local REPLY_TYPES = { [0x02] = true, [0x04] = true, [0x06] = true, [0x7f] = true }

-- Section 12: every status of version 1.
local STATUS = {
    [0] = "OK",
    [1] = "MALFORMED",
    [2] = "BAD_VERSION",
    [3] = "BAD_TYPE",
    [4] = "UNKNOWN_PARTY",
    [5] = "PARTY_REVOKED",
    [6] = "WRONG_ROLE",
    [7] = "AUTH_FAILED",
    [8] = "ID_MISMATCH",
    [9] = "STALE",
    [10] = "REPLAY",
    [11] = "UNKNOWN_KEY_ID",
    [12] = "DEPOSIT_EXPIRED",
    [13] = "DEPOSIT_REVOKED",
    [14] = "NOT_RECIPIENT",
    [15] = "HANDLE_MISMATCH",
    [16] = "POLICY_DENIED",
    [17] = "STORE_FULL",
    [18] = "STORE_FAILED",
    [19] = "HSM_FAILED",
    [20] = "BUSY",
    [21] = "INTERNAL",
    [22] = "BAD_PERIOD",
    [23] = "IBE_UNAVAILABLE",
    [24] = "PAIR_REVOKED",
}

-- Section 5: token roles (0x04: the IBE_KEY_REQ token, section 17).
local ROLES = { [1] = "A", [2] = "AS", [3] = "B", [4] = "IBE" }

local MB_TYPES = {
    [0x11] = "I1",
    [0x12] = "R1",
    [0x13] = "I2",
    [0x14] = "R2",
    [0x15] = "DEPOSIT",
    [0x16] = "DEPOSIT_ACK",
    [0x21] = "F1",
    [0x22] = "F2",
    [0x23] = "F3",
    [0x24] = "MSG",
    [0x25] = "END",
    [0x26] = "DELETE",
    [0x27] = "NEXT",
    [0x7f] = "ERROR",
}
local MB_DIR = {
    [0x11] = "A -> MB", [0x12] = "MB -> A", [0x13] = "A -> MB",
    [0x14] = "MB -> A", [0x15] = "A -> MB", [0x16] = "MB -> A",
    [0x21] = "B -> MB", [0x22] = "MB -> B", [0x23] = "B -> MB",
    [0x24] = "MB -> B", [0x25] = "MB -> B", [0x26] = "B -> MB",
    [0x27] = "B -> MB", [0x7f] = "either way",
}
-- Sealed frames: the plaintext length when it is fixed (II.2, II.3),
-- else the smallest one.
local MB_SEALED = {
    [0x15] = { min = 129 + 16, what = "sig (129) | message ct | tag" },
    [0x16] = { fixed = 24, what = "msg_id (16) | expiry_ms (8)" },
    [0x23] = { fixed = 65, what = "yP (65)" },
    [0x24] = { min = 16 + 2 + 7 + 8 + 4 + 289 + 129 + 4 + 16,
               what = "msg_id | ID-A | period | deposited_ms | BLOB key_b | sig | BLOB message" },
    [0x25] = { fixed = 4, what = "u32 0" },
    [0x26] = { fixed = 16, what = "msg_id (16)" },
    [0x27] = { fixed = 16, what = "msg_id (16)" },
}

local HDR_LEN = 12
local DGRAM_MAX = 1472          -- section 2, largest request datagram
local KEY_REPLY_LEN = 100       -- section 6.3
local ERROR_LEN = 14            -- section 6.4
local IBE_RESP_LEN = 402        -- section 17
local ID_MAX = 128
local TOKEN_FIXED = 43          -- role..ct_len + tag
local TAG_LEN = 16
local SAKKE_R_LEN = 257
local SAKKE_H_LEN = 16
local IBE_OVERHEAD = SAKKE_R_LEN + SAKKE_H_LEN + TAG_LEN   -- 289
local MB_HDR_LEN = 6
local MB_FRAME_MAX = 64 * 1024 * 1024 + 64 * 1024   -- kms-mailbox's hard cap + slack

-- ---------------------------------------------------------------- protocols

local kms = Proto("kms", "IMS KMS Protocol")
local kmsmb = Proto("kmsmb", "IMS KMS Mailbox (MIKEY-IBAKE)")

-- ---- kms fields
local F = {
    magic      = ProtoField.string("kms.magic", "Magic"),
    version    = ProtoField.uint8("kms.version", "Version", base.DEC),
    type       = ProtoField.uint8("kms.type", "Type", base.HEX, MSG_TYPES),
    txid       = ProtoField.uint32("kms.txid", "Transaction id", base.HEX),
    body_len   = ProtoField.uint16("kms.body_len", "Body length", base.DEC),
    reserved   = ProtoField.uint16("kms.reserved", "Reserved", base.HEX),

    id_a_len   = ProtoField.uint8("kms.id_a.len", "ID-A length", base.DEC),
    id_a       = ProtoField.string("kms.id_a", "ID-A"),
    id_b_len   = ProtoField.uint8("kms.id_b.len", "ID-B length", base.DEC),
    id_b       = ProtoField.string("kms.id_b", "ID-B"),
    id_as_len  = ProtoField.uint8("kms.id_as.len", "ID-AS length", base.DEC),
    id_as      = ProtoField.string("kms.id_as", "ID-AS"),
    id_x_len   = ProtoField.uint8("kms.id_x.len", "ID-X length", base.DEC),
    id_x       = ProtoField.string("kms.id_x", "ID-X"),
    period_len = ProtoField.uint8("kms.period.len", "Period length", base.DEC),
    period     = ProtoField.string("kms.period", "Period"),

    token      = ProtoField.bytes("kms.token", "Token"),
    tok_role   = ProtoField.uint8("kms.token.role", "Role", base.HEX, ROLES),
    tok_gen    = ProtoField.uint32("kms.token.gen", "Key generation", base.DEC),
    tok_ts     = ProtoField.uint64("kms.token.ts_ms", "Timestamp (ms since epoch)", base.DEC),
    tok_nonce  = ProtoField.bytes("kms.token.nonce", "Nonce (GCM IV, replay id)"),
    tok_ct_len = ProtoField.uint16("kms.token.ct_len", "Ciphertext length", base.DEC),
    tok_ct     = ProtoField.bytes("kms.token.ct", "Ciphertext"),
    tok_tag    = ProtoField.bytes("kms.token.tag", "Tag"),

    key_id      = ProtoField.bytes("kms.key_id", "Key id"),
    key_id_time = ProtoField.uint64("kms.key_id.time_ms", "Creation time (ms since epoch)", base.DEC),
    key_id_wrk  = ProtoField.uint16("kms.key_id.worker", "Worker", base.DEC),
    key_id_seq  = ProtoField.uint16("kms.key_id.seq", "Sequence", base.DEC),
    key_id_rnd  = ProtoField.uint32("kms.key_id.random", "Random", base.HEX),
    k_gen       = ProtoField.uint32("kms.k_gen", "K generation", base.DEC),
    expiry      = ProtoField.uint64("kms.expiry_ms", "Expiry (ms since epoch)", base.DEC),
    keybox      = ProtoField.bytes("kms.keybox", "Keybox"),
    kb_nonce    = ProtoField.bytes("kms.keybox.nonce", "Nonce"),
    kb_ct       = ProtoField.bytes("kms.keybox.ct", "Ciphertext (K)"),
    kb_tag      = ProtoField.bytes("kms.keybox.tag", "Tag"),

    kgc_id      = ProtoField.bytes("kms.ibe.kgc_id", "KGC id"),
    ibe_nonce   = ProtoField.bytes("kms.ibe.nonce", "Nonce"),
    ibe_ct      = ProtoField.bytes("kms.ibe.ct", "Ciphertext (RSK | SSK | PVT)"),
    ibe_tag     = ProtoField.bytes("kms.ibe.tag", "Tag"),

    status      = ProtoField.uint16("kms.status", "Status", base.DEC, STATUS),
    trailing    = ProtoField.bytes("kms.trailing", "Trailing bytes"),

    request_in  = ProtoField.framenum("kms.request_in", "Request in", base.NONE, frametype and frametype.REQUEST),
    response_in = ProtoField.framenum("kms.response_in", "Response in", base.NONE, frametype and frametype.RESPONSE),
    resp_time   = ProtoField.relative_time("kms.time", "Response time"),
}
kms.fields = F

local E = {
    short      = ProtoExpert.new("kms.short", "Datagram shorter than the 12-byte header",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    magic      = ProtoExpert.new("kms.bad_magic", "Bad magic (not \"KM\")",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    version    = ProtoExpert.new("kms.bad_version", "Version is not 1",
                                 expert.group.PROTOCOL, expert.severity.WARN),
    type       = ProtoExpert.new("kms.bad_type", "Unknown message type",
                                 expert.group.PROTOCOL, expert.severity.WARN),
    body_len   = ProtoExpert.new("kms.body_len_mismatch", "body_len is not the datagram length - 12",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    reserved   = ProtoExpert.new("kms.reserved_nonzero", "Reserved field is not zero",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    truncated  = ProtoExpert.new("kms.truncated", "Body ends inside a field",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    trailing   = ProtoExpert.new("kms.trailing_bytes", "Bytes after the last field",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    id_len     = ProtoExpert.new("kms.id_len_range", "ID length out of range (1..128)",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    id_chars   = ProtoExpert.new("kms.id_bad_char", "ID byte outside 0x21..0x7e",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    ct_len     = ProtoExpert.new("kms.ct_len_range", "Token ct_len out of range (2..258)",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    role       = ProtoExpert.new("kms.wrong_role", "Token role does not fit its place",
                                 expert.group.PROTOCOL, expert.severity.WARN),
    period     = ProtoExpert.new("kms.bad_period", "Period is not YYYY-MM",
                                 expert.group.PROTOCOL, expert.severity.WARN),
    size       = ProtoExpert.new("kms.bad_size", "Message has the wrong size for its type",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    oversize   = ProtoExpert.new("kms.oversize", "Request datagram above 1472 bytes",
                                 expert.group.PROTOCOL, expert.severity.WARN),
    status_bad = ProtoExpert.new("kms.bad_status", "ERROR status is 0 or unknown",
                                 expert.group.PROTOCOL, expert.severity.WARN),
    error_resp = ProtoExpert.new("kms.error_reply", "The KMS refused the request",
                                 expert.group.RESPONSE_CODE, expert.severity.NOTE),
}
kms.experts = {
    E.short, E.magic, E.version, E.type, E.body_len, E.reserved,
    E.truncated, E.trailing, E.id_len, E.id_chars, E.ct_len, E.role,
    E.period, E.size, E.oversize, E.status_bad, E.error_resp,
}

-- ---- kmsmb fields
local M = {
    len        = ProtoField.uint32("kmsmb.len", "Length (version..end)", base.DEC),
    version    = ProtoField.uint8("kmsmb.version", "Version", base.DEC),
    type       = ProtoField.uint8("kmsmb.type", "Type", base.HEX, MB_TYPES),
    id_a_len   = ProtoField.uint8("kmsmb.id_a.len", "ID-A length", base.DEC),
    id_a       = ProtoField.string("kmsmb.id_a", "ID-A"),
    id_b_len   = ProtoField.uint8("kmsmb.id_b.len", "ID-B length", base.DEC),
    id_b       = ProtoField.string("kmsmb.id_b", "ID-B"),
    id_mb_len  = ProtoField.uint8("kmsmb.id_mb.len", "ID-MB length", base.DEC),
    id_mb      = ProtoField.string("kmsmb.id_mb", "ID-MB"),
    period     = ProtoField.string("kmsmb.period", "Period"),
    blob       = ProtoField.bytes("kmsmb.blob", "IBE blob"),
    blob_len   = ProtoField.uint32("kmsmb.blob.len", "Blob length", base.DEC),
    blob_r     = ProtoField.bytes("kmsmb.blob.sakke_r", "SAKKE R (257)"),
    blob_h     = ProtoField.bytes("kmsmb.blob.sakke_h", "SAKKE H (16)"),
    blob_ct    = ProtoField.bytes("kmsmb.blob.ct", "Ciphertext"),
    blob_tag   = ProtoField.bytes("kmsmb.blob.tag", "Tag"),
    sealed     = ProtoField.bytes("kmsmb.sealed", "Sealed body"),
    sealed_len = ProtoField.uint32("kmsmb.sealed.ct_len", "Ciphertext length (= plaintext length)", base.DEC),
    sealed_ct  = ProtoField.bytes("kmsmb.sealed.ct", "Ciphertext"),
    sealed_tag = ProtoField.bytes("kmsmb.sealed.tag", "Tag"),
    status     = ProtoField.uint16("kmsmb.status", "Status", base.DEC, STATUS),
    trailing   = ProtoField.bytes("kmsmb.trailing", "Trailing bytes"),
}
kmsmb.fields = M

local ME = {
    len       = ProtoExpert.new("kmsmb.bad_len", "Frame length out of range",
                                expert.group.MALFORMED, expert.severity.ERROR),
    version   = ProtoExpert.new("kmsmb.bad_version", "Version is not 1",
                                expert.group.PROTOCOL, expert.severity.WARN),
    type      = ProtoExpert.new("kmsmb.bad_type", "Unknown frame type",
                                expert.group.PROTOCOL, expert.severity.WARN),
    truncated = ProtoExpert.new("kmsmb.truncated", "Body ends inside a field",
                                expert.group.MALFORMED, expert.severity.ERROR),
    trailing  = ProtoExpert.new("kmsmb.trailing_bytes", "Bytes after the last field",
                                expert.group.MALFORMED, expert.severity.ERROR),
    id_len    = ProtoExpert.new("kmsmb.id_len_range", "ID length out of range (1..128)",
                                expert.group.MALFORMED, expert.severity.ERROR),
    id_chars  = ProtoExpert.new("kmsmb.id_bad_char", "ID byte outside 0x21..0x7e",
                                expert.group.MALFORMED, expert.severity.ERROR),
    period    = ProtoExpert.new("kmsmb.bad_period", "Period is not YYYY-MM",
                                expert.group.PROTOCOL, expert.severity.WARN),
    blob      = ProtoExpert.new("kmsmb.blob_short", "IBE blob shorter than its 289-byte overhead",
                                expert.group.MALFORMED, expert.severity.ERROR),
    sealed    = ProtoExpert.new("kmsmb.bad_sealed_len", "Sealed body has the wrong length for its type",
                                expert.group.MALFORMED, expert.severity.ERROR),
    status_bad = ProtoExpert.new("kmsmb.bad_status", "ERROR status is 0 or unknown",
                                 expert.group.PROTOCOL, expert.severity.WARN),
    error_resp = ProtoExpert.new("kmsmb.error_frame", "ERROR frame",
                                 expert.group.RESPONSE_CODE, expert.severity.NOTE),
}
kmsmb.experts = {
    ME.len, ME.version, ME.type, ME.truncated, ME.trailing, ME.id_len,
    ME.id_chars, ME.period, ME.blob, ME.sealed, ME.status_bad, ME.error_resp,
}

-- ---- preferences
kms.prefs.udp_port = Pref.uint("UDP port", 7430, "kmsd's UDP port (section 2)")
kms.prefs.heuristic = Pref.bool("Heuristic on any UDP port", true,
    "Claim UDP datagrams on other ports with magic \"KM\", a known type, "
    .. "reserved 0 and body_len = length - 12")
kmsmb.prefs.tcp_port = Pref.uint("TCP port", 7440, "kms-mailbox's TCP port (part II)")
kmsmb.prefs.heuristic = Pref.bool("Heuristic on any TCP port", false,
    "Try frames on other TCP ports (u32 length, version 1, known type); off by default")

-- ---------------------------------------------------------------- helpers

local function ms_text(ms)
    -- ms: a Lua number (exact below 2^53, i.e. for any real date)
    local s = math.floor(ms / 1000)
    local ok, d = pcall(os.date, "!%Y-%m-%d %H:%M:%S", s)
    if not ok or not d then return "" end
    return string.format(" (%s.%03d UTC)", d, math.floor(ms - s * 1000))
end

local function id_printable(tvbr)
    local s = tvbr:raw()
    for i = 1, #s do
        local c = s:byte(i)
        if c < 0x21 or c > 0x7e then return false end
    end
    return true
end

local function period_ok(s)
    local y, m = s:match("^(%d%d%d%d)%-(%d%d)$")
    if not y then return false end
    m = tonumber(m)
    return m >= 1 and m <= 12
end

-- A bounds-checked reader over a tvb. A read past the end adds the
-- "truncated" expert once and returns nil; no Lua error ever escapes.
local Reader = {}
Reader.__index = Reader

local function reader(tvb, off, tree, ex)
    return setmetatable({ tvb = tvb, off = off, len = tvb:len(), tree = tree,
                          ex = ex, bad = false }, Reader)
end

function Reader:left() return self.len - self.off end

function Reader:need(n, what, tree)
    if self.bad then return false end
    if n < 0 or self.off + n > self.len then
        self.bad = true
        local t = tree or self.tree
        t:add_proto_expert_info(self.ex.truncated,
            string.format("%s: needs %d bytes, %d left", what, n, self:left()))
        return false
    end
    return true
end

-- take(n): the next n bytes as a TvbRange (n may be 0: returns nil, ok)
function Reader:take(n, what, tree)
    if not self:need(n, what, tree) then return nil end
    local r = nil
    if n > 0 then r = self.tvb(self.off, n) end
    self.off = self.off + n
    return r, true
end

-- ID (section 4): u8 len | bytes. Adds len and string fields to tree.
-- ex: the expert table (E or M); returns the string or nil.
local function add_id(rd, tree, f_len, f_id, name, ex)
    local lr = rd:take(1, name .. " length", tree)
    if not lr then return nil end
    local n = lr:uint()
    local li = tree:add(f_len, lr)
    if n == 0 or n > ID_MAX then
        li:add_proto_expert_info(ex.id_len, string.format("%s length %d out of 1..128", name, n))
    end
    if n == 0 then return "" end
    local r = rd:take(n, name, tree)
    if not r then return nil end
    local s = r:string()
    local it = tree:add(f_id, r)
    if not id_printable(r) then
        it:add_proto_expert_info(ex.id_chars, name .. " has a byte outside 0x21..0x7e")
    end
    return s
end

local function add_trailing(rd, tree, f, ex)
    local n = rd:left()
    if n > 0 and not rd.bad then
        local it = tree:add(f, rd.tvb(rd.off, n))
        it:add_proto_expert_info(ex.trailing, string.format("%d bytes after the last field", n))
        rd.off = rd.len
    end
end

local function add_u64_ms(tree, field, range)
    local v = range:uint64()
    local it = tree:add(field, range)
    it:append_text(ms_text(v:tonumber()))
    return it
end

-- ---------------------------------------------------------------- kms

-- Token (section 5.1) named `name`, expected role `want`.
local function add_token(rd, tree, name, want)
    if rd.bad then return nil end
    if not rd:need(1, name .. " token") then return nil end
    local start = rd.off
    local t = tree:add(F.token, rd.tvb(start, math.min(TOKEN_FIXED, rd:left())))
    t:set_text(name .. " token")
    local role_r = rd:take(1, name .. " role", t)
    if not role_r then return nil end
    local role = role_r:uint()
    local ri = t:add(F.tok_role, role_r)
    if role ~= want then
        ri:add_proto_expert_info(E.role, string.format("%s token has role %s (0x%02x), expected %s",
            name, ROLES[role] or "unknown", role, ROLES[want]))
    end
    local gen_r = rd:take(4, name .. " gen", t)
    if not gen_r then return nil end
    t:add(F.tok_gen, gen_r)
    local ts_r = rd:take(8, name .. " ts_ms", t)
    if not ts_r then return nil end
    add_u64_ms(t, F.tok_ts, ts_r)
    local nonce_r = rd:take(12, name .. " nonce", t)
    if not nonce_r then return nil end
    t:add(F.tok_nonce, nonce_r)
    local cl_r = rd:take(2, name .. " ct_len", t)
    if not cl_r then return nil end
    local n = cl_r:uint()
    local ci = t:add(F.tok_ct_len, cl_r)
    if n < 2 or n > 258 then
        ci:add_proto_expert_info(E.ct_len, string.format("ct_len %d out of 2..258", n))
    end
    local ct_r, ok = rd:take(n, name .. " ct", t)
    if not ok then return nil end
    if ct_r then t:add(F.tok_ct, ct_r) end
    local tag_r = rd:take(TAG_LEN, name .. " tag", t)
    if not tag_r then return nil end
    t:add(F.tok_tag, tag_r)
    t:set_len(rd.off - start)
    t:append_text(string.format(": role %s, gen %d, %d bytes", ROLES[role] or "?",
        gen_r:uint(), rd.off - start))
    return role
end

local function add_key_id(rd, tree)
    local r = rd:take(16, "key_id", tree)
    if not r then return nil end
    local k = tree:add(F.key_id, r)
    local tvb = rd.tvb
    local o = r:offset()
    add_u64_ms(k, F.key_id_time, tvb(o, 8))
    k:add(F.key_id_wrk, tvb(o + 8, 2))
    k:add(F.key_id_seq, tvb(o + 10, 2))
    k:add(F.key_id_rnd, tvb(o + 12, 4))
    return r
end

-- Request/response tracking by (client address/port, server address/port,
-- txid); filled on the first pass, read on every pass.
local tx_by_key, tx_by_frame = {}, {}

local function tx_key(cli, cport, srv, sport, txid)
    return tostring(cli) .. "/" .. cport .. "|" .. tostring(srv) .. "/" .. sport .. "|" .. txid
end

local function track(pinfo, tree, mtype, txid)
    local num = pinfo.number
    if not pinfo.visited then
        if not REPLY_TYPES[mtype] then    -- a request, or an unknown type kmsd answers
            local e = { req = num, req_ts = pinfo.abs_ts }
            tx_by_key[tx_key(pinfo.src, pinfo.src_port, pinfo.dst, pinfo.dst_port, txid)] = e
            tx_by_frame[num] = e
        else
            local k = tx_key(pinfo.dst, pinfo.dst_port, pinfo.src, pinfo.src_port, txid)
            local e = tx_by_key[k]
            if e and not e.resp then
                e.resp = num
                e.resp_ts = pinfo.abs_ts
                tx_by_frame[num] = e
                tx_by_key[k] = nil
            end
        end
    end
    local e = tx_by_frame[num]
    if not e then return end
    if e.req == num and e.resp then
        tree:add(F.response_in, e.resp):set_generated()
    elseif e.resp == num then
        tree:add(F.request_in, e.req):set_generated()
        local d = e.resp_ts - e.req_ts
        local s = math.floor(d)
        tree:add(F.resp_time, NSTime.new(s, math.floor((d - s) * 1e9))):set_generated()
    end
end

local function dissect_kms(tvb, pinfo, tree)
    local len = tvb:len()
    local rlen = tvb:reported_len()
    pinfo.cols.protocol = "KMS"
    local root = tree:add(kms, tvb())
    if len < HDR_LEN then
        root:add_proto_expert_info(E.short, string.format("%d bytes, below the 12-byte header", len))
        pinfo.cols.info = "KMS (short datagram)"
        return len
    end
    local magic_r = tvb(0, 2)
    local mi = root:add(F.magic, magic_r)
    if magic_r:uint() ~= 0x4b4d then
        mi:add_proto_expert_info(E.magic, "Magic is not \"KM\" (4b 4d): kmsd drops it silently")
    end
    local ver = tvb(2, 1):uint()
    local vi = root:add(F.version, tvb(2, 1))
    if ver ~= 1 then
        vi:add_proto_expert_info(E.version, string.format("Version %d: kmsd answers BAD_VERSION", ver))
    end
    local mtype = tvb(3, 1):uint()
    local ti = root:add(F.type, tvb(3, 1))
    local tname = MSG_TYPES[mtype]
    if not tname then
        ti:add_proto_expert_info(E.type, string.format("Unknown type 0x%02x: kmsd answers BAD_TYPE", mtype))
        tname = string.format("type 0x%02x", mtype)
    end
    local txid = tvb(4, 4):uint()
    root:add(F.txid, tvb(4, 4))
    local bl = tvb(8, 2):uint()
    local bi = root:add(F.body_len, tvb(8, 2))
    if bl ~= rlen - HDR_LEN then
        bi:add_proto_expert_info(E.body_len, string.format(
            "body_len %d, datagram body %d bytes: kmsd drops it silently", bl, rlen - HDR_LEN))
    end
    local resv = tvb(10, 2):uint()
    local rsi = root:add(F.reserved, tvb(10, 2))
    if resv ~= 0 then
        rsi:add_proto_expert_info(E.reserved, "Reserved is not 0: kmsd drops it silently")
    end
    root:append_text(string.format(", %s, txid 0x%08x", tname, txid))
    local info = string.format("%s txid=0x%08x", tname, txid)

    local rd = reader(tvb, HDR_LEN, root, E)
    if REQUEST_TYPES[mtype] and rlen > DGRAM_MAX then
        root:add_proto_expert_info(E.oversize, string.format(
            "%d bytes: kmsd answers MALFORMED (or its socket mode drops it)", rlen))
    end

    if mtype == 0x01 then                         -- 6.1 DEPOSIT_REQ
        local a = add_id(rd, root, F.id_a_len, F.id_a, "ID-A", E)
        local b = add_id(rd, root, F.id_b_len, F.id_b, "ID-B", E)
        local s = add_id(rd, root, F.id_as_len, F.id_as, "ID-AS", E)
        add_token(rd, root, "Ea", 1)
        add_token(rd, root, "Eas", 2)
        add_trailing(rd, root, F.trailing, E)
        info = info .. string.format(" %s -> %s via %s", a or "?", b or "?", s or "?")
    elseif mtype == 0x03 then                     -- 6.2 RETRIEVE_REQ
        local a = add_id(rd, root, F.id_a_len, F.id_a, "ID-A", E)
        local b = add_id(rd, root, F.id_b_len, F.id_b, "ID-B", E)
        add_key_id(rd, root)
        add_token(rd, root, "Ea", 1)
        add_token(rd, root, "Eb", 3)
        add_trailing(rd, root, F.trailing, E)
        info = info .. string.format(" %s -> %s", a or "?", b or "?")
    elseif mtype == 0x02 or mtype == 0x04 then    -- 6.3 key replies
        if rlen ~= KEY_REPLY_LEN then
            root:add_proto_expert_info(E.size, string.format("%s is %d bytes, not 100", tname, rlen))
        end
        local kid = add_key_id(rd, root)
        local g = rd:take(4, "k_gen")
        if g then root:add(F.k_gen, g) end
        local ex = rd:take(8, "expiry_ms")
        if ex then add_u64_ms(root, F.expiry, ex) end
        if rd:need(60, "keybox") then
            local kb = root:add(F.keybox, tvb(rd.off, 60))
            kb:add(F.kb_nonce, (rd:take(12, "keybox nonce")))
            kb:add(F.kb_ct, (rd:take(32, "keybox ct")))
            kb:add(F.kb_tag, (rd:take(16, "keybox tag")))
        end
        add_trailing(rd, root, F.trailing, E)
        if g then info = info .. string.format(" k_gen=%d", g:uint()) end
        if kid then info = info .. " key_id=" .. tostring(kid:bytes()) end
    elseif mtype == 0x05 then                     -- 17 IBE_KEY_REQ
        local x = add_id(rd, root, F.id_x_len, F.id_x, "ID-X", E)
        local pl = rd:take(1, "period length")
        local per
        if pl then
            local pli = root:add(F.period_len, pl)
            local n = pl:uint()
            if n ~= 7 then
                pli:add_proto_expert_info(E.period, string.format("Period length %d, not 7", n))
            end
            local pr, ok = rd:take(n, "period")
            if ok and pr then
                per = pr:string()
                local pi = root:add(F.period, pr)
                if not period_ok(per) then
                    pi:add_proto_expert_info(E.period, "Period is not YYYY-MM: kmsd answers BAD_PERIOD")
                end
            end
        end
        add_token(rd, root, "IBE", 4)
        add_trailing(rd, root, F.trailing, E)
        info = info .. string.format(" %s period=%s", x or "?", per or "?")
    elseif mtype == 0x06 then                     -- 17 IBE_KEY_RESP
        if rlen ~= IBE_RESP_LEN then
            root:add_proto_expert_info(E.size, string.format("IBE_KEY_RESP is %d bytes, not 402", rlen))
        end
        local k = rd:take(8, "kgc_id")
        if k then root:add(F.kgc_id, k) end
        local n = rd:take(12, "nonce")
        if n then root:add(F.ibe_nonce, n) end
        local c = rd:take(354, "ct")
        if c then root:add(F.ibe_ct, c) end
        local t = rd:take(16, "tag")
        if t then root:add(F.ibe_tag, t) end
        add_trailing(rd, root, F.trailing, E)
        if k then info = info .. " kgc_id=" .. tostring(k:bytes()) end
    elseif mtype == 0x7f then                     -- 6.4 ERROR
        if rlen ~= ERROR_LEN then
            root:add_proto_expert_info(E.size, string.format("ERROR is %d bytes, not 14", rlen))
        end
        local sr = rd:take(2, "status")
        if sr then
            local st = sr:uint()
            local si = root:add(F.status, sr)
            local sname = STATUS[st]
            if st == 0 or not sname then
                si:add_proto_expert_info(E.status_bad, string.format(
                    "Status %d: %s", st, st == 0 and "never sent in an ERROR" or "not defined in version 1"))
            else
                si:add_proto_expert_info(E.error_resp, "ERROR " .. sname)
            end
            info = info .. " status=" .. (sname or tostring(st))
        end
        add_trailing(rd, root, F.trailing, E)
    else
        if rd:left() > 0 then
            root:add(F.trailing, tvb(rd.off, rd:left())):set_text(
                string.format("Body of unknown type (%d bytes)", rd:left()))
        end
    end
    track(pinfo, root, mtype, txid)
    pinfo.cols.info = info
    return len
end

function kms.dissector(tvb, pinfo, tree)
    return dissect_kms(tvb, pinfo, tree)
end

local function kms_heuristic(tvb, pinfo, tree)
    if not kms.prefs.heuristic then return false end
    local len = tvb:len()
    if len < HDR_LEN then return false end
    if tvb(0, 2):uint() ~= 0x4b4d or tvb(10, 2):uint() ~= 0 then return false end
    if tvb(8, 2):uint() ~= tvb:reported_len() - HDR_LEN then return false end
    if not MSG_TYPES[tvb(3, 1):uint()] then return false end
    dissect_kms(tvb, pinfo, tree)
    return true
end

function kms.init()
    tx_by_key, tx_by_frame = {}, {}
end

-- ---------------------------------------------------------------- kmsmb

local mb_info   -- the Info text of the frames of the packet being dissected

local BLOB_NAMES = {
    [0x11] = { "IBE_B(ID-A, ID-B, xP)" },
    [0x12] = { "IBE_A(ID-MB, yP)" },
    [0x13] = { "IBE_MB(ID-A, ID-MB, xP, yP)", "key_b = IBE_B(ID-A, aP)" },
    [0x14] = { "IBE_A(ID-A, xP)" },
    [0x21] = { "IBE_MB(ID-B, ID-MB, xP)" },
    [0x22] = { "IBE_B(ID-MB, ID-B, xP, yP)" },
}

local function add_blob(rd, tree, name)
    local lr = rd:take(4, name .. " length", tree)
    if not lr then return nil end
    local n = lr:uint()
    local avail = math.min(n, rd:left())
    local b = tree:add(M.blob, rd.tvb(lr:offset(), 4 + avail))
    b:set_text(string.format("%s: %d bytes", name, n))
    b:add(M.blob_len, lr)
    if not rd:need(n, name, b) then return nil end
    local o = rd.off
    rd.off = rd.off + n
    if n < IBE_OVERHEAD then
        b:add_proto_expert_info(ME.blob, string.format("%s: %d bytes, below 289", name, n))
        if n > 0 then b:add(M.blob_ct, rd.tvb(o, n)) end
        return n
    end
    local tvb = rd.tvb
    b:add(M.blob_r, tvb(o, SAKKE_R_LEN))
    b:add(M.blob_h, tvb(o + SAKKE_R_LEN, SAKKE_H_LEN))
    local ctn = n - IBE_OVERHEAD
    if ctn > 0 then
        b:add(M.blob_ct, tvb(o + SAKKE_R_LEN + SAKKE_H_LEN, ctn))
    end
    b:add(M.blob_tag, tvb(o + n - TAG_LEN, TAG_LEN))
    return n
end

local function add_mb_period(rd, tree)
    local r = rd:take(7, "period", tree)
    if not r then return nil end
    local s = r:string()
    local it = tree:add(M.period, r)
    if not period_ok(s) then
        it:add_proto_expert_info(ME.period, "Period is not YYYY-MM")
    end
    return s
end

-- One whole frame (reassembled by dissect_tcp_pdus).
local function dissect_mb_frame(tvb, pinfo, tree)
    local len = tvb:len()
    local root = tree:add(kmsmb, tvb())
    if len < MB_HDR_LEN then
        root:add_proto_expert_info(ME.truncated, string.format("%d bytes, below the 6-byte header", len))
        return len
    end
    local flen = tvb(0, 4):uint()
    local li = root:add(M.len, tvb(0, 4))
    if flen < 2 or flen > MB_FRAME_MAX or flen ~= tvb:reported_len() - 4 then
        li:add_proto_expert_info(ME.len, string.format("Length %d (frame holds %d after it)",
            flen, tvb:reported_len() - 4))
    end
    local ver = tvb(4, 1):uint()
    local vi = root:add(M.version, tvb(4, 1))
    if ver ~= 1 then
        vi:add_proto_expert_info(ME.version, string.format("Version %d: the mailbox answers BAD_VERSION", ver))
    end
    local mtype = tvb(5, 1):uint()
    local ti = root:add(M.type, tvb(5, 1))
    local tname = MB_TYPES[mtype]
    if not tname then
        ti:add_proto_expert_info(ME.type, string.format("Unknown type 0x%02x", mtype))
        tname = string.format("type 0x%02x", mtype)
    else
        ti:append_text(" (" .. MB_DIR[mtype] .. ")")
    end
    root:append_text(string.format(", %s, %d bytes", tname, len))
    local info = tname

    local rd = reader(tvb, MB_HDR_LEN, root, ME)
    local sealed = MB_SEALED[mtype]
    if mtype == 0x11 then                            -- I1
        local a = add_id(rd, root, M.id_a_len, M.id_a, "ID-A", ME)
        local b = add_id(rd, root, M.id_b_len, M.id_b, "ID-B", ME)
        local p = add_mb_period(rd, root)
        add_blob(rd, root, BLOB_NAMES[mtype][1])
        info = info .. string.format(" %s -> %s period=%s", a or "?", b or "?", p or "?")
    elseif mtype == 0x12 then                        -- R1
        local m = add_id(rd, root, M.id_mb_len, M.id_mb, "ID-MB", ME)
        add_blob(rd, root, BLOB_NAMES[mtype][1])
        info = info .. " " .. (m or "?")
    elseif mtype == 0x13 then                        -- I2
        add_blob(rd, root, BLOB_NAMES[mtype][1])
        add_blob(rd, root, BLOB_NAMES[mtype][2])
    elseif mtype == 0x14 or mtype == 0x22 then       -- R2, F2
        add_blob(rd, root, BLOB_NAMES[mtype][1])
    elseif mtype == 0x21 then                        -- F1
        local b = add_id(rd, root, M.id_b_len, M.id_b, "ID-B", ME)
        local p = add_mb_period(rd, root)
        add_blob(rd, root, BLOB_NAMES[mtype][1])
        info = info .. string.format(" %s period=%s", b or "?", p or "?")
    elseif sealed then                               -- sealed frames
        local n = rd:left()
        if n < TAG_LEN then
            root:add_proto_expert_info(ME.sealed, string.format(
                "Sealed body of %d bytes, below the 16-byte tag", n))
            if n > 0 then root:add(M.sealed_ct, tvb(rd.off, n)) end
            rd.off = rd.len
        else
            local s = root:add(M.sealed, tvb(rd.off, n))
            local ptn = n - TAG_LEN
            s:set_text(string.format("Sealed: %s", sealed.what))
            s:add(M.sealed_len, tvb(rd.off, 0), ptn):set_generated()
            if ptn > 0 then s:add(M.sealed_ct, tvb(rd.off, ptn)) end
            s:add(M.sealed_tag, tvb(rd.off + ptn, TAG_LEN))
            if (sealed.fixed and ptn ~= sealed.fixed) or (sealed.min and ptn < sealed.min) then
                s:add_proto_expert_info(ME.sealed, string.format(
                    "%s plaintext of %d bytes, expected %s %d", tname, ptn,
                    sealed.fixed and "" or ">=", sealed.fixed or sealed.min))
            end
            rd.off = rd.len
            info = info .. string.format(" sealed %d bytes", ptn)
        end
    elseif mtype == 0x7f then                        -- ERROR
        local sr = rd:take(2, "status")
        if sr then
            local st = sr:uint()
            local si = root:add(M.status, sr)
            local sname = STATUS[st]
            if st == 0 or not sname then
                si:add_proto_expert_info(ME.status_bad, string.format("Status %d", st))
            else
                si:add_proto_expert_info(ME.error_resp, "ERROR " .. sname)
            end
            info = info .. " status=" .. (sname or tostring(st))
        end
    else
        rd.off = rd.len
    end
    add_trailing(rd, root, M.trailing, ME)
    -- several frames may share a segment: list them all
    mb_info = mb_info and (mb_info .. ", " .. info) or info
    pinfo.cols.info = mb_info
    return len
end

local function mb_pdu_len(tvb, pinfo, offset)
    local n = tvb(offset, 4):uint()
    if n < 2 or n > MB_FRAME_MAX then
        -- no sane frame: dissect what is here, flagged, instead of waiting
        return tvb:len() - offset
    end
    return n + 4
end

function kmsmb.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol = "KMS-MB"
    mb_info = nil
    dissect_tcp_pdus(tvb, tree, 4, mb_pdu_len, dissect_mb_frame, true)
    return tvb:len()
end

local function kmsmb_heuristic(tvb, pinfo, tree)
    if not kmsmb.prefs.heuristic then return false end
    if tvb:len() < MB_HDR_LEN then return false end
    local n = tvb(0, 4):uint()
    if n < 2 or n > MB_FRAME_MAX or tvb(4, 1):uint() ~= 1 or not MB_TYPES[tvb(5, 1):uint()] then
        return false
    end
    -- the rest of this connection goes to kmsmb directly (reassembly
    -- across segments then works as on the registered port)
    pcall(function() pinfo.conversation = kmsmb end)
    kmsmb.dissector(tvb, pinfo, tree)
    return true
end

-- ---------------------------------------------------------------- registration

local udp_table = DissectorTable.get("udp.port")
local tcp_table = DissectorTable.get("tcp.port")
local cur_udp, cur_tcp

local function register_ports()
    if cur_udp then udp_table:remove(cur_udp, kms) end
    if cur_tcp then tcp_table:remove(cur_tcp, kmsmb) end
    cur_udp, cur_tcp = nil, nil
    if kms.prefs.udp_port > 0 then
        cur_udp = kms.prefs.udp_port
        udp_table:add(cur_udp, kms)
    end
    if kmsmb.prefs.tcp_port > 0 then
        cur_tcp = kmsmb.prefs.tcp_port
        tcp_table:add(cur_tcp, kmsmb)
    end
end

kms.prefs_changed = register_ports
kmsmb.prefs_changed = register_ports
register_ports()
-- "Decode As" for any other port (tshark: -d udp.port==N,kms -d tcp.port==N,kmsmb)
pcall(function() udp_table:add_for_decode_as(kms) end)
pcall(function() tcp_table:add_for_decode_as(kmsmb) end)
kms:register_heuristic("udp", kms_heuristic)
kmsmb:register_heuristic("tcp", kmsmb_heuristic)

if set_plugin_info then
    set_plugin_info({
        version = VERSION,
        description = "IMS KMS wire protocol v1 (kms, kmsmb)",
        repository = "proto/wireshark/kms.lua",
    })
end
