/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_crypto.h
 * @brief The engine's AEAD and key cache, behind a table of functions.
 *
 * A crypto mode is a struct kms_crypto_ops. The engine never touches key
 * bytes itself: it asks the mode for a key handle by its wrapped blob,
 * seals and opens with handles, and has the mode seal one key under
 * another (the Ea(K) / Eb(K) keybox). This build has one mode:
 *
 *  - "offload": the HSM unwraps a blob into locked memory on a cache miss;
 *    AES-256-GCM runs through OpenSSL EVP with one encrypt and one decrypt
 *    context per cached key (setting the key per operation halves the rate).
 *
 * A second mode (all AEAD inside the HSM) slots in as another table.
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

struct kms_crypto_stats {
	uint64_t hits, misses, evictions, new_keys, unwrap_failures;
	uint64_t pool_hits;     /**< new keys served from the pre-made pool */
	uint32_t cached, capacity;
};

struct kms_crypto_ops {
	const char *name;
	/** Per-worker instance with a cache of @p capacity keys. */
	int (*create)(struct kms_hsm_session *hsm, uint32_t capacity, void **state);
	void (*destroy)(void *state);
	/** Pin the key wrapped in @p blob, unwrapping it through the HSM on a
	 *  miss. @return KMS_OK, KMS_ERR_AUTH (blob does not unwrap),
	 *  KMS_ERR_HSM, KMS_ERR_BUSY (every cached key is pinned). */
	int (*key_get)(void *state, const uint8_t blob[KMS_HSM_BLOB_LEN],
		       struct kms_ckey **out);
	/** Make a fresh key with the HSM's RNG, pinned; its blob in @p blob. */
	int (*key_new)(void *state, uint8_t blob[KMS_HSM_BLOB_LEN],
		       struct kms_ckey **out);
	/** Unpin. NULL is a no-op. */
	void (*key_release)(void *state, struct kms_ckey *k);
	/** AES-256-GCM under @p k; @return KMS_OK or KMS_ERR_CRYPTO. */
	int (*seal)(void *state, struct kms_ckey *k, const uint8_t iv[12],
		    const uint8_t *ad, size_t ad_len, const uint8_t *pt,
		    size_t pt_len, uint8_t *ct, uint8_t tag[16]);
	/** @return KMS_OK, KMS_ERR_AUTH (tag), KMS_ERR_CRYPTO. */
	int (*open)(void *state, struct kms_ckey *k, const uint8_t iv[12],
		    const uint8_t *ad, size_t ad_len, const uint8_t *ct,
		    size_t ct_len, const uint8_t tag[16], uint8_t *pt);
	/** Seal the 32 key bytes of @p inner under @p outer (the keybox). */
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

/** The mode table for a name ("offload"), or NULL. */
const struct kms_crypto_ops *kms_crypto_find(const char *name);

#endif /* KMS_CRYPTO_H */
