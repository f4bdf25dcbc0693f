/* SPDX-License-Identifier: Apache-2.0 */
/* kmsd's control commands, for kmsd.c (see kmsd_ctl.c). */
#ifndef KMSD_CTL_H
#define KMSD_CTL_H

#include "kms_ctl.h"
#include "kms_engine.h"
#include "kms_sockio.h"
#ifdef KMS_HAVE_DPDK
#include "kms_dpdk.h"
#endif

/** Where the commands read from: one of @p io / @p dp is set. */
struct kmsd_ctl_src {
	const char *crypto_mode;
	unsigned nworkers;
	struct kms_sockio *io;
	struct kms_dp *dp;
};

/** Serve kmsd's command table on @p path; @p src must outlive it. */
int kmsd_ctl_start(const char *path, struct kmsd_ctl_src *src,
		   struct kms_ctl **out);

#endif
