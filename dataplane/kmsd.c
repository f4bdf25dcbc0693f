// SPDX-License-Identifier: Apache-2.0
/*
 * kmsd: the KMS daemon.
 *
 *   kmsd [EAL args --] -c kms.conf [--io socket|dpdk] [--listen ADDR]
 *        [--port N] [--workers N] [--batch N] [--store PATH]
 *        [--check-config] [-v]
 *
 * With DPDK, the EAL arguments come first, then "--", then ours, e.g.
 *   kmsd --no-huge -m 512 --no-pci -l 0-2 --vdev=net_memif0,role=server \
 *        -- -c kms.conf --io dpdk
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

#include <lmdb.h>

#include "kms_config.h"
#include "kms_engine.h"
#include "kms_hsm.h"
#include "kms_kgc.h"
#include "kms_ks.h"
#include "kms_log.h"
#include "kms_secmem.h"
#include "kms_sockio.h"
#include "kms_version.h"
#include "kmsd_kekrot.h"
#include "kmsd_ctl.h"
#ifdef KMS_HAVE_DPDK
#include <arpa/inet.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_version.h>
#include "kms_dpdk.h"
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kmsd [EAL args --] -c CONFIG [options]\n"
		"  -c, --config FILE     INI configuration (see kms.conf.example)\n"
		"      --io MODE         socket (kernel UDP) or dpdk (EAL args first)\n"
		"      --listen ADDR     address to bind (net.listen)\n"
		"      --port N          UDP port (net.port)\n"
		"      --workers N       worker threads (net.workers)\n"
		"      --batch N         max requests per batch (net.batch)\n"
		"      --store PATH      keystore directory (store.path)\n"
		"      --check-config    validate the configuration and exit\n"
		"      --io-bench        DPDK only: answer every request with a fixed\n"
		"                        reply, bypassing the engine (I/O benchmark)\n"
		"  -v, --verbose         debug logging\n"
		"  -h, --help            this text\n"
		"      --version         the version and the libraries' versions\n"
		"The HSM user PIN is read from hsm.pin_file or $KMS_PIN.\n");
}

static void print_version(void)
{
	kms_version_print(stdout, "kmsd");
	printf("%s\n", mdb_version(NULL, NULL, NULL));
#ifdef KMS_HAVE_DPDK
	printf("%s\n", rte_version());
#else
	printf("built without DPDK (--io socket only)\n");
#endif
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

/* Set once the engine exists: shown with the counters. */
static const char *crypto_mode = "";

/* The engine's counters, on stdout at exit (both I/O modes). */
static void print_engine_stats(const struct kms_stats *st)
{
	static const char *const kinds[] = { "deposit", "retrieve", "ibe_key",
					     "other" };

	printf("kmsd: stats: crypto_mode=%s cache_evictions=%llu "
	       "ibe_keys_issued=%llu\n", crypto_mode,
	       (unsigned long long)st->cache_evictions,
	       (unsigned long long)st->ibe_keys_issued);

	printf("kmsd: stats: keys_new=%llu (pre-made %llu) keys_reused=%llu retrievals=%llu "
		"commits=%llu commit_failures=%llu cache_hits=%llu cache_misses=%llu "
	       "hsm_calls=%llu drops_not_kms=%llu\n",
		(unsigned long long)st->keys_new, (unsigned long long)st->keys_pooled,
		(unsigned long long)st->keys_reused,
		(unsigned long long)st->retrievals, (unsigned long long)st->commits,
		(unsigned long long)st->commit_failures,
		(unsigned long long)st->cache_hits, (unsigned long long)st->cache_misses,
		(unsigned long long)st->hsm_calls,
		(unsigned long long)st->drops[KMS_DROP_NOT_KMS]);
	printf("kmsd: stats: deferred_records=%llu deferred_flushes=%llu "
	       "deferred_failures=%llu\n",
	       (unsigned long long)st->deferred_records,
	       (unsigned long long)st->deferred_flushes,
	       (unsigned long long)st->deferred_failures);
	/* Where the workers' time went: in batches (admission, commit,
	 * replies) and in committing deferred records outside them. */
	printf("kmsd: stats: engine_batches=%llu engine_requests=%llu "
	       "batch_us_sum=%llu deferred_flush_us=%llu\n",
	       (unsigned long long)st->batches, (unsigned long long)st->requests,
	       (unsigned long long)st->batch_us_sum,
	       (unsigned long long)st->deferred_flush_us);
	for (unsigned k = 0; k < KMS_RK__COUNT; k++)
		for (unsigned s = 0; s < KMS_ST__COUNT; s++)
			if (st->by_status[k][s])
				printf("kmsd: stats: %s %s=%llu\n", kinds[k],
				       kms_status_name(s),
				       (unsigned long long)st->by_status[k][s]);
	fflush(stdout);
}

static void print_socket_stats(const struct kms_sockio_stats *io,
			       const struct kms_stats *st)
{
	printf("kmsd: stats: rx=%llu tx=%llu ring_full=%llu sock_drops=%llu "
	       "tx_errors=%llu batches=%llu requests=%llu\n",
	       (unsigned long long)io->rx, (unsigned long long)io->tx,
	       (unsigned long long)io->ring_full,
	       (unsigned long long)io->sock_drops, (unsigned long long)io->tx_errors,
	       (unsigned long long)st->batches, (unsigned long long)st->requests);
	print_engine_stats(st);
}

/* The control socket (kmsctl stats); kmsd does not run without it. */
static int ctl_start(const struct kms_config *cfg, struct kmsd_ctl_src *src,
		     struct kms_ctl **ctl)
{
	char path[128];
	int rc;

	if (kms_config_ctl_path(cfg, path, sizeof(path))) {
		KMS_ERR("control socket path too long: set control.socket");
		return KMS_ERR_CONFIG;
	}
	rc = kmsd_ctl_start(path, src, ctl);
	if (rc == KMS_OK)
		KMS_INFO("control socket %s", path);
	return rc;
}

/* Socket mode: run until SIGTERM/SIGINT, then drain and print counters. */
static struct kmsd_purge *purger; /* set in main before the I/O starts */

static int run_socket(const struct kms_config *cfg, struct kms_engine *eng,
		      struct kms_ks *ks)
{
	struct kms_sockio_config sc = {
		.listen = cfg->listen, .port = cfg->port, .nworkers = cfg->workers,
		.batch = cfg->batch,
	};
	struct kmsd_ctl_src src = {
		.crypto_mode = crypto_mode, .nworkers = cfg->workers, .eng = eng,
		.ks = ks, .deferred = !strcmp(cfg->retrieve_records, "deferred"),
		.purge = purger,
	};
	struct kms_sockio *io = NULL;
	struct kms_sockio_stats ios;
	struct kms_ctl *ctl = NULL;
	struct kms_stats st;
	sigset_t stop_set;
	int sig, rc;

	/* Block the stop signals in every thread (the I/O threads inherit
	 * this mask) and wait for them synchronously: none can be lost. */
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGINT);
	sigaddset(&stop_set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
	rc = kms_sockio_start(eng, &sc, &io);
	if (rc) {
		KMS_ERR("cannot start socket I/O: %s%s", kms_strerror(rc),
			rc == KMS_ERR_NOTFOUND ? " (no KEK in the token: run `kmsctl init`)" : "");
		return rc;
	}
	src.io = io;
	rc = ctl_start(cfg, &src, &ctl);
	if (rc) {
		kms_sockio_stop(io, NULL, NULL);
		return rc;
	}
	KMS_INFO("ready: udp %s:%u, %u workers, batch %u, crypto %s, store %s, "
		 "retrieve records %s", cfg->listen, kms_sockio_port(io),
		 cfg->workers, cfg->batch, cfg->crypto_mode, cfg->store_path,
		 cfg->retrieve_records);
	while (sigwait(&stop_set, &sig) != 0)
		;
	KMS_INFO("stopping on %s: draining queued requests", strsignal(sig));
	kms_ctl_stop(ctl);
	kmsd_kekrot_stop();
	kms_sockio_stop(io, &st, &ios);
	print_socket_stats(&ios, &st);
	return KMS_OK;
}

#ifdef KMS_HAVE_DPDK
static volatile sig_atomic_t dpdk_stop;

static void on_stop(int sig)
{
	(void)sig;
	dpdk_stop = 1;
}

static void print_dpdk_stats(const struct kms_dp_stats *io,
			     const struct kms_stats *st)
{
	printf("kmsd: stats: rx=%llu tx=%llu requests=%llu arp=%llu nd=%llu "
	       "forwarded=%llu drained=%llu\n", (unsigned long long)io->rx,
	       (unsigned long long)io->tx, (unsigned long long)io->requests,
	       (unsigned long long)io->arp, (unsigned long long)io->nd,
	       (unsigned long long)io->forwarded, (unsigned long long)io->drained);
	printf("kmsd: stats: drops");
	for (unsigned i = 0; i < KMS_PKT_DROP__COUNT; i++)
		printf(" %s=%llu", kms_pkt_drop_name((enum kms_pkt_verdict)i),
		       (unsigned long long)io->drops[i]);
	printf(" engine=%llu ring_full=%llu tx_full=%llu\n",
	       (unsigned long long)io->engine_drops,
	       (unsigned long long)io->ring_full, (unsigned long long)io->tx_full);
	print_engine_stats(st);
}

/* DPDK mode: the main lcore polls until SIGTERM/SIGINT sets dpdk_stop. */
static int run_dpdk(const struct kms_config *cfg, struct kms_engine *eng,
		    struct kms_ks *ks, int io_bench)
{
	struct kms_dp_config dc = {
		.port_id = cfg->dpdk_port_id,
		.layout = strcmp(cfg->dpdk_layout, "rss") ? KMS_DP_LAYOUT_RX
							  : KMS_DP_LAYOUT_RSS,
		.nworkers = cfg->workers, .batch = cfg->batch,
		.ring_size = cfg->dpdk_ring_size, .mbufs = cfg->dpdk_mbufs,
		.io_bench = io_bench,
	};
	struct sigaction sa = { .sa_handler = on_stop };
	struct kmsd_ctl_src src = {
		.crypto_mode = crypto_mode, .nworkers = cfg->workers, .eng = eng,
		.ks = ks, .deferred = !strcmp(cfg->retrieve_records, "deferred"),
		.purge = purger,
	};
	struct kms_ctl *ctl = NULL;
	struct kms_dp *dp = NULL;
	struct kms_dp_stats ios;
	struct kms_stats st;
	int rc;

	/* Validated by kms_config_validate(). */
	inet_pton(AF_INET, cfg->dpdk_ipv4, &dc.addr.ipv4);
	dc.addr.has_ipv6 = cfg->dpdk_ipv6[0] &&
			   inet_pton(AF_INET6, cfg->dpdk_ipv6, dc.addr.ipv6) == 1;
	dc.addr.udp_port = cfg->port;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	rc = kms_dp_create(eng, &dc, NULL, &dp);
	if (rc)
		return rc;
	src.dp = dp;
	rc = ctl_start(cfg, &src, &ctl);
	if (rc) {
		kms_dp_destroy(dp);
		return rc;
	}
	KMS_INFO("dpdk: serving %s%s%s udp port %u, crypto %s, store %s",
		 cfg->dpdk_ipv4, cfg->dpdk_ipv6[0] ? " and " : "", cfg->dpdk_ipv6,
		 cfg->port, cfg->crypto_mode, cfg->store_path);
	rc = kms_dp_run(dp, &dpdk_stop);
	if (rc)
		KMS_ERR("dpdk: a worker failed to start: %s", kms_strerror(rc));
	else
		KMS_INFO("stopped: queued requests drained");
	kms_ctl_stop(ctl);
	kmsd_kekrot_stop();
	kms_dp_read_stats(dp, &ios, &st);
	print_dpdk_stats(&ios, &st);
	kms_dp_destroy(dp);
	return rc;
}
#endif

/*
 * Split argv at the first "--": what comes before is the EAL's (argv[0]
 * included), what follows is ours. Without "--" everything is ours.
 */
/* LMDB's fatal error: stop (as on SIGTERM: drain, answer, count) and exit
 * non-zero, so the supervisor (systemd Restart=on-failure) reopens the
 * environment by restarting kmsd. Called once, from the thread that met
 * it: kill() is async-signal-safe and wakes sigwait() or the DPDK loop. */
static void on_store_panic(void)
{
	kill(getpid(), SIGTERM);
}

/* The IBE key generation centre, if `kmsctl ibe init` made one. A store
 * without it serves the core transactions; IBE_KEY_REQ then gets
 * IBE_UNAVAILABLE. A master secret that is there but unusable stops kmsd. */
static int kgc_load(struct kms_ks *ks, struct kms_hsm *hsm,
		    struct kms_kgc **out)
{
	struct kms_hsm_session *s;
	int rc;

	*out = NULL;
	rc = kms_hsm_session_open(hsm, &s);
	if (rc) {
		KMS_ERR("kgc: no HSM session: %s", kms_strerror(rc));
		return -1;
	}
	rc = kms_kgc_load(ks, s, out);
	kms_hsm_session_close(s);
	if (rc == KMS_ERR_NOTFOUND) {
		KMS_INFO("kgc: no IBE master secret (kmsctl ibe init): "
			 "MIKEY-IBAKE key requests are refused");
		return 0;
	}
	if (rc) {
		KMS_ERR("kgc: cannot load the IBE master secret: %s",
			kms_strerror(rc));
		return -1;
	}
	KMS_INFO("kgc: IBE master secret loaded");
	return 0;
}

static int split_args(int argc, char **argv, int *eal_argc)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			*eal_argc = i;
			return i;
		}
	*eal_argc = 0;
	return 0;
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
		{ "io-bench", no_argument, NULL, 'B' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, KMS_OPT_VERSION },
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
	struct kms_kgc *kgc = NULL;
	struct kms_ks *ks = NULL;
	struct kms_engine *eng = NULL;
	const char *config = NULL;
	int check = 0, verbose = 0, io_bench = 0, c, rc = 1, eal_argc, dashdash;
	char err[512];

	kms_log_init("kmsd", KMS_LOG_INFO, 0);
	/* Before anything calls OpenSSL: its key schedules out of cores. */
	if (kms_secmem_openssl_heap())
		return 1;
	dashdash = split_args(argc, argv, &eal_argc);
	if (dashdash) {
		/* getopt sees our part only, behind argv[0]. */
		argv[dashdash] = argv[0];
		argv += dashdash;
		argc -= dashdash;
	}
	while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'C': check = 1; break;
		case 'B': io_bench = 1; break;
		case 'v': verbose = 1; break;
		case 'h': usage(stdout); return 0;
		case KMS_OPT_VERSION: print_version(); return 0;
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
	if (io_bench && strcmp(cfg.io, "dpdk")) {
		KMS_ERR("--io-bench needs --io dpdk");
		return 2;
	}
	if (io_bench)
		KMS_WARN("--io-bench: requests are NOT served, the engine is bypassed");
	if (dashdash && strcmp(cfg.io, "dpdk"))
		KMS_WARN("EAL arguments given but net.io is '%s': ignored", cfg.io);
	kms_log_init("kmsd", verbose ? KMS_LOG_DEBUG : level_of(cfg.log_level), 0);
	kms_secmem_harden_process();
	signal(SIGPIPE, SIG_IGN);

#ifdef KMS_HAVE_DPDK
	if (!strcmp(cfg.io, "dpdk")) {
		/* argv[-dashdash..-1] is the EAL's part, argv[0] first. */
		char **eal_argv = argv - dashdash;

		if (!dashdash) {
			KMS_ERR("--io dpdk needs EAL arguments first, then --");
			return 2;
		}
		eal_argv[0] = argv[0];
		if (rte_eal_init(eal_argc, eal_argv) < 0) {
			KMS_ERR("dpdk: EAL initialisation failed: %s",
				rte_strerror(rte_errno));
			return 1;
		}
	}
#endif

	struct kms_hsm_config hc = {
		.module = cfg.module, .token_label = cfg.token_label,
		.kek_label = cfg.kek_label,
		.pin_file = cfg.pin_file[0] ? cfg.pin_file : NULL,
		.pin_env = "KMS_PIN",
	};
	struct kms_ks_config kc = {
		.path = cfg.store_path, .map_size = cfg.map_size_mb << 20, .create = 0,
	};
	static struct kms_policy_set pset; /* 8 KiB: not on the stack */
	struct kms_engine_config ec = {
		.crypto_mode = cfg.crypto_mode, .crypto_engine = cfg.crypto_engine,
		.policy = cfg.policy,
		.max_skew_ms = cfg.max_skew_s * 1000,
		.replay_capacity = cfg.replay_capacity,
		.cache_keys = cfg.cache_keys, .nworkers = cfg.workers,
		.batch_max = cfg.batch,
		.deferred_max = strcmp(cfg.retrieve_records, "deferred") ? 0
								  : cfg.deferred_max,
		.deferred_flush_ms = cfg.deferred_flush_ms,
		.deferred_thread = !strcmp(cfg.deferred_commit, "thread"),
	};

	if (kms_hsm_open(&hc, &hsm))
		goto out;
	if ((c = kms_ks_open(&kc, &ks))) {
		KMS_ERR("keystore %s: %s%s", cfg.store_path, kms_strerror(c),
			c == KMS_ERR_NOTFOUND ? " (run `kmsctl init` first)" : "");
		goto out;
	}
	if (kmsd_policy_load(ks, &cfg.policy, &pset))
		goto out;
	ec.policy_set = &pset;
	if (kgc_load(ks, hsm, &kgc))
		goto out;
	kms_ks_on_panic(on_store_panic);
	ec.kgc = kgc;
	if (kms_engine_create(&ec, hsm, ks, &eng))
		goto out;
	crypto_mode = kms_engine_crypto_mode(eng);
	if (kmsd_purge_start(ks, cfg.purge_interval_s, cfg.purge_batch, &purger))
		goto out;
#ifdef KMS_HAVE_DPDK
	if (!strcmp(cfg.io, "dpdk"))
		rc = run_dpdk(&cfg, eng, ks, io_bench) ? 1 : 0;
	else
#endif
		rc = run_socket(&cfg, eng, ks) ? 1 : 0;
	if (kms_ks_panicked()) {
		KMS_ERR("stopped because the store became unusable (MDB_PANIC): "
			"exit status 3, restart kmsd");
		rc = 3;
	}
	if (purger) {
		printf("kmsd: stats: purged_deposits=%llu\n",
		       (unsigned long long)kmsd_purge_stop(purger));
		purger = NULL;
	}
out:
	kmsd_purge_stop(purger);
	kms_engine_destroy(eng);
	kms_kgc_free(kgc);
	kms_ks_close(ks);
	kms_hsm_close(hsm);
#ifdef KMS_HAVE_DPDK
	if (!strcmp(cfg.io, "dpdk") && dashdash)
		rte_eal_cleanup();
#endif
	return rc;
}
