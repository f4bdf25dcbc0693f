/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_ks.h
 * @brief The keystore: LMDB indexes and wrapped-key records.
 *
 * Named databases in one environment (a directory):
 *   "meta"     format version, KEK label, creation time, audit_head
 *   "parties"  party id (string)          -> struct kms_party
 *   "pairs"    pair hash (32 B)           -> struct kms_pair
 *   "deposits" key id (16 B, time-ordered)-> struct kms_deposit
 *   "audit"    seq u64 BE (1, 2, ...)     -> struct kms_audit + prev hash
 *   "nonces"   expire_ms u64 BE | role u8 | nonce[12] | pair prefix[8]
 *              -> pair hash prefix (8 B); or, packed (kms_ks_nonce_put_many),
 *              latest expiry u64 BE | txn id u64 BE | count u32 BE
 *              -> up to KMS_KS_NONCE_PACK entries laid out like the key
 *              above
 * Records are encoded in a fixed, versioned byte layout (keystore/records.c),
 * never as raw structs. Key material appears only as HSM-wrapped blobs.
 *
 * Durability: the environment is opened without MDB_NOSYNC/MDB_NOMETASYNC,
 * so kms_ks_txn_commit() returning KMS_OK means the data is on disk.
 * Callers answer a client only after that.
 *
 * Transactions carry a sticky error: after the first failure every further
 * get/put on the transaction is a no-op returning that error, and commit
 * aborts and returns it. Storage code can check once, at commit.
 * Sticky: KMS_ERR_MAPFULL, KMS_ERR_STORE, KMS_ERR_CORRUPT. Not sticky:
 * KMS_ERR_NOTFOUND, KMS_ERR_EXISTS, KMS_ERR_SPACE and KMS_ERR_INVAL (bad
 * argument, a value the record layout cannot carry such as an unknown enum
 * or a malformed ID, or a put on a read-only transaction); these leave the
 * transaction as it was.
 *
 * Threads: a kms_ks is shared by all threads. A transaction belongs to the
 * thread that began it (the environment is opened with MDB_NOTLS so read
 * transactions may also be reset/renewed by their owner thread). LMDB
 * allows one write transaction at a time; others wait in begin.
 */
#ifndef KMS_KS_H
#define KMS_KS_H

#include <stddef.h>
#include <stdint.h>

#include "kms_hsm.h"
#include "kms_proto.h"

struct kms_ks;
struct kms_ks_txn;

enum kms_party_kind { KMS_PARTY_USER = 1, KMS_PARTY_AS = 2 };
enum kms_party_status { KMS_PARTY_ACTIVE = 1, KMS_PARTY_REVOKED = 2 };
enum kms_deposit_status {
	KMS_DEP_ACTIVE = 1,
	KMS_DEP_REVOKED = 2,
};

struct kms_party {
	uint8_t kind;                        /**< enum kms_party_kind */
	uint8_t status;                      /**< enum kms_party_status */
	uint32_t gen;                        /**< current key generation (>= 1) */
	uint64_t created_ms;
	uint8_t blob[KMS_HSM_BLOB_LEN];      /**< key, wrapped under the KEK */
	/** After a rotation: the previous generation, still accepted until
	 *  prev_until_ms (the overlap); prev_gen 0 = none. */
	uint32_t prev_gen;
	uint64_t prev_until_ms;
	uint8_t prev_blob[KMS_HSM_BLOB_LEN];
};

struct kms_pair {
	uint32_t k_gen;                      /**< generation of the current K */
	uint32_t uses;                       /**< deposits that used this K */
	uint64_t created_ms;                 /**< when this K was made */
	uint8_t blob[KMS_HSM_BLOB_LEN];      /**< current K, wrapped */
	/** An operator revoked the pair (kmsctl revoke --pair): no DEPOSIT
	 *  for it, no RETRIEVE of any of its deposits. */
	uint8_t revoked;
};

struct kms_deposit {
	uint8_t status;                      /**< enum kms_deposit_status */
	uint32_t k_gen;
	uint32_t retrievals;
	uint64_t created_ms;
	uint64_t expiry_ms;
	uint8_t pair_hash[KMS_PAIR_HASH_LEN];
	uint8_t ea_digest[32];               /**< SHA-256 of the Ea token bytes */
	uint8_t blob[KMS_HSM_BLOB_LEN];      /**< K, wrapped */
	uint8_t id_a_len, id_b_len, id_as_len;
	char id_a[KMS_ID_MAX], id_b[KMS_ID_MAX], id_as[KMS_ID_MAX];
};

enum kms_audit_event {
	KMS_AUD_ENROLL = 1,
	KMS_AUD_REVOKE = 2,
	KMS_AUD_KEY_NEW = 3,        /**< a new K was made for a pair (deposit) */
	KMS_AUD_KEY_REUSE = 4,      /**< a deposit re-used the pair's K */
	KMS_AUD_KEY_RETRIEVE = 5,   /**< K released to B */
	KMS_AUD_INIT = 6,
	KMS_AUD_POLICY = 7,         /**< the reuse policy changed (id_a: domain) */
	KMS_AUD_IBE_INIT = 8,       /**< the IBE master secret was created */
	KMS_AUD_IBE_ISSUE = 9,      /**< IBE private keys issued (id_a: party,
	                                 id_b: period) */
	KMS_AUD_ROTATE = 10,        /**< a party key got a new generation
	                                 (id_a: party, k_gen: the new gen) */
	KMS_AUD_KEK_ROTATE = 11,    /**< KEK rotation (id_a: "start" or "done") */
};

#define KMS_AUDIT_HASH_LEN 32

/** One audit record: who, which pair, key id, when. Never key bytes. */
struct kms_audit {
	uint8_t event;                       /**< enum kms_audit_event */
	uint64_t time_ms;
	uint32_t k_gen;
	uint8_t key_id[KMS_KEY_ID_LEN];      /**< zero when not applicable */
	uint8_t actor_len, id_a_len, id_b_len;
	char actor[KMS_ID_MAX];              /**< who asked (AS id, B, operator) */
	char id_a[KMS_ID_MAX], id_b[KMS_ID_MAX];
	/* Set by kms_ks_audit_foreach (ignored by append): the record's place
	 * in the chain and its chain hash. */
	uint64_t seq;
	uint8_t hash[KMS_AUDIT_HASH_LEN];
};

struct kms_ks_config {
	const char *path;       /**< directory; created (0700) if missing */
	size_t map_size;        /**< bytes; 0 = 1 GiB */
	int create;             /**< 1: create the directory and DBs if missing */
};

/** Open (or with cfg->create, create) the store. A new store gets meta
 *  "format" = "1" and "created_ms". Opening twice in one process is not
 *  allowed (LMDB's rule). Close with kms_ks_close().
 *  @return KMS_OK, KMS_ERR_NOTFOUND (no data.mdb and !create),
 *          KMS_ERR_IO (the directory cannot be created), KMS_ERR_STORE,
 *          KMS_ERR_CORRUPT (meta format unknown or missing, or a database
 *          missing: not a KMS store), KMS_ERR_NOMEM, KMS_ERR_INVAL. */
int kms_ks_open(const struct kms_ks_config *cfg, struct kms_ks **out);
/** Close the environment. All transactions must be finished. NULL is a
 *  no-op. */
void kms_ks_close(struct kms_ks *ks);

/** Begin a transaction; @p rdonly 1 for a read-only one. A write begin
 *  waits while another write transaction is open.
 *  @return KMS_OK, KMS_ERR_NOMEM, KMS_ERR_BUSY (all LMDB reader slots
 *          taken), KMS_ERR_STORE. */
int kms_ks_txn_begin(struct kms_ks *ks, int rdonly, struct kms_ks_txn **out);
/** Commit (durable). If the txn has a sticky error it is aborted and that
 *  error returned. The txn is freed in every case.
 *  @return KMS_OK, KMS_ERR_MAPFULL, KMS_ERR_STORE, or the sticky error. */
int kms_ks_txn_commit(struct kms_ks_txn *txn);
/** Abort and free. NULL is a no-op. */
void kms_ks_txn_abort(struct kms_ks_txn *txn);
/** The sticky error (KMS_OK if none; KMS_ERR_INVAL for NULL). */
int kms_ks_txn_error(const struct kms_ks_txn *txn);

/* Getters return KMS_OK, KMS_ERR_NOTFOUND (not sticky), or the sticky
 * error / KMS_ERR_CORRUPT (sticky). Out-params written only on KMS_OK.
 * Puts return KMS_OK, KMS_ERR_INVAL (not sticky), or the sticky error.
 * Party IDs must be 1..KMS_ID_MAX bytes of 0x21..0x7e; so must a deposit's
 * three IDs; an audit record's actor/id_a/id_b may also be empty. */
int kms_ks_party_get(struct kms_ks_txn *txn, const struct kms_id *id,
		     struct kms_party *out);
int kms_ks_party_put(struct kms_ks_txn *txn, const struct kms_id *id,
		     const struct kms_party *p);
/**
 * The parties' epoch: a counter that every transaction writing a party
 * record (kms_ks_party_put, a KEK rotation's re-wrap) moves on, in the
 * same transaction. Two snapshots with the same epoch hold the same party
 * records, so a reader may keep records it read under the epoch its
 * snapshot shows (the engine's per-worker party cache). A store that never
 * had a party written since this counter exists reads 0.
 * @return KMS_OK, or the sticky error / KMS_ERR_CORRUPT.
 */
int kms_ks_party_epoch(struct kms_ks_txn *txn, uint64_t *out);
/**
 * How many times a revoked pair record was written (kms_ks_pair_put of a
 * record with revoked set; counted once for older stores at open). 0 in a
 * snapshot: no pair of it is revoked, so a RETRIEVE needs no pair lookup.
 * @return KMS_OK, or the sticky error / KMS_ERR_CORRUPT.
 */
int kms_ks_pairs_revoked(struct kms_ks_txn *txn, uint64_t *out);
int kms_ks_pair_get(struct kms_ks_txn *txn,
		    const uint8_t hash[KMS_PAIR_HASH_LEN], struct kms_pair *out);
int kms_ks_pair_put(struct kms_ks_txn *txn,
		    const uint8_t hash[KMS_PAIR_HASH_LEN],
		    const struct kms_pair *p);
int kms_ks_deposit_get(struct kms_ks_txn *txn,
		       const uint8_t key_id[KMS_KEY_ID_LEN],
		       struct kms_deposit *out);
/** @p overwrite 0: fail with KMS_ERR_EXISTS (not sticky) if the id exists. */
int kms_ks_deposit_put(struct kms_ks_txn *txn,
		       const uint8_t key_id[KMS_KEY_ID_LEN],
		       const struct kms_deposit *d, int overwrite);
/**
 * Append an audit record to the store's hash chain: its key is the next
 * sequence number (1, 2, ... in commit order: write transactions are
 * serialised), and it holds the chain hash of the record before it. The
 * chain hash of record n is SHA-256("kms-audit-v2" | n (u64 BE) | its
 * stored bytes); the newest (n, hash) is the meta record "audit_head",
 * written with the transaction. So a removed, reordered, altered or
 * truncated record breaks kms_ks_audit_verify().
 * @return KMS_OK, KMS_ERR_INVAL (bad event or ID), or the sticky error.
 */
int kms_ks_audit_append(struct kms_ks_txn *txn, const struct kms_audit *a);

/** Iterate parties in key (ID byte) order: calls @p fn for each until it
 *  returns non-zero. @p id and @p p are valid only during the call; @p fn
 *  must not write to the database being walked.
 *  @return KMS_OK when all were visited, @p fn's non-zero value when it
 *          stopped the walk (not sticky), KMS_ERR_CORRUPT (sticky), or the
 *          sticky error. */
int kms_ks_party_foreach(struct kms_ks_txn *txn,
			 int (*fn)(const struct kms_id *id,
				   const struct kms_party *p, void *arg),
			 void *arg);
/** Iterate audit records in chain order (a->seq, a->hash set); returns as
 *  kms_ks_party_foreach(). */
int kms_ks_audit_foreach(struct kms_ks_txn *txn,
			 int (*fn)(const struct kms_audit *a, void *arg),
			 void *arg);

/** What kms_ks_audit_verify found. */
struct kms_audit_check {
	uint64_t records;     /**< records walked */
	uint64_t bad_seq;     /**< first record that breaks the chain; 0 */
	const char *reason;   /**< NULL when the chain holds */
};

/**
 * Walk the whole chain: sequence numbers 1..n without a gap, each
 * record's prev equal to the chain hash of the one before, each record
 * decodable, and (n, hash) equal to "audit_head".
 * @return KMS_OK (chain intact), KMS_ERR_CORRUPT (@p out says where and
 *         why; not sticky), or a store error.
 */
int kms_ks_audit_verify(struct kms_ks_txn *txn, struct kms_audit_check *out);

/** Meta string values ("kek_label", ...). @p out NUL-terminated.
 *  Names are non-empty C strings; values are stored without their NUL.
 *  get: KMS_ERR_SPACE (not sticky, @p out untouched) if the value and its
 *  NUL do not fit in @p cap. */
int kms_ks_meta_get(struct kms_ks_txn *txn, const char *name, char *out,
		    size_t cap);
int kms_ks_meta_put(struct kms_ks_txn *txn, const char *name,
		    const char *value);

/**
 * A read-only transaction kept by one thread across batches: reset it
 * (release its snapshot) when idle, renew it (new snapshot) before use.
 * Cheaper than begin/abort. Renew clears a sticky error.
 * @return KMS_OK, KMS_ERR_INVAL (not read-only), KMS_ERR_STORE.
 */
int kms_ks_txn_reset(struct kms_ks_txn *txn);
int kms_ks_txn_renew(struct kms_ks_txn *txn);

/*
 * Single-use token nonces, kept durably until they expire so that replay
 * protection survives a restart (the engine writes them in the batch's
 * commit and reloads them into its windows at start). The key starts with
 * the expiry, so a batch appends and purging deletes from the front.
 */
int kms_ks_nonce_put(struct kms_ks_txn *txn, uint64_t expire_ms, uint8_t role,
		     const uint8_t nonce[KMS_NONCE_LEN],
		     const uint8_t pair_prefix[8]);
/** One nonce for kms_ks_nonce_put_many(). */
struct kms_ks_nonce {
	uint64_t expire_ms;
	uint8_t role;
	uint8_t nonce[KMS_NONCE_LEN];
	uint8_t pair_prefix[8];
};
/** Most nonces in one packed record. */
#define KMS_KS_NONCE_PACK 44
/**
 * @p n nonces in ceil(n / KMS_KS_NONCE_PACK) packed records, each keyed by
 * the latest expiry among its entries: one B-tree insert (and one purge
 * delete) for up to 44 nonces, where kms_ks_nonce_put() costs one each.
 * A packed record lives until its last entry expires; kms_ks_nonce_foreach
 * gives each entry with its own expiry. The engine writes its nonces so.
 * @return KMS_OK, KMS_ERR_INVAL (@p v NULL with n > 0; read-only txn), or
 *         a sticky error.
 */
int kms_ks_nonce_put_many(struct kms_ks_txn *txn, const struct kms_ks_nonce *v,
			  unsigned n);
/** Calls @p fn for every nonce expiring at or after @p from_ms, in key
 *  order (a packed record's entries in the order they were put, those
 *  expired before @p from_ms skipped), until it returns non-zero (then
 *  returns that value). */
int kms_ks_nonce_foreach(struct kms_ks_txn *txn, uint64_t from_ms,
			 int (*fn)(uint64_t expire_ms, uint8_t role,
				   const uint8_t *nonce,
				   const uint8_t *pair_prefix, void *arg),
			 void *arg);
/**
 * Expiry purge, one bounded step: walk at most @p max_scan deposits from
 * key id @p from (NULL: the first), deleting those whose expiry_ms <=
 * @p now_ms. Deposit keys are creation-ordered but lifetimes differ per
 * policy, so the walk does not stop at the first live one: call again
 * from @p next while *@p more, and from NULL after the end.
 * @return deposits deleted (>= 0), or a negative (sticky) error.
 */
int kms_ks_deposit_purge(struct kms_ks_txn *txn, uint64_t now_ms,
			 const uint8_t *from, unsigned max_scan,
			 uint8_t next[KMS_KEY_ID_LEN], int *more);

/** Delete at most @p max records (single or packed) whose nonces all
 *  expired before @p now_ms, oldest first.
 *  @return how many nonces they held (>= 0), or a negative (sticky) error. */
int kms_ks_nonce_purge(struct kms_ks_txn *txn, uint64_t now_ms, unsigned max);

/** Entry counts per database (for stats and tests). */
/*
 * KEK rotation (control/kms_kekrot.h): every wrapped blob of the store,
 * parties (current and previous generation), pairs, deposits and the IBE
 * master seed, re-wrapped in write transactions of at most @p max records
 * each, so a worker's commit waits behind one step at most. @p fn gets a
 * blob and writes its replacement: KMS_OK (record rewritten), KMS_ERR_EXISTS
 * (already under the new KEK, unchanged) or an error (the step is aborted,
 * nothing of it is written, the cursor stays). A cursor starts zeroed;
 * kms_ks_rewrap_done() says when it has passed everything.
 */
typedef int (*kms_ks_rewrap_fn)(void *arg, const uint8_t in[KMS_HSM_BLOB_LEN],
				uint8_t out[KMS_HSM_BLOB_LEN]);
struct kms_ks_rewrap {
	unsigned table;
	uint8_t key[KMS_ID_MAX + 1];
	size_t key_len;
};
int kms_ks_rewrap_step(struct kms_ks *ks, struct kms_ks_rewrap *cur,
		       unsigned max, kms_ks_rewrap_fn fn, void *arg,
		       unsigned *visited, unsigned *changed);
static inline int kms_ks_rewrap_done(const struct kms_ks_rewrap *cur)
{
	return cur->table >= 4;
}

/**
 * LMDB's fatal error (MDB_PANIC: a meta page write failed, e.g. on EIO or
 * ENOSPC): the environment refuses every transaction until reopened, the
 * data committed before is intact. The first time any call meets it, it is
 * logged and @p fn (set once, before threads start; may be NULL) is called
 * from that thread: kmsd asks itself to stop and exits non-zero so its
 * supervisor restarts it. Until then every store call fails KMS_ERR_STORE.
 */
void kms_ks_on_panic(void (*fn)(void));
/** 1 once MDB_PANIC was met in this process. */
int kms_ks_panicked(void);

/** Records per database (a packed nonce record counts once). */
struct kms_ks_counts {
	size_t parties, pairs, deposits, audit, nonces;
};
/** In a read transaction of its own. @return KMS_OK, KMS_ERR_BUSY,
 *  KMS_ERR_STORE, KMS_ERR_INVAL. */
int kms_ks_counts(struct kms_ks *ks, struct kms_ks_counts *out);

#endif /* KMS_KS_H */
