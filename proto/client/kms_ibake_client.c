// SPDX-License-Identifier: Apache-2.0
/*
 * kms-ibake: UE-A and UE-B of MIKEY-IBAKE deferred delivery (TR 33.828
 * 7.6.2.5), and the fetch of a party's IBE private keys from the KMS.
 *
 *   kms-ibake keys  --server HOST:PORT --key X.key --params ibe.params
 *                   --out X.ibe [--period YYYY-MM] [--timeout-ms N]
 *                   [--save-request F]
 *   kms-ibake send  --mailbox HOST:PORT --mailbox-id ID-MB --to ID-B
 *                   --keys A.ibe --params ibe.params --in FILE
 *                   [--as ID] [--timeout-ms N]
 *   kms-ibake fetch --mailbox HOST:PORT --mailbox-id ID-MB --keys B.ibe
 *                   --params ibe.params --out-dir DIR [--keep]
 *
 * keys: party X asks the KMS (IBE_KEY_REQ, authenticated by a fresh token
 * under X's enrolled key) for its RSK and SSK/PVT of a period (default:
 * this month), checks them against the public parameters and writes them
 * (mode 0600). send: UE-A leaves FILE in B's mailbox; prints the message
 * id once the mailbox acknowledged its durable commit. fetch: UE-B fetches
 * every message, verifies the sender (ECCSI) and decrypts into
 * DIR/<msg id>.msg, then has the mailbox delete it (--keep: leave it).
 * --as ID claims another identity in I1 (tests: the mailbox must refuse).
 * $KMS_IBAKE_SECRETS_OUT (tests only) makes send write aP and the message
 * key to that file so a test can show the mailbox never saw them.
 * Exit: 0 ok, 1 usage or local error, 2 refused (or a message failed
 * verification), 3 no answer.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "kms_client.h"
#include "kms_err.h"
#include "kms_ibake.h"
#include "kms_keyfile.h"
#include "kms_token.h"
#include "kms_version.h"

enum { EX_OK = 0, EX_LOCAL = 1, EX_REFUSED = 2, EX_TIMEOUT = 3 };

struct opts {
	const char *server, *key, *params, *out, *period, *mailbox, *mb_id,
		*to, *keys, *in, *out_dir, *as, *save;
	int timeout_ms, keep;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage:\n"
		"  kms-ibake keys  --server HOST:PORT --key X.key --params P --out X.ibe\n"
		"                  [--period YYYY-MM] [--timeout-ms N] [--save-request F]\n"
		"  kms-ibake send  --mailbox HOST:PORT --mailbox-id ID-MB --to ID-B\n"
		"                  --keys A.ibe --params P --in FILE [--as ID] [--timeout-ms N]\n"
		"  kms-ibake fetch --mailbox HOST:PORT --mailbox-id ID-MB --keys B.ibe\n"
		"                  --params P --out-dir DIR [--keep] [--timeout-ms N]\n"
		"  kms-ibake --help | --version\n"
		"keys: ask the KMS (IBE_KEY_REQ, authenticated with the enrolled key\n"
		"  X.key) for the party's SAKKE and ECCSI keys of one month (--period,\n"
		"  default this month) and write them to X.ibe (0600); P is the file of\n"
		"  kmsctl ibe show --out. --save-request F also writes the request sent.\n"
		"send: A leaves FILE in B's mailbox (MIKEY-IBAKE with the mailbox, then\n"
		"  the deposit); --as ID claims another identity than A.ibe's (tests:\n"
		"  the mailbox must refuse the spoofed sender).\n"
		"fetch: B authenticates to its mailbox and writes every message to DIR,\n"
		"  with its verified sender; --keep leaves them in the mailbox.\n"
		"--timeout-ms N: give up on an answer after N ms (default 10000).\n"
		"Exit: 0 ok, 1 usage or local error, 2 refused or not verified, 3 no answer.\n");
}

/* ---------------------------------------------------------------- keys */

static int cmd_keys(const struct opts *o)
{
	uint8_t tok[KMS_TOKEN_MAX], req[KMS_DGRAM_MAX], rep[2048];
	uint8_t ad[8 + 2 + 2 * KMS_ID_MAX + 4 + KMS_KGC_ID_LEN + KMS_NONCE_LEN];
	uint8_t pt[KMS_IBE_KEYS_PT_LEN];
	char period[KMS_IBE_PERIOD_LEN + 1];
	struct kms_ibe_params params;
	struct kms_ibe_keys keys;
	struct kms_keyfile kf;
	struct kms_ibe *ibe = NULL;
	struct kms_id x, per;
	struct kms_resp r;
	const uint8_t *nonce;
	uint32_t txid;
	int n, len, rc = EX_LOCAL;

	if (!o->server || !o->key || !o->params || !o->out) {
		usage(stderr);
		return EX_LOCAL;
	}
	if (kms_ibe_params_read(o->params, &params)) {
		kc_errmsg("%s: not an IBE parameter file", o->params);
		return EX_LOCAL;
	}
	if (o->period)
		snprintf(period, sizeof(period), "%s", o->period);
	else
		kms_ibe_period(kms_now_ms(), period);
	if (!kms_ibe_period_valid(period, strlen(period)) &&
	    !(o->period && getenv("KMS_IBAKE_ANY_PERIOD"))) {
		kc_errmsg("--period %s: want YYYY-MM", period);
		return EX_LOCAL;
	}
	if (kc_key_read(o->key, &kf, "user", 1))
		return EX_LOCAL;
	memset(&keys, 0, sizeof(keys));
	kms_id_from_str(kf.id, &x);
	per.p = (const uint8_t *)period;
	per.len = (uint8_t)strlen(period);
	n = kms_token_seal(KMS_ROLE_IBE, &x, kf.gen, kf.key, kms_now_ms(), NULL,
			   &x, &per, tok, sizeof(tok));
	if (n < 0) {
		kc_errmsg("sealing the token: %s", kms_strerror(n));
		goto out;
	}
	nonce = tok + 1 + 4 + 8;
	if (RAND_bytes((uint8_t *)&txid, sizeof(txid)) != 1)
		goto out;
	len = kms_ibe_req_encode(txid, &x, &per, tok, (size_t)n, req,
				 sizeof(req));
	if (len < 0) {
		kc_errmsg("encoding the request: %s", kms_strerror(len));
		goto out;
	}
	if (o->save) { /* tests replay it with kms-client send */
		char hex[2 * KMS_DGRAM_MAX + 2];

		kms_hex_encode(req, (size_t)len, hex);
		strcat(hex, "\n");
		if (kc_write_text(o->save, 0644, hex))
			goto out;
	}
	n = kc_udp_exchange(o->server, req, (size_t)len, 1, o->timeout_ms, txid,
			    rep, sizeof(rep));
	if (n < 0)
		goto out;
	if (n == 0) {
		rc = EX_TIMEOUT;
		goto out;
	}
	if (kms_resp_parse(rep, (size_t)n, &r) || r.hdr.txid != txid) {
		kc_errmsg("malformed reply");
		rc = EX_REFUSED;
		goto out;
	}
	if (r.hdr.type == KMS_T_ERROR) {
		kc_errmsg("refused: %s", kms_status_name(r.status));
		rc = EX_REFUSED;
		goto out;
	}
	if (r.hdr.type != KMS_T_IBE_KEY_RESP ||
	    memcmp(r.kgc_id, params.kgc_id, KMS_KGC_ID_LEN)) {
		kc_errmsg("the reply is not from the KGC of %s", o->params);
		rc = EX_REFUSED;
		goto out;
	}
	n = (int)kms_ibe_resp_ad(&x, &per, kf.gen, params.kgc_id, nonce, ad);
	if (kms_gcm_open(kf.key, r.ibe_box, ad, (size_t)n,
			 r.ibe_box + KMS_NONCE_LEN, sizeof(pt),
			 r.ibe_box + KMS_NONCE_LEN + sizeof(pt), pt)) {
		kc_errmsg("the reply does not open under %s's key", kf.id);
		rc = EX_REFUSED;
		goto out;
	}
	snprintf(keys.id, sizeof(keys.id), "%s", kf.id);
	memcpy(keys.period, period, sizeof(keys.period));
	memcpy(keys.rsk, pt, KMS_SAKKE_POINT_LEN);
	memcpy(keys.ssk, pt + KMS_SAKKE_POINT_LEN, KMS_ECCSI_SCALAR_LEN);
	memcpy(keys.pvt, pt + KMS_SAKKE_POINT_LEN + KMS_ECCSI_SCALAR_LEN,
	       KMS_ECCSI_POINT_LEN);
	/* Never trust the KGC blindly: RFC 6508 6.1.2 and RFC 6507 5.1.2. */
	if (kms_ibe_new(&ibe) || kms_ibe_keys_check(ibe, &params, &keys)) {
		kc_errmsg("the issued keys do not check against %s", o->params);
		rc = EX_REFUSED;
		goto out;
	}
	if (kms_ibe_keys_write(o->out, &keys)) {
		kc_errmsg("%s: cannot write", o->out);
		goto out;
	}
	printf("keys: id=%s period=%s written to %s\n", keys.id, keys.period,
	       o->out);
	rc = EX_OK;
out:
	OPENSSL_cleanse(pt, sizeof(pt));
	kms_ibe_keys_wipe(&keys);
	kms_keyfile_wipe(&kf);
	kms_ibe_free(ibe);
	return rc;
}

/* ---------------------------------------------------------------- TCP */

static int tcp_connect(const char *hostport, int timeout_ms)
{
	char host[256], *port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	struct timeval tv = { .tv_sec = timeout_ms / 1000,
			      .tv_usec = (timeout_ms % 1000) * 1000 };
	int fd = -1, rc;

	snprintf(host, sizeof(host), "%s", hostport);
	port = strrchr(host, ':');
	if (!port) {
		kc_errmsg("%s: want HOST:PORT", hostport);
		return -1;
	}
	*port++ = 0;
	if (host[0] == '[' && port[-2] == ']') {
		port[-2] = 0;
		memmove(host, host + 1, strlen(host));
	}
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		kc_errmsg("%s: %s", hostport, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (!connect(fd, ai->ai_addr, ai->ai_addrlen))
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		kc_errmsg("%s: cannot connect: %s", hostport, strerror(errno));
	return fd;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = recv(fd, p, n, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Send @p out (and empty it), then read one frame into @p in.
 * @return 0, EX_TIMEOUT (no or short answer), EX_LOCAL. */
static int exchange(int fd, struct kms_buf *out, struct kms_buf *in)
{
	uint8_t pre[4];
	uint32_t n;

	if (out->len && write_all(fd, out->p, out->len)) {
		kc_errmsg("send: %s", strerror(errno));
		return EX_TIMEOUT;
	}
	out->len = 0;
	if (read_all(fd, pre, 4)) {
		kc_errmsg("no answer from the mailbox");
		return EX_TIMEOUT;
	}
	n = kms_ibake_frame_len(pre, KMS_IBAKE_FRAME_MAX);
	if (!n) {
		kc_errmsg("the mailbox sent a malformed frame");
		return EX_LOCAL;
	}
	in->len = 0;
	if (kms_buf_reserve(in, 4 + (size_t)n))
		return EX_LOCAL;
	memcpy(in->p, pre, 4);
	if (read_all(fd, in->p + 4, n)) {
		kc_errmsg("the mailbox closed mid-frame");
		return EX_TIMEOUT;
	}
	in->len = 4 + (size_t)n;
	return 0;
}

struct party {
	struct kms_ibe *ibe;
	struct kms_ibe_params params;
	struct kms_ibe_keys keys;
	struct kms_ibake *s;
};

static int party_open(const struct opts *o, struct party *p)
{
	struct kms_ibake_party me;

	memset(p, 0, sizeof(*p));
	if (kms_ibe_params_read(o->params, &p->params)) {
		kc_errmsg("%s: not an IBE parameter file", o->params);
		return -1;
	}
	if (kms_ibe_keys_read(o->keys, &p->keys)) {
		kc_errmsg("%s: not an IBE key file", o->keys);
		return -1;
	}
	if (kms_ibe_new(&p->ibe))
		return -1;
	if (o->as)
		snprintf(p->keys.id, sizeof(p->keys.id), "%s", o->as);
	me = (struct kms_ibake_party){ .ibe = p->ibe, .params = &p->params,
				       .keys = &p->keys };
	return kms_ibake_new(&me, &p->s) ? -1 : 0;
}

static void party_close(struct party *p)
{
	kms_ibake_free(p->s);
	kms_ibe_free(p->ibe);
	kms_ibe_keys_wipe(&p->keys);
}

static int refused(struct party *p, const char *step)
{
	kc_errmsg("%s: refused: %s", step,
		  kms_status_name(kms_ibake_status(p->s)));
	return EX_REFUSED;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) || st.st_size > KMS_IBAKE_FRAME_MAX - 8192) {
		kc_errmsg("%s: cannot read (or larger than %u bytes)", path,
			  KMS_IBAKE_FRAME_MAX - 8192);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size + 1);
	for (size_t got = 0; buf && got < (size_t)st.st_size;) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			kc_errmsg("%s: read: %s", path,
				  r ? strerror(errno) : "short file");
			free(buf);
			buf = NULL;
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void dump_secrets(const struct kms_ibake *s)
{
	const char *path = getenv("KMS_IBAKE_SECRETS_OUT");
	uint8_t ap[KMS_EC_POINT_LEN], mk[KMS_KEY_LEN];
	char hap[2 * sizeof(ap) + 1], hmk[2 * sizeof(mk) + 1], text[512];

	if (!path || kms_ibake_a_secrets(s, ap, mk))
		return;
	kms_hex_encode(ap, sizeof(ap), hap);
	kms_hex_encode(mk, sizeof(mk), hmk);
	snprintf(text, sizeof(text), "ap = %s\nmk = %s\n", hap, hmk);
	kc_write_text(path, 0600, text);
	OPENSSL_cleanse(text, sizeof(text));
	OPENSSL_cleanse(mk, sizeof(mk));
}

static int cmd_send(const struct opts *o)
{
	struct kms_buf out = { 0 }, in = { 0 };
	uint8_t msg_id[KMS_IBAKE_MSG_ID_LEN], *msg = NULL;
	char hid[2 * KMS_IBAKE_MSG_ID_LEN + 1];
	struct party p;
	uint64_t expiry;
	size_t msg_len = 0;
	int fd = -1, rc = EX_LOCAL;

	if (!o->mailbox || !o->mb_id || !o->to || !o->keys || !o->params ||
	    !o->in) {
		usage(stderr);
		return EX_LOCAL;
	}
	if (party_open(o, &p)) {
		kc_errmsg("cannot set up the session");
		goto out;
	}
	msg = slurp(o->in, &msg_len);
	if (!msg)
		goto out;
	fd = tcp_connect(o->mailbox, o->timeout_ms);
	if (fd < 0) {
		rc = EX_TIMEOUT;
		goto out;
	}
	if (kms_ibake_a_begin(p.s, o->to, o->mb_id, &out)) {
		kc_errmsg("I1: %s", kms_status_name(kms_ibake_status(p.s)));
		goto out;
	}
	if ((rc = exchange(fd, &out, &in)))
		goto out;
	if (kms_ibake_a_on_r1(p.s, in.p, in.len, &out)) {
		rc = refused(&p, "R1");
		goto out;
	}
	if ((rc = exchange(fd, &out, &in)))
		goto out;
	if (kms_ibake_a_on_r2(p.s, in.p, in.len)) {
		rc = refused(&p, "R2 (the mailbox did not prove its identity)");
		goto out;
	}
	if (kms_ibake_a_deposit(p.s, msg, msg_len, &out)) {
		rc = EX_LOCAL;
		goto out;
	}
	if ((rc = exchange(fd, &out, &in)))
		goto out;
	if (kms_ibake_a_on_ack(p.s, in.p, in.len, msg_id, &expiry)) {
		rc = refused(&p, "DEPOSIT");
		goto out;
	}
	dump_secrets(p.s);
	kms_hex_encode(msg_id, sizeof(msg_id), hid);
	printf("deposited: msg_id=%s bytes=%zu to=%s expiry_ms=%llu\n", hid,
	       msg_len, o->to, (unsigned long long)expiry);
	rc = EX_OK;
out:
	if (fd >= 0)
		close(fd);
	kms_buf_free(&out);
	kms_buf_free(&in);
	free(msg);
	party_close(&p);
	return rc;
}

static int write_msg(const char *dir, const struct kms_ibake_received *rx,
		     const struct kms_buf *plain)
{
	char hid[2 * KMS_IBAKE_MSG_ID_LEN + 1], path[4096], tmp[4200];
	int fd;

	kms_hex_encode(rx->msg_id, sizeof(rx->msg_id), hid);
	snprintf(path, sizeof(path), "%s/%s.msg", dir, hid);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write_all(fd, plain->p, plain->len) || fsync(fd) ||
	    close(fd) || rename(tmp, path)) {
		kc_errmsg("%s: cannot write: %s", path, strerror(errno));
		return -1;
	}
	printf("message: msg_id=%s from=%s period=%s deposited_ms=%llu "
	       "bytes=%zu file=%s\n", hid, rx->from, rx->period,
	       (unsigned long long)rx->deposited_ms, plain->len, path);
	return 0;
}

static int cmd_fetch(const struct opts *o)
{
	struct kms_buf out = { 0 }, in = { 0 }, plain = { 0 };
	struct kms_ibake_received rx;
	struct party p;
	unsigned got = 0, bad = 0;
	int fd = -1, rc = EX_LOCAL, r;

	if (!o->mailbox || !o->mb_id || !o->keys || !o->params || !o->out_dir) {
		usage(stderr);
		return EX_LOCAL;
	}
	if (party_open(o, &p))
		goto out;
	fd = tcp_connect(o->mailbox, o->timeout_ms);
	if (fd < 0) {
		rc = EX_TIMEOUT;
		goto out;
	}
	if (kms_ibake_b_begin(p.s, o->mb_id, &out))
		goto out;
	if ((rc = exchange(fd, &out, &in)))
		goto out;
	if (kms_ibake_b_on_f2(p.s, in.p, in.len, &out)) {
		rc = refused(&p, "F2 (the mailbox did not prove its identity)");
		goto out;
	}
	for (;;) {
		if ((rc = exchange(fd, &out, &in)))
			goto out;
		r = kms_ibake_b_on_msg(p.s, in.p, in.len, &plain, &rx);
		if (r == 1)
			break;
		if (r == KMS_ERR_AUTH) {
			char hid[2 * KMS_IBAKE_MSG_ID_LEN + 1];

			kms_hex_encode(rx.msg_id, sizeof(rx.msg_id), hid);
			kc_errmsg("message %s (claimed from %s) does not verify: "
				  "kept, not delivered", hid, rx.from);
			bad++;
			if (kms_ibake_b_ack(p.s, 1, &out))
				goto out;
			continue;
		}
		if (r) {
			rc = refused(&p, "MSG");
			goto out;
		}
		if (write_msg(o->out_dir, &rx, &plain)) {
			rc = EX_LOCAL;
			goto out;
		}
		got++;
		if (kms_ibake_b_ack(p.s, o->keep, &out))
			goto out;
	}
	printf("fetched: %u message(s), %u refused\n", got, bad);
	rc = bad ? EX_REFUSED : EX_OK;
out:
	if (fd >= 0)
		close(fd);
	kms_buf_free(&out);
	kms_buf_free(&in);
	kms_buf_free(&plain);
	party_close(&p);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "server", required_argument, NULL, 's' },
		{ "key", required_argument, NULL, 'k' },
		{ "params", required_argument, NULL, 'P' },
		{ "out", required_argument, NULL, 'o' },
		{ "period", required_argument, NULL, 'p' },
		{ "mailbox", required_argument, NULL, 'm' },
		{ "mailbox-id", required_argument, NULL, 'M' },
		{ "to", required_argument, NULL, 't' },
		{ "keys", required_argument, NULL, 'K' },
		{ "in", required_argument, NULL, 'i' },
		{ "out-dir", required_argument, NULL, 'd' },
		{ "as", required_argument, NULL, 'a' },
		{ "keep", no_argument, NULL, 'e' },
		{ "save-request", required_argument, NULL, 'S' },
		{ "timeout-ms", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, KMS_OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .timeout_ms = 10000 };
	char *end;
	long v;
	int c;

	signal(SIGPIPE, SIG_IGN); /* a closed mailbox is an error, not a kill */
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': o.server = optarg; break;
		case 'k': o.key = optarg; break;
		case 'P': o.params = optarg; break;
		case 'o': o.out = optarg; break;
		case 'p': o.period = optarg; break;
		case 'm': o.mailbox = optarg; break;
		case 'M': o.mb_id = optarg; break;
		case 't': o.to = optarg; break;
		case 'K': o.keys = optarg; break;
		case 'i': o.in = optarg; break;
		case 'd': o.out_dir = optarg; break;
		case 'a': o.as = optarg; break;
		case 'e': o.keep = 1; break;
		case 'S': o.save = optarg; break;
		case 'T':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || v < 1 || v > 600000) {
				fprintf(stderr, "kms-ibake: --timeout-ms: 1..600000, "
					"got '%s'\n", optarg);
				return EX_LOCAL;
			}
			o.timeout_ms = (int)v;
			break;
		case 'h': usage(stdout); return EX_OK;
		case KMS_OPT_VERSION:
			kms_version_print(stdout, "kms-ibake");
			return EX_OK;
		default: usage(stderr); return EX_LOCAL;
		}
	}
	if (optind != argc - 1 || o.timeout_ms <= 0) {
		usage(stderr);
		return EX_LOCAL;
	}
	if (!strcmp(argv[optind], "keys"))
		return cmd_keys(&o);
	if (!strcmp(argv[optind], "send"))
		return cmd_send(&o);
	if (!strcmp(argv[optind], "fetch"))
		return cmd_fetch(&o);
	usage(stderr);
	return EX_LOCAL;
}
