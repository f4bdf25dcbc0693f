// SPDX-License-Identifier: Apache-2.0
/*
 * fuzz_ibake: MIKEY-IBAKE frames (docs/PROTOCOL.md part II) into the
 * mailbox's state machine, kms_ibake_mb_on_frame, over a real mailbox
 * store (keystore/mbox.c, LMDB in a temp dir); and into the clients'
 * parsers (kms_ibake_a_on_r1/_r2/_ack, kms_ibake_b_on_f2/_msg), with real
 * SAKKE/ECCSI keys issued once at start-up from a fixed KGC seed.
 *
 * Input: byte 0 picks the side (mod 3): 0 the mailbox, 1 UE-A, 2 UE-B.
 * The rest is the byte stream that side reads from TCP: frames of
 * u32 len | version | type | body, cut as kms-mailbox cuts them
 * (kms_ibake_frame_len, then len bytes; a refused length or a short read
 * ends the connection). Mailbox: every frame goes to the session; a
 * session that completes or fails ends its connection and the next frame
 * starts a new one (so one input can deposit, then fetch). UE-A: the
 * harness sends I1 (kms_ibake_a_begin) and feeds R1, R2 (then sends its
 * DEPOSIT) and DEPOSIT_ACK. UE-B: F1, then F2, then MSG/END frames,
 * answering DELETE (NEXT for a message that does not verify).
 *
 * Determinism: OpenSSL's RAND (RAND_bytes, RAND_priv_bytes, BN_*rand*:
 * SAKKE's SSV, the ephemeral x and y, ECCSI's nonce, the store's message
 * ids) is replaced by a deterministic generator, one stream for the
 * mailbox and one for the client, reset at the start of every input. So
 * an input replays the same session every time, and the checked-in seeds
 * (recorded from honest sessions by this file's generator,
 * KMS_FUZZ_GEN=DIR fuzz_ibake) pass every check of the real code: the
 * fuzzer starts from complete deposits and fetches, not only from frames
 * that fail at the first MAC. The project's code is unchanged; only where
 * its random bytes come from is (this process has no HSM). The mailbox
 * store is emptied before every input and its clock is fixed.
 *
 * KMS_FUZZ_VERBOSE=1 prints what each frame did.
 *
 * SAKKE operations cost about 10-25 ms each: a full seed session takes
 * ~0.1-0.2 s, so expect tens of executions per second at best.
 */
#define OPENSSL_SUPPRESS_DEPRECATED   /* RAND_set_rand_method: see above */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "fuzz_common.h"
#include "kms_err.h"
#include "kms_ibake.h"
#include "kms_ibe.h"
#include "kms_mbox.h"

#define ID_A "sip:alice@ims.example"
#define ID_B "sip:bob@ims.example"
#define ID_MB "mailbox.ims.example"
#define FZ_PERIOD "2030-03"
#define FZ_NOW 1900000000000ull      /* in FZ_PERIOD */
#define FRAME_MAX ((1u << 20) + 65536u)
#define MAX_FRAMES 16
#define MAX_SESSIONS 4

enum side { SIDE_MB, SIDE_A, SIDE_B, SIDE__N };

/* ------------------------------------------------- deterministic RAND */

struct stream {
	uint8_t label;
	uint64_t ctr;
	uint8_t blk[32];
	unsigned left;
};

/* One stream per role: whichever side an input tests draws exactly what
 * that side drew when the generator recorded the seed. */
static struct stream s_init = { .label = 'I' }, s_mb = { .label = 'M' },
		     s_cl = { .label = 'C' };
static struct stream *s_cur = &s_init;

static void stream_reset(struct stream *s)
{
	s->ctr = 0;
	s->left = 0;
}

static int det_bytes(unsigned char *buf, int num)
{
	while (num > 0) {
		unsigned n;

		if (!s_cur->left) {
			uint8_t in[1 + 8 + 16] = { s_cur->label };

			memcpy(in + 1, &s_cur->ctr, 8);
			memcpy(in + 9, "kms-fuzz-rand-16", 16);
			SHA256(in, sizeof(in), s_cur->blk);
			s_cur->ctr++;
			s_cur->left = sizeof(s_cur->blk);
		}
		n = s_cur->left < (unsigned)num ? s_cur->left : (unsigned)num;
		memcpy(buf, s_cur->blk + sizeof(s_cur->blk) - s_cur->left, n);
		s_cur->left -= n;
		buf += n;
		num -= (int)n;
	}
	return 1;
}

static int det_status(void)
{
	return 1;
}

static int det_seed(const void *buf, int num)
{
	(void)buf;
	(void)num;
	return 1;
}

static int det_add(const void *buf, int num, double entropy)
{
	(void)buf;
	(void)num;
	(void)entropy;
	return 1;
}

static const RAND_METHOD det_rand = {
	.seed = det_seed, .bytes = det_bytes, .add = det_add,
	.pseudorand = det_bytes, .status = det_status,
};

/* ------------------------------------------------------------ fixture */

static struct {
	struct kms_ibe *ibe;
	struct kms_ibe_params params;
	struct kms_ibe_keys k_a, k_b, k_mb;
	char dir[256];
	struct kms_mbox *store;
	int verbose;
} fz;

/* KMS_FUZZ_VERBOSE=1: what each frame did (to see how far seeds get). */
static void trace(const char *who, const uint8_t *frame, size_t len, int rc)
{
	if (fz.verbose)
		fprintf(stderr, "fuzz_ibake: %s frame type 0x%02x (%zu bytes): %d\n",
			who, len > 5 ? frame[5] : 0, len, rc);
}

static const uint8_t deposit_msg[48] = "a voice message left by the fuzz harness";

static int st_put(void *arg, struct kms_ibake_item *it)
{
	(void)arg;
	return kms_mbox_put(fz.store, it, FZ_NOW);
}

static int st_next(void *arg, const struct kms_id *b, const uint8_t *after,
		   struct kms_ibake_item *it, struct kms_buf *hold)
{
	(void)arg;
	return kms_mbox_next(fz.store, b, after, FZ_NOW, it, hold);
}

static int st_del(void *arg, const struct kms_id *b, const uint8_t *id)
{
	(void)arg;
	return kms_mbox_del(fz.store, b, id);
}

static const struct kms_ibake_store_ops ops = {
	.put = st_put, .next = st_next, .del = st_del,
};

static void die(const char *what)
{
	fprintf(stderr, "fuzz_ibake: %s\n", what);
	exit(1);
}

static void issue(const uint8_t *z, const uint8_t *ksak, const char *id,
		  struct kms_ibe_keys *out)
{
	struct kms_id uri;

	if (kms_id_from_str(id, &uri) ||
	    kms_ibe_issue(fz.ibe, z, ksak, &fz.params, &uri, FZ_PERIOD, out) ||
	    kms_ibe_keys_check(fz.ibe, &fz.params, out))
		die("cannot issue the IBE keys");
}

static void teardown(void)
{
	kms_mbox_close(fz.store);
	fuzz_rmrf(fz.dir);
	kms_ibe_keys_wipe(&fz.k_a);
	kms_ibe_keys_wipe(&fz.k_b);
	kms_ibe_keys_wipe(&fz.k_mb);
	kms_ibe_free(fz.ibe);
}

static void setup(void)
{
	uint8_t seed[KMS_IBE_SEED_LEN], z[KMS_SAKKE_Z_LEN];
	uint8_t ksak[KMS_ECCSI_SCALAR_LEN];
	struct kms_mbox_config c = { 0 };

	if (!RAND_set_rand_method(&det_rand))
		die("RAND_set_rand_method");
	s_cur = &s_init;
	stream_reset(&s_init);
	/* A fixed KGC: the seeds' IBE blobs open under these keys. */
	SHA256((const uint8_t *)"kms-fuzz-kgc-seed", 17, seed);
	if (kms_ibe_new(&fz.ibe) || kms_ibe_master_derive(fz.ibe, seed, z, ksak) ||
	    kms_ibe_params_make(fz.ibe, z, ksak, &fz.params))
		die("cannot make the KGC");
	issue(z, ksak, ID_A, &fz.k_a);
	issue(z, ksak, ID_B, &fz.k_b);
	issue(z, ksak, ID_MB, &fz.k_mb);
	explicit_bzero(z, sizeof(z));
	explicit_bzero(ksak, sizeof(ksak));
	fuzz_tmpdir("ibake", fz.dir, sizeof(fz.dir));
	atexit(teardown);
	c.path = fz.dir;
	c.map_size = 64u << 20;
	if (kms_mbox_open(&c, &fz.store))
		die("cannot open the mailbox store");
}

static struct kms_ibake *session(const struct kms_ibe_keys *keys)
{
	struct kms_ibake_party me = { .ibe = fz.ibe, .params = &fz.params,
				      .keys = keys };
	struct kms_ibake *s = NULL;

	FUZZ_CHECK(kms_ibake_new(&me, &s) == KMS_OK && s);
	return s;
}

/* Every input starts from the same state: empty store, streams reset;
 * @p side draws next. */
static void input_begin(enum side side)
{
	uint64_t n = 0;
	unsigned purged;

	if (kms_mbox_count(fz.store, &n) == KMS_OK && n)
		FUZZ_CHECK(kms_mbox_purge(fz.store, UINT64_MAX, UINT32_MAX,
					  &purged) == KMS_OK);
	FUZZ_CHECK(kms_mbox_count(fz.store, &n) == KMS_OK && n == 0);
	stream_reset(&s_mb);
	stream_reset(&s_cl);
	s_cur = side == SIDE_MB ? &s_mb : &s_cl;
}

/* ------------------------------------------------------------ frames */

struct rdr {
	const uint8_t *p;
	size_t left;
};

/* The next whole frame as kms-mailbox reads it, or 0 at the end. */
static size_t next_frame(struct rdr *r, const uint8_t **frame)
{
	uint32_t n;

	if (r->left < 4)
		return 0;
	n = kms_ibake_frame_len(r->p, FRAME_MAX);
	if (!n || r->left - 4 < n)
		return 0;
	*frame = r->p;
	r->p += 4 + (size_t)n;
	r->left -= 4 + (size_t)n;
	(void)kms_ibake_peer_error(*frame, 4 + (size_t)n);
	return 4 + (size_t)n;
}

/* A reply must be whole frames, and an ERROR frame after a failure. */
static void check_out(const struct kms_buf *out, int rc)
{
	size_t off = 0, last = 0;

	while (off < out->len) {
		uint32_t n;

		FUZZ_CHECK(out->len - off >= KMS_IBAKE_HDR_LEN);
		n = kms_ibake_frame_len(out->p + off, KMS_IBAKE_FRAME_MAX);
		FUZZ_CHECK(n && out->len - off - 4 >= n);
		FUZZ_CHECK(out->p[off + 4] == KMS_IBAKE_VERSION);
		last = off;
		off += 4 + (size_t)n;
	}
	if (rc < 0) {
		FUZZ_CHECK(out->len > 0);
		FUZZ_CHECK(kms_ibake_peer_error(out->p + last, out->len - last) != 0);
	}
}

static void run_mailbox(struct rdr *r)
{
	struct kms_buf out = { 0 };
	struct kms_ibake *s = NULL;
	const uint8_t *f;
	unsigned frames = 0, sessions = 0;
	size_t len;

	while (frames++ < MAX_FRAMES && (len = next_frame(r, &f))) {
		int rc;

		if (!s) {
			if (sessions++ == MAX_SESSIONS)
				break;
			s = session(&fz.k_mb);
		}
		out.len = 0;
		rc = kms_ibake_mb_on_frame(s, &ops, NULL, f, len, &out);
		trace("mailbox", f, len, rc);
		FUZZ_CHECK(rc == KMS_OK || rc == 1 || rc < 0);
		check_out(&out, rc);
		if (rc < 0)
			FUZZ_CHECK(kms_ibake_status(s) != KMS_ST_OK);
		if (rc != KMS_OK) {
			kms_ibake_free(s);
			s = NULL;
		}
	}
	kms_ibake_free(s);
	kms_buf_free(&out);
}

static void run_a(struct rdr *r)
{
	struct kms_ibake *s = session(&fz.k_a);
	struct kms_buf out = { 0 };
	uint8_t id[KMS_IBAKE_MSG_ID_LEN];
	uint64_t exp;
	const uint8_t *f;
	size_t len;
	int rc;

	FUZZ_CHECK(kms_ibake_a_begin(s, ID_B, ID_MB, &out) == KMS_OK);
	if (!(len = next_frame(r, &f)))
		goto out;
	out.len = 0;
	rc = kms_ibake_a_on_r1(s, f, len, &out);
	trace("A on R1", f, len, rc);
	if (rc || !(len = next_frame(r, &f)))
		goto out;
	rc = kms_ibake_a_on_r2(s, f, len);
	trace("A on R2", f, len, rc);
	if (rc)
		goto out;
	out.len = 0;
	FUZZ_CHECK(kms_ibake_a_deposit(s, deposit_msg, sizeof(deposit_msg),
				       &out) == KMS_OK);
	if (!(len = next_frame(r, &f)))
		goto out;
	rc = kms_ibake_a_on_ack(s, f, len, id, &exp);
	trace("A on ACK", f, len, rc);
	if (rc == KMS_OK)
		FUZZ_CHECK(exp > 0);
out:
	kms_ibake_free(s);
	kms_buf_free(&out);
}

static void run_b(struct rdr *r)
{
	struct kms_ibake *s = session(&fz.k_b);
	struct kms_buf out = { 0 }, plain = { 0 };
	struct kms_ibake_received rx;
	unsigned frames = 0;
	const uint8_t *f;
	size_t len;
	int rc;

	FUZZ_CHECK(kms_ibake_b_begin(s, ID_MB, &out) == KMS_OK);
	if (!(len = next_frame(r, &f)))
		goto out;
	out.len = 0;
	rc = kms_ibake_b_on_f2(s, f, len, &out);
	trace("B on F2", f, len, rc);
	if (rc)
		goto out;
	while (frames++ < MAX_FRAMES && (len = next_frame(r, &f))) {
		rc = kms_ibake_b_on_msg(s, f, len, &plain, &rx);
		trace("B on MSG", f, len, rc);
		if (rc == 1 || (rc < 0 && rc != KMS_ERR_AUTH))
			break;
		if (rc == KMS_OK) {
			/* What B accepted is what the signature named. */
			FUZZ_CHECK(strlen(rx.from) > 0);
			FUZZ_CHECK(kms_ibe_period_valid(rx.period,
							strlen(rx.period)));
		}
		out.len = 0;
		if (kms_ibake_b_ack(s, rc == KMS_ERR_AUTH, &out))
			break;
	}
out:
	kms_ibake_free(s);
	kms_buf_free(&out);
	kms_buf_free(&plain);
}

/* ------------------------------------------------------------ generator */

struct rec {
	uint8_t side;
	struct kms_buf b;
};

static void rec_init(struct rec *r, uint8_t side)
{
	memset(r, 0, sizeof(*r));
	r->side = side;
	if (kms_buf_reserve(&r->b, 1))
		die("no memory");
	r->b.p[r->b.len++] = side;
}

static void rec_add(struct rec *r, const struct kms_buf *frames)
{
	if (kms_buf_reserve(&r->b, frames->len))
		die("no memory");
	memcpy(r->b.p + r->b.len, frames->p, frames->len);
	r->b.len += frames->len;
}

static void rec_write(struct rec *r, const char *dir, const char *name)
{
	fuzz_seed_write(dir, name, r->b.p, r->b.len);
	kms_buf_free(&r->b);
}

#define GEN_OK(x) do { if ((x) < 0) die("generator: " #x); } while (0)

/* The mailbox's answer to @p in, under the mailbox's stream; the
 * client's stream is current again afterwards. */
static int gen_mb(struct kms_ibake *m, const struct kms_buf *in,
		  struct kms_buf *out)
{
	int rc;

	s_cur = &s_mb;
	out->len = 0;
	rc = kms_ibake_mb_on_frame(m, &ops, NULL, in->p, in->len, out);
	s_cur = &s_cl;
	return rc;
}

/* A mailbox session, made under the mailbox's stream. */
static struct kms_ibake *gen_mb_session(void)
{
	struct kms_ibake *m;

	s_cur = &s_mb;
	m = session(&fz.k_mb);
	s_cur = &s_cl;
	return m;
}

/* An honest deposit by A, then a fetch by B (DELETE, or NEXT if @p keep),
 * exactly as each side's input will replay it. */
static void gen_sessions(const char *dir, int keep, int with_seeds)
{
	struct rec to_mb, to_a, to_b, dep_only;
	struct kms_ibake *a, *m, *b;
	struct kms_buf x = { 0 }, y = { 0 }, plain = { 0 };
	struct kms_ibake_received rx;
	uint8_t id[KMS_IBAKE_MSG_ID_LEN];
	uint64_t exp;

	rec_init(&to_mb, SIDE_MB);
	rec_init(&dep_only, SIDE_MB);
	rec_init(&to_a, SIDE_A);
	rec_init(&to_b, SIDE_B);

	/* Both streams start as input_begin leaves them. */
	input_begin(SIDE_A);
	m = gen_mb_session();
	a = session(&fz.k_a);
	GEN_OK(kms_ibake_a_begin(a, ID_B, ID_MB, &x));
	rec_add(&to_mb, &x);
	rec_add(&dep_only, &x);
	GEN_OK(gen_mb(m, &x, &y));
	rec_add(&to_a, &y);
	x.len = 0;
	GEN_OK(kms_ibake_a_on_r1(a, y.p, y.len, &x));
	rec_add(&to_mb, &x);
	rec_add(&dep_only, &x);
	GEN_OK(gen_mb(m, &x, &y));
	rec_add(&to_a, &y);
	GEN_OK(kms_ibake_a_on_r2(a, y.p, y.len));
	x.len = 0;
	GEN_OK(kms_ibake_a_deposit(a, deposit_msg, sizeof(deposit_msg), &x));
	rec_add(&to_mb, &x);
	rec_add(&dep_only, &x);
	if (gen_mb(m, &x, &y) != 1)
		die("generator: the mailbox did not complete the deposit");
	rec_add(&to_a, &y);
	GEN_OK(kms_ibake_a_on_ack(a, y.p, y.len, id, &exp));
	kms_ibake_free(a);
	kms_ibake_free(m);

	/* B's stream restarts where its own input starts; the mailbox's goes
	 * on (a mailbox input holds both sessions). */
	m = gen_mb_session();
	stream_reset(&s_cl);
	b = session(&fz.k_b);
	x.len = 0;
	GEN_OK(kms_ibake_b_begin(b, ID_MB, &x));
	rec_add(&to_mb, &x);
	GEN_OK(gen_mb(m, &x, &y));
	rec_add(&to_b, &y);
	x.len = 0;
	GEN_OK(kms_ibake_b_on_f2(b, y.p, y.len, &x));
	rec_add(&to_mb, &x);
	GEN_OK(gen_mb(m, &x, &y));
	rec_add(&to_b, &y);
	if (kms_ibake_b_on_msg(b, y.p, y.len, &plain, &rx) != KMS_OK ||
	    plain.len != sizeof(deposit_msg) ||
	    memcmp(plain.p, deposit_msg, plain.len))
		die("generator: B did not get A's message");
	x.len = 0;
	GEN_OK(kms_ibake_b_ack(b, keep, &x));
	rec_add(&to_mb, &x);
	if (gen_mb(m, &x, &y) != 1)
		die("generator: the mailbox did not end the fetch");
	rec_add(&to_b, &y);
	if (kms_ibake_b_on_msg(b, y.p, y.len, &plain, &rx) != 1)
		die("generator: B did not see END");
	kms_ibake_free(b);
	kms_ibake_free(m);

	rec_write(&to_mb, dir, keep ? "mb_deposit_fetch_keep" : "mb_deposit_fetch_delete");
	if (with_seeds) {
		rec_write(&dep_only, dir, "mb_deposit");
		rec_write(&to_a, dir, "a_deposit");
		rec_write(&to_b, dir, "b_fetch");
	} else {
		kms_buf_free(&dep_only.b);
		kms_buf_free(&to_a.b);
		kms_buf_free(&to_b.b);
	}
	kms_buf_free(&x);
	kms_buf_free(&y);
	kms_buf_free(&plain);
}

/* B fetches from an empty mailbox: F1, F3, then END. */
static void gen_fetch_empty(const char *dir)
{
	struct rec to_mb;
	struct kms_ibake *m, *b;
	struct kms_buf x = { 0 }, y = { 0 };

	rec_init(&to_mb, SIDE_MB);
	input_begin(SIDE_B);
	m = gen_mb_session();
	b = session(&fz.k_b);
	GEN_OK(kms_ibake_b_begin(b, ID_MB, &x));
	rec_add(&to_mb, &x);
	GEN_OK(gen_mb(m, &x, &y));
	x.len = 0;
	GEN_OK(kms_ibake_b_on_f2(b, y.p, y.len, &x));
	rec_add(&to_mb, &x);
	if (gen_mb(m, &x, &y) != 1)
		die("generator: no END from an empty mailbox");
	kms_ibake_free(b);
	kms_ibake_free(m);
	rec_write(&to_mb, dir, "mb_fetch_empty");
	kms_buf_free(&x);
	kms_buf_free(&y);
}

static void generate(const char *dir)
{
	static const uint8_t err_frame[] = { SIDE_MB, 0, 0, 0, 4, 1, 0x7f, 0, 1 };
	static const uint8_t bad_version[] = { SIDE_MB, 0, 0, 0, 2, 2, 0x11 };

	gen_sessions(dir, 0, 1);
	gen_sessions(dir, 1, 0);
	gen_fetch_empty(dir);
	fuzz_seed_write(dir, "mb_error_frame", err_frame, sizeof(err_frame));
	fuzz_seed_write(dir, "mb_bad_version", bad_version, sizeof(bad_version));
}

/* ------------------------------------------------------------ libFuzzer */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_log_init("fuzz_ibake");
	fz.verbose = getenv("KMS_FUZZ_VERBOSE") != NULL;
	setup();
	if (fuzz_gen_dir()) {
		generate(fuzz_gen_dir());
		exit(0);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rdr r;

	if (!size)
		return 0;
	r.p = data + 1;
	r.left = size - 1;
	input_begin((enum side)(data[0] % SIDE__N));
	switch (data[0] % SIDE__N) {
	case SIDE_MB:
		run_mailbox(&r);
		break;
	case SIDE_A:
		run_a(&r);
		break;
	default:
		run_b(&r);
		break;
	}
	return 0;
}
