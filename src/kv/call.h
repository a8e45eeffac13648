/* The calls a client of tusk's virtual kv database may make (docs/kv.md, "Routing"): one
 * SELECT of kv.get / put / delete / patch, or SELECT * FROM kv.get_many, parsed with libpg_query
 * into a template whose arguments are constants or $n parameters; and the decoders that turn
 * bound values (text or binary) into the texts a shard is called with. Pure: no I/O, no
 * threads, every input hostile (unit-tested and fuzzed). */
#ifndef TUSK_KV_CALL_H
#define TUSK_KV_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KV_CALL_MAX_ARGS 5
#define KV_CALL_MAX_PARAMS 64    /* the highest $n a call may name */
#define KV_CALL_MAX_KEYS 10000   /* get_many, as kv.get_many itself allows */
#define KV_CALL_SQL_MAX (1u << 20) /* longest call text parsed (a put of a 1 MB value fits in a parameter) */

enum kv_op {
	KV_OP_GET, KV_OP_PUT, KV_OP_DELETE, KV_OP_PATCH, KV_OP_GET_MANY,
	/* one key, one shard, one value (docs/kv.md, "API") */
	KV_OP_GET_META, KV_OP_PUT_IF_VERSION, KV_OP_PUT_IF_ABSENT, KV_OP_DELETE_IF_VERSION, KV_OP_TOUCH,
	KV_OP_INCR, KV_OP_COUNTER,
	/* split by key (put_many, delete_many) or asked of every shard (scan, count) */
	KV_OP_PUT_MANY, KV_OP_DELETE_MANY, KV_OP_SCAN, KV_OP_COUNT,
	/* the live value, else the counter when not 0 (Redis's GET; MGET, EXISTS: split by key) */
	KV_OP_READ, KV_OP_READ_MANY,
	/* Redis's TTL: get_meta's object, else a counter's {"counter", "expires_at"} */
	KV_OP_READ_META,
	/* Redis's GETSET, GETDEL, SET ... GET: the old value (as read), the new one written */
	KV_OP_SWAP,
	/* Redis's PERSIST: a live key's expiry removed (kv.touch's answer: the version, or NULL) */
	KV_OP_PERSIST,
	/* Redis's EXPIRE with NX, XX, GT or LT: the expiry set only when the condition holds */
	KV_OP_EXPIRE,
	/* Redis's GETEX: the value as read, its expiry set or removed in the same step */
	KV_OP_GETEX,
	/* Redis's SET with GET and NX or XX, or KEEPTTL: the old value as read, the write if so */
	KV_OP_SET,
	/* Redis's APPEND: the value with a suffix, its expiry kept; the new value */
	KV_OP_APPEND,
	/* Redis's WATCH: read_meta's answer and the versions of the key's rows, as text */
	KV_OP_WATCH_TAG,
	/* Redis's MSETNX (its keys as one JSON object, of one shard: job->key names one of them, for
	 * routing) and RENAME / RENAMENX (of two keys of one shard): one step each (docs/kv.md) */
	KV_OP_MSETNX, KV_OP_RENAME,
	/* Redis's INCRBYFLOAT's write: a value put, the expiry kept, only when the key reads as
	 * expected (tusk computed the sum from that read, in long double as Redis) */
	KV_OP_PUT_IF_VALUE,
	/* Redis's RANDOMKEY: every shard asked (kv.random_key), one of the keys they answered
	 * picked at random (NULL: none had one) */
	KV_OP_RANDOM_KEY,
	/* Redis's FLUSHDB: every key of the namespace deleted, asked of every shard; the count */
	KV_OP_FLUSH,
};

/* Type OIDs of the call arguments and results. */
#define KV_OID_BOOL 16u
#define KV_OID_CHAR 18u /* "char" */
#define KV_OID_NAME 19u
#define KV_OID_OID 26u
#define KV_OID_REGTYPE 2206u
#define KV_OID_INT8 20u
#define KV_OID_INT4 23u
#define KV_OID_TEXT 25u
#define KV_OID_VOID 2278u
#define KV_OID_INTERVAL 1186u
#define KV_OID_TEXT_ARRAY 1009u
#define KV_OID_JSONB 3802u

enum kv_arg_kind {
	KV_ARG_NULL,  /* SQL NULL */
	KV_ARG_CONST, /* text at call->text + off, len bytes (no NUL inside) */
	KV_ARG_PARAM, /* $param */
	KV_ARG_ARRAY, /* ARRAY[...]: call->elems[first, first + n), each NULL, CONST or PARAM */
};

struct kv_arg {
	uint8_t kind;
	uint16_t param;      /* 1-based */
	uint32_t off, len;   /* CONST */
	uint32_t first, n;   /* ARRAY */
};

/* Statements the kv database answers itself (front.c), no call: a SET a driver sends as it
 * connects, of a setting no call depends on (pgjdbc's extra_float_digits, application_name:
 * answered SET, nothing kept); transaction control: BEGIN or START TRANSACTION (kv_call.chars:
 * its options), COMMIT or END, ROLLBACK or ABORT; the transaction settings: SET TRANSACTION or
 * SET transaction_* (chars: the current transaction's characteristics), SET SESSION
 * CHARACTERISTICS AS TRANSACTION, SET / RESET default_transaction_* (chars: the session's
 * defaults), SHOW of one of those six (kv_call.show); and what drivers and pools send to reset
 * a session (asyncpg's pool: SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;
 * psycopg after a ROLLBACK once it prepared: DEALLOCATE ALL). */
enum kv_local {
	KV_LOCAL_NONE,
	KV_LOCAL_DRIVER_SET,
	KV_LOCAL_BEGIN,
	KV_LOCAL_COMMIT,
	KV_LOCAL_ROLLBACK,
	KV_LOCAL_SET,        /* the current transaction's */
	KV_LOCAL_DEFAULT,    /* the session's defaults */
	KV_LOCAL_SHOW,
	KV_LOCAL_DEALLOCATE, /* DEALLOCATE [PREPARE] name (kv_call.column) | ALL (column "") */
	KV_LOCAL_UNLOCK_ALL, /* SELECT pg_advisory_unlock_all() (its column name in column): one void row */
	KV_LOCAL_CLOSE,      /* CLOSE name (kv_call.name) | ALL (name "") */
	KV_LOCAL_UNLISTEN,   /* UNLISTEN channel | * */
	KV_LOCAL_RESET_ALL,  /* RESET ALL */
	KV_LOCAL_DISCARD,    /* DISCARD ALL | PLANS | SEQUENCES | TEMP (kv_call.discard_all: ALL) */
	/* A cursor (psycopg's named cursors): DECLARE cursor [[NO] SCROLL] CURSOR [WITH[OUT] HOLD]
	 * FOR a call that returns rows or a value (the call parsed into the rest of kv_call, as a
	 * SELECT of it is; kv_call.hold, .scroll); FETCH / MOVE [direction] [FROM | IN] cursor
	 * (fetch_dir and fetch_count as PostgreSQL's FetchStmt has them; is_move). */
	KV_LOCAL_DECLARE,
	KV_LOCAL_FETCH,
	/* SAVEPOINT name, RELEASE [SAVEPOINT] name, ROLLBACK TO [SAVEPOINT] name (kv_call.name) */
	KV_LOCAL_SAVEPOINT,
	KV_LOCAL_RELEASE,
	KV_LOCAL_ROLLBACK_TO,
	/* SELECT of one constant (a pool's health check: SELECT 1), or of version(),
	 * current_schema(), current_database() (what a toolkit asks as it connects): one row of one
	 * value (kv_call.value_fn, value_type, value; its column's name in column) */
	KV_LOCAL_VALUE,
	/* a driver's introspection of a type, known by its query's fingerprint (kv_call.type_query):
	 * answered from PostgreSQL's built-in types (kv/pg_types.h) */
	KV_LOCAL_TYPE_INFO,
	/* SET [SESSION | LOCAL] statement_timeout | lock_timeout {= | TO} value, {= | TO} DEFAULT, RESET
	 * (kv_call.timeout: which; timeout_ms its value in ms, KV_TIMEOUT_RESET for DEFAULT and
	 * RESET); SHOW of either is KV_LOCAL_SHOW (KV_SHOW_STATEMENT_TIMEOUT ...) */
	KV_LOCAL_TIMEOUT,
	/* no statement at all (blanks, comments, semicolons): a Parse of it is PostgreSQL's empty
	 * query, each Execute answered EmptyQueryResponse (pgjdbc's isValid() runs one) */
	KV_LOCAL_EMPTY,
};

/* A FETCH's or MOVE's direction, as PostgreSQL's FetchDirection. */
enum kv_fetch_dir { KV_FETCH_FORWARD, KV_FETCH_BACKWARD, KV_FETCH_ABSOLUTE, KV_FETCH_RELATIVE };
#define KV_FETCH_ALL INT64_MAX /* FETCH ALL's count (PostgreSQL's FETCH_ALL, LONG_MAX) */

/* KV_LOCAL_TYPE_INFO: which query. */
enum kv_type_query {
	KV_TYPE_BY_OID = 1,  /* asyncpg's TYPE_BY_OID (set_type_codec), $1 an oid: (oid, elemtype, kind) */
	KV_TYPE_BY_NAME,     /* asyncpg's TYPE_BY_NAME, $1 a name, $2 a schema: the same */
	KV_TYPE_BY_REGTYPE,  /* psycopg's TypeInfo.fetch (SQLAlchemy's check for hstore as it connects),
			      * $1 a type's name as regtype reads it: (name, oid, array_oid, regtype,
			      * delimiter), 42704 for no such type */
};

/* KV_LOCAL_VALUE: what the value is. */
enum kv_value_fn {
	KV_VALUE_CONST,   /* the text in kv_call.value */
	KV_VALUE_SETTING, /* SHOW of a setting: its text in value (tagged SHOW) */
	KV_VALUE_VERSION,
	KV_VALUE_CURRENT_SCHEMA,
	KV_VALUE_CURRENT_DATABASE,
};
#define KV_CALL_BEGIN_MAX 80

/* A transaction's characteristics, each KV_CHAR_UNSET when not given (the server's default),
 * KV_CHAR_RESET in a SET of the defaults that resets it, else its value: iso an enum kv_iso,
 * read_only and deferrable 0 or 1. */
enum kv_iso { KV_ISO_READ_UNCOMMITTED, KV_ISO_READ_COMMITTED, KV_ISO_REPEATABLE_READ, KV_ISO_SERIALIZABLE };
#define KV_CHAR_UNSET (-1)
#define KV_CHAR_RESET (-2)
struct kv_txn_chars {
	int8_t iso, read_only, deferrable;
};
#define KV_TXN_CHARS_UNSET ((struct kv_txn_chars){ KV_CHAR_UNSET, KV_CHAR_UNSET, KV_CHAR_UNSET })

/* The settings SHOW answers (kv_call.show): the transaction's three, then the defaults'. */
enum kv_show {
	KV_SHOW_ISOLATION, KV_SHOW_READ_ONLY, KV_SHOW_DEFERRABLE,
	KV_SHOW_DEFAULT_ISOLATION, KV_SHOW_DEFAULT_READ_ONLY, KV_SHOW_DEFAULT_DEFERRABLE,
	KV_SHOW_STATEMENT_TIMEOUT, KV_SHOW_LOCK_TIMEOUT, /* the session's timeouts (KV_TIMEOUT_*) */
};

/* The session timeouts a kv client may set (kv_call.timeout, kv_job.timeout_ms[]): each call
 * runs on its shard under the session's value (kv_timeouts_sql), as PostgreSQL runs a
 * statement under it. */
enum kv_timeout { KV_TIMEOUT_STATEMENT, KV_TIMEOUT_LOCK, KV_TIMEOUT_COUNT };
#define KV_TIMEOUT_RESET UINT32_MAX
/* A timeout's value t[0, n) as PostgreSQL reads an integer setting in milliseconds (a number,
 * fractions rounded, with an optional unit us, ms, s, min, h or d): 0 and *ms, or -1 and err
 * (for 22023: PostgreSQL's message, without its hint) when it is not one or out of
 * 0 .. 2147483647. */
int kv_timeout_value(enum kv_timeout which, const char *t, size_t n, uint32_t *ms, char *err, size_t cap);
const char *kv_timeout_name(enum kv_timeout which);
/* ms as SHOW prints it: in the largest unit that divides it (ms, s, min, h, d); 0 as "0". */
void kv_timeout_text(uint32_t ms, char out[16]);
/* Its name ("transaction_isolation"), and a value's text as SHOW prints it (a value unset
 * prints PostgreSQL's default: read committed, off). */
const char *kv_show_name(enum kv_show which);
const char *kv_txn_char_text(enum kv_show which, int value);
/* A setting's value t[0, n) as PostgreSQL reads it (an isolation level by name, any case; a
 * Boolean as parse_bool); -1 when it is not one. */
int kv_txn_char_value(enum kv_show which, const char *t, size_t n);
/* The field of c setting which sets (the isolation level for both KV_SHOW_ISOLATION and
 * KV_SHOW_DEFAULT_ISOLATION ...). */
int8_t *kv_txn_char_field(struct kv_txn_chars *c, enum kv_show which);
/* Its value (KV_CHAR_UNSET, KV_CHAR_RESET or the setting's). */
int kv_txn_char_get(const struct kv_txn_chars *c, enum kv_show which);

/* "BEGIN" with the options c gives, the statement a shard's transaction begins with. */
void kv_txn_begin_text(const struct kv_txn_chars *c, char out[KV_CALL_BEGIN_MAX]);

/* "verb "name"": a savepoint's statement (SAVEPOINT, RELEASE SAVEPOINT, ROLLBACK TO SAVEPOINT)
 * with its name (kv_call.name, up to 63 bytes) quoted as an identifier. */
#define KV_SAVEPOINT_SQL_MAX (sizeof "ROLLBACK TO SAVEPOINT \"\"" + 2 * 63)
void kv_savepoint_sql(char out[KV_SAVEPOINT_SQL_MAX], const char *verb, const char *name);

struct kv_call {
	uint8_t local;         /* enum kv_local: no call */
	struct kv_txn_chars chars; /* BEGIN's options; SET's values */
	bool txn_start;        /* BEGIN written START TRANSACTION (PostgreSQL's tag says so) */
	bool txn_warn;         /* KV_LOCAL_SET written SET TRANSACTION: warns outside a transaction */
	bool reset;            /* KV_LOCAL_DEFAULT written RESET (its tag) */
	uint8_t show;          /* KV_LOCAL_SHOW: enum kv_show */
	uint8_t timeout;       /* KV_LOCAL_TIMEOUT: enum kv_timeout */
	uint32_t timeout_ms;   /* KV_LOCAL_TIMEOUT: its value (KV_TIMEOUT_RESET: the session's default) */
	bool set_local;        /* KV_LOCAL_TIMEOUT, KV_LOCAL_SET: SET LOCAL (until the transaction's end) */
	bool discard_all;      /* KV_LOCAL_DISCARD: DISCARD ALL (else a tag in column) */
	uint8_t value_fn;      /* KV_LOCAL_VALUE: enum kv_value_fn */
	uint8_t type_query;    /* KV_LOCAL_TYPE_INFO: enum kv_type_query */
	uint32_t value_type;   /* KV_LOCAL_VALUE: its type (int4, text, bool) */
	char value[64];        /* KV_LOCAL_VALUE, KV_VALUE_CONST and _SETTING: its text */
	char name[64];         /* KV_LOCAL_DECLARE, _FETCH, _CLOSE: the cursor's name; _SAVEPOINT,
				* _RELEASE, _ROLLBACK_TO: the savepoint's */
	bool hold;             /* KV_LOCAL_DECLARE: WITH HOLD */
	int8_t scroll;         /* KV_LOCAL_DECLARE: 1 SCROLL, -1 NO SCROLL, 0 neither said */
	bool is_move;          /* KV_LOCAL_FETCH: MOVE */
	uint8_t fetch_dir;     /* KV_LOCAL_FETCH: enum kv_fetch_dir (NEXT is FORWARD 1, PRIOR
				* BACKWARD 1, FIRST ABSOLUTE 1, LAST ABSOLUTE -1) */
	int64_t fetch_count;   /* KV_LOCAL_FETCH: its count, signed (KV_FETCH_ALL: ALL) */
	enum kv_op op;
	bool from;             /* SELECT * FROM kv.get_many(...) */
	char column[64];       /* name of the single result column (target form) */
	int nargs;
	struct kv_arg args[KV_CALL_MAX_ARGS];
	int nparams;           /* the highest $n named; 0: none */
	/* private: storage (kv_call_free) */
	struct kv_arg *elems;
	uint32_t nelems, elems_cap;
	char *text;
	uint32_t text_len, text_cap;
};

/* Where a statement of a Query of several lies in its text. */
struct kv_span {
	uint32_t off, len;
};
#define KV_CALL_MAX_STMTS 64

/* The statements of sql, a Query of several (kv_call_parse returned -E2BIG): their number,
 * each one's place in spans[0, n); or -EINVAL with a SQLSTATE in state and the reason in err
 * (a syntax error 42601; more than max statements 54000); or -ENOMEM. */
__attribute__((warn_unused_result))
int kv_call_split(const char *sql, struct kv_span *spans, int max, char state[6], char *err, size_t errcap);

/* Parse sql (NUL-terminated, one statement) into out. 0; or -EINVAL with a SQLSTATE in state
 * and the reason in err (syntax error 42601, not a kv call 0A000, wrong arguments 42883,
 * parameter number out of range 42P02); or -E2BIG when sql holds several statements (state and
 * err say 0A000, one call per query: kv_call_split splits them); or -ENOMEM. out must be zeroed before the first
 * use; it is reused (its storage kept) by later parses, and freed by kv_call_free. */
__attribute__((warn_unused_result))
int kv_call_parse(const char *sql, struct kv_call *out, char state[6], char *err, size_t errcap);
void kv_call_free(struct kv_call *c);

const char *kv_op_name(enum kv_op op);
/* Declared type of argument i of op (what a parameter there is read as). */
uint32_t kv_call_arg_type(enum kv_op op, int i);
/* Type of the single result column of op in target form. */
uint32_t kv_call_result_type(enum kv_op op);
/* op returns rows (key, value): called as SELECT * FROM kv.op(...) (get_many, scan). */
bool kv_op_rows(enum kv_op op);
/* Argument i of op is a text[] (get_many's, put_many's and delete_many's keys, put_many's values). */
bool kv_op_array_arg(enum kv_op op, int i);
/* op has no key argument (scan, count: a prefix; the batches: keys in an array). */
bool kv_op_keyless(enum kv_op op);
/* A call that writes nothing: safe to run again. */
bool kv_op_is_read(enum kv_op op);

/* One element of a text[] value. */
struct kv_elem {
	const char *p; /* NULL: SQL NULL */
	uint32_t len;
};

/* Split a text[] in PostgreSQL's text form ("{a,\"b c\",NULL}", one dimension) into at most
 * max elements, unescaping into scratch (at least len bytes). Returns the count, or -EINVAL
 * (malformed, more than one dimension, a NUL byte) or -E2BIG (more than max elements). */
__attribute__((warn_unused_result))
int kv_text_array_parse(const char *s, size_t len, char *scratch, struct kv_elem *out, int max);

/* The same for PostgreSQL's binary array format (element type text or varchar). Elements
 * point into p. */
__attribute__((warn_unused_result))
int kv_binary_array_parse(const uint8_t *p, size_t len, struct kv_elem *out, int max);

/* A binary parameter of type oid as the text PostgreSQL would read for it: text/varchar/
 * unknown as is, jsonb (version byte 1) and json as their text, interval as
 * "M mons D days U microseconds". Writes at most cap bytes to out; the length, or -EINVAL
 * (malformed or unsupported type), or -E2BIG. */
__attribute__((warn_unused_result))
long kv_binary_scalar_text(uint32_t oid, const uint8_t *p, size_t len, char *out, size_t cap);

#endif
