/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file keycache.h
 * @brief The slot index both crypto modes cache their keys in: a fixed
 *        array of slots found by wrapped blob, CLOCK replacement, pins.
 *
 * A mode keeps its own per-slot payload (key bytes and EVP contexts in
 * offload mode, a PKCS#11 object handle in hsm mode) in an array indexed
 * like the slots, and gives an evict callback that wipes or destroys the
 * payload of a slot being reused. Nothing is allocated after init.
 * One instance per worker; not thread-safe.
 */
#ifndef KMS_KEYCACHE_H
#define KMS_KEYCACHE_H

#include <stdint.h>

#include "kms_hsm.h"

struct kms_kc_slot {
	uint8_t blob[KMS_HSM_BLOB_LEN];
	int32_t next;   /* hash chain, -1 = end */
	uint32_t pins;
	uint8_t used;   /* slot holds a key */
	uint8_t ref;    /* CLOCK reference bit */
};

struct kms_keycache {
	struct kms_kc_slot *s;
	int32_t *bucket;
	uint32_t cap, nbucket, hand, cached;
	uint64_t hits, misses, evictions;
	uint64_t auth_failures;  /* loads refused as KMS_ERR_AUTH (bad blob) */
	/* Wipe or destroy the payload of slot @p idx (being evicted). */
	void (*evict)(void *arg, uint32_t idx);
	void *arg;
};

/** @p cap slots (at least 16). @return KMS_OK or KMS_ERR_NOMEM. */
int kms_kc_init(struct kms_keycache *kc, uint32_t cap,
		void (*evict)(void *arg, uint32_t idx), void *arg);
/** Free the index (the caller wipes its payloads first). */
void kms_kc_fini(struct kms_keycache *kc);
/** The slot holding @p blob, pinned and counted as a hit; else -1 and a
 *  miss is counted. */
int32_t kms_kc_get(struct kms_keycache *kc, const uint8_t *blob);
/** A free slot, evicting the first unpinned one whose reference bit is
 *  clear; -1 when every slot is pinned. */
int32_t kms_kc_victim(struct kms_keycache *kc);
/** Enter @p blob in slot @p idx (from kms_kc_victim), pinned once. */
void kms_kc_insert(struct kms_keycache *kc, int32_t idx, const uint8_t *blob);
/**
 * The slot holding @p blob, pinned: a hit, or on a miss a victim slot
 * filled by @p load (its payload for @p blob) and entered. A load that
 * fails leaves the slot free; KMS_ERR_AUTH from it is counted.
 * @return KMS_OK (*idx set), KMS_ERR_BUSY (every slot pinned), or the
 *         load's error.
 */
int kms_kc_fetch(struct kms_keycache *kc, const uint8_t *blob,
		 int (*load)(void *arg, uint32_t idx, const uint8_t *blob),
		 int32_t *idx);
/** Unpin slot @p idx. */
void kms_kc_unpin(struct kms_keycache *kc, int32_t idx);

#endif /* KMS_KEYCACHE_H */
