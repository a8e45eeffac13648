/* libpq helpers shared by the kv commands and the replication threads: connect with explicit
 * parameters (never a conninfo string built by hand) and run statements, copying the error
 * into a caller's bounded buffer. Blocking: never called on a worker's event loop. */
#ifndef TUSK_KV_CONN_H
#define TUSK_KV_CONN_H

#include "pq/pq.h"
#include <stdbool.h>
#include <stddef.h>

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

/* kv_conn_exec for statements without rows: 0, or -EIO with err. */
__attribute__((warn_unused_result))
int kv_conn_run(PGconn *conn, const char *sql, int nparams, const char *const *params, char err[KV_ERR_MAX]);

/* Run each script of scripts (NULL-terminated) in one transaction: 0, or -EIO (rolled back). */
__attribute__((warn_unused_result))
int kv_conn_run_scripts(PGconn *conn, const char *const *scripts, char err[KV_ERR_MAX]);

#endif
