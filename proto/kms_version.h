/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_version.h
 * @brief `--version` of every binary: "PROG (ims-kms) X.Y.Z", then the
 *        versions of the libraries it runs with.
 */
#ifndef KMS_VERSION_H
#define KMS_VERSION_H

#include <stdio.h>

/** getopt_long value of --version (outside every short option's range). */
#define KMS_OPT_VERSION 0x1000

/** The project's version (CMake's PROJECT_VERSION). */
const char *kms_version(void);

/** Print "PROG (ims-kms) X.Y.Z" and "OpenSSL ..." (the library loaded at
 *  run time) to f; callers add lines for their other libraries. */
void kms_version_print(FILE *f, const char *prog);

#endif
