// SPDX-License-Identifier: Apache-2.0
/*
 * Locked, non-dumpable slots for key material. Contract in kms_secmem.h.
 *
 * The bookkeeping (free stack, in-use map) lives in ordinary heap memory
 * and holds only indexes, so the key region itself carries nothing but
 * key bytes or zeros: a free slot is always all zero.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kms_err.h"
#include "kms_log.h"
#include "kms_secmem.h"

#define SLOT_ALIGN 16

struct kms_secmem {
	uint8_t *base;        /**< the mapping */
	size_t map_len;       /**< page-rounded length of the mapping */
	size_t slot_size;
	size_t nslots;
	size_t nfree;
	size_t *free_stack;   /**< indexes of free slots, top at nfree - 1 */
	bool *in_use;
	bool locked;          /**< mlock() succeeded: munlock on destroy */
};

int kms_secmem_create(size_t slot_size, size_t nslots, struct kms_secmem **out)
{
	struct kms_secmem *m = NULL;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), len, i;
	int ret = KMS_ERR_INVAL;
	void *p;

	if (!out || slot_size == 0 || nslots == 0)
		goto out;
	if (slot_size > SIZE_MAX - (SLOT_ALIGN - 1))
		goto out;
	slot_size = (slot_size + SLOT_ALIGN - 1) & ~(size_t)(SLOT_ALIGN - 1);
	if (nslots > (SIZE_MAX - page) / slot_size)
		goto out;
	len = (slot_size * nslots + page - 1) & ~(page - 1);

	ret = KMS_ERR_NOMEM;
	m = calloc(1, sizeof(*m));
	if (!m)
		goto out;
	m->slot_size = slot_size;
	m->nslots = nslots;
	m->free_stack = calloc(nslots, sizeof(*m->free_stack));
	m->in_use = calloc(nslots, sizeof(*m->in_use));
	if (!m->free_stack || !m->in_use)
		goto out;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	if (p == MAP_FAILED) {
		KMS_ERR("secmem: mmap of %zu bytes failed: %s", len, strerror(errno));
		goto out;
	}
	m->base = p;
	m->map_len = len;
	if (mlock(m->base, len) != 0) {
		KMS_ERR("secmem: mlock of %zu bytes failed: %s (RLIMIT_MEMLOCK may "
			"be too low: see `ulimit -l` or LimitMEMLOCK=)", len,
			strerror(errno));
		goto out;
	}
	m->locked = true;
	/* Keys must reach neither a core dump nor a forked child. */
	if (madvise(m->base, len, MADV_DONTDUMP) != 0 ||
	    madvise(m->base, len, MADV_DONTFORK) != 0) {
		KMS_ERR("secmem: madvise failed: %s", strerror(errno));
		goto out;
	}
	/* Stack order makes the first alloc return slot 0. */
	for (i = 0; i < nslots; i++)
		m->free_stack[i] = nslots - 1 - i;
	m->nfree = nslots;
	*out = m;
	m = NULL;
	ret = KMS_OK;
out:
	kms_secmem_destroy(m);
	return ret;
}

void kms_secmem_destroy(struct kms_secmem *m)
{
	if (!m)
		return;
	if (m->base) {
		explicit_bzero(m->base, m->map_len);
		if (m->locked)
			munlock(m->base, m->map_len);
		munmap(m->base, m->map_len);
	}
	free(m->in_use);
	free(m->free_stack);
	free(m);
}

void *kms_secmem_alloc(struct kms_secmem *m)
{
	size_t i;

	if (!m || m->nfree == 0)
		return NULL;
	i = m->free_stack[--m->nfree];
	m->in_use[i] = true;
	/* Free slots are all zero (wiped on free, zero-filled by mmap). */
	return m->base + i * m->slot_size;
}

void kms_secmem_free(struct kms_secmem *m, void *p)
{
	uintptr_t off;
	size_t i;

	if (!m || !p)
		return;
	off = (uintptr_t)p - (uintptr_t)m->base;
	if ((uintptr_t)p < (uintptr_t)m->base ||
	    off >= m->nslots * m->slot_size || off % m->slot_size != 0) {
		KMS_ERR("secmem: free of a pointer not from this arena");
		abort();
	}
	i = off / m->slot_size;
	if (!m->in_use[i]) {
		KMS_ERR("secmem: double free of slot %zu", i);
		abort();
	}
	explicit_bzero(p, m->slot_size);
	m->in_use[i] = false;
	m->free_stack[m->nfree++] = i;
}

void kms_secmem_harden_process(void)
{
	struct rlimit none = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &none) != 0)
		KMS_WARN("secmem: setrlimit(RLIMIT_CORE, 0) failed: %s",
			 strerror(errno));
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		KMS_WARN("secmem: prctl(PR_SET_DUMPABLE, 0) failed: %s",
			 strerror(errno));
}
