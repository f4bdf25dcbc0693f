/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file lg_acklog.h
 * @brief The acknowledged-deposit log of kms-loadgen (--ack-log) and its
 *        check (--verify-log): crash tests (issue 9) kill kmsd under load,
 *        restart it, and retrieve every key id it ever answered.
 *
 * One line per DEPOSIT whose reply A verified, appended and fsync'ed when
 * the run ends (the load generator is never the process that is killed):
 *   ack a=<user index> b=<user index> key_id=<hex> k_gen=<n> k=<hex> ea=<hex>
 * Indices are into the population file (the same file must be given to
 * the check). The file holds keys: it is created mode 0600.
 */
#ifndef LG_ACKLOG_H
#define LG_ACKLOG_H

#include <stdint.h>
#include <stdio.h>

#include "kms_proto.h"
#include "lg_io.h"
#include "lg_pop.h"

struct lg_ack {
	uint32_t a, b;
	uint32_t k_gen;
	uint8_t key_id[KMS_KEY_ID_LEN];
	uint8_t k[KMS_KEY_LEN];
	uint8_t ea[KMS_TOKEN_MAX];
	uint16_t ea_len;
};

/** Open @p path for appending (created 0600). NULL after a message. */
FILE *lg_ack_open(const char *path);
void lg_ack_write(FILE *f, const struct lg_ack *x);
/** Flush, fsync and close. @return 0 or -1 (message printed). */
int lg_ack_close(FILE *f);

/** Read every line of @p path (checked against @p pop). @return 0, or -1
 *  with a message in @p err. The caller frees *out. */
int lg_ack_read(const char *path, const struct lg_pop *pop,
		struct lg_ack **out, size_t *n, char *err, size_t errlen);

struct lg_ack_result {
	uint64_t checked, same, mismatch, lost, bad_reply;
	uint64_t by_status[KMS_ST__COUNT];
};

/** RETRIEVE every deposit of @p acks once as its B, in bursts, with up to
 *  @p tries attempts per deposit that got no answer; compare K. */
void lg_ack_verify(struct lg_io *io, const struct lg_pop *pop,
		   const struct lg_ack *acks, size_t n, unsigned timeout_ms,
		   unsigned tries, struct lg_ack_result *res);

#endif /* LG_ACKLOG_H */
