// SPDX-License-Identifier: Apache-2.0
/*
 * kms-loadgen's own parts: the latency histogram against exact quantiles
 * of the same samples, and the population file reader against good and
 * bad files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lg_hist.h"
#include "lg_pop.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Every quantile is within one sub-bucket (1/16) above the exact value,
 * never below it, and never above the maximum. */
static void hist_quantiles(void **state)
{
	enum { N = 100000 };
	static const double qs[] = { 0, .1, .5, .9, .99, .999, .9999, 1 };
	uint64_t *v = malloc(N * sizeof(*v)), x = 88172645463325252ull;
	struct lg_hist *h = calloc(1, sizeof(*h));

	(void)state;
	assert_non_null(v);
	assert_non_null(h);
	for (int i = 0; i < N; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* log-uniform from 1 ns to ~1 s */
		v[i] = (uint64_t)1 << (x % 30);
		v[i] += (x >> 32) % v[i];
		lg_hist_add(h, v[i]);
	}
	qsort(v, N, sizeof(*v), cmp_u64);
	assert_int_equal(h->n, N);
	assert_int_equal(h->max_ns, v[N - 1]);
	for (unsigned i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		size_t k = (size_t)(qs[i] * N);
		uint64_t exact = v[k >= N ? N - 1 : k];
		uint64_t got = lg_hist_quantile(h, qs[i]);

		assert_true(got >= exact);
		assert_true(got <= v[N - 1]);
		assert_true((double)got <= (double)exact * (1.0 + 1.0 / 16) + 1);
	}
	free(v);
	free(h);
}

static void hist_edges(void **state)
{
	struct lg_hist *h = calloc(1, sizeof(*h)), *m = calloc(1, sizeof(*m));

	(void)state;
	assert_int_equal(lg_hist_quantile(h, 0.5), 0);          /* empty */
	for (uint64_t v = 0; v < 16; v++)
		assert_int_equal(lg_hist_upper((unsigned)v), v);  /* exact */
	lg_hist_add(h, 0);
	lg_hist_add(h, UINT64_MAX);                             /* clamps */
	assert_int_equal(lg_hist_quantile(h, 0), 0);
	assert_int_equal(lg_hist_quantile(h, 1), UINT64_MAX);
	lg_hist_add(m, 1000);
	lg_hist_merge(m, h);
	assert_int_equal(m->n, 3);
	assert_int_equal(m->max_ns, UINT64_MAX);
	/* Bucket bounds are increasing. */
	for (unsigned i = 1; i < LG_HIST_BUCKETS; i++)
		assert_true(lg_hist_upper(i) > lg_hist_upper(i - 1));
	free(h);
	free(m);
}

static char dir[64];

static const char *write_file(const char *name, mode_t mode, const char *text)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

#define K64 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static void pop_good(void **state)
{
	struct lg_pop pop;
	char err[256];
	const char *p = write_file("good", 0600,
		"# population\n\nuser sip:a@x 1 " K64 "\nuser sip:b@x 7 " K64
		"\nas sip:mb@x 2 " K64 "\n");

	(void)state;
	assert_int_equal(lg_pop_read(p, &pop, err, sizeof(err)), 0);
	assert_int_equal(pop.nusers, 2);
	assert_int_equal(pop.nas, 1);
	assert_string_equal(pop.users[1].id, "sip:b@x");
	assert_int_equal(pop.users[1].id_len, 7);
	assert_int_equal(pop.users[1].gen, 7);
	assert_int_equal(pop.as[0].key[31], 0x1f);
	lg_pop_free(&pop);
	assert_null(pop.users);
}

static void pop_bad(void **state)
{
	static const struct {
		const char *text, *why;
		mode_t mode;
	} bad[] = {
		{ "user sip:a@x 1 " K64 "\nuser sip:b@x 1 " K64 "\nas sip:m@x 1 " K64 "\n",
		  "readable by group", 0640 },
		{ "user sip:a@x 1 " K64 "\nuser sip:a@x 1 " K64 "\nas sip:m@x 1 " K64 "\n",
		  "appears twice", 0600 },
		{ "user sip:a@x 1 " K64 "\nuser sip:b@x 1 " K64 "\n",
		  "at least 2 users and 1 AS", 0600 },
		{ "user sip:a@x 1 " K64 "\nuser sip:b@x 0 " K64 "\nas sip:m@x 1 " K64 "\n",
		  ":2:", 0600 },
		{ "user sip:a@x 1 " K64 "00\n", ":1:", 0600 },
		{ "admin sip:a@x 1 " K64 "\n", ":1:", 0600 },
		{ "user sip:a@x 1 " K64 " extra\n", ":1:", 0600 },
		{ "user sip:a@x 1 zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
		  "bad key hex", 0600 },
		{ "user sip:a@x\n", ":1:", 0600 },
	};
	struct lg_pop pop;
	char err[256];

	(void)state;
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *p = write_file("bad", bad[i].mode, bad[i].text);

		err[0] = '\0';
		assert_int_equal(lg_pop_read(p, &pop, err, sizeof(err)), -1);
		if (!strstr(err, bad[i].why))
			fail_msg("case %u: '%s' does not say '%s'", i, err, bad[i].why);
		assert_null(pop.users);
		assert_null(pop.as);
	}
	assert_int_equal(lg_pop_read("/nonexistent/pop", &pop, err, sizeof(err)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(hist_quantiles),
		cmocka_unit_test(hist_edges),
		cmocka_unit_test(pop_good),
		cmocka_unit_test(pop_bad),
	};
	int rc;

	snprintf(dir, sizeof(dir), "/tmp/test_lg-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			rc = rc ? rc : 1;
	}
	return rc;
}
