/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_testenv.h
 * @brief A real SoftHSM2 token and a store directory in a fresh temp dir.
 *
 * kms_testenv_setup() makes /tmp/kms-test-XXXXXX with softhsm2.conf and a
 * tokens/ directory, sets SOFTHSM2_CONF, initialises a token with
 * `softhsm2-util --init-token` (label "kms-test", user PIN in KMS_PIN) and
 * fills @p env. kms_testenv_teardown() removes the directory.
 * The module path comes from $KMS_TEST_PKCS11_MODULE, else the Debian
 * SoftHSM2 path.
 */
#ifndef KMS_TESTENV_H
#define KMS_TESTENV_H

#include "kms_hsm.h"

struct kms_testenv {
	char dir[256];        /**< the temp dir */
	char store[300];      /**< dir/store: an LMDB store path (not created) */
	char module[256];
	struct kms_hsm_config hsm; /**< ready for kms_hsm_open() */
};

/** @return 0 on success, -1 (with a message on stderr) on failure. */
int kms_testenv_setup(struct kms_testenv *env);
void kms_testenv_teardown(struct kms_testenv *env);

#endif
