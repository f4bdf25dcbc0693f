// SPDX-License-Identifier: Apache-2.0
#include "lg_hist.h"

/* Bucket of @p v: values below 16 map 1:1; above, the exponent picks a
 * group of 16 and the 4 bits after the leading one pick the bucket. */
static unsigned bucket(uint64_t v)
{
	unsigned e;

	if (v < LG_HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);         /* >= 4 */
	if (e > 40 + 3)
		return LG_HIST_BUCKETS - 1;
	return (e - 3) * LG_HIST_SUB +
	       (unsigned)((v >> (e - 4)) & (LG_HIST_SUB - 1));
}

uint64_t lg_hist_upper(unsigned i)
{
	unsigned g = i / LG_HIST_SUB, s = i % LG_HIST_SUB, e;

	if (g == 0)
		return i;
	e = g + 3;
	/* [2^e + s*2^(e-4), 2^e + (s+1)*2^(e-4)) */
	return (1ull << e) + ((uint64_t)(s + 1) << (e - 4)) - 1;
}

void lg_hist_add(struct lg_hist *h, uint64_t ns)
{
	h->b[bucket(ns)]++;
	h->n++;
	h->sum_ns += ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src)
{
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->n += src->n;
	dst->sum_ns += src->sum_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
}

uint64_t lg_hist_quantile(const struct lg_hist *h, double q)
{
	uint64_t want, seen = 0;

	if (!h->n)
		return 0;
	if (q <= 0)
		q = 0;
	want = (uint64_t)(q * (double)h->n);
	if (want >= h->n)
		want = h->n - 1;
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen > want) {
			/* The last bucket also holds everything larger. */
			uint64_t u = i == LG_HIST_BUCKETS - 1 ? h->max_ns
							     : lg_hist_upper(i);

			return u < h->max_ns ? u : h->max_ns;
		}
	}
	return h->max_ns;
}
