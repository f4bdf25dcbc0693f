/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_kekrot.h
 * @brief KEK rotation while kmsd serves: every wrapped blob re-wrapped
 *        under a new KEK in bounded batches, then the old KEK destroyed.
 *
 * Steps (each safe to interrupt; running again resumes):
 *  1. audit "start"; the next KEK is created (hsm/): from now on every
 *     session wraps new blobs under it and unwraps under either KEK, and
 *     pre-made keys of the old epoch are discarded (crypto_offload.c);
 *  2. passes over the store (kms_ks_rewrap_step: parties, pairs, deposits,
 *     the IBE seed), each followed by @p sync, until a pass finds no blob
 *     under the old KEK. @p sync waits until every worker batch that began
 *     before the call has ended (kmsd: an RCU grace period), so a batch
 *     that read an old blob before a pass re-wrapped it, and stored a copy
 *     after the pass went by, is caught by the next pass;
 *  3. the old KEK is destroyed and the new one takes its label;
 *  4. audit "done".
 * Requests keep being served throughout: a worker's commit waits behind
 * at most one step (@p batch records, each one re-wrap inside the HSM).
 */
#ifndef KMS_KEKROT_H
#define KMS_KEKROT_H

#include <stdint.h>

#include "kms_hsm.h"
#include "kms_ks.h"

/** Progress, readable by another thread while the rotation runs. */
struct kms_kekrot_progress {
	uint64_t visited;        /**< records looked at, all passes */
	uint64_t rewrapped;      /**< blobs re-wrapped */
	uint32_t passes;
	int running, done;       /**< done: the old KEK is gone */
	int error;               /**< a negative enum kms_err, or 0 */
};

struct kms_kekrot_conf {
	unsigned batch;                /**< records per write transaction */
	void (*sync)(void *arg);       /**< NULL: nothing runs concurrently */
	void *sync_arg;
	const char *actor;             /**< for the audit records */
	const int *stop;               /**< non-zero (read atomically): stop
	                                    after the current step, KMS_ERR_BUSY */
	struct kms_kekrot_progress *progress; /**< may be NULL */
};

/** Run (or resume) a KEK rotation. @return KMS_OK or the first error (the
 *  rotation can be run again to resume). */
int kms_kek_rotate(struct kms_ks *ks, struct kms_hsm *hsm,
		   const struct kms_kekrot_conf *conf);

#endif /* KMS_KEKROT_H */
