/* `tusk top`: a live terminal view of a running tusk, through its admin console as a plain
 * client (libpq, simple protocol): pools with their clients and servers, transactions per
 * second and claim-wait p50/p99 over the last interval (SHOW POOLS, SHOW WAITS), each
 * service's backends with role, state, servers and last error (SHOW SERVICES), and the
 * clients (SHOW CLIENTS). Keys sort, PAUSE/RESUME/RECONNECT/KILL the selected pool's
 * database and KILL_CLIENT the selected client, each kill after a y/n confirmation.
 * Plain ANSI; no state of the daemon is touched except through console commands. */
#include "top/top.h"
#include "config/config.h"

#include <errno.h>
#include <getopt.h>
#include "pq/pq.h"
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "stats/stats.h"

#define TOP_MAX_POOLS 256
#define TOP_MAX_CLIENTS 512
#define TOP_MAX_BACKENDS 256
#define TOP_NAME 64

struct top_pool {
	char database[TOP_NAME], user[TOP_NAME], mode[16];
	long cl_active, cl_waiting, sv_active, sv_idle;
	bool paused;
	uint64_t xacts, buckets[STATS_NBUCKETS + 1];
	double tps, p50_ms, p99_ms; /* over the last interval */
};

struct top_client {
	char id[TOP_NAME], database[TOP_NAME], user[TOP_NAME], state[16], addr[TOP_NAME], app[TOP_NAME];
	long wait;
};

/* A backend as the pools see it (SHOW SERVICES: one row per pool using it; a backend no pool
 * uses yet has one row with no pool). */
struct top_backend {
	char service[TOP_NAME], backend[TOP_NAME], pool[2 * TOP_NAME], role[16], state[16], error[96];
	long connections;
};

enum top_sort { SORT_NAME, SORT_TPS, SORT_WAITING, SORT_P99, SORT_ACTIVE, SORT_NKEYS };
static const char *const sort_names[SORT_NKEYS] = { "name", "tps", "cl_waiting", "wait_p99", "sv_active" };

struct top {
	PGconn *conn;
	struct top_pool pools[TOP_MAX_POOLS], prev[TOP_MAX_POOLS];
	int npools, nprev;
	struct top_client clients[TOP_MAX_CLIENTS];
	int nclients;
	struct top_backend backends[TOP_MAX_BACKENDS];
	int nbackends; /* -1: the daemon has no SHOW SERVICES (older tusk): no panel */
	double sampled_at;
	enum top_sort sort;
	bool clients_focus;
	int sel_pool, sel_client;
	/* What is selected, by identity: the lists are re-read and re-sorted at each refresh. */
	char sel_pool_key[2 * TOP_NAME + 1], sel_client_id[TOP_NAME];
	char status[256];
	/* a kill waiting for y/n */
	char confirm_cmd[160];
	bool raw;
	struct termios saved;
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void copy_field(char *out, size_t cap, const PGresult *r, int row, const char *col)
{
	int c = PQfnumber(r, col);
	snprintf(out, cap, "%s", c >= 0 ? PQgetvalue(r, row, c) : "");
}

static long long_field(const PGresult *r, int row, const char *col)
{
	int c = PQfnumber(r, col);
	return c >= 0 ? strtol(PQgetvalue(r, row, c), NULL, 10) : 0;
}

static PGresult *show(struct top *t, const char *what)
{
	PGresult *r = PQexec(t->conn, what);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		snprintf(t->status, sizeof t->status, "%s: %s", what, PQerrorMessage(t->conn));
		char *nl = strchr(t->status, '\n');
		if (nl)
			*nl = '\0';
		PQclear(r);
		return NULL;
	}
	return r;
}

static const struct top_pool *find_prev(const struct top *t, const char *db, const char *user)
{
	for (int i = 0; i < t->nprev; i++)
		if (strcmp(t->prev[i].database, db) == 0 && strcmp(t->prev[i].user, user) == 0)
			return &t->prev[i];
	return NULL;
}

/* One sample: pools (gauges and cumulative counters), then rates against the previous one. */
static int sample(struct top *t)
{
	PGresult *pools = show(t, "SHOW POOLS"), *waits = NULL, *clients = NULL;
	if (!pools)
		return -EIO;
	if (!(waits = show(t, "SHOW WAITS")) || !(clients = show(t, "SHOW CLIENTS"))) {
		PQclear(pools);
		PQclear(waits);
		return -EIO;
	}
	double at = now_s(), dt = at - t->sampled_at;
	memcpy(t->prev, t->pools, sizeof t->pools);
	t->nprev = t->npools;
	t->npools = 0;
	for (int i = 0; i < PQntuples(pools) && t->npools < TOP_MAX_POOLS; i++) {
		struct top_pool *p = &t->pools[t->npools++];
		memset(p, 0, sizeof *p);
		copy_field(p->database, sizeof p->database, pools, i, "database");
		copy_field(p->user, sizeof p->user, pools, i, "user");
		copy_field(p->mode, sizeof p->mode, pools, i, "pool_mode");
		p->cl_active = long_field(pools, i, "cl_active");
		p->cl_waiting = long_field(pools, i, "cl_waiting");
		p->sv_active = long_field(pools, i, "sv_active");
		p->sv_idle = long_field(pools, i, "sv_idle");
		p->paused = long_field(pools, i, "paused") != 0;
		for (int k = 0; k < PQntuples(waits); k++) {
			char db[TOP_NAME], user[TOP_NAME], b[(STATS_NBUCKETS + 1) * 21];
			copy_field(db, sizeof db, waits, k, "database");
			copy_field(user, sizeof user, waits, k, "user");
			if (strcmp(db, p->database) != 0 || strcmp(user, p->user) != 0)
				continue;
			p->xacts = (uint64_t)strtoull(PQgetvalue(waits, k, PQfnumber(waits, "xact_count")), NULL, 10);
			copy_field(b, sizeof b, waits, k, "wait_buckets");
			char *s = b;
			for (int j = 0; j <= STATS_NBUCKETS && *s; j++) {
				p->buckets[j] = strtoull(s, &s, 10);
				if (*s == ',')
					s++;
			}
		}
		const struct top_pool *old = find_prev(t, p->database, p->user);
		if (old && dt > 0) {
			uint64_t delta[STATS_NBUCKETS + 1];
			for (int j = 0; j <= STATS_NBUCKETS; j++)
				delta[j] = p->buckets[j] >= old->buckets[j] ? p->buckets[j] - old->buckets[j] : 0;
			p->tps = p->xacts >= old->xacts ? (double)(p->xacts - old->xacts) / dt : 0;
			p->p50_ms = stats_quantile(delta, 0.50) * 1e3;
			p->p99_ms = stats_quantile(delta, 0.99) * 1e3;
		}
	}
	t->nclients = 0;
	for (int i = 0; i < PQntuples(clients) && t->nclients < TOP_MAX_CLIENTS; i++) {
		struct top_client *c = &t->clients[t->nclients];
		char db[TOP_NAME];
		copy_field(db, sizeof db, clients, i, "database");
		/* The console's own clients (this one included) are not what one kills from here. */
		if (strcmp(db, "tusk") == 0 || strcmp(db, "pgbouncer") == 0)
			continue;
		snprintf(c->database, sizeof c->database, "%s", db);
		copy_field(c->id, sizeof c->id, clients, i, "id");
		copy_field(c->user, sizeof c->user, clients, i, "user");
		copy_field(c->state, sizeof c->state, clients, i, "state");
		copy_field(c->addr, sizeof c->addr, clients, i, "addr");
		copy_field(c->app, sizeof c->app, clients, i, "application_name");
		c->wait = long_field(clients, i, "wait");
		t->nclients++;
	}
	/* Optional: a tusk without SHOW SERVICES still gets the rest of the view. */
	PGresult *services = PQexec(t->conn, "SHOW SERVICES");
	if (PQresultStatus(services) == PGRES_TUPLES_OK) {
		t->nbackends = 0;
		for (int i = 0; i < PQntuples(services) && t->nbackends < TOP_MAX_BACKENDS; i++) {
			struct top_backend *b = &t->backends[t->nbackends++];
			copy_field(b->service, sizeof b->service, services, i, "service");
			copy_field(b->backend, sizeof b->backend, services, i, "backend");
			copy_field(b->pool, sizeof b->pool, services, i, "pool");
			copy_field(b->role, sizeof b->role, services, i, "role");
			copy_field(b->state, sizeof b->state, services, i, "state");
			copy_field(b->error, sizeof b->error, services, i, "last_error");
			b->connections = long_field(services, i, "connections");
		}
	} else {
		t->nbackends = -1;
	}
	PQclear(services);
	t->sampled_at = at;
	PQclear(pools);
	PQclear(waits);
	PQclear(clients);
	return 0;
}

static enum top_sort sort_key;

/* Clients in a stable order (database, user, id), so that the list does not jump. */
static int cmp_client(const void *a, const void *b)
{
	const struct top_client *x = a, *y = b;
	int c = strcmp(x->database, y->database);
	if (!c)
		c = strcmp(x->user, y->user);
	return c ? c : strcmp(x->id, y->id);
}

static void pool_key(const struct top_pool *p, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", p->database, p->user);
}

/* After a refresh or a re-sort: the selection follows its pool and client. */
static void reselect(struct top *t)
{
	char key[sizeof t->sel_pool_key];
	for (int i = 0; i < t->npools; i++) {
		pool_key(&t->pools[i], key, sizeof key);
		if (strcmp(key, t->sel_pool_key) == 0)
			t->sel_pool = i;
	}
	for (int i = 0; i < t->nclients; i++)
		if (strcmp(t->clients[i].id, t->sel_client_id) == 0)
			t->sel_client = i;
}

/* Remember what the (moved) selection points at. */
static void remember_selection(struct top *t)
{
	if (t->sel_pool >= 0 && t->sel_pool < t->npools)
		pool_key(&t->pools[t->sel_pool], t->sel_pool_key, sizeof t->sel_pool_key);
	if (t->sel_client >= 0 && t->sel_client < t->nclients)
		snprintf(t->sel_client_id, sizeof t->sel_client_id, "%s", t->clients[t->sel_client].id);
}

static int cmp_pool(const void *a, const void *b)
{
	const struct top_pool *x = a, *y = b;
	double d = 0;
	switch (sort_key) {
	case SORT_TPS: d = y->tps - x->tps; break;
	case SORT_WAITING: d = (double)(y->cl_waiting - x->cl_waiting); break;
	case SORT_P99: d = y->p99_ms - x->p99_ms; break;
	case SORT_ACTIVE: d = (double)(y->sv_active - x->sv_active); break;
	default: break;
	}
	if (d != 0)
		return d > 0 ? 1 : -1;
	int c = strcmp(x->database, y->database);
	return c ? c : strcmp(x->user, y->user);
}

static void clamp_selection(struct top *t)
{
	if (t->sel_pool >= t->npools)
		t->sel_pool = t->npools - 1;
	if (t->sel_pool < 0)
		t->sel_pool = 0;
	if (t->sel_client >= t->nclients)
		t->sel_client = t->nclients - 1;
	if (t->sel_client < 0)
		t->sel_client = 0;
}

static void draw(struct top *t, bool ansi)
{
	struct winsize ws = { .ws_row = 40, .ws_col = 120 };
	if (ansi)
		ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws);
	int rows = ws.ws_row > 10 ? ws.ws_row : 40;
	sort_key = t->sort;
	qsort(t->pools, (size_t)t->npools, sizeof t->pools[0], cmp_pool);
	qsort(t->clients, (size_t)t->nclients, sizeof t->clients[0], cmp_client);
	reselect(t);
	clamp_selection(t);
	remember_selection(t);

	if (ansi)
		fputs("\033[H\033[2J", stdout);
	printf("tusk top  %s:%s  pools %d  clients %d  sort: %s  focus: %s\n", PQhost(t->conn), PQport(t->conn),
	       t->npools, t->nclients, sort_names[t->sort], t->clients_focus ? "clients" : "pools");
	printf("%-20s %-14s %-11s %7s %7s %7s %7s %9s %9s %9s %6s\n", "DATABASE", "USER", "MODE", "CL_ACT", "CL_WAIT",
	       "SV_ACT", "SV_IDLE", "TPS", "WAIT_P50", "WAIT_P99", "PAUSED");
	int used = 2, pool_rows = t->npools < rows / 2 - 2 ? t->npools : rows / 2 - 2;
	for (int i = 0; i < pool_rows; i++, used++) {
		const struct top_pool *p = &t->pools[i];
		bool sel = ansi && !t->clients_focus && i == t->sel_pool;
		printf("%s%-20.20s %-14.14s %-11.11s %7ld %7ld %7ld %7ld %9.1f %7.1fms %7.1fms %6s%s\n", sel ? "\033[7m" : "",
		       p->database, p->user, p->mode, p->cl_active, p->cl_waiting, p->sv_active, p->sv_idle, p->tps,
		       p->p50_ms, p->p99_ms, p->paused ? "yes" : "no", sel ? "\033[0m" : "");
	}
	if (t->nbackends >= 0) {
		printf("\n%-14s %-24s %-24s %-8s %-9s %5s %s\n", "SERVICE", "BACKEND", "POOL", "ROLE", "STATE", "CONNS",
		       "LAST_ERROR");
		used += 2;
		int backend_rows = t->nbackends < rows / 4 ? t->nbackends : rows / 4;
		for (int i = 0; i < backend_rows; i++, used++) {
			const struct top_backend *b = &t->backends[i];
			printf("%-14.14s %-24.24s %-24.24s %-8.8s %-9.9s %5ld %.60s\n", b->service, b->backend, b->pool,
			       b->role, b->state, b->connections, b->error);
		}
	}
	printf("\n%-12s %-20s %-14s %-10s %-22s %6s %s\n", "CLIENT", "DATABASE", "USER", "STATE", "ADDR", "WAIT",
	       "APPLICATION");
	used += 2;
	int client_rows = rows - used - 3;
	int first = t->sel_client >= client_rows ? t->sel_client - client_rows + 1 : 0;
	for (int i = first; i < t->nclients && i - first < client_rows; i++) {
		const struct top_client *c = &t->clients[i];
		bool sel = ansi && t->clients_focus && i == t->sel_client;
		printf("%s%-12.12s %-20.20s %-14.14s %-10.10s %-22.22s %6ld %.30s%s\n", sel ? "\033[7m" : "", c->id,
		       c->database, c->user, c->state, c->addr, c->wait, c->app, sel ? "\033[0m" : "");
	}
	if (ansi) {
		printf("\033[%d;1H", rows - 1);
		if (t->confirm_cmd[0])
			printf("\033[1m%s? [y/N]\033[0m\033[K\n", t->confirm_cmd);
		else
			printf("%s\033[K\n", t->status);
		printf("q quit  s sort  tab pools/clients  j/k move  p pause  r resume  c reconnect  K kill db  x kill client");
	}
	fflush(stdout);
}

/* Run a console command; its outcome goes to the status line. */
static void command(struct top *t, const char *cmd)
{
	PGresult *r = PQexec(t->conn, cmd);
	ExecStatusType st = PQresultStatus(r);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		snprintf(t->status, sizeof t->status, "%s: done", cmd);
	} else {
		snprintf(t->status, sizeof t->status, "%s: %s", cmd, PQerrorMessage(t->conn));
		char *nl = strchr(t->status, '\n');
		if (nl)
			*nl = '\0';
	}
	PQclear(r);
}

/* The selected pool's database, quoted for the console ("" when there is none). */
static bool selected_db(const struct top *t, char *out, size_t cap)
{
	if (t->npools == 0 || t->clients_focus)
		return false;
	snprintf(out, cap, "\"%s\"", t->pools[t->sel_pool].database);
	return true;
}

/* One key; false to quit. */
static bool on_key(struct top *t, int ch)
{
	char db[TOP_NAME + 2];
	if (t->confirm_cmd[0]) {
		if (ch == 'y' || ch == 'Y')
			command(t, t->confirm_cmd);
		else
			snprintf(t->status, sizeof t->status, "%s: not done", t->confirm_cmd);
		t->confirm_cmd[0] = '\0';
		return true;
	}
	switch (ch) {
	case 'q':
		return false;
	case 's':
		t->sort = (t->sort + 1) % SORT_NKEYS;
		break;
	case '\t':
		t->clients_focus = !t->clients_focus;
		break;
	case 'j':
	case 'B': /* ESC [ B: down arrow */
		if (t->clients_focus)
			t->sel_client++;
		else
			t->sel_pool++;
		break;
	case 'k':
	case 'A': /* up arrow */
		if (t->clients_focus)
			t->sel_client--;
		else
			t->sel_pool--;
		break;
	case 'p':
	case 'r':
	case 'c':
		if (!selected_db(t, db, sizeof db)) {
			snprintf(t->status, sizeof t->status, "select a pool first (tab)");
			break;
		}
		char cmd[160];
		snprintf(cmd, sizeof cmd, "%s %s", ch == 'p' ? "PAUSE" : ch == 'r' ? "RESUME" : "RECONNECT", db);
		command(t, cmd);
		break;
	case 'K':
		if (!selected_db(t, db, sizeof db)) {
			snprintf(t->status, sizeof t->status, "select a pool first (tab)");
			break;
		}
		snprintf(t->confirm_cmd, sizeof t->confirm_cmd, "KILL %s", db);
		break;
	case 'x':
		if (!t->clients_focus || t->nclients == 0) {
			snprintf(t->status, sizeof t->status, "select a client first (tab)");
			break;
		}
		snprintf(t->confirm_cmd, sizeof t->confirm_cmd, "KILL_CLIENT %s", t->clients[t->sel_client].id);
		break;
	default:
		break;
	}
	clamp_selection(t);
	remember_selection(t);
	return true;
}

static void restore_terminal(struct top *t)
{
	if (t->raw) {
		tcsetattr(STDIN_FILENO, TCSANOW, &t->saved);
		fputs("\033[?25h\n", stdout);
		fflush(stdout);
		t->raw = false;
	}
}

/* The admin console of the tusk configured in path (NULL: ./tusk.yaml when it exists). NULL
 * after reporting when path does not load. */
static const char *find_console(const char *path, char *out, size_t cap)
{
	struct tusk_config *cfg = NULL;

	if (!path && access("tusk.yaml", R_OK) != 0)
		return "dbname=tusk";
	if (config_load(path ? path : "tusk.yaml", stderr, &cfg) > 0) {
		fprintf(stderr, "tusk top: cannot find the console through %s\n", path ? path : "tusk.yaml");
		return NULL;
	}
	const struct config_listen *l = &cfg->listen[0];
	snprintf(out, cap, "host=%s port=%d dbname=tusk", strcmp(l->host, "*") == 0 ? "127.0.0.1" : l->host, l->port);
	config_free(cfg);
	return out;
}

static bool is_console_db(const char *name, size_t len)
{
	return (len == 4 && strncmp(name, "tusk", 4) == 0) || (len == 9 && strncmp(name, "pgbouncer", 9) == 0);
}

/* Whether conninfo (key=value pairs or a URI) names the console's database; says what to add
 * when not. Without a dbname, PGDATABASE decides, as in libpq. */
static bool names_console(const char *conninfo)
{
	const char *db = NULL;
	size_t len = 0;

	if (strncmp(conninfo, "postgres://", 11) == 0 || strncmp(conninfo, "postgresql://", 13) == 0) {
		const char *path = strchr(strstr(conninfo, "://") + 3, '/');
		if (path) {
			db = path + 1;
			len = strcspn(db, "?");
		}
	} else {
		for (const char *p = strstr(conninfo, "dbname"); p; p = strstr(p + 1, "dbname")) {
			const char *v = p + 6;
			if (p != conninfo && p[-1] != ' ' && p[-1] != '\t')
				continue;
			v += strspn(v, " \t");
			if (*v != '=')
				continue;
			v++;
			v += strspn(v, " \t");
			if (*v == '\'') {
				db = v + 1;
				len = strcspn(db, "'");
			} else {
				db = v;
				len = strcspn(db, " \t");
			}
		}
	}
	if (!db && getenv("PGDATABASE")) {
		db = getenv("PGDATABASE");
		len = strlen(db);
	}
	if (db && is_console_db(db, len))
		return true;
	fprintf(stderr, "tusk top: the connection string must name tusk's admin console: add dbname=tusk\n");
	return false;
}

static void usage(FILE *out)
{
	fprintf(out, "Usage: tusk top [-c FILE] [-i SECONDS] [--once] [CONNINFO]\n"
		     "  CONNINFO   libpq connection string or URI of tusk's admin console (dbname=tusk)\n"
		     "             (default: the first listen address of -c FILE, else of ./tusk.yaml,\n"
		     "             else \"dbname=tusk\"; PGUSER, PGPASSWORD, ... apply)\n"
		     "  -c, --config FILE  the tusk.yaml whose console to find\n"
		     "  -i, --interval SECONDS  refresh period (default 1)\n"
		     "  --once     print one frame (two samples an interval apart) and exit\n");
}

int top_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "interval", required_argument, NULL, 'i' },
		{ "config", required_argument, NULL, 'c' },
		{ "once", no_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	double interval = 1.0;
	bool once = false;
	const char *config = NULL;
	char found[CONFIG_HOST_MAX + 64];
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "i:c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'i': interval = strtod(optarg, NULL); break;
		case 'c': config = optarg; break;
		case 'o': once = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (interval < 0.1 || interval > 3600) {
		fprintf(stderr, "tusk top: the interval must be between 0.1 and 3600 seconds\n");
		return 2;
	}
	const char *conninfo = optind < argc ? argv[optind] : find_console(config, found, sizeof found);
	if (!conninfo)
		return 1;
	if (!names_console(conninfo))
		return 2;
	struct top *t = calloc(1, sizeof *t);
	if (!t)
		return 1;
	t->conn = PQconnectdb(conninfo);
	if (PQstatus(t->conn) != CONNECTION_OK) {
		fprintf(stderr, "tusk top: %s", PQerrorMessage(t->conn));
		PQfinish(t->conn);
		free(t);
		return 1;
	}
	int rc = 0;
	t->sampled_at = now_s();
	if (sample(t) < 0) {
		fprintf(stderr, "tusk top: %s\n", t->status);
		rc = 1;
		goto out;
	}
	if (once) {
		usleep((useconds_t)(interval * 1e6));
		if (sample(t) < 0) {
			fprintf(stderr, "tusk top: %s\n", t->status);
			rc = 1;
			goto out;
		}
		draw(t, false);
		goto out;
	}

	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &t->saved) == 0) {
		struct termios raw = t->saved;
		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		raw.c_cc[VMIN] = 0;
		raw.c_cc[VTIME] = 0;
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
		t->raw = true;
		fputs("\033[?25l", stdout);
	}
	double next = now_s() + interval;
	draw(t, true);
	while (!stop_requested) {
		int wait_ms = (int)((next - now_s()) * 1000);
		struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
		int n = poll(&pfd, 1, wait_ms > 0 ? wait_ms : 0);
		if (n > 0 && (pfd.revents & POLLIN)) {
			char keys[16];
			ssize_t got = read(STDIN_FILENO, keys, sizeof keys);
			if (got <= 0)
				break;
			bool go_on = true;
			for (ssize_t i = 0; i < got && go_on; i++) {
				/* Arrow keys arrive as ESC [ A/B: the letter alone is the key. */
				if (keys[i] == '\033' && i + 2 < got && keys[i + 1] == '[') {
					go_on = on_key(t, keys[i + 2]);
					i += 2;
					continue;
				}
				go_on = on_key(t, (unsigned char)keys[i]);
			}
			if (!go_on)
				break;
			draw(t, true);
			continue;
		}
		if (now_s() >= next) {
			if (PQstatus(t->conn) != CONNECTION_OK) {
				PQreset(t->conn);
				snprintf(t->status, sizeof t->status, "reconnecting: %s", PQerrorMessage(t->conn));
			} else {
				(void)sample(t); /* on failure the status line says why */
			}
			next += interval;
			if (next < now_s())
				next = now_s() + interval;
			draw(t, true);
		}
	}
	restore_terminal(t);
out:
	PQfinish(t->conn);
	free(t);
	return rc;
}
