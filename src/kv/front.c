/* The wire side of the virtual kv database (front.h): its answers to the simple and extended
 * query protocols for the calls of the kv API, and binding parameters into a routed call; the
 * framing, greeting and output buffer (a get_many answer may be longer than the client's
 * wbuf) are the virtual database's (frontend/vdb.c). A kv client is a frontend client of the
 * kv session kind (kv_kind), in CLIENT_IDLE once logged in, its session reached through
 * c->vdb from startup on; it never claims a pooled server. At most one call per client is
 * in flight: input waits until the router answers. */
#include "kv/front.h"
#include "kv/pg_types.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "frontend/client_int.h"
#include "frontend/client_kind.h"
#include "frontend/vdb.h"
#include "kv/call.h"
#include "kv/hash.h"
#include "kv/resp.h" /* resp_json_unquote */
#include "kv/router.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/grow.h"
#include "util/log.h"
#include "worker/worker.h"

/* Named prepared statements a client keeps, besides the unnamed: as many as a driver's own
 * cache holds by default (pgjdbc's preparedStatementCacheQueries 256; asyncpg's 100; node-
 * postgres never closes its named statements), allocated as the client makes them. */
#define KV_FRONT_STATEMENTS 256
#define KV_ROUTE_KEY_MAX 4096 /* a JSON key's text read for routing, quotes included (keys: 1024 bytes) */
#define NO_VALUE SIZE_MAX

struct kv_stmt {
	bool used;
	uint32_t gen;               /* its Parses: a portal put aside before it ran runs its own call only */
	char name[VDB_NAME_MAX];
	struct kv_call call;
	int ntypes;
	uint32_t types[KV_CALL_MAX_PARAMS];
};

/* A cursor (DECLARE): its call's answer, kept whole, fetched from off on. At most
 * KV_FRONT_CURSORS open per client (each holds a whole answer in memory; PostgreSQL has no
 * limit); the array grows as they are declared. */
#define KV_FRONT_CURSORS 64
struct kv_cursor {
	bool used;
	bool hold;          /* WITH HOLD: it outlives its transaction's COMMIT */
	bool in_txn;        /* declared in the transaction still open (its ROLLBACK drops it) */
	int level;          /* the savepoints open when it was declared (a ROLLBACK TO one of them drops it) */
	char name[64];
	struct kv_call shape; /* the call's result columns (from, op, column; nothing allocated) */
	uint8_t *rows;      /* its DataRows */
	size_t len, off;    /* off: where row pos + 1 begins (the end of the rows past the last) */
	/* Where it stands, as PostgreSQL's portal: pos, the scan's row (0 before the first, rows + 1
	 * past the last); at_start, at_end and portal_pos, PostgreSQL's atStart, atEnd and
	 * portalPos, which decide what a move does and counts as PostgreSQL decides it. */
	uint64_t pos, portal_pos;
	bool at_start, at_end;
	bool scroll;        /* it may move backward: SCROLL, or neither said and a call FROM a
			     * function (PostgreSQL's function scan can; the Result of SELECT kv.f() cannot) */
	size_t *ix;         /* ix[i]: where row i + 1 begins, ix[nrows]: their end; built at the
			     * first move backward */
	uint64_t nrows;
};

/* A transaction's savepoints (SAVEPOINT, RELEASE, ROLLBACK TO): what a ROLLBACK TO one
 * restores. A savepoint made before the transaction reaches its shard is made there right
 * after its BEGIN (kv_txn.savepoints, set then); after, each statement is sent as the client's
 * (KV_TXN_STEP). As many as PostgreSQL keeps, nearly: pgjdbc's autosave=always makes one before
 * every statement of a transaction and never releases them (a same name hides the older). */
#define KV_FRONT_SAVEPOINTS 65536
struct kv_savepoint {
	char name[64];
	struct kv_txn_chars defaults, txn_chars; /* as they were when it was made */
	uint32_t timeout_ms[KV_TIMEOUT_COUNT], timeout_local[KV_TIMEOUT_COUNT];
};
struct kv_savepoints {
	int n, cap;
	struct kv_savepoint *sp;               /* cap of them, n made */
	const char **names;                    /* kv_txn.savepoints: sp[i].name, set at routing */
	int names_cap;
	char step[KV_SAVEPOINT_SQL_MAX];       /* the statement in flight (KV_TXN_STEP) */
	const char *tag;                       /* its CommandComplete */
};

/* A value of a Bind message. */
struct kv_bind_val {
	const uint8_t *p; /* NULL: SQL NULL */
	uint32_t len;
	bool binary;
};

/* A named portal of a call, executed (rows left, or run to its end) or not run yet (of a
 * named statement), put aside when another portal was bound or a simple Query ran a call
 * (pgjdbc reads a result set with a fetch size while other statements run between its
 * fetches): PostgreSQL keeps every portal until its transaction ends. Its rows are the job's
 * buffer it had, swapped out and back. */
#define KV_FRONT_PORTALS 16
struct kv_portal {
	bool used;
	char name[VDB_NAME_MAX];
	struct kv_call shape;  /* its call's result columns (shape_of: its statement may be gone) */
	uint64_t binary, pos;  /* its Bind's result formats; portal_pos */
	bool suspended, done;
	const char *done_tag;
	size_t rest_off;
	uint8_t *rows;         /* its answer (job.rows when it was bound); a free slot's: a spare buffer */
	size_t rows_len, rows_cap;
	/* not run yet (a named statement's: asyncpg's cursor before its first fetch): that
	 * statement, as it was parsed (gen), and its Bind's values (the session's bind_copy when
	 * it was bound, traded as rows are) */
	bool pending;
	int stmt;
	uint32_t gen;
	uint8_t *bind_copy;
	size_t bind_cap;
	struct kv_bind_val bind_vals[KV_CALL_MAX_PARAMS];
};

/* The elements of a text[] argument, as offsets into vals (then pointers, at submit). */
struct kv_list {
	size_t *offs;
	const char **ptrs;
	int n, cap;
};

struct kv_session {
	struct vdb v;                /* v.client: NULL once the client is gone (orphan) */
	struct worker *worker;
	struct kv_stmt unnamed;      /* statement 0 (stmt_at) */
	struct kv_stmt **named;      /* statements 1..nnamed: each allocated once, reused when closed */
	int nnamed, named_cap;
	struct kv_call query;        /* the call of the last simple Query */
	int portal_stmt;             /* v.portal_set: the bound portal's statement; its values in job */
	uint64_t portal_binary;      /* its Bind's result formats: bit i, column i in binary */
	uint32_t max_rows;           /* its Execute's row limit (0: none) */
	bool suspended;              /* it sent PortalSuspended: job's rows from rest_off are left */
	bool portal_done;            /* it ran to its end: another Execute answers SELECT 0, as
				      * PostgreSQL's; a portal lasts until another Bind, a Close, or
				      * the end of its transaction (ReadyForQuery outside one) */
	const char *done_tag;        /* portal_done: that Execute's tag, when not SELECT 0 (a static
				      * string: SHOW's) */
	size_t rest_off;
	uint64_t portal_pos;         /* the rows the bound portal returned or moved past (PostgreSQL's portalPos) */
	bool rest_fetch;             /* suspended: job's rows are a FETCH's (its tags FETCH n) */
	struct kv_call fetch_shape;  /* then their columns (busy_call points here) */
	uint8_t *fetch_buf;          /* a FETCH BACKWARD's rows, in the order read */
	size_t fetch_cap;
	const struct kv_call *busy_call; /* v.busy: the call with the router */
	struct kv_job job;           /* the call in flight; its strings point into vals */
	struct worker_msg *msg;      /* reserved at submit: the answer's way back to the worker */
	char *vals;                  /* the bound texts, NUL-terminated */
	size_t vals_len, vals_cap;
	struct kv_list lists[2];     /* the text[] arguments: [0] a batch's keys, [1] put_many's values */
	/* A named portal's Bind of a call, its values kept while the call has not run: a simple
	 * Query's call binds the job over them (rebind), and the portal, which PostgreSQL keeps,
	 * binds them again before it runs. */
	uint8_t *bind_copy;
	size_t bind_cap;
	struct kv_bind_val bind_vals[KV_CALL_MAX_PARAMS];
	bool rebind;
	const struct kv_call *moving; /* a FETCH or MOVE of the named portal, whose call runs first */
	struct kv_portal *portals;   /* KV_FRONT_PORTALS put aside, allocated at the first */
	bool resumed;                /* the bound portal was one of them: its columns in portal_shape,
				      * not its statement's (which may be gone or another) */
	struct kv_call portal_shape;
	/* A transaction the client began (v.txn_status 'T' or 'E'): its calls go to the shard of
	 * its first call's keys, on a connection it holds from then to its end (shard_loop.c). */
	struct kv_txn txn;
	char txn_begin[KV_CALL_BEGIN_MAX]; /* txn.begin: from txn_chars */
	struct kv_txn_chars txn_chars; /* its characteristics: BEGIN's options over the defaults, SET TRANSACTION's */
	bool txn_routed;             /* txn.shard is its first call's */
	bool txn_queried;            /* a call ran in it (its characteristics are fixed, as PostgreSQL's
				      * after its first snapshot) */
	/* The session's defaults (SET SESSION CHARACTERISTICS, default_transaction_*): unset, the
	 * server's; as they were at BEGIN, restored when the transaction rolls back (a setting's
	 * change is transactional); default_transaction_read_only as last reported (ParameterStatus). */
	struct kv_txn_chars defaults, defaults_at_begin;
	bool reported_read_only;
	/* statement_timeout and lock_timeout (ms, 0: none of the client's), each call run on its
	 * shard under them (kv_job.timeout_ms, timeouts_now): the session's; in a transaction,
	 * its own (SET LOCAL's, else the session's); as at BEGIN (restored as defaults are); as
	 * the startup packet gave them (RESET's). */
	uint32_t timeout_ms[KV_TIMEOUT_COUNT], timeout_local[KV_TIMEOUT_COUNT], timeout_at_begin[KV_TIMEOUT_COUNT],
		timeout_boot[KV_TIMEOUT_COUNT];
	/* The session's settings as they were at the first Execute after a Sync, outside a
	 * transaction (pipe_saved): PostgreSQL runs the Executes up to the Sync in one implicit
	 * transaction, so an error before the Sync undoes their SETs (pipe_nerrors: v.nerrors then). */
	bool pipe_saved;
	uint32_t pipe_nerrors;
	struct kv_txn_chars pipe_defaults;
	uint32_t pipe_timeouts[KV_TIMEOUT_COUNT];
	/* A simple Query of several statements: run in turn, as PostgreSQL runs them, each in the
	 * client's transaction, else in an implicit one (txn_status 'T' inside the Query, its calls
	 * on one shard as a transaction's) that ends at a COMMIT or ROLLBACK of the Query's or at
	 * its end; the first error ends the Query (asyncpg's pool resets a connection with one). */
	char *multi;                 /* the Query's text, each statement's end cut with a NUL */
	struct kv_span *multi_spans; /* KV_CALL_MAX_STMTS, allocated at the first such Query */
	int multi_n, multi_next;     /* its statements (0: no such Query), the next to run */
	uint32_t multi_errors;       /* v.nerrors when the statement running began */
	bool implicit;               /* the transaction is the Query's implicit one */
	struct kv_cursor *cursors;   /* ncursors of them, used or free */
	int ncursors;
	struct kv_savepoints *sps;   /* allocated at the first SAVEPOINT */
	/* the bound KV_LOCAL_TYPE_INFO's arguments: an oid, or a name and a schema ("" when NULL
	 * or longer than a name: then no type has it) */
	uint32_t type_oid;
	char type_name[64], type_schema[64];
	const char *end_tag;         /* the end in flight: "COMMIT" or "ROLLBACK"; NULL, an implicit
				      * transaction's (no CommandComplete) */
	bool warming;                /* a read of the call's key runs first: routing was not ready */
	enum kv_op warm_op;          /* the call's, while warming */
	const char *warm_args[KV_CALL_MAX_ARGS];
	const char *warm_key;
	uint64_t idle_tx_ms;         /* the rule's idle_transaction_timeout (0: none) */
	ev_timer idle_tx;            /* while in a transaction and idle_tx_ms: checks the client's idle time */
	double active_at;            /* the last request read or answer written */
};

static struct kv_session *session_of(struct vdb *v)
{
	return (struct kv_session *)((char *)v - offsetof(struct kv_session, v));
}

#define KV_FRONT_COLS 5 /* a call's result columns at most: key and value; a type's five (psycopg's TypeInfo) */

/* call's result columns: their number, and each one's type in types. */
static int result_types(const struct kv_call *call, uint32_t types[KV_FRONT_COLS])
{
	if (call->local == KV_LOCAL_VALUE) {
		types[0] = call->value_type;
		return 1;
	}
	if (call->local == KV_LOCAL_TYPE_INFO && call->type_query == KV_TYPE_BY_REGTYPE) {
		static const uint32_t cols[] = { KV_OID_NAME, KV_OID_OID, KV_OID_OID, KV_OID_TEXT, KV_OID_CHAR };
		memcpy(types, cols, sizeof cols);
		return 5;
	}
	if (call->local == KV_LOCAL_TYPE_INFO) {
		types[0] = types[1] = KV_OID_OID;
		types[2] = KV_OID_CHAR;
		return 3;
	}
	if (call->from) {
		types[0] = KV_OID_TEXT;
		types[1] = KV_OID_JSONB;
		return 2;
	}
	types[0] = kv_call_result_type(call->op);
	return 1;
}

/* binary: bit i, column i's values in binary (a Bind's result formats). */
static void out_row_description(struct kv_session *ks, const struct kv_call *call, uint64_t binary)
{
	struct vdb_col cols[KV_FRONT_COLS];
	uint32_t types[KV_FRONT_COLS];
	int n = result_types(call, types);

	static const char *const type_cols[2][KV_FRONT_COLS] = { { "oid", "elemtype", "kind" },
								  { "name", "oid", "array_oid", "regtype", "delimiter" } };
	for (int i = 0; i < n; i++)
		cols[i] = (struct vdb_col){ call->local == KV_LOCAL_TYPE_INFO ? type_cols[call->type_query == KV_TYPE_BY_REGTYPE][i]
					    : call->from			  ? (i ? "value" : "key")
										  : call->column,
					    types[i], (uint16_t)((binary >> i) & 1) };
	vdb_out_row_description(&ks->v.out, cols, n);
}

/* A binary value's length for a text one t[0, n) of type oid (PostgreSQL's send form: text and
 * "char" as they are, jsonb after its version byte 1, int8 / int4 / oid big-endian, bool one byte); -1 when t is
 * not that type's text form (the shard's answers always are). *v: an integer's value. */
static long binary_len(uint32_t oid, const uint8_t *t, uint32_t n, long long *v)
{
	switch (oid) {
	case KV_OID_JSONB:
		return (long)n + 1;
	case KV_OID_BOOL:
		return n == 1 && (t[0] == 't' || t[0] == 'f') ? 1 : -1;
	case KV_OID_INT8:
		return resp_to_ll((const char *)t, n, v) ? 8 : -1;
	case KV_OID_INT4:
		return resp_to_ll((const char *)t, n, v) && *v >= INT32_MIN && *v <= INT32_MAX ? 4 : -1;
	case KV_OID_OID:
		return resp_to_ll((const char *)t, n, v) && *v >= 0 && *v <= UINT32_MAX ? 4 : -1;
	default: /* text */
		return (long)n;
	}
}

/* One DataRow's body b[0, n) (ncols text columns of types, as the shard sent them) with the
 * columns binary marks in binary: written to o, or only measured when o is NULL. Its body's
 * length; -1 when it is not what the call answers. */
static long row_binary(struct vdb_out *o, const uint8_t *b, size_t n, const uint32_t *types, int ncols,
		       uint64_t binary)
{
	struct proto_reader r;
	long out = 2;
	proto_reader_init(&r, b, n);
	if (proto_get_u16(&r) != ncols || r.err)
		return -1;
	if (o) {
		uint16_t nc = htons((uint16_t)ncols);
		vdb_out_raw(o, &nc, 2);
	}
	for (int i = 0; i < ncols; i++) {
		uint32_t len = proto_get_u32(&r), be;
		const uint8_t *t = len == UINT32_MAX ? NULL : proto_get_bytes(&r, len);
		long long v = 0;
		long bl = !t ? 0 : (binary >> i) & 1 ? binary_len(types[i], t, len, &v) : (long)len;
		if (r.err || bl < 0)
			return -1;
		out += 4 + bl;
		if (!o)
			continue;
		be = htonl(t ? (uint32_t)bl : UINT32_MAX);
		vdb_out_raw(o, &be, 4);
		if (!t)
			continue;
		if (!((binary >> i) & 1) || types[i] == KV_OID_TEXT || types[i] == KV_OID_CHAR || types[i] == KV_OID_NAME) {
			vdb_out_raw(o, t, len);
		} else if (types[i] == KV_OID_JSONB) {
			vdb_out_raw(o, "\1", 1);
			vdb_out_raw(o, t, len);
		} else if (types[i] == KV_OID_BOOL) {
			vdb_out_raw(o, t[0] == 't' ? "\1" : "\0", 1);
		} else {
			uint8_t num[8];
			for (long k = 0; k < bl; k++)
				num[k] = (uint8_t)((unsigned long long)v >> (8 * (bl - 1 - k)));
			vdb_out_raw(o, num, (size_t)bl);
		}
	}
	return out;
}

/* The end of the DataRow at rows[off, len) (its body in *body, *blen bytes); 0 when there is
 * none there, or not a whole one. */
static size_t data_row_end(const uint8_t *rows, size_t len, size_t off, const uint8_t **body, size_t *blen)
{
	uint32_t mlen;

	if (off >= len || len - off < 5 || rows[off] != 'D')
		return 0;
	memcpy(&mlen, rows + off + 1, 4);
	mlen = ntohl(mlen);
	if (mlen < 4 || mlen > len - off - 1)
		return 0;
	*body = rows + off + 5;
	*blen = mlen - 4;
	return off + 1 + mlen;
}

/* A DataRow of ncols text columns vals (none NULL) written into row[0, cap), as a shard
 * sends one: its length, or 0 when it does not fit. */
static size_t text_row(uint8_t *row, size_t cap, int ncols, const char *const *vals)
{
	size_t n = 7;
	uint32_t be;

	if (cap < n)
		return 0;
	for (int c = 0; c < ncols; c++) {
		size_t len = strlen(vals[c]);
		if (len > cap - n || cap - n - len < 4)
			return 0;
		be = htonl((uint32_t)len);
		memcpy(row + n, &be, 4);
		memcpy(row + n + 4, vals[c], len);
		n += 4 + len;
	}
	row[0] = 'D';
	be = htonl((uint32_t)n - 1);
	memcpy(row + 1, &be, 4);
	row[5] = (uint8_t)(ncols >> 8), row[6] = (uint8_t)ncols;
	return n;
}

/* The answer's DataRows rows[0, len) written with the columns binary marks in binary (each row
 * measured, then written). false (nothing written) when a row is not what the call answers:
 * all are checked first. */
static bool out_rows_binary(struct vdb_out *o, const uint32_t *types, int ncols, uint64_t binary, const uint8_t *rows,
			    size_t len)
{
	for (int pass = 0; pass < 2; pass++) {
		for (size_t off = 0, end; off < len; off = end) {
			const uint8_t *body;
			size_t blen;
			end = data_row_end(rows, len, off, &body, &blen);
			long out = end ? row_binary(NULL, body, blen, types, ncols, binary) : -1;
			if (out < 0)
				return false;
			if (pass == 1) {
				uint8_t head[5] = { 'D' };
				uint32_t l = htonl((uint32_t)(4 + out));
				memcpy(head + 1, &l, 4);
				vdb_out_raw(o, head, sizeof head);
				(void)row_binary(o, body, blen, types, ncols, binary);
			}
		}
	}
	return true;
}

/* The end of the DataRows of rows[0, len) from off on, at most limit of them (UINT64_MAX: all);
 * *n, how many. Stops before a row that is not whole. */
static size_t rows_upto(const uint8_t *rows, size_t len, size_t off, uint64_t limit, uint64_t *n)
{
	*n = 0;
	while (*n < limit) {
		const uint8_t *body;
		size_t blen, next = data_row_end(rows, len, off, &body, &blen);
		if (!next)
			break;
		off = next;
		(*n)++;
	}
	return off;
}

/* DataRows rows[0, len) of call's columns, each column in the format binary marks (bit set:
 * binary; the shard's rows are text). false (nothing written) when a row is not what the call
 * answers. */
static bool out_rows(struct kv_session *ks, const struct kv_call *call, uint64_t binary, const uint8_t *rows,
		     size_t len)
{
	uint32_t types[KV_FRONT_COLS];

	if (!len) /* none (rows may be NULL: a session's first call answered without any) */
		return true;
	if (!binary) {
		vdb_out_raw(&ks->v.out, rows, len);
		return true;
	}
	return out_rows_binary(&ks->v.out, types, result_types(call, types), binary, rows, len);
}

/* What fixes a call's result columns (out_row_description, result_types): from, op, column;
 * nothing allocated, kept past the call. */
static struct kv_call shape_of(const struct kv_call *call)
{
	struct kv_call shape = { .from = call->from, .op = call->op };
	snprintf(shape.column, sizeof shape.column, "%s", call->column);
	return shape;
}

/* ---- login ---- */

static void cursor_drop(struct kv_cursor *cur);

static void kv_session_free(struct kv_session *ks)
{
	kv_txn_abandon(&ks->txn); /* (no call in flight) its connection closes: the shard rolls it back */
	ev_timer_stop(ks->worker->loop, &ks->idle_tx);
	kv_call_free(&ks->unnamed.call);
	free(ks->multi);
	free(ks->multi_spans);
	if (ks->sps) {
		free(ks->sps->sp);
		free(ks->sps->names);
		free(ks->sps);
	}
	for (int i = 0; i < ks->ncursors; i++)
		cursor_drop(&ks->cursors[i]);
	free(ks->cursors);
	free(ks->fetch_buf);
	for (int i = 0; i < ks->nnamed; i++) {
		kv_call_free(&ks->named[i]->call);
		free(ks->named[i]);
	}
	free(ks->named);
	kv_call_free(&ks->query);
	kv_job_free(&ks->job);
	free(ks->bind_copy);
	for (int i = 0; ks->portals && i < KV_FRONT_PORTALS; i++)
		free(ks->portals[i].rows), free(ks->portals[i].bind_copy);
	free(ks->portals);
	free(ks->vals);
	for (int i = 0; i < 2; i++) {
		free(ks->lists[i].offs);
		free(ks->lists[i].ptrs);
	}
	vdb_free(&ks->v);
	free(ks);
}

static const struct vdb_ops kv_ops;

static void idle_tx_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void kv_front_startup(struct client *c);
static void kv_front_begin(struct client *c);
static void kv_front_closed(struct client *c);

static bool kv_enabled(const struct tusk_config *cfg)
{
	return cfg->kv.zone != NULL;
}

static const char *const kv_databases[] = { KV_FRONT_DATABASE, NULL };

/* A CancelRequest with the client's key (vdb_greet registered it), on its worker: its call in
 * flight, if any, is cancelled as kv_router_cancel can; a cancel while none runs is ignored,
 * as PostgreSQL ignores one between statements. */
static bool kv_front_cancel(struct client *c)
{
	struct kv_session *ks = c->vdb ? session_of(c->vdb) : NULL;
	if (!ks || !ks->v.busy) {
		log_debug(c->id, c->ctx, "kv: cancel request while no call runs; ignored");
		return true;
	}
	const char *what = kv_router_cancel(ks->worker->rt->kv_router, &ks->job);
	log_info(c->id, c->ctx, "kv: client asked to cancel its kv.%s: %s", kv_op_name(ks->job.op), what);
	return true;
}

static const struct client_kind kv_kind = {
	.name = "kv",
	.databases = kv_databases,
	.enabled = kv_enabled,
	.startup = kv_front_startup,
	.begin = kv_front_begin,
	.input = vdb_client_input,
	.writable = vdb_client_writable,
	.closed = kv_front_closed,
	.cancel = kv_front_cancel,
	.resident = true,
};

void kv_front_register(void)
{
	client_kind_register(&kv_kind);
}

/* idle_transaction_timeout, checked once a second as the pooler's is: a client that sat idle
 * inside its transaction that long is closed (its shard connection with it: rolled back). */
static void idle_tx_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct kv_session *ks = t->data;
	(void)revents;

	if (!ks->v.txn_status || !ks->v.client) {
		ev_timer_stop(loop, t);
		return;
	}
	if (ks->v.busy || ev_now(loop) - ks->active_at < (double)ks->idle_tx_ms / 1000.0)
		return;
	ev_timer_stop(loop, t);
	client_fail(ks->v.client, "25P03",
		    "terminating connection due to idle-in-transaction timeout (idle_transaction_timeout)");
}

/* After the startup packet: pick the rule, authenticate, and begin when that is done at once. */
static void kv_front_startup(struct client *c)
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
	vdb_init(&ks->v, c, &kv_ops); /* c->vdb: from here on, client_close frees ks */
	ks->worker = c->worker;
	ks->defaults = KV_TXN_CHARS_UNSET;
	ks->idle_tx_ms = config_idle_transaction_timeout(cfg, rule);
	ev_init(&ks->idle_tx, idle_tx_cb);
	ks->idle_tx.repeat = 1.0;
	ks->idle_tx.data = ks;
	/* auth_query as for the Redis listener: kv is no database of the server's, so the query
	 * runs in the rule's server_database, else in postgres */
	if (client_auth_begin(c, rule->client_auth, rule, rule->server_database ? rule->server_database : "postgres"))
		kv_front_begin(c);
}

/* Authenticated: the transaction settings' defaults the startup packet gives (as parameters or
 * in options, PGOPTIONS="-c default_transaction_read_only=on"); greet, and answer calls from
 * now on. */
static void kv_front_begin(struct client *c)
{
	struct kv_session *ks = session_of(c->vdb);

	for (enum kv_show s = KV_SHOW_DEFAULT_ISOLATION; s <= KV_SHOW_DEFAULT_DEFERRABLE; s++) {
		const char *name = kv_show_name(s), *text = session_param_get(&c->session, name);
		if (!text)
			continue;
		int value = kv_txn_char_value(s, text, strlen(text));
		if (value < 0) {
			client_fail(c, "22023", s == KV_SHOW_DEFAULT_ISOLATION ? "invalid value for parameter \"%s\": \"%s\""
									: "parameter \"%s\" requires a Boolean value: \"%s\"",
				    name, text);
			return;
		}
		*kv_txn_char_field(&ks->defaults, s) = (int8_t)value;
	}
	for (int t = 0; t < KV_TIMEOUT_COUNT; t++) {
		const char *text = session_param_get(&c->session, kv_timeout_name((enum kv_timeout)t));
		char err[300];
		if (text && kv_timeout_value((enum kv_timeout)t, text, strlen(text), &ks->timeout_boot[t], err, sizeof err) < 0) {
			client_fail(c, "22023", "%s", err);
			return;
		}
		ks->timeout_ms[t] = ks->timeout_local[t] = ks->timeout_boot[t];
	}
	ks->reported_read_only = ks->defaults.read_only == 1;
	log_info(c->id, c->ctx, "kv login");
	vdb_greet(c->vdb, "15.0 (tusk " TUSK_VERSION " kv)", "ISO, MDY", ks->reported_read_only);
}

/* Teardown (from client_close). A call in flight keeps its session until it is answered. */
static void kv_front_closed(struct client *c)
{
	if (!c->vdb)
		return;
	struct kv_session *ks = session_of(c->vdb);
	c->vdb = NULL;
	if (ks->v.busy) {
		ks->v.client = NULL; /* freed when the router's answer arrives */
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
		vdb_error(&ks->v, "22021", "invalid byte sequence for encoding \"UTF8\": 0x00");
		return NO_VALUE;
	}
	char *v = grow_bytes(ks->vals, &ks->vals_cap, ks->vals_len + n + 1, 1024);
	if (!v) {
		vdb_error(&ks->v, "53200", "out of memory");
		return NO_VALUE;
	}
	ks->vals = v;
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
	if (call->local == KV_LOCAL_TYPE_INFO)
		return call->type_query == KV_TYPE_BY_OID ? KV_OID_OID
		       : call->type_query == KV_TYPE_BY_NAME ? KV_OID_NAME
							     : KV_OID_REGTYPE;
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
		vdb_error(&ks->v, "53200", "out of memory");
		return 0;
	}
	long n = kv_binary_scalar_text(oid, v->p, v->len, tmp, (size_t)v->len + 64);
	if (n < 0) {
		free(tmp);
		vdb_error(&ks->v, "22P03", "kv: parameter $%d: unsupported or malformed binary value of type %u "
				      "(send text, or binary text, jsonb, interval or text[])", a->param, oid);
		return 0;
	}
	*off = add_val(ks, tmp, (size_t)n);
	free(tmp);
	return *off != NO_VALUE;
}

/* One more element of list, stored at off in vals. */
static bool push_key(struct kv_session *ks, struct kv_list *l, size_t off)
{
	if (l->n >= KV_CALL_MAX_KEYS) {
		vdb_error(&ks->v, "54000", "kv: a batch takes at most %d keys", KV_CALL_MAX_KEYS);
		return false;
	}
	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 64;
		size_t *o = realloc(l->offs, (size_t)cap * sizeof *o);
		if (o)
			l->offs = o;
		const char **k = o ? realloc(l->ptrs, (size_t)cap * sizeof *k) : NULL;
		if (!k) {
			vdb_error(&ks->v, "53200", "out of memory");
			return false;
		}
		l->ptrs = k;
		l->cap = cap;
	}
	l->offs[l->n++] = off;
	return true;
}

static bool add_key(struct kv_session *ks, struct kv_list *l, const char *p, size_t len)
{
	if (!p) {
		vdb_error(&ks->v, "22004", l == &ks->lists[0] ? "kv: namespace and key must not be NULL"
							       : "kv: value must not be NULL (kv.delete removes a key)");
		return false;
	}
	size_t off = add_val(ks, p, len);
	return off != NO_VALUE && push_key(ks, l, off);
}

/* A text[] argument (a batch's keys, put_many's values): ARRAY[...], a text[] constant or a
 * text[] parameter. */
static bool bind_keys(struct kv_session *ks, const struct kv_stmt *st, const struct kv_call *call,
		      const struct kv_arg *a, const struct kv_bind_val *vals, struct kv_list *l)
{
	if (a->kind == KV_ARG_ARRAY) {
		for (uint32_t e = 0; e < a->n; e++) {
			size_t off;
			if (!bind_scalar(ks, st, call, &call->elems[a->first + e], vals, &off))
				return false;
			if (off == NO_VALUE)
				return add_key(ks, l, NULL, 0);
			if (!push_key(ks, l, off))
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
		vdb_error(&ks->v, "53200", "out of memory");
		return false;
	}
	n = binary ? kv_binary_array_parse(p, len, elems, KV_CALL_MAX_KEYS)
		   : kv_text_array_parse((const char *)p, len, scratch, elems, KV_CALL_MAX_KEYS);
	bool ok = n >= 0;
	if (n == -E2BIG)
		vdb_error(&ks->v, "54000", "kv: a batch takes at most %d keys", KV_CALL_MAX_KEYS);
	else if (n < 0)
		vdb_error(&ks->v, "22P02", "kv: malformed array (a one-dimensional text[] is expected)");
	for (int i = 0; ok && i < n; i++)
		ok = add_key(ks, l, elems[i].p, elems[i].len);
	free(elems);
	free(scratch);
	return ok;
}

/* kv.msetnx(ns, pairs) has no key argument: it is routed by the first key of its JSON object
 * (the shard refuses keys of another shard, kv._check, before it writes any). Its offset in
 * vals; "" (any shard, whose own parse then answers) for an object not read here. */
static size_t first_json_key(struct kv_session *ks, size_t pairs)
{
	char key[KV_ROUTE_KEY_MAX];
	const char *s = ks->vals + pairs;
	long n = resp_json_first_key(s, strlen(s), key, sizeof key);
	return add_val(ks, key, n > 0 ? (size_t)n : 0);
}

/* Fill ks->job from call and the bound values. false after an error was written. */
static bool bind_call(struct kv_session *ks, const struct kv_stmt *st, const struct kv_call *call,
		      const struct kv_bind_val *vals)
{
	size_t offs[KV_CALL_MAX_ARGS];

	ks->vals_len = 0;
	ks->lists[0].n = ks->lists[1].n = 0;
	for (int i = 0; i < KV_CALL_MAX_ARGS; i++)
		offs[i] = NO_VALUE;
	for (int i = 0; i < call->nargs; i++) {
		if (kv_op_array_arg(call->op, i)) {
			if (!bind_keys(ks, st, call, &call->args[i], vals, &ks->lists[i == 1 ? 0 : 1]))
				return false;
		} else if (!bind_scalar(ks, st, call, &call->args[i], vals, &offs[i])) {
			return false;
		}
	}
	if (offs[0] == NO_VALUE || (!kv_op_keyless(call->op) && offs[1] == NO_VALUE)) {
		vdb_error(&ks->v, "22004", "kv: namespace and key must not be NULL");
		return false;
	}
	size_t route = offs[1];
	if (call->op == KV_OP_MSETNX && (route = first_json_key(ks, offs[1])) == NO_VALUE)
		return false;
	struct kv_job *job = &ks->job;
	job->op = call->op;
	for (int i = 0; i < KV_CALL_MAX_ARGS; i++)
		job->args[i] = offs[i] != NO_VALUE ? ks->vals + offs[i] : NULL;
	job->ns = job->args[0];
	job->key = kv_op_keyless(call->op) ? NULL : ks->vals + route;
	for (int l = 0; l < 2; l++)
		for (int i = 0; i < ks->lists[l].n; i++)
			ks->lists[l].ptrs[i] = ks->vals + ks->lists[l].offs[i];
	job->nkeys = ks->lists[0].n;
	job->keys = ks->lists[0].ptrs;
	job->nvalues = ks->lists[1].n;
	job->values = ks->lists[1].ptrs;
	return true;
}

/* ---- running a call ---- */

static void on_answer(struct worker *w, struct worker_msg *m);
static bool multi_run(struct kv_session *ks);

/* On the router's thread, or the worker's (job->local): hand the answer to the client's worker. */
static void answer_done(struct kv_job *job)
{
	struct kv_session *ks = job->arg;
	struct worker_msg *m = ks->msg;

	ks->msg = NULL;
	if (job->local)
		worker_post_local(ks->worker, m); /* ran on this worker's loop */
	else
		worker_post(ks->worker, m); /* its mutex orders the job's output before on_answer */
}

/* The timeouts a call runs under now: in a transaction its own, else the session's. */
static const uint32_t *timeouts_now(const struct kv_session *ks)
{
	return ks->v.txn_status ? ks->timeout_local : ks->timeout_ms;
}

/* Hand ks->job to the router. The session stays busy until on_answer. */
static bool submit(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	struct kv_router *r = ks->worker->rt->kv_router;

	if (!r) {
		vdb_error(&ks->v, "57P03", "kv routing is not running (see tusk's log)");
		ks->v.skipping = !simple;
		return false;
	}
	ks->msg = worker_msg_new(); /* recycled by the worker after on_answer */
	if (!ks->msg) {
		vdb_error(&ks->v, "53200", "out of memory");
		ks->v.skipping = !simple;
		return false;
	}
	ks->msg->fn = on_answer;
	ks->msg->arg = ks;
	ks->job.done = answer_done;
	ks->job.arg = ks;
	ks->job.worker = ks->worker;
	memcpy(ks->job.timeout_ms, timeouts_now(ks), sizeof ks->job.timeout_ms);
	ks->v.busy = true;
	ks->v.busy_simple = simple;
	ks->busy_call = call;
	ks->rest_fetch = false;
	kv_router_submit(r, &ks->job);
	return true;
}

/* An error that ends the request (the extended protocol then skips until Sync). */
static bool refuse(struct kv_session *ks, bool simple, const char *sqlstate, const char *text)
{
	vdb_error(&ks->v, sqlstate, "%s", text);
	ks->v.skipping = !simple;
	return false;
}

/* COMMIT or ROLLBACK: all an aborted transaction takes (PostgreSQL's IsTransactionExitStmt). */
static bool txn_exit(const struct kv_call *call)
{
	if (call->local == KV_LOCAL_ROLLBACK_TO)
		return true;
	return call->local == KV_LOCAL_COMMIT || call->local == KV_LOCAL_ROLLBACK;
}

/* ---- cursors ---- */

/* The cursor of that name, or NULL. */
static struct kv_cursor *find_cursor(struct kv_session *ks, const char *name)
{
	for (int i = 0; name[0] && i < ks->ncursors; i++)
		if (ks->cursors[i].used && strcmp(ks->cursors[i].name, name) == 0)
			return &ks->cursors[i];
	return NULL;
}

/* A free cursor, the array grown for it while below KV_FRONT_CURSORS; NULL when there are
 * that many (54000) or memory is short (53200): *state says which. */
static struct kv_cursor *free_cursor(struct kv_session *ks, const char **state)
{
	for (int i = 0; i < ks->ncursors; i++)
		if (!ks->cursors[i].used)
			return &ks->cursors[i];
	*state = "54000";
	if (ks->ncursors >= KV_FRONT_CURSORS)
		return NULL;
	*state = "53200";
	int old = ks->ncursors, n = old ? 2 * old : 4;
	struct kv_cursor *c = realloc(ks->cursors, (size_t)n * sizeof *c);
	if (!c)
		return NULL;
	memset(c + old, 0, (size_t)(n - old) * sizeof *c);
	ks->cursors = c;
	ks->ncursors = n;
	return &c[old];
}

static void cursor_drop(struct kv_cursor *cur)
{
	free(cur->rows);
	free(cur->ix);
	*cur = (struct kv_cursor){ 0 };
}

/* At a transaction's end (rolled_back: by a ROLLBACK, or a COMMIT that failed) the cursors it
 * leaves: those WITHOUT HOLD, and those it declared when it rolled back; else (txn_end false)
 * all of them (CLOSE ALL, DISCARD ALL). */
static void drop_cursors(struct kv_session *ks, bool txn_end, bool rolled_back)
{
	for (int i = 0; i < ks->ncursors; i++) {
		struct kv_cursor *cur = &ks->cursors[i];
		if (cur->used && (!txn_end || !cur->hold || (rolled_back && cur->in_txn)))
			cursor_drop(cur);
		else if (cur->used)
			cur->in_txn = false;
	}
}

/* The DECLARE's call answered (ks->job): its cursor keeps the rows. */
static void cursor_store(struct kv_session *ks, const struct kv_call *call)
{
	const char *state;
	struct kv_cursor *cur = free_cursor(ks, &state); /* there is one: DECLARE made sure */
	uint8_t *rows = ks->job.rows_len ? malloc(ks->job.rows_len) : NULL;

	if (!cur || (ks->job.rows_len && !rows)) {
		free(rows);
		vdb_error(&ks->v, "53200", "out of memory");
		return;
	}
	if (rows)
		memcpy(rows, ks->job.rows, ks->job.rows_len);
	*cur = (struct kv_cursor){ .used = true, .hold = call->hold, .in_txn = ks->v.txn_status != 0,
				   .level = ks->sps && ks->v.txn_status ? ks->sps->n : 0,
				   .shape = shape_of(call), .rows = rows, .len = ks->job.rows_len, .at_start = true,
				   .scroll = call->scroll > 0 || (call->scroll == 0 && call->from) };
	snprintf(cur->name, sizeof cur->name, "%s", call->name);
	vdb_complete(&ks->v, "DECLARE CURSOR");
}

/* ks->done_tag of a utility statement's portal, run: it cannot be run again. */
static const char portal_spent_tag[] = "";

static const char aborted_text[] = "current transaction is aborted, commands ignored until end of transaction block";

static void out_show(struct kv_session *ks, const struct kv_call *call, bool simple);
static bool deallocate(struct kv_session *ks, const struct kv_call *call, bool simple);
static void drop_named(struct kv_session *ks);

/* SET TRANSACTION (or SET transaction_*) in a transaction: what PostgreSQL refuses after its
 * first snapshot (here: its first call), and what tusk cannot change on a shard's transaction
 * that began; else the characteristics the shard's transaction will begin with. */
static bool txn_set_current(struct kv_session *ks, const struct kv_txn_chars *wanted, bool simple)
{
	struct kv_txn_chars now = ks->txn_chars, want = *wanted;
	bool sub = ks->sps && ks->sps->n > 0; /* in a savepoint: PostgreSQL's subtransaction */

	if (want.iso >= 0 && want.iso != (now.iso >= 0 ? now.iso : KV_ISO_READ_COMMITTED) && (ks->txn_queried || sub))
		return refuse(ks, simple, "25001",
			      ks->txn_queried ? "SET TRANSACTION ISOLATION LEVEL must be called before any query"
					      : "SET TRANSACTION ISOLATION LEVEL must not be called in a subtransaction");
	if (want.read_only == 0 && now.read_only == 1 && (ks->txn_queried || sub))
		return refuse(ks, simple, "25001",
			      sub ? "cannot set transaction read-write mode inside a read-only transaction"
				  : "transaction read-write mode must be set before any query");
	if (want.deferrable >= 0 && (ks->txn_queried || sub))
		return refuse(ks, simple, "25001",
			      sub ? "SET TRANSACTION [NOT] DEFERRABLE cannot be called within a subtransaction"
				  : "SET TRANSACTION [NOT] DEFERRABLE must be called before any query");
	if (want.iso >= 0)
		ks->txn_chars.iso = want.iso;
	if (want.read_only >= 0)
		ks->txn_chars.read_only = want.read_only;
	if (want.deferrable >= 0)
		ks->txn_chars.deferrable = want.deferrable;
	kv_txn_begin_text(&ks->txn_chars, ks->txn_begin);
	return true;
}

/* A transaction begins (BEGIN's, or a Query's implicit one): its characteristics are the
 * session's defaults, with BEGIN's options (opts) over them. */
static void txn_open(struct kv_session *ks, const struct kv_txn_chars *opts)
{
	ks->txn_chars = ks->defaults;
	if (opts->iso >= 0)
		ks->txn_chars.iso = opts->iso;
	if (opts->read_only >= 0)
		ks->txn_chars.read_only = opts->read_only;
	if (opts->deferrable >= 0)
		ks->txn_chars.deferrable = opts->deferrable;
	kv_txn_begin_text(&ks->txn_chars, ks->txn_begin);
	ks->defaults_at_begin = ks->defaults;
	memcpy(ks->timeout_at_begin, ks->timeout_ms, sizeof ks->timeout_ms);
	memcpy(ks->timeout_local, ks->timeout_ms, sizeof ks->timeout_ms);
	/* no savepoint per call: an error aborts the transaction, as PostgreSQL's */
	ks->txn = (struct kv_txn){ .begin = ks->txn_begin, .no_savepoints = true };
	ks->txn_routed = false;
	ks->txn_queried = false;
	if (ks->sps)
		ks->sps->n = 0;
	ks->v.txn_status = 'T';
}

/* The end of the transaction, COMMIT (commit: and it did not fail) or ROLLBACK, by call (the
 * COMMIT's, the ROLLBACK's, or the statement that ended a Query's implicit transaction), with
 * a CommandComplete (tag: false for an implicit transaction's end); true when the shard answers
 * it later. */
static bool txn_close(struct kv_session *ks, bool commit, bool tag, const struct kv_call *call, bool simple)
{
	struct vdb *v = &ks->v;

	commit = commit && v->txn_status == 'T'; /* COMMIT of a failed transaction rolls it back */
	ks->end_tag = tag ? (commit ? "COMMIT" : "ROLLBACK") : NULL;
	ks->implicit = false;
	if (!commit) {
		ks->defaults = ks->defaults_at_begin; /* a change of a setting is undone too */
		memcpy(ks->timeout_ms, ks->timeout_at_begin, sizeof ks->timeout_ms);
		drop_cursors(ks, true, true);
	}
	if (!ks->txn_routed) { /* no call reached a shard */
		v->txn_status = 0;
		if (ks->end_tag)
			vdb_complete(v, ks->end_tag);
		return false;
	}
	kv_job_txn_end(&ks->job, &ks->txn, commit ? KV_TXN_COMMIT : KV_TXN_ROLLBACK);
	return submit(ks, call, simple);
}

static bool run_call(struct kv_session *ks, const struct kv_call *call, bool simple);
static struct kv_stmt *stmt_at(struct kv_session *ks, int i);

/* ---- portals put aside ---- */

static bool portal_rebind(struct kv_session *ks, bool simple);

/* The bound portal's call (its result columns, once resumed). */
static const struct kv_call *portal_call(struct kv_session *ks)
{
	return ks->resumed ? &ks->portal_shape : &stmt_at(ks, ks->portal_stmt)->call;
}

/* The job's answer buffer and p's traded (the one put aside keeps its rows; the other, none). */
static void swap_rows(struct kv_job *job, struct kv_portal *p)
{
	uint8_t *rows = p->rows;
	size_t cap = p->rows_cap;

	p->rows = job->rows;
	p->rows_len = job->rows_len;
	p->rows_cap = job->rows_cap;
	job->rows = rows;
	job->rows_len = 0;
	job->rows_cap = cap;
}

/* The session's copy of a Bind (bind_copy, bind_vals) and p's traded. */
static void swap_binds(struct kv_session *ks, struct kv_portal *p)
{
	struct kv_portal was = *p;

	p->bind_copy = ks->bind_copy;
	p->bind_cap = ks->bind_cap;
	memcpy(p->bind_vals, ks->bind_vals, sizeof p->bind_vals);
	ks->bind_copy = was.bind_copy;
	ks->bind_cap = was.bind_cap;
	memcpy(ks->bind_vals, was.bind_vals, sizeof ks->bind_vals);
}

/* Another portal is about to be bound (or a simple Query's call to take the job): the bound
 * one put aside when it is a named portal of a call, executed, and there is room; else it is
 * gone (34000 after, as before portals were put aside). */
static void park_portal(struct kv_session *ks)
{
	struct vdb *v = &ks->v;
	bool pending = v->portal_set && v->portal_name[0] && !ks->suspended && !ks->portal_done && !ks->resumed &&
		       ks->portal_stmt > 0 && !portal_call(ks)->local;
	bool keep = pending || (v->portal_set && v->portal_name[0] && !ks->rest_fetch && !portal_call(ks)->local &&
				(ks->suspended || (ks->portal_done && ks->done_tag != portal_spent_tag)));
	struct kv_portal *p = NULL;

	if (keep && !ks->portals)
		ks->portals = calloc(KV_FRONT_PORTALS, sizeof *ks->portals);
	for (int i = 0; keep && ks->portals && i < KV_FRONT_PORTALS; i++) {
		struct kv_portal *q = &ks->portals[i];
		if (q->used && strcmp(q->name, v->portal_name) == 0) {
			p = q; /* (a stale one of the same name) */
			break;
		}
		if (!q->used && !p)
			p = q;
	}
	if (p) {
		p->used = true;
		snprintf(p->name, sizeof p->name, "%s", v->portal_name);
		p->shape = shape_of(portal_call(ks));
		p->binary = ks->portal_binary;
		p->pos = ks->portal_pos;
		p->suspended = ks->suspended;
		p->done = ks->portal_done;
		p->done_tag = ks->done_tag;
		p->rest_off = ks->rest_off;
		swap_rows(&ks->job, p);
		p->pending = pending;
		if (pending) { /* its values: the session's copy of its Bind, traded for the slot's buffer */
			p->stmt = ks->portal_stmt;
			p->gen = stmt_at(ks, ks->portal_stmt)->gen;
			swap_binds(ks, p);
		}
	}
	v->portal_set = false;
	ks->suspended = false;
	ks->portal_done = false;
	ks->resumed = false;
}

/* vdb's find_portal: the named portal put aside made the bound one (the bound one aside). */
static bool find_portal(struct vdb *v, const char *name)
{
	struct kv_session *ks = session_of(v);
	struct kv_portal *p = NULL;

	for (int i = 0; ks->portals && i < KV_FRONT_PORTALS && !p; i++)
		if (ks->portals[i].used && strcmp(ks->portals[i].name, name) == 0)
			p = &ks->portals[i];
	if (!p)
		return false;
	if (p->pending) { /* not run yet: its statement must be the one it was bound from */
		const struct kv_stmt *st = p->stmt <= ks->nnamed ? stmt_at(ks, p->stmt) : NULL;
		if (!st || !st->used || st->gen != p->gen) {
			p->used = false;
			return false;
		}
	}
	park_portal(ks);
	if (p->pending) {
		swap_binds(ks, p);
		p->used = false;
		ks->portal_stmt = p->stmt;
		ks->portal_binary = p->binary;
		ks->portal_pos = 0;
		ks->rest_fetch = false;
		if (!portal_rebind(ks, false)) /* (its values bound before: they bind again) */
			return false;
		vdb_bind_portal(v, name);
		return true;
	}
	size_t len = p->rows_len;
	swap_rows(&ks->job, p);
	ks->job.rows_len = len;
	p->used = false;
	ks->portal_shape = p->shape;
	ks->resumed = true;
	ks->portal_binary = p->binary;
	ks->portal_pos = p->pos;
	ks->suspended = p->suspended;
	ks->portal_done = p->done;
	ks->done_tag = p->done_tag;
	ks->rest_off = p->rest_off;
	ks->rest_fetch = false;
	ks->rebind = false;
	vdb_bind_portal(v, name);
	return true;
}

/* The portals put aside are gone (their transaction ended; CLOSE ALL; DISCARD ALL). */
static void drop_portals(struct kv_session *ks)
{
	for (int i = 0; ks->portals && i < KV_FRONT_PORTALS; i++)
		ks->portals[i].used = false;
}

/* ---- savepoints ---- */

/* The newest savepoint of that name: its index, or -1. */
static int find_savepoint(const struct kv_session *ks, const char *name)
{
	for (int i = ks->sps ? ks->sps->n - 1 : -1; i >= 0; i--)
		if (strcmp(ks->sps->sp[i].name, name) == 0)
			return i;
	return -1;
}

/* The transaction reaches its shard: kv_txn.savepoints, those made so far. false when out of
 * memory. */
static bool savepoint_names(struct kv_session *ks)
{
	struct kv_savepoints *sps = ks->sps;
	int n = sps ? sps->n : 0;

	ks->txn.savepoints = NULL;
	ks->txn.nsavepoints = 0;
	if (n == 0)
		return true;
	if (n > sps->names_cap) {
		const char **names = realloc(sps->names, (size_t)sps->cap * sizeof *names);
		if (!names)
			return false;
		sps->names = names;
		sps->names_cap = sps->cap;
	}
	for (int i = 0; i < n; i++)
		sps->names[i] = sps->sp[i].name;
	ks->txn.savepoints = sps->names;
	ks->txn.nsavepoints = n;
	return true;
}

/* SAVEPOINT, RELEASE, ROLLBACK TO: kept here, and sent to the shard once the transaction holds
 * one (as the client's statement; a savepoint made before, right after the shard's BEGIN).
 * True when the shard answers it later. */
static bool savepoint_stmt(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	static const char *const what[] = { [KV_LOCAL_SAVEPOINT] = "SAVEPOINT", [KV_LOCAL_RELEASE] = "RELEASE SAVEPOINT",
					    [KV_LOCAL_ROLLBACK_TO] = "ROLLBACK TO SAVEPOINT" };
	struct vdb *v = &ks->v;
	char text[160];
	int i = find_savepoint(ks, call->name);

	if (!v->txn_status || ks->implicit) {
		snprintf(text, sizeof text, "%s can only be used in transaction blocks", what[call->local]);
		return refuse(ks, simple, "25P01", text);
	}
	if (call->local == KV_LOCAL_SAVEPOINT) {
		if (!ks->sps && !(ks->sps = calloc(1, sizeof *ks->sps)))
			return refuse(ks, simple, "53200", "out of memory");
		if (ks->sps->n == KV_FRONT_SAVEPOINTS) {
			snprintf(text, sizeof text, "kv: at most %d savepoints open at a time", KV_FRONT_SAVEPOINTS);
			return refuse(ks, simple, "54000", text);
		}
		if (ks->sps->n == ks->sps->cap) {
			int cap = ks->sps->cap ? 2 * ks->sps->cap : 8;
			struct kv_savepoint *sp = realloc(ks->sps->sp, (size_t)cap * sizeof *sp);
			if (!sp)
				return refuse(ks, simple, "53200", "out of memory");
			ks->sps->sp = sp;
			ks->sps->cap = cap;
		}
		struct kv_savepoint *sp = &ks->sps->sp[ks->sps->n++];
		snprintf(sp->name, sizeof sp->name, "%s", call->name);
		sp->defaults = ks->defaults;
		sp->txn_chars = ks->txn_chars;
		memcpy(sp->timeout_ms, ks->timeout_ms, sizeof sp->timeout_ms);
		memcpy(sp->timeout_local, ks->timeout_local, sizeof sp->timeout_local);
		ks->sps->tag = "SAVEPOINT";
	} else if (i < 0) {
		snprintf(text, sizeof text, "savepoint \"%s\" does not exist", call->name);
		return refuse(ks, simple, "3B001", text);
	} else if (call->local == KV_LOCAL_RELEASE) { /* it and the later ones end; their changes stay */
		ks->sps->n = i;
		for (int c = 0; c < ks->ncursors; c++)
			if (ks->cursors[c].used && ks->cursors[c].level > i)
				ks->cursors[c].level = i;
		ks->sps->tag = "RELEASE";
	} else { /* back to it: the later ones end, their changes are undone; it stays */
		ks->sps->n = i + 1;
		ks->defaults = ks->sps->sp[i].defaults;
		ks->txn_chars = ks->sps->sp[i].txn_chars;
		memcpy(ks->timeout_ms, ks->sps->sp[i].timeout_ms, sizeof ks->timeout_ms);
		memcpy(ks->timeout_local, ks->sps->sp[i].timeout_local, sizeof ks->timeout_local);
		kv_txn_begin_text(&ks->txn_chars, ks->txn_begin);
		for (int c = 0; c < ks->ncursors; c++)
			if (ks->cursors[c].used && ks->cursors[c].in_txn && ks->cursors[c].level > i)
				cursor_drop(&ks->cursors[c]);
		v->txn_status = 'T';
		ks->sps->tag = "ROLLBACK";
	}
	if (!ks->txn_routed) {
		vdb_complete(v, ks->sps->tag);
		return false;
	}
	kv_savepoint_sql(ks->sps->step, what[call->local], call->name);
	kv_job_txn_end(&ks->job, &ks->txn, KV_TXN_STEP);
	ks->job.args[0] = ks->sps->step;
	return submit(ks, call, simple);
}

static bool no_cursor(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	char text[120];
	snprintf(text, sizeof text, "cursor \"%s\" does not exist", call->name);
	return refuse(ks, simple, "34000", text);
}

static void out_rest(struct kv_session *ks);

/* The rows a FETCH returns: forward, where they lie in the cursor's rows; backward, copied
 * (in the order read) into the session's fetch_buf. */
struct fetch_out {
	const uint8_t *rows;
	size_t len;
};

#define FETCH_NO_SCROLL (-1) /* a cursor that cannot scroll would move backward (55000) */
#define FETCH_NO_MEMORY (-2)

/* The cursor's row offsets (cur->ix), made at its first move backward, in one walk over
 * its rows. */
static bool cursor_index(struct kv_cursor *cur)
{
	size_t *ix = NULL, cap = 0, off = 0;
	uint64_t n = 0;

	if (cur->ix)
		return true;
	for (;;) {
		size_t *grown = grow_bytes(ix, &cap, (size_t)(n + 1) * sizeof *ix, 64 * sizeof *ix);
		if (!grown) {
			free(ix);
			return false;
		}
		ix = grown;
		ix[n] = off; /* where row n + 1 begins; after the last, their end */
		const uint8_t *body;
		size_t blen, next = data_row_end(cur->rows, cur->len, off, &body, &blen);
		if (!next)
			break;
		off = next;
		n++;
	}
	cur->ix = ix;
	cur->nrows = n;
	return true;
}

/* PostgreSQL's PortalRunSelect over the cursor's rows: up to count of them (KV_FETCH_ALL: all)
 * forward or backward from where it stands, its flags and position moved as PostgreSQL moves
 * a portal's; the rows read in *out when out is not NULL. How many it read, or FETCH_NO_*. */
static int64_t cursor_select(struct kv_session *ks, struct kv_cursor *cur, bool forward, int64_t count,
			     struct fetch_out *out)
{
	uint64_t n, want = count == KV_FETCH_ALL ? UINT64_MAX : (uint64_t)count;

	if (out)
		*out = (struct fetch_out){ NULL, 0 };
	if (forward) {
		if (cur->at_end || count <= 0)
			return 0;
		size_t end = rows_upto(cur->rows, cur->len, cur->off, want, &n);
		if (out)
			*out = (struct fetch_out){ cur->rows ? cur->rows + cur->off : NULL, end - cur->off };
		cur->off = end;
		cur->pos += n;
		cur->portal_pos += n;
		if (n > 0)
			cur->at_start = false;
		if (n < want) { /* ran past the last row */
			cur->at_end = true;
			cur->pos++;
		}
		return (int64_t)n;
	}
	if (!cur->scroll)
		return FETCH_NO_SCROLL;
	if (cur->at_start || count <= 0)
		return 0;
	if (!cursor_index(cur))
		return FETCH_NO_MEMORY;
	uint64_t avail = cur->pos ? cur->pos - 1 : 0; /* the rows before the scan's */
	n = avail < want ? avail : want;
	if (out && n) {
		size_t len = cur->ix[cur->pos - 1] - cur->ix[cur->pos - 1 - n], at = 0;
		uint8_t *buf = grow_bytes(ks->fetch_buf, &ks->fetch_cap, len, 4096);
		if (!buf)
			return FETCH_NO_MEMORY;
		ks->fetch_buf = buf;
		for (uint64_t r = cur->pos - 1; r > cur->pos - 1 - n; r--) { /* row r: [ix[r - 1], ix[r]) */
			memcpy(buf + at, cur->rows + cur->ix[r - 1], cur->ix[r] - cur->ix[r - 1]);
			at += cur->ix[r] - cur->ix[r - 1];
		}
		*out = (struct fetch_out){ buf, len };
	}
	if (n > 0 && cur->at_end) {
		cur->at_end = false;
		cur->portal_pos++;
	}
	if (n < want) { /* ran before the first row */
		cur->at_start = true;
		cur->portal_pos = 0;
		cur->pos = 0;
	} else {
		cur->portal_pos -= n;
		cur->pos -= n;
	}
	cur->off = cur->ix[cur->pos < cur->nrows ? cur->pos : cur->nrows];
	return (int64_t)n;
}

/* PostgreSQL's DoPortalRewind. */
static bool cursor_rewind(struct kv_cursor *cur)
{
	if (cur->at_start && !cur->at_end)
		return true;
	if (!cur->scroll)
		return false;
	cur->at_start = true;
	cur->at_end = false;
	cur->pos = cur->portal_pos = 0;
	cur->off = 0;
	return true;
}

/* PostgreSQL's DoPortalRunFetch: the FETCH's or MOVE's direction and count taken apart into
 * moves as PostgreSQL takes them (so that what it returns, counts, and refuses of a cursor
 * that cannot scroll is PostgreSQL's); the FETCH's rows in *out. How many rows, or FETCH_NO_*. */
static int64_t cursor_run_fetch(struct kv_session *ks, struct kv_cursor *cur, int dir, int64_t count, bool move,
				struct fetch_out *out)
{
	struct fetch_out *dest = move ? NULL : out;
	int64_t r = 0;

	*out = (struct fetch_out){ NULL, 0 };
	switch (dir) {
	case KV_FETCH_FORWARD:
	case KV_FETCH_BACKWARD:
		if (count < 0) {
			dir = dir == KV_FETCH_FORWARD ? KV_FETCH_BACKWARD : KV_FETCH_FORWARD;
			count = -count;
		}
		break;
	case KV_FETCH_ABSOLUTE:
		if (count > 0) {
			if ((uint64_t)count - 1 < cur->portal_pos / 2) { /* nearer the start: from there */
				if (!cursor_rewind(cur))
					return FETCH_NO_SCROLL;
				if (count > 1)
					r = cursor_select(ks, cur, true, count - 1, NULL);
			} else {
				int64_t pos = (int64_t)cur->portal_pos + (cur->at_end ? 1 : 0);
				if (count <= pos)
					r = cursor_select(ks, cur, false, pos - count + 1, NULL);
				else if (count > pos + 1)
					r = cursor_select(ks, cur, true, count - pos - 1, NULL);
			}
			return r < 0 ? r : cursor_select(ks, cur, true, 1, dest);
		}
		if (count < 0) { /* from the end */
			r = cursor_select(ks, cur, true, KV_FETCH_ALL, NULL);
			if (r >= 0 && count < -1)
				r = cursor_select(ks, cur, false, -count - 1, NULL);
			return r < 0 ? r : cursor_select(ks, cur, false, 1, dest);
		}
		return cursor_rewind(cur) ? cursor_select(ks, cur, true, 0, dest) : FETCH_NO_SCROLL;
	case KV_FETCH_RELATIVE:
		if (count > 0) {
			if (count > 1)
				r = cursor_select(ks, cur, true, count - 1, NULL);
			return r < 0 ? r : cursor_select(ks, cur, true, 1, dest);
		}
		if (count < 0) {
			if (count < -1)
				r = cursor_select(ks, cur, false, -count - 1, NULL);
			return r < 0 ? r : cursor_select(ks, cur, false, 1, dest);
		}
		dir = KV_FETCH_FORWARD; /* RELATIVE 0: FORWARD 0 */
		break;
	}
	bool forward = dir == KV_FETCH_FORWARD;
	if (count == 0) { /* the current row again, if it stands on one */
		bool on_row = !cur->at_start && !cur->at_end;
		if (move)
			return on_row ? 1 : 0;
		if (on_row) {
			if ((r = cursor_select(ks, cur, false, 1, NULL)) < 0)
				return r;
			count = 1;
			forward = true;
		}
	}
	if (!forward && count == KV_FETCH_ALL && move) { /* MOVE BACKWARD ALL: a rewind */
		int64_t moved = (int64_t)cur->portal_pos - (cur->portal_pos > 0 && !cur->at_end ? 1 : 0);
		return cursor_rewind(cur) ? moved : FETCH_NO_SCROLL;
	}
	return cursor_select(ks, cur, forward, count, dest);
}

/* FETCH / MOVE: the cursor's rows (in the simple protocol after its RowDescription; in the
 * extended in the Bind's formats), then FETCH n / MOVE n, as PostgreSQL's. */
static bool cursor_fetch(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	struct kv_cursor *cur = find_cursor(ks, call->name), portal;

	if (!cur && call->name[0] && !(ks->v.portal_set && strcmp(ks->v.portal_name, call->name) == 0))
		(void)find_portal(&ks->v, call->name); /* one put aside */

	if (!cur && simple && ks->v.portal_set && ks->v.portal_name[0] && strcmp(ks->v.portal_name, call->name) == 0 &&
	    !ks->suspended && !ks->portal_done && !portal_call(ks)->local) {
		/* the bound named portal not run yet (asyncpg's cursor.forward() before a fetch): its
		 * call runs, then the move (on_answer: moving) */
		if (ks->rebind && !portal_rebind(ks, true))
			return false;
		ks->moving = call;
		if (run_call(ks, &stmt_at(ks, ks->portal_stmt)->call, true))
			return true;
		ks->moving = NULL;
		return false;
	}
	if (!cur && ks->v.portal_set && ks->v.portal_name[0] && strcmp(ks->v.portal_name, call->name) == 0 &&
	    (ks->suspended || ks->portal_done)) {
		/* the bound named portal, executed (asyncpg's cursor.forward(): MOVE of its portal):
		 * the rows its last Execute left; a protocol portal cannot scroll, as PostgreSQL's */
		portal = (struct kv_cursor){ .shape = shape_of(portal_call(ks)), .rows = ks->job.rows,
					     .len = ks->suspended ? ks->job.rows_len : 0,
					     .off = ks->suspended ? ks->rest_off : 0, .pos = ks->portal_pos,
					     .portal_pos = ks->portal_pos,
					     .at_start = !ks->suspended || ks->rest_off == 0,
					     .at_end = !ks->suspended };
		cur = &portal;
	}
	if (!cur)
		return no_cursor(ks, call, simple);
	struct fetch_out out;
	int64_t got = cursor_run_fetch(ks, cur, call->fetch_dir, call->fetch_count, call->is_move, &out);
	if (got == FETCH_NO_SCROLL) {
		vdb_out_error(&ks->v, true, true, "55000", "cursor can only scan forward", NULL,
			      "Declare it with SCROLL option to enable backward scan.");
		ks->v.skipping = !simple;
		return false;
	}
	if (got < 0)
		return refuse(ks, simple, "53200", "out of memory");
	uint64_t n = (uint64_t)got;
	if (!simple && !call->is_move && ks->max_rows && n >= ks->max_rows && cur != &portal) {
		/* an Execute with a row limit the FETCH's rows reach: PostgreSQL runs the FETCH
		 * whole into its portal and hands its rows out max_rows at a time (PortalSuspended,
		 * after its last row too when the limit falls there), the last Execute's tag FETCH
		 * with the rows it sent */
		uint8_t *rows = grow_bytes(ks->job.rows, &ks->job.rows_cap, out.len, 4096);
		if (!rows)
			return refuse(ks, simple, "53200", "out of memory");
		ks->job.rows = rows;
		memcpy(rows, out.rows, out.len);
		ks->job.rows_len = out.len;
		ks->fetch_shape = cur->shape;
		ks->busy_call = &ks->fetch_shape;
		ks->rest_off = 0;
		ks->rest_fetch = true;
		out_rest(ks);
		return false;
	}
	if (!call->is_move) {
		if (simple)
			out_row_description(ks, &cur->shape, 0);
		if (!out_rows(ks, &cur->shape, simple ? 0 : ks->portal_binary, out.rows, out.len))
			return refuse(ks, simple, "XX000", "kv: a cursor's rows could not be sent in the Bind's formats");
	}
	if (cur == &portal)
		ks->portal_pos = cur->portal_pos;
	if (cur == &portal && ks->suspended) {
		ks->rest_off = cur->off;
		if (cur->off >= ks->job.rows_len) { /* run to its end */
			ks->suspended = false;
			ks->portal_done = true;
			ks->done_tag = NULL;
		}
	}
	char tag[40];
	snprintf(tag, sizeof tag, "%s %" PRIu64, call->is_move ? "MOVE" : "FETCH", n);
	vdb_complete(&ks->v, tag);
	return false;
}

/* The end of a statement answered here with nrows rows (at most one): in the extended
 * protocol, PortalSuspended when that reached the Execute's limit, as PostgreSQL's; the portal
 * stays, run to its end (another Execute: no row, and its tag). Else its tag (NULL: SELECT n). */
static void local_rows_end(struct kv_session *ks, bool simple, uint64_t nrows, const char *tag)
{
	if (!simple) {
		ks->v.portal_set = true; /* (vdb cleared it at the Execute) */
		ks->portal_done = true;
		ks->done_tag = tag;
		if (ks->max_rows && nrows == ks->max_rows) {
			vdb_out_msg(&ks->v.out, 's', NULL, 0);
			return;
		}
	}
	if (tag)
		vdb_complete(&ks->v, tag);
	else
		vdb_complete_select(&ks->v, nrows);
}

/* SELECT 1, version(), SHOW DateStyle ...: its RowDescription (a simple Query's), its row in
 * the Bind's formats, its tag. */
static void out_value(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	const char *text = call->value_fn == KV_VALUE_VERSION		? "PostgreSQL 15.0 (tusk " TUSK_VERSION " kv)"
			   : call->value_fn == KV_VALUE_CURRENT_SCHEMA	? "public"
			   : call->value_fn == KV_VALUE_CURRENT_DATABASE ? KV_FRONT_DATABASE
									: call->value;
	uint8_t row[7 + 4 + 128];
	size_t n = text_row(row, sizeof row, 1, &text); /* (a constant is under 64 bytes) */

	if (simple)
		out_row_description(ks, call, 0);
	if (!n || !out_rows(ks, call, simple ? 0 : ks->portal_binary, row, n)) {
		refuse(ks, simple, "XX000", "kv: a value could not be sent in the Bind's formats");
		return;
	}
	local_rows_end(ks, simple, 1, call->value_fn == KV_VALUE_SETTING ? "SHOW" : NULL);
}

/* The built-in type regtype's input text reads (a name as typname or as format_type writes it,
 * [pg_catalog.] before it, case folded unless quoted), or NULL. */
static const struct kv_pg_type *regtype_in(const char *text)
{
	char t[64];
	size_t n = strlen(text);

	while (n && text[n - 1] == ' ')
		n--;
	while (n && *text == ' ')
		text++, n--;
	if (n >= sizeof t)
		return NULL;
	memcpy(t, text, n);
	t[n] = '\0';
	const char *name = strncasecmp(t, "pg_catalog.", 11) == 0 ? t + 11 : t;
	bool quoted = name[0] == '"';
	for (size_t i = 0; i < sizeof kv_pg_types / sizeof kv_pg_types[0]; i++) {
		const struct kv_pg_type *k = &kv_pg_types[i];
		if ((quoted ? strcmp(k->display, name) : strcasecmp(k->display, name)) == 0 ||
		    (quoted ? (strlen(name) == strlen(k->name) + 2 && strncmp(name + 1, k->name, strlen(k->name)) == 0 &&
			       name[strlen(name) - 1] == '"')
			    : strcasecmp(k->name, name) == 0))
			return k;
	}
	return NULL;
}

/* A driver's query of a type (kv_call.type_query) with the bound arguments: the built-in type
 * they name, if any (as in a database with no type of its own: the kv database's). */
static void out_type_info(struct kv_session *ks, const struct kv_call *call)
{
	const struct kv_pg_type *t = NULL;
	char text[128];

	if (call->type_query == KV_TYPE_BY_REGTYPE) {
		if (!(t = regtype_in(ks->type_name))) {
			snprintf(text, sizeof text, "type \"%s\" does not exist", ks->type_name);
			refuse(ks, false, "42704", text);
			return;
		}
	}
	for (size_t i = 0; !t && i < sizeof kv_pg_types / sizeof kv_pg_types[0]; i++)
		if (call->type_query == KV_TYPE_BY_OID ? kv_pg_types[i].oid == ks->type_oid
						       : strcmp(ks->type_schema, "pg_catalog") == 0 &&
								 strcmp(kv_pg_types[i].name, ks->type_name) == 0)
			t = &kv_pg_types[i];
	if (t) {
		char oid[12], elem[12], array[12], kind[2] = { t->kind, '\0' }, delim[2] = { t->delim, '\0' };
		const char *by_driver[2][KV_FRONT_COLS] = { { oid, elem, kind }, { t->name, oid, array, t->display, delim } };
		const char *const *cols = by_driver[call->type_query == KV_TYPE_BY_REGTYPE];
		uint32_t types[KV_FRONT_COLS];
		int ncols = result_types(call, types);
		uint8_t row[7 + KV_FRONT_COLS * 4 + 2 * 64 + 3 * 12 + 2];

		snprintf(oid, sizeof oid, "%" PRIu32, t->oid);
		snprintf(elem, sizeof elem, "%" PRIu32, t->elem);
		snprintf(array, sizeof array, "%" PRIu32, t->array);
		size_t n = text_row(row, sizeof row, ncols, cols);
		if (!n || !out_rows(ks, call, ks->portal_binary, row, n)) {
			refuse(ks, false, "XX000", "kv: a type's row could not be sent in the Bind's formats");
			return;
		}
	}
	local_rows_end(ks, false, t ? 1 : 0, NULL);
}

/* A statement answered here (enum kv_local; PostgreSQL's answers, warnings included): BEGIN is
 * answered at once (the shard's transaction begins with the first call); an end is sent to the
 * shard when a call began one there. True when answered later. */
static bool local_stmt(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	struct vdb *v = &ks->v;

	if (v->txn_status == 'E' && !txn_exit(call))
		return refuse(ks, simple, "25P02", aborted_text);
	switch (call->local) {
	case KV_LOCAL_DRIVER_SET:
		vdb_complete(v, "SET");
		return false;
	case KV_LOCAL_UNLOCK_ALL: {
		const char *none = "";
		if (simple)
			vdb_out_row_description(&v->out, &(struct vdb_col){ call->column, KV_OID_VOID, 0 }, 1);
		v->out.row_binary = 0;
		vdb_out_row(&v->out, 1, &none);
		local_rows_end(ks, simple, 1, NULL);
		return false;
	}
	case KV_LOCAL_CLOSE: {
		if (!call->name[0]) {
			if (v->portal_set && v->portal_name[0]) { /* the named portal: a cursor too */
				v->portal_set = false;
				ks->suspended = false;
			}
			drop_portals(ks);
			drop_cursors(ks, false, false);
			vdb_complete(v, "CLOSE CURSOR ALL");
			return false;
		}
		struct kv_cursor *cur = find_cursor(ks, call->name);
		if (cur) {
			cursor_drop(cur);
		} else if ((v->portal_set && strcmp(v->portal_name, call->name) == 0) || find_portal(v, call->name)) {
			v->portal_set = false;
			ks->suspended = false;
		} else {
			return no_cursor(ks, call, simple);
		}
		vdb_complete(v, "CLOSE CURSOR");
		return false;
	}
	case KV_LOCAL_DECLARE:
		if (!v->txn_status && !call->hold)
			return refuse(ks, simple, "25P01", "DECLARE CURSOR can only be used in transaction blocks");
		if (find_cursor(ks, call->name)) {
			char text[120];
			snprintf(text, sizeof text, "cursor \"%s\" already exists", call->name);
			return refuse(ks, simple, "42P03", text);
		}
		const char *state;
		if (!free_cursor(ks, &state)) {
			char text[120];
			snprintf(text, sizeof text, "kv: at most %d cursors open at a time", KV_FRONT_CURSORS);
			return refuse(ks, simple, state, state[1] == '4' ? text : "out of memory");
		}
		return run_call(ks, call, simple); /* on_answer keeps its rows */
	case KV_LOCAL_FETCH:
		return cursor_fetch(ks, call, simple);
	case KV_LOCAL_UNLISTEN:
		vdb_complete(v, "UNLISTEN"); /* LISTEN is refused: nothing to stop */
		return false;
	case KV_LOCAL_EMPTY: /* EmptyQueryResponse; the portal stays, each Execute answered so */
		vdb_out_msg(&v->out, 'I', NULL, 0);
		if (!simple)
			v->portal_set = true;
		return false;
	case KV_LOCAL_RESET_ALL:
		ks->defaults = KV_TXN_CHARS_UNSET;
		memcpy(ks->timeout_ms, ks->timeout_boot, sizeof ks->timeout_ms);
		memcpy(ks->timeout_local, ks->timeout_boot, sizeof ks->timeout_local);
		vdb_complete(v, "RESET");
		return false;
	case KV_LOCAL_DISCARD:
		if (call->discard_all) {
			if (v->txn_status)
				return refuse(ks, simple, "25001", "DISCARD ALL cannot run inside a transaction block");
			ks->defaults = KV_TXN_CHARS_UNSET;
			memcpy(ks->timeout_ms, ks->timeout_boot, sizeof ks->timeout_ms);
			memcpy(ks->timeout_local, ks->timeout_boot, sizeof ks->timeout_local);
			drop_named(ks);
			drop_cursors(ks, false, false);
			drop_portals(ks);
			v->portal_set = false;
			ks->suspended = false;
		}
		vdb_complete(v, call->column);
		return false;
	case KV_LOCAL_DEALLOCATE:
		return deallocate(ks, call, simple);
	case KV_LOCAL_SHOW:
		out_show(ks, call, simple);
		return false;
	case KV_LOCAL_DEFAULT:
		for (enum kv_show s = KV_SHOW_ISOLATION; s <= KV_SHOW_DEFERRABLE; s++) {
			int from = kv_txn_char_get(&call->chars, s);
			if (from != KV_CHAR_UNSET)
				*kv_txn_char_field(&ks->defaults, s) = (int8_t)(from == KV_CHAR_RESET ? KV_CHAR_UNSET : from);
		}
		vdb_complete(v, call->reset ? "RESET" : "SET");
		return false;
	case KV_LOCAL_TIMEOUT: {
		uint32_t ms = call->timeout_ms == KV_TIMEOUT_RESET ? ks->timeout_boot[call->timeout] : call->timeout_ms;
		if (!call->set_local)
			ks->timeout_ms[call->timeout] = ks->timeout_local[call->timeout] = ms;
		else if (v->txn_status == 'T')
			ks->timeout_local[call->timeout] = ms; /* until the transaction's end */
		else
			vdb_out_warning(v, "25P01", "SET LOCAL can only be used in transaction blocks");
		vdb_complete(v, call->reset ? "RESET" : "SET");
		return false;
	}
	case KV_LOCAL_SET:
		if (v->txn_status == 'T') {
			if (txn_set_current(ks, &call->chars, simple))
				vdb_complete(v, "SET");
			return false;
		}
		if (call->set_local)
			vdb_out_warning(v, "25P01", "SET LOCAL can only be used in transaction blocks");
		else if (call->txn_warn)
			vdb_out_warning(v, "25P01", "SET TRANSACTION can only be used in transaction blocks");
		vdb_complete(v, "SET");
		return false;
	case KV_LOCAL_BEGIN:
		if (v->txn_status == 'T' && ks->implicit) {
			/* the Query's implicit transaction becomes the client's: BEGIN's options as
			 * SET TRANSACTION's (PostgreSQL's 25001 after a query) */
			if (!txn_set_current(ks, &call->chars, simple))
				return false;
			ks->implicit = false;
			if (ks->idle_tx_ms)
				ev_timer_again(ks->worker->loop, &ks->idle_tx);
		} else if (v->txn_status == 'T') {
			vdb_out_warning(v, "25001", "there is already a transaction in progress");
		} else {
			txn_open(ks, &call->chars);
			if (ks->pipe_saved) {
				/* an extended-protocol BEGIN makes the Sync's implicit transaction the
				 * client's: the SETs of the Executes before it are undone by its ROLLBACK */
				ks->defaults_at_begin = ks->pipe_defaults;
				memcpy(ks->timeout_at_begin, ks->pipe_timeouts, sizeof ks->timeout_at_begin);
			}
			if (ks->idle_tx_ms)
				ev_timer_again(ks->worker->loop, &ks->idle_tx);
		}
		vdb_complete(v, call->txn_start ? "START TRANSACTION" : "BEGIN");
		return false;
	case KV_LOCAL_COMMIT:
	case KV_LOCAL_ROLLBACK:
		break;
	case KV_LOCAL_SAVEPOINT:
	case KV_LOCAL_RELEASE:
	case KV_LOCAL_ROLLBACK_TO:
		return savepoint_stmt(ks, call, simple);
	case KV_LOCAL_VALUE:
		out_value(ks, call, simple);
		return false;
	case KV_LOCAL_TYPE_INFO:
		if (simple)
			return refuse(ks, simple, "42P02", "there is no parameter $1");
		out_type_info(ks, call);
		return false;
	default:
		return refuse(ks, simple, "XX000", "kv: unknown statement");
	}
	bool commit = call->local == KV_LOCAL_COMMIT;
	if (!v->txn_status || ks->implicit) /* (an implicit transaction ends, as PostgreSQL's) */
		vdb_out_warning(v, "25P01", "there is no transaction in progress");
	if (!v->txn_status) {
		vdb_complete(v, commit ? "COMMIT" : "ROLLBACK");
		return false;
	}
	return txn_close(ks, commit, true, call, simple);
}

/* SHOW's answer: its RowDescription (a simple Query's; in the extended protocol a Describe
 * sends it), its row, its tag. Outside a transaction, the transaction's settings are the
 * defaults (PostgreSQL's SHOW runs in a transaction of its own). */
static void out_show(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	const struct kv_txn_chars *c = call->show >= KV_SHOW_DEFAULT_ISOLATION || ks->v.txn_status != 'T'
					       ? &ks->defaults : &ks->txn_chars;
	char ms[16];
	const char *text = ms;
	if (call->show >= KV_SHOW_STATEMENT_TIMEOUT)
		kv_timeout_text(timeouts_now(ks)[call->show - KV_SHOW_STATEMENT_TIMEOUT], ms);
	else
		text = kv_txn_char_text((enum kv_show)call->show, kv_txn_char_get(c, (enum kv_show)call->show));

	if (simple)
		vdb_out_row_description(&ks->v.out, &(struct vdb_col){ kv_show_name((enum kv_show)call->show), VDB_OID_TEXT, 0 },
					1);
	ks->v.out.row_binary = 0;
	vdb_out_row(&ks->v.out, 1, &text);
	local_rows_end(ks, simple, 1, "SHOW");
}

/* Before each ReadyForQuery: outside a transaction the portal is gone (PostgreSQL drops a
 * transaction's portals at its end, an autocommit one's at Sync); default_transaction_read_only
 * reported when it changed since last reported (PostgreSQL 14 and later report it: a driver may
 * pick a read-write server by it). */
static void before_ready(struct vdb *v)
{
	struct kv_session *ks = session_of(v);

	if (!v->txn_status) { /* the transaction ended: its portals with it, and its cursors */
		v->portal_set = false;
		ks->suspended = false;
		ks->portal_done = false;
		drop_cursors(ks, true, false);
		drop_portals(ks);
		if (ks->pipe_saved && v->nerrors != ks->pipe_nerrors) { /* its implicit transaction failed */
			ks->defaults = ks->pipe_defaults;
			memcpy(ks->timeout_ms, ks->pipe_timeouts, sizeof ks->timeout_ms);
		}
	}
	ks->pipe_saved = false;
	bool ro = ks->defaults.read_only == 1;
	if (ro == ks->reported_read_only || v->txn_status == 'E')
		return; /* (in a failed transaction PostgreSQL reports nothing: its ROLLBACK undoes it) */
	uint8_t body[64];
	static const char name[] = "default_transaction_read_only";
	const char *val = ro ? "on" : "off";
	memcpy(body, name, sizeof name);
	memcpy(body + sizeof name, val, strlen(val) + 1);
	vdb_out_msg(&v->out, 'S', body, sizeof name + strlen(val) + 1);
	ks->reported_read_only = ro;
}

/* The transaction reads a new snapshot at each statement (READ COMMITTED, the default). */
static bool txn_read_committed(const struct kv_session *ks)
{
	return ks->txn_chars.iso != KV_ISO_REPEATABLE_READ && ks->txn_chars.iso != KV_ISO_SERIALIZABLE;
}

/* Where the bound call runs in the client's transaction; false after an error. A READ
 * COMMITTED read of no key of the shard the transaction holds (of any, before it holds one)
 * runs alone (job.txn NULL): it would read inside what it reads so, a snapshot of its own, and
 * the transaction has written nothing there for it to see. So a transaction that only reads
 * holds no connection (psycopg's default mode begins one before every read, a scan's too), and
 * a Query of several statements reads keys of several shards in its implicit transaction. Else
 * the call's keys must lie on the transaction's shard (its first such call's): it runs there
 * (job.txn); a call of every shard (a scan) is refused. nshards: the router's (unused for a
 * call of every shard). */
static bool txn_route(struct kv_session *ks, const struct kv_call *call, bool simple, int nshards)
{
	struct kv_job *j = &ks->job;
	bool every = kv_op_keyless(call->op) && !kv_op_array_arg(call->op, 1);
	int n = every ? 0 : kv_op_keyless(call->op) ? j->nkeys : 1, shard = ks->txn_routed ? ks->txn.shard : -1;
	int off = -1, off_sh = -1; /* a key off the shard (the transaction's, else the first key's), its shard */
	bool on = every && ks->txn_routed; /* the call reads the shard the transaction holds */
	char text[600];

	for (int i = 0; i < n; i++) {
		const char *key = kv_op_keyless(call->op) ? j->keys[i] : j->key;
		int sh = kv_shard_of(j->ns, strlen(j->ns), key, strlen(key), nshards);
		if (shard < 0)
			shard = sh;
		if (sh == shard && ks->txn_routed)
			on = true;
		else if (sh != shard && off < 0)
			off = i, off_sh = sh;
	}
	if (kv_op_is_read(call->op) && txn_read_committed(ks) && !on)
		return true;
	if (every) {
		snprintf(text, sizeof text, "kv: kv.%s asks every shard, and a transaction holds one: call it outside the "
			 "transaction%s", kv_op_name(call->op),
			 kv_op_is_read(call->op) ? ", or first in a READ COMMITTED one" : "");
		return refuse(ks, simple, "0A000", text);
	}
	if (off >= 0) {
		snprintf(text, sizeof text,
			 "kv: key \"%.200s\" lies on shard %d, and this transaction's keys on shard %d: a transaction "
			 "holds the keys of one shard (tusk kv shard N ns key... tells a key's)",
			 kv_op_keyless(call->op) ? j->keys[off] : j->key, off_sh, shard);
		return refuse(ks, simple, "0A000", text);
	}
	if (!ks->txn_routed && !savepoint_names(ks)) /* its savepoints, made right after its BEGIN */
		return refuse(ks, simple, "53200", "out of memory");
	ks->txn.shard = shard;
	ks->txn_routed = true;
	j->txn = &ks->txn;
	return true;
}

/* Run the bound call (ks->job), inside the client's transaction when it began one. false after
 * an error (the extended protocol then skips until Sync; a simple Query's ReadyForQuery is the
 * caller's). */
static bool run_call(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	struct kv_router *r = ks->worker->rt->kv_router;
	struct kv_job *j = &ks->job;
	char text[300];

	j->txn = NULL;
	j->txn_end = 0;
	if (ks->v.txn_status == 'E')
		return refuse(ks, simple, "25P02", aborted_text);
	if ((ks->v.txn_status == 'T' ? ks->txn_chars.read_only : ks->defaults.read_only) == 1 && !kv_op_is_read(call->op)) {
		snprintf(text, sizeof text, "cannot execute kv.%s in a read-only transaction", kv_op_name(call->op));
		return refuse(ks, simple, "25006", text);
	}
	if (ks->v.txn_status == 'T')
		ks->txn_queried = true;
	if (ks->v.txn_status != 'T' || !r || (kv_op_array_arg(call->op, 1) && j->nkeys == 0))
		return submit(ks, call, simple); /* (a batch of no key reaches no shard) */
	if (kv_op_keyless(call->op) && !kv_op_array_arg(call->op, 1)) /* every shard: no routing needed */
		return txn_route(ks, call, simple, 0) && submit(ks, call, simple);
	int nshards = kv_router_nshards(r);
	if (nshards == 0 && !ks->warming) {
		/* routing is not ready (the catalog is read on the first call): one read of a key it
		 * names first, its answer unused; then the call */
		ks->warming = true;
		ks->warm_op = j->op;
		memcpy(ks->warm_args, j->args, sizeof ks->warm_args);
		memset(j->args, 0, sizeof j->args);
		j->args[0] = j->ns;
		j->args[1] = kv_op_keyless(call->op) ? j->keys[0] : j->key;
		ks->warm_key = j->key; /* (NULL for a batch: the read's key is its first key's) */
		j->key = j->args[1];
		j->op = KV_OP_COUNTER;
		return submit(ks, call, simple);
	}
	if (nshards == 0)
		return refuse(ks, simple, "57P03", "kv routing is not ready for a transaction yet: try again");
	return txn_route(ks, call, simple, nshards) && submit(ks, call, simple);
}

/* An Execute's answer: the call's DataRows from rest_off, up to max_rows of them (0: all),
 * in the Bind's formats; then PortalSuspended when it sent max_rows of them, as PostgreSQL's
 * (which does not look past its limit: its last row too; the portal stays bound for the next
 * Execute, which goes on from there), else CommandComplete with the count this Execute sent,
 * as PostgreSQL counts it. */
static void out_rest(struct kv_session *ks)
{
	const struct kv_job *job = &ks->job;
	size_t off = ks->rest_off;
	uint64_t n;
	size_t end = rows_upto(job->rows, job->rows_len, off, ks->max_rows ? ks->max_rows : UINT64_MAX, &n);
	bool ok = out_rows(ks, ks->busy_call, ks->portal_binary, job->rows ? job->rows + off : NULL, end - off);

	ks->portal_pos = (off == 0 ? 0 : ks->portal_pos) + n;
	ks->suspended = false;
	if (!ok || (end < job->rows_len && (ks->max_rows == 0 || n < ks->max_rows))) {
		vdb_out_error(&ks->v, true, true, "XX000", "kv: an answer's rows could not be sent in the Bind's formats", NULL,
			      NULL);
		ks->v.skipping = true;
	} else if (ks->max_rows && n == ks->max_rows) { /* its limit reached: by the last row too */
		ks->rest_off = end;
		ks->suspended = true;
		ks->v.portal_set = true; /* (vdb cleared it at the Execute) */
		vdb_out_msg(&ks->v.out, 's', NULL, 0);
	} else if (ks->rest_fetch) { /* a FETCH's portal, run to its end: FETCH n, then FETCH 0 */
		char tag[40];
		snprintf(tag, sizeof tag, "FETCH %" PRIu64, n);
		vdb_complete(&ks->v, tag);
		ks->portal_done = true;
		ks->done_tag = "FETCH 0";
		ks->v.portal_set = true;
	} else {
		vdb_complete_select(&ks->v, n);
		ks->portal_done = true;
		ks->done_tag = NULL;
		ks->v.portal_set = true;
	}
}

/* On the client's worker: the router answered (also while tusk stops). */
static void on_answer(struct worker *w, struct worker_msg *m)
{
	struct kv_session *ks = m->arg;
	struct kv_job *job = &ks->job;
	(void)w;

	ks->v.busy = false;
	if (!ks->v.client) {
		kv_session_free(ks); /* the client left meanwhile */
		return;
	}
	if (ks->v.client->state == CLIENT_CLOSING)
		return;
	ks->active_at = ev_now(ks->worker->loop);
	if (ks->warming) {
		/* the read that made routing ready: now the call itself */
		ks->warming = false;
		job->op = ks->warm_op;
		job->key = ks->warm_key;
		memcpy(job->args, ks->warm_args, sizeof job->args);
		if (run_call(ks, ks->busy_call, ks->v.busy_simple))
			return;
	} else if (job->txn_end == KV_TXN_STEP) {
		/* a savepoint's statement */
		if (job->failed) {
			log_info(ks->v.client->id, ks->v.client->ctx, "kv: the transaction's %s failed: %s (%s)", ks->sps->step,
				 job->message, job->sqlstate);
			vdb_out_error(&ks->v, true, job->ours, job->sqlstate, job->message, job->detail, job->hint);
			if (!ks->v.busy_simple)
				ks->v.skipping = true;
		} else {
			vdb_complete(&ks->v, ks->sps->tag);
		}
	} else if (job->txn_end) {
		/* the end of the transaction, failed or not */
		if (job->failed) {
			log_info(ks->v.client->id, ks->v.client->ctx, "kv: the transaction's %s failed: %s (%s)",
				 ks->end_tag ? ks->end_tag : "implicit COMMIT", job->message, job->sqlstate);
			vdb_out_error(&ks->v, true, job->ours, job->sqlstate, job->message, job->detail, job->hint);
			if (!ks->v.busy_simple)
				ks->v.skipping = true;
		} else if (ks->end_tag) {
			vdb_complete(&ks->v, ks->end_tag);
		}
		if (job->failed) { /* the transaction rolled back: its settings' changes too */
			ks->defaults = ks->defaults_at_begin;
			memcpy(ks->timeout_ms, ks->timeout_at_begin, sizeof ks->timeout_ms);
			drop_cursors(ks, true, true);
		}
		ks->v.txn_status = 0;
		ks->txn_routed = false;
	} else if (job->failed) {
		if (job->ours)
			log_info(ks->v.client->id, ks->v.client->ctx, "kv.%s failed: %s (%s)", kv_op_name(job->op), job->message,
				 job->sqlstate);
		vdb_out_error(&ks->v, true, job->ours, job->sqlstate, job->message, job->detail, job->hint);
		if (!ks->v.busy_simple)
			ks->v.skipping = true;
	} else if (ks->moving) { /* the portal's call ran: now the FETCH or MOVE of it */
		ks->rest_off = 0;
		ks->suspended = true;
		ks->v.portal_set = true;
		(void)cursor_fetch(ks, ks->moving, true);
	} else if (ks->busy_call->local == KV_LOCAL_DECLARE) {
		cursor_store(ks, ks->busy_call);
	} else if (!ks->v.busy_simple) {
		ks->rest_off = 0;
		out_rest(ks);
	} else {
		out_row_description(ks, ks->busy_call, 0);
		vdb_out_raw(&ks->v.out, job->rows, job->rows_len);
		vdb_complete_select(&ks->v, (uint64_t)job->nrows);
	}
	ks->moving = NULL;
	if (ks->v.busy_simple) {
		if (ks->multi_n && multi_run(ks))
			return; /* the Query's next statement is with the router */
		vdb_ready(&ks->v);
	}
	vdb_input(&ks->v);
}

/* ---- requests ---- */

/* Statement i: 0 the unnamed, 1..nnamed the named ones. */
static struct kv_stmt *stmt_at(struct kv_session *ks, int i)
{
	return i == 0 ? &ks->unnamed : ks->named[i - 1];
}

static int find_stmt(struct kv_session *ks, const char *name)
{
	if (!*name)
		return 0;
	for (int i = 1; i <= ks->nnamed; i++)
		if (stmt_at(ks, i)->used && strcmp(stmt_at(ks, i)->name, name) == 0)
			return i;
	return -1;
}

/* A statement for a new name: a closed one's, else a new one (up to KV_FRONT_STATEMENTS);
 * -ENOSPC, -ENOMEM. */
static int new_stmt(struct kv_session *ks)
{
	for (int i = 1; i <= ks->nnamed; i++)
		if (!stmt_at(ks, i)->used)
			return i;
	if (ks->nnamed >= KV_FRONT_STATEMENTS)
		return -ENOSPC;
	if (ks->nnamed == ks->named_cap) {
		int cap = ks->named_cap ? 2 * ks->named_cap : 8;
		struct kv_stmt **p = realloc(ks->named, (size_t)cap * sizeof *p);
		if (!p)
			return -ENOMEM;
		ks->named = p;
		ks->named_cap = cap;
	}
	struct kv_stmt *st = calloc(1, sizeof *st);
	if (!st)
		return -ENOMEM;
	ks->named[ks->nnamed++] = st;
	return ks->nnamed;
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

/* A statement of a simple Query, parsed (rc, state, err: kv_call_parse's) into ks->query: its
 * answer, or an error; true when answered later. */
static bool run_query(struct kv_session *ks, int rc, const char *state, const char *err)
{
	struct vdb *v = &ks->v;

	if (rc == -ENOMEM)
		vdb_error(v, "53200", "out of memory");
	else if (rc < 0)
		vdb_error(v, state, "%s", err);
	else if (ks->query.local && ks->query.local != KV_LOCAL_DECLARE) /* (a DECLARE binds its call) */
		return local_stmt(ks, &ks->query, true);
	else if (ks->query.nparams > 0)
		vdb_error(v, "42P02", "there is no parameter $%d (a simple query has none)", ks->query.nparams);
	else {
		if (ks->suspended) /* the call's answer takes the job: the named portal's rows put aside */
			park_portal(ks);
		else if (v->portal_set && !ks->portal_done) { /* a named one not run: its values */
			ks->rebind = true;
		}
		if (bind_call(ks, NULL, &ks->query, NULL))
			return ks->query.local ? local_stmt(ks, &ks->query, true) : run_call(ks, &ks->query, true);
	}
	return false;
}

/* The Query's statements from multi_next on, until one is answered later (true) or the last
 * is answered or one failed; then the implicit transaction ends, committed if none failed
 * (true while the shard answers that), and the Query is done (false: ReadyForQuery next). */
static bool multi_run(struct kv_session *ks)
{
	struct vdb *v = &ks->v;
	char state[6], err[600];

	for (;;) {
		bool failed = v->nerrors != ks->multi_errors;
		if (failed || ks->multi_next == ks->multi_n) {
			if (ks->implicit && v->txn_status && txn_close(ks, !failed, false, &ks->query, true))
				return true;
			ks->implicit = false;
			ks->multi_n = 0;
			return false;
		}
		struct kv_span sp = ks->multi_spans[ks->multi_next++];
		char *text = ks->multi + sp.off;
		text[sp.len] = '\0';
		if (!v->txn_status) {
			txn_open(ks, &KV_TXN_CHARS_UNSET);
			ks->implicit = true;
		}
		int rc = kv_call_parse(text, &ks->query, state, err, sizeof err);
		if (rc == -E2BIG)
			rc = -EINVAL;
		if (run_query(ks, rc, state, err))
			return true;
	}
}

/* A simple Query of several statements (kv_call_parse said so). */
static bool multi_start(struct kv_session *ks, const char *text)
{
	struct vdb *v = &ks->v;
	char state[6], err[600];
	size_t len = strlen(text);

	if (!ks->multi_spans && !(ks->multi_spans = malloc(KV_CALL_MAX_STMTS * sizeof *ks->multi_spans))) {
		vdb_error(v, "53200", "out of memory");
		return false;
	}
	int n = kv_call_split(text, ks->multi_spans, KV_CALL_MAX_STMTS, state, err, sizeof err);
	if (n == -ENOMEM)
		vdb_error(v, "53200", "out of memory");
	else if (n < 0)
		vdb_error(v, state, "%s", err);
	if (n < 0)
		return false;
	char *copy = realloc(ks->multi, len + 1);
	if (!copy) {
		vdb_error(v, "53200", "out of memory");
		return false;
	}
	memcpy(copy, text, len + 1);
	ks->multi = copy;
	ks->multi_n = n;
	ks->multi_next = 0;
	ks->multi_errors = v->nerrors;
	return multi_run(ks);
}

static bool on_query(struct vdb *v, const char *text)
{
	struct kv_session *ks = session_of(v);
	char state[6], err[600];

	if (!v->portal_name[0]) { /* a Query ends the unnamed portal, as PostgreSQL's */
		ks->suspended = false;
		ks->portal_done = false;
		v->portal_set = false;
	}
	ks->unnamed.used = false; /* and the unnamed statement (exec_simple_query's drop_unnamed_stmt) */
	if (is_empty_query(text)) {
		vdb_out_msg(&v->out, 'I', NULL, 0);
		return false;
	}
	ks->active_at = ev_now(ks->worker->loop);
	int rc = kv_call_parse(text, &ks->query, state, err, sizeof err);
	if (rc == -E2BIG)
		return multi_start(ks, text);
	return run_query(ks, rc, state, err);
}

static void on_parse(struct vdb *v, const char *name, const char *text, uint16_t ntypes, const uint8_t *types)
{
	struct kv_session *ks = session_of(v);
	char state[6], err[600];

	if (ntypes > KV_CALL_MAX_PARAMS) {
		vdb_error_skip(v, "54000", "kv: a call takes at most %d parameters", KV_CALL_MAX_PARAMS);
		return;
	}
	int i = find_stmt(ks, name);
	if (i > 0) {
		vdb_error_skip(v, "42P05", "prepared statement \"%s\" already exists", name);
		return;
	}
	if (i < 0)
		i = new_stmt(ks);
	if (i == -ENOMEM) {
		vdb_error_skip(v, "53200", "out of memory");
		return;
	}
	if (i < 0) {
		vdb_error_skip(v, "53400", "too many prepared statements (a kv client keeps %d)", KV_FRONT_STATEMENTS);
		return;
	}
	struct kv_stmt *st = stmt_at(ks, i);
	if (ks->v.portal_set && ks->portal_stmt == i && !ks->resumed)
		park_portal(ks); /* its call is about to be replaced: put aside (its columns kept), or gone */
	st->used = false;
	int rc = kv_call_parse(text, &st->call, state, err, sizeof err);
	if (rc == -ENOMEM) {
		vdb_error_skip(v, "53200", "out of memory");
		return;
	}
	if (rc == -E2BIG) { /* PostgreSQL's answer */
		vdb_error_skip(v, "42601", "cannot insert multiple commands into a prepared statement");
		return;
	}
	if (rc < 0) {
		vdb_error_skip(v, state, "%s", err);
		return;
	}
	if (v->txn_status == 'E' && !txn_exit(&st->call) && st->call.local != KV_LOCAL_EMPTY) {
		vdb_error_skip(v, "25P02", "%s", aborted_text);
		return;
	}
	st->ntypes = ntypes;
	struct proto_reader tr;
	proto_reader_init(&tr, types, (size_t)ntypes * 4); /* vdb.c checked they are all there */
	for (uint16_t t = 0; t < ntypes; t++)
		st->types[t] = proto_get_u32(&tr);
	snprintf(st->name, sizeof st->name, "%s", name);
	st->used = true;
	st->gen++;
	vdb_out_msg(&v->out, '1', NULL, 0);
}

/* A type's query bound: its oid (binary, or text digits), or its name and schema. */
static void bind_type_info(struct kv_session *ks, const struct kv_call *call, const struct kv_bind_val *vals)
{
	ks->type_oid = 0;
	ks->type_name[0] = ks->type_schema[0] = '\0';
	if (call->type_query == KV_TYPE_BY_OID) {
		const struct kv_bind_val *o = &vals[0];
		if (o->p && o->binary && o->len == 4) {
			ks->type_oid = (uint32_t)o->p[0] << 24 | (uint32_t)o->p[1] << 16 | (uint32_t)o->p[2] << 8 | o->p[3];
		} else if (o->p && !o->binary) {
			long long n;
			if (resp_to_ll((const char *)o->p, o->len, &n) && n > 0 && n <= UINT32_MAX)
				ks->type_oid = (uint32_t)n;
		}
		return;
	}
	char *out[2] = { ks->type_name, ks->type_schema };
	for (int i = 0; i < call->nparams; i++)
		if (vals[i].p && vals[i].len < sizeof ks->type_name && !memchr(vals[i].p, '\0', vals[i].len)) {
			memcpy(out[i], vals[i].p, vals[i].len);
			out[i][vals[i].len] = '\0';
		}
}

static int stmt_nparams(const struct kv_stmt *st)
{
	return st->call.nparams > st->ntypes ? st->call.nparams : st->ntypes;
}

static void on_bind(struct vdb *v, const uint8_t *body, size_t len)
{
	struct kv_session *ks = session_of(v);
	struct proto_reader r;
	struct kv_bind_val vals[KV_CALL_MAX_PARAMS];

	park_portal(ks); /* a Bind replaces the portal: a named one executed is put aside */
	proto_reader_init(&r, body, len);
	const char *portal = proto_get_cstr(&r);
	const char *name = proto_get_cstr(&r);
	uint16_t nfmt = proto_get_u16(&r);
	const uint8_t *fmts = proto_get_bytes(&r, (size_t)nfmt * 2);
	uint16_t nvals = proto_get_u16(&r);
	if (r.err)
		goto malformed;
	char cut[VDB_NAME_MAX];
	name = vdb_name(name, cut);
	if (nvals > KV_CALL_MAX_PARAMS) {
		vdb_error_skip(v, "54000", "kv: a call takes at most %d parameters", KV_CALL_MAX_PARAMS);
		return;
	}
	if (nfmt > 1 && nfmt != nvals)
		goto malformed;
	/* No codes: all text; one: it applies to every value; else one each. */
	struct proto_reader fr;
	proto_reader_init(&fr, fmts, (size_t)nfmt * 2);
	uint16_t f = nfmt == 0 ? 0 : proto_get_u16(&fr);
	for (uint16_t i = 0; i < nvals; i++) {
		if (i > 0 && nfmt > 1)
			f = proto_get_u16(&fr);
		uint32_t n = proto_get_u32(&r);
		if (r.err)
			goto malformed;
		if (n == UINT32_MAX) {
			vals[i] = (struct kv_bind_val){ NULL, 0, false };
			continue;
		}
		const uint8_t *p = proto_get_bytes(&r, n);
		if (r.err || f > 1)
			goto malformed;
		vals[i] = (struct kv_bind_val){ p, n, f == 1 };
	}
	uint16_t nres = proto_get_u16(&r);
	if (r.err || proto_remaining(&r) != (size_t)nres * 2)
		goto malformed;
	int i = find_stmt(ks, name);
	if (i < 0 || !stmt_at(ks, i)->used) {
		vdb_error_skip(v, "26000", "prepared statement \"%s\" does not exist", name);
		return;
	}
	struct kv_stmt *st = stmt_at(ks, i);
	if (v->txn_status == 'E' && !txn_exit(&st->call)) {
		vdb_error_skip(v, "25P02", "%s", aborted_text);
		return;
	}
	if (nvals != stmt_nparams(st)) {
		vdb_error_skip(v, "08P01", "bind message supplies %u parameters, but prepared statement \"%s\" requires %d",
			       nvals, name, stmt_nparams(st));
		return;
	}
	uint32_t types[KV_FRONT_COLS];
	uint64_t binary = 0;
	if (st->call.local && st->call.local != KV_LOCAL_DECLARE) { /* (a DECLARE binds its call) */
		/* a FETCH's rows are its cursor's: in the formats asked for its columns */
		struct kv_cursor *cur = st->call.local == KV_LOCAL_FETCH ? find_cursor(ks, st->call.name) : NULL;
		bool own_rows = st->call.local == KV_LOCAL_VALUE || st->call.local == KV_LOCAL_TYPE_INFO;
		const struct kv_call *shape = cur ? &cur->shape : own_rows ? &st->call : NULL;
		if (shape && !vdb_result_formats(v, proto_get_bytes(&r, (size_t)nres * 2), nres, result_types(shape, types),
						 &binary))
			return;
		if (st->call.local == KV_LOCAL_TYPE_INFO)
			bind_type_info(ks, &st->call, vals);
		vdb_bind_portal(v, portal);
		ks->portal_pos = 0;
		ks->portal_stmt = i;
		ks->portal_binary = binary;
		vdb_out_msg(&v->out, '2', NULL, 0);
		return;
	}
	if (!vdb_result_formats(v, proto_get_bytes(&r, (size_t)nres * 2), nres, result_types(&st->call, types), &binary))
		return;
	ks->v.portal_set = false;
	if (!bind_call(ks, st, &st->call, vals)) {
		v->skipping = true;
		return;
	}
	ks->rebind = false;
	if (*portal) { /* its values kept (bind_vals) until it runs */
		uint8_t *copy = grow_bytes(ks->bind_copy, &ks->bind_cap, len ? len : 1, 256);
		if (!copy) {
			vdb_error_skip(v, "53200", "out of memory");
			return;
		}
		ks->bind_copy = copy;
		memcpy(copy, body, len);
		for (int k = 0; k < nvals; k++)
			ks->bind_vals[k] = vals[k];
		for (int k = 0; k < nvals; k++)
			if (vals[k].p)
				ks->bind_vals[k].p = copy + (vals[k].p - body);
	}
	vdb_bind_portal(v, portal);
	ks->portal_pos = 0;
	ks->portal_stmt = i;
	ks->portal_binary = binary;
	vdb_out_msg(&v->out, '2', NULL, 0);
	return;
malformed:
	vdb_error_skip(v, "08P01", "malformed Bind message");
}

/* The RowDescription of call's rows, or NoData. */
static void describe_call(struct kv_session *ks, const struct kv_call *call, uint64_t binary)
{
	if (call->local == KV_LOCAL_SHOW)
		vdb_out_row_description(&ks->v.out, &(struct vdb_col){ kv_show_name((enum kv_show)call->show), VDB_OID_TEXT, 0 },
					1);
	else if (call->local == KV_LOCAL_UNLOCK_ALL)
		vdb_out_row_description(&ks->v.out, &(struct vdb_col){ call->column, KV_OID_VOID, 0 }, 1);
	else if (call->local == KV_LOCAL_VALUE || call->local == KV_LOCAL_TYPE_INFO)
		out_row_description(ks, call, binary);
	else if (call->local == KV_LOCAL_FETCH && !call->is_move && find_cursor(ks, call->name))
		out_row_description(ks, &find_cursor(ks, call->name)->shape, binary);
	else if (call->local)
		vdb_out_msg(&ks->v.out, 'n', NULL, 0); /* NoData */
	else
		out_row_description(ks, call, binary);
}

static void describe_statement(struct vdb *v, const char *name)
{
	struct kv_session *ks = session_of(v);
	int i = find_stmt(ks, name);

	if (i < 0 || !stmt_at(ks, i)->used) {
		vdb_error_skip(v, "26000", "prepared statement \"%s\" does not exist", name);
		return;
	}
	const struct kv_stmt *st = stmt_at(ks, i);
	int n = stmt_nparams(st);
	uint8_t desc[2 + 4 * KV_CALL_MAX_PARAMS];
	desc[0] = (uint8_t)(n >> 8), desc[1] = (uint8_t)n;
	for (int p = 1; p <= n; p++) {
		uint32_t oid = htonl(param_type(st, &st->call, p));
		memcpy(desc + 2 + 4 * (p - 1), &oid, 4);
	}
	vdb_out_msg(&v->out, 't', desc, 2 + 4 * (size_t)n);
	describe_call(ks, &st->call, 0);
}

static void describe_portal(struct vdb *v)
{
	struct kv_session *ks = session_of(v);
	describe_call(ks, portal_call(ks), ks->portal_binary);
}

/* Describe of a cursor by its name (psycopg's named cursor, after its DECLARE). */
static bool describe_cursor(struct vdb *v, const char *name)
{
	struct kv_session *ks = session_of(v);
	struct kv_cursor *cur = name[0] ? find_cursor(ks, name) : NULL;

	if (cur)
		out_row_description(ks, &cur->shape, 0);
	return cur != NULL;
}

/* After an Execute of a statement answered here: the portal of a utility statement stays, run
 * (another Execute: PostgreSQL's 55000), a FETCH's too (another: FETCH 0); the end of a
 * transaction or of a savepoint's part of it (COMMIT, ROLLBACK, ROLLBACK TO), or DISCARD ALL,
 * drops it (34000); a statement of rows saw to its own (local_rows_end). */
static void portal_spent(struct kv_session *ks, const struct kv_call *call)
{
	switch (call->local) {
	case KV_LOCAL_COMMIT:
	case KV_LOCAL_ROLLBACK:
	case KV_LOCAL_ROLLBACK_TO:
	case KV_LOCAL_SHOW:
	case KV_LOCAL_VALUE:
	case KV_LOCAL_UNLOCK_ALL:
	case KV_LOCAL_TYPE_INFO:
	case KV_LOCAL_EMPTY:
		return;
	case KV_LOCAL_DISCARD:
		if (call->discard_all)
			return;
		break;
	default:
		break;
	}
	ks->v.portal_set = true;
	ks->portal_done = true;
	ks->done_tag = call->local == KV_LOCAL_FETCH && !call->is_move ? "FETCH 0" : portal_spent_tag;
}

/* The named portal's call not run yet, its values bound again (a simple Query's call bound
 * the job over them). false after an error. */
static bool portal_rebind(struct kv_session *ks, bool simple)
{
	struct kv_stmt *st = stmt_at(ks, ks->portal_stmt);

	if (!bind_call(ks, st, &st->call, ks->bind_vals)) {
		ks->v.skipping = !simple;
		return false;
	}
	ks->rebind = false;
	return true;
}

static void execute(struct vdb *v, uint32_t max_rows)
{
	struct kv_session *ks = session_of(v);
	const struct kv_call *call = &stmt_at(ks, ks->portal_stmt)->call;
	ks->active_at = ev_now(ks->worker->loop);
	ks->max_rows = max_rows;
	if (!ks->pipe_saved && !v->txn_status) {
		ks->pipe_saved = true;
		ks->pipe_nerrors = v->nerrors;
		ks->pipe_defaults = ks->defaults;
		memcpy(ks->pipe_timeouts, ks->timeout_ms, sizeof ks->pipe_timeouts);
	}
	if (ks->portal_done) {
		ks->v.portal_set = true;
		if (v->txn_status == 'E') {
			(void)refuse(ks, false, "25P02", aborted_text);
		} else if (ks->done_tag == portal_spent_tag) {
			char text[120];
			snprintf(text, sizeof text, "portal \"%s\" cannot be run", v->portal_name);
			(void)refuse(ks, false, "55000", text);
		} else if (ks->done_tag) {
			vdb_complete(v, ks->done_tag);
		} else {
			vdb_complete_select(v, 0);
		}
	} else if (ks->suspended) {
		if (ks->resumed)
			ks->busy_call = &ks->portal_shape;
		out_rest(ks); /* the rows its last Execute left */
	} else if (call->local) {
		(void)local_stmt(ks, call, false);
		if (!ks->suspended) /* (a FETCH that filled its portal: out_rest) */
			portal_spent(ks, call);
	} else if (!ks->rebind || portal_rebind(ks, false)) {
		(void)run_call(ks, call, false);
	}
}

static void close_statement(struct vdb *v, const char *name)
{
	struct kv_session *ks = session_of(v);
	int i = find_stmt(ks, name);

	if (i < 0)
		return;
	if (v->portal_set && ks->portal_stmt == i && !ks->resumed)
		park_portal(ks); /* PostgreSQL's portal outlives its statement: put aside, or gone */
	stmt_at(ks, i)->used = false;
}

/* DEALLOCATE name: that named statement is gone (26000 when there is none); DEALLOCATE ALL:
 * every named one (the unnamed stays, as in PostgreSQL). */
static bool deallocate(struct kv_session *ks, const struct kv_call *call, bool simple)
{
	char text[200];

	if (call->column[0]) {
		int i = find_stmt(ks, call->column);
		if (i <= 0) {
			snprintf(text, sizeof text, "prepared statement \"%s\" does not exist", call->column);
			return refuse(ks, simple, "26000", text);
		}
		close_statement(&ks->v, call->column);
		vdb_complete(&ks->v, "DEALLOCATE");
		return false;
	}
	drop_named(ks);
	vdb_complete(&ks->v, "DEALLOCATE ALL");
	return false;
}

/* Every named statement is gone (the unnamed stays, as in PostgreSQL). */
static void drop_named(struct kv_session *ks)
{
	for (int i = 1; i <= ks->nnamed; i++)
		if (stmt_at(ks, i)->used)
			close_statement(&ks->v, stmt_at(ks, i)->name);
}

static const struct vdb_ops kv_ops = {
	.name = "the kv database",
	.log_tag = "kv",
	.error_log_level = LOG_DEBUG,
	.out_failed = "kv answer too large or out of memory",
	.fastpath = "function calls (fast path) are not supported by the kv database",
	.collect_long = true, /* a get_many of many keys can be longer than rbuf */
	.query = on_query,
	.parse = on_parse,
	.bind = on_bind,
	.describe_statement = describe_statement,
	.describe_portal = describe_portal,
	.execute = execute,
	.close_statement = close_statement,
	.describe_cursor = describe_cursor,
	.find_portal = find_portal,
	.before_ready = before_ready,
};
