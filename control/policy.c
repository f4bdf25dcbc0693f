// SPDX-License-Identifier: Apache-2.0
/* The key-reuse policy set. Contract in kms_policy.h. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms_policy.h"

static const struct {
	const char *name;
	size_t off;
	uint32_t min;
} fields[] = {
	{ "reuse_max_deposits", offsetof(struct kms_policy, reuse_max_deposits), 0 },
	{ "reuse_max_age_s", offsetof(struct kms_policy, reuse_max_age_s), 0 },
	{ "deposit_lifetime_s", offsetof(struct kms_policy, deposit_lifetime_s), 1 },
	{ "max_retrievals", offsetof(struct kms_policy, max_retrievals), 0 },
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

static uint32_t *field(struct kms_policy *p, size_t i)
{
	return (uint32_t *)(void *)((char *)p + fields[i].off);
}

static uint32_t field_get(const struct kms_policy *p, size_t i)
{
	uint32_t v;

	memcpy(&v, (const char *)p + fields[i].off, sizeof(v));
	return v;
}

void kms_policy_set_init(struct kms_policy_set *ps, const struct kms_policy *dflt)
{
	memset(ps, 0, sizeof(*ps));
	ps->dflt = *dflt;
}

static int find(const struct kms_policy_set *ps, const char *d, size_t len)
{
	for (unsigned i = 0; i < ps->ndomains; i++)
		if (ps->dom[i].len == len && !memcmp(ps->dom[i].name, d, len))
			return (int)i;
	return -1;
}

static int find_pair(const struct kms_policy_set *ps, const uint8_t *hash)
{
	for (unsigned i = 0; i < ps->npairs; i++)
		if (!memcmp(ps->pair[i].hash, hash, KMS_PAIR_HASH_LEN))
			return (int)i;
	return -1;
}

const struct kms_policy *kms_policy_for(const struct kms_policy_set *ps,
					const uint8_t *id, size_t len,
					const uint8_t *pair_hash)
{
	const uint8_t *at = NULL;
	int i;

	if (pair_hash && ps->npairs) {
		i = find_pair(ps, pair_hash);
		if (i >= 0)
			return &ps->pair[i].p;
	}
	for (size_t k = 0; k < len; k++)
		if (id[k] == '@')
			at = id + k;
	if (!at || !ps->ndomains)
		return &ps->dflt;
	i = find(ps, (const char *)at + 1, len - (size_t)(at + 1 - id));
	return i < 0 ? &ps->dflt : &ps->dom[i].p;
}

/* A domain name: 1..64 of [A-Za-z0-9.-]. */
static int domain_ok(const char *d)
{
	size_t n = strlen(d);

	if (n == 0 || n > KMS_POLICY_DOMAIN_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((d[i] >= 'a' && d[i] <= 'z') || (d[i] >= 'A' && d[i] <= 'Z') ||
		      (d[i] >= '0' && d[i] <= '9') || d[i] == '.' || d[i] == '-'))
			return 0;
	return 1;
}

static int parse_word(const char *w, struct kms_policy *p, char *err,
		      size_t errlen)
{
	const char *eq = strchr(w, '=');
	unsigned long long v;
	char *end;

	for (size_t i = 0; eq && i < NFIELDS; i++) {
		if (strlen(fields[i].name) != (size_t)(eq - w) ||
		    strncmp(w, fields[i].name, (size_t)(eq - w)))
			continue;
		errno = 0;
		v = strtoull(eq + 1, &end, 10);
		if (errno || end == eq + 1 || *end || eq[1] == '-' ||
		    v > UINT32_MAX || v < fields[i].min) {
			snprintf(err, errlen, "%s: not a number in %u..%u", w,
				 fields[i].min, UINT32_MAX);
			return -1;
		}
		*field(p, i) = (uint32_t)v;
		return 0;
	}
	snprintf(err, errlen, "'%.64s': expected name=value with a name among "
		 "reuse_max_deposits, reuse_max_age_s, deposit_lifetime_s, "
		 "max_retrievals", w);
	return -1;
}

int kms_policy_set_apply(struct kms_policy_set *ps, const char *domain,
			 int n, char *const *words, char *err, size_t errlen)
{
	struct kms_policy p;
	int i = -1;

	if (domain && !domain_ok(domain)) {
		snprintf(err, errlen, "domain '%.64s': 1..64 of A-Z a-z 0-9 . -",
			 domain);
		return -1;
	}
	if (n < 1) {
		snprintf(err, errlen, "nothing to set");
		return -1;
	}
	if (domain)
		i = find(ps, domain, strlen(domain));
	if (domain && i < 0 && ps->ndomains == KMS_POLICY_DOMAINS_MAX) {
		snprintf(err, errlen, "at most %d domain overrides",
			 KMS_POLICY_DOMAINS_MAX);
		return -1;
	}
	p = !domain ? ps->dflt : i >= 0 ? ps->dom[i].p : ps->dflt;
	for (int k = 0; k < n; k++)
		if (parse_word(words[k], &p, err, errlen))
			return -1;
	if (!domain) {
		ps->dflt = p;
		return 0;
	}
	if (i < 0) {
		i = (int)ps->ndomains++;
		ps->dom[i].len = (uint8_t)strlen(domain);
		memcpy(ps->dom[i].name, domain, ps->dom[i].len + 1u);
	}
	ps->dom[i].p = p;
	return 0;
}

int kms_policy_set_apply_pair(struct kms_policy_set *ps,
			      const uint8_t hash[KMS_PAIR_HASH_LEN],
			      const char *label, int n, char *const *words,
			      char *err, size_t errlen)
{
	int i = find_pair(ps, hash);
	struct kms_policy p;

	if (strlen(label) > KMS_POLICY_LABEL_MAX || strchr(label, ' ') ||
	    strchr(label, '\n')) {
		snprintf(err, errlen, "pair label: at most %d bytes, no spaces",
			 KMS_POLICY_LABEL_MAX);
		return -1;
	}
	if (n < 1) {
		snprintf(err, errlen, "nothing to set");
		return -1;
	}
	if (i < 0 && ps->npairs == KMS_POLICY_PAIRS_MAX) {
		snprintf(err, errlen, "at most %d pair overrides",
			 KMS_POLICY_PAIRS_MAX);
		return -1;
	}
	/* A new pair override starts from what the pair gets today. */
	p = i >= 0 ? ps->pair[i].p : ps->dflt;
	for (int k = 0; k < n; k++)
		if (parse_word(words[k], &p, err, errlen))
			return -1;
	if (i < 0) {
		i = (int)ps->npairs++;
		memcpy(ps->pair[i].hash, hash, KMS_PAIR_HASH_LEN);
		snprintf(ps->pair[i].label, sizeof(ps->pair[i].label), "%s", label);
	}
	ps->pair[i].p = p;
	return 0;
}

int kms_policy_set_clear_pair(struct kms_policy_set *ps,
			      const uint8_t hash[KMS_PAIR_HASH_LEN])
{
	int i = find_pair(ps, hash);

	if (i < 0)
		return -1;
	ps->pair[i] = ps->pair[--ps->npairs];
	return 0;
}

int kms_policy_set_clear(struct kms_policy_set *ps, const char *domain)
{
	int i = find(ps, domain, strlen(domain));

	if (i < 0)
		return -1;
	ps->dom[i] = ps->dom[--ps->ndomains];
	return 0;
}

int kms_policy_set_caps_retrievals(const struct kms_policy_set *ps)
{
	if (ps->dflt.max_retrievals)
		return 1;
	for (unsigned i = 0; i < ps->ndomains; i++)
		if (ps->dom[i].p.max_retrievals)
			return 1;
	for (unsigned i = 0; i < ps->npairs; i++)
		if (ps->pair[i].p.max_retrievals)
			return 1;
	return 0;
}

static int encode_one(const struct kms_policy *p, char *out, size_t cap)
{
	size_t used = 0;

	for (size_t i = 0; i < NFIELDS; i++) {
		int w = snprintf(out + used, cap - used, " %s=%u", fields[i].name,
				 field_get(p, i));

		if (w < 0 || (size_t)w >= cap - used)
			return -1;
		used += (size_t)w;
	}
	return (int)used;
}

int kms_policy_encode(const struct kms_policy_set *ps, char *out, size_t cap)
{
	size_t used = 0;
	int w;

	w = snprintf(out, cap, "default");
	if (w < 0 || (size_t)w >= cap)
		return -1;
	used = (size_t)w;
	w = encode_one(&ps->dflt, out + used, cap - used);
	if (w < 0)
		return -1;
	used += (size_t)w;
	for (unsigned i = 0; i < ps->ndomains; i++) {
		w = snprintf(out + used, cap - used, "\ndomain %s", ps->dom[i].name);
		if (w < 0 || (size_t)w >= cap - used)
			return -1;
		used += (size_t)w;
		w = encode_one(&ps->dom[i].p, out + used, cap - used);
		if (w < 0)
			return -1;
		used += (size_t)w;
	}
	for (unsigned i = 0; i < ps->npairs; i++) {
		char hex[2 * KMS_PAIR_HASH_LEN + 1];

		for (unsigned b = 0; b < KMS_PAIR_HASH_LEN; b++)
			snprintf(hex + 2 * b, 3, "%02x", ps->pair[i].hash[b]);
		w = snprintf(out + used, cap - used, "\npair %s %s", hex,
			     ps->pair[i].label);
		if (w < 0 || (size_t)w >= cap - used)
			return -1;
		used += (size_t)w;
		w = encode_one(&ps->pair[i].p, out + used, cap - used);
		if (w < 0)
			return -1;
		used += (size_t)w;
	}
	return (int)used;
}

static int hex_hash(const char *s, uint8_t out[KMS_PAIR_HASH_LEN])
{
	if (strlen(s) != 2 * KMS_PAIR_HASH_LEN)
		return -1;
	for (unsigned i = 0; i < KMS_PAIR_HASH_LEN; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1 || !isxdigit((unsigned char)s[2 * i]) ||
		    !isxdigit((unsigned char)s[2 * i + 1]))
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

int kms_policy_decode(const char *text, struct kms_policy_set *ps, char *err,
		      size_t errlen)
{
	char buf[KMS_POLICY_TEXT_MAX], *save = NULL, *line;
	struct kms_policy_set out;
	int have_default = 0;

	if (strlen(text) >= sizeof(buf)) {
		snprintf(err, errlen, "policy text too long");
		return -1;
	}
	memcpy(buf, text, strlen(text) + 1);
	memset(&out, 0, sizeof(out));
	if (errlen)
		err[0] = '\0';
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *words[NFIELDS + 4] = { NULL }, *s2 = NULL;
		int n = 0;

		for (char *t = strtok_r(line, " ", &s2); t && n < (int)NFIELDS + 4;
		     t = strtok_r(NULL, " ", &s2))
			words[n++] = t;
		if (n > (int)NFIELDS + 3) {
			snprintf(err, errlen, "policy line with too many words");
			return -1;
		}
		if (n >= 1 && !strcmp(words[0], "default")) {
			if (kms_policy_set_apply(&out, NULL, n - 1, words + 1, err,
						 errlen))
				return -1;
			have_default = 1;
		} else if (n >= 2 && !strcmp(words[0], "domain") && have_default) {
			if (kms_policy_set_apply(&out, words[1], n - 2, words + 2,
						 err, errlen))
				return -1;
		} else if (n >= 3 && !strcmp(words[0], "pair") && have_default) {
			uint8_t hash[KMS_PAIR_HASH_LEN];

			if (hex_hash(words[1], hash) ||
			    kms_policy_set_apply_pair(&out, hash, words[2], n - 3,
						      words + 3, err, errlen)) {
				if (!err[0])
					snprintf(err, errlen, "pair: bad hash");
				return -1;
			}
		} else {
			snprintf(err, errlen, "policy line '%.40s': expected "
				 "'default ...' first, then 'domain NAME ...'",
				 words[0] ? words[0] : "");
			return -1;
		}
	}
	if (!have_default) {
		snprintf(err, errlen, "no default policy");
		return -1;
	}
	*ps = out;
	return 0;
}

static json_t *one_json(const struct kms_policy *p)
{
	json_t *o = json_object();

	for (size_t i = 0; i < NFIELDS; i++)
		json_object_set_new(o, fields[i].name, json_integer(field_get(p, i)));
	return o;
}

json_t *kms_policy_json(const struct kms_policy_set *ps)
{
	json_t *o = json_object(), *d = json_object(), *pr = json_object();

	json_object_set_new(o, "default", one_json(&ps->dflt));
	for (unsigned i = 0; i < ps->ndomains; i++)
		json_object_set_new(d, ps->dom[i].name, one_json(&ps->dom[i].p));
	json_object_set_new(o, "domains", d);
	for (unsigned i = 0; i < ps->npairs; i++)
		json_object_set_new(pr, ps->pair[i].label, one_json(&ps->pair[i].p));
	json_object_set_new(o, "pairs", pr);
	return o;
}
