// SPDX-License-Identifier: Apache-2.0
/*
 * Client-side token crypto: AES-256-GCM through OpenSSL 3 EVP, one context
 * per call. The server keeps cached per-key contexts instead
 * (dataplane/kms_crypto.h); the bytes on the wire are the same.
 */
#include <limits.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "kms_err.h"
#include "kms_proto.h"
#include "kms_token.h"

#define TOKEN_AD_MAX (8 + 1 + 1 + KMS_ID_MAX + 4 + 8)
#define KEYBOX_AD_MAX (8 + 1 + 1 + 4 + 2 + 2 * KMS_ID_MAX + KMS_KEY_ID_LEN + \
		       4 + 8 + KMS_NONCE_LEN)

int kms_gcm_seal(const uint8_t key[KMS_KEY_LEN],
		 const uint8_t iv[KMS_NONCE_LEN], const uint8_t *ad,
		 size_t ad_len, const uint8_t *pt, size_t pt_len, uint8_t *ct,
		 uint8_t tag[KMS_TAG_LEN])
{
	EVP_CIPHER_CTX *ctx;
	int n, ret = KMS_ERR_CRYPTO;

	if (ad_len > INT_MAX || pt_len > INT_MAX)
		return KMS_ERR_INVAL;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return KMS_ERR_CRYPTO;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, KMS_NONCE_LEN,
				NULL) != 1 ||
	    EVP_EncryptInit_ex(ctx, NULL, NULL, key, iv) != 1)
		goto out;
	if (ad_len && EVP_EncryptUpdate(ctx, NULL, &n, ad, (int)ad_len) != 1)
		goto out;
	if (pt_len && EVP_EncryptUpdate(ctx, ct, &n, pt, (int)pt_len) != 1)
		goto out;
	if (EVP_EncryptFinal_ex(ctx, ct + pt_len, &n) != 1)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KMS_TAG_LEN,
				tag) != 1)
		goto out;
	ret = KMS_OK;
out:
	EVP_CIPHER_CTX_free(ctx);       /* also wipes the key schedule */
	return ret;
}

int kms_gcm_open(const uint8_t key[KMS_KEY_LEN],
		 const uint8_t iv[KMS_NONCE_LEN], const uint8_t *ad,
		 size_t ad_len, const uint8_t *ct, size_t ct_len,
		 const uint8_t tag[KMS_TAG_LEN], uint8_t *pt)
{
	EVP_CIPHER_CTX *ctx;
	int n, ret = KMS_ERR_CRYPTO;

	if (ad_len > INT_MAX || ct_len > INT_MAX)
		return KMS_ERR_INVAL;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return KMS_ERR_CRYPTO;
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, KMS_NONCE_LEN,
				NULL) != 1 ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, key, iv) != 1)
		goto out;
	if (ad_len && EVP_DecryptUpdate(ctx, NULL, &n, ad, (int)ad_len) != 1)
		goto out;
	if (ct_len && EVP_DecryptUpdate(ctx, pt, &n, ct, (int)ct_len) != 1)
		goto out;
	/* OpenSSL keeps the tag const in practice; the API wants void * */
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KMS_TAG_LEN,
				(void *)tag) != 1)
		goto out;
	if (EVP_DecryptFinal_ex(ctx, pt + ct_len, &n) != 1) {
		/* The caller must not use pt: wipe what was decrypted. */
		if (ct_len)
			OPENSSL_cleanse(pt, ct_len);
		ret = KMS_ERR_AUTH;
		goto out;
	}
	ret = KMS_OK;
out:
	EVP_CIPHER_CTX_free(ctx);
	return ret;
}

int kms_token_seal(uint8_t role, const struct kms_id *party, uint32_t gen,
		   const uint8_t key[KMS_KEY_LEN], uint64_t ts_ms,
		   const uint8_t *nonce, const struct kms_id *a,
		   const struct kms_id *b, uint8_t *out, size_t cap)
{
	uint8_t pt[KMS_TOKEN_PT_MAX], ct[KMS_TOKEN_PT_MAX];
	uint8_t ad[TOKEN_AD_MAX], iv[KMS_NONCE_LEN], tag[KMS_TAG_LEN];
	size_t pt_len, ad_len;
	int ret;

	if (!key || !out || !kms_id_valid(party) || !kms_id_valid(a) ||
	    !kms_id_valid(b))
		return KMS_ERR_INVAL;
	if (cap < KMS_TOKEN_FIXED + 2 + (size_t)a->len + b->len)
		return KMS_ERR_SPACE;
	if (nonce)
		memcpy(iv, nonce, KMS_NONCE_LEN);
	else if (RAND_bytes(iv, KMS_NONCE_LEN) != 1)
		return KMS_ERR_CRYPTO;

	pt_len = kms_token_pt(a, b, pt);
	ad_len = kms_token_ad(role, party, gen, ts_ms, ad);
	ret = kms_gcm_seal(key, iv, ad, ad_len, pt, pt_len, ct, tag);
	if (ret == KMS_OK)
		ret = kms_token_encode(role, gen, ts_ms, iv, ct,
				       (uint16_t)pt_len, tag, out, cap);
	OPENSSL_cleanse(pt, sizeof(pt));
	OPENSSL_cleanse(ct, sizeof(ct));
	OPENSSL_cleanse(tag, sizeof(tag));
	OPENSSL_cleanse(iv, sizeof(iv));
	return ret;
}

int kms_keybox_open(const struct kms_resp *resp, uint8_t role,
		    uint32_t recipient_gen, const uint8_t key[KMS_KEY_LEN],
		    const struct kms_id *a, const struct kms_id *b,
		    const uint8_t req_nonce[KMS_NONCE_LEN],
		    uint8_t k_out[KMS_KEY_LEN])
{
	uint8_t ad[KEYBOX_AD_MAX], k[KMS_KEY_LEN];
	const uint8_t *box;
	size_t ad_len;
	int ret;

	if (!resp || !key || !req_nonce || !k_out || !resp->keybox ||
	    !resp->key_id || !kms_id_valid(a) || !kms_id_valid(b) ||
	    (resp->hdr.type != KMS_T_DEPOSIT_RESP &&
	     resp->hdr.type != KMS_T_RETRIEVE_RESP))
		return KMS_ERR_INVAL;

	box = resp->keybox;
	ad_len = kms_keybox_ad(resp->hdr.type, role, recipient_gen, a, b,
			       resp->key_id, resp->k_gen, resp->expiry_ms,
			       req_nonce, ad);
	ret = kms_gcm_open(key, box, ad, ad_len, box + KMS_NONCE_LEN,
			   KMS_KEY_LEN, box + KMS_NONCE_LEN + KMS_KEY_LEN, k);
	if (ret == KMS_OK)
		memcpy(k_out, k, KMS_KEY_LEN);
	OPENSSL_cleanse(k, sizeof(k));
	return ret;
}

uint64_t kms_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
