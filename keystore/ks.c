// SPDX-License-Identifier: Apache-2.0
/*
 * The keystore: one LMDB environment, five named databases, transactions
 * that carry a sticky error. Record layouts live in records.c.
 */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lmdb.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "kms_err.h"
#include "kms_keyfile.h"
#include "kms_log.h"
#include "ks_priv.h"

#define KS_MAXDBS 8
#define KS_DEFAULT_MAP ((size_t)1 << 30)
/* 2: audit records keyed by seq, hash-chained; 3: nonces may be packed
 * (kms_ks_nonce_put_many), which a format-2 reader would call corrupt. A
 * format-2 store is upgraded in place when opened (nothing to convert:
 * its single nonce records stay readable); a binary that knows only 2
 * then refuses it by its format, not by a "corrupt" nonce record. */
#define KS_FORMAT "3"
#define KS_FORMAT_OLD "2"

struct kms_ks {
	MDB_env *env;
	MDB_dbi meta, parties, pairs, deposits, audit, nonces;
	EVP_MD *sha256;  /* fetched once: a fetch per record cost as much as the hash */
};

struct kms_ks_txn {
	struct kms_ks *ks;
	MDB_txn *txn;
	int rdonly;
	int err;        /* sticky: KMS_ERR_MAPFULL, _STORE or _CORRUPT */
	/* The audit chain's head as this write txn moves it: loaded from
	 * "audit_head" at the first append, written back at commit. */
	int aud_loaded, aud_dirty;
	uint64_t aud_seq;
	uint8_t aud_hash[KMS_AUDIT_HASH_LEN];
	EVP_MD_CTX *md; /* chain hashes of this txn, made at the first */
	uint32_t nonce_packs; /* packed nonce records put by this txn */
};

static const char audit_head_key[] = "audit_head";
static const char party_epoch_key[] = "party_epoch"; /* u64 BE */
static const char pairs_revoked_key[] = "pairs_revoked"; /* u64 BE */

/* MDB_PANIC: the environment had a fatal error (a meta page could not be
 * written) and refuses every transaction until it is reopened. */
static int ks_panicked;
static void (*ks_panic_fn)(void);

static void panic_once(void)
{
	if (__atomic_exchange_n(&ks_panicked, 1, __ATOMIC_ACQ_REL))
		return;
	KMS_ERR("keystore: the LMDB environment had a fatal error (MDB_PANIC): "
		"no transaction works until it is reopened; what was committed "
		"before is intact");
	if (ks_panic_fn)
		ks_panic_fn();
}

void kms_ks_on_panic(void (*fn)(void))
{
	ks_panic_fn = fn;
}

int kms_ks_panicked(void)
{
	return __atomic_load_n(&ks_panicked, __ATOMIC_ACQUIRE);
}

/* Map an LMDB code; log the ones an operator must see. */
static int from_mdb(int rc, const char *what)
{
	if (rc == MDB_PANIC)
		panic_once();
	switch (rc) {
	case MDB_SUCCESS:
		return KMS_OK;
	case MDB_NOTFOUND:
		return KMS_ERR_NOTFOUND;
	case MDB_KEYEXIST:
		return KMS_ERR_EXISTS;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
		KMS_WARN_RL("keystore: %s: %s", what, mdb_strerror(rc));
		return KMS_ERR_MAPFULL;
	default:
		KMS_ERR_RL("keystore: %s: %s", what, mdb_strerror(rc));
		return KMS_ERR_STORE;
	}
}

/* Record a failure on the txn; NOTFOUND and EXISTS do not stick. */
static int txn_fail(struct kms_ks_txn *t, int err)
{
	if (err == KMS_ERR_MAPFULL || err == KMS_ERR_STORE ||
	    err == KMS_ERR_CORRUPT)
		t->err = err;
	return err;
}

static int txn_fail_mdb(struct kms_ks_txn *t, int rc, const char *what)
{
	return txn_fail(t, from_mdb(rc, what));
}

static int txn_corrupt(struct kms_ks_txn *t, const char *db)
{
	KMS_ERR_RL("keystore: corrupt record in \"%s\"", db);
	return txn_fail(t, KMS_ERR_CORRUPT);
}

/* Common entry check: the sticky error first, then the arguments. */
static int txn_check(const struct kms_ks_txn *t, int write)
{
	if (!t)
		return KMS_ERR_INVAL;
	if (t->err)
		return t->err;
	if (write && t->rdonly)
		return KMS_ERR_INVAL;
	return KMS_OK;
}

static int txn_get(struct kms_ks_txn *t, MDB_dbi dbi, const void *key,
		   size_t klen, MDB_val *val, const char *db)
{
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
	int rc;

	rc = mdb_get(t->txn, dbi, &k, val);
	if (rc == MDB_NOTFOUND)
		return KMS_ERR_NOTFOUND;
	if (rc)
		return txn_fail_mdb(t, rc, db);
	return KMS_OK;
}

static int txn_put(struct kms_ks_txn *t, MDB_dbi dbi, const void *key,
		   size_t klen, const void *val, size_t vlen, unsigned flags,
		   const char *db)
{
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
	MDB_val v = { .mv_size = vlen, .mv_data = (void *)val };
	int rc;

	rc = mdb_put(t->txn, dbi, &k, &v, flags);
	if (rc == MDB_KEYEXIST)
		return KMS_ERR_EXISTS;
	if (rc)
		return txn_fail_mdb(t, rc, db);
	return KMS_OK;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* NOTFOUND when there is no store and we may not create one. */
static int prepare_dir(const struct kms_ks_config *cfg)
{
	char file[PATH_MAX];
	struct stat st;
	int n;

	n = snprintf(file, sizeof(file), "%s/data.mdb", cfg->path);
	if (n < 0 || (size_t)n >= sizeof(file))
		return KMS_ERR_INVAL;
	if (stat(file, &st) == 0)
		return KMS_OK;
	if (errno != ENOENT && errno != ENOTDIR) {
		KMS_ERR("keystore: %s: %s", file, strerror(errno));
		return KMS_ERR_STORE;
	}
	if (!cfg->create)
		return KMS_ERR_NOTFOUND;
	if (mkdir(cfg->path, 0700) != 0 && errno != EEXIST) {
		KMS_ERR("keystore: mkdir %s: %s", cfg->path, strerror(errno));
		return KMS_ERR_IO;
	}
	return KMS_OK;
}

static int open_dbis(struct kms_ks *ks, MDB_txn *txn, int create)
{
	const struct {
		const char *name;
		MDB_dbi *dbi;
	} dbs[] = {
		{ "meta", &ks->meta },
		{ "parties", &ks->parties },
		{ "pairs", &ks->pairs },
		{ "deposits", &ks->deposits },
		{ "audit", &ks->audit },
		{ "nonces", &ks->nonces },
	};
	unsigned flags = create ? MDB_CREATE : 0;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		rc = mdb_dbi_open(txn, dbs[i].name, flags, dbs[i].dbi);
		if (rc == MDB_NOTFOUND) {
			KMS_ERR("keystore: no database \"%s\": not a KMS store",
				dbs[i].name);
			return KMS_ERR_CORRUPT;
		}
		if (rc)
			return from_mdb(rc, "open database");
	}
	return KMS_OK;
}

/* Check "format"; on a new store (and only with create) write it. */
static int check_format(struct kms_ks *ks, MDB_txn *txn, int create)
{
	static const char fmt_key[] = "format", created_key[] = "created_ms";
	MDB_val k = { .mv_size = sizeof(fmt_key) - 1,
		      .mv_data = (void *)fmt_key };
	MDB_val v;
	char created[24];
	int rc, n;

	rc = mdb_get(txn, ks->meta, &k, &v);
	if (rc == MDB_SUCCESS && v.mv_size == strlen(KS_FORMAT_OLD) &&
	    !memcmp(v.mv_data, KS_FORMAT_OLD, v.mv_size)) {
		v.mv_size = strlen(KS_FORMAT);
		v.mv_data = (void *)KS_FORMAT;
		rc = mdb_put(txn, ks->meta, &k, &v, 0);
		if (rc)
			return from_mdb(rc, "upgrade format");
		KMS_INFO("keystore: store format " KS_FORMAT_OLD " upgraded to "
			 KS_FORMAT " (packed nonce records)");
		return KMS_OK;
	}
	if (rc == MDB_SUCCESS) {
		if (v.mv_size != strlen(KS_FORMAT) ||
		    memcmp(v.mv_data, KS_FORMAT, v.mv_size) != 0) {
			KMS_ERR("keystore: unknown store format \"%.*s\"",
				(int)(v.mv_size > 16 ? 16 : v.mv_size),
				(const char *)v.mv_data);
			return KMS_ERR_CORRUPT;
		}
		return KMS_OK;
	}
	if (rc != MDB_NOTFOUND)
		return from_mdb(rc, "read format");
	if (!create) {
		KMS_ERR("keystore: no format record: not a KMS store");
		return KMS_ERR_CORRUPT;
	}
	v.mv_size = strlen(KS_FORMAT);
	v.mv_data = (void *)KS_FORMAT;
	rc = mdb_put(txn, ks->meta, &k, &v, 0);
	if (rc)
		return from_mdb(rc, "write format");
	n = snprintf(created, sizeof(created), "%llu",
		     (unsigned long long)now_ms());
	k.mv_size = sizeof(created_key) - 1;
	k.mv_data = (void *)created_key;
	v.mv_size = (size_t)n;
	v.mv_data = created;
	rc = mdb_put(txn, ks->meta, &k, &v, 0);
	return from_mdb(rc, "write created_ms");
}

/*
 * A store made before "pairs_revoked" existed may hold revoked pairs that
 * were never counted: count them once, at the first open that finds the
 * counter missing (a new store counts 0). Readers may then trust 0.
 */
static int count_revoked_pairs(struct kms_ks *ks, MDB_txn *txn)
{
	MDB_val k = { sizeof(pairs_revoked_key) - 1, (void *)pairs_revoked_key };
	MDB_val v;
	MDB_cursor *cur = NULL;
	uint64_t n = 0;
	uint8_t buf[8];
	struct kms_pair p;
	int rc;

	rc = mdb_get(txn, ks->meta, &k, &v);
	if (rc != MDB_NOTFOUND)
		return from_mdb(rc, "pairs revoked");
	rc = mdb_cursor_open(txn, ks->pairs, &cur);
	for (MDB_cursor_op op = MDB_FIRST; !rc; op = MDB_NEXT) {
		MDB_val pk;

		rc = mdb_cursor_get(cur, &pk, &v, op);
		if (rc)
			break;
		if (kms_ks_rec_pair_dec(v.mv_data, v.mv_size, &p)) {
			mdb_cursor_close(cur);
			return KMS_ERR_CORRUPT;
		}
		n += p.revoked != 0;
	}
	if (cur)
		mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return from_mdb(rc, "pairs revoked");
	put_be64(buf, n);
	v.mv_size = sizeof(buf);
	v.mv_data = buf;
	return from_mdb(mdb_put(txn, ks->meta, &k, &v, 0), "pairs revoked");
}

int kms_ks_open(const struct kms_ks_config *cfg, struct kms_ks **out)
{
	struct kms_ks *ks = NULL;
	MDB_txn *txn = NULL;
	size_t map = KS_DEFAULT_MAP;
	int rc, ret;

	if (!cfg || !cfg->path || !*cfg->path || !out)
		return KMS_ERR_INVAL;
	if (cfg->map_size)
		map = cfg->map_size;
	ret = prepare_dir(cfg);
	if (ret)
		goto out;
	ks = calloc(1, sizeof(*ks));
	if (!ks) {
		ret = KMS_ERR_NOMEM;
		goto out;
	}
	ks->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); /* NULL: SHA256() */
	rc = mdb_env_create(&ks->env);
	if (rc) {
		ret = from_mdb(rc, "env create");
		goto out;
	}
	rc = mdb_env_set_maxdbs(ks->env, KS_MAXDBS);
	if (!rc)
		rc = mdb_env_set_mapsize(ks->env, map);
	/* MDB_NOTLS only: no NOSYNC/NOMETASYNC/MAPASYNC, commits are durable. */
	if (!rc)
		rc = mdb_env_open(ks->env, cfg->path, MDB_NOTLS, 0600);
	if (rc) {
		ret = from_mdb(rc, cfg->path);
		goto out;
	}
	rc = mdb_txn_begin(ks->env, NULL, 0, &txn);
	if (rc) {
		ret = from_mdb(rc, "open txn");
		goto out;
	}
	ret = open_dbis(ks, txn, cfg->create);
	if (!ret)
		ret = check_format(ks, txn, cfg->create);
	if (!ret)
		ret = count_revoked_pairs(ks, txn);
	if (ret)
		goto out;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc) {
		ret = from_mdb(rc, "open commit");
		goto out;
	}
	*out = ks;
	ks = NULL;
out:
	if (txn)
		mdb_txn_abort(txn);
	if (ks) {
		if (ks->env)
			mdb_env_close(ks->env);
		EVP_MD_free(ks->sha256);
		free(ks);
	}
	return ret;
}

void kms_ks_close(struct kms_ks *ks)
{
	if (!ks)
		return;
	mdb_env_close(ks->env);
	EVP_MD_free(ks->sha256);
	free(ks);
}

/* Chain hash of record @p seq stored as @p rec, over a stack buffer with
 * the store's fetched SHA-256 and the txn's one digest context (made at
 * its first record: a batch of records allocates once). */
static void chain_hash(struct kms_ks_txn *t, uint64_t seq, const uint8_t *rec,
		       size_t len, uint8_t out[KMS_AUDIT_HASH_LEN])
{
	static const char tag[] = "kms-audit-v2";
	uint8_t buf[sizeof(tag) - 1 + 8 + KS_AUDIT_MAX];
	size_t n = sizeof(tag) - 1;

	if (len > KS_AUDIT_MAX) {
		memset(out, 0xff, KMS_AUDIT_HASH_LEN); /* breaks verify: seen */
		return;
	}
	memcpy(buf, tag, n);
	put_be64(buf + n, seq);
	memcpy(buf + n + 8, rec, len);
	n += 8 + len;
	if (!t->md && t->ks->sha256)
		t->md = EVP_MD_CTX_new();
	if (!t->md || EVP_DigestInit_ex(t->md, t->ks->sha256, NULL) != 1 ||
	    EVP_DigestUpdate(t->md, buf, n) != 1 ||
	    EVP_DigestFinal_ex(t->md, out, NULL) != 1)
		SHA256(buf, n, out); /* the same hash, the slow way */
}

/* "audit_head" = seq u64 BE | hash[32]. */
static int audit_head_get(struct kms_ks_txn *t, uint64_t *seq,
			  uint8_t hash[KMS_AUDIT_HASH_LEN])
{
	MDB_val k = { sizeof(audit_head_key) - 1, (void *)audit_head_key }, v;
	int rc = mdb_get(t->txn, t->ks->meta, &k, &v);

	if (rc == MDB_NOTFOUND)
		return KMS_ERR_NOTFOUND;
	if (rc)
		return txn_fail_mdb(t, rc, "audit head");
	if (v.mv_size != 8 + KMS_AUDIT_HASH_LEN)
		return txn_corrupt(t, "audit head");
	*seq = get_be64(v.mv_data);
	memcpy(hash, (const uint8_t *)v.mv_data + 8, KMS_AUDIT_HASH_LEN);
	return KMS_OK;
}

static void audit_head_put(struct kms_ks_txn *t)
{
	uint8_t buf[8 + KMS_AUDIT_HASH_LEN];

	put_be64(buf, t->aud_seq);
	memcpy(buf + 8, t->aud_hash, KMS_AUDIT_HASH_LEN);
	txn_put(t, t->ks->meta, audit_head_key, sizeof(audit_head_key) - 1, buf,
		sizeof(buf), 0, "audit head");
}

int kms_ks_txn_begin(struct kms_ks *ks, int rdonly, struct kms_ks_txn **out)
{
	struct kms_ks_txn *t;
	int rc, ret;

	if (!ks || !out)
		return KMS_ERR_INVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return KMS_ERR_NOMEM;
	t->ks = ks;
	t->rdonly = !!rdonly;
	rc = mdb_txn_begin(ks->env, NULL, rdonly ? MDB_RDONLY : 0, &t->txn);
	if (rc == MDB_READERS_FULL) {
		KMS_WARN("keystore: %s", mdb_strerror(rc));
		ret = KMS_ERR_BUSY;
		goto out;
	}
	if (rc) {
		ret = from_mdb(rc, "txn begin");
		if (ret == KMS_ERR_NOTFOUND || ret == KMS_ERR_EXISTS)
			ret = KMS_ERR_STORE;
		goto out;
	}
	*out = t;
	t = NULL;
	ret = KMS_OK;
out:
	free(t);
	return ret;
}

int kms_ks_txn_commit(struct kms_ks_txn *t)
{
	int rc, ret;

	if (!t)
		return KMS_ERR_INVAL;
	if (!t->err && t->aud_dirty)
		audit_head_put(t);
	if (t->err) {
		mdb_txn_abort(t->txn);
		ret = t->err;
		goto out;
	}
	rc = mdb_txn_commit(t->txn);
	ret = from_mdb(rc, "commit");
	if (ret == KMS_ERR_NOTFOUND || ret == KMS_ERR_EXISTS)
		ret = KMS_ERR_STORE;
out:
	EVP_MD_CTX_free(t->md);
	free(t);
	return ret;
}

void kms_ks_txn_abort(struct kms_ks_txn *t)
{
	if (!t)
		return;
	mdb_txn_abort(t->txn);
	EVP_MD_CTX_free(t->md);
	free(t);
}

int kms_ks_txn_error(const struct kms_ks_txn *t)
{
	return t ? t->err : KMS_ERR_INVAL;
}

static int id_ok(const struct kms_id *id)
{
	return id && id->p && kms_ks_rec_id_ok(id->p, id->len, 1);
}

int kms_ks_party_get(struct kms_ks_txn *t, const struct kms_id *id,
		     struct kms_party *out)
{
	MDB_val v;
	int ret;

	ret = txn_check(t, 0);
	if (ret)
		return ret;
	if (!id_ok(id) || !out)
		return KMS_ERR_INVAL;
	ret = txn_get(t, t->ks->parties, id->p, id->len, &v, "parties");
	if (ret)
		return ret;
	if (kms_ks_rec_party_dec(v.mv_data, v.mv_size, out))
		return txn_corrupt(t, "parties");
	return KMS_OK;
}

/* Read counter @p name of the meta DB in @p txn: 0 if absent. */
static int counter_get(struct kms_ks *ks, MDB_txn *txn, const char *name,
		       uint64_t *out)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc = mdb_get(txn, ks->meta, &k, &v);

	if (rc == MDB_NOTFOUND) {
		*out = 0;
		return KMS_OK;
	}
	if (rc)
		return from_mdb(rc, name);
	if (v.mv_size != 8)
		return KMS_ERR_CORRUPT;
	*out = get_be64(v.mv_data);
	return KMS_OK;
}

/* Add one to counter @p name in write txn @p txn. */
static int counter_bump(struct kms_ks *ks, MDB_txn *txn, const char *name)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	uint8_t buf[8];
	uint64_t e = 0;
	int rc = counter_get(ks, txn, name, &e);

	if (rc)
		return rc;
	put_be64(buf, e + 1);
	v.mv_size = sizeof(buf);
	v.mv_data = buf;
	return from_mdb(mdb_put(txn, ks->meta, &k, &v, 0), name);
}

static int epoch_bump(struct kms_ks *ks, MDB_txn *txn)
{
	return counter_bump(ks, txn, party_epoch_key);
}

/* A counter read for a kms_ks_txn: failures stick to it. */
static int txn_counter(struct kms_ks_txn *t, const char *name, uint64_t *out)
{
	int ret = txn_check(t, 0);

	if (ret)
		return ret;
	if (!out)
		return KMS_ERR_INVAL;
	ret = counter_get(t->ks, t->txn, name, out);
	if (ret == KMS_ERR_CORRUPT)
		return txn_corrupt(t, name);
	return ret ? txn_fail(t, ret) : KMS_OK;
}

int kms_ks_party_epoch(struct kms_ks_txn *t, uint64_t *out)
{
	return txn_counter(t, party_epoch_key, out);
}

int kms_ks_pairs_revoked(struct kms_ks_txn *t, uint64_t *out)
{
	return txn_counter(t, pairs_revoked_key, out);
}

int kms_ks_party_put(struct kms_ks_txn *t, const struct kms_id *id,
		     const struct kms_party *p)
{
	uint8_t rec[KS_PARTY_V2_LEN];
	int ret, n;

	ret = txn_check(t, 1);
	if (ret)
		return ret;
	if (!id_ok(id) || !p)
		return KMS_ERR_INVAL;
	n = kms_ks_rec_party_enc(p, rec);
	if (n < 0)
		return n;
	ret = txn_put(t, t->ks->parties, id->p, id->len, rec, (size_t)n, 0,
		      "parties");
	if (ret)
		return ret;
	/* Readers that keep party records by epoch see the change. */
	ret = epoch_bump(t->ks, t->txn);
	if (ret == KMS_ERR_CORRUPT)
		return txn_corrupt(t, "party epoch");
	return ret ? txn_fail(t, ret) : KMS_OK;
}

int kms_ks_pair_get(struct kms_ks_txn *t,
		    const uint8_t hash[KMS_PAIR_HASH_LEN], struct kms_pair *out)
{
	MDB_val v;
	int ret;

	ret = txn_check(t, 0);
	if (ret)
		return ret;
	if (!hash || !out)
		return KMS_ERR_INVAL;
	ret = txn_get(t, t->ks->pairs, hash, KMS_PAIR_HASH_LEN, &v, "pairs");
	if (ret)
		return ret;
	if (kms_ks_rec_pair_dec(v.mv_data, v.mv_size, out))
		return txn_corrupt(t, "pairs");
	return KMS_OK;
}

int kms_ks_pair_put(struct kms_ks_txn *t,
		    const uint8_t hash[KMS_PAIR_HASH_LEN],
		    const struct kms_pair *p)
{
	uint8_t rec[KS_PAIR_V2_LEN];
	int ret, n;

	ret = txn_check(t, 1);
	if (ret)
		return ret;
	if (!hash || !p)
		return KMS_ERR_INVAL;
	n = kms_ks_rec_pair_enc(p, rec);
	if (n < 0)
		return n;
	ret = txn_put(t, t->ks->pairs, hash, KMS_PAIR_HASH_LEN, rec,
		      (size_t)n, 0, "pairs");
	/* Readers skip the pair lookup of a RETRIEVE while none is revoked
	 * (kms_ks_pairs_revoked): count every revoked record written. */
	if (!ret && p->revoked) {
		ret = counter_bump(t->ks, t->txn, pairs_revoked_key);
		if (ret == KMS_ERR_CORRUPT)
			return txn_corrupt(t, "pairs revoked");
		if (ret)
			return txn_fail(t, ret);
	}
	return ret;
}

int kms_ks_deposit_get(struct kms_ks_txn *t,
		       const uint8_t key_id[KMS_KEY_ID_LEN],
		       struct kms_deposit *out)
{
	MDB_val v;
	int ret;

	ret = txn_check(t, 0);
	if (ret)
		return ret;
	if (!key_id || !out)
		return KMS_ERR_INVAL;
	ret = txn_get(t, t->ks->deposits, key_id, KMS_KEY_ID_LEN, &v,
		      "deposits");
	if (ret)
		return ret;
	if (kms_ks_rec_deposit_dec(v.mv_data, v.mv_size, out))
		return txn_corrupt(t, "deposits");
	return KMS_OK;
}

int kms_ks_deposit_put(struct kms_ks_txn *t,
		       const uint8_t key_id[KMS_KEY_ID_LEN],
		       const struct kms_deposit *d, int overwrite)
{
	uint8_t rec[KS_DEPOSIT_MAX];
	int ret, n;

	ret = txn_check(t, 1);
	if (ret)
		return ret;
	if (!key_id || !d)
		return KMS_ERR_INVAL;
	n = kms_ks_rec_deposit_enc(d, rec);
	if (n < 0)
		return n;
	/* Ids are time-ordered, so these land on the rightmost leaf; still a
	 * plain put: MDB_APPEND would fail on any id out of order. */
	return txn_put(t, t->ks->deposits, key_id, KMS_KEY_ID_LEN, rec,
		       (size_t)n, overwrite ? 0 : MDB_NOOVERWRITE, "deposits");
}

int kms_ks_audit_append(struct kms_ks_txn *t, const struct kms_audit *a)
{
	uint8_t key[KS_AUDIT_KEY_LEN], rec[KS_AUDIT_MAX];
	int ret, n;

	ret = txn_check(t, 1);
	if (ret)
		return ret;
	if (!a)
		return KMS_ERR_INVAL;
	if (!t->aud_loaded) {
		ret = audit_head_get(t, &t->aud_seq, t->aud_hash);
		if (ret == KMS_ERR_NOTFOUND) {
			t->aud_seq = 0;
			memset(t->aud_hash, 0, sizeof(t->aud_hash));
		} else if (ret) {
			return ret;
		}
		t->aud_loaded = 1;
	}
	n = kms_ks_rec_audit_enc(a, t->aud_hash, rec);
	if (n < 0)
		return n;
	put_be64(key, t->aud_seq + 1);
	/* The chain's seq is the store's largest key: an append. */
	ret = txn_put(t, t->ks->audit, key, sizeof(key), rec, (size_t)n,
		      MDB_APPEND, "audit");
	if (ret)
		return ret;
	t->aud_seq++;
	chain_hash(t, t->aud_seq, rec, (size_t)n, t->aud_hash);
	t->aud_dirty = 1;
	return KMS_OK;
}

int kms_ks_party_foreach(struct kms_ks_txn *t,
			 int (*fn)(const struct kms_id *id,
				   const struct kms_party *p, void *arg),
			 void *arg)
{
	MDB_cursor *cur = NULL;
	MDB_cursor_op op;
	MDB_val k, v;
	struct kms_party p;
	struct kms_id id;
	int rc, ret;

	ret = txn_check(t, 0);
	if (ret)
		return ret;
	if (!fn)
		return KMS_ERR_INVAL;
	rc = mdb_cursor_open(t->txn, t->ks->parties, &cur);
	if (rc) {
		ret = txn_fail_mdb(t, rc, "parties cursor");
		goto out;
	}
	for (op = MDB_FIRST;; op = MDB_NEXT) {
		rc = mdb_cursor_get(cur, &k, &v, op);
		if (rc == MDB_NOTFOUND) {
			ret = KMS_OK;
			break;
		}
		if (rc) {
			ret = txn_fail_mdb(t, rc, "parties");
			break;
		}
		if (!kms_ks_rec_id_ok(k.mv_data, k.mv_size, 1) ||
		    kms_ks_rec_party_dec(v.mv_data, v.mv_size, &p)) {
			ret = txn_corrupt(t, "parties");
			break;
		}
		id.p = k.mv_data;
		id.len = (uint8_t)k.mv_size;
		ret = fn(&id, &p, arg);
		if (ret)
			break;
	}
out:
	if (cur)
		mdb_cursor_close(cur);
	return ret;
}

int kms_ks_audit_foreach(struct kms_ks_txn *t,
			 int (*fn)(const struct kms_audit *a, void *arg),
			 void *arg)
{
	MDB_cursor *cur = NULL;
	MDB_cursor_op op;
	MDB_val k, v;
	struct kms_audit a;
	uint8_t prev[KMS_AUDIT_HASH_LEN];
	int rc, ret;

	ret = txn_check(t, 0);
	if (ret)
		return ret;
	if (!fn)
		return KMS_ERR_INVAL;
	rc = mdb_cursor_open(t->txn, t->ks->audit, &cur);
	if (rc) {
		ret = txn_fail_mdb(t, rc, "audit cursor");
		goto out;
	}
	for (op = MDB_FIRST;; op = MDB_NEXT) {
		rc = mdb_cursor_get(cur, &k, &v, op);
		if (rc == MDB_NOTFOUND) {
			ret = KMS_OK;
			break;
		}
		if (rc) {
			ret = txn_fail_mdb(t, rc, "audit");
			break;
		}
		if (k.mv_size != KS_AUDIT_KEY_LEN ||
		    kms_ks_rec_audit_dec(v.mv_data, v.mv_size, &a, prev)) {
			ret = txn_corrupt(t, "audit");
			break;
		}
		a.seq = get_be64(k.mv_data);
		chain_hash(t, a.seq, v.mv_data, v.mv_size, a.hash);
		ret = fn(&a, arg);
		if (ret)
			break;
	}
out:
	if (cur)
		mdb_cursor_close(cur);
	return ret;
}

int kms_ks_audit_verify(struct kms_ks_txn *t, struct kms_audit_check *out)
{
	uint8_t hash[KMS_AUDIT_HASH_LEN] = { 0 }, prev[KMS_AUDIT_HASH_LEN];
	uint8_t head_hash[KMS_AUDIT_HASH_LEN];
	uint64_t head_seq = 0, n = 0;
	MDB_cursor *cur = NULL;
	MDB_cursor_op op;
	struct kms_audit a;
	MDB_val k, v;
	int rc, ret;

	ret = txn_check(t, 0);
	if (ret)
		return ret;
	if (!out)
		return KMS_ERR_INVAL;
	memset(out, 0, sizeof(*out));
	rc = mdb_get(t->txn, t->ks->meta,
		     &(MDB_val){ sizeof(audit_head_key) - 1, (void *)audit_head_key }, &v);
	if (rc == MDB_SUCCESS && v.mv_size == 8 + KMS_AUDIT_HASH_LEN) {
		head_seq = get_be64(v.mv_data);
		memcpy(head_hash, (const uint8_t *)v.mv_data + 8, sizeof(head_hash));
	} else if (rc == MDB_SUCCESS) {
		out->reason = "the chain head record is malformed";
		return KMS_ERR_CORRUPT;
	} else if (rc != MDB_NOTFOUND) {
		return txn_fail_mdb(t, rc, "audit head");
	} else {
		memset(head_hash, 0, sizeof(head_hash));
	}
	rc = mdb_cursor_open(t->txn, t->ks->audit, &cur);
	if (rc)
		return txn_fail_mdb(t, rc, "audit cursor");
	for (op = MDB_FIRST;; op = MDB_NEXT) {
		rc = mdb_cursor_get(cur, &k, &v, op);
		if (rc == MDB_NOTFOUND)
			break;
		if (rc) {
			ret = txn_fail_mdb(t, rc, "audit");
			goto out;
		}
		n++;
		out->records = n;
		if (k.mv_size != KS_AUDIT_KEY_LEN || get_be64(k.mv_data) != n) {
			out->bad_seq = n;
			out->reason = "a record is missing or out of place "
				      "(sequence numbers are not 1, 2, 3...)";
			break;
		}
		if (kms_ks_rec_audit_dec(v.mv_data, v.mv_size, &a, prev)) {
			out->bad_seq = n;
			out->reason = "a record does not decode";
			break;
		}
		if (memcmp(prev, hash, sizeof(hash))) {
			out->bad_seq = n;
			out->reason = "the previous record is not the one this "
				      "record was chained to (altered, removed or "
				      "reordered)";
			break;
		}
		chain_hash(t, n, v.mv_data, v.mv_size, hash);
	}
	if (!out->reason && (n != head_seq || memcmp(hash, head_hash, sizeof(hash)))) {
		out->bad_seq = n < head_seq ? n + 1 : n;
		out->reason = n < head_seq ? "records are missing at the end "
					     "(truncated after the last one found)"
					   : "the last record is not the chain head "
					     "(altered or appended outside the chain)";
	}
	ret = out->reason ? KMS_ERR_CORRUPT : KMS_OK;
out:
	mdb_cursor_close(cur);
	return ret;
}

/* Meta names are keys: 1..mdb_env_get_maxkeysize() bytes. */
static int meta_name_ok(const struct kms_ks_txn *t, const char *name)
{
	size_t n;

	if (!name)
		return 0;
	n = strlen(name);
	return n > 0 && n <= (size_t)mdb_env_get_maxkeysize(t->ks->env);
}

int kms_ks_meta_get(struct kms_ks_txn *t, const char *name, char *out,
		    size_t cap)
{
	MDB_val v;
	int ret;

	ret = txn_check(t, 0);
	if (ret)
		return ret;
	if (!meta_name_ok(t, name) || !out)
		return KMS_ERR_INVAL;
	ret = txn_get(t, t->ks->meta, name, strlen(name), &v, "meta");
	if (ret)
		return ret;
	if (memchr(v.mv_data, '\0', v.mv_size))
		return txn_corrupt(t, "meta");
	if (v.mv_size >= cap)
		return KMS_ERR_SPACE;
	memcpy(out, v.mv_data, v.mv_size);
	out[v.mv_size] = '\0';
	return KMS_OK;
}

int kms_ks_meta_put(struct kms_ks_txn *t, const char *name, const char *value)
{
	int ret;

	ret = txn_check(t, 1);
	if (ret)
		return ret;
	if (!meta_name_ok(t, name) || !value)
		return KMS_ERR_INVAL;
	return txn_put(t, t->ks->meta, name, strlen(name), value,
		       strlen(value), 0, "meta");
}

int kms_ks_counts(struct kms_ks *ks, struct kms_ks_counts *out)
{
	MDB_txn *txn = NULL;
	MDB_stat st[5];
	MDB_dbi dbi[5];
	size_t i;
	int rc, ret;

	if (!ks || !out)
		return KMS_ERR_INVAL;
	dbi[0] = ks->parties;
	dbi[1] = ks->pairs;
	dbi[2] = ks->deposits;
	dbi[3] = ks->audit;
	dbi[4] = ks->nonces;
	rc = mdb_txn_begin(ks->env, NULL, MDB_RDONLY, &txn);
	if (rc) {
		ret = rc == MDB_READERS_FULL ? KMS_ERR_BUSY :
					       from_mdb(rc, "counts txn");
		goto out;
	}
	for (i = 0; i < 5; i++) {
		rc = mdb_stat(txn, dbi[i], &st[i]);
		if (rc) {
			ret = from_mdb(rc, "stat");
			goto out;
		}
	}
	out->parties = st[0].ms_entries;
	out->pairs = st[1].ms_entries;
	out->deposits = st[2].ms_entries;
	out->audit = st[3].ms_entries;
	out->nonces = st[4].ms_entries;
	ret = KMS_OK;
out:
	if (txn)
		mdb_txn_abort(txn);
	return ret;
}

/* ---- read transactions kept by their owner: reset / renew ---- */

int kms_ks_txn_reset(struct kms_ks_txn *t)
{
	if (!t || !t->rdonly)
		return KMS_ERR_INVAL;
	mdb_txn_reset(t->txn);
	return KMS_OK;
}

int kms_ks_txn_renew(struct kms_ks_txn *t)
{
	int rc;

	if (!t || !t->rdonly)
		return KMS_ERR_INVAL;
	rc = mdb_txn_renew(t->txn);
	if (rc)
		return txn_fail_mdb(t, rc, "txn renew");
	t->err = KMS_OK;
	return KMS_OK;
}

/* ---- single-use nonces ---- */

/* expire_ms | role | nonce | pair prefix: the pair is part of the key, so
 * the same nonce used for two pairs (a broken client RNG) stays two
 * entries, each reloaded by the worker that owns its pair. */
#define NONCE_KEY_LEN (8 + 1 + KMS_NONCE_LEN + 8)
#define NONCE_VAL_LEN 8
/* A packed record (kms_ks_nonce_put_many): key = the latest expiry of its
 * entries u64 BE | LMDB txn id u64 BE | the txn's pack count u32 BE; value
 * = 1..KMS_KS_NONCE_PACK entries laid out like a single record's key. A
 * key length of its own tells the two apart. 44 entries (1,276 B) keep
 * three records to a 4 KiB leaf page. */
#define NONCE_ENT_LEN NONCE_KEY_LEN
#define NONCE_PACK_KEY_LEN (8 + 8 + 4)

int kms_ks_nonce_put(struct kms_ks_txn *t, uint64_t expire_ms, uint8_t role,
		     const uint8_t nonce[KMS_NONCE_LEN],
		     const uint8_t pair_prefix[8])
{
	uint8_t key[NONCE_KEY_LEN];
	int ret = txn_check(t, 1);

	if (ret)
		return ret;
	if (!nonce || !pair_prefix)
		return KMS_ERR_INVAL;
	/* Expiry first: entries arrive roughly in time order and append. */
	put_be64(key, expire_ms);
	key[8] = role;
	memcpy(key + 9, nonce, KMS_NONCE_LEN);
	memcpy(key + 9 + KMS_NONCE_LEN, pair_prefix, 8);
	return txn_put(t, t->ks->nonces, key, sizeof(key), pair_prefix,
		       NONCE_VAL_LEN, 0, "nonces");
}

/* Entries in a packed record's value: 1..KMS_KS_NONCE_PACK whole ones, or
 * 0 when its length is no such number. */
static size_t pack_entries(const MDB_val *v)
{
	size_t n = v->mv_size / NONCE_ENT_LEN;

	return n && n <= KMS_KS_NONCE_PACK && !(v->mv_size % NONCE_ENT_LEN) ? n : 0;
}

/* The entries of one packed record; @return 0, fn's non-zero value, or
 * KMS_ERR_CORRUPT (a length that is no whole number of entries, or an
 * entry expiring after the latest expiry its key gives). */
static int pack_foreach(struct kms_ks_txn *t, const MDB_val *k,
			const MDB_val *v, uint64_t from_ms,
			int (*fn)(uint64_t expire_ms, uint8_t role,
				  const uint8_t *nonce,
				  const uint8_t *pair_prefix, void *arg),
			void *arg)
{
	uint64_t emax = get_be64(k->mv_data);
	size_t n = pack_entries(v);

	if (!n)
		return txn_corrupt(t, "nonces");
	for (size_t j = 0; j < n; j++) {
		const uint8_t *e = (const uint8_t *)v->mv_data + j * NONCE_ENT_LEN;
		uint64_t exp = get_be64(e);
		int ret;

		if (exp > emax)
			return txn_corrupt(t, "nonces");
		if (exp < from_ms)
			continue;
		ret = fn(exp, e[8], e + 9, e + 9 + KMS_NONCE_LEN, arg);
		if (ret)
			return ret;
	}
	return 0;
}

int kms_ks_nonce_put_many(struct kms_ks_txn *t, const struct kms_ks_nonce *v,
			  unsigned n)
{
	int ret = txn_check(t, 1);

	if (ret)
		return ret;
	if (!v && n)
		return KMS_ERR_INVAL;
	for (unsigned i = 0; i < n; i += KMS_KS_NONCE_PACK) {
		unsigned m = n - i < KMS_KS_NONCE_PACK ? n - i : KMS_KS_NONCE_PACK;
		uint8_t key[NONCE_PACK_KEY_LEN];
		uint8_t val[KMS_KS_NONCE_PACK * NONCE_ENT_LEN];
		MDB_val k = { .mv_size = sizeof(key), .mv_data = key };
		MDB_val d = { .mv_size = (size_t)m * NONCE_ENT_LEN,
			      .mv_data = val };
		uint64_t emax = 0;
		int rc = MDB_KEYEXIST;

		for (unsigned j = 0; j < m; j++) {
			const struct kms_ks_nonce *e = &v[i + j];
			uint8_t *w = val + (size_t)j * NONCE_ENT_LEN;

			put_be64(w, e->expire_ms);
			w[8] = e->role;
			memcpy(w + 9, e->nonce, KMS_NONCE_LEN);
			memcpy(w + 9 + KMS_NONCE_LEN, e->pair_prefix, 8);
			if (e->expire_ms > emax)
				emax = e->expire_ms;
		}
		put_be64(key, emax);
		put_be64(key + 8, (uint64_t)mdb_txn_id(t->txn));
		/* Keys are unique (the txn id), so a collision can only be a
		 * store copied back over a newer one: take the next count. An
		 * append where the key is the largest (pages stay full), a
		 * plain put otherwise. */
		for (unsigned tries = 0; rc == MDB_KEYEXIST && tries < 8; tries++) {
			put_be32(key + 16, t->nonce_packs++);
			rc = mdb_put(t->txn, t->ks->nonces, &k, &d, MDB_APPEND);
			if (rc == MDB_KEYEXIST)
				rc = mdb_put(t->txn, t->ks->nonces, &k, &d,
					     MDB_NOOVERWRITE);
		}
		if (rc == MDB_KEYEXIST)
			return txn_corrupt(t, "nonces");
		if (rc)
			return txn_fail_mdb(t, rc, "nonces");
	}
	return KMS_OK;
}

int kms_ks_nonce_foreach(struct kms_ks_txn *t, uint64_t from_ms,
			 int (*fn)(uint64_t expire_ms, uint8_t role,
				   const uint8_t *nonce,
				   const uint8_t *pair_prefix, void *arg),
			 void *arg)
{
	MDB_cursor *cur = NULL;
	uint8_t start[8];
	MDB_val k = { .mv_size = sizeof(start), .mv_data = start }, v;
	MDB_cursor_op op = MDB_SET_RANGE;
	int rc, ret = txn_check(t, 0);

	if (ret)
		return ret;
	if (!fn)
		return KMS_ERR_INVAL;
	put_be64(start, from_ms);
	rc = mdb_cursor_open(t->txn, t->ks->nonces, &cur);
	if (rc)
		return txn_fail_mdb(t, rc, "nonces cursor");
	for (;; op = MDB_NEXT) {
		rc = mdb_cursor_get(cur, &k, &v, op);
		if (rc == MDB_NOTFOUND) {
			ret = KMS_OK;
			break;
		}
		if (rc) {
			ret = txn_fail_mdb(t, rc, "nonces");
			break;
		}
		if (k.mv_size == NONCE_PACK_KEY_LEN) {
			ret = pack_foreach(t, &k, &v, from_ms, fn, arg);
			if (ret)
				break;
			continue;
		}
		if (k.mv_size != NONCE_KEY_LEN || v.mv_size != NONCE_VAL_LEN ||
		    memcmp((uint8_t *)k.mv_data + 9 + KMS_NONCE_LEN, v.mv_data,
			   NONCE_VAL_LEN)) {
			ret = txn_corrupt(t, "nonces");
			break;
		}
		ret = fn(get_be64(k.mv_data), ((uint8_t *)k.mv_data)[8],
			 (uint8_t *)k.mv_data + 9, v.mv_data, arg);
		if (ret)
			break;
	}
	mdb_cursor_close(cur);
	return ret;
}

int kms_ks_deposit_purge(struct kms_ks_txn *t, uint64_t now_ms,
			 const uint8_t *from, unsigned max_scan,
			 uint8_t next[KMS_KEY_ID_LEN], int *more)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	struct kms_deposit d;
	unsigned scanned = 0;
	int rc, n = 0, ret = txn_check(t, 1);

	if (ret)
		return ret;
	if (!next || !more)
		return KMS_ERR_INVAL;
	*more = 0;
	rc = mdb_cursor_open(t->txn, t->ks->deposits, &cur);
	if (rc)
		return txn_fail_mdb(t, rc, "deposits cursor");
	if (from) {
		k.mv_size = KMS_KEY_ID_LEN;
		k.mv_data = (void *)from;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	} else {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	}
	while (rc == MDB_SUCCESS) {
		if (scanned == max_scan) {
			/* Resume here next time. */
			memcpy(next, k.mv_data, KMS_KEY_ID_LEN);
			*more = 1;
			break;
		}
		scanned++;
		if (k.mv_size != KMS_KEY_ID_LEN ||
		    kms_ks_rec_deposit_dec(v.mv_data, v.mv_size, &d)) {
			ret = txn_corrupt(t, "deposits");
			break;
		}
		if (d.expiry_ms <= now_ms) {
			uint8_t gone[KMS_KEY_ID_LEN];

			memcpy(gone, k.mv_data, sizeof(gone));
			rc = mdb_cursor_del(cur, 0);
			if (rc) {
				ret = txn_fail_mdb(t, rc, "deposits purge");
				break;
			}
			n++;
			/* The first key after the deleted one. */
			k.mv_size = sizeof(gone);
			k.mv_data = gone;
			rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
			continue;
		}
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	if (!ret && rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		ret = txn_fail_mdb(t, rc, "deposits");
	mdb_cursor_close(cur);
	return ret ? ret : n;
}

int kms_ks_nonce_purge(struct kms_ks_txn *t, uint64_t now_ms, unsigned max)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	unsigned recs = 0;
	int rc, n = 0, ret = txn_check(t, 1);

	if (ret)
		return ret;
	rc = mdb_cursor_open(t->txn, t->ks->nonces, &cur);
	if (rc)
		return txn_fail_mdb(t, rc, "nonces cursor");
	/* The oldest entries come first: delete from the front. A packed
	 * record goes when its latest entry has expired. */
	while (recs < max) {
		unsigned ents = 1;

		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		if (rc == MDB_NOTFOUND)
			break;
		if (rc) {
			ret = txn_fail_mdb(t, rc, "nonces");
			break;
		}
		if (k.mv_size == NONCE_PACK_KEY_LEN && pack_entries(&v)) {
			ents = (unsigned)pack_entries(&v);
		} else if (k.mv_size != NONCE_KEY_LEN) {
			ret = txn_corrupt(t, "nonces");
			break;
		}
		if (get_be64(k.mv_data) >= now_ms)
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc) {
			ret = txn_fail_mdb(t, rc, "nonces purge");
			break;
		}
		recs++;
		n += (int)ents;
	}
	mdb_cursor_close(cur);
	return ret ? ret : n;
}

/* ---- KEK rotation: every wrapped blob, in bounded steps ---- */

enum { RW_PARTIES, RW_PAIRS, RW_DEPOSITS, RW_META, RW_DONE };

/* Re-wrap the blobs of one decoded record; re-encode it into @p rec.
 * @return the new length, 0 if nothing changed, or a negative error. */
static int rewrap_record(unsigned table, const MDB_val *v, uint8_t *rec,
			 kms_ks_rewrap_fn fn, void *arg, unsigned *changed)
{
	uint8_t *blobs[2];
	unsigned nb = 0, ch = 0;
	struct kms_party pa;
	struct kms_pair pr;
	struct kms_deposit d;
	int rc, n;

	switch (table) {
	case RW_PARTIES:
		if (kms_ks_rec_party_dec(v->mv_data, v->mv_size, &pa))
			return KMS_ERR_CORRUPT;
		blobs[nb++] = pa.blob;
		if (pa.prev_gen)
			blobs[nb++] = pa.prev_blob;
		break;
	case RW_PAIRS:
		if (kms_ks_rec_pair_dec(v->mv_data, v->mv_size, &pr))
			return KMS_ERR_CORRUPT;
		blobs[nb++] = pr.blob;
		break;
	default:
		if (kms_ks_rec_deposit_dec(v->mv_data, v->mv_size, &d))
			return KMS_ERR_CORRUPT;
		blobs[nb++] = d.blob;
		break;
	}
	for (unsigned i = 0; i < nb; i++) {
		uint8_t out[KMS_HSM_BLOB_LEN];

		rc = fn(arg, blobs[i], out);
		if (rc == KMS_ERR_EXISTS)
			continue; /* already under the new KEK */
		if (rc)
			return rc;
		memcpy(blobs[i], out, sizeof(out));
		ch++;
	}
	if (!ch)
		return 0;
	n = table == RW_PARTIES ? kms_ks_rec_party_enc(&pa, rec) :
	    table == RW_PAIRS ? kms_ks_rec_pair_enc(&pr, rec) :
				kms_ks_rec_deposit_enc(&d, rec);
	*changed += ch;
	return n;
}

/* The IBE master seed (meta "ibe_seed", hex of a blob), if any. */
static int rewrap_meta(struct kms_ks *ks, MDB_txn *txn, kms_ks_rewrap_fn fn,
		       void *arg, unsigned *visited, unsigned *changed)
{
	static const char name[] = "ibe_seed";
	MDB_val k = { .mv_size = sizeof(name) - 1, .mv_data = (void *)name }, v;
	uint8_t blob[KMS_HSM_BLOB_LEN], out[KMS_HSM_BLOB_LEN];
	char hex[2 * KMS_HSM_BLOB_LEN + 1];
	int rc;

	rc = mdb_get(txn, ks->meta, &k, &v);
	if (rc == MDB_NOTFOUND)
		return KMS_OK;
	if (rc)
		return from_mdb(rc, "rewrap meta");
	if (v.mv_size != 2 * KMS_HSM_BLOB_LEN)
		return KMS_ERR_CORRUPT;
	memcpy(hex, v.mv_data, v.mv_size);
	hex[v.mv_size] = 0;
	if (kms_hex_decode(hex, blob, sizeof(blob)) != KMS_HSM_BLOB_LEN)
		return KMS_ERR_CORRUPT;
	(*visited)++;
	rc = fn(arg, blob, out);
	if (rc == KMS_ERR_EXISTS)
		return KMS_OK;
	if (rc)
		return rc;
	kms_hex_encode(out, sizeof(out), hex);
	v.mv_size = 2 * KMS_HSM_BLOB_LEN;
	v.mv_data = hex;
	(*changed)++;
	return from_mdb(mdb_put(txn, ks->meta, &k, &v, 0), "rewrap meta");
}

int kms_ks_rewrap_step(struct kms_ks *ks, struct kms_ks_rewrap *cur,
		       unsigned max, kms_ks_rewrap_fn fn, void *arg,
		       unsigned *visited, unsigned *changed)
{
	MDB_dbi dbis[] = { ks->parties, ks->pairs, ks->deposits };
	uint8_t rec[KS_DEPOSIT_MAX + KS_PARTY_V2_LEN];
	MDB_txn *txn = NULL;
	MDB_cursor *c = NULL;
	MDB_val k, v;
	unsigned n = 0, table;
	int rc, ret = KMS_OK;

	*visited = *changed = 0;
	if (cur->table >= RW_DONE)
		return KMS_OK;
	rc = mdb_txn_begin(ks->env, NULL, 0, &txn);
	if (rc)
		return from_mdb(rc, "rewrap begin");
	if (cur->table == RW_META) {
		ret = rewrap_meta(ks, txn, fn, arg, visited, changed);
		if (!ret)
			cur->table = RW_DONE;
		goto end;
	}
	table = cur->table;
	rc = mdb_cursor_open(txn, dbis[table], &c);
	if (rc) {
		ret = from_mdb(rc, "rewrap cursor");
		goto end;
	}
	k.mv_size = cur->key_len;
	k.mv_data = cur->key;
	rc = cur->key_len ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
			  : mdb_cursor_get(c, &k, &v, MDB_FIRST);
	/* Resume after the last key done (it may have been deleted since). */
	if (!rc && cur->key_len && k.mv_size == cur->key_len &&
	    !memcmp(k.mv_data, cur->key, cur->key_len))
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	for (; !rc && n < max; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		int len = rewrap_record(cur->table, &v, rec, fn, arg, changed);

		if (len < 0) {
			ret = len;
			goto end;
		}
		if (len > 0) {
			MDB_val nv = { .mv_size = (size_t)len, .mv_data = rec };

			rc = mdb_cursor_put(c, &k, &nv, MDB_CURRENT);
			if (rc)
				break;
		}
		if (k.mv_size > sizeof(cur->key)) {
			ret = KMS_ERR_CORRUPT;
			goto end;
		}
		memcpy(cur->key, k.mv_data, k.mv_size);
		cur->key_len = k.mv_size;
		n++;
	}
	if (rc == MDB_NOTFOUND) {
		cur->table++;
		cur->key_len = 0;
	} else if (rc) {
		ret = from_mdb(rc, "rewrap");
	}
	/* Party records re-wrapped: cached copies must go (their old blobs
	 * are under a KEK that is going away). */
	if (!ret && table == RW_PARTIES && *changed)
		ret = epoch_bump(ks, txn);
	*visited = n;
end:
	explicit_bzero(rec, sizeof(rec));
	if (c)
		mdb_cursor_close(c);
	if (ret) {
		mdb_txn_abort(txn);
		return ret;
	}
	return from_mdb(mdb_txn_commit(txn), "rewrap commit");
}
