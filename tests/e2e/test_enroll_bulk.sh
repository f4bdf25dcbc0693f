#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# kmsctl enroll-bulk against a real SoftHSM2 token and LMDB store: the
# population file (perf/loadgen/lg_pop.h format, mode 0600, padded IDs),
# the enrolled parties, refusals that leave the store untouched (an
# overlapping population, an existing output file, a too-small --id-len),
# and one deposit + retrieve through kmsd with keys taken from the file.
# Usage: test_enroll_bulk.sh BUILD_DIR

BIN=$1
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

NU=2500 NAS=2 IDLEN=40
NP=$((NU + NAS))

setup_env
KMSD_ARGS=(--io socket)
"$KMSCTL" -c "$W/kms.conf" init >/dev/null

parties() { "$KMSCTL" -c "$W/kms.conf" list | wc -l; }
enrolls() { "$KMSCTL" -c "$W/kms.conf" audit | grep -c ' enroll actor=kmsctl ' || true; }

# 1. The population.
t0=$(date +%s%N)
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users $NU --as $NAS --id-len $IDLEN \
  --out "$W/pop.txt" > "$W/bulk.out"
t1=$(date +%s%N)
echo "enroll-bulk --users $NU --as $NAS: $(( (t1 - t0) / 1000000 )) ms"
grep -qx "enrolled $NU users and $NAS AS; population written to $W/pop.txt" "$W/bulk.out" \
  && pass "final line" || fail "final line: $(cat "$W/bulk.out")"

# 2. The file: mode, format, IDs.
[ "$(stat -c %a "$W/pop.txt")" = 600 ] && pass "population file mode 0600" \
  || fail "population file mode $(stat -c %a "$W/pop.txt")"
head -1 "$W/pop.txt" | grep -qx '# IMS KMS load-generator population. Secret: keep mode 0600.' \
  && pass "header line" || fail "header: $(head -1 "$W/pop.txt")"
n=$(grep -cEx '(user|as) [!-~]+ 1 [0-9a-f]{64}' "$W/pop.txt" || true)
other=$(grep -cvEx '(user|as) [!-~]+ 1 [0-9a-f]{64}|#.*' "$W/pop.txt" || true)
[ "$n" -eq $NP ] && [ "$other" -eq 0 ] && pass "$NP party lines in the documented format" \
  || fail "party lines: $n well-formed, $other other"
[ "$(grep -c '^user ' "$W/pop.txt")" -eq $NU ] && [ "$(grep -c '^as ' "$W/pop.txt")" -eq $NAS ] \
  && pass "$NU users, $NAS AS" || fail "kinds in the file"
bad=$(awk -v L=$IDLEN '!/^#/ && length($2) != L' "$W/pop.txt" | wc -l)
[ "$bad" -eq 0 ] && pass "every ID is $IDLEN bytes" || fail "$bad IDs are not $IDLEN bytes"
# pad HEAD @DOMAIN: HEAD, 'x' up to IDLEN bytes, @DOMAIN
pad() { printf '%s%s%s' "$1" "$(printf '%*s' $((IDLEN - ${#1} - ${#2})) '' | tr ' ' x)" "$2"; }
U1=$(pad sip:lg-u0000001 @lg.example)
U2=$(pad sip:lg-u0002500 @lg.example)
AS1=$(pad sip:lg-mb001 @lg.example)
grep -q "^user $U1 " "$W/pop.txt" && grep -q "^user $U2 " "$W/pop.txt" \
  && grep -q "^as $AS1 " "$W/pop.txt" && pass "IDs padded before the '@' ($U1)" \
  || fail "expected IDs $U1 $U2 $AS1"
[ "$(awk '!/^#/ { print $2 }' "$W/pop.txt" | sort -u | wc -l)" -eq $NP ] \
  && pass "IDs distinct" || fail "duplicate IDs"
[ "$(awk '!/^#/ { print $4 }' "$W/pop.txt" | sort -u | wc -l)" -eq $NP ] \
  && pass "keys distinct" || fail "duplicate keys"

# 3. The store.
[ "$(parties)" -eq $NP ] && pass "kmsctl list: $NP parties" || fail "list: $(parties) parties"
[ "$("$KMSCTL" -c "$W/kms.conf" list | grep -c ' kind=as status=active gen=1 ')" -eq $NAS ] \
  && pass "$NAS AS, active, generation 1" || fail "AS records"
[ "$(enrolls)" -eq $NP ] && pass "$NP ENROLL audit records" || fail "audit: $(enrolls) enroll records"

# 4. Refusals leave the store as it was and write no file.
audit_before=$("$KMSCTL" -c "$W/kms.conf" audit | wc -l)
rc=0
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 3000 --as $NAS --id-len $IDLEN \
  --out "$W/pop2.txt" >/dev/null 2>"$W/err2.txt" || rc=$?
[ $rc -eq 1 ] && pass "overlapping population refused (exit 1)" \
  || fail "overlap: exit $rc: $(cat "$W/err2.txt")"
grep -q "already enrolled" "$W/err2.txt" && pass "overlap message: $(head -1 "$W/err2.txt")" \
  || fail "overlap message: $(cat "$W/err2.txt")"
[ ! -e "$W/pop2.txt" ] && pass "no file written" || fail "pop2.txt exists"
[ "$(parties)" -eq $NP ] && [ "$("$KMSCTL" -c "$W/kms.conf" audit | wc -l)" -eq "$audit_before" ] \
  && pass "store unchanged after the refusal" || fail "store changed: $(parties) parties"

sum=$(sha256sum < "$W/pop.txt")
rc=0
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 10 --domain other.example \
  --out "$W/pop.txt" >/dev/null 2>"$W/err3.txt" || rc=$?
[ $rc -eq 1 ] && [ "$(sha256sum < "$W/pop.txt")" = "$sum" ] && [ "$(parties)" -eq $NP ] \
  && pass "existing output file refused, left as it was" \
  || fail "existing file: exit $rc: $(cat "$W/err3.txt")"

rc=0
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --users 10 --domain other.example --id-len 25 \
  --out "$W/pop4.txt" >/dev/null 2>"$W/err4.txt" || rc=$?
[ $rc -eq 2 ] && [ ! -e "$W/pop4.txt" ] && [ "$(parties)" -eq $NP ] \
  && pass "too small --id-len refused (exit 2): $(cat "$W/err4.txt")" \
  || fail "too small --id-len: exit $rc: $(cat "$W/err4.txt")"

# 4b. From a list of identities (--ids): users first in the file, kinds
#     as listed; a malformed line or a duplicate refuses the whole list.
printf '# operator list\nas mb.list.example\nuser sip:l1@list.example\n\nuser sip:l2@list.example\n' > "$W/ids.txt"
"$KMSCTL" -c "$W/kms.conf" enroll-bulk --ids "$W/ids.txt" --out "$W/popl.txt" >/dev/null \
  && [ "$(grep -c '^user sip:l[12]@list.example ' "$W/popl.txt")" = 2 ] \
  && [ "$(grep -c '^as mb.list.example ' "$W/popl.txt")" = 1 ] \
  && [ "$(parties)" -eq $((NP + 3)) ] \
  && pass "enroll-bulk --ids: 2 users and 1 AS from a list" || fail "enroll-bulk --ids: $(cat "$W/popl.txt" 2>&1 | head -3)"
printf 'user sip:l3@list.example\nuser sip:l3@list.example\n' > "$W/dup.txt"
printf 'user sip:l4@list.example\nadmin sip:l5@list.example\n' > "$W/bad.txt"
for f in dup bad; do
  rc=0; "$KMSCTL" -c "$W/kms.conf" enroll-bulk --ids "$W/$f.txt" --out "$W/pop-$f.txt" \
    >/dev/null 2>"$W/err-$f.txt" || rc=$?
  [ $rc -eq 2 ] && [ ! -e "$W/pop-$f.txt" ] && [ "$(parties)" -eq $((NP + 3)) ] \
    && pass "--ids $f list refused: $(cat "$W/err-$f.txt")" || fail "--ids $f: exit $rc $(cat "$W/err-$f.txt")"
done

# 5. Keys from the file work end to end: A and B are population users, the
#    mailbox is the first AS.
keyfile() {   # keyfile KIND ID NAME: a kms-client key file from the file's line
  local hex
  hex=$(awk -v k="$1" -v id="$2" '$1 == k && $2 == id { print $4 }' "$W/pop.txt")
  [ ${#hex} -eq 64 ] || { fail "no line for $2"; return 1; }
  (umask 077; printf 'id = %s\nkind = %s\ngen = 1\nkey = %s\n' "$2" "$1" "$hex" > "$W/$3.key")
}
keyfile user "$U1" a; keyfile user "$U2" b; keyfile as "$AS1" mb
start_kmsd
$CLIENT token --key "$W/a.key" --peer "$U2" --out "$W/ea.tok"
$CLIENT deposit --server "$SERVER" --key "$W/mb.key" --token "$W/ea.tok" \
  --params-out "$W/params.txt" --reply-out "$W/reply.txt" >/dev/null
$CLIENT open --key "$W/a.key" --token "$W/ea.tok" --reply "$W/reply.txt" --out "$W/ka.txt"
$CLIENT retrieve --server "$SERVER" --key "$W/b.key" --params "$W/params.txt" \
  --out "$W/kb.txt" >/dev/null
KA=$(value "$W/ka.txt" k); KB=$(value "$W/kb.txt" k)
[ ${#KA} -eq 64 ] && [ "$KA" = "$KB" ] && pass "deposit + retrieve with population keys: same K" \
  || fail "K_A=$KA K_B=$KB"
if stop_kmsd; then pass "kmsd: exit 0"; else fail "kmsd exit status on SIGTERM"; fi

finish
