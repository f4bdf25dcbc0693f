// SPDX-License-Identifier: Apache-2.0
/*
 * ECCSI (RFC 6507) on NIST P-256 with SHA-256, on OpenSSL's EC and BIGNUM.
 *
 * Section references are to RFC 6507. Secret scalars (KSAK, v, SSK, j and
 * everything computed from them) live in BIGNUMs with BN_FLG_CONSTTIME set
 * and are freed with BN_clear_free; byte copies are wiped with
 * OPENSSL_cleanse. Multiplications by a secret scalar are by G only, which
 * OpenSSL does in constant time; the one inversion of a secret value is by
 * Fermat (a^(q-2) with BN_mod_exp_mont_consttime).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/rand.h>

#include "kms_eccsi.h"
#include "kms_err.h"

#define SLEN KMS_ECCSI_SCALAR_LEN /* N of section 4.1 */
#define PLEN KMS_ECCSI_POINT_LEN
#define HLEN 32                   /* SHA-256 output, = N */
#define MAX_DRAWS 16              /* fresh v or j before giving up */

struct kms_eccsi {
	EC_GROUP *group;      /* P-256; G multiples come from OpenSSL's table */
	BIGNUM *p;            /* field prime */
	BIGNUM *q;            /* group order */
	BIGNUM *q_minus_2;    /* Fermat exponent for inverses mod q */
	BN_MONT_CTX *mont_q;  /* read-only after kms_eccsi_new() */
	EVP_MD *sha256;
	uint8_t g[PLEN];      /* G, 0x04 || Gx || Gy, the first part of HS */
};

struct part {
	const void *p;
	size_t len;
};

static int id_ok(const uint8_t *id, size_t id_len)
{
	return id && id_len >= 1 && id_len <= KMS_ECCSI_ID_MAX;
}

/* A BIGNUM for a secret: secure heap when there is one, constant time. */
static BIGNUM *secret_bn(void)
{
	BIGNUM *b = BN_secure_new();

	if (b)
		BN_set_flags(b, BN_FLG_CONSTTIME);
	return b;
}

/* 1 if 1 <= @b < @max. */
static int in_range(const BIGNUM *b, const BIGNUM *max)
{
	return !BN_is_zero(b) && !BN_is_negative(b) && BN_cmp(b, max) < 0;
}

/*
 * Load a 32-octet scalar into @b; KMS_OK if it is in [1, q-1], else
 * @bad_range.
 */
static int scalar_load(const struct kms_eccsi *e, const uint8_t in[SLEN],
		       BIGNUM *b, int bad_range)
{
	int err = KMS_ERR_CRYPTO;

	if (!BN_bin2bn(in, SLEN, b))
		goto out;
	err = in_range(b, e->q) ? KMS_OK : bad_range;
out:
	return err;
}

static int scalar_store(const BIGNUM *b, uint8_t out[SLEN])
{
	return BN_bn2binpad(b, out, SLEN) == SLEN ? KMS_OK : KMS_ERR_CRYPTO;
}

/*
 * Decode 0x04 || x || y into a new point: x, y < p, on the curve, not the
 * point at infinity (P-256 has cofactor 1, so this is the whole subgroup
 * check). KMS_ERR_MALFORMED for anything else.
 */
static int point_load(const struct kms_eccsi *e, const uint8_t in[PLEN],
		      EC_POINT **out, BN_CTX *ctx)
{
	EC_POINT *pt = EC_POINT_new(e->group);
	int err = KMS_ERR_NOMEM;

	if (!pt)
		goto out;
	err = KMS_ERR_MALFORMED;
	if (in[0] != POINT_CONVERSION_UNCOMPRESSED)
		goto out;
	ERR_set_mark();
	if (!EC_POINT_oct2point(e->group, pt, in, PLEN, ctx) ||
	    EC_POINT_is_at_infinity(e->group, pt) ||
	    EC_POINT_is_on_curve(e->group, pt, ctx) != 1) {
		/* a refused input is not an OpenSSL error of the caller's */
		ERR_pop_to_mark();
		goto out;
	}
	ERR_clear_last_mark();
	*out = pt;
	pt = NULL;
	err = KMS_OK;
out:
	EC_POINT_free(pt);
	return err;
}

static int point_store(const struct kms_eccsi *e, const EC_POINT *pt,
		       uint8_t out[PLEN], BN_CTX *ctx)
{
	size_t n = EC_POINT_point2oct(e->group, pt,
				      POINT_CONVERSION_UNCOMPRESSED, out, PLEN,
				      ctx);

	return n == PLEN ? KMS_OK : KMS_ERR_CRYPTO;
}

static int sha256(const struct kms_eccsi *e, const struct part *parts,
		  size_t n, uint8_t out[HLEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	int err = KMS_ERR_NOMEM;
	size_t i;

	if (!md)
		goto out;
	err = KMS_ERR_CRYPTO;
	if (!EVP_DigestInit_ex(md, e->sha256, NULL))
		goto out;
	for (i = 0; i < n; i++)
		if (parts[i].len &&
		    !EVP_DigestUpdate(md, parts[i].p, parts[i].len))
			goto out;
	if (!EVP_DigestFinal_ex(md, out, &len) || len != HLEN)
		goto out;
	err = KMS_OK;
out:
	EVP_MD_CTX_free(md);
	return err;
}

/* Section 4.1: HS = hash(G || KPAK || ID || PVT). */
static int hash_hs(const struct kms_eccsi *e, const uint8_t kpak[PLEN],
		   const uint8_t *id, size_t id_len, const uint8_t pvt[PLEN],
		   uint8_t hs[HLEN])
{
	const struct part parts[] = {
		{ e->g, PLEN }, { kpak, PLEN }, { id, id_len }, { pvt, PLEN },
	};

	return sha256(e, parts, 4, hs);
}

/* Section 5.2.1 step 3 / 5.2.2 step 3: HE = hash(HS || r || M). */
static int hash_he(const struct kms_eccsi *e, const uint8_t hs[HLEN],
		   const uint8_t r[SLEN], const uint8_t *msg, size_t msg_len,
		   uint8_t he[HLEN])
{
	const struct part parts[] = {
		{ hs, HLEN }, { r, SLEN }, { msg, msg_len },
	};

	return sha256(e, parts, 3, he);
}

/* A hash output as an integer reduced mod q (a public value). */
static int hash_to_bn(const struct kms_eccsi *e, const uint8_t h[HLEN],
		      BIGNUM *b, BN_CTX *ctx)
{
	if (!BN_bin2bn(h, HLEN, b) || !BN_nnmod(b, b, e->q, ctx))
		return KMS_ERR_CRYPTO;
	return KMS_OK;
}

/* Uniform in [1, q-1] from RAND_priv_bytes, by rejection. */
static int rand_scalar(const struct kms_eccsi *e, BIGNUM *b)
{
	uint8_t buf[SLEN];
	int err = KMS_ERR_CRYPTO;
	int i;

	for (i = 0; i < MAX_DRAWS; i++) {
		if (RAND_priv_bytes(buf, sizeof(buf)) != 1 ||
		    !BN_bin2bn(buf, SLEN, b))
			goto out;
		if (in_range(b, e->q)) {
			err = KMS_OK;
			goto out;
		}
	}
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	return err;
}

/* A caller's scalar when given (KMS_ERR_INVAL outside [1, q-1]), else a
 * random one. */
static int given_or_rand(const struct kms_eccsi *e, const uint8_t *in,
			 BIGNUM *b)
{
	if (in)
		return scalar_load(e, in, b, KMS_ERR_INVAL);
	return rand_scalar(e, b);
}

/* [k]G for a secret k (constant time in OpenSSL). */
static int base_mul(const struct kms_eccsi *e, EC_POINT *r, const BIGNUM *k,
		    BN_CTX *ctx)
{
	return EC_POINT_mul(e->group, r, k, NULL, NULL, ctx) ? KMS_OK :
							       KMS_ERR_CRYPTO;
}

void kms_eccsi_free(struct kms_eccsi *e)
{
	if (!e)
		return;
	EC_GROUP_free(e->group);
	BN_free(e->p);
	BN_free(e->q);
	BN_free(e->q_minus_2);
	BN_MONT_CTX_free(e->mont_q);
	EVP_MD_free(e->sha256);
	free(e);
}

int kms_eccsi_new(struct kms_eccsi **out)
{
	struct kms_eccsi *e = NULL;
	BN_CTX *ctx = NULL;
	int err = KMS_ERR_INVAL;

	if (!out)
		goto out;
	err = KMS_ERR_NOMEM;
	e = calloc(1, sizeof(*e));
	ctx = BN_CTX_new();
	if (!e || !ctx)
		goto out;
	e->p = BN_new();
	e->q = BN_new();
	e->q_minus_2 = BN_new();
	e->mont_q = BN_MONT_CTX_new();
	if (!e->p || !e->q || !e->q_minus_2 || !e->mont_q)
		goto out;
	err = KMS_ERR_CRYPTO;
	e->group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	e->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!e->group || !e->sha256 ||
	    !EC_GROUP_get_curve(e->group, e->p, NULL, NULL, ctx) ||
	    !BN_copy(e->q, EC_GROUP_get0_order(e->group)) ||
	    !BN_copy(e->q_minus_2, e->q) || !BN_sub_word(e->q_minus_2, 2) ||
	    !BN_MONT_CTX_set(e->mont_q, e->q, ctx))
		goto out;
	err = point_store(e, EC_GROUP_get0_generator(e->group), e->g, ctx);
	if (err)
		goto out;
	*out = e;
	e = NULL;
out:
	kms_eccsi_free(e);
	BN_CTX_free(ctx);
	return err;
}

int kms_eccsi_kpak(const struct kms_eccsi *e, const uint8_t ksak[SLEN],
		   uint8_t kpak[PLEN])
{
	BN_CTX *ctx = NULL;
	BIGNUM *k = NULL;
	EC_POINT *pt = NULL;
	uint8_t buf[PLEN];
	int err = KMS_ERR_INVAL;

	if (!e || !ksak || !kpak)
		goto out;
	err = KMS_ERR_NOMEM;
	ctx = BN_CTX_secure_new();
	k = secret_bn();
	pt = EC_POINT_new(e->group);
	if (!ctx || !k || !pt)
		goto out;
	err = scalar_load(e, ksak, k, KMS_ERR_INVAL);
	if (err)
		goto out;
	err = base_mul(e, pt, k, ctx);
	if (err)
		goto out;
	err = point_store(e, pt, buf, ctx);
	if (err)
		goto out;
	memcpy(kpak, buf, PLEN);
out:
	EC_POINT_clear_free(pt);
	BN_clear_free(k);
	BN_CTX_free(ctx);
	return err;
}

int kms_eccsi_issue(const struct kms_eccsi *e, const uint8_t ksak[SLEN],
		    const uint8_t kpak[PLEN], const uint8_t *id, size_t id_len,
		    const uint8_t *v, uint8_t ssk[SLEN], uint8_t pvt[PLEN])
{
	BN_CTX *ctx = NULL;
	BIGNUM *k = NULL, *vb = NULL, *sk = NULL, *hs = NULL;
	EC_POINT *kp = NULL, *pt = NULL;
	uint8_t pvt_buf[PLEN], ssk_buf[SLEN], hs_buf[HLEN];
	int err = KMS_ERR_INVAL;
	int draws, cmp;

	if (!e || !ksak || !kpak || !id_ok(id, id_len) || !ssk || !pvt)
		goto out;
	err = KMS_ERR_NOMEM;
	ctx = BN_CTX_secure_new();
	k = secret_bn();
	vb = secret_bn();
	sk = secret_bn();
	hs = BN_new();
	pt = EC_POINT_new(e->group);
	if (!ctx || !k || !vb || !sk || !hs || !pt)
		goto out;
	err = scalar_load(e, ksak, k, KMS_ERR_INVAL);
	if (err)
		goto out;
	err = point_load(e, kpak, &kp, ctx);
	if (err)
		goto out;
	/* An SSK issued under a KPAK that is not [KSAK]G never validates. */
	err = base_mul(e, pt, k, ctx);
	if (err)
		goto out;
	cmp = EC_POINT_cmp(e->group, pt, kp, ctx);
	err = cmp < 0 ? KMS_ERR_CRYPTO : cmp ? KMS_ERR_INVAL : KMS_OK;
	if (err)
		goto out;

	for (draws = 0;; draws++) {
		err = KMS_ERR_CRYPTO;
		if (draws == MAX_DRAWS)
			goto out;
		/* 5.1.1 step 1: v, a random non-zero element of F_q */
		err = given_or_rand(e, v, vb);
		if (err)
			goto out;
		/* step 2: PVT = [v]G */
		err = base_mul(e, pt, vb, ctx);
		if (err)
			goto out;
		err = point_store(e, pt, pvt_buf, ctx);
		if (err)
			goto out;
		/* step 3: HS = hash(G || KPAK || ID || PVT) */
		err = hash_hs(e, kpak, id, id_len, pvt_buf, hs_buf);
		if (err)
			goto out;
		err = hash_to_bn(e, hs_buf, hs, ctx);
		if (err)
			goto out;
		/* step 4: SSK = (KSAK + HS * v) mod q */
		err = KMS_ERR_CRYPTO;
		if (!BN_mod_mul(sk, hs, vb, e->q, ctx) ||
		    !BN_mod_add(sk, sk, k, e->q, ctx))
			goto out;
		/* step 5: a zero SSK or HS (mod q) means a fresh v */
		if (!BN_is_zero(hs) && !BN_is_zero(sk))
			break;
		err = KMS_ERR_INVAL;
		if (v)
			goto out;
	}
	err = scalar_store(sk, ssk_buf);
	if (err)
		goto out;
	memcpy(ssk, ssk_buf, SLEN);
	memcpy(pvt, pvt_buf, PLEN);
out:
	OPENSSL_cleanse(ssk_buf, sizeof(ssk_buf));
	EC_POINT_free(kp);
	EC_POINT_clear_free(pt);
	BN_clear_free(k);
	BN_clear_free(vb);
	BN_clear_free(sk);
	BN_free(hs);
	BN_CTX_free(ctx);
	return err;
}

int kms_eccsi_validate(const struct kms_eccsi *e, const uint8_t kpak[PLEN],
		       const uint8_t *id, size_t id_len,
		       const uint8_t ssk[SLEN], const uint8_t pvt[PLEN])
{
	BN_CTX *ctx = NULL;
	BIGNUM *sk = NULL, *hs = NULL;
	EC_POINT *kp = NULL, *pv = NULL, *lhs = NULL, *rhs = NULL;
	uint8_t hs_buf[HLEN];
	int err = KMS_ERR_INVAL;
	int cmp;

	if (!e || !kpak || !id_ok(id, id_len) || !ssk || !pvt)
		goto out;
	err = KMS_ERR_NOMEM;
	ctx = BN_CTX_secure_new();
	sk = secret_bn();
	hs = BN_new();
	lhs = EC_POINT_new(e->group);
	rhs = EC_POINT_new(e->group);
	if (!ctx || !sk || !hs || !lhs || !rhs)
		goto out;
	err = point_load(e, kpak, &kp, ctx);
	if (err)
		goto out;
	/* 5.1.2 step 1: PVT must be a point of the curve */
	err = point_load(e, pvt, &pv, ctx);
	if (err)
		goto out;
	err = scalar_load(e, ssk, sk, KMS_ERR_AUTH);
	if (err)
		goto out;
	/* step 2: HS = hash(G || KPAK || ID || PVT) */
	err = hash_hs(e, kpak, id, id_len, pvt, hs_buf);
	if (err)
		goto out;
	err = hash_to_bn(e, hs_buf, hs, ctx);
	if (err)
		goto out;
	err = KMS_ERR_AUTH; /* the KMS must not issue under a zero HS */
	if (BN_is_zero(hs))
		goto out;
	/* step 3: [SSK]G = [HS]PVT + KPAK */
	err = base_mul(e, lhs, sk, ctx);
	if (err)
		goto out;
	err = KMS_ERR_CRYPTO;
	if (!EC_POINT_mul(e->group, rhs, NULL, pv, hs, ctx) ||
	    !EC_POINT_add(e->group, rhs, rhs, kp, ctx))
		goto out;
	cmp = EC_POINT_cmp(e->group, lhs, rhs, ctx);
	err = cmp < 0 ? KMS_ERR_CRYPTO : cmp ? KMS_ERR_AUTH : KMS_OK;
out:
	EC_POINT_free(kp);
	EC_POINT_free(pv);
	EC_POINT_clear_free(lhs);
	EC_POINT_free(rhs);
	BN_clear_free(sk);
	BN_free(hs);
	BN_CTX_free(ctx);
	return err;
}

int kms_eccsi_sign(const struct kms_eccsi *e, const uint8_t kpak[PLEN],
		   const uint8_t *id, size_t id_len, const uint8_t ssk[SLEN],
		   const uint8_t pvt[PLEN], const uint8_t *msg, size_t msg_len,
		   const uint8_t *j, uint8_t sig[KMS_ECCSI_SIG_LEN])
{
	BN_CTX *ctx = NULL;
	BIGNUM *sk = NULL, *jb = NULL, *t = NULL, *ti = NULL, *s = NULL;
	BIGNUM *r = NULL, *he = NULL;
	EC_POINT *kp = NULL, *pv = NULL, *jp = NULL;
	uint8_t hs_buf[HLEN], he_buf[HLEN], sig_buf[KMS_ECCSI_SIG_LEN];
	int err = KMS_ERR_INVAL;
	int draws;

	if (!e || !kpak || !id_ok(id, id_len) || !ssk || !pvt ||
	    (!msg && msg_len) || !sig)
		goto out;
	err = KMS_ERR_NOMEM;
	ctx = BN_CTX_secure_new();
	sk = secret_bn();
	jb = secret_bn();
	t = secret_bn();
	ti = secret_bn();
	s = secret_bn();
	r = BN_new();
	he = BN_new();
	jp = EC_POINT_new(e->group);
	if (!ctx || !sk || !jb || !t || !ti || !s || !r || !he || !jp)
		goto out;
	err = point_load(e, kpak, &kp, ctx);
	if (err)
		goto out;
	err = point_load(e, pvt, &pv, ctx);
	if (err)
		goto out;
	err = scalar_load(e, ssk, sk, KMS_ERR_INVAL);
	if (err)
		goto out;
	err = hash_hs(e, kpak, id, id_len, pvt, hs_buf);
	if (err)
		goto out;

	for (draws = 0;; draws++) {
		err = KMS_ERR_CRYPTO;
		if (draws == MAX_DRAWS)
			goto out;
		/* 5.2.1 step 1: j, a random non-zero element of F_q */
		err = given_or_rand(e, j, jb);
		if (err)
			goto out;
		/* step 2: J = [j]G, r = Jx as an N-octet integer (not mod q) */
		err = base_mul(e, jp, jb, ctx);
		if (err)
			goto out;
		err = KMS_ERR_CRYPTO;
		if (!EC_POINT_get_affine_coordinates(e->group, jp, r, NULL,
						     ctx))
			goto out;
		err = scalar_store(r, sig_buf);
		if (err)
			goto out;
		/* step 3: HE = hash(HS || r || M) */
		err = hash_he(e, hs_buf, sig_buf, msg, msg_len, he_buf);
		if (err)
			goto out;
		err = KMS_ERR_CRYPTO;
		if (!BN_bin2bn(he_buf, HLEN, he))
			goto out;
		/* step 4: HE + r * SSK must be non-zero mod q */
		if (!BN_mod_mul(t, r, sk, e->q, ctx) ||
		    !BN_mod_add(t, t, he, e->q, ctx))
			goto out;
		/* a zero Jx would be refused by every verifier (5.2.2
		 * step 6): it also takes a fresh j */
		if (!BN_is_zero(t) && !BN_is_zero(r))
			break;
		err = KMS_ERR_INVAL;
		if (j)
			goto out;
	}
	/* step 5: s' = ((HE + r * SSK)^-1 * j) mod q */
	err = KMS_ERR_CRYPTO;
	if (!BN_mod_exp_mont_consttime(ti, t, e->q_minus_2, e->q, ctx,
				       e->mont_q) ||
	    !BN_mod_mul(s, ti, jb, e->q, ctx))
		goto out;
	/* step 6: s = q - s' if s' does not fit in N octets; q < 2^256 on
	 * P-256, so s = s' always (as in Appendix A) */
	if (BN_num_bytes(s) > SLEN && !BN_sub(s, e->q, s))
		goto out;
	err = scalar_store(s, sig_buf + SLEN);
	if (err)
		goto out;
	/* step 7: Signature = r || s || PVT */
	memcpy(sig_buf + 2 * SLEN, pvt, PLEN);
	memcpy(sig, sig_buf, sizeof(sig_buf));
out:
	EC_POINT_free(kp);
	EC_POINT_free(pv);
	EC_POINT_clear_free(jp);
	BN_clear_free(sk);
	BN_clear_free(jb);
	BN_clear_free(t);
	BN_clear_free(ti);
	BN_clear_free(s);
	BN_free(r);
	BN_free(he);
	BN_CTX_free(ctx);
	return err;
}

int kms_eccsi_verify(const struct kms_eccsi *e, const uint8_t kpak[PLEN],
		     const uint8_t *id, size_t id_len, const uint8_t *msg,
		     size_t msg_len, const uint8_t sig[KMS_ECCSI_SIG_LEN])
{
	const uint8_t *pvt = sig + 2 * SLEN;
	BN_CTX *ctx = NULL;
	BIGNUM *r = NULL, *s = NULL, *hs = NULL, *he = NULL, *jx = NULL;
	BIGNUM *u1 = NULL, *u2 = NULL;
	EC_POINT *kp = NULL, *pv = NULL, *y = NULL, *jp = NULL;
	uint8_t hs_buf[HLEN], he_buf[HLEN];
	int err = KMS_ERR_INVAL;

	if (!e || !kpak || !id_ok(id, id_len) || (!msg && msg_len) || !sig)
		goto out;
	err = KMS_ERR_NOMEM;
	ctx = BN_CTX_new();
	r = BN_new();
	s = BN_new();
	hs = BN_new();
	he = BN_new();
	jx = BN_new();
	u1 = BN_new();
	u2 = BN_new();
	y = EC_POINT_new(e->group);
	jp = EC_POINT_new(e->group);
	if (!ctx || !r || !s || !hs || !he || !jx || !u1 || !u2 || !y || !jp)
		goto out;
	err = point_load(e, kpak, &kp, ctx);
	if (err)
		goto out;
	/* r is an x-coordinate: [1, p-1]; s: [1, q-1] */
	err = KMS_ERR_CRYPTO;
	if (!BN_bin2bn(sig, SLEN, r) || !BN_bin2bn(sig + SLEN, SLEN, s))
		goto out;
	err = KMS_ERR_MALFORMED;
	if (!in_range(r, e->p) || !in_range(s, e->q))
		goto out;
	/* 5.2.2 step 1: PVT must be a point of the curve */
	err = point_load(e, pvt, &pv, ctx);
	if (err)
		goto out;
	/* steps 2 and 3: HS = hash(G || KPAK || ID || PVT),
	 * HE = hash(HS || r || M) */
	err = hash_hs(e, kpak, id, id_len, pvt, hs_buf);
	if (err)
		goto out;
	err = hash_he(e, hs_buf, sig, msg, msg_len, he_buf);
	if (err)
		goto out;
	err = hash_to_bn(e, hs_buf, hs, ctx);
	if (err)
		goto out;
	err = hash_to_bn(e, he_buf, he, ctx);
	if (err)
		goto out;
	/* step 4: Y = [HS]PVT + KPAK */
	err = KMS_ERR_CRYPTO;
	if (!EC_POINT_mul(e->group, y, NULL, pv, hs, ctx) ||
	    !EC_POINT_add(e->group, y, y, kp, ctx))
		goto out;
	/* step 5: J = [s]([HE]G + [r]Y), computed as [s*HE]G + [s*r]Y
	 * (the same point: G and Y lie in the group of order q) */
	if (!BN_mod_mul(u1, he, s, e->q, ctx) ||
	    !BN_mod_mul(u2, r, s, e->q, ctx) ||
	    !EC_POINT_mul(e->group, jp, u1, y, u2, ctx))
		goto out;
	/* step 6: accept iff Jx = r mod p and Jx != 0 (r is in [1, p-1]) */
	err = KMS_ERR_AUTH;
	if (EC_POINT_is_at_infinity(e->group, jp))
		goto out;
	err = KMS_ERR_CRYPTO;
	if (!EC_POINT_get_affine_coordinates(e->group, jp, jx, NULL, ctx))
		goto out;
	err = BN_cmp(jx, r) ? KMS_ERR_AUTH : KMS_OK;
out:
	EC_POINT_free(kp);
	EC_POINT_free(pv);
	EC_POINT_free(y);
	EC_POINT_free(jp);
	BN_free(r);
	BN_free(s);
	BN_free(hs);
	BN_free(he);
	BN_free(jx);
	BN_free(u1);
	BN_free(u2);
	BN_CTX_free(ctx);
	return err;
}
