// SPDX-License-Identifier: Apache-2.0
/*
 * IBE_X(pt), identities with a period, the KGC's derivations, P-256
 * helpers and the parameter and key files (kms_ibe.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "kms_err.h"
#include "kms_ibe.h"
#include "kms_keyfile.h"
#include "kms_token.h"

#define IBE_SALT "KMS1-IBE"

int kms_ibe_new(struct kms_ibe **out)
{
	struct kms_ibe *ibe = calloc(1, sizeof(*ibe));
	int rc;

	if (!ibe)
		return KMS_ERR_NOMEM;
	rc = kms_sakke_new(&ibe->sakke);
	if (!rc)
		rc = kms_eccsi_new(&ibe->eccsi);
	if (rc) {
		kms_ibe_free(ibe);
		return rc;
	}
	*out = ibe;
	return KMS_OK;
}

void kms_ibe_free(struct kms_ibe *ibe)
{
	if (!ibe)
		return;
	kms_sakke_free(ibe->sakke);
	kms_eccsi_free(ibe->eccsi);
	free(ibe);
}

/* ------------------------------------------------------------ identities */

void kms_ibe_period(uint64_t time_ms, char out[KMS_IBE_PERIOD_LEN + 1])
{
	time_t t = (time_t)(time_ms / 1000);
	struct tm tm;

	unsigned y, m;

	gmtime_r(&t, &tm);
	y = (unsigned)(tm.tm_year + 1900) % 10000;
	m = (unsigned)tm.tm_mon % 12 + 1;
	out[0] = (char)('0' + y / 1000);
	out[1] = (char)('0' + y / 100 % 10);
	out[2] = (char)('0' + y / 10 % 10);
	out[3] = (char)('0' + y % 10);
	out[4] = '-';
	out[5] = (char)('0' + m / 10);
	out[6] = (char)('0' + m % 10);
	out[7] = 0;
}

void kms_ibe_period_next(const char *cur, char out[KMS_IBE_PERIOD_LEN + 1])
{
	unsigned y = (unsigned)atoi(cur) % 10000, m = (unsigned)atoi(cur + 5);

	if (++m > 12) {
		m = 1;
		y = (y + 1) % 10000;
	}
	out[0] = (char)('0' + y / 1000);
	out[1] = (char)('0' + y / 100 % 10);
	out[2] = (char)('0' + y / 10 % 10);
	out[3] = (char)('0' + y % 10);
	out[4] = '-';
	out[5] = (char)('0' + m / 10);
	out[6] = (char)('0' + m % 10);
	out[7] = 0;
}

int kms_ibe_period_valid(const char *p, size_t len)
{
	if (len != KMS_IBE_PERIOD_LEN || p[4] != '-')
		return 0;
	for (int i = 0; i < KMS_IBE_PERIOD_LEN; i++)
		if (i != 4 && (p[i] < '0' || p[i] > '9'))
			return 0;
	return (p[5] == '0' && p[6] >= '1') ||
	       (p[5] == '1' && p[6] >= '0' && p[6] <= '2');
}

size_t kms_ibe_ident(const char *period, const struct kms_id *uri,
		     uint8_t out[KMS_IBE_IDENT_MAX])
{
	size_t n = 0;

	memcpy(out, period, KMS_IBE_PERIOD_LEN);
	n += KMS_IBE_PERIOD_LEN;
	out[n++] = 0;
	memcpy(out + n, uri->p, uri->len);
	n += uri->len;
	out[n++] = 0;
	return n;
}

static int ident_of(const char *id, const char *period,
		    uint8_t out[KMS_IBE_IDENT_MAX], size_t *len)
{
	struct kms_id uri;

	if (kms_id_from_str(id, &uri) ||
	    !kms_ibe_period_valid(period, strlen(period)))
		return KMS_ERR_INVAL;
	*len = kms_ibe_ident(period, &uri, out);
	return KMS_OK;
}

/* ------------------------------------------------------------ HKDF */

int kms_hkdf(const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
	     size_t ikm_len, const uint8_t *info, size_t info_len,
	     uint8_t *out, size_t out_len)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = NULL;
	OSSL_PARAM params[5], *p = params;
	int ret = KMS_ERR_CRYPTO;

	if (!kdf)
		return KMS_ERR_CRYPTO;
	ctx = EVP_KDF_CTX_new(kdf);
	if (!ctx)
		goto out;
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						(char *)"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
						 (void *)ikm, ikm_len);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
						 (void *)salt, salt_len);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
						 (void *)info, info_len);
	*p = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, out, out_len, params) == 1)
		ret = KMS_OK;
out:
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ret;
}

/* ------------------------------------------------------------ KGC */

/* An integer in [lo, order-1] from 64 extra bits of HKDF output (bias below
 * 2^-64), big-endian into @p out of @p out_len bytes. */
static int derive_scalar(const uint8_t seed[KMS_IBE_SEED_LEN],
			 const char *label, const BIGNUM *order, unsigned lo,
			 uint8_t *out, size_t out_len)
{
	uint8_t okm[KMS_SAKKE_Z_LEN + 8];
	size_t okm_len = out_len + 8;
	BN_CTX *bc = BN_CTX_new();
	BIGNUM *v, *m;
	int ret = KMS_ERR_CRYPTO;

	if (!bc)
		return KMS_ERR_NOMEM;
	BN_CTX_start(bc);
	v = BN_CTX_get(bc);
	m = BN_CTX_get(bc);
	if (!m || okm_len > sizeof(okm))
		goto out;
	BN_set_flags(v, BN_FLG_CONSTTIME);
	if (kms_hkdf((const uint8_t *)IBE_SALT, strlen(IBE_SALT), seed,
		     KMS_IBE_SEED_LEN, (const uint8_t *)label, strlen(label),
		     okm, okm_len))
		goto out;
	/* v = okm mod (order - lo) + lo */
	if (!BN_bin2bn(okm, (int)okm_len, v) || !BN_copy(m, order) ||
	    !BN_sub_word(m, lo) || !BN_nnmod(v, v, m, bc) ||
	    !BN_add_word(v, lo) || BN_bn2binpad(v, out, (int)out_len) < 0)
		goto out;
	ret = KMS_OK;
out:
	OPENSSL_cleanse(okm, sizeof(okm));
	BN_clear(v);
	BN_CTX_end(bc);
	BN_CTX_free(bc);
	return ret;
}

int kms_ibe_master_derive(const struct kms_ibe *ibe,
			  const uint8_t seed[KMS_IBE_SEED_LEN],
			  uint8_t z[KMS_SAKKE_Z_LEN],
			  uint8_t ksak[KMS_ECCSI_SCALAR_LEN])
{
	uint8_t qb[KMS_SAKKE_Z_LEN], zb[KMS_SAKKE_Z_LEN];
	uint8_t kb[KMS_ECCSI_SCALAR_LEN];
	EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	BIGNUM *q = NULL;
	int rc = KMS_ERR_CRYPTO;

	if (!g)
		return KMS_ERR_CRYPTO;
	if (kms_sakke_order(ibe->sakke, qb))
		goto out;
	q = BN_bin2bn(qb, sizeof(qb), NULL);
	if (!q)
		goto out;
	rc = derive_scalar(seed, "sakke z", q, 2, zb, sizeof(zb));
	if (!rc)
		rc = derive_scalar(seed, "eccsi ksak", EC_GROUP_get0_order(g),
				   1, kb, sizeof(kb));
	if (!rc) {
		memcpy(z, zb, sizeof(zb));
		memcpy(ksak, kb, sizeof(kb));
	}
out:
	OPENSSL_cleanse(zb, sizeof(zb));
	OPENSSL_cleanse(kb, sizeof(kb));
	BN_free(q);
	EC_GROUP_free(g);
	return rc;
}

static void kgc_id(struct kms_ibe_params *p, uint8_t out[KMS_IBE_KGC_ID_LEN])
{
	uint8_t buf[sizeof(p->zs) + sizeof(p->kpak)], md[SHA256_DIGEST_LENGTH];

	memcpy(buf, p->zs, sizeof(p->zs));
	memcpy(buf + sizeof(p->zs), p->kpak, sizeof(p->kpak));
	SHA256(buf, sizeof(buf), md);
	memcpy(out, md, KMS_IBE_KGC_ID_LEN);
}

void kms_ibe_params_kgc_id(struct kms_ibe_params *p)
{
	kgc_id(p, p->kgc_id);
}

int kms_ibe_params_make(const struct kms_ibe *ibe,
			const uint8_t z[KMS_SAKKE_Z_LEN],
			const uint8_t ksak[KMS_ECCSI_SCALAR_LEN],
			struct kms_ibe_params *out)
{
	struct kms_ibe_params p;
	int rc;

	rc = kms_sakke_public(ibe->sakke, z, p.zs);
	if (!rc)
		rc = kms_eccsi_kpak(ibe->eccsi, ksak, p.kpak);
	if (rc)
		return rc;
	kgc_id(&p, p.kgc_id);
	*out = p;
	return KMS_OK;
}

int kms_ibe_issue(const struct kms_ibe *ibe, const uint8_t z[KMS_SAKKE_Z_LEN],
		  const uint8_t ksak[KMS_ECCSI_SCALAR_LEN],
		  const struct kms_ibe_params *params, const struct kms_id *uri,
		  const char *period, struct kms_ibe_keys *out)
{
	uint8_t ident[KMS_IBE_IDENT_MAX];
	struct kms_ibe_keys k;
	size_t n;
	int rc;

	if (!kms_id_valid(uri) || !kms_ibe_period_valid(period, strlen(period)))
		return KMS_ERR_INVAL;
	memset(&k, 0, sizeof(k));
	memcpy(k.id, uri->p, uri->len);
	memcpy(k.period, period, KMS_IBE_PERIOD_LEN);
	n = kms_ibe_ident(period, uri, ident);
	rc = kms_sakke_rsk(ibe->sakke, z, ident, n, k.rsk);
	if (!rc)
		rc = kms_eccsi_issue(ibe->eccsi, ksak, params->kpak, ident, n,
				     NULL, k.ssk, k.pvt);
	if (!rc)
		*out = k;
	kms_ibe_keys_wipe(&k);
	return rc;
}

int kms_ibe_keys_check(const struct kms_ibe *ibe,
		       const struct kms_ibe_params *params,
		       const struct kms_ibe_keys *keys)
{
	uint8_t ident[KMS_IBE_IDENT_MAX];
	size_t n;
	int rc;

	rc = ident_of(keys->id, keys->period, ident, &n);
	if (rc)
		return rc;
	rc = kms_sakke_rsk_check(ibe->sakke, params->zs, ident, n, keys->rsk);
	if (!rc)
		rc = kms_eccsi_validate(ibe->eccsi, params->kpak, ident, n,
					keys->ssk, keys->pvt);
	return rc == KMS_ERR_MALFORMED ? KMS_ERR_AUTH : rc;
}

void kms_ibe_keys_wipe(struct kms_ibe_keys *keys)
{
	OPENSSL_cleanse(keys, sizeof(*keys));
}

/* ------------------------------------------------------------ IBE_X */

/* key | iv for one message from the SSV and the recipient's ident. */
static int ibe_kdf(const uint8_t ssv[KMS_SAKKE_SSV_LEN], const uint8_t *ident,
		   size_t ident_len, uint8_t okm[KMS_KEY_LEN + KMS_NONCE_LEN])
{
	return kms_hkdf((const uint8_t *)IBE_SALT, strlen(IBE_SALT), ssv,
			KMS_SAKKE_SSV_LEN, ident, ident_len, okm,
			KMS_KEY_LEN + KMS_NONCE_LEN);
}

int kms_ibe_seal(const struct kms_ibe *ibe, const struct kms_ibe_params *params,
		 const struct kms_id *to, const char *period, const uint8_t *ad,
		 size_t ad_len, const uint8_t *pt, size_t pt_len, uint8_t *out,
		 size_t cap)
{
	uint8_t ident[KMS_IBE_IDENT_MAX], ssv[KMS_SAKKE_SSV_LEN];
	uint8_t okm[KMS_KEY_LEN + KMS_NONCE_LEN];
	size_t n;
	int rc;

	if (!kms_id_valid(to) || !kms_ibe_period_valid(period, strlen(period)))
		return KMS_ERR_INVAL;
	if (pt_len > (size_t)1 << 30 || cap < KMS_IBE_OVERHEAD + pt_len)
		return KMS_ERR_SPACE;
	n = kms_ibe_ident(period, to, ident);
	if (RAND_priv_bytes(ssv, sizeof(ssv)) != 1)
		return KMS_ERR_CRYPTO;
	rc = kms_sakke_encap(ibe->sakke, params->zs, ident, n, ssv, out);
	if (!rc)
		rc = ibe_kdf(ssv, ident, n, okm);
	if (!rc)
		rc = kms_gcm_seal(okm, okm + KMS_KEY_LEN, ad, ad_len, pt, pt_len,
				  out + KMS_SAKKE_ENC_LEN,
				  out + KMS_SAKKE_ENC_LEN + pt_len);
	OPENSSL_cleanse(ssv, sizeof(ssv));
	OPENSSL_cleanse(okm, sizeof(okm));
	return rc ? rc : (int)(KMS_IBE_OVERHEAD + pt_len);
}

int kms_ibe_open_prepared(const struct kms_ibe *ibe,
			  const struct kms_ibe_params *params,
			  const struct kms_ibe_keys *keys,
			  const struct kms_sakke_rskp *rskp, const uint8_t *ad,
			  size_t ad_len, const uint8_t *in, size_t in_len,
			  uint8_t *pt, size_t cap)
{
	uint8_t ident[KMS_IBE_IDENT_MAX], ssv[KMS_SAKKE_SSV_LEN];
	uint8_t okm[KMS_KEY_LEN + KMS_NONCE_LEN];
	size_t n, pt_len;
	int rc;

	if (in_len < KMS_IBE_OVERHEAD)
		return KMS_ERR_MALFORMED;
	pt_len = in_len - KMS_IBE_OVERHEAD;
	if (cap < pt_len || pt_len > (size_t)1 << 30)
		return KMS_ERR_SPACE;
	rc = ident_of(keys->id, keys->period, ident, &n);
	if (rc)
		return rc;
	rc = rskp ? kms_sakke_decap_prepared(ibe->sakke, rskp, in, ssv)
		  : kms_sakke_decap(ibe->sakke, params->zs, ident, n, keys->rsk,
				    in, ssv);
	if (!rc)
		rc = ibe_kdf(ssv, ident, n, okm);
	if (!rc)
		rc = kms_gcm_open(okm, okm + KMS_KEY_LEN, ad, ad_len,
				  in + KMS_SAKKE_ENC_LEN, pt_len,
				  in + KMS_SAKKE_ENC_LEN + pt_len, pt);
	OPENSSL_cleanse(ssv, sizeof(ssv));
	OPENSSL_cleanse(okm, sizeof(okm));
	return rc ? rc : (int)pt_len;
}

int kms_ibe_open(const struct kms_ibe *ibe, const struct kms_ibe_params *params,
		 const struct kms_ibe_keys *keys, const uint8_t *ad,
		 size_t ad_len, const uint8_t *in, size_t in_len, uint8_t *pt,
		 size_t cap)
{
	return kms_ibe_open_prepared(ibe, params, keys, NULL, ad, ad_len, in,
				     in_len, pt, cap);
}

int kms_ibe_prepare(const struct kms_ibe *ibe,
		    const struct kms_ibe_params *params,
		    const struct kms_ibe_keys *keys, struct kms_sakke_rskp **out)
{
	uint8_t ident[KMS_IBE_IDENT_MAX];
	size_t n;
	int rc;

	rc = ident_of(keys->id, keys->period, ident, &n);
	if (rc)
		return rc;
	return kms_sakke_rsk_prepare(ibe->sakke, params->zs, ident, n, keys->rsk,
				     out);
}

/* ------------------------------------------------------------ P-256 */

static EC_GROUP *p256(void)
{
	return EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
}

/* Decode and check a P-256 point (on the curve, not infinity). */
static EC_POINT *point_in(const EC_GROUP *g, const uint8_t pub[KMS_EC_POINT_LEN],
			  BN_CTX *bc)
{
	EC_POINT *pt = EC_POINT_new(g);

	if (!pt)
		return NULL;
	if (pub[0] != 0x04 ||
	    EC_POINT_oct2point(g, pt, pub, KMS_EC_POINT_LEN, bc) != 1 ||
	    EC_POINT_is_at_infinity(g, pt) ||
	    EC_POINT_is_on_curve(g, pt, bc) != 1) {
		EC_POINT_free(pt);
		return NULL;
	}
	return pt;
}

int kms_ec_point_check(const uint8_t pub[KMS_EC_POINT_LEN])
{
	EC_GROUP *g = p256();
	BN_CTX *bc = BN_CTX_new();
	EC_POINT *pt = NULL;
	int rc = KMS_ERR_CRYPTO;

	if (g && bc) {
		pt = point_in(g, pub, bc);
		rc = pt ? KMS_OK : KMS_ERR_MALFORMED;
	}
	EC_POINT_free(pt);
	BN_CTX_free(bc);
	EC_GROUP_free(g);
	return rc;
}

int kms_ec_keygen(uint8_t priv[KMS_EC_SCALAR_LEN],
		  uint8_t pub[KMS_EC_POINT_LEN])
{
	EC_GROUP *g = p256();
	BN_CTX *bc = BN_CTX_new();
	EC_POINT *pt = NULL;
	BIGNUM *x = BN_secure_new();
	uint8_t xb[KMS_EC_SCALAR_LEN], pb[KMS_EC_POINT_LEN];
	int rc = KMS_ERR_CRYPTO;

	if (!g || !bc || !x || !(pt = EC_POINT_new(g)))
		goto out;
	BN_set_flags(x, BN_FLG_CONSTTIME);
	/* BN_priv_rand_range gives [0, n-1]; zero is redrawn. */
	do {
		if (BN_priv_rand_range(x, EC_GROUP_get0_order(g)) != 1)
			goto out;
	} while (BN_is_zero(x));
	if (EC_POINT_mul(g, pt, x, NULL, NULL, bc) != 1 ||
	    EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, pb,
			       sizeof(pb), bc) != sizeof(pb) ||
	    BN_bn2binpad(x, xb, sizeof(xb)) != sizeof(xb))
		goto out;
	memcpy(priv, xb, sizeof(xb));
	memcpy(pub, pb, sizeof(pb));
	rc = KMS_OK;
out:
	OPENSSL_cleanse(xb, sizeof(xb));
	BN_clear_free(x);
	EC_POINT_clear_free(pt);
	BN_CTX_free(bc);
	EC_GROUP_free(g);
	return rc;
}

int kms_ec_shared(const uint8_t priv[KMS_EC_SCALAR_LEN],
		  const uint8_t peer[KMS_EC_POINT_LEN],
		  uint8_t out[KMS_EC_SCALAR_LEN])
{
	EC_GROUP *g = p256();
	BN_CTX *bc = BN_CTX_new();
	EC_POINT *pp = NULL, *sp = NULL;
	BIGNUM *x = BN_secure_new(), *sx = BN_secure_new();
	uint8_t xb[KMS_EC_SCALAR_LEN];
	int rc = KMS_ERR_CRYPTO;

	if (!g || !bc || !x || !sx || !(sp = EC_POINT_new(g)))
		goto out;
	pp = point_in(g, peer, bc);
	if (!pp) {
		rc = KMS_ERR_MALFORMED;
		goto out;
	}
	BN_set_flags(x, BN_FLG_CONSTTIME);
	if (!BN_bin2bn(priv, KMS_EC_SCALAR_LEN, x) || BN_is_zero(x) ||
	    BN_cmp(x, EC_GROUP_get0_order(g)) >= 0) {
		rc = KMS_ERR_INVAL;
		goto out;
	}
	if (EC_POINT_mul(g, sp, NULL, pp, x, bc) != 1 ||
	    EC_POINT_is_at_infinity(g, sp) ||
	    EC_POINT_get_affine_coordinates(g, sp, sx, NULL, bc) != 1 ||
	    BN_bn2binpad(sx, xb, sizeof(xb)) != sizeof(xb))
		goto out;
	memcpy(out, xb, sizeof(xb));
	rc = KMS_OK;
out:
	OPENSSL_cleanse(xb, sizeof(xb));
	BN_clear_free(x);
	BN_clear_free(sx);
	EC_POINT_free(pp);
	EC_POINT_clear_free(sp);
	BN_CTX_free(bc);
	EC_GROUP_free(g);
	return rc;
}

/* ------------------------------------------------------------ files */

struct kv_fields {
	const char *names[5];
	char *vals[5];
	size_t caps[5];
	unsigned seen;
};

/* One "key = value" line into its field. @return 0, or -1 if unknown or
 * repeated or too long. */
static int kv_field(struct kv_fields *f, const char *name, const char *value)
{
	for (unsigned i = 0; i < 5 && f->names[i]; i++) {
		if (strcmp(name, f->names[i]))
			continue;
		if (f->seen & 1u << i || strlen(value) >= f->caps[i])
			return -1;
		strcpy(f->vals[i], value);
		f->seen |= 1u << i;
		return 0;
	}
	return -1;
}

/*
 * The files hold hex lines of up to 514 characters: longer than libinih's
 * line limit as Debian builds it (200), so they are read here, strictly:
 * '#' comments, blank lines and "key = value" lines, nothing else.
 */
static int kv_read(const char *path, struct kv_fields *f, unsigned n)
{
	FILE *fp = fopen(path, "re");
	char *line = NULL, *eq, *k, *v, *end;
	size_t cap = 0;
	ssize_t len;
	int rc = KMS_OK;

	if (!fp)
		return KMS_ERR_IO;
	while (!rc && (len = getline(&line, &cap, fp)) >= 0) {
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
			       line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = 0;
		k = line + strspn(line, " \t");
		if (!*k || *k == '#')
			continue;
		eq = strchr(k, '=');
		if (!eq) {
			rc = KMS_ERR_MALFORMED;
			break;
		}
		v = eq + 1 + strspn(eq + 1, " \t");
		for (end = eq; end > k && (end[-1] == ' ' || end[-1] == '\t');)
			end--;
		*end = 0;
		if (kv_field(f, k, v))
			rc = KMS_ERR_MALFORMED;
	}
	if (line) {
		OPENSSL_cleanse(line, cap);
		free(line);
	}
	if (ferror(fp))
		rc = KMS_ERR_IO;
	fclose(fp);
	if (!rc && f->seen != (1u << n) - 1)
		rc = KMS_ERR_MALFORMED;
	return rc;
}

static int hex_exact(const char *hex, uint8_t *out, size_t len)
{
	return strlen(hex) == 2 * len && kms_hex_decode(hex, out, len) ==
					(int)len ? KMS_OK : KMS_ERR_MALFORMED;
}

/* Write @p text to @p path through a temp file + fsync + rename. */
static int write_file(const char *path, mode_t mode, const char *text)
{
	char tmp[4096];
	size_t len = strlen(text);
	int fd, rc = KMS_ERR_IO;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return KMS_ERR_INVAL;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  mode);
	if (fd < 0)
		return KMS_ERR_IO;
	if (fchmod(fd, mode) == 0 && write(fd, text, len) == (ssize_t)len &&
	    fsync(fd) == 0)
		rc = KMS_OK;
	if (close(fd) && !rc)
		rc = KMS_ERR_IO;
	if (!rc && rename(tmp, path))
		rc = KMS_ERR_IO;
	if (rc)
		unlink(tmp);
	return rc;
}

int kms_ibe_params_write(const char *path, const struct kms_ibe_params *p)
{
	char zs[2 * sizeof(p->zs) + 1], kpak[2 * sizeof(p->kpak) + 1];
	char id[2 * KMS_IBE_KGC_ID_LEN + 1], text[1024];

	kms_hex_encode(p->zs, sizeof(p->zs), zs);
	kms_hex_encode(p->kpak, sizeof(p->kpak), kpak);
	kms_hex_encode(p->kgc_id, sizeof(p->kgc_id), id);
	snprintf(text, sizeof(text),
		 "# IMS KMS identity-based public parameters (SAKKE RFC 6508 "
		 "set 1, ECCSI RFC 6507 P-256). Public.\n"
		 "kgc_id = %s\nzs = %s\nkpak = %s\n", id, zs, kpak);
	return write_file(path, 0644, text);
}

int kms_ibe_params_read(const char *path, struct kms_ibe_params *out)
{
	char id[2 * KMS_IBE_KGC_ID_LEN + 2], zs[2 * KMS_SAKKE_POINT_LEN + 2];
	char kpak[2 * KMS_ECCSI_POINT_LEN + 2];
	struct kv_fields f = {
		.names = { "kgc_id", "zs", "kpak" },
		.vals = { id, zs, kpak },
		.caps = { sizeof(id), sizeof(zs), sizeof(kpak) },
	};
	struct kms_ibe_params p;
	uint8_t check[KMS_IBE_KGC_ID_LEN];
	int rc;

	rc = kv_read(path, &f, 3);
	if (rc)
		return rc;
	if (hex_exact(id, p.kgc_id, sizeof(p.kgc_id)) ||
	    hex_exact(zs, p.zs, sizeof(p.zs)) ||
	    hex_exact(kpak, p.kpak, sizeof(p.kpak)))
		return KMS_ERR_MALFORMED;
	kgc_id(&p, check);
	if (memcmp(check, p.kgc_id, sizeof(check)))
		return KMS_ERR_MALFORMED;
	*out = p;
	return KMS_OK;
}

int kms_ibe_keys_write(const char *path, const struct kms_ibe_keys *k)
{
	char rsk[2 * sizeof(k->rsk) + 1], ssk[2 * sizeof(k->ssk) + 1];
	char pvt[2 * sizeof(k->pvt) + 1], text[1536];
	int rc;

	kms_hex_encode(k->rsk, sizeof(k->rsk), rsk);
	kms_hex_encode(k->ssk, sizeof(k->ssk), ssk);
	kms_hex_encode(k->pvt, sizeof(k->pvt), pvt);
	snprintf(text, sizeof(text),
		 "# IMS KMS identity-based private keys. Secret: keep mode "
		 "0600.\nid = %s\nperiod = %s\nrsk = %s\nssk = %s\npvt = %s\n",
		 k->id, k->period, rsk, ssk, pvt);
	rc = write_file(path, 0600, text);
	OPENSSL_cleanse(rsk, sizeof(rsk));
	OPENSSL_cleanse(ssk, sizeof(ssk));
	OPENSSL_cleanse(text, sizeof(text));
	return rc;
}

int kms_ibe_keys_read(const char *path, struct kms_ibe_keys *out)
{
	char id[KMS_ID_MAX + 2], period[KMS_IBE_PERIOD_LEN + 2];
	char rsk[2 * KMS_SAKKE_POINT_LEN + 2], ssk[2 * KMS_ECCSI_SCALAR_LEN + 2];
	char pvt[2 * KMS_ECCSI_POINT_LEN + 2];
	struct kv_fields f = {
		.names = { "id", "period", "rsk", "ssk", "pvt" },
		.vals = { id, period, rsk, ssk, pvt },
		.caps = { sizeof(id), sizeof(period), sizeof(rsk), sizeof(ssk),
			  sizeof(pvt) },
	};
	struct kms_ibe_keys k;
	struct kms_id uri;
	int rc;

	memset(&k, 0, sizeof(k));
	rc = kv_read(path, &f, 5);
	if (!rc && (kms_id_from_str(id, &uri) ||
		    !kms_ibe_period_valid(period, strlen(period)) ||
		    hex_exact(rsk, k.rsk, sizeof(k.rsk)) ||
		    hex_exact(ssk, k.ssk, sizeof(k.ssk)) ||
		    hex_exact(pvt, k.pvt, sizeof(k.pvt))))
		rc = KMS_ERR_MALFORMED;
	if (!rc) {
		strcpy(k.id, id);
		strcpy(k.period, period);
		*out = k;
	}
	kms_ibe_keys_wipe(&k);
	OPENSSL_cleanse(rsk, sizeof(rsk));
	OPENSSL_cleanse(ssk, sizeof(ssk));
	return rc;
}
