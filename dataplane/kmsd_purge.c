// SPDX-License-Identifier: Apache-2.0
/*
 * Expired deposits are deleted in the background, in bounded steps: each
 * step is one write transaction scanning at most `batch` deposits, so a
 * worker's commit waits behind at most one step. A RETRIEVE of a purged
 * deposit is answered UNKNOWN_KEY_ID instead of DEPOSIT_EXPIRED; nothing
 * that could still be retrieved is ever deleted.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmsd_purge.h"
#include "kms_err.h"
#include "kms_log.h"

struct kmsd_purge {
	struct kms_ks *ks;
	uint32_t interval_s, batch;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stop;
	_Atomic uint64_t purged;
};

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One full pass. @return deposits deleted, or a negative error. */
static int64_t pass(struct kmsd_purge *p)
{
	uint8_t from[KMS_KEY_ID_LEN], next[KMS_KEY_ID_LEN];
	const uint8_t *fp = NULL;
	int64_t total = 0;
	int more, n, rc;

	do {
		struct kms_ks_txn *t;

		rc = kms_ks_txn_begin(p->ks, 0, &t);
		if (rc)
			return rc;
		n = kms_ks_deposit_purge(t, wall_ms(), fp, p->batch, next, &more);
		if (n < 0) {
			kms_ks_txn_abort(t);
			return n;
		}
		rc = n ? kms_ks_txn_commit(t) : (kms_ks_txn_abort(t), KMS_OK);
		if (rc)
			return rc;
		total += n;
		p->purged += (uint64_t)n;
		memcpy(from, next, sizeof(from));
		fp = from;
		pthread_mutex_lock(&p->lock);
		more = more && !p->stop;
		pthread_mutex_unlock(&p->lock);
	} while (more);
	return total;
}

static void *purge_main(void *arg)
{
	struct kmsd_purge *p = arg;

	for (;;) {
		struct timespec until;
		int64_t n;
		int stop;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += p->interval_s;
		pthread_mutex_lock(&p->lock);
		while (!p->stop &&
		       pthread_cond_timedwait(&p->cond, &p->lock, &until) != ETIMEDOUT)
			;
		stop = p->stop;
		pthread_mutex_unlock(&p->lock);
		if (stop)
			break;
		n = pass(p);
		if (n < 0)
			KMS_WARN("purge: %s (retried in %u s)",
				 kms_strerror((int)n), p->interval_s);
		else if (n > 0)
			KMS_INFO("purge: %lld expired deposits deleted (%llu so far)",
				 (long long)n, (unsigned long long)p->purged);
	}
	return NULL;
}

int kmsd_purge_start(struct kms_ks *ks, uint32_t interval_s, uint32_t batch,
		     struct kmsd_purge **out)
{
	struct kmsd_purge *p;

	*out = NULL;
	if (!interval_s)
		return KMS_OK;
	p = calloc(1, sizeof(*p));
	if (!p)
		return KMS_ERR_NOMEM;
	p->ks = ks;
	p->interval_s = interval_s;
	p->batch = batch ? batch : 1000;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	if (pthread_create(&p->thread, NULL, purge_main, p)) {
		free(p);
		return KMS_ERR_NOMEM;
	}
	*out = p;
	return KMS_OK;
}

uint64_t kmsd_purge_stop(struct kmsd_purge *p)
{
	uint64_t n;

	if (!p)
		return 0;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	n = p->purged;
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return n;
}

uint64_t kmsd_purge_count(const struct kmsd_purge *p)
{
	return p ? p->purged : 0;
}
