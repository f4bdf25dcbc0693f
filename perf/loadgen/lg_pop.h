/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file lg_pop.h
 * @brief The load generator's population file, as `kmsctl enroll-bulk`
 *        writes it.
 *
 * Text, mode 0600 (it holds every party's key):
 *   # IMS KMS load-generator population. Secret: keep mode 0600.
 *   user <id> <gen> <64 hex digits>
 *   as <id> <gen> <64 hex digits>
 * One party per line, fields separated by single spaces; '#' lines and
 * blank lines are ignored. IDs are 1..128 printable bytes (kms_id_valid).
 */
#ifndef LG_POP_H
#define LG_POP_H

#include <stddef.h>
#include <stdint.h>

#include "kms_proto.h"

struct lg_party {
	char id[KMS_ID_MAX + 1];        /**< NUL-terminated */
	uint8_t id_len;
	uint32_t gen;
	uint8_t key[KMS_KEY_LEN];
};

struct lg_pop {
	struct lg_party *users;
	size_t nusers;
	struct lg_party *as;            /**< mailbox application servers */
	size_t nas;
};

/** Read @p path. Refuses a file readable by group or others, a malformed
 *  line (with its number in @p err), a duplicate id. @return 0, or -1 with
 *  a message in @p err. */
int lg_pop_read(const char *path, struct lg_pop *pop, char *err, size_t errlen);

/** Wipe every key and free. */
void lg_pop_free(struct lg_pop *pop);

#endif /* LG_POP_H */
