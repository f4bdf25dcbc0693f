/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_ibake.h
 * @brief MIKEY-IBAKE deferred delivery (clause 7.6.2.5): the messages
 *        between UE-A, B's mailbox and UE-B, as session state machines
 *        with no I/O of their own (docs/PROTOCOL.md, part II).
 *
 * A session is one TCP connection. The caller reads a frame (u32 length,
 * then that many bytes), hands the whole frame to the session and writes
 * what the session put in @p out. Every function returns KMS_OK (or a
 * documented positive value) or a negative enum kms_err; after a failure
 * kms_ibake_status() says which wire status it was, and the mailbox's
 * @p out holds an ERROR frame to send before closing. A session never
 * recovers from a failure: the caller closes the connection.
 *
 * Secrets (x, y, a, aP, xyP, session keys, message key) live in the
 * session and are wiped by kms_ibake_free() or as soon as they are used.
 * Not thread-safe; one session per connection.
 */
#ifndef KMS_IBAKE_H
#define KMS_IBAKE_H

#include <stddef.h>
#include <stdint.h>

#include "kms_ibe.h"

#define KMS_IBAKE_VERSION 1
#define KMS_IBAKE_HDR_LEN 6            /**< u32 len | u8 version | u8 type */
#define KMS_IBAKE_MSG_ID_LEN 16
#define KMS_IBAKE_FRAME_MAX (64u << 20) /**< hard cap of one frame */
#define KMS_IBAKE_HANDSHAKE_MAX 16384u  /**< any frame but DEPOSIT and MSG */

enum kms_ibake_type {
	KMS_IB_I1 = 0x11,          /**< A -> MB: ID-A, ID-B, IBE_B(ID-A, ID-B, xP) */
	KMS_IB_R1 = 0x12,          /**< MB -> A: ID-MB, IBE_A(ID-MB, yP) */
	KMS_IB_I2 = 0x13,          /**< A -> MB: IBE_MB(ID-A, ID-MB, xP, yP), IBE_B(ID-A, aP) */
	KMS_IB_R2 = 0x14,          /**< MB -> A: IBE_A(ID-A, xP) */
	KMS_IB_DEPOSIT = 0x15,     /**< A -> MB, sealed: signature, message */
	KMS_IB_DEPOSIT_ACK = 0x16, /**< MB -> A, sealed: msg id, expiry */
	KMS_IB_F1 = 0x21,          /**< B -> MB: ID-B, IBE_MB(ID-B, ID-MB, xP) */
	KMS_IB_F2 = 0x22,          /**< MB -> B: IBE_B(ID-MB, ID-B, xP, yP) */
	KMS_IB_F3 = 0x23,          /**< B -> MB, sealed: yP */
	KMS_IB_MSG = 0x24,         /**< MB -> B, sealed: one stored message */
	KMS_IB_END = 0x25,         /**< MB -> B, sealed: no more messages */
	KMS_IB_DELETE = 0x26,      /**< B -> MB, sealed: delivered, delete it */
	KMS_IB_NEXT = 0x27,        /**< B -> MB, sealed: keep it, go on */
	KMS_IB_ERROR = 0x7f,       /**< either way: u16 status */
};

/** A growable byte buffer; kms_buf_free wipes before freeing. */
struct kms_buf {
	uint8_t *p;
	size_t len, cap;
};
int kms_buf_reserve(struct kms_buf *b, size_t more);
void kms_buf_free(struct kms_buf *b);

/** Who the local end is. All pointers must outlive the session. */
struct kms_ibake_party {
	const struct kms_ibe *ibe;
	const struct kms_ibe_params *params;
	const struct kms_ibe_keys *keys;   /**< own id, period, RSK, SSK/PVT */
	const struct kms_sakke_rskp *rskp; /**< optional: keys' RSK prepared
	                                        (kms_ibe_prepare) */
};

/** One stored deposit. Pointers refer to the buffer that holds it. */
struct kms_ibake_item {
	uint8_t msg_id[KMS_IBAKE_MSG_ID_LEN];
	struct kms_id id_a, id_b;          /**< id_a: the authenticated sender */
	char period[KMS_IBE_PERIOD_LEN + 1];
	uint64_t deposited_ms, expiry_ms;
	const uint8_t *key_b;              /**< IBE_B(ID-A, aP) */
	uint32_t key_b_len;
	const uint8_t *sig;                /**< KMS_ECCSI_SIG_LEN: A's signature */
	const uint8_t *msg;                /**< ciphertext | tag under the key of aP */
	uint32_t msg_len;
};

/** The mailbox's store; each call is durable before it returns. */
struct kms_ibake_store_ops {
	/** Store @p it; set its msg_id and expiry_ms. */
	int (*put)(void *arg, struct kms_ibake_item *it);
	/** The first message for @p id_b after @p after (NULL: the first),
	 *  in @p it, its bytes held in @p hold. KMS_ERR_NOTFOUND at the end. */
	int (*next)(void *arg, const struct kms_id *id_b, const uint8_t *after,
		    struct kms_ibake_item *it, struct kms_buf *hold);
	/** Delete one message of @p id_b. */
	int (*del)(void *arg, const struct kms_id *id_b,
		   const uint8_t msg_id[KMS_IBAKE_MSG_ID_LEN]);
};

struct kms_ibake;

int kms_ibake_new(const struct kms_ibake_party *me, struct kms_ibake **out);
void kms_ibake_free(struct kms_ibake *s);

/** The wire status of the last failure (KMS_ST_OK if none). */
uint16_t kms_ibake_status(const struct kms_ibake *s);

/** The frame length field of a 4-byte prefix, 0 if above @p max or below
 *  the header. */
uint32_t kms_ibake_frame_len(const uint8_t prefix[4], uint32_t max);

/** An ERROR frame with @p status into @p out. */
int kms_ibake_error_frame(uint16_t status, struct kms_buf *out);

/** If @p in is an ERROR frame: its status; else 0. */
uint16_t kms_ibake_peer_error(const uint8_t *in, size_t len);

/* ---- UE-A: leave a message in B's mailbox ---- */

/** I1 to @p to_b (the call was forwarded to mailbox @p mailbox_id). */
int kms_ibake_a_begin(struct kms_ibake *s, const char *to_b,
		      const char *mailbox_id, struct kms_buf *out);
/** R1 in: the responder is the mailbox, not B. I2 out. */
int kms_ibake_a_on_r1(struct kms_ibake *s, const uint8_t *in, size_t len,
		      struct kms_buf *out);
/** R2 in: the mailbox proved its identity; the session keys exist. */
int kms_ibake_a_on_r2(struct kms_ibake *s, const uint8_t *in, size_t len);
/** DEPOSIT out: @p msg encrypted under the key of aP and signed (ECCSI). */
int kms_ibake_a_deposit(struct kms_ibake *s, const uint8_t *msg, size_t len,
			struct kms_buf *out);
/** DEPOSIT_ACK in: the mailbox committed the message. */
int kms_ibake_a_on_ack(struct kms_ibake *s, const uint8_t *in, size_t len,
		       uint8_t msg_id[KMS_IBAKE_MSG_ID_LEN],
		       uint64_t *expiry_ms);
/** Test hook: aP and the message key, for tests that scan what the
 *  mailbox saw and stored. Valid after kms_ibake_a_deposit. */
int kms_ibake_a_secrets(const struct kms_ibake *s,
			uint8_t ap[KMS_EC_POINT_LEN],
			uint8_t mk[KMS_KEY_LEN]);

/* ---- the mailbox ---- */

/**
 * One frame from a client (A or B) in, the reply in @p out (appended).
 * @return KMS_OK (send @p out, read the next frame), 1 (send @p out, the
 *         session is complete), or a negative error (send @p out, an
 *         ERROR frame, and close).
 */
int kms_ibake_mb_on_frame(struct kms_ibake *s,
			  const struct kms_ibake_store_ops *store, void *arg,
			  const uint8_t *in, size_t len, struct kms_buf *out);

/** The largest frame the mailbox should accept next: @p big (its message
 *  limit) once the depositor is authenticated (after R2), else
 *  KMS_IBAKE_HANDSHAKE_MAX. */
uint32_t kms_ibake_mb_frame_max(const struct kms_ibake *s, uint32_t big);

/* ---- UE-B: fetch messages ---- */

/** What B learnt from one MSG. */
struct kms_ibake_received {
	uint8_t msg_id[KMS_IBAKE_MSG_ID_LEN];
	char from[KMS_ID_MAX + 1];       /**< verified sender (ECCSI) */
	char period[KMS_IBE_PERIOD_LEN + 1];
	uint64_t deposited_ms;
};

/** F1 to mailbox @p mailbox_id. */
int kms_ibake_b_begin(struct kms_ibake *s, const char *mailbox_id,
		      struct kms_buf *out);
/** F2 in: the mailbox proved its identity. F3 out. */
int kms_ibake_b_on_f2(struct kms_ibake *s, const uint8_t *in, size_t len,
		      struct kms_buf *out);
/**
 * MSG or END in. For a MSG: the plaintext in @p plain (replaced) and what
 * B verified in @p rx; the caller then calls kms_ibake_b_ack. @return 0
 * for a verified message, 1 for END, KMS_ERR_AUTH for a message that does
 * not verify (altered bytes or sender, wrong recipient: @p rx->msg_id is
 * set, the caller should kms_ibake_b_ack(keep=1)), other negatives on a
 * broken session.
 */
int kms_ibake_b_on_msg(struct kms_ibake *s, const uint8_t *in, size_t len,
		       struct kms_buf *plain, struct kms_ibake_received *rx);
/** DELETE (or NEXT if @p keep) for the message just received. */
int kms_ibake_b_ack(struct kms_ibake *s, int keep, struct kms_buf *out);

#endif /* KMS_IBAKE_H */
