// SPDX-License-Identifier: Apache-2.0
/*
 * GBA Ks_NAF (3GPP TS 33.220 Annex B.2): the exact byte string S and the
 * HMAC-SHA-256 over it. Expected values were computed independently with
 * Python's hmac/hashlib from the same inputs:
 *   S = 0x01 | "gba-me" | 00 06 | RAND | 00 10 | IMPI | 00 30 |
 *       NAF_Id (FQDN | Ua id) | 00 14
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "kms_err.h"
#include "kms_gba.h"
#include "kms_keyfile.h"

static const char *impi = "001010123456789@ims.mnc001.mcc001.3gppnetwork.org";
static const char *fqdn = "kms.example.org";
static const uint8_t ua[5] = { 0x01, 0x00, 0x00, 0x00, 0x02 };

static const char *s_hex =
	"01" "6762612d6d65" "0006"
	"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf" "0010"
	"303031303130313233343536373839406" "96d732e6d6e633030312e6d63633030"
	"312e336770706e6574776f726b2e6f7267" "0031"
	"6b6d732e6578616d706c652e6f7267" "0100000002" "0014";
static const char *ksnaf_hex =
	"c2cb6ced9ce6079158b974be74db5f62868866163c4cbe49c109d4e12331259d";

static void inputs(uint8_t ks[32], uint8_t rnd[16])
{
	for (int i = 0; i < 32; i++)
		ks[i] = (uint8_t)i;
	for (int i = 0; i < 16; i++)
		rnd[i] = (uint8_t)(0xa0 + i);
}

static void test_s_encoding(void **state)
{
	uint8_t ks[32], rnd[16], s[256], want[256];
	int n, wn;

	(void)state;
	inputs(ks, rnd);
	n = kms_gba_encode_s(rnd, impi, fqdn, ua, s, sizeof(s));
	wn = kms_hex_decode(s_hex, want, sizeof(want));
	assert_int_equal(wn, 100);
	assert_int_equal(n, wn);
	assert_memory_equal(s, want, (size_t)n);
	/* Each Li follows its Pi, two bytes big-endian. */
	assert_int_equal(s[0], 0x01);
	assert_memory_equal(s + 1, "gba-me\x00\x06", 8);
}

static void test_ks_naf(void **state)
{
	uint8_t ks[32], rnd[16], out[32], want[32];

	(void)state;
	inputs(ks, rnd);
	assert_int_equal(kms_gba_ks_naf(ks, sizeof(ks), rnd, impi, fqdn, ua, out), KMS_OK);
	assert_int_equal(kms_hex_decode(ksnaf_hex, want, sizeof(want)), 32);
	assert_memory_equal(out, want, 32);
	/* Any input bit changes the key. */
	rnd[15] ^= 1;
	assert_int_equal(kms_gba_ks_naf(ks, sizeof(ks), rnd, impi, fqdn, ua, out), KMS_OK);
	assert_memory_not_equal(out, want, 32);
}

static void test_bad_input(void **state)
{
	uint8_t ks[32], rnd[16], out[32], s[8];

	(void)state;
	inputs(ks, rnd);
	assert_int_equal(kms_gba_ks_naf(ks, sizeof(ks), rnd, "", fqdn, ua, out), KMS_ERR_INVAL);
	assert_int_equal(kms_gba_ks_naf(ks, sizeof(ks), rnd, impi, "", ua, out), KMS_ERR_INVAL);
	assert_int_equal(kms_gba_ks_naf(ks, 0, rnd, impi, fqdn, ua, out), KMS_ERR_INVAL);
	assert_int_equal(kms_gba_encode_s(rnd, impi, fqdn, ua, s, sizeof(s)), KMS_ERR_SPACE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_s_encoding),
		cmocka_unit_test(test_ks_naf),
		cmocka_unit_test(test_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
