#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# test_readme.sh SRC BUILD: README.md's three operator blocks ("Quick start
# (verbatim)", "Day to day", "The second system: MIKEY-IBAKE") run as
# written, one after the other in one bash, the way an operator pastes
# them. Two things differ from a terminal, both outside the blocks:
#   - the working directory is a temp dir holding `build` (-> BUILD) and
#     `config` (-> SRC/config), so `$PWD/build` and `config/...` resolve as
#     from the source tree;
#   - `W=/tmp/kms-quick` becomes the test's own temp dir (the only text
#     changed), and the run is in a network namespace of its own (root),
#     so the README's fixed ports 7430/7440 on 127.0.0.1 meet no other
#     test.
# Passes when the blocks exit 0 under `set -e -o pipefail` and print what
# the README promises ("A and B hold the same K", "B got A's exact bytes",
# the mailbox's counters). Exit 77 (skip) when not root.
set -euo pipefail

SRC=$(readlink -f "$1")
BUILD=$(readlink -f "$2")
README=$SRC/README.md

if [ "$(id -u)" != 0 ]; then
  echo "SKIP: needs root for a network namespace of its own"
  exit 77
fi
for t in softhsm2-util unshare ip python3; do
  command -v $t >/dev/null || { echo "FAIL: $t not found"; exit 1; }
done

T=$(mktemp -d /tmp/kms-readme-XXXXXX)
cleanup() {
  # Daemons the blocks left behind if they failed half-way.
  pkill -f "$T/w/kms.conf" 2>/dev/null || true
  pkill -f "$T/w/mbox" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
ln -s "$BUILD" "$T/build"
ln -s "$SRC/config" "$T/config"

# The first ```sh block after each heading, verbatim.
python3 - "$README" "$T/blocks.sh" "$T/w" <<'EOF'
import re, sys
readme, out, w = sys.argv[1:4]
text = open(readme).read()
heads = ["## Quick start (verbatim)", "### Day to day",
         "### The second system: MIKEY-IBAKE"]
parts = []
for h in heads:
    i = text.find(h)
    if i < 0:
        sys.exit("README.md has no heading starting with %r" % h)
    m = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M).search(text, i)
    if not m:
        sys.exit("no ```sh block after %r" % h)
    parts.append("# ---- %s\n%s" % (h, m.group(1)))
script = "\n".join(parts)
if script.count("W=/tmp/kms-quick") != 1:
    sys.exit("expected exactly one 'W=/tmp/kms-quick' in the blocks")
open(out, "w").write(script.replace("W=/tmp/kms-quick", "W=" + w))
EOF

echo "== README blocks, as run (W=$T/w):"
cat "$T/blocks.sh"
echo "== output"
rc=0
unshare -n bash -c 'ip link set lo up && cd "$1" && exec bash -e -o pipefail blocks.sh' \
  _ "$T" > "$T/out.log" 2>&1 || rc=$?
cat "$T/out.log"

fail=0
[ "$rc" = 0 ] || { echo "FAIL: the README blocks exited $rc"; fail=1; }
for want in "A and B hold the same K" "B got A's exact bytes" "kms-mailbox: stats:"; do
  if grep -qF "$want" "$T/out.log"; then
    echo "PASS: printed '$want'"
  else
    echo "FAIL: did not print '$want'"; fail=1
  fi
done
# The Day-to-day revocations were recorded: the export the block wrote
# holds three revoke events (a party, a pair, a deposit).
n=$(python3 -c 'import json, sys
print(sum(json.loads(l)["event"] == "revoke" for l in open(sys.argv[1]) if l.strip()))' \
    "$T/w/audit.jsonl" 2>/dev/null || echo 0)
if [ "$n" = 3 ]; then
  echo "PASS: audit export holds the 3 revocations"
else
  echo "FAIL: $n revoke events in the audit export, expected 3"; fail=1
fi
exit $fail
