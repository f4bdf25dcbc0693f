// SPDX-License-Identifier: Apache-2.0
/* Locked key memory: slots, wiping, exhaustion, mapping flags, hardening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "kms_err.h"
#include "kms_secmem.h"

/* AddressSanitizer intercepts mlock() and makes it a no-op. */
#ifdef __SANITIZE_ADDRESS__
#define MLOCK_WORKS 0
#else
#define MLOCK_WORKS 1
#endif

static int all_zero(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

static void test_alloc_until_exhausted(void **state)
{
	struct kms_secmem *m = NULL;
	uint8_t *p[4];
	size_t i, j;

	(void)state;
	assert_int_equal(kms_secmem_create(32, 4, &m), KMS_OK);
	for (i = 0; i < 4; i++) {
		p[i] = kms_secmem_alloc(m);
		assert_non_null(p[i]);
		assert_int_equal((uintptr_t)p[i] % 16, 0);
		assert_true(all_zero(p[i], 32));
		memset(p[i], (int)(0x10 + i), 32);
		for (j = 0; j < i; j++)
			assert_ptr_not_equal(p[i], p[j]);
	}
	assert_null(kms_secmem_alloc(m));
	assert_null(kms_secmem_alloc(m));
	/* Slots do not overlap: each still holds its own pattern. */
	for (i = 0; i < 4; i++)
		for (j = 0; j < 32; j++)
			assert_int_equal(p[i][j], 0x10 + i);
	kms_secmem_free(m, p[2]);
	assert_ptr_equal(kms_secmem_alloc(m), p[2]);
	assert_null(kms_secmem_alloc(m));
	kms_secmem_destroy(m);
}

static void test_free_wipes(void **state)
{
	struct kms_secmem *m = NULL;
	uint8_t *p, *q;

	(void)state;
	assert_int_equal(kms_secmem_create(32, 2, &m), KMS_OK);
	p = kms_secmem_alloc(m);
	assert_non_null(p);
	memset(p, 0xa5, 32);
	kms_secmem_free(m, p);
	/* The slot is still mapped: its bytes must already be zero. */
	assert_true(all_zero(p, 32));
	q = kms_secmem_alloc(m);
	assert_ptr_equal(q, p);
	assert_true(all_zero(q, 32));
	kms_secmem_free(m, q);
	kms_secmem_free(m, NULL);
	kms_secmem_destroy(m);
}

static void test_slot_rounding(void **state)
{
	struct kms_secmem *m = NULL;
	uint8_t *a, *b, *c;

	(void)state;
	assert_int_equal(kms_secmem_create(20, 3, &m), KMS_OK);
	a = kms_secmem_alloc(m);
	b = kms_secmem_alloc(m);
	c = kms_secmem_alloc(m);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_int_equal(b - a, 32);
	assert_int_equal(c - b, 32);
	assert_null(kms_secmem_alloc(m));
	kms_secmem_destroy(m);
}

static void test_bad_args(void **state)
{
	struct kms_secmem *m = NULL;

	(void)state;
	assert_int_equal(kms_secmem_create(0, 4, &m), KMS_ERR_INVAL);
	assert_int_equal(kms_secmem_create(32, 0, &m), KMS_ERR_INVAL);
	assert_int_equal(kms_secmem_create(32, 4, NULL), KMS_ERR_INVAL);
	assert_int_equal(kms_secmem_create(SIZE_MAX / 2, 4, &m), KMS_ERR_INVAL);
	assert_null(m);
	assert_null(kms_secmem_alloc(NULL));
	kms_secmem_destroy(NULL);
}

/* The VmFlags line of the mapping holding @p, from /proc/self/smaps. */
static int vm_flags_of(const void *p, char *flags, size_t cap)
{
	unsigned long lo, hi, addr = (unsigned long)p;
	char line[512];
	int inside = 0, ret = -1;
	FILE *f;

	f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			inside = addr >= lo && addr < hi;
			continue;
		}
		if (inside && strncmp(line, "VmFlags:", 8) == 0) {
			size_t n = strlen(line + 8);

			if (n >= cap)
				n = cap - 1;
			memcpy(flags, line + 8, n);
			flags[n] = '\0';
			ret = 0;
			break;
		}
	}
	fclose(f);
	return ret;
}

static void test_mapping_flags(void **state)
{
	struct kms_secmem *m = NULL;
	char flags[256];
	void *p;

	(void)state;
	assert_int_equal(kms_secmem_create(64, 8, &m), KMS_OK);
	p = kms_secmem_alloc(m);
	assert_non_null(p);
	assert_int_equal(vm_flags_of(p, flags, sizeof(flags)), 0);
	if (MLOCK_WORKS)
		assert_non_null(strstr(flags, " lo"));   /* mlock()ed */
	assert_non_null(strstr(flags, " dd"));   /* MADV_DONTDUMP */
	assert_non_null(strstr(flags, " dc"));   /* MADV_DONTFORK */
	kms_secmem_free(m, p);
	kms_secmem_destroy(m);
}

static void test_destroy_with_slots_in_use(void **state)
{
	struct kms_secmem *m = NULL;
	int i;

	(void)state;
	assert_int_equal(kms_secmem_create(4096, 16, &m), KMS_OK);
	for (i = 0; i < 10; i++)
		memset(kms_secmem_alloc(m), 0xee, 4096);
	kms_secmem_destroy(m);
	/* Again, to show the arena came back in full. */
	assert_int_equal(kms_secmem_create(4096, 16, &m), KMS_OK);
	kms_secmem_destroy(m);
}

/* Run @fn in a child so process-wide changes do not leak into the suite. */
static int in_child(int (*fn)(void))
{
	int status;
	pid_t pid;

	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(fn());
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static int mlock_limit_child(void)
{
	struct rlimit small = { 16384, 16384 };
	struct kms_secmem *m = NULL;
	int rc;

	if (setrlimit(RLIMIT_MEMLOCK, &small) != 0)
		return 10;
	/* root has CAP_IPC_LOCK, which ignores the limit: become nobody. */
	if (geteuid() == 0 && setuid(65534) != 0)
		return 11;
	rc = kms_secmem_create(4096, 64, &m);
	kms_secmem_destroy(m);
	return rc == KMS_ERR_NOMEM ? 0 : 12;
}

static void test_mlock_limit(void **state)
{
	(void)state;
	if (!MLOCK_WORKS)
		skip();
	assert_int_equal(in_child(mlock_limit_child), 0);
}

static int harden_child(void)
{
	struct rlimit rl;

	kms_secmem_harden_process();
	if (getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0 ||
	    rl.rlim_max != 0)
		return 1;
	if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
		return 2;
	return 0;
}

static void test_harden_process(void **state)
{
	(void)state;
	assert_int_equal(in_child(harden_child), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_until_exhausted),
		cmocka_unit_test(test_free_wipes),
		cmocka_unit_test(test_slot_rounding),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_mapping_flags),
		cmocka_unit_test(test_destroy_with_slots_in_use),
		cmocka_unit_test(test_mlock_limit),
		cmocka_unit_test(test_harden_process),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
