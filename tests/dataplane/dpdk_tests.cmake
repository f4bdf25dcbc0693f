# SPDX-License-Identifier: Apache-2.0
# The DPDK dataplane in process: EAL with --no-huge --no-pci, net_ring ports
# from rte_eth_from_rings (librte_net_ring), the real engine of the engine
# fixture (SoftHSM2 + LMDB).
kms_add_test(NAME test_dpdk
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_dpdk.c
          ${CMAKE_CURRENT_SOURCE_DIR}/engine_fixture.c
  LIBS kms_dpdk PkgConfig::CRYPTO rte_net_ring Threads::Threads
  LABELS "dpdk;integration")
