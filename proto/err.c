// SPDX-License-Identifier: Apache-2.0
#include "kms_err.h"

const char *kms_strerror(int err)
{
	switch (err) {
	case KMS_OK: return "success";
	case KMS_ERR_NOMEM: return "out of memory (or mlock refused)";
	case KMS_ERR_INVAL: return "invalid argument";
	case KMS_ERR_IO: return "I/O error";
	case KMS_ERR_CONFIG: return "configuration error";
	case KMS_ERR_PIN: return "PIN missing or refused";
	case KMS_ERR_HSM: return "HSM (PKCS#11) error";
	case KMS_ERR_NOTFOUND: return "not found";
	case KMS_ERR_EXISTS: return "already exists";
	case KMS_ERR_STORE: return "keystore (LMDB) error";
	case KMS_ERR_MAPFULL: return "keystore full (LMDB map size reached)";
	case KMS_ERR_CRYPTO: return "cryptographic library error";
	case KMS_ERR_AUTH: return "authentication failed";
	case KMS_ERR_MALFORMED: return "malformed message";
	case KMS_ERR_SPACE: return "buffer too small";
	case KMS_ERR_BUSY: return "table full";
	case KMS_ERR_CORRUPT: return "stored record is corrupt";
	}
	return "unknown error";
}

const char *kms_status_name(unsigned status)
{
	static const char *const names[KMS_ST__COUNT] = {
		[KMS_ST_OK] = "OK",
		[KMS_ST_MALFORMED] = "MALFORMED",
		[KMS_ST_BAD_VERSION] = "BAD_VERSION",
		[KMS_ST_BAD_TYPE] = "BAD_TYPE",
		[KMS_ST_UNKNOWN_PARTY] = "UNKNOWN_PARTY",
		[KMS_ST_PARTY_REVOKED] = "PARTY_REVOKED",
		[KMS_ST_WRONG_ROLE] = "WRONG_ROLE",
		[KMS_ST_AUTH_FAILED] = "AUTH_FAILED",
		[KMS_ST_ID_MISMATCH] = "ID_MISMATCH",
		[KMS_ST_STALE] = "STALE",
		[KMS_ST_REPLAY] = "REPLAY",
		[KMS_ST_UNKNOWN_KEY_ID] = "UNKNOWN_KEY_ID",
		[KMS_ST_DEPOSIT_EXPIRED] = "DEPOSIT_EXPIRED",
		[KMS_ST_DEPOSIT_REVOKED] = "DEPOSIT_REVOKED",
		[KMS_ST_NOT_RECIPIENT] = "NOT_RECIPIENT",
		[KMS_ST_HANDLE_MISMATCH] = "HANDLE_MISMATCH",
		[KMS_ST_POLICY_DENIED] = "POLICY_DENIED",
		[KMS_ST_STORE_FULL] = "STORE_FULL",
		[KMS_ST_STORE_FAILED] = "STORE_FAILED",
		[KMS_ST_HSM_FAILED] = "HSM_FAILED",
		[KMS_ST_BUSY] = "BUSY",
		[KMS_ST_INTERNAL] = "INTERNAL",
		[KMS_ST_BAD_PERIOD] = "BAD_PERIOD",
		[KMS_ST_IBE_UNAVAILABLE] = "IBE_UNAVAILABLE",
		[KMS_ST_PAIR_REVOKED] = "PAIR_REVOKED",
	};
	if (status < KMS_ST__COUNT && names[status])
		return names[status];
	return "UNKNOWN_STATUS";
}
