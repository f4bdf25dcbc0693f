/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_ibe.h
 * @brief Identity-based encryption and signatures as the MIKEY-IBAKE
 *        system uses them (clause 7.6.2.5), on top of SAKKE (RFC 6508) and
 *        ECCSI (RFC 6507).
 *
 * - Identities carry a validity period as RFC 6509 does:
 *   ident = "YYYY-MM" | 0x00 | URI | 0x00. A party's private keys are
 *   issued per period, so they rotate every month.
 * - IBE_X(pt) = SAKKE encapsulation of a fresh 128-bit SSV to X's ident,
 *   then AES-256-GCM of pt under key|iv = HKDF-SHA-256(ikm = SSV,
 *   salt = "KMS1-IBE", info = ident), with the caller's associated data.
 *   The key is used for one message only, so the derived IV never repeats.
 * - The key generation centre (the KMS) holds one 32-byte master seed; the
 *   SAKKE master secret z and the ECCSI KSAK are derived from it
 *   (kms_ibe_master_derive), so the HSM wraps one ordinary 256-bit key.
 * - P-256 helpers for the xP, yP and aP of the flow.
 *
 * Every function returns KMS_OK or a negative enum kms_err; out-parameters
 * are written only on success; secrets in our own buffers are wiped on
 * every path. A struct kms_ibe is immutable after kms_ibe_new() and may be
 * shared by threads.
 */
#ifndef KMS_IBE_H
#define KMS_IBE_H

#include <stddef.h>
#include <stdint.h>

#include "kms_eccsi.h"
#include "kms_proto.h"
#include "kms_sakke.h"

#define KMS_IBE_PERIOD_LEN 7            /**< "YYYY-MM" */
#define KMS_IBE_IDENT_MAX (KMS_IBE_PERIOD_LEN + 1 + KMS_ID_MAX + 1)
#define KMS_IBE_SEED_LEN 32
#define KMS_IBE_KGC_ID_LEN 8
#define KMS_IBE_OVERHEAD (KMS_SAKKE_ENC_LEN + KMS_TAG_LEN)
#define KMS_EC_SCALAR_LEN 32            /**< P-256 */
#define KMS_EC_POINT_LEN 65             /**< P-256, 0x04 | x | y */

/** The KGC's public parameters, distributed to every party. */
struct kms_ibe_params {
	uint8_t zs[KMS_SAKKE_POINT_LEN];    /**< SAKKE Z_S = [z]P */
	uint8_t kpak[KMS_ECCSI_POINT_LEN];  /**< ECCSI KPAK = [KSAK]G */
	uint8_t kgc_id[KMS_IBE_KGC_ID_LEN]; /**< SHA-256(zs | kpak)[0..8) */
};

/** A party's private keys for one identity and period. Secret. */
struct kms_ibe_keys {
	char id[KMS_ID_MAX + 1];            /**< the URI, NUL-terminated */
	char period[KMS_IBE_PERIOD_LEN + 1];
	uint8_t rsk[KMS_SAKKE_POINT_LEN];   /**< SAKKE receiver secret key */
	uint8_t ssk[KMS_ECCSI_SCALAR_LEN];  /**< ECCSI secret signing key */
	uint8_t pvt[KMS_ECCSI_POINT_LEN];   /**< ECCSI public validation token */
};

struct kms_ibe {
	struct kms_sakke *sakke;
	struct kms_eccsi *eccsi;
};

int kms_ibe_new(struct kms_ibe **out);
void kms_ibe_free(struct kms_ibe *ibe);

/* ---- identities and periods ---- */

/** The UTC period ("YYYY-MM") of @p time_ms, NUL-terminated. */
void kms_ibe_period(uint64_t time_ms, char out[KMS_IBE_PERIOD_LEN + 1]);

/** The period after @p cur (a valid "YYYY-MM"). */
void kms_ibe_period_next(const char *cur, char out[KMS_IBE_PERIOD_LEN + 1]);

/** 1 if @p p (@p len bytes) is "YYYY-MM" with month 01..12, else 0. */
int kms_ibe_period_valid(const char *p, size_t len);

/** ident = period | 0 | URI | 0 into @p out. @return its length. */
size_t kms_ibe_ident(const char *period, const struct kms_id *uri,
		     uint8_t out[KMS_IBE_IDENT_MAX]);

/* ---- key generation centre ---- */

/** z in [2, q-1] and KSAK in [1, n-1] from the master seed. */
int kms_ibe_master_derive(const struct kms_ibe *ibe,
			  const uint8_t seed[KMS_IBE_SEED_LEN],
			  uint8_t z[KMS_SAKKE_Z_LEN],
			  uint8_t ksak[KMS_ECCSI_SCALAR_LEN]);

/** Public parameters of a master seed. */
int kms_ibe_params_make(const struct kms_ibe *ibe,
			const uint8_t z[KMS_SAKKE_Z_LEN],
			const uint8_t ksak[KMS_ECCSI_SCALAR_LEN],
			struct kms_ibe_params *out);

/** Set p->kgc_id from p->zs and p->kpak. */
void kms_ibe_params_kgc_id(struct kms_ibe_params *p);

/** RSK, SSK and PVT for @p uri in @p period (a fresh random v). */
int kms_ibe_issue(const struct kms_ibe *ibe, const uint8_t z[KMS_SAKKE_Z_LEN],
		  const uint8_t ksak[KMS_ECCSI_SCALAR_LEN],
		  const struct kms_ibe_params *params, const struct kms_id *uri,
		  const char *period, struct kms_ibe_keys *out);

/** A party's check of what the KGC issued: RFC 6508 6.1.2 for the RSK,
 *  RFC 6507 5.1.2 for SSK/PVT. @return KMS_OK or KMS_ERR_AUTH. */
int kms_ibe_keys_check(const struct kms_ibe *ibe,
		       const struct kms_ibe_params *params,
		       const struct kms_ibe_keys *keys);

/** Wipe @p keys. */
void kms_ibe_keys_wipe(struct kms_ibe_keys *keys);

/* ---- IBE_X(pt) ---- */

/**
 * Seal @p pt to @p to in @p period: out = SAKKE enc (273) | ct | tag (16),
 * KMS_IBE_OVERHEAD + pt_len bytes. @return that length, KMS_ERR_SPACE.
 */
int kms_ibe_seal(const struct kms_ibe *ibe, const struct kms_ibe_params *params,
		 const struct kms_id *to, const char *period, const uint8_t *ad,
		 size_t ad_len, const uint8_t *pt, size_t pt_len, uint8_t *out,
		 size_t cap);

/**
 * Open what kms_ibe_seal made for @p keys' identity and period.
 * @return the plaintext length (in @p pt, cap >= in_len -
 *         KMS_IBE_OVERHEAD); KMS_ERR_MALFORMED (too short, R not a point),
 *         KMS_ERR_AUTH (another recipient, a changed byte or AD).
 */
int kms_ibe_open(const struct kms_ibe *ibe, const struct kms_ibe_params *params,
		 const struct kms_ibe_keys *keys, const uint8_t *ad,
		 size_t ad_len, const uint8_t *in, size_t in_len, uint8_t *pt,
		 size_t cap);

/**
 * For a long-lived receiver (the mailbox): @p keys' RSK prepared once
 * (kms_sakke_rsk_prepare: checked, ~0.5 MB, ~20 ms) so that every later
 * open costs about half. Free with kms_sakke_rskp_free().
 */
int kms_ibe_prepare(const struct kms_ibe *ibe,
		    const struct kms_ibe_params *params,
		    const struct kms_ibe_keys *keys, struct kms_sakke_rskp **out);

/** kms_ibe_open() with a prepared RSK (NULL: as kms_ibe_open). */
int kms_ibe_open_prepared(const struct kms_ibe *ibe,
			  const struct kms_ibe_params *params,
			  const struct kms_ibe_keys *keys,
			  const struct kms_sakke_rskp *rskp, const uint8_t *ad,
			  size_t ad_len, const uint8_t *in, size_t in_len,
			  uint8_t *pt, size_t cap);

/* ---- P-256 for xP, yP, aP ---- */

/** A random scalar x in [1, n-1] and xP. */
int kms_ec_keygen(uint8_t priv[KMS_EC_SCALAR_LEN],
		  uint8_t pub[KMS_EC_POINT_LEN]);

/** 0 if @p pub encodes a point of P-256 other than infinity, else
 *  KMS_ERR_MALFORMED. */
int kms_ec_point_check(const uint8_t pub[KMS_EC_POINT_LEN]);

/** The x coordinate of [priv]peer (ECDH). */
int kms_ec_shared(const uint8_t priv[KMS_EC_SCALAR_LEN],
		  const uint8_t peer[KMS_EC_POINT_LEN],
		  uint8_t out[KMS_EC_SCALAR_LEN]);

/* ---- HKDF-SHA-256 (RFC 5869) ---- */
int kms_hkdf(const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
	     size_t ikm_len, const uint8_t *info, size_t info_len,
	     uint8_t *out, size_t out_len);

/* ---- files ("key = value" lines, '#' comments) ---- */

/** Public parameters: "kgc_id", "zs", "kpak" in hex. Mode 0644. */
int kms_ibe_params_write(const char *path, const struct kms_ibe_params *p);
/** @return KMS_OK, KMS_ERR_IO, KMS_ERR_MALFORMED (also a kgc_id that does
 *  not match zs and kpak). */
int kms_ibe_params_read(const char *path, struct kms_ibe_params *out);

/** Private keys: "id", "period", "rsk", "ssk", "pvt". Mode 0600, written
 *  to a temp file and renamed. */
int kms_ibe_keys_write(const char *path, const struct kms_ibe_keys *k);
int kms_ibe_keys_read(const char *path, struct kms_ibe_keys *out);

#endif /* KMS_IBE_H */
