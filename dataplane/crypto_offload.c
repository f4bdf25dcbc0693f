// SPDX-License-Identifier: Apache-2.0
/*
 * Offload crypto mode: keys unwrapped by the HSM into locked memory, AEAD
 * through OpenSSL EVP with contexts cached per key, optionally through an
 * OpenSSL ENGINE.
 *
 * The cache is a keycache (CLOCK, found by blob) whose slots carry the key
 * bytes and two EVP contexts. Nothing is allocated per request: contexts
 * are allocated once per slot at create time and re-keyed on replacement.
 * Raw key bytes live in a kms_secmem arena (mlock, no dump).
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "crypto_priv.h"
#include "keycache.h"
#include "kms_err.h"
#include "kms_log.h"
#include "kms_secmem.h"

struct kms_ckey {
	int32_t idx;             /* its keycache slot */
	uint8_t *key;            /* KMS_HSM_KEY_LEN bytes in the secmem arena */
	EVP_CIPHER_CTX *enc, *dec;
	uint8_t keyed;           /* contexts carry this key */
};

/* A pre-made K: made by the HSM while the worker was idle. */
struct pooled {
	uint8_t *key;                    /* in the pool's secmem arena */
	uint8_t blob[KMS_HSM_BLOB_LEN];
	uint32_t epoch;                  /* KEK epoch its blob was made in */
};

struct offload {
	struct kms_hsm_session *hsm;
	ENGINE *engine;                  /* NULL: OpenSSL's own AES-GCM */
	struct kms_secmem *mem, *pool_mem;
	struct pooled pool[KMS_CRYPTO_POOL_MAX];
	unsigned npool;
	struct kms_keycache kc;
	struct kms_ckey *e;              /* kc.cap, indexed like the slots */
	uint64_t new_keys, pool_hits;
};

static void evict(void *arg, uint32_t idx)
{
	struct kms_ckey *k = &((struct offload *)arg)->e[idx];

	explicit_bzero(k->key, KMS_HSM_KEY_LEN);
	/* Reset wipes the key schedule OpenSSL (or the engine) holds. */
	EVP_CIPHER_CTX_reset(k->enc);
	EVP_CIPHER_CTX_reset(k->dec);
	k->keyed = 0;
}

/* A cache miss: the HSM unwraps the blob into the slot's locked bytes. */
static int load(void *arg, uint32_t idx, const uint8_t *blob)
{
	struct kms_ckey *k = &((struct offload *)arg)->e[idx];
	int rc = kms_hsm_unwrap(((struct offload *)arg)->hsm, blob, k->key);

	if (rc)
		explicit_bzero(k->key, KMS_HSM_KEY_LEN);
	return rc;
}

static int key_get(void *state, const uint8_t blob[KMS_HSM_BLOB_LEN],
		   enum kms_key_kind kind, struct kms_ckey **out)
{
	struct offload *o = state;
	int32_t idx;
	int rc;

	(void)kind; /* both kinds are host keys in this mode */
	rc = kms_kc_fetch(&o->kc, blob, load, &idx);
	if (rc == KMS_OK)
		*out = &o->e[idx];
	return rc;
}

static int key_new(void *state, uint8_t blob[KMS_HSM_BLOB_LEN],
		   struct kms_ckey **out)
{
	struct offload *o = state;
	uint8_t tmp[KMS_HSM_BLOB_LEN];
	int32_t idx = kms_kc_victim(&o->kc);
	int rc;

	if (idx < 0)
		return KMS_ERR_BUSY;
	/* A KEK rotation began or ended since these were made: their blobs
	 * may be under a KEK that is going away. Never store them. */
	while (o->npool && o->pool[o->npool - 1].epoch !=
			   kms_hsm_kek_epoch(o->hsm))
		explicit_bzero(o->pool[--o->npool].key, KMS_HSM_KEY_LEN);
	if (o->npool) {
		/* A key made while idle: no HSM call on the request path. */
		struct pooled *p = &o->pool[--o->npool];

		memcpy(o->e[idx].key, p->key, KMS_HSM_KEY_LEN);
		memcpy(tmp, p->blob, sizeof(tmp));
		explicit_bzero(p->key, KMS_HSM_KEY_LEN);
		o->pool_hits++;
		rc = KMS_OK;
	} else {
		rc = kms_hsm_new_key(o->hsm, o->e[idx].key, tmp);
	}
	if (rc) {
		explicit_bzero(o->e[idx].key, KMS_HSM_KEY_LEN);
		return rc;
	}
	kms_kc_insert(&o->kc, idx, tmp);
	memcpy(blob, tmp, sizeof(tmp));
	o->new_keys++;
	*out = &o->e[idx];
	return KMS_OK;
}

static void key_release(void *state, struct kms_ckey *k)
{
	if (k)
		kms_kc_unpin(&((struct offload *)state)->kc, k->idx);
}

/* Key the two contexts on first use as a party key. */
static int ensure_keyed(struct offload *o, struct kms_ckey *k)
{
	if (k->keyed)
		return KMS_OK;
	if (EVP_EncryptInit_ex(k->enc, EVP_aes_256_gcm(), o->engine, k->key,
			       NULL) != 1 ||
	    EVP_DecryptInit_ex(k->dec, EVP_aes_256_gcm(), o->engine, k->key,
			       NULL) != 1)
		return KMS_ERR_CRYPTO;
	k->keyed = 1;
	return KMS_OK;
}

static int seal(void *state, struct kms_ckey *k, const uint8_t iv[12],
		const uint8_t *ad, size_t ad_len, const uint8_t *pt,
		size_t pt_len, uint8_t *ct, uint8_t tag[16])
{
	int n;

	if (ensure_keyed(state, k))
		return KMS_ERR_CRYPTO;
	/* IV only: the key schedule stays in the context. */
	if (EVP_EncryptInit_ex(k->enc, NULL, NULL, NULL, iv) != 1 ||
	    EVP_EncryptUpdate(k->enc, NULL, &n, ad, (int)ad_len) != 1 ||
	    EVP_EncryptUpdate(k->enc, ct, &n, pt, (int)pt_len) != 1 ||
	    EVP_EncryptFinal_ex(k->enc, ct + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(k->enc, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
		return KMS_ERR_CRYPTO;
	return KMS_OK;
}

static int open_(void *state, struct kms_ckey *k, const uint8_t iv[12],
		 const uint8_t *ad, size_t ad_len, const uint8_t *ct,
		 size_t ct_len, const uint8_t tag[16], uint8_t *pt)
{
	int n;

	if (ensure_keyed(state, k))
		return KMS_ERR_CRYPTO;
	if (EVP_DecryptInit_ex(k->dec, NULL, NULL, NULL, iv) != 1 ||
	    EVP_DecryptUpdate(k->dec, NULL, &n, ad, (int)ad_len) != 1 ||
	    EVP_DecryptUpdate(k->dec, pt, &n, ct, (int)ct_len) != 1 ||
	    EVP_CIPHER_CTX_ctrl(k->dec, EVP_CTRL_GCM_SET_TAG, 16,
				(void *)(uintptr_t)tag) != 1)
		return KMS_ERR_CRYPTO;
	/* OpenSSL compares the tag in constant time. */
	if (EVP_DecryptFinal_ex(k->dec, pt + n, &n) != 1) {
		OPENSSL_cleanse(pt, ct_len);
		return KMS_ERR_AUTH;
	}
	return KMS_OK;
}

static int seal_key(void *state, struct kms_ckey *outer, struct kms_ckey *inner,
		    const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
		    uint8_t ct[32], uint8_t tag[16])
{
	return seal(state, outer, iv, ad, ad_len, inner->key, KMS_HSM_KEY_LEN,
		    ct, tag);
}

const uint8_t *kms_crypto_offload_key(const struct kms_ckey *k)
{
	return k->key;
}

static unsigned refill(void *state, unsigned max)
{
	struct offload *o = state;
	unsigned made = 0;

	while (made < max && o->npool < KMS_CRYPTO_POOL_MAX) {
		struct pooled *p = &o->pool[o->npool];

		p->epoch = kms_hsm_kek_epoch(o->hsm);
		if (kms_hsm_new_key(o->hsm, p->key, p->blob)) {
			explicit_bzero(p->key, KMS_HSM_KEY_LEN);
			break; /* the request path will meet the error itself */
		}
		o->npool++;
		made++;
	}
	return made;
}

static void destroy(void *state)
{
	struct offload *o = state;

	if (!o)
		return;
	kms_secmem_destroy(o->pool_mem); /* wipes the pre-made keys */
	for (uint32_t i = 0; o->e && i < o->kc.cap; i++) {
		EVP_CIPHER_CTX_free(o->e[i].enc); /* cleanses the schedule */
		EVP_CIPHER_CTX_free(o->e[i].dec);
	}
	kms_secmem_destroy(o->mem); /* wipes every key */
	free(o->e);
	kms_kc_fini(&o->kc);
	free(o);
}

static int create(struct kms_hsm_session *hsm,
		  const struct kms_crypto_conf *conf, void **state)
{
	struct offload *o = calloc(1, sizeof(*o));
	int rc = KMS_ERR_NOMEM;

	if (!o)
		return KMS_ERR_NOMEM;
	o->hsm = hsm;
	o->engine = conf->ossl_engine;
	rc = kms_kc_init(&o->kc, conf->capacity, evict, o);
	if (rc)
		goto err;
	rc = KMS_ERR_NOMEM;
	o->e = calloc(o->kc.cap, sizeof(*o->e));
	if (!o->e)
		goto err;
	rc = kms_secmem_create(KMS_HSM_KEY_LEN, o->kc.cap, &o->mem);
	if (rc)
		goto err;
	rc = kms_secmem_create(KMS_HSM_KEY_LEN, KMS_CRYPTO_POOL_MAX, &o->pool_mem);
	if (rc)
		goto err;
	rc = KMS_ERR_NOMEM;
	for (unsigned i = 0; i < KMS_CRYPTO_POOL_MAX; i++) {
		o->pool[i].key = kms_secmem_alloc(o->pool_mem);
		if (!o->pool[i].key)
			goto err;
	}
	for (uint32_t i = 0; i < o->kc.cap; i++) {
		o->e[i].idx = (int32_t)i;
		o->e[i].key = kms_secmem_alloc(o->mem);
		o->e[i].enc = EVP_CIPHER_CTX_new();
		o->e[i].dec = EVP_CIPHER_CTX_new();
		if (!o->e[i].key || !o->e[i].enc || !o->e[i].dec)
			goto err;
	}
	*state = o;
	return KMS_OK;
err:
	destroy(o);
	return rc;
}

static void stats(void *state, struct kms_crypto_stats *out)
{
	struct offload *o = state;

	memset(out, 0, sizeof(*out));
	kms_crypto_add_cache_stats(&o->kc, out);
	out->new_keys = o->new_keys;
	out->pool_hits = o->pool_hits;
}

const struct kms_crypto_ops kms_crypto_offload_ops = {
	.name = "offload",
	.create = create,
	.destroy = destroy,
	.key_get = key_get,
	.key_new = key_new,
	.key_release = key_release,
	.seal = seal,
	.open = open_,
	.seal_key = seal_key,
	.stats = stats,
	.refill = refill,
};
