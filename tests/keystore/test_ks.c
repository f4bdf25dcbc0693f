// SPDX-License-Identifier: Apache-2.0
/*
 * Keystore tests on a real LMDB environment in a fresh temp directory.
 * Raw lmdb calls appear here only to plant bad bytes the API refuses to
 * write.
 */
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "kms_err.h"
#include "kms_ks.h"
#include "ks_priv.h"

#define TINY_MAP (256 * 1024)

struct fx {
	char dir[64];
	char store[96];
};

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kms-ks-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->store, sizeof(f->store), "%s/store", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static struct kms_ks *open_ks(const struct fx *f, size_t map, int create)
{
	struct kms_ks_config cfg = { .path = f->store, .map_size = map,
				     .create = create };
	struct kms_ks *ks = NULL;

	assert_int_equal(kms_ks_open(&cfg, &ks), KMS_OK);
	assert_non_null(ks);
	return ks;
}

/* Write raw bytes into a named database, bypassing the codec. */
static void raw_put(const struct fx *f, const char *db, const void *key,
		    size_t klen, const void *val, size_t vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
	MDB_val v = { .mv_size = vlen, .mv_data = (void *)val };

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, f->store, MDB_NOTLS, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Raw access to one audit record, as an attacker with the files would. */
static int raw_audit(const struct fx *f, uint64_t seq, uint8_t *val,
		     size_t *vlen, int del)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	uint8_t kb[KS_AUDIT_KEY_LEN];
	MDB_val k = { .mv_size = sizeof(kb), .mv_data = kb }, v;
	int rc;

	put_be64(kb, seq);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, f->store, MDB_NOTLS, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "audit", 0, &dbi), 0);
	rc = mdb_get(txn, dbi, &k, &v);
	if (rc == 0 && val) {
		memcpy(val, v.mv_data, v.mv_size);
		*vlen = v.mv_size;
	}
	if (rc == 0 && del)
		assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	return rc;
}

/* ---- record builders: max-length IDs, every byte position distinct ---- */

static void fill_id(char *dst, uint8_t *len, char c, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		dst[i] = (char)(0x21 + (c + i) % 94);
	*len = (uint8_t)n;
}

static void fill_bytes(uint8_t *p, size_t n, uint8_t seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

static struct kms_id mk_id(char *buf, char c, size_t n)
{
	struct kms_id id;

	fill_id(buf, &id.len, c, n);
	id.p = (const uint8_t *)buf;
	return id;
}

static void mk_party(struct kms_party *p, uint32_t gen)
{
	memset(p, 0, sizeof(*p));
	p->kind = KMS_PARTY_AS;
	p->status = KMS_PARTY_REVOKED;
	p->gen = gen;
	p->created_ms = 0x0102030405060708ULL;
	fill_bytes(p->blob, sizeof(p->blob), (uint8_t)gen);
}

static void mk_pair(struct kms_pair *p)
{
	memset(p, 0, sizeof(*p));
	p->k_gen = 0xfffffffeU;
	p->uses = 77;
	p->created_ms = UINT64_MAX - 1;
	fill_bytes(p->blob, sizeof(p->blob), 3);
}

static void mk_deposit(struct kms_deposit *d, uint32_t n)
{
	memset(d, 0, sizeof(*d));
	d->status = KMS_DEP_ACTIVE;
	d->k_gen = n;
	d->retrievals = 0x80000001U;
	d->created_ms = 1700000000000ULL + n;
	d->expiry_ms = 1700086400000ULL + n;
	fill_bytes(d->pair_hash, sizeof(d->pair_hash), 11);
	fill_bytes(d->ea_digest, sizeof(d->ea_digest), 13);
	fill_bytes(d->blob, sizeof(d->blob), (uint8_t)n);
	fill_id(d->id_a, &d->id_a_len, 'a', KMS_ID_MAX);
	fill_id(d->id_b, &d->id_b_len, 'b', KMS_ID_MAX);
	fill_id(d->id_as, &d->id_as_len, 's', KMS_ID_MAX);
}

static void mk_audit(struct kms_audit *a, uint8_t event, uint64_t t,
		     uint32_t tag)
{
	memset(a, 0, sizeof(*a));
	a->event = event;
	a->time_ms = t;
	a->k_gen = tag;
	fill_bytes(a->key_id, sizeof(a->key_id), 5);
	fill_id(a->actor, &a->actor_len, 'x', KMS_ID_MAX);
	fill_id(a->id_a, &a->id_a_len, 'a', KMS_ID_MAX);
	fill_id(a->id_b, &a->id_b_len, 'b', KMS_ID_MAX);
}

static void key_id(uint8_t out[KMS_KEY_ID_LEN], uint32_t n)
{
	memset(out, 0, KMS_KEY_ID_LEN);
	put_be32(out + KMS_KEY_ID_LEN - 4, n);
}

/* Field-by-field: struct padding is not part of the contract. */
static void assert_party_eq(const struct kms_party *x,
			    const struct kms_party *y)
{
	assert_int_equal(x->kind, y->kind);
	assert_int_equal(x->status, y->status);
	assert_int_equal(x->gen, y->gen);
	assert_true(x->created_ms == y->created_ms);
	assert_memory_equal(x->blob, y->blob, sizeof(x->blob));
}

static void assert_pair_eq(const struct kms_pair *x, const struct kms_pair *y)
{
	assert_int_equal(x->k_gen, y->k_gen);
	assert_int_equal(x->uses, y->uses);
	assert_true(x->created_ms == y->created_ms);
	assert_memory_equal(x->blob, y->blob, sizeof(x->blob));
}

static void assert_deposit_eq(const struct kms_deposit *x,
			      const struct kms_deposit *y)
{
	assert_int_equal(x->status, y->status);
	assert_int_equal(x->k_gen, y->k_gen);
	assert_int_equal(x->retrievals, y->retrievals);
	assert_true(x->created_ms == y->created_ms);
	assert_true(x->expiry_ms == y->expiry_ms);
	assert_memory_equal(x->pair_hash, y->pair_hash, sizeof(x->pair_hash));
	assert_memory_equal(x->ea_digest, y->ea_digest, sizeof(x->ea_digest));
	assert_memory_equal(x->blob, y->blob, sizeof(x->blob));
	assert_int_equal(x->id_a_len, y->id_a_len);
	assert_int_equal(x->id_b_len, y->id_b_len);
	assert_int_equal(x->id_as_len, y->id_as_len);
	assert_memory_equal(x->id_a, y->id_a, x->id_a_len);
	assert_memory_equal(x->id_b, y->id_b, x->id_b_len);
	assert_memory_equal(x->id_as, y->id_as, x->id_as_len);
}

static void assert_audit_eq(const struct kms_audit *x,
			    const struct kms_audit *y)
{
	assert_int_equal(x->event, y->event);
	assert_true(x->time_ms == y->time_ms);
	assert_int_equal(x->k_gen, y->k_gen);
	assert_memory_equal(x->key_id, y->key_id, sizeof(x->key_id));
	assert_int_equal(x->actor_len, y->actor_len);
	assert_int_equal(x->id_a_len, y->id_a_len);
	assert_int_equal(x->id_b_len, y->id_b_len);
	assert_memory_equal(x->actor, y->actor, x->actor_len);
	assert_memory_equal(x->id_a, y->id_a, x->id_a_len);
	assert_memory_equal(x->id_b, y->id_b, x->id_b_len);
}

static struct kms_ks_counts counts(struct kms_ks *ks)
{
	struct kms_ks_counts c;

	assert_int_equal(kms_ks_counts(ks, &c), KMS_OK);
	return c;
}

/* ---- open / create ---- */

static void test_open_missing(void **state)
{
	struct fx *f = *state;
	struct kms_ks_config cfg = { .path = f->store };
	struct kms_ks *ks = NULL;
	struct stat st;

	assert_int_equal(kms_ks_open(&cfg, &ks), KMS_ERR_NOTFOUND);
	assert_null(ks);
	assert_int_equal(stat(f->store, &st), -1);

	/* An empty directory is no store either, and stays empty. */
	assert_int_equal(mkdir(f->store, 0700), 0);
	assert_int_equal(kms_ks_open(&cfg, &ks), KMS_ERR_NOTFOUND);
	assert_null(ks);
	assert_int_equal(rmdir(f->store), 0);
}

static void test_create_reopen(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks;
	struct kms_ks_txn *t;
	struct stat st;
	char buf[32], created[32];
	unsigned long long ms;

	ks = open_ks(f, 0, 1);
	assert_int_equal(stat(f->store, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_meta_get(t, "format", buf, sizeof(buf)), KMS_OK);
	assert_string_equal(buf, "3");
	assert_int_equal(kms_ks_meta_get(t, "created_ms", created,
					 sizeof(created)), KMS_OK);
	ms = strtoull(created, NULL, 10);
	assert_true(ms > 1600000000000ULL);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	kms_ks_close(ks);

	/* Reopen without create; created_ms is not rewritten. */
	ks = open_ks(f, 0, 0);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_meta_get(t, "created_ms", buf, sizeof(buf)),
			 KMS_OK);
	assert_string_equal(buf, created);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);

	/* Reopen with create on an existing store is a plain open. */
	ks = open_ks(f, 0, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_meta_get(t, "created_ms", buf, sizeof(buf)),
			 KMS_OK);
	assert_string_equal(buf, created);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
	kms_ks_close(NULL);
	kms_ks_txn_abort(NULL);
}

/* An ID is 1..KMS_ID_MAX bytes of 0x21..0x7e (or empty where min is 0):
 * every byte value at the first, a middle and the last position. */
static void test_id_ok(void **state)
{
	uint8_t id[KMS_ID_MAX];
	static const size_t at[] = { 0, KMS_ID_MAX / 2, KMS_ID_MAX - 1 };

	(void)state;
	memset(id, 'a', sizeof(id));
	assert_true(kms_ks_rec_id_ok(id, sizeof(id), 1));
	assert_false(kms_ks_rec_id_ok(id, sizeof(id) + 1, 1));
	assert_false(kms_ks_rec_id_ok(id, 0, 1));
	assert_true(kms_ks_rec_id_ok(id, 0, 0));
	for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
		for (unsigned c = 0; c < 256; c++) {
			id[at[k]] = (uint8_t)c;
			assert_int_equal(kms_ks_rec_id_ok(id, sizeof(id), 1),
					 c >= 0x21 && c <= 0x7e);
		}
		id[at[k]] = 'a';
	}
}

static int count_roles(uint64_t expire_ms, uint8_t role, const uint8_t *nonce,
		       const uint8_t *pair_prefix, void *arg)
{
	unsigned *c = arg;

	(void)expire_ms;
	(void)nonce;
	(void)pair_prefix;
	if (role == 3 || role == 4)
		c[role - 3]++;
	return 0;
}

static void test_format_check(void **state)
{
	struct fx *f = *state;
	struct kms_ks_config cfg = { .path = f->store, .create = 1 };
	struct kms_ks *ks = open_ks(f, 0, 1);

	kms_ks_close(ks);
	raw_put(f, "meta", "format", 6, "99", 2);
	ks = NULL;
	assert_int_equal(kms_ks_open(&cfg, &ks), KMS_ERR_CORRUPT);
	assert_null(ks);
	cfg.create = 0;
	assert_int_equal(kms_ks_open(&cfg, &ks), KMS_ERR_CORRUPT);
	assert_null(ks);
	/* A store of format 1 (time-keyed, unchained audit) is refused too. */
	raw_put(f, "meta", "format", 6, "1", 1);
	assert_int_equal(kms_ks_open(&cfg, &ks), KMS_ERR_CORRUPT);
	/* Nothing was changed by the refused opens. */
	raw_put(f, "meta", "format", 6, "3", 1);
	ks = open_ks(f, 0, 0);
	kms_ks_close(ks);
}

/* A format-2 store (single nonce records only) opens, is upgraded to 3
 * durably, and keeps its nonces readable beside packed ones. */
static void test_format_upgrade(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	struct kms_ks_nonce v = { .expire_ms = 500, .role = 3 };
	uint8_t nonce[KMS_NONCE_LEN] = { 1 }, prefix[8] = { 2 };
	unsigned c[2] = { 0, 0 };
	char buf[8];

	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_put(t, 400, 4, nonce, prefix), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	kms_ks_close(ks);
	raw_put(f, "meta", "format", 6, "2", 1);
	ks = open_ks(f, 0, 0);
	kms_ks_close(ks);
	ks = open_ks(f, 0, 0);	/* from disk */
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_meta_get(t, "format", buf, sizeof(buf)), KMS_OK);
	assert_string_equal(buf, "3");
	assert_int_equal(kms_ks_nonce_put_many(t, &v, 1), KMS_OK);
	assert_int_equal(kms_ks_nonce_foreach(t, 0, count_roles, c), KMS_OK);
	assert_int_equal(c[0], 1);	/* role 3, packed */
	assert_int_equal(c[1], 1);	/* role 4, the format-2 record */
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	kms_ks_close(ks);
}

static void test_meta(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char buf[16];

	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_meta_put(t, "kek_label", "kms-kek"), KMS_OK);
	assert_int_equal(kms_ks_meta_get(t, "kek_label", buf, sizeof(buf)),
			 KMS_OK);
	assert_string_equal(buf, "kms-kek");
	assert_int_equal(kms_ks_meta_put(t, "kek_label", "kek-2"), KMS_OK);
	assert_int_equal(kms_ks_meta_put(t, "empty", ""), KMS_OK);
	assert_int_equal(kms_ks_meta_put(t, "", "x"), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_meta_put(t, "x", NULL), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	memset(buf, 'z', sizeof(buf));
	assert_int_equal(kms_ks_meta_get(t, "kek_label", buf, 5), KMS_ERR_SPACE);
	assert_int_equal(buf[0], 'z');
	assert_int_equal(kms_ks_meta_get(t, "kek_label", buf, 6), KMS_OK);
	assert_string_equal(buf, "kek-2");
	assert_int_equal(kms_ks_meta_get(t, "empty", buf, 1), KMS_OK);
	assert_string_equal(buf, "");
	assert_int_equal(kms_ks_meta_get(t, "nope", buf, sizeof(buf)),
			 KMS_ERR_NOTFOUND);
	assert_int_equal(kms_ks_meta_put(t, "a", "b"), KMS_ERR_INVAL);
	/* None of these stick. */
	assert_int_equal(kms_ks_txn_error(t), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	kms_ks_close(ks);
}

/* ---- records ---- */

static void test_roundtrip(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char idbuf[KMS_ID_MAX];
	struct kms_id id = mk_id(idbuf, 'p', KMS_ID_MAX);
	uint8_t hash[KMS_PAIR_HASH_LEN], kid[KMS_KEY_ID_LEN];
	struct kms_party p, p2;
	struct kms_pair pr, pr2;
	struct kms_deposit d, d2;
	struct kms_audit a;

	fill_bytes(hash, sizeof(hash), 99);
	key_id(kid, 1);
	mk_party(&p, 7);
	mk_pair(&pr);
	mk_deposit(&d, 1);
	mk_audit(&a, KMS_AUD_KEY_NEW, 1700000000123ULL, 9);

	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	assert_int_equal(kms_ks_pair_put(t, hash, &pr), KMS_OK);
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 0), KMS_OK);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
	/* Visible inside the write txn already. */
	assert_int_equal(kms_ks_party_get(t, &id, &p2), KMS_OK);
	assert_party_eq(&p, &p2);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	memset(&p2, 0, sizeof(p2));
	assert_int_equal(kms_ks_party_get(t, &id, &p2), KMS_OK);
	assert_party_eq(&p, &p2);
	assert_int_equal(kms_ks_pair_get(t, hash, &pr2), KMS_OK);
	assert_pair_eq(&pr, &pr2);
	assert_int_equal(kms_ks_deposit_get(t, kid, &d2), KMS_OK);
	assert_deposit_eq(&d, &d2);
	assert_int_equal(kms_ks_audit_foreach(t, NULL, NULL), KMS_ERR_INVAL);
	kms_ks_txn_abort(t);
	assert_int_equal(counts(ks).audit, 1);
	kms_ks_close(ks);
}

static uint64_t epoch_now(struct kms_ks *ks)
{
	struct kms_ks_txn *t;
	uint64_t e = 99;

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_party_epoch(t, &e), KMS_OK);
	kms_ks_txn_abort(t);
	return e;
}

/* A re-wrap that flips every blob's first byte (or changes nothing). */
static int flip_blob(void *arg, const uint8_t in[KMS_HSM_BLOB_LEN],
		     uint8_t out[KMS_HSM_BLOB_LEN])
{
	if (!*(int *)arg)
		return KMS_ERR_EXISTS;
	memcpy(out, in, KMS_HSM_BLOB_LEN);
	out[0] ^= 1;
	return KMS_OK;
}

/*
 * The party epoch moves on with every committed transaction that writes a
 * party record, and with nothing else: the engine keeps party records
 * read under one epoch for as long as its snapshots show that epoch.
 */
static void test_party_epoch(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char idbuf[KMS_ID_MAX], idbuf2[8];
	struct kms_id id = mk_id(idbuf, 'p', 12), id2 = mk_id(idbuf2, 'q', 8);
	uint8_t hash[KMS_PAIR_HASH_LEN], kid[KMS_KEY_ID_LEN];
	struct kms_ks_rewrap cur;
	struct kms_party p;
	struct kms_pair pr;
	struct kms_deposit d;
	unsigned visited, changed;
	uint64_t e;
	int flip;

	assert_int_equal(epoch_now(ks), 0);
	mk_party(&p, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	assert_int_equal(kms_ks_party_epoch(t, &e), KMS_OK);
	assert_int_equal(e, 1);               /* seen inside the txn */
	assert_int_equal(kms_ks_party_put(t, &id2, &p), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(epoch_now(ks), 2);

	/* Aborted: no change. Pair and deposit writes: no change. */
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	kms_ks_txn_abort(t);
	fill_bytes(hash, sizeof(hash), 5);
	key_id(kid, 1);
	mk_pair(&pr);
	mk_deposit(&d, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_pair_put(t, hash, &pr), KMS_OK);
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 0), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(epoch_now(ks), 2);

	/* A KEK rotation's pass: re-wrapped party records move it on once
	 * per step; a pass that finds every blob current does not. */
	flip = 0;
	memset(&cur, 0, sizeof(cur));
	while (!kms_ks_rewrap_done(&cur))
		assert_int_equal(kms_ks_rewrap_step(ks, &cur, 8, flip_blob, &flip,
						    &visited, &changed), KMS_OK);
	assert_int_equal(epoch_now(ks), 2);
	flip = 1;
	memset(&cur, 0, sizeof(cur));
	assert_int_equal(kms_ks_rewrap_step(ks, &cur, 8, flip_blob, &flip,
					    &visited, &changed), KMS_OK);
	assert_int_equal(changed, 2);         /* both parties, one step */
	assert_int_equal(epoch_now(ks), 3);
	while (!kms_ks_rewrap_done(&cur))     /* pairs, deposits, meta */
		assert_int_equal(kms_ks_rewrap_step(ks, &cur, 8, flip_blob, &flip,
						    &visited, &changed), KMS_OK);
	assert_int_equal(epoch_now(ks), 3);
	kms_ks_close(ks);
}

static uint64_t revoked_now(struct kms_ks *ks)
{
	struct kms_ks_txn *t;
	uint64_t n = 99;

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_pairs_revoked(t, &n), KMS_OK);
	kms_ks_txn_abort(t);
	return n;
}

/* Delete @p key from the meta DB, as a store made before it existed. */
static void raw_meta_del(const struct fx *f, const char *key)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { .mv_size = strlen(key), .mv_data = (void *)key };

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, f->store, MDB_NOTLS, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/*
 * "pairs_revoked" counts revoked pair records written (0: a RETRIEVE may
 * skip the pair lookup). Unrevoked writes and aborted ones do not count;
 * a store without the counter (made before it) is counted at open.
 */
static void test_pairs_revoked(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	uint8_t h1[KMS_PAIR_HASH_LEN], h2[KMS_PAIR_HASH_LEN];
	struct kms_pair pr;

	fill_bytes(h1, sizeof(h1), 1);
	fill_bytes(h2, sizeof(h2), 2);
	mk_pair(&pr);
	pr.revoked = 0;
	assert_int_equal(revoked_now(ks), 0);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_pair_put(t, h1, &pr), KMS_OK);
	assert_int_equal(kms_ks_pair_put(t, h2, &pr), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(revoked_now(ks), 0);

	pr.revoked = 1;
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_pair_put(t, h1, &pr), KMS_OK);
	kms_ks_txn_abort(t);
	assert_int_equal(revoked_now(ks), 0);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_pair_put(t, h1, &pr), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(revoked_now(ks), 1);
	kms_ks_close(ks);

	/* An older store: the counter is missing; the open counts. */
	raw_meta_del(f, "pairs_revoked");
	ks = open_ks(f, 0, 0);
	assert_int_equal(revoked_now(ks), 1);
	kms_ks_close(ks);
}

static int audit_collect(const struct kms_audit *a, void *arg)
{
	struct kms_audit *dst = arg;

	*dst = *a;
	return 0;
}

static void test_roundtrip_audit(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	struct kms_audit a, got;

	mk_audit(&a, KMS_AUD_KEY_RETRIEVE, 1700000000123ULL, 0xdeadbeef);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	memset(&got, 0, sizeof(got));
	assert_int_equal(kms_ks_audit_foreach(t, audit_collect, &got), KMS_OK);
	assert_audit_eq(&a, &got);
	kms_ks_txn_abort(t);

	/* Empty actor and IDs (an INIT event) are allowed. */
	memset(&a, 0, sizeof(a));
	a.event = KMS_AUD_INIT;
	a.time_ms = 1700000000124ULL;
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_foreach(t, audit_collect, &got), KMS_OK);
	assert_audit_eq(&a, &got);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
}

/* Five records in three transactions; then verify. */
static struct kms_ks *chain_of_five(struct fx *f)
{
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	struct kms_audit a;
	struct kms_audit_check c;
	static const unsigned per_txn[] = { 1, 3, 1 };
	uint64_t tm = 1700000000000ULL;

	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
		for (unsigned j = 0; j < per_txn[i]; j++) {
			/* Clocks need not be monotonic: chain order is commit order. */
			mk_audit(&a, KMS_AUD_KEY_NEW, tm - 10 * i + j, i * 10 + j);
			assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
		}
		assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	}
	/* An aborted append leaves no trace in the chain. */
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
	kms_ks_txn_abort(t);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_verify(t, &c), KMS_OK);
	assert_int_equal(c.records, 5);
	assert_null(c.reason);
	kms_ks_txn_abort(t);
	return ks;
}

static int seq_collect(const struct kms_audit *a, void *arg)
{
	uint64_t *n = arg;

	assert_true(a->seq == ++*n);
	return 0;
}

static void verify_broken(struct fx *f, uint64_t bad, const char *why)
{
	struct kms_ks *ks = open_ks(f, 0, 0);
	struct kms_ks_txn *t;
	struct kms_audit_check c;

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_verify(t, &c), KMS_ERR_CORRUPT);
	assert_true(c.bad_seq == bad);
	assert_non_null(strstr(c.reason, why));
	/* Not sticky: the txn still reads. */
	assert_int_equal(kms_ks_txn_error(t), KMS_OK);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
}

/* The chain holds across transactions and reopening, in commit order. */
static void test_audit_chain(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = chain_of_five(f);
	struct kms_ks_txn *t;
	uint64_t n = 0;

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_foreach(t, seq_collect, &n), KMS_OK);
	assert_true(n == 5);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
}

/* One altered byte in a record's body: the next record's link breaks. */
static void test_audit_altered(void **state)
{
	struct fx *f = *state;
	uint8_t v[KS_AUDIT_MAX];
	size_t len;

	kms_ks_close(chain_of_five(f));
	assert_int_equal(raw_audit(f, 3, v, &len, 0), 0);
	v[len - 1] ^= 1;	/* the last byte of id_b: still decodes */
	{
		uint8_t kb[KS_AUDIT_KEY_LEN];

		put_be64(kb, 3);
		raw_put(f, "audit", kb, sizeof(kb), v, len);
	}
	verify_broken(f, 4, "altered, removed or reordered");
}

/* The last record altered: the head no longer matches. */
static void test_audit_altered_last(void **state)
{
	struct fx *f = *state;
	uint8_t v[KS_AUDIT_MAX], kb[KS_AUDIT_KEY_LEN];
	size_t len;

	kms_ks_close(chain_of_five(f));
	assert_int_equal(raw_audit(f, 5, v, &len, 0), 0);
	v[len - 1] ^= 1;
	put_be64(kb, 5);
	raw_put(f, "audit", kb, sizeof(kb), v, len);
	verify_broken(f, 5, "not the chain head");
}

/* A record removed from the middle; the end truncated. */
static void test_audit_removed(void **state)
{
	struct fx *f = *state;

	kms_ks_close(chain_of_five(f));
	assert_int_equal(raw_audit(f, 2, NULL, NULL, 1), 0);
	verify_broken(f, 2, "missing or out of place");
}

static void test_audit_truncated(void **state)
{
	struct fx *f = *state;

	kms_ks_close(chain_of_five(f));
	assert_int_equal(raw_audit(f, 5, NULL, NULL, 1), 0);
	assert_int_equal(raw_audit(f, 4, NULL, NULL, 1), 0);
	verify_broken(f, 4, "missing at the end");
}

/* Two records swapped (values exchanged under their keys). */
static void test_audit_reordered(void **state)
{
	struct fx *f = *state;
	uint8_t v2[KS_AUDIT_MAX], v3[KS_AUDIT_MAX], kb[KS_AUDIT_KEY_LEN];
	size_t l2, l3;

	kms_ks_close(chain_of_five(f));
	assert_int_equal(raw_audit(f, 2, v2, &l2, 0), 0);
	assert_int_equal(raw_audit(f, 3, v3, &l3, 0), 0);
	put_be64(kb, 2);
	raw_put(f, "audit", kb, sizeof(kb), v3, l3);
	put_be64(kb, 3);
	raw_put(f, "audit", kb, sizeof(kb), v2, l2);
	verify_broken(f, 2, "altered, removed or reordered");
}

static void test_notfound_not_sticky(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char idbuf[KMS_ID_MAX];
	struct kms_id id = mk_id(idbuf, 'q', 5);
	uint8_t hash[KMS_PAIR_HASH_LEN] = { 0 }, kid[KMS_KEY_ID_LEN];
	struct kms_party p, sentinel;
	struct kms_pair pr;
	struct kms_deposit d;

	key_id(kid, 42);
	mk_party(&p, 1);
	memset(&sentinel, 0xa5, sizeof(sentinel));
	p = sentinel;
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_party_get(t, &id, &p), KMS_ERR_NOTFOUND);
	assert_memory_equal(&p, &sentinel, sizeof(p));
	assert_int_equal(kms_ks_pair_get(t, hash, &pr), KMS_ERR_NOTFOUND);
	assert_int_equal(kms_ks_deposit_get(t, kid, &d), KMS_ERR_NOTFOUND);
	assert_int_equal(kms_ks_txn_error(t), KMS_OK);
	mk_party(&p, 1);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(counts(ks).parties, 1);
	kms_ks_close(ks);
}

static void test_invalid_args(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char idbuf[KMS_ID_MAX + 1];
	struct kms_id id = mk_id(idbuf, 'q', 5), bad;
	uint8_t kid[KMS_KEY_ID_LEN];
	struct kms_party p;
	struct kms_deposit d;
	struct kms_audit a;

	key_id(kid, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	mk_party(&p, 1);
	p.kind = 0;
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_ERR_INVAL);
	mk_party(&p, 1);
	p.status = 9;
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_ERR_INVAL);
	mk_party(&p, 1);
	bad = id;
	bad.len = 0;
	assert_int_equal(kms_ks_party_put(t, &bad, &p), KMS_ERR_INVAL);
	idbuf[2] = ' ';
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_party_get(t, &id, &p), KMS_ERR_INVAL);
	idbuf[2] = 'Q';
	mk_deposit(&d, 1);
	d.id_b_len = 0;
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 1), KMS_ERR_INVAL);
	mk_deposit(&d, 1);
	d.id_as_len = KMS_ID_MAX + 1;
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 1), KMS_ERR_INVAL);
	mk_deposit(&d, 1);
	d.status = 0;
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 1), KMS_ERR_INVAL);
	mk_audit(&a, 0, 1, 1);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_ERR_INVAL);
	mk_audit(&a, KMS_AUD_INIT, 1, 1);
	a.actor_len = KMS_ID_MAX + 1;
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_ERR_INVAL);
	/* Argument errors do not poison the txn. */
	assert_int_equal(kms_ks_txn_error(t), KMS_OK);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(counts(ks).parties, 1);
	assert_int_equal(counts(ks).deposits, 0);
	assert_int_equal(counts(ks).audit, 0);
	kms_ks_close(ks);
}

static void test_rdonly_put(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char idbuf[KMS_ID_MAX];
	struct kms_id id = mk_id(idbuf, 'r', 3);
	uint8_t hash[KMS_PAIR_HASH_LEN] = { 1 }, kid[KMS_KEY_ID_LEN];
	struct kms_party p;
	struct kms_pair pr;
	struct kms_deposit d;
	struct kms_audit a;

	key_id(kid, 1);
	mk_party(&p, 1);
	mk_pair(&pr);
	mk_deposit(&d, 1);
	mk_audit(&a, KMS_AUD_ENROLL, 5, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_pair_put(t, hash, &pr), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 1), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_meta_put(t, "x", "y"), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_nonce_put(t, 100, 3, kid, hash), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	kms_ks_close(ks);
}

static void test_deposit_exists(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	uint8_t kid[KMS_KEY_ID_LEN];
	struct kms_deposit d, d2;

	key_id(kid, 5);
	mk_deposit(&d, 5);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 0), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);

	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	d.retrievals = 1;
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 0), KMS_ERR_EXISTS);
	assert_int_equal(kms_ks_txn_error(t), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(t, kid, &d2), KMS_OK);
	assert_int_equal(d2.retrievals, 0x80000001U);
	/* The txn goes on: an overwrite works and commits. */
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 1), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(t, kid, &d2), KMS_OK);
	assert_deposit_eq(&d, &d2);
	kms_ks_txn_abort(t);
	assert_int_equal(counts(ks).deposits, 1);
	kms_ks_close(ks);
}

/* ---- transactions ---- */

static void test_commit_survives_reopen(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char idbuf[KMS_ID_MAX];
	struct kms_id id = mk_id(idbuf, 'c', 40);
	uint8_t kid[KMS_KEY_ID_LEN];
	struct kms_party p, p2;
	struct kms_deposit d, d2;

	key_id(kid, 9);
	mk_party(&p, 3);
	mk_deposit(&d, 9);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 0), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	kms_ks_close(ks);

	ks = open_ks(f, 0, 0);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_party_get(t, &id, &p2), KMS_OK);
	assert_party_eq(&p, &p2);
	assert_int_equal(kms_ks_deposit_get(t, kid, &d2), KMS_OK);
	assert_deposit_eq(&d, &d2);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
}

/* The expiry purge: bounded steps that resume, expired deposits gone,
 * live ones kept whatever their place (lifetimes differ per policy). */
static void test_deposit_purge(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	struct kms_deposit d;
	uint8_t kid[KMS_KEY_ID_LEN], next[KMS_KEY_ID_LEN], from[KMS_KEY_ID_LEN];
	const uint64_t now = 1800000000000ULL;
	int more, n, total = 0, steps = 0;
	const uint8_t *fp = NULL;

	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	for (uint32_t i = 1; i <= 10; i++) {
		key_id(kid, (uint8_t)i);
		mk_deposit(&d, i);
		/* odd ones expired (one exactly now), even ones still live */
		d.expiry_ms = i % 2 ? now - (i == 1 ? 0 : i) : now + i;
		assert_int_equal(kms_ks_deposit_put(t, kid, &d, 0), KMS_OK);
	}
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	do {
		assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
		n = kms_ks_deposit_purge(t, now, fp, 3, next, &more);
		assert_true(n >= 0 && n <= 3);
		assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
		total += n;
		memcpy(from, next, sizeof(from));
		fp = from;
		steps++;
	} while (more && steps < 10);
	assert_int_equal(total, 5);
	assert_int_equal(steps, 4); /* 10 scanned 3 at a time */
	assert_int_equal(counts(ks).deposits, 5);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	for (uint32_t i = 1; i <= 10; i++) {
		key_id(kid, (uint8_t)i);
		assert_int_equal(kms_ks_deposit_get(t, kid, &d),
				 i % 2 ? KMS_ERR_NOTFOUND : KMS_OK);
	}
	kms_ks_txn_abort(t);
	/* Nothing left to purge; a read-only txn may not purge. */
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_deposit_purge(t, now, NULL, 100, next, &more), 0);
	assert_int_equal(more, 0);
	kms_ks_txn_abort(t);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_true(kms_ks_deposit_purge(t, now, NULL, 100, next, &more) < 0);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
}

static void test_abort_leaves_nothing(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char idbuf[KMS_ID_MAX];
	struct kms_id id = mk_id(idbuf, 'n', 10);
	uint8_t hash[KMS_PAIR_HASH_LEN] = { 7 }, kid[KMS_KEY_ID_LEN];
	struct kms_party p;
	struct kms_pair pr;
	struct kms_deposit d;
	struct kms_audit a;
	struct kms_ks_counts c;
	char buf[8];

	key_id(kid, 1);
	mk_party(&p, 1);
	mk_pair(&pr);
	mk_deposit(&d, 1);
	mk_audit(&a, KMS_AUD_ENROLL, 100, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	assert_int_equal(kms_ks_pair_put(t, hash, &pr), KMS_OK);
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 0), KMS_OK);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
	assert_int_equal(kms_ks_meta_put(t, "kek_label", "k"), KMS_OK);
	assert_int_equal(kms_ks_nonce_put(t, 100, 3, kid, hash), KMS_OK);
	kms_ks_txn_abort(t);

	c = counts(ks);
	assert_int_equal(c.parties + c.pairs + c.deposits + c.audit + c.nonces,
			 0);
	kms_ks_close(ks);
	ks = open_ks(f, 0, 0);
	c = counts(ks);
	assert_int_equal(c.parties + c.pairs + c.deposits + c.audit + c.nonces,
			 0);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_party_get(t, &id, &p), KMS_ERR_NOTFOUND);
	assert_int_equal(kms_ks_meta_get(t, "kek_label", buf, sizeof(buf)),
			 KMS_ERR_NOTFOUND);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
}

static void test_read_snapshot(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *r, *w;
	uint8_t kid[KMS_KEY_ID_LEN];
	struct kms_deposit d;

	key_id(kid, 1);
	mk_deposit(&d, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &r), KMS_OK);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &w), KMS_OK);
	assert_int_equal(kms_ks_deposit_put(w, kid, &d, 0), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(w), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(r, kid, &d), KMS_ERR_NOTFOUND);
	kms_ks_txn_abort(r);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &r), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(r, kid, &d), KMS_OK);
	kms_ks_txn_abort(r);
	kms_ks_close(ks);
}

/* ---- corruption ---- */

static void test_corrupt_party(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char goodbuf[KMS_ID_MAX], badbuf[KMS_ID_MAX];
	struct kms_id good = mk_id(goodbuf, 'g', 4), bad = mk_id(badbuf, 'b', 4);
	struct kms_party p, sentinel;
	static const uint8_t garbage[] = "this is not a party record";

	mk_party(&p, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_party_put(t, &good, &p), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	kms_ks_close(ks);
	raw_put(f, "parties", bad.p, bad.len, garbage, sizeof(garbage));

	ks = open_ks(f, 0, 0);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	memset(&sentinel, 0x5a, sizeof(sentinel));
	p = sentinel;
	assert_int_equal(kms_ks_party_get(t, &bad, &p), KMS_ERR_CORRUPT);
	assert_memory_equal(&p, &sentinel, sizeof(p));
	/* Sticky: a good record now also reads as the error. */
	assert_int_equal(kms_ks_txn_error(t), KMS_ERR_CORRUPT);
	assert_int_equal(kms_ks_party_get(t, &good, &p), KMS_ERR_CORRUPT);
	assert_int_equal(kms_ks_txn_commit(t), KMS_ERR_CORRUPT);

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_party_get(t, &good, &p), KMS_OK);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
}

static int count_party(const struct kms_id *id, const struct kms_party *p,
		       void *arg)
{
	(void)id;
	(void)p;
	++*(int *)arg;
	return 0;
}

static void test_corrupt_foreach(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	uint8_t rec[KS_AUDIT_MAX];
	struct kms_audit a;
	struct kms_party p;
	int n = 0, len;

	kms_ks_close(ks);
	/* A well-formed party record under a key that is not an ID. */
	mk_party(&p, 1);
	len = kms_ks_rec_party_enc(&p, rec);
	assert_int_equal(len, KS_PARTY_LEN);
	raw_put(f, "parties", "bad id", 6, rec, (size_t)len);
	/* A well-formed audit record under a key that is no sequence number. */
	mk_audit(&a, KMS_AUD_INIT, 1000, 1);
	len = kms_ks_rec_audit_enc(&a, (const uint8_t[KMS_AUDIT_HASH_LEN]){ 0 }, rec);
	raw_put(f, "audit", "not-a-seq", 9, rec, (size_t)len);

	ks = open_ks(f, 0, 0);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_party_foreach(t, count_party, &n),
			 KMS_ERR_CORRUPT);
	kms_ks_txn_abort(t);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_foreach(t, audit_collect, &a),
			 KMS_ERR_CORRUPT);
	assert_int_equal(kms_ks_txn_commit(t), KMS_ERR_CORRUPT);
	kms_ks_close(ks);
}

/* Every truncation, every extension and a wrong version byte of a good
 * record decode as CORRUPT. */
static void check_codec(int (*dec)(const uint8_t *, size_t, void *),
			const uint8_t *rec, size_t len, size_t out_size)
{
	uint8_t buf[KS_DEPOSIT_MAX + 2];
	void *out = malloc(out_size);
	size_t i;

	assert_non_null(out);
	assert_true(len + 1 <= sizeof(buf));
	assert_int_equal(dec(rec, len, out), KMS_OK);
	for (i = 0; i < len; i++)
		assert_int_equal(dec(rec, i, out), KMS_ERR_CORRUPT);
	memcpy(buf, rec, len);
	buf[len] = 0;
	assert_int_equal(dec(buf, len + 1, out), KMS_ERR_CORRUPT);
	buf[0] = 0x7e; /* a version no layout has */
	assert_int_equal(dec(buf, len, out), KMS_ERR_CORRUPT);
	buf[0] = 0;
	assert_int_equal(dec(buf, len, out), KMS_ERR_CORRUPT);
	free(out);
}

static int dec_party(const uint8_t *b, size_t n, void *o)
{
	return kms_ks_rec_party_dec(b, n, o);
}

static int dec_pair(const uint8_t *b, size_t n, void *o)
{
	return kms_ks_rec_pair_dec(b, n, o);
}

static int dec_deposit(const uint8_t *b, size_t n, void *o)
{
	return kms_ks_rec_deposit_dec(b, n, o);
}

static int dec_audit(const uint8_t *b, size_t n, void *o)
{
	uint8_t prev[KMS_AUDIT_HASH_LEN];

	return kms_ks_rec_audit_dec(b, n, o, prev);
}

static void test_codec(void **state)
{
	uint8_t rec[KS_DEPOSIT_MAX];
	struct kms_party p;
	struct kms_pair pr;
	struct kms_deposit d, d2;
	struct kms_audit a;
	uint8_t prev[KMS_AUDIT_HASH_LEN], prev2[KMS_AUDIT_HASH_LEN];
	int n;

	(void)state;
	mk_party(&p, 1);
	n = kms_ks_rec_party_enc(&p, rec);
	assert_int_equal(n, 55);
	/* Layout pinned: version, kind, status, gen BE, created BE, blob. */
	assert_int_equal(rec[0], 1);
	assert_int_equal(rec[1], KMS_PARTY_AS);
	assert_int_equal(rec[2], KMS_PARTY_REVOKED);
	assert_int_equal(get_be32(rec + 3), 1);
	assert_true(get_be64(rec + 7) == 0x0102030405060708ULL);
	assert_memory_equal(rec + 15, p.blob, KMS_HSM_BLOB_LEN);
	check_codec(dec_party, rec, (size_t)n, sizeof(p));
	rec[1] = 3;
	assert_int_equal(kms_ks_rec_party_dec(rec, (size_t)n, &p),
			 KMS_ERR_CORRUPT);
	/* A revoked pair: version 2, one byte more. */
	{
		struct kms_pair pa, pb;

		memset(&pa, 0, sizeof(pa));
		pa.k_gen = 3;
		pa.revoked = 1;
		n = kms_ks_rec_pair_enc(&pa, rec);
		assert_int_equal(n, KS_PAIR_V2_LEN);
		assert_int_equal(rec[0], 2);
		assert_int_equal(rec[n - 1], 1);
		check_codec(dec_pair, rec, (size_t)n, sizeof(pb));
		assert_int_equal(kms_ks_rec_pair_dec(rec, (size_t)n, &pb), KMS_OK);
		assert_int_equal(pb.revoked, 1);
		rec[n - 1] = 2;
		assert_int_equal(kms_ks_rec_pair_dec(rec, (size_t)n, &pb),
				 KMS_ERR_CORRUPT);
		pa.revoked = 0;
		assert_int_equal(kms_ks_rec_pair_enc(&pa, rec), KS_PAIR_LEN);
	}
	/* Version 2: a previous generation in its overlap, after the v1 part. */
	{
		struct kms_party q, q2;

		mk_party(&q, 3);
		q.gen = 5;
		q.prev_gen = 4;
		q.prev_until_ms = 0x1122334455667788ULL;
		memset(q.prev_blob, 0xab, sizeof(q.prev_blob));
		n = kms_ks_rec_party_enc(&q, rec);
		assert_int_equal(n, KS_PARTY_V2_LEN);
		assert_int_equal(rec[0], 2);
		assert_int_equal(get_be32(rec + 55), 4);
		assert_true(get_be64(rec + 59) == 0x1122334455667788ULL);
		assert_memory_equal(rec + 67, q.prev_blob, KMS_HSM_BLOB_LEN);
		check_codec(dec_party, rec, (size_t)n, sizeof(q));
		assert_int_equal(kms_ks_rec_party_dec(rec, (size_t)n, &q2), KMS_OK);
		assert_int_equal(q2.prev_gen, 4);
		assert_int_equal(q2.gen, 5);
		assert_memory_equal(q2.prev_blob, q.prev_blob, KMS_HSM_BLOB_LEN);
		/* prev_gen must be below gen, and not 0 in a v2 record. */
		rec[58] = 5;
		assert_int_equal(kms_ks_rec_party_dec(rec, (size_t)n, &q2),
				 KMS_ERR_CORRUPT);
		rec[55] = rec[56] = rec[57] = rec[58] = 0;
		assert_int_equal(kms_ks_rec_party_dec(rec, (size_t)n, &q2),
				 KMS_ERR_CORRUPT);
		q.prev_gen = 5;
		assert_int_equal(kms_ks_rec_party_enc(&q, rec), KMS_ERR_INVAL);
	}

	mk_pair(&pr);
	n = kms_ks_rec_pair_enc(&pr, rec);
	assert_int_equal(n, 57);
	check_codec(dec_pair, rec, (size_t)n, sizeof(pr));

	mk_deposit(&d, 1);
	n = kms_ks_rec_deposit_enc(&d, rec);
	assert_int_equal(n, KS_DEPOSIT_MAX);
	assert_int_equal(rec[130], KMS_ID_MAX);
	check_codec(dec_deposit, rec, (size_t)n, sizeof(d));
	/* A non-printable byte inside an ID. */
	rec[131] = 0x7f;
	assert_int_equal(kms_ks_rec_deposit_dec(rec, (size_t)n, &d2),
			 KMS_ERR_CORRUPT);
	d.id_a_len = 1;
	d.id_b_len = 2;
	d.id_as_len = 3;
	n = kms_ks_rec_deposit_enc(&d, rec);
	assert_int_equal(n, KS_DEPOSIT_FIXED + 6);
	assert_int_equal(kms_ks_rec_deposit_dec(rec, (size_t)n, &d2), KMS_OK);
	assert_deposit_eq(&d, &d2);
	/* An ID length pointing past the end. */
	rec[130] = 200;
	assert_int_equal(kms_ks_rec_deposit_dec(rec, (size_t)n, &d2),
			 KMS_ERR_CORRUPT);

	mk_audit(&a, KMS_AUD_REVOKE, 12345, 1);
	fill_bytes(prev, sizeof(prev), 9);
	n = kms_ks_rec_audit_enc(&a, prev, rec);
	assert_int_equal(n, KS_AUDIT_MAX);
	/* Layout pinned: version 2, then the previous record's hash. */
	assert_int_equal(rec[0], 2);
	assert_memory_equal(rec + 1, prev, sizeof(prev));
	check_codec(dec_audit, rec, (size_t)n, sizeof(a));
	assert_int_equal(kms_ks_rec_audit_dec(rec, (size_t)n, &a, prev2), KMS_OK);
	assert_memory_equal(prev2, prev, sizeof(prev));
	rec[1 + KMS_AUDIT_HASH_LEN] = KMS_AUD_KEK_ROTATE + 1; /* no such event */
	assert_int_equal(kms_ks_rec_audit_dec(rec, (size_t)n, &a, prev2),
			 KMS_ERR_CORRUPT);
}

/* ---- map full and the sticky error ---- */

static void test_sticky_mapfull(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, TINY_MAP, 1);
	struct kms_ks_txn *t;
	char idbuf[KMS_ID_MAX];
	struct kms_id id = mk_id(idbuf, 'z', 8);
	uint8_t kid[KMS_KEY_ID_LEN];
	struct kms_deposit d;
	struct kms_party p;
	uint32_t i;
	int rc = KMS_OK;

	mk_party(&p, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);

	/* One txn far larger than the map. */
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	for (i = 0; i < 100000 && rc == KMS_OK; i++) {
		key_id(kid, i);
		mk_deposit(&d, i);
		rc = kms_ks_deposit_put(t, kid, &d, 0);
	}
	assert_int_equal(rc, KMS_ERR_MAPFULL);
	assert_int_equal(kms_ks_txn_error(t), KMS_ERR_MAPFULL);
	/* Every later call returns the same error, even ones that would
	 * otherwise succeed or report NOTFOUND. */
	assert_int_equal(kms_ks_party_get(t, &id, &p), KMS_ERR_MAPFULL);
	key_id(kid, 0);
	assert_int_equal(kms_ks_deposit_get(t, kid, &d), KMS_ERR_MAPFULL);
	assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_ERR_MAPFULL);
	assert_int_equal(kms_ks_meta_put(t, "a", "b"), KMS_ERR_MAPFULL);
	assert_int_equal(kms_ks_party_foreach(t, count_party, &rc),
			 KMS_ERR_MAPFULL);
	assert_int_equal(kms_ks_txn_commit(t), KMS_ERR_MAPFULL);

	/* Nothing from that txn is visible; the earlier one is. */
	assert_int_equal(counts(ks).deposits, 0);
	assert_int_equal(counts(ks).parties, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(t, kid, &d), KMS_ERR_NOTFOUND);
	assert_int_equal(kms_ks_party_get(t, &id, &p), KMS_OK);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
}

static void test_mapfull_keeps_committed(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, TINY_MAP, 1);
	struct kms_ks_txn *t;
	uint8_t kid[KMS_KEY_ID_LEN];
	struct kms_deposit d, d2;
	uint32_t committed = 0, next = 0, i;
	int rc = KMS_OK, batch;

	/* Small committed batches until the map is full. */
	while (rc == KMS_OK) {
		assert_true(next < 100000);
		assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
		for (batch = 0; batch < 8 && rc == KMS_OK; batch++) {
			key_id(kid, next);
			mk_deposit(&d, next);
			rc = kms_ks_deposit_put(t, kid, &d, 0);
			next++;
		}
		if (rc == KMS_OK) {
			rc = kms_ks_txn_commit(t);
			if (rc == KMS_OK)
				committed = next;
		} else {
			assert_int_equal(kms_ks_txn_commit(t), rc);
		}
	}
	assert_int_equal(rc, KMS_ERR_MAPFULL);
	assert_true(committed > 16);
	assert_int_equal(counts(ks).deposits, committed);

	/* Every committed record is intact, in a fresh read txn. */
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	for (i = 0; i < committed; i++) {
		key_id(kid, i);
		mk_deposit(&d, i);
		assert_int_equal(kms_ks_deposit_get(t, kid, &d2), KMS_OK);
		assert_deposit_eq(&d, &d2);
	}
	key_id(kid, committed);
	assert_int_equal(kms_ks_deposit_get(t, kid, &d2), KMS_ERR_NOTFOUND);
	kms_ks_txn_abort(t);

	/* And after close/reopen with a larger map, writes go on. */
	kms_ks_close(ks);
	ks = open_ks(f, 0, 0);
	assert_int_equal(counts(ks).deposits, committed);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	key_id(kid, committed);
	mk_deposit(&d, committed);
	assert_int_equal(kms_ks_deposit_put(t, kid, &d, 0), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	kms_ks_close(ks);
}

/* ---- iteration and counts ---- */

struct aud_log {
	uint32_t tags[16];
	int n, stop_at;
};

static int audit_tags(const struct kms_audit *a, void *arg)
{
	struct aud_log *l = arg;

	assert_true(l->n < 16);
	l->tags[l->n++] = a->k_gen;
	return l->n == l->stop_at ? 42 : 0;
}

static void append(struct kms_ks *ks, uint64_t t_ms, uint32_t tag)
{
	struct kms_ks_txn *t;
	struct kms_audit a;

	mk_audit(&a, KMS_AUD_KEY_NEW, t_ms, tag);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
}

static void test_audit_order(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	struct aud_log l = { 0 };
	static const uint32_t want[] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	struct kms_audit a;
	int i;

	/* Commit order, whatever the records' clocks say; across txns and a
	 * reopen (the chain's order, kms_ks_audit_append). */
	append(ks, 2000, 1);
	append(ks, 1000, 2);
	append(ks, 2000, 3);
	append(ks, 1000, 4);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	mk_audit(&a, KMS_AUD_KEY_NEW, 2000, 5);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
	mk_audit(&a, KMS_AUD_KEY_NEW, 3000, 6);
	assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	kms_ks_close(ks);
	ks = open_ks(f, 0, 0);
	append(ks, 1000, 7);
	append(ks, 2000, 8);

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_audit_foreach(t, audit_tags, &l), KMS_OK);
	assert_int_equal(l.n, 8);
	for (i = 0; i < 8; i++)
		assert_int_equal(l.tags[i], want[i]);
	/* A non-zero callback result stops the walk and is returned. */
	memset(&l, 0, sizeof(l));
	l.stop_at = 3;
	assert_int_equal(kms_ks_audit_foreach(t, audit_tags, &l), 42);
	assert_int_equal(l.n, 3);
	assert_int_equal(kms_ks_txn_error(t), KMS_OK);
	kms_ks_txn_abort(t);
	assert_int_equal(counts(ks).audit, 8);
	kms_ks_close(ks);
}

struct party_log {
	char first[8];
	int n, stop_at;
};

static int party_seen(const struct kms_id *id, const struct kms_party *p,
		      void *arg)
{
	struct party_log *l = arg;

	assert_int_equal(id->len, 3);
	assert_int_equal(p->gen, (uint32_t)id->p[2]);
	if (l->n < 8)
		l->first[l->n] = (char)id->p[2];
	l->n++;
	return l->n == l->stop_at;
}

static void test_party_foreach(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	static const char *ids[] = { "idc", "ida", "ide", "idb", "idd" };
	struct party_log l = { { 0 }, 0, 0 };
	struct kms_party p;
	struct kms_id id;
	size_t i;

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_party_foreach(t, party_seen, &l), KMS_OK);
	assert_int_equal(l.n, 0);
	kms_ks_txn_abort(t);

	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	for (i = 0; i < 5; i++) {
		id.p = (const uint8_t *)ids[i];
		id.len = 3;
		mk_party(&p, (uint32_t)ids[i][2]);
		assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	}
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);

	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_party_foreach(t, party_seen, &l), KMS_OK);
	assert_int_equal(l.n, 5);
	assert_memory_equal(l.first, "abcde", 5);
	memset(&l, 0, sizeof(l));
	l.stop_at = 2;
	assert_int_equal(kms_ks_party_foreach(t, party_seen, &l), 1);
	assert_int_equal(l.n, 2);
	kms_ks_txn_abort(t);
	kms_ks_close(ks);
}

static void test_counts(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	char idbuf[KMS_ID_MAX];
	struct kms_id id;
	uint8_t hash[KMS_PAIR_HASH_LEN] = { 0 }, kid[KMS_KEY_ID_LEN];
	struct kms_party p;
	struct kms_pair pr;
	struct kms_deposit d;
	struct kms_audit a;
	struct kms_ks_counts c;
	uint32_t i;

	c = counts(ks);
	assert_int_equal(c.parties + c.pairs + c.deposits + c.audit + c.nonces,
			 0);
	mk_party(&p, 1);
	mk_pair(&pr);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	for (i = 0; i < 3; i++) {
		id = mk_id(idbuf, (char)i, 1 + i);
		assert_int_equal(kms_ks_party_put(t, &id, &p), KMS_OK);
	}
	for (i = 0; i < 5; i++) {
		hash[0] = (uint8_t)i;
		assert_int_equal(kms_ks_pair_put(t, hash, &pr), KMS_OK);
	}
	for (i = 0; i < 7; i++) {
		key_id(kid, i);
		mk_deposit(&d, i);
		assert_int_equal(kms_ks_deposit_put(t, kid, &d, 0), KMS_OK);
	}
	for (i = 0; i < 11; i++) {
		mk_audit(&a, KMS_AUD_KEY_REUSE, 500, i);
		assert_int_equal(kms_ks_audit_append(t, &a), KMS_OK);
	}
	for (i = 0; i < 13; i++) {
		uint8_t nonce[KMS_NONCE_LEN];

		fill_bytes(nonce, sizeof(nonce), (uint8_t)i);
		assert_int_equal(kms_ks_nonce_put(t, 1000 + i % 4, 3, nonce,
						  hash), KMS_OK);
	}
	/* Overwrites do not add entries. */
	assert_int_equal(kms_ks_pair_put(t, hash, &pr), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	c = counts(ks);
	assert_int_equal(c.parties, 3);
	assert_int_equal(c.pairs, 5);
	assert_int_equal(c.deposits, 7);
	assert_int_equal(c.audit, 11);
	assert_int_equal(c.nonces, 13);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_purge(t, 1002, 100), 7);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	c = counts(ks);
	assert_int_equal(c.nonces, 6);
	assert_int_equal(c.parties + c.pairs + c.deposits + c.audit, 26);
	assert_int_equal(kms_ks_counts(ks, NULL), KMS_ERR_INVAL);
	kms_ks_close(ks);
}

/* ---- read transactions kept across batches: reset / renew ---- */

static void test_txn_reset_renew(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *r, *w;
	char goodbuf[KMS_ID_MAX], badbuf[KMS_ID_MAX];
	struct kms_id good = mk_id(goodbuf, 'g', 4), bad = mk_id(badbuf, 'b', 4);
	uint8_t kid1[KMS_KEY_ID_LEN], kid2[KMS_KEY_ID_LEN];
	static const uint8_t garbage[] = "not a party";
	struct kms_deposit d, got;
	struct kms_party p;

	key_id(kid1, 1);
	key_id(kid2, 2);
	mk_deposit(&d, 1);
	mk_party(&p, 1);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &w), KMS_OK);
	assert_int_equal(kms_ks_deposit_put(w, kid1, &d, 0), KMS_OK);
	assert_int_equal(kms_ks_party_put(w, &good, &p), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(w), KMS_OK);

	assert_int_equal(kms_ks_txn_begin(ks, 1, &r), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(r, kid1, &got), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(r, kid2, &got), KMS_ERR_NOTFOUND);
	assert_int_equal(kms_ks_txn_reset(r), KMS_OK);

	/* Committed while the reader is reset: the renewed one sees it. */
	mk_deposit(&d, 2);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &w), KMS_OK);
	assert_int_equal(kms_ks_deposit_put(w, kid2, &d, 0), KMS_OK);
	/* reset / renew are for read transactions only; the writer goes on. */
	assert_int_equal(kms_ks_txn_reset(w), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_txn_renew(w), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_txn_error(w), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(w), KMS_OK);
	assert_int_equal(kms_ks_txn_renew(r), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(r, kid2, &got), KMS_OK);
	assert_deposit_eq(&d, &got);
	assert_int_equal(kms_ks_deposit_get(r, kid1, &got), KMS_OK);

	/* A renewed snapshot is a snapshot: a later commit is not seen. */
	assert_int_equal(kms_ks_txn_begin(ks, 0, &w), KMS_OK);
	assert_int_equal(kms_ks_deposit_put(w, kid2, &d, 1), KMS_OK);
	key_id(kid2, 3);
	assert_int_equal(kms_ks_deposit_put(w, kid2, &d, 0), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(w), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(r, kid2, &got), KMS_ERR_NOTFOUND);
	assert_int_equal(kms_ks_txn_reset(r), KMS_OK);
	assert_int_equal(kms_ks_txn_renew(r), KMS_OK);
	assert_int_equal(kms_ks_deposit_get(r, kid2, &got), KMS_OK);
	assert_int_equal(kms_ks_txn_reset(r), KMS_OK);
	kms_ks_txn_abort(r);	/* aborting a reset reader is allowed */

	/* Renew clears a sticky error. */
	kms_ks_close(ks);
	raw_put(f, "parties", bad.p, bad.len, garbage, sizeof(garbage));
	ks = open_ks(f, 0, 0);
	assert_int_equal(kms_ks_txn_begin(ks, 1, &r), KMS_OK);
	assert_int_equal(kms_ks_party_get(r, &bad, &p), KMS_ERR_CORRUPT);
	assert_int_equal(kms_ks_party_get(r, &good, &p), KMS_ERR_CORRUPT);
	assert_int_equal(kms_ks_txn_reset(r), KMS_OK);
	assert_int_equal(kms_ks_txn_renew(r), KMS_OK);
	assert_int_equal(kms_ks_txn_error(r), KMS_OK);
	assert_int_equal(kms_ks_party_get(r, &good, &p), KMS_OK);
	kms_ks_txn_abort(r);

	assert_int_equal(kms_ks_txn_reset(NULL), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_txn_renew(NULL), KMS_ERR_INVAL);
	kms_ks_close(ks);
}

/* ---- single-use nonces ---- */

#define NONCES_MAX 128

struct nonce_list {
	unsigned n, stop_after;
	struct kms_ks_nonce r[NONCES_MAX];
};

static int nonce_collect(uint64_t expire_ms, uint8_t role,
			 const uint8_t *nonce, const uint8_t *pair_prefix,
			 void *arg)
{
	struct nonce_list *l = arg;

	assert_true(l->n < NONCES_MAX);
	l->r[l->n].expire_ms = expire_ms;
	l->r[l->n].role = role;
	memcpy(l->r[l->n].nonce, nonce, KMS_NONCE_LEN);
	memcpy(l->r[l->n].pair_prefix, pair_prefix, 8);
	l->n++;
	return l->stop_after && l->n == l->stop_after ? 42 : 0;
}

static void mk_nonce(struct kms_ks_nonce *r, uint64_t exp, uint8_t role,
		     uint8_t seed)
{
	r->expire_ms = exp;
	r->role = role;
	fill_bytes(r->nonce, KMS_NONCE_LEN, seed);
	fill_bytes(r->pair_prefix, 8, (uint8_t)(seed + 100));
}

static struct nonce_list nonces_from(struct kms_ks *ks, uint64_t from)
{
	struct nonce_list l;
	struct kms_ks_txn *t;

	memset(&l, 0, sizeof(l));
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_foreach(t, from, nonce_collect, &l),
			 KMS_OK);
	kms_ks_txn_abort(t);
	return l;
}

/* kms_ks_nonce_put of one nonce given as put_many takes it. */
static int put_one(struct kms_ks_txn *t, const struct kms_ks_nonce *r)
{
	return kms_ks_nonce_put(t, r->expire_ms, r->role, r->nonce,
				r->pair_prefix);
}

static void assert_nonce_eq(const struct kms_ks_nonce *x,
			    const struct kms_ks_nonce *y)
{
	assert_int_equal(x->expire_ms, y->expire_ms);
	assert_int_equal(x->role, y->role);
	assert_memory_equal(x->nonce, y->nonce, KMS_NONCE_LEN);
	assert_memory_equal(x->pair_prefix, y->pair_prefix, 8);
}

/* Reading the store's nonces (and, with @p purge, purging them) fails
 * KMS_ERR_CORRUPT. */
static void assert_nonces_corrupt(struct fx *f, int purge)
{
	struct kms_ks *ks = open_ks(f, 0, 0);
	struct kms_ks_txn *t;
	struct nonce_list l;

	memset(&l, 0, sizeof(l));
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_foreach(t, 0, nonce_collect, &l),
			 KMS_ERR_CORRUPT);
	kms_ks_txn_abort(t);
	if (purge) {
		assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
		assert_int_equal(kms_ks_nonce_purge(t, UINT64_MAX, 10),
				 KMS_ERR_CORRUPT);
		kms_ks_txn_abort(t);
	}
	kms_ks_close(ks);
}

static void test_nonce_put_foreach(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	/* Written out of order; expiries differ in high and low bytes, and
	 * two share an expiry (then role, then nonce order them). */
	struct kms_ks_nonce in[6];
	static const unsigned order[6] = { 4, 1, 3, 2, 0, 5 };
	struct nonce_list l;

	mk_nonce(&in[0], 0x0100000000000500ULL, 4, 1);
	mk_nonce(&in[1], 0x00000000000001ffULL, 3, 2);
	mk_nonce(&in[2], 0x0000000100000000ULL, 4, 3);
	mk_nonce(&in[3], 0x0000000100000000ULL, 3, 4);
	mk_nonce(&in[4], 0x0000000000000200ULL - 0x101, 4, 5);
	mk_nonce(&in[5], UINT64_MAX, 3, 6);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(put_one(t, &in[i]), KMS_OK);
	/* The same (expiry, role, nonce) again is the same entry. */
	assert_int_equal(put_one(t, &in[2]), KMS_OK);
	assert_int_equal(kms_ks_nonce_put(t, 1, 3, NULL, in[0].pair_prefix),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_ks_nonce_put(t, 1, 3, in[0].nonce, NULL),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_ks_nonce_put(NULL, 1, 3, in[0].nonce,
					  in[0].pair_prefix), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_nonce_foreach(t, 0, NULL, NULL), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(counts(ks).nonces, 6);
	kms_ks_close(ks);
	ks = open_ks(f, 0, 0);	/* durable */

	/* From 0: all of them, by expiry. */
	l = nonces_from(ks, 0);
	assert_int_equal(l.n, 6);
	for (unsigned i = 0; i < 6; i++)
		assert_nonce_eq(&l.r[i], &in[order[i]]);
	/* From a time: the earlier ones are skipped, an equal one is not. */
	l = nonces_from(ks, 0x1ff);
	assert_int_equal(l.n, 5);
	assert_nonce_eq(&l.r[0], &in[1]);
	l = nonces_from(ks, 0x200);
	assert_int_equal(l.n, 4);
	assert_nonce_eq(&l.r[0], &in[3]);
	assert_nonce_eq(&l.r[1], &in[2]);
	l = nonces_from(ks, 0x0000000100000001ULL);
	assert_int_equal(l.n, 2);
	assert_nonce_eq(&l.r[0], &in[0]);
	l = nonces_from(ks, UINT64_MAX);
	assert_int_equal(l.n, 1);
	assert_nonce_eq(&l.r[0], &in[5]);

	/* A non-zero return stops the walk and is returned. */
	memset(&l, 0, sizeof(l));
	l.stop_after = 2;
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_foreach(t, 0, nonce_collect, &l), 42);
	assert_int_equal(l.n, 2);
	/* Read-only: no puts, no purges. */
	assert_int_equal(kms_ks_nonce_put(t, 1, 3, in[0].nonce,
					  in[0].pair_prefix), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_nonce_purge(t, UINT64_MAX, 100), KMS_ERR_INVAL);
	kms_ks_txn_abort(t);
	assert_int_equal(counts(ks).nonces, 6);

	/* An entry that is not a nonce key is corruption, not skipped. */
	kms_ks_close(ks);
	raw_put(f, "nonces", "short", 5, "12345678", 8);
	assert_nonces_corrupt(f, 1);
}

static void put_nonces(struct kms_ks *ks, uint64_t first, unsigned n)
{
	struct kms_ks_txn *t;
	struct kms_ks_nonce r;

	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	for (unsigned i = 0; i < n; i++) {
		mk_nonce(&r, first + i, 3, (uint8_t)i);
		assert_int_equal(put_one(t, &r), KMS_OK);
	}
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
}

static void test_nonce_purge(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	struct nonce_list l;

	put_nonces(ks, 100, 10);	/* expiring at 100..109 */
	assert_int_equal(counts(ks).nonces, 10);

	/* Aborted purges delete nothing. */
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_purge(t, 1000, 1000), 10);
	kms_ks_txn_abort(t);
	assert_int_equal(counts(ks).nonces, 10);

	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_purge(t, 105, 0), 0);
	assert_int_equal(kms_ks_nonce_purge(t, 100, 100), 0); /* 100 is live */
	assert_int_equal(kms_ks_nonce_purge(t, 105, 3), 3);   /* at most max */
	assert_int_equal(kms_ks_nonce_purge(t, 105, 100), 2); /* only expired */
	assert_int_equal(kms_ks_nonce_purge(t, 105, 100), 0);
	assert_int_equal(kms_ks_nonce_purge(NULL, 105, 100), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(counts(ks).nonces, 5);
	l = nonces_from(ks, 0);
	assert_int_equal(l.n, 5);
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(l.r[i].expire_ms, 105 + i);

	/* Purge and put in one transaction; an empty table purges to 0. */
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_purge(t, 108, 10), 3);
	assert_int_equal(kms_ks_nonce_put(t, 50, 3, l.r[0].nonce,
					  l.r[0].pair_prefix), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(counts(ks).nonces, 3);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_purge(t, UINT64_MAX, 100), 3);
	assert_int_equal(kms_ks_nonce_purge(t, UINT64_MAX, 100), 0);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(counts(ks).nonces, 0);
	kms_ks_close(ks);
}

/* kms_ks_nonce_put_many: 100 nonces in three packed records (44, 44, 12),
 * each entry read back with its own expiry, single records beside them,
 * a packed record purged once its latest entry has expired. */
static void test_nonce_packed(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	struct kms_ks_txn *t;
	struct kms_ks_nonce v[100];
	struct kms_ks_nonce one;
	struct nonce_list l;
	uint8_t key[20] = { 0 }, val[30] = { 0 };

	/* The first record's entries expire in falling order (1043 down to
	 * 1000): its key must carry the latest, not the last one put. */
	for (unsigned i = 0; i < 100; i++) {
		v[i].expire_ms = i < 44 ? 1043 - i : 1000 + i;
		v[i].role = (uint8_t)(3 + i % 2);
		fill_bytes(v[i].nonce, KMS_NONCE_LEN, (uint8_t)i);
		fill_bytes(v[i].pair_prefix, 8, (uint8_t)(i + 100));
	}
	mk_nonce(&one, 1050, 4, 200);
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_put_many(t, NULL, 1), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_nonce_put_many(NULL, v, 1), KMS_ERR_INVAL);
	assert_int_equal(kms_ks_nonce_put_many(t, v, 0), KMS_OK);
	assert_int_equal(kms_ks_nonce_put_many(t, v, 100), KMS_OK);
	assert_int_equal(put_one(t, &one), KMS_OK);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(counts(ks).nonces, 4);	/* records */
	kms_ks_close(ks);
	ks = open_ks(f, 0, 0);	/* durable */

	/* Key order (1043, the single 1050, 1087, 1099), entries as put. */
	l = nonces_from(ks, 0);
	assert_int_equal(l.n, 101);
	for (unsigned i = 0; i < 44; i++)
		assert_nonce_eq(&l.r[i], &v[i]);
	assert_nonce_eq(&l.r[44], &one);
	for (unsigned i = 44; i < 100; i++)
		assert_nonce_eq(&l.r[i + 1], &v[i]);
	/* From a time inside the first record: its older entries skipped. */
	l = nonces_from(ks, 1020);
	assert_int_equal(l.n, 24 + 1 + 56);
	assert_nonce_eq(&l.r[0], &v[0]);
	assert_nonce_eq(&l.r[23], &v[23]);
	assert_nonce_eq(&l.r[24], &one);
	/* Read-only: no puts. */
	assert_int_equal(kms_ks_txn_begin(ks, 1, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_put_many(t, v, 1), KMS_ERR_INVAL);
	kms_ks_txn_abort(t);

	/* Purge: a record goes whole, when its latest entry expired; max
	 * counts records, the result nonces. */
	assert_int_equal(kms_ks_txn_begin(ks, 0, &t), KMS_OK);
	assert_int_equal(kms_ks_nonce_purge(t, 1001, 100), 0);
	assert_int_equal(kms_ks_nonce_purge(t, 1043, 100), 0); /* 1043 live */
	assert_int_equal(kms_ks_nonce_purge(t, 1044, 100), 44);
	assert_int_equal(kms_ks_nonce_purge(t, 1100, 1), 1);   /* the single */
	assert_int_equal(kms_ks_nonce_purge(t, 1100, 1), 44);
	assert_int_equal(kms_ks_nonce_purge(t, 1100, 100), 12);
	assert_int_equal(kms_ks_nonce_purge(t, UINT64_MAX, 100), 0);
	assert_int_equal(kms_ks_txn_commit(t), KMS_OK);
	assert_int_equal(counts(ks).nonces, 0);
	kms_ks_close(ks);

	/* A packed record whose length is no whole number of entries, or
	 * whose entry expires after its key's latest expiry, is corruption. */
	put_be64(key, 5);
	raw_put(f, "nonces", key, sizeof(key), val, 30);
	assert_nonces_corrupt(f, 1);
	put_be64(val, 6);
	raw_put(f, "nonces", key, sizeof(key), val, 29);
	assert_nonces_corrupt(f, 0);
}

/* ---- threads: concurrent writers and audit seqs ---- */

#define THR_APPENDS 200

static void *appender(void *arg)
{
	struct kms_ks *ks = arg;
	struct kms_ks_txn *t;
	struct kms_audit a;
	int i, bad = 0;

	mk_audit(&a, KMS_AUD_KEY_RETRIEVE, 777, 0);
	for (i = 0; i < THR_APPENDS; i++) {
		if (kms_ks_txn_begin(ks, 0, &t) != KMS_OK ||
		    kms_ks_audit_append(t, &a) != KMS_OK ||
		    kms_ks_txn_commit(t) != KMS_OK)
			bad++;
	}
	return (void *)(intptr_t)bad;
}

static void test_threads(void **state)
{
	struct fx *f = *state;
	struct kms_ks *ks = open_ks(f, 0, 1);
	pthread_t th[2];
	void *res;
	int i;

	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, appender, ks), 0);
	for (i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(th[i], &res), 0);
		assert_int_equal((intptr_t)res, 0);
	}
	assert_int_equal(counts(ks).audit, 2 * THR_APPENDS);
	kms_ks_close(ks);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec),
		cmocka_unit_test_setup_teardown(test_open_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_format_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_format_upgrade, setup, teardown),
		cmocka_unit_test(test_id_ok),
		cmocka_unit_test_setup_teardown(test_meta, setup, teardown),
		cmocka_unit_test_setup_teardown(test_party_epoch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pairs_revoked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_audit, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_audit_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deposit_purge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_altered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_altered_last, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_reordered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notfound_not_sticky, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_invalid_args, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rdonly_put, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deposit_exists, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_commit_survives_reopen, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_read_snapshot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_party, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_foreach, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_sticky_mapfull, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_mapfull_keeps_committed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_audit_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_party_foreach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_txn_reset_renew, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_nonce_put_foreach, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_nonce_purge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nonce_packed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
