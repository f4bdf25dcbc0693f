#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# kmsd --io dpdk on net_memif, end to end through a DPDK peer process:
#
#   [ns kmse2e-c-PID]                                     [ns kmse2e-k-PID]
#   kms-client --> tp-PID (kernel tap, 192.0.2.2/24)
#                  dpdk-testpmd: net_tap0 <-io fwd-> net_memif0 (client)
#                                                      |  $W/memif.sock
#                                                 kmsd net_memif0 (server)
#
# Runs the checks of test_e2e.sh (sections 1-11) with the unmodified
# kms-client through that path, raw frames of every drop class and good raw
# requests, then makes the memif peer go away (SIGKILL, then SIGTERM, a few
# times): kmsd must stay up and serve the peer's next connection.
# Usage: test_dpdk_memif.sh BUILD_DIR. Exit 77 (skipped) only when network
# namespaces cannot be made (not root).
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=dpdk_lib.sh
. "$HERE/dpdk_lib.sh"
# shellcheck source=test_e2e.sh
. "$HERE/test_e2e.sh"       # e2e_checks

dpdk_require_netns
sweep_stale
command -v "$TESTPMD" >/dev/null || { echo "FAIL: $TESTPMD not found (Debian package dpdk-dev)"; exit 1; }
KMS_E2E_PORT=$KMS_UDP_PORT
KMS_E2E_EXTRA_CONF=$(dpdk_conf)
setup_env

SOCK=$W/memif.sock TAP=tp-$$
CYCLES=${KMS_E2E_MEMIF_CYCLES:-4}
make_netns "$NS_KMS" noipv6
make_netns "$NS_CLI" noipv6
use_client_wrap ip netns exec "$NS_CLI"
dpdk_kmsd "net_memif0,role=server,socket=$SOCK,socket-abstract=no,mac=$KMS_MAC"
# A kmsd killed with SIGKILL leaves its socket file behind and the memif
# server of a new one cannot bind it: remove it, as an operator would.
kmsd_pre_start_more() { rm -f "$SOCK"; }

# peer_up: (re)start testpmd and wait until the client's kernel resolves
# kmsd's MAC through tap -> testpmd -> memif -> kmsd.
peer_up() {
  start_testpmd "$SOCK" "$TAP" || return 1
  wait_neigh "$KMS_IP4" 30 || {
    echo "no ARP answer from kmsd through memif within 30s; testpmd log:"
    stop_testpmd TERM || true
    cat "$W/testpmd.$TESTPMD_STARTS.log"; return 1; }
}
# testpmd's memif client does not reconnect to a restarted server: give
# every kmsd start a fresh peer.
kmsd_post_start() {
  stop_testpmd TERM || true
  peer_up || die_with_kmsd "no path to kmsd through memif"
}

# one_exchange TAG: a deposit and a retrieval (A -> C), same K both sides
one_exchange() {
  $CLIENT token --key "$W/a.key" --peer $C --out "$W/$1.tok" &&
  $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/$1.tok" \
    --params-out "$W/$1.params" --reply-out "$W/$1.reply" >/dev/null &&
  $CLIENT open --key "$W/a.key" --token "$W/$1.tok" --reply "$W/$1.reply" --out "$W/$1.ka" &&
  $CLIENT retrieve --server "$SERVER" --key "$W/c.key" --params "$W/$1.params" \
    --out "$W/$1.kc" >/dev/null &&
  [ -n "$(value "$W/$1.ka" k)" ] && [ "$(value "$W/$1.ka" k)" = "$(value "$W/$1.kc" k)" ]
}

e2e_checks      # sections 1-11; ends with kmsd stopped

# 12. ARP answered by kmsd through memif; raw frames of every drop class
#     are dropped without a reply; good requests (untagged, tagged) are
#     answered.
start_kmsd
[ "$(neigh_of $KMS_IP4 | cut -d' ' -f1)" = "$KMS_MAC" ] \
  && pass "ARP through memif: $KMS_IP4 is kmsd's MAC" || fail "ARP: $(neigh_of $KMS_IP4)"
raw_probes "$W/deposit.req" > "$W/probes.txt" 2>&1 || true
grep -v '^sent \|^ok: \|^FAIL: ' "$W/probes.txt" | sed 's/^/  /' || true
report_lines "$W/probes.txt"

# 13. The memif peer goes away (SIGKILL, SIGTERM alternately): kmsd stays
#     up, and serves the peer when it comes back.
for i in $(seq 1 "$CYCLES"); do
  sig=KILL; [ $((i % 2)) -eq 0 ] && sig=TERM
  one_exchange "m$i" && pass "cycle $i: deposit and retrieval through memif" \
    || fail "cycle $i: exchange before the peer left"
  stop_testpmd $sig || true
  sleep 1
  if kmsd_alive; then pass "cycle $i: kmsd survived its memif peer's SIG$sig"
  else fail "cycle $i: kmsd died when its memif peer got SIG$sig"; break; fi
  peer_up || { fail "cycle $i: peer did not come back"; break; }
done
if kmsd_alive; then
  one_exchange m-last && pass "deposit and retrieval after the peer came back" \
    || fail "no service after the peer came back"
fi

# 14. SIGTERM: exit 0, every counter printed, the probes counted.
if ! kmsd_alive; then
  rc=0; wait "$KMSD_PID" || rc=$?; KMSD_PID=""
  fail "kmsd is gone (exit status $rc$( [ $rc -gt 128 ] && echo ", signal $((rc - 128))"))"
elif stop_kmsd; then
  pass "SIGTERM: exit 0"
  check_drop_counters "$W/probes.txt" "$W/kmsd.log"
  grep 'stats:' "$W/kmsd.log" | sed 's/^/  /'
else
  fail "kmsd exit status on SIGTERM"
fi
stop_testpmd TERM || true
finish
