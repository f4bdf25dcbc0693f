/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_config.h
 * @brief kmsd / kmsctl configuration: one INI file (libinih), see
 *        config/kms.conf.example for every key with its default.
 *
 * Unknown sections or keys and bad values are errors naming the file, the
 * line and the reason. Command-line flags override file values.
 */
#ifndef KMS_CONFIG_H
#define KMS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define KMS_CFG_STR 256

struct kms_policy {
	uint32_t reuse_max_deposits; /**< re-use K for at most N deposits; 0 = never re-use */
	uint32_t reuse_max_age_s;    /**< ... and only while K is younger than T s */
	uint32_t deposit_lifetime_s; /**< deposit expiry after creation */
	uint32_t max_retrievals;     /**< RETRIEVEs allowed per deposit; 0 = unlimited */
};

struct kms_config {
	/* [hsm] */
	char module[KMS_CFG_STR];
	char token_label[KMS_CFG_STR];
	char kek_label[KMS_CFG_STR];
	char pin_file[KMS_CFG_STR];   /**< empty: PIN from $KMS_PIN */
	/* [store] */
	char store_path[KMS_CFG_STR];
	size_t map_size_mb;
	char retrieve_records[16];    /**< "durable" or "deferred" */
	uint32_t deferred_flush_ms;   /**< deferred: commit at least this often */
	uint32_t deferred_max;        /**< deferred: ... or at this many records */
	char deferred_commit[16];     /**< deferred: "worker" or "thread" commits */
	uint32_t purge_interval_s;    /**< expired deposits deleted this often; 0 off */
	uint32_t purge_batch;         /**< deposits scanned per purge transaction */
	/* [net] */
	char io[16];                  /**< "socket" or "dpdk" */
	char listen[64];
	uint16_t port;
	unsigned workers;
	unsigned batch;               /**< max requests per worker batch */
	/* [dpdk] */
	uint16_t dpdk_port_id;
	char dpdk_ipv4[64];           /**< our IPv4 on the port (ARP answered) */
	char dpdk_ipv6[64];           /**< optional; empty = no IPv6 */
	char dpdk_layout[8];          /**< "rx" or "rss" */
	uint32_t dpdk_mbufs;
	uint32_t dpdk_ring_size;      /**< per worker, power of two */
	/* [security] */
	uint32_t max_skew_s;
	uint32_t replay_capacity;     /**< nonces remembered per worker */
	uint32_t rotation_overlap_s;  /**< kmsctl rotate: the previous key
	                                   generation stays valid this long */
	/* [cache] */
	uint32_t cache_keys;          /**< unwrapped keys cached per worker */
	/* [crypto] */
	char crypto_mode[16];         /**< "offload" or "hsm" */
	char crypto_engine[256];      /**< offload: OpenSSL engine id or .so
	                                   path; empty = OpenSSL's own */
	/* [policy] */
	struct kms_policy policy;
	/* [control] */
	char ctl_socket[108];         /**< kmsd's control socket; empty =
	                                   <store.path>/kmsd.sock */
	/* [log] */
	char log_level[16];
};

/** The control socket's path: control.socket, else <store.path>/kmsd.sock.
 *  @return 0, or -1 if it does not fit @p cap. */
int kms_config_ctl_path(const struct kms_config *cfg, char *out, size_t cap);

/** Fill @p cfg with the defaults. */
void kms_config_defaults(struct kms_config *cfg);

/**
 * Load @p path over the current values of @p cfg. On error writes
 * "path:line: reason" into @p errbuf.
 * @return KMS_OK, KMS_ERR_IO (cannot open), KMS_ERR_CONFIG.
 */
int kms_config_load(struct kms_config *cfg, const char *path, char *errbuf,
		    size_t errlen);

/** Set one "section.key" = value (used for command-line overrides).
 *  @return KMS_OK or KMS_ERR_CONFIG (errbuf says why). */
int kms_config_set(struct kms_config *cfg, const char *section,
		   const char *key, const char *value, char *errbuf,
		   size_t errlen);

/** kms-mailbox's section: kmsd leaves it to kms-mailbox, which leaves
 *  kmsd's sections to kmsd, so both daemons can share one file. */
#define KMS_CONFIG_MAILBOX_SECTION "mailbox"

/** 1 if section is one of kmsd's ([hsm], [store], [net], ...), else 0. */
int kms_config_is_section(const char *section);

/** Cross-field checks (workers >= 1, batch 1..256, ...). */
int kms_config_validate(const struct kms_config *cfg, char *errbuf,
			size_t errlen);

#endif /* KMS_CONFIG_H */
