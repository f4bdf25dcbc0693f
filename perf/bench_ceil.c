// SPDX-License-Identifier: Apache-2.0
/*
 * kms-bench-ceil: the ceilings every KMS figure is compared with, measured
 * on this machine with the code the KMS itself runs (DESIGN.md section 5).
 *
 *   aead  AES-256-GCM through the engine's crypto ops table (the "offload"
 *         mode of dataplane/kms_crypto.h, i.e. crypto_offload.c: one
 *         cached encrypt and one decrypt EVP context per key, IV set per
 *         operation): seal and open of a token (plaintext len|A|len|B with
 *         two 24-byte IDs = 50 bytes, AD from kms_token_ad) and the keybox
 *         seal of a 32-byte K (AD from kms_keybox_ad). The table exposes
 *         all three, so no EVP call is made here. A RETRIEVE costs two
 *         token opens and one keybox seal:
 *             retrieve_aead_ceiling_rps = 1 / (2 t_open + t_seal_keybox)
 *         and the same sequence is also timed as one operation.
 *   hsm   hsm/ on one session: kms_hsm_random (32 B), kms_hsm_new_key
 *         (RNG + wrap), kms_hsm_wrap, kms_hsm_unwrap (the cache-miss path).
 *         SoftHSM2 token in a temp dir (as tests/common/kms_testenv.c makes
 *         it), or the token of --config CONF (its KEK must exist).
 *   lmdb  keystore/ on a new store in a temp dir under --dir (default
 *         /var/tmp: the real disk, not tmpfs): random point reads of
 *         deposit records (kms_ks_deposit_get; read txn renewed every 32
 *         reads, as a worker does per batch) in a store pre-filled with
 *         --records N, with 1 and 2 threads; durable commits
 *         (kms_ks_txn_commit, never MDB_NOSYNC) of write txns putting
 *         1, 8, 32, 128 deposit records with time-ordered key ids made
 *         like the engine's make_key_id. --engine-txn adds txns that write
 *         per record what a DEPOSIT on a new pair writes (deposit, pair,
 *         audit, nonce, plus the nonce purge).
 *   udp   kernel UDP echo on loopback: a server thread echoing with
 *         recvmmsg/sendmmsg (bursts of 32), a client keeping 256 datagrams
 *         of 100 bytes in flight with sendmmsg/recvmmsg; round trips/s.
 *
 * Each measurement runs --seconds S (default 2), --runs R times (default
 * 3); reported: median, min, max. Text table on stdout; --json FILE.
 */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "kms_config.h"
#include "kms_crypto.h"
#include "kms_err.h"
#include "kms_hsm.h"
#include "kms_ks.h"
#include "kms_log.h"
#include "kms_proto.h"

#define RUNS_MAX 64
#define ID_LEN 24               /* both party IDs of the token */
#define READ_RENEW 32           /* reads per read-txn renewal */
#define PREFILL_TXN 1000        /* records per pre-fill commit */
#define UDP_INFLIGHT 256        /* default of --udp-inflight */
#define UDP_INFLIGHT_MAX 4096   /* what the 4 MiB socket buffers hold */
#define UDP_BURST 32
#define UDP_LEN 100

enum {
	SEC_AEAD = 1 << 0,
	SEC_HSM = 1 << 1,
	SEC_LMDB = 1 << 2,
	SEC_UDP = 1 << 3,
	SEC_ALL = SEC_AEAD | SEC_HSM | SEC_LMDB | SEC_UDP,
};

static const unsigned batch_sizes[] = { 1, 8, 32, 128 };
#define NBATCH (sizeof(batch_sizes) / sizeof(batch_sizes[0]))

struct opts {
	double seconds;
	unsigned runs;
	const char *json;
	const char *config;
	const char *dir;
	unsigned long records;
	unsigned map_mb;
	unsigned sections;
	int engine_txn;
	unsigned udp_inflight;
};

/* Rates of R runs of one measurement. */
struct stat3 {
	double v[RUNS_MAX];
	unsigned n;
	double med, min, max;
	const char *err;        /* set when the measurement failed */
};

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig)
{
	stop_sig = sig;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void stat_finish(struct stat3 *s)
{
	double t[RUNS_MAX];

	if (!s->n) {
		s->med = s->min = s->max = 0;
		return;
	}
	memcpy(t, s->v, s->n * sizeof(t[0]));
	qsort(t, s->n, sizeof(t[0]), cmp_double);
	s->min = t[0];
	s->max = t[s->n - 1];
	s->med = s->n % 2 ? t[s->n / 2] : (t[s->n / 2 - 1] + t[s->n / 2]) / 2;
}

/* A cheap PRNG for record contents and read indexes (not for keys). */
static uint64_t xs_state = 0x9e3779b97f4a7c15ull;

static uint64_t xs64(void)
{
	uint64_t x = xs_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return xs_state = x;
}

static void fill_rand(uint8_t *p, size_t n)
{
	while (n) {
		uint64_t r = xs64();
		size_t k = n < 8 ? n : 8;

		memcpy(p, &r, k);
		p += k;
		n -= k;
	}
}

/*
 * The timing loop: call @p op(arg, n) with growing chunks until one chunk
 * takes >= 5 ms, then keep calling it until @p seconds have passed.
 * @return the rate in ops/s, or a negative value if op failed.
 */
typedef int (*op_fn)(void *arg, unsigned long n);

static double timed_run(op_fn op, void *arg, double seconds)
{
	unsigned long chunk = 1, total = 0;
	double t0 = now_s(), t1 = t0, c0;

	while (t1 - t0 < seconds && !stop_sig) {
		c0 = t1;
		if (op(arg, chunk))
			return -1;
		total += chunk;
		t1 = now_s();
		if (t1 - c0 < 0.005 && chunk < (1ul << 30))
			chunk *= 2;
	}
	return t1 > t0 ? (double)total / (t1 - t0) : 0;
}

/* Warm up for a tenth of a run, then R runs. */
static void measure(const struct opts *o, op_fn op, void *arg,
		    struct stat3 *s)
{
	double r;

	memset(s, 0, sizeof(*s));
	if (timed_run(op, arg, o->seconds / 10 < 0.2 ? o->seconds / 10 : 0.2) < 0) {
		s->err = "operation failed";
		return;
	}
	for (unsigned i = 0; i < o->runs && !stop_sig; i++) {
		r = timed_run(op, arg, o->seconds);
		if (r < 0) {
			s->err = "operation failed";
			break;
		}
		s->v[s->n++] = r;
	}
	stat_finish(s);
}

/* ---- temp dirs ---- */

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *dir)
{
	if (dir && dir[0])
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The file system type of the mount holding @p path (/proc/self/mountinfo:
 * the longest mount point that is a path prefix). */
static void fs_type(const char *path, char *out, size_t cap)
{
	char real[PATH_MAX], line[4096];
	size_t best = 0;
	FILE *f;

	snprintf(out, cap, "unknown");
	if (!realpath(path, real))
		return;
	f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char mp[PATH_MAX], type[64];
		char *sep = strstr(line, " - ");
		size_t l;

		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1 ||
		    sscanf(sep + 3, "%63s", type) != 1)
			continue;
		l = strlen(mp);
		if (strncmp(real, mp, l) ||
		    (l > 1 && real[l] != '/' && real[l] != '\0'))
			continue;
		if (l >= best) {
			best = l;
			snprintf(out, cap, "%s", type);
		}
	}
	fclose(f);
}

/* ---- HSM: a temp SoftHSM2 token, or the one of --config ---- */

struct hsm_env {
	char dir[PATH_MAX];          /* temp token dir, "" with --config */
	char module[KMS_CFG_STR];
	char token[KMS_CFG_STR];
	char kek[KMS_CFG_STR];
	char pin_file[KMS_CFG_STR];
	struct kms_hsm *hsm;
	struct kms_hsm_session *s;
};

static int run_cmd(const char *cmd)
{
	int rc = system(cmd);

	if (rc != 0)
		fprintf(stderr, "kms-bench-ceil: '%s' failed (%d)\n", cmd, rc);
	return rc == 0 ? 0 : -1;
}

/* Made as tests/common/kms_testenv.c makes its token. */
static int hsm_temp_token(struct hsm_env *h)
{
	const char *mod = getenv("KMS_TEST_PKCS11_MODULE");
	char path[PATH_MAX + 32], cmd[PATH_MAX + 256];
	FILE *f;

	snprintf(h->dir, sizeof(h->dir), "/tmp/kms-bench-ceil-hsm-XXXXXX");
	if (!mkdtemp(h->dir)) {
		h->dir[0] = '\0';
		perror("kms-bench-ceil: mkdtemp");
		return -1;
	}
	snprintf(path, sizeof(path), "%s/tokens", h->dir);
	if (mkdir(path, 0700)) {
		perror("kms-bench-ceil: mkdir");
		return -1;
	}
	snprintf(path, sizeof(path), "%s/softhsm2.conf", h->dir);
	f = fopen(path, "w");
	if (!f) {
		perror("kms-bench-ceil: softhsm2.conf");
		return -1;
	}
	fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
		   "log.level = ERROR\nslots.removable = false\n", h->dir);
	fclose(f);
	setenv("SOFTHSM2_CONF", path, 1);
	setenv("KMS_PIN", "bench-ceil-pin", 1);
	snprintf(cmd, sizeof(cmd),
		 "softhsm2-util --init-token --free --label kms-bench "
		 "--so-pin bench-ceil-so --pin bench-ceil-pin >/dev/null");
	if (run_cmd(cmd))
		return -1;
	snprintf(h->module, sizeof(h->module), "%s",
		 mod ? mod : "/usr/lib/softhsm/libsofthsm2.so");
	snprintf(h->token, sizeof(h->token), "kms-bench");
	snprintf(h->kek, sizeof(h->kek), "kms-kek");
	return 0;
}

static int hsm_setup(const struct opts *o, struct hsm_env *h)
{
	struct kms_hsm_config hc;
	int rc;

	memset(h, 0, sizeof(*h));
	if (o->config) {
		struct kms_config cfg;
		char err[512];

		kms_config_defaults(&cfg);
		if (kms_config_load(&cfg, o->config, err, sizeof(err))) {
			fprintf(stderr, "kms-bench-ceil: %s\n", err);
			return -1;
		}
		snprintf(h->module, sizeof(h->module), "%s", cfg.module);
		snprintf(h->token, sizeof(h->token), "%s", cfg.token_label);
		snprintf(h->kek, sizeof(h->kek), "%s", cfg.kek_label);
		snprintf(h->pin_file, sizeof(h->pin_file), "%s", cfg.pin_file);
	} else if (hsm_temp_token(h)) {
		return -1;
	}
	hc = (struct kms_hsm_config){
		.module = h->module, .token_label = h->token,
		.kek_label = h->kek,
		.pin_file = h->pin_file[0] ? h->pin_file : NULL,
		.pin_env = "KMS_PIN",
	};
	rc = kms_hsm_open(&hc, &h->hsm);
	if (rc) {
		fprintf(stderr, "kms-bench-ceil: HSM: %s\n", kms_strerror(rc));
		return -1;
	}
	if (!o->config) {
		rc = kms_hsm_kek_create(h->hsm);
		if (rc) {
			fprintf(stderr, "kms-bench-ceil: KEK: %s\n", kms_strerror(rc));
			return -1;
		}
	}
	rc = kms_hsm_session_open(h->hsm, &h->s);
	if (rc) {
		fprintf(stderr, "kms-bench-ceil: HSM session: %s%s\n",
			kms_strerror(rc), rc == KMS_ERR_NOTFOUND ?
			" (no KEK in the token: run `kmsctl init`)" : "");
		return -1;
	}
	return 0;
}

static void hsm_teardown(struct hsm_env *h)
{
	kms_hsm_session_close(h->s);
	kms_hsm_close(h->hsm);
	h->s = NULL;
	h->hsm = NULL;
	rm_tree(h->dir);
}

/* ---- a: AEAD through the crypto ops table ---- */

struct aead_res {
	size_t token_pt_len, token_ad_len, keybox_ad_len;
	struct stat3 seal_token, open_token, seal_keybox, retrieve;
	double retrieve_ceiling;
};

struct aead_ctx {
	const struct kms_crypto_ops *ops;
	void *st;
	struct kms_ckey *ka, *kb, *kk;
	uint8_t iv[KMS_NONCE_LEN];
	uint8_t pt[KMS_TOKEN_PT_MAX], ct[KMS_TOKEN_PT_MAX], out[KMS_TOKEN_PT_MAX];
	uint8_t tag[KMS_TAG_LEN];
	/* Ea (under Ka) and Eb (under Kb), valid, opened again and again */
	uint8_t ea_iv[KMS_NONCE_LEN], ea_ct[KMS_TOKEN_PT_MAX], ea_tag[KMS_TAG_LEN];
	uint8_t eb_iv[KMS_NONCE_LEN], eb_ct[KMS_TOKEN_PT_MAX], eb_tag[KMS_TAG_LEN];
	uint8_t ad_a[8 + 2 + KMS_ID_MAX + 4 + 8];
	uint8_t ad_b[8 + 2 + KMS_ID_MAX + 4 + 8];
	uint8_t ad_box[8 + 2 + 4 + 2 + 2 * KMS_ID_MAX + 16 + 4 + 8 + 12];
	size_t pt_len, ad_a_len, ad_b_len, ad_box_len;
	uint8_t box[KMS_KEY_LEN];
};

/* A fresh IV per seal, as every token and keybox has (a counter here: the
 * engine draws its IVs with RAND_bytes once per batch, outside the AEAD). */
static void iv_next(uint8_t iv[KMS_NONCE_LEN])
{
	for (int i = KMS_NONCE_LEN - 1; i >= 0 && !++iv[i]; i--)
		;
}

static int op_seal_token(void *arg, unsigned long n)
{
	struct aead_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++) {
		iv_next(c->iv);
		if (c->ops->seal(c->st, c->ka, c->iv, c->ad_a, c->ad_a_len, c->pt,
				 c->pt_len, c->ct, c->tag))
			return -1;
	}
	return 0;
}

static int op_open_token(void *arg, unsigned long n)
{
	struct aead_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++)
		if (c->ops->open(c->st, c->ka, c->ea_iv, c->ad_a, c->ad_a_len,
				 c->ea_ct, c->pt_len, c->ea_tag, c->out))
			return -1;
	return 0;
}

static int op_seal_keybox(void *arg, unsigned long n)
{
	struct aead_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++) {
		iv_next(c->iv);
		if (c->ops->seal_key(c->st, c->kb, c->kk, c->iv, c->ad_box,
				     c->ad_box_len, c->box, c->tag))
			return -1;
	}
	return 0;
}

/* A RETRIEVE's AEAD: open Ea under Ka, open Eb under Kb, seal K under Kb. */
static int op_retrieve(void *arg, unsigned long n)
{
	struct aead_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++) {
		iv_next(c->iv);
		if (c->ops->open(c->st, c->ka, c->ea_iv, c->ad_a, c->ad_a_len,
				 c->ea_ct, c->pt_len, c->ea_tag, c->out) ||
		    c->ops->open(c->st, c->kb, c->eb_iv, c->ad_b, c->ad_b_len,
				 c->eb_ct, c->pt_len, c->eb_tag, c->out) ||
		    c->ops->seal_key(c->st, c->kb, c->kk, c->iv, c->ad_box,
				     c->ad_box_len, c->box, c->tag))
			return -1;
	}
	return 0;
}

static int bench_aead(const struct opts *o, struct hsm_env *h,
		      struct aead_res *r)
{
	static const char id_a[] = "sip:alice-0001@bench.org";
	static const char id_b[] = "sip:bobby-0002@bench.org";
	struct kms_id a = { (const uint8_t *)id_a, ID_LEN };
	struct kms_id b = { (const uint8_t *)id_b, ID_LEN };
	uint8_t blob[KMS_HSM_BLOB_LEN], key_id[KMS_KEY_ID_LEN], nonce[KMS_NONCE_LEN];
	struct aead_ctx *c = calloc(1, sizeof(*c));
	struct kms_crypto_conf conf = { .capacity = 16 };
	uint64_t ts = wall_ms();
	int rc = -1;

	_Static_assert(sizeof(id_a) - 1 == ID_LEN && sizeof(id_b) - 1 == ID_LEN,
		       "IDs of 24 bytes");
	if (!c)
		return -1;
	c->ops = kms_crypto_find("offload");
	if (!c->ops || c->ops->create(h->s, &conf, &c->st)) {
		fprintf(stderr, "kms-bench-ceil: crypto mode 'offload' unavailable\n");
		goto out;
	}
	/* Three cached keys made by the HSM, as the engine gets them. */
	if (c->ops->key_new(c->st, blob, &c->ka) ||
	    c->ops->key_new(c->st, blob, &c->kb) ||
	    c->ops->key_new(c->st, blob, &c->kk)) {
		fprintf(stderr, "kms-bench-ceil: key_new failed\n");
		goto out;
	}
	c->pt_len = kms_token_pt(&a, &b, c->pt);
	c->ad_a_len = kms_token_ad(KMS_ROLE_A, &a, 1, ts, c->ad_a);
	c->ad_b_len = kms_token_ad(KMS_ROLE_B, &b, 1, ts, c->ad_b);
	fill_rand(key_id, sizeof(key_id));
	fill_rand(nonce, sizeof(nonce));
	c->ad_box_len = kms_keybox_ad(KMS_T_RETRIEVE_RESP, KMS_ROLE_B, 1, &a, &b,
				      key_id, 1, ts + 604800000ull, nonce,
				      c->ad_box);
	RAND_bytes(c->iv, sizeof(c->iv));
	RAND_bytes(c->ea_iv, sizeof(c->ea_iv));
	RAND_bytes(c->eb_iv, sizeof(c->eb_iv));
	if (c->ops->seal(c->st, c->ka, c->ea_iv, c->ad_a, c->ad_a_len, c->pt,
			 c->pt_len, c->ea_ct, c->ea_tag) ||
	    c->ops->seal(c->st, c->kb, c->eb_iv, c->ad_b, c->ad_b_len, c->pt,
			 c->pt_len, c->eb_ct, c->eb_tag) ||
	    c->ops->open(c->st, c->ka, c->ea_iv, c->ad_a, c->ad_a_len, c->ea_ct,
			 c->pt_len, c->ea_tag, c->out) ||
	    memcmp(c->out, c->pt, c->pt_len)) {
		fprintf(stderr, "kms-bench-ceil: token round trip failed\n");
		goto out;
	}
	r->token_pt_len = c->pt_len;
	r->token_ad_len = c->ad_a_len;
	r->keybox_ad_len = c->ad_box_len;
	measure(o, op_seal_token, c, &r->seal_token);
	measure(o, op_open_token, c, &r->open_token);
	measure(o, op_seal_keybox, c, &r->seal_keybox);
	measure(o, op_retrieve, c, &r->retrieve);
	if (r->open_token.med > 0 && r->seal_keybox.med > 0)
		r->retrieve_ceiling = 1.0 / (2.0 / r->open_token.med +
					     1.0 / r->seal_keybox.med);
	rc = r->seal_token.err || r->open_token.err || r->seal_keybox.err ||
	     r->retrieve.err ? -1 : 0;
out:
	if (c->st) {
		c->ops->key_release(c->st, c->ka);
		c->ops->key_release(c->st, c->kb);
		c->ops->key_release(c->st, c->kk);
		c->ops->destroy(c->st);
	}
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
	return rc;
}

/* ---- b: HSM ---- */

struct hsm_res {
	struct stat3 random32, new_key, wrap, unwrap;
	/* crypto_mode = hsm: CKM_AES_GCM on a loaded session object, and the
	 * load itself (a party key's cache miss in that mode) */
	struct stat3 gcm_open, gcm_seal_keybox, key_load;
	/* the same over HSM_OBJS live objects, used round robin, as a worker
	 * holds its parties' keys: the HSM's per-object bookkeeping counts */
	struct stat3 gcm_open_many, gcm_seal_keybox_many;
	double retrieve_ceiling, deposit_ceiling;
};

/* Party-key objects a worker holds in hsm mode: the benchmark's 1000 users. */
#define HSM_OBJS 1000

struct hsm_ctx {
	struct kms_hsm_session *s;
	uint8_t key[KMS_HSM_KEY_LEN], blob[KMS_HSM_BLOB_LEN];
	uint8_t out[KMS_HSM_KEY_LEN], tmp[KMS_HSM_BLOB_LEN];
	kms_hsm_obj objs[HSM_OBJS];
	unsigned nobj, next;         /* objects in use, round robin */
	uint8_t iv[12], ad[KMS_ID_MAX + 32], pt[KMS_TOKEN_PT_MAX];
	uint8_t ct[KMS_TOKEN_PT_MAX], tag[16], back[KMS_TOKEN_PT_MAX];
	uint8_t box_ad[160], box[32], box_tag[16], box_iv[12];
	size_t ad_len, pt_len, box_ad_len;
};

static int op_hsm_gcm_open(void *arg, unsigned long n)
{
	struct hsm_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++)
		if (kms_hsm_gcm_open(c->s, c->objs[c->next++ % c->nobj], c->iv, c->ad, c->ad_len, c->ct,
				     c->pt_len, c->tag, c->back))
			return -1;
	return 0;
}

static int op_hsm_gcm_seal_keybox(void *arg, unsigned long n)
{
	struct hsm_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++) {
		c->box_iv[0]++; /* a fresh IV per box, as the engine's */
		if (kms_hsm_gcm_seal(c->s, c->objs[c->next++ % c->nobj], c->box_iv, c->box_ad, c->box_ad_len,
				     c->key, sizeof(c->key), c->box, c->box_tag))
			return -1;
	}
	return 0;
}

static int op_hsm_key_load(void *arg, unsigned long n)
{
	struct hsm_ctx *c = arg;
	kms_hsm_obj o;

	for (unsigned long i = 0; i < n; i++)
		if (kms_hsm_key_load(c->s, c->blob, &o) ||
		    kms_hsm_key_unload(c->s, o))
			return -1;
	return 0;
}

/* Token and keybox of the AEAD section's sizes, under a loaded object. */
static int hsm_gcm_setup(struct hsm_ctx *c)
{
	static const char id_a[] = "sip:alice-0001@bench.org";
	static const char id_b[] = "sip:bobby-0002@bench.org";
	struct kms_id a = { (const uint8_t *)id_a, ID_LEN };
	struct kms_id b = { (const uint8_t *)id_b, ID_LEN };
	uint8_t key_id[KMS_KEY_ID_LEN], nonce[KMS_NONCE_LEN];
	uint64_t ts = wall_ms();

	/* Every object holds the same key: one token opens under all. */
	for (c->nobj = 0; c->nobj < HSM_OBJS; c->nobj++)
		if (kms_hsm_key_load(c->s, c->blob, &c->objs[c->nobj]))
			return -1;
	c->pt_len = kms_token_pt(&a, &b, c->pt);
	c->ad_len = kms_token_ad(KMS_ROLE_B, &b, 1, ts, c->ad);
	fill_rand(key_id, sizeof(key_id));
	fill_rand(nonce, sizeof(nonce));
	c->box_ad_len = kms_keybox_ad(KMS_T_RETRIEVE_RESP, KMS_ROLE_B, 1, &a, &b,
				      key_id, 1, ts + 604800000ull, nonce,
				      c->box_ad);
	fill_rand(c->iv, sizeof(c->iv));
	return kms_hsm_gcm_seal(c->s, c->objs[0], c->iv, c->ad, c->ad_len, c->pt,
				c->pt_len, c->ct, c->tag);
}

static int op_hsm_random(void *arg, unsigned long n)
{
	struct hsm_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++)
		if (kms_hsm_random(c->s, c->out, sizeof(c->out)))
			return -1;
	return 0;
}

static int op_hsm_new_key(void *arg, unsigned long n)
{
	struct hsm_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++)
		if (kms_hsm_new_key(c->s, c->out, c->tmp))
			return -1;
	return 0;
}

static int op_hsm_wrap(void *arg, unsigned long n)
{
	struct hsm_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++)
		if (kms_hsm_wrap(c->s, c->key, c->tmp))
			return -1;
	return 0;
}

static int op_hsm_unwrap(void *arg, unsigned long n)
{
	struct hsm_ctx *c = arg;

	for (unsigned long i = 0; i < n; i++)
		if (kms_hsm_unwrap(c->s, c->blob, c->out))
			return -1;
	return 0;
}

static int bench_hsm(const struct opts *o, struct hsm_env *h, struct hsm_res *r)
{
	struct hsm_ctx c = { .s = h->s };
	int rc = -1;

	if (kms_hsm_new_key(c.s, c.key, c.blob)) {
		fprintf(stderr, "kms-bench-ceil: kms_hsm_new_key failed\n");
		goto out;
	}
	measure(o, op_hsm_random, &c, &r->random32);
	measure(o, op_hsm_new_key, &c, &r->new_key);
	measure(o, op_hsm_wrap, &c, &r->wrap);
	measure(o, op_hsm_unwrap, &c, &r->unwrap);
	if (hsm_gcm_setup(&c)) {
		fprintf(stderr, "kms-bench-ceil: HSM CKM_AES_GCM unavailable\n");
		goto out;
	}
	measure(o, op_hsm_gcm_open, &c, &r->gcm_open_many);
	measure(o, op_hsm_gcm_seal_keybox, &c, &r->gcm_seal_keybox_many);
	c.nobj = 1;
	measure(o, op_hsm_gcm_open, &c, &r->gcm_open);
	measure(o, op_hsm_gcm_seal_keybox, &c, &r->gcm_seal_keybox);
	c.nobj = HSM_OBJS;
	measure(o, op_hsm_key_load, &c, &r->key_load);
	for (unsigned i = 0; i < c.nobj; i++)
		kms_hsm_key_unload(c.s, c.objs[i]);
	/* hsm mode: a RETRIEVE opens Eb and seals the box; a DEPOSIT opens
	 * Ea and Eas and seals the box. */
	if (r->gcm_open_many.med > 0 && r->gcm_seal_keybox_many.med > 0) {
		r->retrieve_ceiling = 1.0 / (1.0 / r->gcm_open_many.med +
					     1.0 / r->gcm_seal_keybox_many.med);
		r->deposit_ceiling = 1.0 / (2.0 / r->gcm_open_many.med +
					    1.0 / r->gcm_seal_keybox_many.med);
	}
	rc = r->random32.err || r->new_key.err || r->wrap.err || r->unwrap.err ||
	     r->gcm_open.err || r->gcm_seal_keybox.err || r->key_load.err ||
	     r->gcm_open_many.err || r->gcm_seal_keybox_many.err ?
	     -1 : 0;
out:
	OPENSSL_cleanse(&c, sizeof(c));
	return rc;
}

/* ---- c: LMDB through keystore/ ---- */

struct lmdb_res {
	char dir[PATH_MAX];
	char fstype[64];
	unsigned long records;
	double prefill_s;
	struct stat3 read1, read2;
	struct stat3 commits[NBATCH];           /* deposit records only */
	struct stat3 engine_commits[NBATCH];    /* --engine-txn */
	int have_engine;
};

struct lmdb_ctx {
	struct kms_ks *ks;
	uint8_t (*ids)[KMS_KEY_ID_LEN];         /* pre-filled key ids */
	unsigned long nids;
	unsigned batch;
	uint16_t seq;
	struct kms_deposit dep;
	int engine;
	unsigned long exists;
	struct kms_ks_nonce nonces[128];        /* --engine-txn: one batch's */
};

struct read_thread {
	struct lmdb_ctx *c;
	pthread_t t;
	double seconds;
	uint64_t seed;
	unsigned long reads;
	int rc;
};

/* As the engine's make_key_id: time first, worker id, sequence, salt. */
static void key_id_make(struct lmdb_ctx *c, uint64_t t_ms,
			uint8_t out[KMS_KEY_ID_LEN])
{
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(t_ms >> (56 - 8 * i));
	out[8] = 0;
	out[9] = 0;
	out[10] = (uint8_t)(c->seq >> 8);
	out[11] = (uint8_t)c->seq;
	c->seq++;
	fill_rand(out + 12, 4);
}

static void dep_init(struct kms_deposit *d)
{
	static const char a[] = "sip:alice-0001@bench.org";
	static const char b[] = "sip:bobby-0002@bench.org";
	static const char as[] = "mailbox-0001.bench.org";
	uint64_t now = wall_ms();

	memset(d, 0, sizeof(*d));
	d->status = KMS_DEP_ACTIVE;
	d->k_gen = 1;
	d->created_ms = now;
	d->expiry_ms = now + 604800000ull;
	fill_rand(d->pair_hash, sizeof(d->pair_hash));
	fill_rand(d->ea_digest, sizeof(d->ea_digest));
	fill_rand(d->blob, sizeof(d->blob));
	d->id_a_len = sizeof(a) - 1;
	memcpy(d->id_a, a, d->id_a_len);
	d->id_b_len = sizeof(b) - 1;
	memcpy(d->id_b, b, d->id_b_len);
	d->id_as_len = sizeof(as) - 1;
	memcpy(d->id_as, as, d->id_as_len);
}

/* What record() writes for one DEPOSIT on a new pair, beyond the deposit. */
static int engine_extra(struct kms_ks_txn *txn, const struct kms_deposit *d,
			const uint8_t key_id[KMS_KEY_ID_LEN], uint64_t now,
			struct kms_ks_nonce *nonce)
{
	struct kms_pair p = { .k_gen = 1, .uses = 1, .created_ms = now };
	struct kms_audit a;
	int rc;

	memcpy(p.blob, d->blob, sizeof(p.blob));
	rc = kms_ks_pair_put(txn, d->pair_hash, &p);
	if (rc)
		return rc;
	memset(&a, 0, sizeof(a));
	a.event = KMS_AUD_KEY_NEW;
	a.time_ms = now;
	a.k_gen = 1;
	memcpy(a.key_id, key_id, KMS_KEY_ID_LEN);
	a.actor_len = d->id_as_len;
	memcpy(a.actor, d->id_as, d->id_as_len);
	a.id_a_len = d->id_a_len;
	memcpy(a.id_a, d->id_a, d->id_a_len);
	a.id_b_len = d->id_b_len;
	memcpy(a.id_b, d->id_b, d->id_b_len);
	rc = kms_ks_audit_append(txn, &a);
	if (rc)
		return rc;
	/* The nonce: put with the others, packed, as the engine does. */
	nonce->expire_ms = now + 60000;
	nonce->role = KMS_ROLE_AS;
	fill_rand(nonce->nonce, sizeof(nonce->nonce));
	memcpy(nonce->pair_prefix, d->pair_hash, sizeof(nonce->pair_prefix));
	return KMS_OK;
}

/* One write txn of c->batch new deposits, committed durably; n times. */
static int op_commit(void *arg, unsigned long n)
{
	struct lmdb_ctx *c = arg;
	uint8_t key_id[KMS_KEY_ID_LEN];

	if (c->batch > sizeof(c->nonces) / sizeof(c->nonces[0]))
		return -1;
	for (unsigned long i = 0; i < n; i++) {
		struct kms_ks_txn *txn;
		uint64_t now = wall_ms();
		unsigned nn = 0;
		int rc = kms_ks_txn_begin(c->ks, 0, &txn);

		if (rc)
			return -1;
		for (unsigned j = 0; j < c->batch && rc == KMS_OK; j++) {
			key_id_make(c, now, key_id);
			if (c->engine)
				fill_rand(c->dep.pair_hash, KMS_PAIR_HASH_LEN);
			rc = kms_ks_deposit_put(txn, key_id, &c->dep, 0);
			if (rc == KMS_ERR_EXISTS) {
				c->exists++;
				rc = KMS_OK;
				continue;
			}
			if (rc == KMS_OK && c->engine)
				rc = engine_extra(txn, &c->dep, key_id, now,
						  &c->nonces[nn++]);
		}
		if (rc == KMS_OK && nn)
			rc = kms_ks_nonce_put_many(txn, c->nonces, nn);
		if (rc == KMS_OK && c->engine) {
			int purged = kms_ks_nonce_purge(txn, now, 2 * c->batch);

			rc = purged < 0 ? purged : KMS_OK;
		}
		if (rc) {
			kms_ks_txn_abort(txn);
			fprintf(stderr, "kms-bench-ceil: put: %s\n", kms_strerror(rc));
			return -1;
		}
		rc = kms_ks_txn_commit(txn);
		if (rc) {
			fprintf(stderr, "kms-bench-ceil: commit: %s\n",
				kms_strerror(rc));
			return -1;
		}
	}
	return 0;
}

static void *read_main(void *arg)
{
	struct read_thread *rt = arg;
	struct lmdb_ctx *c = rt->c;
	struct kms_ks_txn *txn;
	struct kms_deposit d;
	uint64_t x = rt->seed | 1;
	double t0 = now_s();

	rt->rc = kms_ks_txn_begin(c->ks, 1, &txn);
	if (rt->rc)
		return NULL;
	while (!stop_sig) {
		for (unsigned i = 0; i < 8 * READ_RENEW; i++) {
			uint64_t idx;

			if (i % READ_RENEW == 0 &&
			    (kms_ks_txn_reset(txn) || kms_ks_txn_renew(txn))) {
				rt->rc = KMS_ERR_STORE;
				goto out;
			}
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			idx = x % c->nids;
			if (kms_ks_deposit_get(txn, c->ids[idx], &d)) {
				rt->rc = KMS_ERR_NOTFOUND;
				goto out;
			}
		}
		rt->reads += 8 * READ_RENEW;
		if (now_s() - t0 >= rt->seconds)
			break;
	}
out:
	kms_ks_txn_abort(txn);
	return NULL;
}

/* Reads/s with @p nthreads threads, each for o->seconds; R runs. */
static void measure_reads(const struct opts *o, struct lmdb_ctx *c,
			  unsigned nthreads, struct stat3 *s)
{
	struct read_thread rt[2];

	memset(s, 0, sizeof(*s));
	for (unsigned run = 0; run <= o->runs && !stop_sig; run++) {
		double t0 = now_s(), t1, secs = run ? o->seconds : 0.2;
		unsigned long total = 0;

		for (unsigned i = 0; i < nthreads; i++) {
			rt[i] = (struct read_thread){ .c = c, .seconds = secs,
						      .seed = xs64() };
			if (pthread_create(&rt[i].t, NULL, read_main, &rt[i])) {
				s->err = "pthread_create";
				nthreads = i;
				break;
			}
		}
		for (unsigned i = 0; i < nthreads; i++) {
			pthread_join(rt[i].t, NULL);
			if (rt[i].rc)
				s->err = "read failed";
			total += rt[i].reads;
		}
		t1 = now_s();
		if (s->err)
			break;
		if (run)      /* run 0 warms the page cache and the threads */
			s->v[s->n++] = (double)total / (t1 - t0);
	}
	stat_finish(s);
}

static int bench_lmdb(const struct opts *o, struct lmdb_res *r)
{
	struct lmdb_ctx c = { 0 };
	struct kms_ks_config kc;
	char store[PATH_MAX + 16];
	double t0;
	int rc = -1;

	snprintf(r->dir, sizeof(r->dir), "%s/kms-bench-ceil-XXXXXX",
		 o->dir ? o->dir : "/var/tmp");
	if (!mkdtemp(r->dir)) {
		fprintf(stderr, "kms-bench-ceil: mkdtemp %s: %s\n", r->dir,
			strerror(errno));
		r->dir[0] = '\0';
		return -1;
	}
	fs_type(r->dir, r->fstype, sizeof(r->fstype));
	snprintf(store, sizeof(store), "%s/store", r->dir);
	kc = (struct kms_ks_config){ .path = store,
				     .map_size = (size_t)o->map_mb << 20,
				     .create = 1 };
	if (kms_ks_open(&kc, &c.ks)) {
		fprintf(stderr, "kms-bench-ceil: cannot create a store in %s\n",
			store);
		goto out;
	}
	c.nids = o->records;
	c.ids = malloc((c.nids ? c.nids : 1) * sizeof(*c.ids));
	if (!c.ids)
		goto out;
	dep_init(&c.dep);
	/* Pre-fill: time-ordered ids over the last day, PREFILL_TXN a txn. */
	t0 = now_s();
	for (unsigned long i = 0; i < c.nids && !stop_sig;) {
		struct kms_ks_txn *txn;
		uint64_t base = wall_ms() - 86400000ull;

		if (kms_ks_txn_begin(c.ks, 0, &txn))
			goto out;
		for (unsigned j = 0; j < PREFILL_TXN && i < c.nids; j++, i++) {
			key_id_make(&c, base + i * 86400000ull / c.nids, c.ids[i]);
			fill_rand(c.dep.ea_digest, sizeof(c.dep.ea_digest));
			kms_ks_deposit_put(txn, c.ids[i], &c.dep, 1);
		}
		if (kms_ks_txn_commit(txn)) {
			fprintf(stderr, "kms-bench-ceil: pre-fill commit failed "
				"(map full? raise --map-mb)\n");
			goto out;
		}
	}
	r->prefill_s = now_s() - t0;
	r->records = c.nids;
	if (c.nids) {
		measure_reads(o, &c, 1, &r->read1);
		measure_reads(o, &c, 2, &r->read2);
	}
	for (unsigned i = 0; i < NBATCH && !stop_sig; i++) {
		c.batch = batch_sizes[i];
		c.engine = 0;
		measure(o, op_commit, &c, &r->commits[i]);
	}
	if (o->engine_txn) {
		r->have_engine = 1;
		for (unsigned i = 0; i < NBATCH && !stop_sig; i++) {
			c.batch = batch_sizes[i];
			c.engine = 1;
			measure(o, op_commit, &c, &r->engine_commits[i]);
		}
	}
	rc = 0;
	if (c.exists)
		fprintf(stderr, "kms-bench-ceil: %lu key id collisions\n", c.exists);
out:
	kms_ks_close(c.ks);
	free(c.ids);
	rm_tree(r->dir);
	return rc;
}

/* ---- d: kernel UDP echo on loopback ---- */

struct udp_res {
	struct stat3 rtt;
	unsigned inflight;
	unsigned long lost_windows;
	int rcvbuf;
};

struct udp_ctx {
	int srv, cli;
	int stop;               /* atomic: set by the client, read by echo */
	pthread_t t;
	unsigned inflight;
	unsigned long timeouts;
	uint8_t buf[UDP_BURST][UDP_LEN + 28];
	struct iovec iov[UDP_BURST];
	struct mmsghdr msg[UDP_BURST];
};

static void sock_bufs(int fd, int bytes, int timeout_ms)
{
	struct timeval tv = { .tv_sec = timeout_ms / 1000,
			      .tv_usec = (timeout_ms % 1000) * 1000 };

	/* Room for every datagram in flight (each costs its truesize, about
	 * 1 KiB, against the buffer): FORCE as root, else the sysctl cap. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)))
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof(bytes)))
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static void *echo_main(void *arg)
{
	struct udp_ctx *c = arg;
	uint8_t buf[UDP_BURST][2048];
	struct sockaddr_in peer[UDP_BURST];
	struct iovec iov[UDP_BURST];
	struct mmsghdr m[UDP_BURST];
	int n;

	while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) {
		for (int i = 0; i < UDP_BURST; i++) {
			iov[i] = (struct iovec){ buf[i], sizeof(buf[i]) };
			m[i].msg_hdr = (struct msghdr){
				.msg_name = &peer[i], .msg_namelen = sizeof(peer[i]),
				.msg_iov = &iov[i], .msg_iovlen = 1 };
		}
		n = recvmmsg(c->srv, m, UDP_BURST, MSG_WAITFORONE, NULL);
		if (n <= 0)
			continue;       /* timeout: look at stop */
		for (int i = 0; i < n; i++)
			iov[i].iov_len = m[i].msg_len;
		for (int done = 0; done < n;) {
			int k = sendmmsg(c->srv, m + done, n - done, 0);

			if (k <= 0)
				break;
			done += k;
		}
	}
	return NULL;
}

static int udp_send(struct udp_ctx *c, unsigned n)
{
	while (n) {
		unsigned k = n < UDP_BURST ? n : UDP_BURST;
		int s;

		for (unsigned i = 0; i < k; i++) {
			c->iov[i] = (struct iovec){ c->buf[i], UDP_LEN };
			c->msg[i].msg_hdr = (struct msghdr){ .msg_iov = &c->iov[i],
							     .msg_iovlen = 1 };
		}
		s = sendmmsg(c->cli, c->msg, k, 0);
		if (s <= 0)
			return -1;
		n -= (unsigned)s;
	}
	return 0;
}

/* n round trips: take replies (bursts of up to 32), send as many again. */
static int op_udp(void *arg, unsigned long n)
{
	struct udp_ctx *c = arg;
	unsigned long got = 0;

	while (got < n) {
		int r;

		for (int i = 0; i < UDP_BURST; i++) {
			c->iov[i] = (struct iovec){ c->buf[i], sizeof(c->buf[i]) };
			c->msg[i].msg_hdr = (struct msghdr){ .msg_iov = &c->iov[i],
							     .msg_iovlen = 1 };
		}
		r = recvmmsg(c->cli, c->msg, UDP_BURST, MSG_WAITFORONE, NULL);
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* Nothing for 200 ms: the window was lost; refill it. */
			c->timeouts++;
			if (stop_sig || udp_send(c, c->inflight))
				return -1;
			continue;
		}
		if (r <= 0)
			return -1;
		got += (unsigned)r;
		if (udp_send(c, (unsigned)r))
			return -1;
	}
	return 0;
}

static int bench_udp(const struct opts *o, struct udp_res *r)
{
	struct udp_ctx *c = calloc(1, sizeof(*c));
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int started = 0, rc = -1;

	if (!c)
		return -1;
	c->srv = socket(AF_INET, SOCK_DGRAM, 0);
	c->cli = socket(AF_INET, SOCK_DGRAM, 0);
	if (c->srv < 0 || c->cli < 0 ||
	    bind(c->srv, (struct sockaddr *)&sa, sizeof(sa)) ||
	    getsockname(c->srv, (struct sockaddr *)&sa, &sl) ||
	    connect(c->cli, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("kms-bench-ceil: udp socket");
		goto out;
	}
	sock_bufs(c->srv, 4 << 20, 50);
	sock_bufs(c->cli, 4 << 20, 200);
	sl = sizeof(r->rcvbuf);
	getsockopt(c->cli, SOL_SOCKET, SO_RCVBUF, &r->rcvbuf, &sl);
	if (pthread_create(&c->t, NULL, echo_main, c))
		goto out;
	started = 1;
	c->inflight = r->inflight = o->udp_inflight;
	if (udp_send(c, c->inflight))
		goto out;
	measure(o, op_udp, c, &r->rtt);
	r->lost_windows = c->timeouts;
	rc = r->rtt.err ? -1 : 0;
out:
	if (started) {
		__atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
		pthread_join(c->t, NULL);
	}
	if (c->srv >= 0)
		close(c->srv);
	if (c->cli >= 0)
		close(c->cli);
	free(c);
	return rc;
}

/* ---- output ---- */

static const char *si(double x, char *buf, size_t cap)
{
	if (x >= 1e6)
		snprintf(buf, cap, "%.2f M", x / 1e6);
	else if (x >= 1e3)
		snprintf(buf, cap, "%.1f k", x / 1e3);
	else
		snprintf(buf, cap, "%.0f", x);
	return buf;
}

static void row(const char *what, const struct stat3 *s, const char *unit,
		int per_op)
{
	char a[32], b[32], c[32];

	if (s->err || !s->n) {
		printf("| %s | %s | | | |\n", what, s->err ? s->err : "not run");
		return;
	}
	printf("| %s | %s | %s | %s | %s", what, si(s->med, a, sizeof(a)),
	       si(s->min, b, sizeof(b)), si(s->max, c, sizeof(c)), unit);
	if (per_op)
		printf(" (%.0f ns/op)", 1e9 / s->med);
	printf(" |\n");
}

static void json_stat(FILE *f, const char *name, const struct stat3 *s,
		      const char *tail)
{
	fprintf(f, "\"%s\": {\"median\": %.1f, \"min\": %.1f, \"max\": %.1f, "
		"\"runs\": [", name, s->med, s->min, s->max);
	for (unsigned i = 0; i < s->n; i++)
		fprintf(f, "%s%.1f", i ? ", " : "", s->v[i]);
	fprintf(f, "]%s%s%s}%s", s->err ? ", \"error\": \"" : "",
		s->err ? s->err : "", s->err ? "\"" : "", tail);
}

struct results {
	char date[32];
	struct aead_res aead;
	struct hsm_res hsm;
	struct lmdb_res lmdb;
	struct udp_res udp;
	int ok_aead, ok_hsm, ok_lmdb, ok_udp;   /* 1 ran, -1 failed, 0 skipped */
	const char *hsm_token;
};

static void print_text(const struct results *R)
{
	char a[32], b[32];

	printf("\n| ceiling | median | min | max | unit |\n");
	printf("| --- | --- | --- | --- | --- |\n");
	if (R->ok_aead) {
		const struct aead_res *x = &R->aead;
		char t[160];

		snprintf(t, sizeof(t), "AES-256-GCM seal, token (%zu B pt, %zu B AD), "
			 "cached key, offload ops", x->token_pt_len, x->token_ad_len);
		row(t, &x->seal_token, "ops/s", 1);
		snprintf(t, sizeof(t), "AES-256-GCM open + tag check, token (%zu B, "
			 "%zu B AD), offload ops", x->token_pt_len, x->token_ad_len);
		row(t, &x->open_token, "ops/s", 1);
		snprintf(t, sizeof(t), "AES-256-GCM seal_key, keybox (32 B K, %zu B AD), "
			 "offload ops", x->keybox_ad_len);
		row(t, &x->seal_keybox, "ops/s", 1);
		row("RETRIEVE AEAD timed as one op (2 opens + 1 keybox seal)",
		    &x->retrieve, "req/s", 1);
	}
	if (R->ok_hsm) {
		row("HSM kms_hsm_random, 32 B", &R->hsm.random32, "ops/s", 1);
		row("HSM kms_hsm_new_key (RNG + wrap): a new K", &R->hsm.new_key,
		    "ops/s", 1);
		row("HSM kms_hsm_wrap, 32 B key", &R->hsm.wrap, "ops/s", 1);
		row("HSM kms_hsm_unwrap (key cache miss)", &R->hsm.unwrap, "ops/s", 1);
		row("HSM CKM_AES_GCM open, token (hsm mode, 2 calls), 1 object",
		    &R->hsm.gcm_open, "ops/s", 1);
		row("HSM CKM_AES_GCM seal, keybox (hsm mode, 2 calls), 1 object",
		    &R->hsm.gcm_seal_keybox, "ops/s", 1);
		row("HSM CKM_AES_GCM open, token, 1000 objects round robin",
		    &R->hsm.gcm_open_many, "ops/s", 1);
		row("HSM CKM_AES_GCM seal, keybox, 1000 objects round robin",
		    &R->hsm.gcm_seal_keybox_many, "ops/s", 1);
		row("HSM kms_hsm_key_load + unload (hsm mode party key miss)",
		    &R->hsm.key_load, "ops/s", 1);
	}
	if (R->ok_lmdb) {
		const struct lmdb_res *l = &R->lmdb;
		char t[160];

		snprintf(t, sizeof(t), "LMDB random deposit reads, %lu records, 1 thread",
			 l->records);
		row(t, &l->read1, "reads/s", 0);
		snprintf(t, sizeof(t), "LMDB random deposit reads, %lu records, 2 threads",
			 l->records);
		row(t, &l->read2, "reads/s", 0);
		for (unsigned i = 0; i < NBATCH; i++) {
			struct stat3 recs = l->commits[i];

			snprintf(t, sizeof(t), "LMDB durable commits, %u deposit%s per txn",
				 batch_sizes[i], batch_sizes[i] > 1 ? "s" : "");
			row(t, &l->commits[i], "commits/s", 0);
			for (unsigned j = 0; j < recs.n; j++)
				recs.v[j] *= batch_sizes[i];
			stat_finish(&recs);
			snprintf(t, sizeof(t), "  = deposit records/s at %u per txn",
				 batch_sizes[i]);
			row(t, &recs, "records/s", 0);
		}
		for (unsigned i = 0; l->have_engine && i < NBATCH; i++) {
			snprintf(t, sizeof(t), "LMDB durable commits, %u new-pair DEPOSIT%s "
				 "as the engine writes them", batch_sizes[i],
				 batch_sizes[i] > 1 ? "s" : "");
			row(t, &l->engine_commits[i], "commits/s", 0);
		}
	}
	if (R->ok_udp) {
		char t[96];

		snprintf(t, sizeof(t), "kernel UDP echo, loopback, %u x %d B in "
			 "flight, mmsg %d", R->udp.inflight, UDP_LEN, UDP_BURST);
		row(t, &R->udp.rtt, "round trips/s", 0);
	}
	printf("\n");
	if (R->ok_aead > 0 && R->aead.retrieve_ceiling > 0)
		printf("retrieve_aead_ceiling_rps = 1 / (2 t_open + t_seal_keybox) = %s req/s"
		       " (timed as one op: %s)\n",
		       si(R->aead.retrieve_ceiling, a, sizeof(a)),
		       si(R->aead.retrieve.med, b, sizeof(b)));
	if (R->ok_hsm > 0 && R->hsm.retrieve_ceiling > 0)
		printf("hsm_retrieve_ceiling_rps = 1 / (t_gcm_open + t_gcm_seal_keybox), "
		       "1000 objects = %s req/s\n"
		       "hsm_deposit_ceiling_rps = 1 / (2 t_gcm_open + t_gcm_seal_keybox), "
		       "1000 objects = %s req/s\n",
		       si(R->hsm.retrieve_ceiling, a, sizeof(a)),
		       si(R->hsm.deposit_ceiling, b, sizeof(b)));
	if (R->ok_hsm)
		printf("HSM token: %s\n", R->hsm_token);
	if (R->ok_lmdb)
		printf("LMDB store: %s (%s), pre-filled with %lu records in %.1f s\n",
		       R->lmdb.dir, R->lmdb.fstype, R->lmdb.records, R->lmdb.prefill_s);
	if (R->ok_lmdb && !strcmp(R->lmdb.fstype, "tmpfs"))
		printf("WARNING: the store is on tmpfs: commits are not durable "
		       "there; use --dir on a disk\n");
	if (R->ok_udp && R->udp.lost_windows)
		printf("WARNING: UDP echo: %lu timeouts (a window of datagrams lost)\n",
		       R->udp.lost_windows);
}

static int write_json(const struct opts *o, const struct results *R)
{
	struct utsname u;
	FILE *f = fopen(o->json, "w");

	if (!f) {
		fprintf(stderr, "kms-bench-ceil: %s: %s\n", o->json, strerror(errno));
		return -1;
	}
	uname(&u);
	fprintf(f, "{\n \"tool\": \"kms-bench-ceil\", \"date\": \"%s\",\n"
		" \"host\": {\"cpus\": %ld, \"kernel\": \"%s\", \"openssl\": \"%s\"},\n"
		" \"seconds\": %.3f, \"runs\": %u,\n", R->date,
		sysconf(_SC_NPROCESSORS_ONLN), u.release, OPENSSL_VERSION_TEXT,
		o->seconds, o->runs);
	if (R->ok_aead) {
		const struct aead_res *x = &R->aead;

		fprintf(f, " \"aead\": {\"via\": \"kms_crypto_ops offload (crypto_offload.c)\", "
			"\"token_pt_bytes\": %zu, \"token_ad_bytes\": %zu, "
			"\"keybox_ad_bytes\": %zu,\n  ", x->token_pt_len,
			x->token_ad_len, x->keybox_ad_len);
		json_stat(f, "seal_token_ops", &x->seal_token, ",\n  ");
		json_stat(f, "open_token_ops", &x->open_token, ",\n  ");
		json_stat(f, "seal_keybox_ops", &x->seal_keybox, ",\n  ");
		json_stat(f, "retrieve_measured_rps", &x->retrieve, "},\n");
		fprintf(f, " \"retrieve_aead_ceiling_rps\": %.1f,\n",
			x->retrieve_ceiling);
	}
	if (R->ok_hsm) {
		fprintf(f, " \"hsm\": {\"token\": \"%s\",\n  ", R->hsm_token);
		json_stat(f, "random32_ops", &R->hsm.random32, ",\n  ");
		json_stat(f, "new_key_ops", &R->hsm.new_key, ",\n  ");
		json_stat(f, "wrap_ops", &R->hsm.wrap, ",\n  ");
		json_stat(f, "unwrap_ops", &R->hsm.unwrap, ",\n  ");
		json_stat(f, "gcm_open_ops", &R->hsm.gcm_open, ",\n  ");
		json_stat(f, "gcm_seal_keybox_ops", &R->hsm.gcm_seal_keybox, ",\n  ");
		json_stat(f, "gcm_open_1000_objects_ops", &R->hsm.gcm_open_many, ",\n  ");
		json_stat(f, "gcm_seal_keybox_1000_objects_ops", &R->hsm.gcm_seal_keybox_many,
			  ",\n  ");
		json_stat(f, "key_load_ops", &R->hsm.key_load, "},\n");
		fprintf(f, " \"hsm_retrieve_ceiling_rps\": %.1f,\n"
			" \"hsm_deposit_ceiling_rps\": %.1f,\n",
			R->hsm.retrieve_ceiling, R->hsm.deposit_ceiling);
	}
	if (R->ok_lmdb) {
		const struct lmdb_res *l = &R->lmdb;

		fprintf(f, " \"lmdb\": {\"dir\": \"%s\", \"fstype\": \"%s\", "
			"\"records\": %lu, \"prefill_s\": %.2f,\n  ", l->dir,
			l->fstype, l->records, l->prefill_s);
		json_stat(f, "read_1thread_ops", &l->read1, ",\n  ");
		json_stat(f, "read_2threads_ops", &l->read2, ",\n  ");
		fprintf(f, "\"commits\": [");
		for (unsigned i = 0; i < NBATCH; i++) {
			struct stat3 recs = l->commits[i];

			for (unsigned j = 0; j < recs.n; j++)
				recs.v[j] *= batch_sizes[i];
			stat_finish(&recs);
			fprintf(f, "%s\n   {\"batch\": %u, ", i ? "," : "",
				batch_sizes[i]);
			json_stat(f, "commits_per_s", &l->commits[i], ", ");
			json_stat(f, "records_per_s", &recs, "}");
		}
		fprintf(f, "]");
		if (l->have_engine) {
			fprintf(f, ",\n  \"engine_commits\": [");
			for (unsigned i = 0; i < NBATCH; i++) {
				fprintf(f, "%s\n   {\"batch\": %u, ", i ? "," : "",
					batch_sizes[i]);
				json_stat(f, "commits_per_s", &l->engine_commits[i],
					  "}");
			}
			fprintf(f, "]");
		}
		fprintf(f, "},\n");
	}
	if (R->ok_udp) {
		fprintf(f, " \"udp_echo\": {\"inflight\": %u, \"bytes\": %d, "
			"\"mmsg_batch\": %d, \"rcvbuf\": %d, \"timeouts\": %lu,\n  ",
			R->udp.inflight, UDP_LEN, UDP_BURST, R->udp.rcvbuf,
			R->udp.lost_windows);
		json_stat(f, "round_trips_per_s", &R->udp.rtt, "},\n");
	}
	{
		const int ok[] = { R->ok_aead, R->ok_hsm, R->ok_lmdb, R->ok_udp };
		const char *const name[] = { "aead", "hsm", "lmdb", "udp" };
		int first = 1;

		fprintf(f, " \"sections_failed\": [");
		for (unsigned i = 0; i < 4; i++)
			if (ok[i] < 0) {
				fprintf(f, "%s\"%s\"", first ? "" : ", ", name[i]);
				first = 0;
			}
		fprintf(f, "]\n}\n");
	}
	return fclose(f) ? -1 : 0;
}

/* ---- main ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kms-bench-ceil [options]\n"
		"  --seconds S      seconds per measurement run (default 2)\n"
		"  --runs R         runs per measurement: median, min, max (default 3)\n"
		"  --json FILE      also write the results as one JSON object\n"
		"  --config CONF    use the HSM token of this kmsd configuration (its\n"
		"                   KEK must exist; PIN from hsm.pin_file or $KMS_PIN);\n"
		"                   default: a new SoftHSM2 token in a temp dir\n"
		"  --dir DIR        LMDB store in a temp dir under DIR (default /var/tmp)\n"
		"  --records N      deposit records pre-filled for the reads (default 200000)\n"
		"  --map-mb MB      LMDB map size (default 1024)\n"
		"  --engine-txn     also time txns writing what the engine writes per\n"
		"                   new-pair DEPOSIT (deposit, pair, audit, nonce)\n"
		"  --only LIST      comma-separated subset of aead,hsm,lmdb,udp\n"
		"  --udp-inflight N datagrams the UDP echo keeps in flight (default\n"
		"                   256, at most 4096): the load generator's window\n");
}

static unsigned parse_sections(const char *s)
{
	unsigned m = 0;
	char buf[128], *save, *t;

	snprintf(buf, sizeof(buf), "%s", s);
	for (t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (!strcmp(t, "aead"))
			m |= SEC_AEAD;
		else if (!strcmp(t, "hsm"))
			m |= SEC_HSM;
		else if (!strcmp(t, "lmdb"))
			m |= SEC_LMDB;
		else if (!strcmp(t, "udp"))
			m |= SEC_UDP;
		else
			return 0;
	}
	return m;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "json", required_argument, NULL, 'j' },
		{ "config", required_argument, NULL, 'c' },
		{ "dir", required_argument, NULL, 'd' },
		{ "records", required_argument, NULL, 'n' },
		{ "map-mb", required_argument, NULL, 'm' },
		{ "engine-txn", no_argument, NULL, 'e' },
		{ "only", required_argument, NULL, 'o' },
		{ "udp-inflight", required_argument, NULL, 'u' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .seconds = 2, .runs = 3, .records = 200000,
			  .map_mb = 1024, .sections = SEC_ALL,
			  .udp_inflight = UDP_INFLIGHT };
	struct results *R = calloc(1, sizeof(*R));
	struct hsm_env h;
	struct sigaction sa = { .sa_handler = on_signal };
	time_t t = time(NULL);
	char *end;
	int c, failed = 0;

	if (!R)
		return 2;
	memset(&h, 0, sizeof(h));
	while ((c = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
		switch (c) {
		case 's':
			o.seconds = strtod(optarg, &end);
			if (*end || o.seconds <= 0)
				goto bad;
			break;
		case 'r':
			o.runs = (unsigned)strtoul(optarg, &end, 10);
			if (*end || !o.runs || o.runs > RUNS_MAX)
				goto bad;
			break;
		case 'j':
			o.json = optarg;
			break;
		case 'c':
			o.config = optarg;
			break;
		case 'd':
			o.dir = optarg;
			break;
		case 'n':
			o.records = strtoul(optarg, &end, 10);
			if (*end)
				goto bad;
			break;
		case 'm':
			o.map_mb = (unsigned)strtoul(optarg, &end, 10);
			if (*end || !o.map_mb)
				goto bad;
			break;
		case 'e':
			o.engine_txn = 1;
			break;
		case 'o':
			o.sections = parse_sections(optarg);
			if (!o.sections)
				goto bad;
			break;
		case 'u':
			o.udp_inflight = (unsigned)strtoul(optarg, &end, 10);
			if (*end || !o.udp_inflight ||
			    o.udp_inflight > UDP_INFLIGHT_MAX)
				goto bad;
			break;
		case 'h':
			usage(stdout);
			free(R);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind != argc)
		goto bad;

	kms_log_init("kms-bench-ceil", KMS_LOG_WARN, 0);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	strftime(R->date, sizeof(R->date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
	printf("kms-bench-ceil: %s, %ld CPUs, %s; %g s x %u runs per measurement\n",
	       R->date, sysconf(_SC_NPROCESSORS_ONLN), OPENSSL_VERSION_TEXT,
	       o.seconds, o.runs);
	fflush(stdout);

	if (o.sections & (SEC_AEAD | SEC_HSM)) {
		if (hsm_setup(&o, &h)) {
			R->ok_aead = o.sections & SEC_AEAD ? -1 : 0;
			R->ok_hsm = o.sections & SEC_HSM ? -1 : 0;
			failed = 1;
		} else {
			R->hsm_token = o.config ? o.config :
					"SoftHSM2, new token in a temp dir";
			if (o.sections & SEC_AEAD && !stop_sig) {
				printf("kms-bench-ceil: aead ...\n");
				fflush(stdout);
				R->ok_aead = bench_aead(&o, &h, &R->aead) ? -1 : 1;
			}
			if (o.sections & SEC_HSM && !stop_sig) {
				printf("kms-bench-ceil: hsm ...\n");
				fflush(stdout);
				R->ok_hsm = bench_hsm(&o, &h, &R->hsm) ? -1 : 1;
			}
		}
		hsm_teardown(&h);
	}
	if (o.sections & SEC_LMDB && !stop_sig) {
		printf("kms-bench-ceil: lmdb (pre-filling %lu records) ...\n",
		       o.records);
		fflush(stdout);
		R->ok_lmdb = bench_lmdb(&o, &R->lmdb) ? -1 : 1;
	}
	if (o.sections & SEC_UDP && !stop_sig) {
		printf("kms-bench-ceil: udp ...\n");
		fflush(stdout);
		R->ok_udp = bench_udp(&o, &R->udp) ? -1 : 1;
	}
	if (stop_sig) {
		fprintf(stderr, "kms-bench-ceil: stopped by signal %d\n", (int)stop_sig);
		free(R);
		return 130;
	}
	failed |= R->ok_aead < 0 || R->ok_hsm < 0 || R->ok_lmdb < 0 || R->ok_udp < 0;
	print_text(R);
	if (o.json && write_json(&o, R))
		failed = 1;
	free(R);
	return failed ? 1 : 0;
bad:
	usage(stderr);
	free(R);
	return 2;
}
