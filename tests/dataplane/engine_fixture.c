// SPDX-License-Identifier: Apache-2.0
/*
 * The engine test fixture: real SoftHSM2, real LMDB, parties enrolled the
 * way kmsctl enrolls them, clients played with the client token code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "engine_fixture.h"
#include "kms_token.h"

static const struct {
	const char *name;
	uint8_t kind;
} parties[P__COUNT] = {
	[P_A] = { "sip:alice@example.org", KMS_PARTY_USER },
	[P_B] = { "sip:bob@example.org", KMS_PARTY_USER },
	[P_C] = { "sip:carol@example.org", KMS_PARTY_USER },
	[P_D] = { "sip:dave@example.org", KMS_PARTY_USER },
	[P_E] = { "sip:erin@example.org", KMS_PARTY_USER },
	[P_F] = { "sip:frank@example.org", KMS_PARTY_USER },
	[P_AS] = { "mailbox.example.org", KMS_PARTY_AS },
	[P_AS2] = { "mailbox2.example.org", KMS_PARTY_AS },
};

static uint64_t test_clock(void *arg)
{
	return *(const uint64_t *)arg;
}

static void open_store(struct efx *f, int create)
{
	struct kms_ks_config kc = { .path = f->env.store,
				    .map_size = f->map_size, .create = create };

	assert_int_equal(kms_ks_open(&kc, &f->ks), KMS_OK);
}

/* What `kmsctl enroll` does for each party, in one write transaction. */
static void enrol_all(struct efx *f)
{
	struct kms_hsm_session *s = NULL;
	struct kms_ks_txn *txn = NULL;

	assert_int_equal(kms_hsm_session_open(f->hsm, &s), KMS_OK);
	assert_int_equal(kms_ks_txn_begin(f->ks, 0, &txn), KMS_OK);
	for (unsigned i = 0; i < P__COUNT; i++) {
		struct efx_party *pt = &f->p[i];
		struct kms_party rec;

		snprintf(pt->name, sizeof(pt->name), "%s", parties[i].name);
		assert_int_equal(kms_id_from_str(pt->name, &pt->id), KMS_OK);
		pt->kind = parties[i].kind;
		pt->gen = 1;
		memset(&rec, 0, sizeof(rec));
		rec.kind = pt->kind;
		rec.status = KMS_PARTY_ACTIVE;
		rec.gen = 1;
		rec.created_ms = f->now;
		assert_int_equal(kms_hsm_new_key(s, pt->key, rec.blob), KMS_OK);
		assert_int_equal(kms_ks_party_put(txn, &pt->id, &rec), KMS_OK);
	}
	assert_int_equal(kms_ks_txn_commit(txn), KMS_OK);
	kms_hsm_session_close(s);
}

struct kms_policy efx_policy(void)
{
	struct kms_policy pol = {
		.reuse_max_deposits = 0,
		.reuse_max_age_s = 0,
		.deposit_lifetime_s = EFX_LIFETIME_S,
		.max_retrievals = 0,
	};

	return pol;
}

struct kms_policy efx_reuse_policy(uint32_t n, uint32_t age_s)
{
	struct kms_policy pol = efx_policy();

	pol.reuse_max_deposits = n;
	pol.reuse_max_age_s = age_s;
	return pol;
}

void efx_setup(struct efx *f, size_t map_size)
{
	memset(f, 0, sizeof(*f));
	f->now = EFX_T0;
	f->map_size = map_size;
	f->batch_max = EFX_BATCH;
	f->hasher = kms_hasher_new();
	assert_non_null(f->hasher);
	assert_int_equal(kms_testenv_setup(&f->env), 0);
	assert_int_equal(kms_hsm_open(&f->env.hsm, &f->hsm), KMS_OK);
	assert_int_equal(kms_hsm_kek_create(f->hsm), KMS_OK);
	open_store(f, 1);
	enrol_all(f);
}

static int cm_setup(void **state, size_t map)
{
	struct efx *f = calloc(1, sizeof(*f));
	struct kms_policy pol = efx_policy();

	if (!f)
		return -1;
	efx_setup(f, map);
	efx_start(f, &pol, 1);
	*state = f;
	return 0;
}

int efx_cm_setup(void **state)
{
	return cm_setup(state, 0);
}

int efx_cm_setup_tiny(void **state)
{
	return cm_setup(state, EFX_TINY_MAP);
}

int efx_cm_teardown(void **state)
{
	struct efx *f = *state;

	efx_teardown(f);
	free(f);
	return 0;
}

void efx_start(struct efx *f, const struct kms_policy *pol, unsigned nworkers)
{
	assert_true(nworkers >= 1 && nworkers <= EFX_MAX_WORKERS);
	memset(&f->cfg, 0, sizeof(f->cfg));
	/* The whole suite runs once per crypto mode (CMakeLists.txt). */
	f->cfg.crypto_mode = getenv("KMS_TEST_CRYPTO_MODE")
				     ? getenv("KMS_TEST_CRYPTO_MODE") : "offload";
	f->cfg.policy = *pol;
	f->cfg.max_skew_ms = EFX_SKEW;
	f->cfg.replay_capacity = f->replay_capacity ? f->replay_capacity : 4096;
	f->cfg.batch_max = f->batch_max;
	f->cfg.deferred_max = f->deferred_max;
	f->cfg.deferred_flush_ms = f->deferred_flush_ms;
	f->cfg.deferred_thread = f->deferred_thread;
	f->cfg.cache_keys = f->cache_keys ? f->cache_keys
					  : KMS_ENGINE_CACHE_MIN(f->batch_max);
	f->cfg.nworkers = nworkers;
	f->cfg.now_ms = test_clock;
	f->cfg.now_arg = &f->now;
	assert_int_equal(kms_engine_create(&f->cfg, f->hsm, f->ks, &f->eng),
			 KMS_OK);
	for (unsigned i = 0; i < nworkers; i++)
		assert_int_equal(kms_worker_create(f->eng, i, &f->w[i]), KMS_OK);
}

void efx_stop(struct efx *f)
{
	for (unsigned i = 0; i < EFX_MAX_WORKERS; i++) {
		kms_worker_destroy(f->w[i]);
		f->w[i] = NULL;
	}
	kms_engine_destroy(f->eng);
	f->eng = NULL;
}

void efx_restart(struct efx *f, size_t map_size)
{
	struct kms_policy pol = f->cfg.policy;
	unsigned nworkers = f->cfg.nworkers;

	efx_stop(f);
	kms_ks_close(f->ks);
	f->ks = NULL;
	kms_hsm_close(f->hsm);
	f->hsm = NULL;
	if (map_size)
		f->map_size = map_size;
	assert_int_equal(kms_hsm_open(&f->env.hsm, &f->hsm), KMS_OK);
	open_store(f, 0);
	efx_start(f, &pol, nworkers);
}

void efx_reconfigure(struct efx *f, const struct kms_policy *pol,
		     unsigned nworkers)
{
	struct kms_policy copy = *pol;

	efx_stop(f);
	efx_start(f, &copy, nworkers);
}

void efx_teardown(struct efx *f)
{
	efx_stop(f);
	kms_ks_close(f->ks);
	kms_hsm_close(f->hsm);
	kms_testenv_teardown(&f->env);
	kms_hasher_free(f->hasher);
	f->hasher = NULL;
	explicit_bzero(f->p, sizeof(f->p));
}

void efx_party_set(struct efx *f, const struct efx_party *pt, uint8_t status,
		   uint32_t gen)
{
	struct kms_ks_txn *txn = NULL;
	struct kms_party rec;

	assert_int_equal(kms_ks_txn_begin(f->ks, 0, &txn), KMS_OK);
	assert_int_equal(kms_ks_party_get(txn, &pt->id, &rec), KMS_OK);
	rec.status = status;
	rec.gen = gen;
	assert_int_equal(kms_ks_party_put(txn, &pt->id, &rec), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(txn), KMS_OK);
}

void efx_party_rotate(struct efx *f, struct efx_party *pt)
{
	struct kms_hsm_session *s = NULL;
	struct kms_ks_txn *txn = NULL;
	struct kms_party rec;
	uint8_t old_blob[KMS_HSM_BLOB_LEN];

	assert_int_equal(kms_hsm_session_open(f->hsm, &s), KMS_OK);
	assert_int_equal(kms_ks_txn_begin(f->ks, 0, &txn), KMS_OK);
	assert_int_equal(kms_ks_party_get(txn, &pt->id, &rec), KMS_OK);
	memcpy(old_blob, rec.blob, sizeof(old_blob));
	assert_int_equal(kms_hsm_new_key(s, pt->key, rec.blob), KMS_OK);
	assert_memory_not_equal(old_blob, rec.blob, sizeof(old_blob));
	rec.gen++;
	pt->gen = rec.gen;
	assert_int_equal(kms_ks_party_put(txn, &pt->id, &rec), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(txn), KMS_OK);
	kms_hsm_session_close(s);
}

void efx_party_kind(struct efx *f, const struct efx_party *pt, uint8_t kind)
{
	struct kms_ks_txn *txn = NULL;
	struct kms_party rec;

	assert_int_equal(kms_ks_txn_begin(f->ks, 0, &txn), KMS_OK);
	assert_int_equal(kms_ks_party_get(txn, &pt->id, &rec), KMS_OK);
	rec.kind = kind;
	assert_int_equal(kms_ks_party_put(txn, &pt->id, &rec), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(txn), KMS_OK);
}

void efx_nonce_plant(struct efx *f, uint64_t expire_ms, uint8_t role,
		     const uint8_t *nonce, unsigned n,
		     const struct efx_party *a, const struct efx_party *b)
{
	struct kms_ks_txn *txn = NULL;
	uint8_t h[KMS_PAIR_HASH_LEN], rnd[KMS_NONCE_LEN];

	kms_pair_hash(&a->id, &b->id, h);
	assert_int_equal(kms_ks_txn_begin(f->ks, 0, &txn), KMS_OK);
	for (unsigned i = 0; i < n; i++) {
		if (!nonce)
			assert_int_equal(RAND_bytes(rnd, sizeof(rnd)), 1);
		assert_int_equal(kms_ks_nonce_put(txn, expire_ms, role,
						  nonce ? nonce : rnd, h),
				 KMS_OK);
	}
	assert_int_equal(kms_ks_txn_commit(txn), KMS_OK);
}

static int count_nonce(uint64_t expire_ms, uint8_t role, const uint8_t *nonce,
		       const uint8_t *pair_prefix, void *arg)
{
	uint64_t *c = arg;	/* c[0]: limit, c[1]: count */

	(void)role;
	(void)nonce;
	(void)pair_prefix;
	if (expire_ms >= c[0])
		return 1;
	c[1]++;
	return 0;
}

unsigned efx_nonces_before(struct efx *f, uint64_t t_ms)
{
	struct kms_ks_txn *txn = NULL;
	uint64_t c[2] = { t_ms, 0 };
	int rc;

	assert_int_equal(kms_ks_txn_begin(f->ks, 1, &txn), KMS_OK);
	rc = kms_ks_nonce_foreach(txn, 0, count_nonce, c);
	assert_true(rc == KMS_OK || rc == 1);
	kms_ks_txn_abort(txn);
	return (unsigned)c[1];
}

void efx_tok(struct efx_tok *t, uint8_t role, const struct kms_id *sealer,
	     const uint8_t *key, uint32_t gen, uint64_t ts,
	     const struct kms_id *a, const struct kms_id *b)
{
	int len;

	assert_int_equal(RAND_bytes(t->nonce, KMS_NONCE_LEN), 1);
	len = kms_token_seal(role, sealer, gen, key, ts, t->nonce, a, b, t->b,
			     sizeof(t->b));
	assert_true(len > 0);
	t->len = (uint16_t)len;
}

void efx_tok_of(struct efx *f, struct efx_tok *t, uint8_t role,
		const struct efx_party *pt, const struct efx_party *a,
		const struct efx_party *b)
{
	efx_tok(t, role, &pt->id, pt->key, pt->gen, f->now, &a->id, &b->id);
}

void efx_deposit_req(struct efx *f, struct efx_dgram *d, const struct kms_id *a,
		     const struct kms_id *b, const struct kms_id *as,
		     const struct efx_tok *ea, const struct efx_tok *eas)
{
	int len = kms_deposit_req_encode(++f->txid, a, b, as, ea->b, ea->len,
					 eas->b, eas->len, d->b, sizeof(d->b));

	assert_true(len > 0);
	d->len = (uint16_t)len;
}

void efx_retrieve_req(struct efx *f, struct efx_dgram *d,
		      const struct kms_id *a, const struct kms_id *b,
		      const uint8_t key_id[KMS_KEY_ID_LEN],
		      const struct efx_tok *ea, const struct efx_tok *eb)
{
	int len = kms_retrieve_req_encode(++f->txid, a, b, key_id, ea->b,
					  ea->len, eb->b, eb->len, d->b,
					  sizeof(d->b));

	assert_true(len > 0);
	d->len = (uint16_t)len;
}

void efx_fix_body_len(struct efx_dgram *d)
{
	uint16_t body = (uint16_t)(d->len - KMS_HDR_LEN);

	d->b[8] = (uint8_t)(body >> 8);
	d->b[9] = (uint8_t)body;
}

unsigned efx_run(struct efx *f, unsigned wi, const struct efx_dgram *req,
		 struct efx_reply *rep, unsigned n)
{
	struct kms_msg *m = calloc(n ? n : 1, sizeof(*m));
	unsigned replies, answered = 0;

	assert_non_null(m);
	assert_true(wi < f->cfg.nworkers);
	for (unsigned i = 0; i < n; i++) {
		m[i].req = req[i].b;
		m[i].req_len = req[i].len;
		m[i].resp = rep[i].b;
		m[i].resp_cap = sizeof(rep[i].b);
		m[i].resp_len = 0xffff; /* the engine must set it */
	}
	replies = kms_worker_process(f->w[wi], m, n);
	for (unsigned i = 0; i < n; i++) {
		struct efx_reply *r = &rep[i];

		r->len = m[i].resp_len;
		r->msg_status = m[i].status;
		r->status = KMS_ST__COUNT;
		if (!r->len)
			continue;
		assert_true(r->len <= sizeof(r->b));
		answered++;
		assert_int_equal(kms_resp_parse(r->b, r->len, &r->r), KMS_OK);
		r->status = r->r.status;
		/* kms_msg.status is what the wire says. */
		assert_int_equal(r->status, r->msg_status);
		assert_int_equal(r->r.hdr.txid,
				 (uint32_t)req[i].b[4] << 24 | req[i].b[5] << 16 |
				 req[i].b[6] << 8 | req[i].b[7]);
	}
	free(m);
	assert_int_equal(replies, answered);
	return replies;
}

uint16_t efx_run1(struct efx *f, const struct efx_dgram *req,
		  struct efx_reply *rep)
{
	efx_run(f, efx_owner(f, req), req, rep, 1);
	return rep->status;
}

unsigned efx_owner(struct efx *f, const struct efx_dgram *req)
{
	return kms_engine_worker_for(f->eng, f->hasher, req->b, req->len);
}

void efx_dep_build(struct efx *f, struct efx_dep *d, const struct efx_party *a,
		   const struct efx_party *b, const struct efx_party *as)
{
	memset(d, 0, sizeof(*d));
	d->a = a;
	d->b = b;
	d->as = as;
	efx_tok_of(f, &d->ea, KMS_ROLE_A, a, a, b);
	efx_tok_of(f, &d->eas, KMS_ROLE_AS, as, a, b);
	efx_deposit_req(f, &d->req, &a->id, &b->id, &as->id, &d->ea, &d->eas);
}

void efx_dep_finish(struct efx_dep *d)
{
	if (d->rep.status != KMS_ST_OK)
		return;
	assert_int_equal(d->rep.r.hdr.type, KMS_T_DEPOSIT_RESP);
	memcpy(d->key_id, d->rep.r.key_id, KMS_KEY_ID_LEN);
	d->k_gen = d->rep.r.k_gen;
	d->expiry_ms = d->rep.r.expiry_ms;
	assert_int_equal(efx_open(&d->rep, KMS_ROLE_A, d->a, d->a, d->b,
				  d->ea.nonce, d->k), KMS_OK);
}

uint16_t efx_deposit(struct efx *f, struct efx_dep *d, const struct efx_party *a,
		     const struct efx_party *b, const struct efx_party *as)
{
	efx_dep_build(f, d, a, b, as);
	efx_run1(f, &d->req, &d->rep);
	efx_dep_finish(d);
	return d->rep.status;
}

void efx_ret_build(struct efx *f, struct efx_ret *r, const struct efx_dep *d,
		   const struct efx_party *b)
{
	memset(r, 0, sizeof(*r));
	efx_tok_of(f, &r->eb, KMS_ROLE_B, b, d->a, d->b);
	efx_retrieve_req(f, &r->req, &d->a->id, &d->b->id, d->key_id, &d->ea,
			 &r->eb);
}

void efx_ret_finish(struct efx_ret *r, const struct efx_dep *d,
		    const struct efx_party *b)
{
	if (r->rep.status != KMS_ST_OK)
		return;
	assert_int_equal(r->rep.r.hdr.type, KMS_T_RETRIEVE_RESP);
	assert_memory_equal(r->rep.r.key_id, d->key_id, KMS_KEY_ID_LEN);
	assert_int_equal(efx_open(&r->rep, KMS_ROLE_B, b, d->a, d->b,
				  r->eb.nonce, r->k), KMS_OK);
}

uint16_t efx_retrieve(struct efx *f, struct efx_ret *r, const struct efx_dep *d,
		      const struct efx_party *b)
{
	efx_ret_build(f, r, d, b);
	efx_run1(f, &r->req, &r->rep);
	efx_ret_finish(r, d, b);
	return r->rep.status;
}

uint16_t efx_dep_broken(struct efx *f, struct efx_dep *d, unsigned how,
			const struct efx_dgram *earlier)
{
	const struct efx_party *a = &f->p[P_A], *b = &f->p[P_B];
	const struct efx_party *as = &f->p[P_AS];
	struct efx_tok t;

	efx_dep_build(f, d, a, b, as);
	switch (how) {
	case 0:
		efx_tok(&t, KMS_ROLE_AS, &as->id, b->key, 1, f->now, &a->id,
			&b->id);
		efx_deposit_req(f, &d->req, &a->id, &b->id, &as->id, &d->ea, &t);
		return KMS_ST_AUTH_FAILED;
	case 1:
		d->req = *earlier;
		return KMS_ST_REPLAY;
	case 2:
		efx_dep_build(f, d, a, b, &f->p[P_AS2]);
		return KMS_ST_PARTY_REVOKED;
	case 3:
		efx_deposit_req(f, &d->req, &a->id, &f->p[P_C].id, &as->id,
				&d->ea, &d->eas);
		return KMS_ST_ID_MISMATCH;
	case 4:
		efx_tok(&t, KMS_ROLE_A, &a->id, a->key, 1, f->now - 2 * EFX_SKEW,
			&a->id, &b->id);
		efx_deposit_req(f, &d->req, &a->id, &b->id, &as->id, &t,
				&d->eas);
		return KMS_ST_STALE;
	case 5: /* the header says more than there is */
		d->req.len -= 5;
		return KMS_ST__COUNT;
	case 6:
		d->req.b[2] = 7;
		return KMS_ST_BAD_VERSION;
	default:
		d->req.len -= 5;
		efx_fix_body_len(&d->req);
		return KMS_ST_MALFORMED;
	}
}

uint16_t efx_dep_with(struct efx *f, const struct kms_id *a,
		      const struct kms_id *b, const struct kms_id *as,
		      const struct efx_tok *ea, const struct efx_tok *eas)
{
	struct efx_dgram d;
	struct efx_reply rep;

	efx_deposit_req(f, &d, a, b, as, ea, eas);
	return efx_run1(f, &d, &rep);
}

uint16_t efx_ret_with(struct efx *f, const struct kms_id *a,
		      const struct kms_id *b, const uint8_t *key_id,
		      const struct efx_tok *ea, const struct efx_tok *eb)
{
	struct efx_dgram d;
	struct efx_reply rep;

	efx_retrieve_req(f, &d, a, b, key_id, ea, eb);
	return efx_run1(f, &d, &rep);
}

void efx_user_pair(struct efx *f, unsigned n, const struct efx_party **a,
		   const struct efx_party **b)
{
	unsigned i = n / (EFX_NUSERS - 1), j = n % (EFX_NUSERS - 1);

	assert_true(n < EFX_NPAIRS);
	*a = &f->p[i];
	*b = &f->p[j >= i ? j + 1 : j];
}

void efx_pair_of_worker(struct efx *f, unsigned nworkers, unsigned wi,
			const struct efx_party **a, const struct efx_party **b)
{
	for (unsigned n = 0; n < EFX_NPAIRS; n++) {
		efx_user_pair(f, n, a, b);
		if (efx_pair_worker(*a, *b, nworkers) == wi)
			return;
	}
	fail_msg("no user pair for worker %u of %u", wi, nworkers);
}

void efx_dep_build_pairs(struct efx *f, struct efx_dep *d,
			 struct efx_dgram *req, unsigned n,
			 const struct efx_party *as)
{
	const struct efx_party *a, *b;

	for (unsigned i = 0; i < n; i++) {
		efx_user_pair(f, i % EFX_NPAIRS, &a, &b);
		efx_dep_build(f, &d[i], a, b, as);
		if (req)
			req[i] = d[i].req;
	}
}

void efx_dep_run_pairs(struct efx *f, struct efx_dep *d,
		       struct efx_dgram *req, struct efx_reply *rep, unsigned n,
		       const struct efx_party *as)
{
	efx_dep_build_pairs(f, d, req, n, as);
	assert_int_equal(efx_run(f, 0, req, rep, n), n);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(rep[i].status, KMS_ST_OK);
		d[i].rep = rep[i];
		efx_dep_finish(&d[i]);
	}
}

void efx_expect_refused(struct efx *f, const struct efx_dgram *d,
			unsigned *sent, unsigned *drops)
{
	struct efx_reply rep;

	efx_run(f, 0, d, &rep, 1);
	(*sent)++;
	if (rep.len == 0) {
		(*drops)++;
		return;
	}
	assert_int_equal(rep.r.hdr.type, KMS_T_ERROR);
	assert_int_not_equal(rep.status, KMS_ST_OK);
}

int efx_engine_try(struct efx *f, const struct kms_engine_config *cfg)
{
	struct kms_engine *e = NULL;
	int rc = kms_engine_create(cfg, f->hsm, f->ks, &e);

	if (rc)
		assert_null(e);
	else
		assert_non_null(e);
	kms_engine_destroy(e);
	return rc;
}

int efx_worker_try(struct efx *f, unsigned nworkers, uint32_t replay_capacity,
		   unsigned wi)
{
	struct kms_engine_config cfg = f->cfg;
	struct kms_engine *e = NULL;
	struct kms_worker *w = NULL;
	int rc;

	assert_null(f->eng);
	cfg.nworkers = nworkers;
	cfg.replay_capacity = replay_capacity;
	assert_int_equal(kms_engine_create(&cfg, f->hsm, f->ks, &e), KMS_OK);
	rc = kms_worker_create(e, wi, &w);
	if (rc)
		assert_null(w);
	kms_worker_destroy(w);
	kms_engine_destroy(e);
	return rc;
}

struct audit_cb_arg {
	const uint8_t *k;
	struct efx_audit_scan *s;
};

static int audit_cb(const struct kms_audit *a, void *arg)
{
	struct audit_cb_arg *c = arg;
	struct efx_audit_scan *s = c->s;

	s->n++;
	s->with_k += efx_contains(a, sizeof(*a), c->k, KMS_KEY_LEN);
	if (a->event == KMS_AUD_KEY_NEW) {
		s->key_new++;
		s->new_rec = *a;
	} else if (a->event == KMS_AUD_KEY_REUSE) {
		s->key_reuse++;
	} else if (a->event == KMS_AUD_KEY_RETRIEVE) {
		s->key_retrieve++;
		s->ret_rec = *a;
	}
	return 0;
}

void efx_audit_scan(struct efx *f, const uint8_t k[KMS_KEY_LEN],
		    struct efx_audit_scan *out)
{
	struct audit_cb_arg c = { .k = k, .s = out };
	struct kms_ks_txn *txn = NULL;

	memset(out, 0, sizeof(*out));
	assert_int_equal(kms_ks_txn_begin(f->ks, 1, &txn), KMS_OK);
	assert_int_equal(kms_ks_audit_foreach(txn, audit_cb, &c), KMS_OK);
	kms_ks_txn_abort(txn);
}

void efx_assert_id(const char *got, uint8_t len, const struct efx_party *p)
{
	assert_int_equal(len, p->id.len);
	assert_memory_equal(got, p->name, len);
}

struct kms_ks_counts efx_counts(struct efx *f)
{
	struct kms_ks_counts c;

	assert_int_equal(kms_ks_counts(f->ks, &c), KMS_OK);
	/* Nonces, not records: the engine packs them (kms_ks_nonce_put_many). */
	c.nonces = efx_nonces_before(f, UINT64_MAX);
	return c;
}

void efx_pair_get(struct efx *f, const struct efx_party *a,
		  const struct efx_party *b, struct kms_pair *out)
{
	uint8_t h[KMS_PAIR_HASH_LEN];
	struct kms_ks_txn *txn = NULL;

	kms_pair_hash(&a->id, &b->id, h);
	assert_int_equal(kms_ks_txn_begin(f->ks, 1, &txn), KMS_OK);
	assert_int_equal(kms_ks_pair_get(txn, h, out), KMS_OK);
	kms_ks_txn_abort(txn);
}

uint8_t *efx_read_store(struct efx *f, size_t *len)
{
	char path[400];
	uint8_t *buf;
	FILE *fp;
	long n;

	snprintf(path, sizeof(path), "%s/data.mdb", f->env.store);
	fp = fopen(path, "rb");
	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	n = ftell(fp);
	assert_true(n > 0);
	rewind(fp);
	buf = malloc((size_t)n);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

int efx_open(const struct efx_reply *rep, uint8_t role,
	     const struct efx_party *recip, const struct efx_party *a,
	     const struct efx_party *b, const uint8_t nonce[KMS_NONCE_LEN],
	     uint8_t k[KMS_KEY_LEN])
{
	return kms_keybox_open(&rep->r, role, recip->gen, recip->key, &a->id,
			       &b->id, nonce, k);
}

int efx_contains(const void *hay, size_t hlen, const void *needle, size_t nlen)
{
	return memmem(hay, hlen, needle, nlen) != NULL;
}

unsigned efx_pair_worker(const struct efx_party *a, const struct efx_party *b,
			 unsigned nworkers)
{
	uint8_t h[KMS_PAIR_HASH_LEN];

	kms_pair_hash(&a->id, &b->id, h);
	return kms_pair_worker(h, nworkers);
}

void efx_stats(struct efx *f, struct kms_stats *out)
{
	struct kms_stats one;

	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < EFX_MAX_WORKERS; i++) {
		if (!f->w[i])
			continue;
		kms_worker_stats(f->w[i], &one);
		kms_stats_add(out, &one);
	}
}
