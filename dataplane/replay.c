// SPDX-License-Identifier: Apache-2.0
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "kms_err.h"
#include "kms_replay.h"

#define PROBE_MAX 64

struct slot {
	uint64_t expire_ms;   /* 0 = never used */
	uint8_t nonce[12];
	uint8_t role;
};

struct kms_replay {
	struct slot *s;
	uint32_t mask;
	uint64_t key;
};

int kms_replay_create(uint32_t capacity, struct kms_replay **out)
{
	struct kms_replay *r = calloc(1, sizeof(*r));
	uint32_t n = 64;

	if (!r)
		return KMS_ERR_NOMEM;
	while (n < 2 * (uint64_t)capacity && n < (1u << 30))
		n <<= 1;
	r->s = calloc(n, sizeof(*r->s));
	/* A secret hash key: a party cannot aim nonces at one probe run. */
	if (!r->s || RAND_bytes((unsigned char *)&r->key, sizeof(r->key)) != 1) {
		free(r->s);
		free(r);
		return KMS_ERR_NOMEM;
	}
	r->mask = n - 1;
	*out = r;
	return KMS_OK;
}

void kms_replay_destroy(struct kms_replay *r)
{
	if (!r)
		return;
	free(r->s);
	free(r);
}

static uint32_t hash(const struct kms_replay *r, uint8_t role,
		     const uint8_t nonce[12])
{
	uint64_t a, b;

	memcpy(&a, nonce, 8);
	b = 0;
	memcpy(&b, nonce + 8, 4);
	a ^= r->key ^ (b << 8) ^ role;
	a *= 0x9e3779b97f4a7c15ull;
	return (uint32_t)(a >> 32);
}

int kms_replay_check_insert(struct kms_replay *r, uint8_t role,
			    const uint8_t nonce[12], uint64_t expire_ms,
			    uint64_t now_ms)
{
	uint32_t i = hash(r, role, nonce) & r->mask;
	struct slot *free_slot = NULL;

	/*
	 * A slot once used is never "never used" again, and an insert takes
	 * the first free slot of its run, so a lookup may stop at the first
	 * never-used slot: nothing of its run lies beyond it.
	 */
	for (unsigned p = 0; p < PROBE_MAX; p++, i = (i + 1) & r->mask) {
		struct slot *s = &r->s[i];

		if (s->expire_ms == 0) {
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

uint32_t kms_replay_live(const struct kms_replay *r, uint64_t now_ms)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i <= r->mask; i++)
		n += r->s[i].expire_ms >= now_ms;
	return n;
}
