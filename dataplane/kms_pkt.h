/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_pkt.h
 * @brief Frame classification and in-place replies for the DPDK dataplane.
 *
 * Plain C over byte buffers: no DPDK type or header appears here, so the
 * module is unit-tested on its own and reused by the load generator. The
 * caller hands in one contiguous frame (the first segment of an mbuf, a
 * recvmsg() buffer) and gets a verdict:
 *
 *   KMS_PKT_REQUEST  a UDP datagram for our address and port: its payload
 *                    is located in struct kms_pkt_info; answer it with
 *                    kms_pkt_reply_udp() once the engine has a reply.
 *   KMS_PKT_ARP      an ARP request for our IPv4 address: the ARP reply has
 *                    been written over the request; send info.reply_len bytes.
 *   KMS_PKT_ND       an ICMPv6 neighbour solicitation for our IPv6 address:
 *                    the neighbour advertisement has been written over it;
 *                    send info.reply_len bytes.
 *   KMS_PKT_DROP_*   anything else, one value per counted drop class.
 *
 * Accepted framing: Ethernet II, untagged or with exactly one 802.1Q tag
 * (TPID 0x8100, any VID including 0; the tag is kept in every reply). Then
 * IPv4 (options allowed, the header length comes from IHL) or IPv6 with
 * UDP or ICMPv6 directly after the fixed header, or ARP. Bytes after the IP
 * datagram (Ethernet padding to 60 bytes, an FCS) are ignored.
 *
 * Whom we answer. UDP only when the destination MAC is exactly ours and the
 * destination IP is exactly ours: UDP to a broadcast or multicast MAC or IP
 * is KMS_PKT_DROP_NOT_FOR_US, as a KMS never answers a group. ARP requests
 * may come to the broadcast MAC or to ours. Neighbour solicitations may come
 * to our MAC and address or to any 33:33:xx:xx:xx:xx MAC and our
 * solicited-node multicast address. We never answer a source that cannot
 * be one host: a group source MAC, an IPv4 source of 0.0.0.0 or from
 * 224.0.0.0 up (multicast, reserved, broadcast), an IPv6 source that is
 * multicast or unspecified
 * (except a duplicate address detection probe), UDP source port 0; those
 * are KMS_PKT_DROP_NOT_FOR_US too, so the server cannot be used to reflect
 * traffic onto a group.
 *
 * Checks are made in this order (the first failure names the class):
 * L2 (destination MAC, ethertype, tag count), IP lengths, IPv4 header
 * checksum, destination/source address, fragment, protocol, UDP length,
 * destination port, UDP checksum. So a frame for another port with a bad
 * UDP checksum counts as WRONG_PORT.
 *
 * Checksum conventions. A "sum" (uint32_t) is a folded 16-bit one's
 * complement sum of the data read as big-endian 16-bit words, in host
 * order; a "checksum" (uint16_t) is its complement, the value to store
 * big-endian in a header field. Storing them big-endian gives the same
 * bytes DPDK's rte_raw_cksum()/rte_ipv4_cksum() store natively.
 *
 * Thread safety: every function is reentrant and keeps no state. Nothing
 * is allocated; no function reads past the length or writes past the
 * capacity it is given.
 */
#ifndef KMS_PKT_H
#define KMS_PKT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KMS_PKT_ETH_ALEN 6
#define KMS_PKT_ETH_HLEN 14     /**< Ethernet II header */
#define KMS_PKT_VLAN_HLEN 4     /**< one 802.1Q tag */
#define KMS_PKT_IPV4_HLEN 20    /**< IPv4 header without options */
#define KMS_PKT_IPV6_HLEN 40
#define KMS_PKT_UDP_HLEN 8
#define KMS_PKT_ARP_LEN 28      /**< Ethernet/IPv4 ARP body */
#define KMS_PKT_NA_LEN 32       /**< NA with a target link-layer option */
/** Longest header stack kms_pkt_classify() accepts in front of a UDP
 *  payload: Ethernet, one tag, IPv4 with 40 bytes of options, UDP (86). */
#define KMS_PKT_MAX_HDR (KMS_PKT_ETH_HLEN + KMS_PKT_VLAN_HLEN + 60 + \
			 KMS_PKT_UDP_HLEN)

/** Our addresses, fixed for the life of the dataplane. */
struct kms_pkt_cfg {
	uint8_t mac[KMS_PKT_ETH_ALEN];  /**< our unicast MAC */
	uint32_t ipv4;          /**< network byte order; 0 = no IPv4 (all
				     IPv4 and ARP is then NOT_FOR_US) */
	uint8_t ipv6[16];       /**< our IPv6 address, valid if has_ipv6 */
	bool has_ipv6;          /**< false: all IPv6 is NOT_FOR_US */
	uint16_t udp_port;      /**< host order */
};

/**
 * Classification result. The drop classes come first and are dense from 0,
 * so `drops[v]++` indexes a counter array of KMS_PKT_DROP__COUNT entries;
 * kms_pkt_is_drop() tells them apart from the three accepted verdicts.
 * ("Engine refused" is not a packet-level class: the caller counts it.)
 */
enum kms_pkt_verdict {
	/** Not addressed to us, or nothing we answer: destination MAC neither
	 *  ours nor an accepted group MAC; destination IP not ours; ARP for
	 *  another IP, ARP replies and other ARP operations, gratuitous ARP;
	 *  ICMPv6 other than a valid NS for our address (NA, RS, RA, echo,
	 *  MLD...), NS with hop limit != 255 or code != 0; UDP to a group
	 *  MAC or address; a source we must not answer (see above). */
	KMS_PKT_DROP_NOT_FOR_US = 0,
	/** IPv4 with MF set or a non-zero fragment offset; IPv6 whose next
	 *  header is a fragment header. Never reassembled. */
	KMS_PKT_DROP_FRAGMENT,
	/** IPv4 header checksum; UDP checksum (IPv4: only when non-zero;
	 *  IPv6: zero is invalid too); ICMPv6 checksum of an NS; or the
	 *  caller's flags say the NIC found a bad checksum. */
	KMS_PKT_DROP_BAD_CSUM,
	/** Truncated or malformed: frame shorter than its headers, IP version
	 *  not matching the ethertype, IHL < 5, IPv4 total length < IHL or
	 *  longer than the frame, IPv6 payload length 0 (jumbogram) or longer
	 *  than the frame, UDP length < 8 or != the IP payload length, NS
	 *  shorter than 24 bytes or with a zero-length option; also an NS
	 *  whose advertisement would not fit in @p cap. */
	KMS_PKT_DROP_BAD_LEN,
	/** IP protocol other than UDP (ICMPv4, TCP, ...). For IPv6, any next
	 *  header other than UDP, ICMPv6 or fragment, including every other
	 *  extension header (hop-by-hop, routing, destination options...):
	 *  we do not walk extension chains. */
	KMS_PKT_DROP_NOT_UDP,
	/** UDP for our address but another destination port. */
	KMS_PKT_DROP_WRONG_PORT,
	/** Unknown ethertype (incl. 802.3 length frames), a QinQ TPID
	 *  (0x88a8) or more than one 802.1Q tag, ARP for a hardware/protocol
	 *  pair other than Ethernet/IPv4. */
	KMS_PKT_DROP_L2,
	KMS_PKT_DROP__COUNT,

	KMS_PKT_REQUEST = KMS_PKT_DROP__COUNT, /**< UDP for us: see info */
	KMS_PKT_ARP,            /**< ARP reply built in place */
	KMS_PKT_ND,             /**< neighbour advertisement built in place */
};

/** True for the KMS_PKT_DROP_* values. */
static inline bool kms_pkt_is_drop(enum kms_pkt_verdict v)
{
	return (unsigned)v < KMS_PKT_DROP__COUNT;
}

/**
 * Short stable name of a drop class for stats and telemetry ("not_for_us",
 * "fragment", "bad_csum", "bad_len", "not_udp", "wrong_port", "l2").
 * @return a static string, or NULL if @p v is not a drop class.
 */
const char *kms_pkt_drop_name(enum kms_pkt_verdict v);

/**
 * Flags. RX flags go to kms_pkt_classify() and report what the NIC already
 * checked; they map one to one onto DPDK's RTE_MBUF_F_RX_IP_CKSUM_* and
 * RTE_MBUF_F_RX_L4_CKSUM_* states: UNKNOWN = neither bit (verify in
 * software), GOOD (skip), BAD (KMS_PKT_DROP_BAD_CSUM), NONE = both bits
 * (the field may be wrong but the data was verified, e.g. a partial
 * checksum from a local sender on a veth/virtio link: skip). The L4 bits
 * apply to UDP only; an NS's ICMPv6 checksum is always verified in
 * software. The "IPv6 UDP checksum is not zero" rule is always enforced.
 *
 * TX flags go to kms_pkt_reply_udp() and say the NIC will fill a checksum.
 */
enum kms_pkt_flag {
	KMS_PKT_RX_IP_CSUM_GOOD = 1u << 0,
	KMS_PKT_RX_IP_CSUM_BAD = 1u << 1,
	KMS_PKT_RX_L4_CSUM_GOOD = 1u << 2,
	KMS_PKT_RX_L4_CSUM_BAD = 1u << 3,
	/** The NIC computes the IPv4 header checksum: the field is left 0.
	 *  Caller sets RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM. */
	KMS_PKT_TX_IP_CSUM = 1u << 8,
	/** The NIC computes the UDP checksum: the field holds the folded,
	 *  uncomplemented pseudo-header sum, as rte_ipv4_phdr_cksum() /
	 *  rte_ipv6_phdr_cksum() give it. Caller sets RTE_MBUF_F_TX_UDP_CKSUM
	 *  and RTE_MBUF_F_TX_IPV4 or _IPV6, l2_len = info.l2_len (the inline
	 *  tag included) and l3_len = info.l3_len *after* the reply. */
	KMS_PKT_TX_UDP_CSUM = 1u << 9,
};

/**
 * Where things are in a classified frame. Offsets are from the start of
 * the frame. Filled by kms_pkt_classify() for KMS_PKT_REQUEST, KMS_PKT_ARP
 * and KMS_PKT_ND only; updated by kms_pkt_reply_udp() to describe the
 * reply. 18 bytes of plain data: may be copied into mbuf private space.
 */
struct kms_pkt_info {
	uint16_t l2_len;        /**< 14, or 18 with a tag */
	uint16_t l3_off;        /**< == l2_len */
	uint16_t l3_len;        /**< IPv4 IHL * 4, or 40; ARP: 28 */
	uint16_t l4_off;        /**< UDP or ICMPv6 header; 0 for ARP */
	uint16_t payload_off;   /**< REQUEST: UDP payload; else 0 */
	uint16_t payload_len;   /**< REQUEST: UDP length - 8; else 0 */
	uint16_t reply_len;     /**< ARP/ND: frame length of the built reply;
				     REQUEST: 0 until kms_pkt_reply_udp() */
	uint16_t vlan_tci;      /**< host order PCP|DEI|VID, if has_vlan */
	bool has_vlan;
	bool is_ipv6;
};

/**
 * Classify one frame and, for ARP and NS, answer it in place.
 *
 * @param cfg   our addresses.
 * @param frame the frame, contiguous; read in [0, len). Written only for
 *              KMS_PKT_ARP and KMS_PKT_ND, in [0, info->reply_len).
 * @param len   bytes received.
 * @param cap   bytes writable at @p frame (>= len). Only ND uses more than
 *              len: the NA (with its target link-layer option) is 72 bytes
 *              after L2 while an option-less NS (a DAD probe) is only 64.
 *              A DPDK caller passes data_len + tailroom.
 * @param flags KMS_PKT_RX_* bits (0 = verify everything in software).
 * @param info  out: written for REQUEST/ARP/ND only; untouched on drops.
 * @return a verdict. On a drop the frame is unmodified.
 *
 * The frame is never modified for KMS_PKT_REQUEST. For ARP and ND the
 * caller sends info->reply_len bytes (may be below the 60-byte Ethernet
 * minimum; NICs pad) from the same buffer. The reply for ARP goes to the
 * requester's sender hardware address; the NA goes to the NS's source
 * link-layer option (else its Ethernet source) with S and O set, or for a
 * DAD probe (source ::) to ff02::1 / 33:33:00:00:00:01 with only O set.
 */
enum kms_pkt_verdict kms_pkt_classify(const struct kms_pkt_cfg *cfg,
				      uint8_t *frame, size_t len, size_t cap,
				      unsigned flags, struct kms_pkt_info *info);

/**
 * Turn a classified request frame into its reply, in place.
 *
 * Writes @p payload at the (new) payload offset with memmove(), so it may
 * point anywhere, including into @p frame itself (e.g. at the request's
 * payload, which the engine overwrote). Then: swaps the MACs, the IP
 * addresses and the UDP ports; keeps the 802.1Q tag; IPv4: rewrites the
 * header without options (IHL 5; the request's options such as source
 * routes are not echoed, so the UDP header may move forward), total
 * length, ID 0, DF, TTL 64, TOS = request DSCP with ECN 0; IPv6: traffic
 * class = request DSCP, flow label 0, payload length, hop limit 64; UDP
 * length. Checksums are computed in software unless @p flags carry
 * KMS_PKT_TX_IP_CSUM (IPv4 field left 0) or KMS_PKT_TX_UDP_CSUM (UDP field
 * = pseudo-header sum for the NIC to complete); a software UDP checksum
 * of 0 is sent as 0xffff.
 *
 * @param info  in: from kms_pkt_classify() returning KMS_PKT_REQUEST for
 *              this frame; out (on success): l3_len, l4_off, payload_off,
 *              payload_len and reply_len describe the reply.
 * @param frame the request frame; written in [0, return value).
 * @param cap   bytes writable at @p frame. The reply may be longer than the
 *              request (a 14-byte ERROR to a 12-byte request).
 * @return the reply's frame length, or 0 if it does not fit in @p cap or
 *         in the IP/UDP length fields, or @p info is not a request's; on 0
 *         neither @p frame nor @p info is modified.
 */
size_t kms_pkt_reply_udp(struct kms_pkt_info *info, uint8_t *frame, size_t cap,
			 const void *payload, size_t payload_len,
			 unsigned flags);

/* ---- Checksums ---------------------------------------------------------- */

/**
 * Add @p len bytes at @p buf to @p sum (see the conventions above). To
 * checksum data in several pieces, every piece but the last must have an
 * even length. @return the new folded sum (<= 0xffff).
 */
uint32_t kms_pkt_csum_add(uint32_t sum, const void *buf, size_t len);

/** Complement of the folded @p sum: the checksum field value, host order. */
uint16_t kms_pkt_csum_finish(uint32_t sum);

/** Checksum of one buffer: kms_pkt_csum_finish(kms_pkt_csum_add(0, ...)).
 *  Over a header that includes its own valid checksum field it gives 0. */
uint16_t kms_pkt_csum(const void *buf, size_t len);

/** Sum of the IPv4 pseudo-header (src, dst: 4 bytes each, as on the wire;
 *  @p l4_len: the UDP/TCP length, host order). */
uint32_t kms_pkt_ipv4_phdr_sum(const void *src, const void *dst,
			       uint8_t proto, uint16_t l4_len);

/** Sum of the IPv6 pseudo-header (src, dst: 16 bytes each). */
uint32_t kms_pkt_ipv6_phdr_sum(const void *src, const void *dst,
			       uint8_t proto, uint32_t l4_len);

/* ---- Frame builders (tests, load generator, DPDK tests) ----------------- */

/** Endpoints and framing of a frame to build. */
struct kms_pkt_flow {
	uint8_t src_mac[KMS_PKT_ETH_ALEN];
	uint8_t dst_mac[KMS_PKT_ETH_ALEN];
	bool ipv6;
	uint8_t src_ip[16];     /**< IPv4: the first 4 bytes, wire order */
	uint8_t dst_ip[16];
	uint16_t src_port;      /**< host order (UDP only) */
	uint16_t dst_port;
	bool vlan;              /**< insert one 802.1Q tag */
	uint16_t vlan_tci;      /**< host order */
};

/**
 * Build Ethernet [802.1Q] IPv4|IPv6 UDP with @p payload into @p frame:
 * IPv4 ID 0, DF, TTL 64; IPv6 hop limit 64; correct IPv4 header and UDP
 * checksums. No padding to 60 bytes.
 * @return the frame length, or 0 if it exceeds @p cap or the length fields.
 */
size_t kms_pkt_build_udp(const struct kms_pkt_flow *f, const void *payload,
			 size_t payload_len, uint8_t *frame, size_t cap);

/**
 * Build an ARP request (op 1): Ethernet source and sha = f->src_mac,
 * Ethernet destination = f->dst_mac (normally ff:ff:ff:ff:ff:ff), spa =
 * f->src_ip, tpa = f->dst_ip (first 4 bytes), tha = 0; f->vlan honoured.
 * @return the frame length (42 or 46), or 0 if @p cap is too small.
 */
size_t kms_pkt_build_arp_request(const struct kms_pkt_flow *f, uint8_t *frame,
				 size_t cap);

/**
 * Build an ICMPv6 neighbour solicitation for @p target: IPv6 source
 * f->src_ip, destination f->dst_ip (the target itself, or its
 * solicited-node group from kms_pkt_ipv6_solicited_node()), Ethernet
 * f->src_mac -> f->dst_mac (kms_pkt_ipv6_mcast_mac() of a group), hop
 * limit 255, a source link-layer address option with f->src_mac unless
 * the source is :: (a DAD probe), correct ICMPv6 checksum.
 * @return the frame length, or 0 if @p cap is too small.
 */
size_t kms_pkt_build_ns(const struct kms_pkt_flow *f, const uint8_t target[16],
			uint8_t *frame, size_t cap);

/** ff02::1:ffXX:XXXX, the solicited-node multicast group of @p addr. */
void kms_pkt_ipv6_solicited_node(const uint8_t addr[16], uint8_t out[16]);

/** 33:33 + the low 32 bits of an IPv6 multicast @p group. */
void kms_pkt_ipv6_mcast_mac(const uint8_t group[16],
			    uint8_t mac[KMS_PKT_ETH_ALEN]);

/** Big-endian 16-bit field at @p p (any alignment). */
static inline uint16_t kms_pkt_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline void kms_pkt_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

#endif
