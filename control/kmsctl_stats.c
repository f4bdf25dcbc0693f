// SPDX-License-Identifier: Apache-2.0
/*
 * `kmsctl policy ...`: the live reuse policy, through the same socket.
 *
 * `kmsctl stats [--json | --prometheus]`: kmsd's counters through its
 * control socket, as a summary (default), the JSON kmsd sent, or the
 * Prometheus text exposition format (for node_exporter's textfile
 * collector: per-worker series, which Prometheus sums).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmsctl_stats.h"
#include "kms_ctl.h"

/* One request; the reply if kmsd accepted it, else NULL (said why). */
json_t *kmsctl_call(const char *ctl_path, const char *line)
{
	char err[512];
	json_t *r;

	if (kms_ctl_call(ctl_path, line, &r, err, sizeof(err))) {
		fprintf(stderr, "kmsctl: %s\n", err);
		return NULL;
	}
	if (!json_is_true(json_object_get(r, "ok"))) {
		fprintf(stderr, "kmsctl: kmsd refused: %s\n",
			json_string_value(json_object_get(r, "error")));
		json_decref(r);
		return NULL;
	}
	return r;
}

static unsigned long long u(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_integer(v) ? (unsigned long long)json_integer_value(v) : 0;
}

/* The engine's log2 histograms, as Prometheus histograms. */
static const struct {
	const char *key, *sum, *family;
	double scale;   /* bucket bound and sum in the family's unit */
} hists[] = {
	{ "commit_size_log2", "commit_size_sum", "kms_commit_requests", 1.0 },
	{ "batch_us_log2", "batch_us_sum", "kms_batch_seconds", 1e-6 },
};
#define NHISTS (sizeof(hists) / sizeof(hists[0]))

static int is_hist_key(const char *k)
{
	for (size_t i = 0; i < NHISTS; i++)
		if (!strcmp(k, hists[i].key) || !strcmp(k, hists[i].sum))
			return 1;
	return 0;
}

/* Upper bound of the bucket holding quantile @p q of histogram @p a. */
static double hist_quantile(json_t *a, double q)
{
	unsigned long long total = 0, run = 0;
	size_t i, n = json_array_size(a);

	for (i = 0; i < n; i++)
		total += (unsigned long long)json_integer_value(json_array_get(a, i));
	for (i = 0; total && i < n; i++) {
		run += (unsigned long long)json_integer_value(json_array_get(a, i));
		if ((double)run >= q * (double)total)
			return (double)(2ull << i);
	}
	return 0;
}

static void prom_hist(json_t *per, size_t h)
{
	json_t *w;
	size_t i;

	printf("# TYPE %s histogram\n", hists[h].family);
	json_array_foreach(per, i, w) {
		json_t *a = json_object_get(w, hists[h].key);
		unsigned long long run = 0;
		size_t b, n = json_array_size(a);

		if (!json_is_array(a))
			continue;
		for (b = 0; b < n; b++) {
			run += (unsigned long long)json_integer_value(json_array_get(a, b));
			if (b + 1 < n)
				printf("%s_bucket{worker=\"%zu\",le=\"%g\"} %llu\n",
				       hists[h].family, i,
				       (double)(2ull << b) * hists[h].scale, run);
		}
		printf("%s_bucket{worker=\"%zu\",le=\"+Inf\"} %llu\n",
		       hists[h].family, i, run);
		printf("%s_sum{worker=\"%zu\"} %g\n", hists[h].family, i,
		       (double)u(w, hists[h].sum) * hists[h].scale);
		printf("%s_count{worker=\"%zu\"} %llu\n", hists[h].family, i, run);
	}
}

static void text(json_t *r)
{
	json_t *eng = json_object_get(r, "engine"), *bs, *io, *per, *w;
	const char *kind, *st;
	json_t *sts, *n;
	size_t i;

	printf("kmsd: crypto mode %s, %s I/O, %lld workers\n",
	       json_string_value(json_object_get(r, "crypto_mode")),
	       json_string_value(json_object_get(r, "io")),
	       (long long)json_integer_value(json_object_get(r, "workers")));
	bs = json_object_get(eng, "by_status");
	json_object_foreach(bs, kind, sts) {
		if (!json_object_size(sts))
			continue;
		printf("%-9s", kind);
		json_object_foreach(sts, st, n)
			printf(" %s=%lld", st, (long long)json_integer_value(n));
		printf("\n");
	}
	printf("keys: new %llu (pre-made %llu), re-used %llu; retrievals %llu\n",
	       u(eng, "keys_new"), u(eng, "keys_pooled"), u(eng, "keys_reused"),
	       u(eng, "retrievals"));
	printf("cache: %llu hits, %llu misses (hit rate %.1f%%), %llu evictions; "
	       "HSM calls %llu\n", u(eng, "cache_hits"), u(eng, "cache_misses"),
	       100 * json_real_value(json_object_get(eng, "cache_hit_rate")),
	       u(eng, "cache_evictions"), u(eng, "hsm_calls"));
	printf("party records: %llu from the worker's cache, %llu read from "
	       "the store\n", u(eng, "party_hits"), u(eng, "party_reads"));
	printf("store: %llu commits (%llu failed), %.1f requests a commit\n",
	       u(eng, "commits"), u(eng, "commit_failures"),
	       u(eng, "commits") ? (double)u(eng, "committed_requests") /
				   (double)u(eng, "commits") : 0.0);
	printf("batch service time (admission, commit, replies): p50 < %.0f us, "
	       "p99 < %.0f us\n",
	       hist_quantile(json_object_get(eng, "batch_us_log2"), 0.5),
	       hist_quantile(json_object_get(eng, "batch_us_log2"), 0.99));
	io = json_object_get(r, "io_stats");
	printf("io: rx %llu, tx %llu, ring full %llu", u(io, "rx"), u(io, "tx"),
	       u(io, "ring_full"));
	if (json_object_get(io, "sock_drops")) /* socket mode */
		printf(", socket drops %llu", u(io, "sock_drops"));
	printf("\n");
	per = json_object_get(r, "per_worker");
	json_array_foreach(per, i, w) {
		if (json_is_null(w)) {
			printf("worker %zu: not started\n", i);
			continue;
		}
		printf("worker %zu: %llu requests, %llu batches, cache hits %llu / "
		       "misses %llu\n", i, u(w, "requests"), u(w, "batches"),
		       u(w, "cache_hits"), u(w, "cache_misses"));
	}
}

/* One family per engine counter, a series per worker. */
static void prometheus(json_t *r)
{
	json_t *per = json_object_get(r, "per_worker"), *first = NULL, *w, *v;
	json_t *io = json_object_get(r, "io_stats");
	const char *k;
	size_t i;

	printf("# HELP kms_info The running kmsd's crypto mode and I/O mode.\n"
	       "# TYPE kms_info gauge\n"
	       "kms_info{crypto_mode=\"%s\",io=\"%s\"} 1\n",
	       json_string_value(json_object_get(r, "crypto_mode")),
	       json_string_value(json_object_get(r, "io")));
	json_array_foreach(per, i, w)
		if (!first && json_is_object(w))
			first = w;
	json_object_foreach(first, k, v) {
		if (!json_is_integer(v) || is_hist_key(k))
			continue;
		printf("# TYPE kms_%s_total counter\n", k);
		json_array_foreach(per, i, w)
			if (json_is_object(w))
				printf("kms_%s_total{worker=\"%zu\"} %llu\n", k, i, u(w, k));
	}
	for (size_t h = 0; h < NHISTS; h++)
		prom_hist(per, h);
	printf("# HELP kms_requests_total Requests answered or refused, by type "
	       "and status.\n# TYPE kms_requests_total counter\n");
	json_array_foreach(per, i, w) {
		json_t *sts;
		const char *kind;

		json_object_foreach(json_object_get(w, "by_status"), kind, sts) {
			const char *st;
			json_t *n;

			json_object_foreach(sts, st, n)
				printf("kms_requests_total{worker=\"%zu\",type=\"%s\","
				       "status=\"%s\"} %lld\n", i, kind, st,
				       (long long)json_integer_value(n));
		}
	}
	json_object_foreach(io, k, v) {
		if (json_is_integer(v)) {
			printf("# TYPE kms_io_%s_total counter\nkms_io_%s_total %lld\n",
			       k, k, (long long)json_integer_value(v));
		} else if (json_is_object(v)) {
			const char *cls;
			json_t *n;

			printf("# TYPE kms_io_%s_total counter\n", k);
			json_object_foreach(v, cls, n)
				printf("kms_io_%s_total{class=\"%s\"} %lld\n", k, cls,
				       (long long)json_integer_value(n));
		}
	}
}

int kmsctl_stats(const char *ctl_path, enum kmsctl_stats_fmt fmt)
{
	json_t *r;
	char *s;

	r = kmsctl_call(ctl_path, "stats");
	if (!r)
		return 1;
	json_object_del(r, "ok");
	switch (fmt) {
	case KMSCTL_STATS_JSON:
		s = json_dumps(r, JSON_INDENT(2) | JSON_SORT_KEYS);
		if (s)
			puts(s);
		free(s);
		break;
	case KMSCTL_STATS_PROMETHEUS:
		prometheus(r);
		break;
	default:
		text(r);
	}
	json_decref(r);
	return 0;
}

static void policy_line(const char *what, json_t *p)
{
	printf("%-24s reuse_max_deposits=%lld reuse_max_age_s=%lld "
	       "deposit_lifetime_s=%lld max_retrievals=%lld\n", what,
	       (long long)json_integer_value(json_object_get(p, "reuse_max_deposits")),
	       (long long)json_integer_value(json_object_get(p, "reuse_max_age_s")),
	       (long long)json_integer_value(json_object_get(p, "deposit_lifetime_s")),
	       (long long)json_integer_value(json_object_get(p, "max_retrievals")));
}

int kmsctl_policy(const char *ctl_path, const char *domain, const char *pair,
		  int n, char **words, int json)
{
	char line[KMS_CTL_LINE_MAX];
	json_t *r, *pol, *v;
	const char *k;
	size_t used;
	char *s;

	if (n < 1 || (strcmp(words[0], "show") && strcmp(words[0], "set") &&
		      strcmp(words[0], "clear")) ||
	    (!strcmp(words[0], "show") && n != 1) ||
	    (!strcmp(words[0], "set") && n < 2) ||
	    (!strcmp(words[0], "clear") && (n != 1 || !(domain || pair))) ||
	    (domain && pair)) {
		fprintf(stderr, "kmsctl: policy show | set [--domain D | --pair A,B] "
			"NAME=VALUE... | clear --domain D | --pair A,B\n");
		return 2;
	}
	used = (size_t)snprintf(line, sizeof(line), "policy-%s", words[0]);
	if ((domain || pair) && strcmp(words[0], "show"))
		used += (size_t)snprintf(line + used, sizeof(line) - used,
					 " %s=%s", domain ? "domain" : "pair",
					 domain ? domain : pair);
	for (int i = 1; i < n && used < sizeof(line); i++)
		used += (size_t)snprintf(line + used, sizeof(line) - used, " %s",
					 words[i]);
	if (used >= sizeof(line)) {
		fprintf(stderr, "kmsctl: policy: arguments too long\n");
		return 2;
	}
	r = kmsctl_call(ctl_path, line);
	if (!r)
		return 1;
	pol = json_object_get(r, "policy");
	if (json) {
		s = json_dumps(pol, JSON_INDENT(2) | JSON_SORT_KEYS);
		if (s)
			puts(s);
		free(s);
	} else {
		policy_line("default", json_object_get(pol, "default"));
		json_object_foreach(json_object_get(pol, "domains"), k, v) {
			char what[96];

			snprintf(what, sizeof(what), "@%s", k);
			policy_line(what, v);
		}
		json_object_foreach(json_object_get(pol, "pairs"), k, v) {
			char what[300];

			snprintf(what, sizeof(what), "pair %s", k);
			policy_line(what, v);
		}
	}
	json_decref(r);
	return 0;
}
