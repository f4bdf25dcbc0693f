// SPDX-License-Identifier: Apache-2.0
/*
 * kmsd's live KEK rotation (kmsd_kekrot.h): kms_kek_rotate() on a thread
 * of its own, with the engine's RCU grace period as the "every batch that
 * began before has ended" barrier.
 */
#include <pthread.h>
#include <string.h>

#include "kms_err.h"
#include "kms_log.h"
#include "kmsd_kekrot.h"

static struct {
	pthread_mutex_t lock;      /* started, thread */
	int started;               /* a thread exists (running or finished) */
	pthread_t thread;
	struct kms_ks *ks;
	struct kms_engine *eng;
	int stop;
	struct kms_kekrot_progress pg;
} kr = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void sync_engine(void *arg)
{
	kms_engine_sync(arg);
}

static void *run(void *arg)
{
	struct kms_kekrot_conf conf = {
		.batch = 8, .sync = sync_engine, .sync_arg = kr.eng,
		.actor = "kmsd", .progress = &kr.pg, .stop = &kr.stop,
	};

	(void)arg;
	kms_kek_rotate(kr.ks, kms_engine_hsm(kr.eng), &conf);
	return NULL;
}

int kmsd_kekrot_start(struct kms_ks *ks, struct kms_engine *eng)
{
	int rc = KMS_OK;

	pthread_mutex_lock(&kr.lock);
	if (kr.started && __atomic_load_n(&kr.pg.running, __ATOMIC_ACQUIRE)) {
		rc = KMS_ERR_BUSY;
		goto out;
	}
	if (kr.started) {
		pthread_join(kr.thread, NULL);
		kr.started = 0;
	}
	kr.ks = ks;
	kr.eng = eng;
	kr.stop = 0;
	memset(&kr.pg, 0, sizeof(kr.pg));
	kr.pg.running = 1; /* visible before the thread runs */
	if (pthread_create(&kr.thread, NULL, run, NULL)) {
		kr.pg.running = 0;
		rc = KMS_ERR_NOMEM;
		goto out;
	}
	kr.started = 1;
	KMS_INFO("kek rotation started");
out:
	pthread_mutex_unlock(&kr.lock);
	return rc;
}

void kmsd_kekrot_status(struct kms_kekrot_progress *out)
{
	out->visited = __atomic_load_n(&kr.pg.visited, __ATOMIC_RELAXED);
	out->rewrapped = __atomic_load_n(&kr.pg.rewrapped, __ATOMIC_RELAXED);
	out->passes = __atomic_load_n(&kr.pg.passes, __ATOMIC_RELAXED);
	out->running = __atomic_load_n(&kr.pg.running, __ATOMIC_ACQUIRE);
	out->done = __atomic_load_n(&kr.pg.done, __ATOMIC_ACQUIRE);
	out->error = __atomic_load_n(&kr.pg.error, __ATOMIC_ACQUIRE);
}

void kmsd_kekrot_stop(void)
{
	pthread_mutex_lock(&kr.lock);
	if (kr.started) {
		__atomic_store_n(&kr.stop, 1, __ATOMIC_RELEASE);
		pthread_join(kr.thread, NULL);
		kr.started = 0;
	}
	pthread_mutex_unlock(&kr.lock);
}
