/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_sakke.h
 * @brief SAKKE (RFC 6508) with parameter set 1 of RFC 6509.
 *
 * Curve E: y^2 = x^3 - 3x over F_p (p 1024 bits, p = 3 mod 4), P of prime
 * order q = (p + 1) / 4, Hash = SHA-256, n = 128. The pairing is the
 * Tate-Lichtenbaum pairing of RFC 6508 section 3.2 with the distortion map
 * (x, y) -> (-x, iy); its values live in PF_p = (F_p^2)^* / (F_p)^* and
 * are represented, as RFC 6508 section 2.1 says, by one element of F_p:
 * the class of a + ib is b / a.
 *
 * Points are encoded 0x04 || x || y, each coordinate 128 octets big-endian
 * (RFC 6508 section 4). Every point input is checked: length is fixed by
 * the array type, prefix 0x04, coordinates < p, on E, y != 0 (no 2-torsion).
 * Identifiers are octet strings of 1 to KMS_SAKKE_ID_MAX octets, read as a
 * big-endian integer b where the RFC needs an integer.
 *
 * One struct kms_sakke is immutable once built and may be shared between
 * threads; every call uses its own BN_CTX. All functions return KMS_OK or a
 * negative enum kms_err (kms_err.h) and write their outputs only on
 * success. Secrets (z, RSKs as scalars, SSV, r, g^r, masks) are wiped.
 */
#ifndef KMS_SAKKE_H
#define KMS_SAKKE_H

#include <stddef.h>
#include <stdint.h>

#define KMS_SAKKE_SSV_LEN    16   /**< n = 128 bits */
#define KMS_SAKKE_FP_LEN     128  /**< octets of p */
#define KMS_SAKKE_POINT_LEN  257  /**< 0x04 || x || y */
/** Encapsulated data: R_(b,S) || H */
#define KMS_SAKKE_ENC_LEN    (KMS_SAKKE_POINT_LEN + KMS_SAKKE_SSV_LEN)
#define KMS_SAKKE_Z_LEN      128  /**< master secret z, big-endian, [2, q-1] */
/**
 * A pairing value: an element of PF_p[q] in the representation of RFC 6508
 * section 2.1, one element of F_p (128 octets, big-endian). This is how
 * RFC 6509 publishes g; it is also the octet string hashed as w (6.2.2).
 */
#define KMS_SAKKE_GT_LEN     KMS_SAKKE_FP_LEN
#define KMS_SAKKE_ID_MAX     1024 /**< longest identifier accepted */

struct kms_sakke;   /* opaque: parameter set 1, precomputed */

/**
 * Build the parameter set 1 context (p, q, P, g, the curve group and the
 * Montgomery context). @return KMS_OK, KMS_ERR_NOMEM or KMS_ERR_CRYPTO.
 */
int kms_sakke_new(struct kms_sakke **out);

/** Free a context from kms_sakke_new(); NULL is ignored. */
void kms_sakke_free(struct kms_sakke *s);

/**
 * KMS public key Z_S = [z]P (RFC 6508 section 2.2).
 * @return KMS_OK; KMS_ERR_INVAL if z is not in [2, q-1]; KMS_ERR_NOMEM or
 *         KMS_ERR_CRYPTO.
 */
int kms_sakke_public(const struct kms_sakke *s,
		     const uint8_t z[KMS_SAKKE_Z_LEN],
		     uint8_t zs[KMS_SAKKE_POINT_LEN]);

/**
 * Receiver Secret Key K_(b,S) = [(b + z)^-1]P for identifier @p id
 * (RFC 6508 section 6.1.1).
 * @return KMS_OK; KMS_ERR_INVAL if z is not in [2, q-1], the identifier is
 *         empty or too long, or b + z = 0 mod q (the RFC's "choose a new
 *         master secret" case); KMS_ERR_NOMEM or KMS_ERR_CRYPTO.
 */
int kms_sakke_rsk(const struct kms_sakke *s, const uint8_t z[KMS_SAKKE_Z_LEN],
		  const uint8_t *id, size_t id_len,
		  uint8_t rsk[KMS_SAKKE_POINT_LEN]);

/**
 * Receiver's check of its RSK (RFC 6508 section 6.1.2):
 * < [b]P + Z_S, K_(b,S) > == g. The RSK must also have order q.
 * @return KMS_OK if it holds; KMS_ERR_AUTH if not; KMS_ERR_MALFORMED for a
 *         bad point; KMS_ERR_INVAL for a bad identifier; KMS_ERR_NOMEM or
 *         KMS_ERR_CRYPTO.
 */
int kms_sakke_rsk_check(const struct kms_sakke *s,
			const uint8_t zs[KMS_SAKKE_POINT_LEN],
			const uint8_t *id, size_t id_len,
			const uint8_t rsk[KMS_SAKKE_POINT_LEN]);

/**
 * Sender (RFC 6508 section 6.2.1): encapsulate @p ssv to identifier @p id
 * under KMS public key @p zs. Deterministic given the SSV, as in the RFC:
 * r = HashToIntegerRange(SSV || b, q), R_(b,S) = [r]([b]P + Z_S),
 * H = SSV XOR HashToIntegerRange(g^r, 2^n); @p enc = R_(b,S) || H.
 * The caller draws the SSV from a good random source.
 * @return KMS_OK; KMS_ERR_MALFORMED for a bad @p zs; KMS_ERR_INVAL for a bad
 *         identifier (or the negligible r = 0 / [b]P + Z_S = O cases);
 *         KMS_ERR_NOMEM or KMS_ERR_CRYPTO.
 */
int kms_sakke_encap(const struct kms_sakke *s,
		    const uint8_t zs[KMS_SAKKE_POINT_LEN],
		    const uint8_t *id, size_t id_len,
		    const uint8_t ssv[KMS_SAKKE_SSV_LEN],
		    uint8_t enc[KMS_SAKKE_ENC_LEN]);

/**
 * Receiver (RFC 6508 section 6.2.2): w = < R_(b,S), K_(b,S) >,
 * SSV = H XOR HashToIntegerRange(w, 2^n), then re-derive r and require
 * [r]([b]P + Z_S) == R_(b,S).
 * @return KMS_OK; KMS_ERR_MALFORMED if R_(b,S) is not an encoded point of
 *         order q, or @p zs / @p rsk is not a valid point; KMS_ERR_AUTH if
 *         the re-derived R differs (wrong identity, key or tampered H);
 *         KMS_ERR_INVAL for a bad identifier; KMS_ERR_NOMEM or
 *         KMS_ERR_CRYPTO.
 */
int kms_sakke_decap(const struct kms_sakke *s,
		    const uint8_t zs[KMS_SAKKE_POINT_LEN],
		    const uint8_t *id, size_t id_len,
		    const uint8_t rsk[KMS_SAKKE_POINT_LEN],
		    const uint8_t enc[KMS_SAKKE_ENC_LEN],
		    uint8_t ssv[KMS_SAKKE_SSV_LEN]);

/**
 * The pairing < A, B > of RFC 6508 section 3.2, exposed for tests and
 * benchmarks. The Miller loop runs on @p a, which must have order q
 * (checked for free: the loop ends on [q-1]A, which must be -A). @p b only
 * needs to be a valid point; a component of order 2 or 4 in it does not
 * change the value.
 * @return KMS_OK; KMS_ERR_MALFORMED for a bad point; KMS_ERR_NOMEM or
 *         KMS_ERR_CRYPTO.
 */
int kms_sakke_pair(const struct kms_sakke *s,
		   const uint8_t a[KMS_SAKKE_POINT_LEN],
		   const uint8_t b[KMS_SAKKE_POINT_LEN],
		   uint8_t out[KMS_SAKKE_GT_LEN]);

/**
 * r = HashToIntegerRange(SSV || b, q, SHA-256) (RFC 6508 sections 5.1 and
 * 6.2.1 step 2), 128 octets big-endian; exposed so tests can check it
 * against RFC 6508 Appendix A. r is a secret as long as the SSV is.
 * @return KMS_OK; KMS_ERR_INVAL for a bad identifier; KMS_ERR_NOMEM or
 *         KMS_ERR_CRYPTO.
 */
int kms_sakke_derive_r(const struct kms_sakke *s,
		       const uint8_t ssv[KMS_SAKKE_SSV_LEN],
		       const uint8_t *id, size_t id_len,
		       uint8_t r[KMS_SAKKE_Z_LEN]);

/** The group order q, big-endian (the KGC draws z in [2, q-1]). */
int kms_sakke_order(const struct kms_sakke *s, uint8_t q[KMS_SAKKE_Z_LEN]);

/**
 * A receiver's prepared key (K_(b,S) with its identifier and Z_S): the
 * Miller-loop lines of the RSK and the table of [b]P + Z_S, for
 * kms_sakke_decap_prepared(), which costs well under half a
 * kms_sakke_decap(). About 0.5 MB; holds the secret key (wiped on free).
 * Immutable once built: may be shared between threads.
 */
struct kms_sakke_rskp;

/**
 * Prepare @p rsk for identifier @p id under KMS public key @p zs, checking
 * it as kms_sakke_rsk_check() does (RFC 6508 section 6.1.2).
 * @return KMS_OK; KMS_ERR_MALFORMED if @p zs or @p rsk is not an encoded
 *         point, or [b]P + Z_S or the RSK has not order q; KMS_ERR_AUTH if
 *         the RSK check fails; KMS_ERR_INVAL for a bad identifier or
 *         argument; KMS_ERR_NOMEM or KMS_ERR_CRYPTO.
 */
int kms_sakke_rsk_prepare(const struct kms_sakke *s,
			  const uint8_t zs[KMS_SAKKE_POINT_LEN],
			  const uint8_t *id, size_t id_len,
			  const uint8_t rsk[KMS_SAKKE_POINT_LEN],
			  struct kms_sakke_rskp **out);

/** Free (and wipe) a prepared key; NULL is ignored. */
void kms_sakke_rskp_free(struct kms_sakke_rskp *k);

/**
 * kms_sakke_decap() with the prepared key's RSK, identifier and Z_S: the
 * same SSV and the same errors for the same inputs.
 */
int kms_sakke_decap_prepared(const struct kms_sakke *s,
			     const struct kms_sakke_rskp *k,
			     const uint8_t enc[KMS_SAKKE_ENC_LEN],
			     uint8_t ssv[KMS_SAKKE_SSV_LEN]);

#endif /* KMS_SAKKE_H */
