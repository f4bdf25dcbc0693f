// SPDX-License-Identifier: Apache-2.0
/*
 * MIKEY-IBAKE deferred delivery, the three roles' state machines
 * (kms_ibake.h; wire format in docs/PROTOCOL.md part II).
 *
 * Depositing (A <-> mailbox MB), after the seed (clause 7.6.2.5):
 *   I1  A -> MB  ID-A, ID-B, period, IBE_B(ID-A | ID-B | xP)
 *   R1  MB -> A  ID-MB, IBE_A(ID-MB | yP)      MB cannot open I1: not B
 *   I2  A -> MB  IBE_MB(ID-A | ID-MB | xP | yP), IBE_B(ID-A | aP)
 *                MB: yP proves that A opened R1, so A holds A's RSK
 *   R2  MB -> A  IBE_A(ID-A | xP)              xP proves MB opened I2
 *   then both hold xyP: session keys = HKDF(xyP, transcript of I1 R1 I2)
 *   DEPOSIT  A -> MB  sealed: ECCSI_A(sig) | message under the key of aP
 *   DEPOSIT_ACK MB -> A  sealed: msg id, expiry   (after the durable commit)
 * Fetching (B <-> MB), the same mutual authentication:
 *   F1  B -> MB  ID-B, period, IBE_MB(ID-B | ID-MB | xP)
 *   F2  MB -> B  IBE_B(ID-MB | ID-B | xP | yP)  xP proves MB
 *   F3  B -> MB  sealed under HKDF(xyP, F1 F2): yP proves B
 *   MSG* / END   MB -> B sealed; DELETE or NEXT from B after each MSG.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "kms_err.h"
#include "kms_ibake.h"
#include "kms_token.h"

#define SIG_LABEL "KMS1-IBAKE-SIG"
#define MSG_LABEL "KMS1-IBAKE-MSG"
#define KB_LABEL "KMS1-IBAKE-KB"
#define SK_LABEL "KMS1-IBAKE-SK"

enum role { ROLE_NONE, ROLE_A, ROLE_MB_DEP, ROLE_MB_FETCH, ROLE_B };

enum state {
	ST_START,
	ST_A_SENT_I1, ST_A_SENT_I2, ST_A_AUTHED, ST_A_DEPOSITED, ST_A_DONE,
	ST_MB_SENT_R1, ST_MB_SENT_R2, ST_MB_DONE,
	ST_MB_SENT_F2, ST_MB_SENT_MSG, ST_MB_SENT_END,
	ST_B_SENT_F1, ST_B_SENT_F3, ST_B_GOT_MSG, ST_B_DONE,
	ST_FAILED,
};

struct kms_ibake {
	struct kms_ibake_party me;
	enum role role;
	enum state st;
	uint16_t status;
	/* The peer and the other identities of this session. */
	char peer[KMS_ID_MAX + 1];      /* A: MB; MB: the client; B: MB */
	char to_b[KMS_ID_MAX + 1];      /* A and MB (deposit): ID-B */
	char period[KMS_IBE_PERIOD_LEN + 1];
	/* Ephemerals: own scalar, own point, the peer's point. */
	uint8_t priv[KMS_EC_SCALAR_LEN];
	uint8_t mine[KMS_EC_POINT_LEN], theirs[KMS_EC_POINT_LEN];
	uint8_t ap[KMS_EC_POINT_LEN];   /* A: aP */
	uint8_t mk[KMS_KEY_LEN + KMS_NONCE_LEN]; /* A: message key | iv */
	uint8_t *key_b;                 /* A, MB: IBE_B(ID-A | aP) */
	size_t key_b_len;
	/* Session keys: up = client -> MB, down = MB -> client. */
	uint8_t k_up[KMS_KEY_LEN], k_down[KMS_KEY_LEN];
	uint64_t seq_up, seq_down;
	int keyed;
	EVP_MD_CTX *transcript;
	/* MB fetch / B: the message in flight. */
	uint8_t cur_id[KMS_IBAKE_MSG_ID_LEN];
	int have_cur;
	struct kms_buf hold;
};

/* ------------------------------------------------------------ buffers */

int kms_buf_reserve(struct kms_buf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 256;
	uint8_t *p;

	if (more > KMS_IBAKE_FRAME_MAX * 2u || b->len + more <= b->cap)
		return more > KMS_IBAKE_FRAME_MAX * 2u ? KMS_ERR_SPACE : KMS_OK;
	while (cap < b->len + more)
		cap *= 2;
	p = malloc(cap);
	if (!p)
		return KMS_ERR_NOMEM;
	if (b->p) {
		memcpy(p, b->p, b->len);
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	b->p = p;
	b->cap = cap;
	return KMS_OK;
}

void kms_buf_free(struct kms_buf *b)
{
	if (b->p) {
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	memset(b, 0, sizeof(*b));
}

static void put8(struct kms_buf *b, uint8_t v)
{
	b->p[b->len++] = v;
}

static void put32(struct kms_buf *b, uint32_t v)
{
	for (int i = 3; i >= 0; i--)
		put8(b, (uint8_t)(v >> (8 * i)));
}

static void put64(struct kms_buf *b, uint64_t v)
{
	put32(b, (uint32_t)(v >> 32));
	put32(b, (uint32_t)v);
}

static void putn(struct kms_buf *b, const void *p, size_t n)
{
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void put_id(struct kms_buf *b, const char *id)
{
	size_t n = strlen(id);

	put8(b, (uint8_t)n);
	putn(b, id, n);
}

static uint32_t ld32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t ld64(const uint8_t *p)
{
	return (uint64_t)ld32(p) << 32 | ld32(p + 4);
}

/* A bounds-checked reader; any overrun sets bad. */
struct rd {
	const uint8_t *p;
	size_t left;
	int bad;
};

static const uint8_t *take(struct rd *r, size_t n)
{
	const uint8_t *p = r->p;

	if (r->bad || n > r->left) {
		r->bad = 1;
		return NULL;
	}
	r->p += n;
	r->left -= n;
	return p;
}

static int take_id(struct rd *r, char out[KMS_ID_MAX + 1])
{
	const uint8_t *n = take(r, 1), *p;
	struct kms_id id;

	if (!n || !(p = take(r, *n)))
		return -1;
	id.p = p;
	id.len = *n;
	if (!kms_id_valid(&id)) {
		r->bad = 1;
		return -1;
	}
	memcpy(out, p, *n);
	out[*n] = 0;
	return 0;
}

static const uint8_t *take_blob(struct rd *r, uint32_t *len)
{
	const uint8_t *n = take(r, 4);

	if (!n)
		return NULL;
	*len = ld32(n);
	return take(r, *len);
}

/* ------------------------------------------------------------ frames */

uint32_t kms_ibake_frame_len(const uint8_t prefix[4], uint32_t max)
{
	uint32_t n = ld32(prefix);

	if (n < 2 || n > max || n > KMS_IBAKE_FRAME_MAX)
		return 0;
	return n;
}

/* Open a frame of @p body_len bytes: header now, length patched later. */
static int frame_begin(struct kms_buf *out, uint8_t type, size_t body_len,
		       size_t *start)
{
	int rc = kms_buf_reserve(out, KMS_IBAKE_HDR_LEN + body_len);

	if (rc)
		return rc;
	*start = out->len;
	put32(out, 0);
	put8(out, KMS_IBAKE_VERSION);
	put8(out, type);
	return KMS_OK;
}

static void frame_end(struct kms_buf *out, size_t start)
{
	uint32_t n = (uint32_t)(out->len - start - 4);

	for (int i = 0; i < 4; i++)
		out->p[start + i] = (uint8_t)(n >> (8 * (3 - i)));
}

/* Check the header of a received frame; the body in @p r. */
static int frame_parse(const uint8_t *in, size_t len, uint8_t *type,
		       struct rd *r)
{
	if (len < KMS_IBAKE_HDR_LEN || ld32(in) != len - 4 ||
	    in[4] != KMS_IBAKE_VERSION)
		return KMS_ERR_MALFORMED;
	*type = in[5];
	r->p = in + KMS_IBAKE_HDR_LEN;
	r->left = len - KMS_IBAKE_HDR_LEN;
	r->bad = 0;
	return KMS_OK;
}

int kms_ibake_error_frame(uint16_t status, struct kms_buf *out)
{
	size_t start;
	int rc = frame_begin(out, KMS_IB_ERROR, 2, &start);

	if (rc)
		return rc;
	put8(out, (uint8_t)(status >> 8));
	put8(out, (uint8_t)status);
	frame_end(out, start);
	return KMS_OK;
}

uint16_t kms_ibake_peer_error(const uint8_t *in, size_t len)
{
	if (len == KMS_IBAKE_HDR_LEN + 2 && ld32(in) == len - 4 &&
	    in[5] == KMS_IB_ERROR)
		return (uint16_t)(in[6] << 8 | in[7]);
	return 0;
}

/* ------------------------------------------------------------ session */

int kms_ibake_new(const struct kms_ibake_party *me, struct kms_ibake **out)
{
	struct kms_ibake *s;

	if (!me || !me->ibe || !me->params || !me->keys)
		return KMS_ERR_INVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return KMS_ERR_NOMEM;
	s->me = *me;
	s->transcript = EVP_MD_CTX_new();
	if (!s->transcript ||
	    EVP_DigestInit_ex(s->transcript, EVP_sha256(), NULL) != 1) {
		kms_ibake_free(s);
		return KMS_ERR_CRYPTO;
	}
	memcpy(s->period, me->keys->period, sizeof(s->period));
	*out = s;
	return KMS_OK;
}

void kms_ibake_free(struct kms_ibake *s)
{
	if (!s)
		return;
	EVP_MD_CTX_free(s->transcript);
	if (s->key_b) {
		OPENSSL_cleanse(s->key_b, s->key_b_len);
		free(s->key_b);
	}
	kms_buf_free(&s->hold);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
}

uint16_t kms_ibake_status(const struct kms_ibake *s)
{
	return s->status;
}

static int fail(struct kms_ibake *s, int rc, uint16_t status)
{
	s->st = ST_FAILED;
	s->status = status;
	OPENSSL_cleanse(s->priv, sizeof(s->priv));
	OPENSSL_cleanse(s->k_up, sizeof(s->k_up));
	OPENSSL_cleanse(s->k_down, sizeof(s->k_down));
	OPENSSL_cleanse(s->mk, sizeof(s->mk));
	return rc;
}

static uint16_t status_of(int rc)
{
	switch (rc) {
	case KMS_ERR_MALFORMED: return KMS_ST_MALFORMED;
	case KMS_ERR_AUTH: return KMS_ST_AUTH_FAILED;
	case KMS_ERR_MAPFULL: return KMS_ST_STORE_FULL;
	case KMS_ERR_STORE: case KMS_ERR_IO: return KMS_ST_STORE_FAILED;
	case KMS_ERR_INVAL: return KMS_ST_MALFORMED;
	default: return KMS_ST_INTERNAL;
	}
}

static int absorb(struct kms_ibake *s, const uint8_t *frame, size_t len)
{
	return EVP_DigestUpdate(s->transcript, frame, len) == 1 ?
		KMS_OK : KMS_ERR_CRYPTO;
}

static int idv(const char *s, struct kms_id *id)
{
	return kms_id_from_str(s, id);
}

/* AD of an IBE blob: label | type | the identities and period it binds. */
static size_t blob_ad(uint8_t *ad, uint8_t type, const char *x, const char *y,
		      const char *period)
{
	size_t n = 0, lx = strlen(x), ly = strlen(y);

	ad[n++] = type;
	ad[n++] = (uint8_t)lx;
	memcpy(ad + n, x, lx);
	n += lx;
	ad[n++] = (uint8_t)ly;
	memcpy(ad + n, y, ly);
	n += ly;
	memcpy(ad + n, period, KMS_IBE_PERIOD_LEN);
	return n + KMS_IBE_PERIOD_LEN;
}

#define AD_MAX (1 + 2 * (1 + KMS_ID_MAX) + KMS_IBE_PERIOD_LEN)
#define PT_MAX (2 * (1 + KMS_ID_MAX) + 2 * KMS_EC_POINT_LEN)

/* Append u32 len | IBE_to(pt) to @p out. */
static int put_ibe(struct kms_ibake *s, struct kms_buf *out, const char *to,
		   const uint8_t *ad, size_t ad_len, const uint8_t *pt,
		   size_t pt_len)
{
	struct kms_id id;
	int n;

	if (idv(to, &id))
		return KMS_ERR_INVAL;
	n = kms_ibe_seal(s->me.ibe, s->me.params, &id, s->period, ad, ad_len,
			 pt, pt_len, out->p + out->len + 4,
			 out->cap - out->len - 4);
	if (n < 0)
		return n;
	put32(out, (uint32_t)n);
	out->len += (size_t)n;
	return KMS_OK;
}

/* Open an IBE blob addressed to me. @return plaintext length. */
static int open_ibe(struct kms_ibake *s, const uint8_t *blob, uint32_t len,
		    const uint8_t *ad, size_t ad_len, uint8_t *pt, size_t cap)
{
	if (len < KMS_IBE_OVERHEAD || len - KMS_IBE_OVERHEAD > cap)
		return KMS_ERR_MALFORMED;
	return kms_ibe_open_prepared(s->me.ibe, s->me.params, s->me.keys,
				     s->me.rskp, ad, ad_len, blob, len, pt, cap);
}

/* Session keys from xyP and the transcript so far. */
static int make_keys(struct kms_ibake *s)
{
	uint8_t shared[KMS_EC_SCALAR_LEN], th[SHA256_DIGEST_LENGTH];
	uint8_t okm[2 * KMS_KEY_LEN];
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	unsigned thl = 0;
	int rc;

	if (!c || EVP_MD_CTX_copy_ex(c, s->transcript) != 1 ||
	    EVP_DigestFinal_ex(c, th, &thl) != 1) {
		EVP_MD_CTX_free(c);
		return KMS_ERR_CRYPTO;
	}
	EVP_MD_CTX_free(c);
	rc = kms_ec_shared(s->priv, s->theirs, shared);
	if (!rc)
		rc = kms_hkdf(th, thl, shared, sizeof(shared),
			      (const uint8_t *)SK_LABEL, strlen(SK_LABEL), okm,
			      sizeof(okm));
	if (!rc) {
		memcpy(s->k_up, okm, KMS_KEY_LEN);
		memcpy(s->k_down, okm + KMS_KEY_LEN, KMS_KEY_LEN);
		s->keyed = 1;
	}
	OPENSSL_cleanse(shared, sizeof(shared));
	OPENSSL_cleanse(okm, sizeof(okm));
	OPENSSL_cleanse(s->priv, sizeof(s->priv)); /* x or y: done */
	return rc;
}

static void seq_iv(uint64_t seq, uint8_t iv[KMS_NONCE_LEN])
{
	memset(iv, 0, 4);
	for (int i = 0; i < 8; i++)
		iv[4 + i] = (uint8_t)(seq >> (8 * (7 - i)));
}

/* A sealed frame: header | ct | tag, IV = direction's sequence number. */
static int put_sealed(struct kms_ibake *s, struct kms_buf *out, uint8_t type,
		      int up, const uint8_t *pt, size_t pt_len)
{
	uint8_t iv[KMS_NONCE_LEN];
	size_t start;
	int rc;

	if (!s->keyed)
		return KMS_ERR_INVAL;
	rc = frame_begin(out, type, pt_len + KMS_TAG_LEN, &start);
	if (rc)
		return rc;
	/* The header's length is known now: patch it before it is AD. */
	out->len += pt_len + KMS_TAG_LEN;
	frame_end(out, start);
	out->len -= pt_len + KMS_TAG_LEN;
	seq_iv(up ? s->seq_up++ : s->seq_down++, iv);
	rc = kms_gcm_seal(up ? s->k_up : s->k_down, iv, out->p + start,
			  KMS_IBAKE_HDR_LEN, pt, pt_len, out->p + out->len,
			  out->p + out->len + pt_len);
	if (rc)
		return rc;
	out->len += pt_len + KMS_TAG_LEN;
	return KMS_OK;
}

/* Open a sealed frame into s->hold (replaced). @return pt length. */
static int open_sealed(struct kms_ibake *s, const uint8_t *in, size_t len,
		       int up)
{
	uint8_t iv[KMS_NONCE_LEN];
	size_t n;
	int rc;

	if (!s->keyed || len < KMS_IBAKE_HDR_LEN + KMS_TAG_LEN)
		return KMS_ERR_MALFORMED;
	n = len - KMS_IBAKE_HDR_LEN - KMS_TAG_LEN;
	s->hold.len = 0;
	rc = kms_buf_reserve(&s->hold, n + 1);
	if (rc)
		return rc;
	seq_iv(up ? s->seq_up : s->seq_down, iv);
	rc = kms_gcm_open(up ? s->k_up : s->k_down, iv, in, KMS_IBAKE_HDR_LEN,
			  in + KMS_IBAKE_HDR_LEN, n, in + len - KMS_TAG_LEN,
			  s->hold.p);
	if (rc)
		return rc;
	if (up)
		s->seq_up++;
	else
		s->seq_down++;
	s->hold.len = n;
	return (int)n;
}

/* ------------------------------------------------------------ UE-A */

int kms_ibake_a_begin(struct kms_ibake *s, const char *to_b,
		      const char *mailbox_id, struct kms_buf *out)
{
	uint8_t ad[AD_MAX], pt[PT_MAX];
	struct kms_buf p = { .p = pt, .cap = sizeof(pt) };
	struct kms_id b, mb;
	size_t start, ad_len;
	int rc;

	if (s->st != ST_START || idv(to_b, &b) || idv(mailbox_id, &mb))
		return fail(s, KMS_ERR_INVAL, KMS_ST_INTERNAL);
	s->role = ROLE_A;
	strcpy(s->to_b, to_b);
	strcpy(s->peer, mailbox_id);
	rc = kms_ec_keygen(s->priv, s->mine);
	if (rc)
		return fail(s, rc, KMS_ST_INTERNAL);
	put_id(&p, s->me.keys->id);
	put_id(&p, to_b);
	putn(&p, s->mine, KMS_EC_POINT_LEN);
	rc = frame_begin(out, KMS_IB_I1, 2 + 2 * KMS_ID_MAX +
			 KMS_IBE_PERIOD_LEN + 4 + KMS_IBE_OVERHEAD + p.len,
			 &start);
	if (rc)
		goto out;
	put_id(out, s->me.keys->id);
	put_id(out, to_b);
	putn(out, s->period, KMS_IBE_PERIOD_LEN);
	ad_len = blob_ad(ad, KMS_IB_I1, s->me.keys->id, to_b, s->period);
	rc = put_ibe(s, out, to_b, ad, ad_len, p.p, p.len);
	if (rc)
		goto out;
	frame_end(out, start);
	rc = absorb(s, out->p + start, out->len - start);
	s->st = ST_A_SENT_I1;
out:
	OPENSSL_cleanse(pt, sizeof(pt));
	return rc ? fail(s, rc, KMS_ST_INTERNAL) : KMS_OK;
}

int kms_ibake_a_on_r1(struct kms_ibake *s, const uint8_t *in, size_t len,
		      struct kms_buf *out)
{
	uint8_t ad[AD_MAX], pt[PT_MAX], a[KMS_EC_SCALAR_LEN];
	struct kms_buf p = { .p = pt, .cap = sizeof(pt) };
	char mb[KMS_ID_MAX + 1], mb2[KMS_ID_MAX + 1];
	const uint8_t *blob;
	uint32_t blen;
	size_t start, ad_len;
	uint8_t type;
	struct rd r;
	int n, rc;

	if (s->st != ST_A_SENT_I1)
		return fail(s, KMS_ERR_INVAL, KMS_ST_BAD_TYPE);
	if (kms_ibake_peer_error(in, len))
		return fail(s, KMS_ERR_AUTH, kms_ibake_peer_error(in, len));
	if (frame_parse(in, len, &type, &r) || type != KMS_IB_R1 ||
	    take_id(&r, mb) || !(blob = take_blob(&r, &blen)) || r.left)
		return fail(s, KMS_ERR_MALFORMED, KMS_ST_MALFORMED);
	/* The responder names itself: the mailbox we were forwarded to. A
	 * reply from B would carry ID-B and our own xP instead. */
	if (strcmp(mb, s->peer))
		return fail(s, KMS_ERR_AUTH, KMS_ST_ID_MISMATCH);
	ad_len = blob_ad(ad, KMS_IB_R1, mb, s->me.keys->id, s->period);
	n = open_ibe(s, blob, blen, ad, ad_len, pt, sizeof(pt));
	if (n < 0)
		return fail(s, n, status_of(n));
	r = (struct rd){ .p = pt, .left = (size_t)n };
	if (take_id(&r, mb2) || !(blob = take(&r, KMS_EC_POINT_LEN)) ||
	    r.left || strcmp(mb2, mb) || kms_ec_point_check(blob)) {
		OPENSSL_cleanse(pt, sizeof(pt));
		return fail(s, KMS_ERR_MALFORMED, KMS_ST_MALFORMED);
	}
	memcpy(s->theirs, blob, KMS_EC_POINT_LEN);
	rc = absorb(s, in, len);
	if (rc)
		goto out;

	/* aP: the key material of the message, for B only. */
	rc = kms_ec_keygen(a, s->ap);
	OPENSSL_cleanse(a, sizeof(a)); /* only aP is ever used */
	if (rc)
		goto out;
	rc = frame_begin(out, KMS_IB_I2, 2 * (4 + KMS_IBE_OVERHEAD + PT_MAX),
			 &start);
	if (rc)
		goto out;
	p.len = 0;
	put_id(&p, s->me.keys->id);
	put_id(&p, s->peer);
	putn(&p, s->mine, KMS_EC_POINT_LEN);
	putn(&p, s->theirs, KMS_EC_POINT_LEN);
	ad_len = blob_ad(ad, KMS_IB_I2, s->me.keys->id, s->peer, s->period);
	rc = put_ibe(s, out, s->peer, ad, ad_len, p.p, p.len);
	if (rc)
		goto out;
	/* IBE_B(ID-A | aP), bound to A, B and the period: what B will get. */
	p.len = 0;
	put_id(&p, s->me.keys->id);
	putn(&p, s->ap, KMS_EC_POINT_LEN);
	ad_len = blob_ad(ad, KMS_IB_I2 ^ 0x80, s->me.keys->id, s->to_b,
			 s->period);
	s->key_b_len = KMS_IBE_OVERHEAD + p.len;
	s->key_b = malloc(s->key_b_len);
	if (!s->key_b) {
		rc = KMS_ERR_NOMEM;
		goto out;
	}
	rc = put_ibe(s, out, s->to_b, ad, ad_len, p.p, p.len);
	if (rc)
		goto out;
	memcpy(s->key_b, out->p + out->len - s->key_b_len, s->key_b_len);
	frame_end(out, start);
	rc = absorb(s, out->p + start, out->len - start);
	s->st = ST_A_SENT_I2;
out:
	OPENSSL_cleanse(pt, sizeof(pt));
	return rc ? fail(s, rc, KMS_ST_INTERNAL) : KMS_OK;
}

int kms_ibake_a_on_r2(struct kms_ibake *s, const uint8_t *in, size_t len)
{
	uint8_t ad[AD_MAX], pt[PT_MAX];
	char a[KMS_ID_MAX + 1];
	const uint8_t *blob, *xp;
	uint32_t blen;
	size_t ad_len;
	uint8_t type;
	struct rd r;
	int n, rc;

	if (s->st != ST_A_SENT_I2)
		return fail(s, KMS_ERR_INVAL, KMS_ST_BAD_TYPE);
	if (kms_ibake_peer_error(in, len))
		return fail(s, KMS_ERR_AUTH, kms_ibake_peer_error(in, len));
	if (frame_parse(in, len, &type, &r) || type != KMS_IB_R2 ||
	    !(blob = take_blob(&r, &blen)) || r.left)
		return fail(s, KMS_ERR_MALFORMED, KMS_ST_MALFORMED);
	ad_len = blob_ad(ad, KMS_IB_R2, s->peer, s->me.keys->id, s->period);
	n = open_ibe(s, blob, blen, ad, ad_len, pt, sizeof(pt));
	if (n < 0)
		return fail(s, n, status_of(n));
	r = (struct rd){ .p = pt, .left = (size_t)n };
	rc = KMS_OK;
	if (take_id(&r, a) || !(xp = take(&r, KMS_EC_POINT_LEN)) || r.left)
		rc = KMS_ERR_MALFORMED;
	/* Only the holder of ID-MB's RSK could have read xP from I2. */
	else if (strcmp(a, s->me.keys->id) ||
		 CRYPTO_memcmp(xp, s->mine, KMS_EC_POINT_LEN))
		rc = KMS_ERR_AUTH;
	OPENSSL_cleanse(pt, sizeof(pt));
	if (rc)
		return fail(s, rc, status_of(rc));
	rc = make_keys(s);
	if (rc)
		return fail(s, rc, KMS_ST_INTERNAL);
	s->st = ST_A_AUTHED;
	return KMS_OK;
}

/* M = label | ID-A | ID-B | period | SHA-256(key_b) | SHA-256(message). */
static size_t sig_input(uint8_t *m, const char *a, const char *b,
			const char *period, const uint8_t *key_b,
			size_t key_b_len, const uint8_t *msg, size_t msg_len)
{
	size_t n = strlen(SIG_LABEL), la = strlen(a), lb = strlen(b);

	memcpy(m, SIG_LABEL, n);
	m[n++] = (uint8_t)la;
	memcpy(m + n, a, la);
	n += la;
	m[n++] = (uint8_t)lb;
	memcpy(m + n, b, lb);
	n += lb;
	memcpy(m + n, period, KMS_IBE_PERIOD_LEN);
	n += KMS_IBE_PERIOD_LEN;
	SHA256(key_b, key_b_len, m + n);
	n += SHA256_DIGEST_LENGTH;
	SHA256(msg, msg_len, m + n);
	return n + SHA256_DIGEST_LENGTH;
}

#define SIG_IN_MAX (sizeof(SIG_LABEL) + 2 * (1 + KMS_ID_MAX) + \
		    KMS_IBE_PERIOD_LEN + 2 * SHA256_DIGEST_LENGTH)

/* Message key | iv from aP, bound to A, B and the period. */
static int msg_key(const uint8_t ap[KMS_EC_POINT_LEN], const char *a,
		   const char *b, const char *period,
		   uint8_t mk[KMS_KEY_LEN + KMS_NONCE_LEN], uint8_t *ad,
		   size_t *ad_len)
{
	size_t n = strlen(MSG_LABEL), la = strlen(a), lb = strlen(b);

	memcpy(ad, MSG_LABEL, n);
	ad[n++] = (uint8_t)la;
	memcpy(ad + n, a, la);
	n += la;
	ad[n++] = (uint8_t)lb;
	memcpy(ad + n, b, lb);
	n += lb;
	memcpy(ad + n, period, KMS_IBE_PERIOD_LEN);
	n += KMS_IBE_PERIOD_LEN;
	*ad_len = n;
	return kms_hkdf((const uint8_t *)MSG_LABEL, strlen(MSG_LABEL), ap,
			KMS_EC_POINT_LEN, ad, n, mk, KMS_KEY_LEN + KMS_NONCE_LEN);
}

#define MSG_AD_MAX (sizeof(MSG_LABEL) + 2 * (1 + KMS_ID_MAX) + \
		    KMS_IBE_PERIOD_LEN)

int kms_ibake_a_deposit(struct kms_ibake *s, const uint8_t *msg, size_t len,
			struct kms_buf *out)
{
	uint8_t ad[MSG_AD_MAX], m[SIG_IN_MAX], ident[KMS_IBE_IDENT_MAX];
	struct kms_buf pt = { 0 };
	struct kms_id me;
	size_t ad_len, m_len, id_len;
	int rc;

	if (s->st != ST_A_AUTHED)
		return fail(s, KMS_ERR_INVAL, KMS_ST_BAD_TYPE);
	if (len > KMS_IBAKE_FRAME_MAX - 4096)
		return fail(s, KMS_ERR_SPACE, KMS_ST_INTERNAL);
	rc = msg_key(s->ap, s->me.keys->id, s->to_b, s->period, s->mk, ad,
		     &ad_len);
	if (!rc)
		rc = kms_buf_reserve(&pt, KMS_ECCSI_SIG_LEN + len + KMS_TAG_LEN);
	if (rc)
		goto out;
	/* pt = signature | ciphertext | tag; the signature comes last in
	 * time: it covers the ciphertext. */
	pt.len = KMS_ECCSI_SIG_LEN;
	rc = kms_gcm_seal(s->mk, s->mk + KMS_KEY_LEN, ad, ad_len, msg, len,
			  pt.p + pt.len, pt.p + pt.len + len);
	if (rc)
		goto out;
	pt.len += len + KMS_TAG_LEN;
	m_len = sig_input(m, s->me.keys->id, s->to_b, s->period, s->key_b,
			  s->key_b_len, pt.p + KMS_ECCSI_SIG_LEN,
			  len + KMS_TAG_LEN);
	idv(s->me.keys->id, &me);
	id_len = kms_ibe_ident(s->period, &me, ident);
	rc = kms_eccsi_sign(s->me.ibe->eccsi, s->me.params->kpak, ident,
			    id_len, s->me.keys->ssk, s->me.keys->pvt, m, m_len,
			    NULL, pt.p);
	if (!rc)
		rc = put_sealed(s, out, KMS_IB_DEPOSIT, 1, pt.p, pt.len);
	if (!rc)
		s->st = ST_A_DEPOSITED;
out:
	kms_buf_free(&pt);
	return rc ? fail(s, rc, KMS_ST_INTERNAL) : KMS_OK;
}

int kms_ibake_a_on_ack(struct kms_ibake *s, const uint8_t *in, size_t len,
		       uint8_t msg_id[KMS_IBAKE_MSG_ID_LEN],
		       uint64_t *expiry_ms)
{
	uint8_t type;
	struct rd r;
	int n;

	if (s->st != ST_A_DEPOSITED)
		return fail(s, KMS_ERR_INVAL, KMS_ST_BAD_TYPE);
	if (kms_ibake_peer_error(in, len))
		return fail(s, KMS_ERR_AUTH, kms_ibake_peer_error(in, len));
	if (frame_parse(in, len, &type, &r) || type != KMS_IB_DEPOSIT_ACK)
		return fail(s, KMS_ERR_MALFORMED, KMS_ST_MALFORMED);
	n = open_sealed(s, in, len, 0);
	if (n < 0)
		return fail(s, n, status_of(n));
	if (n != KMS_IBAKE_MSG_ID_LEN + 8)
		return fail(s, KMS_ERR_MALFORMED, KMS_ST_MALFORMED);
	memcpy(msg_id, s->hold.p, KMS_IBAKE_MSG_ID_LEN);
	*expiry_ms = ld64(s->hold.p + KMS_IBAKE_MSG_ID_LEN);
	s->st = ST_A_DONE;
	return KMS_OK;
}

int kms_ibake_a_secrets(const struct kms_ibake *s,
			uint8_t ap[KMS_EC_POINT_LEN], uint8_t mk[KMS_KEY_LEN])
{
	if (s->role != ROLE_A || s->st < ST_A_DEPOSITED || s->st == ST_FAILED)
		return KMS_ERR_INVAL;
	memcpy(ap, s->ap, KMS_EC_POINT_LEN);
	memcpy(mk, s->mk, KMS_KEY_LEN);
	return KMS_OK;
}

/* ------------------------------------------------------------ mailbox */

/* I1: answer IBE_A(ID-MB | yP) to whoever claims to be ID-A. */
static int mb_on_i1(struct kms_ibake *s, const uint8_t *in, size_t len,
		    struct rd *r, struct kms_buf *out)
{
	uint8_t ad[AD_MAX], pt[PT_MAX];
	struct kms_buf p = { .p = pt, .cap = sizeof(pt) };
	const uint8_t *per, *blob;
	uint32_t blen;
	size_t start, ad_len;
	int rc;

	if (take_id(r, s->peer) || take_id(r, s->to_b) ||
	    !(per = take(r, KMS_IBE_PERIOD_LEN)) ||
	    !(blob = take_blob(r, &blen)) || r->left ||
	    blen < KMS_IBE_OVERHEAD)
		return KMS_ERR_MALFORMED;
	/* We serve one period at a time: the one our keys are for. */
	if (memcmp(per, s->period, KMS_IBE_PERIOD_LEN)) {
		s->status = KMS_ST_BAD_PERIOD;
		return KMS_ERR_INVAL;
	}
	if (!strcmp(s->peer, s->to_b) || !strcmp(s->peer, s->me.keys->id))
		return KMS_ERR_MALFORMED;
	/* IBE_B(...) is for B: the mailbox cannot open it and does not try. */
	rc = absorb(s, in, len);
	if (!rc)
		rc = kms_ec_keygen(s->priv, s->mine);
	if (rc)
		return rc;
	put_id(&p, s->me.keys->id);
	putn(&p, s->mine, KMS_EC_POINT_LEN);
	rc = frame_begin(out, KMS_IB_R1, 1 + KMS_ID_MAX + 4 + KMS_IBE_OVERHEAD +
			 p.len, &start);
	if (!rc) {
		put_id(out, s->me.keys->id);
		ad_len = blob_ad(ad, KMS_IB_R1, s->me.keys->id, s->peer,
				 s->period);
		rc = put_ibe(s, out, s->peer, ad, ad_len, p.p, p.len);
	}
	if (!rc) {
		frame_end(out, start);
		rc = absorb(s, out->p + start, out->len - start);
	}
	s->role = ROLE_MB_DEP;
	s->st = ST_MB_SENT_R1;
	return rc;
}

/* I2: yP back proves A; keep IBE_B(ID-A | aP) for B; answer IBE_A(ID-A|xP). */
static int mb_on_i2(struct kms_ibake *s, const uint8_t *in, size_t len,
		    struct rd *r, struct kms_buf *out)
{
	uint8_t ad[AD_MAX], pt[PT_MAX];
	struct kms_buf p = { .p = pt, .cap = sizeof(pt) };
	char a[KMS_ID_MAX + 1], mb[KMS_ID_MAX + 1];
	const uint8_t *b1, *b2, *xp, *yp;
	uint32_t l1, l2;
	size_t start, ad_len;
	struct rd q;
	int n, rc;

	if (!(b1 = take_blob(r, &l1)) || !(b2 = take_blob(r, &l2)) ||
	    r->left || l2 < KMS_IBE_OVERHEAD || l2 > KMS_IBE_OVERHEAD + PT_MAX)
		return KMS_ERR_MALFORMED;
	ad_len = blob_ad(ad, KMS_IB_I2, s->peer, s->me.keys->id, s->period);
	n = open_ibe(s, b1, l1, ad, ad_len, pt, sizeof(pt));
	if (n < 0)
		return n;
	q = (struct rd){ .p = pt, .left = (size_t)n };
	rc = KMS_OK;
	if (take_id(&q, a) || take_id(&q, mb) ||
	    !(xp = take(&q, KMS_EC_POINT_LEN)) ||
	    !(yp = take(&q, KMS_EC_POINT_LEN)) || q.left ||
	    kms_ec_point_check(xp))
		rc = KMS_ERR_MALFORMED;
	else if (strcmp(a, s->peer) || strcmp(mb, s->me.keys->id)) {
		s->status = KMS_ST_ID_MISMATCH;
		rc = KMS_ERR_AUTH;
	/* Our fresh yP back: the sender opened R1, sealed to ID-A. A replayed
	 * I2 carries another session's yP. */
	} else if (CRYPTO_memcmp(yp, s->mine, KMS_EC_POINT_LEN))
		rc = KMS_ERR_AUTH;
	if (!rc)
		memcpy(s->theirs, xp, KMS_EC_POINT_LEN);
	OPENSSL_cleanse(pt, sizeof(pt));
	if (rc)
		return rc;
	s->key_b = malloc(l2);
	if (!s->key_b)
		return KMS_ERR_NOMEM;
	memcpy(s->key_b, b2, l2);
	s->key_b_len = l2;
	rc = absorb(s, in, len);
	if (!rc)
		rc = make_keys(s);
	if (rc)
		return rc;
	p.len = 0;
	put_id(&p, s->peer);
	putn(&p, s->theirs, KMS_EC_POINT_LEN);
	rc = frame_begin(out, KMS_IB_R2, 4 + KMS_IBE_OVERHEAD + p.len, &start);
	if (!rc) {
		ad_len = blob_ad(ad, KMS_IB_R2, s->me.keys->id, s->peer,
				 s->period);
		rc = put_ibe(s, out, s->peer, ad, ad_len, p.p, p.len);
	}
	if (!rc)
		frame_end(out, start);
	s->st = ST_MB_SENT_R2;
	return rc;
}

/* DEPOSIT: store durably with the sender authenticated in I2, then ack. */
static int mb_on_deposit(struct kms_ibake *s,
			 const struct kms_ibake_store_ops *store, void *arg,
			 const uint8_t *in, size_t len, struct kms_buf *out)
{
	struct kms_ibake_item it;
	uint8_t ack[KMS_IBAKE_MSG_ID_LEN + 8];
	struct kms_buf a = { .p = ack, .cap = sizeof(ack) };
	int n, rc;

	n = open_sealed(s, in, len, 1);
	if (n < 0)
		return n;
	if (n < KMS_ECCSI_SIG_LEN + KMS_TAG_LEN)
		return KMS_ERR_MALFORMED;
	memset(&it, 0, sizeof(it));
	idv(s->peer, &it.id_a);
	idv(s->to_b, &it.id_b);
	memcpy(it.period, s->period, sizeof(it.period));
	it.key_b = s->key_b;
	it.key_b_len = (uint32_t)s->key_b_len;
	it.sig = s->hold.p;
	it.msg = s->hold.p + KMS_ECCSI_SIG_LEN;
	it.msg_len = (uint32_t)(n - KMS_ECCSI_SIG_LEN);
	rc = store->put(arg, &it);
	if (rc)
		return rc;
	putn(&a, it.msg_id, KMS_IBAKE_MSG_ID_LEN);
	put64(&a, it.expiry_ms);
	rc = put_sealed(s, out, KMS_IB_DEPOSIT_ACK, 0, ack, sizeof(ack));
	s->st = ST_MB_DONE;
	return rc ? rc : 1;
}

/* F1: answer IBE_B(ID-MB | ID-B | xP | yP). */
static int mb_on_f1(struct kms_ibake *s, const uint8_t *in, size_t len,
		    struct rd *r, struct kms_buf *out)
{
	uint8_t ad[AD_MAX], pt[PT_MAX];
	struct kms_buf p = { .p = pt, .cap = sizeof(pt) };
	char b[KMS_ID_MAX + 1], mb[KMS_ID_MAX + 1];
	const uint8_t *per, *blob, *xp;
	uint32_t blen;
	size_t start, ad_len;
	struct rd q;
	int n, rc;

	if (take_id(r, s->peer) || !(per = take(r, KMS_IBE_PERIOD_LEN)) ||
	    !(blob = take_blob(r, &blen)) || r->left)
		return KMS_ERR_MALFORMED;
	if (memcmp(per, s->period, KMS_IBE_PERIOD_LEN)) {
		s->status = KMS_ST_BAD_PERIOD;
		return KMS_ERR_INVAL;
	}
	ad_len = blob_ad(ad, KMS_IB_F1, s->peer, s->me.keys->id, s->period);
	n = open_ibe(s, blob, blen, ad, ad_len, pt, sizeof(pt));
	if (n < 0)
		return n;
	q = (struct rd){ .p = pt, .left = (size_t)n };
	if (take_id(&q, b) || take_id(&q, mb) ||
	    !(xp = take(&q, KMS_EC_POINT_LEN)) || q.left ||
	    kms_ec_point_check(xp))
		return KMS_ERR_MALFORMED;
	if (strcmp(b, s->peer) || strcmp(mb, s->me.keys->id)) {
		s->status = KMS_ST_ID_MISMATCH;
		return KMS_ERR_AUTH;
	}
	memcpy(s->theirs, xp, KMS_EC_POINT_LEN);
	rc = absorb(s, in, len);
	if (!rc)
		rc = kms_ec_keygen(s->priv, s->mine);
	if (rc)
		return rc;
	p.len = 0;
	put_id(&p, s->me.keys->id);
	put_id(&p, s->peer);
	putn(&p, s->theirs, KMS_EC_POINT_LEN);
	putn(&p, s->mine, KMS_EC_POINT_LEN);
	rc = frame_begin(out, KMS_IB_F2, 4 + KMS_IBE_OVERHEAD + p.len, &start);
	if (!rc) {
		ad_len = blob_ad(ad, KMS_IB_F2, s->me.keys->id, s->peer,
				 s->period);
		rc = put_ibe(s, out, s->peer, ad, ad_len, p.p, p.len);
	}
	if (!rc) {
		frame_end(out, start);
		rc = absorb(s, out->p + start, out->len - start);
	}
	if (!rc)
		rc = make_keys(s);
	s->role = ROLE_MB_FETCH;
	s->st = ST_MB_SENT_F2;
	return rc;
}

/* The next message for B after the current one, or END. */
static int mb_send_next(struct kms_ibake *s,
			const struct kms_ibake_store_ops *store, void *arg,
			struct kms_buf *out)
{
	struct kms_ibake_item it;
	struct kms_buf hold = { 0 }, pt = { 0 };
	struct kms_id b;
	int rc;

	idv(s->peer, &b);
	rc = store->next(arg, &b, s->have_cur ? s->cur_id : NULL, &it, &hold);
	if (rc == KMS_ERR_NOTFOUND) {
		uint8_t none[4] = { 0 };

		rc = put_sealed(s, out, KMS_IB_END, 0, none, sizeof(none));
		s->st = ST_MB_SENT_END;
		goto out;
	}
	if (rc)
		goto out;
	rc = kms_buf_reserve(&pt, KMS_IBAKE_MSG_ID_LEN + 1 + KMS_ID_MAX +
			     KMS_IBE_PERIOD_LEN + 8 + 4 + it.key_b_len +
			     KMS_ECCSI_SIG_LEN + 4 + it.msg_len);
	if (rc)
		goto out;
	putn(&pt, it.msg_id, KMS_IBAKE_MSG_ID_LEN);
	put8(&pt, it.id_a.len);
	putn(&pt, it.id_a.p, it.id_a.len);
	putn(&pt, it.period, KMS_IBE_PERIOD_LEN);
	put64(&pt, it.deposited_ms);
	put32(&pt, it.key_b_len);
	putn(&pt, it.key_b, it.key_b_len);
	putn(&pt, it.sig, KMS_ECCSI_SIG_LEN);
	put32(&pt, it.msg_len);
	putn(&pt, it.msg, it.msg_len);
	rc = put_sealed(s, out, KMS_IB_MSG, 0, pt.p, pt.len);
	memcpy(s->cur_id, it.msg_id, KMS_IBAKE_MSG_ID_LEN);
	s->have_cur = 1;
	s->st = ST_MB_SENT_MSG;
out:
	kms_buf_free(&hold);
	kms_buf_free(&pt);
	return rc;
}

uint32_t kms_ibake_mb_frame_max(const struct kms_ibake *s, uint32_t big)
{
	/* Only an authenticated depositor sends a frame larger than a
	 * handshake: an unauthenticated peer cannot make the mailbox
	 * allocate a message-sized buffer. */
	return s->st == ST_MB_SENT_R2 ? big : KMS_IBAKE_HANDSHAKE_MAX;
}

int kms_ibake_mb_on_frame(struct kms_ibake *s,
			  const struct kms_ibake_store_ops *store, void *arg,
			  const uint8_t *in, size_t len, struct kms_buf *out)
{
	size_t mark = out->len;
	uint8_t type;
	struct rd r;
	struct kms_id b;
	int n, rc;

	if (s->st == ST_FAILED)
		return KMS_ERR_INVAL;
	s->status = KMS_ST_OK;
	if (len >= KMS_IBAKE_HDR_LEN && in[4] != KMS_IBAKE_VERSION &&
	    ld32(in) == len - 4) {
		s->status = KMS_ST_BAD_VERSION;
		rc = KMS_ERR_MALFORMED;
		goto err;
	}
	rc = frame_parse(in, len, &type, &r);
	if (rc)
		goto err;
	switch (s->st) {
	case ST_START:
		if (type == KMS_IB_I1)
			rc = mb_on_i1(s, in, len, &r, out);
		else if (type == KMS_IB_F1)
			rc = mb_on_f1(s, in, len, &r, out);
		else
			goto bad_type;
		break;
	case ST_MB_SENT_R1:
		if (type != KMS_IB_I2)
			goto bad_type;
		rc = mb_on_i2(s, in, len, &r, out);
		break;
	case ST_MB_SENT_R2:
		if (type != KMS_IB_DEPOSIT)
			goto bad_type;
		rc = mb_on_deposit(s, store, arg, in, len, out);
		break;
	case ST_MB_SENT_F2:
		if (type != KMS_IB_F3)
			goto bad_type;
		n = open_sealed(s, in, len, 1);
		rc = n < 0 ? n : KMS_OK;
		/* yP back under keys from xyP: B opened F2. */
		if (!rc && (n != KMS_EC_POINT_LEN ||
			    CRYPTO_memcmp(s->hold.p, s->mine, n)))
			rc = KMS_ERR_AUTH;
		if (!rc)
			rc = mb_send_next(s, store, arg, out);
		break;
	case ST_MB_SENT_MSG:
		if (type != KMS_IB_DELETE && type != KMS_IB_NEXT)
			goto bad_type;
		n = open_sealed(s, in, len, 1);
		rc = n < 0 ? n : KMS_OK;
		if (!rc && (n != KMS_IBAKE_MSG_ID_LEN ||
			    memcmp(s->hold.p, s->cur_id, n)))
			rc = KMS_ERR_MALFORMED;
		idv(s->peer, &b);
		if (!rc && type == KMS_IB_DELETE)
			rc = store->del(arg, &b, s->cur_id);
		if (!rc)
			rc = mb_send_next(s, store, arg, out);
		break;
	default:
		goto bad_type;
	}
	if (rc < 0)
		goto err;
	return s->st == ST_MB_SENT_END || s->st == ST_MB_DONE ? 1 : KMS_OK;
bad_type:
	s->status = KMS_ST_BAD_TYPE;
	rc = KMS_ERR_MALFORMED;
err:
	out->len = mark;
	if (!s->status)
		s->status = status_of(rc);
	fail(s, rc, s->status);
	kms_ibake_error_frame(s->status, out);
	return rc;
}

/* ------------------------------------------------------------ UE-B */

int kms_ibake_b_begin(struct kms_ibake *s, const char *mailbox_id,
		      struct kms_buf *out)
{
	uint8_t ad[AD_MAX], pt[PT_MAX];
	struct kms_buf p = { .p = pt, .cap = sizeof(pt) };
	struct kms_id mb;
	size_t start, ad_len;
	int rc;

	if (s->st != ST_START || idv(mailbox_id, &mb))
		return fail(s, KMS_ERR_INVAL, KMS_ST_INTERNAL);
	s->role = ROLE_B;
	strcpy(s->peer, mailbox_id);
	rc = kms_ec_keygen(s->priv, s->mine);
	if (rc)
		return fail(s, rc, KMS_ST_INTERNAL);
	put_id(&p, s->me.keys->id);
	put_id(&p, mailbox_id);
	putn(&p, s->mine, KMS_EC_POINT_LEN);
	rc = frame_begin(out, KMS_IB_F1, 1 + KMS_ID_MAX + KMS_IBE_PERIOD_LEN +
			 4 + KMS_IBE_OVERHEAD + p.len, &start);
	if (!rc) {
		put_id(out, s->me.keys->id);
		putn(out, s->period, KMS_IBE_PERIOD_LEN);
		ad_len = blob_ad(ad, KMS_IB_F1, s->me.keys->id, mailbox_id,
				 s->period);
		rc = put_ibe(s, out, mailbox_id, ad, ad_len, p.p, p.len);
	}
	if (!rc) {
		frame_end(out, start);
		rc = absorb(s, out->p + start, out->len - start);
	}
	if (rc)
		return fail(s, rc, KMS_ST_INTERNAL);
	s->st = ST_B_SENT_F1;
	return KMS_OK;
}

int kms_ibake_b_on_f2(struct kms_ibake *s, const uint8_t *in, size_t len,
		      struct kms_buf *out)
{
	uint8_t ad[AD_MAX], pt[PT_MAX];
	char mb[KMS_ID_MAX + 1], b[KMS_ID_MAX + 1];
	const uint8_t *blob, *xp, *yp;
	uint32_t blen;
	size_t ad_len;
	uint8_t type;
	struct rd r;
	int n, rc;

	if (s->st != ST_B_SENT_F1)
		return fail(s, KMS_ERR_INVAL, KMS_ST_BAD_TYPE);
	if (kms_ibake_peer_error(in, len))
		return fail(s, KMS_ERR_AUTH, kms_ibake_peer_error(in, len));
	if (frame_parse(in, len, &type, &r) || type != KMS_IB_F2 ||
	    !(blob = take_blob(&r, &blen)) || r.left)
		return fail(s, KMS_ERR_MALFORMED, KMS_ST_MALFORMED);
	ad_len = blob_ad(ad, KMS_IB_F2, s->peer, s->me.keys->id, s->period);
	n = open_ibe(s, blob, blen, ad, ad_len, pt, sizeof(pt));
	if (n < 0)
		return fail(s, n, status_of(n));
	r = (struct rd){ .p = pt, .left = (size_t)n };
	rc = KMS_OK;
	if (take_id(&r, mb) || take_id(&r, b) ||
	    !(xp = take(&r, KMS_EC_POINT_LEN)) ||
	    !(yp = take(&r, KMS_EC_POINT_LEN)) || r.left ||
	    kms_ec_point_check(yp))
		rc = KMS_ERR_MALFORMED;
	/* xP back: only the holder of ID-MB's RSK could read F1. */
	else if (strcmp(mb, s->peer) || strcmp(b, s->me.keys->id) ||
		 CRYPTO_memcmp(xp, s->mine, KMS_EC_POINT_LEN))
		rc = KMS_ERR_AUTH;
	if (!rc)
		memcpy(s->theirs, yp, KMS_EC_POINT_LEN);
	OPENSSL_cleanse(pt, sizeof(pt));
	if (!rc)
		rc = absorb(s, in, len);
	if (!rc)
		rc = make_keys(s);
	if (!rc)
		rc = put_sealed(s, out, KMS_IB_F3, 1, s->theirs,
				KMS_EC_POINT_LEN);
	if (rc)
		return fail(s, rc, status_of(rc));
	s->st = ST_B_SENT_F3;
	return KMS_OK;
}

/* Check and open one stored message (pt of a MSG frame, in s->hold). */
static int b_open_item(struct kms_ibake *s, struct kms_buf *plain,
		       struct kms_ibake_received *rx)
{
	uint8_t ad[AD_MAX], kpt[PT_MAX], m[SIG_IN_MAX];
	uint8_t mk[KMS_KEY_LEN + KMS_NONCE_LEN], mad[MSG_AD_MAX];
	uint8_t ident[KMS_IBE_IDENT_MAX];
	char a[KMS_ID_MAX + 1], a2[KMS_ID_MAX + 1], per[KMS_IBE_PERIOD_LEN + 1];
	const uint8_t *id, *p, *ts, *kb, *sig, *msg, *ap;
	uint32_t kb_len, msg_len;
	size_t ad_len, m_len, mad_len, id_len;
	struct kms_id ida;
	struct rd r = { .p = s->hold.p, .left = s->hold.len };
	int n, rc;

	if (!(id = take(&r, KMS_IBAKE_MSG_ID_LEN)) || take_id(&r, a) ||
	    !(p = take(&r, KMS_IBE_PERIOD_LEN)) || !(ts = take(&r, 8)) ||
	    !(kb = take_blob(&r, &kb_len)) ||
	    !(sig = take(&r, KMS_ECCSI_SIG_LEN)) ||
	    !(msg = take_blob(&r, &msg_len)) || r.left ||
	    msg_len < KMS_TAG_LEN || !kms_ibe_period_valid((const char *)p,
							   KMS_IBE_PERIOD_LEN))
		return KMS_ERR_MALFORMED;
	memcpy(rx->msg_id, id, KMS_IBAKE_MSG_ID_LEN);
	memcpy(per, p, KMS_IBE_PERIOD_LEN);
	per[KMS_IBE_PERIOD_LEN] = 0;
	memcpy(rx->period, per, sizeof(per));
	snprintf(rx->from, sizeof(rx->from), "%s", a);
	rx->deposited_ms = ld64(ts);
	/* B's RSK is per period: a message of another period needs that
	 * period's keys. */
	if (strcmp(per, s->me.keys->period))
		return KMS_ERR_AUTH;

	/* 1. A's signature over everything stored, under the identity the
	 *    mailbox claims: the mailbox cannot vouch for a sender. */
	m_len = sig_input(m, a, s->me.keys->id, per, kb, kb_len, msg, msg_len);
	idv(a, &ida);
	id_len = kms_ibe_ident(per, &ida, ident);
	rc = kms_eccsi_verify(s->me.ibe->eccsi, s->me.params->kpak, ident,
			      id_len, m, m_len, sig);
	if (rc)
		return KMS_ERR_AUTH;
	/* 2. aP, sealed to B by A and naming A inside. */
	ad_len = blob_ad(ad, KMS_IB_I2 ^ 0x80, a, s->me.keys->id, per);
	n = open_ibe(s, kb, kb_len, ad, ad_len, kpt, sizeof(kpt));
	if (n < 0)
		return KMS_ERR_AUTH;
	r = (struct rd){ .p = kpt, .left = (size_t)n };
	if (take_id(&r, a2) || !(ap = take(&r, KMS_EC_POINT_LEN)) || r.left ||
	    strcmp(a2, a)) {
		rc = KMS_ERR_AUTH;
		goto out;
	}
	/* 3. The message under the key of aP. */
	rc = msg_key(ap, a, s->me.keys->id, per, mk, mad, &mad_len);
	if (rc)
		goto out;
	plain->len = 0;
	rc = kms_buf_reserve(plain, msg_len);
	if (rc)
		goto out;
	rc = kms_gcm_open(mk, mk + KMS_KEY_LEN, mad, mad_len, msg,
			  msg_len - KMS_TAG_LEN, msg + msg_len - KMS_TAG_LEN,
			  plain->p);
	if (rc) {
		OPENSSL_cleanse(plain->p, msg_len);
		rc = KMS_ERR_AUTH;
		goto out;
	}
	plain->len = msg_len - KMS_TAG_LEN;
out:
	OPENSSL_cleanse(kpt, sizeof(kpt));
	OPENSSL_cleanse(mk, sizeof(mk));
	return rc;
}

int kms_ibake_b_on_msg(struct kms_ibake *s, const uint8_t *in, size_t len,
		       struct kms_buf *plain, struct kms_ibake_received *rx)
{
	uint8_t type;
	struct rd r;
	int n, rc;

	if (s->st != ST_B_SENT_F3 && s->st != ST_B_GOT_MSG)
		return fail(s, KMS_ERR_INVAL, KMS_ST_BAD_TYPE);
	if (kms_ibake_peer_error(in, len))
		return fail(s, KMS_ERR_IO, kms_ibake_peer_error(in, len));
	if (frame_parse(in, len, &type, &r) ||
	    (type != KMS_IB_MSG && type != KMS_IB_END))
		return fail(s, KMS_ERR_MALFORMED, KMS_ST_MALFORMED);
	n = open_sealed(s, in, len, 0);
	if (n < 0)
		return fail(s, n, status_of(n));
	if (type == KMS_IB_END) {
		s->st = ST_B_DONE;
		return 1;
	}
	memset(rx, 0, sizeof(*rx));
	rc = b_open_item(s, plain, rx);
	if (rc == KMS_ERR_MALFORMED)
		return fail(s, rc, KMS_ST_MALFORMED);
	memcpy(s->cur_id, rx->msg_id, KMS_IBAKE_MSG_ID_LEN);
	s->have_cur = 1;
	s->st = ST_B_GOT_MSG;
	return rc;
}

int kms_ibake_b_ack(struct kms_ibake *s, int keep, struct kms_buf *out)
{
	int rc;

	if (s->st != ST_B_GOT_MSG)
		return fail(s, KMS_ERR_INVAL, KMS_ST_BAD_TYPE);
	rc = put_sealed(s, out, keep ? KMS_IB_NEXT : KMS_IB_DELETE, 1,
			s->cur_id, KMS_IBAKE_MSG_ID_LEN);
	if (rc)
		return fail(s, rc, KMS_ST_INTERNAL);
	s->st = ST_B_SENT_F3;
	return KMS_OK;
}
