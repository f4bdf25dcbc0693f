#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# kms-loadgen --io dpdk against kmsd --io dpdk, both on one net_memif link:
#
#   [ns kmse2e-c-PID]                          [ns kmse2e-k-PID]
#   kms-loadgen net_memif0 (client)  <-------> kmsd net_memif0 (server)
#   192.0.2.2 / 2001:db8::2       $W/memif.sock  192.0.2.1 / 2001:db8::1
#
# A population from `kmsctl enroll-bulk`, then short closed-loop runs:
# IPv4 with the KMS's MAC resolved by ARP (DEPOSIT:RETRIEVE 1:1), IPv6
# with it resolved by neighbour discovery, and one with kms-mac given.
# Each must exit 0 with answers and no verification failure in its JSON
# report; kmsd must then exit 0 on SIGTERM with no bad checksum counted.
# Usage: test_loadgen_dpdk.sh BUILD_DIR. Exit 77 (skipped) when network
# namespaces cannot be made (not root) or DPDK has no memif driver.
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
# Busy pollers on few CPUs: kmsd's RX lcore and one worker, the load
# generator's loop.
KMS_DPDK_WORKERS=${KMS_DPDK_WORKERS:-1}
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=dpdk_lib.sh
. "$HERE/dpdk_lib.sh"

LOADGEN=$BIN/perf/loadgen/kms-loadgen
LG_DURATION=${KMS_E2E_LG_DURATION:-2}
LG_TIMEOUT=${KMS_E2E_LG_TIMEOUT:-120}   # seconds, a whole run at most

dpdk_require_netns
# memif_available: DPDK's net_memif driver is installed (Debian ships the
# PMDs as plugins that the EAL loads from its driver directory).
memif_available() {
  local libdir f
  libdir=$(pkg-config --variable=libdir libdpdk 2>/dev/null || true)
  for f in ${libdir:+"$libdir"/dpdk/pmds-*/librte_net_memif.so*} \
           /usr/lib/*/dpdk/pmds-*/librte_net_memif.so* \
           /usr/lib*/dpdk/pmds-*/librte_net_memif.so* \
           /usr/local/lib*/dpdk/pmds-*/librte_net_memif.so*; do
    [ -e "$f" ] && return 0
  done
  ldconfig -p 2>/dev/null | grep -q librte_net_memif
}
memif_available || { echo "SKIP: DPDK's net_memif driver is not installed"; exit 77; }
[ -x "$LOADGEN" ] || { echo "FAIL: $LOADGEN not built"; exit 1; }
sweep_stale
KMS_E2E_PORT=$KMS_UDP_PORT
KMS_E2E_EXTRA_CONF=$(dpdk_conf)
# KMS_E2E_DEFERRED=worker|thread: RETRIEVE records deferred, committed by
# the worker or by its commit thread (store.deferred_commit).
if [ -n "${KMS_E2E_DEFERRED:-}" ]; then
  KMS_E2E_EXTRA_CONF+=$'\n[store]\nretrieve_records = deferred\ndeferred_commit = '"$KMS_E2E_DEFERRED"
fi
setup_env

SOCK=$W/memif.sock
LG_RUNS=0
make_netns "$NS_KMS" noipv6
make_netns "$NS_CLI" noipv6
dpdk_kmsd "net_memif0,role=server,socket=$SOCK,socket-abstract=no,mac=$KMS_MAC"
kmsd_pre_start_more() { rm -f "$SOCK"; }

"$KMSCTL" -c "$W/kms.conf" init >/dev/null
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 64 --as 1 --out "$W/pop.txt" \
  > "$W/enroll.log" 2>&1 || { cat "$W/enroll.log"; echo "FAIL: kmsctl enroll-bulk"; exit 1; }
pass "population: $(grep -c '^user ' "$W/pop.txt") users, $(grep -c '^as ' "$W/pop.txt") AS"

# json_check FILE: "answered ok mismatch bad_tag bad_reply unexpected io_stats"
json_check() {
  python3 - "$1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
v = j["verify"]
print(j["answered"], j["ok"], v["mismatch"], v["bad_tag"], v["bad_reply"],
      v["unexpected_status"], j.get("io_stats", "").replace(" ", ","))
PY
}

# lg_run NAME SPEC [OPTIONS...]: one kms-loadgen run in NS_CLI as the
# memif client; checks its exit status and its JSON report.
lg_run() {
  local name=$1 spec=$2 rc=0 out answered ok mism badtag badrep unexp iost
  shift 2
  LG_RUNS=$((LG_RUNS + 1))
  ip netns exec "$NS_CLI" timeout -k 5 "$LG_TIMEOUT" "$LOADGEN" \
    --no-huge -m 256 --no-pci --file-prefix "$DPDK_PREFIX-lg-$LG_RUNS" \
    --lcores "0@($CPUS)" \
    "--vdev=net_memif0,role=client,socket=$SOCK,socket-abstract=no,mac=$CLI_MAC" \
    -- --io dpdk --dpdk "$spec" --population "$W/pop.txt" \
    --duration "$LG_DURATION" --warmup 0.5 --pairs 32 --outstanding 8 \
    --timeout-ms 2000 --quiet --seed "$LG_RUNS" --json "$W/$name.json" "$@" \
    > "$W/$name.log" 2>&1 </dev/null || rc=$?
  sed 's/^/  | /' "$W/$name.log" | grep -v '^  | EAL: \|TELEMETRY' || true
  if [ "$rc" -ne 0 ]; then
    fail "$name: kms-loadgen exit status $rc"
    return 0
  fi
  pass "$name: kms-loadgen exit 0"
  if ! out=$(json_check "$W/$name.json" 2>&1); then
    fail "$name: JSON report unreadable: $out"
    return 0
  fi
  read -r answered ok mism badtag badrep unexp iost <<<"$out"
  [ "$answered" -gt 0 ] && [ "$ok" -gt 0 ] \
    && pass "$name: answered=$answered ok=$ok" \
    || fail "$name: answered=$answered ok=$ok"
  [ "$mism" = 0 ] && [ "$badtag" = 0 ] && [ "$badrep" = 0 ] \
    && pass "$name: mismatch=0 bad_tag=0 bad_reply=0 (unexpected_status=$unexp)" \
    || fail "$name: mismatch=$mism bad_tag=$badtag bad_reply=$badrep"
  echo "  io_stats: ${iost//,/ }"
  case ",$iost," in
    *,drop_bad_csum=*) fail "$name: the load generator saw bad checksums" ;;
  esac
  LAST_IO_STATS=$iost
}

start_kmsd

# 1. IPv4, the KMS's MAC by ARP, DEPOSIT:RETRIEVE 1:1.
LAST_IO_STATS=""
lg_run v4-arp "port=0,ip=$CLI_IP4,kms-ip=$KMS_IP4,kms-port=$KMS_UDP_PORT,sport=40000,queues=$KMS_DPDK_WORKERS" --mix 1:1
case ",$LAST_IO_STATS," in
  *,arp_sent=0,*|",,") fail "v4-arp: no ARP request counted" ;;
  *,arp_sent=*) pass "v4-arp: the KMS's MAC was resolved by ARP" ;;
esac

# 2. IPv6, the KMS's MAC by neighbour discovery (a new memif connection to
#    the same kmsd).
LAST_IO_STATS=""
lg_run v6-nd "port=0,ip6=$CLI_IP6,kms-ip6=$KMS_IP6,kms-port=$KMS_UDP_PORT,sport=40001,queues=$KMS_DPDK_WORKERS" --mix 1:1
case ",$LAST_IO_STATS," in
  *,nd_sent=0,*|",,") fail "v6-nd: no neighbour solicitation counted" ;;
  *,nd_sent=*) pass "v6-nd: the KMS's MAC was resolved by neighbour discovery" ;;
esac

# 3. IPv4 with kms-mac given: no resolution; deposits only.
lg_run v4-mac "port=0,ip=$CLI_IP4,kms-ip=$KMS_IP4,kms-port=$KMS_UDP_PORT,sport=40002,kms-mac=$KMS_MAC,mbufs=2047,queues=$KMS_DPDK_WORKERS" --mix 1:0

# 4. kmsd: still up, exits 0 on SIGTERM, counted no bad checksum from us.
if ! kmsd_alive; then
  rc=0; wait "$KMSD_PID" || rc=$?; KMSD_PID=""
  fail "kmsd is gone (exit status $rc)"
elif stop_kmsd; then
  pass "kmsd: SIGTERM, exit 0"
  grep 'stats:' "$W/kmsd.log" | sed 's/^/  /'
  n=$(stat_value bad_csum)
  [ "$n" = 0 ] && pass "kmsd: bad_csum=0" || fail "kmsd: bad_csum=${n:-none}"
  n=$(stat_value requests)
  [ -n "$n" ] && [ "$n" -gt 0 ] && pass "kmsd: requests=$n" || fail "kmsd: requests=${n:-none}"
  if [ -n "${KMS_E2E_DEFERRED:-}" ]; then
    n=$(stat_value deferred_records); f=$(stat_value deferred_failures)
    [ -n "$n" ] && [ "$n" -gt 0 ] && [ "$f" = 0 ] \
      && pass "kmsd: deferred RETRIEVE records committed by the $KMS_E2E_DEFERRED: $n, failures 0" \
      || fail "kmsd: deferred_records=${n:-none} deferred_failures=${f:-none}"
    t=$(stat_value deferred_flush_us)
    [ -n "$t" ] && [ "$t" -gt 0 ] \
      && pass "kmsd: time in deferred flushes counted: ${t} us" \
      || fail "kmsd: deferred_flush_us=${t:-none}"
  fi
else
  fail "kmsd exit status on SIGTERM"
fi
finish
