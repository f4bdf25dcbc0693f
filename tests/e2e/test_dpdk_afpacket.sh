#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# kmsd --io dpdk on net_af_packet, end to end through a kernel peer:
#
#   [ns kmse2e-c-PID]                          [ns kmse2e-k-PID]
#   kms-client, UDP socket                      kmsd (EAL --no-huge --no-pci
#   vc-PID 192.0.2.2/24 2001:db8::2/64 <-veth-> vk-PID  --vdev=net_af_packet0)
#                                               (up, no IP in the kernel)
#
# The client's kernel reaches kmsd with no static neighbour entries, so
# kmsd must answer ARP and neighbour solicitations itself. Runs the checks
# of test_e2e.sh (sections 1-11) with the unmodified kms-client, then a
# deposit and a retrieval over IPv6, raw frames of every drop class (no
# reply, counted) and well-formed raw requests (untagged, 802.1Q-tagged,
# IPv6: answered with valid checksums), and a clean SIGTERM exit.
# Usage: test_dpdk_afpacket.sh BUILD_DIR. Exit 77 (skipped) only when
# network namespaces cannot be made (not root).
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
KMS_E2E_PORT=$KMS_UDP_PORT
KMS_E2E_EXTRA_CONF=$(dpdk_conf)
setup_env

VK=vk-$$ CLI_IF=vc-$$
make_netns "$NS_KMS" noipv6
make_netns "$NS_CLI"
ip link add "$CLI_IF" netns "$NS_CLI" address "$CLI_MAC" type veth \
  peer name "$VK" netns "$NS_KMS" address "$KMS_MAC"
ip -n "$NS_KMS" link set "$VK" up
ip -n "$NS_CLI" addr add "$CLI_IP4/24" dev "$CLI_IF"
ip -n "$NS_CLI" addr add "$CLI_IP6/64" dev "$CLI_IF" nodad
ip -n "$NS_CLI" link set "$CLI_IF" up
# A local sender on a veth leaves the UDP checksum to "the NIC" (partial);
# af_packet hands DPDK the frame as is, without the kernel's "checksum not
# ready" status, so kmsd would see a wrong checksum: the peer computes it.
if [ "${KMS_E2E_VETH_TXCSUM:-off}" = off ]; then
  ip netns exec "$NS_CLI" ethtool -K "$CLI_IF" tx off >/dev/null
fi
use_client_wrap ip netns exec "$NS_CLI"
# One queue pair per worker (kmsd polls every RX queue: af_packet spreads
# flows over all of its sockets).
dpdk_kmsd "net_af_packet0,iface=$VK,qpairs=$KMS_DPDK_QUEUES"
# After every start: the client's kernel must resolve kmsd's MAC by ARP.
kmsd_post_start() {
  wait_neigh "$KMS_IP4" 20 || die_with_kmsd "no ARP answer from kmsd for $KMS_IP4 within 20s"
}

e2e_checks      # sections 1-11; ends with kmsd stopped

# 12. ARP and ND were answered by this kmsd (no static entries anywhere;
#     the client's neighbour cache is emptied first).
ip -n "$NS_CLI" neigh flush dev "$CLI_IF"
start_kmsd
[ "$(neigh_of $KMS_IP4 | cut -d' ' -f1)" = "$KMS_MAC" ] \
  && pass "ARP: the client's kernel resolved $KMS_IP4 to kmsd's MAC" || fail "ARP: $(neigh_of $KMS_IP4)"
if wait_neigh "$KMS_IP6" 20 && [ "$(neigh_of $KMS_IP6 | cut -d' ' -f1)" = "$KMS_MAC" ]; then
  pass "ND: the client's kernel resolved $KMS_IP6 to kmsd's MAC"
else
  fail "ND: $(ip -n "$NS_CLI" -6 neigh)"
fi

# 13. One deposit and one retrieval over IPv6.
D=sip:dave@example.org E=sip:erin@example.org
enroll user $D d; enroll user $E e
S6="[$KMS_IP6]:$KMS_UDP_PORT"
$CLIENT token --key "$W/d.key" --peer $E --out "$W/ea6.tok"
if $CLIENT deposit --server "$S6" --key "$W/mb.key" --token "$W/ea6.tok" \
     --params-out "$W/p6.txt" --reply-out "$W/r6.txt" --save-request "$W/deposit6.req" >/dev/null \
   && $CLIENT open --key "$W/d.key" --token "$W/ea6.tok" --reply "$W/r6.txt" --out "$W/kd6.txt" \
   && $CLIENT retrieve --server "$S6" --key "$W/e.key" --params "$W/p6.txt" --out "$W/ke6.txt" >/dev/null \
   && [ -n "$(value "$W/kd6.txt" k)" ] && [ "$(value "$W/kd6.txt" k)" = "$(value "$W/ke6.txt" k)" ]; then
  pass "IPv6: deposit and retrieval over $S6, same K"
else
  fail "IPv6 deposit/retrieve over $S6"
fi

# 14. Raw frames: every drop class is dropped without a reply; good
#     requests (untagged, 802.1Q-tagged, IPv6) are answered.
raw_probes "$W/deposit6.req" v6 nofrag4 > "$W/probes.txt" 2>&1 || true
grep -v '^sent \|^ok: \|^FAIL: ' "$W/probes.txt" | sed 's/^/  /' || true
report_lines "$W/probes.txt"
kmsd_alive && pass "kmsd alive after the probes" || fail "kmsd died during the probes"

# 15. SIGTERM: exit 0, every counter printed, the probes counted.
if stop_kmsd; then pass "SIGTERM: exit 0"; else fail "kmsd exit status on SIGTERM"; fi
check_drop_counters "$W/probes.txt" "$W/kmsd.log"
arp=$(stat_value arp); nd=$(stat_value nd)
[ "${arp:-0}" -ge 1 ] && [ "${nd:-0}" -ge 1 ] && pass "arp=$arp nd=$nd answered" || fail "arp=${arp:-none} nd=${nd:-none}"
grep 'stats:' "$W/kmsd.log" | sed 's/^/  /'
finish
