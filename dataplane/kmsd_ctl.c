// SPDX-License-Identifier: Apache-2.0
/*
 * kmsd's control commands (the table served on the control socket,
 * control/kms_ctl.h). Read-only for now: "stats".
 *
 * stats: {"crypto_mode", "io", "workers", "engine": {counters summed},
 * "per_worker": [{counters}, ...], "io_stats": {the I/O layer's}}. Engine
 * counters are the fields of struct kms_stats by name, "by_status" as
 * {"deposit": {"OK": n, ...}, ...} (non-zero only) and "cache_hit_rate".
 */
#include <stdio.h>
#include <string.h>

#include "kmsd_ctl.h"
#include "kms_err.h"

#ifdef KMS_HAVE_DPDK
#include "kms_pkt.h"
#endif

#define F(x) { #x, offsetof(struct kms_stats, x) }
static const struct {
	const char *name;
	size_t off;
} fields[] = {
	F(batches), F(requests), F(keys_new), F(keys_reused), F(retrievals),
	F(commits), F(commit_failures), F(committed_requests), F(cache_hits),
	F(cache_misses), F(cache_evictions), F(keys_pooled), F(hsm_calls),
	F(replay_busy), F(deferred_records), F(deferred_flushes),
	F(deferred_failures),
};
#undef F

static json_t *engine_json(const struct kms_stats *st)
{
	static const char *const kinds[KMS_RK__COUNT] = { "deposit", "retrieve",
							  "other" };
	json_t *o = json_object(), *bs = json_object();
	uint64_t lookups = st->cache_hits + st->cache_misses;

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		uint64_t v;

		memcpy(&v, (const char *)st + fields[i].off, sizeof(v));
		json_object_set_new(o, fields[i].name, json_integer((json_int_t)v));
	}
	json_object_set_new(o, "drops_not_kms",
			    json_integer((json_int_t)st->drops[KMS_DROP_NOT_KMS]));
	json_object_set_new(o, "drops_no_space",
			    json_integer((json_int_t)st->drops[KMS_DROP_NO_SPACE]));
	json_object_set_new(o, "cache_hit_rate",
			    json_real(lookups ? (double)st->cache_hits / (double)lookups
					      : 0.0));
	for (unsigned k = 0; k < KMS_RK__COUNT; k++) {
		json_t *one = json_object();

		for (unsigned s = 0; s < KMS_ST__COUNT; s++)
			if (st->by_status[k][s])
				json_object_set_new(one, kms_status_name(s),
						    json_integer((json_int_t)st->by_status[k][s]));
		json_object_set_new(bs, kinds[k], one);
	}
	json_object_set_new(o, "by_status", bs);
	return o;
}

static int worker_stats(const struct kmsd_ctl_src *src, unsigned i,
			struct kms_stats *out)
{
#ifdef KMS_HAVE_DPDK
	if (src->dp)
		return kms_dp_worker_stats(src->dp, i, out);
#endif
	return kms_sockio_worker_stats(src->io, i, out);
}

static json_t *io_json(const struct kmsd_ctl_src *src)
{
	json_t *o = json_object();

#ifdef KMS_HAVE_DPDK
	if (src->dp) {
		struct kms_dp_stats d;
		json_t *drops = json_object();

		kms_dp_read_stats(src->dp, &d, NULL);
		json_object_set_new(o, "rx", json_integer((json_int_t)d.rx));
		json_object_set_new(o, "tx", json_integer((json_int_t)d.tx));
		json_object_set_new(o, "requests", json_integer((json_int_t)d.requests));
		json_object_set_new(o, "arp", json_integer((json_int_t)d.arp));
		json_object_set_new(o, "nd", json_integer((json_int_t)d.nd));
		json_object_set_new(o, "forwarded", json_integer((json_int_t)d.forwarded));
		json_object_set_new(o, "ring_full", json_integer((json_int_t)d.ring_full));
		json_object_set_new(o, "tx_full", json_integer((json_int_t)d.tx_full));
		json_object_set_new(o, "engine_drops",
				    json_integer((json_int_t)d.engine_drops));
		for (unsigned i = 0; i < KMS_PKT_DROP__COUNT; i++)
			json_object_set_new(drops,
					    kms_pkt_drop_name((enum kms_pkt_verdict)i),
					    json_integer((json_int_t)d.drops[i]));
		json_object_set_new(o, "drops", drops);
		return o;
	}
#endif
	struct kms_sockio_stats s;

	kms_sockio_read_stats(src->io, NULL, &s);
	json_object_set_new(o, "rx", json_integer((json_int_t)s.rx));
	json_object_set_new(o, "tx", json_integer((json_int_t)s.tx));
	json_object_set_new(o, "ring_full", json_integer((json_int_t)s.ring_full));
	json_object_set_new(o, "tx_errors", json_integer((json_int_t)s.tx_errors));
	return o;
}

static int cmd_stats(void *arg, int argc, char **argv, json_t *reply,
		     char *err, size_t errlen)
{
	const struct kmsd_ctl_src *src = arg;
	struct kms_stats sum, one;
	json_t *per = json_array();

	(void)argv;
	if (argc != 1) {
		snprintf(err, errlen, "stats takes no arguments");
		json_decref(per);
		return -1;
	}
	memset(&sum, 0, sizeof(sum));
	for (unsigned i = 0; i < src->nworkers; i++) {
		if (worker_stats(src, i, &one)) {
			json_array_append_new(per, json_null()); /* not started */
			continue;
		}
		kms_stats_add(&sum, &one);
		json_array_append_new(per, engine_json(&one));
	}
	json_object_set_new(reply, "crypto_mode", json_string(src->crypto_mode));
	json_object_set_new(reply, "io", json_string(src->dp ? "dpdk" : "socket"));
	json_object_set_new(reply, "workers", json_integer(src->nworkers));
	json_object_set_new(reply, "engine", engine_json(&sum));
	json_object_set_new(reply, "per_worker", per);
	json_object_set_new(reply, "io_stats", io_json(src));
	return 0;
}

int kmsd_ctl_start(const char *path, struct kmsd_ctl_src *src,
		   struct kms_ctl **out)
{
	const struct kms_ctl_cmd cmds[] = {
		{ "stats", "counters: summed, per worker, and the I/O layer's",
		  0, cmd_stats, src },
	};

	return kms_ctl_start(path, cmds, sizeof(cmds) / sizeof(cmds[0]), out);
}
