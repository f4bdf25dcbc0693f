/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_crypto.h
 * @brief The engine's AEAD and key cache, behind a table of functions.
 *
 * A crypto mode is a struct kms_crypto_ops. The engine never touches key
 * bytes itself: it asks the mode for a key handle by its wrapped blob,
 * seals and opens with handles, and has the mode seal one key under
 * another (the Ea(K) / Eb(K) keybox). Two modes:
 *
 *  - "offload": the HSM unwraps a blob into locked memory on a cache miss;
 *    AES-256-GCM runs through OpenSSL EVP with one encrypt and one decrypt
 *    context per cached key (setting the key per operation halves the rate),
 *    optionally through an OpenSSL ENGINE (struct kms_crypto_conf).
 *  - "hsm": every AES-256-GCM operation runs inside the HSM (CKM_AES_GCM).
 *    Party keys are unwrapped into session objects the host cannot read
 *    (sensitive, non-extractable) and cached by handle. K, the media key
 *    that by design leaves the KMS boxed for A and B, is the plaintext of
 *    the box's C_Encrypt, so it sits in locked host memory like in offload
 *    mode: PKCS#11 v2.40 modules without CKM_AES_GCM wrapping (SoftHSM2)
 *    cannot encrypt a key object under GCM. See docs/ARCHITECTURE.md.
 *
 * Keys are identified by their wrapped blob: the same blob is the same key,
 * and a rotated or re-enrolled key has a new blob, so the cache needs no
 * invalidation. Whether a party may still use its key is decided by the
 * engine from the keystore record, on every request.
 *
 * One instance per worker; not thread-safe; no locks.
 */
#ifndef KMS_CRYPTO_H
#define KMS_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "kms_hsm.h"

struct kms_ckey; /* a cached key; pinned between get and release */

/** What a key is used for: a mode may hold the two kinds differently. */
enum kms_key_kind {
	KMS_KEY_PARTY = 0, /**< Ka, Kb, Kas: opens tokens, seals keyboxes */
	KMS_KEY_MEDIA,     /**< K: only ever the inner key of a keybox */
};

struct kms_crypto_conf {
	uint32_t capacity;  /**< keys in the per-worker cache */
	void *ossl_engine;  /**< offload: an initialised OpenSSL ENGINE that
	                         implements AES-256-GCM, or NULL */
};

struct kms_crypto_stats {
	uint64_t hits, misses, evictions, new_keys, unwrap_failures;
	uint64_t pool_hits;     /**< new keys served from the pre-made pool */
	uint32_t cached, capacity;
};

struct kms_crypto_ops {
	const char *name;
	/** Per-worker instance on the worker's own HSM session. */
	int (*create)(struct kms_hsm_session *hsm,
		      const struct kms_crypto_conf *conf, void **state);
	void (*destroy)(void *state);
	/** Pin the key wrapped in @p blob, unwrapping it through the HSM on a
	 *  miss. @return KMS_OK, KMS_ERR_AUTH (blob does not unwrap),
	 *  KMS_ERR_HSM, KMS_ERR_BUSY (every cached key is pinned). */
	int (*key_get)(void *state, const uint8_t blob[KMS_HSM_BLOB_LEN],
		       enum kms_key_kind kind, struct kms_ckey **out);
	/** Make a fresh K (KMS_KEY_MEDIA) with the HSM's RNG, pinned; its
	 *  blob in @p blob. */
	int (*key_new)(void *state, uint8_t blob[KMS_HSM_BLOB_LEN],
		       struct kms_ckey **out);
	/** Unpin. NULL is a no-op. */
	void (*key_release)(void *state, struct kms_ckey *k);
	/** AES-256-GCM under party key @p k; @return KMS_OK, KMS_ERR_CRYPTO
	 *  (KMS_ERR_HSM in hsm mode). */
	int (*seal)(void *state, struct kms_ckey *k, const uint8_t iv[12],
		    const uint8_t *ad, size_t ad_len, const uint8_t *pt,
		    size_t pt_len, uint8_t *ct, uint8_t tag[16]);
	/** @return KMS_OK, KMS_ERR_AUTH (tag), KMS_ERR_CRYPTO, KMS_ERR_HSM. */
	int (*open)(void *state, struct kms_ckey *k, const uint8_t iv[12],
		    const uint8_t *ad, size_t ad_len, const uint8_t *ct,
		    size_t ct_len, const uint8_t tag[16], uint8_t *pt);
	/** Seal the 32 key bytes of media key @p inner under party key
	 *  @p outer (the keybox). */
	int (*seal_key)(void *state, struct kms_ckey *outer,
			struct kms_ckey *inner, const uint8_t iv[12],
			const uint8_t *ad, size_t ad_len, uint8_t ct[32],
			uint8_t tag[16]);
	void (*stats)(void *state, struct kms_crypto_stats *out);
	/** Idle work: pre-generate up to @p max fresh keys for key_new so a
	 *  DEPOSIT that needs a new K finds one without an HSM round trip.
	 *  May be NULL. @return keys made. */
	unsigned (*refill)(void *state, unsigned max);
};

/** The mode table for a name ("offload", "hsm"), or NULL. */
const struct kms_crypto_ops *kms_crypto_find(const char *name);

/**
 * Load an OpenSSL ENGINE for offload mode: @p spec is an engine id
 * (ENGINE_by_id: built in, or found in $OPENSSL_ENGINES) or, when it
 * contains a '/', the path of a dynamic engine's shared object. The engine
 * is initialised and must implement AES-256-GCM.
 * @return KMS_OK, or KMS_ERR_CONFIG with the reason logged (it does not
 *         load, does not initialise, or lacks AES-256-GCM): never a
 *         silent fallback to OpenSSL's own cipher.
 */
int kms_crypto_engine_load(const char *spec, void **out);
/** ENGINE_finish + ENGINE_free. NULL is a no-op. */
void kms_crypto_engine_release(void *engine);

#endif /* KMS_CRYPTO_H */
