/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_replay.h
 * @brief Per-worker replay window for single-use token nonces.
 *
 * A token is accepted only while |ts - now| <= skew, so its nonce must be
 * remembered until ts + skew; after that the timestamp check refuses it on
 * its own. The window is a fixed open-addressing table (no allocation after
 * create) keyed by (role, nonce) through AES-128 under a per-window random key.
 *
 * Completeness without shared state: every token binds the pair (ID-A,
 * ID-B) and the pair hash picks the worker, so a replayed token always
 * reaches the worker whose window holds its nonce (docs/ARCHITECTURE.md).
 *
 * One instance per worker; not thread-safe.
 */
#ifndef KMS_REPLAY_H
#define KMS_REPLAY_H

#include <stdint.h>

struct kms_replay;

/** @p capacity nonces: the table has the next power of two >= 2 * capacity
 *  slots (at least 64). A nonce is looked for within 64 slots of its hash,
 *  and a lookup stops early at a slot no live entry can lie beyond (never
 *  used, or expired longer ago than any entry has ever lived).
 *  @return KMS_OK or KMS_ERR_NOMEM. */
int kms_replay_create(uint32_t capacity, struct kms_replay **out);
void kms_replay_destroy(struct kms_replay *r);

/**
 * Remember (role, nonce) until @p expire_ms, unless already remembered.
 * @return KMS_OK (fresh, now remembered), KMS_ERR_EXISTS (a replay),
 *         KMS_ERR_BUSY (no free slot near its hash: refuse, fail closed).
 */
int kms_replay_check_insert(struct kms_replay *r, uint8_t role,
			    const uint8_t nonce[12], uint64_t expire_ms,
			    uint64_t now_ms);

/** Start loading the first slot that each of @p n (role[i], nonce[i])
 *  would look at, and give its hash in @p h[i] (for
 *  kms_replay_check_insert_h): one AES call for up to 64 of them, then
 *  their loads started back to back, so that their misses (and page
 *  walks) overlap instead of stalling one request at a time. Changes
 *  nothing. */
void kms_replay_prefetch_many(const struct kms_replay *r, unsigned n,
			      const uint8_t *role,
			      const uint8_t *const *nonce, uint32_t *h);

/** Load the first slot of hash @p h into the nearest cache: a check that
 *  comes long after kms_replay_prefetch_many (a batch of hundreds of
 *  requests later) may find its slot evicted again; this, a few requests
 *  ahead of the check, brings it back. Changes nothing. */
void kms_replay_prefetch_h(const struct kms_replay *r, uint32_t h);

/** kms_replay_check_insert with the hash kms_replay_prefetch_many gave for
 *  the same (role, nonce): the keyed hash is computed once a request. */
int kms_replay_check_insert_h(struct kms_replay *r, uint32_t h, uint8_t role,
			      const uint8_t nonce[12], uint64_t expire_ms,
			      uint64_t now_ms);

/** Slots looked at by every kms_replay_check_insert() so far. */
uint64_t kms_replay_probes(const struct kms_replay *r);

/** Entries currently live (not expired at @p now_ms); O(capacity). */
uint32_t kms_replay_live(const struct kms_replay *r, uint64_t now_ms);

#endif
