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

#include <cmocka.h>
#include <openssl/rand.h>

#include "engine_fixture.h"
#include "kms_token.h"

/* The party with index @p i of the fixture in scope. */
#define PT(i) (&f->p[(i)])
/* A map that holds the store, the parties and a few dozen deposits.
 * Measured: init and the enrolment of eight parties fit in 32 KiB, 64 KiB
 * takes one deposit, 96 KiB about 35 (4 KiB pages, copy-on-write). */
#define TINY_MAP (96 * 1024)

/* ---------------------------------------------------------------- setup */

static int setup_map(void **state, size_t map)
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

static int setup(void **state)
{
	return setup_map(state, 0);
}

static int setup_tiny(void **state)
{
	return setup_map(state, TINY_MAP);
}

static int teardown(void **state)
{
	struct efx *f = *state;

	efx_teardown(f);
	free(f);
	return 0;
}

/* ------------------------------------------------- 1. happy path (P1) */

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
	struct kms_engine *e = NULL;

	cfg.crypto_mode = "no-such-mode";
	assert_int_equal(kms_engine_create(&cfg, f->hsm, f->ks, &e),
			 KMS_ERR_CONFIG);
	assert_null(e);
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

/* ----------------------------------------- 4. RETRIEVE refused (P3) */

static void retrieve_refused_identity(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *c = PT(P_C);
	struct efx_dep d;
	struct efx_ret r;
	struct efx_tok eb;
	uint8_t kid[KMS_KEY_ID_LEN];
	uint16_t st;

	assert_int_equal(efx_deposit(f, &d, a, b, PT(P_AS)), KMS_ST_OK);

	/* Carol asks with her own ID and key. */
	efx_tok(&eb, KMS_ROLE_B, &c->id, c->key, 1, f->now, &a->id, &c->id);
	st = efx_ret_with(f, &a->id, &c->id, d.key_id, &d.ea, &eb);
	assert_true(st == KMS_ST_ID_MISMATCH || st == KMS_ST_HANDLE_MISMATCH);
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

/* ---------------------------------------------- 10. store full */

#define FULL_MAX 2000

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
	while (ok < FULL_MAX) {
		efx_user_pair(f, ok % EFX_NPAIRS, &a, &b);
		st = efx_deposit(f, &d[ok], a, b, PT(P_AS));
		if (st != KMS_ST_OK)
			break;
		ok++;
	}
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
	efx_restart(f, 4 * TINY_MAP);
	for (unsigned i = 0; i < ok; i++) {
		assert_int_equal(efx_retrieve(f, &r, &d[i], d[i].b), KMS_ST_OK);
		assert_memory_equal(r.k, d[i].k, KMS_KEY_LEN);
	}
	free(d);
}

/* --------------------------------------- 11. malformed datagrams */

/* Run @p d; it must be dropped (and counted) or refused with an ERROR. */
static void expect_refused(struct efx *f, const struct efx_dgram *d,
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
		expect_refused(f, &m, &sent, &drops);
		if (len < KMS_HDR_LEN)
			continue;
		efx_fix_body_len(&m);	/* a consistent header, a short body */
		expect_refused(f, &m, &sent, &drops);
	}
	for (uint16_t junk = 1; junk <= 32; junk++) {
		m = d.req;
		memset(m.b + m.len, 0xa5, junk);
		m.len += junk;
		expect_refused(f, &m, &sent, &drops);
		efx_fix_body_len(&m);
		expect_refused(f, &m, &sent, &drops);
	}
	/* Header fields: magic and reply types (drops), version, type. */
	m = d.req;
	m.b[0] = 'X';
	expect_refused(f, &m, &sent, &drops);
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
	m.b[3] = 0x05;
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

struct audit_scan {
	const uint8_t *k;
	unsigned n, key_new, key_retrieve, with_k;
	struct kms_audit new_rec, ret_rec;
};

static int audit_cb(const struct kms_audit *a, void *arg)
{
	struct audit_scan *s = arg;

	s->n++;
	s->with_k += efx_contains(a, sizeof(*a), s->k, KMS_KEY_LEN);
	if (a->event == KMS_AUD_KEY_NEW) {
		s->key_new++;
		s->new_rec = *a;
	} else if (a->event == KMS_AUD_KEY_RETRIEVE) {
		s->key_retrieve++;
		s->ret_rec = *a;
	}
	return 0;
}

static void assert_id(const char *got, uint8_t len, const struct efx_party *p)
{
	assert_int_equal(len, p->id.len);
	assert_memory_equal(got, p->name, len);
}

static void audit_trail(void **state)
{
	struct efx *f = *state;
	struct audit_scan s;
	struct kms_ks_txn *txn = NULL;
	struct efx_dep d;
	struct efx_ret r;
	uint64_t t_dep = f->now, t_ret = f->now + 7000;

	assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
			 KMS_ST_OK);
	f->now = t_ret;
	assert_int_equal(efx_retrieve(f, &r, &d, PT(P_B)), KMS_ST_OK);

	memset(&s, 0, sizeof(s));
	s.k = d.k;
	assert_int_equal(kms_ks_txn_begin(f->ks, 1, &txn), KMS_OK);
	assert_int_equal(kms_ks_audit_foreach(txn, audit_cb, &s), KMS_OK);
	kms_ks_txn_abort(txn);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.key_new, 1);
	assert_int_equal(s.key_retrieve, 1);
	assert_int_equal(s.with_k, 0);

	assert_id(s.new_rec.actor, s.new_rec.actor_len, PT(P_AS));
	assert_id(s.new_rec.id_a, s.new_rec.id_a_len, PT(P_A));
	assert_id(s.new_rec.id_b, s.new_rec.id_b_len, PT(P_B));
	assert_memory_equal(s.new_rec.key_id, d.key_id, KMS_KEY_ID_LEN);
	assert_int_equal(s.new_rec.k_gen, 1);
	assert_int_equal(s.new_rec.time_ms, t_dep);

	assert_id(s.ret_rec.actor, s.ret_rec.actor_len, PT(P_B));
	assert_id(s.ret_rec.id_a, s.ret_rec.id_a_len, PT(P_A));
	assert_id(s.ret_rec.id_b, s.ret_rec.id_b_len, PT(P_B));
	assert_memory_equal(s.ret_rec.key_id, d.key_id, KMS_KEY_ID_LEN);
	assert_int_equal(s.ret_rec.time_ms, t_ret);

	/* Refused requests issue no key and leave no KEY_* record. */
	assert_int_equal(efx_run1(f, &r.req, &r.rep), KMS_ST_REPLAY);
	assert_int_equal(efx_counts(f).audit, 2);
}

static int count_reuse(const struct kms_audit *a, void *arg)
{
	*(unsigned *)arg += a->event == KMS_AUD_KEY_REUSE;
	return 0;
}

static void audit_reuse(void **state)
{
	struct efx *f = *state;
	struct kms_policy pol = efx_reuse_policy(5, 0);
	struct kms_ks_txn *txn = NULL;
	struct efx_dep d;
	unsigned reuse = 0;

	efx_reconfigure(f, &pol, 1);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(efx_deposit(f, &d, PT(P_A), PT(P_B), PT(P_AS)),
				 KMS_ST_OK);
	assert_int_equal(kms_ks_txn_begin(f->ks, 1, &txn), KMS_OK);
	assert_int_equal(kms_ks_audit_foreach(txn, count_reuse, &reuse), KMS_OK);
	kms_ks_txn_abort(txn);
	assert_int_equal(reuse, 2);
	assert_int_equal(efx_counts(f).audit, 3);
}

/* ------------------------------------------- 13. batch semantics */

#define BATCH 32

static void mixed_batch(void **state)
{
	struct efx *f = *state;
	const struct efx_party *a = PT(P_A), *b = PT(P_B), *as = PT(P_AS);
	struct efx_dep *d = calloc(BATCH, sizeof(*d));
	struct efx_dgram *req = calloc(BATCH, sizeof(*req));
	struct efx_reply *rep = calloc(BATCH, sizeof(*rep));
	struct efx_ret *r = calloc(BATCH, sizeof(*r));
	uint16_t want[BATCH];
	struct efx_tok t;
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
		/* Every fourth is bad: an honest A->B deposit, then broken. */
		efx_dep_build(f, &d[i], a, b, as);
		switch (bad++) {
		case 0: /* Eas under Kb */
			efx_tok(&t, KMS_ROLE_AS, &as->id, b->key, 1, f->now,
				&a->id, &b->id);
			efx_deposit_req(f, &d[i].req, &a->id, &b->id, &as->id,
					&d[i].ea, &t);
			want[i] = KMS_ST_AUTH_FAILED;
			break;
		case 1: /* a copy of an earlier valid one */
			d[i].req = d[1].req;
			want[i] = KMS_ST_REPLAY;
			break;
		case 2:
			efx_dep_build(f, &d[i], a, b, PT(P_AS2));
			want[i] = KMS_ST_PARTY_REVOKED;
			break;
		case 3: /* plain ID-B is not the one in the tokens */
			efx_deposit_req(f, &d[i].req, &a->id, &PT(P_C)->id,
					&as->id, &d[i].ea, &d[i].eas);
			want[i] = KMS_ST_ID_MISMATCH;
			break;
		case 4:
			efx_tok(&t, KMS_ROLE_A, &a->id, a->key, 1,
				f->now - 2 * EFX_SKEW, &a->id, &b->id);
			efx_deposit_req(f, &d[i].req, &a->id, &b->id, &as->id,
					&t, &d[i].eas);
			want[i] = KMS_ST_STALE;
			break;
		case 5: /* the header says more: dropped */
			d[i].req.len -= 5;
			want[i] = KMS_ST__COUNT;
			break;
		case 6:
			d[i].req.b[2] = 7;
			want[i] = KMS_ST_BAD_VERSION;
			break;
		default:
			d[i].req.len -= 5;
			efx_fix_body_len(&d[i].req);
			want[i] = KMS_ST_MALFORMED;
			break;
		}
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
		wi = kms_engine_worker_for(f->eng, d.req.b, d.req.len);
		kms_pair_hash(&a->id, &b->id, h);
		assert_int_equal(wi, kms_pair_worker(h, 2));
		assert_int_equal(wi, kms_engine_worker_for(f->eng, d.req.b,
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
		assert_int_equal(kms_engine_worker_for(f->eng, r.req.b, r.req.len),
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
	assert_int_equal(kms_engine_worker_for(f->eng, d.req.b, 5), 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(happy_path),
		T(engine_config_refused),
		T(mailbox_never_holds_k),
		T(nothing_in_clear_at_rest),
		T(deposit_refused),
		T(deposit_old_generation),
		T(retrieve_refused_identity),
		T(retrieve_refused_state),
		T(retrieve_max_retrievals),
		T(replay_single_datagrams),
		T(replay_ea_retry),
		T(replay_within_batch),
		T(timestamps),
		T(responses_bound_to_request),
		T(reuse_max_deposits),
		T(reuse_never),
		T(reuse_max_age),
		T(reuse_within_batch),
		T(durable_before_answer),
		cmocka_unit_test_setup_teardown(store_full, setup_tiny, teardown),
		T(malformed),
		T(reply_buffer_too_small),
		T(audit_trail),
		T(audit_reuse),
		T(mixed_batch),
		T(two_workers_ownership),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
