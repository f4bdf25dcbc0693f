// SPDX-License-Identifier: Apache-2.0
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms_testenv.h"

#define TEST_PIN "1234-test-pin"

static int run(const char *cmd)
{
	int rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "testenv: '%s' failed (%d)\n", cmd, rc);
	return rc == 0 ? 0 : -1;
}

int kms_testenv_setup(struct kms_testenv *env)
{
	char path[512], cmd[1024];
	const char *mod = getenv("KMS_TEST_PKCS11_MODULE");
	FILE *f;

	memset(env, 0, sizeof(*env));
	snprintf(env->dir, sizeof(env->dir), "/tmp/kms-test-XXXXXX");
	if (!mkdtemp(env->dir))
		return -1;
	snprintf(env->store, sizeof(env->store), "%s/store", env->dir);
	snprintf(env->module, sizeof(env->module), "%s",
		 mod ? mod : "/usr/lib/softhsm/libsofthsm2.so");
	snprintf(path, sizeof(path), "%s/tokens", env->dir);
	if (snprintf(cmd, sizeof(cmd), "mkdir -p %s", path) < 0 || run(cmd))
		return -1;
	snprintf(path, sizeof(path), "%s/softhsm2.conf", env->dir);
	f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
		   "log.level = ERROR\nslots.removable = false\n", env->dir);
	fclose(f);
	setenv("SOFTHSM2_CONF", path, 1);
	setenv("KMS_PIN", TEST_PIN, 1);
	snprintf(cmd, sizeof(cmd),
		 "softhsm2-util --init-token --free --label kms-test "
		 "--so-pin 5678-so-pin --pin %s >/dev/null", TEST_PIN);
	if (run(cmd))
		return -1;
	env->hsm.module = env->module;
	env->hsm.token_label = "kms-test";
	env->hsm.kek_label = "kms-kek";
	env->hsm.pin_file = NULL;
	env->hsm.pin_env = "KMS_PIN";
	return 0;
}

void kms_testenv_teardown(struct kms_testenv *env)
{
	char cmd[512];

	if (!env->dir[0] || getenv("KMS_TEST_KEEP"))
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", env->dir);
	(void)run(cmd);
}
