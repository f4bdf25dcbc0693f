/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_client.h
 * @brief Private helpers of the kms-client tool: "key = value" text files,
 *        party key files and the UDP exchange with the KMS.
 *
 * Every function that fails prints one line on stderr saying why (prefixed
 * "kms-client: ") and returns -1, so the commands only decide exit codes.
 * Single-threaded; nothing here keeps state between calls.
 */
#ifndef KMS_CLIENT_H
#define KMS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kms_keyfile.h"
#include "kms_proto.h"

/** Print "kms-client: <message>\n" on stderr. */
void kc_errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- key = value text files ---- */

#define KC_KV_MAX 12
#define KC_KV_KEY 24
#define KC_KV_VAL 1024

/** A small table read from a text file; '#' lines and blank lines are
 *  skipped, every other line is "key = value" with a unique key. */
struct kc_kv {
	unsigned n;
	const char *path;               /**< for messages; not copied */
	char key[KC_KV_MAX][KC_KV_KEY];
	char val[KC_KV_MAX][KC_KV_VAL];
};

/** Read @p path into @p kv (which keeps the pointer @p path). */
int kc_kv_read(const char *path, struct kc_kv *kv);

/** The value of @p key, or NULL after a "missing" message. Points into
 *  @p kv. */
const char *kc_kv_get(const struct kc_kv *kv, const char *key);

/** The identity under @p key; @p id points into @p kv. */
int kc_kv_id(const struct kc_kv *kv, const char *key, struct kms_id *id);

/** Decode the hex under @p key: @p min..@p cap bytes. @return the length. */
int kc_kv_hex(const struct kc_kv *kv, const char *key, uint8_t *out,
	      size_t min, size_t cap);

/** Create or truncate @p path, force @p mode (also on an existing file)
 *  before anything is written, write @p text. Does not follow symlinks. */
int kc_write_text(const char *path, mode_t mode, const char *text);

/** Write "key_id = <hex>\nk = <hex>\n" with mode 0600; wipes its own
 *  copies of K (the caller wipes @p k). */
int kc_write_key(const char *path, const uint8_t key_id[KMS_KEY_ID_LEN],
		 const uint8_t k[KMS_KEY_LEN]);

/* ---- tokens and party keys ---- */

/** Check a token's framing (not its tag): ct_len agrees with the length.
 *  @return 0 and a pointer to its nonce inside @p tok, or -1 (silent). */
int kc_token_nonce(const uint8_t *tok, size_t len, const uint8_t **nonce);

/** The key generation field of a framed token. */
uint32_t kc_token_gen(const uint8_t *tok);

/** A file with id_a, id_b and token (hex): ea.tok, or the mailbox's
 *  security parameters (which add key_id, k_gen, expiry_ms). */
struct kc_tokfile {
	struct kc_kv kv;
	struct kms_id a, b;             /**< point into kv */
	uint8_t tok[KMS_TOKEN_MAX];
	int tok_len;
	const uint8_t *nonce;           /**< points into tok */
};

int kc_tokfile_read(const char *path, struct kc_tokfile *t);

/** kms_keyfile_read() plus a check that the key is of @p kind ("user" or
 *  "as") unless @p force. On failure nothing secret is left in @p kf. */
int kc_key_read(const char *path, struct kms_keyfile *kf, const char *kind,
		int force);

/* ---- UDP ---- */

/**
 * Send @p req (the same bytes every time) to @p server ("host:port" or
 * "[v6]:port") up to @p tries times on one connect()ed socket, waiting
 * @p timeout_ms after each send for a datagram that starts with the magic
 * and carries @p txid; other datagrams are dropped.
 * @return the reply's length (in @p rep), 0 on timeout (after a message),
 *         -1 on a local error.
 */
int kc_udp_exchange(const char *server, const uint8_t *req, size_t len,
		    int tries, int timeout_ms, uint32_t txid, uint8_t *rep,
		    size_t cap);

/** Big-endian u32 at @p p. */
static inline uint32_t kc_ld32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

#endif /* KMS_CLIENT_H */
