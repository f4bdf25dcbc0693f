// SPDX-License-Identifier: Apache-2.0
/*
 * hsm crypto mode: every AES-256-GCM operation runs inside the HSM.
 *
 * Party keys (Ka, Kb, Kas) are unwrapped into session objects of the
 * worker's own session that the host can use but never read or export
 * (kms_hsm_key_load), kept in a keycache by handle; eviction destroys the
 * object. A token is opened with C_DecryptInit + C_Decrypt, a keybox sealed
 * with C_EncryptInit + C_Encrypt: 4 PKCS#11 calls per request on a cache
 * hit, which PKCS#11 v2.40 offers no way to batch (see
 * docs/ARCHITECTURE.md).
 *
 * K, the media key, is what the keybox carries out to A and B: it is the
 * plaintext of the box's C_Encrypt, so it is held in locked host memory,
 * cached and pre-made exactly as offload mode does. This mode therefore
 * keeps an offload instance for its media keys and hands the engine its
 * handles unchanged; a handle is a party key when it points into this
 * mode's own slot array.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto_priv.h"
#include "keycache.h"
#include "kms_err.h"
#include "kms_log.h"

struct pkey {
	kms_hsm_obj obj;
	int32_t idx;
	uint32_t gen;             /* session generation obj was made in */
};

struct hsmmode {
	struct kms_hsm_session *hsm;
	struct kms_keycache kc;   /* party keys */
	struct pkey *p;           /* kc.cap, indexed like the slots */
	void *media;              /* an offload instance: K */
	uint64_t unload_failures;
};

static const struct kms_crypto_ops *const media_ops = &kms_crypto_offload_ops;

static struct pkey *party_of(const struct hsmmode *h, struct kms_ckey *k)
{
	uintptr_t a = (uintptr_t)k, lo = (uintptr_t)h->p;

	if (a < lo || a >= (uintptr_t)(h->p + h->kc.cap))
		return NULL;
	return (struct pkey *)(void *)k;
}

static void evict(void *arg, uint32_t idx)
{
	struct hsmmode *h = arg;

	/* An object of a session since reopened is gone already. */
	if (h->p[idx].gen == kms_hsm_session_generation(h->hsm) &&
	    kms_hsm_key_unload(h->hsm, h->p[idx].obj))
		h->unload_failures++;
	h->p[idx].obj = 0;
}

/* A party key's cache miss: unwrapped into a session object. */
static int load(void *arg, uint32_t idx, const uint8_t *blob)
{
	struct hsmmode *h = arg;
	int rc = kms_hsm_key_load(h->hsm, blob, &h->p[idx].obj);

	h->p[idx].gen = kms_hsm_session_generation(h->hsm);
	return rc;
}

static int key_get(void *state, const uint8_t blob[KMS_HSM_BLOB_LEN],
		   enum kms_key_kind kind, struct kms_ckey **out)
{
	struct hsmmode *h = state;
	int32_t idx;
	int rc;

	if (kind == KMS_KEY_MEDIA)
		return media_ops->key_get(h->media, blob, kind, out);
	/* A lost session is reopened first, so the generation below says
	 * whether a cached object still exists. */
	if (kms_hsm_session_ready(h->hsm))
		return KMS_ERR_HSM;
	rc = kms_kc_fetch(&h->kc, blob, load, &idx);
	if (rc != KMS_OK)
		return rc;
	/* Cached in a session the HSM lost since: make the object again. */
	if (h->p[idx].gen != kms_hsm_session_generation(h->hsm)) {
		rc = load(h, (uint32_t)idx, blob);
		if (rc) {
			kms_kc_unpin(&h->kc, idx);
			return rc;
		}
	}
	*out = (struct kms_ckey *)(void *)&h->p[idx];
	return KMS_OK;
}

static int key_new(void *state, uint8_t blob[KMS_HSM_BLOB_LEN],
		   struct kms_ckey **out)
{
	struct hsmmode *h = state;

	return media_ops->key_new(h->media, blob, out);
}

static void key_release(void *state, struct kms_ckey *k)
{
	struct hsmmode *h = state;
	struct pkey *p;

	if (!k)
		return;
	p = party_of(h, k);
	if (p)
		kms_kc_unpin(&h->kc, p->idx);
	else
		media_ops->key_release(h->media, k);
}

static int seal(void *state, struct kms_ckey *k, const uint8_t iv[12],
		const uint8_t *ad, size_t ad_len, const uint8_t *pt,
		size_t pt_len, uint8_t *ct, uint8_t tag[16])
{
	struct hsmmode *h = state;
	struct pkey *p = party_of(h, k);

	if (!p)
		return KMS_ERR_CRYPTO; /* K seals nothing */
	return kms_hsm_gcm_seal(h->hsm, p->obj, iv, ad, ad_len, pt, pt_len,
				ct, tag) ? KMS_ERR_HSM : KMS_OK;
}

static int open_(void *state, struct kms_ckey *k, const uint8_t iv[12],
		 const uint8_t *ad, size_t ad_len, const uint8_t *ct,
		 size_t ct_len, const uint8_t tag[16], uint8_t *pt)
{
	struct hsmmode *h = state;
	struct pkey *p = party_of(h, k);
	int rc;

	if (!p)
		return KMS_ERR_CRYPTO;
	rc = kms_hsm_gcm_open(h->hsm, p->obj, iv, ad, ad_len, ct, ct_len, tag,
			      pt);
	return rc == KMS_OK || rc == KMS_ERR_AUTH ? rc : KMS_ERR_HSM;
}

static int seal_key(void *state, struct kms_ckey *outer, struct kms_ckey *inner,
		    const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
		    uint8_t ct[32], uint8_t tag[16])
{
	struct hsmmode *h = state;

	if (party_of(h, inner))
		return KMS_ERR_CRYPTO; /* a party key never leaves */
	return seal(state, outer, iv, ad, ad_len,
		    kms_crypto_offload_key(inner), KMS_HSM_KEY_LEN, ct, tag);
}

static unsigned refill(void *state, unsigned max)
{
	struct hsmmode *h = state;

	return media_ops->refill(h->media, max);
}

static void destroy(void *state)
{
	struct hsmmode *h = state;

	if (!h)
		return;
	/* Session objects die with the session too; destroy them now so
	 * none outlives the worker. */
	for (uint32_t i = 0; h->p && i < h->kc.cap; i++)
		if (h->kc.s[i].used)
			evict(h, i);
	free(h->p);
	kms_kc_fini(&h->kc);
	media_ops->destroy(h->media);
	free(h);
}

static int create(struct kms_hsm_session *hsm,
		  const struct kms_crypto_conf *conf, void **state)
{
	struct kms_crypto_conf mconf = { .capacity = conf->capacity };
	struct hsmmode *h;
	int rc;

	if (conf->ossl_engine) {
		KMS_ERR("crypto_mode hsm: an OpenSSL engine has no use here "
			"(every AEAD runs in the HSM): remove crypto.engine");
		return KMS_ERR_CONFIG;
	}
	if (!kms_hsm_has_gcm(hsm)) {
		KMS_ERR("crypto_mode hsm: the token offers no CKM_AES_GCM "
			"encrypt/decrypt with 256-bit keys");
		return KMS_ERR_CONFIG;
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		return KMS_ERR_NOMEM;
	h->hsm = hsm;
	rc = kms_kc_init(&h->kc, conf->capacity, evict, h);
	if (rc)
		goto err;
	rc = KMS_ERR_NOMEM;
	h->p = calloc(h->kc.cap, sizeof(*h->p));
	if (!h->p)
		goto err;
	for (uint32_t i = 0; i < h->kc.cap; i++)
		h->p[i].idx = (int32_t)i;
	rc = media_ops->create(hsm, &mconf, &h->media);
	if (rc)
		goto err;
	*state = h;
	return KMS_OK;
err:
	destroy(h);
	return rc;
}

static void stats(void *state, struct kms_crypto_stats *out)
{
	struct hsmmode *h = state;

	media_ops->stats(h->media, out);
	kms_crypto_add_cache_stats(&h->kc, out);
}

const struct kms_crypto_ops kms_crypto_hsm_ops = {
	.name = "hsm",
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
