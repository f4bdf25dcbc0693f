/* SPDX-License-Identifier: Apache-2.0 */
/* Mode tables, for crypto.c's registry only. */
#ifndef KMS_CRYPTO_PRIV_H
#define KMS_CRYPTO_PRIV_H
#include "kms_crypto.h"
extern const struct kms_crypto_ops kms_crypto_offload_ops;
#endif
