// SPDX-License-Identifier: Apache-2.0
/*
 * SAKKE (RFC 6508) with parameter set 1 of RFC 6509, on OpenSSL 3 BIGNUM:
 * set-up, hashing, the pairing, g^r and the API but for the prepared
 * receiver key. The E(F_p) point arithmetic, P's fixed-base comb tables
 * and the prepared receiver key are in sakke_ec.c; what the two files
 * share is in sakke_priv.h.
 *
 * Everything is written here on BN_mod_mul_montgomery() (OpenSSL's
 * generic-curve EC code costs about twice as much on this 1024-bit curve):
 *
 *  - the pairing of RFC 6508 section 3.2: a Miller loop over q - 1 (in
 *    non-adjacent form) on the first point, in Jacobian coordinates (no
 *    inversion in the loop), its lines evaluated at the distortion image
 *    (-Qx, iQy) of the second point, F_p^2 = F_p[i]/(i^2 + 1) values in
 *    Montgomery form: about 17 multiplications in F_p per bit.
 *    Factors in F_p are dropped freely (they die in PF_p), so the vertical
 *    lines and the denominators of the slopes never appear. The final
 *    exponent is c = (p + 1)/q = 4 in PF_p; the class of a + ib is
 *    returned as b/a (RFC 6508 section 2.1).
 *  - g^r in PF_p for the sender, as a Lucas ladder on a norm-1
 *    representative of g: one multiplication and one squaring in F_p per
 *    bit of r, the same operations whatever the bit.
 *  - HashToIntegerRange (RFC 6508 section 5.1) with SHA-256.
 *
 * Every call builds its own BN_CTX and frees it on exit: OpenSSL clears
 * the pooled BIGNUMs when the context is freed, which is what wipes the
 * secret intermediates (r, g^r, the scalar multiples, the Miller
 * accumulator on a secret RSK).
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "kms_err.h"
#include "kms_sakke.h"
#include "sakke_priv.h"

#define HASH_LEN 32
/* HashToIntegerRange blocks: ceil(lg(q) / 256) for q, ceil(128 / 256) */
#define Q_BLOCKS 4
#define N_BLOCKS 1

/* RFC 6509 Appendix A, parameter set 1 (iana-sakke-params-value 1). */
static const char P_HEX[] =
	"997ABB1F0A563FDA65C61198DAD0657A416C0CE19CB48261BE9AE358B3E01A2E"
	"F40AAB27E2FC0F1B228730D531A59CB0E791B39FF7C88A19356D27F4A666A6D0"
	"E26C6487326B4CD4512AC5CD65681CE1B6AFF4A831852A82A7CF3C521C3C09AA"
	"9F94D6AF56971F1FFCE3E82389857DB080C5DF10AC7ACE87666D807AFEA85FEB";
static const char Q_HEX[] =
	"265EAEC7C2958FF69971846636B4195E905B0338672D20986FA6B8D62CF8068B"
	"BD02AAC9F8BF03C6C8A1CC354C69672C39E46CE7FDF222864D5B49FD2999A9B4"
	"389B1921CC9AD335144AB173595A07386DABFD2A0C614AA0A9F3CF14870F026A"
	"A7E535ABD5A5C7C7FF38FA08E2615F6C203177C42B1EB3A1D99B601EBFAA17FB";
static const char PX_HEX[] =
	"53FC09EE332C29AD0A7990053ED9B52A2B1A2FD60AEC69C698B2F204B6FF7CBF"
	"B5EDB6C0F6CE2308AB10DB9030B09E1043D5F22CDB9DFA55718BD9E7406CE890"
	"9760AF765DD5BCCB337C86548B72F2E1A702C3397A60DE74A7C1514DBA66910D"
	"D5CFB4CC80728D87EE9163A5B63F73EC80EC46C4967E0979880DC8ABEAE63895";
static const char PY_HEX[] =
	"0A8249063F6009F1F9F1F0533634A135D3E82016029906963D778D821E141178"
	"F5EA69F4654EC2B9E7F7F5E5F0DE55F66B598CCF9A140B2E416CFF0CA9E032B9"
	"70DAE117AD547C6CCAD696B5B7652FE0AC6F1E80164AA989492D979FC5A4D5F2"
	"13515AD7E9CB99A980BDAD5AD5BB4636ADB9B5706A67DCDE75573FD71BEF16D7";
static const char G_HEX[] =
	"66FC2A432B6EA392148F15867D623068C6A87BD1FB94C41E27FABE658E015A87"
	"371E94744C96FEDA449AE9563F8BC446CBFDA85D5D00EF577072DA8F541721BE"
	"EE0FAED1828EAB90B99DFB0138C7843355DF0460B4A9FD74B4F1A32BCAFA1FFA"
	"D682C033A7942BCCE3720F20B9B7B0403C8CAE87B7A0042ACDE0FAB36461EA46";

/* ------------------------------------------------------------- points */

int sakke_id_ok(const uint8_t *id, size_t id_len)
{
	return id && id_len > 0 && id_len <= KMS_SAKKE_ID_MAX;
}

/*
 * 0x04 || x || y -> x, y: coordinates < p, y^2 = x^3 - 3x, y != 0 (the
 * points with y = 0 have order 2 and the point at infinity has no such
 * encoding at all).
 */
int sakke_point_decode(const struct kms_sakke *s,
		       const uint8_t in[KMS_SAKKE_POINT_LEN], BIGNUM *x,
		       BIGNUM *y, BN_CTX *c)
{
	BIGNUM *t0, *t1;
	int ret = KMS_ERR_CRYPTO;

	BN_CTX_start(c);
	t0 = BN_CTX_get(c);
	t1 = BN_CTX_get(c);
	if (!t1)
		goto out;
	if (in[0] != 0x04) {
		ret = KMS_ERR_MALFORMED;
		goto out;
	}
	if (!BN_bin2bn(in + 1, KMS_SAKKE_FP_LEN, x) ||
	    !BN_bin2bn(in + 1 + KMS_SAKKE_FP_LEN, KMS_SAKKE_FP_LEN, y))
		goto out;
	if (BN_cmp(x, s->p) >= 0 || BN_cmp(y, s->p) >= 0 || BN_is_zero(y)) {
		ret = KMS_ERR_MALFORMED;
		goto out;
	}
	/* x^3 - 3x = (x^2 - 3) x */
	if (!BN_mod_sqr(t0, x, s->p, c) || !BN_sub_word(t0, 3) ||
	    !BN_mod_mul(t0, t0, x, s->p, c) || !BN_mod_sqr(t1, y, s->p, c))
		goto out;
	ret = BN_cmp(t0, t1) ? KMS_ERR_MALFORMED : KMS_OK;
out:
	BN_CTX_end(c);
	return ret;
}


/* in as a point in Montgomery form (x, y) */
int sakke_point_decode_m(const struct kms_sakke *s,
			 const uint8_t in[KMS_SAKKE_POINT_LEN], BIGNUM *x,
			 BIGNUM *y, BN_CTX *c)
{
	int ret = sakke_point_decode(s, in, x, y, c);

	if (!ret && (!BN_to_montgomery(x, x, s->mont, c) ||
		     !BN_to_montgomery(y, y, s->mont, c)))
		ret = KMS_ERR_CRYPTO;
	return ret;
}

/* ------------------------------------------------------------ hashing */

/*
 * HashToIntegerRange (RFC 6508 section 5.1), SHA-256, up to the
 * concatenation v' = v_1 || ... || v_l (l = @blocks); the caller reduces.
 * The input is s1 || s2.
 */
static int h2ir(const uint8_t *s1, size_t l1, const uint8_t *s2, size_t l2,
		int blocks, uint8_t *v)
{
	EVP_MD_CTX *md;
	uint8_t a[HASH_LEN], hv[2 * HASH_LEN];
	int i, ret = KMS_ERR_CRYPTO;

	md = EVP_MD_CTX_new();
	if (!md)
		return KMS_ERR_NOMEM;
	if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(md, s1, l1) ||
	    (l2 && !EVP_DigestUpdate(md, s2, l2)) ||
	    !EVP_DigestFinal_ex(md, a, NULL))
		goto out;
	/* hv = h_i || A; h_0 is all zero */
	memset(hv, 0, HASH_LEN);
	memcpy(hv + HASH_LEN, a, HASH_LEN);
	for (i = 0; i < blocks; i++) {
		if (!EVP_Digest(hv, HASH_LEN, hv, NULL, EVP_sha256(), NULL) ||
		    !EVP_Digest(hv, sizeof(hv), v + i * HASH_LEN, NULL,
				EVP_sha256(), NULL))
			goto out;
	}
	ret = KMS_OK;
out:
	OPENSSL_cleanse(a, sizeof(a));
	OPENSSL_cleanse(hv, sizeof(hv));
	EVP_MD_CTX_free(md);
	return ret;
}

/* r = HashToIntegerRange(SSV || b, q) */
int sakke_derive_r(const struct kms_sakke *s,
		   const uint8_t ssv[KMS_SAKKE_SSV_LEN], const uint8_t *id,
		   size_t id_len, BIGNUM *r, BN_CTX *c)
{
	uint8_t v[Q_BLOCKS * HASH_LEN];
	int ret;

	BN_set_flags(r, BN_FLG_CONSTTIME);
	ret = h2ir(ssv, KMS_SAKKE_SSV_LEN, id, id_len, Q_BLOCKS, v);
	if (ret)
		goto out;
	if (!BN_bin2bn(v, sizeof(v), r) || !BN_nnmod(r, r, s->q, c))
		ret = KMS_ERR_CRYPTO;
out:
	OPENSSL_cleanse(v, sizeof(v));
	return ret;
}

/* mask = HashToIntegerRange(w, 2^n): the last n bits of v_1 */
int sakke_derive_mask(const uint8_t w[KMS_SAKKE_GT_LEN],
		      uint8_t mask[KMS_SAKKE_SSV_LEN])
{
	uint8_t v[N_BLOCKS * HASH_LEN];
	int ret;

	ret = h2ir(w, KMS_SAKKE_GT_LEN, NULL, 0, N_BLOCKS, v);
	if (!ret)
		memcpy(mask, v + sizeof(v) - KMS_SAKKE_SSV_LEN,
		       KMS_SAKKE_SSV_LEN);
	OPENSSL_cleanse(v, sizeof(v));
	return ret;
}

/* ------------------------------------------------------------ pairing */

/* Miller loop state: C = (x, y, z) Jacobian, f = va + i vb; Montgomery. */
struct miller {
	BIGNUM *x, *y, *z, *va, *vb, *lr, *li, *e[4], *t[4], *u;
};

/*
 * f = f^2 l_(C,C)(Q), C = [2]C. With delta = Z^2, gamma = Y^2,
 * alpha = 3(X - delta)(X + delta), the tangent at C times 2YZ^3 is, at
 * (-Qx, iQy):  alpha (Qx delta + X) - 2 gamma + i Z3 delta Qy, where
 * Z3 = 2YZ is the doubled point's Z (doubling for a = -3).
 */
static int dbl_step(struct miller *m, const BIGNUM *qx, const BIGNUM *qy,
		    const struct kms_sakke *s, BN_CTX *c)
{
	BIGNUM **e = m->e, **t = m->t, *u = m->u;

	return fp2_sqr(m->va, m->vb, t, s, c) &&
	       fsqr(e[0], m->z, s, c) &&                /* delta */
	       fsqr(e[1], m->y, s, c) &&                /* gamma */
	       fmul(e[2], m->x, e[1], s, c) &&          /* beta */
	       fsub(t[0], m->x, e[0], u, s) && fadd(t[1], m->x, e[0], s) &&
	       fmul(e[3], t[0], t[1], s, c) &&
	       fadd(t[0], e[3], e[3], s) &&
	       fadd(e[3], t[0], e[3], s) &&             /* alpha */
	       fmul(t[0], qx, e[0], s, c) && fadd(t[0], t[0], m->x, s) &&
	       fmul(m->lr, e[3], t[0], s, c) &&
	       fadd(t[1], e[1], e[1], s) &&
	       fsub(m->lr, m->lr, t[1], u, s) &&
	       fmul(t[0], m->y, m->z, s, c) &&
	       fadd(m->z, t[0], t[0], s) &&             /* Z3 */
	       fmul(m->li, m->z, e[0], s, c) &&
	       fmul(m->li, m->li, qy, s, c) &&
	       fadd(e[2], e[2], e[2], s) &&
	       fadd(e[2], e[2], e[2], s) &&             /* 4 beta */
	       fsqr(m->x, e[3], s, c) && fsub(m->x, m->x, e[2], u, s) &&
	       fsub(m->x, m->x, e[2], u, s) &&          /* X3 */
	       fsub(t[0], e[2], m->x, u, s) && fmul(m->y, e[3], t[0], s, c) &&
	       fsqr(t[1], e[1], s, c) &&
	       fadd(t[1], t[1], t[1], s) && fadd(t[1], t[1], t[1], s) &&
	       fadd(t[1], t[1], t[1], s) &&
	       fsub(m->y, m->y, t[1], u, s) &&          /* Y3 */
	       fp2_mul(m->va, m->vb, m->lr, m->li, t, s, c);
}

/*
 * f = f l_(C,R)(Q), C = C + R, R = (rx, ry) affine (mixed addition). With
 * H = Rx Z^2 - X, rr = 2(Ry Z^3 - Y), Z3 = 2ZH, the line through C and R
 * times Z3 is, at (-Qx, iQy):  rr (Qx + Rx) - Ry Z3 + i Qy Z3.
 */
static int add_step(struct miller *m, const BIGNUM *rx, const BIGNUM *ry,
		    const BIGNUM *qxr, const BIGNUM *qy,
		    const struct kms_sakke *s, BN_CTX *c)
{
	BIGNUM **e = m->e, **t = m->t, *u = m->u;

	return fsqr(t[0], m->z, s, c) &&                /* Z1Z1 */
	       fmul(t[1], rx, t[0], s, c) &&            /* U2 */
	       fmul(t[2], ry, m->z, s, c) &&
	       fmul(t[2], t[2], t[0], s, c) &&          /* S2 */
	       fsub(e[0], t[1], m->x, u, s) &&          /* H */
	       fsub(t[2], t[2], m->y, u, s) &&
	       fadd(e[1], t[2], t[2], s) &&             /* rr */
	       fsqr(t[3], e[0], s, c) &&
	       fadd(t[3], t[3], t[3], s) &&
	       fadd(t[3], t[3], t[3], s) &&             /* I */
	       fmul(e[2], e[0], t[3], s, c) &&          /* J */
	       fmul(e[3], m->x, t[3], s, c) &&          /* V */
	       fmul(m->z, m->z, e[0], s, c) &&
	       fadd(m->z, m->z, m->z, s) &&             /* Z3 */
	       fsqr(m->x, e[1], s, c) && fsub(m->x, m->x, e[2], u, s) &&
	       fsub(m->x, m->x, e[3], u, s) &&
	       fsub(m->x, m->x, e[3], u, s) &&          /* X3 */
	       fsub(t[0], e[3], m->x, u, s) && fmul(t[0], e[1], t[0], s, c) &&
	       fmul(t[1], m->y, e[2], s, c) &&
	       fadd(t[1], t[1], t[1], s) &&
	       fsub(m->y, t[0], t[1], u, s) &&          /* Y3 */
	       fmul(m->lr, e[1], qxr, s, c) &&
	       fmul(t[0], ry, m->z, s, c) &&
	       fsub(m->lr, m->lr, t[0], u, s) &&
	       fmul(m->li, qy, m->z, s, c) &&
	       fp2_mul(m->va, m->vb, m->lr, m->li, t, s, c);
}

/* w = f^c, c = (p + 1)/q = 4, as the class b/a of a + ib; f = va + i vb */
int sakke_miller_final(const struct kms_sakke *s, BIGNUM *va, BIGNUM *vb,
		       BIGNUM *t[4], BIGNUM *w, BN_CTX *c)
{
	if (!fp2_sqr(va, vb, t, s, c) || !fp2_sqr(va, vb, t, s, c) ||
	    !BN_from_montgomery(t[0], va, s->mont, c) ||
	    !BN_from_montgomery(t[1], vb, s->mont, c))
		return KMS_ERR_CRYPTO;
	if (BN_is_zero(t[0]))
		return KMS_ERR_CRYPTO;  /* [i] has order 2: no pairing value */
	BN_set_flags(t[0], BN_FLG_CONSTTIME);
	if (!BN_mod_inverse(t[2], t[0], s->p, c) ||
	    !BN_mod_mul(w, t[1], t[2], s->p, c))
		return KMS_ERR_CRYPTO;
	return KMS_OK;
}

/*
 * < R, Q > (RFC 6508 section 3.2) for affine R, Q given as plain integers.
 * The loop walks q - 1 in non-adjacent form (a step by -R multiplies f by
 * the line through C and -R; the vertical line of R it also implies is in
 * F_p and dies in PF_p, so the value is the RFC's). It leaves
 * C = [q-1]R; R has order q exactly when that is -R, which is checked
 * before anything is computed from f (KMS_ERR_MALFORMED otherwise).
 * @w: the F_p representative b/a of the result a + ib.
 */
static int pairing(const struct kms_sakke *s, const BIGNUM *rx0,
		   const BIGNUM *ry0, const BIGNUM *qx0, const BIGNUM *qy0,
		   BIGNUM *w, BN_CTX *c)
{
	BIGNUM *rx, *ry, *ryn, *qx, *qy, *qxr, **t;
	struct miller m;
	int i, ret = KMS_ERR_CRYPTO;

	BN_CTX_start(c);
	rx = BN_CTX_get(c);
	ry = BN_CTX_get(c);
	ryn = BN_CTX_get(c);
	qx = BN_CTX_get(c);
	qy = BN_CTX_get(c);
	qxr = BN_CTX_get(c);
	m.x = BN_CTX_get(c);
	m.y = BN_CTX_get(c);
	m.z = BN_CTX_get(c);
	m.va = BN_CTX_get(c);
	m.vb = BN_CTX_get(c);
	m.lr = BN_CTX_get(c);
	m.li = BN_CTX_get(c);
	m.u = BN_CTX_get(c);
	for (i = 0; i < 4; i++) {
		m.e[i] = BN_CTX_get(c);
		m.t[i] = BN_CTX_get(c);
	}
	t = m.t;
	if (!t[3])
		goto out;
	if (!BN_to_montgomery(rx, rx0, s->mont, c) ||
	    !BN_to_montgomery(ry, ry0, s->mont, c) ||
	    !BN_to_montgomery(qx, qx0, s->mont, c) ||
	    !BN_to_montgomery(qy, qy0, s->mont, c) ||
	    !BN_usub(ryn, s->p, ry) ||
	    !fadd(qxr, qx, rx, s) || !BN_copy(m.x, rx) || !BN_copy(m.y, ry) ||
	    !BN_to_montgomery(m.z, BN_value_one(), s->mont, c) ||
	    !BN_copy(m.va, m.z) || !BN_set_word(m.vb, 0))
		goto out;

	for (i = s->naf_len - 2; i >= 0; i--) {
		if (!dbl_step(&m, qx, qy, s, c))
			goto out;
		if (s->naf[i] &&
		    !add_step(&m, rx, s->naf[i] > 0 ? ry : ryn, qxr, qy, s, c))
			goto out;
	}

	/* [q-1]R == -R: X = Rx Z^2 and Y + Ry Z^3 = 0, Z != 0 */
	if (!fsqr(t[0], m.z, s, c) || !fmul(t[1], rx, t[0], s, c) ||
	    !fmul(t[0], t[0], m.z, s, c) || !fmul(t[2], ry, t[0], s, c) ||
	    !fadd(t[2], t[2], m.y, s))
		goto out;
	if (BN_is_zero(m.z) || BN_cmp(t[1], m.x) || !BN_is_zero(t[2])) {
		ret = KMS_ERR_MALFORMED;
		goto out;
	}

	ret = sakke_miller_final(s, m.va, m.vb, t, w, c);
out:
	BN_CTX_end(c);
	return ret;
}

/*
 * g^r in PF_p. m = (1 + ig)/sqrt(1 + g^2) has norm 1 and is in the class
 * g, so g^r is the class of m^r = V_r/2 + i (V_1 V_r - 2 V_(r+1))/(4 Im m)
 * with V_k = m^k + m^-k (V_(2k) = V_k^2 - 2, V_(2k+1) = V_k V_(k+1) - V_1).
 * Its representative: (V_1 V_r - 2 V_(r+1)) sqrt(1 + g^2) / (2g V_r).
 */
static int g_pow(const struct kms_sakke *s, const BIGNUM *r, BIGNUM *w,
		 BN_CTX *c)
{
	BIGNUM *a, *b, *t0, *t1, *u;
	BN_ULONG bit;
	int i, ret = KMS_ERR_CRYPTO;

	BN_CTX_start(c);
	a = BN_CTX_get(c);
	b = BN_CTX_get(c);
	t0 = BN_CTX_get(c);
	t1 = BN_CTX_get(c);
	u = BN_CTX_get(c);
	if (!u || !sakke_bn_reserve(a) || !sakke_bn_reserve(b) ||
	    !BN_copy(a, s->two_m) || !BN_copy(b, s->lv1_m))
		goto out;
	/* (a, b) = (V_k, V_(k+1)), k the bits of r seen so far */
	for (i = BN_num_bits(s->q) - 1; i >= 0; i--) {
		bit = (BN_ULONG)BN_is_bit_set(r, i);
		BN_consttime_swap(bit, a, b, FP_WORDS);
		if (!fmul(t0, a, b, s, c) || !fsub(b, t0, s->lv1_m, u, s) ||
		    !fsqr(t1, a, s, c) || !fsub(a, t1, s->two_m, u, s))
			goto out;
		BN_consttime_swap(bit, a, b, FP_WORDS);
	}
	if (!fmul(t0, s->lv1_m, a, s, c) || !fsub(t0, t0, b, u, s) ||
	    !fsub(t0, t0, b, u, s) || !fmul(t0, t0, s->lc_m, s, c) ||
	    !BN_from_montgomery(t0, t0, s->mont, c) ||
	    !BN_from_montgomery(t1, a, s->mont, c))
		goto out;
	if (BN_is_zero(t1))
		goto out;       /* V_r = 0: m^r = +-i, impossible for r != 0 */
	BN_set_flags(t1, BN_FLG_CONSTTIME);
	if (!BN_mod_inverse(t1, t1, s->p, c) ||
	    !BN_mod_mul(w, t0, t1, s->p, c))
		goto out;
	ret = KMS_OK;
out:
	BN_CTX_end(c);
	return ret;
}


/* ------------------------------------------------------------- set-up */

void kms_sakke_free(struct kms_sakke *s)
{
	int i;

	if (!s)
		return;
	BN_free(s->p);
	BN_free(s->q);
	BN_MONT_CTX_free(s->mont);
	BN_free(s->one_m);
	BN_free(s->two_m);
	BN_free(s->lv1_m);
	BN_free(s->lc_m);
	for (i = 0; i < NCH * 2 * TBL; i++)
		BN_free(s->ptab[i / (2 * TBL)][i % (2 * TBL)]);
	OPENSSL_free(s);
}

/* Lucas constants for g_pow(): V_1 = 2/m0 and m0/(2g), m0^2 = 1 + g^2. */
static int lucas_setup(struct kms_sakke *s, const BIGNUM *g, BN_CTX *c)
{
	BIGNUM *n, *m0, *e, *t;
	int ret = KMS_ERR_CRYPTO;

	BN_CTX_start(c);
	n = BN_CTX_get(c);
	m0 = BN_CTX_get(c);
	e = BN_CTX_get(c);
	t = BN_CTX_get(c);
	if (!t)
		goto out;
	/* g is in PF_p[q], so 1 + g^2 is a square; p = 3 mod 4 */
	if (!BN_mod_sqr(n, g, s->p, c) || !BN_add_word(n, 1) ||
	    !BN_mod(n, n, s->p, c) || !BN_copy(e, s->p) ||
	    !BN_add_word(e, 1) || !BN_rshift(e, e, 2) ||
	    !BN_mod_exp(m0, n, e, s->p, c) || !BN_mod_sqr(t, m0, s->p, c))
		goto out;
	if (BN_cmp(t, n))
		goto out;
	/* V_1 = 2 / m0 */
	if (!BN_mod_inverse(t, m0, s->p, c) || !BN_mod_lshift1(t, t, s->p, c) ||
	    !BN_to_montgomery(s->lv1_m, t, s->mont, c))
		goto out;
	/* m0 / (2g) */
	if (!BN_mod_lshift1(t, g, s->p, c) ||
	    !BN_mod_inverse(t, t, s->p, c) || !BN_mod_mul(t, t, m0, s->p, c) ||
	    !BN_to_montgomery(s->lc_m, t, s->mont, c))
		goto out;
	ret = KMS_OK;
out:
	BN_CTX_end(c);
	return ret;
}


int kms_sakke_new(struct kms_sakke **out)
{
	struct kms_sakke *s;
	BN_CTX *c;
	BIGNUM *a, *px, *py, *g;
	int ret = KMS_ERR_NOMEM;

	if (!out)
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	a = BN_CTX_get(c);
	px = BN_CTX_get(c);
	py = BN_CTX_get(c);
	g = BN_CTX_get(c);
	s = OPENSSL_zalloc(sizeof(*s));
	if (!g || !s)
		goto out;
	s->mont = BN_MONT_CTX_new();
	s->one_m = BN_new();
	s->two_m = BN_new();
	s->lv1_m = BN_new();
	s->lc_m = BN_new();
	if (!s->mont || !s->one_m || !s->two_m || !s->lv1_m || !s->lc_m)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!BN_hex2bn(&s->p, P_HEX) || !BN_hex2bn(&s->q, Q_HEX) ||
	    !BN_hex2bn(&px, PX_HEX) || !BN_hex2bn(&py, PY_HEX) ||
	    !BN_hex2bn(&g, G_HEX))
		goto out;
	/* p + 1 = 4q; q has Q_BITS bits (the digits of mul_ct()) */
	if (!BN_lshift(a, s->q, 2) || !BN_sub_word(a, 1) || BN_cmp(a, s->p) ||
	    BN_num_bits(s->q) != Q_BITS)
		goto out;
	/* q - 1 in NAF: digits in {-1, 0, 1}, no two adjacent non-zero */
	if (!BN_copy(a, s->q) || !BN_sub_word(a, 1))
		goto out;
	s->naf_len = sakke_wnaf(a, 2, s->naf, sizeof(s->naf));
	if (s->naf_len < 2)
		goto out;
	if (!BN_MONT_CTX_set(s->mont, s->p, c) ||
	    !BN_to_montgomery(s->one_m, BN_value_one(), s->mont, c) ||
	    !BN_set_word(a, 2) || !BN_to_montgomery(s->two_m, a, s->mont, c))
		goto out;
	if (BN_bn2binpad(g, s->g, sizeof(s->g)) < 0)
		goto out;
	ret = lucas_setup(s, g, c);
	if (!ret)
		ret = sakke_ptab_setup(s, px, py, c);
	if (ret)
		goto out;
	*out = s;
	s = NULL;
out:
	BN_CTX_end(c);
	BN_CTX_free(c);
	kms_sakke_free(s);
	return ret;
}

/* z in [2, q-1] */
static int load_z(const struct kms_sakke *s, const uint8_t z[KMS_SAKKE_Z_LEN],
		  BIGNUM *zb)
{
	BN_set_flags(zb, BN_FLG_CONSTTIME);
	if (!BN_bin2bn(z, KMS_SAKKE_Z_LEN, zb))
		return KMS_ERR_CRYPTO;
	if (BN_is_zero(zb) || BN_is_one(zb) || BN_cmp(zb, s->q) >= 0)
		return KMS_ERR_INVAL;
	return KMS_OK;
}

/* ----------------------------------------------------------- the API */

int kms_sakke_public(const struct kms_sakke *s,
		     const uint8_t z[KMS_SAKKE_Z_LEN],
		     uint8_t zs[KMS_SAKKE_POINT_LEN])
{
	uint8_t buf[KMS_SAKKE_POINT_LEN];
	BN_CTX *c;
	BIGNUM *zb;
	int ret = KMS_ERR_NOMEM;

	if (!s || !z || !zs)
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	zb = BN_CTX_get(c);
	if (!zb)
		goto out;
	ret = load_z(s, z, zb);
	if (!ret)
		ret = sakke_mul_base(s, zb, buf, c);
	if (!ret)
		memcpy(zs, buf, sizeof(buf));
out:
	BN_CTX_end(c);
	BN_CTX_free(c);
	return ret;
}

int kms_sakke_rsk(const struct kms_sakke *s, const uint8_t z[KMS_SAKKE_Z_LEN],
		  const uint8_t *id, size_t id_len,
		  uint8_t rsk[KMS_SAKKE_POINT_LEN])
{
	uint8_t buf[KMS_SAKKE_POINT_LEN];
	BN_CTX *c;
	BIGNUM *zb, *t;
	int ret = KMS_ERR_NOMEM;

	if (!s || !z || !rsk || !sakke_id_ok(id, id_len))
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	zb = BN_CTX_get(c);
	t = BN_CTX_get(c);
	if (!t)
		goto out;
	ret = load_z(s, z, zb);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	BN_set_flags(t, BN_FLG_CONSTTIME);
	/* t = (b + z)^-1 mod q */
	if (!BN_bin2bn(id, (int)id_len, t) || !BN_nnmod(t, t, s->q, c) ||
	    !BN_mod_add(t, t, zb, s->q, c))
		goto out;
	if (BN_is_zero(t)) {
		ret = KMS_ERR_INVAL;
		goto out;
	}
	if (!BN_mod_inverse(t, t, s->q, c))
		goto out;
	ret = sakke_mul_base(s, t, buf, c);
	if (!ret)
		memcpy(rsk, buf, sizeof(buf));
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	BN_CTX_end(c);
	BN_CTX_free(c);
	return ret;
}

int kms_sakke_rsk_check(const struct kms_sakke *s,
			const uint8_t zs[KMS_SAKKE_POINT_LEN],
			const uint8_t *id, size_t id_len,
			const uint8_t rsk[KMS_SAKKE_POINT_LEN])
{
	uint8_t w_oct[KMS_SAKKE_GT_LEN];
	BIGNUM *kx, *ky, *ax, *ay, *w;
	struct ecx e;
	struct jac ap;
	BN_CTX *c;
	int ret = KMS_ERR_NOMEM;

	if (!s || !zs || !rsk || !sakke_id_ok(id, id_len))
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	kx = BN_CTX_get(c);
	ky = BN_CTX_get(c);
	ax = BN_CTX_get(c);
	ay = BN_CTX_get(c);
	w = BN_CTX_get(c);
	if (!w || !sakke_ecx_get(&e, c) || !sakke_jac_get(&ap, c))
		goto out;
	ret = sakke_point_decode_m(s, zs, ax, ay, c);
	if (!ret)
		ret = sakke_point_decode(s, rsk, kx, ky, c);
	if (ret)
		goto out;
	ret = sakke_id_point(s, id, id_len, ax, ay, &ap, &e, c);
	if (ret == KMS_ERR_INVAL)
		ret = KMS_ERR_AUTH;     /* b = -z: no RSK can exist */
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!sakke_jac_affine(s, &ap, ax, ay, 0, c))
		goto out;
	/*
	 * < [b]P + Z_S, K > computed as < K, [b]P + Z_S >: the pairing is
	 * symmetric on E(F_p)[q], and the loop on K checks K's order.
	 */
	ret = pairing(s, kx, ky, ax, ay, w, c);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (BN_bn2binpad(w, w_oct, sizeof(w_oct)) < 0)
		goto out;
	ret = CRYPTO_memcmp(w_oct, s->g, sizeof(w_oct)) ? KMS_ERR_AUTH :
							  KMS_OK;
out:
	BN_CTX_end(c);
	BN_CTX_free(c);
	return ret;
}

int kms_sakke_derive_r(const struct kms_sakke *s,
		       const uint8_t ssv[KMS_SAKKE_SSV_LEN],
		       const uint8_t *id, size_t id_len,
		       uint8_t r[KMS_SAKKE_Z_LEN])
{
	BN_CTX *c;
	BIGNUM *rb;
	int ret = KMS_ERR_NOMEM;

	if (!s || !ssv || !r || !sakke_id_ok(id, id_len))
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	rb = BN_CTX_get(c);
	if (!rb)
		goto out;
	ret = sakke_derive_r(s, ssv, id, id_len, rb, c);
	if (!ret && BN_bn2binpad(rb, r, KMS_SAKKE_Z_LEN) < 0)
		ret = KMS_ERR_CRYPTO;
out:
	BN_CTX_end(c);
	BN_CTX_free(c);
	return ret;
}

int kms_sakke_encap(const struct kms_sakke *s,
		    const uint8_t zs[KMS_SAKKE_POINT_LEN],
		    const uint8_t *id, size_t id_len,
		    const uint8_t ssv[KMS_SAKKE_SSV_LEN],
		    uint8_t enc[KMS_SAKKE_ENC_LEN])
{
	uint8_t buf[KMS_SAKKE_ENC_LEN], w_oct[KMS_SAKKE_GT_LEN];
	uint8_t mask[KMS_SAKKE_SSV_LEN];
	BIGNUM *zx, *zy, *r, *w;
	struct ecx e;
	struct jac tp, acc;
	BN_CTX *c;
	int i, ret = KMS_ERR_NOMEM;

	if (!s || !zs || !ssv || !enc || !sakke_id_ok(id, id_len))
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	zx = BN_CTX_get(c);
	zy = BN_CTX_get(c);
	r = BN_CTX_get(c);
	w = BN_CTX_get(c);
	if (!w || !sakke_ecx_get(&e, c) || !sakke_jac_get(&tp, c) ||
	    !sakke_jac_get(&acc, c))
		goto out;
	ret = sakke_point_decode_m(s, zs, zx, zy, c);
	if (ret)
		goto out;
	/* 2: r = HashToIntegerRange(SSV || b, q) */
	ret = sakke_derive_r(s, ssv, id, id_len, r, c);
	if (ret)
		goto out;
	if (BN_is_zero(r)) {
		ret = KMS_ERR_INVAL;
		goto out;
	}
	/* 3: R_(b,S) = [r]([b]P + Z_S) */
	ret = sakke_id_point(s, id, id_len, zx, zy, &tp, &e, c);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!sakke_mul_id(s, &tp, r, &acc, &e, c))
		goto out;
	ret = sakke_jac_encode(s, &acc, buf, c);
	if (ret)
		goto out;
	/* 4: H = SSV XOR HashToIntegerRange(g^r, 2^n) */
	ret = g_pow(s, r, w, c);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (BN_bn2binpad(w, w_oct, sizeof(w_oct)) < 0)
		goto out;
	ret = sakke_derive_mask(w_oct, mask);
	if (ret)
		goto out;
	for (i = 0; i < KMS_SAKKE_SSV_LEN; i++)
		buf[KMS_SAKKE_POINT_LEN + i] = ssv[i] ^ mask[i];
	memcpy(enc, buf, sizeof(buf));
out:
	OPENSSL_cleanse(w_oct, sizeof(w_oct));
	OPENSSL_cleanse(mask, sizeof(mask));
	BN_CTX_end(c);
	BN_CTX_free(c);
	return ret;
}


int kms_sakke_decap(const struct kms_sakke *s,
		    const uint8_t zs[KMS_SAKKE_POINT_LEN],
		    const uint8_t *id, size_t id_len,
		    const uint8_t rsk[KMS_SAKKE_POINT_LEN],
		    const uint8_t enc[KMS_SAKKE_ENC_LEN],
		    uint8_t ssv[KMS_SAKKE_SSV_LEN])
{
	uint8_t w_oct[KMS_SAKKE_GT_LEN], out_ssv[KMS_SAKKE_SSV_LEN];
	BIGNUM *zx, *zy, *rx, *ry, *kx, *ky, *w, *r;
	struct ecx e;
	struct jac tp, acc;
	BN_CTX *c;
	int i, ret = KMS_ERR_NOMEM;

	if (!s || !zs || !rsk || !enc || !ssv || !sakke_id_ok(id, id_len))
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	zx = BN_CTX_get(c);
	zy = BN_CTX_get(c);
	rx = BN_CTX_get(c);
	ry = BN_CTX_get(c);
	kx = BN_CTX_get(c);
	ky = BN_CTX_get(c);
	w = BN_CTX_get(c);
	r = BN_CTX_get(c);
	if (!r || !sakke_ecx_get(&e, c) || !sakke_jac_get(&tp, c) ||
	    !sakke_jac_get(&acc, c))
		goto out;
	ret = sakke_point_decode_m(s, zs, zx, zy, c);
	if (!ret)
		ret = sakke_point_decode(s, rsk, kx, ky, c);
	if (!ret)
		ret = sakke_point_decode(s, enc, rx, ry, c);
	if (ret)
		goto out;
	/* 2: w = < R_(b,S), K_(b,S) >; also checks that R has order q */
	ret = pairing(s, rx, ry, kx, ky, w, c);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (BN_bn2binpad(w, w_oct, sizeof(w_oct)) < 0)
		goto out;
	/* 3: SSV = H XOR HashToIntegerRange(w, 2^n) */
	ret = sakke_derive_mask(w_oct, out_ssv);
	if (ret)
		goto out;
	for (i = 0; i < KMS_SAKKE_SSV_LEN; i++)
		out_ssv[i] ^= enc[KMS_SAKKE_POINT_LEN + i];
	/* 4, 5: r = HashToIntegerRange(SSV || b, q); [r]([b]P + Z_S) == R */
	ret = sakke_derive_r(s, out_ssv, id, id_len, r, c);
	if (ret)
		goto out;
	ret = sakke_id_point(s, id, id_len, zx, zy, &tp, &e, c);
	if (ret == KMS_ERR_INVAL || (!ret && BN_is_zero(r))) {
		ret = KMS_ERR_AUTH;
		goto out;
	}
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!sakke_mul_id(s, &tp, r, &acc, &e, c) ||
	    !BN_to_montgomery(rx, rx, s->mont, c) ||
	    !BN_to_montgomery(ry, ry, s->mont, c))
		goto out;
	switch (sakke_jac_eq_aff(s, &acc, rx, ry, e.t, c)) {
	case 1:
		memcpy(ssv, out_ssv, sizeof(out_ssv));
		ret = KMS_OK;
		break;
	case 0:
		ret = KMS_ERR_AUTH;
		break;
	default:
		break;
	}
out:
	OPENSSL_cleanse(w_oct, sizeof(w_oct));
	OPENSSL_cleanse(out_ssv, sizeof(out_ssv));
	BN_CTX_end(c);
	BN_CTX_free(c);
	return ret;
}


int kms_sakke_pair(const struct kms_sakke *s,
		   const uint8_t a[KMS_SAKKE_POINT_LEN],
		   const uint8_t b[KMS_SAKKE_POINT_LEN],
		   uint8_t out[KMS_SAKKE_GT_LEN])
{
	BIGNUM *ax, *ay, *bx, *by, *w;
	BN_CTX *c;
	int ret = KMS_ERR_NOMEM;

	if (!s || !a || !b || !out)
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	ax = BN_CTX_get(c);
	ay = BN_CTX_get(c);
	bx = BN_CTX_get(c);
	by = BN_CTX_get(c);
	w = BN_CTX_get(c);
	if (!w)
		goto out;
	ret = sakke_point_decode(s, a, ax, ay, c);
	if (!ret)
		ret = sakke_point_decode(s, b, bx, by, c);
	if (!ret)
		ret = pairing(s, ax, ay, bx, by, w, c);
	if (!ret && BN_bn2binpad(w, out, KMS_SAKKE_GT_LEN) < 0)
		ret = KMS_ERR_CRYPTO;
out:
	BN_CTX_end(c);
	BN_CTX_free(c);
	return ret;
}

int kms_sakke_order(const struct kms_sakke *s, uint8_t q[KMS_SAKKE_Z_LEN])
{
	return BN_bn2binpad(s->q, q, KMS_SAKKE_Z_LEN) == KMS_SAKKE_Z_LEN ?
		KMS_OK : KMS_ERR_CRYPTO;
}
