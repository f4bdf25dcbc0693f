// SPDX-License-Identifier: Apache-2.0
/*
 * Offload crypto mode: keys unwrapped by the HSM into locked memory, AEAD
 * through OpenSSL EVP with contexts cached per key.
 *
 * The cache is a fixed array of entries with CLOCK replacement, indexed by
 * a chained hash of the wrapped blob. Nothing is allocated per request:
 * EVP contexts are allocated once per entry at create time and re-keyed on
 * replacement. Raw key bytes live in a kms_secmem arena (mlock, no dump).
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "crypto_priv.h"
#include "kms_err.h"
#include "kms_log.h"
#include "kms_secmem.h"

struct kms_ckey {
	uint8_t blob[KMS_HSM_BLOB_LEN];
	uint8_t *key;            /* KMS_HSM_KEY_LEN bytes in the secmem arena */
	EVP_CIPHER_CTX *enc, *dec;
	int32_t next;            /* hash chain, -1 = end */
	uint32_t pins;
	uint8_t used;            /* slot holds a key */
	uint8_t ref;             /* CLOCK reference bit */
	uint8_t keyed;           /* contexts carry this key */
};

#define POOL_MAX 64

/* A pre-made K: made by the HSM while the worker was idle. */
struct pooled {
	uint8_t *key;                    /* in the pool's secmem arena */
	uint8_t blob[KMS_HSM_BLOB_LEN];
};

struct offload {
	struct kms_hsm_session *hsm;
	struct kms_secmem *mem, *pool_mem;
	struct pooled pool[POOL_MAX];
	unsigned npool;
	struct kms_ckey *e;
	int32_t *bucket;
	uint32_t cap, nbucket, hand, cached;
	struct kms_crypto_stats st;
};

static uint32_t blob_hash(const uint8_t *b, uint32_t nbucket)
{
	/* The blob is ciphertext under the KEK: its bytes are uniform. */
	uint32_t h;

	memcpy(&h, b + 8, sizeof(h));
	return h & (nbucket - 1);
}

static void unlink_entry(struct offload *o, int32_t idx)
{
	int32_t *pp = &o->bucket[blob_hash(o->e[idx].blob, o->nbucket)];

	while (*pp != -1) {
		if (*pp == idx) {
			*pp = o->e[idx].next;
			return;
		}
		pp = &o->e[*pp].next;
	}
}

static void entry_clear(struct offload *o, int32_t idx)
{
	struct kms_ckey *k = &o->e[idx];

	unlink_entry(o, idx);
	explicit_bzero(k->key, KMS_HSM_KEY_LEN);
	/* Reset wipes the key schedule OpenSSL holds for the context. */
	EVP_CIPHER_CTX_reset(k->enc);
	EVP_CIPHER_CTX_reset(k->dec);
	k->used = k->keyed = k->ref = 0;
	o->cached--;
	o->st.evictions++;
}

/* CLOCK: the first unpinned entry whose reference bit is clear. */
static int32_t victim(struct offload *o)
{
	for (uint32_t spins = 0; spins < 2 * o->cap + 1; spins++) {
		uint32_t i = o->hand;
		struct kms_ckey *k = &o->e[i];

		o->hand = (o->hand + 1) % o->cap;
		if (!k->used)
			return (int32_t)i;
		if (k->pins)
			continue;
		if (k->ref) {
			k->ref = 0;
			continue;
		}
		entry_clear(o, (int32_t)i);
		return (int32_t)i;
	}
	return -1;
}

static int32_t lookup(struct offload *o, const uint8_t *blob)
{
	for (int32_t i = o->bucket[blob_hash(blob, o->nbucket)]; i != -1;
	     i = o->e[i].next)
		if (!memcmp(o->e[i].blob, blob, KMS_HSM_BLOB_LEN))
			return i;
	return -1;
}

static void insert(struct offload *o, int32_t idx, const uint8_t *blob)
{
	struct kms_ckey *k = &o->e[idx];
	uint32_t h = blob_hash(blob, o->nbucket);

	memcpy(k->blob, blob, KMS_HSM_BLOB_LEN);
	k->used = 1;
	k->ref = 1;
	k->pins = 1;
	k->keyed = 0;
	k->next = o->bucket[h];
	o->bucket[h] = idx;
	o->cached++;
}

static int key_get(void *state, const uint8_t blob[KMS_HSM_BLOB_LEN],
		   struct kms_ckey **out)
{
	struct offload *o = state;
	int32_t idx = lookup(o, blob);
	int rc;

	if (idx >= 0) {
		o->st.hits++;
		o->e[idx].ref = 1;
		o->e[idx].pins++;
		*out = &o->e[idx];
		return KMS_OK;
	}
	o->st.misses++;
	idx = victim(o);
	if (idx < 0)
		return KMS_ERR_BUSY;
	rc = kms_hsm_unwrap(o->hsm, blob, o->e[idx].key);
	if (rc) {
		explicit_bzero(o->e[idx].key, KMS_HSM_KEY_LEN);
		if (rc == KMS_ERR_AUTH)
			o->st.unwrap_failures++;
		return rc;
	}
	insert(o, idx, blob);
	*out = &o->e[idx];
	return KMS_OK;
}

static int key_new(void *state, uint8_t blob[KMS_HSM_BLOB_LEN],
		   struct kms_ckey **out)
{
	struct offload *o = state;
	uint8_t tmp[KMS_HSM_BLOB_LEN];
	int32_t idx = victim(o);
	int rc;

	if (idx < 0)
		return KMS_ERR_BUSY;
	if (o->npool) {
		/* A key made while idle: no HSM call on the request path. */
		struct pooled *p = &o->pool[--o->npool];

		memcpy(o->e[idx].key, p->key, KMS_HSM_KEY_LEN);
		memcpy(tmp, p->blob, sizeof(tmp));
		explicit_bzero(p->key, KMS_HSM_KEY_LEN);
		o->st.pool_hits++;
		rc = KMS_OK;
	} else {
		rc = kms_hsm_new_key(o->hsm, o->e[idx].key, tmp);
	}
	if (rc) {
		explicit_bzero(o->e[idx].key, KMS_HSM_KEY_LEN);
		return rc;
	}
	insert(o, idx, tmp);
	memcpy(blob, tmp, sizeof(tmp));
	o->st.new_keys++;
	*out = &o->e[idx];
	return KMS_OK;
}

static void key_release(void *state, struct kms_ckey *k)
{
	(void)state;
	if (k && k->pins)
		k->pins--;
}

/* Key the two contexts on first use as a party key. */
static int ensure_keyed(struct kms_ckey *k)
{
	if (k->keyed)
		return KMS_OK;
	if (EVP_EncryptInit_ex(k->enc, EVP_aes_256_gcm(), NULL, k->key, NULL) != 1 ||
	    EVP_DecryptInit_ex(k->dec, EVP_aes_256_gcm(), NULL, k->key, NULL) != 1)
		return KMS_ERR_CRYPTO;
	k->keyed = 1;
	return KMS_OK;
}

static int seal(void *state, struct kms_ckey *k, const uint8_t iv[12],
		const uint8_t *ad, size_t ad_len, const uint8_t *pt,
		size_t pt_len, uint8_t *ct, uint8_t tag[16])
{
	int n;

	(void)state;
	if (ensure_keyed(k))
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

	(void)state;
	if (ensure_keyed(k))
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

static unsigned refill(void *state, unsigned max)
{
	struct offload *o = state;
	unsigned made = 0;

	while (made < max && o->npool < POOL_MAX) {
		struct pooled *p = &o->pool[o->npool];

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
	for (uint32_t i = 0; o->e && i < o->cap; i++) {
		EVP_CIPHER_CTX_free(o->e[i].enc); /* cleanses the schedule */
		EVP_CIPHER_CTX_free(o->e[i].dec);
	}
	kms_secmem_destroy(o->mem); /* wipes every key */
	free(o->e);
	free(o->bucket);
	free(o);
}

static int create(struct kms_hsm_session *hsm, uint32_t capacity, void **state)
{
	struct offload *o = calloc(1, sizeof(*o));
	int rc = KMS_ERR_NOMEM;

	if (!o)
		return KMS_ERR_NOMEM;
	o->hsm = hsm;
	o->cap = capacity < 16 ? 16 : capacity;
	for (o->nbucket = 16; o->nbucket < o->cap; o->nbucket <<= 1)
		;
	o->e = calloc(o->cap, sizeof(*o->e));
	o->bucket = malloc(o->nbucket * sizeof(*o->bucket));
	if (!o->e || !o->bucket)
		goto err;
	rc = kms_secmem_create(KMS_HSM_KEY_LEN, o->cap, &o->mem);
	if (rc)
		goto err;
	rc = kms_secmem_create(KMS_HSM_KEY_LEN, POOL_MAX, &o->pool_mem);
	if (rc)
		goto err;
	for (unsigned i = 0; i < POOL_MAX; i++)
		o->pool[i].key = kms_secmem_alloc(o->pool_mem);
	rc = KMS_ERR_NOMEM;
	if (!o->pool[POOL_MAX - 1].key)
		goto err;
	rc = KMS_ERR_NOMEM;
	for (uint32_t i = 0; i < o->nbucket; i++)
		o->bucket[i] = -1;
	for (uint32_t i = 0; i < o->cap; i++) {
		o->e[i].key = kms_secmem_alloc(o->mem);
		o->e[i].enc = EVP_CIPHER_CTX_new();
		o->e[i].dec = EVP_CIPHER_CTX_new();
		o->e[i].next = -1;
		if (!o->e[i].key || !o->e[i].enc || !o->e[i].dec)
			goto err;
	}
	o->st.capacity = o->cap;
	*state = o;
	return KMS_OK;
err:
	destroy(o);
	return rc;
}

static void stats(void *state, struct kms_crypto_stats *out)
{
	struct offload *o = state;

	*out = o->st;
	out->cached = o->cached;
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
