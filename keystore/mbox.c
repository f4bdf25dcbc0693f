// SPDX-License-Identifier: Apache-2.0
/*
 * kms-mailbox's message store (kms_mbox.h). Record layout, version 1:
 *   ver u8 = 1 | deposited_ms u64 | expiry_ms u64 | period[7]
 *   | a u8 | ID-A | b u8 | ID-B | key_b_len u32 | key_b
 *   | sig[KMS_ECCSI_SIG_LEN] | msg_len u32 | msg
 * All integers big-endian.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lmdb.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "kms_err.h"
#include "kms_log.h"
#include "kms_mbox.h"

#define MBOX_FORMAT "mbox1"
#define BKEY_LEN 16
#define MSGKEY_LEN (BKEY_LEN + KMS_IBAKE_MSG_ID_LEN)
#define EXPKEY_LEN (8 + MSGKEY_LEN)
#define DEFAULT_MAP (1ull << 30)
#define DEFAULT_LIFETIME_MS (30ull * 24 * 3600 * 1000)
#define REC_FIXED (1 + 8 + 8 + KMS_IBE_PERIOD_LEN + 1 + 1 + 4 + \
		   KMS_ECCSI_SIG_LEN + 4)

struct kms_mbox {
	MDB_env *env;
	MDB_dbi meta, msgs, expiry;
	uint64_t lifetime_ms;
};

static int from_mdb(int rc, const char *what)
{
	switch (rc) {
	case MDB_SUCCESS:
		return KMS_OK;
	case MDB_NOTFOUND:
		return KMS_ERR_NOTFOUND;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
		KMS_WARN("mailbox store: %s: %s", what, mdb_strerror(rc));
		return KMS_ERR_MAPFULL;
	default:
		KMS_ERR("mailbox store: %s: %s", what, mdb_strerror(rc));
		return KMS_ERR_STORE;
	}
}

static void st64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * (7 - i)));
}

static void st32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * (3 - i)));
}

static uint64_t ld64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint32_t ld32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static void bkey(const struct kms_id *b, uint8_t out[BKEY_LEN])
{
	uint8_t md[SHA256_DIGEST_LENGTH];

	SHA256(b->p, b->len, md);
	memcpy(out, md, BKEY_LEN);
}

int kms_mbox_open(const struct kms_mbox_config *cfg, struct kms_mbox **out)
{
	struct kms_mbox *m;
	MDB_txn *txn = NULL;
	MDB_val k = { .mv_size = 6, .mv_data = (void *)"format" }, v;
	int rc, ret;

	if (!cfg || !cfg->path || !*cfg->path)
		return KMS_ERR_INVAL;
	if (mkdir(cfg->path, 0700) && errno != EEXIST) {
		KMS_ERR("mailbox store: mkdir %s: %s", cfg->path,
			strerror(errno));
		return KMS_ERR_IO;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return KMS_ERR_NOMEM;
	m->lifetime_ms = cfg->lifetime_ms ? cfg->lifetime_ms :
					    DEFAULT_LIFETIME_MS;
	rc = mdb_env_create(&m->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(m->env, 4);
	if (!rc)
		rc = mdb_env_set_mapsize(m->env, cfg->map_size ? cfg->map_size :
					 DEFAULT_MAP);
	/* Durable commits: no NOSYNC flags. */
	if (!rc)
		rc = mdb_env_open(m->env, cfg->path, MDB_NOTLS, 0600);
	if (!rc)
		rc = mdb_txn_begin(m->env, NULL, 0, &txn);
	if (!rc)
		rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &m->meta);
	if (!rc)
		rc = mdb_dbi_open(txn, "msgs", MDB_CREATE, &m->msgs);
	if (!rc)
		rc = mdb_dbi_open(txn, "expiry", MDB_CREATE, &m->expiry);
	if (rc) {
		ret = from_mdb(rc, cfg->path);
		goto err;
	}
	rc = mdb_get(txn, m->meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		v.mv_size = strlen(MBOX_FORMAT);
		v.mv_data = (void *)MBOX_FORMAT;
		rc = mdb_put(txn, m->meta, &k, &v, 0);
	} else if (!rc && (v.mv_size != strlen(MBOX_FORMAT) ||
			   memcmp(v.mv_data, MBOX_FORMAT, v.mv_size))) {
		KMS_ERR("mailbox store: %s: not a mailbox store of format %s",
			cfg->path, MBOX_FORMAT);
		ret = KMS_ERR_CORRUPT;
		goto err;
	}
	if (!rc)
		rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc) {
		ret = from_mdb(rc, "open");
		goto err;
	}
	*out = m;
	return KMS_OK;
err:
	if (txn)
		mdb_txn_abort(txn);
	if (m->env)
		mdb_env_close(m->env);
	free(m);
	return ret;
}

void kms_mbox_close(struct kms_mbox *m)
{
	if (!m)
		return;
	mdb_env_close(m->env);
	free(m);
}

int kms_mbox_put(struct kms_mbox *m, struct kms_ibake_item *it,
		 uint64_t now_ms)
{
	uint8_t mkey[MSGKEY_LEN], ekey[EXPKEY_LEN], *p;
	MDB_val k = { .mv_size = sizeof(mkey), .mv_data = mkey }, v;
	MDB_val ek = { .mv_size = sizeof(ekey), .mv_data = ekey };
	MDB_val ev = { .mv_size = 0, .mv_data = (void *)"" };
	MDB_txn *txn;
	size_t len;
	int rc;

	if (!kms_id_valid(&it->id_a) || !kms_id_valid(&it->id_b) ||
	    !kms_ibe_period_valid(it->period, strlen(it->period)))
		return KMS_ERR_INVAL;
	len = REC_FIXED + it->id_a.len + it->id_b.len + it->key_b_len +
	      it->msg_len;
	bkey(&it->id_b, mkey);
	st64(mkey + BKEY_LEN, now_ms);
	if (RAND_bytes(mkey + BKEY_LEN + 8, 8) != 1)
		return KMS_ERR_CRYPTO;
	it->deposited_ms = now_ms;
	it->expiry_ms = now_ms + m->lifetime_ms;
	st64(ekey, it->expiry_ms);
	memcpy(ekey + 8, mkey, MSGKEY_LEN);

	rc = mdb_txn_begin(m->env, NULL, 0, &txn);
	if (rc)
		return from_mdb(rc, "put begin");
	v.mv_size = len;
	/* MDB_RESERVE: the record is written once, straight into the map. */
	rc = mdb_put(txn, m->msgs, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
	if (!rc) {
		p = v.mv_data;
		*p++ = 1;
		st64(p, it->deposited_ms);
		p += 8;
		st64(p, it->expiry_ms);
		p += 8;
		memcpy(p, it->period, KMS_IBE_PERIOD_LEN);
		p += KMS_IBE_PERIOD_LEN;
		*p++ = it->id_a.len;
		memcpy(p, it->id_a.p, it->id_a.len);
		p += it->id_a.len;
		*p++ = it->id_b.len;
		memcpy(p, it->id_b.p, it->id_b.len);
		p += it->id_b.len;
		st32(p, it->key_b_len);
		p += 4;
		memcpy(p, it->key_b, it->key_b_len);
		p += it->key_b_len;
		memcpy(p, it->sig, KMS_ECCSI_SIG_LEN);
		p += KMS_ECCSI_SIG_LEN;
		st32(p, it->msg_len);
		p += 4;
		memcpy(p, it->msg, it->msg_len);
		rc = mdb_put(txn, m->expiry, &ek, &ev, 0);
	}
	if (rc) {
		mdb_txn_abort(txn);
		return from_mdb(rc, "put");
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return from_mdb(rc, "put commit");
	memcpy(it->msg_id, mkey + BKEY_LEN, KMS_IBAKE_MSG_ID_LEN);
	return KMS_OK;
}

/* Parse a record held in @p rec (@p len bytes). */
static int rec_parse(const uint8_t *rec, size_t len, const uint8_t *msg_id,
		     struct kms_ibake_item *it)
{
	const uint8_t *p = rec, *end = rec + len;

	if (len < REC_FIXED || *p++ != 1)
		return KMS_ERR_CORRUPT;
	memset(it, 0, sizeof(*it));
	memcpy(it->msg_id, msg_id, KMS_IBAKE_MSG_ID_LEN);
	it->deposited_ms = ld64(p);
	p += 8;
	it->expiry_ms = ld64(p);
	p += 8;
	memcpy(it->period, p, KMS_IBE_PERIOD_LEN);
	p += KMS_IBE_PERIOD_LEN;
	it->id_a.len = *p++;
	it->id_a.p = p;
	p += it->id_a.len;
	if (p >= end)
		return KMS_ERR_CORRUPT;
	it->id_b.len = *p++;
	it->id_b.p = p;
	p += it->id_b.len;
	if (end - p < 4)
		return KMS_ERR_CORRUPT;
	it->key_b_len = ld32(p);
	p += 4;
	if ((size_t)(end - p) < (size_t)it->key_b_len + KMS_ECCSI_SIG_LEN + 4)
		return KMS_ERR_CORRUPT;
	it->key_b = p;
	p += it->key_b_len;
	it->sig = p;
	p += KMS_ECCSI_SIG_LEN;
	it->msg_len = ld32(p);
	p += 4;
	if ((size_t)(end - p) != it->msg_len)
		return KMS_ERR_CORRUPT;
	it->msg = p;
	return KMS_OK;
}

int kms_mbox_next(struct kms_mbox *m, const struct kms_id *id_b,
		  const uint8_t *after, uint64_t now_ms,
		  struct kms_ibake_item *it, struct kms_buf *hold)
{
	uint8_t start[MSGKEY_LEN];
	MDB_val k = { .mv_size = sizeof(start), .mv_data = start }, v;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_cursor_op op = MDB_SET_RANGE;
	int rc, ret = KMS_ERR_NOTFOUND;

	bkey(id_b, start);
	if (after)
		memcpy(start + BKEY_LEN, after, KMS_IBAKE_MSG_ID_LEN);
	else
		memset(start + BKEY_LEN, 0, KMS_IBAKE_MSG_ID_LEN);
	rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return from_mdb(rc, "next begin");
	rc = mdb_cursor_open(txn, m->msgs, &c);
	if (rc) {
		mdb_txn_abort(txn);
		return from_mdb(rc, "next cursor");
	}
	for (rc = mdb_cursor_get(c, &k, &v, op); rc == MDB_SUCCESS;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		const uint8_t *key = k.mv_data;

		if (k.mv_size != MSGKEY_LEN || memcmp(key, start, BKEY_LEN))
			break;
		if (after && !memcmp(key + BKEY_LEN, after,
				     KMS_IBAKE_MSG_ID_LEN))
			continue;
		if (v.mv_size >= 17 && ld64((const uint8_t *)v.mv_data + 9) <=
				       now_ms)
			continue; /* expired: the purge will take it */
		hold->len = 0;
		ret = kms_buf_reserve(hold, v.mv_size);
		if (ret)
			break;
		memcpy(hold->p, v.mv_data, v.mv_size);
		hold->len = v.mv_size;
		ret = rec_parse(hold->p, hold->len, key + BKEY_LEN, it);
		/* The record must be for this recipient, not a hash twin. */
		if (!ret && (it->id_b.len != id_b->len ||
			     memcmp(it->id_b.p, id_b->p, id_b->len)))
			ret = KMS_ERR_NOTFOUND;
		break;
	}
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		ret = from_mdb(rc, "next");
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	return ret;
}

int kms_mbox_del(struct kms_mbox *m, const struct kms_id *id_b,
		 const uint8_t msg_id[KMS_IBAKE_MSG_ID_LEN])
{
	uint8_t mkey[MSGKEY_LEN], ekey[EXPKEY_LEN];
	MDB_val k = { .mv_size = sizeof(mkey), .mv_data = mkey }, v;
	MDB_val ek = { .mv_size = sizeof(ekey), .mv_data = ekey };
	MDB_txn *txn;
	int rc;

	bkey(id_b, mkey);
	memcpy(mkey + BKEY_LEN, msg_id, KMS_IBAKE_MSG_ID_LEN);
	rc = mdb_txn_begin(m->env, NULL, 0, &txn);
	if (rc)
		return from_mdb(rc, "del begin");
	rc = mdb_get(txn, m->msgs, &k, &v);
	if (!rc) {
		if (v.mv_size < 17) {
			mdb_txn_abort(txn);
			return KMS_ERR_CORRUPT;
		}
		memcpy(ekey, (const uint8_t *)v.mv_data + 9, 8);
		memcpy(ekey + 8, mkey, MSGKEY_LEN);
		rc = mdb_del(txn, m->msgs, &k, NULL);
	}
	if (!rc) {
		rc = mdb_del(txn, m->expiry, &ek, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	if (rc) {
		mdb_txn_abort(txn);
		return from_mdb(rc, "del");
	}
	return from_mdb(mdb_txn_commit(txn), "del commit");
}

int kms_mbox_purge(struct kms_mbox *m, uint64_t now_ms, unsigned max,
		   unsigned *purged)
{
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	unsigned n = 0;
	int rc;

	rc = mdb_txn_begin(m->env, NULL, 0, &txn);
	if (rc)
		return from_mdb(rc, "purge begin");
	rc = mdb_cursor_open(txn, m->expiry, &c);
	for (rc = rc ? rc : mdb_cursor_get(c, &k, &v, MDB_FIRST);
	     rc == MDB_SUCCESS && n < max;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		MDB_val mk;

		if (k.mv_size != EXPKEY_LEN ||
		    ld64(k.mv_data) > now_ms)
			break;
		mk.mv_size = MSGKEY_LEN;
		mk.mv_data = (uint8_t *)k.mv_data + 8;
		rc = mdb_del(txn, m->msgs, &mk, NULL);
		if (rc && rc != MDB_NOTFOUND)
			break;
		rc = mdb_cursor_del(c, 0);
		if (rc)
			break;
		n++;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
	if (rc) {
		mdb_txn_abort(txn);
		return from_mdb(rc, "purge");
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return from_mdb(rc, "purge commit");
	*purged = n;
	return KMS_OK;
}

int kms_mbox_count(struct kms_mbox *m, uint64_t *out)
{
	MDB_txn *txn;
	MDB_stat st;
	int rc;

	rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return from_mdb(rc, "count");
	rc = mdb_stat(txn, m->msgs, &st);
	mdb_txn_abort(txn);
	if (rc)
		return from_mdb(rc, "count");
	*out = st.ms_entries;
	return KMS_OK;
}
