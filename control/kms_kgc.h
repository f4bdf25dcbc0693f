/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_kgc.h
 * @brief The KMS as identity-based key generation centre (MIKEY-IBAKE):
 *        its master secret and the private keys it issues.
 *
 * The master secret is one 32-byte seed drawn from the HSM's RNG and kept
 * only wrapped under the KEK (keystore meta "ibe_seed", hex of the blob);
 * the SAKKE master secret z and the ECCSI KSAK are derived from it
 * (kms_ibe_master_derive). The public parameters are kept beside it
 * ("ibe_params": hex of Z_S | KPAK), so `kmsctl ibe show` needs no HSM.
 * Initialising writes both and an audit record in one durable commit.
 *
 * Key escrow is inherent: whoever holds the seed can derive every party's
 * RSK and so decrypt every IBE_B(ID-A, aP) (docs/ARCHITECTURE.md).
 *
 * A loaded struct kms_kgc keeps z and KSAK in locked, non-dumpable memory
 * and is read-only afterwards: workers share it.
 */
#ifndef KMS_KGC_H
#define KMS_KGC_H

#include "kms_hsm.h"
#include "kms_ibe.h"
#include "kms_ks.h"

struct kms_kgc;

/** Create the master seed (HSM RNG), wrap it, store it with the public
 *  parameters and an audit record by @p actor. @return KMS_OK,
 *  KMS_ERR_EXISTS (already initialised: nothing changed), KMS_ERR_HSM,
 *  store errors. */
int kms_kgc_init(struct kms_ks *ks, struct kms_hsm_session *s,
		 const char *actor, struct kms_ibe_params *out);

/** The stored public parameters. @return KMS_OK, KMS_ERR_NOTFOUND (not
 *  initialised), KMS_ERR_CORRUPT. */
int kms_kgc_public(struct kms_ks *ks, struct kms_ibe_params *out);

/** Unwrap the seed through @p s and derive the secrets; checks them
 *  against the stored public parameters. @return KMS_OK,
 *  KMS_ERR_NOTFOUND (not initialised), KMS_ERR_AUTH (the blob does not
 *  unwrap under this KEK), KMS_ERR_CORRUPT (derived parameters differ),
 *  KMS_ERR_NOMEM (locked memory). */
int kms_kgc_load(struct kms_ks *ks, struct kms_hsm_session *s,
		 struct kms_kgc **out);
void kms_kgc_free(struct kms_kgc *kgc);

const struct kms_ibe_params *kms_kgc_params(const struct kms_kgc *kgc);

/** RSK | SSK | PVT (KMS_IBE_KEYS_PT_LEN bytes) for @p x in @p period.
 *  Thread-safe. The caller wipes @p pt. */
int kms_kgc_issue(const struct kms_kgc *kgc, const struct kms_id *x,
		  const char *period, uint8_t pt[KMS_IBE_KEYS_PT_LEN]);

#endif /* KMS_KGC_H */
