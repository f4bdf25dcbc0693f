#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_package.sh BUILD_DIR: the .deb of config/packaging.cmake, installed
# for real (root, a throwaway CI machine) and removed again.
#
#   1. cpack -G DEB from BUILD_DIR's CPackConfig.cmake into a temp dir;
#      dpkg-deb: the binaries, both units, the six man pages, the
#      configuration (conffiles), the maintainer scripts, computed
#      dependencies (dpkg-shlibdeps) and Suggests: softhsm2.
#   2. dpkg -i: the postinst made the system user kms, /var/lib/kms
#      (kms:kms 0700) and /etc/kms (root:kms 0750); started nothing (no store).
#   3. systemd-analyze verify on the installed units (no output allowed).
#   4. A store for the installed binaries, made as the kms user: SoftHSM2
#      token, `kmsctl init`, a mailbox AS and `kmsctl ibe init`; then kmsd
#      and kms-mailbox started and stopped:
#        - systemd is PID 1: through their units (a runtime drop-in points
#          them at the test's configuration), `systemctl start`, then stop
#          with Result=success;
#          (ctest e2e_package_systemd runs this script under
#          tests/e2e/with_systemd.sh, which boots systemd as PID 1 of new
#          namespaces where the machine's PID 1 is not systemd);
#        - otherwise (a container): the units cannot be started. The
#          installed kmsd checks the installed /etc/kms/kms.conf as the kms
#          user (--check-config); then kmsd and kms-mailbox run as the kms
#          user with the units' limits and no capabilities (setpriv), not
#          in the units' sandbox. The output says which.
#      Both ways: kmsd serves (kmsctl stats through its control socket, a
#      party's IBE keys), kms-mailbox is ready with them, both exit 0 on
#      SIGTERM.
#   5. dpkg -i again (the upgrade path of the maintainer scripts), then
#      dpkg --purge: files, units and /etc/kms gone; the kms user and what
#      the test made are removed at the end if they did not exist before.
#
# Exit 0 all passed, 1 a check failed, 77 a required tool is absent
# (cpack, dpkg-deb, dpkg, dpkg-shlibdeps, systemd-analyze, setpriv,
# softhsm2-util, help2man at configure time) or not root.
set -euo pipefail

B=${1:?usage: test_package.sh BUILD_DIR}
B=$(cd "$B" && pwd)
PKG=ims-kms
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }
skip() { echo "SKIP: $*"; exit 77; }

# ---- requirements
for t in cpack dpkg-deb dpkg dpkg-shlibdeps systemd-analyze setpriv runuser \
         getent softhsm2-util; do
  command -v "$t" >/dev/null || skip "$t not found"
done
[ -r /usr/lib/softhsm/libsofthsm2.so ] || skip "SoftHSM2's module not found (softhsm2)"
[ "$(id -u)" -eq 0 ] || skip "dpkg -i needs root"
[ -f "$B/CPackConfig.cmake" ] || { echo "FAIL: no $B/CPackConfig.cmake (config/packaging.cmake not included?)"; exit 1; }
grep -q '^HELP2MAN_EXECUTABLE:FILEPATH=/' "$B/CMakeCache.txt" \
  || skip "help2man was not found when $B was configured: no man pages"
# pkg_known: dpkg knows the package in any state but "not installed".
pkg_known() {
  local s
  s=$(dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null) || return 1
  [ -n "$s" ] && [ "$s" != not-installed ]
}
if pkg_known; then
  echo "FAIL: $PKG is already on this machine ($(dpkg-query -W -f='${db:Status-Status}' "$PKG")); not touching it (dpkg --purge $PKG first)"
  exit 1
fi

SYSTEMD=0
if [ -d /run/systemd/system ] && [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
  SYSTEMD=1
fi
echo "systemd is PID 1: $([ $SYSTEMD = 1 ] && echo yes || echo "no (PID 1 is $(ps -p 1 -o comm= 2>/dev/null || echo '?'))")"

# What exists before, so that the cleanup removes only what the test made.
had_user=0; getent passwd kms >/dev/null && had_user=1
had_group=0; getent group kms >/dev/null && had_group=1
had_state=0; [ -e /var/lib/kms ] && had_state=1
had_etc=0; [ -e /etc/kms ] && had_etc=1

T=$(mktemp -d /tmp/kms-pkg-XXXXXX)
W=""                  # the test's store, under /var/lib/kms
KMSD_PID=""; MB_PID=""
DROPIN_KMSD=/run/systemd/system/kmsd.service.d/50-e2e-package.conf
DROPIN_MB=/run/systemd/system/kms-mailbox.service.d/50-e2e-package.conf

cleanup() {
  local rc=$?
  set +e
  for p in $MB_PID $KMSD_PID; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if [ $SYSTEMD = 1 ]; then
    systemctl stop kms-mailbox.service kmsd.service 2>/dev/null
    rm -f "$DROPIN_KMSD" "$DROPIN_MB"
    rmdir "$(dirname "$DROPIN_KMSD")" "$(dirname "$DROPIN_MB")" 2>/dev/null
    systemctl daemon-reload 2>/dev/null
    systemctl reset-failed kmsd.service kms-mailbox.service 2>/dev/null
  fi
  [ -z "$W" ] || rm -rf "$W"
  if pkg_known; then
    dpkg_retry --purge "$PKG" >/dev/null 2>&1 || echo "cleanup: dpkg --purge $PKG failed"
  fi
  if [ $had_user = 0 ] && getent passwd kms >/dev/null; then userdel kms; fi
  if [ $had_group = 0 ] && getent group kms >/dev/null; then groupdel kms; fi
  [ $had_state = 1 ] || rm -rf /var/lib/kms
  [ $had_etc = 1 ] || rm -rf /etc/kms
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# dpkg ARGS, retried while another dpkg/apt holds the lock (up to 5 min).
dpkg_retry() {
  local n=150 out rc
  while :; do
    rc=0; out=$(dpkg "$@" 2>&1) || rc=$?
    if [ $rc -ne 0 ] && [[ $out == *lock* ]] && [ $n -gt 0 ]; then
      n=$((n - 1)); sleep 2; continue
    fi
    printf '%s\n' "$out"
    return $rc
  done
}

# ---- 1. the package
cpack -G DEB --config "$B/CPackConfig.cmake" -B "$T/cpack" > "$T/cpack.log" 2>&1 \
  || { cat "$T/cpack.log"; echo "FAIL: cpack"; exit 1; }
DEB=$(find "$T/cpack" -maxdepth 1 -name "${PKG}_*.deb" | head -1)
[ -n "$DEB" ] || { cat "$T/cpack.log"; echo "FAIL: no .deb made"; exit 1; }
pass "cpack made $(basename "$DEB")"

dpkg-deb -c "$DEB" | awk '{print $NF}' | sed 's|^\./|/|' > "$T/contents"
for f in /usr/sbin/kmsd /usr/sbin/kms-mailbox /usr/bin/kmsctl /usr/bin/kms-client \
         /usr/bin/kms-loadgen /usr/bin/kms-ibake \
         /usr/lib/systemd/system/kmsd.service /usr/lib/systemd/system/kms-mailbox.service \
         /usr/share/man/man8/kmsd.8.gz /usr/share/man/man8/kms-mailbox.8.gz \
         /usr/share/man/man1/kmsctl.1.gz /usr/share/man/man1/kms-client.1.gz \
         /usr/share/man/man1/kms-loadgen.1.gz /usr/share/man/man1/kms-ibake.1.gz \
         /etc/kms/kms.conf /etc/kms/kms-mailbox.conf \
         /usr/share/doc/ims-kms/examples/kms.conf.example \
         /usr/share/doc/ims-kms/examples/kms-mailbox.conf.example; do
  grep -qx "$f" "$T/contents" || fail "the .deb lacks $f"
done
[ $FAILS = 0 ] && pass "dpkg-deb -c: binaries, units, man pages, configuration"
dpkg-deb -f "$DEB" Package Depends Suggests > "$T/control"
grep -q '^Package: ims-kms$' "$T/control" || fail "package name"
grep -q '^Depends:.*libc6' "$T/control" && grep -q '^Depends:.*adduser' "$T/control" \
  && pass "Depends computed by dpkg-shlibdeps, plus adduser" || fail "Depends: $(cat "$T/control")"
grep -q '^Suggests:.*softhsm2' "$T/control" && pass "Suggests softhsm2" || fail "Suggests"
mkdir "$T/ctrl" && dpkg-deb -e "$DEB" "$T/ctrl"
for s in postinst prerm postrm; do
  [ -x "$T/ctrl/$s" ] || fail "no executable $s in the .deb"
done
sort "$T/ctrl/conffiles" | tr '\n' ' ' | grep -q '^/etc/kms/kms-mailbox.conf /etc/kms/kms.conf $' \
  && pass "maintainer scripts; conffiles /etc/kms/*.conf" || fail "conffiles: $(cat "$T/ctrl/conffiles")"
# The man pages: help2man's, with the hand-written sections.
for m in man8/kmsd.8 man8/kms-mailbox.8 man1/kmsctl.1 man1/kms-client.1 \
         man1/kms-loadgen.1 man1/kms-ibake.1; do
  dpkg-deb --fsys-tarfile "$DEB" | tar -xOf - "./usr/share/man/$m.gz" | gzip -dc > "$T/page" \
    || { fail "man page $m unreadable"; continue; }
  for sec in NAME SYNOPSIS DESCRIPTION '"SEE ALSO"'; do
    grep -q "^\.SH $sec" "$T/page" || fail "$m has no $sec section"
  done
done
pass "man pages have NAME, SYNOPSIS, DESCRIPTION, SEE ALSO"

# ---- 2. install
dpkg_retry -i "$DEB" > "$T/dpkg-i.log" \
  || { cat "$T/dpkg-i.log"; echo "FAIL: dpkg -i"; exit 1; }
sed 's/^/  dpkg: /' "$T/dpkg-i.log"
dpkg-query -W -f='${Status}\n' "$PKG" | grep -q '^install ok installed$' \
  && pass "dpkg -i: installed" || fail "dpkg -i: $(dpkg-query -W -f='${Status}' "$PKG")"
getent passwd kms | grep -q ':/var/lib/kms:/usr/sbin/nologin$' \
  && pass "system user kms" || fail "user kms: $(getent passwd kms)"
[ "$(stat -c '%U:%G %a' /var/lib/kms)" = "kms:kms 700" ] \
  && pass "/var/lib/kms kms:kms 0700" || fail "/var/lib/kms: $(stat -c '%U:%G %a' /var/lib/kms)"
[ "$(stat -c '%U:%G %a' /etc/kms)" = "root:kms 750" ] \
  && pass "/etc/kms root:kms 0750" || fail "/etc/kms: $(stat -c '%U:%G %a' /etc/kms)"
if getent group softhsm >/dev/null; then
  id -nG kms | tr ' ' '\n' | grep -qx softhsm && pass "kms is in the group softhsm" \
    || fail "kms not in the group softhsm"
fi
bad=""
for b in /usr/sbin/kmsd /usr/sbin/kms-mailbox /usr/bin/kmsctl /usr/bin/kms-client \
         /usr/bin/kms-loadgen /usr/bin/kms-ibake; do
  "$b" --help > /dev/null 2>&1 || bad="$bad $b"
done
[ -z "$bad" ] && pass "installed binaries run (shared libraries resolved)" \
  || fail "installed binaries' --help failed:$bad"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
for u in kmsd kms-mailbox; do
  cmp -s "/usr/lib/systemd/system/$u.service" "$SRC/config/$u.service" \
    || fail "installed $u.service differs from config/$u.service"
done
if [ $SYSTEMD = 1 ]; then
  systemctl is-active --quiet kmsd.service && fail "kmsd started without a store" \
    || pass "postinst did not start kmsd (no store)"
  systemctl is-enabled --quiet kmsd.service && fail "kmsd enabled by the package" \
    || pass "postinst enabled nothing"
fi

# ---- 3. systemd-analyze verify on the installed units
man_opt=()
if command -v man >/dev/null && man -w 8 kmsd >/dev/null 2>&1; then
  man_note="Documentation= man pages checked"
else
  man_opt=(--man=no); man_note="man pages not installed here (dpkg path-exclude?): --man=no"
fi
out=$(systemd-analyze verify "${man_opt[@]}" /usr/lib/systemd/system/kmsd.service \
      /usr/lib/systemd/system/kms-mailbox.service 2>&1) && [ -z "$out" ] \
  && pass "systemd-analyze verify: both units ($man_note)" \
  || fail "systemd-analyze verify: $out"
for u in kmsd kms-mailbox; do
  systemd-analyze security --offline=true "/usr/lib/systemd/system/$u.service" 2>/dev/null \
    | grep 'Overall exposure' | sed 's/^/  /' || true
done

# ---- 4. run them
as_kms() { # CMD...: as the kms user, no capabilities, no new privileges
  setpriv --reuid=kms --regid=kms --init-groups --no-new-privs \
    --inh-caps=-all --bounding-set=-all -- "$@"
}
W=$(mktemp -d /var/lib/kms/e2e-package-XXXXXX)
chown kms:kms "$W"; chmod 0700 "$W"
mkdir "$W/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$W" \
  > "$W/softhsm2.conf"
printf 'e2e-package-pin\n' > "$W/pin"
chmod 0600 "$W/pin"
chown -R kms:kms "$W"
export SOFTHSM2_CONF=$W/softhsm2.conf
unset KMS_PIN
as_kms softhsm2-util --init-token --free --label kms --so-pin e2e-package-so \
  --pin e2e-package-pin > /dev/null
# The installed configuration with the test's store, PIN file and port.
sed -e "s|^path = .*|path = $W/store|" -e "s|^pin_file =.*|pin_file = $W/pin|" \
    -e "s|^port = .*|port = 0|" -e "s|^workers = .*|workers = 1|" \
    -e "s|^map_size_mb = .*|map_size_mb = 64|" /etc/kms/kms.conf > "$W/kms.conf"
chown kms:kms "$W/kms.conf"
KMSCTL=(as_kms /usr/bin/kmsctl -c "$W/kms.conf")
"${KMSCTL[@]}" init > "$T/init.log" 2>&1 || { cat "$T/init.log"; fail "kmsctl init as kms"; exit 1; }
MBID=mailbox.e2e-package.example
"${KMSCTL[@]}" enroll --kind as --id "$MBID" --out "$W/mb.key" > /dev/null
"${KMSCTL[@]}" ibe init --out "$W/ibe.params" > /dev/null
pass "as kms: token, kmsctl init, enroll, ibe init (PIN from pin_file)"

out=$(as_kms /usr/sbin/kmsd -c /etc/kms/kms.conf --check-config 2>&1) \
  && pass "installed kmsd --check-config on /etc/kms/kms.conf as kms: $out" \
  || fail "kmsd --check-config /etc/kms/kms.conf as kms: $out"

# svc_start NAME READY_REGEX: start, wait for READY in its log; svc_log NAME;
# svc_grep NAME REGEX (reads the whole log: no SIGPIPE under pipefail).
svc_grep() { svc_log "$1" | grep -E "$2" > /dev/null; }
svc_log() {
  if [ $SYSTEMD = 1 ]; then
    journalctl -u "$1.service" --since "@$START_TS" -o cat --no-pager 2>/dev/null
  else
    cat "$T/$1.log"
  fi
}
svc_start() {
  local name=$1 ready=$2 n=600
  START_TS=$(date +%s)
  if [ $SYSTEMD = 1 ]; then
    systemctl start "$name.service" || { svc_log "$name"; fail "systemctl start $name"; return 1; }
  else
    # The unit's limits (LimitMEMLOCK=infinity, LimitCORE=0), its user, no
    # capabilities (CapabilityBoundingSet=), NoNewPrivileges=, UMask=.
    ( ulimit -l unlimited; ulimit -c 0; umask 0077
      exec setpriv --reuid=kms --regid=kms --init-groups --no-new-privs \
        --inh-caps=-all --bounding-set=-all -- "${SVC_CMD[@]}" ) \
      > "$T/$name.log" 2>&1 < /dev/null &
    if [ "$name" = kmsd ]; then KMSD_PID=$!; else MB_PID=$!; fi
  fi
  while [ $n -gt 0 ]; do
    svc_grep "$name" "$ready" && return 0
    if [ $SYSTEMD = 1 ]; then
      systemctl is-active --quiet "$name.service" || break
    else
      kill -0 "$( [ "$name" = kmsd ] && echo "$KMSD_PID" || echo "$MB_PID")" 2>/dev/null || break
    fi
    sleep 0.05; n=$((n - 1))
  done
  svc_log "$name"; fail "$name not ready"; return 1
}
svc_stop() { # NAME: SIGTERM, exit 0
  local name=$1 pid rc=0
  if [ $SYSTEMD = 1 ]; then
    systemctl stop "$name.service"
    [ "$(systemctl show -p Result --value "$name.service")" = success ] \
      && [ "$(systemctl show -p ExecMainStatus --value "$name.service")" = 0 ] || rc=1
  else
    if [ "$name" = kmsd ]; then pid=$KMSD_PID; KMSD_PID=""; else pid=$MB_PID; MB_PID=""; fi
    kill -TERM "$pid"; wait "$pid" || rc=$?
  fi
  [ $rc = 0 ] && pass "$name stopped on SIGTERM, exit 0" || { svc_log "$name"; fail "$name stop: $rc"; }
}

if [ $SYSTEMD = 1 ]; then
  mkdir -p "$(dirname "$DROPIN_KMSD")" "$(dirname "$DROPIN_MB")"
  cat > "$DROPIN_KMSD" <<EOF
[Service]
Environment=SOFTHSM2_CONF=$W/softhsm2.conf
ExecStartPre=
ExecStartPre=/usr/sbin/kmsd -c $W/kms.conf --check-config
ExecStart=
ExecStart=/usr/sbin/kmsd -c $W/kms.conf
EOF
  cat > "$DROPIN_MB" <<EOF
[Service]
ExecStart=
ExecStart=/usr/sbin/kms-mailbox --config $W/mailbox.conf
EOF
  systemctl daemon-reload
  how="through kmsd.service and kms-mailbox.service (systemd, the units' sandbox)"
else
  how="as the kms user with setpriv (no systemd: the units' sandbox is not applied)"
fi
echo "starting kmsd and kms-mailbox $how"

SVC_CMD=(env SOFTHSM2_CONF="$W/softhsm2.conf" /usr/sbin/kmsd -c "$W/kms.conf")
if svc_start kmsd 'ready: udp'; then
  SERVER=$(svc_log kmsd | sed -n 's/.*ready: udp \([0-9.]*:[0-9]*\),.*/\1/p' | tail -1)
  pass "kmsd ready on $SERVER"
  svc_grep kmsd 'IBE master secret loaded' && pass "kmsd loaded the KGC" \
    || fail "kmsd did not load the KGC"
  "${KMSCTL[@]}" stats > "$T/stats" 2>&1 && pass "kmsctl stats through the control socket" \
    || { cat "$T/stats"; fail "kmsctl stats"; }
  if as_kms /usr/bin/kms-ibake keys --server "$SERVER" --key "$W/mb.key" \
       --params "$W/ibe.params" --out "$W/mb.ibe" --timeout-ms 5000 > "$T/keys" 2>&1; then
    pass "kms-ibake keys from the installed kmsd"
    sed -e "s|^listen = .*|listen = 127.0.0.1:0|" -e "s|^store = .*|store = $W/mbox|" \
        -e "s|^keys =.*|keys = $W/mb.ibe|" -e "s|^params =.*|params = $W/ibe.params|" \
        -e "s|^map_size_mb = .*|map_size_mb = 64|" /etc/kms/kms-mailbox.conf > "$W/mailbox.conf"
    chown kms:kms "$W/mailbox.conf"
    SVC_CMD=(/usr/sbin/kms-mailbox --config "$W/mailbox.conf")
    if svc_start kms-mailbox 'ready on'; then
      pass "kms-mailbox $(svc_log kms-mailbox | grep -o 'ready on [^ ]*' | tail -1)"
      svc_stop kms-mailbox
    fi
  else
    cat "$T/keys"; fail "kms-ibake keys"
  fi
  if [ $SYSTEMD = 1 ]; then
    # ---- 5a. the upgrade path while kmsd runs: postinst try-restart
    dpkg_retry -i "$DEB" > "$T/dpkg-i2.log" || { cat "$T/dpkg-i2.log"; fail "dpkg -i (again)"; }
    systemctl is-active --quiet kmsd.service && pass "kmsd running after the upgrade path" \
      || fail "kmsd not running after dpkg -i over itself"
  fi
  svc_stop kmsd
fi
if [ $SYSTEMD = 0 ]; then
  # ---- 5b. the upgrade path (no systemd: the scripts start nothing)
  dpkg_retry -i "$DEB" > "$T/dpkg-i2.log" && pass "dpkg -i over itself (upgrade path)" \
    || { cat "$T/dpkg-i2.log"; fail "dpkg -i (again)"; }
fi

# ---- 5. purge
rm -rf "$W"; W=""
if dpkg_retry --purge "$PKG" > "$T/purge.log"; then
  left=""
  for f in /usr/sbin/kmsd /usr/bin/kmsctl /usr/lib/systemd/system/kmsd.service \
           /usr/lib/systemd/system/kms-mailbox.service /usr/share/man/man8/kmsd.8.gz \
           /etc/kms/kms.conf; do
    [ ! -e "$f" ] || left="$left $f"
  done
  [ $had_etc = 1 ] || [ ! -e /etc/kms ] || left="$left /etc/kms"
  [ $had_state = 1 ] || [ ! -e /var/lib/kms ] || left="$left /var/lib/kms"
  [ -z "$left" ] && pass "dpkg --purge: nothing of the package left" || fail "left after purge:$left"
else
  cat "$T/purge.log"; fail "dpkg --purge"
fi

if [ $SYSTEMD = 1 ]; then
  echo "tested: the units started and stopped by systemd"
else
  echo "NOTE: systemd is not PID 1 here: the units were verified (systemd-analyze)" \
       "but not started; the installed kmsd and kms-mailbox ran as the kms user instead"
fi
[ $FAILS -eq 0 ] && echo "test_package: all passed" || echo "test_package: $FAILS failed"
[ $FAILS -eq 0 ]
