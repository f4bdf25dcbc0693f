// SPDX-License-Identifier: Apache-2.0
/*
 * kmsd's control commands (the table served on the control socket,
 * control/kms_ctl.h): "stats", "policy-show", and the write side
 * "policy-set" / "policy-clear" (persisted with an audit record in one
 * transaction, then swapped into the workers by RCU).
 *
 * stats: {"crypto_mode", "io", "workers", "engine": {counters summed},
 * "per_worker": [{counters}, ...], "io_stats": {the I/O layer's}}. Engine
 * counters are the fields of struct kms_stats by name, "by_status" as
 * {"deposit": {"OK": n, ...}, ...} (non-zero only) and "cache_hit_rate".
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kmsd_ctl.h"
#include "kmsd_kekrot.h"
#include "kms_err.h"
#include "kms_log.h"

#ifdef KMS_HAVE_DPDK
#include "kms_pkt.h"
#endif

#define F(x) { #x, offsetof(struct kms_stats, x) }
static const struct {
	const char *name;
	size_t off;
} fields[] = {
	F(batches), F(requests), F(keys_new), F(keys_reused), F(retrievals),
	F(ibe_keys_issued),
	F(commits), F(commit_failures), F(committed_requests), F(cache_hits),
	F(cache_misses), F(cache_evictions), F(keys_pooled), F(hsm_calls),
	F(replay_busy), F(party_hits), F(party_reads), F(deferred_records),
	F(deferred_flushes),
	F(deferred_failures), F(deferred_flush_us),
};
#undef F

/* A log2 histogram: an array, element i counting [2^i, 2^(i+1)). */
static json_t *hist_json(const uint64_t *h)
{
	json_t *a = json_array();

	for (unsigned i = 0; i < KMS_HIST_BUCKETS; i++)
		json_array_append_new(a, json_integer((json_int_t)h[i]));
	return a;
}

static json_t *engine_json(const struct kms_stats *st)
{
	static const char *const kinds[KMS_RK__COUNT] = { "deposit", "retrieve",
							  "ibe_key", "other" };
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
	json_object_set_new(o, "commit_size_log2", hist_json(st->commit_size));
	json_object_set_new(o, "commit_size_sum",
			    json_integer((json_int_t)st->commit_size_sum));
	json_object_set_new(o, "batch_us_log2", hist_json(st->batch_us));
	json_object_set_new(o, "batch_us_sum",
			    json_integer((json_int_t)st->batch_us_sum));
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
	json_object_set_new(o, "sock_drops", json_integer((json_int_t)s.sock_drops));
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
	json_object_set_new(reply, "store",
			    json_pack("{s:I, s:b}", "purged_deposits",
				      (json_int_t)kmsd_purge_count(src->purge),
				      "purge_on", src->purge != NULL));
	return 0;
}

int kmsd_policy_load(struct kms_ks *ks, const struct kms_policy *dflt,
		     struct kms_policy_set *out)
{
	char text[KMS_POLICY_TEXT_MAX], err[256];
	struct kms_ks_txn *t;
	int rc = kms_ks_txn_begin(ks, 1, &t);

	if (rc)
		return rc;
	rc = kms_ks_meta_get(t, "policy", text, sizeof(text));
	kms_ks_txn_abort(t);
	if (rc == KMS_ERR_NOTFOUND) {
		kms_policy_set_init(out, dflt);
		return KMS_OK;
	}
	if (rc)
		return rc;
	if (kms_policy_decode(text, out, err, sizeof(err))) {
		KMS_ERR("the store's policy record: %s", err);
		return KMS_ERR_CORRUPT;
	}
	KMS_INFO("policy: the store's (set live; %u domain override%s), not "
		 "the configuration's [policy]", out->ndomains,
		 out->ndomains == 1 ? "" : "s");
	return KMS_OK;
}

static int cmd_policy_show(void *arg, int argc, char **argv, json_t *reply,
			   char *err, size_t errlen)
{
	const struct kmsd_ctl_src *src = arg;
	struct kms_policy_set ps;

	(void)argv;
	if (argc != 1) {
		snprintf(err, errlen, "policy-show takes no arguments");
		return -1;
	}
	kms_engine_policy_get(src->eng, &ps);
	return json_object_set_new(reply, "policy", kms_policy_json(&ps));
}

/* Persist @p ps and its audit record in one transaction, then swap. */
static int policy_commit(const struct kmsd_ctl_src *src,
			 const struct kms_policy_set *ps, const char *domain,
			 json_t *reply, char *err, size_t errlen)
{
	char text[KMS_POLICY_TEXT_MAX];
	struct kms_audit au;
	struct kms_ks_txn *t;
	struct timespec ts;
	int rc;

	if (kms_policy_encode(ps, text, sizeof(text)) < 0) {
		snprintf(err, errlen, "policy too large");
		return -1;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	memset(&au, 0, sizeof(au));
	au.event = KMS_AUD_POLICY;
	au.time_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	au.actor_len = 6;
	memcpy(au.actor, "kmsctl", 6);
	if (domain) {
		/* a domain, or a pair "A,B": A and B in their own fields */
		const char *comma = strchr(domain, ',');
		size_t la = comma ? (size_t)(comma - domain) : strlen(domain);

		au.id_a_len = (uint8_t)(la < KMS_ID_MAX ? la : KMS_ID_MAX);
		memcpy(au.id_a, domain, au.id_a_len);
		if (comma) {
			au.id_b_len = (uint8_t)(strlen(comma + 1) < KMS_ID_MAX
						? strlen(comma + 1) : KMS_ID_MAX);
			memcpy(au.id_b, comma + 1, au.id_b_len);
		}
	}
	rc = kms_ks_txn_begin(src->ks, 0, &t);
	if (!rc) {
		/* Fail closed: no audit record, no change. */
		rc = kms_ks_meta_put(t, "policy", text);
		if (!rc)
			rc = kms_ks_audit_append(t, &au);
		if (rc)
			kms_ks_txn_abort(t);
		else
			rc = kms_ks_txn_commit(t);
	}
	if (rc) {
		snprintf(err, errlen, "policy not stored (%s): nothing changed",
			 kms_strerror(rc));
		return -1;
	}
	rc = kms_engine_policy_swap(src->eng, ps);
	if (rc) {
		/* Checked before the commit (policy_check): not reached. */
		snprintf(err, errlen, "stored but not applied: %s", kms_strerror(rc));
		return -1;
	}
	KMS_INFO("policy changed (%s): %s", domain ? domain : "default", text);
	return json_object_set_new(reply, "policy", kms_policy_json(ps));
}

/* What the engine would refuse, refused before anything is stored. */
static int policy_check(const struct kmsd_ctl_src *src,
			const struct kms_policy_set *ps, char *err, size_t errlen)
{
	if (!src->deferred || !kms_policy_set_caps_retrievals(ps))
		return 0;
	snprintf(err, errlen, "max_retrievals must stay 0 with store.retrieve_records "
		 "= deferred (a limited count must be durable before the answer)");
	return -1;
}

/* "pair=A,B": the pair hash the engine computes for A and B. */
static int pair_arg(const char *arg, uint8_t hash[KMS_PAIR_HASH_LEN],
		    char *err, size_t errlen)
{
	char buf[KMS_POLICY_LABEL_MAX + 1], *comma;
	struct kms_id a, b;
	struct kms_hasher *h;

	if (strlen(arg) >= sizeof(buf) || !(comma = strchr(arg, ','))) {
		snprintf(err, errlen, "pair=A,B: two identities, comma-separated");
		return -1;
	}
	memcpy(buf, arg, strlen(arg) + 1);
	buf[comma - arg] = '\0';
	if (kms_id_from_str(buf, &a) || kms_id_from_str(buf + (comma - arg) + 1, &b)) {
		snprintf(err, errlen, "pair=A,B: not two valid identities");
		return -1;
	}
	h = kms_hasher_new();
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	kms_hasher_pair(h, &a, &b, hash);
	kms_hasher_free(h);
	return 0;
}

/* policy-set [domain=D | pair=A,B] name=value... */
static int cmd_policy_set(void *arg, int argc, char **argv, json_t *reply,
			  char *err, size_t errlen)
{
	const struct kmsd_ctl_src *src = arg;
	const char *domain = NULL, *pair = NULL;
	uint8_t hash[KMS_PAIR_HASH_LEN];
	struct kms_policy_set ps;
	int first = 1, rc;

	if (argc > 1 && !strncmp(argv[1], "domain=", 7)) {
		domain = argv[1] + 7;
		first = 2;
	} else if (argc > 1 && !strncmp(argv[1], "pair=", 5)) {
		pair = argv[1] + 5;
		first = 2;
		if (pair_arg(pair, hash, err, errlen))
			return -1;
	}
	kms_engine_policy_get(src->eng, &ps);
	rc = pair ? kms_policy_set_apply_pair(&ps, hash, pair, argc - first,
					       argv + first, err, errlen)
		  : kms_policy_set_apply(&ps, domain, argc - first, argv + first,
					 err, errlen);
	if (rc || policy_check(src, &ps, err, errlen))
		return -1;
	return policy_commit(src, &ps, pair ? pair : domain, reply, err, errlen);
}

/* policy-clear domain=D | pair=A,B */
static int cmd_policy_clear(void *arg, int argc, char **argv, json_t *reply,
			    char *err, size_t errlen)
{
	const struct kmsd_ctl_src *src = arg;
	uint8_t hash[KMS_PAIR_HASH_LEN];
	struct kms_policy_set ps;
	const char *what;
	int pair;

	if (argc != 2 || (strncmp(argv[1], "domain=", 7) &&
			  strncmp(argv[1], "pair=", 5))) {
		snprintf(err, errlen, "usage: policy-clear domain=D | pair=A,B");
		return -1;
	}
	pair = !strncmp(argv[1], "pair=", 5);
	what = argv[1] + (pair ? 5 : 7);
	if (pair && pair_arg(what, hash, err, errlen))
		return -1;
	kms_engine_policy_get(src->eng, &ps);
	if (pair ? kms_policy_set_clear_pair(&ps, hash)
		 : kms_policy_set_clear(&ps, what)) {
		snprintf(err, errlen, "no override for '%.64s'", what);
		return -1;
	}
	return policy_commit(src, &ps, what, reply, err, errlen);
}

static json_t *kekrot_json(void)
{
	struct kms_kekrot_progress pg;

	kmsd_kekrot_status(&pg);
	return json_pack("{s:b, s:b, s:I, s:I, s:i, s:s}", "running", pg.running,
			 "done", pg.done, "visited", (json_int_t)pg.visited,
			 "rewrapped", (json_int_t)pg.rewrapped, "passes",
			 (int)pg.passes, "error",
			 pg.error ? kms_strerror(pg.error) : "");
}

/* kek-rotate: start re-wrapping the store under a new KEK, live. */
static int cmd_kek_rotate(void *arg, int argc, char **argv, json_t *reply,
			  char *err, size_t errlen)
{
	const struct kmsd_ctl_src *src = arg;
	int rc;

	(void)argv;
	if (argc != 1) {
		snprintf(err, errlen, "kek-rotate takes no arguments");
		return -1;
	}
	rc = kmsd_kekrot_start(src->ks, src->eng);
	if (rc) {
		snprintf(err, errlen, "%s", rc == KMS_ERR_BUSY ?
			 "a KEK rotation is already running (kek-status)" :
			 kms_strerror(rc));
		return -1;
	}
	return json_object_set_new(reply, "kek_rotation", kekrot_json());
}

static int cmd_kek_status(void *arg, int argc, char **argv, json_t *reply,
			  char *err, size_t errlen)
{
	(void)arg;
	(void)argv;
	if (argc != 1) {
		snprintf(err, errlen, "kek-status takes no arguments");
		return -1;
	}
	return json_object_set_new(reply, "kek_rotation", kekrot_json());
}

int kmsd_ctl_start(const char *path, struct kmsd_ctl_src *src,
		   struct kms_ctl **out)
{
	const struct kms_ctl_cmd cmds[] = {
		{ "stats", "counters: summed, per worker, and the I/O layer's",
		  0, cmd_stats, src },
		{ "policy-show", "the reuse policy: default and domain overrides",
		  0, cmd_policy_show, src },
		{ "policy-set", "[domain=D | pair=A,B] name=value...: change the "
		  "default, D's or the pair's override (reuse_max_deposits, reuse_max_age_s, "
		  "deposit_lifetime_s, max_retrievals); stored, audited, applied "
		  "live", 1, cmd_policy_set, src },
		{ "policy-clear", "domain=D | pair=A,B: remove an override (stored, audited, "
		  "applied live)", 1, cmd_policy_clear, src },
		{ "kek-rotate", "re-wrap every stored key under a new KEK while "
		  "serving, then destroy the old KEK (audited; kek-status)", 1,
		  cmd_kek_rotate, src },
		{ "kek-status", "progress of the running or last KEK rotation", 0,
		  cmd_kek_status, src },
	};

	return kms_ctl_start(path, cmds, sizeof(cmds) / sizeof(cmds[0]), out);
}
