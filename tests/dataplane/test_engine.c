// SPDX-License-Identifier: Apache-2.0
/*
 * The security properties of the deferred-delivery KMS (TR 33.828 clause
 * 7.4.3.3, shared/DESIGN.md section 1) shown through the real engine: a
 * SoftHSM2 token, an LMDB store, kms_worker_process, and the parties played
 * with the client token code. Each test names the property it shows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "engine_fixture.h"
#include "kms_token.h"

/* The party with index @p i of the fixture in scope. */
#define PT(i) (&f->p[(i)])
/* ------------------------------------------------- 1. happy path (P1) */

/* Keys made while idle serve new-K deposits without any HSM call on the
 * request path; once the pool is empty a new K costs HSM calls again. A and
 * B still end with the same K. */
static void premade_keys(void **state)
{
	struct efx *f = *state;
	struct efx_dep d1, d2, d3;
	struct efx_ret r;
	struct kms_stats s0, s1, s2;
	/* In hsm mode a DEPOSIT's AEAD is 6 calls on a cache hit: Ea and Eas
	 * opened (C_DecryptInit + C_Decrypt each), the keybox sealed
	 * (C_EncryptInit + C_Encrypt). */
	const char *mode = getenv("KMS_TEST_CRYPTO_MODE");
	uint64_t aead_calls = mode && !strcmp(mode, "hsm") ? 6 : 0;

	/* Warm Ka and Kas (pool empty: this K is made inline). */
	assert_int_equal(efx_deposit(f, &d1, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	assert_int_equal(kms_worker_idle(f->w[0], 1), 1);
	efx_stats(f, &s0);
	/* A new pair: a new K, from the pool; the recipient's key is not
	 * needed for a DEPOSIT, so no HSM call at all but the AEAD's. */
	assert_int_equal(efx_deposit(f, &d2, PT(P_A), PT(P_C), PT(P_AS)),
			 KMS_ST_OK);
	efx_stats(f, &s1);
	assert_int_equal(s1.keys_pooled - s0.keys_pooled, 1);
	assert_int_equal(s1.hsm_calls - s0.hsm_calls, aead_calls);
	/* Pool empty again: the next new K goes to the HSM. */
	assert_int_equal(efx_deposit(f, &d3, PT(P_A), PT(P_D), PT(P_AS)),
			 KMS_ST_OK);
	efx_stats(f, &s2);
	assert_int_equal(s2.keys_pooled, s1.keys_pooled);
	assert_true(s2.hsm_calls > s1.hsm_calls + aead_calls);
	assert_int_equal(s2.keys_new, 3);
	assert_int_equal(efx_retrieve(f, &r, &d2, PT(P_C)), KMS_ST_OK);
	assert_memory_equal(d2.k, r.k, KMS_KEY_LEN);
}

static void happy_path(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct efx_ret r;
	struct kms_stats st;
	static const uint8_t zero[KMS_KEY_LEN];

	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	assert_int_equal(d.k_gen, 1);
	assert_int_equal(d.expiry_ms, f->now + EFX_LIFETIME_S * 1000ull);
	assert_memory_not_equal(d.k, zero, KMS_KEY_LEN);
	for (unsigned i = 0; i < P__COUNT; i++)
		assert_memory_not_equal(d.k, f->p[i].key, KMS_KEY_LEN);

	f->now += 5000;	/* B comes online later */
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	assert_memory_equal(d.k, r.k, KMS_KEY_LEN);
	assert_int_equal(r.rep.r.k_gen, d.k_gen);
	assert_int_equal(r.rep.r.expiry_ms, d.expiry_ms);

	efx_stats(f, &st);
	assert_int_equal(st.requests, 2);
	assert_int_equal(st.batches, 2);
	assert_int_equal(st.by_status[KMS_RK_DEPOSIT][KMS_ST_OK], 1);
	assert_int_equal(st.by_status[KMS_RK_RETRIEVE][KMS_ST_OK], 1);
	assert_int_equal(st.keys_new, 1);
	assert_int_equal(st.retrievals, 1);
	assert_int_equal(st.commits, 2);
	assert_int_equal(st.committed_requests, 2);
	assert_int_equal(efx_counts(f).deposits, 1);
	assert_int_equal(efx_counts(f).pairs, 1);
}

static void engine_config_refused(void **state)
{
	struct efx *f = *state;
	struct kms_engine_config cfg = f->cfg;
	static const unsigned batch[] = { 1, 16, 256 };

	cfg.crypto_mode = "no-such-mode";
	assert_int_equal(efx_engine_try(f, &cfg), KMS_ERR_CONFIG);
	cfg.crypto_mode = "offload";
	/* Every answered request of a batch pins two keys: the cache holds
	 * at least 2 * batch_max + 16, one less is refused. */
	assert_int_equal(KMS_ENGINE_CACHE_MIN(1), 18);
	assert_int_equal(KMS_ENGINE_CACHE_MIN(256), 528);
	for (unsigned i = 0; i < sizeof(batch) / sizeof(batch[0]); i++) {
		cfg.batch_max = batch[i];
		cfg.cache_keys = KMS_ENGINE_CACHE_MIN(batch[i]) - 1;
		assert_int_equal(efx_engine_try(f, &cfg), KMS_ERR_CONFIG);
		cfg.cache_keys = KMS_ENGINE_CACHE_MIN(batch[i]);
		assert_int_equal(efx_engine_try(f, &cfg), KMS_OK);
	}
	/* batch_max is 1..256, whatever the cache; workers 1 at least. */
	cfg.cache_keys = 1u << 20;
	cfg.batch_max = 0;
	assert_int_equal(efx_engine_try(f, &cfg), KMS_ERR_INVAL);
	cfg.batch_max = 257;
	assert_int_equal(efx_engine_try(f, &cfg), KMS_ERR_INVAL);
	cfg.batch_max = 256;
	cfg.nworkers = 0;
	assert_int_equal(efx_engine_try(f, &cfg), KMS_ERR_INVAL);
	cfg.nworkers = 1;
	/* Deferred RETRIEVE records with a retrieval cap anywhere in the
	 * policy set (here a stored domain override) are refused. */
	{
		static struct kms_policy_set ps;
		char *w[] = { "max_retrievals=1" };
		char err[128];

		kms_policy_set_init(&ps, &cfg.policy);
		cfg.deferred_max = 64;
		cfg.deferred_flush_ms = 20;
		cfg.policy_set = &ps;
		assert_int_equal(efx_engine_try(f, &cfg), KMS_OK);
		assert_int_equal(kms_policy_set_apply(&ps, "x.example", 1, w, err,
						      sizeof(err)), 0);
		assert_int_equal(efx_engine_try(f, &cfg), KMS_ERR_CONFIG);
	}
}

/* ------------------------------------ 2. the mailbox never holds K (P1) */

static void mailbox_never_holds_k(void **state)
{
	struct efx *f = *state;
	const struct efx_party *as = PT(P_AS);
	struct efx_dep d;
	struct efx_ret r;
	uint8_t k[KMS_KEY_LEN];

	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), as), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	/* Everything the mailbox and the network see. */
	assert_false(efx_contains(d.req.b, d.req.len, d.k, KMS_KEY_LEN));
	assert_false(efx_contains(d.rep.b, d.rep.len, d.k, KMS_KEY_LEN));
	assert_false(efx_contains(r.req.b, r.req.len, d.k, KMS_KEY_LEN));
	assert_false(efx_contains(r.rep.b, r.rep.len, d.k, KMS_KEY_LEN));
	/* Kas opens neither keybox, whatever role the mailbox claims. */
	for (uint8_t role = KMS_ROLE_A; role <= KMS_ROLE_B; role++) {
		assert_int_equal(efx_open(&d.rep, role, as, d.a, d.b, d.ea.nonce,
					  k), KMS_ERR_AUTH);
		assert_int_equal(efx_open(&d.rep, role, as, d.a, d.b,
					  d.eas.nonce, k), KMS_ERR_AUTH);
		assert_int_equal(efx_open(&r.rep, role, as, d.a, d.b, r.eb.nonce,
					  k), KMS_ERR_AUTH);
	}
}

/* P6: at rest K and every party key exist only wrapped under the KEK. */
static void nothing_in_clear_at_rest(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct efx_ret r;
	uint8_t *db;
	size_t len;

	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	db = efx_read_store(f, &len);
	assert_true(efx_contains(db, len, PT(P_A)->name,
				 strlen(PT(P_A)->name)));
	assert_false(efx_contains(db, len, d.k, KMS_KEY_LEN));
	for (unsigned i = 0; i < P__COUNT; i++)
		assert_false(efx_contains(db, len, f->p[i].key, KMS_KEY_LEN));
	free(db);
}

/* ----------------------------------------- 3. DEPOSIT refused (P2) */

static void deposit_refused(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *c = PT(P_C);
	const struct efx_party *as = PT(P_AS), *as2 = PT(P_AS2);
	struct efx_tok ea, eas, x;
	struct kms_id unk_as, unk_a;
	uint8_t rnd_key[KMS_KEY_LEN];
	struct efx_dep d;

	assert_int_equal(kms_id_from_str("mailbox.evil.example", &unk_as), KMS_OK);
	assert_int_equal(kms_id_from_str("sip:mallory@example.org", &unk_a),
			 KMS_OK);
	assert_int_equal(RAND_bytes(rnd_key, sizeof(rnd_key)), 1);
	efx_tok_of(f, &ea, KMS_ROLE_A, a, a, b);
	efx_tok_of(f, &eas, KMS_ROLE_AS, as, a, b);

	/* Ea and Eas vouch for different pairs. */
	efx_tok_of(f, &x, KMS_ROLE_AS, as, a, c);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &x),
			 KMS_ST_ID_MISMATCH);
	efx_tok_of(f, &x, KMS_ROLE_A, a, a, c);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &x, &eas),
			 KMS_ST_ID_MISMATCH);
	/* Plain IDs differ from the decrypted ones (both tokens say A->B). */
	assert_int_equal(efx_dep_with(f, &a->id, &c->id, &as->id, &ea, &eas),
			 KMS_ST_ID_MISMATCH);
	/* Unknown AS, unknown A. */
	efx_tok(&x, KMS_ROLE_AS, &unk_as, rnd_key, 1, f->now, &a->id, &b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &unk_as, &ea, &x),
			 KMS_ST_UNKNOWN_PARTY);
	efx_tok(&x, KMS_ROLE_A, &unk_a, rnd_key, 1, f->now, &unk_a, &b->id);
	efx_tok(&eas, KMS_ROLE_AS, &as->id, as->key, 1, f->now, &unk_a, &b->id);
	assert_int_equal(efx_dep_with(f, &unk_a, &b->id, &as->id, &x, &eas),
			 KMS_ST_UNKNOWN_PARTY);
	efx_tok_of(f, &eas, KMS_ROLE_AS, as, a, b);
	/* Tokens under a wrong key: Eas under Kc, Ea under Kb. */
	efx_tok(&x, KMS_ROLE_AS, &as->id, c->key, 1, f->now, &a->id, &b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &x),
			 KMS_ST_AUTH_FAILED);
	efx_tok(&x, KMS_ROLE_A, &a->id, b->key, 1, f->now, &a->id, &b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &x, &eas),
			 KMS_ST_AUTH_FAILED);
	/* Wrong generation named in the token (right key). */
	efx_tok(&x, KMS_ROLE_AS, &as->id, as->key, 2, f->now, &a->id, &b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &x),
			 KMS_ST_AUTH_FAILED);
	/* A user cannot act as the mailbox, an AS cannot act as A. */
	efx_tok(&x, KMS_ROLE_AS, &c->id, c->key, 1, f->now, &a->id, &b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &c->id, &ea, &x),
			 KMS_ST_WRONG_ROLE);
	efx_tok(&x, KMS_ROLE_A, &as2->id, as2->key, 1, f->now, &as2->id, &b->id);
	efx_tok(&eas, KMS_ROLE_AS, &as->id, as->key, 1, f->now, &as2->id, &b->id);
	assert_int_equal(efx_dep_with(f, &as2->id, &b->id, &as->id, &x, &eas),
			 KMS_ST_WRONG_ROLE);
	/* A token of the wrong role in the Eas position does not parse. */
	efx_tok(&x, KMS_ROLE_B, &as->id, as->key, 1, f->now, &a->id, &b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &x),
			 KMS_ST_WRONG_ROLE);

	/* Nothing above was recorded, and none of it burnt Ea: the honest
	 * deposit with the same Ea still goes through. */
	assert_int_equal(efx_counts(f).deposits, 0);
	efx_tok_of(f, &eas, KMS_ROLE_AS, as, a, b);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &eas),
			 KMS_ST_OK);

	/* AS2 works while active, and not once revoked. */
	assert_int_equal(efx_deposit(f, &d, a, b, as2), KMS_ST_OK);
	efx_party_set(f, as2, KMS_PARTY_REVOKED, 1);
	assert_int_equal(efx_deposit(f, &d, a, b, as2), KMS_ST_PARTY_REVOKED);
	/* A revoked A cannot make deposits either. */
	efx_party_set(f, a, KMS_PARTY_REVOKED, 1);
	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_PARTY_REVOKED);
	assert_int_equal(efx_counts(f).deposits, 2);
}

/* A rotated party key: tokens of the old generation are refused. */
static void deposit_old_generation(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;

	efx_party_set(f, PT(P_AS), KMS_PARTY_ACTIVE, 2);
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_AUTH_FAILED);
	f->p[P_AS].gen = 2;	/* same key bytes, now claimed as gen 2 */
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
}

/*
 * DEPOSIT checks ID-B too: no K is made for a recipient who could never
 * retrieve it. Like every refusal before the replay check, it burns
 * nothing: the same datagram goes through once B is active again.
 */
static void deposit_recipient_checked(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *as = PT(P_AS);
	struct efx_party *b = &f->p[P_B], nobody = f->p[P_B];
	struct kms_ks_counts c;
	struct kms_stats st;
	struct efx_dep d;
	struct efx_ret r;

	snprintf(nobody.name, sizeof(nobody.name), "sip:nobody@example.org");
	assert_int_equal(kms_id_from_str(nobody.name, &nobody.id), KMS_OK);
	assert_int_equal(efx_deposit(f, &d, a, &nobody, as),
			 KMS_ST_UNKNOWN_PARTY);
	/* A mailbox is no recipient: another one, or the depositing one. */
	assert_int_equal(efx_deposit(f, &d, a, PT(P_AS2), as), KMS_ST_WRONG_ROLE);
	assert_int_equal(efx_deposit(f, &d, a, as, as), KMS_ST_WRONG_ROLE);
	efx_party_set(f, b, KMS_PARTY_REVOKED, 1);
	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_PARTY_REVOKED);
	c = efx_counts(f);
	assert_int_equal(c.deposits + c.pairs + c.audit + c.nonces, 0);
	efx_stats(f, &st);
	assert_int_equal(st.by_status[KMS_RK_DEPOSIT][KMS_ST_UNKNOWN_PARTY], 1);
	assert_int_equal(st.by_status[KMS_RK_DEPOSIT][KMS_ST_WRONG_ROLE], 2);
	assert_int_equal(st.by_status[KMS_RK_DEPOSIT][KMS_ST_PARTY_REVOKED], 1);
	assert_int_equal(st.keys_new, 0);

	efx_party_set(f, b, KMS_PARTY_ACTIVE, 1);
	assert_int_equal(efx_run1(f, &d.req, &d.rep), KMS_ST_OK);
	efx_dep_finish(&d);
	/* B has no token in a DEPOSIT, so its generation is not checked
	 * there; a B rotated since retrieves with its new key. */
	efx_party_rotate(f, b);
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
	/* Re-enrolled as a mailbox, B no longer receives deposits. */
	efx_party_kind(f, b, KMS_PARTY_AS);
	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_WRONG_ROLE);
}

/* ----------------------------------------- 4. RETRIEVE refused (P3) */

static void retrieve_refused_identity(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *c = PT(P_C);
	struct efx_dep d;
	struct efx_ret r;
	struct efx_tok eb;
	uint8_t kid[KMS_KEY_ID_LEN];

	assert_int_equal(efx_deposit(f, &d, a, b, PT(P_AS)), KMS_ST_OK);

	/* Carol asks with her own ID and key, and the true handle: Ea is
	 * not opened in a RETRIEVE, but the deposit is for Bob. */
	efx_tok(&eb, KMS_ROLE_B, &c->id, c->key, 1, f->now, &a->id, &c->id);
	assert_int_equal(efx_ret_with(f, &a->id, &c->id, d.key_id, &d.ea, &eb),
			 KMS_ST_NOT_RECIPIENT);
	/* Her Eb says (A, B) but the plain ID-B is hers. */
	efx_tok(&eb, KMS_ROLE_B, &c->id, c->key, 1, f->now, &a->id, &b->id);
	assert_int_equal(efx_ret_with(f, &a->id, &c->id, d.key_id, &d.ea, &eb),
			 KMS_ST_ID_MISMATCH);
	/* Carol claims to be Bob, with her key. */
	efx_tok(&eb, KMS_ROLE_B, &b->id, c->key, 1, f->now, &a->id, &b->id);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d.key_id, &d.ea, &eb),
			 KMS_ST_AUTH_FAILED);
	/* The mailbox claims to be Bob, with Kas. */
	efx_tok(&eb, KMS_ROLE_B, &b->id, PT(P_AS)->key, 1, f->now, &a->id,
		&b->id);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d.key_id, &d.ea, &eb),
			 KMS_ST_AUTH_FAILED);
	/* A, who holds Ka and Ea, is not the recipient either. */
	efx_tok(&eb, KMS_ROLE_B, &b->id, a->key, 1, f->now, &a->id, &b->id);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d.key_id, &d.ea, &eb),
			 KMS_ST_AUTH_FAILED);
	/* No deposit under this key id. */
	memcpy(kid, d.key_id, sizeof(kid));
	kid[15] ^= 1;
	efx_tok_of(f, &eb, KMS_ROLE_B, b, a, b);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, kid, &d.ea, &eb),
			 KMS_ST_UNKNOWN_KEY_ID);

	/* None of that used up the deposit: Bob gets K. */
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
}

static void retrieve_refused_state(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *as = PT(P_AS);
	struct efx_dep d1, d2;
	struct efx_ret r;
	struct efx_tok eb;
	struct kms_ks_txn *txn = NULL;
	struct kms_deposit rec;

	assert_int_equal(efx_deposit(f, &d1, a, b, as), KMS_ST_OK);
	assert_int_equal(efx_deposit(f, &d2, a, b, as), KMS_ST_OK);

	/* Ea of another deposit of the same pair is not d1's handle. */
	efx_tok_of(f, &eb, KMS_ROLE_B, b, a, b);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d1.key_id, &d2.ea, &eb),
			 KMS_ST_HANDLE_MISMATCH);

	/* d2 revoked in the store. */
	assert_int_equal(kms_ks_txn_begin(f->ks, 0, &txn), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(txn, d2.key_id, &rec), KMS_OK);
	rec.status = KMS_DEP_REVOKED;
	assert_int_equal(kms_ks_deposit_put(txn, d2.key_id, &rec, 1), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(txn), KMS_OK);
	assert_int_equal(efx_retrieve(f, &r, &d2, b), KMS_ST_DEPOSIT_REVOKED);

	/* d1 expires at created + lifetime, not a millisecond later. */
	f->now = d1.expiry_ms - 1;
	assert_int_equal(efx_retrieve(f, &r, &d1, b), KMS_ST_OK);
	assert_memory_equal(r.k, d1.k, KMS_KEY_LEN);
	f->now = d1.expiry_ms;
	assert_int_equal(efx_retrieve(f, &r, &d1, b), KMS_ST_DEPOSIT_EXPIRED);

	/* A revoked B gets nothing, even for a live deposit. */
	f->now = EFX_T0 + 1000;
	assert_int_equal(efx_retrieve(f, &r, &d1, b), KMS_ST_OK);
	efx_party_set(f, b, KMS_PARTY_REVOKED, 1);
	assert_int_equal(efx_retrieve(f, &r, &d1, b), KMS_ST_PARTY_REVOKED);
}

/*
 * The worker keeps party records between batches (its party cache) only
 * while the store's party epoch is unchanged: a rotation or a revocation
 * committed by anyone (kmsctl, another process) holds from the next batch
 * on. Counted: party_reads (from the store) and party_hits (kept).
 */
static void party_cache_follows_store(void **state)
{
	struct efx *f = *state;
	struct efx_party *b = &f->p[P_B];
	const struct efx_party *a = PT(P_A), *as = PT(P_AS);
	struct kms_stats st;
	struct efx_dep d, d2;
	struct efx_ret r;

	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	kms_worker_stats(f->w[0], &st);
	assert_int_equal(st.party_reads, 3);  /* A, AS, B: once each */
	assert_int_equal(st.party_hits, 4);   /* A and B, twice */

	/* B's new key: a token under it is accepted at once, and the
	 * records are read again (the epoch moved). */
	efx_party_rotate(f, b);
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
	kms_worker_stats(f->w[0], &st);
	assert_int_equal(st.party_reads, 5);
	/* The AS revoked: its next DEPOSIT is refused. */
	efx_party_set(f, as, KMS_PARTY_REVOKED, 1);
	assert_int_equal(efx_deposit(f, &d2, a, b, as), KMS_ST_PARTY_REVOKED);
	efx_party_set(f, as, KMS_PARTY_ACTIVE, 1);
	assert_int_equal(efx_deposit(f, &d2, a, b, as), KMS_ST_OK);
	/* B revoked between two RETRIEVEs. */
	assert_int_equal(efx_retrieve(f, &r, &d2, b), KMS_ST_OK);
	efx_party_set(f, b, KMS_PARTY_REVOKED, b->gen);
	assert_int_equal(efx_retrieve(f, &r, &d2, b), KMS_ST_PARTY_REVOKED);
}

/*
 * A pair revoked in the store (as kmsctl revoke --pair writes it): every
 * deposit of the pair is refused DEPOSIT_REVOKED from the next batch on,
 * and a new DEPOSIT PAIR_REVOKED; another pair of the same users is
 * untouched. (RETRIEVEs skip the pair lookup only while the store holds
 * no revoked pair at all: the first revocation must switch it back on.)
 */
static void retrieve_pair_revoked(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *c = PT(P_C);
	const struct efx_party *as = PT(P_AS);
	uint8_t h[KMS_PAIR_HASH_LEN];
	struct kms_ks_txn *txn = NULL;
	struct kms_pair pr;
	struct efx_dep dab, dac, d;
	struct efx_ret r;

	assert_int_equal(efx_deposit(f, &dab, a, b, as), KMS_ST_OK);
	assert_int_equal(efx_deposit(f, &dac, a, c, as), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r, &dab, b), KMS_ST_OK);

	efx_pair_get(f, a, b, &pr);
	pr.revoked = 1;
	kms_pair_hash(&a->id, &b->id, h);
	assert_int_equal(kms_ks_txn_begin(f->ks, 0, &txn), KMS_OK);
	assert_int_equal(kms_ks_pair_put(txn, h, &pr), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(txn), KMS_OK);

	assert_int_equal(efx_retrieve(f, &r, &dab, b), KMS_ST_DEPOSIT_REVOKED);
	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_PAIR_REVOKED);
	assert_int_equal(efx_retrieve(f, &r, &dac, c), KMS_ST_OK);
	assert_memory_equal(r.k, dac.k, KMS_KEY_LEN);
}

static void retrieve_max_retrievals(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_policy();
	struct efx_dep d;
	struct efx_ret r, r2;
	struct efx_dgram req[2];
	struct efx_reply rep[2];

	pol.max_retrievals = 1;
	efx_reconfigure(f, &pol, 1);
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_POLICY_DENIED);
	/* The count is durable: a restarted engine still refuses. */
	efx_restart(f, 0);
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_POLICY_DENIED);
	/* Two RETRIEVEs (distinct Eb) of a fresh deposit in one batch. */
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	efx_ret_build(f, &r, &d, PT(P_B));
	efx_ret_build(f, &r2, &d, PT(P_B));
	req[0] = r.req;
	req[1] = r2.req;
	assert_int_equal(efx_run(f, 0, req, rep, 2), 2);
	assert_int_equal(rep[0].status, KMS_ST_OK);
	assert_int_equal(rep[1].status, KMS_ST_POLICY_DENIED);
}

/*
 * A full batch of RETRIEVEs, three of each deposit, the second and third
 * 85 requests after the one before: under max_retrievals = 2 each
 * deposit's first two are answered and its third refused. Phase 1 must
 * find, among all of the batch's requests, the latest earlier one of the
 * same deposit (the first found, or none, would answer the third).
 */
static void retrieve_full_batch(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_policy();
	const unsigned nd = 85, n = 3 * nd;
	struct efx_dep *d = calloc(nd, sizeof(*d));
	struct efx_ret *r = calloc(n, sizeof(*r));
	struct efx_dgram *req = calloc(n, sizeof(*req));
	struct efx_reply *rep = calloc(n, sizeof(*rep));
	struct kms_stats st;

	assert_true(d && r && req && rep);
	f->batch_max = 256;
	pol.max_retrievals = 2;
	efx_reconfigure(f, &pol, 1);
	efx_dep_run_pairs(f, d, req, rep, nd, PT(P_AS));
	for (unsigned k = 0; k < 3; k++)
		for (unsigned i = 0; i < nd; i++) {
			efx_ret_build(f, &r[k * nd + i], &d[i], d[i].b);
			req[k * nd + i] = r[k * nd + i].req;
		}
	assert_int_equal(efx_run(f, 0, req, rep, n), n);
	for (unsigned j = 0; j < n; j++) {
		const struct efx_dep *dj = &d[j % nd];

		if (j >= 2 * nd) {
			assert_int_equal(rep[j].status, KMS_ST_POLICY_DENIED);
			continue;
		}
		assert_int_equal(rep[j].status, KMS_ST_OK);
		r[j].rep = rep[j];
		efx_ret_finish(&r[j], dj, dj->b);
		assert_memory_equal(r[j].k, dj->k, KMS_KEY_LEN);
	}
	efx_stats(f, &st);
	assert_int_equal(st.batches, 2);
	assert_int_equal(st.retrievals, 2 * nd);
	free(d);
	free(r);
	free(req);
	free(rep);
}

/*
 * RETRIEVE does not open Ea again: A must be an enrolled, active user and
 * Ea byte for byte the handle recorded at DEPOSIT. So a deposit outlives a
 * rotation of A's key, while the old generation makes no new deposits.
 */
static void retrieve_after_rotation(void **state)
{
	struct efx *f = *state;
	struct efx_party *a = &f->p[P_A];
	const struct efx_party *b = PT(P_B), *as = PT(P_AS);
	struct efx_dep d, d2;
	struct efx_ret r;
	struct efx_tok eas, x, eb;
	uint8_t ka1[KMS_KEY_LEN], k[KMS_KEY_LEN];

	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_OK);
	memcpy(ka1, a->key, sizeof(ka1));
	efx_party_rotate(f, a);
	assert_int_equal(a->gen, 2);
	/* Generation 1 makes no deposits: its Ea, or the old key claiming 2. */
	efx_tok_of(f, &eas, KMS_ROLE_AS, as, a, b);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &d.ea, &eas),
			 KMS_ST_AUTH_FAILED);
	efx_tok(&x, KMS_ROLE_A, &a->id, ka1, 2, f->now, &a->id, &b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &x, &eas),
			 KMS_ST_AUTH_FAILED);
	/* Generation 2 does; its K opens under the new key only. */
	assert_int_equal(efx_deposit(f, &d2, a, b, as), KMS_ST_OK);
	assert_int_equal(kms_keybox_open(&d2.rep.r, KMS_ROLE_A, 1, ka1, &a->id,
					 &b->id, d2.ea.nonce, k), KMS_ERR_AUTH);

	/* B gets the K of the deposit made under generation 1, later. */
	f->now += 10 * 60 * 1000ull;
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
	assert_int_equal(r.rep.r.k_gen, d.k_gen);
	assert_int_equal(efx_retrieve(f, &r, &d2, b), KMS_ST_OK);
	assert_memory_equal(r.k, d2.k, KMS_KEY_LEN);
	/* Matched, not re-opened: A's fresh Ea for the pair is not the
	 * handle, nor the handle with one bit of its tag changed. */
	efx_tok_of(f, &x, KMS_ROLE_A, a, a, b);
	efx_tok_of(f, &eb, KMS_ROLE_B, b, a, b);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d.key_id, &x, &eb),
			 KMS_ST_HANDLE_MISMATCH);
	x = d.ea;
	x.b[x.len - 1] ^= 1;
	efx_tok_of(f, &eb, KMS_ROLE_B, b, a, b);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d.key_id, &x, &eb),
			 KMS_ST_HANDLE_MISMATCH);
	/* A revoked: none of A's deposits is handed out; reinstated: again. */
	efx_party_set(f, a, KMS_PARTY_REVOKED, 2);
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_PARTY_REVOKED);
	assert_int_equal(efx_retrieve(f, &r, &d2, b), KMS_ST_PARTY_REVOKED);
	efx_party_set(f, a, KMS_PARTY_ACTIVE, 2);
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	/* A re-enrolled as a mailbox is no longer a user. */
	efx_party_kind(f, a, KMS_PARTY_AS);
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_WRONG_ROLE);
}

/* ------------------------------------------------- 5. replay (P4) */

static void replay_single_datagrams(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *as = PT(P_AS);
	struct efx_dep d, d2;
	struct efx_ret r, r2;
	struct efx_reply rep;
	struct efx_tok ea;

	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_OK);
	f->now += 10;
	assert_int_equal(efx_run1(f, &d.req, &rep), KMS_ST_REPLAY);

	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	assert_int_equal(efx_run1(f, &r.req, &rep), KMS_ST_REPLAY);
	/* Ea is the handle: a second RETRIEVE with a fresh Eb is fine. */
	assert_int_equal(efx_retrieve(f, &r2, &d, b), KMS_ST_OK);
	assert_memory_equal(r2.k, d.k, KMS_KEY_LEN);

	/* An old Eas with a fresh Ea. */
	efx_tok_of(f, &ea, KMS_ROLE_A, a, a, b);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &d.eas),
			 KMS_ST_REPLAY);
	/* An old Eb in a new RETRIEVE of another deposit. */
	efx_deposit(f, &d2, a, b, as);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d2.key_id, &d2.ea, &r.eb),
			 KMS_ST_REPLAY);
	assert_int_equal(efx_counts(f).deposits, 2);
}

/*
 * A pair's own policy governs its RETRIEVEs: (A, B) capped at one
 * retrieval, (A, C) under the unlimited default. The RETRIEVE path finds
 * the pair by the deposit's stored pair hash, not one of its own.
 */
static void retrieve_pair_policy(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *c = PT(P_C);
	const struct efx_party *as = PT(P_AS);
	struct kms_policy dflt = efx_policy();
	static struct kms_policy_set ps;
	char *words[] = { "max_retrievals=1" };
	uint8_t hash[KMS_PAIR_HASH_LEN];
	struct efx_dep dab, dac;
	struct efx_ret r;
	char err[128];

	kms_policy_set_init(&ps, &dflt);
	kms_pair_hash(&a->id, &b->id, hash);
	assert_int_equal(kms_policy_set_apply_pair(&ps, hash, "A,B", 1, words,
						   err, sizeof(err)), 0);
	assert_int_equal(kms_engine_policy_swap(f->eng, &ps), KMS_OK);
	assert_int_equal(efx_deposit(f, &dab, a, b, as), KMS_ST_OK);
	assert_int_equal(efx_deposit(f, &dac, a, c, as), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r, &dab, b), KMS_ST_OK);
	assert_memory_equal(r.k, dab.k, KMS_KEY_LEN);
	assert_int_equal(efx_retrieve(f, &r, &dab, b), KMS_ST_POLICY_DENIED);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(efx_retrieve(f, &r, &dac, c), KMS_ST_OK);
}

/*
 * A full replay window fails closed: with no free slot near a nonce's hash
 * the request is refused BUSY (counted replay_busy), nothing of it is
 * recorded, and the same request is served once expired nonces free the
 * slots. 32 nonces of capacity is a table of 64 slots, and a check probes
 * up to 64: every live nonce is in reach, so the 65th is the first refused.
 */
static void replay_window_full(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *as = PT(P_AS);
	struct kms_policy pol = efx_policy();
	struct kms_stats st;
	struct efx_dep d;
	struct efx_ret r;
	struct efx_reply rep;
	size_t audit;

	f->replay_capacity = 32;
	efx_reconfigure(f, &pol, 1);
	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_OK); /* Eas */
	for (unsigned i = 1; i < 64; i++)                           /* Ebs */
		assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	audit = efx_counts(f).audit;
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_BUSY);
	kms_worker_stats(f->w[0], &st);
	assert_int_equal(st.replay_busy, 1);
	assert_int_equal(st.retrievals, 63);
	assert_int_equal(efx_counts(f).audit, audit);
	/* A refused request left no nonce behind: sent again later, once
	 * the window's nonces expired (2 x skew), it is served. */
	f->now += 2 * EFX_SKEW + 2;
	efx_run(f, 0, &r.req, &rep, 1);
	assert_int_equal(rep.status, KMS_ST_STALE); /* its own Eb: too old */
	efx_ret_build(f, &r, &d, b);
	efx_run(f, 0, &r.req, &r.rep, 1);
	efx_ret_finish(&r, &d, b);
	assert_int_equal(r.rep.status, KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
}

/*
 * Ea is the deposit's handle, not single-use (docs/PROTOCOL.md section 11):
 * a mailbox whose reply was lost retries with the same Ea and a fresh Eas
 * while Ea is within the skew. The retry is a deposit of its own.
 */
static void replay_ea_retry(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *as = PT(P_AS);
	struct efx_dep d, retry;
	struct efx_ret r;
	struct efx_tok eas;

	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_OK);
	f->now += EFX_SKEW;
	retry = d;
	efx_tok_of(f, &retry.eas, KMS_ROLE_AS, as, a, b);
	efx_deposit_req(f, &retry.req, &a->id, &b->id, &as->id, &retry.ea,
			&retry.eas);
	assert_int_equal(efx_run1(f, &retry.req, &retry.rep), KMS_ST_OK);
	efx_dep_finish(&retry);
	assert_memory_not_equal(retry.key_id, d.key_id, KMS_KEY_ID_LEN);
	assert_memory_not_equal(retry.k, d.k, KMS_KEY_LEN);
	/* Both deposits answer to the same handle, each with its own K. */
	assert_int_equal(efx_retrieve(f, &r, &retry, b), KMS_ST_OK);
	assert_memory_equal(r.k, retry.k, KMS_KEY_LEN);
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
	/* Past the skew Ea no longer makes deposits. */
	f->now += 1;
	efx_tok_of(f, &eas, KMS_ROLE_AS, as, a, b);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &d.ea, &eas),
			 KMS_ST_STALE);
	assert_int_equal(efx_counts(f).deposits, 2);
}


static void replay_within_batch(void **state)
{
	struct efx *f = *state;
	struct efx_dgram req[3];
	struct efx_reply rep[3];
	struct efx_dep d;
	struct efx_ret r;

	efx_dep_build(f, &d, PT(P_A), PT(P_B), PT(P_AS));
	req[0] = d.req;
	req[1] = d.req;
	req[2] = d.req;
	assert_int_equal(efx_run(f, 0, req, rep, 3), 3);
	assert_int_equal(rep[0].status, KMS_ST_OK);
	assert_int_equal(rep[1].status, KMS_ST_REPLAY);
	assert_int_equal(rep[2].status, KMS_ST_REPLAY);
	d.rep = rep[0];
	efx_dep_finish(&d);
	assert_int_equal(efx_counts(f).deposits, 1);

	efx_ret_build(f, &r, &d, PT(P_B));
	req[0] = r.req;
	req[1] = r.req;
	assert_int_equal(efx_run(f, 0, req, rep, 2), 2);
	assert_int_equal(rep[0].status, KMS_ST_OK);
	assert_int_equal(rep[1].status, KMS_ST_REPLAY);
	r.rep = rep[0];
	efx_ret_finish(&r, &d, PT(P_B));
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
}

/*
 * Eas and Eb stay single-use across a restart: a committed request writes
 * its nonce in the batch's commit, a new worker reloads the live ones.
 * Refused requests write none.
 */
static void replay_after_restart(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *as = PT(P_AS);
	struct efx_dep d, d2;
	struct efx_ret r;
	struct efx_reply rep;
	struct efx_tok ea;

	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_OK);
	assert_int_equal(efx_counts(f).nonces, 1);
	f->now += 10;
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	assert_int_equal(efx_counts(f).nonces, 2);
	assert_int_equal(efx_run1(f, &d.req, &rep), KMS_ST_REPLAY);
	assert_int_equal(efx_counts(f).nonces, 2);

	efx_restart(f, 0);
	assert_int_equal(efx_run1(f, &d.req, &rep), KMS_ST_REPLAY);
	assert_int_equal(efx_run1(f, &r.req, &rep), KMS_ST_REPLAY);
	/* Each token on its own: the old Eas with a fresh Ea, the old Eb
	 * in a RETRIEVE of another deposit. */
	efx_tok_of(f, &ea, KMS_ROLE_A, a, a, b);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &d.eas),
			 KMS_ST_REPLAY);
	assert_int_equal(efx_deposit(f, &d2, a, b, as), KMS_ST_OK);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d2.key_id, &d2.ea,
				      &r.eb), KMS_ST_REPLAY);
	assert_int_equal(efx_counts(f).deposits, 2);
	assert_int_equal(efx_counts(f).nonces, 3);

	/* Until ts + skew the nonce is kept: by a batch's purge and by the
	 * reload. One ms later the timestamp refuses the token itself. */
	f->now = EFX_T0 + EFX_SKEW;
	assert_int_equal(efx_deposit(f, &d2, PT(P_C), PT(P_D), as), KMS_ST_OK);
	efx_restart(f, 0);
	assert_int_equal(efx_run1(f, &d.req, &rep), KMS_ST_REPLAY);
	f->now++;
	assert_int_equal(efx_run1(f, &d.req, &rep), KMS_ST_STALE);
}

/* The nonce table stays bounded: a batch that commits purges expired
 * nonces, whose tokens the timestamp check refuses, restart or not. */
static void replay_nonces_purged(void **state)
{
	struct efx *f = *state;
	const struct efx_party *as = PT(P_AS);
	struct efx_dep d, d2;
	struct efx_ret r;
	struct efx_reply rep;
	size_t before;

	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), as), KMS_ST_OK);
	f->now += 10;
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	before = efx_counts(f).nonces;
	assert_int_equal(before, 2);
	assert_int_equal(efx_nonces_before(f, UINT64_MAX), 2);

	f->now += EFX_SKEW + 1000;	/* past both tokens' ts + skew */
	assert_int_equal(efx_nonces_before(f, f->now), 2);
	assert_int_equal(efx_deposit(f, &d2, PT(P_C), PT(P_D), as), KMS_ST_OK);
	assert_true(efx_counts(f).nonces < before);
	assert_int_equal(efx_nonces_before(f, f->now), 0);
	assert_int_equal(efx_counts(f).nonces, 1);	/* d2's */
	assert_int_equal(efx_run1(f, &d.req, &rep), KMS_ST_STALE);
	assert_int_equal(efx_run1(f, &r.req, &rep), KMS_ST_STALE);
	efx_restart(f, 0);
	assert_int_equal(efx_run1(f, &d.req, &rep), KMS_ST_STALE);
	assert_int_equal(efx_run1(f, &r.req, &rep), KMS_ST_STALE);
	assert_int_equal(efx_run1(f, &d2.req, &rep), KMS_ST_REPLAY);
	assert_int_equal(efx_counts(f).deposits, 2);
}

/* Each worker reloads the nonces of the pairs it owns, also when the
 * number of workers changed (the store keeps the pair, not the worker). */
static void replay_after_restart_two_workers(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_policy();
	struct efx_dep *d = calloc(EFX_NPAIRS, sizeof(*d));
	struct efx_ret *r = calloc(EFX_NPAIRS, sizeof(*r));
	unsigned per[EFX_MAX_WORKERS] = { 0 };
	struct efx_reply rep;
	struct kms_stats st;

	assert_true(d && r);
	efx_dep_build_pairs(f, d, NULL, EFX_NPAIRS, PT(P_AS));
	for (unsigned n = 0; n < EFX_NPAIRS; n++) {	/* one worker */
		assert_int_equal(efx_run1(f, &d[n].req, &d[n].rep), KMS_ST_OK);
		efx_dep_finish(&d[n]);
	}
	efx_reconfigure(f, &pol, 2);
	for (unsigned n = 0; n < EFX_NPAIRS; n++) {
		unsigned wi = efx_owner(f, &d[n].req);

		assert_int_equal(wi, efx_pair_worker(d[n].a, d[n].b, 2));
		per[wi]++;
		efx_run(f, wi, &d[n].req, &rep, 1);
		assert_int_equal(rep.status, KMS_ST_REPLAY);
		assert_int_equal(efx_retrieve(f, &r[n], &d[n], d[n].b),
				 KMS_ST_OK);
	}
	assert_true(per[0] > 0 && per[1] > 0);
	efx_restart(f, 0);	/* two workers, from disk */
	for (unsigned n = 0; n < EFX_NPAIRS; n++) {
		assert_int_equal(efx_run1(f, &d[n].req, &rep), KMS_ST_REPLAY);
		assert_int_equal(efx_run1(f, &r[n].req, &rep), KMS_ST_REPLAY);
	}
	for (unsigned i = 0; i < 2; i++) {
		kms_worker_stats(f->w[i], &st);
		assert_int_equal(st.requests, 2 * per[i]);
		assert_int_equal(st.by_status[KMS_RK_DEPOSIT][KMS_ST_REPLAY],
				 per[i]);
		assert_int_equal(st.by_status[KMS_RK_RETRIEVE][KMS_ST_REPLAY],
				 per[i]);
	}
	free(d);
	free(r);
}

/*
 * The reload reads what the store says, role included; it fills only the
 * owner's window, and a window too small for the live nonces keeps the
 * worker from starting (fail closed) rather than forget some.
 */
static void replay_reload_from_store(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_policy();
	const struct efx_party *a[2], *b[2];
	uint64_t exp = f->now + EFX_SKEW + 1;
	struct efx_dep d1, d2;

	/* Two deposits never sent; their Eas nonces planted in the store,
	 * d1's under the wrong role. */
	efx_dep_build(f, &d1, PT(P_A), PT(P_B), PT(P_AS));
	efx_dep_build(f, &d2, PT(P_C), PT(P_D), PT(P_AS));
	efx_nonce_plant(f, exp, KMS_ROLE_B, d1.eas.nonce, 1, d1.a, d1.b);
	efx_nonce_plant(f, exp, KMS_ROLE_AS, d2.eas.nonce, 1, d2.a, d2.b);
	efx_restart(f, 0);
	assert_int_equal(efx_run1(f, &d2.req, &d2.rep), KMS_ST_REPLAY);
	assert_int_equal(efx_run1(f, &d1.req, &d1.rep), KMS_ST_OK);

	/* 200 live nonces of a pair of worker 1 (of 2), 40 of worker 0's;
	 * a window of 32 nonces has 64 slots. */
	for (unsigned i = 0; i < 2; i++)
		efx_pair_of_worker(f, 2, i, &a[i], &b[i]);
	efx_nonce_plant(f, exp, KMS_ROLE_AS, NULL, 200, a[1], b[1]);
	efx_nonce_plant(f, exp, KMS_ROLE_B, NULL, 40, a[0], b[0]);
	efx_stop(f);
	assert_int_equal(efx_worker_try(f, 2, 32, 0), KMS_OK);
	assert_int_equal(efx_worker_try(f, 2, 32, 1), KMS_ERR_BUSY);
	/* One worker owns every pair, so it must hold all of them. */
	assert_int_equal(efx_worker_try(f, 1, 32, 0), KMS_ERR_BUSY);
	assert_int_equal(efx_worker_try(f, 1, 256, 0), KMS_OK);
	/* Once they expired, the small window starts. */
	f->now = exp + 1;
	assert_int_equal(efx_worker_try(f, 1, 32, 0), KMS_OK);
	efx_start(f, &pol, 1);
}

/* --------------------------------------------- 6. timestamps (P4) */

static void timestamps(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *as = PT(P_AS);
	const uint64_t skew = EFX_SKEW;
	struct efx_tok ea, eas, eb;
	struct efx_dep d;
	struct efx_ret r;

	efx_tok_of(f, &ea, KMS_ROLE_A, a, a, b);
	efx_tok(&eas, KMS_ROLE_AS, &as->id, as->key, 1, f->now - skew - 1,
		&a->id, &b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &eas),
			 KMS_ST_STALE);
	efx_tok(&eas, KMS_ROLE_AS, &as->id, as->key, 1, f->now + skew + 1,
		&a->id, &b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &eas),
			 KMS_ST_STALE);
	efx_tok_of(f, &eas, KMS_ROLE_AS, as, a, b);
	efx_tok(&ea, KMS_ROLE_A, &a->id, a->key, 1, f->now - skew - 1, &a->id,
		&b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &eas),
			 KMS_ST_STALE);
	/* Exactly at the skew limit is still accepted. */
	efx_tok(&ea, KMS_ROLE_A, &a->id, a->key, 1, f->now + skew, &a->id,
		&b->id);
	efx_tok(&eas, KMS_ROLE_AS, &as->id, as->key, 1, f->now - skew, &a->id,
		&b->id);
	assert_int_equal(efx_dep_with(f, &a->id, &b->id, &as->id, &ea, &eas),
			 KMS_ST_OK);

	assert_int_equal(efx_deposit(f, &d, a, b, as), KMS_ST_OK);
	efx_tok(&eb, KMS_ROLE_B, &b->id, b->key, 1, f->now - skew - 1, &a->id,
		&b->id);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d.key_id, &d.ea, &eb),
			 KMS_ST_STALE);
	efx_tok(&eb, KMS_ROLE_B, &b->id, b->key, 1, f->now + skew + 1, &a->id,
		&b->id);
	assert_int_equal(efx_ret_with(f, &a->id, &b->id, d.key_id, &d.ea, &eb),
			 KMS_ST_STALE);
	/* Hours later Ea is far outside the skew: it is the handle, fine. */
	f->now += 6 * 3600 * 1000ull;
	assert_int_equal(efx_retrieve(f, &r, &d, b), KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
}

/* ------------------------------------------------- 7. binding (P5) */

static void responses_bound_to_request(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *c = PT(P_C);
	struct kms_policy pol = efx_reuse_policy(10, 0);
	struct efx_dep d1, d2;
	struct efx_ret r;
	struct kms_resp t;
	uint8_t k[KMS_KEY_LEN], kid[KMS_KEY_ID_LEN];

	efx_reconfigure(f, &pol, 1);
	assert_int_equal(efx_deposit(f, &d1, a, b, PT(P_AS)), KMS_ST_OK);
	assert_int_equal(efx_deposit(f, &d2, a, b, PT(P_AS)), KMS_ST_OK);
	assert_memory_equal(d1.k, d2.k, KMS_KEY_LEN);	/* same K, re-used */
	/* Reply 1 does not answer request 2, nor the reverse. */
	assert_int_equal(efx_open(&d1.rep, KMS_ROLE_A, a, a, b, d2.ea.nonce, k),
			 KMS_ERR_AUTH);
	assert_int_equal(efx_open(&d2.rep, KMS_ROLE_A, a, a, b, d1.ea.nonce, k),
			 KMS_ERR_AUTH);
	/* Nor another pair, nor another recipient generation. */
	assert_int_equal(efx_open(&d1.rep, KMS_ROLE_A, a, a, c, d1.ea.nonce, k),
			 KMS_ERR_AUTH);
	f->p[P_A].gen = 2;
	assert_int_equal(efx_open(&d1.rep, KMS_ROLE_A, a, a, b, d1.ea.nonce, k),
			 KMS_ERR_AUTH);
	f->p[P_A].gen = 1;
	/* The reply's clear fields are bound: key id, k_gen, expiry. */
	t = d1.rep.r;
	memcpy(kid, t.key_id, sizeof(kid));
	kid[0] ^= 1;
	t.key_id = kid;
	assert_int_equal(kms_keybox_open(&t, KMS_ROLE_A, 1, a->key, &a->id,
					 &b->id, d1.ea.nonce, k), KMS_ERR_AUTH);
	t = d1.rep.r;
	t.k_gen++;
	assert_int_equal(kms_keybox_open(&t, KMS_ROLE_A, 1, a->key, &a->id,
					 &b->id, d1.ea.nonce, k), KMS_ERR_AUTH);
	t = d1.rep.r;
	t.expiry_ms += 1000;
	assert_int_equal(kms_keybox_open(&t, KMS_ROLE_A, 1, a->key, &a->id,
					 &b->id, d1.ea.nonce, k), KMS_ERR_AUTH);

	assert_int_equal(efx_retrieve(f, &r, &d1, b), KMS_ST_OK);
	/* A RETRIEVE_RESP is not a DEPOSIT_RESP: role and type are bound. */
	assert_int_equal(efx_open(&r.rep, KMS_ROLE_A, b, a, b, r.eb.nonce, k),
			 KMS_ERR_AUTH);
	t = r.rep.r;
	t.hdr.type = KMS_T_DEPOSIT_RESP;
	assert_int_equal(kms_keybox_open(&t, KMS_ROLE_B, 1, b->key, &a->id,
					 &b->id, r.eb.nonce, k), KMS_ERR_AUTH);
	/* Bound to Eb's nonce, not to the handle Ea's. */
	assert_int_equal(efx_open(&r.rep, KMS_ROLE_B, b, a, b, d1.ea.nonce, k),
			 KMS_ERR_AUTH);
	/* And A's DEPOSIT_RESP does not open for B. */
	assert_int_equal(efx_open(&d1.rep, KMS_ROLE_B, b, a, b, d1.ea.nonce, k),
			 KMS_ERR_AUTH);
}

/* ------------------------------------------ 8. re-use policy (P1) */

static void reuse_max_deposits(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_reuse_policy(3, 0);
	struct efx_dep d[5], other;
	struct efx_ret r;
	struct kms_stats st;

	efx_reconfigure(f, &pol, 1);
	for (unsigned i = 0; i < 5; i++) {
		f->now += 1000;
		assert_int_equal(efx_deposit(f, &d[i], PT(P_A), PT(P_B), PT(P_AS)),
				 KMS_ST_OK);
	}
	for (unsigned i = 0; i < 3; i++) {
		assert_memory_equal(d[i].k, d[0].k, KMS_KEY_LEN);
		assert_int_equal(d[i].k_gen, 1);
		assert_memory_not_equal(d[i].key_id, d[(i + 1) % 3].key_id,
					KMS_KEY_ID_LEN);
	}
	assert_memory_not_equal(d[3].k, d[0].k, KMS_KEY_LEN);
	assert_int_equal(d[3].k_gen, 2);
	assert_memory_equal(d[4].k, d[3].k, KMS_KEY_LEN);
	assert_int_equal(d[4].k_gen, 2);
	/* Another pair never shares the K. */
	assert_int_equal(efx_deposit(f, &other, PT(P_A), PT(P_C), PT(P_AS)),
			 KMS_ST_OK);
	assert_memory_not_equal(other.k, d[0].k, KMS_KEY_LEN);
	assert_memory_not_equal(other.k, d[3].k, KMS_KEY_LEN);
	/* Each deposit yields its own K to B, generation 1 included. */
	assert_int_equal(efx_retrieve(f, &r, &d[1], PT(P_B)), KMS_ST_OK);
	assert_memory_equal(r.k, d[0].k, KMS_KEY_LEN);
	assert_int_equal(efx_retrieve(f, &r, &d[4], PT(P_B)), KMS_ST_OK);
	assert_memory_equal(r.k, d[3].k, KMS_KEY_LEN);
	efx_stats(f, &st);
	assert_int_equal(st.keys_new, 3);
	assert_int_equal(st.keys_reused, 3);
}

static void reuse_never(void **state)
{
	struct efx *f = *state;
	struct efx_dep d[3];

	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(efx_deposit(f, &d[i], PT(P_A), PT(P_B), PT(P_AS)),
				 KMS_ST_OK);
		assert_int_equal(d[i].k_gen, i + 1);
		for (unsigned j = 0; j < i; j++)
			assert_memory_not_equal(d[i].k, d[j].k, KMS_KEY_LEN);
	}
}

static void reuse_max_age(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_reuse_policy(100, 60);
	struct efx_dep d0, d1, d2;

	efx_reconfigure(f, &pol, 1);
	assert_int_equal(efx_deposit(f, &d0, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	f->now = EFX_T0 + 60000 - 1;
	assert_int_equal(efx_deposit(f, &d1, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	assert_memory_equal(d1.k, d0.k, KMS_KEY_LEN);
	assert_int_equal(d1.k_gen, 1);
	f->now = EFX_T0 + 60000;
	assert_int_equal(efx_deposit(f, &d2, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	assert_memory_not_equal(d2.k, d0.k, KMS_KEY_LEN);
	assert_int_equal(d2.k_gen, 2);
}

static void reuse_within_batch(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_reuse_policy(3, 0);
	struct efx_dgram req[4];
	struct efx_reply rep[4];
	struct efx_dep d[4];
	struct kms_pair pr;

	efx_reconfigure(f, &pol, 1);
	for (unsigned i = 0; i < 2; i++) {
		efx_dep_build(f, &d[i], PT(P_A), PT(P_B), PT(P_AS));
		req[i] = d[i].req;
	}
	assert_int_equal(efx_run(f, 0, req, rep, 2), 2);
	for (unsigned i = 0; i < 2; i++) {
		d[i].rep = rep[i];
		assert_int_equal(rep[i].status, KMS_ST_OK);
		efx_dep_finish(&d[i]);
	}
	assert_memory_equal(d[0].k, d[1].k, KMS_KEY_LEN);
	efx_pair_get(f, PT(P_A), PT(P_B), &pr);
	assert_int_equal(pr.uses, 2);
	assert_int_equal(pr.k_gen, 1);

	/* Four of pair (C, D) in one batch under N = 3: 3 share, 1 new. */
	for (unsigned i = 0; i < 4; i++) {
		efx_dep_build(f, &d[i], PT(P_C), PT(P_D), PT(P_AS));
		req[i] = d[i].req;
	}
	assert_int_equal(efx_run(f, 0, req, rep, 4), 4);
	for (unsigned i = 0; i < 4; i++) {
		d[i].rep = rep[i];
		assert_int_equal(rep[i].status, KMS_ST_OK);
		efx_dep_finish(&d[i]);
	}
	assert_memory_equal(d[1].k, d[0].k, KMS_KEY_LEN);
	assert_memory_equal(d[2].k, d[0].k, KMS_KEY_LEN);
	assert_memory_not_equal(d[3].k, d[0].k, KMS_KEY_LEN);
	assert_int_equal(d[3].k_gen, 2);
	efx_pair_get(f, PT(P_C), PT(P_D), &pr);
	assert_int_equal(pr.uses, 1);
	assert_int_equal(pr.k_gen, 2);
	/* The next batch continues from the stored count. */
	assert_int_equal(efx_deposit(f, &d[0], PT(P_C), PT(P_D), PT(P_AS)),
			 KMS_ST_OK);
	assert_memory_equal(d[0].k, d[3].k, KMS_KEY_LEN);
	efx_pair_get(f, PT(P_C), PT(P_D), &pr);
	assert_int_equal(pr.uses, 2);
}

/* ---------------------------------------------- 9. durability */

static void durable_before_answer(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct efx_ret r;

	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	efx_restart(f, 0);	/* worker, engine, store, HSM: all closed */
	f->now += 3600 * 1000ull;
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
	assert_int_equal(r.rep.r.k_gen, d.k_gen);
	assert_int_equal(r.rep.r.expiry_ms, d.expiry_ms);
}

/* ------------------------------- 9b. deferred RETRIEVE records (opt-in) */

/* Restart with deferred RETRIEVE records: at most @p max wait, for at
 * most @p ms. */
static void deferred_start(struct efx *f, unsigned max, uint32_t ms)
{
	struct kms_policy pol = efx_policy();

	f->deferred_max = max;
	f->deferred_flush_ms = ms;
	efx_reconfigure(f, &pol, 1);
}

/*
 * A RETRIEVE is answered before its audit record and nonce are durable;
 * they become durable when the worker idles, and until then the replay
 * window in memory still refuses the token.
 */
static void deferred_answer_then_idle(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct efx_ret r;
	struct efx_reply rep;
	struct kms_stats st;

	deferred_start(f, 8, 1000);
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)), KMS_ST_OK);
	assert_int_equal(efx_counts(f).audit, 1);           /* DEPOSIT: durable */
	assert_int_equal(efx_counts(f).nonces, 1);
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
	assert_int_equal(efx_counts(f).audit, 1);           /* not yet */
	assert_int_equal(efx_counts(f).nonces, 1);
	assert_int_equal(efx_run1(f, &r.req, &rep), KMS_ST_REPLAY);
	kms_worker_idle(f->w[0], 0);
	assert_int_equal(efx_counts(f).audit, 2);           /* now durable */
	assert_int_equal(efx_counts(f).nonces, 2);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_records, 1);
	assert_int_equal(st.deferred_failures, 0);
	/* And they survive a restart: the replay stays refused. */
	efx_restart(f, 0);
	assert_int_equal(efx_run1(f, &r.req, &rep), KMS_ST_REPLAY);
}

/* The oldest deferred record waits at most deferred_flush_ms: the first
 * batch after that commits them first. */
static void deferred_flush_by_age(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct efx_ret r1, r2;

	deferred_start(f, 64, 50);
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r1, &d, PT(P_B)), KMS_ST_OK);
	f->now += 49;
	assert_int_equal(efx_retrieve(f, &r2, &d, PT(P_B)), KMS_ST_OK);
	assert_int_equal(efx_counts(f).audit, 1);           /* 49 ms: both wait */
	f->now += 1;
	assert_int_equal(efx_retrieve(f, &r2, &d, PT(P_B)), KMS_ST_OK);
	assert_int_equal(efx_counts(f).audit, 3);           /* 50 ms: flushed */
	assert_int_equal(efx_counts(f).nonces, 3);
}

/* A polling loop's empty poll right after a batch is not idle time: the
 * records wait for KMS_IDLE_QUIET_MS without a batch (or their due time),
 * while kms_worker_idle(), called before sleeping, commits them at once. */
static void deferred_idle_poll_waits_for_quiet(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct efx_ret r;
	struct kms_stats st0, st;

	deferred_start(f, 64, 1000);
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	efx_stats(f, &st0);
	kms_worker_idle_poll(f->w[0], 0);
	kms_worker_idle_poll(f->w[0], 0);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_flushes, st0.deferred_flushes);
	assert_int_equal(st.deferred_flush_us, st0.deferred_flush_us);
	assert_int_equal(kms_worker_deferred(f->w[0]), 1);
	assert_int_equal(efx_counts(f).audit, 1);           /* still waiting */
	f->now += KMS_IDLE_QUIET_MS;
	kms_worker_idle_poll(f->w[0], 0);
	assert_int_equal(kms_worker_deferred(f->w[0]), 0);
	assert_int_equal(efx_counts(f).audit, 2);           /* quiet: durable */
	assert_int_equal(efx_counts(f).nonces, 2);
	/* Before sleeping: at once, however recent the batch. */
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	assert_int_equal(kms_worker_deferred(f->w[0]), 1);
	kms_worker_idle(f->w[0], 0);
	assert_int_equal(kms_worker_deferred(f->w[0]), 0);
	assert_int_equal(efx_counts(f).audit, 3);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_records, 2);
	assert_int_equal(st.deferred_flushes, st0.deferred_flushes + 2);
	/* Two durable write transactions took their time, and it is counted
	 * (real clock, microseconds: each takes far more than one). */
	assert_true(st.deferred_flush_us >= st0.deferred_flush_us + 2);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* At most deferred_max wait: a full buffer is committed before the next
 * batch, and a DEPOSIT batch takes the waiting records with it. */
static void deferred_flush_by_size_and_deposit(void **state)
{
	struct efx *f = *state;
	struct efx_dep d, d2;
	struct efx_ret r;
	struct efx_reply rep;
	struct efx_audit_scan sc;
	struct kms_stats st0, st;
	uint64_t t0, t1;

	deferred_start(f, 4, 60000);
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)), KMS_ST_OK);
	for (int i = 0; i < 4; i++) {
		f->now++;
		assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
		assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
	}
	assert_int_equal(efx_counts(f).audit, 1);
	f->now++;
	/* The full buffer is flushed at the start of the next batch: that
	 * time is deferred_flush_us, not batch_us_sum too (the two, in us,
	 * fit in the wall time of the call; counted twice, they would not:
	 * the flush's durable commit takes far more than the 2 us of
	 * rounding allowed). */
	efx_stats(f, &st0);
	efx_ret_build(f, &r, &d, PT(P_B));
	t0 = now_ns();
	assert_int_equal(efx_run(f, 0, &r.req, &rep, 1), 1);
	t1 = now_ns();
	r.rep = rep;
	assert_int_equal(rep.status, KMS_ST_OK);
	efx_ret_finish(&r, &d, PT(P_B));
	assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_flushes, st0.deferred_flushes + 1);
	assert_true(st.deferred_flush_us > st0.deferred_flush_us);
	assert_true((st.batch_us_sum - st0.batch_us_sum) +
		    (st.deferred_flush_us - st0.deferred_flush_us) <=
		    (t1 - t0) / 1000 + 2);
	assert_int_equal(efx_counts(f).audit, 5);           /* 4 flushed first */
	/* One waits; a DEPOSIT's durable commit carries it. */
	f->now++;
	assert_int_equal(efx_deposit(f, &d2, PT(P_C), PT(P_D), PT(P_AS)), KMS_ST_OK);
	assert_int_equal(efx_counts(f).audit, 7);
	efx_audit_scan(f, d.k, &sc);
	assert_int_equal(sc.key_retrieve, 5);
	assert_int_equal(sc.with_k, 0);                     /* never K itself */
}

/* Graceful stop commits what waits; the deposit's K is durable anyway. */
static void deferred_flushed_at_stop(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct efx_ret r, r2;

	deferred_start(f, 64, 60000);
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);
	assert_int_equal(efx_counts(f).audit, 1);
	efx_restart(f, 0);
	assert_int_equal(efx_counts(f).audit, 2);
	assert_int_equal(efx_retrieve(f, &r2, &d, PT(P_B)), KMS_ST_OK);
	assert_memory_equal(r2.k, d.k, KMS_KEY_LEN);
}

/* ---------------------------------------------- 10. store full */

#define FULL_MAX 2000

/* Deposit on the fixture's pairs into @p d until one is refused (the
 * small store is full) or FULL_MAX are in. @return deposits answered OK;
 * *st: the status that stopped it (KMS_ST_OK if none did). */
static unsigned fill_store(struct efx *f, struct efx_dep *d, uint16_t *st)
{
	const struct efx_party *a, *b;
	unsigned ok = 0;

	*st = KMS_ST_OK;
	while (ok < FULL_MAX) {
		efx_user_pair(f, ok % EFX_NPAIRS, &a, &b);
		*st = efx_deposit(f, &d[ok], a, b, PT(P_AS));
		if (*st != KMS_ST_OK)
			break;
		ok++;
	}
	return ok;
}

/* A store filled by fill_store() until full: its deposits (free them),
 * *ok of them. */
static struct efx_dep *full_store(struct efx *f, unsigned *ok)
{
	struct efx_dep *d = calloc(FULL_MAX, sizeof(*d));
	uint16_t st;

	assert_non_null(d);
	*ok = fill_store(f, d, &st);
	assert_int_equal(st, KMS_ST_STORE_FULL);
	assert_true(*ok >= 1);
	return d;
}

static void store_full(void **state)
{
	struct efx *f = *state;
	struct efx_dep *d = calloc(FULL_MAX, sizeof(*d));
	struct efx_dgram req[4];
	struct efx_reply rep[4];
	struct efx_ret r;
	const struct efx_party *a, *b;
	unsigned ok = 0;
	uint16_t st = KMS_ST_OK;

	assert_non_null(d);
	ok = fill_store(f, d, &st);
	assert_int_equal(st, KMS_ST_STORE_FULL);
	assert_true(ok >= 1);
	assert_int_equal(efx_counts(f).deposits, ok);
	/* A batch on a full store: every deposit refused, none kept. */
	for (unsigned i = 0; i < 4; i++) {
		efx_user_pair(f, i, &a, &b);
		efx_dep_build(f, &d[ok], a, b, PT(P_AS));
		req[i] = d[ok].req;
	}
	assert_int_equal(efx_run(f, 0, req, rep, 4), 4);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(rep[i].status, KMS_ST_STORE_FULL);
	assert_int_equal(efx_counts(f).deposits, ok);
	/* On the full store a RETRIEVE either works or is refused as full
	 * (its count and audit record need room): never a wrong K. */
	st = efx_retrieve(f, &r, &d[0], d[0].b);
	assert_true(st == KMS_ST_OK || st == KMS_ST_STORE_FULL);
	if (st == KMS_ST_OK)
		assert_memory_equal(r.k, d[0].k, KMS_KEY_LEN);
	/* Given room, every deposit answered OK is there with its K. */
	efx_restart(f, 4 * EFX_TINY_MAP);
	for (unsigned i = 0; i < ok; i++) {
		assert_int_equal(efx_retrieve(f, &r, &d[i], d[i].b), KMS_ST_OK);
		assert_memory_equal(r.k, d[i].k, KMS_KEY_LEN);
	}
	free(d);
}

/* A deferred flush that fails (the store is full) keeps the records, is
 * retried no sooner than deferred_flush_ms later (not from every idle
 * poll), and succeeds once there is room. Answers never depend on it. */
static void deferred_flush_failure(void **state)
{
	struct efx *f = *state;
	unsigned ok, tries = 0;
	struct efx_dep *d = full_store(f, &ok);
	struct kms_stats st0, st;
	struct efx_ret r;

	deferred_start(f, 1024, 100);
	/* RETRIEVEs are answered (reads only); their records do not fit. */
	do {
		f->now++;
		assert_int_equal(efx_retrieve(f, &r, &d[tries % ok], d[tries % ok].b),
				 KMS_ST_OK);
		assert_memory_equal(r.k, d[tries % ok].k, KMS_KEY_LEN);
		kms_worker_idle(f->w[0], 0);
		efx_stats(f, &st);
	} while (!st.deferred_failures && ++tries < 512);
	assert_int_equal(st.deferred_failures, 1);
	/* Idle again at once: no new attempt. */
	st0 = st;
	kms_worker_idle(f->w[0], 0);
	kms_worker_idle(f->w[0], 0);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_flushes, st0.deferred_flushes);
	/* One interval later: tried again (and fails again: still full). */
	f->now += 100;
	kms_worker_idle(f->w[0], 0);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_flushes, st0.deferred_flushes + 1);
	assert_int_equal(st.deferred_failures, 2);
	/* With room (a restart stops the worker: its flush fails too, and
	 * says so), RETRIEVE keeps working and new records commit. */
	efx_restart(f, 4 * EFX_TINY_MAP);
	f->now += 1000;
	assert_int_equal(efx_retrieve(f, &r, &d[0], d[0].b), KMS_ST_OK);
	kms_worker_idle(f->w[0], 0);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_failures, 0);
	assert_int_equal(st.deferred_records, 1);
	free(d);
}

/* --------------------- 9c. deferred records through a commit thread */

static void deferred_start_thread(struct efx *f, unsigned max, uint32_t ms)
{
	f->deferred_thread = 1;
	deferred_start(f, max, ms);
}

/*
 * With store.deferred_commit = thread the records still become durable
 * by themselves (not only at idle or stop), the answer never waits for
 * them, the replay stays refused meanwhile, and kms_worker_idle() returns
 * with everything committed.
 */
static void deferred_thread_commits(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct efx_ret r1, r2, r3;
	struct efx_reply rep;
	struct kms_stats st;

	deferred_start_thread(f, 64, 50);
	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r1, &d, PT(P_B)), KMS_ST_OK);
	assert_int_equal(efx_retrieve(f, &r2, &d, PT(P_B)), KMS_ST_OK);
	assert_int_equal(kms_worker_deferred(f->w[0]), 2);
	/* Due (50 ms): the next batch hands both to the thread and is
	 * answered without waiting; its own record waits in the worker. */
	f->now += 50;
	assert_int_equal(efx_retrieve(f, &r3, &d, PT(P_B)), KMS_ST_OK);
	assert_memory_equal(r3.k, d.k, KMS_KEY_LEN);
	kms_worker_commit_wait(f->w[0]);
	assert_int_equal(efx_counts(f).audit, 3);   /* deposit + r1 + r2 */
	assert_int_equal(efx_counts(f).nonces, 3);
	assert_int_equal(kms_worker_deferred(f->w[0]), 1);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_records, 2);
	assert_int_equal(st.deferred_flushes, 1);
	assert_int_equal(efx_run1(f, &r1.req, &rep), KMS_ST_REPLAY);
	assert_int_equal(efx_run1(f, &r3.req, &rep), KMS_ST_REPLAY);
	/* A polling loop's quiet time hands over the rest, also async. */
	f->now += KMS_IDLE_QUIET_MS;
	kms_worker_idle_poll(f->w[0], 0);
	kms_worker_commit_wait(f->w[0]);
	assert_int_equal(efx_counts(f).audit, 4);
	assert_int_equal(kms_worker_deferred(f->w[0]), 0);
	/* kms_worker_idle(): committed when it returns, as without a thread. */
	assert_int_equal(efx_retrieve(f, &r1, &d, PT(P_B)), KMS_ST_OK);
	kms_worker_idle(f->w[0], 0);
	assert_int_equal(efx_counts(f).audit, 5);
	assert_int_equal(kms_worker_deferred(f->w[0]), 0);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_records, 4);
	assert_int_equal(st.deferred_failures, 0);
	/* A stop commits what waits: r2 handed to the thread by r3's batch
	 * (the restart does not wait for that commit first), r3 in the
	 * worker's buffer. */
	assert_int_equal(efx_retrieve(f, &r2, &d, PT(P_B)), KMS_ST_OK);
	f->now += 50;
	assert_int_equal(efx_retrieve(f, &r3, &d, PT(P_B)), KMS_ST_OK);
	efx_restart(f, 0);
	assert_int_equal(efx_counts(f).audit, 7);
	assert_int_equal(efx_run1(f, &r2.req, &rep), KMS_ST_REPLAY);
	assert_int_equal(efx_run1(f, &r3.req, &rep), KMS_ST_REPLAY);
}

/* A commit of the thread's buffer that fails (the store is full) keeps
 * the buffer; the thread retries it no sooner than deferred_flush_ms
 * later, while the worker's new records gather; with room, all commit. */
static void deferred_thread_failure(void **state)
{
	struct efx *f = *state;
	unsigned ok, tries = 0;
	struct efx_dep *d = full_store(f, &ok);
	struct kms_stats st0, st;
	struct efx_ret r;

	deferred_start_thread(f, 1024, 100);
	/* Hand over through the polling path until a commit fails. */
	do {
		f->now += 1 + KMS_IDLE_QUIET_MS;
		assert_int_equal(efx_retrieve(f, &r, &d[tries % ok], d[tries % ok].b),
				 KMS_ST_OK);
		assert_memory_equal(r.k, d[tries % ok].k, KMS_KEY_LEN);
		f->now += KMS_IDLE_QUIET_MS;
		kms_worker_idle_poll(f->w[0], 0);
		kms_worker_commit_wait(f->w[0]);
		efx_stats(f, &st);
	} while (!st.deferred_failures && ++tries < 512);
	assert_int_equal(st.deferred_failures, 1);
	assert_true(kms_worker_deferred(f->w[0]) >= 1);
	/* A new record, handed over at once: the thread's failed buffer is
	 * not retried before its interval, and nothing else is tried. */
	st0 = st;
	assert_int_equal(efx_retrieve(f, &r, &d[0], d[0].b), KMS_ST_OK);
	f->now += KMS_IDLE_QUIET_MS;
	kms_worker_idle_poll(f->w[0], 0);
	kms_worker_commit_wait(f->w[0]);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_flushes, st0.deferred_flushes);
	/* One interval later: retried by the thread (and fails again). */
	f->now += 100;
	kms_worker_idle_poll(f->w[0], 0);
	kms_worker_commit_wait(f->w[0]);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_flushes, st0.deferred_flushes + 1);
	assert_int_equal(st.deferred_failures, 2);
	/* With room, everything that waited commits. */
	efx_restart(f, 4 * EFX_TINY_MAP);
	f->now += 1000;
	assert_int_equal(efx_retrieve(f, &r, &d[0], d[0].b), KMS_ST_OK);
	kms_worker_idle(f->w[0], 0);
	efx_stats(f, &st);
	assert_int_equal(st.deferred_failures, 0);
	assert_int_equal(st.deferred_records, 1);
	assert_int_equal(kms_worker_deferred(f->w[0]), 0);
	free(d);
}

/* --------------------------------------- 11. malformed datagrams */

static void malformed(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct efx_dgram m;
	struct efx_reply rep;
	struct kms_stats st;
	unsigned sent = 0, drops = 0, answered;
	uint64_t by = 0;

	efx_dep_build(f, &d, PT(P_A), PT(P_B), PT(P_AS));
	for (uint16_t len = 0; len < d.req.len; len++) {
		m = d.req;
		m.len = len;
		efx_expect_refused(f, &m, &sent, &drops);
		if (len < KMS_HDR_LEN)
			continue;
		efx_fix_body_len(&m);	/* a consistent header, a short body */
		efx_expect_refused(f, &m, &sent, &drops);
	}
	for (uint16_t junk = 1; junk <= 32; junk++) {
		m = d.req;
		memset(m.b + m.len, 0xa5, junk);
		m.len += junk;
		efx_expect_refused(f, &m, &sent, &drops);
		efx_fix_body_len(&m);
		efx_expect_refused(f, &m, &sent, &drops);
	}
	/* Header fields: magic and reply types (drops), version, type. */
	m = d.req;
	m.b[0] = 'X';
	efx_expect_refused(f, &m, &sent, &drops);
	for (unsigned i = 0; i < 3; i++) {
		static const uint8_t reply_types[3] = {
			KMS_T_DEPOSIT_RESP, KMS_T_RETRIEVE_RESP, KMS_T_ERROR
		};

		m = d.req;
		m.b[3] = reply_types[i];
		efx_run(f, 0, &m, &rep, 1);
		sent++;
		drops++;
		assert_int_equal(rep.len, 0);
	}
	m = d.req;
	m.b[2] = 2;
	efx_run(f, 0, &m, &rep, 1);
	sent++;
	assert_int_equal(rep.status, KMS_ST_BAD_VERSION);
	m = d.req;
	m.b[3] = 0x07;
	efx_run(f, 0, &m, &rep, 1);
	sent++;
	assert_int_equal(rep.status, KMS_ST_BAD_TYPE);

	/* The counters add up. */
	efx_stats(f, &st);
	assert_int_equal(st.requests, sent);
	assert_int_equal(st.drops[KMS_DROP_NOT_KMS], drops);
	assert_int_equal(st.drops[KMS_DROP_NO_SPACE], 0);
	for (unsigned k = 0; k < KMS_RK__COUNT; k++)
		for (unsigned s = 0; s < KMS_ST__COUNT; s++)
			by += st.by_status[k][s];
	assert_int_equal(by, sent);
	answered = sent - drops;
	assert_true(answered > 0 && drops > 0);
	assert_int_equal(st.by_status[KMS_RK_DEPOSIT][KMS_ST_OK] +
			 st.by_status[KMS_RK_OTHER][KMS_ST_OK], 0);
	assert_int_equal(efx_counts(f).deposits, 0);
	/* None of the broken copies burnt the tokens of the real one. */
	assert_int_equal(efx_run1(f, &d.req, &d.rep), KMS_ST_OK);
	efx_dep_finish(&d);
}

/* A reply buffer too small for the reply: a counted drop, no overflow. */
static void reply_buffer_too_small(void **state)
{
	struct efx *f = *state;
	struct efx_dep d;
	struct kms_msg m;
	struct kms_stats st;
	uint8_t small[KMS_HDR_LEN + 1];

	efx_dep_build(f, &d, PT(P_A), PT(P_B), PT(P_AS));
	d.req.b[2] = 9;	/* bad version: an ERROR needs 14 bytes */
	memset(&m, 0, sizeof(m));
	m.req = d.req.b;
	m.req_len = d.req.len;
	m.resp = small;
	m.resp_cap = sizeof(small);
	assert_int_equal(kms_worker_process(f->w[0], &m, 1), 0);
	assert_int_equal(m.resp_len, 0);
	efx_stats(f, &st);
	assert_int_equal(st.drops[KMS_DROP_NO_SPACE], 1);
}

/* ------------------------------------------------- 12. audit (P7) */

static void audit_trail(void **state)
{
	struct efx *f = *state;
	struct efx_audit_scan s;
	struct efx_dep d;
	struct efx_ret r;
	uint64_t t_dep = f->now, t_ret = f->now + 7000;

	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	f->now = t_ret;
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);

	efx_audit_scan(f, d.k, &s);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.key_new, 1);
	assert_int_equal(s.key_retrieve, 1);
	assert_int_equal(s.with_k, 0);

	efx_assert_id(s.new_rec.actor, s.new_rec.actor_len, PT(P_AS));
	efx_assert_id(s.new_rec.id_a, s.new_rec.id_a_len, PT(P_A));
	efx_assert_id(s.new_rec.id_b, s.new_rec.id_b_len, PT(P_B));
	assert_memory_equal(s.new_rec.key_id, d.key_id, KMS_KEY_ID_LEN);
	assert_int_equal(s.new_rec.k_gen, 1);
	assert_int_equal(s.new_rec.time_ms, t_dep);

	efx_assert_id(s.ret_rec.actor, s.ret_rec.actor_len, PT(P_B));
	efx_assert_id(s.ret_rec.id_a, s.ret_rec.id_a_len, PT(P_A));
	efx_assert_id(s.ret_rec.id_b, s.ret_rec.id_b_len, PT(P_B));
	assert_memory_equal(s.ret_rec.key_id, d.key_id, KMS_KEY_ID_LEN);
	assert_int_equal(s.ret_rec.time_ms, t_ret);

	/* Refused requests issue no key and leave no KEY_* record. */
	assert_int_equal(efx_run1(f, &r.req, &r.rep), KMS_ST_REPLAY);
	assert_int_equal(efx_counts(f).audit, 2);
}

static void audit_reuse(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_reuse_policy(5, 0);
	struct efx_audit_scan s;
	struct efx_dep d;

	efx_reconfigure(f, &pol, 1);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
				 KMS_ST_OK);
	efx_audit_scan(f, d.k, &s);
	assert_int_equal(s.key_reuse, 2);
	assert_int_equal(s.key_new, 1);
	assert_int_equal(s.with_k, 0);
	assert_int_equal(efx_counts(f).audit, 3);
}

/* ------------------------------------------- 13. batch semantics */

#define BATCH 32

static void mixed_batch(void **state)
{
	struct efx *f = *state;
	const struct efx_party *as = PT(P_AS);
	struct efx_dep *d = calloc(BATCH, sizeof(*d));
	struct efx_dgram *req = calloc(BATCH, sizeof(*req));
	struct efx_reply *rep = calloc(BATCH, sizeof(*rep));
	struct efx_ret *r = calloc(BATCH, sizeof(*r));
	uint16_t want[BATCH];
	unsigned nvalid = 0, bad = 0, replies = 0, n;
	struct kms_stats st;

	assert_true(d && req && rep && r);
	efx_party_set(f, PT(P_AS2), KMS_PARTY_REVOKED, 1);
	for (unsigned i = 0; i < BATCH; i++) {
		const struct efx_party *pa, *pb;

		efx_user_pair(f, nvalid, &pa, &pb);
		want[i] = KMS_ST_OK;
		if (i % 4 != 3) {
			efx_dep_build(f, &d[i], pa, pb, as);
			nvalid++;
			req[i] = d[i].req;
			continue;
		}
		/* Every fourth is bad, each in its own way. */
		want[i] = efx_dep_broken(f, &d[i], bad++, &d[1].req);
		req[i] = d[i].req;
	}
	assert_int_equal(want[31], KMS_ST_MALFORMED);
	replies = efx_run(f, 0, req, rep, BATCH);
	assert_int_equal(replies, BATCH - 1);
	for (unsigned i = 0; i < BATCH; i++) {
		assert_int_equal(rep[i].status, want[i]);
		d[i].rep = rep[i];
		efx_dep_finish(&d[i]);
	}
	assert_int_equal(efx_counts(f).deposits, nvalid);
	efx_stats(f, &st);
	assert_int_equal(st.batches, 1);
	assert_int_equal(st.commits, 1);
	assert_int_equal(st.committed_requests, nvalid);
	assert_int_equal(st.keys_new, nvalid);

	/* B of each valid deposit retrieves, all in one batch. */
	n = 0;
	for (unsigned i = 0; i < BATCH; i++) {
		if (want[i] != KMS_ST_OK)
			continue;
		for (unsigned j = 0; j < i; j++)
			if (want[j] == KMS_ST_OK)
				assert_memory_not_equal(d[i].k, d[j].k,
							KMS_KEY_LEN);
		efx_ret_build(f, &r[n], &d[i], d[i].b);
		req[n] = r[n].req;
		n++;
	}
	assert_int_equal(efx_run(f, 0, req, rep, n), n);
	n = 0;
	for (unsigned i = 0; i < BATCH; i++) {
		if (want[i] != KMS_ST_OK)
			continue;
		r[n].rep = rep[n];
		assert_int_equal(rep[n].status, KMS_ST_OK);
		efx_ret_finish(&r[n], &d[i], d[i].b);
		assert_memory_equal(r[n].k, d[i].k, KMS_KEY_LEN);
		n++;
	}
	free(d);
	free(req);
	free(rep);
	free(r);
}

/*
 * kms_worker_process takes any number of requests and cuts them into
 * batches of batch_max, one commit each; a later batch starts from what
 * the earlier ones committed.
 */
static void batch_chunks(struct efx *f, unsigned bmax)
{
	struct kms_policy pol = efx_policy();
	const unsigned n = 3 * bmax + 1;
	struct efx_dep *d = calloc(n, sizeof(*d));
	struct efx_dgram *req = calloc(n, sizeof(*req));
	struct efx_reply *rep = calloc(n, sizeof(*rep));
	struct kms_ks_counts c;
	struct kms_stats st;
	struct efx_ret r;

	assert_true(d && req && rep);
	f->batch_max = bmax;
	efx_reconfigure(f, &pol, 1);
	efx_dep_run_pairs(f, d, req, rep, n, PT(P_AS));
	for (unsigned i = 0; i < n; i++) {
		/* The pair's i / NPAIRS-th new K (no re-use). */
		assert_int_equal(d[i].k_gen, i / EFX_NPAIRS + 1);
		for (unsigned j = 0; j < i; j++)
			assert_memory_not_equal(d[i].key_id, d[j].key_id,
						KMS_KEY_ID_LEN);
	}
	efx_stats(f, &st);
	assert_int_equal(st.requests, n);
	assert_int_equal(st.batches, 4);
	assert_int_equal(st.commits, 4);
	assert_int_equal(st.committed_requests, n);
	assert_int_equal(st.keys_new, n);
	c = efx_counts(f);
	assert_int_equal(c.deposits, n);
	assert_int_equal(c.nonces, n);
	/* Around the cuts: the last of one batch, the first of the next. */
	for (unsigned s = 0; s <= 3; s++) {
		unsigned i = s ? s * bmax - 1 : 0;

		assert_int_equal(efx_retrieve(f, &r, &d[i], d[i].b), KMS_ST_OK);
		assert_memory_equal(r.k, d[i].k, KMS_KEY_LEN);
		assert_int_equal(efx_retrieve(f, &r, &d[i + 1], d[i + 1].b),
				 KMS_ST_OK);
		assert_memory_equal(r.k, d[i + 1].k, KMS_KEY_LEN);
	}
	free(d);
	free(req);
	free(rep);
}

static void batch_chunks_small(void **state)
{
	batch_chunks(*state, 5);
}

static void batch_chunks_max(void **state)
{
	batch_chunks(*state, 256);
}

/* ------------------------------------ worker ownership (2 workers) */

static void two_workers_ownership(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_policy();
	struct efx_dep d;
	struct efx_ret r;
	struct efx_reply rep;
	unsigned per[EFX_MAX_WORKERS] = { 0 }, sent[EFX_MAX_WORKERS] = { 0 };
	struct kms_stats st;
	uint8_t h[KMS_PAIR_HASH_LEN];

	efx_reconfigure(f, &pol, 2);
	for (unsigned n = 0; n < EFX_NPAIRS; n++) {
		const struct efx_party *a, *b;
		unsigned wi;

		efx_user_pair(f, n, &a, &b);
		efx_dep_build(f, &d, a, b, PT(P_AS));
		wi = kms_engine_worker_for(f->eng, f->hasher, d.req.b, d.req.len);
		kms_pair_hash(&a->id, &b->id, h);
		assert_int_equal(wi, kms_pair_worker(h, 2));
		assert_int_equal(wi, kms_engine_worker_for(f->eng, f->hasher, d.req.b,
							    d.req.len));
		per[wi]++;
		/* The owner admits it and sees the replay of it. */
		efx_run(f, wi, &d.req, &d.rep, 1);
		sent[wi]++;
		assert_int_equal(d.rep.status, KMS_ST_OK);
		efx_dep_finish(&d);
		assert_int_equal(efx_run1(f, &d.req, &rep), KMS_ST_REPLAY);
		sent[wi]++;
		/* The RETRIEVE of the same pair lands on the same worker. */
		efx_ret_build(f, &r, &d, b);
		assert_int_equal(kms_engine_worker_for(f->eng, f->hasher, r.req.b, r.req.len),
				 wi);
		efx_run(f, wi, &r.req, &r.rep, 1);
		sent[wi]++;
		assert_int_equal(r.rep.status, KMS_ST_OK);
		efx_ret_finish(&r, &d, b);
		assert_memory_equal(r.k, d.k, KMS_KEY_LEN);
		assert_int_equal(efx_run1(f, &r.req, &rep), KMS_ST_REPLAY);
		sent[wi]++;
	}
	/* Both workers own pairs; each counted exactly its own traffic. */
	assert_true(per[0] > 0 && per[1] > 0);
	for (unsigned i = 0; i < 2; i++) {
		kms_worker_stats(f->w[i], &st);
		assert_int_equal(st.requests, sent[i]);
		assert_int_equal(st.by_status[KMS_RK_DEPOSIT][KMS_ST_REPLAY],
				 per[i]);
	}
	/* A datagram without findable IDs goes to worker 0. */
	assert_int_equal(kms_engine_worker_for(f->eng, f->hasher, d.req.b, 5), 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, efx_cm_setup, efx_cm_teardown)
	const struct CMUnitTest tests[] = {
		T(happy_path),
		T(premade_keys),
		T(engine_config_refused),
		T(mailbox_never_holds_k),
		T(nothing_in_clear_at_rest),
		T(deposit_refused),
		T(deposit_old_generation),
		T(deposit_recipient_checked),
		T(retrieve_refused_identity),
		T(retrieve_refused_state),
		T(retrieve_max_retrievals),
		T(retrieve_full_batch),
		T(retrieve_pair_policy),
		T(retrieve_after_rotation),
		T(party_cache_follows_store),
		T(retrieve_pair_revoked),
		T(replay_single_datagrams),
		T(replay_ea_retry),
		T(replay_window_full),
		T(replay_within_batch),
		T(replay_after_restart),
		T(replay_nonces_purged),
		T(replay_after_restart_two_workers),
		T(replay_reload_from_store),
		T(timestamps),
		T(responses_bound_to_request),
		T(reuse_max_deposits),
		T(reuse_never),
		T(reuse_max_age),
		T(reuse_within_batch),
		T(durable_before_answer),
		T(deferred_answer_then_idle),
		T(deferred_flush_by_age),
		T(deferred_idle_poll_waits_for_quiet),
		T(deferred_flush_by_size_and_deposit),
		T(deferred_flushed_at_stop),
		cmocka_unit_test_setup_teardown(deferred_flush_failure,
						efx_cm_setup_tiny, efx_cm_teardown),
		T(deferred_thread_commits),
		cmocka_unit_test_setup_teardown(deferred_thread_failure,
						efx_cm_setup_tiny, efx_cm_teardown),
		cmocka_unit_test_setup_teardown(store_full, efx_cm_setup_tiny,
						efx_cm_teardown),
		T(malformed),
		T(reply_buffer_too_small),
		T(audit_trail),
		T(audit_reuse),
		T(mixed_batch),
		T(batch_chunks_small),
		T(batch_chunks_max),
		T(two_workers_ownership),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
