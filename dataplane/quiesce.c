// SPDX-License-Identifier: Apache-2.0
/*
 * Keep the memif PMD of DPDK 22.11 from unmapping shared memory under a
 * polling lcore.
 *
 * When a memif peer goes away, the PMD's control handler (on the EAL
 * interrupt thread) clears the "connected" flag and then munmap()s the
 * shared regions; an rx/tx burst that passed the flag check just before is
 * still reading them on an lcore, and faults (BASELINE.md saw testpmd die
 * this way; kmsd did too). The PMD offers no hook, so kmsd interposes
 * munmap(): while the dataplane runs, an unmapping thread that is not a
 * polling lcore first waits until every polling lcore has passed a
 * quiescent state (rte_rcu_qsbr: each reports one per poll iteration,
 * outside any burst). Bursts that start after that see the cleared flag and
 * touch nothing. The wait costs microseconds, on the interrupt or control
 * thread only; polling lcores never wait here.
 *
 * munmap is exported from the kmsd executable (CMakeLists.txt) so that PMDs
 * loaded as plugins bind to this definition.
 */
#include <dlfcn.h>
#include <rte_lcore.h>
#include <rte_rcu_qsbr.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "quiesce.h"

static struct rte_rcu_qsbr *active;

void kms_quiesce_set(struct rte_rcu_qsbr *qs)
{
	__atomic_store_n(&active, qs, __ATOMIC_RELEASE);
}

int munmap(void *addr, size_t len)
{
	static int (*real_munmap)(void *, size_t);
	struct rte_rcu_qsbr *qs = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
	int (*fn)(void *, size_t) = __atomic_load_n(&real_munmap, __ATOMIC_ACQUIRE);

	static __thread int resolving;

	if (!fn) {
		if (resolving) /* dlsym itself unmapping: go straight to the kernel */
			return (int)syscall(SYS_munmap, addr, len);
		resolving = 1;
		fn = (int (*)(void *, size_t))dlsym(RTLD_NEXT, "munmap");
		resolving = 0;
		if (!fn)
			return (int)syscall(SYS_munmap, addr, len);
		__atomic_store_n(&real_munmap, fn, __ATOMIC_RELEASE);
	}
	if (qs && rte_lcore_id() == LCORE_ID_ANY)
		rte_rcu_qsbr_synchronize(qs, RTE_QSBR_THRID_INVALID);
	return fn(addr, len);
}
