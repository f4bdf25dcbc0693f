// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/sock_diag.h>

#include "kms_log.h"
#include "kms_proto.h"
#include "kms_sockio.h"

#define BURST 64
/* Counters have one writer; readers on other threads load them atomically. */
#define STAT_INC(x) __atomic_store_n(&(x), (x) + 1, __ATOMIC_RELAXED)
#define RESP_MAX KMS_REPLY_MAX

struct slot {
	struct sockaddr_storage peer;
	socklen_t peer_len;
	uint16_t len;
	uint8_t data[KMS_DGRAM_MAX];
};

/* One worker: an SPSC ring of slots filled by RX, drained by the worker. */
struct wctx {
	struct kms_sockio *io;
	unsigned id;
	pthread_t thread;
	struct kms_worker *w;
	struct slot *ring;
	uint32_t mask;
	uint32_t head __attribute__((aligned(64)));  /* written by RX */
	uint32_t tail __attribute__((aligned(64)));  /* written by the worker */
	int sleeping;
	int efd;
	int create_rc;
	uint64_t tx, tx_errors, ring_full;
};

struct kms_sockio {
	struct kms_engine *e;
	struct kms_sockio_config cfg;
	int fd;
	uint16_t port;
	int stop;          /* set by kms_sockio_stop */
	int rx_done;       /* RX has stopped: workers drain and exit */
	int direct;        /* one worker reads the socket itself: no RX thread */
	pthread_t rx;
	uint64_t rx_count;
	uint8_t rxbuf[BURST][KMS_DGRAM_MAX + 1];
	struct kms_hasher *hasher;   /* RX thread's */
	struct wctx *wk;
	pthread_mutex_t ready_mu;
	pthread_cond_t ready_cv;
	unsigned ready;
};

static void wake(struct wctx *c)
{
	uint64_t one = 1;

	if (__atomic_exchange_n(&c->sleeping, 0, __ATOMIC_SEQ_CST))
		if (write(c->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			KMS_WARN("worker %u wake-up failed: %s", c->id, strerror(errno));
}

static void *rx_main(void *arg)
{
	struct kms_sockio *s = arg;
	struct mmsghdr mm[BURST];
	struct iovec iov[BURST];
	struct sockaddr_storage peer[BURST];
	uint8_t (*buf)[KMS_DGRAM_MAX + 1] = s->rxbuf;
	unsigned nw = s->cfg.nworkers;
	uint8_t touched[64];

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		int n;

		for (unsigned i = 0; i < BURST; i++) {
			iov[i].iov_base = buf[i];
			iov[i].iov_len = sizeof(buf[i]);
			memset(&mm[i].msg_hdr, 0, sizeof(mm[i].msg_hdr));
			mm[i].msg_hdr.msg_iov = &iov[i];
			mm[i].msg_hdr.msg_iovlen = 1;
			mm[i].msg_hdr.msg_name = &peer[i];
			mm[i].msg_hdr.msg_namelen = sizeof(peer[i]);
		}
		n = recvmmsg(s->fd, mm, BURST, MSG_WAITFORONE, NULL);
		if (n <= 0)
			continue; /* timeout (SO_RCVTIMEO) or EINTR: check stop */
		memset(touched, 0, sizeof(touched));
		for (int i = 0; i < n; i++) {
			unsigned len = mm[i].msg_len;
			unsigned wi = kms_engine_worker_for(s->e, s->hasher,
							    buf[i], len);
			struct wctx *c = &s->wk[wi];
			uint32_t head = c->head;
			uint32_t tail = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
			struct slot *sl;

			if (len > KMS_DGRAM_MAX)
				len = KMS_DGRAM_MAX + 1; /* the engine refuses it */
			if (head - tail > c->mask) {
				STAT_INC(c->ring_full);
				continue;
			}
			sl = &c->ring[head & c->mask];
			memcpy(&sl->peer, &peer[i], mm[i].msg_hdr.msg_namelen);
			sl->peer_len = mm[i].msg_hdr.msg_namelen;
			sl->len = (uint16_t)(len > KMS_DGRAM_MAX ? 0 : len);
			memcpy(sl->data, buf[i], sl->len);
			/* seq_cst pairs with the worker's sleep announcement:
			 * either it sees this slot or we see its flag. */
			__atomic_store_n(&c->head, head + 1, __ATOMIC_SEQ_CST);
			touched[wi % 64] = 1;
		}
		__atomic_store_n(&s->rx_count, s->rx_count + (uint64_t)n,
				 __ATOMIC_RELAXED);
		for (unsigned i = 0; i < nw; i++)
			if (touched[i % 64])
				wake(&s->wk[i]);
	}
	__atomic_store_n(&s->rx_done, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < nw; i++) {
		uint64_t one = 1;
		if (write(s->wk[i].efd, &one, sizeof(one)) < 0)
			KMS_WARN("worker %u stop signal failed", i);
	}
	return NULL;
}

static void worker_batch(struct wctx *c, uint32_t tail, unsigned n)
{
	struct kms_msg msgs[256];
	uint8_t resp[256][RESP_MAX];
	struct mmsghdr mm[256];
	struct iovec iov[256];
	unsigned out = 0;

	for (unsigned i = 0; i < n; i++) {
		struct slot *sl = &c->ring[(tail + i) & c->mask];

		msgs[i].req = sl->data;
		msgs[i].req_len = sl->len;
		msgs[i].resp = resp[i];
		msgs[i].resp_cap = RESP_MAX;
	}
	kms_worker_process(c->w, msgs, n);
	for (unsigned i = 0; i < n; i++) {
		struct slot *sl = &c->ring[(tail + i) & c->mask];

		if (!msgs[i].resp_len)
			continue;
		iov[out].iov_base = resp[i];
		iov[out].iov_len = msgs[i].resp_len;
		memset(&mm[out], 0, sizeof(mm[out]));
		mm[out].msg_hdr.msg_iov = &iov[out];
		mm[out].msg_hdr.msg_iovlen = 1;
		mm[out].msg_hdr.msg_name = &sl->peer;
		mm[out].msg_hdr.msg_namelen = sl->peer_len;
		out++;
	}
	for (unsigned sent = 0; sent < out;) {
		int k = sendmmsg(c->io->fd, mm + sent, out - sent, 0);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			/* Skip the datagram the kernel refused; keep the rest. */
			STAT_INC(c->tx_errors);
			sent++;
			continue;
		}
		sent += (unsigned)k;
		__atomic_store_n(&c->tx, c->tx + (uint64_t)k, __ATOMIC_RELAXED);
	}
}

/* Create the thread's kms_worker and tell kms_sockio_start. @return 0
 * if the worker may run. */
static int worker_ready(struct wctx *c)
{
	struct kms_sockio *s = c->io;

	c->create_rc = kms_worker_create(s->e, c->id, &c->w);
	pthread_mutex_lock(&s->ready_mu);
	s->ready++;
	pthread_cond_signal(&s->ready_cv);
	pthread_mutex_unlock(&s->ready_mu);
	return c->create_rc;
}

/*
 * One worker (net.workers = 1): it reads the socket itself, runs the
 * batch and sends the replies, with no RX thread and no hand-off (a ring
 * copy, a wake-up and a third busy thread per request on a machine where
 * the load generator shares the CPUs). Every request belongs to this
 * worker anyway. While it is busy (a batch's durable commit), datagrams
 * wait in the socket's receive buffer, and the next recvmmsg takes up to
 * `batch` of them; what does not fit in the buffer is dropped by the
 * kernel (sock_drops; /proc/net/udp "drops"), as with the RX thread.
 * The receive timeout (bind_socket) bounds each wait, so a stop is seen.
 */
static void *direct_main(void *arg)
{
	struct wctx *c = arg;
	struct kms_sockio *s = c->io;
	unsigned batch = s->cfg.batch;
	struct mmsghdr mm[256];
	struct iovec iov[256];

	if (worker_ready(c))
		return NULL;
	/* The slots of the (otherwise unused) ring are the receive buffers. */
	for (unsigned i = 0; i < batch; i++) {
		struct slot *sl = &c->ring[i];

		iov[i].iov_base = sl->data;
		iov[i].iov_len = sizeof(sl->data);
		memset(&mm[i], 0, sizeof(mm[i]));
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		mm[i].msg_hdr.msg_name = &sl->peer;
		mm[i].msg_hdr.msg_namelen = sizeof(sl->peer);
	}
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE) &&
	       !__atomic_load_n(&s->rx_done, __ATOMIC_ACQUIRE)) {
		int n = recvmmsg(s->fd, mm, batch, MSG_DONTWAIT, NULL);

		if (n <= 0) {
			struct pollfd pfd = { .fd = s->fd, .events = POLLIN };

			/* Nothing queued: pre-make a K, look again. Deferred
			 * records wait (up to 1 ms) for a quiet socket or
			 * their due time: not a commit per empty read. */
			if (kms_worker_idle_poll(c->w, 1))
				continue;
			if (kms_worker_deferred(c->w)) {
				(void)poll(&pfd, 1, KMS_IDLE_QUIET_MS);
				continue;
			}
			n = recvmmsg(s->fd, mm, batch, MSG_WAITFORONE, NULL);
			if (n <= 0)
				continue; /* timeout or EINTR: check stop */
		}
		for (int i = 0; i < n; i++) {
			struct slot *sl = &c->ring[i];

			sl->peer_len = mm[i].msg_hdr.msg_namelen;
			/* Longer than any request: refused by the engine. */
			sl->len = (mm[i].msg_hdr.msg_flags & MSG_TRUNC)
					  ? 0 : (uint16_t)mm[i].msg_len;
			mm[i].msg_hdr.msg_namelen = sizeof(sl->peer);
		}
		__atomic_store_n(&s->rx_count, s->rx_count + (uint64_t)n,
				 __ATOMIC_RELAXED);
		worker_batch(c, 0, (unsigned)n);
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	struct wctx *c = arg;
	struct kms_sockio *s = c->io;
	unsigned batch = s->cfg.batch;

	if (worker_ready(c))
		return NULL;

	for (;;) {
		uint32_t tail = c->tail;
		uint32_t head = __atomic_load_n(&c->head, __ATOMIC_ACQUIRE);
		unsigned n = head - tail;

		if (n == 0) {
			struct pollfd pfd = { .fd = c->efd, .events = POLLIN };
			uint64_t v;

			/* Idle: pre-make a K before sleeping; look again. */
			if (kms_worker_idle(c->w, 1))
				continue;

			if (__atomic_load_n(&s->rx_done, __ATOMIC_ACQUIRE) &&
			    __atomic_load_n(&c->head, __ATOMIC_ACQUIRE) == tail)
				break;
			/* Announce sleep, then look again: RX either sees the
			 * flag and wakes us, or we see its slot. */
			__atomic_store_n(&c->sleeping, 1, __ATOMIC_SEQ_CST);
			if (__atomic_load_n(&c->head, __ATOMIC_SEQ_CST) == tail &&
			    !__atomic_load_n(&s->rx_done, __ATOMIC_ACQUIRE))
				if (poll(&pfd, 1, 200) > 0 &&
				    read(c->efd, &v, sizeof(v)) < 0)
					v = 0;
			__atomic_store_n(&c->sleeping, 0, __ATOMIC_SEQ_CST);
			continue;
		}
		if (n > batch)
			n = batch;
		worker_batch(c, tail, n);
		__atomic_store_n(&c->tail, tail + n, __ATOMIC_RELEASE);
	}
	return NULL;
}

static int bind_socket(struct kms_sockio *s)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct timeval tv = { 0, 100000 };
	char port[8];
	int rc, buf = 4 << 20;

	snprintf(port, sizeof(port), "%u", s->cfg.port);
	rc = getaddrinfo(s->cfg.listen, port, &hints, &ai);
	if (rc) {
		KMS_ERR("listen address '%s': %s", s->cfg.listen, gai_strerror(rc));
		return KMS_ERR_IO;
	}
	s->fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0 || bind(s->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		KMS_ERR("cannot bind UDP %s:%u: %s", s->cfg.listen, s->cfg.port,
			strerror(errno));
		freeaddrinfo(ai);
		return KMS_ERR_IO;
	}
	freeaddrinfo(ai);
	/* Short receive timeout so RX notices a stop request. */
	setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	if (getsockname(s->fd, (struct sockaddr *)&ss, &sl) == 0)
		s->port = ntohs(ss.ss_family == AF_INET6
					? ((struct sockaddr_in6 *)&ss)->sin6_port
					: ((struct sockaddr_in *)&ss)->sin_port);
	return KMS_OK;
}

static void free_io(struct kms_sockio *s)
{
	if (s->fd >= 0)
		close(s->fd);
	for (unsigned i = 0; s->wk && i < s->cfg.nworkers; i++) {
		kms_worker_destroy(s->wk[i].w);
		if (s->wk[i].efd >= 0)
			close(s->wk[i].efd);
		free(s->wk[i].ring);
	}
	free(s->wk);
	kms_hasher_free(s->hasher);
	pthread_mutex_destroy(&s->ready_mu);
	pthread_cond_destroy(&s->ready_cv);
	free(s);
}

int kms_sockio_start(struct kms_engine *e, const struct kms_sockio_config *cfg,
		     struct kms_sockio **out)
{
	struct kms_sockio *s = calloc(1, sizeof(*s));
	unsigned ring = cfg->ring_size ? cfg->ring_size : 1024, started = 0;
	int rc = KMS_ERR_NOMEM;

	if (!s)
		return KMS_ERR_NOMEM;
	s->e = e;
	s->cfg = *cfg;
	s->fd = -1;
	pthread_mutex_init(&s->ready_mu, NULL);
	pthread_cond_init(&s->ready_cv, NULL);
	if ((ring & (ring - 1)) || cfg->batch == 0 || cfg->batch > 256 ||
	    cfg->nworkers == 0) {
		rc = KMS_ERR_INVAL;
		goto err;
	}
	s->wk = calloc(cfg->nworkers, sizeof(*s->wk));
	s->hasher = kms_hasher_new();
	if (!s->wk || !s->hasher)
		goto err;
	for (unsigned i = 0; i < cfg->nworkers; i++) {
		s->wk[i].efd = -1;
		s->wk[i].io = s;
		s->wk[i].id = i;
		s->wk[i].mask = ring - 1;
		s->wk[i].ring = calloc(ring, sizeof(struct slot));
		s->wk[i].efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (!s->wk[i].ring || s->wk[i].efd < 0)
			goto err;
	}
	rc = bind_socket(s);
	if (rc)
		goto err;
	s->direct = cfg->nworkers == 1 && ring >= cfg->batch;
	for (; started < cfg->nworkers; started++)
		if (pthread_create(&s->wk[started].thread, NULL,
				   s->direct ? direct_main : worker_main,
				   &s->wk[started]))
			break;
	pthread_mutex_lock(&s->ready_mu);
	while (s->ready < started)
		pthread_cond_wait(&s->ready_cv, &s->ready_mu);
	pthread_mutex_unlock(&s->ready_mu);
	rc = started < cfg->nworkers ? KMS_ERR_NOMEM : KMS_OK;
	for (unsigned i = 0; i < started && rc == KMS_OK; i++)
		rc = s->wk[i].create_rc;
	if (rc == KMS_OK && !s->direct && pthread_create(&s->rx, NULL, rx_main, s))
		rc = KMS_ERR_NOMEM;
	if (rc) {
		/* Workers that did start exit once they see rx_done. */
		__atomic_store_n(&s->rx_done, 1, __ATOMIC_RELEASE);
		for (unsigned i = 0; i < started; i++) {
			uint64_t one = 1;
			if (write(s->wk[i].efd, &one, sizeof(one)) < 0)
				KMS_WARN("worker %u stop signal failed", i);
			pthread_join(s->wk[i].thread, NULL);
		}
		goto err;
	}
	*out = s;
	return KMS_OK;
err:
	free_io(s);
	return rc;
}

uint16_t kms_sockio_port(const struct kms_sockio *s)
{
	return s->port;
}

void kms_sockio_read_stats(struct kms_sockio *s, struct kms_stats *es,
			   struct kms_sockio_stats *is)
{
	if (es) {
		memset(es, 0, sizeof(*es));
		for (unsigned i = 0; i < s->cfg.nworkers; i++) {
			struct kms_stats one;

			kms_worker_stats(s->wk[i].w, &one);
			kms_stats_add(es, &one);
		}
	}
	if (is) {
		uint32_t mi[SK_MEMINFO_VARS];
		socklen_t ml = sizeof(mi);

		memset(is, 0, sizeof(*is));
		is->rx = __atomic_load_n(&s->rx_count, __ATOMIC_RELAXED);
		if (getsockopt(s->fd, SOL_SOCKET, SO_MEMINFO, mi, &ml) == 0 &&
		    ml > SK_MEMINFO_DROPS * sizeof(mi[0]))
			is->sock_drops = mi[SK_MEMINFO_DROPS];
		for (unsigned i = 0; i < s->cfg.nworkers; i++) {
			is->tx += __atomic_load_n(&s->wk[i].tx, __ATOMIC_RELAXED);
			is->tx_errors += __atomic_load_n(&s->wk[i].tx_errors, __ATOMIC_RELAXED);
			is->ring_full += __atomic_load_n(&s->wk[i].ring_full, __ATOMIC_RELAXED);
		}
	}
}

int kms_sockio_worker_stats(struct kms_sockio *s, unsigned i,
			    struct kms_stats *out)
{
	if (i >= s->cfg.nworkers)
		return KMS_ERR_INVAL;
	kms_worker_stats(s->wk[i].w, out);
	return KMS_OK;
}

void kms_sockio_stop(struct kms_sockio *s, struct kms_stats *es,
		     struct kms_sockio_stats *is)
{
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	if (!s->direct)
		pthread_join(s->rx, NULL);
	for (unsigned i = 0; i < s->cfg.nworkers; i++)
		pthread_join(s->wk[i].thread, NULL);
	kms_sockio_read_stats(s, es, is);
	free_io(s);
}
