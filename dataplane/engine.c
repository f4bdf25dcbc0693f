// SPDX-License-Identifier: Apache-2.0
/*
 * The transaction engine (clause 7.4.3.3): DEPOSIT and RETRIEVE in batches.
 *
 * A batch runs in three phases:
 *  1. read (an LMDB read transaction, no lock): parse, look up the parties,
 *     open and compare both tokens, check the replay window, decide re-use
 *     or a new K (the pair belongs to this worker, so nobody else changes
 *     its record meanwhile), look up deposits;
 *  2. write: one write transaction records every deposit, pair update,
 *     retrieval count and audit record of the batch, then commits durably;
 *  3. answer: seal each K under the requester's key, bound to its request.
 * No reply that depends on phase 2 leaves before the commit returned.
 */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu/urcu-bp.h>
#include <urcu/pointer.h>

#include "kms_crypto.h"
#include "kms_engine.h"
#include "kms_ibe.h"
#include "kms_kgc.h"
#include "kms_log.h"
#include "kms_proto.h"
#include "kms_replay.h"

#define BATCH_MAX 256
/* Phase 1's per-batch index: at most half full. */
#define BATCH_IDX_BITS 9
#define BATCH_IDX (1u << BATCH_IDX_BITS)
_Static_assert(BATCH_IDX >= 2 * BATCH_MAX, "batch index too small");
/* Requests ahead of its replay check that a slot is loaded again: each
 * request takes microseconds, a miss a fraction of one. */
#define REPLAY_AHEAD 4
/* Party records kept per worker (direct-mapped by a hash of the ID): the
 * mailbox servers and the active users of a busy worker are read from
 * memory, not from the B-tree, 2 or 3 times per request. 4096 slots of
 * ~260 bytes: about 1 MiB a worker. */
#define PARTY_CACHE 4096

struct kms_engine {
	struct kms_engine_config cfg;
	const struct kms_crypto_ops *crypto;
	struct kms_hsm *hsm;
	struct kms_ks *ks;
	void *ossl_engine;         /* offload: ENGINE the AEAD goes through */
	struct kms_policy_set *pset; /* RCU: read in process_batch */
};

/* Per-request state while a batch is in flight. */
struct pending {
	struct kms_req req;
	uint8_t kind;              /* enum kms_req_kind */
	uint16_t status;
	uint8_t drop;              /* 1: no reply */
	uint8_t write_pair;        /* deposit: pair record to store */
	uint8_t deferred;          /* retrieve: records wait in w->dfr */
	uint8_t audit_event;
	uint32_t replay_h;         /* kms_replay_prefetch_many of tok_x */
	uint8_t parse_bad;         /* kms_req_parse failed: parse_st says */
	uint16_t parse_st;
	uint8_t pair_hash[KMS_PAIR_HASH_LEN];
	uint32_t recip_gen;
	struct kms_ckey *k_recip;  /* Ka (deposit) or Kb (retrieve) */
	struct kms_ckey *k_k;      /* K */
	uint8_t key_id[KMS_KEY_ID_LEN];
	const char *actor;         /* who asked: AS id or B, points into dep */
	uint8_t actor_len;
	struct kms_pair pair;
	struct kms_deposit dep;
};

struct kms_worker {
	struct kms_engine *e;
	const struct kms_policy_set *pset; /* during kms_worker_process only */
	unsigned id;
	uint16_t seq;
	struct kms_hsm_session *hsm;
	void *crypto;
	struct kms_replay *replay;
	struct kms_hasher *hasher;
	struct kms_ks_txn *rtxn;   /* kept; renewed per batch, reset after */
	struct pending *pend;      /* batch_max entries */
	/* Deferred RETRIEVE records (cfg.deferred_max > 0): answered, not
	 * yet durable. */
	struct deferred *dfr;
	unsigned ndfr;
	uint64_t dfr_oldest_ms;
	uint64_t dfr_retry_ms;     /* after a failed flush: not before */
	/* cfg.deferred_thread: the commit thread and its buffer. dfr2/ndfr2
	 * belong to the thread while fl_busy, to the worker otherwise; the
	 * hand-over is under fl_mu. ndfr2 > 0 with !fl_busy: its last commit
	 * failed, retried from fl_fail_ms + deferred_flush_ms on. */
	struct deferred *dfr2;
	unsigned ndfr2;
	int fl_busy, fl_stop, fl_started;
	uint64_t fl_now, fl_fail_ms;
	pthread_mutex_t fl_mu;
	pthread_cond_t fl_cv;
	pthread_t fl;
	uint64_t last_batch_ms;    /* clock of the latest batch */
	/* Party cache: slots read under party epoch pepoch are valid for a
	 * batch whose snapshot shows the same epoch (pcache_ok). */
	struct party_slot *pcache;
	uint64_t pepoch;
	int pcache_ok;
	/* This batch's snapshot may hold a revoked pair: RETRIEVEs read the
	 * pair record (else no pair is revoked and they need not). */
	int pair_revocations;
	struct kms_stats st;
	uint16_t no_txn_status;    /* why this batch has no read txn */
	/* Phase 1's index of this batch's admitted requests: by key id
	 * (DEPOSIT, RETRIEVE) and by pair written (DEPOSIT); a slot holds
	 * 1 + the index in pend of the latest such request, 0 is empty.
	 * Open addressing, at most half full. */
	uint16_t by_key[BATCH_IDX];
	uint16_t by_pair[BATCH_IDX];
};

/* A party record as read under store party epoch @p epoch. Blobs are
 * wrapped keys, no key material. */
struct party_slot {
	uint64_t epoch;
	uint8_t used, id_len;
	char id[KMS_ID_MAX];
	struct kms_party p;
};

/* Nothing secret (ids, a deposit's key id, a token nonce): a committed
 * buffer is reused as it is, not wiped after every flush. */
struct deferred {
	struct kms_audit a;
	struct kms_ks_nonce n;
};

/* Counters are written by their worker only and read by others: a relaxed
 * atomic store of the incremented value is a plain store on x86. */
#define STAT_ADD(w, field, n) \
	__atomic_store_n(&(w)->st.field, (w)->st.field + (n), __ATOMIC_RELAXED)
#define STAT_INC(w, field) STAT_ADD(w, field, 1)
/* The deferred-record counters, which the commit thread writes too. */
#define STAT_ADD_MT(w, field, n) \
	__atomic_fetch_add(&(w)->st.field, (n), __ATOMIC_RELAXED)

/* The log2 bucket of @p v (kms_stats histograms). */
static unsigned log2_bucket(uint64_t v)
{
	unsigned b = v ? 63u - (unsigned)__builtin_clzll(v) : 0;

	return b < KMS_HIST_BUCKETS ? b : KMS_HIST_BUCKETS - 1;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t clock_ms(void *arg)
{
	struct timespec ts;

	(void)arg;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int pset_ok(const struct kms_engine *e, const struct kms_policy_set *ps)
{
	/* A limited retrieval count must be durable before the answer. */
	return !e->cfg.deferred_max || !kms_policy_set_caps_retrievals(ps);
}

int kms_engine_create(const struct kms_engine_config *cfg, struct kms_hsm *hsm,
		      struct kms_ks *ks, struct kms_engine **out)
{
	const struct kms_crypto_ops *ops = kms_crypto_find(cfg->crypto_mode);
	struct kms_engine *e;

	if (!ops) {
		KMS_ERR("crypto mode '%s' is not available", cfg->crypto_mode);
		return KMS_ERR_CONFIG;
	}
	if (cfg->nworkers == 0 || cfg->batch_max == 0 || cfg->batch_max > BATCH_MAX)
		return KMS_ERR_INVAL;
	/* Every answered request pins two keys until its reply is sealed. */
	if (cfg->cache_keys < KMS_ENGINE_CACHE_MIN(cfg->batch_max)) {
		KMS_ERR("key cache of %u keys is too small for batches of %u "
			"(needs %u)", cfg->cache_keys, cfg->batch_max,
			KMS_ENGINE_CACHE_MIN(cfg->batch_max));
		return KMS_ERR_CONFIG;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return KMS_ERR_NOMEM;
	e->cfg = *cfg;
	if (!e->cfg.now_ms)
		e->cfg.now_ms = clock_ms;
	e->crypto = ops;
	if (cfg->crypto_engine && cfg->crypto_engine[0]) {
		int rc;

		if (strcmp(ops->name, "offload")) {
			KMS_ERR("crypto.engine is for crypto.mode = offload; in "
				"mode '%s' every AEAD runs in the HSM", ops->name);
			free(e);
			return KMS_ERR_CONFIG;
		}
		rc = kms_crypto_engine_load(cfg->crypto_engine, &e->ossl_engine);
		if (rc) {
			free(e);
			return rc;
		}
	}
	e->pset = malloc(sizeof(*e->pset));
	if (!e->pset) {
		kms_crypto_engine_release(e->ossl_engine);
		free(e);
		return KMS_ERR_NOMEM;
	}
	if (cfg->policy_set)
		*e->pset = *cfg->policy_set;
	else
		kms_policy_set_init(e->pset, &cfg->policy);
	e->cfg.policy_set = NULL;
	if (!pset_ok(e, e->pset)) {
		KMS_ERR("the policy limits retrievals (max_retrievals) but "
			"store.retrieve_records = deferred: a limited count must "
			"be durable before the answer");
		kms_engine_destroy(e);
		return KMS_ERR_CONFIG;
	}
	e->hsm = hsm;
	e->ks = ks;
	*out = e;
	return KMS_OK;
}

void kms_engine_destroy(struct kms_engine *e)
{
	if (!e)
		return;
	kms_crypto_engine_release(e->ossl_engine);
	free(e->pset);
	free(e);
}

int kms_engine_policy_swap(struct kms_engine *e, const struct kms_policy_set *ps)
{
	struct kms_policy_set *n, *old;

	if (!pset_ok(e, ps))
		return KMS_ERR_INVAL;
	n = malloc(sizeof(*n));
	if (!n)
		return KMS_ERR_NOMEM;
	*n = *ps;
	old = rcu_xchg_pointer(&e->pset, n);
	urcu_bp_synchronize_rcu();
	free(old);
	return KMS_OK;
}

void kms_engine_sync(struct kms_engine *e)
{
	(void)e;
	urcu_bp_synchronize_rcu();
}

struct kms_hsm *kms_engine_hsm(struct kms_engine *e)
{
	return e->hsm;
}

void kms_engine_policy_get(struct kms_engine *e, struct kms_policy_set *out)
{
	urcu_bp_read_lock();
	*out = *rcu_dereference(e->pset);
	urcu_bp_read_unlock();
}

const char *kms_engine_crypto_mode(const struct kms_engine *e)
{
	return e->crypto->name;
}

unsigned kms_engine_nworkers(const struct kms_engine *e)
{
	return e->cfg.nworkers;
}

unsigned kms_engine_worker_for(const struct kms_engine *e,
			       struct kms_hasher *h, const uint8_t *dgram,
			       size_t len)
{
	uint8_t hash[KMS_PAIR_HASH_LEN];
	struct kms_id a, b;

	if (e->cfg.nworkers == 1 || kms_req_peek_pair(dgram, len, &a, &b))
		return 0;
	kms_hasher_pair(h, &a, &b, hash);
	return kms_pair_worker(hash, e->cfg.nworkers);
}

struct reload {
	struct kms_worker *w;
	uint64_t now;
	unsigned loaded;
	int rc;
};

static int reload_one(uint64_t expire_ms, uint8_t role, const uint8_t *nonce,
		      const uint8_t *pair_prefix, void *arg)
{
	struct reload *r = arg;
	uint8_t hash[KMS_PAIR_HASH_LEN] = { 0 };

	memcpy(hash, pair_prefix, 8);
	if (kms_pair_worker(hash, r->w->e->cfg.nworkers) != r->w->id)
		return 0;
	r->rc = kms_replay_check_insert(r->w->replay, role, nonce, expire_ms,
					r->now);
	if (r->rc == KMS_ERR_EXISTS)
		r->rc = KMS_OK;
	r->loaded += r->rc == KMS_OK;
	return r->rc;
}

/* Nonces accepted before a restart are still single-use: reload those of
 * this worker's pairs that have not expired. */
static int reload_nonces(struct kms_worker *w)
{
	struct reload r = { .w = w, .now = w->e->cfg.now_ms(w->e->cfg.now_arg) };
	struct kms_ks_txn *txn;
	int rc = kms_ks_txn_begin(w->e->ks, 1, &txn);

	if (rc)
		return rc;
	rc = kms_ks_nonce_foreach(txn, r.now, reload_one, &r);
	kms_ks_txn_abort(txn);
	if (rc == KMS_ERR_BUSY)
		KMS_ERR("worker %u: replay window too small for the %u nonces "
			"still live: raise security.replay_capacity", w->id,
			r.loaded);
	if (!rc && r.loaded)
		KMS_INFO("worker %u: %u single-use nonces reloaded", w->id,
			 r.loaded);
	return rc;
}

static int flusher_start(struct kms_worker *w);

int kms_worker_create(struct kms_engine *e, unsigned id, struct kms_worker **out)
{
	struct kms_worker *w = calloc(1, sizeof(*w));
	struct kms_crypto_conf ccfg;
	int rc = KMS_ERR_NOMEM;

	if (!w)
		return KMS_ERR_NOMEM;
	w->e = e;
	w->id = id;
	w->pend = calloc(e->cfg.batch_max, sizeof(*w->pend));
	w->pcache = calloc(PARTY_CACHE, sizeof(*w->pcache));
	w->hasher = kms_hasher_new();
	if (!w->pend || !w->pcache || !w->hasher)
		goto err;
	if (e->cfg.deferred_max) {
		w->dfr = calloc(e->cfg.deferred_max, sizeof(*w->dfr));
		if (!w->dfr)
			goto err;
	}
	rc = kms_replay_create(e->cfg.replay_capacity, &w->replay);
	if (rc)
		goto err;
	rc = reload_nonces(w);
	if (rc)
		goto err;
	rc = kms_ks_txn_begin(e->ks, 1, &w->rtxn);
	if (rc)
		goto err;
	kms_ks_txn_reset(w->rtxn);
	rc = kms_hsm_session_open(e->hsm, &w->hsm);
	if (rc)
		goto err;
	ccfg.capacity = e->cfg.cache_keys;
	ccfg.ossl_engine = e->ossl_engine;
	rc = e->crypto->create(w->hsm, &ccfg, &w->crypto);
	if (rc)
		goto err;
	if (e->cfg.deferred_max && e->cfg.deferred_thread) {
		rc = flusher_start(w);
		if (rc)
			goto err;
	}
	*out = w;
	return KMS_OK;
err:
	kms_worker_destroy(w);
	return rc;
}

static void flush_all(struct kms_worker *w, uint64_t now);

void kms_worker_destroy(struct kms_worker *w)
{
	if (!w)
		return;
	if (w->fl_started) {
		pthread_mutex_lock(&w->fl_mu);
		w->fl_stop = 1;
		pthread_cond_broadcast(&w->fl_cv);
		pthread_mutex_unlock(&w->fl_mu);
		pthread_join(w->fl, NULL);
		w->fl_started = 0;
	}
	if (w->ndfr || w->ndfr2)
		flush_all(w, w->e->cfg.now_ms(w->e->cfg.now_arg));
	if (w->ndfr || w->ndfr2)
		KMS_ERR("worker %u: %u deferred RETRIEVE records could not be "
			"committed at exit", w->id, w->ndfr + w->ndfr2);
	free(w->dfr);
	if (w->dfr2) {
		explicit_bzero(w->dfr2, w->e->cfg.deferred_max * sizeof(*w->dfr2));
		free(w->dfr2);
		pthread_mutex_destroy(&w->fl_mu);
		pthread_cond_destroy(&w->fl_cv);
	}
	if (w->crypto)
		w->e->crypto->destroy(w->crypto);
	kms_hsm_session_close(w->hsm);
	kms_replay_destroy(w->replay);
	kms_ks_txn_abort(w->rtxn);
	kms_hasher_free(w->hasher);
	if (w->pend)
		explicit_bzero(w->pend, w->e->cfg.batch_max * sizeof(*w->pend));
	free(w->pend);
	free(w->pcache);
	free(w);
}

static int id_eq(const struct kms_id *id, const char *s, uint8_t len)
{
	return id->len == len && !memcmp(id->p, s, len);
}

static void id_store(char *dst, uint8_t *dst_len, const struct kms_id *id)
{
	memcpy(dst, id->p, id->len);
	*dst_len = id->len;
}

static int in_skew(const struct kms_engine *e, uint64_t ts, uint64_t now)
{
	uint64_t d = ts > now ? ts - now : now - ts;

	return d <= e->cfg.max_skew_ms;
}

static uint32_t id_slot(const struct kms_id *id)
{
	uint32_t h = 2166136261u; /* FNV-1a: a slot index, not a secret */

	for (unsigned i = 0; i < id->len; i++)
		h = (h ^ (uint8_t)id->p[i]) * 16777619u;
	return h & (PARTY_CACHE - 1);
}

/* The party record of @p id as this batch's snapshot holds it: from the
 * cache if it was read under the snapshot's party epoch, else from the
 * store (and kept). Unknown IDs are not kept. */
static int party_get(struct kms_worker *w, struct kms_ks_txn *txn,
		     const struct kms_id *id, struct kms_party *out)
{
	struct party_slot *s;
	int rc;

	if (!w->pcache_ok || !id->len || id->len > KMS_ID_MAX)
		return kms_ks_party_get(txn, id, out);
	s = &w->pcache[id_slot(id)];
	if (s->used && s->epoch == w->pepoch && s->id_len == id->len &&
	    !memcmp(s->id, id->p, id->len)) {
		*out = s->p;
		STAT_INC(w, party_hits);
		return KMS_OK;
	}
	rc = kms_ks_party_get(txn, id, out);
	STAT_INC(w, party_reads);
	if (rc == KMS_OK) {
		s->used = 1;
		s->epoch = w->pepoch;
		s->id_len = id->len;
		memcpy(s->id, id->p, id->len);
		s->p = *out;
	}
	return rc;
}

/* Find the party, check it is enrolled, active and of the right kind, and
 * (with a token) that the token names its current key generation, or the
 * previous one within its overlap after a rotation: then @p out carries
 * that generation and its blob, so the token opens and the reply is sealed
 * under the key the party used. */
static uint16_t party_check(struct kms_worker *w, struct kms_ks_txn *txn,
			    const struct kms_id *id, uint8_t kind,
			    const struct kms_token *tok, uint64_t now,
			    struct kms_party *out)
{
	int rc = party_get(w, txn, id, out);

	if (rc == KMS_ERR_NOTFOUND)
		return KMS_ST_UNKNOWN_PARTY;
	if (rc)
		return KMS_ST_STORE_FAILED;
	if (out->status != KMS_PARTY_ACTIVE)
		return KMS_ST_PARTY_REVOKED;
	if (out->kind != kind)
		return KMS_ST_WRONG_ROLE;
	if (!tok || tok->gen == out->gen)
		return KMS_ST_OK;
	if (out->prev_gen && tok->gen == out->prev_gen &&
	    now < out->prev_until_ms) {
		out->gen = out->prev_gen;
		memcpy(out->blob, out->prev_blob, sizeof(out->blob));
		return KMS_ST_OK;
	}
	return KMS_ST_AUTH_FAILED;
}

static uint16_t crypto_status(int rc)
{
	switch (rc) {
	case KMS_ERR_BUSY: return KMS_ST_BUSY;
	case KMS_ERR_AUTH: return KMS_ST_HSM_FAILED; /* a stored blob no longer unwraps */
	default: return KMS_ST_HSM_FAILED;
	}
}

/* Open token @p tok sealed by @p party under @p k and compare its IDs. */
static uint16_t token_check(struct kms_worker *w, struct kms_ckey *k,
			    const struct kms_token *tok,
			    const struct kms_id *party, const struct kms_req *r)
{
	uint8_t ad[8 + 2 + KMS_ID_MAX + 12], pt[KMS_TOKEN_PT_MAX];
	size_t ad_len = kms_token_ad(tok->role, party, tok->gen, tok->ts_ms, ad);
	uint16_t st = KMS_ST_OK;
	int rc;

	rc = w->e->crypto->open(w->crypto, k, tok->nonce, ad, ad_len, tok->ct,
				tok->ct_len, tok->tag, pt);
	if (rc == KMS_ERR_AUTH)
		st = KMS_ST_AUTH_FAILED;
	else if (rc)
		st = KMS_ST_INTERNAL;
	else if (!kms_token_pt_matches(pt, tok->ct_len, &r->id_a, &r->id_b))
		st = KMS_ST_ID_MISMATCH;
	explicit_bzero(pt, sizeof(pt));
	return st;
}

/* A token is accepted while |ts - now| <= skew: remember it until then. */
static uint64_t replay_expiry(const struct kms_worker *w,
			      const struct kms_token *tok)
{
	return tok->ts_ms + w->e->cfg.max_skew_ms + 1;
}

/* The durable form of @p p's single-use nonce: its expiry, role, nonce
 * and the first 8 bytes of its pair hash (who reloads it). */
static void nonce_of(const struct kms_worker *w, const struct pending *p,
		     struct kms_ks_nonce *out)
{
	out->expire_ms = replay_expiry(w, &p->req.tok_x);
	out->role = p->req.tok_x.role;
	memcpy(out->nonce, p->req.tok_x.nonce, KMS_NONCE_LEN);
	memcpy(out->pair_prefix, p->pair_hash, sizeof(out->pair_prefix));
}

static uint16_t replay_check(struct kms_worker *w, const struct kms_token *tok,
			     uint32_t h, uint64_t now)
{
	int rc = kms_replay_check_insert_h(w->replay, h, tok->role, tok->nonce,
					   replay_expiry(w, tok), now);

	if (rc == KMS_ERR_EXISTS)
		return KMS_ST_REPLAY;
	if (rc) {
		/* Fail closed, and say what to change: the window holds
		 * every nonce answered within 2 x skew. */
		STAT_INC(w, replay_busy);
		KMS_WARN_RL("worker %u: replay window full, request refused "
			    "BUSY: raise security.replay_capacity (now %u "
			    "nonces, about %u req/s a worker at max_skew_s "
			    "%u)", w->id, w->e->cfg.replay_capacity,
			    w->e->cfg.replay_capacity /
				    (2 * (w->e->cfg.max_skew_ms / 1000) + 1),
			    w->e->cfg.max_skew_ms / 1000);
		return KMS_ST_BUSY;
	}
	return KMS_ST_OK;
}

/* The slot of @p key (@p len bytes at offset @p off of a pending) in
 * @p tab: the one holding it, or the empty one where it would go. Keys are
 * a SHA-256 (pairs) or end in a counter and random bytes (key ids): their
 * last 8 bytes are spread enough for a multiplicative hash. */
static uint16_t *batch_slot(const struct kms_worker *w, uint16_t *tab,
			    size_t off, size_t len, const uint8_t *key)
{
	uint64_t x;
	uint32_t i;

	memcpy(&x, key + len - sizeof(x), sizeof(x));
	i = (uint32_t)((x * 0x9e3779b97f4a7c15ull) >> (64 - BATCH_IDX_BITS));
	for (;; i = (i + 1) & (BATCH_IDX - 1))
		if (!tab[i] ||
		    !memcmp((const uint8_t *)&w->pend[tab[i] - 1] + off, key,
			    len))
			return &tab[i];
}

/* The latest earlier request of this batch that changed this pair. */
static const struct pending *batch_pair(struct kms_worker *w,
					const uint8_t *hash)
{
	uint16_t v = *batch_slot(w, w->by_pair,
				 offsetof(struct pending, pair_hash),
				 KMS_PAIR_HASH_LEN, hash);

	return v ? &w->pend[v - 1] : NULL;
}

/* The latest earlier request of this batch that created or updated this
 * deposit. */
static const struct pending *batch_deposit(struct kms_worker *w,
					   const uint8_t *key_id)
{
	uint16_t v = *batch_slot(w, w->by_key, offsetof(struct pending, key_id),
				 KMS_KEY_ID_LEN, key_id);

	return v ? &w->pend[v - 1] : NULL;
}

/* Phase 1 is done with pend[@p i]: later requests of the batch see it. */
static void batch_index(struct kms_worker *w, unsigned i)
{
	const struct pending *p = &w->pend[i];

	if (p->status != KMS_ST_OK)
		return;
	if (p->kind == KMS_RK_DEPOSIT || p->kind == KMS_RK_RETRIEVE)
		*batch_slot(w, w->by_key, offsetof(struct pending, key_id),
			    KMS_KEY_ID_LEN, p->key_id) = (uint16_t)(i + 1);
	if (p->write_pair)
		*batch_slot(w, w->by_pair, offsetof(struct pending, pair_hash),
			    KMS_PAIR_HASH_LEN, p->pair_hash) = (uint16_t)(i + 1);
}

static void make_key_id(struct kms_worker *w, uint64_t now,
			const uint8_t rnd[4], uint8_t out[KMS_KEY_ID_LEN])
{
	/* Time first, so a batch's deposits append to the same B-tree pages. */
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(now >> (56 - 8 * i));
	out[8] = (uint8_t)(w->id >> 8);
	out[9] = (uint8_t)w->id;
	out[10] = (uint8_t)(w->seq >> 8);
	out[11] = (uint8_t)w->seq;
	w->seq++;
	memcpy(out + 12, rnd, 4);
}

static uint16_t deposit_decide(struct kms_worker *w, struct kms_ks_txn *txn,
			       struct pending *p, uint64_t now,
			       const uint8_t rnd[4])
{
	const struct kms_req *r = &p->req;
	const struct kms_policy *pol = kms_policy_for(w->pset, r->id_b.p,
						      r->id_b.len, p->pair_hash);
	struct kms_deposit *d = &p->dep;
	const struct pending *prev;
	int have_pair = 0, rc;

	memcpy(d->pair_hash, p->pair_hash, KMS_PAIR_HASH_LEN);
	prev = batch_pair(w, d->pair_hash);
	if (prev) {
		p->pair = prev->pair;
		have_pair = 1;
	} else {
		rc = kms_ks_pair_get(txn, d->pair_hash, &p->pair);
		if (rc && rc != KMS_ERR_NOTFOUND)
			return KMS_ST_STORE_FAILED;
		have_pair = rc == KMS_OK;
	}
	if (have_pair && p->pair.revoked)
		return KMS_ST_PAIR_REVOKED;
	/* Reuse policy: up to N deposits and T seconds; N = 0 never re-uses,
	 * T = 0 sets no age limit. */
	if (have_pair && pol->reuse_max_deposits &&
	    p->pair.uses < pol->reuse_max_deposits &&
	    (!pol->reuse_max_age_s ||
	     now - p->pair.created_ms < (uint64_t)pol->reuse_max_age_s * 1000)) {
		rc = w->e->crypto->key_get(w->crypto, p->pair.blob,
					   KMS_KEY_MEDIA, &p->k_k);
		if (rc)
			return crypto_status(rc);
		p->pair.uses++;
		p->audit_event = KMS_AUD_KEY_REUSE;
	} else {
		uint8_t blob[KMS_HSM_BLOB_LEN];

		rc = w->e->crypto->key_new(w->crypto, blob, &p->k_k);
		if (rc)
			return crypto_status(rc);
		p->pair.k_gen = have_pair ? p->pair.k_gen + 1 : 1;
		p->pair.uses = 1;
		p->pair.created_ms = now;
		memcpy(p->pair.blob, blob, sizeof(blob));
		p->audit_event = KMS_AUD_KEY_NEW;
	}
	p->write_pair = 1;
	make_key_id(w, now, rnd, p->key_id);
	d->status = KMS_DEP_ACTIVE;
	d->k_gen = p->pair.k_gen;
	d->retrievals = 0;
	d->created_ms = now;
	d->expiry_ms = now + (uint64_t)pol->deposit_lifetime_s * 1000;
	memcpy(d->blob, p->pair.blob, KMS_HSM_BLOB_LEN);
	kms_hasher_sha256(w->hasher, r->tok_a.raw, r->tok_a.raw_len, d->ea_digest);
	id_store(d->id_a, &d->id_a_len, &r->id_a);
	id_store(d->id_b, &d->id_b_len, &r->id_b);
	id_store(d->id_as, &d->id_as_len, &r->id_as);
	p->actor = d->id_as;
	p->actor_len = d->id_as_len;
	return KMS_ST_OK;
}

static uint16_t retrieve_decide(struct kms_worker *w, struct kms_ks_txn *txn,
				struct pending *p, uint64_t now)
{
	const struct kms_req *r = &p->req;
	const struct kms_policy *pol;
	struct kms_deposit *d = &p->dep;
	const struct pending *prev;
	uint8_t digest[32];
	int rc;

	memcpy(p->key_id, r->key_id, KMS_KEY_ID_LEN);
	prev = batch_deposit(w, r->key_id);
	if (prev) {
		*d = prev->dep;
	} else {
		rc = kms_ks_deposit_get(txn, r->key_id, d);
		if (rc == KMS_ERR_NOTFOUND)
			return KMS_ST_UNKNOWN_KEY_ID;
		if (rc)
			return KMS_ST_STORE_FAILED;
	}
	if (d->status == KMS_DEP_REVOKED)
		return KMS_ST_DEPOSIT_REVOKED;
	if (now >= d->expiry_ms)
		return KMS_ST_DEPOSIT_EXPIRED;
	/* A revoked pair revokes all its deposits: one more B-tree lookup
	 * (the pair record), no deposit rewritten; none while the snapshot
	 * holds no revoked pair at all. */
	if (w->pair_revocations) {
		struct kms_pair pr;

		rc = kms_ks_pair_get(txn, d->pair_hash, &pr);
		if (rc && rc != KMS_ERR_NOTFOUND)
			return KMS_ST_STORE_FAILED;
		if (!rc && pr.revoked)
			return KMS_ST_DEPOSIT_REVOKED;
	}
	/* Ea is the deposit's handle: it must be the very token recorded. */
	kms_hasher_sha256(w->hasher, r->tok_a.raw, r->tok_a.raw_len, digest);
	if (CRYPTO_memcmp(digest, d->ea_digest, sizeof(digest)))
		return KMS_ST_HANDLE_MISMATCH;
	if (!id_eq(&r->id_b, d->id_b, d->id_b_len) ||
	    !id_eq(&r->id_a, d->id_a, d->id_a_len))
		return KMS_ST_NOT_RECIPIENT;
	/* The request's IDs are the deposit's: so is the pair hash, made
	 * when the deposit was (no SHA-256 of the pair per RETRIEVE). */
	memcpy(p->pair_hash, d->pair_hash, KMS_PAIR_HASH_LEN);
	pol = kms_policy_for(w->pset, r->id_b.p, r->id_b.len, p->pair_hash);
	if (pol->max_retrievals && d->retrievals >= pol->max_retrievals)
		return KMS_ST_POLICY_DENIED;
	rc = w->e->crypto->key_get(w->crypto, d->blob, KMS_KEY_MEDIA, &p->k_k);
	if (rc)
		return crypto_status(rc);
	d->retrievals++;
	p->audit_event = KMS_AUD_KEY_RETRIEVE;
	p->actor = d->id_b;
	p->actor_len = d->id_b_len;
	return KMS_ST_OK;
}

/* The periods the KGC issues keys for: the current month and the next (so
 * a party can fetch next month's keys before the change). */
static int period_issuable(const struct kms_id *period, uint64_t now)
{
	char cur[KMS_IBE_PERIOD_LEN + 1], next[KMS_IBE_PERIOD_LEN + 1];

	if (!kms_ibe_period_valid((const char *)period->p, period->len))
		return 0;
	kms_ibe_period(now, cur);
	kms_ibe_period_next(cur, next);
	return !memcmp(period->p, cur, KMS_IBE_PERIOD_LEN) ||
	       !memcmp(period->p, next, KMS_IBE_PERIOD_LEN);
}

/*
 * Phase 1 for IBE_KEY_REQ: party X (a user or a mailbox AS) asks for its
 * own RSK and SSK/PVT, with a fresh single-use token under its enrolled
 * key whose plaintext names X and the period. The keys are computed in
 * phase 3, after the audit record is durable.
 */
static uint16_t admit_ibe(struct kms_worker *w, struct kms_ks_txn *txn,
			  struct pending *p, uint64_t now)
{
	const struct kms_crypto_ops *ops = w->e->crypto;
	struct kms_req *r = &p->req;
	struct kms_party px;
	struct kms_ckey *kx = NULL;
	uint16_t st;
	int rc;

	p->kind = KMS_RK_IBE_KEY;
	if (!txn)
		return w->no_txn_status;
	if (!w->e->cfg.kgc)
		return KMS_ST_IBE_UNAVAILABLE;
	if (!in_skew(w->e, r->tok_x.ts_ms, now))
		return KMS_ST_STALE;
	st = party_check(w, txn, &r->id_a, KMS_PARTY_USER, &r->tok_x, now, &px);
	if (st == KMS_ST_WRONG_ROLE)
		st = party_check(w, txn, &r->id_a, KMS_PARTY_AS, &r->tok_x, now,
				 &px);
	if (st)
		return st;
	rc = ops->key_get(w->crypto, px.blob, KMS_KEY_PARTY, &kx);
	if (rc)
		return crypto_status(rc);
	st = token_check(w, kx, &r->tok_x, &r->id_a, r);
	/* The period is judged only for an authentic request. */
	if (!st && !period_issuable(&r->id_b, now))
		st = KMS_ST_BAD_PERIOD;
	if (!st)
		st = replay_check(w, &r->tok_x, p->replay_h, now);
	if (st) {
		ops->key_release(w->crypto, kx);
		return st;
	}
	kms_hasher_pair(w->hasher, &r->id_a, &r->id_b, p->pair_hash);
	p->k_recip = kx;
	p->recip_gen = px.gen;
	p->audit_event = KMS_AUD_IBE_ISSUE;
	id_store(p->dep.id_a, &p->dep.id_a_len, &r->id_a);
	id_store(p->dep.id_b, &p->dep.id_b_len, &r->id_b);
	p->actor = p->dep.id_a;
	p->actor_len = p->dep.id_a_len;
	return KMS_ST_OK;
}

/*
 * Phase 1 for one request. Leaves k_recip and k_k pinned on success.
 *
 * DEPOSIT opens Ea under Ka and Eas under Kas. RETRIEVE opens Eb under Kb;
 * its Ea is not opened again but must be byte for byte the token that
 * was opened and recorded at DEPOSIT (retrieve_decide), so a rotation of
 * A's key after the deposit does not orphan it.
 */
static uint16_t admit(struct kms_worker *w, struct kms_ks_txn *txn,
		      struct pending *p, uint64_t now, const uint8_t rnd[4])
{
	const struct kms_crypto_ops *ops = w->e->crypto;
	struct kms_req *r = &p->req;
	const struct kms_id *x_id;
	struct kms_party pa, px, pb;
	struct kms_ckey *ka = NULL, *kx = NULL;
	uint16_t st;
	int dep, rc;

	if (p->parse_bad) {
		if (p->parse_st == KMS_ST_OK)
			p->drop = 1;
		return p->parse_st ? p->parse_st : KMS_ST_MALFORMED;
	}
	if (r->hdr.type == KMS_T_IBE_KEY_REQ)
		return admit_ibe(w, txn, p, now);
	dep = r->hdr.type == KMS_T_DEPOSIT_REQ;
	x_id = dep ? &r->id_as : &r->id_b;
	p->kind = dep ? KMS_RK_DEPOSIT : KMS_RK_RETRIEVE;
	if (!txn) /* no read transaction or no random bytes for this batch */
		return w->no_txn_status;

	/* Timestamps first: cheap, and no key work for stale tokens. Ea in a
	 * RETRIEVE is the old deposit handle: it is matched, not timed. */
	if (!in_skew(w->e, r->tok_x.ts_ms, now) ||
	    (dep && !in_skew(w->e, r->tok_a.ts_ms, now)))
		return KMS_ST_STALE;

	/* A must be an active user; in a DEPOSIT its token must name A's
	 * current key. The sender of the other token likewise (the AS or B).
	 * A DEPOSIT also refuses a recipient who could never retrieve. */
	st = party_check(w, txn, &r->id_a, KMS_PARTY_USER, dep ? &r->tok_a : NULL,
			 now, &pa);
	if (!st)
		st = party_check(w, txn, x_id, dep ? KMS_PARTY_AS : KMS_PARTY_USER,
				 &r->tok_x, now, &px);
	if (!st && dep)
		st = party_check(w, txn, &r->id_b, KMS_PARTY_USER, NULL, now, &pb);
	if (st)
		return st;

	if (dep) {
		rc = ops->key_get(w->crypto, pa.blob, KMS_KEY_PARTY, &ka);
		if (rc)
			return crypto_status(rc);
	}
	rc = ops->key_get(w->crypto, px.blob, KMS_KEY_PARTY, &kx);
	if (rc) {
		st = crypto_status(rc);
		goto out;
	}
	st = dep ? token_check(w, ka, &r->tok_a, &r->id_a, r) : KMS_ST_OK;
	if (!st)
		st = token_check(w, kx, &r->tok_x, x_id, r);
	/*
	 * Only authentic tokens enter the window. Eas and Eb are single-use.
	 * Ea is the deposit's handle: not single-use (a mailbox whose reply
	 * was lost retries with a fresh Eas and the same Ea), but a DEPOSIT
	 * accepts it only within the skew of its creation.
	 */
	if (!st)
		st = replay_check(w, &r->tok_x, p->replay_h, now);
	if (st)
		goto out;

	if (dep) {
		kms_hasher_pair(w->hasher, &r->id_a, &r->id_b, p->pair_hash);
		st = deposit_decide(w, txn, p, now, rnd);
		p->k_recip = ka;
		p->recip_gen = pa.gen;
		ka = NULL;
	} else {
		st = retrieve_decide(w, txn, p, now);
		p->k_recip = kx;
		p->recip_gen = px.gen;
		kx = NULL;
	}
out:
	ops->key_release(w->crypto, ka);
	ops->key_release(w->crypto, kx);
	return st;
}

static void fill_audit(const struct pending *p, uint64_t now,
		       struct kms_audit *a)
{
	memset(a, 0, sizeof(*a));
	a->event = p->audit_event;
	a->time_ms = now;
	a->k_gen = p->dep.k_gen;
	memcpy(a->key_id, p->key_id, KMS_KEY_ID_LEN);
	memcpy(a->actor, p->actor, p->actor_len);
	a->actor_len = p->actor_len;
	memcpy(a->id_a, p->dep.id_a, p->dep.id_a_len);
	a->id_a_len = p->dep.id_a_len;
	memcpy(a->id_b, p->dep.id_b, p->dep.id_b_len);
	a->id_b_len = p->dep.id_b_len;
}

/* Write the deferred RETRIEVE records into @p txn: an audit record each,
 * their nonces packed (kms_ks_nonce_put_many). */
static int put_records(struct kms_ks_txn *txn, const struct deferred *dfr,
		       unsigned n)
{
	struct kms_ks_nonce nv[KMS_KS_NONCE_PACK];
	int rc = KMS_OK;

	for (unsigned i = 0; rc == KMS_OK && i < n; i++)
		rc = kms_ks_audit_append(txn, &dfr[i].a);
	for (unsigned i = 0; rc == KMS_OK && i < n; i += KMS_KS_NONCE_PACK) {
		unsigned m = n - i < KMS_KS_NONCE_PACK ? n - i : KMS_KS_NONCE_PACK;

		for (unsigned j = 0; j < m; j++)
			nv[j] = dfr[i + j].n;
		rc = kms_ks_nonce_put_many(txn, nv, m);
	}
	return rc;
}

/* Write the worker's own deferred RETRIEVE records into @p txn. */
static int put_deferred(struct kms_worker *w, struct kms_ks_txn *txn)
{
	return put_records(txn, w->dfr, w->ndfr);
}

static void deferred_done(struct kms_worker *w)
{
	STAT_ADD_MT(w, deferred_records, w->ndfr);
	w->ndfr = 0;
}

/* One write transaction for @p n deferred records (and a purge of as many
 * expired nonces), committed durably; counted. Any thread. */
static int commit_records(struct kms_worker *w, const struct deferred *d,
			  unsigned n, uint64_t now)
{
	struct kms_ks_txn *txn = NULL;
	uint64_t t0 = mono_us();
	int rc;

	rc = kms_ks_txn_begin(w->e->ks, 0, &txn);
	if (rc == KMS_OK)
		rc = put_records(txn, d, n);
	if (rc == KMS_OK) {
		int purged = kms_ks_nonce_purge(txn, now, 2 * n);

		rc = purged < 0 ? purged : KMS_OK;
	}
	if (rc == KMS_OK)
		rc = kms_ks_txn_commit(txn);
	else if (txn)
		kms_ks_txn_abort(txn);
	STAT_ADD_MT(w, deferred_flush_us, mono_us() - t0);
	STAT_ADD_MT(w, deferred_flushes, 1);
	if (rc == KMS_OK) {
		STAT_ADD_MT(w, deferred_records, n);
		return KMS_OK;
	}
	STAT_ADD_MT(w, deferred_failures, 1);
	KMS_ERR_RL("worker %u: commit of %u deferred RETRIEVE records failed: %s",
		w->id, n, kms_strerror(rc));
	return rc;
}

/* Commit the worker's deferred RETRIEVE records on its own thread. On
 * failure they stay (a later flush retries; new RETRIEVEs go durable
 * meanwhile). */
static void flush_deferred(struct kms_worker *w, uint64_t now)
{
	if (commit_records(w, w->dfr, w->ndfr, now) == KMS_OK) {
		w->ndfr = 0;
		return;
	}
	/* Retry no sooner than one interval later: a broken store is not
	 * hammered (nor the log flooded) from the idle loop. */
	w->dfr_retry_ms = now + w->e->cfg.deferred_flush_ms;
}

/* ------------------------------------- the commit thread (deferred_thread) */

static void *flusher_main(void *arg)
{
	struct kms_worker *w = arg;
	sigset_t all;

	/* Signals are the main thread's (kmsd waits for them there). */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_mutex_lock(&w->fl_mu);
	for (;;) {
		unsigned n;
		uint64_t now;
		int rc;

		while (!w->fl_busy && !w->fl_stop)
			pthread_cond_wait(&w->fl_cv, &w->fl_mu);
		if (!w->fl_busy)
			break;          /* stopping, nothing handed over */
		n = w->ndfr2;
		now = w->fl_now;
		pthread_mutex_unlock(&w->fl_mu);
		rc = commit_records(w, w->dfr2, n, now);
		pthread_mutex_lock(&w->fl_mu);
		if (rc == KMS_OK)
			__atomic_store_n(&w->ndfr2, 0, __ATOMIC_RELAXED);
		else
			w->fl_fail_ms = now;
		w->fl_busy = 0;
		pthread_cond_broadcast(&w->fl_cv);
	}
	pthread_mutex_unlock(&w->fl_mu);
	return NULL;
}

/*
 * The commit thread of a worker. Created from the worker's own thread,
 * it would inherit a DPDK lcore's single-CPU affinity and compete with
 * the worker it is meant to relieve: it may run on every online CPU.
 */
static int flusher_start(struct kms_worker *w)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	char name[16];
	cpu_set_t set;

	w->dfr2 = calloc(w->e->cfg.deferred_max, sizeof(*w->dfr2));
	if (!w->dfr2)
		return KMS_ERR_NOMEM;
	pthread_mutex_init(&w->fl_mu, NULL);
	pthread_cond_init(&w->fl_cv, NULL);
	if (pthread_create(&w->fl, NULL, flusher_main, w))
		return KMS_ERR_NOMEM;
	w->fl_started = 1;
	CPU_ZERO(&set);
	for (long i = 0; i < ncpu && i < CPU_SETSIZE; i++)
		CPU_SET((int)i, &set);
	if (ncpu > 0 && pthread_setaffinity_np(w->fl, sizeof(set), &set))
		KMS_INFO("worker %u: commit thread keeps the worker's CPU "
			 "affinity", w->id);
	snprintf(name, sizeof(name), "kms-commit-%u", w->id % 1000u);
	pthread_setname_np(w->fl, name);
	return KMS_OK;
}

/*
 * Hand the due records to the commit thread (the worker's buffer and the
 * thread's swap), or, after a failed commit, let it retry its own once the
 * interval passed. Never waits: while the thread is busy the records keep
 * gathering; at deferred_max, new RETRIEVEs go durable with their batch
 * (which commits the waiting records with it).
 */
static void handoff(struct kms_worker *w, uint64_t now)
{
	pthread_mutex_lock(&w->fl_mu);
	if (w->fl_busy ||
	    (w->ndfr2 && now < w->fl_fail_ms + w->e->cfg.deferred_flush_ms)) {
		pthread_mutex_unlock(&w->fl_mu);
		return;
	}
	if (!w->ndfr2) {
		struct deferred *t = w->dfr2;

		w->dfr2 = w->dfr;
		w->dfr = t;
		__atomic_store_n(&w->ndfr2, w->ndfr, __ATOMIC_RELAXED);
		w->ndfr = 0;
	}
	w->fl_busy = 1;
	w->fl_now = now;
	pthread_cond_signal(&w->fl_cv);
	pthread_mutex_unlock(&w->fl_mu);
}

/*
 * Everything that waits, committed before returning (kms_worker_idle, a
 * worker's destroy): the commit thread's buffer is waited for, a failed
 * one committed here, then the worker's own.
 */
static void flush_all(struct kms_worker *w, uint64_t now)
{
	kms_worker_commit_wait(w);
	/* The thread is idle (or gone): dfr2 is the worker's. */
	if (w->ndfr2 && commit_records(w, w->dfr2, w->ndfr2, now) == KMS_OK) {
		__atomic_store_n(&w->ndfr2, 0, __ATOMIC_RELAXED);
	}
	if (w->ndfr)
		flush_deferred(w, now);
}

/* Due records: to the commit thread, or committed here. */
static void flush_due(struct kms_worker *w, uint64_t now)
{
	if (w->fl_started)
		handoff(w, now);
	else
		flush_deferred(w, now);
}

/* Whether the waiting records are due for a commit of their own. */
static int deferred_due(const struct kms_worker *w, uint64_t now, int idle)
{
	if (!w->ndfr || now < w->dfr_retry_ms)
		return 0;
	return idle || w->ndfr >= w->e->cfg.deferred_max ||
	       now - w->dfr_oldest_ms >= w->e->cfg.deferred_flush_ms;
}

/* After admission: answer an admitted RETRIEVE without waiting for the
 * commit, its records kept for later (deferred mode, room left). */
static void defer(struct kms_worker *w, struct pending *p, uint64_t now)
{
	struct deferred *d;

	if (!w->dfr || p->kind != KMS_RK_RETRIEVE || p->status != KMS_ST_OK ||
	    w->ndfr >= w->e->cfg.deferred_max)
		return;
	d = &w->dfr[w->ndfr];
	fill_audit(p, now, &d->a);
	nonce_of(w, p, &d->n);
	if (!w->ndfr++)
		w->dfr_oldest_ms = now;
	p->deferred = 1;
}

/* Phase 2: one durable write transaction for the whole batch, with the
 * deferred records that wait. */
static void record(struct kms_worker *w, unsigned n, uint64_t now)
{
	struct kms_ks_nonce nv[BATCH_MAX];
	struct kms_ks_txn *txn = NULL;
	unsigned todo = 0, nn = 0;
	uint16_t fail;
	int rc;

	for (unsigned i = 0; i < n; i++)
		todo += w->pend[i].status == KMS_ST_OK && !w->pend[i].deferred;
	if (!todo)
		return;
	rc = kms_ks_txn_begin(w->e->ks, 0, &txn);
	for (unsigned i = 0; rc == KMS_OK && i < n; i++) {
		struct pending *p = &w->pend[i];
		struct kms_audit a;

		if (p->status != KMS_ST_OK || p->deferred)
			continue;
		if (p->kind == KMS_RK_DEPOSIT) {
			struct kms_pair now_pair;

			/* Revoked since this batch's read snapshot: the
			 * operator's word wins over the stale pair record. */
			if (kms_ks_pair_get(txn, p->dep.pair_hash, &now_pair) ==
			    KMS_OK && now_pair.revoked) {
				p->status = KMS_ST_PAIR_REVOKED;
				continue;
			}
			/* A later request of the batch may re-use this pair:
			 * its put carries the newer count and wins. */
			rc = kms_ks_deposit_put(txn, p->key_id, &p->dep, 0);
			if (rc == KMS_ERR_EXISTS) {
				p->status = KMS_ST_INTERNAL;
				rc = KMS_OK;
				continue;
			}
			kms_ks_pair_put(txn, p->dep.pair_hash, &p->pair);
		} else if (p->kind == KMS_RK_RETRIEVE) {
			kms_ks_deposit_put(txn, p->key_id, &p->dep, 1);
		}
		fill_audit(p, now, &a);
		rc = kms_ks_audit_append(txn, &a);
		if (rc)
			break; /* no key leaves without its audit record */
		/* The single-use nonce, so a replay stays refused after a
		 * restart (reloaded by reload_nonces); packed below. */
		nonce_of(w, p, &nv[nn++]);
	}
	if (rc == KMS_OK)
		rc = kms_ks_nonce_put_many(txn, nv, nn);
	/* The deferred records ride along (this batch's own too). */
	if (rc == KMS_OK && w->ndfr)
		rc = put_deferred(w, txn);
	/* Keep the nonce table bounded: drop at least as many expired
	 * entries as this batch adds. */
	if (rc == KMS_OK) {
		int purged = kms_ks_nonce_purge(txn, now, 2 * (n + w->ndfr));
		rc = purged < 0 ? purged : KMS_OK;
	}
	if (rc == KMS_OK)
		rc = kms_ks_txn_commit(txn);
	else if (txn)
		kms_ks_txn_abort(txn);
	STAT_INC(w, commits);
	STAT_INC(w, commit_size[log2_bucket(todo)]);
	STAT_ADD(w, commit_size_sum, todo);
	if (rc == KMS_OK) {
		STAT_ADD(w, committed_requests, todo);
		if (w->ndfr)
			deferred_done(w);
		return;
	}
	STAT_INC(w, commit_failures);
	fail = rc == KMS_ERR_MAPFULL ? KMS_ST_STORE_FULL : KMS_ST_STORE_FAILED;
	KMS_ERR_RL("worker %u: commit of %u requests failed: %s", w->id, todo,
		kms_strerror(rc));
	for (unsigned i = 0; i < n; i++)
		if (w->pend[i].status == KMS_ST_OK && !w->pend[i].deferred)
			w->pend[i].status = fail;
}

/* Phase 3 for IBE_KEY_REQ: RSK | SSK | PVT sealed under X's key, bound to
 * X, the period, X's key generation, the KGC and the request's nonce. */
static void answer_ibe(struct kms_worker *w, struct pending *p,
		       struct kms_msg *m, const uint8_t iv[KMS_NONCE_LEN])
{
	const struct kms_req *r = &p->req;
	const struct kms_kgc *kgc = w->e->cfg.kgc;
	uint8_t ad[8 + 2 + 2 * KMS_ID_MAX + 4 + KMS_KGC_ID_LEN + KMS_NONCE_LEN];
	uint8_t pt[KMS_IBE_KEYS_PT_LEN];
	uint8_t box[KMS_IBE_RESP_BODY_LEN - KMS_KGC_ID_LEN];
	char period[KMS_IBE_PERIOD_LEN + 1];
	const uint8_t *kgc_id = kms_kgc_params(kgc)->kgc_id;
	size_t ad_len;
	int len, rc;

	memcpy(period, r->id_b.p, KMS_IBE_PERIOD_LEN);
	period[KMS_IBE_PERIOD_LEN] = 0;
	rc = kms_kgc_issue(kgc, &r->id_a, period, pt);
	if (rc) {
		KMS_ERR_RL("worker %u: IBE key issue failed: %s", w->id,
			kms_strerror(rc));
		p->status = KMS_ST_INTERNAL;
		return;
	}
	ad_len = kms_ibe_resp_ad(&r->id_a, &r->id_b, p->recip_gen, kgc_id,
				 r->tok_x.nonce, ad);
	memcpy(box, iv, KMS_NONCE_LEN);
	rc = w->e->crypto->seal(w->crypto, p->k_recip, iv, ad, ad_len, pt,
				sizeof(pt), box + KMS_NONCE_LEN,
				box + KMS_NONCE_LEN + sizeof(pt));
	if (rc) {
		KMS_ERR_RL("worker %u: sealing IBE keys failed: %s", w->id,
			kms_strerror(rc));
		explicit_bzero(pt, sizeof(pt));
		p->status = rc == KMS_ERR_HSM ? KMS_ST_HSM_FAILED
					      : KMS_ST_INTERNAL;
		return;
	}
	explicit_bzero(pt, sizeof(pt));
	len = kms_ibe_resp_encode(r->hdr.txid, kgc_id, box, m->resp,
				  m->resp_cap);
	if (len < 0) {
		p->status = KMS_ST_INTERNAL;
		return;
	}
	m->resp_len = (uint16_t)len;
	STAT_INC(w, ibe_keys_issued);
}

/* Phase 3: the keybox, bound to the request (its token nonce, both IDs,
 * the key id) so it cannot answer another request. */
static void answer(struct kms_worker *w, struct pending *p, struct kms_msg *m,
		   const uint8_t iv[KMS_NONCE_LEN])
{
	const struct kms_req *r = &p->req;
	uint8_t ad[8 + 2 + 4 + 2 + 2 * KMS_ID_MAX + 16 + 4 + 8 + 12];
	uint8_t box[KMS_KEYBOX_LEN];
	uint8_t type = p->kind == KMS_RK_DEPOSIT ? KMS_T_DEPOSIT_RESP
						 : KMS_T_RETRIEVE_RESP;
	uint8_t role = p->kind == KMS_RK_DEPOSIT ? KMS_ROLE_A : KMS_ROLE_B;
	const struct kms_token *bound = p->kind == KMS_RK_DEPOSIT ? &r->tok_a
								  : &r->tok_x;
	size_t ad_len;
	int len, rc;

	ad_len = kms_keybox_ad(type, role, p->recip_gen, &r->id_a, &r->id_b,
			       p->key_id, p->dep.k_gen, p->dep.expiry_ms,
			       bound->nonce, ad);
	memcpy(box, iv, KMS_NONCE_LEN);
	rc = w->e->crypto->seal_key(w->crypto, p->k_recip, p->k_k, iv, ad,
				    ad_len, box + KMS_NONCE_LEN,
				    box + KMS_NONCE_LEN + KMS_KEY_LEN);
	if (rc) {
		/* Committed, but the box cannot be sealed: the requester
		 * gets no key (a DEPOSIT is simply made again). */
		p->status = rc == KMS_ERR_HSM ? KMS_ST_HSM_FAILED
					      : KMS_ST_INTERNAL;
		return;
	}
	len = kms_key_resp_encode(type, r->hdr.txid, p->key_id, p->dep.k_gen,
				  p->dep.expiry_ms, box, m->resp, m->resp_cap);
	if (len < 0) {
		p->status = KMS_ST_INTERNAL;
		return;
	}
	m->resp_len = (uint16_t)len;
	if (p->kind == KMS_RK_DEPOSIT && p->audit_event == KMS_AUD_KEY_NEW)
		STAT_INC(w, keys_new);
	else if (p->kind == KMS_RK_DEPOSIT)
		STAT_INC(w, keys_reused);
	else
		STAT_INC(w, retrievals);
}

/* One batch of at most batch_max requests through the three phases. */
static unsigned process_batch(struct kms_worker *w, struct kms_msg *msgs,
			      unsigned n)
{
	const struct kms_crypto_ops *ops = w->e->crypto;
	uint8_t rnd[BATCH_MAX][4 + KMS_NONCE_LEN];
	const uint8_t *tok_nonce[BATCH_MAX];
	uint8_t tok_role[BATCH_MAX];
	uint32_t tok_h[BATCH_MAX];
	uint16_t tok_of[BATCH_MAX];
	struct kms_ks_txn *rtxn = NULL;
	unsigned replies = 0, ntok = 0;
	uint64_t now, t0;
	int rc;

	now = w->e->cfg.now_ms(w->e->cfg.now_arg);
	w->last_batch_ms = now;
	/* Deferred records due: the oldest waited long enough, or the buffer
	 * is full (then RETRIEVEs would go durable one batch at a time). */
	if (deferred_due(w, now, 0))
		flush_due(w, now);
	/* The batch's own time starts here: a flush is counted in
	 * deferred_flush_us, not twice. */
	t0 = mono_us();
	/* Key id salt and keybox IVs for the whole batch in one call; without
	 * fresh IVs nothing may be sealed, so the batch is refused. */
	if (RAND_bytes(&rnd[0][0], (int)(n * sizeof(rnd[0]))) != 1)
		rc = KMS_ERR_CRYPTO;
	else
		rc = kms_ks_txn_renew(w->rtxn);
	/* A store that cannot even be read refuses the batch STORE_FAILED
	 * (nothing was recorded); no random bytes is an internal failure. */
	w->no_txn_status = rc == KMS_ERR_CRYPTO ? KMS_ST_INTERNAL
						: KMS_ST_STORE_FAILED;
	/* The party cache holds for this batch if the snapshot's party
	 * epoch is the one its slots were read under. */
	w->pcache_ok = 0;
	w->pair_revocations = 1;
	if (!rc) {
		uint64_t epoch, revoked;

		rtxn = w->rtxn;
		if (kms_ks_party_epoch(rtxn, &epoch) == KMS_OK) {
			w->pcache_ok = 1;
			w->pepoch = epoch;
		}
		if (kms_ks_pairs_revoked(rtxn, &revoked) == KMS_OK)
			w->pair_revocations = revoked != 0;
	}
	/* Parse the whole batch first: the replay window's slots of all its
	 * tokens are then looked up together (cache and TLB misses, in a
	 * window of hundreds of MB, overlapped), and again a few requests
	 * ahead of each check (the batch's work in between evicts them). */
	for (unsigned i = 0; i < n; i++) {
		struct pending *p = &w->pend[i];

		memset(p, 0, offsetof(struct pending, pair));
		p->kind = KMS_RK_OTHER;
		msgs[i].resp_len = 0;
		if (kms_req_parse(msgs[i].req, msgs[i].req_len, &p->req,
				  &p->parse_st)) {
			p->parse_bad = 1;
			continue;
		}
		tok_of[ntok] = (uint16_t)i;
		tok_role[ntok] = p->req.tok_x.role;
		tok_nonce[ntok++] = p->req.tok_x.nonce;
	}
	kms_replay_prefetch_many(w->replay, ntok, tok_role, tok_nonce, tok_h);
	for (unsigned k = 0; k < ntok; k++)
		w->pend[tok_of[k]].replay_h = tok_h[k];
	memset(w->by_key, 0, sizeof(w->by_key));
	memset(w->by_pair, 0, sizeof(w->by_pair));
	for (unsigned i = 0; i < n; i++) {
		struct pending *p = &w->pend[i];

		if (i + REPLAY_AHEAD < n)
			kms_replay_prefetch_h(w->replay,
					      w->pend[i + REPLAY_AHEAD].replay_h);
		p->status = admit(w, rtxn, p, now, rnd[i]);
		batch_index(w, i);
		defer(w, p, now);
	}
	if (rc)
		KMS_ERR_RL("worker %u: batch refused: %s", w->id, kms_strerror(rc));
	else
		kms_ks_txn_reset(w->rtxn);

	record(w, n, now);

	for (unsigned i = 0; i < n; i++) {
		struct pending *p = &w->pend[i];
		struct kms_msg *m = &msgs[i];
		int len;

		if (p->status == KMS_ST_OK && p->kind == KMS_RK_IBE_KEY)
			answer_ibe(w, p, m, rnd[i] + 4);
		else if (p->status == KMS_ST_OK)
			answer(w, p, m, rnd[i] + 4);
		ops->key_release(w->crypto, p->k_recip);
		ops->key_release(w->crypto, p->k_k);
		m->status = p->status;
		STAT_INC(w, by_status[p->kind][p->status]);
		if (p->drop) {
			STAT_INC(w, drops[KMS_DROP_NOT_KMS]);
			continue;
		}
		if (p->status != KMS_ST_OK) {
			len = kms_error_encode(p->req.hdr.txid, p->status,
					       m->resp, m->resp_cap);
			if (len < 0) {
				STAT_INC(w, drops[KMS_DROP_NO_SPACE]);
				continue;
			}
			m->resp_len = (uint16_t)len;
		}
		replies++;
	}
	explicit_bzero(rnd, sizeof(rnd));
	STAT_INC(w, batches);
	STAT_ADD(w, requests, n);
	t0 = mono_us() - t0;
	STAT_INC(w, batch_us[log2_bucket(t0)]);
	STAT_ADD(w, batch_us_sum, t0);
	return replies;
}

unsigned kms_worker_process(struct kms_worker *w, struct kms_msg *msgs,
			    unsigned n)
{
	struct kms_crypto_stats cs;
	unsigned replies = 0;

	/* One policy set for the whole call: a swap waits for it to end. */
	urcu_bp_read_lock();
	w->pset = rcu_dereference(w->e->pset);
	for (unsigned off = 0; off < n; off += w->e->cfg.batch_max) {
		unsigned k = n - off;

		if (k > w->e->cfg.batch_max)
			k = w->e->cfg.batch_max;
		replies += process_batch(w, msgs + off, k);
	}
	w->pset = NULL;
	urcu_bp_read_unlock();
	w->e->crypto->stats(w->crypto, &cs);
	__atomic_store_n(&w->st.cache_hits, cs.hits, __ATOMIC_RELAXED);
	__atomic_store_n(&w->st.cache_misses, cs.misses, __ATOMIC_RELAXED);
	__atomic_store_n(&w->st.cache_evictions, cs.evictions, __ATOMIC_RELAXED);
	__atomic_store_n(&w->st.keys_pooled, cs.pool_hits, __ATOMIC_RELAXED);
	__atomic_store_n(&w->st.hsm_calls, kms_hsm_session_calls(w->hsm),
			 __ATOMIC_RELAXED);
	return replies;
}

static unsigned idle(struct kms_worker *w, unsigned max, int polling)
{
	const struct kms_crypto_ops *ops = w->e->crypto;
	unsigned made;

	/* kms_worker_idle() with a commit thread: the commit in flight is
	 * over when it returns, and a failed one is retried here when due. */
	if (w->fl_started && !polling) {
		uint64_t now = w->e->cfg.now_ms(w->e->cfg.now_arg);

		kms_worker_commit_wait(w);
		if (w->ndfr2 && now >= w->fl_fail_ms + w->e->cfg.deferred_flush_ms) {
			if (commit_records(w, w->dfr2, w->ndfr2, now) == KMS_OK) {
				__atomic_store_n(&w->ndfr2, 0, __ATOMIC_RELAXED);
			} else {
				w->fl_fail_ms = now;
			}
		}
	}
	/* Nothing to serve: make the deferred records durable now; a polling
	 * caller only once no batch has come for KMS_IDLE_QUIET_MS (a gap
	 * between two batches under load is not idle time), and through the
	 * commit thread if there is one. */
	if (w->ndfr) {
		uint64_t now = w->e->cfg.now_ms(w->e->cfg.now_arg);
		int quiet = !polling ||
			    now - w->last_batch_ms >= KMS_IDLE_QUIET_MS;

		if (deferred_due(w, now, quiet)) {
			if (polling)
				flush_due(w, now);
			else
				flush_deferred(w, now);
		}
	}
	made = ops->refill ? ops->refill(w->crypto, max) : 0;

	if (made)
		__atomic_store_n(&w->st.hsm_calls, kms_hsm_session_calls(w->hsm),
				 __ATOMIC_RELAXED);
	return made;
}

unsigned kms_worker_idle(struct kms_worker *w, unsigned max)
{
	return idle(w, max, 0);
}

unsigned kms_worker_idle_poll(struct kms_worker *w, unsigned max)
{
	return idle(w, max, 1);
}

void kms_worker_commit_wait(struct kms_worker *w)
{
	if (!w->fl_started)
		return;
	pthread_mutex_lock(&w->fl_mu);
	while (w->fl_busy)
		pthread_cond_wait(&w->fl_cv, &w->fl_mu);
	pthread_mutex_unlock(&w->fl_mu);
}

unsigned kms_worker_deferred(const struct kms_worker *w)
{
	return w->ndfr + __atomic_load_n(&w->ndfr2, __ATOMIC_RELAXED);
}

void kms_worker_stats(const struct kms_worker *w, struct kms_stats *out)
{
	const uint64_t *src = (const uint64_t *)(const void *)&w->st;
	uint64_t *dst = (uint64_t *)(void *)out;

	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

void kms_stats_add(struct kms_stats *a, const struct kms_stats *b)
{
	uint64_t *d = (uint64_t *)(void *)a;
	const uint64_t *s = (const uint64_t *)(const void *)b;

	for (size_t i = 0; i < sizeof(*a) / sizeof(uint64_t); i++)
		d[i] += s[i];
}
