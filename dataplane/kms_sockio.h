/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_sockio.h
 * @brief Kernel UDP socket I/O mode (`kmsd --io socket`).
 *
 * One RX thread reads bursts with recvmmsg(), hashes each request's pair to
 * its worker (kms_engine_worker_for) and copies it into that worker's
 * single-producer/single-consumer ring. Each worker thread takes up to
 * `batch` requests, runs kms_worker_process() on them and sends the
 * replies with one sendmmsg(). A full ring is a counted drop.
 * With one worker there is no RX thread: the worker reads up to `batch`
 * datagrams with recvmmsg() itself (run to completion; no ring, no
 * wake-up); a full socket buffer is then the kernel's counted drop.
 */
#ifndef KMS_SOCKIO_H
#define KMS_SOCKIO_H

#include <stdint.h>

#include "kms_engine.h"

struct kms_sockio;

struct kms_sockio_config {
	const char *listen;      /**< numeric IPv4/IPv6 address or name */
	uint16_t port;
	unsigned nworkers;       /**< must equal the engine's */
	unsigned batch;          /**< 1..256 */
	unsigned ring_size;      /**< per worker, power of two; 0 = 1024 */
};

struct kms_sockio_stats {
	uint64_t rx, tx, ring_full, tx_errors;
	/** Datagrams the kernel dropped for this socket (receive buffer
	 *  full: the overload drop with one worker), SO_MEMINFO's
	 *  SK_MEMINFO_DROPS, the "drops" column of /proc/net/udp. */
	uint64_t sock_drops;
};

/**
 * Bind the socket, start the workers (each creates its kms_worker on its
 * own thread) and the RX thread. Returns once every worker is ready.
 * @return KMS_OK, KMS_ERR_IO (bind failed: message logged), or the first
 *         worker's kms_worker_create() error.
 */
int kms_sockio_start(struct kms_engine *e, const struct kms_sockio_config *cfg,
		     struct kms_sockio **out);

/** The UDP port actually bound (useful with port 0). */
uint16_t kms_sockio_port(const struct kms_sockio *s);

/**
 * Stop: RX stops reading, workers drain what is queued (answering it),
 * threads are joined and everything is freed. @p engine_stats and
 * @p io_stats (may be NULL) receive the final counters.
 */
void kms_sockio_stop(struct kms_sockio *s, struct kms_stats *engine_stats,
		     struct kms_sockio_stats *io_stats);

/** Live counters (summed over workers). */
void kms_sockio_read_stats(struct kms_sockio *s, struct kms_stats *engine_stats,
			   struct kms_sockio_stats *io_stats);

/** One worker's live counters. @return KMS_OK, KMS_ERR_INVAL (no such
 *  worker). */
int kms_sockio_worker_stats(struct kms_sockio *s, unsigned i,
			    struct kms_stats *out);

#endif
