/* The cacheability decision: may the result of this Query (or Parse) text be shared between
 * clients with equal keys (coalesced) and kept (cached)? Only a single read-only SELECT made of
 * parse-tree nodes known not to call anything qualifies (docs/cache.md, "What is cached").
 * Pure functions: no I/O, no global state, thread-safe. */
#ifndef TUSK_FLIGHT_DECIDE_H
#define TUSK_FLIGHT_DECIDE_H

#include <stdbool.h>
#include <stddef.h>

#define FLIGHT_MAX_SQL    8192 /* longer texts are not cached: bounds the parser's recursion */
#define FLIGHT_MAX_TABLES 32   /* relations a cached statement names, or depends on (volatility.h) */
#define FLIGHT_NAME_MAX   64   /* PostgreSQL's NAMEDATALEN */
#define FLIGHT_MAX_FUNCS  16   /* distinct functions called by one cached statement */

/* Why a text is not cached; FLIGHT_OK when it is. Counted per reason (SHOW CACHE). */
enum flight_verdict {
	FLIGHT_OK,
	FLIGHT_NOT_SELECT,   /* parse error, several statements, or not a plain SELECT */
	FLIGHT_LOCKING,      /* FOR UPDATE / SHARE at any depth */
	FLIGHT_CALL,         /* a function not known to be immutable (volatility.h), CURRENT_TIMESTAMP
	                      * and the like, or a node that may call one (TABLESAMPLE, XMLTABLE,
	                      * ROWS FROM ...) */
	FLIGHT_TIME_LITERAL, /* 'now', 'today', 'tomorrow', 'yesterday': evaluated when run */
	FLIGHT_CATALOG,      /* pg_catalog, information_schema, pg_toast, pg_* */
	FLIGHT_TEMP,         /* pg_temp */
	FLIGHT_TABLE_POLICY, /* not in cache_tables, or in cache_exclude_tables */
	FLIGHT_TOO_BIG,      /* text above FLIGHT_MAX_SQL, or more than FLIGHT_MAX_TABLES tables */
	FLIGHT_UNKNOWN_NODE, /* a parse-tree node outside the list this code knows to be inert */
	FLIGHT_CALL_LOOKUP,  /* a function whose volatility tusk has not read from pg_proc yet (the
	                      * lookup runs meanwhile: a later request can be cached) */
	FLIGHT_WRITE_PENDING, /* a write to its tables, sent through tusk, has not ended yet
	                       * (inval.h: busy) */
	FLIGHT_DEPENDENCY,   /* the catalog says a relation it reads cannot be followed exactly: a view
	                      * or a row-security policy calling a function that is not immutable or
	                      * reading the clock, a sequence, a foreign table (volatility.h) */
	FLIGHT_VERDICT_COUNT
};

struct flight_relation {
	char schema[FLIGHT_NAME_MAX]; /* "" when the statement did not qualify it */
	char name[FLIGHT_NAME_MAX];   /* as the parser normalised it */
};

/* verdict FLIGHT_CALL with nfuncs > 0: only function calls stand in the way; the statement
 * is cacheable if every one of funcs is immutable (flight_vol_check), and tables are filled.
 * Any other verdict but FLIGHT_OK: ntables and nfuncs are 0. */
struct flight_decision {
	enum flight_verdict verdict;
	int ntables;
	struct flight_relation tables[FLIGHT_MAX_TABLES]; /* distinct, in text order */
	int nfuncs;
	struct flight_relation funcs[FLIGHT_MAX_FUNCS];   /* distinct called names; schema "" if unqualified */
};

/* Table lists of a pool rule (cache_tables / cache_exclude_tables): "t" matches any schema's t,
 * "s.t" matches s.t and an unqualified t (search_path is in the key). allow == NULL: all. */
struct flight_table_policy {
	char *const *allow;
	int nallow;
	char *const *exclude;
	int nexclude;
};

/* Decides for sql[0, len) (ends at the first NUL, as for the server). Never fails: anything
 * it cannot read is not cached. *out is always written. */
void flight_decide(const char *sql, size_t len, const struct flight_table_policy *policy,
		   struct flight_decision *out);

const char *flight_verdict_name(enum flight_verdict v);

/* Whether sql[0, len) is provably read-only, so that read-write-split may send it to a standby
 * (split/split.h): the same walk as flight_decide, but catalogs, time literals and any number
 * of tables are fine, and calls are allowed when every one is a built-in known to be immutable
 * or stable and to write nothing. Not read-only: anything but one plain SELECT (several
 * statements, INTO, a writable CTE), FOR UPDATE/SHARE at any depth, a volatile, unknown or
 * user function, pg_temp, a node the walk does not know, a text above FLIGHT_MAX_SQL. */
bool flight_read_only(const char *sql, size_t len);

/* What a statement text sent by any client may have written, for invalidation: the tables
 * named by INSERT/UPDATE/DELETE/MERGE (and every other table they name; a stray bump costs a
 * miss), or flush_db when it may have written anything tusk cannot name (DDL, GRANT, COPY,
 * DO, CALL, a function outside a short list of built-ins known not to write, a parse error,
 * COMMIT PREPARED ...). Reads, SET, SHOW and transaction control write nothing. */
struct flight_write {
	bool flush_db;
	/* flush_db for another reason than calling a function outside the short list: DDL,
	 * GRANT, COPY, DO, a parse error ... may have changed the catalog (volatility.h). A
	 * function that is not volatile cannot (PostgreSQL runs it read-only); a volatile one
	 * that runs DDL is not seen (docs/cache.md, limits). */
	bool ddl;
	int ntables;
	struct flight_relation tables[FLIGHT_MAX_TABLES];
};

void flight_classify_write(const char *sql, size_t len, struct flight_write *out);

#endif
