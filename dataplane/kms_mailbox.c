// SPDX-License-Identifier: Apache-2.0
/*
 * kms-mailbox: B's deferred-delivery server for MIKEY-IBAKE (TR 33.828
 * 7.6.2.5). It runs the mutual authentication with A and with B
 * (proto/ibe/ibake.c), stores each deposit durably in its own LMDB store
 * (keystore/mbox.c) before acknowledging it, hands B its messages and
 * deletes each one after B confirms delivery. It holds its own IBE keys
 * (as any party) and never anything that opens a message: aP reaches it
 * only sealed to B.
 *
 *   kms-mailbox [--config FILE] [--listen HOST:PORT] [--store DIR]
 *               [--keys MB.ibe] [--params ibe.params] [--verbose]
 *               [--check-config]
 *
 * TCP, one thread per connection (at most max_conns; more are answered
 * BUSY and closed), frames of docs/PROTOCOL.md part II. SIGINT/SIGTERM:
 * stop accepting, cut the open connections, wait for them, print the
 * counters, close the store.
 */
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include <openssl/crypto.h>

#include "kms_config.h"
#include "kms_err.h"
#include "kms_ibake.h"
#include "kms_log.h"
#include "kms_mbox.h"
#include "kms_secmem.h"
#include "kms_version.h"

#define CONNS_CAP 1024

struct mb_config {
	char listen[128];
	char store[256];
	char keys[256];
	char params[256];
	unsigned max_conns;
	unsigned max_message_mb;
	unsigned io_timeout_s;
	uint64_t lifetime_s;
	unsigned purge_interval_s;
	uint64_t map_size_mb;
	char log_level[16];
};

struct counters {
	uint64_t conns, conns_busy, deposits, deposit_bytes, fetches,
		delivered, kept, purged, refused[KMS_ST__COUNT];
};

static struct {
	struct mb_config cfg;
	struct kms_ibe *ibe;
	struct kms_ibe_params params;
	struct kms_ibe_keys *keys;      /* locked memory */
	struct kms_sakke_rskp *rskp;    /* keys' RSK prepared: faster opens */
	struct kms_secmem *mem;
	struct kms_mbox *store;
	pthread_mutex_t lock;           /* conns[], nconns, st */
	pthread_cond_t idle;
	int conns[CONNS_CAP];
	unsigned nconns;
	struct counters st;
} mb = { .lock = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER };

static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define COUNT(field, n) do {				\
	pthread_mutex_lock(&mb.lock);			\
	mb.st.field += (n);				\
	pthread_mutex_unlock(&mb.lock);			\
} while (0)

/* ---------------------------------------------------------------- config */

static void cfg_defaults(struct mb_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->listen, sizeof(c->listen), "127.0.0.1:7440");
	snprintf(c->store, sizeof(c->store), "/var/lib/kms/mailbox");
	snprintf(c->log_level, sizeof(c->log_level), "info");
	c->max_conns = 64;
	c->max_message_mb = 60;
	c->io_timeout_s = 30;
	c->lifetime_s = 30ull * 24 * 3600;
	c->purge_interval_s = 300;
	c->map_size_mb = 1024;
}

struct ini_ctx {
	struct mb_config *c;
	const char *path;
	char err[256];
};

static int num(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || *end || n < lo || n > hi || v[0] == '-')
		return -1;
	*out = n;
	return 0;
}

static int on_ini(void *user, const char *section, const char *name,
		  const char *value)
{
	struct ini_ctx *x = user;
	struct mb_config *c = x->c;
	uint64_t n = 0;
	int bad = 0;

	if (strcmp(section, KMS_CONFIG_MAILBOX_SECTION)) {
		/* kmsd's sections, in a file both daemons share: kmsd
		 * checks them (kmsd --check-config). */
		if (kms_config_is_section(section))
			return 1;
		snprintf(x->err, sizeof(x->err), "unknown section [%s] (neither "
			 "kms-mailbox's [mailbox] nor one of kmsd's)", section);
		return 0;
	}
#define STR(k, f) if (!strcmp(name, k)) { \
		if (strlen(value) >= sizeof(c->f)) bad = 1; \
		else snprintf(c->f, sizeof(c->f), "%s", value); } else
#define NUM(k, f, lo, hi) if (!strcmp(name, k)) { \
		if (num(value, lo, hi, &n)) bad = 1; else c->f = n; } else
	STR("listen", listen)
	STR("store", store)
	STR("keys", keys)
	STR("params", params)
	if (!strcmp(name, "log_level")) {
		if (strcmp(value, "error") && strcmp(value, "warning") &&
		    strcmp(value, "info") && strcmp(value, "debug"))
			bad = 1;
		else
			snprintf(c->log_level, sizeof(c->log_level), "%s", value);
	} else
	NUM("max_conns", max_conns, 1, CONNS_CAP)
	NUM("max_message_mb", max_message_mb, 1, 60)
	NUM("io_timeout_s", io_timeout_s, 1, 3600)
	NUM("lifetime_s", lifetime_s, 1, 10ull * 365 * 86400)
	NUM("purge_interval_s", purge_interval_s, 0, 86400)
	NUM("map_size_mb", map_size_mb, 1, 1ull << 24)
	{
		snprintf(x->err, sizeof(x->err), "unknown key '%s'", name);
		return 0;
	}
#undef STR
#undef NUM
	if (bad) {
		snprintf(x->err, sizeof(x->err), "bad value for %s: '%s'", name,
			 value);
		return 0;
	}
	return 1;
}

static int cfg_load(struct mb_config *c, const char *path)
{
	struct ini_ctx x = { .c = c, .path = path };
	FILE *f = fopen(path, "re");
	int line;

	if (!f) {
		KMS_ERR("%s: %s", path, strerror(errno));
		return -1;
	}
	line = ini_parse_file(f, on_ini, &x);
	fclose(f);
	if (line) {
		KMS_ERR("%s:%d: %s", path, line,
			x.err[0] ? x.err : "syntax error");
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- store */

static int st_put(void *arg, struct kms_ibake_item *it)
{
	(void)arg;
	return kms_mbox_put(mb.store, it, now_ms());
}

static int st_next(void *arg, const struct kms_id *id_b, const uint8_t *after,
		   struct kms_ibake_item *it, struct kms_buf *hold)
{
	(void)arg;
	return kms_mbox_next(mb.store, id_b, after, now_ms(), it, hold);
}

static int st_del(void *arg, const struct kms_id *id_b,
		  const uint8_t msg_id[KMS_IBAKE_MSG_ID_LEN])
{
	(void)arg;
	return kms_mbox_del(mb.store, id_b, msg_id);
}

static const struct kms_ibake_store_ops store_ops = {
	.put = st_put, .next = st_next, .del = st_del,
};

/* ---------------------------------------------------------------- conns */

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = recv(fd, p, n, 0);

		if (r < 0 && errno == EINTR && !stop)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static void conn_drop(int fd)
{
	pthread_mutex_lock(&mb.lock);
	for (unsigned i = 0; i < mb.nconns; i++)
		if (mb.conns[i] == fd) {
			mb.conns[i] = mb.conns[--mb.nconns];
			break;
		}
	if (!mb.nconns)
		pthread_cond_broadcast(&mb.idle);
	pthread_mutex_unlock(&mb.lock);
	close(fd);
}

/* One client, one session: frames in, frames out, until the session ends
 * or fails. A frame above the configured size is refused before it is
 * read. */
static void *conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	struct kms_ibake_party me = { .ibe = mb.ibe, .params = &mb.params,
				      .keys = mb.keys, .rskp = mb.rskp };
	struct kms_buf in = { 0 }, out = { 0 };
	uint32_t max = (uint32_t)mb.cfg.max_message_mb << 20;
	struct kms_ibake *s = NULL;
	uint8_t pre[4];
	int rc = KMS_ERR_NOMEM, fetch = 0;

	max += 65536; /* headers, signature, key blob */
	if (kms_ibake_new(&me, &s))
		goto out;
	for (;;) {
		uint32_t n;

		if (read_all(fd, pre, 4))
			break; /* closed, timed out or shut down */
		n = kms_ibake_frame_len(pre, kms_ibake_mb_frame_max(s, max));
		if (!n) {
			kms_ibake_error_frame(KMS_ST_MALFORMED, &out);
			write_all(fd, out.p, out.len);
			COUNT(refused[KMS_ST_MALFORMED], 1);
			break;
		}
		in.len = 0;
		if (kms_buf_reserve(&in, 4 + (size_t)n))
			break;
		memcpy(in.p, pre, 4);
		if (read_all(fd, in.p + 4, n))
			break;
		in.len = 4 + (size_t)n;
		if (in.p[5] == KMS_IB_F1)
			fetch = 1;
		if (in.p[5] == KMS_IB_DELETE)
			COUNT(delivered, 1);
		if (in.p[5] == KMS_IB_NEXT)
			COUNT(kept, 1);
		out.len = 0;
		rc = kms_ibake_mb_on_frame(s, &store_ops, NULL, in.p, in.len,
					   &out);
		if (out.len && write_all(fd, out.p, out.len))
			break;
		if (rc < 0) {
			uint16_t st = kms_ibake_status(s);

			COUNT(refused[st < KMS_ST__COUNT ? st : KMS_ST_INTERNAL], 1);
			KMS_WARN_RL("mailbox: session refused: %s",
				    kms_status_name(st));
			break;
		}
		if (rc == 1) {
			if (fetch)
				COUNT(fetches, 1);
			else {
				COUNT(deposits, 1);
				COUNT(deposit_bytes, in.len);
			}
			break;
		}
	}
out:
	kms_ibake_free(s);
	kms_buf_free(&in);
	kms_buf_free(&out);
	conn_drop(fd);
	return NULL;
}

static void conn_start(int fd)
{
	struct timeval tv = { .tv_sec = mb.cfg.io_timeout_s };
	pthread_attr_t at;
	pthread_t t;
	int ok;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	pthread_mutex_lock(&mb.lock);
	ok = mb.nconns < mb.cfg.max_conns;
	if (ok) {
		mb.conns[mb.nconns++] = fd;
		mb.st.conns++;
	} else {
		mb.st.conns_busy++;
	}
	pthread_mutex_unlock(&mb.lock);
	if (!ok) {
		struct kms_buf out = { 0 };

		kms_ibake_error_frame(KMS_ST_BUSY, &out);
		write_all(fd, out.p, out.len);
		kms_buf_free(&out);
		close(fd);
		return;
	}
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &at, conn_main, (void *)(intptr_t)fd)) {
		KMS_ERR("mailbox: cannot start a connection thread");
		conn_drop(fd);
	}
	pthread_attr_destroy(&at);
}

static int listen_on(const char *hostport, char *bound, size_t cap)
{
	char host[128], *port, serv[16];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE }, *res;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, one = 1, rc;

	snprintf(host, sizeof(host), "%s", hostport);
	port = strrchr(host, ':');
	if (!port) {
		KMS_ERR("listen %s: want HOST:PORT", hostport);
		return -1;
	}
	*port++ = 0;
	if (host[0] == '[' && port[-2] == ']') {
		port[-2] = 0;
		memmove(host, host + 1, strlen(host));
	}
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		KMS_ERR("listen %s: %s", hostport, gai_strerror(rc));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 128) ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv,
			sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV)) {
		KMS_ERR("listen %s: %s", hostport, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	snprintf(bound, cap, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
		 serv);
	return fd;
}

static void print_counters(void)
{
	uint64_t held = 0;

	kms_mbox_count(mb.store, &held);
	printf("kms-mailbox: stats: connections=%llu busy=%llu deposits=%llu "
	       "deposit_bytes=%llu fetch_sessions=%llu delivered=%llu kept=%llu "
	       "purged=%llu held=%llu\n",
	       (unsigned long long)mb.st.conns,
	       (unsigned long long)mb.st.conns_busy,
	       (unsigned long long)mb.st.deposits,
	       (unsigned long long)mb.st.deposit_bytes,
	       (unsigned long long)mb.st.fetches,
	       (unsigned long long)mb.st.delivered,
	       (unsigned long long)mb.st.kept,
	       (unsigned long long)mb.st.purged, (unsigned long long)held);
	for (unsigned i = 1; i < KMS_ST__COUNT; i++)
		if (mb.st.refused[i])
			printf("kms-mailbox: stats: refused %s=%llu\n",
			       kms_status_name(i),
			       (unsigned long long)mb.st.refused[i]);
	fflush(stdout);
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kms-mailbox [--config FILE] [--listen HOST:PORT] [--store DIR]\n"
		"                   [--keys MB.ibe] [--params ibe.params] [--verbose]\n"
		"                   [--check-config]\n"
		"  --config FILE   INI file with a [mailbox] section\n"
		"                  (config/kms-mailbox.conf.example)\n"
		"  --listen        TCP address (default 127.0.0.1:7440; port 0: any free port,\n"
		"                  printed on the ready line)\n"
		"  --store DIR     the message store (LMDB), created if missing\n"
		"  --keys FILE     the mailbox's own IBE keys (kms-ibake keys, as an enrolled AS)\n"
		"  --params FILE   the KMS's IBE public parameters (kmsctl ibe show --out)\n"
		"  --check-config  read the configuration, the keys and the parameters\n"
		"                  (the keys are checked against them), then exit\n"
		"  --verbose       debug logging\n"
		"  -h, --help      this text\n"
		"  --version       the version and the libraries' versions\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "store", required_argument, NULL, 's' },
		{ "keys", required_argument, NULL, 'k' },
		{ "params", required_argument, NULL, 'p' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, KMS_OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	const char *over[5] = { 0 };
	char bound[160], cur[KMS_IBE_PERIOD_LEN + 1];
	struct sigaction sa = { .sa_handler = on_stop };
	struct kms_mbox_config sc;
	uint64_t next_purge;
	int verbose = 0, check = 0, lfd = -1, rc = 1, c;

	kms_log_init("kms-mailbox", KMS_LOG_INFO, 0);
	if (kms_secmem_openssl_heap())
		return 1;
	kms_secmem_harden_process();
	cfg_defaults(&mb.cfg);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (cfg_load(&mb.cfg, optarg))
				return 2;
			break;
		case 'l': over[0] = optarg; break;
		case 's': over[1] = optarg; break;
		case 'k': over[2] = optarg; break;
		case 'p': over[3] = optarg; break;
		case 'v': verbose = 1; break;
		case 'C': check = 1; break;
		case 'h': usage(stdout); return 0;
		case KMS_OPT_VERSION:
			kms_version_print(stdout, "kms-mailbox");
			printf("%s\n", mdb_version(NULL, NULL, NULL));
			return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (over[0])
		snprintf(mb.cfg.listen, sizeof(mb.cfg.listen), "%s", over[0]);
	if (over[1])
		snprintf(mb.cfg.store, sizeof(mb.cfg.store), "%s", over[1]);
	if (over[2])
		snprintf(mb.cfg.keys, sizeof(mb.cfg.keys), "%s", over[2]);
	if (over[3])
		snprintf(mb.cfg.params, sizeof(mb.cfg.params), "%s", over[3]);
	kms_log_init("kms-mailbox",
		     verbose || !strcmp(mb.cfg.log_level, "debug") ? KMS_LOG_DEBUG :
		     !strcmp(mb.cfg.log_level, "error") ? KMS_LOG_ERR :
		     !strcmp(mb.cfg.log_level, "warning") ? KMS_LOG_WARN :
		     KMS_LOG_INFO, 0);
	if (!mb.cfg.keys[0] || !mb.cfg.params[0]) {
		KMS_ERR("the mailbox needs its IBE keys (keys =) and the KMS's "
			"public parameters (params =)");
		return 2;
	}

	if (kms_secmem_create(sizeof(struct kms_ibe_keys), 1, &mb.mem))
		return 1;
	mb.keys = kms_secmem_alloc(mb.mem);
	if (kms_ibe_params_read(mb.cfg.params, &mb.params)) {
		KMS_ERR("%s: not an IBE parameter file", mb.cfg.params);
		goto out;
	}
	if (kms_ibe_keys_read(mb.cfg.keys, mb.keys)) {
		KMS_ERR("%s: not an IBE key file", mb.cfg.keys);
		goto out;
	}
	if (kms_ibe_new(&mb.ibe))
		goto out;
	if (kms_ibe_keys_check(mb.ibe, &mb.params, mb.keys)) {
		KMS_ERR("%s: the keys do not check against %s (another KGC?)",
			mb.cfg.keys, mb.cfg.params);
		goto out;
	}
	if (kms_ibe_prepare(mb.ibe, &mb.params, mb.keys, &mb.rskp)) {
		KMS_ERR("%s: cannot prepare the mailbox's RSK", mb.cfg.keys);
		goto out;
	}
	kms_ibe_period(now_ms(), cur);
	if (check) {
		printf("kms-mailbox: configuration ok: listen %s, store %s, id %s, "
		       "keys of %s%s\n", mb.cfg.listen, mb.cfg.store, mb.keys->id,
		       mb.keys->period, strcmp(cur, mb.keys->period) ?
		       " (not this month's)" : "");
		rc = 0;
		goto out;
	}
	if (strcmp(cur, mb.keys->period))
		KMS_WARN("the mailbox keys are for %s, this is %s: parties "
			 "with keys of %s are refused BAD_PERIOD",
			 mb.keys->period, cur, cur);
	sc = (struct kms_mbox_config){ .path = mb.cfg.store,
				       .map_size = mb.cfg.map_size_mb << 20,
				       .lifetime_ms = mb.cfg.lifetime_s * 1000 };
	if (kms_mbox_open(&sc, &mb.store))
		goto out;
	lfd = listen_on(mb.cfg.listen, bound, sizeof(bound));
	if (lfd < 0)
		goto out;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	printf("kms-mailbox: ready on %s id=%s period=%s store=%s\n", bound,
	       mb.keys->id, mb.keys->period, mb.cfg.store);
	fflush(stdout);

	next_purge = now_ms() + (uint64_t)mb.cfg.purge_interval_s * 1000;
	while (!stop) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };
		int fd;

		if (mb.cfg.purge_interval_s && now_ms() >= next_purge) {
			unsigned n = 0;

			if (!kms_mbox_purge(mb.store, now_ms(), 1000, &n) && n)
				COUNT(purged, n);
			next_purge = now_ms() +
				     (uint64_t)mb.cfg.purge_interval_s * 1000;
		}
		if (poll(&pfd, 1, 200) <= 0)
			continue;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			conn_start(fd);
	}
	/* Stop: no new connections; cut the open ones and wait for their
	 * threads (a deposit being committed finishes its commit first). */
	close(lfd);
	pthread_mutex_lock(&mb.lock);
	for (unsigned i = 0; i < mb.nconns; i++)
		shutdown(mb.conns[i], SHUT_RDWR);
	while (mb.nconns)
		pthread_cond_wait(&mb.idle, &mb.lock);
	pthread_mutex_unlock(&mb.lock);
	print_counters();
	rc = 0;
out:
	kms_mbox_close(mb.store);
	kms_sakke_rskp_free(mb.rskp);
	kms_ibe_free(mb.ibe);
	kms_secmem_destroy(mb.mem);
	return rc;
}
