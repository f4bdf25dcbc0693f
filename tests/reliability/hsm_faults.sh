#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# HSM faults (issue 9 item 3): kmsd talks to SoftHSM2 through the test
# module kms_p11fwd.so, which fails chosen PKCS#11 calls on command
# (tests/hsm/p11fwd.h). For CKR_DEVICE_ERROR, CKR_SESSION_HANDLE_INVALID
# (the sessions really closed) and CKR_TOKEN_NOT_PRESENT, in offload and
# hsm crypto modes: a request that needs the HSM is refused HSM_FAILED
# while the fault lasts (never answered with a key), kmsd says so in its
# log, and once the fault is lifted the same kind of request succeeds
# again (sessions reopened, hsm mode's cached key objects made again).
# Usage: hsm_faults.sh BUILD_DIR
BIN=$1
FWD=$BIN/tests/hsm/kms_p11fwd.so
[ -e "$FWD" ] || { echo "SKIP: $FWD not built"; exit 77; }
export KMS_TEST_PKCS11_MODULE=$FWD
export KMS_P11FWD_TARGET=/usr/lib/softhsm/libsofthsm2.so
. "$(dirname "$0")/../e2e/lib.sh"
A=sip:alice@example.org B=sip:bob@example.org MB=mailbox.example.org

setup_env
export KMS_P11FWD_FAULTS=$W/faults
echo off > "$KMS_P11FWD_FAULTS"
"$KMSCTL" -c "$W/kms.conf" init >/dev/null
enroll user $A a; enroll user $B b; enroll as $MB mb
N=0
fresh_user() { # sets U: a party kmsd has never seen (its key must come
               # from the HSM)
  N=$((N + 1)); U=u$N
  enroll user "sip:$U@example.org" "$U"
}
deposit() { # KEYNAME PEER NAME: A=KEYNAME deposits for PEER via the mailbox
  $CLIENT token --key "$W/$1.key" --peer "$2" --out "$W/$3.tok" &&
  $CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/$3.tok" \
    --params-out "$W/$3.params" --reply-out "$W/$3.reply" 2>&1 >/dev/null
}
set_fault() { echo "$*" > "$KMS_P11FWD_FAULTS.tmp"; mv "$KMS_P11FWD_FAULTS.tmp" "$KMS_P11FWD_FAULTS"; }

run_mode() { # MODE
  local mode=$1 f u out n=0
  sed -i "s/^mode = .*/mode = $mode/" "$W/kms.conf"
  start_kmsd
  deposit a $B "$mode-warm" >/dev/null || fail "$mode: deposit before any fault"
  for f in "CKR_DEVICE_ERROR all" "CKR_SESSION_HANDLE_INVALID all close" \
           "CKR_TOKEN_NOT_PRESENT all"; do
    n=$((n + 1))
    fresh_user; u=$U
    set_fault "$f"
    out=$(deposit "$u" $B "$mode-f$n") && fail "$mode, $f: deposit answered with a key" \
      || { echo "$out" | grep -q "HSM_FAILED" && pass "$mode, ${f%% *}: refused HSM_FAILED" \
           || fail "$mode, $f: $out"; }
    [ ! -s "$W/$mode-f$n.reply" ] || fail "$mode, $f: a reply file was written"
    set_fault off
    out=$(deposit "$u" $B "$mode-r$n") && pass "$mode, ${f%% *}: served again once lifted" \
      || fail "$mode, $f: not recovered: $out"
    # A party whose key was cached before the fault (hsm mode: a session
    # object, remade after a session loss) is served too.
    deposit a $B "$mode-c$n" >/dev/null && pass "$mode, ${f%% *}: cached party served after" \
      || fail "$mode, $f: cached party after the fault"
  done
  grep -q "hsm: session reopened" "$W/kmsd.log" && pass "$mode: kmsd reopened lost sessions" \
    || fail "$mode: no session reopened: $(grep hsm "$W/kmsd.log" | head -5)"
  grep -q "CKR_DEVICE_ERROR\|CKR_TOKEN_NOT_PRESENT" "$W/kmsd.log" \
    && pass "$mode: the HSM errors are in kmsd's log" || fail "$mode: HSM errors not logged"
  stop_kmsd || fail "$mode: kmsd exit"
  grep -q "deposit HSM_FAILED=3" "$W/kmsd.log" && pass "$mode: 3 refusals counted HSM_FAILED" \
    || fail "$mode: counters: $(grep 'deposit ' "$W/kmsd.log")"
}
run_mode offload
run_mode hsm
finish
