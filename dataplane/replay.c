// SPDX-License-Identifier: Apache-2.0
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kms_err.h"
#include "kms_replay.h"

#define PROBE_MAX 64
#define PREFETCH_CHUNK 64 /* blocks a kms_replay_prefetch_many AES call */

struct slot {
	uint64_t expire_ms;   /* 0 = never used */
	uint8_t nonce[12];
	uint8_t role;
};

struct kms_replay {
	struct slot *s;
	size_t map_len;       /* bytes mapped at s */
	uint32_t mask;
	uint64_t horizon_ms;  /* longest expire - now an insert ever asked */
	uint64_t probes;
	EVP_CIPHER_CTX *prf;  /* AES-128 under a secret random key */
};

int kms_replay_create(uint32_t capacity, struct kms_replay **out)
{
	struct kms_replay *r = calloc(1, sizeof(*r));
	uint32_t n = 64;
	uint8_t key[16];

	if (!r)
		return KMS_ERR_NOMEM;
	while (n < 2 * (uint64_t)capacity && n < (1u << 30))
		n <<= 1;

	/*
	 * Each check touches one random slot of a table that can be hundreds
	 * of MB: its own mapping with transparent huge pages asked for, so a
	 * lookup costs a cache miss and seldom a page walk too (without THP,
	 * a kernel setting, it still works), and every page faulted in now,
	 * not on the request path: the window's memory is resident from the
	 * start and stays flat under load.
	 */
	r->map_len = (size_t)n * sizeof(*r->s);
	r->s = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->s == MAP_FAILED) {
		r->s = NULL;
	} else {
#ifdef MADV_HUGEPAGE
		(void)madvise(r->s, r->map_len, MADV_HUGEPAGE);
#endif
		for (size_t off = 0; off < r->map_len; off += 4096)
			((volatile uint8_t *)r->s)[off] = 0;
	}
	r->prf = EVP_CIPHER_CTX_new();
	/*
	 * The slot is a PRF of (role, nonce) under a secret key: a party who
	 * chooses its nonces cannot aim them at one probe run. One AES block
	 * with a kept context costs tens of ns and allocates nothing.
	 */
	if (!r->s || !r->prf || RAND_bytes(key, sizeof(key)) != 1 ||
	    EVP_EncryptInit_ex(r->prf, EVP_aes_128_ecb(), NULL, key, NULL) != 1) {
		OPENSSL_cleanse(key, sizeof(key));
		kms_replay_destroy(r);
		return KMS_ERR_NOMEM;
	}
	OPENSSL_cleanse(key, sizeof(key));
	EVP_CIPHER_CTX_set_padding(r->prf, 0);
	r->mask = n - 1;
	*out = r;
	return KMS_OK;
}

void kms_replay_destroy(struct kms_replay *r)
{
	if (!r)
		return;
	EVP_CIPHER_CTX_free(r->prf);
	if (r->s)
		munmap(r->s, r->map_len);
	free(r);
}

static uint32_t hash(const struct kms_replay *r, uint8_t role,
		     const uint8_t nonce[12])
{
	uint8_t in[16] = { 0 }, out[16];
	uint32_t h;
	int n;

	in[0] = role;
	memcpy(in + 1, nonce, 12);
	if (EVP_EncryptUpdate(r->prf, out, &n, in, sizeof(in)) != 1 || n != 16)
		memcpy(out, in + 1, sizeof(h)); /* libcrypto broken: still correct */
	memcpy(&h, out, sizeof(h));
	return h;
}

void kms_replay_prefetch_many(const struct kms_replay *r, unsigned n,
			      const uint8_t *role,
			      const uint8_t *const *nonce, uint32_t *h)
{
	uint8_t in[PREFETCH_CHUNK][16], out[PREFETCH_CHUNK][16];

	for (unsigned off = 0; off < n; off += PREFETCH_CHUNK) {
		unsigned m = n - off < PREFETCH_CHUNK ? n - off : PREFETCH_CHUNK;
		int len;

		memset(in, 0, m * sizeof(in[0]));
		for (unsigned i = 0; i < m; i++) {
			in[i][0] = role[off + i];
			memcpy(in[i] + 1, nonce[off + i], 12);
		}
		/* ECB: each block on its own, as hash() would. */
		if (EVP_EncryptUpdate(r->prf, out[0], &len, in[0],
				      (int)(m * sizeof(in[0]))) != 1 ||
		    len != (int)(m * sizeof(in[0])))
			for (unsigned i = 0; i < m; i++)
				memcpy(out[i], in[i] + 1, sizeof(uint32_t));
		for (unsigned i = 0; i < m; i++) {
			memcpy(&h[off + i], out[i], sizeof(uint32_t));
			__builtin_prefetch(&r->s[h[off + i] & r->mask], 1, 1);
		}
	}
}

void kms_replay_prefetch_h(const struct kms_replay *r, uint32_t h)
{
	__builtin_prefetch(&r->s[h & r->mask], 1, 3);
}

int kms_replay_check_insert(struct kms_replay *r, uint8_t role,
			    const uint8_t nonce[12], uint64_t expire_ms,
			    uint64_t now_ms)
{
	return kms_replay_check_insert_h(r, hash(r, role, nonce), role, nonce,
					 expire_ms, now_ms);
}

int kms_replay_check_insert_h(struct kms_replay *r, uint32_t h, uint8_t role,
			      const uint8_t nonce[12], uint64_t expire_ms,
			      uint64_t now_ms)
{
	uint32_t i = h & r->mask;
	struct slot *free_slot = NULL;
	uint64_t dead;

	/*
	 * An insert takes the first free (never used or expired) slot of its
	 * run, so a lookup may stop at a slot that no live entry can lie
	 * beyond: one never used, or one that expired before every live
	 * entry was inserted. No entry was ever inserted more than horizon_ms
	 * before its expiry, and a live one expires at or after now: it was
	 * inserted at or after now - horizon_ms. A slot that had expired
	 * before that was free when the entry probed past it, and the entry
	 * would have taken it. The horizon only grows (an odd long-lived
	 * entry makes lookups longer, never wrong); the engine's is 2 x skew.
	 */
	if (expire_ms > now_ms && expire_ms - now_ms > r->horizon_ms)
		r->horizon_ms = expire_ms - now_ms;
	dead = now_ms > r->horizon_ms ? now_ms - r->horizon_ms : 0;
	for (unsigned p = 0; p < PROBE_MAX; p++, i = (i + 1) & r->mask) {
		struct slot *s = &r->s[i];

		r->probes++;
		if (s->expire_ms == 0 || s->expire_ms < dead) {
			if (!free_slot)
				free_slot = s;
			break;
		}
		if (s->expire_ms < now_ms) {
			if (!free_slot)
				free_slot = s;
			continue;
		}
		if (s->role == role && !memcmp(s->nonce, nonce, 12))
			return KMS_ERR_EXISTS;
	}
	if (!free_slot)
		return KMS_ERR_BUSY;
	memcpy(free_slot->nonce, nonce, 12);
	free_slot->role = role;
	free_slot->expire_ms = expire_ms ? expire_ms : 1;
	return KMS_OK;
}

uint64_t kms_replay_probes(const struct kms_replay *r)
{
	return r->probes;
}

uint32_t kms_replay_live(const struct kms_replay *r, uint64_t now_ms)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i <= r->mask; i++)
		n += r->s[i].expire_ms >= now_ms;
	return n;
}
