// SPDX-License-Identifier: Apache-2.0
/*
 * kms-bench-ibe: the MIKEY-IBAKE system's costs on this machine, each next
 * to a 1024-bit BN_mod_exp measured in the same run (issue floor: one
 * pairing <= 4 modexps).
 *
 *   crypto   BN_mod_exp (1024-bit modulus and exponent; the unit), the
 *            SAKKE pairing, encapsulation, decapsulation, RSK derivation
 *            and RSK check (RFC 6508, parameter set 1), ECCSI issue, sign
 *            and verify (RFC 6507, P-256), IBE_X seal/open of 200 bytes.
 *   mailbox  with a real mailbox store (LMDB, durable commits) in a temp
 *            dir under --dir (default /var/tmp: the real disk): the store's
 *            own durable puts/s (the ceiling), whole deposit sessions/s
 *            (A <-> mailbox, in process: I1 R1 I2 R2 DEPOSIT ACK with all
 *            their crypto) and fetch sessions/s (B <-> mailbox: F1 F2 F3
 *            MSG DELETE END) of --msg-bytes messages.
 *
 * Each figure: --runs R (default 3) runs of --seconds S (default 1) each,
 * at least 3 operations per run; median, min, max. One thread, so the
 * figures are per core. Not a test: perf/bench_kms.sh runs it.
 */
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/rand.h>

#include "kms_err.h"
#include "kms_ibake.h"
#include "kms_mbox.h"
#include "kms_token.h"

struct opts {
	double seconds;
	unsigned runs;
	size_t msg_bytes;
	const char *dir;
};

typedef int (*op_fn)(void *arg);

struct fig {
	const char *name;
	double med, min, max; /* ops/s */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* ops/s of @p op: R runs of S seconds (at least 3 calls each). */
static int measure(const struct opts *o, const char *name, op_fn op,
		   void *arg, struct fig *out)
{
	double r[16];
	unsigned runs = o->runs > 16 ? 16 : o->runs;

	for (unsigned i = 0; i < runs; i++) {
		double t0 = now_s(), t;
		unsigned long n = 0;

		do {
			if (op(arg)) {
				fprintf(stderr, "kms-bench-ibe: %s failed\n", name);
				return -1;
			}
			n++;
			t = now_s() - t0;
		} while (t < o->seconds || n < 3);
		r[i] = (double)n / t;
	}
	qsort(r, runs, sizeof(r[0]), cmp_d);
	out->name = name;
	out->med = r[runs / 2];
	out->min = r[0];
	out->max = r[runs - 1];
	return 0;
}

/* ---------------------------------------------------------------- crypto */

struct cx {
	struct kms_ibe *ibe;
	struct kms_ibe_params params;
	struct kms_ibe_keys keys;
	uint8_t z[KMS_SAKKE_Z_LEN], ksak[KMS_ECCSI_SCALAR_LEN];
	uint8_t ident[KMS_IBE_IDENT_MAX];
	size_t ident_len;
	uint8_t enc[KMS_SAKKE_ENC_LEN], ssv[KMS_SAKKE_SSV_LEN];
	uint8_t sig[KMS_ECCSI_SIG_LEN], msg[64];
	uint8_t sealed[KMS_IBE_OVERHEAD + 200], pt[200];
	struct kms_id uri;
	struct kms_sakke_rskp *rskp;     /* keys' RSK prepared */
	BIGNUM *b, *e, *m, *r;
	BN_CTX *bc;
};

static int op_modexp(void *arg)
{
	struct cx *c = arg;

	return BN_mod_exp(c->r, c->b, c->e, c->m, c->bc) == 1 ? 0 : -1;
}

static int op_pair(void *arg)
{
	struct cx *c = arg;
	uint8_t g[KMS_SAKKE_GT_LEN];

	return kms_sakke_pair(c->ibe->sakke, c->enc, c->keys.rsk, g);
}

static int op_encap(void *arg)
{
	struct cx *c = arg;

	return kms_sakke_encap(c->ibe->sakke, c->params.zs, c->ident,
			       c->ident_len, c->ssv, c->enc);
}

static int op_decap(void *arg)
{
	struct cx *c = arg;
	uint8_t ssv[KMS_SAKKE_SSV_LEN];

	return kms_sakke_decap(c->ibe->sakke, c->params.zs, c->ident,
			       c->ident_len, c->keys.rsk, c->enc, ssv);
}

static int op_decap_prepared(void *arg)
{
	struct cx *c = arg;
	uint8_t ssv[KMS_SAKKE_SSV_LEN];

	return kms_sakke_decap_prepared(c->ibe->sakke, c->rskp, c->enc, ssv);
}

static int op_rsk(void *arg)
{
	struct cx *c = arg;
	uint8_t rsk[KMS_SAKKE_POINT_LEN];

	return kms_sakke_rsk(c->ibe->sakke, c->z, c->ident, c->ident_len, rsk);
}

static int op_rsk_check(void *arg)
{
	struct cx *c = arg;

	return kms_sakke_rsk_check(c->ibe->sakke, c->params.zs, c->ident,
				   c->ident_len, c->keys.rsk);
}

static int op_eccsi_issue(void *arg)
{
	struct cx *c = arg;
	uint8_t ssk[KMS_ECCSI_SCALAR_LEN], pvt[KMS_ECCSI_POINT_LEN];

	return kms_eccsi_issue(c->ibe->eccsi, c->ksak, c->params.kpak, c->ident,
			       c->ident_len, NULL, ssk, pvt);
}

static int op_sign(void *arg)
{
	struct cx *c = arg;

	return kms_eccsi_sign(c->ibe->eccsi, c->params.kpak, c->ident,
			      c->ident_len, c->keys.ssk, c->keys.pvt, c->msg,
			      sizeof(c->msg), NULL, c->sig);
}

static int op_verify(void *arg)
{
	struct cx *c = arg;

	return kms_eccsi_verify(c->ibe->eccsi, c->params.kpak, c->ident,
				c->ident_len, c->msg, sizeof(c->msg), c->sig);
}

static int op_kgc_issue(void *arg)
{
	struct cx *c = arg;
	struct kms_ibe_keys k;
	int rc = kms_ibe_issue(c->ibe, c->z, c->ksak, &c->params, &c->uri,
			       c->keys.period, &k);

	kms_ibe_keys_wipe(&k);
	return rc;
}

static int op_ibe_seal(void *arg)
{
	struct cx *c = arg;
	int n = kms_ibe_seal(c->ibe, &c->params, &c->uri, c->keys.period, NULL,
			     0, c->pt, sizeof(c->pt), c->sealed,
			     sizeof(c->sealed));

	return n == (int)sizeof(c->sealed) ? 0 : -1;
}

static int op_ibe_open(void *arg)
{
	struct cx *c = arg;
	uint8_t pt[200];
	int n = kms_ibe_open(c->ibe, &c->params, &c->keys, NULL, 0, c->sealed,
			     sizeof(c->sealed), pt, sizeof(pt));

	return n == (int)sizeof(pt) ? 0 : -1;
}

static int cx_init(struct cx *c)
{
	uint8_t seed[KMS_IBE_SEED_LEN];

	memset(c, 0, sizeof(*c));
	if (kms_ibe_new(&c->ibe) || RAND_bytes(seed, sizeof(seed)) != 1 ||
	    kms_ibe_master_derive(c->ibe, seed, c->z, c->ksak) ||
	    kms_ibe_params_make(c->ibe, c->z, c->ksak, &c->params))
		return -1;
	kms_id_from_str("sip:bench@ims.example", &c->uri);
	kms_ibe_period(kms_now_ms(), c->keys.period);
	if (kms_ibe_issue(c->ibe, c->z, c->ksak, &c->params, &c->uri,
			  c->keys.period, &c->keys))
		return -1;
	c->ident_len = kms_ibe_ident(c->keys.period, &c->uri, c->ident);
	if (kms_ibe_prepare(c->ibe, &c->params, &c->keys, &c->rskp))
		return -1;
	if (RAND_bytes(c->ssv, sizeof(c->ssv)) != 1 ||
	    RAND_bytes(c->msg, sizeof(c->msg)) != 1 ||
	    RAND_bytes(c->pt, sizeof(c->pt)) != 1 || op_encap(c) ||
	    op_sign(c) || op_ibe_seal(c))
		return -1;
	/* The unit: a 1024-bit modulus (odd, top bit set) and exponent. */
	c->bc = BN_CTX_new();
	c->b = BN_new();
	c->e = BN_new();
	c->m = BN_new();
	c->r = BN_new();
	if (!c->bc || !c->r || !BN_rand(c->m, 1024, BN_RAND_TOP_ONE,
					   BN_RAND_BOTTOM_ODD) ||
	    !BN_rand(c->e, 1024, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) ||
	    !BN_rand_range(c->b, c->m))
		return -1;
	return 0;
}

static void cx_free(struct cx *c)
{
	kms_sakke_rskp_free(c->rskp);
	kms_ibe_free(c->ibe);
	kms_ibe_keys_wipe(&c->keys);
	BN_free(c->b);
	BN_free(c->e);
	BN_free(c->m);
	BN_free(c->r);
	BN_CTX_free(c->bc);
}

/* ---------------------------------------------------------------- mailbox */

struct mx {
	struct cx *c;
	struct kms_ibe_keys k_a, k_b, k_mb;
	struct kms_sakke_rskp *mb_rskp;  /* as kms-mailbox prepares it */
	struct kms_mbox *store;
	uint8_t *msg;
	size_t msg_len;
	struct kms_buf x, y, plain;
	char dir[256];
};

static int st_put(void *arg, struct kms_ibake_item *it)
{
	return kms_mbox_put(((struct mx *)arg)->store, it, kms_now_ms());
}

static int st_next(void *arg, const struct kms_id *b, const uint8_t *after,
		   struct kms_ibake_item *it, struct kms_buf *hold)
{
	return kms_mbox_next(((struct mx *)arg)->store, b, after, kms_now_ms(),
			     it, hold);
}

static int st_del(void *arg, const struct kms_id *b, const uint8_t *id)
{
	return kms_mbox_del(((struct mx *)arg)->store, b, id);
}

static const struct kms_ibake_store_ops ops = {
	.put = st_put, .next = st_next, .del = st_del,
};

static struct kms_ibake *sess(struct mx *m, const struct kms_ibe_keys *k)
{
	struct kms_ibake_party me = { .ibe = m->c->ibe, .params = &m->c->params,
				      .keys = k,
				      .rskp = k == &m->k_mb ? m->mb_rskp : NULL };
	struct kms_ibake *s = NULL;

	kms_ibake_new(&me, &s);
	return s;
}

static int mb_step(struct mx *m, struct kms_ibake *mb)
{
	m->y.len = 0;
	return kms_ibake_mb_on_frame(mb, &ops, m, m->x.p, m->x.len, &m->y);
}

static int op_deposit(void *arg)
{
	struct mx *m = arg;
	struct kms_ibake *a = sess(m, &m->k_a), *mb = sess(m, &m->k_mb);
	uint8_t id[KMS_IBAKE_MSG_ID_LEN];
	uint64_t exp;
	int rc = -1;

	if (!a || !mb)
		goto out;
	m->x.len = 0;
	if (kms_ibake_a_begin(a, m->k_b.id, m->k_mb.id, &m->x) ||
	    mb_step(m, mb) != KMS_OK)
		goto out;
	m->x.len = 0;
	if (kms_ibake_a_on_r1(a, m->y.p, m->y.len, &m->x) ||
	    mb_step(m, mb) != KMS_OK ||
	    kms_ibake_a_on_r2(a, m->y.p, m->y.len))
		goto out;
	m->x.len = 0;
	if (kms_ibake_a_deposit(a, m->msg, m->msg_len, &m->x) ||
	    mb_step(m, mb) != 1 ||
	    kms_ibake_a_on_ack(a, m->y.p, m->y.len, id, &exp))
		goto out;
	rc = 0;
out:
	kms_ibake_free(a);
	kms_ibake_free(mb);
	return rc;
}

/* One fetch session that delivers (and deletes) exactly one message. */
static int op_fetch(void *arg)
{
	struct mx *m = arg;
	struct kms_ibake *b = sess(m, &m->k_b), *mb = sess(m, &m->k_mb);
	struct kms_ibake_received rx;
	int rc = -1;

	if (!b || !mb || op_deposit(m)) /* refill: not timed separately */
		goto out;
	m->x.len = 0;
	if (kms_ibake_b_begin(b, m->k_mb.id, &m->x) ||
	    mb_step(m, mb) != KMS_OK)
		goto out;
	m->x.len = 0;
	if (kms_ibake_b_on_f2(b, m->y.p, m->y.len, &m->x) ||
	    mb_step(m, mb) != KMS_OK ||
	    kms_ibake_b_on_msg(b, m->y.p, m->y.len, &m->plain, &rx) != 0 ||
	    m->plain.len != m->msg_len)
		goto out;
	m->x.len = 0;
	if (kms_ibake_b_ack(b, 0, &m->x) || mb_step(m, mb) != 1)
		goto out;
	rc = 0;
out:
	kms_ibake_free(b);
	kms_ibake_free(mb);
	return rc;
}

static int op_store_put(void *arg)
{
	struct mx *m = arg;
	struct kms_ibake_item it;
	uint8_t sig[KMS_ECCSI_SIG_LEN] = { 0 }, kb[KMS_IBE_OVERHEAD + 90];

	memset(&it, 0, sizeof(it));
	memset(kb, 0x5a, sizeof(kb));
	kms_id_from_str(m->k_a.id, &it.id_a);
	kms_id_from_str(m->k_b.id, &it.id_b);
	memcpy(it.period, m->k_a.period, sizeof(it.period));
	it.key_b = kb;
	it.key_b_len = sizeof(kb);
	it.sig = sig;
	it.msg = m->msg;
	it.msg_len = (uint32_t)m->msg_len;
	return kms_mbox_put(m->store, &it, kms_now_ms());
}

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int mx_init(struct mx *m, struct cx *c, const struct opts *o)
{
	struct kms_mbox_config sc = { .map_size = 4ull << 30 };
	const char *ids[3] = { "sip:alice@ims.example", "sip:bob@ims.example",
			       "mailbox.ims.example" };
	struct kms_ibe_keys *ks[3] = { &m->k_a, &m->k_b, &m->k_mb };

	memset(m, 0, sizeof(*m));
	m->c = c;
	for (int i = 0; i < 3; i++) {
		struct kms_id uri;

		kms_id_from_str(ids[i], &uri);
		if (kms_ibe_issue(c->ibe, c->z, c->ksak, &c->params, &uri,
				  c->keys.period, ks[i]))
			return -1;
	}
	if (kms_ibe_prepare(c->ibe, &c->params, &m->k_mb, &m->mb_rskp))
		return -1;
	m->msg_len = o->msg_bytes;
	m->msg = malloc(m->msg_len);
	if (!m->msg || RAND_bytes(m->msg, (int)m->msg_len) != 1)
		return -1;
	snprintf(m->dir, sizeof(m->dir), "%s/kms-bench-ibe-XXXXXX", o->dir);
	if (!mkdtemp(m->dir))
		return -1;
	sc.path = m->dir;
	return kms_mbox_open(&sc, &m->store) ? -1 : 0;
}

static void mx_free(struct mx *m)
{
	kms_mbox_close(m->store);
	kms_sakke_rskp_free(m->mb_rskp);
	if (m->dir[0])
		nftw(m->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	kms_buf_free(&m->x);
	kms_buf_free(&m->y);
	kms_buf_free(&m->plain);
	free(m->msg);
	kms_ibe_keys_wipe(&m->k_a);
	kms_ibe_keys_wipe(&m->k_b);
	kms_ibe_keys_wipe(&m->k_mb);
}

/* ---------------------------------------------------------------- main */

static void row(const struct fig *f, double unit)
{
	printf("%-34s %12.1f %12.1f %12.1f %10.2f\n", f->name, f->med, f->min,
	       f->max, unit / f->med);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "msg-bytes", required_argument, NULL, 'm' },
		{ "dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .seconds = 1.0, .runs = 3, .msg_bytes = 65536,
			  .dir = "/var/tmp" };
	struct {
		const char *name;
		op_fn fn;
	} cops[] = {
		{ "bn_mod_exp 1024 (unit)", op_modexp },
		{ "sakke pairing", op_pair },
		{ "sakke encapsulate", op_encap },
		{ "sakke decapsulate", op_decap },
		{ "sakke decapsulate, prepared RSK", op_decap_prepared },
		{ "sakke rsk derive (KGC)", op_rsk },
		{ "sakke rsk check (party)", op_rsk_check },
		{ "eccsi issue (KGC)", op_eccsi_issue },
		{ "eccsi sign", op_sign },
		{ "eccsi verify", op_verify },
		{ "kgc issue: rsk+ssk+pvt", op_kgc_issue },
		{ "IBE_X seal 200 B", op_ibe_seal },
		{ "IBE_X open 200 B", op_ibe_open },
	};
	struct fig f[20], unit = { .med = 0 };
	struct cx c;
	struct mx m;
	unsigned purged;
	int ch, rc = 1;

	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 's': o.seconds = atof(optarg); break;
		case 'r': o.runs = (unsigned)atoi(optarg); break;
		case 'm': o.msg_bytes = (size_t)atol(optarg); break;
		case 'd': o.dir = optarg; break;
		case 'h':
			printf("usage: kms-bench-ibe [--seconds S] [--runs R] "
			       "[--msg-bytes N] [--dir DIR]\n");
			return 0;
		default:
			return 2;
		}
	}
	if (o.seconds <= 0 || !o.runs || o.runs > 16 || !o.msg_bytes ||
	    o.msg_bytes > (32u << 20)) {
		fprintf(stderr, "kms-bench-ibe: bad arguments\n");
		return 2;
	}
	if (cx_init(&c)) {
		fprintf(stderr, "kms-bench-ibe: setup failed\n");
		return 1;
	}
	printf("# kms-bench-ibe: %u runs x %.1f s each, one thread; ops/s and "
	       "cost in 1024-bit modexps\n", o.runs, o.seconds);
	printf("%-34s %12s %12s %12s %10s\n", "operation", "median/s", "min/s",
	       "max/s", "modexps");
	for (size_t i = 0; i < sizeof(cops) / sizeof(cops[0]); i++) {
		if (measure(&o, cops[i].name, cops[i].fn, &c, &f[i]))
			goto out;
		if (!i)
			unit = f[0];
		row(&f[i], unit.med);
	}
	printf("floor: one pairing = %.1f modexps (issue 8 floor: <= 4): %s\n",
	       unit.med / f[1].med, unit.med / f[1].med <= 4 ? "met" : "NOT met");

	if (mx_init(&m, &c, &o)) {
		fprintf(stderr, "kms-bench-ibe: mailbox setup in %s failed\n",
			o.dir);
		mx_free(&m);
		goto out;
	}
	printf("# mailbox: store in %s, messages of %zu bytes, durable commits\n",
	       o.dir, o.msg_bytes);
	if (measure(&o, "store put (ceiling)", op_store_put, &m, &f[16]) ||
	    measure(&o, "deposit sessions", op_deposit, &m, &f[17]) ||
	    /* empty the store: each fetch session must find one message */
	    kms_mbox_purge(m.store, UINT64_MAX, UINT_MAX, &purged) ||
	    measure(&o, "deposit+fetch sessions", op_fetch, &m, &f[18])) {
		mx_free(&m);
		goto out;
	}
	for (int i = 16; i < 19; i++)
		row(&f[i], unit.med);
	/* A fetch session refills its message first: its own rate is what
	 * remains of the pair's time once the deposit's is taken out. */
	printf("%-34s %12.1f\n", "fetch sessions (derived)",
	       1.0 / (1.0 / f[18].med - 1.0 / f[17].med));
	printf("deposits/s vs store puts/s: %.1f%%\n",
	       100.0 * f[17].med / f[16].med);
	mx_free(&m);
	rc = 0;
out:
	cx_free(&c);
	return rc;
}
