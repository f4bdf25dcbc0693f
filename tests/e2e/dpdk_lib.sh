# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash disable=SC2034  # variables lib.sh reads
# Helpers for the DPDK end-to-end scripts (test_dpdk_*.sh), sourced after
# lib.sh: network namespaces of our own, kmsd's EAL arguments, dpdk-testpmd
# as a memif peer, raw probe frames.
#
# Containment: every address used is a documentation one (192.0.2.0/24,
# 2001:db8::/64, MACs 00:00:5e:00:53:xx of RFC 7042), only inside the
# namespaces created here; every process started runs inside one of them
# (so a run killed hard, e.g. by a ctest timeout, is swept by the next run:
# namespace names and EAL file prefixes carry the owner's pid). Every wait
# is bounded.

NS_KMS=kmse2e-k-$$            # kmsd's namespace
NS_CLI=kmse2e-c-$$            # the kernel peer: kms-client, tap, testpmd
DPDK_PREFIX=kmse2e-$$         # EAL --file-prefix base (one per process)
KMS_IP4=192.0.2.1 CLI_IP4=192.0.2.2 OTHER_IP4=192.0.2.3
KMS_IP6=2001:db8::1 CLI_IP6=2001:db8::2
KMS_MAC=00:00:5e:00:53:01 CLI_MAC=00:00:5e:00:53:02
KMS_UDP_PORT=7430
KMS_DPDK_WORKERS=${KMS_DPDK_WORKERS:-2}
KMS_DPDK_QUEUES=${KMS_DPDK_QUEUES:-$KMS_DPDK_WORKERS}   # kmsd's RX = TX queues
KMS_DPDK_MEM=${KMS_DPDK_MEM:-512}      # MB, --no-huge
TESTPMD=${TESTPMD:-dpdk-testpmd}             # its stdout is line-buffered (stdbuf)
CPUS="0-$(( $(nproc) - 1 ))"           # lcores float over every CPU
NETNS_MADE=()
TESTPMD_PID=""
TESTPMD_STARTS=0
CLI_IF=""                              # the client's interface in NS_CLI
# The client side is slower here: pollers share the CPUs with it.
CLIENT_TIMEOUT_MS=${KMS_E2E_CLIENT_TIMEOUT_MS:-5000}

# dpdk_require_netns: exit 77 (ctest: skipped) if this user cannot make
# network namespaces; nothing else is a reason to skip.
dpdk_require_netns() {
  command -v ip >/dev/null || { echo "FAIL: ip (iproute2) is not installed"; exit 1; }
  local probe=kmse2e-p-$$
  if ! ip netns add "$probe" 2>/dev/null; then
    echo "SKIP: cannot create a network namespace (uid $(id -u); root or CAP_SYS_ADMIN needed)"
    exit 77
  fi
  ip netns del "$probe"
}

# sweep_stale: namespaces, processes in them and EAL runtime dirs left by
# earlier runs of these scripts whose shell is gone (killed hard).
sweep_stale() {
  local ns pid d
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^kmse2e-[kcp]-[0-9]+$' || true); do
    pid=${ns##*-}
    kill -0 "$pid" 2>/dev/null && continue
    echo "sweeping $ns, left by a run that is gone"
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for d in /var/run/dpdk/kmse2e-*; do
    [ -e "$d" ] || continue
    pid=${d#/var/run/dpdk/kmse2e-}; pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null || rm -rf "$d"
  done
}

# make_netns NAME [noipv6]: a namespace with lo up (and IPv6 off for the
# interfaces made in it afterwards).
make_netns() {
  ip netns add "$1"
  NETNS_MADE+=("$1")
  ip -n "$1" link set lo up
  if [ "${2:-}" = noipv6 ]; then
    ip netns exec "$1" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  fi
}

extra_cleanup() {
  local ns p
  if [ -n "$TESTPMD_PID" ]; then
    kill -9 "$TESTPMD_PID" 2>/dev/null || true
    wait "$TESTPMD_PID" 2>/dev/null || true
    TESTPMD_PID=""
  fi
  for ns in "${NETNS_MADE[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  done
  sleep 0.2
  for ns in "${NETNS_MADE[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  NETNS_MADE=()
  rm -rf /var/run/dpdk/"$DPDK_PREFIX"-*
  [ -z "${TP_FIFO_FD:-}" ] || exec {TP_FIFO_FD}>&-
}

# dpdk_conf [EXTRA LINES]: the [dpdk] section for setup_env
dpdk_conf() {
  printf '[dpdk]\nport_id = 0\nipv4 = %s\nipv6 = %s\nlayout = %s\nmbufs = 8191\nring_size = 1024\n' \
    "$KMS_IP4" "$KMS_IP6" "${KMS_DPDK_LAYOUT:-rx}"
}

# dpdk_kmsd VDEV: kmsd in NS_KMS on the EAL vdev VDEV, every start with a
# file prefix of its own.
dpdk_kmsd() {
  KMSD_VDEV=$1
  KMSD_WRAP="ip netns exec $NS_KMS"
  KMSD_ARGS=(--io dpdk --workers "$KMS_DPDK_WORKERS")
  KMSD_READY="ready: dpdk|dpdk: serving"
  KMSD_SERVER=$KMS_IP4:$KMS_UDP_PORT
}
kmsd_pre_start() {
  EAL_ARGS=(--no-huge -m "$KMS_DPDK_MEM" --no-pci
            --file-prefix "$DPDK_PREFIX-kmsd-$KMSD_STARTS"
            --lcores "(0-$KMS_DPDK_WORKERS)@($CPUS)" "--vdev=$KMSD_VDEV")
  if declare -F kmsd_pre_start_more >/dev/null; then kmsd_pre_start_more; fi
}

# neigh_of ADDR: "MAC STATE" of ADDR in the client's neighbour table
neigh_of() {
  ip -n "$NS_CLI" neigh show "$1" dev "$CLI_IF" 2>/dev/null |
    sed -n 's/.* lladdr \([0-9a-f:]*\) .*\(REACHABLE\|STALE\|DELAY\|PROBE\|PERMANENT\).*/\1 \2/p'
}

# wait_neigh ADDR [SECONDS]: from the client side, send small datagrams to
# ADDR port 9 (kmsd counts them as wrong_port) until the client's kernel
# has resolved ADDR (ARP or neighbour discovery, answered by kmsd alone:
# there are no static entries). Fails past SECONDS (default 20).
wait_neigh() {
  local addr=$1 n=$(( ${2:-20} * 4 )) i=0
  while [ "$n" -gt 0 ]; do
    if [ $((i % 4)) -eq 0 ]; then printf 'probe' | send_udp "$addr" 9 2>/dev/null || true; fi
    i=$((i + 1))
    [ -n "$(neigh_of "$addr")" ] && return 0
    kmsd_alive || return 1
    sleep 0.25; n=$((n - 1))
  done
  return 1
}

# die_with_kmsd MESSAGE: stop kmsd with SIGTERM (so that it prints its
# counters), show its log and give up.
die_with_kmsd() {
  echo "FAIL: $*"
  if kmsd_alive; then stop_kmsd || true; fi
  echo "kmsd log:"; cat "$W/kmsd.log"
  exit 1
}

# ---- dpdk-testpmd as the memif peer ---------------------------------------

# memif rings pair up with the server's queues: testpmd's TX queues feed
# kmsd's RX queues, kmsd's TX queues feed testpmd's RX queues, and testpmd
# forwards with min(rxq, txq) queues per port (net_tap wants as many of
# each): so exactly as many as kmsd has (RX == TX == workers).
TESTPMD_QUEUES=${TESTPMD_QUEUES:-$KMS_DPDK_QUEUES}

# start_testpmd SOCK TAP: testpmd in NS_CLI, io forwarding between a memif
# client port on SOCK and a tap port TAP (the kernel interface, in NS_CLI,
# then gets CLI_IP4). Non-interactive: no -i, forwarding starts at once;
# no --stats-period; stdin is a FIFO that nobody writes, so its "Press
# enter to exit" read blocks until we signal it.
start_testpmd() {
  local sock=$1 tap=$2 n
  if [ -z "${TP_FIFO_FD:-}" ]; then
    mkfifo "$W/testpmd.stdin"
    exec {TP_FIFO_FD}<>"$W/testpmd.stdin"
  fi
  TESTPMD_STARTS=$((TESTPMD_STARTS + 1))
  ip netns exec "$NS_CLI" stdbuf -oL "$TESTPMD" --no-huge -m 256 --no-pci \
    --file-prefix "$DPDK_PREFIX-tp-$TESTPMD_STARTS" --lcores "(0-1)@($CPUS)" \
    "--vdev=net_memif0,role=client,socket=$sock,socket-abstract=no" \
    "--vdev=net_tap0,iface=$tap" \
    -- --forward-mode=io --nb-cores=1 --total-num-mbufs=2048 \
    --rxq="$TESTPMD_QUEUES" --txq="$TESTPMD_QUEUES" \
    < "$W/testpmd.stdin" > "$W/testpmd.$TESTPMD_STARTS.log" 2>&1 &
  TESTPMD_PID=$!
  n=200
  until ip -n "$NS_CLI" link show "$tap" >/dev/null 2>&1; do
    n=$((n - 1))
    if [ "$n" -eq 0 ] || ! kill -0 "$TESTPMD_PID" 2>/dev/null; then
      echo "testpmd made no $tap within 20s:"; cat "$W/testpmd.$TESTPMD_STARTS.log"
      return 1
    fi
    sleep 0.1
  done
  ip -n "$NS_CLI" link set "$tap" address "$CLI_MAC"
  ip -n "$NS_CLI" addr add "$CLI_IP4/24" dev "$tap"
  ip -n "$NS_CLI" link set "$tap" up
  CLI_IF=$tap
}

# stop_testpmd [SIGNAL]: TERM (default) or KILL; bounded. Returns testpmd's
# exit status.
stop_testpmd() {
  local rc=0
  [ -n "$TESTPMD_PID" ] || return 0
  kill "-${1:-TERM}" "$TESTPMD_PID" 2>/dev/null || true
  wait_exit "$TESTPMD_PID" 20 || rc=$?
  TESTPMD_PID=""
  return $rc
}

# ---- raw probes ------------------------------------------------------------

# raw_probes PAYLOAD_FILE [v6] [nofrag4]: from NS_CLI, one raw frame per
# drop class
# (carrying PAYLOAD_FILE, a saved KMS request, so that a frame wrongly
# accepted would be answered), then well-formed frames that must be
# answered (untagged, with an 802.1Q tag, and IPv6 if "v6"). nofrag4: no
# IPv4 fragments (af_packet with several queues joins its sockets in a
# fanout group with the kernel's IPv4 defragmentation: fragments are held
# or reassembled before kmsd sees them). Prints
# "ok: ..." / "FAIL: ..." lines and "sent CLASS=N" lines for the counters.
raw_probes() {
  ip netns exec "$NS_CLI" python3 - "$CLI_IF" "$CLI_MAC" "$KMS_MAC" \
    "$CLI_IP4" "$KMS_IP4" "$OTHER_IP4" "$CLI_IP6" "$KMS_IP6" "$KMS_UDP_PORT" \
    "$@" <<'PY'
import socket, struct, sys, time, select
ifc, smac, dmac, sip, dip, oip, sip6, dip6, dport, pfile = sys.argv[1:11]
v6, frag4 = "v6" in sys.argv[11:], "nofrag4" not in sys.argv[11:]
dport = int(dport)
txt = open(pfile).read()     # kms-client --save-request: hex text
payload = bytes.fromhex("".join((txt.split("=", 1)[1] if "=" in txt else txt).split()))
mac = lambda m: bytes.fromhex(m.replace(":", ""))
SMAC, DMAC = mac(smac), mac(dmac)
ip4 = socket.inet_aton
ip6 = lambda a: socket.inet_pton(socket.AF_INET6, a)

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def eth(etype, body, dst=DMAC, tags=()):
    h = dst + SMAC
    for tpid, tci in tags: h += struct.pack("!HH", tpid, tci)
    return h + struct.pack("!H", etype) + body

def ipv4(src, dst, proto, body, frag=0, bad_hcsum=False, ident=0x1234):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ident, frag, 64,
                    proto, 0, ip4(src), ip4(dst))
    c = csum(h) ^ (0x5555 if bad_hcsum else 0)
    return h[:10] + struct.pack("!H", c) + h[12:] + body

def udp(src, dst, sport, dp, data, v6=False, bad=False, zero=False, lenfix=0):
    ulen = 8 + len(data)
    u = struct.pack("!HHHH", sport, dp, ulen + lenfix, 0) + data
    if v6:
        ph = ip6(src) + ip6(dst) + struct.pack("!IxxxB", ulen, 17)
    else:
        ph = ip4(src) + ip4(dst) + struct.pack("!xBH", 17, ulen + lenfix)
    c = csum(ph + u) or 0xffff
    if bad: c = (c + 1) & 0xffff or 1
    if zero: c = 0
    return u[:6] + struct.pack("!H", c) + u[8:]

def ipv6(src, dst, nh, body):
    return struct.pack("!IHBB16s16s", 0x60000000, len(body), nh, 64,
                       ip6(src), ip6(dst)) + body

# a UDP socket on our source port: replies reach a socket (no ICMP back)
us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
us.bind((sip, 0))
sport = us.getsockname()[1]
if v6:
    us6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    us6.bind((sip6, sport))
ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
ps.setsockopt(263, 8, 1)   # SOL_PACKET, PACKET_AUXDATA: VLAN tags
ps.bind((ifc, 0))

def drain():
    while select.select([ps], [], [], 0)[0]: ps.recv(65535)

def replies(wait):
    """KMS replies (UDP from our peer port 7430 to sport) seen in `wait` s:
    list of (vlan tci or None, ip version, l3+l4 checksums ok, payload)."""
    out, end = [], time.time() + wait
    while True:
        left = end - time.time()
        if left <= 0 or not select.select([ps], [], [], left)[0]: break
        data, anc, _, addr = ps.recvmsg(65535, 64)
        if addr[2] == socket.PACKET_OUTGOING or data[6:12] != DMAC: continue
        tci = None
        for lvl, typ, cd in anc:
            if lvl == 263 and typ == 8:
                st, _, _, _, _, vt, _ = struct.unpack("IIIHHHH", cd[:20])
                if st & (1 << 4): tci = vt
        et, off = struct.unpack("!H", data[12:14])[0], 14
        if et == 0x8100:
            tci = struct.unpack("!H", data[14:16])[0]
            et, off = struct.unpack("!H", data[16:18])[0], 18
        if et == 0x0800 and data[off + 9] == 17:
            ihl = (data[off] & 15) * 4
            l3ok = csum(data[off:off + ihl]) == 0
            tot = struct.unpack("!H", data[off + 2:off + 4])[0]
            u = data[off + ihl:off + tot]
            ph = data[off + 12:off + 20] + struct.pack("!xBH", 17, len(u))
            ok = l3ok and (u[6:8] == b"\0\0" or csum(ph + u) == 0)
            ver = 4
        elif et == 0x86dd and data[off + 6] == 17:
            plen = struct.unpack("!H", data[off + 4:off + 6])[0]
            u = data[off + 40:off + 40 + plen]
            ph = data[off + 8:off + 40] + struct.pack("!IxxxB", len(u), 17)
            ok = u[6:8] != b"\0\0" and csum(ph + u) == 0
            ver = 6
        else:
            continue
        sp, dp_ = struct.unpack("!HH", u[:4])
        if sp == dport and dp_ == sport:
            out.append((tci, ver, ok, u[8:]))
    return out

fails = 0
def check(ok, what):
    global fails
    print(("ok: " if ok else "FAIL: ") + what)
    if not ok: fails += 1

U = lambda **k: udp(sip, dip, sport, dport, payload, **k)
neg = [  # (class, description, frame)
    ("bad_csum", "IPv4 header checksum wrong", eth(0x0800, ipv4(sip, dip, 17, U(), bad_hcsum=True))),
    ("bad_csum", "UDP checksum wrong", eth(0x0800, ipv4(sip, dip, 17, U(bad=True)))),
    ("bad_len", "UDP length longer than the datagram", eth(0x0800, ipv4(sip, dip, 17, U(lenfix=4)))),
    ("bad_len", "IPv4 total length past the frame", eth(0x0800, ipv4(sip, dip, 17, U())[:-8])),
    ("not_udp", "IPv4 protocol TCP", eth(0x0800, ipv4(sip, dip, 6, U()))),
    ("wrong_port", "UDP to port 7431", eth(0x0800, ipv4(sip, dip, 17,
        udp(sip, dip, sport, dport + 1, payload)))),
    ("not_for_us", "UDP to another IPv4 address", eth(0x0800, ipv4(sip, oip, 17,
        udp(sip, oip, sport, dport, payload)))),
    ("not_for_us", "UDP to another MAC", eth(0x0800, ipv4(sip, dip, 17, U()),
        dst=mac("00:00:5e:00:53:03"))),
    ("l2", "unknown ethertype 0x88b5", eth(0x88b5, ipv4(sip, dip, 17, U()))),
    ("l2", "two 802.1Q tags", eth(0x0800, ipv4(sip, dip, 17, U()),
        tags=((0x8100, 100), (0x8100, 200)))),
]
if frag4:
    neg += [
        ("fragment", "IPv4 first fragment (MF)", eth(0x0800, ipv4(sip, dip, 17, U(), frag=0x2000, ident=0x1111))),
        ("fragment", "IPv4 later fragment (offset 8)", eth(0x0800, ipv4(sip, dip, 17, U(), frag=1, ident=0x2222))),
    ]
if v6:
    U6 = lambda **k: udp(sip6, dip6, sport, dport, payload, v6=True, **k)
    neg += [
        ("bad_csum", "IPv6 UDP checksum zero", eth(0x86dd, ipv6(sip6, dip6, 17, U6(zero=True)))),
        ("fragment", "IPv6 fragment header", eth(0x86dd, ipv6(sip6, dip6, 44,
            struct.pack("!BxHI", 17, 0x0001, 0x1234) + U6()))),
    ]
sent = {}
drain()
for cls, what, frame in neg:
    ps.send(frame)
    sent[cls] = sent.get(cls, 0) + 1
    r = replies(0.3)
    check(not r, "no reply to %s (%s)" % (what, cls))

pos = [("untagged IPv4", None, eth(0x0800, ipv4(sip, dip, 17, U()))),
       ("802.1Q-tagged IPv4 (VID 100)", 100,
        eth(0x0800, ipv4(sip, dip, 17, U()), tags=((0x8100, 100),)))]
if v6:
    pos.append(("untagged IPv6", None, eth(0x86dd, ipv6(sip6, dip6, 17, U6()))))
for what, vid, frame in pos:
    drain()
    ps.send(frame)
    r = replies(3.0)
    good = [x for x in r if x[0] == vid and x[2] and x[3][:2] == b"KM"]
    check(len(good) == 1, "a raw %s request is answered%s, checksums valid (%s)"
          % (what, " with its tag" if vid else "", r and [(x[0], x[1], x[2]) for x in r]))
for cls, n in sent.items():
    print("sent %s=%d" % (cls, n))
sys.exit(1 if fails else 0)
PY
}

# check_drop_counters PROBES_OUT LOG: every drop class is printed in LOG
# (kmsd's stats), and each counter saw what raw_probes sent: exactly for
# the classes nothing else in these tests produces, at least for the rest
# (the peer's kernel sends IPv6 multicast, ARP probes go to port 9).
check_drop_counters() {
  local out=$1 log=$2 cls n got
  for cls in not_for_us fragment bad_csum bad_len not_udp wrong_port l2 engine ring_full tx_full; do
    grep -q "stats:.* $cls=[0-9]" "$log" || fail "no $cls counter in kmsd's stats"
  done
  while read -r cls n; do
    got=$(stat_value "$cls" "$log")
    case $cls in
      fragment|bad_csum|bad_len|l2)
        [ "$got" = "$n" ] && pass "$cls counter: $got (sent $n)" || fail "$cls counter: ${got:-none}, sent $n" ;;
      *)
        [ -n "$got" ] && [ "$got" -ge "$n" ] && pass "$cls counter: $got (>= $n sent)" || fail "$cls counter: ${got:-none}, sent $n" ;;
    esac
  done < <(sed -n 's/^sent \([a-z_0-9]*\)=\([0-9]*\)$/\1 \2/p' "$out")
}

# report_lines FILE: turn "ok:"/"FAIL:" lines of FILE into pass/fail
report_lines() {
  local l
  while IFS= read -r l; do
    case $l in
      "ok: "*) pass "${l#ok: }" ;;
      "FAIL: "*) fail "${l#FAIL: }" ;;
    esac
  done < "$1"
}
