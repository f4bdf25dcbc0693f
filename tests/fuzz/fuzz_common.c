// SPDX-License-Identifier: Apache-2.0
/* Helpers shared by the fuzz harnesses (fuzz_common.h). */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "kms_log.h"

void fuzz_tmpdir(const char *tag, char *out, size_t cap)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	if ((size_t)snprintf(out, cap, "%s/kms-fuzz-%s-XXXXXX", base, tag) >= cap ||
	    !mkdtemp(out)) {
		fprintf(stderr, "fuzz: cannot make a temp dir under %s: %s\n",
			base, strerror(errno));
		exit(1);
	}
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void fuzz_rmrf(const char *path)
{
	if (path && path[0])
		nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_gen_dir(void)
{
	const char *d = getenv("KMS_FUZZ_GEN");

	return d && d[0] ? d : NULL;
}

void fuzz_seed_write(const char *dir, const char *name, const void *buf,
		     size_t len)
{
	char path[1024];
	FILE *f;

	if (mkdir(dir, 0755) && errno != EEXIST) {
		fprintf(stderr, "fuzz: mkdir %s: %s\n", dir, strerror(errno));
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
		fprintf(stderr, "fuzz: cannot write %s\n", path);
		exit(1);
	}
	printf("fuzz: seed %s (%zu bytes)\n", path, len);
}

void fuzz_log_init(const char *prog)
{
	const char *l = getenv("KMS_FUZZ_LOG");
	int lvl = l ? atoi(l) : KMS_LOG_ERR;

	if (lvl < KMS_LOG_ERR || lvl > KMS_LOG_DEBUG)
		lvl = KMS_LOG_ERR;
	kms_log_init(prog, (enum kms_log_level)lvl, 0);
}

void fuzz_fail(const char *what)
{
	fprintf(stderr, "fuzz: %s\n", what);
	abort();
}
