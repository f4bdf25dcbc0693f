// SPDX-License-Identifier: Apache-2.0
/*
 * KEK rotation driver (kms_kekrot.h).
 */
#include <string.h>
#include <time.h>

#include "kms_err.h"
#include "kms_kekrot.h"
#include "kms_log.h"

#define MAX_PASSES 16

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int audit(struct kms_ks *ks, const char *actor, const char *what,
		 uint32_t count)
{
	struct kms_ks_txn *txn;
	struct kms_audit au;
	int rc;

	memset(&au, 0, sizeof(au));
	au.event = KMS_AUD_KEK_ROTATE;
	au.time_ms = wall_ms();
	au.actor_len = (uint8_t)strnlen(actor, KMS_ID_MAX);
	memcpy(au.actor, actor, au.actor_len);
	au.id_a_len = (uint8_t)strlen(what);
	memcpy(au.id_a, what, au.id_a_len);
	au.k_gen = count;
	rc = kms_ks_txn_begin(ks, 0, &txn);
	if (rc)
		return rc;
	kms_ks_audit_append(txn, &au);
	return kms_ks_txn_commit(txn);
}

static int rewrap(void *arg, const uint8_t in[KMS_HSM_BLOB_LEN],
		  uint8_t out[KMS_HSM_BLOB_LEN])
{
	return kms_hsm_rewrap(arg, in, out);
}

static void set(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

int kms_kek_rotate(struct kms_ks *ks, struct kms_hsm *hsm,
		   const struct kms_kekrot_conf *conf)
{
	struct kms_kekrot_progress dummy, *pg = conf->progress ? conf->progress
							      : &dummy;
	struct kms_hsm_session *s = NULL;
	uint64_t visited = 0, rewrapped = 0;
	unsigned batch = conf->batch ? conf->batch : 64;
	int rc;

	__atomic_store_n(&pg->visited, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&pg->rewrapped, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&pg->passes, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&pg->done, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&pg->error, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&pg->running, 1, __ATOMIC_RELEASE);
	rc = audit(ks, conf->actor, "start", 0);
	if (rc)
		goto out;
	rc = kms_hsm_kek_next_create(hsm);
	if (rc == KMS_ERR_EXISTS) {
		KMS_INFO("kek rotation: resuming (the next KEK exists)");
		rc = KMS_OK;
	}
	if (rc)
		goto out;
	rc = kms_hsm_session_open(hsm, &s);
	if (rc)
		goto out;
	/* Batches that began before the switch may still wrap under the old
	 * KEK: the first pass starts after them (later ones are caught by
	 * the pass after them). */
	if (conf->sync)
		conf->sync(conf->sync_arg);
	for (unsigned pass = 1; pass <= MAX_PASSES; pass++) {
		struct kms_ks_rewrap cur;
		uint64_t changed = 0;

		memset(&cur, 0, sizeof(cur));
		while (!kms_ks_rewrap_done(&cur)) {
			unsigned v, c;

			if (conf->stop &&
			    __atomic_load_n(conf->stop, __ATOMIC_ACQUIRE)) {
				rc = KMS_ERR_BUSY; /* interrupted: resumable */
				goto out;
			}
			rc = kms_ks_rewrap_step(ks, &cur, batch, rewrap, s, &v,
						&c);
			if (rc)
				goto out;
			visited += v;
			changed += c;
			set(&pg->visited, visited);
			set(&pg->rewrapped, rewrapped + changed);
		}
		rewrapped += changed;
		__atomic_store_n(&pg->passes, pass, __ATOMIC_RELAXED);
		KMS_INFO("kek rotation: pass %u re-wrapped %llu blob(s)", pass,
			 (unsigned long long)changed);
		if (conf->sync)
			conf->sync(conf->sync_arg);
		if (!changed)
			break;
		if (pass == MAX_PASSES) {
			KMS_ERR("kek rotation: still finding old blobs after %u "
				"passes: the old KEK is kept", pass);
			rc = KMS_ERR_BUSY;
			goto out;
		}
	}
	rc = kms_hsm_kek_finish(hsm);
	if (!rc)
		rc = audit(ks, conf->actor, "done",
			   rewrapped > UINT32_MAX ? UINT32_MAX
						  : (uint32_t)rewrapped);
	if (!rc)
		__atomic_store_n(&pg->done, 1, __ATOMIC_RELEASE);
out:
	kms_hsm_session_close(s);
	if (rc) {
		KMS_ERR("kek rotation stopped: %s (run it again to resume)",
			kms_strerror(rc));
		__atomic_store_n(&pg->error, rc, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&pg->running, 0, __ATOMIC_RELEASE);
	return rc;
}
