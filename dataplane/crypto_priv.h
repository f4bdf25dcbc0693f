/* SPDX-License-Identifier: Apache-2.0 */
/* Mode tables and what the modes share, for dataplane/crypto*.c only. */
#ifndef KMS_CRYPTO_PRIV_H
#define KMS_CRYPTO_PRIV_H
#include "kms_crypto.h"

/* Fresh K made while idle, per worker (both modes). */
#define KMS_CRYPTO_POOL_MAX 64

struct kms_keycache;
/* Add a key cache's counters (hits, misses, evictions, refused blobs,
 * cached, capacity) into @p out. */
void kms_crypto_add_cache_stats(const struct kms_keycache *kc,
				struct kms_crypto_stats *out);

extern const struct kms_crypto_ops kms_crypto_offload_ops;
/* The 32 bytes of a key held by an offload instance (hsm mode boxes its
 * media keys with them). */
const uint8_t *kms_crypto_offload_key(const struct kms_ckey *k);
extern const struct kms_crypto_ops kms_crypto_hsm_ops;
#endif
