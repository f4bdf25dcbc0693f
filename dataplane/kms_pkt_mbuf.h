/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_pkt_mbuf.h
 * @brief The bridge from an rte_mbuf to kms_pkt.h: the NIC's RX checksum
 *        verdicts as KMS_PKT_RX_* flags. Shared by kmsd and kms-loadgen.
 */
#ifndef KMS_PKT_MBUF_H
#define KMS_PKT_MBUF_H

#include <rte_mbuf.h>

#include "kms_pkt.h"

/** The NIC's checksum verdicts, bit for bit (GOOD|BAD together = NONE:
 *  not checked by the NIC but the data is known good, so both skip). */
static inline unsigned kms_pkt_rx_flags(const struct rte_mbuf *m)
{
	unsigned f = 0;

	if (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_GOOD)
		f |= KMS_PKT_RX_IP_CSUM_GOOD;
	if (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_BAD)
		f |= KMS_PKT_RX_IP_CSUM_BAD;
	if (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_GOOD)
		f |= KMS_PKT_RX_L4_CSUM_GOOD;
	if (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_BAD)
		f |= KMS_PKT_RX_L4_CSUM_BAD;
	return f;
}

#endif /* KMS_PKT_MBUF_H */
