/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file ks_priv.h
 * @brief Keystore internals: the record codec (records.c) used by ks.c.
 *
 * The byte layouts are described at the top of records.c. Encoders check
 * the struct (enum values, ID lengths and bytes) so that nothing is stored
 * that the decoder would reject; decoders check everything again and never
 * trust a stored length.
 */
#ifndef KMS_KS_PRIV_H
#define KMS_KS_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "kms_ks.h"

/** Version byte leading every record written by this code. */
#define KS_REC_V1 1
/** Audit records are version 2: they carry the previous record's hash. */
#define KS_REC_AUDIT_V2 2

#define KS_PARTY_LEN (1 + 1 + 1 + 4 + 8 + KMS_HSM_BLOB_LEN)
/** A party record with a previous generation in its overlap: version 2. */
#define KS_REC_PARTY_V2 2
#define KS_PARTY_V2_LEN (KS_PARTY_LEN + 4 + 8 + KMS_HSM_BLOB_LEN)
#define KS_PAIR_LEN (1 + 4 + 4 + 8 + KMS_HSM_BLOB_LEN)
/** A revoked pair: version 2, one more byte (1 = revoked). */
#define KS_REC_PAIR_V2 2
#define KS_PAIR_V2_LEN (KS_PAIR_LEN + 1)
#define KS_DEPOSIT_FIXED (1 + 1 + 4 + 4 + 8 + 8 + KMS_PAIR_HASH_LEN + 32 + \
			  KMS_HSM_BLOB_LEN + 3)
#define KS_DEPOSIT_MAX (KS_DEPOSIT_FIXED + 3 * KMS_ID_MAX)
#define KS_AUDIT_FIXED (1 + KMS_AUDIT_HASH_LEN + 1 + 8 + 4 + KMS_KEY_ID_LEN + 3)
#define KS_AUDIT_MAX (KS_AUDIT_FIXED + 3 * KMS_ID_MAX)

/** Audit key: seq u64 BE, 1, 2, 3... in commit order, store-wide. */
#define KS_AUDIT_KEY_LEN 8

/*
 * Encoders write into @p out (at least the matching *_LEN / *_MAX bytes)
 * and return the record length, or KMS_ERR_INVAL if the struct holds a
 * value the layout cannot carry (unknown enum, ID length or byte).
 * Decoders return KMS_OK (@p out filled) or KMS_ERR_CORRUPT (@p out
 * untouched).
 */
int kms_ks_rec_party_enc(const struct kms_party *p, uint8_t *out);
int kms_ks_rec_party_dec(const uint8_t *buf, size_t len,
			 struct kms_party *out);
int kms_ks_rec_pair_enc(const struct kms_pair *p, uint8_t *out);
int kms_ks_rec_pair_dec(const uint8_t *buf, size_t len, struct kms_pair *out);
int kms_ks_rec_deposit_enc(const struct kms_deposit *d, uint8_t *out);
int kms_ks_rec_deposit_dec(const uint8_t *buf, size_t len,
			   struct kms_deposit *out);
/* Audit: @p prev is the previous record's chain hash (zeros for the
 * first); the decoder returns it in @p prev. */
int kms_ks_rec_audit_enc(const struct kms_audit *a,
			 const uint8_t prev[KMS_AUDIT_HASH_LEN], uint8_t *out);
int kms_ks_rec_audit_dec(const uint8_t *buf, size_t len,
			 struct kms_audit *out, uint8_t prev[KMS_AUDIT_HASH_LEN]);

/** 1 if @p len is in [@p min, KMS_ID_MAX] and every byte is 0x21..0x7e. */
int kms_ks_rec_id_ok(const uint8_t *p, size_t len, size_t min);

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

#endif /* KMS_KS_PRIV_H */
