/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file lg_io.h
 * @brief kms-loadgen's datagram transport: kernel UDP or a DPDK port.
 *
 * The load generator core (loadgen.c) is one polling loop that sends what
 * is due and receives what has arrived; it sees only KMS datagrams (UDP
 * payloads). An I/O backend moves them. Single-threaded: every call comes
 * from the loop's thread.
 */
#ifndef LG_IO_H
#define LG_IO_H

#include <stdint.h>

#define LG_DGRAM_MAX 1472

/** One datagram: @p buf holds @p len bytes (send) or up to @p cap (recv). */
struct lg_dgram {
	uint8_t *buf;
	uint16_t len;
	uint16_t cap;
};

struct lg_io {
	const char *name;       /**< "socket" or "dpdk" */
	/** Send @p n datagrams to the KMS, in order. @return how many were
	 *  handed to the kernel/NIC (the rest are the caller's to retry or
	 *  count); -1 on a fatal error (after a message on stderr). */
	int (*send)(struct lg_io *io, const struct lg_dgram *d, unsigned n);
	/** Receive up to @p n datagrams from the KMS into d[i].buf (cap
	 *  d[i].cap), setting d[i].len. Waits at most @p timeout_us for the
	 *  first one (0: do not wait; a polling backend may ignore it).
	 *  Datagrams from anyone but the KMS are dropped and counted by the
	 *  backend. @return the number received, or -1 on a fatal error. */
	int (*recv)(struct lg_io *io, struct lg_dgram *d, unsigned n,
		    int timeout_us);
	/** Counters the backend kept (frames dropped as not from the KMS,
	 *  bad checksum, TX full, ...), printed as "name=value" pairs into
	 *  @p out; @return the length written (snprintf rules). */
	int (*stats)(struct lg_io *io, char *out, unsigned cap);
	void (*close)(struct lg_io *io);
};

/** Kernel UDP: one socket connect()ed to @p server ("host:port" or
 *  "[v6]:port"), sendmmsg/recvmmsg with poll() for the wait.
 *  @p rcvbuf/@p sndbuf: SO_RCVBUF/SO_SNDBUF bytes (0: kernel default).
 *  @return NULL after a message on stderr. */
struct lg_io *lg_io_socket_open(const char *server, int rcvbuf, int sndbuf);

/**
 * DPDK: a port of an EAL this process initialised (rte_eal_init was called
 * by main with the EAL part of argv). @p spec is the backend's option
 * string "key=value,key=value" (see perf/README.md, kms-loadgen --io dpdk):
 * port, our ip, the KMS's ip and port, our source port, optionally the
 * KMS's MAC (else resolved by ARP). @return NULL after a message on stderr.
 */
struct lg_io *lg_io_dpdk_open(const char *spec);

#endif /* LG_IO_H */
