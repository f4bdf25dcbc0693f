// SPDX-License-Identifier: Apache-2.0
/*
 * kmstest: a dynamic OpenSSL ENGINE with one cipher, AES-256-GCM, for the
 * tests of offload mode's engine support. The arithmetic is OpenSSL's own
 * (the default provider's AES-256-GCM, fetched by name so nothing can
 * route back into an engine); what the engine adds is a count of its work,
 * so a test can see that kmsd's AEAD really went through it:
 *
 *  - control command GET_FINALS (no input): *(long *)p = operations
 *    finished (one per seal or open, failed tag checks included);
 *  - $KMS_TEST_ENGINE_COUNTS names a file that gets
 *    "inits=N ciphers=N finals=N" at ENGINE_finish and ENGINE_free, so a
 *    separate process (kmsd) leaves its count behind ("%p" in the name
 *    becomes the process id);
 *  - $KMS_TEST_ENGINE_NO_GCM=1 at bind time: the engine offers no cipher,
 *    for the test that kmsd refuses such an engine.
 *
 * Loads by path (the "dynamic" engine, SO_PATH) or by id "kmstest" from
 * $OPENSSL_ENGINES (the file is kmstest.so).
 */
#include "kms_ossl_engine.h" /* first: ENGINE's deprecation acknowledged */

#include <openssl/evp.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kms_pidpath.h"

#define ENGINE_ID "kmstest"
#define CMD_GET_FINALS ENGINE_CMD_BASE

static atomic_long n_inits, n_ciphers, n_finals;
static EVP_CIPHER *gcm_meth;       /* ours */
static EVP_CIPHER *gcm_impl;       /* the default provider's */
static int no_gcm;

/* Per context: the provider's context doing the work, and the tag. */
struct gcm {
	EVP_CIPHER_CTX *in;
	unsigned char tag[16];
	int tag_len;
};

static const ENGINE_CMD_DEFN cmds[] = {
	{ CMD_GET_FINALS, "GET_FINALS",
	  "operations finished through the engine (into *(long *)p)",
	  ENGINE_CMD_FLAG_NO_INPUT },
	{ 0, NULL, NULL, 0 },
};

static struct gcm *data(EVP_CIPHER_CTX *ctx)
{
	return EVP_CIPHER_CTX_get_cipher_data(ctx);
}

static int gcm_init(EVP_CIPHER_CTX *ctx, const unsigned char *key,
		    const unsigned char *iv, int enc)
{
	struct gcm *g = data(ctx);

	atomic_fetch_add(&n_inits, 1);
	if (!g->in) {
		g->in = EVP_CIPHER_CTX_new();
		if (!g->in || !EVP_CipherInit_ex(g->in, gcm_impl, NULL, NULL, NULL,
						 enc))
			return 0;
	}
	g->tag_len = 0;
	return EVP_CipherInit_ex(g->in, NULL, NULL, key, iv, enc);
}

/* EVP_CIPH_FLAG_CUSTOM_CIPHER: in && !out is AAD, in && out is data,
 * !in is the final; returns bytes written or -1. */
static int gcm_cipher(EVP_CIPHER_CTX *ctx, unsigned char *out,
		      const unsigned char *in, size_t len)
{
	struct gcm *g = data(ctx);
	int n = 0;

	atomic_fetch_add(&n_ciphers, 1);
	if (in) {
		if (len > INT_MAX || !EVP_CipherUpdate(g->in, out, &n, in, (int)len))
			return -1;
		return n;
	}
	atomic_fetch_add(&n_finals, 1);
	if (!EVP_CIPHER_CTX_is_encrypting(ctx) &&
	    (g->tag_len != 16 ||
	     !EVP_CIPHER_CTX_ctrl(g->in, EVP_CTRL_AEAD_SET_TAG, 16, g->tag)))
		return -1;
	if (!EVP_CipherFinal_ex(g->in, out, &n))
		return -1;
	if (EVP_CIPHER_CTX_is_encrypting(ctx) &&
	    !EVP_CIPHER_CTX_ctrl(g->in, EVP_CTRL_AEAD_GET_TAG, 16, g->tag))
		return -1;
	g->tag_len = 16;
	return n;
}

static int gcm_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
{
	struct gcm *g = data(ctx);

	switch (type) {
	case EVP_CTRL_INIT:
		memset(g, 0, sizeof(*g));
		return 1;
	case EVP_CTRL_AEAD_SET_IVLEN:
		return arg == 12;
	case EVP_CTRL_GET_IVLEN:
		*(int *)ptr = 12;
		return 1;
	case EVP_CTRL_AEAD_SET_TAG:
		if (arg != 16 || EVP_CIPHER_CTX_is_encrypting(ctx))
			return 0;
		memcpy(g->tag, ptr, 16);
		g->tag_len = 16;
		return 1;
	case EVP_CTRL_AEAD_GET_TAG:
		if (arg < 1 || arg > 16 || g->tag_len != 16 ||
		    !EVP_CIPHER_CTX_is_encrypting(ctx))
			return 0;
		memcpy(ptr, g->tag, (size_t)arg);
		return 1;
	case EVP_CTRL_COPY: {
		EVP_CIPHER_CTX *to = ptr;
		struct gcm *t = data(to);

		t->in = NULL;
		if (g->in) {
			t->in = EVP_CIPHER_CTX_new();
			if (!t->in || !EVP_CIPHER_CTX_copy(t->in, g->in))
				return 0;
		}
		return 1;
	}
	default:
		return -1;
	}
}

static int gcm_cleanup(EVP_CIPHER_CTX *ctx)
{
	struct gcm *g = data(ctx);

	if (g) {
		EVP_CIPHER_CTX_free(g->in); /* cleanses the key schedule */
		OPENSSL_cleanse(g, sizeof(*g));
	}
	return 1;
}

static int ciphers(ENGINE *e, const EVP_CIPHER **cipher, const int **nids,
		   int nid)
{
	static const int our_nids[] = { NID_aes_256_gcm };

	(void)e;
	if (!cipher) {
		*nids = our_nids;
		return no_gcm ? 0 : 1;
	}
	if (nid == NID_aes_256_gcm && !no_gcm) {
		*cipher = gcm_meth;
		return 1;
	}
	*cipher = NULL;
	return 0;
}

static void write_counts(void)
{
	const char *path = getenv("KMS_TEST_ENGINE_COUNTS");
	char name[4096];
	FILE *f;

	if (!path || !*path)
		return;
	kms_pid_path(path, name, sizeof(name));
	f = fopen(name, "w");
	if (!f)
		return;
	fprintf(f, "inits=%ld ciphers=%ld finals=%ld\n", atomic_load(&n_inits),
		atomic_load(&n_ciphers), atomic_load(&n_finals));
	fclose(f);
}

static int e_finish(ENGINE *e)
{
	(void)e;
	write_counts();
	return 1;
}

static int e_destroy(ENGINE *e)
{
	(void)e;
	write_counts();
	EVP_CIPHER_meth_free(gcm_meth);
	EVP_CIPHER_free(gcm_impl);
	gcm_meth = NULL;
	gcm_impl = NULL;
	return 1;
}

static int e_ctrl(ENGINE *e, int cmd, long i, void *p, void (*f)(void))
{
	(void)e;
	(void)i;
	(void)f;
	if (cmd != CMD_GET_FINALS || !p)
		return 0;
	*(long *)p = atomic_load(&n_finals);
	return 1;
}

static int make_cipher(void)
{
	if (gcm_meth)
		return 1;
	gcm_impl = EVP_CIPHER_fetch(NULL, "AES-256-GCM", "provider=default");
	gcm_meth = EVP_CIPHER_meth_new(NID_aes_256_gcm, 1, 32);
	return gcm_impl && gcm_meth &&
	       EVP_CIPHER_meth_set_iv_length(gcm_meth, 12) &&
	       EVP_CIPHER_meth_set_flags(gcm_meth, EVP_CIPH_GCM_MODE |
					 EVP_CIPH_FLAG_CUSTOM_CIPHER |
					 EVP_CIPH_ALWAYS_CALL_INIT |
					 EVP_CIPH_CUSTOM_IV |
					 EVP_CIPH_FLAG_AEAD_CIPHER |
					 EVP_CIPH_CTRL_INIT |
					 EVP_CIPH_CUSTOM_COPY |
					 EVP_CIPH_FLAG_DEFAULT_ASN1) &&
	       EVP_CIPHER_meth_set_init(gcm_meth, gcm_init) &&
	       EVP_CIPHER_meth_set_do_cipher(gcm_meth, gcm_cipher) &&
	       EVP_CIPHER_meth_set_ctrl(gcm_meth, gcm_ctrl) &&
	       EVP_CIPHER_meth_set_cleanup(gcm_meth, gcm_cleanup) &&
	       EVP_CIPHER_meth_set_impl_ctx_size(gcm_meth, sizeof(struct gcm));
}

static int bind_kmstest(ENGINE *e, const char *id)
{
	const char *env = getenv("KMS_TEST_ENGINE_NO_GCM");

	if (id && strcmp(id, ENGINE_ID))
		return 0;
	no_gcm = env && !strcmp(env, "1");
	if (!make_cipher())
		return 0;
	return ENGINE_set_id(e, ENGINE_ID) &&
	       ENGINE_set_name(e, "KMS test engine: AES-256-GCM, counted") &&
	       ENGINE_set_ciphers(e, ciphers) &&
	       ENGINE_set_finish_function(e, e_finish) &&
	       ENGINE_set_destroy_function(e, e_destroy) &&
	       ENGINE_set_ctrl_function(e, e_ctrl) &&
	       ENGINE_set_cmd_defns(e, cmds);
}

IMPLEMENT_DYNAMIC_CHECK_FN()
IMPLEMENT_DYNAMIC_BIND_FN(bind_kmstest)
