#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# with_systemd.sh CMD [ARGS...]: run CMD where systemd is PID 1, so that a
# test can start our units for real (systemctl start, the units' sandbox,
# the journal) on a machine, container or CI runner whose PID 1 is not
# systemd.
#
# If systemd already is PID 1, CMD runs as it is. Otherwise systemd
# (/lib/systemd/systemd --system) boots as PID 1 of new PID, mount, UTS and
# IPC namespaces (unshare), with a private tmpfs on /run and a minimal
# target of its own: it starts the journal (volatile, in that /run) and
# nothing else: no getty, no udev, no tmpfiles (which would clean the
# host's /tmp), no network configuration. The file system, the network and
# the users are the host's; what CMD installs stays installed (CMD cleans
# up after itself). CMD runs inside with nsenter, in the current
# directory, with the current environment; its exit code is returned.
# Then the namespace's PID 1 gets SIGKILL, which ends every process in it.
#
# Exit 77 (skip) when this cannot be done: not root, no unshare/nsenter,
# no systemd, or systemd did not reach its target within 30 s.
set -u
[ $# -ge 1 ] || { echo "usage: with_systemd.sh CMD [ARGS...]" >&2; exit 2; }
if [ -d /run/systemd/system ] && [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
  exec "$@"
fi
skip() { echo "with_systemd: skipped: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "not root"
SYSTEMD_BIN=/lib/systemd/systemd
[ -x $SYSTEMD_BIN ] || skip "$SYSTEMD_BIN not found (apt-get install systemd)"
for t in unshare nsenter systemctl; do
  command -v $t > /dev/null || skip "$t not found"
done

D=$(mktemp -d /tmp/kms-with-systemd.XXXXXX)
# A file in the host's /tmp that must still be there at the end.
: > "$D/sentinel"
cat > "$D/boot" <<'EOF'
#!/bin/bash
# PID 1's parent side, inside the new namespaces (see with_systemd.sh).
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/systemd/system /run/systemd/journald.conf.d
cat > /run/systemd/system/kms-test.target <<'T'
[Unit]
Description=with_systemd.sh: the journal and nothing else
DefaultDependencies=no
Wants=systemd-journald.socket systemd-journald.service
After=systemd-journald.service
AllowIsolate=yes
T
printf '[Journal]\nStorage=volatile\n' > /run/systemd/journald.conf.d/50-volatile.conf
# Nothing the host's boot would start may start here: a unit's default
# dependencies pull sysinit.target, whose systemd-tmpfiles-setup empties
# the host's /tmp (it did, once), whose udev trigger, sysctl and clock
# services act on the host. So: no default dependencies for any service,
# and every unit any target wants or requires is masked (system.control
# outranks /etc), as are the units that act on the whole machine.
mkdir -p /run/systemd/system.control/service.d
printf '[Unit]\nDefaultDependencies=no\n' \
  > /run/systemd/system.control/service.d/10-with-systemd.conf
for u in /etc/systemd/system/*.wants/* /etc/systemd/system/*.requires/* \
         /lib/systemd/system/*.wants/* /lib/systemd/system/*.requires/* \
         /usr/lib/systemd/system/*.wants/* /usr/lib/systemd/system/*.requires/* \
         systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service \
         systemd-tmpfiles-clean.service systemd-tmpfiles-clean.timer \
         systemd-udevd.service systemd-udev-trigger.service \
         systemd-udev-settle.service systemd-sysctl.service \
         systemd-timesyncd.service systemd-networkd.service \
         systemd-resolved.service systemd-binfmt.service \
         systemd-modules-load.service systemd-random-seed.service \
         swap.target local-fs.target remote-fs.target; do
  [ -e "$u" ] || [ -L "$u" ] || case $u in */*) continue ;; esac
  n=${u##*/}
  case $n in systemd-journald*|'*') continue ;; esac
  ln -sf /dev/null "/run/systemd/system.control/$n"
done
export container=kms-with-systemd
exec /lib/systemd/systemd --system --unit=kms-test.target \
  --log-target=console --log-level=notice
EOF
chmod 0755 "$D/boot"

unshare --pid --fork --mount --uts --ipc --mount-proc --kill-child \
  "$D/boot" > "$D/systemd.log" 2>&1 < /dev/null &
US=$!
PID1=""
finish() {
  local rc=$1
  [ -z "$PID1" ] || kill -9 "$PID1" 2>/dev/null
  kill -9 "$US" 2>/dev/null
  wait "$US" 2>/dev/null
  rm -rf "$D"
  exit "$rc"
}
trap 'finish 130' INT
trap 'finish 143' TERM

state=""
for _ in $(seq 300); do
  [ -n "$PID1" ] || PID1=$(pgrep -P "$US" -x systemd | head -1)
  if [ -n "$PID1" ]; then
    state=$(nsenter -t "$PID1" -a systemctl is-system-running 2>/dev/null)
    case $state in running|degraded) break ;; esac
  fi
  kill -0 "$US" 2>/dev/null || break
  sleep 0.1
done
case $state in
  running|degraded) ;;
  *) echo "with_systemd: systemd did not come up (state '${state:-none}'):"
     sed 's/^/  /' "$D/systemd.log" | tail -20
     finish 77 ;;
esac
echo "with_systemd: systemd $(systemctl --version | head -1 | cut -d' ' -f2) is PID 1 of a new PID namespace (host PID $PID1), state $state"
nsenter -t "$PID1" -a --wd="$PWD" "$@"
rc=$?
if [ ! -e "$D/sentinel" ]; then
  echo "with_systemd: FAIL: a file in the host's /tmp is gone: something in the namespace cleaned /tmp"
  [ $rc != 0 ] || rc=1
fi
if [ $rc != 0 ]; then
  echo "with_systemd: the namespace's journal:"
  nsenter -t "$PID1" -a journalctl -b --no-pager -o short-monotonic 2>/dev/null | tail -40 | sed 's/^/  /'
fi
finish $rc
