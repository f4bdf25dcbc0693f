// SPDX-License-Identifier: Apache-2.0
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

#include "kms_log.h"

static const char *log_prog = "kms";
static enum kms_log_level log_max = KMS_LOG_INFO;
static int log_syslog;

void kms_log_init(const char *prog, enum kms_log_level max, int use_syslog)
{
	log_prog = prog;
	log_max = max;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(prog, LOG_PID, LOG_DAEMON);
}

void kms_log(enum kms_log_level lvl, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char msg[512];
	va_list ap;

	if (lvl > log_max)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_syslog) {
		syslog(prio[lvl], "%s", msg);
		return;
	}
	/* One fprintf per line so concurrent threads do not interleave. */
	fprintf(stderr, "%s: %s: %s\n", log_prog, names[lvl], msg);
}

void kms_log_rl(enum kms_log_level lvl, struct kms_log_rl *rl,
		const char *fmt, ...)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	unsigned long now = (unsigned long)time(NULL), dropped = 0;
	char msg[512];
	va_list ap;
	int pass;

	if (lvl > log_max)
		return;
	pthread_mutex_lock(&lock);
	if (now - rl->window >= KMS_LOG_RL_WINDOW_S) {
		rl->window = now;
		rl->n = 0;
	}
	pass = rl->n < KMS_LOG_RL_BURST;
	if (pass) {
		rl->n++;
		dropped = rl->suppressed;
		rl->suppressed = 0;
	} else {
		rl->suppressed++;
	}
	pthread_mutex_unlock(&lock);
	if (!pass)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (dropped)
		kms_log(lvl, "%s (%lu similar messages suppressed)", msg, dropped);
	else
		kms_log(lvl, "%s", msg);
}
