/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_ossl_engine.h
 * @brief The one place where OpenSSL 3's deprecation of ENGINE is
 *        acknowledged.
 *
 * OpenSSL 3 deprecates the ENGINE API in favour of providers, yet the
 * hardware offload engines operators run today (Intel QAT among them) still
 * ship as engines. Every translation unit that uses ENGINE includes this
 * header before any other OpenSSL header, and no other file silences the
 * deprecation. docs/ARCHITECTURE.md says how a provider replaces it.
 */
#ifndef KMS_OSSL_ENGINE_H
#define KMS_OSSL_ENGINE_H

#ifdef OPENSSL_VERSION_MAJOR
#error "include kms_ossl_engine.h before any other OpenSSL header"
#endif
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/engine.h>

#endif /* KMS_OSSL_ENGINE_H */
