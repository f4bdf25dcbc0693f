# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Shared helpers for the end-to-end scripts: a real SoftHSM2 token and an
# LMDB store in a temp dir, kmsctl/kmsd/kms-client from the build tree.
# Expects BIN (the build dir) to be set by the caller.
#
# Where things run is configurable, so that one set of checks serves every
# I/O mode (socket on loopback, DPDK behind a veth or memif, see dpdk_lib.sh):
#   use_client_wrap CMD...  the client side (kms-client, raw datagrams) runs
#                           under CMD, e.g. `ip netns exec ns-cli`
#   KMSD_WRAP               command prefix for kmsd, e.g. "ip netns exec ns"
#   KMSD_ARGS               array: kmsd arguments given at every start
#   kmsd_pre_start()        optional hook run before every start; may set the
#                           array EAL_ARGS (then kmsd runs as EAL... -- ARGS)
#   kmsd_post_start()       optional hook run once kmsd is ready (e.g. wait
#                           until the peer's kernel resolved kmsd's MAC)
#   KMSD_READY              the log text that says kmsd serves
#   KMSD_SERVER             fixed HOST:PORT of kmsd; empty: read back from
#                           the "ready: udp ADDR:PORT" line

set -euo pipefail

KMSD=$BIN/dataplane/kmsd
KMSCTL=$BIN/control/kmsctl
KMS_CLIENT_BIN=$BIN/proto/client/kms-client
# shellcheck disable=SC2034  # the scripts call "$CLIENT deposit ..." unquoted
CLIENT=kms_client
CLIENT_WRAP=""
CLIENT_TIMEOUT_MS=${CLIENT_TIMEOUT_MS:-1000}   # kms-client's default
FAILS=0
KMSD_PID=""
KMSD_WRAP=${KMSD_WRAP:-}
KMSD_ARGS=()
EAL_ARGS=()
KMSD_READY=${KMSD_READY:-"ready: udp"}
KMSD_SERVER=${KMSD_SERVER:-}
KMSD_START_TIMEOUT=${KMSD_START_TIMEOUT:-30}   # seconds
KMSD_STOP_TIMEOUT=${KMSD_STOP_TIMEOUT:-30}     # seconds
KMSD_STARTS=0

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }

# use_client_wrap CMD...: run the client side under CMD (empty: directly).
use_client_wrap() { CLIENT_WRAP="$*"; }

# kms_client SUBCOMMAND ARGS...: the unmodified kms-client, on the client
# side; the exchanges get --timeout-ms $CLIENT_TIMEOUT_MS (one try each).
kms_client() {
  local sub=$1; shift
  case $sub in
    deposit|retrieve|send)
      $CLIENT_WRAP "$KMS_CLIENT_BIN" "$sub" --timeout-ms "$CLIENT_TIMEOUT_MS" "$@" ;;
    *) $CLIENT_WRAP "$KMS_CLIENT_BIN" "$sub" "$@" ;;
  esac
}

# send_udp HOST PORT < DATA: one raw datagram from the client side (bash's
# /dev/udp, run under the client wrap).
send_udp() {
  $CLIENT_WRAP bash -c 'cat > "/dev/udp/$1/$2"' send_udp "$1" "$2"
}

# server_host / server_port: the parts of $SERVER (HOST:PORT or [V6]:PORT)
server_host() { local h=${SERVER%:*}; h=${h#[}; echo "${h%]}"; }
server_port() { echo "${SERVER##*:}"; }

# Make $W with a token "kms" and a config file $W/kms.conf (port
# $KMS_E2E_PORT, default 0: the kernel picks one; start_kmsd reads it back).
# $KMS_E2E_EXTRA_CONF is appended to the file (e.g. a [dpdk] section);
# $KMS_E2E_CRYPTO_MODE (default offload) and $KMS_E2E_CRYPTO_ENGINE (an
# OpenSSL engine id or path, offload only) fill [crypto].
setup_env() {
  W=$(mktemp -d /tmp/kms-e2e-XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir -p "$W/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$W" > "$W/softhsm2.conf"
  export SOFTHSM2_CONF=$W/softhsm2.conf
  export KMS_PIN=e2e-user-pin
  softhsm2-util --init-token --free --label kms --so-pin e2e-so-pin --pin "$KMS_PIN" >/dev/null
  cat > "$W/kms.conf" <<CONF
[hsm]
module = ${KMS_TEST_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
token_label = kms
[store]
path = $W/store
map_size_mb = 64
purge_interval_s = 1
[net]
listen = 127.0.0.1
port = ${KMS_E2E_PORT:-0}
workers = ${KMS_E2E_WORKERS:-2}
[crypto]
mode = ${KMS_E2E_CRYPTO_MODE:-offload}
${KMS_E2E_CRYPTO_ENGINE:+engine = $KMS_E2E_CRYPTO_ENGINE}
[policy]
${KMS_E2E_POLICY:-}
${KMS_E2E_EXTRA_CONF:-}
CONF
}

cleanup() {
  local rc=$?
  # Stopped early by an error: let kmsd print its counters, show its log.
  if [ "$rc" -ne 0 ] && kmsd_alive; then
    kill -TERM "$KMSD_PID" 2>/dev/null || true
    wait_exit "$KMSD_PID" 10 || true
    KMSD_PID=""
    echo "exit status $rc; kmsd log:"; cat "$W/kmsd.log" || true
  fi
  [ -n "$KMSD_PID" ] && kill -9 "$KMSD_PID" 2>/dev/null || true
  [ -n "$KMSD_PID" ] && wait "$KMSD_PID" 2>/dev/null || true
  KMSD_PID=""
  if declare -F extra_cleanup >/dev/null; then extra_cleanup || true; fi
  [ -n "${KMS_TEST_KEEP:-}" ] || rm -rf "$W"
  return $rc
}

# wait_exit PID SECONDS: reap PID (a child of this shell) within SECONDS,
# SIGKILL past that. Returns its exit status, or 124 on timeout.
wait_exit() {
  local pid=$1 n=$(( $2 * 20 )) st rc=0
  while [ "$n" -gt 0 ]; do
    st=$(sed 's/.*) //; s/ .*//' "/proc/$pid/stat" 2>/dev/null) || break
    case $st in Z|X) break ;; esac
    sleep 0.05; n=$((n - 1))
  done
  if [ "$n" -eq 0 ]; then
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 124
  fi
  wait "$pid" || rc=$?
  return $rc
}

# start_kmsd [extra args]: sets KMSD_PID and SERVER (HOST:PORT). Everything
# kmsd prints (stdout and stderr) goes to $W/kmsd.log; the log of the
# previous start is kept as $W/kmsd.log.N.
start_kmsd() {
  local cmd
  [ -s "$W/kmsd.log" ] && cp "$W/kmsd.log" "$W/kmsd.log.$KMSD_STARTS"
  KMSD_STARTS=$((KMSD_STARTS + 1))
  : > "$W/kmsd.log"
  EAL_ARGS=()
  if declare -F kmsd_pre_start >/dev/null; then kmsd_pre_start; fi
  cmd=("$KMSD")
  [ ${#EAL_ARGS[@]} -eq 0 ] || cmd+=("${EAL_ARGS[@]}" --)
  cmd+=(-c "$W/kms.conf")
  [ ${#KMSD_ARGS[@]} -eq 0 ] || cmd+=("${KMSD_ARGS[@]}")
  # shellcheck disable=SC2086  # KMSD_WRAP is a command prefix
  $KMSD_WRAP "${cmd[@]}" "$@" >"$W/kmsd.log" 2>&1 </dev/null &
  KMSD_PID=$!
  local n=$(( KMSD_START_TIMEOUT * 20 ))
  while [ "$n" -gt 0 ]; do
    if grep -Eq "$KMSD_READY" "$W/kmsd.log"; then
      if [ -n "$KMSD_SERVER" ]; then
        SERVER=$KMSD_SERVER
      else
        SERVER=$(sed -n 's/.*ready: udp \([0-9.]*:[0-9]*\),.*/\1/p' "$W/kmsd.log" | tail -1)
      fi
      if declare -F kmsd_post_start >/dev/null; then kmsd_post_start; fi
      return 0
    fi
    kill -0 "$KMSD_PID" 2>/dev/null || break
    sleep 0.05; n=$((n - 1))
  done
  if kmsd_alive; then
    echo "kmsd not ready within ${KMSD_START_TIMEOUT}s: ${cmd[*]} $*"
  else
    echo "kmsd exited before it was ready: ${cmd[*]} $*"
  fi
  cat "$W/kmsd.log"
  exit 1
}

# stop_kmsd: SIGTERM, expect a clean exit 0 within KMSD_STOP_TIMEOUT.
stop_kmsd() {
  local rc=0
  kill -TERM "$KMSD_PID" 2>/dev/null || true
  wait_exit "$KMSD_PID" "$KMSD_STOP_TIMEOUT" || rc=$?
  [ "$rc" -ne 124 ] || echo "kmsd did not exit within ${KMSD_STOP_TIMEOUT}s of SIGTERM"
  KMSD_PID=""
  return $rc
}

kill9_kmsd() {
  kill -9 "$KMSD_PID" 2>/dev/null || true
  wait "$KMSD_PID" 2>/dev/null || true
  KMSD_PID=""
}

# kmsd_alive: kmsd still runs (and is not a zombie)
kmsd_alive() {
  local st
  [ -n "$KMSD_PID" ] || return 1
  st=$(sed 's/.*) //; s/ .*//' "/proc/$KMSD_PID/stat" 2>/dev/null) || return 1
  case $st in Z|X) return 1 ;; esac
}

# enroll KIND ID NAME: key file $W/NAME.key
enroll() {
  "$KMSCTL" -c "$W/kms.conf" enroll --kind "$1" --id "$2" --out "$W/$3.key" >/dev/null
}

# value FILE KEY: the value of "KEY = value" in a client text file
value() { sed -n "s/^$2 = //p" "$1"; }

# stat_value NAME [FILE]: the last "NAME=N" on a "kmsd: stats:" line
stat_value() {
  grep 'stats:' "${2:-$W/kmsd.log}" | tr ' ' '\n' | sed -n "s/^$1=//p" | tail -1
}

finish() {
  if [ "$FAILS" -ne 0 ]; then
    echo "$FAILS check(s) failed; kmsd log:"; cat "$W/kmsd.log" || true
    exit 1
  fi
  echo "all checks passed"
}
