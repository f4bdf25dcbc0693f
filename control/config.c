// SPDX-License-Identifier: Apache-2.0
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms_config.h"
#include "kms_err.h"

void kms_config_defaults(struct kms_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->module, sizeof(cfg->module), "/usr/lib/softhsm/libsofthsm2.so");
	snprintf(cfg->token_label, sizeof(cfg->token_label), "kms");
	snprintf(cfg->kek_label, sizeof(cfg->kek_label), "kms-kek");
	snprintf(cfg->store_path, sizeof(cfg->store_path), "/var/lib/kms/store");
	cfg->map_size_mb = 1024;
	snprintf(cfg->retrieve_records, sizeof(cfg->retrieve_records), "durable");
	cfg->deferred_flush_ms = 20;
	cfg->deferred_max = 4096;
	snprintf(cfg->deferred_commit, sizeof(cfg->deferred_commit), "worker");
	cfg->purge_interval_s = 300;
	cfg->purge_batch = 1000;
	snprintf(cfg->io, sizeof(cfg->io), "socket");
	snprintf(cfg->listen, sizeof(cfg->listen), "127.0.0.1");
	cfg->port = 7430;
	cfg->workers = 2;
	cfg->batch = 32;
	cfg->dpdk_port_id = 0;
	snprintf(cfg->dpdk_layout, sizeof(cfg->dpdk_layout), "rx");
	cfg->dpdk_mbufs = 8191;
	cfg->dpdk_ring_size = 1024;
	cfg->max_skew_s = 30;
	cfg->replay_capacity = 1u << 18;
	cfg->rotation_overlap_s = 86400;
	cfg->cache_keys = 4096;
	snprintf(cfg->crypto_mode, sizeof(cfg->crypto_mode), "offload");
	cfg->policy.reuse_max_deposits = 100;
	cfg->policy.reuse_max_age_s = 86400;
	cfg->policy.deposit_lifetime_s = 7 * 86400;
	cfg->policy.max_retrievals = 0;
	snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
}

enum kind { K_STR, K_U32, K_U16, K_SIZE };

struct field {
	const char *section, *key;
	enum kind kind;
	size_t off, size;
	unsigned long min, max;
};

#define STR(s, k, m) { s, k, K_STR, offsetof(struct kms_config, m), \
		       sizeof(((struct kms_config *)0)->m), 0, 0 }
#define NUM(s, k, t, m, lo, hi) { s, k, t, offsetof(struct kms_config, m), 0, lo, hi }

static const struct field fields[] = {
	STR("hsm", "module", module),
	STR("hsm", "token_label", token_label),
	STR("hsm", "kek_label", kek_label),
	STR("hsm", "pin_file", pin_file),
	STR("store", "path", store_path),
	NUM("store", "map_size_mb", K_SIZE, map_size_mb, 1, 1024ul * 1024),
	STR("store", "retrieve_records", retrieve_records),
	NUM("store", "deferred_flush_ms", K_U32, deferred_flush_ms, 1, 60000),
	NUM("store", "deferred_max", K_U32, deferred_max, 16, 1u << 20),
	STR("store", "deferred_commit", deferred_commit),
	NUM("store", "purge_interval_s", K_U32, purge_interval_s, 0, 86400),
	NUM("store", "purge_batch", K_U32, purge_batch, 1, 1u << 20),
	STR("net", "io", io),
	STR("net", "listen", listen),
	NUM("net", "port", K_U16, port, 0, 65535),
	NUM("net", "workers", K_U32, workers, 1, 64),
	NUM("net", "batch", K_U32, batch, 1, 256),
	NUM("dpdk", "port_id", K_U16, dpdk_port_id, 0, 65535),
	STR("dpdk", "ipv4", dpdk_ipv4),
	STR("dpdk", "ipv6", dpdk_ipv6),
	STR("dpdk", "layout", dpdk_layout),
	NUM("dpdk", "mbufs", K_U32, dpdk_mbufs, 511, 1u << 24),
	NUM("dpdk", "ring_size", K_U32, dpdk_ring_size, 16, 1u << 20),
	NUM("security", "max_skew_s", K_U32, max_skew_s, 1, 3600),
	NUM("security", "replay_capacity", K_U32, replay_capacity, 1024, 1u << 26),
	NUM("security", "rotation_overlap_s", K_U32, rotation_overlap_s, 0, 90u * 86400),
	NUM("cache", "keys_per_worker", K_U32, cache_keys, 16, 1u << 22),
	STR("crypto", "mode", crypto_mode),
	STR("crypto", "engine", crypto_engine),
	NUM("policy", "reuse_max_deposits", K_U32, policy.reuse_max_deposits, 0, UINT32_MAX),
	NUM("policy", "reuse_max_age_s", K_U32, policy.reuse_max_age_s, 0, UINT32_MAX),
	NUM("policy", "deposit_lifetime_s", K_U32, policy.deposit_lifetime_s, 1, UINT32_MAX),
	NUM("policy", "max_retrievals", K_U32, policy.max_retrievals, 0, UINT32_MAX),
	STR("control", "socket", ctl_socket),
	STR("log", "level", log_level),
};

int kms_config_set(struct kms_config *cfg, const char *section,
		   const char *key, const char *value, char *errbuf,
		   size_t errlen)
{
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const struct field *f = &fields[i];
		char *base = (char *)cfg + f->off;
		unsigned long long v;
		char *end;

		if (strcmp(f->section, section) || strcmp(f->key, key))
			continue;
		if (f->kind == K_STR) {
			if (strlen(value) >= f->size) {
				snprintf(errbuf, errlen, "%s.%s: value too long", section, key);
				return KMS_ERR_CONFIG;
			}
			memcpy(base, value, strlen(value) + 1);
			return KMS_OK;
		}
		errno = 0;
		v = strtoull(value, &end, 10);
		if (errno || end == value || *end || value[0] == '-' ||
		    v < f->min || v > f->max) {
			snprintf(errbuf, errlen, "%s.%s: '%s' is not an integer in %lu..%lu",
				 section, key, value, f->min, f->max);
			return KMS_ERR_CONFIG;
		}
		switch (f->kind) {
		case K_U16: *(uint16_t *)(void *)base = (uint16_t)v; break;
		case K_U32: *(uint32_t *)(void *)base = (uint32_t)v; break;
		case K_SIZE: *(size_t *)(void *)base = (size_t)v; break;
		case K_STR: break;
		}
		return KMS_OK;
	}
	snprintf(errbuf, errlen, "unknown key '%s' in section [%s]", key, section);
	return KMS_ERR_CONFIG;
}

int kms_config_is_section(const char *section)
{
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (!strcmp(fields[i].section, section))
			return 1;
	return 0;
}

struct load_ctx {
	struct kms_config *cfg;
	char why[256];   /* the first error; inih reports its line */
	int failed;
};

static int on_entry(void *user, const char *section, const char *name,
		    const char *value)
{
	struct load_ctx *c = user;
	char why[256];

	if (!name) /* a section header alone */
		return 1;
	/* kms-mailbox's, in a file both daemons share: it checks them. */
	if (!strcmp(section, KMS_CONFIG_MAILBOX_SECTION))
		return 1;
	if (kms_config_set(c->cfg, section, name, value, why, sizeof(why))) {
		if (!c->failed)
			memcpy(c->why, why, sizeof(why));
		c->failed = 1;
		return 0;
	}
	return 1;
}

int kms_config_load(struct kms_config *cfg, const char *path, char *errbuf,
		    size_t errlen)
{
	struct load_ctx c = { .cfg = cfg };
	FILE *f = fopen(path, "re");
	int rc;

	if (!f) {
		snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
		return KMS_ERR_IO;
	}
	/* inih returns the line of the first error (ours or a syntax one). */
	rc = ini_parse_file(f, on_entry, &c);
	fclose(f);
	if (c.failed) {
		snprintf(errbuf, errlen, "%s:%d: %s", path, rc, c.why);
		return KMS_ERR_CONFIG;
	}
	if (rc != 0) {
		snprintf(errbuf, errlen, "%s:%d: syntax error", path, rc);
		return KMS_ERR_CONFIG;
	}
	return kms_config_validate(cfg, errbuf, errlen);
}

int kms_config_validate(const struct kms_config *cfg, char *errbuf,
			size_t errlen)
{
#ifdef KMS_HAVE_DPDK
	if (strcmp(cfg->io, "socket") && strcmp(cfg->io, "dpdk")) {
		snprintf(errbuf, errlen, "net.io: '%s' is not socket or dpdk", cfg->io);
		return KMS_ERR_CONFIG;
	}
#else
	if (strcmp(cfg->io, "socket")) {
		snprintf(errbuf, errlen, "net.io: '%s' is not available (this kmsd "
			 "was built without DPDK: only 'socket')", cfg->io);
		return KMS_ERR_CONFIG;
	}
#endif
	if (!strcmp(cfg->io, "dpdk")) {
		struct in_addr a4;
		struct in6_addr a6;

		if (strcmp(cfg->dpdk_layout, "rx") && strcmp(cfg->dpdk_layout, "rss")) {
			snprintf(errbuf, errlen, "dpdk.layout: '%s' is not rx or rss",
				 cfg->dpdk_layout);
			return KMS_ERR_CONFIG;
		}
		if (cfg->dpdk_ring_size & (cfg->dpdk_ring_size - 1)) {
			snprintf(errbuf, errlen, "dpdk.ring_size: %u is not a power of two",
				 cfg->dpdk_ring_size);
			return KMS_ERR_CONFIG;
		}
		if (inet_pton(AF_INET, cfg->dpdk_ipv4, &a4) != 1 ||
		    (cfg->dpdk_ipv6[0] && inet_pton(AF_INET6, cfg->dpdk_ipv6, &a6) != 1)) {
			snprintf(errbuf, errlen, "dpdk.ipv4 must be an IPv4 address and "
				 "dpdk.ipv6 empty or an IPv6 address");
			return KMS_ERR_CONFIG;
		}
	}
	if (strcmp(cfg->retrieve_records, "durable") &&
	    strcmp(cfg->retrieve_records, "deferred")) {
		snprintf(errbuf, errlen, "store.retrieve_records: '%s' is not durable|deferred",
			 cfg->retrieve_records);
		return KMS_ERR_CONFIG;
	}
	if (strcmp(cfg->deferred_commit, "worker") &&
	    strcmp(cfg->deferred_commit, "thread")) {
		snprintf(errbuf, errlen, "store.deferred_commit: '%s' is not worker|thread",
			 cfg->deferred_commit);
		return KMS_ERR_CONFIG;
	}
	/* A limited retrieval count gates the answer: it must be durable
	 * before the key leaves (docs/ARCHITECTURE.md). */
	if (!strcmp(cfg->retrieve_records, "deferred") && cfg->policy.max_retrievals) {
		snprintf(errbuf, errlen, "store.retrieve_records = deferred needs "
			 "policy.max_retrievals = 0 (a limited count must be durable "
			 "before the answer)");
		return KMS_ERR_CONFIG;
	}
	if (strcmp(cfg->crypto_mode, "offload") && strcmp(cfg->crypto_mode, "hsm")) {
		snprintf(errbuf, errlen, "crypto.mode: '%s' is not offload|hsm",
			 cfg->crypto_mode);
		return KMS_ERR_CONFIG;
	}
	if (cfg->crypto_engine[0] && strcmp(cfg->crypto_mode, "offload")) {
		snprintf(errbuf, errlen, "crypto.engine is for crypto.mode = offload "
			 "(in mode hsm every AEAD runs in the HSM)");
		return KMS_ERR_CONFIG;
	}
	if (strcmp(cfg->log_level, "error") && strcmp(cfg->log_level, "warning") &&
	    strcmp(cfg->log_level, "info") && strcmp(cfg->log_level, "debug")) {
		snprintf(errbuf, errlen, "log.level: '%s' is not error|warning|info|debug",
			 cfg->log_level);
		return KMS_ERR_CONFIG;
	}
	/* Every answered request of a batch pins two cached keys until its
	 * reply is sealed (KMS_ENGINE_CACHE_MIN in dataplane/kms_engine.h). */
	if (cfg->cache_keys < 2 * cfg->batch + 16) {
		snprintf(errbuf, errlen, "cache.keys_per_worker = %u is too small for "
			 "net.batch = %u: at least %u", cfg->cache_keys, cfg->batch,
			 2 * cfg->batch + 16);
		return KMS_ERR_CONFIG;
	}
	if (!cfg->module[0] || !cfg->token_label[0] || !cfg->kek_label[0] ||
	    !cfg->store_path[0]) {
		snprintf(errbuf, errlen, "hsm.module, hsm.token_label, hsm.kek_label and store.path must be set");
		return KMS_ERR_CONFIG;
	}
	return KMS_OK;
}

int kms_config_ctl_path(const struct kms_config *cfg, char *out, size_t cap)
{
	int n = cfg->ctl_socket[0]
		? snprintf(out, cap, "%s", cfg->ctl_socket)
		: snprintf(out, cap, "%s/kmsd.sock", cfg->store_path);

	return n < 0 || (size_t)n >= cap ? -1 : 0;
}
