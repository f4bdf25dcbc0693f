// SPDX-License-Identifier: Apache-2.0
/*
 * kms-loadgen over a DPDK port (lg_io.h): one RX and one TX queue polled
 * by the load generator's thread, frames built and classified with the
 * plain-C helpers of dataplane/kms_pkt.h.
 *
 * spec: "key=value,..." with
 *   ip=A4 / ip6=A6        our addresses (we answer ARP / neighbour
 *                         solicitations for them, so a kernel peer reaches
 *                         us with no static entries)
 *   kms-ip=A4 | kms-ip6=A6  the KMS: exactly one; it sets the family we
 *                         talk in, and our own address of that family is
 *                         required
 *   port=N                the ethdev port (default 0)
 *   kms-port=P            the KMS's UDP port (default 7430)
 *   sport=S               our UDP source port (default 40000)
 *   kms-mac=MAC           the next hop's MAC; else resolved by ARP (NS for
 *                         IPv6): a request every 200 ms, for up to 5 s
 *   mbufs=N               mempool size (default 8191: about 20 MiB, fits
 *                         in --no-huge -m 256)
 *
 * Our MAC is the port's. TX: one frame per datagram (kms_pkt_build_udp),
 * the IPv4 header and UDP checksums filled by the NIC when it offers both
 * offloads, else in software. RX: kms_pkt_classify with our address and
 * source port as its "server" side, so a KMS reply is a REQUEST verdict
 * with its payload located; checksums verified unless the NIC says good;
 * anything else counted by drop class. Nothing is allocated per packet.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>

#include "kms_pkt.h"
#include "kms_pkt_mbuf.h"
#include "lg_io.h"

#define LG_BURST 64
#define DESC_MAX 1024           /* RX and TX descriptors, at most */
#define MBUFS_DEFAULT 8191
#define MBUFS_MIN 511
#define MBUFS_MAX (1u << 20)
#define LG_QUEUES_MAX 64
#define MP_CACHE 256
#define LINK_WAIT_MS 5000
#define RESOLVE_MS 5000
#define RESOLVE_EVERY_MS 200
#define SPEC_MAX 512

#define ET_ARP 0x0806
#define ET_IPV6 0x86dd
#define PROTO_UDP 17
#define PROTO_ICMPV6 58
#define ICMP6_NA 136
#define ND_OPT_TLLA 2

#define ERR(...) fprintf(stderr, "kms-loadgen: dpdk: " __VA_ARGS__)

struct lg_dpdk {
	struct lg_io io;
	uint16_t port;
	bool configured, started;
	bool v6;                        /* we talk to the KMS over IPv6 */
	bool tx_ol;                     /* IPv4 + UDP checksums by the NIC */
	bool kms_mac_known;
	struct rte_mempool *mp;
	struct kms_pkt_cfg cfg;         /* us: mac, ip(s), udp_port = sport */
	struct kms_pkt_flow flow;       /* us -> the KMS */
	uint16_t kms_port;
	uint16_t nq;                    /* RX queues polled (TX on queue 0) */
	uint16_t next_rxq;
	uint64_t rx, rx_kms, tx, tx_full, tx_nombuf;
	uint64_t arp_sent, arp_answered, nd_sent, nd_answered;
	uint64_t not_from_kms, too_long, early, neigh_replies;
	uint64_t drops[KMS_PKT_DROP__COUNT];
};

/* ---- spec ---------------------------------------------------------------- */

struct spec {
	unsigned long port, kms_port, sport, mbufs, queues;
	bool has_ip4, has_ip6, has_kms_ip4, has_kms_ip6, has_kms_mac;
	uint8_t ip4[4], ip6[16], kms_ip4[4], kms_ip6[16];
	uint8_t kms_mac[KMS_PKT_ETH_ALEN];
};

static int parse_ulong(const char *key, const char *v, unsigned long min,
		       unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long x;

	errno = 0;
	x = strtoul(v, &end, 10);
	if (!isdigit((unsigned char)v[0]) || *end || errno || x < min ||
	    x > max) {
		ERR("%s=%s: expected a number in %lu..%lu\n", key, v, min, max);
		return -1;
	}
	*out = x;
	return 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* xx:xx:xx:xx:xx:xx, a unicast non-zero address */
static int parse_mac(const char *s, uint8_t mac[KMS_PKT_ETH_ALEN])
{
	static const uint8_t zero[KMS_PKT_ETH_ALEN];

	for (int i = 0; i < KMS_PKT_ETH_ALEN; i++, s += 3) {
		int hi = hexval((unsigned char)s[0]);
		int lo = hi < 0 ? -1 : hexval((unsigned char)s[1]);

		if (lo < 0 || s[2] != (i == KMS_PKT_ETH_ALEN - 1 ? '\0' : ':'))
			return -1;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	if ((mac[0] & 1) || !memcmp(mac, zero, sizeof(zero)))
		return -1;
	return 0;
}

static int parse_ip(const char *key, const char *v, int af, uint8_t *out,
		    bool *seen)
{
	if (inet_pton(af, v, out) != 1) {
		ERR("%s=%s: not an IPv%c address\n", key, v,
		    af == AF_INET ? '4' : '6');
		return -1;
	}
	*seen = true;
	return 0;
}

static int parse_spec(const char *spec, struct spec *s)
{
	char buf[SPEC_MAX], *save = NULL, *tok;
	unsigned seen = 0;
	static const char *const keys[] = {
		"port", "ip", "ip6", "kms-ip", "kms-ip6", "kms-port", "sport",
		"kms-mac", "mbufs", "queues",
	};

	memset(s, 0, sizeof(*s));
	s->kms_port = 7430;
	s->sport = 40000;
	s->mbufs = MBUFS_DEFAULT;
	s->queues = 1;
	if (!spec || !*spec) {
		ERR("--dpdk: empty spec (expected port=0,ip=A,kms-ip=B,...)\n");
		return -1;
	}
	if (strlen(spec) >= sizeof(buf)) {
		ERR("--dpdk: spec longer than %zu bytes\n", sizeof(buf) - 1);
		return -1;
	}
	strcpy(buf, spec);
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *v = strchr(tok, '=');
		unsigned k;
		int rc = 0;

		if (!v || v == tok || !v[1]) {
			ERR("--dpdk: \"%s\": expected key=value\n", tok);
			return -1;
		}
		*v++ = '\0';
		for (k = 0; k < RTE_DIM(keys); k++)
			if (!strcmp(tok, keys[k]))
				break;
		if (k == RTE_DIM(keys)) {
			ERR("--dpdk: unknown key \"%s\" (known: port, ip, ip6, "
			    "kms-ip, kms-ip6, kms-port, sport, kms-mac, mbufs, "
			    "queues)\n",
			    tok);
			return -1;
		}
		if (seen & 1u << k) {
			ERR("--dpdk: %s given twice\n", tok);
			return -1;
		}
		seen |= 1u << k;
		switch (k) {
		case 0:
			rc = parse_ulong(tok, v, 0, RTE_MAX_ETHPORTS - 1, &s->port);
			break;
		case 1:
			rc = parse_ip(tok, v, AF_INET, s->ip4, &s->has_ip4);
			break;
		case 2:
			rc = parse_ip(tok, v, AF_INET6, s->ip6, &s->has_ip6);
			break;
		case 3:
			rc = parse_ip(tok, v, AF_INET, s->kms_ip4, &s->has_kms_ip4);
			break;
		case 4:
			rc = parse_ip(tok, v, AF_INET6, s->kms_ip6, &s->has_kms_ip6);
			break;
		case 5:
			rc = parse_ulong(tok, v, 1, 65535, &s->kms_port);
			break;
		case 6:
			rc = parse_ulong(tok, v, 1, 65535, &s->sport);
			break;
		case 7:
			rc = parse_mac(v, s->kms_mac);
			if (rc)
				ERR("kms-mac=%s: expected a unicast MAC "
				    "xx:xx:xx:xx:xx:xx\n", v);
			s->has_kms_mac = true;
			break;
		case 8:
			rc = parse_ulong(tok, v, MBUFS_MIN, MBUFS_MAX, &s->mbufs);
			break;
		case 9:
			rc = parse_ulong(tok, v, 1, LG_QUEUES_MAX, &s->queues);
			break;
		}
		if (rc)
			return -1;
	}
	if (s->has_kms_ip4 == s->has_kms_ip6) {
		ERR("--dpdk: give the KMS's address as kms-ip=IPv4 or "
		    "kms-ip6=IPv6 (exactly one)\n");
		return -1;
	}
	if (s->has_kms_ip4 && !s->has_ip4) {
		ERR("--dpdk: kms-ip needs our IPv4 address: ip=\n");
		return -1;
	}
	if (s->has_kms_ip6 && !s->has_ip6) {
		ERR("--dpdk: kms-ip6 needs our IPv6 address: ip6=\n");
		return -1;
	}
	if (s->has_ip4 && (s->ip4[0] >= 224 || !s->ip4[0])) {
		ERR("--dpdk: ip: not a unicast IPv4 address\n");
		return -1;
	}
	if (s->has_ip6 && s->ip6[0] == 0xff) {
		ERR("--dpdk: ip6: not a unicast IPv6 address\n");
		return -1;
	}
	return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static uint64_t ms_cycles(uint64_t ms)
{
	return rte_get_timer_hz() / 1000 * ms;
}

static void tx_frames(struct lg_dpdk *p, struct rte_mbuf **m, unsigned n)
{
	unsigned sent;

	if (!n)
		return;
	sent = rte_eth_tx_burst(p->port, 0, m, (uint16_t)n);
	if (sent < n) {
		p->tx_full += n - sent;
		rte_pktmbuf_free_bulk(m + sent, n - sent);
	}
}

/* ---- neighbour resolution ---------------------------------------------- */

/* One ARP request (IPv4) or neighbour solicitation (IPv6) for the KMS. */
static void solicit(struct lg_dpdk *p)
{
	struct kms_pkt_flow f = p->flow;
	struct rte_mbuf *m = rte_pktmbuf_alloc(p->mp);
	uint8_t *frame;
	size_t len;

	if (!m) {
		p->tx_nombuf++;
		return;
	}
	frame = rte_pktmbuf_mtod(m, uint8_t *);
	if (p->v6) {
		kms_pkt_ipv6_solicited_node(p->flow.dst_ip, f.dst_ip);
		kms_pkt_ipv6_mcast_mac(f.dst_ip, f.dst_mac);
		len = kms_pkt_build_ns(&f, p->flow.dst_ip, frame,
				       rte_pktmbuf_tailroom(m));
		p->nd_sent++;
	} else {
		memset(f.dst_mac, 0xff, KMS_PKT_ETH_ALEN);
		len = kms_pkt_build_arp_request(&f, frame,
						rte_pktmbuf_tailroom(m));
		p->arp_sent++;
	}
	m->data_len = (uint16_t)len;
	m->pkt_len = (uint32_t)len;
	tx_frames(p, &m, 1);
}

/* An ARP reply from the KMS's address to ours. */
static bool arp_reply_mac(const struct lg_dpdk *p, const uint8_t *f, size_t len,
			  const uint8_t **mac)
{
	const uint8_t *a = f + KMS_PKT_ETH_HLEN;

	if (len < KMS_PKT_ETH_HLEN + KMS_PKT_ARP_LEN || kms_pkt_get16(f + 12) != ET_ARP)
		return false;
	if (kms_pkt_get16(a) != 1 || kms_pkt_get16(a + 2) != 0x0800 || a[4] != 6 || a[5] != 4 ||
	    kms_pkt_get16(a + 6) != 2)
		return false;
	if (memcmp(a + 14, p->flow.dst_ip, 4) || memcmp(a + 24, p->flow.src_ip, 4))
		return false;
	*mac = a + 8;
	return true;
}

/* A valid neighbour advertisement for the KMS's address. */
static bool na_mac(const struct lg_dpdk *p, const uint8_t *f, size_t len,
		   const uint8_t **mac)
{
	const uint8_t *ip = f + KMS_PKT_ETH_HLEN, *icmp = ip + KMS_PKT_IPV6_HLEN;
	size_t plen, off;
	uint32_t s;

	if (len < KMS_PKT_ETH_HLEN + KMS_PKT_IPV6_HLEN + 24 ||
	    kms_pkt_get16(f + 12) != ET_IPV6 || ip[0] >> 4 != 6 ||
	    ip[6] != PROTO_ICMPV6 || ip[7] != 255)
		return false;
	plen = kms_pkt_get16(ip + 4);
	if (plen < 24 || plen > len - KMS_PKT_ETH_HLEN - KMS_PKT_IPV6_HLEN ||
	    icmp[0] != ICMP6_NA || icmp[1] != 0 ||
	    memcmp(icmp + 8, p->flow.dst_ip, 16))
		return false;
	s = kms_pkt_ipv6_phdr_sum(ip + 8, ip + 24, PROTO_ICMPV6, (uint32_t)plen);
	if (kms_pkt_csum_finish(kms_pkt_csum_add(s, icmp, plen)) != 0)
		return false;
	*mac = f + 6;
	for (off = 24; off + 2 <= plen && icmp[off + 1]; off += icmp[off + 1] * 8u) {
		if (icmp[off] == ND_OPT_TLLA && icmp[off + 1] == 1 &&
		    off + 8 <= plen) {
			*mac = icmp + off + 2;
			break;
		}
	}
	return true;
}

/* Learn the KMS's MAC from @p f if it is the answer we are waiting for. */
static bool learn_kms_mac(struct lg_dpdk *p, const uint8_t *f, size_t len)
{
	const uint8_t *mac = NULL;

	if (p->kms_mac_known || len < KMS_PKT_ETH_HLEN ||
	    memcmp(f, p->cfg.mac, KMS_PKT_ETH_ALEN))
		return false;
	if (!(p->v6 ? na_mac(p, f, len, &mac) : arp_reply_mac(p, f, len, &mac)))
		return false;
	if (mac[0] & 1)
		return false;
	memcpy(p->flow.dst_mac, mac, KMS_PKT_ETH_ALEN);
	p->kms_mac_known = true;
	p->neigh_replies++;
	return true;
}

/* ---- RX ------------------------------------------------------------------ */

static bool from_kms(const struct lg_dpdk *p, const uint8_t *f,
		     const struct kms_pkt_info *pi)
{
	const uint8_t *ip = f + pi->l3_off;

	if (pi->is_ipv6 != p->v6 || kms_pkt_get16(f + pi->l4_off) != p->kms_port)
		return false;
	return p->v6 ? !memcmp(ip + 8, p->flow.dst_ip, 16)
		     : !memcmp(ip + 12, p->flow.dst_ip, 4);
}

/*
 * One RX burst of at most @p n frames (LG_BURST if @p n is 0, when
 * nothing is delivered: resolution). Datagrams from the KMS go to d[];
 * ARP/NS for us are answered; everything else is counted and freed.
 * @return datagrams delivered.
 */
static unsigned rx_once(struct lg_dpdk *p, struct lg_dgram *d, unsigned n)
{
	struct rte_mbuf *pkts[LG_BURST], *tx[LG_BURST], *done[LG_BURST];
	unsigned k, got = 0, ntx = 0, ndone = 0;

	/* A peer with one queue per worker (kmsd) answers on the queue of
	 * the worker that served: poll them all, in turn. */
	k = rte_eth_rx_burst(p->port, p->next_rxq, pkts,
			     (uint16_t)(n && n < LG_BURST ? n : LG_BURST));
	if (++p->next_rxq == p->nq)
		p->next_rxq = 0;
	p->rx += k;
	for (unsigned i = 0; i < k; i++) {
		struct rte_mbuf *m = pkts[i];
		uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
		struct kms_pkt_info pi;
		enum kms_pkt_verdict v;

		if (m->nb_segs != 1) {
			p->drops[KMS_PKT_DROP_BAD_LEN]++;
			done[ndone++] = m;
			continue;
		}
		v = kms_pkt_classify(&p->cfg, f, m->data_len,
				     (size_t)m->buf_len - m->data_off,
				     kms_pkt_rx_flags(m), &pi);
		switch (v) {
		case KMS_PKT_REQUEST:
			if (!from_kms(p, f, &pi))
				p->not_from_kms++;
			else if (!n || got == n)
				p->early++;
			else if (pi.payload_len > d[got].cap)
				p->too_long++;
			else {
				memcpy(d[got].buf, f + pi.payload_off,
				       pi.payload_len);
				d[got++].len = pi.payload_len;
				p->rx_kms++;
			}
			done[ndone++] = m;
			break;
		case KMS_PKT_ARP:
		case KMS_PKT_ND:
			if (v == KMS_PKT_ARP)
				p->arp_answered++;
			else
				p->nd_answered++;
			m->data_len = pi.reply_len;
			m->pkt_len = pi.reply_len;
			m->ol_flags = 0;
			tx[ntx++] = m;
			break;
		default:
			if (!learn_kms_mac(p, f, m->data_len))
				p->drops[v]++;
			done[ndone++] = m;
			break;
		}
	}
	if (ndone)
		rte_pktmbuf_free_bulk(done, ndone);
	tx_frames(p, tx, ntx);
	return got;
}

static int resolve_kms_mac(struct lg_dpdk *p)
{
	uint64_t start = rte_get_timer_cycles(), next = start, now;

	while (!p->kms_mac_known) {
		now = rte_get_timer_cycles();
		if (now - start >= ms_cycles(RESOLVE_MS)) {
			char a[INET6_ADDRSTRLEN];

			inet_ntop(p->v6 ? AF_INET6 : AF_INET, p->flow.dst_ip,
				  a, sizeof(a));
			ERR("no %s reply for the KMS's address %s on port %u "
			    "within %d s (%" PRIu64 " sent); give kms-mac= or "
			    "check the path\n", p->v6 ? "neighbour" : "ARP", a,
			    p->port, RESOLVE_MS / 1000,
			    p->v6 ? p->nd_sent : p->arp_sent);
			return -1;
		}
		if (now >= next) {
			solicit(p);
			next = now + ms_cycles(RESOLVE_EVERY_MS);
		}
		if (!rx_once(p, NULL, 0))
			rte_delay_us_sleep(1000);
	}
	return 0;
}

static int dpdk_recv(struct lg_io *io, struct lg_dgram *d, unsigned n,
		     int timeout_us)
{
	struct lg_dpdk *p = (struct lg_dpdk *)io;
	uint64_t deadline;
	unsigned got;

	if (!n)
		return 0;
	got = rx_once(p, d, n);
	if (got || timeout_us <= 0)
		return (int)got;
	/* A polling backend: spin for at most timeout_us. */
	deadline = rte_get_timer_cycles() +
		   rte_get_timer_hz() * (uint64_t)timeout_us / 1000000;
	do {
		rte_pause();
		got = rx_once(p, d, n);
	} while (!got && rte_get_timer_cycles() < deadline);
	return (int)got;
}

/* ---- TX ------------------------------------------------------------------ */

/* Hand the checksums of a built IPv4/IPv6 UDP frame to the NIC. */
static void tx_offload(const struct lg_dpdk *p, struct rte_mbuf *m,
		       uint8_t *frame, size_t payload_len)
{
	uint16_t ulen = (uint16_t)(KMS_PKT_UDP_HLEN + payload_len);
	uint8_t *l3 = frame + KMS_PKT_ETH_HLEN;
	uint8_t *udp;
	uint32_t ph;

	m->l2_len = KMS_PKT_ETH_HLEN;
	if (p->v6) {
		udp = l3 + KMS_PKT_IPV6_HLEN;
		ph = kms_pkt_ipv6_phdr_sum(l3 + 8, l3 + 24, PROTO_UDP, ulen);
		m->l3_len = KMS_PKT_IPV6_HLEN;
		m->ol_flags = RTE_MBUF_F_TX_IPV6 | RTE_MBUF_F_TX_UDP_CKSUM;
	} else {
		udp = l3 + KMS_PKT_IPV4_HLEN;
		ph = kms_pkt_ipv4_phdr_sum(l3 + 12, l3 + 16, PROTO_UDP, ulen);
		kms_pkt_put16(l3 + 10, 0);
		m->l3_len = KMS_PKT_IPV4_HLEN;
		m->ol_flags = RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM |
			      RTE_MBUF_F_TX_UDP_CKSUM;
	}
	kms_pkt_put16(udp + 6, (uint16_t)ph);   /* as rte_ipv4/6_phdr_cksum() */
}

static int dpdk_send(struct lg_io *io, const struct lg_dgram *d, unsigned n)
{
	struct lg_dpdk *p = (struct lg_dpdk *)io;
	struct rte_mbuf *m[LG_BURST];
	unsigned done = 0;

	while (done < n) {
		unsigned k = RTE_MIN(n - done, (unsigned)LG_BURST), sent;

		for (unsigned i = 0; i < k; i++)
			if (d[done + i].len > LG_DGRAM_MAX) {
				ERR("datagram of %u bytes (max %u)\n",
				    d[done + i].len, LG_DGRAM_MAX);
				return -1;
			}
		if (rte_pktmbuf_alloc_bulk(p->mp, m, k)) {
			p->tx_nombuf++;
			break;
		}
		for (unsigned i = 0; i < k; i++) {
			uint8_t *frame = rte_pktmbuf_mtod(m[i], uint8_t *);
			size_t len;

			len = kms_pkt_build_udp(&p->flow, d[done + i].buf,
						d[done + i].len, frame,
						rte_pktmbuf_tailroom(m[i]));
			if (!len) {     /* cannot happen with 2 KiB mbufs */
				ERR("cannot build a frame of %u bytes\n",
				    d[done + i].len);
				rte_pktmbuf_free_bulk(m, k);
				return -1;
			}
			m[i]->data_len = (uint16_t)len;
			m[i]->pkt_len = (uint32_t)len;
			if (p->tx_ol)
				tx_offload(p, m[i], frame, d[done + i].len);
		}
		sent = rte_eth_tx_burst(p->port, 0, m, (uint16_t)k);
		p->tx += sent;
		done += sent;
		if (sent < k) {
			p->tx_full += k - sent;
			rte_pktmbuf_free_bulk(m + sent, k - sent);
			break;
		}
	}
	return (int)done;
}

/* ---- stats, close ------------------------------------------------------- */

/* Append " name=value" (snprintf rules: *pos counts what would be
 * written even past @p cap). */
static void put_stat(char *out, unsigned cap, int *pos, const char *name,
		     uint64_t v)
{
	size_t at = (size_t)*pos;
	int r;

	if (out && at < cap)
		r = snprintf(out + at, cap - at, "%s%s=%" PRIu64,
			     at ? " " : "", name, v);
	else
		r = snprintf(NULL, 0, "%s%s=%" PRIu64, at ? " " : "", name, v);
	if (r > 0)
		*pos += r;
}

/*
 * rx: frames polled; rx_kms: datagrams from the KMS handed to the caller;
 * tx: datagrams sent; tx_full: frames the TX queue refused (freed);
 * arp_sent / nd_sent: our solicitations for the KMS's MAC; arp_answered
 * (nd_answered): requests for our address answered. When non-zero:
 * tx_nombuf (mbuf allocations that failed: nothing sent), rx_too_long
 * (a KMS datagram longer than the caller's buffer), rx_unexpected (a KMS
 * datagram while resolving), drop_not_from_kms (UDP to our port from
 * another address or port), drop_<class> (kms_pkt_drop_name()), port_*
 * (the ethdev's own imissed/ierrors/oerrors/rx_nombuf).
 */
static int dpdk_stats(struct lg_io *io, char *out, unsigned cap)
{
	struct lg_dpdk *p = (struct lg_dpdk *)io;
	struct rte_eth_stats es;
	int pos = 0;

	if (out && cap)
		out[0] = '\0';
	put_stat(out, cap, &pos, "rx", p->rx);
	put_stat(out, cap, &pos, "rx_kms", p->rx_kms);
	put_stat(out, cap, &pos, "tx", p->tx);
	put_stat(out, cap, &pos, "tx_full", p->tx_full);
	put_stat(out, cap, &pos, p->v6 ? "nd_sent" : "arp_sent",
		 p->v6 ? p->nd_sent : p->arp_sent);
	put_stat(out, cap, &pos, "arp_answered", p->arp_answered);
	if (p->nd_answered)
		put_stat(out, cap, &pos, "nd_answered", p->nd_answered);
	if (p->tx_nombuf)
		put_stat(out, cap, &pos, "tx_nombuf", p->tx_nombuf);
	if (p->too_long)
		put_stat(out, cap, &pos, "rx_too_long", p->too_long);
	if (p->early)
		put_stat(out, cap, &pos, "rx_unexpected", p->early);
	if (p->not_from_kms)
		put_stat(out, cap, &pos, "drop_not_from_kms", p->not_from_kms);
	for (unsigned i = 0; i < KMS_PKT_DROP__COUNT; i++) {
		char name[32];

		if (!p->drops[i])
			continue;
		snprintf(name, sizeof(name), "drop_%s",
			 kms_pkt_drop_name((enum kms_pkt_verdict)i));
		put_stat(out, cap, &pos, name, p->drops[i]);
	}
	/* What the port itself dropped: RX ring overflow, no mbuf. */
	if (p->started && rte_eth_stats_get(p->port, &es) == 0) {
		if (es.imissed)
			put_stat(out, cap, &pos, "port_imissed", es.imissed);
		if (es.ierrors)
			put_stat(out, cap, &pos, "port_ierrors", es.ierrors);
		if (es.oerrors)
			put_stat(out, cap, &pos, "port_oerrors", es.oerrors);
		if (es.rx_nombuf)
			put_stat(out, cap, &pos, "port_rx_nombuf", es.rx_nombuf);
	}
	return pos;
}

static void dpdk_close(struct lg_io *io)
{
	struct lg_dpdk *p = (struct lg_dpdk *)io;

	if (!p)
		return;
	if (p->started)
		rte_eth_dev_stop(p->port);
	if (p->configured)
		rte_eth_dev_close(p->port);
	rte_mempool_free(p->mp);        /* after close: the port holds none */
	free(p);
}

/* ---- open ---------------------------------------------------------------- */

static uint16_t desc_count(unsigned long mbufs)
{
	uint16_t n = DESC_MAX;

	/* Leave most of the pool for frames in flight. */
	while (n > 64 && n > mbufs / 4)
		n /= 2;
	return n;
}

static int port_setup(struct lg_dpdk *p, unsigned long mbufs)
{
	struct rte_eth_conf conf;
	struct rte_eth_dev_info info;
	struct rte_eth_txconf txc;
	struct rte_ether_addr mac;
	uint16_t nrxd = desc_count(mbufs), ntxd = nrxd;
	int socket, rc;
	char name[RTE_MEMPOOL_NAMESIZE];
	unsigned cache = MP_CACHE;

	if (!rte_eth_dev_is_valid_port(p->port)) {
		ERR("no port %u (%u ports; did you pass a --vdev or a PCI "
		    "device to the EAL?)\n", p->port, rte_eth_dev_count_avail());
		return -1;
	}
	rc = rte_eth_dev_info_get(p->port, &info);
	if (rc) {
		ERR("port %u: device info: %s\n", p->port, rte_strerror(-rc));
		return -1;
	}
	socket = rte_eth_dev_socket_id(p->port);
	if (socket < 0)
		socket = (int)rte_socket_id();
	while (cache > 1 && cache * 3 / 2 > mbufs)
		cache /= 2;
	snprintf(name, sizeof(name), "lg_mbufs_%u", p->port);
	p->mp = rte_pktmbuf_pool_create(name, (unsigned)mbufs, cache, 0,
					RTE_MBUF_DEFAULT_BUF_SIZE, socket);
	if (!p->mp) {
		ERR("mempool of %lu mbufs: %s (with --no-huge, raise -m: "
		    "about 2.5 KiB per mbuf)\n", mbufs, rte_strerror(rte_errno));
		return -1;
	}

	memset(&conf, 0, sizeof(conf));
	if ((info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM) &&
	    (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_UDP_CKSUM)) {
		p->tx_ol = true;
		conf.txmode.offloads = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM |
				       RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
	}
	conf.rxmode.offloads = info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_CHECKSUM;
	rc = rte_eth_dev_configure(p->port, p->nq, p->nq, &conf);
	if (rc) {
		ERR("configure port %u (%s): %s\n", p->port, info.driver_name,
		    rte_strerror(-rc));
		return -1;
	}
	p->configured = true;
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(p->port, &nrxd, &ntxd);
	if (rc) {
		ERR("port %u: descriptors: %s\n", p->port, rte_strerror(-rc));
		return -1;
	}
	txc = info.default_txconf;
	txc.offloads = conf.txmode.offloads;
	for (uint16_t q = 0; q < p->nq; q++) {
		rc = rte_eth_rx_queue_setup(p->port, q, nrxd, (unsigned)socket,
					    NULL, p->mp);
		if (rc) {
			ERR("port %u: RX queue %u: %s\n", p->port, q,
			    rte_strerror(-rc));
			return -1;
		}
		rc = rte_eth_tx_queue_setup(p->port, q, ntxd, (unsigned)socket,
					    &txc);
		if (rc) {
			ERR("port %u: TX queue %u: %s\n", p->port, q,
			    rte_strerror(-rc));
			return -1;
		}
	}
	rc = rte_eth_dev_start(p->port);
	if (rc) {
		ERR("start port %u (%s): %s%s\n", p->port, info.driver_name,
		    rte_strerror(-rc), strstr(info.driver_name, "memif") ?
		    " (a memif client: is the server up on its socket?)" : "");
		return -1;
	}
	p->started = true;
	/* Only frames for our MAC (and broadcast, for ARP). Not every PMD
	 * can filter: classification checks the MAC anyway. */
	(void)rte_eth_promiscuous_disable(p->port);
	rc = rte_eth_macaddr_get(p->port, &mac);
	if (rc || !rte_is_unicast_ether_addr(&mac) ||
	    rte_is_zero_ether_addr(&mac)) {
		ERR("port %u (%s) has no unicast MAC address (give the vdev "
		    "one: mac=...)\n", p->port, info.driver_name);
		return -1;
	}
	memcpy(p->cfg.mac, mac.addr_bytes, KMS_PKT_ETH_ALEN);
	memcpy(p->flow.src_mac, mac.addr_bytes, KMS_PKT_ETH_ALEN);
	return 0;
}

static int wait_link(struct lg_dpdk *p)
{
	struct rte_eth_link link;

	for (int ms = 0;; ms += 100) {
		memset(&link, 0, sizeof(link));
		if (rte_eth_link_get_nowait(p->port, &link) == 0 &&
		    link.link_status == RTE_ETH_LINK_UP)
			return 0;
		if (ms >= LINK_WAIT_MS)
			break;
		rte_delay_us_sleep(100 * 1000);
	}
	ERR("port %u: link still down after %d s (memif: is the server "
	    "running on that socket?)\n", p->port, LINK_WAIT_MS / 1000);
	return -1;
}

struct lg_io *lg_io_dpdk_open(const char *spec)
{
	struct lg_dpdk *p;
	struct spec s;
	struct rte_ether_addr ours, kms;
	char kmsaddr[INET6_ADDRSTRLEN];

	if (parse_spec(spec, &s))
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p) {
		ERR("out of memory\n");
		return NULL;
	}
	p->io.name = "dpdk";
	p->io.send = dpdk_send;
	p->io.recv = dpdk_recv;
	p->io.stats = dpdk_stats;
	p->io.close = dpdk_close;
	p->port = (uint16_t)s.port;
	p->nq = (uint16_t)s.queues;
	p->v6 = s.has_kms_ip6;
	p->kms_port = (uint16_t)s.kms_port;
	if (s.has_ip4)
		memcpy(&p->cfg.ipv4, s.ip4, 4);
	if (s.has_ip6) {
		memcpy(p->cfg.ipv6, s.ip6, 16);
		p->cfg.has_ipv6 = true;
	}
	p->cfg.udp_port = (uint16_t)s.sport;
	p->flow.ipv6 = p->v6;
	memcpy(p->flow.src_ip, p->v6 ? s.ip6 : s.ip4, p->v6 ? 16 : 4);
	memcpy(p->flow.dst_ip, p->v6 ? s.kms_ip6 : s.kms_ip4, p->v6 ? 16 : 4);
	p->flow.src_port = (uint16_t)s.sport;
	p->flow.dst_port = (uint16_t)s.kms_port;
	if (s.has_kms_mac) {
		memcpy(p->flow.dst_mac, s.kms_mac, KMS_PKT_ETH_ALEN);
		p->kms_mac_known = true;
	}
	if (port_setup(p, s.mbufs) || wait_link(p) ||
	    (!p->kms_mac_known && resolve_kms_mac(p))) {
		dpdk_close(&p->io);
		return NULL;
	}
	inet_ntop(p->v6 ? AF_INET6 : AF_INET, p->flow.dst_ip, kmsaddr,
		  sizeof(kmsaddr));
	memcpy(ours.addr_bytes, p->cfg.mac, KMS_PKT_ETH_ALEN);
	memcpy(kms.addr_bytes, p->flow.dst_mac, KMS_PKT_ETH_ALEN);
	fprintf(stderr, "kms-loadgen: dpdk: port %u MAC " RTE_ETHER_ADDR_PRT_FMT
		" -> KMS %s%s%s:%u at " RTE_ETHER_ADDR_PRT_FMT " (%s), "
		"checksums in %s\n", p->port, RTE_ETHER_ADDR_BYTES(&ours),
		p->v6 ? "[" : "", kmsaddr, p->v6 ? "]" : "", p->kms_port,
		RTE_ETHER_ADDR_BYTES(&kms),
		s.has_kms_mac ? "given" : p->v6 ? "NDP" : "ARP",
		p->tx_ol ? "hardware" : "software");
	return &p->io;
}
