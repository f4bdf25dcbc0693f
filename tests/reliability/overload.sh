#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Overload (issue 9): kms-loadgen offers twice kmsd's measured capacity for
# a bounded time. The queues in front of kmsd are bounded (the kernel UDP
# receive buffer, SO_RCVBUF 4 MiB asked, and one SPSC ring of 1024 slots
# per worker), so the excess must be dropped and counted, kmsd's resident
# memory must stay flat, and the requests it does serve must have a bounded
# latency: at most the time the full queues take to drain at capacity.
# kmsd has no busy status on this path: its RX thread drops a request
# whose worker ring is full (counted ring_full); the kernel drops what
# does not fit in the socket buffer (counted in /proc/net/udp "drops", and
# by kmsd as io_stats sock_drops). With one worker (KMS_E2E_WORKERS=1)
# there is no RX thread and no ring: the socket buffer is the only queue.
#
# Figure: offered, served, dropped (ring_full, socket drops), lost (the
# load generator's unanswered), RSS min/max, p99 of the served.
# Usage: overload.sh BUILD_DIR [SECONDS]   (CI: 8 s)
#   OVERLOAD_CAP_OUTSTANDING (default 256): in-flight requests of the
#   closed-loop capacity run. With 64 the figure is 0.5-0.8x what kmsd
#   serves under an open loop (fewer requests per batch, so more commits per
#   request), and "2x" of it was as little as 1.06x real overload.
#   OVERLOAD_FACTOR (default 2): offered = factor x capacity.
BIN=$1
SECS=${2:-8}
. "$(dirname "$0")/../e2e/lib.sh"
# A sanitizer build is not what this measures (ASan keeps freed memory in
# quarantine and reserves terabytes of shadow address space).
if [ "${KMS_SANITIZED:-0}" = 1 ] ||
   ldd "$BIN/dataplane/kmsd" 2>/dev/null | grep -q libasan; then
  echo "SKIP: kmsd is an AddressSanitizer build"; exit 77
fi
LOADGEN=$BIN/perf/loadgen/kms-loadgen
# Anonymous RSS may grow by at most 32 MiB: every queue is preallocated
# (rings, replay windows, key caches), so growth under a sustained 2x load
# would be a leak or an unbounded queue; 32 MiB leaves room for glibc arenas
# and OpenSSL's per-thread state settling in.
RSS_GROWTH_MAX_KB=$((32 * 1024))

setup_env
# A 2x load of DEPOSITs and RETRIEVEs adds ~5 MiB a second to the store:
# lib.sh's 64 MiB map would fill (STORE_FULL) within the run.
sed -i 's/^map_size_mb = .*/map_size_mb = 2048/' "$W/kms.conf"
# The replay window must hold every nonce answered within 2 x skew + 1 s
# (config/kms.conf.example): this whole test (~15 s at up to 2x capacity)
# fits in 2 M entries a worker at a load factor under 1/2. The default
# (262,144) is sized for ~4 k req/s a worker and refuses BUSY beyond it
# (one CI run of the 1-worker case served ~300 k requests: 1 BUSY).
sed -i 's/^\[security\]$/[security]\nreplay_capacity = 2097152/' "$W/kms.conf"
grep -q '^replay_capacity = 2097152' "$W/kms.conf" ||
  printf '[security]\nreplay_capacity = 2097152\n' >> "$W/kms.conf"
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 200 --as 2 --out "$W/pop.txt" >/dev/null
start_kmsd
PORT=${SERVER##*:}
LG=("$LOADGEN" --population "$W/pop.txt" --server "$SERVER" --mix 1:1 --pairs 64
    --seed-deposits 64 --new-pairs 10 --quiet)

# udp_drops: kmsd's socket's drop counter (/proc/net/udp, last column)
udp_drops() {
  awk -v p="$(printf ':%04X' "$PORT")" '$2 ~ p"$" {print $NF; f=1} END {if (!f) print -1}' /proc/net/udp
}
# (the sampler below also reads the socket's rx_queue bytes, 5th column)
# rcvbuf: the socket's receive buffer as the kernel sized it (ss skmem rb)
rcvbuf() {
  ss -u -a -n -m "sport = :$PORT" 2>/dev/null | sed -n 's/.*skmem:(.*,rb\([0-9]*\),.*/\1/p' | head -1
}
stats() { "$KMSCTL" -c "$W/kms.conf" stats --json > "$1"; }
jq_() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

# 1. Capacity: closed loop.
CAP_OUT=${OVERLOAD_CAP_OUTSTANDING:-256}
"${LG[@]}" --outstanding "$CAP_OUT" --duration 3 --warmup 0.5 --seed 1 --json "$W/cap.json" \
  > "$W/cap.txt" 2>&1 || { fail "capacity run: $(tail -3 "$W/cap.txt")"; finish; }
CAP=$(jq_ "$W/cap.json" 'int(j["throughput_rps"])')
[ "$CAP" -gt 0 ] || { fail "capacity 0: $(cat "$W/cap.txt")"; finish; }
RATE=$(awk -v c="$CAP" -v f="${OVERLOAD_FACTOR:-2}" 'BEGIN { printf "%d", c * f }')
RB=$(rcvbuf); RB=${RB:-8388608}
# The a-priori longest a served request can wait (the load generator's
# timeout is set above it, so served latencies are not cut off; the check
# uses a tighter bound computed from the run): every queue in front of the
# workers full, drained at capacity. Datagrams in the socket buffer: each
# costs its skb's truesize (>= 512 bytes for these ~300-byte datagrams on
# loopback), so at most RB/512 of them; plus 2 rings of 1024. x1.5 for the
# noise of a shared 2-CPU machine, +250 ms for one batch's commit and the
# scheduler.
WORKERS=$(sed -n 's/.* \([0-9]*\) workers.*/\1/p' "$W/kmsd.log" | tail -1)
QMAX=$((RB / 512 + 1024 * WORKERS))
P99_BOUND_MS=$(( (QMAX * 1000 * 3 / 2) / CAP + 250 ))
TIMEOUT_MS=$((P99_BOUND_MS + 1000))   # served latencies measured uncensored
echo "capacity: $CAP verified req/s (closed loop, $CAP_OUT outstanding, p99 $(jq_ "$W/cap.json" 'j["latency_us"]["p99"]') us); offering $RATE req/s for $SECS s"
echo "queues: socket rcvbuf $RB bytes (<= $((RB / 512)) datagrams), $WORKERS rings x 1024 -> p99 bound $P99_BOUND_MS ms, loadgen timeout $TIMEOUT_MS ms"

# 2. Open loop at twice the capacity, RSS sampled every 0.2 s.
stats "$W/before.json"
D0=$(udp_drops)
M0=$(stat -c %s "$W/store/data.mdb")
: > "$W/rss.txt"
( while kill -0 "$KMSD_PID" 2>/dev/null; do
    q=$(awk -v p="$(printf ':%04X' "$PORT")" '$2 ~ p"$" {split($5, t, ":"); print t[2]}' /proc/net/udp)
    awk -v q="$((16#${q:-0}))" '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} END {print r, a, q}' \
      "/proc/$KMSD_PID/status" >> "$W/rss.txt" 2>/dev/null
    sleep 0.2
  done ) &
SAMPLER=$!
rc=0
"${LG[@]}" --rate "$RATE" --duration "$SECS" --warmup 1 --seed 2 --timeout-ms "$TIMEOUT_MS" \
  --json "$W/over.json" > "$W/over.txt" 2>&1 || rc=$?
D1=$(udp_drops)
M1=$(stat -c %s "$W/store/data.mdb")
kill_sampler() { kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; }
kill_sampler
stats "$W/after.json"
cat "$W/over.txt"
[ -s "$W/over.json" ] || { fail "overload run: exit $rc, no report"; finish; }

# 3. Alive and answering afterwards: a short closed-loop run, all verified.
"${LG[@]}" --outstanding 16 --duration 1 --warmup 0.2 --seed 3 --json "$W/after-run.json" \
  > "$W/after-run.txt" 2>&1 && kmsd_alive \
  && pass "after the overload kmsd answers: $(jq_ "$W/after-run.json" 'str(j["ok"]) + " verified in 1 s, p99 " + str(j["latency_us"]["p99"]) + " us"')" \
  || fail "after the overload: kmsd alive? $(kmsd_alive && echo yes || echo no); $(tail -3 "$W/after-run.txt")"

python3 - "$W/over.json" "$W/before.json" "$W/after.json" "$W/rss.txt" "$D0" "$D1" \
  "$RATE" "$CAP" "$P99_BOUND_MS" "$RSS_GROWTH_MAX_KB" "$rc" "$M0" "$M1" "$WORKERS" <<'PY' > "$W/figure.txt" 2>&1
import json, os, sys
o = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2])); a = json.load(open(sys.argv[3]))
rss = [tuple(map(int, l.split())) for l in open(sys.argv[4]) if len(l.split()) == 3]
d0, d1, rate, cap, p99b, growmax, rc, m0, m1, workers = map(int, sys.argv[5:15])
mgrow = (m1 - m0) // 1024  # KiB the store file grew by during the run
io_b, io_a = b["io_stats"], a["io_stats"]
ring = io_a["ring_full"] - io_b["ring_full"]
ksock = io_a["sock_drops"] - io_b["sock_drops"]  # kmsd's own count of the kernel's drops
rx = io_a["rx"] - io_b["rx"]
sock = d1 - d0
secs = o["measured_s"]
v = o["verify"]
p99 = o["latency_us"]["p99"] / 1000.0
vm = [r[0] for r in rss]; an = [r[1] for r in rss]
served_rps = o["ok"] / secs
maxq = max(r[2] for r in rss)
# The bound from this run: a served request waited behind at most a full
# ring of its worker (1024) and what the socket held (<= maxq / 512
# datagrams), drained at the served rate per worker; x1.5 and +250 ms for
# one commit and a noisy shared machine. Never above the a-priori bound.
p99b_run = min(p99b, 1.5 * (1024 + maxq / 512) / max(served_rps / workers, 1) * 1000 + 250)
print(f"FIGURE overload: capacity {cap}/s; offered {rate}/s for {secs:.1f} s (sent {o['sent']}, {o['sent']/secs:.0f}/s); "
      f"served {o['ok']} ({served_rps:.0f}/s, {100.0*o['ok']/max(o['sent'],1):.1f}% of offered, {served_rps/cap:.2f}x capacity); "
      f"dropped: kmsd ring_full {ring}, kernel socket drops {sock} (kmsd's sock_drops {ksock}; whole run incl. warm-up); loadgen lost {o['lost']}, late {v['late']}; "
      f"errors {o['errors_by_status']}; RSS min/max {min(vm)/1024:.1f}/{max(vm)/1024:.1f} MiB "
      f"(anon {min(an)/1024:.1f}/{max(an)/1024:.1f} MiB, {len(rss)} samples; store file +{mgrow/1024:.1f} MiB); "
      f"socket receive queue max {max(r[2] for r in rss)/1024:.0f} KiB; p99 of served {p99:.1f} ms "
      f"(p50 {o['latency_us']['p50']/1000:.1f}, max {o['latency_us']['max']/1000:.1f}; bound {p99b_run:.0f} ms)")
fails = []
if rc not in (0,): fails.append(f"kms-loadgen exit {rc}")
if v["mismatch"] or v["bad_tag"] or v["bad_reply"]:
    fails.append(f"verification: mismatch {v['mismatch']} bad_tag {v['bad_tag']} bad_reply {v['bad_reply']}")
# Anonymous memory (heap, rings, caches, replay windows) must stay flat;
# VmRSS also counts the LMDB map's file pages, which grow with the store
# itself (every served DEPOSIT is a record): that growth is allowed on top.
if max(an) - min(an) > growmax:
    fails.append(f"anonymous RSS grew {(max(an)-min(an))/1024:.1f} MiB (> {growmax/1024:.0f} MiB)")
if max(vm) - min(vm) > growmax + mgrow:
    fails.append(f"VmRSS grew {(max(vm)-min(vm))/1024:.1f} MiB (> {growmax/1024:.0f} MiB + store growth {mgrow/1024:.1f} MiB)")
if o["errors_by_status"]:
    fails.append(f"ERROR replies {o['errors_by_status']} (kmsd has no busy status: overload must only drop; "
                 f"replay_busy {a['engine']['replay_busy'] - b['engine']['replay_busy']})")
if p99 > p99b_run: fails.append(f"p99 of served {p99:.1f} ms > bound {p99b_run:.0f} ms")
if ring + sock + o["lost"] <= 0: fails.append("nothing dropped or lost: not overloaded")
if len(rss) < 5: fails.append("too few RSS samples")
if d0 < 0 or d1 < 0: fails.append("kmsd's socket not found in /proc/net/udp")
# kmsctl stats' sock_drops is the same counter as /proc/net/udp's (read a
# moment apart: equal, or higher for drops between the two reads).
elif ksock < sock: fails.append(f"kmsd io_stats sock_drops {ksock} < /proc/net/udp drops {sock}")
print("CHECKS " + ("; ".join(fails) if fails else "ok"))
PY
cat "$W/figure.txt"
grep -q '^CHECKS ok$' "$W/figure.txt" && pass "overload: bounded queues, flat memory, bounded latency, excess dropped and counted" \
  || fail "overload: $(sed -n 's/^CHECKS //p' "$W/figure.txt")"
stop_kmsd || fail "kmsd exit"
grep 'stats: rx=' "$W/kmsd.log" | sed 's/^/   /' || true
finish
