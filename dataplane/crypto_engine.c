// SPDX-License-Identifier: Apache-2.0
/*
 * Loading the OpenSSL ENGINE that offload mode's AES-256-GCM goes through.
 * The only file of kmsd that uses the (deprecated) ENGINE API.
 */
#include "kms_ossl_engine.h" /* first: acknowledges the deprecation */

#include <openssl/err.h>
#include <openssl/evp.h>
#include <string.h>

#include "crypto_priv.h"
#include "kms_err.h"
#include "kms_log.h"

/* OpenSSL's error queue, into the log, then cleared. */
static void log_ossl_errors(const char *spec)
{
	unsigned long e;
	char buf[256];

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		KMS_ERR("crypto.engine '%s': %s", spec, buf);
	}
}

/* A dynamic engine by path: the "dynamic" engine loads the object. */
static ENGINE *by_path(const char *path)
{
	ENGINE *e = ENGINE_by_id("dynamic");

	if (!e)
		return NULL;
	if (!ENGINE_ctrl_cmd_string(e, "SO_PATH", path, 0) ||
	    !ENGINE_ctrl_cmd_string(e, "LOAD", NULL, 0)) {
		ENGINE_free(e);
		return NULL;
	}
	return e;
}

int kms_crypto_engine_load(const char *spec, void **out)
{
	const EVP_CIPHER *c;
	ENGINE *e;

	ERR_clear_error();
	e = strchr(spec, '/') ? by_path(spec) : ENGINE_by_id(spec);
	if (!e) {
		KMS_ERR("crypto.engine '%s' does not load (an id is looked up "
			"among OpenSSL's engines and in $OPENSSL_ENGINES; a path "
			"must name a dynamic engine's .so)", spec);
		log_ossl_errors(spec);
		return KMS_ERR_CONFIG;
	}
	if (!ENGINE_init(e)) {
		KMS_ERR("crypto.engine '%s' (%s) loads but does not initialise",
			spec, ENGINE_get_name(e));
		log_ossl_errors(spec);
		ENGINE_free(e);
		return KMS_ERR_CONFIG;
	}
	c = ENGINE_get_cipher(e, NID_aes_256_gcm);
	if (!c) {
		KMS_ERR("crypto.engine '%s' (%s) does not implement "
			"AES-256-GCM: refusing to start (no fallback to "
			"OpenSSL's own cipher)", spec, ENGINE_get_name(e));
		ERR_clear_error();
		ENGINE_finish(e);
		ENGINE_free(e);
		return KMS_ERR_CONFIG;
	}
	KMS_INFO("crypto: AES-256-GCM through OpenSSL engine '%s' (%s)",
		 ENGINE_get_id(e), ENGINE_get_name(e));
	*out = e;
	return KMS_OK;
}

void kms_crypto_engine_release(void *engine)
{
	ENGINE *e = engine;

	if (!e)
		return;
	ENGINE_finish(e);
	ENGINE_free(e);
}
