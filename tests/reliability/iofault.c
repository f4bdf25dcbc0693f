/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iofault.c: an LD_PRELOAD shim that makes the storage calls of a process
 * fail on command (issue 9, "injected I/O faults"; tests/reliability/
 * io_faults.sh drives it against kmsd's LMDB store).
 *
 * Wrapped: fsync, fdatasync, msync, pwrite, pwrite64, pwritev, pwritev64,
 * write, writev (LMDB 0.9 writes single pages with pwrite, runs of pages
 * with lseek + writev, the meta page with pwrite on an O_DSYNC descriptor,
 * and syncs with fdatasync; msync only with MDB_WRITEMAP).
 *
 * Environment:
 *   KMS_IOFAULT_PATH   only descriptors whose file (readlink of
 *                      /proc/self/fd/N) is this path or lies under it are
 *                      faulted; unset: nothing is (msync has no descriptor:
 *                      it is faulted whenever its op is selected).
 *   KMS_IOFAULT_ERRNO  EIO (default), ENOSPC, EDQUOT, EROFS or a number.
 *   KMS_IOFAULT_CTL    a file read at every candidate call, so a test
 *                      switches faults while the process runs:
 *                        off | missing file   pass everything through
 *                        on [OPS]             fail every matching call
 *                        after N [OPS]        let N matching calls through
 *                                             (counted from the moment the
 *                                             file's content changed), then
 *                                             fail every one
 *                      OPS: a comma list of fsync, fdatasync, msync, pwrite
 *                      (pwrite, pwrite64, pwritev), write (write, writev),
 *                      sync (the three syncs), all (the default); and
 *                      below=BYTES / from=BYTES: writes only at file offsets
 *                      below BYTES / from BYTES on (write and writev: the
 *                      descriptor's current offset). LMDB's two meta pages
 *                      are the first two pages: with 4 KiB pages "on pwrite
 *                      below=8192" fails exactly a commit's meta-page
 *                      update, "on write,pwrite from=8192" only its data
 *                      pages.
 * A faulted call does not reach the kernel: it returns -1 with the errno
 * (the file is left as it was, as if the device had refused the write).
 *
 * At exit the shim prints to stderr "iofault: N fault(s) injected (...)",
 * and the first few faults of every control setting as they happen.
 * The fault path uses no locks, no malloc and no stdio: only raw syscalls
 * and atomics, so it is thread-safe and tolerates being reached from a
 * signal handler.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
/* pwrite and pwrite64 are both defined here: no off_t redirection. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
	OP_FSYNC, OP_FDATASYNC, OP_MSYNC, OP_PWRITE, OP_WRITE, OP__COUNT
};
static const char *const op_name[OP__COUNT] = {
	"fsync", "fdatasync", "msync", "pwrite", "write"
};
#define OPS_ALL ((1u << OP__COUNT) - 1)
#define OPS_SYNC ((1u << OP_FSYNC) | (1u << OP_FDATASYNC) | (1u << OP_MSYNC))
#define LOG_FIRST 5 /* faults logged per control setting */

typedef int (*fsync_fn)(int);
typedef int (*msync_fn)(void *, size_t, int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);

static struct {
	fsync_fn fsync, fdatasync;
	msync_fn msync;
	pwrite_fn pwrite, pwrite64;
	pwritev_fn pwritev, pwritev64;
	write_fn write;
	writev_fn writev;
} real;

static char prefix[4096];
static size_t prefix_len;
static const char *ctl_path;
static int fault_errno = EIO;
static uint64_t injected[OP__COUNT];
/* The control file's last content (FNV-1a), the matching calls seen since
 * it changed, and the faults logged since. */
static uint64_t ctl_hash;
static uint64_t ctl_calls;
static uint64_t ctl_logged;

static void *sym(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (!p)
		p = dlsym(RTLD_DEFAULT, name);
	return p;
}

static void resolve(void)
{
	real.fsync = (fsync_fn)sym("fsync");
	real.fdatasync = (fsync_fn)sym("fdatasync");
	real.msync = (msync_fn)sym("msync");
	real.pwrite = (pwrite_fn)sym("pwrite");
	real.pwrite64 = (pwrite_fn)sym("pwrite64");
	real.pwritev = (pwritev_fn)sym("pwritev");
	real.pwritev64 = (pwritev_fn)sym("pwritev64");
	real.write = (write_fn)sym("write");
	real.writev = (writev_fn)sym("writev");
}

#define REAL(f) (real.f ? real.f : (resolve(), real.f))

/* ---- async-signal-safe output ---- */

static void out(const char *s, size_t n)
{
	write_fn w = REAL(write);

	while (w && n) {
		ssize_t k = w(2, s, n);

		if (k <= 0) {
			if (k < 0 && errno == EINTR)
				continue;
			return;
		}
		s += k;
		n -= (size_t)k;
	}
}

static size_t put_s(char *b, size_t at, size_t cap, const char *s)
{
	while (*s && at + 1 < cap)
		b[at++] = *s++;
	b[at] = 0;
	return at;
}

static size_t put_u(char *b, size_t at, size_t cap, uint64_t v)
{
	char t[24];
	size_t n = 0;

	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n && at + 1 < cap)
		b[at++] = t[--n];
	b[at] = 0;
	return at;
}

static const char *errno_name(int e)
{
	switch (e) {
	case EIO: return "EIO";
	case ENOSPC: return "ENOSPC";
	case EDQUOT: return "EDQUOT";
	case EROFS: return "EROFS";
	default: return "errno";
	}
}

/* ---- set-up ---- */

__attribute__((constructor)) static void iofault_init(void)
{
	const char *p = getenv("KMS_IOFAULT_PATH");
	const char *e = getenv("KMS_IOFAULT_ERRNO");

	resolve();
	ctl_path = getenv("KMS_IOFAULT_CTL");
	if (p && *p && strlen(p) < sizeof(prefix)) {
		strcpy(prefix, p);
		prefix_len = strlen(prefix);
		while (prefix_len > 1 && prefix[prefix_len - 1] == '/')
			prefix[--prefix_len] = 0;
	}
	if (e && *e) {
		if (!strcmp(e, "EIO"))
			fault_errno = EIO;
		else if (!strcmp(e, "ENOSPC"))
			fault_errno = ENOSPC;
		else if (!strcmp(e, "EDQUOT"))
			fault_errno = EDQUOT;
		else if (!strcmp(e, "EROFS"))
			fault_errno = EROFS;
		else if (atoi(e) > 0)
			fault_errno = atoi(e);
	}
	if (!prefix_len || !ctl_path) {
		static const char m[] = "iofault: KMS_IOFAULT_PATH or KMS_IOFAULT_CTL unset: no faults\n";
		out(m, sizeof(m) - 1);
	}
}

__attribute__((destructor)) static void iofault_fini(void)
{
	char b[512];
	size_t at = 0;
	uint64_t total = 0;

	for (int i = 0; i < OP__COUNT; i++)
		total += __atomic_load_n(&injected[i], __ATOMIC_RELAXED);
	at = put_s(b, at, sizeof(b), "iofault: ");
	at = put_u(b, at, sizeof(b), total);
	at = put_s(b, at, sizeof(b), " fault(s) injected (");
	at = put_s(b, at, sizeof(b), errno_name(fault_errno));
	for (int i = 0; i < OP__COUNT; i++) {
		at = put_s(b, at, sizeof(b), i ? ", " : ": ");
		at = put_s(b, at, sizeof(b), op_name[i]);
		at = put_s(b, at, sizeof(b), "=");
		at = put_u(b, at, sizeof(b),
			   __atomic_load_n(&injected[i], __ATOMIC_RELAXED));
	}
	at = put_s(b, at, sizeof(b), ")\n");
	out(b, at);
}

/* ---- the decision ---- */

/* Does @p fd name a file under the prefix? */
static int fd_matches(int fd, char *path, size_t cap)
{
	char link[40];
	size_t at = put_s(link, 0, sizeof(link), "/proc/self/fd/");
	ssize_t n;

	if (!prefix_len || fd < 0)
		return 0;
	put_u(link, at, sizeof(link), (uint64_t)fd);
	n = readlink(link, path, cap - 1);
	if (n < (ssize_t)prefix_len)
		return 0;
	path[n] = 0;
	if (memcmp(path, prefix, prefix_len))
		return 0;
	return path[prefix_len] == 0 || path[prefix_len] == '/' ||
	       (prefix_len == 1 && prefix[0] == '/');
}

static unsigned parse_ops(const char *s, uint64_t *below, uint64_t *from)
{
	unsigned m = 0;

	while (*s && *s != '\n') {
		size_t n = strcspn(s, ", \t\n");

		if (n == 3 && !memcmp(s, "all", 3))
			m |= OPS_ALL;
		else if (n == 4 && !memcmp(s, "sync", 4))
			m |= OPS_SYNC;
		else if (n > 6 && !memcmp(s, "below=", 6))
			*below = strtoull(s + 6, NULL, 10);
		else if (n > 5 && !memcmp(s, "from=", 5))
			*from = strtoull(s + 5, NULL, 10);
		for (int i = 0; i < OP__COUNT; i++)
			if (strlen(op_name[i]) == n && !memcmp(s, op_name[i], n))
				m |= 1u << i;
		s += n;
		while (*s == ',' || *s == ' ' || *s == '\t')
			s++;
	}
	return m ? m : OPS_ALL;
}

/* Should this call of @p op on @p fd (at file offset @p off, -1: none or
 * the descriptor's own) fail?
 * Reads the control file. */
static int want_fault(int op, int fd, int64_t off)
{
	char b[128];
	ssize_t n;
	int cfd;
	uint64_t h = 1469598103934665603ull, old, seen;
	unsigned long after = 0;
	uint64_t below = UINT64_MAX, from = 0;
	const char *rest;

	if (!ctl_path)
		return 0;
	cfd = open(ctl_path, O_RDONLY | O_CLOEXEC);
	if (cfd < 0)
		return 0;
	n = read(cfd, b, sizeof(b) - 1);
	close(cfd);
	if (n <= 0)
		return 0;
	b[n] = 0;
	for (ssize_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)b[i]) * 1099511628211ull;
	old = __atomic_load_n(&ctl_hash, __ATOMIC_ACQUIRE);
	if (old != h && __atomic_compare_exchange_n(&ctl_hash, &old, h, 0,
						    __ATOMIC_ACQ_REL,
						    __ATOMIC_ACQUIRE)) {
		__atomic_store_n(&ctl_calls, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&ctl_logged, 0, __ATOMIC_RELEASE);
	}
	if (!strncmp(b, "on", 2) && (b[2] == 0 || b[2] == ' ' || b[2] == '\n')) {
		rest = b + 2;
	} else if (!strncmp(b, "after ", 6)) {
		char *end;

		after = strtoul(b + 6, &end, 10);
		rest = end;
	} else {
		return 0; /* "off" or anything else */
	}
	while (*rest == ' ' || *rest == '\t')
		rest++;
	if (!(parse_ops(rest, &below, &from) & (1u << op)))
		return 0;
	if ((below != UINT64_MAX || from) && op == OP_WRITE)
		off = lseek(fd, 0, SEEK_CUR);
	if (below != UINT64_MAX && (off < 0 || (uint64_t)off >= below))
		return 0;
	if (from && (off < 0 || (uint64_t)off < from))
		return 0;
	seen = __atomic_fetch_add(&ctl_calls, 1, __ATOMIC_ACQ_REL);
	return seen >= after;
}

static void log_fault(int op, int fd, const char *path)
{
	char b[600];
	size_t at = 0;
	uint64_t k = __atomic_add_fetch(&injected[op], 1, __ATOMIC_RELAXED);

	if (__atomic_fetch_add(&ctl_logged, 1, __ATOMIC_RELAXED) >= LOG_FIRST)
		return;
	at = put_s(b, at, sizeof(b), "iofault: ");
	at = put_s(b, at, sizeof(b), op_name[op]);
	at = put_s(b, at, sizeof(b), "(fd ");
	if (fd >= 0)
		at = put_u(b, at, sizeof(b), (uint64_t)fd);
	else
		at = put_s(b, at, sizeof(b), "-");
	at = put_s(b, at, sizeof(b), " ");
	at = put_s(b, at, sizeof(b), path);
	at = put_s(b, at, sizeof(b), ") -> ");
	at = put_s(b, at, sizeof(b), errno_name(fault_errno));
	at = put_s(b, at, sizeof(b), " (");
	at = put_s(b, at, sizeof(b), op_name[op]);
	at = put_s(b, at, sizeof(b), " fault #");
	at = put_u(b, at, sizeof(b), k);
	at = put_s(b, at, sizeof(b), ")\n");
	out(b, at);
}

/* 1: fail this call (errno set); 0: pass it through (errno untouched). */
static int fault(int op, int fd, int64_t off)
{
	char path[4096];
	int saved = errno;

	if (fd >= 0 ? !fd_matches(fd, path, sizeof(path)) : !prefix_len)
		return 0;
	if (fd < 0)
		put_s(path, 0, sizeof(path), "(mapping)");
	if (!want_fault(op, fd, off)) {
		errno = saved;
		return 0;
	}
	log_fault(op, fd, path);
	errno = fault_errno;
	return 1;
}

/* ---- the wrappers ---- */

int fsync(int fd)
{
	if (fault(OP_FSYNC, fd, -1))
		return -1;
	return REAL(fsync)(fd);
}

int fdatasync(int fd)
{
	if (fault(OP_FDATASYNC, fd, -1))
		return -1;
	return REAL(fdatasync)(fd);
}

int msync(void *addr, size_t len, int flags)
{
	if (fault(OP_MSYNC, -1, -1))
		return -1;
	return REAL(msync)(addr, len, flags);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (fault(OP_PWRITE, fd, (int64_t)off))
		return -1;
	return REAL(pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	if (fault(OP_PWRITE, fd, (int64_t)off))
		return -1;
	return REAL(pwrite64)(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	if (fault(OP_PWRITE, fd, (int64_t)off))
		return -1;
	return REAL(pwritev)(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
	if (fault(OP_PWRITE, fd, (int64_t)off))
		return -1;
	return REAL(pwritev64)(fd, iov, cnt, off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	if (fault(OP_WRITE, fd, -1))
		return -1;
	return REAL(write)(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	if (fault(OP_WRITE, fd, -1))
		return -1;
	return REAL(writev)(fd, iov, cnt);
}
