// SPDX-License-Identifier: Apache-2.0
/*
 * kms-loadgen's reports: the one-screen summary, the JSON file with the
 * per-second time series, and the gnuplot plots.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lg_priv.h"

/* A count over the measured window; 0 when nothing was measured (stopped
 * during the seed). */
double per_s(const struct lg *g, uint64_t n)
{
	return g->meas_s > 0 ? (double)n / g->meas_s : 0;
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static void json_lat(FILE *f, const struct lg_hist *h)
{
	fprintf(f, "{\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, "
		"\"max\": %.1f, \"mean\": %.1f}", us(lg_hist_quantile(h, 0.5)),
		us(lg_hist_quantile(h, 0.9)), us(lg_hist_quantile(h, 0.99)),
		us(lg_hist_quantile(h, 0.999)), us(h->max_ns),
		h->n ? us(h->sum_ns / h->n) : 0.0);
}

void lg_report_json(struct lg *g, const char *path, const char *iostats)
{
	FILE *f = fopen(path, "we");
	bool first = true;

	if (!f)
		die("%s: %s", path, strerror(errno));
	fprintf(f, "{\n  \"tool\": \"kms-loadgen\",\n  \"io\": \"%s\",\n"
		"  \"shape\": \"%s\",\n  \"rate_target\": %.0f,\n"
		"  \"outstanding\": %u,\n  \"mix\": \"%u:%u\",\n  \"pairs\": %u,\n"
		"  \"new_pairs_pct\": %u,\n  \"seed_deposits\": %u,\n"
		"  \"population\": {\"users\": %zu, \"as\": %zu},\n"
		"  \"measured_s\": %.3f,\n  \"warmup_s\": %.3f,\n",
		g->io->name, g->o.rate > 0 ? "open" : "closed", g->o.rate,
		g->o.rate > 0 ? 0 : g->o.outstanding, g->o.mix_d, g->o.mix_r,
		g->o.pairs, g->o.new_pct, g->ndeps, g->pop.nusers, g->pop.nas,
		g->meas_s, g->o.warmup);
	fprintf(f, "  \"sent\": %llu,\n  \"answered\": %llu,\n  \"ok\": %llu,\n"
		"  \"lost\": %llu,\n  \"throughput_rps\": %.1f,\n",
		(unsigned long long)g->sent_meas,
		(unsigned long long)g->answered_meas,
		(unsigned long long)g->v.ok, (unsigned long long)g->lost_meas,
		per_s(g, g->v.ok));
	for (int t = 0; t < 2; t++) {
		fprintf(f, "  \"%s\": {\"sent\": %llu, \"ok\": %llu, \"rps\": %.1f, "
			"\"latency_us\": ", t ? "retrieve" : "deposit",
			(unsigned long long)g->sent_type[t],
			(unsigned long long)g->ok_type[t],
			per_s(g, g->ok_type[t]));
		json_lat(f, &g->by_type[t]);
		fprintf(f, "},\n");
	}
	fprintf(f, "  \"latency_us\": ");
	json_lat(f, &g->all);
	fprintf(f, ",\n  \"errors_by_status\": {");
	for (unsigned s = 0; s < KMS_ST__COUNT; s++)
		if (g->v.by_status[s]) {
			fprintf(f, "%s\"%s\": %llu", first ? "" : ", ",
				kms_status_name(s),
				(unsigned long long)g->v.by_status[s]);
			first = false;
		}
	fprintf(f, "},\n  \"verify\": {\"mismatch\": %llu, \"bad_tag\": %llu, "
		"\"bad_reply\": %llu, \"unexpected_status\": %llu, \"busy\": %llu, "
		"\"late\": %llu, \"duplicate\": %llu, \"keys_checked\": %llu},\n",
		(unsigned long long)g->v.mismatch, (unsigned long long)g->v.bad_tag,
		(unsigned long long)g->v.bad_reply,
		(unsigned long long)g->v.unexpected, (unsigned long long)g->v.busy,
		(unsigned long long)g->v.late, (unsigned long long)g->v.dup,
		(unsigned long long)g->v.keys_checked);
	fprintf(f, "  \"generator\": {\"build_rps\": %.0f, \"max_send_rps\": %.0f, "
		"\"prebuilt\": %s, \"new_pairs_wrapped\": %llu},\n",
		(double)g->built * 1e9 / (double)(g->build_ns ? g->build_ns : 1),
		g->max_send_rps, g->prebuilt ? "true" : "false",
		(unsigned long long)g->new_pairs_wrapped);
	fprintf(f, "  \"io_stats\": \"%s\",\n  \"timeseries\": [", iostats);
	for (unsigned s = 0; s < g->nts; s++)
		fprintf(f, "%s\n    {\"t\": %u, \"sent\": %llu, \"answered\": %llu, "
			"\"ok\": %llu, \"err\": %llu, \"p99_us\": %.1f}", s ? "," : "",
			s, (unsigned long long)g->ts[s].sent,
			(unsigned long long)g->ts[s].answered,
			(unsigned long long)g->ts[s].ok,
			(unsigned long long)g->ts[s].err,
			us(lg_hist_quantile(&g->ts[s].h, 0.99)));
	fprintf(f, "\n  ],\n  \"histogram_us\": [");
	first = true;
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
		if (g->all.b[i]) {
			fprintf(f, "%s[%.3f, %llu]", first ? "" : ", ",
				us(lg_hist_upper(i)), (unsigned long long)g->all.b[i]);
			first = false;
		}
	fprintf(f, "]\n}\n");
	if (fclose(f))
		die("%s: write error", path);
}

void lg_report_plots(struct lg *g, const char *prefix)
{
	static const double q[] = { 0, .5, .75, .9, .95, .99, .995, .999, .9995,
				    .9999, .99999 };
	char path[4096];
	FILE *f, *gp;

	snprintf(path, sizeof(path), "%s-throughput.dat", prefix);
	f = fopen(path, "we");
	if (!f)
		die("%s: %s", path, strerror(errno));
	fprintf(f, "# second sent answered ok err p99_us\n");
	for (unsigned s = 0; s < g->nts; s++)
		fprintf(f, "%u %llu %llu %llu %llu %.1f\n", s,
			(unsigned long long)g->ts[s].sent,
			(unsigned long long)g->ts[s].answered,
			(unsigned long long)g->ts[s].ok,
			(unsigned long long)g->ts[s].err,
			us(lg_hist_quantile(&g->ts[s].h, 0.99)));
	fclose(f);
	snprintf(path, sizeof(path), "%s-latency.dat", prefix);
	f = fopen(path, "we");
	if (!f)
		die("%s: %s", path, strerror(errno));
	fprintf(f, "# quantile 1/(1-q) all_us deposit_us retrieve_us\n");
	for (unsigned i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		fprintf(f, "%g %g", q[i], 1.0 / (1.0 - q[i]));
		/* NaN: gnuplot leaves out a type that was not sent. */
		for (int t = -1; t < 2; t++) {
			const struct lg_hist *h = t < 0 ? &g->all : &g->by_type[t];

			if (h->n)
				fprintf(f, " %.1f", us(lg_hist_quantile(h, q[i])));
			else
				fprintf(f, " NaN");
		}
		fputc('\n', f);
	}
	fclose(f);
	gp = popen("gnuplot", "w");
	if (!gp) {
		fprintf(stderr, "kms-loadgen: gnuplot not found: data in %s-*.dat\n",
			prefix);
		return;
	}
	fprintf(gp,
		"set terminal png size 900,500\n"
		"set output '%s-throughput.png'\n"
		"set title 'kms-loadgen: requests per second (warm-up %.0f s)'\n"
		"set xlabel 'second'\nset ylabel 'per second'\nset grid\n"
		"set y2label 'p99 latency (us)'\nset y2tics\nset ytics nomirror\n"
		"plot '%s-throughput.dat' using 1:2 with linespoints title 'sent', "
		"'' using 1:4 with linespoints title 'verified ok', "
		"'' using 1:5 with linespoints title 'errors', "
		"'' using 1:6 axes x1y2 with lines title 'p99 (us)'\n"
		"set output '%s-latency.png'\n"
		"unset y2label\nunset y2tics\nset ytics mirror\n"
		"set title 'kms-loadgen: latency by percentile (measured window)'\n"
		"set logscale x\nset xlabel 'percentile'\nset ylabel 'latency (us)'\n"
		/* Tic labels are formats to gnuplot too: "%%%%" prints %. */
		"set xtics ('0%%%%' 1, '90%%%%' 10, '99%%%%' 100, '99.9%%%%' 1000, "
		"'99.99%%%%' 10000, '99.999%%%%' 100000)\n"
		"plot '%s-latency.dat' using 2:3 with linespoints title 'all', "
		"'' using 2:4 with linespoints title 'DEPOSIT', "
		"'' using 2:5 with linespoints title 'RETRIEVE'\n",
		prefix, g->o.warmup, prefix, prefix, prefix);
	if (pclose(gp))
		fprintf(stderr, "kms-loadgen: gnuplot failed: data in %s-*.dat\n",
			prefix);
}

void lg_report_summary(struct lg *g, const char *iostats)
{
	static const char *const tn[] = { "DEPOSIT", "RETRIEVE" };

	printf("kms-loadgen: %s, %s loop", g->io->name,
	       g->o.rate > 0 ? "open" : "closed");
	if (g->o.rate > 0)
		printf(" at %.0f req/s", g->o.rate);
	else
		printf(" with %u outstanding", g->o.outstanding);
	printf(", mix %u:%u, %u pairs, %u%% new pairs, %u seed deposits\n",
	       g->o.mix_d, g->o.mix_r, g->o.pairs, g->o.new_pct, g->ndeps);
	printf("measured %.2f s after %.1f s warm-up: sent %llu, answered %llu, "
	       "verified ok %llu, lost %llu (whole run: %llu lost)\n", g->meas_s,
	       g->o.warmup, (unsigned long long)g->sent_meas,
	       (unsigned long long)g->answered_meas, (unsigned long long)g->v.ok,
	       (unsigned long long)g->lost_meas, (unsigned long long)g->lost);
	printf("throughput %.0f verified req/s", per_s(g, g->v.ok));
	for (int t = 0; t < 2; t++)
		if (g->sent_type[t])
			printf("  %s %.0f/s", tn[t], per_s(g, g->ok_type[t]));
	printf("\n");
	printf("latency (us)   p50      p90      p99      p99.9    max\n");
	for (int t = -1; t < 2; t++) {
		const struct lg_hist *h = t < 0 ? &g->all : &g->by_type[t];

		if (!h->n)
			continue;
		printf("  %-10s %-8.0f %-8.0f %-8.0f %-8.0f %.0f\n",
		       t < 0 ? "all" : tn[t], us(lg_hist_quantile(h, .5)),
		       us(lg_hist_quantile(h, .9)), us(lg_hist_quantile(h, .99)),
		       us(lg_hist_quantile(h, .999)), us(h->max_ns));
	}
	printf("verification: %llu keys checked, %llu mismatches, %llu bad tags, "
	       "%llu bad replies, %llu unexpected statuses, %llu busy, %llu late\n",
	       (unsigned long long)g->v.keys_checked,
	       (unsigned long long)g->v.mismatch, (unsigned long long)g->v.bad_tag,
	       (unsigned long long)g->v.bad_reply,
	       (unsigned long long)g->v.unexpected, (unsigned long long)g->v.busy,
	       (unsigned long long)g->v.late);
	for (unsigned s = 0; s < KMS_ST__COUNT; s++)
		if (g->v.by_status[s])
			printf("  status %s: %llu\n", kms_status_name(s),
			       (unsigned long long)g->v.by_status[s]);
	printf("generator: built %.0f req/s%s; max send %.0f req/s%s\n",
	       (double)g->built * 1e9 / (double)(g->build_ns ? g->build_ns : 1),
	       g->prebuilt ? " (all before the run)" : " (in chunks during the run)",
	       g->max_send_rps,
	       g->max_send_rps > 0 ? " (to a local sink, same run)" :
				     " (not measured for this I/O)");
	printf("io: %s\n", iostats);
}

/* ---- options ---- */

