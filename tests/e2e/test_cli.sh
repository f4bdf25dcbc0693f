#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The command lines an operator meets first (issue 10, item 6: every flag
# documented, errors say what to do), for each binary that has a man page:
#   - --help: exit 0, on stdout, starts "Usage: NAME", lines of at most 80
#     columns, and names every long option of the binary's getopt table
#     (read from its source, so a new flag without help text fails here);
#   - --version: exit 0, "NAME (ims-kms) VERSION" with the project's
#     version, then the OpenSSL it runs with;
#   - an unknown option: the documented usage exit code, nothing on
#     stdout, and on stderr the option named and the usage (or where to
#     find it: "try 'NAME --help'");
#   - a bad value: refused with the option named.
# Usage: test_cli.sh SOURCE_DIR VERSION NAME=BINARY...
set -u
SRC=$1 VERSION=$2
shift 2
FAILS=0
pass() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
T=$(mktemp -d /tmp/kms-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT

# name -> source file with its option table, usage exit code, a subcommand
# to put before the options (kms-client takes its command first), and one
# option with a bad value.
declare -A SRCF=(
  [kmsd]=dataplane/kmsd.c [kms-mailbox]=dataplane/kms_mailbox.c
  [kmsctl]=control/kmsctl.c [kms-client]=proto/client/kms_client.c
  [kms-ibake]=proto/client/kms_ibake_client.c [kms-loadgen]=perf/loadgen/loadgen.c)
declare -A USAGE_RC=([kmsd]=2 [kms-mailbox]=2 [kmsctl]=2 [kms-client]=1
  [kms-ibake]=1 [kms-loadgen]=2)
declare -A SUBCMD=([kms-client]=token)
declare -A BADVAL=([kmsd]="--workers 0" [kms-mailbox]="--config /nonexistent/mb.conf"
  [kmsctl]="--config /nonexistent/kms.conf list"
  [kms-client]="--key /dev/null --peer x --out $T/o --ts-offset-ms abc"
  [kms-ibake]="--timeout-ms 0 keys" [kms-loadgen]="--population x --rate -5")
declare -A BADOPT=([kmsd]=workers [kms-mailbox]="/nonexistent" [kmsctl]="/nonexistent"
  [kms-client]=ts-offset-ms [kms-ibake]=timeout-ms [kms-loadgen]=rate)

for arg in "$@"; do
  name=${arg%%=*} bin=${arg#*=}
  src=$SRC/${SRCF[$name]:?no source listed for $name}
  [ -x "$bin" ] || { fail "$name: $bin is not executable"; continue; }

  # --help
  "$bin" --help > "$T/out" 2> "$T/err"; rc=$?
  if [ $rc = 0 ] && head -1 "$T/out" | grep -q "^Usage:\( $name\)\?"; then
    pass "$name --help: exit 0, Usage on stdout"
  else
    fail "$name --help: exit $rc, first line '$(head -1 "$T/out")'"
  fi
  wide=$(awk 'length($0) > 80 { print NR": "length($0) }' "$T/out")
  [ -z "$wide" ] && pass "$name --help: no line wider than 80 columns" \
    || fail "$name --help: lines wider than 80 columns: $wide"
  opts=$(grep -oE '\{ *"[a-z0-9-]+", *(no_argument|required_argument|optional_argument|[0-9]),' "$src" \
    | sed -E 's/\{ *"([^"]+)".*/\1/' | sort -u)
  n=$(printf '%s\n' "$opts" | grep -c .)
  [ "$n" -ge 3 ] || fail "$name: only $n long options found in $src (table format changed?)"
  missing=""
  for o in $opts; do
    grep -qE -- "--$o([^a-z0-9-]|$)" "$T/out" || missing="$missing --$o"
  done
  [ -z "$missing" ] && pass "$name --help documents all $n long options of $src" \
    || fail "$name --help does not document:$missing"

  # --version
  "$bin" --version > "$T/out" 2> "$T/err"; rc=$?
  if [ $rc = 0 ] && [ "$(head -1 "$T/out")" = "$name (ims-kms) $VERSION" ] \
     && grep -q '^OpenSSL [0-9]' "$T/out"; then
    pass "$name --version: $(head -1 "$T/out"), $(grep '^OpenSSL' "$T/out" | cut -d' ' -f1-2)"
  else
    fail "$name --version: exit $rc: $(head -3 "$T/out" | tr '\n' '|')"
  fi

  # an unknown option
  # shellcheck disable=SC2086
  "$bin" ${SUBCMD[$name]:-} --no-such-flag > "$T/out" 2> "$T/err"; rc=$?
  if [ $rc = "${USAGE_RC[$name]}" ] && [ ! -s "$T/out" ] \
     && grep -q "no-such-flag" "$T/err" \
     && grep -qE "Usage:|try '$name --help'" "$T/err"; then
    pass "$name --no-such-flag: exit $rc, named on stderr with the usage"
  else
    fail "$name --no-such-flag: exit $rc (want ${USAGE_RC[$name]}), stdout $(wc -c < "$T/out") bytes, stderr: $(head -2 "$T/err" | tr '\n' '|')"
  fi

  # a bad value
  # shellcheck disable=SC2086
  "$bin" ${SUBCMD[$name]:-} ${BADVAL[$name]} > "$T/out" 2> "$T/err" < /dev/null; rc=$?
  if [ $rc != 0 ] && grep -q -- "${BADOPT[$name]}" "$T/err"; then
    pass "$name ${BADVAL[$name]}: exit $rc: $(grep -m1 -- "${BADOPT[$name]}" "$T/err")"
  else
    fail "$name ${BADVAL[$name]}: exit $rc, stderr: $(head -2 "$T/err" | tr '\n' '|')"
  fi
done

[ $FAILS = 0 ] || { echo "$FAILS check(s) failed"; exit 1; }
echo "all checks passed"
