/* SPDX-License-Identifier: Apache-2.0 */
/* kmsd's expiry purge thread (kmsd_purge.c). */
#ifndef KMSD_PURGE_H
#define KMSD_PURGE_H

#include <stdint.h>

#include "kms_ks.h"

struct kmsd_purge;

/**
 * Every @p interval_s seconds, delete expired deposits from @p ks in
 * steps of at most @p batch deposits scanned per write transaction, until
 * a full pass is done. @p interval_s 0: no thread (*out NULL).
 * @return KMS_OK or KMS_ERR_NOMEM.
 */
int kmsd_purge_start(struct kms_ks *ks, uint32_t interval_s, uint32_t batch,
		     struct kmsd_purge **out);
/** Stop, join and free. @return the deposits it purged (0 for NULL). */
uint64_t kmsd_purge_stop(struct kmsd_purge *p);
/** Deposits purged so far (any thread). NULL gives 0. */
uint64_t kmsd_purge_count(const struct kmsd_purge *p);

#endif
