// SPDX-License-Identifier: Apache-2.0
/*
 * The KMS as identity-based key generation centre (kms_kgc.h).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "kms_err.h"
#include "kms_keyfile.h"
#include "kms_kgc.h"
#include "kms_log.h"
#include "kms_secmem.h"

#define META_SEED "ibe_seed"
#define META_PARAMS "ibe_params"
#define PARAMS_RAW (KMS_SAKKE_POINT_LEN + KMS_ECCSI_POINT_LEN)

struct kgc_secret {
	uint8_t z[KMS_SAKKE_Z_LEN];
	uint8_t ksak[KMS_ECCSI_SCALAR_LEN];
};

struct kms_kgc {
	struct kms_ibe *ibe;
	struct kms_ibe_params params;
	struct kms_secmem *mem;
	struct kgc_secret *sec;     /* in mem */
};

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int params_text(const struct kms_ibe_params *p, char *out)
{
	uint8_t raw[PARAMS_RAW];

	memcpy(raw, p->zs, KMS_SAKKE_POINT_LEN);
	memcpy(raw + KMS_SAKKE_POINT_LEN, p->kpak, KMS_ECCSI_POINT_LEN);
	kms_hex_encode(raw, sizeof(raw), out);
	return KMS_OK;
}

int kms_kgc_public(struct kms_ks *ks, struct kms_ibe_params *out)
{
	char hex[2 * PARAMS_RAW + 2];
	struct kms_ibe_params p;
	struct kms_ks_txn *txn;
	uint8_t raw[PARAMS_RAW];
	int rc;

	rc = kms_ks_txn_begin(ks, 1, &txn);
	if (rc)
		return rc;
	rc = kms_ks_meta_get(txn, META_PARAMS, hex, sizeof(hex));
	kms_ks_txn_abort(txn);
	if (rc)
		return rc == KMS_ERR_SPACE ? KMS_ERR_CORRUPT : rc;
	if (strlen(hex) != 2 * PARAMS_RAW ||
	    kms_hex_decode(hex, raw, sizeof(raw)) != PARAMS_RAW)
		return KMS_ERR_CORRUPT;
	memcpy(p.zs, raw, KMS_SAKKE_POINT_LEN);
	memcpy(p.kpak, raw + KMS_SAKKE_POINT_LEN, KMS_ECCSI_POINT_LEN);
	/* The kgc_id is a hash of the rest. */
	kms_ibe_params_kgc_id(&p);
	*out = p;
	return KMS_OK;
}

int kms_kgc_init(struct kms_ks *ks, struct kms_hsm_session *s,
		 const char *actor, struct kms_ibe_params *out)
{
	uint8_t seed[KMS_IBE_SEED_LEN], blob[KMS_HSM_BLOB_LEN];
	char blob_hex[2 * KMS_HSM_BLOB_LEN + 1], params_hex[2 * PARAMS_RAW + 1];
	char probe[8];
	struct kgc_secret sec;
	struct kms_ibe_params p;
	struct kms_ks_txn *txn = NULL;
	struct kms_ibe *ibe = NULL;
	struct kms_audit au;
	int rc;

	rc = kms_ks_txn_begin(ks, 1, &txn);
	if (rc)
		return rc;
	rc = kms_ks_meta_get(txn, META_SEED, probe, sizeof(probe));
	kms_ks_txn_abort(txn);
	if (rc != KMS_ERR_NOTFOUND)
		return rc == KMS_OK || rc == KMS_ERR_SPACE ? KMS_ERR_EXISTS : rc;

	rc = kms_hsm_new_key(s, seed, blob);
	if (!rc)
		rc = kms_ibe_new(&ibe);
	if (!rc)
		rc = kms_ibe_master_derive(ibe, seed, sec.z, sec.ksak);
	if (!rc)
		rc = kms_ibe_params_make(ibe, sec.z, sec.ksak, &p);
	OPENSSL_cleanse(seed, sizeof(seed));
	OPENSSL_cleanse(&sec, sizeof(sec));
	kms_ibe_free(ibe);
	if (rc)
		return rc;
	kms_hex_encode(blob, sizeof(blob), blob_hex);
	params_text(&p, params_hex);

	memset(&au, 0, sizeof(au));
	au.event = KMS_AUD_IBE_INIT;
	au.time_ms = wall_ms();
	au.actor_len = (uint8_t)strnlen(actor, KMS_ID_MAX);
	memcpy(au.actor, actor, au.actor_len);
	rc = kms_ks_txn_begin(ks, 0, &txn);
	if (rc)
		return rc;
	/* Another kmsctl may have won the race since the probe: re-check
	 * inside the write transaction. */
	if (kms_ks_meta_get(txn, META_SEED, probe, sizeof(probe)) !=
	    KMS_ERR_NOTFOUND) {
		kms_ks_txn_abort(txn);
		return KMS_ERR_EXISTS;
	}
	kms_ks_meta_put(txn, META_SEED, blob_hex);
	kms_ks_meta_put(txn, META_PARAMS, params_hex);
	kms_ks_audit_append(txn, &au);
	rc = kms_ks_txn_commit(txn);
	if (!rc)
		*out = p;
	return rc;
}

int kms_kgc_load(struct kms_ks *ks, struct kms_hsm_session *s,
		 struct kms_kgc **out)
{
	char blob_hex[2 * KMS_HSM_BLOB_LEN + 2];
	uint8_t blob[KMS_HSM_BLOB_LEN];
	struct kms_ibe_params stored, derived;
	struct kms_ks_txn *txn;
	struct kms_kgc *k;
	uint8_t *seed;
	int rc;

	rc = kms_kgc_public(ks, &stored);
	if (rc)
		return rc;
	rc = kms_ks_txn_begin(ks, 1, &txn);
	if (rc)
		return rc;
	rc = kms_ks_meta_get(txn, META_SEED, blob_hex, sizeof(blob_hex));
	kms_ks_txn_abort(txn);
	if (rc)
		return rc == KMS_ERR_SPACE ? KMS_ERR_CORRUPT : rc;
	if (strlen(blob_hex) != 2 * KMS_HSM_BLOB_LEN ||
	    kms_hex_decode(blob_hex, blob, sizeof(blob)) != KMS_HSM_BLOB_LEN)
		return KMS_ERR_CORRUPT;

	k = calloc(1, sizeof(*k));
	if (!k)
		return KMS_ERR_NOMEM;
	/* Two slots: the secrets, and the seed while it is needed. */
	rc = kms_secmem_create(sizeof(struct kgc_secret), 2, &k->mem);
	if (rc)
		goto err;
	k->sec = kms_secmem_alloc(k->mem);
	seed = kms_secmem_alloc(k->mem);
	rc = kms_ibe_new(&k->ibe);
	if (!rc)
		rc = kms_hsm_unwrap(s, blob, seed);
	if (!rc)
		rc = kms_ibe_master_derive(k->ibe, seed, k->sec->z, k->sec->ksak);
	kms_secmem_free(k->mem, seed);
	if (!rc)
		rc = kms_ibe_params_make(k->ibe, k->sec->z, k->sec->ksak,
					 &derived);
	if (rc)
		goto err;
	if (memcmp(&derived, &stored, sizeof(derived))) {
		KMS_ERR("kgc: the IBE master secret does not match the stored "
			"public parameters");
		rc = KMS_ERR_CORRUPT;
		goto err;
	}
	k->params = derived;
	*out = k;
	return KMS_OK;
err:
	kms_kgc_free(k);
	return rc;
}

void kms_kgc_free(struct kms_kgc *kgc)
{
	if (!kgc)
		return;
	kms_ibe_free(kgc->ibe);
	kms_secmem_destroy(kgc->mem); /* wipes z and KSAK */
	free(kgc);
}

const struct kms_ibe_params *kms_kgc_params(const struct kms_kgc *kgc)
{
	return &kgc->params;
}

int kms_kgc_issue(const struct kms_kgc *kgc, const struct kms_id *x,
		  const char *period, uint8_t pt[KMS_IBE_KEYS_PT_LEN])
{
	struct kms_ibe_keys keys;
	int rc;

	rc = kms_ibe_issue(kgc->ibe, kgc->sec->z, kgc->sec->ksak, &kgc->params,
			   x, period, &keys);
	if (rc)
		return rc;
	memcpy(pt, keys.rsk, KMS_SAKKE_POINT_LEN);
	memcpy(pt + KMS_SAKKE_POINT_LEN, keys.ssk, KMS_ECCSI_SCALAR_LEN);
	memcpy(pt + KMS_SAKKE_POINT_LEN + KMS_ECCSI_SCALAR_LEN, keys.pvt,
	       KMS_ECCSI_POINT_LEN);
	kms_ibe_keys_wipe(&keys);
	return KMS_OK;
}
