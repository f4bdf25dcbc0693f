// SPDX-License-Identifier: Apache-2.0
/*
 * kmsd: the KMS daemon.
 *
 *   kmsd -c kms.conf [--io socket] [--listen ADDR] [--port N]
 *        [--workers N] [--batch N] [--store PATH] [--check-config] [-v]
 *
 * The user PIN comes from hsm.pin_file or $KMS_PIN, never from argv.
 * SIGTERM / SIGINT: stop reading, answer what is queued, print the
 * counters and exit 0.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kms_config.h"
#include "kms_engine.h"
#include "kms_hsm.h"
#include "kms_ks.h"
#include "kms_log.h"
#include "kms_secmem.h"
#include "kms_sockio.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kmsd -c CONFIG [options]\n"
		"  -c, --config FILE     INI configuration (see kms.conf.example)\n"
		"      --io MODE         socket (kernel UDP)\n"
		"      --listen ADDR     address to bind (net.listen)\n"
		"      --port N          UDP port (net.port)\n"
		"      --workers N       worker threads (net.workers)\n"
		"      --batch N         max requests per batch (net.batch)\n"
		"      --store PATH      keystore directory (store.path)\n"
		"      --check-config    validate the configuration and exit\n"
		"  -v, --verbose         debug logging\n"
		"The HSM user PIN is read from hsm.pin_file or $KMS_PIN.\n");
}

static enum kms_log_level level_of(const char *s)
{
	if (!strcmp(s, "error"))
		return KMS_LOG_ERR;
	if (!strcmp(s, "warning"))
		return KMS_LOG_WARN;
	if (!strcmp(s, "debug"))
		return KMS_LOG_DEBUG;
	return KMS_LOG_INFO;
}

static void print_stats(const struct kms_stats *st,
			const struct kms_sockio_stats *io)
{
	static const char *const kinds[] = { "deposit", "retrieve", "other" };

	fprintf(stderr, "kmsd: stats: rx=%llu tx=%llu ring_full=%llu tx_errors=%llu "
		"batches=%llu requests=%llu\n",
		(unsigned long long)io->rx, (unsigned long long)io->tx,
		(unsigned long long)io->ring_full, (unsigned long long)io->tx_errors,
		(unsigned long long)st->batches, (unsigned long long)st->requests);
	fprintf(stderr, "kmsd: stats: keys_new=%llu keys_reused=%llu retrievals=%llu "
		"commits=%llu commit_failures=%llu cache_hits=%llu cache_misses=%llu "
		"hsm_calls=%llu drops_not_kms=%llu\n",
		(unsigned long long)st->keys_new, (unsigned long long)st->keys_reused,
		(unsigned long long)st->retrievals, (unsigned long long)st->commits,
		(unsigned long long)st->commit_failures,
		(unsigned long long)st->cache_hits, (unsigned long long)st->cache_misses,
		(unsigned long long)st->hsm_calls,
		(unsigned long long)st->drops[KMS_DROP_NOT_KMS]);
	for (unsigned k = 0; k < KMS_RK__COUNT; k++)
		for (unsigned s = 0; s < KMS_ST__COUNT; s++)
			if (st->by_status[k][s])
				fprintf(stderr, "kmsd: stats: %s %s=%llu\n", kinds[k],
					kms_status_name(s),
					(unsigned long long)st->by_status[k][s]);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "io", required_argument, NULL, 'i' },
		{ "listen", required_argument, NULL, 'l' },
		{ "port", required_argument, NULL, 'p' },
		{ "workers", required_argument, NULL, 'w' },
		{ "batch", required_argument, NULL, 'b' },
		{ "store", required_argument, NULL, 's' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct { int opt; const char *section, *key; } map[] = {
		{ 'i', "net", "io" }, { 'l', "net", "listen" },
		{ 'p', "net", "port" }, { 'w', "net", "workers" },
		{ 'b', "net", "batch" }, { 's', "store", "path" },
	};
	struct { const char *section, *key, *value; } overrides[8];
	unsigned noverrides = 0;
	struct kms_config cfg;
	struct kms_hsm *hsm = NULL;
	struct kms_ks *ks = NULL;
	struct kms_engine *eng = NULL;
	struct kms_sockio *io = NULL;
	struct kms_stats st;
	struct kms_sockio_stats ios;
	const char *config = NULL;
	int check = 0, verbose = 0, c, rc = 1;
	char err[512];

	kms_log_init("kmsd", KMS_LOG_INFO, 0);
	while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'C': check = 1; break;
		case 'v': verbose = 1; break;
		case 'h': usage(stdout); return 0;
		case '?': usage(stderr); return 2;
		default:
			for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
				if (map[i].opt == c && noverrides < 8) {
					overrides[noverrides].section = map[i].section;
					overrides[noverrides].key = map[i].key;
					overrides[noverrides++].value = optarg;
				}
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	kms_config_defaults(&cfg);
	if (config && kms_config_load(&cfg, config, err, sizeof(err))) {
		KMS_ERR("%s", err);
		return 2;
	}
	for (unsigned i = 0; i < noverrides; i++)
		if (kms_config_set(&cfg, overrides[i].section, overrides[i].key,
				   overrides[i].value, err, sizeof(err))) {
			KMS_ERR("command line: %s", err);
			return 2;
		}
	if (kms_config_validate(&cfg, err, sizeof(err))) {
		KMS_ERR("%s", err);
		return 2;
	}
	if (check) {
		printf("configuration OK\n");
		return 0;
	}
	kms_log_init("kmsd", verbose ? KMS_LOG_DEBUG : level_of(cfg.log_level), 0);
	kms_secmem_harden_process();

	struct kms_hsm_config hc = {
		.module = cfg.module, .token_label = cfg.token_label,
		.kek_label = cfg.kek_label,
		.pin_file = cfg.pin_file[0] ? cfg.pin_file : NULL,
		.pin_env = "KMS_PIN",
	};
	struct kms_ks_config kc = {
		.path = cfg.store_path, .map_size = cfg.map_size_mb << 20, .create = 0,
	};
	struct kms_engine_config ec = {
		.crypto_mode = cfg.crypto_mode, .policy = cfg.policy,
		.max_skew_ms = cfg.max_skew_s * 1000,
		.replay_capacity = cfg.replay_capacity,
		.cache_keys = cfg.cache_keys, .nworkers = cfg.workers,
		.batch_max = cfg.batch,
	};
	struct kms_sockio_config sc = {
		.listen = cfg.listen, .port = cfg.port, .nworkers = cfg.workers,
		.batch = cfg.batch,
	};

	if (kms_hsm_open(&hc, &hsm))
		goto out;
	if ((c = kms_ks_open(&kc, &ks))) {
		KMS_ERR("keystore %s: %s%s", cfg.store_path, kms_strerror(c),
			c == KMS_ERR_NOTFOUND ? " (run `kmsctl init` first)" : "");
		goto out;
	}
	if (kms_engine_create(&ec, hsm, ks, &eng))
		goto out;

	/* Block the stop signals in every thread (the I/O threads inherit
	 * this mask) and wait for them synchronously: none can be lost. */
	sigset_t stop_set;
	int sig;

	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGINT);
	sigaddset(&stop_set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((c = kms_sockio_start(eng, &sc, &io))) {
		KMS_ERR("cannot start socket I/O: %s%s", kms_strerror(c),
			c == KMS_ERR_NOTFOUND ? " (no KEK in the token: run `kmsctl init`)" : "");
		goto out;
	}
	KMS_INFO("ready: udp %s:%u, %u workers, batch %u, crypto %s, store %s",
		 cfg.listen, kms_sockio_port(io), cfg.workers, cfg.batch,
		 cfg.crypto_mode, cfg.store_path);
	while (sigwait(&stop_set, &sig) != 0)
		;
	KMS_INFO("stopping on %s: draining queued requests", strsignal(sig));
	kms_sockio_stop(io, &st, &ios);
	print_stats(&st, &ios);
	rc = 0;
out:
	kms_engine_destroy(eng);
	kms_ks_close(ks);
	kms_hsm_close(hsm);
	return rc;
}
