// SPDX-License-Identifier: Apache-2.0
#include <string.h>

#include "crypto_priv.h"
#include "keycache.h"

static const struct kms_crypto_ops *const modes[] = {
	&kms_crypto_offload_ops,
	&kms_crypto_hsm_ops,
};

const struct kms_crypto_ops *kms_crypto_find(const char *name)
{
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(modes[i]->name, name))
			return modes[i];
	return NULL;
}

void kms_crypto_add_cache_stats(const struct kms_keycache *kc,
				struct kms_crypto_stats *out)
{
	out->hits += kc->hits;
	out->misses += kc->misses;
	out->evictions += kc->evictions;
	out->unwrap_failures += kc->auth_failures;
	out->cached += kc->cached;
	out->capacity += kc->cap;
}
