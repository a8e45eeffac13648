/* The HTTP endpoint (see metrics.h). libmicrohttpd runs one internal polling thread that
 * answers every request itself; a handler reads counters (relaxed atomics) and takes each
 * pool's lock only to copy its gauges, so a scrape never blocks a worker for longer than
 * a claim would. Memory is allocated here per request: this is not the relay's hot path. */
#include "flight/cache.h"
#include "metrics/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "config/config.h"
#include "kv/replicate.h"
#include "net/handshake.h"
#include "net/net.h"
#include "notify/notify.h"
#include "pool/pool.h"
#include "pool/services.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "util/heap.h"
#include "util/log.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_MAX_CONNECTIONS 32
#define METRICS_CONNECTION_TIMEOUT 10 /* seconds an idle HTTP connection is kept */
#define HEALTH_PROBE_MS 1000          /* a backend that does not accept within this is down */

struct metrics_http {
	struct MHD_Daemon *daemon;
	struct runtime *rt; /* read-only */
};

/* ---- Prometheus text format 0.0.4 ---- */

/* A label value: backslash, double quote and line feed are escaped; nothing else is. */
static void put_label(FILE *f, const char *name, const char *value)
{
	fprintf(f, "%s=\"", name);
	for (const char *p = value; *p; p++) {
		switch (*p) {
		case '\\': fputs("\\\\", f); break;
		case '"': fputs("\\\"", f); break;
		case '\n': fputs("\\n", f); break;
		default: fputc(*p, f); break;
		}
	}
	fputc('"', f);
}

static void put_family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_pool_labels(FILE *f, const struct stats_pool_snapshot *s)
{
	put_label(f, "database", s->database);
	fputc(',', f);
	put_label(f, "user", s->user);
}

struct pool_list {
	struct stats_pool_snapshot *v;
	size_t n, cap;
	bool oom;
};

static void collect_pool(const struct stats_pool_snapshot *snap, void *arg)
{
	struct pool_list *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct stats_pool_snapshot *v = realloc(l->v, cap * sizeof *v);
		if (!v) {
			l->oom = true;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = *snap;
}

/* One counter per pool, read from the snapshot by offset. */
static void put_pool_counter(FILE *f, const struct pool_list *l, const char *name, const char *help, size_t off,
			     double scale)
{
	put_family(f, name, "counter", help);
	for (size_t i = 0; i < l->n; i++) {
		uint64_t v;
		memcpy(&v, (const char *)&l->v[i].c + off, sizeof v);
		fprintf(f, "%s{", name);
		put_pool_labels(f, &l->v[i]);
		if (scale == 1.0)
			fprintf(f, "} %" PRIu64 "\n", v);
		else
			fprintf(f, "} %.6f\n", (double)v * scale);
	}
}

/* A histogram per pool. _count is the sum of the buckets (not the separate count) so that
 * the +Inf bucket equals _count even while workers are adding. */
static void put_pool_histogram(FILE *f, const struct pool_list *l, const char *name, const char *help,
			       bool wait)
{
	put_family(f, name, "histogram", help);
	for (size_t i = 0; i < l->n; i++) {
		const struct stats_counters *c = &l->v[i].c;
		const uint64_t *b = wait ? c->wait_buckets : c->query_buckets;
		uint64_t cum = 0;
		for (int k = 0; k <= STATS_NBUCKETS; k++) {
			cum += b[k];
			fprintf(f, "%s_bucket{", name);
			put_pool_labels(f, &l->v[i]);
			if (k < STATS_NBUCKETS)
				fprintf(f, ",le=\"%g\"} %" PRIu64 "\n", stats_bucket_bounds[k], cum);
			else
				fprintf(f, ",le=\"+Inf\"} %" PRIu64 "\n", cum);
		}
		fprintf(f, "%s_sum{", name);
		put_pool_labels(f, &l->v[i]);
		fprintf(f, "} %.6f\n", (double)(wait ? c->wait_us : c->query_us) / 1e6);
		fprintf(f, "%s_count{", name);
		put_pool_labels(f, &l->v[i]);
		fprintf(f, "} %" PRIu64 "\n", cum);
	}
}

static void put_pool_gauge(FILE *f, const struct pool_list *l, const char *name, const char *help, size_t off)
{
	put_family(f, name, "gauge", help);
	for (size_t i = 0; i < l->n; i++) {
		int v;
		memcpy(&v, (const char *)&l->v[i] + off, sizeof v);
		fprintf(f, "%s{", name);
		put_pool_labels(f, &l->v[i]);
		fprintf(f, "} %d\n", v);
	}
}

/* The whole exposition, malloc'd. 0 or -ENOMEM. */
/* Per kv replication link (docs/kv.md, "Operations"); nothing without a kv section. */
static void put_kv_links(FILE *f, struct kv_replicator *r)
{
	static const struct {
		const char *name, *type, *help;
	} fams[] = {
		{ "tusk_kv_link_connected", "gauge", "1 while the link's last pass succeeded (both connections up)." },
		{ "tusk_kv_link_lag_seconds", "gauge",
		  "Age of the peer snapshot of the link's last pass that caught up (-1: never caught up)." },
		{ "tusk_kv_link_lag_rows", "gauge", "The peer's rows still to pull when the last pass began (capped at 10000)." },
		{ "tusk_kv_link_applied_rows_total", "counter", "Pulled rows that changed the local copy." },
		{ "tusk_kv_link_skipped_rows_total", "counter",
		  "Pulled rows not newer than the local version: conflicts lost and replays." },
		{ "tusk_kv_link_quarantined_rows_total", "counter", "Poison rows moved to kv.quarantine." },
		{ "tusk_kv_link_failing", "gauge", "1 while the link's last pass failed (SHOW KV has the error)." },
		{ "tusk_kv_link_digest_mismatches_total", "counter", "Anti-entropy: buckets that differed from the peer's." },
		{ "tusk_kv_link_repaired_rows_total", "counter", "Anti-entropy: rows of the peer that changed the local copy." },
	};
	int n = kv_replicate_nlinks(r);
	struct kv_link_stats *st = n > 0 ? calloc((size_t)n, sizeof *st) : NULL;

	if (!st)
		return;
	for (int i = 0; i < n; i++)
		if (kv_replicate_link_stats(r, i, &st[i]) < 0)
			st[i].local_id = -1;
	for (size_t k = 0; k < sizeof fams / sizeof fams[0]; k++) {
		put_family(f, fams[k].name, fams[k].type, fams[k].help);
		for (int i = 0; i < n; i++) {
			if (st[i].local_id < 0)
				continue;
			fprintf(f, "%s{shard=\"%d\",local=\"%d\",peer=\"%d\"} ", fams[k].name, st[i].shard, st[i].local_id,
				st[i].peer_id);
			switch (k) {
			case 0: fprintf(f, "%d\n", st[i].connected ? 1 : 0); break;
			case 1: fprintf(f, "%.3f\n", st[i].lag_seconds); break;
			case 2: fprintf(f, "%lld\n", (long long)st[i].lag_rows); break;
			case 3: fprintf(f, "%llu\n", (unsigned long long)st[i].applied); break;
			case 4: fprintf(f, "%llu\n", (unsigned long long)st[i].skipped); break;
			case 5: fprintf(f, "%llu\n", (unsigned long long)st[i].quarantined); break;
			case 6: fprintf(f, "%d\n", st[i].last_error[0] ? 1 : 0); break;
			case 7: fprintf(f, "%llu\n", (unsigned long long)st[i].digest_mismatches); break;
			default: fprintf(f, "%llu\n", (unsigned long long)st[i].repaired); break;
			}
		}
	}
	free(st);
}

/* LISTEN/NOTIFY (src/notify/): one series per listener connection (SHOW LISTENERS), and the
 * clients closed for not reading their notifications. */
struct listener_list {
	struct notify_listener_row *v;
	size_t n, cap;
};

static void collect_listener(const struct notify_listener_row *row, void *arg)
{
	struct listener_list *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		struct notify_listener_row *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return; /* that listener is left out */
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = *row;
}

static void put_listeners(FILE *f, struct runtime *rt)
{
	static const struct {
		const char *name, *type, *help;
	} fams[] = {
		{ "tusk_notify_listener_connected", "gauge", "1 while the pool's LISTEN connection is up." },
		{ "tusk_notify_listener_channels", "gauge", "Channels some client of the pool listens to." },
		{ "tusk_notify_listener_clients", "gauge", "Clients of the pool listening to at least one channel." },
		{ "tusk_notify_notifications_total", "counter", "Notifications the pool's LISTEN connection received." },
		{ "tusk_notify_listener_reconnects_total", "counter", "LISTEN connections lost (or RECONNECTed) and made again." },
	};
	struct listener_list l = { 0 };

	notify_foreach(rt, collect_listener, &l);
	for (size_t k = 0; k < sizeof fams / sizeof fams[0]; k++) {
		put_family(f, fams[k].name, fams[k].type, fams[k].help);
		for (size_t i = 0; i < l.n; i++) {
			const struct notify_listener_row *r = &l.v[i];
			fprintf(f, "%s{", fams[k].name);
			put_label(f, "database", r->database);
			fputc(',', f);
			put_label(f, "user", r->user);
			switch (k) {
			case 0: fprintf(f, "} %d\n", r->connected ? 1 : 0); break;
			case 1: fprintf(f, "} %d\n", r->channels); break;
			case 2: fprintf(f, "} %d\n", r->clients); break;
			case 3: fprintf(f, "} %" PRIu64 "\n", r->relayed); break;
			default: fprintf(f, "} %" PRIu64 "\n", r->reconnects); break;
			}
		}
	}
	free(l.v);
	put_family(f, "tusk_notify_clients_closed_unread_total", "counter",
		   "Listening clients closed (53400) because they did not read their notifications.");
	fprintf(f, "tusk_notify_clients_closed_unread_total %" PRIu64 "\n", notify_closed_unread(rt));
}

/* The result cache (src/flight/cache.h): tusk_cache_<name>_total counters, tusk_cache_entries
 * and tusk_cache_bytes gauges, tusk_cache_bypasses_total{reason}. */
static void cache_metric(void *arg, const char *name, const char *reason, uint64_t value, bool gauge)
{
	FILE *f = arg;

	if (reason) {
		if (strcmp(reason, flight_verdict_name((enum flight_verdict)1)) == 0)
			put_family(f, "tusk_cache_bypasses_total", "counter",
				   "Requests the result cache did not take, per reason (docs/cache.md).");
		fprintf(f, "tusk_cache_bypasses_total{reason=\"%s\"} %" PRIu64 "\n", reason, value);
		return;
	}
	char family[96];
	snprintf(family, sizeof family, gauge ? "tusk_cache_%s" : "tusk_cache_%s_total", name);
	put_family(f, family, gauge ? "gauge" : "counter", "Result cache counter (SHOW CACHE, docs/cache.md).");
	fprintf(f, "%s %" PRIu64 "\n", family, value);
}

static void put_cache(FILE *f, struct runtime *rt)
{
	if (rt->flight)
		flight_cache_report(rt->flight, cache_metric, f);
}

static int render_metrics(struct runtime *rt, char **out, size_t *len)
{
	struct pool_list pools = { 0 };
	struct stats_global *g = malloc(sizeof *g); /* ~10 kB: not on the MHD thread's stack */
	FILE *f = NULL;
	int rc = -ENOMEM;

	if (!g)
		goto err;
	stats_read_global(rt->stats, g);
	pool_foreach_snapshot(rt, collect_pool, &pools);
	if (pools.oom)
		goto err;
	f = open_memstream(out, len);
	if (!f)
		goto err;

	put_family(f, "tusk_up", "gauge", "1 while tusk serves (it is listening for clients).");
	fputs("tusk_up 1\n", f);
	put_family(f, "tusk_build_info", "gauge", "Build of the running tusk, as labels; always 1.");
	fputs("tusk_build_info{version=\"" TUSK_VERSION "\"} 1\n", f);
	struct heap_usage h;
	if (heap_usage(&h)) {
		put_family(f, "tusk_heap_bytes", "gauge",
			   "The allocator's own counters: bytes handed out and not freed (used), held unused (free), "
			   "got from the system (total).");
		fprintf(f, "tusk_heap_bytes{kind=\"used\"} %zu\ntusk_heap_bytes{kind=\"free\"} %zu\n"
			   "tusk_heap_bytes{kind=\"total\"} %zu\n", h.used, h.free, h.total);
	}

	put_family(f, "tusk_clients", "gauge", "Client connections per state, across all pools and workers.");
	for (int s = 0; s < STATS_CLIENT_NSTATES; s++)
		fprintf(f, "tusk_clients{state=\"%s\"} %d\n", stats_client_state_name((enum stats_client_state)s),
			g->clients[s]);

	put_family(f, "tusk_tls_offloaded_handshakes_total", "counter",
		   "Client TLS handshakes the handshake threads (tls_handshake_threads) finished, successful or not.");
	fprintf(f, "tusk_tls_offloaded_handshakes_total %lu\n", rt->tls_hs ? tls_hs_done_count(rt->tls_hs) : 0UL);
	put_family(f, "tusk_tls_offloaded_handshakes_running", "gauge",
		   "Client TLS handshakes handed to the handshake threads and not finished yet.");
	fprintf(f, "tusk_tls_offloaded_handshakes_running %u\n", rt->tls_hs ? tls_hs_pending(rt->tls_hs) : 0U);
	put_family(f, "tusk_tls_worker_handshakes_total", "counter",
		   "Client TLS handshakes the workers finished though there are handshake threads: resumed "
		   "(a session ticket opened), or full when the hand-over to a thread failed.");
	for (int resumed = 1; resumed >= 0; resumed--)
		fprintf(f, "tusk_tls_worker_handshakes_total{session=\"%s\"} %lu\n", resumed ? "resumed" : "full",
			rt->tls_hs ? tls_hs_kept_count(rt->tls_hs, resumed) : 0UL);

	put_family(f, "tusk_pool_clients", "gauge", "Client connections of a pool per state.");
	for (size_t i = 0; i < pools.n; i++)
		for (int s = STATS_CLIENT_WAITING; s < STATS_CLIENT_NSTATES; s++) {
			fputs("tusk_pool_clients{", f);
			put_pool_labels(f, &pools.v[i]);
			fprintf(f, ",state=\"%s\"} %d\n", stats_client_state_name((enum stats_client_state)s),
				pools.v[i].clients[s]);
		}

	put_family(f, "tusk_servers", "gauge",
		   "Server connections of a pool: active (linked to a client or running tusk's own queries), "
		   "idle (parked), connecting (TCP connect or login).");
	for (size_t i = 0; i < pools.n; i++) {
		static const char *const names[] = { "active", "idle", "connecting" };
		const int vals[] = { pools.v[i].sv_active, pools.v[i].sv_idle, pools.v[i].sv_connecting };
		for (int k = 0; k < 3; k++) {
			fputs("tusk_servers{", f);
			put_pool_labels(f, &pools.v[i]);
			fprintf(f, ",state=\"%s\"} %d\n", names[k], vals[k]);
		}
	}
	put_pool_gauge(f, &pools, "tusk_pool_waiting_clients", "Clients queued for a server of the pool.",
		       offsetof(struct stats_pool_snapshot, waiters));
	put_pool_gauge(f, &pools, "tusk_pool_size", "Configured maximum of server connections of the pool.",
		       offsetof(struct stats_pool_snapshot, size));
	put_pool_gauge(f, &pools, "tusk_pool_active_limit",
		       "Servers of the pool in use at once at most: the adaptive bound (active_limit), else size.",
		       offsetof(struct stats_pool_snapshot, active_limit));
	put_family(f, "tusk_pool_backend_down", "gauge",
		   "1 while the pool backs off connecting (the backend failed twice or more in a row).");
	for (size_t i = 0; i < pools.n; i++) {
		fputs("tusk_pool_backend_down{", f);
		put_pool_labels(f, &pools.v[i]);
		fprintf(f, "} %d\n", pools.v[i].down ? 1 : 0);
	}

	put_pool_counter(f, &pools, "tusk_transactions_total",
			 "Transactions ended (ReadyForQuery with status idle) in the pool.",
			 offsetof(struct stats_counters, xact_count), 1.0);
	put_pool_counter(f, &pools, "tusk_queries_total",
			 "Queries answered (a Query message or a Sync-terminated extended-protocol batch).",
			 offsetof(struct stats_counters, query_count), 1.0);
	put_pool_counter(f, &pools, "tusk_received_bytes_total", "Bytes the relay wrote to servers for clients of the pool.",
			 offsetof(struct stats_counters, bytes_received), 1.0);
	put_pool_counter(f, &pools, "tusk_sent_bytes_total", "Bytes written to clients of the pool.",
			 offsetof(struct stats_counters, bytes_sent), 1.0);
	put_pool_counter(f, &pools, "tusk_transaction_seconds_total",
			 "Time spent in transactions, from the first request to the idle ReadyForQuery.",
			 offsetof(struct stats_counters, xact_us), 1e-6);
	put_pool_histogram(f, &pools, "tusk_wait_seconds", "Time clients waited for a server.", true);
	put_pool_histogram(f, &pools, "tusk_query_seconds",
			   "Time from sending a query to its ReadyForQuery (pipelined ones from the previous answer).",
			   false);

	put_family(f, "tusk_errors_total", "counter",
		   "ErrorResponses sent to clients (from servers or from tusk) per SQLSTATE class.");
	for (int i = 0; i < STATS_NCLASSES; i++) {
		char cls[6];
		if (!g->errors[i])
			continue;
		stats_class_name(i, cls);
		fprintf(f, "tusk_errors_total{class=\"%s\"} %" PRIu64 "\n", cls, g->errors[i]);
	}

	put_kv_links(f, rt->kv_replicator);
	put_cache(f, rt);
	put_listeners(f, rt);

	if (ferror(f))
		goto err;
	if (fclose(f) != 0) {
		f = NULL;
		goto err;
	}
	f = NULL;
	rc = 0;
	goto out;
err:
	if (f) {
		fclose(f);
		free(*out);
	}
	*out = NULL;
out:
	free(pools.v);
	free(g);
	return rc;
}

/* ---- /health ---- */

/* Some backend of some service accepts a TCP connection within HEALTH_PROBE_MS: 0. Else a
 * negative errno, with why it failed in why. All services are probed at once. */
static int probe_backends(struct runtime *rt, char *why, size_t cap)
{
	const struct tusk_config *cfg = rt->cfg; /* one generation throughout */
	int n = cfg->nservices;
	struct pollfd *fds = calloc((size_t)n, sizeof *fds);
	struct net_addr *addrs = calloc((size_t)n + 1, sizeof *addrs);
	int rc = -EHOSTUNREACH, pending = 0;
	char addr[NET_ADDR_STR_MAX];

	if (!fds || !addrs) {
		free(fds);
		free(addrs);
		snprintf(why, cap, "out of memory");
		return -ENOMEM;
	}
	snprintf(why, cap, "no service configured");
	for (int i = 0; i < n; i++) {
		fds[i].events = POLLOUT;
		if (services_addr(rt->services, &cfg->services[i], &addrs[i]) < 0) {
			snprintf(why, cap, "service %s: no backend known yet", cfg->services[i].name);
			fds[i].fd = -1;
			continue;
		}
		fds[i].fd = net_connect(&addrs[i]);
		if (fds[i].fd < 0) {
			net_addr_str(&addrs[i], addr, sizeof addr);
			snprintf(why, cap, "service %s (%s): %s", cfg->services[i].name, addr, strerror(-fds[i].fd));
			fds[i].fd = -1; /* poll ignores it */
			continue;
		}
		pending++;
	}
	int budget = HEALTH_PROBE_MS;
	while (pending > 0 && rc != 0 && budget > 0) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int r = poll(fds, (nfds_t)n, budget);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		budget -= (int)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		for (int i = 0; i < n; i++) {
			if (fds[i].fd < 0 || !fds[i].revents)
				continue;
			int err = net_connect_result(fds[i].fd);
			if (err == 0) {
				rc = 0;
				break;
			}
			net_addr_str(&addrs[i], addr, sizeof addr);
			snprintf(why, cap, "service %s (%s): %s", cfg->services[i].name, addr, strerror(-err));
			close(fds[i].fd);
			fds[i].fd = -1;
			pending--;
		}
	}
	if (rc != 0 && pending > 0)
		snprintf(why, cap, "no backend accepted a connection within %d ms", HEALTH_PROBE_MS);
	for (int i = 0; i < n; i++)
		if (fds[i].fd >= 0)
			close(fds[i].fd);
	free(fds);
	free(addrs);
	return rc;
}

/* ---- HTTP ---- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type, char *body,
			     size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	if (!r) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO;
	}
	(void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	(void)MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *fmt, ...)
{
	char *body = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&body, fmt, ap);
	va_end(ap);
	if (n < 0)
		return MHD_NO;
	return reply(conn, status, "text/plain; charset=utf-8", body, (size_t)n, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct metrics_http *m = cls;
	(void)version;
	(void)upload_data;

	/* MHD calls once for the headers, once per piece of body, and once at the end; only that
	 * last call may answer. *con_cls tells the calls of one request apart: REQ_HEADERS after
	 * the first, REQ_BODY once a body (which nothing here wants) was seen and dropped. */
	enum { REQ_NEW, REQ_HEADERS, REQ_BODY };
	if ((uintptr_t)*con_cls == REQ_NEW) {
		*con_cls = (void *)(uintptr_t)REQ_HEADERS;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		*upload_data_size = 0;
		*con_cls = (void *)(uintptr_t)REQ_BODY;
		return MHD_YES;
	}
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
	if ((uintptr_t)*con_cls == REQ_BODY)
		return reply_text(conn, MHD_HTTP_BAD_REQUEST, "no request body expected\n");

	if (strcmp(url, "/metrics") == 0) {
		char *body = NULL;
		size_t len = 0;
		if (render_metrics(m->rt, &body, &len) < 0)
			return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
		return reply(conn, MHD_HTTP_OK, METRICS_CONTENT_TYPE, body, len, MHD_RESPMEM_MUST_FREE);
	}
	if (strcmp(url, "/health") == 0) {
		char why[256];
		if (probe_backends(m->rt, why, sizeof why) == 0)
			return reply_text(conn, MHD_HTTP_OK, "ok\n");
		return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "backend unreachable: %s\n", why);
	}
	return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found; try /metrics or /health\n");
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[256];
	(void)cls;
	vsnprintf(line, sizeof line, fmt, ap);
	line[strcspn(line, "\n")] = 0;
	log_warn(NULL, NULL, "http: %s", line);
}

int metrics_start(struct runtime *rt, struct metrics_http **out)
{
	const struct net_addr *addr = &rt->http_addr; /* resolved by daemon_start */
	char where[NET_ADDR_STR_MAX];

	*out = NULL;
	if (!rt->cfg->admin.http)
		return 0;
	struct metrics_http *m = calloc(1, sizeof *m);
	if (!m)
		return -ENOMEM;
	m->rt = rt;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
	if (addr->sa.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* The logger goes first so that MHD's own messages about the options reach tusk's log. */
	m->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				     /* SO_REUSEPORT: a new tusk of an online restart binds beside the old one */
				     MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
				     MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&addr->sa, MHD_OPTION_CONNECTION_LIMIT,
				     (unsigned)METRICS_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
				     (unsigned)METRICS_CONNECTION_TIMEOUT, MHD_OPTION_END);
	net_addr_str(addr, where, sizeof where);
	if (!m->daemon) {
		/* MHD does not say why; the usual cause is a port in use. */
		log_error(NULL, NULL, "admin.http: cannot serve HTTP on %s (address in use?)", where);
		free(m);
		return -EADDRINUSE;
	}
	log_info(NULL, NULL, "serving /metrics and /health on http://%s", where);
	*out = m;
	return 0;
}

void metrics_stop(struct metrics_http *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->daemon);
	free(m);
}
