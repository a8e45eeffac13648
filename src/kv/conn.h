/* libpq helpers shared by the kv commands and the replication threads: connect with explicit
 * parameters (never a conninfo string built by hand) and run statements, copying the error
 * into a caller's bounded buffer. Blocking: never called on a worker's event loop. */
#ifndef TUSK_KV_CONN_H
#define TUSK_KV_CONN_H

#include "pq/pq.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KV_ERR_MAX 512

struct kv_endpoint {
	const char *host;
	int port;
	const char *dbname;
	const char *user;
	const char *password; /* NULL: none */
	const char *options;  /* the session's options; NULL: bounded statements (below) */
};

/* A connection, or NULL with the reason in err. application_name says who it is; the session
 * gets a statement_timeout so a stuck peer cannot hold a thread forever. */
PGconn *kv_conn_open(const struct kv_endpoint *ep, const char *application_name, char err[KV_ERR_MAX]);

/* Run sql with text parameters; the result when its status is OK (tuples or command), else
 * NULL with "SQLSTATE: message" in err. */
PGresult *kv_conn_exec(PGconn *conn, const char *sql, int nparams, const char *const *params, char err[KV_ERR_MAX]);

/* kv_conn_exec of sql as conn's named statement id (0..30), parsed at its first use on conn:
 * a statement run at every pass of a loop is parsed once per connection instead of at each run,
 * and planned as PostgreSQL's plan cache decides (a caller that wants today's plans at every run
 * sets plan_cache_mode). *prepared holds a bit per id prepared on conn: the caller zeroes it
 * whenever it opens conn anew. A run that fails with a plan the server can no longer use (the
 * statement's result changed with the schema: SQLSTATE 0A000, or the statement is gone: 26000)
 * sets KV_PREPARED_STALE in *prepared: the caller then closes conn and opens another. */
#define KV_PREPARED_STALE (1u << 31)
PGresult *kv_conn_exec_prepared(PGconn *conn, uint32_t *prepared, int id, const char *sql, int nparams,
				const char *const *params, char err[KV_ERR_MAX]);

/* kv_conn_exec for statements without rows: 0, or -EIO with err. */
__attribute__((warn_unused_result))
int kv_conn_run(PGconn *conn, const char *sql, int nparams, const char *const *params, char err[KV_ERR_MAX]);

/* Run each script of scripts (NULL-terminated) in one transaction: 0, or -EIO (rolled back). */
__attribute__((warn_unused_result))
int kv_conn_run_scripts(PGconn *conn, const char *const *scripts, char err[KV_ERR_MAX]);

#endif
