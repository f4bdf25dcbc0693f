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

#include "kms_err.h"
#include "kms_log.h"
#include "ks_priv.h"

#define KS_MAXDBS 8
#define KS_DEFAULT_MAP ((size_t)1 << 30)
#define KS_FORMAT "1"
#define KS_AUDIT_TRIES 4

struct kms_ks {
	MDB_env *env;
	MDB_dbi meta, parties, pairs, deposits, audit, nonces;
	/* Next audit seq. Uniqueness only needs the atomic add; the order
	 * of records within one ms is the order of the adds, and write
	 * transactions are serialized by LMDB's writer lock anyway. */
	_Atomic uint32_t audit_seq;
};

struct kms_ks_txn {
	struct kms_ks *ks;
	MDB_txn *txn;
	int rdonly;
	int err;        /* sticky: KMS_ERR_MAPFULL, _STORE or _CORRUPT */
};

/* Map an LMDB code; log the ones an operator must see. */
static int from_mdb(int rc, const char *what)
{
	switch (rc) {
	case MDB_SUCCESS:
		return KMS_OK;
	case MDB_NOTFOUND:
		return KMS_ERR_NOTFOUND;
	case MDB_KEYEXIST:
		return KMS_ERR_EXISTS;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
		KMS_WARN("keystore: %s: %s", what, mdb_strerror(rc));
		return KMS_ERR_MAPFULL;
	default:
		KMS_ERR("keystore: %s: %s", what, mdb_strerror(rc));
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
	KMS_ERR("keystore: corrupt record in \"%s\"", db);
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

/* Resume audit seqs after the newest record, so that records of one ms
 * keep their arrival order across restarts. */
static int init_audit_seq(struct kms_ks *ks, MDB_txn *txn)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	uint32_t seq = 0;
	int rc, ret;

	rc = mdb_cursor_open(txn, ks->audit, &cur);
	if (rc) {
		ret = from_mdb(rc, "audit cursor");
		goto out;
	}
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (rc == MDB_SUCCESS && k.mv_size == KS_AUDIT_KEY_LEN)
		seq = get_be32((const uint8_t *)k.mv_data + 8) + 1;
	else if (rc && rc != MDB_NOTFOUND) {
		ret = from_mdb(rc, "audit last");
		goto out;
	}
	atomic_store(&ks->audit_seq, seq);
	ret = KMS_OK;
out:
	if (cur)
		mdb_cursor_close(cur);
	return ret;
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
		ret = init_audit_seq(ks, txn);
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
		free(ks);
	}
	return ret;
}

void kms_ks_close(struct kms_ks *ks)
{
	if (!ks)
		return;
	mdb_env_close(ks->env);
	free(ks);
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
	free(t);
	return ret;
}

void kms_ks_txn_abort(struct kms_ks_txn *t)
{
	if (!t)
		return;
	mdb_txn_abort(t->txn);
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

int kms_ks_party_put(struct kms_ks_txn *t, const struct kms_id *id,
		     const struct kms_party *p)
{
	uint8_t rec[KS_PARTY_LEN];
	int ret, n;

	ret = txn_check(t, 1);
	if (ret)
		return ret;
	if (!id_ok(id) || !p)
		return KMS_ERR_INVAL;
	n = kms_ks_rec_party_enc(p, rec);
	if (n < 0)
		return n;
	return txn_put(t, t->ks->parties, id->p, id->len, rec, (size_t)n, 0,
		       "parties");
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
	uint8_t rec[KS_PAIR_LEN];
	int ret, n;

	ret = txn_check(t, 1);
	if (ret)
		return ret;
	if (!hash || !p)
		return KMS_ERR_INVAL;
	n = kms_ks_rec_pair_enc(p, rec);
	if (n < 0)
		return n;
	return txn_put(t, t->ks->pairs, hash, KMS_PAIR_HASH_LEN, rec,
		       (size_t)n, 0, "pairs");
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
	uint32_t seq;
	int ret, n, i;

	ret = txn_check(t, 1);
	if (ret)
		return ret;
	if (!a || a->time_ms > UINT64_MAX / 1000000)
		return KMS_ERR_INVAL;
	n = kms_ks_rec_audit_enc(a, rec);
	if (n < 0)
		return n;
	put_be64(key, a->time_ms * 1000000);
	/* Caller clocks need not be monotonic, so no MDB_APPEND. A key can
	 * only repeat after 2^32 appends within one ms, or a seq restarted
	 * below an older record of the same ms: take the next seq then. */
	for (i = 0; i < KS_AUDIT_TRIES; i++) {
		seq = atomic_fetch_add_explicit(&t->ks->audit_seq, 1,
						memory_order_relaxed);
		put_be32(key + 8, seq);
		ret = txn_put(t, t->ks->audit, key, sizeof(key), rec,
			      (size_t)n, MDB_NOOVERWRITE, "audit");
		if (ret != KMS_ERR_EXISTS)
			break;
	}
	return ret;
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
		/* The key's time must be the record's own. */
		if (k.mv_size != KS_AUDIT_KEY_LEN ||
		    kms_ks_rec_audit_dec(v.mv_data, v.mv_size, &a) ||
		    a.time_ms > UINT64_MAX / 1000000 ||
		    get_be64(k.mv_data) != a.time_ms * 1000000) {
			ret = txn_corrupt(t, "audit");
			break;
		}
		ret = fn(&a, arg);
		if (ret)
			break;
	}
out:
	if (cur)
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

int kms_ks_nonce_purge(struct kms_ks_txn *t, uint64_t now_ms, unsigned max)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	unsigned n = 0;
	int rc, ret = txn_check(t, 1);

	if (ret)
		return ret;
	rc = mdb_cursor_open(t->txn, t->ks->nonces, &cur);
	if (rc)
		return txn_fail_mdb(t, rc, "nonces cursor");
	/* The oldest entries come first: delete from the front. */
	while (n < max) {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		if (rc == MDB_NOTFOUND)
			break;
		if (rc) {
			ret = txn_fail_mdb(t, rc, "nonces");
			break;
		}
		if (k.mv_size != NONCE_KEY_LEN) {
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
		n++;
	}
	mdb_cursor_close(cur);
	return ret ? ret : (int)n;
}
