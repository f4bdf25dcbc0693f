/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file lg_hist.h
 * @brief Log-bucketed latency histogram: 16 linear sub-buckets per power of
 *        two of nanoseconds (relative error under 6.25%), 1 ns .. 2^40 ns.
 */
#ifndef LG_HIST_H
#define LG_HIST_H

#include <stdint.h>

#define LG_HIST_SUB 16
#define LG_HIST_BUCKETS (41 * LG_HIST_SUB)

struct lg_hist {
	uint64_t n, sum_ns, max_ns;
	uint64_t b[LG_HIST_BUCKETS];
};

void lg_hist_add(struct lg_hist *h, uint64_t ns);
/** Merge @p src into @p dst. */
void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src);
/** Upper bound of bucket @p i in ns. */
uint64_t lg_hist_upper(unsigned i);
/** The value at quantile @p q (0..1): the upper bound of the bucket that
 *  holds it, capped at the maximum seen. 0 when empty. */
uint64_t lg_hist_quantile(const struct lg_hist *h, double q);

#endif /* LG_HIST_H */
