// SPDX-License-Identifier: Apache-2.0
/*
 * OpenSSL's heap in non-dumpable memory (kms_secmem.h,
 * kms_secmem_openssl_heap). OpenSSL keeps key schedules, GCM contexts and
 * BIGNUM temporaries in memory it allocates itself; routed here, they live
 * in mappings marked MADV_DONTDUMP, so no core image (kernel or gcore)
 * carries them.
 *
 * A size-class allocator: 13 classes of 16 B .. 64 KiB (each block has a
 * 16-byte header naming its class), carved from 4 MiB chunks and kept on
 * per-class free lists; larger blocks get a mapping of their own. One
 * mutex: kmsd's request path does not allocate through OpenSSL (its AEAD
 * contexts are made once per cached key). Memory of small blocks is never
 * returned to the system; a freed block is wiped before reuse.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "kms_err.h"
#include "kms_log.h"
#include "kms_secmem.h"

#define HDR 16u
#define MIN_SHIFT 4u                 /* 16 B */
#define CLASSES 13u                  /* .. 64 KiB */
#define CHUNK ((size_t)4 << 20)
#define LARGE 0xffu
#define MAGIC 0x6b6d7368u            /* "kmsh" */

struct hdr {
	uint32_t cls;
	uint32_t magic;
	size_t size;                 /* LARGE: the mapping's length */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *freelist[CLASSES];
static uint8_t *cur, *end;

static void *map_dontdump(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	if (madvise(p, len, MADV_DONTDUMP)) {
		munmap(p, len);
		return NULL;
	}
	return p;
}

static unsigned class_of(size_t total)
{
	unsigned c = 0;

	while (((size_t)1 << (MIN_SHIFT + c)) < total)
		c++;
	return c;
}

static void *heap_malloc(size_t n, const char *file, int line)
{
	size_t total = n + HDR;
	struct hdr *h;
	unsigned c;

	(void)file;
	(void)line;
	if (n > SIZE_MAX / 2)
		return NULL;
	if (total > ((size_t)1 << (MIN_SHIFT + CLASSES - 1))) {
		size_t page = (size_t)sysconf(_SC_PAGESIZE);
		size_t len = (total + page - 1) & ~(page - 1);

		h = map_dontdump(len);
		if (!h)
			return NULL;
		h->cls = LARGE;
		h->size = len;
		h->magic = MAGIC;
		return (uint8_t *)h + HDR;
	}
	c = class_of(total);
	pthread_mutex_lock(&lock);
	h = freelist[c];
	if (h) {
		freelist[c] = *(void **)((uint8_t *)h + HDR);
	} else {
		size_t sz = (size_t)1 << (MIN_SHIFT + c);

		if (!cur || (size_t)(end - cur) < sz) {
			/* The rest of the old chunk is simply left unused. */
			cur = map_dontdump(CHUNK);
			end = cur ? cur + CHUNK : NULL;
		}
		if (cur) {
			h = (struct hdr *)cur;
			cur += sz;
		}
	}
	pthread_mutex_unlock(&lock);
	if (!h)
		return NULL;
	h->cls = c;
	h->magic = MAGIC;
	h->size = n;
	memset((uint8_t *)h + HDR, 0, sizeof(void *)); /* the free-list link */
	return (uint8_t *)h + HDR;
}

static struct hdr *hdr_of(void *p)
{
	struct hdr *h = (struct hdr *)((uint8_t *)p - HDR);

	if (h->magic != MAGIC) {
		KMS_ERR("osslheap: a block OpenSSL frees was not allocated here");
		abort();
	}
	return h;
}

static void heap_free(void *p, const char *file, int line)
{
	struct hdr *h;

	(void)file;
	(void)line;
	if (!p)
		return;
	h = hdr_of(p);
	if (h->cls == LARGE) {
		explicit_bzero(h, h->size);
		munmap(h, h->size);
		return;
	}
	explicit_bzero(p, ((size_t)1 << (MIN_SHIFT + h->cls)) - HDR);
	pthread_mutex_lock(&lock);
	*(void **)p = freelist[h->cls];
	freelist[h->cls] = h;
	pthread_mutex_unlock(&lock);
}

static void *heap_realloc(void *p, size_t n, const char *file, int line)
{
	struct hdr *h;
	size_t room;
	void *q;

	if (!p)
		return heap_malloc(n, file, line);
	if (!n) {
		heap_free(p, file, line);
		return NULL;
	}
	h = hdr_of(p);
	room = h->cls == LARGE ? h->size - HDR
			       : ((size_t)1 << (MIN_SHIFT + h->cls)) - HDR;
	if (n <= room) {
		if (h->cls != LARGE)
			h->size = n;
		return p;
	}
	q = heap_malloc(n, file, line);
	if (!q)
		return NULL;
	memcpy(q, p, room);
	heap_free(p, file, line);
	return q;
}

int kms_secmem_openssl_heap(void)
{
	if (!CRYPTO_set_mem_functions(heap_malloc, heap_realloc, heap_free)) {
		KMS_ERR("secmem: OpenSSL allocated memory before its heap could "
			"be moved out of core dumps");
		return KMS_ERR_CRYPTO;
	}
	return KMS_OK;
}
