// SPDX-License-Identifier: Apache-2.0
/*
 * The DPDK dataplane in process: a real EAL (--no-huge --no-pci), net_ring
 * ports made with rte_eth_from_rings, and the real engine of the engine
 * fixture (SoftHSM2 token, LMDB store, enrolled parties). The test plays
 * the wire: it enqueues crafted frames on the port's RX rings, drives the
 * RX stage and the workers by hand (kms_dp_rx_poll / kms_dp_worker_poll)
 * and dequeues what the port transmitted from its TX rings. A port has
 * one RX and one TX ring per worker in both layouts (kms_dpdk.h): worker
 * i transmits on TX queue i, and in the rx layout ARP/NA replies leave on
 * TX queue 0 once worker 0 has polled. Every reply is
 * checked with checksum code of this file (not the dataplane's), and the
 * mempool's in-use count is compared with its start value after each test
 * step that must free what it took.
 *
 * Two tests use kernel-facing ports instead (net_tap: a port that offers
 * TX checksum offload; net_af_packet on a veth pair), in a network
 * namespace of the test's own; they are skipped without the privileges.
 * KMS_TEST_FILTER / KMS_TEST_SKIP select tests by name (globs);
 * KMS_TEST_EAL_LOG sets the EAL --log-level (default 3).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include "engine_fixture.h"
#include "kms_dpdk.h"
#include "kms_pkt.h"
#include "kms_proto.h"

#define KMS_PORT 7430
#define PEER_PORT 40000
#define NWMAX EFX_MAX_WORKERS
#define PORT_RING 1024          /* the port's RX/TX rings: never the limit */
#define DP_BURST 32             /* dpdk.c's BURST */
#define FRAME_MAX 2048

static const uint8_t OUR_V4[4] = { 192, 0, 2, 1 };
static const uint8_t PEER_V4[4] = { 192, 0, 2, 2 };
static const uint8_t OUR_V6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
static const uint8_t PEER_V6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };
static const uint8_t PEER_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x02 };
static const uint8_t BCAST[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

static unsigned g_seq; /* unique ring/port names */

/* ------------------------------------------------------------------ */
/* Per-test state                                                      */

struct dpt {
	struct efx f;
	int efx_up;
	struct kms_dp_config cfg;
	struct kms_dp *dp;
	struct rte_mempool *mp;        /* kms_dp_mempool(dp) */
	struct rte_mempool *own_mp;    /* ours, when passed to kms_dp_create */
	struct rte_ring *rx[NWMAX], *tx[NWMAX];
	unsigned nrx, ntx;
	int port;                      /* -1: none */
	uint8_t mac[6];                /* the port's (ours) */
	unsigned base;                 /* mempool in use after create */
	uint16_t sport;                /* the peer's next source port */
};

struct opts {
	unsigned nworkers;
	enum kms_dp_layout layout;
	unsigned batch;
	unsigned ring_size;
	unsigned nrx, ntx;             /* 0: nworkers (what kmsd asks for) */
	bool own_mp;                   /* pass our own mempool */
	bool no_worker_init;           /* kms_dp_run will create the workers */
	unsigned tx_ring_size;         /* 0: PORT_RING; else exact size of TX ring 0 */
	bool io_bench;                 /* cfg.io_bench: fixed replies, no engine */
};

static int dpt_setup(void **state)
{
	struct dpt *t = calloc(1, sizeof(*t));

	if (!t)
		return -1;
	t->port = -1;
	t->sport = PEER_PORT;
	*state = t;
	return 0;
}

static void free_ring_mbufs(struct rte_ring *r)
{
	void *m;

	while (r && rte_ring_dequeue(r, &m) == 0)
		rte_pktmbuf_free(m);
}

/* The dataplane, the port and its rings; the engine stays. */
static void dp_close(struct dpt *t)
{
	/* Frames still on the port's rings belong to the test: free them
	 * while their mempool exists. */
	for (unsigned i = 0; i < NWMAX; i++)
		free_ring_mbufs(t->rx[i]);
	for (unsigned i = 0; i < NWMAX; i++)
		free_ring_mbufs(t->tx[i]);
	kms_dp_destroy(t->dp);
	t->dp = NULL;
	if (t->port >= 0 && rte_eth_dev_is_valid_port((uint16_t)t->port))
		rte_eth_dev_close((uint16_t)t->port);
	t->port = -1;
	for (unsigned i = 0; i < NWMAX; i++) {
		rte_ring_free(t->rx[i]);
		rte_ring_free(t->tx[i]);
		t->rx[i] = t->tx[i] = NULL;
	}
	t->nrx = t->ntx = 0;
}

static int dpt_teardown(void **state)
{
	struct dpt *t = *state;

	dp_close(t);
	rte_mempool_free(t->own_mp);
	if (t->efx_up)
		efx_teardown(&t->f);
	free(t);
	return 0;
}

/* The engine of the fixture with @p nworkers workers, whose worker state
 * the dataplane creates (kms_dp_worker_init): the fixture's own workers
 * are destroyed so that each pair has exactly one replay window. */
static void engine_up(struct dpt *t, unsigned nworkers)
{
	struct kms_policy pol = efx_policy();

	efx_setup(&t->f, 0);
	t->efx_up = 1;
	efx_start(&t->f, &pol, nworkers);
	for (unsigned i = 0; i < EFX_MAX_WORKERS; i++) {
		kms_worker_destroy(t->f.w[i]);
		t->f.w[i] = NULL;
	}
}

static int make_port_sz(struct dpt *t, unsigned nrx, unsigned ntx,
			unsigned tx0_size)
{
	char name[RTE_RING_NAMESIZE];
	unsigned seq = ++g_seq;
	int port;

	assert_true(nrx <= NWMAX && ntx <= NWMAX);
	for (unsigned i = 0; i < nrx; i++) {
		snprintf(name, sizeof(name), "t%u_rx%u", seq, i);
		t->rx[i] = rte_ring_create(name, PORT_RING, (int)rte_socket_id(), 0);
		assert_non_null(t->rx[i]);
	}
	for (unsigned i = 0; i < ntx; i++) {
		snprintf(name, sizeof(name), "t%u_tx%u", seq, i);
		if (i == 0 && tx0_size)
			t->tx[i] = rte_ring_create(name, tx0_size,
						   (int)rte_socket_id(),
						   RING_F_EXACT_SZ);
		else
			t->tx[i] = rte_ring_create(name, PORT_RING,
						   (int)rte_socket_id(), 0);
		assert_non_null(t->tx[i]);
	}
	t->nrx = nrx;
	t->ntx = ntx;
	snprintf(name, sizeof(name), "kt%u", seq);
	port = rte_eth_from_rings(name, t->rx, nrx, t->tx, ntx,
				  rte_socket_id());
	assert_true(port >= 0);
	t->port = port;
	return port;
}

static int make_port(struct dpt *t, unsigned nrx, unsigned ntx)
{
	return make_port_sz(t, nrx, ntx, 0);
}

static struct rte_mempool *make_mempool(unsigned n, uint16_t priv)
{
	char name[RTE_MEMPOOL_NAMESIZE];

	snprintf(name, sizeof(name), "tmp%u", ++g_seq);
	return rte_pktmbuf_pool_create(name, n, 0, priv,
				       RTE_MBUF_DEFAULT_BUF_SIZE,
				       (int)rte_socket_id());
}

static void cfg_fill(struct dpt *t, const struct opts *o)
{
	memset(&t->cfg, 0, sizeof(t->cfg));
	t->cfg.port_id = (uint16_t)t->port;
	t->cfg.layout = o->layout;
	t->cfg.nworkers = o->nworkers;
	t->cfg.batch = o->batch ? o->batch : 32;
	t->cfg.ring_size = o->ring_size ? o->ring_size : 256;
	t->cfg.mbufs = 2047;
	t->cfg.io_bench = o->io_bench;
	memcpy(&t->cfg.addr.ipv4, OUR_V4, 4);
	memcpy(t->cfg.addr.ipv6, OUR_V6, 16);
	t->cfg.addr.has_ipv6 = true;
	t->cfg.addr.udp_port = KMS_PORT;
}

static unsigned in_use(struct dpt *t)
{
	return rte_mempool_in_use_count(t->mp);
}

/* Engine, port, dataplane, workers; records the mempool's baseline.
 * @return kms_dp_create's result (the rest is done only on KMS_OK). */
static int start_rc(struct dpt *t, const struct opts *o)
{
	unsigned nrx = o->nrx ? o->nrx : o->nworkers;
	unsigned ntx = o->ntx ? o->ntx : o->nworkers;
	struct rte_ether_addr mac;
	int rc;

	if (!t->efx_up)
		engine_up(t, o->nworkers);
	if (t->port < 0)
		make_port_sz(t, nrx, ntx, o->tx_ring_size);
	cfg_fill(t, o);
	if (o->own_mp) {
		t->own_mp = make_mempool(2047, RTE_ALIGN(sizeof(struct kms_pkt_info),
							 RTE_MBUF_PRIV_ALIGN));
		assert_non_null(t->own_mp);
	}
	rc = kms_dp_create(t->f.eng, &t->cfg, t->own_mp, &t->dp);
	if (rc != KMS_OK)
		return rc;
	t->mp = kms_dp_mempool(t->dp);
	assert_non_null(t->mp);
	if (o->own_mp)
		assert_ptr_equal(t->mp, t->own_mp);
	if (!o->no_worker_init)
		for (unsigned w = 0; w < o->nworkers; w++)
			assert_int_equal(kms_dp_worker_init(t->dp, w), KMS_OK);
	assert_int_equal(rte_eth_macaddr_get((uint16_t)t->port, &mac), 0);
	memcpy(t->mac, mac.addr_bytes, 6);
	t->base = in_use(t);
	return KMS_OK;
}

static void start(struct dpt *t, const struct opts *o)
{
	assert_int_equal(start_rc(t, o), KMS_OK);
}

/* ------------------------------------------------------------------ */
/* Checksums, written here so that replies are judged independently of  */
/* the dataplane's own code.                                           */

static uint32_t ref_sum(uint32_t acc, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		acc += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		acc += (uint32_t)p[n - 1] << 8;
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return acc;
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Recompute an IPv4 header checksum in place (for frames the test edits). */
static void ref_ipv4_fix(uint8_t *ip)
{
	size_t hl = (size_t)(ip[0] & 0x0f) * 4;

	wr16(ip + 10, 0);
	wr16(ip + 10, (uint16_t)~ref_sum(0, ip, hl));
}

/* The UDP/ICMPv6 checksum over a pseudo-header verifies (sum == 0xffff). */
static bool ref_l4_ok(bool v6, const uint8_t *ip, const uint8_t *l4,
		      size_t l4_len, uint8_t proto)
{
	uint8_t ph[40];
	size_t n;

	if (v6) {
		memcpy(ph, ip + 8, 32);
		ph[32] = (uint8_t)(l4_len >> 24);
		ph[33] = (uint8_t)(l4_len >> 16);
		ph[34] = (uint8_t)(l4_len >> 8);
		ph[35] = (uint8_t)l4_len;
		ph[36] = ph[37] = ph[38] = 0;
		ph[39] = proto;
		n = 40;
	} else {
		memcpy(ph, ip + 12, 8);
		ph[8] = 0;
		ph[9] = proto;
		wr16(ph + 10, (uint16_t)l4_len);
		n = 12;
	}
	return ref_sum(ref_sum(0, ph, n), l4, l4_len) == 0xffff;
}

/* ------------------------------------------------------------------ */
/* Frames in                                                           */

enum framing { F_V4, F_V4_VLAN, F_V6, F_V6_VLAN };

static struct kms_pkt_flow flow_to_us(struct dpt *t, enum framing fr)
{
	struct kms_pkt_flow fl;

	memset(&fl, 0, sizeof(fl));
	memcpy(fl.src_mac, PEER_MAC, 6);
	memcpy(fl.dst_mac, t->mac, 6);
	fl.ipv6 = fr == F_V6 || fr == F_V6_VLAN;
	memcpy(fl.src_ip, fl.ipv6 ? PEER_V6 : PEER_V4, fl.ipv6 ? 16 : 4);
	memcpy(fl.dst_ip, fl.ipv6 ? OUR_V6 : OUR_V4, fl.ipv6 ? 16 : 4);
	fl.src_port = t->sport++;
	if (t->sport < PEER_PORT)
		t->sport = PEER_PORT;
	fl.dst_port = KMS_PORT;
	fl.vlan = fr == F_V4_VLAN || fr == F_V6_VLAN;
	fl.vlan_tci = fl.vlan ? (uint16_t)(5u << 13 | 42) : 0; /* PCP 5, VID 42 */
	return fl;
}

static struct rte_mbuf *mbuf_of(struct dpt *t, const uint8_t *frame, size_t len)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(t->mp);
	char *p;

	assert_non_null(m);
	p = rte_pktmbuf_append(m, (uint16_t)len);
	assert_non_null(p);
	memcpy(p, frame, len);
	return m;
}

static void put_mbuf(struct dpt *t, unsigned q, struct rte_mbuf *m)
{
	assert_true(q < t->nrx);
	assert_int_equal(rte_ring_enqueue(t->rx[q], m), 0);
}

static void put_frame(struct dpt *t, unsigned q, const uint8_t *frame,
		      size_t len)
{
	put_mbuf(t, q, mbuf_of(t, frame, len));
}

/* A request datagram as a frame of flow @p fl on RX queue @p q. */
static void put_dgram(struct dpt *t, unsigned q, const struct kms_pkt_flow *fl,
		      const uint8_t *dgram, size_t len)
{
	uint8_t frame[FRAME_MAX];
	size_t n = kms_pkt_build_udp(fl, dgram, len, frame, sizeof(frame));

	assert_true(n > 0);
	put_frame(t, q, frame, n);
}

/* ------------------------------------------------------------------ */
/* Frames out                                                          */

static unsigned tx_pending(struct dpt *t)
{
	unsigned n = 0;

	for (unsigned i = 0; i < t->ntx; i++)
		n += rte_ring_count(t->tx[i]);
	return n;
}

static struct rte_mbuf *take_tx(struct dpt *t, unsigned q)
{
	void *m = NULL;

	assert_true(q < t->ntx);
	if (rte_ring_dequeue(t->tx[q], &m))
		return NULL;
	return m;
}

/*
 * Check that @p m is the UDP reply to a request sent with flow @p rq and
 * copy its payload into @p rep (parsed, as efx_run would leave it). The
 * frame must be exactly Ethernet [tag] IP UDP payload, addresses and ports
 * swapped, lengths consistent, IPv4 header and UDP checksums valid.
 * Frees @p m.
 */
static void check_reply(struct dpt *t, struct rte_mbuf *m,
			const struct kms_pkt_flow *rq, struct efx_reply *rep)
{
	const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
	size_t len = m->data_len, l2 = rq->vlan ? 18 : 14, l3len, ulen;
	const uint8_t *ip = f + l2, *udp;

	assert_int_equal(m->nb_segs, 1);
	assert_int_equal(m->pkt_len, m->data_len);
	assert_true(len >= l2 + (rq->ipv6 ? 40 : 20) + 8 + KMS_HDR_LEN);
	/* L2: back to the requester, from our MAC, the tag kept. */
	assert_memory_equal(f, rq->src_mac, 6);
	assert_memory_equal(f + 6, t->mac, 6);
	if (rq->vlan) {
		assert_int_equal(rd16(f + 12), 0x8100);
		assert_int_equal(rd16(f + 14), rq->vlan_tci);
	}
	assert_int_equal(rd16(f + l2 - 2), rq->ipv6 ? 0x86dd : 0x0800);
	if (rq->ipv6) {
		assert_int_equal(ip[0] >> 4, 6);
		l3len = 40;
		assert_int_equal(rd16(ip + 4), len - l2 - 40);  /* payload length */
		assert_int_equal(ip[6], 17);
		assert_int_equal(ip[7], 64);
		assert_memory_equal(ip + 8, rq->dst_ip, 16);    /* from us */
		assert_memory_equal(ip + 24, rq->src_ip, 16);   /* to the peer */
	} else {
		assert_int_equal(ip[0], 0x45);                  /* v4, no options */
		l3len = 20;
		assert_int_equal(rd16(ip + 2), len - l2);       /* total length */
		assert_int_equal(rd16(ip + 6) & 0x3fff, 0);     /* no MF/offset */
		assert_int_equal(ip[9], 17);
		assert_int_not_equal(ip[8], 0);                 /* TTL */
		assert_memory_equal(ip + 12, rq->dst_ip, 4);
		assert_memory_equal(ip + 16, rq->src_ip, 4);
		assert_int_equal(ref_sum(0, ip, 20), 0xffff);   /* header csum */
	}
	udp = ip + l3len;
	ulen = len - l2 - l3len;
	assert_int_equal(rd16(udp), rq->dst_port);
	assert_int_equal(rd16(udp + 2), rq->src_port);
	assert_int_equal(rd16(udp + 4), ulen);
	assert_int_not_equal(rd16(udp + 6), 0);                 /* computed */
	assert_true(ref_l4_ok(rq->ipv6, ip, udp, ulen, 17));
	/* The payload, parsed. */
	memset(rep, 0, sizeof(*rep));
	assert_true(ulen - 8 <= sizeof(rep->b));
	rep->len = (uint16_t)(ulen - 8);
	memcpy(rep->b, udp + 8, rep->len);
	assert_int_equal(kms_resp_parse(rep->b, rep->len, &rep->r), KMS_OK);
	rep->status = rep->r.status;
	rep->msg_status = rep->r.status;
	rte_pktmbuf_free(m);
}

/* The single reply to @p rq waiting on TX queue @p q (and nowhere else). */
static void expect_reply(struct dpt *t, unsigned q,
			 const struct kms_pkt_flow *rq, struct efx_reply *rep)
{
	struct rte_mbuf *m;

	assert_int_equal(tx_pending(t), 1);
	m = take_tx(t, q);
	assert_non_null(m);
	check_reply(t, m, rq, rep);
}

static struct kms_dp_stats io_stats(struct dpt *t)
{
	struct kms_dp_stats io;

	kms_dp_read_stats(t->dp, &io, NULL);
	return io;
}

static struct kms_stats eng_stats(struct dpt *t)
{
	struct kms_stats st;

	kms_dp_read_stats(t->dp, NULL, &st);
	return st;
}

static void poll_workers(struct dpt *t)
{
	for (unsigned w = 0; w < t->cfg.nworkers; w++)
		kms_dp_worker_poll(t->dp, w);
}

/* ================================================================== */
/* 1. ARP and neighbour discovery                                      */

static void check_arp_reply(struct dpt *t, struct rte_mbuf *m, bool vlan,
			    uint16_t tci)
{
	const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
	size_t l2 = vlan ? 18 : 14;
	const uint8_t *a = f + l2;

	assert_int_equal(m->data_len, l2 + 28);
	assert_int_equal(m->pkt_len, l2 + 28);
	assert_memory_equal(f, PEER_MAC, 6);
	assert_memory_equal(f + 6, t->mac, 6);
	if (vlan) {
		assert_int_equal(rd16(f + 12), 0x8100);
		assert_int_equal(rd16(f + 14), tci);
	}
	assert_int_equal(rd16(f + l2 - 2), 0x0806);
	assert_int_equal(rd16(a), 1);          /* Ethernet */
	assert_int_equal(rd16(a + 2), 0x0800); /* IPv4 */
	assert_int_equal(rd16(a + 6), 2);      /* reply */
	assert_memory_equal(a + 8, t->mac, 6); /* sha: us */
	assert_memory_equal(a + 14, OUR_V4, 4);
	assert_memory_equal(a + 18, PEER_MAC, 6);
	assert_memory_equal(a + 24, PEER_V4, 4);
	rte_pktmbuf_free(m);
}

/* An ARP who-has for our IPv4 address from the peer, broadcast. */
static size_t arp_request(uint8_t *frame, size_t cap, bool vlan, uint16_t tci)
{
	struct kms_pkt_flow fl;
	size_t n;

	memset(&fl, 0, sizeof(fl));
	memcpy(fl.src_mac, PEER_MAC, 6);
	memcpy(fl.dst_mac, BCAST, 6);
	memcpy(fl.src_ip, PEER_V4, 4);
	memcpy(fl.dst_ip, OUR_V4, 4);
	fl.vlan = vlan;
	fl.vlan_tci = tci;
	n = kms_pkt_build_arp_request(&fl, frame, cap);
	assert_int_equal(n, vlan ? 46 : 42);
	return n;
}

static void put_arp(struct dpt *t, unsigned q)
{
	uint8_t frame[64];

	put_frame(t, q, frame, arp_request(frame, sizeof(frame), false, 0));
}

static bool is_arp(const struct rte_mbuf *m)
{
	const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
	size_t l2 = rd16(f + 12) == 0x8100 ? 18 : 14;

	return m->data_len >= l2 && rd16(f + l2 - 2) == 0x0806;
}

/* The NA for OUR_V6 to the peer (no tag). Frees @p m. */
static void check_na(struct dpt *t, struct rte_mbuf *m)
{
	const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
	const uint8_t *ip = f + 14, *icmp = ip + 40;
	size_t ilen;

	assert_int_equal(m->pkt_len, m->data_len);
	assert_true(m->data_len >= 14 + 40 + 32);
	assert_memory_equal(f, PEER_MAC, 6);
	assert_memory_equal(f + 6, t->mac, 6);
	assert_int_equal(rd16(f + 12), 0x86dd);
	ilen = rd16(ip + 4);
	assert_int_equal(m->data_len, 14 + 40 + ilen);
	assert_int_equal(ip[6], 58);
	assert_int_equal(ip[7], 255);
	assert_memory_equal(ip + 8, OUR_V6, 16);
	assert_memory_equal(ip + 24, PEER_V6, 16);
	assert_int_equal(icmp[0], 136);           /* NA */
	assert_int_equal(icmp[1], 0);
	assert_int_equal(icmp[4] & 0x60, 0x60);   /* S and O */
	assert_memory_equal(icmp + 8, OUR_V6, 16);
	assert_int_equal(ilen, 32);
	assert_int_equal(icmp[24], 2);            /* target LL address */
	assert_int_equal(icmp[25], 1);
	assert_memory_equal(icmp + 26, t->mac, 6);
	assert_true(ref_l4_ok(true, ip, icmp, ilen, 58));
	rte_pktmbuf_free(m);
}

/*
 * rx layout: the RX stage answers ARP / NS in place but sends nothing; the
 * reply waits on worker 0's ring, whatever RX queue it came from, and
 * leaves on TX queue 0 at worker 0's next poll, which does not count it
 * as a request. Another worker's poll sends nothing.
 */
static void arp_and_nd(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX };
	struct kms_pkt_flow fl;
	uint8_t frame[FRAME_MAX], group[16];
	struct kms_dp_stats io;
	struct rte_mbuf *m;
	size_t n;

	start(t, &o);
	/* the port has a usable unicast MAC */
	assert_int_equal(t->mac[0] & 1, 0);

	/* ARP who-has 192.0.2.1, broadcast, on RX queue 0 */
	put_arp(t, 0);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	/* the RX stage sent nothing itself */
	assert_int_equal(tx_pending(t), 0);
	assert_int_equal(io_stats(t).arp, 1);
	assert_int_equal(in_use(t), t->base + 1);
	/* worker 1 has nothing of it */
	assert_int_equal(kms_dp_worker_poll(t->dp, 1), 0);
	assert_int_equal(tx_pending(t), 0);
	/* worker 0 sends it on TX queue 0, and it is not a request */
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 0);
	assert_int_equal(tx_pending(t), 1);
	m = take_tx(t, 0);
	assert_non_null(m);
	check_arp_reply(t, m, false, 0);
	io = io_stats(t);
	assert_int_equal(io.arp, 1);
	assert_int_equal(io.nd, 0);
	assert_int_equal(io.rx, 1);
	assert_int_equal(io.tx, 1);
	assert_int_equal(io.requests, 0);
	assert_int_equal(io.ring_full, 0);
	assert_int_equal(eng_stats(t).requests, 0);
	assert_int_equal(in_use(t), t->base);

	/* the same with an 802.1Q tag, on RX queue 1 (the RX stage polls
	 * every queue): the tag is kept, the reply still leaves on TX 0 */
	n = arp_request(frame, sizeof(frame), true, 7);
	put_frame(t, 1, frame, n);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(tx_pending(t), 0);
	poll_workers(t);
	assert_int_equal(tx_pending(t), 1);
	m = take_tx(t, 0);
	assert_non_null(m);
	check_arp_reply(t, m, true, 7);
	assert_int_equal(io_stats(t).arp, 2);
	assert_int_equal(io_stats(t).tx, 2);

	/* ARP for another address: not for us, no reply */
	n = arp_request(frame, sizeof(frame), false, 0);
	frame[14 + 24 + 3] = 9;                   /* tpa 192.0.2.9 */
	put_frame(t, 0, frame, n);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	poll_workers(t);
	assert_int_equal(tx_pending(t), 0);
	assert_int_equal(io_stats(t).arp, 2);
	assert_int_equal(io_stats(t).drops[KMS_PKT_DROP_NOT_FOR_US], 1);
	assert_int_equal(in_use(t), t->base);

	/* NS for 2001:db8::1 to its solicited-node group -> NA, on RX 1 */
	memset(&fl, 0, sizeof(fl));
	fl.ipv6 = true;
	memcpy(fl.src_mac, PEER_MAC, 6);
	kms_pkt_ipv6_solicited_node(OUR_V6, group);
	kms_pkt_ipv6_mcast_mac(group, fl.dst_mac);
	memcpy(fl.src_ip, PEER_V6, 16);
	memcpy(fl.dst_ip, group, 16);
	n = kms_pkt_build_ns(&fl, OUR_V6, frame, sizeof(frame));
	assert_true(n > 0);
	put_frame(t, 1, frame, n);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(tx_pending(t), 0);
	assert_int_equal(kms_dp_worker_poll(t->dp, 1), 0);
	assert_int_equal(tx_pending(t), 0);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 0);
	assert_int_equal(tx_pending(t), 1);
	m = take_tx(t, 0);
	assert_non_null(m);
	check_na(t, m);
	io = io_stats(t);
	assert_int_equal(io.nd, 1);
	assert_int_equal(io.arp, 2);
	assert_int_equal(io.tx, 3);
	assert_int_equal(io.requests, 0);
	assert_int_equal(in_use(t), t->base);
}

/*
 * rx layout: ARP replies and requests in one burst. Worker 0 sends the
 * replies at once and answers its requests in the same poll (its return
 * counts the requests only); worker 1's requests leave on TX queue 1.
 * Worker 0's ring holds exactly what the RX stage queued for it.
 */
static void arp_with_requests(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX };
	const struct efx_party *a0, *b0, *a1, *b1;
	struct kms_pkt_flow fl0, fl1;
	struct efx_dep d0, d1;
	struct kms_dp_stats io;
	unsigned narp = 0, nrep = 0;
	struct rte_mbuf *m;

	start(t, &o);
	efx_pair_of_worker(&t->f, 2, 0, &a0, &b0);
	efx_pair_of_worker(&t->f, 2, 1, &a1, &b1);
	efx_dep_build(&t->f, &d0, a0, b0, &t->f.p[P_AS]);
	efx_dep_build(&t->f, &d1, a1, b1, &t->f.p[P_AS]);
	assert_int_equal(efx_owner(&t->f, &d0.req), 0);
	assert_int_equal(efx_owner(&t->f, &d1.req), 1);
	fl0 = flow_to_us(t, F_V4);
	fl1 = flow_to_us(t, F_V6);
	put_arp(t, 1);
	put_dgram(t, 1, &fl0, d0.req.b, d0.req.len);
	put_arp(t, 0);
	put_dgram(t, 0, &fl1, d1.req.b, d1.req.len);
	put_arp(t, 1);
	assert_int_equal(kms_dp_rx_poll(t->dp), 5);
	assert_int_equal(tx_pending(t), 0);
	io = io_stats(t);
	assert_int_equal(io.requests, 2);
	assert_int_equal(io.arp, 3);
	/* worker 1: its one request, on TX 1, no ARP */
	assert_int_equal(kms_dp_worker_poll(t->dp, 1), 1);
	assert_int_equal(tx_pending(t), 1);
	m = take_tx(t, 1);
	assert_non_null(m);
	check_reply(t, m, &fl1, &d1.rep);
	assert_int_equal(d1.rep.status, KMS_ST_OK);
	/* worker 0: one request and three ARP replies, all on TX 0 */
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	assert_int_equal(tx_pending(t), 4);
	assert_int_equal(rte_ring_count(t->tx[0]), 4);
	while ((m = take_tx(t, 0)) != NULL) {
		if (is_arp(m)) {
			check_arp_reply(t, m, false, 0);
			narp++;
		} else {
			check_reply(t, m, &fl0, &d0.rep);
			assert_int_equal(d0.rep.status, KMS_ST_OK);
			nrep++;
		}
	}
	assert_int_equal(narp, 3);
	assert_int_equal(nrep, 1);
	efx_dep_finish(&d0);
	efx_dep_finish(&d1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 0);
	assert_int_equal(tx_pending(t), 0);
	io = io_stats(t);
	assert_int_equal(io.rx, 5);
	assert_int_equal(io.tx, 5);
	assert_int_equal(io.requests, 2);
	assert_int_equal(io.engine_drops, 0);
	assert_int_equal(eng_stats(t).requests, 2);
	assert_int_equal(in_use(t), t->base);
}

/* rx layout: ARP replies share worker 0's ring with its requests. When it
 * is full they are counted (ring_full) and freed like requests. */
static void arp_ring_full(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX,
			  .ring_size = 4 };
	struct kms_dp_stats io;
	unsigned narp = 0;
	struct rte_mbuf *m;

	start(t, &o);
	for (unsigned i = 0; i < 6; i++)
		put_arp(t, 0);
	assert_int_equal(kms_dp_rx_poll(t->dp), 6);
	io = io_stats(t);
	assert_int_equal(io.arp, 6);
	assert_int_equal(io.ring_full, 2);
	assert_int_equal(in_use(t), t->base + 4);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 0);
	while ((m = take_tx(t, 0)) != NULL) {
		check_arp_reply(t, m, false, 0);
		narp++;
	}
	assert_int_equal(narp, 4);
	assert_int_equal(io_stats(t).tx, 4);
	assert_int_equal(in_use(t), t->base);
}

/* ================================================================== */
/* 2. Every drop class                                                 */

struct drop_case {
	const char *what;
	enum kms_pkt_verdict cls;
};

/* Build drop case @p i into a fresh mbuf. @return NULL past the end. */
static struct rte_mbuf *drop_frame(struct dpt *t, unsigned i,
				   struct drop_case *dc)
{
	static const uint8_t payload[] = "KM....not-a-real-request....";
	uint8_t frame[FRAME_MAX];
	struct kms_pkt_flow fl = flow_to_us(t, F_V4);
	struct rte_mbuf *m;
	uint8_t *ip = frame + 14, *udp = ip + 20;
	size_t n;

#define BUILD() (n = kms_pkt_build_udp(&fl, payload, sizeof(payload), frame, \
				       sizeof(frame)), assert_true(n > 0))
	switch (i) {
	case 0:
		*dc = (struct drop_case){ "UDP to another IPv4 address",
					  KMS_PKT_DROP_NOT_FOR_US };
		fl.dst_ip[3] = 99;
		BUILD();
		break;
	case 1:
		*dc = (struct drop_case){ "UDP to another MAC",
					  KMS_PKT_DROP_NOT_FOR_US };
		fl.dst_mac[5] ^= 0x55;
		BUILD();
		break;
	case 2:
		*dc = (struct drop_case){ "UDP to the broadcast MAC",
					  KMS_PKT_DROP_NOT_FOR_US };
		memcpy(fl.dst_mac, BCAST, 6);
		BUILD();
		break;
	case 3:
		*dc = (struct drop_case){ "UDP to another IPv6 address",
					  KMS_PKT_DROP_NOT_FOR_US };
		fl = flow_to_us(t, F_V6);
		fl.dst_ip[15] = 7;
		BUILD();
		break;
	case 4:
		*dc = (struct drop_case){ "IPv4 first fragment (MF)",
					  KMS_PKT_DROP_FRAGMENT };
		BUILD();
		ip[6] |= 0x20;
		ref_ipv4_fix(ip);
		break;
	case 5:
		*dc = (struct drop_case){ "IPv4 later fragment (offset)",
					  KMS_PKT_DROP_FRAGMENT };
		BUILD();
		wr16(ip + 6, 0x0010);
		ref_ipv4_fix(ip);
		break;
	case 6:
		*dc = (struct drop_case){ "IPv6 fragment header",
					  KMS_PKT_DROP_FRAGMENT };
		fl = flow_to_us(t, F_V6);
		BUILD();
		frame[14 + 6] = 44;
		break;
	case 7:
		*dc = (struct drop_case){ "bad UDP checksum",
					  KMS_PKT_DROP_BAD_CSUM };
		BUILD();
		udp[6] ^= 0x10;
		break;
	case 8:
		*dc = (struct drop_case){ "bad IPv4 header checksum",
					  KMS_PKT_DROP_BAD_CSUM };
		BUILD();
		ip[10] ^= 0x01;
		break;
	case 9:
		*dc = (struct drop_case){ "IPv6 UDP checksum zero",
					  KMS_PKT_DROP_BAD_CSUM };
		fl = flow_to_us(t, F_V6);
		BUILD();
		wr16(frame + 14 + 40 + 6, 0);
		break;
	case 10:
		*dc = (struct drop_case){ "bad IPv6 UDP checksum",
					  KMS_PKT_DROP_BAD_CSUM };
		fl = flow_to_us(t, F_V6);
		BUILD();
		frame[14 + 40 + 7] ^= 0x40;
		break;
	case 11:
		*dc = (struct drop_case){ "frame shorter than IPv4 total length",
					  KMS_PKT_DROP_BAD_LEN };
		BUILD();
		n -= 4;
		break;
	case 12:
		*dc = (struct drop_case){ "UDP length != IP payload",
					  KMS_PKT_DROP_BAD_LEN };
		BUILD();
		wr16(udp + 4, (uint16_t)(rd16(udp + 4) - 2));
		break;
	case 13:
		*dc = (struct drop_case){ "truncated Ethernet header",
					  KMS_PKT_DROP_BAD_LEN };
		BUILD();
		n = 20;
		break;
	case 14:
		*dc = (struct drop_case){ "TCP", KMS_PKT_DROP_NOT_UDP };
		BUILD();
		ip[9] = 6;
		ref_ipv4_fix(ip);
		break;
	case 15:
		*dc = (struct drop_case){ "ICMPv4", KMS_PKT_DROP_NOT_UDP };
		BUILD();
		ip[9] = 1;
		ref_ipv4_fix(ip);
		break;
	case 16:
		*dc = (struct drop_case){ "IPv6 hop-by-hop header",
					  KMS_PKT_DROP_NOT_UDP };
		fl = flow_to_us(t, F_V6);
		BUILD();
		frame[14 + 6] = 0;
		break;
	case 17:
		*dc = (struct drop_case){ "UDP to port 7431",
					  KMS_PKT_DROP_WRONG_PORT };
		fl.dst_port = KMS_PORT + 1;
		BUILD();
		break;
	case 18:
		*dc = (struct drop_case){ "IPv6 UDP to port 53",
					  KMS_PKT_DROP_WRONG_PORT };
		fl = flow_to_us(t, F_V6);
		fl.dst_port = 53;
		BUILD();
		break;
	case 19:
		*dc = (struct drop_case){ "LLDP ethertype", KMS_PKT_DROP_L2 };
		BUILD();
		wr16(frame + 12, 0x88cc);
		break;
	case 20:
		*dc = (struct drop_case){ "QinQ outer tag", KMS_PKT_DROP_L2 };
		fl.vlan = true;
		fl.vlan_tci = 3;
		BUILD();
		wr16(frame + 12, 0x88a8);
		break;
	case 21:
		*dc = (struct drop_case){ "802.3 length frame", KMS_PKT_DROP_L2 };
		BUILD();
		wr16(frame + 12, 0x0040);
		break;
	case 22: {
		/* The NIC said the IP checksum is bad (ol_flags): trusted. */
		*dc = (struct drop_case){ "RX_IP_CKSUM_BAD from the NIC",
					  KMS_PKT_DROP_BAD_CSUM };
		BUILD();
		m = mbuf_of(t, frame, n);
		m->ol_flags |= RTE_MBUF_F_RX_IP_CKSUM_BAD;
		return m;
	}
	case 23: {
		*dc = (struct drop_case){ "RX_L4_CKSUM_BAD from the NIC",
					  KMS_PKT_DROP_BAD_CSUM };
		BUILD();
		m = mbuf_of(t, frame, n);
		m->ol_flags |= RTE_MBUF_F_RX_L4_CKSUM_BAD;
		return m;
	}
	case 24: {
		/* A chained (multi-segment) frame: not handled, never leaked. */
		struct rte_mbuf *m2;
		char *p;

		*dc = (struct drop_case){ "two-segment mbuf",
					  KMS_PKT_DROP_BAD_LEN };
		BUILD();
		m = mbuf_of(t, frame, 40);
		m2 = rte_pktmbuf_alloc(t->mp);
		assert_non_null(m2);
		p = rte_pktmbuf_append(m2, (uint16_t)(n - 40));
		assert_non_null(p);
		memcpy(p, frame + 40, n - 40);
		assert_int_equal(rte_pktmbuf_chain(m, m2), 0);
		return m;
	}
	case 25:
		*dc = (struct drop_case){ "UDP from source port 0",
					  KMS_PKT_DROP_NOT_FOR_US };
		fl.src_port = 0;
		BUILD();
		break;
	case 26:
		*dc = (struct drop_case){ "UDP from a broadcast IPv4 source",
					  KMS_PKT_DROP_NOT_FOR_US };
		memset(fl.src_ip, 0xff, 4);
		BUILD();
		break;
	case 27:
		*dc = (struct drop_case){ "UDP from a group source MAC",
					  KMS_PKT_DROP_NOT_FOR_US };
		fl.src_mac[0] |= 1;
		BUILD();
		break;
	case 28:
		*dc = (struct drop_case){ "ARP reply (op 2) for us",
					  KMS_PKT_DROP_NOT_FOR_US };
		memcpy(fl.dst_mac, BCAST, 6);
		memcpy(fl.dst_ip, OUR_V4, 4);
		n = kms_pkt_build_arp_request(&fl, frame, sizeof(frame));
		assert_true(n > 0);
		wr16(frame + 14 + 6, 2);
		break;
	case 29:
		*dc = (struct drop_case){ "NS for another IPv6 address",
					  KMS_PKT_DROP_NOT_FOR_US };
		fl = flow_to_us(t, F_V6);
		{
			uint8_t other[16];

			memcpy(other, OUR_V6, 16);
			other[15] = 0x33;
			memcpy(fl.dst_ip, other, 16);
			n = kms_pkt_build_ns(&fl, other, frame, sizeof(frame));
			assert_true(n > 0);
		}
		break;
	default:
		return NULL;
	}
#undef BUILD
	return mbuf_of(t, frame, n);
}

static void drops_in(void **state, enum kms_dp_layout layout)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = layout };
	unsigned per_class[KMS_PKT_DROP__COUNT] = { 0 };
	struct drop_case dc;
	struct rte_mbuf *m;

	start(t, &o);
	for (unsigned i = 0; (m = drop_frame(t, i, &dc)) != NULL; i++) {
		struct kms_dp_stats a = io_stats(t), b;
		unsigned q = i % t->nrx;

		print_message("drop %2u: %-40s -> %s\n", i, dc.what,
			      kms_pkt_drop_name(dc.cls));
		put_mbuf(t, q, m);
		if (layout == KMS_DP_LAYOUT_RX) {
			assert_int_equal(kms_dp_rx_poll(t->dp), 1);
			poll_workers(t);
		} else {
			/* the worker that polls queue q classifies it */
			assert_int_equal(kms_dp_worker_poll(t->dp, q), 0);
			poll_workers(t);
		}
		b = io_stats(t);
		for (unsigned c = 0; c < KMS_PKT_DROP__COUNT; c++)
			assert_int_equal(b.drops[c] - a.drops[c],
					 c == (unsigned)dc.cls ? 1 : 0);
		assert_int_equal(b.rx - a.rx, 1);
		assert_int_equal(b.tx, a.tx);
		assert_int_equal(b.requests, a.requests);
		assert_int_equal(b.engine_drops, a.engine_drops);
		assert_int_equal(b.ring_full, a.ring_full);
		assert_int_equal(tx_pending(t), 0);
		assert_int_equal(in_use(t), t->base);
		per_class[dc.cls]++;
	}
	/* every class was shown */
	for (unsigned c = 0; c < KMS_PKT_DROP__COUNT; c++)
		assert_true(per_class[c] > 0);
	assert_int_equal(eng_stats(t).requests, 0);
}

static void drop_classes_rx(void **state)
{
	drops_in(state, KMS_DP_LAYOUT_RX);
}

static void drop_classes_rss(void **state)
{
	drops_in(state, KMS_DP_LAYOUT_RSS);
}

/* ================================================================== */
/* 3. DEPOSIT and RETRIEVE through frames                              */

/* Send @p req framed @p fr on RX queue @p q, run RX + workers, return the
 * reply. */
static void roundtrip(struct dpt *t, unsigned q, enum framing fr,
		      const struct efx_dgram *req, struct efx_reply *rep)
{
	struct kms_pkt_flow fl = flow_to_us(t, fr);
	unsigned owner = efx_owner(&t->f, req);
	unsigned got = 0;

	put_dgram(t, q, &fl, req->b, req->len);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	for (unsigned w = 0; w < t->cfg.nworkers; w++)
		got += kms_dp_worker_poll(t->dp, w);
	assert_int_equal(got, 1);
	/* the owner's TX queue carries it */
	expect_reply(t, owner, &fl, rep);
	assert_int_equal(rep->r.hdr.txid, (uint32_t)req->b[4] << 24 |
			 req->b[5] << 16 | req->b[6] << 8 | req->b[7]);
}

static void deposit_retrieve(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX };
	static const enum framing frs[] = { F_V4, F_V4_VLAN, F_V6, F_V6_VLAN };
	const struct efx_party *A, *B;
	struct efx_dep d[4];
	struct efx_ret r[4];
	struct kms_dp_stats io;
	struct kms_stats st;

	start(t, &o);
	A = &t->f.p[P_A];
	B = &t->f.p[P_B];
	for (unsigned i = 0; i < 4; i++) {
		efx_dep_build(&t->f, &d[i], A, B, &t->f.p[P_AS]);
		/* either RX queue: the RX stage polls both */
		roundtrip(t, i % t->nrx, frs[i], &d[i].req, &d[i].rep);
		assert_int_equal(d[i].rep.status, KMS_ST_OK);
		assert_int_equal(d[i].rep.r.hdr.type, KMS_T_DEPOSIT_RESP);
		efx_dep_finish(&d[i]);  /* opens Ea(K) as A */
		assert_int_equal(in_use(t), t->base);
	}
	/* four deposits, four keys */
	assert_memory_not_equal(d[0].k, d[1].k, KMS_KEY_LEN);
	assert_memory_not_equal(d[1].k, d[2].k, KMS_KEY_LEN);
	t->f.now += 5000;
	for (unsigned i = 0; i < 4; i++) {
		efx_ret_build(&t->f, &r[i], &d[i], B);
		roundtrip(t, (i + 1) % t->nrx, frs[(i + 1) % 4], &r[i].req,
			  &r[i].rep);
		assert_int_equal(r[i].rep.status, KMS_ST_OK);
		assert_int_equal(r[i].rep.r.hdr.type, KMS_T_RETRIEVE_RESP);
		efx_ret_finish(&r[i], &d[i], B);
		assert_memory_equal(r[i].k, d[i].k, KMS_KEY_LEN);
	}
	io = io_stats(t);
	assert_int_equal(io.rx, 8);
	assert_int_equal(io.requests, 8);
	assert_int_equal(io.tx, 8);
	assert_int_equal(io.engine_drops, 0);
	assert_int_equal(io.ring_full, 0);
	assert_int_equal(io.tx_full, 0);
	st = eng_stats(t);
	assert_int_equal(st.requests, 8);
	assert_int_equal(st.by_status[KMS_RK_DEPOSIT][KMS_ST_OK], 4);
	assert_int_equal(st.by_status[KMS_RK_RETRIEVE][KMS_ST_OK], 4);
	assert_int_equal(efx_counts(&t->f).deposits, 4);
	assert_int_equal(in_use(t), t->base);
}

/* An IPv4 request with header options: the reply drops them (IHL 5), the
 * UDP header moves, and everything is still consistent. */
static void ipv4_options_reply(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX };
	struct kms_pkt_flow fl;
	struct efx_dep d;
	uint8_t frame[FRAME_MAX], opt[FRAME_MAX];
	size_t n;

	start(t, &o);
	efx_dep_build(&t->f, &d, &t->f.p[P_C], &t->f.p[P_D], &t->f.p[P_AS]);
	fl = flow_to_us(t, F_V4);
	n = kms_pkt_build_udp(&fl, d.req.b, d.req.len, frame, sizeof(frame));
	assert_true(n > 0);
	/* insert 8 bytes of options: 4 x NOP + EOL padding */
	memcpy(opt, frame, 34);
	memset(opt + 34, 1, 7);
	opt[41] = 0;
	memcpy(opt + 42, frame + 34, n - 34);
	opt[14] = 0x47;
	wr16(opt + 16, (uint16_t)(rd16(opt + 16) + 8));
	ref_ipv4_fix(opt + 14);
	put_frame(t, 0, opt, n + 8);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	expect_reply(t, 0, &fl, &d.rep);
	assert_int_equal(d.rep.status, KMS_ST_OK);
	efx_dep_finish(&d);
	assert_int_equal(in_use(t), t->base);
}

/* ================================================================== */
/* 4. Not KMS and malformed KMS                                        */

static void engine_drop_and_error(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX };
	static const uint8_t garbage[] = "GET / HTTP/1.0\r\n\r\n this is not KMS";
	struct kms_pkt_flow fl;
	struct kms_dp_stats io;
	struct efx_dep d;
	struct efx_dgram hdr_only;
	uint16_t want;

	start(t, &o);
	/* garbage: the engine answers nothing */
	fl = flow_to_us(t, F_V4);
	put_dgram(t, 0, &fl, garbage, sizeof(garbage));
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	io = io_stats(t);
	assert_int_equal(io.engine_drops, 1);
	assert_int_equal(io.requests, 1);
	assert_int_equal(io.tx, 0);
	assert_int_equal(tx_pending(t), 0);
	assert_int_equal(in_use(t), t->base);

	/* a KMS header with a short body: ERROR MALFORMED */
	want = efx_dep_broken(&t->f, &d, 7, NULL);
	assert_int_equal(want, KMS_ST_MALFORMED);
	fl = flow_to_us(t, F_V4_VLAN);
	put_dgram(t, 0, &fl, d.req.b, d.req.len);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	expect_reply(t, 0, &fl, &d.rep);
	assert_int_equal(d.rep.r.hdr.type, KMS_T_ERROR);
	assert_int_equal(d.rep.status, KMS_ST_MALFORMED);
	assert_int_equal(d.rep.r.hdr.txid, (uint32_t)d.req.b[4] << 24 |
			 d.req.b[5] << 16 | d.req.b[6] << 8 | d.req.b[7]);

	/* a bare 12-byte header (body_len 0) over IPv6: the ERROR reply is
	 * longer than the request, built in the same mbuf */
	efx_dep_build(&t->f, &d, &t->f.p[P_A], &t->f.p[P_B], &t->f.p[P_AS]);
	hdr_only = d.req;
	hdr_only.len = KMS_HDR_LEN;
	efx_fix_body_len(&hdr_only);
	fl = flow_to_us(t, F_V6);
	put_dgram(t, 0, &fl, hdr_only.b, hdr_only.len);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	expect_reply(t, 0, &fl, &d.rep);
	assert_int_equal(d.rep.r.hdr.type, KMS_T_ERROR);
	assert_int_equal(d.rep.status, KMS_ST_MALFORMED);
	assert_true(d.rep.len > KMS_HDR_LEN);

	io = io_stats(t);
	assert_int_equal(io.engine_drops, 1);
	assert_int_equal(io.tx, 2);
	assert_int_equal(in_use(t), t->base);
}

/* Where the UDP payload of a reply frame starts (any framing). */
static size_t reply_payload_off(const struct rte_mbuf *m)
{
	const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
	size_t l2 = rd16(f + 12) == 0x8100 ? 18 : 14;

	if (rd16(f + l2 - 2) == 0x86dd)
		return l2 + 40 + 8;
	return l2 + (size_t)(f[l2] & 0x0f) * 4 + 8;
}

static void drain_replies(struct dpt *t, unsigned q, unsigned expect,
			  uint8_t type)
{
	unsigned n = 0;

	for (struct rte_mbuf *m; (m = take_tx(t, q)) != NULL; n++) {
		const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
		size_t off = reply_payload_off(m);
		struct kms_resp r;

		assert_true(m->data_len > off);
		assert_int_equal(kms_resp_parse(f + off, m->data_len - off, &r),
				 KMS_OK);
		assert_int_equal(r.hdr.type, type);
		rte_pktmbuf_free(m);
	}
	assert_int_equal(n, expect);
}

/* Everything on TX queue @p q: ARP replies (checked, counted in *narp)
 * and KMS replies of @p type (0: of any type). @return the KMS replies. */
static unsigned drain_tx(struct dpt *t, unsigned q, uint8_t type,
			 unsigned *narp)
{
	unsigned n = 0;

	for (struct rte_mbuf *m; (m = take_tx(t, q)) != NULL;) {
		const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
		size_t off;
		struct kms_resp r;

		if (is_arp(m)) {
			check_arp_reply(t, m, false, 0);
			(*narp)++;
			continue;
		}
		off = reply_payload_off(m);
		assert_true(m->data_len > off);
		assert_int_equal(kms_resp_parse(f + off, m->data_len - off, &r),
				 KMS_OK);
		if (type)
			assert_int_equal(r.hdr.type, type);
		rte_pktmbuf_free(m);
		n++;
	}
	return n;
}

/* Short requests arrive padded to the 60-byte Ethernet minimum (and
 * possibly with more trailer bytes): the padding is not payload, and the
 * reply is framed from the UDP length. */
static void padded_request(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX };
	struct kms_pkt_flow fl;
	struct efx_dep d;
	struct efx_dgram hdr_only;
	uint8_t frame[FRAME_MAX];
	size_t n;

	start(t, &o);
	efx_dep_build(&t->f, &d, &t->f.p[P_A], &t->f.p[P_B], &t->f.p[P_AS]);
	hdr_only = d.req;
	hdr_only.len = KMS_HDR_LEN;
	efx_fix_body_len(&hdr_only);
	fl = flow_to_us(t, F_V4);
	n = kms_pkt_build_udp(&fl, hdr_only.b, hdr_only.len, frame, sizeof(frame));
	assert_int_equal(n, 54);
	memset(frame + n, 0, 60 + 4 - n);        /* padding + an FCS */
	put_frame(t, 0, frame, 64);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	expect_reply(t, 0, &fl, &d.rep);
	assert_int_equal(d.rep.r.hdr.type, KMS_T_ERROR);
	assert_int_equal(d.rep.status, KMS_ST_MALFORMED);

	/* a whole DEPOSIT with 10 trailer bytes: answered OK */
	efx_dep_build(&t->f, &d, &t->f.p[P_A], &t->f.p[P_B], &t->f.p[P_AS]);
	fl = flow_to_us(t, F_V6_VLAN);
	n = kms_pkt_build_udp(&fl, d.req.b, d.req.len, frame, sizeof(frame));
	memset(frame + n, 0xee, 10);
	put_frame(t, 0, frame, n + 10);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	expect_reply(t, 0, &fl, &d.rep);
	assert_int_equal(d.rep.status, KMS_ST_OK);
	efx_dep_finish(&d);
	assert_int_equal(in_use(t), t->base);
}

/* The NIC's RX checksum verdicts in ol_flags are honoured: GOOD skips the
 * software check (a frame whose UDP checksum field is wrong is answered),
 * but an IPv6 UDP checksum of zero stays invalid whatever the NIC says. */
static void nic_checksum_flags(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX };
	struct kms_pkt_flow fl;
	struct efx_dep d;
	uint8_t frame[FRAME_MAX];
	struct rte_mbuf *m;
	size_t n;

	start(t, &o);
	efx_dep_build(&t->f, &d, &t->f.p[P_A], &t->f.p[P_B], &t->f.p[P_AS]);
	fl = flow_to_us(t, F_V4);
	n = kms_pkt_build_udp(&fl, d.req.b, d.req.len, frame, sizeof(frame));
	frame[14 + 20 + 6] ^= 0x5a;              /* UDP checksum now wrong */
	m = mbuf_of(t, frame, n);
	m->ol_flags |= RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD;
	put_mbuf(t, 0, m);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	/* the reply's own checksum is computed, not copied, and no RX flag
	 * leaks into the TX offload flags */
	m = take_tx(t, 0);
	assert_non_null(m);
	assert_int_equal(m->ol_flags & (RTE_MBUF_F_RX_IP_CKSUM_MASK |
					RTE_MBUF_F_RX_L4_CKSUM_MASK), 0);
	check_reply(t, m, &fl, &d.rep);
	assert_int_equal(d.rep.status, KMS_ST_OK);
	efx_dep_finish(&d);

	efx_dep_build(&t->f, &d, &t->f.p[P_A], &t->f.p[P_B], &t->f.p[P_AS]);
	fl = flow_to_us(t, F_V6);
	n = kms_pkt_build_udp(&fl, d.req.b, d.req.len, frame, sizeof(frame));
	wr16(frame + 14 + 40 + 6, 0);
	m = mbuf_of(t, frame, n);
	m->ol_flags |= RTE_MBUF_F_RX_L4_CKSUM_GOOD;
	put_mbuf(t, 0, m);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 0);
	assert_int_equal(io_stats(t).drops[KMS_PKT_DROP_BAD_CSUM], 1);
	assert_int_equal(tx_pending(t), 0);
	assert_int_equal(in_use(t), t->base);
}

/* TX takes fewer than the worker offers: the rest is counted (tx_full)
 * and freed. */
static void tx_full_counted(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX,
			  .tx_ring_size = 4 };
	static struct efx_dep d[10];
	struct kms_pkt_flow fl;
	struct kms_dp_stats io;

	start(t, &o);
	efx_dep_build_pairs(&t->f, d, NULL, 10, &t->f.p[P_AS]);
	for (unsigned i = 0; i < 10; i++) {
		fl = flow_to_us(t, F_V4);
		put_dgram(t, 0, &fl, d[i].req.b, d[i].req.len);
	}
	assert_int_equal(kms_dp_rx_poll(t->dp), 10);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 10);
	io = io_stats(t);
	assert_int_equal(io.tx, 4);
	assert_int_equal(io.tx_full, 6);
	assert_int_equal(rte_ring_count(t->tx[0]), 4);
	assert_int_equal(in_use(t), t->base + 4);
	drain_replies(t, 0, 4, KMS_T_DEPOSIT_RESP);
	assert_int_equal(in_use(t), t->base);
}

/* ================================================================== */
/* 5. Ring overflow                                                    */

static void ring_overflow_run(void **state, bool exact)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX,
			  .ring_size = 16, .batch = 32 };
	static struct efx_dep d[64];
	struct kms_pkt_flow fl;
	struct kms_dp_stats io;
	unsigned replies = 0, polled;

	start(t, &o);
	efx_dep_build_pairs(&t->f, d, NULL, 64, &t->f.p[P_AS]);
	for (unsigned i = 0; i < 64; i++) {
		fl = flow_to_us(t, F_V4);
		put_dgram(t, 0, &fl, d[i].req.b, d[i].req.len);
	}
	assert_int_equal(in_use(t), t->base + 64);
	assert_int_equal(kms_dp_rx_poll(t->dp), DP_BURST);
	assert_int_equal(kms_dp_rx_poll(t->dp), DP_BURST);
	assert_int_equal(kms_dp_rx_poll(t->dp), 0);
	io = io_stats(t);
	assert_int_equal(io.rx, 64);
	assert_int_equal(io.requests, 64);
	print_message("ring_size 16: ring_full %" PRIu64 ", queued %u\n",
		      io.ring_full, in_use(t) - t->base);
	/* what did not fit was freed at once: only the ring's content is
	 * still held */
	assert_true(io.ring_full > 0 && io.ring_full < 64);
	assert_int_equal(in_use(t) - t->base, 64 - io.ring_full);
	/* drain the worker: the queued ones are all answered */
	while ((polled = kms_dp_worker_poll(t->dp, 0)) != 0)
		replies += polled;
	assert_int_equal(replies, 64 - io.ring_full);
	drain_replies(t, 0, replies, KMS_T_DEPOSIT_RESP);
	assert_int_equal(io_stats(t).tx, replies);
	assert_int_equal(in_use(t), t->base);
	if (!exact)
		return;
	/* a ring of ring_size 16 holds 16 requests: 64 - 16 overflow */
	assert_int_equal(io.ring_full, 64 - 16);
	assert_int_equal(replies, 16);
}

/* Overflow is counted and leaks nothing. */
static void ring_overflow(void **state)
{
	ring_overflow_run(state, false);
}

/* ... and a worker ring holds exactly cfg.ring_size requests. */
static void ring_overflow_exact(void **state)
{
	ring_overflow_run(state, true);
}

/* ================================================================== */
/* 6. RSS layout: forwarding to the owner keeps replay windows whole   */

static void rss_forwarding(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RSS };
	const struct efx_party *a, *b;
	struct kms_pkt_flow fl;
	struct kms_dp_stats io;
	struct efx_dep d, rp;
	struct efx_reply rep;

	start(t, &o);
	for (unsigned owner = 0; owner < 2; owner++) {
		unsigned other = 1 - owner;
		struct kms_dp_stats before = io_stats(t);

		/* a pair owned by @owner, by the hash kms_engine_worker_for
		 * uses (checked with a kms_hasher) */
		efx_pair_of_worker(&t->f, 2, owner, &a, &b);
		efx_dep_build(&t->f, &d, a, b, &t->f.p[P_AS]);
		assert_int_equal(kms_engine_worker_for(t->f.eng, t->f.hasher,
						       d.req.b, d.req.len),
				 owner);

		/* injected on the other worker's queue: forwarded */
		fl = flow_to_us(t, F_V4);
		put_dgram(t, other, &fl, d.req.b, d.req.len);
		assert_int_equal(kms_dp_worker_poll(t->dp, other), 0);
		io = io_stats(t);
		assert_int_equal(io.forwarded - before.forwarded, 1);
		assert_int_equal(tx_pending(t), 0);
		/* ... and answered by its owner, on the owner's TX queue */
		assert_int_equal(kms_dp_worker_poll(t->dp, owner), 1);
		expect_reply(t, owner, &fl, &d.rep);
		assert_int_equal(d.rep.status, KMS_ST_OK);
		efx_dep_finish(&d);

		/* the replay, on the owner's own queue: REPLAY */
		fl = flow_to_us(t, F_V6);
		put_dgram(t, owner, &fl, d.req.b, d.req.len);
		assert_int_equal(kms_dp_worker_poll(t->dp, owner), 1);
		expect_reply(t, owner, &fl, &rep);
		assert_int_equal(rep.status, KMS_ST_REPLAY);

		/* a fresh one on the owner's queue, its replay on the other
		 * queue: forwarded, REPLAY */
		efx_dep_build(&t->f, &rp, a, b, &t->f.p[P_AS]);
		fl = flow_to_us(t, F_V4);
		put_dgram(t, owner, &fl, rp.req.b, rp.req.len);
		assert_int_equal(kms_dp_worker_poll(t->dp, owner), 1);
		expect_reply(t, owner, &fl, &rp.rep);
		assert_int_equal(rp.rep.status, KMS_ST_OK);
		fl = flow_to_us(t, F_V4_VLAN);
		put_dgram(t, other, &fl, rp.req.b, rp.req.len);
		assert_int_equal(kms_dp_worker_poll(t->dp, other), 0);
		assert_int_equal(kms_dp_worker_poll(t->dp, owner), 1);
		expect_reply(t, owner, &fl, &rep);
		assert_int_equal(rep.status, KMS_ST_REPLAY);

		io = io_stats(t);
		assert_int_equal(io.forwarded - before.forwarded, 2);
		assert_int_equal(io.requests - before.requests, 4);
		assert_int_equal(in_use(t), t->base);
	}
	/* ARP on a worker's queue is answered on that worker's TX queue */
	{
		uint8_t frame[64];
		size_t n;

		memset(&fl, 0, sizeof(fl));
		memcpy(fl.src_mac, PEER_MAC, 6);
		memcpy(fl.dst_mac, BCAST, 6);
		memcpy(fl.src_ip, PEER_V4, 4);
		memcpy(fl.dst_ip, OUR_V4, 4);
		n = kms_pkt_build_arp_request(&fl, frame, sizeof(frame));
		put_frame(t, 1, frame, n);
		assert_int_equal(kms_dp_worker_poll(t->dp, 1), 0);
		assert_int_equal(tx_pending(t), 1);
		check_arp_reply(t, take_tx(t, 1), false, 0);
		assert_int_equal(io_stats(t).arp, 1);
	}
	assert_int_equal(in_use(t), t->base);
}

/* ================================================================== */
/* 7. Batches                                                          */

static void batch_rx_layout(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX,
			  .batch = 32, .ring_size = 64 };
	static struct efx_dep d[40];
	struct kms_pkt_flow fl;
	struct kms_stats st;

	start(t, &o);
	efx_dep_build_pairs(&t->f, d, NULL, 40, &t->f.p[P_AS]);
	for (unsigned i = 0; i < 40; i++) {
		fl = flow_to_us(t, F_V4);
		put_dgram(t, 0, &fl, d[i].req.b, d[i].req.len);
	}
	/* the RX stage takes bursts of 32: two polls queue all 40 */
	assert_int_equal(kms_dp_rx_poll(t->dp), DP_BURST);
	assert_int_equal(kms_dp_rx_poll(t->dp), 40 - DP_BURST);
	assert_int_equal(io_stats(t).ring_full, 0);
	/* one worker poll takes a whole batch, the next the rest */
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 32);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 8);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 0);
	st = eng_stats(t);
	assert_int_equal(st.requests, 40);
	assert_int_equal(st.batches, 2);
	assert_int_equal(st.commits, 2);
	assert_int_equal(st.by_status[KMS_RK_DEPOSIT][KMS_ST_OK], 40);
	drain_replies(t, 0, 40, KMS_T_DEPOSIT_RESP);
	assert_int_equal(io_stats(t).tx, 40);
	assert_int_equal(in_use(t), t->base);
}

/* RSS, one worker, batch 8 < burst 32: the surplus of a burst waits on
 * the worker's own ring (not forwarded, not dropped). */
static void batch_rss_surplus(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RSS,
			  .batch = 8, .ring_size = 64 };
	static struct efx_dep d[20];
	struct kms_pkt_flow fl;
	struct kms_dp_stats io;

	start(t, &o);
	efx_dep_build_pairs(&t->f, d, NULL, 20, &t->f.p[P_AS]);
	for (unsigned i = 0; i < 20; i++) {
		fl = flow_to_us(t, F_V4);
		put_dgram(t, 0, &fl, d[i].req.b, d[i].req.len);
	}
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 8);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 8);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 4);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 0);
	io = io_stats(t);
	assert_int_equal(io.requests, 20);
	assert_int_equal(io.forwarded, 0);
	assert_int_equal(io.ring_full, 0);
	assert_int_equal(io.tx, 20);
	assert_int_equal(eng_stats(t).batches, 3);
	drain_replies(t, 0, 20, KMS_T_DEPOSIT_RESP);
	assert_int_equal(in_use(t), t->base);
}

/* ================================================================== */
/* 8. Shutdown                                                         */

/* kms_dp_destroy frees what is still queued in the worker rings. */
static void destroy_frees_queued(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX,
			  .own_mp = true };
	static struct efx_dep d[10];
	struct kms_pkt_flow fl;

	start(t, &o);
	efx_dep_build_pairs(&t->f, d, NULL, 10, &t->f.p[P_AS]);
	for (unsigned i = 0; i < 10; i++) {
		fl = flow_to_us(t, F_V4);
		put_dgram(t, i % 2, &fl, d[i].req.b, d[i].req.len);
	}
	/* and an ARP reply waiting for worker 0 */
	put_arp(t, 1);
	assert_int_equal(kms_dp_rx_poll(t->dp), 11);
	assert_int_equal(io_stats(t).requests, 10);
	assert_int_equal(io_stats(t).arp, 1);
	assert_int_equal(io_stats(t).ring_full, 0);
	assert_int_equal(in_use(t), t->base + 11);
	kms_dp_destroy(t->dp);
	t->dp = NULL;
	assert_int_equal(rte_mempool_in_use_count(t->own_mp), t->base);
	assert_int_equal(tx_pending(t), 0);
	/* the port is closed and gone */
	assert_false(rte_eth_dev_is_valid_port((uint16_t)t->port));
}

/* kms_dp_run with *stop already set: the workers start on their lcores
 * and answer what the RX stage had queued before kms_dp_run returns,
 * either in their poll loop (they may poll before the main lcore raises
 * rx_done) or in the shutdown drain (counted as drained). */
static void run_drains_rings(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX,
			  .no_worker_init = true };
	static struct efx_dep d[12];
	volatile sig_atomic_t stop = 1;
	struct kms_pkt_flow fl;
	struct kms_dp_stats io;
	unsigned got = 0, narp = 0;

	start(t, &o);
	efx_dep_build_pairs(&t->f, d, NULL, 12, &t->f.p[P_AS]);
	for (unsigned i = 0; i < 12; i++) {
		fl = flow_to_us(t, F_V4);
		put_dgram(t, i % 2, &fl, d[i].req.b, d[i].req.len);
	}
	put_arp(t, 1);                          /* queued for worker 0 */
	assert_int_equal(kms_dp_rx_poll(t->dp), 13);
	assert_int_equal(in_use(t), t->base + 13);
	assert_int_equal(kms_dp_run(t->dp, &stop), KMS_OK);
	io = io_stats(t);
	print_message("drained %" PRIu64 " of 12\n", io.drained);
	assert_true(io.drained <= 12);
	assert_int_equal(io.tx, 13);
	assert_int_equal(io.tx_full, 0);
	for (unsigned q = 0; q < 2; q++)
		got += drain_tx(t, q, KMS_T_DEPOSIT_RESP, &narp);
	assert_int_equal(got, 12);
	assert_int_equal(narp, 1);
	assert_int_equal(eng_stats(t).by_status[KMS_RK_DEPOSIT][KMS_ST_OK], 12);
	assert_int_equal(in_use(t), t->base);
}

/* The shutdown drain answers everything queued even when ARP replies come
 * first in worker 0's ring: a dequeue of replies only (no request) is not
 * an empty ring. rx layout, one worker, batches of 2: 30 ARP replies, then
 * 4 requests, queued before kms_dp_run (stopped at once) starts. */
static void run_drains_after_arps(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX,
			  .batch = 2, .ring_size = 64, .no_worker_init = true };
	static struct efx_dep d[4];
	volatile sig_atomic_t stop = 1;
	struct kms_pkt_flow fl;
	struct kms_dp_stats io;
	unsigned narp = 0, got;

	start(t, &o);
	efx_dep_build_pairs(&t->f, d, NULL, 4, &t->f.p[P_AS]);
	for (unsigned i = 0; i < 30; i++)
		put_arp(t, 0);
	for (unsigned i = 0; i < 4; i++) {
		fl = flow_to_us(t, F_V4);
		put_dgram(t, 0, &fl, d[i].req.b, d[i].req.len);
	}
	assert_int_equal(kms_dp_rx_poll(t->dp), DP_BURST);
	assert_int_equal(kms_dp_rx_poll(t->dp), 34 - DP_BURST);
	assert_int_equal(io_stats(t).ring_full, 0);
	assert_int_equal(in_use(t), t->base + 34);
	assert_int_equal(kms_dp_run(t->dp, &stop), KMS_OK);
	io = io_stats(t);
	print_message("tx %" PRIu64 " of 34 (30 ARP + 4 requests), drained %"
		      PRIu64 ", %u still held\n", io.tx, io.drained,
		      in_use(t) - t->base - tx_pending(t));
	got = drain_tx(t, 0, KMS_T_DEPOSIT_RESP, &narp);
	/* the four requests were answered before kms_dp_run returned */
	assert_int_equal(got, 4);
	assert_int_equal(narp, 30);
	assert_int_equal(io.tx, 34);
	assert_int_equal(in_use(t), t->base);
}

struct stopper {
	struct dpt *t;
	unsigned want;
	volatile sig_atomic_t *stop;
	int timed_out;
};

static void *stopper_main(void *arg)
{
	struct stopper *s = arg;
	struct timespec ts = { 0, 2 * 1000 * 1000 };

	for (unsigned i = 0; i < 15000; i++) {  /* 30 s */
		if (tx_pending(s->t) >= s->want) {
			*s->stop = 1;
			return NULL;
		}
		nanosleep(&ts, NULL);
	}
	s->timed_out = 1;
	*s->stop = 1;
	return NULL;
}

struct feeder;
struct race_stop {
	struct feeder *fd;
	unsigned after;                 /* replies freed by the feeder */
	volatile sig_atomic_t *stop;
	int timed_out;
};

static unsigned feeder_freed(const struct feeder *fd);

static void *race_stop_main(void *arg)
{
	struct race_stop *rs = arg;

	for (unsigned i = 0; i < 30000; i++) {  /* 30 s */
		if (feeder_freed(rs->fd) >= rs->after) {
			*rs->stop = 1;
			return NULL;
		}
		usleep(1000);
	}
	rs->timed_out = 1;
	*rs->stop = 1;
	return NULL;
}

/* kms_dp_run with the workers on EAL lcores, stopped from another thread
 * once every request is answered. */
static void run_and_stop(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX,
			  .no_worker_init = true };
	static struct efx_dep d[50];
	volatile sig_atomic_t stop = 0;
	struct stopper s = { .t = t, .want = 51, .stop = &stop };
	struct kms_pkt_flow fl;
	struct kms_dp_stats io;
	unsigned got = 0, narp = 0;
	pthread_t th;

	start(t, &o);
	efx_dep_build_pairs(&t->f, d, NULL, 50, &t->f.p[P_AS]);
	for (unsigned i = 0; i < 50; i++) {
		fl = flow_to_us(t, i % 3 == 0 ? F_V6 : F_V4);
		put_dgram(t, i % 2, &fl, d[i].req.b, d[i].req.len);
	}
	put_arp(t, 1);
	assert_int_equal(pthread_create(&th, NULL, stopper_main, &s), 0);
	assert_int_equal(kms_dp_run(t->dp, &stop), KMS_OK);
	pthread_join(th, NULL);
	assert_false(s.timed_out);
	io = io_stats(t);
	assert_int_equal(io.rx, 51);
	assert_int_equal(io.requests, 50);
	assert_int_equal(io.arp, 1);
	assert_int_equal(io.tx, 51);
	/* the ARP reply left on worker 0's TX queue */
	got += drain_tx(t, 0, KMS_T_DEPOSIT_RESP, &narp);
	assert_int_equal(narp, 1);
	got += drain_tx(t, 1, KMS_T_DEPOSIT_RESP, &narp);
	assert_int_equal(narp, 1);
	assert_int_equal(got, 50);
	assert_int_equal(eng_stats(t).by_status[KMS_RK_DEPOSIT][KMS_ST_OK], 50);
	assert_int_equal(in_use(t), t->base);
}

/* The same in the rss layout: each worker polls its own RX queue,
 * forwards what another owns, answers ARP on its own TX queue; the main
 * lcore only waits. */
static void run_and_stop_rss(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RSS,
			  .no_worker_init = true };
	static struct efx_dep d[50];
	volatile sig_atomic_t stop = 0;
	struct stopper s = { .t = t, .want = 52, .stop = &stop };
	struct kms_pkt_flow fl;
	struct kms_dp_stats io;
	unsigned got = 0, narp = 0;
	pthread_t th;

	start(t, &o);
	efx_dep_build_pairs(&t->f, d, NULL, 50, &t->f.p[P_AS]);
	for (unsigned i = 0; i < 50; i++) {
		fl = flow_to_us(t, i % 3 == 0 ? F_V6 : F_V4);
		put_dgram(t, i % 2, &fl, d[i].req.b, d[i].req.len);
	}
	put_arp(t, 0);
	put_arp(t, 1);
	assert_int_equal(pthread_create(&th, NULL, stopper_main, &s), 0);
	assert_int_equal(kms_dp_run(t->dp, &stop), KMS_OK);
	pthread_join(th, NULL);
	assert_false(s.timed_out);
	io = io_stats(t);
	assert_int_equal(io.rx, 52);
	assert_int_equal(io.requests, 50);
	assert_int_equal(io.arp, 2);
	assert_int_equal(io.tx, 52);
	assert_true(io.forwarded > 0);
	/* one ARP reply on each worker's TX queue */
	got += drain_tx(t, 0, KMS_T_DEPOSIT_RESP, &narp);
	assert_int_equal(narp, 1);
	got += drain_tx(t, 1, KMS_T_DEPOSIT_RESP, &narp);
	assert_int_equal(narp, 2);
	assert_int_equal(got, 50);
	assert_int_equal(eng_stats(t).by_status[KMS_RK_DEPOSIT][KMS_ST_OK], 50);
	assert_int_equal(in_use(t), t->base);
}

/*
 * Stopped while frames are still arriving, several times over: whatever
 * the dataplane read off its RX queues is answered before kms_dp_run
 * returns; nothing is left in a worker ring (in the rss layout a worker
 * may forward to a worker that is already draining). Accounting:
 * read = requests = tx, and the mempool holds exactly the frames still on
 * the port's RX rings plus the replies on its TX rings.
 */
static void stop_midway(void **state, enum kms_dp_layout layout)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = layout,
			  .no_worker_init = true, .ring_size = 512 };
	static struct efx_dep d[64];
	enum { ROUNDS = 5, FRAMES = 384 };

	for (unsigned round = 0; round < ROUNDS; round++) {
		volatile sig_atomic_t stop = 0;
		struct stopper s = { .t = t, .want = 8 + 40 * round,
				     .stop = &stop };
		struct kms_pkt_flow fl;
		struct kms_dp_stats io;
		unsigned left = 0, pending, narp = 0, got = 0;
		pthread_t th;

		if (round)
			dp_close(t);
		start(t, &o);
		if (!round)
			efx_dep_build_pairs(&t->f, d, NULL, 64, &t->f.p[P_AS]);
		/* the later copies are replays: answered all the same */
		for (unsigned i = 0; i < FRAMES; i++) {
			fl = flow_to_us(t, F_V4);
			put_dgram(t, i % 2, &fl, d[i % 64].req.b,
				  d[i % 64].req.len);
		}
		assert_int_equal(pthread_create(&th, NULL, stopper_main, &s), 0);
		assert_int_equal(kms_dp_run(t->dp, &stop), KMS_OK);
		pthread_join(th, NULL);
		assert_false(s.timed_out);
		io = io_stats(t);
		for (unsigned q = 0; q < t->nrx; q++)
			left += rte_ring_count(t->rx[q]);
		pending = tx_pending(t);
		print_message("%s round %u: read %" PRIu64 " of %u, forwarded %"
			      PRIu64 ", drained %" PRIu64 ", tx %" PRIu64
			      ", in use %u over base\n",
			      layout == KMS_DP_LAYOUT_RSS ? "rss" : "rx", round,
			      io.rx, FRAMES, io.forwarded, io.drained, io.tx,
			      in_use(t) - t->base);
		assert_int_equal(io.rx, FRAMES - left);
		assert_int_equal(io.requests, io.rx);
		assert_int_equal(io.ring_full, 0);
		assert_int_equal(io.tx_full, 0);
		assert_int_equal(io.engine_drops, 0);
		assert_int_equal(io.tx, io.requests);
		assert_int_equal(pending, io.tx);
		/* nothing held anywhere else (a worker ring) */
		assert_int_equal(in_use(t), t->base + left + pending);
		for (unsigned q = 0; q < t->ntx; q++)
			got += drain_tx(t, q, 0, &narp);
		assert_int_equal(got, pending);
	}
}

/*
 * The shutdown race of the rss layout, provoked: traffic keeps arriving
 * on both RX queues, every frame on a queue owned by the other worker (so
 * each worker forwards all it reads), replies are taken off the TX rings
 * as they come, and the run is stopped at some point of it. The I/O
 * benchmark mode (no engine) keeps the workers' iterations short, so that
 * a forward can land while its target is already draining. After the run
 * no frame may be held anywhere but on the port's rings: a frame left in
 * a worker ring is one kms_dp_run returned without answering.
 */
struct feeder {
	struct dpt *t;
	const uint8_t *frame[2];
	size_t len[2];
	volatile int quit;
	unsigned fed, freed, errors;
};

static void *feeder_main(void *arg)
{
	struct feeder *fd = arg;
	struct dpt *t = fd->t;

	while (!fd->quit) {
		for (unsigned q = 0; q < 2; q++) {
			void *out[64];
			unsigned k;

			while (rte_ring_count(t->rx[q]) < 128) {
				struct rte_mbuf *m = rte_pktmbuf_alloc(t->mp);
				char *p;

				if (!m)
					break;  /* all in flight: later */
				p = rte_pktmbuf_append(m, (uint16_t)fd->len[q]);
				if (p)
					memcpy(p, fd->frame[q], fd->len[q]);
				if (!p || rte_ring_enqueue(t->rx[q], m)) {
					rte_pktmbuf_free(m);
					fd->errors++;
					break;
				}
				fd->fed++;
			}
			k = rte_ring_dequeue_burst(t->tx[q], out, 64, NULL);
			for (unsigned i = 0; i < k; i++)
				rte_pktmbuf_free(out[i]);
			__atomic_add_fetch(&fd->freed, k, __ATOMIC_RELAXED);
		}
		sched_yield();
	}
	return NULL;
}

static unsigned feeder_freed(const struct feeder *fd)
{
	return __atomic_load_n(&fd->freed, __ATOMIC_RELAXED);
}

static void shutdown_race(void **state, enum kms_dp_layout layout)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = layout, .io_bench = true,
			  .no_worker_init = true, .ring_size = 1024 };
	const struct efx_party *a[2], *b[2];
	struct efx_dep d[2];
	uint8_t frame[2][FRAME_MAX];
	size_t len[2];
	unsigned lost_rounds = 0;
	enum { ROUNDS = 40 };

	for (unsigned round = 0; round < ROUNDS; round++) {
		volatile sig_atomic_t stop = 0;
		struct feeder fd = { .t = t };
		struct kms_dp_stats io;
		unsigned left = 0, held;
		pthread_t th, tf;

		if (round)
			dp_close(t);
		start(t, &o);
		if (!round) {
			for (unsigned w = 0; w < 2; w++) {
				struct kms_pkt_flow fl = flow_to_us(t, F_V4);

				efx_pair_of_worker(&t->f, 2, w, &a[w], &b[w]);
				efx_dep_build(&t->f, &d[w], a[w], b[w],
					      &t->f.p[P_AS]);
				assert_int_equal(efx_owner(&t->f, &d[w].req), w);
				len[w] = kms_pkt_build_udp(&fl, d[w].req.b,
							   d[w].req.len, frame[w],
							   sizeof(frame[w]));
				assert_true(len[w] > 0);
			}
		}
		/* queue 0 carries worker 1's pair, queue 1 worker 0's */
		fd.frame[0] = frame[1];
		fd.len[0] = len[1];
		fd.frame[1] = frame[0];
		fd.len[1] = len[0];
		/* stopped after some hundreds of replies, a different number
		 * each round (the feeder empties the TX rings: what it freed
		 * is counted) */
		assert_int_equal(pthread_create(&tf, NULL, feeder_main, &fd), 0);
		{
			struct race_stop rs = { .fd = &fd, .stop = &stop,
						.after = 64 + 97 * round % 800 };


			assert_int_equal(pthread_create(&th, NULL, race_stop_main,
							&rs), 0);
			assert_int_equal(kms_dp_run(t->dp, &stop), KMS_OK);
			pthread_join(th, NULL);
			assert_false(rs.timed_out);
		}
		fd.quit = 1;
		pthread_join(tf, NULL);
		assert_int_equal(fd.errors, 0);
		io = io_stats(t);
		for (unsigned q = 0; q < 2; q++)
			left += rte_ring_count(t->rx[q]);
		held = in_use(t) - t->base;
		if (round < 3 || held != left + tx_pending(t))
			print_message("%s round %u: fed %u, read %" PRIu64
				      ", forwarded %" PRIu64 ", drained %" PRIu64
				      ", tx %" PRIu64 ", ring_full %" PRIu64
				      "; held %u = rx %u + tx %u + %d elsewhere\n",
				      layout == KMS_DP_LAYOUT_RSS ? "rss" : "rx",
				      round, fd.fed, io.rx, io.forwarded,
				      io.drained, io.tx, io.ring_full, held, left,
				      tx_pending(t),
				      (int)(held - left - tx_pending(t)));
		assert_int_equal(io.rx, fd.fed - left);
		assert_int_equal(io.requests, io.rx);
		assert_int_equal(io.engine_drops, 0);
		/* a full ring or TX queue is counted and freed: legitimate
		 * under this load, and still accounted for */
		if (held != left + tx_pending(t) ||
		    io.tx + io.tx_full + io.ring_full != io.requests)
			lost_rounds++;
	}
	print_message("%u of %u rounds returned with frames unanswered\n",
		      lost_rounds, ROUNDS);
	assert_int_equal(lost_rounds, 0);
}

static void shutdown_race_rss(void **state)
{
	shutdown_race(state, KMS_DP_LAYOUT_RSS);
}

static void shutdown_race_rx(void **state)
{
	shutdown_race(state, KMS_DP_LAYOUT_RX);
}

static void stop_midway_rx(void **state)
{
	stop_midway(state, KMS_DP_LAYOUT_RX);
}

static void stop_midway_rss(void **state)
{
	stop_midway(state, KMS_DP_LAYOUT_RSS);
}

/* ================================================================== */
/* Kernel-facing ports (net_tap, net_af_packet). They run in a network   */
/* namespace of the test's own (unshare: the main thread's only, and the */
/* EAL's threads keep theirs), so that no interface appears on the host; */
/* skipped without the privileges for it.                              */

static int private_netns(void)
{
	static int state; /* 0 not tried, 1 in our own, -1 impossible */

	if (state == 0) {
		state = unshare(CLONE_NEWNET) == 0 ? 1 : -1;
		if (state > 0 && system("ip link set lo up") != 0)
			state = -1;
	}
	return state > 0 ? 0 : -1;
}

static void sysctl_write(const char *path, const char *val)
{
	FILE *fp = fopen(path, "w");

	if (fp) {
		fputs(val, fp);
		fclose(fp);
	}
}

static void ipv6_off(const char *ifname)
{
	char path[128];

	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6",
		 ifname);
	sysctl_write(path, "1");
}

/* A raw packet socket on @p ifname, with VLAN auxdata. */
static int raw_socket(const char *ifname)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET };
	int one = 1, fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));

	assert_true(fd >= 0);
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = (int)if_nametoindex(ifname);
	assert_true(sll.sll_ifindex > 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sll, sizeof(sll)), 0);
	assert_int_equal(setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one,
				    sizeof(one)), 0);
	return fd;
}

/* ================================================================== */
/* TX checksum offload: a port that offers it (net_tap, which completes  */
/* the checksums from the mbuf's offload flags and l2_len / l3_len), a   */
/* kernel packet socket on the other side.                             */

struct tap_side {
	int fd;
	char ifname[IFNAMSIZ];
};

/* Our frame in, through the kernel side of the tap. */
static void tap_send(struct tap_side *k, const uint8_t *frame, size_t len)
{
	assert_int_equal(send(k->fd, frame, len, 0), (ssize_t)len);
}

/*
 * The next frame the dataplane sent from UDP port 7430 to @p dport (0: the
 * next ARP frame), with its 802.1Q tag put back in place when the kernel
 * moved it to auxdata. @return its length, 0 on timeout.
 */
static size_t tap_recv_reply(struct dpt *t, struct tap_side *k, uint16_t dport,
			     uint8_t *out, size_t cap)
{
	for (unsigned tries = 0; tries < 200; tries++) {
		uint8_t buf[FRAME_MAX];
		union {
			struct cmsghdr h;
			uint8_t b[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
		} cm;
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = &cm, .msg_controllen = sizeof(cm) };
		struct sockaddr_ll from;
		const struct tpacket_auxdata *aux = NULL;
		size_t l2 = 14, len;
		ssize_t n;

		mh.msg_name = &from;
		mh.msg_namelen = sizeof(from);
		/* the workers may still be holding it: poll them */
		poll_workers(t);
		n = recvmsg(k->fd, &mh, MSG_DONTWAIT);
		if (n < 0) {
			struct timespec ts = { 0, 10 * 1000 * 1000 };

			nanosleep(&ts, NULL);
			continue;
		}
		if (from.sll_pkttype == PACKET_OUTGOING)
			continue;               /* our own requests */
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA)
				aux = (const void *)CMSG_DATA(c);
		len = (size_t)n;
		if (aux && (aux->tp_status & TP_STATUS_VLAN_VALID)) {
			assert_true(len + 4 <= cap);
			memcpy(out, buf, 12);
			wr16(out + 12, 0x8100);
			wr16(out + 14, aux->tp_vlan_tci);
			memcpy(out + 16, buf + 12, len - 12);
			len += 4;
		} else {
			assert_true(len <= cap);
			memcpy(out, buf, len);
		}
		if (rd16(out + 12) == 0x8100)
			l2 = 18;
		if (!dport) {
			if (len >= l2 + 28 && rd16(out + l2 - 2) == 0x0806)
				return len;
			continue;
		}
		if (len < l2 + 48)
			continue;
		if (rd16(out + l2 - 2) == 0x0800 && out[l2 + 9] == 17) {
			const uint8_t *u = out + l2 + (out[l2] & 0x0f) * 4;

			if (rd16(u) == KMS_PORT && rd16(u + 2) == dport)
				return len;
		} else if (rd16(out + l2 - 2) == 0x86dd && out[l2 + 6] == 17) {
			const uint8_t *u = out + l2 + 40;

			if (rd16(u) == KMS_PORT && rd16(u + 2) == dport)
				return len;
		}
	}
	return 0;
}

/*
 * net_tap with two queue pairs (it wants as many RX as TX queues, which
 * kmsd now asks for): requests in every framing, answered with checksums
 * the port completes, and an ARP reply that worker 0 sends on TX queue 0.
 */
static void tap_offload(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX };
	static const enum framing frs[] = { F_V4, F_V4_VLAN, F_V6, F_V6_VLAN };
	struct tap_side k = { .fd = -1 };
	char devargs[128], name[64];
	struct kms_pkt_flow fl;
	struct rte_eth_dev_info info;
	uint16_t port;

	if (private_netns()) {
		print_message("no private network namespace (needs root): skipped\n");
		skip();
	}
	snprintf(k.ifname, sizeof(k.ifname), "kmst%u", (unsigned)getpid() % 100000u);
	snprintf(name, sizeof(name), "net_tap_kt%u", ++g_seq);
	snprintf(devargs, sizeof(devargs), "%s,iface=%s", name, k.ifname);
	if (rte_dev_probe(devargs) != 0 ||
	    rte_eth_dev_get_port_by_name(name, &port) != 0) {
		print_message("net_tap not available (needs root and /dev/net/tun): skipped\n");
		skip();
	}
	t->port = port;
	assert_int_equal(rte_eth_dev_info_get(port, &info), 0);
	/* the point of this test: a port that offers both checksums */
	assert_true(info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM);
	assert_true(info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_UDP_CKSUM);
	/* keep the kernel's own IPv6 chatter (RS, MLD, DAD) off the link */
	ipv6_off(k.ifname);
	/* nworkers RX and nworkers TX queues: net_tap takes them (it refuses
	 * unequal numbers, "number of rx queues 1 must be equal to number of
	 * tx queues 2") */
	assert_int_equal(start_rc(t, &o), KMS_OK);
	/* the offload path is the one in use (rte_eth_dev_conf_get is still
	 * experimental in DPDK 22.11) */
	{
		struct rte_eth_conf conf;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
		assert_int_equal(rte_eth_dev_conf_get(port, &conf), 0);
#pragma GCC diagnostic pop
		assert_true(conf.txmode.offloads & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM);
		assert_true(conf.txmode.offloads & RTE_ETH_TX_OFFLOAD_UDP_CKSUM);
	}
	k.fd = raw_socket(k.ifname);

	/* ARP through the kernel side: answered via worker 0 */
	{
		uint8_t frame[64], reply[FRAME_MAX];
		struct rte_mbuf *m;
		size_t n = arp_request(frame, sizeof(frame), false, 0);

		tap_send(&k, frame, n);
		for (unsigned tries = 0; tries < 100; tries++) {
			struct timespec ts = { 0, 5 * 1000 * 1000 };

			kms_dp_rx_poll(t->dp);
			if (io_stats(t).arp == 1)
				break;
			nanosleep(&ts, NULL);
		}
		assert_int_equal(io_stats(t).arp, 1);
		n = tap_recv_reply(t, &k, 0, reply, sizeof(reply));
		print_message("tap ARP: reply of %zu bytes\n", n);
		assert_int_equal(n, 42);
		m = mbuf_of(t, reply, n);
		check_arp_reply(t, m, false, 0);
		assert_int_equal(io_stats(t).tx, 1);
	}

	for (unsigned i = 0; i < 4; i++) {
		uint8_t frame[FRAME_MAX], reply[FRAME_MAX];
		struct efx_dep d;
		struct rte_mbuf *m;
		size_t n;

		efx_dep_build(&t->f, &d, &t->f.p[P_A], &t->f.p[P_B], &t->f.p[P_AS]);
		fl = flow_to_us(t, frs[i]);
		n = kms_pkt_build_udp(&fl, d.req.b, d.req.len, frame, sizeof(frame));
		assert_true(n > 0);
		tap_send(&k, frame, n);
		for (unsigned tries = 0; tries < 100; tries++) {
			struct timespec ts = { 0, 5 * 1000 * 1000 };

			kms_dp_rx_poll(t->dp);
			if (io_stats(t).requests == i + 1)
				break;
			nanosleep(&ts, NULL);
		}
		assert_int_equal(io_stats(t).requests, i + 1);
		assert_int_equal(io_stats(t).drops[KMS_PKT_DROP_BAD_CSUM], 0);
		n = tap_recv_reply(t, &k, fl.src_port, reply, sizeof(reply));
		print_message("tap %s: reply of %zu bytes\n",
			      i == 0 ? "IPv4" : i == 1 ? "IPv4+tag" :
			      i == 2 ? "IPv6" : "IPv6+tag", n);
		assert_true(n > 0);
		/* judged like any reply: here the checksums were completed
		 * by the port from the offload flags the dataplane set */
		m = mbuf_of(t, reply, n);
		check_reply(t, m, &fl, &d.rep);
		assert_int_equal(d.rep.status, KMS_ST_OK);
		efx_dep_finish(&d);
	}
	assert_int_equal(io_stats(t).tx_full, 0);
	close(k.fd);
	/* teardown closes the port; the tap interface goes with it */
	assert_int_equal(in_use(t), t->base);
}

/* Read what is waiting on the peer's socket: replies from UDP port 7430
 * to ports [sport0, sport0 + n), each counted once. @return new ones. */
static unsigned peer_collect(struct tap_side *k, uint16_t sport0, unsigned n,
			     bool *seen)
{
	unsigned fresh = 0;

	for (;;) {
		uint8_t buf[FRAME_MAX];
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		const uint8_t *ip = buf + 14, *u;
		ssize_t r = recvfrom(k->fd, buf, sizeof(buf), MSG_DONTWAIT,
				     (struct sockaddr *)&from, &fl);
		unsigned i;

		if (r < 0)
			return fresh;
		if (from.sll_pkttype == PACKET_OUTGOING || r < 14 + 20 + 8 ||
		    rd16(buf + 12) != 0x0800 || ip[9] != 17)
			continue;
		u = ip + (ip[0] & 0x0f) * 4;
		if (u + 8 > buf + r || rd16(u) != KMS_PORT)
			continue;
		i = (unsigned)(uint16_t)(rd16(u + 2) - sport0);
		if (i < n && !seen[i]) {
			seen[i] = true;
			fresh++;
		}
	}
}

/* af_packet, as the e2e test starts it: qpairs = workers (kmsd asks for
 * one RX and one TX queue per worker; af_packet pairs them). Its RX
 * sockets form a PACKET_FANOUT_HASH group: the kernel spreads flows over
 * all of them, and the RX stage polls them all. Every request from every
 * source port must reach the dataplane, be answered, and its reply reach
 * the peer, from either worker's TX queue. */
static void afpacket_all_flows(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX };
	char cmd[256], va[IFNAMSIZ], vb[IFNAMSIZ], devargs[128], name[64];
	static struct efx_dep d[64];
	struct tap_side k = { .fd = -1 };
	struct kms_dp_stats io;
	uint16_t port, sport0;
	unsigned answered = 0, seen = 0, per_worker[2] = { 0, 0 };
	bool seen_port[64] = { false };

	if (private_netns()) {
		print_message("no private network namespace (needs root): skipped\n");
		skip();
	}
	snprintf(va, sizeof(va), "kva%u", ++g_seq);
	snprintf(vb, sizeof(vb), "kvb%u", g_seq);
	snprintf(cmd, sizeof(cmd), "ip link add %s type veth peer name %s && "
		 "ip link set %s up && ip link set %s up", va, vb, va, vb);
	if (system(cmd) != 0) {
		print_message("cannot create a veth pair: skipped\n");
		skip();
	}
	ipv6_off(va);
	ipv6_off(vb);
	snprintf(name, sizeof(name), "net_af_packet_kt%u", g_seq);
	snprintf(devargs, sizeof(devargs), "%s,iface=%s,qpairs=%u", name, va,
		 o.nworkers);
	assert_int_equal(rte_dev_probe(devargs), 0);
	assert_int_equal(rte_eth_dev_get_port_by_name(name, &port), 0);
	t->port = port;
	start(t, &o);
	k.fd = raw_socket(vb);

	efx_dep_build_pairs(&t->f, d, NULL, 64, &t->f.p[P_AS]);
	sport0 = t->sport;
	for (unsigned i = 0; i < 64; i++) {
		struct kms_pkt_flow fl = flow_to_us(t, F_V4);
		uint8_t frame[FRAME_MAX];
		size_t n = kms_pkt_build_udp(&fl, d[i].req.b, d[i].req.len,
					     frame, sizeof(frame));

		assert_int_equal(fl.src_port, sport0 + i);
		tap_send(&k, frame, n);
	}
	/* af_packet delivers asynchronously: poll for up to 2 s; the peer
	 * collects the replies meanwhile */
	for (unsigned tries = 0; tries < 200; tries++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };

		kms_dp_rx_poll(t->dp);
		for (unsigned w = 0; w < o.nworkers; w++) {
			unsigned got = kms_dp_worker_poll(t->dp, w);

			answered += got;
			per_worker[w] += got;
		}
		seen += peer_collect(&k, sport0, 64, seen_port);
		if (answered == 64 && seen == 64)
			break;
		nanosleep(&ts, NULL);
	}
	io = io_stats(t);
	print_message("af_packet qpairs=%u: %" PRIu64 " of 64 requests reached "
		      "the dataplane, %u answered (%u + %u), %u replies at the "
		      "peer\n", o.nworkers, io.requests, answered, per_worker[0],
		      per_worker[1], seen);
	close(k.fd);
	assert_int_equal(io.requests, 64);
	assert_int_equal(answered, 64);
	assert_int_equal(io.tx, 64);
	assert_int_equal(io.tx_full, 0);
	assert_int_equal(seen, 64);
	assert_int_equal(in_use(t), t->base);
}

/* ================================================================== */
/* Configuration refused                                               */

static void create_refused(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX };
	struct kms_dp *dp = NULL;
	struct rte_mempool *small;
	struct kms_engine_config ec;
	struct kms_engine *e3;
	struct kms_dp_config c;

	engine_up(t, 2);
	make_port(t, 2, 2);
	cfg_fill(t, &o);

	c = t->cfg;
	c.ring_size = 100;                       /* not a power of two */
	assert_int_equal(kms_dp_create(t->f.eng, &c, NULL, &dp), KMS_ERR_INVAL);
	c = t->cfg;
	c.batch = 0;
	assert_int_equal(kms_dp_create(t->f.eng, &c, NULL, &dp), KMS_ERR_INVAL);
	c.batch = 257;
	assert_int_equal(kms_dp_create(t->f.eng, &c, NULL, &dp), KMS_ERR_INVAL);
	/* cfg.nworkers must be the engine's (2), whatever the lcores */
	c = t->cfg;
	c.nworkers = 0;
	assert_int_equal(kms_dp_create(t->f.eng, &c, NULL, &dp), KMS_ERR_INVAL);
	c.nworkers = 1;
	assert_int_equal(kms_dp_create(t->f.eng, &c, NULL, &dp), KMS_ERR_INVAL);
	c.layout = KMS_DP_LAYOUT_RSS;
	assert_int_equal(kms_dp_create(t->f.eng, &c, NULL, &dp), KMS_ERR_INVAL);
	c.nworkers = 3;
	assert_int_equal(kms_dp_create(t->f.eng, &c, NULL, &dp), KMS_ERR_INVAL);
	/* an engine of as many workers as the EAL has lcores: one lcore
	 * short (the main lcore is not a worker): CONFIG */
	ec = t->f.cfg;
	ec.nworkers = rte_lcore_count();
	assert_int_equal(kms_engine_create(&ec, t->f.hsm, t->f.ks, &e3), KMS_OK);
	c = t->cfg;
	c.nworkers = rte_lcore_count();
	assert_int_equal(kms_dp_create(e3, &c, NULL, &dp), KMS_ERR_CONFIG);
	c.layout = KMS_DP_LAYOUT_RSS;
	assert_int_equal(kms_dp_create(e3, &c, NULL, &dp), KMS_ERR_CONFIG);
	kms_engine_destroy(e3);
	/* a caller's mempool without room for the frame info */
	small = make_mempool(63, 0);
	assert_non_null(small);
	assert_int_equal(kms_dp_create(t->f.eng, &t->cfg, small, &dp),
			 KMS_ERR_INVAL);
	assert_int_equal(rte_mempool_in_use_count(small), 0);
	rte_mempool_free(small);
	assert_null(dp);
	/* after all of that (names, rings, mempool released), it works */
	assert_int_equal(kms_dp_create(t->f.eng, &t->cfg, NULL, &t->dp), KMS_OK);
	t->mp = kms_dp_mempool(t->dp);
}

/* A port id with no port behind it (a typo in --port): KMS_ERR_CONFIG,
 * "no such port", as kms_dpdk.h promises, in both layouts. Last in the
 * list: if it crashes, what it leaves behind cannot disturb the other
 * tests. */
static void create_refused_no_port(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX };
	struct kms_dp *dp = NULL;

	engine_up(t, 1);
	make_port(t, 1, 1);
	cfg_fill(t, &o);
	t->cfg.port_id = (uint16_t)(t->port + 5);
	assert_false(rte_eth_dev_is_valid_port(t->cfg.port_id));
	assert_int_equal(kms_dp_create(t->f.eng, &t->cfg, NULL, &dp),
			 KMS_ERR_CONFIG);
	assert_null(dp);
	t->cfg.layout = KMS_DP_LAYOUT_RSS;
	assert_int_equal(kms_dp_create(t->f.eng, &t->cfg, NULL, &dp),
			 KMS_ERR_CONFIG);
	assert_null(dp);
	/* RTE_MAX_ETHPORTS and beyond: no device array entry at all */
	t->cfg.port_id = RTE_MAX_ETHPORTS;
	assert_int_equal(kms_dp_create(t->f.eng, &t->cfg, NULL, &dp),
			 KMS_ERR_CONFIG);
	t->cfg.port_id = UINT16_MAX;
	assert_int_equal(kms_dp_create(t->f.eng, &t->cfg, NULL, &dp),
			 KMS_ERR_CONFIG);
	assert_null(dp);
	/* the real port still works afterwards */
	t->cfg.port_id = (uint16_t)t->port;
	assert_int_equal(kms_dp_create(t->f.eng, &t->cfg, NULL, &t->dp), KMS_OK);
	t->mp = kms_dp_mempool(t->dp);
}

/* A port with fewer queues than workers (in either direction) is refused
 * in both layouts: every worker needs a TX queue of its own, and as many
 * RX queues. */
static void queues_refused(void **state, unsigned nrx, unsigned ntx)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RX };
	struct kms_dp *dp = NULL;

	engine_up(t, 2);
	make_port(t, nrx, ntx);
	cfg_fill(t, &o);
	assert_int_equal(kms_dp_create(t->f.eng, &t->cfg, NULL, &dp),
			 KMS_ERR_CONFIG);
	assert_null(dp);
	t->cfg.layout = KMS_DP_LAYOUT_RSS;
	assert_int_equal(kms_dp_create(t->f.eng, &t->cfg, NULL, &dp),
			 KMS_ERR_CONFIG);
	assert_null(dp);
}

static void create_refused_tx_queues(void **state)
{
	queues_refused(state, 2, 1);
}

static void create_refused_rx_queues(void **state)
{
	queues_refused(state, 1, 2);
}

/* A port with more queues than workers is fine: the dataplane uses as
 * many as it has workers. */
static void create_more_queues(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX };
	struct efx_dep d;
	struct kms_pkt_flow fl;

	engine_up(t, 1);
	make_port(t, 2, 2);
	start(t, &o);
	efx_dep_build(&t->f, &d, &t->f.p[P_A], &t->f.p[P_B], &t->f.p[P_AS]);
	fl = flow_to_us(t, F_V4);
	put_dgram(t, 0, &fl, d.req.b, d.req.len);
	assert_int_equal(kms_dp_rx_poll(t->dp), 1);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	expect_reply(t, 0, &fl, &d.rep);
	assert_int_equal(d.rep.status, KMS_ST_OK);
	efx_dep_finish(&d);
	assert_int_equal(in_use(t), t->base);
}

/* ================================================================== */
/* Telemetry: /kms/stats and /kms/drops over the EAL's telemetry socket */

static int tel_query(const char *cmd, char *out, size_t cap)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	ssize_t n;

	if (fd < 0)
		return -1;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/dpdk_telemetry.v2",
		 rte_eal_get_runtime_dir());
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		goto err;
	n = read(fd, out, cap - 1);              /* the greeting */
	if (n <= 0)
		goto err;
	if (write(fd, cmd, strlen(cmd)) < 0)
		goto err;
	n = read(fd, out, cap - 1);
	if (n <= 0)
		goto err;
	out[n] = 0;
	close(fd);
	return 0;
err:
	close(fd);
	return -1;
}

/* "key": value in DPDK's JSON, with or without a space, value complete. */
static bool json_has(const char *json, const char *key, const char *val)
{
	char pat[2][128];

	snprintf(pat[0], sizeof(pat[0]), "\"%s\":%s", key, val);
	snprintf(pat[1], sizeof(pat[1]), "\"%s\": %s", key, val);
	for (unsigned i = 0; i < 2; i++) {
		const char *p = strstr(json, pat[i]);

		if (p && (p[strlen(pat[i])] == ',' || p[strlen(pat[i])] == '}'))
			return true;
	}
	return false;
}

static void telemetry(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 1, .layout = KMS_DP_LAYOUT_RX };
	struct kms_pkt_flow fl;
	struct efx_dep d;
	char buf[16384];

	start(t, &o);
	efx_dep_build(&t->f, &d, &t->f.p[P_A], &t->f.p[P_B], &t->f.p[P_AS]);
	fl = flow_to_us(t, F_V4);
	put_dgram(t, 0, &fl, d.req.b, d.req.len);
	fl.dst_port = 9;
	put_dgram(t, 0, &fl, d.req.b, d.req.len);
	assert_int_equal(kms_dp_rx_poll(t->dp), 2);
	assert_int_equal(kms_dp_worker_poll(t->dp, 0), 1);
	free_ring_mbufs(t->tx[0]);

	if (tel_query("/kms/stats", buf, sizeof(buf))) {
		print_message("telemetry socket not available: skipped\n");
		skip();
	}
	print_message("%s\n", buf);
	assert_non_null(strstr(buf, "\"/kms/stats\""));
	assert_true(json_has(buf, "rx", "2"));
	assert_true(json_has(buf, "requests", "1"));
	assert_true(json_has(buf, "tx", "1"));
	assert_true(json_has(buf, "keys_new", "1"));
	assert_int_equal(tel_query("/kms/drops", buf, sizeof(buf)), 0);
	print_message("%s\n", buf);
	assert_true(json_has(buf, "wrong_port", "1"));
	assert_true(json_has(buf, "bad_csum", "0"));
	assert_int_equal(tel_query("/kms/workers", buf, sizeof(buf)), 0);
	print_message("%s\n", buf);
	assert_true(strstr(buf, "[1]") != NULL);
	/* one worker's own counters (rx layout: the RX stage received) */
	assert_int_equal(tel_query("/kms/worker,0", buf, sizeof(buf)), 0);
	print_message("%s\n", buf);
	assert_true(json_has(buf, "worker", "0"));
	assert_true(json_has(buf, "rx", "0"));
	assert_true(json_has(buf, "tx", "1"));
	assert_true(json_has(buf, "engine_requests", "1"));
	assert_true(json_has(buf, "keys_new", "1"));
	/* no such worker, no id, not a number: an error, no counters */
	static const char *const bad[] = { "/kms/worker,1", "/kms/worker",
					   "/kms/worker,x", "/kms/worker,-0",
					   "/kms/worker,0x" };
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(tel_query(bad[i], buf, sizeof(buf)), 0);
		print_message("%s: %s\n", bad[i], buf);
		assert_null(strstr(buf, "\"tx\""));
	}

	/* destroyed: the commands answer nothing (no stale dataplane) */
	kms_dp_destroy(t->dp);
	t->dp = NULL;
	assert_int_equal(tel_query("/kms/stats", buf, sizeof(buf)), 0);
	print_message("after destroy: %s\n", buf);
	assert_null(strstr(buf, "\"requests\""));
	assert_int_equal(tel_query("/kms/workers", buf, sizeof(buf)), 0);
	assert_null(strstr(buf, "[1]"));
	/* a new dataplane in the same process: the commands (registered
	 * once) report it */
	dp_close(t);
	start(t, &o);
	assert_int_equal(tel_query("/kms/stats", buf, sizeof(buf)), 0);
	print_message("new dataplane: %s\n", buf);
	assert_true(json_has(buf, "rx", "0"));
	assert_true(json_has(buf, "requests", "0"));
	assert_int_equal(tel_query("/kms/workers", buf, sizeof(buf)), 0);
	assert_non_null(strstr(buf, "[0]"));
}

struct tel_hammer {
	volatile int quit;
	unsigned queries, answered;
};

static void *tel_hammer_main(void *arg)
{
	struct tel_hammer *h = arg;
	static const char *const cmds[] = { "/kms/stats", "/kms/drops",
					    "/kms/workers", "/kms/worker,1" };
	char buf[16384];

	while (!h->quit) {
		if (tel_query(cmds[h->queries % 4], buf, sizeof(buf)) == 0 &&
		    strstr(buf, "\"/kms/"))
			h->answered++;
		h->queries++;
	}
	return NULL;
}

/* The telemetry thread reads the dataplane while it is created and
 * destroyed over and over (the sanitizer build catches a use after
 * free). */
static void telemetry_vs_destroy(void **state)
{
	struct dpt *t = *state;
	struct opts o = { .nworkers = 2, .layout = KMS_DP_LAYOUT_RSS };
	struct tel_hammer h = { 0 };
	char buf[256];
	pthread_t th;

	if (tel_query("/kms/stats", buf, sizeof(buf))) {
		print_message("telemetry socket not available: skipped\n");
		skip();
	}
	assert_int_equal(pthread_create(&th, NULL, tel_hammer_main, &h), 0);
	for (unsigned i = 0; i < 30; i++) {
		if (i)
			dp_close(t);
		start(t, &o);
		usleep(2000);
	}
	dp_close(t);
	usleep(2000);
	h.quit = 1;
	pthread_join(th, NULL);
	print_message("%u queries, %u answered\n", h.queries, h.answered);
	assert_true(h.queries > 0);
	assert_int_equal(h.answered, h.queries);
}

/* ================================================================== */

/* EAL leaves its runtime directory (config, sockets) behind: remove ours. */
static void remove_runtime_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[PATH_MAX + sizeof(e->d_name) + 2];

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

int main(int argc, char **argv)
{
	char prefix[64], rundir[PATH_MAX];
	char *eal[] = {
		argv[0], "--no-huge", "-m", "256", "--no-pci",
		"--file-prefix", prefix, "--lcores", "(0-2)@(0-1)",
		"--log-level", getenv("KMS_TEST_EAL_LOG") ? getenv("KMS_TEST_EAL_LOG") : "3", NULL,
	};
	int eal_argc = (int)(sizeof(eal) / sizeof(eal[0])) - 1;
	int rc;
#define T(fn) cmocka_unit_test_setup_teardown(fn, dpt_setup, dpt_teardown)
	const struct CMUnitTest tests[] = {
		T(arp_and_nd),
		T(arp_with_requests),
		T(arp_ring_full),
		T(drop_classes_rx),
		T(drop_classes_rss),
		T(deposit_retrieve),
		T(ipv4_options_reply),
		T(engine_drop_and_error),
		T(padded_request),
		T(nic_checksum_flags),
		T(tx_full_counted),
		T(ring_overflow),
		T(ring_overflow_exact),
		T(rss_forwarding),
		T(batch_rx_layout),
		T(batch_rss_surplus),
		T(destroy_frees_queued),
		T(run_drains_rings),
		T(run_drains_after_arps),
		T(run_and_stop),
		T(run_and_stop_rss),
		T(stop_midway_rx),
		T(stop_midway_rss),
		T(shutdown_race_rx),
		T(shutdown_race_rss),
		T(create_refused),
		T(create_refused_tx_queues),
		T(create_refused_rx_queues),
		T(create_more_queues),
		T(telemetry),
		T(telemetry_vs_destroy),
		T(tap_offload),
		T(afpacket_all_flows),
		T(create_refused_no_port),  /* last: see there */
	};
#undef T

	(void)argc;
	snprintf(prefix, sizeof(prefix), "test_dpdk_%d", (int)getpid());
	if (rte_eal_init(eal_argc, eal) < 0) {
		fprintf(stderr, "rte_eal_init failed: %s\n",
			rte_strerror(rte_errno));
		return 1;
	}
	/* KMS_TEST_FILTER / KMS_TEST_SKIP: run or skip tests by name (glob). */
	if (getenv("KMS_TEST_FILTER"))
		cmocka_set_test_filter(getenv("KMS_TEST_FILTER"));
	if (getenv("KMS_TEST_SKIP"))
		cmocka_set_skip_filter(getenv("KMS_TEST_SKIP"));
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	snprintf(rundir, sizeof(rundir), "%s", rte_eal_get_runtime_dir());
	rte_eal_cleanup();
	remove_runtime_dir(rundir);
	return rc;
}
