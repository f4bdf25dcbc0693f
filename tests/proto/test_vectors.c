// SPDX-License-Identifier: Apache-2.0
/*
 * Known-answer tests: proto/ must reproduce, byte for byte, the messages that
 * tests/proto/gen_vectors.py computed independently (Python + cryptography)
 * and that docs/PROTOCOL.md lists, and must parse and open them again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kms_err.h"
#include "kms_proto.h"
#include "kms_token.h"
#include "vectors.h"

static struct kms_id id_a, id_b, id_as;

static int setup(void **state)
{
	(void)state;
	if (kms_id_from_str(TV_ID_A, &id_a) != KMS_OK ||
	    kms_id_from_str(TV_ID_B, &id_b) != KMS_OK ||
	    kms_id_from_str(TV_ID_AS, &id_as) != KMS_OK)
		return -1;
	return 0;
}

static void assert_id_eq(const struct kms_id *got, const char *want)
{
	assert_int_equal(got->len, strlen(want));
	assert_memory_equal(got->p, want, got->len);
}

/* Seal one token and compare it (and its AD) with the vector. */
static void check_token(uint8_t role, const struct kms_id *party, uint32_t gen,
			const uint8_t *key, uint64_t ts, const uint8_t *nonce,
			const uint8_t *want_ad, size_t want_ad_len,
			const uint8_t *want, size_t want_len)
{
	uint8_t ad[256], tok[KMS_TOKEN_MAX];
	size_t ad_len;
	int n;

	ad_len = kms_token_ad(role, party, gen, ts, ad);
	assert_int_equal(ad_len, want_ad_len);
	assert_memory_equal(ad, want_ad, ad_len);

	n = kms_token_seal(role, party, gen, key, ts, nonce, &id_a, &id_b, tok,
			   sizeof(tok));
	assert_int_equal(n, (int)want_len);
	assert_memory_equal(tok, want, want_len);
}

static void test_tokens(void **state)
{
	(void)state;
	check_token(KMS_ROLE_A, &id_a, TV_GEN_A, tv_ka, TV_TS_A, tv_nonce_a,
		    tv_ea_ad, sizeof(tv_ea_ad), tv_ea, sizeof(tv_ea));
	check_token(KMS_ROLE_AS, &id_as, TV_GEN_AS, tv_kas, TV_TS_AS,
		    tv_nonce_as, tv_eas_ad, sizeof(tv_eas_ad), tv_eas,
		    sizeof(tv_eas));
	check_token(KMS_ROLE_B, &id_b, TV_GEN_B, tv_kb, TV_TS_B, tv_nonce_b,
		    tv_eb_ad, sizeof(tv_eb_ad), tv_eb, sizeof(tv_eb));
}

static void test_pair_hash(void **state)
{
	uint8_t h[KMS_PAIR_HASH_LEN];

	(void)state;
	kms_pair_hash(&id_a, &id_b, h);
	assert_memory_equal(h, tv_pair_hash, sizeof(h));
}

/* What the server does with a token: rebuild AD, open, compare IDs. */
static void open_token(const struct kms_token *t, const struct kms_id *party,
		       const uint8_t *key)
{
	uint8_t ad[256], pt[KMS_TOKEN_PT_MAX];
	size_t ad_len;

	ad_len = kms_token_ad(t->role, party, t->gen, t->ts_ms, ad);
	assert_int_equal(kms_gcm_open(key, t->nonce, ad, ad_len, t->ct,
				      t->ct_len, t->tag, pt), KMS_OK);
	assert_true(kms_token_pt_matches(pt, t->ct_len, &id_a, &id_b));
}

static void test_deposit_req(void **state)
{
	uint8_t buf[KMS_DGRAM_MAX];
	struct kms_req r;
	uint16_t st = 0xffff;
	int n;

	(void)state;
	n = kms_deposit_req_encode(TV_TXID_DEP, &id_a, &id_b, &id_as, tv_ea,
				   sizeof(tv_ea), tv_eas, sizeof(tv_eas), buf,
				   sizeof(buf));
	assert_int_equal(n, (int)sizeof(tv_deposit_req));
	assert_memory_equal(buf, tv_deposit_req, sizeof(tv_deposit_req));

	assert_int_equal(kms_req_parse(tv_deposit_req, sizeof(tv_deposit_req),
				       &r, &st), KMS_OK);
	assert_int_equal(st, KMS_ST_OK);
	assert_int_equal(r.hdr.version, 1);
	assert_int_equal(r.hdr.type, KMS_T_DEPOSIT_REQ);
	assert_int_equal(r.hdr.txid, TV_TXID_DEP);
	assert_int_equal(r.hdr.body_len, sizeof(tv_deposit_req) - KMS_HDR_LEN);
	assert_id_eq(&r.id_a, TV_ID_A);
	assert_id_eq(&r.id_b, TV_ID_B);
	assert_id_eq(&r.id_as, TV_ID_AS);
	assert_null(r.key_id);

	assert_int_equal(r.tok_a.role, KMS_ROLE_A);
	assert_int_equal(r.tok_a.gen, TV_GEN_A);
	assert_true(r.tok_a.ts_ms == TV_TS_A);
	assert_memory_equal(r.tok_a.nonce, tv_nonce_a, KMS_NONCE_LEN);
	assert_int_equal(r.tok_a.raw_len, sizeof(tv_ea));
	assert_memory_equal(r.tok_a.raw, tv_ea, sizeof(tv_ea));
	assert_int_equal(r.tok_x.role, KMS_ROLE_AS);
	assert_int_equal(r.tok_x.gen, TV_GEN_AS);
	assert_true(r.tok_x.ts_ms == TV_TS_AS);
	assert_memory_equal(r.tok_x.nonce, tv_nonce_as, KMS_NONCE_LEN);
	assert_int_equal(r.tok_x.raw_len, sizeof(tv_eas));
	assert_memory_equal(r.tok_x.raw, tv_eas, sizeof(tv_eas));

	open_token(&r.tok_a, &r.id_a, tv_ka);
	open_token(&r.tok_x, &r.id_as, tv_kas);
}

static void test_retrieve_req(void **state)
{
	uint8_t buf[KMS_DGRAM_MAX];
	struct kms_req r;
	uint16_t st = 0xffff;
	int n;

	(void)state;
	n = kms_retrieve_req_encode(TV_TXID_RET, &id_a, &id_b, tv_key_id, tv_ea,
				    sizeof(tv_ea), tv_eb, sizeof(tv_eb), buf,
				    sizeof(buf));
	assert_int_equal(n, (int)sizeof(tv_retrieve_req));
	assert_memory_equal(buf, tv_retrieve_req, sizeof(tv_retrieve_req));

	assert_int_equal(kms_req_parse(tv_retrieve_req,
				       sizeof(tv_retrieve_req), &r, &st),
			 KMS_OK);
	assert_int_equal(st, KMS_ST_OK);
	assert_int_equal(r.hdr.type, KMS_T_RETRIEVE_REQ);
	assert_int_equal(r.hdr.txid, TV_TXID_RET);
	assert_id_eq(&r.id_a, TV_ID_A);
	assert_id_eq(&r.id_b, TV_ID_B);
	assert_null(r.id_as.p);
	assert_non_null(r.key_id);
	assert_memory_equal(r.key_id, tv_key_id, KMS_KEY_ID_LEN);
	assert_int_equal(r.tok_a.raw_len, sizeof(tv_ea));
	assert_memory_equal(r.tok_a.raw, tv_ea, sizeof(tv_ea));
	assert_int_equal(r.tok_x.role, KMS_ROLE_B);
	assert_int_equal(r.tok_x.gen, TV_GEN_B);
	assert_true(r.tok_x.ts_ms == TV_TS_B);
	assert_memory_equal(r.tok_x.nonce, tv_nonce_b, KMS_NONCE_LEN);
	assert_int_equal(r.tok_x.raw_len, sizeof(tv_eb));
	assert_memory_equal(r.tok_x.raw, tv_eb, sizeof(tv_eb));

	open_token(&r.tok_a, &r.id_a, tv_ka);
	open_token(&r.tok_x, &r.id_b, tv_kb);
}

/* Server side of a key reply: AD, seal K, encode; then the client opens. */
static void check_key_resp(uint8_t type, uint8_t role, uint32_t rgen,
			   const uint8_t *key, const uint8_t *box_nonce,
			   const uint8_t *req_nonce, uint32_t txid,
			   const uint8_t *want_ad, size_t want_ad_len,
			   const uint8_t *want_box, const uint8_t *want,
			   size_t want_len)
{
	uint8_t ad[512], box[KMS_KEYBOX_LEN], buf[128], k[KMS_KEY_LEN];
	struct kms_resp r;
	size_t ad_len;
	int n;

	ad_len = kms_keybox_ad(type, role, rgen, &id_a, &id_b, tv_key_id,
			       TV_K_GEN, TV_EXPIRY, req_nonce, ad);
	assert_int_equal(ad_len, want_ad_len);
	assert_memory_equal(ad, want_ad, ad_len);

	memcpy(box, box_nonce, KMS_NONCE_LEN);
	assert_int_equal(kms_gcm_seal(key, box_nonce, ad, ad_len, tv_k,
				      KMS_KEY_LEN, box + KMS_NONCE_LEN,
				      box + KMS_NONCE_LEN + KMS_KEY_LEN),
			 KMS_OK);
	assert_memory_equal(box, want_box, KMS_KEYBOX_LEN);

	n = kms_key_resp_encode(type, txid, tv_key_id, TV_K_GEN, TV_EXPIRY, box,
				buf, sizeof(buf));
	assert_int_equal(n, (int)want_len);
	assert_int_equal(n, KMS_HDR_LEN + KMS_RESP_BODY_LEN);
	assert_memory_equal(buf, want, want_len);

	assert_int_equal(kms_resp_parse(want, want_len, &r), KMS_OK);
	assert_int_equal(r.hdr.type, type);
	assert_int_equal(r.hdr.txid, txid);
	assert_int_equal(r.status, KMS_ST_OK);
	assert_memory_equal(r.key_id, tv_key_id, KMS_KEY_ID_LEN);
	assert_int_equal(r.k_gen, TV_K_GEN);
	assert_true(r.expiry_ms == TV_EXPIRY);
	assert_memory_equal(r.keybox, want_box, KMS_KEYBOX_LEN);

	assert_int_equal(kms_keybox_open(&r, role, rgen, key, &id_a, &id_b,
					 req_nonce, k), KMS_OK);
	assert_memory_equal(k, tv_k, KMS_KEY_LEN);
}

static void test_deposit_resp(void **state)
{
	(void)state;
	check_key_resp(KMS_T_DEPOSIT_RESP, KMS_ROLE_A, TV_GEN_A, tv_ka,
		       tv_nonce_dbox, tv_nonce_a, TV_TXID_DEP, tv_dep_keybox_ad,
		       sizeof(tv_dep_keybox_ad), tv_dep_keybox, tv_deposit_resp,
		       sizeof(tv_deposit_resp));
}

static void test_retrieve_resp(void **state)
{
	(void)state;
	check_key_resp(KMS_T_RETRIEVE_RESP, KMS_ROLE_B, TV_GEN_B, tv_kb,
		       tv_nonce_rbox, tv_nonce_b, TV_TXID_RET, tv_ret_keybox_ad,
		       sizeof(tv_ret_keybox_ad), tv_ret_keybox,
		       tv_retrieve_resp, sizeof(tv_retrieve_resp));
}

static void test_error(void **state)
{
	uint8_t buf[32];
	struct kms_resp r;
	int n;

	(void)state;
	n = kms_error_encode(TV_TXID_RET, TV_ERR_STATUS, buf, sizeof(buf));
	assert_int_equal(n, (int)sizeof(tv_error));
	assert_int_equal(n, 14);
	assert_memory_equal(buf, tv_error, sizeof(tv_error));

	assert_int_equal(kms_resp_parse(tv_error, sizeof(tv_error), &r), KMS_OK);
	assert_int_equal(r.hdr.type, KMS_T_ERROR);
	assert_int_equal(r.hdr.txid, TV_TXID_RET);
	assert_int_equal(r.status, TV_ERR_STATUS);
	assert_null(r.key_id);
	assert_null(r.keybox);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_pair_hash),
		cmocka_unit_test(test_deposit_req),
		cmocka_unit_test(test_retrieve_req),
		cmocka_unit_test(test_deposit_resp),
		cmocka_unit_test(test_retrieve_resp),
		cmocka_unit_test(test_error),
	};

	return cmocka_run_group_tests_name("proto_vectors", tests, setup, NULL);
}
