// SPDX-License-Identifier: Apache-2.0
/*
 * kms_p11fwd.so: a PKCS#11 module for tests that forwards every call to
 * the real module named by $KMS_P11FWD_TARGET (SoftHSM2) and watches how
 * its user handles key values. Contract in p11fwd.h.
 *
 * Only C_GetFunctionList is looked up by a PKCS#11 user; it returns a copy
 * of the real module's function list with four entries replaced.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "p11fwd.h"
#include "kms_pidpath.h"

#define TRACK_MAX 4096

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST real, ours;
static void *dl;
static atomic_ullong c_unwraps, c_unwraps_nx, c_value_reads, c_value_reads_nx;
/* Handles made by C_UnwrapKey with CKA_EXTRACTABLE false, until destroyed. */
static CK_OBJECT_HANDLE tracked[TRACK_MAX];
static unsigned ntracked;

static int is_tracked(CK_OBJECT_HANDLE h)
{
	int found = 0;

	pthread_mutex_lock(&lock);
	for (unsigned i = 0; i < ntracked && !found; i++)
		found = tracked[i] == h;
	pthread_mutex_unlock(&lock);
	return found;
}

static void untrack(CK_OBJECT_HANDLE h)
{
	pthread_mutex_lock(&lock);
	for (unsigned i = 0; i < ntracked; i++) {
		if (tracked[i] == h) {
			tracked[i] = tracked[--ntracked];
			break;
		}
	}
	pthread_mutex_unlock(&lock);
}

static int template_says(CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_ATTRIBUTE_TYPE type,
			 CK_BBOOL want)
{
	for (CK_ULONG i = 0; i < n; i++)
		if (t[i].type == type && t[i].ulValueLen == sizeof(CK_BBOOL) &&
		    t[i].pValue)
			return *(CK_BBOOL *)t[i].pValue == want;
	return 0;
}

static CK_RV fwd_UnwrapKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,
			   CK_OBJECT_HANDLE unwrapping, CK_BYTE_PTR wrapped,
			   CK_ULONG wrapped_len, CK_ATTRIBUTE_PTR t, CK_ULONG n,
			   CK_OBJECT_HANDLE_PTR out)
{
	CK_RV rv = real.C_UnwrapKey(s, m, unwrapping, wrapped, wrapped_len, t,
				    n, out);

	if (rv != CKR_OK)
		return rv;
	atomic_fetch_add(&c_unwraps, 1);
	if (template_says(t, n, CKA_EXTRACTABLE, CK_FALSE)) {
		atomic_fetch_add(&c_unwraps_nx, 1);
		pthread_mutex_lock(&lock);
		if (ntracked < TRACK_MAX)
			tracked[ntracked++] = *out;
		pthread_mutex_unlock(&lock);
	}
	return rv;
}

static CK_RV fwd_GetAttributeValue(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
				   CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	for (CK_ULONG i = 0; i < n; i++) {
		if (t[i].type != CKA_VALUE)
			continue;
		atomic_fetch_add(&c_value_reads, 1);
		if (is_tracked(o))
			atomic_fetch_add(&c_value_reads_nx, 1);
	}
	return real.C_GetAttributeValue(s, o, t, n);
}

static CK_RV fwd_DestroyObject(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o)
{
	CK_RV rv = real.C_DestroyObject(s, o);

	if (rv == CKR_OK)
		untrack(o);
	return rv;
}

void kms_p11fwd_counts(struct kms_p11fwd_counts *out)
{
	out->unwraps = atomic_load(&c_unwraps);
	out->unwraps_nonextractable = atomic_load(&c_unwraps_nx);
	out->value_reads = atomic_load(&c_value_reads);
	out->value_reads_nonextractable = atomic_load(&c_value_reads_nx);
	pthread_mutex_lock(&lock);
	out->live_nonextractable = ntracked;
	pthread_mutex_unlock(&lock);
}

static void report(void)
{
	const char *path = getenv("KMS_P11FWD_REPORT");
	struct kms_p11fwd_counts c;
	char name[4096];
	FILE *f;

	if (!path || !*path)
		return;
	kms_pid_path(path, name, sizeof(name));
	kms_p11fwd_counts(&c);
	f = fopen(name, "w");
	if (!f)
		return;
	fprintf(f, "unwraps %llu\nunwraps_nonextractable %llu\nvalue_reads %llu\n"
		"value_reads_nonextractable %llu\n", c.unwraps,
		c.unwraps_nonextractable, c.value_reads,
		c.value_reads_nonextractable);
	fclose(f);
}

static CK_RV fwd_Finalize(CK_VOID_PTR reserved)
{
	CK_RV rv = real.C_Finalize(reserved);

	report();
	return rv;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	const char *target = getenv("KMS_P11FWD_TARGET");
	CK_C_GetFunctionList get;
	CK_FUNCTION_LIST_PTR p;
	CK_RV rv = CKR_OK;

	if (!list)
		return CKR_ARGUMENTS_BAD;
	pthread_mutex_lock(&lock);
	if (dl)
		goto out;
	if (!target) {
		fprintf(stderr, "kms_p11fwd: set KMS_P11FWD_TARGET to the real module\n");
		rv = CKR_GENERAL_ERROR;
		goto out;
	}
	dl = dlopen(target, RTLD_NOW | RTLD_LOCAL);
	get = dl ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
	if (!get || get(&p) != CKR_OK) {
		fprintf(stderr, "kms_p11fwd: cannot load %s\n", target);
		if (dl)
			dlclose(dl);
		dl = NULL;
		rv = CKR_GENERAL_ERROR;
		goto out;
	}
	real = *p;
	ours = real;
	ours.C_UnwrapKey = fwd_UnwrapKey;
	ours.C_GetAttributeValue = fwd_GetAttributeValue;
	ours.C_DestroyObject = fwd_DestroyObject;
	ours.C_Finalize = fwd_Finalize;
out:
	pthread_mutex_unlock(&lock);
	if (rv == CKR_OK)
		*list = &ours;
	return rv;
}
