// SPDX-License-Identifier: Apache-2.0
/*
 * Parser robustness and token/keybox crypto of proto/. Every hostile input is
 * copied into a heap buffer of exactly its length, so the ASan build turns
 * any read past the end into a failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kms_err.h"
#include "kms_proto.h"
#include "kms_token.h"

static const uint8_t ka[KMS_KEY_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
static const uint8_t kas[KMS_KEY_LEN] = { 0x21, 0x22, 0x23 };
static const uint8_t kb[KMS_KEY_LEN] = { 0x41, 0x42, 0x43 };
static const uint8_t kk[KMS_KEY_LEN] = { 0x61, 0x62, 0x63, 0x64 };
static const uint8_t nonce_a[KMS_NONCE_LEN] = { 0xa0, 0xa1, 0xa2 };
static const uint8_t nonce_as[KMS_NONCE_LEN] = { 0xb0, 0xb1, 0xb2 };
static const uint8_t nonce_b[KMS_NONCE_LEN] = { 0xc0, 0xc1, 0xc2 };
static const uint8_t key_id[KMS_KEY_ID_LEN] = { 0, 0, 1, 0xa1, 0xee, 0x56,
						 0x5f, 0x2c, 0, 2, 0, 1 };
#define TS 1795000000000ull
#define EXPIRY 1795604800300ull

static struct kms_id id_a, id_b, id_as;
static uint8_t tok_a[KMS_TOKEN_MAX], tok_as[KMS_TOKEN_MAX], tok_b[KMS_TOKEN_MAX];
static size_t tok_a_len, tok_as_len, tok_b_len;
static uint8_t dep[KMS_DGRAM_MAX], ret[KMS_DGRAM_MAX];
static size_t dep_len, ret_len;

static int setup(void **state)
{
	int n;

	(void)state;
	if (kms_id_from_str("sip:alice@example.org", &id_a) ||
	    kms_id_from_str("sip:bob@example.org", &id_b) ||
	    kms_id_from_str("mailbox.example.org", &id_as))
		return -1;
	n = kms_token_seal(KMS_ROLE_A, &id_a, 1, ka, TS, nonce_a, &id_a, &id_b,
			   tok_a, sizeof(tok_a));
	if (n < 0)
		return -1;
	tok_a_len = (size_t)n;
	n = kms_token_seal(KMS_ROLE_AS, &id_as, 1, kas, TS, nonce_as, &id_a,
			   &id_b, tok_as, sizeof(tok_as));
	if (n < 0)
		return -1;
	tok_as_len = (size_t)n;
	n = kms_token_seal(KMS_ROLE_B, &id_b, 1, kb, TS, nonce_b, &id_a, &id_b,
			   tok_b, sizeof(tok_b));
	if (n < 0)
		return -1;
	tok_b_len = (size_t)n;
	n = kms_deposit_req_encode(7, &id_a, &id_b, &id_as, tok_a, tok_a_len,
				   tok_as, tok_as_len, dep, sizeof(dep));
	if (n < 0)
		return -1;
	dep_len = (size_t)n;
	n = kms_retrieve_req_encode(8, &id_a, &id_b, key_id, tok_a, tok_a_len,
				    tok_b, tok_b_len, ret, sizeof(ret));
	if (n < 0)
		return -1;
	ret_len = (size_t)n;
	return 0;
}

/* ---- helpers ---- */

/* Parse a copy of @p buf held in a heap block of exactly @p len bytes. */
static int req_parse_exact(const uint8_t *buf, size_t len, struct kms_req *r,
			   uint16_t *st)
{
	uint8_t *copy = malloc(len ? len : 1);
	int rc;

	assert_non_null(copy);
	memcpy(copy, buf, len);
	rc = kms_req_parse(copy, len, r, st);
	free(copy);
	return rc;
}

static int resp_parse_exact(const uint8_t *buf, size_t len, struct kms_resp *r)
{
	uint8_t *copy = malloc(len ? len : 1);
	int rc;

	assert_non_null(copy);
	memcpy(copy, buf, len);
	rc = kms_resp_parse(copy, len, r);
	free(copy);
	return rc;
}

/* Expect refusal with wire status @p want (KMS_ST_OK: silent drop). An
 * answered refusal hands back the header (for the txid); a drop writes
 * nothing. */
static void expect_refused(const uint8_t *buf, size_t len, uint16_t want)
{
	struct kms_req r, sentinel;
	uint16_t st = 0xffff;

	memset(&r, 0xee, sizeof(r));
	memset(&sentinel, 0xee, sizeof(sentinel));
	assert_int_equal(req_parse_exact(buf, len, &r, &st), KMS_ERR_MALFORMED);
	assert_int_equal(st, want);
	if (want == KMS_ST_OK) {
		assert_memory_equal(&r, &sentinel, sizeof(r));
	} else {
		assert_int_equal(r.hdr.txid, (uint32_t)buf[4] << 24 |
				 (uint32_t)buf[5] << 16 |
				 (uint32_t)buf[6] << 8 | buf[7]);
		assert_int_equal(r.hdr.version, buf[2]);
		assert_int_equal(r.hdr.type, buf[3]);
	}
}

static void set_body_len(uint8_t *buf, size_t len)
{
	buf[8] = (uint8_t)((len - KMS_HDR_LEN) >> 8);
	buf[9] = (uint8_t)(len - KMS_HDR_LEN);
}

/* Assemble a request from raw parts, with no validation at all. */
static size_t raw_req(uint8_t *out, uint8_t type, const uint8_t *ida,
		      size_t la, const uint8_t *idb, size_t lb,
		      const uint8_t *mid, size_t lmid, int mid_is_id,
		      const uint8_t *t1, size_t l1, const uint8_t *t2,
		      size_t l2)
{
	uint8_t *p = out + KMS_HDR_LEN;

	out[0] = 'K';
	out[1] = 'M';
	out[2] = 1;
	out[3] = type;
	memset(out + 4, 0x5a, 4);
	out[10] = out[11] = 0;
	*p++ = (uint8_t)la;
	memcpy(p, ida, la);
	p += la;
	*p++ = (uint8_t)lb;
	memcpy(p, idb, lb);
	p += lb;
	if (mid_is_id)
		*p++ = (uint8_t)lmid;
	memcpy(p, mid, lmid);
	p += lmid;
	memcpy(p, t1, l1);
	p += l1;
	memcpy(p, t2, l2);
	p += l2;
	set_body_len(out, (size_t)(p - out));
	return (size_t)(p - out);
}

static size_t raw_dep(uint8_t *out, const uint8_t *ida, size_t la)
{
	return raw_req(out, KMS_T_DEPOSIT_REQ, ida, la, id_b.p, id_b.len,
		       id_as.p, id_as.len, 1, tok_a, tok_a_len, tok_as,
		       tok_as_len);
}

/* Offsets inside the valid requests. */
static size_t dep_tok_a_off(void)
{
	return KMS_HDR_LEN + 3 + id_a.len + id_b.len + id_as.len;
}

static size_t ret_tok_a_off(void)
{
	return KMS_HDR_LEN + 2 + id_a.len + id_b.len + KMS_KEY_ID_LEN;
}

#define TOK_CTLEN_OFF (1 + 4 + 8 + KMS_NONCE_LEN)

/* ---- requests: the valid ones ---- */

static void test_valid(void **state)
{
	struct kms_req r;
	uint16_t st = 0xffff;

	(void)state;
	assert_int_equal(req_parse_exact(dep, dep_len, &r, &st), KMS_OK);
	assert_int_equal(st, KMS_ST_OK);
	assert_int_equal(kms_req_parse(dep, dep_len, &r, &st), KMS_OK);
	assert_ptr_equal(r.tok_a.raw, dep + dep_tok_a_off());
	assert_int_equal(r.tok_a.raw_len, tok_a_len);
	assert_ptr_equal(r.tok_x.raw, dep + dep_tok_a_off() + tok_a_len);
	assert_int_equal(r.tok_x.raw_len, tok_as_len);
	assert_int_equal(r.hdr.txid, 7);

	assert_int_equal(kms_req_parse(ret, ret_len, &r, &st), KMS_OK);
	assert_ptr_equal(r.key_id, ret + KMS_HDR_LEN + 2 + id_a.len + id_b.len);
	assert_ptr_equal(r.tok_a.raw, ret + ret_tok_a_off());
	assert_int_equal(r.tok_x.raw_len, tok_b_len);
	assert_int_equal(r.hdr.txid, 8);
}

/* Cut at every offset: with the header's body_len left as is (drop) and
 * with it patched to fit (the body parser must find the truncation). */
static void truncate_all(const uint8_t *msg, size_t len)
{
	uint8_t buf[KMS_DGRAM_MAX];
	size_t cut;

	for (cut = 0; cut < len; cut++) {
		expect_refused(msg, cut, KMS_ST_OK);
		if (cut < KMS_HDR_LEN)
			continue;
		memcpy(buf, msg, cut);
		set_body_len(buf, cut);
		expect_refused(buf, cut, KMS_ST_MALFORMED);
	}
}

static void test_truncated(void **state)
{
	(void)state;
	truncate_all(dep, dep_len);
	truncate_all(ret, ret_len);
}

static void flip_header(const uint8_t *msg, size_t len)
{
	static const uint8_t masks[] = { 0x01, 0x02, 0x04, 0x10, 0x80, 0xff };
	uint8_t buf[KMS_DGRAM_MAX];
	struct kms_req r;
	uint16_t st;
	size_t off, m;
	int rc;

	for (off = 0; off < KMS_HDR_LEN; off++) {
		for (m = 0; m < sizeof(masks); m++) {
			memcpy(buf, msg, len);
			buf[off] ^= masks[m];
			st = 0xffff;
			rc = req_parse_exact(buf, len, &r, &st);
			if (off == 2) {                 /* version */
				assert_int_equal(rc, KMS_ERR_MALFORMED);
				assert_int_equal(st, KMS_ST_BAD_VERSION);
			} else if (off == 3) {          /* type */
				assert_int_equal(rc, KMS_ERR_MALFORMED);
				if (buf[3] == KMS_T_DEPOSIT_RESP ||
				    buf[3] == KMS_T_RETRIEVE_RESP ||
				    buf[3] == KMS_T_IBE_KEY_RESP ||
				    buf[3] == KMS_T_ERROR)
					assert_int_equal(st, KMS_ST_OK);
				else if (buf[3] == KMS_T_DEPOSIT_REQ ||
				    buf[3] == KMS_T_RETRIEVE_REQ ||
				    buf[3] == KMS_T_IBE_KEY_REQ)
					/* the other request's layout */
					assert_true(st == KMS_ST_MALFORMED ||
						    st == KMS_ST_WRONG_ROLE);
				else
					assert_int_equal(st, KMS_ST_BAD_TYPE);
			} else if (off >= 4 && off < 8) { /* txid: any value */
				assert_int_equal(rc, KMS_OK);
				assert_int_equal(st, KMS_ST_OK);
			} else {        /* magic, body_len, reserved: drop */
				assert_int_equal(rc, KMS_ERR_MALFORMED);
				assert_int_equal(st, KMS_ST_OK);
			}
		}
	}
}

static void test_header_flips(void **state)
{
	(void)state;
	flip_header(dep, dep_len);
	flip_header(ret, ret_len);
}

static void test_version_type(void **state)
{
	static const uint8_t versions[] = { 0, 2, 0x7f, 0xff };
	static const uint8_t types[] = { 0, 7, 0x7e, 0x80, 0xff };
	static const uint8_t replies[] = { KMS_T_DEPOSIT_RESP,
					   KMS_T_RETRIEVE_RESP,
					   KMS_T_IBE_KEY_RESP, KMS_T_ERROR };
	uint8_t buf[KMS_DGRAM_MAX];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(versions); i++) {
		memcpy(buf, dep, dep_len);
		buf[2] = versions[i];
		expect_refused(buf, dep_len, KMS_ST_BAD_VERSION);
		/* the version is judged before the body */
		memcpy(buf, ret, KMS_HDR_LEN);
		buf[2] = versions[i];
		set_body_len(buf, KMS_HDR_LEN);
		expect_refused(buf, KMS_HDR_LEN, KMS_ST_BAD_VERSION);
	}
	for (i = 0; i < sizeof(types); i++) {
		memcpy(buf, ret, ret_len);
		buf[3] = types[i];
		expect_refused(buf, ret_len, KMS_ST_BAD_TYPE);
	}
	/* a reply is never answered, whatever its version or body */
	for (i = 0; i < sizeof(replies); i++) {
		memcpy(buf, ret, ret_len);
		buf[3] = replies[i];
		expect_refused(buf, ret_len, KMS_ST_OK);
		buf[2] = 2;
		expect_refused(buf, ret_len, KMS_ST_OK);
	}
	/* in particular not our own ERROR reply, nor a key reply */
	{
		uint8_t box[KMS_KEYBOX_LEN] = { 0 };
		int n = kms_error_encode(1, KMS_ST_BAD_TYPE, buf, sizeof(buf));

		expect_refused(buf, (size_t)n, KMS_ST_OK);
		n = kms_key_resp_encode(KMS_T_RETRIEVE_RESP, 1, key_id, 1, 1,
					box, buf, sizeof(buf));
		expect_refused(buf, (size_t)n, KMS_ST_OK);
	}
}

static void test_header_fields(void **state)
{
	uint8_t buf[KMS_DGRAM_MAX];

	(void)state;
	/* reserved non-zero */
	memcpy(buf, dep, dep_len);
	buf[10] = 0x01;
	expect_refused(buf, dep_len, KMS_ST_OK);
	memcpy(buf, dep, dep_len);
	buf[11] = 0x80;
	expect_refused(buf, dep_len, KMS_ST_OK);
	/* body_len mismatch both ways */
	memcpy(buf, dep, dep_len);
	set_body_len(buf, dep_len + 1);
	expect_refused(buf, dep_len, KMS_ST_OK);
	set_body_len(buf, dep_len - 1);
	expect_refused(buf, dep_len, KMS_ST_OK);
	set_body_len(buf, KMS_HDR_LEN);
	expect_refused(buf, dep_len, KMS_ST_OK);
	/* bad magic */
	memcpy(buf, dep, dep_len);
	buf[0] = 'k';
	expect_refused(buf, dep_len, KMS_ST_OK);
}

static void test_trailing(void **state)
{
	uint8_t buf[KMS_DGRAM_MAX];

	(void)state;
	memcpy(buf, dep, dep_len);
	buf[dep_len] = 0;
	expect_refused(buf, dep_len + 1, KMS_ST_OK);     /* body_len says less */
	set_body_len(buf, dep_len + 1);
	expect_refused(buf, dep_len + 1, KMS_ST_MALFORMED);

	memcpy(buf, ret, ret_len);
	memcpy(buf + ret_len, "xyz", 3);
	set_body_len(buf, ret_len + 3);
	expect_refused(buf, ret_len + 3, KMS_ST_MALFORMED);
}

static void test_oversize(void **state)
{
	size_t big = 70000;
	uint8_t *buf = calloc(1, big);

	(void)state;
	assert_non_null(buf);
	memcpy(buf, dep, dep_len);
	/* one byte over the limit, body_len consistent: answered MALFORMED */
	set_body_len(buf, KMS_DGRAM_MAX + 1);
	expect_refused(buf, KMS_DGRAM_MAX + 1, KMS_ST_MALFORMED);
	/* the largest u16 body_len, still consistent */
	set_body_len(buf, KMS_HDR_LEN + 0xffff);
	expect_refused(buf, KMS_HDR_LEN + 0xffff, KMS_ST_MALFORMED);
	/* more than body_len can describe: drop */
	expect_refused(buf, big, KMS_ST_OK);
	free(buf);
}

static void test_id_rules(void **state)
{
	uint8_t buf[KMS_DGRAM_MAX], id[KMS_ID_MAX + 1];
	struct kms_req r;
	uint16_t st;
	size_t n;

	(void)state;
	memset(id, 'x', sizeof(id));
	/* 128 bytes is fine, 129 is not */
	n = raw_dep(buf, id, KMS_ID_MAX);
	assert_int_equal(req_parse_exact(buf, n, &r, &st), KMS_OK);
	assert_int_equal(r.id_a.len, KMS_ID_MAX);
	n = raw_dep(buf, id, KMS_ID_MAX + 1);
	expect_refused(buf, n, KMS_ST_MALFORMED);
	/* empty */
	n = raw_dep(buf, id, 0);
	expect_refused(buf, n, KMS_ST_MALFORMED);
	/* the printable range ends are allowed */
	id[0] = 0x21;
	id[1] = 0x7e;
	n = raw_dep(buf, id, 2);
	assert_int_equal(req_parse_exact(buf, n, &r, &st), KMS_OK);
	/* one byte outside it is not, wherever it is */
	{
		static const uint8_t bad[] = { 0x00, 0x09, 0x20, 0x7f, 0x80,
					       0xff };
		size_t i;

		for (i = 0; i < sizeof(bad); i++) {
			id[5] = bad[i];
			n = raw_dep(buf, id, 10);
			expect_refused(buf, n, KMS_ST_MALFORMED);
		}
		id[5] = 'x';
	}
	/* bad ID-B and bad ID-AS */
	n = raw_req(buf, KMS_T_DEPOSIT_REQ, id_a.p, id_a.len,
		    (const uint8_t *)"bob bob", 7, id_as.p, id_as.len, 1,
		    tok_a, tok_a_len, tok_as, tok_as_len);
	expect_refused(buf, n, KMS_ST_MALFORMED);
	n = raw_req(buf, KMS_T_DEPOSIT_REQ, id_a.p, id_a.len, id_b.p,
		    id_b.len, id, 0, 1, tok_a, tok_a_len, tok_as, tok_as_len);
	expect_refused(buf, n, KMS_ST_MALFORMED);
}

static void test_len_past_end(void **state)
{
	uint8_t buf[KMS_DGRAM_MAX];
	size_t off;

	(void)state;
	/* ID-A length byte pointing past the end of the datagram */
	memcpy(buf, dep, KMS_HDR_LEN);
	buf[KMS_HDR_LEN] = 100;
	memset(buf + KMS_HDR_LEN + 1, 'a', 20);
	set_body_len(buf, KMS_HDR_LEN + 21);
	expect_refused(buf, KMS_HDR_LEN + 21, KMS_ST_MALFORMED);
	memcpy(buf, dep, dep_len);
	buf[KMS_HDR_LEN] = 0xff;
	expect_refused(buf, dep_len, KMS_ST_MALFORMED);

	/* the last token's ct_len one too large / far too large */
	off = dep_tok_a_off() + tok_a_len + TOK_CTLEN_OFF;
	memcpy(buf, dep, dep_len);
	buf[off + 1]++;
	expect_refused(buf, dep_len, KMS_ST_MALFORMED);
	buf[off] = 0xff;
	buf[off + 1] = 0xff;
	expect_refused(buf, dep_len, KMS_ST_MALFORMED);
	/* ct_len 0, 1 and KMS_TOKEN_PT_MAX + 1 are out of range */
	buf[off] = 0;
	buf[off + 1] = 0;
	expect_refused(buf, dep_len, KMS_ST_MALFORMED);
	buf[off + 1] = 1;
	expect_refused(buf, dep_len, KMS_ST_MALFORMED);
	buf[off] = (KMS_TOKEN_PT_MAX + 1) >> 8;
	buf[off + 1] = (KMS_TOKEN_PT_MAX + 1) & 0xff;
	expect_refused(buf, dep_len, KMS_ST_MALFORMED);

	/* first token's ct_len off by one either way */
	off = ret_tok_a_off() + TOK_CTLEN_OFF;
	memcpy(buf, ret, ret_len);
	buf[off + 1]++;
	expect_refused(buf, ret_len, KMS_ST_MALFORMED);
	buf[off + 1] -= 2;
	expect_refused(buf, ret_len, KMS_ST_MALFORMED);
}

/* A token with an arbitrary ct_len whose bytes are all present, so only the
 * ct_len range check can refuse it. */
static size_t raw_token(uint8_t *out, uint8_t role, size_t ct_len)
{
	memcpy(out, tok_a, TOK_CTLEN_OFF);
	out[0] = role;
	out[TOK_CTLEN_OFF] = (uint8_t)(ct_len >> 8);
	out[TOK_CTLEN_OFF + 1] = (uint8_t)ct_len;
	memset(out + TOK_CTLEN_OFF + 2, 0x55, ct_len + KMS_TAG_LEN);
	return TOK_CTLEN_OFF + 2 + ct_len + KMS_TAG_LEN;
}

static void test_ct_len_range(void **state)
{
	static const size_t lens[] = { 0, 1, 2, KMS_TOKEN_PT_MAX,
				       KMS_TOKEN_PT_MAX + 1, 600 };
	uint8_t buf[KMS_DGRAM_MAX], t[1024];
	struct kms_req r;
	uint16_t st;
	size_t i, n, tl;

	(void)state;
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		int ok = lens[i] >= 2 && lens[i] <= KMS_TOKEN_PT_MAX;

		/* in the last token */
		tl = raw_token(t, KMS_ROLE_B, lens[i]);
		n = raw_req(buf, KMS_T_RETRIEVE_REQ, id_a.p, id_a.len, id_b.p,
			    id_b.len, key_id, sizeof(key_id), 0, tok_a,
			    tok_a_len, t, tl);
		if (ok) {
			assert_int_equal(req_parse_exact(buf, n, &r, &st),
					 KMS_OK);
			assert_int_equal(r.tok_x.ct_len, lens[i]);
			assert_int_equal(r.tok_x.raw_len, tl);
		} else {
			expect_refused(buf, n, KMS_ST_MALFORMED);
		}
		/* in the first token */
		tl = raw_token(t, KMS_ROLE_A, lens[i]);
		n = raw_req(buf, KMS_T_DEPOSIT_REQ, id_a.p, id_a.len, id_b.p,
			    id_b.len, id_as.p, id_as.len, 1, t, tl, tok_as,
			    tok_as_len);
		if (ok)
			assert_int_equal(req_parse_exact(buf, n, &r, &st),
					 KMS_OK);
		else
			expect_refused(buf, n, KMS_ST_MALFORMED);
	}
}

static void test_roles(void **state)
{
	static const uint8_t bad_roles[] = { 0, 4, 0xff };
	uint8_t buf[KMS_DGRAM_MAX];
	size_t n, i, off;

	(void)state;
	/* Eas in Ea's place and Ea in the second place */
	n = raw_req(buf, KMS_T_DEPOSIT_REQ, id_a.p, id_a.len, id_b.p, id_b.len,
		    id_as.p, id_as.len, 1, tok_as, tok_as_len, tok_a,
		    tok_a_len);
	expect_refused(buf, n, KMS_ST_WRONG_ROLE);
	/* Eb in a DEPOSIT */
	n = raw_req(buf, KMS_T_DEPOSIT_REQ, id_a.p, id_a.len, id_b.p, id_b.len,
		    id_as.p, id_as.len, 1, tok_a, tok_a_len, tok_b, tok_b_len);
	expect_refused(buf, n, KMS_ST_WRONG_ROLE);
	/* Eas in a RETRIEVE */
	n = raw_req(buf, KMS_T_RETRIEVE_REQ, id_a.p, id_a.len, id_b.p,
		    id_b.len, key_id, sizeof(key_id), 0, tok_a, tok_a_len,
		    tok_as, tok_as_len);
	expect_refused(buf, n, KMS_ST_WRONG_ROLE);
	/* Eb as both tokens of a RETRIEVE */
	n = raw_req(buf, KMS_T_RETRIEVE_REQ, id_a.p, id_a.len, id_b.p,
		    id_b.len, key_id, sizeof(key_id), 0, tok_b, tok_b_len,
		    tok_b, tok_b_len);
	expect_refused(buf, n, KMS_ST_WRONG_ROLE);
	/* undefined role values, in either position */
	for (i = 0; i < sizeof(bad_roles); i++) {
		off = ret_tok_a_off();
		memcpy(buf, ret, ret_len);
		buf[off] = bad_roles[i];
		expect_refused(buf, ret_len, KMS_ST_WRONG_ROLE);
		memcpy(buf, ret, ret_len);
		buf[off + tok_a_len] = bad_roles[i];
		expect_refused(buf, ret_len, KMS_ST_WRONG_ROLE);
	}
	/* a truncated body with a wrong role is MALFORMED, not WRONG_ROLE */
	memcpy(buf, dep, dep_len);
	buf[dep_tok_a_off()] = KMS_ROLE_B;
	set_body_len(buf, dep_len - 1);
	expect_refused(buf, dep_len - 1, KMS_ST_MALFORMED);
}

/* Random single and multi-byte mutations: never crash, never accept a
 * datagram whose structure the mutation broke without noticing. */
static void test_mutations(void **state)
{
	uint8_t buf[KMS_DGRAM_MAX];
	struct kms_req r;
	uint32_t x = 0x12345678;
	unsigned i, j, k;
	uint16_t st;

	(void)state;
	for (i = 0; i < 20000; i++) {
		const uint8_t *src = (i & 1) ? ret : dep;
		size_t len = (i & 1) ? ret_len : dep_len;

		memcpy(buf, src, len);
		k = 1 + i % 4;
		for (j = 0; j < k; j++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			buf[KMS_HDR_LEN + x % (len - KMS_HDR_LEN)] = (uint8_t)(x >> 8);
		}
		if (kms_req_parse(buf, len, &r, &st) == KMS_OK) {
			size_t mid = (i & 1) ? KMS_KEY_ID_LEN : 1u + r.id_as.len;

			assert_true(kms_id_valid(&r.id_a));
			assert_true(kms_id_valid(&r.id_b));
			assert_true(KMS_HDR_LEN + 2u + r.id_a.len + r.id_b.len +
				    mid + r.tok_a.raw_len + r.tok_x.raw_len ==
				    len);
			assert_ptr_equal(r.tok_x.raw + r.tok_x.raw_len,
					 buf + len);
		} else {
			/* exact-size heap copy for ASan */
			req_parse_exact(buf, len, &r, &st);
		}
	}
}

static void test_peek_pair(void **state)
{
	struct kms_id a, b;
	size_t cut;

	(void)state;
	assert_int_equal(kms_req_peek_pair(dep, dep_len, &a, &b), KMS_OK);
	assert_int_equal(a.len, id_a.len);
	assert_memory_equal(a.p, id_a.p, a.len);
	assert_int_equal(b.len, id_b.len);
	assert_memory_equal(b.p, id_b.p, b.len);
	assert_int_equal(kms_req_peek_pair(ret, ret_len, &a, &b), KMS_OK);
	{
		uint8_t buf[KMS_DGRAM_MAX];
		size_t off_lb = KMS_HDR_LEN + 1 + id_a.len;

		memcpy(buf, dep, dep_len);
		buf[off_lb] = 0;
		assert_int_equal(kms_req_peek_pair(buf, dep_len, &a, &b),
				 KMS_ERR_MALFORMED);
		buf[off_lb] = KMS_ID_MAX + 1;
		assert_int_equal(kms_req_peek_pair(buf, dep_len, &a, &b),
				 KMS_ERR_MALFORMED);
		buf[off_lb] = KMS_ID_MAX;
		assert_int_equal(kms_req_peek_pair(buf, dep_len, &a, &b),
				 KMS_OK);
		buf[KMS_HDR_LEN] = 0;
		assert_int_equal(kms_req_peek_pair(buf, dep_len, &a, &b),
				 KMS_ERR_MALFORMED);
		buf[KMS_HDR_LEN] = id_a.len;
		buf[0] = 'X';
		assert_int_equal(kms_req_peek_pair(buf, dep_len, &a, &b),
				 KMS_ERR_MALFORMED);
	}
	for (cut = 0; cut < KMS_HDR_LEN + 2u + id_a.len + id_b.len; cut++) {
		uint8_t *copy = malloc(cut ? cut : 1);

		memcpy(copy, dep, cut);
		assert_int_equal(kms_req_peek_pair(copy, cut, &a, &b),
				 KMS_ERR_MALFORMED);
		free(copy);
	}
}

/* ---- replies ---- */

static size_t make_resp(uint8_t *buf, uint8_t type)
{
	uint8_t box[KMS_KEYBOX_LEN];
	int n;

	memset(box, 0x3c, sizeof(box));
	n = kms_key_resp_encode(type, 9, key_id, 3, EXPIRY, box, buf, 128);
	assert_int_equal(n, KMS_HDR_LEN + KMS_RESP_BODY_LEN);
	return (size_t)n;
}

static void test_resp_parse(void **state)
{
	uint8_t buf[256];
	struct kms_resp r;
	size_t len, cut;

	(void)state;
	len = make_resp(buf, KMS_T_DEPOSIT_RESP);
	assert_int_equal(resp_parse_exact(buf, len, &r), KMS_OK);
	assert_int_equal(r.k_gen, 3);
	assert_true(r.expiry_ms == EXPIRY);
	assert_non_null(r.keybox);
	for (cut = 0; cut < len; cut++) {
		assert_int_equal(resp_parse_exact(buf, cut, &r),
				 KMS_ERR_MALFORMED);
		if (cut >= KMS_HDR_LEN) {
			uint8_t tmp[256];

			memcpy(tmp, buf, cut);
			set_body_len(tmp, cut);
			assert_int_equal(resp_parse_exact(tmp, cut, &r),
					 KMS_ERR_MALFORMED);
		}
	}
	/* trailing byte */
	buf[len] = 0;
	set_body_len(buf, len + 1);
	assert_int_equal(resp_parse_exact(buf, len + 1, &r), KMS_ERR_MALFORMED);
	set_body_len(buf, len);
	/* version, type */
	buf[2] = 2;
	assert_int_equal(resp_parse_exact(buf, len, &r), KMS_ERR_MALFORMED);
	buf[2] = 1;
	buf[3] = KMS_T_DEPOSIT_REQ;
	assert_int_equal(resp_parse_exact(buf, len, &r), KMS_ERR_MALFORMED);
	buf[3] = KMS_T_RETRIEVE_RESP;
	assert_int_equal(resp_parse_exact(buf, len, &r), KMS_OK);

	/* ERROR: truncations, status 0, long body */
	len = (size_t)kms_error_encode(5, KMS_ST_STALE, buf, sizeof(buf));
	assert_int_equal(len, 14);
	assert_int_equal(resp_parse_exact(buf, len, &r), KMS_OK);
	assert_int_equal(r.status, KMS_ST_STALE);
	for (cut = 0; cut < len; cut++)
		assert_int_equal(resp_parse_exact(buf, cut, &r),
				 KMS_ERR_MALFORMED);
	buf[13] = 0;
	assert_int_equal(resp_parse_exact(buf, len, &r), KMS_ERR_MALFORMED);
	buf[13] = 1;
	buf[14] = 0;
	set_body_len(buf, 15);
	assert_int_equal(resp_parse_exact(buf, 15, &r), KMS_ERR_MALFORMED);
	/* a request is not a reply */
	assert_int_equal(resp_parse_exact(dep, dep_len, &r), KMS_ERR_MALFORMED);
}

/* ---- encoders ---- */

static void test_encoders(void **state)
{
	uint8_t buf[KMS_DGRAM_MAX], box[KMS_KEYBOX_LEN] = { 0 };
	struct kms_id bad = { (const uint8_t *)"a b", 3 };
	struct kms_id empty = { (const uint8_t *)"", 0 };

	(void)state;
	assert_int_equal(kms_deposit_req_encode(1, &id_a, &id_b, &id_as, tok_a,
						tok_a_len, tok_as, tok_as_len,
						buf, dep_len - 1),
			 KMS_ERR_SPACE);
	assert_int_equal(kms_deposit_req_encode(1, &id_a, &id_b, &id_as, tok_a,
						tok_a_len, tok_as, tok_as_len,
						buf, dep_len),
			 (int)dep_len);
	assert_int_equal(kms_deposit_req_encode(1, &bad, &id_b, &id_as, tok_a,
						tok_a_len, tok_as, tok_as_len,
						buf, sizeof(buf)),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_deposit_req_encode(1, &id_a, &id_b, &empty, tok_a,
						tok_a_len, tok_as, tok_as_len,
						buf, sizeof(buf)),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_deposit_req_encode(1, &id_a, &id_b, &id_as, tok_a,
						KMS_TOKEN_MAX + 1, tok_as,
						tok_as_len, buf, sizeof(buf)),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_retrieve_req_encode(1, &id_a, &id_b, key_id, tok_a,
						 tok_a_len, tok_b, tok_b_len,
						 buf, ret_len - 1),
			 KMS_ERR_SPACE);
	assert_int_equal(kms_retrieve_req_encode(1, &id_a, &bad, key_id, tok_a,
						 tok_a_len, tok_b, tok_b_len,
						 buf, sizeof(buf)),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_key_resp_encode(KMS_T_DEPOSIT_RESP, 1, key_id, 1,
					     1, box, buf,
					     KMS_HDR_LEN + KMS_RESP_BODY_LEN - 1),
			 KMS_ERR_SPACE);
	assert_int_equal(kms_key_resp_encode(KMS_T_ERROR, 1, key_id, 1, 1, box,
					     buf, sizeof(buf)),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_error_encode(1, KMS_ST_REPLAY, buf, 13),
			 KMS_ERR_SPACE);
	assert_int_equal(kms_error_encode(1, KMS_ST_OK, buf, sizeof(buf)),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_token_seal(KMS_ROLE_A, &id_a, 1, ka, TS, nonce_a,
					&id_a, &id_b, buf, tok_a_len - 1),
			 KMS_ERR_SPACE);
	assert_int_equal(kms_token_seal(KMS_ROLE_A, &bad, 1, ka, TS, nonce_a,
					&id_a, &id_b, buf, sizeof(buf)),
			 KMS_ERR_INVAL);
}

static void test_id_from_str(void **state)
{
	char s[KMS_ID_MAX + 2];
	struct kms_id id = { NULL, 0 };

	(void)state;
	assert_int_equal(kms_id_from_str("", &id), KMS_ERR_INVAL);
	assert_int_equal(kms_id_from_str("a b", &id), KMS_ERR_INVAL);
	assert_int_equal(kms_id_from_str("tab\t", &id), KMS_ERR_INVAL);
	assert_int_equal(kms_id_from_str(NULL, &id), KMS_ERR_INVAL);
	assert_null(id.p);
	memset(s, 'q', sizeof(s));
	s[KMS_ID_MAX + 1] = 0;
	assert_int_equal(kms_id_from_str(s, &id), KMS_ERR_INVAL);
	s[KMS_ID_MAX] = 0;
	assert_int_equal(kms_id_from_str(s, &id), KMS_OK);
	assert_int_equal(id.len, KMS_ID_MAX);
	assert_true(kms_id_valid(&id));
}

/* ---- pair hash ---- */

static void test_pair_hash(void **state)
{
	uint8_t h1[KMS_PAIR_HASH_LEN], h2[KMS_PAIR_HASH_LEN];
	struct kms_id x, y;

	(void)state;
	kms_pair_hash(&id_a, &id_b, h1);
	kms_pair_hash(&id_b, &id_a, h2);
	assert_memory_not_equal(h1, h2, sizeof(h1));
	kms_pair_hash(&id_a, &id_b, h2);
	assert_memory_equal(h1, h2, sizeof(h1));
	/* the length prefixes keep "ab"|"c" apart from "a"|"bc" */
	x.p = (const uint8_t *)"ab";
	x.len = 2;
	y.p = (const uint8_t *)"c";
	y.len = 1;
	kms_pair_hash(&x, &y, h1);
	x.len = 1;
	y.p = (const uint8_t *)"bc";
	y.len = 2;
	kms_pair_hash(&x, &y, h2);
	assert_memory_not_equal(h1, h2, sizeof(h1));
}

static void test_pair_worker(void **state)
{
	enum { PAIRS = 8000 };
	unsigned count[8], n, i, w;
	uint8_t h[KMS_PAIR_HASH_LEN];
	char name[64];
	struct kms_id a;

	(void)state;
	memset(h, 0, sizeof(h));
	assert_int_equal(kms_pair_worker(h, 0), 0);
	h[7] = 13;
	assert_int_equal(kms_pair_worker(h, 5), 3);
	h[0] = 0x80;    /* uses all 8 bytes, big-endian */
	assert_int_equal(kms_pair_worker(h, 3),
			 (unsigned)((0x8000000000000000ull + 13) % 3));

	for (n = 1; n <= 8; n++) {
		memset(count, 0, sizeof(count));
		for (i = 0; i < PAIRS; i++) {
			snprintf(name, sizeof(name), "sip:user%u@example.org", i);
			assert_int_equal(kms_id_from_str(name, &a), KMS_OK);
			kms_pair_hash(&a, &id_b, h);
			w = kms_pair_worker(h, n);
			assert_true(w < n);
			count[w]++;
		}
		/* expected PAIRS/n each; allow +-20% (> 8 sigma at n = 8) */
		for (w = 0; w < n; w++) {
			assert_true(count[w] * n * 10 >= PAIRS * 8u);
			assert_true(count[w] * n * 10 <= PAIRS * 12u);
		}
	}
}

/* ---- plaintext comparison ---- */

static void test_pt_matches(void **state)
{
	uint8_t pt[KMS_TOKEN_PT_MAX];
	struct kms_id x, y;
	size_t n;

	(void)state;
	n = kms_token_pt(&id_a, &id_b, pt);
	assert_int_equal(n, 2 + id_a.len + id_b.len);
	assert_true(kms_token_pt_matches(pt, n, &id_a, &id_b));
	assert_false(kms_token_pt_matches(pt, n, &id_b, &id_a));
	assert_false(kms_token_pt_matches(pt, n - 1, &id_a, &id_b));
	assert_false(kms_token_pt_matches(pt, n, &id_a, &id_as));
	pt[3] ^= 1;             /* inside ID-A */
	assert_false(kms_token_pt_matches(pt, n, &id_a, &id_b));
	pt[3] ^= 1;
	pt[n - 1] ^= 0x20;      /* last byte of ID-B */
	assert_false(kms_token_pt_matches(pt, n, &id_a, &id_b));
	pt[n - 1] ^= 0x20;
	assert_true(kms_token_pt_matches(pt, n, &id_a, &id_b));

	/* same total length, different split: "ab"|"c" vs "a"|"bc" */
	x.p = (const uint8_t *)"ab";
	x.len = 2;
	y.p = (const uint8_t *)"c";
	y.len = 1;
	n = kms_token_pt(&x, &y, pt);
	assert_true(kms_token_pt_matches(pt, n, &x, &y));
	x.len = 1;
	y.p = (const uint8_t *)"bc";
	y.len = 2;
	assert_false(kms_token_pt_matches(pt, n, &x, &y));

	/* only a length byte differs (a crafted plaintext, right size) */
	x.p = (const uint8_t *)"a";
	x.len = 1;
	y.p = (const uint8_t *)"b";
	y.len = 1;
	memcpy(pt, "\x01" "a" "\x01" "b", 4);
	assert_true(kms_token_pt_matches(pt, 4, &x, &y));
	pt[2] = 5;
	assert_false(kms_token_pt_matches(pt, 4, &x, &y));
	pt[2] = 1;
	pt[0] = 0;
	assert_false(kms_token_pt_matches(pt, 4, &x, &y));
}

/* ---- token seal / open ---- */

static uint64_t be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | *p++;
	return v;
}

/* Open an encoded token (the layout read by hand, not by the parser). */
static int open_raw_token(const uint8_t *tok, const struct kms_id *party,
			  const uint8_t *key, uint8_t *pt)
{
	uint8_t ad[256];
	size_t ad_len;
	uint16_t cl = (uint16_t)be(tok + TOK_CTLEN_OFF, 2);

	ad_len = kms_token_ad(tok[0], party, (uint32_t)be(tok + 1, 4),
			      be(tok + 5, 8), ad);
	return kms_gcm_open(key, tok + 13, ad, ad_len, tok + TOK_CTLEN_OFF + 2,
			    cl, tok + TOK_CTLEN_OFF + 2 + cl, pt);
}

static void test_seal_open(void **state)
{
	uint8_t buf[KMS_TOKEN_MAX], ad[256], pt[KMS_TOKEN_PT_MAX];
	uint8_t other_key[KMS_KEY_LEN];
	struct kms_req r;
	struct kms_token *t;
	size_t ad_len;
	uint16_t st;
	int n;

	(void)state;
	assert_int_equal(kms_req_parse(dep, dep_len, &r, &st), KMS_OK);
	t = &r.tok_a;
	ad_len = kms_token_ad(t->role, &r.id_a, t->gen, t->ts_ms, ad);
	assert_int_equal(kms_gcm_open(ka, t->nonce, ad, ad_len, t->ct,
				      t->ct_len, t->tag, pt), KMS_OK);
	assert_true(kms_token_pt_matches(pt, t->ct_len, &id_a, &id_b));

	/* wrong key */
	memcpy(other_key, ka, sizeof(other_key));
	other_key[31] ^= 1;
	assert_int_equal(kms_gcm_open(other_key, t->nonce, ad, ad_len, t->ct,
				      t->ct_len, t->tag, pt), KMS_ERR_AUTH);
	/* wrong AD: other generation, other party, other timestamp */
	ad_len = kms_token_ad(t->role, &r.id_a, t->gen + 1, t->ts_ms, ad);
	assert_int_equal(kms_gcm_open(ka, t->nonce, ad, ad_len, t->ct,
				      t->ct_len, t->tag, pt), KMS_ERR_AUTH);
	ad_len = kms_token_ad(t->role, &r.id_b, t->gen, t->ts_ms, ad);
	assert_int_equal(kms_gcm_open(ka, t->nonce, ad, ad_len, t->ct,
				      t->ct_len, t->tag, pt), KMS_ERR_AUTH);
	ad_len = kms_token_ad(t->role, &r.id_a, t->gen, t->ts_ms + 1, ad);
	assert_int_equal(kms_gcm_open(ka, t->nonce, ad, ad_len, t->ct,
				      t->ct_len, t->tag, pt), KMS_ERR_AUTH);

	/* every byte of the token is covered: flip each in turn and open it
	 * the way the server would, with the AD rebuilt from the token */
	{
		uint8_t tok[KMS_TOKEN_MAX];
		size_t i;

		for (i = 0; i < tok_a_len; i++) {
			if (i >= TOK_CTLEN_OFF && i < TOK_CTLEN_OFF + 2)
				continue;       /* ct_len: structure, not crypto */
			memcpy(tok, tok_a, tok_a_len);
			tok[i] ^= 0x01;
			assert_int_equal(open_raw_token(tok, &id_a, ka, pt),
					 KMS_ERR_AUTH);
		}
		assert_int_equal(open_raw_token(tok_a, &id_a, ka, pt), KMS_OK);
	}

	/* NULL nonce: a fresh random one each time */
	n = kms_token_seal(KMS_ROLE_A, &id_a, 1, ka, TS, NULL, &id_a, &id_b,
			   buf, sizeof(buf));
	assert_int_equal(n, (int)tok_a_len);
	assert_memory_not_equal(buf + 13, nonce_a, KMS_NONCE_LEN);
	{
		uint8_t buf2[KMS_TOKEN_MAX];

		assert_int_equal(kms_token_seal(KMS_ROLE_A, &id_a, 1, ka, TS,
						NULL, &id_a, &id_b, buf2,
						sizeof(buf2)), n);
		assert_memory_not_equal(buf + 13, buf2 + 13, KMS_NONCE_LEN);
	}
	assert_true(kms_now_ms() > 1700000000000ull);
}

/* ---- keybox ---- */

struct kb_case {
	uint8_t resp[128];
	size_t len;
};

static void make_keybox_resp(struct kb_case *c, uint8_t type, uint8_t role,
			     const uint8_t *key, const uint8_t *req_nonce)
{
	uint8_t ad[512], box[KMS_KEYBOX_LEN];
	size_t ad_len;
	int n;

	ad_len = kms_keybox_ad(type, role, 1, &id_a, &id_b, key_id, 2, EXPIRY,
			       req_nonce, ad);
	assert_int_equal(ad_len, 8 + 1 + 1 + 4 + 2 + id_a.len + id_b.len +
			 KMS_KEY_ID_LEN + 4 + 8 + KMS_NONCE_LEN);
	memset(box, 0x77, KMS_NONCE_LEN);
	assert_int_equal(kms_gcm_seal(key, box, ad, ad_len, kk, KMS_KEY_LEN,
				      box + KMS_NONCE_LEN,
				      box + KMS_NONCE_LEN + KMS_KEY_LEN),
			 KMS_OK);
	n = kms_key_resp_encode(type, 4, key_id, 2, EXPIRY, box, c->resp,
				sizeof(c->resp));
	assert_true(n > 0);
	c->len = (size_t)n;
}

static int try_open(const uint8_t *buf, size_t len, uint8_t role,
		    uint32_t gen, const uint8_t *key, const struct kms_id *a,
		    const struct kms_id *b, const uint8_t *req_nonce,
		    uint8_t *k)
{
	struct kms_resp r;

	assert_int_equal(kms_resp_parse(buf, len, &r), KMS_OK);
	return kms_keybox_open(&r, role, gen, key, a, b, req_nonce, k);
}

static void test_keybox(void **state)
{
	static const uint8_t untouched[KMS_KEY_LEN] = {
		0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
		0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
		0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
		0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
	};
	uint8_t k[KMS_KEY_LEN], buf[128];
	struct kb_case dc, rc;
	struct kms_resp r;
	size_t i;

	(void)state;
	make_keybox_resp(&dc, KMS_T_DEPOSIT_RESP, KMS_ROLE_A, ka, nonce_a);
	make_keybox_resp(&rc, KMS_T_RETRIEVE_RESP, KMS_ROLE_B, kb, nonce_b);

	assert_int_equal(try_open(dc.resp, dc.len, KMS_ROLE_A, 1, ka, &id_a,
				  &id_b, nonce_a, k), KMS_OK);
	assert_memory_equal(k, kk, KMS_KEY_LEN);
	assert_int_equal(try_open(rc.resp, rc.len, KMS_ROLE_B, 1, kb, &id_a,
				  &id_b, nonce_b, k), KMS_OK);
	assert_memory_equal(k, kk, KMS_KEY_LEN);

#define FAILS(buf_, len_, role_, gen_, key_, a_, b_, n_) do {             \
		memset(k, 0xaa, sizeof(k));                                \
		assert_int_equal(try_open(buf_, len_, role_, gen_, key_,   \
					  a_, b_, n_, k), KMS_ERR_AUTH);   \
		assert_memory_equal(k, untouched, KMS_KEY_LEN);            \
	} while (0)

	/* bound to the request: another request's nonce fails */
	FAILS(dc.resp, dc.len, KMS_ROLE_A, 1, ka, &id_a, &id_b, nonce_as);
	FAILS(rc.resp, rc.len, KMS_ROLE_B, 1, kb, &id_a, &id_b, nonce_a);
	/* other role, generation, key, pair order, pair */
	FAILS(dc.resp, dc.len, KMS_ROLE_B, 1, ka, &id_a, &id_b, nonce_a);
	FAILS(dc.resp, dc.len, KMS_ROLE_A, 2, ka, &id_a, &id_b, nonce_a);
	FAILS(dc.resp, dc.len, KMS_ROLE_A, 1, kb, &id_a, &id_b, nonce_a);
	FAILS(dc.resp, dc.len, KMS_ROLE_A, 1, ka, &id_b, &id_a, nonce_a);
	FAILS(dc.resp, dc.len, KMS_ROLE_A, 1, ka, &id_a, &id_as, nonce_a);

	/* a DEPOSIT_RESP relabelled as RETRIEVE_RESP (and back) */
	memcpy(buf, dc.resp, dc.len);
	buf[3] = KMS_T_RETRIEVE_RESP;
	FAILS(buf, dc.len, KMS_ROLE_A, 1, ka, &id_a, &id_b, nonce_a);
	memcpy(buf, rc.resp, rc.len);
	buf[3] = KMS_T_DEPOSIT_RESP;
	FAILS(buf, rc.len, KMS_ROLE_B, 1, kb, &id_a, &id_b, nonce_b);

	/* every body byte is covered: key id, k_gen, expiry, nonce, ct, tag */
	for (i = KMS_HDR_LEN; i < dc.len; i++) {
		memcpy(buf, dc.resp, dc.len);
		buf[i] ^= 0x40;
		FAILS(buf, dc.len, KMS_ROLE_A, 1, ka, &id_a, &id_b, nonce_a);
	}
	/* the txid is not: a reply is matched on txid, bound on the nonce */
	memcpy(buf, dc.resp, dc.len);
	buf[4] ^= 0xff;
	assert_int_equal(try_open(buf, dc.len, KMS_ROLE_A, 1, ka, &id_a, &id_b,
				  nonce_a, k), KMS_OK);
#undef FAILS

	/* an ERROR reply has no keybox */
	i = (size_t)kms_error_encode(1, KMS_ST_AUTH_FAILED, buf, sizeof(buf));
	assert_int_equal(kms_resp_parse(buf, i, &r), KMS_OK);
	memset(k, 0xaa, sizeof(k));
	assert_int_equal(kms_keybox_open(&r, KMS_ROLE_A, 1, ka, &id_a, &id_b,
					 nonce_a, k), KMS_ERR_INVAL);
	assert_memory_equal(k, untouched, KMS_KEY_LEN);
}

/* IBE_KEY_REQ (section 17): round trip, then every truncation, a wrong
 * token role, trailing bytes; IBE_KEY_RESP parses and is never answered. */
static void test_ibe_req(void **state)
{
	static const char period_s[] = "2026-12";
	struct kms_id per = { (const uint8_t *)period_s, 7 };
	uint8_t tok[KMS_TOKEN_MAX], req[KMS_DGRAM_MAX], rep[KMS_REPLY_MAX];
	uint8_t box[KMS_IBE_RESP_BODY_LEN - KMS_KGC_ID_LEN] = { 0 };
	uint8_t kgc[KMS_KGC_ID_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	struct kms_req r;
	struct kms_resp resp;
	uint16_t st;
	int n, len;

	(void)state;
	n = kms_token_seal(KMS_ROLE_IBE, &id_a, 1, ka, TS, nonce_a, &id_a, &per,
			   tok, sizeof(tok));
	assert_true(n > 0);
	len = kms_ibe_req_encode(9, &id_a, &per, tok, (size_t)n, req,
				 sizeof(req));
	assert_int_equal(len, KMS_HDR_LEN + 2 + id_a.len + 7 + n);
	assert_int_equal(kms_req_parse(req, (size_t)len, &r, &st), KMS_OK);
	assert_int_equal(r.hdr.type, KMS_T_IBE_KEY_REQ);
	assert_memory_equal(r.id_a.p, id_a.p, id_a.len);
	assert_int_equal(r.id_b.len, 7);
	assert_memory_equal(r.id_b.p, period_s, 7);
	assert_int_equal(r.tok_x.role, KMS_ROLE_IBE);
	assert_int_equal(r.tok_x.raw_len, n);
	assert_null(r.tok_a.raw);
	/* Truncated anywhere (header fixed up): MALFORMED. */
	for (int cut = KMS_HDR_LEN; cut < len; cut++) {
		uint8_t b[KMS_DGRAM_MAX];

		memcpy(b, req, (size_t)cut);
		set_body_len(b, (size_t)cut);
		assert_int_equal(kms_req_parse(b, (size_t)cut, &r, &st),
				 KMS_ERR_MALFORMED);
		assert_int_equal(st, KMS_ST_MALFORMED);
	}
	/* A token of another role: WRONG_ROLE; a byte after it: MALFORMED. */
	req[KMS_HDR_LEN + 2 + id_a.len + 7] = KMS_ROLE_B;
	assert_int_equal(kms_req_parse(req, (size_t)len, &r, &st),
			 KMS_ERR_MALFORMED);
	assert_int_equal(st, KMS_ST_WRONG_ROLE);
	req[KMS_HDR_LEN + 2 + id_a.len + 7] = KMS_ROLE_IBE;
	req[len] = 0;
	set_body_len(req, (size_t)len + 1);
	assert_int_equal(kms_req_parse(req, (size_t)len + 1, &r, &st),
			 KMS_ERR_MALFORMED);
	assert_int_equal(st, KMS_ST_MALFORMED);

	n = kms_ibe_resp_encode(9, kgc, box, rep, sizeof(rep));
	assert_int_equal(n, KMS_REPLY_MAX);
	assert_int_equal(kms_resp_parse(rep, (size_t)n, &resp), KMS_OK);
	assert_memory_equal(resp.kgc_id, kgc, sizeof(kgc));
	assert_ptr_equal(resp.ibe_box, rep + KMS_HDR_LEN + KMS_KGC_ID_LEN);
	assert_int_equal(kms_resp_parse(rep, (size_t)n - 1, &resp),
			 KMS_ERR_MALFORMED);
	assert_int_equal(kms_ibe_resp_encode(9, kgc, box, rep, sizeof(rep) - 1),
			 KMS_ERR_SPACE);
	/* A reply type is dropped, never answered. */
	assert_int_equal(kms_req_parse(rep, (size_t)n, &r, &st),
			 KMS_ERR_MALFORMED);
	assert_int_equal(st, KMS_ST_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_header_flips),
		cmocka_unit_test(test_version_type),
		cmocka_unit_test(test_header_fields),
		cmocka_unit_test(test_trailing),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_id_rules),
		cmocka_unit_test(test_len_past_end),
		cmocka_unit_test(test_ct_len_range),
		cmocka_unit_test(test_roles),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test(test_peek_pair),
		cmocka_unit_test(test_resp_parse),
		cmocka_unit_test(test_encoders),
		cmocka_unit_test(test_id_from_str),
		cmocka_unit_test(test_pair_hash),
		cmocka_unit_test(test_pair_worker),
		cmocka_unit_test(test_pt_matches),
		cmocka_unit_test(test_seal_open),
		cmocka_unit_test(test_keybox),
		cmocka_unit_test(test_ibe_req),
	};

	return cmocka_run_group_tests_name("proto", tests, setup, NULL);
}
