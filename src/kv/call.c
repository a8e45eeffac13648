/* Parsing the calls of the virtual kv database (call.h). The statement is parsed by
 * libpg_query (so the SQL is read exactly as PostgreSQL reads it: quoting, escapes, casts,
 * comments) and its protobuf tree is walked with a small bounds-checked reader; only the
 * few node types a call can contain are accepted, everything else is refused. Field numbers
 * come from pg_query.proto of libpg_query 15. */
#include "kv/call.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>

#include "proto/proto.h"
#include "util/pb.h"

enum {
	PB_PARSE_RESULT_STMTS = 2,
	PB_RAW_STMT_STMT = 1,
	PB_NODE_SELECT_STMT = 58, PB_NODE_COLUMN_REF = 172, PB_NODE_PARAM_REF = 173, PB_NODE_FUNC_CALL = 174,
	PB_NODE_A_STAR = 175, PB_NODE_A_ARRAY_EXPR = 178, PB_NODE_RES_TARGET = 179, PB_NODE_TYPE_CAST = 181,
	PB_NODE_RANGE_FUNCTION = 186, PB_NODE_STRING = 233, PB_NODE_LIST = 235, PB_NODE_A_CONST = 238,
	PB_SELECT_TARGET_LIST = 3, PB_SELECT_FROM_CLAUSE = 4, PB_SELECT_LIMIT_OPTION = 14, PB_SELECT_OP = 17,
	PB_RES_TARGET_NAME = 1, PB_RES_TARGET_VAL = 3, PB_RES_TARGET_LOCATION = 4,
	PB_FUNC_CALL_FUNCNAME = 1, PB_FUNC_CALL_ARGS = 2, PB_FUNC_CALL_FUNCFORMAT = 10, PB_FUNC_CALL_LOCATION = 11,
	PB_A_CONST_IVAL = 1, PB_A_CONST_FVAL = 2, PB_A_CONST_BOOLVAL = 3, PB_A_CONST_SVAL = 4,
	PB_A_CONST_ISNULL = 10, PB_A_CONST_LOCATION = 11,
	PB_VALUE_FIELD = 1, /* Integer.ival, Float.fval, Boolean.boolval, String.sval */
	PB_PARAM_REF_NUMBER = 1,
	PB_TYPE_CAST_ARG = 1,
	PB_A_ARRAY_EXPR_ELEMENTS = 1,
	PB_COLUMN_REF_FIELDS = 1,
	PB_RANGE_FUNCTION_FUNCTIONS = 4,
	PB_LIST_ITEMS = 1,
	PB_SETOP_NONE = 1,
	PB_LIMIT_OPTION_DEFAULT = 1,
	PB_NODE_VARIABLE_SET_STMT = 97,
	PB_VARIABLE_SET_KIND = 1, PB_VARIABLE_SET_NAME = 2, PB_VARIABLE_SET_ARGS = 3, PB_VARIABLE_SET_IS_LOCAL = 4,
	PB_VAR_SET_VALUE = 1, PB_VAR_SET_DEFAULT = 2, PB_VAR_SET_MULTI = 4, PB_VAR_RESET = 5,
	PB_NODE_VARIABLE_SHOW_STMT = 98, PB_VARIABLE_SHOW_NAME = 1,
	PB_NODE_DEALLOCATE_STMT = 121, PB_DEALLOCATE_NAME = 1,
	PB_RAW_STMT_LOCATION = 2, PB_RAW_STMT_LEN = 3,
	PB_VAR_RESET_ALL = 6,
	PB_NODE_CLOSE_PORTAL_STMT = 68, PB_CLOSE_PORTAL_NAME = 1,
	PB_NODE_LISTEN_STMT = 84, PB_NODE_UNLISTEN_STMT = 85,
	PB_NODE_DISCARD_STMT = 99, PB_DISCARD_TARGET = 1,
	PB_DISCARD_ALL = 1, PB_DISCARD_PLANS = 2, PB_DISCARD_SEQUENCES = 3, PB_DISCARD_TEMP = 4,
	PB_NODE_DECLARE_CURSOR_STMT = 122, PB_DECLARE_NAME = 1, PB_DECLARE_OPTIONS = 2, PB_DECLARE_QUERY = 3,
	PB_CURSOR_OPT_BINARY = 0x1, PB_CURSOR_OPT_SCROLL = 0x2, PB_CURSOR_OPT_NO_SCROLL = 0x4, PB_CURSOR_OPT_HOLD = 0x20,
	PB_NODE_FETCH_STMT = 76, PB_FETCH_DIRECTION = 1, PB_FETCH_HOW_MANY = 2, PB_FETCH_NAME = 3, PB_FETCH_IS_MOVE = 4,
	PB_FETCH_FORWARD = 1, PB_FETCH_RELATIVE = 4,
	PB_NODE_TRANSACTION_STMT = 86, PB_NODE_DEF_ELEM = 195,
	PB_TRANSACTION_KIND = 1, PB_TRANSACTION_OPTIONS = 2, PB_TRANSACTION_SAVEPOINT_NAME = 3, PB_TRANSACTION_CHAIN = 5,
	PB_TRANS_BEGIN = 1, PB_TRANS_START = 2, PB_TRANS_COMMIT = 3, PB_TRANS_ROLLBACK = 4, PB_TRANS_SAVEPOINT = 5,
	PB_TRANS_RELEASE = 6, PB_TRANS_ROLLBACK_TO = 7,
	PB_DEF_ELEM_NAME = 2, PB_DEF_ELEM_ARG = 3,
};

/* A Node: a message with one field, numbered by the node type. 0 when malformed. */
static uint32_t pb_node(struct pb node, struct pb *inner)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v;

	if (!pb_next(&node, &f, &w, &v, inner) || w != PB_BYTES || node.p != node.end)
		return 0;
	return f;
}

/* ---- the parse ---- */

struct parse {
	struct kv_call *call;
	char *state;
	char *err;
	size_t errcap;
	int rc; /* first failure */
};

__attribute__((format(printf, 3, 4)))
static bool fail(struct parse *ps, const char *state, const char *fmt, ...)
{
	va_list ap;

	if (ps->rc)
		return false;
	ps->rc = -EINVAL;
	snprintf(ps->state, 6, "%s", state);
	va_start(ap, fmt);
	vsnprintf(ps->err, ps->errcap, fmt, ap);
	va_end(ap);
	return false;
}

static bool oom(struct parse *ps)
{
	if (!ps->rc)
		ps->rc = -ENOMEM;
	return false;
}

static const char not_a_call[] =
	"only calls of the kv API are served here: SELECT kv.<call>(...), or SELECT * FROM kv.get_many|scan(...) "
	"(docs/kv.md, \"Routing\")";

/* A copy of the constant's text in the call's storage. */
static bool add_text(struct parse *ps, const uint8_t *p, size_t n, struct kv_arg *out)
{
	struct kv_call *c = ps->call;

	if (memchr(p, '\0', n))
		return fail(ps, "22021", "invalid byte sequence: a constant contains a NUL byte");
	if (n > KV_CALL_SQL_MAX || c->text_len + n + 1 > KV_CALL_SQL_MAX * 2u)
		return fail(ps, "54000", "call too large");
	if (c->text_len + n + 1 > c->text_cap) {
		uint32_t cap = c->text_cap ? c->text_cap : 256;
		while (cap < c->text_len + n + 1)
			cap *= 2;
		char *t = realloc(c->text, cap);
		if (!t)
			return oom(ps);
		c->text = t;
		c->text_cap = cap;
	}
	memcpy(c->text + c->text_len, p, n);
	c->text[c->text_len + n] = '\0';
	*out = (struct kv_arg){ .kind = KV_ARG_CONST, .off = c->text_len, .len = (uint32_t)n };
	c->text_len += (uint32_t)n + 1;
	return true;
}

/* The value field of an Integer/Float/Boolean/String message. */
static bool value_of(struct parse *ps, struct pb msg, uint32_t which, struct kv_arg *out)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	struct pb sub;
	char num[32];

	/* proto3 leaves out zero values: an Integer 0, a Boolean false, an empty String. */
	if (which == PB_A_CONST_IVAL)
		snprintf(num, sizeof num, "0");
	else if (which == PB_A_CONST_BOOLVAL)
		snprintf(num, sizeof num, "false");
	else
		num[0] = '\0';
	sub = (struct pb){ (const uint8_t *)num, (const uint8_t *)num + strlen(num) };
	while (msg.p < msg.end) {
		struct pb s;
		if (!pb_next(&msg, &f, &w, &v, &s))
			return fail(ps, "XX000", "malformed parse tree");
		if (f != PB_VALUE_FIELD)
			continue;
		if (which == PB_A_CONST_IVAL && w == PB_VARINT) {
			snprintf(num, sizeof num, "%" PRId32, (int32_t)(uint32_t)v);
			sub = (struct pb){ (const uint8_t *)num, (const uint8_t *)num + strlen(num) };
		} else if (which == PB_A_CONST_BOOLVAL && w == PB_VARINT) {
			snprintf(num, sizeof num, "%s", v ? "true" : "false");
			sub = (struct pb){ (const uint8_t *)num, (const uint8_t *)num + strlen(num) };
		} else if (w == PB_BYTES && (which == PB_A_CONST_FVAL || which == PB_A_CONST_SVAL)) {
			sub = s;
		} else {
			return fail(ps, "XX000", "malformed parse tree");
		}
	}
	return add_text(ps, sub.p, (size_t)(sub.end - sub.p), out);
}

static bool a_const(struct parse *ps, struct pb msg, struct kv_arg *out)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	struct pb sub, val = { NULL, NULL };
	uint32_t which = 0;
	bool isnull = false;

	while (msg.p < msg.end) {
		if (!pb_next(&msg, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_A_CONST_ISNULL)
			isnull = v != 0;
		else if (f >= PB_A_CONST_IVAL && f <= PB_A_CONST_SVAL && w == PB_BYTES)
			which = f, val = sub;
		else if (f != PB_A_CONST_LOCATION)
			return fail(ps, "0A000", "kv: unsupported constant in a call");
	}
	if (isnull || !which) {
		*out = (struct kv_arg){ .kind = KV_ARG_NULL };
		return true;
	}
	return value_of(ps, val, which, out);
}

/* One argument: a constant, $n, either under casts, or (arrays allowed) ARRAY[...]. */
static bool arg_of(struct parse *ps, struct pb node, bool array_ok, struct kv_arg *out)
{
	struct pb inner, sub;
	uint32_t type = pb_node(node, &inner), f;
	enum pb_wire w;
	uint64_t v;

	for (int depth = 0; type == PB_NODE_TYPE_CAST; depth++) {
		struct pb arg = { NULL, NULL };
		if (depth > 8)
			return fail(ps, "0A000", "kv: too many casts in an argument");
		while (inner.p < inner.end) {
			if (!pb_next(&inner, &f, &w, &v, &sub))
				return fail(ps, "XX000", "malformed parse tree");
			if (f == PB_TYPE_CAST_ARG && w == PB_BYTES)
				arg = sub;
		}
		if (!arg.p)
			return fail(ps, "XX000", "malformed parse tree");
		type = pb_node(arg, &inner);
	}
	switch (type) {
	case PB_NODE_A_CONST:
		return a_const(ps, inner, out);
	case PB_NODE_PARAM_REF: {
		int64_t n = 0;
		while (inner.p < inner.end) {
			if (!pb_next(&inner, &f, &w, &v, &sub))
				return fail(ps, "XX000", "malformed parse tree");
			if (f == PB_PARAM_REF_NUMBER && w == PB_VARINT)
				n = (int32_t)(uint32_t)v;
		}
		if (n < 1 || n > KV_CALL_MAX_PARAMS)
			return fail(ps, "42P02", "there is no parameter $%lld (a call takes $1 to $%d)", (long long)n,
				    KV_CALL_MAX_PARAMS);
		if (n > ps->call->nparams)
			ps->call->nparams = (int)n;
		*out = (struct kv_arg){ .kind = KV_ARG_PARAM, .param = (uint16_t)n };
		return true;
	}
	case PB_NODE_A_ARRAY_EXPR: {
		struct kv_call *c = ps->call;
		if (!array_ok)
			return fail(ps, "42883", "kv: an ARRAY is only taken as the keys (and put_many's values) of a batch");
		*out = (struct kv_arg){ .kind = KV_ARG_ARRAY, .first = c->nelems };
		while (inner.p < inner.end) {
			if (!pb_next(&inner, &f, &w, &v, &sub))
				return fail(ps, "XX000", "malformed parse tree");
			if (f != PB_A_ARRAY_EXPR_ELEMENTS || w != PB_BYTES)
				continue;
			if (c->nelems - out->first >= KV_CALL_MAX_KEYS)
				return fail(ps, "54000", "kv: get_many takes at most %d keys", KV_CALL_MAX_KEYS);
			if (c->nelems == c->elems_cap) {
				uint32_t cap = c->elems_cap ? c->elems_cap * 2 : 16;
				struct kv_arg *e = realloc(c->elems, cap * sizeof *e);
				if (!e)
					return oom(ps);
				c->elems = e;
				c->elems_cap = cap;
			}
			struct kv_arg el;
			if (!arg_of(ps, sub, false, &el))
				return false;
			c->elems[c->nelems++] = el;
			out->n++;
		}
		return true;
	}
	default:
		return fail(ps, "0A000", "kv: call arguments must be constants or parameters ($1, $2, ...)");
	}
}

/* The API a client of the kv database may call: argument counts and types, result type. */
#define T KV_OID_TEXT
#define J KV_OID_JSONB
#define I KV_OID_INTERVAL
#define B KV_OID_INT8
#define A KV_OID_TEXT_ARRAY
static const struct kv_op_def {
	const char *name;
	enum kv_op op;
	int min, max;
	uint32_t args[KV_CALL_MAX_ARGS];
	uint32_t result;
} ops[] = {
	{ "get", KV_OP_GET, 2, 2, { T, T }, J },
	{ "put", KV_OP_PUT, 3, 4, { T, T, J, I }, B },
	{ "delete", KV_OP_DELETE, 2, 2, { T, T }, B },
	{ "patch", KV_OP_PATCH, 3, 3, { T, T, J }, J },
	{ "get_many", KV_OP_GET_MANY, 2, 2, { T, A }, J },
	{ "get_meta", KV_OP_GET_META, 2, 2, { T, T }, J },
	{ "put_if_version", KV_OP_PUT_IF_VERSION, 4, 5, { T, T, J, B, I }, B },
	{ "put_if_absent", KV_OP_PUT_IF_ABSENT, 3, 4, { T, T, J, I }, B },
	{ "delete_if_version", KV_OP_DELETE_IF_VERSION, 3, 3, { T, T, B }, B },
	{ "touch", KV_OP_TOUCH, 2, 3, { T, T, I }, B },
	{ "incr", KV_OP_INCR, 3, 3, { T, T, B }, B },
	{ "counter", KV_OP_COUNTER, 2, 2, { T, T }, B },
	{ "put_many", KV_OP_PUT_MANY, 3, 4, { T, A, A, I }, B },
	{ "delete_many", KV_OP_DELETE_MANY, 2, 2, { T, A }, B },
	{ "scan", KV_OP_SCAN, 4, 4, { T, T, T, KV_OID_INT4 }, J },
	{ "count", KV_OP_COUNT, 2, 2, { T, T }, B },
	{ "read", KV_OP_READ, 2, 2, { T, T }, J },
	{ "read_many", KV_OP_READ_MANY, 2, 2, { T, A }, J },
	{ "read_meta", KV_OP_READ_META, 2, 2, { T, T }, J },
	{ "swap", KV_OP_SWAP, 3, 4, { T, T, J, I }, J },
	{ "persist", KV_OP_PERSIST, 2, 2, { T, T }, B },
	{ "expire", KV_OP_EXPIRE, 4, 4, { T, T, I, T }, B },
	{ "getex", KV_OP_GETEX, 2, 4, { T, T, I, T }, J },
	{ "set", KV_OP_SET, 3, 5, { T, T, J, I, T }, J },
	{ "append", KV_OP_APPEND, 3, 3, { T, T, T }, J },
	{ "rename", KV_OP_RENAME, 3, 4, { T, T, T, KV_OID_BOOL }, KV_OID_INT4 },
	{ "put_if_value", KV_OP_PUT_IF_VALUE, 4, 4, { T, T, J, J }, KV_OID_BOOL },
	{ "flush", KV_OP_FLUSH, 1, 1, { T }, B },
	{ "msetnx", KV_OP_MSETNX, 2, 2, { T, J }, KV_OID_BOOL },
	{ "random_key", KV_OP_RANDOM_KEY, 1, 1, { T }, T },
};
#undef T
#undef J
#undef I
#undef B
#undef A
static const char api_names[] = "get, put, delete, patch, get_many, get_meta, put_if_version, put_if_absent, "
				"delete_if_version, touch, incr, counter, put_many, delete_many, scan, count, read, read_many, read_meta, "
				"swap, persist, expire, getex, set, append";

/* FuncCall of kv.<op>: the op and its arguments. */
static bool func_call(struct parse *ps, struct pb msg)
{
	struct kv_call *c = ps->call;
	struct pb sub, inner, args[KV_CALL_MAX_ARGS + 1];
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	char names[2][32];
	int nnames = 0, nargs = 0;

	while (msg.p < msg.end) {
		if (!pb_next(&msg, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_FUNC_CALL_FUNCNAME && w == PB_BYTES) {
			struct pb s;
			uint32_t ff;
			if (pb_node(sub, &inner) != PB_NODE_STRING || nnames >= 2)
				return fail(ps, "0A000", "%s", not_a_call);
			size_t n = 0;
			const uint8_t *p = NULL;
			while (inner.p < inner.end) {
				if (!pb_next(&inner, &ff, &w, &v, &s))
					return fail(ps, "XX000", "malformed parse tree");
				if (ff == PB_VALUE_FIELD && w == PB_BYTES)
					p = s.p, n = (size_t)(s.end - s.p);
			}
			if (!p || n >= sizeof names[0])
				return fail(ps, "0A000", "%s", not_a_call);
			memcpy(names[nnames], p, n);
			names[nnames++][n] = '\0';
		} else if (f == PB_FUNC_CALL_ARGS && w == PB_BYTES) {
			if (nargs > KV_CALL_MAX_ARGS)
				return fail(ps, "42883", "kv: too many arguments");
			args[nargs++] = sub;
		} else if (f != PB_FUNC_CALL_FUNCFORMAT && f != PB_FUNC_CALL_LOCATION) {
			return fail(ps, "0A000", "kv: a call takes plain positional arguments (no named arguments, "
						 "VARIADIC, DISTINCT, ORDER BY or window)");
		}
	}
	/* what a pool sends to reset a session (asyncpg's): no locks are held here */
	if (nargs == 0 && strcmp(names[nnames - 1], "pg_advisory_unlock_all") == 0 &&
	    (nnames == 1 || strcmp(names[0], "pg_catalog") == 0)) {
		c->local = KV_LOCAL_UNLOCK_ALL;
		snprintf(c->column, sizeof c->column, "pg_advisory_unlock_all");
		return true;
	}
	/* what a toolkit asks as it connects (SQLAlchemy: version(), current_schema()) */
	static const struct {
		const char *name;
		enum kv_value_fn fn;
	} values[] = { { "version", KV_VALUE_VERSION },
		       { "current_schema", KV_VALUE_CURRENT_SCHEMA },
		       { "current_database", KV_VALUE_CURRENT_DATABASE } };
	for (size_t k = 0; nargs == 0 && k < sizeof values / sizeof values[0]; k++)
		if (strcmp(names[nnames - 1], values[k].name) == 0 && (nnames == 1 || strcmp(names[0], "pg_catalog") == 0)) {
			c->local = KV_LOCAL_VALUE;
			c->value_fn = (uint8_t)values[k].fn;
			c->value_type = KV_OID_TEXT;
			snprintf(c->column, sizeof c->column, "%s", values[k].name);
			return true;
		}
	if (nnames != 2 || strcmp(names[0], "kv") != 0)
		return fail(ps, "0A000", "%s", not_a_call);
	size_t i;
	for (i = 0; i < sizeof ops / sizeof ops[0]; i++)
		if (strcmp(names[1], ops[i].name) == 0)
			break;
	if (i == sizeof ops / sizeof ops[0])
		return fail(ps, "42883", "kv: no function kv.%s (the API: %s)", names[1], api_names);
	if (nargs < ops[i].min || nargs > ops[i].max) {
		if (ops[i].max > ops[i].min)
			return fail(ps, "42883", "kv.%s takes %d or %d arguments, not %d", ops[i].name, ops[i].min,
				    ops[i].max, nargs);
		return fail(ps, "42883", "kv.%s takes %d arguments, not %d", ops[i].name, ops[i].min, nargs);
	}
	c->op = ops[i].op;
	c->nargs = nargs;
	snprintf(c->column, sizeof c->column, "%s", ops[i].name);
	for (int a = 0; a < nargs; a++)
		if (!arg_of(ps, args[a], kv_op_array_arg(c->op, a), &c->args[a]))
			return false;
	return true;
}

/* SELECT constant: an integer (int4), a string (text) or a Boolean, not NULL nor a numeric. */
static bool const_value(struct parse *ps, struct pb msg)
{
	struct kv_call *c = ps->call;
	struct kv_arg a;
	uint32_t f, which = 0;
	enum pb_wire w;
	uint64_t v;
	struct pb sub, m = msg;

	while (m.p < m.end) {
		if (!pb_next(&m, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f >= PB_A_CONST_IVAL && f <= PB_A_CONST_SVAL && w == PB_BYTES)
			which = f;
	}
	if (which != PB_A_CONST_IVAL && which != PB_A_CONST_SVAL && which != PB_A_CONST_BOOLVAL)
		return fail(ps, "0A000", "%s", not_a_call);
	size_t text_len = c->text_len;
	if (!a_const(ps, msg, &a))
		return false;
	c->text_len = text_len; /* (a_const kept the text in the call's arguments' buffer) */
	if (a.kind != KV_ARG_CONST || a.len >= sizeof c->value)
		return fail(ps, "0A000", "%s", not_a_call);
	memcpy(c->value, c->text + a.off, a.len);
	c->value[a.len] = '\0';
	if (which == PB_A_CONST_BOOLVAL)
		snprintf(c->value, sizeof c->value, "%s", strcmp(c->value, "true") == 0 ? "t" : "f");
	c->value_type = which == PB_A_CONST_IVAL ? KV_OID_INT4 : which == PB_A_CONST_BOOLVAL ? KV_OID_BOOL : KV_OID_TEXT;
	c->value_fn = KV_VALUE_CONST;
	c->local = KV_LOCAL_VALUE;
	return true;
}

/* SELECT kv.op(...) [AS name] */
static bool target_form(struct parse *ps, struct pb res_target)
{
	struct pb sub, val = { NULL, NULL }, inner;
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	char alias[64] = "";

	while (res_target.p < res_target.end) {
		if (!pb_next(&res_target, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_RES_TARGET_VAL && w == PB_BYTES)
			val = sub;
		else if (f == PB_RES_TARGET_NAME && w == PB_BYTES) {
			size_t n = (size_t)(sub.end - sub.p);
			if (n >= sizeof alias)
				return fail(ps, "42622", "kv: column alias too long");
			memcpy(alias, sub.p, n);
			alias[n] = '\0';
		} else if (f != PB_RES_TARGET_LOCATION)
			return fail(ps, "0A000", "%s", not_a_call);
	}
	uint32_t node = val.p ? pb_node(val, &inner) : 0;
	if (node == PB_NODE_A_CONST) {
		if (!const_value(ps, inner))
			return false;
		snprintf(ps->call->column, sizeof ps->call->column, "%s", alias[0] ? alias : "?column?");
		return true;
	}
	if (node != PB_NODE_FUNC_CALL)
		return fail(ps, "0A000", "%s", not_a_call);
	if (!func_call(ps, inner))
		return false;
	if (ps->call->local == KV_LOCAL_UNLOCK_ALL || ps->call->local == KV_LOCAL_VALUE) {
		if (alias[0])
			snprintf(ps->call->column, sizeof ps->call->column, "%s", alias);
		return true;
	}
	if (kv_op_rows(ps->call->op))
		return fail(ps, "0A000", "kv.%s returns rows: call it as SELECT * FROM kv.%s(...)", kv_op_name(ps->call->op),
			    kv_op_name(ps->call->op));
	if (alias[0])
		snprintf(ps->call->column, sizeof ps->call->column, "%s", alias);
	return true;
}

/* SELECT * FROM kv.get_many(...) */
static bool from_form(struct parse *ps, struct pb res_target, struct pb range_function)
{
	struct pb sub, inner, val = { NULL, NULL };
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	int nfuncs = 0;

	/* The target: * and nothing else. */
	while (res_target.p < res_target.end) {
		if (!pb_next(&res_target, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_RES_TARGET_VAL && w == PB_BYTES)
			val = sub;
		else if (f != PB_RES_TARGET_LOCATION)
			return fail(ps, "0A000", "%s", not_a_call);
	}
	if (!val.p || pb_node(val, &inner) != PB_NODE_COLUMN_REF)
		return fail(ps, "0A000", "%s", not_a_call);
	int nfields = 0;
	bool star = false;
	while (inner.p < inner.end) {
		struct pb fi;
		if (!pb_next(&inner, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_COLUMN_REF_FIELDS && w == PB_BYTES) {
			nfields++;
			star = pb_node(sub, &fi) == PB_NODE_A_STAR;
		}
	}
	if (nfields != 1 || !star)
		return fail(ps, "0A000", "%s", not_a_call);
	/* The range function: one List holding the FuncCall (and an empty column definition list). */
	struct pb call = { NULL, NULL };
	while (range_function.p < range_function.end) {
		if (!pb_next(&range_function, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_RANGE_FUNCTION_FUNCTIONS && w == PB_BYTES) {
			if (++nfuncs > 1 || pb_node(sub, &inner) != PB_NODE_LIST)
				return fail(ps, "0A000", "%s", not_a_call);
			while (inner.p < inner.end) {
				struct pb item, fc;
				if (!pb_next(&inner, &f, &w, &v, &item))
					return fail(ps, "XX000", "malformed parse tree");
				if (f != PB_LIST_ITEMS || w != PB_BYTES)
					continue;
				if (item.p == item.end)
					continue; /* the absent column definition list */
				if (pb_node(item, &fc) != PB_NODE_FUNC_CALL || call.p)
					return fail(ps, "0A000", "%s", not_a_call);
				call = fc;
			}
		} else if (v != 0 || w == PB_BYTES) {
			/* LATERAL, WITH ORDINALITY, ROWS FROM, an alias or column definitions */
			return fail(ps, "0A000", "%s", not_a_call);
		}
	}
	if (!call.p || !func_call(ps, call) || ps->call->local)
		return ps->rc ? false : fail(ps, "0A000", "%s", not_a_call);
	if (!kv_op_rows(ps->call->op))
		return fail(ps, "0A000", "kv.%s returns one value: call it as SELECT kv.%s(...)", kv_op_name(ps->call->op),
			    kv_op_name(ps->call->op));
	ps->call->from = true;
	return true;
}

static bool select_stmt(struct parse *ps, struct pb msg)
{
	struct pb sub, inner, target = { NULL, NULL }, from = { NULL, NULL };
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	int ntargets = 0, nfrom = 0;

	while (msg.p < msg.end) {
		if (!pb_next(&msg, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_SELECT_TARGET_LIST && w == PB_BYTES) {
			ntargets++;
			if (pb_node(sub, &target) != PB_NODE_RES_TARGET)
				return fail(ps, "0A000", "%s", not_a_call);
		} else if (f == PB_SELECT_FROM_CLAUSE && w == PB_BYTES) {
			nfrom++;
			if (pb_node(sub, &from) != PB_NODE_RANGE_FUNCTION)
				return fail(ps, "0A000", "%s", not_a_call);
		} else if (f == PB_SELECT_OP && w == PB_VARINT) {
			if (v != PB_SETOP_NONE)
				return fail(ps, "0A000", "%s", not_a_call);
		} else if (f == PB_SELECT_LIMIT_OPTION && w == PB_VARINT) {
			if (v != PB_LIMIT_OPTION_DEFAULT)
				return fail(ps, "0A000", "%s", not_a_call);
		} else {
			/* WHERE, GROUP BY, ORDER BY, LIMIT, DISTINCT, VALUES, WITH, INTO, FOR UPDATE ... */
			return fail(ps, "0A000", "%s", not_a_call);
		}
	}
	(void)inner;
	if (ntargets != 1 || nfrom > 1)
		return fail(ps, "0A000", "%s", not_a_call);
	return nfrom ? from_form(ps, target, from) : target_form(ps, target);
}

/* A SET that drivers send as they connect, of a setting no kv call depends on: pgjdbc's
 * "SET extra_float_digits = 3" and "SET application_name = '...'" (after the startup). Only
 * SET [SESSION] name {= | TO} one value: not LOCAL, DEFAULT, a list or another setting. */
static bool driver_set(struct pb stmt)
{
	static const char *const names[] = { "extra_float_digits", "application_name" };
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	struct pb sub;
	bool value = false, known = false;
	int nargs = 0;

	while (stmt.p < stmt.end) {
		if (!pb_next(&stmt, &f, &w, &v, &sub))
			return false;
		if (f == PB_VARIABLE_SET_KIND && w == PB_VARINT)
			value = v == PB_VAR_SET_VALUE;
		else if (f == PB_VARIABLE_SET_NAME && w == PB_BYTES)
			for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
				known = known || ((size_t)(sub.end - sub.p) == strlen(names[i]) &&
						  !memcmp(sub.p, names[i], strlen(names[i])));
		else if (f == PB_VARIABLE_SET_ARGS && w == PB_BYTES)
			nargs++;
		else if (f == PB_VARIABLE_SET_IS_LOCAL && w == PB_VARINT && v)
			return false;
	}
	return value && known && nargs == 1;
}

/* ---- transaction control and settings ---- */

static const char *const show_names[] = {
	[KV_SHOW_ISOLATION] = "transaction_isolation",
	[KV_SHOW_READ_ONLY] = "transaction_read_only",
	[KV_SHOW_DEFERRABLE] = "transaction_deferrable",
	[KV_SHOW_DEFAULT_ISOLATION] = "default_transaction_isolation",
	[KV_SHOW_DEFAULT_READ_ONLY] = "default_transaction_read_only",
	[KV_SHOW_DEFAULT_DEFERRABLE] = "default_transaction_deferrable",
	[KV_SHOW_STATEMENT_TIMEOUT] = "statement_timeout",
	[KV_SHOW_LOCK_TIMEOUT] = "lock_timeout",
};
static const char *const iso_names[] = { "read uncommitted", "read committed", "repeatable read", "serializable" };

const char *kv_show_name(enum kv_show which)
{
	return show_names[which];
}

const char *kv_txn_char_text(enum kv_show which, int value)
{
	if (which % 3 == KV_SHOW_ISOLATION)
		return iso_names[value >= 0 && value <= KV_ISO_SERIALIZABLE ? value : KV_ISO_READ_COMMITTED];
	return value == 1 ? "on" : "off";
}

const char *kv_timeout_name(enum kv_timeout which)
{
	return show_names[KV_SHOW_STATEMENT_TIMEOUT + which];
}

/* PostgreSQL's units of a setting in milliseconds (guc.c's time table), largest first. */
static const struct {
	const char *unit;
	double ms;
} time_units[] = { { "d", 86400000. }, { "h", 3600000. }, { "min", 60000. }, { "s", 1000. }, { "ms", 1. }, { "us", 0.001 } };

/* guc.c's parse_int for a setting in milliseconds: a number (strtol's, base 0, else strtod's),
 * spaces, an optional unit (up to 3 bytes, case-sensitive) and spaces; a fraction of a unit
 * rounded to the next smaller unit, the whole to an integer. */
static bool parse_ms(const char *text, double *out)
{
	char *end;
	errno = 0;
	long iv = strtol(text, &end, 0);
	double v = (double)iv;
	if (*end == '.' || *end == 'e' || *end == 'E' || errno == ERANGE) {
		errno = 0;
		v = strtod(text, &end);
		if (end == text || errno == ERANGE || v != v)
			return false;
	}
	if (end == text)
		return false;
	while (*end == ' ' || (*end >= '\t' && *end <= '\r'))
		end++;
	if (*end) {
		char unit[4];
		size_t n = 0;
		while (*end && !(*end == ' ' || (*end >= '\t' && *end <= '\r')) && n < 3)
			unit[n++] = *end++;
		unit[n] = '\0';
		while (*end == ' ' || (*end >= '\t' && *end <= '\r'))
			end++;
		if (*end)
			return false;
		size_t i = 0, nunits = sizeof time_units / sizeof time_units[0];
		while (i < nunits && strcmp(unit, time_units[i].unit) != 0)
			i++;
		if (i == nunits)
			return false;
		v *= time_units[i].ms;
		if (i + 1 < nunits)
			v = rint(v / time_units[i + 1].ms) * time_units[i + 1].ms;
	}
	v = rint(v);
	if (v > 2147483647. || v < -2147483648.)
		return false;
	*out = v;
	return true;
}

int kv_timeout_value(enum kv_timeout which, const char *t, size_t n, uint32_t *ms, char *err, size_t cap)
{
	char text[256];
	double v;

	snprintf(text, sizeof text, "%.*s", (int)(n < sizeof text - 1 ? n : sizeof text - 1), t);
	if (n >= sizeof text || memchr(t, '\0', n) || !parse_ms(text, &v)) {
		snprintf(err, cap, "invalid value for parameter \"%s\": \"%.*s\"", kv_timeout_name(which),
			 (int)(n > 200 ? 200 : n), t);
		return -1;
	}
	if (v < 0) {
		snprintf(err, cap, "%.0f ms is outside the valid range for parameter \"%s\" (0 .. 2147483647)", v,
			 kv_timeout_name(which));
		return -1;
	}
	*ms = (uint32_t)v;
	return 0;
}

void kv_timeout_text(uint32_t ms, char out[16])
{
	for (size_t i = 0; ms > 0 && i < sizeof time_units / sizeof time_units[0]; i++)
		if (time_units[i].ms >= 1. && ms % (uint32_t)time_units[i].ms == 0) {
			snprintf(out, 16, "%" PRIu32 "%s", ms / (uint32_t)time_units[i].ms, time_units[i].unit);
			return;
		}
	snprintf(out, 16, "0");
}

void kv_savepoint_sql(char out[KV_SAVEPOINT_SQL_MAX], const char *verb, const char *name)
{
	size_t n = (size_t)snprintf(out, KV_SAVEPOINT_SQL_MAX, "%s \"", verb);
	for (const char *p = name; *p && n + 3 < KV_SAVEPOINT_SQL_MAX; p++) {
		if (*p == '"')
			out[n++] = '"';
		out[n++] = *p;
	}
	out[n++] = '"';
	out[n] = '\0';
}

void kv_txn_begin_text(const struct kv_txn_chars *c, char out[KV_CALL_BEGIN_MAX])
{
	static const char *const iso[] = { " ISOLATION LEVEL READ UNCOMMITTED", " ISOLATION LEVEL READ COMMITTED",
					   " ISOLATION LEVEL REPEATABLE READ", " ISOLATION LEVEL SERIALIZABLE" };
	snprintf(out, KV_CALL_BEGIN_MAX, "BEGIN%s%s%s",
		 c->iso >= 0 && c->iso <= KV_ISO_SERIALIZABLE ? iso[c->iso] : "",
		 c->read_only == 1 ? " READ ONLY" : c->read_only == 0 ? " READ WRITE" : "",
		 c->deferrable == 1 ? " DEFERRABLE" : c->deferrable == 0 ? " NOT DEFERRABLE" : "");
}

/* One of the six settings by name (any case, as PostgreSQL finds a setting); -1 if none. */
static int setting_of(struct pb name)
{
	size_t n = (size_t)(name.end - name.p);
	for (size_t i = 0; i < sizeof show_names / sizeof show_names[0]; i++)
		if (n == strlen(show_names[i]) && strncasecmp((const char *)name.p, show_names[i], n) == 0)
			return (int)i;
	return -1;
}

/* A setting's value as PostgreSQL reads it: an isolation level by name, any case; a Boolean
 * as parse_bool (a prefix of true, false, yes or no, on or of(f) by two letters, 1 or 0).
 * -1 when it is not one. */
int kv_txn_char_value(enum kv_show which, const char *t, size_t n)
{
	if (which % 3 == KV_SHOW_ISOLATION) {
		for (int i = 0; i <= KV_ISO_SERIALIZABLE; i++)
			if (n == strlen(iso_names[i]) && strncasecmp(t, iso_names[i], n) == 0)
				return i;
		return -1;
	}
	static const struct {
		const char *word;
		size_t min;
		int value;
	} words[] = { { "true", 1, 1 }, { "false", 1, 0 }, { "yes", 1, 1 }, { "no", 1, 0 },
		      { "on", 2, 1 },   { "off", 2, 0 },   { "1", 1, 1 },   { "0", 1, 0 } };
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
		if (n >= words[i].min && n <= strlen(words[i].word) && strncasecmp(t, words[i].word, n) == 0)
			return words[i].value;
	return -1;
}

/* Where in a struct kv_txn_chars the field of which lies. */
static size_t char_offset(enum kv_show which)
{
	return which % 3 == KV_SHOW_ISOLATION   ? offsetof(struct kv_txn_chars, iso)
	       : which % 3 == KV_SHOW_READ_ONLY ? offsetof(struct kv_txn_chars, read_only)
						: offsetof(struct kv_txn_chars, deferrable);
}

int8_t *kv_txn_char_field(struct kv_txn_chars *c, enum kv_show which)
{
	return (int8_t *)((char *)c + char_offset(which));
}

int kv_txn_char_get(const struct kv_txn_chars *c, enum kv_show which)
{
	return *(const int8_t *)((const char *)c + char_offset(which));
}

static void set_char(struct kv_txn_chars *c, enum kv_show which, int value)
{
	*kv_txn_char_field(c, which) = (int8_t)value;
}

/* A constant (node) that sets setting which: its value in *value, or an error as PostgreSQL's. */
static bool setting_value(struct parse *ps, enum kv_show which, struct pb node, int *value)
{
	struct pb inner;
	struct kv_arg val = { 0 };

	if (pb_node(node, &inner) != PB_NODE_A_CONST || !a_const(ps, inner, &val) || val.kind != KV_ARG_CONST)
		return ps->rc ? false : fail(ps, "0A000", "kv: unsupported value for %s", show_names[which]);
	const char *t = ps->call->text + val.off;
	*value = kv_txn_char_value(which, t, val.len);
	if (*value >= 0)
		return true;
	if (which % 3 == KV_SHOW_ISOLATION)
		return fail(ps, "22023", "invalid value for parameter \"%s\": \"%.*s\"", show_names[which], (int)val.len, t);
	return fail(ps, "22023", "parameter \"%s\" requires a Boolean value", show_names[which]);
}

/* One option of BEGIN, SET TRANSACTION or SET SESSION CHARACTERISTICS (a DefElem named as the
 * setting, transaction_isolation ...): into chars (a later one wins, as in PostgreSQL). */
static bool txn_option(struct parse *ps, struct pb def, struct kv_txn_chars *chars)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	struct pb sub, name = { NULL, NULL }, arg = { NULL, NULL };
	int value;

	while (def.p < def.end) {
		if (!pb_next(&def, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_DEF_ELEM_NAME && w == PB_BYTES)
			name = sub;
		else if (f == PB_DEF_ELEM_ARG && w == PB_BYTES)
			arg = sub;
	}
	int which = name.p ? setting_of(name) : -1;
	if (which < 0 || which > KV_SHOW_DEFERRABLE || !arg.p)
		return fail(ps, "0A000", "kv: unsupported transaction option");
	if (!setting_value(ps, (enum kv_show)which, arg, &value))
		return false;
	set_char(chars, (enum kv_show)which, value);
	return true;
}

/* BEGIN / START TRANSACTION [options], COMMIT / END, ROLLBACK / ABORT; the rest refused. */
static bool txn_stmt(struct parse *ps, struct pb stmt)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v, kind = 0;
	struct pb sub, options[8];
	int nopt = 0;
	bool chain = false;

	while (stmt.p < stmt.end) {
		if (!pb_next(&stmt, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_TRANSACTION_KIND && w == PB_VARINT)
			kind = v;
		else if (f == PB_TRANSACTION_CHAIN && w == PB_VARINT)
			chain = v != 0;
		else if (f == PB_TRANSACTION_SAVEPOINT_NAME && w == PB_BYTES) {
			size_t n = (size_t)(sub.end - sub.p);
			if (n == 0 || n >= sizeof ps->call->name || memchr(sub.p, '\0', n))
				return fail(ps, "42601", "kv: malformed savepoint name");
			memcpy(ps->call->name, sub.p, n);
			ps->call->name[n] = '\0';
		}
		else if (f == PB_TRANSACTION_OPTIONS && w == PB_BYTES) {
			if (nopt == (int)(sizeof options / sizeof options[0]))
				return fail(ps, "0A000", "kv: unsupported transaction option");
			options[nopt++] = sub;
		}
	}
	if (kind == PB_TRANS_SAVEPOINT || kind == PB_TRANS_RELEASE || kind == PB_TRANS_ROLLBACK_TO) {
		if (!ps->call->name[0])
			return fail(ps, "42601", "kv: a savepoint's name is missing");
		ps->call->local = kind == PB_TRANS_SAVEPOINT ? KV_LOCAL_SAVEPOINT
				  : kind == PB_TRANS_RELEASE ? KV_LOCAL_RELEASE
							     : KV_LOCAL_ROLLBACK_TO;
		return true;
	}
	if (chain)
		return fail(ps, "0A000", "kv: AND CHAIN is not supported by the kv database");
	if (kind == PB_TRANS_COMMIT || kind == PB_TRANS_ROLLBACK) {
		ps->call->local = kind == PB_TRANS_COMMIT ? KV_LOCAL_COMMIT : KV_LOCAL_ROLLBACK;
		return true;
	}
	if (kind != PB_TRANS_BEGIN && kind != PB_TRANS_START)
		return fail(ps, "0A000", "kv: two-phase commit is not supported by the kv database");
	for (int i = 0; i < nopt; i++) {
		struct pb def;
		if (pb_node(options[i], &def) != PB_NODE_DEF_ELEM)
			return fail(ps, "0A000", "kv: unsupported transaction option");
		if (!txn_option(ps, def, &ps->call->chars))
			return false;
	}
	ps->call->local = KV_LOCAL_BEGIN;
	ps->call->txn_start = kind == PB_TRANS_START;
	return true;
}

/* SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS TRANSACTION ..., SET [SESSION] one of the
 * six settings {= | TO} a value, and for the defaults SET ... TO DEFAULT and RESET: true when
 * stmt is one (parsed, or failed); false, nothing said, when it is another SET. */
/* SET [SESSION | LOCAL] statement_timeout | lock_timeout {= | TO} one value, or DEFAULT; RESET. */
static bool timeout_set(struct parse *ps, enum kv_timeout which, uint64_t kind, bool local, struct pb arg, int nargs)
{
	struct pb inner;
	struct kv_arg val = { 0 };
	char err[300];

	ps->call->set_local = local;
	ps->call->local = KV_LOCAL_TIMEOUT;
	ps->call->timeout = (uint8_t)which;
	ps->call->reset = kind == PB_VAR_RESET;
	if (kind == PB_VAR_RESET || kind == PB_VAR_SET_DEFAULT) {
		ps->call->timeout_ms = KV_TIMEOUT_RESET;
		return true;
	}
	if (kind != PB_VAR_SET_VALUE || nargs != 1)
		return fail(ps, "0A000", "kv: unsupported SET of %s", kv_timeout_name(which));
	if (pb_node(arg, &inner) != PB_NODE_A_CONST || !a_const(ps, inner, &val) || val.kind != KV_ARG_CONST)
		return ps->rc ? false : fail(ps, "0A000", "kv: unsupported value for %s", kv_timeout_name(which));
	if (kv_timeout_value(which, ps->call->text + val.off, val.len, &ps->call->timeout_ms, err, sizeof err) < 0)
		return fail(ps, "22023", "%s", err);
	return true;
}

static bool txn_set(struct parse *ps, struct pb stmt)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v, kind = 0;
	struct pb sub, name = { NULL, NULL }, args[8];
	int nargs = 0, value = KV_CHAR_RESET;
	bool local = false;

	while (stmt.p < stmt.end) {
		if (!pb_next(&stmt, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_VARIABLE_SET_KIND && w == PB_VARINT)
			kind = v;
		else if (f == PB_VARIABLE_SET_NAME && w == PB_BYTES)
			name = sub;
		else if (f == PB_VARIABLE_SET_ARGS && w == PB_BYTES) {
			if (nargs == (int)(sizeof args / sizeof args[0]))
				return fail(ps, "0A000", "kv: unsupported transaction option");
			args[nargs++] = sub;
		} else if (f == PB_VARIABLE_SET_IS_LOCAL && w == PB_VARINT)
			local = v != 0;
	}
	size_t nlen = (size_t)(name.end - name.p);
#define NAME_IS(s) (name.p && nlen == strlen(s) && strncasecmp((const char *)name.p, s, nlen) == 0)
	if (kind == PB_VAR_SET_MULTI && (NAME_IS("TRANSACTION") || NAME_IS("SESSION CHARACTERISTICS"))) {
		bool session = NAME_IS("SESSION CHARACTERISTICS");
#undef NAME_IS
		for (int i = 0; i < nargs; i++) {
			struct pb def;
			if (pb_node(args[i], &def) != PB_NODE_DEF_ELEM)
				return fail(ps, "0A000", "kv: unsupported transaction option");
			if (!txn_option(ps, def, &ps->call->chars))
				return true;
		}
		ps->call->local = session ? KV_LOCAL_DEFAULT : KV_LOCAL_SET;
		ps->call->txn_warn = !session;
		return true;
	}
	int which = name.p ? setting_of(name) : -1;
	if (which < 0 || kind == PB_VAR_SET_MULTI)
		return false;
	if (which >= KV_SHOW_STATEMENT_TIMEOUT)
		return timeout_set(ps, (enum kv_timeout)(which - KV_SHOW_STATEMENT_TIMEOUT), kind, local, nargs ? args[0] : name,
				   nargs);
	bool dflt = which >= KV_SHOW_DEFAULT_ISOLATION;
	if (local && dflt)
		return fail(ps, "0A000", "kv: SET LOCAL of %s is not supported by the kv database", show_names[which]);
	ps->call->set_local = local; /* of the transaction's own: as SET (a warning outside one) */
	if (kind == PB_VAR_RESET || kind == PB_VAR_SET_DEFAULT) {
		if (!dflt)
			return fail(ps, "0A000", "kv: %s %s is not supported by the kv database",
				    kind == PB_VAR_RESET ? "RESET of" : "SET TO DEFAULT of", show_names[which]);
		ps->call->reset = kind == PB_VAR_RESET;
	} else if (kind != PB_VAR_SET_VALUE || nargs != 1) {
		return fail(ps, "0A000", "kv: unsupported SET of %s", show_names[which]);
	} else if (!setting_value(ps, (enum kv_show)which, args[0], &value)) {
		return true;
	}
	set_char(&ps->call->chars, (enum kv_show)which, value);
	ps->call->local = dflt ? KV_LOCAL_DEFAULT : KV_LOCAL_SET;
	return true;
}

/* SHOW of one of the six settings. */
static bool show_stmt(struct parse *ps, struct pb stmt)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	struct pb sub, name = { NULL, NULL };

	while (stmt.p < stmt.end) {
		if (!pb_next(&stmt, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_VARIABLE_SHOW_NAME && w == PB_BYTES)
			name = sub;
	}
	/* settings every session of the kv database has, as its greeting reports them (SQLAlchemy
	 * asks standard_conforming_strings as it connects) */
	static const struct {
		const char *name, *value;
	} fixed[] = { { "standard_conforming_strings", "on" }, { "client_encoding", "UTF8" },
		      { "server_encoding", "UTF8" },		 { "DateStyle", "ISO, MDY" },
		      { "IntervalStyle", "postgres" },		 { "integer_datetimes", "on" },
		      { "TimeZone", "UTC" },			 { "max_identifier_length", "63" },
		      { "server_version", "15.0 (tusk " TUSK_VERSION " kv)" }, { "server_version_num", "150000" } };
	for (size_t k = 0; name.p && k < sizeof fixed / sizeof fixed[0]; k++)
		if ((size_t)(name.end - name.p) == strlen(fixed[k].name) &&
		    strncasecmp((const char *)name.p, fixed[k].name, strlen(fixed[k].name)) == 0) {
			ps->call->local = KV_LOCAL_VALUE;
			ps->call->value_fn = KV_VALUE_SETTING;
			ps->call->value_type = KV_OID_TEXT;
			snprintf(ps->call->value, sizeof ps->call->value, "%s", fixed[k].value);
			snprintf(ps->call->column, sizeof ps->call->column, "%s", fixed[k].name);
			return true;
		}
	int which = name.p ? setting_of(name) : -1;
	if (which < 0)
		return fail(ps, "0A000", "kv: the kv database shows only transaction_isolation, transaction_read_only, "
			    "transaction_deferrable, their default_transaction_ settings, and those its greeting reports");
	ps->call->local = KV_LOCAL_SHOW;
	ps->call->show = (uint8_t)which;
	return true;
}

static bool name_field(struct parse *ps, struct pb stmt, uint32_t field, const char *what, char out[64]);

/* libpg_query's parse r: its tree in *res, or false after its error (42601, or -ENOMEM). */
static bool parse_result(struct parse *ps, const PgQueryProtobufParseResult *r, struct pb *res)
{
	if (r->error) {
		if (r->error->message && strcmp(r->error->message, "out of memory") == 0)
			ps->rc = -ENOMEM;
		else
			fail(ps, "42601", "%s", r->error->message ? r->error->message : "syntax error");
		return false;
	}
	*res = (struct pb){ (const uint8_t *)r->parse_tree.data, (const uint8_t *)r->parse_tree.data + r->parse_tree.len };
	return true;
}

/* DEALLOCATE [PREPARE] name, or ALL (no name): the name in column (the parser cut it to 63
 * bytes, as PostgreSQL keeps names). */
static bool deallocate_stmt(struct parse *ps, struct pb stmt)
{
	if (!name_field(ps, stmt, PB_DEALLOCATE_NAME, "DEALLOCATE", ps->call->column))
		return false;
	ps->call->local = KV_LOCAL_DEALLOCATE;
	return true;
}

/* The one string field (number field) of a statement, into out (64 bytes): "" when absent (ALL). */
static bool name_field(struct parse *ps, struct pb stmt, uint32_t field, const char *what, char out[64])
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	struct pb sub;

	out[0] = '\0';
	while (stmt.p < stmt.end) {
		if (!pb_next(&stmt, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == field && w == PB_BYTES) {
			size_t n = (size_t)(sub.end - sub.p);
			if (n == 0 || n >= 64 || memchr(sub.p, '\0', n))
				return fail(ps, "42601", "kv: malformed %s", what);
			memcpy(out, sub.p, n);
			out[n] = '\0';
		}
	}
	return true;
}

/* DECLARE name [BINARY] [[A]SENSITIVE | INSENSITIVE] [NO SCROLL | SCROLL] CURSOR [WITH[OUT] HOLD]
 * FOR <a call>: the call parsed as its SELECT is. BINARY refused. */
static bool declare_stmt(struct parse *ps, struct pb stmt)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v, options = 0;
	struct pb sub, query = { NULL, NULL }, inner;

	if (!name_field(ps, stmt, PB_DECLARE_NAME, "DECLARE", ps->call->name))
		return false;
	while (stmt.p < stmt.end) {
		if (!pb_next(&stmt, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_DECLARE_OPTIONS && w == PB_VARINT)
			options = v;
		else if (f == PB_DECLARE_QUERY && w == PB_BYTES)
			query = sub;
	}
	if (options & PB_CURSOR_OPT_BINARY)
		return fail(ps, "0A000", "kv: BINARY cursors are not supported by the kv database");
	if (!ps->call->name[0] || !query.p || pb_node(query, &inner) != PB_NODE_SELECT_STMT)
		return fail(ps, "0A000", "%s", not_a_call);
	if (!select_stmt(ps, inner))
		return false;
	if (ps->call->local) /* pg_advisory_unlock_all() */
		return fail(ps, "0A000", "%s", not_a_call);
	ps->call->hold = (options & PB_CURSOR_OPT_HOLD) != 0;
	ps->call->scroll = options & PB_CURSOR_OPT_SCROLL ? 1 : options & PB_CURSOR_OPT_NO_SCROLL ? -1 : 0;
	ps->call->local = KV_LOCAL_DECLARE;
	return true;
}

/* FETCH / MOVE [NEXT | PRIOR | FIRST | LAST | ABSOLUTE n | RELATIVE n | [FORWARD | BACKWARD] [n |
 * ALL]] [FROM | IN] name, as PostgreSQL's parse tree has it (a direction and a signed count). */
static bool fetch_stmt(struct parse *ps, struct pb stmt)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v, direction = 0, how_many = 0;
	struct pb sub;

	if (!name_field(ps, stmt, PB_FETCH_NAME, "FETCH", ps->call->name))
		return false;
	ps->call->is_move = false;
	while (stmt.p < stmt.end) {
		if (!pb_next(&stmt, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_FETCH_DIRECTION && w == PB_VARINT)
			direction = v;
		else if (f == PB_FETCH_HOW_MANY && w == PB_VARINT)
			how_many = v;
		else if (f == PB_FETCH_IS_MOVE && w == PB_VARINT)
			ps->call->is_move = v != 0;
	}
	if (direction < PB_FETCH_FORWARD || direction > PB_FETCH_RELATIVE)
		return fail(ps, "XX000", "malformed parse tree");
	ps->call->fetch_dir = (uint8_t)(direction - PB_FETCH_FORWARD); /* (enum kv_fetch_dir's order) */
	ps->call->fetch_count = (int64_t)how_many;
	if (ps->call->fetch_count == INT64_MIN) /* (PostgreSQL's counts are an int's, or ALL) */
		return fail(ps, "XX000", "malformed parse tree");
	ps->call->local = KV_LOCAL_FETCH;
	return true;
}

/* DISCARD ALL | PLANS | SEQUENCES | TEMP */
static bool discard_stmt(struct parse *ps, struct pb stmt)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v, target = 0;
	struct pb sub;

	while (stmt.p < stmt.end) {
		if (!pb_next(&stmt, &f, &w, &v, &sub))
			return fail(ps, "XX000", "malformed parse tree");
		if (f == PB_DISCARD_TARGET && w == PB_VARINT)
			target = v;
	}
	static const char *const tags[] = { [PB_DISCARD_ALL] = "DISCARD ALL", [PB_DISCARD_PLANS] = "DISCARD PLANS",
					    [PB_DISCARD_SEQUENCES] = "DISCARD SEQUENCES",
					    [PB_DISCARD_TEMP] = "DISCARD TEMP" };
	if (target < PB_DISCARD_ALL || target > PB_DISCARD_TEMP)
		return fail(ps, "0A000", "kv: unsupported DISCARD");
	snprintf(ps->call->column, sizeof ps->call->column, "%s", tags[target]);
	ps->call->discard_all = target == PB_DISCARD_ALL;
	ps->call->local = KV_LOCAL_DISCARD;
	return true;
}

/* A RESET ALL (VariableSetStmt of kind VAR_RESET_ALL). */
static bool reset_all(struct pb stmt)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	struct pb sub;

	while (stmt.p < stmt.end) {
		if (!pb_next(&stmt, &f, &w, &v, &sub))
			return false;
		if (f == PB_VARIABLE_SET_KIND && w == PB_VARINT)
			return v == PB_VAR_RESET_ALL;
	}
	return false;
}

/* SET: a driver's (driver_set), RESET ALL, a transaction setting (txn_set); no other. */
static bool set_stmt(struct parse *ps, struct pb stmt)
{
	if (driver_set(stmt))
		ps->call->local = KV_LOCAL_DRIVER_SET;
	else if (reset_all(stmt))
		ps->call->local = KV_LOCAL_RESET_ALL;
	else if (!txn_set(ps, stmt))
		return fail(ps, "0A000", "%s", not_a_call);
	return ps->rc == 0;
}

/* CLOSE name | ALL */
static bool close_stmt(struct parse *ps, struct pb stmt)
{
	if (!name_field(ps, stmt, PB_CLOSE_PORTAL_NAME, "CLOSE", ps->call->name))
		return false;
	ps->call->local = KV_LOCAL_CLOSE;
	return true;
}

/* UNLISTEN (a pool's reset: there is nothing to stop listening to) */
static bool unlisten_stmt(struct parse *ps, struct pb stmt)
{
	(void)stmt;
	ps->call->local = KV_LOCAL_UNLISTEN;
	return true;
}

static bool listen_stmt(struct parse *ps, struct pb stmt)
{
	(void)stmt;
	return fail(ps, "0A000", "kv: LISTEN is not supported by the kv database");
}

/* The statements a kv call can be, by their parse node; any other is refused (not_a_call). */
static const struct {
	uint32_t node;
	bool (*parse)(struct parse *ps, struct pb stmt);
} stmt_kinds[] = {
	{ PB_NODE_SELECT_STMT, select_stmt },
	{ PB_NODE_VARIABLE_SET_STMT, set_stmt },
	{ PB_NODE_VARIABLE_SHOW_STMT, show_stmt },
	{ PB_NODE_TRANSACTION_STMT, txn_stmt },
	{ PB_NODE_DECLARE_CURSOR_STMT, declare_stmt },
	{ PB_NODE_FETCH_STMT, fetch_stmt },
	{ PB_NODE_CLOSE_PORTAL_STMT, close_stmt },
	{ PB_NODE_DEALLOCATE_STMT, deallocate_stmt },
	{ PB_NODE_DISCARD_STMT, discard_stmt },
	{ PB_NODE_UNLISTEN_STMT, unlisten_stmt },
	{ PB_NODE_LISTEN_STMT, listen_stmt },
};

int kv_call_split(const char *sql, struct kv_span *spans, int max, char state[6], char *err, size_t errcap)
{
	struct kv_call scratch = { 0 };
	struct parse ps = { .call = &scratch, .state = state, .err = err, .errcap = errcap };
	struct pb res, sub;
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	int n = 0;
	size_t len = strlen(sql);

	if (len > KV_CALL_SQL_MAX) {
		fail(&ps, "54000", "kv: query text longer than %u bytes", KV_CALL_SQL_MAX);
		return ps.rc;
	}
	PgQueryProtobufParseResult r = pg_query_parse_protobuf(sql);
	if (!parse_result(&ps, &r, &res))
		goto out;
	while (res.p < res.end) {
		if (!pb_next(&res, &f, &w, &v, &sub)) {
			fail(&ps, "XX000", "malformed parse tree");
			goto out;
		}
		if (f != PB_PARSE_RESULT_STMTS || w != PB_BYTES)
			continue;
		if (n == max) {
			fail(&ps, "54000", "kv: more than %d statements in one query", max);
			goto out;
		}
		uint64_t loc = 0, slen = 0; /* proto3 leaves zeros out; a length of 0: to the end */
		struct pb s;
		while (sub.p < sub.end) {
			if (!pb_next(&sub, &f, &w, &v, &s)) {
				fail(&ps, "XX000", "malformed parse tree");
				goto out;
			}
			if (f == PB_RAW_STMT_LOCATION && w == PB_VARINT)
				loc = v;
			else if (f == PB_RAW_STMT_LEN && w == PB_VARINT)
				slen = v;
		}
		if (loc > len || slen > len - loc) {
			fail(&ps, "XX000", "malformed parse tree");
			goto out;
		}
		spans[n++] = (struct kv_span){ (uint32_t)loc, (uint32_t)(slen ? slen : len - loc) };
	}
out:
	pg_query_free_protobuf_parse_result(r);
	kv_call_free(&scratch);
	return ps.rc ? ps.rc : n;
}

/* Drivers' queries of a type, known by their fingerprints (whitespace and constants aside), in
 * enum kv_type_query's order: asyncpg's (asyncpg/introspection.py, TYPE_BY_OID and TYPE_BY_NAME,
 * the same since 0.18), psycopg 3's TypeInfo (psycopg/_typeinfo.py, its parameter as psycopg
 * sends it). */
#define KV_TYPE_QUERIES 3
static const char *const type_queries[KV_TYPE_QUERIES] = {
	"SELECT t.oid, t.typelem AS elemtype, t.typtype AS kind FROM pg_catalog.pg_type AS t WHERE t.oid = $1",
	"SELECT t.oid, t.typelem AS elemtype, t.typtype AS kind FROM pg_catalog.pg_type AS t INNER JOIN "
	"pg_catalog.pg_namespace ns ON (ns.oid = t.typnamespace) WHERE t.typname = $1 AND ns.nspname = $2",
	"SELECT typname AS name, oid, typarray AS array_oid, oid::regtype::text AS regtype, typdelim AS delimiter "
	"FROM pg_type t WHERE t.oid = $1::regtype ORDER BY t.oid",
};
static uint64_t type_query_fps[KV_TYPE_QUERIES];
static pthread_once_t type_query_once = PTHREAD_ONCE_INIT;

static void type_query_init(void)
{
	for (int i = 0; i < KV_TYPE_QUERIES; i++) {
		PgQueryFingerprintResult r = pg_query_fingerprint(type_queries[i]);
		type_query_fps[i] = r.error ? 0 : r.fingerprint;
		pg_query_free_fingerprint_result(r);
	}
}

/* Which of those sql is (enum kv_type_query), or 0. */
static int type_query(const char *sql)
{
	pthread_once(&type_query_once, type_query_init);
	PgQueryFingerprintResult r = pg_query_fingerprint(sql);
	int which = 0;
	for (int i = 0; !r.error && i < KV_TYPE_QUERIES; i++)
		if (type_query_fps[i] && r.fingerprint == type_query_fps[i])
			which = i + 1;
	pg_query_free_fingerprint_result(r);
	return which;
}

int kv_call_parse(const char *sql, struct kv_call *out, char state[6], char *err, size_t errcap)
{
	struct parse ps = { .call = out, .state = state, .err = err, .errcap = errcap };
	struct pb res, sub, stmt = { NULL, NULL }, inner;
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	int nstmts = 0;

	out->op = KV_OP_GET;
	out->local = KV_LOCAL_NONE;
	out->txn_start = false;
	out->txn_warn = false;
	out->reset = false;
	out->set_local = false;
	out->timeout = 0;
	out->timeout_ms = 0;
	out->show = 0;
	out->chars = KV_TXN_CHARS_UNSET;
	out->discard_all = false;
	out->name[0] = '\0';
	out->hold = false;
	out->scroll = 0;
	out->is_move = false;
	out->fetch_dir = KV_FETCH_FORWARD;
	out->fetch_count = 0;
	out->from = false;
	out->column[0] = '\0';
	out->value[0] = '\0';
	out->value_fn = 0;
	out->type_query = 0;
	out->value_type = 0;
	out->nargs = 0;
	out->nparams = 0;
	out->nelems = 0;
	out->text_len = 0;
	if (strlen(sql) > KV_CALL_SQL_MAX) {
		fail(&ps, "54000", "kv: call text longer than %u bytes (bind large values as parameters)", KV_CALL_SQL_MAX);
		return ps.rc;
	}
	PgQueryProtobufParseResult r = pg_query_parse_protobuf(sql);
	if (!parse_result(&ps, &r, &res))
		goto out;
	while (res.p < res.end) {
		if (!pb_next(&res, &f, &w, &v, &sub)) {
			fail(&ps, "XX000", "malformed parse tree");
			goto out;
		}
		if (f == PB_PARSE_RESULT_STMTS && w == PB_BYTES) {
			nstmts++;
			struct pb raw = sub;
			while (raw.p < raw.end) {
				struct pb s;
				if (!pb_next(&raw, &f, &w, &v, &s)) {
					fail(&ps, "XX000", "malformed parse tree");
					goto out;
				}
				if (f == PB_RAW_STMT_STMT && w == PB_BYTES)
					stmt = s;
			}
		}
	}
	if (nstmts == 0) { /* the empty query */
		out->local = KV_LOCAL_EMPTY;
		goto out;
	}
	if (nstmts > 1) {
		fail(&ps, "0A000", "kv: one call per query (each call runs on its own shard)");
		ps.rc = -E2BIG;
		goto out;
	}
	uint32_t type = stmt.p ? pb_node(stmt, &inner) : 0;
	size_t k = 0;
	while (k < sizeof stmt_kinds / sizeof stmt_kinds[0] && stmt_kinds[k].node != type)
		k++;
	if (k == sizeof stmt_kinds / sizeof stmt_kinds[0])
		fail(&ps, "0A000", "%s", not_a_call);
	else
		(void)stmt_kinds[k].parse(&ps, inner);
	int by;
	if (ps.rc == -EINVAL && type == PB_NODE_SELECT_STMT && strstr(sql, "pg_type") && (by = type_query(sql)) > 0) {
		ps.rc = 0;
		state[0] = err[0] = '\0';
		out->local = KV_LOCAL_TYPE_INFO;
		out->nargs = 0;
		out->nelems = 0;
		out->text_len = 0;
		out->from = false;
		out->column[0] = '\0';
		out->type_query = (uint8_t)by;
		out->nparams = by == KV_TYPE_BY_NAME ? 2 : 1;
	}
out:
	pg_query_free_protobuf_parse_result(r);
	return ps.rc;
}

void kv_call_free(struct kv_call *c)
{
	free(c->elems);
	free(c->text);
	memset(c, 0, sizeof *c);
}

const char *kv_op_name(enum kv_op op)
{
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
		if (ops[i].op == op)
			return ops[i].name;
	return "?";
}

static const struct kv_op_def *op_def(enum kv_op op)
{
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
		if (ops[i].op == op)
			return &ops[i];
	return &ops[0];
}

uint32_t kv_call_arg_type(enum kv_op op, int i)
{
	return i >= 0 && i < KV_CALL_MAX_ARGS && op_def(op)->args[i] ? op_def(op)->args[i] : KV_OID_TEXT;
}

uint32_t kv_call_result_type(enum kv_op op)
{
	return op_def(op)->result;
}

bool kv_op_rows(enum kv_op op)
{
	return op == KV_OP_GET_MANY || op == KV_OP_SCAN || op == KV_OP_READ_MANY;
}

bool kv_op_array_arg(enum kv_op op, int i)
{
	return kv_call_arg_type(op, i) == KV_OID_TEXT_ARRAY;
}

bool kv_op_is_read(enum kv_op op)
{
	return op == KV_OP_GET || op == KV_OP_GET_MANY || op == KV_OP_GET_META || op == KV_OP_COUNTER ||
	       op == KV_OP_SCAN || op == KV_OP_COUNT || op == KV_OP_READ || op == KV_OP_READ_MANY ||
	       op == KV_OP_READ_META || op == KV_OP_WATCH_TAG || op == KV_OP_RANDOM_KEY;
}

bool kv_op_keyless(enum kv_op op)
{
	return op == KV_OP_GET_MANY || op == KV_OP_PUT_MANY || op == KV_OP_DELETE_MANY || op == KV_OP_SCAN ||
	       op == KV_OP_COUNT || op == KV_OP_READ_MANY || op == KV_OP_FLUSH || op == KV_OP_RANDOM_KEY;
}

/* ---- bound values ---- */

static bool is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

int kv_text_array_parse(const char *s, size_t len, char *scratch, struct kv_elem *out, int max)
{
	size_t i = 0, w = 0;
	int n = 0;

	while (i < len && is_space(s[i]))
		i++;
	if (i >= len || s[i] != '{')
		return -EINVAL; /* also dimension decorations ("[1:2]={...}") */
	i++;
	while (i < len && is_space(s[i]))
		i++;
	if (i < len && s[i] == '}') {
		i++;
		goto end;
	}
	for (;;) {
		while (i < len && is_space(s[i]))
			i++;
		if (i >= len)
			return -EINVAL;
		if (n >= max)
			return -E2BIG;
		size_t start = w;
		bool quoted = false, any = false;
		if (s[i] == '{')
			return -EINVAL; /* more than one dimension */
		if (s[i] == '"') {
			quoted = true;
			i++;
			for (;;) {
				if (i >= len)
					return -EINVAL;
				if (s[i] == '"') {
					i++;
					break;
				}
				if (s[i] == '\\') {
					if (++i >= len)
						return -EINVAL;
				}
				if (s[i] == '\0')
					return -EINVAL;
				scratch[w++] = s[i++];
			}
			while (i < len && is_space(s[i]))
				i++;
		} else {
			size_t last = w; /* trailing unquoted spaces are dropped */
			while (i < len && s[i] != ',' && s[i] != '}') {
				if (s[i] == '"' || s[i] == '{' || s[i] == '\0')
					return -EINVAL;
				if (s[i] == '\\') {
					if (++i >= len || s[i] == '\0')
						return -EINVAL;
					scratch[w++] = s[i++];
					last = w;
					any = true;
					continue;
				}
				scratch[w++] = s[i];
				if (!is_space(s[i]))
					last = w;
				any = true;
				i++;
			}
			w = last;
			if (!any || w == start)
				return -EINVAL; /* an empty unquoted element */
		}
		if (!quoted && w - start == 4 && strncasecmp(scratch + start, "NULL", 4) == 0)
			out[n++] = (struct kv_elem){ NULL, 0 };
		else
			out[n++] = (struct kv_elem){ scratch + start, (uint32_t)(w - start) };
		if (i >= len)
			return -EINVAL;
		if (s[i] == ',') {
			i++;
			continue;
		}
		if (s[i] == '}') {
			i++;
			break;
		}
		return -EINVAL;
	}
end:
	while (i < len && is_space(s[i]))
		i++;
	return i == len ? n : -EINVAL;
}

int kv_binary_array_parse(const uint8_t *p, size_t len, struct kv_elem *out, int max)
{
	struct proto_reader r;

	/* ndim, has-nulls flag, element type; for one dimension its size and lower bound */
	proto_reader_init(&r, p, len);
	uint32_t ndim = proto_get_u32(&r);
	(void)proto_get_u32(&r);
	uint32_t elemtype = proto_get_u32(&r);
	if (r.err)
		return -EINVAL;
	if (ndim == 0)
		return proto_remaining(&r) == 0 ? 0 : -EINVAL;
	if (ndim != 1 || (elemtype != KV_OID_TEXT && elemtype != 1043 /* varchar */))
		return -EINVAL;
	uint32_t dim = proto_get_u32(&r);
	(void)proto_get_u32(&r);
	if (r.err)
		return -EINVAL;
	if (dim > (uint32_t)max)
		return -E2BIG;
	for (uint32_t i = 0; i < dim; i++) {
		uint32_t n = proto_get_u32(&r);
		if (r.err)
			return -EINVAL;
		if (n == UINT32_MAX) {
			out[i] = (struct kv_elem){ NULL, 0 };
			continue;
		}
		const uint8_t *e = proto_get_bytes(&r, n);
		if (!e || memchr(e, '\0', n))
			return -EINVAL;
		out[i] = (struct kv_elem){ (const char *)e, n };
	}
	return proto_remaining(&r) == 0 ? (int)dim : -EINVAL;
}

long kv_binary_scalar_text(uint32_t oid, const uint8_t *p, size_t len, char *out, size_t cap)
{
	switch (oid) {
	case KV_OID_JSONB:
		if (len < 1 || p[0] != 1)
			return -EINVAL;
		p++, len--;
		/* fall through */
	case 0:
	case KV_OID_TEXT:
	case 1043: /* varchar */
	case 114:  /* json */
		if (memchr(p, '\0', len))
			return -EINVAL;
		if (len > cap)
			return -E2BIG;
		memcpy(out, p, len);
		return (long)len;
	case KV_OID_INTERVAL: {
		if (len != 16)
			return -EINVAL;
		struct proto_reader r;
		proto_reader_init(&r, p, len);
		uint64_t us = proto_get_u64(&r);
		int32_t days = (int32_t)proto_get_u32(&r);
		int32_t months = (int32_t)proto_get_u32(&r);
		int n = snprintf(out, cap, "%" PRId32 " mons %" PRId32 " days %" PRId64 " microseconds", months, days,
				 (int64_t)us);
		return n < 0 || (size_t)n >= cap ? -E2BIG : n;
	}
	case KV_OID_BOOL: {
		if (len != 1 || p[0] > 1)
			return -EINVAL;
		const char *t = p[0] ? "true" : "false";
		size_t n = strlen(t);
		if (n > cap)
			return -E2BIG;
		memcpy(out, t, n);
		return (long)n;
	}
	case KV_OID_INT8:
	case KV_OID_INT4:
	case 21: { /* int2 */
		size_t want = oid == KV_OID_INT8 ? 8 : oid == KV_OID_INT4 ? 4 : 2;
		if (len != want)
			return -EINVAL;
		struct proto_reader r;
		proto_reader_init(&r, p, len);
		int64_t x = want == 8 ? (int64_t)proto_get_u64(&r)
			  : want == 4 ? (int64_t)(int32_t)proto_get_u32(&r)
				      : (int64_t)(int16_t)proto_get_u16(&r);
		int n = snprintf(out, cap, "%" PRId64, x);
		return n < 0 || (size_t)n >= cap ? -E2BIG : n;
	}
	default:
		return -EINVAL;
	}
}
