/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_err.h
 * @brief One error space for the whole KMS.
 *
 * Two kinds of codes live here:
 *  - internal results (enum kms_err): 0 on success, negative on failure;
 *    every library function of the project returns one of these.
 *  - wire statuses (enum kms_status): the u16 carried in an ERROR reply
 *    (docs/PROTOCOL.md section "Status codes"). Values are part of wire
 *    format version 1 and never change meaning.
 */
#ifndef KMS_ERR_H
#define KMS_ERR_H

enum kms_err {
	KMS_OK = 0,
	KMS_ERR_NOMEM = -1,     /**< allocation or mlock failed */
	KMS_ERR_INVAL = -2,     /**< bad argument */
	KMS_ERR_IO = -3,        /**< file or socket I/O failed (errno kept) */
	KMS_ERR_CONFIG = -4,    /**< bad configuration */
	KMS_ERR_PIN = -5,       /**< no PIN, or the token refused it */
	KMS_ERR_HSM = -6,       /**< a PKCS#11 call failed */
	KMS_ERR_NOTFOUND = -7,  /**< no such object or record */
	KMS_ERR_EXISTS = -8,    /**< object or record already exists */
	KMS_ERR_STORE = -9,     /**< LMDB failure other than map full */
	KMS_ERR_MAPFULL = -10,  /**< the LMDB map is full */
	KMS_ERR_CRYPTO = -11,   /**< OpenSSL failure (not an auth failure) */
	KMS_ERR_AUTH = -12,     /**< AEAD tag did not verify */
	KMS_ERR_MALFORMED = -13,/**< bytes do not follow the wire format */
	KMS_ERR_SPACE = -14,    /**< output buffer too small */
	KMS_ERR_BUSY = -15,     /**< a bounded table is full */
	KMS_ERR_CORRUPT = -16,  /**< a stored record fails its checks */
};

/** Static, never-NULL text for an enum kms_err value. */
const char *kms_strerror(int err);

/** Wire statuses (u16, big-endian on the wire). */
enum kms_status {
	KMS_ST_OK = 0,
	KMS_ST_MALFORMED = 1,       /**< body does not parse */
	KMS_ST_BAD_VERSION = 2,     /**< unsupported protocol version */
	KMS_ST_BAD_TYPE = 3,        /**< unknown or unexpected message type */
	KMS_ST_UNKNOWN_PARTY = 4,   /**< a named party is not enrolled */
	KMS_ST_PARTY_REVOKED = 5,   /**< a named party is revoked */
	KMS_ST_WRONG_ROLE = 6,      /**< token role or party kind does not fit */
	KMS_ST_AUTH_FAILED = 7,     /**< a token does not verify (wrong key/gen) */
	KMS_ST_ID_MISMATCH = 8,     /**< decrypted IDs differ from plain IDs */
	KMS_ST_STALE = 9,           /**< token timestamp outside the allowed skew */
	KMS_ST_REPLAY = 10,         /**< single-use token seen before */
	KMS_ST_UNKNOWN_KEY_ID = 11, /**< no deposit with this key id */
	KMS_ST_DEPOSIT_EXPIRED = 12,
	KMS_ST_DEPOSIT_REVOKED = 13,
	KMS_ST_NOT_RECIPIENT = 14,  /**< requester is not the deposit's ID-B */
	KMS_ST_HANDLE_MISMATCH = 15,/**< Ea token is not the deposit's handle */
	KMS_ST_POLICY_DENIED = 16,  /**< the reuse/retrieve policy refuses */
	KMS_ST_STORE_FULL = 17,     /**< keystore full; nothing was recorded */
	KMS_ST_STORE_FAILED = 18,   /**< durable commit failed; nothing recorded */
	KMS_ST_HSM_FAILED = 19,     /**< the HSM refused or failed */
	KMS_ST_BUSY = 20,           /**< replay window full: retry later */
	KMS_ST_INTERNAL = 21,
	KMS_ST_BAD_PERIOD = 22,     /**< IBE: period malformed or not issuable now */
	KMS_ST_IBE_UNAVAILABLE = 23,/**< IBE: the KGC has no master secret */
	KMS_ST_PAIR_REVOKED = 24,   /**< DEPOSIT: an operator revoked the pair */
	KMS_ST__COUNT
};

/** Static, never-NULL name of a wire status ("AUTH_FAILED"). */
const char *kms_status_name(unsigned status);

#endif /* KMS_ERR_H */
