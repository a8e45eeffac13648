/* The admin console's commands (see docs/operations.md, "Admin console"): parsing, the column lists, and what
 * each does. Connections belong to their workers, so SHOW CLIENTS/SERVERS/POOLS/MEM/SOCKETS,
 * KILL, KILL_CLIENT and RECONNECT are broadcast: a worker message asks every worker to
 * add its part to one shared collector (its mutex guards the rows and counts); the last
 * worker posts the collector back to the console client's worker, which answers. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "console/console_int.h"
#include "flight/cache.h"
#include "frontend/client_int.h"
#include "frontend/replication.h"
#include "kv/replicate.h"
#include "notify/notify.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/services.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "util/heap.h"
#include "util/log.h"
#include "worker/worker.h"

#define PAUSE_POLL 0.05 /* seconds between checks that paused pools are quiet */

/* ---- parsing ---- */

struct keyword {
	const char *word;
	enum console_cmd_kind kind;
	int arg; /* 0 none, 1 optional, 2 required */
};

static const struct keyword show_words[] = {
	{ "POOLS", CONSOLE_CMD_SHOW_POOLS, 0 },
	{ "CLIENTS", CONSOLE_CMD_SHOW_CLIENTS, 0 },
	{ "SERVERS", CONSOLE_CMD_SHOW_SERVERS, 0 },
	{ "STATS", CONSOLE_CMD_SHOW_STATS, 0 },
	{ "DATABASES", CONSOLE_CMD_SHOW_DATABASES, 0 },
	{ "CONFIG", CONSOLE_CMD_SHOW_CONFIG, 0 },
	{ "LISTS", CONSOLE_CMD_SHOW_LISTS, 0 },
	{ "VERSION", CONSOLE_CMD_SHOW_VERSION, 0 },
	{ "KV", CONSOLE_CMD_SHOW_KV, 0 },
	{ "CACHE", CONSOLE_CMD_SHOW_CACHE, 0 },
	{ "SERVICES", CONSOLE_CMD_SHOW_SERVICES, 0 },
	{ "HELP", CONSOLE_CMD_SHOW_HELP, 0 },
	{ "STATE", CONSOLE_CMD_SHOW_STATE, 0 },
	{ "WAITS", CONSOLE_CMD_SHOW_WAITS, 0 },
	{ "STATS_TOTALS", CONSOLE_CMD_SHOW_STATS_TOTALS, 0 },
	{ "STATS_AVERAGES", CONSOLE_CMD_SHOW_STATS_AVERAGES, 0 },
	{ "TOTALS", CONSOLE_CMD_SHOW_TOTALS, 0 },
	{ "USERS", CONSOLE_CMD_SHOW_USERS, 0 },
	{ "MEM", CONSOLE_CMD_SHOW_MEM, 0 },
	{ "SOCKETS", CONSOLE_CMD_SHOW_SOCKETS, 0 },
	{ "FDS", CONSOLE_CMD_SHOW_SOCKETS, 0 },
	{ "ACTIVE_SOCKETS", CONSOLE_CMD_SHOW_ACTIVE_SOCKETS, 0 },
	{ "LISTENERS", CONSOLE_CMD_SHOW_LISTENERS, 0 },
};

static const struct keyword verbs[] = {
	{ "PAUSE", CONSOLE_CMD_PAUSE, 1 },
	{ "RESUME", CONSOLE_CMD_RESUME, 1 },
	{ "RELOAD", CONSOLE_CMD_RELOAD, 0 },
	{ "KILL", CONSOLE_CMD_KILL, 2 },
	{ "KILL_CLIENT", CONSOLE_CMD_KILL_CLIENT, 2 },
	{ "RECONNECT", CONSOLE_CMD_RECONNECT, 1 },
	{ "SHUTDOWN", CONSOLE_CMD_SHUTDOWN, 0 },
	{ "CACHE", CONSOLE_CMD_CACHE_FLUSH, 1 }, /* CACHE FLUSH [db]: FLUSH is read below */
	{ "DISABLE", CONSOLE_CMD_DISABLE, 2 },
	{ "ENABLE", CONSOLE_CMD_ENABLE, 2 },
	{ "WAIT_CLOSE", CONSOLE_CMD_WAIT_CLOSE, 1 },
};

/* The next word (letters, digits, '_', '-', '.', or a "quoted" name) at *p. */
static int next_word(const char **p, const char *end, char *out, size_t cap)
{
	const char *s = *p;
	size_t n = 0;

	while (s < end && isspace((unsigned char)*s))
		s++;
	if (s < end && *s == '"') {
		s++;
		while (s < end && *s != '"') {
			if (n + 1 >= cap)
				return -ENAMETOOLONG;
			out[n++] = *s++;
		}
		if (s == end)
			return -EINVAL;
		s++;
	} else {
		while (s < end && (isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.')) {
			if (n + 1 >= cap)
				return -ENAMETOOLONG;
			out[n++] = *s++;
		}
		if (n == 0 && s < end)
			return -EINVAL;
	}
	out[n] = '\0';
	*p = s;
	return (int)n;
}

static bool word_is(const char *w, const char *kw)
{
	return strcasecmp(w, kw) == 0;
}

/* SET key = value | SET key TO value, after "SET" at p: the value is a word or a
 * 'single-quoted' string ('' inside is a quote). 0, or -EINVAL with a message in err. */
static int parse_set(const char *p, const char *end, struct console_cmd *out, char *err, size_t errcap)
{
	char w[CONFIG_NAME_MAX];
	size_t n = 0;

	out->kind = CONSOLE_CMD_SET;
	if (next_word(&p, end, out->arg, sizeof out->arg) <= 0)
		goto usage;
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (p < end && *p == '=') {
		p++;
	} else if (next_word(&p, end, w, sizeof w) <= 0 || !word_is(w, "TO")) {
		goto usage;
	}
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (p < end && *p == '\'') {
		for (p++;; p++) {
			if (p == end)
				goto usage;
			if (*p == '\'' && (p + 1 == end || p[1] != '\''))
				break;
			if (*p == '\'')
				p++;
			if (n + 1 >= sizeof out->value || *p == '\0')
				goto usage;
			out->value[n++] = *p;
		}
		p++;
		out->value[n] = '\0';
	} else if (next_word(&p, end, out->value, sizeof out->value) <= 0) {
		goto usage;
	}
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (p == end)
		return 0;
usage:
	out->kind = CONSOLE_CMD_EMPTY;
	snprintf(err, errcap, "SET needs key = value (a value with spaces in 'quotes')");
	return -EINVAL;
}

int console_parse(const char *text, size_t len, struct console_cmd *out, char *err, size_t errcap)
{
	const char *p = text, *end = text + len;
	char w[CONFIG_NAME_MAX], extra[CONFIG_NAME_MAX];
	const struct keyword *k = NULL;

	*out = (struct console_cmd){ .kind = CONSOLE_CMD_EMPTY };
	/* One statement: trailing blanks and one ';' are fine, a second statement is not (a ';'
	 * inside a quoted name is part of the name). */
	while (end > p && isspace((unsigned char)end[-1]))
		end--;
	if (end > p && end[-1] == ';')
		end--;
	int n = next_word(&p, end, w, sizeof w);
	if (n == 0)
		return 0;
	if (n < 0)
		goto rest;
	if (word_is(w, "SET"))
		return parse_set(p, end, out, err, errcap);
	if (word_is(w, "SHOW")) {
		if (next_word(&p, end, w, sizeof w) <= 0) {
			snprintf(err, errcap, "SHOW needs an item (SHOW HELP lists them)");
			return -EINVAL;
		}
		for (size_t i = 0; i < sizeof show_words / sizeof show_words[0]; i++)
			if (word_is(w, show_words[i].word))
				k = &show_words[i];
		if (!k) {
			snprintf(err, errcap, "unknown SHOW item \"%s\" (SHOW HELP lists them)", w);
			return -EINVAL;
		}
	} else {
		for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
			if (word_is(w, verbs[i].word))
				k = &verbs[i];
		if (!k) {
			snprintf(err, errcap, "unknown command \"%s\" (SHOW HELP lists the commands)", w);
			return -EINVAL;
		}
	}
	out->kind = k->kind;
	if (k->kind == CONSOLE_CMD_CACHE_FLUSH) {
		const char *q = p;
		if (next_word(&q, end, w, sizeof w) <= 0 || !word_is(w, "FLUSH")) {
			snprintf(err, errcap, "CACHE needs FLUSH [database]");
			return -EINVAL;
		}
		p = q;
	}
	if (k->kind == CONSOLE_CMD_SHUTDOWN) {
		const char *q = p;
		n = next_word(&q, end, w, sizeof w);
		if (n > 0 && word_is(w, "WAIT_FOR_CLIENTS")) {
			out->kind = CONSOLE_CMD_SHUTDOWN_WAIT;
			p = q;
		}
	} else if (k->arg > 0) {
		const char *q = p;
		n = next_word(&q, end, out->arg, sizeof out->arg);
		if (n > 0 || (n == 0 && q == end))
			p = q;
		else if (n == -ENAMETOOLONG)
			goto bad;
		if (!out->arg[0] && k->arg == 2) {
			snprintf(err, errcap, "%s needs an argument (%s)", k->word,
				 k->kind == CONSOLE_CMD_KILL_CLIENT ? "a client id" : "a database name");
			return -EINVAL;
		}
	}
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (p == end)
		return 0;
	if (*p != ';' && next_word(&p, end, extra, sizeof extra) > 0) {
		snprintf(err, errcap, "unexpected text after %s", k->word);
		return -EINVAL;
	}
rest:
	/* Whatever stopped the parse: a second statement, or text that is no command. */
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (p < end && *p == ';') {
		snprintf(err, errcap, "the admin console runs one command per query");
		return -EINVAL;
	}
bad:
	snprintf(err, errcap, "syntax error in console command (SHOW HELP lists the commands)");
	return -EINVAL;
}

/* ---- columns ---- */

#define T(name) { name, CONSOLE_TEXT, 0 }
#define I(name) { name, CONSOLE_INT8, 0 }

static const struct vdb_col pools_cols[] = {
	T("database"), T("user"), I("cl_active"), I("cl_waiting"), I("cl_active_cancel_req"),
	I("cl_waiting_cancel_req"), I("sv_active"), I("sv_active_cancel"), I("sv_being_canceled"), I("sv_idle"),
	I("sv_used"), I("sv_tested"), I("sv_login"), I("maxwait"), I("maxwait_us"), T("pool_mode"), I("paused"),
	I("active_limit"), /* tusk's own: servers in use at once at most (active_limit; size when off) */
};
static const struct vdb_col conn_cols[] = {
	T("type"), T("user"), T("database"), T("replication"), T("state"), T("addr"), I("port"), T("local_addr"), I("local_port"),
	T("connect_time"), T("request_time"), I("wait"), I("wait_us"), I("close_needed"), T("ptr"), T("link"),
	I("remote_pid"), T("tls"), T("application_name"), I("prepared_statements"), T("id"), I("worker"),
	T("channels"),
};
static const struct vdb_col stats_cols[] = {
	T("database"), I("total_xact_count"), I("total_query_count"), I("total_received"), I("total_sent"),
	I("total_xact_time"), I("total_query_time"), I("total_wait_time"), I("avg_xact_count"), I("avg_query_count"),
	I("avg_recv"), I("avg_sent"), I("avg_xact_time"), I("avg_query_time"), I("avg_wait_time"),
};
/* SHOW STATS_TOTALS and STATS_AVERAGES: PgBouncer 1.18 names both sets of columns alike. */
static const struct vdb_col stats_part_cols[] = {
	T("database"), I("xact_count"), I("query_count"), I("bytes_received"), I("bytes_sent"), I("xact_time"),
	I("query_time"), I("wait_time"),
};
static const struct vdb_col totals_cols[] = { T("name"), I("value") };
/* PgBouncer 1.18's columns first, then 1.25's others (max_connections of users...) */
static const struct vdb_col users_cols[] = {
	T("name"), T("pool_mode"), T("pool_size"), T("reserve_pool_size"), I("max_user_connections"),
	I("current_connections"), I("max_user_client_connections"), I("current_client_connections"),
};
static const struct vdb_col databases_cols[] = {
	T("name"), T("host"), I("port"), T("database"), T("force_user"), I("pool_size"), I("min_pool_size"),
	I("reserve_pool"), T("pool_mode"), I("max_connections"), I("current_connections"), I("paused"),
	I("disabled"), T("user"), T("service"), I("max_client_connections"), I("current_client_connections"),
	I("reserve_pool_size"), I("server_lifetime"), T("load_balance_hosts"),
};
static const struct vdb_col config_cols[] = { T("key"), T("value"), T("default"), T("changeable") };
static const struct vdb_col lists_cols[] = { T("list"), I("items") };
static const struct vdb_col version_cols[] = { T("version") };
static const struct vdb_col state_cols[] = { T("key"), T("value") };
/* tusk's own (PgBouncer has no such SHOW): what `tusk top` reads for tps and wait percentiles. */
static const struct vdb_col waits_cols[] = {
	T("database"), T("user"), I("xact_count"), I("wait_count"), I("wait_p50_us"), I("wait_p99_us"),
	T("wait_buckets"),
};
static const struct vdb_col kv_cols[] = {
	I("shard"), I("local"), I("peer"), I("connected"), T("lag_seconds"), I("lag_rows"), I("applied"), I("skipped"),
	I("quarantined"), I("batches"), I("passes"), I("batch_size"), T("last_error"), I("digest_mismatches"),
	I("repaired"),
};
static const struct vdb_col cache_cols[] = { T("name"), T("reason"), I("value") };
/* tusk's own: each service's backends per pool, and its resolver (docs/backends.md). */
static const struct vdb_col services_cols[] = {
	T("service"), T("backend"), I("weight"), T("pool"), T("role"), T("state"), I("connections"), T("last_error"),
	T("resolver"), T("resolver_error"),
};

/* SHOW MEM: PgBouncer's columns (memtotal = what the rows' objects hold), and the worker
 * (NULL: process-wide). SHOW SOCKETS: a connection's socket and what is pending in its
 * buffers. */
static const struct vdb_col mem_cols[] = { T("name"), I("size"), I("used"), I("free"), I("memtotal"), I("worker") };
static const struct vdb_col sockets_cols[] = {
	T("type"), I("fd"), I("worker"), T("id"), T("state"), T("user"), T("database"), T("addr"), I("port"),
	T("local_addr"), I("local_port"), T("tls"), I("recv_pending"), I("send_pending"),
};

/* SHOW CLIENTS' channels: the LISTEN channels, comma-separated, cut short past this. */
#define CONSOLE_CHANNELS_MAX 1024

/* SHOW LISTENERS: a pool's LISTEN/NOTIFY listener connection (src/notify/). */
static const struct vdb_col listeners_cols[] = {
	T("database"), T("user"), I("channels"), I("clients"), I("notifications"), I("reconnects"), T("state"),
};

#define COLS(a) ((struct console_columns){ (int)(sizeof(a) / sizeof((a)[0])), (a) })

struct console_columns console_columns_of(enum console_cmd_kind kind)
{
	switch (kind) {
	case CONSOLE_CMD_SHOW_POOLS: return COLS(pools_cols);
	case CONSOLE_CMD_SHOW_CLIENTS:
	case CONSOLE_CMD_SHOW_SERVERS: return COLS(conn_cols);
	case CONSOLE_CMD_SHOW_STATS: return COLS(stats_cols);
	case CONSOLE_CMD_SHOW_STATS_TOTALS:
	case CONSOLE_CMD_SHOW_STATS_AVERAGES: return COLS(stats_part_cols);
	case CONSOLE_CMD_SHOW_TOTALS: return COLS(totals_cols);
	case CONSOLE_CMD_SHOW_USERS: return COLS(users_cols);
	case CONSOLE_CMD_SHOW_DATABASES: return COLS(databases_cols);
	case CONSOLE_CMD_SHOW_CONFIG: return COLS(config_cols);
	case CONSOLE_CMD_SHOW_LISTS: return COLS(lists_cols);
	case CONSOLE_CMD_SHOW_VERSION: return COLS(version_cols);
	case CONSOLE_CMD_SHOW_STATE: return COLS(state_cols);
	case CONSOLE_CMD_SHOW_WAITS: return COLS(waits_cols);
	case CONSOLE_CMD_SHOW_KV: return COLS(kv_cols);
	case CONSOLE_CMD_SHOW_CACHE: return COLS(cache_cols);
	case CONSOLE_CMD_SHOW_SERVICES: return COLS(services_cols);
	case CONSOLE_CMD_SHOW_MEM: return COLS(mem_cols);
	case CONSOLE_CMD_SHOW_SOCKETS:
	case CONSOLE_CMD_SHOW_ACTIVE_SOCKETS: return COLS(sockets_cols);
	case CONSOLE_CMD_SHOW_LISTENERS: return COLS(listeners_cols);
	default: return (struct console_columns){ 0, NULL };
	}
}

/* ---- broadcasts ---- */

/* Per pool, over the workers: what the stats gauges do not know (SHOW POOLS). */
struct pool_tally {
	double maxwait; /* seconds the longest-waiting client has waited */
};

struct console_collect {
	/* immutable after start */
	struct console_cmd cmd;
	struct runtime *rt;
	struct worker *home;       /* the console client's worker: gets the completion */
	int npools;
	struct pool **pools;       /* snapshot of the registry at start */
	atomic_int refs;           /* the operation and the client; the last one frees */

	pthread_mutex_t lock;      /* protects everything below */
	int remaining;             /* workers that have not added their part */
	struct vdb_out rows;   /* DataRows from the workers */
	long found;                /* clients/servers affected (KILL, KILL_CLIENT, RECONNECT) */
	struct pool_tally *tally;  /* per pools[] */
	uint32_t kill_seq;         /* KILL, KILL_CLIENT: its number (console_kills); immutable */
	/* Read and written only on home's thread; NULL once the client has closed. */
	struct console_session *cs;
};

static void collect_unref(struct console_collect *col)
{
	if (atomic_fetch_sub_explicit(&col->refs, 1, memory_order_acq_rel) != 1)
		return;
	pthread_mutex_destroy(&col->lock);
	vdb_out_free(&col->rows);
	free(col->pools);
	free(col->tally);
	free(col);
}

static void format_time(double t, char *out, size_t cap)
{
	time_t secs = (time_t)t;
	struct tm tm;
	if (t <= 0 || !gmtime_r(&secs, &tm)) {
		snprintf(out, cap, "%s", "");
		return;
	}
	strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void addr_parts(const struct net_addr *a, char *host, size_t hcap, char *port, size_t pcap)
{
	char s[NET_ADDR_STR_MAX];
	net_addr_str(a, s, sizeof s);
	/* net_addr_str gives "host:port", "[v6]:port" or a socket path. */
	char *colon = strrchr(s, ':');
	if (a->sa.ss_family == AF_UNIX || !colon) {
		snprintf(host, hcap, "unix");
		snprintf(port, pcap, "0");
		return;
	}
	*colon = '\0';
	char *h = s;
	if (*h == '[') {
		h++;
		size_t n = strlen(h);
		if (n && h[n - 1] == ']')
			h[n - 1] = '\0';
	}
	snprintf(host, hcap, "%s", h);
	snprintf(port, pcap, "%s", colon + 1);
}

static void local_parts(int fd, char *host, size_t hcap, char *port, size_t pcap)
{
	struct net_addr a = { .len = sizeof a.sa };
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&a.sa, &a.len) < 0) {
		snprintf(host, hcap, "%s", "");
		snprintf(port, pcap, "0");
		return;
	}
	addr_parts(&a, host, hcap, port, pcap);
}

static const char *client_state_name(const struct client *c)
{
	switch (c->state) {
	case CLIENT_STARTUP:
	case CLIENT_AUTH: return "login";
	case CLIENT_WAITING: return "waiting";
	case CLIENT_ACTIVE:
	case CLIENT_IDLE: return "active";
	case CLIENT_CLOSING: return "closing";
	}
	return "?";
}

static const char *server_state_name(const struct server *s)
{
	switch (s->state) {
	case SERVER_CONNECTING:
	case SERVER_LOGIN: return "login";
	case SERVER_QUERY:
	case SERVER_ACTIVE:
	case SERVER_DRAINING: return "active";
	case SERVER_IDLE: return "idle";
	case SERVER_CLOSED: return "closed";
	}
	return "?";
}

static void client_row(struct vdb_out *o, const struct client *c, double now)
{
	char addr[NET_ADDR_STR_MAX], port[16], laddr[NET_ADDR_STR_MAX], lport[16], ct[40], rt[40];
	char wait[24], wait_us[24], nprep[16], wk[16], chans[CONSOLE_CHANNELS_MAX];
	double waited = c->state == CLIENT_WAITING && c->wait_start > 0 ? now - c->wait_start : 0;

	struct net_addr peer;
	client_peer(c, &peer);
	addr_parts(&peer, addr, sizeof addr, port, sizeof port);
	local_parts(c->fd, laddr, sizeof laddr, lport, sizeof lport);
	format_time(c->connect_time, ct, sizeof ct);
	format_time(c->query_start > 0 ? c->query_start : c->wait_start > 0 ? c->wait_start : c->connect_time, rt,
		    sizeof rt);
	if (waited < 0)
		waited = 0;
	snprintf(wait, sizeof wait, "%ld", (long)waited);
	snprintf(wait_us, sizeof wait_us, "%ld", (long)((waited - (double)(long)waited) * 1e6));
	snprintf(nprep, sizeof nprep, "%u", c->prep ? prep_client_count(c->prep) : 0u);
	snprintf(wk, sizeof wk, "%d", c->worker->index);
	(void)notify_client_channels(c, chans, sizeof chans);
	const char *app = session_param_get(&c->session, "application_name");
	const char *vals[] = {
		"C", c->user, c->database, repl_mode_name(c), client_state_name(c), addr, port, laddr, lport, ct, rt, wait,
		wait_us, "0", c->id, c->server ? c->server->id : repl_server(c) ? repl_server(c)->id : NULL, "0", c->tls.conn ? tls_version(c->tls.conn) : "", app ? app : "",
		nprep, c->id, wk, chans,
	};
	vdb_out_row(o, (int)(sizeof vals / sizeof vals[0]), vals);
}

/* A server row: of a pool, or (repl) a replication connection's own (pool-less: its client's
 * pool names it). */
static void server_row(struct vdb_out *o, const struct server *s, const struct client *repl, double now)
{
	char addr[NET_ADDR_STR_MAX], port[16], laddr[NET_ADDR_STR_MAX], lport[16], ct[40], rt[40];
	char pid[16], nprep[16], wk[16];
	const struct client *owner = repl ? repl : s->state == SERVER_ACTIVE ? s->owner : NULL;
	const struct pool *pool = repl ? repl->pool : s->pool;
	bool stale = !repl && s->pool_gen != pool_generation(s->pool);

	(void)now;
	addr_parts(&s->addr, addr, sizeof addr, port, sizeof port);
	local_parts(s->fd, laddr, sizeof laddr, lport, sizeof lport);
	format_time(s->created, ct, sizeof ct);
	format_time(s->state == SERVER_IDLE && s->idle_since > 0 ? s->idle_since : s->created, rt, sizeof rt);
	snprintf(pid, sizeof pid, "%u", s->backend_pid);
	snprintf(nprep, sizeof nprep, "%u", s->prep ? prep_server_count(s->prep) : 0u);
	snprintf(wk, sizeof wk, "%d", s->worker ? s->worker->index : s->idle_worker);
	const char *app = server_param(s, "application_name");
	const char *vals[] = {
		"S", pool_user(pool), pool_database(pool), repl ? repl_mode_name(repl) : "none", server_state_name(s), addr, port, laddr, lport, ct, rt,
		"0", "0", stale ? "1" : "0", s->id, owner ? owner->id : NULL, pid, s->tls.conn ? tls_version(s->tls.conn) : "",
		app ? app : "", nprep, s->id, wk, NULL,
	};
	vdb_out_row(o, (int)(sizeof vals / sizeof vals[0]), vals);
}

static int pool_index(const struct console_collect *col, const struct pool *p)
{
	for (int i = 0; i < col->npools; i++)
		if (col->pools[i] == p)
			return i;
	return -1;
}

static bool db_selected(const struct console_collect *col, const char *database)
{
	return !col->cmd.arg[0] || strcmp(col->cmd.arg, database) == 0;
}

static void tally_worker(struct console_collect *col, struct worker *w, double now)
{
	for (struct client *c = client_first(w); c; c = c->next) {
		int i = c->pool && c->state == CLIENT_WAITING && c->wait_start > 0 ? pool_index(col, c->pool) : -1;
		if (i >= 0 && now - c->wait_start > col->tally[i].maxwait)
			col->tally[i].maxwait = now - c->wait_start;
	}
}

/* ---- SHOW MEM, SHOW SOCKETS: each worker's rows, on its own thread ---- */

static void mem_row(struct vdb_out *o, const char *name, size_t size, long used, long nfree, size_t total,
		    const struct worker *w)
{
	char v[5][24];
	snprintf(v[0], sizeof v[0], "%zu", size);
	snprintf(v[1], sizeof v[1], "%ld", used);
	snprintf(v[2], sizeof v[2], "%ld", nfree);
	snprintf(v[3], sizeof v[3], "%zu", total);
	if (w)
		snprintf(v[4], sizeof v[4], "%d", w->index);
	const char *vals[] = { name, v[0], v[1], v[2], v[3], w ? v[4] : NULL };
	vdb_out_row(o, (int)(sizeof vals / sizeof vals[0]), vals);
}

/* Client and server structs (malloc'd one each, no free list), the clients' buffer blocks
 * (attached, and free in the worker's lists), the servers' fixed buffers. */
static void mem_rows(struct vdb_out *o, struct worker *w)
{
	const struct frontend_worker *fe = fe_of(w);
	long nclients = 0, nrbuf = 0, nwbuf = 0, nservers = 0;
	size_t server_bufs = 0;

	for (const struct client *c = client_first(w); c; c = c->next) {
		nclients++;
		nrbuf += buf_attached(&c->rbuf);
		nwbuf += buf_attached(&c->wbuf);
	}
	for (const struct server *s = server_first(w); s; s = s->wnext) {
		nservers++;
		server_bufs += s->rbuf.cap + s->wbuf.cap;
	}
	mem_row(o, "client", sizeof(struct client), nclients, 0, (size_t)nclients * sizeof(struct client), w);
	mem_row(o, "client_rbuf", fe->rbufs.size, nrbuf, fe->rbufs.nfree, (size_t)(nrbuf + fe->rbufs.nfree) * fe->rbufs.size,
		w);
	mem_row(o, "client_wbuf", fe->wbufs.size, nwbuf, fe->wbufs.nfree, (size_t)(nwbuf + fe->wbufs.nfree) * fe->wbufs.size,
		w);
	mem_row(o, "server", sizeof(struct server), nservers, 0, (size_t)nservers * sizeof(struct server), w);
	mem_row(o, "server_buffers", nservers ? server_bufs / (size_t)nservers : 0, nservers, 0, server_bufs, w);
}

struct cache_mem {
	uint64_t entries, bytes;
};

static void cache_mem_of(void *arg, const char *name, const char *reason, uint64_t value, bool gauge)
{
	struct cache_mem *m = arg;
	(void)reason;
	(void)gauge;
	if (strcmp(name, "entries") == 0)
		m->entries = value;
	else if (strcmp(name, "bytes") == 0)
		m->bytes = value;
}

/* Process-wide: the heap (bytes malloc handed out and holds free, and what it got from the
 * system), and the result cache's kept results (its own report, SHOW CACHE's), against
 * cache_memory. */
static void mem_global_rows(struct vdb_out *o, struct runtime *rt)
{
	struct cache_mem m = { 0 };
	struct heap_usage h;
	if (heap_usage(&h)) /* the allocator's own counters: everything above included */
		mem_row(o, "heap", 1, (long)h.used, (long)h.free, h.total, NULL);
	if (!rt->flight)
		return;
	flight_cache_report(rt->flight, cache_mem_of, &m);
	uint64_t cap = rt->cfg->cache_memory;
	mem_row(o, "cache", m.entries ? (size_t)(m.bytes / m.entries) : 0, (long)m.entries, 0, (size_t)m.bytes, NULL);
	mem_row(o, "cache_memory", 1, (long)m.bytes, cap > m.bytes ? (long)(cap - m.bytes) : 0, (size_t)cap, NULL);
}

static const char *client_socket_state(const struct client *c)
{
	static const char *const names[] = { "startup", "auth", "waiting", "active", "idle", "closing" };
	return (unsigned)c->state < sizeof names / sizeof names[0] ? names[c->state] : "?";
}

static const char *server_socket_state(const struct server *s)
{
	static const char *const names[] = { "connecting", "login", "query", "active", "draining", "idle", "closed" };
	return (unsigned)s->state < sizeof names / sizeof names[0] ? names[s->state] : "?";
}

static void socket_row(struct vdb_out *o, bool active_only, const char *type, int fd, const struct worker *w,
		       const char *id, const char *state, const char *user, const char *db, const struct net_addr *peer,
		       const struct tls_link *tls, const struct buf *rbuf, const struct buf *wbuf)
{
	if (active_only && buf_empty(rbuf) && buf_empty(wbuf))
		return; /* SHOW ACTIVE_SOCKETS: PgBouncer's, a socket with bytes in its buffers */
	char sfd[16], wk[16], addr[NET_ADDR_STR_MAX], port[16], laddr[NET_ADDR_STR_MAX], lport[16], rp[24], sp[24];
	snprintf(sfd, sizeof sfd, "%d", fd);
	snprintf(wk, sizeof wk, "%d", w->index);
	addr_parts(peer, addr, sizeof addr, port, sizeof port);
	local_parts(fd, laddr, sizeof laddr, lport, sizeof lport);
	snprintf(rp, sizeof rp, "%zu", buf_len(rbuf));
	snprintf(sp, sizeof sp, "%zu", buf_len(wbuf));
	const char *vals[] = { type, sfd, wk, id, state, user, db, addr, port, laddr, lport,
			       tls->conn ? tls_version(tls->conn) : "", rp, sp };
	vdb_out_row(o, (int)(sizeof vals / sizeof vals[0]), vals);
}

static void socket_rows(struct vdb_out *o, struct worker *w, bool active_only)
{
	for (const struct client *c = client_first(w); c; c = c->next) {
		struct net_addr peer;
		client_peer(c, &peer);
		socket_row(o, active_only, "C", c->fd, w, c->id, client_socket_state(c), c->user, c->database, &peer, &c->tls,
			   &c->rbuf, &c->wbuf);
	}
	for (const struct server *s = server_first(w); s; s = s->wnext)
		if (s->fd >= 0)
			socket_row(o, active_only, "S", s->fd, w, s->id, server_socket_state(s), s->pool ? pool_user(s->pool) : "",
				   s->pool ? pool_database(s->pool) : "", &s->addr, &s->tls, &s->rbuf, &s->wbuf);
}
/* ---- end SHOW MEM, SHOW SOCKETS ---- */

/* Close w's parked servers of the selected pools (RECONNECT, KILL). */
static long close_parked(struct console_collect *col, struct worker *w, const char *reason)
{
	long n = 0;
	struct server *s = server_first(w);
	while (s) {
		struct server *next = s->wnext;
		if (s->pool && s->state == SERVER_IDLE && s->idle_worker >= 0 && db_selected(col, pool_database(s->pool))) {
			server_close(s, reason);
			n++;
		}
		s = next;
	}
	return n;
}

static void collect_done(struct worker *w, struct worker_msg *m);

/* Close c from the console with 57P01. A client queued for a server leaves the queue first;
 * when the pool's answer is already on its way, the usual teardown keeps a husk for it
 * (client_close) and the client just sees the connection end. */
static void terminate_client(struct client *c, const char *why)
{
	if (c->queued && !client_leave_queue(c)) {
		client_close(c, why);
		return;
	}
	client_fail(c, "57P01", "terminated by the admin console (%s)", why);
}

/* Close c when the KILL or KILL_CLIENT cmd names it: 1 if it did. */
static int kill_client_if(struct client *c, const struct console_cmd *cmd)
{
	if (c->state == CLIENT_CLOSING)
		return 0;
	if (cmd->kind == CONSOLE_CMD_KILL && c->kind != &console_kind && strcmp(c->database, cmd->arg) == 0) {
		char why[CONFIG_NAME_MAX + 8];
		snprintf(why, sizeof why, "KILL %s", cmd->arg);
		terminate_client(c, why);
		return 1;
	}
	if (cmd->kind == CONSOLE_CMD_KILL_CLIENT && strcmp(c->id, cmd->arg) == 0) {
		terminate_client(c, "KILL_CLIENT");
		return 1;
	}
	return 0;
}

/* The recent kills (console.h). A client is between workers for one inbox hop, so a short
 * history is plenty; one that missed more than it holds is closed (it missed a kill that may
 * have named it: closing errs on the side of the operator's command). */
#define KILLS_KEPT 64
struct console_kills {
	pthread_mutex_t lock; /* protects all; held while a kill is posted to every worker */
	uint32_t last;        /* the newest kill's number; kills count from 1 */
	struct console_cmd cmd[KILLS_KEPT]; /* kill n is cmd[n % KILLS_KEPT] */
};

struct console_kills *console_kills_new(void)
{
	struct console_kills *k = calloc(1, sizeof *k);
	if (k)
		pthread_mutex_init(&k->lock, NULL);
	return k;
}

void console_kills_free(struct console_kills *k)
{
	if (!k)
		return;
	pthread_mutex_destroy(&k->lock);
	free(k);
}

/* The console's slot on each worker: the last KILL / KILL_CLIENT run there. */
struct worker_hooks console_worker_hooks = {
	.name = "console",
	.size = sizeof(uint32_t),
};

static uint32_t *kills_seen(const struct worker *w)
{
	return worker_slot(w, console_worker_hooks.slot);
}

uint32_t console_kills_seen(const struct worker *w)
{
	return *kills_seen(w);
}

bool console_kills_catch_up(struct worker *w, struct client *c, uint32_t seen)
{
	struct console_kills *k = w->rt->kills;
	struct console_cmd missed[KILLS_KEPT];
	int n = 0;
	bool all = true;

	/* Worker inboxes run kills in their number order: w has run up to console_kills_seen,
	 * c's old worker up to seen. When w is behind, c is in w's list for the kills to come. */
	int32_t ahead = (int32_t)(*kills_seen(w) - seen);
	if (ahead <= 0)
		return false;
	uint32_t gap = (uint32_t)ahead;
	pthread_mutex_lock(&k->lock);
	if (gap > KILLS_KEPT)
		all = false;
	else
		for (uint32_t i = 1; i <= gap; i++)
			missed[n++] = k->cmd[(seen + i) % KILLS_KEPT];
	pthread_mutex_unlock(&k->lock);
	if (!all) {
		terminate_client(c, "KILL");
		return true;
	}
	for (int i = 0; i < n; i++)
		if (kill_client_if(c, &missed[i]))
			return true;
	return false;
}

/* On each worker: add this worker's part; the last one posts the result home. */
static void collect_on_worker(struct worker *w, struct worker_msg *msg)
{
	struct console_collect *col = msg->arg;
	double now = ev_now(w->loop);
	long found = 0;

	/* Actions first, outside the lock: closing connections logs and may post messages. */
	switch (col->cmd.kind) {
	case CONSOLE_CMD_KILL: {
		struct client *c = client_first(w);
		while (c) {
			struct client *next = c->next;
			found += kill_client_if(c, &col->cmd);
			c = next;
		}
		found += close_parked(col, w, "KILL from the admin console");
		*kills_seen(w) = col->kill_seq;
		break;
	}
	case CONSOLE_CMD_KILL_CLIENT:
		for (struct client *c = client_first(w); c; c = c->next) {
			if (kill_client_if(c, &col->cmd)) {
				found++;
				break;
			}
		}
		*kills_seen(w) = col->kill_seq;
		break;
	case CONSOLE_CMD_RECONNECT:
		found += close_parked(col, w, "RECONNECT from the admin console");
		break;
	default:
		break;
	}

	pthread_mutex_lock(&col->lock);
	col->found += found;
	if (col->cmd.kind == CONSOLE_CMD_SHOW_CLIENTS) {
		for (struct client *c = client_first(w); c; c = c->next)
			client_row(&col->rows, c, now);
	} else if (col->cmd.kind == CONSOLE_CMD_SHOW_SERVERS) {
		for (struct server *s = server_first(w); s; s = s->wnext) {
			/* Of the pool-less connections (auth_query, LISTEN), only a replication
			 * client's own serves a client. */
			const struct client *owner = !s->pool && s->state == SERVER_ACTIVE ? s->owner : NULL;
			if (s->pool)
				server_row(&col->rows, s, NULL, now);
			else if (owner && repl_server(owner) == s)
				server_row(&col->rows, s, owner, now);
		}
	} else if (col->cmd.kind == CONSOLE_CMD_SHOW_POOLS) {
		tally_worker(col, w, now);
	} else if (col->cmd.kind == CONSOLE_CMD_SHOW_MEM) {
		mem_rows(&col->rows, w);
	} else if (col->cmd.kind == CONSOLE_CMD_SHOW_SOCKETS || col->cmd.kind == CONSOLE_CMD_SHOW_ACTIVE_SOCKETS) {
		socket_rows(&col->rows, w, col->cmd.kind == CONSOLE_CMD_SHOW_ACTIVE_SOCKETS);
	}
	bool last = --col->remaining == 0;
	pthread_mutex_unlock(&col->lock);
	if (!last)
		return;
	/* Shutting down: the home worker may be gone already; the client is closed anyway. */
	struct worker_msg *m = w->stopping ? NULL : calloc(1, sizeof *m);
	if (!m) {
		collect_unref(col);
		return;
	}
	m->fn = collect_done;
	m->arg = col;
	worker_post(col->home, m);
}

static void long_str(char *out, size_t cap, long v)
{
	snprintf(out, cap, "%ld", v);
}

struct pool_stats_list {
	int n, cap;
	struct stats_pool_snapshot *snaps;
};

static void keep_snapshot(const struct stats_pool_snapshot *snap, void *arg)
{
	struct pool_stats_list *l = arg;
	if (l->n == l->cap) {
		int cap = l->cap ? 2 * l->cap : 16;
		struct stats_pool_snapshot *s = realloc(l->snaps, (size_t)cap * sizeof *s);
		if (!s)
			return; /* that pool is left out of the answer */
		l->snaps = s;
		l->cap = cap;
	}
	l->snaps[l->n++] = *snap;
}

/* SHOW POOLS: counts from the stats gauges, maxwait from the workers' waiting clients. */
static void pools_rows(struct console_session *cs, struct console_collect *col)
{
	struct pool_stats_list l = { 0 };

	pool_foreach_snapshot(col->rt, keep_snapshot, &l);
	for (int k = 0; k < l.n; k++) {
		const struct stats_pool_snapshot *sn = &l.snaps[k];
		double maxwait = 0;
		bool paused = false;
		/* database/user point into the pool itself: equal pointers, same pool. */
		for (int i = 0; i < col->npools; i++) {
			struct pool *p = col->pools[i];
			if (pool_database(p) == sn->database && pool_user(p) == sn->user) {
				struct pool_gauges g;
				pool_snapshot(p, &g);
				paused = g.paused;
				maxwait = col->tally[i].maxwait;
			}
		}
		char v[8][24];
		long_str(v[0], sizeof v[0], (long)sn->clients[STATS_CLIENT_ACTIVE] + sn->clients[STATS_CLIENT_IDLE]);
		long_str(v[1], sizeof v[1], sn->clients[STATS_CLIENT_WAITING]);
		long_str(v[2], sizeof v[2], sn->sv_active);
		long_str(v[3], sizeof v[3], sn->sv_idle);
		long_str(v[4], sizeof v[4], sn->sv_connecting);
		long_str(v[5], sizeof v[5], (long)maxwait);
		long_str(v[6], sizeof v[6], (long)((maxwait - (double)(long)maxwait) * 1e6));
		long_str(v[7], sizeof v[7], sn->active_limit);
		const char *vals[] = {
			sn->database, sn->user, v[0], v[1], "0", "0", v[2], "0", "0", v[3], "0", "0", v[4], v[5], v[6],
			sn->mode, paused ? "1" : "0", v[7],
		};
		vdb_out_row(&cs->v.out, (int)(sizeof vals / sizeof vals[0]), vals);
	}
	free(l.snaps);
	vdb_complete(&cs->v, "SHOW");
}

static void show_lists(struct console_session *cs)
{
	struct runtime *rt = cs->v.client->worker->rt;
	struct stats_global g;
	struct stats_pool_snapshot tot;
	long users = 0, npools = 0;

	stats_read_global(rt->stats, &g);
	pool_totals(rt, &tot);
	for (struct pool *p = pool_first(rt); p; p = pool_next(p)) {
		bool seen = false;
		for (struct pool *q = pool_first(rt); q != p && !seen; q = pool_next(q))
			seen = strcmp(pool_user(q), pool_user(p)) == 0;
		users += !seen;
		npools++;
	}
	long login = g.clients[STATS_CLIENT_STARTUP] + g.clients[STATS_CLIENT_AUTH];
	long used = 0;
	for (int i = 0; i < STATS_CLIENT_NSTATES; i++)
		used += g.clients[i];
	struct {
		const char *name;
		long v;
	} items[] = {
		{ "databases", rt->cfg->npools }, { "users", users }, { "pools", npools },
		{ "free_clients", 0 }, { "used_clients", used - login }, { "login_clients", login },
		{ "free_servers", 0 }, { "used_servers", (long)tot.sv_active + tot.sv_idle + tot.sv_connecting },
		{ "dns_names", 0 }, { "dns_zones", 0 }, { "dns_queries", 0 }, { "dns_pending", 0 },
	};
	for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
		char v[24];
		long_str(v, sizeof v, items[i].v);
		const char *vals[] = { items[i].name, v };
		vdb_out_row(&cs->v.out, 2, vals);
	}
	vdb_complete(&cs->v, "SHOW");
}

static void cache_row(void *arg, const char *name, const char *reason, uint64_t value, bool gauge)
{
	struct console_session *cs = arg;
	char v[24];

	(void)gauge;
	snprintf(v, sizeof v, "%llu", (unsigned long long)value);
	const char *vals[] = { name, reason ? reason : "", v };
	vdb_out_row(&cs->v.out, 3, vals);
}

/* SHOW CACHE: the result cache's counters (src/flight/cache.h, docs/cache.md). */
static void show_cache(struct console_session *cs)
{
	flight_cache_report(cs->v.client->worker->rt->flight, cache_row, cs);
	vdb_complete(&cs->v, "SHOW");
}

/* The resolver column of SHOW SERVICES: its kind, whether its last round failed, rounds. */
static void resolver_text(const struct resolve_state *st, char *out, size_t cap)
{
	if (!st->kind) {
		snprintf(out, cap, "stopped");
		return;
	}
	if (st->consecutive_failures > 0)
		snprintf(out, cap, "%s: failing (%d in a row), keeping %d backends, %llu rounds", st->kind,
			 st->consecutive_failures, st->nbackends, (unsigned long long)st->rounds);
	else if (st->last_answer == 0)
		snprintf(out, cap, "%s: no answer yet", st->kind);
	else
		snprintf(out, cap, "%s: ok, ttl %ums, %llu rounds, %llu failed, %llu updates", st->kind, st->ttl_ms,
			 (unsigned long long)st->rounds, (unsigned long long)st->failures,
			 (unsigned long long)st->updates);
}

#define SERVICES_VIEW_MAX 256 /* backends listed per service without a pool */

/* SHOW SERVICES: per service, each pool's view of each backend (state, servers, last error),
 * or the resolver's set when no pool uses the service yet. */
static void show_services(struct console_session *cs)
{
	struct runtime *rt = cs->v.client->worker->rt;
	struct resolve_state st;
	struct tp_backend_addr *addrs = calloc(SERVICES_VIEW_MAX, sizeof *addrs);
	uint32_t *weights = calloc(SERVICES_VIEW_MAX, sizeof *weights);
	char name[CONFIG_NAME_MAX], resolver[160];
	int n;

	for (int i = 0; addrs && weights &&
			services_view(rt->services, i, name, sizeof name, &st, addrs, weights, SERVICES_VIEW_MAX, &n);
	     i++) {
		resolver_text(&st, resolver, sizeof resolver);
		bool any_pool = false;
		for (struct pool *p = pool_first(rt); p; p = pool_next(p)) {
			if (pool_retired(p) || strcmp(pool_rule(p)->service->name, name) != 0)
				continue;
			any_pool = true;
			char pname[2 * CONFIG_NAME_MAX + 2];
			snprintf(pname, sizeof pname, "%s/%s", pool_database(p), pool_user(p));
			struct tp_backend_addr a;
			enum tp_backend_state state;
			int slots;
			char err[160];
			for (int b = 0; pool_backend(p, b, &a, &state, &slots, err, sizeof err); b++) {
				char be[TP_NAME_MAX + 8], w[16] = "0", conns[16];
				snprintf(be, sizeof be, "%s:%u", a.name, a.port);
				for (int k = 0; k < n; k++)
					if (addrs[k].port == a.port && strcmp(addrs[k].name, a.name) == 0)
						snprintf(w, sizeof w, "%u", weights[k]);
				snprintf(conns, sizeof conns, "%d", slots);
				/* backoff and dead both mean "not connected to now"; dead = breaker open. */
				const char *stname = state == TP_BACKEND_UP ? "up" : state == TP_BACKEND_DRAINING ? "draining"
						     : state == TP_BACKEND_DEAD ? "dead" : "down";
				const char *role = services_role_name(services_role_of(rt->services, pool_rule(p)->service, &a));
				const char *vals[] = { name, be, w, pname, role, stname, conns, err, resolver, st.error };
				vdb_out_row(&cs->v.out, (int)(sizeof vals / sizeof vals[0]), vals);
			}
		}
		for (int k = 0; !any_pool && k < n; k++) {
			char be[TP_NAME_MAX + 8], w[16];
			snprintf(be, sizeof be, "%s:%u", addrs[k].name, addrs[k].port);
			snprintf(w, sizeof w, "%u", weights[k]);
			const char *vals[] = { name, be, w, "", "unknown", "", "0", "", resolver, st.error };
			vdb_out_row(&cs->v.out, (int)(sizeof vals / sizeof vals[0]), vals);
		}
		if (n == 0) {
			const char *vals[] = { name, "", "0", "", "", "", "0", "", resolver, st.error };
			vdb_out_row(&cs->v.out, (int)(sizeof vals / sizeof vals[0]), vals);
		}
	}
	free(addrs);
	free(weights);
	vdb_complete(&cs->v, "SHOW");
}

static void listener_row(const struct notify_listener_row *r, void *arg)
{
	struct console_session *cs = arg;
	char channels[16], clients[16], relayed[24], reconnects[24];
	snprintf(channels, sizeof channels, "%d", r->channels);
	snprintf(clients, sizeof clients, "%d", r->clients);
	snprintf(relayed, sizeof relayed, "%" PRIu64, r->relayed);
	snprintf(reconnects, sizeof reconnects, "%" PRIu64, r->reconnects);
	const char *vals[] = { r->database, r->user, channels, clients, relayed, reconnects,
			       r->connected ? "connected" : "connecting" };
	vdb_out_row(&cs->v.out, (int)(sizeof vals / sizeof vals[0]), vals);
}

static void show_listeners(struct console_session *cs)
{
	notify_foreach(cs->v.client->worker->rt, listener_row, cs);
	vdb_complete(&cs->v, "SHOW");
}

/* CACHE FLUSH [db]: the kept results of db (or all) go; in-flight reads are not kept. */
static void cache_flush(struct console_session *cs, const char *db)
{
	int n = flight_cache_flush(cs->v.client->worker->rt->flight, *db ? db : NULL);
	log_info(cs->v.client->id, cs->v.client->ctx, "CACHE FLUSH %s: %d entries", *db ? db : "(all)", n);
	vdb_complete(&cs->v, "CACHE");
}

/* On the home worker: answer. */
static void collect_done(struct worker *w, struct worker_msg *m)
{
	struct console_collect *col = m->arg;
	struct console_session *cs = col->cs;

	if (!cs || w->stopping) {
		/* The client closed (console_cancel dropped its reference) or we are stopping. */
		collect_unref(col);
		return;
	}
	cs->collect = NULL;
	col->cs = NULL;
	/* Every worker is done with col (the last one's post is ordered by the inbox lock):
	 * no lock needed from here. */
	switch (col->cmd.kind) {
	case CONSOLE_CMD_SHOW_CLIENTS:
	case CONSOLE_CMD_SHOW_SERVERS:
	case CONSOLE_CMD_SHOW_MEM:
	case CONSOLE_CMD_SHOW_SOCKETS:
	case CONSOLE_CMD_SHOW_ACTIVE_SOCKETS:
		if (col->cmd.kind == CONSOLE_CMD_SHOW_MEM)
			mem_global_rows(&col->rows, col->rt);
		if (col->rows.len > col->rows.start)
			vdb_out_raw(&cs->v.out, col->rows.data + col->rows.start, col->rows.len - col->rows.start);
		if (col->rows.failed)
			cs->v.out.failed = true;
		vdb_complete(&cs->v, "SHOW");
		break;
	case CONSOLE_CMD_SHOW_POOLS:
		pools_rows(cs, col);
		break;
	case CONSOLE_CMD_KILL:
		log_info(cs->v.client->id, cs->v.client->ctx, "KILL %s: %ld connections closed", col->cmd.arg, col->found);
		vdb_complete(&cs->v, "KILL");
		break;
	case CONSOLE_CMD_KILL_CLIENT:
		if (col->found == 0)
			vdb_error(&cs->v, "42704", "no client with id \"%s\"", col->cmd.arg);
		else
			vdb_complete(&cs->v, "KILL_CLIENT");
		break;
	case CONSOLE_CMD_RECONNECT:
		notify_reconnect(col->rt, col->cmd.arg);
		vdb_complete(&cs->v, "RECONNECT");
		break;
	default:
		break;
	}
	collect_unref(col); /* the client's reference */
	collect_unref(col); /* the operation's */
	console_command_done(cs);
}

/* Start a broadcast for cmd. 1 (async), or 0 with an error already in cs->v.out. */
static int broadcast(struct console_session *cs, const struct console_cmd *cmd)
{
	struct client *c = cs->v.client;
	struct runtime *rt = c->worker->rt;
	struct console_collect *col = calloc(1, sizeof *col);
	int n = 0;

	if (!col)
		goto oom;
	col->cmd = *cmd;
	col->rt = rt;
	col->home = c->worker;
	col->cs = cs;
	for (struct pool *p = pool_first(rt); p; p = pool_next(p))
		n++;
	col->pools = calloc((size_t)(n ? n : 1), sizeof *col->pools);
	col->tally = calloc((size_t)(n ? n : 1), sizeof *col->tally);
	if (!col->pools || !col->tally) {
		free(col->pools);
		free(col->tally);
		free(col);
		goto oom;
	}
	/* Pools created after the count are left out of this answer. */
	for (struct pool *p = pool_first(rt); p && col->npools < n; p = pool_next(p))
		col->pools[col->npools++] = p;
	pthread_mutex_init(&col->lock, NULL);
	atomic_init(&col->refs, 2);
	col->remaining = rt->nworkers;
	cs->collect = col;
	bool kill = cmd->kind == CONSOLE_CMD_KILL || cmd->kind == CONSOLE_CMD_KILL_CLIENT;
	if (kill) {
		/* Numbered and posted under the lock: every inbox gets the kills in number order. */
		pthread_mutex_lock(&rt->kills->lock);
		col->kill_seq = ++rt->kills->last;
		rt->kills->cmd[col->kill_seq % KILLS_KEPT] = *cmd;
	}
	for (int i = 0; i < rt->nworkers; i++) {
		struct worker_msg *m = calloc(1, sizeof *m);
		if (!m) {
			/* This worker's part is missing from the answer; the rest still come. */
			log_warn(c->id, c->ctx, "console: out of memory asking worker %d", i);
			pthread_mutex_lock(&col->lock);
			bool last = --col->remaining == 0;
			pthread_mutex_unlock(&col->lock);
			if (last) {
				/* Nobody else will post home: answer on the next loop turn. */
				struct worker_msg *done = calloc(1, sizeof *done);
				if (done) {
					done->fn = collect_done;
					done->arg = col;
					worker_post(col->home, done);
				}
			}
			continue;
		}
		m->fn = collect_on_worker;
		m->arg = col;
		worker_post(rt->workers[i], m);
	}
	if (kill)
		pthread_mutex_unlock(&rt->kills->lock);
	return 1;
oom:
	vdb_error(&cs->v, "53200", "out of memory");
	return 0;
}

void console_cancel(struct console_session *cs)
{
	ev_timer_stop(cs->v.client->worker->loop, &cs->pause_timer);
	if (cs->collect) {
		cs->collect->cs = NULL;
		collect_unref(cs->collect);
		cs->collect = NULL;
	}
}

/* ---- commands answered at once ---- */

static void show_version(struct console_session *cs)
{
	const char *vals[] = { "tusk " TUSK_VERSION };
	vdb_out_row(&cs->v.out, 1, vals);
	vdb_complete(&cs->v, "SHOW");
}

/* PgBouncer's three rows: active (no while a PAUSE of every database holds), paused (that
 * PAUSE), suspended (tusk has no SUSPEND: always no). */
static void show_state(struct console_session *cs)
{
	bool paused = pool_paused_all(cs->v.client->worker->rt);
	const char *rows[3][2] = { { "active", paused ? "no" : "yes" }, { "paused", paused ? "yes" : "no" },
				   { "suspended", "no" } };
	for (int i = 0; i < 3; i++)
		vdb_out_row(&cs->v.out, 2, rows[i]);
	vdb_complete(&cs->v, "SHOW");
}

/* One row per kv replication link (docs/kv.md, "Operations"); none without a kv section. */
static void show_kv(struct console_session *cs)
{
	struct kv_replicator *r = cs->v.client->worker->rt->kv_replicator;
	int n = kv_replicate_nlinks(r);

	for (int i = 0; i < n; i++) {
		struct kv_link_stats st;
		char num[11][24];
		if (kv_replicate_link_stats(r, i, &st) < 0)
			continue;
		snprintf(num[0], sizeof num[0], "%d", st.shard);
		snprintf(num[1], sizeof num[1], "%d", st.local_id);
		snprintf(num[2], sizeof num[2], "%d", st.peer_id);
		snprintf(num[3], sizeof num[3], "%d", st.connected ? 1 : 0);
		snprintf(num[4], sizeof num[4], "%.3f", st.lag_seconds);
		snprintf(num[5], sizeof num[5], "%lld", (long long)st.lag_rows);
		snprintf(num[6], sizeof num[6], "%llu", (unsigned long long)st.applied);
		snprintf(num[7], sizeof num[7], "%llu", (unsigned long long)st.skipped);
		snprintf(num[8], sizeof num[8], "%llu", (unsigned long long)st.quarantined);
		snprintf(num[9], sizeof num[9], "%llu", (unsigned long long)st.batches);
		snprintf(num[10], sizeof num[10], "%llu", (unsigned long long)st.passes);
		char batch[24], mism[24], rep[24];
		snprintf(batch, sizeof batch, "%d", st.batch_size);
		snprintf(mism, sizeof mism, "%llu", (unsigned long long)st.digest_mismatches);
		snprintf(rep, sizeof rep, "%llu", (unsigned long long)st.repaired);
		const char *vals[] = { num[0], num[1], num[2], num[3], st.lag_seconds < 0 ? NULL : num[4], num[5],
				       num[6], num[7], num[8], num[9], num[10], batch,
				       st.last_error[0] ? st.last_error : NULL, mism, rep };
		vdb_out_row(&cs->v.out, (int)(sizeof vals / sizeof vals[0]), vals);
	}
	vdb_complete(&cs->v, "SHOW");
}

static void show_help(struct console_session *cs)
{
	vdb_out_error(&cs->v, false, true, "00000", "Console usage\n"
			   "\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|STATS|WAITS|LISTS|VERSION|KV|CACHE|SERVICES\n"
			   "\tSHOW STATS_TOTALS|STATS_AVERAGES|TOTALS|USERS\n"
			   "\tSHOW MEM|SOCKETS|ACTIVE_SOCKETS|FDS|LISTENERS|STATE\n"
			   "\tCACHE FLUSH [<db>]\n"
			   "\tPAUSE [<db>]\n"
			   "\tRESUME [<db>]\n"
			   "\tDISABLE <db>\n"
			   "\tENABLE <db>\n"
			   "\tKILL <db>\n"
			   "\tKILL_CLIENT <client id>\n"
			   "\tRECONNECT [<db>]\n"
			   "\tWAIT_CLOSE [<db>]\n"
			   "\tRELOAD\n"
			   "\tSET <key> = <value>\n"
			   "\tSHUTDOWN [WAIT_FOR_CLIENTS]", NULL, NULL);
	vdb_complete(&cs->v, "SHOW");
}

static void config_row(void *arg, const char *key, const char *value, const char *def, bool reloadable)
{
	struct console_session *cs = arg;
	const char *vals[] = { key, value, def, reloadable ? "yes" : "no" };
	vdb_out_row(&cs->v.out, 4, vals);
}

static void show_config(struct console_session *cs)
{
	config_describe(cs->v.client->worker->rt->cfg, config_row, cs);
	vdb_complete(&cs->v, "SHOW");
}

static bool user_listed(const char *name, const char **seen, int nseen);

/* SHOW DATABASES' current_client_connections: the clients of the databases a rule serves
 * (all their users), each database once; for a "*" rule, of the databases it has pools for. */
static int rule_clients(struct runtime *rt, const struct config_pool_rule *r)
{
	if (strcmp(r->database, "*") != 0)
		return pool_name_clients(rt, r->database, false);
	const char *seen[256];
	int nseen = 0, n = 0;
	for (struct pool *p = pool_first(rt); p && nseen < 256; p = pool_next(p))
		if (pool_rule(p) == r && !user_listed(pool_database(p), seen, nseen)) {
			seen[nseen++] = pool_database(p);
			n += pool_name_clients(rt, pool_database(p), false);
		}
	return n;
}

static void show_databases(struct console_session *cs)
{
	struct runtime *rt = cs->v.client->worker->rt;
	const struct tusk_config *cfg = rt->cfg;

	for (int i = 0; i < cfg->npools; i++) {
		const struct config_pool_rule *r = &cfg->pools[i];
		long current = 0;
		bool paused = false;
		for (struct pool *p = pool_first(rt); p; p = pool_next(p)) {
			if (pool_rule(p) != r)
				continue;
			struct pool_gauges info;
			pool_snapshot(p, &info);
			current += info.slots;
			paused = paused || info.paused;
		}
		char port[16], size[16], min[16], maxc[16], cur[24], reserve[16], max_clients[16], clients[16], life[24];
		snprintf(max_clients, sizeof max_clients, "%d", config_max_db_client_connections(cfg, r));
		snprintf(clients, sizeof clients, "%d", rule_clients(rt, r));
		const struct config_host *h = r->service && r->service->nhosts ? &r->service->hosts[0] : NULL;
		snprintf(port, sizeof port, "%d", h ? h->port : 0);
		snprintf(size, sizeof size, "%d", r->size);
		snprintf(min, sizeof min, "%d", r->min_size);
		snprintf(maxc, sizeof maxc, "%d", r->max_db_connections);
		snprintf(reserve, sizeof reserve, "%d", config_reserve_pool_size(cfg, r));
		long_str(cur, sizeof cur, current);
		long_str(life, sizeof life, (long)(config_server_lifetime(cfg, r) / 1000));
		/* PgBouncer's: only for a list of hosts */
		const char *balance = !r->service || r->service->nhosts < 2 ? NULL
				      : r->service->load_balance_hosts == CONFIG_LOAD_BALANCE_DISABLE ? "disable" : "round-robin";
		const char *vals[] = {
			r->database, h ? h->host : NULL, port, r->server_database ? r->server_database : r->database,
			r->server_user, size, min, reserve, config_pool_mode_name(r->mode), maxc, cur, paused ? "1" : "0",
			r->blocked || pool_database_disabled(rt, r->database) ? "1" : "0", r->user, r->service_name,
			max_clients, clients, reserve, life, balance,
		};
		vdb_out_row(&cs->v.out, (int)(sizeof vals / sizeof vals[0]), vals);
	}
	vdb_complete(&cs->v, "SHOW");
}

/* ---- PAUSE, RESUME, RECONNECT, KILL ---- */

/* A database the console may act on: "" (all), or one a pool or a rule names. */
/* Whether db is a database the console may act on: one with a pool, one a rule names, or
 * (*only_star) one only a "*" rule would match, which has no pool yet. */
static bool known_database(struct console_session *cs, const char *db, bool *only_star)
{
	struct runtime *rt = cs->v.client->worker->rt;

	*only_star = false;
	if (!*db)
		return true;
	for (struct pool *p = pool_first(rt); p; p = pool_next(p))
		if (strcmp(pool_database(p), db) == 0)
			return true;
	for (int i = 0; i < rt->cfg->npools; i++) {
		if (strcmp(rt->cfg->pools[i].database, db) == 0)
			return true;
		*only_star = *only_star || strcmp(rt->cfg->pools[i].database, "*") == 0;
	}
	return *only_star;
}

/* Whether name is already a row of show_users. */
static bool user_listed(const char *name, const char **seen, int nseen)
{
	for (int i = 0; i < nseen; i++)
		if (strcmp(seen[i], name) == 0)
			return true;
	return false;
}

/* SHOW USERS: every user named by a rule or having a pool; pool_mode is the mode a rule for
 * that user and every database sets ("" when none: the database's rule decides). */
static void show_users(struct console_session *cs)
{
	struct runtime *rt = cs->v.client->worker->rt;
	const struct tusk_config *cfg = rt->cfg;
	const char *seen[256];
	int nseen = 0;

	for (int i = 0; i < cfg->npools && nseen < 256; i++) {
		const char *u = cfg->pools[i].user;
		if (strcmp(u, "*") != 0 && !user_listed(u, seen, nseen))
			seen[nseen++] = u;
	}
	for (struct pool *p = pool_first(cs->v.client->worker->rt); p && nseen < 256; p = pool_next(p))
		if (!user_listed(pool_user(p), seen, nseen))
			seen[nseen++] = pool_user(p);
	for (int i = 0; i < nseen; i++) {
		const struct config_pool_rule *r = NULL;
		for (int k = 0; k < cfg->npools && !r; k++)
			if (strcmp(cfg->pools[k].database, "*") == 0 && strcmp(cfg->pools[k].user, seen[i]) == 0)
				r = &cfg->pools[k];
		long servers = 0;
		for (struct pool *p = pool_first(rt); p; p = pool_next(p))
			if (strcmp(pool_user(p), seen[i]) == 0) {
				struct pool_gauges g;
				pool_snapshot(p, &g);
				servers += g.slots;
			}
		char size[16], reserve[16], maxs[16], cur[24], maxc[16], clients[16];
		snprintf(size, sizeof size, "%d", r ? r->size : 0);
		snprintf(reserve, sizeof reserve, "%d", r ? config_reserve_pool_size(cfg, r) : 0);
		snprintf(maxs, sizeof maxs, "%d", r ? r->max_user_connections : 0);
		long_str(cur, sizeof cur, servers);
		snprintf(maxc, sizeof maxc, "%d", config_max_user_client_connections(cfg, r));
		snprintf(clients, sizeof clients, "%d", pool_name_clients(rt, seen[i], true));
		/* pool_size and reserve_pool_size: a user's own "*" rule's, as PgBouncer's [users] */
		const char *vals[] = { seen[i], r ? config_pool_mode_name(r->mode) : "", r ? size : NULL,
				       r ? reserve : NULL, maxs, cur, maxc, clients };
		vdb_out_row(&cs->v.out, (int)(sizeof vals / sizeof vals[0]), vals);
	}
	vdb_complete(&cs->v, "SHOW");
}

/* Whether the pools of cs->pause_db (all when "") are quiet: for PAUSE every server back
 * (parked or closed); for WAIT_CLOSE (closed) none left from before the last RECONNECT. */
static bool pools_quiet(struct console_session *cs, bool closed)
{
	for (struct pool *p = pool_first(cs->v.client->worker->rt); p; p = pool_next(p)) {
		if (cs->pause_db[0] && strcmp(pool_database(p), cs->pause_db) != 0)
			continue;
		struct pool_gauges info;
		pool_snapshot(p, &info);
		if (closed ? info.stale > 0 : info.slots != info.idle)
			return false;
	}
	return true;
}

static void pause_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct console_session *cs = t->data;
	(void)revents;
	if (!pools_quiet(cs, false))
		return;
	ev_timer_stop(loop, t);
	vdb_complete(&cs->v, "PAUSE");
	console_command_done(cs);
}

static void wait_close_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct console_session *cs = t->data;
	(void)revents;
	if (!pools_quiet(cs, true))
		return;
	ev_timer_stop(loop, t);
	vdb_complete(&cs->v, "WAIT_CLOSE");
	console_command_done(cs);
}

static int wait_close(struct console_session *cs, const char *db)
{
	snprintf(cs->pause_db, sizeof cs->pause_db, "%s", db);
	if (pools_quiet(cs, true)) {
		vdb_complete(&cs->v, "WAIT_CLOSE");
		return 0;
	}
	ev_init(&cs->pause_timer, wait_close_cb);
	cs->pause_timer.data = cs;
	ev_timer_set(&cs->pause_timer, PAUSE_POLL, PAUSE_POLL);
	ev_timer_start(cs->v.client->worker->loop, &cs->pause_timer);
	return 1;
}

static int pause_pools(struct console_session *cs, const char *db)
{
	struct ev_loop *loop = cs->v.client->worker->loop;

	if (pool_pause_database(cs->v.client->worker->rt, db) < 0) {
		vdb_error(&cs->v, "53200", "out of memory");
		return 0;
	}
	snprintf(cs->pause_db, sizeof cs->pause_db, "%s", db);
	log_info(cs->v.client->id, cs->v.client->ctx, "PAUSE %s", *db ? db : "(all)");
	if (pools_quiet(cs, false)) {
		vdb_complete(&cs->v, "PAUSE");
		return 0;
	}
	ev_init(&cs->pause_timer, pause_cb);
	cs->pause_timer.data = cs;
	ev_timer_set(&cs->pause_timer, PAUSE_POLL, PAUSE_POLL);
	ev_timer_start(loop, &cs->pause_timer);
	return 1;
}

static void resume_pools(struct console_session *cs, const char *db)
{
	pool_resume_database(cs->v.client->worker->rt, db);
	log_info(cs->v.client->id, cs->v.client->ctx, "RESUME %s", *db ? db : "(all)");
	vdb_complete(&cs->v, "RESUME");
}

static void reconnect_pools(struct console_session *cs, const char *db)
{
	for (struct pool *p = pool_first(cs->v.client->worker->rt); p; p = pool_next(p))
		if (!*db || strcmp(pool_database(p), db) == 0)
			pool_reconnect(p);
}

static void signal_self(struct console_session *cs, int sig, const char *tag)
{
	log_info(cs->v.client->id, cs->v.client->ctx, "%s from the admin console", tag);
	/* Answer first: the main thread's sigwait acts on the signal. */
	vdb_complete(&cs->v, tag);
	if (kill(getpid(), sig) < 0)
		log_error(cs->v.client->id, cs->v.client->ctx, "%s: kill: %s", tag, strerror(errno));
}

int console_run(struct console_session *cs, const struct console_cmd *cmd)
{
	bool show = cmd->kind >= CONSOLE_CMD_SHOW_POOLS && cmd->kind <= CONSOLE_CMD_SHOW_HELP;

	if (!show && !cs->full) {
		vdb_error(&cs->v, "42501", "permission denied: user \"%s\" is in admin.stats_users and may only run SHOW commands",
			      cs->v.client->user);
		return 0;
	}
	switch (cmd->kind) {
	case CONSOLE_CMD_EMPTY:
		return 0;
	case CONSOLE_CMD_SHOW_VERSION:
		show_version(cs);
		return 0;
	case CONSOLE_CMD_SHOW_STATE:
		show_state(cs);
		return 0;
	case CONSOLE_CMD_SHOW_KV:
		show_kv(cs);
		return 0;
	case CONSOLE_CMD_SHOW_HELP:
		show_help(cs);
		return 0;
	case CONSOLE_CMD_SHOW_CONFIG:
		show_config(cs);
		return 0;
	case CONSOLE_CMD_SHOW_DATABASES:
		show_databases(cs);
		return 0;
	case CONSOLE_CMD_SHOW_STATS:
	case CONSOLE_CMD_SHOW_STATS_TOTALS:
	case CONSOLE_CMD_SHOW_STATS_AVERAGES:
	case CONSOLE_CMD_SHOW_TOTALS:
		console_show_stats(cs, cmd->kind);
		return 0;
	case CONSOLE_CMD_SHOW_USERS:
		show_users(cs);
		return 0;
	case CONSOLE_CMD_SHOW_WAITS:
		console_show_waits(cs);
		return 0;
	case CONSOLE_CMD_SHOW_LISTS:
		show_lists(cs);
		return 0;
	case CONSOLE_CMD_SHOW_CACHE:
		show_cache(cs);
		return 0;
	case CONSOLE_CMD_SHOW_SERVICES:
		show_services(cs);
		return 0;
	case CONSOLE_CMD_SHOW_LISTENERS:
		show_listeners(cs);
		return 0;
	case CONSOLE_CMD_CACHE_FLUSH:
		cache_flush(cs, cmd->arg);
		return 0;
	case CONSOLE_CMD_SHOW_POOLS:
	case CONSOLE_CMD_SHOW_CLIENTS:
	case CONSOLE_CMD_SHOW_SERVERS:
	case CONSOLE_CMD_SHOW_MEM:
	case CONSOLE_CMD_SHOW_SOCKETS:
	case CONSOLE_CMD_SHOW_ACTIVE_SOCKETS:
		return broadcast(cs, cmd);
	case CONSOLE_CMD_PAUSE:
	case CONSOLE_CMD_RESUME:
	case CONSOLE_CMD_KILL:
	case CONSOLE_CMD_RECONNECT:
	case CONSOLE_CMD_DISABLE:
	case CONSOLE_CMD_ENABLE:
	case CONSOLE_CMD_WAIT_CLOSE:
		if (console_is_admin_db(cmd->arg)) {
			vdb_error(&cs->v, "42809", "the admin console's own database cannot be the target");
			return 0;
		}
		bool only_star;
		if (!known_database(cs, cmd->arg, &only_star)) {
			vdb_error(&cs->v, "3D000", "no such database: \"%s\"", cmd->arg);
			return 0;
		}
		/* PgBouncer would say "no such database"; tusk acts ahead of the pool (a PAUSE
		 * makes it start paused) but says so: a typo is not silence. */
		if (only_star)
			vdb_out_error(&cs->v, false, true, "01000", "no pool of this database yet: only a \"*\" rule matches it",
				      cmd->kind == CONSOLE_CMD_PAUSE ? "Its pools will start paused." : NULL, NULL);
		if (cmd->kind == CONSOLE_CMD_PAUSE)
			return pause_pools(cs, cmd->arg);
		if (cmd->kind == CONSOLE_CMD_WAIT_CLOSE)
			return wait_close(cs, cmd->arg);
		if (cmd->kind == CONSOLE_CMD_DISABLE || cmd->kind == CONSOLE_CMD_ENABLE) {
			bool off = cmd->kind == CONSOLE_CMD_DISABLE;
			if (pool_disable_database(cs->v.client->worker->rt, cmd->arg, off) < 0) {
				vdb_error(&cs->v, "53200", "out of memory");
				return 0;
			}
			log_info(cs->v.client->id, cs->v.client->ctx, "%s %s", off ? "DISABLE" : "ENABLE", cmd->arg);
			vdb_complete(&cs->v, off ? "DISABLE" : "ENABLE");
			return 0;
		}
		if (cmd->kind == CONSOLE_CMD_RESUME) {
			resume_pools(cs, cmd->arg);
			return 0;
		}
		/* KILL and RECONNECT: servers in use close when released; parked ones now. */
		reconnect_pools(cs, cmd->arg);
		log_info(cs->v.client->id, cs->v.client->ctx, "%s %s", cmd->kind == CONSOLE_CMD_KILL ? "KILL" : "RECONNECT",
			 *cmd->arg ? cmd->arg : "(all)");
		return broadcast(cs, cmd);
	case CONSOLE_CMD_KILL_CLIENT:
		return broadcast(cs, cmd);
	case CONSOLE_CMD_SET:
		if (console_set(cs, cmd))
			signal_self(cs, SIGHUP, "SET"); /* the reload applies it */
		return 0;
	case CONSOLE_CMD_RELOAD:
		signal_self(cs, SIGHUP, "RELOAD");
		return 0;
	case CONSOLE_CMD_SHUTDOWN:
		signal_self(cs, SIGINT, "SHUTDOWN");
		return 0;
	case CONSOLE_CMD_SHUTDOWN_WAIT:
		signal_self(cs, SIGTERM, "SHUTDOWN");
		return 0;
	}
	return 0;
}
