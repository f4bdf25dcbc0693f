/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file engine_fixture.h
 * @brief A real engine for tests: SoftHSM2 token, KEK, LMDB store, enrolled
 *        parties whose raw keys the test keeps to play the clients, and a
 *        clock the test moves.
 *
 * Nothing is mocked: parties are enrolled the way kmsctl does it
 * (kms_hsm_new_key, kms_ks_party_put), requests are built with the client
 * token code (kms_token_seal + the proto encoders) and go through
 * kms_worker_process.
 */
#ifndef ENGINE_FIXTURE_H
#define ENGINE_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "kms_engine.h"
#include "kms_hsm.h"
#include "kms_ks.h"
#include "kms_proto.h"
#include "kms_testenv.h"

#define EFX_T0 1700000000000ull  /* the test clock's start, ms */
#define EFX_SKEW 30000u
#define EFX_LIFETIME_S 86400u
#define EFX_MAX_WORKERS 2
#define EFX_RESP_CAP 128
#define EFX_BATCH 64            /* the fixture's default batch_max */

/** An enrolled party; the test holds its raw key to act as the client. */
struct efx_party {
	char name[KMS_ID_MAX + 1];
	struct kms_id id;
	uint8_t kind;                  /**< enum kms_party_kind */
	uint32_t gen;
	uint8_t key[KMS_KEY_LEN];
};

/** Indexes into efx.p[]. Users first (pairs are built from them). */
enum {
	P_A, P_B, P_C, P_D, P_E, P_F,  /* users: alice, bob, carol, dave, erin, frank */
	P_AS, P_AS2,                   /* mailbox servers */
	P__COUNT
};
#define EFX_NUSERS 6
#define EFX_NPAIRS (EFX_NUSERS * (EFX_NUSERS - 1))  /* ordered user pairs */

struct efx {
	struct kms_testenv env;
	struct kms_hsm *hsm;
	struct kms_ks *ks;
	size_t map_size;
	struct kms_engine_config cfg;
	struct kms_engine *eng;
	struct kms_worker *w[EFX_MAX_WORKERS];
	struct kms_hasher *hasher;     /**< the test thread's */
	unsigned batch_max;            /**< kept by restarts; EFX_BATCH */
	unsigned deferred_max;         /**< kept by restarts; 0 = durable */
	uint32_t deferred_flush_ms;
	int deferred_thread;           /**< kept by restarts */
	uint32_t replay_capacity;      /**< kept by restarts; 0 = 4096 */
	uint32_t cache_keys;           /**< 0: KMS_ENGINE_CACHE_MIN(batch_max) */
	uint64_t now;                  /**< what the engine's clock returns */
	uint32_t txid;
	struct efx_party p[P__COUNT];
};

/** A sealed token and the nonce it carries. */
struct efx_tok {
	uint8_t b[KMS_TOKEN_MAX];
	uint16_t len;
	uint8_t nonce[KMS_NONCE_LEN];
};

/** A request datagram. */
struct efx_dgram {
	uint8_t b[KMS_DGRAM_MAX + 64];
	uint16_t len;
};

/** A reply as the engine produced it, parsed when there is one. */
struct efx_reply {
	uint8_t b[EFX_RESP_CAP];
	uint16_t len;          /**< 0: dropped */
	uint16_t msg_status;   /**< kms_msg.status */
	uint16_t status;       /**< status on the wire (OK for a key reply) */
	struct kms_resp r;
};

/** One DEPOSIT as the mailbox and A see it. */
struct efx_dep {
	const struct efx_party *a, *b, *as;
	struct efx_tok ea, eas;
	struct efx_dgram req;
	struct efx_reply rep;
	uint8_t key_id[KMS_KEY_ID_LEN];
	uint32_t k_gen;
	uint64_t expiry_ms;
	uint8_t k[KMS_KEY_LEN];        /**< K as A opened it (status OK only) */
};

/** One RETRIEVE as B sees it. */
struct efx_ret {
	struct efx_tok eb;
	struct efx_dgram req;
	struct efx_reply rep;
	uint8_t k[KMS_KEY_LEN];        /**< K as B opened it (status OK only) */
};

/* ---- life cycle ---- */

/** cmocka setup: efx_setup (default map, or EFX_TINY_MAP) and one worker
 *  under efx_policy(); teardown undoes it. */
int efx_cm_setup(void **state);
int efx_cm_setup_tiny(void **state);
int efx_cm_teardown(void **state);
/* A map that holds the store, the parties and a few dozen deposits.
 * Measured: init and the enrolment of eight parties fit in 32 KiB, 64 KiB
 * takes one deposit, 96 KiB a few dozen (4 KiB pages, copy-on-write). */
#define EFX_TINY_MAP (96 * 1024)

/** Token, KEK, store (@p map_size bytes, 0 = default) and every party of
 *  efx.p enrolled. Fails the test on error. */
void efx_setup(struct efx *f, size_t map_size);
/** Engine with @p nworkers workers under @p pol (offload, skew 30 s,
 *  4096 nonces, batches of f->batch_max, f->cache_keys cached keys, the
 *  test clock). Workers reload the store's live nonces. */
void efx_start(struct efx *f, const struct kms_policy *pol, unsigned nworkers);
void efx_stop(struct efx *f);
/** Stop, close store and HSM, reopen both from disk (map @p map_size, 0 =
 *  keep) and start again with the same configuration. */
void efx_restart(struct efx *f, size_t map_size);
/** Stop and start again under @p pol with @p nworkers (same store, whose
 *  live nonces the new workers reload). */
void efx_reconfigure(struct efx *f, const struct kms_policy *pol,
		     unsigned nworkers);
void efx_teardown(struct efx *f);
/** The default policy: no re-use, 1 day lifetime, unlimited retrievals. */
struct kms_policy efx_policy(void);
/** efx_policy() with re-use for @p n deposits and @p age_s seconds. */
struct kms_policy efx_reuse_policy(uint32_t n, uint32_t age_s);

/** Set a party's status (and generation) in the store, as kmsctl would. */
void efx_party_set(struct efx *f, const struct efx_party *pt, uint8_t status,
		   uint32_t gen);
/** Rotate a party's key as kmsctl would: a new key from the HSM, the next
 *  generation, a new blob; the test's copy (key, gen) follows. */
void efx_party_rotate(struct efx *f, struct efx_party *pt);
/** Change a party's kind in the store (re-enrolled as a user or an AS). */
void efx_party_kind(struct efx *f, const struct efx_party *pt, uint8_t kind);
/** Plant @p n single-use nonces of pair (a, b) in the store's "nonces" DB,
 *  in one commit: @p nonce, or random ones when NULL. */
void efx_nonce_plant(struct efx *f, uint64_t expire_ms, uint8_t role,
		     const uint8_t *nonce, unsigned n,
		     const struct efx_party *a, const struct efx_party *b);
/** Nonces in the store that expire before @p t_ms. */
unsigned efx_nonces_before(struct efx *f, uint64_t t_ms);

/* ---- building requests ---- */

/** Seal a token of @p role for @p sealer (the party id in its AD) under
 *  @p key of generation @p gen over (@p a, @p b) at @p ts. */
void efx_tok(struct efx_tok *t, uint8_t role, const struct kms_id *sealer,
	     const uint8_t *key, uint32_t gen, uint64_t ts,
	     const struct kms_id *a, const struct kms_id *b);
/** The honest token of @p pt for (a, b) now. */
void efx_tok_of(struct efx *f, struct efx_tok *t, uint8_t role,
		const struct efx_party *pt, const struct efx_party *a,
		const struct efx_party *b);
void efx_deposit_req(struct efx *f, struct efx_dgram *d, const struct kms_id *a,
		     const struct kms_id *b, const struct kms_id *as,
		     const struct efx_tok *ea, const struct efx_tok *eas);
void efx_retrieve_req(struct efx *f, struct efx_dgram *d,
		      const struct kms_id *a, const struct kms_id *b,
		      const uint8_t key_id[KMS_KEY_ID_LEN],
		      const struct efx_tok *ea, const struct efx_tok *eb);

/** Set a datagram's body_len to what its length says. */
void efx_fix_body_len(struct efx_dgram *d);

/* ---- running ---- */

/** Process @p n datagrams in one kms_worker_process call on worker @p wi
 *  (the engine cuts it into batches of batch_max). @return replies. */
unsigned efx_run(struct efx *f, unsigned wi, const struct efx_dgram *req,
		 struct efx_reply *rep, unsigned n);
/** One datagram on the worker that owns it. @return the wire status
 *  (KMS_ST__COUNT for a drop). */
uint16_t efx_run1(struct efx *f, const struct efx_dgram *req,
		  struct efx_reply *rep);
/** The worker that owns @p req (kms_engine_worker_for). */
unsigned efx_owner(struct efx *f, const struct efx_dgram *req);

/** Honest tokens at f->now, request, no run. */
void efx_dep_build(struct efx *f, struct efx_dep *d, const struct efx_party *a,
		   const struct efx_party *b, const struct efx_party *as);
/** After a run: on OK, check the reply and open Ea(K) as A into d->k. */
void efx_dep_finish(struct efx_dep *d);
/** Build, run alone, finish. @return the wire status. */
uint16_t efx_deposit(struct efx *f, struct efx_dep *d, const struct efx_party *a,
		     const struct efx_party *b, const struct efx_party *as);

/** B's fresh Eb at f->now, the deposit's handle, request, no run. */
void efx_ret_build(struct efx *f, struct efx_ret *r, const struct efx_dep *d,
		   const struct efx_party *b);
/** After a run: on OK, check the reply and open Eb(K) as @p b into r->k. */
void efx_ret_finish(struct efx_ret *r, const struct efx_dep *d,
		    const struct efx_party *b);
uint16_t efx_retrieve(struct efx *f, struct efx_ret *r, const struct efx_dep *d,
		      const struct efx_party *b);

/**
 * An honest (A, B, AS) DEPOSIT broken in way @p how: 0 Eas under Kb, 1 a
 * copy of @p earlier (an accepted request), 2 via AS2 (the caller revoked
 * it), 3 plain ID-B not the tokens', 4 stale Ea, 5 truncated (a drop),
 * 6 bad version, 7+ short body.
 * @return the status it must get (KMS_ST__COUNT: dropped).
 */
uint16_t efx_dep_broken(struct efx *f, struct efx_dep *d, unsigned how,
			const struct efx_dgram *earlier);

/** A DEPOSIT / RETRIEVE from explicit parts, run alone on its owner.
 *  @return the wire status. */
uint16_t efx_dep_with(struct efx *f, const struct kms_id *a,
		      const struct kms_id *b, const struct kms_id *as,
		      const struct efx_tok *ea, const struct efx_tok *eas);
uint16_t efx_ret_with(struct efx *f, const struct kms_id *a,
		      const struct kms_id *b, const uint8_t *key_id,
		      const struct efx_tok *ea, const struct efx_tok *eb);

/** Ordered pair @p n (0..EFX_NPAIRS-1) of distinct users. */
void efx_user_pair(struct efx *f, unsigned n, const struct efx_party **a,
		   const struct efx_party **b);
/** A user pair that worker @p wi of @p nworkers owns (fails if none). */
void efx_pair_of_worker(struct efx *f, unsigned nworkers, unsigned wi,
			const struct efx_party **a, const struct efx_party **b);
/** efx_dep_build of d[i] for user pair i % EFX_NPAIRS via @p as, i < n;
 *  copies each request to req[i] unless @p req is NULL. */
void efx_dep_build_pairs(struct efx *f, struct efx_dep *d,
			 struct efx_dgram *req, unsigned n,
			 const struct efx_party *as);
/** efx_dep_build_pairs of @p n deposits, run as one call on worker 0
 *  (req, rep: n entries each): every one answered OK, each finished. */
void efx_dep_run_pairs(struct efx *f, struct efx_dep *d,
		       struct efx_dgram *req, struct efx_reply *rep, unsigned n,
		       const struct efx_party *as);
/** Run @p d alone on worker 0: it must be dropped (counted in @p drops)
 *  or refused with an ERROR. Counts @p sent. */
void efx_expect_refused(struct efx *f, const struct efx_dgram *d,
			unsigned *sent, unsigned *drops);

/** kms_engine_create with @p cfg on the fixture's HSM and store, then
 *  destroy. @return its result (no engine is returned on failure). */
int efx_engine_try(struct efx *f, const struct kms_engine_config *cfg);
/** With the engine stopped: create an engine of f->cfg but @p nworkers
 *  and @p replay_capacity, and worker @p wi of it; destroy both.
 *  @return kms_worker_create's result. */
int efx_worker_try(struct efx *f, unsigned nworkers, uint32_t replay_capacity,
		   unsigned wi);

/* ---- looking into the store ---- */

struct kms_ks_counts efx_counts(struct efx *f);
/** The pair record of (@p a, @p b); fails the test if there is none. */
void efx_pair_get(struct efx *f, const struct efx_party *a,
		  const struct efx_party *b, struct kms_pair *out);
/** What the audit DB holds, from kms_ks_audit_foreach. */
struct efx_audit_scan {
	unsigned n, key_new, key_reuse, key_retrieve;
	unsigned with_k;               /**< records containing @p k's bytes */
	struct kms_audit new_rec, ret_rec;   /**< the last of each */
};
void efx_audit_scan(struct efx *f, const uint8_t k[KMS_KEY_LEN],
		    struct efx_audit_scan *out);
/** An audit ID field equals @p p's ID. */
void efx_assert_id(const char *got, uint8_t len, const struct efx_party *p);

/** The whole data.mdb file (malloc'ed, caller frees). */
uint8_t *efx_read_store(struct efx *f, size_t *len);

/** Open a reply's keybox. @return kms_keybox_open's result. */
int efx_open(const struct efx_reply *rep, uint8_t role,
	     const struct efx_party *recip, const struct efx_party *a,
	     const struct efx_party *b, const uint8_t nonce[KMS_NONCE_LEN],
	     uint8_t k[KMS_KEY_LEN]);

/** 1 if @p needle (@p nlen bytes) occurs in @p hay. */
int efx_contains(const void *hay, size_t hlen, const void *needle, size_t nlen);

/** The worker of pair (a, b) among @p nworkers, from kms_pair_hash. */
unsigned efx_pair_worker(const struct efx_party *a, const struct efx_party *b,
			 unsigned nworkers);

/** Sum of every worker's counters. */
void efx_stats(struct efx *f, struct kms_stats *out);

#endif /* ENGINE_FIXTURE_H */
