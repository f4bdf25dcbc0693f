#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# bench_kms.sh: the KMS transaction benchmark suite, every figure next to
# the ceiling it is compared with, measured in the same run on the same
# machine (DESIGN.md section 5, perf/README.md).
#
#   1. a work dir (under /var/tmp: the store is on the real disk) with a
#      SoftHSM2 token, `kmsctl init`, and the load-generator populations
#      from `kmsctl enroll-bulk`: one main population, and one of its own
#      (another --domain) for every "new pairs" run, so that each such run
#      deposits on pairs the store has never seen (kms-loadgen numbers its
#      new pairs from --pairs up on every start);
#   2. kms-bench-ceil --config (the same token) --dir (the same disk): AEAD
#      through the engine's crypto ops, HSM, LMDB reads and durable commits,
#      kernel UDP echo;
#   3. for each case and worker count, one kmsd (socket mode; with --dpdk
#      also DPDK memif mode, kms-loadgen being the memif peer) and RUNS
#      closed-loop kms-loadgen runs of SECONDS each, their JSON kept; kmsd
#      stops with SIGTERM and its counters (batches, requests, commits)
#      give the mean batch it used;
#   4. one markdown table, the floors of issue 5, and a JSON file.
#
# Cases: retrieve (--mix 0:1), deposit-reuse (--mix 1:0), deposit-new
# (--mix 1:0 --new-pairs 100), mixed (--mix 1:1); 1 and 2 workers.
# Crypto modes (issue 6): retrieve-hsm and deposit-hsm are retrieve and
# deposit-reuse with crypto.mode = hsm, compared with the HSM's CKM_AES_GCM
# rate through hsm/ over the calls a request needs (floor 60%); offload
# RETRIEVE and DEPOSIT re-used are compared with the AEAD ceiling per worker
# (floor 25%). retrieve-cold and retrieve-cold-hsm run RETRIEVE with the
# smallest key cache (2 x batch + 16) so most requests miss: with kmsd's
# miss count, the cost of one miss = (1/cold - 1/warm) / misses per request.
# Ratios: RETRIEVE vs retrieve_aead_ceiling_rps (one core's AEAD for two
# token opens and one keybox seal); socket RETRIEVE vs UDP echo round
# trips; every case vs durable commits/s at the KMS's mean batch
# (interpolated between the measured batch sizes 1, 8, 32, 128 in log2 of
# the batch) x that mean batch (each batch, RETRIEVEs too, ends in one
# durable commit; the floor is on DEPOSIT new pairs); DEPOSIT new pairs
# also vs the HSM's new-key rate (information, no floor). Exit 0 whatever
# the verdicts, 2 when the suite itself cannot run.
set -euo pipefail

SELF=$(readlink -f "$0")
ROOT=$(dirname "$(dirname "$SELF")")
# shellcheck source=bench_lib.sh
. "$ROOT/perf/bench_lib.sh"

SECS=5
RUNS=3
WARMUP=1
OUTSTANDING=256      # requests in flight (the UDP echo ceiling keeps as many)
BATCH=256            # kmsd net.batch: requests a worker takes per batch
USERS=1000           # main population
NEW_USERS=500        # each new-pairs population: 249500 ordered pairs
ID_LEN=24            # the IDs the AEAD ceiling uses
CEIL_SECS=2
CEIL_RUNS=3
CEIL_RECORDS=200000
CEIL_ARGS=""
BUILD=${KMS_BUILD:-}
OUT=""
CASES="retrieve retrieve-deferred retrieve-deferred-thread deposit-reuse deposit-new mixed retrieve-hsm deposit-hsm retrieve-cold retrieve-cold-hsm"
ALL_CASES=$CASES
WORKERS="1 2"
DPDK=0
KEEP=0
BRACKET=1            # RETRIEVE cases: AEAD (and UDP echo) ceilings just before and after
BASE=/var/tmp
DPDK_LAYOUT=""       # rss with 1 worker, rx with more (kms-loadgen: 1 queue pair)
QUIET_MAX=10         # seconds to wait for a quiet machine before a run

usage() {
	cat <<EOF
usage: perf/bench_kms.sh [options]
  --build DIR         build tree with perf/kms-bench-ceil, perf/loadgen/kms-loadgen,
                      dataplane/kmsd, control/kmsctl (default: \$KMS_BUILD, else the
                      first of build-bench/, build/ that has them all)
  --out FILE          JSON results (default: BUILD/perf/results/bench_kms.json)
  --seconds S         measured seconds per kms-loadgen run (default $SECS)
  --runs R            kms-loadgen runs per case (default $RUNS)
  --warmup S          kms-loadgen warm-up seconds (default $WARMUP)
  --outstanding N     closed loop: requests in flight (default $OUTSTANDING)
  --batch N           kmsd net.batch, the most requests a worker serves
                      at once (default $BATCH; 1-256)
  --cases LIST        subset of "$CASES"
  --workers LIST      kmsd worker counts (default "$WORKERS")
  --dpdk              also DPDK memif mode (needs kmsd and kms-loadgen built
                      with DPDK); kms-loadgen is kmsd's memif peer
  --dpdk-layout L     kmsd's [dpdk] layout, rss or rx (default rss: a memif
                      queue pair per worker; kms-loadgen opens as many)
  --users N           users in the main population (default $USERS)
  --new-users N       users in each new-pairs population (default $NEW_USERS)
  --ceil-seconds S    kms-bench-ceil --seconds (default $CEIL_SECS)
  --ceil-runs R       kms-bench-ceil --runs (default $CEIL_RUNS)
  --ceil-records N    kms-bench-ceil --records (default $CEIL_RECORDS)
  --ceil-args "ARGS"  more kms-bench-ceil arguments (e.g. --engine-txn)
  --base DIR          where the work dir is made (default $BASE: a disk)
  --wait-quiet S      before each run, wait up to S s for the machine to be
                      < 10% busy (default $QUIET_MAX)
  --keep              keep the work dir (every log and JSON)
  --no-bracket        skip the short ceilings measured just before and after
                      each RETRIEVE case (its floors are then judged on the
                      suite's ceilings only)
Prints one markdown table (median [min-max] of the runs, ceilings, ratios,
latency), the floors of issue 5 with PASS / BELOW FLOOR, and writes all of
it as JSON.
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--seconds) SECS=$2; shift 2 ;;
	--runs) RUNS=$2; shift 2 ;;
	--warmup) WARMUP=$2; shift 2 ;;
	--outstanding) OUTSTANDING=$2; shift 2 ;;
	--batch) BATCH=$2; shift 2 ;;
	--cases) CASES=$2; shift 2 ;;
	--workers) WORKERS=$2; shift 2 ;;
	--dpdk) DPDK=1; shift ;;
	--dpdk-layout) DPDK_LAYOUT=$2; shift 2 ;;
	--users) USERS=$2; shift 2 ;;
	--new-users) NEW_USERS=$2; shift 2 ;;
	--ceil-seconds) CEIL_SECS=$2; shift 2 ;;
	--ceil-runs) CEIL_RUNS=$2; shift 2 ;;
	--ceil-records) CEIL_RECORDS=$2; shift 2 ;;
	--ceil-args) CEIL_ARGS=$2; shift 2 ;;
	--base) BASE=$2; shift 2 ;;
	--wait-quiet) QUIET_MAX=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--no-bracket) BRACKET=0; shift ;;
	-h|--help) usage; exit 0 ;;
	*) echo "bench_kms: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
done

die() { echo "bench_kms: $*" >&2; exit 2; }

have_all() {
	[ -x "$1/perf/kms-bench-ceil" ] && [ -x "$1/perf/loadgen/kms-loadgen" ] &&
		[ -x "$1/dataplane/kmsd" ] && [ -x "$1/control/kmsctl" ]
}
if [ -z "$BUILD" ]; then
	for d in "$ROOT/build-bench" "$ROOT/build"; do
		have_all "$d" && { BUILD=$d; break; }
	done
fi
if [ -z "$BUILD" ] || ! have_all "$BUILD"; then
	die "no build with kms-bench-ceil, kms-loadgen, kmsd and kmsctl: build first" \
		"(cmake -S . -B build-bench && cmake --build build-bench -j2) or pass --build"
fi
BUILD=$(readlink -f "$BUILD")
KMSD=$BUILD/dataplane/kmsd
KMSCTL=$BUILD/control/kmsctl
CEIL=$BUILD/perf/kms-bench-ceil
LG=$BUILD/perf/loadgen/kms-loadgen
[ -n "$OUT" ] || OUT=$BUILD/perf/results/bench_kms.json
for t in softhsm2-util python3; do
	command -v $t >/dev/null || die "$t not found"
done
"$KMSCTL" --help 2>&1 | grep -q 'enroll-bulk' ||
	die "$KMSCTL has no enroll-bulk"
for c in $CASES; do
	case " $ALL_CASES " in *" $c "*) ;;
	*) die "unknown case '$c' (cases: $ALL_CASES)" ;;
	esac
done
# New-pairs populations need their own --domain; IDs padded to ID_LEN.
BULK_DOMAIN=0; BULK_IDLEN=0
"$KMSCTL" --help 2>&1 | grep -q -- '--domain' && BULK_DOMAIN=1
"$KMSCTL" --help 2>&1 | grep -q -- '--id-len' && BULK_IDLEN=1
MODULE=${KMS_TEST_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
[ -r "$MODULE" ] || die "no PKCS#11 module at $MODULE"
IOS="socket"
if [ "$DPDK" = 1 ]; then
	grep -q rte_eal_init "$KMSD" || die "--dpdk: $KMSD was built without DPDK"
	grep -q rte_eal_init "$LG" ||
		die "--dpdk: $LG was built without DPDK (perf/loadgen/lg_dpdk.c)"
	IOS="socket dpdk"
fi
NCPU=$(nproc)

mkdir -p "$BASE"
W=$(mktemp -d "$BASE/kms-bench-kms-XXXXXX")
PFX=kmsbk$$
PIDS=()
RUNDIR=/var/run/dpdk
[ "$(id -u)" -eq 0 ] || RUNDIR=${XDG_RUNTIME_DIR:-/tmp}/dpdk

cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
	done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$RUNDIR/$PFX"-* 2>/dev/null || true
	if [ "$KEEP" = 1 ]; then echo "bench_kms: work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

REV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')
echo "bench_kms: $(date -u +%Y-%m-%dT%H:%M:%SZ), $NCPU CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), revision $REV"
echo "bench_kms: build $BUILD; work dir $W ($(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?'))"
echo "bench_kms: cases {$CASES} x workers {$WORKERS} x io {$IOS}, $RUNS runs of ${SECS} s" \
	"(+${WARMUP} s warm-up), closed loop, $OUTSTANDING in flight, kmsd batch $BATCH"

# ---- token, store, configuration, populations ----
mkdir -p "$W/tokens" "$W/runs"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$W" > "$W/softhsm2.conf"
export SOFTHSM2_CONF=$W/softhsm2.conf KMS_PIN=bench-kms-pin
softhsm2-util --init-token --free --label kms --so-pin bench-kms-so --pin "$KMS_PIN" >/dev/null
KMS_IP=192.0.2.1 LG_IP=192.0.2.2 KMS_PORT=7430
KMS_MAC=02:00:00:00:00:01 LG_MAC=02:00:00:00:00:02
# Replay window: the default (262144 nonces a worker) covers about 4 k
# requests/s a worker over the 2 x 30 s skew window; the benchmark's rates
# (140 k/s with deferred RETRIEVE records) need more. A kmsd start refuses
# to run when the live nonces of the previous runs do not fit, so the skew
# is 5 s (kms-loadgen's tokens are at most a chunk old) and the window 4 M
# nonces a worker: 400 k requests/s over 2 x 5 s.
cat > "$W/kms.conf" <<CONF
[hsm]
module = $MODULE
token_label = kms
[store]
path = $W/store
map_size_mb = 8192
; no background purge during the measurements (nothing expires anyway)
purge_interval_s = 0
[net]
listen = 127.0.0.1
port = 0
workers = 1
batch = $BATCH
[dpdk]
port_id = 0
ipv4 = $KMS_IP
layout = rss
mbufs = 8191
ring_size = 1024
[security]
max_skew_s = 5
replay_capacity = 4194304
[log]
level = info
CONF
"$KMSCTL" -c "$W/kms.conf" init >"$W/init.log" 2>&1 || { cat "$W/init.log" >&2; die "kmsctl init failed"; }

# enroll POP DOMAIN USERS: one population file $W/POP.pop
enroll() {
	local args=(enroll-bulk --users "$3" --as 1 --out "$W/$1.pop")
	[ "$BULK_DOMAIN" = 1 ] && args+=(--domain "$2")
	[ "$BULK_IDLEN" = 1 ] && args+=(--id-len "$ID_LEN")
	"$KMSCTL" -c "$W/kms.conf" "${args[@]}" >"$W/enroll-$1.log" 2>&1 </dev/null || {
		cat "$W/enroll-$1.log" >&2; die "kmsctl enroll-bulk ($1) failed"; }
}
t0=$(date +%s%N)
enroll main lg.bench "$USERS"
NNEW=0
case " $CASES " in *" deposit-new "*)
	if [ "$BULK_DOMAIN" = 1 ]; then
		NNEW=$(( RUNS * $(wc -w <<<"$WORKERS") * $(wc -w <<<"$IOS") ))
		for ((i = 1; i <= NNEW; i++)); do enroll "new$i" "n$i.lg" "$NEW_USERS"; done
	else
		echo "bench_kms: WARNING: kmsctl enroll-bulk has no --domain: every" \
			"deposit-new run uses the main population, so runs after the first" \
			"find their \"new\" pairs already made (their K is re-used)" >&2
	fi ;;
esac
echo "bench_kms: populations enrolled: main $USERS users + $NNEW x $NEW_USERS" \
	"(IDs of ${ID_LEN} bytes: $([ "$BULK_IDLEN" = 1 ] && echo yes || echo "no --id-len")) in" \
	"$(( ($(date +%s%N) - t0) / 1000000 )) ms"
NEW_NEXT=0

# ---- ceilings ----
# The UDP echo keeps as many datagrams in flight as kms-loadgen keeps
# requests: the socket floor compares two loops with the same window.
echo "bench_kms: kms-bench-ceil --seconds $CEIL_SECS --runs $CEIL_RUNS --records $CEIL_RECORDS --udp-inflight $OUTSTANDING $CEIL_ARGS"
# shellcheck disable=SC2086  # CEIL_ARGS is a list of arguments
"$CEIL" --config "$W/kms.conf" --dir "$W" --seconds "$CEIL_SECS" --runs "$CEIL_RUNS" \
	--records "$CEIL_RECORDS" --udp-inflight "$OUTSTANDING" --json "$W/ceilings.json" $CEIL_ARGS \
	</dev/null >"$W/ceil.log" 2>&1 &
PIDS+=("$!")
wait_exit "$!" 3600
cat "$W/ceil.log"
if [ "$WAIT_RC" != 0 ] || [ ! -s "$W/ceilings.json" ]; then
	die "kms-bench-ceil failed (status $WAIT_RC)"
fi

# ---- KMS cases ----
: >"$W/cases.jsonl"

# start_kmsd IO WORKERS TAG: sets KMSD_PID, SERVER (socket) / MEMIF (dpdk).
start_kmsd() {
	local io=$1 nw=$2 tag=$3 i ready log=$W/kmsd-$3.log cmd
	if [ "$io" = socket ]; then
		cmd=("$KMSD" -c "$KCONF" --io socket --workers "$nw" --port 0)
		ready="ready: udp"
	else
		MEMIF=$W/memif-$tag.sock
		# Layout: rss (a memif queue pair a worker, each polled by its
		# worker; kms-loadgen opens as many with queues=N) unless
		# --dpdk-layout says otherwise.
		local layout=${DPDK_LAYOUT:-rss}
		DPDK_LAYOUT_USED=$layout
		sed "s/^layout = .*/layout = $layout/" "$KCONF" >"$W/kms-$layout.conf"
		# kmsd: main lcore + a polling lcore a worker; kms-loadgen polls
		# on CPU 0, so kmsd's lcores go on the others first (on 2 CPUs
		# with 2 workers, one of them shares CPU 0).
		local lc="0@$((NCPU - 1))" w
		for ((w = 1; w <= nw; w++)); do
			lc+=",$w@$(( (NCPU - w) > 0 ? NCPU - w : 0 ))"
		done
		cmd=("$KMSD" --no-huge -m 256 --no-pci --file-prefix "$PFX-kmsd-$tag"
			--lcores "$lc"
			"--vdev=net_memif0,role=server,socket=$MEMIF,socket-abstract=no,mac=$KMS_MAC"
			-- -c "$W/kms-$layout.conf" --io dpdk --workers "$nw" --port "$KMS_PORT")
		ready="dpdk: serving|ready: dpdk"
	fi
	"${cmd[@]}" </dev/null >"$log" 2>&1 &
	KMSD_PID=$!
	PIDS+=("$KMSD_PID")
	for ((i = 0; i < 300; i++)); do
		grep -Eq "$ready" "$log" && break
		kill -0 "$KMSD_PID" 2>/dev/null || break
		sleep 0.1
	done
	if ! grep -Eq "$ready" "$log" || ! kill -0 "$KMSD_PID" 2>/dev/null; then
		echo "bench_kms: kmsd ($io, $nw workers) did not start; its log:" >&2
		cat "$log" >&2
		return 1
	fi
	SERVER=""
	[ "$io" = socket ] &&
		SERVER=$(sed -n 's/.*ready: udp \([0-9.]*:[0-9]*\),.*/\1/p' "$log" | tail -1)
	return 0
}

# bracket_ceil TAG WHEN IO: the RETRIEVE floors' ceilings again, short (1 run
# of 1 s), with no kmsd running: AEAD, and for socket mode the UDP echo.
# The suite's ceilings come minutes before a case; on a VM whose speed
# drifts, a case is also judged against these, taken just before and just
# after its runs, and flagged when they disagree.
bracket_ceil() {
	local only=aead
	[ "$3" = socket ] && only=aead,udp
	"$CEIL" --config "$W/kms.conf" --dir "$W" --seconds 1 --runs 1 --only "$only" \
		--udp-inflight "$OUTSTANDING" --json "$W/bracket-$1-$2.json" \
		</dev/null >"$W/bracket-$1-$2.log" 2>&1 &
	PIDS+=("$!")
	wait_exit "$!" 120
	[ "$WAIT_RC" = 0 ] || echo "bench_kms: bracketing ceiling ($2) failed; see $W/bracket-$1-$2.log" >&2
}

# run_loadgen IO CASE TAG RUN WORKERS: one kms-loadgen run; appends a line to
# $W/runs.jsonl (its status and JSON file).
run_loadgen() {
	local io=$1 kcase=$2 tag=$3 run=$4 busy rc pop=$W/main.pop
	local json=$W/runs/$tag-r$run.json log=$W/runs/$tag-r$run.log
	local args=(--duration "$SECS" --warmup "$WARMUP" --outstanding "$OUTSTANDING"
		--json "$json" --quiet)
	case $kcase in
	retrieve|retrieve-deferred|retrieve-deferred-thread|retrieve-hsm) args+=(--mix 0:1) ;;
	# 4000 pairs over the 1000 users: their keys and K do not fit the
	# smallest cache, so most RETRIEVEs miss for Kb, K or both.
	retrieve-cold|retrieve-cold-hsm) args+=(--mix 0:1 --pairs 4000) ;;
	deposit-reuse|deposit-hsm) args+=(--mix 1:0 --seed-deposits 0) ;;
	deposit-new)
		args+=(--mix 1:0 --new-pairs 100 --seed-deposits 0)
		if [ "$NNEW" -gt 0 ]; then
			NEW_NEXT=$((NEW_NEXT + 1))
			pop=$W/new$NEW_NEXT.pop
		fi ;;
	mixed) args+=(--mix 1:1) ;;
	esac
	args+=(--population "$pop")
	# Let the machine settle (kmsd's start-up, the previous run's drain,
	# other load): up to QUIET_MAX s while more than 10% busy.
	# In DPDK mode kmsd's worker lcores poll: they count as busy.
	local q lim=10
	[ "$io" = dpdk ] && lim=$(( 10 + 100 * (${5:-1} + (${5:-1} > 1)) / NCPU ))
	busy=$(busy_pct)
	for ((q = 1; busy >= lim && q < QUIET_MAX * 2; q++)); do busy=$(busy_pct); done
	if [ "$io" = socket ]; then
		"$LG" --server "$SERVER" "${args[@]}" </dev/null >"$log" 2>&1 &
	else
		"$LG" --no-huge -m 256 --no-pci --file-prefix "$PFX-lg-$tag-$run" --lcores "0@0" \
			"--vdev=net_memif0,role=client,socket=$MEMIF,socket-abstract=no,mac=$LG_MAC" \
			-- --io dpdk \
			--dpdk "port=0,ip=$LG_IP,kms-ip=$KMS_IP,kms-port=$KMS_PORT,sport=40000,kms-mac=$KMS_MAC,queues=${5:-1}" \
			"${args[@]}" </dev/null >"$log" 2>&1 &
	fi
	local pid=$!
	PIDS+=("$pid")
	wait_exit "$pid" $(( SECS + WARMUP + 120 ))
	rc=$WAIT_RC
	python3 -c 'import json, sys; print(json.dumps({"run": int(sys.argv[1]), "rc": int(sys.argv[2]),
	  "json": sys.argv[3], "log": sys.argv[4], "population": sys.argv[5],
	  "busy_before_pct": int(sys.argv[6]), "busy_limit_pct": int(sys.argv[7])}))' \
		"$run" "$rc" "$json" "$log" "$pop" "$busy" "$lim" >>"$W/runs-$tag.jsonl"
	python3 - "$json" "$rc" "$run" <<'PY'
import json, sys
path, rc, run = sys.argv[1:]
try:
    j = json.load(open(path))
    v = j.get("verify", {})
    lat = j.get("latency_us", {})
    print("    run %s: %.0f req/s ok (deposit %.0f, retrieve %.0f), p50 %.0f us, p99 %.0f us,"
          " lost %s, mismatch %s, status %s" % (run, j.get("throughput_rps", 0),
          j.get("deposit", {}).get("rps", 0), j.get("retrieve", {}).get("rps", 0),
          lat.get("p50", 0), lat.get("p99", 0), j.get("lost"), v.get("mismatch"), rc))
except Exception as e:
    print("    run %s: no JSON (kms-loadgen exit status %s)" % (run, rc))
PY
	if [ ! -s "$json" ]; then
		echo "    kms-loadgen log:"; sed 's/^/      /' "$log" | tail -15
	fi
}

for io in $IOS; do
	for nw in $WORKERS; do
		for kcase in $CASES; do
			tag=$io-w$nw-$kcase
			echo "bench_kms: $kcase, $io, $nw worker(s)"
			: >"$W/runs-$tag.jsonl"
			kmsd_rc=-1; survived=na; DPDK_LAYOUT_USED=""; skipped=""
			# retrieve-deferred: kmsd with store.retrieve_records =
			# deferred (docs/ARCHITECTURE.md), committed by the worker
			# or (-thread) by a commit thread per worker; every other
			# case durable.
			KCONF=$W/kms.conf
			case $kcase in retrieve-deferred*)
				KCONF=$W/kms-$kcase.conf
				dc=worker
				[ "$kcase" = retrieve-deferred-thread ] && dc=thread
				sed "s/^\[store\]\$/[store]\nretrieve_records = deferred\ndeferred_commit = $dc/" \
					"$W/kms.conf" >"$KCONF" ;;
			esac
			# The crypto mode and cache size cases: sections appended.
			case $kcase in *-hsm|retrieve-cold)
				KCONF=$W/kms-$kcase.conf
				cp "$W/kms.conf" "$KCONF"
				case $kcase in *hsm) printf '[crypto]\nmode = hsm\n' >>"$KCONF" ;; esac
				case $kcase in retrieve-cold*)
					printf '[cache]\nkeys_per_worker = %d\n' $((2 * 256 + 16)) >>"$KCONF" ;;
				esac ;;
			esac
			bracket=0
			case $kcase in retrieve|retrieve-deferred|retrieve-deferred-thread)
				bracket=$BRACKET ;;
			esac
			[ "$bracket" = 1 ] && bracket_ceil "$tag" before "$io"
			if start_kmsd "$io" "$nw" "$tag"; then
				for ((r = 1; r <= RUNS; r++)); do
					run_loadgen "$io" "$kcase" "$tag" "$r" "$nw"
				done
				if kill -0 "$KMSD_PID" 2>/dev/null; then survived=yes; else survived=no; fi
				kill -TERM "$KMSD_PID" 2>/dev/null || true
				wait_exit "$KMSD_PID" 60
				kmsd_rc=$WAIT_RC
			fi
			[ "$bracket" = 1 ] && bracket_ceil "$tag" after "$io"
			python3 - "$kcase" "$io" "$nw" "$W/runs-$tag.jsonl" "$W/kmsd-$tag.log" \
				"$kmsd_rc" "$survived" "$DPDK_LAYOUT_USED" "$skipped" \
				"$([ "$bracket" = 1 ] && echo "$W/bracket-$tag")" >>"$W/cases.jsonl" <<'PY'
import json, re, sys
kcase, io, nw, runs, klog, krc, survived, layout, skipped, bracket = sys.argv[1:]
br = {}
for when in ("before", "after") if bracket else ():
    try:
        j = json.load(open("%s-%s.json" % (bracket, when)))
    except Exception:
        continue
    br[when] = {"aead": j.get("retrieve_aead_ceiling_rps"),
                "udp": j.get("udp_echo", {}).get("round_trips_per_s", {}).get("median")}
rs = []
for l in open(runs):
    if not l.strip():
        continue
    r = json.loads(l)
    try:
        r["report"] = json.load(open(r["json"]))
    except Exception:
        r["report"] = None
    rs.append(r)
stats, by_status = {}, {}
try:
    txt = open(klog, errors="replace").read()
except OSError:
    txt = ""
for line in txt.splitlines():
    if not line.startswith("kmsd: stats:"):
        continue
    m = re.match(r"kmsd: stats: (deposit|retrieve|other) (\w+)=(\d+)$", line)
    if m:
        by_status.setdefault(m.group(1), {})[m.group(2)] = int(m.group(3))
        continue
    for k, v in re.findall(r"(\w+)=(\d+)", line):
        stats[k] = int(v)
print(json.dumps({"case": kcase, "io": io, "workers": int(nw), "dpdk_layout": layout or None,
                  "skipped": skipped or None, "runs": rs, "bracket": br or None,
                  "kmsd_stats": stats, "kmsd_by_status": by_status,
                  "kmsd_rc": int(krc), "kmsd_alive_after_runs": survived,
                  "kmsd_log_tail": txt.splitlines()[-12:]}))
PY
			grep 'kmsd: stats:' "$W/kmsd-$tag.log" 2>/dev/null | head -2 | sed 's/^/    /' || true
		done
	done
done

# ---- report ----
mkdir -p "$(dirname "$OUT")"
python3 - "$W/ceilings.json" "$W/cases.jsonl" "$OUT" "$REV" "$SECS" "$RUNS" "$WARMUP" \
	"$OUTSTANDING" "$USERS" "$NEW_USERS" "$NNEW" "$W/kms.conf" "$BUILD" <<'PY'
import datetime, json, math, os, platform, statistics, sys
(ceil_path, cases_path, out, rev, secs, runs, warmup, outstanding, users,
 new_users, nnew, conf, build) = sys.argv[1:]
ceil = json.load(open(ceil_path))
cases = [json.loads(l) for l in open(cases_path) if l.strip()]

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(x):
    if x is None:
        return "-"
    if x >= 1e6:
        return "%.2f M" % (x / 1e6)
    if x >= 1e3:
        return "%.1f k" % (x / 1e3)
    return "%.0f" % x

aead = ceil.get("retrieve_aead_ceiling_rps")
udp = ceil.get("udp_echo", {}).get("round_trips_per_s", {}).get("median")
hsm_new_key = ceil.get("hsm", {}).get("new_key_ops", {}).get("median")
commits = [(c["batch"], c["commits_per_s"]["median"])
           for c in ceil.get("lmdb", {}).get("commits", []) if c["commits_per_s"]["median"]]

def commits_at(b):
    """Durable commits/s at a mean batch b: linear in log2(batch) between
    the measured sizes, clamped at the ends."""
    if not commits:
        return None
    pts = sorted(commits)
    if b <= pts[0][0]:
        return pts[0][1]
    if b >= pts[-1][0]:
        return pts[-1][1]
    for (b0, c0), (b1, c1) in zip(pts, pts[1:]):
        if b0 <= b <= b1:
            t = (math.log2(b) - math.log2(b0)) / (math.log2(b1) - math.log2(b0))
            return c0 + t * (c1 - c0)

# Issue 6: each crypto mode's AEAD ceiling for the request's operations.
# offload: one core's EVP (per worker); hsm: the HSM's CKM_AES_GCM through
# hsm/ (SoftHSM2 serialises its sessions: one HSM, whatever the workers).
def inv_sum(*parts):
    return 1.0 / sum(k / v for k, v in parts) if all(v for _, v in parts) else None
ae = ceil.get("aead", {})
t_open = ae.get("open_token_ops", {}).get("median")
t_box = ae.get("seal_keybox_ops", {}).get("median")
off_ret = inv_sum((1, t_open), (1, t_box))
off_dep = inv_sum((2, t_open), (1, t_box))
hsm_ret = ceil.get("hsm_retrieve_ceiling_rps") or None
hsm_dep = ceil.get("hsm_deposit_ceiling_rps") or None

names = {"retrieve": "RETRIEVE only (0:1)",
         "retrieve-deferred": "RETRIEVE only (0:1), deferred records",
         "retrieve-deferred-thread": "RETRIEVE only (0:1), deferred records, commit thread",
         "deposit-reuse": "DEPOSIT, re-used pairs (1:0)",
         "deposit-new": "DEPOSIT, new pairs (1:0, 100% new)", "mixed": "mixed 1:1",
         "retrieve-hsm": "RETRIEVE only (0:1), crypto hsm",
         "deposit-hsm": "DEPOSIT, re-used pairs (1:0), crypto hsm",
         "retrieve-cold": "RETRIEVE, smallest key cache",
         "retrieve-cold-hsm": "RETRIEVE, smallest key cache, crypto hsm"}
rows, floors = [], []
bad_total = {"mismatch": 0, "bad_tag": 0, "bad_reply": 0}
for c in cases:
    reps = [r["report"] for r in c["runs"] if r["report"]]
    thr = [j["throughput_rps"] for j in reps]
    dep = [j["deposit"]["rps"] for j in reps]
    ret = [j["retrieve"]["rps"] for j in reps]
    p50 = med([j["latency_us"]["p50"] for j in reps])
    p99 = med([j["latency_us"]["p99"] for j in reps])
    lost = sum(j.get("lost", 0) for j in reps)
    errs = {}
    for j in reps:
        for k, v in j.get("errors_by_status", {}).items():
            errs[k] = errs.get(k, 0) + v
        for k in bad_total:
            bad_total[k] += j.get("verify", {}).get(k, 0)
    wrapped = sum(j.get("generator", {}).get("new_pairs_wrapped", 0) for j in reps)
    st = c["kmsd_stats"]
    # Mean batch: the engine's requests/batches (engine_* on kmsd's exit
    # line since 2026-12-03; before, socket mode's batches=/requests=, and
    # in DPDK mode, which printed no batch count, answered requests
    # (keys_new + keys_reused + retrievals) per durable commit).
    answered = st.get("keys_new", 0) + st.get("keys_reused", 0) + st.get("retrievals", 0)
    if st.get("engine_batches"):
        mb, mb_src = st.get("engine_requests", 0) / st["engine_batches"], "requests/batches"
    elif st.get("batches"):
        mb, mb_src = st.get("requests", 0) / st["batches"], "requests/batches"
    elif st.get("commits"):
        mb, mb_src = answered / st["commits"], "answered/commits"
    else:
        mb, mb_src = None, None
    s = {"runs_ok": len(reps), "runs": len(c["runs"]),
         "rps": {"median": med(thr), "min": min(thr) if thr else None,
                 "max": max(thr) if thr else None, "runs": thr},
         "deposit_rps_median": med(dep), "retrieve_rps_median": med(ret),
         "latency_us_p50_median": p50, "latency_us_p99_median": p99,
         "lost": lost, "errors_by_status": errs, "new_pairs_wrapped": wrapped,
         "mean_batch": mb, "mean_batch_from": mb_src,
         "answered_per_commit": answered / st["commits"] if st.get("commits") else None,
         "loadgen_rc": [r["rc"] for r in c["runs"]]}
    # Where the workers' time went (kmsd's counters over the case's whole
    # kmsd, warm-ups and seeding included): us a request inside the
    # engine's batches (admission, crypto, lookups, the batch's commit,
    # replies; not the I/O around them) and us a record committing
    # deferred RETRIEVE records outside the batches.
    if st.get("engine_requests") and "batch_us_sum" in st:
        s["worker_us"] = {
            "batch_us_per_request": st["batch_us_sum"] / st["engine_requests"],
            "flush_us_per_record": (st.get("deferred_flush_us", 0) / st["deferred_records"])
            if st.get("deferred_records") else None,
            "deferred_records_per_request": st.get("deferred_records", 0) / st["engine_requests"],
            "wall_us_per_request_per_worker": (1e6 * c["workers"] / s["rps"]["median"])
            if s["rps"]["median"] else None}
    comps = []
    nw = c["workers"]
    s["misses_per_request"] = (st.get("cache_misses", 0) / answered) if answered else None
    # Issue 6: per mode, per worker for offload.
    if c["case"] in ("retrieve", "retrieve-deferred", "retrieve-deferred-thread") and off_ret and s["retrieve_rps_median"]:
        comps.append(("offload AEAD, 1 open + 1 box, x%d workers" % nw, off_ret * nw,
                      s["retrieve_rps_median"] / (off_ret * nw)))
    if c["case"] == "deposit-reuse" and off_dep and s["deposit_rps_median"]:
        comps.append(("offload AEAD, 2 opens + 1 box, x%d workers" % nw, off_dep * nw,
                      s["deposit_rps_median"] / (off_dep * nw)))
    if c["case"] == "retrieve-hsm" and hsm_ret and s["retrieve_rps_median"]:
        comps.append(("HSM CKM_AES_GCM, 1 open + 1 box", hsm_ret, s["retrieve_rps_median"] / hsm_ret))
    if c["case"] == "deposit-hsm" and hsm_dep and s["deposit_rps_median"]:
        comps.append(("HSM CKM_AES_GCM, 2 opens + 1 box", hsm_dep, s["deposit_rps_median"] / hsm_dep))
    if c["case"] in ("retrieve", "retrieve-deferred", "retrieve-deferred-thread") and s["retrieve_rps_median"] is not None:
        if aead:
            comps.append(("AEAD ceiling (one core)", aead, s["retrieve_rps_median"] / aead))
        if c["io"] == "socket" and udp:
            comps.append(("UDP echo", udp, s["retrieve_rps_median"] / udp))
    # Every batch, RETRIEVEs included, ends in one durable commit: the
    # commit ceiling applies to every case (a floor only for new pairs).
    if mb and s["rps"]["median"] is not None:
        ca = commits_at(mb)
        if ca:
            cap = ca * mb
            x = s["deposit_rps_median"] if c["case"].startswith("deposit") else s["rps"]["median"]
            s["commit_ceiling"] = {"commits_per_s_at_mean_batch": ca, "records_per_s": cap}
            comps.append(("durable commits x batch %.1f" % mb, cap, x / cap))
    # A new pair needs a new K from the HSM (RNG + wrap): for information.
    if c["case"] == "deposit-new" and hsm_new_key and s["deposit_rps_median"] is not None:
        comps.append(("HSM new_key, 1 session", hsm_new_key, s["deposit_rps_median"] / hsm_new_key))
    s["comparisons"] = [{"ceiling": n, "value": v, "ratio": r} for n, v, r in comps]
    c["summary"] = s
    tag = "%s, %s%s, %d worker%s" % (names[c["case"]], c["io"],
                                      " " + c["dpdk_layout"] if c.get("dpdk_layout") else "",
                                      c["workers"], "s" if c["workers"] > 1 else "")
    # Floors of issue 5
    def floor(name, ratio, pct):
        v = "PASS" if ratio * 100 >= pct else "BELOW FLOOR"
        floors.append({"floor": name, "case": tag, "ratio": ratio, "floor_pct": pct, "verdict": v})
    for n, v, r in comps:
        if c["case"].startswith("retrieve") and n.startswith("AEAD") and c["io"] == "dpdk":
            floor("RETRIEVE (DPDK) >= 25% of the AEAD ceiling", r, 25)
        if c["case"].startswith("retrieve") and n == "UDP echo":
            floor("socket RETRIEVE >= 50% of UDP echo", r, 50)
        if c["case"] == "deposit-new" and n.startswith("durable"):
            floor("DEPOSIT new pairs >= 50% of commits x batch", r, 50)
        if n.startswith("offload AEAD"):
            floor("offload >= 25% of its AEAD ceiling (issue 6)", r, 25)
        if n.startswith("HSM CKM_AES_GCM"):
            floor("hsm >= 60% of its HSM ceiling (issue 6)", r, 60)
    # The same RETRIEVE floors against the ceilings taken just before and
    # after this case's runs, the faster of the two (the stricter ratio);
    # when they differ by more than 1.25x the machine changed speed during
    # the case and the verdict says so.
    b = c.get("bracket") or {}
    x = s["retrieve_rps_median"]
    if x and c["case"].startswith("retrieve"):
        for key, name, pct, io in (("aead", "RETRIEVE (DPDK) >= 25% of the AEAD ceiling", 25, "dpdk"),
                                   ("udp", "socket RETRIEVE >= 50% of UDP echo", 50, "socket")):
            vs = [b[w][key] for w in ("before", "after") if b.get(w, {}).get(key)]
            if c["io"] != io or not vs:
                continue
            spread = max(vs) / min(vs)
            v = "PASS" if 100 * x / max(vs) >= pct else "BELOW FLOOR"
            if spread > 1.25:
                v = "UNRELIABLE (ceiling moved %.2fx)" % spread
            s.setdefault("bracket_ratios", {})[key] = {
                "before": b.get("before", {}).get(key), "after": b.get("after", {}).get(key),
                "ratio": x / max(vs), "spread": spread}
            floors.append({"floor": name + ", ceiling just before/after", "case": tag,
                           "ratio": x / max(vs), "floor_pct": pct, "verdict": v,
                           "ceilings": vs})
    rows.append((tag, s, comps, c))

print()
print("| case | KMS req/s: median [min-max] | compared with | ratio | p50 / p99 latency | mean batch | notes |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for tag, s, comps, c in rows:
    if c.get("skipped"):
        print("| %s | skipped | | | | | %s |" % (tag, c["skipped"]))
        continue
    r = s["rps"]
    kms = "%s [%s-%s] (n=%d)" % (fmt(r["median"]), fmt(r["min"]), fmt(r["max"]),
                                 s["runs_ok"]) if r["median"] is not None else "no result"
    cw = "; ".join("%s %s" % (n, fmt(v)) for n, v, _ in comps) or "-"
    cr = "; ".join("%.1f%%" % (100 * x) for _, _, x in comps) or "-"
    lat = "%.0f / %.0f us" % (s["latency_us_p50_median"], s["latency_us_p99_median"]) \
        if s["latency_us_p50_median"] is not None else "-"
    notes = []
    if s["lost"]:
        notes.append("lost %d" % s["lost"])
    if s["errors_by_status"]:
        notes.append("errors " + " ".join("%s=%d" % kv for kv in sorted(s["errors_by_status"].items())))
    if s["new_pairs_wrapped"]:
        notes.append("new pairs wrapped %d" % s["new_pairs_wrapped"])
    if any(x != 0 for x in s["loadgen_rc"]):
        notes.append("loadgen status %s" % s["loadgen_rc"])
    if c["kmsd_rc"] != 0:
        notes.append("kmsd status %d" % c["kmsd_rc"])
    polls = c["workers"] + 1 + (c.get("dpdk_layout") == "rx")   # + kms-loadgen
    if c["io"] == "dpdk" and polls > (os.cpu_count() or 1):
        notes.append("%d polling threads on %d CPUs" % (polls, os.cpu_count()))
    if s["mean_batch_from"] == "answered/commits":
        notes.append("batch = answered/commits")
    print("| %s | %s | %s | %s | %s | %s | %s |" % (
        tag, kms, cw, cr, lat, "%.1f" % s["mean_batch"] if s["mean_batch"] else "-",
        ", ".join(notes) or ""))

print()
print("Ceilings (kms-bench-ceil, same run): RETRIEVE AEAD %s req/s (1/(2 t_open + t_seal_keybox)),"
      " UDP echo %s round trips/s, durable commits/s %s (LMDB on %s)" % (
          fmt(aead), fmt(udp), ", ".join("%d: %s" % (b, fmt(v)) for b, v in commits),
          ceil.get("lmdb", {}).get("fstype", "?")))
print("Crypto-mode ceilings: offload RETRIEVE %s, DEPOSIT %s req/s a core; hsm RETRIEVE %s,"
      " DEPOSIT %s req/s (CKM_AES_GCM through hsm/, one HSM)" % (
          fmt(off_ret), fmt(off_dep), fmt(hsm_ret), fmt(hsm_dep)))
# Cold cache: the cost of one key cache miss, per mode, from a cold case and
# the warm case of the same mode, I/O and workers in this run.
cold = []
for tag, s, comps, c in rows:
    warm_case = {"retrieve-cold": "retrieve", "retrieve-cold-hsm": "retrieve-hsm"}.get(c["case"])
    if not warm_case:
        continue
    w = [x for x in rows if x[3]["case"] == warm_case and x[3]["io"] == c["io"]
         and x[3]["workers"] == c["workers"]]
    if not w or not s["retrieve_rps_median"] or not w[0][1]["retrieve_rps_median"] \
       or not s["misses_per_request"]:
        continue
    ws = w[0][1]
    extra = (1 / s["retrieve_rps_median"] - 1 / ws["retrieve_rps_median"]) * c["workers"]
    wm = ws["misses_per_request"] or 0
    per_miss = extra / (s["misses_per_request"] - wm) if s["misses_per_request"] > wm else None
    cold.append({"case": tag, "mode": "hsm" if "hsm" in c["case"] else "offload",
                 "cold_rps": s["retrieve_rps_median"], "warm_rps": ws["retrieve_rps_median"],
                 "misses_per_request": s["misses_per_request"], "warm_misses_per_request": wm,
                 "us_per_miss": per_miss * 1e6 if per_miss else None})
    print("Cold cache, %s: %s req/s vs %s warm, %.2f misses a request (warm %.3f): %s us a miss"
          " (ceiling: %s)" % (tag, fmt(s["retrieve_rps_median"]), fmt(ws["retrieve_rps_median"]),
                              s["misses_per_request"], wm,
                              "%.0f" % (per_miss * 1e6) if per_miss else "-",
                              "kms_hsm_key_load %.0f us" % (1e6 / ceil["hsm"]["key_load_ops"]["median"])
                              if "hsm" in c["case"] and ceil.get("hsm", {}).get("key_load_ops", {}).get("median")
                              else "kms_hsm_unwrap %.0f us" % (1e6 / ceil["hsm"]["unwrap_ops"]["median"])
                              if ceil.get("hsm", {}).get("unwrap_ops", {}).get("median") else "-"))
wt = [(tag, s["worker_us"]) for tag, s, _, _ in rows if s.get("worker_us")]
if wt:
    print()
    print("Where the workers' time went (kmsd's counters; us a request, per worker):")
    print("| case | in batches | deferred flushes | of which | wall time a request at the median rate |")
    print("| --- | --- | --- | --- | --- |")
    for tag, w in wt:
        fl = w["flush_us_per_record"]
        fr = w["deferred_records_per_request"]
        print("| %s | %.2f | %s | %s | %s |" % (
            tag, w["batch_us_per_request"],
            "%.2f" % (fl * fr) if fl is not None else "-",
            "%.2f us a record x %.2f records a request" % (fl, fr) if fl is not None else "-",
            "%.2f" % w["wall_us_per_request_per_worker"] if w["wall_us_per_request_per_worker"] else "-"))
    print("(the rest of the wall time: I/O, polling, and on a shared CPU whatever else ran)")
print()
mism = sum(bad_total.values())
floors.append({"floor": "0 mismatches (kms-loadgen verify: mismatch + bad_tag + bad_reply)",
               "case": "all runs", "value": mism, "detail": bad_total,
               "verdict": "PASS" if mism == 0 and any(r[1]["runs_ok"] for r in rows) else "BELOW FLOOR"})
print("Floors (issue 5):")
for f in floors:
    if "ratio" in f:
        print("  %-46s %-58s %6.1f%%  %s%s" % (f["floor"], f["case"], 100 * f["ratio"], f["verdict"],
              "  (vs %s)" % " / ".join(fmt(v) for v in f["ceilings"]) if f.get("ceilings") else ""))
    else:
        print("  %-46s %-58s %7s  %s" % (f["floor"], f["case"], f["value"], f["verdict"]))
if not any(c["io"] == "dpdk" for c in cases):
    print("  RETRIEVE (DPDK) >= 25% of the AEAD ceiling: not measured (run with --dpdk)")
    floors.append({"floor": "RETRIEVE (DPDK) >= 25% of the AEAD ceiling",
                   "verdict": "NOT MEASURED"})
busy = [r["busy_before_pct"] for c in cases for r in c["runs"]
        if r["busy_before_pct"] >= r.get("busy_limit_pct", 10)]
if busy:
    print("WARNING: the machine was still %d%% busy before some run after waiting"
          " (other load): those figures share the CPUs (busy_before_pct in the JSON)" % max(busy))
doc = {
    "benchmark": "bench_kms",
    "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
    "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
    "revision": rev, "build": build,
    "method": {"seconds": float(secs), "runs": int(runs), "warmup_s": float(warmup),
               "shape": "closed", "outstanding": int(outstanding),
               "population_users": int(users), "new_pair_populations": int(nnew),
               "new_pair_population_users": int(new_users),
               "kmsd_config": open(conf).read(),
               "commit_ceiling": "durable commits/s at the KMS's mean batch, linear in"
                                 " log2(batch) between the measured batch sizes, x mean batch"},
    "ceilings": ceil, "cases": cases, "floors": floors, "cold_cache": cold,
    "crypto_mode_ceilings": {"offload_retrieve": off_ret, "offload_deposit": off_dep,
                             "hsm_retrieve": hsm_ret, "hsm_deposit": hsm_dep},
}
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
print("results: %s" % out)
PY

# The second system (MIKEY-IBAKE): its crypto against a 1024-bit modexp and
# the mailbox's sessions against its own store, on the same disk.
if [ -x "$BUILD/perf/kms-bench-ibe" ]; then
	echo
	echo "== MIKEY-IBAKE (kms-bench-ibe) =="
	"$BUILD/perf/kms-bench-ibe" --seconds "$CEIL_SECS" --runs "$CEIL_RUNS" \
		--dir "$W" | tee "$W/ibe.txt" || echo "kms-bench-ibe failed"
fi
