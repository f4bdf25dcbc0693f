// SPDX-License-Identifier: Apache-2.0
/* The INI configuration: defaults, overrides, and errors naming file:line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kms_config.h"
#include "kms_err.h"

static char path[64];

static int load(const char *text, struct kms_config *cfg, char *err, size_t n)
{
	FILE *f;

	snprintf(path, sizeof(path), "/tmp/kms-conf-XXXXXX");
	close(mkstemp(path));
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	kms_config_defaults(cfg);
	int rc = kms_config_load(cfg, path, err, n);
	unlink(path);
	return rc;
}

static void test_example_file_loads(void **state)
{
	struct kms_config cfg;
	char err[256] = "";

	(void)state;
	kms_config_defaults(&cfg);
	assert_int_equal(kms_config_load(&cfg, KMS_EXAMPLE_CONF, err, sizeof(err)), KMS_OK);
	assert_int_equal(cfg.port, 7430);
	assert_int_equal(cfg.policy.reuse_max_deposits, 100);
	assert_string_equal(cfg.crypto_mode, "offload");
}

static void test_values(void **state)
{
	struct kms_config cfg;
	char err[256] = "";

	(void)state;
	assert_int_equal(load("[net]\nport = 9000\nworkers = 4\n[policy]\n"
			      "reuse_max_deposits = 0\n[hsm]\npin_file = /etc/kms/pin\n",
			      &cfg, err, sizeof(err)), KMS_OK);
	assert_int_equal(cfg.port, 9000);
	assert_int_equal(cfg.workers, 4);
	assert_int_equal(cfg.policy.reuse_max_deposits, 0);
	assert_string_equal(cfg.pin_file, "/etc/kms/pin");
	assert_int_equal(kms_config_set(&cfg, "net", "batch", "64", err, sizeof(err)), KMS_OK);
	assert_int_equal(cfg.batch, 64);
}

static void test_errors_name_line(void **state)
{
	struct kms_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(load("[net]\nport = 7430\nbogus = 1\n", &cfg, err, sizeof(err)),
			 KMS_ERR_CONFIG);
	assert_non_null(strstr(err, ":3: unknown key 'bogus'"));
	assert_int_equal(load("[net]\n\nport = 70000\n", &cfg, err, sizeof(err)),
			 KMS_ERR_CONFIG);
	assert_non_null(strstr(err, ":3: net.port"));
	assert_int_equal(load("[net]\nworkers = -1\n", &cfg, err, sizeof(err)), KMS_ERR_CONFIG);
	assert_int_equal(load("[net]\nworkers = 2x\n", &cfg, err, sizeof(err)), KMS_ERR_CONFIG);
	assert_int_equal(load("[nope]\nx = 1\n", &cfg, err, sizeof(err)), KMS_ERR_CONFIG);
	assert_int_equal(load("[crypto]\nmode = magic\n", &cfg, err, sizeof(err)), KMS_ERR_CONFIG);
	assert_non_null(strstr(err, "crypto.mode"));
	/* Both crypto modes; an engine only with offload. */
	assert_int_equal(load("[crypto]\nmode = hsm\n", &cfg, err, sizeof(err)), KMS_OK);
	assert_string_equal(cfg.crypto_mode, "hsm");
	assert_int_equal(load("[crypto]\nengine = /x/e.so\n", &cfg, err, sizeof(err)), KMS_OK);
	assert_string_equal(cfg.crypto_engine, "/x/e.so");
	assert_int_equal(load("[crypto]\nmode = hsm\nengine = qatengine\n", &cfg, err,
			      sizeof(err)), KMS_ERR_CONFIG);
	assert_non_null(strstr(err, "crypto.engine"));
	assert_int_equal(load("[net\nport = 1\n", &cfg, err, sizeof(err)), KMS_ERR_CONFIG);
	/* Deferred RETRIEVE records: only with an unlimited retrieval count. */
	assert_int_equal(load("[store]\nretrieve_records = deferred\n", &cfg, err,
			      sizeof(err)), KMS_OK);
	assert_string_equal(cfg.retrieve_records, "deferred");
	assert_int_equal(kms_config_validate(&cfg, err, sizeof(err)), KMS_OK);
	assert_int_equal(load("[store]\nretrieve_records = deferred\n[policy]\n"
			      "max_retrievals = 1\n", &cfg, err, sizeof(err)),
			 KMS_ERR_CONFIG);
	assert_non_null(strstr(err, "max_retrievals = 0"));
	assert_int_equal(load("[store]\nretrieve_records = later\n", &cfg, err,
			      sizeof(err)), KMS_ERR_CONFIG);
	assert_non_null(strstr(err, "store.retrieve_records"));
	/* Who commits them: the worker (default) or a thread of its own. */
	assert_int_equal(load("[store]\nretrieve_records = deferred\n", &cfg, err,
			      sizeof(err)), KMS_OK);
	assert_string_equal(cfg.deferred_commit, "worker");
	assert_int_equal(load("[store]\nretrieve_records = deferred\n"
			      "deferred_commit = thread\n", &cfg, err, sizeof(err)),
			 KMS_OK);
	assert_string_equal(cfg.deferred_commit, "thread");
	assert_int_equal(load("[store]\ndeferred_commit = threads\n", &cfg, err,
			      sizeof(err)), KMS_ERR_CONFIG);
	assert_non_null(strstr(err, "store.deferred_commit"));
	assert_int_equal(kms_config_load(&cfg, "/nonexistent/kms.conf", err, sizeof(err)),
			 KMS_ERR_IO);
}

/* A [mailbox] section (kms-mailbox's) is left alone, whatever it holds;
 * kmsd's own sections are known as such. */
static void test_shared_file(void **state)
{
	struct kms_config cfg;
	char err[256] = "";

	(void)state;
	assert_int_equal(load("[net]\nworkers = 3\n[mailbox]\nlisten = x:1\n"
				   "anything = 1\n[net]\nbatch = 7\n", &cfg, err,
				   sizeof(err)), KMS_OK);
	assert_int_equal(cfg.workers, 3);
	assert_int_equal(cfg.batch, 7);
	assert_int_not_equal(load("[mailbx]\nlisten = x:1\n", &cfg, err,
				       sizeof(err)), KMS_OK);
	assert_non_null(strstr(err, "[mailbx]"));
	assert_true(kms_config_is_section("hsm"));
	assert_true(kms_config_is_section("net"));
	assert_true(kms_config_is_section("log"));
	assert_false(kms_config_is_section(KMS_CONFIG_MAILBOX_SECTION));
	assert_false(kms_config_is_section("mailbx"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example_file_loads),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors_name_line),
		cmocka_unit_test(test_shared_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
