// SPDX-License-Identifier: Apache-2.0
/*
 * The population file (lg_pop.h): one party per line, read once at start.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kms_keyfile.h"
#include "lg_pop.h"

static int add(struct lg_party **v, size_t *n, size_t *cap,
	       const struct lg_party *p)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 1024;
		struct lg_party *nv = calloc(nc, sizeof(*nv));

		if (!nv)
			return -1;
		if (*v) {
			memcpy(nv, *v, *n * sizeof(*nv));
			OPENSSL_cleanse(*v, *n * sizeof(**v));
			free(*v);
		}
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = *p;
	return 0;
}

static int cmp_id(const void *x, const void *y)
{
	const struct lg_party *const *a = x, *const *b = y;

	return strcmp((*a)->id, (*b)->id);
}

/* Every id once, users and AS together. */
static int check_unique(const struct lg_pop *pop, char *err, size_t errlen)
{
	size_t n = pop->nusers + pop->nas, i;
	const struct lg_party **all = calloc(n ? n : 1, sizeof(*all));
	int rc = 0;

	if (!all) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < pop->nusers; i++)
		all[i] = &pop->users[i];
	for (i = 0; i < pop->nas; i++)
		all[pop->nusers + i] = &pop->as[i];
	qsort(all, n, sizeof(*all), cmp_id);
	for (i = 1; i < n; i++)
		if (!strcmp(all[i - 1]->id, all[i]->id)) {
			snprintf(err, errlen, "identity %s appears twice",
				 all[i]->id);
			rc = -1;
			break;
		}
	free(all);
	return rc;
}

int lg_pop_read(const char *path, struct lg_pop *pop, char *err, size_t errlen)
{
	size_t ucap = 0, acap = 0;
	unsigned long lineno = 0;
	struct lg_party p;
	struct stat st;
	char line[512];
	FILE *f;
	int rc = -1;

	memset(pop, 0, sizeof(*pop));
	f = fopen(path, "re");
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(f), &st)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		fclose(f);
		return -1;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen, "%s: readable by group or others (mode %03o):"
			 " it holds every party's key; chmod 600 it", path,
			 (unsigned)(st.st_mode & 0777));
		fclose(f);
		return -1;
	}
	char hex[2 * KMS_KEY_LEN + 2] = "";

	while (fgets(line, sizeof(line), f)) {
		char kind[8], id[KMS_ID_MAX + 2];
		unsigned long gen;
		size_t len = strlen(line);
		struct kms_id kid;
		int used = 0;

		lineno++;
		if (len && line[len - 1] != '\n' && !feof(f)) {
			snprintf(err, errlen, "%s:%lu: line too long", path, lineno);
			goto out;
		}
		if (line[0] == '#' || line[0] == '\n' || !line[0])
			continue;
		if (sscanf(line, "%7s %129s %lu %65s %n", kind, id, &gen, hex,
			   &used) != 4 || line[used] != '\0' ||
		    (strcmp(kind, "user") && strcmp(kind, "as")) ||
		    !gen || gen > UINT32_MAX || kms_id_from_str(id, &kid) ||
		    strlen(hex) != 2 * KMS_KEY_LEN) {
			snprintf(err, errlen, "%s:%lu: expected \"user|as ID GEN "
				 "HEXKEY\"", path, lineno);
			goto out;
		}
		memset(&p, 0, sizeof(p));
		memcpy(p.id, id, kid.len);
		p.id_len = kid.len;
		p.gen = (uint32_t)gen;
		if (kms_hex_decode(hex, p.key, sizeof(p.key)) != KMS_KEY_LEN) {
			snprintf(err, errlen, "%s:%lu: bad key hex", path, lineno);
			goto out;
		}
		OPENSSL_cleanse(hex, sizeof(hex));
		if (kind[0] == 'u' ? add(&pop->users, &pop->nusers, &ucap, &p)
				   : add(&pop->as, &pop->nas, &acap, &p)) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: read error", path);
		goto out;
	}
	if (pop->nusers < 2 || !pop->nas) {
		snprintf(err, errlen, "%s: needs at least 2 users and 1 AS "
			 "(has %zu and %zu)", path, pop->nusers, pop->nas);
		goto out;
	}
	rc = check_unique(pop, err, errlen);
out:
	OPENSSL_cleanse(hex, sizeof(hex));
	OPENSSL_cleanse(&p, sizeof(p));
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	if (rc)
		lg_pop_free(pop);
	return rc;
}

void lg_pop_free(struct lg_pop *pop)
{
	if (pop->users)
		OPENSSL_cleanse(pop->users, pop->nusers * sizeof(*pop->users));
	if (pop->as)
		OPENSSL_cleanse(pop->as, pop->nas * sizeof(*pop->as));
	free(pop->users);
	free(pop->as);
	memset(pop, 0, sizeof(*pop));
}
