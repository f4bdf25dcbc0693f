// SPDX-License-Identifier: Apache-2.0
/*
 * Rate-limited logging (kms_log_rl): a burst of one call site prints at
 * most KMS_LOG_RL_BURST lines, counts the rest, and reports the count with
 * the next line let through; other call sites are not affected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kms_log.h"

/* Run @p n messages through @p rl with stderr captured; lines in @p out. */
static unsigned capture(struct kms_log_rl *rl, unsigned n, char *out,
			size_t cap)
{
	char path[] = "/tmp/kms-log-XXXXXX";
	int fd = mkstemp(path), saved = dup(2);
	unsigned lines = 0;
	FILE *f;

	assert_true(fd >= 0 && saved >= 0);
	fflush(stderr);
	assert_int_equal(dup2(fd, 2), 2);
	for (unsigned i = 0; i < n; i++)
		kms_log_rl(KMS_LOG_WARN, rl, "packet %u refused", i);
	fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	f = fdopen(fd, "r");
	assert_non_null(f);
	rewind(f);
	out[0] = 0;
	while (fgets(out + strlen(out), (int)(cap - strlen(out)), f))
		lines++;
	fclose(f);
	unlink(path);
	return lines;
}

static void burst_is_limited(void **state)
{
	struct kms_log_rl rl = { 0 }, other = { 0 };
	char out[8192];

	(void)state;
	kms_log_init("test", KMS_LOG_INFO, 0);
	assert_int_equal(capture(&rl, 25, out, sizeof(out)), KMS_LOG_RL_BURST);
	assert_non_null(strstr(out, "test: warning: packet 0 refused"));
	assert_null(strstr(out, "packet 10 refused"));
	assert_int_equal(rl.suppressed, 25 - KMS_LOG_RL_BURST);
	/* Another call site has its own budget. */
	assert_int_equal(capture(&other, 3, out, sizeof(out)), 3);
	/* A new window: the next line says how many were suppressed. */
	rl.window -= KMS_LOG_RL_WINDOW_S;
	assert_int_equal(capture(&rl, 1, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "(15 similar messages suppressed)"));
	assert_int_equal(rl.suppressed, 0);
	/* Below the level printed: nothing, nothing counted. */
	kms_log_init("test", KMS_LOG_ERR, 0);
	assert_int_equal(capture(&other, 30, out, sizeof(out)), 0);
	assert_int_equal(other.suppressed, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(burst_is_limited),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
