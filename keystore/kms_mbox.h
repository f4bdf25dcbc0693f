/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_mbox.h
 * @brief kms-mailbox's message store (MIKEY-IBAKE deferred delivery): one
 *        LMDB environment of its own, separate from the KMS keystore.
 *
 * Named databases:
 *   "meta"    "format" -> "mbox1"
 *   "msgs"    SHA-256(ID-B)[0..16) | msg id (16) -> message record
 *   "expiry"  expiry_ms u64 BE | SHA-256(ID-B)[0..16) | msg id -> (empty)
 * msg id = deposit time ms u64 BE | 8 random bytes, so a recipient's
 * messages come out oldest first.
 *
 * What a record holds: ID-A as the mailbox authenticated it, ID-B, the
 * period, times, IBE_B(ID-A | aP) (sealed to B), A's ECCSI signature and
 * the message ciphertext under the key of aP. Nothing in it lets the
 * mailbox decrypt the message.
 *
 * Durability: every write commits with fsync before it returns (no
 * MDB_NOSYNC), so a deposit acknowledged after kms_mbox_put survives a
 * crash. Thread-safe: LMDB serialises writers; each call is one
 * transaction of its own.
 */
#ifndef KMS_MBOX_H
#define KMS_MBOX_H

#include <stdint.h>

#include "kms_ibake.h"

struct kms_mbox;

struct kms_mbox_config {
	const char *path;          /**< directory, created 0700 if missing */
	uint64_t map_size;         /**< bytes; 0: 1 GiB */
	uint64_t lifetime_ms;      /**< a message expires this long after its
	                                deposit; 0: 30 days */
};

int kms_mbox_open(const struct kms_mbox_config *cfg, struct kms_mbox **out);
void kms_mbox_close(struct kms_mbox *m);

/** Store @p it durably at @p now_ms; sets its msg_id, deposited_ms and
 *  expiry_ms. @return KMS_OK, KMS_ERR_MAPFULL, KMS_ERR_STORE, KMS_ERR_INVAL. */
int kms_mbox_put(struct kms_mbox *m, struct kms_ibake_item *it,
		 uint64_t now_ms);

/** The first unexpired message of @p id_b after @p after (NULL: from the
 *  start) into @p it, whose pointers refer to @p hold (replaced).
 *  @return KMS_OK, KMS_ERR_NOTFOUND (no more), KMS_ERR_CORRUPT. */
int kms_mbox_next(struct kms_mbox *m, const struct kms_id *id_b,
		  const uint8_t *after, uint64_t now_ms,
		  struct kms_ibake_item *it, struct kms_buf *hold);

/** Delete one message of @p id_b. @return KMS_OK or KMS_ERR_NOTFOUND. */
int kms_mbox_del(struct kms_mbox *m, const struct kms_id *id_b,
		 const uint8_t msg_id[KMS_IBAKE_MSG_ID_LEN]);

/** Delete up to @p max messages whose expiry is before @p now_ms.
 *  @return KMS_OK; the count in @p purged. */
int kms_mbox_purge(struct kms_mbox *m, uint64_t now_ms, unsigned max,
		   unsigned *purged);

/** Messages held. */
int kms_mbox_count(struct kms_mbox *m, uint64_t *out);

#endif /* KMS_MBOX_H */
