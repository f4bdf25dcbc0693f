// SPDX-License-Identifier: Apache-2.0
/* Contract in keycache.h. */
#include <stdlib.h>
#include <string.h>

#include "keycache.h"
#include "kms_err.h"

static uint32_t blob_hash(const uint8_t *b, uint32_t nbucket)
{
	/* The blob is ciphertext under the KEK: its bytes are uniform. */
	uint32_t h;

	memcpy(&h, b + 8, sizeof(h));
	return h & (nbucket - 1);
}

int kms_kc_init(struct kms_keycache *kc, uint32_t cap,
		void (*evict)(void *arg, uint32_t idx), void *arg)
{
	memset(kc, 0, sizeof(*kc));
	kc->cap = cap < 16 ? 16 : cap;
	for (kc->nbucket = 16; kc->nbucket < kc->cap; kc->nbucket <<= 1)
		;
	kc->s = calloc(kc->cap, sizeof(*kc->s));
	kc->bucket = malloc(kc->nbucket * sizeof(*kc->bucket));
	if (!kc->s || !kc->bucket) {
		kms_kc_fini(kc);
		return KMS_ERR_NOMEM;
	}
	for (uint32_t i = 0; i < kc->nbucket; i++)
		kc->bucket[i] = -1;
	for (uint32_t i = 0; i < kc->cap; i++)
		kc->s[i].next = -1;
	kc->evict = evict;
	kc->arg = arg;
	return KMS_OK;
}

void kms_kc_fini(struct kms_keycache *kc)
{
	free(kc->s);
	free(kc->bucket);
	kc->s = NULL;
	kc->bucket = NULL;
}

static void unlink_slot(struct kms_keycache *kc, int32_t idx)
{
	int32_t *pp = &kc->bucket[blob_hash(kc->s[idx].blob, kc->nbucket)];

	while (*pp != -1) {
		if (*pp == idx) {
			*pp = kc->s[idx].next;
			return;
		}
		pp = &kc->s[*pp].next;
	}
}

int32_t kms_kc_get(struct kms_keycache *kc, const uint8_t *blob)
{
	for (int32_t i = kc->bucket[blob_hash(blob, kc->nbucket)]; i != -1;
	     i = kc->s[i].next) {
		if (!memcmp(kc->s[i].blob, blob, KMS_HSM_BLOB_LEN)) {
			kc->hits++;
			kc->s[i].ref = 1;
			kc->s[i].pins++;
			return i;
		}
	}
	kc->misses++;
	return -1;
}

int32_t kms_kc_victim(struct kms_keycache *kc)
{
	for (uint32_t spins = 0; spins < 2 * kc->cap + 1; spins++) {
		uint32_t i = kc->hand;
		struct kms_kc_slot *s = &kc->s[i];

		kc->hand = (kc->hand + 1) % kc->cap;
		if (!s->used)
			return (int32_t)i;
		if (s->pins)
			continue;
		if (s->ref) {
			s->ref = 0;
			continue;
		}
		unlink_slot(kc, (int32_t)i);
		kc->evict(kc->arg, i);
		s->used = 0;
		kc->cached--;
		kc->evictions++;
		return (int32_t)i;
	}
	return -1;
}

void kms_kc_insert(struct kms_keycache *kc, int32_t idx, const uint8_t *blob)
{
	struct kms_kc_slot *s = &kc->s[idx];
	uint32_t h = blob_hash(blob, kc->nbucket);

	memcpy(s->blob, blob, KMS_HSM_BLOB_LEN);
	s->used = 1;
	s->ref = 1;
	s->pins = 1;
	s->next = kc->bucket[h];
	kc->bucket[h] = idx;
	kc->cached++;
}

int kms_kc_fetch(struct kms_keycache *kc, const uint8_t *blob,
		 int (*load)(void *arg, uint32_t idx, const uint8_t *blob),
		 int32_t *idx)
{
	int32_t i = kms_kc_get(kc, blob);
	int rc;

	if (i < 0) {
		i = kms_kc_victim(kc);
		if (i < 0)
			return KMS_ERR_BUSY;
		rc = load(kc->arg, (uint32_t)i, blob);
		if (rc) {
			kc->auth_failures += rc == KMS_ERR_AUTH;
			return rc;
		}
		kms_kc_insert(kc, i, blob);
	}
	*idx = i;
	return KMS_OK;
}

void kms_kc_unpin(struct kms_keycache *kc, int32_t idx)
{
	if (kc->s[idx].pins)
		kc->s[idx].pins--;
}
