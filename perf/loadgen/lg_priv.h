/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kms-loadgen's internals shared by loadgen.c (the generator) and
 * lg_report.c (the text summary, JSON report and plots).
 */
#ifndef LG_PRIV_H
#define LG_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kms_err.h"
#include "kms_proto.h"
#include "lg_acklog.h"
#include "lg_hist.h"
#include "lg_io.h"
#include "lg_pop.h"

#define REPLY_MAX (KMS_HDR_LEN + KMS_RESP_BODY_LEN)

struct opts {
	const char *population, *server, *io, *dpdk, *json, *plot;
	const char *ack_log, *verify_log;
	unsigned mix_d, mix_r, pairs, new_pct, outstanding;
	unsigned long seed_deps, count, prebuild_mb;
	double rate, duration, warmup;
	unsigned timeout_ms;
	int quiet, seed_set;
	unsigned long long seed;
};

/* ---- state ---- */

enum rq_state { RQ_BUILT, RQ_SENT, RQ_ANSWERED, RQ_LOST };

/* One request of the run. Its wire bytes live in a chunk until sent. */
struct rq {
	uint64_t sched_ns, sent_ns, recv_ns;
	uint8_t *wire;
	uint32_t wire_off;              /* only while its chunk grows */
	uint32_t pair;                  /* DEPOSIT: pair index */
	uint32_t dep;                   /* RETRIEVE: seed deposit index */
	uint32_t a, b, as;              /* user/user/AS indices */
	uint16_t wire_len;
	uint8_t type;                   /* KMS_T_DEPOSIT_REQ / RETRIEVE_REQ */
	uint8_t state;
	uint8_t measured;
	uint8_t reply_len;
	uint8_t nonce[KMS_NONCE_LEN];   /* Ea (deposit) or Eb (retrieve) */
	uint8_t reply[REPLY_MAX];
};

struct chunk {
	uint8_t *buf;
	size_t used, cap;
	uint64_t last;                  /* index of its last request */
	struct chunk *next;
};

struct seed_dep {
	uint32_t pair;                  /* pair index it was made for */
	uint32_t a, b, as;
	uint32_t k_gen;
	uint8_t key_id[KMS_KEY_ID_LEN];
	uint8_t k[KMS_KEY_LEN];
	uint8_t ea[KMS_TOKEN_MAX];
	uint16_t ea_len;
};

/* What the verified replies say about a pair's current K. */
struct pair_k {
	uint32_t k_gen;                 /* 0: none seen */
	uint8_t k[KMS_KEY_LEN];
};

struct verify {
	uint64_t ok, mismatch, bad_tag, bad_reply, unexpected, busy, late,
		 dup, keys_checked;
	uint64_t by_status[KMS_ST__COUNT];
};

struct tsec {
	uint64_t sent, answered, ok, err;
	struct lg_hist h;
};

struct lg {
	struct opts o;
	struct lg_pop pop;
	struct lg_io *io;
	uint64_t n_users_pairs;         /* U * (U - 1) distinct ordered pairs */
	struct pair_k *pk;              /* per pair index, for reused pairs */
	uint64_t next_new_pair, new_pairs_wrapped;
	struct seed_dep *deps;
	uint32_t ndeps;
	/* run */
	struct rq *rq;
	uint64_t nrq, caprq;            /* built, allocated */
	uint64_t total;                 /* requests the run will send (open
					   loop or --count), or UINT64_MAX */
	uint64_t next_send, inflight, fifo_head;
	struct chunk *chunks, *chunks_tail;
	uint64_t t0_ns, tmeas_ns, tend_ns;
	uint64_t ts_base_ms;            /* wall ms of request 0's schedule */
	uint64_t lost, sent_meas_n;
	uint64_t build_ns, built;
	uint8_t nonce_prefix[4];
	uint64_t nonce_ctr;
	uint64_t rng;
	int prebuilt;
	/* results */
	struct verify v;
	struct lg_hist all, by_type[2];
	struct tsec *ts;
	unsigned nts;
	uint64_t sent_meas, answered_meas, lost_meas, sent_type[2], ok_type[2];
	double max_send_rps, meas_s;
	/* --ack-log: every verified DEPOSIT, with its Ea (kept per request) */
	FILE *ack;
	struct lg_ack *ack_ea;          /* per request: a, b, ea */
};

/** Print "kms-loadgen: <message>" and exit 2. */
void lg_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define die lg_die

/** A count over the measured window, per second (0 if nothing measured). */
double per_s(const struct lg *g, uint64_t n);

void lg_report_summary(struct lg *g, const char *iostats);
void lg_report_json(struct lg *g, const char *path, const char *iostats);
void lg_report_plots(struct lg *g, const char *prefix);

#endif /* LG_PRIV_H */
