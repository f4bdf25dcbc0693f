// SPDX-License-Identifier: Apache-2.0
/*
 * fuzz_proto: the datagram parsers of proto/kms_proto.h on arbitrary
 * bytes: kms_req_parse, kms_resp_parse, kms_req_peek_pair (and
 * kms_hdr_parse under them).
 *
 * Beyond "no crash": what a parser accepts must be exactly what the
 * project's encoders produce from the parsed fields (the wire format has
 * no slack: no trailing bytes, lengths fixed by the fields), every parsed
 * pointer must lie inside the input, and kms_req_peek_pair must find the
 * same two IDs as the full parser.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "kms_err.h"
#include "kms_proto.h"

#define OUT_CAP 4096

static const uint8_t *g_buf;
static size_t g_len;

static int inside(const void *p, size_t n)
{
	const uint8_t *q = p;

	return q && q >= g_buf && n <= g_len && q - g_buf <= (ptrdiff_t)(g_len - n);
}

static void same_bytes(const uint8_t *enc, int enc_len)
{
	FUZZ_CHECK(enc_len > 0);
	FUZZ_CHECK((size_t)enc_len == g_len);
	FUZZ_CHECK(memcmp(enc, g_buf, g_len) == 0);
}

static void check_token(const struct kms_token *t)
{
	FUZZ_CHECK(inside(t->raw, t->raw_len));
	FUZZ_CHECK(inside(t->nonce, KMS_NONCE_LEN));
	FUZZ_CHECK(inside(t->ct, t->ct_len));
	FUZZ_CHECK(inside(t->tag, KMS_TAG_LEN));
	FUZZ_CHECK(t->raw_len == KMS_TOKEN_FIXED + t->ct_len);
	FUZZ_CHECK(t->ct_len >= 2 && t->ct_len <= KMS_TOKEN_PT_MAX);
}

static void req(void)
{
	struct kms_req r;
	struct kms_id pa, pb;
	uint16_t status = 0xffff;
	uint8_t *enc = malloc(OUT_CAP);
	int rc, peek, n = -1;

	FUZZ_CHECK(enc != NULL);
	memset(&r, 0xa5, sizeof(r));
	rc = kms_req_parse(g_buf, g_len, &r, &status);
	peek = kms_req_peek_pair(g_buf, g_len, &pa, &pb);
	if (rc != KMS_OK) {
		FUZZ_CHECK(rc == KMS_ERR_MALFORMED);
		FUZZ_CHECK(status < KMS_ST__COUNT);
		free(enc);
		return;
	}
	FUZZ_CHECK(status == KMS_ST_OK);
	FUZZ_CHECK(g_len <= KMS_DGRAM_MAX);
	FUZZ_CHECK(r.hdr.version == KMS_PROTO_VERSION);
	FUZZ_CHECK(kms_id_valid(&r.id_a) && kms_id_valid(&r.id_b));
	FUZZ_CHECK(inside(r.id_a.p, r.id_a.len) && inside(r.id_b.p, r.id_b.len));
	/* The RX stages' cheap peek agrees with the parser. */
	FUZZ_CHECK(peek == KMS_OK);
	FUZZ_CHECK(pa.p == r.id_a.p && pa.len == r.id_a.len);
	FUZZ_CHECK(pb.p == r.id_b.p && pb.len == r.id_b.len);
	check_token(&r.tok_x);
	switch (r.hdr.type) {
	case KMS_T_DEPOSIT_REQ:
		FUZZ_CHECK(kms_id_valid(&r.id_as) && inside(r.id_as.p, r.id_as.len));
		check_token(&r.tok_a);
		FUZZ_CHECK(r.tok_a.role == KMS_ROLE_A && r.tok_x.role == KMS_ROLE_AS);
		n = kms_deposit_req_encode(r.hdr.txid, &r.id_a, &r.id_b, &r.id_as,
					   r.tok_a.raw, r.tok_a.raw_len,
					   r.tok_x.raw, r.tok_x.raw_len, enc,
					   OUT_CAP);
		break;
	case KMS_T_RETRIEVE_REQ:
		FUZZ_CHECK(inside(r.key_id, KMS_KEY_ID_LEN));
		check_token(&r.tok_a);
		FUZZ_CHECK(r.tok_a.role == KMS_ROLE_A && r.tok_x.role == KMS_ROLE_B);
		n = kms_retrieve_req_encode(r.hdr.txid, &r.id_a, &r.id_b, r.key_id,
					    r.tok_a.raw, r.tok_a.raw_len,
					    r.tok_x.raw, r.tok_x.raw_len, enc,
					    OUT_CAP);
		break;
	case KMS_T_IBE_KEY_REQ:
		FUZZ_CHECK(r.tok_x.role == KMS_ROLE_IBE);
		n = kms_ibe_req_encode(r.hdr.txid, &r.id_a, &r.id_b, r.tok_x.raw,
				       r.tok_x.raw_len, enc, OUT_CAP);
		break;
	default:
		fuzz_fail("kms_req_parse accepted a type that is no request");
	}
	same_bytes(enc, n);
	free(enc);
}

static void resp(void)
{
	struct kms_resp r;
	uint8_t *enc = malloc(OUT_CAP);
	int n = -1;

	FUZZ_CHECK(enc != NULL);
	if (kms_resp_parse(g_buf, g_len, &r) != KMS_OK) {
		free(enc);
		return;
	}
	switch (r.hdr.type) {
	case KMS_T_DEPOSIT_RESP:
	case KMS_T_RETRIEVE_RESP:
		FUZZ_CHECK(r.status == KMS_ST_OK);
		FUZZ_CHECK(inside(r.key_id, KMS_KEY_ID_LEN));
		FUZZ_CHECK(inside(r.keybox, KMS_KEYBOX_LEN));
		n = kms_key_resp_encode(r.hdr.type, r.hdr.txid, r.key_id, r.k_gen,
					r.expiry_ms, r.keybox, enc, OUT_CAP);
		break;
	case KMS_T_IBE_KEY_RESP:
		FUZZ_CHECK(inside(r.kgc_id, KMS_KGC_ID_LEN));
		FUZZ_CHECK(inside(r.ibe_box, KMS_IBE_RESP_BODY_LEN - KMS_KGC_ID_LEN));
		n = kms_ibe_resp_encode(r.hdr.txid, r.kgc_id, r.ibe_box, enc,
					OUT_CAP);
		break;
	case KMS_T_ERROR:
		FUZZ_CHECK(r.status != KMS_ST_OK);
		n = kms_error_encode(r.hdr.txid, r.status, enc, OUT_CAP);
		break;
	default:
		fuzz_fail("kms_resp_parse accepted a type that is no reply");
	}
	same_bytes(enc, n);
	free(enc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_log_init("fuzz_proto");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly @p size bytes: ASan sees any read past the end. */
	uint8_t *buf = malloc(size ? size : 1);

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	g_buf = buf;
	g_len = size;
	req();
	resp();
	free(buf);
	return 0;
}
