#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# ab_kms.sh: compare kmsd builds on one machine whose speed drifts (a VM
# whose host moves its vCPUs: the same binary can run 1.5x faster or
# slower from one minute to the next). Builds take turns, one short
# RETRIEVE run each, for several rounds, on the same store, population and
# load generator; each run prints kms-loadgen's verified rate and kmsd's
# own counters (engine us a request inside its batches, deferred flush us
# a record), so a change is judged on neighbouring runs and on the
# worker's time rather than on one run against another minutes apart.
#
#   perf/bench_kms.sh --cases retrieve-deferred --workers 1 --runs 1 \
#       --seconds 2 --keep                      # a work dir to run in
#   perf/ab_kms.sh --work /var/tmp/kms-bench-kms-XXXXXX build-old build-new
#
# Not a test and not a ceiling comparison: bench_kms.sh is the benchmark.
# Every run adds its audit records to the kept store (about 200 bytes a
# RETRIEVE): a run that gets errors (STORE_FULL when the map is full) is
# reported, and its figures are not used.
# shellcheck source=bench_lib.sh
. "$(dirname "$0")/bench_lib.sh"

WORK="" ROUNDS=5 SECS=4 WARMUP=1 OUTSTANDING=1024 IO=dpdk DEFERRED=1
usage() {
	cat <<EOF
usage: $0 --work DIR [options] BUILD [BUILD...]
  --work DIR       a work dir kept by perf/bench_kms.sh --keep
  --rounds N       rounds; each runs every build once (default $ROUNDS)
  --seconds S      measured seconds a run (default $SECS)
  --warmup S       kms-loadgen warm-up seconds (default $WARMUP)
  --outstanding N  requests in flight (default $OUTSTANDING)
  --io MODE        dpdk (kmsd on a memif, kms-loadgen its peer) or socket
                   (default $IO)
  --durable        RETRIEVE records durable before the answer (default:
                   store.retrieve_records = deferred)
BUILD: a build tree with dataplane/kmsd; kms-loadgen is the first one's.
EOF
}
die() { echo "ab_kms: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--work) WORK=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--seconds) SECS=$2; shift 2 ;;
	--warmup) WARMUP=$2; shift 2 ;;
	--outstanding) OUTSTANDING=$2; shift 2 ;;
	--io) IO=$2; shift 2 ;;
	--durable) DEFERRED=0; shift ;;
	-h|--help) usage; exit 0 ;;
	-*) usage >&2; exit 2 ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || { usage >&2; exit 2; }
if [ -z "$WORK" ] || [ ! -f "$WORK/kms.conf" ] || [ ! -f "$WORK/main.pop" ] ||
	[ ! -f "$WORK/softhsm2.conf" ]; then
	die "--work: not a work dir of bench_kms.sh --keep"
fi
case $IO in dpdk|socket) ;; *) die "--io: dpdk or socket" ;; esac
BUILDS=()
for b in "$@"; do
	b=$(cd "$b" 2>/dev/null && pwd) || die "no build dir $b"
	[ -x "$b/dataplane/kmsd" ] || die "$b: no dataplane/kmsd"
	[ "$IO" = socket ] || grep -q rte_eal_init "$b/dataplane/kmsd" ||
		die "$b: kmsd built without DPDK"
	BUILDS+=("$b")
done
LG=${BUILDS[0]}/perf/loadgen/kms-loadgen
[ -x "$LG" ] || die "${BUILDS[0]}: no perf/loadgen/kms-loadgen"
export SOFTHSM2_CONF=$WORK/softhsm2.conf KMS_PIN=${KMS_PIN:-bench-kms-pin}

CONF=$WORK/kms-ab.conf
if [ "$DEFERRED" = 1 ]; then
	sed 's/^layout = .*/layout = rss/; s/^\[store\]$/[store]\nretrieve_records = deferred\ndeferred_commit = worker/' \
		"$WORK/kms.conf" >"$CONF"
else
	sed 's/^layout = .*/layout = rss/' "$WORK/kms.conf" >"$CONF"
fi
NCPU=$(nproc)
SOCK=$WORK/ab-memif.sock
RES=$WORK/ab-results.txt
: >"$RES"
KP=""
trap '[ -n "$KP" ] && kill -KILL "$KP" 2>/dev/null' EXIT

start_kmsd() {
	local log=$1 i
	if [ "$IO" = socket ]; then
		"$2/dataplane/kmsd" -c "$CONF" --io socket --workers 1 --port 0 \
			</dev/null >"$log" 2>&1 &
	else
		rm -f "$SOCK"
		"$2/dataplane/kmsd" --no-huge -m 256 --no-pci --file-prefix ab-kmsd \
			--lcores "0@$((NCPU - 1)),1@$((NCPU - 1))" \
			"--vdev=net_memif0,role=server,socket=$SOCK,socket-abstract=no,mac=02:00:00:00:00:01" \
			-- -c "$CONF" --io dpdk --workers 1 --port 7430 </dev/null >"$log" 2>&1 &
	fi
	KP=$!
	for ((i = 0; i < 300; i++)); do
		grep -Eq "ready: udp|dpdk: serving|ready: dpdk" "$log" && return 0
		kill -0 "$KP" 2>/dev/null || break
		sleep 0.1
	done
	echo "ab_kms: kmsd did not start; its log:" >&2
	cat "$log" >&2
	return 1
}

run_lg() {
	local json=$1 log=$2 kmslog=$3
	local args=(--duration "$SECS" --warmup "$WARMUP" --outstanding "$OUTSTANDING"
		--json "$json" --quiet --mix 0:1 --population "$WORK/main.pop")
	if [ "$IO" = socket ]; then
		"$LG" --server "$(sed -n 's/.*ready: udp \([0-9.]*:[0-9]*\),.*/\1/p' "$kmslog" | tail -1)" \
			"${args[@]}" </dev/null >"$log" 2>&1 &
	else
		"$LG" --no-huge -m 256 --no-pci --file-prefix ab-lg --lcores 0@0 \
			"--vdev=net_memif0,role=client,socket=$SOCK,socket-abstract=no,mac=02:00:00:00:00:02" \
			-- --io dpdk \
			--dpdk "port=0,ip=192.0.2.2,kms-ip=192.0.2.1,kms-port=7430,sport=40000,kms-mac=02:00:00:00:00:01,queues=1" \
			"${args[@]}" </dev/null >"$log" 2>&1 &
	fi
	wait_exit $! $((SECS + WARMUP + 120))
}

echo "ab_kms: $IO, RETRIEVE $([ "$DEFERRED" = 1 ] && echo "deferred records" || echo "durable records"), $ROUNDS rounds x ${#BUILDS[@]} builds, ${SECS} s runs, $OUTSTANDING in flight; work dir $WORK"
printf "%-5s %-28s %10s %12s %12s %8s  %s\n" round build "req/s" "batch us/req" "flush us/rec" batch verify
for ((r = 1; r <= ROUNDS; r++)); do
	for i in "${!BUILDS[@]}"; do
		b=${BUILDS[$i]}
		klog=$WORK/ab-kmsd-$r-$i.log json=$WORK/ab-lg-$r-$i.json
		rm -f "$json"
		start_kmsd "$klog" "$b" || exit 1
		run_lg "$json" "$WORK/ab-lg-$r-$i.log" "$klog"
		kill -TERM "$KP"
		wait_exit "$KP" 60
		KP=""
		python3 - "$json" "$klog" "$r" "$i" "$b" "$RES" <<'PY'
import json, re, sys
path, klog, r, i, b, res = sys.argv[1:]
log = open(klog).read()
def g(k):
    m = re.search(r"\b%s=(\d+)" % k, log)
    return int(m.group(1)) if m else 0
try:
    j = json.load(open(path))
except Exception:
    print("%-5s %-28s no JSON from kms-loadgen" % (r, b[-28:]))
    sys.exit(0)
v = j.get("verify", {})
bad = sum(v.get(k, 0) for k in ("mismatch", "bad_tag", "bad_reply", "unexpected_status"))
er, dr = g("engine_requests"), g("deferred_records")
bu = g("batch_us_sum") / er if er else float("nan")
fu = g("deferred_flush_us") / dr if dr else float("nan")
mb = er / g("engine_batches") if g("engine_batches") else float("nan")
ok = bad == 0 and not j.get("lost")
print("%-5s %-28s %10.0f %12.2f %12.2f %8.0f  %s" % (r, b[-28:], j["throughput_rps"], bu, fu, mb,
      "ok" if ok else "NOT USED: %d errors, %s lost (STORE_FULL? see %s)" % (bad, j.get("lost"), klog)))
if ok:
    with open(res, "a") as f:
        f.write("%s %s %f %f %f\n" % (i, b, j["throughput_rps"], bu, fu))
PY
	done
done
python3 - "$RES" "${BUILDS[@]}" <<'PY'
import statistics, sys
res, builds = sys.argv[1], sys.argv[2:]
rows = [l.split() for l in open(res)]
print("\nmedians over the runs used:")
print("%-28s %5s %10s %12s %12s" % ("build", "runs", "req/s", "batch us/req", "flush us/rec"))
base = None
for i, b in enumerate(builds):
    rs = [r for r in rows if int(r[0]) == i]
    if not rs:
        print("%-28s %5d" % (b[-28:], 0))
        continue
    med = [statistics.median(float(r[k]) for r in rs) for k in (2, 3, 4)]
    rel = "" if base is None else "  (req/s x%.2f, batch us x%.2f vs the first)" % (med[0] / base[0], med[1] / base[1])
    if base is None:
        base = med
    print("%-28s %5d %10.0f %12.2f %12.2f%s" % (b[-28:], len(rs), med[0], med[1], med[2], rel))
PY
