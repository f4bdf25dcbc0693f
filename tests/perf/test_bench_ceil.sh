#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# kms-bench-ceil, the ceilings every benchmark figure is compared with,
# run for real in a short form (not a timed test: no rate is judged, only
# that each section measured something and says what it measured):
#   - every section (AEAD, HSM on a fresh SoftHSM2 token, LMDB, UDP echo)
#     runs, none is listed as failed, every rate is positive;
#   - the UDP echo keeps the window it was given (--udp-inflight), which
#     bench_kms.sh sets to kms-loadgen's, and says so in text and JSON;
#   - bad option values are refused with exit 2.
# Usage: test_bench_ceil.sh BUILD_DIR
set -euo pipefail

BUILD=${1:?usage: test_bench_ceil.sh BUILD_DIR}
CEIL=$BUILD/perf/kms-bench-ceil
[ -x "$CEIL" ] || { echo "no $CEIL"; exit 1; }
W=$(mktemp -d /tmp/kms-test-ceil-XXXXXX)
trap 'rm -rf "$W"' EXIT

"$CEIL" --runs 1 --seconds 0.2 --records 2000 --udp-inflight 64 \
	--dir "$W" --json "$W/c.json" >"$W/out.txt" 2>&1 ||
	{ cat "$W/out.txt"; echo "FAIL: kms-bench-ceil exited $?"; exit 1; }
grep -q "kernel UDP echo, loopback, 64 x 100 B in flight" "$W/out.txt" ||
	{ cat "$W/out.txt"; echo "FAIL: the text does not name the window of 64"; exit 1; }

python3 - "$W/c.json" <<'PY'
import json, sys

d = json.load(open(sys.argv[1]))
bad = []

def positive(path, v):
    if not isinstance(v, (int, float)) or v <= 0:
        bad.append("%s = %r" % (path, v))

def median(path, s):
    positive(path + ".median", s.get("median") if isinstance(s, dict) else None)

if d.get("sections_failed"):
    bad.append("sections_failed = %r" % d["sections_failed"])
positive("retrieve_aead_ceiling_rps", d.get("retrieve_aead_ceiling_rps"))
for k in ("seal_token_ops", "open_token_ops", "seal_keybox_ops"):
    median("aead." + k, d.get("aead", {}).get(k))
for k in ("random32_ops", "new_key_ops", "wrap_ops", "unwrap_ops",
          "gcm_open_ops", "gcm_seal_keybox_ops"):
    median("hsm." + k, d.get("hsm", {}).get(k))
lm = d.get("lmdb", {})
median("lmdb.read_1thread_ops", lm.get("read_1thread_ops"))
commits = lm.get("commits", [])
if [c.get("batch") for c in commits] != [1, 8, 32, 128]:
    bad.append("lmdb.commits batches = %r" % [c.get("batch") for c in commits])
for c in commits:
    median("lmdb.commits[%s].commits_per_s" % c.get("batch"), c.get("commits_per_s"))
u = d.get("udp_echo", {})
if u.get("inflight") != 64:
    bad.append("udp_echo.inflight = %r, asked for 64" % u.get("inflight"))
median("udp_echo.round_trips_per_s", u.get("round_trips_per_s"))
if bad:
    print("FAIL: " + "; ".join(bad))
    sys.exit(1)
print("ok: every section measured; UDP echo window 64")
PY

for v in 0 4097 x; do
	rc=0
	"$CEIL" --only udp --udp-inflight "$v" >"$W/bad.txt" 2>&1 || rc=$?
	[ "$rc" = 2 ] || { cat "$W/bad.txt"; echo "FAIL: --udp-inflight $v gave exit $rc, not 2"; exit 1; }
done
echo "ok: bad --udp-inflight values refused"
