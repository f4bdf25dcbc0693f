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

#define KMS_ERR(...) kms_log(KMS_LOG_ERR, __VA_ARGS__)
#define KMS_WARN(...) kms_log(KMS_LOG_WARN, __VA_ARGS__)
#define KMS_INFO(...) kms_log(KMS_LOG_INFO, __VA_ARGS__)
#define KMS_DEBUG(...) kms_log(KMS_LOG_DEBUG, __VA_ARGS__)

#endif /* KMS_LOG_H */
