// SPDX-License-Identifier: Apache-2.0
/*
 * fuzz_engine: one datagram per input through kms_worker_process, the
 * whole transaction path of kmsd, on a real SoftHSM2 token (made by
 * tests/common/kms_testenv.c) and a real LMDB store, set up once.
 *
 * The parties are enrolled the way `kmsctl enroll --key` imports a key
 * (kms_hsm_wrap + kms_ks_party_put), with fixed keys derived from their
 * names: the checked-in seeds (made by this file's generator mode) carry
 * tokens that really open, so the fuzzer starts from accepted DEPOSIT,
 * RETRIEVE and IBE_KEY_REQ datagrams. The engine's clock is fixed
 * (FZ_NOW), so the seeds never go stale. These keys are test data of this
 * harness only; nothing here prints them.
 *
 * The store holds, besides the parties: a KGC (kmsctl ibe init), and one
 * deposit of (alice, bob) made at start-up whose key id the harness puts
 * into any RETRIEVE_REQ that carries an all-zero key id (the key id is
 * the server's choice, unknown to a seed); the seeds' RETRIEVEs use that
 * deposit's Ea token.
 *
 * Checks on every reply: it fits the buffer and parses; its status is the
 * one kms_msg reports; it echoes the txid; replies never answer replies;
 * no reply but IBE_KEY_RESP is more than 2 bytes longer than its request
 * (docs/PROTOCOL.md section 2).
 *
 * Generator: KMS_FUZZ_GEN=DIR fuzz_engine writes the seeds into DIR and
 * exits (no HSM needed).
 * Environment: KMS_FUZZ_CRYPTO_MODE (offload, default, or hsm);
 * KMS_FUZZ_VERBOSE=1 prints each input's status (to see what seeds do).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "fuzz_common.h"
#include "kms_engine.h"
#include "kms_err.h"
#include "kms_hsm.h"
#include "kms_ibe.h"
#include "kms_kgc.h"
#include "kms_ks.h"
#include "kms_proto.h"
#include "kms_testenv.h"
#include "kms_token.h"

#define FZ_NOW 1900000000000ull      /* 2030-03-17T17:46:40Z */
#define FZ_PERIOD "2030-03"
#define FZ_SKEW_MS 30000u
#define FZ_DAY_MS 86400000ull

enum {
	P_ALICE, P_BOB, P_CAROL,
	P_DAVE,     /* rotated: gen 2, gen 1 still accepted (overlap) */
	P_RITA,     /* revoked user */
	P_MB,       /* mailbox AS */
	P_MB2,      /* revoked mailbox AS */
	P__N
};

static const struct {
	const char *name;
	uint8_t kind, status;
	uint32_t gen;
} parties[P__N] = {
	[P_ALICE] = { "sip:alice@example.org", KMS_PARTY_USER, KMS_PARTY_ACTIVE, 1 },
	[P_BOB] = { "sip:bob@example.org", KMS_PARTY_USER, KMS_PARTY_ACTIVE, 1 },
	[P_CAROL] = { "sip:carol@example.net", KMS_PARTY_USER, KMS_PARTY_ACTIVE, 1 },
	[P_DAVE] = { "sip:dave@example.org", KMS_PARTY_USER, KMS_PARTY_ACTIVE, 2 },
	[P_RITA] = { "sip:rita@example.org", KMS_PARTY_USER, KMS_PARTY_REVOKED, 1 },
	[P_MB] = { "mailbox.example.org", KMS_PARTY_AS, KMS_PARTY_ACTIVE, 1 },
	[P_MB2] = { "mailbox2.example.org", KMS_PARTY_AS, KMS_PARTY_REVOKED, 1 },
};

static struct {
	struct kms_testenv env;
	char store_dir[256];
	struct kms_hsm *hsm;
	struct kms_ks *ks;
	struct kms_kgc *kgc;
	struct kms_engine *eng;
	struct kms_worker *w;
	uint64_t now;
	uint8_t setup_key_id[KMS_KEY_ID_LEN];
	int verbose;
} fz;

/* ------------------------------------------------------------ test data */

static struct kms_id pid(unsigned p)
{
	struct kms_id id;

	if (kms_id_from_str(parties[p].name, &id))
		fuzz_fail("bad party name");
	return id;
}

/* The fixed key of party @p p, generation @p gen. */
static void pkey(unsigned p, uint32_t gen, uint8_t key[KMS_KEY_LEN])
{
	char s[200];
	int n = snprintf(s, sizeof(s), "kms-fuzz-party-key|%s|%u",
			 parties[p].name, gen);

	SHA256((const uint8_t *)s, (size_t)n, key);
}

static void nonce_of(const char *label, uint8_t nonce[KMS_NONCE_LEN])
{
	uint8_t h[32];

	SHA256((const uint8_t *)label, strlen(label), h);
	memcpy(nonce, h, KMS_NONCE_LEN);
}

struct tok {
	uint8_t b[KMS_TOKEN_MAX];
	size_t len;
};

/* A token of @p role sealed by party @p sealer (gen @p gen) over (a, b). */
static void tok(struct tok *t, uint8_t role, unsigned sealer, uint32_t gen,
		uint64_t ts, const char *nonce_label, const struct kms_id *a,
		const struct kms_id *b)
{
	struct kms_id sid = pid(sealer);
	uint8_t key[KMS_KEY_LEN], nonce[KMS_NONCE_LEN];
	int n;

	pkey(sealer, gen, key);
	nonce_of(nonce_label, nonce);
	n = kms_token_seal(role, &sid, gen, key, ts, nonce, a, b, t->b,
			   sizeof(t->b));
	if (n <= 0)
		fuzz_fail("kms_token_seal");
	t->len = (size_t)n;
}

struct dgram {
	uint8_t b[KMS_DGRAM_MAX + 64];
	size_t len;
};

/* DEPOSIT_REQ of (a, b) via as; Ea by a, Eas by as, both of their
 * current generation unless @p a_gen says otherwise. */
static void deposit(struct dgram *d, uint32_t txid, unsigned a, unsigned b,
		    unsigned as, uint32_t a_gen, uint64_t ts, const char *label)
{
	struct kms_id ia = pid(a), ib = pid(b), ias = pid(as);
	struct tok ea, eas;
	char l[128];
	int n;

	snprintf(l, sizeof(l), "%s|ea", label);
	tok(&ea, KMS_ROLE_A, a, a_gen ? a_gen : parties[a].gen, ts, l, &ia, &ib);
	snprintf(l, sizeof(l), "%s|eas", label);
	tok(&eas, KMS_ROLE_AS, as, parties[as].gen, ts, l, &ia, &ib);
	n = kms_deposit_req_encode(txid, &ia, &ib, &ias, ea.b, ea.len, eas.b,
				   eas.len, d->b, sizeof(d->b));
	if (n <= 0)
		fuzz_fail("kms_deposit_req_encode");
	d->len = (size_t)n;
}

/* RETRIEVE_REQ of the start-up deposit (alice, bob), key id all zero
 * (replaced by the harness), Eb by @p by. */
static void retrieve(struct dgram *d, uint32_t txid, unsigned by, uint64_t ts,
		     const char *label)
{
	struct kms_id ia = pid(P_ALICE), ib = pid(P_BOB);
	static const uint8_t zero[KMS_KEY_ID_LEN];
	struct tok ea, eb;
	int n;

	tok(&ea, KMS_ROLE_A, P_ALICE, 1, FZ_NOW, "setup|ea", &ia, &ib);
	tok(&eb, KMS_ROLE_B, by, parties[by].gen, ts, label, &ia, &ib);
	n = kms_retrieve_req_encode(txid, &ia, &ib, zero, ea.b, ea.len, eb.b,
				    eb.len, d->b, sizeof(d->b));
	if (n <= 0)
		fuzz_fail("kms_retrieve_req_encode");
	d->len = (size_t)n;
}

static void ibe_req(struct dgram *d, uint32_t txid, unsigned x,
		    const char *period, const char *label)
{
	struct kms_id ix = pid(x), per = { (const uint8_t *)period,
					   (uint8_t)strlen(period) };
	struct tok t;
	int n;

	tok(&t, KMS_ROLE_IBE, x, parties[x].gen, FZ_NOW, label, &ix, &per);
	n = kms_ibe_req_encode(txid, &ix, &per, t.b, t.len, d->b, sizeof(d->b));
	if (n <= 0)
		fuzz_fail("kms_ibe_req_encode");
	d->len = (size_t)n;
}

/* ------------------------------------------------------------ generator */

static void generate(const char *dir)
{
	struct dgram d;

	deposit(&d, 0x1001, P_ALICE, P_CAROL, P_MB, 0, FZ_NOW, "seed-dep-ac");
	fuzz_seed_write(dir, "deposit_ok", d.b, d.len);
	deposit(&d, 0x1002, P_ALICE, P_BOB, P_MB, 0, FZ_NOW + 1000, "seed-dep-ab");
	fuzz_seed_write(dir, "deposit_reuse", d.b, d.len);
	deposit(&d, 0x1003, P_DAVE, P_BOB, P_MB, 1, FZ_NOW, "seed-dep-dave1");
	fuzz_seed_write(dir, "deposit_prev_gen", d.b, d.len);
	deposit(&d, 0x1004, P_DAVE, P_ALICE, P_MB, 2, FZ_NOW, "seed-dep-dave2");
	fuzz_seed_write(dir, "deposit_rotated", d.b, d.len);
	deposit(&d, 0x1005, P_RITA, P_BOB, P_MB, 0, FZ_NOW, "seed-dep-rita");
	fuzz_seed_write(dir, "deposit_revoked_a", d.b, d.len);
	deposit(&d, 0x1006, P_ALICE, P_BOB, P_MB2, 0, FZ_NOW, "seed-dep-mb2");
	fuzz_seed_write(dir, "deposit_revoked_as", d.b, d.len);
	deposit(&d, 0x1007, P_ALICE, P_MB, P_MB, 0, FZ_NOW, "seed-dep-b-is-as");
	fuzz_seed_write(dir, "deposit_wrong_kind", d.b, d.len);
	deposit(&d, 0x1008, P_ALICE, P_BOB, P_MB, 0, FZ_NOW - 2 * FZ_SKEW_MS,
		"seed-dep-stale");
	fuzz_seed_write(dir, "deposit_stale", d.b, d.len);
	deposit(&d, 0x1009, P_BOB, P_ALICE, P_MB, 0, FZ_NOW, "seed-dep-ba");
	d.b[2] = 2;
	fuzz_seed_write(dir, "deposit_bad_version", d.b, d.len);
	d.b[2] = 1;
	d.b[3] = KMS_T_DEPOSIT_RESP;
	fuzz_seed_write(dir, "deposit_reply_type", d.b, d.len);

	retrieve(&d, 0x2001, P_BOB, FZ_NOW, "seed-ret-bob");
	fuzz_seed_write(dir, "retrieve_ok", d.b, d.len);
	retrieve(&d, 0x2002, P_CAROL, FZ_NOW, "seed-ret-carol");
	fuzz_seed_write(dir, "retrieve_eb_wrong_party", d.b, d.len);
	retrieve(&d, 0x2003, P_BOB, FZ_NOW + 2 * FZ_SKEW_MS, "seed-ret-late");
	fuzz_seed_write(dir, "retrieve_stale", d.b, d.len);
	retrieve(&d, 0x2004, P_BOB, FZ_NOW, "seed-ret-unknown");
	memset(d.b + 14 + d.b[12] + d.b[13 + d.b[12]], 0x5a, KMS_KEY_ID_LEN);
	fuzz_seed_write(dir, "retrieve_unknown_key_id", d.b, d.len);

	ibe_req(&d, 0x3001, P_ALICE, FZ_PERIOD, "seed-ibe-alice");
	fuzz_seed_write(dir, "ibe_key_req_ok", d.b, d.len);
	ibe_req(&d, 0x3002, P_MB, "2030-04", "seed-ibe-mb-next");
	fuzz_seed_write(dir, "ibe_key_req_next_month", d.b, d.len);
	ibe_req(&d, 0x3003, P_BOB, "2031-01", "seed-ibe-bob-far");
	fuzz_seed_write(dir, "ibe_key_req_bad_period", d.b, d.len);
	ibe_req(&d, 0x3004, P_RITA, FZ_PERIOD, "seed-ibe-rita");
	fuzz_seed_write(dir, "ibe_key_req_revoked", d.b, d.len);
}

/* ------------------------------------------------------------ the engine */

static uint64_t fz_clock(void *arg)
{
	return *(const uint64_t *)arg;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "fuzz_engine: %s: %s\n", what, kms_strerror(rc));
	exit(1);
}

static void enrol(struct kms_hsm_session *s)
{
	struct kms_ks_txn *txn = NULL;
	int rc = kms_ks_txn_begin(fz.ks, 0, &txn);

	if (rc)
		die("txn", rc);
	for (unsigned i = 0; i < P__N; i++) {
		struct kms_id id = pid(i);
		struct kms_party rec;
		uint8_t key[KMS_KEY_LEN];

		memset(&rec, 0, sizeof(rec));
		rec.kind = parties[i].kind;
		rec.status = parties[i].status;
		rec.gen = parties[i].gen;
		rec.created_ms = FZ_NOW - FZ_DAY_MS;
		pkey(i, rec.gen, key);
		rc = kms_hsm_wrap(s, key, rec.blob);
		if (!rc && rec.gen > 1) {
			rec.prev_gen = rec.gen - 1;
			rec.prev_until_ms = FZ_NOW + FZ_DAY_MS;
			pkey(i, rec.prev_gen, key);
			rc = kms_hsm_wrap(s, key, rec.prev_blob);
		}
		explicit_bzero(key, sizeof(key));
		if (!rc)
			rc = kms_ks_party_put(txn, &id, &rec);
		if (rc)
			die("enrol", rc);
	}
	rc = kms_ks_txn_commit(txn);
	if (rc)
		die("enrol commit", rc);
}

static void teardown(void)
{
	kms_worker_destroy(fz.w);
	kms_engine_destroy(fz.eng);
	kms_kgc_free(fz.kgc);
	kms_ks_close(fz.ks);
	kms_hsm_close(fz.hsm);
	kms_testenv_teardown(&fz.env);
	fuzz_rmrf(fz.store_dir);
}

/* One datagram through the worker; @return the reply's length. */
static uint16_t run1(const uint8_t *req, size_t len, uint8_t *resp,
		     uint16_t *status)
{
	struct kms_msg m = { .req = req, .req_len = (uint16_t)len, .resp = resp,
			     .resp_cap = KMS_REPLY_MAX, .resp_len = 0xffff,
			     .status = 0xffff };
	unsigned n = kms_worker_process(fz.w, &m, 1);

	FUZZ_CHECK(n == (m.resp_len ? 1u : 0u));
	FUZZ_CHECK(m.resp_len <= KMS_REPLY_MAX);
	*status = m.status;
	return m.resp_len;
}

static void setup(void)
{
	struct kms_engine_config cfg;
	struct kms_ks_config kc = { 0 };
	struct kms_hsm_session *s = NULL;
	struct kms_ibe_params params;
	struct kms_resp r;
	struct dgram d;
	uint8_t resp[KMS_REPLY_MAX];
	uint16_t len, status;
	int rc;

	if (kms_testenv_setup(&fz.env))
		exit(1);
	fuzz_tmpdir("engine", fz.store_dir, sizeof(fz.store_dir));
	snprintf(fz.env.store, sizeof(fz.env.store), "%s/store", fz.store_dir);
	if ((rc = kms_hsm_open(&fz.env.hsm, &fz.hsm)) ||
	    (rc = kms_hsm_kek_create(fz.hsm)))
		die("hsm", rc);
	kc.path = fz.env.store;
	kc.map_size = 256u << 20;
	kc.create = 1;
	if ((rc = kms_ks_open(&kc, &fz.ks)))
		die("store", rc);
	if ((rc = kms_hsm_session_open(fz.hsm, &s)))
		die("hsm session", rc);
	enrol(s);
	if ((rc = kms_kgc_init(fz.ks, s, "fuzz", &params)) ||
	    (rc = kms_kgc_load(fz.ks, s, &fz.kgc)))
		die("kgc", rc);
	kms_hsm_session_close(s);

	fz.now = FZ_NOW;
	memset(&cfg, 0, sizeof(cfg));
	cfg.crypto_mode = getenv("KMS_FUZZ_CRYPTO_MODE") ?
			  getenv("KMS_FUZZ_CRYPTO_MODE") : "offload";
	cfg.policy.reuse_max_deposits = 2;
	cfg.policy.reuse_max_age_s = 3600;
	cfg.policy.deposit_lifetime_s = 86400;
	cfg.policy.max_retrievals = 2;
	cfg.kgc = fz.kgc;
	cfg.max_skew_ms = FZ_SKEW_MS;
	cfg.replay_capacity = 1u << 16;
	cfg.batch_max = 8;
	cfg.cache_keys = KMS_ENGINE_CACHE_MIN(8);
	cfg.nworkers = 1;
	cfg.now_ms = fz_clock;
	cfg.now_arg = &fz.now;
	if ((rc = kms_engine_create(&cfg, fz.hsm, fz.ks, &fz.eng)) ||
	    (rc = kms_worker_create(fz.eng, 0, &fz.w)))
		die("engine", rc);

	/* The deposit every seed RETRIEVE refers to. */
	deposit(&d, 0x5e7, P_ALICE, P_BOB, P_MB, 0, FZ_NOW, "setup");
	len = run1(d.b, d.len, resp, &status);
	if (!len || status != KMS_ST_OK || kms_resp_parse(resp, len, &r) ||
	    r.hdr.type != KMS_T_DEPOSIT_RESP) {
		fprintf(stderr, "fuzz_engine: the start-up deposit was refused "
			"(status %u)\n", status);
		exit(1);
	}
	memcpy(fz.setup_key_id, r.key_id, KMS_KEY_ID_LEN);
	/* Last: SoftHSM2's own exit handlers (registered while it loaded)
	 * must run after ours. */
	atexit(teardown);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_log_init("fuzz_engine");
	fz.verbose = getenv("KMS_FUZZ_VERBOSE") != NULL;
	if (fuzz_gen_dir()) {
		generate(fuzz_gen_dir());
		exit(0);
	}
	setup();
	return 0;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t zero[KMS_KEY_ID_LEN];
	uint8_t *req, *resp;
	struct kms_id a, b;
	struct kms_resp r;
	uint16_t len, status;

	if (size > UINT16_MAX)
		return -1;      /* no I/O mode hands the engine more */
	req = malloc(size ? size : 1);
	resp = malloc(KMS_REPLY_MAX);
	FUZZ_CHECK(req && resp);
	memcpy(req, data, size);
	/* A RETRIEVE with an all-zero key id asks for the start-up deposit. */
	if (size > KMS_HDR_LEN && req[3] == KMS_T_RETRIEVE_REQ &&
	    kms_req_peek_pair(req, size, &a, &b) == KMS_OK) {
		size_t off = (size_t)(b.p + b.len - req);

		if (off + KMS_KEY_ID_LEN <= size &&
		    !memcmp(req + off, zero, KMS_KEY_ID_LEN))
			memcpy(req + off, fz.setup_key_id, KMS_KEY_ID_LEN);
	}
	len = run1(req, size, resp, &status);
	if (fz.verbose)
		fprintf(stderr, "fuzz_engine: %zu bytes: %s, reply %u bytes\n",
			size, status < KMS_ST__COUNT ? kms_status_name(status)
						     : "?", len);
	if (len) {
		FUZZ_CHECK(kms_resp_parse(resp, len, &r) == KMS_OK);
		FUZZ_CHECK(r.status == status);
		FUZZ_CHECK(size >= KMS_HDR_LEN && r.hdr.txid == be32(req + 4));
		/* Replies are never answered. */
		FUZZ_CHECK(req[3] != KMS_T_DEPOSIT_RESP &&
			   req[3] != KMS_T_RETRIEVE_RESP && req[3] != KMS_T_ERROR);
		/* No amplification but the authenticated IBE_KEY_RESP. */
		if (r.hdr.type != KMS_T_IBE_KEY_RESP)
			FUZZ_CHECK(len <= size + 2);
		if (r.hdr.type == KMS_T_DEPOSIT_RESP)
			FUZZ_CHECK(req[3] == KMS_T_DEPOSIT_REQ);
		if (r.hdr.type == KMS_T_RETRIEVE_RESP)
			FUZZ_CHECK(req[3] == KMS_T_RETRIEVE_REQ);
		if (r.hdr.type == KMS_T_IBE_KEY_RESP)
			FUZZ_CHECK(req[3] == KMS_T_IBE_KEY_REQ);
	}
	free(req);
	free(resp);
	return 0;
}
