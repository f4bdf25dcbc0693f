/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_token.h
 * @brief Client-side token code: what UE-A, the mailbox AS and UE-B compute.
 *
 * Used by kms-client, the load generator and the tests. The server does not
 * use these (it keeps per-key cipher contexts, dataplane/kms_crypto.h); both
 * follow the same byte layout from kms_proto.h.
 *
 * Keys are passed as raw 32-byte buffers that the caller owns and wipes.
 */
#ifndef KMS_TOKEN_H
#define KMS_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "kms_proto.h"

/** One-shot AES-256-GCM seal. @return KMS_OK, KMS_ERR_CRYPTO, or
 *  KMS_ERR_INVAL if a length exceeds INT_MAX. */
int kms_gcm_seal(const uint8_t key[KMS_KEY_LEN],
		 const uint8_t iv[KMS_NONCE_LEN], const uint8_t *ad,
		 size_t ad_len, const uint8_t *pt, size_t pt_len, uint8_t *ct,
		 uint8_t tag[KMS_TAG_LEN]);

/** One-shot AES-256-GCM open; tag compared by OpenSSL in constant time.
 *  On KMS_ERR_AUTH the bytes written to @p pt are wiped.
 *  @return KMS_OK, KMS_ERR_AUTH (tag mismatch), KMS_ERR_CRYPTO, or
 *  KMS_ERR_INVAL if a length exceeds INT_MAX. */
int kms_gcm_open(const uint8_t key[KMS_KEY_LEN],
		 const uint8_t iv[KMS_NONCE_LEN], const uint8_t *ad,
		 size_t ad_len, const uint8_t *ct, size_t ct_len,
		 const uint8_t tag[KMS_TAG_LEN], uint8_t *pt);

/**
 * Seal E_x(ID-A, ID-B): the token of @p role sealed under @p key of
 * generation @p gen, for @p party (ID-A for role A, ID-B for B, the AS id
 * for AS). @p nonce: 12 fresh random bytes (NULL: drawn from RAND_bytes).
 * @return encoded length, or a negative enum kms_err.
 */
int kms_token_seal(uint8_t role, const struct kms_id *party, uint32_t gen,
		   const uint8_t key[KMS_KEY_LEN], uint64_t ts_ms,
		   const uint8_t *nonce, const struct kms_id *a,
		   const struct kms_id *b, uint8_t *out, size_t cap);

/**
 * Open a keybox from a DEPOSIT_RESP (role A) or RETRIEVE_RESP (role B).
 * @p req_nonce is the nonce of the requester's own token (Ea for A, Eb for B)
 * that the reply must be bound to. Writes K to @p k_out only on success.
 * The caller must also check that resp->key_id is the key id it expects
 * (RETRIEVE: the one it asked for); the AEAD binds it but cannot know it.
 * @return KMS_OK, KMS_ERR_AUTH, KMS_ERR_CRYPTO, or KMS_ERR_INVAL (@p resp
 *         is not a DEPOSIT_RESP/RETRIEVE_RESP, or an ID is invalid).
 */
int kms_keybox_open(const struct kms_resp *resp, uint8_t role,
		    uint32_t recipient_gen, const uint8_t key[KMS_KEY_LEN],
		    const struct kms_id *a, const struct kms_id *b,
		    const uint8_t req_nonce[KMS_NONCE_LEN],
		    uint8_t k_out[KMS_KEY_LEN]);

/** Wall clock in ms since the Unix epoch (CLOCK_REALTIME). */
uint64_t kms_now_ms(void);

#endif /* KMS_TOKEN_H */
