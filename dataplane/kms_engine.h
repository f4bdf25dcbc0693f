/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_engine.h
 * @brief The transaction engine: batches of request datagrams in, replies
 *        out. Plain C, no DPDK or socket types: every I/O mode (kernel UDP
 *        sockets now, DPDK later) feeds the same function.
 *
 * A kms_engine holds what all workers share (HSM, keystore, policy,
 * configuration). A kms_worker holds one worker's state: its HSM session,
 * key cache, replay window and counters. LMDB's single writer lock is
 * taken once per batch for the durable commit.
 *
 * The request path takes no lock and allocates nothing of its own (OpenSSL
 * contexts, the LMDB read transaction and the batch arrays are kept per
 * worker); LMDB's write transaction allocates its dirty pages.
 *
 * Ownership of pairs: the pair (ID-A, ID-B) of a request picks its worker
 * (kms_engine_worker_for). Every I/O mode must deliver a request to that
 * worker: per-worker replay windows and the pair records' read-decide-write
 * without locks both depend on it.
 */
#ifndef KMS_ENGINE_H
#define KMS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "kms_config.h"
#include "kms_err.h"
#include "kms_hsm.h"
#include "kms_ks.h"
#include "kms_policy.h"

struct kms_engine;
struct kms_worker;
struct kms_hasher;
struct kms_kgc;

/** Smallest key cache for a batch size: every answered request of a batch
 *  keeps two keys (the requester's and K) pinned until its reply. */
#define KMS_ENGINE_CACHE_MIN(batch) (2u * (batch) + 16u)

struct kms_engine_config {
	const char *crypto_mode;     /**< "offload" or "hsm" */
	/** offload: an OpenSSL ENGINE id, or the path of a dynamic engine's
	 *  .so (contains a '/'), that AES-256-GCM must go through; NULL or ""
	 *  for OpenSSL's own. Refused in hsm mode. */
	const char *crypto_engine;
	struct kms_policy policy;    /**< the default policy ... */
	/** ... or, when set, the whole policy set (default + per-domain
	 *  overrides), copied at create; replace it live with
	 *  kms_engine_policy_swap(). */
	const struct kms_policy_set *policy_set;
	/** The identity-based key generation centre (kmsctl ibe init), or
	 *  NULL: IBE_KEY_REQ is then answered IBE_UNAVAILABLE. */
	const struct kms_kgc *kgc;
	uint32_t max_skew_ms;
	uint32_t replay_capacity;
	uint32_t cache_keys;         /**< >= KMS_ENGINE_CACHE_MIN(batch_max) */
	unsigned nworkers;
	unsigned batch_max;          /**< requests per batch (one commit), 1..256 */
	/** 0: a RETRIEVE's audit record and nonce are committed durably
	 *  before its answer. N > 0 ("deferred"): they wait, at most N per
	 *  worker, and are committed durably with the worker's next DEPOSIT
	 *  batch, when N wait, when the oldest waited deferred_flush_ms, when
	 *  the worker is idle, and when it is destroyed. Requires
	 *  policy.max_retrievals == 0. See docs/ARCHITECTURE.md. */
	unsigned deferred_max;
	uint32_t deferred_flush_ms;
	/** With deferred_max > 0: 1 = each worker hands its due records to a
	 *  commit thread of its own (double buffer) and keeps serving while
	 *  they are written and synced; 0 = the worker commits them itself.
	 *  kms_worker_idle() and kms_worker_destroy() still return only once
	 *  every waiting record is committed (or its commit failed). */
	int deferred_thread;
	/** Clock (ms since the epoch); NULL = CLOCK_REALTIME. Tests set it. */
	uint64_t (*now_ms)(void *arg);
	void *now_arg;
};

/** One datagram of a batch: the request in, the reply out. */
struct kms_msg {
	const uint8_t *req;
	uint16_t req_len;
	uint8_t *resp;       /**< caller's buffer, >= KMS_REPLY_MAX */
	uint16_t resp_cap;
	uint16_t resp_len;   /**< out: 0 = no reply (counted drop) */
	uint16_t status;     /**< out: the kms_status answered (or that led to a drop) */
};

/** Drop classes (no reply sent). */
enum kms_drop {
	KMS_DROP_NOT_KMS = 0,   /**< header does not parse */
	KMS_DROP_NO_SPACE,      /**< reply buffer too small (I/O mode bug) */
	KMS_DROP__COUNT
};

#define KMS_HIST_BUCKETS 16

enum kms_req_kind {
	KMS_RK_DEPOSIT = 0,
	KMS_RK_RETRIEVE,
	KMS_RK_IBE_KEY,  /**< IBE private keys issued (MIKEY-IBAKE) */
	KMS_RK_OTHER,
	KMS_RK__COUNT
};

/** Counters of one worker (or summed). */
struct kms_stats {
	uint64_t batches, requests;
	uint64_t by_status[KMS_RK__COUNT][KMS_ST__COUNT];
	uint64_t drops[KMS_DROP__COUNT];
	uint64_t keys_new, keys_reused, retrievals;
	uint64_t ibe_keys_issued;    /**< IBE_KEY_REQ answered */
	uint64_t commits, commit_failures, committed_requests;
	uint64_t cache_hits, cache_misses, cache_evictions, keys_pooled;
	uint64_t hsm_calls;
	uint64_t replay_busy;
	/** Party records found in the worker's party cache / read from the
	 *  store (PARTY_CACHE slots of engine.c, valid while the store's party
	 *  epoch stays as it was when they were read). */
	uint64_t party_hits, party_reads;
	uint64_t deferred_records;   /**< RETRIEVE records committed late */
	uint64_t deferred_flushes, deferred_failures;
	/** Time spent in those flushes (begin to durable commit, failed ones
	 *  too), in us: the worker's own time with store.deferred_commit =
	 *  worker, its commit thread's with thread. Per record, the cost of
	 *  deferring the records, next to batch_us_sum per request. */
	uint64_t deferred_flush_us;
	/** Log2 histograms: bucket i counts values in [2^i, 2^(i+1)) (0 in
	 *  bucket 0, the last bucket open-ended). Requests per durable
	 *  commit, and a batch's service time in us (admission, commit,
	 *  replies: what its requests waited inside the engine; deferred
	 *  records flushed as it starts count in deferred_flush_us only). */
	uint64_t commit_size[KMS_HIST_BUCKETS], commit_size_sum;
	uint64_t batch_us[KMS_HIST_BUCKETS], batch_us_sum;
};

/** Loads the configured OpenSSL engine, if any.
 *  @return KMS_OK, KMS_ERR_CONFIG (unknown crypto mode; an engine that does
 *          not load or lacks AES-256-GCM; an engine with mode hsm; the
 *          reason is logged), KMS_ERR_NOMEM. */
int kms_engine_create(const struct kms_engine_config *cfg, struct kms_hsm *hsm,
		      struct kms_ks *ks, struct kms_engine **out);
/** Call after every worker is destroyed. NULL is a no-op. */
void kms_engine_destroy(struct kms_engine *e);

/**
 * Publish a new policy set to the workers without stopping them (RCU,
 * liburcu's bulletproof flavour): @p ps is copied; requests admitted
 * after the call use it; a batch already being admitted finishes with
 * the set it started with; the old set is freed after every such batch
 * ended. Any thread; not concurrent with another swap (the control
 * socket serves one request at a time).
 * @return KMS_OK, KMS_ERR_NOMEM, KMS_ERR_INVAL (a max_retrievals limit
 *         with deferred RETRIEVE records).
 */
int kms_engine_policy_swap(struct kms_engine *e,
			   const struct kms_policy_set *ps);

/** Copy the current policy set into @p out (any thread). */
void kms_engine_policy_get(struct kms_engine *e, struct kms_policy_set *out);

/** The crypto mode's name ("offload", "hsm"). */
const char *kms_engine_crypto_mode(const struct kms_engine *e);

/** Wait until every worker batch that began before the call has ended
 *  (an RCU grace period: batches run inside read-side sections). */
void kms_engine_sync(struct kms_engine *e);

/** The HSM the engine was created with. */
struct kms_hsm *kms_engine_hsm(struct kms_engine *e);

/** The number of workers the engine was created for. */
unsigned kms_engine_nworkers(const struct kms_engine *e);

/**
 * The worker index that owns the request in @p dgram (pair hash mod
 * nworkers); 0 for a datagram whose IDs cannot be found (the worker then
 * refuses or drops it). @p h: the calling thread's hasher.
 */
unsigned kms_engine_worker_for(const struct kms_engine *e,
			       struct kms_hasher *h, const uint8_t *dgram,
			       size_t len);

/**
 * Create worker @p id (0..nworkers-1). Call it on the thread that will run
 * the worker: it opens that thread's HSM session. It reloads from the
 * keystore the single-use nonces of its pairs that have not expired, so
 * replays stay refused across restarts.
 * @return KMS_OK, KMS_ERR_HSM, KMS_ERR_NOTFOUND (no KEK), KMS_ERR_NOMEM,
 *         KMS_ERR_BUSY (the live nonces of its pairs do not fit the replay
 *         window: raise replay_capacity), or a keystore error
 *         (KMS_ERR_STORE, KMS_ERR_CORRUPT) from reading them.
 */
int kms_worker_create(struct kms_engine *e, unsigned id, struct kms_worker **out);
/** Wipe and free everything the worker holds. NULL is a no-op. */
void kms_worker_destroy(struct kms_worker *w);

/**
 * Process @p n requests, in batches of at most batch_max. Every message gets either
 * a reply (resp_len > 0) or a counted drop. Deposits and retrievals of the
 * batch are recorded in one durable write transaction before any reply
 * that depends on them is produced; when that commit fails, those requests
 * are answered STORE_FULL/STORE_FAILED and nothing of them is kept.
 * @return the number of replies.
 */
unsigned kms_worker_process(struct kms_worker *w, struct kms_msg *msgs,
			    unsigned n);

/**
 * Idle work, for I/O loops to call when no request is waiting: lets the
 * crypto mode pre-make up to @p max fresh K with the HSM, so DEPOSITs that
 * need a new K do not wait for the HSM. @return keys made.
 */
unsigned kms_worker_idle(struct kms_worker *w, unsigned max);

/** A polling loop goes quiet this long (no batch) before kms_worker_idle_poll()
 *  commits the deferred RETRIEVE records ahead of their due time. */
#define KMS_IDLE_QUIET_MS 1

/**
 * kms_worker_idle() for a loop that looks for requests again at once (a
 * DPDK lcore, a socket worker that waits briefly): an empty poll under
 * load is a gap between batches, not idle time, so deferred RETRIEVE
 * records are committed when due (store.deferred_flush_ms, deferred_max)
 * or after KMS_IDLE_QUIET_MS without a batch, not at every empty poll (a
 * commit, and its fdatasync, per batch would be the durable mode's cost
 * without its answer-after-commit). Call kms_worker_idle() before sleeping.
 */
unsigned kms_worker_idle_poll(struct kms_worker *w, unsigned max);

/** Deferred RETRIEVE records waiting for their commit. */
unsigned kms_worker_deferred(const struct kms_worker *w);

/** With cfg.deferred_thread: wait until the worker's commit thread has no
 *  commit in flight (at once without one). Starts none. */
void kms_worker_commit_wait(struct kms_worker *w);

/** Snapshot of the worker's counters. Safe to call from another thread:
 *  each counter is read atomically (values may be a batch apart). */
void kms_worker_stats(const struct kms_worker *w, struct kms_stats *out);

/** Add @p b into @p a. */
void kms_stats_add(struct kms_stats *a, const struct kms_stats *b);

#endif /* KMS_ENGINE_H */
