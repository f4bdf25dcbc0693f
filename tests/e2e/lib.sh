# SPDX-License-Identifier: Apache-2.0
# Shared helpers for the end-to-end scripts: a real SoftHSM2 token and an
# LMDB store in a temp dir, kmsctl/kmsd/kms-client from the build tree.
# Expects BIN (the build dir) to be set by the caller.

set -euo pipefail

KMSD=$BIN/dataplane/kmsd
KMSCTL=$BIN/control/kmsctl
CLIENT=$BIN/proto/client/kms-client
FAILS=0
KMSD_PID=""

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }

# Make $W with a token "kms" and a config file $W/kms.conf (port 0: the
# kernel picks one; start_kmsd reads it back).
setup_env() {
  W=$(mktemp -d /tmp/kms-e2e-XXXXXX)
  trap cleanup EXIT
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
[net]
listen = 127.0.0.1
port = 0
workers = 2
[policy]
${KMS_E2E_POLICY:-}
CONF
}

cleanup() {
  [ -n "$KMSD_PID" ] && kill -9 "$KMSD_PID" 2>/dev/null || true
  [ -n "${KMS_TEST_KEEP:-}" ] || rm -rf "$W"
}

# start_kmsd [extra args]: sets KMSD_PID and SERVER=127.0.0.1:port.
start_kmsd() {
  : > "$W/kmsd.log"
  "$KMSD" -c "$W/kms.conf" "$@" 2>"$W/kmsd.log" &
  KMSD_PID=$!
  for _ in $(seq 1 100); do
    if grep -q "ready: udp" "$W/kmsd.log"; then
      SERVER=$(sed -n 's/.*ready: udp \([0-9.]*:[0-9]*\),.*/\1/p' "$W/kmsd.log" | tail -1)
      return 0
    fi
    kill -0 "$KMSD_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "kmsd did not start:"; cat "$W/kmsd.log"
  exit 1
}

# stop_kmsd: SIGTERM, expect a clean exit 0.
stop_kmsd() {
  kill -TERM "$KMSD_PID"
  local rc=0
  wait "$KMSD_PID" || rc=$?
  KMSD_PID=""
  return $rc
}

kill9_kmsd() {
  kill -9 "$KMSD_PID"
  wait "$KMSD_PID" 2>/dev/null || true
  KMSD_PID=""
}

# enroll KIND ID NAME: key file $W/NAME.key
enroll() {
  "$KMSCTL" -c "$W/kms.conf" enroll --kind "$1" --id "$2" --out "$W/$3.key" >/dev/null
}

# value FILE KEY: the value of "KEY = value" in a client text file
value() { sed -n "s/^$2 = //p" "$1"; }

finish() {
  if [ "$FAILS" -ne 0 ]; then
    echo "$FAILS check(s) failed; kmsd log:"; cat "$W/kmsd.log" || true
    exit 1
  fi
  echo "all checks passed"
}
