/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_log.h
 * @brief Leveled logging to stderr (or syslog). Never pass key material.
 */
#ifndef KMS_LOG_H
#define KMS_LOG_H

enum kms_log_level { KMS_LOG_ERR = 0, KMS_LOG_WARN, KMS_LOG_INFO, KMS_LOG_DEBUG };

/** Set the maximum level printed (default KMS_LOG_INFO) and the program
 *  name used as a prefix. Call before threads start. */
void kms_log_init(const char *prog, enum kms_log_level max, int use_syslog);

void kms_log(enum kms_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/**
 * Rate limit of one call site: at most KMS_LOG_RL_BURST messages every
 * KMS_LOG_RL_WINDOW_S seconds; the rest are counted and reported as
 * "N similar messages suppressed" with the next one let through. For
 * messages a packet or a request can cause (a hostile peer must not flood
 * the log). Thread-safe.
 */
struct kms_log_rl {
	unsigned long window;      /* start of the current window, s */
	unsigned n;                /* messages in it */
	unsigned long suppressed;
};
#define KMS_LOG_RL_BURST 10
#define KMS_LOG_RL_WINDOW_S 10

void kms_log_rl(enum kms_log_level lvl, struct kms_log_rl *rl,
		const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define KMS_LOG_RL(lvl, ...) do {					\
	static struct kms_log_rl rl_;					\
	kms_log_rl((lvl), &rl_, __VA_ARGS__);				\
} while (0)
#define KMS_ERR_RL(...) KMS_LOG_RL(KMS_LOG_ERR, __VA_ARGS__)
#define KMS_WARN_RL(...) KMS_LOG_RL(KMS_LOG_WARN, __VA_ARGS__)

#define KMS_ERR(...) kms_log(KMS_LOG_ERR, __VA_ARGS__)
#define KMS_WARN(...) kms_log(KMS_LOG_WARN, __VA_ARGS__)
#define KMS_INFO(...) kms_log(KMS_LOG_INFO, __VA_ARGS__)
#define KMS_DEBUG(...) kms_log(KMS_LOG_DEBUG, __VA_ARGS__)

#endif /* KMS_LOG_H */
