/* The admin console's side of the wire (see console.h): who may log in, and its answers to
 * the simple and extended query protocols; the framing, greeting and output buffer are the
 * virtual database's (frontend/vdb.c). Commands themselves are in commands.c. An admin
 * client is a frontend client of the console's session kind (console_kind), in CLIENT_IDLE
 * once logged in, its session reached through c->vdb; it never claims a server. */
#include "console/console.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console/console_int.h"
#include "frontend/client_int.h"
#include "frontend/client_kind.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

bool console_is_admin_db(const char *database)
{
	return strcmp(database, "tusk") == 0 || strcmp(database, "pgbouncer") == 0;
}

static struct console_session *session_of(struct vdb *v)
{
	return (struct console_session *)((char *)v - offsetof(struct console_session, v));
}

/* binary: bit i, column i in binary (a Bind's result formats). */
static void out_row_description(struct console_session *cs, struct console_columns cols, uint64_t binary)
{
	struct vdb_col c[64];
	if (!binary || cols.n > 64) {
		vdb_out_row_description(&cs->v.out, cols.cols, cols.n);
		return;
	}
	for (int i = 0; i < cols.n; i++)
		c[i] = (struct vdb_col){ cols.cols[i].name, cols.cols[i].type_oid, (uint16_t)((binary >> i) & 1) };
	vdb_out_row_description(&cs->v.out, c, cols.n);
}

/* ---- login ---- */

static void console_startup(struct client *c);
static void console_begin(struct client *c);
static void console_client_closed(struct client *c);

static const char *const console_databases[] = { "tusk", "pgbouncer", NULL };

const struct client_kind console_kind = {
	.name = "console",
	.databases = console_databases,
	.startup = console_startup,
	.begin = console_begin,
	.input = vdb_client_input,
	.writable = vdb_client_writable,
	.closed = console_client_closed,
	.resident = true,
};

static const struct client_move_hook kills_hook = {
	.mark = console_kills_seen,
	.arrive = console_kills_catch_up,
};

void console_register(void)
{
	client_kind_register(&console_kind);
	client_set_move_hook(&kills_hook);
}

/* After the startup packet: authenticate (hba_file, else admin.client_auth) and, when that
 * is done at once, begin. */
static void console_startup(struct client *c)
{
	if (client_auth_begin(c, c->worker->rt->cfg->admin.client_auth, NULL, NULL))
		console_begin(c);
}

static const struct vdb_ops console_ops;

/* Authenticated: check the user is listed, greet, and answer queries from now on. */
static void console_begin(struct client *c)
{
	const struct tusk_config *cfg = c->worker->rt->cfg;
	bool full = config_name_listed(cfg->admin.users, cfg->admin.nusers, c->user);
	bool stats = config_name_listed(cfg->admin.stats_users, cfg->admin.nstats_users, c->user);
	struct console_session *cs;

	if (!full && !stats) {
		client_fail(c, "28000", "user \"%s\" may not use the admin console (not in admin.users or admin.stats_users)",
			    c->user);
		return;
	}
	cs = calloc(1, sizeof *cs);
	if (!cs) {
		client_fail(c, "53200", "out of memory");
		return;
	}
	vdb_init(&cs->v, c, &console_ops); /* c->vdb: from here on, client_close frees cs */
	cs->full = full;
	ev_init(&cs->pause_timer, NULL); /* started by PAUSE; stopped at teardown either way */
	log_info(c->id, c->ctx, "admin console login (%s)", full ? "admin.users" : "admin.stats_users");
	vdb_greet(&cs->v, TUSK_VERSION "/tusk", "ISO", false);
}

/* Teardown of an admin client (from client_close): stop timers, forget pending work. */
static void console_client_closed(struct client *c)
{
	if (!c->vdb)
		return;
	struct console_session *cs = session_of(c->vdb);
	c->vdb = NULL;
	console_cancel(cs);
	vdb_free(&cs->v);
	free(cs);
}

/* ---- requests ---- */

static struct console_stmt *find_stmt(struct console_session *cs, const char *name)
{
	if (!*name)
		return &cs->stmts[0];
	for (int i = 1; i < CONSOLE_STATEMENTS; i++)
		if (cs->stmts[i].used && strcmp(cs->stmts[i].name, name) == 0)
			return &cs->stmts[i];
	return NULL;
}

/* Returns 1 when the command runs asynchronously (busy set). */
static int run(struct console_session *cs, const struct console_cmd *cmd, bool simple)
{
	if (console_run(cs, cmd) == 1) {
		cs->v.busy = true;
		cs->v.busy_simple = simple;
		return 1;
	}
	return 0;
}

static bool on_query(struct vdb *v, const char *text)
{
	struct console_session *cs = session_of(v);
	struct console_cmd cmd;
	char err[200];

	if (console_parse(text, strlen(text), &cmd, err, sizeof err) < 0) {
		vdb_error(v, "42601", "%s", err);
		return false;
	}
	if (cmd.kind == CONSOLE_CMD_EMPTY) {
		vdb_out_msg(&v->out, 'I', NULL, 0);
		return false;
	}
	struct console_columns cols = console_columns_of(cmd.kind);
	if (cols.n > 0)
		out_row_description(cs, cols, 0);
	v->out.row_binary = 0;
	return run(cs, &cmd, true) == 1;
}

/* Parameter types are ignored: the console's commands take none. */
static void on_parse(struct vdb *v, const char *name, const char *text, uint16_t ntypes, const uint8_t *types)
{
	struct console_session *cs = session_of(v);
	struct console_stmt *st;
	char err[200];
	(void)ntypes;
	(void)types;

	st = find_stmt(cs, name);
	if (st && *name) {
		vdb_error_skip(v, "42P05", "prepared statement \"%s\" already exists", name);
		return;
	}
	for (int i = 1; !st && i < CONSOLE_STATEMENTS; i++)
		if (!cs->stmts[i].used)
			st = &cs->stmts[i];
	if (!st) {
		vdb_error_skip(v, "53400", "too many prepared statements (the console keeps %d)", CONSOLE_STATEMENTS - 1);
		return;
	}
	struct console_cmd cmd;
	if (console_parse(text, strlen(text), &cmd, err, sizeof err) < 0) {
		vdb_error_skip(v, "42601", "%s", err);
		return;
	}
	snprintf(st->name, sizeof st->name, "%s", name);
	st->used = true;
	st->cmd = cmd;
	vdb_out_msg(&v->out, '1', NULL, 0);
}

static void on_bind(struct vdb *v, const uint8_t *body, size_t len)
{
	struct console_session *cs = session_of(v);
	struct proto_reader r;
	struct console_stmt *st;

	proto_reader_init(&r, body, len);
	const char *portal = proto_get_cstr(&r);
	const char *name = proto_get_cstr(&r);
	uint16_t n = proto_get_u16(&r); /* parameter formats */
	for (uint16_t i = 0; !r.err && i < n; i++)
		(void)proto_get_u16(&r);
	n = proto_get_u16(&r); /* parameter values */
	if (r.err)
		goto malformed;
	char cut[VDB_NAME_MAX];
	name = vdb_name(name, cut);
	if (n > 0) {
		vdb_error_skip(v, "0A000", "console commands take no parameters");
		return;
	}
	uint16_t nres = proto_get_u16(&r); /* result formats */
	const uint8_t *codes = proto_get_bytes(&r, (size_t)nres * 2);
	if (r.err)
		goto malformed;
	st = find_stmt(cs, name);
	if (!st || !st->used) {
		vdb_error_skip(v, "26000", "prepared statement \"%s\" does not exist", name);
		return;
	}
	uint64_t binary;
	if (!vdb_result_formats(v, codes, nres, console_columns_of(st->cmd.kind).n, &binary))
		return;
	cs->portal = st->cmd;
	cs->portal_binary = binary;
	vdb_bind_portal(v, portal);
	vdb_out_msg(&v->out, '2', NULL, 0);
	return;
malformed:
	vdb_error_skip(v, "08P01", "malformed Bind message");
}

static void describe(struct console_session *cs, const struct console_cmd *cmd, bool statement)
{
	struct console_columns cols = console_columns_of(cmd->kind);
	if (statement) {
		uint8_t none[2] = { 0, 0 }; /* no parameters */
		vdb_out_msg(&cs->v.out, 't', none, sizeof none);
	}
	if (cols.n > 0)
		out_row_description(cs, cols, statement ? 0 : cs->portal_binary);
	else
		vdb_out_msg(&cs->v.out, 'n', NULL, 0);
}

static void describe_statement(struct vdb *v, const char *name)
{
	struct console_session *cs = session_of(v);
	struct console_stmt *st = find_stmt(cs, name);

	if (!st || !st->used) {
		vdb_error_skip(v, "26000", "prepared statement \"%s\" does not exist", name);
		return;
	}
	describe(cs, &st->cmd, true);
}

static void describe_portal(struct vdb *v)
{
	struct console_session *cs = session_of(v);
	describe(cs, &cs->portal, false);
}

/* Whole: max_rows is not honoured (the rows are bounded by what tusk holds). */
static void execute(struct vdb *v, uint32_t max_rows)
{
	struct console_session *cs = session_of(v);
	(void)max_rows;

	if (cs->portal.kind == CONSOLE_CMD_EMPTY) {
		vdb_out_msg(&v->out, 'I', NULL, 0);
		return;
	}
	v->out.row_binary = cs->portal_binary; /* (the rows' writer reads it, now or when they come) */
	v->out.row_cols = console_columns_of(cs->portal.kind).cols;
	(void)run(cs, &cs->portal, false);
}

static void close_statement(struct vdb *v, const char *name)
{
	struct console_stmt *st = find_stmt(session_of(v), name);
	if (st)
		*st = (struct console_stmt){ 0 };
}

static const struct vdb_ops console_ops = {
	.name = "the admin console",
	.log_tag = "console",
	.error_log_level = LOG_INFO,
	.out_failed = "answer too large or out of memory",
	.fastpath = "function calls are not supported by the admin console",
	.collect_long = false,
	.query = on_query,
	.parse = on_parse,
	.bind = on_bind,
	.describe_statement = describe_statement,
	.describe_portal = describe_portal,
	.execute = execute,
	.close_statement = close_statement,
};

void console_command_done(struct console_session *cs)
{
	/* Killed by its own command (KILL_CLIENT of itself): its error is already out. */
	if (cs->v.client->state == CLIENT_CLOSING)
		return;
	cs->v.busy = false;
	if (cs->v.busy_simple)
		vdb_ready(&cs->v);
	vdb_input(&cs->v);
}
