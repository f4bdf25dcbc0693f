/* SPDX-License-Identifier: Apache-2.0 */
/* kmsd's control commands, for kmsd.c (see kmsd_ctl.c). */
#ifndef KMSD_CTL_H
#define KMSD_CTL_H

#include "kms_ctl.h"
#include "kms_engine.h"
#include "kms_sockio.h"
#include "kmsd_purge.h"
#ifdef KMS_HAVE_DPDK
#include "kms_dpdk.h"
#endif

/** Where the commands read from: one of @p io / @p dp is set. */
struct kmsd_ctl_src {
	const char *crypto_mode;
	unsigned nworkers;
	struct kms_engine *eng;   /**< policy swaps */
	struct kms_ks *ks;        /**< the policy is persisted here */
	int deferred;             /**< store.retrieve_records = deferred */
	struct kmsd_purge *purge; /**< NULL when the purge is off */
	struct kms_sockio *io;
	struct kms_dp *dp;
};

/** Serve kmsd's command table on @p path; @p src must outlive it. */
int kmsd_ctl_start(const char *path, struct kmsd_ctl_src *src,
		   struct kms_ctl **out);

/**
 * The policy set kmsd starts with: the store's meta record "policy" if
 * there is one (it was set live and persisted), else @p dflt with no
 * overrides. @return KMS_OK, KMS_ERR_CORRUPT (the stored policy does not
 * parse: logged), or a store error.
 */
int kmsd_policy_load(struct kms_ks *ks, const struct kms_policy *dflt,
		     struct kms_policy_set *out);

#endif
