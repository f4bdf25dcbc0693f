// SPDX-License-Identifier: Apache-2.0
/*
 * The reuse policy set (control/policy.c): which policy a recipient gets,
 * setting fields all-or-nothing, overrides and their removal, and the text
 * form kmsd stores (round trip, and refusal of malformed text).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kms_policy.h"

static const struct kms_policy dflt = { 100, 86400, 604800, 0 };

static const struct kms_policy *for_id(const struct kms_policy_set *ps,
				       const char *id)
{
	return kms_policy_for(ps, (const uint8_t *)id, strlen(id), NULL);
}

static void recipient_domain(void **state)
{
	struct kms_policy_set ps;
	char *w[] = { "reuse_max_deposits=0", "max_retrievals=1" };
	char err[256];

	(void)state;
	kms_policy_set_init(&ps, &dflt);
	assert_int_equal(kms_policy_set_apply(&ps, "example.org", 2, w, err,
					      sizeof(err)), 0);
	assert_int_equal(for_id(&ps, "sip:bob@example.org")->reuse_max_deposits, 0);
	assert_int_equal(for_id(&ps, "sip:bob@example.org")->max_retrievals, 1);
	/* unset fields come from the default */
	assert_int_equal(for_id(&ps, "sip:bob@example.org")->deposit_lifetime_s, 604800);
	/* other domains, sub-domains, no '@': the default */
	assert_ptr_equal(for_id(&ps, "sip:bob@example.net"), &ps.dflt);
	assert_ptr_equal(for_id(&ps, "sip:bob@a.example.org"), &ps.dflt);
	assert_ptr_equal(for_id(&ps, "mailbox.example.org"), &ps.dflt);
	/* the last '@' names the domain */
	assert_int_equal(for_id(&ps, "sip:x@y@example.org")->reuse_max_deposits, 0);
	assert_int_equal(kms_policy_set_clear(&ps, "example.org"), 0);
	assert_ptr_equal(for_id(&ps, "sip:bob@example.org"), &ps.dflt);
	assert_int_equal(kms_policy_set_clear(&ps, "example.org"), -1);
}

/* A pair's override wins over its recipient's domain and the default. */
static void pair_first(void **state)
{
	struct kms_policy_set ps, back;
	uint8_t h1[KMS_PAIR_HASH_LEN] = { 1 }, h2[KMS_PAIR_HASH_LEN] = { 2 };
	char *wd[] = { "reuse_max_deposits=5" }, *wp[] = { "reuse_max_deposits=0" };
	char err[256], text[KMS_POLICY_TEXT_MAX];
	const uint8_t *b = (const uint8_t *)"sip:bob@example.org";

	(void)state;
	kms_policy_set_init(&ps, &dflt);
	assert_int_equal(kms_policy_set_apply(&ps, "example.org", 1, wd, err,
					      sizeof(err)), 0);
	assert_int_equal(kms_policy_set_apply_pair(&ps, h1, "sip:a@x,sip:bob@example.org",
						   1, wp, err, sizeof(err)), 0);
	assert_int_equal(kms_policy_for(&ps, b, 19, h1)->reuse_max_deposits, 0);
	assert_int_equal(kms_policy_for(&ps, b, 19, h2)->reuse_max_deposits, 5);
	assert_int_equal(kms_policy_for(&ps, b, 19, NULL)->reuse_max_deposits, 5);
	/* a pair override starts from the default, not from the domain */
	assert_int_equal(kms_policy_for(&ps, b, 19, h1)->deposit_lifetime_s, 604800);
	assert_int_equal(kms_policy_set_apply_pair(&ps, h2, "a b", 1, wp, err,
						   sizeof(err)), -1);
	assert_true(kms_policy_encode(&ps, text, sizeof(text)) > 0);
	assert_non_null(strstr(text, "\npair 0100000000"));
	assert_int_equal(kms_policy_decode(text, &back, err, sizeof(err)), 0);
	assert_int_equal(back.npairs, 1);
	assert_int_equal(kms_policy_for(&back, b, 19, h1)->reuse_max_deposits, 0);
	assert_string_equal(back.pair[0].label, "sip:a@x,sip:bob@example.org");
	assert_int_equal(kms_policy_set_caps_retrievals(&back), 0);
	assert_int_equal(kms_policy_set_clear_pair(&ps, h1), 0);
	assert_int_equal(kms_policy_set_clear_pair(&ps, h1), -1);
	assert_int_equal(kms_policy_for(&ps, b, 19, h1)->reuse_max_deposits, 5);
	/* a bad hash in the text form is refused */
	assert_int_equal(kms_policy_decode("default max_retrievals=0\npair zz x,y "
					   "max_retrievals=0", &back, err,
					   sizeof(err)), -1);
}

static void all_or_nothing(void **state)
{
	struct kms_policy_set ps, before;
	char err[256];
	char *bad[][2] = {
		{ "reuse_max_deposits=0", "bogus=1" },
		{ "reuse_max_deposits=0", "deposit_lifetime_s=0" },
		{ "reuse_max_deposits=0", "max_retrievals=-1" },
		{ "reuse_max_deposits=0", "reuse_max_age_s=4294967296" },
		{ "reuse_max_deposits=0", "max_retrievals=1x" },
		{ "reuse_max_deposits=0", "max_retrievals" },
	};

	(void)state;
	kms_policy_set_init(&ps, &dflt);
	before = ps;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(kms_policy_set_apply(&ps, NULL, 2, bad[i], err,
						      sizeof(err)), -1);
		assert_true(err[0]);
		assert_int_equal(kms_policy_set_apply(&ps, "d.example", 2, bad[i],
						      err, sizeof(err)), -1);
		assert_memory_equal(&ps, &before, sizeof(ps));
	}
	assert_int_equal(kms_policy_set_apply(&ps, "bad domain", 1, bad[0], err,
					      sizeof(err)), -1);
	assert_int_equal(kms_policy_set_apply(&ps, NULL, 0, bad[0], err,
					      sizeof(err)), -1);
	assert_memory_equal(&ps, &before, sizeof(ps));
}

static void text_round_trip(void **state)
{
	struct kms_policy_set ps, back;
	char text[KMS_POLICY_TEXT_MAX], err[256];
	char *w1[] = { "reuse_max_deposits=3" }, *w2[] = { "max_retrievals=2" };

	(void)state;
	kms_policy_set_init(&ps, &dflt);
	assert_int_equal(kms_policy_set_apply(&ps, NULL, 1, w1, err, sizeof(err)), 0);
	assert_int_equal(kms_policy_set_apply(&ps, "a.example", 1, w2, err,
					      sizeof(err)), 0);
	assert_int_equal(kms_policy_set_apply(&ps, "b.example", 1, w1, err,
					      sizeof(err)), 0);
	assert_true(kms_policy_encode(&ps, text, sizeof(text)) > 0);
	assert_non_null(strstr(text, "default reuse_max_deposits=3 "));
	assert_non_null(strstr(text, "\ndomain a.example reuse_max_deposits=3 "));
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(kms_policy_decode(text, &back, err, sizeof(err)), 0);
	assert_int_equal(back.ndomains, 2);
	assert_memory_equal(&back.dflt, &ps.dflt, sizeof(ps.dflt));
	assert_int_equal(for_id(&back, "sip:x@a.example")->max_retrievals, 2);
	assert_int_equal(kms_policy_encode(&ps, text, 20), -1);
	/* malformed text is refused and leaves the output alone */
	back = ps;
	assert_int_equal(kms_policy_decode("domain a.example max_retrievals=1",
					   &back, err, sizeof(err)), -1);
	assert_int_equal(kms_policy_decode("default bogus=1", &back, err,
					   sizeof(err)), -1);
	assert_int_equal(kms_policy_decode("", &back, err, sizeof(err)), -1);
	assert_memory_equal(&back, &ps, sizeof(ps));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(recipient_domain),
		cmocka_unit_test(pair_first),
		cmocka_unit_test(all_or_nothing),
		cmocka_unit_test(text_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
