// SPDX-License-Identifier: Apache-2.0
/*
 * fuzz_ctl: kmsd's control socket on arbitrary lines. The real server
 * (control/ctl.c: line reading, tokenising, dispatch, JSON replies) serves
 * kmsd's real command table (dataplane/kmsd_ctl.c: stats, policy-show,
 * policy-set, policy-clear, help) over a real engine, socket I/O, SoftHSM2
 * token and LMDB store, all set up once. serve() is only reachable through
 * the socket, so each input goes through it as a client would send it.
 *
 * Input: split at '\n' into at most CTL_MAX_LINES requests, one connection
 * each, each line sent with its '\n' (the last one without, if the input
 * does not end with one: the server then reads to EOF). The live policy is
 * reset to the default before each input, so an input does not depend on
 * the ones before it (the store keeps what policy-set persisted, as kmsd's
 * does).
 *
 * Checks (docs/PROTOCOL.md section 16): every non-empty request gets
 * exactly one line that is a JSON object with a boolean "ok", and "error"
 * (a string) when ok is false; a refused request changes nothing (the
 * live policy is compared before and after).
 *
 * KMS_FUZZ_CTL_NO_REPLY_OK=1 accepts a request that gets no reply at all
 * (a known bug: tests/fuzz/README.md, "Findings"), so fuzzing can go on
 * past it until it is fixed; every reply that does come is still checked.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "fuzz_common.h"
#include "kms_ctl.h"
#include "kms_engine.h"
#include "kms_err.h"
#include "kms_hsm.h"
#include "kms_ks.h"
#include "kms_policy.h"
#include "kms_sockio.h"
#include "kms_testenv.h"
#include "kmsd_ctl.h"

#define CTL_MAX_LINES 8
#define REPLY_TIMEOUT_MS 10000
#define REPLY_CAP (1u << 20)

static struct {
	struct kms_testenv env;
	char dir[256];
	char sock[300];
	struct kms_hsm *hsm;
	struct kms_ks *ks;
	struct kms_engine *eng;
	struct kms_sockio *io;
	struct kmsd_ctl_src src;
	struct kms_ctl *ctl;
	struct kms_policy dflt;
	char *reply;
	int no_reply_ok;
	char before[KMS_POLICY_TEXT_MAX], after[KMS_POLICY_TEXT_MAX];
} fz;

/* The live policy set in its text form into @p out. */
static void policy_text(char *out)
{
	struct kms_policy_set ps;

	kms_engine_policy_get(fz.eng, &ps);
	FUZZ_CHECK(kms_policy_encode(&ps, out, KMS_POLICY_TEXT_MAX) >= 0);
}

/* kmsd stops a running KEK rotation (kek-rotate) before it closes the
 * store; weak: only kmsd builds that have the command define it. */
void kmsd_kekrot_stop(void) __attribute__((weak));

static void die(const char *what, int rc)
{
	fprintf(stderr, "fuzz_ctl: %s: %s\n", what, kms_strerror(rc));
	exit(1);
}

static void teardown(void)
{
	kms_ctl_stop(fz.ctl);
	if (kmsd_kekrot_stop)
		kmsd_kekrot_stop();
	kms_sockio_stop(fz.io, NULL, NULL);
	kms_engine_destroy(fz.eng);
	kms_ks_close(fz.ks);
	kms_hsm_close(fz.hsm);
	kms_testenv_teardown(&fz.env);
	fuzz_rmrf(fz.dir);
	free(fz.reply);
}

static void setup(void)
{
	struct kms_engine_config cfg;
	struct kms_sockio_config sc = { .listen = "127.0.0.1", .port = 0,
					.nworkers = 1, .batch = 8 };
	struct kms_ks_config kc = { 0 };
	int rc;

	if (kms_testenv_setup(&fz.env))
		exit(1);
	fuzz_tmpdir("ctl", fz.dir, sizeof(fz.dir));
	snprintf(fz.env.store, sizeof(fz.env.store), "%s/store", fz.dir);
	snprintf(fz.sock, sizeof(fz.sock), "%s/kmsd.sock", fz.dir);
	fz.reply = malloc(REPLY_CAP + 1);
	if (!fz.reply)
		exit(1);
	if ((rc = kms_hsm_open(&fz.env.hsm, &fz.hsm)) ||
	    (rc = kms_hsm_kek_create(fz.hsm)))
		die("hsm", rc);
	kc.path = fz.env.store;
	kc.map_size = 1u << 30;
	kc.create = 1;
	if ((rc = kms_ks_open(&kc, &fz.ks)))
		die("store", rc);
	fz.dflt.reuse_max_deposits = 0;
	fz.dflt.reuse_max_age_s = 0;
	fz.dflt.deposit_lifetime_s = 86400;
	fz.dflt.max_retrievals = 0;
	memset(&cfg, 0, sizeof(cfg));
	cfg.crypto_mode = "offload";
	cfg.policy = fz.dflt;
	cfg.max_skew_ms = 30000;
	cfg.replay_capacity = 1024;
	cfg.batch_max = 8;
	cfg.cache_keys = KMS_ENGINE_CACHE_MIN(8);
	cfg.nworkers = 1;
	if ((rc = kms_engine_create(&cfg, fz.hsm, fz.ks, &fz.eng)))
		die("engine", rc);
	if ((rc = kms_sockio_start(fz.eng, &sc, &fz.io)))
		die("socket I/O", rc);
	fz.src.crypto_mode = "offload";
	fz.src.nworkers = 1;
	fz.src.eng = fz.eng;
	fz.src.ks = fz.ks;
	fz.src.io = fz.io;
	if ((rc = kmsd_ctl_start(fz.sock, &fz.src, &fz.ctl)))
		die("control socket", rc);
	/* Last: SoftHSM2's own exit handlers (registered while it loaded)
	 * must run after ours. */
	atexit(teardown);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_log_init("fuzz_ctl");
	fz.no_reply_ok = getenv("KMS_FUZZ_CTL_NO_REPLY_OK") != NULL;
	setup();
	return 0;
}

static void send_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;  /* the server closed early: its reply still counts */
		p += n;
		len -= (size_t)n;
	}
}

/* One request on its own connection; checks the reply. */
static void request(const uint8_t *line, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t got = 0;
	json_error_t jerr;
	json_t *j, *ok;
	int fd, refused;

	policy_text(fz.before);
	memcpy(sa.sun_path, fz.sock, strlen(fz.sock) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		fuzz_fail("control socket: cannot connect (server gone?)");
	send_all(fd, line, len);
	shutdown(fd, SHUT_WR);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;
		int rc;

		/* libFuzzer's -timeout alarm (SIGALRM) interrupts the wait:
		 * that is EINTR, not a missing reply (it was taken for one). */
		do
			rc = poll(&p, 1, REPLY_TIMEOUT_MS);
		while (rc < 0 && errno == EINTR);
		if (rc != 1)
			fuzz_fail("control socket: no reply within 10 s");
		n = read(fd, fz.reply + got, REPLY_CAP - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		FUZZ_CHECK(got < REPLY_CAP);
	}
	close(fd);
	fz.reply[got] = '\0';
	if (!len) {
		FUZZ_CHECK(got == 0);   /* nothing sent, nothing answered */
		return;
	}
	if (!got) {
		if (!fz.no_reply_ok)
			fuzz_fail("fuzz_ctl: a request got no reply at all");
		policy_text(fz.after);
		FUZZ_CHECK(strcmp(fz.before, fz.after) == 0);
		return;
	}
	/* One line: a JSON object with "ok", and "error" when refused. */
	FUZZ_CHECK(fz.reply[got - 1] == '\n');
	FUZZ_CHECK(memchr(fz.reply, '\n', got) == fz.reply + got - 1);
	j = json_loadb(fz.reply, got, 0, &jerr);
	FUZZ_CHECK(json_is_object(j));
	ok = json_object_get(j, "ok");
	FUZZ_CHECK(json_is_boolean(ok));
	refused = json_is_false(ok);
	if (refused)
		FUZZ_CHECK(json_is_string(json_object_get(j, "error")));
	json_decref(j);
	if (refused) {
		/* "A refused request changes nothing." */
		policy_text(fz.after);
		FUZZ_CHECK(strcmp(fz.before, fz.after) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kms_policy_set ps;
	unsigned lines = 0;

	kms_policy_set_init(&ps, &fz.dflt);
	FUZZ_CHECK(kms_engine_policy_swap(fz.eng, &ps) == KMS_OK);
	if (!size) {
		request(data, 0);
		return 0;
	}
	while (size) {
		const uint8_t *nl = memchr(data, '\n', size);
		size_t n = nl && ++lines < CTL_MAX_LINES ? (size_t)(nl - data) + 1
							 : size;

		request(data, n);
		data += n;
		size -= n;
	}
	return 0;
}
