/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_proto.h
 * @brief Wire format version 1: parse and build datagrams, token crypto.
 *
 * docs/PROTOCOL.md is the normative description; this header is its C
 * mirror. All integers are big-endian. One request per UDP datagram, one
 * reply per request.
 *
 *   header (12 B): 'K' 'M' | version=1 | type | txid u32 | body_len u16 | 0 u16
 *   ID           : len u8 (1..128) | bytes (printable ASCII 0x21..0x7e)
 *   TOKEN        : role u8 | gen u32 | ts_ms u64 | nonce[12] | ct_len u16 |
 *                  ct[ct_len] | tag[16]
 *   token plaintext: len u8 | ID-A | len u8 | ID-B
 *   token AD     : "KMS1-TOK" | role u8 | len u8 | party id | gen u32 | ts_ms u64
 *   KEYBOX       : nonce[12] | ct[32] | tag[16]         (K is 32 bytes)
 *   keybox AD    : "KMS1-KEY" | reply type u8 | role u8 | recipient gen u32 |
 *                  len u8 | ID-A | len u8 | ID-B | key_id[16] | k_gen u32 |
 *                  expiry_ms u64 | request token nonce[12]
 *
 *   DEPOSIT_REQ  : ID(A) ID(B) ID(AS) TOKEN(Ea) TOKEN(Eas)
 *   RETRIEVE_REQ : ID(A) ID(B) key_id[16] TOKEN(Ea) TOKEN(Eb)
 *   DEPOSIT_RESP / RETRIEVE_RESP : key_id[16] k_gen u32 expiry_ms u64 KEYBOX
 *   ERROR        : status u16
 *
 * Thread safety: every function here is reentrant; none keeps state.
 * Parsed structures point into the caller's datagram buffer and are valid
 * only as long as that buffer is.
 */
#ifndef KMS_PROTO_H
#define KMS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define KMS_PROTO_VERSION 1
#define KMS_HDR_LEN 12
#define KMS_ID_MAX 128
#define KMS_NONCE_LEN 12
#define KMS_TAG_LEN 16
#define KMS_KEY_LEN 32          /* every party key and every K: AES-256 */
#define KMS_KEY_ID_LEN 16
#define KMS_PAIR_HASH_LEN 32
#define KMS_TOKEN_FIXED (1 + 4 + 8 + KMS_NONCE_LEN + 2 + KMS_TAG_LEN)
#define KMS_TOKEN_PT_MAX (2 + 2 * KMS_ID_MAX)
#define KMS_TOKEN_MAX (KMS_TOKEN_FIXED + KMS_TOKEN_PT_MAX)
#define KMS_KEYBOX_LEN (KMS_NONCE_LEN + KMS_KEY_LEN + KMS_TAG_LEN)
#define KMS_RESP_BODY_LEN (KMS_KEY_ID_LEN + 4 + 8 + KMS_KEYBOX_LEN)
/* IBE_KEY_RESP: kgc_id | nonce | ct(RSK 257 | SSK 32 | PVT 65) | tag */
#define KMS_KGC_ID_LEN 8
#define KMS_IBE_KEYS_PT_LEN (257 + 32 + 65)
#define KMS_IBE_RESP_BODY_LEN (KMS_KGC_ID_LEN + KMS_NONCE_LEN + \
			       KMS_IBE_KEYS_PT_LEN + KMS_TAG_LEN)
#define KMS_IBE_PERIOD_STR 7    /* "YYYY-MM" */
/* The largest reply the KMS sends (IBE_KEY_RESP; key replies are 100). */
#define KMS_REPLY_MAX (KMS_HDR_LEN + KMS_IBE_RESP_BODY_LEN)
#define KMS_DGRAM_MAX 1472      /* largest request we accept (fits 1500 MTU) */

enum kms_msg_type {
	KMS_T_DEPOSIT_REQ = 0x01,
	KMS_T_DEPOSIT_RESP = 0x02,
	KMS_T_RETRIEVE_REQ = 0x03,
	KMS_T_RETRIEVE_RESP = 0x04,
	KMS_T_IBE_KEY_REQ = 0x05,   /* a party asks for its IBE private keys */
	KMS_T_IBE_KEY_RESP = 0x06,
	KMS_T_ERROR = 0x7f,
};

/** Token roles: whose key sealed the token. */
enum kms_role {
	KMS_ROLE_A = 1,   /**< UE-A, key Ka */
	KMS_ROLE_AS = 2,  /**< B's mailbox AS, key Kas */
	KMS_ROLE_B = 3,   /**< UE-B, key Kb */
	KMS_ROLE_IBE = 4, /**< any party asking for its IBE keys, its own key */
};

/** A length-delimited identity, pointing into a buffer. */
struct kms_id {
	const uint8_t *p;
	uint8_t len;
};

/** A parsed token; pointers into the datagram. */
struct kms_token {
	uint8_t role;
	uint32_t gen;           /**< generation of the sealing party key */
	uint64_t ts_ms;         /**< sender's clock, ms since the Unix epoch */
	const uint8_t *nonce;   /**< KMS_NONCE_LEN bytes: GCM IV and replay id */
	const uint8_t *ct;
	uint16_t ct_len;
	const uint8_t *tag;     /**< KMS_TAG_LEN bytes */
	const uint8_t *raw;     /**< the whole encoded token */
	uint16_t raw_len;
};

struct kms_hdr {
	uint8_t version;
	uint8_t type;
	uint32_t txid;
	uint16_t body_len;
};

/** A parsed request (DEPOSIT_REQ, RETRIEVE_REQ or IBE_KEY_REQ). For
 *  IBE_KEY_REQ: id_a is the asking party ID-X, id_b the period
 *  ("YYYY-MM"), tok_x its token (role IBE, pt = ID-X | period), tok_a and
 *  id_as are empty. */
struct kms_req {
	struct kms_hdr hdr;
	struct kms_id id_a, id_b;
	struct kms_id id_as;                  /**< DEPOSIT only */
	const uint8_t *key_id;                /**< RETRIEVE only, 16 bytes */
	struct kms_token tok_a;               /**< Ea(ID-A,ID-B) */
	struct kms_token tok_x;               /**< Eas (DEPOSIT) or Eb (RETRIEVE) */
};

/** A parsed reply (DEPOSIT_RESP, RETRIEVE_RESP or ERROR). */
struct kms_resp {
	struct kms_hdr hdr;
	uint16_t status;                      /**< KMS_ST_OK unless ERROR */
	const uint8_t *key_id;                /**< 16 bytes */
	uint32_t k_gen;
	uint64_t expiry_ms;
	const uint8_t *keybox;                /**< KMS_KEYBOX_LEN bytes */
	const uint8_t *kgc_id;                /**< IBE_KEY_RESP: KMS_KGC_ID_LEN */
	const uint8_t *ibe_box;               /**< IBE_KEY_RESP: nonce|ct|tag */
};

/**
 * Parse the 12-byte header. Checks magic, reserved bytes and that body_len
 * equals len - KMS_HDR_LEN (no truncation, no trailing bytes). Does not
 * check the version: the caller answers BAD_VERSION itself.
 * @return KMS_OK, or KMS_ERR_MALFORMED (then @p out is untouched).
 */
int kms_hdr_parse(const uint8_t *buf, size_t len, struct kms_hdr *out);

/**
 * Parse a whole request datagram (header included). Every length field is
 * checked against the end of the buffer; IDs must be 1..KMS_ID_MAX printable
 * bytes; token roles must fit the message (Ea: A; DEPOSIT: AS; RETRIEVE: B;
 * IBE_KEY_REQ: its one token IBE); ct_len must be 2..KMS_TOKEN_PT_MAX;
 * nothing may follow the last field.
 * Order: header (else drop), reply type (DEPOSIT_RESP, RETRIEVE_RESP,
 * IBE_KEY_RESP or ERROR, any version: drop, so servers never answer each
 * other's replies),
 * version, type, size (> KMS_DGRAM_MAX is MALFORMED), body structure, then
 * token roles (only of a well-formed body).
 * @p out is written in full on success. On failure with a non-OK @p status
 * only @p out->hdr is written (so the caller can echo hdr.txid in its ERROR
 * reply); on a drop @p out is untouched.
 * @return KMS_OK; KMS_ERR_MALFORMED with @p status set to the wire status to
 *         answer (MALFORMED, BAD_VERSION, BAD_TYPE, WRONG_ROLE) when the
 *         header parsed, or to KMS_ST_OK when even the header did not (the
 *         datagram is then to be dropped, not answered).
 */
int kms_req_parse(const uint8_t *buf, size_t len, struct kms_req *out,
		  uint16_t *status);

/** Parse a reply datagram. @return KMS_OK or KMS_ERR_MALFORMED. */
int kms_resp_parse(const uint8_t *buf, size_t len, struct kms_resp *out);

/**
 * SHA-256("KMS1-PAIR" | len u8 | ID-A | len u8 | ID-B). The pair's LMDB key
 * and, through kms_pair_worker(), the worker that owns the pair.
 */
void kms_pair_hash(const struct kms_id *a, const struct kms_id *b,
		   uint8_t out[KMS_PAIR_HASH_LEN]);

/**
 * A reusable SHA-256 context for the request path (kms_pair_hash allocates
 * on every call; these do not). One per thread; kms_hasher_new returns NULL
 * when out of memory.
 */
struct kms_hasher;
struct kms_hasher *kms_hasher_new(void);
void kms_hasher_free(struct kms_hasher *h);
void kms_hasher_pair(struct kms_hasher *h, const struct kms_id *a,
		     const struct kms_id *b, uint8_t out[KMS_PAIR_HASH_LEN]);
void kms_hasher_sha256(struct kms_hasher *h, const void *data, size_t len,
		       uint8_t out[32]);

/** Worker index for a pair hash: first 8 bytes (big-endian) mod n. */
unsigned kms_pair_worker(const uint8_t hash[KMS_PAIR_HASH_LEN], unsigned n);

/**
 * Cheap pre-parse for RX stages: find ID-A and ID-B of a request datagram
 * without validating the rest. Checks only the magic, that both ID length
 * bytes are 1..KMS_ID_MAX and that both IDs lie inside @p len; not the
 * version, type, body_len or the ID bytes (kms_req_parse judges those).
 * @return KMS_OK or KMS_ERR_MALFORMED (then @p a and @p b are untouched).
 */
int kms_req_peek_pair(const uint8_t *buf, size_t len, struct kms_id *a,
		      struct kms_id *b);

/** Build a token's associated data into @p ad (>= 8+1+1+128+4+8 bytes).
 *  @return its length. */
size_t kms_token_ad(uint8_t role, const struct kms_id *party, uint32_t gen,
		    uint64_t ts_ms, uint8_t *ad);

/** Build a keybox's associated data (see the file comment) into @p ad
 *  (>= 8+1+1+4+2+2*128+16+4+8+12 bytes). @return its length. */
size_t kms_keybox_ad(uint8_t reply_type, uint8_t role, uint32_t recipient_gen,
		     const struct kms_id *a, const struct kms_id *b,
		     const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t k_gen,
		     uint64_t expiry_ms, const uint8_t req_nonce[KMS_NONCE_LEN],
		     uint8_t *ad);

/** Token plaintext (len|A|len|B) into @p out (>= KMS_TOKEN_PT_MAX).
 *  @return its length. */
size_t kms_token_pt(const struct kms_id *a, const struct kms_id *b,
		    uint8_t *out);

/**
 * Check decrypted token plaintext against the plain IDs in constant time
 * with respect to the IDs' content. @return 1 if equal, 0 if not.
 */
int kms_token_pt_matches(const uint8_t *pt, size_t pt_len,
			 const struct kms_id *a, const struct kms_id *b);

/* ---- encoders: each writes a whole datagram, returns its length or a
 *      negative enum kms_err (KMS_ERR_SPACE, KMS_ERR_INVAL) ---- */

/** Encode a token from its parts (ct and tag already computed). */
int kms_token_encode(uint8_t role, uint32_t gen, uint64_t ts_ms,
		     const uint8_t nonce[KMS_NONCE_LEN], const uint8_t *ct,
		     uint16_t ct_len, const uint8_t tag[KMS_TAG_LEN],
		     uint8_t *out, size_t cap);

int kms_deposit_req_encode(uint32_t txid, const struct kms_id *a,
			   const struct kms_id *b, const struct kms_id *as,
			   const uint8_t *tok_a, size_t tok_a_len,
			   const uint8_t *tok_as, size_t tok_as_len,
			   uint8_t *out, size_t cap);

int kms_retrieve_req_encode(uint32_t txid, const struct kms_id *a,
			    const struct kms_id *b,
			    const uint8_t key_id[KMS_KEY_ID_LEN],
			    const uint8_t *tok_a, size_t tok_a_len,
			    const uint8_t *tok_b, size_t tok_b_len,
			    uint8_t *out, size_t cap);

/** DEPOSIT_RESP or RETRIEVE_RESP (@p type says which). */
int kms_key_resp_encode(uint8_t type, uint32_t txid,
			const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t k_gen,
			uint64_t expiry_ms,
			const uint8_t keybox[KMS_KEYBOX_LEN], uint8_t *out,
			size_t cap);

int kms_error_encode(uint32_t txid, uint16_t status, uint8_t *out, size_t cap);

/** IBE_KEY_REQ: ID-X, the period (as an ID) and the role-IBE token. */
int kms_ibe_req_encode(uint32_t txid, const struct kms_id *x,
		       const struct kms_id *period, const uint8_t *tok,
		       size_t tok_len, uint8_t *out, size_t cap);

/** IBE_KEY_RESP from kgc_id and box = nonce | ct | tag. */
int kms_ibe_resp_encode(uint32_t txid, const uint8_t kgc_id[KMS_KGC_ID_LEN],
			const uint8_t box[KMS_IBE_RESP_BODY_LEN -
					  KMS_KGC_ID_LEN],
			uint8_t *out, size_t cap);

/** The IBE_KEY_RESP box's AD: "KMS1-IBE" | ID-X | period | gen | kgc_id |
 *  request token nonce into @p ad (>= 8 + 2 + 128 + 7 + 4 + 8 + 12).
 *  @return its length. */
size_t kms_ibe_resp_ad(const struct kms_id *x, const struct kms_id *period,
		       uint32_t gen, const uint8_t kgc_id[KMS_KGC_ID_LEN],
		       const uint8_t req_nonce[KMS_NONCE_LEN], uint8_t *ad);

/** Make a struct kms_id from a C string; @return KMS_ERR_INVAL if it is not
 *  1..KMS_ID_MAX printable bytes. */
int kms_id_from_str(const char *s, struct kms_id *out);

/** 1 if @p id is 1..KMS_ID_MAX bytes of 0x21..0x7e, else 0. */
int kms_id_valid(const struct kms_id *id);

#endif /* KMS_PROTO_H */
