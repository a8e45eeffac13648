/* SHOW STATS: the stats module's per-pool counters (stats/stats.h) summed per database, as
 * PgBouncer shows them; SHOW WAITS: per pool, the claim-wait histogram behind tusk top. PgBouncer's avg_* rates cover its last stats_period; tusk has no
 * period, so counts and bytes per second are averaged over tusk's uptime, and the times are
 * per transaction, query or wait over all of them. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "console/console_int.h"
#include "frontend/client_int.h"
#include "pool/pool.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "worker/worker.h"

struct db_stats {
	const char *database; /* lives as long as its pool, i.e. the process */
	struct stats_counters c;
};

struct db_list {
	int n, cap;
	struct db_stats *dbs;
	bool failed;
};

static void add_pool(const struct stats_pool_snapshot *snap, void *arg)
{
	struct db_list *l = arg;
	struct db_stats *d = NULL;

	for (int i = 0; i < l->n && !d; i++)
		if (strcmp(l->dbs[i].database, snap->database) == 0)
			d = &l->dbs[i];
	if (!d) {
		if (l->n == l->cap) {
			int cap = l->cap ? 2 * l->cap : 16;
			struct db_stats *dbs = realloc(l->dbs, (size_t)cap * sizeof *dbs);
			if (!dbs) {
				l->failed = true;
				return;
			}
			l->dbs = dbs;
			l->cap = cap;
		}
		d = &l->dbs[l->n++];
		memset(d, 0, sizeof *d);
		d->database = snap->database;
	}
	d->c.xact_count += snap->c.xact_count;
	d->c.query_count += snap->c.query_count;
	d->c.wait_count += snap->c.wait_count;
	d->c.xact_us += snap->c.xact_us;
	d->c.query_us += snap->c.query_us;
	d->c.wait_us += snap->c.wait_us;
	d->c.bytes_received += snap->c.bytes_received;
	d->c.bytes_sent += snap->c.bytes_sent;
}

static void u64(char *out, size_t cap, uint64_t v)
{
	snprintf(out, cap, "%llu", (unsigned long long)v);
}

static uint64_t per(uint64_t total, double over)
{
	return over > 0 ? (uint64_t)((double)total / over) : 0;
}

/* SHOW TOTALS' row names: SHOW STATS' columns after "database". */
static const char *const totals_names[14] = {
	"total_xact_count", "total_query_count", "total_received", "total_sent", "total_xact_time", "total_query_time",
	"total_wait_time", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent", "avg_xact_time",
	"avg_query_time", "avg_wait_time",
};

void console_show_stats(struct console_session *cs, enum console_cmd_kind kind)
{
	struct runtime *rt = cs->v.client->worker->rt;
	struct db_list l = { 0 };
	double uptime = ev_now(cs->v.client->worker->loop) - rt->start_time;

	pool_foreach_snapshot(rt, add_pool, &l);
	if (l.failed) {
		free(l.dbs);
		vdb_error(&cs->v, "53200", "out of memory");
		return;
	}
	if (uptime < 1)
		uptime = 1;
	/* SHOW TOTALS: one database's worth, the sum of them all. */
	if (kind == CONSOLE_CMD_SHOW_TOTALS) {
		struct db_stats all = { .database = "" };
		for (int i = 0; i < l.n; i++) {
			struct stats_pool_snapshot snap = { .database = "", .c = l.dbs[i].c };
			struct db_list one = { .n = 1, .cap = 1, .dbs = &all };
			add_pool(&snap, &one);
		}
		free(l.dbs);
		l = (struct db_list){ .n = 1, .cap = 1, .dbs = malloc(sizeof all) };
		if (!l.dbs) {
			vdb_error(&cs->v, "53200", "out of memory");
			return;
		}
		l.dbs[0] = all;
	}
	/* Which of the 14 values after "database" each kind shows. */
	int from = kind == CONSOLE_CMD_SHOW_STATS_AVERAGES ? 7 : 0;
	int count = kind == CONSOLE_CMD_SHOW_STATS_TOTALS || kind == CONSOLE_CMD_SHOW_STATS_AVERAGES ? 7 : 14;
	for (int i = 0; i < l.n; i++) {
		const struct stats_counters *c = &l.dbs[i].c;
		uint64_t v[14] = {
			c->xact_count,
			c->query_count,
			c->bytes_received,
			c->bytes_sent,
			c->xact_us,
			c->query_us,
			c->wait_us,
			per(c->xact_count, uptime),
			per(c->query_count, uptime),
			per(c->bytes_received, uptime),
			per(c->bytes_sent, uptime),
			c->xact_count ? c->xact_us / c->xact_count : 0,
			c->query_count ? c->query_us / c->query_count : 0,
			c->wait_count ? c->wait_us / c->wait_count : 0,
		};
		char text[14][24];
		const char *vals[15] = { l.dbs[i].database };
		for (int k = 0; k < 14; k++)
			u64(text[k], sizeof text[k], v[k]);
		if (kind == CONSOLE_CMD_SHOW_TOTALS) {
			for (int k = 0; k < 14; k++) {
				const char *row[2] = { totals_names[k], text[k] };
				vdb_out_row(&cs->v.out, 2, row);
			}
			continue;
		}
		for (int k = 0; k < count; k++)
			vals[k + 1] = text[from + k];
		vdb_out_row(&cs->v.out, count + 1, vals);
	}
	free(l.dbs);
	vdb_complete(&cs->v, "SHOW");
}

struct waits_ctx {
	struct console_session *cs;
};

static void waits_row(const struct stats_pool_snapshot *snap, void *arg)
{
	struct waits_ctx *w = arg;
	const struct stats_counters *c = &snap->c;
	char xacts[24], waits[24], p50[24], p99[24];
	char buckets[(STATS_NBUCKETS + 1) * 21];
	size_t len = 0;

	u64(xacts, sizeof xacts, c->xact_count);
	u64(waits, sizeof waits, c->wait_count);
	u64(p50, sizeof p50, (uint64_t)(stats_quantile(c->wait_buckets, 0.50) * 1e6));
	u64(p99, sizeof p99, (uint64_t)(stats_quantile(c->wait_buckets, 0.99) * 1e6));
	buckets[0] = '\0';
	for (int i = 0; i <= STATS_NBUCKETS && len < sizeof buckets; i++)
		len += (size_t)snprintf(buckets + len, sizeof buckets - len, "%s%llu", i ? "," : "",
					(unsigned long long)c->wait_buckets[i]);
	const char *vals[] = { snap->database, snap->user, xacts, waits, p50, p99, buckets };
	vdb_out_row(&w->cs->v.out, 7, vals);
}

void console_show_waits(struct console_session *cs)
{
	struct waits_ctx w = { cs };
	pool_foreach_snapshot(cs->v.client->worker->rt, waits_row, &w);
	vdb_complete(&cs->v, "SHOW");
}
