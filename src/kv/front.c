/* The wire side of the virtual kv database (front.h): the greeting, the simple and extended
 * query protocols for the calls of the kv API, binding parameters into a routed call, and the
 * output buffer that lets an answer (get_many) be longer than the client's wbuf. A kv client
 * is a frontend client in CLIENT_IDLE with c->kv set; it never claims a pooled server. At
 * most one call per client is in flight: input waits until the router answers. */
#include "kv/front.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "config/config.h"
#include "frontend/client_int.h"
#include "kv/call.h"
#include "kv/router.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

#define KV_FRONT_STATEMENTS 32           /* named prepared statements per client, plus the unnamed */
#define KV_FRONT_NAME_MAX 64
#define KV_FRONT_OUT_HIGH (256u << 10)   /* stop reading calls while this much is unsent */
#define KV_FRONT_OUT_MAX (64u << 20)     /* a get_many answer larger than this fails */
#define NO_VALUE SIZE_MAX

struct kv_out {
	uint8_t *data;
	size_t start, len, cap;
	bool failed;
};

struct kv_stmt {
	bool used;
	char name[KV_FRONT_NAME_MAX];
	struct kv_call call;
	int ntypes;
	uint32_t types[KV_CALL_MAX_PARAMS];
};

/* A value of a Bind message. */
struct kv_bind_val {
	const uint8_t *p; /* NULL: SQL NULL */
	uint32_t len;
	bool binary;
};

struct kv_session {
	struct client *client;       /* NULL once the client is gone (orphan) */
	struct worker *worker;
	struct kv_stmt stmts[KV_FRONT_STATEMENTS]; /* [0]: the unnamed statement */
	struct kv_call query;        /* the call of the last simple Query */
	bool portal_set;             /* the unnamed portal: its call and bound values below */
	int portal_stmt;
	bool skipping;               /* after an error in the extended protocol: until Sync */
	bool busy;                   /* a call is with the router */
	bool busy_simple;            /* ... from a simple Query: RowDescription and ReadyForQuery to add */
	const struct kv_call *busy_call;
	struct kv_job job;           /* the call in flight; its strings point into vals */
	struct worker_msg *msg;      /* reserved at submit: the answer's way back to the worker */
	char *vals;                  /* the bound texts, NUL-terminated */
	size_t vals_len, vals_cap;
	size_t off_ns, off_key, off_value, off_ttl;
	size_t *key_offs;            /* get_many */
	const char **keys;
	int nkeys, keys_cap;
	struct kv_out out;
	uint8_t *big;                /* a message larger than rbuf, collected as it streams */
	size_t big_len, big_need;
};

bool kv_front_is_db(const struct tusk_config *cfg, const char *database)
{
	return cfg->kv.zone && strcmp(database, KV_FRONT_DATABASE) == 0;
}

/* ---- output ---- */

static bool out_reserve(struct kv_out *o, size_t n)
{
	if (o->failed)
		return false;
	if (o->start == o->len)
		o->start = o->len = 0;
	if (o->len + n <= o->cap)
		return true;
	if (o->len - o->start + n > KV_FRONT_OUT_MAX) {
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

static void out_raw(struct kv_out *o, const void *p, size_t n)
{
	if (n == 0 || !out_reserve(o, n))
		return;
	memcpy(o->data + o->len, p, n);
	o->len += n;
}

static void out_u16(struct kv_out *o, uint16_t v)
{
	uint16_t be = htons(v);
	out_raw(o, &be, 2);
}

static void out_u32(struct kv_out *o, uint32_t v)
{
	uint32_t be = htonl(v);
	out_raw(o, &be, 4);
}

static void out_msg(struct kv_out *o, uint8_t type, const void *body, size_t n)
{
	out_raw(o, &type, 1);
	out_u32(o, (uint32_t)(n + 4));
	out_raw(o, body, n);
}

static void out_ready(struct kv_session *ks)
{
	uint8_t idle = 'I';
	out_msg(&ks->out, 'Z', &idle, 1);
}

/* An error, tusk's own (its text named for the client, "tusk <id>: ...") or a shard's. */
static void out_error_fields(struct kv_session *ks, bool ours, const char *sqlstate, const char *text,
			     const char *detail, const char *hint)
{
	char message[700];
	uint8_t scratch[2048];
	struct buf b = { .data = scratch, .cap = sizeof scratch };

	if (ours)
		snprintf(message, sizeof message, "tusk %s: %s", ks->client->id, text);
	else
		snprintf(message, sizeof message, "%s", text);
	if (proto_put_error(&b, "ERROR", sqlstate, message, detail && *detail ? detail : NULL,
			    hint && *hint ? hint : NULL) == 0)
		out_raw(&ks->out, buf_head(&b), buf_len(&b));
	else
		ks->out.failed = true;
}

__attribute__((format(printf, 3, 4)))
static void kv_error(struct kv_session *ks, const char *sqlstate, const char *fmt, ...)
{
	char text[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	log_debug(ks->client->id, ks->client->ctx, "kv: %s (%s)", text, sqlstate);
	out_error_fields(ks, true, sqlstate, text, NULL, NULL);
}

static void out_row_description(struct kv_session *ks, const struct kv_call *call)
{
	struct col {
		const char *name;
		uint32_t oid;
	} cols[2];
	int n = 0;

	if (call->from) {
		cols[n++] = (struct col){ "key", KV_OID_TEXT };
		cols[n++] = (struct col){ "value", KV_OID_JSONB };
	} else {
		cols[n++] = (struct col){ call->column, kv_call_result_type(call->op) };
	}
	size_t len = 4 + 2;
	for (int i = 0; i < n; i++)
		len += strlen(cols[i].name) + 1 + 4 + 2 + 4 + 2 + 4 + 2;
	uint8_t type = 'T';
	out_raw(&ks->out, &type, 1);
	out_u32(&ks->out, (uint32_t)len);
	out_u16(&ks->out, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		out_raw(&ks->out, cols[i].name, strlen(cols[i].name) + 1);
		out_u32(&ks->out, 0);                                      /* table oid */
		out_u16(&ks->out, 0);                                      /* column number */
		out_u32(&ks->out, cols[i].oid);
		out_u16(&ks->out, cols[i].oid == KV_OID_INT8 ? 8 : 0xffff); /* typlen */
		out_u32(&ks->out, UINT32_MAX);                             /* typmod -1 */
		out_u16(&ks->out, 0);                                      /* text */
	}
}

/* Move pending output into the wbuf and the socket. 0, or -1 when the client was closed. */
static int flush_out(struct kv_session *ks)
{
	struct client *c = ks->client;
	struct kv_out *o = &ks->out;

	if (o->failed) {
		client_fail(c, "54000", "kv answer too large or out of memory");
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

static void kv_session_free(struct kv_session *ks)
{
	for (int i = 0; i < KV_FRONT_STATEMENTS; i++)
		kv_call_free(&ks->stmts[i].call);
	kv_call_free(&ks->query);
	kv_job_free(&ks->job);
	free(ks->vals);
	free(ks->key_offs);
	free(ks->keys);
	free(ks->out.data);
	free(ks->big);
	free(ks);
}

void kv_front_startup(struct client *c)
{
	const struct tusk_config *cfg = c->worker->rt->cfg;
	const struct config_pool_rule *rule = config_match_pool(cfg, c->database, c->user);

	/* Authentication as for any database: the hba_file line, else the matching rule's. */
	if (!rule) {
		client_fail(c, "28000", "no pool rule matches database \"%s\" and user \"%s\"", c->database, c->user);
		return;
	}
	if (rule->blocked) {
		client_fail(c, "28000", "user \"%s\" is blocked for database \"%s\"", c->user, c->database);
		return;
	}
	struct kv_session *ks = calloc(1, sizeof *ks);
	if (!ks) {
		client_fail(c, "53200", "out of memory");
		return;
	}
	ks->client = c;
	ks->worker = c->worker;
	c->kv = ks;
	if (client_auth_begin(c, rule->client_auth))
		kv_front_begin(c);
}

static void process_input(struct kv_session *ks);

void kv_front_begin(struct client *c)
{
	struct kv_session *ks = c->kv;
	uint32_t pid, key;

	if (RAND_bytes((unsigned char *)&pid, sizeof pid) != 1 || RAND_bytes((unsigned char *)&key, sizeof key) != 1) {
		client_fail(c, "58000", "could not generate a cancel key");
		return;
	}
	log_info(c->id, c->ctx, "kv login");
	const char *app = session_param_get(&c->session, "application_name");
	const char *params[][2] = {
		{ "server_version", "15.0 (tusk " TUSK_VERSION " kv)" },
		{ "server_encoding", "UTF8" },
		{ "client_encoding", "UTF8" },
		{ "DateStyle", "ISO, MDY" },
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
	out_raw(&ks->out, buf_head(&b), buf_len(&b));
	out_ready(ks);
	c->greeted = true;
	c->login_at = ev_now(c->worker->loop);
	client_set_state(c, CLIENT_IDLE);
	if (flush_out(ks) < 0)
		return;
	process_input(ks);
}

void kv_front_closed(struct client *c)
{
	struct kv_session *ks = c->kv;
	if (!ks)
		return;
	c->kv = NULL;
	if (ks->busy) {
		ks->client = NULL; /* freed when the router's answer arrives */
		return;
	}
	kv_session_free(ks);
}

/* ---- binding ---- */

/* Append s[0, n) and a NUL to vals; its offset, or NO_VALUE on failure (ks->out failed or an
 * error was written). */
static size_t add_val(struct kv_session *ks, const char *s, size_t n)
{
	if (memchr(s, '\0', n)) {
		kv_error(ks, "22021", "invalid byte sequence for encoding \"UTF8\": 0x00");
		return NO_VALUE;
	}
	if (ks->vals_len + n + 1 > ks->vals_cap) {
		size_t cap = ks->vals_cap ? ks->vals_cap : 1024;
		while (cap < ks->vals_len + n + 1)
			cap *= 2;
		char *v = realloc(ks->vals, cap);
		if (!v) {
			kv_error(ks, "53200", "out of memory");
			return NO_VALUE;
		}
		ks->vals = v;
		ks->vals_cap = cap;
	}
	memcpy(ks->vals + ks->vals_len, s, n);
	ks->vals[ks->vals_len + n] = '\0';
	size_t off = ks->vals_len;
	ks->vals_len += n + 1;
	return off;
}

/* The declared type of $n: from Parse, else from where the call uses it. */
static uint32_t param_type(const struct kv_stmt *st, const struct kv_call *call, int n)
{
	if (st && n <= st->ntypes && st->types[n - 1] != 0)
		return st->types[n - 1];
	for (int i = 0; i < call->nargs; i++) {
		const struct kv_arg *a = &call->args[i];
		if (a->kind == KV_ARG_PARAM && a->param == n)
			return kv_call_arg_type(call->op, i);
		if (a->kind == KV_ARG_ARRAY)
			for (uint32_t e = 0; e < a->n; e++)
				if (call->elems[a->first + e].kind == KV_ARG_PARAM && call->elems[a->first + e].param == n)
					return KV_OID_TEXT;
	}
	return KV_OID_TEXT;
}

/* A scalar argument as text: 1 with *off set (NO_VALUE: SQL NULL), or 0 after an error. */
static int bind_scalar(struct kv_session *ks, const struct kv_stmt *st, const struct kv_call *call,
		       const struct kv_arg *a, const struct kv_bind_val *vals, size_t *off)
{
	if (a->kind == KV_ARG_NULL) {
		*off = NO_VALUE;
		return 1;
	}
	if (a->kind == KV_ARG_CONST) {
		*off = add_val(ks, call->text + a->off, a->len);
		return *off != NO_VALUE;
	}
	const struct kv_bind_val *v = &vals[a->param - 1];
	if (!v->p) {
		*off = NO_VALUE;
		return 1;
	}
	if (!v->binary) {
		*off = add_val(ks, (const char *)v->p, v->len);
		return *off != NO_VALUE;
	}
	uint32_t oid = param_type(st, call, a->param);
	char *tmp = malloc((size_t)v->len + 64);
	if (!tmp) {
		kv_error(ks, "53200", "out of memory");
		return 0;
	}
	long n = kv_binary_scalar_text(oid, v->p, v->len, tmp, (size_t)v->len + 64);
	if (n < 0) {
		free(tmp);
		kv_error(ks, "22P03", "kv: parameter $%d: unsupported or malformed binary value of type %u "
				      "(send text, or binary text, jsonb, interval or text[])", a->param, oid);
		return 0;
	}
	*off = add_val(ks, tmp, (size_t)n);
	free(tmp);
	return *off != NO_VALUE;
}

/* One more key of get_many, stored at off in vals. */
static bool push_key(struct kv_session *ks, size_t off)
{
	if (ks->nkeys >= KV_CALL_MAX_KEYS) {
		kv_error(ks, "54000", "kv: get_many takes at most %d keys", KV_CALL_MAX_KEYS);
		return false;
	}
	if (ks->nkeys == ks->keys_cap) {
		int cap = ks->keys_cap ? ks->keys_cap * 2 : 64;
		size_t *o = realloc(ks->key_offs, (size_t)cap * sizeof *o);
		if (o)
			ks->key_offs = o;
		const char **k = o ? realloc(ks->keys, (size_t)cap * sizeof *k) : NULL;
		if (!k) {
			kv_error(ks, "53200", "out of memory");
			return false;
		}
		ks->keys = k;
		ks->keys_cap = cap;
	}
	ks->key_offs[ks->nkeys++] = off;
	return true;
}

static bool add_key(struct kv_session *ks, const char *p, size_t len)
{
	if (!p) {
		kv_error(ks, "22004", "kv: namespace and key must not be NULL");
		return false;
	}
	size_t off = add_val(ks, p, len);
	return off != NO_VALUE && push_key(ks, off);
}

/* get_many's keys: ARRAY[...], a text[] constant or a text[] parameter. */
static bool bind_keys(struct kv_session *ks, const struct kv_stmt *st, const struct kv_call *call,
		      const struct kv_arg *a, const struct kv_bind_val *vals)
{
	if (a->kind == KV_ARG_ARRAY) {
		for (uint32_t e = 0; e < a->n; e++) {
			size_t off;
			if (!bind_scalar(ks, st, call, &call->elems[a->first + e], vals, &off))
				return false;
			if (off == NO_VALUE)
				return add_key(ks, NULL, 0);
			if (!push_key(ks, off))
				return false;
		}
		return true;
	}
	const uint8_t *p;
	size_t len;
	bool binary = false;
	if (a->kind == KV_ARG_NULL)
		return true; /* kv.get_many(ns, NULL): no keys, as the function itself answers */
	if (a->kind == KV_ARG_CONST) {
		p = (const uint8_t *)call->text + a->off;
		len = a->len;
	} else {
		const struct kv_bind_val *v = &vals[a->param - 1];
		if (!v->p)
			return true;
		p = v->p;
		len = v->len;
		binary = v->binary;
	}
	struct kv_elem *elems = malloc(KV_CALL_MAX_KEYS * sizeof *elems);
	char *scratch = binary ? NULL : malloc(len + 1);
	int n;
	if (!elems || (!binary && !scratch)) {
		free(elems);
		free(scratch);
		kv_error(ks, "53200", "out of memory");
		return false;
	}
	n = binary ? kv_binary_array_parse(p, len, elems, KV_CALL_MAX_KEYS)
		   : kv_text_array_parse((const char *)p, len, scratch, elems, KV_CALL_MAX_KEYS);
	bool ok = n >= 0;
	if (n == -E2BIG)
		kv_error(ks, "54000", "kv: get_many takes at most %d keys", KV_CALL_MAX_KEYS);
	else if (n < 0)
		kv_error(ks, "22P02", "kv: malformed array of keys (a one-dimensional text[] is expected)");
	for (int i = 0; ok && i < n; i++)
		ok = add_key(ks, elems[i].p, elems[i].len);
	free(elems);
	free(scratch);
	return ok;
}

/* Fill ks->job from call and the bound values. false after an error was written. */
static bool bind_call(struct kv_session *ks, const struct kv_stmt *st, const struct kv_call *call,
		      const struct kv_bind_val *vals)
{
	size_t offs[KV_CALL_MAX_ARGS] = { NO_VALUE, NO_VALUE, NO_VALUE, NO_VALUE };

	ks->vals_len = 0;
	ks->nkeys = 0;
	for (int i = 0; i < call->nargs; i++) {
		if (call->op == KV_OP_GET_MANY && i == 1) {
			if (!bind_keys(ks, st, call, &call->args[i], vals))
				return false;
		} else if (!bind_scalar(ks, st, call, &call->args[i], vals, &offs[i])) {
			return false;
		}
	}
	if (offs[0] == NO_VALUE || (call->op != KV_OP_GET_MANY && offs[1] == NO_VALUE)) {
		kv_error(ks, "22004", "kv: namespace and key must not be NULL");
		return false;
	}
	struct kv_job *job = &ks->job;
	job->op = call->op;
	job->ns = ks->vals + offs[0];
	job->key = call->op != KV_OP_GET_MANY ? ks->vals + offs[1] : NULL;
	job->value = offs[2] != NO_VALUE ? ks->vals + offs[2] : NULL;
	job->ttl = offs[3] != NO_VALUE ? ks->vals + offs[3] : NULL;
	for (int i = 0; i < ks->nkeys; i++)
		ks->keys[i] = ks->vals + ks->key_offs[i];
	job->nkeys = ks->nkeys;
	job->keys = ks->keys;
	return true;
}

/* ---- running a call ---- */

static void on_answer(struct worker *w, void *arg);

/* On the router's thread: hand the answer to the client's worker. */
static void answer_done(struct kv_job *job)
{
	struct kv_session *ks = job->arg;
	struct worker_msg *m = ks->msg;

	ks->msg = NULL;
	worker_post(ks->worker, m); /* its mutex orders the job's output before on_answer */
}

/* Hand the bound call to the router. The session stays busy until on_answer. */
static void run_call(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	struct kv_router *r = ks->worker->rt->kv_router;

	if (!r) {
		kv_error(ks, "57P03", "kv routing is not running (see tusk's log)");
		if (simple)
			out_ready(ks);
		else
			ks->skipping = true;
		return;
	}
	ks->msg = calloc(1, sizeof *ks->msg);
	if (!ks->msg) {
		kv_error(ks, "53200", "out of memory");
		if (simple)
			out_ready(ks);
		else
			ks->skipping = true;
		return;
	}
	ks->msg->kind = WORKER_MSG_CALL;
	ks->msg->call = on_answer;
	ks->msg->arg = ks;
	ks->job.done = answer_done;
	ks->job.arg = ks;
	ks->busy = true;
	ks->busy_simple = simple;
	ks->busy_call = call;
	kv_router_submit(r, &ks->job);
}

/* On the client's worker: the router answered (also while tusk stops). */
static void on_answer(struct worker *w, void *arg)
{
	struct kv_session *ks = arg;
	struct kv_job *job = &ks->job;
	(void)w;

	ks->busy = false;
	if (!ks->client) {
		kv_session_free(ks); /* the client left meanwhile */
		return;
	}
	if (ks->client->state == CLIENT_CLOSING)
		return;
	if (job->failed) {
		if (job->ours)
			log_info(ks->client->id, ks->client->ctx, "kv.%s failed: %s (%s)", kv_op_name(job->op), job->message,
				 job->sqlstate);
		out_error_fields(ks, job->ours, job->sqlstate, job->message, job->detail, job->hint);
		if (!ks->busy_simple)
			ks->skipping = true;
	} else {
		char tag[32];
		if (ks->busy_simple)
			out_row_description(ks, ks->busy_call);
		out_raw(&ks->out, job->rows, job->rows_len);
		snprintf(tag, sizeof tag, "SELECT %llu", (unsigned long long)job->nrows);
		out_msg(&ks->out, 'C', tag, strlen(tag) + 1);
	}
	if (ks->busy_simple)
		out_ready(ks);
	process_input(ks);
}

/* ---- requests ---- */

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

static int find_stmt(struct kv_session *ks, const char *name)
{
	if (!*name)
		return 0;
	for (int i = 1; i < KV_FRONT_STATEMENTS; i++)
		if (ks->stmts[i].used && strcmp(ks->stmts[i].name, name) == 0)
			return i;
	return -1;
}

/* Only blanks, semicolons and comments: PostgreSQL answers EmptyQueryResponse. */
static bool is_empty_query(const char *s)
{
	for (;;) {
		s += strspn(s, " \t\r\n\f\v;");
		if (s[0] == '-' && s[1] == '-') {
			s += strcspn(s, "\n");
		} else if (s[0] == '/' && s[1] == '*') {
			const char *e = strstr(s + 2, "*/");
			if (!e)
				return false;
			s = e + 2;
		} else {
			return *s == '\0';
		}
	}
}

static void on_query(struct kv_session *ks, const uint8_t *body, size_t len)
{
	size_t off = 0;
	const char *text = read_str(body, len, &off);
	char state[6], err[600];

	ks->skipping = false;
	if (!text || off != len) {
		kv_error(ks, "08P01", "malformed Query message");
	} else if (is_empty_query(text)) {
		out_msg(&ks->out, 'I', NULL, 0);
	} else {
		int rc = kv_call_parse(text, &ks->query, state, err, sizeof err);
		if (rc == -ENOMEM)
			kv_error(ks, "53200", "out of memory");
		else if (rc < 0)
			kv_error(ks, state, "%s", err);
		else if (ks->query.nparams > 0)
			kv_error(ks, "42P02", "there is no parameter $%d (a simple query has none)", ks->query.nparams);
		else if (bind_call(ks, NULL, &ks->query, NULL)) {
			run_call(ks, &ks->query, true);
			return;
		}
	}
	out_ready(ks);
}

static void on_parse(struct kv_session *ks, const uint8_t *body, size_t len)
{
	size_t off = 0;
	const char *name = read_str(body, len, &off);
	const char *text = name ? read_str(body, len, &off) : NULL;
	uint16_t ntypes;
	char state[6], err[600];

	if (!text || !read_u16(body, len, &off, &ntypes) || len - off != (size_t)ntypes * 4) {
		kv_error(ks, "08P01", "malformed Parse message");
		goto skip;
	}
	if (strlen(name) >= KV_FRONT_NAME_MAX) {
		kv_error(ks, "42622", "statement name too long");
		goto skip;
	}
	if (ntypes > KV_CALL_MAX_PARAMS) {
		kv_error(ks, "54000", "kv: a call takes at most %d parameters", KV_CALL_MAX_PARAMS);
		goto skip;
	}
	int i = find_stmt(ks, name);
	if (i > 0) {
		kv_error(ks, "42P05", "prepared statement \"%s\" already exists", name);
		goto skip;
	}
	for (int j = 1; i < 0 && j < KV_FRONT_STATEMENTS; j++)
		if (!ks->stmts[j].used)
			i = j;
	if (i < 0) {
		kv_error(ks, "53400", "too many prepared statements (a kv client keeps %d)", KV_FRONT_STATEMENTS - 1);
		goto skip;
	}
	struct kv_stmt *st = &ks->stmts[i];
	if (i == 0 && ks->portal_set && ks->portal_stmt == 0)
		ks->portal_set = false; /* its call is about to be replaced */
	st->used = false;
	int rc = kv_call_parse(text, &st->call, state, err, sizeof err);
	if (rc == -ENOMEM) {
		kv_error(ks, "53200", "out of memory");
		goto skip;
	}
	if (rc < 0) {
		kv_error(ks, state, "%s", err);
		goto skip;
	}
	st->ntypes = ntypes;
	for (uint16_t t = 0; t < ntypes; t++) {
		uint32_t oid;
		(void)read_u32(body, len, &off, &oid);
		st->types[t] = oid;
	}
	snprintf(st->name, sizeof st->name, "%s", name);
	st->used = true;
	out_msg(&ks->out, '1', NULL, 0);
	return;
skip:
	ks->skipping = true;
}

static int stmt_nparams(const struct kv_stmt *st)
{
	return st->call.nparams > st->ntypes ? st->call.nparams : st->ntypes;
}

static void on_bind(struct kv_session *ks, const uint8_t *body, size_t len)
{
	size_t off = 0;
	const char *portal = read_str(body, len, &off);
	const char *name = portal ? read_str(body, len, &off) : NULL;
	uint16_t nfmt, nvals, nres;
	struct kv_bind_val vals[KV_CALL_MAX_PARAMS];

	if (!name || !read_u16(body, len, &off, &nfmt) || len - off < (size_t)nfmt * 2)
		goto malformed;
	size_t fmt_off = off;
	off += (size_t)nfmt * 2;
	if (!read_u16(body, len, &off, &nvals))
		goto malformed;
	if (nvals > KV_CALL_MAX_PARAMS) {
		kv_error(ks, "54000", "kv: a call takes at most %d parameters", KV_CALL_MAX_PARAMS);
		goto skip;
	}
	if (nfmt > 1 && nfmt != nvals)
		goto malformed;
	for (uint16_t i = 0; i < nvals; i++) {
		uint32_t n;
		uint16_t f = 0;
		size_t fo = fmt_off + (nfmt == 1 ? 0 : (size_t)i * 2);
		if (nfmt > 0)
			f = (uint16_t)(body[fo] << 8 | body[fo + 1]);
		if (!read_u32(body, len, &off, &n))
			goto malformed;
		if (n == UINT32_MAX) {
			vals[i] = (struct kv_bind_val){ NULL, 0, false };
			continue;
		}
		if (n > len - off || f > 1)
			goto malformed;
		vals[i] = (struct kv_bind_val){ body + off, n, f == 1 };
		off += n;
	}
	if (!read_u16(body, len, &off, &nres) || len - off != (size_t)nres * 2)
		goto malformed;
	for (uint16_t i = 0; i < nres; i++) {
		uint16_t f = 0;
		(void)read_u16(body, len, &off, &f);
		if (f != 0) {
			kv_error(ks, "0A000", "kv calls answer in text format only (binary results requested)");
			goto skip;
		}
	}
	if (*portal) {
		kv_error(ks, "0A000", "named portals are not supported by the kv database");
		goto skip;
	}
	int i = find_stmt(ks, name);
	if (i < 0 || !ks->stmts[i].used) {
		kv_error(ks, "26000", "prepared statement \"%s\" does not exist", name);
		goto skip;
	}
	struct kv_stmt *st = &ks->stmts[i];
	if (nvals != stmt_nparams(st)) {
		kv_error(ks, "08P01", "bind message supplies %u parameters, but prepared statement \"%s\" requires %d",
			 nvals, name, stmt_nparams(st));
		goto skip;
	}
	ks->portal_set = false;
	if (!bind_call(ks, st, &st->call, vals))
		goto skip;
	ks->portal_set = true;
	ks->portal_stmt = i;
	out_msg(&ks->out, '2', NULL, 0);
	return;
malformed:
	kv_error(ks, "08P01", "malformed Bind message");
skip:
	ks->skipping = true;
}

static void on_describe(struct kv_session *ks, const uint8_t *body, size_t len)
{
	size_t off = 1;
	const char *name = len > 0 ? read_str(body, len, &off) : NULL;

	if (!name || (body[0] != 'S' && body[0] != 'P')) {
		kv_error(ks, "08P01", "malformed Describe message");
		ks->skipping = true;
		return;
	}
	if (body[0] == 'S') {
		int i = find_stmt(ks, name);
		if (i < 0 || !ks->stmts[i].used) {
			kv_error(ks, "26000", "prepared statement \"%s\" does not exist", name);
			ks->skipping = true;
			return;
		}
		const struct kv_stmt *st = &ks->stmts[i];
		int n = stmt_nparams(st);
		uint8_t desc[2 + 4 * KV_CALL_MAX_PARAMS];
		desc[0] = (uint8_t)(n >> 8), desc[1] = (uint8_t)n;
		for (int p = 1; p <= n; p++) {
			uint32_t oid = htonl(param_type(st, &st->call, p));
			memcpy(desc + 2 + 4 * (p - 1), &oid, 4);
		}
		out_msg(&ks->out, 't', desc, 2 + 4 * (size_t)n);
		out_row_description(ks, &st->call);
		return;
	}
	if (*name || !ks->portal_set) {
		kv_error(ks, "34000", "portal \"%s\" does not exist", name);
		ks->skipping = true;
		return;
	}
	out_row_description(ks, &ks->stmts[ks->portal_stmt].call);
}

static void on_execute(struct kv_session *ks, const uint8_t *body, size_t len)
{
	size_t off = 0;
	const char *name = read_str(body, len, &off);
	uint32_t max_rows;

	if (!name || !read_u32(body, len, &off, &max_rows)) {
		kv_error(ks, "08P01", "malformed Execute message");
		ks->skipping = true;
		return;
	}
	if (*name || !ks->portal_set) {
		kv_error(ks, "34000", "portal \"%s\" does not exist", name);
		ks->skipping = true;
		return;
	}
	/* A portal runs once and whole: max_rows is not honoured (get_many is bounded). */
	ks->portal_set = false;
	run_call(ks, &ks->stmts[ks->portal_stmt].call, false);
}

static void on_close(struct kv_session *ks, const uint8_t *body, size_t len)
{
	size_t off = 1;
	const char *name = len > 0 ? read_str(body, len, &off) : NULL;

	if (!name || (body[0] != 'S' && body[0] != 'P')) {
		kv_error(ks, "08P01", "malformed Close message");
		ks->skipping = true;
		return;
	}
	if (body[0] == 'S') {
		int i = find_stmt(ks, name);
		if (i >= 0) {
			if (ks->portal_set && ks->portal_stmt == i)
				ks->portal_set = false;
			ks->stmts[i].used = false;
		}
	} else if (!*name) {
		ks->portal_set = false;
	}
	out_msg(&ks->out, '3', NULL, 0);
}

/* One request. -1 when the client is gone. */
static int handle(struct kv_session *ks, uint8_t type, const uint8_t *body, size_t len)
{
	struct client *c = ks->client;

	if (type == 'X') {
		client_close(c, "client terminated the session");
		return -1;
	}
	if (ks->skipping && type != 'S' && type != 'Q')
		return 0;
	switch (type) {
	case 'Q': on_query(ks, body, len); break;
	case 'P': on_parse(ks, body, len); break;
	case 'B': on_bind(ks, body, len); break;
	case 'D': on_describe(ks, body, len); break;
	case 'E': on_execute(ks, body, len); break;
	case 'C': on_close(ks, body, len); break;
	case 'H': break; /* Flush: everything is flushed anyway */
	case 'S':
		ks->skipping = false;
		out_ready(ks);
		break;
	case 'd':
	case 'c':
	case 'f':
		break; /* COPY messages outside a COPY: ignored, as PostgreSQL does */
	default:
		if (type == 'F')
			kv_error(ks, "0A000", "function calls (fast path) are not supported by the kv database");
		else
			kv_error(ks, "08P01", "unexpected message type %u ('%c') on the kv database", type,
				 type >= 0x20 && type < 0x7f ? type : '?');
		out_ready(ks);
		break;
	}
	return 0;
}

static void process_input(struct kv_session *ks)
{
	struct client *c = ks->client;
	uint32_t max = c->worker->rt->cfg->max_message_size;

	while (!ks->busy && ks->out.len - ks->out.start < KV_FRONT_OUT_HIGH) {
		if (ks->big) {
			/* A message longer than rbuf: collect it, then handle it from the copy. */
			size_t n = buf_len(&c->rbuf);
			if (n > ks->big_need - ks->big_len)
				n = ks->big_need - ks->big_len;
			memcpy(ks->big + ks->big_len, buf_head(&c->rbuf), n);
			buf_consume(&c->rbuf, n);
			ks->big_len += n;
			if (ks->big_len < ks->big_need) {
				buf_compact(&c->rbuf);
				break;
			}
			uint8_t *big = ks->big;
			ks->big = NULL;
			int rc = handle(ks, big[0], big + PROTO_HDR_LEN, ks->big_need - PROTO_HDR_LEN);
			free(big);
			if (rc < 0)
				return;
			continue;
		}
		struct proto_hdr h;
		ssize_t n = proto_read_hdr(buf_head(&c->rbuf), buf_len(&c->rbuf), max, &h);
		if (n == PROTO_ETOOLONG) {
			client_fail(c, "54000", "message exceeds max_message_size (%u)", max);
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
			ks->big = malloc(total);
			if (!ks->big) {
				client_fail(c, "53200", "out of memory");
				return;
			}
			ks->big_len = 0;
			ks->big_need = total;
			continue;
		}
		if (buf_len(&c->rbuf) < total) {
			buf_compact(&c->rbuf);
			break;
		}
		/* Consumed first; the bytes stay in place until the next read. */
		const uint8_t *body = buf_head(&c->rbuf) + PROTO_HDR_LEN;
		buf_consume(&c->rbuf, total);
		if (handle(ks, h.type, body, total - PROTO_HDR_LEN) < 0)
			return;
	}
	(void)flush_out(ks);
}

void kv_front_input(struct client *c)
{
	if (c->kv)
		process_input(c->kv);
}

void kv_front_writable(struct client *c)
{
	struct kv_session *ks = c->kv;
	if (!ks || flush_out(ks) < 0)
		return;
	if (!buf_empty(&c->rbuf))
		process_input(ks);
}
