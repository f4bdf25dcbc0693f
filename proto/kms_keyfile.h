/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_keyfile.h
 * @brief A party's copy of its key, as `kmsctl enroll` hands it out.
 *
 * Text, mode 0600, stands in for GBA or another bootstrap:
 *   # IMS KMS party key. Secret: keep mode 0600.
 *   id = sip:alice@example.org
 *   kind = user            (or: as)
 *   gen = 1
 *   key = <64 hex digits>
 * Lines starting with '#' and blank lines are ignored.
 */
#ifndef KMS_KEYFILE_H
#define KMS_KEYFILE_H

#include <stdint.h>

#include "kms_proto.h"

struct kms_keyfile {
	char id[KMS_ID_MAX + 1];
	char kind[8];                 /**< "user" or "as" */
	uint32_t gen;
	uint8_t key[KMS_KEY_LEN];     /**< caller wipes (kms_keyfile_wipe) */
};

/** Write @p kf to @p path with mode 0600 (O_EXCL unless @p overwrite).
 *  @return KMS_OK, KMS_ERR_EXISTS, KMS_ERR_IO. */
int kms_keyfile_write(const char *path, const struct kms_keyfile *kf,
		      int overwrite);

/** Read and validate. @return KMS_OK, KMS_ERR_IO, KMS_ERR_MALFORMED. */
int kms_keyfile_read(const char *path, struct kms_keyfile *out);

/** Wipe the key bytes. */
void kms_keyfile_wipe(struct kms_keyfile *kf);

/** Hex helpers. kms_hex_decode @return bytes written or -1. */
void kms_hex_encode(const uint8_t *in, size_t len, char *out /* 2*len+1 */);
int kms_hex_decode(const char *in, uint8_t *out, size_t cap);

#endif /* KMS_KEYFILE_H */
