// SPDX-License-Identifier: Apache-2.0
/*
 * kms-client text files: "key = value" tables, token files, party key
 * files and the 0600 key outputs. See kms_client.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kms_client.h"
#include "kms_err.h"

void kc_errmsg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", program_invocation_short_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- key = value text files ---- */

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
			 e[-1] == '\r'))
		*--e = '\0';
	return s;
}

int kc_kv_read(const char *path, struct kc_kv *kv)
{
	char line[KC_KV_VAL + KC_KV_KEY + 16];
	unsigned lineno = 0;
	int ret = -1;
	FILE *f = fopen(path, "re");

	memset(kv, 0, sizeof(*kv));
	kv->path = path;
	if (!f) {
		kc_errmsg("%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *k, *v, *eq;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			kc_errmsg("%s:%u: line too long", path, lineno);
			goto out;
		}
		k = trim(line);
		if (!*k || *k == '#')
			continue;
		eq = strchr(k, '=');
		if (!eq) {
			kc_errmsg("%s:%u: expected 'key = value'", path, lineno);
			goto out;
		}
		*eq = '\0';
		k = trim(k);
		v = trim(eq + 1);
		if (!*k || strlen(k) >= KC_KV_KEY || strlen(v) >= KC_KV_VAL) {
			kc_errmsg("%s:%u: bad key or value", path, lineno);
			goto out;
		}
		for (unsigned i = 0; i < kv->n; i++) {
			if (!strcmp(kv->key[i], k)) {
				kc_errmsg("%s:%u: duplicate '%s'", path,
					  lineno, k);
				goto out;
			}
		}
		if (kv->n == KC_KV_MAX) {
			kc_errmsg("%s: too many entries", path);
			goto out;
		}
		strcpy(kv->key[kv->n], k);
		strcpy(kv->val[kv->n], v);
		kv->n++;
	}
	if (ferror(f))
		kc_errmsg("%s: read error", path);
	else
		ret = 0;
out:
	explicit_bzero(line, sizeof(line));
	fclose(f);
	return ret;
}

const char *kc_kv_get(const struct kc_kv *kv, const char *key)
{
	for (unsigned i = 0; i < kv->n; i++)
		if (!strcmp(kv->key[i], key))
			return kv->val[i];
	kc_errmsg("%s: missing '%s'", kv->path, key);
	return NULL;
}

int kc_kv_id(const struct kc_kv *kv, const char *key, struct kms_id *id)
{
	const char *v = kc_kv_get(kv, key);

	if (!v)
		return -1;
	if (kms_id_from_str(v, id) != KMS_OK) {
		kc_errmsg("%s: '%s' is not a valid identity", kv->path, key);
		return -1;
	}
	return 0;
}

int kc_kv_hex(const struct kc_kv *kv, const char *key, uint8_t *out,
	      size_t min, size_t cap)
{
	const char *v = kc_kv_get(kv, key);
	int n;

	if (!v)
		return -1;
	n = kms_hex_decode(v, out, cap);
	if (n < 0 || (size_t)n < min) {
		kc_errmsg("%s: '%s' is not %zu..%zu bytes of hex", kv->path,
			  key, min, cap);
		return -1;
	}
	return n;
}

int kc_write_text(const char *path, mode_t mode, const char *text)
{
	size_t len = strlen(text), off = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
			    O_NOFOLLOW, mode);

	if (fd < 0 || fchmod(fd, mode) != 0)
		goto err;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto err;
		off += (size_t)n;
	}
	if (close(fd) != 0) {
		fd = -1;
		goto err;
	}
	return 0;
err:
	kc_errmsg("%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* ---- tokens and keys ---- */

int kc_token_nonce(const uint8_t *tok, size_t len, const uint8_t **nonce)
{
	size_t ct_len;

	/* role u8 | gen u32 | ts_ms u64 | nonce[12] | ct_len u16 | ct | tag */
	if (len < KMS_TOKEN_FIXED + 2 || len > KMS_TOKEN_MAX)
		return -1;
	ct_len = (size_t)tok[25] << 8 | tok[26];
	if (ct_len < 2 || len != KMS_TOKEN_FIXED + ct_len)
		return -1;
	*nonce = tok + 13;
	return 0;
}

uint32_t kc_token_gen(const uint8_t *tok)
{
	return kc_ld32(tok + 1);
}

int kc_tokfile_read(const char *path, struct kc_tokfile *t)
{
	if (kc_kv_read(path, &t->kv) || kc_kv_id(&t->kv, "id_a", &t->a) ||
	    kc_kv_id(&t->kv, "id_b", &t->b))
		return -1;
	t->tok_len = kc_kv_hex(&t->kv, "token", t->tok, KMS_TOKEN_FIXED + 2,
			       sizeof(t->tok));
	if (t->tok_len < 0)
		return -1;
	if (kc_token_nonce(t->tok, (size_t)t->tok_len, &t->nonce)) {
		kc_errmsg("%s: 'token' is not a well-formed token", path);
		return -1;
	}
	return 0;
}

int kc_key_read(const char *path, struct kms_keyfile *kf, const char *kind,
		int force)
{
	int rc = kms_keyfile_read(path, kf);

	if (rc != KMS_OK) {
		kc_errmsg("%s: cannot read key file: %s", path,
			  kms_strerror(rc));
		return -1;
	}
	if (strcmp(kf->kind, kind) && !force) {
		kc_errmsg("%s: key of kind '%s', this role needs '%s'", path,
			  kf->kind, kind);
		kms_keyfile_wipe(kf);
		return -1;
	}
	return 0;
}

int kc_write_key(const char *path, const uint8_t key_id[KMS_KEY_ID_LEN],
		 const uint8_t k[KMS_KEY_LEN])
{
	char kid[2 * KMS_KEY_ID_LEN + 1], kh[2 * KMS_KEY_LEN + 1];
	char text[sizeof(kid) + sizeof(kh) + 32];
	int rc;

	kms_hex_encode(key_id, KMS_KEY_ID_LEN, kid);
	kms_hex_encode(k, KMS_KEY_LEN, kh);
	snprintf(text, sizeof(text), "key_id = %s\nk = %s\n", kid, kh);
	rc = kc_write_text(path, 0600, text);
	explicit_bzero(kh, sizeof(kh));
	explicit_bzero(text, sizeof(text));
	return rc;
}
