/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_policy.h
 * @brief The key-reuse policy: a default and overrides per domain.
 *
 * A request's policy is its pair's override if there is one, else its
 * recipient's: the override of B's domain (the part of B's identity
 * after the last '@'; B's operator runs the mailbox), else the default. A policy set is a plain value: the
 * engine publishes it by RCU (kms_engine_policy_swap) and kmsd persists it
 * in the store's meta record "policy" in the text form below.
 *
 * Text form, one line per entry:
 *   default reuse_max_deposits=N reuse_max_age_s=T deposit_lifetime_s=L max_retrievals=R
 *   domain example.org reuse_max_deposits=0 ...
 *   pair <pair hash, 64 hex> <A>,<B> reuse_max_deposits=0 ...
 */
#ifndef KMS_POLICY_H
#define KMS_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kms_config.h"
#include "kms_proto.h"

#define KMS_POLICY_DOMAINS_MAX 64
#define KMS_POLICY_DOMAIN_MAX 64     /* bytes, without NUL */
#define KMS_POLICY_PAIRS_MAX 64
#define KMS_POLICY_LABEL_MAX (2 * KMS_ID_MAX + 1) /* "A,B" */
#define KMS_POLICY_TEXT_MAX (128 * (KMS_POLICY_DOMAINS_MAX + 1) + \
			     (KMS_POLICY_LABEL_MAX + 200) * KMS_POLICY_PAIRS_MAX)

struct kms_policy_set {
	struct kms_policy dflt;
	unsigned ndomains;
	struct {
		char name[KMS_POLICY_DOMAIN_MAX + 1];
		uint8_t len;
		struct kms_policy p;
	} dom[KMS_POLICY_DOMAINS_MAX];
	unsigned npairs;
	struct {
		uint8_t hash[KMS_PAIR_HASH_LEN];
		char label[KMS_POLICY_LABEL_MAX + 1];   /* "A,B", for show */
		struct kms_policy p;
	} pair[KMS_POLICY_PAIRS_MAX];
};

/** A set with @p dflt and no overrides. */
void kms_policy_set_init(struct kms_policy_set *ps, const struct kms_policy *dflt);

/** The policy for the pair @p pair_hash (NULL: none) with recipient
 *  @p id (@p len bytes, not NUL-terminated). */
const struct kms_policy *kms_policy_for(const struct kms_policy_set *ps,
					const uint8_t *id, size_t len,
					const uint8_t *pair_hash);

/**
 * Set fields of the default (@p domain NULL) or of @p domain's override
 * (created from the default if absent) from "name=value" words. All or
 * nothing: on error @p ps is unchanged and @p err says which word.
 * @return 0 or -1.
 */
int kms_policy_set_apply(struct kms_policy_set *ps, const char *domain,
			 int n, char *const *words, char *err, size_t errlen);

/** The same for the pair @p hash (@p label "A,B" kept for display). */
int kms_policy_set_apply_pair(struct kms_policy_set *ps,
			      const uint8_t hash[KMS_PAIR_HASH_LEN],
			      const char *label, int n, char *const *words,
			      char *err, size_t errlen);

/** Remove the pair's override. @return 0, or -1 if there is none. */
int kms_policy_set_clear_pair(struct kms_policy_set *ps,
			      const uint8_t hash[KMS_PAIR_HASH_LEN]);

/** Remove @p domain's override. @return 0, or -1 if there is none. */
int kms_policy_set_clear(struct kms_policy_set *ps, const char *domain);

/** @return 1 if any policy of the set caps retrievals (max_retrievals). */
int kms_policy_set_caps_retrievals(const struct kms_policy_set *ps);

/** The text form. @return its length, or -1 if @p cap is too small. */
int kms_policy_encode(const struct kms_policy_set *ps, char *out, size_t cap);

/** Parse the text form into @p ps. @return 0 or -1 (@p err says why). */
int kms_policy_decode(const char *text, struct kms_policy_set *ps, char *err,
		      size_t errlen);

/** {"default": {...}, "domains": {"example.org": {...}}} */
json_t *kms_policy_json(const struct kms_policy_set *ps);

#endif /* KMS_POLICY_H */
