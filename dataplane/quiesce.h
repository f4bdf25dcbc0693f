/* SPDX-License-Identifier: Apache-2.0 */
/* The munmap() guard of quiesce.c: NULL turns it off. */
#ifndef KMS_QUIESCE_H
#define KMS_QUIESCE_H
struct rte_rcu_qsbr;
void kms_quiesce_set(struct rte_rcu_qsbr *qs);
#endif
