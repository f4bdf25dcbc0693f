// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kms_err.h"
#include "kms_keyfile.h"

void kms_hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int kms_hex_decode(const char *in, uint8_t *out, size_t cap)
{
	size_t n = strlen(in);

	if (n % 2 || n / 2 > cap)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = nibble(in[2 * i]), lo = nibble(in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (int)(n / 2);
}

int kms_keyfile_write(const char *path, const struct kms_keyfile *kf,
		      int overwrite)
{
	char hex[2 * KMS_KEY_LEN + 1], iobuf[512];
	int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
	int fd, rc = KMS_OK;
	FILE *f;

	if (!overwrite)
		flags |= O_EXCL;
	fd = open(path, flags, 0600);
	if (fd < 0)
		return errno == EEXIST ? KMS_ERR_EXISTS : KMS_ERR_IO;
	/* O_CREAT's mode does not apply to an existing file: force 0600. */
	if (fchmod(fd, 0600) != 0 || !(f = fdopen(fd, "w"))) {
		close(fd);
		return KMS_ERR_IO;
	}
	/* Our buffer, so the key's hex can be wiped after fclose(). */
	setvbuf(f, iobuf, _IOFBF, sizeof(iobuf));
	kms_hex_encode(kf->key, KMS_KEY_LEN, hex);
	if (fprintf(f, "# IMS KMS party key. Secret: keep mode 0600.\n"
		       "id = %s\nkind = %s\ngen = %u\nkey = %s\n",
		    kf->id, kf->kind, kf->gen, hex) < 0)
		rc = KMS_ERR_IO;
	explicit_bzero(hex, sizeof(hex));
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		rc = KMS_ERR_IO;
	if (fclose(f) != 0)
		rc = KMS_ERR_IO;
	explicit_bzero(iobuf, sizeof(iobuf));
	return rc;
}

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

int kms_keyfile_read(const char *path, struct kms_keyfile *out)
{
	struct kms_keyfile kf;
	char line[512], iobuf[1024];
	int have = 0, rc = KMS_ERR_MALFORMED;
	FILE *f = fopen(path, "re");

	if (!f)
		return KMS_ERR_IO;
	setvbuf(f, iobuf, _IOFBF, sizeof(iobuf)); /* wiped below */
	memset(&kf, 0, sizeof(kf));
	while (fgets(line, sizeof(line), f)) {
		char *eq, *k, *v = NULL;

		k = trim(line);
		if (!*k || *k == '#')
			continue;
		eq = strchr(k, '=');
		if (!eq)
			goto out;
		*eq = '\0';
		k = trim(k);
		v = trim(eq + 1);
		if ((!strcmp(k, "id") && (have & 1)) || (!strcmp(k, "kind") && (have & 2)) ||
		    (!strcmp(k, "gen") && (have & 4)) || (!strcmp(k, "key") && (have & 8)))
			goto out; /* a repeated field is ambiguous */
		if (!strcmp(k, "id") && strlen(v) <= KMS_ID_MAX) {
			struct kms_id id;
			if (kms_id_from_str(v, &id))
				goto out;
			strcpy(kf.id, v);
			have |= 1;
		} else if (!strcmp(k, "kind") &&
			   (!strcmp(v, "user") || !strcmp(v, "as"))) {
			strcpy(kf.kind, v);
			have |= 2;
		} else if (!strcmp(k, "gen")) {
			char *end;
			unsigned long g = strtoul(v, &end, 10);
			if (*end || g == 0 || g > UINT32_MAX)
				goto out;
			kf.gen = (uint32_t)g;
			have |= 4;
		} else if (!strcmp(k, "key")) {
			if (kms_hex_decode(v, kf.key, KMS_KEY_LEN) != KMS_KEY_LEN)
				goto out;
			have |= 8;
		} else {
			goto out;
		}
	}
	if (have == 15) {
		*out = kf;
		rc = KMS_OK;
	}
out:
	explicit_bzero(line, sizeof(line));
	explicit_bzero(&kf, sizeof(kf));
	fclose(f);
	explicit_bzero(iobuf, sizeof(iobuf));
	return rc;
}

void kms_keyfile_wipe(struct kms_keyfile *kf)
{
	explicit_bzero(kf->key, sizeof(kf->key));
}
