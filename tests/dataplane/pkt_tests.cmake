# SPDX-License-Identifier: Apache-2.0
# Frame classification and replies (dataplane/kms_pkt.h): every verdict,
# truncation at every length, random mutations. Fast; no DPDK needed.
# Included from tests/dataplane/CMakeLists.txt.
kms_add_test(NAME test_pkt SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_pkt.c
  LIBS kms_pkt LABELS "unit;dataplane")
