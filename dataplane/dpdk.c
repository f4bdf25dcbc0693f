// SPDX-License-Identifier: Apache-2.0
/*
 * The DPDK dataplane: RX stage, rings, worker lcores, telemetry.
 * See kms_dpdk.h for the two layouts. Nothing here allocates per packet:
 * per-lcore contexts hold fixed burst arrays and reply scratch buffers;
 * the classification of a frame travels with its mbuf (private area).
 */
#include <rte_common.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>
#include <rte_rwlock.h>
#include <rte_telemetry.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kms_dpdk.h"
#include "kms_pkt_mbuf.h"
#include "quiesce.h"
#include "kms_log.h"
#include "kms_proto.h"

#define BURST 32
#define BATCH_MAX 256
#define RESP_MAX KMS_REPLY_MAX
#define RX_DESC 1024
#define TX_DESC 1024

/* Per-lcore counters: one writer each, cache-line aligned, summed on read. */
struct counters {
	uint64_t rx, tx, requests, arp, nd, forwarded;
	uint64_t drops[KMS_PKT_DROP__COUNT];
	uint64_t engine_drops, ring_full, tx_full, drained;
} __rte_cache_aligned;

#define CNT_ADD(c, f, n) \
	__atomic_store_n(&(c)->f, (c)->f + (n), __ATOMIC_RELAXED)

struct wctx {
	struct kms_dp *dp;
	unsigned id;
	uint16_t txq, rxq;         /* rss: rxq == id */
	struct kms_worker *w;
	struct rte_ring *ring;
	struct kms_hasher *hasher; /* rss: for requests read off its queue */
	int init_rc;
	struct counters c;
	struct rte_mbuf *batch[BATCH_MAX];
	struct kms_msg msgs[BATCH_MAX];
	uint8_t resp[BATCH_MAX][RESP_MAX];
} __rte_cache_aligned;

struct kms_dp {
	struct kms_engine *e;
	struct kms_dp_config cfg;
	struct rte_mempool *mp;
	int own_mp;
	int port_started;
	uint64_t tx_ol;            /* TX checksum offloads in use */
	int link_gate;             /* poll only while the link is up */
	unsigned ready;            /* workers that finished init */
	int rx_done;               /* RX stopped: workers drain and exit */
	unsigned rx_stopped;       /* workers that stopped reading RX */
	uint16_t nq;               /* RX queues == TX queues == workers */
	struct kms_hasher *hasher; /* the RX lcore's */
	struct rte_rcu_qsbr *qs;   /* polling lcores' quiescent states:
				      worker i is thread i, main is nworkers */
	struct counters rxc;       /* the RX lcore's */
	struct wctx *wk;           /* nworkers */
};

/* Telemetry callbacks take no user argument: one dataplane per process.
 * They run on DPDK's telemetry thread: the lock keeps destroy from freeing
 * the dataplane under a callback. */
static struct kms_dp *telemetry_dp;
static rte_rwlock_t telemetry_lock = RTE_RWLOCK_INITIALIZER;
static int telemetry_registered;
static const char *crypto_mode_name = "";

static struct kms_pkt_info *pinfo(struct rte_mbuf *m)
{
	return rte_mbuf_to_priv(m);
}

/*
 * Classify one frame. @return 1 if it is a request (its info is in the
 * mbuf's private area), 0 if it was consumed: a built ARP/NA reply is
 * put in @p tx, anything else is freed and counted.
 */
static int classify(struct kms_dp *dp, struct counters *c, struct rte_mbuf *m,
		    struct rte_mbuf **tx, unsigned *ntx)
{
	struct kms_pkt_info *info = pinfo(m);
	uint8_t *frame = rte_pktmbuf_mtod(m, uint8_t *);
	uint16_t cap = (uint16_t)(m->buf_len - m->data_off);
	enum kms_pkt_verdict v;

	if (m->nb_segs != 1) {
		CNT_ADD(c, drops[KMS_PKT_DROP_BAD_LEN], 1);
		rte_pktmbuf_free(m);
		return 0;
	}
	v = kms_pkt_classify(&dp->cfg.addr, frame, m->data_len, cap,
			     kms_pkt_rx_flags(m), info);
	if (v == KMS_PKT_REQUEST)
		return 1;
	if (kms_pkt_is_drop(v)) {
		CNT_ADD(c, drops[v], 1);
		rte_pktmbuf_free(m);
		return 0;
	}
	if (v == KMS_PKT_ARP)
		CNT_ADD(c, arp, 1);
	else
		CNT_ADD(c, nd, 1);
	m->data_len = info->reply_len;
	m->pkt_len = info->reply_len;
	m->ol_flags = 0;
	tx[(*ntx)++] = m;
	return 0;
}

/*
 * DPDK 22.11's memif PMD reads its ring address from the shared region
 * before it checks that the peer is connected; the region of a peer that
 * is still connecting has no address yet, so a poll preempted between the
 * two reads dereferences NULL + ring offset once the connection completes
 * (seen once in ~16 CI runs as a kmsd segfault just as a new testpmd peer
 * connected). The PMD sets the link up only after it has mapped the
 * regions: on such ports RX and TX run only while the link reads up, which
 * closes that window. The check is skipped on other ports, and made once
 * per poll, not per burst: rte_eth_link_get_nowait() is three calls into
 * the PMD and EAL (4.5% of a --io-bench worker's samples when it ran per
 * burst and per TX). Once is enough: a link read up stays mapped until
 * the PMD unmaps, and its munmap() waits for every poll in flight
 * (quiesce.c).
 */
static int port_up(const struct kms_dp *dp)
{
	struct rte_eth_link link;

	if (!dp->link_gate)
		return 1;
	if (rte_eth_link_get_nowait(dp->cfg.port_id, &link))
		return 0;
	return link.link_status == RTE_ETH_LINK_UP;
}

/* @up: port_up() of this poll */
static void transmit(struct kms_dp *dp, struct counters *c, uint16_t txq,
		     struct rte_mbuf **tx, unsigned n, int up)
{
	unsigned sent = 0;

	if (!n)
		return;
	if (up)
		sent = rte_eth_tx_burst(dp->cfg.port_id, txq, tx, (uint16_t)n);
	CNT_ADD(c, tx, sent);
	if (sent < n) {
		CNT_ADD(c, tx_full, n - sent);
		rte_pktmbuf_free_bulk(tx + sent, n - sent);
	}
}

static unsigned owner_of(struct kms_dp *dp, struct kms_hasher *h,
			 struct rte_mbuf *m)
{
	const struct kms_pkt_info *info = pinfo(m);

	return kms_engine_worker_for(dp->e, h,
				     rte_pktmbuf_mtod_offset(m, uint8_t *,
							     info->payload_off),
				     info->payload_len);
}

/* Hand requests to their owners' rings; a partial enqueue is counted and
 * the rest freed: never leaked. */
static void dispatch(struct kms_dp *dp, struct counters *c,
		     struct rte_mbuf *per[][BURST], unsigned *nper)
{
	for (unsigned w = 0; w < dp->cfg.nworkers; w++) {
		unsigned n = nper[w], q;

		if (!n)
			continue;
		q = rte_ring_enqueue_burst(dp->wk[w].ring, (void **)per[w], n,
					   NULL);
		if (q < n) {
			CNT_ADD(c, ring_full, n - q);
			rte_pktmbuf_free_bulk(per[w] + q, n - q);
		}
		nper[w] = 0;
	}
}

/*
 * A frame that is already a reply (ARP/NA built by classify) travels to a
 * worker like a request and is sent as it is: its info has a reply length
 * and no payload.
 */
static int is_ready_reply(struct rte_mbuf *m)
{
	const struct kms_pkt_info *info = pinfo(m);

	return info->reply_len && !info->payload_len;
}

/*
 * The rx layout's RX stage polls every RX queue of the port (as many as
 * TX queues: some PMDs, tap among them, want equal numbers, and af_packet
 * spreads flows over all of them). It owns no TX queue: ARP and NA
 * replies go to worker 0, which sends them with its batch.
 */
unsigned kms_dp_rx_poll(struct kms_dp *dp)
{
	struct rte_mbuf *pkts[BURST], *tx[BURST];
	struct rte_mbuf *per[dp->cfg.nworkers][BURST];
	unsigned nper[dp->cfg.nworkers];
	unsigned total = 0;

	if (!port_up(dp))
		return 0;
	memset(nper, 0, sizeof(nper));
	for (uint16_t q = 0; q < dp->nq; q++) {
		unsigned n, ntx = 0, nreq = 0;

		n = rte_eth_rx_burst(dp->cfg.port_id, q, pkts, BURST);
		if (!n)
			continue;
		total += n;
		CNT_ADD(&dp->rxc, rx, n);
		for (unsigned i = 0; i < n; i++) {
			unsigned w;

			if (!classify(dp, &dp->rxc, pkts[i], tx, &ntx))
				continue;
			w = owner_of(dp, dp->hasher, pkts[i]);
			per[w][nper[w]++] = pkts[i];
			nreq++;
		}
		for (unsigned i = 0; i < ntx; i++)
			per[0][nper[0]++] = tx[i];
		CNT_ADD(&dp->rxc, requests, nreq);
		dispatch(dp, &dp->rxc, per, nper);
	}
	return total;
}

/* The I/O benchmark's transaction: a fixed reply, no engine. */
static void noop_process(struct kms_msg *msgs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		int len = kms_error_encode(0, KMS_ST_BUSY, msgs[i].resp,
					   msgs[i].resp_cap);

		msgs[i].resp_len = len > 0 ? (uint16_t)len : 0;
	}
}

/* Run the engine on a batch and send the replies, built in place. */
static void serve(struct wctx *c, unsigned n, int up)
{
	struct kms_dp *dp = c->dp;
	struct rte_mbuf *tx[BATCH_MAX];
	unsigned ntx = 0;

	for (unsigned i = 0; i < n; i++) {
		struct rte_mbuf *m = c->batch[i];
		const struct kms_pkt_info *info = pinfo(m);

		c->msgs[i].req = rte_pktmbuf_mtod_offset(m, uint8_t *,
							 info->payload_off);
		c->msgs[i].req_len = info->payload_len;
		c->msgs[i].resp = c->resp[i];
		c->msgs[i].resp_cap = RESP_MAX;
	}
	if (dp->cfg.io_bench)
		noop_process(c->msgs, n);
	else
		kms_worker_process(c->w, c->msgs, n);
	for (unsigned i = 0; i < n; i++) {
		struct rte_mbuf *m = c->batch[i];
		struct kms_pkt_info *info = pinfo(m);
		unsigned flags = dp->tx_ol ? KMS_PKT_TX_IP_CSUM | KMS_PKT_TX_UDP_CSUM : 0;
		size_t len;

		if (!c->msgs[i].resp_len) {
			CNT_ADD(&c->c, engine_drops, 1);
			rte_pktmbuf_free(m);
			continue;
		}
		/* The reply overwrites the request: the engine is done with it. */
		len = kms_pkt_reply_udp(info, rte_pktmbuf_mtod(m, uint8_t *),
					(uint16_t)(m->buf_len - m->data_off),
					c->resp[i], c->msgs[i].resp_len, flags);
		if (!len) {
			CNT_ADD(&c->c, drops[KMS_PKT_DROP_BAD_LEN], 1);
			rte_pktmbuf_free(m);
			continue;
		}
		m->data_len = (uint16_t)len;
		m->pkt_len = (uint32_t)len;
		m->ol_flags = 0;
		if (dp->tx_ol) {
			m->l2_len = info->l2_len;
			m->l3_len = info->l3_len;
			m->ol_flags = RTE_MBUF_F_TX_UDP_CKSUM |
				(info->is_ipv6 ? RTE_MBUF_F_TX_IPV6
					       : RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM);
		}
		tx[ntx++] = m;
	}
	/* No wipe of c->resp: a reply holds nothing that was not just put
	 * on the wire (keys travel only sealed, docs/PROTOCOL.md). */
	transmit(dp, &c->c, c->txq, tx, ntx, up);
}

/* Dequeue into the batch after @p have entries; ARP/NA replies handed
 * over by the RX stage are sent at once. @return requests added. */
static unsigned take_ring(struct wctx *c, unsigned have, int up)
{
	struct kms_dp *dp = c->dp;
	struct rte_mbuf *got[BATCH_MAX], *tx[BATCH_MAX];
	unsigned k, n = 0, ntx = 0;

	/* The common case of the rss layout: nothing was forwarded. */
	if (rte_ring_empty(c->ring))
		return 0;
	k = rte_ring_dequeue_burst(c->ring, (void **)got, dp->cfg.batch - have,
				   NULL);
	for (unsigned i = 0; i < k; i++) {
		if (is_ready_reply(got[i]))
			tx[ntx++] = got[i];
		else
			c->batch[have + n++] = got[i];
	}
	transmit(dp, &c->c, c->txq, tx, ntx, up);
	return n;
}

unsigned kms_dp_worker_poll(struct kms_dp *dp, unsigned wid)
{
	struct wctx *c = &dp->wk[wid];
	unsigned n = 0;
	int up = port_up(dp);

	if (dp->cfg.layout == KMS_DP_LAYOUT_RSS && up) {
		struct rte_mbuf *pkts[BURST], *tx[BURST];
		struct rte_mbuf *per[dp->cfg.nworkers][BURST];
		unsigned nper[dp->cfg.nworkers];
		unsigned k, ntx = 0;

		unsigned bursts = 0;

		memset(nper, 0, sizeof(nper));
		/* Burst after burst while the queue has more and the batch
		 * has room: under load one durable commit serves up to
		 * cfg.batch requests, not one burst's worth. At most
		 * batch/BURST bursts a poll, whatever they held: traffic this
		 * worker does not own (or junk) cannot keep it from serving,
		 * draining its ring or seeing a stop. */
		do {
			k = rte_eth_rx_burst(dp->cfg.port_id, c->rxq, pkts, BURST);
			CNT_ADD(&c->c, rx, k);
			ntx = 0;
			for (unsigned i = 0; i < k; i++) {
				unsigned w;

				if (!classify(dp, &c->c, pkts[i], tx, &ntx))
					continue;
				CNT_ADD(&c->c, requests, 1);
				w = dp->cfg.nworkers == 1 ? 0
					: owner_of(dp, c->hasher, pkts[i]);
				if (w == wid && n < dp->cfg.batch) {
					c->batch[n++] = pkts[i];
					continue;
				}
				/* Another worker owns this pair (or our batch
				 * is full): its ring, so ownership holds. */
				if (w != wid)
					CNT_ADD(&c->c, forwarded, 1);
				per[w][nper[w]++] = pkts[i];
			}
			dispatch(dp, &c->c, per, nper);
			transmit(dp, &c->c, c->txq, tx, ntx, up);
		} while (k == BURST && n + BURST <= dp->cfg.batch &&
			 ++bursts < dp->cfg.batch / BURST);
	}
	if (n < dp->cfg.batch)
		n += take_ring(c, n, up);
	if (n)
		serve(c, n, up);
	return n;
}

int kms_dp_worker_init(struct kms_dp *dp, unsigned wid)
{
	struct kms_worker *w = NULL;
	int rc;

	if (dp->cfg.io_bench)
		return KMS_OK;
	rc = kms_worker_create(dp->e, wid, &w);
	/* Published for readers on other threads (kms_dp_worker_stats). */
	if (rc == KMS_OK)
		__atomic_store_n(&dp->wk[wid].w, w, __ATOMIC_RELEASE);
	return rc;
}

static int worker_main(void *arg)
{
	struct wctx *c = arg;
	struct kms_dp *dp = c->dp;

	c->init_rc = kms_dp_worker_init(dp, c->id);
	__atomic_add_fetch(&dp->ready, 1, __ATOMIC_RELEASE);
	if (c->init_rc)
		return c->init_rc;
	rte_rcu_qsbr_thread_online(dp->qs, c->id);
	while (!__atomic_load_n(&dp->rx_done, __ATOMIC_ACQUIRE)) {
		if (!kms_dp_worker_poll(dp, c->id) && c->w &&
		    rte_ring_empty(c->ring))
			/* Idle: pre-make a K, off the request path. */
			kms_worker_idle_poll(c->w, 1);
		/* Outside any burst: see quiesce.c. */
		rte_rcu_qsbr_quiescent(dp->qs, c->id);
	}
	/*
	 * Drain. In the rss layout other workers may still forward into our
	 * ring until they too stopped reading their queues: keep draining
	 * until every worker has, then once more.
	 */
	__atomic_add_fetch(&dp->rx_stopped, 1, __ATOMIC_ACQ_REL);
	for (int last = 0;;) {
		int up = port_up(dp);
		unsigned n = take_ring(c, 0, up);

		if (n) {
			CNT_ADD(&c->c, drained, n);
			serve(c, n, up);
		}
		rte_rcu_qsbr_quiescent(dp->qs, c->id);
		/* A batch of ARP/NA replies alone yields n == 0: the ring
		 * decides whether there is more. */
		if (n || !rte_ring_empty(c->ring))
			continue;
		if (last)
			break;
		last = __atomic_load_n(&dp->rx_stopped, __ATOMIC_ACQUIRE) ==
		       dp->cfg.nworkers;
	}
	/* Offline first: kms_worker_idle() may wait for the worker's commit
	 * thread (store.deferred_commit = thread), and that thread's munmap()
	 * (quiesce.c) waits for every online lcore's quiescent state. */
	rte_rcu_qsbr_thread_offline(dp->qs, c->id);
	/* Deferred RETRIEVE records: committed now, so the counters printed
	 * at exit include them (the worker's destroy would, later). */
	if (c->w)
		kms_worker_idle(c->w, 0);
	return 0;
}

int kms_dp_run(struct kms_dp *dp, volatile sig_atomic_t *stop)
{
	unsigned lcore, i = 0, main_id = dp->cfg.nworkers;
	int rc = KMS_OK;

	for (unsigned t = 0; t <= main_id; t++)
		rte_rcu_qsbr_thread_register(dp->qs, t);
	rte_rcu_qsbr_thread_online(dp->qs, main_id);
	kms_quiesce_set(dp->qs);
	RTE_LCORE_FOREACH_WORKER(lcore) {
		if (i == dp->cfg.nworkers)
			break;
		rte_eal_remote_launch(worker_main, &dp->wk[i], lcore);
		i++;
	}
	while (__atomic_load_n(&dp->ready, __ATOMIC_ACQUIRE) < dp->cfg.nworkers)
		rte_pause();
	for (i = 0; i < dp->cfg.nworkers; i++)
		if (dp->wk[i].init_rc && !rc)
			rc = dp->wk[i].init_rc;
	if (!rc) {
		KMS_INFO("ready: dpdk port %u, %u workers, layout %s",
			 dp->cfg.port_id, dp->cfg.nworkers,
			 dp->cfg.layout == KMS_DP_LAYOUT_RSS ? "rss" : "rx");
		while (!*stop) {
			if (dp->cfg.layout == KMS_DP_LAYOUT_RX)
				kms_dp_rx_poll(dp);
			else
				rte_delay_us_sleep(10000);
			rte_rcu_qsbr_quiescent(dp->qs, main_id);
		}
	}
	rte_rcu_qsbr_thread_offline(dp->qs, main_id);
	__atomic_store_n(&dp->rx_done, 1, __ATOMIC_RELEASE);
	rte_eal_mp_wait_lcore();
	kms_quiesce_set(NULL);
	for (unsigned t = 0; t <= main_id; t++)
		rte_rcu_qsbr_thread_unregister(dp->qs, t);
	return rc;
}

/* ---- telemetry: /kms/stats, /kms/drops, /kms/workers, /kms/worker ---- */

/* The current dataplane's counters under the lock. @return 0, or -1 when
 * no dataplane is running. */
static int tel_read(struct kms_dp_stats *io, struct kms_stats *st)
{
	int rc = -1;

	rte_rwlock_read_lock(&telemetry_lock);
	if (telemetry_dp) {
		kms_dp_read_stats(telemetry_dp, io, st);
		rc = 0;
	}
	rte_rwlock_read_unlock(&telemetry_lock);
	return rc;
}

static int tel_stats(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct kms_dp_stats io;
	struct kms_stats st;

	(void)cmd;
	(void)params;
	if (tel_read(&io, &st))
		return -1;
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "rx", io.rx);
	rte_tel_data_add_dict_u64(d, "tx", io.tx);
	rte_tel_data_add_dict_u64(d, "requests", io.requests);
	rte_tel_data_add_dict_u64(d, "arp_replies", io.arp);
	rte_tel_data_add_dict_u64(d, "nd_replies", io.nd);
	rte_tel_data_add_dict_u64(d, "forwarded", io.forwarded);
	rte_tel_data_add_dict_u64(d, "ring_full", io.ring_full);
	rte_tel_data_add_dict_u64(d, "tx_full", io.tx_full);
	rte_tel_data_add_dict_u64(d, "engine_drops", io.engine_drops);
	rte_tel_data_add_dict_u64(d, "batches", st.batches);
	rte_tel_data_add_dict_u64(d, "keys_new", st.keys_new);
	rte_tel_data_add_dict_u64(d, "keys_reused", st.keys_reused);
	rte_tel_data_add_dict_u64(d, "retrievals", st.retrievals);
	rte_tel_data_add_dict_u64(d, "commits", st.commits);
	rte_tel_data_add_dict_u64(d, "commit_failures", st.commit_failures);
	rte_tel_data_add_dict_u64(d, "cache_hits", st.cache_hits);
	rte_tel_data_add_dict_u64(d, "cache_misses", st.cache_misses);
	rte_tel_data_add_dict_u64(d, "hsm_calls", st.hsm_calls);
	rte_tel_data_add_dict_string(d, "crypto_mode", crypto_mode_name);
	return 0;
}

static int tel_drops(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct kms_dp_stats io;

	(void)cmd;
	(void)params;
	if (tel_read(&io, NULL))
		return -1;
	rte_tel_data_start_dict(d);
	for (unsigned i = 0; i < KMS_PKT_DROP__COUNT; i++)
		rte_tel_data_add_dict_u64(d, kms_pkt_drop_name((enum kms_pkt_verdict)i),
					  io.drops[i]);
	rte_tel_data_add_dict_u64(d, "engine", io.engine_drops);
	rte_tel_data_add_dict_u64(d, "ring_full", io.ring_full);
	rte_tel_data_add_dict_u64(d, "tx_full", io.tx_full);
	return 0;
}

static int tel_workers(const char *cmd, const char *params,
		       struct rte_tel_data *d)
{
	(void)cmd;
	(void)params;
	rte_rwlock_read_lock(&telemetry_lock);
	if (!telemetry_dp) {
		rte_rwlock_read_unlock(&telemetry_lock);
		return -1;
	}
	rte_tel_data_start_array(d, RTE_TEL_U64_VAL);
	for (unsigned i = 0; i < telemetry_dp->cfg.nworkers; i++) {
		struct kms_stats st;

		memset(&st, 0, sizeof(st));
		if (telemetry_dp->wk[i].w)
			kms_worker_stats(telemetry_dp->wk[i].w, &st);
		rte_tel_data_add_array_u64(d, st.requests);
	}
	rte_rwlock_read_unlock(&telemetry_lock);
	return 0;
}

static void sum(struct kms_dp_stats *io, const struct counters *c)
{
	io->rx += __atomic_load_n(&c->rx, __ATOMIC_RELAXED);
	io->tx += __atomic_load_n(&c->tx, __ATOMIC_RELAXED);
	io->requests += __atomic_load_n(&c->requests, __ATOMIC_RELAXED);
	io->arp += __atomic_load_n(&c->arp, __ATOMIC_RELAXED);
	io->nd += __atomic_load_n(&c->nd, __ATOMIC_RELAXED);
	io->forwarded += __atomic_load_n(&c->forwarded, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < KMS_PKT_DROP__COUNT; i++)
		io->drops[i] += __atomic_load_n(&c->drops[i], __ATOMIC_RELAXED);
	io->engine_drops += __atomic_load_n(&c->engine_drops, __ATOMIC_RELAXED);
	io->ring_full += __atomic_load_n(&c->ring_full, __ATOMIC_RELAXED);
	io->tx_full += __atomic_load_n(&c->tx_full, __ATOMIC_RELAXED);
	io->drained += __atomic_load_n(&c->drained, __ATOMIC_RELAXED);
}

/* "/kms/worker,N": worker N's own I/O and engine counters (its lcore's
 * share of /kms/stats). No, or a bad, N: an error reply. */
static int tel_worker(const char *cmd, const char *params,
		      struct rte_tel_data *d)
{
	struct kms_dp_stats io;
	struct kms_stats st;
	unsigned long id;
	char *end;

	(void)cmd;
	if (!params || !*params)
		return -EINVAL;
	errno = 0;
	id = strtoul(params, &end, 10);
	if (errno || *end || end == params || params[0] == '-')
		return -EINVAL;
	memset(&io, 0, sizeof(io));
	memset(&st, 0, sizeof(st));
	rte_rwlock_read_lock(&telemetry_lock);
	if (!telemetry_dp || id >= telemetry_dp->cfg.nworkers) {
		rte_rwlock_read_unlock(&telemetry_lock);
		return -EINVAL;
	}
	sum(&io, &telemetry_dp->wk[id].c);
	if (telemetry_dp->wk[id].w)
		kms_worker_stats(telemetry_dp->wk[id].w, &st);
	rte_rwlock_read_unlock(&telemetry_lock);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "worker", id);
	rte_tel_data_add_dict_u64(d, "rx", io.rx);
	rte_tel_data_add_dict_u64(d, "tx", io.tx);
	rte_tel_data_add_dict_u64(d, "requests", io.requests);
	rte_tel_data_add_dict_u64(d, "forwarded", io.forwarded);
	rte_tel_data_add_dict_u64(d, "ring_full", io.ring_full);
	rte_tel_data_add_dict_u64(d, "tx_full", io.tx_full);
	rte_tel_data_add_dict_u64(d, "engine_drops", io.engine_drops);
	rte_tel_data_add_dict_u64(d, "batches", st.batches);
	rte_tel_data_add_dict_u64(d, "engine_requests", st.requests);
	rte_tel_data_add_dict_u64(d, "keys_new", st.keys_new);
	rte_tel_data_add_dict_u64(d, "keys_reused", st.keys_reused);
	rte_tel_data_add_dict_u64(d, "retrievals", st.retrievals);
	rte_tel_data_add_dict_u64(d, "commits", st.commits);
	rte_tel_data_add_dict_u64(d, "cache_hits", st.cache_hits);
	rte_tel_data_add_dict_u64(d, "cache_misses", st.cache_misses);
	rte_tel_data_add_dict_u64(d, "hsm_calls", st.hsm_calls);
	rte_tel_data_add_dict_u64(d, "deferred_records", st.deferred_records);
	return 0;
}

void kms_dp_read_stats(struct kms_dp *dp, struct kms_dp_stats *io,
		       struct kms_stats *engine)
{
	if (io) {
		memset(io, 0, sizeof(*io));
		sum(io, &dp->rxc);
		for (unsigned i = 0; i < dp->cfg.nworkers; i++)
			sum(io, &dp->wk[i].c);
	}
	if (engine) {
		memset(engine, 0, sizeof(*engine));
		for (unsigned i = 0; i < dp->cfg.nworkers; i++) {
			struct kms_stats one;

			if (!dp->wk[i].w)
				continue;
			kms_worker_stats(dp->wk[i].w, &one);
			kms_stats_add(engine, &one);
		}
	}
}

int kms_dp_worker_stats(struct kms_dp *dp, unsigned i, struct kms_stats *out)
{
	struct kms_worker *w;

	if (i >= dp->cfg.nworkers)
		return KMS_ERR_INVAL;
	w = __atomic_load_n(&dp->wk[i].w, __ATOMIC_ACQUIRE);
	if (!w)
		return KMS_ERR_NOTFOUND;
	kms_worker_stats(w, out);
	return KMS_OK;
}

struct rte_mempool *kms_dp_mempool(struct kms_dp *dp)
{
	return dp->mp;
}

/* ---- set-up ---- */

static int port_setup(struct kms_dp *dp)
{
	const struct kms_dp_config *cfg = &dp->cfg;
	/* One TX queue per worker (TX queues are not thread-safe) and as
	 * many RX queues. */
	uint16_t nrx = (uint16_t)cfg->nworkers, ntx = (uint16_t)cfg->nworkers;
	struct rte_eth_conf conf;
	struct rte_eth_dev_info info;
	struct rte_ether_addr mac;
	int socket, rc;

	memset(&conf, 0, sizeof(conf));
	/* Before anything that dereferences the device. */
	if (!rte_eth_dev_is_valid_port(cfg->port_id)) {
		KMS_ERR("dpdk: no port %u (did you pass a --vdev or a PCI device?)",
			cfg->port_id);
		return KMS_ERR_CONFIG;
	}
	socket = rte_eth_dev_socket_id(cfg->port_id);
	dp->nq = nrx;
	rc = rte_eth_dev_info_get(cfg->port_id, &info);
	if (rc)
		return KMS_ERR_CONFIG;
	if (nrx > info.max_rx_queues || ntx > info.max_tx_queues) {
		KMS_ERR("dpdk: port %u (%s) has %u RX / %u TX queues; %u workers "
			"need %u / %u (af_packet: qpairs=%u)", cfg->port_id,
			info.driver_name, info.max_rx_queues, info.max_tx_queues,
			cfg->nworkers, nrx, ntx, cfg->nworkers);
		return KMS_ERR_CONFIG;
	}
	if (nrx > 1) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_hf =
			(RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
	}
	/* Checksums in hardware when the port offers both; else software. */
	if ((info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM) &&
	    (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_UDP_CKSUM))
		dp->tx_ol = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
	conf.txmode.offloads = dp->tx_ol;
	conf.rxmode.offloads = info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_CHECKSUM;
	rc = rte_eth_dev_configure(cfg->port_id, nrx, ntx, &conf);
	if (rc) {
		KMS_ERR("dpdk: configure port %u: %s", cfg->port_id, rte_strerror(-rc));
		return KMS_ERR_CONFIG;
	}
	for (uint16_t q = 0; q < nrx; q++) {
		rc = rte_eth_rx_queue_setup(cfg->port_id, q, RX_DESC, socket, NULL, dp->mp);
		if (rc) {
			KMS_ERR("dpdk: RX queue %u: %s", q, rte_strerror(-rc));
			return KMS_ERR_CONFIG;
		}
	}
	for (uint16_t q = 0; q < ntx; q++) {
		struct rte_eth_txconf txc = info.default_txconf;

		txc.offloads = dp->tx_ol;
		rc = rte_eth_tx_queue_setup(cfg->port_id, q, TX_DESC, socket, &txc);
		if (rc) {
			KMS_ERR("dpdk: TX queue %u: %s", q, rte_strerror(-rc));
			return KMS_ERR_CONFIG;
		}
	}
	rc = rte_eth_dev_start(cfg->port_id);
	if (rc) {
		KMS_ERR("dpdk: start port %u: %s", cfg->port_id, rte_strerror(-rc));
		return KMS_ERR_CONFIG;
	}
	dp->port_started = 1;
	dp->link_gate = !strcmp(info.driver_name, "net_memif");
	rte_eth_promiscuous_enable(cfg->port_id); /* virtual ports: our MAC may differ from the peer's view */
	rte_eth_macaddr_get(cfg->port_id, &mac);
	memcpy(dp->cfg.addr.mac, mac.addr_bytes, 6);
	KMS_INFO("dpdk: port %u (%s) MAC " RTE_ETHER_ADDR_PRT_FMT ", %u RX / %u TX "
		 "queues, checksums in %s", cfg->port_id, info.driver_name,
		 RTE_ETHER_ADDR_BYTES(&mac), nrx, ntx,
		 dp->tx_ol ? "hardware" : "software");
	return KMS_OK;
}

int kms_dp_create(struct kms_engine *e, const struct kms_dp_config *cfg,
		  struct rte_mempool *mp, struct kms_dp **out)
{
	struct kms_dp *dp;
	int rc = KMS_ERR_NOMEM;

	if (!cfg->nworkers || cfg->nworkers != kms_engine_nworkers(e) ||
	    !cfg->batch || cfg->batch > BATCH_MAX ||
	    !rte_is_power_of_2(cfg->ring_size))
		return KMS_ERR_INVAL;
	if (rte_lcore_count() < cfg->nworkers + 1) {
		KMS_ERR("dpdk: %u workers need %u lcores, the EAL has %u "
			"(-l / --lcores)", cfg->nworkers, cfg->nworkers + 1,
			rte_lcore_count());
		return KMS_ERR_CONFIG;
	}
	dp = rte_zmalloc("kms_dp", sizeof(*dp), RTE_CACHE_LINE_SIZE);
	if (!dp)
		return KMS_ERR_NOMEM;
	dp->e = e;
	dp->cfg = *cfg;
	dp->mp = mp;
	dp->hasher = kms_hasher_new();
	dp->wk = rte_zmalloc("kms_workers", cfg->nworkers * sizeof(*dp->wk),
			     RTE_CACHE_LINE_SIZE);
	dp->qs = rte_zmalloc("kms_qsbr", rte_rcu_qsbr_get_memsize(cfg->nworkers + 1),
			     RTE_CACHE_LINE_SIZE);
	if (!dp->hasher || !dp->wk || !dp->qs ||
	    rte_rcu_qsbr_init(dp->qs, cfg->nworkers + 1))
		goto err;
	if (!dp->mp) {
		/* The private area carries each frame's classification. */
		uint16_t priv = RTE_ALIGN(sizeof(struct kms_pkt_info),
					  RTE_MBUF_PRIV_ALIGN);
		dp->mp = rte_pktmbuf_pool_create("kms_mbufs", cfg->mbufs, 256, priv,
						 RTE_MBUF_DEFAULT_BUF_SIZE,
						 rte_socket_id());
		if (!dp->mp) {
			KMS_ERR("dpdk: mempool of %u mbufs: %s (raise -m)", cfg->mbufs,
				rte_strerror(rte_errno));
			goto err;
		}
		dp->own_mp = 1;
	} else if (rte_pktmbuf_priv_size(dp->mp) < sizeof(struct kms_pkt_info)) {
		rc = KMS_ERR_INVAL;
		goto err;
	}
	for (unsigned i = 0; i < cfg->nworkers; i++) {
		char name[RTE_RING_NAMESIZE];
		struct wctx *c = &dp->wk[i];

		c->dp = dp;
		c->id = i;
		c->txq = (uint16_t)i;
		c->rxq = (uint16_t)i;
		c->hasher = kms_hasher_new();
		snprintf(name, sizeof(name), "kms_w%u", i);
		/* rx layout: one producer (RX lcore); rss: any worker. */
		c->ring = rte_ring_create(name, cfg->ring_size, rte_socket_id(),
					  RING_F_SC_DEQ | RING_F_EXACT_SZ |
					  (cfg->layout == KMS_DP_LAYOUT_RX ? RING_F_SP_ENQ : 0));
		if (!c->ring || !c->hasher)
			goto err;
	}
	rc = port_setup(dp);
	if (rc)
		goto err;
	rte_rwlock_write_lock(&telemetry_lock);
	telemetry_dp = dp;
	crypto_mode_name = kms_engine_crypto_mode(e);
	rte_rwlock_write_unlock(&telemetry_lock);
	if (!telemetry_registered) {
		rte_telemetry_register_cmd("/kms/stats", tel_stats,
					   "KMS counters summed over lcores. No parameters");
		rte_telemetry_register_cmd("/kms/drops", tel_drops,
					   "Dropped frames by class. No parameters");
		rte_telemetry_register_cmd("/kms/workers", tel_workers,
					   "Requests per worker. No parameters");
		rte_telemetry_register_cmd("/kms/worker", tel_worker,
					   "One worker's counters. Parameter: worker id");
		telemetry_registered = 1;
	}
	*out = dp;
	return KMS_OK;
err:
	kms_dp_destroy(dp);
	return rc;
}

void kms_dp_destroy(struct kms_dp *dp)
{
	if (!dp)
		return;
	rte_rwlock_write_lock(&telemetry_lock);
	if (telemetry_dp == dp)
		telemetry_dp = NULL;
	rte_rwlock_write_unlock(&telemetry_lock);
	if (dp->port_started) {
		rte_eth_dev_stop(dp->cfg.port_id);
		rte_eth_dev_close(dp->cfg.port_id);
	}
	for (unsigned i = 0; dp->wk && i < dp->cfg.nworkers; i++) {
		struct wctx *c = &dp->wk[i];
		void *m;

		kms_worker_destroy(c->w);
		kms_hasher_free(c->hasher);
		while (c->ring && rte_ring_dequeue(c->ring, &m) == 0)
			rte_pktmbuf_free(m);
		rte_ring_free(c->ring);
	}
	rte_free(dp->wk);
	rte_free(dp->qs);
	kms_hasher_free(dp->hasher);
	if (dp->own_mp)
		rte_mempool_free(dp->mp);
	rte_free(dp);
}
