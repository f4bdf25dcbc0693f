// SPDX-License-Identifier: Apache-2.0
/*
 * kms-client: plays one party of deferred delivery (TR 33.828 7.4.3.3).
 *
 *   kms-client token    --key A.key --peer ID-B --out ea.tok
 *                       [--ts-offset-ms N] [--force-mismatch]
 *   kms-client deposit  --server HOST:PORT --key AS.key --token ea.tok
 *                       --params-out params.txt --reply-out reply.txt
 *                       [--ts-offset-ms N] [--save-request F] [--timeout-ms N]
 *                       [--txid N] [--force-mismatch]
 *   kms-client open     --key A.key --token ea.tok --reply reply.txt
 *                       --out ka.txt
 *   kms-client retrieve --server HOST:PORT --key B.key --params params.txt
 *                       --out kb.txt [--ts-offset-ms N] [--save-request F]
 *                       [--timeout-ms N] [--txid N] [--force-mismatch]
 *   kms-client send     --server HOST:PORT --in F [--timeout-ms N]
 *   kms-client encrypt  --media-key ka.txt --in F --out F.enc
 *   kms-client decrypt  --media-key kb.txt --in F.enc --out F
 *
 * token: UE-A seals Ea(ID-A,ID-B). deposit: the mailbox AS adds Eas and asks
 * the KMS for Ea(K); it keeps the security parameters for B and forwards the
 * reply to A. open: UE-A opens Ea(K). retrieve: UE-B gets Eb(K). send:
 * replays a datagram saved by --save-request, once. encrypt/decrypt: the
 * media itself under K (what A and B do with K): AES-256-GCM, file =
 * "KMSM" | key_id (16) | nonce (12) | ct | tag (16), AD = "KMSM" | key_id. deposit and retrieve
 * try 3 times on a timeout, each time with a freshly sealed Eas or Eb.
 * Secrets come from files only. Text files hold "key = value" lines; key
 * outputs (ka.txt, kb.txt: key_id, k) are written with mode 0600. The
 * mailbox (deposit) never holds Ka, so it cannot open Ea(K).
 * --force-mismatch skips the local kind and identity checks (tests).
 * Exit: 0 ok, 1 usage or local error, 2 refused by the KMS, 3 no reply.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "kms_client.h"
#include "kms_err.h"
#include "kms_keyfile.h"
#include "kms_proto.h"
#include "kms_token.h"
#include "kms_version.h"

enum { EX_OK = 0, EX_LOCAL = 1, EX_REFUSED = 2, EX_TIMEOUT = 3 };

#define TRIES 3
#define HEX_DGRAM (2 * KMS_DGRAM_MAX + 1)
#define RECV_MAX 2048
#define KEY_REPLY_LEN (KMS_HDR_LEN + KMS_RESP_BODY_LEN)

/* ---- options ---- */

enum opt_id {
	OPT_KEY, OPT_PEER, OPT_OUT, OPT_TS_OFFSET, OPT_SERVER, OPT_TOKEN,
	OPT_PARAMS_OUT, OPT_REPLY_OUT, OPT_SAVE, OPT_TIMEOUT, OPT_TXID,
	OPT_REPLY, OPT_PARAMS, OPT_IN, OPT_FORCE, OPT_MEDIA, OPT_HELP, OPT__COUNT
};
#define B(x) (1u << (x))

static const struct option long_opts[] = {
	{ "key", required_argument, NULL, 256 + OPT_KEY },
	{ "peer", required_argument, NULL, 256 + OPT_PEER },
	{ "out", required_argument, NULL, 256 + OPT_OUT },
	{ "ts-offset-ms", required_argument, NULL, 256 + OPT_TS_OFFSET },
	{ "server", required_argument, NULL, 256 + OPT_SERVER },
	{ "token", required_argument, NULL, 256 + OPT_TOKEN },
	{ "params-out", required_argument, NULL, 256 + OPT_PARAMS_OUT },
	{ "reply-out", required_argument, NULL, 256 + OPT_REPLY_OUT },
	{ "save-request", required_argument, NULL, 256 + OPT_SAVE },
	{ "timeout-ms", required_argument, NULL, 256 + OPT_TIMEOUT },
	{ "txid", required_argument, NULL, 256 + OPT_TXID },
	{ "reply", required_argument, NULL, 256 + OPT_REPLY },
	{ "params", required_argument, NULL, 256 + OPT_PARAMS },
	{ "in", required_argument, NULL, 256 + OPT_IN },
	{ "force-mismatch", no_argument, NULL, 256 + OPT_FORCE },
	{ "media-key", required_argument, NULL, 256 + OPT_MEDIA },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct opts {
	const char *val[OPT__COUNT];
	unsigned seen;
	long long ts_offset;
	int timeout_ms;
	int have_txid;
	uint32_t txid;
};

static void usage(FILE *f)
{
	fputs("Usage:\n"
	      "  kms-client token    --key A.key --peer ID-B --out ea.tok\n"
	      "                      [--ts-offset-ms N] [--force-mismatch]\n"
	      "  kms-client deposit  --server HOST:PORT --key AS.key --token ea.tok\n"
	      "                      --params-out params.txt --reply-out reply.txt\n"
	      "                      [--ts-offset-ms N] [--save-request FILE]\n"
	      "                      [--timeout-ms N] [--txid N] [--force-mismatch]\n"
	      "  kms-client open     --key A.key --token ea.tok --reply reply.txt\n"
	      "                      --out ka.txt\n"
	      "  kms-client retrieve --server HOST:PORT --key B.key --params params.txt\n"
	      "                      --out kb.txt [--ts-offset-ms N] [--save-request FILE]\n"
	      "                      [--timeout-ms N] [--txid N] [--force-mismatch]\n"
	      "  kms-client send     --server HOST:PORT --in FILE [--timeout-ms N]\n"
	      "  kms-client encrypt  --media-key ka.txt --in FILE --out FILE.enc\n"
	      "  kms-client decrypt  --media-key kb.txt --in FILE.enc --out FILE\n"
	      "  kms-client --help | --version\n"
	      "HOST is a name, an IPv4 literal or [IPv6]. Secrets come from files.\n"
	      "--force-mismatch skips the local key kind / identity checks (tests).\n"
	      "Exit: 0 ok, 1 usage or local error, 2 refused by the KMS, 3 no reply.\n",
	      f);
}

static int parse_ll(const char *s, long long lo, long long hi, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 0);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* ---- helpers ---- */

static int timestamp(const struct opts *o, uint64_t *ts)
{
	uint64_t now = kms_now_ms();

	if (o->ts_offset < 0 && (uint64_t)-o->ts_offset > now) {
		kc_errmsg("--ts-offset-ms goes before the epoch");
		return -1;
	}
	*ts = now + (uint64_t)o->ts_offset;
	return 0;
}

static int save_request(const char *path, const uint8_t *req, size_t len)
{
	char hex[HEX_DGRAM + 1];

	kms_hex_encode(req, len, hex);
	strcat(hex, "\n");
	return kc_write_text(path, 0644, hex);
}

static uint32_t pick_txid(const struct opts *o)
{
	uint32_t t;

	if (o->have_txid)
		return o->txid;
	if (getrandom(&t, sizeof(t), 0) != sizeof(t))
		t = (uint32_t)time(NULL) ^ (uint32_t)getpid();
	return t;
}

static const char *type_name(uint8_t type)
{
	switch (type) {
	case KMS_T_DEPOSIT_REQ: return "DEPOSIT_REQ";
	case KMS_T_DEPOSIT_RESP: return "DEPOSIT_RESP";
	case KMS_T_RETRIEVE_REQ: return "RETRIEVE_REQ";
	case KMS_T_RETRIEVE_RESP: return "RETRIEVE_RESP";
	case KMS_T_ERROR: return "ERROR";
	}
	return "UNKNOWN";
}

/*
 * Save (optionally), send and parse. @return EX_OK with @resp parsed and of
 * type @want, EX_REFUSED after printing "<what> refused: STATUS", or
 * EX_LOCAL / EX_TIMEOUT.
 */
static int transact(const struct opts *o, const char *what, uint8_t want,
		    const uint8_t *req, size_t len, uint32_t txid,
		    uint8_t *rep, int *rep_len, struct kms_resp *resp)
{
	int n;

	if (o->val[OPT_SAVE] && save_request(o->val[OPT_SAVE], req, len))
		return EX_LOCAL;
	n = kc_udp_exchange(o->val[OPT_SERVER], req, len, 1, o->timeout_ms,
			    txid, rep, RECV_MAX);
	if (n <= 0)
		return n < 0 ? EX_LOCAL : EX_TIMEOUT;
	if (kms_resp_parse(rep, (size_t)n, resp) != KMS_OK) {
		kc_errmsg("%s: malformed reply (%d bytes)", what, n);
		return EX_LOCAL;
	}
	if (resp->hdr.type == KMS_T_ERROR) {
		fprintf(stderr, "%s refused: %s\n", what,
			kms_status_name(resp->status));
		return EX_REFUSED;
	}
	if (resp->hdr.type != want) {
		kc_errmsg("%s: unexpected reply type %s", what,
			  type_name(resp->hdr.type));
		return EX_LOCAL;
	}
	*rep_len = n;
	return EX_OK;
}

/* ---- subcommands ---- */

static int cmd_token(const struct opts *o)
{
	struct kms_keyfile kf;
	struct kms_id a, b;
	uint8_t tok[KMS_TOKEN_MAX];
	char hex[2 * KMS_TOKEN_MAX + 1], text[sizeof(hex) + 2 * KMS_ID_MAX + 64];
	uint64_t ts;
	int n, ret = EX_LOCAL;

	if (kc_key_read(o->val[OPT_KEY], &kf, "user", o->seen & B(OPT_FORCE)))
		return EX_LOCAL;
	if (kms_id_from_str(o->val[OPT_PEER], &b) != KMS_OK) {
		kc_errmsg("--peer: not a valid identity");
		goto out;
	}
	kms_id_from_str(kf.id, &a);     /* validated by kms_keyfile_read */
	if (timestamp(o, &ts))
		goto out;
	n = kms_token_seal(KMS_ROLE_A, &a, kf.gen, kf.key, ts, NULL, &a, &b,
			   tok, sizeof(tok));
	if (n < 0) {
		kc_errmsg("sealing Ea: %s", kms_strerror(n));
		goto out;
	}
	kms_hex_encode(tok, (size_t)n, hex);
	snprintf(text, sizeof(text), "id_a = %s\nid_b = %s\ntoken = %s\n",
		 kf.id, o->val[OPT_PEER], hex);
	if (kc_write_text(o->val[OPT_OUT], 0644, text) == 0)
		ret = EX_OK;
out:
	kms_keyfile_wipe(&kf);
	return ret;
}

static int cmd_deposit(const struct opts *o)
{
	static struct kc_tokfile t;
	struct kms_keyfile kf;
	struct kms_resp resp;
	struct kms_id as;
	uint8_t eas[KMS_TOKEN_MAX], req[KMS_DGRAM_MAX], rep[RECV_MAX];
	char kid[2 * KMS_KEY_ID_LEN + 1], hex[2 * KEY_REPLY_LEN + 1];
	char text[2 * KMS_TOKEN_MAX + 2 * KMS_ID_MAX + 256];
	uint32_t txid = pick_txid(o);
	uint64_t ts;
	int n, rep_len = 0, ret = EX_LOCAL;

	if (kc_tokfile_read(o->val[OPT_TOKEN], &t))
		return EX_LOCAL;
	if (kc_key_read(o->val[OPT_KEY], &kf, "as", o->seen & B(OPT_FORCE)))
		return EX_LOCAL;
	kms_id_from_str(kf.id, &as);
	/*
	 * A retry after a timeout seals a fresh Eas (new nonce and time): the
	 * KMS refuses a repeated Eas as a replay. If only the reply was lost,
	 * the first deposit stays unused until it expires.
	 */
	for (int attempt = 0; attempt < TRIES; attempt++) {
		if (timestamp(o, &ts))
			goto out;
		n = kms_token_seal(KMS_ROLE_AS, &as, kf.gen, kf.key, ts, NULL,
				   &t.a, &t.b, eas, sizeof(eas));
		if (n < 0) {
			kc_errmsg("sealing Eas: %s", kms_strerror(n));
			goto out;
		}
		n = kms_deposit_req_encode(txid, &t.a, &t.b, &as, t.tok,
					   (size_t)t.tok_len, eas, (size_t)n,
					   req, sizeof(req));
		if (n < 0) {
			kc_errmsg("encoding DEPOSIT_REQ: %s", kms_strerror(n));
			goto out;
		}
		ret = transact(o, "deposit", KMS_T_DEPOSIT_RESP, req, (size_t)n,
			       txid, rep, &rep_len, &resp);
		if (ret != EX_TIMEOUT)
			break;
	}
	kms_keyfile_wipe(&kf);          /* Kas is not needed any more */
	if (ret != EX_OK)
		goto out;
	ret = EX_LOCAL;
	if (rep_len != KEY_REPLY_LEN)   /* kms_resp_parse() checked it */
		goto out;
	/* The security parameters B fetches later; no key material. */
	kms_hex_encode(resp.key_id, KMS_KEY_ID_LEN, kid);
	snprintf(text, sizeof(text),
		 "id_a = %s\nid_b = %s\ntoken = %s\nkey_id = %s\nk_gen = %u\n"
		 "expiry_ms = %llu\n", kc_kv_get(&t.kv, "id_a"),
		 kc_kv_get(&t.kv, "id_b"), kc_kv_get(&t.kv, "token"), kid,
		 resp.k_gen, (unsigned long long)resp.expiry_ms);
	if (kc_write_text(o->val[OPT_PARAMS_OUT], 0644, text))
		goto out;
	/* Forwarded to A untouched: only A can open the keybox inside. */
	kms_hex_encode(rep, KEY_REPLY_LEN, hex);
	snprintf(text, sizeof(text), "reply = %s\n", hex);
	if (kc_write_text(o->val[OPT_REPLY_OUT], 0644, text))
		goto out;
	printf("deposit ok key_id=%s expiry_ms=%llu\n", kid,
	       (unsigned long long)resp.expiry_ms);
	ret = EX_OK;
out:
	kms_keyfile_wipe(&kf);
	return ret;
}

static int cmd_open(const struct opts *o)
{
	static struct kc_tokfile t;
	static struct kc_kv rkv;
	struct kms_keyfile kf;
	struct kms_resp resp;
	uint8_t rep[RECV_MAX], k[KMS_KEY_LEN];
	int n, rc, ret = EX_LOCAL;

	if (kc_tokfile_read(o->val[OPT_TOKEN], &t) ||
	    kc_kv_read(o->val[OPT_REPLY], &rkv))
		return EX_LOCAL;
	n = kc_kv_hex(&rkv, "reply", rep, KMS_HDR_LEN, sizeof(rep));
	if (n < 0)
		return EX_LOCAL;
	if (kms_resp_parse(rep, (size_t)n, &resp) != KMS_OK ||
	    resp.hdr.type != KMS_T_DEPOSIT_RESP) {
		kc_errmsg("%s: not a well-formed DEPOSIT_RESP",
			  o->val[OPT_REPLY]);
		return EX_LOCAL;
	}
	if (kc_key_read(o->val[OPT_KEY], &kf, "user", 0))
		return EX_LOCAL;
	if (strcmp(kf.id, kc_kv_get(&t.kv, "id_a"))) {
		kc_errmsg("%s is the key of %s, the token is from %s",
			  o->val[OPT_KEY], kf.id, kc_kv_get(&t.kv, "id_a"));
		goto out;
	}
	if (kc_token_gen(t.tok) != kf.gen) {
		kc_errmsg("the token was sealed with key generation %u, the "
			  "key file has %u", kc_token_gen(t.tok), kf.gen);
		goto out;
	}
	rc = kms_keybox_open(&resp, KMS_ROLE_A, kf.gen, kf.key, &t.a, &t.b,
			     t.nonce, k);
	if (rc == KMS_ERR_AUTH) {
		fprintf(stderr, "open failed: bad keybox\n");
		ret = EX_REFUSED;
		goto out;
	}
	if (rc != KMS_OK) {
		kc_errmsg("open: %s", kms_strerror(rc));
		goto out;
	}
	if (kc_write_key(o->val[OPT_OUT], resp.key_id, k) == 0)
		ret = EX_OK;
out:
	explicit_bzero(k, sizeof(k));
	kms_keyfile_wipe(&kf);
	return ret;
}

static int cmd_retrieve(const struct opts *o)
{
	static struct kc_tokfile t;
	struct kms_keyfile kf;
	struct kms_resp resp;
	struct kms_id self;
	const uint8_t *eb_nonce;
	uint8_t key_id[KMS_KEY_ID_LEN], eb[KMS_TOKEN_MAX], req[KMS_DGRAM_MAX];
	uint8_t rep[RECV_MAX], k[KMS_KEY_LEN];
	char kid[2 * KMS_KEY_ID_LEN + 1];
	uint32_t txid = pick_txid(o);
	uint64_t ts;
	int n, rc, rep_len, ret = EX_LOCAL;
	int force = !!(o->seen & B(OPT_FORCE));

	/* the params file is a token file plus key_id, k_gen, expiry_ms */
	if (kc_tokfile_read(o->val[OPT_PARAMS], &t) ||
	    kc_kv_hex(&t.kv, "key_id", key_id, KMS_KEY_ID_LEN,
		      KMS_KEY_ID_LEN) < 0)
		return EX_LOCAL;
	if (kc_key_read(o->val[OPT_KEY], &kf, "user", force))
		return EX_LOCAL;
	if (strcmp(kf.id, kc_kv_get(&t.kv, "id_b")) && !force) {
		kc_errmsg("%s is the key of %s but the deposit is for %s "
			  "(--force-mismatch sends it anyway)",
			  o->val[OPT_KEY], kf.id, kc_kv_get(&t.kv, "id_b"));
		goto out;
	}
	kms_id_from_str(kf.id, &self);
	/* As for deposits: a retry seals a fresh Eb, single-use at the KMS. */
	for (int attempt = 0; attempt < TRIES; attempt++) {
		if (timestamp(o, &ts))
			goto out;
		n = kms_token_seal(KMS_ROLE_B, &self, kf.gen, kf.key, ts, NULL,
				   &t.a, &t.b, eb, sizeof(eb));
		if (n < 0 || kc_token_nonce(eb, (size_t)n, &eb_nonce)) {
			kc_errmsg("sealing Eb: %s",
				  kms_strerror(n < 0 ? n : KMS_ERR_INVAL));
			goto out;
		}
		n = kms_retrieve_req_encode(txid, &t.a, &t.b, key_id, t.tok,
					    (size_t)t.tok_len, eb, (size_t)n,
					    req, sizeof(req));
		if (n < 0) {
			kc_errmsg("encoding RETRIEVE_REQ: %s", kms_strerror(n));
			goto out;
		}
		ret = transact(o, "retrieve", KMS_T_RETRIEVE_RESP, req,
			       (size_t)n, txid, rep, &rep_len, &resp);
		if (ret != EX_TIMEOUT)
			break;
	}
	if (ret != EX_OK)
		goto out;
	ret = EX_LOCAL;
	if (memcmp(resp.key_id, key_id, KMS_KEY_ID_LEN)) {
		kc_errmsg("retrieve: the reply is for another key id");
		goto out;
	}
	rc = kms_keybox_open(&resp, KMS_ROLE_B, kf.gen, kf.key, &t.a, &t.b,
			     eb_nonce, k);
	if (rc != KMS_OK) {
		kc_errmsg("retrieve: keybox does not open: %s",
			  kms_strerror(rc));
		goto out;
	}
	if (kc_write_key(o->val[OPT_OUT], resp.key_id, k))
		goto out;
	kms_hex_encode(resp.key_id, KMS_KEY_ID_LEN, kid);
	printf("retrieve ok key_id=%s\n", kid);
	ret = EX_OK;
out:
	explicit_bzero(k, sizeof(k));
	kms_keyfile_wipe(&kf);
	return ret;
}

static int cmd_send(const struct opts *o)
{
	static char text[2 * 65536 + 64];
	uint8_t req[65507], rep[RECV_MAX];
	struct kms_resp resp;
	char *hex, *eq, *w, *r;
	size_t len;
	uint32_t txid;
	int n;
	FILE *f = fopen(o->val[OPT_IN], "re");

	if (!f) {
		kc_errmsg("%s: %s", o->val[OPT_IN], strerror(errno));
		return EX_LOCAL;
	}
	len = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[len] = '\0';
	/* bare hex, or "request = hex"; whitespace ignored */
	eq = strchr(text, '=');
	hex = eq ? eq + 1 : text;
	for (w = r = hex; *r; r++)
		if (*r != ' ' && *r != '\t' && *r != '\n' && *r != '\r')
			*w++ = *r;
	*w = '\0';
	n = kms_hex_decode(hex, req, sizeof(req));
	if (n < KMS_HDR_LEN) {
		kc_errmsg("%s: expected the hex of a datagram (>= %d bytes)",
			  o->val[OPT_IN], KMS_HDR_LEN);
		return EX_LOCAL;
	}
	txid = kc_ld32(req + 4);
	n = kc_udp_exchange(o->val[OPT_SERVER], req, (size_t)n, 1,
			    o->timeout_ms, txid, rep, sizeof(rep));
	if (n <= 0)
		return n < 0 ? EX_LOCAL : EX_TIMEOUT;
	if (kms_resp_parse(rep, (size_t)n, &resp) != KMS_OK) {
		kc_errmsg("malformed reply (%d bytes)", n);
		return EX_LOCAL;
	}
	printf("reply: %s status=%s\n", type_name(resp.hdr.type),
	       kms_status_name(resp.status));
	return resp.hdr.type == KMS_T_ERROR ? EX_REFUSED : EX_OK;
}

/* ---- media under K (encrypt, decrypt) ---- */

#define MEDIA_MAGIC "KMSM"
#define MEDIA_HDR (4 + KMS_KEY_ID_LEN + KMS_NONCE_LEN)
#define MEDIA_MAX (256u << 20)

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 ||
	    (size_t)n > MEDIA_MAX || fseek(f, 0, SEEK_SET) ||
	    !(buf = malloc((size_t)n + 1)) ||
	    fread(buf, 1, (size_t)n, f) != (size_t)n) {
		kc_errmsg("%s: cannot read (or larger than %u bytes)", path,
			  MEDIA_MAX);
		free(buf);
		buf = NULL;
	} else {
		*len = (size_t)n;
	}
	if (f)
		fclose(f);
	return buf;
}

static int write_file(const char *path, const uint8_t *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	if (!f || fwrite(p, 1, n, f) != n || fflush(f) || fsync(fileno(f))) {
		kc_errmsg("%s: cannot write: %s", path, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	return fclose(f) ? -1 : 0;
}

static int cmd_media(const struct opts *o, int enc)
{
	struct kc_kv kv;
	uint8_t k[KMS_KEY_LEN], kid[KMS_KEY_ID_LEN], ad[4 + KMS_KEY_ID_LEN];
	uint8_t *in = NULL, *out = NULL;
	size_t len = 0, olen;
	int rc = EX_LOCAL;

	if (kc_kv_read(o->val[OPT_MEDIA], &kv) ||
	    kc_kv_hex(&kv, "k", k, KMS_KEY_LEN, KMS_KEY_LEN) != KMS_KEY_LEN ||
	    kc_kv_hex(&kv, "key_id", kid, KMS_KEY_ID_LEN, KMS_KEY_ID_LEN) !=
		    KMS_KEY_ID_LEN)
		goto out;
	memcpy(ad, MEDIA_MAGIC, 4);
	memcpy(ad + 4, kid, sizeof(kid));
	in = read_file(o->val[OPT_IN], &len);
	if (!in)
		goto out;
	if (enc) {
		olen = MEDIA_HDR + len + KMS_TAG_LEN;
		out = malloc(olen);
		if (!out)
			goto out;
		memcpy(out, ad, sizeof(ad));
		if (RAND_bytes(out + sizeof(ad), KMS_NONCE_LEN) != 1 ||
		    kms_gcm_seal(k, out + sizeof(ad), ad, sizeof(ad), in, len,
				 out + MEDIA_HDR, out + MEDIA_HDR + len))
			goto out;
	} else {
		if (len < MEDIA_HDR + KMS_TAG_LEN || memcmp(in, MEDIA_MAGIC, 4)) {
			kc_errmsg("%s: not a file made by kms-client encrypt",
				  o->val[OPT_IN]);
			goto out;
		}
		if (memcmp(in + 4, kid, sizeof(kid))) {
			kc_errmsg("%s was encrypted under another key id than "
				  "the one in %s", o->val[OPT_IN],
				  o->val[OPT_MEDIA]);
			rc = EX_REFUSED;
			goto out;
		}
		olen = len - MEDIA_HDR - KMS_TAG_LEN;
		out = malloc(olen + 1);
		if (!out)
			goto out;
		if (kms_gcm_open(k, in + sizeof(ad), ad, sizeof(ad),
				 in + MEDIA_HDR, olen, in + len - KMS_TAG_LEN,
				 out)) {
			kc_errmsg("%s does not decrypt under this K (altered, "
				  "or another K)", o->val[OPT_IN]);
			rc = EX_REFUSED;
			goto out;
		}
	}
	if (write_file(o->val[OPT_OUT], out, olen))
		goto out;
	rc = EX_OK;
out:
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(&kv, sizeof(kv));
	if (out && !enc)
		OPENSSL_cleanse(out, olen);
	free(in);
	free(out);
	return rc;
}

static int cmd_encrypt(const struct opts *o)
{
	return cmd_media(o, 1);
}

static int cmd_decrypt(const struct opts *o)
{
	return cmd_media(o, 0);
}

struct cmd {
	const char *name;
	int (*fn)(const struct opts *o);
	unsigned need, allow;
};

#define NET_OPTS (B(OPT_SAVE) | B(OPT_TIMEOUT) | B(OPT_TXID) | \
		  B(OPT_TS_OFFSET) | B(OPT_FORCE))

static const struct cmd cmds[] = {
	{ "token", cmd_token, B(OPT_KEY) | B(OPT_PEER) | B(OPT_OUT),
	  B(OPT_TS_OFFSET) | B(OPT_FORCE) },
	{ "deposit", cmd_deposit, B(OPT_SERVER) | B(OPT_KEY) | B(OPT_TOKEN) |
	  B(OPT_PARAMS_OUT) | B(OPT_REPLY_OUT), NET_OPTS },
	{ "open", cmd_open, B(OPT_KEY) | B(OPT_TOKEN) | B(OPT_REPLY) |
	  B(OPT_OUT), 0 },
	{ "retrieve", cmd_retrieve, B(OPT_SERVER) | B(OPT_KEY) |
	  B(OPT_PARAMS) | B(OPT_OUT), NET_OPTS },
	{ "send", cmd_send, B(OPT_SERVER) | B(OPT_IN), B(OPT_TIMEOUT) },
	{ "encrypt", cmd_encrypt, B(OPT_MEDIA) | B(OPT_IN) | B(OPT_OUT), 0 },
	{ "decrypt", cmd_decrypt, B(OPT_MEDIA) | B(OPT_IN) | B(OPT_OUT), 0 },
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
	long long v;
	int c;

	memset(o, 0, sizeof(*o));
	o->timeout_ms = 1000;
	while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
		int id = c - 256;

		if (c == 'h')
			id = OPT_HELP;
		else if (id < 0 || id >= OPT__COUNT)
			return -1;  /* getopt printed why */
		if (o->seen & B(id)) {
			kc_errmsg("option --%s given twice",
				  long_opts[id].name);
			return -1;
		}
		o->seen |= B(id);
		o->val[id] = optarg;
		if (id == OPT_TS_OFFSET &&
		    parse_ll(optarg, -(1LL << 50), 1LL << 50, &o->ts_offset)) {
			kc_errmsg("--ts-offset-ms: not an integer: '%s'",
				  optarg);
			return -1;
		} else if (id == OPT_TIMEOUT) {
			if (parse_ll(optarg, 1, 600000, &v)) {
				kc_errmsg("--timeout-ms: 1..600000, got '%s'",
					  optarg);
				return -1;
			}
			o->timeout_ms = (int)v;
		} else if (id == OPT_TXID) {
			if (parse_ll(optarg, 0, UINT32_MAX, &v)) {
				kc_errmsg("--txid: 0..4294967295, got '%s'",
					  optarg);
				return -1;
			}
			o->txid = (uint32_t)v;
			o->have_txid = 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	const struct cmd *cmd = NULL;
	struct opts o;

	if (argc < 2) {
		usage(stderr);
		return EX_LOCAL;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return EX_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		kms_version_print(stdout, "kms-client");
		return EX_OK;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			cmd = &cmds[i];
	if (!cmd) {
		kc_errmsg("unknown command '%s' (try --help)", argv[1]);
		return EX_LOCAL;
	}
	if (parse_opts(argc - 1, argv + 1, &o)) {
		kc_errmsg("try 'kms-client --help'");
		return EX_LOCAL;
	}
	if (o.seen & B(OPT_HELP)) {
		usage(stdout);
		return EX_OK;
	}
	if (optind < argc - 1) {
		kc_errmsg("unexpected argument '%s'", argv[optind + 1]);
		return EX_LOCAL;
	}
	for (int id = 0; id < OPT__COUNT; id++) {
		if ((cmd->need & B(id)) && !(o.seen & B(id))) {
			kc_errmsg("%s: --%s is required", cmd->name,
				  long_opts[id].name);
			return EX_LOCAL;
		}
		if ((o.seen & B(id)) && !((cmd->need | cmd->allow) & B(id))) {
			kc_errmsg("%s: --%s does not apply", cmd->name,
				  long_opts[id].name);
			return EX_LOCAL;
		}
	}
	/* Replies are printed line by line; a pipe must still see them. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	return cmd->fn(&o);
}
