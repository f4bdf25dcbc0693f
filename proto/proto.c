// SPDX-License-Identifier: Apache-2.0
/*
 * Wire format version 1: parsers, encoders, associated-data builders and the
 * pair hash. docs/PROTOCOL.md is the normative text; kms_proto.h the layout.
 *
 * Parsers work on a cursor with a sticky error: every read is checked
 * against the end of the buffer, a failed read sets the error and makes all
 * later reads fail, and the caller looks at the error once at the end.
 * Nothing here allocates.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "kms_err.h"
#include "kms_proto.h"

#define MAGIC0 'K'
#define MAGIC1 'M'

static const char tok_label[8] = { 'K', 'M', 'S', '1', '-', 'T', 'O', 'K' };
static const char key_label[8] = { 'K', 'M', 'S', '1', '-', 'K', 'E', 'Y' };
static const char ibe_label[8] = { 'K', 'M', 'S', '1', '-', 'I', 'B', 'E' };
static const char pair_label[9] = { 'K', 'M', 'S', '1', '-', 'P', 'A', 'I', 'R' };

/* ---- big-endian load/store ---- */

static uint16_t ld16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t ld32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t ld64(const uint8_t *p)
{
	return (uint64_t)ld32(p) << 32 | ld32(p + 4);
}

static uint8_t *st8(uint8_t *p, uint8_t v)
{
	*p = v;
	return p + 1;
}

static uint8_t *st16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

static uint8_t *st32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

static uint8_t *st64(uint8_t *p, uint64_t v)
{
	st32(p, (uint32_t)(v >> 32));
	return st32(p + 4, (uint32_t)v);
}

static uint8_t *stn(uint8_t *p, const void *src, size_t n)
{
	memcpy(p, src, n);
	return p + n;
}

static uint8_t *st_id(uint8_t *p, const struct kms_id *id)
{
	p = st8(p, id->len);
	return stn(p, id->p, id->len);
}

/* ---- reading cursor with a sticky error ---- */

struct cur {
	const uint8_t *p;
	size_t left;
	int bad;
};

/* Return a pointer to the next @n bytes, or NULL (and mark the cursor bad)
 * if fewer remain. */
static const uint8_t *take(struct cur *c, size_t n)
{
	const uint8_t *r;

	if (c->bad || n > c->left) {
		c->bad = 1;
		return NULL;
	}
	r = c->p;
	c->p += n;
	c->left -= n;
	return r;
}

static uint8_t get8(struct cur *c)
{
	const uint8_t *p = take(c, 1);

	return p ? p[0] : 0;
}

static uint16_t get16(struct cur *c)
{
	const uint8_t *p = take(c, 2);

	return p ? ld16(p) : 0;
}

static uint32_t get32(struct cur *c)
{
	const uint8_t *p = take(c, 4);

	return p ? ld32(p) : 0;
}

static uint64_t get64(struct cur *c)
{
	const uint8_t *p = take(c, 8);

	return p ? ld64(p) : 0;
}

static void get_id(struct cur *c, struct kms_id *id)
{
	id->len = get8(c);
	id->p = take(c, id->len);
	if (!c->bad && !kms_id_valid(id))
		c->bad = 1;
}

static void get_token(struct cur *c, struct kms_token *t)
{
	const uint8_t *start = c->p;

	t->role = get8(c);
	t->gen = get32(c);
	t->ts_ms = get64(c);
	t->nonce = take(c, KMS_NONCE_LEN);
	t->ct_len = get16(c);
	if (!c->bad && (t->ct_len < 2 || t->ct_len > KMS_TOKEN_PT_MAX))
		c->bad = 1;
	t->ct = take(c, t->ct_len);
	t->tag = take(c, KMS_TAG_LEN);
	t->raw = start;
	t->raw_len = c->bad ? 0 : (uint16_t)(c->p - start);
}

/* ---- IDs ---- */

int kms_id_valid(const struct kms_id *id)
{
	unsigned bad = 0;

	if (!id || !id->p || id->len < 1 || id->len > KMS_ID_MAX)
		return 0;
	/* Every byte in 0x21..0x7e; no early exit, so the loop vectorizes
	 * (two or three IDs a request). */
	for (unsigned i = 0; i < id->len; i++)
		bad |= (uint8_t)(id->p[i] - 0x21) > 0x7e - 0x21;
	return !bad;
}

int kms_id_from_str(const char *s, struct kms_id *out)
{
	struct kms_id id;
	size_t n;

	if (!s || !out)
		return KMS_ERR_INVAL;
	n = strnlen(s, KMS_ID_MAX + 1);
	if (n > KMS_ID_MAX)
		return KMS_ERR_INVAL;
	id.p = (const uint8_t *)s;
	id.len = (uint8_t)n;
	if (!kms_id_valid(&id))
		return KMS_ERR_INVAL;
	*out = id;
	return KMS_OK;
}

/* ---- header ---- */

int kms_hdr_parse(const uint8_t *buf, size_t len, struct kms_hdr *out)
{
	uint16_t body_len;

	if (!buf || len < KMS_HDR_LEN)
		return KMS_ERR_MALFORMED;
	if (buf[0] != MAGIC0 || buf[1] != MAGIC1)
		return KMS_ERR_MALFORMED;
	if (buf[10] != 0 || buf[11] != 0)
		return KMS_ERR_MALFORMED;
	body_len = ld16(buf + 8);
	if ((size_t)body_len != len - KMS_HDR_LEN)
		return KMS_ERR_MALFORMED;
	out->version = buf[2];
	out->type = buf[3];
	out->txid = ld32(buf + 4);
	out->body_len = body_len;
	return KMS_OK;
}

static uint8_t *put_hdr(uint8_t *p, uint8_t type, uint32_t txid,
			size_t body_len)
{
	p = st8(p, MAGIC0);
	p = st8(p, MAGIC1);
	p = st8(p, KMS_PROTO_VERSION);
	p = st8(p, type);
	p = st32(p, txid);
	p = st16(p, (uint16_t)body_len);
	return st16(p, 0);
}

/* ---- requests ---- */

int kms_req_parse(const uint8_t *buf, size_t len, struct kms_req *out,
		  uint16_t *status)
{
	struct kms_req r;
	struct cur c;
	uint8_t want_x;

	*status = KMS_ST_OK;
	memset(&r, 0, sizeof(r));
	if (kms_hdr_parse(buf, len, &r.hdr) != KMS_OK)
		return KMS_ERR_MALFORMED;       /* drop: not ours to answer */

	/* Never answer a reply, whatever its version: otherwise two servers
	 * (or one server and a datagram spoofed from its own address) would
	 * bounce ERROR replies between them forever. */
	if (r.hdr.type == KMS_T_DEPOSIT_RESP ||
	    r.hdr.type == KMS_T_RETRIEVE_RESP ||
	    r.hdr.type == KMS_T_IBE_KEY_RESP || r.hdr.type == KMS_T_ERROR)
		return KMS_ERR_MALFORMED;       /* drop */

	/* From here on every refusal is answered, and the answer echoes the
	 * txid: hand the header back with it. */
	out->hdr = r.hdr;
	if (r.hdr.version != KMS_PROTO_VERSION) {
		*status = KMS_ST_BAD_VERSION;
		return KMS_ERR_MALFORMED;
	}
	if (r.hdr.type == KMS_T_DEPOSIT_REQ) {
		want_x = KMS_ROLE_AS;
	} else if (r.hdr.type == KMS_T_RETRIEVE_REQ) {
		want_x = KMS_ROLE_B;
	} else if (r.hdr.type == KMS_T_IBE_KEY_REQ) {
		want_x = KMS_ROLE_IBE;
	} else {
		*status = KMS_ST_BAD_TYPE;
		return KMS_ERR_MALFORMED;
	}
	if (len > KMS_DGRAM_MAX) {
		*status = KMS_ST_MALFORMED;
		return KMS_ERR_MALFORMED;
	}

	c.p = buf + KMS_HDR_LEN;
	c.left = len - KMS_HDR_LEN;
	c.bad = 0;
	get_id(&c, &r.id_a);
	get_id(&c, &r.id_b);
	if (r.hdr.type == KMS_T_DEPOSIT_REQ)
		get_id(&c, &r.id_as);
	else if (r.hdr.type == KMS_T_RETRIEVE_REQ)
		r.key_id = take(&c, KMS_KEY_ID_LEN);
	if (r.hdr.type != KMS_T_IBE_KEY_REQ)
		get_token(&c, &r.tok_a);
	get_token(&c, &r.tok_x);
	if (c.bad || c.left != 0) {
		*status = KMS_ST_MALFORMED;
		return KMS_ERR_MALFORMED;
	}
	/* Roles are judged only once the whole body is well formed, so a
	 * truncated or padded datagram is always MALFORMED. */
	if ((r.hdr.type != KMS_T_IBE_KEY_REQ && r.tok_a.role != KMS_ROLE_A) ||
	    r.tok_x.role != want_x) {
		*status = KMS_ST_WRONG_ROLE;
		return KMS_ERR_MALFORMED;
	}
	*out = r;
	return KMS_OK;
}

int kms_req_peek_pair(const uint8_t *buf, size_t len, struct kms_id *a,
		      struct kms_id *b)
{
	struct kms_id ia, ib;
	struct cur c;

	if (!buf || len < KMS_HDR_LEN || buf[0] != MAGIC0 || buf[1] != MAGIC1)
		return KMS_ERR_MALFORMED;
	c.p = buf + KMS_HDR_LEN;
	c.left = len - KMS_HDR_LEN;
	c.bad = 0;
	ia.len = get8(&c);
	ia.p = take(&c, ia.len);
	ib.len = get8(&c);
	ib.p = take(&c, ib.len);
	if (c.bad || ia.len < 1 || ia.len > KMS_ID_MAX || ib.len < 1 ||
	    ib.len > KMS_ID_MAX)
		return KMS_ERR_MALFORMED;
	*a = ia;
	*b = ib;
	return KMS_OK;
}

/* ---- replies ---- */

int kms_resp_parse(const uint8_t *buf, size_t len, struct kms_resp *out)
{
	struct kms_resp r;
	struct cur c;

	memset(&r, 0, sizeof(r));
	if (kms_hdr_parse(buf, len, &r.hdr) != KMS_OK)
		return KMS_ERR_MALFORMED;
	if (r.hdr.version != KMS_PROTO_VERSION)
		return KMS_ERR_MALFORMED;
	c.p = buf + KMS_HDR_LEN;
	c.left = len - KMS_HDR_LEN;
	c.bad = 0;
	switch (r.hdr.type) {
	case KMS_T_DEPOSIT_RESP:
	case KMS_T_RETRIEVE_RESP:
		r.status = KMS_ST_OK;
		r.key_id = take(&c, KMS_KEY_ID_LEN);
		r.k_gen = get32(&c);
		r.expiry_ms = get64(&c);
		r.keybox = take(&c, KMS_KEYBOX_LEN);
		break;
	case KMS_T_IBE_KEY_RESP:
		r.status = KMS_ST_OK;
		r.kgc_id = take(&c, KMS_KGC_ID_LEN);
		r.ibe_box = take(&c, KMS_IBE_RESP_BODY_LEN - KMS_KGC_ID_LEN);
		break;
	case KMS_T_ERROR:
		r.status = get16(&c);
		if (!c.bad && r.status == KMS_ST_OK)
			c.bad = 1;
		break;
	default:
		return KMS_ERR_MALFORMED;
	}
	if (c.bad || c.left != 0)
		return KMS_ERR_MALFORMED;
	*out = r;
	return KMS_OK;
}

/* ---- pair hash ---- */

struct kms_hasher {
	EVP_MD_CTX *ctx;
	EVP_MD *sha256;
};

struct kms_hasher *kms_hasher_new(void)
{
	struct kms_hasher *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->ctx = EVP_MD_CTX_new();
	h->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!h->ctx || !h->sha256) {
		kms_hasher_free(h);
		return NULL;
	}
	return h;
}

void kms_hasher_free(struct kms_hasher *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	EVP_MD_free(h->sha256);
	free(h);
}

void kms_hasher_sha256(struct kms_hasher *h, const void *data, size_t len,
		       uint8_t out[32])
{
	if (EVP_DigestInit_ex(h->ctx, h->sha256, NULL) != 1 ||
	    EVP_DigestUpdate(h->ctx, data, len) != 1 ||
	    EVP_DigestFinal_ex(h->ctx, out, NULL) != 1)
		memset(out, 0, 32);  /* only if libcrypto is broken */
}

void kms_hasher_pair(struct kms_hasher *h, const struct kms_id *a,
		     const struct kms_id *b, uint8_t out[KMS_PAIR_HASH_LEN])
{
	uint8_t buf[sizeof(pair_label) + 2 + 2 * 255];
	uint8_t *p = buf;

	/* struct kms_id.len is a u8, so buf always fits even unvalidated IDs */
	p = stn(p, pair_label, sizeof(pair_label));
	p = st_id(p, a);
	p = st_id(p, b);
	kms_hasher_sha256(h, buf, (size_t)(p - buf), out);
}

void kms_pair_hash(const struct kms_id *a, const struct kms_id *b,
		   uint8_t out[KMS_PAIR_HASH_LEN])
{
	struct kms_hasher *h = kms_hasher_new();

	if (!h) {
		memset(out, 0, KMS_PAIR_HASH_LEN);
		return;
	}
	kms_hasher_pair(h, a, b, out);
	kms_hasher_free(h);
}

unsigned kms_pair_worker(const uint8_t hash[KMS_PAIR_HASH_LEN], unsigned n)
{
	if (n == 0)
		return 0;
	return (unsigned)(ld64(hash) % n);
}

/* ---- associated data and plaintext ---- */

size_t kms_token_ad(uint8_t role, const struct kms_id *party, uint32_t gen,
		    uint64_t ts_ms, uint8_t *ad)
{
	uint8_t *p = ad;

	p = stn(p, tok_label, sizeof(tok_label));
	p = st8(p, role);
	p = st_id(p, party);
	p = st32(p, gen);
	p = st64(p, ts_ms);
	return (size_t)(p - ad);
}

size_t kms_keybox_ad(uint8_t reply_type, uint8_t role, uint32_t recipient_gen,
		     const struct kms_id *a, const struct kms_id *b,
		     const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t k_gen,
		     uint64_t expiry_ms, const uint8_t req_nonce[KMS_NONCE_LEN],
		     uint8_t *ad)
{
	uint8_t *p = ad;

	p = stn(p, key_label, sizeof(key_label));
	p = st8(p, reply_type);
	p = st8(p, role);
	p = st32(p, recipient_gen);
	p = st_id(p, a);
	p = st_id(p, b);
	p = stn(p, key_id, KMS_KEY_ID_LEN);
	p = st32(p, k_gen);
	p = st64(p, expiry_ms);
	p = stn(p, req_nonce, KMS_NONCE_LEN);
	return (size_t)(p - ad);
}

size_t kms_token_pt(const struct kms_id *a, const struct kms_id *b,
		    uint8_t *out)
{
	uint8_t *p = out;

	p = st_id(p, a);
	p = st_id(p, b);
	return (size_t)(p - out);
}

int kms_token_pt_matches(const uint8_t *pt, size_t pt_len,
			 const struct kms_id *a, const struct kms_id *b)
{
	unsigned diff;

	/* Lengths are public (the plain IDs travel in clear): an early exit
	 * on them leaks nothing. The content is compared without one. */
	if (pt_len != 2 + (size_t)a->len + b->len)
		return 0;
	diff = pt[0] ^ a->len;
	diff |= (unsigned)CRYPTO_memcmp(pt + 1, a->p, a->len);
	diff |= pt[1 + a->len] ^ b->len;
	diff |= (unsigned)CRYPTO_memcmp(pt + 2 + a->len, b->p, b->len);
	return diff == 0;
}

/* ---- encoders ---- */

int kms_token_encode(uint8_t role, uint32_t gen, uint64_t ts_ms,
		     const uint8_t nonce[KMS_NONCE_LEN], const uint8_t *ct,
		     uint16_t ct_len, const uint8_t tag[KMS_TAG_LEN],
		     uint8_t *out, size_t cap)
{
	size_t n = KMS_TOKEN_FIXED + (size_t)ct_len;
	uint8_t *p = out;

	if (!nonce || !ct || !tag || !out || ct_len < 2 ||
	    ct_len > KMS_TOKEN_PT_MAX)
		return KMS_ERR_INVAL;
	if (cap < n)
		return KMS_ERR_SPACE;
	p = st8(p, role);
	p = st32(p, gen);
	p = st64(p, ts_ms);
	p = stn(p, nonce, KMS_NONCE_LEN);
	p = st16(p, ct_len);
	p = stn(p, ct, ct_len);
	p = stn(p, tag, KMS_TAG_LEN);
	return (int)(p - out);
}

static int tok_len_ok(const uint8_t *tok, size_t len)
{
	return tok && len >= KMS_TOKEN_FIXED + 2 && len <= KMS_TOKEN_MAX;
}

int kms_deposit_req_encode(uint32_t txid, const struct kms_id *a,
			   const struct kms_id *b, const struct kms_id *as,
			   const uint8_t *tok_a, size_t tok_a_len,
			   const uint8_t *tok_as, size_t tok_as_len,
			   uint8_t *out, size_t cap)
{
	size_t body;
	uint8_t *p = out;

	if (!out || !kms_id_valid(a) || !kms_id_valid(b) || !kms_id_valid(as) ||
	    !tok_len_ok(tok_a, tok_a_len) || !tok_len_ok(tok_as, tok_as_len))
		return KMS_ERR_INVAL;
	/* bounded by 3 * 129 + 2 * KMS_TOKEN_MAX < KMS_DGRAM_MAX */
	body = 3 + (size_t)a->len + b->len + as->len + tok_a_len + tok_as_len;
	if (cap < KMS_HDR_LEN + body)
		return KMS_ERR_SPACE;
	p = put_hdr(p, KMS_T_DEPOSIT_REQ, txid, body);
	p = st_id(p, a);
	p = st_id(p, b);
	p = st_id(p, as);
	p = stn(p, tok_a, tok_a_len);
	p = stn(p, tok_as, tok_as_len);
	return (int)(p - out);
}

int kms_retrieve_req_encode(uint32_t txid, const struct kms_id *a,
			    const struct kms_id *b,
			    const uint8_t key_id[KMS_KEY_ID_LEN],
			    const uint8_t *tok_a, size_t tok_a_len,
			    const uint8_t *tok_b, size_t tok_b_len,
			    uint8_t *out, size_t cap)
{
	size_t body;
	uint8_t *p = out;

	if (!out || !key_id || !kms_id_valid(a) || !kms_id_valid(b) ||
	    !tok_len_ok(tok_a, tok_a_len) || !tok_len_ok(tok_b, tok_b_len))
		return KMS_ERR_INVAL;
	body = 2 + (size_t)a->len + b->len + KMS_KEY_ID_LEN + tok_a_len +
	       tok_b_len;
	if (cap < KMS_HDR_LEN + body)
		return KMS_ERR_SPACE;
	p = put_hdr(p, KMS_T_RETRIEVE_REQ, txid, body);
	p = st_id(p, a);
	p = st_id(p, b);
	p = stn(p, key_id, KMS_KEY_ID_LEN);
	p = stn(p, tok_a, tok_a_len);
	p = stn(p, tok_b, tok_b_len);
	return (int)(p - out);
}

int kms_key_resp_encode(uint8_t type, uint32_t txid,
			const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t k_gen,
			uint64_t expiry_ms,
			const uint8_t keybox[KMS_KEYBOX_LEN], uint8_t *out,
			size_t cap)
{
	uint8_t *p = out;

	if (!out || !key_id || !keybox ||
	    (type != KMS_T_DEPOSIT_RESP && type != KMS_T_RETRIEVE_RESP))
		return KMS_ERR_INVAL;
	if (cap < KMS_HDR_LEN + KMS_RESP_BODY_LEN)
		return KMS_ERR_SPACE;
	p = put_hdr(p, type, txid, KMS_RESP_BODY_LEN);
	p = stn(p, key_id, KMS_KEY_ID_LEN);
	p = st32(p, k_gen);
	p = st64(p, expiry_ms);
	p = stn(p, keybox, KMS_KEYBOX_LEN);
	return (int)(p - out);
}

int kms_error_encode(uint32_t txid, uint16_t status, uint8_t *out, size_t cap)
{
	uint8_t *p = out;

	if (!out || status == KMS_ST_OK)
		return KMS_ERR_INVAL;
	if (cap < KMS_HDR_LEN + 2)
		return KMS_ERR_SPACE;
	p = put_hdr(p, KMS_T_ERROR, txid, 2);
	p = st16(p, status);
	return (int)(p - out);
}

int kms_ibe_req_encode(uint32_t txid, const struct kms_id *x,
		       const struct kms_id *period, const uint8_t *tok,
		       size_t tok_len, uint8_t *out, size_t cap)
{
	size_t body;
	uint8_t *p = out;

	if (!out || !kms_id_valid(x) || !kms_id_valid(period) ||
	    !tok_len_ok(tok, tok_len))
		return KMS_ERR_INVAL;
	body = 2 + (size_t)x->len + period->len + tok_len;
	if (cap < KMS_HDR_LEN + body)
		return KMS_ERR_SPACE;
	p = put_hdr(p, KMS_T_IBE_KEY_REQ, txid, body);
	p = st_id(p, x);
	p = st_id(p, period);
	p = stn(p, tok, tok_len);
	return (int)(p - out);
}

int kms_ibe_resp_encode(uint32_t txid, const uint8_t kgc_id[KMS_KGC_ID_LEN],
			const uint8_t box[KMS_IBE_RESP_BODY_LEN -
					  KMS_KGC_ID_LEN],
			uint8_t *out, size_t cap)
{
	uint8_t *p = out;

	if (!out || !kgc_id || !box)
		return KMS_ERR_INVAL;
	if (cap < KMS_HDR_LEN + KMS_IBE_RESP_BODY_LEN)
		return KMS_ERR_SPACE;
	p = put_hdr(p, KMS_T_IBE_KEY_RESP, txid, KMS_IBE_RESP_BODY_LEN);
	p = stn(p, kgc_id, KMS_KGC_ID_LEN);
	p = stn(p, box, KMS_IBE_RESP_BODY_LEN - KMS_KGC_ID_LEN);
	return (int)(p - out);
}

size_t kms_ibe_resp_ad(const struct kms_id *x, const struct kms_id *period,
		       uint32_t gen, const uint8_t kgc_id[KMS_KGC_ID_LEN],
		       const uint8_t req_nonce[KMS_NONCE_LEN], uint8_t *ad)
{
	uint8_t *p = ad;

	p = stn(p, ibe_label, sizeof(ibe_label));
	p = st_id(p, x);
	p = st_id(p, period);
	p = st32(p, gen);
	p = stn(p, kgc_id, KMS_KGC_ID_LEN);
	p = stn(p, req_nonce, KMS_NONCE_LEN);
	return (size_t)(p - ad);
}
