// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of the per-worker replay window (dataplane/kms_replay.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kms_err.h"
#include "kms_proto.h"
#include "kms_replay.h"

#define NOW 1700000000000ull

/* Distinct nonces from a counter: the bytes differ in every position so
 * the window's hash sees both halves change. */
static void nonce_of(uint32_t i, uint8_t n[12])
{
	for (int j = 0; j < 12; j++)
		n[j] = (uint8_t)((i >> (8 * (j % 4))) ^ (j * 0x3b));
}

static struct kms_replay *mk(uint32_t cap)
{
	struct kms_replay *r = NULL;

	assert_int_equal(kms_replay_create(cap, &r), KMS_OK);
	assert_non_null(r);
	return r;
}

static void fresh_then_exists(void **state)
{
	struct kms_replay *r = mk(64);
	uint8_t n[12];

	(void)state;
	nonce_of(1, n);
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_AS, n, NOW + 10, NOW),
			 KMS_OK);
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_AS, n, NOW + 10, NOW),
			 KMS_ERR_EXISTS);
	/* Still a replay at the last live millisecond, whatever expiry the
	 * replayed copy asks for. */
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_AS, n, NOW + 99,
						 NOW + 10), KMS_ERR_EXISTS);
	assert_int_equal(kms_replay_live(r, NOW), 1);
	kms_replay_destroy(r);
}

/* The hashes kms_replay_prefetch_many gives are the ones check_insert
 * uses, each at its own position, over several of its 64-block AES calls
 * and whatever the batch: a nonce entered through either is found by the
 * other. */
static void prefetch_hash_is_the_key(void **state)
{
	enum { N = 150 };
	struct kms_replay *r = mk(1024);
	uint8_t n[N][12], role[N];
	const uint8_t *np[N];
	uint32_t h[N], h1;

	(void)state;
	for (unsigned i = 0; i < N; i++) {
		nonce_of(1000 + i, n[i]);
		np[i] = n[i];
		role[i] = i % 3 ? KMS_ROLE_B : KMS_ROLE_AS;
	}
	kms_replay_prefetch_many(r, 0, role, np, h);
	kms_replay_prefetch_many(r, N, role, np, h);
	for (unsigned i = 0; i < N; i++) {
		kms_replay_prefetch_many(r, 1, &role[i], &np[i], &h1);
		assert_int_equal(h1, h[i]);
		if (i % 2) {
			assert_int_equal(kms_replay_check_insert_h(r, h[i],
					 role[i], n[i], NOW + 10, NOW), KMS_OK);
			assert_int_equal(kms_replay_check_insert(r, role[i],
					 n[i], NOW + 10, NOW), KMS_ERR_EXISTS);
		} else {
			assert_int_equal(kms_replay_check_insert(r, role[i],
					 n[i], NOW + 10, NOW), KMS_OK);
			assert_int_equal(kms_replay_check_insert_h(r, h[i],
					 role[i], n[i], NOW + 10, NOW),
					 KMS_ERR_EXISTS);
		}
	}
	assert_int_equal(kms_replay_live(r, NOW), N);
	kms_replay_destroy(r);
}

static void role_is_part_of_key(void **state)
{
	struct kms_replay *r = mk(64);
	uint8_t n[12];

	(void)state;
	nonce_of(7, n);
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_A, n, NOW + 10, NOW),
			 KMS_OK);
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_AS, n, NOW + 10, NOW),
			 KMS_OK);
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n, NOW + 10, NOW),
			 KMS_OK);
	for (uint8_t role = KMS_ROLE_A; role <= KMS_ROLE_B; role++)
		assert_int_equal(kms_replay_check_insert(r, role, n, NOW + 10,
							 NOW), KMS_ERR_EXISTS);
	assert_int_equal(kms_replay_live(r, NOW), 3);
	kms_replay_destroy(r);
}

/* The same in a nearly full table (32 nonces: 64 slots), where probe runs
 * overlap: the role is compared, not only hashed. */
static void role_is_part_of_key_dense(void **state)
{
	struct kms_replay *r = mk(32);
	uint8_t n[12];

	(void)state;
	for (uint32_t i = 0; i < 21; i++) {
		nonce_of(i, n);
		for (uint8_t role = KMS_ROLE_A; role <= KMS_ROLE_B; role++)
			assert_int_equal(kms_replay_check_insert(r, role, n,
								 NOW + 10, NOW),
					 KMS_OK);
	}
	assert_int_equal(kms_replay_live(r, NOW), 63);
	kms_replay_destroy(r);
}

static void one_byte_differs(void **state)
{
	struct kms_replay *r = mk(64);
	uint8_t n[12], m[12];

	(void)state;
	nonce_of(42, n);
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n, NOW + 10, NOW),
			 KMS_OK);
	for (int j = 0; j < 12; j++) {
		memcpy(m, n, sizeof(m));
		m[j] ^= 0x80;
		assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, m,
							 NOW + 10, NOW), KMS_OK);
	}
	assert_int_equal(kms_replay_live(r, NOW), 13);
	kms_replay_destroy(r);
}

static void expired_entry_reusable(void **state)
{
	struct kms_replay *r = mk(64);
	uint8_t n[12];

	(void)state;
	nonce_of(3, n);
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n, NOW + 100, NOW),
			 KMS_OK);
	assert_int_equal(kms_replay_live(r, NOW + 100), 1);
	assert_int_equal(kms_replay_live(r, NOW + 101), 0);
	/* After its expiry the nonce is no longer remembered (the timestamp
	 * check refuses such a token on its own) and may be taken again. */
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n, NOW + 300,
						 NOW + 101), KMS_OK);
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n, NOW + 300,
						 NOW + 200), KMS_ERR_EXISTS);
	assert_int_equal(kms_replay_live(r, NOW + 200), 1);
	kms_replay_destroy(r);
}

/* Fill the smallest table, let every other entry expire, then: live ones
 * are still found past the expired slots of their run, and the expired
 * slots take new nonces. */
static void expired_slots_in_runs(void **state)
{
	struct kms_replay *r = mk(1);
	uint8_t n[12];
	uint32_t ok = 0, i;
	int rc;

	(void)state;
	for (i = 0; i < 4096; i++) {
		nonce_of(i, n);
		rc = kms_replay_check_insert(r, KMS_ROLE_A, n,
					     i % 2 ? NOW + 1000 : NOW + 10, NOW);
		if (rc == KMS_ERR_BUSY)
			break;
		assert_int_equal(rc, KMS_OK);
		ok++;
	}
	assert_true(ok >= 2 && ok < 4096);
	assert_int_equal(kms_replay_live(r, NOW + 11), ok / 2);
	for (i = 1; i < ok; i += 2) {
		nonce_of(i, n);
		assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_A, n,
							 NOW + 1000, NOW + 11),
				 KMS_ERR_EXISTS);
	}
	for (i = 0; i < ok - ok / 2; i++) {
		nonce_of(100000 + i, n);
		assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_A, n,
							 NOW + 1000, NOW + 11),
				 KMS_OK);
	}
	for (i = 1; i < ok; i += 2) {
		nonce_of(i, n);
		assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_A, n,
							 NOW + 1000, NOW + 11),
				 KMS_ERR_EXISTS);
	}
	kms_replay_destroy(r);
}

static void capacity_exhaustion_busy(void **state)
{
	struct kms_replay *r = mk(4);
	uint8_t n[12];
	uint32_t ok = 0, i;
	int rc = KMS_OK;

	(void)state;
	for (i = 0; i < 100000 && rc == KMS_OK; i++) {
		nonce_of(i, n);
		rc = kms_replay_check_insert(r, KMS_ROLE_B, n, NOW + 1000, NOW);
		ok += rc == KMS_OK;
	}
	/* Fail closed: a full window refuses instead of forgetting. */
	assert_int_equal(rc, KMS_ERR_BUSY);
	assert_true(ok >= 4);
	assert_int_equal(kms_replay_live(r, NOW), ok);
	/* Every remembered nonce is still a replay, none was evicted. */
	for (i = 0; i < ok; i++) {
		nonce_of(i, n);
		assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n,
							 NOW + 1000, NOW),
				 KMS_ERR_EXISTS);
	}
	/* Once they expire, the window takes nonces again. */
	nonce_of(i, n);
	assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n, NOW + 3000,
						 NOW + 1001), KMS_OK);
	kms_replay_destroy(r);
}

static void no_false_exists(void **state)
{
	struct kms_replay *r = mk(16384);
	uint8_t n[12];

	(void)state;
	for (uint32_t i = 0; i < 10000; i++) {
		nonce_of(i, n);
		assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_AS, n,
							 NOW + 60000, NOW),
				 KMS_OK);
	}
	assert_int_equal(kms_replay_live(r, NOW), 10000);
	/* ... and no false "fresh" either. */
	for (uint32_t i = 0; i < 10000; i++) {
		nonce_of(i, n);
		assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_AS, n,
							 NOW + 60000, NOW + 1),
				 KMS_ERR_EXISTS);
	}
	kms_replay_destroy(r);
}

/*
 * A long run in which every slot is used many times over: each live nonce
 * stays a replay until it expires, an expired one is fresh again, and a
 * lookup stays short (it stops at a slot that expired before any live
 * entry was inserted, not after 64 probes of used slots).
 */
static void long_run_stays_correct_and_short(void **state)
{
	enum { CAP = 1024, PER_MS = 5, LIFE = 100, TICKS = 4000 };
	struct kms_replay *r = mk(CAP);
	uint8_t n[12];
	uint64_t probes0 = 0, checks = 0;
	uint32_t next = 0;

	(void)state;
	for (uint32_t t = 0; t < TICKS; t++) {
		uint64_t now = NOW + t;

		if (t == TICKS / 2) {
			probes0 = kms_replay_probes(r);
			checks = 0;
		}
		for (int k = 0; k < PER_MS; k++, next++) {
			nonce_of(next, n);
			assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n,
								 now + LIFE, now),
					 KMS_OK);
			checks++;
		}
		if (t >= LIFE + 1) {
			/* Inserted LIFE - 1 ms ago: still live, a replay. */
			nonce_of(next - PER_MS * LIFE, n);
			assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n,
								 now + LIFE, now),
					 KMS_ERR_EXISTS);
			checks++;
		}
		if (t >= 2 * LIFE && t % 7 == 0) {
			/* Expired LIFE ms ago: the window forgot it. */
			nonce_of(next - PER_MS * (2 * LIFE), n);
			assert_int_equal(kms_replay_check_insert(r, KMS_ROLE_B, n,
								 now + LIFE, now),
					 KMS_OK);
			checks++;
		}
	}
	/* 2048 slots, about 500 live and 500 recently expired entries: a few
	 * probes a check, far from the 64 of a scan to the probe limit. */
	assert_true((double)(kms_replay_probes(r) - probes0) / (double)checks < 8.0);
	kms_replay_destroy(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fresh_then_exists),
		cmocka_unit_test(prefetch_hash_is_the_key),
		cmocka_unit_test(role_is_part_of_key),
		cmocka_unit_test(role_is_part_of_key_dense),
		cmocka_unit_test(one_byte_differs),
		cmocka_unit_test(expired_entry_reusable),
		cmocka_unit_test(expired_slots_in_runs),
		cmocka_unit_test(capacity_exhaustion_busy),
		cmocka_unit_test(no_false_exists),
		cmocka_unit_test(long_run_stays_correct_and_short),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
