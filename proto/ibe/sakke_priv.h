/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to sakke.c and sakke_ec.c (SAKKE, RFC 6508): struct kms_sakke,
 * the F_p arithmetic in Montgomery form (inline), the E(F_p) point types
 * and the helpers the two files share.
 */
#ifndef KMS_SAKKE_PRIV_H
#define KMS_SAKKE_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bn.h>

#include "kms_sakke.h"

#define FP_WORDS ((KMS_SAKKE_FP_LEN * 8 + BN_BITS2 - 1) / BN_BITS2)
#define Q_BITS 1022                     /* checked in kms_sakke_new() */
#define WIN 5                           /* window of the secret scalars */
#define TBL (1 << (WIN - 1))            /* [1]T, [3]T, ..., [2 TBL - 1]T */
#define NDIG ((Q_BITS + WIN - 1) / WIN) /* digits of a scalar <= q */
#define WNAF 6                          /* public scalars: same table */
#define CH (13 * WIN)                   /* bits of a comb tooth for P */
#define NCH ((Q_BITS + 2 + CH - 1) / CH) /* tables of [2^(CH j)]P */

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
	int naf_len;            /* q - 1 in NAF, low digit first */
	int8_t naf[KMS_SAKKE_FP_LEN * 8 + 1];
};

/* ------------------------------------------------------ F_p (Montgomery) */

static inline int fmul(BIGNUM *r, const BIGNUM *a, const BIGNUM *b,
		       const struct kms_sakke *s, BN_CTX *c)
{
	return BN_mod_mul_montgomery(r, a, b, s->mont, c);
}

static inline int fsqr(BIGNUM *r, const BIGNUM *a,
		       const struct kms_sakke *s, BN_CTX *c)
{
	return BN_mod_mul_montgomery(r, a, a, s->mont, c);
}

static inline int fadd(BIGNUM *r, const BIGNUM *a, const BIGNUM *b,
		       const struct kms_sakke *s)
{
	return BN_mod_add_quick(r, a, b, s->p);
}

/*
 * r = a - b as a + (p - b): no branch on the values (BN_mod_sub_quick()
 * adds p back only when the difference is negative). @u: scratch, not
 * r, a or b.
 */
static inline int fsub(BIGNUM *r, const BIGNUM *a, const BIGNUM *b,
		       BIGNUM *u, const struct kms_sakke *s)
{
	return BN_usub(u, s->p, b) && BN_mod_add_quick(r, a, u, s->p);
}

/* (va + i vb) *= (lr + i li), Karatsuba: three multiplications. */
static inline int fp2_mul(BIGNUM *va, BIGNUM *vb, const BIGNUM *lr,
			  const BIGNUM *li, BIGNUM *t[4],
			  const struct kms_sakke *s, BN_CTX *c)
{
	return fmul(t[0], va, lr, s, c) && fmul(t[1], vb, li, s, c) &&
	       fadd(t[2], va, vb, s) && fadd(t[3], lr, li, s) &&
	       fmul(t[2], t[2], t[3], s, c) &&
	       fsub(va, t[0], t[1], t[3], s) &&
	       fsub(t[2], t[2], t[0], t[3], s) &&
	       fsub(vb, t[2], t[1], t[3], s);
}

/* (va + i vb)^2 = (va + vb)(va - vb) + 2 i va vb */
static inline int fp2_sqr(BIGNUM *va, BIGNUM *vb, BIGNUM *t[4],
			  const struct kms_sakke *s, BN_CTX *c)
{
	return fadd(t[0], va, vb, s) && fsub(t[1], va, vb, t[3], s) &&
	       fmul(t[2], va, vb, s, c) && fmul(va, t[0], t[1], s, c) &&
	       fadd(vb, t[2], t[2], s);
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

/* ------------------------------------------------ shared (sakke.c) */

int sakke_id_ok(const uint8_t *id, size_t id_len);
int sakke_point_decode(const struct kms_sakke *s,
		       const uint8_t in[KMS_SAKKE_POINT_LEN], BIGNUM *x,
		       BIGNUM *y, BN_CTX *c);
int sakke_point_decode_m(const struct kms_sakke *s,
			 const uint8_t in[KMS_SAKKE_POINT_LEN], BIGNUM *x,
			 BIGNUM *y, BN_CTX *c);
int sakke_derive_r(const struct kms_sakke *s,
		   const uint8_t ssv[KMS_SAKKE_SSV_LEN], const uint8_t *id,
		   size_t id_len, BIGNUM *r, BN_CTX *c);
int sakke_derive_mask(const uint8_t w[KMS_SAKKE_GT_LEN],
		      uint8_t mask[KMS_SAKKE_SSV_LEN]);
int sakke_miller_final(const struct kms_sakke *s, BIGNUM *va, BIGNUM *vb,
		       BIGNUM *t[4], BIGNUM *w, BN_CTX *c);

/* ---------------------------------------------- shared (sakke_ec.c) */

int sakke_bn_reserve(BIGNUM *a);
int sakke_wnaf(BIGNUM *k, int w, int8_t *d, int max);
int sakke_jac_get(struct jac *j, BN_CTX *c);
int sakke_ecx_get(struct ecx *e, BN_CTX *c);
int sakke_jac_affine(const struct kms_sakke *s, const struct jac *j,
		     BIGNUM *x, BIGNUM *y, int ct, BN_CTX *c);
int sakke_jac_encode(const struct kms_sakke *s, const struct jac *j,
		     uint8_t out[KMS_SAKKE_POINT_LEN], BN_CTX *c);
int sakke_jac_eq_aff(const struct kms_sakke *s, const struct jac *j,
		     const BIGNUM *x, const BIGNUM *y, BIGNUM **t, BN_CTX *c);
int sakke_id_point(const struct kms_sakke *s, const uint8_t *id,
		   size_t id_len, const BIGNUM *zx, const BIGNUM *zy,
		   struct jac *out, struct ecx *e, BN_CTX *c);
int sakke_mul_id(const struct kms_sakke *s, const struct jac *tp,
		 const BIGNUM *k, struct jac *acc, struct ecx *e, BN_CTX *c);
int sakke_ptab_setup(struct kms_sakke *s, const BIGNUM *px,
		     const BIGNUM *py, BN_CTX *c);
int sakke_mul_base(const struct kms_sakke *s, const BIGNUM *k,
		   uint8_t out[KMS_SAKKE_POINT_LEN], BN_CTX *c);

#endif /* KMS_SAKKE_PRIV_H */
