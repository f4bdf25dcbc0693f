/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file hsm_priv.h
 * @brief Internals of the hsm module, shared with its own tests only.
 *
 * Nothing outside hsm/ and tests/hsm/ includes this file: it exposes raw
 * PKCS#11 handles so the tests can inspect the KEK's attributes through
 * the same loaded module. Uses the standard PKCS#11 names (pValue,
 * ulValueLen, ...): p11-kit's header defaults to them unless CRYPTOKI_GNU
 * is defined.
 */
#ifndef KMS_HSM_PRIV_H
#define KMS_HSM_PRIV_H

#include <pthread.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "kms_hsm.h"

struct kms_hsm_session {
	struct kms_hsm *hsm;
	CK_FUNCTION_LIST_PTR p11;
	CK_SESSION_HANDLE h;
	CK_OBJECT_HANDLE kek;     /**< wraps; found at open and again after a
	                               KEK epoch change; CK_INVALID_HANDLE for
	                               the hsm's own login session */
	CK_OBJECT_HANDLE kek_alt; /**< during a KEK rotation: the previous KEK,
	                               tried when a blob does not unwrap under
	                               @kek; else CK_INVALID_HANDLE */
	uint32_t epoch;           /**< hsm->kek_epoch when the KEKs were found */
	int broken;               /**< the module lost it: reopen before use */
	unsigned revive_failed;   /**< reopen attempts failed in a row */
	uint32_t gen;             /**< +1 at each reopen: older object handles
	                               are dead */
	uint64_t calls;           /**< PKCS#11 calls made on this session */
};

struct kms_hsm {
	void *dl;                 /**< dlopen() handle of the module */
	CK_FUNCTION_LIST_PTR p11;
	CK_SLOT_ID slot;
	char *kek_label;
	char *kek_next_label;     /**< "<kek_label>.next": the KEK being
	                               rotated in */
	/** Bumped (atomically) when a KEK rotation starts or ends: every
	 *  session then looks its KEKs up again before its next wrap or
	 *  unwrap. */
	uint32_t kek_epoch;
	/*
	 * Serialises C_OpenSession/C_CloseSession (SoftHSM2 can invalidate
	 * other threads' sessions when they race) and every use of @login.
	 */
	pthread_mutex_t lock;
	/*
	 * The KEK objects change (a next KEK made, the old one destroyed, the
	 * next one relabelled) only under the write side; every session
	 * operation that may look the KEKs up or use them holds the read
	 * side. SoftHSM2 made a wrap or unwrap fail now and then when it ran
	 * while another session modified the token's KEK objects (seen as 2
	 * HSM_FAILED answers in a live rotation under load). Readers may
	 * nest (glibc's default, reader-preferring rwlock).
	 */
	pthread_rwlock_t kek_rw;
	/* Holds the CKU_USER login for the lifetime of the kms_hsm: all other
	 * sessions of the application share it. Used by kek_create. */
	struct kms_hsm_session login;
};

#endif /* KMS_HSM_PRIV_H */
