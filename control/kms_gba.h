/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_gba.h
 * @brief GBA key derivation (3GPP TS 33.220 Annex B), so a party key can be
 *        Ks_NAF from a GBA bootstrap instead of an HSM-generated key.
 *
 *   Ks_NAF = HMAC-SHA-256(Ks, S),  Ks = CK || IK (32 bytes)
 *   S = FC || P0 || L0 || P1 || L1 || P2 || L2 || P3 || L3
 *   FC = 0x01, P0 = "gba-me", P1 = RAND (16 bytes), P2 = IMPI,
 *   P3 = NAF_Id = NAF FQDN || Ua security protocol identifier (5 bytes),
 *   Li = length of Pi in bytes, two bytes big-endian.
 */
#ifndef KMS_GBA_H
#define KMS_GBA_H

#include <stddef.h>
#include <stdint.h>

#define KMS_GBA_UA_ID_LEN 5
#define KMS_GBA_RAND_LEN 16

/** Build S into @p out. @return its length, or -KMS_ERR_SPACE style
 *  negative enum kms_err (KMS_ERR_SPACE, KMS_ERR_INVAL). */
int kms_gba_encode_s(const uint8_t rand[KMS_GBA_RAND_LEN], const char *impi,
		     const char *naf_fqdn, const uint8_t ua_id[KMS_GBA_UA_ID_LEN],
		     uint8_t *out, size_t cap);

/** Ks_NAF into @p out. @return KMS_OK, KMS_ERR_INVAL, KMS_ERR_CRYPTO. */
int kms_gba_ks_naf(const uint8_t *ks, size_t ks_len,
		   const uint8_t rand[KMS_GBA_RAND_LEN], const char *impi,
		   const char *naf_fqdn, const uint8_t ua_id[KMS_GBA_UA_ID_LEN],
		   uint8_t out[32]);

#endif
