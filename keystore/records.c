// SPDX-License-Identifier: Apache-2.0
/*
 * Record codec: the on-disk byte layout of every keystore value.
 *
 * Structs are never stored raw: padding, endianness and field order would
 * then depend on the compiler. Every record starts with a version byte
 * (1 here); integers are big-endian; IDs are a length byte followed by
 * that many bytes of printable ASCII (0x21..0x7e), with no padding. A
 * decoder accepts a record only if its version is known, its length is
 * exactly what its fields say, every enum holds a known value and every ID
 * is well formed; anything else is KMS_ERR_CORRUPT.
 *
 * Keys (built in ks.c):
 *   parties   the ID bytes (1..128)
 *   pairs     pair hash, 32 B
 *   deposits  key id, 16 B
 *   audit     time_ns u64 BE | seq u32 BE      (12 B; time_ns = time_ms*1e6)
 *   meta      the name bytes; the value is the string bytes without a NUL
 *
 * party, version 1 (55 B)
 *   0  ver u8 = 1
 *   1  kind u8          1 USER, 2 AS
 *   2  status u8        1 ACTIVE, 2 REVOKED
 *   3  gen u32
 *   7  created_ms u64
 *  15  blob[40]
 *
 * party, version 2 (107 B): version 1's fields (ver u8 = 2), then
 *  55  prev_gen u32     >= 1, < gen: the generation before the rotation
 *  59  prev_until_ms u64  accepted until then (the overlap)
 *  67  prev_blob[40]
 * Written only while a previous generation is kept; version 1 otherwise.
 *
 * pair, version 1 (57 B)
 *   0  ver u8 = 1
 *   1  k_gen u32
 *   5  uses u32
 *   9  created_ms u64
 *  17  blob[40]
 *
 * pair, version 2 (58 B): version 1's fields (ver u8 = 2), then
 *  57  revoked u8 = 1   (an operator revoked the pair; written only then)
 *
 * deposit, version 1 (133 B + the three IDs; 136..517 B)
 *   0  ver u8 = 1
 *   1  status u8        1 ACTIVE, 2 REVOKED
 *   2  k_gen u32
 *   6  retrievals u32
 *  10  created_ms u64
 *  18  expiry_ms u64
 *  26  pair_hash[32]
 *  58  ea_digest[32]
 *  90  blob[40]
 * 130  len u8 (1..128) | id_a
 *      len u8 (1..128) | id_b
 *      len u8 (1..128) | id_as
 *
 * audit, version 2 (65 B + the three IDs; 65..449 B)
 *   0  ver u8 = 2
 *   1  prev[32]         chain hash of the previous record (zeros: first)
 *  33  event u8         1..11, enum kms_audit_event
 *  34  time_ms u64
 *  42  k_gen u32
 *  46  key_id[16]       zero when not applicable
 *  62  len u8 (0..128) | actor
 *      len u8 (0..128) | id_a
 *      len u8 (0..128) | id_b
 *
 * A later layout gets a new version byte; decoders keep reading the old
 * ones. Blobs are HSM-wrapped keys: no plaintext key is ever encoded here.
 */
#include <string.h>

#include "kms_err.h"
#include "ks_priv.h"

/* Reader over a stored value: any overrun sets bad and yields zeros. */
struct rd {
	const uint8_t *p;
	size_t left;
	int bad;
};

static const uint8_t *rd_take(struct rd *r, size_t n)
{
	const uint8_t *p;

	if (r->bad || r->left < n) {
		r->bad = 1;
		return NULL;
	}
	p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

static uint8_t rd_u8(struct rd *r)
{
	const uint8_t *p = rd_take(r, 1);

	return p ? p[0] : 0;
}

static uint32_t rd_u32(struct rd *r)
{
	const uint8_t *p = rd_take(r, 4);

	return p ? get_be32(p) : 0;
}

static uint64_t rd_u64(struct rd *r)
{
	const uint8_t *p = rd_take(r, 8);

	return p ? get_be64(p) : 0;
}

static void rd_bytes(struct rd *r, void *dst, size_t n)
{
	const uint8_t *p = rd_take(r, n);

	if (p)
		memcpy(dst, p, n);
}

/* len u8 | bytes, len in [min, KMS_ID_MAX], printable. */
static void rd_id(struct rd *r, char *dst, uint8_t *dst_len, size_t min)
{
	uint8_t len = rd_u8(r);
	const uint8_t *p = rd_take(r, len);

	if (!p || !kms_ks_rec_id_ok(p, len, min)) {
		r->bad = 1;
		return;
	}
	memcpy(dst, p, len);
	*dst_len = len;
}

/* Complete only if nothing overran and nothing is left over. */
static int rd_done(const struct rd *r)
{
	return !r->bad && r->left == 0;
}

static uint8_t *wr_u32(uint8_t *w, uint32_t v)
{
	put_be32(w, v);
	return w + 4;
}

static uint8_t *wr_u64(uint8_t *w, uint64_t v)
{
	put_be64(w, v);
	return w + 8;
}

static uint8_t *wr_bytes(uint8_t *w, const void *src, size_t n)
{
	memcpy(w, src, n);
	return w + n;
}

static uint8_t *wr_id(uint8_t *w, const char *id, uint8_t len)
{
	*w++ = len;
	return wr_bytes(w, id, len);
}

int kms_ks_rec_id_ok(const uint8_t *p, size_t len, size_t min)
{
	if (len < min || len > KMS_ID_MAX)
		return 0;
	/* The wire's rule for the bytes (kms_id_valid); empty where allowed. */
	return !len ||
	       kms_id_valid(&(struct kms_id){ .p = p, .len = (uint8_t)len });
}

static int party_fields_ok(uint8_t kind, uint8_t status)
{
	return (kind == KMS_PARTY_USER || kind == KMS_PARTY_AS) &&
	       (status == KMS_PARTY_ACTIVE || status == KMS_PARTY_REVOKED);
}

static int dep_status_ok(uint8_t status)
{
	return status == KMS_DEP_ACTIVE || status == KMS_DEP_REVOKED;
}

static int aud_event_ok(uint8_t event)
{
	return event >= KMS_AUD_ENROLL && event <= KMS_AUD_KEK_ROTATE;
}

static int id_field_ok(const char *id, uint8_t len, size_t min)
{
	return kms_ks_rec_id_ok((const uint8_t *)id, len, min);
}

int kms_ks_rec_party_enc(const struct kms_party *p, uint8_t *out)
{
	uint8_t *w = out;

	if (!party_fields_ok(p->kind, p->status) ||
	    (p->prev_gen && p->prev_gen >= p->gen))
		return KMS_ERR_INVAL;
	*w++ = p->prev_gen ? KS_REC_PARTY_V2 : KS_REC_V1;
	*w++ = p->kind;
	*w++ = p->status;
	w = wr_u32(w, p->gen);
	w = wr_u64(w, p->created_ms);
	w = wr_bytes(w, p->blob, sizeof(p->blob));
	if (p->prev_gen) {
		w = wr_u32(w, p->prev_gen);
		w = wr_u64(w, p->prev_until_ms);
		w = wr_bytes(w, p->prev_blob, sizeof(p->prev_blob));
	}
	return (int)(w - out);
}

int kms_ks_rec_party_dec(const uint8_t *buf, size_t len,
			 struct kms_party *out)
{
	struct rd r = { .p = buf, .left = len };
	struct kms_party p;

	uint8_t ver;

	memset(&p, 0, sizeof(p));
	ver = rd_u8(&r);
	if (ver != KS_REC_V1 && ver != KS_REC_PARTY_V2)
		return KMS_ERR_CORRUPT;
	p.kind = rd_u8(&r);
	p.status = rd_u8(&r);
	p.gen = rd_u32(&r);
	p.created_ms = rd_u64(&r);
	rd_bytes(&r, p.blob, sizeof(p.blob));
	if (ver == KS_REC_PARTY_V2) {
		p.prev_gen = rd_u32(&r);
		p.prev_until_ms = rd_u64(&r);
		rd_bytes(&r, p.prev_blob, sizeof(p.prev_blob));
		if (!p.prev_gen || p.prev_gen >= p.gen)
			return KMS_ERR_CORRUPT;
	}
	if (!rd_done(&r) || !party_fields_ok(p.kind, p.status))
		return KMS_ERR_CORRUPT;
	*out = p;
	return KMS_OK;
}

int kms_ks_rec_pair_enc(const struct kms_pair *p, uint8_t *out)
{
	uint8_t *w = out;

	*w++ = p->revoked ? KS_REC_PAIR_V2 : KS_REC_V1;
	w = wr_u32(w, p->k_gen);
	w = wr_u32(w, p->uses);
	w = wr_u64(w, p->created_ms);
	w = wr_bytes(w, p->blob, sizeof(p->blob));
	if (p->revoked)
		*w++ = 1;
	return (int)(w - out);
}

int kms_ks_rec_pair_dec(const uint8_t *buf, size_t len, struct kms_pair *out)
{
	struct rd r = { .p = buf, .left = len };
	struct kms_pair p;

	uint8_t ver;

	memset(&p, 0, sizeof(p));
	ver = rd_u8(&r);
	if (ver != KS_REC_V1 && ver != KS_REC_PAIR_V2)
		return KMS_ERR_CORRUPT;
	p.k_gen = rd_u32(&r);
	p.uses = rd_u32(&r);
	p.created_ms = rd_u64(&r);
	rd_bytes(&r, p.blob, sizeof(p.blob));
	if (ver == KS_REC_PAIR_V2 && (p.revoked = rd_u8(&r)) != 1)
		return KMS_ERR_CORRUPT;
	if (!rd_done(&r))
		return KMS_ERR_CORRUPT;
	*out = p;
	return KMS_OK;
}

int kms_ks_rec_deposit_enc(const struct kms_deposit *d, uint8_t *out)
{
	uint8_t *w = out;

	if (!dep_status_ok(d->status) ||
	    !id_field_ok(d->id_a, d->id_a_len, 1) ||
	    !id_field_ok(d->id_b, d->id_b_len, 1) ||
	    !id_field_ok(d->id_as, d->id_as_len, 1))
		return KMS_ERR_INVAL;
	*w++ = KS_REC_V1;
	*w++ = d->status;
	w = wr_u32(w, d->k_gen);
	w = wr_u32(w, d->retrievals);
	w = wr_u64(w, d->created_ms);
	w = wr_u64(w, d->expiry_ms);
	w = wr_bytes(w, d->pair_hash, sizeof(d->pair_hash));
	w = wr_bytes(w, d->ea_digest, sizeof(d->ea_digest));
	w = wr_bytes(w, d->blob, sizeof(d->blob));
	w = wr_id(w, d->id_a, d->id_a_len);
	w = wr_id(w, d->id_b, d->id_b_len);
	w = wr_id(w, d->id_as, d->id_as_len);
	return (int)(w - out);
}

int kms_ks_rec_deposit_dec(const uint8_t *buf, size_t len,
			   struct kms_deposit *out)
{
	struct rd r = { .p = buf, .left = len };
	struct kms_deposit d;

	memset(&d, 0, sizeof(d));
	if (rd_u8(&r) != KS_REC_V1)
		return KMS_ERR_CORRUPT;
	d.status = rd_u8(&r);
	d.k_gen = rd_u32(&r);
	d.retrievals = rd_u32(&r);
	d.created_ms = rd_u64(&r);
	d.expiry_ms = rd_u64(&r);
	rd_bytes(&r, d.pair_hash, sizeof(d.pair_hash));
	rd_bytes(&r, d.ea_digest, sizeof(d.ea_digest));
	rd_bytes(&r, d.blob, sizeof(d.blob));
	rd_id(&r, d.id_a, &d.id_a_len, 1);
	rd_id(&r, d.id_b, &d.id_b_len, 1);
	rd_id(&r, d.id_as, &d.id_as_len, 1);
	if (!rd_done(&r) || !dep_status_ok(d.status))
		return KMS_ERR_CORRUPT;
	*out = d;
	return KMS_OK;
}

int kms_ks_rec_audit_enc(const struct kms_audit *a,
			 const uint8_t prev[KMS_AUDIT_HASH_LEN], uint8_t *out)
{
	uint8_t *w = out;

	if (!aud_event_ok(a->event) ||
	    !id_field_ok(a->actor, a->actor_len, 0) ||
	    !id_field_ok(a->id_a, a->id_a_len, 0) ||
	    !id_field_ok(a->id_b, a->id_b_len, 0))
		return KMS_ERR_INVAL;
	*w++ = KS_REC_AUDIT_V2;
	w = wr_bytes(w, prev, KMS_AUDIT_HASH_LEN);
	*w++ = a->event;
	w = wr_u64(w, a->time_ms);
	w = wr_u32(w, a->k_gen);
	w = wr_bytes(w, a->key_id, sizeof(a->key_id));
	w = wr_id(w, a->actor, a->actor_len);
	w = wr_id(w, a->id_a, a->id_a_len);
	w = wr_id(w, a->id_b, a->id_b_len);
	return (int)(w - out);
}

int kms_ks_rec_audit_dec(const uint8_t *buf, size_t len,
			 struct kms_audit *out, uint8_t prev[KMS_AUDIT_HASH_LEN])
{
	struct rd r = { .p = buf, .left = len };
	uint8_t pv[KMS_AUDIT_HASH_LEN];
	struct kms_audit a;

	memset(&a, 0, sizeof(a));
	if (rd_u8(&r) != KS_REC_AUDIT_V2)
		return KMS_ERR_CORRUPT;
	rd_bytes(&r, pv, sizeof(pv));
	a.event = rd_u8(&r);
	a.time_ms = rd_u64(&r);
	a.k_gen = rd_u32(&r);
	rd_bytes(&r, a.key_id, sizeof(a.key_id));
	rd_id(&r, a.actor, &a.actor_len, 0);
	rd_id(&r, a.id_a, &a.id_a_len, 0);
	rd_id(&r, a.id_b, &a.id_b_len, 0);
	if (!rd_done(&r) || !aud_event_ok(a.event))
		return KMS_ERR_CORRUPT;
	*out = a;
	memcpy(prev, pv, sizeof(pv));
	return KMS_OK;
}
