// SPDX-License-Identifier: Apache-2.0
/*
 * ECCSI (RFC 6507) on P-256: the RFC's Appendix A test data byte for byte,
 * then refusals, random round trips, argument checks and a shared context
 * used from several threads.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "kms_eccsi.h"
#include "kms_err.h"

/*
 * RFC 6507 Appendix A ("Test Data"), typed in from the RFC. The KMS
 * secret, the KMS's ephemeral v and the signer's ephemeral j are small
 * integers; everything else follows from them.
 */
static const uint8_t rfc_ksak[32] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x23, 0x45,
};

static const uint8_t rfc_kpak[65] = {
	0x04,
	0x50, 0xD4, 0x67, 0x0B, 0xDE, 0x75, 0x24, 0x4F,
	0x28, 0xD2, 0x83, 0x8A, 0x0D, 0x25, 0x55, 0x8A,
	0x7A, 0x72, 0x68, 0x6D, 0x45, 0x22, 0xD4, 0xC8,
	0x27, 0x3F, 0xB6, 0x44, 0x2A, 0xEB, 0xFA, 0x93,
	0xDB, 0xDD, 0x37, 0x55, 0x1A, 0xFD, 0x26, 0x3B,
	0x5D, 0xFD, 0x61, 0x7F, 0x39, 0x60, 0xC6, 0x5A,
	0x8C, 0x29, 0x88, 0x50, 0xFF, 0x99, 0xF2, 0x03,
	0x66, 0xDC, 0xE7, 0xD4, 0x36, 0x72, 0x17, 0xF4,
};

/* ID = "2011-02\0tel:+447700900123\0": 26 octets, both NULs included. */
static const uint8_t rfc_id[26] = {
	0x32, 0x30, 0x31, 0x31, 0x2D, 0x30, 0x32, 0x00,
	0x74, 0x65, 0x6C, 0x3A, 0x2B, 0x34, 0x34, 0x37,
	0x37, 0x30, 0x30, 0x39, 0x30, 0x30, 0x31, 0x32,
	0x33, 0x00,
};

static const uint8_t rfc_v[32] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x34, 0x56,
};

static const uint8_t rfc_pvt[65] = {
	0x04,
	0x75, 0x8A, 0x14, 0x27, 0x79, 0xBE, 0x89, 0xE8,
	0x29, 0xE7, 0x19, 0x84, 0xCB, 0x40, 0xEF, 0x75,
	0x8C, 0xC4, 0xAD, 0x77, 0x5F, 0xC5, 0xB9, 0xA3,
	0xE1, 0xC8, 0xED, 0x52, 0xF6, 0xFA, 0x36, 0xD9,
	0xA7, 0x9D, 0x24, 0x76, 0x92, 0xF4, 0xED, 0xA3,
	0xA6, 0xBD, 0xAB, 0x77, 0xD6, 0xAA, 0x64, 0x74,
	0xA4, 0x64, 0xAE, 0x49, 0x34, 0x66, 0x3C, 0x52,
	0x65, 0xBA, 0x70, 0x18, 0xBA, 0x09, 0x1F, 0x79,
};

static const uint8_t rfc_hs[32] = {
	0x49, 0x0F, 0x3F, 0xEB, 0xBC, 0x1C, 0x90, 0x2F,
	0x62, 0x89, 0x72, 0x3D, 0x7F, 0x8C, 0xBF, 0x79,
	0xDB, 0x88, 0x93, 0x08, 0x49, 0xD1, 0x9F, 0x38,
	0xF0, 0x29, 0x5B, 0x5C, 0x27, 0x6C, 0x14, 0xD1,
};

static const uint8_t rfc_ssk[32] = {
	0x23, 0xF3, 0x74, 0xAE, 0x1F, 0x40, 0x33, 0xF3,
	0xE9, 0xDB, 0xDD, 0xAA, 0xEF, 0x20, 0xF4, 0xCF,
	0x0B, 0x86, 0xBB, 0xD5, 0xA1, 0x38, 0xA5, 0xAE,
	0x9E, 0x7E, 0x00, 0x6B, 0x34, 0x48, 0x9A, 0x0D,
};

/* M = "message\0" = 6D657373 61676500: 8 octets, the NUL included. */
static const uint8_t rfc_msg[8] = {
	0x6D, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x00,
};

static const uint8_t rfc_j[32] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x45, 0x67,
};

/* Signature = r || s || PVT; r = Jx of J = [j]G, s = s'. */
static const uint8_t rfc_sig[129] = {
	/* r */
	0x26, 0x9D, 0x4C, 0x8F, 0xDE, 0xB6, 0x6A, 0x74,
	0xE4, 0xEF, 0x8C, 0x0D, 0x5D, 0xCC, 0x59, 0x7D,
	0xDF, 0xE6, 0x02, 0x9C, 0x2A, 0xFF, 0xC4, 0x93,
	0x60, 0x08, 0xCD, 0x2C, 0xC1, 0x04, 0x5D, 0x81,
	/* s */
	0xE0, 0x9B, 0x52, 0x8D, 0x0E, 0xF8, 0xD6, 0xDF,
	0x1A, 0xA3, 0xEC, 0xBF, 0x80, 0x11, 0x0C, 0xFC,
	0xEC, 0x9F, 0xC6, 0x82, 0x52, 0xCE, 0xBB, 0x67,
	0x9F, 0x41, 0x34, 0x84, 0x69, 0x40, 0xCC, 0xFD,
	/* PVT */
	0x04,
	0x75, 0x8A, 0x14, 0x27, 0x79, 0xBE, 0x89, 0xE8,
	0x29, 0xE7, 0x19, 0x84, 0xCB, 0x40, 0xEF, 0x75,
	0x8C, 0xC4, 0xAD, 0x77, 0x5F, 0xC5, 0xB9, 0xA3,
	0xE1, 0xC8, 0xED, 0x52, 0xF6, 0xFA, 0x36, 0xD9,
	0xA7, 0x9D, 0x24, 0x76, 0x92, 0xF4, 0xED, 0xA3,
	0xA6, 0xBD, 0xAB, 0x77, 0xD6, 0xAA, 0x64, 0x74,
	0xA4, 0x64, 0xAE, 0x49, 0x34, 0x66, 0x3C, 0x52,
	0x65, 0xBA, 0x70, 0x18, 0xBA, 0x09, 0x1F, 0x79,
};

/* P-256 (RFC 6507 section 4.1 / FIPS 186-3): order q and prime p. */
static const uint8_t p256_q[32] = {
	0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00,
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84,
	0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
};

static const uint8_t p256_p[32] = {
	0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF,
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
};

static const uint8_t p256_g[65] = {
	0x04,
	0x6B, 0x17, 0xD1, 0xF2, 0xE1, 0x2C, 0x42, 0x47,
	0xF8, 0xBC, 0xE6, 0xE5, 0x63, 0xA4, 0x40, 0xF2,
	0x77, 0x03, 0x7D, 0x81, 0x2D, 0xEB, 0x33, 0xA0,
	0xF4, 0xA1, 0x39, 0x45, 0xD8, 0x98, 0xC2, 0x96,
	0x4F, 0xE3, 0x42, 0xE2, 0xFE, 0x1A, 0x7F, 0x9B,
	0x8E, 0xE7, 0xEB, 0x4A, 0x7C, 0x0F, 0x9E, 0x16,
	0x2B, 0xCE, 0x33, 0x57, 0x6B, 0x31, 0x5E, 0xCE,
	0xCB, 0xB6, 0x40, 0x68, 0x37, 0xBF, 0x51, 0xF5,
};

static struct kms_eccsi *E;

static int group_setup(void **state)
{
	(void)state;
	return kms_eccsi_new(&E) == KMS_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	kms_eccsi_free(E);
	E = NULL;
	return 0;
}

static int verify_rfc(const uint8_t *msg, size_t msg_len,
		      const uint8_t sig[KMS_ECCSI_SIG_LEN])
{
	return kms_eccsi_verify(E, rfc_kpak, rfc_id, sizeof(rfc_id), msg,
				msg_len, sig);
}

/* A random KSAK in [1, q-1] (top bit clear, so below q). */
static void random_ksak(uint8_t ksak[32])
{
	assert_int_equal(RAND_bytes(ksak, 32), 1);
	ksak[0] &= 0x7f;
	ksak[31] |= 1;
}

/* --- RFC 6507 Appendix A ------------------------------------------ */

static void test_rfc_kpak(void **state)
{
	uint8_t kpak[65];

	(void)state;
	assert_int_equal(kms_eccsi_kpak(E, rfc_ksak, kpak), KMS_OK);
	assert_memory_equal(kpak, rfc_kpak, sizeof(kpak));
}

/* HS as the RFC defines it (section 4.1), over the RFC's own values. */
static void test_rfc_hs_definition(void **state)
{
	uint8_t hs[32];
	unsigned int len = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	(void)state;
	assert_non_null(md);
	assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
	assert_int_equal(EVP_DigestUpdate(md, p256_g, sizeof(p256_g)), 1);
	assert_int_equal(EVP_DigestUpdate(md, rfc_kpak, sizeof(rfc_kpak)), 1);
	assert_int_equal(EVP_DigestUpdate(md, rfc_id, sizeof(rfc_id)), 1);
	assert_int_equal(EVP_DigestUpdate(md, rfc_pvt, sizeof(rfc_pvt)), 1);
	assert_int_equal(EVP_DigestFinal_ex(md, hs, &len), 1);
	EVP_MD_CTX_free(md);
	assert_int_equal(len, 32);
	assert_memory_equal(hs, rfc_hs, sizeof(hs));
}

/* PVT and SSK from v; the library's HS recovered as (SSK - KSAK) / v. */
static void test_rfc_issue(void **state)
{
	uint8_t ssk[32], pvt[65], hs[32];
	BN_CTX *ctx = BN_CTX_new();
	BIGNUM *q = BN_bin2bn(p256_q, 32, NULL);
	BIGNUM *k = BN_bin2bn(rfc_ksak, 32, NULL);
	BIGNUM *v = BN_bin2bn(rfc_v, 32, NULL);
	BIGNUM *h = BN_new();

	(void)state;
	assert_int_equal(kms_eccsi_issue(E, rfc_ksak, rfc_kpak, rfc_id,
					 sizeof(rfc_id), rfc_v, ssk, pvt),
			 KMS_OK);
	assert_memory_equal(pvt, rfc_pvt, sizeof(pvt));
	assert_memory_equal(ssk, rfc_ssk, sizeof(ssk));

	assert_true(ctx && q && k && v && h);
	assert_non_null(BN_bin2bn(ssk, 32, h));
	assert_int_equal(BN_mod_sub(h, h, k, q, ctx), 1);
	assert_non_null(BN_mod_inverse(v, v, q, ctx));
	assert_int_equal(BN_mod_mul(h, h, v, q, ctx), 1);
	assert_int_equal(BN_bn2binpad(h, hs, 32), 32);
	assert_memory_equal(hs, rfc_hs, sizeof(hs));
	BN_free(h);
	BN_free(v);
	BN_free(k);
	BN_free(q);
	BN_CTX_free(ctx);
}

static void test_rfc_validate(void **state)
{
	(void)state;
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					    rfc_ssk, rfc_pvt),
			 KMS_OK);
}

static void test_rfc_sign(void **state)
{
	static const char text[] = "message"; /* sizeof: the NUL counts */
	uint8_t sig[KMS_ECCSI_SIG_LEN];

	(void)state;
	assert_int_equal(sizeof(text), sizeof(rfc_msg));
	assert_memory_equal(text, rfc_msg, sizeof(rfc_msg));
	assert_int_equal(kms_eccsi_sign(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					rfc_ssk, rfc_pvt, rfc_msg,
					sizeof(rfc_msg), rfc_j, sig),
			 KMS_OK);
	assert_memory_equal(sig, rfc_sig, 32);            /* r */
	assert_memory_equal(sig + 32, rfc_sig + 32, 32);  /* s */
	assert_memory_equal(sig, rfc_sig, sizeof(sig));   /* and PVT */
}

static void test_rfc_verify(void **state)
{
	(void)state;
	assert_int_equal(verify_rfc(rfc_msg, sizeof(rfc_msg), rfc_sig),
			 KMS_OK);
}

/* --- refusals -------------------------------------------------------- */

static void test_verify_changed_message(void **state)
{
	uint8_t m[9];
	size_t i;

	(void)state;
	/* "message" without its NUL, with an extra octet, empty */
	assert_int_equal(verify_rfc(rfc_msg, 7, rfc_sig), KMS_ERR_AUTH);
	memcpy(m, rfc_msg, 8);
	m[8] = 0;
	assert_int_equal(verify_rfc(m, 9, rfc_sig), KMS_ERR_AUTH);
	assert_int_equal(verify_rfc(NULL, 0, rfc_sig), KMS_ERR_AUTH);
	/* every single-bit change */
	for (i = 0; i < 8 * sizeof(rfc_msg); i++) {
		memcpy(m, rfc_msg, 8);
		m[i / 8] ^= (uint8_t)(1u << (i % 8));
		assert_int_equal(verify_rfc(m, 8, rfc_sig), KMS_ERR_AUTH);
	}
}

static void test_verify_other_identity(void **state)
{
	uint8_t id[sizeof(rfc_id)];

	(void)state;
	memcpy(id, rfc_id, sizeof(id));
	id[6] = '1'; /* "2011-01\0tel:+447700900123\0" */
	assert_int_equal(kms_eccsi_verify(E, rfc_kpak, id, sizeof(id), rfc_msg,
					  sizeof(rfc_msg), rfc_sig),
			 KMS_ERR_AUTH);
	/* the same identifier without its final NUL */
	assert_int_equal(kms_eccsi_verify(E, rfc_kpak, rfc_id,
					  sizeof(rfc_id) - 1, rfc_msg,
					  sizeof(rfc_msg), rfc_sig),
			 KMS_ERR_AUTH);
}

/* Every single-bit change of r, then of s: all refused as forgeries
 * (no flip takes r to p or above, nor s to q or above). */
static void test_verify_flipped_r_s(void **state)
{
	uint8_t sig[KMS_ECCSI_SIG_LEN];
	size_t i;

	(void)state;
	for (i = 0; i < 8 * 64; i++) {
		memcpy(sig, rfc_sig, sizeof(sig));
		sig[i / 8] ^= (uint8_t)(0x80u >> (i % 8));
		assert_int_equal(verify_rfc(rfc_msg, sizeof(rfc_msg), sig),
				 KMS_ERR_AUTH);
	}
}

/* Every single-bit change of PVT: off the curve (MALFORMED) or, should a
 * flip land on it, a forgery (AUTH); never accepted. */
static void test_verify_flipped_pvt(void **state)
{
	uint8_t sig[KMS_ECCSI_SIG_LEN];
	size_t i, malformed = 0;
	int err;

	(void)state;
	for (i = 0; i < 8 * KMS_ECCSI_POINT_LEN; i++) {
		memcpy(sig, rfc_sig, sizeof(sig));
		sig[64 + i / 8] ^= (uint8_t)(0x80u >> (i % 8));
		err = verify_rfc(rfc_msg, sizeof(rfc_msg), sig);
		assert_true(err == KMS_ERR_MALFORMED || err == KMS_ERR_AUTH);
		malformed += err == KMS_ERR_MALFORMED;
	}
	/* at least the 8 prefix flips and nearly every coordinate flip */
	assert_true(malformed >= 8 * KMS_ECCSI_POINT_LEN - 8);
	/* a valid point that is not the signer's PVT */
	memcpy(sig, rfc_sig, sizeof(sig));
	memcpy(sig + 64, rfc_kpak, 65);
	assert_int_equal(verify_rfc(rfc_msg, sizeof(rfc_msg), sig),
			 KMS_ERR_AUTH);
}

static void test_verify_wrong_kpak(void **state)
{
	uint8_t ksak[32], kpak[65];

	(void)state;
	/* the KPAK of KSAK + 1: a valid point, the wrong KMS */
	memcpy(ksak, rfc_ksak, 32);
	ksak[31]++;
	assert_int_equal(kms_eccsi_kpak(E, ksak, kpak), KMS_OK);
	assert_int_equal(kms_eccsi_verify(E, kpak, rfc_id, sizeof(rfc_id),
					  rfc_msg, sizeof(rfc_msg), rfc_sig),
			 KMS_ERR_AUTH);
	/* off the curve */
	memcpy(kpak, rfc_kpak, 65);
	kpak[64] ^= 1;
	assert_int_equal(kms_eccsi_verify(E, kpak, rfc_id, sizeof(rfc_id),
					  rfc_msg, sizeof(rfc_msg), rfc_sig),
			 KMS_ERR_MALFORMED);
	/* compressed form: not the encoding the RFC hashes */
	memcpy(kpak, rfc_kpak, 65);
	kpak[0] = 0x02 | (rfc_kpak[64] & 1);
	assert_int_equal(kms_eccsi_verify(E, kpak, rfc_id, sizeof(rfc_id),
					  rfc_msg, sizeof(rfc_msg), rfc_sig),
			 KMS_ERR_MALFORMED);
}

static void set_scalar(uint8_t sig[KMS_ECCSI_SIG_LEN], size_t at,
		       const uint8_t v[32])
{
	memcpy(sig, rfc_sig, KMS_ECCSI_SIG_LEN);
	memcpy(sig + at, v, 32);
}

static void test_verify_bad_scalars(void **state)
{
	uint8_t sig[KMS_ECCSI_SIG_LEN], v[32];
	BIGNUM *q = BN_bin2bn(p256_q, 32, NULL);
	BIGNUM *s = BN_bin2bn(rfc_sig + 32, 32, NULL);

	(void)state;
	assert_true(q && s);
	/* s = 0, s = q, s = q + 1, s = 2^256 - 1 */
	memset(v, 0, 32);
	set_scalar(sig, 32, v);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_ERR_MALFORMED);
	set_scalar(sig, 32, p256_q);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_ERR_MALFORMED);
	memcpy(v, p256_q, 32);
	v[31]++;
	set_scalar(sig, 32, v);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_ERR_MALFORMED);
	memset(v, 0xff, 32);
	set_scalar(sig, 32, v);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_ERR_MALFORMED);
	/* s = q - 1 and s = 1: in range, wrong */
	memcpy(v, p256_q, 32);
	v[31]--;
	set_scalar(sig, 32, v);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_ERR_AUTH);
	memset(v, 0, 32);
	v[31] = 1;
	set_scalar(sig, 32, v);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_ERR_AUTH);
	/*
	 * s replaced by q - s gives J' = -J, with the same x-coordinate: the
	 * RFC's verification (5.2.2) accepts it, as ECDSA does. Pinned here
	 * so that nobody mistakes a signature's bytes for a unique name.
	 */
	assert_int_equal(BN_sub(s, q, s), 1);
	assert_int_equal(BN_bn2binpad(s, v, 32), 32);
	set_scalar(sig, 32, v);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_OK);
	/* r = 0, r = p, r = 2^256 - 1 */
	memset(v, 0, 32);
	set_scalar(sig, 0, v);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_ERR_MALFORMED);
	set_scalar(sig, 0, p256_p);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_ERR_MALFORMED);
	memset(v, 0xff, 32);
	set_scalar(sig, 0, v);
	assert_int_equal(verify_rfc(rfc_msg, 8, sig), KMS_ERR_MALFORMED);
	BN_free(s);
	BN_free(q);
}

static void test_validate_refusals(void **state)
{
	uint8_t ssk[32], pvt[65], kpak[65], id[sizeof(rfc_id)], ksak[32];

	(void)state;
	/* SSK + 1, SSK - 1 */
	memcpy(ssk, rfc_ssk, 32);
	ssk[31]++;
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					    ssk, rfc_pvt),
			 KMS_ERR_AUTH);
	ssk[31] -= 2;
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					    ssk, rfc_pvt),
			 KMS_ERR_AUTH);
	/* SSK = 0 and SSK = q: not scalars */
	memset(ssk, 0, 32);
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					    ssk, rfc_pvt),
			 KMS_ERR_AUTH);
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					    p256_q, rfc_pvt),
			 KMS_ERR_AUTH);
	/* another identity */
	memcpy(id, rfc_id, sizeof(id));
	id[6] = '1';
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, id, sizeof(id),
					    rfc_ssk, rfc_pvt),
			 KMS_ERR_AUTH);
	/* another KMS */
	memcpy(ksak, rfc_ksak, 32);
	ksak[31]++;
	assert_int_equal(kms_eccsi_kpak(E, ksak, kpak), KMS_OK);
	assert_int_equal(kms_eccsi_validate(E, kpak, rfc_id, sizeof(rfc_id),
					    rfc_ssk, rfc_pvt),
			 KMS_ERR_AUTH);
	/* a PVT off the curve, and a valid point that is not the PVT */
	memcpy(pvt, rfc_pvt, 65);
	pvt[64] ^= 1;
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					    rfc_ssk, pvt),
			 KMS_ERR_MALFORMED);
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					    rfc_ssk, p256_g),
			 KMS_ERR_AUTH);
}

/* --- random j, random v ------------------------------------------- */

static void test_sign_random_j(void **state)
{
	uint8_t sig[8][KMS_ECCSI_SIG_LEN];
	size_t i, k;

	(void)state;
	for (i = 0; i < 8; i++) {
		assert_int_equal(kms_eccsi_sign(E, rfc_kpak, rfc_id,
						sizeof(rfc_id), rfc_ssk,
						rfc_pvt, rfc_msg,
						sizeof(rfc_msg), NULL, sig[i]),
				 KMS_OK);
		assert_int_equal(verify_rfc(rfc_msg, sizeof(rfc_msg), sig[i]),
				 KMS_OK);
		assert_int_equal(verify_rfc(rfc_msg, 7, sig[i]),
				 KMS_ERR_AUTH);
		assert_memory_equal(sig[i] + 64, rfc_pvt, 65);
		assert_memory_not_equal(sig[i], rfc_sig, 32);
		for (k = 0; k < i; k++)
			assert_memory_not_equal(sig[i], sig[k], 32);
	}
}

static void test_issue_random_v(void **state)
{
	static const uint8_t id[] = "sip:alice@example.org";
	static const uint8_t msg[] = "MIKEY-SAKKE I_MESSAGE";
	uint8_t ksak[32], kpak[65], ssk[2][32], pvt[2][65];
	uint8_t sig[KMS_ECCSI_SIG_LEN];
	size_t i;

	(void)state;
	random_ksak(ksak);
	assert_int_equal(kms_eccsi_kpak(E, ksak, kpak), KMS_OK);
	for (i = 0; i < 2; i++) {
		assert_int_equal(kms_eccsi_issue(E, ksak, kpak, id, sizeof(id),
						 NULL, ssk[i], pvt[i]),
				 KMS_OK);
		assert_int_equal(kms_eccsi_validate(E, kpak, id, sizeof(id),
						    ssk[i], pvt[i]),
				 KMS_OK);
		assert_int_equal(kms_eccsi_sign(E, kpak, id, sizeof(id),
						ssk[i], pvt[i], msg,
						sizeof(msg), NULL, sig),
				 KMS_OK);
		assert_int_equal(kms_eccsi_verify(E, kpak, id, sizeof(id), msg,
						  sizeof(msg), sig),
				 KMS_OK);
		assert_int_equal(kms_eccsi_verify(E, rfc_kpak, id, sizeof(id),
						  msg, sizeof(msg), sig),
				 KMS_ERR_AUTH);
	}
	/* two issues: two v, so two different pairs */
	assert_memory_not_equal(pvt[0], pvt[1], 65);
	assert_memory_not_equal(ssk[0], ssk[1], 32);
	/* pairs do not mix */
	assert_int_equal(kms_eccsi_validate(E, kpak, id, sizeof(id), ssk[0],
					    pvt[1]),
			 KMS_ERR_AUTH);
	OPENSSL_cleanse(ksak, sizeof(ksak));
	OPENSSL_cleanse(ssk, sizeof(ssk));
}

/* --- arguments ---------------------------------------------------- */

static void test_arguments(void **state)
{
	static const uint8_t zero[32];
	uint8_t ssk[32], pvt[65], sig[KMS_ECCSI_SIG_LEN], kpak[65];
	uint8_t *long_id = malloc(KMS_ECCSI_ID_MAX + 1);
	struct kms_eccsi *e2 = NULL;

	(void)state;
	assert_non_null(long_id);
	memset(long_id, 'x', KMS_ECCSI_ID_MAX + 1);
	assert_int_equal(kms_eccsi_new(NULL), KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_new(&e2), KMS_OK);
	kms_eccsi_free(e2);
	kms_eccsi_free(NULL);

	/* out-parameters untouched on failure */
	memset(ssk, 0xa5, sizeof(ssk));
	memset(pvt, 0xa5, sizeof(pvt));
	memset(sig, 0xa5, sizeof(sig));
	memset(kpak, 0xa5, sizeof(kpak));

	/* KSAK 0 and q */
	assert_int_equal(kms_eccsi_kpak(E, zero, kpak), KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_kpak(E, p256_q, kpak), KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_kpak(NULL, rfc_ksak, kpak), KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_issue(E, zero, rfc_kpak, rfc_id,
					 sizeof(rfc_id), rfc_v, ssk, pvt),
			 KMS_ERR_INVAL);
	/* v 0 and q */
	assert_int_equal(kms_eccsi_issue(E, rfc_ksak, rfc_kpak, rfc_id,
					 sizeof(rfc_id), zero, ssk, pvt),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_issue(E, rfc_ksak, rfc_kpak, rfc_id,
					 sizeof(rfc_id), p256_q, ssk, pvt),
			 KMS_ERR_INVAL);
	/* a KPAK that is not this KSAK's, or not a point */
	assert_int_equal(kms_eccsi_issue(E, rfc_ksak, rfc_pvt, rfc_id,
					 sizeof(rfc_id), rfc_v, ssk, pvt),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_issue(E, rfc_ksak, long_id, rfc_id,
					 sizeof(rfc_id), rfc_v, ssk, pvt),
			 KMS_ERR_MALFORMED);
	/* identifiers: empty, NULL, too long */
	assert_int_equal(kms_eccsi_issue(E, rfc_ksak, rfc_kpak, rfc_id, 0,
					 rfc_v, ssk, pvt),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_issue(E, rfc_ksak, rfc_kpak, NULL, 5,
					 rfc_v, ssk, pvt),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_issue(E, rfc_ksak, rfc_kpak, long_id,
					 KMS_ECCSI_ID_MAX + 1, NULL, ssk, pvt),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, rfc_id, 0, rfc_ssk,
					    rfc_pvt),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_sign(E, rfc_kpak, long_id,
					KMS_ECCSI_ID_MAX + 1, rfc_ssk, rfc_pvt,
					rfc_msg, 8, NULL, sig),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_verify(E, rfc_kpak, rfc_id, 0, rfc_msg, 8,
					  rfc_sig),
			 KMS_ERR_INVAL);
	/* j 0 and q; SSK 0; message NULL with a length */
	assert_int_equal(kms_eccsi_sign(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					rfc_ssk, rfc_pvt, rfc_msg, 8, zero,
					sig),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_sign(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					rfc_ssk, rfc_pvt, rfc_msg, 8, p256_q,
					sig),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_sign(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					zero, rfc_pvt, rfc_msg, 8, NULL, sig),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_sign(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					rfc_ssk, rfc_pvt, NULL, 8, NULL, sig),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_verify(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					  NULL, 8, rfc_sig),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_eccsi_verify(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					  rfc_msg, 8, NULL),
			 KMS_ERR_INVAL);

	assert_memory_equal(ssk, (uint8_t[32]){ [0 ... 31] = 0xa5 }, 32);
	assert_memory_equal(pvt, (uint8_t[65]){ [0 ... 64] = 0xa5 }, 65);
	assert_memory_equal(sig, (uint8_t[129]){ [0 ... 128] = 0xa5 }, 129);
	assert_memory_equal(kpak, (uint8_t[65]){ [0 ... 64] = 0xa5 }, 65);

	/* the longest identifier and an empty message work end to end */
	assert_int_equal(kms_eccsi_issue(E, rfc_ksak, rfc_kpak, long_id,
					 KMS_ECCSI_ID_MAX, NULL, ssk, pvt),
			 KMS_OK);
	assert_int_equal(kms_eccsi_validate(E, rfc_kpak, long_id,
					    KMS_ECCSI_ID_MAX, ssk, pvt),
			 KMS_OK);
	assert_int_equal(kms_eccsi_sign(E, rfc_kpak, long_id, KMS_ECCSI_ID_MAX,
					ssk, pvt, NULL, 0, NULL, sig),
			 KMS_OK);
	assert_int_equal(kms_eccsi_verify(E, rfc_kpak, long_id,
					  KMS_ECCSI_ID_MAX, NULL, 0, sig),
			 KMS_OK);
	assert_int_equal(kms_eccsi_verify(E, rfc_kpak, long_id,
					  KMS_ECCSI_ID_MAX - 1, NULL, 0, sig),
			 KMS_ERR_AUTH);
	OPENSSL_cleanse(ssk, sizeof(ssk));
	free(long_id);
}

/* --- one context, several threads ---------------------------------- */

#define THREADS 4
#define ROUNDS 25

static void *thread_main(void *arg)
{
	uint8_t sig[KMS_ECCSI_SIG_LEN], msg[8];
	int i, bad = 0;

	memcpy(msg, rfc_msg, sizeof(msg));
	msg[7] = (uint8_t)(uintptr_t)arg;
	for (i = 0; i < ROUNDS; i++) {
		bad |= kms_eccsi_sign(E, rfc_kpak, rfc_id, sizeof(rfc_id),
				      rfc_ssk, rfc_pvt, msg, sizeof(msg), NULL,
				      sig) != KMS_OK;
		bad |= verify_rfc(msg, sizeof(msg), sig) != KMS_OK;
		bad |= verify_rfc(rfc_msg, sizeof(rfc_msg), rfc_sig) != KMS_OK;
		bad |= kms_eccsi_validate(E, rfc_kpak, rfc_id, sizeof(rfc_id),
					  rfc_ssk, rfc_pvt) != KMS_OK;
	}
	return (void *)(uintptr_t)bad;
}

static void test_shared_context(void **state)
{
	pthread_t th[THREADS];
	void *ret;
	uintptr_t i;

	(void)state;
	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, thread_main,
						(void *)(i + 1)),
				 0);
	for (i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(th[i], &ret), 0);
		assert_int_equal((uintptr_t)ret, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc_kpak),
		cmocka_unit_test(test_rfc_hs_definition),
		cmocka_unit_test(test_rfc_issue),
		cmocka_unit_test(test_rfc_validate),
		cmocka_unit_test(test_rfc_sign),
		cmocka_unit_test(test_rfc_verify),
		cmocka_unit_test(test_verify_changed_message),
		cmocka_unit_test(test_verify_other_identity),
		cmocka_unit_test(test_verify_flipped_r_s),
		cmocka_unit_test(test_verify_flipped_pvt),
		cmocka_unit_test(test_verify_wrong_kpak),
		cmocka_unit_test(test_verify_bad_scalars),
		cmocka_unit_test(test_validate_refusals),
		cmocka_unit_test(test_sign_random_j),
		cmocka_unit_test(test_issue_random_v),
		cmocka_unit_test(test_arguments),
		cmocka_unit_test(test_shared_context),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
