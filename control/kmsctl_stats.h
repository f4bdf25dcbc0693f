/* SPDX-License-Identifier: Apache-2.0 */
/* `kmsctl stats`, for kmsctl.c. */
#ifndef KMSCTL_STATS_H
#define KMSCTL_STATS_H

#include <jansson.h>

enum kmsctl_stats_fmt { KMSCTL_STATS_TEXT, KMSCTL_STATS_JSON, KMSCTL_STATS_PROMETHEUS };

/** One control request to kmsd at @p ctl_path: its reply (json_decref it)
 *  if kmsd accepted it, else NULL after a message on stderr. */
json_t *kmsctl_call(const char *ctl_path, const char *line);

/** Ask kmsd at @p ctl_path for its counters and print them.
 *  @return the process exit status (0, or 1 with a message). */
int kmsctl_stats(const char *ctl_path, enum kmsctl_stats_fmt fmt);

/** `kmsctl policy show|set|clear` through the control socket; @p words
 *  are the verb and its NAME=VALUE words. @return the exit status (2 for
 *  a usage error). */
int kmsctl_policy(const char *ctl_path, const char *domain, const char *pair,
		  int n, char **words, int json);

#endif
