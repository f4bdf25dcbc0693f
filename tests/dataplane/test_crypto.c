// SPDX-License-Identifier: Apache-2.0
/*
 * The crypto modes through their table of functions (kms_crypto.h), on a
 * real SoftHSM2 token: both modes give byte-identical AES-256-GCM to
 * OpenSSL's, refuse a wrong tag, a tampered box and a bad blob alike, bound
 * their caches; hsm mode keeps party keys in session objects the host can
 * never read, destroys them on eviction and refuses to use K as anything
 * but a keybox's content.
 *
 * With the test OpenSSL engine (tests/ossl/kmstest.so), offload mode's
 * AEAD goes through it (its own count of finished operations moves by
 * exactly the operations made), and an engine that does not load or lacks
 * AES-256-GCM is refused.
 *
 * The reference computations use key bytes the test itself obtains from
 * the HSM (kms_hsm_unwrap): the test plays an auditor with the KEK's
 * blessing, which kmsd never is in hsm mode.
 */
#include "kms_ossl_engine.h" /* first: ENGINE's deprecation acknowledged */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "crypto_priv.h"
#include "hsm_priv.h"
#include "kms_engine.h"
#include "kms_err.h"
#include "kms_testenv.h"
#include "p11fwd.h"

#include <dlfcn.h>

#define NPARTY 40

struct fx {
	struct kms_testenv env;
	struct kms_hsm *hsm;
	struct kms_hsm_session *s;
	const struct kms_crypto_ops *ops;
	void *st;
	void *engine;
	uint8_t blob[NPARTY][KMS_HSM_BLOB_LEN];
	uint8_t key[NPARTY][KMS_HSM_KEY_LEN];
};

static int setup_mode(void **state, const char *mode, uint32_t capacity,
		      const char *engine)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct kms_crypto_conf conf = { .capacity = capacity };

	if (!f || kms_testenv_setup(&f->env))
		return -1;
	if (engine && kms_crypto_engine_load(engine, &f->engine))
		return -1;
	conf.ossl_engine = f->engine;
	if (kms_hsm_open(&f->env.hsm, &f->hsm) || kms_hsm_kek_create(f->hsm) ||
	    kms_hsm_session_open(f->hsm, &f->s))
		return -1;
	for (unsigned i = 0; i < NPARTY; i++)
		if (kms_hsm_new_key(f->s, f->key[i], f->blob[i]))
			return -1;
	f->ops = kms_crypto_find(mode);
	if (!f->ops || f->ops->create(f->s, &conf, &f->st))
		return -1;
	*state = f;
	return 0;
}

static int setup_offload(void **state) { return setup_mode(state, "offload", 16, NULL); }
static int setup_hsm(void **state) { return setup_mode(state, "hsm", 16, NULL); }
static int setup_engine(void **state)
{
	return setup_mode(state, "offload", 16, KMS_TEST_ENGINE_SO);
}

/* hsm mode through kms_p11fwd.so, which counts value reads. */
static int setup_hsm_fwd(void **state)
{
	setenv("KMS_P11FWD_TARGET", KMS_P11_MODULE_SO, 1);
	setenv("KMS_TEST_PKCS11_MODULE", KMS_P11FWD_SO, 1);
	return setup_mode(state, "hsm", 16, NULL);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f->st)
		f->ops->destroy(f->st);
	kms_crypto_engine_release(f->engine);
	kms_hsm_session_close(f->s);
	kms_hsm_close(f->hsm);
	kms_testenv_teardown(&f->env);
	OPENSSL_cleanse(f, sizeof(*f));
	free(f);
	return 0;
}

/* AES-256-GCM by OpenSSL directly, the reference. */
static void ref_seal(const uint8_t key[32], const uint8_t iv[12],
		     const uint8_t *ad, int ad_len, const uint8_t *pt,
		     int pt_len, uint8_t *ct, uint8_t tag[16])
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n;

	assert_non_null(c);
	assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv), 1);
	assert_int_equal(EVP_EncryptUpdate(c, NULL, &n, ad, ad_len), 1);
	assert_int_equal(EVP_EncryptUpdate(c, ct, &n, pt, pt_len), 1);
	assert_int_equal(EVP_EncryptFinal_ex(c, ct + n, &n), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag), 1);
	EVP_CIPHER_CTX_free(c);
}

/* Session objects (CKA_TOKEN = false secret keys) visible to the test. */
static unsigned session_keys(struct fx *f, CK_OBJECT_HANDLE *out, unsigned cap)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_TOKEN, &no, sizeof(no) },
	};
	CK_ULONG n = 0;

	assert_int_equal(f->s->p11->C_FindObjectsInit(f->s->h, tmpl, 2), CKR_OK);
	assert_int_equal(f->s->p11->C_FindObjects(f->s->h, out, cap, &n), CKR_OK);
	assert_int_equal(f->s->p11->C_FindObjectsFinal(f->s->h), CKR_OK);
	return (unsigned)n;
}

/* ------------------------------------------------------ both modes */

/* Party-key seal and open match OpenSSL byte for byte; the keybox carries
 * exactly K, which the test reads back from K's blob. */
static void gcm_matches_openssl(void **state)
{
	struct fx *f = *state;
	struct kms_ckey *ka = NULL, *k = NULL;
	uint8_t iv[12], ad[40], pt[70], ct[70], tag[16], rct[70], rtag[16];
	uint8_t back[70], kblob[KMS_HSM_BLOB_LEN], kbytes[32];

	RAND_bytes(iv, sizeof(iv));
	RAND_bytes(ad, sizeof(ad));
	RAND_bytes(pt, sizeof(pt));
	assert_int_equal(f->ops->key_get(f->st, f->blob[0], KMS_KEY_PARTY, &ka),
			 KMS_OK);
	assert_int_equal(f->ops->seal(f->st, ka, iv, ad, sizeof(ad), pt,
				      sizeof(pt), ct, tag), KMS_OK);
	ref_seal(f->key[0], iv, ad, sizeof(ad), pt, sizeof(pt), rct, rtag);
	assert_memory_equal(ct, rct, sizeof(ct));
	assert_memory_equal(tag, rtag, sizeof(tag));
	assert_int_equal(f->ops->open(f->st, ka, iv, ad, sizeof(ad), ct,
				      sizeof(ct), tag, back), KMS_OK);
	assert_memory_equal(back, pt, sizeof(pt));

	/* The keybox: K sealed under Ka. */
	assert_int_equal(f->ops->key_new(f->st, kblob, &k), KMS_OK);
	assert_int_equal(kms_hsm_unwrap(f->s, kblob, kbytes), KMS_OK);
	assert_int_equal(f->ops->seal_key(f->st, ka, k, iv, ad, sizeof(ad), ct,
					  tag), KMS_OK);
	ref_seal(f->key[0], iv, ad, sizeof(ad), kbytes, 32, rct, rtag);
	assert_memory_equal(ct, rct, 32);
	assert_memory_equal(tag, rtag, 16);
	f->ops->key_release(f->st, k);
	/* The same K by its blob, as a RETRIEVE gets it. */
	assert_int_equal(f->ops->key_get(f->st, kblob, KMS_KEY_MEDIA, &k), KMS_OK);
	assert_int_equal(f->ops->seal_key(f->st, ka, k, iv, ad, sizeof(ad), ct,
					  tag), KMS_OK);
	assert_memory_equal(ct, rct, 32);
	f->ops->key_release(f->st, k);
	f->ops->key_release(f->st, ka);
	OPENSSL_cleanse(kbytes, sizeof(kbytes));
}

/* A flipped bit anywhere (tag, ciphertext, AD, IV) or another party's key:
 * KMS_ERR_AUTH, and the output is not released. */
static void tampering_refused(void **state)
{
	struct fx *f = *state;
	struct kms_ckey *ka = NULL, *kb = NULL;
	uint8_t iv[12], ad[20], pt[50], ct[50], tag[16], back[50];
	uint8_t *what[] = { tag, ct, ad, iv };
	static const uint8_t zero[50];

	RAND_bytes(iv, sizeof(iv));
	RAND_bytes(ad, sizeof(ad));
	RAND_bytes(pt, sizeof(pt));
	assert_int_equal(f->ops->key_get(f->st, f->blob[1], KMS_KEY_PARTY, &ka), KMS_OK);
	assert_int_equal(f->ops->key_get(f->st, f->blob[2], KMS_KEY_PARTY, &kb), KMS_OK);
	assert_int_equal(f->ops->seal(f->st, ka, iv, ad, sizeof(ad), pt,
				      sizeof(pt), ct, tag), KMS_OK);
	for (unsigned i = 0; i < 4; i++) {
		what[i][3] ^= 0x10;
		memset(back, 0, sizeof(back));
		assert_int_equal(f->ops->open(f->st, ka, iv, ad, sizeof(ad), ct,
					      sizeof(ct), tag, back), KMS_ERR_AUTH);
		assert_memory_equal(back, zero, sizeof(back));
		what[i][3] ^= 0x10;
	}
	assert_int_equal(f->ops->open(f->st, kb, iv, ad, sizeof(ad), ct,
				      sizeof(ct), tag, back), KMS_ERR_AUTH);
	/* Still good after all the refusals (no operation left active). */
	assert_int_equal(f->ops->open(f->st, ka, iv, ad, sizeof(ad), ct,
				      sizeof(ct), tag, back), KMS_OK);
	assert_memory_equal(back, pt, sizeof(pt));
	f->ops->key_release(f->st, ka);
	f->ops->key_release(f->st, kb);
}

/* A blob that fails the RFC 3394 check is KMS_ERR_AUTH, counted, and
 * takes no cache slot. */
static void bad_blob_refused(void **state)
{
	struct fx *f = *state;
	struct kms_crypto_stats st;
	struct kms_ckey *k = NULL;
	uint8_t blob[KMS_HSM_BLOB_LEN];

	memcpy(blob, f->blob[3], sizeof(blob));
	blob[20] ^= 1;
	assert_int_equal(f->ops->key_get(f->st, blob, KMS_KEY_PARTY, &k),
			 KMS_ERR_AUTH);
	assert_int_equal(f->ops->key_get(f->st, blob, KMS_KEY_MEDIA, &k),
			 KMS_ERR_AUTH);
	f->ops->stats(f->st, &st);
	assert_int_equal(st.unwrap_failures, 2);
	assert_int_equal(st.cached, 0);
}

/* The cache holds its bound: hits and misses counted, every slot reused
 * once the keys are unpinned, and KMS_ERR_BUSY when all are pinned. */
static void cache_bounded(void **state)
{
	struct fx *f = *state;
	struct kms_crypto_stats st;
	struct kms_ckey *k[NPARTY];
	uint32_t cap;

	f->ops->stats(f->st, &st);
	cap = st.capacity;
	for (unsigned i = 0; i < NPARTY; i++) {
		assert_int_equal(f->ops->key_get(f->st, f->blob[i], KMS_KEY_PARTY,
						 &k[i]), KMS_OK);
		f->ops->key_release(f->st, k[i]);
	}
	f->ops->stats(f->st, &st);
	assert_int_equal(st.misses, NPARTY);
	assert_true(st.cached <= cap);
	assert_int_equal(st.evictions, NPARTY - st.cached);
	/* The last one is still cached: a hit. */
	assert_int_equal(f->ops->key_get(f->st, f->blob[NPARTY - 1], KMS_KEY_PARTY,
					 &k[0]), KMS_OK);
	f->ops->key_release(f->st, k[0]);
	f->ops->stats(f->st, &st);
	assert_int_equal(st.hits, 1);
}

static void cache_busy_when_pinned(void **state)
{
	struct fx *f = *state;
	struct kms_ckey *k[NPARTY];
	unsigned got = 0;
	int rc = KMS_OK;

	/* Party keys only: in hsm mode K has a cache of its own. */
	while (got < NPARTY && rc == KMS_OK) {
		rc = f->ops->key_get(f->st, f->blob[got], KMS_KEY_PARTY, &k[got]);
		if (rc == KMS_OK)
			got++;
	}
	assert_int_equal(rc, KMS_ERR_BUSY);
	assert_int_equal(got, 16);
	for (unsigned i = 0; i < got; i++)
		f->ops->key_release(f->st, k[i]);
	assert_int_equal(f->ops->key_get(f->st, f->blob[got], KMS_KEY_PARTY, &k[0]),
			 KMS_OK);
	f->ops->key_release(f->st, k[0]);
}

/* --------------------------------------------------------- hsm mode */

/* Every party key lives in a session object that is sensitive, not
 * extractable and not a token object; its value cannot be read. Evicted
 * objects are destroyed; destroy leaves none behind. */
static void hsm_party_keys_stay_inside(void **state)
{
	struct fx *f = *state;
	CK_OBJECT_HANDLE h[64];
	struct kms_crypto_stats st;
	struct kms_ckey *k;
	unsigned n;

	assert_int_equal(session_keys(f, h, 64), 0);
	for (unsigned i = 0; i < NPARTY; i++) {
		assert_int_equal(f->ops->key_get(f->st, f->blob[i], KMS_KEY_PARTY,
						 &k), KMS_OK);
		f->ops->key_release(f->st, k);
	}
	f->ops->stats(f->st, &st);
	n = session_keys(f, h, 64);
	assert_int_equal(n, st.cached);
	assert_int_equal(n, 16); /* 24 evicted objects were destroyed */
	for (unsigned i = 0; i < n; i++) {
		CK_BBOOL sens = CK_FALSE, extr = CK_TRUE, tok = CK_TRUE,
			 never = CK_FALSE;
		CK_ATTRIBUTE a[] = {
			{ CKA_SENSITIVE, &sens, sizeof(sens) },
			{ CKA_EXTRACTABLE, &extr, sizeof(extr) },
			{ CKA_TOKEN, &tok, sizeof(tok) },
			{ CKA_NEVER_EXTRACTABLE, &never, sizeof(never) },
		};
		uint8_t val[32];
		CK_ATTRIBUTE v = { CKA_VALUE, val, sizeof(val) };

		assert_int_equal(f->s->p11->C_GetAttributeValue(f->s->h, h[i], a, 4),
				 CKR_OK);
		assert_true(sens);
		assert_false(extr);
		assert_false(tok);
		assert_int_equal(f->s->p11->C_GetAttributeValue(f->s->h, h[i], &v, 1),
				 CKR_ATTRIBUTE_SENSITIVE);
	}
	f->ops->destroy(f->st);
	f->st = NULL;
	assert_int_equal(session_keys(f, h, 64), 0);
}

static void fwd_counts(struct kms_p11fwd_counts *c)
{
	void *dl = dlopen(KMS_P11FWD_SO, RTLD_NOW | RTLD_NOLOAD);
	void (*get)(struct kms_p11fwd_counts *);

	assert_non_null(dl);
	*(void **)&get = dlsym(dl, "kms_p11fwd_counts");
	assert_non_null(get);
	get(c);
	dlclose(dl);
}

/* Seen from the module's side: every party key was unwrapped into a
 * non-extractable object and no CKA_VALUE of such an object was ever
 * asked for, while tokens were opened, boxes sealed and K made. The
 * detector works: a read the test makes itself is seen. */
static void hsm_never_reads_party_values(void **state)
{
	struct fx *f = *state;
	struct kms_p11fwd_counts c0, c1, c2;
	struct kms_ckey *k[6];
	uint8_t iv[12] = { 7 }, pt[40] = { 1 }, ct[40], tag[16];
	uint8_t kblob[KMS_HSM_BLOB_LEN], box[32], val[32];
	CK_OBJECT_HANDLE h[64];
	CK_ATTRIBUTE v = { CKA_VALUE, val, sizeof(val) };

	fwd_counts(&c0);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(f->ops->key_get(f->st, f->blob[i], KMS_KEY_PARTY,
						 &k[i]), KMS_OK);
		assert_int_equal(f->ops->seal(f->st, k[i], iv, NULL, 0, pt,
					      sizeof(pt), ct, tag), KMS_OK);
		assert_int_equal(f->ops->open(f->st, k[i], iv, NULL, 0, ct,
					      sizeof(ct), tag, pt), KMS_OK);
	}
	assert_int_equal(f->ops->key_new(f->st, kblob, &k[5]), KMS_OK);
	assert_int_equal(f->ops->seal_key(f->st, k[0], k[5], iv, NULL, 0, box,
					  tag), KMS_OK);
	fwd_counts(&c1);
	assert_int_equal(c1.unwraps_nonextractable - c0.unwraps_nonextractable, 5);
	assert_int_equal(c1.value_reads_nonextractable, 0);
	assert_int_equal(c1.live_nonextractable, 5);
	for (unsigned i = 0; i < 6; i++)
		f->ops->key_release(f->st, k[i]);
	/* The detector: one read of a party key's value, refused and seen. */
	assert_true(session_keys(f, h, 64) >= 1);
	assert_int_equal(f->s->p11->C_GetAttributeValue(f->s->h, h[0], &v, 1),
			 CKR_ATTRIBUTE_SENSITIVE);
	fwd_counts(&c2);
	assert_int_equal(c2.value_reads_nonextractable, 1);
	f->ops->destroy(f->st);
	f->st = NULL;
	fwd_counts(&c2);
	assert_int_equal(c2.live_nonextractable, 0);
}

/* K is only ever a keybox's content and a party key never is: misuse of
 * either is refused, not served. */
static void hsm_kinds_kept_apart(void **state)
{
	struct fx *f = *state;
	struct kms_ckey *ka = NULL, *k = NULL;
	uint8_t iv[12] = { 1 }, ct[32], tag[16], kblob[KMS_HSM_BLOB_LEN];

	assert_int_equal(f->ops->key_get(f->st, f->blob[0], KMS_KEY_PARTY, &ka), KMS_OK);
	assert_int_equal(f->ops->key_new(f->st, kblob, &k), KMS_OK);
	assert_int_equal(f->ops->seal(f->st, k, iv, NULL, 0, ct, 16, ct, tag),
			 KMS_ERR_CRYPTO);
	assert_int_equal(f->ops->open(f->st, k, iv, NULL, 0, ct, 16, tag, ct),
			 KMS_ERR_CRYPTO);
	assert_int_equal(f->ops->seal_key(f->st, ka, ka, iv, NULL, 0, ct, tag),
			 KMS_ERR_CRYPTO);
	assert_int_equal(f->ops->seal_key(f->st, k, k, iv, NULL, 0, ct, tag),
			 KMS_ERR_CRYPTO);
	assert_int_equal(f->ops->seal_key(f->st, ka, k, iv, NULL, 0, ct, tag),
			 KMS_OK);
	f->ops->key_release(f->st, k);
	f->ops->key_release(f->st, ka);
}

/* A refused tag costs the failure path's probe, a good one 2 calls. */
static void hsm_calls_per_op(void **state)
{
	struct fx *f = *state;
	struct kms_ckey *ka = NULL;
	uint8_t iv[12], pt[30], ct[30], tag[16];
	uint64_t c0, c1, c2;

	RAND_bytes(iv, sizeof(iv));
	RAND_bytes(pt, sizeof(pt));
	assert_int_equal(f->ops->key_get(f->st, f->blob[0], KMS_KEY_PARTY, &ka), KMS_OK);
	c0 = kms_hsm_session_calls(f->s);
	assert_int_equal(f->ops->seal(f->st, ka, iv, NULL, 0, pt, sizeof(pt),
				      ct, tag), KMS_OK);
	assert_int_equal(f->ops->open(f->st, ka, iv, NULL, 0, ct, sizeof(ct),
				      tag, pt), KMS_OK);
	c1 = kms_hsm_session_calls(f->s);
	assert_int_equal(c1 - c0, 4);
	tag[0] ^= 1;
	assert_int_equal(f->ops->open(f->st, ka, iv, NULL, 0, ct, sizeof(ct),
				      tag, pt), KMS_ERR_AUTH);
	c2 = kms_hsm_session_calls(f->s);
	assert_true(c2 - c1 >= 2 && c2 - c1 <= 7);
	f->ops->key_release(f->st, ka);
}

/* ---------------------------------------------- offload + ENGINE */

static long engine_finals(struct fx *f)
{
	long n = -1;

	assert_int_equal(ENGINE_ctrl_cmd(f->engine, "GET_FINALS", 0, &n, NULL, 0), 1);
	return n;
}

/* The engine does the work: its count of finished operations moves by
 * exactly the seals and opens made (the results still match OpenSSL's). */
static void engine_does_the_aead(void **state)
{
	struct fx *f = *state;
	long n0 = engine_finals(f);

	gcm_matches_openssl(state);
	/* seal, open, seal_key of a new K, seal_key of the same K again */
	assert_int_equal(engine_finals(f) - n0, 4);
	tampering_refused(state);
	/* seal + 4 refused opens + 1 with the wrong key + 1 good open */
	assert_int_equal(engine_finals(f) - n0, 4 + 7);
}

/* No silent fallback: an engine that does not load, or loads without
 * AES-256-GCM, is a configuration error; so is an engine in hsm mode. */
static void engine_refusals(void **state)
{
	struct kms_engine_config ec = { .crypto_mode = "hsm", .cache_keys = 64,
					.nworkers = 1, .batch_max = 16 };
	struct kms_engine *eng = NULL;
	void *e = NULL;

	(void)state;
	assert_int_equal(kms_crypto_engine_load("/nonexistent/engine.so", &e),
			 KMS_ERR_CONFIG);
	assert_int_equal(kms_crypto_engine_load("no-such-engine-kms", &e),
			 KMS_ERR_CONFIG);
	assert_int_equal(kms_crypto_engine_load(KMS_P11_MODULE_SO, &e),
			 KMS_ERR_CONFIG); /* a .so, but no engine */
	setenv("KMS_TEST_ENGINE_NO_GCM", "1", 1);
	assert_int_equal(kms_crypto_engine_load(KMS_TEST_ENGINE_SO, &e),
			 KMS_ERR_CONFIG);
	unsetenv("KMS_TEST_ENGINE_NO_GCM");
	assert_null(e);
	assert_int_equal(kms_crypto_engine_load(KMS_TEST_ENGINE_SO, &e), KMS_OK);
	kms_crypto_engine_release(e);
	ec.crypto_engine = KMS_TEST_ENGINE_SO;
	assert_int_equal(kms_engine_create(&ec, NULL, NULL, &eng), KMS_ERR_CONFIG);
	assert_null(eng);
}

int main(void)
{
#define BOTH(t) cmocka_unit_test_setup_teardown(t, setup_offload, teardown), \
		cmocka_unit_test_setup_teardown(t, setup_hsm, teardown)
	const struct CMUnitTest tests[] = {
		BOTH(gcm_matches_openssl),
		BOTH(tampering_refused),
		BOTH(bad_blob_refused),
		BOTH(cache_bounded),
		BOTH(cache_busy_when_pinned),
		cmocka_unit_test_setup_teardown(hsm_party_keys_stay_inside,
						setup_hsm, teardown),
		cmocka_unit_test_setup_teardown(hsm_kinds_kept_apart, setup_hsm,
						teardown),
		cmocka_unit_test_setup_teardown(hsm_calls_per_op, setup_hsm,
						teardown),
		cmocka_unit_test_setup_teardown(hsm_never_reads_party_values,
						setup_hsm_fwd, teardown),
		cmocka_unit_test_setup_teardown(engine_does_the_aead, setup_engine,
						teardown),
		cmocka_unit_test(engine_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
