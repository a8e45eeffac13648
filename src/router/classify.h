/* Statement classifier: tells which statements in a Query or Parse text change session state
 * that would stay behind on a server (or be lost) when transaction pooling moves the client to
 * another server: SET, RESET, DISCARD, SQL-level PREPARE/EXECUTE/DEALLOCATE, LISTEN/UNLISTEN,
 * WITH HOLD cursors, temporary objects, SET ROLE / SESSION AUTHORIZATION, LOAD, and the
 * transaction control around them. Pure functions: no I/O, no global state, thread-safe.
 *
 * Two steps. classify_maybe_session() is a lexical pre-check, one pass and no allocation, that
 * answers false only when the text certainly holds none of the session statements above. Only
 * then may the caller skip classify_sql(), which runs libpg_query (the PostgreSQL 15 parser).
 *
 * It also reports calls (CLASSIFY_CALL_*): DO blocks, procedures and functions that are not
 * built-ins known to be harmless may change the session in ways the text does not show
 * (set_config(..., false), pg_advisory_lock(), SET ROLE inside plpgsql ...). Built-in names
 * come from src/router/call_lists.inc (scripts/gen-call-lists.sh). */
#ifndef TUSK_ROUTER_CLASSIFY_H
#define TUSK_ROUTER_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>

#define CLASSIFY_MAX_LEN   (1u << 20) /* longer texts are not classified: -E2BIG */
#define CLASSIFY_MAX_STMTS 16         /* entries kept in struct classify_result */
#define CLASSIFY_NAME_MAX  64         /* bytes of classify_stmt.name, NUL included */
/* A statement that has to be parsed but holds more tokens than this (operators, words,
 * brackets; not literals, commas or dots) is reported as CLASSIFY_UNKNOWN instead: libpg_query
 * recurses once per level of the parse tree (about 350 bytes of stack each) and a long enough
 * chain like 1+1+1+... would overflow the thread's stack. This bound keeps classify_sql()
 * under about 1.5 MB of stack, well inside a default 8 MB thread. */
#define CLASSIFY_MAX_TOKENS 4096

enum classify_kind {
	CLASSIFY_OTHER,          /* no session state (never stored in classify_result.stmts) */
	CLASSIFY_SET,            /* SET [SESSION] name ...: name is the GUC; replaying the text carries it */
	CLASSIFY_SET_LOCAL,      /* SET LOCAL name ...: ends with the transaction */
	CLASSIFY_RESET,          /* RESET name, and SET name TO DEFAULT (same effect) */
	CLASSIFY_RESET_ALL,      /* RESET ALL (leaves role and session_authorization alone) */
	CLASSIFY_DISCARD_ALL,    /* DISCARD ALL: every kind of session state below is dropped */
	CLASSIFY_DISCARD_OTHER,  /* DISCARD PLANS / SEQUENCES / TEMP: name is "plans", "sequences", "temp" */
	CLASSIFY_PREPARE,        /* PREPARE name AS ... (SQL level, not the protocol's Parse) */
	CLASSIFY_EXECUTE,        /* EXECUTE name, EXPLAIN EXECUTE name, CREATE TABLE ... AS EXECUTE name */
	CLASSIFY_DEALLOCATE,     /* DEALLOCATE [PREPARE] name */
	CLASSIFY_DEALLOCATE_ALL, /* DEALLOCATE [PREPARE] ALL */
	CLASSIFY_LISTEN,         /* LISTEN channel */
	CLASSIFY_UNLISTEN,       /* UNLISTEN channel */
	CLASSIFY_UNLISTEN_ALL,   /* UNLISTEN * */
	CLASSIFY_HOLD_CURSOR,    /* DECLARE name ... CURSOR WITH HOLD (cursors without HOLD die at commit) */
	CLASSIFY_CLOSE,          /* CLOSE name (of any cursor: only a WITH HOLD one outlives its transaction) */
	CLASSIFY_CLOSE_ALL,      /* CLOSE ALL */
	CLASSIFY_TEMP_OBJECT,    /* CREATE TEMP TABLE/VIEW/SEQUENCE, SELECT INTO TEMP, CREATE ... pg_temp.x,
	                          * EXPLAIN ANALYZE of those: name is the object's name */
	CLASSIFY_SESSION_AUTH,   /* SET/RESET ROLE, SET/RESET SESSION AUTHORIZATION (also as role = / DEFAULT) */
	CLASSIFY_LOAD,           /* LOAD 'file': name is the file */
	CLASSIFY_BEGIN,          /* BEGIN, START TRANSACTION */
	CLASSIFY_COMMIT,         /* COMMIT, END; also PREPARE TRANSACTION (CLASSIFY_F_TWO_PHASE): for the
	                          * session its SETs persist exactly as after COMMIT. A COMMIT of a failed
	                          * transaction rolls back: the CommandComplete tag tells which */
	CLASSIFY_ROLLBACK,       /* ROLLBACK, ABORT: the transaction's SET, RESET, PREPARE ... are undone */
	CLASSIFY_SAVEPOINT,      /* SAVEPOINT name */
	CLASSIFY_RELEASE,        /* RELEASE [SAVEPOINT] name */
	CLASSIFY_ROLLBACK_TO,    /* ROLLBACK TO [SAVEPOINT] name: undoes what followed the savepoint */
	CLASSIFY_UNKNOWN,        /* looked like one of the above but could not be classified safely
	                          * (CLASSIFY_MAX_TOKENS, or a parse tree this code does not know) */
};

/* Calls in the text (classify_result.calls). What a function does to the session is not in
 * the text; these say what the caller must do about it. Calls the parser cannot see (operators,
 * casts, triggers, column defaults, views, attribute notation t.f) are not reported. */
#define CLASSIFY_CALL_RESET 0x01u /* DO, CALL, or a function that is not a pg_catalog built-in
                                   * known to keep nothing in the session: reset the server
                                   * before another client uses it */
#define CLASSIFY_CALL_PIN   0x02u /* a built-in that keeps state in the session (session-level
                                   * advisory locks, setseed, dblink_connect, temporary
                                   * replication slots, ...), or set_config() whose name is not a
                                   * constant, or more set_config() calls than set_configs holds */
#define CLASSIFY_MAX_SET_CONFIGS 16

/* Flags in classify_stmt.flags. */
#define CLASSIFY_F_NAME_TRUNCATED 0x01u /* name did not fit: it holds a prefix, do not key on it */
#define CLASSIFY_F_FROM_CURRENT   0x02u /* SET name FROM CURRENT: the value is the server's own */
#define CLASSIFY_F_ON_COMMIT_DROP 0x04u /* TEMP_OBJECT: a table created ON COMMIT DROP */
#define CLASSIFY_F_CHAIN          0x08u /* COMMIT/ROLLBACK AND CHAIN: a new transaction starts */
#define CLASSIFY_F_TWO_PHASE      0x10u /* COMMIT: it is PREPARE TRANSACTION; name is the gid */

/* One statement of interest. The text sql[offset, offset + length) is the statement as the
 * parser delimited it, from its first token to its last: no whitespace or comment before or
 * after it, no ';'. So statements can be joined with ";" and replayed: none ends inside a
 * "--" comment. */
struct classify_stmt {
	enum classify_kind kind;
	int index;        /* position of the statement among all nstmts statements, from 0: the
	                   * index-th CommandComplete of a simple Query answers it */
	unsigned flags;   /* CLASSIFY_F_* */
	size_t offset;    /* of the statement's first token within the text given */
	size_t length;    /* bytes up to the end of the statement's last token */
	/* SET/SET_LOCAL/RESET/SESSION_AUTH: the GUC name, lower-cased as PostgreSQL compares them
	 * ("timezone" for SET TIME ZONE, "client_encoding" for SET NAMES, "search_path" for SET
	 * SCHEMA, "xmloption", "role", "session_authorization").
	 * PREPARE/EXECUTE/DEALLOCATE: the statement name; LISTEN/UNLISTEN: the channel;
	 * HOLD_CURSOR/CLOSE: the cursor; SAVEPOINT/RELEASE/ROLLBACK_TO: the savepoint; TEMP_OBJECT:
	 * the object; LOAD: the file; DISCARD_OTHER: what is discarded. Identifiers arrive as the
	 * parser normalised them (unquoted ones folded to lower case, quoted ones as written).
	 * Empty for the others. Always NUL-terminated. */
	char name[CLASSIFY_NAME_MAX];
};

struct classify_result {
	int nstmts;      /* statements in the text (0 for an empty or comment-only text) */
	int nsession;    /* entries in stmts[]: statements whose kind is not CLASSIFY_OTHER, in text
	                  * order. One statement gives one entry, except SET SESSION CHARACTERISTICS AS
	                  * TRANSACTION ..., which gives a CLASSIFY_SET (or _SET_LOCAL) per mode it sets,
	                  * named default_transaction_isolation / _read_only / _deferrable, all with the
	                  * statement's index, offset and length */
	bool truncated;  /* more than CLASSIFY_MAX_STMTS entries: the rest were dropped, so the
	                  * caller must treat the text as unknown */
	bool parse_error;/* libpg_query rejected the text: nstmts and stmts[] are empty. A PostgreSQL
	                  * 15 server rejects it too and runs none of it. A server of another major
	                  * version may accept it (1_000, new syntax): when classify_maybe_session()
	                  * is true, treat the text as unknown rather than as harmless */
	unsigned calls;  /* CLASSIFY_CALL_* for the whole text */
	int nset_configs;/* set_config(name, value, is_local) calls with a constant name whose is_local
	                  * is not the constant true: their names, lower-cased, in set_configs[] (the
	                  * caller knows whether the server reports them) */
	char set_configs[CLASSIFY_MAX_SET_CONFIGS][CLASSIFY_NAME_MAX];
	struct classify_stmt stmts[CLASSIFY_MAX_STMTS];
};

/* Lexical pre-check of sql[0, len) (need not be NUL-terminated). False means certainly no
 * statement other than CLASSIFY_OTHER and the transaction-control kinds (BEGIN ... ROLLBACK_TO,
 * which this check does not look for), and no call classify_sql() would report: DO or CALL
 * starting a statement, or '(' after a name that is not a reserved or column-name keyword, a
 * pg_catalog built-in known to keep nothing in the session (unqualified or pg_catalog.), or a
 * table after INTO, TABLE, AS, REFERENCES or COPY, makes it true. It looks outside string literals, dollar quotes and
 * comments for SET RESET DISCARD PREPARE EXECUTE DEALLOCATE LISTEN UNLISTEN DECLARE LOAD CLOSE
 * starting a statement, EXECUTE anywhere, TEMP/TEMPORARY after CREATE, REPLACE, LOCAL, GLOBAL or
 * INTO, and identifiers starting with pg_temp (quoted ones too); a U&"..." identifier always
 * answers true. False positives only cost a parse. No allocation, no library call. Assumes
 * standard_conforming_strings = on, as classify_sql() does (see below). */
bool classify_maybe_session(const char *sql, size_t len);

/* Options of the _opts variants (the plain functions pass 0). */
#define CLASSIFY_O_BACKSLASH_QUOTES 0x01u /* the session has standard_conforming_strings = off:
                                           * '...' takes backslash escapes, as the server reads it */
#define CLASSIFY_O_NO_SHORTCUT 0x02u      /* classify_maybe_session_opts: always the full lexical
                                           * pass (tests and the fuzzer compare the shortcut with it) */
bool classify_maybe_session_opts(const char *sql, size_t len, unsigned opts);

/* Classifies sql[0, len) (need not be NUL-terminated; the text ends at the first NUL byte, as
 * it does for the server) with libpg_query. *out is always written. Returns 0, or:
 *   -E2BIG   the text is longer than CLASSIFY_MAX_LEN;
 *   -ENOMEM  out of memory;
 *   -EPROTO  libpg_query answered something this code cannot decode (a different major version);
 * and on any error *out holds no entries: the caller treats the text as unknown.
 *
 * Only statements that classify_maybe_session()'s rules (or a transaction-control first word)
 * single out are parsed into a tree; the whole text is parsed once without building one, for
 * statement boundaries and parse errors. Costs about one parse of the text plus one of each
 * interesting statement; allocates inside libpg_query (per-thread memory contexts, freed before
 * returning). Safe to call from several threads at once.
 *
 * The parser reads the bytes as they come, with standard_conforming_strings as
 * CLASSIFY_O_BACKSLASH_QUOTES says (the _opts variant; on otherwise). The server lexes after
 * converting from client_encoding, so a client_encoding whose multibyte characters can contain a
 * backslash or quote byte (SJIS, BIG5, GBK, UHC, GB18030, JOHAB) can make the server see
 * statements this classifier does not: the caller must not trust it for such a session. */
__attribute__((warn_unused_result))
int classify_sql(const char *sql, size_t len, struct classify_result *out);

/* classify_sql() without the lexical filter: every statement is parsed into a tree. The oracle
 * for tests and the fuzzer, which check that both agree; not for the relay path. */
__attribute__((warn_unused_result))
int classify_sql_exhaustive(const char *sql, size_t len, struct classify_result *out);
__attribute__((warn_unused_result))
int classify_sql_opts(const char *sql, size_t len, unsigned opts, struct classify_result *out);
__attribute__((warn_unused_result))
int classify_sql_exhaustive_opts(const char *sql, size_t len, unsigned opts, struct classify_result *out);

/* True when name is a syntactically valid GUC name that fits classify_stmt.name: one or more
 * dot-separated parts, each starting with a letter, '_' or a byte >= 0x80, continuing with
 * those, digits or '$' (PostgreSQL's rule for custom names; built-in names have no dot), and
 * at most CLASSIFY_NAME_MAX - 1 bytes. Case is not checked: PostgreSQL folds it. */
bool classify_is_valid_guc_name(const char *name);

/* Static name of a kind, for logs and tests. */
const char *classify_kind_name(enum classify_kind kind);

#endif
