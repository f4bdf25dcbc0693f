// SPDX-License-Identifier: Apache-2.0
/*
 * The test ENGINE (tests/ossl/kmstest.so) on its own, before other tests
 * trust its counts: it loads by path and by id; through exactly the calls
 * dataplane/crypto_offload.c makes (keyed once, then the IV alone per
 * operation) it gives the published AES-256-GCM answers and the default
 * provider's bytes; it refuses a wrong tag, a missing tag, a changed
 * ciphertext or AAD; its counters move by exactly the calls made, through
 * GET_FINALS and the $KMS_TEST_ENGINE_COUNTS file; with
 * $KMS_TEST_ENGINE_NO_GCM=1 it binds with no cipher at all.
 *
 * OpenSSL lets one engine .so be bound once at a time in a process, so
 * every test releases (and ENGINE_remove()s) what it loaded.
 */
#include "kms_ossl_engine.h" /* first: ENGINE's deprecation acknowledged */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define ENGINE_ID "kmstest"

/* Never NULL: the custom cipher reads in == NULL as "final". */
static const uint8_t none[1];

/* ------------------------------------------------------------ helpers */

static ENGINE *load_by_path(void)
{
	ENGINE *e = ENGINE_by_id("dynamic");

	if (!e)
		return NULL;
	if (!ENGINE_ctrl_cmd_string(e, "SO_PATH", KMS_TEST_ENGINE_SO, 0) ||
	    !ENGINE_ctrl_cmd_string(e, "LOAD", NULL, 0)) {
		ENGINE_free(e);
		return NULL;
	}
	return e;
}

static long finals(ENGINE *e)
{
	long n = -1;

	assert_int_equal(ENGINE_ctrl_cmd(e, "GET_FINALS", 0, &n, NULL, 0), 1);
	assert_true(n >= 0);
	return n;
}

/*
 * What a test holds, released by teardown() even when an assertion jumps
 * out of it: OpenSSL binds an engine .so once at a time in a process, so
 * an engine left behind would fail every later load.
 */
struct fx {
	ENGINE *e;
	int inited;             /* we hold a functional reference */
	int listed;             /* on OpenSSL's list (ENGINE_by_id) */
	EVP_CIPHER_CTX *ctx[4]; /* each holds a reference of its own */
	char dir[32];           /* a temp dir of counts files, or "" */
};

static void hold(struct fx *f, EVP_CIPHER_CTX *c)
{
	size_t i;

	assert_non_null(c);
	for (i = 0; i < 4 && f->ctx[i]; i++)
		;
	assert_true(i < 4);
	f->ctx[i] = c;
}

static void put(struct fx *f, EVP_CIPHER_CTX *c)
{
	size_t i;

	for (i = 0; i < 4; i++)
		if (f->ctx[i] == c)
			f->ctx[i] = NULL;
	EVP_CIPHER_CTX_free(c);
}

/* A context keyed once through the engine, as ensure_keyed() does. */
static EVP_CIPHER_CTX *keyed(struct fx *f, const uint8_t key[32], int enc)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	ENGINE *e = f->e;

	hold(f, c);
	if (enc)
		assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), e, key,
						    NULL), 1);
	else
		assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), e, key,
						    NULL), 1);
	/* the engine's cipher, not OpenSSL's: the work really goes there */
	assert_ptr_equal(EVP_CIPHER_CTX_get0_cipher(c),
			 ENGINE_get_cipher(e, NID_aes_256_gcm));
	return c;
}

/* One seal as seal() makes it; 0, or the failing step (negative). */
static int seal(EVP_CIPHER_CTX *c, const uint8_t iv[12], const uint8_t *ad,
		size_t ad_len, const uint8_t *pt, size_t pt_len, uint8_t *ct,
		uint8_t tag[16])
{
	int n = -1, m = -1;

	if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) != 1)
		return -1;
	if (EVP_EncryptUpdate(c, NULL, &n, ad, (int)ad_len) != 1)
		return -2;
	if (EVP_EncryptUpdate(c, ct, &n, pt, (int)pt_len) != 1 ||
	    n != (int)pt_len)
		return -3;
	if (EVP_EncryptFinal_ex(c, ct + n, &m) != 1 || m != 0)
		return -4;
	if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
		return -5;
	return 0;
}

/* One open as open_() makes it (tag NULL: none set); 0, or the failing
 * step (negative; -5 is the final, where the tag is checked). */
static int open_(EVP_CIPHER_CTX *c, const uint8_t iv[12], const uint8_t *ad,
		 size_t ad_len, const uint8_t *ct, size_t ct_len,
		 const uint8_t *tag, uint8_t *pt)
{
	int n = -1, m = -1;

	if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, iv) != 1)
		return -1;
	if (EVP_DecryptUpdate(c, NULL, &n, ad, (int)ad_len) != 1)
		return -2;
	if (EVP_DecryptUpdate(c, pt, &n, ct, (int)ct_len) != 1 ||
	    n != (int)ct_len)
		return -3;
	if (tag && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16,
				       (void *)tag) != 1)
		return -4;
	if (EVP_DecryptFinal_ex(c, pt + n, &m) != 1 || m != 0)
		return -5;
	return 0;
}

/* The default provider's AES-256-GCM, in one go. */
static void ref_seal(const uint8_t key[32], const uint8_t iv[12],
		     const uint8_t *ad, size_t ad_len, const uint8_t *pt,
		     size_t pt_len, uint8_t *ct, uint8_t tag[16])
{
	EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, "AES-256-GCM",
					   "provider=default");
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n, m;

	assert_non_null(aes);
	assert_non_null(c);
	assert_int_equal(EVP_EncryptInit_ex(c, aes, NULL, key, iv), 1);
	assert_int_equal(EVP_EncryptUpdate(c, NULL, &n, ad, (int)ad_len), 1);
	assert_int_equal(EVP_EncryptUpdate(c, ct, &n, pt, (int)pt_len), 1);
	assert_int_equal(EVP_EncryptFinal_ex(c, ct + n, &m), 1);
	assert_int_equal(n + m, (int)pt_len);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag),
			 1);
	EVP_CIPHER_CTX_free(c);
	EVP_CIPHER_free(aes);
}

static size_t rnd(size_t below)
{
	uint32_t r;

	assert_int_equal(RAND_bytes((unsigned char *)&r, sizeof(r)), 1);
	return r % below;
}

/* ----------------------------------------------------------- fixture */

static int setup_bare(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	*state = f;
	return f ? 0 : -1;
}

/* Loaded by path and initialised. */
static int setup(void **state)
{
	struct fx *f;

	if (setup_bare(state))
		return -1;
	f = *state;
	f->e = load_by_path();
	if (!f->e || !ENGINE_init(f->e))
		return -1;
	f->inited = 1;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char path[64];
	size_t i;

	for (i = 0; i < 4; i++)
		EVP_CIPHER_CTX_free(f->ctx[i]);
	if (f->inited)
		ENGINE_finish(f->e);
	if (f->listed)
		ENGINE_remove(f->e);
	ENGINE_free(f->e);
	unsetenv("KMS_TEST_ENGINE_COUNTS");
	unsetenv("KMS_TEST_ENGINE_NO_GCM");
	unsetenv("OPENSSL_ENGINES");
	if (f->dir[0]) {
		snprintf(path, sizeof(path), "%s/counts.txt", f->dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/%ld.txt", f->dir, (long)getpid());
		unlink(path);
		rmdir(f->dir);
	}
	free(f);
	ERR_clear_error();
	return 0;
}

/* ---------------------------------------------------------- loading */

/* By path through "dynamic": one cipher, AES-256-GCM, shaped as such,
 * and GET_FINALS declared as a command without input. */
static void loads_by_path(void **state)
{
	struct fx *f = *state;
	ENGINE *e = f->e;
	ENGINE_CIPHERS_PTR list = ENGINE_get_ciphers(e);
	const EVP_CIPHER *c;
	const int *nids = NULL;
	int cmd;

	assert_string_equal(ENGINE_get_id(e), ENGINE_ID);
	assert_non_null(list);
	assert_int_equal(list(e, NULL, &nids, 0), 1);
	assert_int_equal(nids[0], NID_aes_256_gcm);

	c = ENGINE_get_cipher(e, NID_aes_256_gcm);
	assert_non_null(c);
	assert_true(c != EVP_aes_256_gcm());
	assert_null(EVP_CIPHER_get0_provider(c));
	assert_int_equal(EVP_CIPHER_get_nid(c), NID_aes_256_gcm);
	assert_int_equal(EVP_CIPHER_get_key_length(c), 32);
	assert_int_equal(EVP_CIPHER_get_iv_length(c), 12);
	assert_int_equal(EVP_CIPHER_get_block_size(c), 1);
	assert_int_equal(EVP_CIPHER_get_mode(c), EVP_CIPH_GCM_MODE);
	assert_true(EVP_CIPHER_get_flags(c) & EVP_CIPH_FLAG_AEAD_CIPHER);
	assert_null(ENGINE_get_cipher(e, NID_aes_128_gcm));
	ERR_clear_error();

	cmd = ENGINE_ctrl(e, ENGINE_CTRL_GET_CMD_FROM_NAME, 0,
			  (void *)"GET_FINALS", NULL);
	assert_true(cmd >= ENGINE_CMD_BASE);
	assert_int_equal(ENGINE_ctrl(e, ENGINE_CTRL_GET_CMD_FLAGS, cmd, NULL,
				     NULL), ENGINE_CMD_FLAG_NO_INPUT);
	assert_int_equal(finals(e), 0); /* freshly bound: nothing done yet */
}

/* By id: ENGINE_by_id() looks for <id>.so in $OPENSSL_ENGINES. */
static void loads_by_id(void **state)
{
	uint8_t key[32], iv[12], pt[40], ct[40], tag[16], out[40];
	struct fx *f = *state;
	EVP_CIPHER_CTX *enc, *dec;
	ENGINE *e;

	setenv("OPENSSL_ENGINES", "/nonexistent", 1);
	assert_null(ENGINE_by_id(ENGINE_ID));
	ERR_clear_error();

	setenv("OPENSSL_ENGINES", KMS_TEST_ENGINE_DIR, 1);
	assert_null(ENGINE_by_id("kmstest-no-such"));
	ERR_clear_error();
	e = f->e = ENGINE_by_id(ENGINE_ID);
	assert_non_null(e);
	f->listed = 1;
	assert_string_equal(ENGINE_get_id(e), ENGINE_ID);
	assert_int_equal(ENGINE_init(e), 1);
	f->inited = 1;

	assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
	assert_int_equal(RAND_bytes(iv, sizeof(iv)), 1);
	assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
	enc = keyed(f, key, 1);
	dec = keyed(f, key, 0);
	assert_int_equal(seal(enc, iv, none, 0, pt, sizeof(pt), ct, tag), 0);
	assert_int_equal(open_(dec, iv, none, 0, ct, sizeof(ct), tag, out), 0);
	assert_memory_equal(out, pt, sizeof(pt));
	assert_int_equal(finals(e), 2);
	put(f, enc);
	put(f, dec);

	/* ENGINE_by_id() put it on OpenSSL's list: taken off, it is unbound
	 * and loads by path again */
	assert_int_equal(ENGINE_remove(e), 1);
	f->listed = 0;
	ENGINE_finish(e);
	f->inited = 0;
	ENGINE_free(e);
	unsetenv("OPENSSL_ENGINES");
	f->e = load_by_path();
	assert_non_null(f->e);
}

/* ----------------------------------------------- known answers (KAT) */

/*
 * D. McGrew, J. Viega, "The Galois/Counter Mode of Operation (GCM)",
 * submission to NIST (revised May 2005), Appendix B, test cases 14, 15
 * and 16 (AES-256).
 */
static const uint8_t tc14_key[32]; /* all zero */
static const uint8_t tc14_iv[12];  /* all zero */
static const uint8_t tc14_pt[16];  /* all zero */
static const uint8_t tc14_ct[16] = {
	0xce, 0xa7, 0x40, 0x3d, 0x4d, 0x60, 0x6b, 0x6e,
	0x07, 0x4e, 0xc5, 0xd3, 0xba, 0xf3, 0x9d, 0x18,
};
static const uint8_t tc14_tag[16] = {
	0xd0, 0xd1, 0xc8, 0xa7, 0x99, 0x99, 0x6b, 0xf0,
	0x26, 0x5b, 0x98, 0xb5, 0xd4, 0x8a, 0xb9, 0x19,
};

/* test cases 15 and 16: one key and IV; 16 takes the first 60 bytes of
 * 15's plaintext (and so of its ciphertext) and adds 20 bytes of AAD */
static const uint8_t tc15_key[32] = {
	0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c,
	0x6d, 0x6a, 0x8f, 0x94, 0x67, 0x30, 0x83, 0x08,
	0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c,
	0x6d, 0x6a, 0x8f, 0x94, 0x67, 0x30, 0x83, 0x08,
};
static const uint8_t tc15_iv[12] = {
	0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce, 0xdb, 0xad,
	0xde, 0xca, 0xf8, 0x88,
};
static const uint8_t tc15_pt[64] = {
	0xd9, 0x31, 0x32, 0x25, 0xf8, 0x84, 0x06, 0xe5,
	0xa5, 0x59, 0x09, 0xc5, 0xaf, 0xf5, 0x26, 0x9a,
	0x86, 0xa7, 0xa9, 0x53, 0x15, 0x34, 0xf7, 0xda,
	0x2e, 0x4c, 0x30, 0x3d, 0x8a, 0x31, 0x8a, 0x72,
	0x1c, 0x3c, 0x0c, 0x95, 0x95, 0x68, 0x09, 0x53,
	0x2f, 0xcf, 0x0e, 0x24, 0x49, 0xa6, 0xb5, 0x25,
	0xb1, 0x6a, 0xed, 0xf5, 0xaa, 0x0d, 0xe6, 0x57,
	0xba, 0x63, 0x7b, 0x39, 0x1a, 0xaf, 0xd2, 0x55,
};
static const uint8_t tc15_ct[64] = {
	0x52, 0x2d, 0xc1, 0xf0, 0x99, 0x56, 0x7d, 0x07,
	0xf4, 0x7f, 0x37, 0xa3, 0x2a, 0x84, 0x42, 0x7d,
	0x64, 0x3a, 0x8c, 0xdc, 0xbf, 0xe5, 0xc0, 0xc9,
	0x75, 0x98, 0xa2, 0xbd, 0x25, 0x55, 0xd1, 0xaa,
	0x8c, 0xb0, 0x8e, 0x48, 0x59, 0x0d, 0xbb, 0x3d,
	0xa7, 0xb0, 0x8b, 0x10, 0x56, 0x82, 0x88, 0x38,
	0xc5, 0xf6, 0x1e, 0x63, 0x93, 0xba, 0x7a, 0x0a,
	0xbc, 0xc9, 0xf6, 0x62, 0x89, 0x80, 0x15, 0xad,
};
static const uint8_t tc15_tag[16] = {
	0xb0, 0x94, 0xda, 0xc5, 0xd9, 0x34, 0x71, 0xbd,
	0xec, 0x1a, 0x50, 0x22, 0x70, 0xe3, 0xcc, 0x6c,
};
#define TC16_LEN 60
static const uint8_t tc16_ad[20] = {
	0xfe, 0xed, 0xfa, 0xce, 0xde, 0xad, 0xbe, 0xef,
	0xfe, 0xed, 0xfa, 0xce, 0xde, 0xad, 0xbe, 0xef,
	0xab, 0xad, 0xda, 0xd2,
};
static const uint8_t tc16_tag[16] = {
	0x76, 0xfc, 0x6e, 0xce, 0x0f, 0x4e, 0x17, 0x68,
	0xcd, 0xdf, 0x88, 0x53, 0xbb, 0x2d, 0x55, 0x1b,
};

struct kat {
	const uint8_t *ad, *pt, *ct, *tag;
	size_t ad_len, len;
};

/* Several operations on one pair of contexts keyed once, each re-inited
 * with its IV alone, as the KMS uses them. */
static void kat_run(struct fx *f, const uint8_t *key, const uint8_t *iv,
		    const struct kat *v, size_t nv)
{
	EVP_CIPHER_CTX *enc = keyed(f, key, 1), *dec = keyed(f, key, 0);
	ENGINE *e = f->e;
	uint8_t ct[64], pt[64], tag[16];
	long n0 = finals(e);
	size_t i;

	for (i = 0; i < nv; i++) {
		memset(ct, 0, sizeof(ct));
		assert_int_equal(seal(enc, iv, v[i].ad, v[i].ad_len, v[i].pt,
				      v[i].len, ct, tag), 0);
		assert_memory_equal(ct, v[i].ct, v[i].len);
		assert_memory_equal(tag, v[i].tag, 16);

		memset(pt, 0, sizeof(pt));
		assert_int_equal(open_(dec, iv, v[i].ad, v[i].ad_len, v[i].ct,
				       v[i].len, v[i].tag, pt), 0);
		assert_memory_equal(pt, v[i].pt, v[i].len);
	}
	assert_int_equal(finals(e) - n0, (long)(2 * nv));
	put(f, enc);
	put(f, dec);
}

static void known_answers(void **state)
{
	const struct kat tc14 = { none, tc14_pt, tc14_ct, tc14_tag, 0, 16 };
	const struct kat tc15 = { none, tc15_pt, tc15_ct, tc15_tag, 0, 64 };
	const struct kat tc16 = { tc16_ad, tc15_pt, tc15_ct, tc16_tag,
				  sizeof(tc16_ad), TC16_LEN };
	/* 15 again after 16: a re-init with the IV alone starts afresh */
	const struct kat same_key[] = { tc15, tc16, tc15, tc16 };

	kat_run(*state, tc14_key, tc14_iv, &tc14, 1);
	kat_run(*state, tc15_key, tc15_iv, same_key, 4);
}

/* ------------------------------------------------------- refusals */

/* A wrong tag, no tag, a changed ciphertext or AAD byte: refused at the
 * final, where the tag is checked; the context stays usable. */
static void forgeries_refused(void **state)
{
	struct fx *f = *state;
	EVP_CIPHER_CTX *enc = keyed(f, tc15_key, 1), *dec = keyed(f, tc15_key, 0);
	uint8_t ct[TC16_LEN], tag[16], bad[TC16_LEN], badtag[16], ad[20];
	uint8_t pt[TC16_LEN];
	long n0 = finals(f->e);

	assert_int_equal(seal(enc, tc15_iv, tc16_ad, sizeof(tc16_ad), tc15_pt,
			      TC16_LEN, ct, tag), 0);
	assert_memory_equal(tag, tc16_tag, 16);

	memcpy(badtag, tag, 16);
	badtag[15] ^= 0x01;
	assert_int_equal(open_(dec, tc15_iv, tc16_ad, sizeof(tc16_ad), ct,
			       TC16_LEN, badtag, pt), -5);

	assert_int_equal(open_(dec, tc15_iv, tc16_ad, sizeof(tc16_ad), ct,
			       TC16_LEN, NULL, pt), -5);

	memcpy(bad, ct, TC16_LEN);
	bad[TC16_LEN / 2] ^= 0x80;
	assert_int_equal(open_(dec, tc15_iv, tc16_ad, sizeof(tc16_ad), bad,
			       TC16_LEN, tag, pt), -5);

	memcpy(ad, tc16_ad, sizeof(ad));
	ad[0] ^= 0x01;
	assert_int_equal(open_(dec, tc15_iv, ad, sizeof(ad), ct, TC16_LEN, tag,
			       pt), -5);

	/* the same context still opens the genuine box */
	memset(pt, 0, sizeof(pt));
	assert_int_equal(open_(dec, tc15_iv, tc16_ad, sizeof(tc16_ad), ct,
			       TC16_LEN, tag, pt), 0);
	assert_memory_equal(pt, tc15_pt, TC16_LEN);
	/* one seal, four refused opens, one good: each is one final */
	assert_int_equal(finals(f->e) - n0, 6);
}

/* The controls the KMS relies on, and the ones that must say no. */
static void controls(void **state)
{
	struct fx *f = *state;
	EVP_CIPHER_CTX *enc = keyed(f, tc15_key, 1), *dec = keyed(f, tc15_key, 0);
	uint8_t tag[16], tag2[16], ct[16], pt[16];
	int n;

	assert_int_equal(EVP_CIPHER_CTX_get_iv_length(enc), 12);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_AEAD_SET_IVLEN, 12,
					     NULL), 1);
	assert_true(EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_AEAD_SET_IVLEN, 16,
					NULL) != 1);
	assert_true(EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_AEAD_SET_IVLEN, 8,
					NULL) != 1);

	/* no tag before a final: nothing stale leaks out of a re-init */
	assert_int_equal(seal(enc, tc15_iv, none, 0, tc15_pt, 16, ct, tag2), 0);
	assert_int_equal(EVP_EncryptInit_ex(enc, NULL, NULL, NULL, tc15_iv), 1);
	assert_true(EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1);
	assert_int_equal(EVP_EncryptUpdate(enc, ct, &n, tc15_pt, 16), 1);
	assert_true(EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1);

	/* a tag is read when sealing and set when opening, not otherwise */
	assert_true(EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_SET_TAG, 16,
					(void *)tc15_tag) != 1);
	assert_int_equal(EVP_DecryptInit_ex(dec, NULL, NULL, NULL, tc15_iv), 1);
	assert_true(EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1);
	assert_true(EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_GCM_SET_TAG, 8,
					(void *)tc15_tag) != 1);
	assert_int_equal(open_(dec, tc15_iv, none, 0, tc15_ct, 16, tag2, pt), 0);
	assert_memory_equal(pt, tc15_pt, 16);
	assert_true(EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1);
}

/* EVP_CIPHER_CTX_copy() mid-operation: two independent contexts (each
 * frees its own provider context) that finish with the same bytes. */
static void copy_is_deep(void **state)
{
	struct fx *f = *state;
	EVP_CIPHER_CTX *enc = keyed(f, tc15_key, 1);
	EVP_CIPHER_CTX *dup = EVP_CIPHER_CTX_new();
	uint8_t ct[64], ct2[64], tag[16], tag2[16];
	int n, m;

	hold(f, dup);
	assert_int_equal(EVP_EncryptInit_ex(enc, NULL, NULL, NULL, tc15_iv), 1);
	assert_int_equal(EVP_EncryptUpdate(enc, NULL, &n, tc16_ad,
					   sizeof(tc16_ad)), 1);
	assert_int_equal(EVP_CIPHER_CTX_copy(dup, enc), 1);

	assert_int_equal(EVP_EncryptUpdate(dup, ct2, &n, tc15_pt, TC16_LEN), 1);
	assert_int_equal(EVP_EncryptFinal_ex(dup, ct2 + n, &m), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(dup, EVP_CTRL_GCM_GET_TAG, 16,
					     tag2), 1);
	put(f, dup);

	assert_int_equal(EVP_EncryptUpdate(enc, ct, &n, tc15_pt, TC16_LEN), 1);
	assert_int_equal(EVP_EncryptFinal_ex(enc, ct + n, &m), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG, 16,
					     tag), 1);
	assert_memory_equal(ct, tc15_ct, TC16_LEN);
	assert_memory_equal(ct2, tc15_ct, TC16_LEN);
	assert_memory_equal(tag, tc16_tag, 16);
	assert_memory_equal(tag2, tc16_tag, 16);

	/* and the original goes on with a new IV */
	assert_int_equal(seal(enc, tc15_iv, none, 0, tc15_pt, 64, ct, tag), 0);
	assert_memory_equal(ct, tc15_ct, 64);
	assert_memory_equal(tag, tc15_tag, 16);
}

/* ----------------------------------------------- random vs OpenSSL */

#define RND_OPS  96
#define RND_KEYS 8
#define RND_MAX  1100

/* Random keys, IVs, AAD and plaintexts (lengths from 0, across block
 * boundaries): byte-identical to the default provider, and they open. */
static void matches_default_provider(void **state)
{
	static uint8_t pt[RND_MAX], ct[RND_MAX], want[RND_MAX], out[RND_MAX];
	struct fx *f = *state;
	EVP_CIPHER_CTX *enc = NULL, *dec = NULL;
	uint8_t key[32], iv[12], ad[80], tag[16], want_tag[16];
	long n0 = finals(f->e);
	int i;

	for (i = 0; i < RND_OPS; i++) {
		size_t ad_len = rnd(sizeof(ad) + 1), len = rnd(RND_MAX + 1);

		if (i % (RND_OPS / RND_KEYS) == 0) {
			if (enc) {
				put(f, enc);
				put(f, dec);
			}
			assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
			enc = keyed(f, key, 1);
			dec = keyed(f, key, 0);
		}
		if (i < 4) /* the edges, every run */
			len = (size_t[]){ 0, 1, 16, 17 }[i];
		assert_int_equal(RAND_bytes(iv, sizeof(iv)), 1);
		assert_int_equal(RAND_bytes(ad, sizeof(ad)), 1);
		assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);

		ref_seal(key, iv, ad, ad_len, pt, len, want, want_tag);
		assert_int_equal(seal(enc, iv, ad, ad_len, pt, len, ct, tag), 0);
		assert_memory_equal(ct, want, len);
		assert_memory_equal(tag, want_tag, 16);
		assert_int_equal(open_(dec, iv, ad, ad_len, ct, len, tag, out), 0);
		assert_memory_equal(out, pt, len);
	}
	assert_int_equal(finals(f->e) - n0, 2 * RND_OPS);
}

/* Not the KMS's pattern, but an engine cipher must take it: AAD and data
 * in pieces of any size. */
static void chunked_matches(void **state)
{
	static uint8_t pt[RND_MAX], ct[RND_MAX], want[RND_MAX];
	struct fx *f = *state;
	uint8_t key[32], iv[12], ad[80], tag[16], want_tag[16];
	EVP_CIPHER_CTX *enc;
	size_t off, step;
	int n, i;

	assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
	enc = keyed(f, key, 1);
	for (i = 0; i < 16; i++) {
		assert_int_equal(RAND_bytes(iv, sizeof(iv)), 1);
		assert_int_equal(RAND_bytes(ad, sizeof(ad)), 1);
		assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
		ref_seal(key, iv, ad, sizeof(ad), pt, sizeof(pt), want, want_tag);

		assert_int_equal(EVP_EncryptInit_ex(enc, NULL, NULL, NULL, iv), 1);
		for (off = 0; off < sizeof(ad); off += step) {
			step = 1 + rnd(sizeof(ad) - off);
			assert_int_equal(EVP_EncryptUpdate(enc, NULL, &n, ad + off,
							   (int)step), 1);
		}
		for (off = 0; off < sizeof(pt); off += (size_t)n) {
			step = 1 + rnd(sizeof(pt) - off < 70 ?
				       sizeof(pt) - off : 70);
			assert_int_equal(EVP_EncryptUpdate(enc, ct + off, &n,
							   pt + off, (int)step), 1);
			assert_int_equal(n, (int)step);
		}
		assert_int_equal(EVP_EncryptFinal_ex(enc, ct + off, &n), 1);
		assert_int_equal(n, 0);
		assert_int_equal(EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG,
						     16, tag), 1);
		assert_memory_equal(ct, want, sizeof(pt));
		assert_memory_equal(tag, want_tag, 16);
	}
}

/* --------------------------------------------------------- counters */

struct counts {
	long inits, ciphers, finals;
};

/* Read back a counts file: exactly one line in the documented format. */
static struct counts read_counts(const char *path)
{
	struct counts c = { -1, -1, -1 };
	char buf[256], want[256];
	size_t len;
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = '\0';
	assert_int_equal(sscanf(buf, "inits=%ld ciphers=%ld finals=%ld",
				&c.inits, &c.ciphers, &c.finals), 3);
	snprintf(want, sizeof(want), "inits=%ld ciphers=%ld finals=%ld\n",
		 c.inits, c.ciphers, c.finals);
	assert_string_equal(buf, want); /* truncated, nothing else */
	return c;
}

static void fill_junk(const char *path)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	for (int i = 0; i < 20; i++)
		fputs("inits=999999 ciphers=999999 finals=999999 junk\n", f);
	fclose(f);
}

/*
 * Each operation in the KMS's pattern is one init (the IV), three
 * do_cipher calls (AAD, data, final) and one final; keying a context is
 * one init. $KMS_TEST_ENGINE_COUNTS gets the totals at ENGINE_finish
 * (last functional reference) and again at ENGINE_free ("%p": the pid).
 */
static void counts_exact(void **state)
{
	uint8_t ct[64], pt[64], tag[16], bad[16];
	char path[64], pidpath[64];
	struct fx *f = *state;
	EVP_CIPHER_CTX *enc, *dec;
	struct counts a, b, c;
	long f0;
	int i;

	snprintf(f->dir, sizeof(f->dir), "/tmp/kms-test-engine-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(path, sizeof(path), "%s/counts.txt", f->dir);
	setenv("KMS_TEST_ENGINE_COUNTS", path, 1);

	f->e = load_by_path();
	assert_non_null(f->e);
	assert_int_equal(ENGINE_init(f->e), 1);
	f->inited = 1;
	fill_junk(path);
	f->inited = 0;
	ENGINE_finish(f->e); /* the last reference: the file is rewritten */
	a = read_counts(path);
	assert_int_equal(a.finals, finals(f->e));

	assert_int_equal(ENGINE_init(f->e), 1);
	f->inited = 1;
	f0 = finals(f->e);
	enc = keyed(f, tc15_key, 1);
	dec = keyed(f, tc15_key, 0);
	for (i = 0; i < 5; i++) {
		assert_int_equal(seal(enc, tc15_iv, tc16_ad, sizeof(tc16_ad),
				      tc15_pt, 64, ct, tag), 0);
		assert_int_equal(finals(f->e) - f0, 2 * i + 1);
		assert_int_equal(open_(dec, tc15_iv, tc16_ad, sizeof(tc16_ad), ct,
				       64, tag, pt), 0);
		assert_int_equal(finals(f->e) - f0, 2 * i + 2);
	}
	memcpy(bad, tag, 16);
	bad[0] ^= 1;
	assert_int_equal(open_(dec, tc15_iv, tc16_ad, sizeof(tc16_ad), ct, 64,
			       bad, pt), -5);
	assert_int_equal(finals(f->e) - f0, 11); /* a refused open counts */
	put(f, enc);
	put(f, dec);

	/* the contexts held references of their own: ours is the last */
	assert_int_equal(unlink(path), 0);
	f->inited = 0;
	ENGINE_finish(f->e);
	b = read_counts(path);
	assert_int_equal(b.inits - a.inits, 2 + 11);
	assert_int_equal(b.ciphers - a.ciphers, 3 * 11);
	assert_int_equal(b.finals - a.finals, 11);

	/* and at ENGINE_free, "%p" in the name becoming the pid */
	snprintf(path, sizeof(path), "%s/%%p.txt", f->dir);
	snprintf(pidpath, sizeof(pidpath), "%s/%ld.txt", f->dir, (long)getpid());
	setenv("KMS_TEST_ENGINE_COUNTS", path, 1);
	ENGINE_free(f->e);
	f->e = NULL;
	c = read_counts(pidpath);
	assert_int_equal(c.inits, b.inits);
	assert_int_equal(c.ciphers, b.ciphers);
	assert_int_equal(c.finals, b.finals);
}

/* ------------------------------------------------------ no AES-GCM */

/* The child's verdict: 0, or the number of the first check that failed. */
static int no_gcm_child(void)
{
	uint8_t key[32] = { 0 };
	const int *nids = NULL;
	EVP_CIPHER_CTX *c;
	ENGINE *e;
	int ok;

	setenv("KMS_TEST_ENGINE_NO_GCM", "1", 1);
	e = load_by_path();
	if (!e)
		return 1;
	if (strcmp(ENGINE_get_id(e), ENGINE_ID) || ENGINE_init(e) != 1)
		return 2;
	if (ENGINE_get_cipher(e, NID_aes_256_gcm))
		return 3;
	if (ENGINE_get_ciphers(e) &&
	    ENGINE_get_ciphers(e)(e, NULL, &nids, 0) != 0)
		return 4;
	/* and no way around it: keying through the engine fails */
	c = EVP_CIPHER_CTX_new();
	if (!c)
		return 5;
	ok = EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), e, key, NULL);
	EVP_CIPHER_CTX_free(c);
	if (ok == 1)
		return 6;
	ENGINE_finish(e);
	ENGINE_free(e);
	return 0;
}

/* KMS_TEST_ENGINE_NO_GCM=1 at bind time, in a process of its own: the
 * engine binds but offers nothing; without it, the same .so offers GCM. */
static void no_gcm_binds_empty(void **state)
{
	struct fx *f = *state;
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(no_gcm_child());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	assert_null(getenv("KMS_TEST_ENGINE_NO_GCM"));
	f->e = load_by_path();
	assert_non_null(f->e);
	assert_non_null(ENGINE_get_cipher(f->e, NID_aes_256_gcm));
}

int main(void)
{
#define WITH_ENGINE(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
#define WITH_NOTHING(t) cmocka_unit_test_setup_teardown(t, setup_bare, teardown)
	const struct CMUnitTest tests[] = {
		WITH_ENGINE(loads_by_path),
		WITH_NOTHING(loads_by_id),
		WITH_ENGINE(known_answers),
		WITH_ENGINE(forgeries_refused),
		WITH_ENGINE(controls),
		WITH_ENGINE(copy_is_deep),
		WITH_ENGINE(matches_default_provider),
		WITH_ENGINE(chunked_matches),
		WITH_NOTHING(counts_exact),
		WITH_NOTHING(no_gcm_binds_empty),
	};

	unsetenv("KMS_TEST_ENGINE_COUNTS");
	unsetenv("KMS_TEST_ENGINE_NO_GCM");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
