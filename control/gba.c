// SPDX-License-Identifier: Apache-2.0
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "kms_err.h"
#include "kms_gba.h"

static int put_param(uint8_t *out, size_t cap, size_t *off, const void *p,
		     size_t len)
{
	if (len > 0xffff || *off + len + 2 > cap)
		return KMS_ERR_SPACE;
	memcpy(out + *off, p, len);
	out[*off + len] = (uint8_t)(len >> 8);
	out[*off + len + 1] = (uint8_t)len;
	*off += len + 2;
	return KMS_OK;
}

int kms_gba_encode_s(const uint8_t rand[KMS_GBA_RAND_LEN], const char *impi,
		     const char *naf_fqdn, const uint8_t ua_id[KMS_GBA_UA_ID_LEN],
		     uint8_t *out, size_t cap)
{
	uint8_t naf_id[512];
	size_t off = 1, fl;

	if (!impi || !naf_fqdn || !*impi || !*naf_fqdn)
		return KMS_ERR_INVAL;
	fl = strlen(naf_fqdn);
	if (fl + KMS_GBA_UA_ID_LEN > sizeof(naf_id))
		return KMS_ERR_INVAL;
	if (cap < 1)
		return KMS_ERR_SPACE;
	memcpy(naf_id, naf_fqdn, fl);
	memcpy(naf_id + fl, ua_id, KMS_GBA_UA_ID_LEN);
	out[0] = 0x01; /* FC */
	if (put_param(out, cap, &off, "gba-me", 6) ||
	    put_param(out, cap, &off, rand, KMS_GBA_RAND_LEN) ||
	    put_param(out, cap, &off, impi, strlen(impi)) ||
	    put_param(out, cap, &off, naf_id, fl + KMS_GBA_UA_ID_LEN))
		return KMS_ERR_SPACE;
	return (int)off;
}

int kms_gba_ks_naf(const uint8_t *ks, size_t ks_len,
		   const uint8_t rand[KMS_GBA_RAND_LEN], const char *impi,
		   const char *naf_fqdn, const uint8_t ua_id[KMS_GBA_UA_ID_LEN],
		   uint8_t out[32])
{
	uint8_t s[1024];
	unsigned int mlen = 0;
	int n = kms_gba_encode_s(rand, impi, naf_fqdn, ua_id, s, sizeof(s));

	if (n < 0 || ks_len == 0)
		return n < 0 ? n : KMS_ERR_INVAL;
	if (!HMAC(EVP_sha256(), ks, (int)ks_len, s, (size_t)n, out, &mlen) ||
	    mlen != 32)
		return KMS_ERR_CRYPTO;
	return KMS_OK;
}
