/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_eccsi.h
 * @brief ECCSI (RFC 6507) identity-based signatures on NIST P-256, SHA-256.
 *
 * Parameters are those of RFC 6507 section 4.1 with n = 256, N = 32: the
 * curve P-256 (prime p, order q, base point G) and hash = SHA-256.
 *
 * Roles (RFC 6507 section 2):
 *  - the KMS holds the KMS Secret Authentication Key KSAK and publishes the
 *    KMS Public Authentication Key KPAK = [KSAK]G;
 *  - for each identifier ID it issues a Secret Signing Key SSK and a Public
 *    Validation Token PVT (kms_eccsi_issue);
 *  - the user checks the pair once on receipt (kms_eccsi_validate), then
 *    signs (kms_eccsi_sign); anyone holding KPAK verifies (kms_eccsi_verify).
 *
 * Encodings: a point is 0x04 || x || y (65 octets, uncompressed, never the
 * point at infinity); a scalar is 32 octets big-endian. A signature is
 * r || s || PVT (129 octets), r the 32-octet x-coordinate of J = [j]G.
 *
 * HS = SHA-256(G || KPAK || ID || PVT) with every point in the 65-octet
 * form above; HE = SHA-256(HS || r || M).
 *
 * Identifiers are opaque octet strings of 1 to KMS_ECCSI_ID_MAX octets
 * (for MIKEY-SAKKE the UID; the RFC's example is "2011-02\0tel:...\0").
 *
 * Every function returns KMS_OK or a negative enum kms_err (kms_err.h):
 *  KMS_ERR_INVAL      a NULL pointer, a bad identifier length, or a caller
 *                     secret (KSAK, SSK, v, j) that is not in [1, q-1];
 *  KMS_ERR_MALFORMED  a point that is not 0x04 || x || y on the curve, or a
 *                     signature whose r is not in [1, p-1] or whose s is
 *                     not in [1, q-1];
 *  KMS_ERR_AUTH       a key or signature check failed;
 *  KMS_ERR_NOMEM      an allocation failed;
 *  KMS_ERR_CRYPTO     any other OpenSSL failure (including the random
 *                     generator).
 * Out-parameters are written only on success. Secrets the library computes
 * (v, j, intermediate scalars) are wiped before return; the caller owns and
 * wipes the secrets it passes in or receives (KSAK, SSK).
 *
 * A struct kms_eccsi is immutable after kms_eccsi_new() and may be shared
 * by any number of threads; each call uses its own BN_CTX.
 */
#ifndef KMS_ECCSI_H
#define KMS_ECCSI_H

#include <stddef.h>
#include <stdint.h>

#define KMS_ECCSI_SCALAR_LEN 32
#define KMS_ECCSI_POINT_LEN 65
/** r || s || PVT */
#define KMS_ECCSI_SIG_LEN (2 * KMS_ECCSI_SCALAR_LEN + KMS_ECCSI_POINT_LEN)
/** Longest identifier accepted, in octets. */
#define KMS_ECCSI_ID_MAX 1024

/** Opaque: the P-256 group (with OpenSSL's built-in precomputed multiples
 *  of G), q, p, and the encoding of G. */
struct kms_eccsi;

/**
 * Create the parameter context.
 * @param out receives the context (only on success); free it with
 *            kms_eccsi_free().
 * @return KMS_OK, KMS_ERR_INVAL, KMS_ERR_NOMEM or KMS_ERR_CRYPTO.
 */
int kms_eccsi_new(struct kms_eccsi **out);

/** Free a context from kms_eccsi_new(); NULL is a no-op. */
void kms_eccsi_free(struct kms_eccsi *e);

/**
 * KPAK = [KSAK]G (RFC 6507 section 5.1.1, the KMS's public key).
 * @param ksak the KMS secret, in [1, q-1].
 * @param kpak receives the 65-octet point.
 * @return KMS_OK, KMS_ERR_INVAL, KMS_ERR_NOMEM or KMS_ERR_CRYPTO.
 */
int kms_eccsi_kpak(const struct kms_eccsi *e,
		   const uint8_t ksak[KMS_ECCSI_SCALAR_LEN],
		   uint8_t kpak[KMS_ECCSI_POINT_LEN]);

/**
 * KMS side (RFC 6507 section 5.1.1): issue the SSK and PVT of @p id.
 *
 * PVT = [v]G, HS = hash(G || KPAK || ID || PVT), SSK = KSAK + HS * v mod q.
 * With a random v a zero HS or SSK (mod q) restarts with a fresh v, as the
 * RFC allows; with a given v it is refused (KMS_ERR_INVAL).
 *
 * @param ksak the KMS secret, in [1, q-1].
 * @param kpak the KMS public key; must equal [KSAK]G (KMS_ERR_INVAL if not,
 *             KMS_ERR_MALFORMED if it is not a valid point).
 * @param id   the identifier, 1 to KMS_ECCSI_ID_MAX octets.
 * @param v    NULL: v is drawn from RAND_priv_bytes (the normal case);
 *             otherwise a 32-octet v in [1, q-1] (tests use RFC 6507
 *             Appendix A's). v is wiped before return.
 * @param ssk  receives the Secret Signing Key (secret: caller wipes it).
 * @param pvt  receives the Public Validation Token.
 * @return KMS_OK, KMS_ERR_INVAL, KMS_ERR_MALFORMED, KMS_ERR_NOMEM or
 *         KMS_ERR_CRYPTO.
 */
int kms_eccsi_issue(const struct kms_eccsi *e,
		    const uint8_t ksak[KMS_ECCSI_SCALAR_LEN],
		    const uint8_t kpak[KMS_ECCSI_POINT_LEN], const uint8_t *id,
		    size_t id_len, const uint8_t *v,
		    uint8_t ssk[KMS_ECCSI_SCALAR_LEN],
		    uint8_t pvt[KMS_ECCSI_POINT_LEN]);

/**
 * User side (RFC 6507 section 5.1.2): check an (SSK, PVT) pair received
 * for @p id before using it: PVT must be a valid point, and
 * [SSK]G == [HS]PVT + KPAK.
 * @return KMS_OK; KMS_ERR_AUTH if the equation does not hold or SSK is not
 *         in [1, q-1] (or HS is 0 mod q); KMS_ERR_MALFORMED for a bad KPAK
 *         or PVT; KMS_ERR_INVAL, KMS_ERR_NOMEM, KMS_ERR_CRYPTO.
 */
int kms_eccsi_validate(const struct kms_eccsi *e,
		       const uint8_t kpak[KMS_ECCSI_POINT_LEN],
		       const uint8_t *id, size_t id_len,
		       const uint8_t ssk[KMS_ECCSI_SCALAR_LEN],
		       const uint8_t pvt[KMS_ECCSI_POINT_LEN]);

/**
 * Sign @p msg (RFC 6507 section 5.2.1) as @p id.
 *
 * J = [j]G, r = Jx (32 octets, not reduced mod q), HE = hash(HS || r || M),
 * s' = (HE + r * SSK)^-1 * j mod q; s = s' (the RFC's "s = q - s' if s'
 * does not fit in N octets" never applies on P-256, as q < 2^256).
 * With a random j a zero HE + r * SSK (mod q) or a zero Jx restarts with a
 * fresh j; with a given j it is refused (KMS_ERR_INVAL).
 *
 * The (SSK, PVT) pair is assumed to have passed kms_eccsi_validate() once;
 * it is not checked again here.
 *
 * @param j   NULL: j is drawn from RAND_priv_bytes (the normal case, and
 *            the only safe one: a j used twice reveals the SSK); otherwise
 *            a 32-octet j in [1, q-1] (tests use RFC 6507 Appendix A's).
 * @param sig receives r || s || PVT.
 * @return KMS_OK, KMS_ERR_INVAL, KMS_ERR_MALFORMED (KPAK or PVT),
 *         KMS_ERR_NOMEM or KMS_ERR_CRYPTO.
 */
int kms_eccsi_sign(const struct kms_eccsi *e,
		   const uint8_t kpak[KMS_ECCSI_POINT_LEN], const uint8_t *id,
		   size_t id_len, const uint8_t ssk[KMS_ECCSI_SCALAR_LEN],
		   const uint8_t pvt[KMS_ECCSI_POINT_LEN], const uint8_t *msg,
		   size_t msg_len, const uint8_t *j,
		   uint8_t sig[KMS_ECCSI_SIG_LEN]);

/**
 * Verify @p sig over @p msg by @p id (RFC 6507 section 5.2.2):
 * Y = [HS]PVT + KPAK, J = [s]([HE]G + [r]Y), accept iff Jx == r and
 * Jx != 0. @p msg may be NULL when @p msg_len is 0.
 *
 * Like ECDSA, ECCSI signatures are malleable: if r || s || PVT verifies,
 * so does r || (q - s) || PVT (it gives -J, of the same x-coordinate), and
 * the RFC accepts both. Never use a signature's bytes as a unique name.
 * @return KMS_OK if the signature is valid; KMS_ERR_AUTH if it is not;
 *         KMS_ERR_MALFORMED if r, s or PVT (or KPAK) is badly encoded;
 *         KMS_ERR_INVAL, KMS_ERR_NOMEM, KMS_ERR_CRYPTO.
 */
int kms_eccsi_verify(const struct kms_eccsi *e,
		     const uint8_t kpak[KMS_ECCSI_POINT_LEN],
		     const uint8_t *id, size_t id_len, const uint8_t *msg,
		     size_t msg_len, const uint8_t sig[KMS_ECCSI_SIG_LEN]);

#endif /* KMS_ECCSI_H */
