// SPDX-License-Identifier: Apache-2.0
/*
 * SAKKE (RFC 6508) with parameter set 1 of RFC 6509, on OpenSSL 3 BIGNUM.
 *
 * Everything is written here on BN_mod_mul_montgomery() (OpenSSL's
 * generic-curve EC code costs about twice as much on this 1024-bit curve):
 *
 *  - E(F_p): y^2 = x^3 - 3x in Jacobian coordinates, Montgomery form.
 *    Secret scalars (z, RSK scalars, r) go through a fixed-window
 *    multiplication with signed odd digits: every window is WIN doublings
 *    and one addition of a table entry read by masked swaps over the whole
 *    table, whatever the scalar. Public scalars (the identifier b in
 *    [b]P + Z_S) use a variable-time wNAF. Multiples of P read NCH tables
 *    of odd multiples of [2^(CH j)]P precomputed in struct kms_sakke, as
 *    combs (CH doublings in all); for [r]([b]P + Z_S) the table of
 *    [b]P + Z_S is built per call (one inversion).
 *  - a prepared receiver key (struct kms_sakke_rskp): the Miller loop of
 *    the pairing run once on the RSK, its lines kept for decapsulation.
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

#define HASH_LEN 32
/* HashToIntegerRange blocks: ceil(lg(q) / 256) for q, ceil(128 / 256) */
#define Q_BLOCKS 4
#define N_BLOCKS 1
#define FP_WORDS ((KMS_SAKKE_FP_LEN * 8 + BN_BITS2 - 1) / BN_BITS2)
#define Q_BITS 1022                     /* checked in kms_sakke_new() */
#define WIN 5                           /* window of the secret scalars */
#define TBL (1 << (WIN - 1))            /* [1]T, [3]T, ..., [2 TBL - 1]T */
#define NDIG ((Q_BITS + WIN - 1) / WIN) /* digits of a scalar <= q */
#define WNAF 6                          /* public scalars: same table */
#define CH (13 * WIN)                   /* bits of a comb tooth for P */
#define NCH ((Q_BITS + 2 + CH - 1) / CH) /* tables of [2^(CH j)]P */

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

struct kms_sakke {
	BIGNUM *p;
	BIGNUM *q;
	BN_MONT_CTX *mont;      /* modulo p */
	BIGNUM *one_m;          /* 1, Montgomery form */
	BIGNUM *two_m;          /* 2, Montgomery form */
	BIGNUM *lv1_m;          /* V_1 = 2 Re(m), m = (1 + ig)/sqrt(1 + g^2) */
	BIGNUM *lc_m;           /* sqrt(1 + g^2) / (2g) */
	/* x, y of [(2i + 1) 2^(CH j)]P, affine, Montgomery: ptab[j][2i] */
	BIGNUM *ptab[NCH][2 * TBL];
	uint8_t g[KMS_SAKKE_GT_LEN];
	int naf_len;            /* q - 1 in non-adjacent form, low digit first */
	int8_t naf[KMS_SAKKE_FP_LEN * 8 + 1];
};

/* ------------------------------------------------------ F_p (Montgomery) */

static int fmul(BIGNUM *r, const BIGNUM *a, const BIGNUM *b,
		const struct kms_sakke *s, BN_CTX *c)
{
	return BN_mod_mul_montgomery(r, a, b, s->mont, c);
}

static int fsqr(BIGNUM *r, const BIGNUM *a, const struct kms_sakke *s,
		BN_CTX *c)
{
	return BN_mod_mul_montgomery(r, a, a, s->mont, c);
}

static int fadd(BIGNUM *r, const BIGNUM *a, const BIGNUM *b,
		const struct kms_sakke *s)
{
	return BN_mod_add_quick(r, a, b, s->p);
}

/*
 * r = a - b as a + (p - b): no branch on the values (BN_mod_sub_quick()
 * adds p back only when the difference is negative). @u: scratch, not
 * r, a or b.
 */
static int fsub(BIGNUM *r, const BIGNUM *a, const BIGNUM *b, BIGNUM *u,
		const struct kms_sakke *s)
{
	return BN_usub(u, s->p, b) && BN_mod_add_quick(r, a, u, s->p);
}

/* (va + i vb) *= (lr + i li), Karatsuba: three multiplications. */
static int fp2_mul(BIGNUM *va, BIGNUM *vb, const BIGNUM *lr,
		   const BIGNUM *li, BIGNUM *t[4], const struct kms_sakke *s,
		   BN_CTX *c)
{
	return fmul(t[0], va, lr, s, c) && fmul(t[1], vb, li, s, c) &&
	       fadd(t[2], va, vb, s) && fadd(t[3], lr, li, s) &&
	       fmul(t[2], t[2], t[3], s, c) &&
	       fsub(va, t[0], t[1], t[3], s) &&
	       fsub(t[2], t[2], t[0], t[3], s) &&
	       fsub(vb, t[2], t[1], t[3], s);
}

/* (va + i vb)^2 = (va + vb)(va - vb) + 2 i va vb */
static int fp2_sqr(BIGNUM *va, BIGNUM *vb, BIGNUM *t[4],
		   const struct kms_sakke *s, BN_CTX *c)
{
	return fadd(t[0], va, vb, s) && fsub(t[1], va, vb, t[3], s) &&
	       fmul(t[2], va, vb, s, c) && fmul(va, t[0], t[1], s, c) &&
	       fadd(vb, t[2], t[2], s);
}

/* Make sure BN_consttime_swap() may touch FP_WORDS words of @a. */
static int bn_reserve(BIGNUM *a)
{
	if (!BN_set_bit(a, FP_WORDS * BN_BITS2 - 1))
		return 0;
	BN_zero(a);
	return 1;
}

/* r = a^-1, both in Montgomery form; @ct for a secret a. */
static int finv_m(BIGNUM *r, const BIGNUM *a, int ct,
		  const struct kms_sakke *s, BN_CTX *c)
{
	if (!BN_from_montgomery(r, a, s->mont, c))
		return 0;
	if (ct)
		BN_set_flags(r, BN_FLG_CONSTTIME);
	return BN_mod_inverse(r, r, s->p, c) &&
	       BN_to_montgomery(r, r, s->mont, c);
}

/* A BIGNUM from @c that BN_consttime_swap() may use. */
static BIGNUM *bn_get(BN_CTX *c)
{
	BIGNUM *a = BN_CTX_get(c);

	return a && bn_reserve(a) ? a : NULL;
}

/* ------------------------------------------------------------- points */

static int id_ok(const uint8_t *id, size_t id_len)
{
	return id && id_len > 0 && id_len <= KMS_SAKKE_ID_MAX;
}

/*
 * 0x04 || x || y -> x, y: coordinates < p, y^2 = x^3 - 3x, y != 0 (the
 * points with y = 0 have order 2 and the point at infinity has no such
 * encoding at all).
 */
static int point_decode(const struct kms_sakke *s,
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
static int point_decode_m(const struct kms_sakke *s,
			  const uint8_t in[KMS_SAKKE_POINT_LEN], BIGNUM *x,
			  BIGNUM *y, BN_CTX *c)
{
	int ret = point_decode(s, in, x, y, c);

	if (!ret && (!BN_to_montgomery(x, x, s->mont, c) ||
		     !BN_to_montgomery(y, y, s->mont, c)))
		ret = KMS_ERR_CRYPTO;
	return ret;
}

/* ------------------------------------------ E(F_p), Jacobian coordinates */

/*
 * (X, Y, Z) is the affine point (X/Z^2, Y/Z^3), Z = 0 is O; coordinates in
 * Montgomery form. Doubling is dbl-2001-b for a = -3 with Z3 = 2YZ
 * (4M + 4S), addition the mixed add-2007-bl of an affine point with
 * Z3 = 2 Z1 H (7M + 4S), both from the Explicit-Formulas Database. The
 * addition does not handle its exceptions (a point plus itself, plus its
 * opposite, or O plus a point): its callers prove them impossible or look
 * for them (H = 0, left in t[3], and rr = 0, left in t[2]).
 *
 * The formulas use fmul, fadd and fsub only, whose time does not depend
 * on the values but for a top word of zero, as for OpenSSL's own ladder.
 */
struct jac {
	BIGNUM *x, *y, *z;
};

/* Scratch of the point operations: all from one BN_CTX frame. */
struct ecx {
	BIGNUM *t[5];           /* formula temporaries; t[4] for fsub */
	struct jac sv;          /* a saved point */
	BIGNUM *sx, *sy, *tmp;  /* the selected table entry, a buffer */
};

static int jac_get(struct jac *j, BN_CTX *c)
{
	j->x = bn_get(c);
	j->y = bn_get(c);
	j->z = bn_get(c);
	return j->z != NULL;
}

static int ecx_get(struct ecx *e, BN_CTX *c)
{
	int i;

	for (i = 0; i < 5; i++)
		e->t[i] = bn_get(c);
	e->sx = bn_get(c);
	e->sy = bn_get(c);
	e->tmp = bn_get(c);
	return jac_get(&e->sv, c) && e->tmp;
}

static int jac_cpy(struct jac *d, const struct jac *a)
{
	return BN_copy(d->x, a->x) && BN_copy(d->y, a->y) &&
	       BN_copy(d->z, a->z);
}

static void jac_swap(BN_ULONG cond, struct jac *a, struct jac *b)
{
	BN_consttime_swap(cond, a->x, b->x, FP_WORDS);
	BN_consttime_swap(cond, a->y, b->y, FP_WORDS);
	BN_consttime_swap(cond, a->z, b->z, FP_WORDS);
}

/* a = [2]a */
static int jdbl(struct jac *a, BIGNUM **t, const struct kms_sakke *s,
		BN_CTX *c)
{
	return fsqr(t[0], a->z, s, c) &&                   /* delta */
	       fsqr(t[1], a->y, s, c) &&                   /* gamma */
	       fmul(t[2], a->x, t[1], s, c) &&             /* beta */
	       fsub(t[3], a->x, t[0], t[4], s) &&
	       fadd(t[0], a->x, t[0], s) &&
	       fmul(t[3], t[3], t[0], s, c) &&
	       fadd(t[0], t[3], t[3], s) &&
	       fadd(t[3], t[0], t[3], s) &&                /* alpha */
	       fmul(a->z, a->y, a->z, s, c) &&
	       fadd(a->z, a->z, a->z, s) &&                /* Z3 */
	       fadd(t[2], t[2], t[2], s) &&
	       fadd(t[2], t[2], t[2], s) &&                /* 4 beta */
	       fsqr(a->x, t[3], s, c) &&
	       fsub(a->x, a->x, t[2], t[4], s) &&
	       fsub(a->x, a->x, t[2], t[4], s) &&       /* X3 */
	       fsub(t[0], t[2], a->x, t[4], s) &&
	       fmul(a->y, t[3], t[0], s, c) &&
	       fsqr(t[1], t[1], s, c) &&
	       fadd(t[1], t[1], t[1], s) &&
	       fadd(t[1], t[1], t[1], s) &&
	       fadd(t[1], t[1], t[1], s) &&                /* 8 gamma^2 */
	       fsub(a->y, a->y, t[1], t[4], s);         /* Y3 */
}

/* a = a + (x2, y2), no exception handled */
static int jadd(struct jac *a, const BIGNUM *x2, const BIGNUM *y2,
		BIGNUM **t, const struct kms_sakke *s, BN_CTX *c)
{
	return fsqr(t[0], a->z, s, c) &&                   /* Z1Z1 */
	       fmul(t[1], x2, t[0], s, c) &&               /* U2 */
	       fmul(t[2], y2, a->z, s, c) &&
	       fmul(t[2], t[2], t[0], s, c) &&             /* S2 */
	       fsub(t[3], t[1], a->x, t[4], s) &&       /* H */
	       fsub(t[2], t[2], a->y, t[4], s) &&
	       fadd(t[2], t[2], t[2], s) &&                /* rr */
	       fsqr(t[0], t[3], s, c) &&
	       fadd(t[0], t[0], t[0], s) &&
	       fadd(t[0], t[0], t[0], s) &&                /* I */
	       fmul(t[1], t[3], t[0], s, c) &&             /* J */
	       fmul(t[0], a->x, t[0], s, c) &&             /* V */
	       fmul(a->z, a->z, t[3], s, c) &&
	       fadd(a->z, a->z, a->z, s) &&                /* Z3 */
	       fsqr(a->x, t[2], s, c) &&
	       fsub(a->x, a->x, t[1], t[4], s) &&
	       fsub(a->x, a->x, t[0], t[4], s) &&
	       fsub(a->x, a->x, t[0], t[4], s) &&       /* X3 */
	       fsub(t[0], t[0], a->x, t[4], s) &&
	       fmul(t[0], t[2], t[0], s, c) &&
	       fmul(t[1], a->y, t[1], s, c) &&
	       fadd(t[1], t[1], t[1], s) &&
	       fsub(a->y, t[0], t[1], t[4], s);         /* Y3 */
}

/* a = a + (x2, y2), every case (public points: variable time) */
static int jadd_vt(struct jac *a, const BIGNUM *x2, const BIGNUM *y2,
		   struct ecx *e, const struct kms_sakke *s, BN_CTX *c)
{
	if (BN_is_zero(a->z))
		return BN_copy(a->x, x2) && BN_copy(a->y, y2) &&
		       BN_copy(a->z, s->one_m);
	if (!jac_cpy(&e->sv, a) || !jadd(a, x2, y2, e->t, s, c))
		return 0;
	if (!BN_is_zero(e->t[3]) || !BN_is_zero(e->t[2]))
		return 1;               /* H = 0, rr != 0: O, as Z3 = 0 */
	return jac_cpy(a, &e->sv) && jdbl(a, e->t, s, c);
}

/* (x, y) = j in affine coordinates, plain integers; j != O. */
static int jac_affine(const struct kms_sakke *s, const struct jac *j,
		      BIGNUM *x, BIGNUM *y, int ct, BN_CTX *c)
{
	BIGNUM *zi, *t;
	int ok = 0;

	BN_CTX_start(c);
	zi = BN_CTX_get(c);
	t = BN_CTX_get(c);
	if (t && finv_m(zi, j->z, ct, s, c) && fsqr(t, zi, s, c) &&
	    fmul(x, j->x, t, s, c) && fmul(t, t, zi, s, c) &&
	    fmul(y, j->y, t, s, c) && BN_from_montgomery(x, x, s->mont, c) &&
	    BN_from_montgomery(y, y, s->mont, c))
		ok = 1;
	BN_CTX_end(c);
	return ok;
}

/* 0x04 || x || y of j (KMS_ERR_CRYPTO for O, as there is no encoding) */
static int jac_encode(const struct kms_sakke *s, const struct jac *j,
		      uint8_t out[KMS_SAKKE_POINT_LEN], BN_CTX *c)
{
	BIGNUM *x, *y;
	int ret = KMS_ERR_CRYPTO;

	BN_CTX_start(c);
	x = BN_CTX_get(c);
	y = BN_CTX_get(c);
	if (!y || BN_is_zero(j->z) || !jac_affine(s, j, x, y, 1, c))
		goto out;
	out[0] = 0x04;
	if (BN_bn2binpad(x, out + 1, KMS_SAKKE_FP_LEN) < 0 ||
	    BN_bn2binpad(y, out + 1 + KMS_SAKKE_FP_LEN, KMS_SAKKE_FP_LEN) < 0)
		goto out;
	ret = KMS_OK;
out:
	BN_CTX_end(c);
	return ret;
}

/*
 * tab[2i], tab[2i + 1] = the affine coordinates of the Jacobian j[i],
 * none of them O (public values: one variable-time inversion for all).
 */
static int jac_norm(const struct kms_sakke *s, const struct jac *j, int n,
		    BIGNUM **tab, BN_CTX *c)
{
	BIGNUM *u, *zi, *t;
	int i, ok = 0;

	BN_CTX_start(c);
	u = BN_CTX_get(c);
	zi = BN_CTX_get(c);
	t = BN_CTX_get(c);
	/* tab[2i] = Z_0 ... Z_i, then u = 1 / (Z_0 ... Z_(n-1)) */
	if (!t || !BN_copy(tab[0], j[0].z))
		goto out;
	for (i = 1; i < n; i++)
		if (!fmul(tab[2 * i], tab[2 * i - 2], j[i].z, s, c))
			goto out;
	if (!finv_m(u, tab[2 * n - 2], 0, s, c))
		goto out;
	for (i = n - 1; i >= 0; i--) {
		if (i && (!fmul(zi, u, tab[2 * i - 2], s, c) ||
			  !fmul(u, u, j[i].z, s, c)))
			goto out;
		if ((!i && !BN_copy(zi, u)) || !fsqr(t, zi, s, c) ||
		    !fmul(tab[2 * i], j[i].x, t, s, c) ||
		    !fmul(t, t, zi, s, c) ||
		    !fmul(tab[2 * i + 1], j[i].y, t, s, c))
			goto out;
	}
	ok = 1;
out:
	BN_CTX_end(c);
	return ok;
}

/*
 * tab = [1]T, [3]T, ..., [2 TBL - 1]T, affine, T Jacobian, public, of
 * order at least q (so no sum below meets an exception). The sums are
 * taken on the isomorphic curve y^2 = x^3 - 3 Zd^4 x, on which
 * D = [2]T = (Xd, Yd, Zd) is the affine (Xd, Yd) (the addition does not
 * involve a), then brought back by Z *= Zd.
 */
static int odd_table(const struct kms_sakke *s, const struct jac *tp,
		     BIGNUM **tab, struct ecx *e, BN_CTX *c)
{
	struct jac j[TBL], d;
	int i, ok = 0;

	BN_CTX_start(c);
	for (i = 0; i < TBL; i++)
		if (!jac_get(&j[i], c))
			goto out;
	if (!jac_get(&d, c) || !jac_cpy(&d, tp) || !jdbl(&d, e->t, s, c) ||
	    !fsqr(e->sx, d.z, s, c) || !fmul(e->sy, e->sx, d.z, s, c) ||
	    !fmul(j[0].x, tp->x, e->sx, s, c) ||
	    !fmul(j[0].y, tp->y, e->sy, s, c) || !BN_copy(j[0].z, tp->z))
		goto out;
	for (i = 1; i < TBL; i++)
		if (!jac_cpy(&j[i], &j[i - 1]) ||
		    !jadd(&j[i], d.x, d.y, e->t, s, c))
			goto out;
	for (i = 0; i < TBL; i++)
		if (!fmul(j[i].z, j[i].z, d.z, s, c))
			goto out;
	ok = jac_norm(s, j, TBL, tab, c);
out:
	BN_CTX_end(c);
	return ok;
}

/* k (destroyed, >= 0) in width-w NAF, low digit first: its length or -1 */
static int wnaf(BIGNUM *k, int w, int8_t *d, int max)
{
	int n = 0, j, v;

	while (!BN_is_zero(k)) {
		if (n >= max)
			return -1;
		v = 0;
		if (BN_is_odd(k)) {
			for (j = w - 1; j >= 0; j--)
				v = 2 * v + BN_is_bit_set(k, j);
			if (v >= 1 << (w - 1))
				v -= 1 << w;
			if (!(v > 0 ? BN_sub_word(k, (BN_ULONG)v) :
				      BN_add_word(k, (BN_ULONG)-v)))
				return -1;
		}
		d[n++] = (int8_t)v;
		if (!BN_rshift1(k, k))
			return -1;
	}
	return n;
}

/* @n bits of the little-endian kb from bit @off (n + off % 8 <= 16) */
static unsigned int kbits(const uint8_t kb[KMS_SAKKE_Z_LEN], int off, int n)
{
	unsigned int v = kb[off / 8];

	if (off / 8 + 1 < KMS_SAKKE_Z_LEN)
		v |= (unsigned int)kb[off / 8 + 1] << 8;
	return (v >> (off % 8)) & ((1u << n) - 1);
}

/*
 * (e->sx, e->sy) = [d]T, d odd, |d| < 2^WIN, from the table of T: every
 * entry is copied and swapped in under a mask, then y negated under one.
 */
static int tab_select(const struct kms_sakke *s, BIGNUM *const *tab, int d,
		      struct ecx *e)
{
	unsigned int neg = (unsigned int)d >> (sizeof(int) * 8 - 1);
	unsigned int idx = ((((unsigned int)d ^ (0u - neg)) + neg) - 1) >> 1;
	unsigned int i, eq;

	for (i = 0; i < TBL; i++) {
		eq = (((i ^ idx) - 1) >> (sizeof(int) * 8 - 1)) & 1;
		if (!BN_copy(e->tmp, tab[2 * i]))
			return 0;
		BN_consttime_swap((BN_ULONG)eq, e->sx, e->tmp, FP_WORDS);
		if (!BN_copy(e->tmp, tab[2 * i + 1]))
			return 0;
		BN_consttime_swap((BN_ULONG)eq, e->sy, e->tmp, FP_WORDS);
	}
	if (!BN_usub(e->tmp, s->p, e->sy))
		return 0;
	BN_consttime_swap((BN_ULONG)neg, e->sy, e->tmp, FP_WORDS);
	return 1;
}

/*
 * The digits of mul_ct(): k' = k, or k + 1 if k is even (@even: the
 * caller subtracts T at the end), as k' = sum dig[i] 2^(WIN i), all odd,
 * |dig[i]| < 2^WIN (k_0 = k', dig[i] = (k_i mod 2^(WIN+1)) - 2^WIN,
 * k_(i+1) = (k_i - dig[i]) / 2^WIN = (k_i >> WIN) | 1). No branch on k.
 */
static int recode(const BIGNUM *k, int8_t dig[NDIG], unsigned int *even)
{
	uint8_t kb[KMS_SAKKE_Z_LEN];
	unsigned int carry, v;
	int i;

	if (BN_bn2lebinpad(k, kb, sizeof(kb)) < 0)
		return 0;
	*even = 1 ^ (kb[0] & 1);
	carry = *even;
	for (i = 0; i < (int)sizeof(kb); i++) {
		v = kb[i] + carry;
		kb[i] = (uint8_t)v;
		carry = v >> 8;
	}
	for (i = 0; i < NDIG - 1; i++)
		dig[i] = (int8_t)((int)(kbits(kb, WIN * i, WIN + 1) | 1) -
				  (1 << WIN));
	dig[NDIG - 1] = (int8_t)(kbits(kb, WIN * (NDIG - 1), WIN + 1) | 1);
	OPENSSL_cleanse(kb, sizeof(kb));
	return 1;
}

/*
 * acc = [k]T for a secret 1 <= k < q, tab the odd multiples of T (affine,
 * T = tab[0], tab[1] of order q, 2q or 4q), from the digits of recode():
 * WIN doublings and one addition per digit, none of them zero. The
 * partial sums are all in [1, q], so the additions meet no exception but
 * in the last one, when T has order q and k' = q (the sum is O: Z3 = 0 is
 * right) or k' = q + 2 d_0 (a doubling: looked for, done under a mask).
 */
static int mul_ct(const struct kms_sakke *s, BIGNUM *const *tab,
		  const BIGNUM *k, struct jac *acc, struct ecx *e, BN_CTX *c)
{
	int8_t dig[NDIG];
	unsigned int even;
	BN_ULONG dbl, inf;
	int i, j, ok = 0;

	if (!recode(k, dig, &even))
		return 0;
	if (!tab_select(s, tab, dig[NDIG - 1], e) ||
	    !BN_copy(acc->x, e->sx) || !BN_copy(acc->y, e->sy) ||
	    !BN_copy(acc->z, s->one_m))
		goto out;
	for (i = NDIG - 2; i >= 0; i--) {
		for (j = 0; j < WIN; j++)
			if (!jdbl(acc, e->t, s, c))
				goto out;
		if (!tab_select(s, tab, dig[i], e) ||
		    (!i && !jac_cpy(&e->sv, acc)) ||
		    !jadd(acc, e->sx, e->sy, e->t, s, c))
			goto out;
	}
	/* the last addition was a doubling: acc = [2]sv instead */
	dbl = (BN_ULONG)(BN_is_zero(e->t[3]) & BN_is_zero(e->t[2]));
	if (!jdbl(&e->sv, e->t, s, c))
		goto out;
	jac_swap(dbl, acc, &e->sv);
	/* k even: acc = [k']T - T, that is -T if [k']T = O */
	inf = (BN_ULONG)BN_is_zero(acc->z);
	if (!jac_cpy(&e->sv, acc) || !BN_usub(e->sy, s->p, tab[1]) ||
	    !jadd(&e->sv, tab[0], e->sy, e->t, s, c))
		goto out;
	jac_swap((BN_ULONG)even, acc, &e->sv);
	if (!BN_copy(e->sv.x, tab[0]) || !BN_copy(e->sv.y, e->sy) ||
	    !BN_copy(e->sv.z, s->one_m))
		goto out;
	jac_swap((BN_ULONG)even & inf, acc, &e->sv);
	ok = 1;
out:
	OPENSSL_cleanse(dig, sizeof(dig));
	return ok;
}

/*
 * acc = [k]P for a secret 1 <= k < q: the digits of recode() as NCH
 * interleaved combs, digit 13j + m (weight 2^(CH j) 2^(WIN m)) read from
 * P's table j: CH doublings in all instead of WIN NDIG. Here a partial sum
 * may meet an exception, for no k but one built for it from its digits;
 * if any addition did (H = 0), acc is recomputed by mul_ct().
 */
static int comb_ct(const struct kms_sakke *s, const BIGNUM *k,
		   struct jac *acc, struct ecx *e, BN_CTX *c)
{
	int8_t dig[NDIG];
	unsigned int even;
	BN_ULONG bad = 0;
	int i, j, m, first = 1, ok = 0;

	if (!recode(k, dig, &even))
		return 0;
	for (m = CH / WIN - 1; m >= 0; m--) {
		for (j = 0; !first && j < WIN; j++)
			if (!jdbl(acc, e->t, s, c))
				goto out;
		for (j = 0; j < NCH; j++) {
			i = j * (CH / WIN) + m;
			if (i >= NDIG)
				continue;
			if (!tab_select(s, s->ptab[j], dig[i], e))
				goto out;
			if (first) {
				if (!BN_copy(acc->x, e->sx) ||
				    !BN_copy(acc->y, e->sy) ||
				    !BN_copy(acc->z, s->one_m))
					goto out;
				first = 0;
				continue;
			}
			if (!jadd(acc, e->sx, e->sy, e->t, s, c))
				goto out;
			bad |= (BN_ULONG)BN_is_zero(e->t[3]);
		}
	}
	if (bad) {
		ok = mul_ct(s, s->ptab[0], k, acc, e, c);
		goto out;
	}
	/* k even: acc = [k']P - P (k' = 1 would be k = 0) */
	if (!jac_cpy(&e->sv, acc) || !BN_usub(e->sy, s->p, s->ptab[0][1]) ||
	    !jadd(&e->sv, s->ptab[0][0], e->sy, e->t, s, c))
		goto out;
	jac_swap((BN_ULONG)even, acc, &e->sv);
	ok = 1;
out:
	OPENSSL_cleanse(dig, sizeof(dig));
	return ok;
}

/* out = [b]P, b >= 0 public: wNAF digits as NCH combs, variable time */
static int comb_vt(const struct kms_sakke *s, const BIGNUM *b,
		   struct jac *out, struct ecx *e, BN_CTX *c)
{
	int8_t d[NCH * CH];
	const BIGNUM *y;
	BIGNUM *kk;
	int i, j, ad, ok = 0;

	BN_CTX_start(c);
	kk = BN_CTX_get(c);
	memset(d, 0, sizeof(d));
	if (!kk || !BN_copy(kk, b) || wnaf(kk, WNAF, d, sizeof(d)) < 0)
		goto out;
	BN_zero(out->z);
	for (i = CH - 1; i >= 0; i--) {
		if (!BN_is_zero(out->z) && !jdbl(out, e->t, s, c))
			goto out;
		for (j = 0; j < NCH; j++) {
			if (!d[CH * j + i])
				continue;
			ad = d[CH * j + i] > 0 ? d[CH * j + i] : -d[CH * j + i];
			y = s->ptab[j][ad];
			if (d[CH * j + i] < 0) {
				if (!BN_usub(e->sy, s->p, y))
					goto out;
				y = e->sy;
			}
			if (!jadd_vt(out, s->ptab[j][ad - 1], y, e, s, c))
				goto out;
		}
	}
	ok = 1;
out:
	BN_CTX_end(c);
	return ok;
}

/*
 * out = [k]T for a public k >= 0, tab the odd multiples of T: wNAF,
 * variable time, every exception handled.
 */
static int wnaf_mul(const struct kms_sakke *s, BIGNUM *const *tab,
		    const BIGNUM *k, struct jac *out, struct ecx *e, BN_CTX *c)
{
	int8_t d[Q_BITS + 2];
	const BIGNUM *y;
	BIGNUM *kk;
	int i, n, ad, ok = 0;

	BN_CTX_start(c);
	kk = BN_CTX_get(c);
	if (!kk || !BN_copy(kk, k))
		goto out;
	n = wnaf(kk, WNAF, d, sizeof(d));
	if (n < 0)
		goto out;
	BN_zero(out->z);
	for (i = n - 1; i >= 0; i--) {
		if (!BN_is_zero(out->z) && !jdbl(out, e->t, s, c))
			goto out;
		if (!d[i])
			continue;
		/* |d| odd: [|d|]T is entry (|d| - 1)/2 */
		ad = d[i] > 0 ? d[i] : -d[i];
		y = tab[ad];
		if (d[i] < 0) {
			if (!BN_usub(e->sy, s->p, y))
				goto out;
			y = e->sy;
		}
		if (!jadd_vt(out, tab[ad - 1], y, e, s, c))
			goto out;
	}
	ok = 1;
out:
	BN_CTX_end(c);
	return ok;
}

/*
 * out = [b]P + Z_S, b the identifier read as an integer (public),
 * Z_S = (zx, zy) affine. KMS_ERR_INVAL if it is O.
 */
static int id_point(const struct kms_sakke *s, const uint8_t *id,
		    size_t id_len, const BIGNUM *zx, const BIGNUM *zy,
		    struct jac *out, struct ecx *e, BN_CTX *c)
{
	BIGNUM *b;
	int ret = KMS_ERR_CRYPTO;

	BN_CTX_start(c);
	b = BN_CTX_get(c);
	if (!b || !BN_bin2bn(id, (int)id_len, b) ||
	    !BN_nnmod(b, b, s->q, c) || !comb_vt(s, b, out, e, c) ||
	    !jadd_vt(out, zx, zy, e, s, c))
		goto out;
	ret = BN_is_zero(out->z) ? KMS_ERR_INVAL : KMS_OK;
out:
	BN_CTX_end(c);
	return ret;
}

/*
 * acc = [k]T, T = [b]P + Z_S (Jacobian, public, not O), k secret in
 * [1, q-1]. T of order 4 ([b]P = O and a Z_S of order 4, the only orders
 * below q on E) has no table: [k]T = [k mod 4]T.
 */
static int mul_id(const struct kms_sakke *s, const struct jac *tp,
		  const BIGNUM *k, struct jac *acc, struct ecx *e, BN_CTX *c)
{
	BIGNUM *tab[2 * TBL];
	BN_ULONG m;
	int i, ok = 0;

	BN_CTX_start(c);
	if (!jac_cpy(acc, tp) || !jdbl(acc, e->t, s, c) ||
	    !jdbl(acc, e->t, s, c))
		goto out;
	if (BN_is_zero(acc->z)) {
		m = BN_mod_word(k, 4);
		if (m == (BN_ULONG)-1 || !jac_cpy(acc, tp) ||
		    (m == 2 && !jdbl(acc, e->t, s, c)) ||
		    (m == 3 && (!BN_usub(e->tmp, s->p, acc->y) ||
				!BN_copy(acc->y, e->tmp))))
			goto out;
		if (!m)
			BN_zero(acc->z);
		ok = 1;
		goto out;
	}
	for (i = 0; i < 2 * TBL; i++) {
		tab[i] = BN_CTX_get(c);
		if (!tab[i])
			goto out;
	}
	ok = odd_table(s, tp, tab, e, c) && mul_ct(s, tab, k, acc, e, c);
out:
	BN_CTX_end(c);
	return ok;
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
static int derive_r(const struct kms_sakke *s,
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
static int derive_mask(const uint8_t w[KMS_SAKKE_GT_LEN],
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
static int miller_final(const struct kms_sakke *s, BIGNUM *va, BIGNUM *vb,
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

	ret = miller_final(s, m.va, m.vb, t, w, c);
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
	if (!u || !bn_reserve(a) || !bn_reserve(b) ||
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

/* P's tables of odd multiples; P = (px, py) plain */
static int ptab_setup(struct kms_sakke *s, const BIGNUM *px,
		      const BIGNUM *py, BN_CTX *c)
{
	struct ecx e;
	struct jac pj;
	int i, j, ret = KMS_ERR_NOMEM;

	BN_CTX_start(c);
	for (i = 0; i < NCH * 2 * TBL; i++) {
		s->ptab[i / (2 * TBL)][i % (2 * TBL)] = BN_new();
		if (!s->ptab[i / (2 * TBL)][i % (2 * TBL)])
			goto out;
	}
	if (!ecx_get(&e, c) || !jac_get(&pj, c))
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!BN_to_montgomery(pj.x, px, s->mont, c) ||
	    !BN_to_montgomery(pj.y, py, s->mont, c) ||
	    !BN_copy(pj.z, s->one_m))
		goto out;
	for (j = 0; j < NCH; j++) {
		for (i = 0; j && i < CH; i++)
			if (!jdbl(&pj, e.t, s, c))
				goto out;
		if (!odd_table(s, &pj, s->ptab[j], &e, c))
			goto out;
	}
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
	s->naf_len = wnaf(a, 2, s->naf, sizeof(s->naf));
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
		ret = ptab_setup(s, px, py, c);
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


/* [k]P into @out, k secret in [1, q-1] */
static int mul_base(const struct kms_sakke *s, const BIGNUM *k,
		    uint8_t out[KMS_SAKKE_POINT_LEN], BN_CTX *c)
{
	struct ecx e;
	struct jac acc;
	int ret = KMS_ERR_NOMEM;

	BN_CTX_start(c);
	if (!ecx_get(&e, c) || !jac_get(&acc, c))
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (comb_ct(s, k, &acc, &e, c))
		ret = jac_encode(s, &acc, out, c);
out:
	BN_CTX_end(c);
	return ret;
}

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
		ret = mul_base(s, zb, buf, c);
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

	if (!s || !z || !rsk || !id_ok(id, id_len))
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
	ret = mul_base(s, t, buf, c);
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

	if (!s || !zs || !rsk || !id_ok(id, id_len))
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
	if (!w || !ecx_get(&e, c) || !jac_get(&ap, c))
		goto out;
	ret = point_decode_m(s, zs, ax, ay, c);
	if (!ret)
		ret = point_decode(s, rsk, kx, ky, c);
	if (ret)
		goto out;
	ret = id_point(s, id, id_len, ax, ay, &ap, &e, c);
	if (ret == KMS_ERR_INVAL)
		ret = KMS_ERR_AUTH;     /* b = -z: no RSK can exist */
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!jac_affine(s, &ap, ax, ay, 0, c))
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

	if (!s || !ssv || !r || !id_ok(id, id_len))
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	rb = BN_CTX_get(c);
	if (!rb)
		goto out;
	ret = derive_r(s, ssv, id, id_len, rb, c);
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

	if (!s || !zs || !ssv || !enc || !id_ok(id, id_len))
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	zx = BN_CTX_get(c);
	zy = BN_CTX_get(c);
	r = BN_CTX_get(c);
	w = BN_CTX_get(c);
	if (!w || !ecx_get(&e, c) || !jac_get(&tp, c) || !jac_get(&acc, c))
		goto out;
	ret = point_decode_m(s, zs, zx, zy, c);
	if (ret)
		goto out;
	/* 2: r = HashToIntegerRange(SSV || b, q) */
	ret = derive_r(s, ssv, id, id_len, r, c);
	if (ret)
		goto out;
	if (BN_is_zero(r)) {
		ret = KMS_ERR_INVAL;
		goto out;
	}
	/* 3: R_(b,S) = [r]([b]P + Z_S) */
	ret = id_point(s, id, id_len, zx, zy, &tp, &e, c);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!mul_id(s, &tp, r, &acc, &e, c))
		goto out;
	ret = jac_encode(s, &acc, buf, c);
	if (ret)
		goto out;
	/* 4: H = SSV XOR HashToIntegerRange(g^r, 2^n) */
	ret = g_pow(s, r, w, c);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (BN_bn2binpad(w, w_oct, sizeof(w_oct)) < 0)
		goto out;
	ret = derive_mask(w_oct, mask);
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

/* j == (x, y), affine in Montgomery form: X = x Z^2, Y = y Z^3, Z != 0 */
static int jac_eq_aff(const struct kms_sakke *s, const struct jac *j,
		      const BIGNUM *x, const BIGNUM *y, BIGNUM **t, BN_CTX *c)
{
	if (BN_is_zero(j->z))
		return 0;
	if (!fsqr(t[0], j->z, s, c) || !fmul(t[1], x, t[0], s, c) ||
	    !fmul(t[0], t[0], j->z, s, c) || !fmul(t[2], y, t[0], s, c))
		return -1;
	return !BN_cmp(t[1], j->x) && !BN_cmp(t[2], j->y);
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

	if (!s || !zs || !rsk || !enc || !ssv || !id_ok(id, id_len))
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
	if (!r || !ecx_get(&e, c) || !jac_get(&tp, c) || !jac_get(&acc, c))
		goto out;
	ret = point_decode_m(s, zs, zx, zy, c);
	if (!ret)
		ret = point_decode(s, rsk, kx, ky, c);
	if (!ret)
		ret = point_decode(s, enc, rx, ry, c);
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
	ret = derive_mask(w_oct, out_ssv);
	if (ret)
		goto out;
	for (i = 0; i < KMS_SAKKE_SSV_LEN; i++)
		out_ssv[i] ^= enc[KMS_SAKKE_POINT_LEN + i];
	/* 4, 5: r = HashToIntegerRange(SSV || b, q); [r]([b]P + Z_S) == R */
	ret = derive_r(s, out_ssv, id, id_len, r, c);
	if (ret)
		goto out;
	ret = id_point(s, id, id_len, zx, zy, &tp, &e, c);
	if (ret == KMS_ERR_INVAL || (!ret && BN_is_zero(r))) {
		ret = KMS_ERR_AUTH;
		goto out;
	}
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!mul_id(s, &tp, r, &acc, &e, c) ||
	    !BN_to_montgomery(rx, rx, s->mont, c) ||
	    !BN_to_montgomery(ry, ry, s->mont, c))
		goto out;
	switch (jac_eq_aff(s, &acc, rx, ry, e.t, c)) {
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

/* ------------------------------------------------ prepared receiver key */

/*
 * < R, K > = < K, R > (the pairing is symmetric on E(F_p)[q]), and the
 * Miller loop on the fixed K leaves at each step a line c1 x + c0 + i c2 y
 * to evaluate at (-Rx, iRy): kept divided by c2 (an F_p factor, which dies
 * in PF_p), a line costs one multiplication to evaluate, and a doubling
 * step 6 multiplications instead of 17. That loop no longer checks R's order: R = [r]T holds only for R of
 * order q, T = [b]P + Z_S being of order q (checked once), and a failed
 * R = [r]T looks at R's order to tell KMS_ERR_MALFORMED from
 * KMS_ERR_AUTH, as kms_sakke_decap() does.
 */
struct kms_sakke_rskp {
	int n;                  /* lines */
	BIGNUM **ln;            /* line j: c1/c2, c0/c2 at 2j, 2j + 1 */
	BIGNUM *ttab[2 * TBL];  /* odd multiples of T = [b]P + Z_S */
	size_t id_len;
	uint8_t id[KMS_SAKKE_ID_MAX];
};

void kms_sakke_rskp_free(struct kms_sakke_rskp *k)
{
	int i;

	if (!k)
		return;
	for (i = 0; k->ln && i < 2 * k->n; i++)
		BN_clear_free(k->ln[i]);
	OPENSSL_free(k->ln);
	for (i = 0; i < 2 * TBL; i++)
		BN_free(k->ttab[i]);
	OPENSSL_clear_free(k, sizeof(*k));
}

/*
 * 1 if the Jacobian pt (public) has order q, 0 if not, -1 on error. tab:
 * 2 TBL BIGNUMs for its table. The orders on E are 1, 2, 4, q, 2q, 4q.
 */
static int order_q(const struct kms_sakke *s, const struct jac *pt,
		   BIGNUM **tab, struct jac *acc, struct ecx *e, BN_CTX *c)
{
	if (!jac_cpy(acc, pt) || !jdbl(acc, e->t, s, c) ||
	    !jdbl(acc, e->t, s, c))
		return -1;
	if (BN_is_zero(acc->z))
		return 0;
	if (!odd_table(s, pt, tab, e, c) ||
	    !wnaf_mul(s, tab, s->q, acc, e, c))
		return -1;
	return BN_is_zero(acc->z);
}

/*
 * pairing()'s loop on K = (kx, ky) (Montgomery), keeping line j as
 * ln[2j] = c1, ln[2j + 1] = c0, c2[j] = c2; then [q-1]K = -K.
 */
static int rec_lines(const struct kms_sakke *s, const BIGNUM *kx,
		     const BIGNUM *ky, BIGNUM **ln, BIGNUM **c2,
		     struct ecx *e, BN_CTX *c)
{
	BIGNUM **t = e->t, *d = e->sx, *kyn = e->tmp, **l;
	const BIGNUM *y;
	struct jac m;
	int i, ret = KMS_ERR_CRYPTO;

	BN_CTX_start(c);
	if (!jac_get(&m, c) || !BN_copy(m.x, kx) || !BN_copy(m.y, ky) ||
	    !BN_copy(m.z, s->one_m) || !BN_usub(kyn, s->p, ky))
		goto out;
	for (i = s->naf_len - 2, l = ln; i >= 0; i--) {
		/* dbl_step(): alpha delta, alpha X - 2 gamma, Z3 delta */
		if (!fsqr(d, m.z, s, c) || !fsqr(t[1], m.y, s, c) ||
		    !fsub(t[2], m.x, d, t[4], s) || !fadd(t[3], m.x, d, s) ||
		    !fmul(t[2], t[2], t[3], s, c) ||
		    !fadd(t[3], t[2], t[2], s) || !fadd(t[2], t[3], t[2], s) ||
		    !fmul(l[0], t[2], d, s, c) ||
		    !fmul(l[1], t[2], m.x, s, c) ||
		    !fadd(t[1], t[1], t[1], s) ||
		    !fsub(l[1], l[1], t[1], t[4], s) ||
		    !jdbl(&m, t, s, c) || !fmul(*c2++, m.z, d, s, c))
			goto out;
		l += 2;
		if (!s->naf[i])
			continue;
		/* add_step(): rr, rr Rx - Ry Z3, Z3 */
		y = s->naf[i] > 0 ? ky : kyn;
		if (!jadd(&m, kx, y, t, s, c) || !BN_copy(l[0], t[2]) ||
		    !fmul(t[0], t[2], kx, s, c) || !fmul(t[1], y, m.z, s, c) ||
		    !fsub(l[1], t[0], t[1], t[4], s) ||
		    !BN_copy(*c2++, m.z))
			goto out;
		l += 2;
	}
	switch (jac_eq_aff(s, &m, kx, kyn, t, c)) {
	case 1:
		ret = KMS_OK;
		break;
	case 0:
		ret = KMS_ERR_MALFORMED;
		break;
	default:
		break;
	}
out:
	BN_CTX_end(c);
	return ret;
}

/* v[i] = 1/v[i] for i < n (Montgomery form), pre: n BIGNUMs of scratch */
static int batch_inv(const struct kms_sakke *s, BIGNUM **v, BIGNUM **pre,
		     int n, BIGNUM *u, BIGNUM *t, BN_CTX *c)
{
	int i;

	if (!BN_copy(pre[0], v[0]))
		return 0;
	for (i = 1; i < n; i++)
		if (!fmul(pre[i], pre[i - 1], v[i], s, c))
			return 0;
	if (!finv_m(u, pre[n - 1], 1, s, c))
		return 0;
	for (i = n - 1; i > 0; i--)
		if (!fmul(t, u, pre[i - 1], s, c) || !fmul(u, u, v[i], s, c) ||
		    !BN_copy(v[i], t))
			return 0;
	return BN_copy(v[0], u) != NULL;
}

/* w = < K, Q > from K's lines, Q = (qx0, qy0) plain */
static int eval_lines(const struct kms_sakke *s,
		      const struct kms_sakke_rskp *k, const BIGNUM *qx0,
		      const BIGNUM *qy0, BIGNUM *w, BN_CTX *c)
{
	BIGNUM *qx, *qy, *va, *vb, *a, *t[4], *const *l = k->ln;
	int i, j, ret = KMS_ERR_CRYPTO;

	BN_CTX_start(c);
	qx = BN_CTX_get(c);
	qy = BN_CTX_get(c);
	va = BN_CTX_get(c);
	vb = BN_CTX_get(c);
	a = BN_CTX_get(c);
	for (i = 0; i < 4; i++)
		t[i] = BN_CTX_get(c);
	if (!t[3] || !BN_to_montgomery(qx, qx0, s->mont, c) ||
	    !BN_to_montgomery(qy, qy0, s->mont, c) ||
	    !BN_copy(va, s->one_m) || !BN_set_word(vb, 0))
		goto out;
	for (i = s->naf_len - 2; i >= 0; i--) {
		if (!fp2_sqr(va, vb, t, s, c))
			goto out;
		for (j = 0; j < 1 + (s->naf[i] != 0); j++, l += 2)
			if (!fmul(a, l[0], qx, s, c) || !fadd(a, a, l[1], s) ||
			    !fp2_mul(va, vb, a, qy, t, s, c))
				goto out;
	}
	ret = miller_final(s, va, vb, t, w, c);
out:
	BN_CTX_end(c);
	return ret;
}

int kms_sakke_rsk_prepare(const struct kms_sakke *s,
			  const uint8_t zs[KMS_SAKKE_POINT_LEN],
			  const uint8_t *id, size_t id_len,
			  const uint8_t rsk[KMS_SAKKE_POINT_LEN],
			  struct kms_sakke_rskp **out)
{
	uint8_t w_oct[KMS_SAKKE_GT_LEN];
	struct kms_sakke_rskp *k = NULL;
	BIGNUM **tmp = NULL, *zx, *zy, *kx, *ky, *w;
	struct ecx e;
	struct jac tp, acc;
	BN_CTX *c;
	int i, n, ret = KMS_ERR_NOMEM;

	if (!s || !zs || !rsk || !out || !id_ok(id, id_len))
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	/* a line per doubling, and per non-zero digit below the top one */
	for (n = s->naf_len - 1, i = 0; i < s->naf_len - 1; i++)
		n += s->naf[i] != 0;
	k = OPENSSL_zalloc(sizeof(*k));
	if (!k)
		goto out;
	k->ln = OPENSSL_zalloc(2 * n * sizeof(*k->ln));
	tmp = OPENSSL_zalloc(2 * n * sizeof(*tmp));
	if (!k->ln || !tmp)
		goto out;
	k->n = n;
	for (i = 0; i < 2 * n; i++) {
		k->ln[i] = BN_new();
		tmp[i] = BN_new();
		if (!k->ln[i] || !tmp[i])
			goto out;
	}
	for (i = 0; i < 2 * TBL; i++) {
		k->ttab[i] = BN_new();
		if (!k->ttab[i])
			goto out;
	}
	zx = BN_CTX_get(c);
	zy = BN_CTX_get(c);
	kx = BN_CTX_get(c);
	ky = BN_CTX_get(c);
	w = BN_CTX_get(c);
	if (!w || !ecx_get(&e, c) || !jac_get(&tp, c) || !jac_get(&acc, c))
		goto out;
	ret = point_decode_m(s, zs, zx, zy, c);
	if (!ret)
		ret = point_decode_m(s, rsk, kx, ky, c);
	if (ret)
		goto out;
	/* T = [b]P + Z_S, of order q */
	ret = id_point(s, id, id_len, zx, zy, &tp, &e, c);
	if (ret == KMS_ERR_INVAL)
		ret = KMS_ERR_AUTH;     /* b = -z: no RSK can exist */
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	switch (order_q(s, &tp, k->ttab, &acc, &e, c)) {
	case 1:
		break;
	case 0:
		ret = KMS_ERR_MALFORMED;
		/* fall through */
	default:
		goto out;
	}
	/* K's lines (K of order q), divided by their c2 */
	ret = rec_lines(s, kx, ky, k->ln, tmp, &e, c);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!batch_inv(s, tmp, tmp + n, n, e.sx, e.sy, c))
		goto out;
	for (i = 0; i < n; i++)
		if (!fmul(k->ln[2 * i], k->ln[2 * i], tmp[i], s, c) ||
		    !fmul(k->ln[2 * i + 1], k->ln[2 * i + 1], tmp[i], s, c))
			goto out;
	/* RFC 6508 section 6.1.2: < [b]P + Z_S, K > == g */
	if (!BN_from_montgomery(zx, k->ttab[0], s->mont, c) ||
	    !BN_from_montgomery(zy, k->ttab[1], s->mont, c))
		goto out;
	ret = eval_lines(s, k, zx, zy, w, c);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (BN_bn2binpad(w, w_oct, sizeof(w_oct)) < 0)
		goto out;
	if (CRYPTO_memcmp(w_oct, s->g, sizeof(w_oct))) {
		ret = KMS_ERR_AUTH;
		goto out;
	}
	memcpy(k->id, id, id_len);
	k->id_len = id_len;
	*out = k;
	k = NULL;
	ret = KMS_OK;
out:
	for (i = 0; tmp && i < 2 * n; i++)
		BN_clear_free(tmp[i]);
	OPENSSL_free(tmp);
	kms_sakke_rskp_free(k);
	BN_CTX_end(c);
	BN_CTX_free(c);
	return ret;
}

int kms_sakke_decap_prepared(const struct kms_sakke *s,
			     const struct kms_sakke_rskp *k,
			     const uint8_t enc[KMS_SAKKE_ENC_LEN],
			     uint8_t ssv[KMS_SAKKE_SSV_LEN])
{
	uint8_t w_oct[KMS_SAKKE_GT_LEN], out_ssv[KMS_SAKKE_SSV_LEN];
	BIGNUM *rx, *ry, *w, *r, *tab[2 * TBL];
	struct ecx e;
	struct jac rp, acc;
	BN_CTX *c;
	int i, eq = 0, pret, ret = KMS_ERR_NOMEM;

	if (!s || !k || !enc || !ssv)
		return KMS_ERR_INVAL;
	c = BN_CTX_new();
	if (!c)
		return KMS_ERR_NOMEM;
	BN_CTX_start(c);
	rx = BN_CTX_get(c);
	ry = BN_CTX_get(c);
	w = BN_CTX_get(c);
	r = BN_CTX_get(c);
	if (!r || !ecx_get(&e, c) || !jac_get(&rp, c) || !jac_get(&acc, c))
		goto out;
	ret = point_decode(s, enc, rx, ry, c);
	if (ret)
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (!BN_to_montgomery(rp.x, rx, s->mont, c) ||
	    !BN_to_montgomery(rp.y, ry, s->mont, c) ||
	    !BN_copy(rp.z, s->one_m))
		goto out;
	/* 2: w = < K_(b,S), R_(b,S) > = < R_(b,S), K_(b,S) > */
	pret = eval_lines(s, k, rx, ry, w, c);
	if (!pret) {
		if (BN_bn2binpad(w, w_oct, sizeof(w_oct)) < 0)
			goto out;
		/* 3: SSV = H XOR HashToIntegerRange(w, 2^n) */
		ret = derive_mask(w_oct, out_ssv);
		if (ret)
			goto out;
		for (i = 0; i < KMS_SAKKE_SSV_LEN; i++)
			out_ssv[i] ^= enc[KMS_SAKKE_POINT_LEN + i];
		/* 4, 5: r = HashToIntegerRange(SSV || b, q); [r]T == R */
		ret = derive_r(s, out_ssv, k->id, k->id_len, r, c);
		if (ret)
			goto out;
		ret = KMS_ERR_CRYPTO;
		if (!BN_is_zero(r)) {
			if (!mul_ct(s, k->ttab, r, &acc, &e, c))
				goto out;
			eq = jac_eq_aff(s, &acc, rp.x, rp.y, e.t, c);
			if (eq < 0)
				goto out;
		}
		if (eq) {
			memcpy(ssv, out_ssv, sizeof(out_ssv));
			ret = KMS_OK;
			goto out;
		}
	}
	/* as kms_sakke_decap(): KMS_ERR_MALFORMED if R has not order q */
	for (i = 0; i < 2 * TBL; i++) {
		tab[i] = BN_CTX_get(c);
		if (!tab[i])
			goto out;
	}
	switch (order_q(s, &rp, tab, &acc, &e, c)) {
	case 1:
		ret = pret ? pret : KMS_ERR_AUTH;
		break;
	case 0:
		ret = KMS_ERR_MALFORMED;
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
	ret = point_decode(s, a, ax, ay, c);
	if (!ret)
		ret = point_decode(s, b, bx, by, c);
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
