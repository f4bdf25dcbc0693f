// SPDX-License-Identifier: Apache-2.0
/*
 * kms-loadgen's acknowledged-deposit log and its check (lg_acklog.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "kms_err.h"
#include "kms_keyfile.h"
#include "kms_token.h"
#include "lg_acklog.h"

#define VBURST 64

FILE *lg_ack_open(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	FILE *f;

	if (fd < 0 || fchmod(fd, 0600)) {
		fprintf(stderr, "kms-loadgen: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	f = fdopen(fd, "a");
	if (!f)
		close(fd);
	return f;
}

void lg_ack_write(FILE *f, const struct lg_ack *x)
{
	char kid[2 * KMS_KEY_ID_LEN + 1], k[2 * KMS_KEY_LEN + 1];
	char ea[2 * KMS_TOKEN_MAX + 1];

	kms_hex_encode(x->key_id, sizeof(x->key_id), kid);
	kms_hex_encode(x->k, sizeof(x->k), k);
	kms_hex_encode(x->ea, x->ea_len, ea);
	fprintf(f, "ack a=%u b=%u key_id=%s k_gen=%u k=%s ea=%s\n", x->a, x->b,
		kid, x->k_gen, k, ea);
	OPENSSL_cleanse(k, sizeof(k));
}

int lg_ack_close(FILE *f)
{
	int rc = fflush(f) || fsync(fileno(f)) ? -1 : 0;

	if (fclose(f))
		rc = -1;
	if (rc)
		fprintf(stderr, "kms-loadgen: ack log: %s\n", strerror(errno));
	return rc;
}

int lg_ack_read(const char *path, const struct lg_pop *pop,
		struct lg_ack **out, size_t *n, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char line[1024], kid[64], k[96], ea[2 * KMS_TOKEN_MAX + 2];
	struct lg_ack *v = NULL, *nv;
	size_t cap = 0, cnt = 0, lineno = 0;
	int rc = -1;

	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		struct lg_ack x;
		int l;

		lineno++;
		memset(&x, 0, sizeof(x));
		if (sscanf(line, "ack a=%u b=%u key_id=%63s k_gen=%u k=%95s "
			   "ea=%603s", &x.a, &x.b, kid, &x.k_gen, k, ea) != 6 ||
		    x.a >= pop->nusers || x.b >= pop->nusers ||
		    kms_hex_decode(kid, x.key_id, sizeof(x.key_id)) !=
			    KMS_KEY_ID_LEN ||
		    kms_hex_decode(k, x.k, sizeof(x.k)) != KMS_KEY_LEN ||
		    (l = kms_hex_decode(ea, x.ea, sizeof(x.ea))) < 1) {
			snprintf(err, errlen, "%s:%zu: not an ack line (or not "
				 "for this population)", path, lineno);
			goto out;
		}
		x.ea_len = (uint16_t)l;
		if (cnt == cap) {
			cap = cap ? 2 * cap : 1024;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				snprintf(err, errlen, "out of memory");
				goto out;
			}
			v = nv;
		}
		v[cnt++] = x;
		OPENSSL_cleanse(&x, sizeof(x));
	}
	rc = 0;
out:
	OPENSSL_cleanse(line, sizeof(line));
	OPENSSL_cleanse(k, sizeof(k));
	fclose(f);
	if (rc) {
		if (v)
			OPENSSL_cleanse(v, cnt * sizeof(*v));
		free(v);
		return rc;
	}
	*out = v;
	*n = cnt;
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct kms_id pid(const struct lg_party *p)
{
	struct kms_id id = { (const uint8_t *)p->id, p->id_len };

	return id;
}

void lg_ack_verify(struct lg_io *io, const struct lg_pop *pop,
		   const struct lg_ack *acks, size_t n, unsigned timeout_ms,
		   unsigned tries, struct lg_ack_result *res)
{
	static uint8_t req[VBURST][KMS_DGRAM_MAX], rep[VBURST][LG_DGRAM_MAX];
	uint8_t nonce[VBURST][KMS_NONCE_LEN], eb[KMS_TOKEN_MAX];
	uint8_t *pending = calloc(n ? n : 1, 1); /* 1: still to check */
	uint32_t round = 0;

	memset(res, 0, sizeof(*res));
	if (!pending)
		return;
	memset(pending, 1, n);
	for (unsigned t = 0; t < tries; t++) {
		size_t i = 0;

		while (i < n) {
			struct lg_dgram d[VBURST];
			size_t idx[VBURST];
			unsigned cnt = 0, got = 0;
			uint32_t tag = (++round & 0xffffu) << 16;
			uint64_t deadline;

			for (; i < n && cnt < VBURST; i++) {
				const struct lg_ack *x = &acks[i];
				const struct lg_party *a = &pop->users[x->a],
						      *b = &pop->users[x->b];
				struct kms_id ia = pid(a), ib = pid(b);
				int lb, l;

				if (!pending[i])
					continue;
				RAND_bytes(nonce[cnt], KMS_NONCE_LEN);
				lb = kms_token_seal(KMS_ROLE_B, &ib, b->gen, b->key,
						    kms_now_ms(), nonce[cnt], &ia,
						    &ib, eb, sizeof(eb));
				l = lb < 0 ? lb : kms_retrieve_req_encode(
					tag | cnt, &ia, &ib, x->key_id, x->ea,
					x->ea_len, eb, (size_t)lb, req[cnt],
					KMS_DGRAM_MAX);
				if (l < 0)
					continue;
				d[cnt].buf = req[cnt];
				d[cnt].len = (uint16_t)l;
				idx[cnt++] = i;
			}
			if (!cnt || io->send(io, d, cnt) < 0)
				break;
			deadline = now_ns() + (uint64_t)timeout_ms * 1000000;
			while (got < cnt && now_ns() < deadline) {
				struct lg_dgram r[VBURST];
				int k;

				for (unsigned j = 0; j < VBURST; j++) {
					r[j].buf = rep[j];
					r[j].cap = LG_DGRAM_MAX;
				}
				k = io->recv(io, r, VBURST, 1000);
				for (int j = 0; j < k; j++) {
					const struct lg_ack *x;
					struct kms_id ia, ib;
					struct kms_resp rp;
					uint8_t kk[KMS_KEY_LEN];
					unsigned s;

					if (kms_resp_parse(r[j].buf, r[j].len, &rp) ||
					    (rp.hdr.txid & 0xffff0000u) != tag)
						continue;
					s = rp.hdr.txid & 0xffffu;
					if (s >= cnt || !pending[idx[s]])
						continue;
					x = &acks[idx[s]];
					ia = pid(&pop->users[x->a]);
					ib = pid(&pop->users[x->b]);
					pending[idx[s]] = 0;
					got++;
					res->checked++;
					if (rp.hdr.type == KMS_T_ERROR) {
						if (rp.status < KMS_ST__COUNT)
							res->by_status[rp.status]++;
						continue;
					}
					if (rp.hdr.type != KMS_T_RETRIEVE_RESP ||
					    memcmp(rp.key_id, x->key_id,
						   KMS_KEY_ID_LEN) ||
					    kms_keybox_open(&rp, KMS_ROLE_B,
							    pop->users[x->b].gen,
							    pop->users[x->b].key,
							    &ia, &ib, nonce[s], kk)) {
						res->bad_reply++;
						continue;
					}
					if (CRYPTO_memcmp(kk, x->k, KMS_KEY_LEN))
						res->mismatch++;
					else
						res->same++;
					OPENSSL_cleanse(kk, sizeof(kk));
				}
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		res->lost += pending[i];
	free(pending);
}
