// SPDX-License-Identifier: Apache-2.0
/*
 * SAKKE (RFC 6508), the E(F_p) part: point arithmetic, P's fixed-base
 * comb tables, and the prepared receiver key (struct kms_sakke_rskp,
 * kms_sakke_rsk_prepare(), kms_sakke_decap_prepared()). The rest of
 * SAKKE is in sakke.c.
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
 *
 * Every call builds its own BN_CTX and frees it on exit (see sakke.c).
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>

#include "kms_err.h"
#include "kms_sakke.h"
#include "sakke_priv.h"

/* ------------------------------------------------------------ helpers */

/* Make sure BN_consttime_swap() may touch FP_WORDS words of @a. */
int sakke_bn_reserve(BIGNUM *a)
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

	return a && sakke_bn_reserve(a) ? a : NULL;
}

/* -------------------------- E(F_p), Jacobian coordinates (sakke_priv.h) */

int sakke_jac_get(struct jac *j, BN_CTX *c)
{
	j->x = bn_get(c);
	j->y = bn_get(c);
	j->z = bn_get(c);
	return j->z != NULL;
}

int sakke_ecx_get(struct ecx *e, BN_CTX *c)
{
	int i;

	for (i = 0; i < 5; i++)
		e->t[i] = bn_get(c);
	e->sx = bn_get(c);
	e->sy = bn_get(c);
	e->tmp = bn_get(c);
	return sakke_jac_get(&e->sv, c) && e->tmp;
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
int sakke_jac_affine(const struct kms_sakke *s, const struct jac *j,
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
int sakke_jac_encode(const struct kms_sakke *s, const struct jac *j,
		     uint8_t out[KMS_SAKKE_POINT_LEN], BN_CTX *c)
{
	BIGNUM *x, *y;
	int ret = KMS_ERR_CRYPTO;

	BN_CTX_start(c);
	x = BN_CTX_get(c);
	y = BN_CTX_get(c);
	if (!y || BN_is_zero(j->z) || !sakke_jac_affine(s, j, x, y, 1, c))
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
		if (!sakke_jac_get(&j[i], c))
			goto out;
	if (!sakke_jac_get(&d, c) || !jac_cpy(&d, tp) ||
	    !jdbl(&d, e->t, s, c) || !fsqr(e->sx, d.z, s, c) ||
	    !fmul(e->sy, e->sx, d.z, s, c) ||
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
int sakke_wnaf(BIGNUM *k, int w, int8_t *d, int max)
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
	if (!kk || !BN_copy(kk, b) || sakke_wnaf(kk, WNAF, d, sizeof(d)) < 0)
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
	n = sakke_wnaf(kk, WNAF, d, sizeof(d));
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
int sakke_id_point(const struct kms_sakke *s, const uint8_t *id,
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
int sakke_mul_id(const struct kms_sakke *s, const struct jac *tp,
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

/* j == (x, y), affine in Montgomery form: X = x Z^2, Y = y Z^3, Z != 0 */
int sakke_jac_eq_aff(const struct kms_sakke *s, const struct jac *j,
		     const BIGNUM *x, const BIGNUM *y, BIGNUM **t, BN_CTX *c)
{
	if (BN_is_zero(j->z))
		return 0;
	if (!fsqr(t[0], j->z, s, c) || !fmul(t[1], x, t[0], s, c) ||
	    !fmul(t[0], t[0], j->z, s, c) || !fmul(t[2], y, t[0], s, c))
		return -1;
	return !BN_cmp(t[1], j->x) && !BN_cmp(t[2], j->y);
}

/* ------------------------------------------------ fixed-base combs for P */

/* P's tables of odd multiples; P = (px, py) plain */
int sakke_ptab_setup(struct kms_sakke *s, const BIGNUM *px,
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
	if (!sakke_ecx_get(&e, c) || !sakke_jac_get(&pj, c))
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

/* [k]P into @out, k secret in [1, q-1] */
int sakke_mul_base(const struct kms_sakke *s, const BIGNUM *k,
		   uint8_t out[KMS_SAKKE_POINT_LEN], BN_CTX *c)
{
	struct ecx e;
	struct jac acc;
	int ret = KMS_ERR_NOMEM;

	BN_CTX_start(c);
	if (!sakke_ecx_get(&e, c) || !sakke_jac_get(&acc, c))
		goto out;
	ret = KMS_ERR_CRYPTO;
	if (comb_ct(s, k, &acc, &e, c))
		ret = sakke_jac_encode(s, &acc, out, c);
out:
	BN_CTX_end(c);
	return ret;
}

/* ------------------------------------------------ prepared receiver key */

/*
 * < R, K > = < K, R > (the pairing is symmetric on E(F_p)[q]), and the
 * Miller loop on the fixed K leaves at each step a line c1 x + c0 + i c2 y
 * to evaluate at (-Rx, iRy): kept divided by c2 (an F_p factor, which dies
 * in PF_p), a line costs one multiplication to evaluate, and a doubling
 * step 6 multiplications instead of 17. That loop no longer checks R's
 * order: R = [r]T holds only for R of order q, T = [b]P + Z_S being of
 * order q (checked once), and a failed R = [r]T looks at R's order to tell
 * KMS_ERR_MALFORMED from KMS_ERR_AUTH, as kms_sakke_decap() does.
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
	if (!sakke_jac_get(&m, c) || !BN_copy(m.x, kx) || !BN_copy(m.y, ky) ||
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
	switch (sakke_jac_eq_aff(s, &m, kx, kyn, t, c)) {
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
	ret = sakke_miller_final(s, va, vb, t, w, c);
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

	if (!s || !zs || !rsk || !out || !sakke_id_ok(id, id_len))
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
	if (!w || !sakke_ecx_get(&e, c) || !sakke_jac_get(&tp, c) ||
	    !sakke_jac_get(&acc, c))
		goto out;
	ret = sakke_point_decode_m(s, zs, zx, zy, c);
	if (!ret)
		ret = sakke_point_decode_m(s, rsk, kx, ky, c);
	if (ret)
		goto out;
	/* T = [b]P + Z_S, of order q */
	ret = sakke_id_point(s, id, id_len, zx, zy, &tp, &e, c);
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
	if (!r || !sakke_ecx_get(&e, c) || !sakke_jac_get(&rp, c) ||
	    !sakke_jac_get(&acc, c))
		goto out;
	ret = sakke_point_decode(s, enc, rx, ry, c);
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
		ret = sakke_derive_mask(w_oct, out_ssv);
		if (ret)
			goto out;
		for (i = 0; i < KMS_SAKKE_SSV_LEN; i++)
			out_ssv[i] ^= enc[KMS_SAKKE_POINT_LEN + i];
		/* 4, 5: r = HashToIntegerRange(SSV || b, q); [r]T == R */
		ret = sakke_derive_r(s, out_ssv, k->id, k->id_len, r, c);
		if (ret)
			goto out;
		ret = KMS_ERR_CRYPTO;
		if (!BN_is_zero(r)) {
			if (!mul_ct(s, k->ttab, r, &acc, &e, c))
				goto out;
			eq = sakke_jac_eq_aff(s, &acc, rp.x, rp.y, e.t, c);
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
