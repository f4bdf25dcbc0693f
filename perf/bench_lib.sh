# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Helpers shared by the benchmark scripts (bench_io.sh, bench_kms.sh).

# wait_exit PID SECS: wait for PID (a child of this shell), SIGKILL after
# SECS; its exit status goes to WAIT_RC.
wait_exit() {
	local pid=$1 t=$2 i
	for ((i = 0; i < t * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	WAIT_RC=0
	wait "$pid" 2>/dev/null || WAIT_RC=$?
}

# Busy share of all CPUs over 0.5 s (user+nice+system+irq+softirq+steal).
busy_pct() {
	local a b
	a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
	sleep 0.5
	b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
	echo "$a $b" | awk '{d = $4 - $2; v = 0; if (d > 0) v = 100 * ($3 - $1) / d; printf "%d", v}'
}
