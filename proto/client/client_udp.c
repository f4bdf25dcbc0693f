// SPDX-License-Identifier: Apache-2.0
/*
 * kms-client UDP: one connect()ed socket per exchange, IPv4, IPv6 or a name
 * through getaddrinfo; retries resend the same bytes. See kms_client.h.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kms_client.h"

static int udp_connect(const char *server)
{
	char buf[256], *host = buf, *port;
	struct addrinfo hints, *res, *ai;
	int fd = -1, rc;

	if (strlen(server) >= sizeof(buf))
		goto bad;
	strcpy(buf, server);
	if (buf[0] == '[') {            /* [IPv6]:PORT */
		char *rb = strchr(buf, ']');

		if (!rb || rb[1] != ':')
			goto bad;
		*rb = '\0';
		host = buf + 1;
		port = rb + 2;
	} else {
		port = strrchr(buf, ':');
		if (!port)
			goto bad;
		*port++ = '\0';
	}
	if (!*host || !*port)
		goto bad;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		kc_errmsg("%s: %s", server, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		kc_errmsg("%s: cannot connect: %s", server, strerror(errno));
	return fd;
bad:
	kc_errmsg("--server: expected HOST:PORT or [IPv6]:PORT, got '%s'",
		  server);
	return -1;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kc_udp_exchange(const char *server, const uint8_t *req, size_t len,
		    int tries, int timeout_ms, uint32_t txid, uint8_t *rep,
		    size_t cap)
{
	int fd = udp_connect(server), ret = 0, refused = 0;

	if (fd < 0)
		return -1;
	for (int t = 0; t < tries && ret == 0; t++) {
		int64_t deadline = mono_ms() + timeout_ms;
		ssize_t sent = send(fd, req, len, 0);

		/* An ICMP error left by the previous try fails this send once;
		 * the next one goes out. */
		if (sent < 0 && errno == ECONNREFUSED) {
			refused = 1;
			sent = send(fd, req, len, 0);
		}
		if (sent != (ssize_t)len) {
			kc_errmsg("%s: send: %s", server, strerror(errno));
			ret = -1;
			break;
		}
		for (;;) {
			int64_t left = deadline - mono_ms();
			struct pollfd p = { .fd = fd, .events = POLLIN };
			ssize_t n;

			if (left <= 0)
				break;
			if (poll(&p, 1, (int)left) <= 0)
				continue;   /* EINTR or timeout: loop rechecks */
			n = recv(fd, rep, cap, MSG_TRUNC);
			if (n < 0) {
				if (errno == ECONNREFUSED)
					refused = 1;
				continue;
			}
			if ((size_t)n > cap || n < KMS_HDR_LEN ||
			    rep[0] != 'K' || rep[1] != 'M')
				continue;
			if (kc_ld32(rep + 4) != txid)
				continue;
			ret = (int)n;
			break;
		}
	}
	close(fd);
	if (ret == 0)
		fprintf(stderr, "%s: no reply from %s after %d tr%s "
			"of %d ms%s\n", program_invocation_short_name, server, tries, tries == 1 ? "y" : "ies",
			timeout_ms, refused ? " (port unreachable)" : "");
	return ret;
}

