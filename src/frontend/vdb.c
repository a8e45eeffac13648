/* The part of a virtual database (vdb.h) that does not depend on what it answers: output
 * buffer and reply builders, greeting, framing, dispatch by message type and flushing. Its
 * owners (console/console.c, kv/front.c) answer the requests. */
#include "frontend/vdb.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "frontend/client_int.h"
#include "frontend/client_kind.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/grow.h"
#include "worker/worker.h"

/* ---- output ---- */

static bool out_reserve(struct vdb_out *o, size_t n)
{
	if (o->failed)
		return false;
	if (o->start == o->len)
		o->start = o->len = 0;
	if (o->len + n <= o->cap)
		return true;
	if (o->len - o->start + n > VDB_OUT_MAX) {
		o->failed = true;
		return false;
	}
	if (o->start > 0) {
		memmove(o->data, o->data + o->start, o->len - o->start);
		o->len -= o->start;
		o->start = 0;
	}
	uint8_t *d = grow_bytes(o->data, &o->cap, o->len + n, 8192);
	if (!d) {
		o->failed = true;
		return false;
	}
	o->data = d;
	return true;
}

void vdb_out_raw(struct vdb_out *o, const void *p, size_t n)
{
	if (n == 0 || !out_reserve(o, n))
		return;
	memcpy(o->data + o->len, p, n);
	o->len += n;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
	uint16_t be = htons(v);
	memcpy(p, &be, 2);
	return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
	uint32_t be = htonl(v);
	memcpy(p, &be, 4);
	return p + 4;
}

static void out_u16(struct vdb_out *o, uint16_t v)
{
	uint8_t b[2];
	put_u16(b, v);
	vdb_out_raw(o, b, sizeof b);
}

static void out_u32(struct vdb_out *o, uint32_t v)
{
	uint8_t b[4];
	put_u32(b, v);
	vdb_out_raw(o, b, sizeof b);
}

void vdb_out_msg(struct vdb_out *o, uint8_t type, const void *body, size_t n)
{
	vdb_out_raw(o, &type, 1);
	out_u32(o, (uint32_t)(n + 4));
	vdb_out_raw(o, body, n);
}

/* Whether column i of o's rows is an int8 sent in binary, and then its value v of text t. */
static bool binary_int8(const struct vdb_out *o, int i, const char *t, long long *v)
{
	if (i >= 64 || !((o->row_binary >> i) & 1) || o->row_cols[i].type_oid != VDB_OID_INT8)
		return false;
	char *end;
	errno = 0;
	*v = strtoll(t, &end, 10);
	return !errno && *t && !*end; /* (else sent as its text: every int8 column holds a number) */
}

void vdb_out_row(struct vdb_out *o, int ncols, const char *const *vals)
{
	long long v;
	size_t len = 4 + 2;
	for (int i = 0; i < ncols; i++)
		len += 4 + (!vals[i] ? 0 : binary_int8(o, i, vals[i], &v) ? 8 : strlen(vals[i]));
	uint8_t type = 'D';
	vdb_out_raw(o, &type, 1);
	out_u32(o, (uint32_t)len);
	out_u16(o, (uint16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		if (!vals[i]) {
			out_u32(o, UINT32_MAX); /* -1: NULL */
			continue;
		}
		if (binary_int8(o, i, vals[i], &v)) {
			out_u32(o, 8);
			out_u32(o, (uint32_t)((unsigned long long)v >> 32));
			out_u32(o, (uint32_t)v);
			continue;
		}
		size_t n = strlen(vals[i]);
		out_u32(o, (uint32_t)n);
		vdb_out_raw(o, vals[i], n);
	}
}

bool vdb_result_formats(struct vdb *v, const uint8_t *codes, uint16_t nres, int ncols, uint64_t *binary)
{
	struct proto_reader r;
	*binary = 0;
	if (nres > 1 && nres != ncols) {
		vdb_error_skip(v, "08P01", "bind message has %u result formats but query has %d columns", nres, ncols);
		return false;
	}
	proto_reader_init(&r, codes, (size_t)nres * 2);
	for (uint16_t i = 0; i < nres; i++) {
		uint16_t f = proto_get_u16(&r);
		if (f > 1) {
			vdb_error_skip(v, "22023", "unsupported format code: %u", f);
			return false;
		}
		if (f && ncols > 64) {
			vdb_error_skip(v, "0A000", "binary results of more than 64 columns are not supported");
			return false;
		}
		if (f)
			*binary |= nres == 1 ? (ncols == 64 ? UINT64_MAX : (UINT64_C(1) << ncols) - 1) : UINT64_C(1) << i;
	}
	return true;
}

void vdb_out_row_description(struct vdb_out *o, const struct vdb_col *cols, int n)
{
	/* composed in one piece: one reserve and one copy (it is written for every kv call) */
	size_t len = 4 + 2;
	for (int i = 0; i < n; i++)
		len += strlen(cols[i].name) + 1 + 4 + 2 + 4 + 2 + 4 + 2;
	if (!out_reserve(o, 1 + len))
		return;
	uint8_t *p = o->data + o->len;
	*p++ = 'T';
	p = put_u32(p, (uint32_t)len);
	p = put_u16(p, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		size_t nl = strlen(cols[i].name) + 1;
		memcpy(p, cols[i].name, nl);
		p += nl;
		p = put_u32(p, 0);                                             /* table oid */
		p = put_u16(p, 0);                                             /* column number */
		p = put_u32(p, cols[i].type_oid);
		uint32_t t = cols[i].type_oid;
		p = put_u16(p, t == VDB_OID_INT8 ? 8 : t == VDB_OID_INT4 ? 4 : t == VDB_OID_BOOL ? 1 : 0xffff); /* typlen */
		p = put_u32(p, UINT32_MAX); /* typmod -1 */
		p = put_u16(p, cols[i].format);
	}
	o->len += 1 + len;
}

void vdb_out_free(struct vdb_out *o)
{
	free(o->data);
	*o = (struct vdb_out){ 0 };
}

void vdb_ready(struct vdb *v)
{
	uint8_t status = v->txn_status ? v->txn_status : 'I';
	if (v->ops->before_ready)
		v->ops->before_ready(v);
	vdb_out_msg(&v->out, 'Z', &status, 1);
	v->out_ready = true;
}

void vdb_complete(struct vdb *v, const char *tag)
{
	vdb_out_msg(&v->out, 'C', tag, strlen(tag) + 1);
}

void vdb_complete_select(struct vdb *v, uint64_t nrows)
{
	char tag[32] = "SELECT ", digits[20];
	size_t n = 7, nd = 0;
	do
		digits[nd++] = (char)('0' + nrows % 10);
	while ((nrows /= 10) > 0);
	while (nd > 0)
		tag[n++] = digits[--nd];
	tag[n++] = '\0';
	vdb_out_msg(&v->out, 'C', tag, n);
}

void vdb_out_error(struct vdb *v, bool error, bool ours, const char *sqlstate, const char *text,
		   const char *detail, const char *hint)
{
	char message[700];
	uint8_t scratch[2048];
	struct buf b = { .data = scratch, .cap = sizeof scratch };

	if (ours)
		snprintf(message, sizeof message, "tusk %s: %s", v->client->id, text);
	else
		snprintf(message, sizeof message, "%s", text);
	detail = detail && *detail ? detail : NULL;
	hint = hint && *hint ? hint : NULL;
	if (error && v->txn_status == 'T')
		v->txn_status = 'E';
	if (error)
		v->nerrors++;
	int rc = error ? proto_put_error(&b, "ERROR", sqlstate, message, detail, hint)
		       : proto_put_notice(&b, "NOTICE", sqlstate, message, detail, hint);
	if (rc == 0)
		vdb_out_raw(&v->out, buf_head(&b), buf_len(&b));
	else
		v->out.failed = true;
}

void vdb_out_warning(struct vdb *v, const char *sqlstate, const char *text)
{
	uint8_t scratch[1024];
	struct buf b = { .data = scratch, .cap = sizeof scratch };

	if (proto_put_notice(&b, "WARNING", sqlstate, text, NULL, NULL) == 0)
		vdb_out_raw(&v->out, buf_head(&b), buf_len(&b));
	else
		v->out.failed = true;
}

__attribute__((format(printf, 3, 0)))
static void verror(struct vdb *v, const char *sqlstate, const char *fmt, va_list ap)
{
	char text[600];

	vsnprintf(text, sizeof text, fmt, ap);
	log_at(v->ops->error_log_level, v->client->id, v->client->ctx, "%s: %s (%s)", v->ops->log_tag, text,
	       sqlstate);
	vdb_out_error(v, true, true, sqlstate, text, NULL, NULL);
}

void vdb_error(struct vdb *v, const char *sqlstate, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(v, sqlstate, fmt, ap);
	va_end(ap);
}

void vdb_error_skip(struct vdb *v, const char *sqlstate, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(v, sqlstate, fmt, ap);
	va_end(ap);
	v->skipping = true;
}

/* Move pending output into the wbuf and the socket. 0, or -1 when the client was closed. */
static int flush_out(struct vdb *v)
{
	struct client *c = v->client;
	struct vdb_out *o = &v->out;

	if (o->failed) {
		client_fail(c, "54000", "%s", v->ops->out_failed);
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
	if (o->start == o->len) {
		o->start = o->len = 0;
		v->out_ready = false;
	}
	client_update_io(c);
	return 0;
}

/* ---- session ---- */

void vdb_init(struct vdb *v, struct client *c, const struct vdb_ops *ops)
{
	*v = (struct vdb){ .client = c, .ops = ops };
	c->vdb = v;
}

void vdb_free(struct vdb *v)
{
	vdb_out_free(&v->out);
	free(v->big);
	v->big = NULL;
}

void vdb_greet(struct vdb *v, const char *server_version, const char *datestyle, bool default_read_only)
{
	struct client *c = v->client;
	uint32_t pid, key;

	if (c->kind->cancel) {
		/* its CancelRequests come to its kind (the kv database's: its call in flight) */
		if (client_mint_cancel_key(c) < 0)
			return;
		pid = c->cancel_pid;
		key = c->cancel_key;
	} else if (RAND_bytes((unsigned char *)&pid, sizeof pid) != 1 ||
		   RAND_bytes((unsigned char *)&key, sizeof key) != 1) {
		client_fail(c, "58000", "could not generate a cancel key");
		return;
	}
	const char *app = session_param_get(&c->session, "application_name");
	const char *params[][2] = {
		{ "server_version", server_version },
		{ "server_encoding", "UTF8" },
		{ "client_encoding", "UTF8" },
		{ "DateStyle", datestyle },
		{ "default_transaction_read_only", default_read_only ? "on" : "off" },
		{ "in_hot_standby", "off" },
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
	vdb_out_raw(&v->out, buf_head(&b), buf_len(&b));
	vdb_ready(v);
	c->greeted = true;
	c->login_at = ev_now(c->worker->loop); /* the logout line's session length */
	client_set_state(c, CLIENT_IDLE);
	if (flush_out(v) < 0)
		return;
	vdb_input(v);
}

/* ---- requests ---- */

static void on_query(struct vdb *v, const uint8_t *body, size_t len)
{
	struct proto_reader r;

	proto_reader_init(&r, body, len);
	const char *text = proto_get_cstr(&r);
	v->skipping = false;
	if (!text || proto_remaining(&r) != 0) {
		/* The text must end at the message's last byte: no unterminated string (owners
		 * take strlen of it), no bytes after it. */
		vdb_error(v, "08P01", "malformed Query message");
	} else if (v->ops->query(v, text)) {
		return;
	}
	vdb_ready(v);
}

const char *vdb_name(const char *name, char out[VDB_NAME_MAX])
{
	size_t n = strnlen(name, VDB_NAME_MAX);
	if (n < VDB_NAME_MAX)
		return name;
	memcpy(out, name, VDB_NAME_MAX - 1);
	out[VDB_NAME_MAX - 1] = '\0';
	return out;
}

static void on_parse(struct vdb *v, const uint8_t *body, size_t len)
{
	struct proto_reader r;

	proto_reader_init(&r, body, len);
	const char *name = proto_get_cstr(&r);
	const char *text = proto_get_cstr(&r);
	uint16_t ntypes = proto_get_u16(&r);
	const uint8_t *types = proto_get_bytes(&r, (size_t)ntypes * 4);
	if (r.err || proto_remaining(&r) != 0) {
		vdb_error_skip(v, "08P01", "malformed Parse message");
		return;
	}
	char cut[VDB_NAME_MAX];
	v->ops->parse(v, vdb_name(name, cut), text, ntypes, types);
}

/* Describe and Close: a kind ('S' statement, 'P' portal) and a name. */
static bool read_target(struct vdb *v, const uint8_t *body, size_t len, const char *what, uint8_t *kind,
			const char **name)
{
	struct proto_reader r;

	proto_reader_init(&r, body, len);
	*kind = proto_get_u8(&r);
	*name = proto_get_cstr(&r);
	if (r.err || (*kind != 'S' && *kind != 'P')) {
		vdb_error_skip(v, "08P01", "malformed %s message", what);
		return false;
	}
	return true;
}

void vdb_bind_portal(struct vdb *v, const char *name)
{
	char cut[VDB_NAME_MAX];
	snprintf(v->portal_name, sizeof v->portal_name, "%s", vdb_name(name, cut));
	v->portal_set = true;
}

/* The portal of that name is the bound one, or the owner's find_portal made it so. */
static bool portal_found(struct vdb *v, const char *cut)
{
	if (v->portal_set && strcmp(cut, v->portal_name) == 0)
		return true;
	return *cut && v->ops->find_portal && v->ops->find_portal(v, cut);
}

/* The portal exists (portal_found), else 34000. */
static bool portal_exists(struct vdb *v, const char *name)
{
	char cut[VDB_NAME_MAX];
	if (!portal_found(v, vdb_name(name, cut))) {
		vdb_error_skip(v, "34000", "portal \"%s\" does not exist", name);
		return false;
	}
	return true;
}

static void on_describe(struct vdb *v, const uint8_t *body, size_t len)
{
	uint8_t kind;
	const char *name;

	if (!read_target(v, body, len, "Describe", &kind, &name))
		return;
	char cut[VDB_NAME_MAX];
	if (kind == 'S')
		v->ops->describe_statement(v, vdb_name(name, cut));
	else if (portal_found(v, vdb_name(name, cut)))
		v->ops->describe_portal(v);
	else if (!v->ops->describe_cursor || !v->ops->describe_cursor(v, vdb_name(name, cut)))
		(void)portal_exists(v, name); /* 34000 */
}

static void on_execute(struct vdb *v, const uint8_t *body, size_t len)
{
	struct proto_reader r;

	proto_reader_init(&r, body, len);
	const char *name = proto_get_cstr(&r);
	uint32_t max_rows = proto_get_u32(&r);
	if (r.err) {
		vdb_error_skip(v, "08P01", "malformed Execute message");
		return;
	}
	if (!portal_exists(v, name))
		return;
	v->portal_set = false;
	v->ops->execute(v, max_rows);
}

static void on_close(struct vdb *v, const uint8_t *body, size_t len)
{
	uint8_t kind;
	const char *name;

	if (!read_target(v, body, len, "Close", &kind, &name))
		return;
	char cut[VDB_NAME_MAX];
	if (kind == 'S')
		v->ops->close_statement(v, vdb_name(name, cut));
	else if (portal_found(v, vdb_name(name, cut)))
		v->portal_set = false;
	vdb_out_msg(&v->out, '3', NULL, 0);
}

/* One request. -1 when the client is gone. */
static int handle(struct vdb *v, uint8_t type, const uint8_t *body, size_t len)
{
	const struct vdb_ops *ops = v->ops;

	if (type == 'X') {
		client_close(v->client, "client terminated the session");
		return -1;
	}
	if (v->skipping && type != 'S' && type != 'Q')
		return 0;
	switch (type) {
	case 'Q': on_query(v, body, len); break;
	case 'P': on_parse(v, body, len); break;
	case 'B': ops->bind(v, body, len); break;
	case 'D': on_describe(v, body, len); break;
	case 'E': on_execute(v, body, len); break;
	case 'C': on_close(v, body, len); break;
	case 'H': break; /* Flush: everything is flushed anyway */
	case 'S':
		v->skipping = false;
		vdb_ready(v);
		break;
	case 'd':
	case 'c':
	case 'f':
		break; /* COPY messages outside a COPY: ignored, as PostgreSQL does */
	default:
		/* A request the database cannot serve, not a broken stream (the framing held):
		 * answered like any failed request, and the session goes on. */
		if (type == 'F')
			vdb_error(v, "0A000", "%s", ops->fastpath);
		else
			vdb_error(v, "08P01", "unexpected message type %u ('%c') on %s", type,
				  type >= 0x20 && type < 0x7f ? type : '?', ops->name);
		vdb_ready(v);
		break;
	}
	return 0;
}

/* Collect more of a message longer than rbuf. 1 when it is whole (and was handled), 0 when
 * more is needed, -1 when the client is gone. */
static int collect_long(struct vdb *v)
{
	struct client *c = v->client;
	size_t n = buf_len(&c->rbuf);

	if (n > v->big_need - v->big_len)
		n = v->big_need - v->big_len;
	memcpy(v->big + v->big_len, buf_head(&c->rbuf), n);
	buf_consume(&c->rbuf, n);
	v->big_len += n;
	if (v->big_len < v->big_need) {
		buf_compact(&c->rbuf);
		return 0;
	}
	uint8_t *big = v->big;
	v->big = NULL;
	int rc = handle(v, big[0], big + PROTO_HDR_LEN, v->big_need - PROTO_HDR_LEN);
	free(big);
	return rc < 0 ? -1 : 1;
}

void vdb_input(struct vdb *v)
{
	struct client *c = v->client;
	uint32_t max = c->worker->rt->cfg->max_message_size;

	while (!v->busy && v->out.len - v->out.start < VDB_OUT_HIGH) {
		if (v->big) {
			int rc = collect_long(v);
			if (rc < 0)
				return;
			if (rc == 0)
				break;
			continue;
		}
		struct proto_hdr h;
		ssize_t n = proto_read_hdr(buf_head(&c->rbuf), buf_len(&c->rbuf), max, &h);
		if (n == PROTO_ETOOLONG) {
			client_fail(c, "54000", "message of %llu bytes exceeds max_message_size (%u)",
				    (unsigned long long)h.len + 1, max);
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
			if (!v->ops->collect_long) {
				client_fail(c, "08P01", "message of %zu bytes is too long for %s", total, v->ops->name);
				return;
			}
			v->big = malloc(total);
			if (!v->big) {
				client_fail(c, "53200", "out of memory");
				return;
			}
			v->big_len = 0;
			v->big_need = total;
			continue;
		}
		if (buf_len(&c->rbuf) < total) {
			buf_compact(&c->rbuf);
			break;
		}
		/* Consumed first; the bytes stay in place until the next read. */
		const uint8_t *body = buf_head(&c->rbuf) + PROTO_HDR_LEN;
		buf_consume(&c->rbuf, total);
		if (handle(v, h.type, body, total - PROTO_HDR_LEN) < 0)
			return;
	}
	/* A request answered later (busy) keeps what it has answered so far (BindComplete, a
	 * RowDescription) until its answer is appended, as PostgreSQL sends nothing before the
	 * Sync: one write to the client per call instead of two, so the client wakes once (docs/kv.md,
	 * "Speed": a kv get's extra wake-up). Whole answers of earlier requests go now. */
	if (!v->busy || v->out_ready)
		(void)flush_out(v);
}

void vdb_writable(struct vdb *v)
{
	if (flush_out(v) < 0)
		return;
	if (!buf_empty(&v->client->rbuf))
		vdb_input(v);
}

void vdb_client_input(struct client *c)
{
	if (c->vdb) /* else its session did not start: it is closing */
		vdb_input(c->vdb);
}

bool vdb_client_writable(struct client *c)
{
	client_update_io(c);
	if (!buf_empty(&c->wbuf))
		return false;
	if (c->vdb)
		vdb_writable(c->vdb); /* may close c */
	return true;
}
