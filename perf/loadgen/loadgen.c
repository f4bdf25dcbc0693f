// SPDX-License-Identifier: Apache-2.0
/*
 * kms-loadgen: plays UE-A, the mailbox AS and UE-B for a population of
 * enrolled parties (kmsctl enroll-bulk), drives a KMS with DEPOSIT and
 * RETRIEVE requests in an open or closed loop, and verifies every answer:
 * each RETRIEVE must give exactly the K that A got from the DEPOSIT it
 * names. perf/README.md documents the options and the report.
 *
 * Phases:
 *   seed     closed loop, not measured: one DEPOSIT per seed deposit, each
 *            verified at once; RETRIEVEs of the run pick among these.
 *   run      warm-up then the measured window. Requests are built ahead of
 *            their send time in chunks (all of them before the run when the
 *            count is known and fits --prebuild-mb), with timestamps at
 *            their scheduled send time (open loop) or at build time.
 *            Replies are stored raw, keyed by txid = request index.
 *   verify   after the run: every stored reply is parsed and its keybox
 *            opened with the recipient's key; only then is it counted ok.
 *   report   text summary, JSON, gnuplot plots.
 *
 * Single-threaded: one loop sends what is due and receives what arrived.
 * Latency in the open loop is measured from the scheduled send time, so a
 * generator or server stall shows up in it (no coordinated omission).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#ifdef LG_WITH_DPDK
#include <rte_eal.h>
#include <rte_version.h>
#endif

#include "kms_err.h"
#include "kms_proto.h"
#include "kms_token.h"
#include "kms_version.h"
#include "lg_acklog.h"
#include "lg_hist.h"
#include "lg_io.h"
#include "lg_pop.h"
#include "lg_priv.h"

#define BURST 64
#define CHUNK 8192
#define SEED_TRIES 5
#define PREBUILD_MAX 1000000ull     /* requests built before the run */

/* ---- options ---- */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

void lg_die(const char *fmt, ...)
{
	va_list ap;

	fputs("kms-loadgen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: the load's choices, reproducible with --seed. */
static uint64_t rnd(struct lg *g)
{
	g->rng ^= g->rng >> 12;
	g->rng ^= g->rng << 25;
	g->rng ^= g->rng >> 27;
	return g->rng * 2685821657736338717ull;
}

static uint32_t rnd_below(struct lg *g, uint64_t n)
{
	return (uint32_t)(rnd(g) % n);
}

/* A fresh GCM nonce: a random per-run prefix and a counter, so no nonce
 * repeats under one key within a run, and runs differ. */
static void next_nonce(struct lg *g, uint8_t out[KMS_NONCE_LEN])
{
	uint64_t c = ++g->nonce_ctr;

	memcpy(out, g->nonce_prefix, 4);
	for (int i = 0; i < 8; i++)
		out[4 + i] = (uint8_t)(c >> (56 - 8 * i));
}

/* Pair index -> (A, B): every ordered pair of distinct users once for
 * indices below U * (U - 1). */
static void pair_users(const struct lg *g, uint64_t i, uint32_t *a, uint32_t *b)
{
	uint64_t u = g->pop.nusers;

	*a = (uint32_t)(i % u);
	*b = (uint32_t)((*a + 1 + (i / u) % (u - 1)) % u);
}

static struct kms_id pid(const struct lg_party *p)
{
	struct kms_id id = { (const uint8_t *)p->id, p->id_len };

	return id;
}

/* ---- building requests ---- */

static int seal(struct lg *g, uint8_t role, const struct lg_party *party,
		const struct lg_party *a, const struct lg_party *b,
		uint64_t ts_ms, uint8_t nonce[KMS_NONCE_LEN], uint8_t *out)
{
	struct kms_id pi = pid(party), ai = pid(a), bi = pid(b);

	next_nonce(g, nonce);
	return kms_token_seal(role, &pi, party->gen, party->key, ts_ms, nonce,
			      &ai, &bi, out, KMS_TOKEN_MAX);
}

static int build_deposit(struct lg *g, uint32_t txid, uint32_t ai, uint32_t bi,
			 uint32_t asi, uint64_t ts_ms, uint8_t nonce_a[KMS_NONCE_LEN],
			 uint8_t *ea, int *ea_len, uint8_t *out, size_t cap)
{
	const struct lg_party *a = &g->pop.users[ai], *b = &g->pop.users[bi],
			      *as = &g->pop.as[asi];
	uint8_t eas[KMS_TOKEN_MAX], nonce_as[KMS_NONCE_LEN];
	struct kms_id ia = pid(a), ib = pid(b), ias = pid(as);
	int la, las;

	la = seal(g, KMS_ROLE_A, a, a, b, ts_ms, nonce_a, ea);
	las = seal(g, KMS_ROLE_AS, as, a, b, ts_ms, nonce_as, eas);
	if (la < 0 || las < 0)
		return -1;
	*ea_len = la;
	return kms_deposit_req_encode(txid, &ia, &ib, &ias, ea, (size_t)la, eas,
				      (size_t)las, out, cap);
}

static int build_retrieve(struct lg *g, uint32_t txid, const struct seed_dep *d,
			  uint64_t ts_ms, uint8_t nonce_b[KMS_NONCE_LEN],
			  uint8_t *out, size_t cap)
{
	const struct lg_party *a = &g->pop.users[d->a], *b = &g->pop.users[d->b];
	struct kms_id ia = pid(a), ib = pid(b);
	uint8_t eb[KMS_TOKEN_MAX];
	int lb;

	lb = seal(g, KMS_ROLE_B, b, a, b, ts_ms, nonce_b, eb);
	if (lb < 0)
		return -1;
	return kms_retrieve_req_encode(txid, &ia, &ib, d->key_id, d->ea,
				       d->ea_len, eb, (size_t)lb, out, cap);
}

/* ---- seed phase: deposits whose K is known before the run ---- */

/* Open a DEPOSIT_RESP for A. @return 0 and K, or a verify class. */
enum vres { V_OK, V_MISMATCH, V_BAD_TAG, V_BAD_REPLY, V_STATUS };

static enum vres open_reply(const uint8_t *buf, size_t len, uint32_t txid,
			    uint8_t want_type, uint8_t role,
			    const struct lg_party *recip, const struct lg_party *a,
			    const struct lg_party *b, const uint8_t nonce[KMS_NONCE_LEN],
			    const uint8_t *want_key_id, uint8_t k[KMS_KEY_LEN],
			    uint8_t key_id[KMS_KEY_ID_LEN], uint32_t *k_gen,
			    uint16_t *status)
{
	struct kms_id ia = pid(a), ib = pid(b);
	struct kms_resp r;

	*status = KMS_ST_OK;
	if (kms_resp_parse(buf, len, &r) || r.hdr.txid != txid)
		return V_BAD_REPLY;
	if (r.hdr.type == KMS_T_ERROR) {
		*status = r.status;
		return V_STATUS;
	}
	if (r.hdr.type != want_type)
		return V_BAD_REPLY;
	if (want_key_id && memcmp(r.key_id, want_key_id, KMS_KEY_ID_LEN))
		return V_BAD_REPLY;
	if (kms_keybox_open(&r, role, recip->gen, recip->key, &ia, &ib, nonce, k))
		return V_BAD_TAG;
	memcpy(key_id, r.key_id, KMS_KEY_ID_LEN);
	*k_gen = r.k_gen;
	return V_OK;
}

static void seed(struct lg *g)
{
	unsigned want = (unsigned)g->o.seed_deps, done = 0, tries = 0;
	uint32_t round = 0;
	uint8_t (*req)[KMS_DGRAM_MAX] = calloc(BURST, sizeof(*req));
	uint8_t (*rep)[LG_DGRAM_MAX] = calloc(BURST, sizeof(*rep));
	uint8_t (*nonce)[KMS_NONCE_LEN] = calloc(BURST, sizeof(*nonce));
	struct lg_dgram d[BURST];
	uint64_t t_start = mono_ns();

	g->deps = calloc(want ? want : 1, sizeof(*g->deps));
	if (!req || !rep || !nonce || !g->deps)
		die("out of memory");
	while (done < want && !g_stop) {
		unsigned n = want - done < BURST ? want - done : BURST;
		unsigned got = 0;
		uint64_t deadline;
		/* txid: 1 | round (15 bits) | index (16 bits): a late reply of
		 * an earlier round is not taken for this round's. */
		uint32_t tag = 0x80000000u | (++round & 0x7fffu) << 16;

		if (++tries > SEED_TRIES * (want / BURST + 1))
			die("seed: only %u of %u deposits answered OK after %u "
			    "rounds: is the KMS at --server running, and the "
			    "population enrolled in its store?", done, want,
			    tries - 1);
		for (unsigned i = 0; i < n; i++) {
			struct seed_dep *s = &g->deps[done + i];
			uint64_t pi = (done + i) % g->o.pairs;
			int ea_len, l;

			s->pair = (uint32_t)pi;
			pair_users(g, pi, &s->a, &s->b);
			s->as = (uint32_t)(pi % g->pop.nas);
			l = build_deposit(g, tag | i, s->a, s->b, s->as,
					  kms_now_ms(), nonce[i], s->ea, &ea_len,
					  req[i], KMS_DGRAM_MAX);
			if (l < 0)
				die("seed: cannot build a DEPOSIT");
			s->ea_len = (uint16_t)ea_len;
			d[i].buf = req[i];
			d[i].len = (uint16_t)l;
		}
		{
			int k = g->io->send(g->io, d, n);

			if (k < 0)
				die("seed: send failed");
			n = (unsigned)k;        /* the rest are built again */
		}
		/* Collect for up to the timeout; keep what verified. */
		unsigned okmask_n = 0;
		uint8_t okv[BURST] = { 0 };

		deadline = mono_ns() + (uint64_t)g->o.timeout_ms * 1000000;
		while (got < n && mono_ns() < deadline && !g_stop) {
			struct lg_dgram r[BURST];
			int k;

			for (unsigned i = 0; i < BURST; i++) {
				r[i].buf = rep[i];
				r[i].cap = LG_DGRAM_MAX;
			}
			k = g->io->recv(g->io, r, BURST, 1000);
			if (k < 0)
				die("seed: receive failed");
			for (int j = 0; j < k; j++) {
				struct kms_hdr h;
				uint32_t i;
				struct seed_dep *s;
				uint16_t st;
				enum vres vr;

				if (kms_hdr_parse(r[j].buf, r[j].len, &h) ||
				    (h.txid & 0xffff0000u) != tag)
					continue;       /* late, or not a seed's */
				i = h.txid & 0xffffu;
				if (i >= n || okv[i])
					continue;
				s = &g->deps[done + i];
				vr = open_reply(r[j].buf, r[j].len, h.txid,
						KMS_T_DEPOSIT_RESP, KMS_ROLE_A,
						&g->pop.users[s->a],
						&g->pop.users[s->a],
						&g->pop.users[s->b], nonce[i], NULL,
						s->k, s->key_id, &s->k_gen, &st);
				got++;
				if (vr == V_OK) {
					okv[i] = 1;
					okmask_n++;
				} else if (vr == V_STATUS) {
					fprintf(stderr, "kms-loadgen: seed deposit "
						"refused: %s\n", kms_status_name(st));
					if (st != KMS_ST_BUSY)
						die("seed: the KMS refused a "
						    "DEPOSIT (%s)", kms_status_name(st));
				} else {
					die("seed: a DEPOSIT reply did not verify "
					    "(%s)", vr == V_BAD_TAG ? "bad tag" :
					    "bad reply");
				}
			}
		}
		/* Compact: keep the verified ones at the front. */
		unsigned w = 0;

		for (unsigned i = 0; i < n; i++)
			if (okv[i]) {
				if (w != i)
					g->deps[done + w] = g->deps[done + i];
				w++;
			}
		done += w;
	}
	g->ndeps = done;
	for (unsigned i = 0; g->ack && i < done; i++) {
		const struct seed_dep *sd = &g->deps[i];
		struct lg_ack x = { .a = sd->a, .b = sd->b, .k_gen = sd->k_gen,
				    .ea_len = sd->ea_len };

		memcpy(x.key_id, sd->key_id, KMS_KEY_ID_LEN);
		memcpy(x.k, sd->k, KMS_KEY_LEN);
		memcpy(x.ea, sd->ea, sd->ea_len);
		lg_ack_write(g->ack, &x);
		OPENSSL_cleanse(&x, sizeof(x));
	}
	OPENSSL_cleanse(req, BURST * sizeof(*req));
	free(req);
	free(rep);
	free(nonce);
	if (!g_stop && !g->o.quiet)
		fprintf(stderr, "kms-loadgen: seed: %u deposits verified in %.2f s\n",
			done, (double)(mono_ns() - t_start) / 1e9);
}

/* ---- the run ---- */

static struct rq *rq_at(struct lg *g, uint64_t i)
{
	return &g->rq[i];
}

static void rq_reserve(struct lg *g, uint64_t n)
{
	uint64_t nc;
	struct rq *nr;

	if (n <= g->caprq)
		return;
	nc = g->caprq ? g->caprq * 2 : 65536;
	while (nc < n)
		nc *= 2;
	nr = realloc(g->rq, nc * sizeof(*nr));
	if (!nr)
		die("out of memory for %llu requests (lower --duration, --rate "
		    "or --count)", (unsigned long long)n);
	g->rq = nr;
	if (g->ack) {
		struct lg_ack *na = realloc(g->ack_ea, nc * sizeof(*na));

		if (!na)
			die("out of memory for the ack log's tokens (lower "
			    "--duration, --rate or --count)");
		g->ack_ea = na;
	}
	g->caprq = nc;
}

/* Scheduled send time of request @p i in the open loop. */
static uint64_t sched_of(const struct lg *g, uint64_t i)
{
	return g->t0_ns + (uint64_t)((double)i * 1e9 / g->o.rate);
}

/* Build requests [nrq, nrq + n) into a new chunk. */
static void build_chunk(struct lg *g, uint64_t n)
{
	uint64_t t = mono_ns(), first = g->nrq, now_wall = kms_now_ms();
	struct chunk *c = calloc(1, sizeof(*c));

	if (!c)
		die("out of memory");
	c->cap = n * 320 + KMS_DGRAM_MAX;
	c->buf = malloc(c->cap);
	if (!c->buf)
		die("out of memory");
	rq_reserve(g, first + n);
	for (uint64_t i = first; i < first + n; i++) {
		struct rq *r = rq_at(g, i);
		uint64_t ts_ms;
		int l;

		memset(r, 0, offsetof(struct rq, reply));
		/* Open loop: the wall time of the scheduled send (off by the
		 * time the prebuild took, well inside the KMS's skew). */
		ts_ms = g->o.rate > 0 ? g->ts_base_ms +
			(uint64_t)((double)i * 1000.0 / g->o.rate) : now_wall;
		if (c->cap - c->used < KMS_DGRAM_MAX) {
			uint8_t *nb;

			/* Offsets before the move, pointers after it. */
			for (uint64_t j = first; j < i; j++)
				rq_at(g, j)->wire_off = (uint32_t)(rq_at(g, j)->wire - c->buf);
			nb = realloc(c->buf, c->cap * 2);
			if (!nb)
				die("out of memory");
			for (uint64_t j = first; j < i; j++)
				rq_at(g, j)->wire = nb + rq_at(g, j)->wire_off;
			c->buf = nb;
			c->cap *= 2;
		}
		if (rnd_below(g, g->o.mix_d + g->o.mix_r) < g->o.mix_d) {
			uint8_t ea[KMS_TOKEN_MAX];
			uint64_t pi;
			int ea_len;

			if (g->o.new_pct && rnd_below(g, 100) < g->o.new_pct) {
				pi = g->next_new_pair++;
				if (g->next_new_pair >= g->n_users_pairs) {
					g->next_new_pair = g->o.pairs;
					g->new_pairs_wrapped++;
				}
			} else {
				pi = rnd_below(g, g->o.pairs);
			}
			r->type = KMS_T_DEPOSIT_REQ;
			r->pair = (uint32_t)pi;
			pair_users(g, pi, &r->a, &r->b);
			r->as = (uint32_t)(pi % g->pop.nas);
			l = build_deposit(g, (uint32_t)i, r->a, r->b, r->as, ts_ms,
					  r->nonce, ea, &ea_len, c->buf + c->used,
					  KMS_DGRAM_MAX);
			if (g->ack && l > 0) {
				memcpy(g->ack_ea[i].ea, ea, (size_t)ea_len);
				g->ack_ea[i].ea_len = (uint16_t)ea_len;
			}
		} else {
			const struct seed_dep *d;

			r->type = KMS_T_RETRIEVE_REQ;
			r->dep = rnd_below(g, g->ndeps);
			d = &g->deps[r->dep];
			r->a = d->a;
			r->b = d->b;
			l = build_retrieve(g, (uint32_t)i, d, ts_ms, r->nonce,
					   c->buf + c->used, KMS_DGRAM_MAX);
		}
		if (l < 0)
			die("cannot build request %llu", (unsigned long long)i);
		r->wire = c->buf + c->used;
		r->wire_len = (uint16_t)l;
		r->state = RQ_BUILT;
		c->used += (size_t)l;
	}
	c->last = first + n - 1;
	if (g->chunks_tail)
		g->chunks_tail->next = c;
	else
		g->chunks = c;
	g->chunks_tail = c;
	g->nrq = first + n;
	g->built += n;
	g->build_ns += mono_ns() - t;
}

/* Free chunks whose requests were all sent. */
static void free_sent_chunks(struct lg *g)
{
	while (g->chunks && g->chunks->last < g->next_send) {
		struct chunk *c = g->chunks;

		g->chunks = c->next;
		if (!g->chunks)
			g->chunks_tail = NULL;
		OPENSSL_cleanse(c->buf, c->used);
		free(c->buf);
		free(c);
	}
}

static unsigned tsec_of(const struct lg *g, uint64_t t_ns)
{
	return t_ns <= g->t0_ns ? 0 : (unsigned)((t_ns - g->t0_ns) / 1000000000ull);
}

static void receive(struct lg *g, int timeout_us, uint8_t (*buf)[LG_DGRAM_MAX])
{
	struct lg_dgram d[BURST];
	uint64_t now;
	int k;

	for (unsigned i = 0; i < BURST; i++) {
		d[i].buf = buf[i];
		d[i].cap = LG_DGRAM_MAX;
	}
	k = g->io->recv(g->io, d, BURST, timeout_us);
	if (k < 0)
		die("receive failed");
	if (!k)
		return;
	now = mono_ns();
	for (int j = 0; j < k; j++) {
		struct kms_hdr h;
		struct rq *r;
		unsigned s;

		if (!d[j].len || kms_hdr_parse(d[j].buf, d[j].len, &h) ||
		    h.txid >= g->nrq || (h.txid & 0x80000000u)) {
			/* A late seed reply, or not a reply of ours. */
			if (!d[j].len || kms_hdr_parse(d[j].buf, d[j].len, &h) ||
			    !(h.txid & 0x80000000u))
				g->v.bad_reply++;
			continue;
		}
		r = rq_at(g, h.txid);
		if (r->state == RQ_ANSWERED) {
			g->v.dup++;
			continue;
		}
		if (r->state == RQ_LOST) {
			g->v.late++;
			continue;
		}
		if (r->state != RQ_SENT) {
			g->v.bad_reply++;       /* answers what we never sent */
			continue;
		}
		r->state = RQ_ANSWERED;
		r->recv_ns = now;
		r->reply_len = (uint8_t)(d[j].len > REPLY_MAX ? 0 : d[j].len);
		if (d[j].len > REPLY_MAX)
			g->v.bad_reply++;
		else
			memcpy(r->reply, d[j].buf, d[j].len);
		g->inflight--;
		s = tsec_of(g, now);
		if (s < g->nts)
			g->ts[s].answered++;
	}
}

/* Declare requests older than the timeout lost (FIFO in send order). */
static void expire(struct lg *g, uint64_t now)
{
	uint64_t to = (uint64_t)g->o.timeout_ms * 1000000;

	while (g->fifo_head < g->next_send) {
		struct rq *r = rq_at(g, g->fifo_head);

		if (r->state == RQ_SENT) {
			if (now - r->sent_ns < to)
				break;
			r->state = RQ_LOST;
			g->inflight--;
			g->lost++;
		}
		g->fifo_head++;
	}
}

static void progress(struct lg *g, uint64_t now, bool final)
{
	static uint64_t last;
	uint64_t ans = 0;
	double t;

	if (g->o.quiet || !isatty(2))
		return;
	if (!final && now - last < 1000000000ull)
		return;
	last = now;
	for (unsigned s = 0; s < g->nts; s++)
		ans += g->ts[s].answered;
	t = (double)(now - g->t0_ns) / 1e9;
	fprintf(stderr, "\r[%5.1f s%s] sent %llu  replies %llu  lost %llu  in flight %llu   %s",
		t, now < g->tmeas_ns ? " warm-up" : "",
		(unsigned long long)g->next_send, (unsigned long long)ans,
		(unsigned long long)g->lost, (unsigned long long)g->inflight,
		final ? "\n" : "");
}

/* How many requests to send now. */
static uint64_t due(struct lg *g, uint64_t now)
{
	uint64_t n, left = g->total - g->next_send;

	/* The open loop sends every scheduled request, late ones too (their
	 * lateness is in their latency); the closed loop stops at the end. */
	if (!left || (g->o.rate <= 0 && now >= g->tend_ns))
		return 0;
	if (g->o.count && g->sent_meas_n >= g->o.count)
		return 0;
	if (g->o.rate > 0) {
		uint64_t upto;

		if (now < g->t0_ns)
			return 0;
		upto = (uint64_t)((double)(now - g->t0_ns) * g->o.rate / 1e9) + 1;
		n = upto > g->next_send ? upto - g->next_send : 0;
	} else {
		n = g->inflight < g->o.outstanding ? g->o.outstanding - g->inflight : 0;
	}
	if (n > left)
		n = left;
	if (g->o.count && n > g->o.count - g->sent_meas_n &&
	    now >= g->tmeas_ns)
		n = g->o.count - g->sent_meas_n;
	return n;
}

/* Requests a chunk built during the run holds: about a second of the open
 * loop, a few rounds of the closed loop, so that no token's timestamp is
 * far from its send time even when the KMS is slow. */
static uint64_t chunk_size(const struct lg *g)
{
	uint64_t n = g->o.rate > 0 ? (uint64_t)g->o.rate : 4ull * g->o.outstanding;

	if (n < 64)
		n = 64;
	if (n > CHUNK)
		n = CHUNK;
	if (n > g->total - g->nrq)
		n = g->total - g->nrq;
	return n;
}

static void send_due(struct lg *g, uint64_t n, uint8_t (*buf)[LG_DGRAM_MAX])
{
	while (n && !g_stop) {
		struct lg_dgram d[BURST];
		unsigned k = n < BURST ? (unsigned)n : BURST;
		uint64_t now;
		int sent;

		if (g->nrq < g->next_send + k)
			build_chunk(g, chunk_size(g) < k ? k : chunk_size(g));
		for (unsigned i = 0; i < k; i++) {
			struct rq *r = rq_at(g, g->next_send + i);

			d[i].buf = r->wire;
			d[i].len = r->wire_len;
		}
		sent = g->io->send(g->io, d, k);
		if (sent < 0)
			die("send failed");
		now = mono_ns();
		for (int i = 0; i < sent; i++) {
			struct rq *r = rq_at(g, g->next_send + (uint64_t)i);
			unsigned s;

			r->state = RQ_SENT;
			r->sent_ns = now;
			r->sched_ns = g->o.rate > 0 ?
				sched_of(g, g->next_send + (uint64_t)i) : now;
			r->measured = r->sched_ns >= g->tmeas_ns &&
				      r->sched_ns < g->tend_ns;
			if (r->measured)
				g->sent_meas_n++;
			r->wire = NULL;
			s = tsec_of(g, now);
			if (s < g->nts)
				g->ts[s].sent++;
		}
		g->next_send += (uint64_t)sent;
		g->inflight += (uint64_t)sent;
		n -= (uint64_t)sent;
		if ((unsigned)sent < k)
			return;         /* the transmit queue is full */
		receive(g, 0, buf);
	}
}

static void run(struct lg *g)
{
	uint8_t (*buf)[LG_DGRAM_MAX] = calloc(BURST, sizeof(*buf));
	uint64_t now, tstop;

	if (!buf)
		die("out of memory");
	g->nts = (unsigned)ceil(g->o.warmup + g->o.duration) + 2;
	g->ts = calloc(g->nts, sizeof(*g->ts));
	if (!g->ts)
		die("out of memory");
	g->ts_base_ms = kms_now_ms();
	/* Build everything up front when the count is known and fits. */
	/* Not more than about 5 s of building either: the tokens carry the
	 * time of their schedule as seen before the build. */
	if (g->total != UINT64_MAX && g->total <= PREBUILD_MAX &&
	    g->total * (sizeof(struct rq) + 300) <= g->o.prebuild_mb << 20) {
		g->prebuilt = 1;
		while (g->nrq < g->total && !g_stop)
			build_chunk(g, g->total - g->nrq < CHUNK ? g->total - g->nrq
								 : CHUNK);
		if (!g->o.quiet)
			fprintf(stderr, "kms-loadgen: %llu requests built in %.2f s "
				"(%.0f/s)\n", (unsigned long long)g->built,
				(double)g->build_ns / 1e9, (double)g->built * 1e9 /
				(double)(g->build_ns ? g->build_ns : 1));
	}
	g->t0_ns = mono_ns();
	if (!g->prebuilt)
		g->ts_base_ms = kms_now_ms();
	g->tmeas_ns = g->t0_ns + (uint64_t)(g->o.warmup * 1e9);
	g->tend_ns = g->tmeas_ns + (uint64_t)(g->o.duration * 1e9);
	for (;;) {
		uint64_t n;

		now = mono_ns();
		n = g_stop ? 0 : due(g, now);
		if (!n && !g->inflight &&
		    (g_stop || g->next_send >= g->total ||
		     (g->o.rate <= 0 && now >= g->tend_ns) ||
		     (g->o.count && g->sent_meas_n >= g->o.count)))
			break;
		if (n)
			send_due(g, n, buf);
		{
			/* Wait for replies, until the next send is due in the
			 * open loop. */
			int wait_us = 1000;

			if (g->o.rate > 0 && g->next_send < g->total) {
				uint64_t nxt = sched_of(g, g->next_send);

				now = mono_ns();
				wait_us = nxt > now ? (int)((nxt - now) / 1000) : 0;
				if (wait_us > 1000)
					wait_us = 1000;
			}
			receive(g, wait_us, buf);
		}
		now = mono_ns();
		expire(g, now);
		free_sent_chunks(g);
		progress(g, now, false);
	}
	tstop = mono_ns();
	/* Stopped early (signal): what is in flight is lost. */
	for (uint64_t i = g->fifo_head; i < g->next_send; i++)
		if (rq_at(g, i)->state == RQ_SENT) {
			rq_at(g, i)->state = RQ_LOST;
			g->lost++;
		}
	g->inflight = 0;
	progress(g, tstop, true);
	/* The measured window ends at the planned end, or earlier when the
	 * count was reached or a signal came. */
	{
		uint64_t end = g->tend_ns, last = g->tmeas_ns;

		for (uint64_t i = g->next_send; i-- > 0;) {
			const struct rq *r = rq_at(g, i);

			if (r->measured) {
				last = r->sent_ns;
				break;
			}
		}
		if ((g->o.count && g->sent_meas_n >= g->o.count) || g_stop)
			end = last > g->tmeas_ns ? last : g->tmeas_ns + 1;
		g->meas_s = (double)(end - g->tmeas_ns) / 1e9;
	}
	free(buf);
	while (g->chunks) {
		struct chunk *c = g->chunks;

		g->chunks = c->next;
		OPENSSL_cleanse(c->buf, c->used);
		free(c->buf);
		free(c);
	}
	g->chunks_tail = NULL;
}

/* ---- verification, after the run ---- */

static void verify_one(struct lg *g, struct rq *r)
{
	const struct lg_party *a = &g->pop.users[r->a], *b = &g->pop.users[r->b];
	uint8_t k[KMS_KEY_LEN], key_id[KMS_KEY_ID_LEN];
	bool dep = r->type == KMS_T_DEPOSIT_REQ;
	int ti = dep ? 0 : 1;
	uint32_t k_gen = 0;
	uint16_t st;
	enum vres vr;

	vr = open_reply(r->reply, r->reply_len, (uint32_t)(r - g->rq),
			dep ? KMS_T_DEPOSIT_RESP : KMS_T_RETRIEVE_RESP,
			dep ? KMS_ROLE_A : KMS_ROLE_B, dep ? a : b, a, b, r->nonce,
			dep ? NULL : g->deps[r->dep].key_id, k, key_id, &k_gen,
			&st);
	if (vr == V_OK) {
		g->v.keys_checked++;
		if (dep) {
			/* Same pair and K generation: the same K (re-use). */
			struct pair_k *pk = r->pair < g->o.pairs ? &g->pk[r->pair] : NULL;

			if (pk && pk->k_gen == k_gen &&
			    CRYPTO_memcmp(pk->k, k, KMS_KEY_LEN))
				vr = V_MISMATCH;
			else if (pk) {
				pk->k_gen = k_gen;
				memcpy(pk->k, k, KMS_KEY_LEN);
			}
			if (vr == V_OK && g->ack) {
				struct lg_ack *x = &g->ack_ea[r - g->rq];

				x->a = r->a;
				x->b = r->b;
				x->k_gen = k_gen;
				memcpy(x->key_id, key_id, KMS_KEY_ID_LEN);
				memcpy(x->k, k, KMS_KEY_LEN);
				lg_ack_write(g->ack, x);
				OPENSSL_cleanse(x->k, KMS_KEY_LEN);
			}
		} else if (CRYPTO_memcmp(g->deps[r->dep].k, k, KMS_KEY_LEN)) {
			vr = V_MISMATCH;
		}
	}
	OPENSSL_cleanse(k, sizeof(k));
	switch (vr) {
	case V_OK:
		if (r->measured) {
			uint64_t lat = r->recv_ns - r->sched_ns;

			g->v.ok++;
			g->ok_type[ti]++;
			lg_hist_add(&g->all, lat);
			lg_hist_add(&g->by_type[ti], lat);
		}
		{
			unsigned s = tsec_of(g, r->recv_ns);

			if (s < g->nts) {
				g->ts[s].ok++;
				lg_hist_add(&g->ts[s].h, r->recv_ns - r->sched_ns);
			}
		}
		return;
	case V_MISMATCH:
		g->v.mismatch++;
		break;
	case V_BAD_TAG:
		g->v.bad_tag++;
		break;
	case V_BAD_REPLY:
		g->v.bad_reply++;
		break;
	case V_STATUS:
		if (st < KMS_ST__COUNT)
			g->v.by_status[st]++;
		if (st == KMS_ST_BUSY)
			g->v.busy++;
		else
			g->v.unexpected++;
		break;
	}
	{
		unsigned s = tsec_of(g, r->recv_ns);

		if (s < g->nts)
			g->ts[s].err++;
	}
}

static void verify_all(struct lg *g)
{
	/* The seed's verified deposits give each pair's K first. */
	for (uint32_t i = 0; i < g->ndeps; i++) {
		const struct seed_dep *d = &g->deps[i];
		/* Its own pair: a seed round that lost some deposits moved
		 * the verified ones down, so the index does not say it. */
		struct pair_k *pk = &g->pk[d->pair];

		pk->k_gen = d->k_gen;
		memcpy(pk->k, d->k, KMS_KEY_LEN);
	}
	for (uint64_t i = 0; i < g->next_send; i++) {
		struct rq *r = rq_at(g, i);

		if (r->measured) {
			g->sent_type[r->type == KMS_T_DEPOSIT_REQ ? 0 : 1]++;
			g->sent_meas++;
			g->answered_meas += r->state == RQ_ANSWERED;
			g->lost_meas += r->state == RQ_LOST;
		}
		/* reply_len 0: longer than any reply, counted bad at receipt */
		if (r->state == RQ_ANSWERED && r->reply_len)
			verify_one(g, r);
	}
}

/* ---- the generator's own send ceiling ---- */

/* Send copies of real requests as fast as the loop can to a local socket
 * nobody reads, for @p secs: what this process could offer at most. Only
 * for the socket backend (a DPDK port would send them to the KMS). */
static double measure_max_send(struct lg *g, double secs)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	char addr[64];
	struct lg_io *sink_io;
	struct lg_dgram d[BURST];
	uint8_t (*req)[KMS_DGRAM_MAX];
	uint8_t nonce[KMS_NONCE_LEN], ea[KMS_TOKEN_MAX];
	uint64_t t0, t = 0, sent = 0;
	int fd, ea_len;

	if (strcmp(g->io->name, "socket"))
		return 0;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sa.sin_port));
	sink_io = lg_io_socket_open(addr, 0, 0);
	req = calloc(BURST, sizeof(*req));
	if (!sink_io || !req) {
		close(fd);
		free(req);
		if (sink_io)
			sink_io->close(sink_io);
		return 0;
	}
	for (unsigned i = 0; i < BURST; i++) {
		uint32_t a, b;
		int l;

		pair_users(g, i % g->o.pairs, &a, &b);
		l = build_deposit(g, i, a, b, 0, kms_now_ms(), nonce, ea, &ea_len,
				  req[i], KMS_DGRAM_MAX);
		d[i].buf = req[i];
		d[i].len = l > 0 ? (uint16_t)l : 0;
	}
	t0 = mono_ns();
	do {
		int k = sink_io->send(sink_io, d, BURST);

		if (k < 0)
			break;
		sent += (uint64_t)k;
		t = mono_ns();
	} while (t - t0 < (uint64_t)(secs * 1e9));
	sink_io->close(sink_io);
	close(fd);
	free(req);
	return (double)sent * 1e9 / (double)(t - t0);
}

/* ---- report ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kms-loadgen [EAL-ARGS --] --population FILE [options]\n"
		"  --server HOST:PORT   the KMS (socket mode; default 127.0.0.1:7430)\n"
		"  --io socket|dpdk     transport (dpdk: EAL args before --)\n"
		"  --dpdk SPEC          port=0,ip=A,kms-ip=B,kms-port=P,sport=S[,kms-mac=M]\n"
		"  --mix D:R            DEPOSIT:RETRIEVE ratio (default 1:1)\n"
		"  --pairs N            re-used pairs (default 256)\n"
		"  --new-pairs PCT      share of DEPOSITs on new pairs (default 0)\n"
		"  --seed-deposits N    deposits before the run for RETRIEVEs (default --pairs)\n"
		"  --rate R             open loop at R req/s (latency from schedule)\n"
		"  --outstanding N      closed loop with N in flight (default 32)\n"
		"  --duration S         measured seconds (default 10)\n"
		"  --count N            stop after N measured requests\n"
		"  --warmup S           seconds before measuring (default 1)\n"
		"  --timeout-ms MS      a request unanswered this long is lost (default 1000)\n"
		"  --prebuild-mb MB     build every request before the run if it fits\n"
		"                       (default 512)\n"
		"  --json FILE          write the report as JSON\n"
		"  --plot PREFIX        PREFIX-throughput.png and PREFIX-latency.png (gnuplot)\n"
		"  --seed N             PRNG seed for the load's choices\n"
		"  --quiet              no progress line\n"
		"  -h, --help           this text\n"
		"  --version            the version and the libraries' versions\n"
		"  --ack-log FILE       append every verified DEPOSIT (key id, K, Ea) to FILE\n"
		"  --verify-log FILE    no load: RETRIEVE every deposit of an ack log once and\n"
		"                       compare K (exit 0 only if all match)\n"
		"exit: 0 all replies verified, 1 a mismatch/bad tag/bad reply, 2 usage or\n"
		"set-up error, 3 no request succeeded\n");
}

static unsigned long num(const char *opt, const char *v, unsigned long min,
			 unsigned long max)
{
	char *end;
	unsigned long x;

	errno = 0;
	x = strtoul(v, &end, 10);
	if (errno || end == v || *end || x < min || x > max)
		die("%s %s: expected an integer in %lu..%lu", opt, v, min, max);
	return x;
}

static double dnum(const char *opt, const char *v, double min, double max)
{
	char *end;
	double x;

	errno = 0;
	x = strtod(v, &end);
	if (errno || end == v || *end || !(x >= min && x <= max))
		die("%s %s: expected a number in %g..%g", opt, v, min, max);
	return x;
}

static void parse(struct opts *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "population", 1, NULL, 'p' }, { "server", 1, NULL, 's' },
		{ "io", 1, NULL, 'i' }, { "dpdk", 1, NULL, 'D' },
		{ "mix", 1, NULL, 'm' }, { "pairs", 1, NULL, 'P' },
		{ "new-pairs", 1, NULL, 'N' }, { "seed-deposits", 1, NULL, 'S' },
		{ "rate", 1, NULL, 'r' }, { "outstanding", 1, NULL, 'o' },
		{ "duration", 1, NULL, 'd' }, { "count", 1, NULL, 'c' },
		{ "warmup", 1, NULL, 'w' }, { "timeout-ms", 1, NULL, 't' },
		{ "prebuild-mb", 1, NULL, 'B' }, { "json", 1, NULL, 'j' },
		{ "plot", 1, NULL, 'g' }, { "seed", 1, NULL, 'R' },
		{ "quiet", 0, NULL, 'q' }, { "help", 0, NULL, 'h' },
		{ "ack-log", 1, NULL, 'A' }, { "verify-log", 1, NULL, 'V' },
		{ "version", 0, NULL, KMS_OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	bool have_seed_deps = false;

	memset(o, 0, sizeof(*o));
	o->server = "127.0.0.1:7430";
	o->io = "socket";
	o->mix_d = o->mix_r = 1;
	o->pairs = 256;
	o->outstanding = 32;
	o->duration = 10;
	o->warmup = 1;
	o->timeout_ms = 1000;
	o->prebuild_mb = 512;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'p': o->population = optarg; break;
		case 's': o->server = optarg; break;
		case 'i': o->io = optarg; break;
		case 'D': o->dpdk = optarg; break;
		case 'm':
			if (sscanf(optarg, "%u:%u", &o->mix_d, &o->mix_r) != 2 ||
			    !(o->mix_d + o->mix_r) || o->mix_d > 1000 ||
			    o->mix_r > 1000)
				die("--mix %s: expected D:R, e.g. 1:1, 0:1, 1:0", optarg);
			break;
		case 'P': o->pairs = (unsigned)num("--pairs", optarg, 1, 10000000); break;
		case 'N': o->new_pct = (unsigned)num("--new-pairs", optarg, 0, 100); break;
		case 'S':
			o->seed_deps = num("--seed-deposits", optarg, 0, 10000000);
			have_seed_deps = true;
			break;
		case 'r': o->rate = dnum("--rate", optarg, 1, 1e8); break;
		case 'o': o->outstanding = (unsigned)num("--outstanding", optarg, 1, 65536); break;
		case 'd': o->duration = dnum("--duration", optarg, 0.1, 86400); break;
		case 'c': o->count = num("--count", optarg, 1, 1000000000); break;
		case 'w': o->warmup = dnum("--warmup", optarg, 0, 3600); break;
		case 't': o->timeout_ms = (unsigned)num("--timeout-ms", optarg, 1, 600000); break;
		case 'B': o->prebuild_mb = num("--prebuild-mb", optarg, 0, 1 << 20); break;
		case 'j': o->json = optarg; break;
		case 'g': o->plot = optarg; break;
		case 'R': o->seed = num("--seed", optarg, 0, ULONG_MAX); o->seed_set = 1; break;
		case 'q': o->quiet = 1; break;
		case 'A': o->ack_log = optarg; break;
		case 'V': o->verify_log = optarg; break;
		case 'h': usage(stdout); exit(0);
		case KMS_OPT_VERSION:
			kms_version_print(stdout, "kms-loadgen");
#ifdef LG_WITH_DPDK
			printf("%s\n", rte_version());
#endif
			exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind != argc)
		die("unexpected argument '%s' (EAL arguments go before --)", argv[optind]);
	if (!o->population)
		die("--population FILE is required (kmsctl enroll-bulk writes it)");
	if (strcmp(o->io, "socket") && strcmp(o->io, "dpdk"))
		die("--io %s: expected socket or dpdk", o->io);
	if (!strcmp(o->io, "dpdk") && !o->dpdk)
		die("--io dpdk needs --dpdk SPEC");
	if (!have_seed_deps)
		o->seed_deps = o->pairs;
	if (o->mix_r && !o->seed_deps)
		die("RETRIEVEs need --seed-deposits > 0");
}

/* --verify-log: every acknowledged deposit retrieved once, K compared. */
static int verify_log(struct lg *g)
{
	struct lg_ack_result res;
	struct lg_ack *acks = NULL;
	char err[512];
	size_t n = 0;
	int rc;

	if (lg_ack_read(g->o.verify_log, &g->pop, &acks, &n, err, sizeof(err)))
		die("%s", err);
	lg_ack_verify(g->io, &g->pop, acks, n, g->o.timeout_ms, 5, &res);
	printf("verify-log: %zu acknowledged deposit(s): %llu retrieved with the "
	       "same K, %llu mismatched, %llu without an answer, %llu bad "
	       "replies", n, (unsigned long long)res.same,
	       (unsigned long long)res.mismatch, (unsigned long long)res.lost,
	       (unsigned long long)res.bad_reply);
	for (unsigned s = 0; s < KMS_ST__COUNT; s++)
		if (res.by_status[s])
			printf(", %s=%llu", kms_status_name(s),
			       (unsigned long long)res.by_status[s]);
	printf("\n");
	rc = res.same == n ? 0 : 1;
	if (acks)
		OPENSSL_cleanse(acks, n * sizeof(*acks));
	free(acks);
	g->io->close(g->io);
	lg_pop_free(&g->pop);
	return rc;
}

int main(int argc, char **argv)
{
	static struct lg g;
	char iostats[1024] = "";
	int eal_args = 0;
	int rc;

	/* EAL arguments come first, up to "--", as for kmsd. */
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			eal_args = i;
			break;
		}
	if (eal_args) {
		bool dpdk = false;

		for (int i = eal_args + 1; i + 1 < argc; i++)
			if (!strcmp(argv[i], "--io") && !strcmp(argv[i + 1], "dpdk"))
				dpdk = true;
		if (dpdk) {
#ifdef LG_WITH_DPDK
			if (rte_eal_init(eal_args, argv) < 0)
				die("rte_eal_init failed (check the EAL arguments "
				    "before --)");
#else
			die("built without DPDK: --io dpdk is not available");
#endif
		}
		argv[eal_args] = argv[0];
		argv += eal_args;
		argc -= eal_args;
	}
	parse(&g.o, argc, argv);
	{
		char err[512];

		if (lg_pop_read(g.o.population, &g.pop, err, sizeof(err)))
			die("%s", err);
	}
	g.n_users_pairs = (uint64_t)g.pop.nusers * (g.pop.nusers - 1);
	if (g.o.pairs > g.n_users_pairs)
		die("--pairs %u: the population has only %llu ordered pairs",
		    g.o.pairs, (unsigned long long)g.n_users_pairs);
	g.next_new_pair = g.o.pairs;
	g.pk = calloc(g.o.pairs, sizeof(*g.pk));
	if (!g.pk)
		die("out of memory");
	if (RAND_bytes(g.nonce_prefix, sizeof(g.nonce_prefix)) != 1)
		die("RAND_bytes failed");
	if (!g.o.seed_set)
		RAND_bytes((uint8_t *)&g.o.seed, sizeof(g.o.seed));
	g.rng = g.o.seed | 1;
	g.total = UINT64_MAX;
	if (g.o.rate > 0) {
		g.total = (uint64_t)ceil(g.o.rate * (g.o.warmup + g.o.duration));
		if (g.o.count && g.o.count + (uint64_t)ceil(g.o.rate * g.o.warmup) < g.total)
			g.total = g.o.count + (uint64_t)ceil(g.o.rate * g.o.warmup);
	}
	if (!strcmp(g.o.io, "socket")) {
		g.io = lg_io_socket_open(g.o.server, 8 << 20, 8 << 20);
	} else {
#ifdef LG_WITH_DPDK
		g.io = lg_io_dpdk_open(g.o.dpdk);
#endif
	}
	if (!g.io)
		die("cannot open the %s transport", g.o.io);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (g.o.verify_log)
		return verify_log(&g);
	if (g.o.ack_log && !(g.ack = lg_ack_open(g.o.ack_log)))
		die("cannot open --ack-log %s", g.o.ack_log);
	seed(&g);
	if (g.o.mix_r && !g.ndeps)
		die("no seed deposit succeeded: nothing to RETRIEVE");
	if (!g_stop)
		run(&g);
	verify_all(&g);
	g.max_send_rps = measure_max_send(&g, 0.5);
	g.io->stats(g.io, iostats, sizeof(iostats));
	lg_report_summary(&g, iostats);
	if (g.o.json)
		lg_report_json(&g, g.o.json, iostats);
	if (g.o.plot)
		lg_report_plots(&g, g.o.plot);
	if (g.ack && lg_ack_close(g.ack))
		die("the ack log %s could not be made durable", g.o.ack_log);
	if (g.ack_ea)
		OPENSSL_cleanse(g.ack_ea, g.caprq * sizeof(*g.ack_ea));
	free(g.ack_ea);
	if (g.v.mismatch || g.v.bad_tag || g.v.bad_reply)
		rc = 1;
	else if (!g.v.ok)
		rc = 3;
	else
		rc = 0;
	g.io->close(g.io);
	if (g.deps)
		OPENSSL_cleanse(g.deps, g.ndeps * sizeof(*g.deps));
	free(g.deps);
	if (g.pk)
		OPENSSL_cleanse(g.pk, g.o.pairs * sizeof(*g.pk));
	free(g.pk);
	free(g.rq);
	free(g.ts);
	lg_pop_free(&g.pop);
	return rc;
}
