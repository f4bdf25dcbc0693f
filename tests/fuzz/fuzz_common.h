/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file fuzz_common.h
 * @brief Small helpers shared by the libFuzzer harnesses: temp dirs,
 *        seed files, the libFuzzer entry points' prototypes, an oracle.
 */
#ifndef KMS_FUZZ_COMMON_H
#define KMS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry points (declared here for -Wmissing-prototypes). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/** A fresh directory kms-fuzz-@p tag-XXXXXX under /dev/shm when it is
 *  writable (fsync is cheap there: LMDB commits durably), else /tmp.
 *  Exits the process on failure. */
void fuzz_tmpdir(const char *tag, char *out, size_t cap);

/** Remove @p path recursively (no shell). */
void fuzz_rmrf(const char *path);

/** The seed generator's output directory ($KMS_FUZZ_GEN) or NULL. */
const char *fuzz_gen_dir(void);

/** Write one seed file @p dir/@p name (creating @p dir). Exits on error. */
void fuzz_seed_write(const char *dir, const char *name, const void *buf,
		     size_t len);

/** Project log level for the harnesses: KMS_LOG_ERR unless $KMS_FUZZ_LOG
 *  names a number (0 err .. 3 debug). */
void fuzz_log_init(const char *prog);

/** An invariant of the code under test does not hold: print @p what and
 *  abort, so libFuzzer keeps the input as a crash. */
void fuzz_fail(const char *what) __attribute__((noreturn));

#define FUZZ_CHECK(cond) \
	do { \
		if (!(cond)) \
			fuzz_fail(__FILE__ ": invariant failed: " #cond); \
	} while (0)

#endif /* KMS_FUZZ_COMMON_H */
