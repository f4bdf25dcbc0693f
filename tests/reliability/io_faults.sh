#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Injected I/O faults (issue 9): kmsd runs with the LD_PRELOAD shim
# iofault.c on its store, which makes the store's fsync/fdatasync/msync,
# pwrite* and write/writev fail with EIO, then with ENOSPC, when a control
# file says so; then a store with a 1 MiB map is filled until STORE_FULL.
# kmsd must answer no key it could not commit (an ERROR STORE_FAILED /
# STORE_FULL, or no answer), say so in its log, serve again once the fault
# is gone, and keep the store intact: mdb_stat -a, the audit chain, and
# after a restart every acknowledged deposit retrieves with its K while no
# refused one exists (the deposits in the store are exactly the acked ones,
# plus at most the load generator's unanswered ones).
#
# Fault cases, each against a running kmsd (retrieve_records = durable):
#   sync   "on sync": the commit's fdatasync fails (data pages written)
#   write  "on write,pwrite from=8192": the commit's data-page writes fail
#          (offsets past LMDB's two meta pages)
#   flap   kms-loadgen (DEPOSITs on new and re-used pairs, RETRIEVEs) while
#          the sync and the data-write faults flap on and off every 0.25 s
#   meta   "on pwrite below=8192": only the meta-page update of a commit
#          fails (LMDB then flags its environment fatal: MDB_PANIC)
# Usage: io_faults.sh BUILD_DIR [SHIM.so]
#   SHIM.so default BUILD_DIR/tests/reliability/kms_iofault.so, else it
#   is compiled here from iofault.c with ${CC:-cc}.
BIN=$1
SHIM=${2:-$BIN/tests/reliability/kms_iofault.so}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../e2e/lib.sh"
LOADGEN=$BIN/perf/loadgen/kms-loadgen
A=sip:alice@example.org B=sip:bob@example.org MB=mailbox.example.org

setup_env
for t in mdb_stat mdb_dump python3; do
  command -v $t >/dev/null || { echo "FAIL: $t not found (apt-get install lmdb-utils python3)"; exit 1; }
done
if [ ! -f "$SHIM" ]; then
  ${CC:-cc} -O2 -fPIC -shared -o "$W/kms_iofault.so" "$HERE/iofault.c" -ldl
  SHIM=$W/kms_iofault.so
fi
CTL=$W/iofault.ctl
ACKED=$W/acked.txt       # "key_id k" of every deposit kms-client got a key for
LGACK=$W/lg-ack.log      # kms-loadgen's acknowledged deposits
LG_UNANSWERED=0          # DEPOSITs kms-loadgen sent and got no answer for
: > "$ACKED"
echo off > "$CTL"
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
enroll user $A a; enroll user $B b; enroll as $MB mb
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 64 --as 2 --out "$W/pop.txt" >/dev/null

# dep TAG: a DEPOSIT A -> B. Prints the outcome: "ok", "refused:STATUS",
# "noanswer" or "error:RC". A key answered is opened by A and recorded.
dep() {
  local rc=0 out
  $CLIENT token --key "$W/a.key" --peer $B --out "$W/$1.tok"
  out=$($CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/$1.tok" \
    --params-out "$W/$1.params" --reply-out "$W/$1.reply" 2>&1) || rc=$?
  case $rc in
    0) $CLIENT open --key "$W/a.key" --token "$W/$1.tok" --reply "$W/$1.reply" --out "$W/$1.ka"
       echo "$(value "$W/$1.params" key_id) $(value "$W/$1.ka" k)" >> "$ACKED"
       echo ok ;;
    2) echo "refused:$(echo "$out" | sed -n 's/.*refused: \([A-Z_]*\).*/\1/p')" ;;
    3) echo noanswer ;;
    *) echo "error:$rc:$out" ;;
  esac
}
# ret TAG: a RETRIEVE of deposit TAG as B: "ok" (same K as A's), "wrongK",
# "refused:STATUS", "noanswer" or "error:RC".
ret() {
  local rc=0 out
  out=$($CLIENT retrieve --server "$SERVER" --key "$W/b.key" --params "$W/$1.params" \
    --out "$W/$1.kb" 2>&1) || rc=$?
  case $rc in
    0) if [ "$(value "$W/$1.kb" k)" = "$(value "$W/$1.ka" k)" ]; then echo ok; else echo wrongK; fi ;;
    2) echo "refused:$(echo "$out" | sed -n 's/.*refused: \([A-Z_]*\).*/\1/p')" ;;
    3) echo noanswer ;;
    *) echo "error:$rc:$out" ;;
  esac
}
stats_json() { "$KMSCTL" -c "$W/kms.conf" stats --json > "$W/stats.json" 2>/dev/null; }
# jget EXPR: a value of $W/stats.json (python expression on j)
jget() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($1)" "$W/stats.json"; }
log_has() { grep -Eq "$1" "$W/kmsd.log"; }

# serve_again TAG: after the fault is switched off, a DEPOSIT and its
# RETRIEVE succeed (a few tries over 1 s: a batch may still be in flight).
serve_again() {
  local i d r
  for i in 1 2 3 4 5; do
    d=$(dep "$1.$i")
    if [ "$d" = ok ]; then r=$(ret "$1.$i"); [ "$r" = ok ] && { echo ok; return; }; fi
    sleep 0.2
  done
  echo "deposit $d, retrieve ${r:-not tried}"
}

# fault_case ERRNO NAME CTL-CONTENT [any]: faults on, 3 DEPOSITs and 2
# RETRIEVEs of deposit d0, faults off, kmsd must serve again. "any": any
# refusal will do (not only STORE_FAILED / STORE_FULL), never a key.
fault_case() {
  local e=$1 name=$2 mode=$3 i o deps=() rets=() bad=0 again
  echo "$mode" > "$CTL"
  for i in 1 2 3; do
    o=$(dep "$e-$name-f$i"); deps+=("$o")
    case $o in refused:STORE_FAILED|refused:STORE_FULL|noanswer) ;;
      refused:*) [ "${4:-}" = any ] || bad=1 ;;
      *) bad=1 ;; esac
  done
  for i in 1 2; do rets+=("$(ret "$e-d0")"); done
  echo off > "$CTL"
  [ $bad = 0 ] && pass "$e/$name: DEPOSITs under the fault: ${deps[*]} (no key answered)" \
    || fail "$e/$name: a DEPOSIT under the fault was not refused: ${deps[*]}"
  # retrieve_records = durable: a RETRIEVE commits its audit record and
  # nonce before its answer (docs/ARCHITECTURE.md, fail closed), so it is
  # refused while commits fail; an answer would be a key whose audit
  # record was never written.
  case "${rets[*]}" in
    "refused:STORE_FAILED refused:STORE_FAILED"|"refused:STORE_FULL refused:STORE_FULL")
      pass "$e/$name: RETRIEVEs of an earlier deposit under the fault: ${rets[*]} (durable records: refused, as documented)" ;;
    *ok*|*wrongK*|*error*) fail "$e/$name: RETRIEVEs under the fault: ${rets[*]} (durable records must be refused)" ;;
    *) if [ "${4:-}" = any ]; then pass "$e/$name: RETRIEVEs under the fault refused: ${rets[*]}"
       else fail "$e/$name: RETRIEVEs under the fault: ${rets[*]} (expected STORE_FAILED)"; fi ;;
  esac
  [ "${5:-}" = exits ] && return   # the caller checks the exit
  again=$(serve_again "$e-$name-after")
  [ "$again" = ok ] && pass "$e/$name: fault off: kmsd serves DEPOSIT and RETRIEVE again" \
    || fail "$e/$name: fault off: kmsd does not serve again: $again; log: $(tail -3 "$W/kmsd.log" | tr '\n' '|')"
}

# flap ERRNO: kms-loadgen closed loop while the faults flap.
flap() {
  local e=$1 lg rc=0 n=0 js=$W/lg-flap-$1.json
  "$LOADGEN" --population "$W/pop.txt" --server "$SERVER" --mix 2:1 --new-pairs 30 \
    --pairs 32 --seed-deposits 16 --outstanding 16 --duration 3 --warmup 0 \
    --timeout-ms 500 --quiet --seed 9 --ack-log "$LGACK" --json "$js" > "$W/lg-flap-$e.txt" 2>&1 &
  lg=$!
  sleep 0.7   # the seed phase runs without faults
  while kmsd_alive && [ -d "/proc/$lg" ] && [ "$(sed 's/.*) //; s/ .*//' "/proc/$lg/stat" 2>/dev/null)" != Z ]; do
    if [ $((n % 4)) = 0 ]; then echo "on sync" > "$CTL"
    elif [ $((n % 4)) = 2 ]; then echo "on write,pwrite from=8192" > "$CTL"
    else echo off > "$CTL"; fi
    n=$((n + 1)); sleep 0.25
  done
  echo off > "$CTL"
  wait_exit "$lg" 60 || rc=$?
  if [ ! -s "$js" ]; then fail "$e/flap: kms-loadgen exit $rc, no report: $(tail -3 "$W/lg-flap-$e.txt")"; return; fi
  python3 - "$js" "$e" "$rc" <<'PY' > "$W/flap-$e.txt" 2>&1 && pass "$(cat "$W/flap-$e.txt")" || fail "$e/flap: $(cat "$W/flap-$e.txt")"
import json, sys
j = json.load(open(sys.argv[1])); e = sys.argv[2]; rc = int(sys.argv[3])
v = j["verify"]; st = j["errors_by_status"]
store = st.get("STORE_FAILED", 0) + st.get("STORE_FULL", 0)
print(f"{e}/flap: kms-loadgen sent {j['sent']}, verified ok {j['ok']} (DEPOSIT {j['deposit']['ok']}, "
      f"RETRIEVE {j['retrieve']['ok']}), refused {st}, lost {j['lost']}; "
      f"mismatch {v['mismatch']}, bad_tag {v['bad_tag']}, bad_reply {v['bad_reply']}; exit {rc}")
assert rc in (0,), "kms-loadgen exit status"
assert v["mismatch"] == v["bad_tag"] == v["bad_reply"] == 0
assert store > 0, "no request was refused: the faults did not bite"
assert set(st) <= {"STORE_FAILED", "STORE_FULL"}, "refusals other than STORE_FAILED/STORE_FULL"
assert j["ok"] > 0, "nothing served between the faults"
PY
  LG_UNANSWERED=$((LG_UNANSWERED + $(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["lost"] + j["verify"]["late"])' "$js")))
}

# ---------------------------------------------------------------- A: faults
for E in EIO ENOSPC; do
  echo "== $E"
  # (an ASan-built kmsd would refuse a preload ahead of its runtime)
  KMSD_WRAP="env LD_PRELOAD=$SHIM KMS_IOFAULT_PATH=$W/store KMS_IOFAULT_CTL=$CTL KMS_IOFAULT_ERRNO=$E"
  KMSD_WRAP+=" ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
  echo off > "$CTL"
  start_kmsd
  for i in 0 1 2; do
    o=$(dep "$E-d$i"); [ "$o" = ok ] || fail "$E: good DEPOSIT $i: $o"
    o=$(ret "$E-d$i"); [ "$o" = ok ] || fail "$E: good RETRIEVE $i: $o"
  done
  stats_json; f0=$(jget 'j["engine"]["commit_failures"]')
  fault_case "$E" sync "on sync"
  fault_case "$E" write "on write,pwrite from=8192"
  flap "$E"
  again=$(serve_again "$E-flap-after")
  [ "$again" = ok ] && ! log_has MDB_PANIC && pass "$E/flap: faults off: kmsd serves again" \
    || fail "$E/flap: after the flapping faults: $again; $(grep -m1 MDB_PANIC "$W/kmsd.log" || true)"
  stats_json
  f1=$(jget 'j["engine"]["commit_failures"]')
  echo "   $E: commit_failures $f0 -> $f1; by status: $(jget 'j["engine"]["by_status"]["deposit"], j["engine"]["by_status"]["retrieve"]')"
  [ "$f1" -gt "$f0" ] && pass "$E: commit failures counted (kmsctl stats: commit_failures $f1)" \
    || fail "$E: commit_failures $f0 -> $f1"
  errtext=$([ $E = EIO ] && echo "Input/output error" || echo "No space left on device")
  log_has "keystore: commit: $errtext" && log_has "worker [0-9]+: commit of [0-9]+ requests failed" \
    && pass "$E: kmsd logs the failure: $(grep -m1 'keystore: commit:' "$W/kmsd.log"); $(grep -m1 'commit of' "$W/kmsd.log")" \
    || fail "$E: no commit failure in kmsd's log"

  # meta: only the meta-page write of a commit fails. LMDB sets
  # MDB_FATAL_ERROR on its environment; every later transaction, read
  # or write, is MDB_PANIC until the environment is reopened: kmsd stops
  # by itself (answering what it holds) and exits 3 so that its supervisor
  # restarts it; the restarted kmsd serves again.
  fault_case "$E" meta "on pwrite below=8192" any exits
  rc=0; wait_exit "$KMSD_PID" 30 || rc=$?
  KMSD_PID=""
  [ $rc = 3 ] && log_has "MDB_PANIC" && log_has "exit status 3, restart kmsd" \
    && pass "$E/meta: MDB_PANIC after a failed meta-page write: kmsd stopped by itself, exit 3 (restart)" \
    || fail "$E/meta: kmsd exit $rc after MDB_PANIC; $(grep -m1 'MDB_PANIC' "$W/kmsd.log")"
  grep '^iofault: [0-9]* fault' "$W/kmsd.log" | sed "s/^/   $E: /"  || true
  cp "$W/kmsd.log" "$W/kmsd-$E-panic.log"
  echo off > "$CTL"
  start_kmsd
  again=$(serve_again "$E-meta-restarted")
  [ "$again" = ok ] && pass "$E/meta: restarted kmsd serves DEPOSIT and RETRIEVE" \
    || fail "$E/meta: restarted kmsd does not serve: $again"
  rc=0; stop_kmsd || rc=$?
  [ $rc = 0 ] || fail "$E: kmsd exit $rc on SIGTERM"
  grep -q '^iofault: [1-9][0-9]* fault' "$W/kmsd-$E-panic.log" || fail "$E: the shim injected nothing"
  KMSD_WRAP=""
  cp "$W/kmsd.log" "$W/kmsd-$E.log"
done

# ---------------------------------------------------- the store afterwards
check_store() {  # check_store DIR CONF LABEL: mdb_stat, audit chain, deposits
  local d=$1 conf=$2 l=$3 extra
  if mdb_stat -a "$d" > "$W/mdb_stat-$l.txt" 2>&1; then
    pass "$l: mdb_stat -a: $(awk '/^Status of/ {db=$3} /Entries:/ {printf "%s=%s ", db, $2}' "$W/mdb_stat-$l.txt")"
  else
    fail "$l: mdb_stat -a: $(cat "$W/mdb_stat-$l.txt")"
  fi
  "$KMSCTL" -c "$conf" audit verify > "$W/audit-$l.txt" 2>&1 && pass "$l: audit chain intact ($(tail -1 "$W/audit-$l.txt"))" \
    || fail "$l: audit verify: $(cat "$W/audit-$l.txt")"
  mdb_dump -s deposits "$d" > "$W/dump-$l.txt" 2>&1 || fail "$l: mdb_dump deposits: $(head -3 "$W/dump-$l.txt")"
}
# stored_ids DUMP: the key ids (hex) of the deposits database dump
stored_ids() { awk '/^HEADER=END/ {on=1; next} /^DATA=END/ {on=0} on && (n++ % 2 == 0) {print $1}' "$1"; }

check_store "$W/store" "$W/kms.conf" main
stored_ids "$W/dump-main.txt" | sort > "$W/stored.ids"
{ cut -d' ' -f1 "$ACKED"; sed -n 's/.* key_id=\([0-9a-f]*\) .*/\1/p' "$LGACK"; } | sort -u > "$W/acked.ids"
missing=$(comm -13 "$W/stored.ids" "$W/acked.ids" | wc -l)
extra=$(comm -23 "$W/stored.ids" "$W/acked.ids" | wc -l)
[ "$missing" = 0 ] && [ "$extra" -le "$LG_UNANSWERED" ] \
  && pass "store holds $(wc -l < "$W/stored.ids") deposits: all $(wc -l < "$W/acked.ids") acknowledged ones, $extra more (<= $LG_UNANSWERED unanswered loadgen DEPOSITs): no refused deposit kept" \
  || fail "stored deposits vs acknowledged: $missing acknowledged missing, $extra unacknowledged stored (loadgen unanswered: $LG_UNANSWERED)"

# Restart without the shim: every acknowledged deposit, same K.
start_kmsd
n=0; bad=0
while read -r kid _; do
  tag=$(grep -l "^key_id = $kid\$" "$W"/*.params | head -1); tag=$(basename "$tag" .params)
  o=$(ret "$tag"); n=$((n + 1)); [ "$o" = ok ] || { bad=$((bad + 1)); echo "   $tag ($kid): $o"; }
done < "$ACKED"
[ "$bad" = 0 ] && [ "$n" -gt 0 ] && pass "after restart: $n kms-client deposits retrieved with A's K" \
  || fail "after restart: $bad of $n kms-client deposits not retrieved with A's K"
"$LOADGEN" --population "$W/pop.txt" --server "$SERVER" --verify-log "$LGACK" --timeout-ms 1000 \
  > "$W/verify-main.txt" 2>&1 && pass "after restart: $(cat "$W/verify-main.txt")" \
  || fail "after restart: $(cat "$W/verify-main.txt")"
stop_kmsd || fail "kmsd exit after the read-back"

# ------------------------------------------------------------ A: map full
# The smallest map kmsd accepts (store.map_size_mb >= 1), a store of its
# own, filled by DEPOSITs on new pairs.
echo "== map full"
cp "$W/kms.conf" "$W/kms-main.conf"
sed -e "s|^path = .*|path = $W/small|" -e 's/^map_size_mb = .*/map_size_mb = 1/' \
    -e 's/^token_label = kms$/token_label = kms\nkek_label = small-kek/' "$W/kms-main.conf" > "$W/kms.conf"
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 100 --as 1 --out "$W/pop-small.txt" >/dev/null
SMALLACK=$W/small-ack.log
start_kmsd
"$LOADGEN" --population "$W/pop-small.txt" --server "$SERVER" --mix 1:0 --new-pairs 100 \
  --pairs 16 --seed-deposits 16 --outstanding 16 --duration 4 --warmup 0 --timeout-ms 500 \
  --quiet --seed 5 --ack-log "$SMALLACK" --json "$W/lg-full.json" > "$W/lg-full.txt" 2>&1 && rc=0 || rc=$?
python3 - "$W/lg-full.json" "$rc" <<'PY' > "$W/full.txt" 2>&1 && pass "$(cat "$W/full.txt")" || fail "map full: $(cat "$W/full.txt"); $(tail -3 "$W/lg-full.txt")"
import json, sys
j = json.load(open(sys.argv[1])); rc = int(sys.argv[2]); v = j["verify"]; st = j["errors_by_status"]
print(f"map full (1 MiB): kms-loadgen sent {j['sent']} DEPOSITs on new pairs, {j['deposit']['ok']} answered with a key, "
      f"refused {st}, lost {j['lost']}; mismatch {v['mismatch']} bad_tag {v['bad_tag']} bad_reply {v['bad_reply']}; exit {rc}")
assert rc == 0 and v["mismatch"] == v["bad_tag"] == v["bad_reply"] == 0
assert st.get("STORE_FULL", 0) > 0, "no STORE_FULL"
PY
LG_UNANSWERED=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["lost"] + j["verify"]["late"])' "$W/lg-full.json" 2>/dev/null || echo 0)
log_has "MDB_MAP_FULL" && pass "map full: kmsd logs it: $(grep -m1 'MDB_MAP_FULL' "$W/kmsd.log")" \
  || fail "map full: no MDB_MAP_FULL in kmsd's log"
# RETRIEVEs on the full map, durable records: each needs a commit.
"$LOADGEN" --population "$W/pop-small.txt" --server "$SERVER" --verify-log "$SMALLACK" --timeout-ms 1000 \
  > "$W/verify-full-durable.txt" 2>&1 && rc=0 || rc=$?
echo "   map full, durable RETRIEVE records, kmsd still running: $(cat "$W/verify-full-durable.txt")"
if [ "$rc" = 0 ]; then
  pass "map full: RETRIEVEs still served (durable records)"
elif grep -Eq ' 0 mismatched' "$W/verify-full-durable.txt" && grep -q 'STORE_FULL=' "$W/verify-full-durable.txt"; then
  pass "map full: RETRIEVEs refused STORE_FULL with durable records (each needs its audit record committed: fail closed, as documented); none answered wrongly"
else
  fail "map full, durable: $(cat "$W/verify-full-durable.txt")"
fi
stop_kmsd || fail "kmsd exit (map full)"
check_store "$W/small" "$W/kms.conf" small
stored_ids "$W/dump-small.txt" | sort > "$W/stored-small.ids"
sed -n 's/.* key_id=\([0-9a-f]*\) .*/\1/p' "$SMALLACK" | sort -u > "$W/acked-small.ids"
missing=$(comm -13 "$W/stored-small.ids" "$W/acked-small.ids" | wc -l)
extra=$(comm -23 "$W/stored-small.ids" "$W/acked-small.ids" | wc -l)
[ "$missing" = 0 ] && [ "$extra" -le "$LG_UNANSWERED" ] \
  && pass "map full: store holds $(wc -l < "$W/stored-small.ids") deposits, all $(wc -l < "$W/acked-small.ids") acknowledged, $extra unanswered (<= $LG_UNANSWERED)" \
  || fail "map full: $missing acknowledged missing, $extra unacknowledged stored (unanswered $LG_UNANSWERED)"
# Same full map, retrieve_records = deferred: RETRIEVEs are answered
# without a commit (their records wait, and their flush fails: logged).
sed -i 's/^\[store\]$/[store]\nretrieve_records = deferred/' "$W/kms.conf"
start_kmsd
"$LOADGEN" --population "$W/pop-small.txt" --server "$SERVER" --verify-log "$SMALLACK" --timeout-ms 1000 \
  > "$W/verify-full-deferred.txt" 2>&1 && rc=0 || rc=$?
[ "$rc" = 0 ] && pass "map full, retrieve_records = deferred: $(cat "$W/verify-full-deferred.txt")" \
  || fail "map full, deferred: $(cat "$W/verify-full-deferred.txt")"
stop_kmsd || fail "kmsd exit (map full, deferred)"
grep -E 'deferred|flush' "$W/kmsd.log" | grep -Ev '^kmsd: info: ready' | head -3 | sed 's/^/   /' || true
# A bigger map: everything acknowledged is still there, and kmsd deposits again.
sed -i -e 's/^map_size_mb = .*/map_size_mb = 8/' -e '/^retrieve_records = deferred$/d' "$W/kms.conf"
start_kmsd
"$LOADGEN" --population "$W/pop-small.txt" --server "$SERVER" --verify-log "$SMALLACK" --timeout-ms 1000 \
  > "$W/verify-full-8m.txt" 2>&1 && pass "map raised to 8 MiB, restart: $(cat "$W/verify-full-8m.txt")" \
  || fail "map raised: $(cat "$W/verify-full-8m.txt")"
stop_kmsd || fail "kmsd exit (8 MiB)"
finish
