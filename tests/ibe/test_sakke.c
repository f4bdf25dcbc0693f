// SPDX-License-Identifier: Apache-2.0
/*
 * SAKKE (proto/ibe/sakke.c) against the test data of RFC 6508 Appendix A
 * (parameter set 1 of RFC 6509, whose g is checked as <P, P>), then the
 * refusals: wrong identity, tampered R or H, wrong or malformed RSK,
 * points off the curve or outside the order-q subgroup, bad arguments;
 * random round trips and a bilinearity spot check; scalar multiples at
 * the edges and on points of order 2q, 4q and 4 against OpenSSL's EC; the
 * prepared RSK against kms_sakke_decap().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/rand.h>

#include "kms_err.h"
#include "kms_sakke.h"

/* ------------------------------------------- RFC 6509 / RFC 6508 data */

/* RFC 6509 Appendix A: p and the base point P = (Px, Py). */
static const char P_HEX[] =
	"997ABB1F 0A563FDA 65C61198 DAD0657A 416C0CE1 9CB48261 BE9AE358 B3E01A2E"
	"F40AAB27 E2FC0F1B 228730D5 31A59CB0 E791B39F F7C88A19 356D27F4 A666A6D0"
	"E26C6487 326B4CD4 512AC5CD 65681CE1 B6AFF4A8 31852A82 A7CF3C52 1C3C09AA"
	"9F94D6AF 56971F1F FCE3E823 89857DB0 80C5DF10 AC7ACE87 666D807A FEA85FEB";
static const char Q_HEX[] =
	"265EAEC7 C2958FF6 99718466 36B4195E 905B0338 672D2098 6FA6B8D6 2CF8068B"
	"BD02AAC9 F8BF03C6 C8A1CC35 4C69672C 39E46CE7 FDF22286 4D5B49FD 2999A9B4"
	"389B1921 CC9AD335 144AB173 595A0738 6DABFD2A 0C614AA0 A9F3CF14 870F026A"
	"A7E535AB D5A5C7C7 FF38FA08 E2615F6C 203177C4 2B1EB3A1 D99B601E BFAA17FB";
static const char PX_HEX[] =
	"53FC09EE 332C29AD 0A799005 3ED9B52A 2B1A2FD6 0AEC69C6 98B2F204 B6FF7CBF"
	"B5EDB6C0 F6CE2308 AB10DB90 30B09E10 43D5F22C DB9DFA55 718BD9E7 406CE890"
	"9760AF76 5DD5BCCB 337C8654 8B72F2E1 A702C339 7A60DE74 A7C1514D BA66910D"
	"D5CFB4CC 80728D87 EE9163A5 B63F73EC 80EC46C4 967E0979 880DC8AB EAE63895";
static const char PY_HEX[] =
	"0A824906 3F6009F1 F9F1F053 3634A135 D3E82016 02990696 3D778D82 1E141178"
	"F5EA69F4 654EC2B9 E7F7F5E5 F0DE55F6 6B598CCF 9A140B2E 416CFF0C A9E032B9"
	"70DAE117 AD547C6C CAD696B5 B7652FE0 AC6F1E80 164AA989 492D979F C5A4D5F2"
	"13515AD7 E9CB99A9 80BDAD5A D5BB4636 ADB9B570 6A67DCDE 75573FD7 1BEF16D7";
/* RFC 6509 Appendix A: g = <P, P>. */
static const char G_HEX[] =
	"66FC2A43 2B6EA392 148F1586 7D623068 C6A87BD1 FB94C41E 27FABE65 8E015A87"
	"371E9474 4C96FEDA 449AE956 3F8BC446 CBFDA85D 5D00EF57 7072DA8F 541721BE"
	"EE0FAED1 828EAB90 B99DFB01 38C78433 55DF0460 B4A9FD74 B4F1A32B CAFA1FFA"
	"D682C033 A7942BCC E3720F20 B9B7B040 3C8CAE87 B7A0042A CDE0FAB3 6461EA46";

/* RFC 6508 Appendix A: the KMS master secret z. */
static const char Z_HEX[] = "AFF429D3 5F84B110 D094803B 3595A6E2 998BC99F";
/* RFC 6508 Appendix A: Z = [z]P. */
static const char ZS_HEX[] =
	"04"
	"5958EF1B 1679BF09 9B3A030D F255AA6A 23C1D8F1 43D4D23F 753E69BD 27A832F3"
	"8CB4AD53 DDEF4260 B0FE8BB4 5C4C1FF5 10EFFE30 0367A37B 61F701D9 14AEF097"
	"24825FA0 707D61A6 DFF4FBD7 273566CD DE352A0B 04B7C16A 78309BE6 40697DE7"
	"47613A5F C195E8B9 F328852A 579DB8F9 9B1D0034 479EA9C5 595F47C4 B2F54FF2"
	"1508D375 14DCF7A8 E143A605 8C09A6BF 2C9858CA 37C25806 5AE6BF75 32BC8B5B"
	"63383866 E0753C5A C0E72709 F8445F2E 6178E065 857E0EDA 10F68206 B63505ED"
	"87E534FB 2831FF95 7FB7DC61 9DAE6130 1EEACC2F DA3680EA 4999258A 833CEA8F"
	"C67C6D19 487FB449 059F26CC 8AAB655A B58B7CC7 96E24E9A 39409575 4F5F8BAE";
/* RFC 6508 Appendix A: b = "2011-02\0tel:+447700900123\0". */
static const uint8_t ID_B[] = "2011-02\0tel:+447700900123";   /* + NUL */
#define ID_B_LEN sizeof(ID_B)
/* RFC 6508 Appendix A: RSK K_(b,S) = [(b + z)^-1]P. */
static const char RSK_HEX[] =
	"04"
	"93AF67E5 007BA6E6 A80DA793 DA300FA4 B52D0A74 E25E6E7B 2B3D6EE9 D18A9B5C"
	"5023597B D82D8062 D3401956 3BA1D25C 0DC56B7B 979D74AA 50F29FBF 11CC2C93"
	"F5DFCA61 5E609279 F6175CEA DB00B58C 6BEE1E7A 2A47C4F0 C456F052 59A6FA94"
	"A634A40D AE1DF593 D4FECF68 8D5FC678 BE7EFC6D F3D68353 25B83B2C 6E69036B"
	"155F0A27 241094B0 4BFB0BDF AC6C670A 65C325D3 9A069F03 659D44CA 27D3BE8D"
	"F311172B 55416018 1CBE94A2 A783320C ED590BC4 2644702C F371271E 496BF20F"
	"588B78A1 BC01ECBB 6559934B DD2FB65D 2884318A 33D1A42A DF5E33CC 5800280B"
	"28356497 F87135BA B9612A17 26042440 9AC15FEE 996B744C 33215123 5DECB0F5";
/* RFC 6508 Appendix A: SSV. */
static const char SSV_HEX[] = "12345678 9ABCDEF0 12345678 9ABCDEF0";
/* RFC 6508 Appendix A: r = HashToIntegerRange(SSV || b, q, Hash). */
static const char R_HEX[] =
	"13EE3E1B 8DAC5DB1 68B1CEB3 2F0566A4 C273693F 78BAFFA2 A2EE6A68 6E6BD90F"
	"8206CCAB 84E7F42E D39BD4FB 131012EC CA2ECD21 19414560 C17CAB46 B956A80F"
	"58A3302E B3E2C9A2 28FBA7ED 34D8ACA2 392DA1FF B0B17B23 20AE09AA EDFD0235"
	"F6FE0EB6 5337A63F 9CC97728 B8E5AD04 60FADE14 4369AA5B 21662132 47712096";
/* RFC 6508 Appendix A: R_(b,S) = [r]([b]P + Z_S). */
static const char RBS_HEX[] =
	"04"
	"44E8AD44 AB8592A6 A5A3DDCA 5CF896C7 18043606 A01D650D EF37A01F 37C228C3"
	"32FC3173 54E2C274 D4DAF8AD 001054C7 6CE57971 C6F4486D 57230432 61C506EB"
	"F5BE438F 53DE04F0 67C776E0 DD3B71A6 29013328 3725A532 F21AF145 126DC1D7"
	"77ECC27B E50835BD 28098B8A 73D9F801 D893793A 41FF5C49 B87E79F2 BE4D56CE"
	"557E134A D85BB1D4 B9CE4F8B E4B08A12 BABF55B1 D6F1D7A6 38019EA2 8E15AB1C"
	"9F76375F DD1210D4 F4351B9A 009486B7 F3ED46C9 65DED2D8 0DADE4F3 8C6721D5"
	"2C3AD103 A10EBD29 59248B4E F006836B F097448E 6107C9ED EE9FB704 823DF199"
	"F832C905 AE45F8A2 47A072D8 EF729EAB C5E27574 B07739B3 4BE74A53 2F747B86";
/* RFC 6508 Appendix A: g^r, which is also w = <R_(b,S), K_(b,S)>. */
static const char GR_HEX[] =
	"7D2A8438 E6291C64 9B6579EB 3B79EAE9 48B1DE9E 5F7D1F40 70A08F8D B6B3C515"
	"6F2201AF FBB5CB9D 82AA3EC0 D0398B89 ABC78A13 A760C0BF 3F77E63D 0DF3F1A3"
	"41A41B88 11DF197F D6CD0F00 3125606F 4F109F40 0F7292A1 0D255E3C 0EBCCB42"
	"53FB182C 68F09CF6 CD9C4A53 DA6C74AD 007AF36B 8BCA979D 5895E282 F483FCD6";
/* RFC 6508 Appendix A: H = SSV XOR HashToIntegerRange(g^r, 2^n, Hash). */
static const char H_HEX[] = "89E0BC66 1AA1E916 38E6ACC8 4E496507";

/* ------------------------------------------------------------ helpers */

static struct kms_sakke *sk;

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Hex (spaces ignored) into exactly @len octets, right-aligned. */
static void unhex(const char *hex, uint8_t *out, size_t len)
{
	uint8_t tmp[512];
	size_t n = 0;
	int hi = -1, v;

	for (; *hex; hex++) {
		if (*hex == ' ')
			continue;
		v = hexval(*hex);
		assert_true(v >= 0);
		if (hi < 0) {
			hi = v;
		} else {
			assert_true(n < sizeof(tmp));
			tmp[n++] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
	}
	assert_int_equal(hi, -1);
	assert_true(n <= len);
	memset(out, 0, len - n);
	memcpy(out + len - n, tmp, n);
}

static void base_point(uint8_t pt[KMS_SAKKE_POINT_LEN])
{
	pt[0] = 0x04;
	unhex(PX_HEX, pt + 1, KMS_SAKKE_FP_LEN);
	unhex(PY_HEX, pt + 1 + KMS_SAKKE_FP_LEN, KMS_SAKKE_FP_LEN);
}

static void rfc_z(uint8_t z[KMS_SAKKE_Z_LEN])
{
	unhex(Z_HEX, z, KMS_SAKKE_Z_LEN);
}

static void rfc_enc(uint8_t enc[KMS_SAKKE_ENC_LEN])
{
	unhex(RBS_HEX, enc, KMS_SAKKE_POINT_LEN);
	unhex(H_HEX, enc + KMS_SAKKE_POINT_LEN, KMS_SAKKE_SSV_LEN);
}

/* A scalar as 128 octets, for kms_sakke_public(). */
static void scalar_bytes(const BIGNUM *k, uint8_t out[KMS_SAKKE_Z_LEN])
{
	assert_true(BN_bn2binpad(k, out, KMS_SAKKE_Z_LEN) == KMS_SAKKE_Z_LEN);
}

static int setup(void **state)
{
	(void)state;
	return kms_sakke_new(&sk) == KMS_OK ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	kms_sakke_free(sk);
	sk = NULL;
	return 0;
}

/* ------------------------------------------------ RFC 6508 Appendix A */

static void test_public_rfc(void **state)
{
	uint8_t z[KMS_SAKKE_Z_LEN], zs[KMS_SAKKE_POINT_LEN];
	uint8_t want[KMS_SAKKE_POINT_LEN];

	(void)state;
	rfc_z(z);
	unhex(ZS_HEX, want, sizeof(want));
	assert_int_equal(kms_sakke_public(sk, z, zs), KMS_OK);
	assert_memory_equal(zs, want, sizeof(want));
}

static void test_rsk_rfc(void **state)
{
	uint8_t z[KMS_SAKKE_Z_LEN], rsk[KMS_SAKKE_POINT_LEN];
	uint8_t want[KMS_SAKKE_POINT_LEN];

	(void)state;
	rfc_z(z);
	unhex(RSK_HEX, want, sizeof(want));
	assert_int_equal(kms_sakke_rsk(sk, z, ID_B, ID_B_LEN, rsk), KMS_OK);
	assert_memory_equal(rsk, want, sizeof(want));
}

static void test_rsk_check_rfc(void **state)
{
	uint8_t zs[KMS_SAKKE_POINT_LEN], rsk[KMS_SAKKE_POINT_LEN];

	(void)state;
	unhex(ZS_HEX, zs, sizeof(zs));
	unhex(RSK_HEX, rsk, sizeof(rsk));
	assert_int_equal(kms_sakke_rsk_check(sk, zs, ID_B, ID_B_LEN, rsk),
			 KMS_OK);
}

static void test_r_rfc(void **state)
{
	uint8_t ssv[KMS_SAKKE_SSV_LEN], r[KMS_SAKKE_Z_LEN];
	uint8_t want[KMS_SAKKE_Z_LEN];

	(void)state;
	unhex(SSV_HEX, ssv, sizeof(ssv));
	unhex(R_HEX, want, sizeof(want));
	assert_int_equal(kms_sakke_derive_r(sk, ssv, ID_B, ID_B_LEN, r),
			 KMS_OK);
	assert_memory_equal(r, want, sizeof(want));
}

static void test_encap_rfc(void **state)
{
	uint8_t zs[KMS_SAKKE_POINT_LEN], ssv[KMS_SAKKE_SSV_LEN];
	uint8_t enc[KMS_SAKKE_ENC_LEN], want[KMS_SAKKE_ENC_LEN];

	(void)state;
	unhex(ZS_HEX, zs, sizeof(zs));
	unhex(SSV_HEX, ssv, sizeof(ssv));
	rfc_enc(want);
	assert_int_equal(kms_sakke_encap(sk, zs, ID_B, ID_B_LEN, ssv, enc),
			 KMS_OK);
	/* R_(b,S), then H, then the whole Encapsulated Data */
	assert_memory_equal(enc, want, KMS_SAKKE_POINT_LEN);
	assert_memory_equal(enc + KMS_SAKKE_POINT_LEN,
			    want + KMS_SAKKE_POINT_LEN, KMS_SAKKE_SSV_LEN);
	assert_memory_equal(enc, want, sizeof(want));
}

static void test_decap_rfc(void **state)
{
	uint8_t zs[KMS_SAKKE_POINT_LEN], rsk[KMS_SAKKE_POINT_LEN];
	uint8_t enc[KMS_SAKKE_ENC_LEN], ssv[KMS_SAKKE_SSV_LEN];
	uint8_t want[KMS_SAKKE_SSV_LEN];

	(void)state;
	unhex(ZS_HEX, zs, sizeof(zs));
	unhex(RSK_HEX, rsk, sizeof(rsk));
	unhex(SSV_HEX, want, sizeof(want));
	rfc_enc(enc);
	memset(ssv, 0, sizeof(ssv));
	assert_int_equal(kms_sakke_decap(sk, zs, ID_B, ID_B_LEN, rsk, enc,
					 ssv), KMS_OK);
	assert_memory_equal(ssv, want, sizeof(want));
}

/* RFC 6509's g is <P, P>. */
static void test_pair_g(void **state)
{
	uint8_t pt[KMS_SAKKE_POINT_LEN], w[KMS_SAKKE_GT_LEN];
	uint8_t want[KMS_SAKKE_GT_LEN];

	(void)state;
	base_point(pt);
	unhex(G_HEX, want, sizeof(want));
	assert_int_equal(kms_sakke_pair(sk, pt, pt, w), KMS_OK);
	assert_memory_equal(w, want, sizeof(want));
}

/* w = <R_(b,S), K_(b,S)> is the RFC's g^r (and symmetric). */
static void test_pair_w(void **state)
{
	uint8_t r[KMS_SAKKE_POINT_LEN], k[KMS_SAKKE_POINT_LEN];
	uint8_t w[KMS_SAKKE_GT_LEN], want[KMS_SAKKE_GT_LEN];

	(void)state;
	unhex(RBS_HEX, r, sizeof(r));
	unhex(RSK_HEX, k, sizeof(k));
	unhex(GR_HEX, want, sizeof(want));
	assert_int_equal(kms_sakke_pair(sk, r, k, w), KMS_OK);
	assert_memory_equal(w, want, sizeof(want));
	assert_int_equal(kms_sakke_pair(sk, k, r, w), KMS_OK);
	assert_memory_equal(w, want, sizeof(want));
}

/* ----------------------------------------------------------- refusals */

static void test_decap_wrong_identity(void **state)
{
	static const uint8_t other[] = "2011-02\0tel:+447700900124";
	uint8_t zs[KMS_SAKKE_POINT_LEN], rsk[KMS_SAKKE_POINT_LEN];
	uint8_t enc[KMS_SAKKE_ENC_LEN], ssv[KMS_SAKKE_SSV_LEN];
	uint8_t keep[KMS_SAKKE_SSV_LEN];

	(void)state;
	unhex(ZS_HEX, zs, sizeof(zs));
	unhex(RSK_HEX, rsk, sizeof(rsk));
	rfc_enc(enc);
	memset(ssv, 0xA5, sizeof(ssv));
	memcpy(keep, ssv, sizeof(keep));
	assert_int_equal(kms_sakke_decap(sk, zs, other, sizeof(other), rsk,
					 enc, ssv), KMS_ERR_AUTH);
	assert_memory_equal(ssv, keep, sizeof(keep));       /* untouched */
}

static void test_decap_tampered(void **state)
{
	uint8_t zs[KMS_SAKKE_POINT_LEN], rsk[KMS_SAKKE_POINT_LEN];
	uint8_t enc[KMS_SAKKE_ENC_LEN], bad[KMS_SAKKE_ENC_LEN];
	uint8_t ssv[KMS_SAKKE_SSV_LEN], keep[KMS_SAKKE_SSV_LEN];

	(void)state;
	unhex(ZS_HEX, zs, sizeof(zs));
	unhex(RSK_HEX, rsk, sizeof(rsk));
	rfc_enc(enc);
	memset(ssv, 0x5A, sizeof(ssv));
	memcpy(keep, ssv, sizeof(keep));

	/* a bit of R's x: off the curve */
	memcpy(bad, enc, sizeof(bad));
	bad[1 + 77] ^= 0x10;
	assert_int_equal(kms_sakke_decap(sk, zs, ID_B, ID_B_LEN, rsk, bad,
					 ssv), KMS_ERR_MALFORMED);
	/* a bit of R's y */
	memcpy(bad, enc, sizeof(bad));
	bad[KMS_SAKKE_POINT_LEN - 1] ^= 0x01;
	assert_int_equal(kms_sakke_decap(sk, zs, ID_B, ID_B_LEN, rsk, bad,
					 ssv), KMS_ERR_MALFORMED);
	/* the prefix */
	memcpy(bad, enc, sizeof(bad));
	bad[0] = 0x02;
	assert_int_equal(kms_sakke_decap(sk, zs, ID_B, ID_B_LEN, rsk, bad,
					 ssv), KMS_ERR_MALFORMED);
	/* a bit of H: decrypts to another SSV, whose r does not give R */
	memcpy(bad, enc, sizeof(bad));
	bad[KMS_SAKKE_POINT_LEN + 3] ^= 0x40;
	assert_int_equal(kms_sakke_decap(sk, zs, ID_B, ID_B_LEN, rsk, bad,
					 ssv), KMS_ERR_AUTH);
	/* R replaced by another point of order q (-R) */
	memcpy(bad, enc, sizeof(bad));
	{
		uint8_t y[KMS_SAKKE_FP_LEN], p[KMS_SAKKE_FP_LEN];
		BIGNUM *bp = BN_bin2bn(NULL, 0, NULL), *by = NULL;

		unhex(P_HEX, p, sizeof(p));
		memcpy(y, bad + 1 + KMS_SAKKE_FP_LEN, sizeof(y));
		assert_non_null(bp);
		assert_non_null(BN_bin2bn(p, sizeof(p), bp));
		by = BN_bin2bn(y, sizeof(y), NULL);
		assert_non_null(by);
		assert_true(BN_sub(by, bp, by));
		assert_true(BN_bn2binpad(by, bad + 1 + KMS_SAKKE_FP_LEN,
					 KMS_SAKKE_FP_LEN) > 0);
		BN_free(bp);
		BN_free(by);
	}
	assert_int_equal(kms_sakke_decap(sk, zs, ID_B, ID_B_LEN, rsk, bad,
					 ssv), KMS_ERR_AUTH);
	assert_memory_equal(ssv, keep, sizeof(keep));
}

static void test_rsk_check_wrong(void **state)
{
	static const uint8_t other[] = "2011-02\0tel:+447700900124";
	uint8_t z[KMS_SAKKE_Z_LEN], zs[KMS_SAKKE_POINT_LEN];
	uint8_t rsk[KMS_SAKKE_POINT_LEN], bad[KMS_SAKKE_POINT_LEN];

	(void)state;
	rfc_z(z);
	unhex(ZS_HEX, zs, sizeof(zs));
	unhex(RSK_HEX, rsk, sizeof(rsk));
	/* the RFC's RSK for another identity */
	assert_int_equal(kms_sakke_rsk_check(sk, zs, other, sizeof(other),
					     rsk), KMS_ERR_AUTH);
	/* a valid RSK of another identity for b */
	assert_int_equal(kms_sakke_rsk(sk, z, other, sizeof(other), bad),
			 KMS_OK);
	assert_int_equal(kms_sakke_rsk_check(sk, zs, other, sizeof(other),
					     bad), KMS_OK);
	assert_int_equal(kms_sakke_rsk_check(sk, zs, ID_B, ID_B_LEN, bad),
			 KMS_ERR_AUTH);
	/* P itself, a point of order q that is no RSK */
	base_point(bad);
	assert_int_equal(kms_sakke_rsk_check(sk, zs, ID_B, ID_B_LEN, bad),
			 KMS_ERR_AUTH);
	/* a flipped bit: off the curve */
	memcpy(bad, rsk, sizeof(bad));
	bad[100] ^= 0x04;
	assert_int_equal(kms_sakke_rsk_check(sk, zs, ID_B, ID_B_LEN, bad),
			 KMS_ERR_MALFORMED);
	/* a wrong KMS public key */
	memcpy(bad, zs, sizeof(bad));
	bad[KMS_SAKKE_POINT_LEN - 1] ^= 0x01;
	assert_int_equal(kms_sakke_rsk_check(sk, bad, ID_B, ID_B_LEN, rsk),
			 KMS_ERR_MALFORMED);
}

/*
 * Points on E that are not of order q: P + T with T = (0, 0) of order 2,
 * built with OpenSSL's EC on the same curve; and (0, 0) itself.
 */
static void test_not_in_subgroup(void **state)
{
	uint8_t pp[KMS_SAKKE_FP_LEN], pt[KMS_SAKKE_POINT_LEN];
	uint8_t bad[KMS_SAKKE_POINT_LEN], w[KMS_SAKKE_GT_LEN];
	uint8_t zs[KMS_SAKKE_POINT_LEN], rsk[KMS_SAKKE_POINT_LEN];
	uint8_t enc[KMS_SAKKE_ENC_LEN], ssv[KMS_SAKKE_SSV_LEN];
	BN_CTX *c = BN_CTX_new();
	BIGNUM *p, *a, *b, *x, *y;
	EC_GROUP *grp;
	EC_POINT *P, *T;

	(void)state;
	assert_non_null(c);
	p = BN_new();
	a = BN_new();
	b = BN_new();
	x = BN_new();
	y = BN_new();
	assert_true(p && a && b && x && y);
	unhex(P_HEX, pp, sizeof(pp));
	assert_non_null(BN_bin2bn(pp, sizeof(pp), p));
	assert_true(BN_sub(a, p, BN_value_one()) && BN_sub_word(a, 2));
	BN_zero(b);
	grp = EC_GROUP_new_curve_GFp(p, a, b, c);
	assert_non_null(grp);
	P = EC_POINT_new(grp);
	T = EC_POINT_new(grp);
	assert_true(P && T);
	base_point(pt);
	assert_non_null(BN_bin2bn(pt + 1, KMS_SAKKE_FP_LEN, x));
	assert_non_null(BN_bin2bn(pt + 1 + KMS_SAKKE_FP_LEN, KMS_SAKKE_FP_LEN,
				  y));
	assert_true(EC_POINT_set_affine_coordinates(grp, P, x, y, c));
	BN_zero(x);
	BN_zero(y);
	assert_true(EC_POINT_set_affine_coordinates(grp, T, x, y, c));
	assert_true(EC_POINT_add(grp, T, P, T, c));
	assert_true(EC_POINT_get_affine_coordinates(grp, T, x, y, c));
	bad[0] = 0x04;
	assert_true(BN_bn2binpad(x, bad + 1, KMS_SAKKE_FP_LEN) > 0);
	assert_true(BN_bn2binpad(y, bad + 1 + KMS_SAKKE_FP_LEN,
				 KMS_SAKKE_FP_LEN) > 0);

	/* P + T is on E: accepted as the evaluation point, refused looped */
	assert_int_equal(kms_sakke_pair(sk, bad, pt, w), KMS_ERR_MALFORMED);
	assert_int_equal(kms_sakke_pair(sk, pt, bad, w), KMS_OK);
	/* as R_(b,S) */
	unhex(ZS_HEX, zs, sizeof(zs));
	unhex(RSK_HEX, rsk, sizeof(rsk));
	rfc_enc(enc);
	memcpy(enc, bad, KMS_SAKKE_POINT_LEN);
	assert_int_equal(kms_sakke_decap(sk, zs, ID_B, ID_B_LEN, rsk, enc,
					 ssv), KMS_ERR_MALFORMED);
	/* as an RSK */
	assert_int_equal(kms_sakke_rsk_check(sk, zs, ID_B, ID_B_LEN, bad),
			 KMS_ERR_MALFORMED);
	/* (0, 0) */
	memset(bad, 0, sizeof(bad));
	bad[0] = 0x04;
	assert_int_equal(kms_sakke_pair(sk, pt, bad, w), KMS_ERR_MALFORMED);
	/* a coordinate equal to p */
	memcpy(bad, pt, sizeof(bad));
	memcpy(bad + 1, pp, sizeof(pp));
	assert_int_equal(kms_sakke_pair(sk, bad, pt, w), KMS_ERR_MALFORMED);

	EC_POINT_free(P);
	EC_POINT_free(T);
	EC_GROUP_free(grp);
	BN_free(p);
	BN_free(a);
	BN_free(b);
	BN_free(x);
	BN_free(y);
	BN_CTX_free(c);
}

static void test_bad_args(void **state)
{
	uint8_t z[KMS_SAKKE_Z_LEN], zs[KMS_SAKKE_POINT_LEN];
	uint8_t rsk[KMS_SAKKE_POINT_LEN], enc[KMS_SAKKE_ENC_LEN];
	uint8_t ssv[KMS_SAKKE_SSV_LEN], big[KMS_SAKKE_ID_MAX + 1];
	uint8_t out[KMS_SAKKE_POINT_LEN], keep[KMS_SAKKE_POINT_LEN];

	(void)state;
	rfc_z(z);
	unhex(ZS_HEX, zs, sizeof(zs));
	unhex(RSK_HEX, rsk, sizeof(rsk));
	unhex(SSV_HEX, ssv, sizeof(ssv));
	memset(big, 'x', sizeof(big));
	memset(out, 0xEE, sizeof(out));
	memcpy(keep, out, sizeof(keep));

	/* identifiers: empty, too long */
	assert_int_equal(kms_sakke_rsk(sk, z, ID_B, 0, out), KMS_ERR_INVAL);
	assert_int_equal(kms_sakke_rsk(sk, z, big, sizeof(big), out),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_sakke_encap(sk, zs, big, sizeof(big), ssv, enc),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_sakke_decap(sk, zs, NULL, 5, rsk, enc, ssv),
			 KMS_ERR_INVAL);
	assert_int_equal(kms_sakke_rsk_check(sk, zs, ID_B, 0, rsk),
			 KMS_ERR_INVAL);
	/* the longest identifier is fine */
	assert_int_equal(kms_sakke_rsk(sk, z, big, KMS_SAKKE_ID_MAX, out),
			 KMS_OK);
	memcpy(out, keep, sizeof(out));

	/* z outside [2, q-1] */
	memset(z, 0, sizeof(z));
	assert_int_equal(kms_sakke_public(sk, z, out), KMS_ERR_INVAL);
	z[KMS_SAKKE_Z_LEN - 1] = 1;
	assert_int_equal(kms_sakke_public(sk, z, out), KMS_ERR_INVAL);
	unhex(Q_HEX, z, sizeof(z));
	assert_int_equal(kms_sakke_public(sk, z, out), KMS_ERR_INVAL);
	assert_int_equal(kms_sakke_rsk(sk, z, ID_B, ID_B_LEN, out),
			 KMS_ERR_INVAL);
	memset(z, 0xFF, sizeof(z));
	assert_int_equal(kms_sakke_public(sk, z, out), KMS_ERR_INVAL);
	assert_memory_equal(out, keep, sizeof(keep));
	/* z = 2 is the smallest accepted */
	memset(z, 0, sizeof(z));
	z[KMS_SAKKE_Z_LEN - 1] = 2;
	assert_int_equal(kms_sakke_public(sk, z, out), KMS_OK);

	/* a bad KMS public key for the sender */
	zs[0] = 0x03;
	assert_int_equal(kms_sakke_encap(sk, zs, ID_B, ID_B_LEN, ssv, enc),
			 KMS_ERR_MALFORMED);
}

/* ---------------------------------------------- round trips, bilinear */

static void test_random_roundtrip(void **state)
{
	uint8_t z[KMS_SAKKE_Z_LEN], zs[KMS_SAKKE_POINT_LEN];
	uint8_t rsk[KMS_SAKKE_POINT_LEN], enc[KMS_SAKKE_ENC_LEN];
	uint8_t ssv[KMS_SAKKE_SSV_LEN], got[KMS_SAKKE_SSV_LEN];
	uint8_t id[40];
	int i;

	(void)state;
	/* a fresh z below q: top octet cleared keeps it under 2^1016 < q */
	assert_int_equal(RAND_bytes(z, sizeof(z)), 1);
	z[0] = 0;
	z[1] = 0x01;
	assert_int_equal(kms_sakke_public(sk, z, zs), KMS_OK);
	for (i = 0; i < 3; i++) {
		snprintf((char *)id, sizeof(id), "2026-01%ctel:+4477009001%02d",
			 0, i);
		assert_int_equal(kms_sakke_rsk(sk, z, id, sizeof(id), rsk),
				 KMS_OK);
		assert_int_equal(kms_sakke_rsk_check(sk, zs, id, sizeof(id),
						     rsk), KMS_OK);
		assert_int_equal(RAND_bytes(ssv, sizeof(ssv)), 1);
		assert_int_equal(kms_sakke_encap(sk, zs, id, sizeof(id), ssv,
						 enc), KMS_OK);
		memset(got, 0, sizeof(got));
		assert_int_equal(kms_sakke_decap(sk, zs, id, sizeof(id), rsk,
						 enc, got), KMS_OK);
		assert_memory_equal(got, ssv, sizeof(ssv));
	}
	/* the longest identifier accepted */
	{
		static uint8_t big[KMS_SAKKE_ID_MAX];

		memset(big, 0xC3, sizeof(big));
		assert_int_equal(kms_sakke_rsk(sk, z, big, sizeof(big), rsk),
				 KMS_OK);
		assert_int_equal(kms_sakke_encap(sk, zs, big, sizeof(big), ssv,
						 enc), KMS_OK);
		memset(got, 0, sizeof(got));
		assert_int_equal(kms_sakke_decap(sk, zs, big, sizeof(big), rsk,
						 enc, got), KMS_OK);
		assert_memory_equal(got, ssv, sizeof(ssv));
	}
}

/* <[a]P, [b]P> = <[ab]P, P> = <P, [ab]P> = <[b]P, [a]P> */
static void test_bilinear(void **state)
{
	uint8_t sa[KMS_SAKKE_Z_LEN], sb[KMS_SAKKE_Z_LEN], sab[KMS_SAKKE_Z_LEN];
	uint8_t ap[KMS_SAKKE_POINT_LEN], bp[KMS_SAKKE_POINT_LEN];
	uint8_t abp[KMS_SAKKE_POINT_LEN], pt[KMS_SAKKE_POINT_LEN];
	uint8_t w1[KMS_SAKKE_GT_LEN], w2[KMS_SAKKE_GT_LEN];
	uint8_t w3[KMS_SAKKE_GT_LEN], w4[KMS_SAKKE_GT_LEN];
	uint8_t g[KMS_SAKKE_GT_LEN];
	BIGNUM *a = BN_new(), *b = BN_new(), *ab = BN_new();
	BN_CTX *c = BN_CTX_new();

	(void)state;
	assert_true(a && b && ab && c);
	assert_true(BN_rand(a, 32, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY));
	assert_true(BN_rand(b, 32, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY));
	assert_true(BN_mul(ab, a, b, c));
	scalar_bytes(a, sa);
	scalar_bytes(b, sb);
	scalar_bytes(ab, sab);
	base_point(pt);
	assert_int_equal(kms_sakke_public(sk, sa, ap), KMS_OK);
	assert_int_equal(kms_sakke_public(sk, sb, bp), KMS_OK);
	assert_int_equal(kms_sakke_public(sk, sab, abp), KMS_OK);
	assert_int_equal(kms_sakke_pair(sk, ap, bp, w1), KMS_OK);
	assert_int_equal(kms_sakke_pair(sk, abp, pt, w2), KMS_OK);
	assert_int_equal(kms_sakke_pair(sk, pt, abp, w3), KMS_OK);
	assert_int_equal(kms_sakke_pair(sk, bp, ap, w4), KMS_OK);
	assert_memory_equal(w1, w2, sizeof(w1));
	assert_memory_equal(w1, w3, sizeof(w1));
	assert_memory_equal(w1, w4, sizeof(w1));
	unhex(G_HEX, g, sizeof(g));
	assert_memory_not_equal(w1, g, sizeof(g));
	BN_free(a);
	BN_free(b);
	BN_free(ab);
	BN_CTX_free(c);
}

/* ------------------------------- scalar multiples against OpenSSL's EC */

/* The curve in OpenSSL's EC (no generator: its own variable-time wNAF). */
struct ref {
	BN_CTX *c;
	EC_GROUP *grp;
	BIGNUM *p, *q, *k, *x, *y;
};

static void ref_init(struct ref *r)
{
	uint8_t buf[KMS_SAKKE_FP_LEN];
	BIGNUM *a, *b;

	r->c = BN_CTX_new();
	r->p = BN_new();
	r->q = BN_new();
	r->k = BN_new();
	r->x = BN_new();
	r->y = BN_new();
	a = BN_new();
	b = BN_new();
	assert_true(r->c && r->p && r->q && r->k && r->x && r->y && a && b);
	unhex(P_HEX, buf, sizeof(buf));
	assert_non_null(BN_bin2bn(buf, sizeof(buf), r->p));
	unhex(Q_HEX, buf, sizeof(buf));
	assert_non_null(BN_bin2bn(buf, sizeof(buf), r->q));
	assert_true(BN_sub(a, r->p, BN_value_one()) && BN_sub_word(a, 2));
	BN_zero(b);
	r->grp = EC_GROUP_new_curve_GFp(r->p, a, b, r->c);
	assert_non_null(r->grp);
	BN_free(a);
	BN_free(b);
}

static void ref_free(struct ref *r)
{
	EC_GROUP_free(r->grp);
	BN_free(r->p);
	BN_free(r->q);
	BN_free(r->k);
	BN_free(r->x);
	BN_free(r->y);
	BN_CTX_free(r->c);
}

static EC_POINT *ref_point(struct ref *r, const uint8_t in[KMS_SAKKE_POINT_LEN])
{
	EC_POINT *pt = EC_POINT_new(r->grp);

	assert_non_null(pt);
	assert_non_null(BN_bin2bn(in + 1, KMS_SAKKE_FP_LEN, r->x));
	assert_non_null(BN_bin2bn(in + 1 + KMS_SAKKE_FP_LEN, KMS_SAKKE_FP_LEN,
				  r->y));
	assert_true(EC_POINT_set_affine_coordinates(r->grp, pt, r->x, r->y,
						    r->c));
	return pt;
}

/* 0 for O (no encoding) */
static int ref_encode(struct ref *r, const EC_POINT *pt,
		      uint8_t out[KMS_SAKKE_POINT_LEN])
{
	if (EC_POINT_is_at_infinity(r->grp, pt))
		return 0;
	assert_true(EC_POINT_get_affine_coordinates(r->grp, pt, r->x, r->y,
						    r->c));
	out[0] = 0x04;
	assert_true(BN_bn2binpad(r->x, out + 1, KMS_SAKKE_FP_LEN) > 0);
	assert_true(BN_bn2binpad(r->y, out + 1 + KMS_SAKKE_FP_LEN,
				 KMS_SAKKE_FP_LEN) > 0);
	return 1;
}

/* a point of order 4: [q]X for points X until one has it */
static EC_POINT *ref_order4(struct ref *r)
{
	EC_POINT *pt = EC_POINT_new(r->grp), *t = EC_POINT_new(r->grp);
	unsigned long x;

	assert_true(pt && t);
	for (x = 5;; x++) {
		assert_true(BN_set_word(r->x, x));
		if (!EC_POINT_set_compressed_coordinates(r->grp, pt, r->x, 0,
							 r->c))
			continue;
		assert_true(EC_POINT_mul(r->grp, pt, NULL, pt, r->q, r->c));
		assert_true(EC_POINT_dbl(r->grp, t, pt, r->c));
		if (!EC_POINT_is_at_infinity(r->grp, t))
			break;
	}
	EC_POINT_free(t);
	return pt;
}

/* [z]P for z near the ends of [2, q-1] and at window edges; RSKs +-P */
static void test_public_edges(void **state)
{
	static const long small[] = { 2, 3, 4, 31, 32, 33, 63, 64, 65, 1023 };
	static const long near_q[] = { 1, 2, 3, 53, 54, 55, 56, 64, 65 };
	uint8_t pt[KMS_SAKKE_POINT_LEN], z[KMS_SAKKE_Z_LEN];
	uint8_t got[KMS_SAKKE_POINT_LEN], want[KMS_SAKKE_POINT_LEN];
	struct ref r;
	EC_POINT *P, *T;
	size_t i;

	(void)state;
	ref_init(&r);
	base_point(pt);
	P = ref_point(&r, pt);
	T = EC_POINT_new(r.grp);
	assert_non_null(T);
	for (i = 0; i < 2 * 10 + 9; i++) {
		if (i < 10) {
			assert_true(BN_set_word(r.k, (BN_ULONG)small[i]));
		} else if (i < 19) {
			assert_true(BN_copy(r.k, r.q) &&
				    BN_sub_word(r.k, (BN_ULONG)near_q[i - 10]));
		} else {
			assert_true(BN_rand_range(r.k, r.q));
			if (BN_cmp(r.k, BN_value_one()) <= 0)
				continue;
			if (i & 1)      /* a short one, or an even one */
				assert_true(BN_rshift(r.k, r.k, 600));
			else
				assert_true(BN_clear_bit(r.k, 0) ||
					    BN_is_zero(r.k));
			if (BN_cmp(r.k, BN_value_one()) <= 0)
				continue;
		}
		scalar_bytes(r.k, z);
		assert_int_equal(kms_sakke_public(sk, z, got), KMS_OK);
		assert_true(EC_POINT_mul(r.grp, T, NULL, P, r.k, r.c));
		assert_int_equal(ref_encode(&r, T, want), 1);
		assert_memory_equal(got, want, sizeof(want));
	}
	/* RSKs [1]P and [q-1]P: b = 5 and z = q - 4, z = q - 6 */
	{
		static const uint8_t five[] = { 0x05 };

		assert_true(BN_copy(r.k, r.q) && BN_sub_word(r.k, 4));
		scalar_bytes(r.k, z);
		assert_int_equal(kms_sakke_rsk(sk, z, five, 1, got), KMS_OK);
		assert_memory_equal(got, pt, sizeof(pt));
		assert_true(BN_sub_word(r.k, 2));
		scalar_bytes(r.k, z);
		assert_int_equal(kms_sakke_rsk(sk, z, five, 1, got), KMS_OK);
		assert_true(EC_POINT_copy(T, P) && EC_POINT_invert(r.grp, T,
								     r.c));
		assert_int_equal(ref_encode(&r, T, want), 1);
		assert_memory_equal(got, want, sizeof(want));
	}
	EC_POINT_free(P);
	EC_POINT_free(T);
	ref_free(&r);
}

/*
 * R = [r]([b]P + Z) for a Z with a component of order 2 or 4 ([b]P + Z of
 * order 2q, 4q), and for b = q with Z of order 4 ([b]P + Z = Z): the same
 * R as OpenSSL's, or KMS_ERR_CRYPTO when that is O.
 */
static void test_encap_any_order(void **state)
{
	uint8_t zs[KMS_SAKKE_POINT_LEN], bad[KMS_SAKKE_POINT_LEN];
	uint8_t pt[KMS_SAKKE_POINT_LEN], want[KMS_SAKKE_POINT_LEN];
	uint8_t enc[KMS_SAKKE_ENC_LEN], ssv[KMS_SAKKE_SSV_LEN];
	uint8_t rb[KMS_SAKKE_Z_LEN], qid[KMS_SAKKE_Z_LEN];
	struct ref r;
	EC_POINT *P, *Z, *T4, *T, *A;
	int i, kind, ret;

	(void)state;
	ref_init(&r);
	base_point(pt);
	P = ref_point(&r, pt);
	unhex(ZS_HEX, zs, sizeof(zs));
	Z = ref_point(&r, zs);
	T4 = ref_order4(&r);
	T = EC_POINT_new(r.grp);
	A = EC_POINT_new(r.grp);
	assert_true(T && A);
	unhex(Q_HEX, qid, sizeof(qid));
	for (kind = 0; kind < 3; kind++) {
		const uint8_t *id = kind == 2 ? qid : ID_B;
		size_t id_len = kind == 2 ? sizeof(qid) : ID_B_LEN;

		/* the bad Z: Z + [2]T4, Z + T4, T4 */
		if (kind == 0)
			assert_true(EC_POINT_dbl(r.grp, A, T4, r.c) &&
				    EC_POINT_add(r.grp, A, A, Z, r.c));
		else if (kind == 1)
			assert_true(EC_POINT_add(r.grp, A, T4, Z, r.c));
		else
			assert_true(EC_POINT_copy(A, T4));
		assert_int_equal(ref_encode(&r, A, bad), 1);
		assert_non_null(BN_bin2bn(id, (int)id_len, r.k));
		assert_true(EC_POINT_mul(r.grp, T, NULL, P, r.k, r.c) &&
			    EC_POINT_add(r.grp, T, T, A, r.c));
		for (i = 0; i < 6; i++) {
			memset(ssv, 0x11 * (i + 1), sizeof(ssv));
			assert_int_equal(kms_sakke_derive_r(sk, ssv, id, id_len,
							    rb), KMS_OK);
			assert_non_null(BN_bin2bn(rb, sizeof(rb), r.k));
			assert_true(EC_POINT_mul(r.grp, A, NULL, T, r.k, r.c));
			ret = kms_sakke_encap(sk, bad, id, id_len, ssv, enc);
			if (!ref_encode(&r, A, want)) {
				assert_int_equal(ret, KMS_ERR_CRYPTO);
				continue;
			}
			assert_int_equal(ret, KMS_OK);
			assert_memory_equal(enc, want, sizeof(want));
		}
	}
	EC_POINT_free(P);
	EC_POINT_free(Z);
	EC_POINT_free(T4);
	EC_POINT_free(T);
	EC_POINT_free(A);
	ref_free(&r);
}

/* ------------------------------------------------------ prepared RSK */

static void test_prepared_rfc(void **state)
{
	static const uint8_t other[] = "2011-02\0tel:+447700900124";
	uint8_t zs[KMS_SAKKE_POINT_LEN], rsk[KMS_SAKKE_POINT_LEN];
	uint8_t enc[KMS_SAKKE_ENC_LEN], bad[KMS_SAKKE_ENC_LEN];
	uint8_t ssv[KMS_SAKKE_SSV_LEN], want[KMS_SAKKE_SSV_LEN];
	uint8_t keep[KMS_SAKKE_SSV_LEN], pt[KMS_SAKKE_POINT_LEN];
	struct kms_sakke_rskp *k = NULL, *k2 = NULL;
	size_t i;
	static const size_t flips[] = { 1 + 77, KMS_SAKKE_POINT_LEN - 1,
					KMS_SAKKE_POINT_LEN + 3 };

	(void)state;
	unhex(ZS_HEX, zs, sizeof(zs));
	unhex(RSK_HEX, rsk, sizeof(rsk));
	unhex(SSV_HEX, want, sizeof(want));
	rfc_enc(enc);
	assert_int_equal(kms_sakke_rsk_prepare(sk, zs, ID_B, ID_B_LEN, rsk,
					       &k), KMS_OK);
	assert_non_null(k);
	memset(ssv, 0, sizeof(ssv));
	assert_int_equal(kms_sakke_decap_prepared(sk, k, enc, ssv), KMS_OK);
	assert_memory_equal(ssv, want, sizeof(want));

	/* the same verdicts as kms_sakke_decap() on tampered input */
	memset(ssv, 0x5A, sizeof(ssv));
	memcpy(keep, ssv, sizeof(keep));
	for (i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
		memcpy(bad, enc, sizeof(bad));
		bad[flips[i]] ^= 0x10;
		assert_int_equal(kms_sakke_decap_prepared(sk, k, bad, ssv),
				 kms_sakke_decap(sk, zs, ID_B, ID_B_LEN, rsk,
						 bad, ssv));
	}
	memcpy(bad, enc, sizeof(bad));
	bad[0] = 0x02;
	assert_int_equal(kms_sakke_decap_prepared(sk, k, bad, ssv),
			 KMS_ERR_MALFORMED);
	/* R = P: order q, wrong; R = (0, 0) + P: not of order q */
	memcpy(bad, enc, sizeof(bad));
	base_point(bad);
	assert_int_equal(kms_sakke_decap_prepared(sk, k, bad, ssv),
			 KMS_ERR_AUTH);
	{
		struct ref r;
		EC_POINT *P, *T2;

		ref_init(&r);
		P = ref_point(&r, bad);
		T2 = EC_POINT_new(r.grp);
		assert_non_null(T2);
		BN_zero(r.x);
		BN_zero(r.y);
		assert_true(EC_POINT_set_affine_coordinates(r.grp, T2, r.x,
							    r.y, r.c));
		assert_true(EC_POINT_add(r.grp, P, P, T2, r.c));
		assert_int_equal(ref_encode(&r, P, bad), 1);
		assert_int_equal(kms_sakke_decap_prepared(sk, k, bad, ssv),
				 KMS_ERR_MALFORMED);
		assert_int_equal(kms_sakke_decap(sk, zs, ID_B, ID_B_LEN, rsk,
						 bad, ssv), KMS_ERR_MALFORMED);
		/* a Z_S with a component of order 2 is refused */
		EC_POINT_free(P);
		P = ref_point(&r, zs);
		assert_true(EC_POINT_add(r.grp, P, P, T2, r.c));
		assert_int_equal(ref_encode(&r, P, pt), 1);
		assert_int_equal(kms_sakke_rsk_prepare(sk, pt, ID_B, ID_B_LEN,
						       rsk, &k2),
				 KMS_ERR_MALFORMED);
		EC_POINT_free(P);
		EC_POINT_free(T2);
		ref_free(&r);
	}
	assert_memory_equal(ssv, keep, sizeof(keep));

	/* refusals when preparing */
	assert_int_equal(kms_sakke_rsk_prepare(sk, zs, other, sizeof(other),
					       rsk, &k2), KMS_ERR_AUTH);
	base_point(pt);
	assert_int_equal(kms_sakke_rsk_prepare(sk, zs, ID_B, ID_B_LEN, pt,
					       &k2), KMS_ERR_AUTH);
	memcpy(pt, rsk, sizeof(pt));
	pt[100] ^= 0x04;
	assert_int_equal(kms_sakke_rsk_prepare(sk, zs, ID_B, ID_B_LEN, pt,
					       &k2), KMS_ERR_MALFORMED);
	assert_int_equal(kms_sakke_rsk_prepare(sk, zs, ID_B, 0, rsk, &k2),
			 KMS_ERR_INVAL);
	assert_null(k2);
	assert_int_equal(kms_sakke_decap_prepared(sk, NULL, enc, ssv),
			 KMS_ERR_INVAL);
	kms_sakke_rskp_free(k);
	kms_sakke_rskp_free(NULL);
}

static void test_prepared_random(void **state)
{
	uint8_t z[KMS_SAKKE_Z_LEN], zs[KMS_SAKKE_POINT_LEN];
	uint8_t rsk[KMS_SAKKE_POINT_LEN], enc[KMS_SAKKE_ENC_LEN];
	uint8_t ssv[KMS_SAKKE_SSV_LEN], got[KMS_SAKKE_SSV_LEN];
	uint8_t got2[KMS_SAKKE_SSV_LEN];
	static const uint8_t id[] = "2026-01\0sip:prepared@example.org";
	struct kms_sakke_rskp *k = NULL;
	int i;

	(void)state;
	assert_int_equal(RAND_bytes(z, sizeof(z)), 1);
	z[0] = 0;
	z[1] = 0x01;
	assert_int_equal(kms_sakke_public(sk, z, zs), KMS_OK);
	assert_int_equal(kms_sakke_rsk(sk, z, id, sizeof(id), rsk), KMS_OK);
	assert_int_equal(kms_sakke_rsk_prepare(sk, zs, id, sizeof(id), rsk,
					       &k), KMS_OK);
	for (i = 0; i < 3; i++) {
		assert_int_equal(RAND_bytes(ssv, sizeof(ssv)), 1);
		assert_int_equal(kms_sakke_encap(sk, zs, id, sizeof(id), ssv,
						 enc), KMS_OK);
		memset(got, 0, sizeof(got));
		memset(got2, 0, sizeof(got2));
		assert_int_equal(kms_sakke_decap_prepared(sk, k, enc, got),
				 KMS_OK);
		assert_int_equal(kms_sakke_decap(sk, zs, id, sizeof(id), rsk,
						 enc, got2), KMS_OK);
		assert_memory_equal(got, ssv, sizeof(ssv));
		assert_memory_equal(got2, ssv, sizeof(ssv));
	}
	kms_sakke_rskp_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_public_rfc),
		cmocka_unit_test(test_rsk_rfc),
		cmocka_unit_test(test_rsk_check_rfc),
		cmocka_unit_test(test_r_rfc),
		cmocka_unit_test(test_encap_rfc),
		cmocka_unit_test(test_decap_rfc),
		cmocka_unit_test(test_pair_g),
		cmocka_unit_test(test_pair_w),
		cmocka_unit_test(test_decap_wrong_identity),
		cmocka_unit_test(test_decap_tampered),
		cmocka_unit_test(test_rsk_check_wrong),
		cmocka_unit_test(test_not_in_subgroup),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_random_roundtrip),
		cmocka_unit_test(test_bilinear),
		cmocka_unit_test(test_public_edges),
		cmocka_unit_test(test_encap_any_order),
		cmocka_unit_test(test_prepared_rfc),
		cmocka_unit_test(test_prepared_random),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
