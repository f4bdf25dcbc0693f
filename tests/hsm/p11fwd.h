/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file p11fwd.h
 * @brief kms_p11fwd.so, a PKCS#11 module for tests: it forwards every call
 *        to the real module named by $KMS_P11FWD_TARGET and counts how its
 *        user treats key values.
 *
 * Point kms_hsm (hsm.module) at kms_p11fwd.so. Counted:
 *  - unwraps: successful C_UnwrapKey calls; unwraps_nonextractable: those
 *    whose template set CKA_EXTRACTABLE false (their handles are tracked
 *    until C_DestroyObject; live_nonextractable is how many are alive);
 *  - value_reads: C_GetAttributeValue calls asking for CKA_VALUE;
 *    value_reads_nonextractable: those on a tracked handle. A user that
 *    keeps keys inside the HSM has 0 there.
 * Fault injection: $KMS_P11FWD_FAULTS names a control file, re-read when
 * it changes; its first line is "off" or "CKR_NAME FN [close]": calls of
 * FN (a PKCS#11 function name, or "all" of the session, object, crypto
 * and random functions) return CKR_NAME (CKR_DEVICE_ERROR,
 * CKR_SESSION_HANDLE_INVALID, CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_REMOVED,
 * CKR_GENERAL_ERROR, CKR_FUNCTION_FAILED) without reaching the real
 * module; with "close" the caller's session is also really closed, so it
 * stays invalid after the fault is lifted. Injected faults are counted
 * ("faults" in the report).
 * In process: dlopen(path, RTLD_NOW | RTLD_NOLOAD) and dlsym
 * "kms_p11fwd_counts". Across processes: $KMS_P11FWD_REPORT names a file
 * that gets one "name value" line per counter at C_Finalize ("%p" in the
 * name becomes the process id: one file per process).
 */
#ifndef KMS_P11FWD_H
#define KMS_P11FWD_H

struct kms_p11fwd_counts {
	unsigned long long unwraps, unwraps_nonextractable;
	unsigned long long value_reads, value_reads_nonextractable;
	unsigned long long live_nonextractable;
};

void kms_p11fwd_counts(struct kms_p11fwd_counts *out);

#endif /* KMS_P11FWD_H */
