// SPDX-License-Identifier: Apache-2.0
/*
 * kms-loadgen over kernel UDP: one connect()ed socket, sendmmsg/recvmmsg,
 * poll() while nothing is due (lg_io.h). connect() makes the kernel drop
 * datagrams from anyone but the KMS.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lg_io.h"

#define MMSG_MAX 64

struct lg_sock {
	struct lg_io io;
	int fd;
	uint64_t tx, rx, tx_again, rx_trunc, send_err;
};

static int sock_connect(const char *server, int rcvbuf, int sndbuf)
{
	char host[256], *port;
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *res = NULL;
	int fd, rc;

	if (snprintf(host, sizeof(host), "%s", server) >= (int)sizeof(host))
		goto bad;
	port = strrchr(host, ':');
	if (!port || port == host || !port[1])
		goto bad;
	*port++ = '\0';
	if (host[0] == '[') {                   /* [v6]:port */
		size_t l = strlen(host);

		if (l < 3 || host[l - 1] != ']')
			goto bad;
		host[l - 1] = '\0';
		memmove(host, host + 1, l - 1);
	}
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		fprintf(stderr, "kms-loadgen: %s: %s\n", server, gai_strerror(rc));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen)) {
		fprintf(stderr, "kms-loadgen: %s: %s\n", server, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	if (rcvbuf)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (sndbuf)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	return fd;
bad:
	fprintf(stderr, "kms-loadgen: --server %s: expected HOST:PORT or [V6]:PORT\n",
		server);
	return -1;
}

static int sock_send(struct lg_io *io, const struct lg_dgram *d, unsigned n)
{
	struct lg_sock *s = (struct lg_sock *)io;
	struct mmsghdr mm[MMSG_MAX];
	struct iovec iov[MMSG_MAX];
	unsigned done = 0;

	while (done < n) {
		unsigned k = n - done < MMSG_MAX ? n - done : MMSG_MAX;
		int r;

		memset(mm, 0, k * sizeof(mm[0]));
		for (unsigned i = 0; i < k; i++) {
			iov[i].iov_base = d[done + i].buf;
			iov[i].iov_len = d[done + i].len;
			mm[i].msg_hdr.msg_iov = &iov[i];
			mm[i].msg_hdr.msg_iovlen = 1;
		}
		r = sendmmsg(s->fd, mm, k, 0);
		if (r < 0) {
			if (errno == EAGAIN || errno == ENOBUFS) {
				s->tx_again++;
				break;
			}
			if (errno == EINTR)
				continue;
			if (errno == ECONNREFUSED) {
				/* An ICMP port unreachable from an earlier
				 * datagram: the KMS is not (yet) there. The
				 * datagrams count as sent and will be lost. */
				s->send_err++;
				done += 1;
				continue;
			}
			fprintf(stderr, "kms-loadgen: sendmmsg: %s\n", strerror(errno));
			return -1;
		}
		done += (unsigned)r;
		s->tx += (unsigned)r;
		if ((unsigned)r < k)
			break;
	}
	return (int)done;
}

static int sock_recv(struct lg_io *io, struct lg_dgram *d, unsigned n,
		     int timeout_us)
{
	struct lg_sock *s = (struct lg_sock *)io;
	struct mmsghdr mm[MMSG_MAX];
	struct iovec iov[MMSG_MAX];
	int r;

	if (n > MMSG_MAX)
		n = MMSG_MAX;
	for (;;) {
		memset(mm, 0, n * sizeof(mm[0]));
		for (unsigned i = 0; i < n; i++) {
			iov[i].iov_base = d[i].buf;
			iov[i].iov_len = d[i].cap;
			mm[i].msg_hdr.msg_iov = &iov[i];
			mm[i].msg_hdr.msg_iovlen = 1;
		}
		r = recvmmsg(s->fd, mm, n, MSG_DONTWAIT, NULL);
		if (r > 0)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == ECONNREFUSED)
			continue;       /* reported by the next call, not fatal */
		if (r < 0 && errno != EAGAIN) {
			fprintf(stderr, "kms-loadgen: recvmmsg: %s\n", strerror(errno));
			return -1;
		}
		if (timeout_us <= 0)
			return 0;
		{
			/* Microseconds: the open loop's wait until its next
			 * send is often well under a millisecond. */
			struct pollfd p = { .fd = s->fd, .events = POLLIN };
			struct timespec ts = {
				.tv_sec = timeout_us / 1000000,
				.tv_nsec = (long)(timeout_us % 1000000) * 1000,
			};

			if (ppoll(&p, 1, &ts, NULL) < 0 && errno != EINTR)
				return -1;
		}
		timeout_us = 0;
	}
	for (int i = 0; i < r; i++) {
		if (mm[i].msg_hdr.msg_flags & MSG_TRUNC) {
			s->rx_trunc++;
			d[i].len = 0;   /* longer than any reply: not ours */
			continue;
		}
		d[i].len = (uint16_t)mm[i].msg_len;
	}
	s->rx += (unsigned)r;
	return r;
}

static int sock_stats(struct lg_io *io, char *out, unsigned cap)
{
	struct lg_sock *s = (struct lg_sock *)io;

	return snprintf(out, cap, "tx=%llu rx=%llu tx_again=%llu rx_trunc=%llu "
			"icmp_refused=%llu", (unsigned long long)s->tx,
			(unsigned long long)s->rx, (unsigned long long)s->tx_again,
			(unsigned long long)s->rx_trunc,
			(unsigned long long)s->send_err);
}

static void sock_close(struct lg_io *io)
{
	struct lg_sock *s = (struct lg_sock *)io;

	if (!s)
		return;
	close(s->fd);
	free(s);
}

struct lg_io *lg_io_socket_open(const char *server, int rcvbuf, int sndbuf)
{
	struct lg_sock *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->fd = sock_connect(server, rcvbuf, sndbuf);
	if (s->fd < 0) {
		free(s);
		return NULL;
	}
	s->io.name = "socket";
	s->io.send = sock_send;
	s->io.recv = sock_recv;
	s->io.stats = sock_stats;
	s->io.close = sock_close;
	return &s->io;
}
