#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Key hygiene (issue 9 item 6): kmsd issues keys (offload and hsm crypto
# modes), then a core of the running process is taken with gcore (root can
# read any process's memory; gdb leaves out MADV_DONTDUMP mappings, as the
# kernel does) and scanned, with kmsd's log, for every issued K and every
# party key: none may be found. A kmsd crash makes no core at all
# (RLIMIT_CORE 0, not dumpable): checked too. The PIN comes from the
# environment, never argv (/proc/PID/cmdline).
# Usage: key_hygiene.sh BUILD_DIR
BIN=$1
. "$(dirname "$0")/../e2e/lib.sh"
command -v gcore >/dev/null || { echo "SKIP: gcore (gdb) not installed"; exit 77; }
# A sanitizer build is not what this measures (ASan keeps freed memory in
# quarantine and reserves terabytes of shadow address space).
if [ "${KMS_SANITIZED:-0}" = 1 ] ||
   ldd "$BIN/dataplane/kmsd" 2>/dev/null | grep -q libasan; then
  echo "SKIP: kmsd is an AddressSanitizer build"; exit 77
fi

A=sip:alice@example.org B=sip:bob@example.org MB=mailbox.example.org

setup_env
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
enroll user $A a; enroll user $B b; enroll as $MB mb

scan_mode() { # MODE
  sed -i "s/^mode = .*/mode = $1/" "$W/kms.conf"
  start_kmsd
  local n keys=()
  for n in 1 2 3 4 5 6; do
    $CLIENT token --key "$W/a.key" --peer $B --out "$W/ea$n.tok"
    $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea$n.tok" \
      --params-out "$W/p$n.txt" --reply-out "$W/r$n.txt" >/dev/null || fail "deposit $n"
    $CLIENT open --key "$W/a.key" --token "$W/ea$n.tok" --reply "$W/r$n.txt" --out "$W/ka$n.txt"
    $CLIENT retrieve --server "$SERVER" --key "$W/b.key" --params "$W/p$n.txt" \
      --out "$W/kb$n.txt" >/dev/null || fail "retrieve $n"
    keys+=("$(value "$W/ka$n.txt" k)")
  done
  tr '\0' ' ' < "/proc/$KMSD_PID/cmdline" > "$W/cmdline"
  grep -q "$KMS_PIN" "$W/cmdline" && fail "$1: the PIN is on kmsd's command line" \
    || pass "$1: no PIN in /proc/PID/cmdline ($(cat "$W/cmdline"))"
  rm -f "$W/core".*
  gcore -o "$W/core" "$KMSD_PID" >/dev/null 2>&1 || { fail "$1: gcore failed"; stop_kmsd; return; }
  local core
  core=$(ls "$W"/core.* | head -1)
  if python3 - "$core" "$W/kmsd.log" "${keys[@]}" \
       "$(value "$W/a.key" key)" "$(value "$W/b.key" key)" "$(value "$W/mb.key" key)" <<'PY'
import mmap, sys
core, log, keys = sys.argv[1], sys.argv[2], [bytes.fromhex(k) for k in sys.argv[3:]]
with open(core, "rb") as f:  # mapped, not read: a core may be larger than RAM
    mem = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
text = open(log, "rb").read().lower()
names = ["K%d" % (i + 1) for i in range(len(keys) - 3)] + ["Ka", "Kb", "Kas"]
bad = [n for n, k in zip(names, keys) if mem.find(k) >= 0 or k.hex().encode() in text]
print("core %d bytes; found: %s" % (len(mem), ", ".join(bad) or "nothing"))
sys.exit(1 if bad else 0)
PY
  then pass "$1: core of the running kmsd and its log hold no K and no party key"
  else fail "$1: key bytes in kmsd's memory image or log"; fi
  rm -f "$W/core".*
  stop_kmsd || fail "$1: kmsd exit"
}
scan_mode offload
scan_mode hsm

# A crash: no core is written (RLIMIT_CORE 0 and not dumpable).
start_kmsd
grep -q "^Max core file size *0 *0" "/proc/$KMSD_PID/limits" \
  && pass "kmsd runs with RLIMIT_CORE 0" || fail "core limit: $(grep core "/proc/$KMSD_PID/limits")"
(cd "$W" && kill -SEGV "$KMSD_PID"); wait "$KMSD_PID" 2>/dev/null || true; KMSD_PID=""
ls "$W"/store/core* "$W"/core 2>/dev/null | grep -q . && fail "a core file was written" \
  || pass "a crashed kmsd leaves no core file"
finish
