#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# help2man runs this, through a link named like the binary, instead of the
# binary: `KMS_H2M_BIN=/path/to/kmsd man/bin/kmsd --help` prints kmsd's
# own --help text with only its synopsis reshaped for
# help2man, which wants "Usage: PROG ARGS" on one line and every further
# form on an "  or:  PROG ARGS" line:
#   - "usage: PROG ..." (any case) becomes "Usage: PROG ...";
#   - "usage:" alone followed by indented "  PROG ..." lines (one per
#     subcommand) becomes "Usage: PROG ..." then "  or:  PROG ...";
#   - a synopsis line's continuation lines (indented 8 or more columns,
#     starting with "[" or "--") are joined to it.
# Nothing else is changed: every option in the man page is in --help.
# --version is not asked (help2man gets --version-string: each binary's
# own --version adds the library versions, which help2man has no place for).
set -eu
bin=${KMS_H2M_BIN:?KMS_H2M_BIN: the binary whose --help to print}
prog=$(basename "$0")
case "${1:-}" in
  --help) ;;
  *) echo "h2m-help.sh: only --help is supported" >&2; exit 2 ;;
esac
out=$("$bin" --help) || { echo "h2m-help.sh: $bin --help failed" >&2; exit 1; }
printf '%s\n' "$out" | awk -v prog="$prog" '
  # state 0: before the synopsis; 1: inside it; 2: after it.
  # pre: "Usage: " or "  or:  "; body: the form, its spaces squeezed.
  function flush() {
      if (body != "") { gsub(/[ \t]+/, " ", body); print pre body; body = "" } }
  function start(line) {
      sub(/^[ \t]+/, "", line); pre = (n++ == 0 ? "Usage: " : "  or:  "); body = line }
  BEGIN { state = 0; n = 0; body = "" }
  state == 0 && NR == 1 && tolower($0) ~ /^usage:[ \t]*$/ { state = 1; next }
  state == 0 && NR == 1 && tolower($0) ~ /^usage:[ \t]+/ {
      line = $0; sub(/^[^:]*:/, "", line); start(line); state = 1; next }
  state == 1 && $0 ~ "^[ \t]+" prog "([ \t]|$)" { flush(); start($0); next }
  state == 1 && body != "" && $0 ~ /^        [ \t]*(\[|--)/ {
      line = $0; sub(/^[ \t]+/, "", line); body = body " " line; next }
  state == 1 { flush(); state = 2 }
  { print }
  END { flush() }'
