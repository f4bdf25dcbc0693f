/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_ctl.h
 * @brief kmsd's control socket: a Unix stream socket (mode 0600) that
 *        answers one command per connection, and the client kmsctl uses.
 *
 * Wire format (docs/PROTOCOL.md, "Control socket"): the client sends one
 * line, at most KMS_CTL_LINE_MAX bytes with its '\n': a command name and
 * up to KMS_CTL_ARGS_MAX arguments separated by spaces. The server answers
 * one JSON object on one line and closes: {"ok": true, ...} with the
 * command's fields, or {"ok": false, "error": "reason"}. Nothing is
 * changed by a request that is refused.
 *
 * The server runs one thread that serves connections one at a time; a
 * client that does not send its line within 2 s is dropped, so a stuck
 * client cannot hold the socket.
 */
#ifndef KMS_CTL_H
#define KMS_CTL_H

#include <stddef.h>

#include <jansson.h>

#define KMS_CTL_LINE_MAX 4096
#define KMS_CTL_ARGS_MAX 16

/** One command of the table. */
struct kms_ctl_cmd {
	const char *name;
	const char *usage;    /**< arguments and what it does, for `help` */
	int write;            /**< changes state (store, policy): the write side */
	/** Fill @p reply (an object; "ok" is added by the server). On
	 *  refusal write the reason into @p err and return non-zero. */
	int (*handler)(void *arg, int argc, char **argv, json_t *reply,
		       char *err, size_t errlen);
	void *arg;
};

struct kms_ctl;

/**
 * Listen on @p path and serve the @p n commands of @p cmds (copied; the
 * built-in "help" lists them). A stale socket file nobody listens on is
 * replaced; a path another process serves is refused.
 * @return KMS_OK, KMS_ERR_INVAL (path too long), KMS_ERR_EXISTS (another
 *         process serves @p path), KMS_ERR_IO, KMS_ERR_NOMEM.
 */
int kms_ctl_start(const char *path, const struct kms_ctl_cmd *cmds, unsigned n,
		  struct kms_ctl **out);

/** Stop the thread, remove the socket file, free. NULL is a no-op. */
void kms_ctl_stop(struct kms_ctl *c);

/**
 * Client: send @p line (no '\n') to the server at @p path and return its
 * reply, parsed, in @p reply (json_decref it).
 * @return KMS_OK, KMS_ERR_IO (no server or I/O error; @p err says which),
 *         KMS_ERR_MALFORMED (the reply is not a JSON object).
 */
int kms_ctl_call(const char *path, const char *line, json_t **reply,
		 char *err, size_t errlen);

#endif /* KMS_CTL_H */
