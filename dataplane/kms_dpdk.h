/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_dpdk.h
 * @brief The DPDK I/O mode (`kmsd <EAL args> -- --io dpdk`): a polling
 *        dataplane that batches KMS requests to worker lcores.
 *
 * Two lcore layouts:
 *  - "rx": the main lcore polls every RX queue, classifies each frame
 *    (kms_pkt.h: ARP / neighbour solicitation answered in place and handed
 *    to worker 0 to send, drops counted by class), hashes each request's
 *    user pair to its worker (kms_engine_worker_for, the hash the socket
 *    mode uses) and hands bursts over an rte_ring per worker. A partial
 *    enqueue is counted (ring_full) and the rest freed.
 *  - "rss": the port spreads frames over one RX queue per worker; each
 *    worker polls its queue and passes a request whose pair another worker
 *    owns to that worker's ring (multi-producer), so pair ownership, and
 *    with it the per-worker replay windows, still hold.
 * The port gets one RX and one TX queue per worker (af_packet: qpairs =
 * workers); TX queues are never shared.
 * Workers dequeue a burst, run kms_worker_process() on the whole batch
 * (one durable LMDB commit), write each reply in place into its request
 * mbuf (kms_pkt_reply_udp), and transmit on their own TX queue; what TX
 * does not take is freed and counted.
 *
 * The engine (kms_engine.h) sees no DPDK type; this module is the only
 * one that does, besides kmsd.c's EAL set-up.
 */
#ifndef KMS_DPDK_H
#define KMS_DPDK_H

#include <signal.h>
#include <stdint.h>

#include "kms_engine.h"
#include "kms_pkt.h"

struct kms_dp;
struct rte_mempool;

enum kms_dp_layout { KMS_DP_LAYOUT_RX = 0, KMS_DP_LAYOUT_RSS = 1 };

struct kms_dp_config {
	uint16_t port_id;
	enum kms_dp_layout layout;
	unsigned nworkers;       /**< == the engine's */
	unsigned batch;          /**< requests per worker batch, 1..256 */
	unsigned ring_size;      /**< per worker, power of two */
	unsigned mbufs;          /**< mempool size (0: created by the caller) */
	struct kms_pkt_cfg addr; /**< our IPs and UDP port; the MAC is read
	                              from the port and filled in */
	int io_bench;            /**< benchmark of the I/O path alone: every
	                              request is answered with a fixed 14-byte
	                              reply without the engine (no keys, no
	                              store). Never for production. */
};

/** Counters, summed over lcores on read. */
struct kms_dp_stats {
	uint64_t rx, tx, requests, arp, nd, forwarded;
	uint64_t drops[KMS_PKT_DROP__COUNT]; /**< classification drops */
	uint64_t engine_drops;   /**< the engine answered nothing (not KMS) */
	uint64_t ring_full;      /**< worker ring full: freed */
	uint64_t tx_full;        /**< TX did not take it: freed */
	uint64_t drained;        /**< answered during shutdown drain */
};

/**
 * Configure and start the port (queues, offloads the port offers: IPv4
 * and UDP checksums, RSS in the rss layout) and create the rings. The EAL
 * must be initialised; @p mp may be NULL (a mempool of cfg->mbufs is made).
 * @return KMS_OK, KMS_ERR_CONFIG (no such port, not enough lcores or
 *         queues: the log says which), KMS_ERR_NOMEM.
 */
int kms_dp_create(struct kms_engine *e, const struct kms_dp_config *cfg,
		  struct rte_mempool *mp, struct kms_dp **out);

/**
 * Run: launch the workers on the worker lcores (each creates its
 * kms_worker there), then poll on the calling (main) lcore until
 * *@p stop becomes non-zero; then stop RX, let the workers drain their
 * rings and answer what is queued, and return.
 * @return KMS_OK, or the first worker's kms_worker_create() error.
 */
int kms_dp_run(struct kms_dp *dp, volatile sig_atomic_t *stop);

/** Stop the port and free everything. NULL is a no-op. */
void kms_dp_destroy(struct kms_dp *dp);

void kms_dp_read_stats(struct kms_dp *dp, struct kms_dp_stats *io,
		       struct kms_stats *engine);

/** One worker's live counters (any thread). @return KMS_OK, KMS_ERR_INVAL
 *  (no such worker), KMS_ERR_NOTFOUND (not started yet). */
int kms_dp_worker_stats(struct kms_dp *dp, unsigned i, struct kms_stats *out);

/* ---- single steps, for tests that drive the dataplane by hand ---- */

/** Create worker @p wid's engine state on the calling thread. */
int kms_dp_worker_init(struct kms_dp *dp, unsigned wid);
/** One RX burst of the rx layout's RX stage. @return frames received. */
unsigned kms_dp_rx_poll(struct kms_dp *dp);
/** One worker iteration: (rss: poll its RX queue,) dequeue its ring,
 *  process, transmit. @return requests processed. */
unsigned kms_dp_worker_poll(struct kms_dp *dp, unsigned wid);
/** The mempool in use (for leak checks). */
struct rte_mempool *kms_dp_mempool(struct kms_dp *dp);

#endif /* KMS_DPDK_H */
