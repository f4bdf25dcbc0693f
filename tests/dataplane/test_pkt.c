// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of frame classification and replies (dataplane/kms_pkt.h).
 *
 * Every checksum the module writes is re-verified here by an independent
 * RFC 1071 implementation (ref_sum: big-endian words, byte by byte), and
 * every header field of a reply is checked at offsets the test computes
 * itself. Crafted bad frames start from a good frame and change one thing,
 * fixing the other checksums with ref_sum, so each case isolates the rule
 * it is named after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kms_pkt.h"

#define FRAME_MAX 2048
#define US_PORT 7777
#define PEER_PORT 40000
#define TCI 0x2005              /* PCP 1, VID 5 */

static const uint8_t US_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x01 };
static const uint8_t PEER_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x02 };
static const uint8_t BCAST[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t US_IP4[4] = { 10, 0, 0, 1 };
static const uint8_t PEER_IP4[4] = { 10, 0, 0, 2 };
static const uint8_t OTHER_IP4[4] = { 10, 0, 0, 3 };
/* fd00::1:2:3:4, its solicited-node group ff02::1:ff03:4 and that MAC. */
static const uint8_t US_IP6[16] = { 0xfd, 0, 0, 0, 0, 0, 0, 0,
				    0, 0x01, 0, 0x02, 0, 0x03, 0, 0x04 };
static const uint8_t US_SNMC[16] = { 0xff, 0x02, 0, 0, 0, 0, 0, 0,
				     0, 0, 0, 0x01, 0xff, 0x03, 0x00, 0x04 };
static const uint8_t US_SNMC_MAC[6] = { 0x33, 0x33, 0xff, 0x03, 0x00, 0x04 };
static const uint8_t PEER_IP6[16] = { 0xfd, 0, 0, 0, 0, 0, 0, 0,
				      0, 0, 0, 0, 0, 0, 0, 0x02 };
static const uint8_t OTHER_IP6[16] = { 0xfd, 0, 0, 0, 0, 0, 0, 0,
				       0, 0, 0, 0, 0, 0, 0, 0x03 };
static const uint8_t ALL_NODES[16] = { 0xff, 0x02, 0, 0, 0, 0, 0, 0,
				       0, 0, 0, 0, 0, 0, 0, 0x01 };

static const char REQ[] = "request-payload-xyz";               /* 19: odd */
static const char RESP[] = "a-reply-longer-than-the-request-abc"; /* 35 */

/* ---- Independent reference --------------------------------------------- */

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* One's complement sum of big-endian words, folded: 0xffff when a region
 * including its checksum field verifies. */
static uint32_t ref_sum(uint32_t s, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 2)
		s += (uint32_t)(p[i] << 8) | (i + 1 < n ? p[i + 1] : 0);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return s;
}

static uint32_t ref_phdr(bool v6, const uint8_t *l3, uint8_t proto,
			 uint32_t l4_len)
{
	uint32_t s = v6 ? ref_sum(0, l3 + 8, 32) : ref_sum(0, l3 + 12, 8);

	s += proto + (l4_len >> 16) + (l4_len & 0xffff);
	return ref_sum(s, NULL, 0);
}

static size_t l2_of(bool vlan)
{
	return vlan ? 18 : 14;
}

/* IPv4 header checksum over IHL; UDP checksum over the UDP length. */
static void fix_ipv4(uint8_t *f, size_t l2)
{
	uint8_t *ip = f + l2;

	wr16(ip + 10, 0);
	wr16(ip + 10, (uint16_t)~ref_sum(0, ip, (size_t)(ip[0] & 15) * 4));
}

static void fix_l4(uint8_t *f, size_t l2, bool v6, size_t csum_at)
{
	uint8_t *ip = f + l2;
	size_t hl = v6 ? 40 : (size_t)(ip[0] & 15) * 4;
	uint8_t *l4 = ip + hl;
	uint8_t proto = v6 ? ip[6] : ip[9];
	size_t n = v6 ? be16(ip + 4) : be16(ip + 2) - hl;
	uint16_t c;

	wr16(l4 + csum_at, 0);
	c = (uint16_t)~ref_sum(ref_phdr(v6, ip, proto, (uint32_t)n), l4, n);
	wr16(l4 + csum_at, c ? c : 0xffff);
}

static void fix_udp(uint8_t *f, size_t l2, bool v6)
{
	fix_l4(f, l2, v6, 6);
}

/* Both checksums of a UDP frame verify, and the UDP one is present. */
static void assert_udp_csums_ok(const uint8_t *f, size_t l2, bool v6)
{
	const uint8_t *ip = f + l2;
	size_t hl = v6 ? 40 : (size_t)(ip[0] & 15) * 4;
	const uint8_t *udp = ip + hl;
	uint16_t ulen = be16(udp + 4);

	if (!v6)
		assert_int_equal(ref_sum(0, ip, hl), 0xffff);
	assert_int_not_equal(be16(udp + 6), 0);
	assert_int_equal(ref_sum(ref_phdr(v6, ip, 17, ulen), udp, ulen), 0xffff);
}

/* ---- Fixtures ----------------------------------------------------------- */

static struct kms_pkt_cfg us_cfg(void)
{
	struct kms_pkt_cfg c = { .has_ipv6 = true, .udp_port = US_PORT };

	memcpy(c.mac, US_MAC, 6);
	memcpy(&c.ipv4, US_IP4, 4);
	memcpy(c.ipv6, US_IP6, 16);
	return c;
}

static struct kms_pkt_cfg peer_cfg(void)
{
	struct kms_pkt_cfg c = { .has_ipv6 = true, .udp_port = PEER_PORT };

	memcpy(c.mac, PEER_MAC, 6);
	memcpy(&c.ipv4, PEER_IP4, 4);
	memcpy(c.ipv6, PEER_IP6, 16);
	return c;
}

/* Peer -> us. */
static struct kms_pkt_flow req_flow(bool v6, bool vlan)
{
	struct kms_pkt_flow fl = { .ipv6 = v6, .vlan = vlan, .vlan_tci = TCI,
				   .src_port = PEER_PORT, .dst_port = US_PORT };

	memcpy(fl.src_mac, PEER_MAC, 6);
	memcpy(fl.dst_mac, US_MAC, 6);
	memcpy(fl.src_ip, v6 ? PEER_IP6 : PEER_IP4, v6 ? 16 : 4);
	memcpy(fl.dst_ip, v6 ? US_IP6 : US_IP4, v6 ? 16 : 4);
	return fl;
}

static size_t mk_udp(uint8_t *f, bool v6, bool vlan, const void *pl, size_t n)
{
	struct kms_pkt_flow fl = req_flow(v6, vlan);
	size_t len = kms_pkt_build_udp(&fl, pl, n, f, FRAME_MAX);

	assert_int_equal(len, l2_of(vlan) + (v6 ? 40 : 20) + 8 + n);
	return len;
}

static size_t mk_req(uint8_t *f, bool v6, bool vlan)
{
	return mk_udp(f, v6, vlan, REQ, sizeof(REQ) - 1);
}

static size_t mk_arp(uint8_t *f, bool vlan, const uint8_t *dmac,
		     const uint8_t *tpa)
{
	struct kms_pkt_flow fl = req_flow(false, vlan);
	size_t len;

	memcpy(fl.dst_mac, dmac, 6);
	memcpy(fl.dst_ip, tpa, 4);
	len = kms_pkt_build_arp_request(&fl, f, FRAME_MAX);
	assert_int_equal(len, l2_of(vlan) + 28);
	return len;
}

/* NS from the peer (or from :: if dad) to @p dip for @p target. */
static size_t mk_ns(uint8_t *f, bool vlan, bool dad, const uint8_t *dmac,
		    const uint8_t *dip, const uint8_t *target)
{
	struct kms_pkt_flow fl = req_flow(true, vlan);
	size_t len;

	memcpy(fl.dst_mac, dmac, 6);
	memcpy(fl.dst_ip, dip, 16);
	if (dad)
		memset(fl.src_ip, 0, 16);
	len = kms_pkt_build_ns(&fl, target, f, FRAME_MAX);
	assert_int_equal(len, l2_of(vlan) + 40 + (dad ? 24 : 32));
	return len;
}

/*
 * Classify a copy of the frame in a heap block of exactly @p cap bytes (so
 * AddressSanitizer sees any access past it) and check the verdict; on a
 * drop, the frame and the info must be untouched. The result is copied
 * back to @p f. @p what names the case in a failure.
 */
static void expect_cap(const char *what, const struct kms_pkt_cfg *c,
		       uint8_t *f, size_t len, size_t cap, unsigned flags,
		       enum kms_pkt_verdict want)
{
	uint8_t *m = malloc(cap ? cap : 1);
	struct kms_pkt_info info, poison;
	enum kms_pkt_verdict v;

	assert_non_null(m);
	memcpy(m, f, len);
	memset(&info, 0xa5, sizeof(info));
	poison = info;
	v = kms_pkt_classify(c, m, len, cap, flags, &info);
	if (v != want) {
		print_error("%s: verdict %d, expected %d\n", what, v, want);
		free(m);
		fail();
	}
	if (kms_pkt_is_drop(v)) {
		assert_memory_equal(m, f, len);
		assert_memory_equal(&info, &poison, sizeof(info));
	}
	memcpy(f, m, len);
	free(m);
}

static void expect(const char *what, uint8_t *f, size_t len,
		   enum kms_pkt_verdict want)
{
	struct kms_pkt_cfg c = us_cfg();

	expect_cap(what, &c, f, len, len, 0, want);
}

/* ---- Round trips -------------------------------------------------------- */

static void roundtrip(bool v6, bool vlan)
{
	struct kms_pkt_cfg c = us_cfg(), pc = peer_cfg();
	uint8_t f[FRAME_MAX], orig[FRAME_MAX];
	size_t l2 = l2_of(vlan), hl = v6 ? 40 : 20;
	size_t len = mk_req(f, v6, vlan), rlen;
	size_t n = sizeof(RESP) - 1;
	struct kms_pkt_info info, back;
	const uint8_t *ip = f + l2, *udp = ip + hl;

	/* The builder's frame, checked independently. */
	assert_memory_equal(f, US_MAC, 6);
	assert_memory_equal(f + 6, PEER_MAC, 6);
	if (vlan) {
		assert_int_equal(be16(f + 12), 0x8100);
		assert_int_equal(be16(f + 14), TCI);
	}
	assert_int_equal(be16(f + l2 - 2), v6 ? 0x86dd : 0x0800);
	assert_udp_csums_ok(f, l2, v6);
	memcpy(orig, f, len);

	assert_int_equal(kms_pkt_classify(&c, f, len, sizeof(f), 0, &info),
			 KMS_PKT_REQUEST);
	assert_memory_equal(f, orig, len);      /* REQUEST: not modified */
	assert_int_equal(info.l2_len, l2);
	assert_int_equal(info.l3_off, l2);
	assert_int_equal(info.l3_len, hl);
	assert_int_equal(info.l4_off, l2 + hl);
	assert_int_equal(info.payload_off, l2 + hl + 8);
	assert_int_equal(info.payload_len, sizeof(REQ) - 1);
	assert_int_equal(info.reply_len, 0);
	assert_int_equal(info.is_ipv6, v6);
	assert_int_equal(info.has_vlan, vlan);
	if (vlan)
		assert_int_equal(info.vlan_tci, TCI);
	assert_memory_equal(f + info.payload_off, REQ, sizeof(REQ) - 1);

	rlen = kms_pkt_reply_udp(&info, f, sizeof(f), RESP, n, 0);
	assert_int_equal(rlen, l2 + hl + 8 + n);
	assert_int_equal(info.reply_len, rlen);
	assert_int_equal(info.payload_off, l2 + hl + 8);
	assert_int_equal(info.payload_len, n);

	/* Everything swapped, the tag kept. */
	assert_memory_equal(f, PEER_MAC, 6);
	assert_memory_equal(f + 6, US_MAC, 6);
	if (vlan) {
		assert_int_equal(be16(f + 12), 0x8100);
		assert_int_equal(be16(f + 14), TCI);
	}
	assert_int_equal(be16(f + l2 - 2), v6 ? 0x86dd : 0x0800);
	if (v6) {
		assert_int_equal(ip[0] >> 4, 6);
		assert_int_equal(be16(ip + 4), 8 + n);
		assert_int_equal(ip[6], 17);
		assert_int_equal(ip[7], 64);
		assert_memory_equal(ip + 8, US_IP6, 16);
		assert_memory_equal(ip + 24, PEER_IP6, 16);
	} else {
		assert_int_equal(ip[0], 0x45);
		assert_int_equal(be16(ip + 2), 20 + 8 + n);
		assert_int_equal(be16(ip + 4), 0);              /* ID */
		assert_int_equal(be16(ip + 6), 0x4000);         /* DF */
		assert_int_equal(ip[8], 64);
		assert_int_equal(ip[9], 17);
		assert_memory_equal(ip + 12, US_IP4, 4);
		assert_memory_equal(ip + 16, PEER_IP4, 4);
	}
	assert_int_equal(be16(udp), US_PORT);
	assert_int_equal(be16(udp + 2), PEER_PORT);
	assert_int_equal(be16(udp + 4), 8 + n);
	assert_memory_equal(udp + 8, RESP, n);
	assert_udp_csums_ok(f, l2, v6);

	/* And the peer's parser takes it. */
	assert_int_equal(kms_pkt_classify(&pc, f, rlen, rlen, 0, &back),
			 KMS_PKT_REQUEST);
	assert_int_equal(back.payload_len, n);
	assert_memory_equal(f + back.payload_off, RESP, n);
}

static void roundtrip_ipv4(void **state)
{
	(void)state;
	roundtrip(false, false);
}

static void roundtrip_ipv4_vlan(void **state)
{
	(void)state;
	roundtrip(false, true);
}

static void roundtrip_ipv6(void **state)
{
	(void)state;
	roundtrip(true, false);
}

static void roundtrip_ipv6_vlan(void **state)
{
	(void)state;
	roundtrip(true, true);
}

/* The engine overwrote the request payload in place: payload aliases the
 * frame at the payload offset. */
static void reply_payload_in_place(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	size_t len = mk_req(f, false, false);
	struct kms_pkt_info info;
	uint8_t *p;

	(void)state;
	assert_int_equal(kms_pkt_classify(&c, f, len, sizeof(f), 0, &info),
			 KMS_PKT_REQUEST);
	p = f + info.payload_off;
	memcpy(p, "in-place-reply", 14);
	assert_int_equal(kms_pkt_reply_udp(&info, f, sizeof(f), p, 14, 0),
			 14 + 20 + 8 + 14);
	assert_memory_equal(f + 42, "in-place-reply", 14);
	assert_udp_csums_ok(f, 14, false);
}

/* ERROR (14 bytes) answering a 12-byte request: needs 2 more bytes. */
static void reply_longer_than_request(bool v6)
{
	static const uint8_t req12[12] = { 'K', 'M', 1, 1, 0, 0, 0, 7, 0, 0 };
	static const uint8_t err14[14] = { 'K', 'M', 1, 0x7f, 0, 0, 0, 7,
					   0, 2, 0, 0, 0, 5 };
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX], orig[FRAME_MAX];
	size_t hl = v6 ? 40 : 20;
	size_t len = mk_udp(f, v6, false, req12, sizeof(req12));
	struct kms_pkt_info info, before;

	assert_int_equal(len, 14 + hl + 8 + 12);
	assert_int_equal(kms_pkt_classify(&c, f, len, len, 0, &info),
			 KMS_PKT_REQUEST);
	memcpy(orig, f, len);
	before = info;

	/* No room: 0, and neither the frame nor the info changed. */
	assert_int_equal(kms_pkt_reply_udp(&info, f, len, err14, 14, 0), 0);
	assert_int_equal(kms_pkt_reply_udp(&info, f, len + 1, err14, 14, 0), 0);
	assert_memory_equal(f, orig, len);
	assert_memory_equal(&info, &before, sizeof(info));

	/* Exactly enough room. */
	assert_int_equal(kms_pkt_reply_udp(&info, f, len + 2, err14, 14, 0),
			 len + 2);
	assert_memory_equal(f + 14 + hl + 8, err14, 14);
	assert_udp_csums_ok(f, 14, v6);
}

static void reply_longer_ipv4(void **state)
{
	(void)state;
	reply_longer_than_request(false);
}

static void reply_longer_ipv6(void **state)
{
	(void)state;
	reply_longer_than_request(true);
}

/* A short IPv4 request arrives padded to 60 bytes: the padding is ignored
 * and gives the reply its room. */
static void ethernet_padding(void **state)
{
	static const uint8_t req12[12] = { 'K', 'M', 1, 1 };
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[60] = { 0 };
	struct kms_pkt_info info;
	size_t len;
	struct kms_pkt_flow fl = req_flow(false, false);

	(void)state;
	len = kms_pkt_build_udp(&fl, req12, 12, f, sizeof(f));
	assert_int_equal(len, 54);
	memset(f + 54, 0xee, 6);                /* padding/garbage */
	assert_int_equal(kms_pkt_classify(&c, f, 60, 60, 0, &info),
			 KMS_PKT_REQUEST);
	assert_int_equal(info.payload_len, 12);
	assert_int_equal(kms_pkt_reply_udp(&info, f, sizeof(f), "0123456789abcd",
					   14, 0), 56);
	assert_udp_csums_ok(f, 14, false);
}

/* An untagged IPv4 request with 8 bytes of options (7 NOPs, EOL). */
static size_t mk_req_options(uint8_t *f)
{
	size_t len = mk_req(f, false, false);
	uint8_t *ip = f + 14;

	memmove(ip + 28, ip + 20, len - 34);
	memcpy(ip + 20, "\x01\x01\x01\x01\x01\x01\x01\x00", 8);
	ip[0] = 0x47;
	wr16(ip + 2, (uint16_t)(be16(ip + 2) + 8));
	fix_ipv4(f, 14);
	assert_udp_csums_ok(f, 14, false);
	return len + 8;
}

/* IPv4 with options: parsed through IHL; the reply drops them (the UDP
 * header and payload move forward over them). */
static void ipv4_options(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	size_t len = mk_req_options(f);
	uint8_t *ip = f + 14;
	struct kms_pkt_info info;
	size_t rlen;

	(void)state;

	assert_int_equal(kms_pkt_classify(&c, f, len, sizeof(f), 0, &info),
			 KMS_PKT_REQUEST);
	assert_int_equal(info.l3_len, 28);
	assert_int_equal(info.l4_off, 14 + 28);
	assert_int_equal(info.payload_off, 14 + 28 + 8);
	assert_memory_equal(f + info.payload_off, REQ, sizeof(REQ) - 1);

	/* Reply with the request's own payload, which must move back 8. */
	rlen = kms_pkt_reply_udp(&info, f, sizeof(f), f + info.payload_off,
				 info.payload_len, 0);
	assert_int_equal(rlen, 14 + 20 + 8 + sizeof(REQ) - 1);
	assert_int_equal(ip[0], 0x45);
	assert_int_equal(info.l3_len, 20);
	assert_int_equal(info.l4_off, 34);
	assert_int_equal(info.payload_off, 42);
	assert_int_equal(be16(ip + 2), 20 + 8 + sizeof(REQ) - 1);
	assert_int_equal(be16(f + 34), US_PORT);
	assert_int_equal(be16(f + 36), PEER_PORT);
	assert_memory_equal(f + 42, REQ, sizeof(REQ) - 1);
	assert_udp_csums_ok(f, 14, false);
}

/* With options, the request's headers end after the reply's: all of them
 * must lie within cap even if the reply itself would fit. */
static void ipv4_options_cap(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	size_t len = mk_req_options(f);
	struct kms_pkt_info info;

	(void)state;
	assert_int_equal(kms_pkt_classify(&c, f, len, len, 0, &info),
			 KMS_PKT_REQUEST);
	assert_int_equal(kms_pkt_reply_udp(&info, f, info.payload_off - 1, "", 0,
					   0), 0);
	assert_int_equal(kms_pkt_reply_udp(&info, f, info.payload_off, "", 0, 0),
			 14 + 28);
}

/* ---- One test per drop class -------------------------------------------- */

static void drop_not_for_us(void **state)
{
	uint8_t f[FRAME_MAX];
	size_t len;
	struct kms_pkt_cfg c;
	static const uint8_t v4mc_mac[6] = { 0x01, 0x00, 0x5e, 0, 0, 1 };
	static const uint8_t bad_src[][4] = { { 0, 0, 0, 0 }, { 224, 0, 0, 1 },
					      { 255, 255, 255, 255 } };

	(void)state;
	len = mk_req(f, false, false);
	f[5] = 0x09;
	expect("other unicast dst MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, false, false);
	memcpy(f, BCAST, 6);
	expect("UDP to broadcast MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, false, false);
	memcpy(f, v4mc_mac, 6);
	expect("UDP to IPv4 multicast MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, true, false);
	memcpy(f, US_SNMC_MAC, 6);
	expect("UDP/IPv6 to a 33:33 MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, false, false);
	f[6] |= 1;
	expect("group source MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, false, false);
	memcpy(f + 14 + 16, OTHER_IP4, 4);
	fix_ipv4(f, 14);
	fix_udp(f, 14, false);
	expect("other dst IPv4", f, len, KMS_PKT_DROP_NOT_FOR_US);

	for (size_t i = 0; i < 3; i++) {
		len = mk_req(f, false, false);
		memcpy(f + 14 + 12, bad_src[i], 4);
		fix_ipv4(f, 14);
		fix_udp(f, 14, false);
		expect("group/unspecified src IPv4", f, len,
		       KMS_PKT_DROP_NOT_FOR_US);
	}

	len = mk_req(f, false, false);
	wr16(f + 34, 0);
	fix_udp(f, 14, false);
	expect("UDP source port 0", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, false, false);
	memcpy(f + 14 + 12, US_IP4, 4);         /* a check that this is */
	fix_ipv4(f, 14);                        /* the control: accepted */
	fix_udp(f, 14, false);
	expect("source our own address (allowed)", f, len, KMS_PKT_REQUEST);

	len = mk_req(f, true, false);
	memcpy(f + 14 + 24, OTHER_IP6, 16);
	fix_udp(f, 14, true);
	expect("other dst IPv6", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, true, false);
	memcpy(f + 14 + 24, US_SNMC, 16);
	fix_udp(f, 14, true);
	expect("UDP to our solicited-node group", f, len,
	       KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, true, false);
	memcpy(f + 14 + 8, ALL_NODES, 16);
	fix_udp(f, 14, true);
	expect("multicast src IPv6", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, true, false);
	memset(f + 14 + 8, 0, 16);
	fix_udp(f, 14, true);
	expect("unspecified src IPv6 UDP", f, len, KMS_PKT_DROP_NOT_FOR_US);

	/* No address of that family configured. */
	c = us_cfg();
	c.ipv4 = 0;
	len = mk_req(f, false, false);
	expect_cap("no IPv4 configured", &c, f, len, len, 0,
		   KMS_PKT_DROP_NOT_FOR_US);
	len = mk_arp(f, false, BCAST, US_IP4);
	expect_cap("ARP, no IPv4 configured", &c, f, len, len, 0,
		   KMS_PKT_DROP_NOT_FOR_US);
	c = us_cfg();
	c.has_ipv6 = false;
	len = mk_req(f, true, false);
	expect_cap("no IPv6 configured", &c, f, len, len, 0,
		   KMS_PKT_DROP_NOT_FOR_US);

	/* Other ICMPv6: an echo request to our address. */
	len = mk_ns(f, false, false, US_MAC, US_IP6, US_IP6);
	f[14 + 40] = 128;
	fix_l4(f, 14, true, 2);
	expect("ICMPv6 echo request", f, len, KMS_PKT_DROP_NOT_FOR_US);
}

static void drop_fragment(void **state)
{
	uint8_t f[FRAME_MAX];
	uint8_t *ip = f + 14;
	size_t len;

	(void)state;
	len = mk_req(f, false, false);
	wr16(ip + 6, 0x2000);                   /* MF, offset 0 */
	fix_ipv4(f, 14);
	expect("IPv4 MF", f, len, KMS_PKT_DROP_FRAGMENT);

	len = mk_req(f, false, false);
	wr16(ip + 6, 0x4000 | 185);             /* DF, offset 1480 */
	fix_ipv4(f, 14);
	expect("IPv4 offset", f, len, KMS_PKT_DROP_FRAGMENT);

	/* IPv6 with a fragment header (first fragment, M set). */
	len = mk_req(f, true, false);
	memmove(ip + 48, ip + 40, len - 54);
	memcpy(ip + 40, "\x11\x00\x00\x01\x12\x34\x56\x78", 8);
	ip[6] = 44;
	wr16(ip + 4, (uint16_t)(be16(ip + 4) + 8));
	len += 8;
	expect("IPv6 fragment header", f, len, KMS_PKT_DROP_FRAGMENT);
}

static void drop_bad_csum(void **state)
{
	uint8_t f[FRAME_MAX];
	size_t len;

	(void)state;
	len = mk_req(f, false, false);
	f[14 + 10] ^= 0x40;
	expect("IPv4 header checksum", f, len, KMS_PKT_DROP_BAD_CSUM);

	len = mk_req(f, false, false);
	f[34 + 6] ^= 0x01;
	expect("IPv4 UDP checksum", f, len, KMS_PKT_DROP_BAD_CSUM);

	len = mk_req(f, false, false);
	f[len - 1] ^= 0x10;                     /* payload corrupted */
	expect("IPv4 UDP payload", f, len, KMS_PKT_DROP_BAD_CSUM);

	len = mk_req(f, false, false);
	wr16(f + 34 + 6, 0);
	expect("IPv4 UDP checksum 0 = none", f, len, KMS_PKT_REQUEST);

	len = mk_req(f, true, false);
	f[54 + 6] ^= 0x01;
	expect("IPv6 UDP checksum", f, len, KMS_PKT_DROP_BAD_CSUM);

	len = mk_req(f, true, false);
	wr16(f + 54 + 6, 0);
	expect("IPv6 UDP checksum 0", f, len, KMS_PKT_DROP_BAD_CSUM);

	len = mk_ns(f, false, false, US_MAC, US_IP6, US_IP6);
	f[len - 1] ^= 0x01;
	expect("NS ICMPv6 checksum", f, len, KMS_PKT_DROP_BAD_CSUM);
}

static void drop_bad_len(void **state)
{
	uint8_t f[FRAME_MAX];
	uint8_t *ip = f + 14;
	size_t len;

	(void)state;
	len = mk_req(f, false, false);
	expect("shorter than Ethernet", f, 13, KMS_PKT_DROP_BAD_LEN);

	len = mk_req(f, false, false);
	ip[0] = 0x44;
	fix_ipv4(f, 14);
	expect("IHL 4", f, len, KMS_PKT_DROP_BAD_LEN);

	/* IHL 4 laid out so that, read with a 16-byte header, it would be a
	 * good datagram to port 1 (the UDP header overlaps the dst IP). */
	{
		struct kms_pkt_cfg c1 = us_cfg();

		c1.udp_port = 1;                /* 10.0.0.1 = ports 2560 -> 1 */
		len = mk_req(f, false, false);
		ip[0] = 0x44;
		wr16(ip + 2, 16 + 8 + 4);
		wr16(ip + 20, 8 + 4);           /* UDP length */
		wr16(ip + 22, 0);               /* no UDP checksum */
		memcpy(ip + 24, "abcd", 4);
		wr16(ip + 10, 0);
		wr16(ip + 10, (uint16_t)~ref_sum(0, ip, 16));
		len = 14 + 28;
		expect_cap("IHL 4", &c1, f, len, len, 0, KMS_PKT_DROP_BAD_LEN);
		ip[0] = 0x45;                   /* the control: IHL 5 parses */
		wr16(ip + 2, 20 + 8);
		fix_ipv4(f, 14);
		wr16(ip + 24, 8);
		wr16(ip + 26, 0);
		wr16(ip + 20, 2560);
		wr16(ip + 22, 1);
		expect_cap("IHL 5 control", &c1, f, len, len, 0,
			   KMS_PKT_REQUEST);
	}

	len = mk_req(f, false, false);
	ip[0] = 0x65;
	expect("IPv6 version under the IPv4 ethertype", f, len,
	       KMS_PKT_DROP_BAD_LEN);

	len = mk_req(f, false, false);
	wr16(ip + 2, (uint16_t)(len - 14 + 1));
	fix_ipv4(f, 14);
	expect("total length > frame", f, len, KMS_PKT_DROP_BAD_LEN);

	len = mk_req(f, false, false);
	wr16(ip + 2, 19);
	fix_ipv4(f, 14);
	expect("total length < IHL", f, 14 + 20, KMS_PKT_DROP_BAD_LEN);

	len = mk_req(f, false, false);
	wr16(ip + 2, 20 + 4);
	fix_ipv4(f, 14);
	expect("no room for the UDP header", f, len, KMS_PKT_DROP_BAD_LEN);

	len = mk_req(f, false, false);
	wr16(f + 34 + 4, (uint16_t)(be16(f + 34 + 4) + 1));
	expect("UDP length > IP payload", f, len, KMS_PKT_DROP_BAD_LEN);

	len = mk_req(f, false, false);
	wr16(f + 34 + 4, (uint16_t)(be16(f + 34 + 4) - 1));
	expect("UDP length < IP payload", f, len, KMS_PKT_DROP_BAD_LEN);

	len = mk_req(f, true, false);
	wr16(f + 54 + 4, 7);
	expect("UDP length < 8", f, len, KMS_PKT_DROP_BAD_LEN);

	len = mk_req(f, true, false);
	wr16(ip + 4, (uint16_t)(len - 54 + 1));
	expect("IPv6 payload length > frame", f, len, KMS_PKT_DROP_BAD_LEN);

	len = mk_req(f, true, false);
	wr16(ip + 4, 0);
	expect("IPv6 jumbogram", f, len, KMS_PKT_DROP_BAD_LEN);
	ip[6] = 0;                              /* as a jumbogram would be */
	expect("IPv6 jumbogram, hop-by-hop", f, len, KMS_PKT_DROP_BAD_LEN);

	len = mk_ns(f, false, false, US_MAC, US_IP6, US_IP6);
	f[14 + 40] = 128;
	wr16(ip + 4, 2);
	expect("ICMPv6 shorter than its header", f, 14 + 42,
	       KMS_PKT_DROP_BAD_LEN);

	len = mk_ns(f, false, false, US_MAC, US_IP6, US_IP6);
	f[len - 7] = 0;                         /* option length 0 */
	fix_l4(f, 14, true, 2);
	expect("NS option of length 0", f, len, KMS_PKT_DROP_BAD_LEN);

	len = mk_ns(f, false, false, US_MAC, US_IP6, US_IP6);
	wr16(ip + 4, 20);
	fix_l4(f, 14, true, 2);
	expect("NS shorter than 24", f, len - 12, KMS_PKT_DROP_BAD_LEN);
}

static void drop_not_udp(void **state)
{
	static const uint8_t nh6[] = { 0, 6, 43, 60, 59 };
	uint8_t f[FRAME_MAX];
	size_t len;

	(void)state;
	len = mk_req(f, false, false);
	f[14 + 9] = 1;
	fix_ipv4(f, 14);
	expect("ICMPv4", f, len, KMS_PKT_DROP_NOT_UDP);

	len = mk_req(f, false, false);
	f[14 + 9] = 6;
	fix_ipv4(f, 14);
	expect("TCP", f, len, KMS_PKT_DROP_NOT_UDP);

	for (size_t i = 0; i < sizeof(nh6); i++) {
		len = mk_req(f, true, false);
		f[14 + 6] = nh6[i];
		expect("IPv6 next header: TCP or an extension", f, len,
		       KMS_PKT_DROP_NOT_UDP);
	}
}

static void drop_wrong_port(void **state)
{
	uint8_t f[FRAME_MAX];
	size_t len;

	(void)state;
	len = mk_req(f, false, false);
	wr16(f + 34 + 2, US_PORT + 1);
	fix_udp(f, 14, false);
	expect("IPv4 other port", f, len, KMS_PKT_DROP_WRONG_PORT);

	len = mk_req(f, true, true);
	wr16(f + 58 + 2, 53);
	fix_udp(f, 18, true);
	expect("IPv6 other port", f, len, KMS_PKT_DROP_WRONG_PORT);
}

static void drop_l2(void **state)
{
	uint8_t f[FRAME_MAX];
	size_t len;

	(void)state;
	len = mk_req(f, false, false);
	wr16(f + 12, 0x88cc);                   /* LLDP */
	expect("unknown ethertype", f, len, KMS_PKT_DROP_L2);

	len = mk_req(f, false, false);
	wr16(f + 12, 0x88cc);
	memcpy(f, BCAST, 6);
	expect("unknown ethertype to broadcast", f, len, KMS_PKT_DROP_L2);

	/* But the MAC is looked at first. */
	len = mk_req(f, false, false);
	wr16(f + 12, 0x88cc);
	memcpy(f, "\x01\x80\xc2\x00\x00\x0e", 6);
	expect("LLDP to its group", f, len, KMS_PKT_DROP_NOT_FOR_US);
	f[0] = 0x02;
	expect("unknown ethertype to another host", f, len,
	       KMS_PKT_DROP_NOT_FOR_US);

	len = mk_req(f, false, false);
	wr16(f + 12, 0x0040);
	expect("802.3 length field", f, len, KMS_PKT_DROP_L2);

	/* Two 802.1Q tags: push a second one under the first. */
	len = mk_req(f, false, true);
	memmove(f + 22, f + 18, len - 18);
	wr16(f + 16, 0x8100);
	wr16(f + 18, 7);
	wr16(f + 20, 0x0800);
	len += 4;
	expect("two 802.1Q tags", f, len, KMS_PKT_DROP_L2);

	len = mk_req(f, false, true);
	wr16(f + 12, 0x88a8);
	expect("802.1ad S-tag", f, len, KMS_PKT_DROP_L2);

	len = mk_arp(f, false, BCAST, US_IP4);
	wr16(f + 14, 6);                        /* IEEE 802 hardware */
	expect("ARP for another hardware type", f, len, KMS_PKT_DROP_L2);
}

/* ---- Truncation and mutations: no over-read, never a REQUEST ------------ */

/* Classify the first @p len bytes in a heap block of exactly that size,
 * so AddressSanitizer sees any access past it. */
static enum kms_pkt_verdict classify_exact(const uint8_t *src, size_t len,
					   struct kms_pkt_info *info)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t *b = malloc(len ? len : 1);
	enum kms_pkt_verdict v;

	assert_non_null(b);
	memcpy(b, src, len);
	v = kms_pkt_classify(&c, b, len, len, 0, info);
	if (kms_pkt_is_drop(v))
		assert_memory_equal(b, src, len);
	free(b);
	return v;
}

static void truncation(void **state)
{
	uint8_t frames[8][FRAME_MAX];
	size_t lens[8];
	int k = 0;
	struct kms_pkt_info info;

	(void)state;
	for (int v6 = 0; v6 < 2; v6++)
		for (int vlan = 0; vlan < 2; vlan++, k++)
			lens[k] = mk_req(frames[k], v6, vlan);
	lens[k] = mk_arp(frames[k], false, BCAST, US_IP4);
	k++;
	lens[k] = mk_arp(frames[k], true, BCAST, US_IP4);
	k++;
	lens[k] = mk_ns(frames[k], false, false, US_SNMC_MAC, US_SNMC, US_IP6);
	k++;
	lens[k] = mk_ns(frames[k], true, false, US_MAC, US_IP6, US_IP6);
	k++;

	for (int i = 0; i < k; i++) {
		enum kms_pkt_verdict full = classify_exact(frames[i], lens[i],
							   &info);

		assert_false(kms_pkt_is_drop(full));    /* the frame is good */
		for (size_t l = 0; l < lens[i]; l++) {
			enum kms_pkt_verdict v = classify_exact(frames[i], l,
								&info);
			if (v != KMS_PKT_DROP_BAD_LEN) {
				print_error("frame %d cut at %zu: %d\n", i, l, v);
				fail();
			}
		}
	}
}

static uint32_t rng_state = 0x12345678;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/* Random byte changes and cuts of good frames: nothing read or written out
 * of bounds (under ASan), and what is accepted is self-consistent. */
static void mutations(void **state)
{
	uint8_t base[6][FRAME_MAX], f[FRAME_MAX];
	size_t blen[6];
	struct kms_pkt_cfg c = us_cfg();
	struct kms_pkt_info info;

	(void)state;
	blen[0] = mk_req(base[0], false, false);
	blen[1] = mk_req(base[1], true, true);
	blen[2] = mk_arp(base[2], true, BCAST, US_IP4);
	blen[3] = mk_ns(base[3], false, false, US_SNMC_MAC, US_SNMC, US_IP6);
	blen[4] = mk_ns(base[4], false, true, US_SNMC_MAC, US_SNMC, US_IP6);
	blen[5] = mk_req(base[5], false, true);
	for (int it = 0; it < 200000; it++) {
		int b = (int)(rnd() % 6);
		size_t len = blen[b], cap;
		uint8_t *m;
		enum kms_pkt_verdict v;

		memcpy(f, base[b], len);
		for (uint32_t n = 1 + rnd() % 3; n; n--)
			f[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
		if (rnd() % 4 == 0)
			len = rnd() % (len + 1);
		cap = len + rnd() % 16;
		m = malloc(cap ? cap : 1);
		assert_non_null(m);
		memcpy(m, f, len);
		v = kms_pkt_classify(&c, m, len, cap, 0, &info);
		if (v == KMS_PKT_REQUEST) {
			assert_true((size_t)info.payload_off + info.payload_len
				    <= len);
			assert_true(kms_pkt_reply_udp(&info, m, cap, "xy", 2, 0)
				    <= cap);
		} else if (v == KMS_PKT_ARP || v == KMS_PKT_ND) {
			assert_true(info.reply_len <= cap);
		}
		free(m);
	}
}

/* ---- ARP ---------------------------------------------------------------- */

static void arp_reply_checks(bool vlan, const uint8_t *dmac)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX] = { 0 };
	size_t len = mk_arp(f, vlan, dmac, US_IP4), l2 = l2_of(vlan);
	const uint8_t *a = f + l2;
	struct kms_pkt_info info;

	/* On the wire it is padded to 60 (64 tagged). */
	len = vlan ? 64 : 60;
	assert_int_equal(kms_pkt_classify(&c, f, len, len, 0, &info),
			 KMS_PKT_ARP);
	assert_int_equal(info.reply_len, l2 + 28);
	assert_int_equal(info.l2_len, l2);
	assert_int_equal(info.has_vlan, vlan);
	assert_memory_equal(f, PEER_MAC, 6);
	assert_memory_equal(f + 6, US_MAC, 6);
	if (vlan) {
		assert_int_equal(be16(f + 12), 0x8100);
		assert_int_equal(be16(f + 14), TCI);
	}
	assert_int_equal(be16(f + l2 - 2), 0x0806);
	assert_int_equal(be16(a), 1);
	assert_int_equal(be16(a + 2), 0x0800);
	assert_int_equal(a[4], 6);
	assert_int_equal(a[5], 4);
	assert_int_equal(be16(a + 6), 2);               /* reply */
	assert_memory_equal(a + 8, US_MAC, 6);          /* sha */
	assert_memory_equal(a + 14, US_IP4, 4);         /* spa */
	assert_memory_equal(a + 18, PEER_MAC, 6);       /* tha */
	assert_memory_equal(a + 24, PEER_IP4, 4);       /* tpa */
}

static void arp_request_for_us(void **state)
{
	(void)state;
	arp_reply_checks(false, BCAST);
	arp_reply_checks(true, BCAST);
	arp_reply_checks(false, US_MAC);        /* unicast refresh */
}

static void arp_probe_answered(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	size_t len = mk_arp(f, false, BCAST, US_IP4);
	struct kms_pkt_info info;

	(void)state;
	memset(f + 14 + 14, 0, 4);              /* spa 0.0.0.0: RFC 5227 */
	assert_int_equal(kms_pkt_classify(&c, f, len, len, 0, &info),
			 KMS_PKT_ARP);
	assert_memory_equal(f + 14 + 24, "\0\0\0\0", 4);
	assert_memory_equal(f + 14 + 18, PEER_MAC, 6);
}

static void arp_not_answered(void **state)
{
	static const uint8_t v4mc_mac[6] = { 0x01, 0x00, 0x5e, 0, 0, 1 };
	uint8_t f[FRAME_MAX];
	size_t len;

	(void)state;
	len = mk_arp(f, false, BCAST, OTHER_IP4);
	expect("ARP for another IP", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_arp(f, false, BCAST, US_IP4);
	wr16(f + 14 + 6, 2);
	expect("ARP reply", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_arp(f, false, BCAST, US_IP4);
	memcpy(f + 14 + 14, US_IP4, 4);
	expect("gratuitous ARP", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_arp(f, false, v4mc_mac, US_IP4);
	expect("ARP to a multicast MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);
	len = mk_arp(f, false, US_SNMC_MAC, US_IP4);
	expect("ARP to an IPv6 multicast MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_arp(f, false, BCAST, US_IP4);
	f[14 + 8] |= 1;
	expect("ARP from a group sender MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_arp(f, false, BCAST, US_IP4);
	f[14 + 14] = 224;
	expect("ARP from a multicast sender IP", f, len,
	       KMS_PKT_DROP_NOT_FOR_US);

	len = mk_arp(f, false, BCAST, US_IP4);
	expect("ARP cut short", f, len - 1, KMS_PKT_DROP_BAD_LEN);
}

/* ---- Neighbour discovery ------------------------------------------------ */

static void check_na(const uint8_t *f, size_t l2, size_t reply_len,
		     const uint8_t *dmac, const uint8_t *dip, uint8_t nflags)
{
	const uint8_t *ip = f + l2, *icmp = ip + 40;

	assert_int_equal(reply_len, l2 + 40 + 32);
	assert_memory_equal(f, dmac, 6);
	assert_memory_equal(f + 6, US_MAC, 6);
	assert_int_equal(be16(f + l2 - 2), 0x86dd);
	assert_int_equal(ip[0], 0x60);          /* TC 0, flow label 0 */
	assert_int_equal(ip[1] | ip[2] | ip[3], 0);
	assert_int_equal(be16(ip + 4), 32);
	assert_int_equal(ip[6], 58);
	assert_int_equal(ip[7], 255);
	assert_memory_equal(ip + 8, US_IP6, 16);
	assert_memory_equal(ip + 24, dip, 16);
	assert_int_equal(icmp[0], 136);
	assert_int_equal(icmp[1], 0);
	assert_int_equal(icmp[4], nflags);
	assert_int_equal(icmp[5] | icmp[6] | icmp[7], 0);
	assert_memory_equal(icmp + 8, US_IP6, 16);
	assert_int_equal(icmp[24], 2);                  /* TLLA */
	assert_int_equal(icmp[25], 1);
	assert_memory_equal(icmp + 26, US_MAC, 6);
	assert_int_equal(ref_sum(ref_phdr(true, ip, 58, 32), icmp, 32), 0xffff);
}

static void ns_for_us(bool vlan, const uint8_t *dmac, const uint8_t *dip)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	size_t len = mk_ns(f, vlan, false, dmac, dip, US_IP6);
	struct kms_pkt_info info;

	assert_int_equal(ref_sum(ref_phdr(true, f + l2_of(vlan), 58, 32),
				 f + l2_of(vlan) + 40, 32), 0xffff);
	memcpy(f + l2_of(vlan), "\x6b\x91\x23\x45", 4); /* TC, flow label */
	assert_int_equal(kms_pkt_classify(&c, f, len, len, 0, &info),
			 KMS_PKT_ND);
	assert_int_equal(info.is_ipv6, true);
	assert_int_equal(info.has_vlan, vlan);
	if (vlan) {
		assert_int_equal(be16(f + 12), 0x8100);
		assert_int_equal(be16(f + 14), TCI);
	}
	check_na(f, l2_of(vlan), info.reply_len, PEER_MAC, PEER_IP6, 0x60);
}

static void ns_unicast(void **state)
{
	(void)state;
	ns_for_us(false, US_MAC, US_IP6);
	ns_for_us(true, US_MAC, US_IP6);
}

static void ns_solicited_node(void **state)
{
	uint8_t snm[16], mac[6];

	(void)state;
	kms_pkt_ipv6_solicited_node(US_IP6, snm);
	kms_pkt_ipv6_mcast_mac(snm, mac);
	assert_memory_equal(snm, US_SNMC, 16);
	assert_memory_equal(mac, US_SNMC_MAC, 6);
	ns_for_us(false, US_SNMC_MAC, US_SNMC);
	ns_for_us(true, US_SNMC_MAC, US_SNMC);
}

/* The NA goes to the link-layer address in the NS's option, not the
 * Ethernet source. */
static void ns_slla_option_wins(void **state)
{
	static const uint8_t opt_mac[6] = { 0x02, 0, 0, 0, 0, 0x42 };
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	size_t len = mk_ns(f, false, false, US_SNMC_MAC, US_SNMC, US_IP6);
	struct kms_pkt_info info;

	(void)state;
	memcpy(f + len - 6, opt_mac, 6);
	fix_l4(f, 14, true, 2);
	assert_int_equal(kms_pkt_classify(&c, f, len, len, 0, &info),
			 KMS_PKT_ND);
	check_na(f, 14, info.reply_len, opt_mac, PEER_IP6, 0x60);
}

/* DAD probe (source ::, no options): answered to ff02::1 with S clear,
 * which needs 8 bytes more than the probe. */
static void ns_dad(void **state)
{
	static const uint8_t all_nodes_mac[6] = { 0x33, 0x33, 0, 0, 0, 1 };
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	size_t len = mk_ns(f, false, true, US_SNMC_MAC, US_SNMC, US_IP6);
	struct kms_pkt_info info;

	(void)state;
	expect_cap("DAD, no room", &c, f, len, len + 7, 0,
		   KMS_PKT_DROP_BAD_LEN);
	assert_int_equal(kms_pkt_classify(&c, f, len, len + 8, 0, &info),
			 KMS_PKT_ND);
	check_na(f, 14, info.reply_len, all_nodes_mac, ALL_NODES, 0x20);

	len = mk_ns(f, false, true, US_MAC, US_IP6, US_IP6);
	expect_cap("DAD to a unicast address", &c, f, len, FRAME_MAX, 0,
		   KMS_PKT_DROP_NOT_FOR_US);
}

static void ns_not_answered(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	uint8_t other_snm[16], other_mac[6];
	size_t len;

	(void)state;
	len = mk_ns(f, false, false, US_MAC, US_IP6, OTHER_IP6);
	expect("NS for another target", f, len, KMS_PKT_DROP_NOT_FOR_US);

	kms_pkt_ipv6_solicited_node(OTHER_IP6, other_snm);
	kms_pkt_ipv6_mcast_mac(other_snm, other_mac);
	len = mk_ns(f, false, false, other_mac, other_snm, OTHER_IP6);
	expect("NS to another solicited-node group", f, len,
	       KMS_PKT_DROP_NOT_FOR_US);

	len = mk_ns(f, false, false, US_MAC, US_IP6, US_IP6);
	f[14 + 7] = 64;                         /* not link-local */
	expect("NS with hop limit 64", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_ns(f, false, false, US_MAC, US_IP6, US_IP6);
	memcpy(f, BCAST, 6);
	expect("NS to the broadcast MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_ns(f, false, false, US_SNMC_MAC, US_SNMC, US_IP6);
	f[1] = 0x34;                            /* 33:34:..., not 33:33 */
	expect("NS to a non-IPv6 group MAC", f, len, KMS_PKT_DROP_NOT_FOR_US);

	len = mk_ns(f, false, false, US_SNMC_MAC, US_SNMC, US_IP6);
	f[len - 6] |= 1;
	fix_l4(f, 14, true, 2);
	expect("NS with a group link-layer option", f, len,
	       KMS_PKT_DROP_NOT_FOR_US);

	/* A DAD probe carrying a source link-layer option is invalid. */
	len = mk_ns(f, false, false, US_SNMC_MAC, US_SNMC, US_IP6);
	memset(f + 14 + 8, 0, 16);
	fix_l4(f, 14, true, 2);
	expect_cap("DAD with an SLLA option", &c, f, len, FRAME_MAX, 0,
		   KMS_PKT_DROP_NOT_FOR_US);
}

/* ---- Checksum offload flags --------------------------------------------- */

static void rx_offload_flags(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	size_t len;

	(void)state;
	/* A corrupted IPv4 checksum the NIC vouches for is not re-checked. */
	len = mk_req(f, false, false);
	f[14 + 10] ^= 0xff;
	expect_cap("IP GOOD", &c, f, len, len, KMS_PKT_RX_IP_CSUM_GOOD,
		   KMS_PKT_REQUEST);
	expect_cap("IP NONE", &c, f, len, len,
		   KMS_PKT_RX_IP_CSUM_GOOD | KMS_PKT_RX_IP_CSUM_BAD,
		   KMS_PKT_REQUEST);
	expect_cap("IP unknown", &c, f, len, len, 0, KMS_PKT_DROP_BAD_CSUM);
	len = mk_req(f, false, false);
	expect_cap("IP BAD", &c, f, len, len, KMS_PKT_RX_IP_CSUM_BAD,
		   KMS_PKT_DROP_BAD_CSUM);

	len = mk_req(f, false, false);
	f[34 + 6] ^= 0xff;
	expect_cap("L4 GOOD", &c, f, len, len, KMS_PKT_RX_L4_CSUM_GOOD,
		   KMS_PKT_REQUEST);
	expect_cap("L4 NONE", &c, f, len, len,
		   KMS_PKT_RX_L4_CSUM_GOOD | KMS_PKT_RX_L4_CSUM_BAD,
		   KMS_PKT_REQUEST);
	len = mk_req(f, true, false);
	expect_cap("L4 BAD", &c, f, len, len, KMS_PKT_RX_L4_CSUM_BAD,
		   KMS_PKT_DROP_BAD_CSUM);
	wr16(f + 54 + 6, 0);
	expect_cap("IPv6 zero UDP checksum despite L4 GOOD", &c, f, len, len,
		   KMS_PKT_RX_L4_CSUM_GOOD, KMS_PKT_DROP_BAD_CSUM);
}

/* What a NIC does with KMS_PKT_TX_*: IPv4 header checksum from scratch;
 * UDP: sum the datagram over the pseudo-header sum in the field, store the
 * complement. */
static void nic_complete(uint8_t *f, size_t l2, bool v6, unsigned flags)
{
	uint8_t *ip = f + l2, *udp = ip + (v6 ? 40 : 20);
	uint16_t ulen = be16(udp + 4), c;

	if (!v6 && (flags & KMS_PKT_TX_IP_CSUM))
		fix_ipv4(f, l2);
	if (flags & KMS_PKT_TX_UDP_CSUM) {
		c = (uint16_t)~ref_sum(0, udp, ulen);
		wr16(udp + 6, c ? c : 0xffff);
	}
}

static void tx_offload(bool v6, unsigned flags)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	size_t l2 = l2_of(true), hl = v6 ? 40 : 20;
	size_t len = mk_req(f, v6, true);
	struct kms_pkt_info info;
	uint8_t *ip = f + l2, *udp = ip + hl;
	size_t n = sizeof(RESP) - 1;

	assert_int_equal(kms_pkt_classify(&c, f, len, sizeof(f), 0, &info),
			 KMS_PKT_REQUEST);
	assert_int_equal(kms_pkt_reply_udp(&info, f, sizeof(f), RESP, n, flags),
			 l2 + hl + 8 + n);
	if (!v6 && (flags & KMS_PKT_TX_IP_CSUM))
		assert_int_equal(be16(ip + 10), 0);
	if (flags & KMS_PKT_TX_UDP_CSUM)
		assert_int_equal(be16(udp + 6),
				 ref_phdr(v6, ip, 17, (uint32_t)(8 + n)));
	else
		assert_int_equal(ref_sum(ref_phdr(v6, ip, 17, (uint32_t)(8 + n)),
					 udp, 8 + n), 0xffff);
	nic_complete(f, l2, v6, flags);
	assert_udp_csums_ok(f, l2, v6);
}

static void tx_offload_flags(void **state)
{
	(void)state;
	tx_offload(false, KMS_PKT_TX_IP_CSUM | KMS_PKT_TX_UDP_CSUM);
	tx_offload(false, KMS_PKT_TX_IP_CSUM);
	tx_offload(false, KMS_PKT_TX_UDP_CSUM);
	tx_offload(true, KMS_PKT_TX_UDP_CSUM);
	tx_offload(true, KMS_PKT_TX_IP_CSUM);   /* no IPv4 header: ignored */
}

/* ---- Helpers, names, builders ------------------------------------------- */

static void checksum_helpers(void **state)
{
	uint8_t buf[256];
	uint8_t src6[16], dst6[16], ph[40];

	(void)state;
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rnd();
	for (size_t off = 0; off < 4; off++)
		for (size_t n = 0; n + off <= 200; n++) {
			uint32_t want = ref_sum(0, buf + off, n);

			assert_int_equal(kms_pkt_csum_add(0, buf + off, n), want);
			assert_int_equal(kms_pkt_csum(buf + off, n),
					 (uint16_t)~want);
			/* In two pieces, the first even. */
			size_t cut = (n / 2) & ~(size_t)1;
			assert_int_equal(kms_pkt_csum_add(
				kms_pkt_csum_add(0, buf + off, cut),
				buf + off + cut, n - cut), want);
			/* Starting sums chain. */
			assert_int_equal(kms_pkt_csum_add(0x1234, buf + off, n),
					 ref_sum(0x1234 + want, NULL, 0));
		}
	assert_int_equal(kms_pkt_csum_finish(0xffff), 0);
	assert_int_equal(kms_pkt_csum_finish(0x1ffff), 0xfffe); /* folds */

	memcpy(src6, buf, 16);
	memcpy(dst6, buf + 16, 16);
	memcpy(ph, src6, 16);
	memcpy(ph + 16, dst6, 16);
	memcpy(ph + 32, "\x00\x01\x02\x03\x00\x00\x00\x11", 8);
	assert_int_equal(kms_pkt_ipv6_phdr_sum(src6, dst6, 17, 0x00010203),
			 ref_sum(0, ph, 40));
	memcpy(ph, US_IP4, 4);
	memcpy(ph + 4, PEER_IP4, 4);
	memcpy(ph + 8, "\x00\x11\x05\xdc", 4);
	assert_int_equal(kms_pkt_ipv4_phdr_sum(US_IP4, PEER_IP4, 17, 1500),
			 ref_sum(0, ph, 12));
}

static void drop_names(void **state)
{
	static const char *const want[KMS_PKT_DROP__COUNT] = {
		"not_for_us", "fragment", "bad_csum", "bad_len", "not_udp",
		"wrong_port", "l2" };

	(void)state;
	assert_int_equal(KMS_PKT_DROP__COUNT, 7);
	assert_int_equal(KMS_PKT_DROP_NOT_FOR_US, 0);
	for (int v = 0; v < KMS_PKT_DROP__COUNT; v++) {
		assert_true(kms_pkt_is_drop((enum kms_pkt_verdict)v));
		assert_non_null(kms_pkt_drop_name((enum kms_pkt_verdict)v));
		assert_string_equal(kms_pkt_drop_name((enum kms_pkt_verdict)v),
				    want[v]);
	}
	assert_false(kms_pkt_is_drop(KMS_PKT_REQUEST));
	assert_false(kms_pkt_is_drop(KMS_PKT_ARP));
	assert_false(kms_pkt_is_drop(KMS_PKT_ND));
	assert_null(kms_pkt_drop_name(KMS_PKT_REQUEST));
	assert_null(kms_pkt_drop_name(KMS_PKT_ARP));
	assert_null(kms_pkt_drop_name(KMS_PKT_ND));
	assert_null(kms_pkt_drop_name((enum kms_pkt_verdict)-1));
}

static void builders_respect_cap(void **state)
{
	struct kms_pkt_flow fl = req_flow(false, true);
	struct kms_pkt_flow fl6 = req_flow(true, false);
	static uint8_t big[70000];
	uint8_t f[FRAME_MAX];

	(void)state;
	memset(f, 0xcc, sizeof(f));
	assert_int_equal(kms_pkt_build_udp(&fl, REQ, 19, f, 18 + 20 + 8 + 18), 0);
	assert_int_equal(kms_pkt_build_udp(&fl, REQ, 19, f, 10), 0);
	assert_int_equal(kms_pkt_build_arp_request(&fl, f, 45), 0);
	assert_int_equal(kms_pkt_build_ns(&fl6, US_IP6, f, 14 + 40 + 31), 0);
	assert_int_equal(f[0], 0xcc);           /* nothing written */
	assert_int_equal(kms_pkt_build_udp(&fl, REQ, 19, f, 18 + 20 + 8 + 19),
			 18 + 20 + 8 + 19);
	/* Beyond the 16-bit length fields. */
	assert_int_equal(kms_pkt_build_udp(&fl, big, 65535 - 28 + 1, big,
					   sizeof(big)), 0);
	assert_int_equal(kms_pkt_build_udp(&fl6, big, 65535 - 8 + 1, big,
					   sizeof(big)), 0);
	assert_int_equal(kms_pkt_build_udp(&fl6, big, 65535 - 8, big,
					   sizeof(big)), 14 + 40 + 65535);
}

/* kms_pkt_reply_udp refuses an info that does not describe a request. */
static void reply_needs_request_info(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX], orig[FRAME_MAX];
	size_t len = mk_arp(f, false, BCAST, US_IP4);
	struct kms_pkt_info info;

	(void)state;
	assert_int_equal(kms_pkt_classify(&c, f, len, len, 0, &info),
			 KMS_PKT_ARP);
	memcpy(orig, f, len);
	assert_int_equal(kms_pkt_reply_udp(&info, f, sizeof(f), "x", 1, 0), 0);
	assert_memory_equal(f, orig, len);
}

/* The reply keeps the request's DSCP but not its ECN bits; IPv6 flow
 * label 0. */
static void reply_dscp_kept_ecn_cleared(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX];
	struct kms_pkt_info info;
	size_t len;

	(void)state;
	len = mk_req(f, false, false);
	f[14 + 1] = 0xb9;                       /* EF, ECT(1) */
	fix_ipv4(f, 14);
	assert_int_equal(kms_pkt_classify(&c, f, len, sizeof(f), 0, &info),
			 KMS_PKT_REQUEST);
	assert_int_not_equal(kms_pkt_reply_udp(&info, f, sizeof(f), "r", 1, 0), 0);
	assert_int_equal(f[14 + 1], 0xb8);
	assert_udp_csums_ok(f, 14, false);

	len = mk_req(f, true, false);
	f[14 + 0] = 0x6b;                       /* TC 0xb9, flow 0x12345 */
	f[14 + 1] = 0x91;
	f[14 + 2] = 0x23;
	f[14 + 3] = 0x45;
	assert_int_equal(kms_pkt_classify(&c, f, len, sizeof(f), 0, &info),
			 KMS_PKT_REQUEST);
	assert_int_not_equal(kms_pkt_reply_udp(&info, f, sizeof(f), "r", 1, 0), 0);
	assert_int_equal(f[14 + 0], 0x6b);
	assert_int_equal(f[14 + 1], 0x80);
	assert_int_equal(f[14 + 2] | f[14 + 3], 0);
	assert_udp_csums_ok(f, 14, true);
}

/* A UDP checksum that computes to 0 is sent as 0xffff (0 = "none"). */
static void reply_zero_checksum_sent_as_ffff(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX], req[FRAME_MAX];
	uint8_t pl[8] = { 'z', 'e', 'r', 'o', 'c', 's' };
	struct kms_pkt_info info, info0;
	size_t len, rlen;
	uint8_t *udp = f + 34;
	uint32_t s;

	(void)state;
	len = mk_req(f, false, false);
	assert_int_equal(kms_pkt_classify(&c, f, len, sizeof(f), 0, &info),
			 KMS_PKT_REQUEST);
	memcpy(req, f, len);
	info0 = info;
	/* First pass with the last word 0: what sum do the rest give? */
	rlen = kms_pkt_reply_udp(&info, f, sizeof(f), pl, sizeof(pl), 0);
	assert_int_equal(rlen, 14 + 28 + sizeof(pl));
	wr16(udp + 6, 0);
	s = ref_sum(ref_phdr(false, f + 14, 17, 16), udp, 16);
	wr16(pl + 6, (uint16_t)(0xffff - s));   /* total sum now 0xffff */

	memcpy(f, req, len);
	info = info0;
	assert_int_equal(kms_pkt_reply_udp(&info, f, sizeof(f), pl, sizeof(pl),
					   0), rlen);
	assert_int_equal(be16(udp + 6), 0xffff);
	assert_udp_csums_ok(f, 14, false);
}

/* The 16-bit length fields bound the reply, whatever the capacity. */
static void reply_max_payload(void **state)
{
	static uint8_t big[70000];
	static const uint8_t pl[70000];
	struct kms_pkt_cfg c = us_cfg();
	struct kms_pkt_info info, info0;
	size_t len;

	(void)state;
	len = mk_req(big, false, false);
	assert_int_equal(kms_pkt_classify(&c, big, len, len, 0, &info0),
			 KMS_PKT_REQUEST);
	info = info0;
	assert_int_equal(kms_pkt_reply_udp(&info, big, sizeof(big), pl,
					   65535 - 28 + 1, 0), 0);
	assert_int_equal(kms_pkt_reply_udp(&info, big, sizeof(big), pl,
					   65535 - 28, 0), 14 + 65535);
	assert_udp_csums_ok(big, 14, false);

	len = mk_req(big, true, false);
	assert_int_equal(kms_pkt_classify(&c, big, len, len, 0, &info0),
			 KMS_PKT_REQUEST);
	info = info0;
	assert_int_equal(kms_pkt_reply_udp(&info, big, sizeof(big), pl,
					   65535 - 8 + 1, 0), 0);
	assert_int_equal(kms_pkt_reply_udp(&info, big, sizeof(big), pl,
					   65535 - 8, 0), 14 + 40 + 65535);
	assert_udp_csums_ok(big, 14, true);
}

/* An info altered after classification is refused, frame untouched. */
static void reply_rejects_tampered_info(void **state)
{
	struct kms_pkt_cfg c = us_cfg();
	uint8_t f[FRAME_MAX], orig[FRAME_MAX];
	size_t len = mk_req(f, false, true);
	struct kms_pkt_info good, bad;

	(void)state;
	assert_int_equal(kms_pkt_classify(&c, f, len, sizeof(f), 0, &good),
			 KMS_PKT_REQUEST);
	memcpy(orig, f, len);

	bad = good;
	bad.has_vlan = false;
	assert_int_equal(kms_pkt_reply_udp(&bad, f, sizeof(f), "x", 1, 0), 0);
	bad = good;
	bad.l3_off = 14;
	assert_int_equal(kms_pkt_reply_udp(&bad, f, sizeof(f), "x", 1, 0), 0);
	bad = good;
	bad.l3_len = 16;
	bad.l4_off = 18 + 16;
	bad.payload_off = 18 + 24;
	assert_int_equal(kms_pkt_reply_udp(&bad, f, sizeof(f), "x", 1, 0), 0);
	bad = good;
	bad.l4_off += 4;
	assert_int_equal(kms_pkt_reply_udp(&bad, f, sizeof(f), "x", 1, 0), 0);
	bad = good;
	bad.l4_off += 4;
	bad.payload_off += 4;
	assert_int_equal(kms_pkt_reply_udp(&bad, f, sizeof(f), "x", 1, 0), 0);
	bad = good;
	bad.payload_off += 1;
	assert_int_equal(kms_pkt_reply_udp(&bad, f, sizeof(f), "x", 1, 0), 0);
	bad = good;
	bad.is_ipv6 = true;
	assert_int_equal(kms_pkt_reply_udp(&bad, f, sizeof(f), "x", 1, 0), 0);
	/* The request's headers must lie within cap. */
	assert_int_equal(kms_pkt_reply_udp(&good, f, good.payload_off - 1, "", 0,
					   0), 0);
	assert_memory_equal(f, orig, len);
	/* The control. */
	assert_int_equal(kms_pkt_reply_udp(&good, f, sizeof(f), "x", 1, 0),
			 18 + 28 + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(roundtrip_ipv4),
		cmocka_unit_test(roundtrip_ipv4_vlan),
		cmocka_unit_test(roundtrip_ipv6),
		cmocka_unit_test(roundtrip_ipv6_vlan),
		cmocka_unit_test(reply_payload_in_place),
		cmocka_unit_test(reply_longer_ipv4),
		cmocka_unit_test(reply_longer_ipv6),
		cmocka_unit_test(ethernet_padding),
		cmocka_unit_test(ipv4_options),
		cmocka_unit_test(ipv4_options_cap),
		cmocka_unit_test(drop_not_for_us),
		cmocka_unit_test(drop_fragment),
		cmocka_unit_test(drop_bad_csum),
		cmocka_unit_test(drop_bad_len),
		cmocka_unit_test(drop_not_udp),
		cmocka_unit_test(drop_wrong_port),
		cmocka_unit_test(drop_l2),
		cmocka_unit_test(truncation),
		cmocka_unit_test(mutations),
		cmocka_unit_test(arp_request_for_us),
		cmocka_unit_test(arp_probe_answered),
		cmocka_unit_test(arp_not_answered),
		cmocka_unit_test(ns_unicast),
		cmocka_unit_test(ns_solicited_node),
		cmocka_unit_test(ns_slla_option_wins),
		cmocka_unit_test(ns_dad),
		cmocka_unit_test(ns_not_answered),
		cmocka_unit_test(rx_offload_flags),
		cmocka_unit_test(tx_offload_flags),
		cmocka_unit_test(checksum_helpers),
		cmocka_unit_test(drop_names),
		cmocka_unit_test(builders_respect_cap),
		cmocka_unit_test(reply_needs_request_info),
		cmocka_unit_test(reply_dscp_kept_ecn_cleared),
		cmocka_unit_test(reply_zero_checksum_sent_as_ffff),
		cmocka_unit_test(reply_max_payload),
		cmocka_unit_test(reply_rejects_tampered_info),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
