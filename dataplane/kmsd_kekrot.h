/* SPDX-License-Identifier: Apache-2.0 */
/* kmsd's live KEK rotation: one background thread at a time (see
 * control/kms_kekrot.h for the procedure). */
#ifndef KMSD_KEKROT_H
#define KMSD_KEKROT_H

#include "kms_engine.h"
#include "kms_kekrot.h"
#include "kms_ks.h"

/** Start a rotation in the background. @return KMS_OK, KMS_ERR_BUSY (one
 *  is running), KMS_ERR_NOMEM. */
int kmsd_kekrot_start(struct kms_ks *ks, struct kms_engine *eng);

/** The running or last rotation's progress (all zero: none yet). */
void kmsd_kekrot_status(struct kms_kekrot_progress *out);

/** At shutdown: ask a running rotation to stop after its current step
 *  (it resumes on the next `kmsctl kek-rotate`) and join it. */
void kmsd_kekrot_stop(void);

#endif
