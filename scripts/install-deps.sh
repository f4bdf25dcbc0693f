#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install every Debian 12 package the build, the tests and the demo need.
# Idempotent; run as root (or with sudo available).
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config            # toolchain
  libssl-dev                                  # OpenSSL 3 (EVP, HMAC, RAND)
  liblmdb-dev lmdb-utils                      # keystore
  libp11-kit-dev                              # PKCS#11 header (module is dlopen()ed)
  softhsm2                                    # PKCS#11 token for tests and demo
  libinih-dev                                 # INI configuration
  libjansson-dev                              # JSON on the control socket
  liburcu-dev                                 # RCU: live policy swap
  libcmocka-dev                               # unit tests
  python3 python3-cryptography procps iproute2  # test scripts
  libdpdk-dev                                 # kmsd --io dpdk
  dpdk dpdk-dev ethtool                       # DPDK e2e: dpdk-testpmd, veth checksum offload off
  gnuplot-nox                                 # kms-loadgen plots
  espeak-ng                                   # the demo's voice message
  tshark                                      # e2e_dissector (dumpcap, Lua)
  help2man systemd                            # man pages; systemd-analyze verify (e2e_package)
  clang libclang-rt-14-dev                    # libFuzzer harnesses (tests/fuzz)
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
