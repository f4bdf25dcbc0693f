/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_pidpath.h
 * @brief For test modules that leave a report file per process: "%p" in a
 *        path becomes the process id.
 */
#ifndef KMS_PIDPATH_H
#define KMS_PIDPATH_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/** Copy @p path into @p out, its first "%p" replaced by getpid(). */
static inline void kms_pid_path(const char *path, char *out, size_t cap)
{
	const char *pp = strstr(path, "%p");

	if (pp)
		snprintf(out, cap, "%.*s%ld%s", (int)(pp - path), path,
			 (long)getpid(), pp + 2);
	else
		snprintf(out, cap, "%s", path);
}

#endif /* KMS_PIDPATH_H */
