// SPDX-License-Identifier: Apache-2.0
#include <string.h>

#include "crypto_priv.h"

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
