// SPDX-License-Identifier: Apache-2.0
/*
 * kms_p11fwd.so: a PKCS#11 module for tests that forwards every call to
 * the real module named by $KMS_P11FWD_TARGET (SoftHSM2), watches how its
 * user handles key values and, on command, fails calls (fault injection
 * over the real module). Contract in p11fwd.h.
 *
 * Only C_GetFunctionList is looked up by a PKCS#11 user; it returns a copy
 * of the real module's function list with four entries replaced.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
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

/* ---- fault injection ($KMS_P11FWD_FAULTS: a control file) ---- */

static struct {
	struct timespec mtime;      /* of the control file when last read */
	int have;
	CK_RV rv;                   /* 0: no fault */
	char fn[48];                /* "all" or one function name */
	int close;                  /* also close the caller's real session */
} fault;
static atomic_ullong c_faults;

static const struct { const char *name; CK_RV rv; } rvs[] = {
	{ "CKR_DEVICE_ERROR", CKR_DEVICE_ERROR },
	{ "CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID },
	{ "CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT },
	{ "CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED },
	{ "CKR_GENERAL_ERROR", CKR_GENERAL_ERROR },
	{ "CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED },
};

/* Re-read the control file when it changed: "off", or "CKR_NAME FN|all
 * [close]". Called with lock held. */
static void fault_reload(void)
{
	const char *path = getenv("KMS_P11FWD_FAULTS");
	char line[160], name[64], fn[48], opt[16];
	struct stat st;
	FILE *f;
	int n;

	if (!path || stat(path, &st))
		return;
	if (fault.have && st.st_mtim.tv_sec == fault.mtime.tv_sec &&
	    st.st_mtim.tv_nsec == fault.mtime.tv_nsec)
		return;
	fault.have = 1;
	fault.mtime = st.st_mtim;
	fault.rv = 0;
	f = fopen(path, "re");
	if (!f)
		return;
	if (fgets(line, sizeof(line), f) &&
	    (n = sscanf(line, "%63s %47s %15s", name, fn, opt)) >= 2)
		for (size_t i = 0; i < sizeof(rvs) / sizeof(rvs[0]); i++)
			if (!strcmp(rvs[i].name, name)) {
				fault.rv = rvs[i].rv;
				snprintf(fault.fn, sizeof(fault.fn), "%s", fn);
				fault.close = n == 3 && !strcmp(opt, "close");
			}
	fclose(f);
}

/* The fault to return for @p fn on session @p s, or CKR_OK. */
static CK_RV fault_for(const char *fn, CK_SESSION_HANDLE s)
{
	CK_RV rv = CKR_OK;
	int close_it = 0;

	pthread_mutex_lock(&lock);
	fault_reload();
	if (fault.rv && (!strcmp(fault.fn, "all") || !strcmp(fault.fn, fn))) {
		rv = fault.rv;
		close_it = fault.close && s != CK_INVALID_HANDLE;
	}
	pthread_mutex_unlock(&lock);
	if (rv == CKR_OK)
		return CKR_OK;
	atomic_fetch_add(&c_faults, 1);
	/* A session handle reported invalid is made so for real: the user
	 * must open a new one once the fault is lifted. */
	if (close_it)
		real.C_CloseSession(s);
	return rv;
}

#define FAULT(fn, s) do {					\
	CK_RV frv_ = fault_for(#fn, (s));			\
	if (frv_ != CKR_OK)					\
		return frv_;					\
} while (0)

static CK_RV fwd_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app,
			     CK_NOTIFY notify, CK_SESSION_HANDLE_PTR out)
{
	FAULT(C_OpenSession, CK_INVALID_HANDLE);
	return real.C_OpenSession(slot, flags, app, notify, out);
}

static CK_RV fwd_GenerateRandom(CK_SESSION_HANDLE s, CK_BYTE_PTR p, CK_ULONG n)
{
	FAULT(C_GenerateRandom, s);
	return real.C_GenerateRandom(s, p, n);
}

static CK_RV fwd_WrapKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,
			 CK_OBJECT_HANDLE wk, CK_OBJECT_HANDLE k, CK_BYTE_PTR out,
			 CK_ULONG_PTR out_len)
{
	FAULT(C_WrapKey, s);
	return real.C_WrapKey(s, m, wk, k, out, out_len);
}

static CK_RV fwd_CreateObject(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t,
			      CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
	FAULT(C_CreateObject, s);
	return real.C_CreateObject(s, t, n, out);
}

static CK_RV fwd_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t,
				 CK_ULONG n)
{
	FAULT(C_FindObjectsInit, s);
	return real.C_FindObjectsInit(s, t, n);
}

static CK_RV fwd_EncryptInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,
			     CK_OBJECT_HANDLE k)
{
	FAULT(C_EncryptInit, s);
	return real.C_EncryptInit(s, m, k);
}

static CK_RV fwd_Encrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG n,
			 CK_BYTE_PTR out, CK_ULONG_PTR out_len)
{
	FAULT(C_Encrypt, s);
	return real.C_Encrypt(s, in, n, out, out_len);
}

static CK_RV fwd_DecryptInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,
			     CK_OBJECT_HANDLE k)
{
	FAULT(C_DecryptInit, s);
	return real.C_DecryptInit(s, m, k);
}

static CK_RV fwd_Decrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG n,
			 CK_BYTE_PTR out, CK_ULONG_PTR out_len)
{
	FAULT(C_Decrypt, s);
	return real.C_Decrypt(s, in, n, out, out_len);
}

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
	CK_RV rv;

	FAULT(C_UnwrapKey, s);
	rv = real.C_UnwrapKey(s, m, unwrapping, wrapped, wrapped_len, t, n, out);

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
	FAULT(C_GetAttributeValue, s);
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
		"value_reads_nonextractable %llu\nfaults %llu\n", c.unwraps,
		c.unwraps_nonextractable, c.value_reads,
		c.value_reads_nonextractable,
		(unsigned long long)atomic_load(&c_faults));
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
	ours.C_OpenSession = fwd_OpenSession;
	ours.C_GenerateRandom = fwd_GenerateRandom;
	ours.C_WrapKey = fwd_WrapKey;
	ours.C_CreateObject = fwd_CreateObject;
	ours.C_FindObjectsInit = fwd_FindObjectsInit;
	ours.C_EncryptInit = fwd_EncryptInit;
	ours.C_Encrypt = fwd_Encrypt;
	ours.C_DecryptInit = fwd_DecryptInit;
	ours.C_Decrypt = fwd_Decrypt;
out:
	pthread_mutex_unlock(&lock);
	if (rv == CKR_OK)
		*list = &ours;
	return rv;
}
