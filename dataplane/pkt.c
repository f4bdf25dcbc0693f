// SPDX-License-Identifier: Apache-2.0
/*
 * Frame classification, in-place ARP/ND/UDP replies, internet checksums
 * and frame builders (dataplane/kms_pkt.h). Plain C over byte buffers.
 *
 * Every multi-byte field is read and written byte by byte in network
 * order (get16/put16), so nothing depends on the frame's alignment or on
 * the host's endianness. Each parser bounds-checks against the length it
 * was given before it reads; nothing is written until a verdict is known.
 */
#include <string.h>

#include "kms_pkt.h"

#define ET_IPV4 0x0800
#define ET_ARP 0x0806
#define ET_VLAN 0x8100
#define ET_IPV6 0x86dd

#define PROTO_UDP 17
#define PROTO_ICMPV6 58
#define NH_FRAGMENT 44

#define ICMP6_NS 135
#define ICMP6_NA 136
#define ND_OPT_SLLA 1
#define ND_OPT_TLLA 2
#define NA_FLAG_S 0x40
#define NA_FLAG_O 0x20
#define ND_HOP_LIMIT 255
#define NS_LEN 24               /* NS without options */

#define ARP_HTYPE_ETH 1
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY 2

#define REPLY_TTL 64

static const uint8_t bcast_mac[KMS_PKT_ETH_ALEN] = {
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t all_nodes[16] = {
	0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01 };
static const uint8_t zero16[16];

static const char *const drop_names[KMS_PKT_DROP__COUNT] = {
	[KMS_PKT_DROP_NOT_FOR_US] = "not_for_us",
	[KMS_PKT_DROP_FRAGMENT] = "fragment",
	[KMS_PKT_DROP_BAD_CSUM] = "bad_csum",
	[KMS_PKT_DROP_BAD_LEN] = "bad_len",
	[KMS_PKT_DROP_NOT_UDP] = "not_udp",
	[KMS_PKT_DROP_WRONG_PORT] = "wrong_port",
	[KMS_PKT_DROP_L2] = "l2",
};

const char *kms_pkt_drop_name(enum kms_pkt_verdict v)
{
	return kms_pkt_is_drop(v) ? drop_names[v] : NULL;
}

/* ---- Checksums ---------------------------------------------------------- */

static uint32_t fold(uint64_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint32_t)s;
}

/*
 * RFC 1071: the one's complement sum is byte-order independent, so sum
 * native 32-bit words (memcpy: any alignment), fold, and swap the 16-bit
 * result once into the big-endian-words convention of the header. An odd
 * tail byte is padded with zero after it, as the RFC pads.
 */
uint32_t kms_pkt_csum_add(uint32_t sum, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t acc = 0;
	uint32_t w;
	uint16_t s;

	for (; len >= 4; p += 4, len -= 4) {
		memcpy(&w, p, 4);
		acc += w;
	}
	/* The 1-3 tail bytes as memcpy() into a zeroed word would place them,
	 * built in a register: bytes stored narrow and read back as a word
	 * stall store forwarding (twice a packet on the DPDK path). */
	if (len) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		w = (uint32_t)p[0] | (len > 1 ? (uint32_t)p[1] << 8 : 0) |
		    (len > 2 ? (uint32_t)p[2] << 16 : 0);
#else
		w = (uint32_t)p[0] << 24 | (len > 1 ? (uint32_t)p[1] << 16 : 0) |
		    (len > 2 ? (uint32_t)p[2] << 8 : 0);
#endif
		acc += w;
	}
	s = (uint16_t)fold(acc);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	s = (uint16_t)(s << 8 | s >> 8);
#endif
	return fold((uint64_t)sum + s);
}

uint16_t kms_pkt_csum_finish(uint32_t sum)
{
	return (uint16_t)~fold(sum);
}

uint16_t kms_pkt_csum(const void *buf, size_t len)
{
	return kms_pkt_csum_finish(kms_pkt_csum_add(0, buf, len));
}

/*
 * The pseudo-header sums add the addresses where they lie and the rest as
 * numbers: no temporary header is written and read back (narrow stores
 * followed by a wide load of the same bytes stall store forwarding, and
 * this runs once per packet in each direction).
 */
uint32_t kms_pkt_ipv4_phdr_sum(const void *src, const void *dst,
			       uint8_t proto, uint16_t l4_len)
{
	uint32_t s = kms_pkt_csum_add(kms_pkt_csum_add(0, src, 4), dst, 4);

	return fold((uint64_t)s + proto + l4_len);
}

uint32_t kms_pkt_ipv6_phdr_sum(const void *src, const void *dst,
			       uint8_t proto, uint32_t l4_len)
{
	uint32_t s = kms_pkt_csum_add(kms_pkt_csum_add(0, src, 16), dst, 16);

	return fold((uint64_t)s + (l4_len >> 16) + (l4_len & 0xffff) + proto);
}

/* Checksum of an L4 segment whose own checksum field holds its value:
 * 0 when valid. */
static uint16_t l4_verify(const uint8_t *l3, bool v6, const uint8_t *l4,
			  uint16_t l4_len, uint8_t proto)
{
	uint32_t s = v6 ? kms_pkt_ipv6_phdr_sum(l3 + 8, l3 + 24, proto, l4_len)
			: kms_pkt_ipv4_phdr_sum(l3 + 12, l3 + 16, proto, l4_len);

	return kms_pkt_csum_finish(kms_pkt_csum_add(s, l4, l4_len));
}

/* ---- Helpers shared by the parser, the replies and the builders --------- */

void kms_pkt_ipv6_solicited_node(const uint8_t addr[16], uint8_t out[16])
{
	memset(out, 0, 16);
	out[0] = 0xff;
	out[1] = 0x02;
	out[11] = 0x01;
	out[12] = 0xff;
	memcpy(out + 13, addr + 13, 3);
}

void kms_pkt_ipv6_mcast_mac(const uint8_t group[16],
			    uint8_t mac[KMS_PKT_ETH_ALEN])
{
	mac[0] = 0x33;
	mac[1] = 0x33;
	memcpy(mac + 2, group + 12, 4);
}

/* Ethernet header [+ tag]; returns its length. */
static size_t put_eth(uint8_t *f, const uint8_t *dst, const uint8_t *src,
		      bool vlan, uint16_t tci, uint16_t ethertype)
{
	size_t l2 = KMS_PKT_ETH_HLEN;

	memcpy(f, dst, KMS_PKT_ETH_ALEN);
	memcpy(f + 6, src, KMS_PKT_ETH_ALEN);
	if (vlan) {
		kms_pkt_put16(f + 12, ET_VLAN);
		kms_pkt_put16(f + 14, tci);
		l2 += KMS_PKT_VLAN_HLEN;
	}
	kms_pkt_put16(f + l2 - 2, ethertype);
	return l2;
}

/*
 * Write the IP and UDP headers in front of a payload of @p plen bytes that
 * is already in place at l3 + (20|40) + 8, and their checksums (or what
 * the NIC needs to complete them). @p psum: kms_pkt_csum_add(0, payload)
 * taken from the payload's source, so that no checksum reads back bytes
 * just written (see the pseudo-header sums); unused with UDP offload.
 * @p tc: IPv4 TOS / IPv6 traffic class. Lengths were checked by the
 * caller.
 */
static void put_ip_udp(uint8_t *l3, bool v6, const uint8_t *src,
		       const uint8_t *dst, uint16_t sport, uint16_t dport,
		       uint8_t tc, size_t plen, uint32_t psum, unsigned flags)
{
	uint16_t ulen = (uint16_t)(KMS_PKT_UDP_HLEN + plen);
	uint8_t *udp;
	uint32_t ph;
	uint16_t c;

	if (v6) {
		l3[0] = (uint8_t)(0x60 | tc >> 4);
		l3[1] = (uint8_t)(tc << 4);     /* flow label 0 */
		l3[2] = 0;
		l3[3] = 0;
		kms_pkt_put16(l3 + 4, ulen);
		l3[6] = PROTO_UDP;
		l3[7] = REPLY_TTL;
		memcpy(l3 + 8, src, 16);
		memcpy(l3 + 24, dst, 16);
		udp = l3 + KMS_PKT_IPV6_HLEN;
		ph = kms_pkt_ipv6_phdr_sum(src, dst, PROTO_UDP, ulen);
	} else {
		uint16_t tot = (uint16_t)(KMS_PKT_IPV4_HLEN + ulen);

		l3[0] = 0x45;
		l3[1] = tc;
		kms_pkt_put16(l3 + 2, tot);
		kms_pkt_put16(l3 + 4, 0);               /* ID 0: atomic, RFC 6864 */
		kms_pkt_put16(l3 + 6, 0x4000);          /* DF */
		l3[8] = REPLY_TTL;
		l3[9] = PROTO_UDP;
		kms_pkt_put16(l3 + 10, 0);
		memcpy(l3 + 12, src, 4);
		memcpy(l3 + 16, dst, 4);
		/* The pseudo header holds the addresses and the protocol:
		 * the IP header sum is that plus its other words. */
		ph = kms_pkt_ipv4_phdr_sum(src, dst, PROTO_UDP, ulen);
		if (!(flags & KMS_PKT_TX_IP_CSUM))
			kms_pkt_put16(l3 + 10, kms_pkt_csum_finish(fold(
				(uint64_t)ph - ulen + (0x4500u | tc) + tot +
				0x4000u + ((uint32_t)REPLY_TTL << 8))));
		udp = l3 + KMS_PKT_IPV4_HLEN;
	}
	kms_pkt_put16(udp, sport);
	kms_pkt_put16(udp + 2, dport);
	kms_pkt_put16(udp + 4, ulen);
	if (flags & KMS_PKT_TX_UDP_CSUM) {
		/* What rte_ipv4/6_phdr_cksum() stores: the NIC sums the
		 * datagram over it and writes the complement. */
		kms_pkt_put16(udp + 6, (uint16_t)ph);
		return;
	}
	c = kms_pkt_csum_finish(fold((uint64_t)ph + psum + sport + dport +
				     ulen));
	kms_pkt_put16(udp + 6, c ? c : 0xffff);         /* 0 means "none" (RFC 768) */
}

/* ---- Classification ----------------------------------------------------- */

/* What the destination MAC is to us: the only kinds we ever accept. */
enum dmac_kind { D_OURS, D_BCAST, D_V6MC, D_NONE };

static enum dmac_kind dmac_kind(const struct kms_pkt_cfg *cfg,
				const uint8_t *d)
{
	if (!memcmp(d, cfg->mac, KMS_PKT_ETH_ALEN))
		return D_OURS;
	if (!memcmp(d, bcast_mac, KMS_PKT_ETH_ALEN))
		return D_BCAST;
	if (d[0] == 0x33 && d[1] == 0x33)
		return D_V6MC;
	return D_NONE;          /* another host, or a group we never join */
}

/* An RX checksum flag pair says: skip (GOOD or NONE), bad, or unknown. */
enum rx_csum { RX_VERIFY, RX_SKIP, RX_BAD };

static enum rx_csum rx_csum(unsigned flags, unsigned good, unsigned bad)
{
	if (flags & good)
		return RX_SKIP;
	return (flags & bad) ? RX_BAD : RX_VERIFY;
}

/* A source address we may send a reply to (one host, not a group). */
static bool ipv4_src_ok(const uint8_t *a)
{
	return a[0] < 224 && memcmp(a, zero16, 4) != 0;
}

/*
 * The UDP part, common to both IP versions: @p l4_len bytes from the IP
 * payload length. Fills pi's L4 fields on KMS_PKT_REQUEST.
 */
static enum kms_pkt_verdict udp_classify(const struct kms_pkt_cfg *cfg,
					 const uint8_t *l3, bool v6,
					 size_t l4_off, size_t l4_len,
					 const uint8_t *frame, unsigned flags,
					 struct kms_pkt_info *pi)
{
	const uint8_t *udp = frame + l4_off;

	if (l4_len < KMS_PKT_UDP_HLEN || kms_pkt_get16(udp + 4) != l4_len)
		return KMS_PKT_DROP_BAD_LEN;
	if (kms_pkt_get16(udp + 2) != cfg->udp_port)
		return KMS_PKT_DROP_WRONG_PORT;
	if (kms_pkt_get16(udp) == 0)
		return KMS_PKT_DROP_NOT_FOR_US;        /* cannot answer port 0 */
	if (v6 && kms_pkt_get16(udp + 6) == 0)
		return KMS_PKT_DROP_BAD_CSUM;          /* RFC 8200 8.1 */
	switch (rx_csum(flags, KMS_PKT_RX_L4_CSUM_GOOD, KMS_PKT_RX_L4_CSUM_BAD)) {
	case RX_BAD:
		return KMS_PKT_DROP_BAD_CSUM;
	case RX_VERIFY:
		if (kms_pkt_get16(udp + 6) != 0 &&
		    l4_verify(l3, v6, udp, (uint16_t)l4_len, PROTO_UDP) != 0)
			return KMS_PKT_DROP_BAD_CSUM;
		break;
	case RX_SKIP:
		break;
	}
	pi->l4_off = (uint16_t)l4_off;
	pi->payload_off = (uint16_t)(l4_off + KMS_PKT_UDP_HLEN);
	pi->payload_len = (uint16_t)(l4_len - KMS_PKT_UDP_HLEN);
	return KMS_PKT_REQUEST;
}

static enum kms_pkt_verdict ipv4_classify(const struct kms_pkt_cfg *cfg,
					  const uint8_t *frame, size_t len,
					  enum dmac_kind dk, unsigned flags,
					  struct kms_pkt_info *pi)
{
	const uint8_t *ip = frame + pi->l3_off;
	size_t avail = len - pi->l3_off;
	size_t ihl, tot;

	if (dk != D_OURS)
		return KMS_PKT_DROP_NOT_FOR_US;
	if (avail < KMS_PKT_IPV4_HLEN || ip[0] >> 4 != 4)
		return KMS_PKT_DROP_BAD_LEN;
	ihl = (size_t)(ip[0] & 0x0f) * 4;
	tot = kms_pkt_get16(ip + 2);
	if (ihl < KMS_PKT_IPV4_HLEN || ihl > avail || tot < ihl || tot > avail)
		return KMS_PKT_DROP_BAD_LEN;
	switch (rx_csum(flags, KMS_PKT_RX_IP_CSUM_GOOD, KMS_PKT_RX_IP_CSUM_BAD)) {
	case RX_BAD:
		return KMS_PKT_DROP_BAD_CSUM;
	case RX_VERIFY:
		if (kms_pkt_csum(ip, ihl) != 0)
			return KMS_PKT_DROP_BAD_CSUM;
		break;
	case RX_SKIP:
		break;
	}
	if (cfg->ipv4 == 0 || memcmp(ip + 16, &cfg->ipv4, 4) != 0 ||
	    !ipv4_src_ok(ip + 12))
		return KMS_PKT_DROP_NOT_FOR_US;
	if (kms_pkt_get16(ip + 6) & 0x3fff)             /* MF | fragment offset */
		return KMS_PKT_DROP_FRAGMENT;
	if (ip[9] != PROTO_UDP)
		return KMS_PKT_DROP_NOT_UDP;
	pi->l3_len = (uint16_t)ihl;
	return udp_classify(cfg, ip, false, pi->l3_off + ihl, tot - ihl, frame,
			    flags, pi);
}

/*
 * A neighbour solicitation (RFC 4861 7.1.1 validation) for our address;
 * answered in place with an NA carrying our link-layer address.
 * @p ip: the IPv6 header, whose payload length @p plen fits in the frame.
 */
static enum kms_pkt_verdict nd_classify(const struct kms_pkt_cfg *cfg,
					uint8_t *frame, size_t cap,
					size_t plen, bool to_group,
					struct kms_pkt_info *pi)
{
	uint8_t *ip = frame + pi->l3_off;
	uint8_t *icmp = ip + KMS_PKT_IPV6_HLEN;
	const uint8_t *opt, *slla = NULL;
	uint8_t dst_mac[KMS_PKT_ETH_ALEN], dst_ip[16];
	bool dad = !memcmp(ip + 8, zero16, 16);
	size_t off, reply_len;
	uint16_t c;

	if (plen < 4)
		return KMS_PKT_DROP_BAD_LEN;
	if (icmp[0] != ICMP6_NS)
		return KMS_PKT_DROP_NOT_FOR_US;
	if (plen < NS_LEN)
		return KMS_PKT_DROP_BAD_LEN;
	if (icmp[1] != 0 || ip[7] != ND_HOP_LIMIT)
		return KMS_PKT_DROP_NOT_FOR_US;
	if (l4_verify(ip, true, icmp, (uint16_t)plen, PROTO_ICMPV6) != 0)
		return KMS_PKT_DROP_BAD_CSUM;
	if (memcmp(icmp + 8, cfg->ipv6, 16) != 0)
		return KMS_PKT_DROP_NOT_FOR_US;
	for (off = NS_LEN; off < plen; off += (size_t)opt[1] * 8) {
		opt = icmp + off;
		if (plen - off < 2 || opt[1] == 0 || (size_t)opt[1] * 8 > plen - off)
			return KMS_PKT_DROP_BAD_LEN;
		if (opt[0] == ND_OPT_SLLA && opt[1] == 1)
			slla = opt + 2;
	}
	/* A DAD probe goes to the solicited-node group and has no SLLA. */
	if (dad && (!to_group || slla))
		return KMS_PKT_DROP_NOT_FOR_US;
	if (slla && (slla[0] & 1))
		return KMS_PKT_DROP_NOT_FOR_US;
	reply_len = pi->l3_off + KMS_PKT_IPV6_HLEN + KMS_PKT_NA_LEN;
	if (reply_len > cap)
		return KMS_PKT_DROP_BAD_LEN;

	/* Verdict known: copy what the rewrite overwrites, then build. */
	if (dad) {
		kms_pkt_ipv6_mcast_mac(all_nodes, dst_mac);
		memcpy(dst_ip, all_nodes, 16);
	} else {
		memcpy(dst_mac, slla ? slla : frame + 6, KMS_PKT_ETH_ALEN);
		memcpy(dst_ip, ip + 8, 16);
	}
	memcpy(frame, dst_mac, KMS_PKT_ETH_ALEN);
	memcpy(frame + 6, cfg->mac, KMS_PKT_ETH_ALEN);
	ip[0] = 0x60;
	ip[1] = ip[2] = ip[3] = 0;
	kms_pkt_put16(ip + 4, KMS_PKT_NA_LEN);
	ip[6] = PROTO_ICMPV6;
	ip[7] = ND_HOP_LIMIT;
	memcpy(ip + 8, cfg->ipv6, 16);
	memcpy(ip + 24, dst_ip, 16);
	icmp[0] = ICMP6_NA;
	icmp[1] = 0;
	kms_pkt_put16(icmp + 2, 0);
	icmp[4] = dad ? NA_FLAG_O : NA_FLAG_S | NA_FLAG_O;
	icmp[5] = icmp[6] = icmp[7] = 0;
	memcpy(icmp + 8, cfg->ipv6, 16);
	icmp[24] = ND_OPT_TLLA;
	icmp[25] = 1;
	memcpy(icmp + 26, cfg->mac, KMS_PKT_ETH_ALEN);
	c = kms_pkt_csum_finish(kms_pkt_csum_add(
		kms_pkt_ipv6_phdr_sum(cfg->ipv6, dst_ip, PROTO_ICMPV6,
				      KMS_PKT_NA_LEN), icmp, KMS_PKT_NA_LEN));
	kms_pkt_put16(icmp + 2, c);

	pi->l3_len = KMS_PKT_IPV6_HLEN;
	pi->l4_off = (uint16_t)(pi->l3_off + KMS_PKT_IPV6_HLEN);
	pi->reply_len = (uint16_t)reply_len;
	return KMS_PKT_ND;
}

static enum kms_pkt_verdict ipv6_classify(const struct kms_pkt_cfg *cfg,
					  uint8_t *frame, size_t len,
					  size_t cap, enum dmac_kind dk,
					  unsigned flags,
					  struct kms_pkt_info *pi)
{
	const uint8_t *ip = frame + pi->l3_off;
	size_t avail = len - pi->l3_off;
	uint8_t snm[16];
	bool unicast;
	size_t plen;

	if (dk != D_OURS && dk != D_V6MC)
		return KMS_PKT_DROP_NOT_FOR_US;
	if (avail < KMS_PKT_IPV6_HLEN || ip[0] >> 4 != 6)
		return KMS_PKT_DROP_BAD_LEN;
	plen = kms_pkt_get16(ip + 4);
	if (plen == 0 || plen > avail - KMS_PKT_IPV6_HLEN)
		return KMS_PKT_DROP_BAD_LEN;
	if (!cfg->has_ipv6)
		return KMS_PKT_DROP_NOT_FOR_US;
	kms_pkt_ipv6_solicited_node(cfg->ipv6, snm);
	unicast = !memcmp(ip + 24, cfg->ipv6, 16);
	if ((!unicast && memcmp(ip + 24, snm, 16) != 0) || ip[8] == 0xff)
		return KMS_PKT_DROP_NOT_FOR_US;
	pi->is_ipv6 = true;
	pi->l3_len = KMS_PKT_IPV6_HLEN;
	switch (ip[6]) {
	case NH_FRAGMENT:
		return KMS_PKT_DROP_FRAGMENT;
	case PROTO_ICMPV6:
		return nd_classify(cfg, frame, cap, plen, !unicast, pi);
	case PROTO_UDP:
		break;
	default:
		return KMS_PKT_DROP_NOT_UDP;
	}
	if (dk != D_OURS || !unicast || !memcmp(ip + 8, zero16, 16))
		return KMS_PKT_DROP_NOT_FOR_US;
	return udp_classify(cfg, ip, true, pi->l3_off + KMS_PKT_IPV6_HLEN, plen,
			    frame, flags, pi);
}

/* An ARP request for our IPv4 address, answered in place (RFC 826). */
static enum kms_pkt_verdict arp_classify(const struct kms_pkt_cfg *cfg,
					 uint8_t *frame, size_t len,
					 size_t cap, enum dmac_kind dk,
					 struct kms_pkt_info *pi)
{
	uint8_t *a = frame + pi->l3_off;
	uint8_t sha[KMS_PKT_ETH_ALEN], spa[4];
	size_t reply_len = pi->l3_off + KMS_PKT_ARP_LEN;

	if (dk != D_OURS && dk != D_BCAST)
		return KMS_PKT_DROP_NOT_FOR_US;
	if (len < reply_len)
		return KMS_PKT_DROP_BAD_LEN;
	if (kms_pkt_get16(a) != ARP_HTYPE_ETH || kms_pkt_get16(a + 2) != ET_IPV4 ||
	    a[4] != KMS_PKT_ETH_ALEN || a[5] != 4)
		return KMS_PKT_DROP_L2;
	/* sha a+8, spa a+14, tha a+18, tpa a+24. A probe (spa 0.0.0.0) is
	 * answered; a gratuitous announcement (spa == tpa) is not. */
	if (kms_pkt_get16(a + 6) != ARP_OP_REQUEST || cfg->ipv4 == 0 ||
	    memcmp(a + 24, &cfg->ipv4, 4) != 0 || !memcmp(a + 14, a + 24, 4) ||
	    (a[8] & 1) || a[14] >= 224)
		return KMS_PKT_DROP_NOT_FOR_US;
	if (reply_len > cap)
		return KMS_PKT_DROP_BAD_LEN;

	memcpy(sha, a + 8, sizeof(sha));
	memcpy(spa, a + 14, sizeof(spa));
	memcpy(frame, sha, KMS_PKT_ETH_ALEN);
	memcpy(frame + 6, cfg->mac, KMS_PKT_ETH_ALEN);
	kms_pkt_put16(a + 6, ARP_OP_REPLY);
	memcpy(a + 8, cfg->mac, KMS_PKT_ETH_ALEN);
	memcpy(a + 14, &cfg->ipv4, 4);
	memcpy(a + 18, sha, KMS_PKT_ETH_ALEN);
	memcpy(a + 24, spa, 4);
	pi->l3_len = KMS_PKT_ARP_LEN;
	pi->reply_len = (uint16_t)reply_len;
	return KMS_PKT_ARP;
}

enum kms_pkt_verdict kms_pkt_classify(const struct kms_pkt_cfg *cfg,
				      uint8_t *frame, size_t len, size_t cap,
				      unsigned flags, struct kms_pkt_info *info)
{
	/*
	 * Written in place and put back on a drop: building it on the stack
	 * and copying it out at the end read back as wide words what the
	 * classifiers had just stored as 16-bit fields, a store-forwarding
	 * stall on every packet.
	 */
	const struct kms_pkt_info saved = *info;
	enum kms_pkt_verdict v;
	enum dmac_kind dk;
	uint16_t et, l2_len = KMS_PKT_ETH_HLEN, tci = 0;

	if (len < KMS_PKT_ETH_HLEN)
		return KMS_PKT_DROP_BAD_LEN;
	dk = dmac_kind(cfg, frame);
	if (dk == D_NONE || (frame[6] & 1))
		return KMS_PKT_DROP_NOT_FOR_US;
	et = kms_pkt_get16(frame + 12);
	if (et == ET_VLAN) {
		if (len < KMS_PKT_ETH_HLEN + KMS_PKT_VLAN_HLEN)
			return KMS_PKT_DROP_BAD_LEN;
		tci = kms_pkt_get16(frame + 14);
		l2_len += KMS_PKT_VLAN_HLEN;
		et = kms_pkt_get16(frame + 16);
	}
	if (et != ET_IPV4 && et != ET_IPV6 && et != ET_ARP)
		return KMS_PKT_DROP_L2; /* incl. a second tag and QinQ */
	*info = (struct kms_pkt_info){ .l2_len = l2_len, .l3_off = l2_len,
				       .vlan_tci = tci,
				       .has_vlan = l2_len != KMS_PKT_ETH_HLEN };
	if (et == ET_IPV4)
		v = ipv4_classify(cfg, frame, len, dk, flags, info);
	else if (et == ET_IPV6)
		v = ipv6_classify(cfg, frame, len, cap, dk, flags, info);
	else
		v = arp_classify(cfg, frame, len, cap, dk, info);
	if (kms_pkt_is_drop(v))
		*info = saved;
	return v;
}

/* ---- Replies ------------------------------------------------------------ */

/* @p pi describes a request (UDP) frame as kms_pkt_classify() leaves it. */
static bool request_info_ok(const struct kms_pkt_info *pi)
{
	size_t l2 = KMS_PKT_ETH_HLEN + (pi->has_vlan ? KMS_PKT_VLAN_HLEN : 0);

	if (pi->l2_len != l2 || pi->l3_off != l2)
		return false;
	if (pi->is_ipv6 ? pi->l3_len != KMS_PKT_IPV6_HLEN
			: pi->l3_len < KMS_PKT_IPV4_HLEN || pi->l3_len > 60)
		return false;
	return pi->l4_off == pi->l3_off + pi->l3_len &&
	       pi->payload_off == pi->l4_off + KMS_PKT_UDP_HLEN;
}

size_t kms_pkt_reply_udp(struct kms_pkt_info *info, uint8_t *frame, size_t cap,
			 const void *payload, size_t payload_len,
			 unsigned flags)
{
	bool v6 = info->is_ipv6;
	size_t l3 = info->l3_off;
	size_t l3_len = v6 ? KMS_PKT_IPV6_HLEN : KMS_PKT_IPV4_HLEN;
	size_t po = l3 + l3_len + KMS_PKT_UDP_HLEN;
	size_t max_payload = UINT16_MAX - KMS_PKT_UDP_HLEN -
			     (v6 ? 0 : KMS_PKT_IPV4_HLEN);
	uint8_t src[16], dst[16];
	uint64_t dmac = 0, smac = 0;
	const uint8_t *ip = frame + l3, *udp = frame + info->l4_off;
	uint16_t sport, dport;
	uint32_t psum;
	uint8_t tc;

	/* po <= the request's payload_off: options only ever shrink. */
	if (!request_info_ok(info) || (size_t)info->payload_off > cap ||
	    po > cap || payload_len > max_payload || payload_len > cap - po)
		return 0;

	/* Everything the rewrite overwrites is read first; then the payload
	 * goes in (memmove: it may live in this frame), then the headers,
	 * which lie wholly before it. */
	/* The MACs in two words (a stack copy read back 6 bytes at an offset
	 * of 6 would straddle the stores that wrote it: no forwarding). */
	memcpy(&dmac, frame, KMS_PKT_ETH_ALEN);
	memcpy(&smac, frame + KMS_PKT_ETH_ALEN, KMS_PKT_ETH_ALEN);
	if (v6) {
		tc = (uint8_t)((ip[0] << 4 | ip[1] >> 4) & 0xfc);
		memcpy(src, ip + 24, 16);
		memcpy(dst, ip + 8, 16);
	} else {
		tc = ip[1] & 0xfc;
		memcpy(src, ip + 16, 4);
		memcpy(dst, ip + 12, 4);
	}
	sport = kms_pkt_get16(udp + 2);
	dport = kms_pkt_get16(udp);

	psum = flags & KMS_PKT_TX_UDP_CSUM ? 0
					   : kms_pkt_csum_add(0, payload, payload_len);
	memmove(frame + po, payload, payload_len);
	memcpy(frame, &smac, KMS_PKT_ETH_ALEN);
	memcpy(frame + KMS_PKT_ETH_ALEN, &dmac, KMS_PKT_ETH_ALEN);
	put_ip_udp(frame + l3, v6, src, dst, sport, dport, tc, payload_len,
		   psum, flags);

	info->l3_len = (uint16_t)l3_len;
	info->l4_off = (uint16_t)(l3 + l3_len);
	info->payload_off = (uint16_t)po;
	info->payload_len = (uint16_t)payload_len;
	info->reply_len = (uint16_t)(po + payload_len);
	return po + payload_len;
}

/* ---- Builders ----------------------------------------------------------- */

size_t kms_pkt_build_udp(const struct kms_pkt_flow *f, const void *payload,
			 size_t payload_len, uint8_t *frame, size_t cap)
{
	size_t l2 = KMS_PKT_ETH_HLEN + (f->vlan ? KMS_PKT_VLAN_HLEN : 0);
	size_t l3_len = f->ipv6 ? KMS_PKT_IPV6_HLEN : KMS_PKT_IPV4_HLEN;
	size_t po = l2 + l3_len + KMS_PKT_UDP_HLEN;
	size_t max_payload = UINT16_MAX - KMS_PKT_UDP_HLEN -
			     (f->ipv6 ? 0 : KMS_PKT_IPV4_HLEN);
	uint32_t psum;

	if (cap < po || payload_len > cap - po || payload_len > max_payload)
		return 0;
	psum = kms_pkt_csum_add(0, payload, payload_len);
	memmove(frame + po, payload, payload_len);
	put_eth(frame, f->dst_mac, f->src_mac, f->vlan, f->vlan_tci,
		f->ipv6 ? ET_IPV6 : ET_IPV4);
	put_ip_udp(frame + l2, f->ipv6, f->src_ip, f->dst_ip, f->src_port,
		   f->dst_port, 0, payload_len, psum, 0);
	return po + payload_len;
}

size_t kms_pkt_build_arp_request(const struct kms_pkt_flow *f, uint8_t *frame,
				 size_t cap)
{
	size_t l2 = KMS_PKT_ETH_HLEN + (f->vlan ? KMS_PKT_VLAN_HLEN : 0);
	uint8_t *a = frame + l2;

	if (cap < l2 + KMS_PKT_ARP_LEN)
		return 0;
	put_eth(frame, f->dst_mac, f->src_mac, f->vlan, f->vlan_tci, ET_ARP);
	kms_pkt_put16(a, ARP_HTYPE_ETH);
	kms_pkt_put16(a + 2, ET_IPV4);
	a[4] = KMS_PKT_ETH_ALEN;
	a[5] = 4;
	kms_pkt_put16(a + 6, ARP_OP_REQUEST);
	memcpy(a + 8, f->src_mac, KMS_PKT_ETH_ALEN);
	memcpy(a + 14, f->src_ip, 4);
	memset(a + 18, 0, KMS_PKT_ETH_ALEN);
	memcpy(a + 24, f->dst_ip, 4);
	return l2 + KMS_PKT_ARP_LEN;
}

size_t kms_pkt_build_ns(const struct kms_pkt_flow *f, const uint8_t target[16],
			uint8_t *frame, size_t cap)
{
	size_t l2 = KMS_PKT_ETH_HLEN + (f->vlan ? KMS_PKT_VLAN_HLEN : 0);
	bool dad = !memcmp(f->src_ip, zero16, 16);
	size_t ilen = NS_LEN + (dad ? 0 : 8);
	uint8_t *ip = frame + l2, *icmp = ip + KMS_PKT_IPV6_HLEN;
	uint16_t c;

	if (cap < l2 + KMS_PKT_IPV6_HLEN + ilen)
		return 0;
	put_eth(frame, f->dst_mac, f->src_mac, f->vlan, f->vlan_tci, ET_IPV6);
	ip[0] = 0x60;
	ip[1] = ip[2] = ip[3] = 0;
	kms_pkt_put16(ip + 4, (uint16_t)ilen);
	ip[6] = PROTO_ICMPV6;
	ip[7] = ND_HOP_LIMIT;
	memcpy(ip + 8, f->src_ip, 16);
	memcpy(ip + 24, f->dst_ip, 16);
	memset(icmp, 0, NS_LEN);
	icmp[0] = ICMP6_NS;
	memcpy(icmp + 8, target, 16);
	if (!dad) {
		icmp[24] = ND_OPT_SLLA;
		icmp[25] = 1;
		memcpy(icmp + 26, f->src_mac, KMS_PKT_ETH_ALEN);
	}
	c = kms_pkt_csum_finish(kms_pkt_csum_add(
		kms_pkt_ipv6_phdr_sum(f->src_ip, f->dst_ip, PROTO_ICMPV6,
				      (uint32_t)ilen), icmp, ilen));
	kms_pkt_put16(icmp + 2, c);
	return l2 + KMS_PKT_IPV6_HLEN + ilen;
}
