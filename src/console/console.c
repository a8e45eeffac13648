/* The admin console's side of the wire (see console.h): who may log in, the greeting, the
 * simple and extended query protocols, and the output buffer that lets an answer be longer
 * than the client's wbuf. Commands themselves are in commands.c. An admin client is a
 * frontend client in CLIENT_IDLE with c->console set; it never claims a server. */
#include "console/console.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "console/console_int.h"
#include "frontend/client_int.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

#define CONSOLE_OUT_HIGH (256u << 10) /* stop reading requests while this much is unsent */

bool console_is_admin_db(const char *database)
{
	return strcmp(database, "tusk") == 0 || strcmp(database, "pgbouncer") == 0;
}

/* ---- output ---- */

static bool out_reserve(struct console_out *o, size_t n)
{
	if (o->failed)
		return false;
	if (o->start == o->len)
		o->start = o->len = 0;
	if (o->len + n <= o->cap)
		return true;
	if (o->len - o->start + n > CONSOLE_OUT_MAX) {
		o->failed = true;
		return false;
	}
	if (o->start > 0) {
		memmove(o->data, o->data + o->start, o->len - o->start);
		o->len -= o->start;
		o->start = 0;
		if (o->len + n <= o->cap)
			return true;
	}
	size_t cap = o->cap ? o->cap : 8192;
	while (cap < o->len + n)
		cap *= 2;
	uint8_t *d = realloc(o->data, cap);
	if (!d) {
		o->failed = true;
		return false;
	}
	o->data = d;
	o->cap = cap;
	return true;
}

void console_out_raw(struct console_out *o, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (!out_reserve(o, n))
		return;
	memcpy(o->data + o->len, p, n);
	o->len += n;
}

static void out_u16(struct console_out *o, uint16_t v)
{
	uint16_t be = htons(v);
	console_out_raw(o, &be, 2);
}

static void out_u32(struct console_out *o, uint32_t v)
{
	uint32_t be = htonl(v);
	console_out_raw(o, &be, 4);
}

void console_out_msg(struct console_out *o, uint8_t type, const void *body, size_t n)
{
	console_out_raw(o, &type, 1);
	out_u32(o, (uint32_t)(n + 4));
	if (n)
		console_out_raw(o, body, n);
}

void console_out_row(struct console_out *o, int ncols, const char *const *vals)
{
	size_t len = 4 + 2;
	for (int i = 0; i < ncols; i++)
		len += 4 + (vals[i] ? strlen(vals[i]) : 0);
	uint8_t type = 'D';
	console_out_raw(o, &type, 1);
	out_u32(o, (uint32_t)len);
	out_u16(o, (uint16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		if (!vals[i]) {
			out_u32(o, UINT32_MAX); /* -1: NULL */
			continue;
		}
		size_t n = strlen(vals[i]);
		out_u32(o, (uint32_t)n);
		console_out_raw(o, vals[i], n);
	}
}

void console_out_free(struct console_out *o)
{
	free(o->data);
	*o = (struct console_out){ 0 };
}

static void out_row_description(struct console_out *o, struct console_columns cols)
{
	size_t len = 4 + 2;
	for (int i = 0; i < cols.n; i++)
		len += strlen(cols.cols[i].name) + 1 + 4 + 2 + 4 + 2 + 4 + 2;
	uint8_t type = 'T';
	console_out_raw(o, &type, 1);
	out_u32(o, (uint32_t)len);
	out_u16(o, (uint16_t)cols.n);
	for (int i = 0; i < cols.n; i++) {
		console_out_raw(o, cols.cols[i].name, strlen(cols.cols[i].name) + 1);
		out_u32(o, 0);                   /* table oid */
		out_u16(o, 0);                   /* column number */
		out_u32(o, cols.cols[i].type_oid);
		out_u16(o, cols.cols[i].type_oid == CONSOLE_INT8 ? 8 : 0xffff); /* typlen */
		out_u32(o, UINT32_MAX);          /* typmod -1 */
		out_u16(o, 0);                   /* text */
	}
}

static void out_ready(struct console_session *cs)
{
	uint8_t idle = 'I';
	console_out_msg(&cs->out, 'Z', &idle, 1);
}

/* An ErrorResponse or NoticeResponse built with proto.c into a scratch buffer. */
static void out_error_or_notice(struct console_session *cs, bool error, const char *sqlstate, const char *text)
{
	char message[700];
	uint8_t scratch[1024];
	struct buf b = { .data = scratch, .cap = sizeof scratch };

	snprintf(message, sizeof message, "tusk %s: %s", cs->client->id, text);
	int rc = error ? proto_put_error(&b, "ERROR", sqlstate, message, NULL, NULL)
		       : proto_put_notice(&b, "NOTICE", sqlstate, message, NULL, NULL);
	if (rc == 0)
		console_out_raw(&cs->out, buf_head(&b), buf_len(&b));
	else
		cs->out.failed = true;
}

void console_error(struct console_session *cs, const char *sqlstate, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	log_info(cs->client->id, cs->client->ctx, "console: %s (%s)", text, sqlstate);
	out_error_or_notice(cs, true, sqlstate, text);
}

void console_notice(struct console_session *cs, const char *text)
{
	out_error_or_notice(cs, false, "00000", text);
}

void console_complete(struct console_session *cs, const char *tag)
{
	console_out_msg(&cs->out, 'C', tag, strlen(tag) + 1);
}

/* Move pending output into the wbuf and the socket. 0, or -1 when the client was closed
 * (c and cs are gone). */
static int flush_out(struct console_session *cs)
{
	struct client *c = cs->client;
	struct console_out *o = &cs->out;

	if (o->failed) {
		client_fail(c, "54000", "answer too large or out of memory");
		return -1;
	}
	for (;;) {
		if (o->start < o->len) {
			buf_compact(&c->wbuf);
			size_t n = o->len - o->start;
			if (n > buf_room(&c->wbuf))
				n = buf_room(&c->wbuf);
			if (n > 0 && buf_append(&c->wbuf, o->data + o->start, n) == 0)
				o->start += n;
		}
		size_t before = buf_len(&c->wbuf);
		if (client_write_wbuf(c) < 0) {
			client_close(c, "write to client failed");
			return -1;
		}
		if (o->start == o->len || buf_len(&c->wbuf) == before)
			break; /* all moved, or the socket is full: EV_WRITE brings us back */
	}
	if (o->start == o->len)
		o->start = o->len = 0;
	client_update_io(c);
	return 0;
}

/* ---- login ---- */

void console_startup(struct client *c)
{
	c->admin = true;
	if (client_auth_begin(c, c->worker->rt->cfg->admin.client_auth))
		console_begin(c);
}

static void process_input(struct console_session *cs);

void console_begin(struct client *c)
{
	const struct tusk_config *cfg = c->worker->rt->cfg;
	bool full = config_name_listed(cfg->admin.users, cfg->admin.nusers, c->user);
	bool stats = config_name_listed(cfg->admin.stats_users, cfg->admin.nstats_users, c->user);
	struct console_session *cs;
	uint32_t pid, key;

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
	if (RAND_bytes((unsigned char *)&pid, sizeof pid) != 1 || RAND_bytes((unsigned char *)&key, sizeof key) != 1) {
		free(cs);
		client_fail(c, "58000", "could not generate a cancel key");
		return;
	}
	cs->client = c;
	cs->full = full;
	ev_init(&cs->pause_timer, NULL); /* started by PAUSE; stopped at teardown either way */
	c->console = cs;
	log_info(c->id, c->ctx, "admin console login (%s)", full ? "admin.users" : "admin.stats_users");

	const char *app = session_param_get(&c->session, "application_name");
	const char *params[][2] = {
		{ "server_version", TUSK_VERSION "/tusk" },
		{ "server_encoding", "UTF8" },
		{ "client_encoding", "UTF8" },
		{ "DateStyle", "ISO" },
		{ "TimeZone", "UTC" },
		{ "integer_datetimes", "on" },
		{ "standard_conforming_strings", "on" },
		{ "is_superuser", "off" },
		{ "application_name", app ? app : "" },
	};
	uint8_t scratch[2048];
	struct buf b = { .data = scratch, .cap = sizeof scratch };
	bool ok = proto_put_auth_ok(&b) == 0;
	for (size_t i = 0; ok && i < sizeof params / sizeof params[0]; i++)
		ok = proto_put_parameter_status(&b, params[i][0], params[i][1]) == 0;
	ok = ok && proto_put_backend_key(&b, pid & 0x7fffffff, key) == 0;
	if (!ok) {
		client_fail(c, "54000", "startup reply too large");
		return;
	}
	console_out_raw(&cs->out, buf_head(&b), buf_len(&b));
	out_ready(cs);
	c->greeted = true;
	c->login_at = ev_now(c->worker->loop); /* the logout line's session length */
	client_set_state(c, CLIENT_IDLE);
	if (flush_out(cs) < 0)
		return;
	process_input(cs);
}

void console_client_closed(struct client *c)
{
	struct console_session *cs = c->console;
	if (!cs)
		return;
	c->console = NULL;
	console_cancel(cs);
	console_out_free(&cs->out);
	free(cs);
}

/* ---- requests ---- */

/* A NUL-terminated string at *off in body; NULL when there is none. */
static const char *read_str(const uint8_t *body, size_t len, size_t *off)
{
	const uint8_t *nul = *off < len ? memchr(body + *off, '\0', len - *off) : NULL;
	if (!nul)
		return NULL;
	const char *s = (const char *)body + *off;
	*off = (size_t)(nul - body) + 1;
	return s;
}

static bool read_u16(const uint8_t *body, size_t len, size_t *off, uint16_t *v)
{
	if (len - *off < 2)
		return false;
	*v = (uint16_t)(body[*off] << 8 | body[*off + 1]);
	*off += 2;
	return true;
}

static bool read_u32(const uint8_t *body, size_t len, size_t *off, uint32_t *v)
{
	if (len - *off < 4)
		return false;
	*v = (uint32_t)body[*off] << 24 | (uint32_t)body[*off + 1] << 16 | (uint32_t)body[*off + 2] << 8 |
	     body[*off + 3];
	*off += 4;
	return true;
}

static struct console_stmt *find_stmt(struct console_session *cs, const char *name)
{
	if (!*name)
		return &cs->stmts[0];
	for (int i = 1; i < CONSOLE_STATEMENTS; i++)
		if (cs->stmts[i].used && strcmp(cs->stmts[i].name, name) == 0)
			return &cs->stmts[i];
	return NULL;
}

/* Returns 1 when the command runs asynchronously (cs->busy set). */
static int run(struct console_session *cs, const struct console_cmd *cmd, bool simple)
{
	if (console_run(cs, cmd) == 1) {
		cs->busy = true;
		cs->busy_simple = simple;
		return 1;
	}
	return 0;
}

static void on_query(struct console_session *cs, const uint8_t *body, size_t len)
{
	size_t off = 0;
	const char *text = read_str(body, len, &off);
	struct console_cmd cmd;
	char err[200];

	cs->skipping = false;
	if (!text || off != len) {
		/* The text must end at the message's last byte: no unterminated string (the
		 * length below is strlen of it), no bytes after it. */
		console_error(cs, "08P01", "malformed Query message");
	} else if (console_parse(text, strlen(text), &cmd, err, sizeof err) < 0) {
		console_error(cs, "42601", "%s", err);
	} else if (cmd.kind == CONSOLE_CMD_EMPTY) {
		console_out_msg(&cs->out, 'I', NULL, 0);
	} else {
		struct console_columns cols = console_columns_of(cmd.kind);
		if (cols.n > 0)
			out_row_description(&cs->out, cols);
		if (run(cs, &cmd, true))
			return;
	}
	out_ready(cs);
}

static void on_parse(struct console_session *cs, const uint8_t *body, size_t len)
{
	size_t off = 0;
	const char *name = read_str(body, len, &off);
	const char *text = name ? read_str(body, len, &off) : NULL;
	uint16_t ntypes;
	struct console_stmt *st;
	char err[200];

	if (!text || !read_u16(body, len, &off, &ntypes)) {
		console_error(cs, "08P01", "malformed Parse message");
		cs->skipping = true;
		return;
	}
	if (strlen(name) >= CONSOLE_NAME_MAX) {
		console_error(cs, "42602", "statement name too long");
		cs->skipping = true;
		return;
	}
	st = find_stmt(cs, name);
	if (st && *name) {
		console_error(cs, "42P05", "prepared statement \"%s\" already exists", name);
		cs->skipping = true;
		return;
	}
	for (int i = 1; !st && i < CONSOLE_STATEMENTS; i++)
		if (!cs->stmts[i].used)
			st = &cs->stmts[i];
	if (!st) {
		console_error(cs, "53400", "too many prepared statements (the console keeps %d)", CONSOLE_STATEMENTS - 1);
		cs->skipping = true;
		return;
	}
	struct console_cmd cmd;
	if (console_parse(text, strlen(text), &cmd, err, sizeof err) < 0) {
		console_error(cs, "42601", "%s", err);
		cs->skipping = true;
		return;
	}
	snprintf(st->name, sizeof st->name, "%s", name);
	st->used = true;
	st->cmd = cmd;
	console_out_msg(&cs->out, '1', NULL, 0);
}

static void on_bind(struct console_session *cs, const uint8_t *body, size_t len)
{
	size_t off = 0;
	const char *portal = read_str(body, len, &off);
	const char *name = portal ? read_str(body, len, &off) : NULL;
	uint16_t n;
	struct console_stmt *st;

	if (!name || !read_u16(body, len, &off, &n))
		goto malformed;
	for (uint16_t i = 0; i < n; i++) {
		uint16_t f;
		if (!read_u16(body, len, &off, &f))
			goto malformed;
	}
	if (!read_u16(body, len, &off, &n))
		goto malformed;
	if (n > 0) {
		console_error(cs, "0A000", "console commands take no parameters");
		cs->skipping = true;
		return;
	}
	if (!read_u16(body, len, &off, &n))
		goto malformed;
	for (uint16_t i = 0; i < n; i++) {
		uint16_t f;
		if (!read_u16(body, len, &off, &f))
			goto malformed;
		if (f != 0) {
			console_error(cs, "0A000", "the admin console answers in text format only (binary results requested)");
			cs->skipping = true;
			return;
		}
	}
	if (*portal) {
		console_error(cs, "0A000", "named portals are not supported by the admin console");
		cs->skipping = true;
		return;
	}
	st = find_stmt(cs, name);
	if (!st || !st->used) {
		console_error(cs, "26000", "prepared statement \"%s\" does not exist", name);
		cs->skipping = true;
		return;
	}
	cs->portal = st->cmd;
	cs->portal_set = true;
	console_out_msg(&cs->out, '2', NULL, 0);
	return;
malformed:
	console_error(cs, "08P01", "malformed Bind message");
	cs->skipping = true;
}

static void describe(struct console_session *cs, const struct console_cmd *cmd, bool statement)
{
	struct console_columns cols = console_columns_of(cmd->kind);
	if (statement) {
		uint8_t none[2] = { 0, 0 }; /* no parameters */
		console_out_msg(&cs->out, 't', none, sizeof none);
	}
	if (cols.n > 0)
		out_row_description(&cs->out, cols);
	else
		console_out_msg(&cs->out, 'n', NULL, 0);
}

static void on_describe(struct console_session *cs, const uint8_t *body, size_t len)
{
	size_t off = 1;
	const char *name = len > 0 ? read_str(body, len, &off) : NULL;

	if (!name || (body[0] != 'S' && body[0] != 'P')) {
		console_error(cs, "08P01", "malformed Describe message");
		cs->skipping = true;
		return;
	}
	if (body[0] == 'S') {
		struct console_stmt *st = find_stmt(cs, name);
		if (!st || !st->used) {
			console_error(cs, "26000", "prepared statement \"%s\" does not exist", name);
			cs->skipping = true;
			return;
		}
		describe(cs, &st->cmd, true);
		return;
	}
	if (*name || !cs->portal_set) {
		console_error(cs, "34000", "portal \"%s\" does not exist", name);
		cs->skipping = true;
		return;
	}
	describe(cs, &cs->portal, false);
}

static void on_execute(struct console_session *cs, const uint8_t *body, size_t len)
{
	size_t off = 0;
	const char *name = read_str(body, len, &off);
	uint32_t max_rows;

	if (!name || !read_u32(body, len, &off, &max_rows)) {
		console_error(cs, "08P01", "malformed Execute message");
		cs->skipping = true;
		return;
	}
	if (*name || !cs->portal_set) {
		console_error(cs, "34000", "portal \"%s\" does not exist", name);
		cs->skipping = true;
		return;
	}
	/* A portal runs once: max_rows is not honoured (answers are small and complete). */
	cs->portal_set = false;
	if (cs->portal.kind == CONSOLE_CMD_EMPTY) {
		console_out_msg(&cs->out, 'I', NULL, 0);
		return;
	}
	(void)run(cs, &cs->portal, false);
}

static void on_close(struct console_session *cs, const uint8_t *body, size_t len)
{
	size_t off = 1;
	const char *name = len > 0 ? read_str(body, len, &off) : NULL;

	if (!name || (body[0] != 'S' && body[0] != 'P')) {
		console_error(cs, "08P01", "malformed Close message");
		cs->skipping = true;
		return;
	}
	if (body[0] == 'S') {
		struct console_stmt *st = find_stmt(cs, name);
		if (st)
			*st = (struct console_stmt){ 0 };
	} else if (!*name) {
		cs->portal_set = false;
	}
	console_out_msg(&cs->out, '3', NULL, 0);
}

/* One request. -1 when the client is gone. */
static int handle(struct console_session *cs, uint8_t type, const uint8_t *body, size_t len)
{
	struct client *c = cs->client;

	if (type == 'X') {
		client_close(c, "client terminated the session");
		return -1;
	}
	if (cs->skipping && type != 'S' && type != 'Q')
		return 0;
	switch (type) {
	case 'Q': on_query(cs, body, len); break;
	case 'P': on_parse(cs, body, len); break;
	case 'B': on_bind(cs, body, len); break;
	case 'D': on_describe(cs, body, len); break;
	case 'E': on_execute(cs, body, len); break;
	case 'C': on_close(cs, body, len); break;
	case 'H': break; /* Flush: everything is flushed anyway */
	case 'S':
		cs->skipping = false;
		out_ready(cs);
		break;
	case 'd':
	case 'c':
	case 'f':
		break; /* COPY messages outside a COPY: ignored, as PostgreSQL does */
	default:
		/* A request the console cannot serve, not a broken stream (the framing held):
		 * answered like any failed request, and the session goes on. */
		if (type == 'F')
			console_error(cs, "0A000", "function calls are not supported by the admin console");
		else
			console_error(cs, "08P01", "unexpected message type %u ('%c') on the admin console", type,
				      type >= 0x20 && type < 0x7f ? type : '?');
		out_ready(cs);
		break;
	}
	return 0;
}

static void process_input(struct console_session *cs)
{
	struct client *c = cs->client;
	uint32_t max = c->worker->rt->cfg->max_message_size;

	while (!cs->busy && cs->out.len - cs->out.start < CONSOLE_OUT_HIGH) {
		struct proto_hdr h;
		ssize_t n = proto_read_hdr(buf_head(&c->rbuf), buf_len(&c->rbuf), max, &h);
		if (n == PROTO_ETOOLONG) {
			const uint8_t *p = buf_head(&c->rbuf);
			client_fail(c, "54000", "message of %llu bytes exceeds max_message_size (%u)",
				    (unsigned long long)((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]) + 1,
				    max);
			return;
		}
		if (n < 0) {
			client_fail(c, "08P01", "invalid message from client: %s", proto_strerror((int)n));
			return;
		}
		if (n == 0)
			break;
		size_t total = (size_t)h.len + 1;
		if (total > c->rbuf.cap) {
			client_fail(c, "08P01", "message of %zu bytes is too long for the admin console", total);
			return;
		}
		if (buf_len(&c->rbuf) < total) {
			buf_compact(&c->rbuf);
			break;
		}
		/* Consumed first; the bytes stay in place until the next read. */
		const uint8_t *body = buf_head(&c->rbuf) + PROTO_HDR_LEN;
		buf_consume(&c->rbuf, total);
		if (handle(cs, h.type, body, total - PROTO_HDR_LEN) < 0)
			return;
	}
	(void)flush_out(cs);
}

void console_input(struct client *c)
{
	if (c->console)
		process_input(c->console);
}

void console_writable(struct client *c)
{
	struct console_session *cs = c->console;
	if (!cs || flush_out(cs) < 0)
		return;
	if (!buf_empty(&c->rbuf))
		process_input(cs);
}

void console_command_done(struct console_session *cs)
{
	/* Killed by its own command (KILL_CLIENT of itself): its error is already out. */
	if (cs->client->state == CLIENT_CLOSING)
		return;
	cs->busy = false;
	if (cs->busy_simple)
		out_ready(cs);
	process_input(cs);
}
