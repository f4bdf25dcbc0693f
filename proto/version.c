/* SPDX-License-Identifier: Apache-2.0 */
#include "kms_version.h"

#include <openssl/crypto.h>

#ifndef KMS_VERSION
#error "KMS_VERSION is defined by proto/CMakeLists.txt"
#endif

const char *kms_version(void)
{
	return KMS_VERSION;
}

void kms_version_print(FILE *f, const char *prog)
{
	fprintf(f, "%s (ims-kms) %s\n", prog, KMS_VERSION);
	fprintf(f, "%s\n", OpenSSL_version(OPENSSL_VERSION));
}
