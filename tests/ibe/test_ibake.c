// SPDX-License-Identifier: Apache-2.0
/*
 * MIKEY-IBAKE deferred delivery end to end in one process: UE-A, the
 * mailbox and UE-B (proto/ibe/ibake.c) with real SAKKE/ECCSI keys from a
 * KGC seed and a real mailbox store (keystore/mbox.c, LMDB in a temp dir).
 * Shows: the exact bytes of a 1 MiB message reach B; the store never holds
 * aP, the message key or plaintext; a spoofed A, a replayed I2, a wrong B,
 * a tampered message or sender are refused; malformed frames at every step
 * get a clear error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "kms_err.h"
#include "kms_ibake.h"
#include "kms_mbox.h"
#include "kms_token.h"

#define ID_A "sip:alice@ims.example"
#define ID_B "sip:bob@ims.example"
#define ID_C "sip:carol@ims.example"
#define ID_MB "mailbox.ims.example"
#define MSG_LEN (1u << 20)

static struct kms_ibe *ibe;
/* Every byte the mailbox received in deposit(), when set. */
static struct kms_buf *mb_saw;
static struct kms_ibe_params params;
static struct kms_ibe_keys k_a, k_b, k_c, k_mb;
/* The mailbox uses a prepared RSK, as kms-mailbox does. */
static struct kms_sakke_rskp *mb_rskp;
static char period[KMS_IBE_PERIOD_LEN + 1];

struct fx {
	char dir[64];
	struct kms_mbox *store;
	int tamper;      /* 1: flip a message byte, 2: claim ID-C as sender */
};

/* ------------------------------------------------------------- store ops */

static int f_put(void *arg, struct kms_ibake_item *it)
{
	struct fx *f = arg;

	return kms_mbox_put(f->store, it, kms_now_ms());
}

static int f_next(void *arg, const struct kms_id *b, const uint8_t *after,
		  struct kms_ibake_item *it, struct kms_buf *hold)
{
	static const char c[] = ID_C;
	struct fx *f = arg;
	int rc = kms_mbox_next(f->store, b, after, kms_now_ms(), it,
			       hold);

	if (rc)
		return rc;
	if (f->tamper == 1)
		((uint8_t *)it->msg)[it->msg_len / 2] ^= 0x01;
	if (f->tamper == 2) {
		it->id_a.p = (const uint8_t *)c;
		it->id_a.len = sizeof(c) - 1;
	}
	return KMS_OK;
}

static int f_del(void *arg, const struct kms_id *b, const uint8_t *id)
{
	struct fx *f = arg;

	return kms_mbox_del(f->store, b, id);
}

static const struct kms_ibake_store_ops ops = {
	.put = f_put, .next = f_next, .del = f_del,
};

/* ------------------------------------------------------------- fixture */

static void issue(const uint8_t *z, const uint8_t *ksak, const char *id,
		  struct kms_ibe_keys *out)
{
	struct kms_id uri;

	assert_int_equal(kms_id_from_str(id, &uri), KMS_OK);
	assert_int_equal(kms_ibe_issue(ibe, z, ksak, &params, &uri, period,
				       out), KMS_OK);
	assert_int_equal(kms_ibe_keys_check(ibe, &params, out), KMS_OK);
}

static int group_setup(void **state)
{
	uint8_t seed[KMS_IBE_SEED_LEN], z[KMS_SAKKE_Z_LEN];
	uint8_t ksak[KMS_ECCSI_SCALAR_LEN];

	(void)state;
	if (kms_ibe_new(&ibe) || RAND_bytes(seed, sizeof(seed)) != 1 ||
	    kms_ibe_master_derive(ibe, seed, z, ksak) ||
	    kms_ibe_params_make(ibe, z, ksak, &params))
		return -1;
	kms_ibe_period(kms_now_ms(), period);
	issue(z, ksak, ID_A, &k_a);
	issue(z, ksak, ID_B, &k_b);
	issue(z, ksak, ID_C, &k_c);
	issue(z, ksak, ID_MB, &k_mb);
	if (kms_ibe_prepare(ibe, &params, &k_mb, &mb_rskp))
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	kms_sakke_rskp_free(mb_rskp);
	kms_ibe_free(ibe);
	return 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct kms_mbox_config c = { 0 };

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kms-ibake-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	c.path = f->dir;
	c.map_size = 64u << 20;
	if (kms_mbox_open(&c, &f->store))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	kms_mbox_close(f->store);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd))
		return -1;
	free(f);
	return 0;
}

static struct kms_ibake *session(const struct kms_ibe_keys *keys)
{
	struct kms_ibake_party me = { .ibe = ibe, .params = &params,
				      .keys = keys,
				      .rskp = keys == &k_mb ? mb_rskp : NULL };
	struct kms_ibake *s;

	assert_int_equal(kms_ibake_new(&me, &s), KMS_OK);
	return s;
}

/* The mailbox answers @p in into @p out (emptied first). */
static int mb(struct kms_ibake *m, struct fx *f, const struct kms_buf *in,
	      struct kms_buf *out)
{
	if (mb_saw) {
		assert_int_equal(kms_buf_reserve(mb_saw, in->len), KMS_OK);
		memcpy(mb_saw->p + mb_saw->len, in->p, in->len);
		mb_saw->len += in->len;
	}
	out->len = 0;
	return kms_ibake_mb_on_frame(m, &ops, f, in->p, in->len, out);
}

/* A leaves @p msg for B; the I1 and I2 frames are kept if asked. */
static void deposit(struct fx *f, const struct kms_ibe_keys *ka,
		    const uint8_t *msg, size_t len, struct kms_buf *i1,
		    struct kms_buf *i2, uint8_t ap[KMS_EC_POINT_LEN],
		    uint8_t mk[KMS_KEY_LEN])
{
	struct kms_ibake *a = session(ka), *m = session(&k_mb);
	struct kms_buf x = { 0 }, y = { 0 };
	uint8_t id[KMS_IBAKE_MSG_ID_LEN];
	uint64_t exp;

	assert_int_equal(kms_ibake_a_begin(a, ID_B, ID_MB, &x), KMS_OK);
	if (i1) {
		i1->len = 0;
		assert_int_equal(kms_buf_reserve(i1, x.len), KMS_OK);
		memcpy(i1->p, x.p, x.len);
		i1->len = x.len;
	}
	assert_int_equal(mb(m, f, &x, &y), KMS_OK);
	x.len = 0;
	assert_int_equal(kms_ibake_a_on_r1(a, y.p, y.len, &x), KMS_OK);
	if (i2) {
		i2->len = 0;
		assert_int_equal(kms_buf_reserve(i2, x.len), KMS_OK);
		memcpy(i2->p, x.p, x.len);
		i2->len = x.len;
	}
	assert_int_equal(mb(m, f, &x, &y), KMS_OK);
	assert_int_equal(kms_ibake_a_on_r2(a, y.p, y.len), KMS_OK);
	x.len = 0;
	assert_int_equal(kms_ibake_a_deposit(a, msg, len, &x), KMS_OK);
	assert_int_equal(mb(m, f, &x, &y), 1);
	assert_int_equal(kms_ibake_a_on_ack(a, y.p, y.len, id, &exp), KMS_OK);
	assert_true(exp > kms_now_ms());
	if (ap)
		assert_int_equal(kms_ibake_a_secrets(a, ap, mk), KMS_OK);
	kms_ibake_free(a);
	kms_ibake_free(m);
	kms_buf_free(&x);
	kms_buf_free(&y);
}

/* B fetches: @return how many messages verified; the first one's
 * plaintext in @p got (if not NULL); refused ones counted in @p bad. */
static unsigned fetch(struct fx *f, const struct kms_ibe_keys *kb,
		      int keep, struct kms_buf *got, unsigned *bad)
{
	struct kms_ibake *b = session(kb), *m = session(&k_mb);
	struct kms_buf x = { 0 }, y = { 0 }, plain = { 0 };
	struct kms_ibake_received rx;
	unsigned n = 0;
	int r;

	*bad = 0;
	assert_int_equal(kms_ibake_b_begin(b, ID_MB, &x), KMS_OK);
	assert_int_equal(mb(m, f, &x, &y), KMS_OK);
	x.len = 0;
	assert_int_equal(kms_ibake_b_on_f2(b, y.p, y.len, &x), KMS_OK);
	for (;;) {
		r = mb(m, f, &x, &y);
		assert_true(r == KMS_OK || r == 1);
		r = kms_ibake_b_on_msg(b, y.p, y.len, &plain, &rx);
		if (r == 1)
			break;
		x.len = 0;
		if (r == KMS_ERR_AUTH) {
			(*bad)++;
			assert_int_equal(kms_ibake_b_ack(b, 1, &x), KMS_OK);
			continue;
		}
		assert_int_equal(r, KMS_OK);
		assert_string_equal(rx.from, ID_A);
		assert_string_equal(rx.period, period);
		if (got && !n) {
			got->len = 0;
			assert_int_equal(kms_buf_reserve(got, plain.len), KMS_OK);
			memcpy(got->p, plain.p, plain.len);
			got->len = plain.len;
		}
		n++;
		assert_int_equal(kms_ibake_b_ack(b, keep, &x), KMS_OK);
	}
	kms_ibake_free(b);
	kms_ibake_free(m);
	kms_buf_free(&x);
	kms_buf_free(&y);
	kms_buf_free(&plain);
	return n;
}

static uint8_t *random_msg(size_t len)
{
	uint8_t *msg = malloc(len);

	assert_non_null(msg);
	assert_int_equal(RAND_bytes(msg, (int)len), 1);
	return msg;
}

static int mem_has(const uint8_t *buf, size_t len, const uint8_t *needle,
		   size_t n)
{
	for (size_t i = 0; len >= n && i <= len - n; i++)
		if (buf[i] == needle[0] && !memcmp(buf + i, needle, n))
			return 1;
	return 0;
}

/* Does the file @p path contain @p needle anywhere? */
static int file_has(const char *path, const uint8_t *needle, size_t n)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf;
	size_t len;
	long sz;
	int hit = 0;

	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	sz = ftell(fp);
	assert_true(sz > 0);
	rewind(fp);
	buf = malloc((size_t)sz);
	assert_non_null(buf);
	len = fread(buf, 1, (size_t)sz, fp);
	fclose(fp);
	for (size_t i = 0; !hit && len >= n && i <= len - n; i++)
		hit = buf[i] == needle[0] && !memcmp(buf + i, needle, n);
	free(buf);
	return hit;
}

/* ------------------------------------------------------------- tests */

static void test_flow_1mib(void **state)
{
	struct fx *f = *state;
	struct kms_buf got = { 0 }, saw = { 0 };
	uint8_t *msg = random_msg(MSG_LEN), ap[KMS_EC_POINT_LEN];
	uint8_t mk[KMS_KEY_LEN];
	char path[128];
	uint64_t held;
	unsigned bad;

	mb_saw = &saw;
	deposit(f, &k_a, msg, MSG_LEN, NULL, NULL, ap, mk);
	mb_saw = NULL;
	/* Every byte the mailbox received: no aP, no key, no plaintext run
	 * (and the search works: A's identity is there, in clear in I1). */
	assert_true(saw.len > MSG_LEN);
	assert_false(mem_has(saw.p, saw.len, ap + 1, 32));
	assert_false(mem_has(saw.p, saw.len, mk, sizeof(mk)));
	for (size_t off = 0; off + 64 <= MSG_LEN; off += MSG_LEN / 16)
		assert_false(mem_has(saw.p, saw.len, msg + off, 64));
	assert_true(mem_has(saw.p, saw.len, (const uint8_t *)ID_A,
			    strlen(ID_A)));
	kms_buf_free(&saw);
	assert_int_equal(kms_mbox_count(f->store, &held), KMS_OK);
	assert_int_equal(held, 1);

	/* What the mailbox keeps: not aP, not the message key, not a byte
	 * run of the plaintext. The needle search itself must work: the
	 * ciphertext's own bytes are found. */
	snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
	assert_false(file_has(path, ap + 1, 32));
	assert_false(file_has(path, mk, sizeof(mk)));
	assert_false(file_has(path, msg + 4096, 64));
	assert_true(file_has(path, (const uint8_t *)ID_A, strlen(ID_A)));

	assert_int_equal(fetch(f, &k_b, 0, &got, &bad), 1);
	assert_int_equal(bad, 0);
	assert_int_equal(got.len, MSG_LEN);
	assert_memory_equal(got.p, msg, MSG_LEN);
	/* Delivered and deleted: nothing left. */
	assert_int_equal(kms_mbox_count(f->store, &held), KMS_OK);
	assert_int_equal(held, 0);
	assert_int_equal(fetch(f, &k_b, 0, NULL, &bad), 0);
	kms_buf_free(&got);
	free(msg);
}

static void test_keep_and_order(void **state)
{
	struct fx *f = *state;
	struct kms_buf got = { 0 };
	const uint8_t m1[] = "first", m2[] = "second";
	unsigned bad;

	deposit(f, &k_a, m1, sizeof(m1), NULL, NULL, NULL, NULL);
	deposit(f, &k_a, m2, sizeof(m2), NULL, NULL, NULL, NULL);
	/* --keep: both delivered, both still there, oldest first. */
	assert_int_equal(fetch(f, &k_b, 1, &got, &bad), 2);
	assert_memory_equal(got.p, m1, sizeof(m1));
	assert_int_equal(fetch(f, &k_b, 0, NULL, &bad), 2);
	assert_int_equal(fetch(f, &k_b, 0, NULL, &bad), 0);
	/* Another user's mailbox view is empty. */
	deposit(f, &k_a, m1, sizeof(m1), NULL, NULL, NULL, NULL);
	assert_int_equal(fetch(f, &k_c, 0, NULL, &bad), 0);
	assert_int_equal(fetch(f, &k_b, 0, NULL, &bad), 1);
	kms_buf_free(&got);
}

/* Undelivered messages expire: not handed out after expiry_ms, then
 * purged in bounded steps. */
static void test_expiry(void **state)
{
	struct fx *f = *state;
	struct kms_ibake_item it;
	struct kms_buf hold = { 0 };
	const uint8_t m1[] = "expires";
	struct kms_id b;
	uint64_t held, now = kms_now_ms();
	unsigned n = 99;

	deposit(f, &k_a, m1, sizeof(m1), NULL, NULL, NULL, NULL);
	deposit(f, &k_a, m1, sizeof(m1), NULL, NULL, NULL, NULL);
	kms_id_from_str(ID_B, &b);
	assert_int_equal(kms_mbox_next(f->store, &b, NULL, now, &it, &hold),
			 KMS_OK);
	/* Default lifetime: 30 days. */
	assert_true(it.expiry_ms >= now + 29ull * 86400 * 1000);
	assert_int_equal(kms_mbox_purge(f->store, now, 10, &n), KMS_OK);
	assert_int_equal(n, 0);
	/* The first expired, the second (deposited later) not yet. */
	assert_int_equal(kms_mbox_next(f->store, &b, NULL, it.expiry_ms, &it,
				       &hold), KMS_OK);
	assert_int_equal(kms_mbox_next(f->store, &b, NULL, it.expiry_ms + 60000,
				       &it, &hold), KMS_ERR_NOTFOUND);
	assert_int_equal(kms_mbox_purge(f->store, it.expiry_ms + 60000, 1, &n),
			 KMS_OK);
	assert_int_equal(n, 1); /* bounded: one per step here */
	assert_int_equal(kms_mbox_count(f->store, &held), KMS_OK);
	assert_int_equal(held, 1);
	assert_int_equal(kms_mbox_purge(f->store, it.expiry_ms + 60000, 10, &n),
			 KMS_OK);
	assert_int_equal(n, 1);
	assert_int_equal(kms_mbox_count(f->store, &held), KMS_OK);
	assert_int_equal(held, 0);
	kms_buf_free(&hold);
}

/* A without A's keys: whoever claims ID-A gets R1 sealed to ID-A and cannot
 * open it. */
static void test_spoofed_sender(void **state)
{
	struct fx *f = *state;
	struct kms_ibe_keys fake = k_c;
	struct kms_ibake *a, *m = session(&k_mb);
	struct kms_buf x = { 0 }, y = { 0 };

	snprintf(fake.id, sizeof(fake.id), "%s", ID_A); /* C's RSK, A's name */
	a = session(&fake);
	assert_int_equal(kms_ibake_a_begin(a, ID_B, ID_MB, &x), KMS_OK);
	assert_int_equal(mb(m, f, &x, &y), KMS_OK);
	x.len = 0;
	assert_int_equal(kms_ibake_a_on_r1(a, y.p, y.len, &x), KMS_ERR_AUTH);
	kms_ibake_free(a);
	kms_ibake_free(m);
	kms_buf_free(&x);
	kms_buf_free(&y);
}

/* I2 of an earlier session, replayed after its I1: the mailbox's fresh yP
 * is not in it. The same refusal stops a spoofer who could not open R1. */
static void test_replayed_i2(void **state)
{
	struct fx *f = *state;
	struct kms_buf i1 = { 0 }, i2 = { 0 }, y = { 0 };
	struct kms_ibake *m = session(&k_mb);
	const uint8_t msg[] = "hello";
	uint64_t held;

	deposit(f, &k_a, msg, sizeof(msg), &i1, &i2, NULL, NULL);
	assert_int_equal(mb(m, f, &i1, &y), KMS_OK);
	assert_int_equal(mb(m, f, &i2, &y), KMS_ERR_AUTH);
	assert_int_equal(kms_ibake_status(m), KMS_ST_AUTH_FAILED);
	assert_int_equal(kms_ibake_peer_error(y.p, y.len), KMS_ST_AUTH_FAILED);
	/* A failed session stays failed. */
	assert_int_equal(mb(m, f, &i2, &y), KMS_ERR_INVAL);
	assert_int_equal(kms_mbox_count(f->store, &held), KMS_OK);
	assert_int_equal(held, 1);
	kms_ibake_free(m);
	kms_buf_free(&i1);
	kms_buf_free(&i2);
	kms_buf_free(&y);
}

/* IBE_B(...) opens for B only; C cannot fetch B's mail by claiming ID-B. */
static void test_wrong_recipient(void **state)
{
	struct fx *f = *state;
	struct kms_ibe_keys fake = k_c;
	struct kms_ibake *b, *m = session(&k_mb);
	struct kms_buf x = { 0 }, y = { 0 };
	uint8_t sealed[KMS_IBE_OVERHEAD + 16], pt[16];
	struct kms_id to;

	kms_id_from_str(ID_B, &to);
	assert_int_equal(kms_ibe_seal(ibe, &params, &to, period, NULL, 0,
				      (const uint8_t *)"0123456789abcdef", 16,
				      sealed, sizeof(sealed)),
			 (int)sizeof(sealed));
	assert_int_equal(kms_ibe_open(ibe, &params, &k_c, NULL, 0, sealed,
				      sizeof(sealed), pt, sizeof(pt)),
			 KMS_ERR_AUTH);
	assert_int_equal(kms_ibe_open(ibe, &params, &k_b, NULL, 0, sealed,
				      sizeof(sealed), pt, sizeof(pt)), 16);

	snprintf(fake.id, sizeof(fake.id), "%s", ID_B); /* C's RSK, B's name */
	b = session(&fake);
	assert_int_equal(kms_ibake_b_begin(b, ID_MB, &x), KMS_OK);
	assert_int_equal(mb(m, f, &x, &y), KMS_OK);
	x.len = 0;
	assert_int_equal(kms_ibake_b_on_f2(b, y.p, y.len, &x), KMS_ERR_AUTH);
	kms_ibake_free(b);
	kms_ibake_free(m);
	kms_buf_free(&x);
	kms_buf_free(&y);
}

static void test_tampered(void **state)
{
	struct fx *f = *state;
	const uint8_t msg[] = "the media key stays between A and B";
	unsigned bad;
	uint64_t held;

	deposit(f, &k_a, msg, sizeof(msg), NULL, NULL, NULL, NULL);
	f->tamper = 1; /* a changed ciphertext byte */
	assert_int_equal(fetch(f, &k_b, 0, NULL, &bad), 0);
	assert_int_equal(bad, 1);
	f->tamper = 2; /* the mailbox names another sender */
	assert_int_equal(fetch(f, &k_b, 0, NULL, &bad), 0);
	assert_int_equal(bad, 1);
	/* Kept (NEXT), not deleted; untampered it still verifies. */
	f->tamper = 0;
	assert_int_equal(kms_mbox_count(f->store, &held), KMS_OK);
	assert_int_equal(held, 1);
	assert_int_equal(fetch(f, &k_b, 0, NULL, &bad), 1);
}

/* Every byte of each client frame flipped, and every truncation: the
 * mailbox refuses with an ERROR frame, never crashes, stores nothing. */
static void test_malformed_to_mailbox(void **state)
{
	struct fx *f = *state;
	struct kms_ibake *a = session(&k_a), *m = session(&k_mb);
	struct kms_buf i1 = { 0 }, r1 = { 0 }, i2 = { 0 }, bad = { 0 };
	struct kms_buf y = { 0 };
	uint64_t held;
	size_t step, end;

	assert_int_equal(kms_ibake_a_begin(a, ID_B, ID_MB, &i1), KMS_OK);
	assert_int_equal(mb(m, f, &i1, &r1), KMS_OK);
	assert_int_equal(kms_ibake_a_on_r1(a, r1.p, r1.len, &i2), KMS_OK);
	kms_ibake_free(m);

	assert_int_equal(kms_buf_reserve(&bad, i2.len + i1.len), KMS_OK);
	/* I1 with one byte changed (a sample of positions: SAKKE is slow). */
	step = i1.len / 40 + 1;
	for (size_t i = 0; i < i1.len; i += step) {
		memcpy(bad.p, i1.p, i1.len);
		bad.len = i1.len;
		bad.p[i] ^= 0x80;
		m = session(&k_mb);
		/* The SAKKE blob for B is not the mailbox's to check: a
		 * flip there passes I1 and fails later, at B. */
		if (mb(m, f, &bad, &y) < 0)
			assert_true(kms_ibake_peer_error(y.p, y.len) != 0);
		kms_ibake_free(m);
	}
	/* Truncations of I1. */
	for (size_t n = 0; n < i1.len; n += step) {
		memcpy(bad.p, i1.p, n);
		bad.len = n;
		m = session(&k_mb);
		assert_true(mb(m, f, &bad, &y) < 0);
		assert_true(kms_ibake_peer_error(y.p, y.len) != 0);
		kms_ibake_free(m);
	}
	/* I2 flipped (up to the end of IBE_MB(...): the blob for B is
	 * checked by B, through A's signature) after its own good I1. */
	end = KMS_IBAKE_HDR_LEN + 4 + ((size_t)i2.p[6] << 24 |
				       (size_t)i2.p[7] << 16 |
				       (size_t)i2.p[8] << 8 | i2.p[9]);
	assert_true(end < i2.len);
	step = end / 20 + 1;
	for (size_t i = 0; i < end; i += step) {
		memcpy(bad.p, i2.p, i2.len);
		bad.len = i2.len;
		bad.p[i] ^= 0x01;
		m = session(&k_mb);
		assert_int_equal(mb(m, f, &i1, &y), KMS_OK);
		assert_true(mb(m, f, &bad, &y) < 0);
		assert_true(kms_ibake_peer_error(y.p, y.len) != 0);
		kms_ibake_free(m);
	}
	/* A frame out of order, a wrong version, an unknown type. */
	m = session(&k_mb);
	assert_true(mb(m, f, &i2, &y) < 0);
	assert_int_equal(kms_ibake_peer_error(y.p, y.len), KMS_ST_BAD_TYPE);
	kms_ibake_free(m);
	memcpy(bad.p, i1.p, i1.len);
	bad.len = i1.len;
	bad.p[4] = 2;
	m = session(&k_mb);
	assert_true(mb(m, f, &bad, &y) < 0);
	assert_int_equal(kms_ibake_peer_error(y.p, y.len), KMS_ST_BAD_VERSION);
	kms_ibake_free(m);
	bad.p[4] = KMS_IBAKE_VERSION;
	bad.p[5] = 0x55;
	m = session(&k_mb);
	assert_true(mb(m, f, &bad, &y) < 0);
	assert_int_equal(kms_ibake_peer_error(y.p, y.len), KMS_ST_BAD_TYPE);
	kms_ibake_free(m);

	assert_int_equal(kms_mbox_count(f->store, &held), KMS_OK);
	assert_int_equal(held, 0);
	kms_ibake_free(a);
	kms_buf_free(&i1);
	kms_buf_free(&r1);
	kms_buf_free(&i2);
	kms_buf_free(&bad);
	kms_buf_free(&y);
}

/* The mailbox's answers altered on the way: A and B refuse them. */
static void test_malformed_to_clients(void **state)
{
	struct fx *f = *state;
	struct kms_buf x = { 0 }, r1 = { 0 }, bad = { 0 }, y = { 0 };
	struct kms_ibake *a, *m;
	size_t step;

	a = session(&k_a);
	m = session(&k_mb);
	assert_int_equal(kms_ibake_a_begin(a, ID_B, ID_MB, &x), KMS_OK);
	assert_int_equal(mb(m, f, &x, &r1), KMS_OK);
	kms_ibake_free(a);
	kms_ibake_free(m);
	assert_int_equal(kms_buf_reserve(&bad, r1.len), KMS_OK);
	step = r1.len / 30 + 1;
	for (size_t i = 0; i < r1.len; i += step) {
		/* Every byte of R1 is framing, a checked name or inside the
		 * AEAD: any flip is refused. */
		memcpy(bad.p, r1.p, r1.len);
		bad.len = r1.len;
		bad.p[i] ^= 0x04;
		a = session(&k_a);
		x.len = 0;
		assert_int_equal(kms_ibake_a_begin(a, ID_B, ID_MB, &x), KMS_OK);
		y.len = 0;
		assert_true(kms_ibake_a_on_r1(a, bad.p, bad.len, &y) < 0);
		kms_ibake_free(a);
	}
	kms_buf_free(&x);
	kms_buf_free(&r1);
	kms_buf_free(&bad);
	kms_buf_free(&y);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_flow_1mib, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keep_and_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spoofed_sender, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_replayed_i2, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_wrong_recipient, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tampered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_to_mailbox, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_malformed_to_clients, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
