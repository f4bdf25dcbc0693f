/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_secmem.h
 * @brief Locked, non-dumpable memory for key material.
 *
 * An arena is one anonymous mapping, mlock()ed and marked MADV_DONTDUMP
 * (kept out of core dumps) and MADV_DONTFORK, cut into fixed-size slots.
 * Freed slots and the whole arena are wiped with explicit_bzero.
 * An arena is used by one thread (per-worker caches own theirs).
 */
#ifndef KMS_SECMEM_H
#define KMS_SECMEM_H

#include <stddef.h>

struct kms_secmem;

/**
 * Map @p nslots slots of @p slot_size bytes (rounded up to 16).
 * @return KMS_OK; KMS_ERR_NOMEM if mmap or mlock fails (RLIMIT_MEMLOCK:
 *         the error message says so).
 */
int kms_secmem_create(size_t slot_size, size_t nslots, struct kms_secmem **out);

/** Wipe and unmap everything. NULL is a no-op. */
void kms_secmem_destroy(struct kms_secmem *m);

/** A zeroed slot, or NULL when all are in use. */
void *kms_secmem_alloc(struct kms_secmem *m);

/** Wipe a slot and return it. NULL is a no-op. A pointer that is not a
 *  slot of @p m, or a slot already free, is a bug: logged, then abort(). */
void kms_secmem_free(struct kms_secmem *m, void *p);

/** Process-wide hygiene, once at start: RLIMIT_CORE=0 and
 *  PR_SET_DUMPABLE=0 so no core dump or ptrace peer sees keys. */
void kms_secmem_harden_process(void);

/**
 * Route OpenSSL's own allocations (key schedules, cipher contexts, BIGNUM
 * temporaries) into MADV_DONTDUMP mappings (hsm/osslheap.c). Must run
 * before anything calls OpenSSL: first thing in main(). @return KMS_OK, or
 * KMS_ERR_CRYPTO if OpenSSL already allocated (logged).
 */
int kms_secmem_openssl_heap(void);

#endif /* KMS_SECMEM_H */
