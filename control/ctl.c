// SPDX-License-Identifier: Apache-2.0
/* The control socket, server and client. Contract in kms_ctl.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kms_ctl.h"
#include "kms_err.h"
#include "kms_log.h"

#define IO_TIMEOUT_MS 2000

struct kms_ctl {
	int lfd;
	int stop[2];            /* pipe: a byte stops the thread */
	pthread_t thread;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct kms_ctl_cmd *cmds;
	unsigned ncmds;
};

static int addr_of(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!path || !*path || strlen(path) >= sizeof(sa->sun_path))
		return KMS_ERR_INVAL;
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return KMS_OK;
}

/* poll() for one event on @p fd for up to @p ms, across signals (a
 * signal must not cut a request short: it would go unanswered). @return 1
 * ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, int ms)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		long left;
		int rc;

		clock_gettime(CLOCK_MONOTONIC, &t);
		left = ms - ((t.tv_sec - t0.tv_sec) * 1000 +
			     (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left < 0)
			left = 0;
		rc = poll(&p, 1, (int)left);
		if (rc >= 0)
			return rc > 0 ? 1 : 0;
		if (errno != EINTR)
			return -1;
	}
}

/* Read one line (without its '\n') within the timeout. @return its length,
 * -1 on I/O error or timeout, -2 when longer than KMS_CTL_LINE_MAX. */
static ssize_t read_line(int fd, char *buf, size_t cap)
{
	size_t got = 0;

	for (;;) {
		char *nl;
		ssize_t n;

		if (wait_fd(fd, POLLIN, IO_TIMEOUT_MS) != 1)
			return -1;
		n = read(fd, buf + got, cap - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return got && n == 0 ? (ssize_t)got : -1;
		got += (size_t)n;
		buf[got] = '\0';
		nl = memchr(buf, '\n', got);
		if (nl) {
			*nl = '\0';
			return nl - buf;
		}
		if (got == cap - 1)
			return -2;
	}
}

static void write_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n;

		if (wait_fd(fd, POLLOUT, IO_TIMEOUT_MS) != 1)
			return;
		n = write(fd, s, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

static void reply_send(int fd, json_t *reply)
{
	char *s = json_dumps(reply, JSON_COMPACT);

	if (s) {
		write_all(fd, s, strlen(s));
		write_all(fd, "\n", 1);
		free(s);
	}
}

static void reply_error(int fd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void reply_error(int fd, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	json_t *r;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* JSON strings must be UTF-8 (jansson refuses anything else and the
	 * client would get no answer): the message may quote the request. */
	for (char *m = msg; *m; m++)
		if ((unsigned char)*m < 0x20 || (unsigned char)*m > 0x7e)
			*m = '?';
	r = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
	if (r)
		reply_send(fd, r);
	json_decref(r);
}

static int help(struct kms_ctl *c, json_t *reply)
{
	json_t *list = json_array();

	if (!list)
		return -1;
	for (unsigned i = 0; i < c->ncmds; i++)
		json_array_append_new(list, json_pack("{s:s, s:s, s:b}", "name",
						      c->cmds[i].name, "usage",
						      c->cmds[i].usage, "write",
						      c->cmds[i].write));
	json_array_append_new(list, json_pack("{s:s, s:s, s:b}", "name", "help",
					      "usage", "this list", "write", 0));
	return json_object_set_new(reply, "commands", list);
}

/* One connection: one line in, one JSON object out. */
static void serve(struct kms_ctl *c, int fd)
{
	char line[KMS_CTL_LINE_MAX + 1], *argv[KMS_CTL_ARGS_MAX + 1], *save;
	char err[256] = "";
	ssize_t len = read_line(fd, line, sizeof(line));
	const struct kms_ctl_cmd *cmd = NULL;
	json_t *reply;
	int argc = 0;

	if (len == -2) {
		reply_error(fd, "request longer than %d bytes", KMS_CTL_LINE_MAX);
		return;
	}
	if (len < 0)
		return; /* gone or silent: nothing to answer */
	/* Commands, names and values are printable ASCII: anything else is
	 * refused here, so no handler ever quotes bytes JSON cannot carry. */
	for (ssize_t i = 0; i < len; i++)
		if ((unsigned char)line[i] > 0x7e ||
		    ((unsigned char)line[i] < 0x20 && line[i] != '\t' &&
		     line[i] != '\r')) {
			reply_error(fd, "request is not printable ASCII (byte %zd)",
				    i);
			return;
		}
	for (char *t = strtok_r(line, " \t\r", &save); t;
	     t = strtok_r(NULL, " \t\r", &save)) {
		if (argc == KMS_CTL_ARGS_MAX + 1) {
			reply_error(fd, "more than %d arguments", KMS_CTL_ARGS_MAX);
			return;
		}
		argv[argc++] = t;
	}
	if (!argc) {
		reply_error(fd, "empty request");
		return;
	}
	for (unsigned i = 0; i < c->ncmds && !cmd; i++)
		if (!strcmp(c->cmds[i].name, argv[0]))
			cmd = &c->cmds[i];
	if (!cmd && strcmp(argv[0], "help")) {
		reply_error(fd, "unknown command '%.64s' (try: help)", argv[0]);
		return;
	}
	reply = json_object();
	if (!reply)
		return;
	if (cmd ? cmd->handler(cmd->arg, argc, argv, reply, err, sizeof(err))
		: help(c, reply)) {
		reply_error(fd, "%s", err[0] ? err : "command failed");
	} else {
		json_object_set_new(reply, "ok", json_true());
		reply_send(fd, reply);
	}
	json_decref(reply);
}

/* Close without a reset: a client whose request was refused unread
 * (too long) must still get the reply, so what it sent is drained first
 * (bounded: 64 KiB, 100 ms of silence). */
static void finish(int fd)
{
	char buf[4096];

	shutdown(fd, SHUT_WR);
	for (int i = 0; i < 16; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, 100) != 1 || read(fd, buf, sizeof(buf)) <= 0)
			break;
	}
	close(fd);
}

static void *ctl_main(void *arg)
{
	struct kms_ctl *c = arg;

	for (;;) {
		struct pollfd p[2] = {
			{ .fd = c->lfd, .events = POLLIN },
			{ .fd = c->stop[0], .events = POLLIN },
		};
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			KMS_ERR("control socket: poll: %s", strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve(c, fd);
		finish(fd);
	}
	return NULL;
}

/* Is someone serving @p sa? */
static int served(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ok;

	if (fd < 0)
		return 0;
	ok = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
	close(fd);
	return ok;
}

int kms_ctl_start(const char *path, const struct kms_ctl_cmd *cmds, unsigned n,
		  struct kms_ctl **out)
{
	struct kms_ctl *c;
	struct sockaddr_un sa;
	mode_t old;
	int rc;

	if (addr_of(path, &sa)) {
		KMS_ERR("control socket path '%s' is empty or too long (max %zu)",
			path ? path : "", sizeof(sa.sun_path) - 1);
		return KMS_ERR_INVAL;
	}
	if (served(&sa)) {
		KMS_ERR("control socket %s: another process serves it", path);
		return KMS_ERR_EXISTS;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return KMS_ERR_NOMEM;
	c->lfd = c->stop[0] = c->stop[1] = -1;
	c->cmds = calloc(n ? n : 1, sizeof(*cmds));
	if (!c->cmds) {
		free(c);
		return KMS_ERR_NOMEM;
	}
	memcpy(c->cmds, cmds, n * sizeof(*cmds));
	c->ncmds = n;
	snprintf(c->path, sizeof(c->path), "%s", path);
	rc = KMS_ERR_IO;
	unlink(path); /* stale: nobody answered on it */
	c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->lfd < 0 || pipe2(c->stop, O_CLOEXEC))
		goto err;
	/* Created 0600 from the start: no window where others may connect. */
	old = umask(0177);
	if (bind(c->lfd, (struct sockaddr *)&sa, sizeof(sa))) {
		umask(old);
		KMS_ERR("control socket %s: bind: %s", path, strerror(errno));
		goto err;
	}
	umask(old);
	if (chmod(path, 0600) || listen(c->lfd, 8)) {
		KMS_ERR("control socket %s: %s", path, strerror(errno));
		goto err;
	}
	if (pthread_create(&c->thread, NULL, ctl_main, c)) {
		KMS_ERR("control socket: cannot start its thread");
		goto err;
	}
	*out = c;
	return KMS_OK;
err:
	if (c->lfd >= 0) {
		close(c->lfd);
		unlink(path);
	}
	if (c->stop[0] >= 0) {
		close(c->stop[0]);
		close(c->stop[1]);
	}
	free(c->cmds);
	free(c);
	return rc;
}

void kms_ctl_stop(struct kms_ctl *c)
{
	if (!c)
		return;
	if (write(c->stop[1], "x", 1) == 1)
		pthread_join(c->thread, NULL);
	close(c->lfd);
	close(c->stop[0]);
	close(c->stop[1]);
	unlink(c->path);
	free(c->cmds);
	free(c);
}

int kms_ctl_call(const char *path, const char *line, json_t **reply,
		 char *err, size_t errlen)
{
	char buf[1 << 16];
	struct sockaddr_un sa;
	json_error_t jerr;
	size_t got = 0;
	int fd, rc = KMS_ERR_IO;

	*reply = NULL;
	if (addr_of(path, &sa)) {
		snprintf(err, errlen, "control socket path '%s' is empty or too long",
			 path ? path : "");
		return KMS_ERR_INVAL;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		snprintf(err, errlen, "cannot reach kmsd at %s: %s (is it running "
			 "with this configuration?)", path, strerror(errno));
		goto out;
	}
	write_all(fd, line, strlen(line));
	write_all(fd, "\n", 1);
	for (;;) {
		ssize_t n;

		if (wait_fd(fd, POLLIN, 10 * IO_TIMEOUT_MS) != 1) {
			snprintf(err, errlen, "kmsd did not answer within 20 s");
			goto out;
		}
		n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "read: %s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got == sizeof(buf) - 1)
			break;
	}
	buf[got] = '\0';
	*reply = json_loads(buf, 0, &jerr);
	if (!json_is_object(*reply)) {
		json_decref(*reply);
		*reply = NULL;
		snprintf(err, errlen, "kmsd's reply is not a JSON object");
		rc = KMS_ERR_MALFORMED;
		goto out;
	}
	rc = KMS_OK;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}
